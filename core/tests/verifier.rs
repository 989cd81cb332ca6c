//! The verifier's decisions, one table row per behaviour. Keys and tokens are generated
//! at run time by tessera-testkit.

// The table checks every algorithm's signature in Rust: it needs the default features.
#![cfg(all(feature = "rust-ecdsa", feature = "rust-rsa"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use tessera_core::{CacheUse, Decision, Reason, Request, Step, Verifier};
use tessera_testkit::{
    Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_STATUS_URI,
};

const NOW: u64 = 1_800_000_000;

struct Fixture {
    ed: TestKey,
    es: TestKey,
    rs: TestKey,
    other: TestKey,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| Fixture {
        ed: TestKey::generate(Alg::EdDSA, "ed"),
        es: TestKey::generate(Alg::ES256, "es"),
        rs: TestKey::generate(Alg::RS256, "rs"),
        other: TestKey::generate(Alg::EdDSA, "ed"),
    })
}

fn config(extra: Value) -> String {
    let f = fixture();
    // Index 0 valid, 1 revoked, 2 suspended, 3 rotated; the list holds 8 entries.
    let lst = tessera_testkit::status_list_lst(&[0, 1, 2, 3, 0, 0, 0, 0]);
    let mut c = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": tessera_testkit::jwks(&[&f.ed, &f.es, &f.rs]),
        "token_sources": [
            {"header": "authorization", "schemes": ["Bearer", "Token"]},
            {"header": "csp-auth-token"}
        ],
        "routes": [
            {"path_prefix": "/admin", "methods": ["POST", "DELETE"], "scopes": ["admin:write"]},
            {"path_prefix": "/admin", "scopes": ["admin:read"]}
        ],
        "status": {"lists": [{"uri": DEFAULT_STATUS_URI, "bits": 2, "lst": lst}]}
    });
    if let (Some(obj), Value::Object(extra)) = (c.as_object_mut(), extra) {
        for (k, v) in extra {
            obj.insert(k, v);
        }
    }
    c.to_string()
}

struct Case {
    name: &'static str,
    headers: Vec<(&'static str, String)>,
    method: &'static str,
    path: &'static str,
    peer: &'static str,
    want: Result<(), Reason>,
}

fn bearer(t: String) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {t}"))]
}

fn case(
    name: &'static str,
    headers: Vec<(&'static str, String)>,
    want: Result<(), Reason>,
) -> Case {
    Case {
        name,
        headers,
        method: "GET",
        path: "/items",
        peer: "127.0.0.1:40000",
        want,
    }
}

fn run(verifier: &Verifier, cases: &[Case]) {
    let mut cache = verifier.new_cache();
    for c in cases {
        let headers: Vec<(String, String)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let req = Request {
            method: c.method,
            path: c.path,
            headers: &headers,
            source_address: Some(c.peer),
        };
        // Uncached, then twice through the cache (miss, then hit): all must agree.
        let plain = verifier.check(&req, NOW, None);
        let first = verifier.check(&req, NOW, Some(&mut cache));
        let second = verifier.check(&req, NOW, Some(&mut cache));
        assert_eq!(
            plain.decision, first.decision,
            "{}: cache miss disagrees",
            c.name
        );
        assert_eq!(
            plain.decision, second.decision,
            "{}: cache hit disagrees",
            c.name
        );
        let two_phase = two_phase(verifier, &req);
        assert_eq!(
            plain.decision, two_phase.decision,
            "{}: begin/finish disagrees",
            c.name
        );
        let got = match &plain.decision {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(d) => Err(d.reason),
        };
        assert_eq!(got, c.want, "{}", c.name);
        if got.is_ok() {
            assert_eq!(
                second.cache,
                CacheUse::Hit,
                "{}: second look-up should hit",
                c.name
            );
        }
    }
}

/// Verifies a signature the way a host would, outside core (Ed25519 with another
/// implementation than core's, ed25519-compact).
fn host_verify(key: &tessera_core::jwks::Key, msg: &[u8], sig: &[u8]) -> bool {
    use tessera_core::jwks::KeyMaterial;
    match &key.material {
        KeyMaterial::Ed25519(vk) => {
            match (
                ed25519_compact::PublicKey::from_slice(vk.as_bytes()),
                ed25519_compact::Signature::from_slice(sig),
            ) {
                (Ok(pk), Ok(s)) => pk.verify(msg, &s).is_ok(),
                _ => false,
            }
        }
        KeyMaterial::Es256(vk) => {
            use p256::ecdsa::signature::Verifier as _;
            p256::ecdsa::Signature::from_slice(sig)
                .map(|s| vk.verify(msg, &s).is_ok())
                .unwrap_or(false)
        }
        KeyMaterial::Rs256(pk) => {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(msg);
            pk.public_key()
                .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, sig)
                .is_ok()
        }
    }
}

fn two_phase(verifier: &Verifier, req: &Request<'_>) -> tessera_core::Outcome {
    match verifier.begin(req, NOW, None) {
        Step::Done(o) => o,
        Step::Verify(sr) => {
            let key = verifier
                .config()
                .keys
                .get(&sr.kid)
                .expect("begin names a configured key");
            assert_eq!(key.alg, sr.alg);
            let ok = host_verify(key, &sr.signing_input, &sr.signature);
            assert_eq!(
                verifier.verify_signature(&sr),
                ok,
                "core's own signature check disagrees with the crypto crates"
            );
            verifier.finish(sr, ok, req, NOW, None)
        }
    }
}

#[test]
fn decision_table() {
    let f = fixture();
    let v = Verifier::from_config_json(&config(json!({}))).unwrap();
    let t = || TokenBuilder::new(NOW);
    let big = "x".repeat(9000);
    let cases = vec![
        // Accepted: each algorithm, each source and scheme.
        case("ed25519", bearer(t().sign(&f.ed)), Ok(())),
        case("es256", bearer(t().sign(&f.es)), Ok(())),
        case("rs256", bearer(t().sign(&f.rs)), Ok(())),
        case(
            "token scheme",
            vec![("authorization", format!("Token {}", t().sign(&f.ed)))],
            Ok(()),
        ),
        case(
            "custom header",
            vec![("csp-auth-token", t().sign(&f.ed))],
            Ok(()),
        ),
        case(
            "same token twice",
            vec![
                ("authorization", format!("Bearer {}", t().sign(&f.ed))),
                ("csp-auth-token", t().sign(&f.ed)),
            ],
            Ok(()),
        ),
        case(
            "access token",
            bearer(TokenBuilder::access_token(NOW, "tok_1").sign(&f.ed)),
            Ok(()),
        ),
        case(
            "aud array",
            bearer(t().claim("aud", json!(["x", DEFAULT_AUDIENCE])).sign(&f.ed)),
            Ok(()),
        ),
        case(
            "typ with application/ prefix",
            bearer(t().header("typ", "application/Tessera-API+JWT").sign(&f.ed)),
            Ok(()),
        ),
        case(
            "exp within skew",
            bearer(
                t().claim("exp", NOW - 30)
                    .claim("iat", NOW - 100)
                    .claim("nbf", NOW - 100)
                    .sign(&f.ed),
            ),
            Ok(()),
        ),
        case(
            "nbf within skew",
            bearer(t().claim("nbf", NOW + 30).sign(&f.ed)),
            Ok(()),
        ),
        case(
            "no nbf",
            bearer(t().remove_claim("nbf").sign(&f.ed)),
            Ok(()),
        ),
        case(
            "no iat",
            bearer(t().remove_claim("iat").sign(&f.ed)),
            Ok(()),
        ),
        // Missing and ambiguous.
        case("no token", vec![], Err(Reason::TokenMissing)),
        case(
            "basic auth only",
            vec![("authorization", "Basic dXNlcjpwYXNz".into())],
            Err(Reason::TokenMissing),
        ),
        case(
            "two different tokens",
            vec![
                ("authorization", format!("Bearer {}", t().sign(&f.ed))),
                ("csp-auth-token", t().sign(&f.es)),
            ],
            Err(Reason::TokenAmbiguous),
        ),
        // Form.
        case(
            "not a jws",
            bearer("abc".into()),
            Err(Reason::TokenMalformed),
        ),
        case(
            "two parts",
            bearer("a.b".into()),
            Err(Reason::TokenMalformed),
        ),
        case(
            "four parts",
            bearer("a.b.c.d".into()),
            Err(Reason::TokenMalformed),
        ),
        case(
            "bad base64",
            bearer("!!.!!.!!".into()),
            Err(Reason::TokenMalformed),
        ),
        case(
            "header not json",
            bearer(format!(
                "{}.{}.",
                tessera_testkit::b64url(b"{"),
                tessera_testkit::b64url(b"{}")
            )),
            Err(Reason::TokenMalformed),
        ),
        case(
            "too large",
            bearer(t().claim("pad", big.as_str()).sign(&f.ed)),
            Err(Reason::TokenTooLarge),
        ),
        case(
            "crit",
            bearer(t().header("crit", json!(["exp"])).sign(&f.ed)),
            Err(Reason::CritUnsupported),
        ),
        case(
            "cbor content type",
            bearer(t().header("cty", "CBOR").sign(&f.ed)),
            Err(Reason::TokenMalformed),
        ),
        // Algorithms and keys (RFC 8725).
        case(
            "alg none",
            bearer(t().header("kid", "ed").unsigned()),
            Err(Reason::AlgNotAllowed),
        ),
        case(
            "hs256 with public key bytes",
            bearer(t().header("kid", "ed").sign_hs256(&f.ed.public_key_bytes())),
            Err(Reason::AlgNotAllowed),
        ),
        case(
            "hs256 with rsa public key bytes",
            bearer(t().header("kid", "rs").sign_hs256(&f.rs.public_key_bytes())),
            Err(Reason::AlgNotAllowed),
        ),
        case(
            "alg swapped to es256 on ed key",
            bearer(t().header("alg", "ES256").sign(&f.ed)),
            Err(Reason::AlgNotAllowed),
        ),
        case(
            "ps256",
            bearer(t().header("alg", "PS256").sign(&f.rs)),
            Err(Reason::AlgNotAllowed),
        ),
        case(
            "unknown kid",
            bearer(t().header("kid", "nope").sign(&f.ed)),
            Err(Reason::KeyUnknown),
        ),
        case(
            "no kid",
            bearer(
                t().remove_header("kid")
                    .header("alg", "EdDSA")
                    .with_signature("EdDSA", &[0; 64]),
            ),
            Err(Reason::KeyUnknown),
        ),
        case(
            "signed by another key with same kid",
            bearer(t().sign(&f.other)),
            Err(Reason::SignatureInvalid),
        ),
        case(
            "tampered signature",
            bearer(tessera_testkit::tamper_signature(&t().sign(&f.es))),
            Err(Reason::SignatureInvalid),
        ),
        case(
            "short signature",
            bearer(t().header("kid", "ed").with_signature("EdDSA", &[1; 10])),
            Err(Reason::SignatureInvalid),
        ),
        case(
            "rs256 bad signature",
            bearer(tessera_testkit::tamper_signature(&t().sign(&f.rs))),
            Err(Reason::SignatureInvalid),
        ),
        // Claims.
        case(
            "no exp",
            bearer(t().remove_claim("exp").sign(&f.ed)),
            Err(Reason::ClaimMissing),
        ),
        case(
            "exp as string",
            bearer(t().claim("exp", "soon").sign(&f.ed)),
            Err(Reason::TokenMalformed),
        ),
        case(
            "no sub",
            bearer(t().remove_claim("sub").sign(&f.ed)),
            Err(Reason::ClaimMissing),
        ),
        case(
            "no jti",
            bearer(t().remove_claim("jti").sign(&f.ed)),
            Err(Reason::ClaimMissing),
        ),
        case(
            "no org",
            bearer(t().remove_claim("org").sign(&f.ed)),
            Err(Reason::ClaimMissing),
        ),
        case(
            "sub with newline",
            bearer(t().claim("sub", "a\r\nx-evil: 1").sign(&f.ed)),
            Err(Reason::ClaimMissing),
        ),
        case(
            "no status",
            bearer(t().remove_claim("status").sign(&f.ed)),
            Err(Reason::ClaimMissing),
        ),
        case(
            "status idx negative",
            bearer(
                t().claim(
                    "status",
                    json!({"status_list": {"idx": -1, "uri": DEFAULT_STATUS_URI}}),
                )
                .sign(&f.ed),
            ),
            Err(Reason::ClaimMissing),
        ),
        case(
            "bad ip_allow entry",
            bearer(t().claim("ip_allow", json!(["10.0.0.0/33"])).sign(&f.ed)),
            Err(Reason::ClaimMissing),
        ),
        case(
            "expired",
            bearer(
                t().claim("iat", NOW - 7200)
                    .claim("nbf", NOW - 7200)
                    .claim("exp", NOW - 61)
                    .sign(&f.ed),
            ),
            Err(Reason::Expired),
        ),
        case(
            "exp now minus skew",
            bearer(
                t().claim("iat", NOW - 7200)
                    .claim("nbf", NOW - 7200)
                    .claim("exp", NOW - 60)
                    .sign(&f.ed),
            ),
            Err(Reason::Expired),
        ),
        case(
            "future nbf",
            bearer(t().claim("nbf", NOW + 61).sign(&f.ed)),
            Err(Reason::NotYetValid),
        ),
        case(
            "future iat",
            bearer(t().claim("iat", NOW + 61).sign(&f.ed)),
            Err(Reason::IssuedInFuture),
        ),
        case(
            "lifetime too long",
            bearer(t().claim("exp", NOW + 401 * 86400).sign(&f.ed)),
            Err(Reason::LifetimeTooLong),
        ),
        case(
            "wrong iss",
            bearer(t().claim("iss", "https://evil").sign(&f.ed)),
            Err(Reason::IssuerMismatch),
        ),
        case(
            "no iss",
            bearer(t().remove_claim("iss").sign(&f.ed)),
            Err(Reason::ClaimMissing),
        ),
        case(
            "wrong aud",
            bearer(t().claim("aud", "other").sign(&f.ed)),
            Err(Reason::AudienceMismatch),
        ),
        case(
            "aud array without ours",
            bearer(t().claim("aud", json!(["a", "b"])).sign(&f.ed)),
            Err(Reason::AudienceMismatch),
        ),
        case(
            "no aud",
            bearer(t().remove_claim("aud").sign(&f.ed)),
            Err(Reason::ClaimMissing),
        ),
        case(
            "wrong typ",
            bearer(t().header("typ", "JWT").sign(&f.ed)),
            Err(Reason::TypeMismatch),
        ),
        case(
            "no typ",
            bearer(t().remove_header("typ").sign(&f.ed)),
            Err(Reason::TypeMismatch),
        ),
        // Status list.
        case(
            "revoked",
            bearer(t().status_idx(1).sign(&f.ed)),
            Err(Reason::Revoked),
        ),
        case(
            "suspended",
            bearer(t().status_idx(2).sign(&f.ed)),
            Err(Reason::Suspended),
        ),
        case(
            "value 3 is rotated",
            bearer(t().status_idx(3).sign(&f.ed)),
            Err(Reason::Rotated),
        ),
        case(
            "idx beyond list",
            bearer(t().status_idx(100).sign(&f.ed)),
            Err(Reason::StatusUnavailable),
        ),
        case(
            "unknown list uri",
            bearer(t().status(0, "https://elsewhere/list").sign(&f.ed)),
            Err(Reason::StatusUnavailable),
        ),
        case(
            "revoked access token follows its parent",
            bearer(
                TokenBuilder::access_token(NOW, "tok_1")
                    .status_idx(1)
                    .sign(&f.ed),
            ),
            Err(Reason::Revoked),
        ),
    ];
    run(&v, &cases);
}

#[test]
fn ip_filter_and_scopes() {
    let f = fixture();
    let v = Verifier::from_config_json(&config(json!({}))).unwrap();
    let t = || TokenBuilder::new(NOW);
    let with = |name, token: String, method, path, peer, want| Case {
        name,
        headers: bearer(token),
        method,
        path,
        peer,
        want,
    };
    let v4 = t().claim("ip_allow", json!(["127.0.0.1/32"])).sign(&f.ed);
    let v6 = t().claim("ip_allow", json!(["::1"])).sign(&f.ed);
    let admin_rw = t()
        .claim("scope", "read admin:read admin:write")
        .sign(&f.ed);
    let admin_r = t().claim("scope", "admin:read").sign(&f.ed);
    let cases = vec![
        with(
            "v4 inside",
            v4.clone(),
            "GET",
            "/",
            "127.0.0.1:5000",
            Ok(()),
        ),
        with(
            "v4 token, v6 client",
            v4.clone(),
            "GET",
            "/",
            "[::1]:5000",
            Err(Reason::IpNotAllowed),
        ),
        with(
            "v4 token, other v4",
            v4.clone(),
            "GET",
            "/",
            "10.0.0.1:5000",
            Err(Reason::IpNotAllowed),
        ),
        with(
            "v4 token, unparsable peer",
            v4.clone(),
            "GET",
            "/",
            "pipe:/x",
            Err(Reason::IpNotAllowed),
        ),
        with("v6 inside", v6.clone(), "GET", "/", "[::1]:5000", Ok(())),
        with(
            "v6 token, v4 client",
            v6,
            "GET",
            "/",
            "127.0.0.1:5000",
            Err(Reason::IpNotAllowed),
        ),
        with(
            "admin write",
            admin_rw.clone(),
            "POST",
            "/admin/users",
            "127.0.0.1:1",
            Ok(()),
        ),
        with(
            "admin read",
            admin_rw.clone(),
            "GET",
            "/admin",
            "127.0.0.1:1",
            Ok(()),
        ),
        with(
            "read-only posting",
            admin_r.clone(),
            "POST",
            "/admin/users",
            "127.0.0.1:1",
            Err(Reason::InsufficientScope),
        ),
        with(
            "read-only reading",
            admin_r.clone(),
            "GET",
            "/admin/users?x=1",
            "127.0.0.1:1",
            Ok(()),
        ),
        with(
            "no admin scope",
            t().sign(&f.ed),
            "GET",
            "/admin",
            "127.0.0.1:1",
            Err(Reason::InsufficientScope),
        ),
        with(
            "prefix boundary",
            t().sign(&f.ed),
            "GET",
            "/administrator",
            "127.0.0.1:1",
            Ok(()),
        ),
        with(
            "revoked beats scope",
            t().status_idx(1).sign(&f.ed),
            "GET",
            "/admin",
            "127.0.0.1:1",
            Err(Reason::Revoked),
        ),
    ];
    run(&v, &cases);

    // Through X-Forwarded-For with one trusted hop, the last entry is the client.
    let xv = Verifier::from_config_json(&config(
        json!({"client_ip": {"source": "x_forwarded_for", "trusted_hops": 1}}),
    ))
    .unwrap();
    let token = t().claim("ip_allow", json!(["203.0.113.0/24"])).sign(&f.ed);
    let xcase = |name, xff: &str, want| Case {
        name,
        headers: vec![
            ("authorization", format!("Bearer {token}")),
            ("x-forwarded-for", xff.to_string()),
        ],
        method: "GET",
        path: "/",
        peer: "127.0.0.1:1",
        want,
    };
    run(
        &xv,
        &[
            xcase("xff client inside", "198.51.100.1, 203.0.113.7", Ok(())),
            xcase(
                "xff spoofed first entry",
                "203.0.113.7, 198.51.100.1",
                Err(Reason::IpNotAllowed),
            ),
            xcase("xff garbage", "nope", Err(Reason::IpNotAllowed)),
        ],
    );
}

#[test]
fn fail_open_and_optional_status() {
    let f = fixture();
    let open = Verifier::from_config_json(&config(
        json!({"status": {"fail_policy": "open", "required": false}}),
    ))
    .unwrap();
    let headers = vec![(
        "authorization".to_string(),
        format!(
            "Bearer {}",
            TokenBuilder::new(NOW).status_idx(5).sign(&f.ed)
        ),
    )];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: None,
    };
    match open.check(&req, NOW, None).decision {
        Decision::Allow(id) => {
            assert!(id.status_fail_open);
            assert_eq!(id.user, "alice");
            assert_eq!(id.org, "acme");
            assert_eq!(id.token_id, "tok_1");
            assert_eq!(id.scopes, vec!["read"]);
        }
        other => panic!("{other:?}"),
    }
    let no_status = vec![(
        "authorization".to_string(),
        format!(
            "Bearer {}",
            TokenBuilder::new(NOW).remove_claim("status").sign(&f.ed)
        ),
    )];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &no_status,
        source_address: None,
    };
    assert!(
        matches!(open.check(&req, NOW, None).decision, Decision::Allow(ref id) if !id.status_fail_open)
    );
}

#[test]
fn cached_tokens_still_expire_and_follow_status_changes() {
    let f = fixture();
    let mut v = Verifier::from_config_json(&config(json!({}))).unwrap();
    let mut cache = v.new_cache();
    let token = TokenBuilder::new(NOW)
        .claim("exp", NOW + 100)
        .status_idx(4)
        .sign(&f.ed);
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: None,
    };
    assert_eq!(v.check(&req, NOW, Some(&mut cache)).decision.reason(), None);
    // Later than exp + skew: refused although cached.
    assert_eq!(
        v.check(&req, NOW + 200, Some(&mut cache)).decision.reason(),
        Some(Reason::Expired)
    );
    // A new status list revokes index 4: refused on a cache hit too.
    let mut list = tessera_core::StatusList::new(8);
    list.set(4, tessera_core::TokenStatus::Revoked);
    v.set_status_list(DEFAULT_STATUS_URI, list);
    let out = v.check(&req, NOW, Some(&mut cache));
    assert_eq!(out.cache, CacheUse::Hit);
    assert_eq!(out.decision.reason(), Some(Reason::Revoked));
}

#[test]
fn the_cache_stays_bounded() {
    let f = fixture();
    let v = Verifier::from_config_json(&config(json!({"cache_size": 10}))).unwrap();
    let mut cache = v.new_cache();
    for i in 0..100 {
        let token = TokenBuilder::new(NOW)
            .claim("jti", format!("tok_{i}"))
            .sign(&f.ed);
        let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
        let req = Request {
            method: "GET",
            path: "/",
            headers: &headers,
            source_address: None,
        };
        assert_eq!(v.check(&req, NOW, Some(&mut cache)).decision.reason(), None);
        assert!(cache.len() <= 20, "cache grew to {}", cache.len());
    }
}

#[test]
fn a_working_set_of_cache_size_tokens_always_hits() {
    // Round robin over exactly cache_size tokens: after the first pass, every look-up hits.
    let f = fixture();
    let v = Verifier::from_config_json(&config(json!({"cache_size": 10}))).unwrap();
    let mut cache = v.new_cache();
    let tokens: Vec<String> = (0..10)
        .map(|i| {
            TokenBuilder::new(NOW)
                .claim("jti", format!("tok_{i}"))
                .sign(&f.ed)
        })
        .collect();
    for round in 0..5 {
        for t in &tokens {
            let headers = vec![("authorization".to_string(), format!("Bearer {t}"))];
            let req = Request {
                method: "GET",
                path: "/",
                headers: &headers,
                source_address: None,
            };
            let out = v.check(&req, NOW, Some(&mut cache));
            assert_eq!(out.decision.reason(), None);
            let want = if round == 0 {
                CacheUse::Miss
            } else {
                CacheUse::Hit
            };
            assert_eq!(out.cache, want, "round {round}");
        }
    }
}

#[test]
fn every_reason_code_is_reachable_in_the_table() {
    // Guards the documentation promise: each documented reason is produced by some input.
    let src = include_str!("verifier.rs");
    for r in Reason::ALL {
        let variant = format!("{r:?}");
        assert!(
            src.contains(&format!("Reason::{variant})")),
            "no test produces {r}"
        );
    }
}

#[test]
fn sync_mode_keys_and_staleness() {
    let f = fixture();
    // Keys come only from sync: before the first sync, tokens meet 503 keys_unavailable.
    let cfg = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "sync": {"max_staleness_secs": 30}
    });
    let mut v = Verifier::from_config_json(&cfg.to_string()).unwrap();
    let token = TokenBuilder::new(NOW).status_idx(1).sign(&f.es);
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: None,
    };
    let reason = |v: &Verifier| v.check(&req, NOW, None).decision.reason();
    assert_eq!(reason(&v), Some(Reason::KeysUnavailable));

    // Keys arrive, the status list does not yet: status is unknown, fail closed.
    let synced =
        tessera_core::jwks::KeySet::from_jwks(&tessera_testkit::jwks(&[&f.es]), "sync").unwrap();
    v.set_synced_keys(&synced);
    assert_eq!(reason(&v), Some(Reason::StatusUnavailable));

    // The list arrives and is fresh: index 1 is revoked.
    let mut list = tessera_core::StatusList::new(4);
    list.set(1, tessera_core::TokenStatus::Revoked);
    v.set_status_list(DEFAULT_STATUS_URI, list);
    v.set_status_fresh(true);
    assert_eq!(reason(&v), Some(Reason::Revoked));

    // Too old: the last good list still refuses what it revoked (revocation is final)...
    v.set_status_fresh(false);
    assert_eq!(reason(&v), Some(Reason::Revoked));
    // ...but its "valid" is no longer trusted: the closed policy refuses.
    let valid_token = TokenBuilder::new(NOW).status_idx(0).sign(&f.es);
    let valid_headers = vec![("authorization".to_string(), format!("Bearer {valid_token}"))];
    let valid_req = Request {
        method: "GET",
        path: "/",
        headers: &valid_headers,
        source_address: None,
    };
    assert_eq!(
        v.check(&valid_req, NOW, None).decision.reason(),
        Some(Reason::StatusUnavailable)
    );
    v.set_status_fresh(true);
    assert_eq!(reason(&v), Some(Reason::Revoked));
    assert_eq!(v.check(&valid_req, NOW, None).decision.reason(), None);

    // A key that is gone from the synced set no longer verifies.
    v.set_synced_keys(
        &tessera_core::jwks::KeySet::from_jwks(&tessera_testkit::jwks(&[&f.ed]), "sync").unwrap(),
    );
    assert_eq!(reason(&v), Some(Reason::KeyUnknown));
}

#[test]
fn stale_status_with_open_policy_allows_and_says_so() {
    let f = fixture();
    let cfg = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": tessera_testkit::jwks(&[&f.ed]),
        "status": {"fail_policy": "open"},
        "sync": {"max_staleness_secs": 30}
    });
    let v = Verifier::from_config_json(&cfg.to_string()).unwrap();
    let headers = vec![(
        "authorization".to_string(),
        format!("Bearer {}", TokenBuilder::new(NOW).sign(&f.ed)),
    )];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: None,
    };
    match v.check(&req, NOW, None).decision {
        Decision::Allow(id) => assert!(id.status_fail_open),
        other => panic!("{other:?}"),
    }

    // With a stale list, fail-open never lets a revoked or suspended token back in.
    let mut v = v;
    let mut list = tessera_core::StatusList::new(4);
    list.set(1, tessera_core::TokenStatus::Revoked);
    list.set(2, tessera_core::TokenStatus::Suspended);
    v.set_status_list(DEFAULT_STATUS_URI, list);
    v.set_status_fresh(false);
    for (idx, want) in [
        (0, None),
        (1, Some(Reason::Revoked)),
        (2, Some(Reason::Suspended)),
    ] {
        let h = vec![(
            "authorization".to_string(),
            format!(
                "Bearer {}",
                TokenBuilder::new(NOW).status_idx(idx).sign(&f.ed)
            ),
        )];
        let r = Request {
            method: "GET",
            path: "/",
            headers: &h,
            source_address: None,
        };
        assert_eq!(v.check(&r, NOW, None).decision.reason(), want, "idx {idx}");
    }
}

#[test]
fn forged_tokens_with_broken_claims_get_the_same_reason_on_both_paths() {
    // jwt-compact reads the claims before it checks the signature, so a forged token whose
    // claims are not a JSON object is token_malformed; the two-phase path must agree.
    let f = fixture();
    let v = Verifier::from_config_json(&config(json!({}))).unwrap();
    let valid = TokenBuilder::new(NOW).sign(&f.es);
    let mut parts = valid.split('.');
    let (hdr, _claims, sig) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    for (name, claims, want) in [
        (
            "claims not JSON",
            tessera_testkit::b64url(b"{\"exp\":"),
            Reason::TokenMalformed,
        ),
        (
            "claims an array",
            tessera_testkit::b64url(b"[]"),
            Reason::TokenMalformed,
        ),
        (
            "claims fine, signature forged",
            tessera_testkit::b64url(b"{}"),
            Reason::SignatureInvalid,
        ),
    ] {
        let token = format!("{hdr}.{claims}.{sig}");
        let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
        let req = Request {
            method: "GET",
            path: "/",
            headers: &headers,
            source_address: None,
        };
        assert_eq!(
            v.check(&req, NOW, None).decision.reason(),
            Some(want),
            "{name}: check"
        );
        assert_eq!(
            two_phase(&v, &req).decision.reason(),
            Some(want),
            "{name}: begin/finish"
        );
    }
}

#[test]
fn an_allowed_token_past_its_lease_is_rate_limited() {
    // Rate limiting comes after the verifier: an allowed token whose budget at this edge
    // is spent for the window gets 429 `rate_limited` (core's `ratelimit`).
    use tessera_core::ratelimit::{refusal_reply, Admission, Budget, Lease, Window};
    let f = fixture();
    let v = Verifier::from_config_json(&config(json!({}))).unwrap();
    let t = TokenBuilder::new(NOW).sign(&f.ed);
    let headers = vec![("authorization".to_string(), format!("Bearer {t}"))];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: None,
    };
    let now_ms = NOW * 1000;
    let mut budget = Budget::new();
    budget.grant(
        Lease {
            window: Window::Minute,
            first: Window::Minute.index(now_ms),
            last: Window::Minute.index(now_ms),
            per_window: 1,
            limit: 1,
        },
        now_ms,
    );
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let Decision::Allow(_) = v.check(&req, NOW, None).decision else {
            panic!("the token is valid");
        };
        reasons.push(match budget.admit(now_ms) {
            Admission::Admit => None,
            Admission::Refuse(r) => Some(refusal_reply(&budget, &r, now_ms).reason),
        });
    }
    assert_eq!(reasons, vec![None, Some(Reason::RateLimited)]);
}

/// `preferred_username` reaches the identity (and so the username header) as signed; a
/// token without it has none; one that is not a string without control characters is
/// refused like any claim that reaches a header, on both signature paths.
#[test]
fn the_username_claim_is_read_when_present() {
    let f = fixture();
    let v = Verifier::from_config_json(&config(json!({}))).unwrap();
    let decide = |token: String| {
        let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
        let req = Request {
            method: "GET",
            path: "/items",
            headers: &headers,
            source_address: None,
        };
        let plain = v.check(&req, NOW, None).decision;
        assert_eq!(plain, two_phase(&v, &req).decision);
        plain
    };
    let with = |value: Value| {
        TokenBuilder::new(NOW)
            .claim("preferred_username", value)
            .sign(&f.ed)
    };
    match decide(with(json!("alice.smith"))) {
        Decision::Allow(id) => {
            assert_eq!(id.username.as_deref(), Some("alice.smith"));
            assert_eq!(id.user, "alice");
        }
        other => panic!("{other:?}"),
    }
    match decide(TokenBuilder::new(NOW).sign(&f.ed)) {
        Decision::Allow(id) => assert_eq!(id.username, None),
        other => panic!("{other:?}"),
    }
    for bad in [json!(7), json!(["a"]), json!("a\r\nx-evil: 1")] {
        match decide(with(bad.clone())) {
            Decision::Deny(d) => assert_eq!(d.reason, Reason::ClaimMissing, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}
