//! Static checks of the built module.

use tessera_host_tests::wasm_path;
use wasmparser::{Parser, Payload};

/// Largest module we accept: the product target (issue 6), 400 KB. The module is about
/// 380 KB after wasm-opt (verifier + sync service + usage reports; ES256 and RS256 are
/// checked by the host's BoringSSL, so no ECDSA or RSA verifier is linked in). This is a
/// size budget, not a speed claim: `cargo xtask bench` reports the figure.
/// Raised by 5 KB for fetch and wait (issue 24, item 7: paused requests, the wake on the
/// tick, the key-fetch time in the meta record): main was 397,247 bytes before it,
/// 401,740 after (2026-12-07). Raised again for the per-process rate-limit budget
/// (issue 25: `core::ratelimit`, `filter/src/budget.rs`): 414,741 bytes with both
/// (2026-12-07, clean build). Over issue 6's 400 KB target by 15 KB: to be won back
/// (measure with a size profiler first; opt-level "s" for the module trades speed).
/// Raised by 10 KB when the filter began to enforce the limits (issue 25: the spend report
/// and the merge of the leases in the root context, the wait for a token's first lease):
/// 428,161 bytes (2026-12-07), after trimming what a per-symbol size diff showed (the
/// standard library's sorts in `Budget::grant`, a `dyn` budget interface instead of two
/// instantiations, the usage answer read through `serde_json::Value`, which the module
/// links anyway, rather than a derived deserializer).
/// Lowered to 425,000 (issue 25's fallback added about 5 KB: 433,063 bytes): 423,966
/// bytes (2026-12-08) with the standard library built `optimize_for_size` (xtask) and one
/// serde_json parser instead of two (`core::verify::unique_object` reads text). The
/// configurable identity headers and the `preferred_username` claim (issue 24) added
/// about 5.7 KB on top: 429,670 bytes (2026-12-08), so the limit is 430,000 again. Over
/// issue 6's 400 KB by 30 KB; a per-symbol profile shows about 66 KB in the configuration's
/// deserialization (serde_path_to_error) and 8 KB in float formatting: the next places.
const MAX_MODULE_BYTES: u64 = 430_000;

#[test]
fn module_imports_only_the_proxy_wasm_abi_and_is_small() {
    let wasm = wasm_path();
    let bytes = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let size = bytes.len() as u64;
    println!(
        "module {}: {size} bytes ({:.1} KiB, limit {MAX_MODULE_BYTES} bytes)",
        wasm.display(),
        size as f64 / 1024.0,
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
            "the module is {size} bytes ({:.1} KiB), over the {MAX_MODULE_BYTES}-byte limit",
            size as f64 / 1024.0,
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
