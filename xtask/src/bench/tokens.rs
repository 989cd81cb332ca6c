//! Keys, tokens and Tessera configurations shared by the bench parts that load a server
//! with tokens (Envoy, workerd). Everything is generated at run time by tessera-testkit.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tessera_testkit::{
    jwks, status_list_json, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
    DEFAULT_STATUS_URI,
};

use crate::tools::{self, Result};

/// Token number `i` issued at `t`: its own `jti` and `sub`, and a status index in a list
/// of `list_entries` entries other than the last one (which the configurations revoke).
pub fn token(key: &TestKey, t: u64, i: usize, list_entries: usize) -> String {
    let idx = u64::try_from(i % list_entries.saturating_sub(1).max(1)).unwrap_or(0);
    TokenBuilder::new(t)
        .claim("jti", format!("tok_{i}"))
        .claim("sub", format!("user_{i}"))
        .status_idx(idx)
        .sign(key)
}

/// Writes `tokens`, one per line, to `dir/file_name` (the wrk script's input); returns
/// the absolute path.
pub fn write_pool(dir: &Path, file_name: &str, tokens: &[String]) -> Result<PathBuf> {
    let path = dir.join(file_name);
    let mut text = tokens.join("\n");
    text.push('\n');
    fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(tools::absolute(&path))
}

/// Tessera's configuration: `keys` inline, the default issuer and audience, a status
/// list of `entries` entries all valid but the last (revoked; no bench token points to
/// it), and `cache_size` when given.
pub fn tessera_config(keys: &[&TestKey], entries: usize, cache_size: Option<usize>) -> Value {
    let mut statuses = vec![0u8; entries];
    if let Some(last) = statuses.last_mut() {
        *last = tessera_testkit::status::REVOKED;
    }
    let mut config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(keys),
        "status": {"lists": [status_list_json(DEFAULT_STATUS_URI, &statuses)]},
    });
    if let Some(size) = cache_size {
        config["cache_size"] = json!(size);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_testkit::Alg;

    #[test]
    fn config_and_tokens() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let c = tessera_config(&[&key], 8, Some(16));
        assert_eq!(c["cache_size"], 16);
        assert_eq!(c["jwks"]["keys"][0]["kid"], "k");
        assert!(tessera_config(&[&key], 8, None).get("cache_size").is_none());
        assert_eq!(token(&key, 1, 7, 8).split('.').count(), 3);
    }
}
