//! People and credentials through the HTTP API: what a token may make, delegation, the
//! audit log's reader and its acting credential, disabled and deleted users, edge
//! credentials, passwords, links, sessions (cookie, CSRF, timeouts, sign-out) and
//! sign-in throttling.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Auth, Cred, World};
use serde_json::{json, Value};

/// A token with these scopes and IP filter, made for and downloaded by `user`.
async fn token_with(
    w: &World,
    user: &str,
    scopes: &[&str],
    ip: &[&str],
    days: i64,
) -> (String, String) {
    let ada = w.jwt("ada");
    let uid = w.uid(user);
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": w.unique("t"), "user": uid, "scopes": scopes, "ip_allow": ip, "lifetime_days": days})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let own = w.jwt(user);
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&own),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    (id, r.json()["jwt"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_token_never_makes_a_stronger_token() {
    let w = World::new().await;
    let (_, creator) =
        token_with(&w, "ada", &["read", "tessera:manage"], &["10.0.0.0/8"], 30).await;
    // (body, expected status, reason)
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"scopes": ["read"], "ip_allow": ["10.1.0.0/16"], "lifetime_days": 30}),
            201,
            "",
        ),
        (
            json!({"scopes": ["read", "write"], "ip_allow": ["10.1.0.0/16"], "lifetime_days": 30}),
            403,
            "exceeds_creator",
        ),
        (
            json!({"scopes": ["read"], "ip_allow": [], "lifetime_days": 30}),
            403,
            "exceeds_creator",
        ),
        (
            json!({"scopes": ["read"], "ip_allow": ["11.0.0.0/8"], "lifetime_days": 30}),
            403,
            "exceeds_creator",
        ),
        (
            json!({"scopes": ["read"], "ip_allow": ["10.0.0.0/7"], "lifetime_days": 30}),
            403,
            "exceeds_creator",
        ),
        (
            json!({"scopes": ["read"], "ip_allow": ["10.0.0.1"], "lifetime_days": 60}),
            403,
            "exceeds_creator",
        ),
    ];
    for (mut body, status, reason) in cases {
        body["name"] = json!(w.unique("child"));
        let r = w
            .call("POST", "/v1/tokens", Some(&creator), Some(body.clone()))
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        if !reason.is_empty() {
            assert_eq!(r.json()["reason"], reason, "{body}");
        }
    }
    // Editing a token through a token is bounded the same way.
    let r = w
        .call("POST", "/v1/tokens", Some(&creator), Some(json!({"name": "kid", "scopes": ["read"], "ip_allow": ["10.2.0.0/16"], "lifetime_days": 30})))
        .await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = w
        .call(
            "PATCH",
            &format!("/v1/tokens/{id}"),
            Some(&creator),
            Some(json!({"ip_allow": []})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (403, json!("exceeds_creator"))
    );
    // A session is bounded only by the role and the org.
    let (cookie, csrf) = w.session(&w.uid("ula")).await;
    let session = Auth {
        bearer: None,
        headers: vec![("cookie".into(), cookie), ("x-csrf-token".into(), csrf)],
    };
    let r = w
        .call_as(
            "POST",
            "/v1/tokens",
            &session,
            Some(json!({"name": "wide", "scopes": ["write"], "lifetime_days": 365})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn the_audit_log_names_the_acting_credential() {
    let w = World::new().await;
    let (token_id, jwt) = token_with(&w, "ada", &["read", "tessera:manage"], &[], 365).await;
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&jwt),
            Some(json!({"name": "by-token", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let made = r.json()["id"].as_str().unwrap().to_string();
    let session = w.credential(Cred::Session, &w.uid("ada")).await;
    let r = w
        .call_as(
            "POST",
            "/v1/tokens",
            &session,
            Some(json!({"name": "by-session", "scopes": ["read"]})),
        )
        .await;
    let by_session = r.json()["id"].as_str().unwrap().to_string();
    let r = w.call_as("GET", "/v1/session", &session, None).await;
    let session_id = r.json()["session"].as_str().unwrap().to_string();
    let log = w
        .call("GET", "/v1/audit-log?per_page=100", Some(&jwt), None)
        .await
        .json();
    let cred_of = |target: &str| {
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["target"] == target && e["action"] == "token.create")
            .map(|e| e["credential"].as_str().unwrap().to_string())
    };
    assert_eq!(cred_of(&made), Some(format!("token:{token_id}")));
    assert_eq!(cred_of(&by_session), Some(format!("session:{session_id}")));
}

#[tokio::test]
async fn delegation_is_the_customers_and_so_is_the_audit_log() {
    let w = World::new().await;
    let root = w.jwt("root-admin");
    // An admin of the partner org.
    let r = w
        .call(
            "POST",
            "/v1/orgs/partnerco/users",
            Some(&root),
            Some(json!({"username": "padmin", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let padmin = w.login(r.json()["id"].as_str().unwrap()).await;
    let uma = w.uid("uma");
    let path = format!("/v1/users/{uma}");
    let patch = |v: bool| Some(json!({"delegated": v}));
    let r = w
        .call("PATCH", &path, Some(&w.jwt("uma")), patch(false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (who, jwt) in [("partner admin", &padmin), ("root admin", &root)] {
        let r = w.call("PATCH", &path, Some(jwt), patch(true)).await;
        assert_eq!(r.status, 403, "{who}: {}", r.text());
        let r = w
            .call("GET", "/v1/audit-log?org=acme", Some(jwt), None)
            .await;
        assert_eq!(r.status, 403, "{who} reads acme's audit log: {}", r.text());
    }
    // The customer's own admin may.
    let r = w
        .call("PATCH", &path, Some(&w.jwt("ada")), patch(true))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call("GET", "/v1/audit-log?org=acme", Some(&w.jwt("ada")), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn disabled_users_are_suspended_and_deleted_ones_revoked() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let (ula, ula_jwt) = (w.uid("ula"), w.jwt("ula"));
    let session = w.credential(Cred::Session, &ula).await;
    assert_eq!(
        w.call("GET", "/v1/me", Some(&ula_jwt), None).await.status,
        200
    );
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{ula}/disable"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "disabled");
    let r = w.call("GET", "/v1/me", Some(&ula_jwt), None).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (401, json!("suspended"))
    );
    assert_eq!(
        w.call_as("GET", "/v1/session", &session, None).await.status,
        401
    );
    let r = w
        .call("POST", &format!("/v1/users/{ula}/enable"), Some(&ada), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        w.call("GET", "/v1/me", Some(&ula_jwt), None).await.status,
        200
    );

    let (ned, ned_jwt) = (w.uid("ned"), w.jwt("ned"));
    let r = w
        .call("DELETE", &format!("/v1/users/{ned}"), Some(&ada), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w.call("GET", "/v1/me", Some(&ned_jwt), None).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["reason"].clone()),
        (401, json!("revoked"))
    );
    let users = w
        .call("GET", "/v1/orgs/acme/users", Some(&ada), None)
        .await
        .json();
    assert!(!users["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["id"] == ned.as_str()));
    assert_eq!(
        w.call("GET", &format!("/v1/users/{ned}"), Some(&ada), None)
            .await
            .status,
        404
    );
    // The name is free again (issue 24: a deleted username could not be reused); the
    // logs still name the deleted user, as deleted.
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/users",
            Some(&ada),
            Some(json!({"username": "ned", "role": "user"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_ne!(r.json()["id"], ned.as_str());
    let audit = w
        .call("GET", "/v1/audit-log?per_page=200", Some(&ada), None)
        .await
        .json();
    let deleted = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "user.delete" && e["target"] == ned.as_str())
        .unwrap_or_else(|| panic!("no user.delete of {ned} in {audit}"));
    assert_eq!(deleted["target_name"], "ned (deleted)", "{deleted}");
    // Only an admin of the org, never the user themselves.
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{ula}/disable"),
            Some(&w.jwt("ula")),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn a_revoked_edge_credential_stops_reporting_at_once() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/edge-credentials",
            Some(&ada),
            Some(json!({"name": "edge-1"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (id, secret) = (
        r.json()["id"].as_str().unwrap().to_string(),
        r.json()["secret"].as_str().unwrap().to_string(),
    );
    let list = w
        .call("GET", "/v1/orgs/acme/edge-credentials", Some(&ada), None)
        .await
        .json();
    assert_eq!(list["edges"][0]["id"], id.as_str());
    assert!(list["edges"][0].get("secret").is_none());
    let usage = json!({"events": []});
    assert_eq!(
        w.call("POST", "/v1/usage", Some(&secret), Some(usage.clone()))
            .await
            .status,
        200
    );
    let r = w
        .call(
            "POST",
            &format!("/v1/orgs/acme/edge-credentials/{id}/revoke"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["revoked_at"].is_string());
    assert_eq!(
        w.call("POST", "/v1/usage", Some(&secret), Some(usage))
            .await
            .status,
        401
    );
}

fn cookie_of(r: &common::Resp) -> String {
    r.headers["set-cookie"].to_str().unwrap().to_string()
}

async fn sign_in(w: &World, org: &str, user: &str, password: &str) -> common::Resp {
    w.call(
        "POST",
        "/v1/session",
        None,
        Some(json!({"org": org, "username": user, "password": password})),
    )
    .await
}

#[tokio::test]
async fn invitation_password_sign_in_and_out() {
    let w = World::new().await;
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/users",
            Some(&w.jwt("ada")),
            Some(json!({"username": "bob", "role": "user"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["state"], "invited");
    assert_eq!(v["link"]["kind"], "invite");
    // Seven days by default.
    let expires =
        tessera_control_plane::timefmt::parse(v["link"]["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - w.now(), 7 * 86_400);
    let url = v["link"]["url"].as_str().unwrap();
    assert!(url.starts_with("http://cp.test/#/invite/"), "{url}");
    let secret = url.rsplit('/').next().unwrap();
    let short = w
        .call(
            "POST",
            "/v1/links/accept",
            None,
            Some(json!({"secret": secret, "password": "short"})),
        )
        .await;
    assert_eq!(short.status, 400);
    assert!(
        short
            .text()
            .contains("password: too short: at least 10 characters"),
        "{}",
        short.text()
    );
    let r = w
        .call(
            "POST",
            "/v1/links/accept",
            None,
            Some(json!({"secret": secret, "password": "bob's long password"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let set = cookie_of(&r);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "http base URL: {set}");
    // Single use.
    let again = w
        .call(
            "POST",
            "/v1/links/accept",
            None,
            Some(json!({"secret": secret, "password": "bob's long password"})),
        )
        .await;
    assert_eq!(again.status, 400);
    // Sign in with the password; sign out ends the session on the server.
    let r = sign_in(&w, "acme", "bob", "bob's long password").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = Auth {
        bearer: None,
        headers: vec![
            (
                "cookie".into(),
                cookie_of(&r).split(';').next().unwrap().to_string(),
            ),
            (
                "x-csrf-token".into(),
                r.json()["csrf"].as_str().unwrap().to_string(),
            ),
        ],
    };
    assert_eq!(
        w.call_as("GET", "/v1/session", &auth, None).await.status,
        200
    );
    let r = w.call_as("DELETE", "/v1/session", &auth, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        w.call_as("GET", "/v1/session", &auth, None).await.status,
        401
    );
    // Every attempt is in the audit log.
    let log = w
        .call(
            "GET",
            "/v1/audit-log?per_page=100",
            Some(&w.jwt("ada")),
            None,
        )
        .await
        .json();
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["session.sign_in", "session.sign_out", "user.password_set"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}

#[tokio::test]
async fn an_expired_invitation_is_refused() {
    let w = World::new().await;
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/users",
            Some(&w.jwt("ada")),
            Some(json!({"username": "late", "role": "user", "invite_days": 1})),
        )
        .await;
    let secret = r.json()["link"]["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    w.advance(86_400);
    let r = w
        .call(
            "POST",
            "/v1/links/accept",
            None,
            Some(json!({"secret": secret, "password": "a long password"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("expired"), "{}", r.text());
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/users",
            Some(&w.jwt("ada")),
            Some(json!({"username": "x", "role": "user", "invite_days": 31})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invite_days"), "{}", r.text());
}

#[tokio::test]
async fn wrong_user_and_wrong_password_answer_alike_and_are_throttled() {
    let w = World::new().await;
    w.session(&w.uid("ula")).await; // sets ula's password: "a long enough password"
    let wrong_pw = sign_in(&w, "acme", "ula", "not the password").await;
    let wrong_user = sign_in(&w, "acme", "nobody", "not the password").await;
    let wrong_org = sign_in(&w, "nowhere", "ula", "not the password").await;
    assert_eq!(wrong_pw.status, 401);
    assert_eq!(
        (wrong_pw.status, wrong_pw.body.clone()),
        (wrong_user.status, wrong_user.body.clone())
    );
    assert_eq!(
        (wrong_pw.status, wrong_pw.body.clone()),
        (wrong_org.status, wrong_org.body.clone())
    );
    // Two more failures: then every attempt waits, with growing delays.
    sign_in(&w, "acme", "ula", "not the password").await;
    sign_in(&w, "acme", "ula", "not the password").await;
    let r = sign_in(&w, "acme", "ula", "a long enough password").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.headers["retry-after"], "1");
    w.advance(1);
    assert_eq!(sign_in(&w, "acme", "ula", "wrong again").await.status, 401);
    let r = sign_in(&w, "acme", "ula", "a long enough password").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "2");
    w.advance(2);
    let r = sign_in(&w, "acme", "ula", "a long enough password").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let log = w
        .call(
            "GET",
            "/v1/audit-log?per_page=100",
            Some(&w.jwt("ada")),
            None,
        )
        .await
        .json();
    let failed = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "session.sign_in_failed")
        .count();
    assert_eq!(
        failed, 5,
        "every failure of acme's accounts is in acme's audit log"
    );
}

#[tokio::test]
async fn csrf_and_session_timeouts() {
    let w = World::new().await;
    let (cookie, csrf) = w.session(&w.uid("ula")).await;
    let with = |csrf: Option<&str>| Auth {
        bearer: None,
        headers: std::iter::once(("cookie".to_string(), cookie.clone()))
            .chain(csrf.map(|c| ("x-csrf-token".to_string(), c.to_string())))
            .collect(),
    };
    let body = || Some(json!({"name": w.unique("c"), "scopes": ["read"]}));
    for bad in [None, Some("0000")] {
        let r = w.call_as("POST", "/v1/tokens", &with(bad), body()).await;
        assert_eq!(
            (r.status.as_u16(), r.json()["reason"].clone()),
            (403, json!("csrf_token_invalid"))
        );
    }
    assert_eq!(
        w.call_as("POST", "/v1/tokens", &with(Some(&csrf)), body())
            .await
            .status,
        201
    );
    // Idle: used every 29 minutes the session lives; 30 idle minutes end it.
    for _ in 0..3 {
        w.advance(29 * 60);
        assert_eq!(
            w.call_as("GET", "/v1/tokens", &with(None), None)
                .await
                .status,
            200
        );
    }
    w.advance(30 * 60);
    assert_eq!(
        w.call_as("GET", "/v1/tokens", &with(None), None)
            .await
            .status,
        401
    );
    // Absolute: 12 hours whatever the use.
    let (cookie, _) = w.session(&w.uid("ula")).await;
    let auth = Auth {
        bearer: None,
        headers: vec![("cookie".into(), cookie)],
    };
    for _ in 0..24 {
        assert_eq!(w.call_as("GET", "/v1/me", &auth, None).await.status, 200);
        w.advance(29 * 60 + 59);
    }
    w.advance(60);
    assert_eq!(w.call_as("GET", "/v1/me", &auth, None).await.status, 401);
}

#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    use tessera_control_plane::crypto::MasterKey;
    use tessera_control_plane::{app, AppState, Config};
    let (store, _db) = common::backend::world_store().await;
    let state = AppState::new(
        store,
        Config {
            base_url: "https://cp.example".into(),
            master: MasterKey::generate().unwrap(),
            access_ttl: 1800,
        },
    );
    let b = state
        .write(|tx, ctx| {
            tessera_control_plane::service::orgs::bootstrap(
                tx,
                ctx,
                "root",
                "",
                "admin",
                tessera_control_plane::model::KeyAlg::EdDSA,
            )
        })
        .await
        .unwrap();
    assert!(b.link.url.starts_with("https://cp.example/#/bootstrap/"));
    let secret = b.link.url.rsplit('/').next().unwrap();
    use tower::ServiceExt;
    let req = axum::http::Request::post("/v1/links/accept")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"secret": secret, "password": "the admin's password"}).to_string(),
        ))
        .unwrap();
    let resp = app(state).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let set = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("; Secure") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
}

#[tokio::test]
async fn ended_sessions_old_throttles_and_links_are_pruned() {
    use tessera_control_plane::service::sessions;
    let w = World::new().await;
    let (cookie, _) = w.session(&w.uid("ula")).await;
    async fn me(w: &World, cookie: String) -> u16 {
        w.raw(
            "GET",
            "/v1/me",
            None,
            "",
            Vec::new(),
            &[("cookie", &cookie)],
        )
        .await
        .status
        .as_u16()
    }
    async fn throttles(w: &World) -> usize {
        w.state
            .read(|tx, _| {
                let mut n = 0;
                for k in ["user:acme/ula", "addr:127.0.0.1"] {
                    n += usize::from(tx.get_throttle(k)?.is_some());
                }
                Ok(n)
            })
            .await
            .unwrap()
    }
    // A failed sign-in leaves throttle rows.
    let r = sign_in(&w, "acme", "ula", "not ula's password at all").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(throttles(&w).await >= 1);
    // Nothing is pruned while it is in use.
    assert_eq!(w.state.write(sessions::prune).await.unwrap(), 0);
    assert_eq!(me(&w, cookie.clone()).await, 200);
    // Past the absolute timeout, the forget time and the links' keep time, all of it goes:
    // the session, the throttle rows, the used link.
    w.advance(sessions::KEEP_LINKS_SECS + 86_400);
    let n = w.state.write(sessions::prune).await.unwrap();
    assert!(n >= 3, "pruned {n} rows");
    assert_eq!(throttles(&w).await, 0);
    assert_eq!(me(&w, cookie).await, 401);
}
