//! Leaked tokens: GitHub's secret-scanning partner endpoint and the public report endpoint.
//! Scanner posts are signed with a P-256 key made at run time, whose public half a tiny
//! HTTP server on loopback publishes in GitHub's format (the server counts its fetches, and
//! stops when the test ends, also on failure).
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::scanner::{key_server, new_key, post_signed, sign, GITHUB};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use tessera_core::token::{strip_api_prefix, API_TOKEN_PATTERN, API_TOKEN_PREFIX};

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The audit entries of `org` with `action`, newest first.
async fn audit(w: &World, org: &str, action: &str) -> Vec<Value> {
    let r = w
        .call(
            "GET",
            &format!("/v1/audit-log?org={org}&per_page=200"),
            Some(&w.jwt(if org == "root" { "root-admin" } else { "ada" })),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

async fn me_status(w: &World, token: &str) -> u16 {
    w.call("GET", "/v1/me", Some(token), None)
        .await
        .status
        .as_u16()
}

/// A near miss: the token with one signature character changed (it keeps the pattern).
fn near_miss(token: &str) -> String {
    let mut b = token.as_bytes().to_vec();
    let i = b.len() - 10;
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

#[tokio::test]
async fn issued_tokens_carry_the_prefix_and_both_forms_authenticate() {
    let w = World::new().await;
    let pattern = regex::Regex::new(&format!("^(?:{API_TOKEN_PATTERN})$")).unwrap();
    for name in ["root-admin", "ada", "ula", "rita"] {
        let t = w.jwt(name);
        assert!(t.starts_with(API_TOKEN_PREFIX), "{t}");
        assert!(pattern.is_match(&t), "{t}");
        // The legacy form (no prefix) is the same token.
        assert_eq!(me_status(&w, &t).await, 200);
        assert_eq!(me_status(&w, strip_api_prefix(&t)).await, 200);
        // After the prefix, a JWS that verifies with the org's published keys.
        let (_, claims) = decode_jwt(&t);
        let org = claims["org"].as_str().unwrap();
        let jwks = w
            .call("GET", &format!("/v1/orgs/{org}/jwks.json"), None, None)
            .await
            .json();
        assert!(signature_verifies(&jwks, strip_api_prefix(&t)));
    }
    // Exchange takes the prefixed token too.
    let r = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": w.jwt("ula")})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_scanner_post_labels_each_token_and_revokes_the_live_one() {
    let w = World::new().await;
    let key = new_key();
    let keys = key_server(&[("k1", &key)]).await;
    let _ = w.state.clone().with_scanner_keys_url(&keys.url);

    let leaked = w.jwt("ula");
    let legacy = strip_api_prefix(&w.jwt("ned")).to_string();
    let near = near_miss(&w.jwt("uma"));
    let body = json!([
        {"token": leaked, "type": "tessera_api_token", "url": "https://github.com/octo/repo/blob/abc/.env", "source": "content"},
        {"token": near, "type": "tessera_api_token", "url": "https://github.com/octo/repo/blob/abc/a.txt", "source": "content"},
        {"token": "tsr_eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.AAAA", "type": "tessera_api_token", "url": "https://x", "source": "commit"},
        {"token": legacy, "type": "tessera_api_token", "url": "https://gist.github.com/x", "source": "gist"},
    ]);
    let r = post_signed(&w, "k1", &key, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let labels = r.json();
    let got: Vec<(String, String, String)> = labels
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["token_hash"].as_str().unwrap().to_string(),
                l["token_type"].as_str().unwrap().to_string(),
                l["label"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = body
        .as_array()
        .unwrap()
        .iter()
        .zip([
            "true_positive",
            "false_positive",
            "false_positive",
            "true_positive",
        ])
        .map(|(b, l)| {
            (
                sha256_hex(b["token"].as_str().unwrap()),
                "tessera_api_token".to_string(),
                l.to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);

    // The confirmed tokens are revoked (the default policy), the near miss's owner keeps
    // working.
    assert_eq!(me_status(&w, &leaked).await, 401);
    assert_eq!(me_status(&w, &w.jwt("ned")).await, 401);
    assert_eq!(me_status(&w, &w.jwt("uma")).await, 200);
    let (_, claims) = decode_jwt(&leaked);
    let idx = claims["status"]["status_list"]["idx"].as_u64().unwrap() as usize;
    assert_eq!(w.status_values("acme").await[idx], 1, "revoked in the list");

    // The audit log says where each was found, and that the owner and admins are owed a
    // notification.
    let leaks = audit(&w, "acme", "token.leaked").await;
    assert_eq!(leaks.len(), 2, "{leaks:?}");
    let ula_token = claims["jti"].as_str().unwrap();
    let e = leaks.iter().find(|e| e["target"] == ula_token).unwrap();
    assert_eq!(
        e["detail"]["url"],
        "https://github.com/octo/repo/blob/abc/.env"
    );
    assert_eq!(e["detail"]["source"], "content");
    assert_eq!(e["detail"]["reporter"], "github");
    assert_eq!(e["detail"]["action"], "revoked");
    assert_eq!(e["actor"], "leak-report:github");
    let notes = audit(&w, "acme", "notification.needed").await;
    let n = notes.iter().find(|e| e["target"] == ula_token).unwrap();
    assert_eq!(n["detail"]["event"], "token.exposed");
    let recipients: Vec<&str> = n["detail"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        recipients.contains(&w.uid("ula").as_str()),
        "{recipients:?}"
    );
    assert!(
        recipients.contains(&w.uid("ada").as_str()),
        "{recipients:?}"
    );
    assert!(
        !recipients.contains(&w.uid("ned").as_str()),
        "{recipients:?}"
    );

    // Posted again: still ours (true_positive), nothing more to do, nobody notified again.
    let again = json!([{"token": leaked, "type": "tessera_api_token", "url": "https://x", "source": "content"}]);
    let r = post_signed(&w, "k1", &key, &again).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["label"], "true_positive");
    let leaks = audit(&w, "acme", "token.leaked").await;
    assert_eq!(leaks[0]["detail"]["action"], "none: already revoked");
    assert_eq!(audit(&w, "acme", "notification.needed").await.len(), 2);
    // One fetch of the keys served all three posts.
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unsigned_or_badly_signed_posts_are_refused_before_any_token_is_read() {
    let w = World::new().await;
    let key = new_key();
    let keys = key_server(&[("k1", &key)]).await;
    let _ = w.state.clone().with_scanner_keys_url(&keys.url);
    let leaked = w.jwt("ula");
    let body = json!([{"token": leaked, "type": "t", "url": "u", "source": "s"}]);
    let bytes = body.to_string().into_bytes();
    let good = sign(&key, &bytes);

    // No headers, or no signature: 400 naming the header, and the keys are not fetched.
    let r = w
        .raw("POST", GITHUB, None, "application/json", bytes.clone(), &[])
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "signature_missing");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("github-public-key-identifier"));
    let r = w
        .raw(
            "POST",
            GITHUB,
            None,
            "application/json",
            bytes.clone(),
            &[("github-public-key-identifier", "k1")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // A signature that is not base64 DER: 401 before any fetch.
    let r = w
        .raw(
            "POST",
            GITHUB,
            None,
            "application/json",
            bytes.clone(),
            &[
                ("github-public-key-identifier", "k1"),
                ("github-public-key-signature", "bm90IGRlcg=="),
            ],
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "signature_invalid");
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 0);

    // Signed by a key the scanner does not publish, under its identifier or another one.
    let stranger = new_key();
    for id in ["k1", "k-unknown"] {
        let r = post_signed(&w, id, &stranger, &body).await;
        assert_eq!(r.status, 401, "{id}: {}", r.text());
        assert_eq!(r.json()["error"], "signature_invalid");
    }
    // The right key over another body.
    let r = w
        .raw(
            "POST",
            GITHUB,
            None,
            "application/json",
            br#"[{"token":"x","type":"t","url":"u","source":"s"}]"#.to_vec(),
            &[
                ("github-public-key-identifier", "k1"),
                ("github-public-key-signature", &good),
            ],
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    // Unknown identifiers asked the URL again at most once (not once per request).
    assert!(keys.fetches.load(Ordering::SeqCst) <= 2);
    // Nothing was acted on.
    assert_eq!(me_status(&w, &leaked).await, 200);
    assert!(audit(&w, "acme", "token.leaked").await.is_empty());

    // More than 1,000 tokens, signed: refused whole.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"token": format!("tsr_{i}"), "type": "t", "url": "u", "source": "s"}))
        .collect();
    let r = post_signed(&w, "k1", &key, &json!(many)).await;
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test]
async fn the_keys_url_down_is_a_503_and_nothing_is_acted_on() {
    let w = World::new().await;
    let key = new_key();
    // A port nobody listens on: bound, then closed.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let _ = w
        .state
        .clone()
        .with_scanner_keys_url(&format!("http://{addr}/keys"));
    let leaked = w.jwt("ula");
    let r = post_signed(&w, "k1", &key, &json!([{"token": leaked, "type": "t"}])).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "keys_unavailable");
    assert_eq!(me_status(&w, &leaked).await, 200);
}

#[tokio::test]
async fn a_public_report_applies_the_org_policy() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let r = w
        .call("GET", "/v1/orgs/acme/leak-policy", Some(&ada), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"org": "acme", "policy": "revoke"}));
    // Only an admin sets it; a bad value names the field.
    let r = w
        .call(
            "PUT",
            "/v1/orgs/acme/leak-policy",
            Some(&w.jwt("ula")),
            Some(json!({"policy": "notify_only"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = w
        .call(
            "PUT",
            "/v1/orgs/acme/leak-policy",
            Some(&ada),
            Some(json!({"policy": "ignore"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("policy"), "{}", r.text());
    let r = w
        .call(
            "PUT",
            "/v1/orgs/acme/leak-policy",
            Some(&ada),
            Some(json!({"policy": "notify_only"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["policy"], "notify_only");

    // acme only notifies; root keeps the default and revokes.
    let acme_token = w.jwt("ula");
    let root_token = w.login(&w.uid("root-admin")).await;
    let r = w
        .call(
            "POST",
            "/v1/leaks",
            None,
            Some(json!({
                "tokens": [acme_token, root_token, "tsr_not-a-token", "hello"],
                "url": "https://paste.example/abc",
                "source": "paste",
            })),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json(), json!({"received": 4}));
    assert_eq!(
        me_status(&w, &acme_token).await,
        200,
        "notify_only keeps it"
    );
    assert_eq!(me_status(&w, &root_token).await, 401, "revoked");
    let e = &audit(&w, "acme", "token.leaked").await[0];
    assert_eq!(e["detail"]["action"], "notified");
    assert_eq!(e["detail"]["policy"], "notify_only");
    assert_eq!(e["detail"]["url"], "https://paste.example/abc");
    assert_eq!(e["detail"]["reporter"], "report");
    assert_eq!(audit(&w, "acme", "notification.needed").await.len(), 1);
    assert_eq!(
        audit(&w, "root", "token.leaked").await[0]["detail"]["action"],
        "revoked"
    );
    assert_eq!(audit(&w, "acme", "org.leak_policy").await.len(), 1);

    // An earlier JWT of a regenerated token is recognised, and nothing more is done.
    let old = w.login(&w.uid("ned")).await;
    let id = decode_jwt(&old).1["jti"].as_str().unwrap().to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/regenerate"),
            Some(&w.jwt("ned")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new = r.json()["jwt"].as_str().unwrap().to_string();
    let r = w
        .call("POST", "/v1/leaks", None, Some(json!({"tokens": [old]})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let e = &audit(&w, "acme", "token.leaked").await[0];
    assert_eq!(e["target"], id.as_str());
    assert_eq!(
        e["detail"]["action"],
        "none: an earlier JWT of the token, already revoked"
    );
    assert_eq!(
        me_status(&w, &new).await,
        200,
        "the current JWT keeps working"
    );

    // Up to 1,000 tokens a request.
    let many: Vec<String> = (0..1001).map(|i| format!("tsr_{i}")).collect();
    let r = w
        .call("POST", "/v1/leaks", None, Some(json!({"tokens": many})))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let many: Vec<String> = (0..1000).map(|i| format!("tsr_{i}")).collect();
    let r = w
        .call("POST", "/v1/leaks", None, Some(json!({"tokens": many})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());

    // Found again the same day: in the audit log again, but people are told once a day.
    let again = json!({"tokens": [acme_token], "url": "https://paste.example/def"});
    let (leaked, told) = (
        audit(&w, "acme", "token.leaked").await.len(),
        audit(&w, "acme", "notification.needed").await.len(),
    );
    let r = w.call("POST", "/v1/leaks", None, Some(again.clone())).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(audit(&w, "acme", "token.leaked").await.len(), leaked + 1);
    assert_eq!(audit(&w, "acme", "notification.needed").await.len(), told);
    w.advance(86_401);
    let r = w.call("POST", "/v1/leaks", None, Some(again)).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        audit(&w, "acme", "notification.needed").await.len(),
        told + 1
    );
}

#[tokio::test]
async fn a_leaked_access_token_revokes_its_api_token() {
    let w = World::new().await;
    let api_token = w.jwt("ula");
    let r = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": api_token})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let access = r.json()["access_token"].as_str().unwrap().to_string();
    assert!(
        !access.starts_with(API_TOKEN_PREFIX),
        "access tokens stay bare JWTs"
    );
    let r = w
        .call(
            "POST",
            "/v1/leaks",
            None,
            Some(json!({"tokens": [access], "source": "log"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    // The API token it came from is revoked, and so the access token too.
    assert_eq!(me_status(&w, &api_token).await, 401);
    assert_eq!(me_status(&w, &access).await, 401);
    let e = &audit(&w, "acme", "token.leaked").await[0];
    let (_, claims) = decode_jwt(&api_token);
    assert_eq!(e["target"], claims["jti"]);
    assert_eq!(e["detail"]["action"], "revoked");
}
