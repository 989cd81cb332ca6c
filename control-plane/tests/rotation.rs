//! Token rotation with a grace period (`service::rotation`): who may rotate, the grace's
//! bounds, the successor Pending for its owner only, the hand-over learnt from usage
//! reports, the end marked `rotated` in the status list and refused by the API, and a use
//! after the end audited as a possible leak. The scheduler `tessera serve` runs is called
//! here as it calls it (`rotation::end_due`), with the test's clock.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::World;
use serde_json::{json, Value};
use tessera_control_plane::service;

async fn rotate(w: &World, caller: &str, id: &str, body: Value) -> common::Resp {
    w.call(
        "POST",
        &format!("/v1/tokens/{id}/rotate"),
        Some(&w.jwt(caller)),
        Some(body),
    )
    .await
}

async fn token(w: &World, caller: &str, id: &str) -> Value {
    let r = w
        .call(
            "GET",
            &format!("/v1/tokens/{id}"),
            Some(&w.jwt(caller)),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn audit(w: &World, action: &str) -> Vec<Value> {
    let r = w
        .call(
            "GET",
            "/v1/audit-log?org=acme&per_page=500",
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

async fn edge_secret(w: &World) -> String {
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/edge-credentials",
            Some(&w.jwt("ada")),
            Some(json!({"name": w.unique("edge")})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["secret"].as_str().unwrap().to_string()
}

/// Reports one use of `token_id` at `at`, as an edge does.
async fn report(w: &World, secret: &str, token_id: &str, at: i64, reason: Option<&str>) {
    let event = match reason {
        None => {
            json!({"token_id": token_id, "at": at, "ip": "192.0.2.9", "outcome": "allow", "method": "GET", "path": "/x"})
        }
        Some(r) => {
            json!({"token_id": token_id, "at": at, "ip": "192.0.2.9", "outcome": "deny", "reason": r, "method": "GET", "path": "/x"})
        }
    };
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some(secret),
            Some(json!({ "events": [event] })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Runs the scheduler's body once; how many rotations it ended.
async fn end_due(w: &World) -> usize {
    w.state.write(service::rotation::end_due).await.unwrap()
}

async fn status_value(w: &World, idx: i64) -> u8 {
    w.status_values("acme").await[idx as usize]
}

/// A fresh JWT of a token of `user` (created by an admin, downloaded by the user).
async fn live_token(w: &World, user: &str) -> (String, String) {
    let id = w.token_in_state(&w.uid(user), "pending").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&w.jwt(user)),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    (id, r.json()["jwt"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn the_old_token_works_until_the_successors_first_use_plus_the_grace() {
    let w = World::new().await;
    let secret = edge_secret(&w).await;
    let (old, old_jwt) = live_token(&w, "ula").await;
    let old_idx = token(&w, "ula", &old).await["status_idx"].as_i64().unwrap();

    let r = rotate(&w, "ula", &old, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let succ = v["successor"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["successor"]["status"], "pending");
    assert_eq!(v["successor"]["scopes"], v["token"]["scopes"]);
    assert_eq!(v["successor"]["ip_allow"], v["token"]["ip_allow"]);
    assert_eq!(v["successor"]["user"], v["token"]["user"]);
    assert_eq!(
        v["successor"]["name"],
        format!("{} #2", v["token"]["name"].as_str().unwrap())
    );
    assert_eq!(v["token"]["status"], "enabled");
    assert_eq!(v["rotation"]["ends_at"], Value::Null, "{v}");

    // Only the owner downloads the successor, once.
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{succ}/download"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{succ}/download"),
            Some(&w.jwt("ula")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{succ}/download"),
            Some(&w.jwt("ula")),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());

    // Nothing ends while the successor is unused, however long it takes.
    w.advance(3600);
    assert_eq!(end_due(&w).await, 0);
    assert_eq!(
        w.call("GET", "/v1/me", Some(&old_jwt), None).await.status,
        200
    );

    // Its first use (reported by an edge) starts the grace.
    let seen = w.now() - 2;
    report(&w, &secret, &succ, seen, None).await;
    let rot = w
        .call(
            "GET",
            &format!("/v1/tokens/{old}/rotation"),
            Some(&w.jwt("ula")),
            None,
        )
        .await
        .json();
    assert_eq!(
        rot["ends_at"],
        tessera_control_plane::timefmt::format(seen + 60)
    );
    // The successor's own view names the same rotation.
    let by_succ = w
        .call(
            "GET",
            &format!("/v1/tokens/{succ}/rotation"),
            Some(&w.jwt("ula")),
            None,
        )
        .await
        .json();
    assert_eq!(by_succ["token"], old.as_str());
    assert_eq!(audit(&w, "token.rotation_seen").await.len(), 1);

    // Within the grace the old token still works everywhere.
    w.advance(57);
    assert_eq!(end_due(&w).await, 0);
    assert_eq!(status_value(&w, old_idx).await, 0);
    assert_eq!(
        w.call("GET", "/v1/me", Some(&old_jwt), None).await.status,
        200
    );

    // At its end the entry is `rotated` (3) and the API refuses it with that reason.
    w.advance(1);
    assert_eq!(end_due(&w).await, 1);
    assert_eq!(end_due(&w).await, 0, "ended once");
    assert_eq!(status_value(&w, old_idx).await, 3);
    let r = w.call("GET", "/v1/me", Some(&old_jwt), None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["reason"], "rotated", "{}", r.text());
    assert_eq!(token(&w, "ula", &old).await["status"], "revoked");
    assert_eq!(token(&w, "ula", &succ).await["status"], "enabled");
    let ended = audit(&w, "token.rotated").await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["target"], old.as_str());

    // The old token presented after the end: a possible leak, audited with the
    // notification owed, once a day.
    report(&w, &secret, &old, w.now(), Some("rotated")).await;
    report(&w, &secret, &old, w.now(), Some("rotated")).await;
    let flagged = audit(&w, "token.revoked_but_presented").await;
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert_eq!(flagged[0]["detail"]["ip"], "192.0.2.9");
    let notes: Vec<Value> = audit(&w, "notification.needed")
        .await
        .into_iter()
        .filter(|e| e["detail"]["event"] == "token.revoked_but_presented")
        .collect();
    assert_eq!(notes.len(), 1);
    let recipients = notes[0]["detail"]["recipients"].as_array().unwrap();
    assert!(recipients.contains(&json!(w.uid("ula"))));
    assert!(recipients.contains(&json!(w.uid("ada"))));
}

#[tokio::test]
async fn a_deadline_ends_the_old_token_without_any_use_and_grace_zero_at_first_use() {
    let w = World::new().await;
    let secret = edge_secret(&w).await;
    let (old, _) = live_token(&w, "ula").await;
    // Made now: a token downloaded later would outlive the fixture credential.
    let (old2, _) = live_token(&w, "ula").await;
    let deadline = w.now() + 30;
    let r = rotate(
        &w,
        "ula",
        &old,
        json!({"grace_secs": 604_800, "deadline": deadline}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json()["rotation"]["ends_at"],
        tessera_control_plane::timefmt::format(deadline)
    );
    w.advance(29);
    assert_eq!(end_due(&w).await, 0);
    w.advance(1);
    assert_eq!(end_due(&w).await, 1);
    assert_eq!(token(&w, "ula", &old).await["status"], "revoked");

    // Grace 0: the successor's first use ends the old token in the same write.
    let old = old2;
    let idx = token(&w, "ula", &old).await["status_idx"].as_i64().unwrap();
    let r = rotate(&w, "ula", &old, json!({"grace_secs": 0})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let succ = r.json()["successor"]["id"].as_str().unwrap().to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{succ}/download"),
            Some(&w.jwt("ula")),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    report(&w, &secret, &succ, w.now(), None).await;
    assert_eq!(status_value(&w, idx).await, 3);
}

#[tokio::test]
async fn who_may_rotate() {
    let w = World::new().await;
    let (ula_tok, _) = live_token(&w, "ula").await;
    // Another user of the org: no.
    let r = rotate(&w, "ned", &ula_tok, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // A readonly user, even their own token: no.
    let (rita_tok, _) = live_token(&w, "rita").await;
    let r = rotate(&w, "rita", &rita_tok, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("readonly"), "{}", r.text());
    // Someone of another org that does not manage acme: as if it did not exist.
    let r = rotate(&w, "pam", &ula_tok, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // The org's admin: yes; the successor is the owner's to download, not the admin's.
    let r = rotate(&w, "ada", &ula_tok, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let succ = r.json()["successor"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["successor"]["user"], w.uid("ula"));
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{succ}/download"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // A partner for a delegating customer user: yes.
    let (uma_tok, _) = live_token(&w, "uma").await;
    let r = rotate(&w, "pat", &uma_tok, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // The owner, naming the token by its name.
    let (own, _) = live_token(&w, "ned").await;
    let name = token(&w, "ned", &own).await["name"]
        .as_str()
        .unwrap()
        .to_string();
    let r = rotate(&w, "ned", &name, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["token"]["id"], own.as_str());
    let audited = audit(&w, "token.rotate").await;
    assert_eq!(audited.len(), 3);
}

#[tokio::test]
async fn grace_and_deadline_bounds_name_the_field() {
    let w = World::new().await;
    let (tok, _) = live_token(&w, "ula").await;
    for grace in [-1, 604_801, i64::MAX] {
        let r = rotate(&w, "ula", &tok, json!({"grace_secs": grace})).await;
        assert_eq!(r.status, 400, "{grace}: {}", r.text());
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(
            msg.starts_with("grace_secs: ") && msg.contains("7 days"),
            "{msg}"
        );
    }
    let r = rotate(&w, "ula", &tok, json!({"grace_secs": "5m"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("grace_secs"), "{}", r.text());
    let r = rotate(
        &w,
        "ula",
        &tok,
        json!({"grace_secs": 60, "deadline": w.now() - 1}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("deadline: "),
        "{}",
        r.text()
    );
    let r = rotate(
        &w,
        "ula",
        &tok,
        json!({"grace_secs": 60, "deadline": "2099-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("before the token expires"),
        "{}",
        r.text()
    );
    // The largest grace is accepted.
    let r = rotate(&w, "ula", &tok, json!({"grace_secs": 604_800})).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn a_rotated_token_is_not_rotated_again_and_only_live_tokens_rotate() {
    let w = World::new().await;
    let (tok, _) = live_token(&w, "ula").await;
    let r = rotate(&w, "ula", &tok, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let succ_name = r.json()["successor"]["name"].as_str().unwrap().to_string();
    let r = rotate(&w, "ula", &tok, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("already rotated") && msg.contains(&succ_name) && msg.contains("successor"),
        "{msg}"
    );
    // A pending token has nothing to hand over; a disabled or revoked one is refused.
    let pending = w.token_in_state(&w.uid("ula"), "pending").await;
    let r = rotate(&w, "ula", &pending, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("never downloaded"), "{}", r.text());
    let disabled = w.token_in_state(&w.uid("ula"), "disabled").await;
    let r = rotate(&w, "ada", &disabled, json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("disabled"), "{}", r.text());
    // A successor name already taken is refused naming it; the default moves on.
    let (other, _) = live_token(&w, "ula").await;
    let r = rotate(
        &w,
        "ula",
        &other,
        json!({"grace_secs": 60, "name": succ_name}),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains(&succ_name), "{}", r.text());
    // An unknown id or name.
    let r = rotate(&w, "ula", "no-such-token", json!({"grace_secs": 60})).await;
    assert_eq!(r.status, 404, "{}", r.text());
}
