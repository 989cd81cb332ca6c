//! A bad plugin configuration is refused at load time: Envoy does not become ready, exits
//! non-zero, and its log names the offending field.

use serde_json::{json, Value};
use tessera_host_tests::{tools, EchoUpstream, Envoy, EnvoyOptions};
use tessera_testkit::{b64url, jwks, Alg, TestKey, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

struct BadConfig {
    name: &'static str,
    config: Value,
    /// The field the log must name.
    field: &'static str,
}

#[test]
fn bad_plugin_configs_stop_envoy_and_name_the_field() {
    let (envoy_bin, wasm) = tools();
    let ed = TestKey::generate(Alg::EdDSA, "ed-1");
    let p384 = json!({
        "kty": "EC", "crv": "P-384", "kid": "p384",
        "x": b64url(&[7u8; 48]), "y": b64url(&[9u8; 48]),
    });
    let good = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed]),
        "status": {"required": false},
    });
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = good.clone();
        if let Some(map) = c.as_object_mut() {
            f(map);
        }
        c
    };
    let table = vec![
        BadConfig {
            name: "P-384 key",
            config: with(&|m| {
                m.insert(
                    "jwks".into(),
                    json!({"keys": [p384.clone(), ed.public_jwk()]}),
                );
            }),
            field: "jwks.keys[0].crv",
        },
        BadConfig {
            name: "issuers missing",
            config: with(&|m| {
                m.remove("issuers");
            }),
            field: "issuers",
        },
        BadConfig {
            name: "unknown field",
            config: with(&|m| {
                m.insert("issuer".into(), json!(DEFAULT_ISSUER));
            }),
            field: "issuer",
        },
        BadConfig {
            name: "a reserved identity header name",
            config: with(&|m| {
                m.insert("identity_headers".into(), json!({"username": "Cookie"}));
            }),
            field: "identity_headers.username",
        },
        BadConfig {
            name: "max_wait_ms out of range",
            config: with(&|m| {
                m.insert("max_wait_ms".into(), json!(0));
            }),
            field: "max_wait_ms",
        },
    ];

    // The good configuration starts (so a failure below is about the change).
    let upstream = EchoUpstream::start().expect("echo upstream");
    let base = EnvoyOptions::new(&envoy_bin).upstream(upstream.addr());
    match Envoy::start(&base.clone().filter(&wasm, &good)) {
        Ok(envoy) => drop(envoy),
        Err(e) => panic!("the baseline configuration {good} was refused: {e}"),
    }

    let mut failures = Vec::new();
    for case in &table {
        match Envoy::start(&base.clone().filter(&wasm, &case.config)) {
            Ok(envoy) => failures.push(format!(
                "{}: Envoy became ready (listener {}) with {}",
                case.name,
                envoy.addr(),
                case.config
            )),
            Err(e) => {
                let lines: Vec<&str> = e
                    .log
                    .lines()
                    .filter(|l| l.contains("tessera") && l.contains(case.field))
                    .collect();
                let exited_non_zero = matches!(e.exit, Some(s) if !s.success());
                if lines.is_empty() || !exited_non_zero {
                    failures.push(format!(
                        "{}: want a non-zero exit and a tessera log line naming {:?}; got {e}",
                        case.name, case.field
                    ));
                } else {
                    println!(
                        "ok   {}: exit {:?}; log: {}",
                        case.name,
                        e.exit,
                        lines[0].trim()
                    );
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
