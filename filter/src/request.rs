//! The filter's request path behind a small [`Host`] trait, so that everything the filter
//! does with a request — sync pick-up, the decision, counters, usage, the header edits or
//! the local reply — is unit-tested natively with a mock host. `lib.rs` implements
//! [`Host`] with proxy-wasm calls and does nothing else per request.

use tessera_core::jwks::KeyMaterial;
use tessera_core::synced::SyncedKeys;
use tessera_core::withdrawn::WithdrawnScopes;
use tessera_core::{
    CacheUse, Decision, Deny, Outcome, Plan, Reason, Refresh, Reply, Request, SignatureRequest,
    StatusList, Step, TokenCache, UsageRecord, Verifier,
};

use crate::budget;
use crate::shared;
use crate::usage;

/// Log levels the request path uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something to fix.
    Error,
    /// Worth knowing.
    Warn,
}

/// What the request path needs from the host, one method per host call.
pub trait Host {
    /// Unix seconds.
    fn now_secs(&mut self) -> u64;
    /// Unix milliseconds.
    fn now_ms(&mut self) -> u64;
    /// Makes the paused request `stream` the one the next calls act on (proxy-wasm's
    /// effective context); false when it is gone (the client left).
    fn select_stream(&mut self, stream: u32) -> bool;
    /// Lets the selected paused request go on (upstream).
    fn resume(&mut self) -> Result<(), String>;
    /// The request headers as received (names lower-case), or an error to log.
    fn request_headers(&mut self) -> Result<Vec<(String, String)>, String>;
    /// The connection's peer address (`source.address`).
    fn source_address(&mut self) -> Option<String>;
    /// A shared-data value.
    fn shared_data(&mut self, key: &str) -> Option<Vec<u8>>;
    /// Writes a shared-data value.
    fn set_shared_data(&mut self, key: &str, value: &[u8]) -> Result<(), String>;
    /// A shared-data value with its compare-and-swap value (`crate::budget`).
    fn shared_data_cas(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
        Ok((self.shared_data(key), None))
    }
    /// Writes a shared-data value only if its CAS still is `cas`: `Ok(false)` when another
    /// write came first.
    fn set_shared_data_cas(&mut self, key: &str, value: &[u8], cas: u32) -> Result<bool, String> {
        let _ = cas;
        self.set_shared_data(key, value).map(|()| true)
    }
    /// Sets request header `name` to `value`, replacing every value it had.
    fn set_header(&mut self, name: &str, value: &str) -> Result<(), String>;
    /// Removes every value of request header `name`.
    fn remove_header(&mut self, name: &str) -> Result<(), String>;
    /// Answers locally.
    fn send_reply(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(), String>;
    /// Envoy's `verify_signature` foreign function: SHA-256 with the DER
    /// SubjectPublicKeyInfo `spki`. `Ok(None)`: the answer could not be read.
    fn verify_signature(
        &mut self,
        spki: &[u8],
        signature: &[u8],
        text: &[u8],
    ) -> Result<Option<bool>, String>;
    /// Logs.
    fn log(&mut self, level: Level, message: &str);
}

/// What the host does with the stream after the request headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Forward upstream.
    Continue,
    /// A local reply was sent (or the request is refused).
    Stop,
    /// Paused: the decision waits for fresher keys or status (see [`Vm::wake`]).
    Wait,
}

/// How many requests one VM keeps paused at most; past it, a request that would wait is
/// decided at once on what is held (so a flood of forged tokens costs bounded memory).
pub const MAX_WAITERS: usize = 1024;

/// A request paused until fresher data arrives (issue 24, item 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiter {
    /// The proxy-wasm context id of the request.
    stream: u32,
    /// Waits for keys (an unknown `kid`); otherwise for a status list.
    keys: bool,
    /// When it was first paused, Unix milliseconds.
    since_ms: u64,
    /// The published version it was last decided on.
    version: Option<u64>,
    /// Waits for a rate-limit lease: the lease version ([`budget::VERSION`]) it was last
    /// decided on.
    lease: Option<u64>,
}

/// Whether a decision may pause the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WaitMode {
    /// A new request: it may start waiting.
    First,
    /// Decided again on newer data, within its bound: it may go on waiting.
    Again { since_ms: u64 },
    /// The fetch ended, or the bound passed: the decision is final.
    Final,
}

/// The counters, kept in wasm memory and added to the host's metrics on the tick (a host
/// call per request and counter cost more than the rest of a cache hit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `tessera.allow`.
    pub allow: u64,
    /// `tessera.deny.<reason>`, indexed as [`Reason::ALL`].
    pub deny: [u64; Reason::ALL.len()],
    /// `tessera.cache_hit`.
    pub cache_hit: u64,
    /// `tessera.cache_miss`.
    pub cache_miss: u64,
    /// `tessera.status_fail_open`.
    pub status_fail_open: u64,
    /// `tessera.usage_dropped` (records that did not fit the buffer).
    pub usage_dropped: u64,
    /// `tessera.jwks_refresh_requested`: unknown `kid`s that asked the sync for keys.
    pub jwks_refresh_requested: u64,
    /// `tessera.refresh_wait`: requests paused for fresher keys or status.
    pub refresh_wait: u64,
    /// `tessera.ratelimit.admitted`: requests counted in a rate-limit budget.
    pub rl_admitted: u64,
    /// `tessera.ratelimit.refused`: requests refused because the budget was spent.
    pub rl_refused: u64,
    /// `tessera.ratelimit.asked`: requests paused to ask for a lease of their token.
    pub rl_asked: u64,
    /// `tessera.ratelimit.unleased`: requests refused without a lease after their wait.
    pub rl_unleased: u64,
    /// `tessera.ratelimit.unavailable`: requests refused because the budget could not be
    /// read or updated.
    pub rl_unavailable: u64,
    /// `tessera.ratelimit.fallback`: requests decided on the local share while the
    /// control plane was lost.
    pub rl_fallback: u64,
}

impl Counters {
    fn record(&mut self, outcome: &Outcome) {
        match outcome.cache {
            CacheUse::Hit => self.cache_hit += 1,
            CacheUse::Miss => self.cache_miss += 1,
            CacheUse::NotUsed => {}
        }
        match &outcome.decision {
            Decision::Allow(id) => {
                self.allow += 1;
                if id.status_fail_open {
                    self.status_fail_open += 1;
                }
            }
            Decision::Deny(d) => {
                if let Some(i) = Reason::ALL.iter().position(|r| *r == d.reason) {
                    self.deny[i] += 1;
                }
            }
        }
    }
}

/// Shared-data key a worker VM writes when a token names a `kid` it does not know: the
/// poller (sync service or lease holder) sees the value change and refreshes the JWKS.
pub const JWKS_KICK: &str = "tessera.sync.jwks_kick";

/// The per-VM state of the filter role.
pub struct Vm {
    /// The verifier in force.
    pub verifier: Verifier,
    /// The verified-token cache.
    pub cache: TokenCache,
    /// Counters not yet flushed to the host.
    pub counters: Counters,
    /// Usage buffer, when usage is reported.
    pub usage: Option<usage::Buffer>,
    /// Envoy's `verify_signature` answers (cleared on its first error).
    pub native_crypto: bool,
    /// The shared-data version last applied (sync mode).
    synced_version: Option<u64>,
    /// The synced JWKS documents applied.
    synced_keys: SyncedKeys,
    /// When this VM last asked for a JWKS refresh (Unix seconds).
    last_kick: Option<u64>,
    /// Whether the status-list gauge must be re-recorded (lists changed).
    pub lists_changed: bool,
    /// Requests paused for fresher keys or status, in the order they paused.
    waiters: Vec<Waiter>,
    /// The status-list uris the sync published (what a paused request may wait for).
    published_lists: Vec<String>,
    /// Whether the sync publishes key sets (an unknown `kid` may wait for them).
    keys_synced: bool,
    /// Whether the host's tick was made short for the waiters (`lib.rs`).
    pub tick_fast: bool,
    /// Tokens held nothing for that requests asked a lease of: the root context names
    /// them in its next report, at once (at most [`MAX_WANTED`]).
    pub wanted: Vec<String>,
    /// Tokens whose wait for a lease ran out, and until when (Unix ms) their requests are
    /// decided at once rather than paused again (the control plane is not answering).
    gave_up: Vec<(String, u64)>,
}

/// The most tokens one VM asks leases of at a time.
pub const MAX_WANTED: usize = 256;
/// How long, after a request's wait for a lease ran out, the token's requests are decided
/// without waiting (still asking for the lease).
pub const GAVE_UP_MS: u64 = 5_000;

/// What the rate limit does with an allowed request.
enum Limit {
    /// Forward it.
    Go,
    /// Answer this 429.
    Refuse(Reply),
    /// Paused until a lease of its token arrives.
    Wait,
}

impl Vm {
    /// A VM's state for `verifier`.
    pub fn new(verifier: Verifier) -> Vm {
        let usage = verifier
            .config()
            .sync
            .as_ref()
            .and_then(|s| s.usage.as_ref())
            .map(|u| usage::Buffer::new(u.max_buffer));
        Vm {
            cache: verifier.new_cache(),
            verifier,
            counters: Counters::default(),
            usage,
            native_crypto: true,
            synced_version: None,
            synced_keys: SyncedKeys::default(),
            last_kick: None,
            lists_changed: false,
            waiters: Vec::new(),
            published_lists: Vec::new(),
            keys_synced: false,
            tick_fast: false,
            wanted: Vec::new(),
            gave_up: Vec::new(),
        }
    }

    /// Handles one request's headers. `stream` names the request if it must pause
    /// ([`Next::Wait`]): then [`Vm::wake`] decides it later.
    pub fn on_request_headers(&mut self, host: &mut impl Host, stream: u32) -> Next {
        self.handle(host, stream, WaitMode::First)
    }

    /// How many requests are paused.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Whether request `stream` is paused (its body must wait too).
    pub fn is_waiting(&self, stream: u32) -> bool {
        self.waiters.iter().any(|w| w.stream == stream)
    }

    /// Request `stream` ended (the client left): forget it.
    pub fn forget(&mut self, stream: u32) {
        self.waiters.retain(|w| w.stream != stream);
    }

    /// Decides the paused requests whose wait is over, on the host's tick: when what the
    /// sync published moved (decided again; one whose data is still missing goes on
    /// waiting), when a key fetch that left after the request paused has ended, or when
    /// the configuration's `max_wait_ms` passed (then final, the fail policy deciding the
    /// status). A
    /// request decided is resumed or answered. Returns how many still wait.
    pub fn wake(&mut self, host: &mut impl Host) -> usize {
        if self.waiters.is_empty() {
            return 0;
        }
        let now_ms = host.now_ms();
        let now = now_ms / 1000;
        self.refresh_from_sync(host, now);
        let max_wait_ms = self.verifier.config().max_wait_ms;
        let keys_fetched_ms = host
            .shared_data(shared::META)
            .and_then(|b| shared::Meta::decode(&b))
            .map_or(0, |m| m.keys_fetched_ms);
        let lease_version = if self.waiters.iter().any(|w| w.lease.is_some()) {
            budget::version(&mut HostCas(host))
        } else {
            0
        };
        let mut want_keys = false;
        for w in std::mem::take(&mut self.waiters) {
            let timed_out = now_ms >= w.since_ms.saturating_add(max_wait_ms);
            let fetched = w.keys && keys_fetched_ms >= w.since_ms;
            let moved = match w.lease {
                Some(v) => v != lease_version,
                None => self.synced_version != w.version,
            };
            if !(timed_out || fetched || moved) {
                want_keys |= w.keys;
                self.waiters.push(w);
                continue;
            }
            if !host.select_stream(w.stream) {
                continue;
            }
            let mode = if timed_out || fetched {
                WaitMode::Final
            } else {
                WaitMode::Again {
                    since_ms: w.since_ms,
                }
            };
            if self.handle(host, w.stream, mode) == Next::Continue {
                if let Err(e) = host.resume() {
                    host.log(
                        Level::Error,
                        &format!("tessera: cannot resume a paused request: {e}"),
                    );
                }
            }
        }
        // A kid still unknown and no key fetch since: ask again (once a second per VM).
        if want_keys {
            self.request_jwks_refresh(host, now);
        }
        self.waiters.len()
    }

    /// Whether a request may wait for `refresh`: the sync publishes that data, and the
    /// VM has room.
    fn can_wait(&self, refresh: &Refresh) -> bool {
        if self.verifier.config().sync.is_none() || self.waiters.len() >= MAX_WAITERS {
            return false;
        }
        match refresh {
            Refresh::Keys => self.keys_synced,
            Refresh::StatusList { uri } => self.published_lists.iter().any(|u| u == uri),
        }
    }

    fn handle(&mut self, host: &mut impl Host, stream: u32, mode: WaitMode) -> Next {
        let headers = match host.request_headers() {
            Ok(h) => h,
            Err(e) => {
                host.log(
                    Level::Error,
                    &format!("tessera: cannot read request headers: {e}"),
                );
                Vec::new()
            }
        };
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let now = host.now_secs();
        self.refresh_from_sync(host, now);
        // The peer address costs a host call: read it up front only when a usage record
        // will carry it; otherwise only when a token's IP filter needs it (below).
        let peer_first = self.usage.is_some() && self.wants_peer();
        let first_source = if peer_first {
            host.source_address()
        } else {
            None
        };
        let req = Request {
            method: find(":method"),
            path: find(":path"),
            headers: &headers,
            source_address: first_source.as_deref(),
        };
        let mut outcome = self.decide(host, &req, now);
        let late_source = if outcome.decision.reason() == Some(Reason::IpNotAllowed)
            && !peer_first
            && self.wants_peer()
        {
            host.source_address()
        } else {
            None
        };
        let req = Request {
            source_address: late_source.as_deref().or(req.source_address),
            ..req
        };
        if late_source.is_some() {
            let first_cache = outcome.cache;
            outcome = self.decide(host, &req, now);
            outcome.cache = first_cache;
        }
        // Refresh needed: pause until the sync brings fresher keys or status (bounded),
        // then decide again; nothing is counted or reported for the first decision.
        if let Some(refresh) = &outcome.refresh {
            let since_ms = match mode {
                WaitMode::First => Some(host.now_ms()),
                WaitMode::Again { since_ms } => Some(since_ms),
                WaitMode::Final => None,
            };
            if let Some(since_ms) = since_ms.filter(|_| self.can_wait(refresh)) {
                let keys = matches!(refresh, Refresh::Keys);
                self.waiters.push(Waiter {
                    stream,
                    keys,
                    since_ms,
                    version: self.synced_version,
                    lease: None,
                });
                if mode == WaitMode::First {
                    self.counters.refresh_wait += 1;
                    if keys {
                        self.request_jwks_refresh(host, now);
                    }
                }
                return Next::Wait;
            }
        }
        let mut outcome = outcome.settled();
        let limited = match self.rate_limit(host, &mut outcome, stream, mode) {
            Limit::Go => None,
            Limit::Refuse(reply) => Some(reply),
            Limit::Wait => return Next::Wait,
        };
        self.counters.record(&outcome);
        if outcome.decision.reason() == Some(Reason::KeyUnknown) {
            self.request_jwks_refresh(host, now);
        }
        // Rate-limit refusals are counted (`tessera.deny.rate_limited`), never one usage
        // record each: a flood must not become a flood of records.
        let usage = self
            .usage
            .as_mut()
            .filter(|_| outcome.decision.reason() != Some(Reason::RateLimited));
        if let Some(buffer) = usage {
            let client = self.verifier.client_address(&req);
            if let Some(record) = UsageRecord::of(&outcome, &req, client, now) {
                if !buffer.push(record) {
                    self.counters.usage_dropped += 1;
                }
            }
        }
        if let Some(reply) = limited {
            return send(host, &reply);
        }
        match self.verifier.plan(&outcome) {
            Plan::Forward { set, remove } => {
                for name in &remove {
                    if let Err(e) = host.remove_header(name) {
                        host.log(
                            Level::Error,
                            &format!("tessera: cannot remove header {name}: {e}"),
                        );
                        return reply_unavailable(host);
                    }
                }
                for (name, value) in &set {
                    // A client-sent identity header that cannot be replaced must not reach
                    // the upstream: fail closed.
                    if let Err(e) = host.set_header(name, value) {
                        host.log(
                            Level::Error,
                            &format!("tessera: cannot set header {name}: {e}"),
                        );
                        return reply_unavailable(host);
                    }
                }
                Next::Continue
            }
            Plan::Reply(reply) => send(host, &reply),
        }
    }

    /// Issue 25: an allowed token is admitted only within the budget its process holds
    /// (`crate::budget`, one budget per process shared by its workers). A token the
    /// process holds nothing for, in an organization that limits tokens, pauses while the
    /// root context asks for its lease (at once), and is decided again when an answer is
    /// merged; after `max_wait_ms` without a lease it is refused (core's
    /// `ratelimit::unleased`). A refusal turns the outcome into `rate_limited` (for the
    /// counters) and gives the 429 to send.
    fn rate_limit(
        &mut self,
        host: &mut impl Host,
        outcome: &mut Outcome,
        stream: u32,
        mode: WaitMode,
    ) -> Limit {
        let Decision::Allow(id) = &outcome.decision else {
            return Limit::Go;
        };
        let token = id.parent.as_deref().unwrap_or(&id.token_id).to_string();
        let now_ms = host.now_ms();
        let reports = self.usage.is_some();
        let fallback = self.verifier.config().rate_limits;
        let (verdict, local) =
            budget::admit(&mut HostCas(host), &token, now_ms, reports, &fallback);
        if local {
            self.counters.rl_fallback += 1;
        }
        let reply = match verdict {
            budget::Verdict::Pass => return Limit::Go,
            budget::Verdict::Admitted => {
                self.counters.rl_admitted += 1;
                return Limit::Go;
            }
            budget::Verdict::Refused(reply) => {
                self.counters.rl_refused += 1;
                reply
            }
            budget::Verdict::Ask => {
                if reports && !self.wanted.contains(&token) && self.wanted.len() < MAX_WANTED {
                    self.wanted.push(token.clone());
                }
                self.gave_up.retain(|(_, until)| *until > now_ms);
                let gave_up = self.gave_up.iter().any(|(t, _)| *t == token);
                let since_ms = match mode {
                    WaitMode::First if !gave_up => Some(now_ms),
                    WaitMode::Again { since_ms } => Some(since_ms),
                    _ => None,
                };
                if mode == WaitMode::Final && !gave_up && self.gave_up.len() < MAX_WANTED {
                    self.gave_up
                        .push((token.clone(), now_ms.saturating_add(GAVE_UP_MS)));
                }
                let room = self.waiters.len() < MAX_WAITERS;
                if let Some(since_ms) = since_ms.filter(|_| reports && room) {
                    let lease = Some(budget::version(&mut HostCas(host)));
                    self.waiters.push(Waiter {
                        stream,
                        keys: false,
                        since_ms,
                        version: self.synced_version,
                        lease,
                    });
                    if mode == WaitMode::First {
                        self.counters.rl_asked += 1;
                    }
                    return Limit::Wait;
                }
                match tessera_core::ratelimit::unleased(budget::mode(&mut HostCas(host))) {
                    None => return Limit::Go,
                    Some(reply) => {
                        self.counters.rl_unleased += 1;
                        reply
                    }
                }
            }
            budget::Verdict::Unavailable(reply) => {
                self.counters.rl_unavailable += 1;
                host.log(
                    Level::Warn,
                    &format!("tessera: the rate-limit budget of {token} is unreadable or contended; refused"),
                );
                reply
            }
        };
        outcome.decision = Decision::Deny(Deny::new(Reason::RateLimited, "", &[]));
        Limit::Refuse(reply)
    }

    fn wants_peer(&self) -> bool {
        self.verifier.config().client_ip == tessera_core::config::ClientIpSource::Peer
    }

    /// Decides one request: core does everything but the signature, which Envoy's
    /// BoringSSL checks for ES256 and RS256 (through the `verify_signature` foreign
    /// function) and core checks in Rust for Ed25519.
    fn decide(&mut self, host: &mut impl Host, req: &Request<'_>, now: u64) -> Outcome {
        match self.verifier.begin(req, now, Some(&mut self.cache)) {
            Step::Done(outcome) => outcome,
            Step::Verify(pending) => {
                let ok = self
                    .native_signature(host, &pending)
                    .unwrap_or_else(|| self.verifier.verify_signature(&pending));
                self.verifier
                    .finish(pending, ok, req, now, Some(&mut self.cache))
            }
        }
    }

    /// The host's verdict on an ES256 or RS256 signature, or `None` to check it in Rust
    /// (Ed25519, which Envoy's foreign function does not offer). This build of core has
    /// no Rust ECDSA or RSA verifier (see Cargo.toml): on a host without the foreign
    /// function those signatures cannot be checked and are refused
    /// (`signature_invalid`), with an error logged once.
    fn native_signature(
        &mut self,
        host: &mut impl Host,
        pending: &SignatureRequest,
    ) -> Option<bool> {
        if !self.native_crypto {
            return None;
        }
        let key = self.verifier.key_for(pending)?;
        let signature = match &key.material {
            KeyMaterial::Es256(_) => {
                match tessera_core::der::es256_signature_der(&pending.signature) {
                    Some(der) => der,
                    // Not 64 bytes: not an ES256 signature at all.
                    None => return Some(false),
                }
            }
            KeyMaterial::Rs256(_) => pending.signature.clone(),
            KeyMaterial::Ed25519(_) => return None,
        };
        let spki = key.spki()?;
        match host.verify_signature(spki, &signature, &pending.signing_input) {
            Ok(Some(valid)) => Some(valid),
            Ok(None) => Some(false),
            Err(e) => {
                self.native_crypto = false;
                host.log(
                    Level::Error,
                    &format!(
                        "tessera: Envoy's verify_signature foreign function is unavailable \
                         ({e}): ES256 and RS256 tokens cannot be checked and are refused"
                    ),
                );
                None
            }
        }
    }

    /// A token named a `kid` this VM does not know: if keys are synced, ask the poller for
    /// a JWKS refresh at once — at most once a second from this VM; the poller itself
    /// refreshes each JWKS URL at most once a second however many VMs ask.
    fn request_jwks_refresh(&mut self, host: &mut impl Host, now: u64) {
        if self.verifier.config().sync.is_none() || self.last_kick == Some(now) {
            return;
        }
        self.last_kick = Some(now);
        let stamp = format!("{now} {}", self.counters.jwks_refresh_requested);
        match host.set_shared_data(JWKS_KICK, stamp.as_bytes()) {
            Ok(()) => self.counters.jwks_refresh_requested += 1,
            Err(e) => host.log(
                Level::Warn,
                &format!("tessera: cannot ask for a JWKS refresh: {e}"),
            ),
        }
    }

    /// Applies what the sync service published, if it moved since the last request: one
    /// small shared-data read per request, the lists and keys only on change.
    pub fn refresh_from_sync(&mut self, host: &mut impl Host, now: u64) {
        let Some(max_staleness) = self
            .verifier
            .config()
            .sync
            .as_ref()
            .map(|s| s.max_staleness_secs)
        else {
            return;
        };
        let Some(meta) = host
            .shared_data(shared::META)
            .and_then(|b| shared::Meta::decode(&b))
        else {
            self.verifier.set_status_fresh(false);
            return;
        };
        if self.synced_version != Some(meta.version) {
            match host
                .shared_data(shared::STATE)
                .and_then(|b| shared::State::decode(&b))
            {
                Some(state) => {
                    self.published_lists = state.lists.iter().map(|l| l.uri.clone()).collect();
                    self.keys_synced = !state.jwks.is_empty();
                    for l in &state.lists {
                        match StatusList::from_lst(&l.lst) {
                            Ok(list) => self.verifier.set_status_list(&l.uri, list),
                            Err(e) => host.log(
                                Level::Error,
                                &format!("tessera: published list {}: {e}", l.uri),
                            ),
                        }
                        // The scopes withdrawn from the list's tokens (issue 22), checked
                        // by the sync before it published them.
                        let pairs = l.withdrawn.iter().map(|(s, z)| (s.as_str(), z.as_str()));
                        match WithdrawnScopes::from_pairs(pairs) {
                            Ok(w) => self.verifier.set_withdrawn(&l.uri, w),
                            Err(e) => host.log(
                                Level::Error,
                                &format!("tessera: published list {}: {e}", l.uri),
                            ),
                        }
                    }
                    let (changed, errors) =
                        self.synced_keys.apply_all(&mut self.verifier, &state.jwks);
                    for e in errors {
                        host.log(Level::Error, &format!("tessera: published {e}"));
                    }
                    if changed {
                        self.cache.clear();
                    }
                    self.synced_version = Some(meta.version);
                    self.lists_changed = true;
                }
                None => host.log(Level::Error, "tessera: published sync state is unreadable"),
            }
        }
        self.verifier
            .set_status_fresh(shared::is_fresh(meta.last_success, now, max_staleness));
    }
}

/// The host's shared data as `crate::budget` uses it.
struct HostCas<'a, H: Host>(&'a mut H);

impl<H: Host> budget::Cas for HostCas<'_, H> {
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
        self.0.shared_data_cas(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<bool, String> {
        self.0.set_shared_data_cas(key, value, cas)
    }
}

fn send(host: &mut impl Host, reply: &Reply) -> Next {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    if let Err(e) = host.send_reply(reply.status, &headers, &reply.body) {
        host.log(
            Level::Error,
            &format!("tessera: cannot send local reply: {e}"),
        );
    }
    Next::Stop
}

/// Fails closed when the filter itself cannot act (500, `filter_error`).
pub fn reply_unavailable(host: &mut impl Host) -> Next {
    let headers = [
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    let body = "{\"error\":\"server_error\",\"reason\":\"filter_error\"}";
    if let Err(e) = host.send_reply(500, &headers, body) {
        host.log(
            Level::Error,
            &format!("tessera: cannot send local reply: {e}"),
        );
    }
    Next::Stop
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;
    use tessera_testkit::{
        jwks, now, status_list_json, status_list_lst, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE,
        DEFAULT_ISSUER, DEFAULT_STATUS_URI,
    };

    type Sent = (u16, Vec<(String, String)>, String);

    /// A host that records every call.
    #[derive(Default)]
    struct Mock {
        now: u64,
        /// Milliseconds past `now`.
        ms: u64,
        /// Streams the client left.
        gone: Vec<u32>,
        selected: Option<u32>,
        resumed: Vec<u32>,
        headers: Vec<(String, String)>,
        source: Option<String>,
        shared: HashMap<String, Vec<u8>>,
        set: Vec<(String, String)>,
        removed: Vec<String>,
        reply: Option<Sent>,
        source_reads: usize,
        fail_set: bool,
        logs: Vec<String>,
        /// The CAS value of each shared-data key, bumped by every write.
        cas: HashMap<String, u32>,
    }

    impl Host for Mock {
        fn shared_data_cas(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
            Ok((self.shared.get(key).cloned(), self.cas.get(key).copied()))
        }
        fn set_shared_data_cas(
            &mut self,
            key: &str,
            value: &[u8],
            cas: u32,
        ) -> Result<bool, String> {
            match self.cas.get(key) {
                Some(c) if *c != cas => Ok(false),
                c => {
                    let next = c.map_or(1, |c| c + 1);
                    self.cas.insert(key.to_owned(), next);
                    self.shared.insert(key.to_owned(), value.to_vec());
                    Ok(true)
                }
            }
        }
        fn now_secs(&mut self) -> u64 {
            self.now
        }
        fn now_ms(&mut self) -> u64 {
            self.now * 1000 + self.ms
        }
        fn select_stream(&mut self, stream: u32) -> bool {
            self.selected = Some(stream);
            !self.gone.contains(&stream)
        }
        fn resume(&mut self) -> Result<(), String> {
            let stream = self.selected.ok_or("no stream selected")?;
            self.resumed.push(stream);
            Ok(())
        }
        fn request_headers(&mut self) -> Result<Vec<(String, String)>, String> {
            Ok(self.headers.clone())
        }
        fn source_address(&mut self) -> Option<String> {
            self.source_reads += 1;
            self.source.clone()
        }
        fn shared_data(&mut self, key: &str) -> Option<Vec<u8>> {
            self.shared.get(key).cloned()
        }
        fn set_shared_data(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
            self.shared.insert(key.to_owned(), value.to_vec());
            Ok(())
        }
        fn set_header(&mut self, name: &str, value: &str) -> Result<(), String> {
            if self.fail_set {
                return Err("BadArgument".into());
            }
            self.set.push((name.to_owned(), value.to_owned()));
            Ok(())
        }
        fn remove_header(&mut self, name: &str) -> Result<(), String> {
            self.removed.push(name.to_owned());
            Ok(())
        }
        fn send_reply(
            &mut self,
            status: u16,
            headers: &[(&str, &str)],
            body: &str,
        ) -> Result<(), String> {
            let headers = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            self.reply = Some((status, headers, body.to_owned()));
            Ok(())
        }
        fn verify_signature(
            &mut self,
            _: &[u8],
            _: &[u8],
            _: &[u8],
        ) -> Result<Option<bool>, String> {
            // No BoringSSL here: the tests use Ed25519, which never reaches the host.
            Err("Unimplemented".into())
        }
        fn log(&mut self, _: Level, message: &str) {
            self.logs.push(message.to_owned());
        }
    }

    fn vm(key: &TestKey, extra: serde_json::Value) -> Vm {
        let mut c = json!({
            "issuers": [DEFAULT_ISSUER],
            "audiences": [DEFAULT_AUDIENCE],
            "jwks": jwks(&[key]),
        });
        if extra.get("sync").is_none() {
            c["status"] = json!({"lists": [status_list_json(DEFAULT_STATUS_URI, &[0, 1])]});
        }
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        Vm::new(Verifier::from_config_json(&c.to_string()).unwrap())
    }

    fn request(token: Option<&str>) -> Mock {
        let mut headers = vec![
            (":method".to_owned(), "GET".to_owned()),
            (":path".to_owned(), "/things?q=1".to_owned()),
            ("x-tessera-user".to_owned(), "spoofed".to_owned()),
        ];
        if let Some(t) = token {
            headers.push(("authorization".to_owned(), format!("Bearer {t}")));
        }
        Mock {
            now: now(),
            headers,
            source: Some("192.0.2.7:5555".into()),
            ..Mock::default()
        }
    }

    fn deny_count(vm: &Vm, reason: Reason) -> u64 {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap();
        vm.counters.deny[i]
    }

    #[test]
    fn allow_sets_identity_and_counts_in_memory() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut vm = vm(&key, json!({}));
        let token = TokenBuilder::new(now()).sign(&key);
        let mut host = request(Some(&token));
        assert_eq!(vm.on_request_headers(&mut host, 1), Next::Continue);
        let names: Vec<&str> = host.set.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-tessera-user",
                "x-tessera-org",
                "x-tessera-token-id",
                "x-tessera-scopes"
            ]
        );
        assert_ne!(host.set[0].1, "spoofed");
        // The username header is not sent by default: a client's copy is removed.
        assert_eq!(host.removed, ["x-tessera-username"]);
        assert!(host.reply.is_none());
        // No IP filter and no usage: the peer address is never read.
        assert_eq!(host.source_reads, 0);
        let mut again = request(Some(&token));
        vm.on_request_headers(&mut again, 1);
        assert_eq!(
            (
                vm.counters.allow,
                vm.counters.cache_miss,
                vm.counters.cache_hit
            ),
            (2, 1, 1)
        );
    }

    #[test]
    fn a_budget_in_shared_data_limits_the_token_with_a_429() {
        use tessera_core::ratelimit::{Lease, Window};
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut vm = vm(&key, json!({}));
        let token = TokenBuilder::new(now()).claim("jti", "tok_rl").sign(&key);
        let mut host = request(Some(&token));
        let now_ms = now() * 1000;
        let second = Window::Second.index(now_ms);
        budget::grant(
            &mut HostCas(&mut host),
            "tok_rl",
            Lease {
                window: Window::Second,
                first: second,
                last: second,
                per_window: 2,
                limit: 4,
            },
            now_ms,
        )
        .unwrap();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            // Each request sees what the previous ones wrote.
            let mut h = request(Some(&token));
            h.shared.clone_from(&host.shared);
            h.cas.clone_from(&host.cas);
            vm.on_request_headers(&mut h, 1);
            statuses.push(h.reply.as_ref().map_or(200, |r| r.0));
            host.shared = h.shared;
            host.cas = h.cas;
            if let Some((_, headers, body)) = h.reply {
                let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                assert_eq!(get("retry-after").as_deref(), Some("1"));
                assert_eq!(
                    get("ratelimit-policy").as_deref(),
                    Some("\"per_second\";q=4;w=1")
                );
                assert_eq!(get("ratelimit").as_deref(), Some("\"per_second\";r=0;t=1"));
                assert!(body.contains("\"reason\":\"rate_limited\""), "{body}");
                assert!(h.set.is_empty(), "a refused request reaches no upstream");
            }
        }
        assert_eq!(statuses, vec![200, 200, 429]);
        assert_eq!(deny_count(&vm, Reason::RateLimited), 1);
        assert_eq!(vm.counters.allow, 2);
    }

    /// A VM reporting usage whose org limits tokens, and a valid token.
    fn reporting_vm(key: &TestKey, jti: &str) -> (Vm, Mock, String) {
        let usage = json!({"cluster": "cp", "credential": "edge-secret"});
        let vm = vm(
            key,
            json!({"sync": {"max_staleness_secs": 30, "usage": usage}}),
        );
        let token = TokenBuilder::new(now())
            .claim("jti", jti)
            .status_idx(0)
            .sign(key);
        let mut host = request(Some(&token));
        publish(&mut host, 1, &[], &status_list_lst(&[0]));
        host.shared.insert(budget::MODE.into(), b"L".to_vec());
        (vm, host, token)
    }

    #[test]
    fn a_token_without_a_lease_waits_for_the_one_asked_at_once() {
        use tessera_core::ratelimit::{LeaseGrant, UsageAnswer};
        let key = TestKey::generate(Alg::EdDSA, "k");
        let (mut vm, mut host, token) = reporting_vm(&key, "tok_new");
        assert_eq!(vm.on_request_headers(&mut host, 7), Next::Wait);
        assert_eq!(vm.wanted, vec!["tok_new".to_string()]);
        assert_eq!(vm.counters.rl_asked, 1);
        // Nothing counted yet, nothing reported, no answer sent.
        assert_eq!(vm.counters.allow, 0);
        assert!(host.reply.is_none());
        // Still no answer: it waits on.
        assert_eq!(vm.wake(&mut host), 1);
        // The answer brings a lease: decided again, admitted and counted in the budget.
        let now_ms = host.now * 1000;
        let minute = tessera_core::ratelimit::Window::Minute.index(now_ms);
        let answer = UsageAnswer {
            leases: vec![LeaseGrant {
                token_id: "tok_new".into(),
                window: "per_minute".into(),
                first: minute,
                last: minute + 1,
                per_window: 1,
                limit: 50,
            }],
            unlimited: vec![],
            limited: Some(true),
            edges: Some(2),
        };
        budget::apply(&mut HostCas(&mut host), &answer, now_ms);
        assert_eq!(vm.wake(&mut host), 0);
        assert_eq!(host.resumed, vec![7]);
        assert_eq!((vm.counters.allow, vm.counters.rl_admitted), (1, 1));
        // The next one finds the budget spent: 429 with the draft's fields.
        let mut next = request(Some(&token));
        next.shared = host.shared.clone();
        next.cas = host.cas.clone();
        assert_eq!(vm.on_request_headers(&mut next, 8), Next::Stop);
        let (status, headers, _) = next.reply.clone().unwrap();
        assert_eq!(status, 429);
        assert!(headers.contains(&("ratelimit-policy".into(), "\"per_minute\";q=50;w=60".into())));
        assert_eq!(vm.counters.rl_refused, 1);
    }

    #[test]
    fn without_an_answer_a_limited_org_refuses_and_an_unknown_one_admits() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let (mut vm, mut host, token) = reporting_vm(&key, "tok_wait");
        assert_eq!(vm.on_request_headers(&mut host, 1), Next::Wait);
        host.now += 2;
        assert_eq!(vm.wake(&mut host), 0);
        let (status, headers, body) = host.reply.clone().unwrap();
        assert_eq!(status, 429);
        assert!(headers.contains(&("retry-after".into(), "1".into())));
        assert!(body.contains("rate_limited"));
        assert_eq!(vm.counters.rl_unleased, 1);
        // The token's next requests are decided at once while the control plane is
        // silent (still asked for).
        let mut again = request(Some(&token));
        again.shared = host.shared.clone();
        again.now = host.now;
        assert_eq!(vm.on_request_headers(&mut again, 2), Next::Stop);
        assert_eq!(vm.counters.rl_unleased, 2);
        assert!(vm.wanted.contains(&"tok_wait".to_string()));

        // An edge that never reached the control plane knows of no limit: admitted after
        // the wait.
        let (mut vm, mut host, _) = reporting_vm(&key, "tok_unknown");
        host.shared.remove(budget::MODE);
        assert_eq!(vm.on_request_headers(&mut host, 1), Next::Wait);
        host.now += 2;
        assert_eq!(vm.wake(&mut host), 0);
        assert_eq!(host.resumed, vec![1]);
        assert_eq!(vm.counters.allow, 1);
    }

    #[test]
    fn refusals_reply_and_count_by_reason() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut vm = vm(&key, json!({}));
        let mut host = request(None);
        assert_eq!(vm.on_request_headers(&mut host, 1), Next::Stop);
        let (status, headers, body) = host.reply.clone().unwrap();
        assert_eq!(status, 401);
        assert!(headers.contains(&("www-authenticate".into(), "Bearer realm=\"tessera\"".into())));
        assert_eq!(
            body,
            "{\"error\":\"invalid_request\",\"reason\":\"token_missing\"}"
        );
        assert_eq!(deny_count(&vm, Reason::TokenMissing), 1);
        assert!(host.set.is_empty());
    }

    #[test]
    fn peer_address_is_read_only_for_an_ip_filter() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut vm = vm(&key, json!({}));
        let inside = TokenBuilder::new(now())
            .claim("ip_allow", json!(["192.0.2.0/24"]))
            .sign(&key);
        let mut host = request(Some(&inside));
        assert_eq!(vm.on_request_headers(&mut host, 1), Next::Continue);
        assert_eq!(host.source_reads, 1);
        let outside = TokenBuilder::new(now())
            .claim("ip_allow", json!(["198.51.100.0/24"]))
            .sign(&key);
        let mut host = request(Some(&outside));
        assert_eq!(vm.on_request_headers(&mut host, 1), Next::Stop);
        assert_eq!(host.reply.as_ref().map(|r| r.0), Some(403));
        assert_eq!(deny_count(&vm, Reason::IpNotAllowed), 1);
        assert_eq!(vm.counters.allow, 1);
    }

    #[test]
    fn identity_header_that_cannot_be_set_fails_closed() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut vm = vm(&key, json!({}));
        let mut host = request(Some(&TokenBuilder::new(now()).sign(&key)));
        host.fail_set = true;
        assert_eq!(vm.on_request_headers(&mut host, 1), Next::Stop);
        assert_eq!(host.reply.as_ref().map(|r| r.0), Some(500));
    }

    fn publish(host: &mut Mock, version: u64, keys: &[&TestKey], lst: &str) {
        let state = shared::State {
            lists: vec![shared::PublishedList {
                uri: DEFAULT_STATUS_URI.into(),
                lst: lst.into(),
                withdrawn: vec![],
            }],
            jwks: vec![jwks(keys).to_string()],
        };
        host.shared.insert(shared::STATE.into(), state.encode());
        let meta = shared::Meta {
            version,
            last_success: host.now,
            keys_fetched_ms: 0,
        };
        host.shared.insert(shared::META.into(), meta.encode());
    }

    #[test]
    fn synced_keys_lists_usage_and_unknown_kid() {
        let inline = TestKey::generate(Alg::EdDSA, "inline");
        let synced = TestKey::generate(Alg::EdDSA, "synced");
        let rotated = TestKey::generate(Alg::EdDSA, "rotated");
        let usage = json!({"cluster": "cp", "credential": "edge-secret"});
        let mut vm = vm(
            &inline,
            json!({"sync": {"max_staleness_secs": 30, "usage": usage}}),
        );
        let revoked = TokenBuilder::new(now()).status_idx(1).sign(&synced);
        let mut host = request(Some(&revoked));
        // Nothing published yet: the synced key is unknown, and a refresh is asked for.
        assert_eq!(vm.on_request_headers(&mut host, 1), Next::Stop);
        assert_eq!(deny_count(&vm, Reason::KeyUnknown), 1);
        assert!(host.shared.contains_key(JWKS_KICK));
        // At most once a second per VM.
        host.shared.remove(JWKS_KICK);
        vm.on_request_headers(&mut host, 1);
        assert!(!host.shared.contains_key(JWKS_KICK));
        assert_eq!(vm.counters.jwks_refresh_requested, 1);

        // The poller publishes the keys and the list: index 1 is revoked.
        publish(&mut host, 1, &[&synced], &status_list_lst(&[0, 1]));
        vm.on_request_headers(&mut host, 1);
        assert_eq!(deny_count(&vm, Reason::Revoked), 1);
        let fine = TokenBuilder::new(now()).status_idx(0).sign(&synced);
        let mut ok = request(Some(&fine));
        host.shared.insert(budget::MODE.into(), b"U".to_vec());
        ok.shared = host.shared.clone();
        assert_eq!(vm.on_request_headers(&mut ok, 1), Next::Continue);
        // The org limits no token (the last usage answer said so): nothing waits.
        // Usage: the verified token's decisions, with the peer address, query removed.
        let body = vm
            .usage
            .as_mut()
            .unwrap()
            .take_batch(u64::MAX, 0, 10, None)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let events = v["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "{body}");
        assert_eq!(events[0]["reason"], "revoked");
        assert_eq!(events[1]["outcome"], "allow");
        assert_eq!(events[1]["ip"], "192.0.2.7");
        assert_eq!(events[1]["path"], "/things");

        // A rotated key: a later version replaces the synced set, the cache is cleared.
        publish(&mut ok, 2, &[&rotated], &status_list_lst(&[0, 1]));
        let mut gone = request(Some(&fine));
        gone.shared = ok.shared.clone();
        gone.now += 1;
        // Keys are synced now: the unknown kid pauses the request and asks for keys.
        assert_eq!(vm.on_request_headers(&mut gone, 1), Next::Wait);
        assert_eq!(vm.counters.jwks_refresh_requested, 2);
        // A key fetch that left after it ended without the kid: refused for good.
        let mut meta = shared::Meta::decode(&gone.shared[shared::META]).unwrap();
        meta.keys_fetched_ms = gone.now * 1000;
        gone.shared.insert(shared::META.into(), meta.encode());
        assert_eq!(vm.wake(&mut gone), 0);
        assert_eq!(gone.reply.as_ref().map(|r| r.0), Some(401));
        assert_eq!(deny_count(&vm, Reason::KeyUnknown), 3);
    }

    /// A vm that syncs keys and the default list: `(vm, host with v1 published)`, the list
    /// holding 4 entries, index 1 revoked.
    fn synced(key: &TestKey, policy: &str) -> (Vm, Mock) {
        let vm = vm(
            key,
            json!({"status": {"fail_policy": policy}, "sync": {"max_staleness_secs": 30}}),
        );
        let mut host = request(None);
        publish(&mut host, 1, &[key], &status_list_lst(&[0, 1, 0, 0]));
        (vm, host)
    }

    fn on(host: &Mock, token: &str) -> Mock {
        let mut h = request(Some(token));
        h.shared = host.shared.clone();
        h.now = host.now;
        h.ms = host.ms;
        h
    }

    #[test]
    fn a_fresh_index_waits_for_the_published_list_then_passes() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let (mut vm, base) = synced(&key, "closed");
        let fresh = TokenBuilder::new(now()).status_idx(5).sign(&key);
        let mut host = on(&base, &fresh);
        assert_eq!(vm.on_request_headers(&mut host, 7), Next::Wait);
        assert!(vm.is_waiting(7) && !vm.is_waiting(8));
        assert!(host.reply.is_none() && host.set.is_empty());
        // Nothing is counted for the first decision, only the wait.
        assert_eq!(vm.counters.refresh_wait, 1);
        assert_eq!(deny_count(&vm, Reason::StatusUnavailable), 0);
        // No key fetch is asked for a status list (the long poll brings it).
        assert!(!host.shared.contains_key(JWKS_KICK));
        // Ticks with nothing new: still waiting.
        host.ms = 300;
        assert_eq!(vm.wake(&mut host), 1);
        // The sync publishes the list with index 5: decided again, allowed, resumed.
        publish(&mut host, 2, &[&key], &status_list_lst(&[0, 1, 0, 0, 0, 0]));
        assert_eq!(vm.wake(&mut host), 0);
        assert_eq!(host.resumed, [7]);
        assert_eq!(
            host.set.len(),
            4,
            "identity headers set on the resumed request"
        );
        assert_eq!(vm.counters.allow, 1);
        assert!(!vm.is_waiting(7));
    }

    #[test]
    fn a_forged_index_waits_at_most_the_bound_then_the_fail_policy_decides() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        for (policy, want) in [("closed", Some(503)), ("open", None)] {
            let (mut vm, base) = synced(&key, policy);
            let forged = TokenBuilder::new(now()).status_idx(1 << 40).sign(&key);
            let mut host = on(&base, &forged);
            assert_eq!(vm.on_request_headers(&mut host, 3), Next::Wait);
            // Another list version (not holding it): decided again, waits on.
            publish(&mut host, 2, &[&key], &status_list_lst(&[0, 1, 0, 0, 0]));
            host.ms = 500;
            assert_eq!(vm.wake(&mut host), 1, "{policy}");
            assert!(host.reply.is_none() && host.resumed.is_empty());
            // The bound passes: final, the fail policy decides.
            host.ms = 0;
            host.now += 1;
            assert_eq!(vm.wake(&mut host), 0, "{policy}");
            match want {
                Some(status) => {
                    assert_eq!(host.reply.as_ref().map(|r| r.0), Some(status));
                    assert_eq!(deny_count(&vm, Reason::StatusUnavailable), 1);
                    assert!(host.resumed.is_empty());
                }
                None => {
                    assert_eq!(host.resumed, [3]);
                    assert_eq!(vm.counters.status_fail_open, 1);
                }
            }
        }
    }

    /// `max_wait_ms` bounds the wait: a forged index is decided for good once it passed,
    /// not before (the mock clock, no timing).
    #[test]
    fn the_configured_max_wait_ms_bounds_the_wait() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let mut vm = vm(
            &key,
            json!({"max_wait_ms": 250, "sync": {"max_staleness_secs": 30}}),
        );
        let mut base = request(None);
        publish(&mut base, 1, &[&key], &status_list_lst(&[0, 1, 0, 0]));
        let forged = TokenBuilder::new(now()).status_idx(1 << 40).sign(&key);
        let mut host = on(&base, &forged);
        let start = host.ms;
        assert_eq!(vm.on_request_headers(&mut host, 3), Next::Wait);
        host.ms = start + 249;
        assert_eq!(vm.wake(&mut host), 1, "still within max_wait_ms");
        assert!(host.reply.is_none());
        host.ms = start + 250;
        assert_eq!(vm.wake(&mut host), 0, "max_wait_ms passed: final");
        assert_eq!(host.reply.as_ref().map(|r| r.0), Some(503));
        assert_eq!(deny_count(&vm, Reason::StatusUnavailable), 1);
    }

    #[test]
    fn an_unknown_kid_waits_for_the_rotated_keys() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let rotated = TestKey::generate(Alg::EdDSA, "rotated");
        let (mut vm, base) = synced(&key, "closed");
        let token = TokenBuilder::new(now()).status_idx(0).sign(&rotated);
        let mut host = on(&base, &token);
        host.ms = 400;
        assert_eq!(vm.on_request_headers(&mut host, 9), Next::Wait);
        assert!(
            host.shared.contains_key(JWKS_KICK),
            "the sync is asked for keys"
        );
        // A key fetch that left before the request paused does not decide it.
        let mut meta = shared::Meta::decode(&host.shared[shared::META]).unwrap();
        meta.keys_fetched_ms = host.now * 1000 + 399;
        host.shared.insert(shared::META.into(), meta.encode());
        assert_eq!(vm.wake(&mut host), 1);
        // The new key set is published: allowed and resumed.
        publish(
            &mut host,
            2,
            &[&key, &rotated],
            &status_list_lst(&[0, 1, 0, 0]),
        );
        assert_eq!(vm.wake(&mut host), 0);
        assert_eq!(host.resumed, [9]);
        assert_eq!(vm.counters.allow, 1);
    }

    #[test]
    fn a_request_whose_client_left_is_dropped_and_waiters_are_bounded() {
        let key = TestKey::generate(Alg::EdDSA, "k");
        let (mut vm, base) = synced(&key, "closed");
        let forged = TokenBuilder::new(now()).status_idx(1 << 40).sign(&key);
        let mut host = on(&base, &forged);
        for stream in 0..MAX_WAITERS as u32 {
            assert_eq!(vm.on_request_headers(&mut host, stream), Next::Wait);
        }
        // Full: the next one is decided at once on what is held.
        assert_eq!(vm.on_request_headers(&mut host, 5000), Next::Stop);
        assert_eq!(host.reply.as_ref().map(|r| r.0), Some(503));
        vm.forget(0);
        assert_eq!(vm.waiting(), MAX_WAITERS - 1);
        host.reply = None;
        host.gone = (1..MAX_WAITERS as u32).collect();
        host.now += 2;
        assert_eq!(vm.wake(&mut host), 0);
        assert!(host.reply.is_none(), "no answer to a request that is gone");
    }

    #[test]
    fn without_synced_data_nothing_waits() {
        // Inline keys and lists only: an unknown kid and an index beyond the list are
        // decided at once, as before.
        let key = TestKey::generate(Alg::EdDSA, "k");
        let other = TestKey::generate(Alg::EdDSA, "other");
        let mut vm = vm(&key, json!({}));
        let mut host = request(Some(&TokenBuilder::new(now()).sign(&other)));
        assert_eq!(vm.on_request_headers(&mut host, 1), Next::Stop);
        let mut host = request(Some(&TokenBuilder::new(now()).status_idx(99).sign(&key)));
        assert_eq!(vm.on_request_headers(&mut host, 2), Next::Stop);
        assert_eq!(host.reply.as_ref().map(|r| r.0), Some(503));
        assert_eq!(vm.waiting(), 0);
    }
}
