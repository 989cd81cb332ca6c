//! Example configurations live beside this crate (`envoy/`); its tests load them through
//! the same code the filter uses, so an example can never drift into an invalid state.
//! Envoy itself validates `envoy/envoy.yaml` in host-tests (`envoy --mode validate`).

/// Extracts the block scalar that follows `value: |` in an Envoy YAML file: the embedded
/// plugin configuration. Returns `None` when there is no such block.
pub fn embedded_plugin_config(yaml: &str) -> Option<String> {
    let mut lines = yaml.lines();
    lines
        .by_ref()
        .find(|l| l.trim_end().ends_with("value: |"))?;
    let mut block = Vec::new();
    let mut indent: Option<usize> = None;
    for line in lines {
        if line.trim().is_empty() {
            block.push(String::new());
            continue;
        }
        let this = line.len() - line.trim_start().len();
        let first = *indent.get_or_insert(this);
        if this < first {
            break;
        }
        block.push(line[first..].to_string());
    }
    Some(block.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = include_str!("../envoy/envoy.yaml");
    const PLUGIN: &str = include_str!("../envoy/plugin-config.json");

    #[test]
    fn the_plugin_config_loads() {
        let v = tessera_core::Verifier::from_config_json(PLUGIN)
            .unwrap_or_else(|e| panic!("examples/envoy/plugin-config.json refused: {e}"));
        assert!(!v.config().keys.is_empty());
    }

    #[test]
    fn envoy_yaml_embeds_the_same_plugin_config() {
        let embedded = embedded_plugin_config(YAML).expect("envoy.yaml has a `value: |` block");
        let a: serde_json::Value =
            serde_json::from_str(&embedded).expect("embedded config is JSON");
        let b: serde_json::Value =
            serde_json::from_str(PLUGIN).expect("plugin-config.json is JSON");
        assert_eq!(a, b, "envoy.yaml and plugin-config.json disagree");
    }

    #[test]
    fn block_extraction() {
        let y = "a:\n  value: |\n    {\n      \"x\": 1\n    }\n  next: 2\n";
        assert_eq!(
            embedded_plugin_config(y).as_deref(),
            Some("{\n  \"x\": 1\n}")
        );
        assert_eq!(embedded_plugin_config("nothing"), None);
    }
}
