//! Tessera's token verifier: decides whether a request's API token may pass.
//!
//! Pure Rust with no host calls, no I/O, no clock and no randomness: hosts (the Envoy
//! filter, the edge worker, tests) pass the request's headers, the peer address and the
//! current time, and get back a [`Decision`] with a stable [`Reason`] on refusal.
//!
//! ```text
//! Verifier::from_config_json(json)?  →  verifier.check(&request, now, Some(&mut cache))
//! ```
#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod decision;
pub mod der;
pub mod ed25519;
pub mod extract;
pub mod ip;
pub mod jwks;
pub mod plan;
pub mod ratelimit;
pub mod routes;
pub mod status;
pub mod synced;
pub mod token;
pub mod verify;
pub mod withdrawn;

use std::net::IpAddr;
use std::rc::Rc;

pub use cache::TokenCache;
pub use config::{Config, ConfigError, FailPolicy};
pub use decision::{Decision, Deny, Identity, Reason};
pub use plan::{Plan, Reply, UsageRecord};
pub use status::{StatusList, TokenStatus};
pub use token::{Claims, TokenType, TYP_ACCESS_TOKEN, TYP_API_TOKEN};
pub use verify::VerifiedToken;

/// What the verifier needs to know about one request.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// HTTP method, upper-case.
    pub method: &'a str,
    /// Request path, possibly with a query string.
    pub path: &'a str,
    /// All request headers, names in any case, in the order received.
    pub headers: &'a [(String, String)],
    /// The connection's peer address as the host reports it (`ip:port`, `[v6]:port`).
    pub source_address: Option<&'a str>,
}

/// How the cache took part in a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// No token was verified (missing, ambiguous or too large), or no cache was given.
    NotUsed,
    /// The token was found verified in the cache.
    Hit,
    /// The token was verified now.
    Miss,
}

/// The result of [`Verifier::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Allow or deny.
    pub decision: Decision,
    /// The lower-case header that carried the token, if one was found.
    pub token_header: Option<String>,
    /// Cache participation, for metrics.
    pub cache: CacheUse,
    /// The token the decision is about, once its signature verified (for usage records;
    /// a token refused before that has no trustworthy id).
    pub subject: Option<Subject>,
    /// Fresh data could change this outcome ("refresh needed"): the token names a `kid`
    /// the verifier does not hold, or a status index beyond the list it holds. Not a
    /// refusal yet: a host that can fetch that data waits for the fetch (bounded by the
    /// configuration's `max_wait_ms`, default [`REFRESH_WAIT_MS`]) and decides again; the
    /// outcome of that second decision is final whatever its `refresh` says. A host that cannot fetch (no source, the fetch
    /// not allowed now, failed or timed out) carries out `decision` as it is, which is
    /// the stable refusal (`key_unknown`; `status_unavailable` or the fail-open allow).
    pub refresh: Option<Refresh>,
}

/// What a host must fetch before an outcome with [`Outcome::refresh`] can change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// The keys: the token's `kid` is in no key set held (a key rotated since the last
    /// fetch, or a forged kid).
    Keys,
    /// The status list published at `uri`: the token's index lies beyond the list held
    /// (a token minted since the last fetch, or a forged index).
    StatusList {
        /// The list's `uri`, as the token carries it.
        uri: String,
    },
}

/// How long a host waits, at most, for the fetch an outcome's [`Outcome::refresh`] asks
/// for (or for a rate-limit lease) before it carries out the decision as it is, when the
/// configuration does not say (`max_wait_ms`, [`config::Config::max_wait_ms`];
/// milliseconds).
pub const REFRESH_WAIT_MS: u64 = 1000;

impl Outcome {
    /// The same outcome, final: no refresh asked for (what a host carries out once it
    /// has waited, or cannot).
    pub fn settled(mut self) -> Outcome {
        self.refresh = None;
        self
    }
}

/// Who a verified token belongs to, for usage records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// `jti`.
    pub token_id: String,
    /// `org`.
    pub org: String,
    /// `parent`, for exchanged access tokens.
    pub parent: Option<String>,
}

impl Subject {
    fn of(v: &VerifiedToken) -> Subject {
        Subject {
            token_id: v.jti.clone(),
            org: v.org.clone(),
            parent: v.parent.clone(),
        }
    }
}

/// The result of [`Verifier::begin`].
#[derive(Debug)]
pub enum Step {
    /// Decided without a signature check (cache hit, or refused earlier).
    Done(Outcome),
    /// The host must verify this signature, then call [`Verifier::finish`].
    Verify(SignatureRequest),
}

/// A signature for the host to check: `signature` over `signing_input` with the key `kid`,
/// whose algorithm is pinned to `alg`.
#[derive(Clone, Debug)]
pub struct SignatureRequest {
    /// The key's pinned algorithm (the token's `alg` already matched it).
    pub alg: jwks::KeyAlg,
    /// The key id in the configured JWKS.
    pub kid: String,
    /// `base64url(header) "." base64url(payload)` as bytes.
    pub signing_input: Vec<u8>,
    /// The decoded signature (raw `r || s` for ES256, as JWS defines it).
    pub signature: Vec<u8>,
    token: String,
    token_header: String,
    /// The token as parsed by `begin`, so `finish` does not parse it again.
    parsed: verify::Parsed,
}

/// A configured verifier. Cloning copies its keys and status lists (for copy-on-write
/// updates behind an `Arc`).
#[derive(Clone, Debug)]
pub struct Verifier {
    config: Config,
    /// Keys from the configuration document, kept apart so synced keys can be replaced.
    inline_keys: jwks::KeySet,
    /// Whether the status lists are current (always true without sync).
    status_fresh: bool,
    /// Scopes withdrawn from live tokens, per status-list URI (`withdrawn`).
    withdrawn: Vec<(String, withdrawn::WithdrawnScopes)>,
}

impl Verifier {
    /// Parses and validates a plugin configuration.
    pub fn from_config_json(json: &str) -> Result<Verifier, ConfigError> {
        Ok(Verifier::new(Config::from_json(json)?))
    }

    /// Wraps an already validated configuration.
    pub fn new(config: Config) -> Verifier {
        Verifier {
            inline_keys: config.keys.clone(),
            // With sync, nothing is known until the first successful sync.
            status_fresh: config.sync.is_none(),
            withdrawn: Vec::new(),
            config,
        }
    }

    /// Replaces the scopes withdrawn from the tokens of the status list at `uri` (an empty
    /// document forgets them).
    pub fn set_withdrawn(&mut self, uri: &str, scopes: withdrawn::WithdrawnScopes) {
        self.withdrawn.retain(|(u, _)| u != uri);
        if !scopes.is_empty() {
            self.withdrawn.push((uri.to_string(), scopes));
        }
    }

    /// The scopes withdrawn from the tokens of the status list at `uri`, if any.
    pub fn withdrawn(&self, uri: &str) -> Option<&withdrawn::WithdrawnScopes> {
        self.withdrawn
            .iter()
            .find(|(u, _)| u == uri)
            .map(|(_, w)| w)
    }

    /// Replaces the keys that came from the control plane (configured keys stay).
    pub fn set_synced_keys(&mut self, synced: &jwks::KeySet) {
        self.config.keys = self.inline_keys.merged_with(synced);
    }

    /// Says whether the status lists are current. While they are not (the last successful
    /// sync is older than `max_staleness`, or there was none), every status look-up is
    /// unknown and the fail policy decides.
    pub fn set_status_fresh(&mut self, fresh: bool) {
        self.status_fresh = fresh;
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A cache sized as configured.
    pub fn new_cache(&self) -> TokenCache {
        TokenCache::new(self.config.cache_size)
    }

    /// Replaces (or adds) the status list published at `uri`.
    pub fn set_status_list(&mut self, uri: &str, list: StatusList) {
        match self.config.status_lists.iter_mut().find(|(u, _)| u == uri) {
            Some((_, l)) => *l = list,
            None => self.config.status_lists.push((uri.to_string(), list)),
        }
    }

    /// Removes the status list published at `uri`; whether there was one. Tokens pointing
    /// to it then have an unknown status (the fail policy decides).
    pub fn remove_status_list(&mut self, uri: &str) -> bool {
        let before = self.config.status_lists.len();
        self.config.status_lists.retain(|(u, _)| u != uri);
        self.config.status_lists.len() != before
    }

    /// Sets one entry of the status list at `uri` in place (no re-encoding), growing the
    /// list to cover `idx`. Returns false, changing nothing, when there is no list at `uri`
    /// (add it with [`Verifier::set_status_list`]).
    pub fn set_status(&mut self, uri: &str, idx: usize, status: TokenStatus) -> bool {
        match self.config.status_lists.iter_mut().find(|(u, _)| u == uri) {
            Some((_, list)) => {
                list.set(idx, status);
                true
            }
            None => false,
        }
    }

    /// Replaces every key, configured and synced, with `keys`. An empty set makes every
    /// token `keys_unavailable`.
    pub fn set_keys(&mut self, keys: jwks::KeySet) {
        self.inline_keys = keys.clone();
        self.config.keys = keys;
    }

    /// Adds an allowed issuer (an org created after the verifier was built); no-op if it
    /// is there.
    pub fn add_issuer(&mut self, issuer: &str) {
        if !self.config.issuers.iter().any(|i| i == issuer) {
            self.config.issuers.push(issuer.to_string());
        }
    }

    /// Adds an accepted audience; no-op if it is there.
    pub fn add_audience(&mut self, audience: &str) {
        if !self.config.audiences.iter().any(|a| a == audience) {
            self.config.audiences.push(audience.to_string());
        }
    }

    fn deny(&self, reason: Reason, scopes: &[String]) -> Decision {
        Decision::Deny(Deny::new(reason, &self.config.realm, scopes))
    }

    /// Decides one request at time `now` (Unix seconds), the signature checked in Rust:
    /// [`Verifier::begin`], [`Verifier::verify_signature`], then [`Verifier::finish`].
    pub fn check(&self, req: &Request<'_>, now: u64, cache: Option<&mut TokenCache>) -> Outcome {
        let mut cache = cache;
        match self.begin(req, now, cache.as_deref_mut()) {
            Step::Done(outcome) => outcome,
            Step::Verify(pending) => {
                let ok = self.verify_signature(&pending);
                self.finish(pending, ok, req, now, cache)
            }
        }
    }

    /// What the host must do with `outcome` (see [`plan`]).
    pub fn plan(&self, outcome: &Outcome) -> Plan {
        plan::plan(&self.config, outcome)
    }

    /// The client address of `req` by the configured `client_ip` rule: the peer address,
    /// or the trusted entry of `X-Forwarded-For`. The IP filter and usage records both
    /// use this one answer.
    pub fn client_address(&self, req: &Request<'_>) -> Option<IpAddr> {
        let xff: Vec<&str> = match self.config.client_ip {
            config::ClientIpSource::Peer => Vec::new(),
            config::ClientIpSource::XForwardedFor { .. } => req
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
                .map(|(_, v)| v.as_str())
                .collect(),
        };
        ip::client_address(self.config.client_ip, req.source_address, &xff)
    }

    /// Starts a check whose signature step the host performs itself (WebCrypto in
    /// workerd, BoringSSL through Envoy's foreign function). Everything but the signature
    /// runs here, exactly as in [`Verifier::check`]: a cache hit, or a token refused before
    /// its signature matters, ends at once with [`Step::Done`].
    pub fn begin(&self, req: &Request<'_>, now: u64, cache: Option<&mut TokenCache>) -> Step {
        let found = match extract::extract(&self.config.token_sources, req.headers) {
            Ok(Some(f)) => f,
            Ok(None) => return Step::Done(self.early(Reason::TokenMissing, None)),
            Err(reason) => return Step::Done(self.early(reason, None)),
        };
        let token_header = found.header.to_string();
        if found.token.len() > self.config.max_token_bytes {
            return Step::Done(self.early(Reason::TokenTooLarge, Some(token_header)));
        }
        let miss = if cache.is_some() {
            CacheUse::Miss
        } else {
            CacheUse::NotUsed
        };
        if let Some(cache) = cache {
            if let Some(v) = cache.get(found.token, now) {
                let (decision, refresh) = self.authorize(&v, req, now);
                return Step::Done(Outcome {
                    decision,
                    token_header: Some(token_header),
                    cache: CacheUse::Hit,
                    subject: Some(Subject::of(&v)),
                    refresh,
                });
            }
        }
        match verify::prepare(&self.config, found.token) {
            Err(reason) => Step::Done(Outcome {
                decision: self.deny(reason, &[]),
                token_header: Some(token_header),
                cache: miss,
                subject: None,
                // A kid no key held has: the keys may have rotated since the last fetch.
                // (A token without a kid is refused the same way, but no keys can help.)
                refresh: (reason == Reason::KeyUnknown && verify::names_kid(found.token))
                    .then_some(Refresh::Keys),
            }),
            Ok(p) => {
                let alg = p.key().alg;
                let kid = p.key().kid.clone();
                let signing_input = p.signing_input().as_bytes().to_vec();
                let (signature, parsed) = p.into_parts();
                Step::Verify(SignatureRequest {
                    alg,
                    kid,
                    signing_input,
                    signature,
                    token: found.token.to_string(),
                    token_header,
                    parsed,
                })
            }
        }
    }

    /// Checks a pending signature in pure Rust (the same code [`Verifier::check`] runs):
    /// the fallback for hosts whose native crypto lacks the algorithm or is unavailable.
    pub fn verify_signature(&self, pending: &SignatureRequest) -> bool {
        match self.config.keys.get(&pending.kid) {
            Some(key) if key.alg == pending.alg => {
                verify::signature_ok(&key.material, &pending.signing_input, &pending.signature)
            }
            _ => false,
        }
    }

    /// The verification key a pending signature must be checked with.
    pub fn key_for(&self, pending: &SignatureRequest) -> Option<&jwks::Key> {
        self.config
            .keys
            .get(&pending.kid)
            .filter(|k| k.alg == pending.alg)
    }

    /// Completes a check started by [`Verifier::begin`] with the host's signature verdict.
    pub fn finish(
        &self,
        pending: SignatureRequest,
        signature_valid: bool,
        req: &Request<'_>,
        now: u64,
        cache: Option<&mut TokenCache>,
    ) -> Outcome {
        // `begin` selected the key from this verifier's keys; if they changed since (a sync
        // between the two calls), the verdict may be about a key no longer trusted.
        let key_kept = self.key_for(&pending).is_some();
        let verified = if key_kept {
            verify::verify_parsed(&self.config, &pending.parsed, signature_valid, now)
        } else if self.config.keys.is_empty() {
            Err(Reason::KeysUnavailable)
        } else {
            Err(Reason::KeyUnknown)
        }
        .map(Rc::new);
        let cache_use = if cache.is_some() {
            CacheUse::Miss
        } else {
            CacheUse::NotUsed
        };
        let (decision, subject, refresh) = match verified {
            Ok(v) => {
                if let Some(cache) = cache {
                    cache.insert(&pending.token, Rc::clone(&v));
                }
                let (decision, refresh) = self.authorize(&v, req, now);
                (decision, Some(Subject::of(&v)), refresh)
            }
            Err(reason) => (self.deny(reason, &[]), None, None),
        };
        Outcome {
            decision,
            token_header: Some(pending.token_header),
            cache: cache_use,
            subject,
            refresh,
        }
    }

    fn early(&self, reason: Reason, token_header: Option<String>) -> Outcome {
        Outcome {
            decision: self.deny(reason, &[]),
            token_header,
            cache: CacheUse::NotUsed,
            subject: None,
            refresh: None,
        }
    }

    /// The per-request checks on a verified token: time, status, address and scopes; and
    /// whether a fresher status list could change the decision (the token's index lies
    /// beyond the list held).
    fn authorize(
        &self,
        v: &VerifiedToken,
        req: &Request<'_>,
        now: u64,
    ) -> (Decision, Option<Refresh>) {
        let mut refresh = None;
        let decision = self.authorize_with(v, req, now, &mut refresh);
        (decision, refresh)
    }

    fn authorize_with(
        &self,
        v: &VerifiedToken,
        req: &Request<'_>,
        now: u64,
        refresh: &mut Option<Refresh>,
    ) -> Decision {
        let skew = self.config.clock_skew_secs;
        if now >= v.exp.saturating_add(skew) {
            return self.deny(Reason::Expired, &[]);
        }
        if let Some(nbf) = v.nbf {
            if now.saturating_add(skew) < nbf {
                return self.deny(Reason::NotYetValid, &[]);
            }
        }

        let mut status_fail_open = false;
        if let Some(s) = &v.status {
            let held = self
                .config
                .status_lists
                .iter()
                .find(|(uri, _)| *uri == s.uri)
                .map(|(_, list)| list);
            let known = held.and_then(|list| list.get(s.idx));
            // A list is held but ends before the token's index: a list fetched since the
            // token was minted would hold it.
            if held.is_some() && known.is_none() {
                *refresh = Some(Refresh::StatusList { uri: s.uri.clone() });
            }
            // A stale list still knows what it refused: revocation is final, and a
            // suspension is kept until a fresh list says otherwise. Only "valid" is no
            // longer trusted, so the fail policy decides those.
            let status = match known {
                Some(TokenStatus::Valid) if !self.status_fresh => None,
                other => other,
            };
            match status {
                Some(TokenStatus::Valid) => {}
                Some(TokenStatus::Suspended) => return self.deny(Reason::Suspended, &[]),
                Some(TokenStatus::Revoked) => return self.deny(Reason::Revoked, &[]),
                Some(TokenStatus::Rotated) => return self.deny(Reason::Rotated, &[]),
                None => match self.config.fail_policy {
                    FailPolicy::Closed => return self.deny(Reason::StatusUnavailable, &[]),
                    FailPolicy::Open => status_fail_open = true,
                },
            }
        }

        if !v.ip_allow.is_empty() {
            let client = self.client_address(req);
            let allowed = client.is_some_and(|c| v.ip_allow.iter().any(|cidr| cidr.contains(c)));
            if !allowed {
                return self.deny(Reason::IpNotAllowed, &[]);
            }
        }

        // What the catalogue withdrew from the token's index no longer counts.
        let (idx, withdrawn) = match &v.status {
            Some(s) => (Some(s.idx), self.withdrawn(&s.uri)),
            None => (None, None),
        };
        if let Some(rule) = routes::find(&self.config.routes, req.method, req.path) {
            if withdrawn::first_missing(&rule.scopes, &v.scopes, idx, withdrawn).is_some() {
                return self.deny(Reason::InsufficientScope, &rule.scopes);
            }
        }

        Decision::Allow(Identity {
            user: v.sub.clone(),
            username: v.username.clone(),
            org: v.org.clone(),
            token_id: v.jti.clone(),
            scopes: match withdrawn {
                Some(_) => withdrawn::held(&v.scopes, idx, withdrawn),
                None => v.scopes.clone(),
            },
            token_type: v.typ.clone(),
            parent: v.parent.clone(),
            expires_at: v.exp,
            status_fail_open,
        })
    }
}

// rsa links getrandom even though verification never draws a random
// number. On wasm32-unknown-unknown there is no entropy source; this backend refuses, so
// any accidental use fails instead of importing a host function.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod no_entropy {
    use core::num::NonZeroU32;

    fn refuse(_buf: &mut [u8]) -> Result<(), getrandom::Error> {
        // CUSTOM_START is the first code reserved for custom backends.
        match NonZeroU32::new(getrandom::Error::CUSTOM_START) {
            Some(code) => Err(getrandom::Error::from(code)),
            None => Err(getrandom::Error::UNSUPPORTED),
        }
    }
    getrandom::register_custom_getrandom!(refuse);
}
