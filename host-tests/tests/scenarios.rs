//! Data-driven scenarios: the built module inside a real Envoy, in front of the echo
//! upstream. One Envoy per plugin configuration, many cases each.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{finish, run_table, Case, Outcome, Via, Www, ALICE};
use serde_json::{json, Value};
use tessera_host_tests::{tools, EchoUpstream, Envoy, EnvoyOptions, Request};
use tessera_testkit::{
    jwks, now, status_list_json, tamper_signature, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE,
    DEFAULT_ISSUER, DEFAULT_STATUS_URI,
};

/// Status list used by every configuration: idx 0 valid, 1 revoked, 2 suspended, 3 valid.
fn status_lists() -> Value {
    json!([status_list_json(DEFAULT_STATUS_URI, &[0, 1, 2, 0])])
}

fn start(options: &EnvoyOptions) -> Envoy {
    Envoy::start(options).unwrap_or_else(|e| panic!("Envoy with the filter did not start: {e}"))
}

/// Token sources, scopes, status, IP filter on the peer address, every algorithm.
#[test]
fn scenarios_peer_address() {
    let (envoy_bin, wasm) = tools();
    let t = now();
    let ed = TestKey::generate(Alg::EdDSA, "ed-1");
    let es = TestKey::generate(Alg::ES256, "es-1");
    let rs = TestKey::generate(Alg::RS256, "rs-1");
    // Keys the verifier does not know: same kid as `ed` (wrong key), and an unknown kid.
    let impostor = TestKey::generate(Alg::EdDSA, "ed-1");
    let ghost = TestKey::generate(Alg::EdDSA, "ghost");

    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed, &es, &rs]),
        "token_sources": [
            {"header": "authorization", "schemes": ["Bearer", "Token"]},
            {"header": "csp-auth-token"}
        ],
        "routes": [{"path_prefix": "/admin", "scopes": ["admin"]}],
        "status": {"lists": status_lists()},
    });

    let tok = |b: TokenBuilder| b.sign(&ed);
    let valid = tok(TokenBuilder::new(t));
    let other_valid = tok(TokenBuilder::new(t).claim("jti", "tok_other"));
    let get = |path: &str| Request::get(path);
    let bearer = |token: &str| get("/api/things").bearer(token);

    let cases = vec![
        // --- allowed, one per algorithm, identity headers as documented ---
        Case::allow("valid EdDSA token", bearer(&valid), ALICE)
            .upstream("authorization", &[&format!("Bearer {valid}")]),
        Case::allow(
            "valid ES256 token",
            bearer(&TokenBuilder::new(t).sign(&es)),
            ALICE,
        ),
        Case::allow(
            "valid RS256 token",
            bearer(&TokenBuilder::new(t).sign(&rs)),
            ALICE,
        ),
        Case::allow(
            "identity headers follow the claims",
            bearer(&tok(TokenBuilder::new(t)
                .claim("sub", "bob")
                .claim("org", "globex")
                .claim("jti", "tok_42")
                .claim("scope", "read write"))),
            ["bob", "globex", "tok_42", "read write"],
        ),
        Case::allow(
            "Authorization: Token scheme",
            get("/api/things").header("authorization", &format!("Token {valid}")),
            ALICE,
        ),
        Case::allow(
            "custom header source csp-auth-token",
            get("/api/things").header("csp-auth-token", &valid),
            ALICE,
        ),
        Case::allow(
            "same token in two sources is not ambiguous",
            bearer(&valid).header("csp-auth-token", &valid),
            ALICE,
        ),
        Case::allow(
            "spoofed identity headers are replaced",
            bearer(&valid)
                .header("x-tessera-user", "mallory")
                .header("x-tessera-user", "eve")
                .header("X-Tessera-Org", "evil")
                .header("x-tessera-token-id", "forged")
                .header("x-tessera-scopes", "admin"),
            ALICE,
        ),
        Case::allow(
            "scoped route with the scope",
            Request::new("POST", "/admin/users")
                .bearer(&tok(TokenBuilder::new(t).claim("scope", "read admin"))),
            ["alice", "acme", "tok_1", "read admin"],
        ),
        Case::allow(
            "path prefix matches whole segments only",
            get("/administrator").bearer(&valid),
            ALICE,
        ),
        Case::allow(
            "ip_allow 127.0.0.1/32, client 127.0.0.1",
            bearer(&tok(
                TokenBuilder::new(t).claim("ip_allow", json!(["127.0.0.1/32"]))
            ))
            .bind(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ALICE,
        ),
        Case::allow(
            "ip_allow ::1 (bare address), client ::1",
            bearer(&tok(TokenBuilder::new(t).claim("ip_allow", json!(["::1"]))))
                .bind(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ALICE,
        )
        .via(Via::V6),
        Case::allow(
            "access token (typ at+jwt) exchanged from an API token",
            bearer(&tok(TokenBuilder::access_token(t, "tok_1"))),
            ["alice", "acme", "at_1", "read"],
        ),
        Case::allow(
            "typ compared case-insensitively, application/ prefix ignored",
            bearer(&tok(
                TokenBuilder::new(t).header("typ", "application/Tessera-API+JWT")
            )),
            ALICE,
        ),
        // --- token extraction ---
        Case::deny(
            "no token",
            get("/api/things"),
            401,
            "token_missing",
            Www::challenge(),
        ),
        Case::deny(
            "unlisted scheme counts as no token",
            get("/api/things").header("authorization", "Basic YWxpY2U6c2VjcmV0"),
            401,
            "token_missing",
            Www::challenge(),
        ),
        Case::deny(
            "two different tokens in two sources",
            bearer(&valid).header("csp-auth-token", &other_valid),
            400,
            "token_ambiguous",
            Www::error("invalid_request"),
        ),
        Case::allow(
            "same token in two Authorization headers is not ambiguous",
            bearer(&valid).bearer(&valid),
            ALICE,
        ),
        Case::deny(
            "two different csp-auth-token headers",
            get("/api/things")
                .header("csp-auth-token", &valid)
                .header("csp-auth-token", &other_valid),
            400,
            "token_ambiguous",
            Www::error("invalid_request"),
        ),
        Case::deny(
            // Envoy joins repeated Authorization headers into one value with ","
            // ("Bearer A,Bearer B"): the filter sees a single, comma-separated value.
            "two different Authorization headers",
            bearer(&valid).bearer(&other_valid),
            400,
            "token_ambiguous",
            Www::error("invalid_request"),
        ),
        // --- 401 invalid_token, one per reason ---
        Case::invalid("malformed token", bearer("not-a-jwt"), "token_malformed"),
        Case::invalid(
            "malformed: three parts of garbage",
            bearer("a.b.c"),
            "token_malformed",
        ),
        Case::invalid(
            "signature bytes altered",
            bearer(&tamper_signature(&valid)),
            "signature_invalid",
        ),
        Case::invalid(
            "signed by another key with a configured kid",
            bearer(&TokenBuilder::new(t).sign(&impostor)),
            "signature_invalid",
        ),
        Case::invalid(
            "unknown kid",
            bearer(&TokenBuilder::new(t).sign(&ghost)),
            "key_unknown",
        ),
        Case::invalid(
            "alg none",
            bearer(&TokenBuilder::new(t).header("kid", ed.kid()).unsigned()),
            "alg_not_allowed",
        ),
        Case::invalid(
            "HS256 keyed with the Ed25519 public key, real kid",
            bearer(
                &TokenBuilder::new(t)
                    .header("kid", ed.kid())
                    .sign_hs256(&ed.public_key_bytes()),
            ),
            "alg_not_allowed",
        ),
        Case::invalid(
            "HS256 keyed with the RSA public key, real kid",
            bearer(
                &TokenBuilder::new(t)
                    .header("kid", rs.kid())
                    .sign_hs256(&rs.public_key_bytes()),
            ),
            "alg_not_allowed",
        ),
        Case::invalid(
            "ES256 token naming the EdDSA key's kid",
            bearer(&TokenBuilder::new(t).header("kid", ed.kid()).sign(&es)),
            "alg_not_allowed",
        ),
        Case::invalid(
            "expired",
            bearer(&tok(TokenBuilder::new(t - 7200))),
            "expired",
        ),
        Case::invalid(
            "nbf in the future",
            bearer(&tok(TokenBuilder::new(t).claim("nbf", t + 1800))),
            "not_yet_valid",
        ),
        Case::invalid(
            "wrong issuer",
            bearer(&tok(
                TokenBuilder::new(t).claim("iss", "https://evil.test/v1/orgs/acme")
            )),
            "issuer_mismatch",
        ),
        Case::invalid(
            "wrong audience",
            bearer(&tok(TokenBuilder::new(t).claim("aud", "someone-else"))),
            "audience_mismatch",
        ),
        Case::invalid(
            "token larger than 8192 bytes",
            bearer(&tok(TokenBuilder::new(t).claim("pad", "x".repeat(9000)))),
            "token_too_large",
        ),
        Case::invalid(
            "exp missing",
            bearer(&tok(TokenBuilder::new(t).remove_claim("exp"))),
            "claim_missing",
        ),
        Case::invalid(
            "status claim missing (status.required defaults to true)",
            bearer(&tok(TokenBuilder::new(t).remove_claim("status"))),
            "claim_missing",
        ),
        Case::invalid(
            "crit header",
            bearer(&tok(TokenBuilder::new(t).header("crit", json!(["exp"])))),
            "crit_unsupported",
        ),
        Case::invalid(
            "typ JWT is not a Tessera token type",
            bearer(&tok(TokenBuilder::new(t).header("typ", "JWT"))),
            "type_mismatch",
        ),
        Case::invalid(
            "iat in the future",
            bearer(&tok(TokenBuilder::new(t)
                .claim("iat", t + 1800)
                .remove_claim("nbf"))),
            "issued_in_future",
        ),
        Case::invalid(
            "lifetime over the 400-day maximum",
            bearer(&tok(TokenBuilder::new(t).claim("exp", t + 401 * 86_400))),
            "lifetime_too_long",
        ),
        Case::invalid(
            "revoked in the status list",
            bearer(&tok(TokenBuilder::new(t).status_idx(1))),
            "revoked",
        ),
        Case::invalid(
            "suspended in the status list",
            bearer(&tok(TokenBuilder::new(t).status_idx(2))),
            "suspended",
        ),
        Case::deny(
            "status index beyond the list (fail closed)",
            bearer(&tok(TokenBuilder::new(t).status_idx(1000))),
            503,
            "status_unavailable",
            Www::NoErrorParam,
        ),
        // --- scopes ---
        Case::deny(
            "scoped route without the scope",
            Request::new("POST", "/admin/users").bearer(&valid),
            403,
            "insufficient_scope",
            Www::insufficient_scope("admin"),
        ),
        Case::deny(
            "dot segments cannot sidestep a route rule",
            get("/public/../admin/users").bearer(&valid),
            403,
            "insufficient_scope",
            Www::insufficient_scope("admin"),
        ),
        Case::deny(
            "doubled slashes cannot sidestep a route rule",
            get("//admin//users").bearer(&valid),
            403,
            "insufficient_scope",
            Www::insufficient_scope("admin"),
        ),
        // --- IP filter on the peer address ---
        Case::deny(
            "ip_allow 127.0.0.1/32, client ::1 on the IPv6 listener",
            bearer(&tok(
                TokenBuilder::new(t).claim("ip_allow", json!(["127.0.0.1/32"]))
            ))
            .bind(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        )
        .via(Via::V6),
        Case::deny(
            "ip_allow 127.0.0.1/32, client 127.0.0.2",
            bearer(&tok(
                TokenBuilder::new(t).claim("ip_allow", json!(["127.0.0.1/32"]))
            ))
            .bind(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        ),
    ];

    let upstream = EchoUpstream::start().expect("echo upstream");
    let options = EnvoyOptions::new(&envoy_bin)
        .filter(&wasm, &config)
        .upstream(upstream.addr())
        .with_ipv6();
    let envoy = start(&options);

    let (mut failures, outcomes) = run_table("peer", &envoy, &cases);
    let allowed = outcomes.iter().filter(|o| **o == Outcome::Allow).count();
    if upstream.request_count() != allowed {
        failures.push(format!(
            "the upstream saw {} requests, want {allowed} (one per allowed request)",
            upstream.request_count()
        ));
    }

    // Metrics: tessera.allow and tessera.deny.<reason> count exactly the decisions the
    // filter answered above.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for outcome in &outcomes {
        let name = match outcome {
            Outcome::Allow => "tessera.allow".to_owned(),
            Outcome::Deny(r) => format!("tessera.deny.{r}"),
            Outcome::Other => continue,
        };
        *want.entry(name).or_default() += 1;
    }
    match envoy.stats_matching("tessera.") {
        Ok(stats) => {
            for (name, count) in &want {
                match stats.iter().find(|(n, _)| n.ends_with(name.as_str())) {
                    Some((full, v)) if v == count => println!("[metrics] ok   {full}: {v}"),
                    Some((full, v)) => {
                        failures.push(format!("[metrics] {full} is {v}, want {count}"))
                    }
                    None => failures.push(format!("[metrics] no counter named *{name} in /stats")),
                }
            }
        }
        Err(e) => failures.push(format!("[metrics] admin /stats: {e}")),
    }
    // The same valid token was sent many times: the verified-token cache must have hit.
    for counter in ["tessera.cache_hit", "tessera.cache_miss"] {
        match envoy.counter(counter) {
            Some(v) if v > 0 => println!("[metrics] ok   {counter}: {v}"),
            other => failures.push(format!("[metrics] {counter} is {other:?}, want > 0")),
        }
    }
    finish(&failures);
}

/// The client address from X-Forwarded-For (one trusted hop) and `forward_token: false`.
#[test]
fn scenarios_x_forwarded_for_and_token_removal() {
    let (envoy_bin, wasm) = tools();
    let t = now();
    let ed = TestKey::generate(Alg::EdDSA, "ed-xff");
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed]),
        "client_ip": {"source": "x_forwarded_for", "trusted_hops": 1},
        "forward_token": false,
        "status": {"lists": status_lists()},
    });
    let plain = TokenBuilder::new(t).sign(&ed);
    let pinned = TokenBuilder::new(t)
        .claim("ip_allow", json!(["127.0.0.1/32"]))
        .sign(&ed);
    let pinned_v6 = TokenBuilder::new(t)
        .claim("ip_allow", json!(["2001:db8::/32"]))
        .sign(&ed);
    let req = |token: &str| Request::get("/api/things").bearer(token);
    let no_auth: &[&str] = &[];

    let cases = vec![
        Case::allow("no ip_allow, no XFF: allowed", req(&plain), ALICE)
            .upstream("authorization", no_auth),
        Case::allow(
            "forward_token false removes Authorization: Token too",
            Request::get("/x").header("authorization", &format!("Token {plain}")),
            ALICE,
        )
        .upstream("authorization", no_auth),
        Case::allow(
            "XFF client 127.0.0.1 inside ip_allow",
            req(&pinned).header("x-forwarded-for", "127.0.0.1"),
            ALICE,
        )
        .upstream("authorization", no_auth),
        Case::allow(
            "the last XFF entry is the client",
            req(&pinned).header("x-forwarded-for", "192.0.2.10, 127.0.0.1"),
            ALICE,
        ),
        Case::allow(
            "IPv6 XFF client inside an IPv6 ip_allow",
            req(&pinned_v6).header("x-forwarded-for", "2001:db8::7"),
            ALICE,
        ),
        Case::deny(
            "XFF client outside ip_allow",
            req(&pinned).header("x-forwarded-for", "192.0.2.10"),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        ),
        Case::deny(
            "only the last XFF entry counts",
            req(&pinned).header("x-forwarded-for", "127.0.0.1, 192.0.2.10"),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        ),
        Case::deny(
            "no XFF: client unknown, ip_allow refuses",
            req(&pinned),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        ),
        Case::deny(
            "unparsable XFF entry",
            req(&pinned).header("x-forwarded-for", "not-an-ip"),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        ),
        Case::invalid(
            "still verifies tokens",
            req(&TokenBuilder::new(t - 7200).sign(&ed)),
            "expired",
        ),
    ];

    let upstream = EchoUpstream::start().expect("echo upstream");
    let options = EnvoyOptions::new(&envoy_bin)
        .filter(&wasm, &config)
        .upstream(upstream.addr());
    let envoy = start(&options);
    let (failures, _) = run_table("xff", &envoy, &cases);
    finish(&failures);
}
