//! Live sync with no bootstrap service (`"sync": {"mode": "lease"}`), as a mesh delivers
//! the filter: a real Envoy with `--concurrency 4`, the filter only (no
//! `envoy.bootstrap.wasm`), its listener from a file (LDS), and the real control plane
//! behind a loopback proxy that records every call Envoy makes to it.
//!
//! - The control plane sees exactly one long poll at a time from the process.
//! - A revoke is refused by all four workers within a second (requests on fresh
//!   connections until every worker answered a run of refusals; Envoy's per-worker
//!   listener counters).
//! - The listener is then replaced (a new plugin configuration through LDS), which stops
//!   every root context of the old one, lease holder included; a new one takes the lease
//!   over, within the staleness limit: the takeover time is measured and printed, and
//!   requests keep being answered with fresh status all along.
//!
//! Needs `TESSERA_ENVOY`, `TESSERA_FILTER_WASM` and `TESSERA_CP_BIN`; `cargo xtask test`
//! sets all three.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_host_tests::{
    control_plane_path, tools, ControlPlane, ControlPlaneOptions, CountingProxy, EchoUpstream,
    Envoy, EnvoyOptions, Request, TempDir, VM_ID,
};

const CP_CLUSTER: &str = "tessera_control_plane";
const WORKERS: usize = 4;
const MAX_STALENESS_SECS: u64 = 10;
const LEASE_SECS: u64 = 2;
/// Each worker must answer this many requests of a run before a state counts as seen by
/// every worker.
const PER_WORKER: u64 = 3;

fn is_long_poll(path: &str) -> bool {
    path.contains("/status-list") && path.contains("since=")
}

fn plugin_config(cp: &ControlPlane, realm: &str) -> Value {
    json!({
        "issuers": [cp.issuer()],
        "audiences": ["tessera"],
        "status": {"required": true, "fail_policy": "closed"},
        "realm": realm,
        "sync": {
            "mode": "lease",
            "cluster": CP_CLUSTER,
            "authority": cp.addr().to_string(),
            "status_lists": [cp.status_list_uri()],
            "jwks_urls": [cp.jwks_url()],
            "poll_wait_secs": 20,
            "jwks_refresh_secs": 30,
            "retry_secs": 1,
            "lease_secs": LEASE_SECS,
            "max_staleness_secs": MAX_STALENESS_SECS,
        },
    })
}

fn listener_yaml(port: u16, wasm: &Path, config: &Value) -> String {
    let q = |s: &str| Value::String(s.to_owned()).to_string();
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: tessera
  address:
    socket_address: {{address: 127.0.0.1, port_value: {port}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: tessera
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: "/"}}
              route: {{cluster: echo}}
        http_filters:
        - name: envoy.filters.http.wasm
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
            config:
              name: tessera
              vm_config:
                vm_id: {vm_id}
                runtime: envoy.wasm.runtime.v8
                code: {{local: {{filename: {wasm}}}}}
              configuration:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {config}
        - name: envoy.filters.http.router
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        vm_id = q(VM_ID),
        wasm = q(&wasm.to_string_lossy()),
        config = q(&config.to_string()),
    )
}

fn bootstrap_yaml(lds: &Path, dir: &Path, upstream: SocketAddr, cp: SocketAddr) -> String {
    let cluster = |name: &str, addr: SocketAddr| {
        format!(
            r#"  - name: {name}
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: "{ip}", port_value: {port}}}
"#,
            ip = addr.ip(),
            port = addr.port()
        )
    };
    format!(
        r#"node: {{id: tessera-lease-test, cluster: tessera-lease-test}}
admin:
  address:
    socket_address: {{address: "127.0.0.1", port_value: 0}}
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source:
      path: "{lds}"
      watched_directory: {{path: "{dir}"}}
static_resources:
  clusters:
{echo}{cp}"#,
        lds = lds.display(),
        dir = dir.display(),
        echo = cluster("echo", upstream),
        cp = cluster(CP_CLUSTER, cp),
    )
}

/// Writes the listener file atomically (Envoy watches for a file moved into place).
fn write_lds(dir: &Path, text: &str) {
    let tmp = dir.join("lds.yaml.tmp");
    std::fs::write(&tmp, text).expect("write lds");
    std::fs::rename(&tmp, dir.join("lds.yaml")).expect("move lds into place");
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `(status, reason)` of one request on a fresh connection.
fn ask(envoy: &Envoy, jwt: &str) -> (u16, String) {
    match envoy.send(&Request::get("/api/orders").bearer(jwt)) {
        Ok(r) => (r.status, r.reason().unwrap_or_default()),
        Err(e) => (0, format!("request failed: {e}")),
    }
}

/// Sends requests on fresh connections until a run of `want` answers has been given by
/// every worker at least [`PER_WORKER`] times; returns the time from `since` to the first
/// answer of that run. Panics after `bound`.
fn converge(
    envoy: &Envoy,
    jwt: &str,
    want: (u16, &str),
    since: Instant,
    bound: Duration,
) -> Duration {
    let workers = |e: &Envoy| e.worker_connections().expect("admin stats");
    let mut run: Option<(Instant, Vec<u64>)> = None;
    let mut last_other = None;
    loop {
        let before = workers(envoy);
        let got = ask(envoy, jwt);
        let at = Instant::now();
        if got.0 == want.0 && got.1 == want.1 {
            let (first, base) = run.get_or_insert((at, before));
            let now = workers(envoy);
            if now.len() == WORKERS
                && now.len() == base.len()
                && now
                    .iter()
                    .zip(base.iter())
                    .all(|(n, b)| n - b >= PER_WORKER)
            {
                return first.duration_since(since);
            }
        } else {
            run = None;
            last_other = Some(got);
        }
        assert!(
            at.duration_since(since) <= bound,
            "{want:?} not answered by all {WORKERS} workers within {bound:?}; last other \
             answer: {last_other:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn lease_acquired(envoy: &Envoy) -> u64 {
    envoy.counter("tessera.sync.lease_acquired").unwrap_or(0)
}

fn wait_for(what: &str, bound: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_poller_per_process_revocation_on_every_worker_and_takeover() {
    let (envoy_bin, wasm) = tools();
    let cp = ControlPlane::start(&ControlPlaneOptions::new(&control_plane_path()))
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let proxy = CountingProxy::start(cp.addr()).expect("counting proxy");
    let upstream = EchoUpstream::start().expect("echo upstream");
    let dir = TempDir::new("lease-lds").expect("temp dir");
    let port = free_port();
    write_lds(
        dir.path(),
        &listener_yaml(port, &wasm, &plugin_config(&cp, "tessera")),
    );
    let bootstrap = bootstrap_yaml(
        &dir.path().join("lds.yaml"),
        dir.path(),
        upstream.addr(),
        proxy.addr(),
    );
    assert!(
        !bootstrap.contains("envoy.bootstrap.wasm"),
        "no bootstrap service"
    );
    let envoy = Envoy::start(
        &EnvoyOptions::new(&envoy_bin)
            .custom_bootstrap(&bootstrap)
            .concurrency(WORKERS as u32)
            // A replaced listener's filter chains (and so its plugin's root contexts) go
            // away one second after the update.
            .args(&["--drain-time-s", "1", "--drain-strategy", "immediate"]),
    )
    .unwrap_or_else(|e| panic!("envoy did not start: {e}"));
    assert_eq!(envoy.addr().port(), port);
    assert_eq!(
        envoy.worker_connections().expect("stats").len(),
        WORKERS,
        "expected {WORKERS} workers"
    );

    let alice = cp.admin_token().to_owned();
    let start = Instant::now();
    let (id, jwt) = cp
        .create_and_download(&alice, "lease", &["read"])
        .expect("create + download");
    let took = converge(&envoy, &jwt, (200, ""), start, Duration::from_secs(20));
    println!("[lease] token accepted by all {WORKERS} workers {took:?} after create+download");
    assert_eq!(lease_acquired(&envoy), 1, "one lease taken in the process");

    // Steady state: one long poll open, never two. Watch it for a few seconds.
    wait_for("a long poll is open", Duration::from_secs(10), || {
        proxy.open(is_long_poll) == 1
    });
    for _ in 0..30 {
        assert!(proxy.open(is_long_poll) <= 1, "two long polls open at once");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(proxy.open(is_long_poll), 1);
    assert_eq!(proxy.max_concurrent(is_long_poll), 1);
    let jwks_calls = proxy
        .records()
        .iter()
        .filter(|r| r.path.contains("jwks"))
        .count();
    assert_eq!(
        jwks_calls, 1,
        "one JWKS fetch for the process, not one per VM"
    );

    // Revoke: refused by every worker within a second.
    let start = Instant::now();
    cp.revoke(&alice, &id).expect("revoke");
    let took = converge(
        &envoy,
        &jwt,
        (401, "revoked"),
        start,
        Duration::from_secs(5),
    );
    println!("[lease] revoke refused by all {WORKERS} workers {took:?} after the API call started");
    assert!(took <= Duration::from_secs(1), "revoke took {took:?}");

    // Replace the listener: every root context of the old plugin stops, holder included.
    let (_, jwt2) = cp
        .create_and_download(&alice, "during-takeover", &["read"])
        .expect("second token");
    converge(
        &envoy,
        &jwt2,
        (200, ""),
        Instant::now(),
        Duration::from_secs(10),
    );
    let polls_before = proxy.records().len();
    let reload = Instant::now();
    write_lds(
        dir.path(),
        &listener_yaml(port, &wasm, &plugin_config(&cp, "tessera-reloaded")),
    );
    // Until the new holder answers, requests keep getting fresh answers: the takeover
    // happens before the status goes stale.
    let mut answers = Vec::new();
    let deadline = reload + Duration::from_secs(MAX_STALENESS_SECS + 10);
    while lease_acquired(&envoy) < 2 {
        assert!(
            Instant::now() < deadline,
            "no takeover within {:?}; calls to the control plane since the reload: {:?}",
            deadline - reload,
            &proxy.records()[polls_before..]
        );
        answers.push(ask(&envoy, &jwt2));
        std::thread::sleep(Duration::from_millis(50));
    }
    let acquired_at = reload.elapsed();
    // The new holder's first successful answer from the control plane.
    wait_for(
        "the new holder's first list fetch",
        Duration::from_secs(5),
        || {
            proxy.records()[polls_before..]
                .iter()
                .any(|r| r.path.contains("/status-list") && r.end.is_some())
        },
    );
    let records = proxy.records();
    let after: Vec<_> = records[polls_before..].to_vec();
    // The old holder's long poll ended when its root context went away.
    let old_end = records[..polls_before]
        .iter()
        .filter(|r| is_long_poll(&r.path))
        .filter_map(|r| r.end)
        .max()
        .expect("the old holder's long poll ended");
    let new_first = after
        .iter()
        .filter(|r| r.path.contains("/status-list"))
        .map(|r| r.start)
        .min()
        .expect("the new holder polls");
    let fresh = after
        .iter()
        .filter(|r| r.path.contains("/status-list"))
        .filter_map(|r| r.end)
        .min()
        .expect("the new holder's first answer");
    let takeover = fresh.saturating_duration_since(old_end);
    println!(
        "[lease] listener replaced: old holder stopped {:?} after the reload; new holder's \
         first call {:?} later, its first answer {takeover:?} after the old holder stopped \
         (lease {LEASE_SECS} s, staleness limit {MAX_STALENESS_SECS} s; takeover counted \
         {acquired_at:?} after the reload)",
        old_end.saturating_duration_since(reload),
        new_first.saturating_duration_since(old_end),
    );
    assert!(
        new_first >= old_end,
        "the new holder polled before the old one stopped"
    );
    assert!(
        takeover < Duration::from_secs(MAX_STALENESS_SECS),
        "takeover took {takeover:?}"
    );
    assert!(
        answers.iter().all(|(s, _)| *s == 200),
        "answers during the takeover: {answers:?}"
    );
    assert!(!answers.is_empty());

    // Still one poll at a time over the whole run, and the new holder serves revocations.
    assert_eq!(proxy.max_concurrent(is_long_poll), 1, "polls: {records:?}");
    let deny = envoy
        .send(&Request::get("/api/orders").bearer(&jwt))
        .expect("request");
    assert_eq!(deny.status, 401);
    assert!(
        deny.header("www-authenticate")
            .is_some_and(|h| h.contains("tessera-reloaded")),
        "the new listener answers: {}",
        deny.summary()
    );
    drop(envoy);
}
