//! The edge-worker examples load through the worker's own configuration loader, and the
//! wrangler and workerd variants carry the same configuration.

use tessera_edge_worker::adapter::EdgeVerifier;

const CONFIG: &str = include_str!("../../examples/edge-worker/tessera-config.json");
const WRANGLER: &str = include_str!("../../examples/edge-worker/wrangler.toml");
const CAPNP: &str = include_str!("../../examples/edge-worker/tessera.capnp");

/// The TOML multi-line literal string after `TESSERA_CONFIG = '''`.
fn wrangler_config() -> Option<&'static str> {
    let start = WRANGLER.find("TESSERA_CONFIG = '''")? + "TESSERA_CONFIG = '''".len();
    let rest = &WRANGLER[start..];
    let body = &rest[..rest.find("'''")?];
    // TOML drops the newline that directly follows the opening delimiter.
    Some(body.strip_prefix('\n').unwrap_or(body))
}

#[test]
fn the_example_config_loads() {
    let v = EdgeVerifier::from_config_json(CONFIG)
        .unwrap_or_else(|e| panic!("examples/edge-worker/tessera-config.json refused: {e}"));
    assert!(!v.verifier().config().keys.is_empty());
}

#[test]
fn wrangler_toml_carries_the_same_config() {
    let embedded = wrangler_config().expect("wrangler.toml has TESSERA_CONFIG = '''...'''");
    let a: serde_json::Value = serde_json::from_str(embedded).expect("wrangler config is JSON");
    let b: serde_json::Value = serde_json::from_str(CONFIG).expect("tessera-config.json is JSON");
    assert_eq!(a, b, "wrangler.toml and tessera-config.json disagree");
}

#[test]
fn both_hosts_load_the_built_bundle_and_the_config() {
    for file in [
        "worker.mjs",
        "tessera_edge_worker.js",
        "tessera_edge_worker_bg.wasm",
    ] {
        assert!(
            CAPNP.contains(&format!("embed \"../../target/wasm/edge-worker/{file}\"")),
            "tessera.capnp does not embed {file}"
        );
    }
    assert!(CAPNP.contains("text = embed \"tessera-config.json\""));
    assert!(WRANGLER.contains("main = \"../../target/wasm/edge-worker/worker.mjs\""));
}

#[test]
fn wrangler_jwks_urls_is_a_json_array_of_urls() {
    let line = WRANGLER
        .lines()
        .find(|l| l.starts_with("TESSERA_JWKS_URLS = '"))
        .expect("wrangler.toml sets TESSERA_JWKS_URLS");
    let value = line
        .trim_start_matches("TESSERA_JWKS_URLS = '")
        .trim_end_matches('\'');
    let urls: Vec<String> = serde_json::from_str(value).expect("a JSON array of strings");
    assert!(!urls.is_empty() && urls.iter().all(|u| u.starts_with("https://")));
}
