//! Per-token rate limits enforced across a fleet (issue 25), in real processes: a real
//! `tessera serve`, two Envoys (`--concurrency 2`, synced by the module's sync service,
//! usage and spend reported to the control plane) and a workerd running the edge worker
//! (the same lease protocol per isolate). The org sets a default of 50 requests per
//! minute and a token limited only by that default is downloaded after the edges
//! started, so its first requests find either a lease granted ahead (a recently
//! downloaded token) or ask for one. A client sends far more than the limit, spread over
//! every edge; then one Envoy is SIGKILLed and the client goes on at the survivors.
//!
//! Asserted: in no minute window does the fleet admit more than 50 (requests whose send
//! and answer fall in different windows may count in either; the check is that some
//! assignment keeps every window within the limit); every refusal is a 429 `rate_limited`
//! with `Retry-After`, `RateLimit-Policy` and `RateLimit`; the survivor's Envoy stats count
//! exactly the client's admissions and refusals there; and the fleet actually admits at
//! least 90 % of the limit in one window while both Envoys share it (the client goes on
//! until it does, bounded by a safety net). The figures are printed.
//!
//! Needs `TESSERA_ENVOY`, `TESSERA_FILTER_WASM`, `TESSERA_WORKERD`,
//! `TESSERA_EDGE_WORKER_DIR` and `TESSERA_CP_BIN`; `cargo xtask test` sets them all.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tessera_host_tests::workerd::Workerd;
use tessera_host_tests::{
    control_plane_path, tools, ControlPlane, ControlPlaneOptions, EchoUpstream, Envoy,
    EnvoyOptions, Request,
};

const CP_CLUSTER: &str = "tessera_control_plane";
/// The token's limit: requests per minute, across the fleet.
const LIMIT: u64 = 50;
/// The share of the limit the fleet must reach in one window while both Envoys share it.
const FLOOR: u64 = LIMIT * 9 / 10;
/// A safety net for polling, not a measure.
const SAFETY_NET: Duration = Duration::from_secs(25);
/// The least time both Envoys share the limit before the SIGKILL (many report rounds).
const SHARED_AT_LEAST: Duration = Duration::from_secs(2);
/// How long the client goes on at the survivor after the SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(3);
/// Client threads, each sending one request at a time.
const CLIENTS: usize = 3;

fn start_envoy(cp: &ControlPlane, upstream: &EchoUpstream, secret: &str) -> Envoy {
    let (envoy, wasm) = tools();
    let filter = cp.filter_config(
        "closed",
        30,
        Some(cp.usage_config(CP_CLUSTER, secret, 10_000)),
    );
    let sync = cp.sync_service_config(CP_CLUSTER, 20);
    let options = EnvoyOptions::new(&envoy)
        .filter(&wasm, &filter)
        .upstream(upstream.addr())
        .cluster(CP_CLUSTER, cp.addr())
        .sync_service(&sync)
        .concurrency(2);
    Envoy::start(&options).unwrap_or_else(|e| panic!("envoy did not start: {e}"))
}

fn start_workerd(cp: &ControlPlane, upstream: &EchoUpstream, secret: &str) -> Workerd {
    Workerd::start(
        &cp.workerd_options(upstream.addr())
            .var("TESSERA_USAGE_URL", &format!("{}/v1/usage", cp.url()))
            .var("TESSERA_USAGE_TOKEN", secret)
            .var("TESSERA_USAGE_FLUSH_MS", "200")
            .var("TESSERA_USAGE_BATCH", "500"),
    )
    .unwrap_or_else(|e| panic!("workerd did not start: {e}"))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One request sent (answered, or broken by the SIGKILL).
#[derive(Clone, Debug)]
struct Answer {
    /// Its `x-client-seq`, which the upstream sees when the edge admitted it.
    seq: u64,
    edge: usize,
    /// Unix ms just before sending and just after the answer.
    sent: u64,
    received: u64,
    /// 0 when the connection broke (the killed Envoy).
    status: u16,
    /// For a refusal: what is wrong with it (`None` when it is as specified).
    refusal_fault: Option<String>,
}

/// What a refusal must be: 429 `rate_limited`, `Retry-After` (whole seconds, at least 1,
/// at most the minute), and the draft's fields for the per-minute window.
fn refusal_fault(r: &tessera_host_tests::Response) -> Option<String> {
    let retry = r.header("retry-after").and_then(|v| v.parse::<u64>().ok());
    let policy = r.header("ratelimit-policy").unwrap_or_default();
    let state = r.header("ratelimit").unwrap_or_default();
    let ok = r.reason().as_deref() == Some("rate_limited")
        && retry.is_some_and(|s| (1..=60).contains(&s))
        && policy == format!("\"per_minute\";q={LIMIT};w=60")
        && state.starts_with("\"per_minute\";r=0;t=");
    (!ok).then(|| {
        format!(
            "retry-after={:?} ratelimit-policy={policy:?} ratelimit={state:?} body={}",
            r.header("retry-after"),
            r.text()
        )
    })
}

/// Admissions per minute window: `(definite, ambiguous)` where an ambiguous one was sent
/// in the window before and answered in this one (it may count in either). `admitted`
/// tells the requests admitted.
fn per_window(
    answers: &[Answer],
    window_ms: u64,
    admitted: impl Fn(&Answer) -> bool,
) -> BTreeMap<u64, (u64, u64)> {
    let mut w: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for a in answers.iter().filter(|a| admitted(a)) {
        let (s, r) = (a.sent / window_ms, a.received / window_ms);
        if s == r {
            w.entry(s).or_default().0 += 1;
        } else {
            w.entry(s).or_default();
            w.entry(r).or_default().1 += 1;
        }
    }
    w
}

/// Whether the ambiguous admissions can be assigned so that no window admits more than
/// its bound (`bound(window)`; each one to its window or the one before): greedily,
/// oldest window first, as many as fit go to the earlier window.
fn within_limit(
    windows: &BTreeMap<u64, (u64, u64)>,
    bound: impl Fn(u64) -> u64,
) -> Result<(), String> {
    let mut carried: u64 = 0;
    let mut prev: Option<u64> = None;
    for (&i, &(definite, ambiguous)) in windows {
        // What the window before left room for, if it is the window before.
        let room = match prev {
            Some(p) if p + 1 == i => bound(p).saturating_sub(carried),
            _ => 0,
        };
        let to_prev = ambiguous.min(room);
        let here = definite + (ambiguous - to_prev);
        if here > bound(i) {
            return Err(format!(
                "window {i}: {definite} admitted in it and {ambiguous} that straddle \
                 its start (at most {room} of them fit the window before): over {}",
                bound(i)
            ));
        }
        carried = here;
        prev = Some(i);
    }
    Ok(())
}

/// The `x-client-seq` of every request that reached the upstream (the edges admitted it).
fn reached(upstream: &EchoUpstream) -> HashSet<u64> {
    upstream
        .requests()
        .iter()
        .filter_map(|r| {
            r["headers"].as_array()?.iter().find_map(|h| {
                (h[0].as_str()?.eq_ignore_ascii_case("x-client-seq"))
                    .then(|| h[1].as_str()?.parse::<u64>().ok())?
            })
        })
        .collect()
}

/// The client: [`CLIENTS`] threads, each sending one request at a time, round robin over
/// the live edges, recording every answer (a broken connection to an edge marked dead
/// counts as an answer with status 0; anything else unexpected is a failure).
struct Client {
    live: Arc<Mutex<Vec<bool>>>,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    failures: Arc<Mutex<Vec<String>>>,
    started: Instant,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(addrs: &[SocketAddr], token: &str) -> Client {
        let live = Arc::new(Mutex::new(vec![true; addrs.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let answers: Arc<Mutex<Vec<Answer>>> = Arc::new(Mutex::new(Vec::new()));
        let failures: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads = (0..CLIENTS)
            .map(|c| {
                let seq = seq.clone();
                let (live, stop, answers, failures, addrs, token) = (
                    live.clone(),
                    stop.clone(),
                    answers.clone(),
                    failures.clone(),
                    addrs.to_vec(),
                    token.to_owned(),
                );
                std::thread::spawn(move || {
                    let mut n = c;
                    while !stop.load(Ordering::SeqCst) {
                        let edges: Vec<usize> = {
                            let live = live.lock().expect("live");
                            (0..addrs.len()).filter(|i| live[*i]).collect()
                        };
                        let edge = edges[n % edges.len()];
                        n += 1;
                        let seq = seq.fetch_add(1, Ordering::SeqCst);
                        let sent = unix_ms();
                        let got = Request::get("/api/orders")
                            .bearer(&token)
                            .header("x-client-seq", &seq.to_string())
                            .send(addrs[edge]);
                        let received = unix_ms();
                        let answer = |status: u16, refusal_fault: Option<String>| Answer {
                            seq,
                            edge,
                            sent,
                            received,
                            status,
                            refusal_fault,
                        };
                        match got {
                            Ok(r) if r.status == 200 && r.upstream().is_some() => {
                                answers.lock().expect("answers").push(answer(200, None))
                            }
                            Ok(r) if r.status == 429 => answers
                                .lock()
                                .expect("answers")
                                .push(answer(429, refusal_fault(&r))),
                            Ok(r) => failures
                                .lock()
                                .expect("failures")
                                .push(format!("edge {edge}: {}", r.summary())),
                            // The killed Envoy's connections break: it may have admitted
                            // the request before (the upstream tells), between `sent` and now.
                            Err(_) if !live.lock().expect("live")[edge] => {
                                answers.lock().expect("answers").push(answer(0, None))
                            }
                            Err(e) => failures
                                .lock()
                                .expect("failures")
                                .push(format!("edge {edge}: request failed: {e}")),
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Client {
            live,
            stop,
            answers,
            failures,
            started: Instant::now(),
            threads,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("client thread");
        }
    }
}

#[test]
fn a_fleet_of_envoys_never_admits_more_than_the_limit_in_any_window() {
    let cp = ControlPlane::start(&ControlPlaneOptions::new(&control_plane_path()))
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let upstream = EchoUpstream::start().expect("echo upstream");
    let alice = cp.admin_token().to_owned();
    let secret = cp
        .edge_credential(&alice, "rate-limited-edges")
        .expect("edge credential");
    let r = cp
        .api(
            "PUT",
            &format!("/v1/orgs/{}/rate-limits", cp.org()),
            Some(&alice),
            Some(&json!({"default": {"per_minute": LIMIT}})),
        )
        .unwrap_or_else(|e| panic!("org default: {e}"));
    assert_eq!(r["default"]["per_minute"], LIMIT, "{r}");
    let mut envoys: Vec<Option<Envoy>> = (0..2)
        .map(|_| Some(start_envoy(&cp, &upstream, &secret)))
        .collect();
    let worker = start_workerd(&cp, &upstream, &secret);
    // Edges 0 and 1 are the Envoys, 2 the worker.
    let addrs: Vec<SocketAddr> = envoys
        .iter()
        .map(|e| e.as_ref().expect("started").addr())
        .chain([worker.addr()])
        .collect();

    // A token limited only by the org's default, downloaded now.
    let (token_id, token) = cp
        .create_and_download(&alice, "metered", &["read"])
        .expect("create + download");
    let limits = cp
        .api(
            "GET",
            &format!("/v1/tokens/{token_id}/rate-limits"),
            Some(&alice),
            None,
        )
        .expect("token limits");
    assert_eq!(limits["own"], json!({}), "{limits}");
    assert_eq!(limits["effective"]["per_minute"], LIMIT, "{limits}");

    // The client: CLIENTS threads, round robin over the live Envoys.
    let client = Client::start(&addrs, &token);
    let (live, stop, answers, failures, started) = (
        client.live.clone(),
        client.stop.clone(),
        client.answers.clone(),
        client.failures.clone(),
        client.started,
    );

    // The whole fleet shares the limit until it has admitted FLOOR in one window.
    let floor_at = loop {
        std::thread::sleep(Duration::from_millis(100));
        let windows = per_window(&answers.lock().expect("answers"), 60_000, |a| {
            a.status == 200
        });
        let shared_long_enough = started.elapsed() >= SHARED_AT_LEAST;
        if let Some((i, (n, _))) = windows.iter().find(|(_, (n, _))| *n >= FLOOR) {
            if shared_long_enough {
                break (*i, *n);
            }
        }
        if started.elapsed() > SAFETY_NET {
            stop.store(true, Ordering::SeqCst);
            panic!(
                "the fleet never admitted {FLOOR} of {LIMIT} in one window; per window \
                 (definite, straddling): {windows:?}"
            );
        }
    };
    let shared_phase = started.elapsed();
    println!(
        "[rate limits] the whole fleet: {} admitted in minute window {} (limit {LIMIT}); SIGKILL after {shared_phase:?}",
        floor_at.1, floor_at.0
    );

    // SIGKILL one Envoy mid-run; the client goes on at the survivor.
    live.lock().expect("live")[1] = false;
    let killed = envoys[1].take().expect("second envoy");
    drop(killed);
    std::thread::sleep(AFTER_KILL);
    client.stop();
    let answers = answers.lock().expect("answers").clone();
    let failures = failures.lock().expect("failures").clone();
    assert!(failures.is_empty(), "unexpected answers: {failures:#?}");

    // What the edges admitted: every request that reached the upstream (also those whose
    // answer the SIGKILL broke). Each answered 200 is among them, and nothing else is.
    let reached = reached(&upstream);
    for a in &answers {
        match a.status {
            200 => assert!(
                reached.contains(&a.seq),
                "answered 200 unseen upstream: {a:?}"
            ),
            429 => assert!(!reached.contains(&a.seq), "refused but forwarded: {a:?}"),
            _ => {}
        }
    }
    let broken_admitted = answers
        .iter()
        .filter(|a| a.status == 0 && reached.contains(&a.seq))
        .count();

    // The figures.
    let windows = per_window(&answers, 60_000, |a| reached.contains(&a.seq));
    let count = |edge: usize, status: u16| {
        answers
            .iter()
            .filter(|a| a.edge == edge && a.status == status)
            .count() as u64
    };
    println!(
        "[rate limits] {} requests in {:?}: Envoy 0 admitted {} refused {}, Envoy 1 (killed \
         after {shared_phase:?}) admitted {} refused {}, workerd admitted {} refused {}",
        answers.len(),
        started.elapsed(),
        count(0, 200),
        count(0, 429),
        count(1, 200),
        count(1, 429),
        count(2, 200),
        count(2, 429)
    );
    println!(
        "[rate limits] {broken_admitted} requests admitted by the killed Envoy lost their answer"
    );
    for (i, (definite, ambiguous)) in &windows {
        println!(
            "[rate limits] minute window {i}: {definite} admitted (+{ambiguous} straddling its start), limit {LIMIT}"
        );
    }

    // Never above the limit in any window, across the fleet, SIGKILL included.
    within_limit(&windows, |_| LIMIT).unwrap_or_else(|e| panic!("{e}"));
    for edge in 0..addrs.len() {
        assert!(count(edge, 429) > 0, "edge {edge} never refused");
    }
    // Every refusal is the specified 429.
    let faults: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.refusal_fault.is_some())
        .collect();
    assert!(
        faults.is_empty(),
        "{} refusals are not as specified, e.g. {:?}",
        faults.len(),
        faults.first()
    );

    // The survivor's stats count exactly what the client saw there.
    let survivor = envoys[0].as_ref().expect("survivor");
    let stat = |name: &str| survivor.counter(name).unwrap_or(0);
    let (admitted, refused, asked, unleased, unavailable) = (
        stat("tessera.ratelimit.admitted"),
        stat("tessera.ratelimit.refused"),
        stat("tessera.ratelimit.asked"),
        stat("tessera.ratelimit.unleased"),
        stat("tessera.ratelimit.unavailable"),
    );
    println!(
        "[rate limits] survivor stats: admitted {admitted} refused {refused} asked {asked} \
         unleased {unleased} unavailable {unavailable} leases {} reports {}",
        stat("tessera.ratelimit.leases"),
        stat("tessera.ratelimit.reports")
    );
    assert_eq!(admitted, count(0, 200), "admitted at the survivor");
    assert_eq!(
        refused + unleased + unavailable,
        count(0, 429),
        "refused at the survivor"
    );
    assert_eq!(
        survivor.counter("tessera.deny.rate_limited").unwrap_or(0),
        count(0, 429)
    );
}

/// The fallback test's limit: requests per second across the fleet (per-second leases
/// cover 10 s, so the edges run out of them soon after the control plane is gone).
const PER_SECOND: u64 = 20;
/// How long the control plane stays dead: past every lease the edges held.
const OUTAGE: Duration = Duration::from_secs(13);
/// How long the client goes on once leases rule again.
const AFTER_RESTART: Duration = Duration::from_secs(3);

/// The `tessera.ratelimit.lost` gauge of both Envoys, and whether the worker's log says
/// the fallback started (`started`) or ended.
fn lost_everywhere(envoys: &[Envoy], worker: &Workerd, started: bool) -> bool {
    let needle = if started {
        "rate limits fall back to a local share"
    } else {
        "the control plane answers again"
    };
    envoys
        .iter()
        .all(|e| e.counter("tessera.ratelimit.lost") == Some(u64::from(started)))
        && worker.log().contains(needle)
}

/// A control-plane SIGKILL mid-run: each edge falls back to a local share of the limit
/// (limit ÷ the 3 edges the control plane counted) once its leases run out, says so
/// (`tessera.ratelimit.lost`, `tessera.ratelimit.fallback`, the worker's log and
/// counters), nothing panics and no request fails; the fleet stays within the fallback's
/// own bound (a window some edges hold leases for admits at most the limit plus every
/// edge's share; one nobody holds a lease for, at most the edges' shares); after the
/// control plane restarts on the same database, leases rule again: no more decisions on
/// the share, and every window after that is within the limit.
#[test]
fn a_lost_control_plane_leaves_each_edge_its_share_until_it_returns() {
    let mut cp = ControlPlane::start(&ControlPlaneOptions::new(&control_plane_path()))
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let upstream = EchoUpstream::start().expect("echo upstream");
    let alice = cp.admin_token().to_owned();
    let secret = cp
        .edge_credential(&alice, "fallback-edges")
        .expect("edge credential");
    cp.api(
        "PUT",
        &format!("/v1/orgs/{}/rate-limits", cp.org()),
        Some(&alice),
        Some(&json!({"default": {"per_second": PER_SECOND}})),
    )
    .unwrap_or_else(|e| panic!("org default: {e}"));
    let envoys: Vec<Envoy> = (0..2)
        .map(|_| start_envoy(&cp, &upstream, &secret))
        .collect();
    let worker = start_workerd(&cp, &upstream, &secret);
    let addrs: Vec<SocketAddr> = envoys
        .iter()
        .map(Envoy::addr)
        .chain([worker.addr()])
        .collect();
    let (_, token) = cp
        .create_and_download(&alice, "metered", &["read"])
        .expect("create + download");
    let share = PER_SECOND / addrs.len() as u64;

    let client = Client::start(&addrs, &token);
    let (answers, failures) = (client.answers.clone(), client.failures.clone());
    // Every edge admits on leases first.
    let poll = |what: &str, done: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !done() {
            assert!(t.elapsed() < SAFETY_NET, "{what} never happened");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    poll("admissions at every edge", &|| {
        let a = answers.lock().expect("answers");
        (0..addrs.len()).all(|e| a.iter().any(|x| x.edge == e && x.status == 200))
    });
    std::thread::sleep(SHARED_AT_LEAST);

    // SIGKILL the control plane.
    let killed_at = unix_ms();
    cp.kill();
    poll("the fallback at every edge", &|| {
        lost_everywhere(&envoys, &worker, true)
    });
    let fallback_seen = unix_ms() - killed_at;
    std::thread::sleep(OUTAGE);
    let fallback_counts: Vec<u64> = envoys
        .iter()
        .map(|e| e.counter("tessera.ratelimit.fallback").unwrap_or(0))
        .collect();

    // Restart on the same database: leases rule again.
    cp.restart().unwrap_or_else(|e| panic!("restart: {e}"));
    let restarted_at = unix_ms();
    poll("leases ruling again at every edge", &|| {
        lost_everywhere(&envoys, &worker, false)
    });
    let resumed_at = unix_ms();
    let counts_at_resume: Vec<u64> = envoys
        .iter()
        .map(|e| e.counter("tessera.ratelimit.fallback").unwrap_or(0))
        .collect();
    std::thread::sleep(AFTER_RESTART);
    client.stop();
    let answers = answers.lock().expect("answers").clone();
    let failures = failures.lock().expect("failures").clone();
    assert!(failures.is_empty(), "unexpected answers: {failures:#?}");

    // Nothing panicked, and every edge still serves.
    for (n, e) in envoys.iter().enumerate() {
        assert!(
            !e.log().contains("panicked"),
            "envoy {n} panicked:\n{}",
            e.log()
        );
    }
    assert!(!worker.log().contains("panicked"), "{}", worker.log());
    println!(
        "[fallback] in force at every edge {fallback_seen} ms after the SIGKILL; Envoy \
         decisions on the share during the outage: {fallback_counts:?}"
    );
    assert!(
        fallback_counts.iter().all(|n| *n > 0),
        "an Envoy never decided on its share: {fallback_counts:?}"
    );
    let worker_counts = worker
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("rate limits fall back to a local share"))
        .map(str::to_owned)
        .unwrap_or_default();
    println!("[fallback] the worker: {worker_counts}");

    // Within the fallback's own bound in every window; within the limit before the kill
    // and once leases rule again (from the window after the resumption).
    let reached = reached(&upstream);
    for a in &answers {
        match a.status {
            200 => assert!(reached.contains(&a.seq), "200 unseen upstream: {a:?}"),
            429 => assert!(!reached.contains(&a.seq), "refused but forwarded: {a:?}"),
            s => panic!("status {s}: {a:?}"),
        }
    }
    let windows = per_window(&answers, 1000, |a| reached.contains(&a.seq));
    let (kill_w, resume_w) = (killed_at / 1000, resumed_at / 1000);
    let bound = |i: u64| {
        if i < kill_w || i > resume_w {
            PER_SECOND
        } else {
            PER_SECOND + share * addrs.len() as u64
        }
    };
    let mut outage = Vec::new();
    for (i, (definite, ambiguous)) in &windows {
        if (kill_w..=resume_w).contains(i) {
            outage.push(definite + ambiguous);
        }
    }
    println!(
        "[fallback] per second during the outage and until leases ruled again: {outage:?} \
         (limit {PER_SECOND}, share {share} at each of {} edges); restart took {} ms, \
         leases ruled {} ms after it",
        addrs.len(),
        restarted_at - killed_at,
        resumed_at - restarted_at
    );
    within_limit(&windows, bound).unwrap_or_else(|e| panic!("{e}"));
    // Admission went on during the outage and after the restart.
    let admitted_in = |from: u64, to: u64| {
        answers
            .iter()
            .filter(|a| a.status == 200 && a.sent >= from && a.received < to)
            .count()
    };
    assert!(admitted_in(killed_at + 11_000, restarted_at) > 0);
    assert!(admitted_in(resumed_at, u64::MAX) > 0);
    // Leases rule again: no decision on the share since.
    let counts_now: Vec<u64> = envoys
        .iter()
        .map(|e| e.counter("tessera.ratelimit.fallback").unwrap_or(0))
        .collect();
    assert_eq!(
        counts_now, counts_at_resume,
        "decided on the share after resuming"
    );
}
