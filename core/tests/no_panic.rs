//! The data plane never panics on input: mutated, truncated and random tokens, hostile
//! header sets and peer addresses all produce a decision. A small deterministic generator
//! keeps the run reproducible; a panic anywhere fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tessera_core::{Decision, Request, Verifier};
use tessera_testkit::{
    Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_STATUS_URI,
};

const NOW: u64 = 1_800_000_000;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, token: &str) -> String {
    let mut b = token.as_bytes().to_vec();
    match rng.below(6) {
        0 => {
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            let i = rng.below(b.len());
            b.insert(i, (rng.next() & 0xff) as u8);
        }
        3 => {
            let i = rng.below(b.len());
            b[i] = b".=+/\\\"{}"[rng.below(8)];
        }
        4 => {
            let n = rng.below(200);
            b = (0..n).map(|_| (rng.next() & 0xff) as u8).collect();
        }
        _ => {
            let dup = b.clone();
            b.extend_from_slice(b".");
            b.extend_from_slice(&dup);
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn hostile_inputs_always_get_a_decision() {
    let keys = [
        TestKey::generate(Alg::EdDSA, "ed"),
        TestKey::generate(Alg::ES256, "es"),
        TestKey::generate(Alg::RS256, "rs"),
    ];
    let cfg = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": tessera_testkit::jwks(&[&keys[0], &keys[1], &keys[2]]),
        "token_sources": [{"header": "authorization", "schemes": ["Bearer"]}, {"header": "x-token"}],
        "client_ip": {"source": "x_forwarded_for", "trusted_hops": 2},
        "routes": [{"path_prefix": "/a", "scopes": ["s"]}],
        "status": {"lists": [{"uri": DEFAULT_STATUS_URI, "bits": 2, "lst": tessera_testkit::status_list_lst(&[0, 1, 2])}]}
    });
    let v = Verifier::from_config_json(&cfg.to_string()).unwrap();
    let mut cache = v.new_cache();
    let seeds: Vec<String> = keys
        .iter()
        .map(|k| {
            TokenBuilder::new(NOW)
                .claim("ip_allow", json!(["10.0.0.0/8", "::1"]))
                .claim("aud", json!(["x", DEFAULT_AUDIENCE]))
                .sign(k)
        })
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let odd_values = [
        "",
        " ",
        "Bearer",
        "Bearer  ",
        "bearer \u{0}",
        "Bearer ..",
        "Bearer a.b.c",
        "\u{feff}Bearer x",
    ];
    let odd_peers = [
        "",
        "::",
        "[::1]",
        "[::1]:99999",
        "1.2.3.4:5",
        "x:y:z",
        "[fe80::1%eth0]:1",
        "999.1.1.1:1",
    ];
    let mut decisions = 0usize;
    for i in 0..3000 {
        let seed = &seeds[i % seeds.len()];
        let token = if i % 7 == 0 {
            seed.clone()
        } else {
            mutate(&mut rng, seed)
        };
        let mut headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
        if i % 5 == 0 {
            headers.push(("x-token".into(), mutate(&mut rng, seed)));
        }
        if i % 3 == 0 {
            headers.push((
                "authorization".into(),
                odd_values[rng.below(odd_values.len())].into(),
            ));
        }
        headers.push((
            "x-forwarded-for".into(),
            ["10.1.1.1, 127.0.0.1", ",,,", "::1", "a,b,c", ""][rng.below(5)].into(),
        ));
        let path = ["/a", "/a/b?x", "", "?", "/\u{0}", "//a"][rng.below(6)];
        let method = ["GET", "", "post", "\u{1F600}"][rng.below(4)];
        let req = Request {
            method,
            path,
            headers: &headers,
            source_address: Some(odd_peers[rng.below(odd_peers.len())]),
        };
        let cached = i % 2 == 0;
        let out = if cached {
            v.check(&req, NOW, Some(&mut cache))
        } else {
            v.check(&req, NOW, None)
        };
        match out.decision {
            Decision::Allow(_) | Decision::Deny(_) => decisions += 1,
        }
    }
    assert_eq!(decisions, 3000);
}

#[test]
fn hostile_configs_are_refused_not_panicked_on() {
    let key = TestKey::generate(Alg::EdDSA, "k");
    let base =
        json!({"issuers": ["i"], "audiences": ["a"], "jwks": tessera_testkit::jwks(&[&key])})
            .to_string();
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let mutated = mutate(&mut rng, &base);
        // Either outcome is fine; reaching the next iteration is the assertion.
        let _ = Verifier::from_config_json(&mutated);
    }
    for doc in ["", "null", "[]", "1e999", "{\"issuers\":[\"i\"],\"audiences\":[\"a\"],\"jwks\":{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"n\":\"AQAB\",\"e\":\"\"}]}}"] {
        assert!(Verifier::from_config_json(doc).is_err(), "{doc}");
    }
}
