//! `cargo xtask demo` keeps working: the walk-through runs and every step behaves as it
//! says.

use tessera_host_tests::{demo, tools};

#[test]
fn demo_walk_through_behaves_as_printed() {
    let (envoy, wasm) = tools();
    if let Err(e) = demo::run(&envoy, &wasm) {
        panic!("{e}");
    }
}
