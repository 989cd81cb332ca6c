//! The quota part of `cargo xtask bench` (issue 25): per-token rate limits enforced across
//! a fleet, with leases of the limit handed out by the control plane over the usage
//! reports the edges already send.
//!
//! One real control plane (`tessera serve`, SQLite) behind a [`CountingProxy`] (every
//! call an edge makes to it is recorded), Envoys running the filter with its sync service
//! (`--concurrency` 4 in the full run, 2 in the smoke run) and workerds running the edge
//! worker, all reporting usage (and their spend) to the control plane through the proxy.
//! For each limit (per second, per minute) a fresh token limited only by that is sent a
//! steady offered load of 1.2× the limit, 90 % of it to the first Envoy and the rest
//! spread evenly over the other edges, one paced client thread per edge. Measured from
//! the answers:
//!
//! - **above the limit**: in no window may the fleet admit more than the limit. A request
//!   whose send and answer fall in different windows may count in either; the figure is
//!   the least excess any assignment of those allows (0 means some assignment keeps every
//!   window within the limit);
//! - **share of the limit admitted** in every complete window after the first two (the
//!   leases follow the demand the edges report), a request counted in the window of its
//!   send/answer midpoint: the median and the least over those windows;
//! - **calls to the control plane** per data-plane request (the calls are the edges'
//!   periodic reports, the long polls and the asks for a token's first lease; none is
//!   made by a request of a token that holds a lease);
//! - **throughput** of one Envoy (`--concurrency 1`, wrk) with a limited token (a limit
//!   far above the load, so nothing is refused) against an unlimited token in the same run.
//!
//! The smoke run is short (a few seconds per limit, no complete minute window): it checks
//! that everything works and that nothing is admitted above the limit.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tessera_host_tests::workerd::{Origin, Workerd, WorkerdOptions};
use tessera_host_tests::{
    ControlPlane, ControlPlaneOptions, CountingProxy, EchoUpstream, Envoy, EnvoyOptions, Request,
};

use super::stats::median;
use super::{wrk, Inputs, Plan, Section, TargetRow};
use crate::tools::Result;

/// The Envoy cluster that reaches the control plane (through the counting proxy).
const CP_CLUSTER: &str = "tessera_control_plane";
/// Offered load as a multiple of the limit.
const DEMAND: f64 = 1.2;
/// The busy edge's share of the offered load.
const SKEW: f64 = 0.9;
/// The per-second limit measured.
const PER_SECOND: u64 = 50;
/// The per-minute limit measured.
const PER_MINUTE: u64 = 600;

/// The fleet of one run.
struct Fleet {
    envoys: Vec<Envoy>,
    workers: Vec<Workerd>,
}

impl Fleet {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.envoys
            .iter()
            .map(Envoy::addr)
            .chain(self.workers.iter().map(Workerd::addr))
            .collect()
    }

    fn name(&self, e: usize) -> String {
        if e < self.envoys.len() {
            format!("Envoy {}", e + 1)
        } else {
            format!("workerd {}", e - self.envoys.len() + 1)
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One answered request: Unix ms at send and answer, and whether it was admitted.
#[derive(Clone, Copy, Debug)]
struct Answer {
    edge: usize,
    sent: u64,
    received: u64,
    admitted: bool,
}

/// Per window: (admitted wholly in it, admitted straddling its start).
fn per_window(answers: &[Answer], window_ms: u64) -> std::collections::BTreeMap<u64, (u64, u64)> {
    let mut w = std::collections::BTreeMap::new();
    for a in answers.iter().filter(|a| a.admitted) {
        let (s, r) = (a.sent / window_ms, a.received / window_ms);
        let e: &mut (u64, u64) = w.entry(r).or_default();
        if s == r {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    w
}

/// The least total excess over `limit` any assignment of the straddling admissions (to
/// their window or the one before) allows: greedily, as many as fit go to the earlier
/// window.
fn least_excess(windows: &std::collections::BTreeMap<u64, (u64, u64)>, limit: u64) -> u64 {
    let (mut excess, mut carried, mut prev) = (0u64, 0u64, None::<u64>);
    for (&i, &(definite, straddling)) in windows {
        let room = match prev {
            Some(p) if p + 1 == i => limit.saturating_sub(carried),
            _ => 0,
        };
        let here = definite + straddling - straddling.min(room);
        excess += here.saturating_sub(limit);
        carried = here.min(limit);
        prev = Some(i);
    }
    excess
}

/// Sends the offered load for `seconds`: edge 0 gets [`SKEW`] of `rate` (requests per
/// second), the other edges the rest, evenly; one paced thread per edge.
fn offer(addrs: &[SocketAddr], token: &str, rate: f64, seconds: f64) -> Result<Vec<Answer>> {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let others = (addrs.len() - 1).max(1) as f64;
    let start = Instant::now();
    thread::scope(|s| {
        for (edge, addr) in addrs.iter().enumerate() {
            let share = if edge == 0 {
                SKEW
            } else {
                (1.0 - SKEW) / others
            };
            let (answers, failures) = (answers.clone(), failures.clone());
            s.spawn(move || {
                let interval = 1.0 / (rate * share);
                let mut k = 0u64;
                loop {
                    let due = start + Duration::from_secs_f64(k as f64 * interval);
                    if due.duration_since(start).as_secs_f64() >= seconds {
                        break;
                    }
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    k += 1;
                    let sent = unix_ms();
                    let got = Request::get("/api/orders")
                        .bearer(token)
                        .timeout(Duration::from_secs(5))
                        .send(*addr);
                    let received = unix_ms();
                    let admitted = match got {
                        Ok(r) if r.status == 200 => true,
                        Ok(r)
                            if r.status == 429 && r.reason().as_deref() == Some("rate_limited") =>
                        {
                            false
                        }
                        Ok(r) => {
                            failures.lock().map(|mut f| f.push(r.summary())).ok();
                            continue;
                        }
                        Err(e) => {
                            failures
                                .lock()
                                .map(|mut f| f.push(format!("{addr}: {e}")))
                                .ok();
                            continue;
                        }
                    };
                    answers
                        .lock()
                        .map(|mut a| {
                            a.push(Answer {
                                edge,
                                sent,
                                received,
                                admitted,
                            })
                        })
                        .ok();
                }
            });
        }
    });
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    if let Some(first) = failures.first() {
        return Err(format!(
            "quota: {} unexpected answers, e.g. {first}",
            failures.len()
        ));
    }
    Ok(answers.lock().map(|a| a.clone()).unwrap_or_default())
}

/// What one limit's run measured.
struct LimitRun {
    label: &'static str,
    limit: u64,
    window_ms: u64,
    seconds: f64,
    requests: usize,
    admitted_per_edge: Vec<(u64, u64)>,
    excess: u64,
    max_in_window: u64,
    /// Admitted/limit in every complete window after the first two.
    shares: Vec<f64>,
    calls: usize,
}

#[allow(clippy::too_many_arguments)]
fn run_limit(
    cp: &ControlPlane,
    proxy: &CountingProxy,
    fleet: &Fleet,
    label: &'static str,
    field: &str,
    limit: u64,
    window_ms: u64,
    seconds: f64,
) -> Result<LimitRun> {
    let admin = cp.admin_token().to_owned();
    let created = cp
        .api(
            "POST",
            "/v1/tokens",
            Some(&admin),
            Some(
                &json!({"name": format!("quota-{label}"), "scopes": ["read"],
                         "limits": {field: limit}}),
            ),
        )
        .map_err(|e| format!("quota: creating the {label} token: {e}"))?;
    let id = created["id"]
        .as_str()
        .ok_or("quota: no token id")?
        .to_owned();
    let token = cp
        .download(&admin, &id)
        .map_err(|e| format!("quota: download: {e}"))?;
    let addrs = fleet.addrs();
    let calls_before = proxy.records().len();
    let rate = DEMAND * limit as f64 * 1000.0 / window_ms as f64;
    println!(
        "quota: {label}: limit {limit}, offering {rate:.1}/s for {seconds:.0} s, 90 % to one edge"
    );
    let started_ms = unix_ms();
    let answers = offer(&addrs, &token, rate, seconds)?;
    let ended_ms = unix_ms();
    let calls = proxy.records().len() - calls_before;
    let windows = per_window(&answers, window_ms);
    let excess = least_excess(&windows, limit);
    let max_in_window = windows.values().map(|(d, s)| d + s).max().unwrap_or(0);
    // Shares: by midpoint, complete windows only, after the first two.
    let mut by_mid: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for a in answers.iter().filter(|a| a.admitted) {
        *by_mid
            .entry((a.sent + a.received) / 2 / window_ms)
            .or_default() += 1;
    }
    let first_complete = started_ms.div_ceil(window_ms) + 2;
    let last_complete = (ended_ms / window_ms).saturating_sub(1);
    let shares: Vec<f64> = (first_complete..=last_complete)
        .map(|i| by_mid.get(&i).copied().unwrap_or(0) as f64 / limit as f64)
        .collect();
    let admitted_per_edge = (0..addrs.len())
        .map(|e| {
            let mine = answers.iter().filter(|a| a.edge == e);
            let admitted = mine.clone().filter(|a| a.admitted).count() as u64;
            (admitted, mine.count() as u64 - admitted)
        })
        .collect();
    Ok(LimitRun {
        label,
        limit,
        window_ms,
        seconds,
        requests: answers.len(),
        admitted_per_edge,
        excess,
        max_in_window,
        shares,
        calls,
    })
}

/// Throughput of one Envoy with a limited token against an unlimited one (same run,
/// interleaved rounds): requests/s each.
fn throughput(
    inputs: &Inputs<'_>,
    plan: &Plan,
    dir: &Path,
    cp: &ControlPlane,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let admin = cp.admin_token().to_owned();
    let secret = cp
        .edge_credential(&admin, "quota-throughput")
        .map_err(|e| format!("quota: edge credential: {e}"))?;
    let upstream = EchoUpstream::start().map_err(|e| format!("quota: upstream: {e}"))?;
    let filter = cp.filter_config(
        "closed",
        30,
        Some(cp.usage_config(CP_CLUSTER, &secret, 100_000)),
    );
    let mut options = EnvoyOptions::new(inputs.envoy)
        .filter(inputs.filter_wasm, &filter)
        .upstream(upstream.addr())
        .cluster(CP_CLUSTER, cp.addr())
        .sync_service(&cp.sync_service_config(CP_CLUSTER, 20))
        .concurrency(1);
    options.log_level = "warn".into();
    let envoy = Envoy::start(&options).map_err(|e| format!("quota: Envoy: {e}"))?;
    wrk::pin_server(envoy.pid())?;
    let mut tokens = Vec::new();
    for (name, limits) in [
        ("quota-unlimited", json!({})),
        ("quota-limited", json!({"per_second": 1_000_000_000u64})),
    ] {
        let created = cp
            .api(
                "POST",
                "/v1/tokens",
                Some(&admin),
                Some(&json!({"name": name, "scopes": ["read"], "limits": limits})),
            )
            .map_err(|e| format!("quota: creating {name}: {e}"))?;
        let id = created["id"]
            .as_str()
            .ok_or("quota: no token id")?
            .to_owned();
        let jwt = cp
            .download(&admin, &id)
            .map_err(|e| format!("quota: download: {e}"))?;
        let file = dir.join(format!("{name}.txt"));
        fs::write(&file, format!("{jwt}\n"))
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
        // Until it is admitted (its lease, or the word that it is unlimited, is in).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Request::get("/").bearer(&jwt).send(envoy.addr()) {
                Ok(r) if r.status == 200 => break,
                _ if Instant::now() > deadline => {
                    return Err(format!("quota: {name} never admitted by the Envoy"))
                }
                _ => thread::sleep(Duration::from_millis(50)),
            }
        }
        tokens.push(file);
    }
    let script = dir.join("quota.lua");
    fs::write(&script, wrk::LUA).map_err(|e| format!("writing {}: {e}", script.display()))?;
    let url = format!("http://{}/", envoy.addr());
    let (mut unlimited, mut limited) = (Vec::new(), Vec::new());
    for _ in 0..plan.rounds {
        for (i, file) in tokens.iter().enumerate() {
            if plan.warmup > 0 {
                let _ = wrk::run_wrk(&mut wrk::wrk_command(&url, plan.warmup, &script, file));
            }
            let s = wrk::measure_wrk(envoy.pid(), &url, plan.seconds, &script, file)?;
            if s.non_2xx > 0 || s.socket_errors > 0 {
                return Err(format!(
                    "quota: throughput run had {} non-2xx and {} socket errors",
                    s.non_2xx, s.socket_errors
                ));
            }
            if i == 0 { &mut unlimited } else { &mut limited }.push(s.rps);
        }
    }
    drop(envoy);
    Ok((unlimited, limited))
}

pub fn run(inputs: &Inputs<'_>, plan: &Plan, dir: &Path) -> Result<Section> {
    let (envoys, workers, concurrency) = if plan.smoke { (2, 1, 2) } else { (4, 2, 4) };
    let (second_secs, minute_secs) = if plan.smoke {
        (5.0, 6.0)
    } else {
        (30.0, 190.0)
    };
    println!("quota: starting the control plane, {envoys} Envoys (--concurrency {concurrency}) and {workers} workerds");
    let cp = ControlPlane::start(&ControlPlaneOptions::new(inputs.cp_bin))
        .map_err(|e| format!("quota: control plane: {e}"))?;
    let proxy = CountingProxy::start(cp.addr()).map_err(|e| format!("quota: proxy: {e}"))?;
    let admin = cp.admin_token().to_owned();
    let secret = cp
        .edge_credential(&admin, "quota-fleet")
        .map_err(|e| format!("quota: edge credential: {e}"))?;
    let upstream = EchoUpstream::start().map_err(|e| format!("quota: upstream: {e}"))?;
    let mut usage = cp.usage_config(CP_CLUSTER, &secret, 100_000);
    usage["flush_interval_ms"] = json!(200);
    let filter = cp.filter_config("closed", 30, Some(usage));
    let mut options = EnvoyOptions::new(inputs.envoy)
        .filter(inputs.filter_wasm, &filter)
        .upstream(upstream.addr())
        .cluster(CP_CLUSTER, proxy.addr())
        .sync_service(&cp.sync_service_config(CP_CLUSTER, 20))
        .concurrency(concurrency);
    options.log_level = "warn".into();
    let envoys: Vec<Envoy> = (0..envoys)
        .map(|n| Envoy::start(&options).map_err(|e| format!("quota: Envoy {}: {e}", n + 1)))
        .collect::<Result<_>>()?;
    let worker_config = json!({
        "issuers": [cp.issuer()],
        "audiences": ["tessera"],
        "status": {"required": true, "fail_policy": "closed"},
        "sync": {"max_staleness_secs": 30},
    });
    let via_proxy =
        |url: String| url.replacen(&cp.addr().to_string(), &proxy.addr().to_string(), 1);
    let worker_options = WorkerdOptions::new(
        inputs.workerd,
        inputs.edge_bundle,
        &worker_config,
        Origin::Url(format!("http://{}", upstream.addr())),
    )
    .var(
        "TESSERA_JWKS_URLS",
        &json!([via_proxy(cp.jwks_url())]).to_string(),
    )
    .var(
        "TESSERA_STATUS_URLS",
        &json!({ cp.status_list_uri(): via_proxy(cp.status_list_uri()) }).to_string(),
    )
    .var(
        "TESSERA_USAGE_URL",
        &via_proxy(format!("{}/v1/usage", cp.url())),
    )
    .var("TESSERA_USAGE_TOKEN", &secret)
    .var("TESSERA_USAGE_FLUSH_MS", "200")
    .var("TESSERA_USAGE_BATCH", "500");
    let workers: Vec<Workerd> = (0..workers)
        .map(|n| {
            Workerd::start(&worker_options).map_err(|e| format!("quota: workerd {}: {e}", n + 1))
        })
        .collect::<Result<_>>()?;
    let fleet = Fleet { envoys, workers };

    let second = run_limit(
        &cp,
        &proxy,
        &fleet,
        "per second",
        "per_second",
        PER_SECOND,
        1000,
        second_secs,
    )?;
    let minute = run_limit(
        &cp,
        &proxy,
        &fleet,
        "per minute",
        "per_minute",
        PER_MINUTE,
        60_000,
        minute_secs,
    )?;
    let names: Vec<String> = (0..fleet.addrs().len()).map(|e| fleet.name(e)).collect();
    drop(fleet);
    let (unlimited, limited) = throughput(inputs, plan, dir, &cp)?;
    drop(proxy);
    drop(cp);
    Ok(report(
        plan,
        &names,
        &[second, minute],
        &unlimited,
        &limited,
        concurrency,
    ))
}

fn report(
    plan: &Plan,
    names: &[String],
    runs: &[LimitRun],
    unlimited: &[f64],
    limited: &[f64],
    concurrency: u32,
) -> Section {
    let mut body = String::new();
    let envoys = names.iter().filter(|n| n.starts_with("Envoy")).count();
    let _ = writeln!(
        body,
        "{envoys} Envoys (`--concurrency {concurrency}`, the filter and its sync service) and {} \
         workerds (the edge worker) against one `tessera serve`, every call to it through a \
         counting loopback proxy; usage and spend reported every 200 ms. Per limit a fresh \
         token limited only by it, offered {DEMAND}× its limit, {:.0} % of it to Envoy 1 and \
         the rest evenly to the other edges (one paced client per edge). A request straddling \
         a window boundary may count in either window: \"above the limit\" is the least excess \
         any assignment allows; shares count a request in the window of its send/answer \
         midpoint, over the complete windows after the first two.\n",
        names.len() - envoys,
        SKEW * 100.0
    );
    let _ = writeln!(
        body,
        "| limit | run | requests | above the limit | most in one window | share admitted (median, least) | calls to the control plane (per request) |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let share = if r.shares.is_empty() {
            "no complete window".to_owned()
        } else {
            let least = r.shares.iter().copied().fold(f64::INFINITY, f64::min);
            format!(
                "{:.1} %, {:.1} % ({} windows)",
                median(&r.shares) * 100.0,
                least * 100.0,
                r.shares.len()
            )
        };
        let _ = writeln!(
            body,
            "| {} {} | {:.0} s | {} | {} | {} | {share} | {} ({:.3}) |",
            r.limit,
            r.label,
            r.seconds,
            r.requests,
            r.excess,
            r.max_in_window,
            r.calls,
            r.calls as f64 / r.requests.max(1) as f64
        );
    }
    for r in runs {
        let per_edge: Vec<String> = r
            .admitted_per_edge
            .iter()
            .zip(names)
            .map(|((a, f), n)| format!("{n} {a}/{}", a + f))
            .collect();
        let _ = writeln!(
            body,
            "\n{} (window {} s): admitted/answered per edge: {}.",
            r.label,
            r.window_ms / 1000,
            per_edge.join(", ")
        );
    }
    let ratio: Vec<f64> = limited
        .iter()
        .zip(unlimited)
        .filter(|(_, u)| **u > 0.0)
        .map(|(l, u)| l / u)
        .collect();
    let _ = writeln!(
        body,
        "\nThroughput of one Envoy (`--concurrency 1`, wrk {} connections, {} s × {} rounds): \
         unlimited token {} req/s, limited token (a limit far above the load) {} req/s.",
        wrk::CONNECTIONS,
        plan.seconds,
        plan.rounds,
        unlimited
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(" / "),
        limited
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let decided = |ok: bool| (!plan.smoke).then_some(ok);
    let share_row = |r: &LimitRun, target: f64| {
        let least = r.shares.iter().copied().fold(f64::INFINITY, f64::min);
        TargetRow {
            measure: format!(
                "Share of a {} limit admitted, demand {DEMAND}× with {:.0} % on one edge",
                r.label,
                SKEW * 100.0
            ),
            measured: if r.shares.is_empty() {
                "no complete window".into()
            } else {
                format!(
                    "{:.1} % (least {:.1} %)",
                    median(&r.shares) * 100.0,
                    least * 100.0
                )
            },
            target: format!("≥ {:.0} %", target * 100.0),
            met: if r.shares.is_empty() {
                None
            } else {
                decided(median(&r.shares) >= target)
            },
        }
    };
    let excess: u64 = runs.iter().map(|r| r.excess).sum();
    let requests: usize = runs.iter().map(|r| r.requests).sum();
    let calls: usize = runs.iter().map(|r| r.calls).sum();
    let mut targets = vec![TargetRow {
        measure: "Admitted above the limit, any window".into(),
        measured: excess.to_string(),
        target: "0".into(),
        met: Some(excess == 0),
    }];
    if let [second, minute] = runs {
        targets.push(share_row(minute, 0.99));
        targets.push(share_row(second, 0.90));
    }
    targets.push(TargetRow {
        measure:
            "Calls to the control plane per request (periodic reports, polls, first-lease asks)"
                .into(),
        measured: format!(
            "{:.3} ({calls} for {requests})",
            calls as f64 / requests.max(1) as f64
        ),
        target: "0 per request".into(),
        met: None,
    });
    targets.push(TargetRow {
        measure: "Envoy throughput, limited token vs unlimited".into(),
        measured: super::fmt_ratio(&ratio),
        target: "≥ 0.95×".into(),
        met: decided(median(&ratio) >= 0.95),
    });
    targets.push(TargetRow {
        measure: "Control plane lost → local fallback in force".into(),
        measured: "not built yet".into(),
        target: "≤ 1 s".into(),
        met: None,
    });
    Section {
        title: "Rate limits and quotas across the fleet (issue 25)".into(),
        body,
        targets,
    }
}
