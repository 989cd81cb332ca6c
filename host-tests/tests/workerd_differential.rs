//! Differential test: one generated corpus of requests (valid tokens of every algorithm,
//! every reason code, edges of time, size and encoding, IP filters) goes through the
//! filter in a real Envoy and through the edge worker in a real workerd, twice: with
//! signatures checked by WebCrypto (the default) and in Rust only. Every case must give
//! the same status, reason and `WWW-Authenticate` in all three, and allowed ones the same
//! identity headers and request path at the upstream.
//!
//! The client address differs only in how it is carried: Envoy sees the connection's peer
//! (the test binds a loopback source address), the worker sees `CF-Connecting-IP` with
//! that same address.
//!
//! Needs TESSERA_ENVOY, TESSERA_FILTER_WASM, TESSERA_WORKERD and TESSERA_EDGE_WORKER_DIR;
//! `cargo xtask test` sets them.

mod common;
#[allow(dead_code)]
use tessera_host_tests::workerd;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::finish;
use serde_json::json;
#[allow(unused_imports)]
use tessera_host_tests::{repo_root, Response, TempDir};
use tessera_host_tests::{tools, EchoUpstream, Envoy, EnvoyOptions, Request};
use tessera_testkit::{
    b64url, jwks, now, status_list_json, tamper_signature, Alg, TestKey, TokenBuilder,
    DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_STATUS_URI,
};
use workerd::{workerd_tools, Origin, Workerd, WorkerdOptions};

const OTHER_ISSUER: &str = "https://cp.tessera.test/v1/orgs/globex";
const MAX_LIFETIME: u64 = 86_400;
const IDENTITY: [&str; 4] = [
    "x-tessera-user",
    "x-tessera-org",
    "x-tessera-token-id",
    "x-tessera-scopes",
];

/// One request of the corpus.
struct Probe {
    name: String,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    client: IpAddr,
}

fn probe(name: impl Into<String>, headers: Vec<(String, String)>) -> Probe {
    Probe {
        name: name.into(),
        method: "GET",
        path: "/api/things".into(),
        headers,
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {token}"))]
}

/// What a host answered, reduced to what must agree.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    reason: Option<String>,
    www_authenticate: Vec<String>,
    identity: Vec<Vec<String>>,
    /// The request target the upstream received (allowed requests).
    upstream_path: Option<String>,
}

fn answer(resp: &tessera_host_tests::Response) -> Answer {
    Answer {
        status: resp.status,
        reason: resp.reason(),
        www_authenticate: resp
            .header_all("www-authenticate")
            .into_iter()
            .map(str::to_owned)
            .collect(),
        identity: IDENTITY.iter().map(|h| resp.upstream_header(h)).collect(),
        upstream_path: resp
            .upstream()
            .and_then(|u| u.get("path")?.as_str().map(str::to_owned)),
    }
}

/// A token of size exactly `len` (or the nearest reachable size above it: unpadded
/// base64url never has a length of 1 mod 4) signed by `key`.
fn token_of_len(t: u64, key: &TestKey, len: usize) -> String {
    let base = TokenBuilder::new(t).claim("pad", "").sign(key).len();
    let mut pad = (len.saturating_sub(base)) * 3 / 4;
    loop {
        let tok = TokenBuilder::new(t).claim("pad", "x".repeat(pad)).sign(key);
        if tok.len() >= len {
            return tok;
        }
        pad += 1;
    }
}

fn corpus(t: u64, keys: &[&TestKey], ghost: &TestKey) -> Vec<Probe> {
    let mut out = Vec::new();
    let ed = keys[0];

    // --- per algorithm: valid tokens, every token-level reason, time edges ---
    for key in keys {
        let alg = key.alg().name();
        let tok = |b: TokenBuilder| b.sign(key);
        let mut add =
            |name: &str, token: String| out.push(probe(format!("{alg}: {name}"), bearer(&token)));
        add("valid", tok(TokenBuilder::new(t)));
        add(
            "valid, aud array",
            tok(TokenBuilder::new(t).claim("aud", json!(["other", DEFAULT_AUDIENCE]))),
        );
        add(
            "valid, second issuer",
            tok(TokenBuilder::new(t).claim("iss", OTHER_ISSUER)),
        );
        add(
            "valid access token",
            tok(TokenBuilder::access_token(t, "tok_1")),
        );
        add(
            "typ with application/ prefix",
            tok(TokenBuilder::new(t).header("typ", "application/tessera-api+jwt")),
        );
        add(
            "typ upper case",
            tok(TokenBuilder::new(t).header("typ", "TESSERA-API+JWT")),
        );
        add("typ JWT", tok(TokenBuilder::new(t).header("typ", "JWT")));
        add(
            "typ missing",
            tok(TokenBuilder::new(t).remove_header("typ")),
        );
        add(
            "signature altered",
            tamper_signature(&tok(TokenBuilder::new(t))),
        );
        let valid = tok(TokenBuilder::new(t));
        add("signature truncated", valid[..valid.len() - 4].to_owned());
        let (input, _) = valid.rsplit_once('.').unwrap_or((&valid, ""));
        add("signature empty", format!("{input}."));
        add(
            "signature of another token",
            format!(
                "{input}.{}",
                tok(TokenBuilder::new(t).claim("jti", "x"))
                    .rsplit('.')
                    .next()
                    .unwrap_or("")
            ),
        );
        add(
            "kid missing",
            tok(TokenBuilder::new(t).remove_header("kid")),
        );
        add(
            "kid unknown",
            tok(TokenBuilder::new(t).header("kid", ghost.kid())),
        );
        add(
            "kid not a string",
            tok(TokenBuilder::new(t).header("kid", 7)),
        );
        add(
            "crit",
            tok(TokenBuilder::new(t).header("crit", json!(["exp"]))),
        );
        add(
            "alg none",
            TokenBuilder::new(t).header("kid", key.kid()).unsigned(),
        );
        add(
            "HS256 with the public key",
            TokenBuilder::new(t)
                .header("kid", key.kid())
                .sign_hs256(&key.public_key_bytes()),
        );
        add(
            "alg RS512 label",
            tok(TokenBuilder::new(t).header("alg", "RS512")),
        );
        add("expired long ago", tok(TokenBuilder::new(t - 7200)));
        add(
            "exp 90 s ago (beyond 60 s skew)",
            tok(TokenBuilder::new(t)
                .claim("iat", t - 600)
                .claim("nbf", t - 600)
                .claim("exp", t - 90)),
        );
        add(
            "exp 30 s ago (within skew)",
            tok(TokenBuilder::new(t)
                .claim("iat", t - 600)
                .claim("nbf", t - 600)
                .claim("exp", t - 30)),
        );
        add(
            "nbf in 30 s (within skew)",
            tok(TokenBuilder::new(t).claim("nbf", t + 30)),
        );
        add(
            "nbf in 120 s",
            tok(TokenBuilder::new(t).claim("nbf", t + 120)),
        );
        add("nbf missing", tok(TokenBuilder::new(t).remove_claim("nbf")));
        add(
            "iat in 30 s (within skew)",
            tok(TokenBuilder::new(t).claim("iat", t + 30).claim("nbf", t)),
        );
        add(
            "iat in 600 s",
            tok(TokenBuilder::new(t).claim("iat", t + 600).claim("nbf", t)),
        );
        add("iat missing", tok(TokenBuilder::new(t).remove_claim("iat")));
        add(
            "lifetime max + 100 s",
            tok(TokenBuilder::new(t).claim("exp", t + MAX_LIFETIME + 100)),
        );
        add(
            "lifetime exactly max",
            tok(TokenBuilder::new(t).claim("exp", t + MAX_LIFETIME)),
        );
        add(
            "no iat, exp beyond max from now",
            tok(TokenBuilder::new(t)
                .remove_claim("iat")
                .claim("exp", t + MAX_LIFETIME + 100)),
        );
        add(
            "wrong issuer",
            tok(TokenBuilder::new(t).claim("iss", "https://evil.test/v1/orgs/acme")),
        );
        add(
            "issuer with trailing slash",
            tok(TokenBuilder::new(t).claim("iss", format!("{DEFAULT_ISSUER}/"))),
        );
        add(
            "wrong audience",
            tok(TokenBuilder::new(t).claim("aud", "someone-else")),
        );
        add(
            "empty audience array",
            tok(TokenBuilder::new(t).claim("aud", json!([]))),
        );
        for claim in ["exp", "sub", "jti", "org", "iss", "aud", "status"] {
            add(
                &format!("{claim} missing"),
                tok(TokenBuilder::new(t).remove_claim(claim)),
            );
        }
        add(
            "exp as a string",
            tok(TokenBuilder::new(t).claim("exp", (t + 60).to_string())),
        );
        add(
            "exp fractional",
            tok(TokenBuilder::new(t).claim("exp", (t + 60) as f64 + 0.5)),
        );
        add("sub a number", tok(TokenBuilder::new(t).claim("sub", 5)));
        add(
            "scope a number",
            tok(TokenBuilder::new(t).claim("scope", 7)),
        );
        add(
            "status not an object",
            tok(TokenBuilder::new(t).claim("status", "x")),
        );
        add(
            "status idx 1 (revoked)",
            tok(TokenBuilder::new(t).status_idx(1)),
        );
        add(
            "status idx 2 (suspended)",
            tok(TokenBuilder::new(t).status_idx(2)),
        );
        add(
            "status idx 3 (rotated)",
            tok(TokenBuilder::new(t).status_idx(3)),
        );
        add(
            "status idx 7 (valid)",
            tok(TokenBuilder::new(t).status_idx(7)),
        );
        add(
            "status idx beyond the list",
            tok(TokenBuilder::new(t).status_idx(100_000)),
        );
        add(
            "status uri unknown",
            tok(TokenBuilder::new(t).status(0, "https://cp.tessera.test/v1/orgs/x/status-list")),
        );
        add(
            "non-ASCII claims",
            tok(TokenBuilder::new(t)
                .claim("sub", "b\u{f8}b \u{2603}")
                .claim("org", "\u{e9}cole")),
        );
        add(
            "scopes",
            tok(TokenBuilder::new(t).claim("scope", "read write admin")),
        );
    }

    // --- routes and scopes ---
    let scoped = |scope: &str| TokenBuilder::new(t).claim("scope", scope).sign(ed);
    for (method, path, scope) in [
        ("GET", "/admin", "read"),
        ("GET", "/admin", "admin"),
        ("GET", "/admin/users", "read admin"),
        ("GET", "/administrator", "read"),
        ("GET", "/public/../admin/users", "read"),
        ("GET", "//admin//users", "read"),
        ("GET", "/admin?x=1", "read"),
        ("GET", "/x?next=/admin", "read"),
        ("POST", "/write/items", "read"),
        ("POST", "/write/items", "write"),
        ("GET", "/write/items", "read"),
        ("DELETE", "/write", "read write"),
        ("POST", "/admin/x", "write"),
        ("GET", "/public/%2e%2e/admin/users", "read"),
        ("GET", "/public/%2E%2E/admin", "read"),
        ("GET", "/./admin", "read"),
        ("GET", "/admin/./../admin", "read"),
        ("GET", "/ADMIN", "read"),
        ("GET", "/admin%2Fusers", "read"),
        ("GET", "/%61dmin", "read"),
        ("GET", "/api/caf%C3%A9?q=%20", "read"),
    ] {
        let mut p = probe(
            format!("route {method} {path} with {scope:?}"),
            bearer(&scoped(scope)),
        );
        p.method = method;
        p.path = path.into();
        out.push(p);
    }

    // --- IP filter: the client address vs ip_allow ---
    let clients: [IpAddr; 4] = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        IpAddr::V4(Ipv4Addr::new(127, 9, 8, 7)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    for allow in [
        json!(["127.0.0.1/32"]),
        json!(["127.0.0.1"]),
        json!(["127.0.0.0/8"]),
        json!(["127.0.0.2", "::1"]),
        json!(["::1/128"]),
        json!(["10.0.0.0/8"]),
        json!(["0.0.0.0/0"]),
        json!(["::/0"]),
        json!(["::ffff:127.0.0.0/104"]),
        json!([]),
    ] {
        let token = TokenBuilder::new(t)
            .claim("ip_allow", allow.clone())
            .sign(ed);
        for client in clients {
            let mut p = probe(format!("ip_allow {allow} from {client}"), bearer(&token));
            p.client = client;
            out.push(p);
        }
    }

    // --- extraction and encoding ---
    let valid = TokenBuilder::new(t).sign(ed);
    let other = TokenBuilder::new(t).claim("jti", "tok_2").sign(ed);
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    let (hdr, rest) = valid.split_once('.').unwrap_or((&valid, ""));
    let (claims, sig) = rest.split_once('.').unwrap_or((rest, ""));
    let std_b64 = |s: &str| s.replace('-', "+").replace('_', "/");
    let encoding: Vec<(&str, Vec<(String, String)>)> = vec![
        ("no token", vec![]),
        ("empty Authorization", h(&[("authorization", "")])),
        ("Bearer without token", h(&[("authorization", "Bearer")])),
        ("Bearer and spaces", h(&[("authorization", "Bearer    ")])),
        ("Basic", h(&[("authorization", "Basic YWxpY2U6c2VjcmV0")])),
        (
            "lower-case scheme",
            h(&[("authorization", &format!("bearer {valid}"))]),
        ),
        (
            "upper-case scheme",
            h(&[("authorization", &format!("BEARER {valid}"))]),
        ),
        (
            "Token scheme",
            h(&[("authorization", &format!("Token {valid}"))]),
        ),
        (
            "two spaces",
            h(&[("authorization", &format!("Bearer  {valid}"))]),
        ),
        (
            "tab separator",
            h(&[("authorization", &format!("Bearer\t{valid}"))]),
        ),
        (
            "trailing spaces",
            h(&[("authorization", &format!("Bearer {valid}   "))]),
        ),
        ("custom header", h(&[("csp-auth-token", &valid)])),
        (
            "custom header with a scheme",
            h(&[("csp-auth-token", &format!("Bearer {valid}"))]),
        ),
        (
            "same token twice in Authorization",
            h(&[
                ("authorization", &format!("Bearer {valid}")),
                ("authorization", &format!("Bearer {valid}")),
            ]),
        ),
        (
            "two different Authorization headers",
            h(&[
                ("authorization", &format!("Bearer {valid}")),
                ("authorization", &format!("Bearer {other}")),
            ]),
        ),
        (
            "same token in two sources",
            h(&[
                ("authorization", &format!("Bearer {valid}")),
                ("csp-auth-token", &valid),
            ]),
        ),
        (
            "different tokens in two sources",
            h(&[
                ("authorization", &format!("Bearer {valid}")),
                ("csp-auth-token", &other),
            ]),
        ),
        (
            "Basic plus a custom-header token",
            h(&[
                ("authorization", "Basic YWxpY2U6c2VjcmV0"),
                ("csp-auth-token", &valid),
            ]),
        ),
        ("not a JWT", bearer("not-a-jwt")),
        ("a.b.c", bearer("a.b.c")),
        ("two segments", bearer(&format!("{hdr}.{claims}"))),
        ("four segments", bearer(&format!("{valid}.x"))),
        ("dots only", bearer("..")),
        (
            "padded base64 header",
            bearer(&format!("{hdr}==.{claims}.{sig}")),
        ),
        (
            "standard base64 alphabet",
            bearer(&format!(
                "{}.{}.{}",
                std_b64(hdr),
                std_b64(claims),
                std_b64(sig)
            )),
        ),
        (
            "header not JSON",
            bearer(&format!("{}.{claims}.{sig}", b64url(b"nope"))),
        ),
        (
            "header a JSON array",
            bearer(&format!("{}.{claims}.{sig}", b64url(b"[1]"))),
        ),
        (
            "claims not JSON",
            bearer(&format!("{hdr}.{}.{sig}", b64url(b"{\"exp\":"))),
        ),
        (
            "claims a JSON array",
            bearer(&format!("{hdr}.{}.{sig}", b64url(b"[]"))),
        ),
        (
            "invalid base64 characters",
            bearer(&format!("{hdr}.{claims}!.{sig}")),
        ),
    ];
    for (name, headers) in encoding {
        out.push(probe(name, headers));
    }
    for (name, len) in [
        ("token of 8000 bytes", 8000),
        ("token of 8192 bytes (the limit)", 8192),
        ("token of 8193 bytes", 8193),
        ("token of 20000 bytes", 20_000),
    ] {
        let token = token_of_len(t, ed, len);
        out.push(probe(
            format!("{name}: {} bytes", token.len()),
            bearer(&token),
        ));
    }
    out
}

#[test]
fn envoy_and_workerd_agree_on_the_corpus() {
    let (envoy_bin, filter_wasm) = tools();
    let (workerd_bin, bundle) = workerd_tools();
    let t = now();
    let ed = TestKey::generate(Alg::EdDSA, "ed-d");
    let es = TestKey::generate(Alg::ES256, "es-d");
    let rs = TestKey::generate(Alg::RS256, "rs-d");
    let ghost = TestKey::generate(Alg::EdDSA, "ghost-d");
    let config = json!({
        "issuers": [DEFAULT_ISSUER, OTHER_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed, &es, &rs]),
        "token_sources": [
            {"header": "authorization", "schemes": ["Bearer", "Token"]},
            {"header": "csp-auth-token"}
        ],
        "max_lifetime_secs": MAX_LIFETIME,
        "routes": [
            {"path_prefix": "/admin", "scopes": ["admin"]},
            {"path_prefix": "/write", "methods": ["POST", "DELETE"], "scopes": ["write"]}
        ],
        "status": {"lists": [status_list_json(DEFAULT_STATUS_URI, &[0, 1, 2, 3, 0, 0, 0, 0])]},
    });
    let corpus = corpus(t, &[&ed, &es, &rs], &ghost);
    assert!(corpus.len() >= 200, "corpus has {} cases", corpus.len());

    let envoy_upstream = EchoUpstream::start().expect("echo upstream");
    let envoy = Envoy::start(
        &EnvoyOptions::new(&envoy_bin)
            .filter(&filter_wasm, &config)
            .upstream(envoy_upstream.addr())
            .with_ipv6(),
    )
    .unwrap_or_else(|e| panic!("Envoy did not start: {e}"));
    // Two workers: signatures with WebCrypto (the default), and in Rust only.
    let worker_upstream = EchoUpstream::start().expect("echo upstream");
    let start_worker = |webcrypto: &str| {
        Workerd::start(
            &WorkerdOptions::new(
                &workerd_bin,
                &bundle,
                &config,
                Origin::Url(format!("http://{}", worker_upstream.addr())),
            )
            .var("TESSERA_WEBCRYPTO", webcrypto),
        )
        .unwrap_or_else(|e| panic!("workerd did not start: {e}"))
    };
    let worker = start_worker("auto");
    let rust_only = start_worker("off");

    let mut failures = Vec::new();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for p in &corpus {
        let mut req = Request::new(p.method, &p.path);
        for (n, v) in &p.headers {
            req = req.header(n, v);
        }
        let via_envoy = match p.client {
            IpAddr::V4(_) => envoy.addr(),
            IpAddr::V6(_) => envoy.addr_v6().expect("IPv6 listener"),
        };
        let e = req.clone().bind(p.client).send(via_envoy);
        let req = req.header("cf-connecting-ip", &p.client.to_string());
        let w = req.send(worker.addr());
        let r = req.send(rust_only.addr());
        match (e, w, r) {
            (Ok(e), Ok(w), Ok(r)) => {
                let (ea, wa, ra) = (answer(&e), answer(&w), answer(&r));
                *by_reason
                    .entry(
                        ea.reason
                            .clone()
                            .unwrap_or_else(|| format!("allow ({})", ea.status)),
                    )
                    .or_default() += 1;
                if ea != wa || ea != ra {
                    println!(
                        "DIFF {}: envoy {ea:?} | workerd {wa:?} | workerd rust-only {ra:?}",
                        p.name
                    );
                    failures.push(format!(
                        "{}: envoy {} | workerd {} | workerd rust-only {}",
                        p.name,
                        e.summary(),
                        w.summary(),
                        r.summary()
                    ));
                }
            }
            (e, w, r) => failures.push(format!(
                "{}: a request failed: envoy {:?} | workerd {:?} | workerd rust-only {:?}",
                p.name,
                e.err(),
                w.err(),
                r.err()
            )),
        }
    }
    println!(
        "{} cases, {} agree, {} differ",
        corpus.len(),
        corpus.len() - failures.len(),
        failures.len()
    );
    for (reason, n) in &by_reason {
        println!("  {reason}: {n}");
    }
    // The corpus must reach every reason code core defines and allow some. Only
    // `keys_unavailable` is left out: both hosts here have keys from the start (it is
    // covered where keys come from a control plane); and `rate_limited`, which needs a
    // lease from a control plane (core's `ratelimit` tests and the fleet test cover it).
    let missing: Vec<&str> = tessera_core::Reason::ALL
        .iter()
        .filter(|r| {
            !matches!(
                **r,
                tessera_core::Reason::KeysUnavailable | tessera_core::Reason::RateLimited
            )
        })
        .map(|r| r.as_str())
        .filter(|r| !by_reason.contains_key(*r))
        .collect();
    if !missing.is_empty() {
        failures.push(format!("the corpus never produced {missing:?}"));
    }
    if !by_reason.contains_key("allow (200)") {
        failures.push("the corpus allowed nothing".into());
    }
    finish(&failures);
}
