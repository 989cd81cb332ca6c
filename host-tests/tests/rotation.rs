//! Rotation with a grace period in real processes: a token in use at two Envoys (two
//! workers each, synced by the module's sync service, usage reported to the control plane)
//! and a workerd running the edge worker (usage reported too), all from a real `tessera
//! serve`. The token is rotated with a 5 s grace while a client keeps sending requests
//! round robin to the three edges; the client switches to the successor once its owner
//! has downloaded it and the edges know it. No request of the client may fail. The
//! successor's first use (learnt from the edges' usage reports) starts the grace; after
//! it, the old token is refused with `rotated` at every worker of every edge, and its use
//! then is audited as a possible leak. Every check polls until it holds (bounded only by a
//! safety net); the times are printed, not asserted.
//!
//! Needs `TESSERA_ENVOY`, `TESSERA_FILTER_WASM`, `TESSERA_WORKERD`,
//! `TESSERA_EDGE_WORKER_DIR` and `TESSERA_CP_BIN`; `cargo xtask test` sets them all.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_host_tests::workerd::Workerd;
use tessera_host_tests::{
    control_plane_path, tools, ControlPlane, ControlPlaneOptions, EchoUpstream, Envoy,
    EnvoyOptions, Request,
};

const CP_CLUSTER: &str = "tessera_control_plane";
/// A safety net for polling, not a measure.
const SAFETY_NET: Duration = Duration::from_secs(30);
/// Requests each worker must answer in a run of identical outcomes.
const PER_WORKER: u64 = 3;
/// The rotation's grace.
const GRACE_SECS: u64 = 5;

fn start_envoy(cp: &ControlPlane, upstream: &EchoUpstream, usage_secret: &str) -> Envoy {
    let (envoy, wasm) = tools();
    let filter = cp.filter_config(
        "closed",
        30,
        Some(cp.usage_config(CP_CLUSTER, usage_secret, 10_000)),
    );
    let sync = cp.sync_service_config(CP_CLUSTER, 20);
    let options = EnvoyOptions::new(&envoy)
        .filter(&wasm, &filter)
        .upstream(upstream.addr())
        .cluster(CP_CLUSTER, cp.addr())
        .sync_service(&sync)
        .concurrency(2);
    let proxy = Envoy::start(&options).unwrap_or_else(|e| panic!("envoy did not start: {e}"));
    assert_eq!(proxy.worker_connections().expect("admin stats").len(), 2);
    proxy
}

fn start_workerd(cp: &ControlPlane, upstream: &EchoUpstream, usage_secret: &str) -> Workerd {
    Workerd::start(
        &cp.workerd_options(upstream.addr())
            .var("TESSERA_USAGE_URL", &format!("{}/v1/usage", cp.url()))
            .var("TESSERA_USAGE_TOKEN", usage_secret)
            .var("TESSERA_USAGE_BATCH", "1"),
    )
    .unwrap_or_else(|e| panic!("workerd did not start: {e}"))
}

/// One of the three edges.
enum Edge<'a> {
    Envoy(&'a Envoy),
    Worker(&'a Workerd),
}

/// `(status, reason)` of a request with `token`; reason `allow` when it reached the
/// upstream.
fn outcome(edge: &Edge, token: &str) -> (u16, String) {
    let req = Request::get("/api/orders").bearer(token);
    let r = match edge {
        Edge::Envoy(e) => e.send(&req),
        Edge::Worker(w) => w.send(&req),
    };
    match r {
        Ok(r) if r.status == 200 && r.upstream().is_some() => (200, "allow".into()),
        Ok(r) => (r.status, r.reason().unwrap_or_else(|| r.summary())),
        Err(e) => (0, format!("request failed: {e}")),
    }
}

/// Polls (fresh connections) until a run of `want` has been answered by every worker of
/// `envoy`, [`PER_WORKER`] times each; returns the time from `since` to that run's start.
fn until_every_worker(envoy: &Envoy, token: &str, want: (u16, &str), since: Instant) -> Duration {
    let workers = |e: &Envoy| e.worker_connections().expect("admin stats");
    let mut run: Option<(Instant, Vec<u64>)> = None;
    let mut last = None;
    loop {
        let before = workers(envoy);
        let got = outcome(&Edge::Envoy(envoy), token);
        let at = Instant::now();
        if got.0 == want.0 && got.1 == want.1 {
            let (first, base) = run.get_or_insert((at, before));
            let now = workers(envoy);
            if now.len() == base.len()
                && now
                    .iter()
                    .zip(base.iter())
                    .all(|(n, b)| n - b >= PER_WORKER)
            {
                return first.duration_since(since);
            }
        } else {
            run = None;
            last = Some(got);
        }
        assert!(
            at.duration_since(since) < SAFETY_NET,
            "{want:?} not seen on every worker; last other answer {last:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls the worker until `token` gets `want`; the time from `since`.
fn until_worker(worker: &Workerd, token: &str, want: (u16, &str), since: Instant) -> Duration {
    loop {
        let got = outcome(&Edge::Worker(worker), token);
        if got.0 == want.0 && got.1 == want.1 {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < SAFETY_NET,
            "{want:?} not seen at the worker; last answer {got:?}\n{}",
            worker.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The audit entries with `action`, newest first.
fn audit(cp: &ControlPlane, admin: &str, action: &str) -> Vec<Value> {
    let log = cp
        .api("GET", "/v1/audit-log?per_page=200", Some(admin), None)
        .expect("audit log");
    log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

#[test]
fn a_rotation_with_grace_hands_over_without_a_failed_request_then_rotated_everywhere() {
    let cp = ControlPlane::start(&ControlPlaneOptions::new(&control_plane_path()))
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let upstream = EchoUpstream::start().expect("echo upstream");
    let alice = cp.admin_token().to_owned();
    let secret = cp
        .edge_credential(&alice, "rotation-edges")
        .expect("edge credential");
    let envoys = [
        start_envoy(&cp, &upstream, &secret),
        start_envoy(&cp, &upstream, &secret),
    ];
    let worker = start_workerd(&cp, &upstream, &secret);

    let (old_id, old) = cp
        .create_and_download(&alice, "deploy", &["read"])
        .expect("create + download");
    for envoy in &envoys {
        until_every_worker(envoy, &old, (200, "allow"), Instant::now());
    }
    until_worker(&worker, &old, (200, "allow"), Instant::now());

    // The client: round robin over the three edges with whatever token it holds now.
    let current = Arc::new(Mutex::new(old.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let client = {
        let (current, stop, sent, failed) =
            (current.clone(), stop.clone(), sent.clone(), failed.clone());
        let envoy_addrs = [envoys[0].addr(), envoys[1].addr()];
        let worker_addr = worker.addr();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let token = current.lock().expect("token").clone();
                let addr = match n % 3 {
                    0 => envoy_addrs[0],
                    1 => envoy_addrs[1],
                    _ => worker_addr,
                };
                n += 1;
                let got = match Request::get("/api/orders").bearer(&token).send(addr) {
                    Ok(r) if r.status == 200 && r.upstream().is_some() => None,
                    Ok(r) => Some(format!("{addr}: {} {}", r.status, r.summary())),
                    Err(e) => Some(format!("{addr}: request failed: {e}")),
                };
                sent.fetch_add(1, Ordering::SeqCst);
                if let Some(f) = got {
                    failed.lock().expect("failures").push(f);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // Rotate with a short grace; the successor is pending until its owner downloads it.
    let rotated = cp
        .api(
            "POST",
            &format!("/v1/tokens/{old_id}/rotate"),
            Some(&alice),
            Some(&json!({"grace_secs": GRACE_SECS})),
        )
        .expect("rotate");
    assert_eq!(rotated["successor"]["status"], "pending", "{rotated}");
    let succ_id = rotated["successor"]["id"].as_str().expect("id").to_owned();
    let new = cp
        .download(&alice, &succ_id)
        .expect("download the successor");

    // The client switches once every edge knows the successor's status entry (an edge
    // that has not yet seen the new index refuses it fail-closed, which is not the
    // rotation's doing); the probe's requests are the successor's first uses.
    let probe = Instant::now();
    for envoy in &envoys {
        until_every_worker(envoy, &new, (200, "allow"), probe);
    }
    until_worker(&worker, &new, (200, "allow"), probe);
    *current.lock().expect("token") = new.clone();
    let switched = Instant::now();
    println!(
        "[rotation] the successor was accepted at every edge {:?} after its download; the \
         client switched",
        switched.duration_since(probe)
    );

    // The old token still works during the grace (checked at once after the switch).
    let during = outcome(&Edge::Envoy(&envoys[0]), &old);
    println!("[rotation] the old token right after the switch: {during:?}");

    // The end: `rotated` at every worker of every edge.
    for (i, envoy) in envoys.iter().enumerate() {
        let took = until_every_worker(envoy, &old, (401, "rotated"), switched);
        println!("[rotation] Envoy {i}: old token 401 rotated on both workers {took:?} after the switch (grace {GRACE_SECS} s from the successor's first use)");
    }
    let took = until_worker(&worker, &old, (401, "rotated"), switched);
    println!("[rotation] workerd: old token 401 rotated {took:?} after the switch");
    // The client went on with the successor throughout, and a while after the end.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    client.join().expect("client thread");
    let failed = failed.lock().expect("failures").clone();
    let sent = sent.load(Ordering::SeqCst);
    println!(
        "[rotation] the client sent {sent} requests, {} failed",
        failed.len()
    );
    assert!(sent > 30, "the client sent only {sent} requests");
    assert!(failed.is_empty(), "failed requests: {failed:#?}");

    // The rotation is on record, with its end; the successor works, the old one is
    // revoked on record.
    let rotation = cp
        .api(
            "GET",
            &format!("/v1/tokens/{old_id}/rotation"),
            Some(&alice),
            None,
        )
        .expect("rotation");
    assert!(rotation["successor_seen_at"].is_string(), "{rotation}");
    assert!(rotation["ended_at"].is_string(), "{rotation}");
    println!(
        "[rotation] successor first seen {}, end due {}, ended {}",
        rotation["successor_seen_at"], rotation["ends_at"], rotation["ended_at"]
    );
    let old_view = cp
        .api("GET", &format!("/v1/tokens/{old_id}"), Some(&alice), None)
        .expect("old token");
    assert_eq!(old_view["status"], "revoked");
    assert_eq!(outcome(&Edge::Worker(&worker), &new), (200, "allow".into()));

    // The old token presented after the end is audited as a possible leak (the edges
    // report the refusals; poll until the report is in).
    let since = Instant::now();
    loop {
        if !audit(&cp, &alice, "token.revoked_but_presented").is_empty() {
            break;
        }
        assert!(
            since.elapsed() < SAFETY_NET,
            "no token.revoked_but_presented entry; the audit log: {:?}",
            cp.api("GET", "/v1/audit-log?per_page=50", Some(&alice), None)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(audit(&cp, &alice, "token.rotated").len(), 1);
}
