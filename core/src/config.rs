//! The plugin configuration: parsed from JSON once, validated, and compiled for fast checks.
//!
//! Every error names the offending field as a path (`jwks.keys[0].crv`), so an operator can
//! fix a refused configuration from the log line alone. The schema is documented in
//! `filter/README.md`.

use std::fmt;

use serde::Deserialize;

use crate::jwks::KeySet;
use crate::status::StatusList;

/// A refused configuration: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field, e.g. `jwks.keys[1].x`; `.` for the document itself.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuers: Vec<String>,
    audiences: Vec<String>,
    #[serde(default)]
    jwks: Option<serde_json::Value>,
    #[serde(default)]
    token_types: Option<Vec<String>>,
    #[serde(default)]
    token_sources: Option<Vec<RawSource>>,
    #[serde(default)]
    max_token_bytes: Option<u64>,
    #[serde(default)]
    clock_skew_secs: Option<u64>,
    #[serde(default)]
    max_lifetime_secs: Option<u64>,
    #[serde(default)]
    client_ip: Option<RawClientIp>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    identity_headers: Option<RawIdentityHeaders>,
    #[serde(default)]
    forward_token: Option<bool>,
    #[serde(default)]
    cache_size: Option<u64>,
    #[serde(default)]
    status: Option<RawStatus>,
    #[serde(default)]
    realm: Option<String>,
    #[serde(default)]
    sync: Option<RawSync>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    #[serde(default)]
    max_staleness_secs: Option<u64>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsage {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    path: Option<String>,
    credential: String,
    #[serde(default)]
    flush_interval_ms: Option<u64>,
    #[serde(default)]
    max_batch: Option<u64>,
    #[serde(default)]
    max_buffer: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    header: String,
    #[serde(default)]
    schemes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientIp {
    source: String,
    #[serde(default)]
    trusted_hops: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path_prefix: String,
    #[serde(default)]
    methods: Option<Vec<String>>,
    scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityHeaders {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    token_id: Option<String>,
    #[serde(default)]
    scopes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    #[serde(default)]
    required: Option<bool>,
    #[serde(default)]
    fail_policy: Option<String>,
    #[serde(default)]
    lists: Vec<RawStatusList>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatusList {
    uri: String,
    bits: u8,
    lst: String,
}

/// One place a token may be carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSource {
    /// Lower-case header name.
    pub header: String,
    /// Accepted schemes (lower-case); empty means the whole value is the token.
    pub schemes: Vec<String>,
}

/// Where the client address comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientIpSource {
    /// The connection's peer address.
    Peer,
    /// The N-th entry from the right of `X-Forwarded-For`.
    XForwardedFor {
        /// Number of trusted proxies in front of the host, at least 1.
        trusted_hops: usize,
    },
}

/// A scope rule: requests matching `path_prefix` (and `methods`) need all `scopes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    /// Prefix, matched on segment boundaries.
    pub path_prefix: String,
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    /// Required scopes.
    pub scopes: Vec<String>,
}

/// Names of the identity headers added on allow (lower-case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// Carries `sub`.
    pub user: String,
    /// Carries `org`.
    pub org: String,
    /// Carries `jti`.
    pub token_id: String,
    /// Carries the scopes, space-separated.
    pub scopes: String,
}

impl IdentityHeaders {
    /// All four names.
    pub fn all(&self) -> [&str; 4] {
        [&self.user, &self.org, &self.token_id, &self.scopes]
    }
}

/// What to do when a token's status cannot be known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailPolicy {
    /// Refuse with `status_unavailable`.
    Closed,
    /// Allow, and say so in the identity.
    Open,
}

/// Where usage records go, and how they are batched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageSettings {
    /// Host cluster (Envoy) that reaches the control plane.
    pub cluster: String,
    /// `:authority` of the requests.
    pub authority: String,
    /// Path of the usage endpoint.
    pub path: String,
    /// Edge credential (sent as `Authorization: Bearer`).
    pub credential: String,
    /// Longest time a record waits before it is sent.
    pub flush_interval_ms: u64,
    /// A batch is sent as soon as it holds this many records.
    pub max_batch: usize,
    /// Records beyond this are dropped (and counted) while the control plane lags.
    pub max_buffer: usize,
}

/// Live status lists and keys published by the host's sync service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    /// After this long without a successful sync, status is treated as unknown.
    pub max_staleness_secs: u64,
    /// Usage reporting, if configured.
    pub usage: Option<UsageSettings>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Allowed `iss` values.
    pub issuers: Vec<String>,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Verification keys by `kid`.
    pub keys: KeySet,
    /// Allowed header `typ` values, normalised.
    pub token_types: Vec<String>,
    /// Token sources, in order.
    pub token_sources: Vec<TokenSource>,
    /// Longest accepted token.
    pub max_token_bytes: usize,
    /// Clock skew, seconds.
    pub clock_skew_secs: u64,
    /// Longest accepted lifetime, seconds.
    pub max_lifetime_secs: u64,
    /// Client address source.
    pub client_ip: ClientIpSource,
    /// Scope rules.
    pub routes: Vec<RouteRule>,
    /// Identity header names.
    pub identity_headers: IdentityHeaders,
    /// Keep the token header when forwarding.
    pub forward_token: bool,
    /// Verified-token cache capacity.
    pub cache_size: usize,
    /// Whether tokens must carry a `status` claim.
    pub status_required: bool,
    /// Unknown-status policy.
    pub fail_policy: FailPolicy,
    /// Status lists by uri.
    pub status_lists: Vec<(String, StatusList)>,
    /// `WWW-Authenticate` realm.
    pub realm: String,
    /// Live sync settings; `None` means everything comes from this document.
    pub sync: Option<SyncSettings>,
}

/// API token `typ`.
pub const TYP_API_TOKEN: &str = "tessera-api+jwt";
/// Exchanged access token `typ` (RFC 9068).
pub const TYP_ACCESS_TOKEN: &str = "at+jwt";

/// Normalises a `typ` value as RFC 7515 §4.1.9 suggests: case-insensitive, and an
/// `application/` prefix may be omitted.
pub fn normalise_typ(t: &str) -> String {
    let lower = t.trim().to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_name(field: &str, value: &str) -> Result<String, ConfigError> {
    if !is_header_name(value) {
        return Err(ConfigError::new(
            field,
            format!("{value:?} is not a valid HTTP header name"),
        ));
    }
    let lower = value.to_ascii_lowercase();
    if lower.starts_with(':') || lower == "host" {
        return Err(ConfigError::new(
            field,
            "pseudo-headers and host are not allowed",
        ));
    }
    Ok(lower)
}

fn non_empty_strings(field: &str, values: &[String]) -> Result<(), ConfigError> {
    if values.is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    for (i, v) in values.iter().enumerate() {
        if v.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                "must not be empty",
            ));
        }
    }
    Ok(())
}

fn bounded(
    field: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(ConfigError::new(
            field,
            format!("{v} is out of range {min}..={max}"),
        ));
    }
    Ok(v)
}

fn is_scope_token(s: &str) -> bool {
    // RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

impl Config {
    /// Parses and validates a configuration document.
    pub fn from_json(json: &str) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // A missing field is reported at its parent; name the field itself.
            let missing = inner
                .strip_prefix("missing field `")
                .and_then(|r| r.split_once('`'))
                .map(|(name, _)| name.to_string());
            let field = match (missing, path.as_str()) {
                (Some(name), "" | ".") => name,
                (Some(name), parent) => format!("{parent}.{name}"),
                (None, "") => ".".into(),
                (None, _) => path.clone(),
            };
            // serde_json messages end with "at line X column Y"; keep them, they help.
            ConfigError::new(field, inner)
        })?;
        Config::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        non_empty_strings("issuers", &raw.issuers)?;
        non_empty_strings("audiences", &raw.audiences)?;
        let keys = match (&raw.jwks, &raw.sync) {
            (Some(j), _) => KeySet::from_jwks(j, "jwks")?,
            (None, Some(_)) => KeySet::default(),
            (None, None) => {
                return Err(ConfigError::new(
                    "jwks",
                    "is required unless keys come from `sync`",
                ))
            }
        };

        let token_types = match raw.token_types {
            Some(t) => {
                non_empty_strings("token_types", &t)?;
                t.iter().map(|s| normalise_typ(s)).collect()
            }
            None => vec![TYP_API_TOKEN.to_string(), TYP_ACCESS_TOKEN.to_string()],
        };

        let token_sources = match raw.token_sources {
            None => vec![TokenSource {
                header: "authorization".into(),
                schemes: vec!["bearer".into(), "token".into()],
            }],
            Some(sources) => {
                if sources.is_empty() {
                    return Err(ConfigError::new("token_sources", "must not be empty"));
                }
                let mut out = Vec::with_capacity(sources.len());
                for (i, s) in sources.iter().enumerate() {
                    let header = header_name(&format!("token_sources[{i}].header"), &s.header)?;
                    let schemes = match &s.schemes {
                        None => Vec::new(),
                        Some(list) => {
                            let field = format!("token_sources[{i}].schemes");
                            if list.is_empty() {
                                return Err(ConfigError::new(
                                    field,
                                    "must not be empty (omit it to take the whole header value)",
                                ));
                            }
                            let mut schemes = Vec::new();
                            for (j, scheme) in list.iter().enumerate() {
                                if !is_header_name(scheme) {
                                    return Err(ConfigError::new(
                                        format!("{field}[{j}]"),
                                        format!("{scheme:?} is not a valid auth scheme"),
                                    ));
                                }
                                schemes.push(scheme.to_ascii_lowercase());
                            }
                            schemes
                        }
                    };
                    out.push(TokenSource { header, schemes });
                }
                out
            }
        };

        let max_token_bytes = bounded("max_token_bytes", raw.max_token_bytes, 8192, 1, 65536)?;
        let clock_skew_secs = bounded("clock_skew_secs", raw.clock_skew_secs, 60, 0, 600)?;
        let max_lifetime_secs = bounded(
            "max_lifetime_secs",
            raw.max_lifetime_secs,
            400 * 86400,
            1,
            10 * 366 * 86400,
        )?;

        let client_ip = match raw.client_ip {
            None => ClientIpSource::Peer,
            Some(c) => match c.source.as_str() {
                "peer" => {
                    if c.trusted_hops.is_some() {
                        return Err(ConfigError::new(
                            "client_ip.trusted_hops",
                            "only applies to source \"x_forwarded_for\"",
                        ));
                    }
                    ClientIpSource::Peer
                }
                "x_forwarded_for" => {
                    let hops = match c.trusted_hops {
                        Some(h) if (1..=16).contains(&h) => h as usize,
                        Some(h) => {
                            return Err(ConfigError::new(
                                "client_ip.trusted_hops",
                                format!("{h} is out of range 1..=16"),
                            ))
                        }
                        None => {
                            return Err(ConfigError::new(
                                "client_ip.trusted_hops",
                                "required for source \"x_forwarded_for\"",
                            ))
                        }
                    };
                    ClientIpSource::XForwardedFor { trusted_hops: hops }
                }
                other => {
                    return Err(ConfigError::new(
                        "client_ip.source",
                        format!("{other:?} is not one of \"peer\", \"x_forwarded_for\""),
                    ))
                }
            },
        };

        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            if !r.path_prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("routes[{i}].path_prefix"),
                    "must start with '/'",
                ));
            }
            if r.path_prefix.contains('?') || r.path_prefix.contains('#') {
                return Err(ConfigError::new(
                    format!("routes[{i}].path_prefix"),
                    "must be a path without query or fragment",
                ));
            }
            let methods = match r.methods {
                None => Vec::new(),
                Some(m) => {
                    if m.is_empty() {
                        return Err(ConfigError::new(
                            format!("routes[{i}].methods"),
                            "must not be empty (omit it to match any method)",
                        ));
                    }
                    let mut out = Vec::new();
                    for (j, method) in m.iter().enumerate() {
                        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                            return Err(ConfigError::new(
                                format!("routes[{i}].methods[{j}]"),
                                format!("{method:?} is not an upper-case HTTP method"),
                            ));
                        }
                        out.push(method.clone());
                    }
                    out
                }
            };
            for (j, s) in r.scopes.iter().enumerate() {
                if !is_scope_token(s) {
                    return Err(ConfigError::new(
                        format!("routes[{i}].scopes[{j}]"),
                        format!("{s:?} is not a valid scope token"),
                    ));
                }
            }
            // Trailing '/' would make "/admin/" miss "/admin"; compare without it.
            let mut prefix = r.path_prefix;
            while prefix.len() > 1 && prefix.ends_with('/') {
                prefix.pop();
            }
            routes.push(RouteRule {
                path_prefix: prefix,
                methods,
                scopes: r.scopes,
            });
        }

        let identity_headers = {
            let h = raw.identity_headers.unwrap_or(RawIdentityHeaders {
                user: None,
                org: None,
                token_id: None,
                scopes: None,
            });
            let ih = IdentityHeaders {
                user: header_name(
                    "identity_headers.user",
                    h.user.as_deref().unwrap_or("x-tessera-user"),
                )?,
                org: header_name(
                    "identity_headers.org",
                    h.org.as_deref().unwrap_or("x-tessera-org"),
                )?,
                token_id: header_name(
                    "identity_headers.token_id",
                    h.token_id.as_deref().unwrap_or("x-tessera-token-id"),
                )?,
                scopes: header_name(
                    "identity_headers.scopes",
                    h.scopes.as_deref().unwrap_or("x-tessera-scopes"),
                )?,
            };
            let names = ih.all();
            for (i, a) in names.iter().enumerate() {
                if names[..i].contains(a) {
                    return Err(ConfigError::new(
                        "identity_headers",
                        format!("header {a:?} is used twice"),
                    ));
                }
                if token_sources.iter().any(|s| s.header == *a) {
                    return Err(ConfigError::new(
                        "identity_headers",
                        format!("header {a:?} is also a token source"),
                    ));
                }
            }
            ih
        };

        let cache_size = bounded("cache_size", raw.cache_size, 1024, 0, 1_000_000)? as usize;

        let (status_required, fail_policy, status_lists) = match raw.status {
            None => (true, FailPolicy::Closed, Vec::new()),
            Some(s) => {
                let policy = match s.fail_policy.as_deref() {
                    None | Some("closed") => FailPolicy::Closed,
                    Some("open") => FailPolicy::Open,
                    Some(other) => {
                        return Err(ConfigError::new(
                            "status.fail_policy",
                            format!("{other:?} is not one of \"closed\", \"open\""),
                        ))
                    }
                };
                let mut lists: Vec<(String, StatusList)> = Vec::new();
                for (i, l) in s.lists.into_iter().enumerate() {
                    if l.uri.is_empty() {
                        return Err(ConfigError::new(
                            format!("status.lists[{i}].uri"),
                            "must not be empty",
                        ));
                    }
                    if lists.iter().any(|(u, _)| *u == l.uri) {
                        return Err(ConfigError::new(
                            format!("status.lists[{i}].uri"),
                            format!("{:?} appears twice", l.uri),
                        ));
                    }
                    if l.bits != 2 {
                        return Err(ConfigError::new(
                            format!("status.lists[{i}].bits"),
                            format!("{} is not supported (only 2)", l.bits),
                        ));
                    }
                    let list = StatusList::from_lst(&l.lst).map_err(|e| {
                        ConfigError::new(format!("status.lists[{i}].lst"), e.to_string())
                    })?;
                    lists.push((l.uri, list));
                }
                (s.required.unwrap_or(true), policy, lists)
            }
        };

        let realm = raw.realm.unwrap_or_else(|| "tessera".into());
        if realm.is_empty()
            || realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(ConfigError::new(
                "realm",
                "must be non-empty, without quotes, backslashes or control characters",
            ));
        }

        let sync = match raw.sync {
            None => None,
            Some(s) => {
                let max_staleness_secs = bounded(
                    "sync.max_staleness_secs",
                    s.max_staleness_secs,
                    60,
                    1,
                    7 * 86400,
                )?;
                let usage = match s.usage {
                    None => None,
                    Some(u) => {
                        if u.cluster.trim().is_empty() {
                            return Err(ConfigError::new(
                                "sync.usage.cluster",
                                "must not be empty",
                            ));
                        }
                        if u.credential.trim().is_empty() {
                            return Err(ConfigError::new(
                                "sync.usage.credential",
                                "must not be empty",
                            ));
                        }
                        let path = u.path.unwrap_or_else(|| "/v1/usage".into());
                        if !path.starts_with('/') {
                            return Err(ConfigError::new("sync.usage.path", "must start with '/'"));
                        }
                        Some(UsageSettings {
                            authority: u.authority.unwrap_or_else(|| u.cluster.clone()),
                            cluster: u.cluster,
                            path,
                            credential: u.credential,
                            flush_interval_ms: bounded(
                                "sync.usage.flush_interval_ms",
                                u.flush_interval_ms,
                                1000,
                                10,
                                60_000,
                            )?,
                            max_batch: bounded("sync.usage.max_batch", u.max_batch, 500, 1, 10_000)?
                                as usize,
                            max_buffer: bounded(
                                "sync.usage.max_buffer",
                                u.max_buffer,
                                10_000,
                                1,
                                1_000_000,
                            )? as usize,
                        })
                    }
                };
                Some(SyncSettings {
                    max_staleness_secs,
                    usage,
                })
            }
        };

        Ok(Config {
            issuers: raw.issuers,
            audiences: raw.audiences,
            keys,
            token_types,
            token_sources,
            max_token_bytes: max_token_bytes as usize,
            clock_skew_secs,
            max_lifetime_secs,
            client_ip,
            routes,
            identity_headers,
            forward_token: raw.forward_token.unwrap_or(true),
            cache_size,
            status_required,
            fail_policy,
            status_lists,
            realm,
            sync,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tessera_testkit::{Alg, TestKey};

    fn base(key: &TestKey) -> serde_json::Value {
        json!({
            "issuers": ["https://iss"],
            "audiences": ["tessera"],
            "jwks": tessera_testkit::jwks(&[key]),
        })
    }

    fn with(mut v: serde_json::Value, path: &[&str], value: serde_json::Value) -> String {
        let mut cur = &mut v;
        for (i, p) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cur[*p] = value;
                break;
            }
            cur = &mut cur[*p];
        }
        v.to_string()
    }

    #[test]
    fn defaults() {
        let key = TestKey::generate(Alg::EdDSA, "k1");
        let c = Config::from_json(&base(&key).to_string()).unwrap();
        assert_eq!(c.max_token_bytes, 8192);
        assert_eq!(c.clock_skew_secs, 60);
        assert_eq!(c.token_types, vec!["tessera-api+jwt", "at+jwt"]);
        assert_eq!(c.token_sources[0].schemes, vec!["bearer", "token"]);
        assert_eq!(c.client_ip, ClientIpSource::Peer);
        assert_eq!(c.fail_policy, FailPolicy::Closed);
        assert!(c.status_required);
        assert!(c.forward_token);
        assert_eq!(c.identity_headers.user, "x-tessera-user");
    }

    #[test]
    fn refused_configs_name_the_field() {
        let key = TestKey::generate(Alg::EdDSA, "k1");
        let b = base(&key);
        let cases: Vec<(String, &str)> = vec![
            ("{}".into(), "issuers"),
            ("not json".into(), "."),
            (with(b.clone(), &["issuers"], json!([])), "issuers"),
            (with(b.clone(), &["issuers"], json!([""])), "issuers[0]"),
            (
                with(b.clone(), &["audiences"], json!("tessera")),
                "audiences",
            ),
            (
                with(b.clone(), &["unknown_field"], json!(1)),
                "unknown_field",
            ),
            (
                with(b.clone(), &["max_token_bytes"], json!(0)),
                "max_token_bytes",
            ),
            (
                with(b.clone(), &["clock_skew_secs"], json!(-1)),
                "clock_skew_secs",
            ),
            (
                with(b.clone(), &["cache_size"], json!(2_000_000)),
                "cache_size",
            ),
            (
                with(b.clone(), &["client_ip"], json!({"source": "xff"})),
                "client_ip.source",
            ),
            (
                with(
                    b.clone(),
                    &["client_ip"],
                    json!({"source": "x_forwarded_for"}),
                ),
                "client_ip.trusted_hops",
            ),
            (
                with(
                    b.clone(),
                    &["token_sources"],
                    json!([{"header": "bad header"}]),
                ),
                "token_sources[0].header",
            ),
            (
                with(
                    b.clone(),
                    &["routes"],
                    json!([{"path_prefix": "admin", "scopes": []}]),
                ),
                "routes[0].path_prefix",
            ),
            (
                with(
                    b.clone(),
                    &["routes"],
                    json!([{"path_prefix": "/a", "methods": ["get"], "scopes": []}]),
                ),
                "routes[0].methods[0]",
            ),
            (
                with(
                    b.clone(),
                    &["routes"],
                    json!([{"path_prefix": "/a", "scopes": ["a b"]}]),
                ),
                "routes[0].scopes[0]",
            ),
            (
                with(b.clone(), &["status"], json!({"fail_policy": "maybe"})),
                "status.fail_policy",
            ),
            (
                with(
                    b.clone(),
                    &["status"],
                    json!({"lists": [{"uri": "u", "bits": 1, "lst": "x"}]}),
                ),
                "status.lists[0].bits",
            ),
            (
                with(
                    b.clone(),
                    &["status"],
                    json!({"lists": [{"uri": "u", "bits": 2, "lst": "!!"}]}),
                ),
                "status.lists[0].lst",
            ),
            (
                with(
                    b.clone(),
                    &["identity_headers"],
                    json!({"user": "authorization"}),
                ),
                "identity_headers",
            ),
            (with(b.clone(), &["realm"], json!("a\"b")), "realm"),
            (with(b.clone(), &["jwks"], json!({"keys": []})), "jwks.keys"),
            (
                with(b.clone(), &["routes"], json!([{"path_prefix": "/a"}])),
                "routes[0].scopes",
            ),
        ];
        for (json, field) in cases {
            match Config::from_json(&json) {
                Ok(_) => panic!("accepted: {json}"),
                Err(e) => assert_eq!(e.field, field, "{json} -> {e}"),
            }
        }
    }

    #[test]
    fn route_prefix_trailing_slash_is_trimmed() {
        let key = TestKey::generate(Alg::EdDSA, "k1");
        let json = with(
            base(&key),
            &["routes"],
            json!([{"path_prefix": "/admin/", "scopes": ["admin"]}]),
        );
        let c = Config::from_json(&json).unwrap();
        assert_eq!(c.routes[0].path_prefix, "/admin");
    }
}
