//! Webhooks (`service::webhooks`, `api::webhooks`): who manages endpoints, what is checked,
//! the secret shown once, which events reach which endpoint (the outbox rows written with
//! each event), and the delivery worker against a loopback receiver that checks the
//! Standard Webhooks signature itself; a failed attempt is retried, a resend keeps the id.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use common::World;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn create(w: &World, caller: &str, org: &str, body: Value) -> common::Resp {
    w.call(
        "POST",
        &format!("/v1/orgs/{org}/webhooks"),
        Some(&w.jwt(caller)),
        Some(body),
    )
    .await
}

async fn deliveries(w: &World, hook: &str) -> Vec<Value> {
    let r = w
        .call(
            "GET",
            &format!("/v1/orgs/acme/webhooks/{hook}/deliveries"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["deliveries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn endpoints_are_managed_by_org_admins_and_checked() {
    let w = World::new().await;
    let r = create(&w, "ula", "acme", json!({"url": "https://h.example/x"})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = create(&w, "ada", "acme", json!({"url": "ftp://h.example/x"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().starts_with("url: "));
    let r = create(&w, "ada", "acme", json!({"url": "https://u:p@h.example/x"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = create(
        &w,
        "ada",
        "acme",
        json!({"url": "https://h.example/x", "events": ["token.revoked", "token.nope"]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with("events[1]: ") && msg.contains("token.rotated"),
        "{msg}"
    );
    let r = create(
        &w,
        "ada",
        "acme",
        json!({"url": "https://h.example/x", "events": ["token.revoked"], "description": "sec"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let secret = v["secret"].as_str().unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(r.headers["cache-control"], "no-store");
    let id = v["webhook"]["id"].as_str().unwrap().to_string();
    // Listed without the secret; audited.
    let r = w
        .call("GET", "/v1/orgs/acme/webhooks", Some(&w.jwt("ada")), None)
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.text().contains(secret));
    assert_eq!(r.json()["webhooks"][0]["id"], id.as_str());
    let audit = w
        .call(
            "GET",
            "/v1/audit-log?org=acme&per_page=100",
            Some(&w.jwt("ada")),
            None,
        )
        .await
        .json();
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "webhook.create" && e["target"] == id.as_str()));
    // Another org's admin cannot see or delete it.
    let r = w
        .call(
            "DELETE",
            &format!("/v1/orgs/acme/webhooks/{id}"),
            Some(&w.jwt("ula")),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = w
        .call(
            "DELETE",
            &format!("/v1/orgs/acme/webhooks/{id}"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call("GET", "/v1/orgs/acme/webhooks", Some(&w.jwt("ada")), None)
        .await;
    assert_eq!(r.json()["webhooks"], json!([]));
}

#[tokio::test]
async fn events_reach_the_endpoints_that_asked_for_them() {
    let w = World::new().await;
    let all = create(&w, "ada", "acme", json!({"url": "https://a.example/"})).await;
    assert_eq!(all.status, 201);
    let all = all.json()["webhook"]["id"].as_str().unwrap().to_string();
    let only_users = create(
        &w,
        "ada",
        "acme",
        json!({"url": "https://b.example/", "events": ["user.deprovisioned"]}),
    )
    .await
    .json()["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A revoke: token.revoked to the first endpoint only.
    let tok = w.token_in_state(&w.uid("ula"), "enabled").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{tok}/revoke"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    // A user disabled: user.deprovisioned to both.
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{}/disable", w.uid("ned")),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    let a = deliveries(&w, &all).await;
    let events: Vec<&str> = a.iter().map(|m| m["event"].as_str().unwrap()).collect();
    assert!(events.contains(&"token.revoked"), "{a:?}");
    assert!(events.contains(&"user.deprovisioned"), "{a:?}");
    let revoked = a.iter().find(|m| m["event"] == "token.revoked").unwrap();
    assert_eq!(revoked["payload"]["type"], "token.revoked");
    assert_eq!(revoked["payload"]["data"]["token"], tok.as_str());
    assert_eq!(revoked["status"], "pending");
    let b = deliveries(&w, &only_users).await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["event"], "user.deprovisioned");
    assert_eq!(b[0]["payload"]["data"]["user"], w.uid("ned"));
}

type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A loopback receiver: the first `fail_first` requests get 503, the rest 204.
async fn receiver(fail_first: usize) -> (String, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                let mut v = s.lock().unwrap();
                v.push((headers, String::from_utf8_lossy(&body).into_owned()));
                if v.len() <= fail_first {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/hook"), seen)
}

/// The specification's check, from its text: HMAC-SHA256 keyed with the base64 after
/// `whsec_`, over `id.timestamp.body`, one of the header's `v1,` signatures.
fn verifies(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{body}", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    h("webhook-signature")
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(want.as_str()))
}

#[tokio::test]
async fn the_worker_signs_retries_and_resends_with_the_same_id() {
    let w = World::new().await;
    let (url, seen) = receiver(1).await;
    let r = create(&w, "ada", "acme", json!({"url": url})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["secret"].as_str().unwrap().to_string();
    let hook = r.json()["webhook"]["id"].as_str().unwrap().to_string();
    let worker = tokio::spawn(tessera_control_plane::api::webhooks::run_worker(
        w.state.clone(),
        Duration::from_millis(50),
        // The receiver is on loopback, which the default refuses (tested below).
        tessera_control_plane::api::webhooks::Destinations::Any,
    ));
    let tok = w.token_in_state(&w.uid("ula"), "enabled").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{tok}/revoke"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    // The first attempt gets 503: pending, retried 5 s later (the test's clock).
    let mut waited = 0;
    let first = loop {
        let d = deliveries(&w, &hook).await;
        if d.first().is_some_and(|m| m["attempts"] == 1) {
            break d[0].clone();
        }
        waited += 1;
        assert!(waited < 400, "no attempt: {d:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(first["status"], "pending");
    assert_eq!(first["last_status"], 503);
    w.advance(5);
    let mut waited = 0;
    loop {
        let d = deliveries(&w, &hook).await;
        if d[0]["status"] == "delivered" {
            assert_eq!(d[0]["attempts"], 2);
            break;
        }
        waited += 1;
        assert!(waited < 400, "not delivered: {d:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    for (h, body) in &got {
        assert!(verifies(&secret, h, body), "{h:?} {body}");
        assert_eq!(h["webhook-id"], first["id"].as_str().unwrap());
        assert!(!verifies("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", h, body));
    }
    // A resend: the same id again.
    let r = w
        .call(
            "POST",
            &format!(
                "/v1/orgs/acme/webhooks/{hook}/deliveries/{}/resend",
                first["id"].as_str().unwrap()
            ),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut waited = 0;
    while seen.lock().unwrap().len() < 3 {
        waited += 1;
        assert!(waited < 400, "the resend did not arrive");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (h, body) = seen.lock().unwrap()[2].clone();
    assert_eq!(h["webhook-id"], first["id"].as_str().unwrap());
    assert!(verifies(&secret, &h, &body));
    worker.abort();
}

/// By default the control plane delivers only to public addresses: an org admin's webhook
/// at a loopback address (an IP literal here, and `localhost`, a name resolving to one) is
/// never connected to, and the delivery log says why and how the operator allows it.
#[tokio::test]
async fn a_webhook_into_the_operators_own_network_is_refused_by_default() {
    let w = World::new().await;
    let (url, seen) = receiver(0).await;
    let by_name = url.replace("127.0.0.1", "localhost");
    let mut hooks = Vec::new();
    for u in [&url, &by_name] {
        let r = create(&w, "ada", "acme", json!({"url": u})).await;
        assert_eq!(r.status, 201, "{}", r.text());
        hooks.push(r.json()["webhook"]["id"].as_str().unwrap().to_string());
    }
    let worker = tokio::spawn(tessera_control_plane::api::webhooks::run_worker(
        w.state.clone(),
        Duration::from_millis(50),
        tessera_control_plane::api::webhooks::Destinations::Public,
    ));
    let tok = w.token_in_state(&w.uid("ula"), "enabled").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{tok}/revoke"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    for hook in &hooks {
        let mut waited = 0;
        let first = loop {
            let d = deliveries(&w, hook).await;
            if d.first().is_some_and(|m| m["attempts"] == 1) {
                break d[0].clone();
            }
            waited += 1;
            assert!(waited < 400, "no attempt: {d:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert!(first["last_status"].is_null(), "{first}");
        let error = first["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains("not a public internet address") || error.contains("resolves only to"),
            "{first}"
        );
    }
    worker.abort();
    assert!(seen.lock().unwrap().is_empty(), "the receiver was reached");
}
