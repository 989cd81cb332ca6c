//! The API surface: the OpenAPI document matches the router, bad input is a 400 naming
//! the field on every route, status lists and their change feed, keys, usage and logs.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{decode_jwt, signature_verifies, World, BASE};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tessera_control_plane::api::{routes, Auth};

/// A concrete path for a route template.
fn concrete(path: &str, token_id: &str, user_id: &str) -> String {
    path.replace("{org}", "acme").replace(
        "{id}",
        if path.starts_with("/v1/users") {
            user_id
        } else {
            token_id
        },
    )
}

#[tokio::test]
async fn openapi_describes_exactly_the_routes() {
    let w = World::new().await;
    let doc = w.call("GET", "/openapi.json", None, None).await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, routes().len());
    let id = w.token_in_state(&w.uid("ada"), "enabled").await;
    for r in routes() {
        let op = &paths[r.path][r.method.as_str().to_ascii_lowercase()];
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{} {}",
            r.method,
            r.path
        );
        assert_eq!(
            op["requestBody"].is_object(),
            r.body.is_some(),
            "{} {}",
            r.method,
            r.path
        );
        // Every documented operation is routed: the answer is never the router's own
        // "no route" or "method not allowed".
        let resp = w
            .call(
                r.method.as_str(),
                &concrete(r.path, &id, &w.uid("ada")),
                None,
                None,
            )
            .await;
        let code = serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .map(|v| v["error"].clone());
        assert!(
            resp.status != 405 && code != Some(json!("no_route")),
            "{} {} is documented but not routed: {} {}",
            r.method,
            r.path,
            resp.status,
            resp.text()
        );
        // Routes that need a token say so in the document and refuse without one.
        if r.auth.personal() {
            let session = if r.method == "GET" {
                json!({"session": []})
            } else {
                json!({"session": [], "csrf": []})
            };
            let expected = if r.auth == Auth::Token {
                json!([{"tessera": []}, session])
            } else {
                json!([session])
            };
            assert_eq!(op["security"], expected, "{} {}", r.method, r.path);
            assert_eq!(resp.status, 401, "{} {}", r.method, r.path);
            assert!(resp.headers.contains_key("www-authenticate"));
        }
    }
    // And what is not documented is not routed.
    let r = w.call("GET", "/v1/nothing", None, None).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (404, json!("no_route"))
    );
    let r = w.call("PUT", "/v1/tokens", None, None).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].clone()),
        (405, json!("method_not_allowed"))
    );
}

/// Whether the route takes a JSON body.
fn takes_json(r: &tessera_control_plane::api::Route) -> bool {
    r.request.iter().any(|b| b.media_type == "application/json")
}

#[tokio::test]
async fn documented_examples_are_accepted_by_the_parser() {
    let w = World::new().await;
    let id = w.token_in_state(&w.uid("ada"), "enabled").await;
    // JSON examples (a form-only route's example is a form's fields: tests/introspect.rs).
    for r in routes()
        .into_iter()
        .filter(|r| r.body.is_some() && takes_json(r))
    {
        let body = r.body.clone().unwrap_or_default();
        let resp = w
            .call(
                r.method.as_str(),
                &concrete(r.path, &id, &w.uid("ada")),
                Some(&w.jwt("ada")),
                Some(body),
            )
            .await;
        let code = resp.json()["error"].clone();
        assert_ne!(
            code,
            json!("invalid_body"),
            "{} {}: {}",
            r.method,
            r.path,
            resp.text()
        );
    }
}

#[tokio::test]
async fn a_malformed_body_on_each_route_is_a_400_naming_the_field() {
    let w = World::new().await;
    let id = w.token_in_state(&w.uid("ada"), "enabled").await;
    let ada = w.jwt("ada");
    let edge = w
        .call(
            "POST",
            "/v1/orgs/acme/edge-credentials",
            Some(&ada),
            Some(json!({"name": "e"})),
        )
        .await
        .json();
    let edge_secret = edge["secret"].as_str().unwrap().to_string();
    let mut checked = 0;
    for r in routes() {
        // The scanner's route checks the signature headers before it reads a body
        // (tests/leaks.rs checks its answers); SCIM routes answer SCIM errors
        // (tests/scim.rs checks their bad bodies).
        // A form-only route refuses JSON with 415 (tests/introspect.rs checks its forms).
        if r.body.is_none()
            || !takes_json(&r)
            || r.path == "/v1/secret-scanning/github"
            || r.auth == Auth::Scim
        {
            continue;
        }
        let cred = if r.auth == Auth::Edge {
            edge_secret.clone()
        } else {
            ada.clone()
        };
        let path = concrete(r.path, &id, &w.uid("ada"));
        for (bad, field) in [
            (b"{\"name\": ".to_vec(), "body"),
            (b"[1, 2]".to_vec(), "body"),
            (b"\"text\"".to_vec(), "body"),
            (b"{\"no_such_field\": 1}".to_vec(), "no_such_field"),
            (vec![0xff, 0xfe], "body"),
        ] {
            let resp = w
                .raw(
                    r.method.as_str(),
                    &path,
                    Some(&cred),
                    "application/json",
                    bad.clone(),
                    &[],
                )
                .await;
            assert_eq!(
                resp.status,
                400,
                "{} {} with {:?}: {}",
                r.method,
                r.path,
                String::from_utf8_lossy(&bad),
                resp.text()
            );
            let v = resp.json();
            assert!(v["error"].is_string());
            assert!(
                // A truncated object whose first member the route does not take is refused
                // for that member, which the parser meets first.
                v["message"].as_str().unwrap().starts_with(field)
                    || (field == "body"
                        && v["message"]
                            .as_str()
                            .unwrap()
                            .starts_with("name: not a field of this request")),
                "{} {}: {}",
                r.method,
                r.path,
                resp.text()
            );
            // In the user's words: no parser positions, Rust type names or backticks.
            let msg = v["message"].as_str().unwrap();
            for parser_word in [" at line ", " column ", "`", "u32", "i64", "struct ", "EOF"] {
                assert!(!msg.contains(parser_word), "{} {}: {msg}", r.method, r.path);
            }
        }
        // A wrong type inside the example names the path to the field.
        if let Some(Value::Object(example)) = &r.body {
            let (k, v) = example.iter().next().unwrap();
            let wrong = if v.is_array() || v.is_string() {
                json!(17)
            } else {
                json!([true])
            };
            let mut body = example.clone();
            body.insert(k.clone(), wrong);
            let resp = w
                .call(
                    r.method.as_str(),
                    &path,
                    Some(&cred),
                    Some(Value::Object(body)),
                )
                .await;
            assert_eq!(resp.status, 400, "{} {}: {}", r.method, r.path, resp.text());
            let msg = resp.json()["message"].as_str().unwrap().to_string();
            assert!(
                msg.starts_with(&format!("{k}:")) || msg.starts_with(&format!("{k}[")),
                "{} {}: {msg}",
                r.method,
                r.path
            );
        }
        checked += 1;
    }
    assert!(checked >= 10);
}

#[tokio::test]
async fn odd_input_never_gets_a_500() {
    let w = World::new().await;
    let id = w.token_in_state(&w.uid("ada"), "enabled").await;
    let ada = w.jwt("ada");
    let odd_bodies = [
        json!(null),
        json!({}),
        json!({"name": "\u{0}"}),
        json!({"name": "x".repeat(100_000)}),
        json!({"expires_at": "9999-99-99"}),
        json!({"expires_at": i64::MAX}),
        json!({"lifetime_days": i64::MIN}),
        json!({"ip_allow": ["::/129"]}),
        json!({"user": "../../etc"}),
        json!({"events": [{"token_id": "x", "at": -1, "outcome": "allow"}]}),
        json!({"id": "UPPER"}),
        json!({"role": "god", "username": "x"}),
        json!({"refreshToken": "a.b.c"}),
        json!({"refreshToken": "eyJ9.eyJ9.AA"}),
    ];
    let queries = [
        "?page=-1",
        "?per_page=99999999999999999999",
        "?since=%ZZ",
        "?sort=%27;drop",
        "?wait=1000",
        "?format=xml",
        "?q=%00",
    ];
    for r in routes() {
        let path = concrete(r.path, &id, &w.uid("ada"));
        for body in &odd_bodies {
            let resp = w
                .call(r.method.as_str(), &path, Some(&ada), Some(body.clone()))
                .await;
            assert!(
                resp.status.as_u16() < 500,
                "{} {} {body}: {} {}",
                r.method,
                r.path,
                resp.status,
                resp.text()
            );
        }
        for q in queries {
            let resp = w
                .call(r.method.as_str(), &format!("{path}{q}"), Some(&ada), None)
                .await;
            assert!(
                resp.status.as_u16() < 500,
                "{} {path}{q}: {} {}",
                r.method,
                resp.status,
                resp.text()
            );
        }
    }
    for path in [
        "/v1/tokens/%00",
        "/v1/orgs/..%2f/jwks.json",
        "/v1/users/%E2%80%AE",
    ] {
        let resp = w.call("GET", path, Some(&ada), None).await;
        assert!(resp.status.as_u16() < 500, "{path}");
    }
    let resp = w.call("GET", "/v1/me", Some("garbage"), None).await;
    assert_eq!(resp.status, 401);
    let resp = w
        .raw(
            "GET",
            "/v1/me",
            None,
            "",
            vec![],
            &[("authorization", "Basic dXNlcjpwYXNz")],
        )
        .await;
    assert_eq!(resp.status, 401);
    // `Token <jwt>` is accepted as well as `Bearer <jwt>`.
    let resp = w
        .raw(
            "GET",
            "/v1/me",
            None,
            "",
            vec![],
            &[("authorization", &format!("Token {ada}"))],
        )
        .await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn status_list_etag_jwt_and_long_poll() {
    let w = World::new().await;
    let r = w.call("GET", "/v1/orgs/acme/status-list", None, None).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["bits"], 2);
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "raw form is exactly bits and lst"
    );
    let etag = r.headers["etag"].to_str().unwrap().to_string();
    let version: i64 = r.headers["tessera-status-version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let r = w
        .raw(
            "GET",
            "/v1/orgs/acme/status-list",
            None,
            "",
            vec![],
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(r.status, 304);
    // Signed form, verified with the org's JWKS.
    let r = w
        .raw(
            "GET",
            "/v1/orgs/acme/status-list",
            None,
            "",
            vec![],
            &[("accept", "application/statuslist+jwt")],
        )
        .await;
    assert_eq!(r.headers["content-type"], "application/statuslist+jwt");
    let jwt = r.text();
    let (h, c) = decode_jwt(&jwt);
    assert_eq!(h["typ"], "statuslist+jwt");
    assert_eq!(c["sub"], format!("{BASE}/v1/orgs/acme/status-list"));
    assert_eq!(c["status_list"], v);
    let jwks = w
        .call("GET", "/v1/orgs/acme/jwks.json", None, None)
        .await
        .json();
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    assert!(signature_verifies(&jwks, &jwt));

    // No change: the poll waits, then answers 304.
    let start = Instant::now();
    let r = w
        .call(
            "GET",
            &format!("/v1/orgs/acme/status-list?since={version}&wait=1"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 304);
    assert!(start.elapsed() >= Duration::from_millis(900));
    // A change answers at once.
    let id = w.token_in_state(&w.uid("ula"), "enabled").await;
    let after_mint = w.call("GET", "/v1/orgs/acme/status-list", None, None).await;
    let version: i64 = after_mint.headers["tessera-status-version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let poll = {
        let app = w.app.clone();
        tokio::spawn(async move {
            use tower::ServiceExt;
            let req = axum::http::Request::get(format!(
                "/v1/orgs/acme/status-list?since={version}&wait=30"
            ))
            .body(axum::body::Body::empty())
            .unwrap();
            let start = Instant::now();
            let resp = app.oneshot(req).await.unwrap();
            (resp.status(), start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/revoke"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let (status, took) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(5), "{took:?}");
    // `since` older than now answers immediately.
    let r = w
        .call(
            "GET",
            "/v1/orgs/acme/status-list?since=0&wait=30",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    // So does a `since` ahead of ours (a client that saw a newer database): it gets our
    // list instead of waiting for a version that may never come.
    let start = Instant::now();
    let r = w
        .call(
            "GET",
            "/v1/orgs/acme/status-list?since=999999&wait=30",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        w.call("GET", "/v1/orgs/nope/status-list", None, None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn key_rotation_keeps_old_keys_while_their_tokens_live() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let old = decode_jwt(&ada).0["kid"].as_str().unwrap().to_string();
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/keys/rotate",
            Some(&ada),
            Some(json!({"alg": "ES256"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["retired"], json!([old]));
    let new_kid = r.json()["kid"].as_str().unwrap().to_string();
    // The admin's listing says which key signs new tokens, and until when the old one
    // stays published; people without the admin role get none of it.
    let keys = w.call("GET", "/v1/orgs/acme/keys", Some(&ada), None).await;
    assert_eq!(keys.status, 200, "{}", keys.text());
    let keys = keys.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(
        (keys[0]["kid"].as_str(), &keys[0]["active"], &keys[0]["alg"]),
        (Some(new_kid.as_str()), &json!(true), &json!("ES256"))
    );
    assert!(keys[0]["retired_at"].is_null() && keys[0]["published_until"].is_null());
    assert_eq!(
        (keys[1]["kid"].as_str(), &keys[1]["active"]),
        (Some(old.as_str()), &json!(false))
    );
    assert!(keys[1]["retired_at"].is_string() && keys[1]["published_until"].is_string());
    assert_eq!(
        w.call("GET", "/v1/orgs/acme/keys", Some(&w.jwt("ned")), None)
            .await
            .status,
        403
    );
    let jwks = w
        .call("GET", "/v1/orgs/acme/jwks.json", None, None)
        .await
        .json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&old.as_str()));
    for k in jwks["keys"].as_array().unwrap() {
        assert!(k.get("d").is_none(), "no private members");
        assert_eq!(k["use"], "sig");
    }
    // Old tokens still work; new ones are ES256 under the new key.
    assert_eq!(w.call("GET", "/v1/me", Some(&ada), None).await.status, 200);
    let fresh = w.login(&w.uid("ula")).await;
    let (h, _) = decode_jwt(&fresh);
    assert_eq!(h["alg"], "ES256");
    assert_ne!(h["kid"], old.as_str());
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == h["kid"])
        .unwrap();
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert_eq!(key["alg"], "ES256");
    assert!(signature_verifies(&json!({ "keys": [key] }), &fresh));
    assert_eq!(
        w.call("GET", "/v1/me", Some(&fresh), None).await.status,
        200
    );
    // Once everything the old key signed has expired, it leaves the JWKS.
    w.advance(400 * 86_400);
    let jwks = w
        .call("GET", "/v1/orgs/acme/jwks.json", None, None)
        .await
        .json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_ne!(jwks["keys"][0]["kid"], old.as_str());
}

#[tokio::test]
async fn an_es256_org_signs_es256_tokens() {
    let w = World::new().await;
    let root = w.jwt("root-admin");
    let r = w
        .call(
            "POST",
            "/v1/orgs",
            Some(&root),
            Some(json!({"id": "p256co", "key_alg": "ES256", "max_lifetime_days": 30})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = w
        .call(
            "POST",
            "/v1/orgs/p256co/users",
            Some(&root),
            Some(json!({"username": "eve", "role": "admin"})),
        )
        .await;
    let eve = w.login(r.json()["id"].as_str().unwrap()).await;
    assert_eq!(decode_jwt(&eve).0["alg"], "ES256");
    assert_eq!(
        w.call("GET", "/v1/me", Some(&eve), None).await.json()["org"]["id"],
        "p256co"
    );
    // The org maximum caps lifetimes.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&eve),
            Some(json!({"name": "long", "lifetime_days": 60})),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn usage_events_feed_the_auth_log_and_last_used() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let secret = w
        .call(
            "POST",
            "/v1/orgs/acme/edge-credentials",
            Some(&ada),
            Some(json!({"name": "edge-1"})),
        )
        .await
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let ula_tok = w.token_in_state(&w.uid("ula"), "enabled").await;
    let ned_tok = w.token_in_state(&w.uid("ned"), "enabled").await;
    // Usage records carry Unix seconds; the API shows them in RFC 3339.
    let ago = |d: i64| w.now() - d;
    let at = |d: i64| tessera_control_plane::timefmt::format(ago(d));
    let batch = json!({"events": [
        {"token_id": ula_tok, "at": ago(30), "ip": "192.0.2.7", "outcome": "allow", "method": "GET", "path": "/x"},
        {"token_id": ula_tok, "at": ago(20), "ip": "192.0.2.8", "outcome": "deny", "reason": "ip_not_allowed", "method": "GET", "path": "/x"},
        {"token_id": "at_123", "parent": ned_tok, "at": ago(10), "ip": "2001:db8::5", "outcome": "allow", "method": "POST", "path": "/y"},
        {"token_id": "tok_unknown", "at": ago(5), "outcome": "allow", "method": "GET", "path": "/"},
    ]});
    let r = w
        .call("POST", "/v1/usage", Some(&secret), Some(batch))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 3);
    assert_eq!(r.json()["unknown_tokens"], json!(["tok_unknown"]));
    // last used comes from allowed events only.
    let t = w
        .call("GET", &format!("/v1/tokens/{ula_tok}"), Some(&ada), None)
        .await
        .json();
    assert_eq!(
        (t["last_used_at"].as_str(), t["last_used_ip"].as_str()),
        (Some(at(30).as_str()), Some("192.0.2.7"))
    );
    // Per-token log, newest first, with filters.
    let ula = w.jwt("ula");
    let log = w
        .call(
            "GET",
            &format!("/v1/tokens/{ula_tok}/auth-log"),
            Some(&ula),
            None,
        )
        .await
        .json();
    let outcomes: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["deny", "allow"]);
    let log = w
        .call(
            "GET",
            &format!("/v1/tokens/{ula_tok}/auth-log?outcome=deny"),
            Some(&ula),
            None,
        )
        .await
        .json();
    assert_eq!(log["events"][0]["reason"], "ip_not_allowed");
    // The caller's log: a user sees their own tokens, an admin the org's.
    // (Uses of tokens against the API itself are logged too, with source `api`.)
    let from_edges = |log: &Value| {
        log["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"] != "api")
            .count()
    };
    let mine = w.call("GET", "/v1/auth-log", Some(&ula), None).await.json();
    assert_eq!(from_edges(&mine), 2, "{mine}");
    let all = w
        .call(
            "GET",
            &format!("/v1/auth-log?since={}", at(100)),
            Some(&ada),
            None,
        )
        .await
        .json();
    assert_eq!(from_edges(&all), 3, "{all}");
    let r = w
        .call(
            "GET",
            &format!("/v1/auth-log?user={}", w.uid("ned")),
            Some(&ula),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    // Bad credential, bad event.
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some("tse_nope"),
            Some(json!({"events": []})),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = w.call("POST", "/v1/usage", Some(&secret), Some(json!({"events": [{"token_id": ula_tok, "at": ago(1), "ip": "nope", "outcome": "allow", "method": "GET", "path": "/"}]}))).await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("events[0].ip")
        ),
        (400, true)
    );
    // An edge of another org cannot write acme's log.
    let root = w.jwt("root-admin");
    let other = w
        .call(
            "POST",
            "/v1/orgs/root/edge-credentials",
            Some(&root),
            Some(json!({"name": "x"})),
        )
        .await
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some(&other),
            Some(json!({"events": [{"token_id": ula_tok, "at": ago(1), "outcome": "allow", "method": "GET", "path": "/"}]})),
        )
        .await;
    assert_eq!(r.json()["accepted"], 0);
}

/// The web page's Authentication log (control-plane/web/app.js) reads the fields the API
/// sends: its table cells and every CSV column are fields of a real event, and the CSV,
/// made by the page's own function (run in node where it is installed), has the token and
/// its user in their columns.
#[tokio::test]
async fn the_web_pages_auth_log_and_its_csv_show_the_token_and_user() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let secret = w
        .call(
            "POST",
            "/v1/orgs/acme/edge-credentials",
            Some(&ada),
            Some(json!({"name": "edge-csv"})),
        )
        .await
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let tok = w.token_in_state(&w.uid("ula"), "enabled").await;
    let batch = json!({"events": [
        {"token_id": tok, "at": w.now() - 5, "ip": "192.0.2.9", "outcome": "allow", "method": "GET", "path": "/x"},
    ]});
    let r = w
        .call("POST", "/v1/usage", Some(&secret), Some(batch))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let log = w
        .call(
            "GET",
            &format!("/v1/auth-log?user={}", w.uid("ula")),
            Some(&ada),
            None,
        )
        .await
        .json();
    let events: Vec<Value> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] != "api")
        .cloned()
        .collect();
    assert_eq!(events.len(), 1, "{log}");
    let event = events[0].as_object().unwrap();

    let app = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/web/app.js")).unwrap();
    let section = |start: &str| -> &str {
        let from = app
            .find(start)
            .unwrap_or_else(|| panic!("app.js has no {start:?}"));
        let len = app[from..]
            .find("\n}\n")
            .unwrap_or_else(|| panic!("{start:?} never ends"));
        &app[from..from + len + 3]
    };
    // The CSV columns.
    let decl = app
        .lines()
        .find(|l| l.starts_with("const AUTH_LOG_CSV = ["))
        .expect("app.js declares AUTH_LOG_CSV");
    let columns: Vec<String> = serde_json::from_str(
        decl.trim_start_matches("const AUTH_LOG_CSV = ")
            .trim_end_matches(';'),
    )
    .unwrap();
    for c in &columns {
        assert!(
            event.contains_key(c),
            "CSV column {c:?} is not a field of {event:?}"
        );
    }
    for c in ["token", "user"] {
        assert!(columns.iter().any(|x| x == c), "{columns:?} has no {c}");
    }
    // The table: every `e.<field>` the page reads in showAuthLog.
    let page = section("async function showAuthLog(");
    let mut read = Vec::new();
    for (i, _) in page.match_indices("e.") {
        if page[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let field: String = page[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        read.push(field);
    }
    for field in ["token", "user", "ip", "outcome"] {
        assert!(
            read.iter().any(|f| f == field),
            "the table never shows e.{field}: {read:?}"
        );
    }
    for field in &read {
        assert!(
            event.contains_key(field) || field == "message",
            "the table reads e.{field}, which the API does not send ({event:?})"
        );
    }

    // The CSV itself, made by the page's code.
    let script = format!(
        "{}\n{}\n{}\nprocess.stdout.write(authLogCsv(JSON.parse(process.argv[1])));",
        decl,
        section("function csvCell("),
        section("function authLogCsv("),
    );
    let out = match std::process::Command::new("node")
        .args(["-e", &script, &Value::Array(events.clone()).to_string()])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("NOT RUN: the CSV through the page's own code needs node ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    let cell = |name: &str| rows[0][header.iter().position(|h| h == name).unwrap()].to_string();
    assert_eq!(cell("token"), tok, "{csv}");
    assert_eq!(cell("user"), w.uid("ula"), "{csv}");
    assert_eq!(cell("ip"), "192.0.2.9", "{csv}");
    assert_eq!(cell("outcome"), "allow", "{csv}");
}

#[tokio::test]
async fn the_audit_log_records_who_did_what_to_which_token() {
    let w = World::new().await;
    let (ada, ula) = (w.jwt("ada"), w.jwt("ula"));
    let id = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "audited", "user": "ula"})),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.call(
        "POST",
        &format!("/v1/tokens/{id}/download"),
        Some(&ula),
        None,
    )
    .await;
    w.call(
        "POST",
        &format!("/v1/tokens/{id}/disable"),
        Some(&ada),
        None,
    )
    .await;
    w.call("POST", &format!("/v1/tokens/{id}/revoke"), Some(&ula), None)
        .await;
    let r = w
        .call(
            "GET",
            &format!("/v1/audit-log?target={id}"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let entries: Vec<(String, String)> = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let (a, u) = (w.uid("ada"), w.uid("ula"));
    assert_eq!(
        entries,
        [
            ("token.revoke".to_string(), u.clone()),
            ("token.disable".to_string(), a.clone()),
            ("token.download".to_string(), u),
            ("token.create".to_string(), a),
        ]
    );
    assert_eq!(
        w.call("GET", "/v1/audit-log", Some(&ula), None)
            .await
            .status,
        403
    );
    // A refused action changes nothing and is not recorded as done (another user of
    // the org may not delete ula's token).
    let r = w
        .call(
            "DELETE",
            &format!("/v1/tokens/{id}"),
            Some(&w.jwt("ned")),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = w
        .call(
            "GET",
            &format!("/v1/audit-log?target={id}"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.json()["entries"].as_array().unwrap().len(), 4);
}

/// One test over a real socket: the app served by axum on port 0, driven by the CLI's client.
#[tokio::test]
async fn serves_over_a_real_socket() {
    let w = World::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = w
        .app
        .clone()
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client =
        tessera_control_plane::client::Client::new(&format!("http://{addr}"), Some(w.jwt("ula")))
            .unwrap();
    let t = client
        .json("POST", "/v1/tokens", &json!({"name": "sock"}))
        .await
        .unwrap()
        .ok_json()
        .unwrap();
    let id = t["id"].as_str().unwrap();
    let d = client
        .json("POST", &format!("/v1/tokens/{id}/download"), &json!({}))
        .await
        .unwrap()
        .ok_json()
        .unwrap();
    let api = d["jwt"].as_str().unwrap();
    let anon = tessera_control_plane::client::Client::new(&format!("http://{addr}"), None).unwrap();
    let r = anon
        .json(
            "POST",
            "/v1/auth/accesstoken",
            &json!({"refreshToken": api}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // The exchange recorded the peer address as last used.
    let t = client
        .get(&format!("/v1/tokens/{id}"))
        .await
        .unwrap()
        .ok_json()
        .unwrap();
    assert_eq!(t["last_used_ip"], "127.0.0.1");
    server.abort();
}

#[tokio::test]
async fn an_org_shortens_its_own_lifetime_and_only_its_setters_lengthen_it() {
    let w = World::new().await;
    let (ada, root) = (w.jwt("ada"), w.jwt("root-admin"));
    let patch = |who: &str, body: Value| {
        let who = who.to_string();
        let w = &w;
        async move {
            w.call("PATCH", "/v1/orgs/acme", Some(&who), Some(body))
                .await
        }
    };
    // acme's own admin renames it and shortens its lifetime.
    let r = patch(&ada, json!({"name": "Acme Corp", "max_lifetime_days": 90})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (&r.json()["name"], &r.json()["max_lifetime_days"]),
        (&json!("Acme Corp"), &json!(90))
    );
    // ... but cannot lengthen it again: that is for root and acme's managing partner.
    let r = patch(&ada, json!({"max_lifetime_days": 200})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("you may shorten it"), "{}", r.text());
    let r = patch(&root, json!({"max_lifetime_days": 200})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Out of range: the field, the range and the value, in words.
    let r = patch(&root, json!({"max_lifetime_days": 401})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("max_lifetime_days") && r.text().contains("from 1 to 400, not 401"),
        "{}",
        r.text()
    );
    // Another org's admin, and a user, get nothing.
    let r = w
        .call(
            "PATCH",
            "/v1/orgs/partnerco",
            Some(&ada),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(patch(&w.jwt("ned"), json!({"name": "x"})).await.status, 403);
    // Each change is in the audit log, with what it was and what it became.
    let audit = w
        .call("GET", "/v1/audit-log", Some(&ada), None)
        .await
        .json();
    let updates: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "org.update")
        .collect();
    assert_eq!(updates.len(), 2, "{audit}");
    assert!(updates
        .iter()
        .any(|e| e["detail"]["max_lifetime_days"] == json!({"from": 365, "to": 90})));
}

#[tokio::test]
async fn the_bootstrap_admin_is_active_and_an_invited_user_is_invited() {
    let w = World::new().await;
    let root = w.jwt("root-admin");
    // The bootstrap admin has no password but holds the token bootstrap printed.
    let users = w
        .call("GET", "/v1/orgs/root/users", Some(&root), None)
        .await
        .json();
    let admin = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "root-admin")
        .unwrap()
        .clone();
    assert_eq!(admin["state"], "active", "{users}");
    // A user just created, with neither a password nor a token, is invited.
    let r = w
        .call(
            "POST",
            "/v1/orgs/root/users",
            Some(&root),
            Some(json!({"username": "newbie", "role": "user"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = w
        .call("GET", &format!("/v1/users/{id}"), Some(&root), None)
        .await;
    assert_eq!(r.json()["state"], "invited", "{}", r.text());
}

#[tokio::test]
async fn tokens_made_in_the_same_second_list_in_the_order_they_were_made() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    // The clock stands still: every token has the same whole-second creation time.
    let mut made = Vec::new();
    for i in 0..6 {
        let r = w
            .call(
                "POST",
                "/v1/tokens",
                Some(&ada),
                Some(json!({"name": format!("same-second-{i}"), "lifetime_days": 30})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        made.push(r.json()["id"].as_str().unwrap().to_string());
        // Ids carry milliseconds; two tokens in one millisecond have no order to keep.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    for (sort, expect) in [
        ("created_at", made.clone()),
        (
            "-created_at",
            made.iter().rev().cloned().collect::<Vec<_>>(),
        ),
    ] {
        let r = w
            .call(
                "GET",
                &format!("/v1/tokens?q=same-second&sort={sort}"),
                Some(&ada),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let ids: Vec<String> = r.json()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, expect, "sort={sort}");
    }
}

/// The partner page asks for one customer organization's tokens at a time (`org=`), a page
/// at a time, instead of fetching 200 and filtering in the browser; the filter narrows
/// what the caller may see, never widens it.
#[tokio::test]
async fn a_partner_lists_one_customer_organizations_tokens_by_org() {
    let w = World::new().await;
    let pat = w.jwt("pat");
    let ids = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["org"].as_str().unwrap().to_string(),
                    t["username"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let r = w
        .call("GET", "/v1/tokens?org=acme&per_page=20", Some(&pat), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = ids(&r.json());
    // Only the delegating user's token of acme: not pat's own, not ula's.
    assert_eq!(
        got,
        vec![("acme".to_string(), "uma".to_string())],
        "{}",
        r.text()
    );
    assert_eq!(r.json()["total"], 1);
    let r = w
        .call("GET", "/v1/tokens?org=partnerco", Some(&pat), None)
        .await;
    assert!(ids(&r.json())
        .iter()
        .all(|(o, u)| o == "partnerco" && u == "pat"));
    // A user asking for another organization's tokens sees none of them.
    let r = w
        .call("GET", "/v1/tokens?org=partnerco", Some(&w.jwt("ula")), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 0, "{}", r.text());
}

/// A token's page draws its uses per hour or day from `GET /v1/tokens/{id}/usage`: every
/// slice of the window (zeros included), allowed and refused apart, and the networks the
/// uses came from (/24, /64); only those who may read the token's log see it.
#[tokio::test]
async fn a_tokens_usage_per_hour_and_day_with_its_networks() {
    let w = World::new().await;
    let secret = w.edge_secret("ada", "acme", "edge-usage").await;
    let tok = w.token_in_state(&w.uid("ula"), "enabled").await;
    let now = w.now();
    let hour = |h: i64| (now / 3600 - h) * 3600;
    let mut events = Vec::new();
    for (h, ip, outcome, n) in [
        (0, "192.0.2.7", "allow", 3),
        (0, "192.0.2.99", "deny", 1),
        (2, "198.51.100.4", "allow", 2),
        (30, "2001:db8:1:2::5", "allow", 1),
        (60, "192.0.2.1", "allow", 4),
    ] {
        for _ in 0..n {
            events.push(
                json!({"token_id": tok, "at": hour(h), "ip": ip, "outcome": outcome,
                               "method": "GET", "path": "/x"}),
            );
        }
    }
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some(&secret),
            Some(json!({ "events": events })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let ula = w.jwt("ula");
    let r = w
        .call("GET", &format!("/v1/tokens/{tok}/usage"), Some(&ula), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let u = r.json();
    assert_eq!(u["bucket"], "hour");
    let series = u["series"].as_array().unwrap();
    assert_eq!(series.len(), 48, "48 hours by default, empty ones too");
    let last = &series[47];
    assert_eq!(
        (last["allowed"].as_i64(), last["refused"].as_i64()),
        (Some(3), Some(1))
    );
    assert_eq!(series[45]["allowed"], 2);
    assert_eq!(series[17]["allowed"], 1, "30 hours ago");
    // 60 hours ago is outside the 48-hour window.
    assert_eq!(
        (u["allowed"].as_i64(), u["refused"].as_i64()),
        (Some(6), Some(1))
    );
    let nets: Vec<(&str, i64)> = u["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["network"].as_str().unwrap(), n["uses"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        nets,
        vec![
            ("192.0.2.0/24", 4),
            ("198.51.100.0/24", 2),
            ("2001:db8:1::/48", 1)
        ]
    );

    // Per day over 4 days: the 60-hour-old uses are in.
    let r = w
        .call(
            "GET",
            &format!("/v1/tokens/{tok}/usage?bucket=day&buckets=4"),
            Some(&ula),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let u = r.json();
    assert_eq!(u["series"].as_array().unwrap().len(), 4);
    assert_eq!(u["allowed"], 10, "{u}");

    // Words for bad input; nobody else's token.
    for (q, field) in [
        ("bucket=week", "bucket"),
        ("buckets=0", "buckets"),
        ("bucket=day&buckets=401", "buckets"),
    ] {
        let r = w
            .call(
                "GET",
                &format!("/v1/tokens/{tok}/usage?{q}"),
                Some(&ula),
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap().starts_with(field),
            "{}",
            r.text()
        );
    }
    let r = w
        .call(
            "GET",
            &format!("/v1/tokens/{tok}/usage"),
            Some(&w.jwt("ned")),
            None,
        )
        .await;
    assert!(matches!(r.status.as_u16(), 403 | 404), "{}", r.text());
}

/// Owners enable and disable their own tokens, but a suspension by an admin is lifted by
/// an admin only: the person it was meant to stop cannot undo it.
#[tokio::test]
async fn an_owner_never_lifts_an_admins_suspension_of_their_token() {
    let w = World::new().await;
    let tok = w.token_in_state(&w.uid("ula"), "enabled").await;
    let (ula, ada) = (w.jwt("ula"), w.jwt("ada"));
    let post = |who: &str, what: &str| {
        let path = format!("/v1/tokens/{tok}/{what}");
        let who = who.to_string();
        let w = &w;
        async move { w.call("POST", &path, Some(&who), None).await }
    };
    // Her own suspension, her own to lift.
    assert_eq!(post(&ula, "disable").await.status, 200);
    assert_eq!(post(&ula, "enable").await.status, 200);
    // The admin's is not.
    assert_eq!(post(&ada, "disable").await.status, 200);
    let r = post(&ula, "enable").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("ada disabled this token"),
        "{}",
        r.text()
    );
    assert_eq!(post(&ada, "enable").await.status, 200);
    let r = w
        .call("GET", &format!("/v1/tokens/{tok}"), Some(&ula), None)
        .await;
    assert_eq!(r.json()["status"], "enabled");
}

/// The long polls one change wakes share one store read of their org's version per change
/// (`AppState::poll_version`): 50 polls waiting on the same list, a revoke, and every poll
/// answered with the new version, after at most one read per change seen (not one or two
/// per poll).
#[tokio::test]
async fn the_polls_a_change_wakes_share_one_version_read() {
    let w = World::new().await;
    let id = w.token_in_state(&w.uid("ula"), "enabled").await;
    let r = w.call("GET", "/v1/orgs/acme/status-list", None, None).await;
    let version: i64 = r.headers["tessera-status-version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (changes, reads) = (w.state.edge_changes(), w.state.poll_version_reads());
    let polls: Vec<_> = (0..50)
        .map(|_| {
            let app = w.app.clone();
            tokio::spawn(async move {
                use tower::ServiceExt;
                let req = axum::http::Request::get(format!(
                    "/v1/orgs/acme/status-list?since={version}&wait=30"
                ))
                .body(axum::body::Body::empty())
                .unwrap();
                let resp = app.oneshot(req).await.unwrap();
                let v: i64 = resp.headers()["tessera-status-version"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                (resp.status(), v)
            })
        })
        .collect();
    // Let the polls begin waiting (a poll that starts late reads the new version at once:
    // the count below holds either way).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/revoke"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    for p in polls {
        let (status, v) = p.await.unwrap();
        assert_eq!(status, 200);
        assert!(v > version, "{v} after {version}");
    }
    let seen = w.state.edge_changes() - changes;
    let made = w.state.poll_version_reads() - reads;
    assert!(seen >= 1);
    assert!(
        made <= seen + 1,
        "{made} version reads for 50 polls and {seen} changes"
    );
}
