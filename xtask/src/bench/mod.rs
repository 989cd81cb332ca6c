//! `cargo xtask bench`: the measurements of issue 6, each part in its own module:
//!
//! - [`envoy`]: Envoy throughput and p50/p99 latency of Tessera against no auth filter,
//!   the proxy-wasm floor and native `jwt_authn`;
//! - [`workerd`]: the edge worker against a `jose` worker in workerd;
//! - [`propagation`]: revoke → first 401 at each of 4 Envoys;
//! - [`control_plane`]: the control plane's throughput;
//! - `replicas`: the control plane on SQLite, on PostgreSQL, and as 3 replicas on one
//!   PostgreSQL, and 1,000 long polls over the replicas answered after one revoke;
//! - `signin`: a flood of junk sign-ins and link accepts from 64 addresses (memory, another
//!   user's latency) and a burst of wrong passwords against one account;
//! - [`footprint`]: module size, VM start time, memory per VM with a 10M-index list;
//! - [`ed25519`]: the Ed25519 candidates for the filter, timed inside V8;
//! - `quota`: per-token rate limits across a fleet of Envoys and workerds (issue 25):
//!   admitted above the limit, the share of the limit admitted under skewed demand,
//!   calls to the control plane per request, and the throughput cost of a limit;
//! - `leaks`: leak to lockout (issue 26): a secret scanner's signed post → the first 401
//!   at 2 Envoys and a workerd, first use from a new network → the webhook received, and
//!   false positives among 10⁷ random and near-miss strings put through the scanner
//!   endpoint's confirmation in-process.
//!
//! Everything runs on loopback; every server a part starts is stopped by it. The full run
//! (every part) writes `BENCHMARKS.md`; `--only` runs some parts and writes
//! `target/bench/BENCHMARKS-partial.md`; `--smoke` runs every part once, briefly, and
//! only checks that it works (no speed assertion, no file written).

pub mod control_plane;
pub mod ed25519;
pub mod envoy;
mod fanout;
pub mod footprint;
mod leaks;
pub mod propagation;
mod quota;
mod replicas;
mod signin;
mod soak;
pub mod stats;
mod tokens;
pub mod workerd;
mod wrk;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::tools::{self, Result};
use stats::median;

pub use envoy::FLOOR;

/// The parts of the bench, in the order a full run measures them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Envoy,
    Workerd,
    Propagation,
    ControlPlane,
    Replicas,
    SignIn,
    Footprint,
    Ed25519,
    Soak,
    Quota,
    Leaks,
}

impl Part {
    pub const ALL: [Part; 11] = [
        Part::Envoy,
        Part::Workerd,
        Part::Propagation,
        Part::ControlPlane,
        Part::Replicas,
        Part::SignIn,
        Part::Footprint,
        Part::Ed25519,
        Part::Soak,
        Part::Quota,
        Part::Leaks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Part::Envoy => "envoy",
            Part::Workerd => "workerd",
            Part::Propagation => "propagation",
            Part::ControlPlane => "control-plane",
            Part::Replicas => "replicas",
            Part::SignIn => "sign-in",
            Part::Footprint => "footprint",
            Part::Ed25519 => "ed25519",
            Part::Soak => "soak",
            Part::Quota => "quota",
            Part::Leaks => "leaks",
        }
    }

    fn parse(name: &str) -> Result<Part> {
        Part::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                format!(
                    "bench: unknown part `{name}` (parts: {})",
                    Part::ALL.map(Part::name).join(", ")
                )
            })
    }
}

/// One part's contribution to the report.
pub struct Section {
    /// The `##` heading.
    pub title: String,
    /// Markdown under the heading (method, commands, results), `###` headings inside.
    pub body: String,
    /// The targets this part measures.
    pub targets: Vec<TargetRow>,
}

/// One of the targets, as measured.
pub struct TargetRow {
    pub measure: String,
    pub measured: String,
    pub target: String,
    /// `None` when the run could not decide (e.g. the smoke run).
    pub met: Option<bool>,
}

/// How long and how often.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `--smoke`: one short round, only 200s checked, no BENCHMARKS.md.
    pub smoke: bool,
    /// Measured seconds per configuration per round.
    pub seconds: u64,
    /// Untimed warm-up seconds before each measurement.
    pub warmup: u64,
    /// Interleaved rounds.
    pub rounds: usize,
    /// Tokens in the "new token every request" pools (more than any cache holds).
    pub fresh_tokens: usize,
    /// The parts to run (all of them unless `--only`).
    pub parts: Vec<Part>,
    /// `--configs`: only these Envoy configurations (empty: all). For investigations; a
    /// run with a selection never writes `BENCHMARKS.md`.
    pub configs: Vec<String>,
}

impl Plan {
    /// The full run: 3 rounds of 10 s per configuration, 2 s warm-up.
    pub fn full() -> Plan {
        Plan {
            smoke: false,
            seconds: 10,
            warmup: 2,
            rounds: 3,
            fresh_tokens: 20_000,
            parts: Part::ALL.to_vec(),
            configs: Vec::new(),
        }
    }

    /// The smoke run: one round of 1 s per configuration.
    pub fn smoke() -> Plan {
        Plan {
            smoke: true,
            seconds: 1,
            warmup: 0,
            rounds: 1,
            fresh_tokens: 4 * envoy::CACHE_SIZE,
            parts: Part::ALL.to_vec(),
            configs: Vec::new(),
        }
    }

    /// Whether the Envoy configuration `id` is to be measured.
    pub fn selects(&self, id: &str) -> bool {
        self.configs.is_empty() || self.configs.iter().any(|c| c == id)
    }

    /// Parses the arguments after `bench`.
    pub fn from_args(args: &[&str]) -> Result<Plan> {
        let mut plan = Plan::full();
        let mut it = args.iter();
        plan.parts = Part::ALL.to_vec();
        while let Some(arg) = it.next() {
            let mut number = |name: &str| -> Result<u64> {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .filter(|v| *v > 0)
                    .ok_or_else(|| format!("{name} needs a positive number"))
            };
            match *arg {
                "--smoke" => {
                    let parts = std::mem::take(&mut plan.parts);
                    let configs = std::mem::take(&mut plan.configs);
                    plan = Plan::smoke();
                    plan.parts = parts;
                    plan.configs = configs;
                }
                "--configs" => {
                    let list = it
                        .next()
                        .ok_or("--configs needs a comma-separated list of configuration ids")?;
                    plan.configs = list.split(',').map(|c| c.trim().to_owned()).collect();
                }
                "--only" => {
                    let list = it
                        .next()
                        .ok_or("--only needs a comma-separated list of parts")?;
                    plan.parts = list
                        .split(',')
                        .map(|p| Part::parse(p.trim()))
                        .collect::<Result<_>>()?;
                }
                "--seconds" => plan.seconds = number("--seconds")?,
                "--rounds" => {
                    plan.rounds = usize::try_from(number("--rounds")?).unwrap_or(usize::MAX)
                }
                other => return Err(format!("bench: unknown option `{other}`")),
            }
        }
        if !plan.smoke && plan.rounds < 3 {
            return Err("bench: at least 3 rounds (the issue's rule for every claim)".into());
        }
        Ok(plan)
    }
}

/// What the run needs from the outside.
pub struct Inputs<'a> {
    pub root: &'a Path,
    pub envoy: &'a Path,
    pub filter_wasm: &'a Path,
    pub floor_wasm: &'a Path,
    /// The control plane binary (`tessera`); the full run uses a release build.
    pub cp_bin: &'a Path,
    /// The workerd binary.
    pub workerd: &'a Path,
    /// The edge-worker bundle (`target/wasm/edge-worker`).
    pub edge_bundle: &'a Path,
    /// The project's npm prefix (`tools/node`), where `jose` is installed.
    pub node_dir: &'a Path,
    /// The Ed25519 candidates module (`bench/ed25519-wasm`).
    pub ed25519_wasm: &'a Path,
}

impl Inputs<'_> {
    #[cfg(test)]
    pub fn example(root: &Path) -> Inputs<'_> {
        Inputs {
            root,
            envoy: Path::new("/repo/tools/envoy"),
            filter_wasm: Path::new("/repo/target/wasm/tessera_filter.wasm"),
            floor_wasm: Path::new("/repo/target/wasm/tessera_bench_floor.wasm"),
            cp_bin: Path::new("/repo/target/release/tessera"),
            workerd: Path::new("/repo/tools/node/workerd"),
            edge_bundle: Path::new("/repo/target/wasm/edge-worker"),
            node_dir: Path::new("/repo/tools/node"),
            ed25519_wasm: Path::new("/repo/target/wasm/tessera_bench_ed25519.wasm"),
        }
    }
}

/// A child process that is killed (and reaped) when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bench's working files under `target/bench/`.
pub fn work_dir(root: &Path) -> PathBuf {
    root.join("target").join("bench")
}

pub fn output_line(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output();
    match out {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("unknown")
                .to_owned()
        }
        Err(_) => "unknown".into(),
    }
}

/// The machine and the versions, for the report.
struct Environment {
    date: String,
    cpu: String,
    cores: usize,
    memory: String,
    kernel: String,
    envoy: String,
    rustc: String,
    wasm_rustc: String,
    wrk: String,
    workerd: String,
    /// The commit and the files changed since (the modules are built from the tree).
    source: String,
    filter_size: u64,
    floor_size: u64,
}

impl Environment {
    fn collect(inputs: &Inputs<'_>) -> Environment {
        let envoy = inputs.envoy;
        let git = |args: &[&str]| {
            tools::output_of(Command::new("git").current_dir(inputs.root).args(args))
                .unwrap_or_default()
        };
        let commit = git(&["rev-parse", "--short", "HEAD"]);
        let changed: Vec<String> = git(&["status", "--porcelain"])
            .lines()
            .filter_map(|l| l.get(3..))
            .map(|f| format!("`{f}`"))
            .collect();
        let source = if changed.is_empty() {
            format!("commit `{}`", commit.trim())
        } else {
            format!(
                "commit `{}` plus uncommitted changes to {}",
                commit.trim(),
                changed.join(", ")
            )
        };
        let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".into(), |(_, v)| v.trim().to_owned());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let memory = fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or("unknown".into(), |kib| {
                format!("{:.1} GiB", kib / 1024.0 / 1024.0)
            });
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let wasm_rustc = if Path::new("/usr/bin/rustc").is_file() {
            output_line(Command::new("/usr/bin/rustc").arg("--version"))
        } else {
            "the rustup toolchain above".into()
        };
        Environment {
            date: output_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            cpu,
            cores,
            memory,
            kernel: output_line(Command::new("uname").args(["-sr"])),
            envoy: {
                let line = output_line(Command::new(envoy).arg("--version"));
                line.split_once("version:")
                    .map_or(line.clone(), |(_, v)| v.trim().to_owned())
            },
            rustc: output_line(Command::new(rustc).arg("--version")),
            wasm_rustc,
            wrk: output_line(Command::new("wrk").arg("-v")),
            workerd: output_line(Command::new(inputs.workerd).arg("--version")),
            source,
            filter_size: size(inputs.filter_wasm),
            floor_size: size(inputs.floor_wasm),
        }
    }
}

pub fn fmt_ratio(values: &[f64]) -> String {
    let m = median(values);
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() > 1 {
        format!("{m:.2}× ({lo:.2}–{hi:.2})")
    } else {
        format!("{m:.2}×")
    }
}

/// Runs the parts of `plan`; the full run writes `BENCHMARKS.md`.
pub fn run(inputs: &Inputs<'_>, plan: &Plan) -> Result<()> {
    let dir = tools::absolute(&work_dir(inputs.root));
    fs::create_dir_all(&dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;

    // Snapshot the modules: a rebuild during the run must not change what is measured.
    let modules = dir.join("modules");
    fs::create_dir_all(&modules)
        .map_err(|e| format!("could not create {}: {e}", modules.display()))?;
    let snapshot = |from: &Path| -> Result<PathBuf> {
        let name = from
            .file_name()
            .ok_or_else(|| format!("{} has no file name", from.display()))?;
        let to = tools::absolute(&modules.join(name));
        fs::copy(from, &to)
            .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
        Ok(to)
    };
    let filter_copy = snapshot(inputs.filter_wasm)?;
    let floor_copy = snapshot(inputs.floor_wasm)?;
    let inputs = &Inputs {
        filter_wasm: &filter_copy,
        floor_wasm: &floor_copy,
        ..*inputs
    };
    let env = Environment::collect(inputs);

    let started = Instant::now();
    let mut sections = Vec::new();
    for part in &plan.parts {
        tools::header(&format!("bench part: {}", part.name()));
        let part_dir = dir.join(part.name());
        fs::create_dir_all(&part_dir)
            .map_err(|e| format!("could not create {}: {e}", part_dir.display()))?;
        let t = Instant::now();
        let section = match part {
            Part::Envoy => envoy::run(inputs, plan, &dir)?,
            Part::Workerd => workerd::run(inputs, plan, &part_dir)?,
            Part::Propagation => propagation::run(inputs, plan, &part_dir)?,
            Part::ControlPlane => control_plane::run(inputs, plan, &part_dir)?,
            Part::Replicas => replicas::run(inputs, plan, &part_dir)?,
            Part::SignIn => signin::run(inputs, plan)?,
            Part::Footprint => footprint::run(inputs, plan, &part_dir)?,
            Part::Ed25519 => ed25519::run(inputs, plan, &part_dir)?,
            Part::Soak => soak::run(inputs, plan, &part_dir)?,
            Part::Quota => quota::run(inputs, plan, &part_dir)?,
            Part::Leaks => leaks::run(inputs, plan, &part_dir)?,
        };
        println!(
            "bench part {} done in {:.0} s",
            part.name(),
            t.elapsed().as_secs_f64()
        );
        for row in &section.targets {
            println!(
                "  {}: {} (target {}){}",
                row.measure,
                row.measured,
                row.target,
                match row.met {
                    Some(true) => " met",
                    Some(false) => " NOT met",
                    None => "",
                }
            );
        }
        sections.push(section);
    }
    println!("bench: {:.0} s in all", started.elapsed().as_secs_f64());

    let md = report(inputs, plan, &env, &sections);
    if plan.smoke {
        println!("smoke: every part ran and every answer was checked (no report written)");
        return Ok(());
    }
    let path = if plan.parts.len() == Part::ALL.len() && plan.configs.is_empty() {
        inputs.root.join("BENCHMARKS.md")
    } else {
        dir.join("BENCHMARKS-partial.md")
    };
    // The fuzzing section is written by `cargo xtask fuzz --record`; keep it.
    let mut md = md;
    if let Some(kept) = fs::read_to_string(&path)
        .ok()
        .as_deref()
        .and_then(crate::fuzz::recorded_section)
    {
        md = format!("{}\n\n{kept}\n", md.trim_end());
    }
    fs::write(&path, &md).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("\n{md}\nwritten to {}", path.display());
    Ok(())
}

/// The whole Markdown report.
fn report(inputs: &Inputs<'_>, plan: &Plan, env: &Environment, sections: &[Section]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let parts = plan.parts.iter().map(|p| p.name()).collect::<Vec<_>>();
    let _ = writeln!(
        md,
        "Written by `cargo xtask bench` (xtask/src/bench/) on {}; each full run rewrites \
         this file. Parts in this run: {}.\n",
        env.date,
        parts.join(", ")
    );
    let _ = writeln!(md, "## Machine and versions\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| CPU | {} ({} logical cores) |", env.cpu, env.cores);
    let _ = writeln!(md, "| memory | {} |", env.memory);
    let _ = writeln!(md, "| kernel | {} |", env.kernel);
    let _ = writeln!(md, "| Envoy | `{}` |", env.envoy);
    let _ = writeln!(md, "| workerd | `{}` |", env.workerd);
    let _ = writeln!(
        md,
        "| rustc (native, xtask/testkit/control plane) | `{}` |",
        env.rustc
    );
    let _ = writeln!(md, "| rustc (wasm modules) | `{}` |", env.wasm_rustc);
    let _ = writeln!(md, "| wrk | `{}` |", env.wrk);
    let _ = writeln!(md, "| source measured | {} |", env.source);
    let _ = writeln!(
        md,
        "| modules | `tessera_filter.wasm` {}; `tessera_bench_floor.wasm` {} |",
        tools::human_size(env.filter_size),
        tools::human_size(env.floor_size)
    );
    let _ = writeln!(
        md,
        "| control plane binary | `{}` |\n",
        inputs
            .cp_bin
            .strip_prefix(inputs.root)
            .unwrap_or(inputs.cp_bin)
            .display()
    );
    let _ = writeln!(md, "## The issue's targets\n");
    let _ = writeln!(
        md,
        "| measure | measured | target | met |\n|---|---:|---:|---|"
    );
    for row in sections.iter().flat_map(|s| &s.targets) {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {met} |",
            row.measure, row.measured, row.target
        );
    }
    let _ = writeln!(md);
    for section in sections {
        let _ = writeln!(md, "## {}\n", section.title);
        md.push_str(section.body.trim_end());
        md.push_str("\n\n");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let full = Plan::from_args(&[]).expect("full");
        assert!(!full.smoke && full.rounds >= 3);
        assert_eq!(full.parts, Part::ALL.to_vec());
        let smoke = Plan::from_args(&["--smoke"]).expect("smoke");
        assert!(smoke.smoke && smoke.rounds == 1 && smoke.seconds == 1);
        let only = Plan::from_args(&["--only", "workerd,footprint", "--smoke"]).expect("only");
        assert_eq!(only.parts, vec![Part::Workerd, Part::Footprint]);
        assert!(only.smoke);
        assert!(Plan::from_args(&["--only", "nope"]).is_err());
        assert!(Plan::from_args(&["--rounds", "2"]).is_err());
        assert!(Plan::from_args(&["--bogus"]).is_err());
    }
}
