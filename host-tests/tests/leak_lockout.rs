//! Leak to lockout in real processes: a token in use at two Envoys (two workers each,
//! synced by the module's sync service from a real `tessera serve`) and a workerd running
//! the edge worker (status list from the same control plane), a secret scanner's signed
//! post naming it, and the token refused at every worker of every Envoy and at the worker. The
//! scanner's key is made at run time; its public half is served in GitHub's format by a
//! loopback server the control plane is pointed at (`--secret-scanning-keys-url`). Every
//! check polls until it holds on every worker (bounded only as a safety net); the times are
//! printed, not asserted.
//!
//! Needs `TESSERA_ENVOY`, `TESSERA_FILTER_WASM`, `TESSERA_WORKERD`,
//! `TESSERA_EDGE_WORKER_DIR` and `TESSERA_CP_BIN`; `cargo xtask test` sets them all.

use std::time::{Duration, Instant};

use tessera_core::token::{strip_api_prefix, API_TOKEN_PREFIX};
use tessera_host_tests::scanner::{Scanner, TOKEN_TYPE};
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

fn start_envoy(cp: &ControlPlane, upstream: &EchoUpstream) -> Envoy {
    let (envoy, wasm) = tools();
    let filter = cp.filter_config("closed", 30, None);
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

/// `(status, reason)` of a request with `token`; reason `allow` when it reached the
/// upstream.
fn outcome(envoy: &Envoy, token: &str) -> (u16, String) {
    match envoy.send(&Request::get("/api/orders").bearer(token)) {
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
        let got = outcome(envoy, token);
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

fn start_workerd(cp: &ControlPlane, upstream: &EchoUpstream) -> Workerd {
    Workerd::start(&cp.workerd_options(upstream.addr()))
        .unwrap_or_else(|e| panic!("workerd did not start: {e}"))
}

/// Polls the worker until `token` gets `want`; the time from `since`.
fn until_worker(worker: &Workerd, token: &str, want: (u16, &str), since: Instant) -> Duration {
    loop {
        let got = match worker.send(&Request::get("/api/orders").bearer(token)) {
            Ok(r) if r.status == 200 && r.upstream().is_some() => (200, "allow".to_string()),
            Ok(r) => (r.status, r.reason().unwrap_or_else(|| r.summary())),
            Err(e) => (0, format!("request failed: {e}")),
        };
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

#[test]
fn a_scanner_post_locks_a_token_out_at_every_edge() {
    // The scanner's key, made now, and its published document.
    let scanner = Scanner::start().expect("scanner key server");

    let mut options = ControlPlaneOptions::new(&control_plane_path());
    options.serve_args = vec!["--secret-scanning-keys-url".into(), scanner.keys_url()];
    let cp = ControlPlane::start(&options).unwrap_or_else(|e| panic!("control plane: {e}"));
    let upstream = EchoUpstream::start().expect("echo upstream");
    let edges = [start_envoy(&cp, &upstream), start_envoy(&cp, &upstream)];
    let alice = cp.admin_token().to_owned();

    // A token in use, prefixed as issued; the same JWS without the prefix is the same token.
    let (_, token) = cp
        .create_and_download(&alice, "ci", &["read"])
        .expect("create + download");
    assert!(token.starts_with(API_TOKEN_PREFIX), "{token}");
    let bare = strip_api_prefix(&token).to_owned();
    for edge in &edges {
        until_every_worker(edge, &token, (200, "allow"), Instant::now());
        until_every_worker(edge, &bare, (200, "allow"), Instant::now());
    }
    let worker = start_workerd(&cp, &upstream);
    until_worker(&worker, &token, (200, "allow"), Instant::now());
    until_worker(&worker, &bare, (200, "allow"), Instant::now());

    // The scanner's post, signed over the exact bytes sent.
    let start = Instant::now();
    let r = scanner
        .post(
            cp.addr(),
            &[(&token, "https://github.com/octo/repo/blob/main/.env")],
        )
        .expect("scanner post");
    let answered = start.elapsed();
    assert_eq!(r.status, 200, "{}", r.summary());
    let labels = r.json().expect("JSON labels");
    assert_eq!(labels[0]["label"], "true_positive", "{labels}");
    assert_eq!(labels[0]["token_type"], TOKEN_TYPE);
    assert_eq!(scanner.keys_fetched(), 1, "the keys were fetched once");

    for (i, edge) in edges.iter().enumerate() {
        let took = until_every_worker(edge, &token, (401, "revoked"), start);
        println!(
            "[leak] Envoy {i}: scanner post -> 401 revoked on both workers {took:?} after the \
             post started (the post was answered in {answered:?}; the Envoys are checked one \
             after the other, so a later one's time includes the earlier ones' checks)"
        );
        until_every_worker(edge, &bare, (401, "revoked"), Instant::now());
    }
    let took = until_worker(&worker, &token, (401, "revoked"), start);
    println!("[leak] workerd: scanner post -> 401 revoked {took:?} after the post started");
    until_worker(&worker, &bare, (401, "revoked"), Instant::now());
    // Where it was found is in the audit log, with the notification owed.
    let log = cp
        .api("GET", "/v1/audit-log?per_page=50", Some(&alice), None)
        .expect("audit log");
    let entries = log["entries"].as_array().expect("entries");
    let leaked = entries
        .iter()
        .find(|e| e["action"] == "token.leaked")
        .unwrap_or_else(|| panic!("no token.leaked entry: {log}"));
    assert_eq!(
        leaked["detail"]["url"],
        "https://github.com/octo/repo/blob/main/.env"
    );
    assert_eq!(leaked["detail"]["action"], "revoked");
    assert!(entries.iter().any(|e| e["action"] == "notification.needed"));
}
