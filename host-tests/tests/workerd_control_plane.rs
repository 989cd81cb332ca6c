//! The edge worker in workerd with the real control plane (`tessera serve`): a token the
//! control plane minted is accepted, revoking it through the REST API refuses it within
//! the worker's status TTL (measured and printed), and the worker's usage reports land
//! in the token's authentication log.
//!
//! Needs TESSERA_WORKERD, TESSERA_EDGE_WORKER_DIR and TESSERA_CP_BIN; `cargo xtask test`
//! sets them.

#[allow(dead_code)]
use tessera_host_tests::workerd;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_host_tests::{
    control_plane_path, ControlPlane, ControlPlaneOptions, EchoUpstream, Request,
};
#[allow(unused_imports)]
use tessera_host_tests::{repo_root, Response, TempDir};
use workerd::{workerd_tools, Origin, Workerd, WorkerdOptions};

const TTL_MS: u64 = 1000;

#[test]
fn workerd_with_the_real_control_plane() {
    let (workerd_bin, bundle) = workerd_tools();
    let cp = ControlPlane::start(&ControlPlaneOptions::new(&control_plane_path()))
        .unwrap_or_else(|e| panic!("the control plane did not start: {e}"));
    let admin = cp.admin_token().to_owned();
    let (id, jwt) = cp
        .create_and_download(&admin, "edge", &["read"])
        .unwrap_or_else(|e| panic!("minting a token: {e}"));
    let secret = cp
        .edge_credential(&admin, "workerd")
        .unwrap_or_else(|e| panic!("edge credential: {e}"));
    // The worker's keys: the org's JWKS as the control plane publishes it.
    let jwks_path = cp.jwks_url().replacen(&cp.url(), "", 1);
    let jwks = cp
        .api("GET", &jwks_path, None, None)
        .unwrap_or_else(|e| panic!("JWKS: {e}"));
    let config = json!({
        "issuers": [cp.issuer()],
        "audiences": ["tessera"],
        "jwks": jwks,
        "routes": [{"path_prefix": "/admin", "scopes": ["admin"]}],
        "status": {"required": true, "fail_policy": "closed"},
    });

    let upstream = EchoUpstream::start().expect("echo upstream");
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
        .var("TESSERA_STATUS_TTL_MS", &TTL_MS.to_string())
        .var("TESSERA_USAGE_URL", &format!("{}/v1/usage", cp.url()))
        .var("TESSERA_USAGE_TOKEN", &secret)
        .var("TESSERA_USAGE_BATCH", "1"),
    )
    .unwrap_or_else(|e| panic!("workerd did not start: {e}"));
    let send = |path: &str| {
        Request::get(path)
            .bearer(&jwt)
            .header("cf-connecting-ip", "203.0.113.9")
            .send(worker.addr())
            .expect("request")
    };

    let ok = send("/api/items");
    assert_eq!(ok.status, 200, "{}", ok.summary());
    assert_eq!(ok.upstream_header("x-tessera-token-id"), [id.as_str()]);
    assert_eq!(ok.upstream_header("x-tessera-scopes"), ["read"]);
    let scoped = send("/admin/x");
    assert_eq!(scoped.status, 403, "{}", scoped.summary());
    assert_eq!(scoped.reason().as_deref(), Some("insufficient_scope"));

    // The allowed request is in the token's authentication log, reported by the edge.
    let deadline = Instant::now() + Duration::from_secs(15);
    let event = loop {
        let log = cp
            .auth_log(&admin, &id)
            .unwrap_or_else(|e| panic!("auth log: {e}"));
        let found = log.into_iter().find(|e| {
            e.get("outcome") == Some(&Value::from("allow"))
                && e.get("path") == Some(&Value::from("/api/items"))
        });
        if let Some(e) = found {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no usage event reached the control plane\n--- workerd log ---\n{}",
            worker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("usage event in the control plane: {event}");
    assert_eq!(event["ip"], "203.0.113.9");

    // Revoke through the REST API: refused within the TTL (generous bound for a loaded
    // machine), time printed.
    cp.revoke(&admin, &id)
        .unwrap_or_else(|e| panic!("revoke: {e}"));
    let revoked_at = Instant::now();
    let bound = Duration::from_millis(TTL_MS) + Duration::from_secs(5);
    let refused = loop {
        let r = send("/api/items");
        if r.status != 200 || revoked_at.elapsed() > bound {
            break r;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let took = revoked_at.elapsed();
    println!(
        "revoked in the control plane → refused by workerd after {took:?} (status TTL {TTL_MS} ms)"
    );
    assert_eq!(refused.status, 401, "{}", refused.summary());
    assert_eq!(refused.reason().as_deref(), Some("revoked"));
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
}
