//! The Ed25519 part of `cargo xtask bench`: the candidate implementations for the
//! filter's pure-wasm Ed25519 (`bench/ed25519-wasm`), timed inside V8 (node runs the
//! module built exactly like the filter: release, the workspace's profile, `wasm-opt
//! -Oz`). Each candidate must first give the right verdict on a valid signature, a
//! tampered message, a tampered signature, a non-canonical `s`, a small-order `R`
//! (canonical or not) that satisfies the cofactorless equation, and a small-order key.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::stats::median;
use super::{Inputs, Plan, Section};
use crate::tools::{self, Result};
use crate::wasm::WasmModule;

/// The candidates module.
pub const MODULE: WasmModule = WasmModule {
    package: "tessera-bench-ed25519",
    artifact: "tessera_bench_ed25519.wasm",
    output: "tessera_bench_ed25519.wasm",
};

/// Candidate names, in the module's export order (bench/ed25519-wasm/src/lib.rs).
const NAMES: [&str; 8] = [
    "ed25519-compact 2",
    "ed25519-dalek 2 (verify_strict)",
    "ed25519-dalek 2 (verify_strict, key parsed once)",
    "per key: VartimePrecomputedStraus [B, -A]",
    "double-base [s]B - [k]A, R compared as bytes",
    "per key: radix-16 table of -A, static radix-16 B",
    "per key: radix-32 tables of B and -A",
    "per key: radix-64 tables of B and -A",
];
/// The one core uses (core/src/ed25519.rs; core builds the table of `B` once at run time
/// instead of linking curve25519-dalek's constant: the same table and arithmetic).
const CHOSEN: usize = 5;

/// Parses `candidate=<i> round=<r> us_per_verify=<x>` lines into per-candidate samples.
fn parse(out: &str) -> Vec<Vec<f64>> {
    let mut samples = vec![Vec::new(); NAMES.len()];
    for line in out.lines() {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        let (Some(c), Some(us)) = (field("candidate"), field("us_per_verify")) else {
            continue;
        };
        if let (Ok(c), Ok(us)) = (c.parse::<usize>(), us.parse::<f64>()) {
            if let Some(v) = samples.get_mut(c) {
                v.push(us);
            }
        }
    }
    samples
}

/// Runs the Ed25519 part.
pub fn run(inputs: &Inputs<'_>, plan: &Plan, _dir: &Path) -> Result<Section> {
    let script = inputs.root.join("bench/ed25519-wasm/js/run.mjs");
    let n = if plan.smoke { 50 } else { 2_000 };
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .arg(inputs.ed25519_wasm)
        .arg(n.to_string())
        .arg(plan.rounds.max(1).to_string());
    let shown = tools::display_command(&cmd);
    let out = tools::output_of(&mut cmd)
        .ok_or_else(|| format!("`{shown}` failed (node is needed: it comes with npm)"))?;
    let samples = parse(&out);
    if samples.iter().any(|s| s.len() != plan.rounds.max(1)) {
        return Err(format!("`{shown}` printed incomplete results:\n{out}"));
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Method\n\n`bench/ed25519-wasm` exports each candidate's verify; node (V8, the \
         engine of Envoy's wasm runtime and of workerd) loads the module, checks every \
         candidate's verdicts, warms it up, then times {n} verifications per candidate and \
         round, interleaved. The module is built like the filter (the workspace's release \
         profile, where curve25519-dalek and ed25519-dalek get `opt-level = 3`, then \
         `wasm-opt -Oz`).\n\n```sh\n{shown}\n```\n"
    );
    let _ = writeln!(
        md,
        "### Results\n\n| candidate | µs per verify (median) | per round | |\n|---|---:|---|---|"
    );
    for (i, name) in NAMES.iter().enumerate() {
        let rounds = samples[i]
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(
            md,
            "| {name} | {:.1} | {rounds} | {} |",
            median(&samples[i]),
            if i == CHOSEN { "used by core" } else { "" }
        );
    }
    Ok(Section {
        title: "Ed25519 inside wasm: the candidates".into(),
        body: md,
        targets: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lines_are_parsed() {
        let out = "candidate=0 round=1 us_per_verify=280.5\ncandidate=1 round=1 \
                   us_per_verify=110.25\nnoise\n";
        let s = parse(out);
        assert_eq!(s[0], vec![280.5]);
        assert_eq!(s[1], vec![110.25]);
    }

    #[test]
    fn names_match_the_module() {
        let lib =
            std::fs::read_to_string(tools::workspace_root().join("bench/ed25519-wasm/src/lib.rs"))
                .unwrap_or_default();
        for name in NAMES {
            assert!(lib.contains(name), "{name}");
        }
    }
}
