//! The example configuration in examples/envoy/: it validates, it matches the standalone
//! plugin configuration, and it really runs (with a generated key swapped in).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use tessera_host_tests::{repo_root, tools, Envoy, EnvoyOptions, Request, TempDir};
use tessera_testkit::{now, Alg, TestKey, TokenBuilder};

const EXAMPLE_WASM: &str = "target/wasm/tessera_filter.wasm";

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[test]
fn example_envoy_config_validates() {
    let (envoy, wasm) = tools();
    let root = repo_root();
    let example = root.join("examples/envoy/envoy.yaml");
    let text =
        std::fs::read_to_string(&example).unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    assert!(
        text.contains(EXAMPLE_WASM),
        "the example must load the module from {EXAMPLE_WASM} (relative to the repo root)"
    );
    // Validate the example as it is when the module under test is the one it names;
    // otherwise a copy pointing at the module under test.
    let tmp = TempDir::new("validate").expect("temp dir");
    let config = if same_file(&root.join(EXAMPLE_WASM), &wasm) {
        example.clone()
    } else {
        let copy = tmp.path().join("envoy.yaml");
        std::fs::write(&copy, text.replace(EXAMPLE_WASM, &wasm.to_string_lossy()))
            .expect("write copy");
        copy
    };
    let out = Command::new(&envoy)
        .current_dir(&root)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", envoy.display()));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("validated {}", config.display());
    assert!(
        out.status.success() && log.contains("OK"),
        "envoy --mode validate failed ({}):\n{log}",
        out.status
    );
    assert!(
        log.contains("tessera: plugin configuration loaded") || !log.contains("tessera"),
        "unexpected tessera log lines:\n{log}"
    );
}

/// The plugin configuration embedded in examples/envoy/envoy.yaml is the one in
/// examples/envoy/plugin-config.json (which the examples crate loads with the real
/// config loader), so the two cannot drift apart.
#[test]
fn example_plugin_config_matches_the_embedded_one() {
    let root = repo_root();
    let yaml = std::fs::read_to_string(root.join("examples/envoy/envoy.yaml")).expect("envoy.yaml");
    let json_file =
        std::fs::read_to_string(root.join("examples/envoy/plugin-config.json")).expect("json");
    let standalone: serde_json::Value =
        serde_json::from_str(&json_file).expect("plugin-config.json is JSON");
    let embedded = embedded_block(&yaml).expect("a `value: |` block under `configuration:`");
    let embedded: serde_json::Value = serde_json::from_str(&embedded)
        .unwrap_or_else(|e| panic!("the embedded configuration is not JSON: {e}\n{embedded}"));
    assert_eq!(
        embedded, standalone,
        "envoy.yaml and plugin-config.json differ"
    );
}

/// The literal block scalar after the first `value: |` line.
fn embedded_block(yaml: &str) -> Option<String> {
    let mut lines = yaml.lines();
    let key_line = lines.find(|l| l.trim_start().starts_with("value: |"))?;
    let key_indent = key_line.len() - key_line.trim_start().len();
    let mut out = String::new();
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        if !line.trim().is_empty() && indent <= key_indent {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    Some(out)
}

const EXAMPLE_ISSUER: &str = "https://cp.example.com/v1/orgs/acme";
const EXAMPLE_STATUS_URI: &str = "https://cp.example.com/v1/orgs/acme/status-list";
const EXAMPLE_KID: &str = "example-ed25519-1";

/// Starts examples/envoy/envoy.yaml with only what a test must change: its ports (0, so
/// parallel runs cannot clash), the module path (the module under test) and the public
/// key `x` (a generated key, so tokens can be signed). Everything else runs as shipped.
#[test]
fn example_envoy_config_runs() {
    let (envoy, wasm) = tools();
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("examples/envoy/envoy.yaml"))
        .expect("examples/envoy/envoy.yaml");
    let plugin: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/envoy/plugin-config.json"))
            .expect("plugin-config.json"),
    )
    .expect("plugin-config.json is JSON");
    let example_x = plugin["jwks"]["keys"][0]["x"]
        .as_str()
        .expect("the example JWKS has an Ed25519 key");
    assert_eq!(plugin["jwks"]["keys"][0]["kid"], EXAMPLE_KID);

    let key = TestKey::generate(Alg::EdDSA, EXAMPLE_KID);
    let x = key.public_jwk()["x"]
        .as_str()
        .expect("generated key has x")
        .to_owned();
    let mut yaml = text.replace(EXAMPLE_WASM, &wasm.to_string_lossy());
    for (from, to) in [
        ("port_value: 10000", "port_value: 0"),
        ("port_value: 9901", "port_value: 0"),
        (example_x, x.as_str()),
    ] {
        assert!(
            yaml.contains(from),
            "the example no longer contains {from:?}"
        );
        yaml = yaml.replace(from, to);
    }
    let options = EnvoyOptions::new(&envoy).custom_bootstrap(&yaml);
    let proxy = Envoy::start(&options).unwrap_or_else(|e| panic!("the example did not start: {e}"));

    let t = now();
    let token = |b: TokenBuilder| {
        b.claim("iss", EXAMPLE_ISSUER)
            .status(0, EXAMPLE_STATUS_URI)
            .sign(&key)
    };
    let valid = token(TokenBuilder::new(t));
    let admin = token(TokenBuilder::new(t).claim("scope", "read admin"));
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let send = |r: Request| proxy.send(&r.bind(local)).expect("request to the example");

    let r = send(Request::get("/hello"));
    assert_eq!(
        (r.status, r.reason().as_deref()),
        (401, Some("token_missing")),
        "{}",
        r.summary()
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="tessera""#)
    );

    let r = send(Request::get("/hello").bearer(&valid));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.text(), "hello from the upstream\n");
    for (name, want) in [
        ("x-seen-user", "alice"),
        ("x-seen-org", "acme"),
        ("x-seen-token-id", "tok_1"),
        ("x-seen-scopes", "read"),
    ] {
        assert_eq!(r.header_all(name), vec![want], "{name}");
    }

    // /admin needs "admin" for POST/PUT/DELETE only.
    let r = send(Request::get("/admin/users").bearer(&valid));
    assert_eq!(r.status, 200, "{}", r.summary());
    let r = send(Request::new("POST", "/admin/users").bearer(&valid));
    assert_eq!(
        (r.status, r.reason().as_deref()),
        (403, Some("insufficient_scope")),
        "{}",
        r.summary()
    );
    let r = send(Request::new("POST", "/admin/users").bearer(&admin));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("x-seen-scopes"), Some("read admin"));

    // A token whose status list the example does not have: fail closed.
    let elsewhere = TokenBuilder::new(t)
        .claim("iss", EXAMPLE_ISSUER)
        .status(0, "https://cp.example.com/v1/orgs/other/status-list")
        .sign(&key);
    let r = send(Request::get("/hello").bearer(&elsewhere));
    assert_eq!(
        (r.status, r.reason().as_deref()),
        (503, Some("status_unavailable")),
        "{}",
        r.summary()
    );
    assert_eq!(proxy.counter("tessera.allow"), Some(3));
}
