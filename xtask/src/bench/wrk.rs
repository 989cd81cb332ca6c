//! wrk and CPU accounting shared by the bench parts that load an HTTP server: every
//! server under test is pinned to [`SERVER_CPU`], wrk to [`WRK_CPU`].

use std::fs;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

use super::stats::median;
use super::ChildGuard;
use crate::tools::{self, Result};

/// The core the server under test (Envoy, workerd) is pinned to.
pub const SERVER_CPU: &str = "0";
/// The core wrk is pinned to.
pub const WRK_CPU: &str = "1";
/// wrk connections (one wrk thread).
pub const CONNECTIONS: u32 = 16;
/// The line the Lua script's `done` prints.
const RESULT_TAG: &str = "TESSERA-BENCH";
/// Below this share of a core, the server was not the bottleneck of a run.
pub const SATURATED: f64 = 0.9;

/// One wrk measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub requests: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
    /// Tessera's `cache_hit` / `cache_miss` counters after the run (warm-up included).
    pub cache: Option<(u64, u64)>,
    /// CPU used during the measured run, in cores: (the whole machine, the server).
    pub cpu: Option<(f64, f64)>,
}

/// The wrk Lua script: loads a token file (the script argument) in every wrk thread and
/// sends its tokens round robin as `Authorization: Bearer`; `done` prints one
/// machine-readable line.
pub const LUA: &str = r#"-- Written by `cargo xtask bench`.
local tokens = {}
local n = 0
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      tokens[n] = "Bearer " .. line
    end
  end
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("GET", "/", { ["Authorization"] = tokens[i] })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "TESSERA-BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"#;

/// Pins every thread of `pid` to [`SERVER_CPU`].
pub fn pin_server(pid: u32) -> Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", SERVER_CPU, &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -a -p -c {SERVER_CPU} {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The wrk command for one measurement.
pub fn wrk_command(url: &str, seconds: u64, script: &Path, tokens: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", WRK_CPU, "wrk", "-t1"])
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script)
        .arg(url)
        .arg("--")
        .arg(tokens);
    cmd
}

/// Runs wrk and parses the line the script's `done` prints.
pub fn run_wrk(cmd: &mut Command) -> Result<Sample> {
    let shown = tools::display_command(cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    let mut guard = ChildGuard(child);
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut stdout) = guard.0.stdout.take() {
        stdout
            .read_to_string(&mut out)
            .map_err(|e| format!("reading wrk's output: {e}"))?;
    }
    if let Some(mut stderr) = guard.0.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    let status = guard
        .0
        .wait()
        .map_err(|e| format!("waiting for wrk: {e}"))?;
    if !status.success() {
        return Err(format!("`{shown}` failed ({status}):\n{out}{err}"));
    }
    parse_wrk(&out).ok_or_else(|| format!("no `{RESULT_TAG}` line from `{shown}`:\n{out}{err}"))
}

pub fn parse_wrk(out: &str) -> Option<Sample> {
    let line = out.lines().find(|l| l.starts_with(RESULT_TAG))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    let requests = field("requests")?;
    let duration_us = field("duration_us")?;
    if duration_us == 0 {
        return None;
    }
    Some(Sample {
        requests,
        rps: requests as f64 * 1e6 / duration_us as f64,
        p50_us: field("p50_us")? as f64,
        p99_us: field("p99_us")? as f64,
        non_2xx: field("non2xx")?,
        socket_errors: field("socket_errors")?,
        cache: None,
        cpu: None,
    })
}

/// (all ticks, busy ticks) of every CPU together, from `/proc/stat`.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total, total.saturating_sub(idle)))
}

/// User + system ticks of a process (every thread), from `/proc/<pid>/stat`.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// One configuration's runs as the report tables show them (medians over rounds).
pub struct Summary {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Cores the server used, or `n/a`.
    pub server_cpu: String,
    /// Cores the whole machine used, or `n/a`.
    pub machine_cpu: String,
    /// Requests/s per round, `*` marking a disturbed run.
    pub rounds: String,
}

/// Summarises one configuration's runs.
pub fn summarize(runs: &[Sample]) -> Summary {
    let med = |pick: fn(&Sample) -> f64| median(&runs.iter().map(pick).collect::<Vec<_>>());
    let cpu = |pick: fn((f64, f64)) -> f64| {
        let v: Vec<f64> = runs.iter().filter_map(|s| s.cpu.map(pick)).collect();
        if v.is_empty() {
            "n/a".to_owned()
        } else {
            format!("{:.2}", median(&v))
        }
    };
    Summary {
        rps: med(|s| s.rps),
        p50_us: med(|s| s.p50_us),
        p99_us: med(|s| s.p99_us),
        server_cpu: cpu(|c| c.1),
        machine_cpu: cpu(|c| c.0),
        rounds: runs
            .iter()
            .map(|s| format!("{:.0}{}", s.rps, if disturbed(s) { "*" } else { "" }))
            .collect::<Vec<_>>()
            .join(" / "),
    }
}

/// Whether the server did not get (or need) a full core during the run.
pub fn disturbed(sample: &Sample) -> bool {
    sample.cpu.is_some_and(|(_, server)| server < SATURATED)
}

/// Runs wrk for `seconds` against `url` and records the CPU the machine and `pid` used
/// meanwhile.
pub fn measure_wrk(
    pid: u32,
    url: &str,
    seconds: u64,
    script: &Path,
    tokens: &Path,
) -> Result<Sample> {
    let before = (cpu_ticks(), process_ticks(pid));
    let mut sample = run_wrk(&mut wrk_command(url, seconds, script, tokens))?;
    if let ((Some((t0, b0)), Some(e0)), Some((t1, b1)), Some(e1)) =
        (before, cpu_ticks(), process_ticks(pid))
    {
        let per_core = (t1.saturating_sub(t0)) as f64 / cpu_count() as f64;
        if per_core > 0.0 {
            sample.cpu = Some((
                b1.saturating_sub(b0) as f64 / per_core,
                e1.saturating_sub(e0) as f64 / per_core,
            ));
        }
    }
    Ok(sample)
}
