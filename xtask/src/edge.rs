//! The edge worker bundle and its test runtime:
//!
//! - [`build_edge_worker`] builds `tessera-edge-worker` for wasm32 (same toolchain routes as
//!   [`crate::wasm`]), runs `wasm-bindgen --target web` (installing wasm-bindgen-cli at the
//!   exact version in Cargo.lock into `tools/wasm-bindgen` when missing) and assembles
//!   `target/wasm/edge-worker/`: the wasm module, its JS glue and the worker entry;
//! - [`ensure_workerd`] installs workerd from npm into `tools/node` when missing and returns
//!   the binary;
//! - [`ensure_jose`] installs `jose` (the bench's JS comparison worker) into the same npm
//!   prefix when missing.
//!
//! The edge build has its own cargo target directory (`target/edge-build`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::tools::{self, Result};
use crate::wasm::{self, WASM_TARGET};

/// The cargo package of the worker.
pub const PACKAGE: &str = "tessera-edge-worker";
/// The module cargo writes for it.
const ARTIFACT: &str = "tessera_edge_worker.wasm";
/// wasm-bindgen's output name (`<name>.js`, `<name>_bg.wasm`).
const OUT_NAME: &str = "tessera_edge_worker";
/// The worker entry, relative to the workspace root.
const ENTRY: &str = "edge-worker/js/worker.mjs";
/// The workerd release the project tests against (npm package `workerd`).
pub const WORKERD_VERSION: &str = "1.20261117.1";
/// Environment variable through which tests receive the workerd binary.
pub const WORKERD_ENV: &str = "TESSERA_WORKERD";
/// Environment variable through which tests receive the bundle directory.
pub const EDGE_WORKER_DIR_ENV: &str = "TESSERA_EDGE_WORKER_DIR";

/// The bundle directory (`target/wasm/edge-worker`).
pub fn bundle_dir(root: &Path) -> PathBuf {
    wasm::output_dir(root).join("edge-worker")
}

/// The exact `wasm-bindgen` version in `Cargo.lock`.
pub fn locked_wasm_bindgen_version(root: &Path) -> Result<String> {
    let lock = root.join("Cargo.lock");
    let text =
        fs::read_to_string(&lock).map_err(|e| format!("could not read {}: {e}", lock.display()))?;
    locked_version(&text, "wasm-bindgen").ok_or_else(|| {
        format!(
            "{} has no `wasm-bindgen` package; is {PACKAGE} a workspace member?",
            lock.display()
        )
    })
}

/// The version of package `name` in a Cargo.lock text (the first entry of that name).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{name}\"") {
            let next = lines.next()?.trim();
            let version = next.strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(version.to_owned());
        }
    }
    None
}

/// `tools/wasm-bindgen/bin/wasm-bindgen`.
pub fn wasm_bindgen_path(root: &Path) -> PathBuf {
    tools::tools_dir(root).join("wasm-bindgen/bin/wasm-bindgen")
}

/// What `wasm-bindgen --version` reports (`wasm-bindgen 0.2.130` → `0.2.130`).
fn wasm_bindgen_version(bin: &Path) -> Option<String> {
    let out = tools::output_of(Command::new(bin).arg("--version"))?;
    out.split_whitespace().nth(1).map(str::to_owned)
}

/// wasm-bindgen-cli at exactly the Cargo.lock version, installed with `cargo install`
/// into `tools/wasm-bindgen` when missing or different.
pub fn ensure_wasm_bindgen(root: &Path) -> Result<PathBuf> {
    let version = locked_wasm_bindgen_version(root)?;
    let bin = wasm_bindgen_path(root);
    match wasm_bindgen_version(&bin) {
        Some(v) if v == version => {
            println!("wasm-bindgen {v}: {}", bin.display());
            return Ok(tools::absolute(&bin));
        }
        Some(v) => tools::announce(&format!(
            "installing wasm-bindgen-cli {version} (Cargo.lock) over {v} in {} (about 3 minutes) ...",
            tools::tools_dir(root).join("wasm-bindgen").display()
        )),
        None => tools::announce(&format!(
            "installing wasm-bindgen-cli {version} (the version in Cargo.lock) into {} (about 3 minutes) ...",
            tools::tools_dir(root).join("wasm-bindgen").display()
        )),
    }
    // The rustup cargo (the one running xtask), not Debian's: the CLI is a host tool.
    tools::run(
        Command::new(wasm::outer_cargo())
            .current_dir(root)
            .args([
                "install",
                "wasm-bindgen-cli",
                "--version",
                &version,
                "--root",
            ])
            .arg(tools::tools_dir(root).join("wasm-bindgen"))
            .stdin(Stdio::null()),
    )
    .map_err(|e| {
        format!(
            "{e}\ncould not install wasm-bindgen-cli {version}; try by hand:\n    \
             cargo install wasm-bindgen-cli --version {version} --root tools/wasm-bindgen"
        )
    })?;
    match wasm_bindgen_version(&bin) {
        Some(v) if v == version => Ok(tools::absolute(&bin)),
        other => Err(format!(
            "installed wasm-bindgen-cli {version} but {} reports {other:?}",
            bin.display()
        )),
    }
}

/// Builds the worker bundle into `target/wasm/edge-worker/` (`worker.mjs`,
/// `tessera_edge_worker.js`, `tessera_edge_worker_bg.wasm`); returns that directory,
/// absolute.
pub fn build_edge_worker(root: &Path) -> Result<PathBuf> {
    let toolchain = wasm::ensure_toolchain()?;
    let wasm_bindgen = ensure_wasm_bindgen(root)?;
    tools::run(&mut wasm::cargo_build(root, &toolchain, PACKAGE))
        .map_err(|e| format!("building {PACKAGE} for {WASM_TARGET} failed: {e}"))?;
    let built = wasm::build_dir(root)
        .join(WASM_TARGET)
        .join("release")
        .join(ARTIFACT);

    let out = bundle_dir(root);
    if out.exists() {
        fs::remove_dir_all(&out).map_err(|e| format!("could not clear {}: {e}", out.display()))?;
    }
    fs::create_dir_all(&out).map_err(|e| format!("could not create {}: {e}", out.display()))?;
    tools::run(
        Command::new(&wasm_bindgen)
            .args(["--target", "web", "--no-typescript"])
            .args(["--remove-name-section", "--remove-producers-section"])
            .args(["--out-name", OUT_NAME, "--out-dir"])
            .arg(&out)
            .arg(&built),
    )
    .map_err(|e| format!("wasm-bindgen failed: {e}"))?;
    let entry = root.join(ENTRY);
    fs::copy(&entry, out.join("worker.mjs")).map_err(|e| {
        format!(
            "could not copy {} to {}: {e}",
            entry.display(),
            out.display()
        )
    })?;
    for file in [
        "worker.mjs".to_owned(),
        format!("{OUT_NAME}.js"),
        format!("{OUT_NAME}_bg.wasm"),
    ] {
        let path = out.join(&file);
        let size = fs::metadata(&path)
            .map_err(|e| format!("wasm-bindgen did not write {}: {e}", path.display()))?
            .len();
        println!("{}: {}", path.display(), tools::human_size(size));
    }
    Ok(tools::absolute(&out))
}

/// `tools/node`, the npm prefix workerd is installed into.
pub fn node_dir(root: &Path) -> PathBuf {
    tools::tools_dir(root).join("node")
}

/// The real workerd binary the npm package installs (not the `.bin/workerd` node
/// launcher, so that killing the process a test started kills workerd itself).
pub fn workerd_candidates(root: &Path) -> Vec<PathBuf> {
    let modules = node_dir(root).join("node_modules");
    vec![
        modules.join("@cloudflare/workerd-linux-64/bin/workerd"),
        modules.join("@cloudflare/workerd-linux-arm64/bin/workerd"),
    ]
}

/// The version of the installed npm package `workerd`, from its package.json.
fn installed_workerd_version(root: &Path) -> Option<String> {
    let manifest = node_dir(root).join("node_modules/workerd/package.json");
    json_string_member(&fs::read_to_string(manifest).ok()?, "version")
}

/// The first `"<name>": "<value>"` in a JSON text (enough for a package.json's top-level
/// `version`, which npm writes before any nested object that could have one).
fn json_string_member(text: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\"");
    let rest = &text[text.find(&key)? + key.len()..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// A workerd binary that runs (`--version` succeeds).
fn runs(bin: &Path) -> bool {
    bin.is_file() && tools::output_of(Command::new(bin).arg("--version")).is_some()
}

/// workerd [`WORKERD_VERSION`]: `$TESSERA_WORKERD` if set and runnable, otherwise the one
/// in `tools/node`, installed with `npm install` when missing. Returns an absolute path.
pub fn ensure_workerd(root: &Path) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(WORKERD_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if runs(&path) {
            println!("workerd: {} (from ${WORKERD_ENV})", path.display());
            return Ok(tools::absolute(&path));
        }
        println!(
            "ignoring ${WORKERD_ENV}={}: it does not run",
            path.display()
        );
    }
    let find = || workerd_candidates(root).into_iter().find(|p| runs(p));
    if installed_workerd_version(root).as_deref() == Some(WORKERD_VERSION) {
        if let Some(bin) = find() {
            println!("workerd {WORKERD_VERSION}: {}", bin.display());
            return Ok(tools::absolute(&bin));
        }
    }
    let prefix = node_dir(root);
    tools::announce(&format!(
        "installing workerd {WORKERD_VERSION} (npm package workerd) into {} ...",
        prefix.display()
    ));
    fs::create_dir_all(&prefix)
        .map_err(|e| format!("could not create {}: {e}", prefix.display()))?;
    let requirement = format!("workerd@{WORKERD_VERSION}");
    tools::run(
        Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&prefix)
            .args(["--no-audit", "--no-fund", &requirement])
            .stdin(Stdio::null()),
    )
    .map_err(|e| {
        format!(
            "{e}\ncould not install workerd with npm (Node.js and npm are needed: on Debian \
             `apt-get install -y nodejs npm`); try by hand:\n    npm install --prefix {} {requirement}",
            prefix.display()
        )
    })?;
    match (installed_workerd_version(root), find()) {
        (Some(v), Some(bin)) if v == WORKERD_VERSION => {
            println!("workerd {v}: {}", bin.display());
            Ok(tools::absolute(&bin))
        }
        (v, bin) => Err(format!(
            "npm installed workerd {v:?} but no runnable binary was found at {} (found {bin:?})",
            workerd_candidates(root)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        )),
    }
}

/// The `jose` release the workerd bench compares against (npm package `jose`).
pub const JOSE_VERSION: &str = "6.2.18";

/// The version of the npm package `jose` installed under the npm prefix `node_dir`.
fn installed_jose_version(node_dir: &Path) -> Option<String> {
    let manifest = node_dir.join("node_modules/jose/package.json");
    json_string_member(&fs::read_to_string(manifest).ok()?, "version")
}

/// `jose` [`JOSE_VERSION`] in the npm prefix `node_dir` (`tools/node`), installed with
/// `npm install` when missing or at another version. Returns the package directory
/// (`<node_dir>/node_modules/jose`), absolute.
pub fn ensure_jose(node_dir: &Path) -> Result<PathBuf> {
    let package = tools::absolute(&node_dir.join("node_modules/jose"));
    let installed = installed_jose_version(node_dir);
    if installed.as_deref() == Some(JOSE_VERSION) {
        println!("jose {JOSE_VERSION}: {}", package.display());
        return Ok(package);
    }
    tools::announce(&match &installed {
        Some(v) => format!(
            "installing jose {JOSE_VERSION} (npm package jose) over {v} in {} ...",
            node_dir.display()
        ),
        None => format!(
            "installing jose {JOSE_VERSION} (npm package jose) into {} ...",
            node_dir.display()
        ),
    });
    npm_install_exact(node_dir, "jose", JOSE_VERSION)?;
    match installed_jose_version(node_dir) {
        Some(v) if v == JOSE_VERSION => {
            println!("jose {v}: {}", package.display());
            Ok(package)
        }
        other => Err(format!(
            "npm install jose@{JOSE_VERSION} finished but {} reports version {other:?}; remove \
             {} and run again",
            package.join("package.json").display(),
            package.display()
        )),
    }
}

/// `npm install --save-exact <package>@<version>` into the npm prefix `node_dir`, failing
/// loudly with what to do when npm is missing or the install fails.
pub fn npm_install_exact(node_dir: &Path, package: &str, version: &str) -> Result<()> {
    fs::create_dir_all(node_dir)
        .map_err(|e| format!("could not create {}: {e}", node_dir.display()))?;
    let requirement = format!("{package}@{version}");
    tools::run(
        Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(node_dir)
            .args(["--no-audit", "--no-fund", "--save-exact", &requirement])
            .stdin(Stdio::null()),
    )
    .map_err(|e| {
        format!(
            "{e}\ncould not install {package} with npm (Node.js and npm are needed: on Debian \
             `apt-get install -y nodejs npm`); try by hand:\n    npm install --prefix {} \
             --save-exact {requirement}",
            node_dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_lock_file() {
        let lock = "[[package]]\nname = \"wasm-bindgen-macro\"\nversion = \"9.9.9\"\n\n\
                    [[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\nsource = \"x\"\n";
        assert_eq!(
            locked_version(lock, "wasm-bindgen").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(locked_version(lock, "js-sys"), None);
    }

    #[test]
    fn package_json_version() {
        let text = "{\n  \"name\": \"workerd\",\n  \"version\" : \"1.20261117.1\",\n  \"x\": {\"version\": \"0\"}\n}";
        assert_eq!(
            json_string_member(text, "version").as_deref(),
            Some("1.20261117.1")
        );
        assert_eq!(json_string_member(text, "missing"), None);
    }

    #[test]
    fn the_workspace_lock_pins_the_workspace_wasm_bindgen() {
        let root = tools::workspace_root();
        let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let locked = locked_wasm_bindgen_version(&root).unwrap();
        assert!(
            manifest.contains(&format!("wasm-bindgen = \"={locked}\"")),
            "Cargo.toml must pin wasm-bindgen = \"={locked}\" exactly"
        );
    }
}
