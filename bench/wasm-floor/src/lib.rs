//! The wasm floor of `cargo xtask bench`: the smallest useful proxy-wasm HTTP filter. It
//! reads one request header (`authorization`) and lets the request continue, so a
//! benchmark of it measures the bare cost of the proxy-wasm call path in Envoy (VM entry,
//! one host call, context bookkeeping) that every wasm filter pays, Tessera included.
//!
//! Built for `wasm32-unknown-unknown` by `cargo xtask bench` with the same route as the
//! filter (`target/wasm/tessera_bench_floor.wasm`).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot) });
}}

struct FloorRoot;

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor { seen: 0 }))
    }
}

/// One request: remembers the length of the header it read, so the read is not optimised
/// away.
struct Floor {
    seen: usize,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.seen = self
            .get_http_request_header("authorization")
            .map_or(0, |v| v.len());
        Action::Continue
    }
}
