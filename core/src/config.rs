//! The plugin configuration: parsed from JSON once, validated, and compiled for fast checks.
//!
//! Every error names the offending field as a path (`jwks.keys[0].crv`), so an operator can
//! fix a refused configuration from the log line alone. The schema is documented in
//! `filter/README.md`.

use std::fmt;

use serde::Deserialize;

use crate::jwks::KeySet;
use crate::status::StatusList;
use crate::token::is_scope_token;

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
    #[serde(default)]
    max_wait_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    #[serde(default)]
    max_staleness_secs: Option<u64>,
    #[serde(default)]
    usage: Option<RawUsage>,
    // The rate limits' fallback (kept in this section: a section of its own cost the
    // filter module about 3 KB of deserializer).
    #[serde(default)]
    fallback_after_ms: Option<u64>,
    #[serde(default)]
    fallback_edges: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
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

/// Each member: a header name (sent under it), `true`/`false` (sent or not, under the
/// default name) or `{"header": name, "send": bool}`; read by [`identity_header`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityHeaders {
    #[serde(default)]
    user: Option<serde_json::Value>,
    #[serde(default)]
    username: Option<serde_json::Value>,
    #[serde(default)]
    org: Option<serde_json::Value>,
    #[serde(default)]
    token_id: Option<serde_json::Value>,
    #[serde(default)]
    scopes: Option<serde_json::Value>,
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

/// One identity header: the name it goes under, and whether it is sent upstream. A header
/// that is not sent is still removed from the client's request (a client never gets to
/// speak for the verifier under an identity header's name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeader {
    /// Lower-case header name.
    pub name: String,
    /// Whether the value is sent upstream on allow.
    pub send: bool,
}

impl IdentityHeader {
    /// Sent under `name` (lower-cased by validation).
    pub fn sent(name: impl Into<String>) -> IdentityHeader {
        IdentityHeader {
            name: name.into(),
            send: true,
        }
    }

    /// Not sent; `name` is still removed from the client's request.
    pub fn off(name: impl Into<String>) -> IdentityHeader {
        IdentityHeader {
            name: name.into(),
            send: false,
        }
    }
}

/// The identity headers of an allowed request: which are sent upstream and under which
/// names (`identity_headers`). The default is `x-tessera-user` (`sub`), `x-tessera-org`,
/// `x-tessera-token-id` (`jti`) and `x-tessera-scopes` sent, `x-tessera-username`
/// (`preferred_username`) not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// Carries `sub`, the user id.
    pub user: IdentityHeader,
    /// Carries `preferred_username`, the username at issuance (a token without it sends
    /// no value: the client's copy is removed all the same).
    pub username: IdentityHeader,
    /// Carries `org`.
    pub org: IdentityHeader,
    /// Carries `jti`.
    pub token_id: IdentityHeader,
    /// Carries the scopes, space-separated.
    pub scopes: IdentityHeader,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            user: IdentityHeader::sent(DEFAULT_IDENTITY_NAMES[0]),
            username: IdentityHeader::off(DEFAULT_IDENTITY_NAMES[1]),
            org: IdentityHeader::sent(DEFAULT_IDENTITY_NAMES[2]),
            token_id: IdentityHeader::sent(DEFAULT_IDENTITY_NAMES[3]),
            scopes: IdentityHeader::sent(DEFAULT_IDENTITY_NAMES[4]),
        }
    }
}

/// The members of `identity_headers`, in the order the headers are set.
pub const IDENTITY_FIELDS: [&str; 5] = ["user", "username", "org", "token_id", "scopes"];

/// The default header name of each member of [`IDENTITY_FIELDS`].
pub const DEFAULT_IDENTITY_NAMES: [&str; 5] = [
    "x-tessera-user",
    "x-tessera-username",
    "x-tessera-org",
    "x-tessera-token-id",
    "x-tessera-scopes",
];

/// Names an identity header may not take: the request's credentials, routing, framing and
/// hop-by-hop headers, and the headers a host reads the client address from. A proxy or the
/// upstream reads these for something else; replacing or removing them would break the
/// request or the verifier's own checks.
pub const RESERVED_HEADER_NAMES: [&str; 22] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "cf-connecting-ip",
    "x-request-id",
];

impl IdentityHeaders {
    /// The five headers with their member names, in [`IDENTITY_FIELDS`] order.
    pub fn all(&self) -> [(&'static str, &IdentityHeader); 5] {
        [
            ("user", &self.user),
            ("username", &self.username),
            ("org", &self.org),
            ("token_id", &self.token_id),
            ("scopes", &self.scopes),
        ]
    }

    /// The names of the headers not sent, removed from every allowed request: each once,
    /// leaving out a name a sent header sets anyway.
    pub fn strip(&self) -> Vec<&str> {
        let all = self.all();
        let mut out: Vec<&str> = Vec::new();
        for (_, h) in all.iter().filter(|(_, h)| !h.send) {
            let set_anyway = all.iter().any(|(_, o)| o.send && o.name == h.name);
            if !set_anyway && !out.contains(&h.name.as_str()) {
                out.push(&h.name);
            }
        }
        out
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

/// Rate limits when the control plane is lost (issue 25; `sync.fallback_after_ms` and
/// `sync.fallback_edges` in the document): after `fallback_after_ms` without an answer to
/// a report, the edge admits on a local share of each limit (`limit ÷ edges`, the edge
/// count the control plane last said unless `fallback_edges` sets it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// How long without an answer (with a report unanswered) before the fallback.
    pub fallback_after_ms: u64,
    /// The edges the limit is divided by in the fallback; `None`: as the control plane
    /// last said.
    pub fallback_edges: Option<u64>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            fallback_after_ms: 1000,
            fallback_edges: None,
        }
    }
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
#[derive(Clone, Debug)]
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
    /// The identity headers: which are sent, under which names.
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
    /// The longest a request waits, paused, for fresher keys, a fresher status list or a
    /// rate-limit lease before it is decided on what the host holds (milliseconds;
    /// `max_wait_ms`, default [`crate::REFRESH_WAIT_MS`]).
    pub max_wait_ms: u64,
    /// Rate limits' fallback when the control plane is lost.
    pub rate_limits: RateLimitSettings,
}

/// The range `max_wait_ms` must lie in (milliseconds).
pub const MAX_WAIT_MS_RANGE: (u64, u64) = (1, 10_000);

pub use crate::token::{normalise_typ, TYP_ACCESS_TOKEN, TYP_API_TOKEN};

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

/// One member of `identity_headers` (`field` is its path), read from its document form:
/// absent or null (the default), a header name (sent under it), `true`/`false` (sent or
/// not, under the default name) or `{"header": name, "send": bool}` (each optional).
fn identity_header(
    field: &str,
    value: Option<&serde_json::Value>,
    default_name: &str,
    default_send: bool,
) -> Result<IdentityHeader, ConfigError> {
    use serde_json::Value;
    let (name, send) = match value {
        None | Some(Value::Null) => (default_name, default_send),
        Some(Value::String(name)) => (name.as_str(), true),
        Some(Value::Bool(send)) => (default_name, *send),
        Some(Value::Object(m)) => {
            let mut name = default_name;
            let mut send = true;
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("header", Value::String(n)) => name = n,
                    ("header", _) => {
                        return Err(ConfigError::new(
                            format!("{field}.header"),
                            "must be a header name (a string)",
                        ))
                    }
                    ("send", Value::Bool(b)) => send = *b,
                    ("send", _) => {
                        return Err(ConfigError::new(
                            format!("{field}.send"),
                            "must be true or false",
                        ))
                    }
                    (other, _) => {
                        return Err(ConfigError::new(
                            format!("{field}.{other}"),
                            "is not a field here (allowed: header, send)",
                        ))
                    }
                }
            }
            (name, send)
        }
        Some(_) => {
            return Err(ConfigError::new(
                field,
                "must be a header name, true, false, or {\"header\": <name>, \"send\": <bool>}",
            ))
        }
    };
    let name = header_name(field, name)?;
    if RESERVED_HEADER_NAMES.contains(&name.as_str()) || name.starts_with("x-envoy-") {
        return Err(ConfigError::new(
            field,
            format!(
                "{name:?} is reserved (credentials, routing, framing or the client address); choose another name"
            ),
        ));
    }
    Ok(IdentityHeader { name, send })
}

/// Validates `identity_headers` against itself and the token sources.
fn identity_headers(
    raw: RawIdentityHeaders,
    token_sources: &[TokenSource],
) -> Result<IdentityHeaders, ConfigError> {
    // The names sent so far, with their member's index.
    let mut sent: Vec<(usize, String)> = Vec::with_capacity(5);
    let mut member = |i: usize, value: Option<&serde_json::Value>| {
        let field = format!("identity_headers.{}", IDENTITY_FIELDS[i]);
        // Only the username is off unless asked for: the default stays the four it was.
        let h = identity_header(&field, value, DEFAULT_IDENTITY_NAMES[i], i != 1)?;
        if let Some(j) = token_sources.iter().position(|s| s.header == h.name) {
            return Err(ConfigError::new(
                field,
                format!("{:?} is also a token source (token_sources[{j}])", h.name),
            ));
        }
        if h.send {
            if let Some((j, _)) = sent.iter().find(|(_, name)| *name == h.name) {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "{:?} is already sent as identity_headers.{}; each header carries one value",
                        h.name, IDENTITY_FIELDS[*j]
                    ),
                ));
            }
            sent.push((i, h.name.clone()));
        }
        Ok(h)
    };
    Ok(IdentityHeaders {
        user: member(0, raw.user.as_ref())?,
        username: member(1, raw.username.as_ref())?,
        org: member(2, raw.org.as_ref())?,
        token_id: member(3, raw.token_id.as_ref())?,
        scopes: member(4, raw.scopes.as_ref())?,
    })
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
        ConfigBuilder::from_raw(raw).build()
    }

    /// A builder for a configuration assembled in code (the control plane's API verifier),
    /// validated exactly as [`Config::from_json`] validates a document: the same checks,
    /// the same field names (`issuers[0]`, `status.lists[1].uri`, ...) and messages.
    ///
    /// ```
    /// use tessera_core::config::{ClientIpSource, Config, FailPolicy};
    /// use tessera_core::{StatusList, TokenStatus, TokenType, Verifier};
    ///
    /// # let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1",
    /// #     "alg": "EdDSA", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]});
    /// let keys = tessera_core::jwks::KeySet::from_jwks(&jwks, "jwks")?;
    /// let mut list = StatusList::new(16);
    /// list.set(3, TokenStatus::Revoked);
    /// let config = Config::builder()
    ///     .issuer("https://cp.example/v1/orgs/acme")
    ///     .audience("tessera")
    ///     .keys(keys)
    ///     .token_types([TokenType::Api, TokenType::Access])
    ///     .clock_skew_secs(60)
    ///     .client_ip(ClientIpSource::Peer)
    ///     .fail_policy(FailPolicy::Closed)
    ///     .status_list("https://cp.example/v1/orgs/acme/status-list", list)
    ///     .cache_size(0)
    ///     .realm("tessera")
    ///     .build()?;
    /// let verifier = Verifier::new(config);
    /// # assert_eq!(verifier.config().issuers.len(), 1);
    /// # Ok::<(), tessera_core::ConfigError>(())
    /// ```
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }
}

/// Keys given to the builder: a JWKS document to parse at `build`, or a parsed key set.
#[derive(Clone, Debug)]
enum KeysInput {
    Jwks(serde_json::Value),
    Set(KeySet),
}

#[derive(Clone, Debug)]
struct DraftSource {
    header: String,
    schemes: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
struct DraftRoute {
    path_prefix: String,
    methods: Option<Vec<String>>,
    scopes: Vec<String>,
}

/// Builds a [`Config`] in code; see [`Config::builder`]. Every setter has the default of the
/// document's field when it is not called. A value a document could not express typed
/// (an unknown `fail_policy` text, a bad `lst`) is kept as the error it is, and reported
/// by [`ConfigBuilder::build`] at the point a document's validation would report it.
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    issuers: Vec<String>,
    audiences: Vec<String>,
    keys: Option<KeysInput>,
    token_types: Option<Vec<String>>,
    token_sources: Option<Vec<DraftSource>>,
    max_token_bytes: Option<u64>,
    clock_skew_secs: Option<u64>,
    max_lifetime_secs: Option<u64>,
    client_ip: Option<Result<ClientIpSource, ConfigError>>,
    routes: Vec<DraftRoute>,
    identity_headers: Option<RawIdentityHeaders>,
    forward_token: Option<bool>,
    cache_size: Option<u64>,
    status_required: Option<bool>,
    fail_policy: Option<Result<FailPolicy, ConfigError>>,
    status_lists: Vec<(String, Result<StatusList, ConfigError>)>,
    realm: Option<String>,
    sync: Option<RawSync>,
    max_wait_ms: Option<u64>,
}

impl ConfigBuilder {
    /// An empty builder (the same as [`Config::builder`]).
    pub fn new() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Adds an allowed `iss`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Replaces the allowed `iss` values.
    pub fn issuers<S: Into<String>>(mut self, issuers: impl IntoIterator<Item = S>) -> Self {
        self.issuers = issuers.into_iter().map(Into::into).collect();
        self
    }

    /// Adds an accepted audience.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Replaces the accepted audiences.
    pub fn audiences<S: Into<String>>(mut self, audiences: impl IntoIterator<Item = S>) -> Self {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// The verification keys, already parsed (`jwks` in a document). Must not be empty
    /// unless keys come from `sync`.
    pub fn keys(mut self, keys: KeySet) -> Self {
        self.keys = Some(KeysInput::Set(keys));
        self
    }

    /// The verification keys as a JWKS document, parsed and checked by `build` (errors
    /// name `jwks.keys[i]...`).
    pub fn jwks(mut self, jwks: serde_json::Value) -> Self {
        self.keys = Some(KeysInput::Jwks(jwks));
        self
    }

    /// The accepted header `typ` values (default: both Tessera types); normalised.
    pub fn token_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.token_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Where tokens are taken from, in order (default: `Authorization: Bearer|Token`).
    /// A source with no schemes takes the whole header value.
    pub fn token_sources(mut self, sources: impl IntoIterator<Item = TokenSource>) -> Self {
        self.token_sources = Some(
            sources
                .into_iter()
                .map(|s| DraftSource {
                    header: s.header,
                    schemes: (!s.schemes.is_empty()).then_some(s.schemes),
                })
                .collect(),
        );
        self
    }

    /// Longest accepted token, 1..=65536 bytes (default 8192).
    pub fn max_token_bytes(mut self, bytes: u64) -> Self {
        self.max_token_bytes = Some(bytes);
        self
    }

    /// Clock skew, 0..=600 seconds (default 60).
    pub fn clock_skew_secs(mut self, secs: u64) -> Self {
        self.clock_skew_secs = Some(secs);
        self
    }

    /// Longest accepted `exp - iat`, up to ten years (default 400 days).
    pub fn max_lifetime_secs(mut self, secs: u64) -> Self {
        self.max_lifetime_secs = Some(secs);
        self
    }

    /// Where the client address comes from (default: the peer). `trusted_hops` must be
    /// 1..=16.
    pub fn client_ip(mut self, source: ClientIpSource) -> Self {
        self.client_ip = Some(Ok(source));
        self
    }

    /// Adds a scope rule. Its methods are upper-case (none: any method), its scopes RFC 6749
    /// scope-tokens; a trailing `/` of the prefix is dropped.
    pub fn route(mut self, rule: RouteRule) -> Self {
        self.routes.push(DraftRoute {
            path_prefix: rule.path_prefix,
            methods: (!rule.methods.is_empty()).then_some(rule.methods),
            scopes: rule.scopes,
        });
        self
    }

    /// Replaces the scope rules.
    pub fn routes(mut self, rules: impl IntoIterator<Item = RouteRule>) -> Self {
        self.routes.clear();
        rules.into_iter().fold(self, ConfigBuilder::route)
    }

    /// The identity headers (default: [`IdentityHeaders::default`]); validated by `build`
    /// as a document's `identity_headers` is, each member given as
    /// `{"header": name, "send": bool}`.
    pub fn identity_headers(mut self, headers: IdentityHeaders) -> Self {
        let member =
            |h: IdentityHeader| Some(serde_json::json!({"header": h.name, "send": h.send}));
        self.identity_headers = Some(RawIdentityHeaders {
            user: member(headers.user),
            username: member(headers.username),
            org: member(headers.org),
            token_id: member(headers.token_id),
            scopes: member(headers.scopes),
        });
        self
    }

    /// The longest a paused request waits for fresher keys, status or a rate-limit lease,
    /// in milliseconds, [`MAX_WAIT_MS_RANGE`] (default [`crate::REFRESH_WAIT_MS`]).
    pub fn max_wait_ms(mut self, ms: u64) -> Self {
        self.max_wait_ms = Some(ms);
        self
    }

    /// Whether the token header is forwarded upstream (default true).
    pub fn forward_token(mut self, forward: bool) -> Self {
        self.forward_token = Some(forward);
        self
    }

    /// Verified-token cache capacity, 0..=1,000,000 (default 1024).
    pub fn cache_size(mut self, entries: u64) -> Self {
        self.cache_size = Some(entries);
        self
    }

    /// Whether tokens must carry a `status` claim (default true).
    pub fn status_required(mut self, required: bool) -> Self {
        self.status_required = Some(required);
        self
    }

    /// What an unknown status means (default [`FailPolicy::Closed`]).
    pub fn fail_policy(mut self, policy: FailPolicy) -> Self {
        self.fail_policy = Some(Ok(policy));
        self
    }

    /// Adds the status list published at `uri` (each uri once).
    pub fn status_list(mut self, uri: impl Into<String>, list: StatusList) -> Self {
        self.status_lists.push((uri.into(), Ok(list)));
        self
    }

    /// Replaces the status lists.
    pub fn status_lists<S: Into<String>>(
        mut self,
        lists: impl IntoIterator<Item = (S, StatusList)>,
    ) -> Self {
        self.status_lists = lists
            .into_iter()
            .map(|(uri, list)| (uri.into(), Ok(list)))
            .collect();
        self
    }

    /// The `WWW-Authenticate` realm (default `tessera`).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// The rate limits' fallback when the control plane is lost.
    /// (`sync.fallback_after_ms` and `sync.fallback_edges`: a `sync` section is made).
    pub fn rate_limits(mut self, r: RateLimitSettings) -> Self {
        let sync = self.sync.get_or_insert_with(RawSync::default);
        sync.fallback_after_ms = Some(r.fallback_after_ms);
        sync.fallback_edges = r.fallback_edges;
        self
    }

    /// Live sync: keys and status lists arrive later through the host (then keys may be
    /// left out).
    pub fn sync(mut self, sync: SyncSettings) -> Self {
        let (fallback_after_ms, fallback_edges) = self
            .sync
            .as_ref()
            .map_or((None, None), |s| (s.fallback_after_ms, s.fallback_edges));
        self.sync = Some(RawSync {
            fallback_after_ms,
            fallback_edges,
            max_staleness_secs: Some(sync.max_staleness_secs),
            usage: sync.usage.map(|u| RawUsage {
                cluster: u.cluster,
                authority: Some(u.authority),
                path: Some(u.path),
                credential: u.credential,
                flush_interval_ms: Some(u.flush_interval_ms),
                max_batch: Some(u.max_batch as u64),
                max_buffer: Some(u.max_buffer as u64),
            }),
        });
        self
    }

    /// A document's fields, with what only text can get wrong turned into errors kept for
    /// `build` to report in order.
    fn from_raw(raw: RawConfig) -> ConfigBuilder {
        let client_ip = raw.client_ip.map(|c| match c.source.as_str() {
            "peer" => match c.trusted_hops {
                Some(_) => Err(ConfigError::new(
                    "client_ip.trusted_hops",
                    "only applies to source \"x_forwarded_for\"",
                )),
                None => Ok(ClientIpSource::Peer),
            },
            "x_forwarded_for" => match c.trusted_hops {
                // Range-checked here, before the conversion could truncate (wasm32).
                Some(h) if (1..=16).contains(&h) => Ok(ClientIpSource::XForwardedFor {
                    trusted_hops: h as usize,
                }),
                Some(h) => Err(ConfigError::new(
                    "client_ip.trusted_hops",
                    format!("{h} is out of range 1..=16"),
                )),
                None => Err(ConfigError::new(
                    "client_ip.trusted_hops",
                    "required for source \"x_forwarded_for\"",
                )),
            },
            other => Err(ConfigError::new(
                "client_ip.source",
                format!("{other:?} is not one of \"peer\", \"x_forwarded_for\""),
            )),
        });
        let (status_required, fail_policy, status_lists) = match raw.status {
            None => (None, None, Vec::new()),
            Some(s) => {
                let policy = match s.fail_policy.as_deref() {
                    None => None,
                    Some("closed") => Some(Ok(FailPolicy::Closed)),
                    Some("open") => Some(Ok(FailPolicy::Open)),
                    Some(other) => Some(Err(ConfigError::new(
                        "status.fail_policy",
                        format!("{other:?} is not one of \"closed\", \"open\""),
                    ))),
                };
                let lists = s
                    .lists
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let list = if l.bits != 2 {
                            Err(ConfigError::new(
                                format!("status.lists[{i}].bits"),
                                format!("{} is not supported (only 2)", l.bits),
                            ))
                        } else {
                            StatusList::from_lst(&l.lst).map_err(|e| {
                                ConfigError::new(format!("status.lists[{i}].lst"), e.to_string())
                            })
                        };
                        (l.uri, list)
                    })
                    .collect();
                (s.required, policy, lists)
            }
        };
        ConfigBuilder {
            issuers: raw.issuers,
            audiences: raw.audiences,
            keys: raw.jwks.map(KeysInput::Jwks),
            token_types: raw.token_types,
            token_sources: raw.token_sources.map(|list| {
                list.into_iter()
                    .map(|s| DraftSource {
                        header: s.header,
                        schemes: s.schemes,
                    })
                    .collect()
            }),
            max_token_bytes: raw.max_token_bytes,
            clock_skew_secs: raw.clock_skew_secs,
            max_lifetime_secs: raw.max_lifetime_secs,
            client_ip,
            routes: raw
                .routes
                .into_iter()
                .map(|r| DraftRoute {
                    path_prefix: r.path_prefix,
                    methods: r.methods,
                    scopes: r.scopes,
                })
                .collect(),
            identity_headers: raw.identity_headers,
            forward_token: raw.forward_token,
            cache_size: raw.cache_size,
            status_required,
            fail_policy,
            status_lists,
            realm: raw.realm,
            sync: raw.sync,
            max_wait_ms: raw.max_wait_ms,
        }
    }

    /// Validates and compiles the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        non_empty_strings("issuers", &self.issuers)?;
        non_empty_strings("audiences", &self.audiences)?;
        let keys = match (self.keys, &self.sync) {
            (Some(KeysInput::Jwks(j)), _) => KeySet::from_jwks(&j, "jwks")?,
            (Some(KeysInput::Set(k)), _) if k.is_empty() => {
                return Err(ConfigError::new("jwks.keys", "must not be empty"))
            }
            (Some(KeysInput::Set(k)), _) => k,
            (None, Some(_)) => KeySet::default(),
            (None, None) => {
                return Err(ConfigError::new(
                    "jwks",
                    "is required unless keys come from `sync`",
                ))
            }
        };

        let token_types = match self.token_types {
            Some(t) => {
                non_empty_strings("token_types", &t)?;
                t.iter().map(|s| normalise_typ(s)).collect()
            }
            None => vec![TYP_API_TOKEN.to_string(), TYP_ACCESS_TOKEN.to_string()],
        };

        let token_sources = match self.token_sources {
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

        let max_token_bytes = bounded("max_token_bytes", self.max_token_bytes, 8192, 1, 65536)?;
        let clock_skew_secs = bounded("clock_skew_secs", self.clock_skew_secs, 60, 0, 600)?;
        let max_lifetime_secs = bounded(
            "max_lifetime_secs",
            self.max_lifetime_secs,
            400 * 86400,
            1,
            10 * 366 * 86400,
        )?;

        let client_ip = match self.client_ip {
            None => ClientIpSource::Peer,
            Some(c) => match c? {
                ClientIpSource::XForwardedFor { trusted_hops }
                    if !(1..=16).contains(&trusted_hops) =>
                {
                    return Err(ConfigError::new(
                        "client_ip.trusted_hops",
                        format!("{trusted_hops} is out of range 1..=16"),
                    ))
                }
                source => source,
            },
        };

        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.into_iter().enumerate() {
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

        let identity_headers =
            identity_headers(self.identity_headers.unwrap_or_default(), &token_sources)?;

        let cache_size = bounded("cache_size", self.cache_size, 1024, 0, 1_000_000)? as usize;

        let fail_policy = match self.fail_policy {
            None => FailPolicy::Closed,
            Some(p) => p?,
        };
        let mut status_lists: Vec<(String, StatusList)> =
            Vec::with_capacity(self.status_lists.len());
        for (i, (uri, list)) in self.status_lists.into_iter().enumerate() {
            if uri.is_empty() {
                return Err(ConfigError::new(
                    format!("status.lists[{i}].uri"),
                    "must not be empty",
                ));
            }
            if status_lists.iter().any(|(u, _)| *u == uri) {
                return Err(ConfigError::new(
                    format!("status.lists[{i}].uri"),
                    format!("{uri:?} appears twice"),
                ));
            }
            status_lists.push((uri, list?));
        }
        let status_required = self.status_required.unwrap_or(true);

        let realm = self.realm.unwrap_or_else(|| "tessera".into());
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

        let raw = self.sync.as_ref();
        let rate_limits = RateLimitSettings {
            fallback_after_ms: bounded(
                "sync.fallback_after_ms",
                raw.and_then(|s| s.fallback_after_ms),
                1000,
                100,
                60_000,
            )?,
            fallback_edges: match raw.and_then(|s| s.fallback_edges) {
                None => None,
                Some(n) => Some(bounded("sync.fallback_edges", Some(n), 1, 1, 10_000)?),
            },
        };
        let sync = match self.sync {
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

        let (min_wait, max_wait) = MAX_WAIT_MS_RANGE;
        let max_wait_ms = bounded(
            "max_wait_ms",
            self.max_wait_ms,
            crate::REFRESH_WAIT_MS,
            min_wait,
            max_wait,
        )?;

        Ok(Config {
            issuers: self.issuers,
            audiences: self.audiences,
            keys,
            token_types,
            token_sources,
            max_token_bytes: max_token_bytes as usize,
            clock_skew_secs,
            max_lifetime_secs,
            client_ip,
            routes,
            identity_headers,
            forward_token: self.forward_token.unwrap_or(true),
            cache_size,
            status_required,
            fail_policy,
            status_lists,
            realm,
            sync,
            max_wait_ms,
            rate_limits,
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
        assert_eq!(c.identity_headers, IdentityHeaders::default());
        assert_eq!(c.max_wait_ms, crate::REFRESH_WAIT_MS);
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
                "identity_headers.user",
            ),
            (with(b.clone(), &["max_wait_ms"], json!(0)), "max_wait_ms"),
            (
                with(b.clone(), &["max_wait_ms"], json!(10_001)),
                "max_wait_ms",
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

    /// Every form of a member, and every refusal naming the member and what is allowed.
    #[test]
    fn identity_headers_are_chosen_named_and_validated() {
        let key = TestKey::generate(Alg::EdDSA, "k1");
        let b = base(&key);
        let load = |v: serde_json::Value| {
            Config::from_json(&with(b.clone(), &["identity_headers"], v))
                .map(|c| c.identity_headers)
        };
        let h = load(json!({"user": "X-User-Id", "username": true, "org": false,
            "token_id": {"header": "x-tok"}, "scopes": {"send": false}}))
        .unwrap();
        assert_eq!(h.user, IdentityHeader::sent("x-user-id"));
        assert_eq!(h.username, IdentityHeader::sent("x-tessera-username"));
        assert_eq!(h.org, IdentityHeader::off("x-tessera-org"));
        assert_eq!(h.token_id, IdentityHeader::sent("x-tok"));
        assert_eq!(h.scopes, IdentityHeader::off("x-tessera-scopes"));
        assert_eq!(h.strip(), ["x-tessera-org", "x-tessera-scopes"]);
        // null is the default; an empty object too.
        assert_eq!(
            load(json!({"user": null})).unwrap(),
            IdentityHeaders::default()
        );
        assert_eq!(load(json!({})).unwrap(), IdentityHeaders::default());
        assert_eq!(IdentityHeaders::default().strip(), ["x-tessera-username"]);
        // Two headers off under one name are stripped once.
        let h = load(json!({"user": {"header": "x-id", "send": false},
            "username": {"header": "x-id", "send": false}}))
        .unwrap();
        assert_eq!(h.strip(), ["x-id"]);
        // Off under the name another header is sent under: that one replaces it anyway.
        let h = load(json!({"user": false, "username": "x-tessera-user"})).unwrap();
        assert!(h.strip().is_empty());

        let sources = json!([{"header": "x-api-key"}]);
        let cases: Vec<(serde_json::Value, &str, &str)> = vec![
            (
                json!({"user": "bad header"}),
                "identity_headers.user",
                "not a valid HTTP header name",
            ),
            (
                json!({"org": ":path"}),
                "identity_headers.org",
                "not a valid HTTP header name",
            ),
            (
                json!({"user": "Host"}),
                "identity_headers.user",
                "not allowed",
            ),
            (
                json!({"username": "authorization"}),
                "identity_headers.username",
                "reserved",
            ),
            (
                json!({"scopes": "Cookie"}),
                "identity_headers.scopes",
                "reserved",
            ),
            (
                json!({"token_id": "x-forwarded-for"}),
                "identity_headers.token_id",
                "reserved",
            ),
            (
                json!({"org": "x-envoy-original-path"}),
                "identity_headers.org",
                "reserved",
            ),
            (
                json!({"org": {"header": "proxy-authorization", "send": false}}),
                "identity_headers.org",
                "reserved",
            ),
            (
                json!({"org": "x-tessera-user"}),
                "identity_headers.org",
                "already sent as identity_headers.user",
            ),
            (
                json!({"username": true, "scopes": "x-tessera-username"}),
                "identity_headers.scopes",
                "already sent as identity_headers.username",
            ),
            (
                json!({"user": 7}),
                "identity_headers.user",
                "must be a header name, true, false",
            ),
            (
                json!({"user": ["x"]}),
                "identity_headers.user",
                "must be a header name, true, false",
            ),
            (
                json!({"user": {"name": "x"}}),
                "identity_headers.user.name",
                "allowed: header, send",
            ),
            (
                json!({"user": {"header": 1}}),
                "identity_headers.user.header",
                "a string",
            ),
            (
                json!({"user": {"send": "yes"}}),
                "identity_headers.user.send",
                "true or false",
            ),
            (
                json!({"email": "x-mail"}),
                "identity_headers.email",
                "unknown field",
            ),
        ];
        for (v, field, message) in cases {
            match load(v.clone()) {
                Ok(h) => panic!("accepted {v}: {h:?}"),
                Err(e) => {
                    assert_eq!(e.field, field, "{v} -> {e}");
                    assert!(e.message.contains(message), "{v} -> {e}");
                }
            }
        }
        // A name that is also a token source, sent or not.
        for v in [
            json!({"user": "X-Api-Key"}),
            json!({"username": {"header": "x-api-key", "send": false}}),
        ] {
            let mut doc = with(b.clone(), &["identity_headers"], v.clone());
            doc = with(
                serde_json::from_str(&doc).unwrap(),
                &["token_sources"],
                sources.clone(),
            );
            let e = Config::from_json(&doc).unwrap_err();
            assert!(e.field.starts_with("identity_headers."), "{v} -> {e}");
            assert!(
                e.message.contains("also a token source (token_sources[0])"),
                "{e}"
            );
        }
    }

    #[test]
    fn max_wait_ms_is_bounded_and_named() {
        let key = TestKey::generate(Alg::EdDSA, "k1");
        let b = base(&key);
        let c = Config::from_json(&with(b.clone(), &["max_wait_ms"], json!(250))).unwrap();
        assert_eq!(c.max_wait_ms, 250);
        for bad in [json!(0), json!(10_001)] {
            let e = Config::from_json(&with(b.clone(), &["max_wait_ms"], bad)).unwrap_err();
            assert_eq!(e.field, "max_wait_ms");
            assert!(e.message.contains("out of range 1..=10000"), "{e}");
        }
        let e = Config::from_json(&with(b, &["max_wait_ms"], json!("1s"))).unwrap_err();
        assert_eq!(e.field, "max_wait_ms");
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

    #[test]
    fn the_builder_validates_like_a_document() {
        let key = TestKey::generate(Alg::EdDSA, "k1");
        let jwks = tessera_testkit::jwks(&[&key]);
        let keys = KeySet::from_jwks(&jwks, "jwks").unwrap();
        let lst = tessera_testkit::status_list_lst(&[0, 1, 2]);
        let list = StatusList::from_lst(&lst).unwrap();
        let ok = || {
            Config::builder()
                .issuer("https://iss")
                .audience("tessera")
                .keys(keys.clone())
        };
        let doc = |extra: serde_json::Value| {
            let mut v = json!({"issuers": ["https://iss"], "audiences": ["tessera"], "jwks": jwks});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v.to_string()
        };
        let route = |prefix: &str, methods: &[&str], scopes: &[&str]| RouteRule {
            path_prefix: prefix.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            scopes: scopes.iter().map(|m| m.to_string()).collect(),
        };
        let cases: Vec<(ConfigBuilder, String)> = vec![
            (ok(), doc(json!({}))),
            (
                Config::builder().audience("tessera").keys(keys.clone()),
                json!({"issuers": [], "audiences": ["tessera"], "jwks": jwks}).to_string(),
            ),
            (ok().issuer(" "), doc(json!({"issuers": ["https://iss", " "]}))),
            (
                Config::builder().issuer("https://iss").audience("tessera"),
                json!({"issuers": ["https://iss"], "audiences": ["tessera"]}).to_string(),
            ),
            (
                ok().keys(KeySet::default()),
                doc(json!({"jwks": {"keys": []}})),
            ),
            (
                ok().jwks(json!({"keys": [{"kty": "OKP"}]})),
                doc(json!({"jwks": {"keys": [{"kty": "OKP"}]}})),
            ),
            (ok().token_types(["JWT", ""]), doc(json!({"token_types": ["JWT", ""]}))),
            (
                ok().token_types([crate::TokenType::Access]),
                doc(json!({"token_types": ["application/AT+JWT"]})),
            ),
            (
                ok().token_sources([TokenSource {
                    header: "x-token".into(),
                    schemes: vec![],
                }]),
                doc(json!({"token_sources": [{"header": "X-Token"}]})),
            ),
            (
                ok().token_sources([TokenSource {
                    header: "x-token".into(),
                    schemes: vec!["bad scheme".into()],
                }]),
                doc(json!({"token_sources": [{"header": "x-token", "schemes": ["bad scheme"]}]})),
            ),
            (ok().max_token_bytes(0), doc(json!({"max_token_bytes": 0}))),
            (ok().clock_skew_secs(601), doc(json!({"clock_skew_secs": 601}))),
            (ok().max_lifetime_secs(30), doc(json!({"max_lifetime_secs": 30}))),
            (
                ok().client_ip(ClientIpSource::XForwardedFor { trusted_hops: 17 }),
                doc(json!({"client_ip": {"source": "x_forwarded_for", "trusted_hops": 17}})),
            ),
            (
                ok().client_ip(ClientIpSource::XForwardedFor { trusted_hops: 2 }),
                doc(json!({"client_ip": {"source": "x_forwarded_for", "trusted_hops": 2}})),
            ),
            (
                ok().route(route("/admin/", &["GET"], &["admin"])),
                doc(json!({"routes": [{"path_prefix": "/admin/", "methods": ["GET"], "scopes": ["admin"]}]})),
            ),
            (
                ok().route(route("/a", &[], &["a b"])),
                doc(json!({"routes": [{"path_prefix": "/a", "scopes": ["a b"]}]})),
            ),
            (
                ok().route(route("/a", &["get"], &[])),
                doc(json!({"routes": [{"path_prefix": "/a", "methods": ["get"], "scopes": []}]})),
            ),
            (
                ok().identity_headers(IdentityHeaders {
                    user: IdentityHeader::sent("x-u"),
                    org: IdentityHeader::sent("x-o"),
                    token_id: IdentityHeader::sent("x-u"),
                    scopes: IdentityHeader::sent("x-s"),
                    ..IdentityHeaders::default()
                }),
                doc(json!({"identity_headers": {"user": "x-u", "org": "x-o", "token_id": "x-u", "scopes": "x-s"}})),
            ),
            (
                ok().identity_headers(IdentityHeaders {
                    user: IdentityHeader::off("x-tessera-user"),
                    username: IdentityHeader::sent("X-User"),
                    org: IdentityHeader::off("x-org"),
                    ..IdentityHeaders::default()
                }),
                doc(json!({"identity_headers": {"user": false, "username": "X-User",
                    "org": {"header": "x-org", "send": false}}})),
            ),
            (ok().max_wait_ms(250), doc(json!({"max_wait_ms": 250}))),
            (ok().max_wait_ms(0), doc(json!({"max_wait_ms": 0}))),
            (ok().cache_size(2_000_000), doc(json!({"cache_size": 2_000_000}))),
            (
                ok().fail_policy(FailPolicy::Open)
                    .status_required(false)
                    .status_list("https://cp/l1", list.clone()),
                doc(json!({"status": {"fail_policy": "open", "required": false,
                    "lists": [{"uri": "https://cp/l1", "bits": 2, "lst": lst}]}})),
            ),
            (
                ok().status_list("u", list.clone()).status_list("u", list.clone()),
                doc(json!({"status": {"lists": [{"uri": "u", "bits": 2, "lst": lst}, {"uri": "u", "bits": 2, "lst": lst}]}})),
            ),
            (
                ok().status_list("", list.clone()),
                doc(json!({"status": {"lists": [{"uri": "", "bits": 2, "lst": lst}]}})),
            ),
            (ok().realm("a\"b"), doc(json!({"realm": "a\"b"}))),
            (
                Config::builder().issuer("https://iss").audience("tessera").sync(SyncSettings {
                    max_staleness_secs: 0,
                    usage: None,
                }),
                json!({"issuers": ["https://iss"], "audiences": ["tessera"], "sync": {"max_staleness_secs": 0}}).to_string(),
            ),
            (
                Config::builder().issuer("https://iss").audience("tessera").sync(SyncSettings {
                    max_staleness_secs: 30,
                    usage: Some(UsageSettings {
                        cluster: "cp".into(),
                        authority: "cp.example".into(),
                        path: "/v1/usage".into(),
                        credential: "tse_1".into(),
                        flush_interval_ms: 500,
                        max_batch: 10,
                        max_buffer: 100,
                    }),
                }),
                json!({"issuers": ["https://iss"], "audiences": ["tessera"], "sync": {"max_staleness_secs": 30,
                    "usage": {"cluster": "cp", "authority": "cp.example", "credential": "tse_1",
                        "flush_interval_ms": 500, "max_batch": 10, "max_buffer": 100}}}).to_string(),
            ),
            (
                ok().rate_limits(RateLimitSettings {
                    fallback_after_ms: 50,
                    fallback_edges: Some(4),
                }),
                doc(json!({"sync": {"fallback_after_ms": 50, "fallback_edges": 4}})),
            ),
            (
                ok().rate_limits(RateLimitSettings {
                    fallback_after_ms: 2000,
                    fallback_edges: Some(0),
                }),
                doc(json!({"sync": {"fallback_after_ms": 2000, "fallback_edges": 0}})),
            ),
        ];
        let mut refused = 0;
        for (builder, json) in cases {
            let built = builder.build();
            let parsed = Config::from_json(&json);
            match (&built, &parsed) {
                (Ok(b), Ok(p)) => assert_eq!(format!("{b:?}"), format!("{p:?}"), "{json}"),
                (Err(b), Err(p)) => {
                    refused += 1;
                    assert_eq!(b, p, "{json}");
                }
                _ => panic!("builder {built:?} vs document {parsed:?} for {json}"),
            }
        }
        assert!(refused >= 15, "{refused}");
    }

    #[test]
    fn the_rate_limit_fallback_is_validated_naming_its_field() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        for (field, value) in [
            ("fallback_after_ms", 99),
            ("fallback_after_ms", 60_001),
            ("fallback_edges", 0),
            ("fallback_edges", 10_001),
        ] {
            let mut doc = base(&key);
            doc["sync"] = json!({ field: value });
            let err = Config::from_json(&doc.to_string()).unwrap_err();
            assert_eq!(err.field, format!("sync.{field}"), "{err:?}");
        }
        let mut doc = base(&key);
        doc["sync"] = json!({"fallback_edges": 3});
        let c = Config::from_json(&doc.to_string()).unwrap();
        assert_eq!(
            c.rate_limits,
            RateLimitSettings {
                fallback_after_ms: 1000,
                fallback_edges: Some(3)
            }
        );
        assert_eq!(
            Config::from_json(&base(&key).to_string())
                .unwrap()
                .rate_limits,
            RateLimitSettings::default()
        );
    }
}
