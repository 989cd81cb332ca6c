//! The walk-through behind `cargo xtask demo`: the real control plane on SQLite issues a
//! token, a real Envoy with the Tessera module (and its sync service pointed at the
//! control plane) accepts it, the token is revoked and the same request is refused — the
//! time to refusal is measured — and the authentication log shows every use.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::control_plane::{ControlPlane, ControlPlaneOptions, ENV_CP_BIN};
use crate::{lookup_tool, EchoUpstream, Envoy, EnvoyOptions, Request, Response};

/// The identity headers the filter adds (README defaults).
const IDENTITY_HEADERS: [&str; 4] = [
    "x-tessera-user",
    "x-tessera-org",
    "x-tessera-token-id",
    "x-tessera-scopes",
];

/// The Envoy cluster that reaches the control plane.
const CP_CLUSTER: &str = "tessera_control_plane";

/// Runs the walk-through with the control-plane binary from `TESSERA_CP_BIN` (see
/// [`run_with_control_plane`]).
pub fn run(envoy: &Path, wasm: &Path) -> Result<(), String> {
    let cp = lookup_tool(ENV_CP_BIN).map_err(|_| {
        format!(
            "{ENV_CP_BIN} does not name the control-plane binary: {}",
            crate::control_plane::CP_RUN_HINT
        )
    })?;
    run_with_control_plane(envoy, wasm, &cp)
}

/// Starts the control plane (`cp_bin`) on a fresh SQLite database and bootstraps it,
/// creates and downloads a token, starts Envoy (two workers) with the filter and the sync
/// service pointed at the control plane, shows the request accepted, revokes the token,
/// shows the same request refused with the measured time to refusal, prints the
/// authentication log, and stops everything. `Err` says which step did not behave as
/// printed (or why something could not be started).
pub fn run_with_control_plane(envoy: &Path, wasm: &Path, cp_bin: &Path) -> Result<(), String> {
    run_and_hold(envoy, wasm, cp_bin, None)
}

/// [`run_with_control_plane`], ending with the web page's address and a one-time sign-in
/// link; with `hold`, everything keeps running until `hold` returns (`cargo xtask demo
/// --serve` waits for Ctrl-C there), then stops.
pub fn run_and_hold(
    envoy: &Path,
    wasm: &Path,
    cp_bin: &Path,
    hold: Option<&dyn Fn()>,
) -> Result<(), String> {
    let module_size = std::fs::metadata(wasm)
        .map(|m| format!("{:.1} KB", m.len() as f64 / 1024.0))
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    println!("Tessera demo: the control plane, a real Envoy and the Tessera module, on loopback");
    println!("  control plane: {}", cp_bin.display());
    println!("  envoy:         {}", envoy.display());
    println!("  module:        {} ({module_size})", wasm.display());

    // 1. The control plane.
    step(1, "Start the control plane on SQLite and bootstrap it");
    let mut options = ControlPlaneOptions::new(cp_bin);
    options.admins = vec!["alice".into()];
    let cp = ControlPlane::start(&options).map_err(|e| format!("control plane: {e}"))?;
    println!("   $ tessera admin gen-master-key > master.key   # TESSERA_MASTER_KEY_FILE");
    println!(
        "   $ tessera admin bootstrap --db {} --org acme --admin alice --base-url {}",
        cp.db_path().display(),
        cp.url()
    );
    println!(
        "   $ tessera serve --db {} --listen {}",
        cp.db_path().display(),
        cp.addr()
    );
    println!(
        "   serving {} (pid {}); org \"acme\", admin \"alice\" (one-time admin token {})",
        cp.url(),
        cp.pid().unwrap_or(0),
        abbreviate(cp.admin_token())
    );
    let alice = cp.admin_token().to_owned();

    // 2. A token.
    step(2, "Create a token and download it");
    let id = cp
        .create_token(&alice, &json!({"name": "demo", "scopes": ["read"]}))
        .map_err(|e| format!("create token: {e}"))?;
    println!("   POST /v1/tokens {{\"name\":\"demo\",\"scopes\":[\"read\"]}} -> {id} (pending)");
    let jwt = cp
        .download(&alice, &id)
        .map_err(|e| format!("download: {e}"))?;
    let (header, claims) = decode(&jwt);
    println!("   POST /v1/tokens/{id}/download -> {}", abbreviate(&jwt));
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!(
        "      typ {}, kid {}, sub {}, scope \"{}\"",
        text(&header["typ"]),
        text(&header["kid"]),
        text(&claims["sub"]),
        text(&claims["scope"]),
    );
    println!(
        "      status: index {} of {}",
        text(&claims["status"]["status_list"]["idx"]),
        text(&claims["status"]["status_list"]["uri"])
    );
    let secret = cp
        .edge_credential(&alice, "demo-envoy")
        .map_err(|e| format!("edge credential: {e}"))?;
    println!(
        "   POST /v1/orgs/acme/edge-credentials -> {} (Envoy reports usage with it)",
        abbreviate(&secret)
    );

    // 3. Envoy.
    step(
        3,
        "Start Envoy with the filter, its sync service pointed at the control plane",
    );
    let upstream = EchoUpstream::start().map_err(|e| format!("echo upstream: {e}"))?;
    let usage = cp.usage_config(CP_CLUSTER, &secret, 10_000);
    let filter = cp.filter_config("closed", 60, Some(usage));
    let sync = cp.sync_service_config(CP_CLUSTER, 20);
    let options = EnvoyOptions::new(envoy)
        .filter(wasm, &filter)
        .upstream(upstream.addr())
        .cluster(CP_CLUSTER, cp.addr())
        .sync_service(&sync)
        .concurrency(2);
    let proxy = Envoy::start(&options).map_err(|e| format!("envoy did not start: {e}"))?;
    println!(
        "   envoy: http://{} (admin http://{}), pid {}, 2 worker threads",
        proxy.addr(),
        proxy.admin(),
        proxy.pid()
    );
    println!(
        "   sync service (one per Envoy): long-polls {}?since=<v>&wait=20 and refreshes {}",
        cp.status_list_uri(),
        cp.jwks_url()
    );
    println!("   filter: keys and status from the sync service; fail closed; usage to /v1/usage");
    println!("   upstream: echo server on http://{}", upstream.addr());

    let mut failures = Vec::new();
    let mut sent_with_token = 0usize;
    let request = Request::get("/api/orders").bearer(&jwt);

    // 4. Accepted.
    step(4, "The request is accepted");
    println!(
        "   -> GET /api/orders   Authorization: Bearer {}",
        abbreviate(&jwt)
    );
    // Until the sync service's first answer, the filter has no keys (503).
    let start = Instant::now();
    let first = loop {
        let r = proxy.send(&request).map_err(|e| format!("request: {e}"))?;
        if r.status == 200 || r.reason().is_some_and(|x| x == "status_unavailable") {
            sent_with_token += 1;
        }
        let syncing = r.status == 503 && start.elapsed() < Duration::from_secs(10);
        if !syncing {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    print_response(&first);
    check(&mut failures, 4, &first, 200, None);
    let admin = Request::new("POST", "/admin/users").bearer(&jwt);
    println!("   -> POST /admin/users (needs scope \"admin\"; the token has \"read\")");
    let r = proxy.send(&admin).map_err(|e| format!("request: {e}"))?;
    sent_with_token += 1;
    print_response(&r);
    check(&mut failures, 4, &r, 403, Some("insufficient_scope"));

    // 5. Revoked, refused.
    step(5, "Revoke the token: the same request is refused");
    let start = Instant::now();
    cp.revoke(&alice, &id).map_err(|e| format!("revoke: {e}"))?;
    let api = start.elapsed();
    println!("   POST /v1/tokens/{id}/revoke ({api:.1?})");
    println!("   -> GET /api/orders with the same token, on fresh connections until refused");
    let mut attempts = 0;
    let refused = loop {
        let r = proxy.send(&request).map_err(|e| format!("request: {e}"))?;
        attempts += 1;
        sent_with_token += 1;
        if r.status != 200 || start.elapsed() > Duration::from_secs(10) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let took = start.elapsed();
    print_response(&refused);
    check(&mut failures, 5, &refused, 401, Some("revoked"));
    println!(
        "   refused {took:.1?} after the revoke call started (attempt {attempts}; the call \
         itself took {api:.1?})"
    );
    let workers_before = proxy.worker_connections().unwrap_or_default();
    let mut all_refused = true;
    for _ in 0..20 {
        let r = proxy.send(&request).map_err(|e| format!("request: {e}"))?;
        sent_with_token += 1;
        all_refused &= r.status == 401 && r.reason().as_deref() == Some("revoked");
    }
    let workers_after = proxy.worker_connections().unwrap_or_default();
    let per_worker: Vec<u64> = workers_after
        .iter()
        .zip(workers_before.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a - b)
        .collect();
    println!(
        "   20 more requests (per worker: {per_worker:?}): {}",
        if all_refused {
            "all 401 revoked"
        } else {
            "NOT all refused"
        }
    );
    if !all_refused {
        failures.push("step 5: a later request was not refused with 401 revoked".into());
    }

    // 6. The authentication log.
    step(6, "The authentication log");
    let start = Instant::now();
    let mut log = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        log = cp
            .auth_log(&alice, &id)
            .map_err(|e| format!("auth log: {e}"))?;
        if log.len() >= sent_with_token {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "   GET /v1/tokens/{id}/auth-log: {} record(s) for the {sent_with_token} request(s) \
         Envoy decided on (reports are batched every 200 ms)",
        log.len()
    );
    print_log(&log);
    if log.len() != sent_with_token {
        failures.push(format!(
            "step 6: {} log records for {sent_with_token} requests",
            log.len()
        ));
    }
    if let Ok(t) = cp.token_info(&alice, &id) {
        let s = |k: &str| t[k].as_str().unwrap_or("-").to_owned();
        println!(
            "   the token (GET /v1/tokens/{id}): status {}, last used {} from {}",
            s("status"),
            s("last_used_at"),
            s("last_used_ip")
        );
    }

    println!();
    match (
        proxy.counter("tessera.usage_sent"),
        proxy.counter("tessera.usage_dropped"),
    ) {
        (Some(sent), Some(dropped)) => println!(
            "Envoy: {sent} usage record(s) sent, {dropped} dropped (tessera.usage_sent, \
             tessera.usage_dropped)."
        ),
        _ => println!("Envoy's usage counters were not found."),
    }
    step(7, "The web page");
    println!(
        "   {}/  (the same REST API as the CLI; every asset is in the binary)",
        cp.url()
    );
    match cp.sign_in_link_of("alice") {
        Some(link) => println!("   sign in as alice, once, with: {link}"),
        None => failures.push("step 7: no sign-in link from the bootstrap".into()),
    }
    if let Some(hold) = hold {
        println!(
            "   Envoy: http://{}  (try: curl -H 'Authorization: Bearer <token>' http://{}/api/orders)",
            proxy.addr(),
            proxy.addr()
        );
        println!("   Everything keeps running; press Ctrl-C to stop.");
        hold();
    }
    drop(proxy);
    drop(cp);
    drop(upstream);
    println!("Stopped Envoy, the control plane and the echo upstream.");
    if failures.is_empty() {
        println!("Every step behaved as expected.");
        Ok(())
    } else {
        Err(format!(
            "{} step(s) did not behave as expected:\n{}",
            failures.len(),
            failures.join("\n")
        ))
    }
}

fn step(n: usize, title: &str) {
    println!();
    println!("{n}. {title}");
}

fn check(failures: &mut Vec<String>, step: usize, r: &Response, status: u16, reason: Option<&str>) {
    let want = match reason {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    };
    let ok = r.status == status
        && (reason.is_none() || r.reason().as_deref() == reason)
        && (reason.is_some() || r.upstream().is_some());
    if ok {
        println!("   OK: expected {want}");
    } else {
        println!("   UNEXPECTED: wanted {want}");
        failures.push(format!("step {step}: wanted {want}, got {}", r.summary()));
    }
}

fn abbreviate(token: &str) -> String {
    if token.len() <= 40 {
        return token.to_owned();
    }
    format!("{}... ({} bytes)", &token[..24], token.len())
}

fn decode(jwt: &str) -> (Value, Value) {
    let jwt = tessera_core::token::strip_api_prefix(jwt);
    let part = |i: usize| -> Value {
        jwt.split('.')
            .nth(i)
            .and_then(tessera_testkit::b64url_decode)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    (part(0), part(1))
}

fn print_response(resp: &Response) {
    println!("   <- {} {}", resp.status, status_text(resp.status));
    if let Some(www) = resp.header("www-authenticate") {
        println!("      WWW-Authenticate: {www}");
    }
    match resp.upstream() {
        Some(seen) => {
            println!(
                "      the upstream received {}",
                seen.get("request_line")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            );
            for name in IDENTITY_HEADERS {
                let values = resp.upstream_header(name);
                let shown = if values.is_empty() {
                    "(absent)".to_owned()
                } else {
                    values.join(" | ")
                };
                println!("        {name}: {shown}");
            }
        }
        None => {
            if !resp.body.is_empty() {
                println!("      body: {}", resp.text().trim());
            }
        }
    }
}

/// The log as a table: one row per kind of decision (outcome, reason, method, path,
/// address, reporter) with its count and first and last time, oldest first. (Records are
/// stored in the order batches arrive, and each Envoy worker sends its own.)
fn print_log(log: &[Value]) {
    let s = |e: &Value, k: &str| e[k].as_str().unwrap_or("-").to_owned();
    // (first at, last at, outcome, reason, method, path, ip, source) -> count
    let mut rows: Vec<([String; 8], usize)> = Vec::new();
    for e in log {
        let key = [
            s(e, "outcome"),
            s(e, "reason"),
            s(e, "method"),
            s(e, "path"),
            s(e, "ip"),
            s(e, "source"),
        ];
        let at = s(e, "at");
        match rows.iter_mut().find(|(r, _)| r[2..] == key[..]) {
            Some((r, n)) => {
                *n += 1;
                if at < r[0] {
                    r[0] = at.clone();
                }
                if at > r[1] {
                    r[1] = at;
                }
            }
            None => {
                let [o, re, m, p, ip, src] = key;
                rows.push(([at.clone(), at, o, re, m, p, ip, src], 1));
            }
        }
    }
    rows.sort();
    println!(
        "   {:>5}  {:<21} {:<21} {:<8} {:<19} {:<6} {:<13} {:<10} reported by",
        "count", "first", "last", "outcome", "reason", "method", "path", "ip"
    );
    for (r, n) in rows {
        println!(
            "   {n:>5}  {:<21} {:<21} {:<8} {:<19} {:<6} {:<13} {:<10} {}",
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
        );
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}
