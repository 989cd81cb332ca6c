//! Harness for running real hosts in tests: the compiled Tessera module inside a real
//! Envoy, in front of a small echo upstream, all on loopback.
//!
//! - [`EchoUpstream`] — an HTTP/1.1 server that answers every request `200` with a JSON
//!   description of the request it received (request line and every header);
//! - [`Envoy`] — writes a bootstrap into a temporary directory, starts Envoy with the wasm
//!   filter and the plugin configuration, waits until it is ready, and kills it on drop;
//! - [`Request`] / [`Response`] — a tiny HTTP/1.1 client that can choose its local address
//!   and send any headers, duplicates included;
//! - [`ControlPlane`] — the real control plane (`tessera serve`, SQLite) bootstrapped in a
//!   temporary directory, with REST helpers, SIGKILL and restart on the same port; or on
//!   an external PostgreSQL database, with further replicas ([`ControlPlane::replica`]);
//! - [`PgCluster`] — a throwaway PostgreSQL cluster (`initdb` in a directory, its own
//!   port, SIGKILL and restart);
//! - [`scanner`] — a secret scanner speaking GitHub's partner protocol, its key made at
//!   run time and published on loopback; [`webhook`] — a loopback webhook receiver and
//!   the Standard Webhooks signature check;
//! - [`demo`] — the walk-through behind `cargo xtask demo`.
//!
//! The tools come from the environment: `TESSERA_ENVOY` (the Envoy binary) and
//! `TESSERA_FILTER_WASM` (the built module). `cargo xtask test` installs Envoy, builds the
//! module and sets both; without them the tests fail and say so. Tests with the control
//! plane also need `TESSERA_CP_BIN` (the `tessera` binary), which `cargo xtask test` builds
//! and sets too.
//!
//! Every process started here is stopped by the value that started it (kill, then wait),
//! and every temporary directory is removed on drop (set `TESSERA_KEEP_TMP=1` to keep them
//! for debugging).

use std::path::{Path, PathBuf};

mod client;
mod control_plane;
pub mod counting_proxy;
pub mod demo;
mod envoy;
pub mod postgres;
pub mod scanner;
mod stalled;
mod tmp;
mod upstream;
pub mod webhook;
mod wire;
pub mod workerd;

pub use client::{Request, Response};
pub use control_plane::{control_plane_path, ControlPlane, ControlPlaneOptions, ENV_CP_BIN};
pub use counting_proxy::CountingProxy;
pub use envoy::{log_excerpt, Envoy, EnvoyOptions, StartError, VM_ID};
pub use postgres::{PgCluster, PgOptions};
pub use stalled::StalledServer;
pub use tmp::TempDir;
pub use upstream::EchoUpstream;

/// Environment variable naming the Envoy binary.
pub const ENV_ENVOY: &str = "TESSERA_ENVOY";
/// Environment variable naming the built filter module (`tessera_filter.wasm`).
pub const ENV_FILTER_WASM: &str = "TESSERA_FILTER_WASM";
/// What to do when the tools are missing.
pub const RUN_HINT: &str = "run `cargo xtask test` (it installs Envoy and builds the module, \
     then runs these tests with TESSERA_ENVOY and TESSERA_FILTER_WASM set)";

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Looks up a tool path in the environment. A relative path is taken relative to the
/// current directory first, then to the workspace root (test binaries run in the crate's
/// directory, `cargo xtask` in the workspace root).
pub fn lookup_tool(var: &str) -> Result<PathBuf, String> {
    let raw = match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => return Err(format!("{var} is not set: {RUN_HINT}")),
    };
    let candidates = if raw.is_absolute() {
        vec![raw.clone()]
    } else {
        vec![raw.clone(), repo_root().join(&raw)]
    };
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate.canonicalize().unwrap_or(candidate));
        }
    }
    Err(format!(
        "{var}={} does not name an existing file: {RUN_HINT}",
        raw.display()
    ))
}

/// The Envoy binary from `TESSERA_ENVOY`. Panics (failing the test) when it is missing.
pub fn envoy_path() -> PathBuf {
    match lookup_tool(ENV_ENVOY) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The filter module from `TESSERA_FILTER_WASM`. Panics (failing the test) when it is
/// missing.
pub fn wasm_path() -> PathBuf {
    match lookup_tool(ENV_FILTER_WASM) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Both tools: `(envoy, wasm)`. Panics with a message naming every missing one.
pub fn tools() -> (PathBuf, PathBuf) {
    match (lookup_tool(ENV_ENVOY), lookup_tool(ENV_FILTER_WASM)) {
        (Ok(e), Ok(w)) => (e, w),
        (e, w) => {
            let msgs: Vec<String> = [e.err(), w.err()].into_iter().flatten().collect();
            panic!("{}", msgs.join("\n"))
        }
    }
}
