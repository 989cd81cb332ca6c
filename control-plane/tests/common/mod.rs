//! Shared fixtures: an in-memory control plane with a movable clock, a few orgs and users
//! with Tessera tokens, and a one-call request helper.
#![allow(dead_code)]

pub mod backend;
pub mod scanner;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tessera_control_plane::crypto::MasterKey;
use tessera_control_plane::model::{KeyAlg, Role};
use tessera_control_plane::policy::{Actor, Credential};
use tessera_control_plane::service;
use tessera_control_plane::store::scopes::{GrantRecord, ScopeRecord};
use tessera_control_plane::store::Tx;
use tessera_control_plane::{app, AppState, Config};
use tower::ServiceExt;

pub const BASE: &str = "http://cp.test";
pub const T0: i64 = 1_800_000_000;

pub struct World {
    pub state: AppState,
    pub app: Router,
    pub clock: Arc<AtomicI64>,
    /// username → user id
    pub users: HashMap<String, String>,
    /// username → a Tessera token of that user
    pub jwts: HashMap<String, String>,
    counter: AtomicI64,
    /// The PostgreSQL database of this world (dropped last, after the store).
    _db: Option<backend::TestDb>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Builds an actor for `user_id` straight from the store (fixture setup only).
pub fn actor(tx: &mut dyn Tx, user_id: &str) -> Actor {
    let user = tx.get_user(user_id).unwrap().unwrap();
    let org = tx.get_org(&user.org_id).unwrap().unwrap();
    Actor {
        user,
        org,
        token_id: String::new(),
        credential: Credential::Internal,
    }
}

/// The scopes every org of the [`World`] has in its catalogue, granted to every role.
pub const FIXTURE_SCOPES: [&str; 4] = ["read", "write", "admin", "*"];

/// Puts [`FIXTURE_SCOPES`] in the org's catalogue, granted to every role (for orgs the
/// tests make themselves, the fixtures' tokens call this first).
pub fn fixture_scopes(tx: &mut dyn Tx, org: &str, now: i64) {
    grant_to_every_role(tx, org, &FIXTURE_SCOPES, now);
}

/// Puts `scopes` in the org's catalogue (if missing), granted to every role.
pub fn grant_to_every_role(tx: &mut dyn Tx, org: &str, scopes: &[impl AsRef<str>], now: i64) {
    for scope in scopes {
        let scope = scope.as_ref();
        if tx.get_scope(org, scope).unwrap().is_none() {
            tx.insert_scope(&ScopeRecord {
                org_id: org.into(),
                name: scope.into(),
                description: String::new(),
                builtin: false,
                created_at: now,
            })
            .unwrap();
        }
        for role in ["admin", "user", "partner", "readonly"] {
            tx.insert_grant(&GrantRecord {
                org_id: org.into(),
                scope: scope.into(),
                grantee: format!("role:{role}"),
                created_at: now,
            })
            .unwrap();
        }
    }
}

impl World {
    /// Orgs: `root` (bootstrap; admin `root-admin`), partner org `partnerco` (partner user
    /// `pat`, user `pam`), customer org `acme` managed by partnerco (admin `ada`, users
    /// `ula`, `ned`, delegating user `uma`, readonly `rita`).
    pub async fn new() -> World {
        let clock = Arc::new(AtomicI64::new(T0));
        let c = clock.clone();
        let (store, db) = backend::world_store().await;
        let state = AppState::with_clock(
            store,
            Config {
                base_url: BASE.into(),
                master: MasterKey::generate().unwrap(),
                access_ttl: 1800,
            },
            Box::new(move || c.load(Ordering::SeqCst)),
        );
        let b = state
            .write(|tx, ctx| {
                service::orgs::bootstrap(tx, ctx, "root", "Root", "root-admin", KeyAlg::EdDSA)
            })
            .await
            .unwrap();
        let mut w = World {
            app: app(state.clone()),
            state,
            clock,
            users: HashMap::new(),
            jwts: HashMap::new(),
            counter: AtomicI64::new(0),
            _db: db,
        };
        w.users.insert("root-admin".into(), b.user.id.clone());
        w.jwts.insert("root-admin".into(), b.jwt);
        let root = w.jwts["root-admin"].clone();
        let r = w
            .call(
                "POST",
                "/v1/orgs",
                Some(&root),
                Some(json!({"id": "partnerco", "partner": true})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let r = w
            .call(
                "POST",
                "/v1/orgs",
                Some(&root),
                Some(json!({"id": "acme", "managed_by": "partnerco"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        // The scopes the suites put on tokens, in every org's catalogue, granted to every
        // role (written to the store, as the orgs' admins would through the API).
        w.state
            .write(|tx, ctx| {
                for org in ["root", "partnerco", "acme"] {
                    fixture_scopes(tx, org, ctx.now);
                }
                Ok::<_, service::Error>(())
            })
            .await
            .unwrap();
        for (org, name, role, delegated) in [
            ("partnerco", "pat", "partner", false),
            ("partnerco", "pam", "user", false),
            ("acme", "ada", "admin", false),
            ("acme", "ula", "user", false),
            ("acme", "ned", "user", false),
            ("acme", "uma", "user", true),
            ("acme", "rita", "readonly", false),
        ] {
            let r = w
                .call(
                    "POST",
                    &format!("/v1/orgs/{org}/users"),
                    Some(&root),
                    Some(json!({"username": name, "role": role, "delegated": delegated})),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text());
            let id = r.json()["id"].as_str().unwrap().to_string();
            w.users.insert(name.into(), id.clone());
            let jwt = w.login(&id).await;
            w.jwts.insert(name.into(), jwt);
        }
        w
    }

    /// A new edge credential of `org`, made by `admin` (a username): its secret.
    pub async fn edge_secret(&self, admin: &str, org: &str, name: &str) -> String {
        let r = self
            .call(
                "POST",
                &format!("/v1/orgs/{org}/edge-credentials"),
                Some(&self.jwt(admin)),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["secret"].as_str().unwrap().to_string()
    }

    pub fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    pub fn advance(&self, secs: i64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn uid(&self, name: &str) -> String {
        self.users[name].clone()
    }

    pub fn jwt(&self, name: &str) -> String {
        self.jwts[name].clone()
    }

    pub fn unique(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.counter.fetch_add(1, Ordering::SeqCst))
    }

    /// A fresh login token for the user: created by the user (an admin for a readonly
    /// user), downloaded by the user.
    pub async fn login(&self, user_id: &str) -> String {
        let id = self.token_in_state(user_id, "pending").await;
        let uid = user_id.to_string();
        self.state
            .write(move |tx, ctx| {
                let owner = actor(tx, &uid);
                let d = service::tokens::download(tx, ctx, &owner, &id)?;
                Ok(d.jwt)
            })
            .await
            .unwrap()
    }

    /// Fixture: a token owned by `user_id` in the given state (`pending`, `enabled`,
    /// `disabled`), made directly through the service, bypassing the API's policy (an
    /// admin of the owner's org creates it).
    pub async fn token_in_state(&self, user_id: &str, state: &str) -> String {
        let name = self.unique("fixture");
        let uid = user_id.to_string();
        let st = state.to_string();
        self.state
            .write(move |tx, ctx| {
                let owner = actor(tx, &uid);
                let mut admin = owner.clone();
                admin.user.role = Role::Admin;
                admin.user.id = format!("fixture-admin-{}", owner.org.id);
                fixture_scopes(tx, &owner.org.id, ctx.now);
                let mut body = create_body(&name, &uid);
                body.lifetime_days = Some(longest_lifetime(&owner.org));
                let t = service::tokens::create_token(tx, ctx, &admin, body)?;
                let id = t.id;
                if st != "pending" {
                    service::tokens::download(tx, ctx, &owner, &id)?;
                }
                if st == "disabled" {
                    // By its owner where the owner may (so that the owner may enable it
                    // again: an admin's suspension is lifted by an admin only), else by
                    // an admin.
                    if service::tokens::disable(tx, ctx, &owner, &id).is_err() {
                        service::tokens::disable(tx, ctx, &admin, &id)?;
                    }
                }
                Ok(id)
            })
            .await
            .unwrap()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let body = body.map(|b| b.to_string().into_bytes());
        self.raw(
            method,
            path,
            token,
            "application/json",
            body.unwrap_or_default(),
            &[],
        )
        .await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        ctype: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Resp {
        send(&self.app, method, path, token, ctype, body, headers).await
    }

    /// The org's status list, decoded: one value per index.
    pub async fn status_values(&self, org: &str) -> Vec<u8> {
        let r = self
            .call("GET", &format!("/v1/orgs/{org}/status-list"), None, None)
            .await;
        assert_eq!(r.status, 200);
        let list = tessera_core::StatusList::from_lst(r.json()["lst"].as_str().unwrap()).unwrap();
        (0..list.len() as u64)
            .map(|i| match list.get(i) {
                Some(tessera_core::TokenStatus::Valid) | None => 0,
                Some(tessera_core::TokenStatus::Revoked) => 1,
                Some(tessera_core::TokenStatus::Suspended) => 2,
                Some(tessera_core::TokenStatus::Rotated) => 3,
            })
            .collect()
    }
}

/// The kinds of credential a caller can present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cred {
    /// A web session: cookie plus CSRF header.
    Session,
    /// An API token carrying `tessera:manage`.
    Manage,
    /// An API token without it.
    NoManage,
    /// An access token from exchange.
    Access,
}

impl Cred {
    pub const ALL: [Cred; 4] = [Cred::Session, Cred::Manage, Cred::NoManage, Cred::Access];
}

/// What a request presents: a bearer token, or session headers.
#[derive(Debug, Clone)]
pub struct Auth {
    pub bearer: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl World {
    /// A signed-in session of the user (a reset link issued in-process, used through the
    /// API): (cookie header value, CSRF token).
    pub async fn session(&self, user_id: &str) -> (String, String) {
        let uid = user_id.to_string();
        let link = self
            .state
            .write(move |tx, ctx| {
                let user = tx.get_user(&uid)?.unwrap();
                service::accounts::issue_link(tx, ctx, &user, "reset", 3600)
            })
            .await
            .unwrap();
        let secret = link.url.rsplit('/').next().unwrap().to_string();
        let r = self
            .call(
                "POST",
                "/v1/links/accept",
                None,
                Some(json!({"secret": secret, "password": "a long enough password"})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let set = r.headers["set-cookie"].to_str().unwrap().to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        (cookie, r.json()["csrf"].as_str().unwrap().to_string())
    }

    /// An API token of the user with scope `read` only (no `tessera:manage`).
    pub async fn no_manage_token(&self, user_id: &str) -> String {
        let name = self.unique("nomanage");
        let uid = user_id.to_string();
        self.state
            .write(move |tx, ctx| {
                let owner = actor(tx, &uid);
                fixture_scopes(tx, &owner.org.id, ctx.now);
                let mut body = create_body(&name, &uid);
                body.scopes = vec!["read".into()];
                let t = service::tokens::create_token(tx, ctx, &owner_as_admin(&owner), body)?;
                Ok(service::tokens::download(tx, ctx, &owner, &t.id)?.jwt)
            })
            .await
            .unwrap()
    }

    /// An access token exchanged for `jwt`.
    pub async fn access_token(&self, jwt: &str) -> String {
        let r = self
            .call(
                "POST",
                "/v1/auth/accesstoken",
                None,
                Some(json!({"refreshToken": jwt})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    /// A fresh credential of the given kind for the user.
    pub async fn credential(&self, kind: Cred, user_id: &str) -> Auth {
        match kind {
            Cred::Session => {
                let (cookie, csrf) = self.session(user_id).await;
                Auth {
                    bearer: None,
                    headers: vec![("cookie".into(), cookie), ("x-csrf-token".into(), csrf)],
                }
            }
            Cred::Manage => Auth {
                bearer: Some(self.login(user_id).await),
                headers: vec![],
            },
            Cred::NoManage => Auth {
                bearer: Some(self.no_manage_token(user_id).await),
                headers: vec![],
            },
            Cred::Access => {
                let jwt = self.login(user_id).await;
                Auth {
                    bearer: Some(self.access_token(&jwt).await),
                    headers: vec![],
                }
            }
        }
    }

    /// A JSON call presenting `auth`.
    pub async fn call_as(
        &self,
        method: &str,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> Resp {
        let headers: Vec<(&str, &str)> = auth
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(
            method,
            path,
            auth.bearer.as_deref(),
            "application/json",
            body,
            &headers,
        )
        .await
    }
}

/// The owner's org admin, for fixtures made past the policy.
pub fn owner_as_admin(owner: &Actor) -> Actor {
    let mut admin = owner.clone();
    admin.user.role = Role::Admin;
    admin.user.id = format!("fixture-admin-{}", owner.org.id);
    admin
}

pub fn create_body(name: &str, user: &str) -> service::input::CreateToken {
    // Fixture credentials manage, and carry the scopes the tests give the tokens they make
    // with them (a token may make only tokens within its own bounds).
    serde_json::from_value(json!({"name": name, "user": user,
        "scopes": ["read", "write", "admin", "tessera:manage"]}))
    .unwrap()
}

/// The longest lifetime the org allows: fixture credentials live that long, so that the
/// tokens the tests make with them may too.
pub fn longest_lifetime(org: &tessera_control_plane::model::Org) -> i64 {
    tessera_control_plane::model::LIFETIMES
        .into_iter()
        .filter(|d| *d <= org.max_lifetime_days)
        .max()
        .unwrap_or(30)
}

/// The decoded header and claims of a compact JWS (an API token's `tsr_` prefix removed).
pub fn decode_jwt(jwt: &str) -> (Value, Value) {
    use base64::Engine;
    let jwt = tessera_core::token::strip_api_prefix(jwt);
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let d = |p: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .unwrap(),
        )
        .unwrap()
    };
    (d(parts[0]), d(parts[1]))
}

/// Whether `jwt`'s signature verifies with core's verifier against the JWKS document
/// `jwks` (its key selected by `kid`, the algorithm pinned by the key). Only the signature
/// is judged: the claims are left to the tests that are about them.
pub fn signature_verifies(jwks: &Value, jwt: &str) -> bool {
    use tessera_core::{Request as CoreRequest, Step, Verifier};
    let config = tessera_core::Config::builder()
        .issuer("-")
        .audience("-")
        .jwks(jwks.clone())
        .build()
        .expect("a published JWKS is a valid key set");
    let verifier = Verifier::new(config);
    let headers = [("authorization".to_string(), format!("Bearer {jwt}"))];
    let req = CoreRequest {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: None,
    };
    match verifier.begin(&req, 0, None) {
        Step::Verify(pending) => verifier.verify_signature(&pending),
        Step::Done(_) => false,
    }
}

/// One request through `app` (a [`World`]'s, or another router over its state).
pub async fn send(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    ctype: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ctype);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// A CA made at run time and a server certificate it signed for 127.0.0.1 and localhost,
/// in the forms the TLS tests need (the CLI's https client, SMTP with STARTTLS and SMTPS).
pub struct TestPki {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    /// PKCS#8.
    pub key_der: Vec<u8>,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Tessera test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "tessera test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &ca).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}
