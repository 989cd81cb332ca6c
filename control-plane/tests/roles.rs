//! The role × relation × action matrix, through the HTTP API, with every kind of
//! credential (session, API token with and without `tessera:manage`, access token): one
//! expectation per cell.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Auth, Cred, World};
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
async fn perform(w: &World, auth: &Auth, owner: &str, action: &str) -> (u16, String) {
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
    let t = auth;
    let r = match action {
        "create" => {
            w.call_as(
                "POST",
                "/v1/tokens",
                t,
                Some(json!({"name": w.unique("m"), "user": owner})),
            )
            .await
        }
        "read" => w.call_as("GET", &format!("/v1/tokens/{id}"), t, None).await,
        "revoke-all" => {
            w.call_as(
                "POST",
                "/v1/tokens/revoke-all",
                t,
                Some(json!({"user": owner})),
            )
            .await
        }
        "edit" => {
            w.call_as(
                "PATCH",
                &format!("/v1/tokens/{id}"),
                t,
                Some(json!({"description": "edited"})),
            )
            .await
        }
        "delete" => {
            w.call_as("DELETE", &format!("/v1/tokens/{id}"), t, None)
                .await
        }
        "auth-log" => {
            w.call_as("GET", &format!("/v1/tokens/{id}/auth-log"), t, None)
                .await
        }
        op => {
            w.call_as("POST", &format!("/v1/tokens/{id}/{op}"), t, Some(json!({})))
                .await
        }
    };
    let v = r.json();
    let code = v["reason"]
        .as_str()
        .or(v["error"].as_str())
        .unwrap_or("")
        .to_string();
    (r.status.as_u16(), code)
}

/// What a cell expects of a credential kind: sessions and management tokens follow the
/// role matrix; a token without the management scope and an access token are refused on
/// every management route, with their stable reasons.
fn want(kind: Cred, e: &str, action: &str) -> (u16, String) {
    match (kind, e, action) {
        (Cred::NoManage, _, _) => (403, "management_scope_required".into()),
        (Cred::Access, _, _) => (403, "access_token_not_allowed".into()),
        (_, "y", "create") => (201, String::new()),
        (_, "y", _) => (200, String::new()),
        (_, "n", _) => (404, "not_found".to_string()),
        _ => (403, "forbidden".to_string()),
    }
}

#[tokio::test]
async fn every_role_action_credential_cell() {
    let w = World::new().await;
    let mut cells = std::collections::BTreeMap::<String, usize>::new();
    let mut wrong = Vec::new();
    for kind in Cred::ALL {
        for (actor, owner, row) in MATRIX {
            let expect: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(expect.len(), ACTIONS.len(), "row {actor}/{owner}");
            let owner_id = if *owner == "own" {
                w.uid(actor)
            } else {
                w.uid(owner)
            };
            // A session survives revoke-all and refused credentials change nothing, so
            // one serves the row; an API token is made fresh per cell (revoke-all may have
            // revoked the previous one).
            let shared = if kind == Cred::Manage {
                None
            } else {
                Some(w.credential(kind, &w.uid(actor)).await)
            };
            for (action, e) in ACTIONS.iter().zip(expect) {
                let auth = match &shared {
                    Some(a) => a.clone(),
                    None => w.credential(kind, &w.uid(actor)).await,
                };
                let got = perform(&w, &auth, &owner_id, action).await;
                let want = want(kind, e, action);
                *cells.entry(format!("{kind:?}")).or_default() += 1;
                if got != want {
                    wrong.push(format!(
                        "{kind:?}: {actor} {action} token of {owner}: got {got:?}, want {want:?}"
                    ));
                }
            }
        }
    }
    for kind in Cred::ALL {
        assert_eq!(cells[&format!("{kind:?}")], MATRIX.len() * ACTIONS.len());
    }
    assert!(
        wrong.is_empty(),
        "{} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Org-level actions on acme: only acme's admin, with a session or a management token;
/// every cell with each kind of credential.
#[tokio::test]
async fn org_actions_need_an_org_admin() {
    let w = World::new().await;
    let actions: [(&str, &str, &str, Option<serde_json::Value>); 7] = [
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
        ("list-edges", "GET", "/v1/orgs/acme/edge-credentials", None),
        (
            "revoke-all-org",
            "POST",
            "/v1/tokens/revoke-all",
            Some(json!({"org": "acme"})),
        ),
    ];
    let mut wrong = Vec::new();
    let mut cells = 0;
    for kind in Cred::ALL {
        for actor in ["ula", "rita", "pat", "ada"] {
            for (name, method, path, body) in &actions {
                let auth = w.credential(kind, &w.uid(actor)).await;
                let body = body.clone().map(|mut b| {
                    if b.get("username").is_some() {
                        b["username"] = json!(w.unique("new"));
                    }
                    b
                });
                let r = w.call_as(method, path, &auth, body).await;
                let reason = r.json()["reason"].as_str().unwrap_or("").to_string();
                let ok = match kind {
                    Cred::Session | Cred::Manage => {
                        r.status.is_success() == (actor == "ada")
                            && (r.status.is_success() || r.status == 403)
                    }
                    Cred::NoManage => r.status == 403 && reason == "management_scope_required",
                    Cred::Access => r.status == 403 && reason == "access_token_not_allowed",
                };
                cells += 1;
                if !ok {
                    wrong.push(format!(
                        "{kind:?} {actor} {name}: {} {}",
                        r.status,
                        r.text()
                    ));
                }
            }
        }
    }
    assert_eq!(cells, 4 * 4 * actions.len());
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
