//! The mesh examples (`istio/`, `envoy-gateway/`) and the systemd unit, checked without a
//! cluster: every manifest parses, every field is one the resource documents (lists
//! below, written down from the references), the enums hold documented values, and the
//! embedded plugin configuration loads through the filter's real loader
//! (`tessera_filter::load_filter_config`, what `on_configure` runs).
//!
//! Field lists, from:
//! - Istio `WasmPlugin` (extensions.istio.io/v1alpha1):
//!   <https://istio.io/latest/docs/reference/config/proxy_extensions/wasm-plugin/>
//! - Istio `ServiceEntry` and `DestinationRule` (networking.istio.io/v1):
//!   <https://istio.io/latest/docs/reference/config/networking/service-entry/>,
//!   <https://istio.io/latest/docs/reference/config/networking/destination-rule/>
//! - Envoy Gateway `EnvoyExtensionPolicy` (gateway.envoyproxy.io/v1alpha1), types
//!   `EnvoyExtensionPolicySpec`, `Wasm`, `WasmCodeSource`, `ImageWasmCodeSource`:
//!   <https://gateway.envoyproxy.io/docs/api/extension_types/>

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Every YAML document of a file, as JSON values.
fn documents(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
        })
        .collect()
}

/// A schema: `"string"`, `"int"`, `"bool"`, `"duration"`, `"any"` (free-form, e.g. the
/// plugin configuration), `{"enum": [...]}`, `[schema]` (a list), `{"map": schema}` (a
/// string-keyed map) or an object of field → schema (only these fields are documented).
fn check(path: &str, value: &Value, schema: &Value, errors: &mut Vec<String>) {
    match (schema, value) {
        (Value::String(kind), v) => {
            let ok = match kind.as_str() {
                "string" => v.is_string(),
                "int" => v.is_i64() || v.is_u64(),
                "bool" => v.is_boolean(),
                "duration" => v.as_str().is_some_and(|s| {
                    s.strip_suffix('s')
                        .or_else(|| s.strip_suffix("ms"))
                        .is_some_and(|n| n.parse::<f64>().is_ok())
                }),
                "any" => true,
                other => panic!("bad schema kind {other}"),
            };
            if !ok {
                errors.push(format!("{path}: expected {kind}, found {v}"));
            }
        }
        (Value::Array(item), Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                check(&format!("{path}[{i}]"), v, &item[0], errors);
            }
        }
        (Value::Object(s), v) if s.contains_key("enum") => {
            if !s["enum"].as_array().is_some_and(|e| e.contains(v)) {
                errors.push(format!("{path}: {v} is not one of {}", s["enum"]));
            }
        }
        (Value::Object(s), Value::Object(m)) if s.contains_key("map") => {
            for (k, v) in m {
                check(&format!("{path}.{k}"), v, &s["map"], errors);
            }
        }
        (Value::Object(fields), Value::Object(m)) => {
            for (k, v) in m {
                match fields.get(k) {
                    Some(s) => check(&format!("{path}.{k}"), v, s, errors),
                    None => errors.push(format!(
                        "{path}.{k}: not a documented field (documented: {})",
                        fields.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }
        (s, v) => errors.push(format!(
            "{path}: {v} does not have the documented shape {s}"
        )),
    }
}

fn metadata() -> Value {
    json!({"name": "string", "namespace": "string", "labels": {"map": "string"},
           "annotations": {"map": "string"}})
}

fn resource(api_version: &str, spec: Value) -> Value {
    json!({"apiVersion": {"enum": [api_version]}, "kind": "string", "metadata": metadata(),
           "spec": spec})
}

fn wasm_plugin() -> Value {
    let target = json!({"group": "string", "kind": "string", "name": "string",
                        "namespace": "string"});
    resource(
        "extensions.istio.io/v1alpha1",
        json!({
            "selector": {"matchLabels": {"map": "string"}},
            "targetRef": target,
            "targetRefs": [target],
            "url": "string",
            "sha256": "string",
            "imagePullPolicy": {"enum": ["UNSPECIFIED_POLICY", "IfNotPresent", "Always"]},
            "imagePullSecret": "string",
            "pluginConfig": "any",
            "pluginName": "string",
            "phase": {"enum": ["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]},
            "priority": "int",
            "failStrategy": {"enum": ["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"]},
            "vmConfig": {"env": [{"name": "string", "valueFrom": {"enum": ["INLINE", "HOST"]},
                                  "value": "string"}]},
            "match": [{"mode": {"enum": ["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"]},
                       "ports": [{"number": "int"}]}],
            "type": {"enum": ["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"]},
        }),
    )
}

fn service_entry() -> Value {
    resource(
        "networking.istio.io/v1",
        json!({
            "hosts": ["string"],
            "addresses": ["string"],
            "ports": [{"number": "int", "protocol": {"enum": ["HTTP", "HTTPS", "GRPC", "HTTP2",
                       "MONGO", "TCP", "TLS"]}, "name": "string", "targetPort": "int"}],
            "location": {"enum": ["MESH_EXTERNAL", "MESH_INTERNAL"]},
            "resolution": {"enum": ["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]},
            "endpoints": ["any"],
            "workloadSelector": {"labels": {"map": "string"}},
            "exportTo": ["string"],
            "subjectAltNames": ["string"],
        }),
    )
}

fn destination_rule() -> Value {
    let tls = json!({
        "mode": {"enum": ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]},
        "clientCertificate": "string", "privateKey": "string", "caCertificates": "string",
        "credentialName": "string", "subjectAltNames": ["string"], "sni": "string",
        "insecureSkipVerify": "bool", "caCrl": "string",
    });
    let pool = json!({
        "tcp": "any",
        "http": {"http1MaxPendingRequests": "int", "http2MaxRequests": "int",
                 "maxRequestsPerConnection": "int", "maxRetries": "int",
                 "idleTimeout": "duration", "h2UpgradePolicy": "string",
                 "useClientProtocol": "bool", "maxConcurrentStreams": "int"},
    });
    let port_policy = json!({"port": {"number": "int"}, "loadBalancer": "any",
                             "connectionPool": pool, "outlierDetection": "any", "tls": tls});
    resource(
        "networking.istio.io/v1",
        json!({
            "host": "string",
            "trafficPolicy": {"loadBalancer": "any", "connectionPool": pool,
                              "outlierDetection": "any", "tls": tls,
                              "portLevelSettings": [port_policy], "tunnel": "any",
                              "proxyProtocol": "any", "retryBudget": "any"},
            "subsets": ["any"],
            "exportTo": ["string"],
            "workloadSelector": {"matchLabels": {"map": "string"}},
        }),
    )
}

fn envoy_extension_policy() -> Value {
    let target = json!({"group": "string", "kind": "string", "name": "string",
                        "sectionName": "string"});
    resource(
        "gateway.envoyproxy.io/v1alpha1",
        json!({
            "targetRef": target,
            "targetRefs": [target],
            "targetSelectors": ["any"],
            "wasm": [{
                "name": "string",
                "rootID": "string",
                "code": {
                    "type": {"enum": ["HTTP", "Image", "ConfigMap"]},
                    "http": {"url": "string", "sha256": "string"},
                    "image": {"url": "string", "sha256": "string", "pullSecretRef": "any"},
                    "configMap": "any",
                    "pullPolicy": {"enum": ["IfNotPresent", "Always"]},
                },
                "config": "any",
                "failOpen": "bool",
                "env": "any",
            }],
            "extProc": ["any"],
            "lua": ["any"],
        }),
    )
}

fn schema_of(kind: &str) -> Value {
    match kind {
        "WasmPlugin" => wasm_plugin(),
        "ServiceEntry" => service_entry(),
        "DestinationRule" => destination_rule(),
        "EnvoyExtensionPolicy" => envoy_extension_policy(),
        other => panic!("no documented field list for kind {other}"),
    }
}

/// Checks a file's documents; returns them.
fn checked(rel: &str) -> Vec<Value> {
    let docs = documents(rel);
    assert!(!docs.is_empty(), "{rel} is empty");
    let mut errors = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap_or_default();
        check(&format!("{rel}#{i}"), doc, &schema_of(kind), &mut errors);
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    docs
}

/// The plugin configuration as the filter receives it (Istio and Envoy Gateway pass the
/// structured value on as JSON text), loaded by the filter's own loader.
fn loads_in_lease_mode(what: &str, config: &Value) -> tessera_filter::lease::LeaseConfig {
    let (_verifier, lease) = tessera_filter::load_filter_config(&config.to_string())
        .unwrap_or_else(|e| panic!("{what}: the filter refuses its configuration: {e}"));
    lease.unwrap_or_else(|| panic!("{what}: not in lease mode (a mesh has no bootstrap hook)"))
}

#[test]
fn every_field_is_documented_and_bad_fields_are_caught() {
    let mut errors = Vec::new();
    let mut bad = documents("istio/wasmplugin.yaml").remove(0);
    bad["spec"]["failStrategy"] = json!("FAIL_CLOSED");
    bad["spec"]["sha"] = json!("x");
    check("bad", &bad, &wasm_plugin(), &mut errors);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("bad.spec.failStrategy") || errors[1].contains("failStrategy"));
    assert!(errors
        .iter()
        .any(|e| e.contains("bad.spec.sha: not a documented field")));
}

#[test]
fn istio_wasm_plugin() {
    let docs = checked("istio/wasmplugin.yaml");
    let spec = &docs[0]["spec"];
    assert_eq!(docs[0]["kind"], "WasmPlugin");
    assert_eq!(spec["phase"], "AUTHN");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    let url = spec["url"].as_str().unwrap_or_default();
    assert!(url.starts_with("oci://"), "{url}");
    let sha = spec["sha256"].as_str().unwrap_or_default();
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "sha256 must be 64 hex digits: {sha}"
    );
    let lease = loads_in_lease_mode("istio/wasmplugin.yaml", &spec["pluginConfig"]);

    // The cluster it names is the one Istio builds for the ServiceEntry's port.
    let entries = checked("istio/serviceentry.yaml");
    let se = entries
        .iter()
        .find(|d| d["kind"] == "ServiceEntry")
        .expect("a ServiceEntry");
    let host = se["spec"]["hosts"][0].as_str().unwrap_or_default();
    let port = &se["spec"]["ports"][0]["number"];
    assert_eq!(lease.poller.cluster, format!("outbound|{port}||{host}"));
    assert_eq!(lease.poller.authority, host);
    let dr = entries
        .iter()
        .find(|d| d["kind"] == "DestinationRule")
        .expect("a DestinationRule");
    assert_eq!(dr["spec"]["host"], host);
}

#[test]
fn envoy_gateway_extension_policy() {
    let docs = checked("envoy-gateway/envoyextensionpolicy.yaml");
    let wasm = &docs[0]["spec"]["wasm"][0];
    assert_eq!(wasm["code"]["type"], "Image");
    assert!(wasm["code"]["image"]["url"].is_string());
    assert_eq!(wasm["failOpen"], false);
    loads_in_lease_mode("envoy-gateway/envoyextensionpolicy.yaml", &wasm["config"]);
}

/// `systemd-analyze verify` on the unit, with `ExecStart`'s binary pointed at an existing
/// executable (verify refuses a missing one). Where the tool is missing the test says so
/// and checks the unit's shape only; `cargo xtask test` installs it first.
#[test]
fn systemd_unit() {
    let unit = std::fs::read_to_string(dir().join("systemd/tessera.service")).expect("unit");
    let env = std::fs::read_to_string(dir().join("systemd/tessera.env")).expect("env file");
    for var in ["TESSERA_LISTEN", "TESSERA_BASE_URL"] {
        assert!(unit.contains(&format!("${{{var}}}")), "the unit uses {var}");
        assert!(
            env.lines().any(|l| l.starts_with(&format!("{var}="))),
            "tessera.env sets {var}"
        );
    }
    assert!(unit.contains("TESSERA_MASTER_KEY_FILE="));
    let Ok(tool) = which("systemd-analyze") else {
        println!(
            "NOT VERIFIED: systemd-analyze is not installed here, so `systemd-analyze verify` \
             did not run (install Debian's `systemd`; `cargo xtask test` does)"
        );
        if std::env::var_os("TESSERA_REQUIRE_SYSTEMD_ANALYZE").is_some() {
            panic!("systemd-analyze is required (TESSERA_REQUIRE_SYSTEMD_ANALYZE is set)");
        }
        return;
    };
    let tmp = std::env::temp_dir().join(format!("tessera-unit-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let exe = std::env::current_exe().expect("test binary");
    let copy = tmp.join("tessera.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/tessera", &exe.to_string_lossy()),
    )
    .expect("write unit");
    let out = Command::new(tool)
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&tmp);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {}\n{text}",
        out.status
    );
    println!("systemd-analyze verify: tessera.service OK");
}

fn which(tool: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(tool))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
