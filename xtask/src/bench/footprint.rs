//! The footprint part of `cargo xtask bench`: the filter module's size, how long Envoy
//! takes to become ready with it (the VM start), and the memory a VM holds with a
//! 10M-index status list.
//!
//! Memory comes from the filter itself: after loading a configuration (or a synced list)
//! it sets the gauges `tessera.vm_memory_bytes` (its wasm linear memory, which never
//! shrinks, so the peak so far) and `tessera.status_list_bytes` (the bytes its lists
//! hold). The status list's cost per VM is the linear memory with a 10M-index list minus
//! the linear memory with a 1,024-entry list, everything else equal. Envoy's resident
//! set size is reported beside it (it counts every VM and Envoy itself).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_host_tests::{Envoy, EnvoyOptions, Request};
use tessera_testkit::{
    jwks, now, status_list_json, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
    DEFAULT_STATUS_URI,
};

use super::envoy::HUGE_LIST;
use super::stats::{self, median};
use super::{Inputs, Plan, Section, TargetRow};
use crate::tools::{self, Result};

/// The issue's module size target, in bytes (400 KB, decimal).
const MODULE_TARGET: u64 = 400_000;
/// The issue's status-list memory target per VM at 10M indices (4 MiB).
const LIST_MEMORY_TARGET: u64 = 4 * 1024 * 1024;
/// The small list every other Tessera configuration carries.
const SMALL_LIST: usize = 1_024;

/// One Envoy configuration of this part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    NoFilter,
    Floor,
    Tessera(usize),
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup::NoFilter,
        Setup::Floor,
        Setup::Tessera(SMALL_LIST),
        Setup::Tessera(HUGE_LIST),
    ];

    fn id(self) -> String {
        match self {
            Setup::NoFilter => "none".into(),
            Setup::Floor => "floor".into(),
            Setup::Tessera(SMALL_LIST) => "tessera-list-1k".into(),
            Setup::Tessera(n) if n == HUGE_LIST => "tessera-list-10m".into(),
            Setup::Tessera(n) => format!("tessera-list-{n}"),
        }
    }

    fn what(self) -> String {
        match self {
            Setup::NoFilter => "no filter (router only)".into(),
            Setup::Floor => "the wasm floor".into(),
            Setup::Tessera(n) => format!("Tessera, status list of {n} entries"),
        }
    }
}

/// One start of one configuration.
#[derive(Clone, Copy, Debug, Default)]
struct Start {
    /// Spawn to ready (`/ready` LIVE, listener bound).
    ready: Duration,
    /// `tessera.vm_memory_bytes`.
    vm_memory: Option<u64>,
    /// `tessera.status_list_bytes`.
    list_bytes: Option<u64>,
    /// Envoy's resident set size after one request.
    rss: Option<u64>,
}

struct Fixture {
    key: TestKey,
    token: String,
}

impl Fixture {
    fn config(&self, entries: usize) -> Value {
        let statuses = vec![0u8; entries];
        json!({
            "issuers": [DEFAULT_ISSUER],
            "audiences": [DEFAULT_AUDIENCE],
            "jwks": jwks(&[&self.key]),
            "status": {"lists": [status_list_json(DEFAULT_STATUS_URI, &statuses)]},
        })
    }
}

fn options(inputs: &Inputs<'_>, fixture: &Fixture, setup: Setup) -> EnvoyOptions {
    let mut options = EnvoyOptions::new(inputs.envoy).concurrency(1);
    options.log_level = "warn".into();
    match setup {
        Setup::NoFilter => options,
        Setup::Floor => options.filter_raw(inputs.floor_wasm, ""),
        Setup::Tessera(n) => options.filter(inputs.filter_wasm, &fixture.config(n)),
    }
}

fn start_once(inputs: &Inputs<'_>, fixture: &Fixture, setup: Setup) -> Result<Start> {
    let options = options(inputs, fixture, setup);
    let started = Instant::now();
    let envoy = Envoy::start(&options).map_err(|e| format!("{}: {e}", setup.id()))?;
    let ready = started.elapsed();
    let answer = envoy
        .send(
            &Request::get("/")
                .bearer(&fixture.token)
                .timeout(Duration::from_secs(10)),
        )
        .map_err(|e| format!("{}: request failed: {e}", setup.id()))?;
    if answer.status != 200 {
        return Err(format!(
            "{}: the token was answered {} (expected 200): {}",
            setup.id(),
            answer.status,
            answer.text()
        ));
    }
    let mut start = Start {
        ready,
        rss: stats::rss_kib(envoy.pid()).map(|kib| kib * 1024),
        ..Start::default()
    };
    if matches!(setup, Setup::Tessera(_)) {
        start.vm_memory = envoy.counter("tessera.vm_memory_bytes");
        start.list_bytes = envoy.counter("tessera.status_list_bytes");
        if start.vm_memory.is_none_or(|m| m == 0) {
            return Err(format!(
                "{}: the filter reported no tessera.vm_memory_bytes gauge",
                setup.id()
            ));
        }
    }
    Ok(start)
}

fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / 1024.0 / 1024.0)
}

/// Runs the footprint part.
pub fn run(inputs: &Inputs<'_>, plan: &Plan, dir: &Path) -> Result<Section> {
    let key = TestKey::generate(Alg::EdDSA, "footprint-ed25519");
    // Index 9,876,543 exists only in the 10M list; 1000 is in both.
    let token = TokenBuilder::new(now()).status_idx(1000).sign(&key);
    let fixture = Fixture { key, token };
    for setup in Setup::ALL {
        if let Setup::Tessera(n) = setup {
            let path = dir.join(format!("{}.json", setup.id()));
            fs::write(&path, fixture.config(n).to_string())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
    }

    let mut starts: Vec<Vec<Start>> = vec![Vec::new(); Setup::ALL.len()];
    for round in 1..=plan.rounds {
        println!("footprint round {round}/{}", plan.rounds);
        for (i, setup) in Setup::ALL.iter().enumerate() {
            let s = start_once(inputs, &fixture, *setup)?;
            println!(
                "  {:<18} ready in {:>6.1} ms  vm memory {}  lists {}  rss {}",
                setup.id(),
                s.ready.as_secs_f64() * 1e3,
                s.vm_memory.map_or("-".into(), |m| mib(m as f64)),
                s.list_bytes.map_or("-".into(), |m| mib(m as f64)),
                s.rss.map_or("-".into(), |m| mib(m as f64)),
            );
            starts[i].push(s);
        }
    }
    let module = fs::metadata(inputs.filter_wasm).map_or(0, |m| m.len());
    Ok(report(inputs, plan, module, &starts))
}

fn report(inputs: &Inputs<'_>, plan: &Plan, module: u64, starts: &[Vec<Start>]) -> Section {
    let med = |i: usize, pick: fn(&Start) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = starts.get(i)?.iter().filter_map(pick).collect();
        (!v.is_empty()).then(|| median(&v))
    };
    let ready = |s: &Start| Some(s.ready.as_secs_f64() * 1e3);
    let vm = |s: &Start| s.vm_memory.map(|m| m as f64);
    let lists = |s: &Start| s.list_bytes.map(|m| m as f64);
    let rss = |s: &Start| s.rss.map(|m| m as f64);
    let idx = |setup: Setup| Setup::ALL.iter().position(|s| *s == setup).unwrap_or(0);
    let (none, small, huge) = (
        idx(Setup::NoFilter),
        idx(Setup::Tessera(SMALL_LIST)),
        idx(Setup::Tessera(HUGE_LIST)),
    );

    let mut md = String::new();
    let _ = writeln!(md, "### Method\n");
    let _ = writeln!(
        md,
        "- Module size: `{}` as built for the run (release, LTO, `wasm-opt -Oz`).\n\
         - VM start: Envoy (`--concurrency 1`) started {} time(s) per configuration, \
         interleaved; the time from spawn until `/ready` says LIVE and the listener is bound \
         (the harness's `Envoy::start`). The wasm configurations' extra time over `none` is \
         the cost of compiling the module and starting its VMs (one on the main thread, one \
         per worker) with the configuration.\n\
         - Memory: after one request with a valid token (a 200), the filter's gauges \
         `tessera.vm_memory_bytes` (the VM's linear memory: it only grows, so this is the \
         peak, parsing the configuration and inflating the list included) and \
         `tessera.status_list_bytes`, and Envoy's `VmRSS`. Both Tessera configurations are \
         the same but for the list: {SMALL_LIST} entries or {HUGE_LIST} entries (2 bits \
         each). The list's memory per VM is the difference of the two VMs' linear memory.\n\
         - The configurations are written to `target/bench/footprint/*.json`.\n",
        inputs
            .filter_wasm
            .strip_prefix(inputs.root)
            .unwrap_or(inputs.filter_wasm)
            .display(),
        plan.rounds
    );
    let _ = writeln!(md, "### Results\n");
    let _ = writeln!(
        md,
        "| configuration | ready, ms (median) | per round | VM linear memory | status lists | Envoy RSS |\n|---|---:|---|---:|---:|---:|"
    );
    for (i, setup) in Setup::ALL.iter().enumerate() {
        let rounds = starts[i]
            .iter()
            .map(|s| format!("{:.0}", s.ready.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(
            md,
            "| `{}` {} | {} | {rounds} | {} | {} | {} |",
            setup.id(),
            setup.what(),
            med(i, ready).map_or("n/a".into(), |v| format!("{v:.0}")),
            med(i, vm).map_or("—".into(), mib),
            med(i, lists).map_or("—".into(), mib),
            med(i, rss).map_or("n/a".into(), mib),
        );
    }
    let vm_start = |i: usize| -> String {
        match (med(i, ready), med(none, ready)) {
            (Some(a), Some(b)) => format!("{:.0} ms", a - b),
            _ => "n/a".into(),
        }
    };
    let list_cost = match (med(huge, vm), med(small, vm)) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let _ = writeln!(
        md,
        "\nVM start over no filter (median ready time minus `none`'s): Tessera with {SMALL_LIST} \
         entries {}, with {HUGE_LIST} entries {}; the floor {}.\n",
        vm_start(small),
        vm_start(huge),
        vm_start(idx(Setup::Floor)),
    );
    let _ = writeln!(
        md,
        "Module: `tessera_filter.wasm` {} ({module} bytes).\n",
        tools::human_size(module)
    );

    let targets = vec![
        TargetRow {
            measure: "Filter module size".into(),
            measured: format!("{module} bytes"),
            target: format!("≤ {MODULE_TARGET} bytes (400 KB)"),
            met: Some(module <= MODULE_TARGET),
        },
        TargetRow {
            measure: "Status-list memory per VM at 10M indices (linear memory, 10M list minus 1,024 list)"
                .into(),
            measured: list_cost.map_or("n/a".into(), mib),
            target: "≤ 4 MiB".into(),
            met: if plan.smoke {
                None
            } else {
                list_cost.map(|c| c <= LIST_MEMORY_TARGET as f64)
            },
        },
    ];
    Section {
        title: "Footprint".into(),
        body: md,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_every_configuration_and_both_targets() {
        let root = Path::new("/repo");
        let inputs = Inputs::example(root);
        let start = |ms: u64, vm: Option<u64>| Start {
            ready: Duration::from_millis(ms),
            vm_memory: vm,
            list_bytes: vm.map(|_| 2_500_000),
            rss: Some(50 << 20),
        };
        let starts = vec![
            vec![start(100, None); 3],
            vec![start(150, None); 3],
            vec![start(300, Some(3 << 20)); 3],
            vec![start(320, Some(6 << 20)); 3],
        ];
        let section = report(&inputs, &Plan::full(), 425_000, &starts);
        for setup in Setup::ALL {
            assert!(section.body.contains(&setup.id()), "{}", setup.id());
        }
        assert!(section.body.contains("200 ms"), "{}", section.body);
        assert_eq!(section.targets.len(), 2);
        assert_eq!(section.targets[0].met, Some(false));
        assert_eq!(section.targets[1].measured, "3.00 MiB");
        assert_eq!(section.targets[1].met, Some(true));
    }
}
