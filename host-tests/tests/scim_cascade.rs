//! SCIM deprovisioning reaches every edge (issue 23): a real control plane
//! (`tessera serve`), two Envoys (`--concurrency 2`, each with the sync service) and a
//! workerd running the edge worker. A client keeps sending requests with a user's API
//! token and with an access token exchanged from it; an identity provider's SCIM
//! `PATCH active=false` of that user makes both refused (401) at every edge. Each edge is
//! polled until it shows the refusal on every worker, with a generous deadline; the times
//! are printed, never asserted.
//!
//! Needs `TESSERA_ENVOY`, `TESSERA_FILTER_WASM`, `TESSERA_CP_BIN`, `TESSERA_WORKERD` and
//! `TESSERA_EDGE_WORKER_DIR`; `cargo xtask test` sets them.

use std::time::{Duration, Instant};

use serde_json::json;
use tessera_host_tests::workerd::{workerd_tools, Origin, Workerd, WorkerdOptions};
use tessera_host_tests::{
    control_plane_path, tools, ControlPlane, ControlPlaneOptions, EchoUpstream, Envoy,
    EnvoyOptions, Request, Response,
};

const CP_CLUSTER: &str = "tessera_control_plane";
/// Generous: a deadline for a broken cascade to fail, not a measure (printed instead).
const DEADLINE: Duration = Duration::from_secs(20);
/// Fresh-connection answers each Envoy worker must give in a row of refusals.
const PER_WORKER: u64 = 3;
/// Answers in a row the worker must give (its isolates revalidate independently).
const WORKER_RUN: u32 = 10;

fn start_envoy(cp: &ControlPlane, upstream: &EchoUpstream) -> Envoy {
    let (envoy, wasm) = tools();
    let filter = cp.filter_config("closed", 30, None);
    let sync = cp.sync_service_config(CP_CLUSTER, 20);
    let e = Envoy::start(
        &EnvoyOptions::new(&envoy)
            .filter(&wasm, &filter)
            .upstream(upstream.addr())
            .cluster(CP_CLUSTER, cp.addr())
            .sync_service(&sync)
            .concurrency(2),
    )
    .unwrap_or_else(|e| panic!("envoy did not start: {e}"));
    assert_eq!(
        e.worker_connections().expect("admin stats").len(),
        2,
        "expected two workers"
    );
    e
}

/// `Some(true)`: the request reached the upstream; `Some(false)`: refused 401 with a
/// status-list reason; `None`: anything else (shown on failure).
fn verdict(r: &Response) -> Option<bool> {
    match (r.status, r.upstream().is_some(), r.reason().as_deref()) {
        (200, true, _) => Some(true),
        (401, false, Some("suspended" | "revoked")) => Some(false),
        _ => None,
    }
}

/// Polls an Envoy with `req` on fresh connections until a run of answers equal to `want`
/// was given by both workers ([`PER_WORKER`] each); returns when the run began.
fn envoy_until(envoy: &Envoy, req: &Request, want: bool, what: &str, since: Instant) -> Duration {
    let workers = || envoy.worker_connections().expect("admin stats");
    let mut run: Option<(Instant, Vec<u64>)> = None;
    let mut last = String::new();
    loop {
        let before = workers();
        let r = envoy.send(req).expect("request through envoy");
        let at = Instant::now();
        if verdict(&r) == Some(want) {
            let (first, base) = run.get_or_insert((at, before));
            let now = workers();
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
            last = r.summary();
        }
        assert!(
            at.duration_since(since) < DEADLINE,
            "{what}: not {} on both workers within {DEADLINE:?}; last other answer: {last}",
            if want { "accepted" } else { "refused" }
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls the worker until [`WORKER_RUN`] answers in a row equal `want`.
fn worker_until(
    worker: &Workerd,
    req: &Request,
    want: bool,
    what: &str,
    since: Instant,
) -> Duration {
    let mut run: Option<(Instant, u32)> = None;
    let mut last = String::new();
    loop {
        let r = req.send(worker.addr()).expect("request through workerd");
        let at = Instant::now();
        if verdict(&r) == Some(want) {
            let (first, n) = run.get_or_insert((at, 0));
            *n += 1;
            if *n >= WORKER_RUN {
                return first.duration_since(since);
            }
        } else {
            run = None;
            last = r.summary();
        }
        assert!(
            at.duration_since(since) < DEADLINE,
            "{what}: not {} by the worker within {DEADLINE:?}; last other answer: {last}",
            if want { "accepted" } else { "refused" }
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn scim_deactivation_refuses_the_api_token_and_its_access_token_at_every_edge() {
    let (workerd_bin, bundle) = workerd_tools();
    let cp = ControlPlane::start(&ControlPlaneOptions::new(&control_plane_path()))
        .unwrap_or_else(|e| panic!("the control plane did not start: {e}"));
    let admin = cp.admin_token().to_owned();
    let org = cp.org().to_owned();
    let bob = cp.token_of("bob").expect("bob was bootstrapped").to_owned();
    let bob_id = cp.user_id_of("bob").expect("bob's id").to_owned();
    let (_, api) = cp
        .create_and_download(&bob, "client", &["read"])
        .unwrap_or_else(|e| panic!("bob's token: {e}"));
    let access = cp
        .exchange(&api)
        .unwrap_or_else(|e| panic!("exchange: {e}"));
    let scim = cp
        .api(
            "POST",
            &format!("/v1/orgs/{org}/scim-credentials"),
            Some(&admin),
            Some(&json!({"name": "idp"})),
        )
        .unwrap_or_else(|e| panic!("SCIM credential: {e}"));
    let scim_secret = scim["secret"].as_str().expect("secret").to_owned();

    let upstream = EchoUpstream::start().expect("echo upstream");
    let envoys = [start_envoy(&cp, &upstream), start_envoy(&cp, &upstream)];
    let jwks_path = cp.jwks_url().replacen(&cp.url(), "", 1);
    let jwks = cp
        .api("GET", &jwks_path, None, None)
        .unwrap_or_else(|e| panic!("JWKS: {e}"));
    let config = json!({
        "issuers": [cp.issuer()],
        "audiences": ["tessera"],
        "jwks": jwks,
        "status": {"required": true, "fail_policy": "closed"},
    });
    let worker = Workerd::start(
        &WorkerdOptions::new(
            &workerd_bin,
            &bundle,
            &config,
            Origin::Url(format!("http://{}", upstream.addr())),
        )
        .var(
            "TESSERA_STATUS_URLS",
            &json!({ cp.status_list_uri(): cp.status_list_uri() }).to_string(),
        )
        .var("TESSERA_STATUS_TTL_MS", "900"),
    )
    .unwrap_or_else(|e| panic!("workerd did not start: {e}"));

    let requests = [
        ("API token", Request::get("/api/orders").bearer(&api)),
        ("access token", Request::get("/api/orders").bearer(&access)),
    ];
    // A worker request names its client address as Cloudflare does.
    let worker_req = |r: &Request| r.clone().header("cf-connecting-ip", "203.0.113.9");
    let t = Instant::now();
    for (what, req) in &requests {
        for (n, e) in envoys.iter().enumerate() {
            envoy_until(e, req, true, &format!("{what} at envoy {n}"), t);
        }
        worker_until(
            &worker,
            &worker_req(req),
            true,
            &format!("{what} at workerd"),
            t,
        );
    }

    // The identity provider deprovisions bob.
    let start = Instant::now();
    let r = cp
        .call(
            "PATCH",
            &format!("/scim/v2/{org}/Users/{bob_id}"),
            Some(&scim_secret),
            Some(&json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}],
            })),
        )
        .unwrap_or_else(|e| panic!("SCIM PATCH: {e}"));
    let call = start.elapsed();
    assert_eq!(r.status, 200, "SCIM PATCH: {}", r.text());
    println!("[scim] PATCH active=false answered in {call:?}");
    for (what, req) in &requests {
        for (n, e) in envoys.iter().enumerate() {
            let took = envoy_until(e, req, false, &format!("{what} at envoy {n}"), start);
            println!("[scim] {what}: 401 on both workers of envoy {n} {took:?} after the SCIM call began");
        }
        let took = worker_until(
            &worker,
            &worker_req(req),
            false,
            &format!("{what} at workerd"),
            start,
        );
        println!("[scim] {what}: 401 at workerd {took:?} after the SCIM call began");
    }
}
