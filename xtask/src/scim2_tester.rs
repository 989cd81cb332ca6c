//! scim2-tester (PyPI) against a real `tessera serve`: discovery, then the User resource
//! created, read, listed (with `attributes`/`excludedAttributes`, also through
//! `POST /.search`), replaced, patched attribute by attribute and deleted, through an
//! org admin's SCIM credential. Every check must pass. The Group resource's checks are
//! not run: Tessera's groups are its fixed roles, never created or deleted, and each of
//! scim2-tester's Group checks begins by creating one (ARCHITECTURE.md, "SCIM
//! provisioning"). The runner is `xtask/py/scim2_tester_run.py`.

use crate::tools::{self, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tessera_host_tests::{ControlPlane, ControlPlaneOptions};

/// The PyPI requirement installed into `tools/venv` (httpx2: the client's HTTP engine).
pub const REQUIREMENT: &str = "scim2-tester[httpx2]==0.5.2";
const VERSION: &str = "0.5.2";

fn installed_version(python: &Path) -> Option<String> {
    let out = tools::output_of(Command::new(python).args([
        "-c",
        "import importlib.metadata as m, httpx2; print(m.version('scim2-tester'))",
    ]))?;
    Some(out.trim().to_string())
}

/// The virtualenv's Python with [`REQUIREMENT`] installed (from PyPI when missing or of
/// another version).
pub fn ensure(root: &Path) -> Result<PathBuf> {
    let python = tools::venv_dir(root).join("bin/python");
    if installed_version(&python).as_deref() == Some(VERSION) {
        println!("scim2-tester {VERSION}: {}", python.display());
        return Ok(python);
    }
    let python = tools::pip_install(root, &format!("scim2-tester {VERSION}"), REQUIREMENT)?;
    match installed_version(&python) {
        Some(v) if v == VERSION => Ok(python),
        other => Err(format!(
            "installed {REQUIREMENT} but the virtualenv reports scim2-tester {other:?}"
        )),
    }
}

/// Starts `tessera serve` (stopped when this returns, also on failure), makes a SCIM
/// credential as the bootstrapped admin and runs scim2-tester against the org's SCIM base.
pub fn run(root: &Path, cp_bin: &Path) -> Result<()> {
    let python = ensure(root)?;
    let cp = ControlPlane::start(&ControlPlaneOptions::new(cp_bin))
        .map_err(|e| format!("tessera serve did not start: {e}"))?;
    let org = cp.org().to_string();
    let created = cp.api(
        "POST",
        &format!("/v1/orgs/{org}/scim-credentials"),
        Some(cp.admin_token()),
        Some(&serde_json::json!({"name": "scim2-tester"})),
    )?;
    let secret = created["secret"]
        .as_str()
        .ok_or_else(|| format!("no secret in {created}"))?
        .to_string();
    let base = format!("{}/scim/v2/{org}/", cp.url());
    let script = root.join("xtask/py/scim2_tester_run.py");
    println!(
        "$ SCIM_TOKEN=<SCIM credential> {} {} {base}",
        python.display(),
        script.display()
    );
    let started = std::time::Instant::now();
    let status = Command::new(&python)
        .arg(&script)
        .arg(&base)
        .env("SCIM_TOKEN", &secret)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    drop(cp);
    println!("scim2-tester took {:.0} s", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "scim2-tester found checks that do not pass ({status}); see above"
        ))
    }
}
