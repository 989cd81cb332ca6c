//! `cargo xtask demo` keeps working: the walk-through (control plane, Envoy, revoke) runs
//! and every step behaves as it says.

use tessera_host_tests::{control_plane_path, demo, tools};

#[test]
fn demo_walk_through_behaves_as_printed() {
    let (envoy, wasm) = tools();
    let cp = control_plane_path();
    if let Err(e) = demo::run_with_control_plane(&envoy, &wasm, &cp) {
        panic!("{e}");
    }
}
