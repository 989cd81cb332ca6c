//! Example configurations live beside this crate (`envoy/`); its tests load them through
//! the same code the filter uses, so an example can never drift into an invalid state.
//! Envoy itself validates `envoy/envoy.yaml` in host-tests (`envoy --mode validate`).

/// Extracts every block scalar that follows `value: |` in an Envoy YAML file: the
/// embedded plugin (and sync service) configurations, in file order.
pub fn embedded_configs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.trim_end().ends_with("value: |") {
            continue;
        }
        let mut block = Vec::new();
        let mut indent: Option<usize> = None;
        while let Some(next) = lines.peek() {
            if next.trim().is_empty() {
                block.push(String::new());
                lines.next();
                continue;
            }
            let this = next.len() - next.trim_start().len();
            let first = *indent.get_or_insert(this);
            if this < first {
                break;
            }
            block.push(next[first..].to_string());
            lines.next();
        }
        while block.last().is_some_and(|l| l.is_empty()) {
            block.pop();
        }
        out.push(block.join("\n"));
    }
    out
}

/// The first embedded configuration, if any.
pub fn embedded_plugin_config(yaml: &str) -> Option<String> {
    embedded_configs(yaml).into_iter().next()
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

    const SYNC_YAML: &str = include_str!("../envoy/envoy-sync.yaml");

    #[test]
    fn the_sync_example_loads_in_both_roles() {
        let blocks = embedded_configs(SYNC_YAML);
        assert_eq!(blocks.len(), 2, "the sync service and the filter");
        assert!(tessera_filter::sync::is_sync_config(&blocks[0]));
        let svc = tessera_filter::sync::SyncServiceConfig::from_json(&blocks[0])
            .unwrap_or_else(|e| panic!("sync service config refused: {e}"));
        assert!(!svc.status_lists.is_empty());
        let v = tessera_core::Verifier::from_config_json(&blocks[1])
            .unwrap_or_else(|e| panic!("filter config refused: {e}"));
        let sync = v
            .config()
            .sync
            .as_ref()
            .expect("the filter config has a sync section");
        assert!(sync.usage.is_some());
        // The filter's status lists must be the ones the service syncs.
        assert!(svc
            .status_lists
            .iter()
            .all(|u| u.starts_with("http://127.0.0.1:8080/")));
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
