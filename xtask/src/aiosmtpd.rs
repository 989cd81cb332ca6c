//! aiosmtpd (PyPI), a real SMTP server, for the control plane's mail test
//! (`control-plane/tests/mail.rs`): installed into `tools/venv` when missing or of another
//! version, and handed to the tests as [`ENV`], the path of its `aiosmtpd` command.

use crate::tools::{self, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyPI requirement installed into `tools/venv`.
pub const REQUIREMENT: &str = "aiosmtpd==1.4.6";
const VERSION: &str = "1.4.6";
/// The variable through which tests receive the `aiosmtpd` command.
pub const ENV: &str = "TESSERA_AIOSMTPD";

fn binary(root: &Path) -> PathBuf {
    tools::venv_dir(root).join("bin/aiosmtpd")
}

/// `aiosmtpd --version` prints `aiosmtpd 1.4.6`.
fn installed_version(bin: &Path) -> Option<String> {
    let out = tools::output_of(Command::new(bin).arg("--version"))?;
    out.split_whitespace().last().map(str::to_string)
}

/// The `aiosmtpd` command of [`REQUIREMENT`] in `tools/venv`, installed from PyPI (and
/// announced) when missing or of another version.
pub fn ensure(root: &Path) -> Result<PathBuf> {
    let bin = binary(root);
    if installed_version(&bin).as_deref() == Some(VERSION) {
        println!("aiosmtpd {VERSION}: {}", bin.display());
        return Ok(bin);
    }
    tools::pip_install(
        root,
        &format!("aiosmtpd {VERSION} (a real SMTP server for the mail test)"),
        REQUIREMENT,
    )?;
    match installed_version(&bin) {
        Some(v) if v == VERSION => Ok(bin),
        other => Err(format!(
            "installed {REQUIREMENT} but `{} --version` reports {other:?}",
            bin.display()
        )),
    }
}
