//! Tessera's task runner: `cargo xtask <task>` (the alias lives in `.cargo/config.toml`).
//!
//! - `build-wasm` — builds the proxy-wasm filter to `target/wasm/tessera_filter.wasm`;
//! - `test` — installs Envoy if needed, builds the module and the control plane, then fmt,
//!   clippy and the whole workspace's tests including the Envoy host tests;
//! - `demo` — installs Envoy if needed, builds the module and the control plane, and walks
//!   through Tessera: a token issued, accepted in a real Envoy, revoked and refused;
//! - `bench` — issue 6's measurements (`bench/` module: Envoy, workerd, propagation,
//!   control plane, footprint, Ed25519), interleaved rounds, written to BENCHMARKS.md
//!   (`--smoke`: every part once, answers checked);
//! - `fuzz` — builds the cargo-fuzz targets in `fuzz/` and runs each for `--seconds N`
//!   (`fuzz` module; `test` runs each for 20 s);
//! - `dist` — the release artifacts and the filter's two OCI image layouts in
//!   `target/dist/` (`dist` module), checked by skopeo and a local registry in `test`
//!   (`registry` module).

mod aiosmtpd;
mod bench;
mod browser;
mod dist;
mod edge;
mod fuzz;
mod postgres;
mod registry;
mod schemathesis;
mod scim2_tester;
mod tools;
mod wasm;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use tools::Result;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  build-wasm   build the proxy-wasm filter (release) to target/wasm/tessera_filter.wasm
               and the edge-worker bundle to target/wasm/edge-worker/
  test         install Envoy 1.40.0 and aiosmtpd (the mail test's SMTP server) into
               tools/venv and workerd into tools/node if missing, build the modules, the edge-worker bundle and the
               control plane (target/debug/tessera), then cargo fmt --check, cargo clippy
               -D warnings and cargo test --workspace (including the host tests that run
               the module in Envoy against the real control plane), schemathesis and
               scim2-tester against a real `tessera serve`, the bench smoke run, then dist, with both images read by skopeo and pushed to and pulled
               from a loopback docker-registry (Debian skopeo and docker-registry are
               installed if missing), then the data-plane fuzz targets for 20 s each (cp_bodies only in `fuzz`)
  dist [--check]
               build the release artifacts into target/dist/: tessera_filter.wasm,
               the edge-worker bundle and the tessera binary (.tar.gz), each with a
               .sha256, and the filter as two OCI image layouts (oci/: the Wasm artifact,
               compat/: one plugin.wasm layer), reproducible byte for byte; with
               --check, also image it again (same digests), read both layouts with
               skopeo and push and pull them through a loopback docker-registry
  schemathesis build the control plane, install schemathesis (PyPI) into tools/venv if
               missing, and run it against a real `tessera serve`'s /openapi.json: no
               5xx, every answer as documented
  scim2-tester build the control plane, install scim2-tester (PyPI) into tools/venv if
               missing, and run it against a real `tessera serve`'s SCIM base: every
               check of discovery and of the User resource passes
  fuzz [--seconds N] [--only T,U] [--record]
               install cargo-fuzz into tools/cargo-fuzz if missing, build the fuzz
               targets in fuzz/ (libFuzzer, no sanitizer, debug assertions) into
               target/fuzz/, write the seed corpora (testkit keys and tokens), then run
               each target for N seconds (default 60), one at a time: token, config,
               status_list, headers, cp_bodies; prints executions and coverage per
               target as a table; a crash fails with the input's path; --record
               writes the rows into BENCHMARKS.md's fuzzing section
  demo [--serve]
               install Envoy if missing, build the module and the control plane, and run
               the walk-through (issue, accept, revoke, refuse, authentication log); ends
               with the web page's address and a one-time sign-in link; with --serve, the
               control plane, Envoy and the page keep running until Ctrl-C
  bench        install what is missing (Envoy, wrk, workerd, npm jose), build the modules,
               the wasm floor, the Ed25519 candidates and the control plane (release), then
               measure on loopback: Envoy throughput and p50/p99 (Envoy --concurrency 1 on
               core 0, wrk on core 1; no filter, the wasm floor, native jwt_authn with and
               without its cache, Tessera reused/1,000/new tokens, Ed25519 and ES256, 1M and
               10M status lists, an IP filter), the edge worker vs jose in workerd,
               revocation propagation to 4 Envoys, the control plane's throughput, the
               footprint and the Ed25519 candidates inside V8; interleaved over 3 rounds;
               writes BENCHMARKS.md
      options: --smoke        every part once, briefly; checks every answer (no speed
                              assertion), writes no BENCHMARKS.md
               --only P,Q     only these parts (envoy, workerd, propagation,
                              control-plane, replicas, sign-in, footprint, ed25519,
                              soak); writes
                              target/bench/BENCHMARKS-partial.md
               --configs A,B  only these Envoy configurations (ids as in BENCHMARKS.md)
               --seconds N    measured seconds per configuration and round (default 10)
               --rounds N     interleaved rounds (default 3, at least 3)";

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
        ["demo"] => demo(&root, false),
        ["demo", "--serve"] => demo(&root, true),
        ["schemathesis"] => {
            build_control_plane(&root).and_then(|bin| schemathesis::run(&root, &bin))
        }
        ["scim2-tester"] => {
            build_control_plane(&root).and_then(|bin| scim2_tester::run(&root, &bin))
        }
        ["dist"] => dist_task(&root, &dist::dist_dir(&root), None).map(|_| ()),
        ["dist", "--check"] => {
            dist_task(&root, &dist::dist_dir(&root), None).and_then(|d| check_dist(&root, &d))
        }
        ["bench", options @ ..] => bench(&root, options),
        ["fuzz", options @ ..] => fuzz_task(&root, options),
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
    wasm::build_wasm(root)?;
    tools::header("build-wasm: building the edge-worker bundle");
    let bundle = edge::build_edge_worker(root)?;
    println!("{}", bundle.display());
    Ok(())
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

/// Builds the control-plane binary (debug) and returns its absolute path, for the host
/// tests and the demo.
fn build_control_plane(root: &Path) -> Result<PathBuf> {
    tools::run(cargo(root).args(["build", "-p", "tessera-control-plane", "--bin", "tessera"]))?;
    control_plane_bin(root, "debug")
}

/// The release build of the control plane, for the benchmark.
fn build_control_plane_release(root: &Path) -> Result<PathBuf> {
    tools::run(cargo(root).args([
        "build",
        "--release",
        "-p",
        "tessera-control-plane",
        "--bin",
        "tessera",
    ]))?;
    control_plane_bin(root, "release")
}

fn control_plane_bin(root: &Path, profile: &str) -> Result<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => tools::absolute(&root.join(dir)),
        None => root.join("target"),
    };
    let bin = target.join(profile).join("tessera");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "the control plane was built but {} is missing",
            bin.display()
        ))
    }
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(wasm::outer_cargo());
    cmd.current_dir(root);
    cmd
}

/// The test executables of the workspace member in `dir` (e.g. `control-plane`) that
/// `cargo test --workspace` builds (already built by then: cargo only lists them).
fn test_executables(root: &Path, dir: &str) -> Result<Vec<PathBuf>> {
    let out = cargo(root)
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo test --no-run: {e}"))?;
    if !out.status.success() {
        return Err("cargo test --workspace --no-run failed".into());
    }
    let manifest = root.join(dir).join("Cargo.toml");
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = v
            .pointer("/profile/test")
            .and_then(serde_json::Value::as_bool)
            == Some(true);
        let ours = v
            .get("manifest_path")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|m| Path::new(m) == manifest);
        if let (true, true, Some(exe)) = (
            is_test,
            ours,
            v.get("executable").and_then(serde_json::Value::as_str),
        ) {
            exes.push(PathBuf::from(exe));
        }
    }
    if exes.is_empty() {
        return Err(format!("cargo listed no test executable of {dir}"));
    }
    Ok(exes)
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const TEST_FUZZ_SECONDS: u64 = 10;

fn test(root: &Path) -> Result<()> {
    const STEPS: usize = 13;
    let (envoy, filter_wasm) = prepare(root, STEPS)?;

    tools::header(&format!(
        "[3/{STEPS}] edge worker: workerd, wasm-bindgen-cli and the worker bundle"
    ));
    let workerd = edge::ensure_workerd(root)?;
    let edge_bundle = edge::build_edge_worker(root)?;

    // One build for everything that follows: the tests and the `tessera` binary they run
    // (built for the control plane's integration tests). A separate `cargo build -p
    // tessera-control-plane` resolves dependency features without the workspace's
    // dev-dependencies and so compiled many dependencies a second time.
    tools::header(&format!(
        "[4/{STEPS}] build: cargo test --workspace --no-run (the tests and the control plane)"
    ));
    tools::run(cargo(root).args(["test", "--workspace", "--no-run"]))?;
    let cp_bin = control_plane_bin(root, "debug")?;

    tools::header(&format!("[5/{STEPS}] cargo fmt --all -- --check"));
    tools::run(cargo(root).args(["fmt", "--all", "--", "--check"]))
        .map_err(|e| format!("{e}\nformatting differs: run `cargo fmt --all`"))?;

    tools::header(&format!(
        "[6/{STEPS}] cargo clippy --workspace --all-targets -- -D warnings"
    ));
    tools::run(cargo(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    // The examples' systemd unit is verified by `systemd-analyze verify`, which must be
    // there (the test says so and fails when it is not, with this variable set).
    tools::ensure_debs(
        &["systemd"],
        "`systemd-analyze verify` for examples/systemd",
    )?;
    // The web page's tests drive real Chromium and check every page with axe-core.
    let (chromium, chromedriver) = browser::ensure_chromium()?;
    let axe = browser::ensure_axe(&edge::node_dir(root))?;
    // The single sign-on tests sign in at a real OpenID provider (npm `oidc-provider`).
    let oidc_provider = browser::ensure_oidc_provider(&edge::node_dir(root))?;
    // The control plane's PostgreSQL backend: its suite again on a real server (step 8),
    // and host tests that start their own clusters (replicas, a killed server).
    let pg_bin = postgres::ensure_postgres()?;
    // The mail test sends through a real SMTP server (PyPI `aiosmtpd`), in steps 7 and 8.
    let smtpd = aiosmtpd::ensure(root)?;
    tools::header(&format!(
        "[7/{STEPS}] cargo test --workspace --no-fail-fast (with {}={}, {}={}, {}={}, {}={}, {}={}, {}={}, {}={}, {}={}, {}={} and {}={})",
        tools::ENVOY_ENV,
        envoy.display(),
        tools::FILTER_WASM_ENV,
        filter_wasm.display(),
        tessera_host_tests::ENV_CP_BIN,
        cp_bin.display(),
        edge::WORKERD_ENV,
        workerd.display(),
        edge::EDGE_WORKER_DIR_ENV,
        edge_bundle.display(),
        browser::CHROMIUM_ENV,
        chromium.display(),
        browser::CHROMEDRIVER_ENV,
        chromedriver.display(),
        browser::AXE_ENV,
        axe.display(),
        browser::OIDC_PROVIDER_ENV,
        oidc_provider.display(),
        aiosmtpd::ENV,
        smtpd.display()
    ));
    tools::run(
        cargo(root)
            .args(["test", "--workspace", "--no-fail-fast"])
            .env(tools::ENVOY_ENV, &envoy)
            .env(tools::FILTER_WASM_ENV, &filter_wasm)
            .env(tessera_host_tests::ENV_CP_BIN, &cp_bin)
            .env(edge::WORKERD_ENV, &workerd)
            .env(edge::EDGE_WORKER_DIR_ENV, &edge_bundle)
            .env(browser::CHROMIUM_ENV, &chromium)
            .env(browser::CHROMEDRIVER_ENV, &chromedriver)
            .env(browser::AXE_ENV, &axe)
            .env(browser::OIDC_PROVIDER_ENV, &oidc_provider)
            .env(aiosmtpd::ENV, &smtpd)
            .env("TESSERA_REQUIRE_SYSTEMD_ANALYZE", "1")
            .env(tessera_host_tests::postgres::ENV_PG_BIN, &pg_bin),
    )?;

    tools::header(&format!(
        "[8/{STEPS}] the control plane's suite on PostgreSQL ({}=<a throwaway cluster>, {}={})",
        tessera_host_tests::postgres::ENV_TEST_POSTGRES,
        aiosmtpd::ENV,
        smtpd.display()
    ));
    {
        // fsync off: the tests kill processes, never the machine, and every acknowledged
        // commit is in the WAL the server wrote before answering. TLS on: the suite
        // connects with sslmode=verify-full and the cluster's run-time CA, as production
        // should.
        let cluster = postgres::start_cluster(
            root,
            &tessera_host_tests::PgOptions {
                fsync: false,
                tls: true,
                ..Default::default()
            },
        )?;
        // The test executables step 4 built, run again: `cargo test -p` would resolve
        // dependency features for that package alone and rebuild dozens of crates.
        let mut failed = Vec::new();
        for exe in test_executables(root, "control-plane")? {
            let ok = tools::run(
                Command::new(&exe)
                    .arg("--include-ignored")
                    .current_dir(root.join("control-plane"))
                    .env(
                        tessera_host_tests::postgres::ENV_TEST_POSTGRES,
                        cluster.admin_url(),
                    )
                    .env(tessera_host_tests::postgres::ENV_PG_BIN, &pg_bin)
                    .env(aiosmtpd::ENV, &smtpd),
            );
            if let Err(e) = ok {
                failed.push(e);
            }
        }
        if !failed.is_empty() {
            return Err(format!(
                "{}\nPostgreSQL server log:\n{}",
                failed.join("\n"),
                cluster.log()
            ));
        }
    }

    tools::header(&format!(
        "[9/{STEPS}] schemathesis against a real `tessera serve` and its /openapi.json"
    ));
    schemathesis::run(root, &cp_bin)?;
    tools::header(&format!(
        "[9/{STEPS}] scim2-tester against a real `tessera serve`'s /scim/v2 (issue 23)"
    ));
    scim2_tester::run(root, &cp_bin)?;

    // The benchmark's code builds in every test run, and each of its configurations is
    // run once (about 30 s; answers checked, no speed asserted, BENCHMARKS.md untouched).
    tools::header(&format!(
        "[10/{STEPS}] bench --smoke: every benchmark configuration once"
    ));
    tools::ensure_debs(&["wrk"], "the load generator of `cargo xtask bench`")?;
    let toolchain = wasm::ensure_toolchain()?;
    let floor_wasm = wasm::build_module(root, &toolchain, &bench::FLOOR)?;
    let ed25519_wasm = wasm::build_module(root, &toolchain, &bench::ed25519::MODULE)?;
    let node_dir = edge::node_dir(root);
    bench::run(
        &bench::Inputs {
            root,
            envoy: &envoy,
            filter_wasm: &filter_wasm,
            floor_wasm: &floor_wasm,
            cp_bin: &cp_bin,
            workerd: &workerd,
            edge_bundle: &edge_bundle,
            node_dir: &node_dir,
            ed25519_wasm: &ed25519_wasm,
        },
        &bench::Plan::smoke(),
    )?;

    tools::header(&format!(
        "[11/{STEPS}] dist: release artifacts and OCI images, checked with skopeo and docker-registry"
    ));
    // The packaging is what is checked here, so the debug control plane built in step 4
    // stands in for the release one (a release build costs minutes), and the artifacts
    // go to a scratch folder, never to target/dist/.
    let dist = dist_task(
        root,
        &root.join("target").join("dist-check").join("dist"),
        Some(&cp_bin),
    )?;
    check_dist(root, &dist)?;

    // Each data-plane fuzz target briefly; BENCHMARKS.md records the long run (`cargo
    // xtask fuzz`). `cp_bodies` is left to `cargo xtask fuzz`: it instruments the whole
    // control plane, a build of over 20 minutes on this machine, which CI cannot afford.
    let ci_targets: Vec<String> = fuzz::TARGETS
        .iter()
        .filter(|(t, _)| *t != "cp_bodies")
        .map(|(t, _)| (*t).to_string())
        .collect();
    tools::header(&format!(
        "[12/{STEPS}] fuzz: {} for {TEST_FUZZ_SECONDS} s each",
        ci_targets.join(", ")
    ));
    let stats = fuzz::run(root, TEST_FUZZ_SECONDS, Some(&ci_targets))?;
    println!("\n{}", fuzz::table(&stats));

    tools::header(&format!("[13/{STEPS}] all checks passed"));
    Ok(())
}

/// Images the module a second time (same digests required), then has skopeo read both
/// layouts and push them through a loopback docker-registry and back.
fn check_dist(root: &Path, dist: &dist::Dist) -> Result<()> {
    tools::header("dist --check: reproducibility, skopeo and a local docker-registry");
    tools::ensure_debs(
        &registry::DEBS,
        "to read the OCI images and push them through a local registry",
    )?;
    // Reproducible: imaging the same module again gives the same digests.
    let scratch = root.join("target").join("dist-check");
    fs::create_dir_all(&scratch)
        .map_err(|e| format!("could not create {}: {e}", scratch.display()))?;
    let module = dist.dir.join(dist::FILTER_NAME);
    let module =
        fs::read(&module).map_err(|e| format!("could not read {}: {e}", module.display()))?;
    for first in [&dist.oci, &dist.compat] {
        let again = dist::write_image(&scratch.join("again"), &module, first.variant)?;
        if again.manifest_digest != first.manifest_digest
            || again.layer_digest != first.layer_digest
        {
            return Err(format!(
                "imaging the module twice gave different {} images: {} then {}",
                first.variant.dir_name(),
                first.manifest_digest,
                again.manifest_digest
            ));
        }
        println!(
            "{}: imaged twice, same manifest {}",
            first.variant.dir_name(),
            again.manifest_digest
        );
    }
    let checked = registry::check(dist, &scratch);
    let _ = fs::remove_dir_all(&scratch);
    for (variant, summary, digest) in &checked?.images {
        println!(
            "{}: skopeo: {summary}; registry digest {digest}",
            variant.dir_name()
        );
    }
    Ok(())
}

/// Builds the filter, the edge-worker bundle and (unless `cp_bin` is given) the release
/// control plane, and writes the artifacts to `out` (`target/dist/` for `cargo xtask
/// dist`).
fn dist_task(root: &Path, out: &Path, cp_bin: Option<&Path>) -> Result<dist::Dist> {
    tools::header("dist: building the wasm modules (release)");
    wasm::build_wasm(root)?;
    tools::header("dist: the edge-worker bundle");
    let edge_bundle = edge::build_edge_worker(root)?;
    let cp_bin = match cp_bin {
        Some(bin) => bin.to_path_buf(),
        None => {
            tools::header("dist: cargo build --release -p tessera-control-plane --bin tessera");
            build_control_plane_release(root)?
        }
    };
    tools::header(&format!("dist: writing {}", out.display()));
    let dist = dist::write_dist(
        out,
        &dist::Inputs {
            filter_wasm: &wasm::filter_wasm_path(root),
            edge_bundle: &edge_bundle,
            cp_bin: &cp_bin,
        },
    )?;
    dist::report(&dist);
    Ok(dist)
}

fn fuzz_task(root: &Path, args: &[&str]) -> Result<()> {
    let mut seconds = 60;
    let mut only: Option<Vec<String>> = None;
    let mut record = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--seconds" => {
                let n = it.next().copied().unwrap_or_default();
                seconds =
                    n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("--seconds wants a positive whole number, not {n:?}")
                    })?;
            }
            "--only" => {
                let list = it.next().copied().unwrap_or_default();
                only = Some(list.split(',').map(str::to_string).collect());
            }
            "--record" => record = true,
            other => return Err(format!("unknown fuzz option `{other}`\n\n{USAGE}")),
        }
    }
    tools::header(&format!("fuzz: every target for {seconds} s"));
    let stats = fuzz::run(root, seconds, only.as_deref())?;
    println!("\n{}", fuzz::table(&stats));
    if record {
        fuzz::record(root, &stats)?;
    }
    Ok(())
}

fn demo(root: &Path, serve: bool) -> Result<()> {
    const STEPS: usize = 4;
    let (envoy, filter_wasm) = prepare(root, STEPS)?;
    tools::header(&format!(
        "[3/{STEPS}] control plane: cargo build -p tessera-control-plane --bin tessera"
    ));
    let cp_bin = build_control_plane(root)?;
    tools::header(&format!(
        "[4/{STEPS}] demo: the control plane and Tessera in a real Envoy"
    ));
    // With --serve, Ctrl-C ends the wait (not the process), so every process the demo
    // started is stopped on the way out.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    if serve {
        ctrlc::set_handler(move || {
            let _ = stop_tx.send(());
        })
        .map_err(|e| format!("could not catch Ctrl-C: {e}"))?;
    }
    let hold = move || {
        let _ = stop_rx.recv();
    };
    tessera_host_tests::demo::run_and_hold(
        &envoy,
        &filter_wasm,
        &cp_bin,
        if serve { Some(&hold) } else { None },
    )
    .map_err(|e| format!("the demo failed: {e}"))
}

fn bench(root: &Path, args: &[&str]) -> Result<()> {
    const STEPS: usize = 6;
    let plan = bench::Plan::from_args(args)?;
    let (envoy, filter_wasm) = prepare(root, STEPS)?;
    tools::header(&format!(
        "[3/{STEPS}] bench: wrk and the wasm floor ({})",
        bench::FLOOR.package
    ));
    tools::ensure_debs(&["wrk"], "the load generator of `cargo xtask bench`")?;
    let toolchain = wasm::ensure_toolchain()?;
    let floor_wasm = wasm::build_module(root, &toolchain, &bench::FLOOR)?;
    let ed25519_wasm = wasm::build_module(root, &toolchain, &bench::ed25519::MODULE)?;
    let needs = |parts: &[bench::Part]| plan.parts.iter().any(|p| parts.contains(p));
    tools::header(&format!(
        "[4/{STEPS}] edge worker: workerd, wasm-bindgen-cli and the worker bundle"
    ));
    let (workerd, edge_bundle) = if needs(&[
        bench::Part::Workerd,
        bench::Part::Soak,
        bench::Part::Propagation,
        bench::Part::Replicas,
        bench::Part::Quota,
        bench::Part::Leaks,
    ]) {
        (edge::ensure_workerd(root)?, edge::build_edge_worker(root)?)
    } else {
        println!("not needed by the selected parts");
        (PathBuf::new(), PathBuf::new())
    };
    tools::header(&format!(
        "[5/{STEPS}] control plane: {}",
        if plan.smoke {
            "cargo build -p tessera-control-plane --bin tessera"
        } else {
            "cargo build --release -p tessera-control-plane --bin tessera"
        }
    ));
    let cp_bin = if !needs(&[
        bench::Part::Propagation,
        bench::Part::ControlPlane,
        bench::Part::Replicas,
        bench::Part::SignIn,
        bench::Part::Soak,
        bench::Part::Quota,
        bench::Part::Leaks,
    ]) {
        println!("not needed by the selected parts");
        PathBuf::new()
    } else if plan.smoke {
        build_control_plane(root)?
    } else {
        build_control_plane_release(root)?
    };
    tools::header(&format!(
        "[6/{STEPS}] bench: {}",
        if plan.smoke {
            "smoke run (each configuration once)"
        } else {
            "full run"
        }
    ));
    let node_dir = edge::node_dir(root);
    bench::run(
        &bench::Inputs {
            root,
            envoy: &envoy,
            filter_wasm: &filter_wasm,
            floor_wasm: &floor_wasm,
            cp_bin: &cp_bin,
            workerd: &workerd,
            edge_bundle: &edge_bundle,
            node_dir: &node_dir,
            ed25519_wasm: &ed25519_wasm,
        },
        &plan,
    )
}
