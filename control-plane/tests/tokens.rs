//! The API-token lifecycle, the minted JWT's format, exchange, search and CSV export.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{decode_jwt, signature_verifies, World, BASE};
use serde_json::{json, Value};

async fn status_of(w: &World, jwt: &str, id: &str) -> String {
    let r = w
        .call("GET", &format!("/v1/tokens/{id}"), Some(jwt), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["status"].as_str().unwrap().to_string()
}

async fn me_status(w: &World, jwt: &str) -> u16 {
    w.call("GET", "/v1/me", Some(jwt), None)
        .await
        .status
        .as_u16()
}

/// Checks the JWT's signature against the org's published JWKS (the key pins the alg),
/// with core's verifier.
async fn verify_with_jwks(w: &World, org: &str, jwt: &str) {
    let jwks = w
        .call("GET", &format!("/v1/orgs/{org}/jwks.json"), None, None)
        .await
        .json();
    assert!(signature_verifies(&jwks, jwt), "signature of {jwt}");
}

#[tokio::test]
async fn every_lifecycle_transition() {
    let w = World::new().await;
    let (ada, ula) = (w.jwt("ada"), w.jwt("ula"));
    let body = json!({"name": "svc", "user": w.uid("ula"), "scopes": ["read", "write"], "ip_allow": ["10.0.0.0/8", "2001:db8::1"], "lifetime_days": 30});
    let r = w.call("POST", "/v1/tokens", Some(&ada), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let t = r.json();
    let id = t["id"].as_str().unwrap().to_string();
    // Created by an admin for a user: Pending until the user downloads it.
    assert_eq!(t["status"], "pending");
    assert_eq!(t["created_by"], w.uid("ada"));
    assert_eq!(
        t["expires_at"],
        tessera_control_plane::timefmt::format(w.now() + 30 * 86_400)
    );

    // Pending -> Enabled by the owner's download.
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&ula),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let d = r.json();
    let jwt = d["jwt"].as_str().unwrap().to_string();
    assert_eq!(d["token"]["status"], "enabled");
    let idx = d["token"]["status_idx"].as_i64().unwrap();

    // The token format of ARCHITECTURE.md.
    let (h, c) = decode_jwt(&jwt);
    assert_eq!(h["typ"], "tessera-api+jwt");
    assert_eq!(h["alg"], "EdDSA");
    assert!(h["kid"].is_string());
    assert_eq!(
        h.as_object().unwrap().len(),
        3,
        "header is exactly alg, kid, typ"
    );
    assert_eq!(c["iss"], format!("{BASE}/v1/orgs/acme"));
    assert_eq!(c["sub"], w.uid("ula"));
    // The owner's username, for the identity headers (`sub` stays the id).
    assert_eq!(c["preferred_username"], "ula");
    assert_eq!(c["org"], "acme");
    assert_eq!(c["jti"], id.as_str());
    assert_eq!(c["aud"], "tessera");
    assert_eq!(c["iat"], w.now());
    assert_eq!(c["nbf"], w.now());
    assert_eq!(c["exp"], w.now() + 30 * 86_400);
    assert_eq!(c["scope"], "read write");
    assert_eq!(c["ip_allow"], json!(["10.0.0.0/8", "2001:db8::1"]));
    assert_eq!(
        c["status"],
        json!({"status_list": {"idx": idx, "uri": format!("{BASE}/v1/orgs/acme/status-list")}})
    );
    verify_with_jwks(&w, "acme", &jwt).await;
    assert_eq!(w.status_values("acme").await[idx as usize], 0);
    // Only the hash is stored; the JWT authenticates.
    assert_eq!(me_status(&w, &jwt).await, 200);

    // Enabled -> Disabled (suspended in the status list) -> Enabled.
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/disable"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.json()["status"], "disabled");
    assert_eq!(w.status_values("acme").await[idx as usize], 2);
    assert_eq!(me_status(&w, &jwt).await, 401);
    let r = w
        .call("POST", &format!("/v1/tokens/{id}/enable"), Some(&ada), None)
        .await;
    assert_eq!(r.json()["status"], "enabled");
    assert_eq!(w.status_values("acme").await[idx as usize], 0);
    assert_eq!(me_status(&w, &jwt).await, 200);

    // Regenerate: a new JWT under a new index; the old one is revoked.
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/regenerate"),
            Some(&ula),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let jwt2 = r.json()["jwt"].as_str().unwrap().to_string();
    let idx2 = r.json()["token"]["status_idx"].as_i64().unwrap();
    assert_ne!(idx, idx2);
    let values = w.status_values("acme").await;
    assert_eq!((values[idx as usize], values[idx2 as usize]), (1, 0));
    assert_eq!(me_status(&w, &jwt).await, 401);
    assert_eq!(me_status(&w, &jwt2).await, 200);
    assert_eq!(decode_jwt(&jwt2).1["jti"], id.as_str());

    // Edit outside the JWT: the JWT stays valid.
    let r = w
        .call(
            "PATCH",
            &format!("/v1/tokens/{id}"),
            Some(&ada),
            Some(json!({"name": "svc-2", "description": "d"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["jwt_revoked"], false);
    assert_eq!(r.json()["token"]["status"], "enabled");
    assert_eq!(me_status(&w, &jwt2).await, 200);
    // Edit inside the JWT (scopes): the JWT is revoked and the token is Pending again.
    let r = w
        .call(
            "PATCH",
            &format!("/v1/tokens/{id}"),
            Some(&ada),
            Some(json!({"scopes": ["read"]})),
        )
        .await;
    assert_eq!(r.json()["jwt_revoked"], true);
    assert_eq!(r.json()["token"]["status"], "pending");
    assert_eq!(w.status_values("acme").await[idx2 as usize], 1);
    assert_eq!(me_status(&w, &jwt2).await, 401);
    for field in [
        json!({"ip_allow": []}),
        json!({"lifetime_days": 60}),
        json!({"not_before": w.now() + 10}),
    ] {
        let r = w
            .call(
                "POST",
                &format!("/v1/tokens/{id}/download"),
                Some(&ula),
                None,
            )
            .await;
        let j = r.json()["jwt"].as_str().unwrap().to_string();
        let r = w
            .call(
                "PATCH",
                &format!("/v1/tokens/{id}"),
                Some(&ada),
                Some(field.clone()),
            )
            .await;
        assert_eq!(r.json()["jwt_revoked"], true, "{field}");
        assert_eq!(me_status(&w, &j).await, 401, "{field}");
    }
    // Pending -> Enabled again; then Revoked, which is final.
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&ula),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let jwt3 = r.json()["jwt"].as_str().unwrap().to_string();
    let idx3 = r.json()["token"]["status_idx"].as_i64().unwrap();
    let r = w
        .call("POST", &format!("/v1/tokens/{id}/revoke"), Some(&ula), None)
        .await;
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(w.status_values("acme").await[idx3 as usize], 1);
    assert_eq!(me_status(&w, &jwt3).await, 401);
    for (method, op, who) in [
        ("POST", "revoke", &ada),
        ("POST", "enable", &ada),
        ("POST", "disable", &ada),
        ("POST", "download", &ula),
        ("POST", "regenerate", &ula),
    ] {
        let r = w
            .call(method, &format!("/v1/tokens/{id}/{op}"), Some(who), None)
            .await;
        assert_eq!(r.status, 409, "{op} after revoke: {}", r.text());
    }
    let r = w
        .call(
            "PATCH",
            &format!("/v1/tokens/{id}"),
            Some(&ada),
            Some(json!({"name": "z"})),
        )
        .await;
    assert_eq!(r.status, 409);

    // Delete: gone from reads and lists, still revoked in the status list.
    let r = w
        .call("DELETE", &format!("/v1/tokens/{id}"), Some(&ada), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(
        w.call("GET", &format!("/v1/tokens/{id}"), Some(&ada), None)
            .await
            .status,
        404
    );
    let list = w
        .call("GET", "/v1/tokens?per_page=500", Some(&ada), None)
        .await
        .json();
    assert!(list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["id"] != id.as_str()));
    assert_eq!(w.status_values("acme").await[idx3 as usize], 1);
    assert_eq!(
        w.call("DELETE", &format!("/v1/tokens/{id}"), Some(&ada), None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn pending_disabled_and_expired_transitions() {
    let w = World::new().await;
    let (ada, ula) = (w.jwt("ada"), w.jwt("ula"));
    // Pending -> Revoked without ever being minted.
    let id = w.token_in_state(&w.uid("ula"), "pending").await;
    let r = w
        .call("POST", &format!("/v1/tokens/{id}/revoke"), Some(&ula), None)
        .await;
    assert_eq!(r.json()["status"], "revoked");
    // Pending + disabled: cannot be downloaded until enabled.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "off", "user": w.uid("ula"), "enabled": false})),
        )
        .await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["status"], "disabled");
    assert_eq!(
        w.call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&ula),
            None
        )
        .await
        .status,
        409
    );
    w.call("POST", &format!("/v1/tokens/{id}/enable"), Some(&ada), None)
        .await;
    assert_eq!(status_of(&w, &ula, &id).await, "pending");
    // Enabled -> Expired with time.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ula),
            Some(json!({"name": "short", "expires_at": w.now() + 3600})),
        )
        .await;
    assert_eq!(r.json()["lifetime_days"], Value::Null, "a custom expiry");
    let id = r.json()["id"].as_str().unwrap().to_string();
    let jwt = w
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
    let pending = w.token_in_state(&w.uid("ula"), "pending").await;
    w.advance(3600 + 61);
    assert_eq!(me_status(&w, &jwt).await, 401);
    let ula = w.login(&w.uid("ula")).await;
    assert_eq!(status_of(&w, &ula, &id).await, "expired");
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/regenerate"),
            Some(&ula),
            None,
        )
        .await;
    assert_eq!(r.status, 409);
    // Still pending (90 days), not expired.
    assert_eq!(status_of(&w, &ula, &pending).await, "pending");
    // Lifetimes: the list, or a custom expiry up to the org maximum.
    for (body, field) in [
        (json!({"name": "a", "lifetime_days": 45}), "lifetime_days"),
        (
            json!({"name": "b", "expires_at": w.now() + 400 * 86_400}),
            "expires_at",
        ),
        (
            json!({"name": "c", "expires_at": w.now() - 1}),
            "expires_at",
        ),
        (
            json!({"name": "d", "lifetime_days": 30, "expires_at": w.now() + 60}),
            "expires_at",
        ),
        (
            json!({"name": "e", "not_before": w.now() + 100 * 86_400}),
            "not_before",
        ),
        (
            json!({"name": "f", "ip_allow": ["10.0.0.0/33"]}),
            "ip_allow[0]",
        ),
        (
            json!({"name": "g", "ip_allow": ["example.com"]}),
            "ip_allow[0]",
        ),
        (json!({"name": "h", "scopes": ["a b"]}), "scopes[0]"),
        (json!({"name": "  "}), "name"),
    ] {
        let r = w
            .call("POST", "/v1/tokens", Some(&ula), Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}");
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{body}: {}",
            r.text()
        );
    }
    // Names are unique per user.
    w.call(
        "POST",
        "/v1/tokens",
        Some(&ula),
        Some(json!({"name": "dup"})),
    )
    .await;
    assert_eq!(
        w.call(
            "POST",
            "/v1/tokens",
            Some(&ula),
            Some(json!({"name": "dup"}))
        )
        .await
        .status,
        409
    );
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "dup"})),
        )
        .await;
    assert_eq!(r.status, 201, "another user may reuse the name");
}

#[tokio::test]
async fn download_once_regenerate_and_revoke_all() {
    let w = World::new().await;
    let (ada, ula) = (w.jwt("ada"), w.jwt("ula"));
    let mut ula_tokens = Vec::new();
    for i in 0..3 {
        let id = w
            .call(
                "POST",
                "/v1/tokens",
                Some(&ula),
                Some(json!({"name": format!("t{i}")})),
            )
            .await
            .json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let first = w
            .call(
                "POST",
                &format!("/v1/tokens/{id}/download"),
                Some(&ula),
                None,
            )
            .await;
        assert_eq!(first.status, 200);
        let second = w
            .call(
                "POST",
                &format!("/v1/tokens/{id}/download"),
                Some(&ula),
                None,
            )
            .await;
        assert_eq!(second.status, 409, "download once");
        assert_eq!(second.json()["error"], "conflict");
        ula_tokens.push(id);
    }
    let ned_token = w.token_in_state(&w.uid("ned"), "enabled").await;
    // A user revokes all of their own tokens (the login token too).
    let r = w
        .call(
            "POST",
            "/v1/tokens/revoke-all",
            Some(&ula),
            Some(json!({"user": "ula"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revoked"], 4);
    assert_eq!(me_status(&w, &ula).await, 401);
    for id in &ula_tokens {
        assert_eq!(status_of(&w, &ada, id).await, "revoked");
    }
    assert_eq!(status_of(&w, &ada, &ned_token).await, "enabled");
    // Whole org: admin only; partnerco is untouched.
    let ned = w.jwt("ned");
    let r = w
        .call(
            "POST",
            "/v1/tokens/revoke-all",
            Some(&ned),
            Some(json!({"org": "acme"})),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = w
        .call(
            "POST",
            "/v1/tokens/revoke-all",
            Some(&ada),
            Some(json!({"org": "acme"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["revoked"].as_i64().unwrap() >= 5);
    assert_eq!(me_status(&w, &ned).await, 401);
    assert_eq!(me_status(&w, &ada).await, 401);
    assert_eq!(me_status(&w, &w.jwt("pat")).await, 200);
    let r = w
        .call(
            "POST",
            "/v1/tokens/revoke-all",
            Some(&w.jwt("pat")),
            Some(json!({"user": "x", "org": "y"})),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn exchange_for_access_tokens() {
    let w = World::new().await;
    let ula = w.jwt("ula");
    let id = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ula),
            Some(json!({"name": "x", "scopes": ["write"]})),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
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
    let r = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": api})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 1800);
    let at = v["access_token"].as_str().unwrap().to_string();
    let (h, c) = decode_jwt(&at);
    let (_, parent) = decode_jwt(&api);
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(c["parent"], id.as_str());
    assert_eq!(c["client_id"], id.as_str());
    assert_eq!(
        c["status"], parent["status"],
        "same status idx and uri as the parent"
    );
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        1800
    );
    assert!(c["jti"].as_str().unwrap().starts_with("at_"));
    for k in [
        "iss",
        "sub",
        "preferred_username",
        "org",
        "aud",
        "scope",
        "ip_allow",
    ] {
        assert_eq!(c[k], parent[k], "{k}");
    }
    assert!(c["preferred_username"].is_string());
    verify_with_jwks(&w, "acme", &at).await;
    assert_eq!(me_status(&w, &at).await, 200);

    // RFC 8693 form.
    let form = format!(
        "grant_type={}&subject_token={api}&subject_token_type={}",
        "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange",
        "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
    );
    let r = w
        .raw(
            "POST",
            "/v1/auth/accesstoken",
            None,
            "application/x-www-form-urlencoded",
            form.into_bytes(),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let r = w
        .raw(
            "POST",
            "/v1/auth/accesstoken",
            None,
            "application/x-www-form-urlencoded",
            b"grant_type=password&subject_token=x&subject_token_type=y".to_vec(),
            &[],
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );
    // Only API tokens are exchanged.
    let r = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": at})),
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": "not.a.jwt"})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );

    // Revoking the parent refuses its access tokens and further exchanges.
    w.call("POST", &format!("/v1/tokens/{id}/revoke"), Some(&ula), None)
        .await;
    assert_eq!(me_status(&w, &at).await, 401);
    let idx = c["status"]["status_list"]["idx"].as_i64().unwrap() as usize;
    assert_eq!(
        w.status_values("acme").await[idx],
        1,
        "the edge refuses it too"
    );
    let r = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": api})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("revoked"));
    // Both exchanges and the refusal are in the token's authentication log.
    let log = w
        .call(
            "GET",
            &format!("/v1/tokens/{id}/auth-log"),
            Some(&ula),
            None,
        )
        .await
        .json();
    let outcomes: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "exchange")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["deny", "allow", "allow"]);

    // An access token never outlives its parent.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ula),
            Some(json!({"name": "brief", "expires_at": w.now() + 600})),
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
    let r = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": api})),
        )
        .await;
    assert_eq!(r.json()["expires_in"], 600);
}

#[tokio::test]
async fn search_filters_sorts_and_pages() {
    let w = World::new().await;
    let (ada, ula) = (w.jwt("ada"), w.jwt("ula"));
    for (who, name, desc, days) in [
        ("ula", "alpha", "billing export", 30),
        ("ula", "Bravo", "nightly sync", 90),
        ("ned", "charlie", "Billing reports", 180),
        ("uma", "delta", "ad hoc", 365),
    ] {
        let r = w
            .call("POST", "/v1/tokens", Some(&ada), Some(json!({"name": name, "description": desc, "user": w.uid(who), "lifetime_days": days})))
            .await;
        assert_eq!(r.status, 201);
    }
    let names = |v: &Value| -> Vec<String> {
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let get = |q: &str| {
        let q = q.to_string();
        let ada = ada.clone();
        let w = &w;
        async move {
            w.call("GET", &format!("/v1/tokens?{q}"), Some(&ada), None)
                .await
        }
    };
    // Text search over name, description and username (case-insensitive).
    assert_eq!(
        names(&get("q=billing&sort=name").await.json()),
        ["alpha", "charlie"]
    );
    assert_eq!(names(&get("q=BRAV").await.json()), ["Bravo"]);
    let by_user = get("q=ned").await.json();
    assert!(names(&by_user).contains(&"charlie".to_string()));
    assert!(!names(&by_user).contains(&"alpha".to_string()));
    // LIKE wildcards are literal.
    assert_eq!(get("q=%25").await.json()["total"], 0);
    // user filter, by username or id.
    assert_eq!(names(&get("user=uma&q=delta").await.json()), ["delta"]);
    assert_eq!(
        names(&get(&format!("user={}&q=delta", w.uid("uma"))).await.json()),
        ["delta"]
    );
    // expires_before.
    let soon = tessera_control_plane::timefmt::format(w.now() + 60 * 86_400);
    let r = get(&format!("expires_before={soon}&q=a")).await.json();
    assert_eq!(names(&r), ["alpha"]);
    // Status: each filter returns exactly the tokens whose derived status matches, and the
    // filters partition the list (SQL and Rust derive the same status).
    let all = get("per_page=500").await.json();
    let total = all["total"].as_i64().unwrap();
    let mut sum = 0;
    for s in ["pending", "enabled", "disabled", "revoked", "expired"] {
        let r = get(&format!("status={s}&per_page=500")).await.json();
        assert!(
            r["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["status"] == s),
            "{s}"
        );
        sum += r["total"].as_i64().unwrap();
    }
    assert_eq!(sum, total);
    assert_eq!(get("status=pending&q=a&sort=name").await.json()["total"], 4);
    // Sort and pages.
    assert_eq!(
        names(&get("q=a&status=pending&sort=name").await.json()),
        ["alpha", "Bravo", "charlie", "delta"]
    );
    assert_eq!(
        names(&get("q=a&status=pending&sort=-name").await.json()),
        ["delta", "charlie", "Bravo", "alpha"]
    );
    assert_eq!(
        names(
            &get("q=a&status=pending&sort=expires_at&per_page=2&page=2")
                .await
                .json()
        ),
        ["charlie", "delta"]
    );
    // Keyset pages: `next` leads to the following page, the last page has none.
    let first = get("q=a&status=pending&sort=name&per_page=3").await.json();
    assert_eq!(names(&first), ["alpha", "Bravo", "charlie"]);
    let next = first["next"].as_str().expect("a next cursor").to_string();
    let second = get(&format!(
        "q=a&status=pending&sort=name&per_page=3&after={next}"
    ))
    .await
    .json();
    assert_eq!(names(&second), ["delta"]);
    assert_eq!(second["total"], 4);
    assert!(second.get("next").is_none(), "{second}");
    // Visibility: a user sees only their own; a partner their own and delegating customers'.
    let mine = w
        .call("GET", "/v1/tokens?per_page=500", Some(&ula), None)
        .await
        .json();
    assert!(mine["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["username"] == "ula"));
    let pat = w
        .call("GET", "/v1/tokens?per_page=500", Some(&w.jwt("pat")), None)
        .await
        .json();
    let owners: std::collections::BTreeSet<&str> = pat["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["username"].as_str().unwrap())
        .collect();
    assert_eq!(owners.into_iter().collect::<Vec<_>>(), ["pat", "uma"]);
    // Bad parameters name themselves.
    for (q, field) in [
        ("sort=colour", "sort"),
        ("status=lost", "status"),
        ("page=0", "page"),
        ("per_page=100000", "per_page"),
        ("page=abc", "page"),
        ("expires_before=soon", "expires_before"),
        ("colour=red", "colour"),
        ("after=bm90LWEtY3Vyc29y", "after"),
        ("after=%E2%9C%93", "after"),
        // A cursor of another sort's key type, or with more than [key, id]: refused on
        // both backends (SQLite once answered them).
        ("sort=name&after=WzEsIngiXQ", "after"),
        ("after=WyJhIiwieCJd", "after"),
        ("after=WzEsIngiLDJd", "after"),
        ("page=2&after=W10", "page"),
    ] {
        let r = get(q).await;
        assert_eq!(r.status, 400, "{q}");
        assert!(
            r.json()["message"].as_str().unwrap().starts_with(field),
            "{q}: {}",
            r.text()
        );
    }
}

#[tokio::test]
async fn csv_export_quotes_fields() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    // (Line breaks are control characters, refused in names since the hardening issue.)
    let tricky = ["comma, inside", "say \"hi\"", "all, \"three\" kinds"];
    for name in tricky {
        let r = w
            .call(
                "POST",
                "/v1/tokens",
                Some(&ada),
                Some(json!({"name": name, "description": "csv test, ok"})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let formula = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "=HYPERLINK(1)", "description": "csv test, ok"})),
        )
        .await;
    assert_eq!(formula.status, 201);
    let r = w
        .call(
            "GET",
            "/v1/tokens.csv?q=csv%20test&sort=created_at",
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = r.text();
    assert!(text.contains("\"say \"\"hi\"\"\""));
    let rows = tessera_control_plane::csv::parse(&text);
    assert_eq!(
        rows[0],
        tessera_control_plane::service::views::TOKEN_COLUMNS.to_vec()
    );
    assert_eq!(rows.len(), 1 + tricky.len() + 1);
    let name_col = rows[0].iter().position(|c| c == "name").unwrap();
    let desc_col = rows[0].iter().position(|c| c == "description").unwrap();
    let mut got: Vec<&str> = rows[1..].iter().map(|r| r[name_col].as_str()).collect();
    let mut want = tricky.to_vec();
    want.push("'=HYPERLINK(1)");
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(rows[1..]
        .iter()
        .all(|r| r[desc_col] == "csv test, ok" && r.len() == rows[0].len()));
    // Same filters as search.
    let r = w
        .call("GET", "/v1/tokens.csv?q=three", Some(&ada), None)
        .await;
    assert_eq!(tessera_control_plane::csv::parse(&r.text()).len(), 2);
    assert_eq!(
        w.call("GET", "/v1/tokens.csv?status=nope", Some(&ada), None)
            .await
            .status,
        400
    );
}

/// A revoked or expired token is not `enabled` in the API or the CSV, whatever its
/// switch was (issue 24: the CSV said `enabled,true` for a revoked token).
#[tokio::test]
async fn revoked_and_expired_tokens_are_not_enabled() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let uid = w.uid("ada");
    let expiring = w.token_in_state(&uid, "enabled").await;
    let revoked = w.token_in_state(&uid, "enabled").await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{revoked}/revoke"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Past the fixture's lifetime (the longest the org offers); the other tokens are
    // made after, so they live on.
    w.advance(401 * 86_400);
    let ada = w.login(&uid).await;
    for (state, enabled) in [
        ("enabled", true),
        ("pending", true),
        ("disabled", false),
        ("revoked", false),
        ("expired", false),
    ] {
        let id = match state {
            "revoked" => revoked.clone(),
            "expired" => expiring.clone(),
            s => w.token_in_state(&uid, s).await,
        };
        let r = w
            .call("GET", &format!("/v1/tokens/{id}"), Some(&ada), None)
            .await;
        assert_eq!(r.status, 200, "{state}");
        let v = r.json();
        assert_eq!(v["status"], state, "{v}");
        assert_eq!(v["enabled"], enabled, "{state}: {v}");
        let csv = w
            .call(
                "GET",
                &format!("/v1/tokens.csv?status={state}"),
                Some(&ada),
                None,
            )
            .await
            .text();
        let rows = tessera_control_plane::csv::parse(&csv);
        let col = rows[0].iter().position(|c| c == "enabled").unwrap();
        assert!(
            rows[1..].iter().all(|r| r[col] == enabled.to_string()),
            "{state}: {csv}"
        );
    }
}
