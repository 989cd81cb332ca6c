//! schemathesis (PyPI) against a real `tessera serve`: property-based requests generated
//! from the server's own `/openapi.json`, authenticated as a bootstrapped org admin. It
//! fails on any 5xx and on any answer whose status, content type or body the document
//! does not describe. Lean on purpose: a bounded number of examples per operation and a
//! fixed seed, so the step costs the same every run.

use crate::tools::{self, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The PyPI requirement installed into `tools/venv`.
pub const REQUIREMENT: &str = "schemathesis==4.32.5";
const VERSION: &str = "4.32.5";
/// Generated requests per operation and phase.
const MAX_EXAMPLES: &str = "10";
/// The checks that matter here: no server error, and every answer as documented.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";
/// A throwaway master key for the throwaway database.
const MASTER: &str = "5c4e3a2b1f0e9d8c7b6a5948372615f4e3d2c1b0a99887766554433221100ffe";

fn binary(root: &Path) -> PathBuf {
    tools::venv_dir(root).join("bin/schemathesis")
}

fn installed_version(bin: &Path) -> Option<String> {
    let out = tools::output_of(Command::new(bin).arg("--version"))?;
    out.split_whitespace().last().map(str::to_string)
}

/// The schemathesis CLI of [`REQUIREMENT`] in `tools/venv`, installed from PyPI when
/// missing or of another version.
pub fn ensure(root: &Path) -> Result<PathBuf> {
    let bin = binary(root);
    if installed_version(&bin).as_deref() == Some(VERSION) {
        println!("schemathesis {VERSION}: {}", bin.display());
        return Ok(bin);
    }
    tools::pip_install(root, &format!("schemathesis {VERSION}"), REQUIREMENT)?;
    match installed_version(&bin) {
        Some(v) if v == VERSION => Ok(bin),
        other => Err(format!(
            "installed {REQUIREMENT} but `{} --version` reports {other:?}",
            bin.display()
        )),
    }
}

/// Kills the server when dropped, also when the run fails.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Bootstraps a database in a scratch directory, serves it on a loopback port, and runs
/// schemathesis against its `/openapi.json`.
pub fn run(root: &Path, cp_bin: &Path) -> Result<()> {
    let bin = ensure(root)?;
    let scratch = root.join("target").join("schemathesis");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("could not create {}: {e}", scratch.display()))?;
    let result = run_in(&bin, cp_bin, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn run_in(bin: &Path, cp_bin: &Path, dir: &Path) -> Result<()> {
    let out = Command::new(cp_bin)
        .args([
            "admin",
            "bootstrap",
            "--db",
            "st.db",
            "--org",
            "acme",
            "--admin",
            "alice",
            "-o",
            "json",
        ])
        .current_dir(dir)
        .env("TESSERA_MASTER_KEY", MASTER)
        .output()
        .map_err(|e| format!("{}: {e}", cp_bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "tessera admin bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let boot: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("tessera admin bootstrap: not JSON ({e})"))?;
    let admin = boot["token"]
        .as_str()
        .ok_or("tessera admin bootstrap: no token")?
        .to_string();
    let mut child = Command::new(cp_bin)
        .args(["serve", "--db", "st.db", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("TESSERA_MASTER_KEY", MASTER)
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: {e}", cp_bin.display()))?;
    let stdout = child.stdout.take();
    let served = Served(child);
    let mut line = String::new();
    if let Some(s) = stdout {
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| format!("tessera serve: {e}"))?;
    }
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .ok_or_else(|| format!("tessera serve did not say where it listens: {line:?}"))?
        .to_string();
    let started = std::time::Instant::now();
    let mut cmd = Command::new(bin);
    cmd.args(["run", &format!("{url}/openapi.json")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", "1"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        .arg("--no-color")
        .current_dir(dir)
        .stdin(Stdio::null());
    // The token is in the arguments of a short-lived local process on a scratch database.
    println!(
        "$ {} run {url}/openapi.json --checks {CHECKS} --max-examples {MAX_EXAMPLES} --seed 1 --workers 1 --request-timeout 20 --header 'Authorization: Bearer <admin token>'",
        bin.display()
    );
    let status = cmd
        .status()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    drop(served);
    println!("schemathesis took {:.0} s", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "schemathesis found answers that break the OpenAPI document or a 5xx ({status}); see above"
        ))
    }
}
