//! Data-driven scenarios: the built module inside a real Envoy, in front of the echo
//! upstream. One Envoy per plugin configuration, many cases each.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{
    configured_identity_cases, configured_identity_headers, finish, run_table, scenario_table,
    Case, Outcome, ScenarioKeys, Via, Www, ALICE,
};
use serde_json::{json, Value};
use tessera_host_tests::{tools, EchoUpstream, Envoy, EnvoyOptions, Request};
use tessera_testkit::{
    jwks, now, status_list_json, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
    DEFAULT_STATUS_URI,
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
    let keys = ScenarioKeys::generate();
    let config = keys.config(status_lists());
    let tok = |b: TokenBuilder| b.sign(&keys.ed);
    let bearer = |token: &str| Request::get("/api/things").bearer(token);
    let mut cases = scenario_table(t, &keys);
    cases.extend(vec![
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
    ]);

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

/// A non-default `identity_headers` in a real Envoy: exactly the configured headers reach
/// the upstream, with the token's values, and every client-sent copy under an identity
/// header's name (sent or not) is replaced or removed.
#[test]
fn scenarios_configured_identity_headers() {
    let (envoy_bin, wasm) = tools();
    let t = now();
    let ed = TestKey::generate(Alg::EdDSA, "ed-ids");
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed]),
        "identity_headers": configured_identity_headers(),
        "status": {"lists": status_lists()},
    });
    let cases = configured_identity_cases(t, &ed);
    let upstream = EchoUpstream::start().expect("echo upstream");
    let options = EnvoyOptions::new(&envoy_bin)
        .filter(&wasm, &config)
        .upstream(upstream.addr());
    let envoy = start(&options);
    let (mut failures, _) = run_table("identity headers", &envoy, &cases);
    if upstream.request_count() != cases.len() {
        failures.push(format!(
            "the upstream saw {} requests, want {}",
            upstream.request_count(),
            cases.len()
        ));
    }
    finish(&failures);
}
