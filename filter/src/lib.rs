//! Tessera's proxy-wasm filter: adapts Envoy's host calls to `tessera-core`.
//!
//! The root context reads and validates the plugin configuration once (`on_configure`,
//! refusing a bad one) and owns the per-VM state ([`request::Vm`]: verifier, token cache,
//! counters, usage buffer); each HTTP context runs [`request::Vm::on_request_headers`]
//! through [`ProxyHost`], the proxy-wasm implementation of [`request::Host`]. The root
//! context's tick adds the counters to Envoy's metrics and sends usage. Host errors are
//! mapped, not unwrapped: the module never traps on request input.

pub mod budget;
pub mod lease;
pub mod native;
pub mod request;
pub mod shared;
pub mod sync;
pub mod usage;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use tessera_core::{Reason, Verifier};

use crate::request::{Counters, Host, Level, Next, Vm};

proxy_wasm::main! {{
    // Also installs the SDK's panic hook, which logs panics at critical level.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(Root {
            id,
            ..Root::default()
        })
    });
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
    jwks_refresh_requested: Option<u32>,
    refresh_wait: Option<u32>,
    rl_admitted: Option<u32>,
    rl_refused: Option<u32>,
    rl_asked: Option<u32>,
    rl_unleased: Option<u32>,
    rl_unavailable: Option<u32>,
    rl_fallback: Option<u32>,
    rl_lost: Option<u32>,
    /// Leases merged from usage answers, and reports sent with spend.
    rl_leases: Option<u32>,
    rl_reports: Option<u32>,
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
            jwks_refresh_requested: counter("tessera.jwks_refresh_requested"),
            refresh_wait: counter("tessera.refresh_wait"),
            rl_admitted: counter("tessera.ratelimit.admitted"),
            rl_refused: counter("tessera.ratelimit.refused"),
            rl_asked: counter("tessera.ratelimit.asked"),
            rl_unleased: counter("tessera.ratelimit.unleased"),
            rl_unavailable: counter("tessera.ratelimit.unavailable"),
            rl_fallback: counter("tessera.ratelimit.fallback"),
            rl_lost: gauge("tessera.ratelimit.lost"),
            rl_leases: counter("tessera.ratelimit.leases"),
            rl_reports: counter("tessera.ratelimit.reports"),
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

    /// Adds the counters gathered in wasm memory since the last flush.
    fn flush(&self, c: &Counters) {
        Metrics::add64(self.allow, c.allow);
        for ((_, id), n) in self.deny.iter().zip(c.deny.iter()) {
            Metrics::add64(*id, *n);
        }
        Metrics::add64(self.cache_hit, c.cache_hit);
        Metrics::add64(self.cache_miss, c.cache_miss);
        Metrics::add64(self.status_fail_open, c.status_fail_open);
        Metrics::add64(self.usage_dropped, c.usage_dropped);
        Metrics::add64(self.jwks_refresh_requested, c.jwks_refresh_requested);
        Metrics::add64(self.refresh_wait, c.refresh_wait);
        Metrics::add64(self.rl_admitted, c.rl_admitted);
        Metrics::add64(self.rl_refused, c.rl_refused);
        Metrics::add64(self.rl_asked, c.rl_asked);
        Metrics::add64(self.rl_unleased, c.rl_unleased);
        Metrics::add64(self.rl_unavailable, c.rl_unavailable);
        Metrics::add64(self.rl_fallback, c.rl_fallback);
    }

    fn add64(id: Option<u32>, n: u64) {
        if let (Some(id), true) = (id, n > 0) {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// How often the filter role's root context flushes its counters to Envoy's metrics.
pub const METRICS_FLUSH_MS: u64 = 100;

/// The filter role's tick while requests are paused for fresher keys or status: how soon
/// a paused request sees what the sync published.
pub const WAIT_TICK_MS: u64 = 5;

/// The sync service's tick: how soon it sees a worker's request for keys.
pub const SYNC_TICK_MS: u64 = 50;

/// State shared by every HTTP context of one VM.
struct Shared {
    vm: RefCell<Vm>,
    metrics: Metrics,
}

/// The root context: a filter (one per worker VM) or the sync service (one per process),
/// decided by the configuration it receives.
#[derive(Default)]
struct Root {
    /// This root context's id (the effective context restored after waking requests).
    id: u32,
    /// The filter role's regular tick, milliseconds.
    tick_ms: u64,
    shared: Option<Rc<Shared>>,
    sync: Option<SyncRoot>,
    /// Lease-mode sync (filter role with `"sync": {"mode": "lease"}`).
    lease: Option<LeaseRoot>,
    /// In-flight usage call (filter role).
    usage_call: Option<u32>,
    /// Whether it carries the rate-limit spend, and the tokens it asked leases of (asked
    /// again if it fails).
    usage_spend: Option<Vec<String>>,
    /// The process's edge id in spend reports (read or made on first use).
    rl_edge: Option<String>,
    /// Whether this root context last saw the control plane lost (the rate limits'
    /// fallback; logged and set in `tessera.ratelimit.lost` when it changes).
    rl_lost: bool,
}

/// Shared data through proxy-wasm calls, as `budget` uses it.
struct ProxyCas;

impl budget::Cas for ProxyCas {
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
        hostcalls::get_shared_data(key).map_err(|s| format!("{s:?}"))
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<bool, String> {
        match hostcalls::set_shared_data(key, Some(value), Some(cas)) {
            Ok(()) => Ok(true),
            Err(proxy_wasm::types::Status::CasMismatch) => Ok(false),
            Err(s) => Err(format!("{s:?}")),
        }
    }
}

/// An edge id for this process's spend reports: Envoy's node id (when set) and the time
/// in nanoseconds when the first root context made it (the module has no randomness).
fn new_edge_id() -> String {
    let nanos = hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let node = match hostcalls::get_property(vec!["node", "id"]) {
        Ok(Some(b)) => String::from_utf8_lossy(&b)
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(30)
            .collect::<String>(),
        _ => String::new(),
    };
    if node.is_empty() {
        format!("envoy-{nanos:x}")
    } else {
        format!("envoy-{node}-{nanos:x}")
    }
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
            let spend = self.usage_spend.take();
            let ok = status.is_some_and(|s| (200..300).contains(&s));
            if let Some(shared) = &self.shared {
                let Ok(mut vm) = shared.vm.try_borrow_mut() else {
                    return;
                };
                // The answer to a report carries the process's next leases.
                match spend {
                    Some(_) if ok => {
                        let body = match hostcalls::get_buffer(
                            BufferType::HttpCallResponseBody,
                            0,
                            body_size,
                        ) {
                            Ok(Some(b)) => b,
                            _ => Vec::new(),
                        };
                        let (answer, readable) =
                            tessera_core::ratelimit::UsageAnswer::of_report(&body);
                        if !readable {
                            log(
                                LogLevel::Warn,
                                "tessera: the usage answer carries no readable leases; \
                                 no token is limited by this control plane",
                            );
                        }
                        let applied = budget::apply(&mut ProxyCas, &answer, now_ms());
                        Metrics::add64(shared.metrics.rl_leases, applied.leases);
                        if applied.failed > 0 {
                            log(
                                LogLevel::Warn,
                                &format!(
                                    "tessera: {} rate-limit leases could not be stored",
                                    applied.failed
                                ),
                            );
                        }
                    }
                    None if ok => {
                        // Any answer is word from the control plane.
                        let now = now_ms();
                        budget::touch(&mut ProxyCas, &|c| c.answered(now, None));
                    }
                    Some(asked) => {
                        for t in asked {
                            if !vm.wanted.contains(&t) && vm.wanted.len() < request::MAX_WANTED {
                                vm.wanted.push(t);
                            }
                        }
                    }
                    None => {}
                }
                if let Some(buffer) = vm.usage.as_mut() {
                    if ok {
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
                        kick: None,
                    };
                    if let Err(s) = hostcalls::set_tick_period(Duration::from_millis(SYNC_TICK_MS))
                    {
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
                let usage_tick = verifier
                    .config()
                    .sync
                    .as_ref()
                    .and_then(|s| s.usage.as_ref())
                    .map(|u| (u.flush_interval_ms / 4).clamp(20, 250));
                let lease_tick = lease.as_ref().map(|_| lease::TICK_MS);
                // The tick also flushes the counters kept in wasm memory.
                let tick = [usage_tick, lease_tick]
                    .into_iter()
                    .flatten()
                    .fold(METRICS_FLUSH_MS, u64::min);
                if let Err(s) = hostcalls::set_tick_period(Duration::from_millis(tick)) {
                    log(
                        LogLevel::Critical,
                        &format!("tessera: cannot set the tick: {s:?}"),
                    );
                    return false;
                }
                self.tick_ms = tick;
                // The lease is first looked at on the first tick, not here: Envoy also
                // configures the plugin in short-lived VMs to validate it.
                self.lease = lease.map(LeaseRoot::new);
                let metrics = Metrics::define();
                metrics.record_memory(&verifier);
                self.shared = Some(Rc::new(Shared {
                    vm: RefCell::new(Vm::new(verifier)),
                    metrics,
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
        let Some(shared) = &self.shared else { return };
        let Ok(mut vm) = shared.vm.try_borrow_mut() else {
            return;
        };
        // Paused requests first (each runs with its own context made effective), then
        // back to this root context for what follows (metrics, usage calls).
        if vm.waiting() > 0 {
            vm.wake(&mut ProxyHost);
            let _ = hostcalls::set_effective_context(self.id);
        }
        if vm.tick_fast && vm.waiting() == 0 {
            vm.tick_fast = false;
            let _ = hostcalls::set_tick_period(Duration::from_millis(self.tick_ms.max(1)));
        }
        let counters = std::mem::take(&mut vm.counters);
        shared.metrics.flush(&counters);
        if std::mem::take(&mut vm.lists_changed) {
            shared.metrics.record_memory(&vm.verifier);
        }
        if vm.usage.is_some() {
            let fallback = vm.verifier.config().rate_limits;
            let lost = budget::lost(&mut ProxyCas, now_ms(), &fallback);
            if lost.is_some() != self.rl_lost {
                self.rl_lost = lost.is_some();
                if let Some(id) = shared.metrics.rl_lost {
                    let _ = hostcalls::record_metric(id, u64::from(self.rl_lost));
                }
                if self.rl_lost {
                    log(
                        LogLevel::Warn,
                        "tessera: no answer from the control plane: rate limits fall back \
                         to a local share of each limit (tessera.ratelimit.lost)",
                    );
                } else {
                    log(
                        LogLevel::Info,
                        "tessera: the control plane answers again: rate limits follow its leases",
                    );
                }
                // Requests paused for a lease are decided again, on the share.
                budget::bump_version(&mut ProxyCas);
            }
        }
        if self.usage_call.is_some() {
            return;
        }
        let Some(settings) = vm
            .verifier
            .config()
            .sync
            .as_ref()
            .and_then(|s| s.usage.clone())
        else {
            return;
        };
        if vm.usage.is_none() {
            return;
        }
        // The rate-limit report: at once when a request of this VM asked for a lease, and
        // periodically from one root context of the process.
        let now = now_ms();
        let spend = if !vm.wanted.is_empty()
            || budget::take_turn(&mut ProxyCas, now, settings.flush_interval_ms)
        {
            let edge = self
                .rl_edge
                .get_or_insert_with(|| budget::edge_id(&mut ProxyCas, &new_edge_id()))
                .clone();
            let asked = std::mem::take(&mut vm.wanted);
            let report = budget::report(&mut ProxyCas, &edge, &asked);
            Some((report, asked))
        } else {
            None
        };
        let Some(buffer) = vm.usage.as_mut() else {
            return;
        };
        let Some(body) = buffer.take_batch(
            now,
            settings.flush_interval_ms,
            settings.max_batch,
            spend.as_ref().map(|(r, _)| r),
        ) else {
            return;
        };
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
            Ok(token) => {
                self.usage_call = Some(token);
                if let Some((_, asked)) = spend {
                    budget::touch(&mut ProxyCas, &|c| c.sent(now));
                    Metrics::bump(shared.metrics.rl_reports);
                    self.usage_spend = Some(asked);
                }
            }
            Err(s) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "tessera: cannot send usage to cluster {}: {s:?}",
                        settings.cluster
                    ),
                );
                Metrics::add(shared.metrics.usage_dropped, buffer.failed());
                if let Some((_, asked)) = spend {
                    budget::touch(&mut ProxyCas, &|c| c.sent(now));
                    vm.wanted = asked;
                }
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.sync.is_some() {
            return None;
        }
        Some(Box::new(Http {
            id: context_id,
            shared: self.shared.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    id: u32,
    shared: Option<Rc<Shared>>,
}

impl Http {
    fn waiting(&self) -> bool {
        self.shared
            .as_ref()
            .and_then(|s| s.vm.try_borrow().ok().map(|vm| vm.is_waiting(self.id)))
            .unwrap_or(false)
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        if let Some(Ok(mut vm)) = self.shared.as_ref().map(|s| s.vm.try_borrow_mut()) {
            vm.forget(self.id);
        }
        true
    }
}

/// [`Host`] over proxy-wasm calls, for one HTTP context.
pub struct ProxyHost;

fn status_text(s: proxy_wasm::types::Status) -> String {
    format!("{s:?}")
}

impl Host for ProxyHost {
    fn now_secs(&mut self) -> u64 {
        now_secs()
    }

    fn now_ms(&mut self) -> u64 {
        now_ms()
    }

    fn select_stream(&mut self, stream: u32) -> bool {
        hostcalls::set_effective_context(stream).is_ok()
    }

    fn resume(&mut self) -> Result<(), String> {
        hostcalls::resume_http_request().map_err(status_text)
    }

    fn request_headers(&mut self) -> Result<Vec<(String, String)>, String> {
        // Header values may hold any octets; non-UTF-8 ones can never be valid tokens,
        // and lossy conversion keeps them from being mistaken for one.
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
            .map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(k, v)| {
                        // Valid UTF-8 (nearly always) keeps its buffer: no copy per header.
                        let v = String::from_utf8(v)
                            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                        (k, v)
                    })
                    .collect()
            })
            .map_err(status_text)
    }

    fn source_address(&mut self) -> Option<String> {
        match hostcalls::get_property(vec!["source", "address"]) {
            Ok(Some(b)) => String::from_utf8(b).ok(),
            _ => None,
        }
    }

    fn shared_data(&mut self, key: &str) -> Option<Vec<u8>> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(b), _)) => Some(b),
            _ => None,
        }
    }

    fn set_shared_data(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        hostcalls::set_shared_data(key, Some(value), None).map_err(status_text)
    }

    fn shared_data_cas(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
        hostcalls::get_shared_data(key).map_err(status_text)
    }

    fn set_shared_data_cas(&mut self, key: &str, value: &[u8], cas: u32) -> Result<bool, String> {
        match hostcalls::set_shared_data(key, Some(value), Some(cas)) {
            Ok(()) => Ok(true),
            Err(proxy_wasm::types::Status::CasMismatch) => Ok(false),
            Err(s) => Err(status_text(s)),
        }
    }

    fn set_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
            .map_err(status_text)
    }

    fn remove_header(&mut self, name: &str) -> Result<(), String> {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None).map_err(status_text)
    }

    fn send_reply(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(), String> {
        hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body.as_bytes()))
            .map_err(status_text)
    }

    fn verify_signature(
        &mut self,
        spki: &[u8],
        signature: &[u8],
        text: &[u8],
    ) -> Result<Option<bool>, String> {
        let args = native::verify_args("sha256", spki, signature, text);
        match hostcalls::call_foreign_function("verify_signature", Some(&args)) {
            Ok(Some(result)) => Ok(native::verify_result(&result)),
            // proto3 encodes `result: false` with no error as zero bytes.
            Ok(None) => Ok(Some(false)),
            Err(status) => Err(status_text(status)),
        }
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Error => LogLevel::Error,
            Level::Warn => LogLevel::Warn,
        };
        log(level, message);
    }
}

fn now_secs() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Envoy does not route traffic through a filter whose configure failed, and a
        // single-threaded VM never re-enters; both guards fail closed if it ever happened.
        let next = match self.shared.as_ref().map(|s| s.vm.try_borrow_mut()) {
            Some(Ok(mut vm)) => {
                let next = vm.on_request_headers(&mut ProxyHost, self.id);
                // A paused request is decided on the root context's tick: make it short
                // while anything waits (the root puts it back when nothing does).
                if next == Next::Wait && !vm.tick_fast {
                    vm.tick_fast = true;
                    let _ = hostcalls::set_tick_period(Duration::from_millis(WAIT_TICK_MS));
                }
                next
            }
            _ => request::reply_unavailable(&mut ProxyHost),
        };
        match next {
            Next::Continue => Action::Continue,
            Next::Stop | Next::Wait => Action::Pause,
        }
    }

    // While the headers wait for a decision, so does the rest of the request: Envoy would
    // otherwise take a body chunk's `Continue` as leave to forward the headers too.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if self.waiting() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.waiting() {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

/// The sync service's root: drives [`sync::Poller`] with host calls.
struct SyncRoot {
    poller: sync::Poller,
    calls: HashMap<u32, sync::Target>,
    /// The value seen under [`request::JWKS_KICK`] at the last look (`None` before the
    /// first look: a kick older than this poller asks for nothing).
    kick: Option<Option<Vec<u8>>>,
}

impl SyncRoot {
    fn dispatch_due(&mut self) {
        let now_ms = now_ms();
        let now = now_ms / 1000;
        // A worker met an unknown kid since the last look: refresh the keys now.
        let kick = hostcalls::get_shared_data(request::JWKS_KICK)
            .ok()
            .and_then(|(v, _)| v);
        if self.kick.as_ref().is_some_and(|seen| *seen != kick)
            && self.poller.refresh_jwks_now(now) > 0
        {
            log(
                LogLevel::Info,
                "tessera: sync: a token named an unknown kid; refreshing the JWKS",
            );
        }
        self.kick = Some(kick);
        let cluster = self.poller.config().cluster.clone();
        let authority = self.poller.config().authority.clone();
        let before = self.poller.meta();
        for call in self.poller.due_ms(now_ms) {
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
        let before = self.poller.meta();
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
        // A key fetch that ended changes the meta record too (workers paused for an
        // unknown kid wait for it), even when the keys did not change.
        if publish != sync::Publish::Nothing || self.poller.meta() != before {
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
            kick: None,
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
