//! The mesh examples (`istio/`, `envoy-gateway/`) and the systemd unit, checked without a
//! cluster: every manifest parses as Kubernetes reads it (YAML 1.1: an unquoted `0000` is
//! the integer 0, see `yaml11`), then is checked against the CRD schema of its kind as the
//! API server checks it (`check`: the vendored `openAPIV3Schema`, structural, unknown
//! fields refused as strict field validation refuses them, types and enums as the CRD
//! says), the CRD rules the examples touch (`x-kubernetes-validations`, written out in
//! `rules`: a CEL evaluator is not at hand) hold, and the embedded plugin configuration
//! loads through the filter's real loader (`tessera_filter::load_filter_config`, what
//! `on_configure` runs).
//!
//! The schemas are vendored in `tests/crds/` (README there: source repository, path,
//! commit, version and license):
//! - Istio `WasmPlugin` (extensions.istio.io/v1alpha1), `ServiceEntry` and
//!   `DestinationRule` (networking.istio.io/v1), from Istio's `crd-all.gen.yaml`;
//! - Envoy Gateway `EnvoyExtensionPolicy` (gateway.envoyproxy.io/v1alpha1), from its
//!   Helm chart's generated CRDs.

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

/// One kind the examples use: its `apiVersion` and the vendored `openAPIV3Schema` of that
/// version (`crds/`, see `crds/README.md` for the source, commit and license).
fn crd(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "WasmPlugin" => (
            "extensions.istio.io/v1alpha1",
            "istio-wasmplugin-v1alpha1.json",
        ),
        "ServiceEntry" => ("networking.istio.io/v1", "istio-serviceentry-v1.json"),
        "DestinationRule" => ("networking.istio.io/v1", "istio-destinationrule-v1.json"),
        "EnvoyExtensionPolicy" => (
            "gateway.envoyproxy.io/v1alpha1",
            "envoy-gateway-envoyextensionpolicy-v1alpha1.json",
        ),
        other => panic!("no vendored CRD schema for kind {other:?} (add it to crds/)"),
    }
}

/// `metadata` as the API server checks it (`ObjectMeta`; a CRD's schema says only
/// `type: object` there): the fields a manifest may set, nothing else.
fn object_meta() -> Value {
    let strings = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string"},
            "generateName": {"type": "string"},
            "namespace": {"type": "string"},
            "labels": strings,
            "annotations": strings,
            "finalizers": {"type": "array", "items": {"type": "string"}},
            "ownerReferences": {"type": "array", "items": {"type": "object"}},
        }
    })
}

/// A structural CRD schema as the API server applies it, in JSON Schema terms: every
/// object node that does not say `x-kubernetes-preserve-unknown-fields: true` (or give
/// `additionalProperties`, a map) takes no field beyond its `properties` (the server
/// prunes them, and refuses them under strict field validation, `kubectl`'s default);
/// `nullable: true` admits null. Only the structural positions (`properties`, `items`,
/// `additionalProperties`) are rewritten: `allOf`/`anyOf`/`oneOf`/`not` only add value
/// checks in a structural schema, and are left as they are.
fn structural(node: &mut Value) {
    let Value::Object(m) = node else { return };
    let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    let is_object = m.get("type") == Some(&json!("object"));
    if is_object && !preserve && !m.contains_key("additionalProperties") {
        m.insert("additionalProperties".into(), json!(false));
    }
    if m.get("nullable") == Some(&json!(true)) {
        if let Some(Value::String(t)) = m.get("type").cloned() {
            m.insert("type".into(), json!([t, "null"]));
        }
    }
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        for child in props.values_mut() {
            structural(child);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child @ Value::Object(_)) = m.get_mut(key) {
            structural(child);
        }
    }
}

/// The schema a document of `kind` is checked against.
fn schema_of(kind: &str) -> Value {
    let (api_version, file) = crd(kind);
    let path = dir().join("tests/crds").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut schema: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
    structural(&mut schema);
    schema["properties"]["metadata"] = object_meta();
    schema["properties"]["apiVersion"] = json!({"type": "string", "enum": [api_version]});
    schema["properties"]["kind"] = json!({"type": "string", "enum": [kind]});
    schema["required"] = json!(["apiVersion", "kind", "metadata", "spec"]);
    schema
}

/// A JSON pointer as `kubectl` names a field: `spec.wasm[0].code`.
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        if seg.bytes().all(|b| b.is_ascii_digit()) && !seg.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg.replace("~1", "/").replace("~0", "~"));
        }
    }
    out
}

/// Checks `value` against the CRD schema of its kind; every problem as
/// `<path>.<field>: <what is wrong>` (an unknown field: `<path>.<name>: unknown field`).
fn check(path: &str, value: &Value, errors: &mut Vec<String>) {
    let kind = value["kind"].as_str().unwrap_or_default();
    let schema = schema_of(kind);
    let validator = jsonschema::draft4::new(&schema)
        .unwrap_or_else(|e| panic!("the vendored {kind} schema does not compile: {e}"));
    for e in validator.iter_errors(value) {
        let at = field_path(e.instance_path().as_str());
        let at = if at.is_empty() {
            path.to_string()
        } else {
            format!("{path}.{at}")
        };
        match e.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    errors.push(format!(
                        "{at}.{name}: unknown field (not in the {kind} CRD)"
                    ));
                }
            }
            _ => errors.push(format!("{at}: {e}")),
        }
    }
}

/// The CEL rules (`x-kubernetes-validations`) of the vendored CRDs that the examples'
/// fields meet, written out (no CEL evaluator is at hand); each message is the CRD's own.
fn rules(path: &str, doc: &Value, errors: &mut Vec<String>) {
    let spec = &doc["spec"];
    match doc["kind"].as_str() {
        Some("EnvoyExtensionPolicy") => {
            // `WasmCodeSource`: "self.type == 'HTTP' ? has(self.http) : !has(self.http)",
            // and the same for Image.
            for (i, wasm) in spec["wasm"].as_array().into_iter().flatten().enumerate() {
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
        Some("WasmPlugin") => {
            let set = ["selector", "targetRef", "targetRefs"]
                .iter()
                .filter(|f| spec.get(**f).is_some())
                .count();
            if set > 1 {
                errors.push(format!(
                    "{path}.spec: only one of targetRefs or selector can be set"
                ));
            }
            if let Some(url) = spec["url"].as_str() {
                let scheme = url.split_once("://").map_or("", |(s, _)| s);
                if !["", "http", "https", "oci", "file"].contains(&scheme) {
                    errors.push(format!(
                        "{path}.spec.url: url must have schema one of [http, https, file, oci]"
                    ));
                }
            }
        }
        Some("ServiceEntry") => {
            let ports: Vec<&Value> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| &p["number"])
                .collect();
            if ports
                .iter()
                .enumerate()
                .any(|(i, p)| ports[..i].contains(p))
            {
                errors.push(format!(
                    "{path}.spec.ports: port number cannot be duplicated"
                ));
            }
            if spec["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|h| h == "*")
            {
                errors.push(format!("{path}.spec.hosts: hostname cannot be wildcard"));
            }
        }
        Some("DestinationRule") => {
            // Every duration the examples set: "duration(self) >= duration('1ms')".
            let policy = &spec["trafficPolicy"];
            let mut pools = vec![("trafficPolicy".to_string(), &policy["connectionPool"])];
            for (i, p) in policy["portLevelSettings"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                pools.push((
                    format!("trafficPolicy.portLevelSettings[{i}]"),
                    &p["connectionPool"],
                ));
            }
            for (at, pool) in pools {
                if let Some(v) = pool["http"].get("idleTimeout") {
                    if !v
                        .as_str()
                        .and_then(go_duration_ns)
                        .is_some_and(|ns| ns >= 1e6)
                    {
                        errors.push(format!(
                            "{path}.spec.{at}.connectionPool.http.idleTimeout: must be a valid duration greater than 1ms"
                        ));
                    }
                }
            }
        }
        _ => {}
    }
}

/// A Go duration (`time.ParseDuration`, what CEL's `duration()` reads) in nanoseconds:
/// one or more decimal numbers each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`),
/// an optional sign first. `None` when it is not one.
fn go_duration_ns(s: &str) -> Option<f64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Some(if neg { -total } else { total })
}

/// Checks documents against their CRD schemas and rules; the errors.
fn problems(rel: &str, docs: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let path = format!("{rel}#{i}");
        check(&path, doc, &mut errors);
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

/// An unknown field and a wrong type are refused as the API server refuses them, each
/// naming the field; so are an unknown field deep inside, in `metadata`, and a value
/// outside an enum.
#[test]
fn unknown_fields_and_wrong_types_are_refused_naming_the_field() {
    let rel = "istio/wasmplugin.yaml";
    let mut bad = documents(rel).remove(0);
    bad["spec"]["sha"] = json!("x");
    bad["spec"]["priority"] = json!("10");
    bad["spec"]["failStrategy"] = json!("FAIL_CLOSED");
    bad["spec"]["vmConfig"] = json!({"env": [{"name": "A", "value": "b", "from": "x"}]});
    bad["metadata"]["label"] = json!({"app": "x"});
    let errors = problems(rel, &[bad]);
    for want in [
        "istio/wasmplugin.yaml#0.spec.sha: unknown field",
        "istio/wasmplugin.yaml#0.spec.priority: \"10\" is not of type",
        "istio/wasmplugin.yaml#0.spec.failStrategy: \"FAIL_CLOSED\" is not one of",
        "istio/wasmplugin.yaml#0.spec.vmConfig.env[0].from: unknown field",
        "istio/wasmplugin.yaml#0.metadata.label: unknown field",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "no error starting {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 5, "{errors:#?}");

    // The same on the other CRDs: a field of another version or product is unknown.
    let rel = "istio/serviceentry.yaml";
    let mut entries = documents(rel);
    entries[0]["spec"]["ports"][0]["port"] = json!(80);
    entries[1]["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["sni"] = json!(443);
    let errors = problems(rel, &entries);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("istio/serviceentry.yaml#0.spec.ports[0].port: unknown field")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with(
            "istio/serviceentry.yaml#1.spec.trafficPolicy.portLevelSettings[0].tls.sni: 443 is not of type"
        )),
        "{errors:#?}"
    );
    let rel = "envoy-gateway/envoyextensionpolicy.yaml";
    let mut policy = documents(rel).remove(0);
    policy["spec"]["wasm"][0]["failopen"] = json!(true);
    let errors = problems(rel, &[policy]);
    assert_eq!(
        errors,
        [format!(
            "{rel}#0.spec.wasm[0].failopen: unknown field (not in the EnvoyExtensionPolicy CRD)"
        )]
    );
    // The CRDs' CEL rules the examples meet, written out: each refusal in the CRD's words.
    let mut wasm = documents("istio/wasmplugin.yaml").remove(0);
    wasm["spec"]["targetRefs"] = json!([{"kind": "Service", "name": "orders"}]);
    wasm["spec"]["url"] = json!("ftp://registry.example.com/x");
    let errors = problems("w", &[wasm]);
    assert_eq!(
        errors,
        [
            "w#0.spec: only one of targetRefs or selector can be set",
            "w#0.spec.url: url must have schema one of [http, https, file, oci]",
        ],
    );
    let mut entries = documents("istio/serviceentry.yaml");
    let port = entries[0]["spec"]["ports"][0].clone();
    entries[0]["spec"]["ports"] = json!([port.clone(), port]);
    entries[1]["spec"]["trafficPolicy"]["portLevelSettings"][0]["connectionPool"]["http"]
        ["idleTimeout"] = json!("120");
    let errors = problems("s", &entries);
    assert_eq!(
        errors,
        [
            "s#0.spec.ports: port number cannot be duplicated",
            "s#1.spec.trafficPolicy.portLevelSettings[0].connectionPool.http.idleTimeout: must be a valid duration greater than 1ms",
        ],
    );
    assert_eq!(go_duration_ns("120s"), Some(120e9));
    assert_eq!(go_duration_ns("1h2m0.5s"), Some(3720.5e9));
    assert_eq!(go_duration_ns("1.5ms"), Some(1.5e6));
    assert_eq!(go_duration_ns("500us"), Some(5e5));
    for bad in ["120", "", "s", "1d", "1 s"] {
        assert_eq!(go_duration_ns(bad), None, "{bad}");
    }

    // The plugin configuration is free-form to Kubernetes (the filter's loader checks it).
    let mut free = documents("istio/wasmplugin.yaml").remove(0);
    free["spec"]["pluginConfig"]["anything"] = json!({"x": 1});
    assert!(problems("istio/wasmplugin.yaml", &[free]).is_empty());
}

/// The vendored schemas are what the test believes they are: each is the kind's, and the
/// rewrite made unknown fields refusable without touching the free-form parts.
#[test]
fn the_vendored_schemas_are_structural_and_strict() {
    for kind in [
        "WasmPlugin",
        "ServiceEntry",
        "DestinationRule",
        "EnvoyExtensionPolicy",
    ] {
        let s = schema_of(kind);
        assert_eq!(s["properties"]["spec"]["type"], "object", "{kind}");
        assert_eq!(
            s["properties"]["spec"]["additionalProperties"], false,
            "{kind}"
        );
    }
    let wasm = schema_of("WasmPlugin");
    let plugin_config = &wasm["properties"]["spec"]["properties"]["pluginConfig"];
    assert_eq!(plugin_config["x-kubernetes-preserve-unknown-fields"], true);
    assert!(plugin_config.get("additionalProperties").is_none());
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
                .any(|e| e.contains("sha256: 0 is not of type \"string\"")),
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
            .any(|e| e.contains("code.type: \"ConfigMap\" is not one of")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("code.configMap: unknown field")),
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
