//! Tessera's proxy-wasm filter: adapts Envoy's host calls to `tessera-core`.
//!
//! The root context reads and validates the plugin configuration once (`on_configure`,
//! refusing a bad one) and owns the per-VM verified-token cache and metrics; each HTTP
//! context asks core for a decision and applies the [`plan::Plan`]. Host errors are mapped,
//! not unwrapped: the module never traps on request input.

pub mod lease;
pub mod native;
pub mod plan;
pub mod shared;
pub mod sync;
pub mod usage;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use tessera_core::config::UsageSettings;
use tessera_core::jwks::{KeyMaterial, KeySet};
use tessera_core::{
    CacheUse, Decision, Outcome, Reason, Request, SignatureRequest, StatusList, Step, TokenCache,
    Verifier,
};

use crate::plan::Plan;

proxy_wasm::main! {{
    // Also installs the SDK's panic hook, which logs panics at critical level.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

fn log(level: LogLevel, msg: &str) {
    // Logging failures cannot be reported anywhere else; ignore them.
    let _ = hostcalls::log(level, msg);
}

/// Loads a filter plugin configuration exactly as `on_configure` does: the lease-mode
/// poller settings (`"sync": {"mode": "lease", ...}`) are the filter's own, core reads the
/// rest. Errors name the field.
pub fn load_filter_config(
    text: &str,
) -> Result<(Verifier, Option<lease::LeaseConfig>), tessera_core::ConfigError> {
    let (rest, lease) = lease::split_filter_config(text)?;
    Ok((Verifier::from_config_json(&rest)?, lease))
}

/// Counter ids, defined once per VM.
#[derive(Default)]
struct Metrics {
    allow: Option<u32>,
    deny: Vec<(Reason, Option<u32>)>,
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
    status_fail_open: Option<u32>,
    usage_sent: Option<u32>,
    usage_dropped: Option<u32>,
    /// Gauge: this VM's linear memory, in bytes (it never shrinks, so it is the peak).
    vm_memory: Option<u32>,
    /// Gauge: bytes held by the status lists in force.
    status_list_bytes: Option<u32>,
}

/// The VM's linear memory in bytes.
fn vm_memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        (core::arch::wasm32::memory_size(0) as u64) * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

fn metric(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!("tessera: cannot define metric {name}: {status:?}"),
            );
            None
        }
    }
}

fn counter(name: &str) -> Option<u32> {
    metric(MetricType::Counter, name)
}

fn gauge(name: &str) -> Option<u32> {
    metric(MetricType::Gauge, name)
}

impl Metrics {
    fn define() -> Metrics {
        Metrics {
            allow: counter("tessera.allow"),
            deny: Reason::ALL
                .iter()
                .map(|r| (*r, counter(&format!("tessera.deny.{}", r.as_str()))))
                .collect(),
            cache_hit: counter("tessera.cache_hit"),
            cache_miss: counter("tessera.cache_miss"),
            status_fail_open: counter("tessera.status_fail_open"),
            usage_sent: counter("tessera.usage_sent"),
            usage_dropped: counter("tessera.usage_dropped"),
            vm_memory: gauge("tessera.vm_memory_bytes"),
            status_list_bytes: gauge("tessera.status_list_bytes"),
        }
    }

    /// Sets the memory gauges (after a configuration or a list change). Every VM of the
    /// plugin writes the same gauges; they read as one VM's figures.
    fn record_memory(&self, verifier: &Verifier) {
        let lists: usize = verifier
            .config()
            .status_lists
            .iter()
            .map(|(_, l)| l.as_bytes().len())
            .sum();
        if let Some(id) = self.status_list_bytes {
            let _ = hostcalls::record_metric(id, lists as u64);
        }
        if let Some(id) = self.vm_memory {
            let _ = hostcalls::record_metric(id, vm_memory_bytes());
        }
    }

    fn add(id: Option<u32>, n: usize) {
        if let (Some(id), true) = (id, n > 0) {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn bump(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn record(&self, decision: &Decision, cache: CacheUse) {
        match cache {
            CacheUse::Hit => Metrics::bump(self.cache_hit),
            CacheUse::Miss => Metrics::bump(self.cache_miss),
            CacheUse::NotUsed => {}
        }
        match decision {
            Decision::Allow(id) => {
                Metrics::bump(self.allow);
                if id.status_fail_open {
                    Metrics::bump(self.status_fail_open);
                }
            }
            Decision::Deny(d) => {
                let id = self
                    .deny
                    .iter()
                    .find(|(r, _)| *r == d.reason)
                    .and_then(|(_, id)| *id);
                Metrics::bump(id);
            }
        }
    }
}

/// State shared by every HTTP context of one VM.
struct Shared {
    verifier: RefCell<Verifier>,
    cache: RefCell<TokenCache>,
    metrics: Metrics,
    /// The shared-data version last applied (sync mode).
    synced_version: Cell<Option<u64>>,
    /// The JWKS documents last applied, to clear the cache only when keys change.
    synced_jwks: RefCell<Vec<String>>,
    usage: Option<(UsageSettings, RefCell<usage::Buffer>)>,
    /// Envoy's `verify_signature` foreign function answers (cleared on its first error).
    native_crypto: Cell<bool>,
}

/// The root context: a filter (one per worker VM) or the sync service (one per process),
/// decided by the configuration it receives.
#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
    sync: Option<SyncRoot>,
    /// Lease-mode sync (filter role with `"sync": {"mode": "lease"}`).
    lease: Option<LeaseRoot>,
    /// In-flight usage call (filter role).
    usage_call: Option<u32>,
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn call_response() -> (Option<u16>, HashMap<String, String>) {
    let headers: HashMap<String, String> =
        match hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders) {
            Ok(pairs) => pairs
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect(),
            Err(_) => HashMap::new(),
        };
    let status = headers.get(":status").and_then(|s| s.parse::<u16>().ok());
    (status, headers)
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (status, headers) = call_response();
        let poller = match (self.sync.as_mut(), self.lease.as_mut()) {
            (Some(sync), _) => Some(sync),
            (None, Some(lease)) if self.usage_call != Some(token_id) => lease.poller.as_mut(),
            _ => None,
        };
        if let Some(sync) = poller {
            let body = match hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size) {
                Ok(Some(b)) => b,
                _ => Vec::new(),
            };
            sync.on_response(token_id, status, &headers, &body);
            return;
        }
        if self.usage_call == Some(token_id) {
            self.usage_call = None;
            if let Some(shared) = &self.shared {
                if let Some((_, buffer)) = &shared.usage {
                    let mut buffer = buffer.borrow_mut();
                    if status.is_some_and(|s| (200..300).contains(&s)) {
                        Metrics::add(shared.metrics.usage_sent, buffer.acknowledged());
                    } else {
                        log(
                            LogLevel::Warn,
                            &format!("tessera: usage report refused or failed: {status:?}"),
                        );
                        Metrics::add(shared.metrics.usage_dropped, buffer.failed());
                    }
                }
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(Some(b)) => b,
            Ok(None) => Vec::new(),
            Err(status) => {
                log(
                    LogLevel::Critical,
                    &format!("tessera: cannot read the plugin configuration: {status:?}"),
                );
                return false;
            }
        };
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(_) => {
                log(
                    LogLevel::Critical,
                    "tessera: invalid plugin configuration: .: is not UTF-8",
                );
                return false;
            }
        };
        if sync::is_sync_config(text) {
            return match sync::SyncServiceConfig::from_json(text) {
                Ok(config) => {
                    let mut root = SyncRoot {
                        poller: sync::Poller::new(config),
                        calls: HashMap::new(),
                    };
                    if let Err(s) = hostcalls::set_tick_period(Duration::from_millis(200)) {
                        log(
                            LogLevel::Critical,
                            &format!("tessera: sync service cannot set a tick: {s:?}"),
                        );
                        return false;
                    }
                    root.dispatch_due();
                    self.sync = Some(root);
                    log(LogLevel::Info, "tessera: sync service configured");
                    true
                }
                Err(e) => {
                    log(
                        LogLevel::Critical,
                        &format!("tessera: invalid sync service configuration: {e}"),
                    );
                    false
                }
            };
        }
        match load_filter_config(text) {
            Ok((verifier, lease)) => {
                let cache = RefCell::new(verifier.new_cache());
                let usage = verifier
                    .config()
                    .sync
                    .as_ref()
                    .and_then(|s| s.usage.clone())
                    .map(|u| {
                        let buffer = usage::Buffer::new(u.max_buffer);
                        (u, RefCell::new(buffer))
                    });
                let usage_tick = usage
                    .as_ref()
                    .map(|(u, _)| (u.flush_interval_ms / 4).clamp(20, 250));
                let lease_tick = lease.as_ref().map(|_| lease::TICK_MS);
                let tick = match (usage_tick, lease_tick) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(tick) = tick {
                    if let Err(s) = hostcalls::set_tick_period(Duration::from_millis(tick)) {
                        log(
                            LogLevel::Critical,
                            &format!("tessera: cannot set the tick: {s:?}"),
                        );
                        return false;
                    }
                }
                // The lease is first looked at on the first tick, not here: Envoy also
                // configures the plugin in short-lived VMs to validate it.
                self.lease = lease.map(LeaseRoot::new);
                let metrics = Metrics::define();
                metrics.record_memory(&verifier);
                self.shared = Some(Rc::new(Shared {
                    verifier: RefCell::new(verifier),
                    cache,
                    metrics,
                    synced_version: Cell::new(None),
                    synced_jwks: RefCell::new(Vec::new()),
                    usage,
                    native_crypto: Cell::new(true),
                }));
                log(LogLevel::Info, "tessera: plugin configuration loaded");
                true
            }
            Err(e) => {
                log(
                    LogLevel::Critical,
                    &format!("tessera: invalid plugin configuration: {e}"),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(sync) = self.sync.as_mut() {
            sync.dispatch_due();
            return;
        }
        if let Some(lease) = self.lease.as_mut() {
            lease.tick();
        }
        if self.usage_call.is_some() {
            return;
        }
        let Some(shared) = &self.shared else { return };
        let Some((settings, buffer)) = &shared.usage else {
            return;
        };
        let body = buffer.borrow_mut().take_batch(
            now_ms(),
            settings.flush_interval_ms,
            settings.max_batch,
        );
        let Some(body) = body else { return };
        let auth = format!("Bearer {}", settings.credential);
        let headers = vec![
            (":method", "POST"),
            (":path", settings.path.as_str()),
            (":authority", settings.authority.as_str()),
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        match hostcalls::dispatch_http_call(
            &settings.cluster,
            headers,
            Some(body.as_bytes()),
            vec![],
            Duration::from_secs(5),
        ) {
            Ok(token) => self.usage_call = Some(token),
            Err(s) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "tessera: cannot send usage to cluster {}: {s:?}",
                        settings.cluster
                    ),
                );
                Metrics::add(shared.metrics.usage_dropped, buffer.borrow_mut().failed());
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.sync.is_some() {
            return None;
        }
        Some(Box::new(Http {
            shared: self.shared.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    shared: Option<Rc<Shared>>,
}

impl Context for Http {}

fn request_headers() -> Vec<(String, String)> {
    match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
        // Header values may hold any octets; non-UTF-8 ones can never be valid tokens, and
        // lossy conversion keeps them from being mistaken for one.
        Ok(pairs) => pairs
            .into_iter()
            .map(|(k, v)| {
                // Valid UTF-8 (nearly always) keeps its buffer: no copy per header.
                let v = String::from_utf8(v)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                (k, v)
            })
            .collect(),
        Err(status) => {
            log(
                LogLevel::Error,
                &format!("tessera: cannot read request headers: {status:?}"),
            );
            Vec::new()
        }
    }
}

fn source_address() -> Option<String> {
    match hostcalls::get_property(vec!["source", "address"]) {
        Ok(Some(b)) => String::from_utf8(b).ok(),
        _ => None,
    }
}

fn now_secs() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn reply_unavailable() -> Action {
    let _ = hostcalls::send_http_response(
        500,
        vec![("content-type", "application/json")],
        Some(b"{\"error\":\"server_error\",\"reason\":\"filter_error\"}"),
    );
    Action::Pause
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.as_ref() else {
            // Envoy does not route traffic through a filter whose configure failed; this is
            // only a guard so the module fails closed if it ever happened.
            return reply_unavailable();
        };
        let headers = request_headers();
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let source = source_address();
        let req = Request {
            method: find(":method"),
            path: find(":path"),
            headers: &headers,
            source_address: source.as_deref(),
        };
        let now = now_secs();
        refresh_from_sync(shared, now);
        let Ok(verifier) = shared.verifier.try_borrow() else {
            return reply_unavailable();
        };
        let outcome = decide(shared, &verifier, &req, now);
        shared.metrics.record(&outcome.decision, outcome.cache);
        record_usage(shared, &verifier, &req, &outcome, now);

        match plan::plan(verifier.config(), &outcome, &headers) {
            Plan::Forward { remove, add } => {
                for name in &remove {
                    if let Err(status) =
                        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None)
                    {
                        // A client-sent identity header that cannot be removed must not
                        // reach the upstream: fail closed.
                        log(
                            LogLevel::Error,
                            &format!("tessera: cannot remove header {name}: {status:?}"),
                        );
                        return reply_unavailable();
                    }
                }
                for (name, value) in &add {
                    if let Err(status) =
                        hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value)
                    {
                        log(
                            LogLevel::Error,
                            &format!("tessera: cannot add header {name}: {status:?}"),
                        );
                    }
                }
                Action::Continue
            }
            Plan::Reply {
                status,
                headers,
                body,
            } => {
                let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                if let Err(s) = hostcalls::send_http_response(status, hs, Some(body.as_bytes())) {
                    log(
                        LogLevel::Error,
                        &format!("tessera: cannot send local reply: {s:?}"),
                    );
                }
                Action::Pause
            }
        }
    }
}

/// Applies what the sync service published, if it moved since the last request: one
/// small shared-data read per request, the lists and keys only on change.
fn refresh_from_sync(shared: &Shared, now: u64) {
    let Ok(mut verifier) = shared.verifier.try_borrow_mut() else {
        return;
    };
    let Some(max_staleness) = verifier
        .config()
        .sync
        .as_ref()
        .map(|s| s.max_staleness_secs)
    else {
        return;
    };
    let meta = match hostcalls::get_shared_data(shared::META) {
        Ok((Some(b), _)) => shared::Meta::decode(&b),
        _ => None,
    };
    let Some(meta) = meta else {
        verifier.set_status_fresh(false);
        return;
    };
    if shared.synced_version.get() != Some(meta.version) {
        let state = match hostcalls::get_shared_data(shared::STATE) {
            Ok((Some(b), _)) => shared::State::decode(&b),
            _ => None,
        };
        match state {
            Some(state) => {
                for l in &state.lists {
                    match StatusList::from_lst(&l.lst) {
                        Ok(list) => verifier.set_status_list(&l.uri, list),
                        Err(e) => log(
                            LogLevel::Error,
                            &format!("tessera: published list {}: {e}", l.uri),
                        ),
                    }
                }
                let mut synced_jwks = shared.synced_jwks.borrow_mut();
                if *synced_jwks != state.jwks {
                    let mut keys = KeySet::default();
                    for text in &state.jwks {
                        let parsed = serde_json::from_str::<serde_json::Value>(text)
                            .map_err(|e| e.to_string())
                            .and_then(|doc| {
                                KeySet::from_jwks(&doc, "jwks").map_err(|e| e.to_string())
                            });
                        match parsed {
                            Ok(k) => keys = keys.merged_with(&k),
                            Err(e) => {
                                log(LogLevel::Error, &format!("tessera: published JWKS: {e}"))
                            }
                        }
                    }
                    verifier.set_synced_keys(&keys);
                    if let Ok(mut cache) = shared.cache.try_borrow_mut() {
                        cache.clear();
                    }
                    *synced_jwks = state.jwks;
                }
                shared.synced_version.set(Some(meta.version));
                shared.metrics.record_memory(&verifier);
            }
            None => log(
                LogLevel::Error,
                "tessera: published sync state is unreadable",
            ),
        }
    }
    verifier.set_status_fresh(shared::is_fresh(meta.last_success, now, max_staleness));
}

/// Queues a usage record for a decision about a verified token. Never blocks: a full
/// buffer drops the record and counts it.
fn record_usage(
    shared: &Shared,
    verifier: &Verifier,
    req: &Request<'_>,
    outcome: &Outcome,
    now: u64,
) {
    let Some((_, buffer)) = &shared.usage else {
        return;
    };
    let Some(subject) = &outcome.subject else {
        return;
    };
    let xff: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|(_, v)| v.as_str())
        .collect();
    let ip =
        tessera_core::ip::client_address(verifier.config().client_ip, req.source_address, &xff)
            .map(|ip| ip.to_string());
    let (result, reason) = match &outcome.decision {
        Decision::Allow(_) => ("allow", None),
        Decision::Deny(d) => ("deny", Some(d.reason.as_str())),
    };
    let record = usage::Record {
        token_id: subject.token_id.clone(),
        parent: subject.parent.clone(),
        at: now,
        ip,
        outcome: result,
        reason,
        method: req.method.to_string(),
        path: req.path.split('?').next().unwrap_or("").to_string(),
    };
    let pushed = buffer
        .try_borrow_mut()
        .map(|mut b| b.push(record))
        .unwrap_or(false);
    if !pushed {
        Metrics::bump(shared.metrics.usage_dropped);
    }
}

/// The sync service's root: drives [`sync::Poller`] with host calls.
struct SyncRoot {
    poller: sync::Poller,
    calls: HashMap<u32, sync::Target>,
}

impl SyncRoot {
    fn dispatch_due(&mut self) {
        let now = now_secs();
        let cluster = self.poller.config().cluster.clone();
        let authority = self.poller.config().authority.clone();
        let before = self.poller.meta();
        for call in self.poller.due(now) {
            let mut headers: Vec<(&str, &str)> = vec![
                (":method", "GET"),
                (":path", call.path.as_str()),
                (":authority", authority.as_str()),
                ("accept", "application/json"),
            ];
            for (k, v) in &call.headers {
                headers.push((k.as_str(), v.as_str()));
            }
            match hostcalls::dispatch_http_call(
                &cluster,
                headers,
                None,
                vec![],
                Duration::from_millis(call.timeout_ms),
            ) {
                Ok(token) => {
                    self.calls.insert(token, call.target);
                }
                Err(s) => {
                    log(
                        LogLevel::Warn,
                        &format!("tessera: sync cannot call cluster {cluster}: {s:?}"),
                    );
                    self.poller.on_dispatch_failed(call.target, now);
                }
            }
        }
        // Dispatching a long poll after a success refreshes freshness: publish it.
        let after = self.poller.meta();
        if after != before {
            if let Err(s) = hostcalls::set_shared_data(shared::META, Some(&after.encode()), None) {
                log(
                    LogLevel::Error,
                    &format!("tessera: sync cannot publish meta: {s:?}"),
                );
            }
        }
    }

    fn on_response(
        &mut self,
        token: u32,
        status: Option<u16>,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) {
        let Some(target) = self.calls.remove(&token) else {
            return;
        };
        let now = now_secs();
        let r = sync::Response {
            status,
            headers,
            body,
        };
        let (publish, err) = self.poller.on_response(target, &r, now);
        if let Some(e) = err {
            log(LogLevel::Warn, &format!("tessera: sync: {e}"));
        }
        if publish == sync::Publish::State {
            let state = self.poller.state().encode();
            if let Err(s) = hostcalls::set_shared_data(shared::STATE, Some(&state), None) {
                log(
                    LogLevel::Error,
                    &format!("tessera: sync cannot publish state: {s:?}"),
                );
            }
        }
        if publish != sync::Publish::Nothing {
            if let Err(s) =
                hostcalls::set_shared_data(shared::META, Some(&self.poller.meta().encode()), None)
            {
                log(
                    LogLevel::Error,
                    &format!("tessera: sync cannot publish meta: {s:?}"),
                );
            }
        }
        // Re-poll at once: a change feed answered means another change may follow.
        self.dispatch_due();
    }
}

/// Lease-mode sync in one root context: looks at the shared lease each tick, and while it
/// holds it, runs the poller (see [`lease`]).
struct LeaseRoot {
    config: lease::LeaseConfig,
    /// This root context's holder id; 0 until one is allocated.
    me: u64,
    /// The poller, while this root context holds the lease.
    poller: Option<SyncRoot>,
    /// Counter: leases taken (the first one and every takeover).
    acquired: Option<u32>,
    /// Gauge: the holder id of the root context that took the lease last.
    holder: Option<u32>,
}

/// Allocates a holder id from the shared counter (compare-and-swap, a few attempts).
fn allocate_holder_id() -> Option<u64> {
    for _ in 0..16 {
        match hostcalls::get_shared_data(lease::SEQ) {
            Ok((None, _)) => {
                // Created only if still missing; the next attempt counts from it.
                let _ =
                    hostcalls::set_shared_data(lease::SEQ, Some(b"0"), Some(lease::CREATE_ONLY));
            }
            Ok((Some(bytes), Some(cas))) => {
                let next = lease::next_seq(Some(&bytes)).unwrap_or(1);
                let text = next.to_string();
                if hostcalls::set_shared_data(lease::SEQ, Some(text.as_bytes()), Some(cas)).is_ok()
                {
                    return Some(next);
                }
            }
            Ok((Some(_), None)) | Err(_) => return None,
        }
    }
    None
}

impl LeaseRoot {
    fn new(config: lease::LeaseConfig) -> LeaseRoot {
        LeaseRoot {
            config,
            me: 0,
            poller: None,
            acquired: counter("tessera.sync.lease_acquired"),
            holder: gauge("tessera.sync.lease_holder"),
        }
    }

    fn tick(&mut self) {
        if self.me == 0 {
            match allocate_holder_id() {
                Some(id) => self.me = id,
                None => {
                    log(
                        LogLevel::Warn,
                        "tessera: sync lease: no holder id yet (shared data busy); retrying",
                    );
                    return;
                }
            }
        }
        let now = now_ms();
        let read = match hostcalls::get_shared_data(lease::LEASE) {
            Ok((Some(bytes), Some(cas))) => Some((bytes, cas)),
            Ok(_) => None,
            Err(s) => {
                log(
                    LogLevel::Warn,
                    &format!("tessera: sync lease unreadable: {s:?}"),
                );
                return;
            }
        };
        let previous = read
            .as_ref()
            .and_then(|(b, _)| lease::Record::decode(b))
            .map(|r| r.holder)
            .unwrap_or(0);
        let action = lease::decide(
            self.me,
            read.as_ref().map(|(b, c)| (b.as_slice(), *c)),
            now,
            self.config.lease_ms,
        );
        match action {
            lease::Action::Create => {
                let _ = hostcalls::set_shared_data(
                    lease::LEASE,
                    Some(&lease::Record::EMPTY.encode()),
                    Some(lease::CREATE_ONLY),
                );
                self.step_down(previous);
            }
            lease::Action::Follow => self.step_down(previous),
            lease::Action::Write { cas, record, .. } => {
                match hostcalls::set_shared_data(lease::LEASE, Some(&record.encode()), Some(cas)) {
                    Ok(()) => {
                        if self.poller.is_none() {
                            self.take_over(previous);
                        }
                        if let Some(poller) = self.poller.as_mut() {
                            poller.dispatch_due();
                        }
                    }
                    // Another VM wrote first: it holds the lease now.
                    Err(_) => self.step_down(previous),
                }
            }
        }
    }

    fn take_over(&mut self, previous: u64) {
        let meta = match hostcalls::get_shared_data(shared::META) {
            Ok((Some(b), _)) => shared::Meta::decode(&b),
            _ => None,
        };
        let state = match hostcalls::get_shared_data(shared::STATE) {
            Ok((Some(b), _)) => shared::State::decode(&b),
            _ => None,
        };
        let mut poller = sync::Poller::new(self.config.poller.clone());
        poller.resume(meta, state.as_ref());
        self.poller = Some(SyncRoot {
            poller,
            calls: HashMap::new(),
        });
        Metrics::bump(self.acquired);
        if let Some(id) = self.holder {
            let _ = hostcalls::record_metric(id, self.me);
        }
        log(
            LogLevel::Info,
            &format!(
                "tessera: sync lease taken by holder {} (previous holder {previous}); polling the control plane",
                self.me
            ),
        );
    }

    fn step_down(&mut self, holder: u64) {
        if self.poller.take().is_some() {
            log(
                LogLevel::Warn,
                &format!(
                    "tessera: sync lease of holder {} lost to holder {holder}; polling stopped",
                    self.me
                ),
            );
        }
    }
}

/// Decides one request: core does everything but the signature, which Envoy's BoringSSL
/// checks for ES256 and RS256 (through the `verify_signature` foreign function) and core
/// checks in Rust for Ed25519.
fn decide(shared: &Shared, verifier: &Verifier, req: &Request<'_>, now: u64) -> Outcome {
    // Re-entrancy cannot happen in a single-threaded VM; if it did, go without the cache.
    let mut cache = shared.cache.try_borrow_mut().ok();
    match verifier.begin(req, now, cache.as_deref_mut()) {
        Step::Done(outcome) => outcome,
        Step::Verify(pending) => {
            let ok = native_signature(shared, verifier, &pending)
                .unwrap_or_else(|| verifier.verify_signature(&pending));
            verifier.finish(pending, ok, req, now, cache.as_deref_mut())
        }
    }
}

/// The host's verdict on an ES256 or RS256 signature, or `None` to check it in Rust
/// (Ed25519, which Envoy's foreign function does not offer). This build of core has no
/// Rust ECDSA or RSA verifier (see Cargo.toml): on a host without the foreign function
/// those signatures cannot be checked and are refused (`signature_invalid`), with an
/// error logged once.
fn native_signature(
    shared: &Shared,
    verifier: &Verifier,
    pending: &SignatureRequest,
) -> Option<bool> {
    if !shared.native_crypto.get() {
        return None;
    }
    let key = verifier.key_for(pending)?;
    let signature = match &key.material {
        KeyMaterial::Es256(_) => match tessera_core::der::es256_signature_der(&pending.signature) {
            Some(der) => der,
            // Not 64 bytes: not an ES256 signature at all.
            None => return Some(false),
        },
        KeyMaterial::Rs256(_) => pending.signature.clone(),
        KeyMaterial::Ed25519(_) => return None,
    };
    let spki = key.spki()?;
    let args = native::verify_args("sha256", spki, &signature, &pending.signing_input);
    match hostcalls::call_foreign_function("verify_signature", Some(&args)) {
        Ok(Some(result)) => native::verify_result(&result),
        // proto3 encodes `result: false` with no error as zero bytes.
        Ok(None) => Some(false),
        Err(status) => {
            shared.native_crypto.set(false);
            log(
                LogLevel::Error,
                &format!(
                    "tessera: Envoy's verify_signature foreign function is unavailable \
                     ({status:?}): ES256 and RS256 tokens cannot be checked and are refused"
                ),
            );
            None
        }
    }
}
