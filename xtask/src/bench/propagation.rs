//! The propagation part of `cargo xtask bench`: how long a revocation takes to reach the
//! data plane.
//!
//! One real control plane (`tessera serve`, SQLite), four separate Envoy processes, each
//! running the Tessera filter and its singleton sync service, which long-polls the
//! control plane's status-list change feed, and two workerd processes running the edge
//! worker, which revalidates the status list in the background with its default period.
//! For each of N tokens (100 in the full run, 5 in the smoke run): every edge must answer
//! 200 for it; then one thread per edge polls it with that token in a tight loop while
//! the token is revoked through the API, and each thread records when the first `401
//! revoked` arrived. The measure is that instant minus the instant the revoke API's
//! answer arrived (t0), per edge.
//!
//! Everything runs on loopback; the control plane, every Envoy and every workerd are
//! stopped when their guards drop, whatever happens. The raw samples go to
//! `target/bench/propagation/samples.csv` and the Envoy bootstraps next to it.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_host_tests::workerd::{Origin, Workerd, WorkerdOptions};
use tessera_host_tests::{
    ControlPlane, ControlPlaneOptions, EchoUpstream, Envoy, EnvoyOptions, Request,
};

use super::stats::percentile;
use super::{Inputs, Plan, Section, TargetRow};
use crate::tools::Result;

/// Envoy processes, each with its own sync service.
pub(super) const ENVOYS: usize = 4;
/// workerd processes, each running the edge worker with its default status refresh.
pub(super) const WORKERDS: usize = 2;
/// Every edge: the Envoys first, then the workerds.
const EDGES: usize = ENVOYS + WORKERDS;

/// The name of edge `e` in the report.
fn edge_name(e: usize) -> String {
    if e < ENVOYS {
        format!("Envoy {}", e + 1)
    } else {
        format!("workerd {}", e - ENVOYS + 1)
    }
}
/// Revocations measured in the full run.
pub(super) const FULL_REVOKES: usize = 100;
/// Revocations in the smoke run.
pub(super) const SMOKE_REVOKES: usize = 5;
/// The Envoy cluster that reaches the control plane.
const CP_CLUSTER: &str = "tessera_control_plane";
/// The sync service's long-poll wait (its default): the control plane answers at once
/// on a change, so this only bounds how long an idle poll stays open.
const POLL_WAIT_SECS: u64 = 20;
/// The filter's staleness bound (never reached here: the feed is always live).
const MAX_STALENESS_SECS: u64 = 30;
/// How long one revocation may take to show at every Envoy before the run fails.
const LIMIT: Duration = Duration::from_secs(10);
/// How long the Envoys may take to accept the tokens after they were created (first
/// sync, JWKS, a list covering every index).
const READY_LIMIT: Duration = Duration::from_secs(30);
/// The issue's target for the p99.
const TARGET: Duration = Duration::from_secs(1);
/// The request every Envoy gets (any path: no route rule needs a scope for it).
const PATH: &str = "/api/orders";

/// One Envoy's view of one revocation.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    /// Which revocation (0-based).
    revoke: usize,
    /// Which edge (0-based: the Envoys, then the workerds).
    pub(super) edge: usize,
    /// First 401 minus t0, or zero when the first 401 arrived before t0.
    pub(super) after_answer: Duration,
    /// Whether the first 401 arrived before the revoke API's answer.
    before_answer: bool,
    /// First 401 minus the instant the revoke call was started.
    after_call_start: Duration,
    /// The revoke call's own duration (request sent → answer read).
    call: Duration,
    /// Between the arrival of the last 200 and that of the first 401: how precisely the
    /// first 401 is placed in time.
    gap: Duration,
    /// Requests this poller sent for this revocation.
    requests: u64,
    /// How long this poller polled.
    polled: Duration,
}

/// What one poller saw.
pub(super) struct Polled {
    /// Arrival of the last 200.
    pub(super) last_allow: Instant,
    /// Arrival of the first `401 revoked`.
    pub(super) first_revoked: Instant,
    pub(super) requests: u64,
    pub(super) started: Instant,
}

/// The answer to one data-plane request, classified.
pub(super) enum Seen {
    Allow,
    Revoked,
    Other(String),
}

pub(super) fn classify(envoy: SocketAddr, request: &Request) -> Seen {
    classify_as(envoy, request, "revoked")
}

/// [`classify`] with `Seen::Revoked` standing for a 401 with reason `reason`.
fn classify_as(envoy: SocketAddr, request: &Request, reason: &str) -> Seen {
    match request.send(envoy) {
        Ok(r) if r.status == 200 => Seen::Allow,
        Ok(r) if r.status == 401 && r.reason().as_deref() == Some(reason) => Seen::Revoked,
        Ok(r) => Seen::Other(r.summary()),
        Err(e) => Seen::Other(format!("request failed: {e}")),
    }
}

pub(super) fn data_plane_request(jwt: &str) -> Request {
    Request::get(PATH)
        .bearer(jwt)
        .timeout(Duration::from_secs(5))
}

/// Polls `envoy` with `request` (a fresh connection per request: the harness client sends
/// `Connection: close`) until it answers `401 revoked`. Counts itself in `ready` after
/// its first 200, so the caller revokes only once every poller is in its loop. Anything
/// but 200 before the 401 (or 200 never seen) is an error, and so is no 401 within
/// [`LIMIT`].
pub(super) fn poll_until_revoked(
    envoy: SocketAddr,
    request: &Request,
    ready: &AtomicUsize,
    abort: &AtomicBool,
) -> Result<Polled> {
    poll_until_refused(envoy, request, "revoked", LIMIT, ready, abort)
}

/// [`poll_until_revoked`] waiting for a 401 with reason `reason`, for at most `limit`.
pub(super) fn poll_until_refused(
    envoy: SocketAddr,
    request: &Request,
    reason: &str,
    limit: Duration,
    ready: &AtomicUsize,
    abort: &AtomicBool,
) -> Result<Polled> {
    let started = Instant::now();
    let mut last_allow = None;
    let mut requests = 0u64;
    loop {
        if abort.load(Ordering::Relaxed) {
            return Err("stopped: the revoke call failed".into());
        }
        let seen = classify_as(envoy, request, reason);
        let at = Instant::now();
        requests += 1;
        match seen {
            Seen::Allow => {
                if last_allow.is_none() {
                    ready.fetch_add(1, Ordering::SeqCst);
                }
                last_allow = Some(at);
            }
            Seen::Revoked => {
                let Some(last_allow) = last_allow else {
                    return Err(format!(
                        "401 {reason} before any 200 (before the revoke call)"
                    ));
                };
                return Ok(Polled {
                    last_allow,
                    first_revoked: at,
                    requests,
                    started,
                });
            }
            Seen::Other(what) => {
                return Err(format!(
                    "unexpected answer while waiting for 401 {reason} (after {requests} \
                     requests): {what}"
                ))
            }
        }
        if at.duration_since(started) > limit {
            return Err(format!(
                "no 401 {reason} within {limit:?} of polling ({requests} requests, all 200)"
            ));
        }
    }
}

/// Sends `jwt` to `envoy` until it answers 200, for at most `limit`.
pub(super) fn wait_allowed(envoy: SocketAddr, jwt: &str, limit: Duration) -> Result<()> {
    let start = Instant::now();
    let request = data_plane_request(jwt);
    loop {
        match classify(envoy, &request) {
            Seen::Allow => return Ok(()),
            Seen::Revoked => return Err(format!("{envoy}: a fresh token was refused as revoked")),
            Seen::Other(what) if start.elapsed() > limit => {
                return Err(format!(
                    "{envoy}: a fresh token not accepted within {limit:?}; last answer: {what}"
                ))
            }
            Seen::Other(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// `12.3 ms`, `0.84 ms`, `1.20 s`.
pub(super) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// One table row: `| label | n | p50 | p90 | p99 | max |`.
pub(super) fn stats_row(label: &str, values: &[Duration]) -> String {
    let p = |pct| percentile(values, pct).map_or("—".to_owned(), fmt_duration);
    format!(
        "| {label} | {} | {} | {} | {} | {} |",
        values.len(),
        p(50.0),
        p(90.0),
        p(99.0),
        p(100.0)
    )
}

pub(super) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// A workerd edge worker that fetches its keys and status list from `cp` itself (status
/// refresh at the worker's default period, fail closed), its origin at `origin`: the
/// workers of this part and of `leaks`.
pub(super) fn synced_worker(
    inputs: &Inputs<'_>,
    cp: &ControlPlane,
    origin: SocketAddr,
) -> WorkerdOptions {
    let worker_config = json!({
        "issuers": [cp.issuer()],
        "audiences": ["tessera"],
        "status": {"required": true, "fail_policy": "closed"},
        "sync": {"max_staleness_secs": MAX_STALENESS_SECS},
    });
    WorkerdOptions::new(
        inputs.workerd,
        inputs.edge_bundle,
        &worker_config,
        Origin::Url(format!("http://{origin}")),
    )
    .var("TESSERA_JWKS_URLS", &json!([cp.jwks_url()]).to_string())
    .var(
        "TESSERA_STATUS_URLS",
        &json!({ cp.status_list_uri(): cp.status_list_uri() }).to_string(),
    )
}

pub fn run(inputs: &Inputs<'_>, plan: &Plan, dir: &Path) -> Result<Section> {
    let revokes = if plan.smoke {
        SMOKE_REVOKES
    } else {
        FULL_REVOKES
    };
    let load_before = load_average();
    println!("propagation: starting the control plane, {ENVOYS} Envoys and {WORKERDS} workerds");
    let cp = ControlPlane::start(&ControlPlaneOptions::new(inputs.cp_bin))
        .map_err(|e| format!("propagation: control plane: {e}"))?;
    let samples = measure(inputs, revokes, dir, &[&cp])?;
    drop(cp);
    let load_after = load_average();
    Ok(report(
        inputs,
        plan,
        dir,
        &samples,
        revokes,
        (&load_before, &load_after),
    ))
}

/// Revokes through the first of `replicas` (one database) while every edge is polled;
/// each Envoy's sync cluster lists all of them. One sample per revoke and edge.
pub(super) fn measure(
    inputs: &Inputs<'_>,
    revokes: usize,
    dir: &Path,
    replicas: &[&ControlPlane],
) -> Result<Vec<Sample>> {
    let cp = *replicas.first().ok_or("propagation: no control plane")?;
    let admin = cp.admin_token().to_owned();

    let filter = cp.filter_config("closed", MAX_STALENESS_SECS, None);
    let endpoints: Vec<SocketAddr> = replicas.iter().map(|r| r.addr()).collect();
    let mut options = EnvoyOptions::new(inputs.envoy)
        .filter(inputs.filter_wasm, &filter)
        .cluster_endpoints(CP_CLUSTER, &endpoints)
        .sync_service(&cp.sync_service_config(CP_CLUSTER, POLL_WAIT_SECS))
        .concurrency(1);
    options.log_level = "warn".into();
    for n in 1..=ENVOYS {
        let path = dir.join(format!("envoy-{n}.yaml"));
        fs::write(&path, options.bootstrap_yaml())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    // Start the four in parallel; whichever started is stopped (dropped) if one fails.
    let started: Vec<Result<Envoy>> = thread::scope(|s| {
        let handles: Vec<_> = (0..ENVOYS)
            .map(|_| s.spawn(|| Envoy::start(&options).map_err(|e| e.to_string())))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("the thread starting Envoy panicked".into()))
            })
            .collect()
    });
    let envoys: Vec<Envoy> = started
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| format!("propagation: Envoy {} did not start: {e}", i + 1)))
        .collect::<Result<_>>()?;
    // The edge workers: keys and the status list from the same control plane, fetched
    // by the worker itself (status refresh at its default period).
    let origin = EchoUpstream::start().map_err(|e| format!("propagation: origin: {e}"))?;
    let worker_options = synced_worker(inputs, cp, origin.addr());
    let workers: Vec<Workerd> = (0..WORKERDS)
        .map(|i| {
            Workerd::start(&worker_options)
                .map_err(|e| format!("propagation: workerd {} did not start: {e}", i + 1))
        })
        .collect::<Result<_>>()?;
    let addrs: Vec<SocketAddr> = envoys
        .iter()
        .map(Envoy::addr)
        .chain(workers.iter().map(Workerd::addr))
        .collect();

    // Every token up front; then each Envoy must accept the newest one (first sync done,
    // keys known, a list covering every index).
    let created = Instant::now();
    let mut tokens = Vec::with_capacity(revokes);
    for i in 0..revokes {
        tokens.push(
            cp.create_and_download(&admin, &format!("propagation-{i}"), &["read"])
                .map_err(|e| format!("propagation: creating token {i}: {e}"))?,
        );
    }
    let created = created.elapsed();
    let newest = &tokens[revokes - 1].1;
    for addr in &addrs {
        wait_allowed(*addr, newest, READY_LIMIT).map_err(|e| format!("propagation: {e}"))?;
    }
    for (i, envoy) in envoys.iter().enumerate() {
        let workers = envoy
            .worker_connections()
            .map_err(|e| format!("propagation: Envoy {} admin stats: {e}", i + 1))?;
        if workers.len() != 1 {
            return Err(format!(
                "propagation: Envoy {} has {} workers, expected 1",
                i + 1,
                workers.len()
            ));
        }
    }
    println!(
        "propagation: {revokes} tokens created in {}; {EDGES} edges accept them; revoking",
        fmt_duration(created)
    );

    let mut samples = Vec::with_capacity(revokes * EDGES);
    let measured = Instant::now();
    for (r, (id, jwt)) in tokens.iter().enumerate() {
        let request = data_plane_request(jwt);
        for (e, addr) in addrs.iter().enumerate() {
            let what = match classify(*addr, &request) {
                Seen::Allow => continue,
                Seen::Revoked => "401 revoked".to_owned(),
                Seen::Other(what) => what,
            };
            return Err(format!(
                "propagation: before revoke {}, {} did not answer 200 for the token: {what}",
                r + 1,
                edge_name(e)
            ));
        }
        let ready = AtomicUsize::new(0);
        let abort = AtomicBool::new(false);
        let outcome = thread::scope(|s| -> Result<(Instant, Instant, Vec<Result<Polled>>)> {
            let handles: Vec<_> = addrs
                .iter()
                .map(|addr| {
                    let (request, ready, abort) = (&request, &ready, &abort);
                    s.spawn(move || poll_until_revoked(*addr, request, ready, abort))
                })
                .collect();
            // Revoke only once every poller has had its first 200.
            let wait = Instant::now();
            while ready.load(Ordering::SeqCst) < EDGES {
                if handles.iter().any(|h| h.is_finished()) || wait.elapsed() > LIMIT {
                    abort.store(true, Ordering::SeqCst);
                    break;
                }
                thread::sleep(Duration::from_micros(200));
            }
            let revoked = if abort.load(Ordering::SeqCst) {
                Err("a poller stopped before the revoke".to_owned())
            } else {
                let start = Instant::now();
                let answer = cp.revoke(&admin, id);
                let t0 = Instant::now();
                if answer.is_err() {
                    abort.store(true, Ordering::SeqCst);
                }
                answer.map(|_| (start, t0))
            };
            let polled: Vec<Result<Polled>> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("the polling thread panicked".into()))
                })
                .collect();
            let (start, t0) = match revoked {
                Ok(v) => v,
                Err(e) => {
                    let why: Vec<String> = polled
                        .iter()
                        .enumerate()
                        .filter_map(|(i, p)| {
                            p.as_ref().err().map(|e| format!("{}: {e}", edge_name(i)))
                        })
                        .collect();
                    return Err(format!("{e}; {}", why.join("; ")));
                }
            };
            Ok((start, t0, polled))
        });
        let (start, t0, polled) =
            outcome.map_err(|e| format!("propagation: revoke {}: {e}", r + 1))?;
        for (e, p) in polled.into_iter().enumerate() {
            let p = p.map_err(|why| {
                format!(
                    "propagation: revoke {} (token {id}), {} ({}): {why}",
                    r + 1,
                    edge_name(e),
                    addrs[e]
                )
            })?;
            let before_answer = p.first_revoked < t0;
            samples.push(Sample {
                revoke: r,
                edge: e,
                after_answer: p.first_revoked.saturating_duration_since(t0),
                before_answer,
                after_call_start: p.first_revoked.saturating_duration_since(start),
                call: t0.duration_since(start),
                gap: p.first_revoked.duration_since(p.last_allow),
                requests: p.requests,
                polled: p.first_revoked.duration_since(p.started),
            });
        }
    }
    let measured = measured.elapsed();

    // Revocation is final: the first token is still refused everywhere.
    let first = data_plane_request(&tokens[0].1);
    for (e, addr) in addrs.iter().enumerate() {
        if let Seen::Allow | Seen::Other(_) = classify(*addr, &first) {
            return Err(format!(
                "propagation: {} no longer refuses the first revoked token",
                edge_name(e)
            ));
        }
    }
    drop(envoys);
    drop(workers);
    drop(origin);

    write_samples(dir, &samples)?;
    let p99 = percentile(
        &samples.iter().map(|s| s.after_answer).collect::<Vec<_>>(),
        99.0,
    )
    .unwrap_or_default();
    println!(
        "propagation: {revokes} revokes × {EDGES} edges measured in {}; p99 {}",
        fmt_duration(measured),
        fmt_duration(p99)
    );
    Ok(samples)
}

fn write_samples(dir: &Path, samples: &[Sample]) -> Result<()> {
    let mut csv = String::from(
        "revoke,edge,after_answer_us,before_answer,after_call_start_us,revoke_call_us,\
         gap_us,requests,polled_us\n",
    );
    for s in samples {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{}",
            s.revoke + 1,
            edge_name(s.edge),
            s.after_answer.as_micros(),
            s.before_answer,
            s.after_call_start.as_micros(),
            s.call.as_micros(),
            s.gap.as_micros(),
            s.requests,
            s.polled.as_micros()
        );
    }
    let path = dir.join("samples.csv");
    fs::write(&path, csv).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn report(
    inputs: &Inputs<'_>,
    plan: &Plan,
    dir: &Path,
    samples: &[Sample],
    revokes: usize,
    load: (&str, &str),
) -> Section {
    let rel = |p: &Path| {
        p.strip_prefix(inputs.root)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let pick = |f: fn(&Sample) -> Duration| samples.iter().map(f).collect::<Vec<_>>();
    let all = pick(|s| s.after_answer);
    let of = |envoy: bool| {
        samples
            .iter()
            .filter(|s| (s.edge < ENVOYS) == envoy)
            .map(|s| s.after_answer)
            .collect::<Vec<_>>()
    };
    let (envoy_all, workerd_all) = (of(true), of(false));
    // The revoke call's duration once per revocation (the samples repeat it per Envoy).
    let calls: Vec<Duration> = samples
        .iter()
        .filter(|s| s.edge == 0)
        .map(|s| s.call)
        .collect();
    let early = samples.iter().filter(|s| s.before_answer).count();
    let requests: u64 = samples.iter().map(|s| s.requests).sum();
    let polled: Duration = samples.iter().map(|s| s.polled).sum();
    let per_request = if requests == 0 {
        Duration::ZERO
    } else {
        polled / u32::try_from(requests).unwrap_or(u32::MAX)
    };
    let build = if inputs
        .cp_bin
        .components()
        .any(|c| c.as_os_str() == "release")
    {
        "release build"
    } else {
        "debug build (smoke run)"
    };

    let mut md = String::new();
    let _ = writeln!(md, "### Method\n");
    let _ = writeln!(
        md,
        "- One control plane (`{}`, {build}, `tessera serve` on SQLite in a temporary \
         directory, loopback) and {ENVOYS} separate Envoy processes, each with \
         `--concurrency 1` (the machine has {} logical cores, shared by everything here), \
         the Tessera filter (fail policy `closed`, `max_staleness_secs` \
         {MAX_STALENESS_SECS}, keys and lists only from the sync service) and its \
         singleton sync service (`poll_wait_secs` {POLL_WAIT_SECS}: the control plane \
         answers the long poll at once on a change and the service re-polls at once; \
         `jwks_refresh_secs` 1, `retry_secs` 1). Envoy answers allowed requests with a \
         direct 200 (no upstream).\n\
         - And {WORKERDS} workerd processes running the edge worker (`edge-worker`, \
         fail policy `closed`, keys from the control plane's JWKS, the status list fetched \
         by the worker itself with its default refresh: revalidated with `If-None-Match` \
         in the background by the first request at least 900 ms after the last fetch \
         started, one fetch in flight). The worker forwards allowed requests to a loopback \
         echo origin.\n\
         - {revokes} tokens are created and downloaded up front; every Envoy must accept \
         the newest before the first revoke. Then, for each token in turn: each Envoy \
         must answer 200 for it; one thread per Envoy starts polling it with that token \
         (`GET {PATH}`) in a tight loop; once every thread has had its first 200, the \
         token is revoked through the API (`POST /v1/tokens/<id>/revoke`). **t0** is the \
         instant the revoke call's answer had been read (the call's own duration is \
         reported too). Each thread stops at its first `401` with reason `revoked`; the \
         sample is the arrival of that 401 minus t0: {} samples ({revokes} revokes × \
         {EDGES} edges). Any other answer, or no 401 within {} s, fails the run.\n\
         - Polling uses the harness client, which opens a fresh TCP connection per \
         request (`Connection: close`, no keep-alive). Poll resolution: a request took \
         {} on average while polling ({requests} requests), and the gap between the \
         last 200 and the first 401 at one Envoy (the window in which the new list \
         reached it) is in the results: a sample can overstate the moment that Envoy \
         started refusing by about that gap (at most the gap plus the response leg of \
         the last 200). The four polling threads run on the same 2 cores as the control plane and \
         the Envoys, so polling itself slows the path it measures a little.\n\
         - Because the polling starts before the revoke call, the first 401 can arrive \
         before t0: the control plane wakes the long polls when the revocation commits, \
         and the new list can reach an Envoy before the API's answer has reached the \
         caller. Such a sample is recorded as 0 (it shows at once); it happened in \
         {early} of {} samples. The time from the *start* of the revoke call is reported \
         as well, which is never negative.\n\
         - Percentiles are nearest-rank (the value of rank ⌈p·n/100⌉ in sorted order, so \
         p99 of 400 samples is the 396th). One pass of {revokes} revocations is the \
         measurement: the issue's interleaved-rounds rule is for throughput comparisons, \
         and this part compares nothing (`--rounds` does not apply to it).\n\
         - The machine is shared with other work: load average {} before the part and {} \
         after it. Figures are noisy at the millisecond level.\n",
        rel(inputs.cp_bin),
        thread::available_parallelism().map_or(0, |n| n.get()),
        all.len(),
        LIMIT.as_secs(),
        fmt_duration(per_request),
        all.len(),
        load.0,
        load.1,
    );
    let _ = writeln!(md, "### Commands\n");
    let _ = writeln!(
        md,
        "```sh\ncargo xtask bench --only propagation           # this part alone: \
         target/bench/BENCHMARKS-partial.md\n\
         cargo xtask bench --only propagation --smoke   # {SMOKE_REVOKES} revokes, no \
         speed assertion\n\n\
         # by hand, per Envoy (the bootstraps of the last run, with its control plane's \
         port, are in {d}/envoy-<n>.yaml; raw samples in {d}/samples.csv):\n\
         envoy -c {d}/envoy-<n>.yaml --concurrency 1 --log-level warn --disable-hot-restart\n\
         curl -s -X POST -H 'authorization: Bearer <admin token>' \
         http://127.0.0.1:<cp port>/v1/tokens/<id>/revoke\n\
         curl -s -H 'authorization: Bearer <jwt>' http://127.0.0.1:<envoy port>{PATH}\n```\n",
        d = rel(dir),
    );
    let _ = writeln!(md, "### Results\n");
    let _ = writeln!(md, "| measure | samples | p50 | p90 | p99 | max |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "{}",
        stats_row(
            &format!("**revoke answer → first 401, all {ENVOYS} Envoys**"),
            &envoy_all
        )
    );
    let _ = writeln!(
        md,
        "{}",
        stats_row(
            &format!("**revoke answer → first 401, all {WORKERDS} workerds**"),
            &workerd_all
        )
    );
    for e in 0..EDGES {
        let mine: Vec<Duration> = samples
            .iter()
            .filter(|s| s.edge == e)
            .map(|s| s.after_answer)
            .collect();
        let _ = writeln!(
            md,
            "{}",
            stats_row(
                &format!("revoke answer → first 401, {}", edge_name(e)),
                &mine
            )
        );
    }
    let _ = writeln!(
        md,
        "{}",
        stats_row(
            "revoke call start → first 401, all edges",
            &pick(|s| s.after_call_start)
        )
    );
    let _ = writeln!(
        md,
        "{}",
        stats_row("the revoke API call itself (sent → answer read)", &calls)
    );
    let _ = writeln!(
        md,
        "{}",
        stats_row(
            "poll resolution: last 200 → first 401 at one edge",
            &pick(|s| s.gap)
        )
    );
    let _ = writeln!(
        md,
        "\nFirst 401 before the revoke's answer (recorded as 0): {early} of {}.",
        all.len()
    );
    // The slowest revoke call, and when its 401s arrived: tells a slow control plane
    // apart from slow propagation.
    if let Some(slowest) = samples.iter().max_by_key(|s| s.call) {
        let its: Vec<Duration> = samples
            .iter()
            .filter(|s| s.revoke == slowest.revoke)
            .map(|s| s.after_answer)
            .collect();
        let lo = its.iter().min().copied().unwrap_or_default();
        let hi = its.iter().max().copied().unwrap_or_default();
        let _ = writeln!(
            md,
            "The slowest revoke call (revoke {} of {revokes}) took {}; its first 401s \
             arrived {}–{} after its answer.",
            slowest.revoke + 1,
            fmt_duration(slowest.call),
            fmt_duration(lo),
            fmt_duration(hi)
        );
    }
    let _ = writeln!(md);

    let row = |what: String, values: &[Duration]| {
        let p99 = percentile(values, 99.0).unwrap_or_default();
        TargetRow {
            measure: format!("Propagation p99 (revoke answer → first 401, {what})"),
            measured: fmt_duration(p99),
            target: "≤ 1 s".into(),
            met: (!plan.smoke).then_some(p99 <= TARGET),
        }
    };
    let targets = vec![
        row(format!("{ENVOYS} Envoys"), &envoy_all),
        row(format!("{WORKERDS} workerds"), &workerd_all),
    ];
    Section {
        title: "Revocation propagation".into(),
        body: md,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(Duration::from_micros(840)), "0.84 ms");
        assert_eq!(fmt_duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(fmt_duration(ms(1200)), "1.20 s");
    }

    #[test]
    fn report_has_the_targets_and_every_edge() {
        let root = Path::new("/repo");
        let inputs = Inputs::example(root);
        let samples: Vec<Sample> = (0..10)
            .flat_map(|r| {
                (0..EDGES).map(move |e| Sample {
                    revoke: r,
                    edge: e,
                    after_answer: ms((r * EDGES + e) as u64),
                    before_answer: r == 0 && e == 0,
                    after_call_start: ms((r * EDGES + e) as u64 + 3),
                    call: ms(3),
                    gap: Duration::from_micros(500),
                    requests: 10,
                    polled: ms(5),
                })
            })
            .collect();
        let dir = Path::new("/repo/target/bench/propagation");
        let section = report(&inputs, &Plan::full(), dir, &samples, 10, ("1", "2"));
        assert_eq!(section.title, "Revocation propagation");
        for heading in ["### Method", "### Commands", "### Results"] {
            assert!(section.body.contains(heading), "{heading}");
        }
        for e in 0..EDGES {
            let name = edge_name(e);
            assert!(section.body.contains(&format!("{name} |")), "{name}");
        }
        assert!(section.body.contains("workerd 2 |"));
        assert!(section
            .body
            .contains("target/bench/propagation/envoy-<n>.yaml"));
        assert!(section.body.contains("1 of 60"));
        assert!(section.body.contains("took 3.00 ms; its first 401s"));
        assert_eq!(section.targets.len(), 2);
        // Envoys: r·6 + 0..=3 ms, the largest 57 ms; workerds: r·6 + 4..=5, up to 59 ms.
        assert_eq!(section.targets[0].measured, "57.0 ms");
        assert!(section.targets[0].measure.contains("4 Envoys"));
        assert_eq!(section.targets[1].measured, "59.0 ms");
        assert!(section.targets[1].measure.contains("2 workerds"));
        assert_eq!(section.targets[0].met, Some(true));
        let smoke = Plan {
            smoke: true,
            ..Plan::full()
        };
        let section = report(&inputs, &smoke, dir, &samples, 10, ("1", "2"));
        assert_eq!(section.targets[0].met, None);
    }
}
