//! RFC 7662 introspection (`POST /v1/introspect`): an edge credential of the org asks about
//! a token and gets the decision an edge of that org gives. Every token state here is
//! judged twice — by introspection, and by core configured as an edge from what the control
//! plane publishes (the JWKS, the status list and its withdrawn scopes, fetched over the
//! API) — and the two must agree on every token, before and after time passes.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Resp, World};
use serde_json::{json, Value};
use tessera_control_plane::service;
use tessera_core::{Decision, Request, Verifier};

const INTROSPECT: &str = "/v1/introspect";

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        f.append_pair(k, v);
    }
    f.finish().into_bytes()
}

async fn introspect_with(w: &World, credential: Option<&str>, pairs: &[(&str, &str)]) -> Resp {
    w.raw(
        "POST",
        INTROSPECT,
        credential,
        "application/x-www-form-urlencoded",
        form(pairs),
        &[],
    )
    .await
}

/// The answer for `token` (optionally from `client_ip`), which must be a 200.
async fn introspect(w: &World, edge: &str, token: &str, client_ip: Option<&str>) -> Value {
    let mut pairs = vec![("token", token)];
    if let Some(ip) = client_ip {
        pairs.push(("client_ip", ip));
    }
    let r = introspect_with(w, Some(edge), &pairs).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.headers["cache-control"], "no-store",
        "an introspection answer is never cached"
    );
    r.json()
}

/// Core configured as an edge of `org` from what the control plane publishes: its issuer
/// and audience, the JWKS, the status list and its withdrawn scopes.
async fn edge_of(w: &World, org: &str) -> Verifier {
    let jwks = w
        .call("GET", &format!("/v1/orgs/{org}/jwks.json"), None, None)
        .await;
    assert_eq!(jwks.status, 200, "{}", jwks.text());
    let uri = format!("{}/v1/orgs/{org}/status-list", common::BASE);
    let list = w
        .call("GET", &format!("/v1/orgs/{org}/status-list"), None, None)
        .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let doc = list.json();
    let config = json!({
        "issuers": [format!("{}/v1/orgs/{org}", common::BASE)],
        "audiences": ["tessera"],
        "jwks": jwks.json(),
        "status": {"lists": [{"uri": uri, "bits": 2, "lst": doc["lst"]}]},
    });
    let mut v = Verifier::from_config_json(&config.to_string()).unwrap();
    v.set_withdrawn(
        &uri,
        tessera_core::synced::withdrawn_document(&list.text()).unwrap(),
    );
    v
}

/// What the edge decides for `token` from `client` (an address), in introspection's
/// terms: `(active, reason or scope)`.
fn edge_says(edge: &Verifier, w: &World, token: &str, client: Option<&str>) -> (bool, String) {
    let headers = [("authorization".to_string(), format!("Bearer {token}"))];
    let peer = client.map(|c| format!("{c}:4711"));
    let req = Request {
        method: "GET",
        path: "/orders",
        headers: &headers,
        source_address: peer.as_deref(),
    };
    let outcome = edge
        .check(&req, u64::try_from(w.now()).unwrap(), None)
        .settled();
    match outcome.decision {
        Decision::Allow(id) => (true, id.scopes.join(" ")),
        Decision::Deny(d) => (false, d.reason.as_str().to_string()),
    }
}

fn introspection_says(v: &Value) -> (bool, String) {
    let active = v["active"].as_bool().unwrap();
    let detail = if active {
        v["scope"].as_str().unwrap_or("").to_string()
    } else {
        v["reason"].as_str().unwrap().to_string()
    };
    (active, detail)
}

/// A token with these settings, made by ada for `user` through the API and downloaded by
/// its owner: (id, JWT).
async fn made(w: &World, user: &str, body: Value) -> (String, String) {
    let mut body = body;
    body["name"] = json!(w.unique("t"));
    body["user"] = json!(w.uid(user));
    let r = w
        .call("POST", "/v1/tokens", Some(&w.jwt("ada")), Some(body))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let uid = w.uid(user);
    let tid = id.clone();
    let jwt = w
        .state
        .write(move |tx, ctx| {
            let owner = common::actor(tx, &uid);
            Ok(service::tokens::download(tx, ctx, &owner, &tid)?.jwt)
        })
        .await
        .unwrap();
    (id, jwt)
}

/// `jwt` with its header's `kid` replaced by one no org has (its signature then checks
/// against nothing).
fn with_unknown_kid(jwt: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let (header, _) = common::decode_jwt(jwt);
    let mut header = header;
    header["kid"] = json!("kid-nobody-has");
    let bare = jwt.strip_prefix("tsr_").unwrap_or(jwt);
    let rest = bare.split_once('.').unwrap().1;
    format!(
        "{}.{rest}",
        URL_SAFE_NO_PAD.encode(header.to_string().as_bytes())
    )
}

#[tokio::test]
async fn introspection_agrees_with_an_edge_on_every_token_state() {
    let w = World::new().await;
    let edge = w.edge_secret("ada", "acme", "resource-server").await;
    let ada = w.jwt("ada");
    // The states, each a token (and the client address the resource server names).
    let mut cases: Vec<(String, String, Option<&str>)> = Vec::new();
    let ula = w.jwt("ula");
    cases.push(("valid API token".into(), ula.clone(), None));
    let bare = ula.strip_prefix("tsr_").unwrap_or(&ula).to_string();
    cases.push(("valid, without its tsr_ prefix".into(), bare, None));
    cases.push(("access token".into(), w.access_token(&ula).await, None));
    let (revoked, jwt) = made(&w, "ned", json!({"scopes": ["read"]})).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{revoked}/revoke"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    cases.push(("revoked".into(), jwt, None));
    let (disabled, jwt) = made(&w, "ned", json!({"scopes": ["read"]})).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{disabled}/disable"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    cases.push(("disabled".into(), jwt, None));
    let (regen, old) = made(&w, "uma", json!({"scopes": ["read"]})).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{regen}/regenerate"),
            Some(&w.jwt("uma")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new = r.json()["jwt"].as_str().unwrap().to_string();
    cases.push(("regenerated: the old JWT".into(), old, None));
    cases.push(("regenerated: the new JWT".into(), new, None));
    let (_, month) = made(&w, "ula", json!({"scopes": ["read"], "lifetime_days": 30})).await;
    cases.push((
        "30 days (expired after the clock moves)".into(),
        month,
        None,
    ));
    let (_, pinned) = made(
        &w,
        "ula",
        json!({"scopes": ["read"], "ip_allow": ["10.0.0.0/8"]}),
    )
    .await;
    cases.push((
        "IP filter, client inside".into(),
        pinned.clone(),
        Some("10.1.2.3"),
    ));
    cases.push((
        "IP filter, client outside".into(),
        pinned.clone(),
        Some("192.0.2.7"),
    ));
    cases.push(("IP filter, no client named".into(), pinned, None));
    cases.push(("another org's token".into(), w.jwt("root-admin"), None));
    cases.push(("another org's token (partner)".into(), w.jwt("pat"), None));
    cases.push((
        "signature altered".into(),
        tessera_testkit::tamper_signature(&ula),
        None,
    ));
    cases.push(("garbage".into(), "not-a-jwt".into(), None));
    cases.push(("three parts of garbage".into(), "a.b.c".into(), None));
    // A user disabled: their tokens are suspended.
    let rita = w.jwt("rita");
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{}/disable", w.uid("rita")),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    cases.push(("its user disabled".into(), rita, None));
    // A key rotation: tokens signed by the retired key still verify.
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/keys/rotate",
            Some(&ada),
            Some(json!({"alg": "ES256"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, es) = made(&w, "ula", json!({"scopes": ["read", "write"]})).await;
    cases.push(("signed by the new ES256 key".into(), es, None));
    // A grant withdrawn: the user's live tokens lose the scope, at the edges and here.
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scopes/write/withdraw",
            Some(&ada),
            Some(json!({"role": "user"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let mut wrong = Vec::new();
    let mut checked = 0;
    let mut seen = std::collections::BTreeSet::new();
    for phase in ["now", "31 days later"] {
        if phase != "now" {
            w.advance(31 * 86_400);
        }
        let edge_now = edge_of(&w, "acme").await;
        for (name, token, client) in &cases {
            let want = edge_says(&edge_now, &w, token, *client);
            let got = introspection_says(&introspect(&w, &edge, token, *client).await);
            checked += 1;
            seen.insert(want.clone());
            if got != want {
                wrong.push(format!(
                    "{phase}, {name}: introspection {got:?}, edge {want:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(checked, 2 * cases.len());
    // The table reaches what it means to: allowed tokens with narrowed scopes, and these
    // refusals.
    let reasons: std::collections::BTreeSet<&str> = seen
        .iter()
        .filter(|(active, _)| !active)
        .map(|(_, r)| r.as_str())
        .collect();
    for reason in [
        "revoked",
        "suspended",
        "expired",
        "ip_not_allowed",
        "key_unknown",
        "signature_invalid",
        "token_malformed",
    ] {
        assert!(
            reasons.contains(reason),
            "no case was refused {reason}: {reasons:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|(active, scope)| *active && scope.contains("read") && !scope.contains("write")),
        "the withdrawn scope is gone from a live token's scope: {seen:?}"
    );
}

#[tokio::test]
async fn an_active_token_is_described_and_an_inactive_one_only_refused() {
    let w = World::new().await;
    let edge = w.edge_secret("ada", "acme", "rs").await;
    let ula = w.jwt("ula");
    let (_, claims) = common::decode_jwt(&ula);
    let v = introspect(&w, &edge, &ula, None).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["sub"], w.uid("ula").as_str());
    assert_eq!(v["jti"], claims["jti"]);
    assert_eq!(
        v["client_id"], claims["jti"],
        "an API token is its own client"
    );
    assert_eq!(v["exp"], claims["exp"]);
    assert_eq!(v["iat"], claims["iat"]);
    assert_eq!(v["iss"], claims["iss"]);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["typ"], "tessera-api+jwt");
    assert_eq!(v["scope"], claims["scope"]);
    assert!(v.get("reason").is_none(), "{v}");
    // An access token names its parent as its client.
    let at = w.access_token(&ula).await;
    let v = introspect(&w, &edge, &at, None).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["typ"], "at+jwt");
    assert_eq!(v["client_id"], claims["jti"]);
    // RFC 7662's hint is accepted and changes nothing.
    let r = introspect_with(
        &w,
        Some(&edge),
        &[("token", &ula), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["active"], true);
    // Inactive: `active` and Tessera's reason, nothing else about the token.
    let other = w.jwt("root-admin");
    let v = introspect(&w, &edge, &other, None).await;
    assert_eq!(v, json!({"active": false, "reason": "key_unknown"}));
    // Another org's token is answered exactly like a token signed by a key nobody has.
    let forged = with_unknown_kid(&ula);
    let v2 = introspect(&w, &edge, &forged, None).await;
    assert_eq!(v, v2, "another org's token must look like a forgery");
    // The documented example is a form the route takes (its token is no token).
    let route = tessera_control_plane::api::routes()
        .into_iter()
        .find(|r| r.path == INTROSPECT)
        .unwrap();
    let example = route.body.clone().unwrap();
    let pairs: Vec<(&str, &str)> = example
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    let r = introspect_with(&w, Some(&edge), &pairs).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"active": false, "reason": "token_malformed"})
    );
    // root's own edge credential sees root's token as active.
    let root_edge = w.edge_secret("root-admin", "root", "root-rs").await;
    assert_eq!(
        introspect(&w, &root_edge, &other, None).await["active"],
        true
    );
}

#[tokio::test]
async fn unauthenticated_or_malformed_calls_are_refused() {
    let w = World::new().await;
    let edge = w.edge_secret("ada", "acme", "rs").await;
    let ula = w.jwt("ula");
    // No credential: 401 with a bare challenge (RFC 6750 §3.1).
    let r = introspect_with(&w, None, &[("token", &ula)]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.headers["www-authenticate"], r#"Bearer realm="tessera""#);
    // A wrong one, a Tessera API token, a revoked edge credential: invalid_token.
    let revoked = w.edge_secret("ada", "acme", "old").await;
    let listed = w
        .call(
            "GET",
            "/v1/orgs/acme/edge-credentials",
            Some(&w.jwt("ada")),
            None,
        )
        .await
        .json();
    let old_id = listed["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "old")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/orgs/acme/edge-credentials/{old_id}/revoke"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for credential in ["tse_not-a-credential", ula.as_str(), revoked.as_str()] {
        let r = introspect_with(&w, Some(credential), &[("token", &ula)]).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(
            r.headers["www-authenticate"],
            r#"Bearer realm="tessera", error="invalid_token""#
        );
        assert!(r.json().get("active").is_none(), "{}", r.text());
    }
    // The form: RFC 7662's media type only, a token required, client_ip an address.
    let r = w
        .call(
            "POST",
            INTROSPECT,
            Some(&edge),
            Some(json!({"token": ula.clone()})),
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text());
    for (pairs, field) in [
        (vec![("token", "")], "token"),
        (vec![], "token"),
        (
            vec![("token", ula.as_str()), ("client_ip", "10.0.0.0/8")],
            "client_ip",
        ),
    ] {
        let r = introspect_with(&w, Some(&edge), &pairs).await;
        assert_eq!(r.status, 400, "{pairs:?}: {}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap().starts_with(field),
            "{pairs:?}: {}",
            r.text()
        );
    }
}

#[tokio::test]
async fn refused_credentials_count_against_the_address_rate() {
    let w = World::new().await;
    let edge = w.edge_secret("ada", "acme", "rs").await;
    let ula = w.jwt("ula");
    let app = tessera_control_plane::app(w.state.clone().with_rate_limit(
        tessera_control_plane::api::limit::RateLimit {
            per_minute: 1,
            burst: 2,
        },
    ));
    let send = |credential: Option<String>| {
        let app = app.clone();
        let body = form(&[("token", &ula)]);
        async move {
            common::send(
                &app,
                "POST",
                INTROSPECT,
                credential.as_deref(),
                "application/x-www-form-urlencoded",
                body,
                &[],
            )
            .await
        }
    };
    // An authenticated resource server is not limited per address.
    for _ in 0..5 {
        let r = send(Some(edge.clone())).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Refusals are: past the burst, 429 with Retry-After.
    let mut statuses = Vec::new();
    for credential in [
        None,
        Some("tse_wrong".to_string()),
        None,
        Some("tse_x".into()),
    ] {
        statuses.push(send(credential).await.status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 429, 429]);
    let r = send(None).await;
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
}
