//! The Envoy part of `cargo xtask bench`: throughput and p50/p99 latency of Tessera against
//! a request with no auth filter, the bare proxy-wasm floor and Envoy's native `jwt_authn`.
//!
//! Everything runs on loopback. Each configuration gets a fresh Envoy (`--concurrency 1`,
//! direct-response route, every thread pinned to core 0 with `taskset -a -p`), loaded by
//! wrk pinned to core 1 (`taskset -c 1`) with a Lua script that sends the tokens of a file
//! round robin. The configurations run interleaved (A B C … A B C …) for several rounds;
//! the report gives medians and the median of the per-round ratios.
//!
//! `--smoke` runs every configuration once for about a second and only checks that every
//! response was a 200 (no speed assertion): it proves the harness and every configuration
//! work.
//!
//! Keys and tokens come from tessera-testkit at run time; the tokens, the Lua script and
//! every bootstrap are written to `target/bench/` so that a run can be repeated by hand.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_host_tests::{Envoy, EnvoyOptions, Request};
use tessera_testkit::{jwks, now, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

use super::stats::median;
use super::tokens;
use super::wrk::{
    self, disturbed, measure_wrk, pin_server, run_wrk, wrk_command, Sample, CONNECTIONS, SATURATED,
    SERVER_CPU, WRK_CPU,
};
use super::{fmt_ratio, Inputs, Plan, Section, TargetRow};
use crate::tools::{self, Result};
use crate::wasm::WasmModule;

/// The wasm floor module (`bench/wasm-floor`).
pub const FLOOR: WasmModule = WasmModule {
    package: "tessera-bench-floor",
    artifact: "tessera_bench_floor.wasm",
    output: "tessera_bench_floor.wasm",
};

/// Distinct tokens in the "1,000 distinct" pools.
const DISTINCT: usize = 1_000;
/// Size of both verified-token caches (Tessera's `cache_size` default, `jwt_cache_size`).
pub const CACHE_SIZE: usize = 1_024;
/// Entries of the status list every Tessera configuration carries.
const SMALL_LIST: usize = 1_024;
/// Entries of the big status list.
const BIG_LIST: usize = 1_000_000;
/// Entries of the huge status list (the issue's 10M).
pub const HUGE_LIST: usize = 10_000_000;
/// The index the huge-list token points to.
const HUGE_LIST_IDX: u64 = 9_876_543;
/// The index the big-list token points to.
const BIG_LIST_IDX: u64 = 765_432;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    /// No HTTP filter but the router.
    None,
    /// The wasm floor.
    Floor,
    /// The wasm floor making the host calls Tessera makes on a cache hit.
    FloorCalls,
    /// Envoy's native `jwt_authn`, with or without `jwt_cache_config`.
    JwtAuthn { cache: bool },
    /// The Tessera module, with a status list of this many entries.
    Tessera { list: usize },
}

/// The token pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    EdReused,
    EsReused,
    EdDistinct,
    EdFresh,
    EsFresh,
    EdIpFilter,
    EdBigList,
    EdHugeList,
}

impl Pool {
    const ALL: [Pool; 8] = [
        Pool::EdReused,
        Pool::EsReused,
        Pool::EdDistinct,
        Pool::EdFresh,
        Pool::EsFresh,
        Pool::EdIpFilter,
        Pool::EdBigList,
        Pool::EdHugeList,
    ];

    fn file_name(self) -> &'static str {
        match self {
            Pool::EdReused => "tokens-ed25519-reused.txt",
            Pool::EsReused => "tokens-es256-reused.txt",
            Pool::EdDistinct => "tokens-ed25519-1000.txt",
            Pool::EdFresh => "tokens-ed25519-fresh.txt",
            Pool::EsFresh => "tokens-es256-fresh.txt",
            Pool::EdIpFilter => "tokens-ed25519-ip-filter.txt",
            Pool::EdBigList => "tokens-ed25519-status-1m.txt",
            Pool::EdHugeList => "tokens-ed25519-status-10m.txt",
        }
    }
}

/// One benchmarked configuration.
#[derive(Clone, Copy, Debug)]
struct Config {
    id: &'static str,
    what: &'static str,
    auth: Auth,
    pool: Pool,
}

const CONFIGS: &[Config] = &[
    Config {
        id: "none",
        what: "no auth filter (router only)",
        auth: Auth::None,
        pool: Pool::EdReused,
    },
    Config {
        id: "floor",
        what: "wasm floor: proxy-wasm filter reading one header",
        auth: Auth::Floor,
        pool: Pool::EdReused,
    },
    Config {
        id: "floor-calls",
        what: "wasm floor making Tessera's cache-hit host calls (headers, clock, 4 identity headers set)",
        auth: Auth::FloorCalls,
        pool: Pool::EdReused,
    },
    Config {
        id: "jwt-nocache-ed-new",
        what: "native jwt_authn, no cache, Ed25519, new token every request",
        auth: Auth::JwtAuthn { cache: false },
        pool: Pool::EdFresh,
    },
    Config {
        id: "jwt-nocache-es-new",
        what: "native jwt_authn, no cache, ES256, new token every request",
        auth: Auth::JwtAuthn { cache: false },
        pool: Pool::EsFresh,
    },
    Config {
        id: "jwt-cache-ed",
        what: "native jwt_authn, jwt_cache_config, Ed25519 reused",
        auth: Auth::JwtAuthn { cache: true },
        pool: Pool::EdReused,
    },
    Config {
        id: "jwt-cache-ed-1000",
        what: "native jwt_authn, jwt_cache_config, Ed25519 1,000 round robin",
        auth: Auth::JwtAuthn { cache: true },
        pool: Pool::EdDistinct,
    },
    Config {
        id: "tessera-ed",
        what: "Tessera, Ed25519, one reused token",
        auth: Auth::Tessera { list: SMALL_LIST },
        pool: Pool::EdReused,
    },
    Config {
        id: "tessera-ed-1000",
        what: "Tessera, Ed25519, 1,000 distinct tokens round robin",
        auth: Auth::Tessera { list: SMALL_LIST },
        pool: Pool::EdDistinct,
    },
    Config {
        id: "tessera-es",
        what: "Tessera, ES256, one reused token",
        auth: Auth::Tessera { list: SMALL_LIST },
        pool: Pool::EsReused,
    },
    Config {
        id: "tessera-ed-new",
        what: "Tessera, Ed25519, new token every request",
        auth: Auth::Tessera { list: SMALL_LIST },
        pool: Pool::EdFresh,
    },
    Config {
        id: "tessera-es-new",
        what: "Tessera, ES256, new token every request",
        auth: Auth::Tessera { list: SMALL_LIST },
        pool: Pool::EsFresh,
    },
    Config {
        id: "tessera-ed-list-1m",
        what: "Tessera, Ed25519 reused, status list of 1M indices",
        auth: Auth::Tessera { list: BIG_LIST },
        pool: Pool::EdBigList,
    },
    Config {
        id: "tessera-ed-list-10m",
        what: "Tessera, Ed25519 reused, status list of 10M indices",
        auth: Auth::Tessera { list: HUGE_LIST },
        pool: Pool::EdHugeList,
    },
    Config {
        id: "tessera-ed-ip",
        what: "Tessera, Ed25519 reused, token with an IP filter",
        auth: Auth::Tessera { list: SMALL_LIST },
        pool: Pool::EdIpFilter,
    },
];

/// The ratios the report names: (label, numerator id, denominator id, issue target).
const RATIOS: &[(&str, &str, &str, Option<f64>)] = &[
    (
        "Reused token: Tessera (Ed25519) vs wasm floor",
        "tessera-ed",
        "floor",
        Some(0.90),
    ),
    (
        "Reused token: Tessera (Ed25519) vs native jwt_authn with cache",
        "tessera-ed",
        "jwt-cache-ed",
        Some(0.75),
    ),
    (
        "New token every request, ES256: Tessera vs native jwt_authn without cache",
        "tessera-es-new",
        "jwt-nocache-es-new",
        Some(1.0),
    ),
    (
        "New token every request, Ed25519: Tessera vs native jwt_authn without cache",
        "tessera-ed-new",
        "jwt-nocache-ed-new",
        // Issue 13 raised it from 0.5× (when core moved to a per-key Ed25519 table).
        Some(0.8),
    ),
    (
        "1,000 tokens round robin: Tessera vs native jwt_authn with cache",
        "tessera-ed-1000",
        "jwt-cache-ed-1000",
        None,
    ),
    (
        "Reused ES256 vs reused Ed25519 (Tessera)",
        "tessera-es",
        "tessera-ed",
        None,
    ),
    (
        "Status list of 1M indices vs 1,024 (Tessera, reused)",
        "tessera-ed-list-1m",
        "tessera-ed",
        None,
    ),
    (
        "Status list of 10M indices vs 1,024 (Tessera, reused)",
        "tessera-ed-list-10m",
        "tessera-ed",
        None,
    ),
    (
        "IP filter vs none (Tessera, reused)",
        "tessera-ed-ip",
        "tessera-ed",
        None,
    ),
    ("wasm floor vs no filter", "floor", "none", None),
    (
        "Tessera reused (Ed25519) vs the floor making the same host calls",
        "tessera-ed",
        "floor-calls",
        None,
    ),
    (
        "floor making Tessera's host calls vs the floor",
        "floor-calls",
        "floor",
        None,
    ),
    (
        "native jwt_authn with cache vs no filter",
        "jwt-cache-ed",
        "none",
        None,
    ),
    (
        "Tessera reused (Ed25519) vs no filter",
        "tessera-ed",
        "none",
        None,
    ),
];

/// The keys and every token pool.
struct Fixtures {
    ed: TestKey,
    es: TestKey,
    pools: Vec<(Pool, PathBuf, Vec<String>)>,
}

impl Fixtures {
    fn generate(dir: &Path, plan: &Plan) -> Result<Fixtures> {
        let ed = TestKey::generate(Alg::EdDSA, "bench-ed25519");
        let es = TestKey::generate(Alg::ES256, "bench-p256");
        let t = now();
        let token = |key: &TestKey, i: usize| tokens::token(key, t, i, SMALL_LIST);
        let mut pools = Vec::new();
        for pool in Pool::ALL {
            let list: Vec<String> = match pool {
                Pool::EdReused => vec![token(&ed, 0)],
                Pool::EsReused => vec![token(&es, 0)],
                Pool::EdDistinct => (0..DISTINCT).map(|i| token(&ed, i)).collect(),
                Pool::EdFresh => (0..plan.fresh_tokens).map(|i| token(&ed, i)).collect(),
                Pool::EsFresh => (0..plan.fresh_tokens).map(|i| token(&es, i)).collect(),
                Pool::EdIpFilter => vec![TokenBuilder::new(t)
                    .claim("ip_allow", json!(["127.0.0.0/8", "::1"]))
                    .sign(&ed)],
                Pool::EdBigList => vec![TokenBuilder::new(t).status_idx(BIG_LIST_IDX).sign(&ed)],
                Pool::EdHugeList => {
                    vec![TokenBuilder::new(t).status_idx(HUGE_LIST_IDX).sign(&ed)]
                }
            };
            let path = tokens::write_pool(dir, pool.file_name(), &list)?;
            pools.push((pool, path, list));
        }
        Ok(Fixtures { ed, es, pools })
    }

    fn pool(&self, pool: Pool) -> Result<(&Path, &[String])> {
        self.pools
            .iter()
            .find(|(p, _, _)| *p == pool)
            .map(|(_, path, tokens)| (path.as_path(), tokens.as_slice()))
            .ok_or_else(|| format!("no token pool {pool:?}"))
    }

    fn jwks(&self) -> Value {
        jwks(&[&self.ed, &self.es])
    }

    /// Tessera's plugin configuration with a status list of `entries` (all valid but one
    /// revoked index no bench token uses).
    fn tessera_config(&self, entries: usize) -> Value {
        tokens::tessera_config(&[&self.ed, &self.es], entries, Some(CACHE_SIZE))
    }
}

/// The `jwt_authn` HTTP filter, in the listener's indentation.
fn jwt_authn_filter(jwks: &Value, cache: bool) -> String {
    let q = |s: &str| Value::String(s.to_owned()).to_string();
    let cache_line = if cache {
        format!("                  jwt_cache_config: {{jwt_cache_size: {CACHE_SIZE}}}\n")
    } else {
        String::new()
    };
    format!(
        r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                tessera:
                  issuer: {iss}
                  audiences: [{aud}]
                  forward: true
                  local_jwks:
                    inline_string: {jwks}
{cache_line}              rules:
              - match: {{prefix: "/"}}
                requires: {{provider_name: tessera}}
"#,
        iss = q(DEFAULT_ISSUER),
        aud = q(DEFAULT_AUDIENCE),
        jwks = q(&jwks.to_string()),
    )
}

/// The Envoy options of one configuration.
fn envoy_options(inputs: &Inputs<'_>, fixtures: &Fixtures, auth: Auth) -> Result<EnvoyOptions> {
    let mut options = EnvoyOptions::new(inputs.envoy).concurrency(1);
    options.log_level = "warn".into();
    Ok(match auth {
        Auth::None => options,
        Auth::Floor => options.filter_raw(inputs.floor_wasm, ""),
        Auth::FloorCalls => options.filter_raw(inputs.floor_wasm, "host-calls"),
        Auth::Tessera { list } => {
            options.filter(inputs.filter_wasm, &fixtures.tessera_config(list))
        }
        Auth::JwtAuthn { cache } => {
            const ROUTER: &str = "          - name: envoy.filters.http.router\n";
            let yaml = options.bootstrap_yaml();
            if !yaml.contains(ROUTER) {
                return Err(
                    "the generated bootstrap has no router filter line to insert \
                            jwt_authn before"
                        .into(),
                );
            }
            let with_jwt = yaml.replacen(
                ROUTER,
                &format!("{}{ROUTER}", jwt_authn_filter(&fixtures.jwks(), cache)),
                1,
            );
            options.custom_bootstrap(&with_jwt)
        }
    })
}

/// One request with `token` must be a 200, and (with an auth filter) one without a token
/// a 401: the filter is really in the path and accepts the bench tokens.
fn precheck(envoy: &Envoy, config: &Config, token: &str) -> Result<()> {
    let send = |req: Request| {
        envoy
            .send(&req.timeout(Duration::from_secs(10)))
            .map_err(|e| format!("{}: request failed: {e}", config.id))
    };
    let ok = send(Request::get("/").bearer(token))?;
    if ok.status != 200 {
        return Err(format!(
            "{}: a bench token was answered {} (expected 200): {}\n{}",
            config.id,
            ok.status,
            ok.text(),
            tessera_host_tests::log_excerpt(&envoy.log())
        ));
    }
    if matches!(config.auth, Auth::JwtAuthn { .. } | Auth::Tessera { .. }) {
        let missing = send(Request::get("/"))?;
        if missing.status != 401 {
            return Err(format!(
                "{}: a request without a token was answered {} (expected 401): is the \
                 filter in the path?",
                config.id, missing.status
            ));
        }
    }
    Ok(())
}

/// Starts the configuration's Envoy, checks it, measures, stops it.
fn measure(
    inputs: &Inputs<'_>,
    fixtures: &Fixtures,
    plan: &Plan,
    config: &Config,
    script: &Path,
    bootstraps: &Path,
) -> Result<Sample> {
    let options = envoy_options(inputs, fixtures, config.auth)?;
    let yaml = options
        .bootstrap
        .clone()
        .unwrap_or_else(|| options.bootstrap_yaml());
    let saved = bootstraps.join(format!("{}.yaml", config.id));
    fs::write(&saved, yaml).map_err(|e| format!("writing {}: {e}", saved.display()))?;
    let envoy = Envoy::start(&options).map_err(|e| format!("{}: {e}", config.id))?;
    pin_server(envoy.pid())?;
    let (tokens_path, tokens) = fixtures.pool(config.pool)?;
    let first = tokens
        .first()
        .ok_or_else(|| format!("{}: empty token pool", config.id))?;
    precheck(&envoy, config, first)?;
    let url = format!("http://{}/", envoy.addr());
    if plan.warmup > 0 {
        run_wrk(&mut wrk_command(&url, plan.warmup, script, tokens_path))?;
    }
    let mut sample = measure_wrk(envoy.pid(), &url, plan.seconds, script, tokens_path)?;
    if matches!(config.auth, Auth::Tessera { .. }) {
        if let (Some(hit), Some(miss)) = (
            envoy.counter("tessera.cache_hit"),
            envoy.counter("tessera.cache_miss"),
        ) {
            sample.cache = Some((hit, miss));
        }
    }
    drop(envoy);
    if sample.requests == 0 || sample.non_2xx > 0 || sample.socket_errors > 0 {
        return Err(format!(
            "{}: {} requests, {} answered with a non-2xx status, {} socket errors \
             (every response must be a 200)",
            config.id, sample.requests, sample.non_2xx, sample.socket_errors
        ));
    }
    Ok(sample)
}

/// Runs the Envoy part; `inputs` hold snapshots of the modules.
pub fn run(inputs: &Inputs<'_>, plan: &Plan, dir: &Path) -> Result<Section> {
    let bootstraps = dir.join("bootstraps");
    fs::create_dir_all(&bootstraps)
        .map_err(|e| format!("could not create {}: {e}", bootstraps.display()))?;
    let script = tools::absolute(&dir.join("round-robin.lua"));
    fs::write(&script, wrk::LUA).map_err(|e| format!("writing {}: {e}", script.display()))?;

    let started = Instant::now();
    println!(
        "generating keys and tokens (tessera-testkit) into {} ...",
        dir.display()
    );
    let fixtures = Fixtures::generate(dir, plan)?;
    println!("  done in {:.1} s", started.elapsed().as_secs_f64());

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CONFIGS.len()];
    for round in 1..=plan.rounds {
        println!("round {round}/{}", plan.rounds);
        for (i, config) in CONFIGS.iter().enumerate() {
            if !plan.selects(config.id) {
                continue;
            }
            let sample = measure(inputs, &fixtures, plan, config, &script, &bootstraps)?;
            let mut cache = sample
                .cache
                .map(|(h, m)| format!("  cache hit {h} / miss {m}"))
                .unwrap_or_default();
            if let Some((busy, envoy)) = sample.cpu {
                cache.push_str(&format!("  cpu: machine {busy:.2}, envoy {envoy:.2}"));
            }
            println!(
                "  {:<20} {:>9.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  ({} requests, all 200){cache}",
                config.id, sample.rps, sample.p50_us, sample.p99_us, sample.requests
            );
            samples[i].push(sample);
        }
    }
    println!(
        "{} configurations x {} round(s) in {:.0} s",
        CONFIGS.len(),
        plan.rounds,
        started.elapsed().as_secs_f64()
    );

    Ok(report(inputs, plan, &samples, &script, dir))
}

/// The Markdown report.
fn report(
    inputs: &Inputs<'_>,
    plan: &Plan,
    samples: &[Vec<Sample>],
    script: &Path,
    dir: &Path,
) -> Section {
    let rel = |p: &Path| {
        p.strip_prefix(inputs.root)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    let index = |id: &str| CONFIGS.iter().position(|c| c.id == id);
    let per_round_ratio = |a: &str, b: &str| -> Vec<f64> {
        match (index(a), index(b)) {
            (Some(a), Some(b)) => samples[a]
                .iter()
                .zip(&samples[b])
                .map(|(x, y)| x.rps / y.rps)
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut md = String::new();
    let _ = writeln!(md, "### Method\n");
    let _ = writeln!(
        md,
        "- Loopback only. Each configuration gets a fresh Envoy with `--concurrency 1` and a \
         `direct_response` 200 route (no upstream), every Envoy thread pinned to core \
         {SERVER_CPU} (`taskset -a -p -c {SERVER_CPU} <pid>`); wrk is pinned to core {WRK_CPU}.\n\
         - wrk: 1 thread, {CONNECTIONS} keep-alive connections, HTTP/1.1 `GET /`, \
         `Authorization: Bearer <token>` taken round robin from a token file by a Lua script \
         (the same script for every configuration; the no-filter and floor runs send the \
         reused Ed25519 token). Latency is wrk's, at saturation with {CONNECTIONS} \
         connections (so it includes queueing).\n\
         - {} interleaved round(s): every round runs all {} configurations in order \
         (A B C … A B C …); each run is a {} s untimed warm-up then {} s measured. Before each \
         run one request with the first token must be a 200 and (auth filters) one without \
         a token a 401; every measured response must be a 200, else the bench fails.\n\
         - Keys (one Ed25519, one P-256) and every token are generated at run time by \
         tessera-testkit. Tokens are Tessera API tokens (`iss`, `aud`, `exp` +1 h, `status` \
         claim). Tessera's configuration has both keys inline, a status list of \
         {SMALL_LIST} entries (or {BIG_LIST} or {HUGE_LIST}) and `cache_size` {CACHE_SIZE}; native \
         `jwt_authn` has the same JWKS inline (`local_jwks`), the same issuer and audience, \
         and `jwt_cache_config {{jwt_cache_size: {CACHE_SIZE}}}` when cached. `jwt_authn` \
         checks less than Tessera (no `typ`, status list, IP filter or lifetime checks).\n\
         - \"New token every request\" sends {} distinct tokens round robin: far more \
         than either cache holds, so (with round robin) nearly every request misses; the \
         Tessera cache counters below show it.\n\
         - CPU columns: cores used during the measured seconds (medians over rounds), by \
         Envoy (all its threads, from `/proc/<pid>/stat`) and by the whole machine (from \
         `/proc/stat`, of {cores}); the machine figure minus Envoy's is wrk plus anything \
         else running, so it shows whether Envoy was the bottleneck and whether other work \
         disturbed the run.\n\
         - Ratios are the median of the per-round ratios of throughput (requests/s), with \
         the per-round range in brackets.\n",
        plan.rounds,
        CONFIGS.len(),
        plan.warmup,
        plan.seconds,
        plan.fresh_tokens,
        cores = wrk::cpu_count(),
    );
    let _ = writeln!(md, "### Commands\n");
    let _ = writeln!(md, "```sh\ncargo xtask bench\n");
    let _ = writeln!(
        md,
        "# per configuration and round (bootstraps in {b}/<id>.yaml):\n\
         envoy -c {b}/<id>.yaml --concurrency 1 --log-level warn --disable-hot-restart \
         --admin-address-path <tmp>/admin-address\n\
         taskset -a -p -c {SERVER_CPU} <envoy pid>\n\
         taskset -c {WRK_CPU} wrk -t1 -c{CONNECTIONS} -d{w}s -s {s} http://127.0.0.1:<port>/ -- {d}/<tokens>.txt   # warm-up\n\
         taskset -c {WRK_CPU} wrk -t1 -c{CONNECTIONS} -d{sec}s -s {s} http://127.0.0.1:<port>/ -- {d}/<tokens>.txt\n```\n",
        b = rel(&dir.join("bootstraps")),
        s = rel(script),
        d = rel(dir),
        w = plan.warmup,
        sec = plan.seconds,
    );
    let _ = writeln!(
        md,
        "The wasm modules are built by `cargo xtask bench` as by `cargo xtask build-wasm` \
         (release, `opt-level = \"z\"`, LTO, `wasm-opt -Oz`): `{}` and `{}`.\n",
        rel(inputs.filter_wasm),
        rel(inputs.floor_wasm),
    );
    let _ = writeln!(md, "### Results\n");
    let _ = writeln!(
        md,
        "| configuration | tokens | req/s (median) | vs no filter | p50 µs | p99 µs | Envoy CPU | machine CPU | req/s per round |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    let none = index("none").map(|i| &samples[i]);
    for (config, runs) in CONFIGS.iter().zip(samples) {
        if runs.is_empty() {
            continue;
        }
        let vs_none = none
            .map(|n| {
                let r: Vec<f64> = runs.iter().zip(n).map(|(a, b)| a.rps / b.rps).collect();
                format!("{:.2}×", median(&r))
            })
            .unwrap_or_default();
        let sum = wrk::summarize(runs);
        let _ = writeln!(
            md,
            "| `{}` {} | `{}` | {:.0} | {} | {:.0} | {:.0} | {} | {} | {} |",
            config.id,
            config.what,
            config.pool.file_name(),
            sum.rps,
            vs_none,
            sum.p50_us,
            sum.p99_us,
            sum.server_cpu,
            sum.machine_cpu,
            sum.rounds
        );
    }
    let _ = writeln!(md);
    let flagged: Vec<String> = CONFIGS
        .iter()
        .zip(samples)
        .flat_map(|(c, runs)| {
            runs.iter()
                .enumerate()
                .filter(|(_, s)| disturbed(s))
                .map(move |(r, _)| format!("`{}` round {}", c.id, r + 1))
        })
        .collect();
    if flagged.is_empty() {
        let _ = writeln!(
            md,
            "Envoy used a full core (≥ {SATURATED:.2}) in every measured run: it was the \
             bottleneck, not wrk or other work.\n"
        );
    } else {
        let _ = writeln!(
            md,
            "\\* Envoy used less than {SATURATED:.2} of a core in this run: something else \
             took CPU (see the machine figure) or the load generator limited it. Medians \
             over rounds damp it; the flagged runs are: {}.\n",
            flagged.join(", ")
        );
    }
    let _ = writeln!(
        md,
        "Tessera cache counters after each run (warm-up included):\n"
    );
    let _ = writeln!(
        md,
        "| configuration | hits / misses per round | hit rate (all rounds) |\n|---|---|---:|"
    );
    for (config, runs) in CONFIGS.iter().zip(samples) {
        if runs.iter().all(|s| s.cache.is_none()) {
            continue;
        }
        let text = runs
            .iter()
            .map(|s| s.cache.map_or("n/a".into(), |(h, m)| format!("{h} / {m}")))
            .collect::<Vec<_>>()
            .join(", ");
        let (hits, misses) = runs
            .iter()
            .filter_map(|s| s.cache)
            .fold((0u64, 0u64), |(h, m), (a, b)| (h + a, m + b));
        let rate = 100.0 * hits as f64 / (hits + misses).max(1) as f64;
        let _ = writeln!(md, "| `{}` | {} | {rate:.1} % |", config.id, text);
    }
    let _ = writeln!(
        md,
        "\ncore's cache (`core/src/cache.rs`) keeps two generations of `cache_size` entries \
         each and drops the old one when the young one fills, so any working set of up to \
         `cache_size` tokens stays cached (`tessera-ed-1000`).\n"
    );
    let _ = writeln!(md, "### Ratios\n");
    let _ = writeln!(md, "| measure | ratio (throughput) | target |");
    let _ = writeln!(md, "|---|---:|---:|");
    let mut targets = Vec::new();
    for (label, a, b, target) in RATIOS {
        let r = per_round_ratio(a, b);
        if r.is_empty() {
            continue;
        }
        let t = target.map_or("—".to_owned(), |t| format!("≥ {t:.2}×"));
        let _ = writeln!(md, "| {label} (`{a}` / `{b}`) | {} | {t} |", fmt_ratio(&r));
        if let Some(t) = target {
            targets.push(TargetRow {
                measure: (*label).to_owned(),
                measured: fmt_ratio(&r),
                target: format!("≥ {t:.2}×"),
                met: Some(median(&r) >= *t),
            });
        }
    }
    let _ = writeln!(md);
    Section {
        title: "Envoy throughput and latency".into(),
        body: md,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_every_configuration_and_target() {
        let root = Path::new("/repo");
        let inputs = Inputs::example(root);
        let sample = |rps: f64| Sample {
            requests: 10,
            rps,
            p50_us: 100.0,
            p99_us: 900.0,
            cache: Some((9, 1)),
            ..Sample::default()
        };
        let samples: Vec<Vec<Sample>> = (0..CONFIGS.len())
            .map(|i| (1..=3).map(|r| sample((1000 * (i + r)) as f64)).collect())
            .collect();
        let section = report(
            &inputs,
            &Plan::full(),
            &samples,
            Path::new("/repo/target/bench/round-robin.lua"),
            Path::new("/repo/target/bench"),
        );
        let md = &section.body;
        for config in CONFIGS {
            assert!(md.contains(&format!("`{}`", config.id)), "{}", config.id);
        }
        assert!(md.contains("≥ 0.90×"));
        assert!(md.contains("-s target/bench/round-robin.lua"));
        assert!(md.contains("90.0 %"));
        assert_eq!(
            section.targets.len(),
            RATIOS.iter().filter(|r| r.3.is_some()).count()
        );
    }

    #[test]
    fn ratios_name_existing_configurations() {
        for (_, a, b, _) in RATIOS {
            assert!(CONFIGS.iter().any(|c| c.id == *a), "{a}");
            assert!(CONFIGS.iter().any(|c| c.id == *b), "{b}");
        }
    }
}
