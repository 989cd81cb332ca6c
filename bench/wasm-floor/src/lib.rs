//! The wasm floor of `cargo xtask bench`: the smallest useful proxy-wasm HTTP filter. It
//! reads one request header (`authorization`) and lets the request continue, so a
//! benchmark of it measures the bare cost of the proxy-wasm call path in Envoy (VM entry,
//! one host call, context bookkeeping) that every wasm filter pays, Tessera included.
//!
//! With the plugin configuration `host-calls` it also makes the host calls Tessera's filter
//! makes on a cache hit (filter/src/request.rs, with inline keys and no usage reports),
//! and nothing else: all request headers as bytes, the clock, and four identity headers
//! set (replacing any the client sent). Tessera's extra cost over that variant is its own
//! work in wasm; the variant's extra cost over the floor is the ABI's. (Tessera counts in
//! wasm memory and flushes on the tick, and reads the peer address only for an IP filter
//! or usage reports, so neither is a per-request host call.)
//!
//! Built for `wasm32-unknown-unknown` by `cargo xtask bench` with the same route as the
//! filter (`target/wasm/tessera_bench_floor.wasm`).

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(FloorRoot { calls: None })
    });
}}

/// The `host-calls` variant.
struct Calls;

struct FloorRoot {
    calls: Option<Rc<Calls>>,
}

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        if config.as_slice() == b"host-calls" {
            self.calls = Some(Rc::new(Calls));
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor {
            seen: 0,
            calls: self.calls.clone(),
        }))
    }
}

/// One request: remembers the length of what it read, so the reads are not optimised
/// away.
struct Floor {
    seen: usize,
    calls: Option<Rc<Calls>>,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(Calls) = self.calls.as_deref() else {
            self.seen = self
                .get_http_request_header("authorization")
                .map_or(0, |v| v.len());
            return Action::Continue;
        };
        let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
        let now = self.get_current_time();
        for (name, value) in [
            ("x-tessera-user", "user_0"),
            ("x-tessera-org", "acme"),
            ("x-tessera-token-id", "tok_0"),
            ("x-tessera-scopes", ""),
        ] {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
        }
        self.seen = headers.len() + usize::from(now > std::time::UNIX_EPOCH);
        Action::Continue
    }
}
