//! The host-independent half of the edge worker: everything the worker decides, in plain
//! Rust (no JS types), so it is unit-tested natively and the wasm-bindgen layer in
//! `lib.rs` only converts values.
//!
//! What this adds to core is what Envoy does around the filter and what the filter does
//! with a decision:
//! - the client address is the `CF-Connecting-IP` value and nothing else, so a
//!   configuration that trusts `X-Forwarded-For` is refused;
//! - the path is normalised as Envoy's `normalize_path` + `merge_slashes` do before the
//!   filter runs (dot segments removed, slashes merged), and that path is forwarded;
//! - token-source headers that the runtime joined with `", "` (the Fetch API joins repeated
//!   header lines) are split again, so two different tokens stay `token_ambiguous`;
//! - the decision becomes core's [`Plan`] (the filter carries out the same one), and a
//!   decision about a verified token core's [`UsageRecord`];
//! - status lists and JWKS fetched by the entry are applied by core's rule
//!   ([`tessera_core::synced`]), as the filter applies what its sync service publishes,
//!   and status freshness follows `sync.max_staleness_secs` (see
//!   [`EdgeVerifier::status_fresh`]);
//! - rate limits (issue 25) per isolate, with the filter's lease protocol: what the filter
//!   keeps per Envoy process in shared data is kept here per isolate ([`RateLimits`]),
//!   and core decides ([`tessera_core::ratelimit::decide`]).

use std::collections::BTreeMap;

use serde_json::Value;
use tessera_core::config::ClientIpSource;
use tessera_core::ratelimit::{
    decide, decide_lost, needs_lease, refusal_reply, unleased, Contact, Holding, OrgMode,
    SpendReport, Step as Admission, UsageAnswer, MAX_REPORTED,
};
use tessera_core::synced::{status_list_document, withdrawn_document, SyncedKeys};
use tessera_core::{
    CacheUse, ConfigError, Decision, Identity, Outcome, Plan, Refresh, Reply, Request,
    SignatureRequest, Step, TokenCache, UsageRecord, Verifier,
};

/// The field named when a configuration's client address source cannot work at the edge.
pub const CLIENT_IP_FIELD: &str = "client_ip.source";

/// The field named when a configuration asks for Envoy-only usage reporting.
pub const SYNC_USAGE_FIELD: &str = "sync.usage";

/// Status-list staleness when the configuration has no `sync` section (the legacy
/// `TESSERA_STATUS_MAX_STALE_MS` default, 600 s).
pub const DEFAULT_MAX_STALENESS_SECS: u64 = 600;

/// One request's verdict: core's plan, the path to forward, and what the entry reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Forward (header edits) or reply.
    pub plan: Plan,
    /// The normalised path (with the query string) to request from the origin.
    pub path: String,
    /// Who the token belongs to, when allowed.
    pub identity: Option<Identity>,
    /// Cache participation (for logs and tests).
    pub cache: CacheUse,
    /// The usage record, for a decision about a token whose signature verified.
    pub usage: Option<UsageRecord>,
    /// Core's "refresh needed": the entry may fetch this (keys, or the status list at a
    /// uri) and decide again, once; `plan` is what stands if it does not.
    pub refresh: Option<Refresh>,
    /// For an allowed token: the API token whose rate limits it counts against (its own
    /// id, or the parent of an exchanged access token); see [`EdgeVerifier::rate_limit`].
    pub limit_token: Option<String>,
}

/// What the rate limit does with an allowed request ([`EdgeVerifier::rate_limit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateLimit {
    /// Forward it.
    Go,
    /// Answer this 429 (`rate_limited`); no usage record (refusals are counted).
    Refuse(Reply),
    /// The isolate holds no lease of the token: send a report at once (its `wanted`
    /// names the token), wait for the answer (at most the configuration's `max_wait_ms`), apply it,
    /// and ask again with `may_wait` false.
    Ask,
}

/// Rate limits at one isolate: what the Envoy filter keeps per process in shared data
/// (`filter/src/budget.rs`), kept per isolate, with the same report and answer.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// This isolate's id in its spend reports; `None` while it sends no usage reports
    /// (then no lease can come, and nothing is limited here).
    edge: Option<String>,
    /// What the isolate holds per token.
    holdings: BTreeMap<String, Holding>,
    /// From the last answer that carried it (`None`: no answer yet).
    mode: Option<OrgMode>,
    /// Tokens held nothing for that requests asked a lease of.
    wanted: Vec<String>,
    /// Tokens whose wait ran out, and until when (Unix ms) they are decided at once.
    gave_up: Vec<(String, u64)>,
    /// The isolate's contact with the control plane (the fallback when it is lost).
    contact: Contact,
    /// What the isolate decided, per outcome (the filter's `tessera.ratelimit.*` stats).
    counters: RateLimitCounters,
}

/// The isolate's rate-limit counters, as the filter's `tessera.ratelimit.*` stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitCounters {
    /// Counted in a budget and forwarded.
    pub admitted: u64,
    /// Refused: the budget (or the fallback's share) was spent.
    pub refused: u64,
    /// Paused to ask for a lease.
    pub asked: u64,
    /// Refused without a lease after the wait.
    pub unleased: u64,
    /// Decided on the local share while the control plane was lost.
    pub fallback: u64,
    /// Whether the control plane was lost at the last decision or report.
    pub lost: bool,
}

/// The most tokens an isolate holds something for (beyond, the marks of unlimited tokens
/// are forgotten first).
pub const MAX_HOLDINGS: usize = 4096;
/// How long after a token's wait ran out its requests are decided without waiting.
pub const GAVE_UP_MS: u64 = 5_000;

/// The first half of a two-phase check ([`EdgeVerifier::begin`]).
#[derive(Debug)]
pub enum Begun {
    /// Decided without the host's signature check (cache hit, or refused earlier).
    Done(Verdict),
    /// The host verifies this signature (WebCrypto), then calls [`EdgeVerifier::finish`].
    Verify(Pending),
}

/// A check waiting for the host's signature verdict: the signature to verify and the
/// request it belongs to.
#[derive(Debug)]
pub struct Pending {
    signature: SignatureRequest,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    client_ip: Option<String>,
    now: u64,
}

impl Pending {
    /// What to verify: algorithm, key id, signing input and signature.
    pub fn signature(&self) -> &SignatureRequest {
        &self.signature
    }

    /// The `CF-Connecting-IP` value the check was started with.
    pub fn client_ip(&self) -> Option<&str> {
        self.client_ip.as_deref()
    }
}

/// A verifier with its per-isolate token cache, and what the entry fetched for it.
pub struct EdgeVerifier {
    verifier: Verifier,
    cache: TokenCache,
    /// The configuration's own `jwks.keys` (public JWK objects), which win over fetched
    /// keys with the same `kid`, as in core.
    inline_jwks: Vec<Value>,
    /// Fetched JWKS documents, applied by core's rule.
    jwks: SyncedKeys,
    /// `kid` → the public JWK (JSON text) of every key in force, for the host's WebCrypto.
    keys_in_force: Vec<(String, String)>,
    /// Fetched status lists: `uri` → Unix time of the last successful fetch or
    /// revalidation (`None` before the first).
    lists: Vec<(String, Option<u64>)>,
    /// Staleness without a `sync` section.
    default_max_staleness_secs: u64,
    /// Rate limits (issue 25).
    limits: RateLimits,
}

impl EdgeVerifier {
    /// Parses and validates the configuration (the filter's schema). Besides everything
    /// core refuses, `client_ip.source: "x_forwarded_for"` is refused: at the edge the
    /// client address is `CF-Connecting-IP`, which the edge itself sets.
    pub fn from_config_json(json: &str) -> Result<EdgeVerifier, ConfigError> {
        let verifier = Verifier::from_config_json(json)?;
        if let ClientIpSource::XForwardedFor { .. } = verifier.config().client_ip {
            return Err(ConfigError {
                field: CLIENT_IP_FIELD.into(),
                message: "\"x_forwarded_for\" is not supported by the edge worker: the client \
                          address is always CF-Connecting-IP; use \"peer\" (the default)"
                    .into(),
            });
        }
        if verifier
            .config()
            .sync
            .as_ref()
            .is_some_and(|s| s.usage.is_some())
        {
            return Err(ConfigError {
                field: SYNC_USAGE_FIELD.into(),
                message: "is Envoy-only (it names an Envoy cluster); the edge worker sends \
                          usage reports to TESSERA_USAGE_URL with TESSERA_USAGE_TOKEN: remove \
                          sync.usage and set those bindings"
                    .into(),
            });
        }
        // Core has validated the document; keep its inline keys as JSON for WebCrypto.
        let inline_jwks = serde_json::from_str::<Value>(json)
            .ok()
            .and_then(|doc| doc.pointer("/jwks/keys").and_then(Value::as_array).cloned())
            .unwrap_or_default();
        let cache = verifier.new_cache();
        let mut edge = EdgeVerifier {
            verifier,
            cache,
            inline_jwks,
            jwks: SyncedKeys::default(),
            keys_in_force: Vec::new(),
            lists: Vec::new(),
            default_max_staleness_secs: DEFAULT_MAX_STALENESS_SECS,
            limits: RateLimits::default(),
        };
        edge.rebuild_keys();
        Ok(edge)
    }

    /// The verifier (configuration in force).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Declares that the list published at `uri` is fetched by the host, at `now`: its
    /// freshness counts from now on (see [`EdgeVerifier::status_fresh`]). Without a
    /// `sync` section, a list the configuration carries inline counts as fetched now
    /// (the old behaviour: inline lists serve until the fetched one arrives); with one,
    /// nothing is fresh before the first fetch, as in the filter.
    pub fn track_status_list(&mut self, uri: &str, now: u64) {
        if self.lists.iter().any(|(u, _)| u == uri) {
            return;
        }
        let config = self.verifier.config();
        let inline = config.sync.is_none() && config.status_lists.iter().any(|(u, _)| u == uri);
        self.lists.push((uri.to_owned(), inline.then_some(now)));
    }

    /// Replaces the status list published at `uri` with the JSON document `text`
    /// (`{"bits": 2, "lst": "<base64url(zlib(bytes))>"}`, other members ignored), fetched
    /// at `now`. A refused document changes nothing (the old list and its age stay).
    pub fn set_status_list_json(
        &mut self,
        uri: &str,
        text: &str,
        now: u64,
    ) -> Result<usize, String> {
        let list = status_list_document(text).map_err(|e| format!("status list {uri}: {e}"))?;
        // The scopes withdrawn from its tokens come in the same document; a bad member
        // refuses the whole document, so the last good list and narrowing stay together.
        let withdrawn = withdrawn_document(text).map_err(|e| format!("status list {uri}: {e}"))?;
        let len = list.len();
        self.verifier.set_status_list(uri, list);
        self.verifier.set_withdrawn(uri, withdrawn);
        self.mark_list(uri, now);
        Ok(len)
    }

    /// The host revalidated the list at `uri` at `now` and it has not changed (`304`).
    /// Returns false (and changes nothing) if no list was fetched for `uri` yet.
    pub fn status_list_unchanged(&mut self, uri: &str, now: u64) -> bool {
        match self.lists.iter_mut().find(|(u, _)| u == uri) {
            Some((_, at @ Some(_))) => {
                *at = Some(now);
                true
            }
            _ => false,
        }
    }

    fn mark_list(&mut self, uri: &str, now: u64) {
        match self.lists.iter_mut().find(|(u, _)| u == uri) {
            Some((_, at)) => *at = Some(now),
            None => self.lists.push((uri.to_owned(), Some(now))),
        }
    }

    /// Sets the staleness bound used when the configuration has no `sync` section
    /// (`TESSERA_STATUS_MAX_STALE_MS`); with one, `sync.max_staleness_secs` rules.
    pub fn set_default_max_staleness_secs(&mut self, secs: u64) {
        self.default_max_staleness_secs = secs;
    }

    /// `sync.max_staleness_secs`, or the default without a `sync` section.
    pub fn max_staleness_secs(&self) -> u64 {
        self.verifier
            .config()
            .sync
            .as_ref()
            .map_or(self.default_max_staleness_secs, |s| s.max_staleness_secs)
    }

    /// The longest a request waits for a refresh or a rate-limit lease, milliseconds (the
    /// configuration's `max_wait_ms`).
    pub fn max_wait_ms(&self) -> u64 {
        self.verifier().config().max_wait_ms
    }

    /// Whether the fetched status lists are current at `now`, by the filter's rule: the
    /// oldest last success is at most `max_staleness_secs` old, and every list has had
    /// one. With no fetched lists there is nothing to go stale (the filter's sync with
    /// keys only). While stale, core keeps refusing what the last lists revoked or
    /// suspended and `status.fail_policy` decides the rest.
    pub fn status_fresh(&self, now: u64) -> bool {
        let max = self.max_staleness_secs();
        self.lists
            .iter()
            .all(|(_, at)| at.is_some_and(|t| now.saturating_sub(t) <= max))
    }

    /// Declares that the JWKS at `url` is fetched by the host, so the union of fetched
    /// sets keeps the order of declaration (the first set's key wins on a `kid` clash,
    /// as in the filter's `jwks_urls`).
    pub fn track_jwks(&mut self, url: &str) {
        self.jwks.track(url);
    }

    /// Replaces the JWKS fetched from `url` with the document `text`, validated as core
    /// validates the configuration's `jwks`. The keys in force become the configuration's
    /// plus the union of every fetched set, and the token cache is cleared. A refused
    /// document changes nothing (the previous keys stay). Returns the keys in force.
    pub fn set_jwks_json(&mut self, url: &str, text: &str) -> Result<usize, String> {
        if self.jwks.apply(&mut self.verifier, url, text)? {
            self.cache.clear();
            self.rebuild_keys();
        }
        Ok(self.verifier.config().keys.len())
    }

    /// The public JWK (JSON text) of the key in force with this `kid`: the one core
    /// verifies with, so the host's WebCrypto uses exactly the same key.
    pub fn key_jwk(&self, kid: &str) -> Option<&str> {
        self.keys_in_force
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, jwk)| jwk.as_str())
    }

    /// Recomputes `keys_in_force` by core's rule: configured keys, then each fetched set
    /// in order, a `kid` already present winning.
    fn rebuild_keys(&mut self) {
        let fetched: Vec<Value> = self
            .jwks
            .documents()
            .filter_map(|text| serde_json::from_str::<Value>(text).ok())
            .filter_map(|doc| doc.get("keys").and_then(Value::as_array).cloned())
            .flatten()
            .collect();
        let mut out: Vec<(String, String)> = Vec::new();
        for jwk in self.inline_jwks.iter().chain(fetched.iter()) {
            let Some(kid) = jwk.get("kid").and_then(Value::as_str) else {
                continue;
            };
            if out.iter().any(|(k, _)| k == kid) || self.verifier.config().keys.get(kid).is_none() {
                continue;
            }
            out.push((kid.to_owned(), jwk.to_string()));
        }
        self.keys_in_force = out;
    }

    /// Decides one request at `now` (Unix seconds), signature included (pure Rust).
    /// `headers` are as the runtime lists them; `cf_connecting_ip` is the
    /// `CF-Connecting-IP` value, if any.
    pub fn check(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        cf_connecting_ip: Option<&str>,
        now: u64,
    ) -> Verdict {
        self.verifier.set_status_fresh(self.status_fresh(now));
        let path = normalize_path(path);
        let headers = split_joined_token_headers(self.verifier.config(), headers);
        let request = Request {
            method,
            path: &path,
            headers: &headers,
            source_address: cf_connecting_ip,
        };
        let outcome = self.verifier.check(&request, now, Some(&mut self.cache));
        self.verdict(outcome, &request, now)
    }

    /// Like [`EdgeVerifier::check`], but stops before the signature check, which the host
    /// performs (WebCrypto) and reports to [`EdgeVerifier::finish`]. Requests decided
    /// without it (cache hits, tokens refused earlier) are [`Begun::Done`] at once.
    pub fn begin(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        cf_connecting_ip: Option<&str>,
        now: u64,
    ) -> Begun {
        self.verifier.set_status_fresh(self.status_fresh(now));
        let path = normalize_path(path);
        let headers = split_joined_token_headers(self.verifier.config(), headers);
        let request = Request {
            method,
            path: &path,
            headers: &headers,
            source_address: cf_connecting_ip,
        };
        match self.verifier.begin(&request, now, Some(&mut self.cache)) {
            Step::Done(outcome) => Begun::Done(self.verdict(outcome, &request, now)),
            Step::Verify(signature) => Begun::Verify(Pending {
                signature,
                method: method.to_owned(),
                path,
                headers,
                client_ip: cf_connecting_ip.map(str::to_owned),
                now,
            }),
        }
    }

    /// Completes a check started by [`EdgeVerifier::begin`] with the host's verdict on the
    /// signature. A negative verdict is confirmed by core's own check of the same
    /// signature, so a token the host's crypto refuses for a reason of its own is decided
    /// exactly as the Envoy filter decides it. Valid signatures, the common case, are never
    /// checked twice.
    pub fn finish(&mut self, pending: Pending, signature_valid: bool) -> Verdict {
        let Pending {
            signature,
            method,
            path,
            headers,
            client_ip,
            now,
        } = pending;
        self.verifier.set_status_fresh(self.status_fresh(now));
        let request = Request {
            method: &method,
            path: &path,
            headers: &headers,
            source_address: client_ip.as_deref(),
        };
        let valid = signature_valid || self.verifier.verify_signature(&signature);
        let outcome = self
            .verifier
            .finish(signature, valid, &request, now, Some(&mut self.cache));
        self.verdict(outcome, &request, now)
    }

    /// Core's plan and usage record for `outcome`.
    fn verdict(&self, outcome: Outcome, request: &Request<'_>, now: u64) -> Verdict {
        let client = self.verifier.client_address(request);
        let usage = UsageRecord::of(&outcome, request, client, now);
        let plan = self.verifier.plan(&outcome);
        let identity = match outcome.decision {
            Decision::Allow(identity) => Some(identity),
            Decision::Deny(_) => None,
        };
        let limit_token = identity
            .as_ref()
            .map(|i| i.parent.as_ref().unwrap_or(&i.token_id).clone());
        Verdict {
            plan,
            path: request.path.to_owned(),
            identity,
            cache: outcome.cache,
            usage,
            refresh: outcome.refresh,
            limit_token,
        }
    }

    /// Turns rate limiting on: this isolate sends usage reports, as `edge` (an id unique
    /// to the isolate, at most 64 characters) in their `spend`.
    pub fn enable_rate_limits(&mut self, edge: &str) {
        self.limits.edge = Some(edge.chars().take(64).collect());
    }

    /// The rate-limit decision for an allowed request of `token` (a verdict's
    /// `limit_token`) at `now_ms`, by the filter's rules: within the budget the isolate
    /// holds; a token it holds nothing for (in an org that limits tokens, or before the
    /// first answer) asks for a lease, and is refused 429 after the wait (`may_wait`
    /// false) unless the isolate never got an answer at all.
    pub fn rate_limit(&mut self, token: &str, now_ms: u64, may_wait: bool) -> RateLimit {
        let fallback = self.verifier.config().rate_limits;
        let l = &mut self.limits;
        if l.edge.is_none() {
            return RateLimit::Go;
        }
        let mode = l.mode.unwrap_or(OrgMode::Unknown);
        let mut step = decide(l.holdings.get_mut(token), mode, now_ms);
        l.counters.lost = l.contact.lost(now_ms, fallback.fallback_after_ms);
        if step == Admission::Ask && l.counters.lost {
            // No lease can come: the local share decides.
            let edges = l.contact.edges(fallback.fallback_edges);
            step = decide_lost(l.holdings.get_mut(token), now_ms, edges);
            l.counters.fallback += 1;
        }
        match step {
            Admission::Pass => RateLimit::Go,
            Admission::Admitted => {
                l.counters.admitted += 1;
                RateLimit::Go
            }
            Admission::Refused(r) => match l.holdings.get(token) {
                Some(Holding::Budget(b)) => {
                    l.counters.refused += 1;
                    RateLimit::Refuse(refusal_reply(b, &r, now_ms))
                }
                _ => RateLimit::Go,
            },
            Admission::Ask => {
                if !l.wanted.iter().any(|t| t == token) && l.wanted.len() < MAX_REPORTED {
                    l.wanted.push(token.to_owned());
                }
                l.gave_up.retain(|(_, until)| *until > now_ms);
                let gave_up = l.gave_up.iter().any(|(t, _)| t == token);
                if may_wait && !gave_up {
                    l.counters.asked += 1;
                    return RateLimit::Ask;
                }
                if !may_wait && !gave_up && l.gave_up.len() < MAX_REPORTED {
                    l.gave_up
                        .push((token.to_owned(), now_ms.saturating_add(GAVE_UP_MS)));
                }
                match unleased(mode) {
                    None => RateLimit::Go,
                    Some(reply) => {
                        l.counters.unleased += 1;
                        RateLimit::Refuse(reply)
                    }
                }
            }
        }
    }

    /// The isolate's rate-limit counters (and whether the control plane is lost at
    /// `now_ms`).
    pub fn rate_limit_counters(&mut self, now_ms: u64) -> RateLimitCounters {
        let after = self.verifier.config().rate_limits.fallback_after_ms;
        self.limits.counters.lost = self.limits.contact.lost(now_ms, after);
        self.limits.counters
    }

    /// Whether the isolate has tokens to ask leases of (a report should go now).
    pub fn asking(&self) -> bool {
        !self.limits.wanted.is_empty()
    }

    /// Whether a request of `token` would still ask for a lease ([`RateLimit::Ask`]),
    /// without deciding anything: the entry waits while this holds (bounded).
    pub fn lease_pending(&self, token: &str, now_ms: u64) -> bool {
        let l = &self.limits;
        let after = self.verifier.config().rate_limits.fallback_after_ms;
        l.edge.is_some()
            && !l.contact.lost(now_ms, after)
            && needs_lease(
                l.holdings.get(token),
                l.mode.unwrap_or(OrgMode::Unknown),
                now_ms,
            )
    }

    /// The `spend` member of the next usage batch (JSON), or `None` while rate limiting
    /// is off: per token held as a budget, what was admitted and refused in the latest
    /// windows; budgets with nothing counted and the tokens asked for under `wanted`.
    pub fn spend_report(&mut self, now_ms: u64) -> Option<String> {
        let l = &mut self.limits;
        let edge = l.edge.clone()?;
        l.contact.sent(now_ms);
        let mut report = SpendReport {
            edge,
            tokens: Vec::new(),
            wanted: Vec::new(),
        };
        for (id, h) in &l.holdings {
            if let Holding::Budget(b) = h {
                let spend = b.spend(id);
                if spend.is_empty() {
                    report.wanted.push(id.clone());
                } else if report.tokens.len() + spend.len() <= MAX_REPORTED {
                    report.tokens.extend(spend);
                }
            }
        }
        for id in std::mem::take(&mut l.wanted) {
            if !report.wanted.contains(&id) {
                report.wanted.push(id);
            }
        }
        report.wanted.truncate(MAX_REPORTED);
        let mut json = String::new();
        report.write_json(&mut json);
        Some(json)
    }

    /// Merges the 2xx answer to a batch that carried `spend` (the control plane's JSON):
    /// its leases into the budgets, `unlimited` tokens marked so, the org's mode. Returns
    /// the leases merged, or an error when it is unreadable — then, as for an answer that
    /// does not say `limited`, no lease will come from that control plane and no token is
    /// limited here ([`UsageAnswer::of_report`]).
    pub fn apply_usage_answer(&mut self, text: &str, now_ms: u64) -> Result<usize, String> {
        let (answer, readable) = UsageAnswer::of_report(text.as_bytes());
        let l = &mut self.limits;
        l.contact.answered(now_ms, answer.edges);
        l.mode = Some(answer.org_mode());
        if !readable {
            return Err(
                "the usage answer carries no readable leases; no token is limited".to_string(),
            );
        }
        if l.holdings.len() >= MAX_HOLDINGS {
            l.holdings.retain(|_, h| !matches!(h, Holding::Unlimited));
        }
        let mut merged = 0;
        for g in &answer.leases {
            let Some(lease) = g.lease() else { continue };
            if l.holdings.len() >= MAX_HOLDINGS && !l.holdings.contains_key(&g.token_id) {
                continue;
            }
            l.holdings
                .entry(g.token_id.clone())
                .or_insert_with(|| Holding::Budget(Default::default()))
                .grant(lease, now_ms);
            merged += 1;
        }
        for id in answer.unlimited {
            if l.holdings.len() < MAX_HOLDINGS || l.holdings.contains_key(&id) {
                l.holdings.insert(id, Holding::Unlimited);
            }
        }
        Ok(merged)
    }
}

/// The path as Envoy's `normalize_path: true` and `merge_slashes: true` give it to the
/// filter: percent-encoded unreserved characters decoded (RFC 3986 §6.2.2.2, so `%61dmin`
/// is `admin` and `%2e%2e` is `..`), runs of `/` merged, `.` and `..` segments removed
/// (never above the root). Other escapes (`%2F`, `%20`, ...) stay as they are; the query
/// string is kept as it is. A path that does not start with `/` gets one.
pub fn normalize_path(path: &str) -> String {
    let (path, query) = match path.find('?') {
        Some(i) => path.split_at(i),
        None => (path, ""),
    };
    let path = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/') {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                out.pop();
                trailing_slash = true;
            }
            s => out.push(s),
        }
    }
    let mut normalized = String::with_capacity(path.len() + query.len() + 1);
    for s in &out {
        normalized.push('/');
        normalized.push_str(s);
    }
    if normalized.is_empty() || trailing_slash {
        normalized.push('/');
    }
    normalized.push_str(query);
    normalized
}

/// Decodes `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`); every other
/// escape, and every malformed `%`, is kept as written.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = char::from((h * 16 + l) as u8);
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') {
                    out.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        // Copy one whole character (the path may hold raw non-ASCII text).
        let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Splits the values of token-source headers at commas. The Fetch API joins repeated
/// header lines into one value with `", "`; a token (a compact JWS) never contains a
/// comma, so every part is one original line and core sees what Envoy would show it.
pub fn split_joined_token_headers(
    config: &tessera_core::Config,
    headers: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let is_source = config
            .token_sources
            .iter()
            .any(|s| s.header.eq_ignore_ascii_case(name));
        if is_source && value.contains(',') {
            for part in value.split(',') {
                out.push((name.clone(), part.trim().to_string()));
            }
        } else {
            out.push((name.clone(), value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use tessera_testkit::{
        jwks, now, status_list_json, status_list_lst, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE,
        DEFAULT_ISSUER, DEFAULT_STATUS_URI,
    };

    fn config(key: &TestKey, extra: Value) -> String {
        let mut c = json!({
            "issuers": [DEFAULT_ISSUER],
            "audiences": [DEFAULT_AUDIENCE],
            "jwks": jwks(&[key]),
            "routes": [{"path_prefix": "/admin", "scopes": ["admin"]}],
            "status": {"lists": [status_list_json(DEFAULT_STATUS_URI, &[0, 1, 2, 0])]},
        });
        if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
            c.extend(extra);
        }
        c.to_string()
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn reason(v: &Verdict) -> Option<&'static str> {
        match &v.plan {
            Plan::Forward { .. } => None,
            Plan::Reply(r) => Some(r.reason.as_str()),
        }
    }

    #[test]
    fn rate_limits_follow_the_leases_an_isolate_is_answered() {
        // The filter's protocol per isolate: a token held nothing for asks, the answer's
        // lease admits up to its allowance, then 429 with the draft's fields; the spend
        // report names what was admitted and refused.
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut edge = EdgeVerifier::from_config_json(&config(&key, json!({}))).unwrap();
        let token = TokenBuilder::new(now())
            .claim("jti", "tok_w")
            .status_idx(0)
            .sign(&key);
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        let v = edge.check("GET", "/x", &h, None, now());
        assert_eq!(v.limit_token.as_deref(), Some("tok_w"));
        let now_ms = now() * 1000;
        // Without usage reports nothing is limited here.
        assert_eq!(edge.rate_limit("tok_w", now_ms, true), RateLimit::Go);
        assert_eq!(edge.spend_report(now_ms), None);
        edge.enable_rate_limits("workerd-1");
        assert!(edge.lease_pending("tok_w", now_ms));
        assert_eq!(edge.rate_limit("tok_w", now_ms, true), RateLimit::Ask);
        let report: Value = serde_json::from_str(&edge.spend_report(now_ms).unwrap()).unwrap();
        assert_eq!(report["edge"], "workerd-1");
        assert_eq!(report["wanted"], json!(["tok_w"]));
        let minute = now_ms / 60_000;
        let answer = json!({"accepted": 0, "unknown_tokens": [], "limited": true,
            "leases": [{"token_id": "tok_w", "window": "per_minute", "first": minute,
                        "last": minute + 1, "per_window": 2, "limit": 9}],
            "unlimited": ["tok_free"]});
        assert_eq!(edge.apply_usage_answer(&answer.to_string(), now_ms), Ok(1));
        assert!(!edge.lease_pending("tok_w", now_ms));
        assert!(!edge.lease_pending("tok_free", now_ms));
        assert_eq!(edge.rate_limit("tok_w", now_ms, false), RateLimit::Go);
        assert_eq!(edge.rate_limit("tok_w", now_ms, false), RateLimit::Go);
        let RateLimit::Refuse(reply) = edge.rate_limit("tok_w", now_ms, false) else {
            panic!("admitted past the lease");
        };
        assert_eq!((reply.status, reply.reason.as_str()), (429, "rate_limited"));
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| *k == "ratelimit-policy" && v == "\"per_minute\";q=9;w=60"));
        assert_eq!(edge.rate_limit("tok_free", now_ms, true), RateLimit::Go);
        let report: Value = serde_json::from_str(&edge.spend_report(now_ms).unwrap()).unwrap();
        assert_eq!(
            report["tokens"],
            json!([{"token_id": "tok_w", "window": "per_minute", "index": minute,
                    "admitted": 2, "refused": 1}])
        );
        // A token still without a lease after its wait: refused, then decided at once.
        assert_eq!(edge.rate_limit("tok_new", now_ms, true), RateLimit::Ask);
        assert!(matches!(
            edge.rate_limit("tok_new", now_ms, false),
            RateLimit::Refuse(_)
        ));
        assert!(matches!(
            edge.rate_limit("tok_new", now_ms + 10, true),
            RateLimit::Refuse(_)
        ));
        // A control plane that grants no leases (its answer does not say `limited`, or
        // cannot be read): nothing is limited any more for tokens held nothing for.
        assert!(edge.apply_usage_answer("not json", now_ms).is_err());
        assert!(!edge.lease_pending("tok_other", now_ms));
        assert_eq!(edge.rate_limit("tok_other", now_ms, true), RateLimit::Go);
    }

    #[test]
    fn a_lost_control_plane_turns_asks_into_the_local_share() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let doc = config(&key, json!({"sync": {"fallback_after_ms": 500}}));
        let mut edge = EdgeVerifier::from_config_json(&doc).unwrap();
        edge.enable_rate_limits("workerd-1");
        let t0 = now() * 1000;
        let minute = t0 / 60_000;
        assert!(edge.spend_report(t0).is_some());
        let answer = json!({"accepted": 0, "unknown_tokens": [], "limited": true, "edges": 5,
            "leases": [{"token_id": "tok_w", "window": "per_minute", "first": minute,
                        "last": minute, "per_window": 1, "limit": 20}]});
        assert_eq!(edge.apply_usage_answer(&answer.to_string(), t0), Ok(1));
        // The next minute has no lease: ask, and the report goes unanswered.
        let next = (minute + 1) * 60_000;
        assert_eq!(edge.rate_limit("tok_w", next, true), RateLimit::Ask);
        assert!(edge.spend_report(next).is_some());
        assert!(edge.lease_pending("tok_w", next + 199));
        assert!(!edge.rate_limit_counters(next + 199).lost);
        // Lost: no waiting, 20 ÷ 5 edges admitted, then refused; unknown tokens pass.
        let at = next + 200;
        assert!(!edge.lease_pending("tok_w", at));
        for _ in 0..4 {
            assert_eq!(edge.rate_limit("tok_w", at, true), RateLimit::Go);
        }
        assert!(matches!(
            edge.rate_limit("tok_w", at, true),
            RateLimit::Refuse(_)
        ));
        assert_eq!(edge.rate_limit("tok_other", at, true), RateLimit::Go);
        let c = edge.rate_limit_counters(at);
        assert_eq!(
            (c.lost, c.fallback, c.admitted, c.refused, c.asked),
            (true, 6, 4, 1, 1)
        );
        // Answered again: its leases rule.
        let again = json!({"accepted": 0, "unknown_tokens": [], "limited": true,
            "leases": [{"token_id": "tok_w", "window": "per_minute", "first": minute + 1,
                        "last": minute + 2, "per_window": 5, "limit": 20}]});
        assert_eq!(edge.apply_usage_answer(&again.to_string(), at + 50), Ok(1));
        assert!(!edge.rate_limit_counters(at + 50).lost);
        assert_eq!(edge.rate_limit("tok_w", at + 50, true), RateLimit::Go);
        assert!(matches!(
            edge.rate_limit("tok_w", at + 50, true),
            RateLimit::Refuse(_)
        ));
        assert_eq!(edge.rate_limit_counters(at + 50).fallback, 6);
    }

    #[test]
    fn x_forwarded_for_is_refused_naming_the_field() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let json = config(
            &key,
            json!({"client_ip": {"source": "x_forwarded_for", "trusted_hops": 1}}),
        );
        let err = EdgeVerifier::from_config_json(&json).err().map(|e| e.field);
        assert_eq!(err.as_deref(), Some("client_ip.source"));
        // Core's own errors come through unchanged, field and all.
        let err = EdgeVerifier::from_config_json(&config(&key, json!({"cache_size": -1})))
            .err()
            .map(|e| e.field);
        assert_eq!(err.as_deref(), Some("cache_size"));
        assert!(EdgeVerifier::from_config_json(&config(
            &key,
            json!({"client_ip": {"source": "peer"}})
        ))
        .is_ok());
    }

    #[test]
    fn allow_strips_then_adds_and_forwards_the_normalised_path() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut edge = EdgeVerifier::from_config_json(&config(&key, json!({}))).unwrap();
        let token = TokenBuilder::new(now()).sign(&key);
        let v = edge.check(
            "GET",
            "//api/./v1/../things?x=//y",
            &headers(&[("authorization", &format!("Bearer {token}"))]),
            None,
            now(),
        );
        assert_eq!(v.path, "/api/things?x=//y");
        assert_eq!(
            v.identity.as_ref().map(|i| i.token_id.as_str()),
            Some("tok_1")
        );
        match &v.plan {
            Plan::Forward { set, remove } => {
                // The username is not sent by default: the client's copy is removed.
                assert_eq!(remove, &["x-tessera-username"]);
                assert_eq!(set[0], ("x-tessera-user".into(), "alice".into()));
                assert_eq!(set[3], ("x-tessera-scopes".into(), "read".into()));
            }
            other => panic!("{other:?}"),
        }
        // The usage record carries the normalised path, without the query.
        assert_eq!(v.usage.map(|u| u.path), Some("/api/things".to_string()));
        assert_eq!(v.cache, CacheUse::Miss);
    }

    /// The wait bound the worker's JS reads (`refresh_wait_ms()`) is the configuration's
    /// `max_wait_ms`, default core's `REFRESH_WAIT_MS`; out of range is refused naming it.
    #[test]
    fn the_wait_bound_is_the_configured_max_wait_ms() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let default = EdgeVerifier::from_config_json(&config(&key, json!({}))).unwrap();
        assert_eq!(default.max_wait_ms(), tessera_core::REFRESH_WAIT_MS);
        let set = EdgeVerifier::from_config_json(&config(&key, json!({"max_wait_ms": 300})));
        assert_eq!(set.unwrap().max_wait_ms(), 300);
        match EdgeVerifier::from_config_json(&config(&key, json!({"max_wait_ms": 20_000}))) {
            Ok(_) => panic!("max_wait_ms 20000 accepted"),
            Err(e) => assert!(e.to_string().starts_with("max_wait_ms: "), "{e}"),
        }
    }

    #[test]
    fn the_isolate_cache_is_kept_between_requests() {
        let key = TestKey::generate(Alg::ES256, "k");
        let mut edge = EdgeVerifier::from_config_json(&config(&key, json!({}))).unwrap();
        let token = TokenBuilder::new(now()).sign(&key);
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        let first = edge.check("GET", "/", &h, None, now());
        let second = edge.check("GET", "/", &h, None, now());
        assert_eq!((first.cache, second.cache), (CacheUse::Miss, CacheUse::Hit));
        assert_eq!(reason(&second), None);
    }

    #[test]
    fn dot_segments_and_double_slashes_cannot_sidestep_a_route() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut edge = EdgeVerifier::from_config_json(&config(&key, json!({}))).unwrap();
        let token = TokenBuilder::new(now()).sign(&key);
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        for path in ["/admin", "//admin//users", "/public/../admin/x", "/./admin"] {
            let v = edge.check("GET", path, &h, None, now());
            assert_eq!(reason(&v), Some("insufficient_scope"), "{path}");
        }
    }

    #[test]
    fn joined_token_headers_are_split_again() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut edge = EdgeVerifier::from_config_json(&config(&key, json!({}))).unwrap();
        let a = TokenBuilder::new(now()).sign(&key);
        let b = TokenBuilder::new(now()).claim("jti", "tok_2").sign(&key);
        let joined = |x: &str, y: &str| format!("Bearer {x}, Bearer {y}");
        let v = edge.check(
            "GET",
            "/",
            &headers(&[("authorization", &joined(&a, &b))]),
            None,
            now(),
        );
        assert_eq!(reason(&v), Some("token_ambiguous"));
        let v = edge.check(
            "GET",
            "/",
            &headers(&[("authorization", &joined(&a, &a))]),
            None,
            now(),
        );
        assert_eq!(reason(&v), None);
    }

    #[test]
    fn client_address_is_cf_connecting_ip_only() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut edge = EdgeVerifier::from_config_json(&config(&key, json!({}))).unwrap();
        let token = TokenBuilder::new(now())
            .claim("ip_allow", json!(["203.0.113.0/24"]))
            .sign(&key);
        let auth = format!("Bearer {token}");
        let with = |xff: &str| headers(&[("authorization", &auth), ("x-forwarded-for", xff)]);
        let ok = edge.check(
            "GET",
            "/",
            &with("198.51.100.1"),
            Some("203.0.113.9"),
            now(),
        );
        assert_eq!(reason(&ok), None);
        let spoofed = edge.check(
            "GET",
            "/",
            &with("203.0.113.9"),
            Some("198.51.100.1"),
            now(),
        );
        assert_eq!(reason(&spoofed), Some("ip_not_allowed"));
        let unknown = edge.check("GET", "/", &with("203.0.113.9"), None, now());
        assert_eq!(reason(&unknown), Some("ip_not_allowed"));
        let v6 = edge.check("GET", "/", &with(""), Some("2001:db8::1"), now());
        assert_eq!(reason(&v6), Some("ip_not_allowed"));
    }

    #[test]
    fn refresh_needed_reaches_the_entry_for_both_signature_paths() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let rotated = TestKey::generate(Alg::EdDSA, "rotated");
        let uri = "https://cp.test/v1/orgs/acme/status-list";
        let mut edge = EdgeVerifier::from_config_json(&config(
            &key,
            json!({"status": {"fail_policy": "closed"}}),
        ))
        .unwrap();
        let doc = |s: &[u8]| json!({"bits": 2, "lst": status_list_lst(s)}).to_string();
        edge.set_status_list_json(uri, &doc(&[0, 0, 0, 0]), now())
            .unwrap();
        let fresh = TokenBuilder::new(now()).status(6, uri).sign(&key);
        let new_key = TokenBuilder::new(now()).status(0, uri).sign(&rotated);
        let h = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
        let two_phase =
            |edge: &mut EdgeVerifier, t: &str| match edge.begin("GET", "/", &h(t), None, now()) {
                Begun::Done(v) => v,
                Begun::Verify(p) => edge.finish(p, true),
            };
        let list = Some(Refresh::StatusList { uri: uri.into() });
        for v in [
            edge.check("GET", "/", &h(&fresh), None, now()),
            two_phase(&mut edge, &fresh),
        ] {
            assert_eq!(reason(&v), Some("status_unavailable"));
            assert_eq!(v.refresh, list);
        }
        for v in [
            edge.check("GET", "/", &h(&new_key), None, now()),
            two_phase(&mut edge, &new_key),
        ] {
            assert_eq!(reason(&v), Some("key_unknown"));
            assert_eq!(v.refresh, Some(Refresh::Keys));
        }
        // Fetched: decided, nothing more to fetch.
        edge.set_status_list_json(uri, &doc(&[0; 8]), now())
            .unwrap();
        edge.track_jwks("https://cp.test/jwks.json");
        edge.set_jwks_json("https://cp.test/jwks.json", &jwks(&[&rotated]).to_string())
            .unwrap();
        for t in [&fresh, &new_key] {
            let v = two_phase(&mut edge, t);
            assert_eq!(reason(&v), None);
            assert_eq!(v.refresh, None);
        }
    }

    #[test]
    fn status_lists_are_replaced_and_refused_documents_change_nothing() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let uri = "https://cp.test/v1/orgs/acme/status-list";
        let mut edge = EdgeVerifier::from_config_json(&config(
            &key,
            json!({"status": {"fail_policy": "closed"}}),
        ))
        .unwrap();
        let token = TokenBuilder::new(now()).status(2, uri).sign(&key);
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        let check = |edge: &mut EdgeVerifier| reason(&edge.check("GET", "/", &h, None, now()));
        assert_eq!(check(&mut edge), Some("status_unavailable"));
        let doc = |s: &[u8]| json!({"bits": 2, "lst": status_list_lst(s)}).to_string();
        assert_eq!(
            edge.set_status_list_json(uri, &doc(&[0, 0, 0, 0]), now()),
            Ok(4)
        );
        assert_eq!(check(&mut edge), None);
        edge.set_status_list_json(uri, &doc(&[0, 0, 1, 0]), now())
            .unwrap();
        assert_eq!(check(&mut edge), Some("revoked"));
        edge.set_status_list_json(uri, &doc(&[0, 0, 2, 0]), now())
            .unwrap();
        assert_eq!(check(&mut edge), Some("suspended"));

        let mut bad = |text: &str| edge_err(&mut edge, uri, text);
        assert!(bad("nope").contains("not JSON"));
        assert!(bad(r#"{"bits":1,"lst":"eJwDAAAAAAE"}"#).contains("bits: 1"));
        assert!(bad(r#"{"bits":2}"#).contains("lst: missing"));
        assert!(bad(r#"{"bits":2,"lst":"!!"}"#).contains("lst: "));
        assert_eq!(check(&mut edge), Some("suspended"));
    }

    #[test]
    fn withdrawn_scopes_in_the_status_list_narrow_live_tokens() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let uri = "https://cp.test/v1/orgs/acme/status-list";
        let mut edge = EdgeVerifier::from_config_json(&config(
            &key,
            json!({"routes": [{"path_prefix": "/write", "scopes": ["write"]}]}),
        ))
        .unwrap();
        let token = TokenBuilder::new(now())
            .claim("scope", "read write")
            .status(2, uri)
            .sign(&key);
        let h = headers(&[("authorization", &format!("Bearer {token}"))]);
        let check =
            |edge: &mut EdgeVerifier, path: &str| reason(&edge.check("GET", path, &h, None, now()));
        let lst = status_list_lst(&[0, 0, 0, 0]);
        edge.set_status_list_json(uri, &json!({"bits": 2, "lst": lst}).to_string(), now())
            .unwrap();
        assert_eq!(check(&mut edge, "/write"), None);
        let narrowed = tessera_core::withdrawn::WithdrawnScopes::from_entries([("write", 2)]);
        let doc = json!({"bits": 2, "lst": lst, "withdrawn": narrowed.to_json()}).to_string();
        edge.set_status_list_json(uri, &doc, now()).unwrap();
        assert_eq!(check(&mut edge, "/write"), Some("insufficient_scope"));
        assert_eq!(check(&mut edge, "/read"), None);
        // A bad member refuses the document: the narrowing stays.
        let bad = json!({"bits": 2, "lst": lst, "withdrawn": {"write": "!!"}}).to_string();
        assert!(edge_err(&mut edge, uri, &bad).contains("withdrawn.write"));
        assert_eq!(check(&mut edge, "/write"), Some("insufficient_scope"));
        edge.set_status_list_json(uri, &json!({"bits": 2, "lst": lst}).to_string(), now())
            .unwrap();
        assert_eq!(check(&mut edge, "/write"), None);
    }

    /// Staleness as in the filter: `sync.max_staleness_secs` after the oldest list's last
    /// success (or before the first), valid entries are unknown and the fail policy
    /// decides; what the last list revoked or suspended stays refused.
    #[test]
    fn stale_status_lists_follow_the_filter() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let a = "https://cp.test/v1/orgs/a/status-list";
        let b = "https://cp.test/v1/orgs/b/status-list";
        let t = now();
        let doc = |s: &[u8]| json!({"bits": 2, "lst": status_list_lst(s)}).to_string();
        for policy in ["closed", "open"] {
            let json = config(
                &key,
                json!({"status": {"fail_policy": policy}, "sync": {"max_staleness_secs": 10}}),
            );
            let mut edge = EdgeVerifier::from_config_json(&json).unwrap();
            assert_eq!(edge.max_staleness_secs(), 10);
            edge.set_default_max_staleness_secs(999); // ignored: the config has `sync`
            assert_eq!(edge.max_staleness_secs(), 10);
            // The same tokens and lists in core, told the freshness directly (what the
            // Envoy filter does with the same state).
            let mut core = Verifier::from_config_json(&json).unwrap();
            let tokens: Vec<String> = [(0, a), (1, a), (2, a), (0, b)]
                .iter()
                .map(|(idx, uri)| TokenBuilder::new(t).status(*idx, uri).sign(&key))
                .collect();
            let compare = |edge: &mut EdgeVerifier, core: &mut Verifier, at: u64, fresh| {
                core.set_status_fresh(fresh);
                assert_eq!(edge.status_fresh(at), fresh, "{policy} at +{}", at - t);
                let mut got = Vec::new();
                for tok in &tokens {
                    let h = headers(&[("authorization", &format!("Bearer {tok}"))]);
                    let v = edge.check("GET", "/", &h, None, at);
                    let req = Request {
                        method: "GET",
                        path: "/",
                        headers: &h,
                        source_address: None,
                    };
                    let want = match core.check(&req, at, None).decision {
                        Decision::Allow(i) => {
                            assert!(matches!(&v.identity, Some(identity)
                                if identity.status_fail_open == i.status_fail_open));
                            None
                        }
                        Decision::Deny(d) => Some(d.reason.as_str()),
                    };
                    assert_eq!(reason(&v), want, "{policy} at +{}", at - t);
                    got.push(reason(&v));
                }
                got
            };
            let unknown = if policy == "closed" {
                Some("status_unavailable")
            } else {
                None
            };
            edge.track_status_list(a, t);
            edge.track_status_list(b, t);
            // Before the first fetch: nothing is fresh.
            assert_eq!(
                compare(&mut edge, &mut core, t, false),
                [unknown, unknown, unknown, unknown]
            );
            assert!(!edge.status_list_unchanged(a, t), "304 before any list");
            edge.set_status_list_json(a, &doc(&[0, 1, 2]), t).unwrap();
            core.set_status_list(
                a,
                tessera_core::synced::status_list_document(&doc(&[0, 1, 2])).unwrap(),
            );
            // One list of two: still stale, but a's refusals already hold.
            assert_eq!(
                compare(&mut edge, &mut core, t, false),
                [unknown, Some("revoked"), Some("suspended"), unknown]
            );
            edge.set_status_list_json(b, &doc(&[0]), t + 5).unwrap();
            core.set_status_list(
                b,
                tessera_core::synced::status_list_document(&doc(&[0])).unwrap(),
            );
            let fresh = [None, Some("revoked"), Some("suspended"), None];
            assert_eq!(compare(&mut edge, &mut core, t + 10, true), fresh);
            // The oldest (a, at t) is now 11 s old.
            let stale = [unknown, Some("revoked"), Some("suspended"), unknown];
            assert_eq!(compare(&mut edge, &mut core, t + 11, false), stale);
            // A 304 for a counts as a success.
            assert!(edge.status_list_unchanged(a, t + 12));
            assert_eq!(compare(&mut edge, &mut core, t + 15, true), fresh);
            // b last succeeded at t + 5; a refused document is no success.
            assert!(edge.set_status_list_json(b, "nope", t + 16).is_err());
            assert_eq!(compare(&mut edge, &mut core, t + 16, false), stale);
        }
    }

    /// Without a `sync` section, fetched lists go stale after the default bound
    /// (`TESSERA_STATUS_MAX_STALE_MS`), and a list carried inline serves from the start.
    #[test]
    fn staleness_without_a_sync_section() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let t = now();
        let mut edge = EdgeVerifier::from_config_json(&config(&key, json!({}))).unwrap();
        assert_eq!(edge.max_staleness_secs(), DEFAULT_MAX_STALENESS_SECS);
        assert!(edge.status_fresh(t), "nothing fetched: nothing to go stale");
        edge.set_default_max_staleness_secs(30);
        edge.track_status_list(DEFAULT_STATUS_URI, t);
        let other = "https://cp.test/other";
        let tok = TokenBuilder::new(t)
            .status(0, DEFAULT_STATUS_URI)
            .sign(&key);
        let h = headers(&[("authorization", &format!("Bearer {tok}"))]);
        assert!(edge.status_fresh(t + 30));
        assert_eq!(reason(&edge.check("GET", "/", &h, None, t + 30)), None);
        assert_eq!(
            reason(&edge.check("GET", "/", &h, None, t + 31)),
            Some("status_unavailable")
        );
        edge.track_status_list(other, t);
        assert!(!edge.status_fresh(t), "a list never fetched is stale");
    }

    #[test]
    fn sync_usage_is_refused_naming_the_field() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let usage = json!({"sync": {"usage": {"cluster": "cp", "credential": "s"}}});
        let err = match EdgeVerifier::from_config_json(&config(&key, usage)) {
            Err(e) => e,
            Ok(_) => panic!("sync.usage accepted"),
        };
        assert_eq!(err.field, SYNC_USAGE_FIELD);
        assert!(err.message.contains("TESSERA_USAGE_URL"), "{err}");
        assert!(EdgeVerifier::from_config_json(&config(&key, json!({"sync": {}}))).is_ok());
    }

    /// Keys from fetched JWKS: none before the first (503 `keys_unavailable`), the union of
    /// every fetched set, configured keys winning a `kid` clash, a refused document keeping
    /// the previous keys, and a rotation taking effect on the next document.
    #[test]
    fn fetched_jwks_are_applied_like_the_filter() {
        let old = TestKey::generate(Alg::EdDSA, "old");
        let new = TestKey::generate(Alg::ES256, "new");
        let other = TestKey::generate(Alg::RS256, "other");
        let t = now();
        let mut c: Value = serde_json::from_str(&config(&old, json!({"sync": {}}))).unwrap();
        c.as_object_mut().unwrap().remove("jwks");
        let mut edge = EdgeVerifier::from_config_json(&c.to_string()).unwrap();
        let check = |edge: &mut EdgeVerifier, key: &TestKey| {
            let tok = TokenBuilder::new(t).claim("jti", key.kid()).sign(key);
            let h = headers(&[("authorization", &format!("Bearer {tok}"))]);
            reason(&edge.check("GET", "/", &h, None, t))
        };
        assert_eq!(check(&mut edge, &old), Some("keys_unavailable"));
        assert_eq!(edge.key_jwk("old"), None);

        let url = "https://cp.test/v1/orgs/acme/jwks.json";
        let url2 = "https://cp.test/v1/orgs/other/jwks.json";
        edge.track_jwks(url);
        edge.track_jwks(url2);
        assert_eq!(edge.set_jwks_json(url, &jwks(&[&old]).to_string()), Ok(1));
        assert_eq!(check(&mut edge, &old), None);
        let jwk: Value = serde_json::from_str(edge.key_jwk("old").unwrap()).unwrap();
        assert_eq!(jwk, old.public_jwk());

        // Refused documents: named, and the keys in force stay.
        for (text, what) in [
            ("nope".to_string(), "not JSON"),
            (json!({"keys": []}).to_string(), "jwks.keys"),
            (
                {
                    let mut j = jwks(&[&new]);
                    j["keys"][0]["d"] = json!("AAAA");
                    j.to_string()
                },
                "jwks.keys[0]",
            ),
        ] {
            let err = edge.set_jwks_json(url, &text).unwrap_err();
            assert!(
                err.starts_with(&format!("JWKS {url}: ")) && err.contains(what),
                "{err}"
            );
            assert_eq!(check(&mut edge, &old), None, "{err}");
        }

        // Rotation: the next document has both keys, then only the new one.
        edge.set_jwks_json(url, &jwks(&[&new, &old]).to_string())
            .unwrap();
        assert_eq!(
            (check(&mut edge, &new), check(&mut edge, &old)),
            (None, None)
        );
        edge.set_jwks_json(url, &jwks(&[&new]).to_string()).unwrap();
        // The cached verification of `old` is dropped with its key.
        assert_eq!(check(&mut edge, &old), Some("key_unknown"));
        assert_eq!(check(&mut edge, &new), None);
        assert_eq!(edge.key_jwk("old"), None);

        // Union of two URLs; on a kid clash the first declared URL wins.
        let mut impostor = other.public_jwk();
        impostor["kid"] = json!("new");
        let second = json!({"keys": [other.public_jwk(), impostor]}).to_string();
        assert_eq!(edge.set_jwks_json(url2, &second), Ok(2));
        assert_eq!(
            (check(&mut edge, &new), check(&mut edge, &other)),
            (None, None)
        );
        let jwk: Value = serde_json::from_str(edge.key_jwk("new").unwrap()).unwrap();
        assert_eq!(jwk, new.public_jwk());

        // Configured keys win over fetched ones with the same kid.
        let pinned = TestKey::generate(Alg::EdDSA, "new");
        let mut edge =
            EdgeVerifier::from_config_json(&config(&pinned, json!({"sync": {}}))).unwrap();
        edge.set_jwks_json(url, &jwks(&[&new]).to_string()).unwrap();
        assert_eq!(check(&mut edge, &pinned), None);
        assert_eq!(check(&mut edge, &new), Some("alg_not_allowed"));
        let jwk: Value = serde_json::from_str(edge.key_jwk("new").unwrap()).unwrap();
        assert_eq!(jwk, pinned.public_jwk());
    }

    fn edge_err(edge: &mut EdgeVerifier, uri: &str, text: &str) -> String {
        match edge.set_status_list_json(uri, text, now()) {
            Ok(n) => panic!("accepted {text} ({n} entries)"),
            Err(e) => {
                assert!(e.starts_with(&format!("status list {uri}: ")), "{e}");
                e
            }
        }
    }

    /// begin + finish with a correct signature verdict decide exactly as check does, for
    /// every kind of token; a negative verdict is `signature_invalid`.
    #[test]
    fn two_phase_checks_equal_one_phase_checks() {
        let ed = TestKey::generate(Alg::EdDSA, "ed");
        let es = TestKey::generate(Alg::ES256, "es");
        let rs = TestKey::generate(Alg::RS256, "rs");
        let t = now();
        let mut c: Value = serde_json::from_str(&config(&ed, json!({}))).unwrap();
        c["jwks"] = jwks(&[&ed, &es, &rs]);
        let json = c.to_string();
        let mut one = EdgeVerifier::from_config_json(&json).unwrap();
        let mut two = EdgeVerifier::from_config_json(&json).unwrap();
        let mut tokens = Vec::new();
        for key in [&ed, &es, &rs] {
            let valid = TokenBuilder::new(t).sign(key);
            tokens.push(tessera_testkit::tamper_signature(&valid));
            tokens.push(valid);
            tokens.push(TokenBuilder::new(t - 7200).sign(key));
            tokens.push(TokenBuilder::new(t).status_idx(1).sign(key));
            tokens.push(TokenBuilder::new(t).claim("iss", "x").sign(key));
            tokens.push(TokenBuilder::new(t).header("kid", "nope").sign(key));
        }
        // Claims that are not a JSON object under an invalid signature: the reason must
        // be check's (token_malformed), not the signature's.
        let valid = TokenBuilder::new(t).sign(&ed);
        let parts: Vec<&str> = valid.split('.').collect();
        for claims in [&b"[]"[..], b"{\"exp\":", b"null"] {
            let claims = tessera_testkit::b64url(claims);
            tokens.push(format!("{}.{claims}.{}", parts[0], parts[2]));
        }
        tokens.push("garbage".into());
        let mut verified = 0;
        // Twice: the second round is served from the caches.
        for round in 0..2 {
            for (i, token) in tokens.iter().enumerate() {
                for path in ["/api", "/admin/x"] {
                    let h = headers(&[("authorization", &format!("Bearer {token}"))]);
                    let want = one.check("GET", path, &h, Some("192.0.2.1"), t);
                    let got = match two.begin("GET", path, &h, Some("192.0.2.1"), t) {
                        Begun::Done(v) => v,
                        Begun::Verify(p) => {
                            verified += 1;
                            // The host's verdict: the real one (all three test algorithms
                            // sign deterministically, so re-signing is a verification).
                            let sig = p.signature();
                            assert_eq!(sig.kid, token_kid(token), "token {i}");
                            let key = [&ed, &es, &rs]
                                .into_iter()
                                .find(|k| k.kid() == sig.kid)
                                .unwrap();
                            let valid = key.sign(&sig.signing_input) == sig.signature;
                            two.finish(p, valid)
                        }
                    };
                    assert_eq!(got, want, "round {round}, token {i}, {path}");
                }
            }
        }
        assert!(verified >= 9, "only {verified} signatures went to the host");

        // A negative verdict is confirmed in Rust: a forged token stays refused, and a
        // host that wrongly says "invalid" cannot change the answer either.
        let valid = TokenBuilder::new(t).claim("jti", "fresh").sign(&es);
        let forged = tessera_testkit::tamper_signature(&valid);
        for (token, want) in [(&forged, Some("signature_invalid")), (&valid, None)] {
            let h = headers(&[("authorization", &format!("Bearer {token}"))]);
            match two.begin("GET", "/", &h, None, t) {
                Begun::Verify(p) => {
                    assert_eq!(p.signature().alg.name(), "ES256");
                    assert_eq!(reason(&two.finish(p, false)), want);
                }
                Begun::Done(v) => panic!("{v:?}"),
            }
        }
    }

    fn token_kid(token: &str) -> String {
        let header = token.split('.').next().unwrap_or("");
        tessera_testkit::b64url_decode(header)
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["kid"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn normalize_path_table() {
        let cases = [
            ("/", "/"),
            ("", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../a", "/a"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/a?b=/../c//d", "/a?b=/../c//d"),
            ("a/b", "/a/b"),
            ("/admin%2F..", "/admin%2F.."),
            ("/%61dmin", "/admin"),
            ("/%41%44MIN/%7e%5F", "/ADMIN/~_"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E./admin", "/admin"),
            ("/a%2fb%20c%", "/a%2fb%20c%"),
            ("/a%zz%4", "/a%zz%4"),
            ("/caf\u{e9}/%C3%A9", "/caf\u{e9}/%C3%A9"),
            ("/x?%61=/../", "/x?%61=/../"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input), want, "{input:?}");
        }
    }
}
