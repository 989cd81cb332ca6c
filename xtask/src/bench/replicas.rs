//! The control plane past one machine (issue 12): the same measures on one replica on
//! SQLite, one on PostgreSQL and three on one PostgreSQL, in one run and interleaved
//! round by round; then 1,000 status-list long polls spread over the three replicas and
//! the time from one revoke to every poll's answer.
//!
//! PostgreSQL is a throwaway cluster under `target/pg` with `fsync` on (what a
//! production server does); everything is on loopback, on the same machine as the load.

use std::path::Path;

use tessera_host_tests::{ControlPlane, ControlPlaneOptions, PgCluster, PgOptions, Request};

use super::control_plane::{pairs_run, usage_run, with_cpu, Run};
use super::stats::{median, percentile_or_nan};
use super::{fanout, propagation, Inputs, Plan, Section, TargetRow};
use crate::postgres;
use crate::tools::{self, Result};

/// Clients creating and downloading, and senders of usage batches.
const CLIENTS: usize = 8;
/// Long polls held open across the three replicas.
const POLLS: usize = 1000;
/// Tokens the usage events name (created through the API before the measurements).
const USAGE_TOKENS: usize = 50;

/// One deployment under test.
struct Setup {
    name: &'static str,
    replicas: Vec<ControlPlane>,
    /// Tokens of the bootstrap admins `bench-1..`, one per client.
    tokens: Vec<String>,
    edge_secret: String,
    usage_ids: Vec<String>,
}

impl Setup {
    fn cps(&self) -> Vec<&ControlPlane> {
        self.replicas.iter().collect()
    }

    /// The processes whose CPU is counted: the replicas (PostgreSQL's is in the machine's).
    fn first_pid(&self) -> Option<u32> {
        self.replicas.first().and_then(ControlPlane::pid)
    }
}

fn options(inputs: &Inputs<'_>) -> ControlPlaneOptions {
    let mut o = ControlPlaneOptions::new(inputs.cp_bin);
    o.admins = std::iter::once("alice".to_owned())
        .chain((1..=CLIENTS).map(|c| format!("bench-{c}")))
        .collect();
    o
}

fn prepare(name: &'static str, replicas: Vec<ControlPlane>) -> Result<Setup> {
    let first = replicas.first().ok_or("no replica")?;
    let tokens: Vec<String> = (1..=CLIENTS)
        .map(|c| {
            first
                .token_of(&format!("bench-{c}"))
                .map(str::to_owned)
                .ok_or_else(|| format!("no bootstrap admin bench-{c}"))
        })
        .collect::<Result<_>>()?;
    let edge_secret = first.edge_credential(first.admin_token(), "bench-edge")?;
    let usage_ids = (0..USAGE_TOKENS)
        .map(|i| {
            first
                .create_and_download(first.admin_token(), &format!("usage-{i}"), &["read"])
                .map(|(id, _)| id)
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    Ok(Setup {
        name,
        replicas,
        tokens,
        edge_secret,
        usage_ids,
    })
}

fn start(inputs: &Inputs<'_>, cluster: &PgCluster) -> Result<[Setup; 3]> {
    println!("starting the control plane on SQLite ...");
    let sqlite = ControlPlane::start(&options(inputs))?;
    let sqlite = prepare("SQLite, 1 replica", vec![sqlite])?;

    println!("starting 1 replica on PostgreSQL ...");
    let url = cluster.create_database("bench_one")?;
    let one = ControlPlane::start(&options(inputs).database(&url))?;
    let one = prepare("PostgreSQL, 1 replica", vec![one])?;

    println!("starting 3 replicas on one PostgreSQL database ...");
    let url = cluster.create_database("bench_three")?;
    let first = ControlPlane::start(&options(inputs).database(&url))?;
    let second = first.replica()?;
    let third = first.replica()?;
    let three = prepare("PostgreSQL, 3 replicas", vec![first, second, third])?;
    Ok([sqlite, one, three])
}

/// Rates per setup (one entry per round), for pairs and for usage events.
struct Rates {
    pairs: Vec<Vec<Run>>,
    usage: Vec<Vec<Run>>,
}

fn measure(plan: &Plan, setups: &[Setup; 3]) -> Result<Rates> {
    let mut rates = Rates {
        pairs: setups.iter().map(|_| Vec::new()).collect(),
        usage: setups.iter().map(|_| Vec::new()).collect(),
    };
    let mut seed = 7;
    for round in 1..=plan.rounds {
        for (k, s) in setups.iter().enumerate() {
            let cps = s.cps();
            let tokens: Vec<&str> = s.tokens.iter().map(String::as_str).collect();
            if plan.warmup > 0 {
                pairs_run(&cps, &tokens, plan.warmup as f64, None)?;
            }
            let (mut run, cpu) = with_cpu(s.first_pid(), || {
                pairs_run(&cps, &tokens, plan.seconds as f64, None)
            })?;
            run.cpu = cpu;
            println!(
                "  round {round}/{}: {}: {CLIENTS} clients: {:.0} create + download pairs/s (create p99 {:.1} ms)",
                plan.rounds,
                s.name,
                run.rate(),
                1000.0 * percentile_or_nan(&run.lat_a, 99.0)
            );
            rates.pairs[k].push(run);

            seed += 1;
            let (mut run, cpu) = with_cpu(s.first_pid(), || {
                usage_run(
                    &cps,
                    &s.edge_secret,
                    &s.usage_ids,
                    CLIENTS,
                    plan.seconds as f64,
                    None,
                    seed,
                )
            })?;
            run.cpu = cpu;
            println!(
                "  round {round}/{}: {}: {CLIENTS} senders: {:.0} usage events/s (batch p99 {:.1} ms)",
                plan.rounds,
                s.name,
                run.rate(),
                1000.0 * percentile_or_nan(&run.lat_a, 99.0)
            );
            rates.usage[k].push(run);
        }
    }
    Ok(rates)
}

/// The org's current status-list version (the `since` of a long poll that waits).
fn status_version(cp: &ControlPlane) -> Result<i64> {
    let r = Request::get(&format!("/v1/orgs/{}/status-list", cp.org()))
        .send(cp.addr())
        .map_err(|e| format!("GET status-list: {e}"))?;
    r.header("tessera-status-version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("status-list: no tessera-status-version ({})", r.status))
}

fn fan_out(plan: &Plan, s: &Setup) -> Result<Vec<fanout::FanOut>> {
    let polls = if plan.smoke { 30 } else { POLLS };
    let first = s.replicas.first().ok_or("no replica")?;
    let addrs: Vec<_> = s.replicas.iter().map(ControlPlane::addr).collect();
    let mut results = Vec::new();
    for round in 1..=plan.rounds {
        let (id, _) = first.create_and_download(
            first.admin_token(),
            &format!("fanout-{round}"),
            &["read"],
        )?;
        let since = status_version(first)?;
        let path = format!("/v1/orgs/{}/status-list?since={since}&wait=30", first.org());
        let f = fanout::measure(&addrs, &path, polls, || {
            first.revoke(first.admin_token(), &id).map(|_| ())
        })?;
        println!(
            "  round {round}/{}: {} long polls over {} replicas: revoke → every poll answered p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (the revoke took {:.1} ms)",
            plan.rounds,
            f.polls,
            f.replicas,
            f.percentile(50.0),
            f.percentile(99.0),
            f.ms.last().copied().unwrap_or(f64::NAN),
            f.revoke_ms
        );
        results.push(f);
    }
    Ok(results)
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.0} ({lo:.0}–{hi:.0})", median(v))
}

pub fn run(inputs: &Inputs<'_>, plan: &Plan, dir: &Path) -> Result<Section> {
    postgres::ensure_postgres()?;
    let cluster = postgres::start_cluster(inputs.root, &PgOptions::default())?;
    let setups = start(inputs, &cluster)?;
    println!("create + download pairs and usage ingestion, interleaved:");
    let rates = measure(plan, &setups)?;
    println!("long-poll fan-out:");
    let fan = fan_out(plan, &setups[2])?;
    println!(
        "propagation through the 3 replicas to {} Envoys and {} workerds:",
        propagation::ENVOYS,
        propagation::WORKERDS
    );
    let revokes = if plan.smoke {
        propagation::SMOKE_REVOKES
    } else {
        propagation::FULL_REVOKES
    };
    let prop_dir = dir.join("propagation");
    std::fs::create_dir_all(&prop_dir)
        .map_err(|e| format!("could not create {}: {e}", prop_dir.display()))?;
    let samples = propagation::measure(inputs, revokes, &prop_dir, &setups[2].cps())?;
    let ms_of = |envoy: bool| -> Vec<f64> {
        let mut v: Vec<f64> = samples
            .iter()
            .filter(|s| (s.edge < propagation::ENVOYS) == envoy)
            .map(|s| s.after_answer.as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (envoy_ms, workerd_ms) = (ms_of(true), ms_of(false));
    for s in &setups {
        for cp in &s.replicas {
            if !cp.is_running() {
                return Err(format!("a replica of {} stopped during the bench", s.name));
            }
        }
    }
    drop(setups);
    drop(cluster);

    let pair_rates: Vec<Vec<f64>> = rates
        .pairs
        .iter()
        .map(|runs| runs.iter().map(Run::rate).collect())
        .collect();
    let usage_rates: Vec<Vec<f64>> = rates
        .usage
        .iter()
        .map(|runs| runs.iter().map(Run::rate).collect())
        .collect();
    let names = [
        "SQLite, 1 replica",
        "PostgreSQL, 1 replica",
        "PostgreSQL, 3 replicas",
    ];
    let mut body = String::new();
    body.push_str(&format!(
        "One run of `cargo xtask bench --only replicas`: {} interleaved rounds of {} s per \
         measure (after {} s of warm-up for pairs), {CLIENTS} clients or senders spread \
         round-robin over the replicas, usage batches of 500 events over {USAGE_TOKENS} \
         tokens. PostgreSQL 15 is a throwaway cluster with `fsync` on, on the same \
         machine as the replicas and the load (2 cores: the three replicas, PostgreSQL \
         and the clients share them). Median (range) over the rounds.\n\n",
        plan.rounds, plan.seconds, plan.warmup
    ));
    body.push_str("| deployment | create + download pairs/s | usage events/s |\n|---|---:|---:|\n");
    for (k, name) in names.iter().enumerate() {
        body.push_str(&format!(
            "| {name} | {} | {} |\n",
            range(&pair_rates[k]),
            range(&usage_rates[k])
        ));
    }
    let all: Vec<f64> = fan.iter().flat_map(|f| f.ms.iter().copied()).collect();
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile_or_nan(&sorted, p);
    let polls = fan.first().map_or(0, |f| f.polls);
    body.push_str(&format!(
        "\n**Long-poll fan-out.** {polls} status-list long polls (`?since=<v>&wait=30`) \
         spread over the 3 replicas, one revoke through replica 1, {} rounds: from the \
         revoke request to each poll's whole answer, p50 {:.1} ms, p99 {:.1} ms, max \
         {:.1} ms over {} answers. The other replicas learn of the change through \
         PostgreSQL `NOTIFY`.\n",
        fan.len(),
        pct(50.0),
        pct(99.0),
        sorted.last().copied().unwrap_or(f64::NAN),
        sorted.len()
    ));
    let max = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
    body.push_str(&format!(
        "\n**Revocation through replica 1 to the edges.** The propagation part's method \
         (a poller per edge, the time from the revoke API's answer to the first 401), with \
         the 3 PostgreSQL replicas behind every Envoy's sync cluster (round robin) and the \
         revokes sent to replica 1: {revokes} revokes × {} Envoys: p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms; × {} workerds (background refresh about every second): p50 {:.0} ms, \
         p99 {:.0} ms.\n",
        propagation::ENVOYS,
        percentile_or_nan(&envoy_ms, 50.0),
        percentile_or_nan(&envoy_ms, 99.0),
        max(&envoy_ms),
        propagation::WORKERDS,
        percentile_or_nan(&workerd_ms, 50.0),
        percentile_or_nan(&workerd_ms, 99.0),
    ));
    body.push_str(
        "\nNot measured here: search at 1M tokens on PostgreSQL (seeding a million tokens \
         through the API takes longer than this run; the control-plane part measures \
         search on SQLite).\n",
    );
    let usage_ratio = median(&usage_rates[2]) / median(&usage_rates[0]);
    let targets = vec![
        TargetRow {
            measure: format!(
                "Revoke through replica 1 → refused at every Envoy ({}), p99",
                propagation::ENVOYS
            ),
            measured: format!("{:.1} ms", percentile_or_nan(&envoy_ms, 99.0)),
            target: "≤ 100 ms".into(),
            met: (!plan.smoke).then_some(percentile_or_nan(&envoy_ms, 99.0) <= 100.0),
        },
        TargetRow {
            measure: "Revoke → all 1,000 long polls answered, across 3 replicas (p99)".into(),
            measured: format!("{:.1} ms", pct(99.0)),
            target: "≤ 200 ms".into(),
            met: (!plan.smoke).then_some(pct(99.0) <= 200.0),
        },
        TargetRow {
            measure: "Usage events/s, PostgreSQL 3 replicas vs SQLite, same run".into(),
            measured: format!("{usage_ratio:.2}×"),
            target: "≥ 2×".into(),
            met: (!plan.smoke).then_some(usage_ratio >= 2.0),
        },
    ];
    tools::announce("replicas part done");
    Ok(Section {
        title: "Control plane on PostgreSQL, with replicas".into(),
        body,
        targets,
    })
}
