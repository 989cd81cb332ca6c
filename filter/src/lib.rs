//! Tessera's proxy-wasm filter: adapts Envoy's host calls to `tessera-core`.
//!
//! The root context reads and validates the plugin configuration once (`on_configure`,
//! refusing a bad one) and owns the per-VM verified-token cache and metrics; each HTTP
//! context asks core for a decision and applies the [`plan::Plan`]. Host errors are mapped,
//! not unwrapped: the module never traps on request input.

pub mod plan;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use tessera_core::{CacheUse, Decision, Reason, Request, TokenCache, Verifier};

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

/// Counter ids, defined once per VM.
#[derive(Default)]
struct Metrics {
    allow: Option<u32>,
    deny: Vec<(Reason, Option<u32>)>,
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
    status_fail_open: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    match hostcalls::define_metric(MetricType::Counter, name) {
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
    verifier: Verifier,
    cache: RefCell<TokenCache>,
    metrics: Metrics,
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

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
        match Verifier::from_config_json(text) {
            Ok(verifier) => {
                let cache = RefCell::new(verifier.new_cache());
                self.shared = Some(Rc::new(Shared {
                    verifier,
                    cache,
                    metrics: Metrics::define(),
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
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
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
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
        let outcome = match shared.cache.try_borrow_mut() {
            Ok(mut cache) => shared.verifier.check(&req, now, Some(&mut cache)),
            // Re-entrancy cannot happen in a single-threaded VM; if it did, skip the cache.
            Err(_) => shared.verifier.check(&req, now, None),
        };
        shared.metrics.record(&outcome.decision, outcome.cache);

        match plan::plan(shared.verifier.config(), &outcome) {
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
