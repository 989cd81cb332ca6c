//! Static checks of the built module.

use tessera_host_tests::wasm_path;
use wasmparser::{Parser, Payload};

/// Largest module we accept.
// Regression guard. The product target (issue 6, benchmarks) is 400 KB; the module is
// about 477 KiB after wasm-opt today (verifier + sync service + usage reports), and this
// bound keeps it from growing meanwhile.
const MAX_MODULE_BYTES: u64 = 480 * 1024;

#[test]
fn module_imports_only_the_proxy_wasm_abi_and_is_small() {
    let wasm = wasm_path();
    let bytes = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let size = bytes.len() as u64;
    println!(
        "module {}: {size} bytes ({:.1} KB, limit {} KB)",
        wasm.display(),
        size as f64 / 1024.0,
        MAX_MODULE_BYTES / 1024
    );

    let mut imports = Vec::new();
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload {
            Ok(Payload::ImportSection(reader)) => {
                for import in reader.into_imports() {
                    let import = import.unwrap_or_else(|e| panic!("bad import entry: {e}"));
                    imports.push((import.module.to_owned(), import.name.to_owned()));
                }
            }
            Ok(_) => {}
            Err(e) => panic!("{} is not a valid wasm module: {e}", wasm.display()),
        }
    }
    println!("{} imports, all checked", imports.len());
    let offenders: Vec<String> = imports
        .iter()
        .filter(|(module, name)| module != "env" || !name.starts_with("proxy_"))
        .map(|(module, name)| format!("{module}::{name}"))
        .collect();
    let mut problems = Vec::new();
    if !offenders.is_empty() {
        problems.push(format!(
            "the module imports {} function(s) outside the proxy-wasm ABI (env::proxy_*): {}",
            offenders.len(),
            offenders.join(", ")
        ));
    }
    if size > MAX_MODULE_BYTES {
        problems.push(format!(
            "the module is {size} bytes ({:.1} KB), over the {} KB limit",
            size as f64 / 1024.0,
            MAX_MODULE_BYTES / 1024
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
