//! The role × action matrix, through the HTTP API: one expectation per cell.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::World;
use serde_json::json;

const ACTIONS: [&str; 11] = [
    "create",
    "read",
    "download",
    "regenerate",
    "revoke",
    "revoke-all",
    "edit",
    "enable",
    "disable",
    "delete",
    "auth-log",
];

/// (actor, token owner, expectation per action in `ACTIONS` order: `y` allowed, `-` 403,
/// `n` 404 — a token of an owner the actor has no relation to is answered like an id that
/// does not exist, so that its existence does not leak).
/// Actors: ada = acme admin, ula = acme user, rita = acme readonly, pat = partner super
/// user of partnerco, which manages acme. uma (acme) delegates to the partner, ned (acme)
/// does not; pam is pat's colleague; root-admin is in an unrelated org.
const MATRIX: &[(&str, &str, &str)] = &[
    //                      c r d g v a e n s x l
    ("ada", "own", /*     */ "y y y y y y y y y y y"),
    ("ada", "ned", /*     */ "y y - - y y y y y y y"),
    ("ada", "uma", /*     */ "y y - - y y y y y y y"),
    ("ada", "root-admin", /* */ "- n n n n - n n n n n"),
    ("ula", "own", /*     */ "y y y y y y - - - - y"),
    ("ula", "ned", /*     */ "- - - - - - - - - - -"),
    ("ula", "uma", /*     */ "- - - - - - - - - - -"),
    ("ula", "root-admin", /* */ "- n n n n - n n n n n"),
    ("rita", "own", /*    */ "- y y - - - - - - - y"),
    ("rita", "ned", /*    */ "- - - - - - - - - - -"),
    ("rita", "uma", /*    */ "- - - - - - - - - - -"),
    ("rita", "root-admin", /**/ "- n n n n - n n n n n"),
    ("pat", "own", /*     */ "y y y y y y - - - - y"),
    ("pat", "pam", /*     */ "- - - - - - - - - - -"),
    ("pat", "ned", /*     */ "- n n n n - n n n n n"),
    ("pat", "uma", /*     */ "y y - - y y - - - - -"),
    ("pat", "root-admin", /* */ "- n n n n - n n n n n"),
];

/// Performs `action` as `actor_jwt` on a fresh token of `owner` in the state the action
/// needs; returns (status, error code).
async fn perform(w: &World, actor_jwt: &str, owner: &str, action: &str) -> (u16, String) {
    let needs = match action {
        "create" | "revoke-all" => None,
        "download" => Some("pending"),
        "enable" => Some("disabled"),
        _ => Some("enabled"),
    };
    let id = match needs {
        Some(state) => w.token_in_state(owner, state).await,
        None => String::new(),
    };
    let t = Some(actor_jwt);
    let r = match action {
        "create" => {
            w.call(
                "POST",
                "/v1/tokens",
                t,
                Some(json!({"name": w.unique("m"), "user": owner})),
            )
            .await
        }
        "read" => w.call("GET", &format!("/v1/tokens/{id}"), t, None).await,
        "revoke-all" => {
            w.call(
                "POST",
                "/v1/tokens/revoke-all",
                t,
                Some(json!({"user": owner})),
            )
            .await
        }
        "edit" => {
            w.call(
                "PATCH",
                &format!("/v1/tokens/{id}"),
                t,
                Some(json!({"description": "edited"})),
            )
            .await
        }
        "delete" => w.call("DELETE", &format!("/v1/tokens/{id}"), t, None).await,
        "auth-log" => {
            w.call("GET", &format!("/v1/tokens/{id}/auth-log"), t, None)
                .await
        }
        op => {
            w.call("POST", &format!("/v1/tokens/{id}/{op}"), t, Some(json!({})))
                .await
        }
    };
    let code = r.json()["error"].as_str().unwrap_or("").to_string();
    (r.status.as_u16(), code)
}

#[tokio::test]
async fn every_role_action_cell() {
    let w = World::new().await;
    let mut cells = 0;
    let mut wrong = Vec::new();
    for (actor, owner, row) in MATRIX {
        let expect: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(expect.len(), ACTIONS.len(), "row {actor}/{owner}");
        let owner_id = if *owner == "own" {
            w.uid(actor)
        } else {
            w.uid(owner)
        };
        for (action, e) in ACTIONS.iter().zip(expect) {
            // A fresh login per cell: revoke-all may have revoked the previous one.
            let jwt = w.login(&w.uid(actor)).await;
            let got = perform(&w, &jwt, &owner_id, action).await;
            let want = match (e, *action) {
                ("y", "create") => (201, String::new()),
                ("y", _) => (200, String::new()),
                ("n", _) => (404, "not_found".to_string()),
                _ => (403, "forbidden".to_string()),
            };
            cells += 1;
            if got != want {
                wrong.push(format!(
                    "{actor} {action} token of {owner}: got {got:?}, want {want:?}"
                ));
            }
        }
    }
    assert_eq!(cells, MATRIX.len() * ACTIONS.len());
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Org-level actions on acme: only acme's admin.
#[tokio::test]
async fn org_actions_need_an_org_admin() {
    let w = World::new().await;
    let actions: [(&str, &str, &str, Option<serde_json::Value>); 6] = [
        (
            "rotate-key",
            "POST",
            "/v1/orgs/acme/keys/rotate",
            Some(json!({})),
        ),
        (
            "create-user",
            "POST",
            "/v1/orgs/acme/users",
            Some(json!({"username": "@", "role": "user"})),
        ),
        ("list-users", "GET", "/v1/orgs/acme/users", None),
        ("audit-log", "GET", "/v1/audit-log?org=acme", None),
        (
            "create-edge",
            "POST",
            "/v1/orgs/acme/edge-credentials",
            Some(json!({"name": "e"})),
        ),
        (
            "revoke-all-org",
            "POST",
            "/v1/tokens/revoke-all",
            Some(json!({"org": "acme"})),
        ),
    ];
    let mut wrong = Vec::new();
    for actor in ["ula", "rita", "pat", "ada"] {
        for (name, method, path, body) in &actions {
            let jwt = w.login(&w.uid(actor)).await;
            let body = body.clone().map(|mut b| {
                if b.get("username").is_some() {
                    b["username"] = json!(w.unique("new"));
                }
                b
            });
            let r = w.call(method, path, Some(&jwt), body).await;
            let ok = r.status.is_success();
            if ok != (actor == "ada") || (!ok && r.status != 403) {
                wrong.push(format!("{actor} {name}: {} {}", r.status, r.text()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn a_forbidden_answer_gives_a_reason() {
    let w = World::new().await;
    let id = w.token_in_state(&w.uid("ula"), "pending").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["message"],
        "only the token's own user may download it"
    );
    // Delegation is the user's to give: once uma withdraws it, the partner loses access.
    let uma = w.uid("uma");
    let r = w
        .call(
            "PATCH",
            &format!("/v1/users/{uma}"),
            Some(&w.jwt("uma")),
            Some(json!({"delegated": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&w.jwt("pat")),
            Some(json!({"name": "x", "user": uma})),
        )
        .await;
    assert_eq!(r.status, 403);
    // ...and a user cannot promote themselves.
    let r = w
        .call(
            "PATCH",
            &format!("/v1/users/{uma}"),
            Some(&w.jwt("uma")),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 403);
}
