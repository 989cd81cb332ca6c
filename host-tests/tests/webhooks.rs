//! Webhooks across a crash, in real processes: a real `tessera serve` with a webhook
//! endpoint on a loopback port where nothing listens yet, events made (token revokes: the
//! outbox row is written in the revoke's own transaction), a first delivery attempt that
//! fails (connection refused), then the control plane SIGKILLed, the receiver started on
//! that port, and the control plane restarted on the same database: every message is
//! delivered after the restart, none lost, each signed as the Standard Webhooks
//! specification says (checked with the harness's own HMAC, `tessera_host_tests::webhook`,
//! not the server's code).
//! A last event is made and the control plane killed at once, whether or not its worker
//! got to it: it too arrives after the restart. Polls have a safety net only.
//!
//! Needs `TESSERA_CP_BIN`; `cargo xtask test` sets it.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_host_tests::webhook::{verifies, Receiver};
use tessera_host_tests::{control_plane_path, ControlPlane, ControlPlaneOptions};

/// A safety net for polling, not a measure (the first retry comes 5 s after a failure).
const SAFETY_NET: Duration = Duration::from_secs(60);

fn deliveries(cp: &ControlPlane, admin: &str, hook: &str) -> Vec<Value> {
    cp.api(
        "GET",
        &format!(
            "/v1/orgs/{}/webhooks/{hook}/deliveries?per_page=500",
            cp.org()
        ),
        Some(admin),
        None,
    )
    .expect("deliveries")["deliveries"]
        .as_array()
        .expect("array")
        .clone()
}

#[test]
fn events_survive_a_sigkill_between_the_event_and_its_delivery() {
    // A port with nothing on it (yet): attempts fail with "connection refused".
    let port_holder = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = port_holder.local_addr().expect("addr");
    drop(port_holder);

    // The receiver is on loopback: allowed only with the operator's flag.
    let mut options = ControlPlaneOptions::new(&control_plane_path());
    options.serve_args = vec!["--webhook-private-destinations".into()];
    let mut cp = ControlPlane::start(&options).unwrap_or_else(|e| panic!("control plane: {e}"));
    let alice = cp.admin_token().to_owned();
    let created = cp
        .api(
            "POST",
            &format!("/v1/orgs/{}/webhooks", cp.org()),
            Some(&alice),
            Some(&json!({"url": format!("http://{addr}/hooks"), "events": ["token.revoked"]})),
        )
        .expect("create webhook");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let hook = created["webhook"]["id"].as_str().expect("id").to_owned();

    // Two events; each outbox row is committed with its revoke.
    let mut revoked = Vec::new();
    for name in ["one", "two"] {
        let (id, _) = cp
            .create_and_download(&alice, name, &["read"])
            .expect("token");
        cp.revoke(&alice, &id).expect("revoke");
        revoked.push(id);
    }
    // The worker tries once and fails (nothing listens): both are pending.
    let since = Instant::now();
    loop {
        let d = deliveries(&cp, &alice, &hook);
        if d.len() == 2 && d.iter().all(|m| m["attempts"].as_i64() >= Some(1)) {
            assert!(d.iter().all(|m| m["status"] == "pending"), "{d:?}");
            break;
        }
        assert!(
            since.elapsed() < SAFETY_NET,
            "no failed first attempts: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The crash, with both messages owed.
    cp.kill();
    let receiver = Receiver::start(addr).expect("receiver port");
    cp.restart().expect("restart");
    // A third event, and a crash at once after it (its delivery may or may not have begun).
    let (third, _) = cp
        .create_and_download(&alice, "three", &["read"])
        .expect("token");
    cp.revoke(&alice, &third).expect("revoke");
    revoked.push(third);
    cp.kill();
    cp.restart().expect("restart");

    // Every message arrives, signed; none is lost.
    let since = Instant::now();
    let messages = loop {
        let d = deliveries(&cp, &alice, &hook);
        let got = receiver.received();
        let ids: Vec<&str> = got.iter().filter_map(|r| r.header("webhook-id")).collect();
        if d.len() == 3
            && d.iter()
                .all(|m| ids.contains(&m["id"].as_str().unwrap_or("")))
        {
            break d;
        }
        assert!(
            since.elapsed() < SAFETY_NET,
            "not every message arrived: log {d:?}, received {got:?}\n{}",
            cp.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "[webhooks] {} messages delivered after the restarts, {:?} after the last one",
        messages.len(),
        since.elapsed()
    );
    let got = receiver.received();
    for r in &got {
        assert!(verifies(&secret, r), "a bad signature: {r:?}");
        assert!(!verifies(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            r
        ));
        let body: Value = serde_json::from_str(&r.body).expect("JSON body");
        assert_eq!(body["type"], "token.revoked");
    }
    // Each revoked token's event arrived (at least once: receivers de-duplicate on the id).
    for id in &revoked {
        assert!(
            got.iter().any(|r| r.body.contains(id.as_str())),
            "no event for {id}: {got:?}"
        );
    }
    // The delivery log says so, and a resend sends the same id again.
    let since = Instant::now();
    loop {
        let d = deliveries(&cp, &alice, &hook);
        if d.iter().all(|m| m["status"] == "delivered") {
            break;
        }
        assert!(since.elapsed() < SAFETY_NET, "not marked delivered: {d:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = messages[0]["id"].as_str().expect("id").to_owned();
    let before = got.len();
    cp.api(
        "POST",
        &format!(
            "/v1/orgs/{}/webhooks/{hook}/deliveries/{first}/resend",
            cp.org()
        ),
        Some(&alice),
        None,
    )
    .expect("resend");
    let since = Instant::now();
    while receiver.received().len() == before {
        assert!(since.elapsed() < SAFETY_NET, "the resend did not arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
    let last = receiver.received().last().cloned().expect("one");
    assert_eq!(last.header("webhook-id"), Some(first.as_str()));
    assert!(verifies(&secret, &last));
}
