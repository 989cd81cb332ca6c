//! A native driver for profiling the verifier with callgrind (issue 6): runs one request
//! shape many times and prints the wall time per check. Keys and tokens are generated at
//! run time by tessera-testkit.
//!
//! ```sh
//! cargo build --release -p tessera-core --example profile
//! valgrind --tool=callgrind --callgrind-out-file=target/callgrind.hit \
//!     target/release/examples/profile hit 20000
//! callgrind_annotate target/callgrind.hit | head -40
//! ```
//!
//! Scenarios: `hit` (one Ed25519 token, cache on: the reused-token path), `new-ed` and
//! `new-es` (a new token every check, signature in Rust), `new-es-host` (a new ES256
//! token every check through `begin`/`finish` with the signature verdict given, as when
//! Envoy's BoringSSL checks it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::time::Instant;

use serde_json::json;
use tessera_core::{Decision, Request, Step, Verifier};
use tessera_testkit::{
    jwks, now, status_list_json, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
    DEFAULT_STATUS_URI,
};

fn headers(token: &str) -> Vec<(String, String)> {
    [
        (":authority", "127.0.0.1:10000"),
        (":path", "/"),
        (":method", "GET"),
        (":scheme", "http"),
        ("authorization", &format!("Bearer {token}")),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "3f1e0c9a-8d6b-4b7e-9a51-1f2e3d4c5b6a"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "hit".into());
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let ed = TestKey::generate(Alg::EdDSA, "ed");
    let es = TestKey::generate(Alg::ES256, "es");
    let t = now();
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed, &es]),
        "cache_size": 1024,
        "status": {"lists": [status_list_json(DEFAULT_STATUS_URI, &vec![0u8; 1024])]},
    });
    let verifier = Verifier::from_config_json(&config.to_string()).expect("config");
    let key = match scenario.as_str() {
        "new-es" | "new-es-host" => &es,
        _ => &ed,
    };
    let count = if scenario == "hit" { 1 } else { n };
    let requests: Vec<Vec<(String, String)>> = (0..count)
        .map(|i| {
            headers(
                &TokenBuilder::new(t)
                    .claim("jti", format!("tok_{i}"))
                    .claim("sub", format!("user_{i}"))
                    .status_idx(u64::try_from(i % 1000).unwrap())
                    .sign(key),
            )
        })
        .collect();
    let started = Instant::now();
    let allowed = run_checks(&verifier, &scenario, &requests, n, t);
    let per = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    assert_eq!(allowed, n, "every check must allow");
    println!("{scenario}: {n} checks, {per:.2} µs per check (native, wall)");
}

/// The measured loop (callgrind: `--toggle-collect=*run_checks*`).
#[inline(never)]
fn run_checks(
    verifier: &Verifier,
    scenario: &str,
    requests: &[Vec<(String, String)>],
    n: usize,
    t: u64,
) -> usize {
    let mut cache = verifier.new_cache();
    let mut allowed = 0usize;
    for i in 0..n {
        let headers = &requests[i % requests.len()];
        let req = Request {
            method: "GET",
            path: "/",
            headers,
            source_address: Some("127.0.0.1:40000"),
        };
        let outcome = match scenario {
            "hit" => verifier.check(&req, t, Some(&mut cache)),
            "new-ed" | "new-es" => verifier.check(&req, t, None),
            "new-es-host" => match verifier.begin(&req, t, None) {
                Step::Done(o) => o,
                Step::Verify(p) => verifier.finish(p, true, &req, t, None),
            },
            other => panic!("unknown scenario {other} (hit, new-ed, new-es, new-es-host)"),
        };
        if matches!(outcome.decision, Decision::Allow(_)) {
            allowed += 1;
        }
    }
    allowed
}
