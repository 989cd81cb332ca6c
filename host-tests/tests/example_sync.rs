//! examples/envoy/envoy-sync.yaml: it validates, and it runs as shipped against a real
//! control plane — only its ports (0, or the control plane's), the module path and the
//! edge credential are swapped in.
//!
//! Needs `TESSERA_ENVOY`, `TESSERA_FILTER_WASM` and `TESSERA_CP_BIN`; `cargo xtask test`
//! sets all three.

use std::process::Command;
use std::time::{Duration, Instant};

use tessera_host_tests::{
    control_plane_path, repo_root, tools, ControlPlane, ControlPlaneOptions, Envoy, EnvoyOptions,
    Request, TempDir,
};

const EXAMPLE: &str = "examples/envoy/envoy-sync.yaml";
const EXAMPLE_WASM: &str = "target/wasm/tessera_filter.wasm";
const EXAMPLE_CP: &str = "127.0.0.1:8080";
const EXAMPLE_CREDENTIAL: &str = "REPLACE_WITH_EDGE_CREDENTIAL";

fn example_text() -> String {
    std::fs::read_to_string(repo_root().join(EXAMPLE)).unwrap_or_else(|e| panic!("{EXAMPLE}: {e}"))
}

fn replace_all(mut text: String, pairs: &[(&str, &str)]) -> String {
    for (from, to) in pairs {
        assert!(text.contains(from), "{EXAMPLE} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    text
}

#[test]
fn example_sync_config_validates() {
    let (envoy, wasm) = tools();
    let text = example_text();
    let tmp = TempDir::new("validate-sync").expect("temp dir");
    let config = tmp.path().join("envoy-sync.yaml");
    let yaml = replace_all(text, &[(EXAMPLE_WASM, &wasm.to_string_lossy())]);
    std::fs::write(&config, yaml).expect("write copy");
    let out = Command::new(&envoy)
        .current_dir(repo_root())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", envoy.display()));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && log.contains("OK"),
        "envoy --mode validate failed ({}):\n{log}",
        out.status
    );
    assert!(
        !log.contains("invalid"),
        "the example's configurations were refused:\n{log}"
    );
}

#[test]
fn example_sync_config_runs_against_the_control_plane() {
    let (envoy, wasm) = tools();
    let bin = control_plane_path();
    let mut options = ControlPlaneOptions::new(&bin);
    options.admins = vec!["alice".into()];
    let cp = ControlPlane::start(&options).unwrap_or_else(|e| panic!("control plane: {e}"));
    let alice = cp.admin_token().to_owned();
    let secret = cp
        .edge_credential(&alice, "example")
        .expect("edge credential");
    let cp_addr = cp.addr().to_string();
    let yaml = replace_all(
        example_text(),
        &[
            (EXAMPLE_WASM, &wasm.to_string_lossy()),
            (EXAMPLE_CP, &cp_addr),
            (
                "port_value: 8080",
                &format!("port_value: {}", cp.addr().port()),
            ),
            ("port_value: 10000", "port_value: 0"),
            ("port_value: 9901", "port_value: 0"),
            (EXAMPLE_CREDENTIAL, &secret),
        ],
    );
    let proxy = Envoy::start(
        &EnvoyOptions::new(&envoy)
            .custom_bootstrap(&yaml)
            .concurrency(2),
    )
    .unwrap_or_else(|e| panic!("the example did not start: {e}"));

    let (id, jwt) = cp
        .create_and_download(&alice, "example", &["read"])
        .expect("create + download");
    let send = |req: &Request| proxy.send(req).expect("request to the example");
    let hello = Request::get("/hello").bearer(&jwt);

    // Accepted once the sync service has published keys and the list.
    let start = Instant::now();
    let r = loop {
        let r = send(&hello);
        if r.status == 200 || start.elapsed() > Duration::from_secs(10) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("x-seen-token-id"), Some(id.as_str()));
    assert_eq!(r.header("x-seen-org"), Some("acme"));
    let r = send(&Request::new("POST", "/admin/users").bearer(&jwt));
    assert_eq!(
        (r.status, r.reason().as_deref()),
        (403, Some("insufficient_scope")),
        "{}",
        r.summary()
    );

    // Revoked: refused (both workers, many fresh connections).
    let start = Instant::now();
    cp.revoke(&alice, &id).expect("revoke");
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 20 {
        let r = send(&hello);
        if r.status == 401 && r.reason().as_deref() == Some("revoked") {
            refused_in_a_row += 1;
        } else {
            refused_in_a_row = 0;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not refused within 5 s: {}",
            r.summary()
        );
    }
    println!(
        "[example-sync] 20 fresh connections in a row refused with revoked, {:?} after the \
         revoke call started",
        start.elapsed()
    );

    // Usage reports reached the authentication log (flushed every second).
    let start = Instant::now();
    let mut log = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        log = cp.auth_log(&alice, &id).expect("auth log");
        let revoked = log.iter().any(|e| e["reason"] == "revoked");
        let scope = log.iter().any(|e| e["reason"] == "insufficient_scope");
        let allowed = log.iter().any(|e| e["outcome"] == "allow");
        if revoked && scope && allowed {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        log.iter().any(|e| e["reason"] == "revoked")
            && log.iter().any(|e| e["reason"] == "insufficient_scope")
            && log.iter().any(|e| e["outcome"] == "allow"),
        "the authentication log lacks the example's decisions: {log:#?}"
    );
    assert_eq!(proxy.counter("tessera.usage_dropped"), Some(0));
}
