//! Notifications about tokens (`service::notifications`): `token.expiring` at 30, 7 and 1
//! days before expiry, each once per token even when the scheduler runs again or on
//! another replica's store; `token.used_from_new_network` from the edges' usage reports,
//! once per new network and bounded. The scheduler `tessera serve` runs is called here as
//! it calls it, with the test's clock; the events are read where webhooks and mail read
//! them (the audit log's `notification.needed` and the webhook outbox).
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::World;
use serde_json::{json, Value};
use tessera_control_plane::service;

const DAY: i64 = 86_400;

/// The `notification.needed` entries of acme for `event`, oldest first.
async fn notices(w: &World, event: &str) -> Vec<Value> {
    let r = w
        .call(
            "GET",
            "/v1/audit-log?org=acme&per_page=1000",
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut v: Vec<Value> = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "notification.needed" && e["detail"]["event"] == event)
        .cloned()
        .collect();
    v.reverse();
    v
}

/// The expiry notices of one token: the thresholds announced, in order.
async fn expiring_days(w: &World, token: &str) -> Vec<i64> {
    notices(w, "token.expiring")
        .await
        .iter()
        .filter(|e| e["target"] == token)
        .map(|e| e["detail"]["days"].as_i64().unwrap())
        .collect()
}

/// Runs the scheduler's body as `tessera serve` does: the read, then the write.
async fn tick(w: &World) -> usize {
    if !w
        .state
        .read(service::notifications::any_expiring)
        .await
        .unwrap()
    {
        return 0;
    }
    w.state
        .write(service::notifications::warn_expiring)
        .await
        .unwrap()
}

/// A token of ula expiring `days` from now, made by ada and downloaded by ula: its id.
async fn expiring_token(w: &World, name: &str, secs: i64) -> String {
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&w.jwt("ada")),
            Some(json!({"name": name, "user": "ula", "expires_at": w.now() + secs})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&w.jwt("ula")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    id
}

async fn webhook(w: &World, events: Value) -> String {
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/webhooks",
            Some(&w.jwt("ada")),
            Some(json!({"url": "https://hooks.example/tessera", "events": events})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["webhook"]["id"].as_str().unwrap().to_string()
}

async fn deliveries(w: &World, hook: &str) -> Vec<Value> {
    let r = w
        .call(
            "GET",
            &format!("/v1/orgs/acme/webhooks/{hook}/deliveries?per_page=500"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["deliveries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn expiring_tokens_are_announced_at_30_7_and_1_days_once_each() {
    let w = World::new().await;
    let hook = webhook(&w, json!(["token.expiring"])).await;
    let long = expiring_token(&w, "long", 40 * DAY).await;
    // Never downloaded, disabled, revoked: never announced.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&w.jwt("ada")),
            Some(json!({"name": "pending", "user": "ula", "expires_at": w.now() + 20 * DAY})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let pending = r.json()["id"].as_str().unwrap().to_string();
    let disabled = expiring_token(&w, "disabled", 20 * DAY).await;
    let r = w
        .call(
            "PATCH",
            &format!("/v1/tokens/{disabled}"),
            Some(&w.jwt("ada")),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let revoked = expiring_token(&w, "revoked", 20 * DAY).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{revoked}/revoke"),
            Some(&w.jwt("ula")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Nothing is due yet for `long` (40 days left).
    tick(&w).await;
    assert!(expiring_days(&w, &long).await.is_empty());

    // 30 days before `long` expires: its 30-day notice, once however often the tick runs.
    w.advance(10 * DAY);
    tick(&w).await;
    assert_eq!(tick(&w).await, 0);
    assert_eq!(expiring_days(&w, &long).await, vec![30]);
    let n = &notices(&w, "token.expiring").await[0];
    let d = &n["detail"];
    assert_eq!(d["token"], long.as_str());
    assert_eq!(d["name"], "long");
    assert_eq!(d["owner"], w.uid("ula").as_str());
    assert_eq!(d["owner_username"], "ula");
    assert_eq!(n["actor"], "notifications");
    let recipients: Vec<&str> = d["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(recipients[0], w.uid("ula"));
    assert!(
        recipients.contains(&w.uid("ada").as_str()),
        "{recipients:?}"
    );

    // 7 days before, then 1 day before; each once.
    w.advance(23 * DAY);
    tick(&w).await;
    assert_eq!(expiring_days(&w, &long).await, vec![30, 7]);
    w.advance(5 * DAY + DAY / 2);
    assert_eq!(tick(&w).await, 0, "1.5 days left: nothing new");
    w.advance(DAY / 2);
    tick(&w).await;
    tick(&w).await;
    assert_eq!(expiring_days(&w, &long).await, vec![30, 7, 1]);
    for never in [&pending, &disabled, &revoked] {
        assert!(expiring_days(&w, never).await.is_empty(), "{never}");
    }
    // The webhook got one message per notice, with the token named.
    let sent: Vec<Value> = deliveries(&w, &hook)
        .await
        .into_iter()
        .filter(|m| m["payload"]["data"]["token"] == long.as_str())
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    for m in &sent {
        assert_eq!(m["event"], "token.expiring");
        assert_eq!(m["payload"]["type"], "token.expiring");
        assert_eq!(m["payload"]["data"]["name"], "long");
    }
}

#[tokio::test]
async fn a_token_found_late_gets_only_the_nearest_notice() {
    // The service was down while two thresholds passed: only the nearest is announced.
    let w = World::new().await;
    let t = expiring_token(&w, "late", 60 * DAY).await;
    w.advance(55 * DAY);
    assert_eq!(tick(&w).await, 1);
    assert_eq!(expiring_days(&w, &t).await, vec![7]);
    w.advance(4 * DAY + 1);
    tick(&w).await;
    assert_eq!(expiring_days(&w, &t).await, vec![7, 1]);
    // A token made for 10 days: the 30-day threshold had passed when it was made, so
    // only 7 and 1.
    let ten = expiring_token(&w, "ten", 10 * DAY).await;
    tick(&w).await;
    assert!(expiring_days(&w, &ten).await.is_empty());
    w.advance(3 * DAY);
    tick(&w).await;
    assert_eq!(expiring_days(&w, &ten).await, vec![7]);
    w.advance(6 * DAY + 1);
    tick(&w).await;
    assert_eq!(expiring_days(&w, &ten).await, vec![7, 1]);
    // Expired: nothing more.
    w.advance(DAY);
    assert_eq!(tick(&w).await, 0);
    // A rotated token is not announced: its successor takes over.
    let old = expiring_token(&w, "rotated", 20 * DAY).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{old}/rotate"),
            Some(&w.jwt("ula")),
            Some(json!({"grace_secs": 3600})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    w.advance(15 * DAY);
    tick(&w).await;
    assert!(expiring_days(&w, &old).await.is_empty());
}

#[tokio::test]
async fn an_expiry_notice_is_claimed_once_by_racing_schedulers() {
    // Two schedulers (replicas) run at the same moment against one store: each notice is
    // raised by one of them. On PostgreSQL the second's claim waits for the first's commit.
    let w = World::new().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(expiring_token(&w, &format!("race-{i}"), 20 * DAY).await);
    }
    w.advance(14 * DAY);
    let (a, b, c) = tokio::join!(
        w.state.write(service::notifications::warn_expiring),
        w.state.write(service::notifications::warn_expiring),
        w.state.write(service::notifications::warn_expiring),
    );
    let raised = a.unwrap() + b.unwrap() + c.unwrap();
    let mine: Vec<Value> = notices(&w, "token.expiring")
        .await
        .into_iter()
        .filter(|e| ids.iter().any(|i| e["target"] == i.as_str()))
        .collect();
    assert_eq!(mine.len(), 6, "{mine:?}");
    assert_eq!(raised, 6);
    for id in &ids {
        assert_eq!(expiring_days(&w, id).await, vec![7]);
    }
}

/// Reports allowed uses of `token` from each address at `at`, as an edge does.
async fn report(w: &World, secret: &str, token: &str, ips: &[&str], at: i64) {
    let events: Vec<Value> = ips
        .iter()
        .map(|ip| {
            json!({"token_id": token, "at": at, "ip": ip, "outcome": "allow", "method": "GET", "path": "/x"})
        })
        .collect();
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some(secret),
            Some(json!({ "events": events })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], ips.len());
}

/// The networks `token` was announced as newly used from, in order.
async fn new_networks(w: &World, token: &str) -> Vec<String> {
    notices(w, "token.used_from_new_network")
        .await
        .iter()
        .filter(|e| e["target"] == token)
        .map(|e| e["detail"]["network"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_new_network_is_announced_once_with_the_network_and_the_edge() {
    let w = World::new().await;
    let hook = webhook(&w, json!(["token.used_from_new_network"])).await;
    let edge = w.edge_secret("ada", "acme", "edge-paris").await;
    let other_edge = w.edge_secret("ada", "acme", "edge-tokyo").await;
    let t = expiring_token(&w, "ci", 90 * DAY).await;
    // The first network a token is used from is its owner's: learnt, not announced.
    report(&w, &edge, &t, &["198.51.100.7", "198.51.100.8"], w.now()).await;
    assert!(new_networks(&w, &t).await.is_empty());
    // Another address of the same /24: nothing.
    w.advance(60);
    report(&w, &edge, &t, &["198.51.100.200"], w.now()).await;
    assert!(new_networks(&w, &t).await.is_empty());
    // A new /24, many requests in one batch and in later batches, from two edges: one event.
    w.advance(60);
    let at = w.now();
    report(
        &w,
        &other_edge,
        &t,
        &["203.0.113.9", "203.0.113.10", "203.0.113.9"],
        at,
    )
    .await;
    report(&w, &edge, &t, &["203.0.113.11"], w.now()).await;
    w.advance(3_600);
    report(&w, &other_edge, &t, &["203.0.113.9"], w.now()).await;
    assert_eq!(new_networks(&w, &t).await, vec!["203.0.113.0/24"]);
    let n = notices(&w, "token.used_from_new_network").await;
    let d = &n.last().unwrap()["detail"];
    assert_eq!(d["ip"], "203.0.113.9");
    assert_eq!(d["name"], "ci");
    assert_eq!(d["owner"], w.uid("ula").as_str());
    assert_eq!(d["edge_name"], "edge-tokyo");
    assert!(d["edge"].as_str().unwrap().starts_with("edg"), "{d}");
    assert_eq!(
        d["at"],
        tessera_control_plane::timefmt::format(at).as_str(),
        "{d}"
    );
    // IPv6: by /48; an IPv4-mapped address is its IPv4 network.
    report(
        &w,
        &edge,
        &t,
        &[
            "2001:db8:aa:1::1",
            "2001:db8:aa:ffff::2",
            "::ffff:198.51.100.1",
        ],
        w.now(),
    )
    .await;
    assert_eq!(
        new_networks(&w, &t).await,
        vec!["203.0.113.0/24", "2001:db8:aa::/48"]
    );
    // Refusals and other tokens' uses teach nothing about this token.
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some(&edge),
            Some(json!({"events": [{"token_id": t, "at": w.now(), "ip": "192.0.2.1", "outcome": "deny", "reason": "ip_not_allowed", "method": "GET", "path": "/x"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(new_networks(&w, &t).await.len(), 2);
    // The webhook got one message per event, naming the network and the edge.
    let sent = deliveries(&w, &hook).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent
        .iter()
        .any(|m| m["payload"]["data"]["network"] == "203.0.113.0/24"
            && m["payload"]["data"]["edge_name"] == "edge-tokyo"));
    // Not seen for more than 30 days: new again (once).
    w.advance(31 * DAY);
    report(&w, &edge, &t, &["203.0.113.50", "203.0.113.51"], w.now()).await;
    report(&w, &edge, &t, &["203.0.113.52"], w.now()).await;
    assert_eq!(
        new_networks(&w, &t).await,
        vec!["203.0.113.0/24", "2001:db8:aa::/48", "203.0.113.0/24"]
    );
}

#[tokio::test]
async fn networks_are_bounded_per_token_and_events_per_day() {
    use tessera_control_plane::service::notifications::{MAX_NETWORKS, MAX_NETWORK_ALERTS_PER_DAY};
    let w = World::new().await;
    let edge = w.edge_secret("ada", "acme", "edge").await;
    let t = expiring_token(&w, "busy", 300 * DAY).await;
    report(&w, &edge, &t, &["10.0.0.1"], w.now()).await;
    // One batch from 20 new networks: at most MAX_NETWORK_ALERTS_PER_DAY events; the others
    // are not recorded, so they are announced once the day's bound allows.
    let ips: Vec<String> = (1..=20).map(|i| format!("10.{i}.0.1")).collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    report(&w, &edge, &t, &refs, w.now()).await;
    assert_eq!(new_networks(&w, &t).await.len(), MAX_NETWORK_ALERTS_PER_DAY);
    w.advance(3_600);
    report(&w, &edge, &t, &refs, w.now()).await;
    assert_eq!(new_networks(&w, &t).await.len(), MAX_NETWORK_ALERTS_PER_DAY);
    w.advance(DAY);
    report(&w, &edge, &t, &refs, w.now()).await;
    let seen = new_networks(&w, &t).await;
    assert_eq!(seen.len(), 2 * MAX_NETWORK_ALERTS_PER_DAY);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "each network once: {seen:?}");
    // The store keeps the MAX_NETWORKS most recently seen networks of the token.
    for day in 0..6 {
        w.advance(DAY + 60);
        let ips: Vec<String> = (0..MAX_NETWORK_ALERTS_PER_DAY)
            .map(|i| format!("172.16.{}.1", day * 10 + i))
            .collect();
        let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        report(&w, &edge, &t, &refs, w.now()).await;
    }
    let kept = w
        .state
        .read({
            let t = t.clone();
            move |tx, _| Ok(tx.token_networks(&t)?)
        })
        .await
        .unwrap();
    assert_eq!(kept.len(), MAX_NETWORKS);
    // The oldest was dropped first: the first network is gone, the latest are kept.
    assert!(!kept.iter().any(|k| k.network == "10.0.0.0/24"));
    assert!(kept.iter().any(|k| k.network == "172.16.57.0/24"));
}
