//! The soak part of `cargo xtask bench` (`--only soak`): the whole system under steady
//! load for ten minutes, watching for leaks, stray answers and slow revocations.
//!
//! One real control plane (`tessera serve`, SQLite), two Envoys with the filter (sync
//! service and usage reports to the control plane) and one workerd with the edge worker
//! (keys from the control plane's JWKS, its status list revalidated at the worker's
//! default interval, usage reports on). After a short calibration that finds the rate the three edges saturate
//! at, load threads send requests with live tokens at half that rate. Meanwhile a new
//! token is created and downloaded every 100 ms (it joins the live pool once every edge
//! accepts it) and the oldest live token is revoked every second (it leaves the pool
//! first; a prober then times its first refusal at each edge). Every 10 s the resident
//! memory of each process is read from `/proc/<pid>/status`.
//!
//! Every answer other than 200 for a live token is an unexpected answer (a 401 for a
//! token that left the pool while its request was in flight is not). The raw samples go
//! to `target/bench/soak/`, and a full run draws memory over time into
//! `docs/bench-soak-memory.svg` (plotters, SVG backend).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_host_tests::workerd::{Origin, Workerd, WorkerdOptions};
use tessera_host_tests::{ControlPlane, ControlPlaneOptions, Envoy, EnvoyOptions, Request};

use super::stats::{percentile, rss_kib, status_kib};
use super::{Inputs, Plan, Section, TargetRow};
use crate::tools::Result;

/// The full run's length.
const FULL: Duration = Duration::from_secs(600);
/// The smoke run's length.
const SMOKE: Duration = Duration::from_secs(6);
/// Memory is sampled this often (the smoke run: every second).
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The memory baseline: the sample nearest to minute 2 (the issue's rule).
const BASELINE_AT: Duration = Duration::from_secs(120);
/// A new token this often.
const CREATE_EVERY: Duration = Duration::from_millis(100);
/// A revocation this often.
const REVOKE_EVERY: Duration = Duration::from_secs(1);
/// Load threads per edge.
const THREADS_PER_EDGE: usize = 2;
/// The calibration's length (closed loop, every thread as fast as it can).
const CALIBRATION: Duration = Duration::from_secs(3);
/// Tokens created before the load starts.
const INITIAL_TOKENS: usize = 20;
/// How long a revoked token may take to be refused at an edge before it counts as never.
const REFUSE_LIMIT: Duration = Duration::from_secs(10);
/// How long a new token may take to be accepted at every edge.
const ACCEPT_LIMIT: Duration = Duration::from_secs(10);
/// The Envoy cluster that reaches the control plane.
const CP_CLUSTER: &str = "tessera_control_plane";
/// The request path (no route needs a scope for it).
const PATH: &str = "/api/soak";
/// The issue's targets.
const REVOKE_TARGET: Duration = Duration::from_secs(1);
const RSS_GROWTH_TARGET: f64 = 0.10;
/// The edge worker's origin: a second worker in the same workerd, answering 200.
const ORIGIN_WORKER: &str =
    "export default { async fetch() { return new Response(\"ok\", { status: 200 }); } };\n";

/// One edge the load goes through.
struct Edge {
    name: &'static str,
    addr: SocketAddr,
}

/// A live token.
#[derive(Clone)]
struct Live {
    id: String,
    jwt: String,
}

/// The pool the load draws from.
#[derive(Default)]
struct Pool {
    live: VecDeque<Live>,
    /// Ids that left the pool (revoked or about to be): a 401 for them is expected.
    gone: std::collections::HashSet<String>,
}

/// An answer the soak did not expect.
#[derive(Clone, Debug)]
struct Unexpected {
    at: Duration,
    edge: &'static str,
    what: String,
}

/// One revocation's time to refusal at each edge (`None`: not refused within the limit).
struct Revocation {
    per_edge: Vec<Option<Duration>>,
}

/// Resident memory of each process at one instant.
struct MemorySample {
    at: Duration,
    /// `VmRSS`.
    kib: Vec<Option<u64>>,
    /// `RssAnon`: the part of it that is heap and stacks (the rest is mapped files and
    /// shared memory), to tell allocator growth from mapped pages.
    anon: Vec<Option<u64>>,
}

fn send(edge: &Edge, jwt: &str) -> std::io::Result<tessera_host_tests::Response> {
    Request::get(PATH)
        .bearer(jwt)
        .header("x-forwarded-for", "198.51.100.7")
        .header("cf-connecting-ip", "198.51.100.7")
        .timeout(Duration::from_secs(10))
        .send(edge.addr)
}

/// Waits until every edge accepts `jwt`; returns the time that took.
fn accepted_everywhere(edges: &[Edge], jwt: &str, stop: &AtomicBool) -> Result<Duration> {
    let started = Instant::now();
    for edge in edges {
        loop {
            match send(edge, jwt) {
                Ok(r) if r.status == 200 => break,
                Ok(r) if started.elapsed() > ACCEPT_LIMIT => {
                    return Err(format!(
                        "soak: a new token was not accepted at {} within {ACCEPT_LIMIT:?}: {}",
                        edge.name,
                        r.summary()
                    ))
                }
                Err(e) if started.elapsed() > ACCEPT_LIMIT => {
                    return Err(format!("soak: {}: {e}", edge.name))
                }
                _ if stop.load(Ordering::Relaxed) => return Ok(started.elapsed()),
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    Ok(started.elapsed())
}

/// The time from `t0` to the first refusal of `jwt` at `edge`.
fn time_to_refusal(edge: &Edge, jwt: &str, t0: Instant) -> Option<Duration> {
    loop {
        if let Ok(r) = send(edge, jwt) {
            if r.status == 401 {
                return Some(t0.elapsed());
            }
        }
        if t0.elapsed() > REFUSE_LIMIT {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("—".into(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0))
}

pub fn run(inputs: &Inputs<'_>, plan: &Plan, dir: &Path) -> Result<Section> {
    let length = if plan.smoke { SMOKE } else { FULL };
    let sample_every = if plan.smoke {
        Duration::from_secs(1)
    } else {
        SAMPLE_EVERY
    };
    let work = dir.to_path_buf();
    fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;

    println!("soak: starting the control plane, 2 Envoys and workerd");
    let cp = ControlPlane::start(&ControlPlaneOptions::new(inputs.cp_bin))
        .map_err(|e| format!("soak: control plane: {e}"))?;
    let admin = cp.admin_token().to_owned();
    let credential = |name: &str| {
        cp.edge_credential(&admin, name)
            .map_err(|e| format!("soak: edge credential {name}: {e}"))
    };

    let mut envoys = Vec::new();
    for n in 1..=2 {
        let secret = credential(&format!("soak-envoy-{n}"))?;
        let filter = cp.filter_config(
            "closed",
            30,
            Some(cp.usage_config(CP_CLUSTER, &secret, 100_000)),
        );
        let mut options = EnvoyOptions::new(inputs.envoy)
            .filter(inputs.filter_wasm, &filter)
            .cluster(CP_CLUSTER, cp.addr())
            .sync_service(&cp.sync_service_config(CP_CLUSTER, 20))
            .concurrency(1);
        options.log_level = "warn".into();
        envoys.push(Envoy::start(&options).map_err(|e| format!("soak: Envoy {n}: {e}"))?);
    }

    let worker_secret = credential("soak-workerd")?;
    let jwks_path = cp.jwks_url().replacen(&cp.url(), "", 1);
    let jwks = cp
        .api("GET", &jwks_path, None, None)
        .map_err(|e| format!("soak: JWKS: {e}"))?;
    let worker_config = json!({
        "issuers": [cp.issuer()],
        "audiences": ["tessera"],
        "jwks": jwks,
        "routes": [{"path_prefix": "/admin", "scopes": ["admin"]}],
        "status": {"required": true, "fail_policy": "closed"},
    });
    let worker = Workerd::start(
        &WorkerdOptions::new(
            inputs.workerd,
            inputs.edge_bundle,
            &worker_config,
            Origin::Worker(ORIGIN_WORKER.into()),
        )
        .var(
            "TESSERA_STATUS_URLS",
            &json!({ cp.status_list_uri(): cp.status_list_uri() }).to_string(),
        )
        .var("TESSERA_USAGE_URL", &format!("{}/v1/usage", cp.url()))
        .var("TESSERA_USAGE_TOKEN", &worker_secret),
    )
    .map_err(|e| format!("soak: workerd: {e}"))?;

    let edges = vec![
        Edge {
            name: "envoy-1",
            addr: envoys[0].addr(),
        },
        Edge {
            name: "envoy-2",
            addr: envoys[1].addr(),
        },
        Edge {
            name: "workerd",
            addr: worker.addr(),
        },
    ];
    let pids: Vec<(&str, Option<u32>)> = vec![
        ("tessera serve", cp.pid()),
        ("envoy-1", Some(envoys[0].pid())),
        ("envoy-2", Some(envoys[1].pid())),
        ("workerd", Some(worker.pid())),
    ];

    // The first tokens, accepted everywhere before the clock starts.
    let never = AtomicBool::new(false);
    let pool = Mutex::new(Pool::default());
    let mut serial = 0usize;
    let mint = |serial: &mut usize| -> Result<Live> {
        *serial += 1;
        let (id, jwt) = cp
            .create_and_download(&admin, &format!("soak-{serial}"), &["read"])
            .map_err(|e| format!("soak: creating a token: {e}"))?;
        Ok(Live { id, jwt })
    };
    for _ in 0..INITIAL_TOKENS {
        let t = mint(&mut serial)?;
        pool.lock().map_err(|_| "soak: pool")?.live.push_back(t);
    }
    let newest = pool
        .lock()
        .map_err(|_| "soak: pool")?
        .live
        .back()
        .cloned()
        .ok_or("soak: no token")?;
    accepted_everywhere(&edges, &newest.jwt, &never)?;

    // Calibration: every load thread as fast as it can.
    let pick = |pool: &Mutex<Pool>, n: u64| -> Option<Live> {
        let p = pool.lock().ok()?;
        let len = p.live.len() as u64;
        (len > 0).then(|| p.live[(n % len) as usize].clone())
    };
    let calibrated = AtomicU64::new(0);
    thread::scope(|s| {
        for edge in &edges {
            for t in 0..THREADS_PER_EDGE {
                let (pool, calibrated) = (&pool, &calibrated);
                s.spawn(move || {
                    let end = Instant::now() + CALIBRATION;
                    let mut n = t as u64;
                    while Instant::now() < end {
                        n += 1;
                        if let Some(tok) = pick(pool, n) {
                            if matches!(send(edge, &tok.jwt), Ok(r) if r.status == 200) {
                                calibrated.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        }
    });
    let saturating = calibrated.load(Ordering::Relaxed) as f64 / CALIBRATION.as_secs_f64();
    let threads = edges.len() * THREADS_PER_EDGE;
    let rate = saturating / 2.0;
    let interval = Duration::from_secs_f64(threads as f64 / rate.max(1.0));
    println!(
        "soak: saturating rate {saturating:.0} requests/s over {} edges; running {:.0} s at {rate:.0}/s",
        edges.len(),
        length.as_secs_f64()
    );

    // The run.
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let sent = AtomicU64::new(0);
    let ok = AtomicU64::new(0);
    let unexpected: Mutex<Vec<Unexpected>> = Mutex::new(Vec::new());
    let unexpected_count = AtomicU64::new(0);
    let revocations: Mutex<Vec<Revocation>> = Mutex::new(Vec::new());
    let accept_times: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
    let memory: Mutex<Vec<MemorySample>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let fail = |e: String| {
        if let Ok(mut f) = failure.lock() {
            f.get_or_insert(e);
        }
        stop.store(true, Ordering::Relaxed);
    };
    let record = |edge: &'static str, what: String| {
        unexpected_count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut u) = unexpected.lock() {
            if u.len() < 20 {
                u.push(Unexpected {
                    at: started.elapsed(),
                    edge,
                    what,
                });
            }
        }
    };

    thread::scope(|s| {
        // Everything the threads share, by reference (each closure below is `move`).
        let (edges, pool, stop, memory) = (&edges, &pool, &stop, &memory);
        let (accept_times, revocations, pids) = (&accept_times, &revocations, &pids);
        let (sent, ok, record, fail) = (&sent, &ok, &record, &fail);
        let (cp, admin, mint) = (&cp, &admin, &mint);
        // Load.
        for edge in edges {
            for t in 0..THREADS_PER_EDGE {
                s.spawn(move || {
                    let mut next = Instant::now() + interval.mul_f64(t as f64 / 2.0);
                    let mut n = t as u64 * 7919;
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        } else if now - next > interval * 4 {
                            next = now; // fell behind: no burst to catch up
                        }
                        next += interval;
                        n += 1;
                        let Some(tok) = pick(pool, n) else { continue };
                        sent.fetch_add(1, Ordering::Relaxed);
                        match send(edge, &tok.jwt) {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                let gone = pool.lock().map(|p| p.gone.contains(&tok.id));
                                if !(r.status == 401 && gone.unwrap_or(false)) {
                                    record(edge.name, r.summary());
                                }
                            }
                            Err(e) => record(edge.name, format!("no answer: {e}")),
                        }
                    }
                });
            }
        }

        // A new token every 100 ms, admitted to the pool once every edge accepts it.
        s.spawn(move || {
            let mut next = Instant::now();
            let mut serial = serial;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < length {
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                }
                next += CREATE_EVERY;
                let live = match mint(&mut serial) {
                    Ok(l) => l,
                    Err(e) => return fail(e),
                };
                s.spawn(move || match accepted_everywhere(edges, &live.jwt, stop) {
                    Ok(took) => {
                        if let Ok(mut a) = accept_times.lock() {
                            a.push(took);
                        }
                        if let Ok(mut p) = pool.lock() {
                            p.live.push_back(live);
                        }
                    }
                    Err(e) => fail(e),
                });
            }
        });

        // The oldest live token revoked every second, its refusal timed at every edge.
        s.spawn(move || {
            let mut next = Instant::now() + REVOKE_EVERY;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < length {
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                }
                next += REVOKE_EVERY;
                let victim = match pool.lock() {
                    Ok(mut p) if p.live.len() > 1 => {
                        let v = p.live.pop_front();
                        if let Some(v) = &v {
                            p.gone.insert(v.id.clone());
                        }
                        v
                    }
                    _ => None,
                };
                let Some(victim) = victim else { continue };
                if let Err(e) = cp.revoke(admin, &victim.id) {
                    return fail(format!("soak: revoke: {e}"));
                }
                let t0 = Instant::now();
                s.spawn(move || {
                    let per_edge: Vec<Option<Duration>> = thread::scope(|p| {
                        let probes: Vec<_> = edges
                            .iter()
                            .map(|e| {
                                let jwt = &victim.jwt;
                                p.spawn(move || time_to_refusal(e, jwt, t0))
                            })
                            .collect();
                        probes
                            .into_iter()
                            .map(|h| h.join().ok().flatten())
                            .collect()
                    });
                    if let Ok(mut r) = revocations.lock() {
                        r.push(Revocation { per_edge });
                    }
                });
            }
        });

        // Memory, and the end of the run.
        s.spawn(move || {
            let mut next = Instant::now();
            loop {
                let at = started.elapsed();
                let kib = pids.iter().map(|(_, pid)| pid.and_then(rss_kib)).collect();
                let anon = pids
                    .iter()
                    .map(|(_, pid)| pid.and_then(|p| status_kib(p, "RssAnon:")))
                    .collect();
                if let Ok(mut m) = memory.lock() {
                    m.push(MemorySample { at, kib, anon });
                }
                if at >= length || stop.load(Ordering::Relaxed) {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                next += sample_every;
                let now = Instant::now();
                if next > now {
                    thread::sleep((next - now).min(length.saturating_sub(at)));
                }
            }
        });
    });
    let ran = started.elapsed();
    if let Some(e) = failure.lock().map_err(|_| "soak: lock")?.take() {
        return Err(e);
    }
    for (name, pid) in &pids {
        if pid.and_then(rss_kib).is_none() {
            return Err(format!("soak: {name} is no longer running"));
        }
    }
    drop(worker);
    drop(envoys);
    drop(cp);

    let revocations = revocations.into_inner().map_err(|_| "soak: lock")?;
    let memory = memory.into_inner().map_err(|_| "soak: lock")?;
    let accept_times = accept_times.into_inner().map_err(|_| "soak: lock")?;
    let unexpected = unexpected.into_inner().map_err(|_| "soak: lock")?;
    let unexpected_count = unexpected_count.load(Ordering::Relaxed);
    let (sent, ok) = (sent.load(Ordering::Relaxed), ok.load(Ordering::Relaxed));

    // Raw samples.
    let mut csv = String::from("seconds");
    for (name, _) in &pids {
        let _ = write!(csv, ",{name} KiB");
    }
    for (name, _) in &pids {
        let _ = write!(csv, ",{name} anon KiB");
    }
    csv.push('\n');
    for m in &memory {
        let _ = write!(csv, "{:.1}", m.at.as_secs_f64());
        for k in m.kib.iter().chain(&m.anon) {
            let _ = write!(csv, ",{}", k.map_or(String::new(), |k| k.to_string()));
        }
        csv.push('\n');
    }
    let csv_path = work.join("memory.csv");
    fs::write(&csv_path, &csv).map_err(|e| format!("writing {}: {e}", csv_path.display()))?;
    let mut rcsv = String::from("revocation");
    for e in &edges {
        let _ = write!(rcsv, ",{} ms", e.name);
    }
    rcsv.push('\n');
    for (i, r) in revocations.iter().enumerate() {
        let _ = write!(rcsv, "{i}");
        for d in &r.per_edge {
            let _ = write!(rcsv, ",{}", ms(*d));
        }
        rcsv.push('\n');
    }
    let rcsv_path = work.join("revocations.csv");
    fs::write(&rcsv_path, &rcsv).map_err(|e| format!("writing {}: {e}", rcsv_path.display()))?;

    // Figures.
    let never_refused: usize = revocations
        .iter()
        .map(|r| r.per_edge.iter().filter(|d| d.is_none()).count())
        .sum();
    let mut worst = Duration::ZERO;
    let mut edge_rows = String::new();
    for (i, e) in edges.iter().enumerate() {
        let times: Vec<Duration> = revocations
            .iter()
            .filter_map(|r| r.per_edge.get(i).copied().flatten())
            .collect();
        worst = worst.max(times.iter().copied().max().unwrap_or(Duration::ZERO));
        let _ = writeln!(
            edge_rows,
            "| {} | {} | {} | {} | {} |",
            e.name,
            times.len(),
            ms(percentile(&times, 50.0)),
            ms(percentile(&times, 99.0)),
            ms(times.iter().copied().max())
        );
    }
    let baseline_sample = memory.iter().min_by_key(|m| m.at.abs_diff(BASELINE_AT));
    let baseline = baseline_sample.map(|m| m.kib.clone()).unwrap_or_default();
    let baseline_anon = baseline_sample.map(|m| m.anon.clone()).unwrap_or_default();
    let last = memory.last().map(|m| m.kib.clone()).unwrap_or_default();
    let last_anon = memory.last().map(|m| m.anon.clone()).unwrap_or_default();
    let mut growth_worst: f64 = 0.0;
    let mut mem_rows = String::new();
    for (i, (name, _)) in pids.iter().enumerate() {
        let b = baseline.get(i).copied().flatten();
        let l = last.get(i).copied().flatten();
        let max = memory
            .iter()
            .filter_map(|m| m.kib.get(i).copied().flatten())
            .max();
        let growth = match (b, l) {
            (Some(b), Some(l)) if b > 0 => Some(l as f64 / b as f64 - 1.0),
            _ => None,
        };
        growth_worst = growth_worst.max(growth.unwrap_or(0.0));
        let mib = |k: Option<u64>| k.map_or("—".into(), |k| format!("{:.1}", k as f64 / 1024.0));
        let _ = writeln!(
            mem_rows,
            "| {name} | {} | {} | {} | {} | {} → {} |",
            mib(b),
            mib(l),
            mib(max),
            growth.map_or("—".into(), |g| format!("{:+.1} %", g * 100.0)),
            mib(baseline_anon.get(i).copied().flatten()),
            mib(last_anon.get(i).copied().flatten()),
        );
    }
    let accept_p99 = percentile(&accept_times, 99.0);

    println!(
        "soak: {sent} requests ({ok} answered 200), {unexpected_count} unexpected; {} revocations, \
         slowest refusal {:.1} ms, {never_refused} never refused; {} tokens created",
        revocations.len(),
        worst.as_secs_f64() * 1000.0,
        accept_times.len()
    );
    for u in &unexpected {
        println!(
            "  unexpected at {:.1} s via {}: {}",
            u.at.as_secs_f64(),
            u.edge,
            u.what
        );
    }

    let plot = if plan.smoke {
        None
    } else {
        let svg = inputs.root.join("docs").join("bench-soak-memory.svg");
        draw_memory(&svg, &pids, &memory)?;
        Some(svg)
    };

    let mut body = String::new();
    let _ = write!(
        body,
        "One real control plane (`tessera serve`, SQLite, `{bin}`), two Envoys with the filter \
         (sync service, usage reports on) and one workerd with the edge worker (keys from the \
         control plane's JWKS, status list revalidated in the background at the worker's default \
         interval, usage reports on), all on \
         loopback. A {cal} s calibration with {threads} closed-loop threads ({tpe} per edge) \
         found the saturating rate ({saturating:.0} requests/s); the soak then ran \
         {secs:.0} s at half of it ({rate:.0}/s, paced). Meanwhile a token was created and \
         downloaded every {create} ms and joined the live pool once every edge accepted it, \
         and every {revoke} s the oldest live token left the pool and was revoked through the \
         API; from the revoke's answer, one prober per edge sent it until the first 401. \
         Resident memory (`VmRSS`) of each process was read every {every} s. \
         Raw samples: `target/bench/soak/memory.csv` and `revocations.csv`.\n\n\
         ```\ncargo xtask bench --only soak\n```\n\n\
         | | value |\n|---|---:|\n\
         | requests sent | {sent} |\n| answered 200 | {ok} |\n\
         | unexpected answers | {unexpected_count} |\n\
         | tokens created (accepted at every edge) | {created} |\n\
         | new token accepted at every edge, p99 | {accept} ms |\n\
         | revocations | {revs} |\n| revocation × edge never refused within {limit} s | {never_refused} |\n\n\
         **Time from the revoke's answer to the first 401**\n\n\
         | edge | revocations | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n{edge_rows}\n\
         **Resident memory** (MiB; baseline: the sample nearest minute 2)\n\n\
         | process | at minute 2 | at the end | max | growth | of which anonymous (heap, stacks), minute 2 → end |\n|---|---:|---:|---:|---:|---:|\n{mem_rows}",
        bin = inputs.cp_bin.display(),
        cal = CALIBRATION.as_secs(),
        tpe = THREADS_PER_EDGE,
        secs = ran.as_secs_f64(),
        create = CREATE_EVERY.as_millis(),
        revoke = REVOKE_EVERY.as_secs(),
        every = sample_every.as_secs(),
        created = accept_times.len(),
        accept = ms(accept_p99),
        revs = revocations.len(),
        limit = REFUSE_LIMIT.as_secs(),
    );
    if let Some(svg) = &plot {
        let rel = svg.strip_prefix(inputs.root).unwrap_or(svg);
        let _ = write!(body, "\n![Resident memory over time]({})\n", rel.display());
    }
    if !unexpected.is_empty() {
        body.push_str("\nFirst unexpected answers:\n\n");
        for u in &unexpected {
            let _ = writeln!(
                body,
                "- at {:.1} s via {}: `{}`",
                u.at.as_secs_f64(),
                u.edge,
                u.what.replace('`', "'")
            );
        }
    }
    let decided = |met: bool| (!plan.smoke).then_some(met);
    let targets = vec![
        TargetRow {
            measure: "Soak: every revoke refused at every edge".into(),
            measured: format!(
                "slowest {:.0} ms, {never_refused} never",
                worst.as_secs_f64() * 1000.0
            ),
            target: format!("≤ {} s", REVOKE_TARGET.as_secs()),
            met: decided(never_refused == 0 && worst <= REVOKE_TARGET),
        },
        TargetRow {
            measure: "Soak: unexpected answers".into(),
            measured: unexpected_count.to_string(),
            target: "0".into(),
            met: decided(unexpected_count == 0),
        },
        TargetRow {
            measure: "Soak: RSS growth after minute 2 (worst process)".into(),
            measured: format!("{:+.1} %", growth_worst * 100.0),
            target: format!("≤ +{:.0} %", RSS_GROWTH_TARGET * 100.0),
            met: decided(growth_worst <= RSS_GROWTH_TARGET),
        },
    ];
    if plan.smoke && (never_refused > 0 || revocations.is_empty()) {
        return Err(format!(
            "soak: {never_refused} refusals missing over {} revocations",
            revocations.len()
        ));
    }
    Ok(Section {
        title: "Soak: the whole system for ten minutes".into(),
        body,
        targets,
    })
}

/// Memory over time, one line per process, as SVG.
fn draw_memory(path: &Path, pids: &[(&str, Option<u32>)], memory: &[MemorySample]) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| err(&e))?;
    }
    let x_max = memory.last().map_or(1.0, |m| m.at.as_secs_f64()).max(1.0);
    let y_max = memory
        .iter()
        .flat_map(|m| m.kib.iter().flatten())
        .max()
        .map_or(1.0, |k| *k as f64 / 1024.0 * 1.15);
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Resident memory during the soak", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("MiB")
        .draw()
        .map_err(|e| err(&e))?;
    let colours = [RED, BLUE, GREEN, MAGENTA];
    for (i, (name, _)) in pids.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let points: Vec<(f64, f64)> = memory
            .iter()
            .filter_map(|m| {
                let k = m.kib.get(i).copied().flatten()?;
                Some((m.at.as_secs_f64(), k as f64 / 1024.0))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
