//! First run in the browser (issue 24): the one-time setup link `tessera serve` issues on
//! an empty database, and `POST /v1/setup`, which creates the first organization and its
//! admin once. On SQLite, and on PostgreSQL when `TESSERA_TEST_POSTGRES` names a server
//! (as every suite built on `common::backend`).
// Test code may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backend, send, Resp, BASE, T0};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tessera_control_plane::api::limit::RateLimit;
use tessera_control_plane::crypto::MasterKey;
use tessera_control_plane::model::KeyAlg;
use tessera_control_plane::service::{self, setup};
use tessera_control_plane::{app, AppState, Config};

const PW: &str = "correct horse battery staple";

/// A control plane on an empty database (no organization), with a movable clock.
struct Empty {
    state: AppState,
    app: axum::Router,
    clock: Arc<AtomicI64>,
    _db: Option<backend::TestDb>,
}

impl Empty {
    async fn new(rate: Option<RateLimit>) -> Empty {
        let clock = Arc::new(AtomicI64::new(T0));
        let c = clock.clone();
        let (store, db) = backend::world_store().await;
        let mut state = AppState::with_clock(
            store,
            Config {
                base_url: BASE.into(),
                master: MasterKey::generate().unwrap(),
                access_ttl: 1800,
            },
            Box::new(move || c.load(Ordering::SeqCst)),
        );
        if let Some(rate) = rate {
            state = state.with_rate_limit(rate);
        }
        Empty {
            app: app(state.clone()),
            state,
            clock,
            _db: db,
        }
    }

    /// What `tessera serve` does at start on an empty database: a new setup secret (the
    /// link's fragment), or `None` once an organization exists.
    async fn issue(&self) -> Option<String> {
        let issued = self.state.write(setup::issue).await.unwrap();
        issued.map(|(link, _)| {
            let prefix = format!("{BASE}/#/setup/");
            assert!(link.starts_with(&prefix), "{link}");
            link[prefix.len()..].to_string()
        })
    }

    async fn post(&self, body: Value) -> Resp {
        send(
            &self.app,
            "POST",
            "/v1/setup",
            None,
            "application/json",
            body.to_string().into_bytes(),
            &[],
        )
        .await
    }

    async fn needed(&self) -> bool {
        let r = send(&self.app, "GET", "/v1/setup", None, "", vec![], &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["needed"].as_bool().unwrap()
    }

    async fn org_ids(&self) -> Vec<String> {
        self.state
            .read(|tx, _| Ok(tx.list_orgs()?.into_iter().map(|o| o.id).collect()))
            .await
            .unwrap()
    }
}

fn body(secret: &str, org: &str, username: &str) -> Value {
    json!({"secret": secret, "org": org, "org_name": "Acme Inc.", "username": username,
           "email": "alice@example.com", "password": PW})
}

/// (status, message) of a refusal.
fn refused(r: &Resp) -> (u16, String) {
    (
        r.status.as_u16(),
        r.json()["message"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn setup_works_once_and_names_bad_input() {
    let e = Empty::new(None).await;
    assert!(e.needed().await);
    // No secret issued yet: nothing to use.
    let r = e.post(body(&"ab".repeat(32), "acme", "alice")).await;
    assert_eq!(
        refused(&r),
        (400, format!("secret: {}", setup::SETUP_UNUSABLE))
    );

    let secret = e.issue().await.unwrap();
    // Only the secret's SHA-256 is stored.
    let stored = e
        .state
        .read(|tx, _| Ok(tx.get_setting(setup::SETTING)?))
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.contains(&secret), "{stored}");
    assert!(
        stored.contains(&tessera_control_plane::crypto::sha256_hex(
            secret.as_bytes()
        )),
        "{stored}"
    );

    // Each bad input is refused naming its field and what is allowed; none uses the link.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"org": "Acme Inc"}), "org: 1-63 characters of a-z"),
        (json!({"org": ""}), "org: 1-63 characters of a-z"),
        (json!({"username": "a b"}), "username: 1-64 characters"),
        (
            json!({"email": "not-an-address"}),
            "email: not an email address",
        ),
        (json!({"org_name": "a\u{202e}b"}), "org_name: "),
        (
            json!({"password": "short"}),
            "password: too short: at least 10 characters",
        ),
        (json!({"password": ""}), "password: must not be empty"),
        (
            json!({"password": "aaaaaaaaaaaaaaaa"}),
            "password: too weak",
        ),
        (json!({"password": "alicealicealice"}), "password: too weak"),
        (
            json!({"secret": "cd".repeat(32)}),
            "secret: this setup link is not valid",
        ),
        (
            json!({"secret": ""}),
            "secret: this setup link is not valid",
        ),
    ];
    for (change, want) in cases {
        let mut b = body(&secret, "acme", "alice");
        for (k, v) in change.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = e.post(b.clone()).await;
        let (status, msg) = refused(&r);
        assert_eq!(status, 400, "{b}: {}", r.text());
        assert!(msg.starts_with(want), "{b}: {msg:?}, want {want:?}");
    }
    // An unknown field is named too.
    let mut b = body(&secret, "acme", "alice");
    b["role"] = json!("admin");
    let r = e.post(b).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("role"), "{}", r.text());
    assert!(e.org_ids().await.is_empty());

    // The form's answer: the admin, signed in (session cookie, CSRF token).
    let r = e.post(body(&secret, "acme", "alice")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["user"]["username"], "alice");
    assert_eq!(v["user"]["role"], "admin");
    assert_eq!(v["org"]["id"], "acme");
    assert_eq!(v["org"]["name"], "Acme Inc.");
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let cookie = cookie.split(';').next().unwrap().to_string();
    let csrf = v["csrf"].as_str().unwrap().to_string();
    let session = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let r = send(&e.app, "GET", "/v1/session", None, "", vec![], &session).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!e.needed().await);

    // The first org is the root one; its admin manages it with the session (a token).
    let orgs = e.state.read(|tx, _| Ok(tx.list_orgs()?)).await.unwrap();
    assert_eq!(orgs.len(), 1);
    assert!(orgs[0].is_root && orgs[0].is_partner, "{:?}", orgs[0]);
    let r = send(
        &e.app,
        "POST",
        "/v1/tokens",
        None,
        "application/json",
        json!({"name": "first"}).to_string().into_bytes(),
        &session,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // The address given is the admin's own mail address.
    let r = send(
        &e.app,
        "GET",
        "/v1/me/notifications",
        None,
        "",
        vec![],
        &session,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["email"], "alice@example.com");
    // The audit log tells how the org and its admin came to be.
    let r = send(
        &e.app,
        "GET",
        "/v1/audit-log?org=acme",
        None,
        "",
        vec![],
        &session,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let actions: Vec<String> = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["action"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "org.create",
        "user.create",
        "setup.complete",
        "session.sign_in",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }

    // Used: the same secret again is refused, and so is any setup once an org exists; a
    // restart issues no new secret.
    let r = e.post(body(&secret, "other", "bob")).await;
    assert_eq!(refused(&r), (409, setup::ALREADY_SET_UP.to_string()));
    assert_eq!(e.issue().await, None);
    assert_eq!(e.org_ids().await, vec!["acme".to_string()]);
}

#[tokio::test]
async fn a_setup_link_expires_and_a_restart_replaces_it() {
    let e = Empty::new(None).await;
    let first = e.issue().await.unwrap();
    e.clock
        .fetch_add(setup::SETUP_SECS, std::sync::atomic::Ordering::SeqCst);
    let r = e.post(body(&first, "acme", "alice")).await;
    assert_eq!(
        refused(&r),
        (400, format!("secret: {}", setup::SETUP_EXPIRED))
    );
    // A restart on the still-empty database prints a new link; the old one is void.
    let second = e.issue().await.unwrap();
    assert_ne!(first, second);
    let r = e.post(body(&first, "acme", "alice")).await;
    assert_eq!(
        refused(&r),
        (400, format!("secret: {}", setup::SETUP_UNUSABLE))
    );
    let r = e.post(body(&second, "acme", "alice")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn setup_is_refused_once_bootstrap_made_an_organization() {
    let e = Empty::new(None).await;
    let secret = e.issue().await.unwrap();
    e.state
        .write(|tx, ctx| {
            service::orgs::bootstrap(tx, ctx, "root", "Root", "root-admin", KeyAlg::EdDSA)
        })
        .await
        .unwrap();
    let r = e.post(body(&secret, "acme", "alice")).await;
    assert_eq!(refused(&r), (409, setup::ALREADY_SET_UP.to_string()));
    assert!(!e.needed().await);
    // Bootstrap voided the secret as well.
    let stored: Value = serde_json::from_str(
        &e.state
            .read(|tx, _| Ok(tx.get_setting(setup::SETTING)?))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["used_at"], json!(T0), "{stored}");
    assert_eq!(e.org_ids().await, vec!["root".to_string()]);
}

/// Two uses of one link at once (each with its own organization) make one organization:
/// the write checks the secret again under the setup row's lock.
#[tokio::test]
async fn two_setups_at_once_make_one_organization() {
    let e = Empty::new(None).await;
    let secret = e.issue().await.unwrap();
    let (a, b) = tokio::join!(
        e.post(body(&secret, "first", "alice")),
        e.post(body(&secret, "second", "bob"))
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", a.text(), b.text());
    let orgs = e.org_ids().await;
    assert_eq!(orgs.len(), 1, "{orgs:?}");
}

/// The route is under the per-address rate limit of unauthenticated requests: past the
/// burst even a right secret is answered 429 before anything is looked at.
#[tokio::test]
async fn setup_is_rate_limited_per_address() {
    let e = Empty::new(Some(RateLimit {
        per_minute: 1,
        burst: 3,
    }))
    .await;
    let secret = e.issue().await.unwrap();
    for _ in 0..3 {
        let r = e.post(body(&"ef".repeat(32), "acme", "alice")).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    let r = e.post(body(&secret, "acme", "alice")).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    assert!(e.org_ids().await.is_empty());
    // The sign-in page's question is not counted against the address.
    assert!(e.needed().await);
}
