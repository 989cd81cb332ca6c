//! The mesh examples (`istio/`, `envoy-gateway/`) and the systemd unit, checked without a
//! cluster: every manifest parses as Kubernetes reads it (YAML 1.1: an unquoted `0000` is
//! the integer 0, see `yaml11`), every field is one the resource documents (lists
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

/// Every YAML document of a file, as JSON values, read the way Kubernetes reads them.
fn documents(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    yaml11::read(&text).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

/// A YAML reading faithful to the one `kubectl` and the API server use (go-yaml, YAML 1.1,
/// then JSON): a *plain* (unquoted) scalar is resolved by the YAML 1.1 rules, so
/// `sha256: 0000` is the octal integer 0, `yes`/`on`/`off` are booleans, `0x1f` is 31,
/// `1:20` is 80 and `~` is null; quoted and block scalars stay strings. A YAML 1.2 reader
/// (serde_yaml and its forks) keeps `0000` a string, so a test reading with one passes a
/// manifest the cluster refuses. Mapping keys become JSON strings (`on:` is `"true"`), as
/// sigs.k8s.io/yaml makes them.
mod yaml11 {
    use saphyr_parser::{Event, Parser, ScalarStyle};
    use serde_json::{Map, Number, Value};
    use std::collections::HashMap;

    enum Open {
        Seq(Vec<Value>, usize),
        Map(Map<String, Value>, Option<String>, usize),
    }

    /// Every document of `text`.
    pub fn read(text: &str) -> Result<Vec<Value>, String> {
        let mut docs = Vec::new();
        let mut stack: Vec<Open> = Vec::new();
        let mut anchors: HashMap<usize, Value> = HashMap::new();
        for event in Parser::new_from_str(text) {
            let (event, span) = event.map_err(|e| e.to_string())?;
            let (value, anchor) = match event {
                Event::SequenceStart(anchor, _) => {
                    stack.push(Open::Seq(Vec::new(), anchor));
                    continue;
                }
                Event::MappingStart(anchor, _) => {
                    stack.push(Open::Map(Map::new(), None, anchor));
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                    Some(Open::Seq(items, anchor)) => (Value::Array(items), anchor),
                    Some(Open::Map(map, _, anchor)) => (Value::Object(map), anchor),
                    None => return Err("unbalanced collection".into()),
                },
                Event::Scalar(text, style, anchor, tag) => {
                    let tagged_str =
                        tag.is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str");
                    let v = if style == ScalarStyle::Plain && !tagged_str {
                        resolve(&text)
                    } else {
                        Value::String(text.into_owned())
                    };
                    (v, anchor)
                }
                Event::Alias(id) => (
                    anchors
                        .get(&id)
                        .cloned()
                        .ok_or_else(|| format!("line {}: unknown alias", span.start.line()))?,
                    0,
                ),
                _ => continue,
            };
            if anchor != 0 {
                anchors.insert(anchor, value.clone());
            }
            match stack.last_mut() {
                None => docs.push(value),
                Some(Open::Seq(items, _)) => items.push(value),
                Some(Open::Map(map, key, _)) => match key.take() {
                    None => *key = Some(key_text(value)),
                    Some(k) => {
                        map.insert(k, value);
                    }
                },
            }
        }
        Ok(docs)
    }

    /// A mapping key as JSON has it: a string, whatever YAML made of it.
    fn key_text(v: Value) -> String {
        match v {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    /// A plain scalar by the YAML 1.1 types (null, bool, int in its four bases, float).
    pub fn resolve(s: &str) -> Value {
        match s {
            "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
            "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
                return Value::Bool(true)
            }
            "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off"
            | "OFF" => return Value::Bool(false),
            _ => {}
        }
        if let Some(n) = int(s) {
            return Value::Number(n.into());
        }
        match float(s) {
            Some(f) => match Number::from_f64(f) {
                Some(n) => Value::Number(n),
                // JSON has no infinity: shown as what YAML made of it, never a string.
                None => serde_json::json!({ "!!float": s }),
            },
            None => Value::String(s.to_string()),
        }
    }

    fn int(s: &str) -> Option<i64> {
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let digits = body.replace('_', "");
        if digits.is_empty() {
            return None;
        }
        let magnitude = if let Some(b) = digits.strip_prefix("0b") {
            i64::from_str_radix(b, 2).ok()?
        } else if let Some(h) = digits.strip_prefix("0x") {
            i64::from_str_radix(h, 16).ok()?
        } else if digits.len() > 1 && digits.starts_with('0') {
            i64::from_str_radix(&digits[1..], 8).ok()?
        } else if digits.contains(':') {
            // Sexagesimal: 1:20 is 80.
            let mut n: i64 = 0;
            for (i, part) in digits.split(':').enumerate() {
                let p: i64 = part.parse().ok()?;
                if part.is_empty() || (i > 0 && p > 59) {
                    return None;
                }
                n = n.checked_mul(60)?.checked_add(p)?;
            }
            n
        } else if digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().ok()?
        } else {
            return None;
        };
        Some(if neg { -magnitude } else { magnitude })
    }

    fn float(s: &str) -> Option<f64> {
        let t = s.replace('_', "");
        let body = t.trim_start_matches(['-', '+']);
        match body {
            ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
            _ => {}
        }
        let ok = body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            && body.bytes().any(|b| b.is_ascii_digit())
            && body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
        if ok {
            t.parse().ok()
        } else {
            None
        }
    }
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
                // `WasmCodeSourceType`: HTTP or Image, nothing else (no ConfigMap).
                "code": {
                    "type": {"enum": ["HTTP", "Image"]},
                    "http": {"url": "string", "sha256": "string", "tls": "any"},
                    "image": {"url": "string", "sha256": "string", "pullSecretRef": "any",
                              "tls": "any"},
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

/// The rules a CRD states beside its field list (`x-kubernetes-validations`).
fn rules(path: &str, doc: &Value, errors: &mut Vec<String>) {
    if doc["kind"] == "EnvoyExtensionPolicy" {
        // `WasmCodeSource`: "If type is HTTP, http field needs to be set", and the same for
        // Image; the other source must be absent.
        for (i, wasm) in doc["spec"]["wasm"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let code = &wasm["code"];
            for (kind, field) in [("HTTP", "http"), ("Image", "image")] {
                if (code["type"] == kind) != code.get(field).is_some() {
                    errors.push(format!(
                        "{path}.spec.wasm[{i}].code: `{field}` is set exactly when type is {kind}"
                    ));
                }
            }
        }
    }
}

/// Checks documents against the field lists and rules; the errors.
fn problems(rel: &str, docs: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let path = format!("{rel}#{i}");
        check(&path, doc, &schema_of(kind), &mut errors);
        rules(&path, doc, &mut errors);
    }
    errors
}

/// Checks a file's documents; returns them.
fn checked(rel: &str) -> Vec<Value> {
    let docs = documents(rel);
    assert!(!docs.is_empty(), "{rel} is empty");
    let errors = problems(rel, &docs);
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
fn plain_scalars_are_read_as_yaml_1_1_as_kubernetes_does() {
    let docs = yaml11::read(
        "a: 0000\nb: '0000'\nc: \"0755\"\nd: 0755\ne: yes\nf: off\ng: ~\nh: 0x1f\ni: 1:20\n\
         j: 1_000\nk: 1.5\nl: abc\nm: !!str 0000\nn: |\n  0000\non: x\np: [0, '0', 010]\n\
         q: &x 7\nr: *x\ns: 08\nt: .inf\n",
    )
    .unwrap();
    assert_eq!(
        docs,
        vec![
            json!({"a": 0, "b": "0000", "c": "0755", "d": 493, "e": true, "f": false,
                    "g": null, "h": 31, "i": 80, "j": 1000, "k": 1.5, "l": "abc",
                    "m": "0000", "false": "0000\n", "true": "x", "p": [0, "0", 8], "q": 7,
                    "r": 7, "s": 8.0, "t": {"!!float": ".inf"}})
        ]
    );
}

/// The placeholder digest, unquoted, is the integer 0 to Kubernetes: the check says so.
#[test]
fn an_unquoted_zero_led_digest_is_refused() {
    for rel in [
        "istio/wasmplugin.yaml",
        "envoy-gateway/envoyextensionpolicy.yaml",
    ] {
        let text = std::fs::read_to_string(dir().join(rel)).unwrap();
        let unquoted = text.replace(&format!("\"{}\"", "0".repeat(64)), &"0".repeat(64));
        assert_ne!(unquoted, text, "{rel}: the placeholder digest is quoted");
        let errors = problems(rel, &yaml11::read(&unquoted).unwrap());
        assert!(
            errors
                .iter()
                .any(|e| e.contains("sha256: expected string, found 0")),
            "{rel}: {errors:?}"
        );
    }
}

/// No Envoy Gateway CRD has a ConfigMap code source; a type without its source is refused.
#[test]
fn envoy_gateway_code_sources_are_http_or_image() {
    let rel = "envoy-gateway/envoyextensionpolicy.yaml";
    let mut doc = documents(rel).remove(0);
    doc["spec"]["wasm"][0]["code"] = json!({"type": "ConfigMap", "configMap": {"name": "x"}});
    let errors = problems(rel, std::slice::from_ref(&doc));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("\"ConfigMap\" is not one of")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("configMap: not a documented field")),
        "{errors:?}"
    );
    doc["spec"]["wasm"][0]["code"] = json!({"type": "HTTP", "image": {"url": "r/x:1"}});
    let errors = problems(rel, &[doc]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`http` is set exactly when type is HTTP"))
            && errors
                .iter()
                .any(|e| e.contains("`image` is set exactly when type is Image")),
        "{errors:?}"
    );
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
