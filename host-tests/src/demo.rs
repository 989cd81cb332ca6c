//! The walk-through behind `cargo xtask demo`: a real Envoy with the Tessera module in
//! front of an echo upstream, and five requests that show what the filter does.

use std::path::Path;

use serde_json::{json, Value};
use tessera_testkit::{
    jwks, now, status_list_json, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
    DEFAULT_STATUS_URI,
};

use crate::{EchoUpstream, Envoy, EnvoyOptions, Request, Response};

/// The identity headers the filter adds (README defaults).
const IDENTITY_HEADERS: [&str; 4] = [
    "x-tessera-user",
    "x-tessera-org",
    "x-tessera-token-id",
    "x-tessera-scopes",
];

struct Step {
    title: &'static str,
    request: Request,
    shown_token: Option<String>,
    status: u16,
    reason: Option<&'static str>,
}

/// Generates an Ed25519 key and a JWKS, starts the echo upstream and Envoy with the
/// filter, sends five requests (valid token, no token, expired, revoked, missing scope),
/// prints what happened, and stops everything. `Err` lists the steps whose outcome was not
/// the expected one (or why nothing could be started).
pub fn run(envoy: &Path, wasm: &Path) -> Result<(), String> {
    let t = now();
    let key = TestKey::generate(Alg::EdDSA, "demo-ed25519");
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&key]),
        "routes": [{"path_prefix": "/admin", "scopes": ["admin"]}],
        // Status list: index 0 valid, index 1 revoked.
        "status": {"lists": [status_list_json(DEFAULT_STATUS_URI, &[0, 1])]},
    });

    let module_size = std::fs::metadata(wasm)
        .map(|m| format!("{:.1} KB", m.len() as f64 / 1024.0))
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    println!("Tessera demo: real Envoy + the Tessera proxy-wasm module, all on loopback");
    println!("  envoy:    {}", envoy.display());
    println!("  module:   {} ({module_size})", wasm.display());
    println!(
        "  key:      Ed25519, kid \"{}\", generated just now; its public JWK is the plugin's JWKS",
        key.kid()
    );
    println!("  issuer:   {DEFAULT_ISSUER}");
    println!("  routes:   /admin needs scope \"admin\"; everything else needs a valid token");
    println!("  status:   list {DEFAULT_STATUS_URI}: index 0 valid, index 1 revoked");

    let upstream = EchoUpstream::start().map_err(|e| format!("echo upstream: {e}"))?;
    let options = EnvoyOptions::new(envoy)
        .filter(wasm, &config)
        .upstream(upstream.addr());
    let proxy = Envoy::start(&options).map_err(|e| format!("envoy did not start: {e}"))?;
    println!("  upstream: echo server on http://{}", upstream.addr());
    println!(
        "  envoy:    listening on http://{} (admin http://{}), pid {}",
        proxy.addr(),
        proxy.admin(),
        proxy.pid()
    );

    let valid = TokenBuilder::new(t).sign(&key);
    let expired = TokenBuilder::new(t - 7200).sign(&key);
    let revoked = TokenBuilder::new(t)
        .claim("jti", "tok_revoked")
        .status_idx(1)
        .sign(&key);

    let steps = [
        Step {
            title: "A valid token (sub alice, org acme, scope \"read\")",
            request: Request::get("/api/orders").bearer(&valid),
            shown_token: Some(valid.clone()),
            status: 200,
            reason: None,
        },
        Step {
            title: "No token at all",
            request: Request::get("/api/orders"),
            shown_token: None,
            status: 401,
            reason: Some("token_missing"),
        },
        Step {
            title: "A token that expired an hour ago",
            request: Request::get("/api/orders").bearer(&expired),
            shown_token: Some(expired.clone()),
            status: 401,
            reason: Some("expired"),
        },
        Step {
            title: "A token marked revoked in the status list (index 1)",
            request: Request::get("/api/orders").bearer(&revoked),
            shown_token: Some(revoked.clone()),
            status: 401,
            reason: Some("revoked"),
        },
        Step {
            title: "A valid token on /admin, which needs scope \"admin\"",
            request: Request::new("POST", "/admin/users").bearer(&valid),
            shown_token: Some(valid.clone()),
            status: 403,
            reason: Some("insufficient_scope"),
        },
    ];

    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        println!();
        println!("{}. {}", i + 1, step.title);
        let auth = match &step.shown_token {
            Some(tok) => format!("   Authorization: Bearer {}", abbreviate(tok)),
            None => "   (no Authorization header)".into(),
        };
        println!(
            "   -> {} {}{auth}",
            step.request.method_name(),
            step.request.target()
        );
        match proxy.send(&step.request) {
            Ok(resp) => {
                print_response(&resp);
                let reason = resp.reason();
                let ok = resp.status == step.status
                    && (step.reason.is_none() || reason.as_deref() == step.reason);
                if ok {
                    println!("   OK: expected {}", expected(step));
                } else {
                    println!("   UNEXPECTED: wanted {}", expected(step));
                    failures.push(format!(
                        "step {} ({}): wanted {}, got {}",
                        i + 1,
                        step.title,
                        expected(step),
                        resp.summary()
                    ));
                }
            }
            Err(e) => {
                println!("   request failed: {e}");
                failures.push(format!(
                    "step {} ({}): request failed: {e}",
                    i + 1,
                    step.title
                ));
            }
        }
    }

    println!();
    match (proxy.counter("tessera.allow"), upstream.request_count()) {
        (Some(allowed), seen) => println!(
            "Envoy counted {allowed} allowed request(s) (tessera.allow); the upstream saw {seen}."
        ),
        (None, seen) => println!("The upstream saw {seen} request(s)."),
    }
    drop(proxy);
    drop(upstream);
    println!("Stopped Envoy and the echo upstream.");
    if failures.is_empty() {
        println!("All {} steps behaved as expected.", steps.len());
        Ok(())
    } else {
        Err(format!(
            "{} of {} demo steps did not behave as expected:\n{}",
            failures.len(),
            steps.len(),
            failures.join("\n")
        ))
    }
}

fn expected(step: &Step) -> String {
    match step.reason {
        Some(r) => format!("{} {r}", step.status),
        None => step.status.to_string(),
    }
}

fn abbreviate(token: &str) -> String {
    if token.len() <= 40 {
        return token.to_owned();
    }
    format!("{}... ({} bytes)", &token[..32], token.len())
}

fn print_response(resp: &Response) {
    println!("   <- {} {}", resp.status, status_text(resp.status));
    if let Some(www) = resp.header("www-authenticate") {
        println!("      WWW-Authenticate: {www}");
    }
    match resp.upstream() {
        Some(seen) => {
            println!(
                "      the upstream received {}",
                seen.get("request_line")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            );
            for name in IDENTITY_HEADERS {
                let values = resp.upstream_header(name);
                let shown = if values.is_empty() {
                    "(absent)".to_owned()
                } else {
                    values.join(" | ")
                };
                println!("        {name}: {shown}");
            }
        }
        None => {
            if !resp.body.is_empty() {
                println!("      body: {}", resp.text().trim());
            }
        }
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        503 => "Service Unavailable",
        _ => "",
    }
}
