//! The workerd part of `cargo xtask bench`: requests/s of the Tessera edge worker against a
//! JS worker that does the same checks (signature, `exp`, `iss`, `aud`) with the `jose`
//! library (`bench/jose-worker/worker.mjs`), on the same tokens: one reused token, and a
//! new token on every request, with Ed25519 and with ES256 keys.
//!
//! Each configuration gets a fresh workerd (every thread pinned to core 0 with
//! `taskset -a -p`), loaded by wrk pinned to core 1 with the round-robin Lua script of the
//! Envoy part. Both workers forward an allowed request to the same origin: a second worker
//! in the same workerd process, bound as `ORIGIN_SERVICE` (`bench/jose-worker/origin.mjs`,
//! a fixed 200). The configurations run interleaved (Tessera, jose, Tessera, jose, …) for
//! `plan.rounds` rounds; the report gives medians and the median of the per-round ratios.
//!
//! - The Tessera worker is the bundle `cargo xtask build-wasm` writes
//!   (`target/wasm/edge-worker`), started by tessera-host-tests' [`Workerd::start`] with
//!   the same capnp config its tests use ([`WorkerdOptions::capnp`], origin
//!   [`Origin::Worker`]): both keys inline, the same issuer and audience, a status list of
//!   [`LIST_ENTRIES`] entries, the default token cache.
//! - The jose worker is `bench/jose-worker/worker.mjs` with jose's ES modules
//!   (`node_modules/jose/dist/webapi`, installed into `tools/node` by
//!   [`edge::ensure_jose`]) listed one by one as modules named `jose/<path>`: workerd has
//!   no npm resolution, and jose's relative imports resolve between those names. It is
//!   started with [`Workerd::start_config`].
//!
//! Everything a run needs is written under `target/bench/workerd/`: the token files, the
//! Lua script and, for each worker, a directory that `workerd serve` can run by hand.
//! `--smoke` runs every configuration once for a second and only checks that every answer
//! was a 200.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_host_tests::workerd::{
    Origin, Workerd, WorkerdOptions, BUNDLE_FILES, ORIGIN_WORKER_SERVICE,
};
use tessera_host_tests::{Request, TempDir};
use tessera_testkit::{
    jwks, now, tamper_signature, Alg, TestKey, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
};

use super::stats::median;
use super::tokens;
use super::wrk::{
    self, disturbed, measure_wrk, pin_server, run_wrk, wrk_command, Sample, CONNECTIONS, SATURATED,
    SERVER_CPU, WRK_CPU,
};
use super::{fmt_ratio, Inputs, Plan, Section, TargetRow};
use crate::edge::{self, JOSE_VERSION};
use crate::tools::{self, Result};

/// The jose worker and the origin both workers use, relative to the workspace root.
const JOSE_WORKER_DIR: &str = "bench/jose-worker";
/// Entries of the status list in Tessera's configuration (the last one revoked; no bench
/// token points to it).
const LIST_ENTRIES: usize = 1_024;
/// Tessera's default `cache_size` (the configuration leaves it out), for the report.
const TESSERA_DEFAULT_CACHE: usize = 1_024;
/// The jose worker's clock tolerance, equal to Tessera's default `clock_skew_secs`.
const CLOCK_TOLERANCE_SECS: u64 = 60;
/// The header the origin adds to its 200s: the precheck's proof that a 200 came from it.
const ORIGIN_MARK: &str = "x-bench-origin";

/// Which worker serves a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Worker {
    /// The Tessera edge worker (wasm, WebCrypto signatures, token cache).
    Tessera,
    /// `bench/jose-worker/worker.mjs` (jose's `jwtVerify`, no cache).
    Jose,
}

impl Worker {
    fn name(self) -> &'static str {
        match self {
            Worker::Tessera => "Tessera",
            Worker::Jose => "jose",
        }
    }
}

/// The token pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    EdReused,
    EdFresh,
    EsReused,
    EsFresh,
}

impl Pool {
    const ALL: [Pool; 4] = [Pool::EdReused, Pool::EdFresh, Pool::EsReused, Pool::EsFresh];

    fn file_name(self) -> &'static str {
        match self {
            Pool::EdReused => "tokens-ed25519-reused.txt",
            Pool::EdFresh => "tokens-ed25519-fresh.txt",
            Pool::EsReused => "tokens-es256-reused.txt",
            Pool::EsFresh => "tokens-es256-fresh.txt",
        }
    }
}

/// One benchmarked configuration.
#[derive(Clone, Copy, Debug)]
struct Config {
    id: &'static str,
    what: &'static str,
    worker: Worker,
    pool: Pool,
}

/// In the order of a round: each Tessera configuration directly followed by the jose one
/// on the same tokens (A B A B …).
const CONFIGS: &[Config] = &[
    Config {
        id: "tessera-ed",
        what: "Tessera worker, Ed25519, one reused token",
        worker: Worker::Tessera,
        pool: Pool::EdReused,
    },
    Config {
        id: "jose-ed",
        what: "jose worker, Ed25519, one reused token",
        worker: Worker::Jose,
        pool: Pool::EdReused,
    },
    Config {
        id: "tessera-ed-new",
        what: "Tessera worker, Ed25519, new token every request",
        worker: Worker::Tessera,
        pool: Pool::EdFresh,
    },
    Config {
        id: "jose-ed-new",
        what: "jose worker, Ed25519, new token every request",
        worker: Worker::Jose,
        pool: Pool::EdFresh,
    },
    Config {
        id: "tessera-es",
        what: "Tessera worker, ES256, one reused token",
        worker: Worker::Tessera,
        pool: Pool::EsReused,
    },
    Config {
        id: "jose-es",
        what: "jose worker, ES256, one reused token",
        worker: Worker::Jose,
        pool: Pool::EsReused,
    },
    Config {
        id: "tessera-es-new",
        what: "Tessera worker, ES256, new token every request",
        worker: Worker::Tessera,
        pool: Pool::EsFresh,
    },
    Config {
        id: "jose-es-new",
        what: "jose worker, ES256, new token every request",
        worker: Worker::Jose,
        pool: Pool::EsFresh,
    },
];

/// A ratio the report names.
struct Ratio {
    label: &'static str,
    numerator: &'static str,
    denominator: &'static str,
    /// The issue's target, if this pair has one.
    target: Option<f64>,
    /// Whether the pair is the issue's claim (a row in the targets table) or only shown.
    claimed: bool,
}

const RATIOS: &[Ratio] = &[
    Ratio {
        label: "workerd vs jose, reused tokens (Ed25519)",
        numerator: "tessera-ed",
        denominator: "jose-ed",
        target: Some(1.0),
        claimed: true,
    },
    Ratio {
        label: "workerd vs jose, distinct tokens (Ed25519, a new token every request)",
        numerator: "tessera-ed-new",
        denominator: "jose-ed-new",
        target: Some(0.8),
        claimed: true,
    },
    Ratio {
        label: "workerd vs jose, reused tokens (ES256)",
        numerator: "tessera-es",
        denominator: "jose-es",
        target: Some(1.0),
        claimed: false,
    },
    Ratio {
        label: "workerd vs jose, distinct tokens (ES256, a new token every request)",
        numerator: "tessera-es-new",
        denominator: "jose-es-new",
        target: Some(0.8),
        claimed: false,
    },
    Ratio {
        label: "Tessera worker: new token every request vs reused (Ed25519)",
        numerator: "tessera-ed-new",
        denominator: "tessera-ed",
        target: None,
        claimed: false,
    },
    Ratio {
        label: "jose worker: new token every request vs reused (Ed25519)",
        numerator: "jose-ed-new",
        denominator: "jose-ed",
        target: None,
        claimed: false,
    },
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
        let token = |key: &TestKey, i: usize| tokens::token(key, t, i, LIST_ENTRIES);
        let mut pools = Vec::new();
        for pool in Pool::ALL {
            let list: Vec<String> = match pool {
                Pool::EdReused => vec![token(&ed, 0)],
                Pool::EsReused => vec![token(&es, 0)],
                Pool::EdFresh => (0..plan.fresh_tokens).map(|i| token(&ed, i)).collect(),
                Pool::EsFresh => (0..plan.fresh_tokens).map(|i| token(&es, i)).collect(),
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

    /// `TESSERA_CONFIG`: both keys inline, the default cache, a status list of
    /// [`LIST_ENTRIES`] entries (the last revoked).
    fn tessera_config(&self) -> Value {
        tokens::tessera_config(&[&self.ed, &self.es], LIST_ENTRIES, None)
    }
}

/// A capnp text literal.
fn capnp_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The jose worker's capnp config: `worker.mjs` plus jose's modules (`jose/<path>`), the
/// JWKS from `jwks.json`, issuer and audience as text bindings, and the same origin worker
/// and outbound network as the Tessera worker's config.
fn jose_capnp(jose_modules: &[String]) -> String {
    let mut modules = vec!["(name = \"worker.mjs\", esModule = embed \"worker.mjs\")".to_owned()];
    for name in jose_modules {
        let q = capnp_str(name);
        modules.push(format!("(name = {q}, esModule = embed {q})"));
    }
    format!(
        r#"# Written by `cargo xtask bench` (part workerd): the jose comparison worker.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .joseWorker),
    (name = "loopback", network = (allow = ["local"])),
    {origin}
  ],
  sockets = [(name = "http", address = "127.0.0.1:0", http = (), service = "main")],
);

const joseWorker :Workerd.Worker = (
  modules = [
    {modules}
  ],
  compatibilityDate = "2025-01-01",
  bindings = [
    (name = "JOSE_JWKS", text = embed "jwks.json"),
    (name = "JOSE_ISSUER", text = {iss}),
    (name = "JOSE_AUDIENCE", text = {aud}),
    (name = "ORIGIN_SERVICE", service = "origin")
  ],
  globalOutbound = "loopback",
);
"#,
        origin = ORIGIN_WORKER_SERVICE,
        modules = modules.join(",\n    "),
        iss = capnp_str(DEFAULT_ISSUER),
        aud = capnp_str(DEFAULT_AUDIENCE),
    )
}

/// Copies every `.js` file under `from` into `to` (same layout) and returns their module
/// names `jose/<relative path>`, sorted.
fn copy_jose_modules(from: &Path, to: &Path) -> Result<Vec<String>> {
    fn walk(dir: &Path, rel: &str, to: &Path, names: &mut Vec<String>) -> Result<()> {
        let entries =
            fs::read_dir(dir).map_err(|e| format!("could not read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let rel_name = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if path.is_dir() {
                walk(&path, &rel_name, to, names)?;
            } else if name.ends_with(".js") {
                let dest = to.join(&rel_name);
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| format!("could not create {}: {e}", parent.display()))?;
                }
                fs::copy(&path, &dest).map_err(|e| {
                    format!("copying {} to {}: {e}", path.display(), dest.display())
                })?;
                names.push(format!("jose/{rel_name}"));
            }
        }
        Ok(())
    }
    let mut names = Vec::new();
    walk(from, "", to, &mut names)?;
    names.sort();
    if !names.iter().any(|n| n == "jose/jwt/verify.js") {
        return Err(format!(
            "{} has no jwt/verify.js: is it jose {JOSE_VERSION}'s dist/webapi?",
            from.display()
        ));
    }
    Ok(names)
}

/// A fresh directory (its old contents removed).
fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("could not clear {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}

/// How each worker is started.
struct Workers {
    /// The Tessera worker's options (its bundle is the snapshot in `tessera/`).
    tessera: WorkerdOptions,
    /// The jose worker's config, `jose/jose.capnp`.
    jose_capnp: PathBuf,
}

impl Workers {
    /// Writes `tessera/` (a snapshot of the bundle, the config, the origin and the capnp
    /// [`Workerd::start`] writes, so it runs by hand) and `jose/` (worker, origin, jose's
    /// modules, JWKS, capnp) under `dir`.
    fn prepare(
        inputs: &Inputs<'_>,
        jose_package: &Path,
        fixtures: &Fixtures,
        dir: &Path,
    ) -> Result<Workers> {
        let sources = inputs.root.join(JOSE_WORKER_DIR);
        let origin_path = sources.join("origin.mjs");
        let origin = fs::read_to_string(&origin_path)
            .map_err(|e| format!("reading {}: {e}", origin_path.display()))?;

        let tessera_dir = tools::absolute(&dir.join("tessera"));
        fresh_dir(&tessera_dir)?;
        for file in BUNDLE_FILES {
            copy(&inputs.edge_bundle.join(file), &tessera_dir.join(file))?;
        }
        let tessera = WorkerdOptions::new(
            inputs.workerd,
            &tessera_dir,
            &fixtures.tessera_config(),
            Origin::Worker(origin.clone()),
        );
        write(&tessera_dir.join("tessera-config.json"), &tessera.config)?;
        write(&tessera_dir.join("origin.mjs"), &origin)?;
        write(&tessera_dir.join("tessera.capnp"), &tessera.capnp())?;

        let jose_dir = tools::absolute(&dir.join("jose"));
        fresh_dir(&jose_dir)?;
        copy(&sources.join("worker.mjs"), &jose_dir.join("worker.mjs"))?;
        write(&jose_dir.join("origin.mjs"), &origin)?;
        write(&jose_dir.join("jwks.json"), &fixtures.jwks().to_string())?;
        let modules = copy_jose_modules(
            &jose_package.join("dist").join("webapi"),
            &jose_dir.join("jose"),
        )?;
        let capnp = jose_dir.join("jose.capnp");
        write(&capnp, &jose_capnp(&modules))?;
        Ok(Workers {
            tessera,
            jose_capnp: capnp,
        })
    }

    fn start(&self, inputs: &Inputs<'_>, worker: Worker) -> Result<Workerd> {
        match worker {
            Worker::Tessera => Workerd::start(&self.tessera),
            Worker::Jose => {
                let tmp = TempDir::new("bench-jose").map_err(|e| format!("temp dir: {e}"))?;
                Workerd::start_config(inputs.workerd, tmp, &self.jose_capnp, "http")
            }
        }
        .map_err(|e| format!("starting workerd with the {} worker: {e}", worker.name()))
    }
}

/// Before measuring: the first bench token is answered 200 by the origin, a request
/// without a token 401, and the same token with a broken signature 401 (the worker is
/// really checking).
fn precheck(workerd: &Workerd, config: &Config, token: &str) -> Result<()> {
    let send = |req: Request, what: &str| {
        workerd
            .send(&req.timeout(Duration::from_secs(10)))
            .map_err(|e| format!("{}: {what}: request failed: {e}", config.id))
    };
    let ok = send(Request::get("/").bearer(token), "a bench token")?;
    if ok.status != 200 || ok.header(ORIGIN_MARK).is_none() {
        return Err(format!(
            "{}: a bench token was answered {} ({ORIGIN_MARK}: {:?}; expected 200 from the \
             origin worker): {}\n--- workerd log ---\n{}",
            config.id,
            ok.status,
            ok.header(ORIGIN_MARK),
            ok.summary(),
            workerd.log()
        ));
    }
    for (what, req) in [
        ("no token", Request::get("/")),
        (
            "a bad signature",
            Request::get("/").bearer(&tamper_signature(token)),
        ),
    ] {
        let resp = send(req, what)?;
        if resp.status != 401 {
            return Err(format!(
                "{}: a request with {what} was answered {} (expected 401): {}\n\
                 --- workerd log ---\n{}",
                config.id,
                resp.status,
                resp.summary(),
                workerd.log()
            ));
        }
    }
    Ok(())
}

/// Starts the configuration's workerd, checks it, measures, stops it.
fn measure(
    inputs: &Inputs<'_>,
    workers: &Workers,
    fixtures: &Fixtures,
    plan: &Plan,
    config: &Config,
    script: &Path,
) -> Result<Sample> {
    let workerd = workers.start(inputs, config.worker)?;
    pin_server(workerd.pid())?;
    let (tokens_path, tokens) = fixtures.pool(config.pool)?;
    let first = tokens
        .first()
        .ok_or_else(|| format!("{}: empty token pool", config.id))?;
    precheck(&workerd, config, first)?;
    let url = format!("http://{}/", workerd.addr());
    if plan.warmup > 0 {
        run_wrk(&mut wrk_command(&url, plan.warmup, script, tokens_path))?;
    }
    let sample = measure_wrk(workerd.pid(), &url, plan.seconds, script, tokens_path);
    let log = workerd.log();
    drop(workerd);
    let sample = sample?;
    if sample.requests == 0 || sample.non_2xx > 0 || sample.socket_errors > 0 {
        return Err(format!(
            "{}: {} requests, {} answered with a non-2xx status, {} socket errors \
             (every response must be a 200)\n--- workerd log ---\n{}",
            config.id, sample.requests, sample.non_2xx, sample.socket_errors, log
        ));
    }
    Ok(sample)
}

/// Runs the workerd part in `dir` (`target/bench/workerd`).
pub fn run(inputs: &Inputs<'_>, plan: &Plan, dir: &Path) -> Result<Section> {
    let dir = tools::absolute(dir);
    fs::create_dir_all(&dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let jose_package = edge::ensure_jose(inputs.node_dir)?;
    let script = dir.join("round-robin.lua");
    write(&script, wrk::LUA)?;

    let started = Instant::now();
    println!(
        "generating keys and tokens (tessera-testkit) into {} ...",
        dir.display()
    );
    let fixtures = Fixtures::generate(&dir, plan)?;
    println!("  done in {:.1} s", started.elapsed().as_secs_f64());
    let workers = Workers::prepare(inputs, &jose_package, &fixtures, &dir)?;

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CONFIGS.len()];
    for round in 1..=plan.rounds {
        println!("round {round}/{}", plan.rounds);
        for (i, config) in CONFIGS.iter().enumerate() {
            let sample = measure(inputs, &workers, &fixtures, plan, config, &script)?;
            let cpu = sample
                .cpu
                .map(|(busy, server)| format!("  cpu: machine {busy:.2}, workerd {server:.2}"))
                .unwrap_or_default();
            println!(
                "  {:<16} {:>8.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  ({} requests, all 200){cpu}",
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
    Ok(report(inputs, plan, &samples, &dir))
}

/// The per-round throughput ratios `numerator / denominator`.
fn per_round_ratio(samples: &[Vec<Sample>], numerator: &str, denominator: &str) -> Vec<f64> {
    let index = |id: &str| CONFIGS.iter().position(|c| c.id == id);
    match (index(numerator), index(denominator)) {
        (Some(a), Some(b)) => samples[a]
            .iter()
            .zip(&samples[b])
            .map(|(x, y)| x.rps / y.rps)
            .collect(),
        _ => Vec::new(),
    }
}

/// The Markdown section.
fn report(inputs: &Inputs<'_>, plan: &Plan, samples: &[Vec<Sample>], dir: &Path) -> Section {
    let rel = |p: &Path| {
        p.strip_prefix(inputs.root)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    let mut md = String::new();
    let _ = writeln!(md, "### Method\n");
    let _ = writeln!(
        md,
        "- Loopback only. Each configuration gets a fresh `workerd serve` with one worker \
         under test, every workerd thread pinned to core {SERVER_CPU} \
         (`taskset -a -p -c {SERVER_CPU} <pid>`); wrk is pinned to core {WRK_CPU}.\n\
         - Both workers forward an allowed request to the same origin: a second worker in \
         the same workerd process, bound as `ORIGIN_SERVICE` \
         (`{JOSE_WORKER_DIR}/origin.mjs`, a fixed `200 ok`), so the downstream work is the \
         same for both and no network hop is measured.\n\
         - **Tessera worker**: the edge-worker bundle (`{bundle}`: wasm-bindgen build of \
         tessera-core, signatures with WebCrypto), in the capnp config its host tests use, \
         with both keys inline, issuer `{DEFAULT_ISSUER}`, audience `{DEFAULT_AUDIENCE}`, \
         a status list of {LIST_ENTRIES} entries inline and the default token cache \
         (`cache_size` {TESSERA_DEFAULT_CACHE}, two generations). Per request it checks the \
         token source, `alg` pinned by the key, `kid`, the signature, `exp` (required), \
         `nbf`, `iat`, the maximum lifetime, `iss`, `aud`, `typ`, the required claims \
         (`sub`, `jti`, `org`, `status`) and the status list, then forwards with the \
         identity headers.\n\
         - **jose worker** (`{JOSE_WORKER_DIR}/worker.mjs`, jose {JOSE_VERSION} from npm, its \
         `dist/webapi` ES modules listed one by one in the capnp config): the same JWKS \
         (keys imported once per isolate with `importJWK`), the token from \
         `Authorization: Bearer`, then `jwtVerify` with the key of the token's `kid`, the \
         algorithm pinned to that key's, `issuer`, `audience`, `requiredClaims: [\"exp\"]` \
         and `clockTolerance` {CLOCK_TOLERANCE_SECS} s (Tessera's default skew); `nbf` is \
         checked when present. It checks less than Tessera: no `typ`, no status list, no \
         maximum lifetime or `iat` check, no required `sub`/`jti`/`org`, and it has no \
         token cache (every request verifies a signature). Allowed requests are forwarded \
         with the subject added as a header.\n\
         - Tokens: Tessera API tokens from tessera-testkit, generated at run time (one \
         Ed25519 and one P-256 key; `iss`, `aud`, `exp` +1 h, `status` claim). \"Reused\": \
         one token on every request. \"New token every request\": {} distinct tokens sent \
         round robin, far more than Tessera's cache holds, so nearly every request is a \
         cache miss and a signature check in both workers.\n\
         - wrk: 1 thread, {CONNECTIONS} keep-alive connections, HTTP/1.1 `GET /`, \
         `Authorization: Bearer <token>` taken round robin from a token file by a Lua \
         script. Latency is wrk's at saturation (it includes queueing).\n\
         - {} interleaved round(s): every round runs all {} configurations in order, each \
         Tessera configuration directly followed by jose on the same tokens (A B A B …); \
         each run is a {} s untimed warm-up then {} s measured. Before each run, on that \
         workerd, the first token must be answered 200 by the origin, a request without a \
         token 401 and the token with a broken signature 401; every measured response \
         must be a 200, else the bench fails.\n\
         - CPU columns: cores used during the measured seconds (medians over rounds), by \
         workerd (all its threads, from `/proc/<pid>/stat`) and by the whole machine (from \
         `/proc/stat`, of {cores}).\n\
         - Ratios are the median of the per-round ratios of throughput (requests/s), with \
         the per-round range in brackets. The issue's targets are claimed for Ed25519; the \
         ES256 pairs are shown against the same figures.\n",
        plan.fresh_tokens,
        plan.rounds,
        CONFIGS.len(),
        plan.warmup,
        plan.seconds,
        bundle = rel(inputs.edge_bundle),
        cores = wrk::cpu_count(),
    );

    let _ = writeln!(md, "### Commands\n");
    let workerd = rel(inputs.workerd);
    let d = rel(dir);
    let _ = writeln!(md, "```sh\ncargo xtask bench --only workerd\n");
    let _ = writeln!(
        md,
        "# Tessera worker: tessera-host-tests' Workerd::start writes {d}/tessera/tessera.capnp's \
         text\n# next to a copy of {d}/tessera/ in a temporary directory and runs there:\n\
         {workerd} serve tessera.capnp --control-fd 1\n\
         # jose worker (its modules under {d}/jose/jose/):\n\
         (cd {d}/jose && {workerd} serve jose.capnp --control-fd 1 --socket-addr http=127.0.0.1:0)\n\
         # either way, then:\n\
         taskset -a -p -c {SERVER_CPU} <workerd pid>\n\
         taskset -c {WRK_CPU} wrk -t1 -c{CONNECTIONS} -d{w}s -s {d}/round-robin.lua http://127.0.0.1:<port>/ -- {d}/<tokens>.txt   # warm-up\n\
         taskset -c {WRK_CPU} wrk -t1 -c{CONNECTIONS} -d{sec}s -s {d}/round-robin.lua http://127.0.0.1:<port>/ -- {d}/<tokens>.txt\n```\n",
        w = plan.warmup,
        sec = plan.seconds,
    );
    let _ = writeln!(
        md,
        "To run a worker by hand on a fixed port: `cd {d}/tessera && {workerd} serve \
         tessera.capnp --socket-addr http=127.0.0.1:8080` (or the same in `{d}/jose` with \
         `jose.capnp`). Token files: {}.\n",
        Pool::ALL
            .iter()
            .map(|p| format!("`{d}/{}`", p.file_name()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let _ = writeln!(md, "### Results\n");
    let _ = writeln!(
        md,
        "| configuration | worker | tokens | req/s (median) | p50 µs | p99 µs | workerd CPU | machine CPU | req/s per round |"
    );
    let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|---:|---|");
    for (config, runs) in CONFIGS.iter().zip(samples) {
        let sum = wrk::summarize(runs);
        let _ = writeln!(
            md,
            "| `{}` {} | {} | `{}` | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            config.id,
            config.what,
            config.worker.name(),
            config.pool.file_name(),
            sum.rps,
            sum.p50_us,
            sum.p99_us,
            sum.server_cpu,
            sum.machine_cpu,
            sum.rounds
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "Every run, in the order measured:\n");
    let _ = writeln!(
        md,
        "| round | configuration | requests | req/s | p50 µs | p99 µs | workerd CPU | machine CPU |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|");
    let rounds = samples.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        for (config, runs) in CONFIGS.iter().zip(samples) {
            let Some(s) = runs.get(round) else { continue };
            let (machine, server) = s.cpu.map_or(("n/a".to_owned(), "n/a".to_owned()), |c| {
                (format!("{:.2}", c.0), format!("{:.2}", c.1))
            });
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {:.0} | {:.0} | {:.0} | {server} | {machine} |",
                round + 1,
                config.id,
                s.requests,
                s.rps,
                s.p50_us,
                s.p99_us
            );
        }
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
    let runs = samples.iter().map(Vec::len).sum::<usize>();
    let flagged = if !flagged.is_empty() && flagged.len() == runs {
        vec!["all of them".to_owned()]
    } else {
        flagged
    };
    if flagged.is_empty() {
        let _ = writeln!(
            md,
            "workerd used a full core (≥ {SATURATED:.2}) in every measured run: it was the \
             bottleneck, not wrk or other work.\n"
        );
    } else {
        let _ = writeln!(
            md,
            "\\* workerd used less than {SATURATED:.2} of a core in this run: something else \
             took CPU (see the machine figure) or the load generator limited it. Medians \
             over rounds damp it; the flagged runs are: {}.\n",
            flagged.join(", ")
        );
    }

    let _ = writeln!(md, "### Ratios\n");
    let _ = writeln!(md, "| measure | ratio (throughput) | target |");
    let _ = writeln!(md, "|---|---:|---:|");
    let mut targets = Vec::new();
    for ratio in RATIOS {
        let r = per_round_ratio(samples, ratio.numerator, ratio.denominator);
        let target = ratio.target.map(|t| format!("≥ {t:.2}×"));
        let shown = match (&target, ratio.claimed) {
            (Some(t), true) => t.clone(),
            (Some(t), false) => format!("({t}, not claimed)"),
            (None, _) => "—".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {} (`{}` / `{}`) | {} | {shown} |",
            ratio.label,
            ratio.numerator,
            ratio.denominator,
            fmt_ratio(&r)
        );
        if let (Some(t), Some(text), true) = (ratio.target, target, ratio.claimed) {
            targets.push(TargetRow {
                measure: ratio.label.to_owned(),
                measured: fmt_ratio(&r),
                target: text,
                met: (!plan.smoke).then(|| median(&r) >= t),
            });
        }
    }
    let _ = writeln!(md);
    Section {
        title: "workerd: the Tessera worker vs jose".into(),
        body: md,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rounds: usize) -> Vec<Vec<Sample>> {
        (0..CONFIGS.len())
            .map(|i| {
                (1..=rounds)
                    .map(|r| Sample {
                        requests: 10,
                        rps: (1000 * (i + r)) as f64,
                        p50_us: 100.0,
                        p99_us: 900.0,
                        cpu: Some((1.9, 0.99)),
                        ..Sample::default()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn report_has_every_configuration_command_and_target() {
        let inputs = Inputs::example(Path::new("/repo"));
        let section = report(
            &inputs,
            &Plan::full(),
            &samples(3),
            Path::new("/repo/target/bench/workerd"),
        );
        let md = &section.body;
        for config in CONFIGS {
            assert!(md.contains(&format!("`{}`", config.id)), "{}", config.id);
        }
        for pool in Pool::ALL {
            assert!(md.contains(pool.file_name()), "{pool:?}");
        }
        for heading in ["### Method", "### Commands", "### Results", "### Ratios"] {
            assert!(md.contains(heading), "{heading}");
        }
        assert!(md.contains("-s target/bench/workerd/round-robin.lua"));
        assert!(md.contains("target/bench/workerd/jose && tools/node/workerd serve jose.capnp"));
        assert!(md.contains("target/bench/workerd/tessera/tessera.capnp"));
        assert!(md.contains("jose 6.2.18"));
        // One row per configuration per round, plus the summary rows.
        assert_eq!(md.matches("| 3 | `").count(), CONFIGS.len());
        assert_eq!(section.targets.len(), 2);
        assert!(section.targets.iter().all(|t| t.met.is_some()));
        assert_eq!(section.targets[0].target, "≥ 1.00×");
        assert_eq!(section.targets[1].target, "≥ 0.80×");
        // tessera-ed (i = 0) over jose-ed (i = 1): 1000(r)/1000(r+1), median at r = 2.
        assert_eq!(section.targets[0].measured, "0.67× (0.50–0.75)");
    }

    #[test]
    fn smoke_targets_are_undecided() {
        let inputs = Inputs::example(Path::new("/repo"));
        let section = report(
            &inputs,
            &Plan::smoke(),
            &samples(1),
            Path::new("/repo/target/bench/workerd"),
        );
        assert_eq!(section.targets.len(), 2);
        assert!(section.targets.iter().all(|t| t.met.is_none()));
    }

    #[test]
    fn runs_without_a_full_core_are_flagged() {
        let inputs = Inputs::example(Path::new("/repo"));
        let dir = Path::new("/repo/target/bench/workerd");
        let full = report(&inputs, &Plan::full(), &samples(3), dir);
        assert!(full.body.contains("used a full core"));
        let mut busy = samples(3);
        for s in busy.iter_mut().flatten() {
            s.cpu = Some((2.0, 0.5));
        }
        let all = report(&inputs, &Plan::full(), &busy, dir);
        assert!(all.body.contains("the flagged runs are: all of them."));
        busy[0][1].cpu = Some((2.0, 1.0));
        let some = report(&inputs, &Plan::full(), &busy, dir);
        assert!(some
            .body
            .contains("`tessera-ed` round 1, `tessera-ed` round 3, `jose-ed`"));
    }

    #[test]
    fn rounds_interleave_tessera_and_jose_on_the_same_tokens() {
        assert_eq!(CONFIGS.len() % 2, 0);
        for pair in CONFIGS.chunks(2) {
            assert_eq!(pair[0].worker, Worker::Tessera, "{}", pair[0].id);
            assert_eq!(pair[1].worker, Worker::Jose, "{}", pair[1].id);
            assert_eq!(pair[0].pool, pair[1].pool, "{}", pair[0].id);
        }
        for pool in Pool::ALL {
            assert_eq!(CONFIGS.iter().filter(|c| c.pool == pool).count(), 2);
        }
        let mut ids: Vec<&str> = CONFIGS.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CONFIGS.len());
    }

    #[test]
    fn ratios_name_existing_configurations() {
        for ratio in RATIOS {
            for id in [ratio.numerator, ratio.denominator] {
                assert!(CONFIGS.iter().any(|c| c.id == id), "{id}");
            }
        }
        assert_eq!(RATIOS.iter().filter(|r| r.claimed).count(), 2);
    }

    #[test]
    fn jose_config_lists_every_module_and_binding() {
        let modules = vec!["jose/index.js".to_owned(), "jose/jwt/verify.js".to_owned()];
        let capnp = jose_capnp(&modules);
        assert!(capnp.contains("(name = \"worker.mjs\", esModule = embed \"worker.mjs\")"));
        for m in &modules {
            assert!(capnp.contains(&format!("(name = \"{m}\", esModule = embed \"{m}\")")));
        }
        assert!(capnp.contains("(name = \"JOSE_JWKS\", text = embed \"jwks.json\")"));
        assert!(capnp.contains(&format!("text = \"{DEFAULT_ISSUER}\"")));
        assert!(capnp.contains(&format!("text = \"{DEFAULT_AUDIENCE}\"")));
        assert!(capnp.contains("(name = \"ORIGIN_SERVICE\", service = \"origin\")"));
        assert!(capnp.contains(ORIGIN_WORKER_SERVICE));
        assert!(capnp.contains("name = \"http\""));
    }

    #[test]
    fn capnp_strings_are_escaped() {
        assert_eq!(capnp_str("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }

    #[test]
    fn jose_modules_are_copied_with_relative_names() {
        let tmp = TempDir::new("xtask-jose-modules").unwrap();
        let from = tmp.path().join("webapi");
        fs::create_dir_all(from.join("jwt")).unwrap();
        fs::write(from.join("index.js"), "export {};").unwrap();
        fs::write(from.join("jwt/verify.js"), "export {};").unwrap();
        fs::write(from.join("README.md"), "not a module").unwrap();
        let to = tmp.path().join("out");
        let names = copy_jose_modules(&from, &to).unwrap();
        assert_eq!(names, ["jose/index.js", "jose/jwt/verify.js"]);
        assert!(to.join("jwt/verify.js").is_file());
        assert!(!to.join("README.md").exists());
        fs::remove_file(from.join("jwt/verify.js")).unwrap();
        assert!(copy_jose_modules(&from, &tmp.path().join("again")).is_err());
    }
}
