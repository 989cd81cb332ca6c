//! `cargo xtask build-wasm`: builds the wasm modules and copies them to `target/wasm/`.
//!
//! Two toolchain routes (see the shared TOOLCHAIN notes):
//! - **rustup**: the active rustup toolchain has the `wasm32-unknown-unknown` target
//!   installed → an ordinary `cargo build --target wasm32-unknown-unknown`.
//! - **Debian**: otherwise, Debian 12's `rustc-web`/`cargo-web` (1.9x, in `/usr/bin`) build
//!   the standard library for wasm from `rust-web-src` with `-Zbuild-std`, linking with
//!   `wasm-ld` from `lld`. Missing packages are installed (announced first).
//!
//! Wasm builds use their own target directory (`target/wasm-build`) so the native and the
//! wasm compilers never invalidate each other's artefacts.
//!
//! To add a module (e.g. the edge worker), add an entry to [`MODULES`]; a module that needs
//! a post-processing step (wasm-bindgen) gets it in [`build_module`].

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{self, Result};

/// The target every module is built for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// Debian packages of the Debian route.
pub const DEBIAN_PACKAGES: [&str; 4] = ["rustc-web", "cargo-web", "rust-web-src", "lld"];

/// One wasm module the project ships.
#[derive(Clone, Copy, Debug)]
pub struct WasmModule {
    /// The cargo package that builds it.
    pub package: &'static str,
    /// The file cargo writes in `<target-dir>/wasm32-unknown-unknown/release/`.
    pub artifact: &'static str,
    /// The file name under `target/wasm/`.
    pub output: &'static str,
}

/// The proxy-wasm filter for Envoy.
pub const FILTER: WasmModule = WasmModule {
    package: "tessera-filter",
    artifact: "tessera_filter.wasm",
    output: "tessera_filter.wasm",
};

/// Every module `build-wasm` builds, in order.
pub const MODULES: &[WasmModule] = &[FILTER];

/// Where the built modules are copied (`target/wasm`).
pub fn output_dir(root: &Path) -> PathBuf {
    root.join("target").join("wasm")
}

/// The cargo target directory of the wasm builds (`target/wasm-build`).
pub fn build_dir(root: &Path) -> PathBuf {
    root.join("target").join("wasm-build")
}

/// The built filter module's path (`target/wasm/tessera_filter.wasm`), absolute.
pub fn filter_wasm_path(root: &Path) -> PathBuf {
    tools::absolute(&output_dir(root).join(FILTER.output))
}

/// How wasm is compiled on this machine.
#[derive(Clone, Debug)]
pub enum Toolchain {
    /// The rustup toolchain has the wasm32 target; build with this cargo.
    Rustup { cargo: OsString },
    /// Debian's rustc-web/cargo-web with `-Zbuild-std`.
    Debian,
}

/// The cargo that runs this xtask (what `cargo xtask` was invoked with).
pub fn outer_cargo() -> OsString {
    std::env::var_os("CARGO")
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "cargo".into())
}

/// Whether `rustup target list --installed` lists the wasm32 target.
fn rustup_has_wasm_target() -> bool {
    tools::output_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|out| out.lines().any(|l| l.trim() == WASM_TARGET))
}

/// Picks the route, installing the Debian packages when that route is needed and they are
/// missing.
pub fn ensure_toolchain() -> Result<Toolchain> {
    if rustup_has_wasm_target() {
        println!("toolchain: rustup (the {WASM_TARGET} target is installed)");
        return Ok(Toolchain::Rustup {
            cargo: outer_cargo(),
        });
    }
    tools::ensure_debs(
        &DEBIAN_PACKAGES,
        &format!("no {WASM_TARGET} target in rustup"),
    )
    .map_err(|e| {
        format!(
            "{e}\nalternatively, on a machine that can download it: `rustup target add {WASM_TARGET}`"
        )
    })?;
    for tool in ["/usr/bin/cargo", "/usr/bin/rustc"] {
        if !Path::new(tool).is_file() {
            return Err(format!(
                "{tool} is missing although {} are installed; reinstall them",
                DEBIAN_PACKAGES.join(" ")
            ));
        }
    }
    let version =
        tools::output_of(Command::new("/usr/bin/rustc").arg("--version")).unwrap_or_default();
    println!(
        "toolchain: Debian {} with -Zbuild-std (no {WASM_TARGET} target in rustup)",
        version.trim()
    );
    Ok(Toolchain::Debian)
}

/// Environment variables the outer cargo (and rustup) set that must not reach Debian's
/// cargo: they would point it at rustup's toolchain or at the outer build.
fn must_not_leak(name: &str) -> bool {
    const KEEP: [&str; 6] = [
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    if KEEP.iter().any(|k| name == *k || name.starts_with(k)) {
        return false;
    }
    name == "CARGO"
        || name.starts_with("CARGO_")
        || name.starts_with("__CARGO")
        || name.starts_with("RUSTUP_")
        || matches!(
            name,
            "RUSTC"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "RUSTDOC"
                | "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC_BOOTSTRAP"
                | "LD_LIBRARY_PATH"
        )
}

/// The cargo command that builds `package` for wasm in release, into [`build_dir`]. Every
/// wasm module shares that directory (and one wasm standard library build), and keeps the
/// `target_features` section: wasm-bindgen reads it, and wasm-opt strips what is left.
pub(crate) fn cargo_build(root: &Path, toolchain: &Toolchain, package: &str) -> Command {
    let mut cmd = match toolchain {
        Toolchain::Rustup { cargo } => Command::new(cargo),
        Toolchain::Debian => {
            let mut cmd = Command::new("/usr/bin/cargo");
            for (name, _) in std::env::vars_os() {
                if let Some(name) = name.to_str() {
                    if must_not_leak(name) {
                        cmd.env_remove(name);
                    }
                }
            }
            let mut path = OsString::from("/usr/bin");
            if let Some(old) = std::env::var_os("PATH").filter(|p| !p.is_empty()) {
                path.push(":");
                path.push(old);
            }
            cmd.env("PATH", path)
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTDOC", "/usr/bin/rustdoc")
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld");
            cmd
        }
    };
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--package",
            package,
        ])
        .arg("--target-dir")
        .arg(build_dir(root))
        .args(["--config", "profile.release.strip=\"debuginfo\""])
        // Size over speed for the modules (the native release profile is opt-level 3).
        .args(["--config", "profile.release.opt-level=\"z\""]);
    if matches!(toolchain, Toolchain::Debian) {
        // std's `optimize_for_size` picks its smaller implementations (sorts, formatting):
        // with a serde_json parser made one (`core::verify::unique_object`), it took the
        // filter module from 433,063 to 423,966 bytes.
        cmd.args([
            "-Zbuild-std=std,panic_abort",
            "-Zbuild-std-features=optimize_for_size",
        ]);
    }
    cmd
}

/// Builds one module and copies it to `target/wasm/`; returns the copy's path.
pub fn build_module(root: &Path, toolchain: &Toolchain, module: &WasmModule) -> Result<PathBuf> {
    tools::run(&mut cargo_build(root, toolchain, module.package))
        .map_err(|e| format!("building {} for {WASM_TARGET} failed: {e}", module.package))?;
    let built = build_dir(root)
        .join(WASM_TARGET)
        .join("release")
        .join(module.artifact);
    let out_dir = output_dir(root);
    fs::create_dir_all(&out_dir)
        .map_err(|e| format!("could not create {}: {e}", out_dir.display()))?;
    let out = out_dir.join(module.output);
    shrink(&built, &out)?;
    Ok(tools::absolute(&out))
}

/// The wasm features rustc enables by default for wasm32-unknown-unknown; wasm-opt must
/// accept them on input and may not introduce others (Envoy's V8 and workerd run these).
const WASM_OPT_FEATURES: &[&str] = &[
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-nontrapping-float-to-int",
    "--enable-mutable-globals",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// Runs binaryen's `wasm-opt -Oz` from `built` to `out` (about a fifth smaller than what
/// rustc and wasm-ld leave), installing Debian's `binaryen` when it is missing.
fn shrink(built: &Path, out: &Path) -> Result<()> {
    tools::ensure_debs(
        &["binaryen"],
        "wasm-opt shrinks the module by about a fifth",
    )?;
    let mut cmd = Command::new("wasm-opt");
    cmd.args(WASM_OPT_FEATURES)
        .args(["-Oz", "--strip-debug", "--strip-producers"])
        .arg(built)
        .arg("-o")
        .arg(out);
    tools::run(&mut cmd).map_err(|e| {
        format!(
            "wasm-opt failed on {}: {e} (install Debian's binaryen: apt-get install binaryen)",
            built.display()
        )
    })
}

/// Builds every module in [`MODULES`]; prints each one's size; returns their paths.
pub fn build_wasm(root: &Path) -> Result<Vec<PathBuf>> {
    let toolchain = ensure_toolchain()?;
    let mut outputs = Vec::new();
    for module in MODULES {
        let out = build_module(root, &toolchain, module)?;
        let size = fs::metadata(&out)
            .map_err(|e| format!("could not read {}: {e}", out.display()))?
            .len();
        println!("{}: {}", out.display(), tools::human_size(size));
        outputs.push(out);
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_cargo_and_rustup_variables_do_not_leak() {
        for name in [
            "CARGO",
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "__CARGO_FIX_PLZ",
            "RUSTUP_TOOLCHAIN",
            "RUSTC",
            "RUSTC_WRAPPER",
            "RUSTFLAGS",
        ] {
            assert!(must_not_leak(name), "{name}");
        }
        for name in [
            "CARGO_HOME",
            "CARGO_NET_OFFLINE",
            "CARGO_TERM_COLOR",
            "PATH",
            "HOME",
        ] {
            assert!(!must_not_leak(name), "{name}");
        }
    }
}
