//! The control plane and the verifier agree on the token format: tokens minted here,
//! with the JWKS and status lists served here, are decided by the real `tessera-core`.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{World, BASE};
use serde_json::json;
use tessera_core::{Decision, Request, StatusList, Verifier};

/// A verifier configured exactly from what the control plane publishes for `org`.
async fn verifier(w: &World, org: &str) -> Verifier {
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
    Verifier::from_config_json(&config.to_string())
        .unwrap_or_else(|e| panic!("core refused our config: {e:?}"))
}

async fn refresh_status(w: &World, v: &mut Verifier, org: &str) {
    let list = w
        .call("GET", &format!("/v1/orgs/{org}/status-list"), None, None)
        .await
        .json();
    v.set_status_list(
        &format!("{BASE}/v1/orgs/{org}/status-list"),
        StatusList::from_lst(list["lst"].as_str().unwrap()).unwrap(),
    );
}

fn decide(v: &Verifier, jwt: &str, peer: &str, now: i64) -> Decision {
    let headers = vec![("authorization".to_string(), format!("Bearer {jwt}"))];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: Some(peer),
    };
    v.check(&req, now as u64, None).decision
}

fn reason(d: &Decision) -> Option<&'static str> {
    d.reason().map(|r| r.as_str())
}

#[tokio::test]
async fn core_accepts_minted_tokens_and_honours_the_status_list() {
    let w = World::new().await;
    let ula = w.jwt("ula");
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ula),
            Some(json!({"name": "edge", "scopes": ["read", "write"], "ip_allow": ["10.0.0.0/8"]})),
        )
        .await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    let api = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&ula),
            None,
        )
        .await
        .json()["jwt"]
        .as_str()
        .unwrap()
        .to_string();
    let at = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": api})),
        )
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut v = verifier(&w, "acme").await;
    let now = w.now();

    match decide(&v, &api, "10.1.2.3:5000", now) {
        Decision::Allow(id_) => {
            assert_eq!(id_.user, w.uid("ula"));
            assert_eq!(id_.org, "acme");
            assert_eq!(id_.token_id, id);
            assert_eq!(id_.scopes, ["read", "write"]);
            assert_eq!(id_.token_type, "tessera-api+jwt");
        }
        d => panic!("API token refused by core: {d:?}"),
    }
    match decide(&v, &at, "10.1.2.3:5000", now) {
        Decision::Allow(id_) => {
            assert_eq!(id_.token_type, "at+jwt");
            assert_eq!(id_.parent.as_deref(), Some(id.as_str()));
        }
        d => panic!("access token refused by core: {d:?}"),
    }
    assert_eq!(
        reason(&decide(&v, &api, "192.0.2.1:5000", now)),
        Some("ip_not_allowed")
    );

    // Disable → suspended, enable → allowed, revoke → revoked (the access token too).
    let ada = w.jwt("ada");
    w.call(
        "POST",
        &format!("/v1/tokens/{id}/disable"),
        Some(&ada),
        None,
    )
    .await;
    refresh_status(&w, &mut v, "acme").await;
    assert_eq!(
        reason(&decide(&v, &api, "10.1.2.3:5000", now)),
        Some("suspended")
    );
    w.call("POST", &format!("/v1/tokens/{id}/enable"), Some(&ada), None)
        .await;
    refresh_status(&w, &mut v, "acme").await;
    assert_eq!(reason(&decide(&v, &api, "10.1.2.3:5000", now)), None);
    w.call("POST", &format!("/v1/tokens/{id}/revoke"), Some(&ula), None)
        .await;
    refresh_status(&w, &mut v, "acme").await;
    assert_eq!(
        reason(&decide(&v, &api, "10.1.2.3:5000", now)),
        Some("revoked")
    );
    assert_eq!(
        reason(&decide(&v, &at, "10.1.2.3:5000", now)),
        Some("revoked")
    );
}

#[tokio::test]
async fn core_accepts_es256_tokens_and_rotated_keys() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let before = w.login(&w.uid("ula")).await;
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/keys/rotate",
            Some(&ada),
            Some(json!({"alg": "ES256"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let after = w.login(&w.uid("ula")).await;
    let v = verifier(&w, "acme").await;
    for jwt in [&before, &after] {
        assert!(
            matches!(decide(&v, jwt, "127.0.0.1:1", w.now()), Decision::Allow(_)),
            "{:?}",
            decide(&v, jwt, "127.0.0.1:1", w.now())
        );
    }
    // A regenerated token's previous JWT is refused by its status entry alone.
    let id = common::decode_jwt(&after).1["jti"]
        .as_str()
        .unwrap()
        .to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/regenerate"),
            Some(&after),
            None,
        )
        .await;
    let newer = r.json()["jwt"].as_str().unwrap().to_string();
    let v = verifier(&w, "acme").await;
    assert_eq!(
        reason(&decide(&v, &after, "127.0.0.1:1", w.now())),
        Some("revoked")
    );
    assert!(matches!(
        decide(&v, &newer, "127.0.0.1:1", w.now()),
        Decision::Allow(_)
    ));
}
