//! What the web page's browser tests need: Debian's Chromium and its WebDriver
//! (`chromium`, `chromium-driver`) and axe-core from npm for the accessibility check.

use crate::edge;
use crate::tools::{self, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// The browser the UI tests drive (read by `host-tests/tests/web_ui.rs`).
pub const CHROMIUM_ENV: &str = "TESSERA_CHROMIUM";
/// Its WebDriver.
pub const CHROMEDRIVER_ENV: &str = "TESSERA_CHROMEDRIVER";
/// axe-core's `axe.min.js`, injected into every page the tests visit.
pub const AXE_ENV: &str = "TESSERA_AXE";

/// The OpenID provider the single sign-on tests sign in at: `oidc-provider`'s entry
/// module (`host-tests/tests/sso.rs` runs `host-tests/oidc/provider.mjs` with it).
pub const OIDC_PROVIDER_ENV: &str = "TESSERA_OIDC_PROVIDER";

/// The `oidc-provider` release (npm; OpenID Certified) the single sign-on tests run.
pub const OIDC_PROVIDER_VERSION: &str = "9.13.3";

/// The axe-core release the accessibility check runs (npm package `axe-core`).
pub const AXE_VERSION: &str = "4.14.1";

/// Installs Debian's `chromium` and `chromium-driver` when missing (saying so first) and
/// returns (browser, driver).
pub fn ensure_chromium() -> Result<(PathBuf, PathBuf)> {
    tools::ensure_debs(
        &["chromium", "chromium-driver"],
        "the web page's tests run in real Chromium through WebDriver",
    )?;
    let browser = PathBuf::from("/usr/bin/chromium");
    let driver = PathBuf::from("/usr/bin/chromedriver");
    for p in [&browser, &driver] {
        if !p.exists() {
            return Err(format!(
                "{} is missing although its Debian package is installed; reinstall with \
                 `apt-get install --reinstall -y chromium chromium-driver`",
                p.display()
            ));
        }
    }
    println!(
        "chromium: {}, chromedriver: {}",
        browser.display(),
        driver.display()
    );
    Ok((browser, driver))
}

fn installed_axe_version(node_dir: &Path) -> Option<String> {
    let manifest = fs::read_to_string(node_dir.join("node_modules/axe-core/package.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&manifest).ok()?;
    v.get("version")?.as_str().map(str::to_string)
}

/// axe-core [`AXE_VERSION`] in the npm prefix `node_dir`, installed when missing or at
/// another version. Returns the path of `axe.min.js`.
pub fn ensure_axe(node_dir: &Path) -> Result<PathBuf> {
    let script = tools::absolute(&node_dir.join("node_modules/axe-core/axe.min.js"));
    let installed = installed_axe_version(node_dir);
    if installed.as_deref() == Some(AXE_VERSION) && script.exists() {
        println!("axe-core {AXE_VERSION}: {}", script.display());
        return Ok(script);
    }
    tools::announce(&format!(
        "installing axe-core {AXE_VERSION} (npm package axe-core) into {} ...",
        node_dir.display()
    ));
    edge::npm_install_exact(node_dir, "axe-core", AXE_VERSION)?;
    match installed_axe_version(node_dir) {
        Some(v) if v == AXE_VERSION && script.exists() => {
            println!("axe-core {v}: {}", script.display());
            Ok(script)
        }
        other => Err(format!(
            "npm install axe-core@{AXE_VERSION} finished but axe-core reports version {other:?} \
             (or {} is missing); remove {} and run again",
            script.display(),
            node_dir.join("node_modules/axe-core").display()
        )),
    }
}

fn installed_oidc_provider_version(node_dir: &Path) -> Option<String> {
    let manifest =
        fs::read_to_string(node_dir.join("node_modules/oidc-provider/package.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&manifest).ok()?;
    v.get("version")?.as_str().map(str::to_string)
}

/// `oidc-provider` [`OIDC_PROVIDER_VERSION`] in the npm prefix `node_dir`, installed when
/// missing or at another version (said first). Returns its entry module
/// (`lib/index.js`), which the provider script imports.
pub fn ensure_oidc_provider(node_dir: &Path) -> Result<PathBuf> {
    let entry = tools::absolute(&node_dir.join("node_modules/oidc-provider/lib/index.js"));
    let installed = installed_oidc_provider_version(node_dir);
    if installed.as_deref() == Some(OIDC_PROVIDER_VERSION) && entry.exists() {
        println!("oidc-provider {OIDC_PROVIDER_VERSION}: {}", entry.display());
        return Ok(entry);
    }
    tools::announce(&format!(
        "installing oidc-provider {OIDC_PROVIDER_VERSION} (npm package oidc-provider, the OpenID \
         provider the single sign-on tests sign in at) into {} ...",
        node_dir.display()
    ));
    edge::npm_install_exact(node_dir, "oidc-provider", OIDC_PROVIDER_VERSION)?;
    match installed_oidc_provider_version(node_dir) {
        Some(v) if v == OIDC_PROVIDER_VERSION && entry.exists() => {
            println!("oidc-provider {v}: {}", entry.display());
            Ok(entry)
        }
        other => Err(format!(
            "npm install oidc-provider@{OIDC_PROVIDER_VERSION} finished but it reports version \
             {other:?} (or {} is missing); remove {} and run again",
            entry.display(),
            node_dir.join("node_modules/oidc-provider").display()
        )),
    }
}
