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
/// does not; pam is pat's colleague; root-admin is in an unrelated org. Owners manage their
/// own tokens (edit, enable, disable, delete): every org's default (`owners_manage_tokens`);
/// [`OWNERS_OFF`] is the same matrix's owner rows with it turned off.
const MATRIX: &[(&str, &str, &str)] = &[
    //                      c r d g v a e n s x l
    ("ada", "own", /*     */ "y y y y y y y y y y y"),
    ("ada", "ned", /*     */ "y y - - y y y y y y y"),
    ("ada", "uma", /*     */ "y y - - y y y y y y y"),
    ("ada", "root-admin", /* */ "- n n n n - n n n n n"),
    ("ula", "own", /*     */ "y y y y y y y y y y y"),
    ("ula", "ned", /*     */ "- - - - - - - - - - -"),
    ("ula", "uma", /*     */ "- - - - - - - - - - -"),
    ("ula", "root-admin", /* */ "- n n n n - n n n n n"),
    ("rita", "own", /*    */ "- y y - - - - - - - y"),
    ("rita", "ned", /*    */ "- - - - - - - - - - -"),
    ("rita", "uma", /*    */ "- - - - - - - - - - -"),
    ("rita", "root-admin", /**/ "- n n n n - n n n n n"),
    ("pat", "own", /*     */ "y y y y y y y y y y y"),
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

/// The owner cells with `owners_manage_tokens` off in acme and partnerco: owners keep
/// create, read, download, regenerate, revoke, revoke-all and their log; edit, enable,
/// disable and delete are the admins' (an admin's own tokens are unchanged). A readonly
/// owner is the same either way.
const OWNERS_OFF: &[(&str, &str, &str)] = &[
    //                      c r d g v a e n s x l
    ("ada", "own", /*     */ "y y y y y y y y y y y"),
    ("ula", "own", /*     */ "y y y y y y - - - - y"),
    ("rita", "own", /*    */ "- y y - - - - - - - y"),
    ("pat", "own", /*     */ "y y y y y y - - - - y"),
    ("ada", "ula", /*     */ "y y - - y y y y y y y"),
    ("pat", "uma", /*     */ "y y - - y y - - - - -"),
];

#[tokio::test]
async fn every_role_action_credential_cell() {
    let w = World::new().await;
    run_matrix(&w, MATRIX).await;
}

#[tokio::test]
async fn owner_cells_when_the_org_turns_owners_management_off() {
    let w = World::new().await;
    // The org's admins (here the root's, which manages both) turn it off; audited.
    for org in ["acme", "partnerco"] {
        let r = w
            .call(
                "PATCH",
                &format!("/v1/orgs/{org}"),
                Some(&w.jwt("root-admin")),
                Some(json!({"owners_manage_tokens": false})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["owners_manage_tokens"], false);
    }
    run_matrix(&w, OWNERS_OFF).await;
    // Revoke-all in the matrix revoked the fixtures' tokens: fresh ones.
    let (ula, ada) = (w.login(&w.uid("ula")).await, w.login(&w.uid("ada")).await);
    // The refusal says why, and what the owner may still do.
    let id = w.token_in_state(&w.uid("ula"), "enabled").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/disable"),
            Some(&ula),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("owners_manage_tokens is off"), "{msg}");
    // acme's admin turns it back on: ula disables her token again.
    let r = w
        .call(
            "PATCH",
            "/v1/orgs/acme",
            Some(&ada),
            Some(json!({"owners_manage_tokens": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/disable"),
            Some(&ula),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Only an admin of the org changes it; each change is in the audit log, from → to.
    for who in ["ula", "pat"] {
        let jwt = w.login(&w.uid(who)).await;
        let r = w
            .call(
                "PATCH",
                "/v1/orgs/acme",
                Some(&jwt),
                Some(json!({"owners_manage_tokens": false})),
            )
            .await;
        assert_eq!(r.status, 403, "{who}: {}", r.text());
    }
    let log = w
        .call(
            "GET",
            "/v1/audit-log?org=acme&target=acme&per_page=200",
            Some(&ada),
            None,
        )
        .await
        .json();
    let changes: Vec<serde_json::Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "org.update")
        .map(|e| e["detail"]["owners_manage_tokens"].clone())
        .collect();
    assert!(
        changes.contains(&json!({"from": true, "to": false}))
            && changes.contains(&json!({"from": false, "to": true})),
        "{changes:?}"
    );
}

/// Every cell of `rows`, with every kind of credential.
async fn run_matrix(w: &World, rows: &[(&str, &str, &str)]) {
    let mut cells = std::collections::BTreeMap::<String, usize>::new();
    let mut wrong = Vec::new();
    for kind in Cred::ALL {
        for (actor, owner, row) in rows {
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
                let got = perform(w, &auth, &owner_id, action).await;
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
        assert_eq!(cells[&format!("{kind:?}")], rows.len() * ACTIONS.len());
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
    // Regenerating is refused in its own words, saying what the admin may do instead.
    let enabled = w.token_in_state(&w.uid("ula"), "enabled").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{enabled}/regenerate"),
            Some(&w.jwt("ada")),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with("only the token's own user may regenerate it"),
        "{msg}"
    );
    assert!(msg.contains("revoke or disable"), "{msg}");
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

// ---------------------------------------------------------------------------------------
// Issue 22: a credential never creates a credential that outlives or outranks it.

use tessera_control_plane::service;

/// The acting credentials of the credential-creating matrix: a session, an unlimited
/// management token (no IP filter, the org's longest lifetime), three limited ones (an IP
/// filter; 30 days; only the management scope), a token without the management scope
/// and an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acting {
    Session,
    Unlimited,
    LimitedIp,
    Limited30Days,
    LimitedScopes,
    NoManage,
    Access,
}

const ACTING: [Acting; 7] = [
    Acting::Session,
    Acting::Unlimited,
    Acting::LimitedIp,
    Acting::Limited30Days,
    Acting::LimitedScopes,
    Acting::NoManage,
    Acting::Access,
];

/// A downloaded token of `user`, made in-process with these bounds.
async fn token_of(w: &World, user: &str, scopes: &[&str], ip: &[&str], days: i64) -> String {
    let uid = w.uid(user);
    let name = w.unique("acting");
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let ip: Vec<String> = ip.iter().map(|s| s.to_string()).collect();
    w.state
        .write(move |tx, ctx| {
            let owner = common::actor(tx, &uid);
            let mut body = common::create_body(&name, &uid);
            body.scopes = scopes;
            body.ip_allow = ip;
            body.lifetime_days = Some(days);
            let t = service::tokens::create_token(tx, ctx, &common::owner_as_admin(&owner), body)?;
            Ok(service::tokens::download(tx, ctx, &owner, &t.id)?.jwt)
        })
        .await
        .unwrap()
}

const ALL_SCOPES: [&str; 4] = ["read", "write", "admin", "tessera:manage"];

async fn acting(w: &World, kind: Acting, user: &str) -> Auth {
    let bearer = |t: String| Auth {
        bearer: Some(t),
        headers: vec![],
    };
    match kind {
        Acting::Session => w.credential(Cred::Session, &w.uid(user)).await,
        Acting::Unlimited => bearer(token_of(w, user, &ALL_SCOPES, &[], 365).await),
        Acting::LimitedIp => bearer(token_of(w, user, &ALL_SCOPES, &["10.0.0.0/8"], 365).await),
        Acting::Limited30Days => bearer(token_of(w, user, &ALL_SCOPES, &[], 30).await),
        Acting::LimitedScopes => bearer(token_of(w, user, &["tessera:manage"], &[], 365).await),
        Acting::NoManage => w.credential(Cred::NoManage, &w.uid(user)).await,
        Acting::Access => w.credential(Cred::Access, &w.uid(user)).await,
    }
}

/// The credential-creating routes, performed by ada (acme's admin): (status, reason, the
/// start of the message).
async fn create_as(w: &World, auth: &Auth, route: &str) -> (u16, String, String) {
    let ada = w.uid("ada");
    let r = match route {
        "create-token" => {
            w.call_as(
                "POST",
                "/v1/tokens",
                auth,
                Some(json!({"name": w.unique("c"), "scopes": ["read"], "lifetime_days": 365})),
            )
            .await
        }
        "create-token-for-user" => {
            w.call_as(
                "POST",
                "/v1/tokens",
                auth,
                Some(json!({"name": w.unique("c"), "user": w.uid("ula"), "scopes": ["read"], "lifetime_days": 365})),
            )
            .await
        }
        "download" => {
            let id = w.token_in_state(&ada, "pending").await;
            w.call_as("POST", &format!("/v1/tokens/{id}/download"), auth, None)
                .await
        }
        "regenerate" => {
            let id = w.token_in_state(&ada, "enabled").await;
            w.call_as("POST", &format!("/v1/tokens/{id}/regenerate"), auth, None)
                .await
        }
        "create-user" => {
            w.call_as(
                "POST",
                "/v1/orgs/acme/users",
                auth,
                Some(json!({"username": w.unique("new"), "role": "user"})),
            )
            .await
        }
        "reset-link" => {
            w.call_as(
                "POST",
                &format!("/v1/users/{}/reset-link", w.uid("ned")),
                auth,
                None,
            )
            .await
        }
        "create-edge" => {
            w.call_as(
                "POST",
                "/v1/orgs/acme/edge-credentials",
                auth,
                Some(json!({"name": w.unique("edge")})),
            )
            .await
        }
        "grant-admin" => {
            let fresh = w.unique("promoted");
            let r = w
                .call(
                    "POST",
                    "/v1/orgs/acme/users",
                    Some(&w.jwt("ada")),
                    Some(json!({"username": fresh, "role": "user"})),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text());
            let id = r.json()["id"].as_str().unwrap().to_string();
            w.call_as(
                "PATCH",
                &format!("/v1/users/{id}"),
                auth,
                Some(json!({"role": "admin"})),
            )
            .await
        }
        other => panic!("no route {other}"),
    };
    let v = r.json();
    (
        r.status.as_u16(),
        v["reason"].as_str().unwrap_or("").to_string(),
        v["message"].as_str().unwrap_or("").to_string(),
    )
}

/// Every route that creates a credential, with every acting credential: a limited token
/// never makes, downloads or regenerates a stronger token, and never makes what only the
/// role bounds (a sign-in link, an edge credential, an admin). `ok` is the success status;
/// a limited cell names the field it exceeds (`-` when the credential passes).
#[tokio::test]
async fn every_credential_creating_route_with_limited_and_unlimited_credentials() {
    let w = World::new().await;
    //                          route,  ok,  Session, Unlimited, IP, 30 days, scopes
    let routes: [(&str, u16, [&str; 5]); 8] = [
        (
            "create-token",
            201,
            ["-", "-", "ip_allow", "expires_at", "scopes"],
        ),
        (
            "create-token-for-user",
            201,
            ["-", "-", "ip_allow", "expires_at", "scopes"],
        ),
        (
            "download",
            200,
            ["-", "-", "ip_allow", "expires_at", "scopes"],
        ),
        (
            "regenerate",
            200,
            ["-", "-", "ip_allow", "expires_at", "scopes"],
        ),
        ("create-user", 201, ["-", "-", "link", "link", "-"]),
        ("reset-link", 200, ["-", "-", "link", "link", "-"]),
        (
            "create-edge",
            201,
            ["-", "-", "edge_credential", "edge_credential", "-"],
        ),
        ("grant-admin", 200, ["-", "-", "role", "role", "-"]),
    ];
    let mut wrong = Vec::new();
    let mut cells = 0;
    for kind in ACTING {
        for (route, ok, fields) in &routes {
            let auth = acting(&w, kind, "ada").await;
            let got = create_as(&w, &auth, route).await;
            let col = ACTING.iter().position(|k| *k == kind).unwrap();
            let want: (u16, &str, String) = match kind {
                Acting::NoManage => (403, "management_scope_required", String::new()),
                Acting::Access => (403, "access_token_not_allowed", String::new()),
                _ if fields[col] == "-" => (*ok, "", String::new()),
                _ => (403, "exceeds_creator", format!("{}: ", fields[col])),
            };
            cells += 1;
            if got.0 != want.0 || got.1 != want.1 || !got.2.starts_with(&want.2) {
                wrong.push(format!("{kind:?} {route}: got {got:?}, want {want:?}"));
            }
        }
    }
    assert_eq!(cells, ACTING.len() * routes.len());
    assert!(
        wrong.is_empty(),
        "{} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Exchange is bounded by the token exchanged: the access token never lives longer,
/// carries no other scope and no wider IP filter, whatever the token's limits.
#[tokio::test]
async fn an_exchanged_token_never_exceeds_its_parent() {
    let w = World::new().await;
    for (scopes, ip, days) in [
        (&ALL_SCOPES[..], &[][..], 365),
        (&ALL_SCOPES[..], &["10.0.0.0/8"][..], 365),
        (&["read"][..], &[][..], 30),
    ] {
        let parent = token_of(&w, "ula", scopes, ip, days).await;
        // Close to the parent's expiry, the access token ends with it.
        let (_, pc) = common::decode_jwt(&parent);
        w.advance(pc["exp"].as_i64().unwrap() - w.now() - 60);
        let at = w.access_token(&parent).await;
        let (_, c) = common::decode_jwt(&at);
        assert!(c["exp"].as_i64().unwrap() <= pc["exp"].as_i64().unwrap());
        assert_eq!(c["scope"], pc["scope"]);
        assert_eq!(c["ip_allow"], pc["ip_allow"]);
        w.clock
            .store(common::T0, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A 30-day management token makes a 30-day token (the preset would land seconds past
/// its own expiry: it ends with it), and a refusal gives the maximum.
#[tokio::test]
async fn a_thirty_day_token_makes_a_thirty_day_token() {
    let w = World::new().await;
    let t30 = token_of(&w, "ada", &ALL_SCOPES, &[], 30).await;
    let own_exp = common::decode_jwt(&t30).1["exp"].as_i64().unwrap();
    w.advance(10);
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&t30),
            Some(json!({"name": "thirty", "scopes": ["read"], "lifetime_days": 30})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let at = tessera_control_plane::timefmt::parse(r.json()["expires_at"].as_str().unwrap());
    assert_eq!(at, Ok(own_exp));
    // No lifetime asked: the default ends with the acting token too.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&t30),
            Some(json!({"name": "default", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Longer: refused, naming the field and the most allowed.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&t30),
            Some(json!({"name": "sixty", "scopes": ["read"], "lifetime_days": 60})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "exceeds_creator");
    let want = format!(
        "expires_at: at most {}, the expiry of the token you are using",
        tessera_control_plane::timefmt::format(own_exp)
    );
    assert_eq!(r.json()["message"], want.as_str());
}

/// A limited token downloads or regenerates its owner's token only within its bounds:
/// the 365-day, any-address JWT is refused, naming the limit; a session downloads it.
#[tokio::test]
async fn a_limited_token_never_downloads_or_regenerates_a_stronger_jwt() {
    let w = World::new().await;
    let limited = token_of(&w, "ula", &ALL_SCOPES, &["10.0.0.0/8"], 30).await;
    let pending = w.token_in_state(&w.uid("ula"), "pending").await;
    let enabled = w.token_in_state(&w.uid("ula"), "enabled").await;
    for (id, op) in [(&pending, "download"), (&enabled, "regenerate")] {
        let r = w
            .call(
                "POST",
                &format!("/v1/tokens/{id}/{op}"),
                Some(&limited),
                None,
            )
            .await;
        assert_eq!(r.status, 403, "{op}: {}", r.text());
        assert_eq!(r.json()["reason"], "exceeds_creator");
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("ip_allow: at most 10.0.0.0/8"),
            "{}",
            r.text()
        );
    }
    let session = w.credential(Cred::Session, &w.uid("ula")).await;
    let r = w
        .call_as(
            "POST",
            &format!("/v1/tokens/{pending}/download"),
            &session,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// An owner edits their own token only within the credential they act with: a limited
/// token of theirs changes the name and description, but cannot widen the IP filter,
/// lengthen the expiry or add a scope it lacks (`exceeds_creator`, naming the field); a
/// session can. Disabling, enabling and deleting their own token loosen nothing.
#[tokio::test]
async fn an_owner_edits_their_token_only_within_the_acting_credential() {
    let w = World::new().await;
    let ula = w.uid("ula");
    let limited = token_of(&w, "ula", &["read", "tessera:manage"], &["10.0.0.0/8"], 30).await;
    // A token within the limited one's bounds, made and downloaded through it.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&limited),
            Some(json!({"name": "inside", "scopes": ["read"], "ip_allow": ["10.1.0.0/16"], "lifetime_days": 30})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&limited),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let patch = |body: serde_json::Value| {
        let path = format!("/v1/tokens/{id}");
        let limited = limited.clone();
        let w = &w;
        async move { w.call("PATCH", &path, Some(&limited), Some(body)).await }
    };
    let r = patch(json!({"name": "renamed", "description": "mine"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["jwt_revoked"], false);
    for (body, field) in [
        (json!({"ip_allow": []}), "ip_allow"),
        (json!({"lifetime_days": 365}), "expires_at"),
        (json!({"scopes": ["read", "write"]}), "scopes"),
    ] {
        let r = patch(body.clone()).await;
        assert_eq!(r.status, 403, "{body}: {}", r.text());
        assert_eq!(r.json()["reason"], "exceeds_creator", "{body}");
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: ")),
            "{body}: {}",
            r.text()
        );
    }
    // The owner's session is bounded by the role and the catalogue only.
    let session = w.credential(Cred::Session, &ula).await;
    let r = w
        .call_as(
            "PATCH",
            &format!("/v1/tokens/{id}"),
            &session,
            Some(json!({"ip_allow": [], "scopes": ["read", "write"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["jwt_revoked"], true);
    assert_eq!(r.json()["token"]["status"], "pending");
    // Disable, enable, delete through the limited token.
    let other = w.token_in_state(&ula, "enabled").await;
    for (method, op, status) in [
        ("POST", "disable", "disabled"),
        ("POST", "enable", "enabled"),
        ("DELETE", "", "revoked"),
    ] {
        let path = if op.is_empty() {
            format!("/v1/tokens/{other}")
        } else {
            format!("/v1/tokens/{other}/{op}")
        };
        let body = (method == "POST").then(|| json!({}));
        let r = w.call(method, &path, Some(&limited), body).await;
        assert_eq!(r.status, 200, "{op}: {}", r.text());
        let got = r.json();
        assert_eq!(
            got["status"].as_str().or(got["token"]["status"].as_str()),
            Some(status),
            "{op}: {}",
            r.text()
        );
    }
}

// Links reach only their user.

/// A partner admin (or the root's) never receives a link for a customer's user once the
/// customer has an admin of its own; the customer's admin does.
#[tokio::test]
async fn a_manager_never_receives_a_link_for_a_customers_user() {
    let w = World::new().await;
    // pia: an admin of partnerco, which manages acme.
    let r = w
        .call(
            "POST",
            "/v1/orgs/partnerco/users",
            Some(&w.jwt("root-admin")),
            Some(json!({"username": "pia", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let pia_id = r.json()["id"].as_str().unwrap().to_string();
    let pia = w.login(&pia_id).await;
    for (who, jwt) in [("pia", &pia), ("root-admin", &w.jwt("root-admin"))] {
        for target in ["ada", "ula"] {
            let r = w
                .call(
                    "POST",
                    &format!("/v1/users/{}/reset-link", w.uid(target)),
                    Some(jwt),
                    None,
                )
                .await;
            assert_eq!(r.status, 403, "{who} → {target}: {}", r.text());
            assert!(r.json().get("link").is_none());
        }
        // A user the manager creates in acme gets no link in the manager's answer.
        let r = w
            .call(
                "POST",
                "/v1/orgs/acme/users",
                Some(jwt),
                Some(json!({"username": w.unique("made"), "role": "admin"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert!(r.json()["link"].is_null(), "{who}: {}", r.text());
    }
    // acme's own admin issues acme's links.
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{}/reset-link", w.uid("ula")),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["link"]["kind"], "reset");
}

fn secret_of(v: &serde_json::Value) -> String {
    v["link"]["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

async fn token_status(w: &World, id: &str) -> String {
    w.call(
        "GET",
        &format!("/v1/tokens/{id}"),
        Some(&w.jwt("ada")),
        None,
    )
    .await
    .json()["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A reset link issued by ada for `user`: its secret.
async fn reset(w: &World, user: &str) -> String {
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{user}/reset-link"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    secret_of(&r.json())
}

async fn accept(w: &World, secret: &str) -> u16 {
    w.call(
        "POST",
        "/v1/links/accept",
        None,
        Some(json!({"secret": secret, "password": "a long enough password 2"})),
    )
    .await
    .status
    .as_u16()
}

/// An admin's reset of an existing account ends the user's sessions, revokes the tokens
/// waiting for the user's download (so the admin, signed in through the link, finds none
/// to take), and is in the audit log.
#[tokio::test]
async fn an_admin_reset_ends_sessions_and_voids_pending_downloads() {
    let w = World::new().await;
    let ula = w.uid("ula");
    let session = w.credential(Cred::Session, &ula).await;
    assert_eq!(
        w.call_as("GET", "/v1/session", &session, None).await.status,
        200
    );
    let pending = w.token_in_state(&ula, "pending").await;
    let enabled = w.token_in_state(&ula, "enabled").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{ula}/reset-link"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let secret = secret_of(&r.json());
    // The user's session is over.
    assert_eq!(
        w.call_as("GET", "/v1/session", &session, None).await.status,
        401
    );
    // The pending token is revoked; the downloaded one is untouched.
    assert_eq!(token_status(&w, &pending).await, "revoked");
    assert_eq!(token_status(&w, &enabled).await, "enabled");
    // The admin, signed in as ula through the link, cannot download it.
    let r = w
        .call(
            "POST",
            "/v1/links/accept",
            None,
            Some(json!({"secret": secret, "password": "the admin's guess 123"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let as_ula = Auth {
        bearer: None,
        headers: vec![
            ("cookie".into(), cookie),
            (
                "x-csrf-token".into(),
                r.json()["csrf"].as_str().unwrap().to_string(),
            ),
        ],
    };
    let r = w
        .call_as(
            "POST",
            &format!("/v1/tokens/{pending}/download"),
            &as_ula,
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    // In the audit log, with what it did.
    let log = w
        .call(
            "GET",
            "/v1/audit-log?org=acme&per_page=200",
            Some(&w.jwt("ada")),
            None,
        )
        .await
        .json();
    let entry = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "user.reset_link" && e["target"] == ula.as_str())
        .expect("the reset is in the audit log")
        .clone();
    assert_eq!(entry["detail"]["sessions_ended"], true);
    assert_eq!(entry["detail"]["pending_revoked"], json!([pending]));
}

/// A link is voided by a newer link of the same kind, a password change (through another
/// link), disabling (also after enabling again) and deleting.
#[tokio::test]
async fn links_are_voided_by_newer_links_password_changes_disable_and_delete() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    // A newer reset link voids the older one.
    let ned = w.uid("ned");
    let older = reset(&w, &ned).await;
    let newer = reset(&w, &ned).await;
    assert_eq!(accept(&w, &older).await, 400);
    assert_eq!(accept(&w, &newer).await, 200);
    // A password set through one link voids the others (the invitation here).
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/users",
            Some(&ada),
            Some(json!({"username": "bob", "role": "user"})),
        )
        .await;
    let invitation = secret_of(&r.json());
    let bob = r.json()["id"].as_str().unwrap().to_string();
    let bob_reset = reset(&w, &bob).await;
    assert_eq!(accept(&w, &bob_reset).await, 200);
    assert_eq!(accept(&w, &invitation).await, 400);
    // Disabling voids it, and enabling does not bring it back.
    let uma = w.uid("uma");
    let link = reset(&w, &uma).await;
    for op in ["disable", "enable"] {
        let r = w
            .call("POST", &format!("/v1/users/{uma}/{op}"), Some(&ada), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(accept(&w, &link).await, 400);
    // Deleting voids it.
    let link = reset(&w, &bob).await;
    let r = w
        .call("DELETE", &format!("/v1/users/{bob}"), Some(&ada), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(accept(&w, &link).await, 400);
}

// Lifecycle.

/// A token authenticates only while its user is enabled: an admin cannot enable a
/// disabled user's token, and a token enabled anyway (in the store) is refused at the API
/// and at exchange.
#[tokio::test]
async fn a_disabled_users_token_never_authenticates() {
    let w = World::new().await;
    let ula = w.uid("ula");
    let jwt = w.login(&ula).await;
    assert_eq!(w.call("GET", "/v1/me", Some(&jwt), None).await.status, 200);
    let (_, claims) = common::decode_jwt(&jwt);
    let id = claims["jti"].as_str().unwrap().to_string();
    let ada = w.jwt("ada");
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{ula}/disable"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The admin may not enable the token while its user is disabled.
    for (method, path, body) in [
        ("POST", format!("/v1/tokens/{id}/enable"), None),
        (
            "PATCH",
            format!("/v1/tokens/{id}"),
            Some(json!({"enabled": true})),
        ),
    ] {
        let r = w.call(method, &path, Some(&ada), body).await;
        assert_eq!(r.status, 409, "{path}: {}", r.text());
    }
    // Enabled in the store regardless: still refused while the user is disabled.
    let tid = id.clone();
    w.state
        .write(move |tx, _| {
            let mut t = tx.get_token(&tid)?.unwrap();
            t.enabled = true;
            tx.update_token(&t)?;
            Ok(())
        })
        .await
        .unwrap();
    let r = w.call("GET", "/v1/me", Some(&jwt), None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["reason"], "suspended");
    let r = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": jwt})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // No token is made for a disabled or deleted user.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "for-disabled", "user": ula})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    let ned = w.uid("ned");
    let r = w
        .call("DELETE", &format!("/v1/users/{ned}"), Some(&ada), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "for-deleted", "user": ned})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
}

/// The last enabled admin of an org is neither demoted, disabled nor deleted (409), and
/// disabled or deleted admins do not count.
#[tokio::test]
async fn the_last_enabled_admin_stays() {
    let w = World::new().await;
    let ada = w.uid("ada");
    let root = w.jwt("root-admin");
    // ned becomes an admin, then is deleted; uma becomes an admin, then is disabled.
    for (name, op) in [("ned", "DELETE"), ("uma", "POST")] {
        let id = w.uid(name);
        let r = w
            .call(
                "PATCH",
                &format!("/v1/users/{id}"),
                Some(&w.jwt("ada")),
                Some(json!({"role": "admin"})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let path = if op == "DELETE" {
            format!("/v1/users/{id}")
        } else {
            format!("/v1/users/{id}/disable")
        };
        let r = w.call(op, &path, Some(&w.jwt("ada")), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let refusals = [
        (
            "PATCH",
            format!("/v1/users/{ada}"),
            Some(json!({"role": "user"})),
        ),
        ("POST", format!("/v1/users/{ada}/disable"), None),
        ("DELETE", format!("/v1/users/{ada}"), None),
    ];
    for (method, path, body) in refusals {
        let r = w.call(method, &path, Some(&root), body).await;
        assert_eq!(r.status, 409, "{method} {path}: {}", r.text());
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("is the last enabled admin of acme"),
            "{}",
            r.text()
        );
    }
}

#[tokio::test]
async fn another_orgs_user_id_is_answered_like_an_unknown_one() {
    let w = World::new().await;
    let root = w.jwt("root-admin");
    let r = w
        .call(
            "POST",
            "/v1/orgs",
            Some(&root),
            Some(json!({"id": "globex"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = w
        .call(
            "POST",
            "/v1/orgs/globex/users",
            Some(&root),
            Some(json!({"username": "gus", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let gus = r.json()["user"]["id"]
        .as_str()
        .or(r.json()["id"].as_str())
        .unwrap()
        .to_string();
    // ada administers acme, which has nothing to do with globex: every route that takes
    // a user id answers as it does for an id that was never issued.
    let ada = w.jwt("ada");
    for (method, path, body) in [
        ("GET", format!("/v1/users/{gus}"), None),
        (
            "PATCH",
            format!("/v1/users/{gus}"),
            Some(json!({"display_name": "G"})),
        ),
        (
            "POST",
            format!("/v1/users/{gus}/reset-link"),
            Some(json!({})),
        ),
        ("POST", format!("/v1/users/{gus}/disable"), Some(json!({}))),
        ("DELETE", format!("/v1/users/{gus}"), None),
    ] {
        let r = w.call(method, &path, Some(&ada), body.clone()).await;
        let unknown = w
            .call(
                method,
                &path.replace(&gus, "usr_never_issued"),
                Some(&ada),
                body,
            )
            .await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        assert_eq!(unknown.status, 404, "{method} {path}: {}", unknown.text());
        assert!(
            !r.text().contains("globex"),
            "{method} {path}: {}",
            r.text()
        );
    }
    // By username: ada's own org's users are found by name, gus is not (his name means
    // nothing in acme).
    let r = w.call("GET", "/v1/users/ula", Some(&ada), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], w.uid("ula"));
    let r = w.call("GET", "/v1/users/gus", Some(&ada), None).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // The root admin and globex's own admins still see gus.
    let r = w
        .call("GET", &format!("/v1/users/{gus}"), Some(&root), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------------------------------
// Issue 22: the scope catalogue's routes, every role with every credential, limited and
// unlimited.

/// The scope routes, each on acme's catalogue (a fresh scope per cell where it needs one):
/// list, define, describe, delete, grant to a role, grant to a user, withdraw, the caller's
/// own scopes and ula's.
const SCOPE_ACTIONS: [&str; 9] = [
    "list",
    "define",
    "describe",
    "delete",
    "grant-role",
    "grant-user",
    "withdraw",
    "mine",
    "of-ula",
];

/// (actor, expectation per action in `SCOPE_ACTIONS` order: `y` allowed, `-` 403
/// `forbidden`, `n` 404, `g` allowed to a session and an unlimited token but refused 403
/// `exceeds_creator` naming `grant` to a token limited by an IP filter or a lifetime
/// shorter than the org's longest). Actors: ada = acme admin, ula = acme user, rita = acme
/// readonly, pat = partnerco's partner user, padm = partnerco's admin (partnerco manages
/// acme), root-admin = the root org's admin. The catalogue is its own org's admins' only:
/// neither the managing partner's admins nor the root's manage acme's.
const SCOPE_MATRIX: &[(&str, &str)] = &[
    //               l d u x g G w m o
    ("ada", /*    */ "y y y y g g y y y"),
    ("ula", /*    */ "- - - - - - - y y"),
    ("rita", /*   */ "- - - - - - - y -"),
    ("pat", /*    */ "- - - - - - - y n"),
    ("padm", /*   */ "- - - - - - - y n"),
    ("root-admin", "- - - - - - - y n"),
];

/// A fresh scope in acme's catalogue, granted to the `user` role when `granted`.
async fn fresh_scope(w: &World, granted: bool) -> String {
    let name = w.unique("sc");
    let n = name.clone();
    w.state
        .write(move |tx, ctx| {
            tx.insert_scope(&tessera_control_plane::store::scopes::ScopeRecord {
                org_id: "acme".into(),
                name: n.clone(),
                description: String::new(),
                builtin: false,
                created_at: ctx.now,
            })?;
            if granted {
                tx.insert_grant(&tessera_control_plane::store::scopes::GrantRecord {
                    org_id: "acme".into(),
                    scope: n.clone(),
                    grantee: "role:user".into(),
                    created_at: ctx.now,
                })?;
            }
            Ok::<_, service::Error>(())
        })
        .await
        .unwrap();
    name
}

/// Performs a scope action as `auth`: (status, reason or error, message). A grant that is
/// refused leaves no grant of its scope behind.
async fn scope_action(w: &World, auth: &Auth, action: &str) -> (u16, String, String) {
    let mut granting = None;
    let cat = "/v1/orgs/acme/scopes";
    let r = match action {
        "list" => w.call_as("GET", cat, auth, None).await,
        "define" => {
            w.call_as(
                "POST",
                cat,
                auth,
                Some(json!({"name": w.unique("def"), "description": "d"})),
            )
            .await
        }
        "describe" => {
            let s = fresh_scope(w, false).await;
            w.call_as(
                "PATCH",
                &format!("{cat}/{s}"),
                auth,
                Some(json!({"description": "changed"})),
            )
            .await
        }
        "delete" => {
            let s = fresh_scope(w, true).await;
            w.call_as("DELETE", &format!("{cat}/{s}"), auth, None).await
        }
        "grant-role" => {
            let s = fresh_scope(w, false).await;
            granting = Some(s.clone());
            w.call_as(
                "POST",
                &format!("{cat}/{s}/grant"),
                auth,
                Some(json!({"role": "user"})),
            )
            .await
        }
        "grant-user" => {
            let s = fresh_scope(w, false).await;
            granting = Some(s.clone());
            w.call_as(
                "POST",
                &format!("{cat}/{s}/grant"),
                auth,
                Some(json!({"user": "ula"})),
            )
            .await
        }
        "withdraw" => {
            let s = fresh_scope(w, true).await;
            w.call_as(
                "POST",
                &format!("{cat}/{s}/withdraw"),
                auth,
                Some(json!({"role": "user"})),
            )
            .await
        }
        "mine" => w.call_as("GET", "/v1/me/scopes", auth, None).await,
        "of-ula" => {
            w.call_as(
                "GET",
                &format!("/v1/users/{}/scopes", w.uid("ula")),
                auth,
                None,
            )
            .await
        }
        other => panic!("no scope action {other}"),
    };
    if let Some(scope) = granting.filter(|_| !r.status.is_success()) {
        let grants = w
            .state
            .read(|tx, _| Ok::<_, service::Error>(tx.list_grants("acme")?))
            .await
            .unwrap();
        assert!(
            !grants.iter().any(|g| g.scope == scope),
            "a refused grant of {scope} was made: {}",
            r.text()
        );
    }
    let v = r.json();
    (
        r.status.as_u16(),
        v["reason"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or("")
            .to_string(),
        v["message"].as_str().unwrap_or("").to_string(),
    )
}

/// Every scope route × every role × every credential (a session; tokens unlimited, limited
/// by an IP filter, by a 30-day lifetime, by scopes; a token without the management scope;
/// an access token): each cell's status, reason and, for a limit, the message naming it.
/// Defining, describing, deleting and withdrawing give nobody anything, so any credential
/// of an org admin may; a grant widens what the grantee's tokens carry, from any address
/// and with no end, so only a session or an unlimited token gives one.
#[tokio::test]
async fn every_scope_route_with_every_role_and_credential() {
    let mut w = World::new().await;
    let r = w
        .call(
            "POST",
            "/v1/orgs/partnerco/users",
            Some(&w.jwt("root-admin")),
            Some(json!({"username": "padm", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let padm = r.json()["id"].as_str().unwrap().to_string();
    w.users.insert("padm".into(), padm);
    let mut wrong = Vec::new();
    let mut cells = 0;
    for kind in ACTING {
        for (actor, row) in SCOPE_MATRIX {
            let expect: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(expect.len(), SCOPE_ACTIONS.len(), "row {actor}");
            let auth = acting(&w, kind, actor).await;
            for (action, e) in SCOPE_ACTIONS.iter().zip(expect) {
                let ok = if action.starts_with("define") {
                    201
                } else {
                    200
                };
                let limit = match kind {
                    Acting::LimitedIp => "grant: a scope grant works from any address",
                    _ => "grant: a scope grant does not expire",
                };
                let want: (u16, &str, &str) = match (kind, e) {
                    (Acting::NoManage, _) => (403, "management_scope_required", ""),
                    (Acting::Access, _) => (403, "access_token_not_allowed", ""),
                    (Acting::LimitedIp | Acting::Limited30Days, "g") => {
                        (403, "exceeds_creator", limit)
                    }
                    (_, "y" | "g") => (ok, "", ""),
                    (_, "n") => (404, "not_found", ""),
                    _ => (403, "forbidden", ""),
                };
                let got = scope_action(&w, &auth, action).await;
                cells += 1;
                if got.0 != want.0 || got.1 != want.1 || !got.2.starts_with(want.2) {
                    wrong.push(format!(
                        "{kind:?} {actor} {action}: got {got:?}, want {want:?}"
                    ));
                }
            }
        }
    }
    assert_eq!(
        cells,
        ACTING.len() * SCOPE_MATRIX.len() * SCOPE_ACTIONS.len()
    );
    assert!(
        wrong.is_empty(),
        "{} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
