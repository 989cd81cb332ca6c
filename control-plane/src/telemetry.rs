//! Logs of `tessera serve`: `tracing` events written to stderr, as text or JSON lines.
//!
//! The level filter comes from `TESSERA_LOG`, else `RUST_LOG`, else `info`; both take the
//! `tracing-subscriber` filter syntax (`debug`, `tessera_control_plane=debug,info`). Nothing
//! that logs may record a token, a secret or a key: log ids (token id, user id, org id).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// The variable read first for the filter.
pub const LOG_ENV: &str = "TESSERA_LOG";
/// The filter when neither `TESSERA_LOG` nor `RUST_LOG` is set.
pub const DEFAULT_FILTER: &str = "info";

/// How each event is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The filter text to use and where it came from (for the message about a bad one).
fn filter_text() -> (String, &'static str) {
    for var in [LOG_ENV, "RUST_LOG"] {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return (v, var);
            }
        }
    }
    (DEFAULT_FILTER.to_string(), "the default")
}

/// Installs the process's subscriber: events at or above the filter go to stderr in
/// `format`. Call it once at start-up; later calls change nothing. A filter that does not
/// parse falls back to `info`, with a warning that names the variable.
pub fn init_logging(format: LogFormat) {
    let (text, source) = filter_text();
    let (filter, bad) = match EnvFilter::try_new(&text) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    if installed.is_ok() {
        if let Some(why) = bad {
            tracing::warn!(
                variable = source,
                filter = %text,
                error = %why,
                "the log filter does not parse; logging at {DEFAULT_FILTER}"
            );
        }
    }
}
