//! The scannable prefix and the pattern a secret scanner registers
//! (`token::API_TOKEN_PATTERN`): it finds every token issued, in any surrounding text,
//! and nothing it finds that is not a token is confirmed as one. Confirmation is what the
//! control plane's partner endpoint does: core's verifier with the org's keys. Random
//! strings (some given the prefix and the token's shape) and near misses (a real token,
//! prefix kept, body mutated by one or a few edits) are generated from a fixed seed, so a
//! failure repeats.

#![cfg(all(feature = "rust-ecdsa", feature = "rust-rsa"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regex::Regex;
use serde_json::json;
use tessera_core::token::{strip_api_prefix, API_TOKEN_PATTERN, API_TOKEN_PREFIX};
use tessera_core::{Decision, Request, TokenType, Verifier};
use tessera_testkit::{default_claims, Alg, TestKey, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

const NOW: u64 = 1_800_000_000;
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

struct Fixture {
    keys: Vec<TestKey>,
    verifier: Verifier,
}

fn fixture() -> Fixture {
    let keys = vec![
        TestKey::generate(Alg::EdDSA, "ed"),
        TestKey::generate(Alg::ES256, "es"),
        TestKey::generate(Alg::RS256, "rs"),
    ];
    let refs: Vec<&TestKey> = keys.iter().collect();
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": tessera_testkit::jwks(&refs),
        "status": {"required": false},
    });
    let verifier = Verifier::from_config_json(&config.to_string()).unwrap();
    Fixture { keys, verifier }
}

fn word(rng: &mut StdRng, max: usize) -> String {
    let n = rng.gen_range(1..=max);
    (0..n)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789_-:."[rng.gen_range(0..40)]))
        .collect()
}

/// An API token as the control plane issues it, with random claims, signed by a random key.
fn issued(f: &Fixture, rng: &mut StdRng) -> String {
    let mut claims = default_claims(NOW);
    claims.sub = word(rng, 40);
    claims.jti = format!("tok_{}", word(rng, 30));
    claims.scope = Some(
        (0..rng.gen_range(0..6))
            .map(|_| word(rng, 12))
            .collect::<Vec<_>>()
            .join(" "),
    );
    claims.status = None;
    claims.exp = i64::try_from(NOW).unwrap() + rng.gen_range(60..400 * 86_400);
    let key = &f.keys[rng.gen_range(0..f.keys.len())];
    format!("{API_TOKEN_PREFIX}{}", key.mint(TokenType::Api, &claims))
}

/// Whether core accepts `text` as a bearer token: the partner endpoint's confirmation.
fn confirmed(f: &Fixture, text: &str) -> bool {
    let headers = vec![("authorization".to_string(), format!("Bearer {text}"))];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: Some("127.0.0.1:1"),
    };
    matches!(
        f.verifier.check(&req, NOW, None).decision,
        Decision::Allow(_)
    )
}

fn anchored() -> Regex {
    Regex::new(&format!("^(?:{API_TOKEN_PATTERN})$")).unwrap()
}

#[test]
fn the_pattern_finds_every_issued_token_in_any_text() {
    let f = fixture();
    let whole = anchored();
    let find = Regex::new(API_TOKEN_PATTERN).unwrap();
    let mut rng = StdRng::seed_from_u64(26);
    for _ in 0..300 {
        let token = issued(&f, &mut rng);
        assert!(whole.is_match(&token), "{token}");
        assert!(confirmed(&f, &token), "{token}");
        // Stripped of the prefix, it is a plain compact JWS; legacy tokens are that.
        let jws = strip_api_prefix(&token);
        assert_eq!(jws.split('.').count(), 3);
        assert!(confirmed(&f, jws));
        // Found whole wherever it sits: a config file, a log line, a URL, JSON.
        for text in [
            format!("TESSERA_TOKEN={token}\n"),
            format!("curl -H 'Authorization: Bearer {token}' https://x"),
            format!("{{\"token\":\"{token}\"}}"),
            format!("https://example.test/?t={token}&x=1"),
        ] {
            let m = find.find(&text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(m.as_str(), token, "{text}");
        }
    }
}

#[test]
fn random_strings_are_never_found_or_never_confirmed() {
    let f = fixture();
    let find = Regex::new(API_TOKEN_PATTERN).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut found = 0;
    for i in 0..20_000 {
        let len = rng.gen_range(0..600);
        let mut s: String = (0..len)
            .map(|_| {
                if rng.gen_ratio(1, 40) {
                    '.'
                } else {
                    char::from(B64URL[rng.gen_range(0..64)])
                }
            })
            .collect();
        // A quarter given the prefix, a quarter the prefix and the token's three-part
        // shape (`eyJ` segments): the closest random text comes to a token.
        match i % 4 {
            0 => s.insert_str(0, API_TOKEN_PREFIX),
            1 => {
                let (a, b) = s.split_at(s.len() / 3);
                let (b, c) = b.split_at(b.len() / 2);
                s = format!("{API_TOKEN_PREFIX}eyJ{a}.eyJ{b}.{c}");
            }
            _ => {}
        }
        if i % 4 >= 2 {
            assert!(!find.is_match(&s), "random text matched: {s}");
        }
        if let Some(m) = find.find(&s) {
            found += 1;
            assert!(!confirmed(&f, m.as_str()), "a random string confirmed: {s}");
        }
    }
    // The shaped ones do reach the pattern: the check above is not empty.
    assert!(found > 0);
}

/// One random edit of the body (the text after the prefix).
fn mutate(rng: &mut StdRng, token: &str) -> String {
    let body: Vec<u8> = token.as_bytes()[API_TOKEN_PREFIX.len()..].to_vec();
    let mut b = body.clone();
    for _ in 0..rng.gen_range(1..=3) {
        let i = rng.gen_range(0..b.len());
        match rng.gen_range(0..6) {
            // Substitute a base64url character by another: the pattern still matches.
            0..=2 => {
                let old = b[i];
                let mut c = old;
                while c == old {
                    c = B64URL[rng.gen_range(0..64)];
                }
                if old != b'.' {
                    b[i] = c;
                }
            }
            3 => {
                b.remove(i);
            }
            4 => b.insert(i, B64URL[rng.gen_range(0..64)]),
            _ => {
                let j = (i + 1).min(b.len() - 1);
                b.swap(i, j);
            }
        }
        if b.is_empty() {
            b.push(b'A');
        }
    }
    if b == body {
        // An edit that undid itself: change one character for sure.
        let i = b.iter().rposition(|&c| c != b'.').unwrap();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    }
    format!("{API_TOKEN_PREFIX}{}", String::from_utf8(b).unwrap())
}

#[test]
fn near_misses_are_never_confirmed() {
    let f = fixture();
    let whole = anchored();
    let mut rng = StdRng::seed_from_u64(2026);
    let originals: Vec<String> = (0..40).map(|_| issued(&f, &mut rng)).collect();
    let mut shaped = 0;
    for n in 0..8_000 {
        let original = &originals[n % originals.len()];
        let near = mutate(&mut rng, original);
        assert_ne!(&near, original);
        assert!(near.starts_with(API_TOKEN_PREFIX));
        if whole.is_match(&near) {
            shaped += 1;
        }
        assert!(
            !confirmed(&f, &near),
            "a near miss of {original} confirmed: {near}"
        );
    }
    // Most near misses keep the token's shape: only the signature tells them apart.
    assert!(shaped > 4_000, "{shaped}");
}
