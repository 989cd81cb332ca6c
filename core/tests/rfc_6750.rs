//! RFC 6750 §3 (the `WWW-Authenticate` response header of a bearer-token resource server)
//! clause by clause, where core produces it: [`Deny::new`] (status, challenge, body) and
//! the verifier's decisions that choose the reason. Each test names its clause.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tessera_core::{Decision, Deny, Reason, Request, Verifier};
use tessera_testkit::{Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

const NOW: u64 = 1_800_000_000;

/// The challenge's auth-params in order, or a panic naming what is not RFC 6750 syntax:
/// `Bearer` then one or more `name="value"` separated by `, `.
fn params(challenge: &str) -> Vec<(String, String)> {
    let rest = challenge
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer challenge: {challenge:?}"));
    let mut out = Vec::new();
    let mut s = rest;
    loop {
        let (name, after) = s
            .split_once("=\"")
            .unwrap_or_else(|| panic!("no quoted auth-param in {challenge:?}"));
        let (value, after) = after
            .split_once('"')
            .unwrap_or_else(|| panic!("unterminated value in {challenge:?}"));
        out.push((name.to_string(), value.to_string()));
        match after.strip_prefix(", ") {
            Some(next) => s = next,
            None if after.is_empty() => return out,
            None => panic!("junk after an auth-param in {challenge:?}"),
        }
    }
}

fn deny(reason: Reason) -> Deny {
    Deny::new(reason, "tessera", &["admin:write".into(), "read".into()])
}

/// RFC 6750 §3: every challenge uses the auth-scheme `Bearer`, followed by one or more
/// auth-params; `realm`, `scope`, `error`, `error_description` and `error_uri` each appear
/// at most once.
#[test]
fn rfc6750_s3_bearer_scheme_with_unique_auth_params() {
    for reason in Reason::ALL {
        let Some(challenge) = deny(reason).www_authenticate else {
            continue;
        };
        let ps = params(&challenge);
        assert!(!ps.is_empty(), "{reason}: no auth-param");
        for name in ["realm", "scope", "error", "error_description", "error_uri"] {
            let n = ps.iter().filter(|(k, _)| k == name).count();
            assert!(n <= 1, "{reason}: {name} appears {n} times in {challenge}");
        }
        assert_eq!(ps[0], ("realm".into(), "tessera".into()), "{reason}");
    }
}

/// RFC 6750 §3: a request without credentials, or whose token does not enable access to
/// the resource, is answered with a `WWW-Authenticate` header. That is every 400, 401 and
/// 403 here, `ip_not_allowed` included (the token does not give access from this address).
/// The 503s (`status_unavailable`, `keys_unavailable`) say nothing about the token — the
/// server cannot decide yet — so they carry no challenge; nor does the 429
/// (`rate_limited`: the token is fine, its budget is spent for now).
#[test]
fn rfc6750_s3_challenge_whenever_the_token_does_not_enable_access() {
    for reason in Reason::ALL {
        let d = deny(reason);
        match d.status {
            400 | 401 | 403 => assert!(d.www_authenticate.is_some(), "{reason}: no challenge"),
            429 | 503 => assert_eq!(d.www_authenticate, None, "{reason}"),
            other => panic!("{reason}: unexpected status {other}"),
        }
    }
}

/// RFC 6750 §3: `error` and `error_description` values use only %x20-21 / %x23-5B /
/// %x5D-7E; `scope` values only %x21 / %x23-5B / %x5D-7E, separated by %x20. Tessera sends
/// no `error_description` or `error_uri` (no internal detail leaves the verifier).
#[test]
fn rfc6750_s3_attribute_value_characters() {
    let nqschar = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
    for reason in Reason::ALL {
        let Some(challenge) = deny(reason).www_authenticate else {
            continue;
        };
        for (name, value) in params(&challenge) {
            match name.as_str() {
                "error" => assert!(value.bytes().all(|b| b == 0x20 || nqschar(b)), "{value:?}"),
                "scope" => {
                    for scope in value.split(' ') {
                        assert!(!scope.is_empty() && scope.bytes().all(nqschar), "{value:?}");
                    }
                }
                "realm" => {}
                other => panic!("{reason}: unexpected attribute {other} in {challenge}"),
            }
        }
    }
    // Route scopes outside that set are refused when the configuration loads.
    let key = TestKey::generate(Alg::EdDSA, "ed");
    for bad in ["a\"b", "a\\b", "caf\u{e9}", "a b", ""] {
        let err = Verifier::from_config_json(
            &json!({
                "issuers": [DEFAULT_ISSUER],
                "audiences": [DEFAULT_AUDIENCE],
                "jwks": tessera_testkit::jwks(&[&key]),
                "routes": [{"path_prefix": "/a", "scopes": [bad]}]
            })
            .to_string(),
        )
        .unwrap_err();
        assert_eq!(err.field, "routes[0].scopes[0]", "{bad:?}: {err}");
    }
}

/// RFC 6750 §3: `realm` is a quoted-string; a configured realm that could break out of
/// it is refused at load, and `Deny::new` drops such characters whatever it is given.
#[test]
fn rfc6750_s3_realm_is_a_safe_quoted_string() {
    let key = TestKey::generate(Alg::EdDSA, "ed");
    for bad in ["a\"b", "a\\b", "a\r\nb", ""] {
        let err = Verifier::from_config_json(
            &json!({
                "issuers": [DEFAULT_ISSUER],
                "audiences": [DEFAULT_AUDIENCE],
                "jwks": tessera_testkit::jwks(&[&key]),
                "realm": bad
            })
            .to_string(),
        )
        .unwrap_err();
        assert_eq!(err.field, "realm", "{bad:?}");
    }
    let d = Deny::new(Reason::Expired, "x\", error=\"y", &[]);
    assert_eq!(params(d.www_authenticate.as_deref().unwrap()).len(), 2);
}

/// RFC 6750 §3.1: the error codes and their statuses: `invalid_request` 400,
/// `invalid_token` 401, `insufficient_scope` 403 with the `scope` the resource needs.
#[test]
fn rfc6750_s3_1_error_codes_and_statuses() {
    for reason in Reason::ALL {
        let d = deny(reason);
        let error = d
            .www_authenticate
            .as_deref()
            .map(params)
            .and_then(|ps| ps.into_iter().find(|(k, _)| k == "error").map(|(_, v)| v));
        match error.as_deref() {
            Some("invalid_request") => assert_eq!(d.status, 400, "{reason}"),
            Some("invalid_token") => assert_eq!(d.status, 401, "{reason}"),
            Some("insufficient_scope") => {
                assert_eq!(d.status, 403, "{reason}");
                let ps = params(d.www_authenticate.as_deref().unwrap());
                assert!(
                    ps.contains(&("scope".into(), "admin:write read".into())),
                    "{ps:?}"
                );
            }
            None => {}
            Some(other) => panic!("{reason}: {other} is not an RFC 6750 error code"),
        }
        // The body's `error` agrees with the challenge's when the challenge has one.
        let body: serde_json::Value = serde_json::from_str(&d.body()).unwrap();
        if let Some(e) = &error {
            assert_eq!(body["error"], json!(e), "{reason}");
        }
        assert_eq!(body["reason"], json!(reason.as_str()));
        assert_eq!(
            body.as_object().unwrap().len(),
            2,
            "no internal detail: {body}"
        );
    }
}

fn decide(v: &Verifier, headers: &[(&str, String)], method: &str, path: &str) -> Deny {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let req = Request {
        method,
        path,
        headers: &headers,
        source_address: Some("192.0.2.7:1234"),
    };
    match v.check(&req, NOW, None).decision {
        Decision::Deny(d) => d,
        Decision::Allow(id) => panic!("allowed: {id:?}"),
    }
}

/// RFC 6750 §3.1, end to end through the verifier: a request with no authentication
/// information — no header, or only an unsupported scheme (`Basic`) — gets a challenge
/// without an error code; the others get theirs.
#[test]
fn rfc6750_s3_1_decisions_end_to_end() {
    let key = TestKey::generate(Alg::EdDSA, "ed");
    let v = Verifier::from_config_json(
        &json!({
            "issuers": [DEFAULT_ISSUER],
            "audiences": [DEFAULT_AUDIENCE],
            "jwks": tessera_testkit::jwks(&[&key]),
            "status": {"required": false},
            "realm": "api",
            "routes": [{"path_prefix": "/admin", "scopes": ["admin:write"]}]
        })
        .to_string(),
    )
    .unwrap();
    let token = TokenBuilder::new(NOW).remove_claim("status").sign(&key);
    let bearer = |t: &str| ("authorization", format!("Bearer {t}"));

    for headers in [vec![], vec![("authorization", "Basic YTpi".to_string())]] {
        let d = decide(&v, &headers, "GET", "/");
        assert_eq!(d.status, 401);
        assert_eq!(d.www_authenticate.as_deref(), Some("Bearer realm=\"api\""));
    }
    let expired = TokenBuilder::new(NOW)
        .remove_claim("status")
        .claim("iat", NOW - 7200)
        .claim("nbf", NOW - 7200)
        .claim("exp", NOW - 3600)
        .sign(&key);
    let d = decide(&v, &[bearer(&expired)], "GET", "/");
    assert_eq!(
        (d.status, d.www_authenticate.as_deref()),
        (401, Some("Bearer realm=\"api\", error=\"invalid_token\""))
    );
    let d = decide(&v, &[bearer(&token)], "GET", "/admin/users");
    assert_eq!(
        (d.status, d.www_authenticate.as_deref()),
        (
            403,
            Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"admin:write\"")
        )
    );
    let other = TokenBuilder::new(NOW).claim("jti", "tok_2").sign(&key);
    let d = decide(&v, &[bearer(&token), bearer(&other)], "GET", "/");
    assert_eq!(
        (d.status, d.www_authenticate.as_deref()),
        (400, Some("Bearer realm=\"api\", error=\"invalid_request\""))
    );
    let pinned = TokenBuilder::new(NOW)
        .remove_claim("status")
        .claim("ip_allow", json!(["10.0.0.0/8"]))
        .sign(&key);
    let d = decide(&v, &[bearer(&pinned)], "GET", "/");
    assert_eq!(
        (d.status, d.reason, d.www_authenticate.as_deref()),
        (403, Reason::IpNotAllowed, Some("Bearer realm=\"api\""))
    );
}
