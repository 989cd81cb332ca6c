//! The API authenticates with `tessera_core::Verifier`, the data plane's own code: crafted
//! tokens get core's reason codes, revoked and suspended records are refused, the IP
//! filter applies to the peer, and the API refuses exactly what an edge configured from
//! the published JWKS and status list refuses.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request as HttpRequest;
use common::{decode_jwt, Resp, World, BASE};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tessera_control_plane::crypto;
use tessera_control_plane::service::{TYP_ACCESS, TYP_API};
use tessera_core::{Decision, Request, Verifier};
use tessera_testkit::{compact, tamper_signature, Alg, TestKey, TokenBuilder};
use tower::ServiceExt;

/// Signs `claims` with the org's real active key (what only the control plane can do),
/// so that claim-level refusals are reached.
async fn sign_as_org(w: &World, org: &str, typ: &str, claims: Value) -> String {
    let org = org.to_string();
    let typ = typ.to_string();
    w.state
        .read(move |tx, ctx| {
            let key = tx
                .list_keys(&org)?
                .into_iter()
                .find(|k| k.retired_at.is_none())
                .unwrap();
            let secret = ctx.master.open(&key.kid, &key.private_enc)?;
            crypto::sign_jws(key.alg, &key.kid, &secret, &typ, &claims)
        })
        .await
        .unwrap()
}

/// `GET /v1/me` with `Authorization: Bearer <jwt>`, from `peer` when given.
async fn me(w: &World, jwt: Option<&str>, peer: Option<&str>) -> Resp {
    let mut req = HttpRequest::builder().method("GET").uri("/v1/me");
    if let Some(t) = jwt {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = req.body(Body::empty()).unwrap();
    if let Some(p) = peer {
        req.extensions_mut()
            .insert(ConnectInfo(p.parse::<SocketAddr>().unwrap()));
    }
    let resp = w.app.clone().oneshot(req).await.unwrap();
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

/// The API's refusal reason (`None` when it answered 200).
fn api_reason(r: &Resp) -> Option<String> {
    if r.status == 200 {
        return None;
    }
    let v = r.json();
    assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    let reason = v["reason"].as_str().unwrap().to_string();
    assert!(v["message"].as_str().unwrap().contains(&reason), "{v}");
    Some(reason)
}

/// An edge's verifier, configured only from what the control plane publishes for `org`.
async fn edge(w: &World, org: &str) -> Verifier {
    let jwks = w
        .call("GET", &format!("/v1/orgs/{org}/jwks.json"), None, None)
        .await
        .json();
    let list = w
        .call("GET", &format!("/v1/orgs/{org}/status-list"), None, None)
        .await
        .json();
    let config = json!({
        "issuers": [format!("{BASE}/v1/orgs/{org}")],
        "audiences": ["tessera"],
        "jwks": jwks,
        "status": {"lists": [{"uri": format!("{BASE}/v1/orgs/{org}/status-list"), "bits": 2, "lst": list["lst"]}]},
    });
    Verifier::from_config_json(&config.to_string()).unwrap()
}

fn edge_decide(v: &Verifier, jwt: &str, peer: &str, now: i64) -> Decision {
    let headers = vec![("authorization".to_string(), format!("Bearer {jwt}"))];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: Some(peer),
    };
    v.check(&req, now as u64, None).decision
}

/// A fresh enabled token of `user` in acme: (id, jwt).
async fn fresh(w: &World, user: &str, body: Value) -> (String, String) {
    let jwt = w.jwt(user);
    let r = w.call("POST", "/v1/tokens", Some(&jwt), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    (id, r.json()["jwt"].as_str().unwrap().to_string())
}

/// Crafted tokens, each with the reason core gives it.
async fn crafted(w: &World, good: &str) -> Vec<(&'static str, String, &'static str)> {
    let (header, claims) = decode_jwt(good);
    let now = w.now();
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let kid = header["kid"].as_str().unwrap().to_string();
    let jwks = w
        .call("GET", "/v1/orgs/acme/jwks.json", None, None)
        .await
        .json();
    let x = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == json!(kid))
        .unwrap()["x"]
        .as_str()
        .unwrap()
        .to_string();
    let public = tessera_testkit::b64url_decode(&x).unwrap();
    let mut builder = TokenBuilder::new(now as u64).header("kid", kid.as_str());
    for (k, v) in claims.as_object().unwrap() {
        builder = builder.claim(k, v.clone());
    }
    let stranger = TestKey::generate(Alg::EdDSA, &kid);
    let crit = compact(
        json!({"alg": "EdDSA", "kid": kid, "typ": TYP_API, "crit": ["exp"]})
            .to_string()
            .as_bytes(),
        claims.to_string().as_bytes(),
        &[0u8; 64],
    );
    vec![
        ("valid", good.to_string(), ""),
        ("forged signature", tamper_signature(good), "signature_invalid"),
        ("alg none", builder.unsigned(), "alg_not_allowed"),
        (
            "HS256 keyed with the public key",
            builder.sign_hs256(&public),
            "alg_not_allowed",
        ),
        ("another key, same kid", builder.sign(&stranger), "signature_invalid"),
        (
            "unknown kid",
            builder
                .clone()
                .header("kid", "nope")
                .sign(&TestKey::generate(Alg::EdDSA, "nope")),
            "key_unknown",
        ),
        ("crit", crit, "crit_unsupported"),
        ("garbage", "not.a.jwt".to_string(), "token_malformed"),
        (
            "wrong iss",
            sign_as_org(w, "acme", TYP_API, with(json!({"iss": "https://evil.example"}))).await,
            "issuer_mismatch",
        ),
        (
            "another org's iss",
            sign_as_org(w, "acme", TYP_API, with(json!({"iss": format!("{BASE}/v1/orgs/root")}))).await,
            "issuer_mismatch",
        ),
        (
            "wrong aud",
            sign_as_org(w, "acme", TYP_API, with(json!({"aud": "someone-else"}))).await,
            "audience_mismatch",
        ),
        (
            "expired",
            sign_as_org(w, "acme", TYP_API, with(json!({"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}))).await,
            "expired",
        ),
        (
            "not yet valid",
            sign_as_org(w, "acme", TYP_API, with(json!({"nbf": now + 3600}))).await,
            "not_yet_valid",
        ),
        (
            "issued in the future",
            sign_as_org(w, "acme", TYP_API, with(json!({"iat": now + 3600}))).await,
            "issued_in_future",
        ),
        (
            "no exp",
            {
                let mut c = claims.clone();
                c.as_object_mut().unwrap().remove("exp");
                sign_as_org(w, "acme", TYP_API, c).await
            },
            "claim_missing",
        ),
        (
            "wrong typ",
            sign_as_org(w, "acme", "JWT", claims.clone()).await,
            "type_mismatch",
        ),
        (
            "status index beyond the list",
            sign_as_org(w, "acme", TYP_API, with(json!({"status": {"status_list": {"idx": 1_000_000, "uri": format!("{BASE}/v1/orgs/acme/status-list")}}}))).await,
            "status_unavailable",
        ),
    ]
}

#[tokio::test]
async fn crafted_tokens_get_cores_reason_codes_and_the_edges_verdict() {
    let w = World::new().await;
    let (_, good) = fresh(&w, "ula", json!({"name": "crafted", "scopes": ["read"]})).await;
    let cases = crafted(&w, &good).await;
    let v = edge(&w, "acme").await;
    for (what, jwt, want) in &cases {
        let r = me(&w, Some(jwt), None).await;
        let got = api_reason(&r);
        let edge = edge_decide(&v, jwt, "10.0.0.1:1", w.now());
        // The API and an edge decide alike, by construction: the same core verifier.
        assert_eq!(
            got.as_deref(),
            edge.reason().map(|r| r.as_str()),
            "{what}: API {} vs edge {edge:?}",
            r.text()
        );
        if want.is_empty() {
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            continue;
        }
        assert_eq!(got.as_deref(), Some(*want), "{what}: {}", r.text());
        let Decision::Deny(deny) = edge else {
            unreachable!()
        };
        assert_eq!(r.status.as_u16(), deny.status, "{what}");
        assert_eq!(
            r.headers
                .get("www-authenticate")
                .map(|h| h.to_str().unwrap().to_string()),
            deny.www_authenticate,
            "{what}"
        );
    }

    // No token: core's token_missing, a challenge without an error code (RFC 6750 §3.1).
    let r = me(&w, None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(api_reason(&r).as_deref(), Some("token_missing"));
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"tessera\"");
    // Two different tokens: token_ambiguous (400).
    let r = w
        .raw(
            "GET",
            "/v1/me",
            Some(&good),
            "application/json",
            vec![],
            &[("authorization", "Bearer other")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(api_reason(&r).as_deref(), Some("token_ambiguous"));
    // `Token` is accepted as well as `Bearer`.
    let r = w
        .raw(
            "GET",
            "/v1/me",
            None,
            "application/json",
            vec![],
            &[("authorization", &format!("Token {good}"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn revoked_and_suspended_records_are_refused() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let (id, jwt) = fresh(&w, "ula", json!({"name": "life"})).await;
    let at = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": jwt})),
        )
        .await;
    assert_eq!(at.status, 200, "{}", at.text());
    let at = at.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(decode_jwt(&at).0["typ"], json!(TYP_ACCESS));
    // Exchanged access tokens authenticate API calls too.
    assert_eq!(me(&w, Some(&at), None).await.status, 200);
    assert_eq!(me(&w, Some(&jwt), None).await.status, 200);

    let op = |what: &'static str| {
        let (w, ada, id) = (&w, ada.clone(), id.clone());
        async move {
            let r = w
                .call("POST", &format!("/v1/tokens/{id}/{what}"), Some(&ada), None)
                .await;
            assert_eq!(r.status, 200, "{what}: {}", r.text());
        }
    };
    op("disable").await;
    for t in [&jwt, &at] {
        let r = me(&w, Some(t), None).await;
        assert_eq!(r.status, 401);
        assert_eq!(api_reason(&r).as_deref(), Some("suspended"));
        assert!(r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\""));
    }
    op("enable").await;
    assert_eq!(me(&w, Some(&jwt), None).await.status, 200);
    assert_eq!(me(&w, Some(&at), None).await.status, 200);
    op("revoke").await;
    for t in [&jwt, &at] {
        let r = me(&w, Some(t), None).await;
        assert_eq!(r.status, 401);
        assert_eq!(api_reason(&r).as_deref(), Some("revoked"));
    }

    // Regenerate: the previous JWT is refused (its status entry is revoked).
    let (id2, old) = fresh(&w, "ula", json!({"name": "regen"})).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id2}/regenerate"),
            Some(&w.jwt("ula")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new = r.json()["jwt"].as_str().unwrap().to_string();
    assert_eq!(
        api_reason(&me(&w, Some(&old), None).await).as_deref(),
        Some("revoked")
    );
    assert_eq!(me(&w, Some(&new), None).await.status, 200);
    // Deleted: revoked.
    let r = w
        .call("DELETE", &format!("/v1/tokens/{id2}"), Some(&ada), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        api_reason(&me(&w, Some(&new), None).await).as_deref(),
        Some("revoked")
    );

    // A JWT core accepts but the database does not know as the outstanding one (same
    // claims and index, signed again): refused by the stored SHA-256.
    let (_, live) = fresh(&w, "ula", json!({"name": "hash"})).await;
    let (_, claims) = decode_jwt(&live);
    let mut claims = claims;
    claims["scope"] = json!("read write admin");
    let twin = sign_as_org(&w, "acme", TYP_API, claims).await;
    let v = edge(&w, "acme").await;
    assert!(matches!(
        edge_decide(&v, &twin, "10.0.0.1:1", w.now()),
        Decision::Allow(_)
    ));
    assert_eq!(
        api_reason(&me(&w, Some(&twin), None).await).as_deref(),
        Some("revoked")
    );
    assert_eq!(me(&w, Some(&live), None).await.status, 200);
}

#[tokio::test]
async fn the_ip_filter_applies_to_the_peer() {
    let w = World::new().await;
    let (_, jwt) = fresh(&w, "ula", json!({"name": "ip", "ip_allow": ["10.0.0.0/8"]})).await;
    let r = me(&w, Some(&jwt), Some("192.0.2.1:4000")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(api_reason(&r).as_deref(), Some("ip_not_allowed"));
    // RFC 6750 §3: the token does not enable access from here: a challenge, no error code.
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"tessera\"");
    assert_eq!(me(&w, Some(&jwt), Some("10.1.2.3:4000")).await.status, 200);
    // In-process calls with no socket have no client address: the filter cannot apply.
    assert_eq!(me(&w, Some(&jwt), None).await.status, 200);
}

#[tokio::test]
async fn time_is_the_control_planes_clock() {
    let w = World::new().await;
    let (_, jwt) = fresh(&w, "ula", json!({"name": "short", "lifetime_days": 30})).await;
    assert_eq!(me(&w, Some(&jwt), None).await.status, 200);
    w.advance(31 * 86_400);
    let r = me(&w, Some(&jwt), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(api_reason(&r).as_deref(), Some("expired"));
}

#[tokio::test]
async fn an_orgs_verifier_is_updated_in_place_for_lists_and_rebuilt_for_keys() {
    use std::sync::{Arc, Mutex};
    use tessera_control_plane::service::verifiers::OrgVerifier;
    use tessera_control_plane::service::Verifiers;
    let w = World::new().await;
    let vs = Arc::new(Verifiers::new());
    let state = w.state.clone();
    let get = |org: &'static str| {
        let (vs, state) = (Arc::clone(&vs), state.clone());
        async move {
            state
                .read(move |tx, ctx| {
                    let org = tx.get_org(org)?.expect("org exists");
                    vs.for_org(tx, ctx, &org)
                })
                .await
                .unwrap()
        }
    };
    let same = |a: &Arc<Mutex<OrgVerifier>>, b: &Arc<Mutex<OrgVerifier>>| Arc::ptr_eq(a, b);
    let a = get("acme").await;
    let root = get("root").await;
    assert!(same(&a, &get("acme").await), "nothing moved: reused");
    let (id, jwt) = fresh(&w, "ula", json!({"name": "cache"})).await;
    let b = get("acme").await;
    assert!(
        same(&a, &b),
        "a new status entry: the same verifier, updated in place"
    );
    assert_eq!(me(&w, Some(&jwt), None).await.status, 200);
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/revoke"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let c = get("acme").await;
    assert!(same(&b, &c), "a revocation: updated in place");
    let r = me(&w, Some(&jwt), None).await;
    assert_eq!(
        r.status, 401,
        "the in-place update refuses the revoked token"
    );
    assert_eq!(api_reason(&r).as_deref(), Some("revoked"));
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/keys/rotate",
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let d = get("acme").await;
    assert!(!same(&c, &d), "a new key: rebuilt");
    assert!(same(&d, &get("acme").await));
    assert!(
        same(&root, &get("root").await),
        "another org's changes leave root alone"
    );
}
