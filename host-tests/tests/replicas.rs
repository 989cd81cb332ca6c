//! Several control-plane replicas on one PostgreSQL, in real processes: a throwaway
//! PostgreSQL cluster, three `tessera serve` replicas on one database (one master key, one
//! base URL, so one issuer), and two Envoys with the Tessera filter whose sync cluster
//! lists all three replicas (round robin). One Envoy fails closed, the other open.
//!
//! 1. A revoke through one replica is refused by both Envoys (the time from the revoke's
//!    answer to the refusal at each Envoy is printed). It goes through a replica that
//!    holds neither Envoy's long poll (replica 1 unless it holds one), so both refusals
//!    need the other replicas to wake their polls (LISTEN/NOTIFY); a poll left asleep
//!    would answer only after its wait.
//! 2. In the middle of a burst of token creations through all replicas, the replica
//!    holding the closed Envoy's long poll (found from that Envoy's own per-endpoint
//!    `rq_active`) is SIGKILLed. The Envoy fails over: requests probed all along are
//!    never refused as stale and the open Envoy never fails open, a token revoked after
//!    the kill is refused by both, and every acknowledged creation is there afterwards.
//! 3. PostgreSQL itself is SIGKILLed in the middle of a second burst, then restarted.
//!    While it is down the replicas answer 503 with a reason (body and log) and both
//!    Envoys keep their last lists (a valid token passes, a revoked one is refused); after
//!    the restart the same replica processes answer again, a revoke made then reaches both
//!    Envoys, concurrent downloads through all three replicas get distinct status-list
//!    indices, and every creation acknowledged in either burst is there.
//!
//! Times are printed, never asserted (deadlines are generous safety nets).
//!
//! Needs `TESSERA_ENVOY`, `TESSERA_FILTER_WASM`, `TESSERA_CP_BIN` and PostgreSQL's
//! server binaries (`TESSERA_PG_BIN`, else `/usr/lib/postgresql/<major>/bin`); `cargo
//! xtask test` provides all of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_host_tests::{
    control_plane_path, repo_root, tools, ControlPlane, ControlPlaneOptions, EchoUpstream, Envoy,
    EnvoyOptions, PgCluster, PgOptions, Request, Response,
};
use tessera_testkit::b64url_decode;

/// The Envoy cluster listing the replicas.
const CP_CLUSTER: &str = "tessera_control_plane";
/// Long polls last this long without a change. A failed poll is retried after a second
/// as a long poll again, which proves freshness only when it answers: the staleness bound
/// must exceed the retry plus one poll wait (here three poll waits, as in production
/// layouts).
const POLL_WAIT_SECS: u64 = 5;
const MAX_STALENESS_SECS: u64 = 15;
/// A safety net for everything that waits (times are printed, not asserted).
const BOUND: Duration = Duration::from_secs(30);
/// Token creations acknowledged before the kill, and after it, in the burst.
const ACKS_BEFORE_KILL: usize = 24;
const ACKS_AFTER_KILL: usize = 24;
const WRITERS: usize = 3;
/// Token downloads through each replica at once (status-index allocation).
const DOWNLOADS_PER_REPLICA: usize = 8;

/// What a request through an Envoy got.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Allow,
    Deny(u16, String),
    Other(String),
}

fn seen(r: std::io::Result<Response>) -> Seen {
    match r {
        Ok(r) => match (r.status, r.upstream(), r.reason()) {
            (200, Some(_), _) => Seen::Allow,
            (s, None, Some(reason)) => Seen::Deny(s, reason),
            _ => Seen::Other(r.summary()),
        },
        Err(e) => Seen::Other(format!("request failed: {e}")),
    }
}

fn ask(envoy: &Envoy, jwt: &str) -> Seen {
    seen(envoy.send(&Request::get("/api/orders").bearer(jwt)))
}

fn revoked() -> Seen {
    Seen::Deny(401, "revoked".into())
}

/// Asks every Envoy until each answered `want`; returns the time from `since` to each
/// Envoy's first such answer (then checks that the next answer agrees).
fn until_all(envoys: &[Envoy], jwt: &str, want: &Seen, since: Instant) -> Vec<Duration> {
    let mut took: Vec<Option<Duration>> = vec![None; envoys.len()];
    let mut last: Vec<Option<Seen>> = vec![None; envoys.len()];
    while took.iter().any(Option::is_none) {
        for (i, envoy) in envoys.iter().enumerate() {
            if took[i].is_some() {
                continue;
            }
            let got = ask(envoy, jwt);
            if &got == want {
                took[i] = Some(since.elapsed());
            } else {
                last[i] = Some(got);
            }
        }
        assert!(
            since.elapsed() < BOUND,
            "{want:?} not answered by every Envoy within {BOUND:?}; last other answers: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    for envoy in envoys {
        assert_eq!(&ask(envoy, jwt), want, "the answer did not stay");
    }
    took.into_iter().flatten().collect()
}

/// The sync service's warnings in `envoy`'s log from line `from` on (failed calls to
/// the replicas), and the log's line count.
fn sync_warnings(envoy: &Envoy, from: usize) -> (Vec<String>, usize) {
    let log = envoy.log();
    let lines: Vec<&str> = log.lines().collect();
    let warnings = lines
        .iter()
        .skip(from)
        .filter(|l| l.contains("tessera: sync:"))
        .map(|l| {
            l.rsplit_once("tessera: sync:")
                .map_or(*l, |(_, m)| m)
                .trim()
                .to_owned()
        })
        .collect();
    (warnings, lines.len())
}

fn print_sync_warnings(envoys: &[Envoy], from: &mut [usize], when: &str) {
    for ((envoy, from), policy) in envoys.iter().zip(from.iter_mut()).zip(["closed", "open"]) {
        let (warnings, end) = sync_warnings(envoy, *from);
        *from = end;
        println!(
            "[replicas] {when}: the {policy} Envoy's sync logged {} failed call(s): {warnings:?}",
            warnings.len()
        );
    }
}

/// Sets its flags when dropped (also while unwinding from a failed assertion).
struct StopOnDrop<'a, const N: usize>([&'a AtomicBool; N]);

impl<const N: usize> Drop for StopOnDrop<'_, N> {
    fn drop(&mut self) {
        for flag in self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// The status-list index a JWT carries (`status.status_list.idx`).
fn status_idx(jwt: &str) -> Option<i64> {
    let jwt = tessera_core::token::strip_api_prefix(jwt);
    let payload = b64url_decode(jwt.split('.').nth(1)?)?;
    let claims: Value = serde_json::from_slice(&payload).ok()?;
    claims["status"]["status_list"]["idx"].as_i64()
}

fn fail_open_count(envoy: &Envoy) -> u64 {
    envoy.counter("tessera.status_fail_open").unwrap_or(0)
}

/// Envoy's per-endpoint stats of the replicas' cluster: endpoint → stat → value.
fn endpoint_stats(envoy: &Envoy) -> BTreeMap<SocketAddr, BTreeMap<String, u64>> {
    let mut out: BTreeMap<SocketAddr, BTreeMap<String, u64>> = BTreeMap::new();
    for (addr, stat, value) in envoy.endpoint_stats(CP_CLUSTER).expect("admin /clusters") {
        out.entry(addr).or_default().insert(stat, value);
    }
    out
}

fn stat(stats: &BTreeMap<SocketAddr, BTreeMap<String, u64>>, at: SocketAddr, name: &str) -> u64 {
    stats
        .get(&at)
        .and_then(|s| s.get(name))
        .copied()
        .unwrap_or(0)
}

/// The endpoint holding `envoy`'s long poll: the only one with a request in flight (the
/// sync service has nothing else open: JWKS refreshes are 30 s apart). Waits for one.
fn poll_endpoint(envoy: &Envoy) -> (SocketAddr, BTreeMap<SocketAddr, BTreeMap<String, u64>>) {
    let start = Instant::now();
    loop {
        let stats = endpoint_stats(envoy);
        let active: Vec<SocketAddr> = stats
            .iter()
            .filter(|(_, s)| s.get("rq_active").copied().unwrap_or(0) > 0)
            .map(|(a, _)| *a)
            .collect();
        if let [one] = active[..] {
            if stat(&stats, one, "rq_active") == 1 {
                return (one, stats);
            }
        }
        assert!(
            start.elapsed() < BOUND,
            "no single long poll in flight on the replicas' cluster: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `POST /v1/tokens` on `addr` with `token`; the id when it was acknowledged (2xx).
fn create_at(addr: SocketAddr, token: &str, name: &str) -> Result<String, String> {
    let body = json!({"name": name, "scopes": ["read"]}).to_string();
    let r = Request::new("POST", "/v1/tokens")
        .header("host", &addr.to_string())
        .header("content-type", "application/json")
        .bearer(token)
        .body(body)
        .timeout(Duration::from_secs(10))
        .send(addr)
        .map_err(|e| e.to_string())?;
    if !(200..300).contains(&r.status) {
        return Err(format!("{} {}", r.status, r.text()));
    }
    r.json()
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
        .ok_or_else(|| format!("no id in {}", r.text()))
}

/// A burst of token creations from several threads, each through every replica in
/// turn, remembering every acknowledged one.
struct Burst {
    stop: AtomicBool,
    acked: Mutex<Vec<(String, String)>>,
    refused: Mutex<Vec<(SocketAddr, String)>>,
}

impl Burst {
    fn new() -> Burst {
        Burst {
            stop: AtomicBool::new(false),
            acked: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
        }
    }

    /// Writer `w`: creates `<prefix>-<w>-<n>` through `addrs[(w + n) % len]` until
    /// stopped; a dead replica is tried too (a client that does not know yet), and its
    /// refusals are not acknowledged.
    fn write(&self, w: usize, prefix: &str, addrs: &[SocketAddr], token: &str) {
        let mut n = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            let at = addrs[(w + n) % addrs.len()];
            let name = format!("{prefix}-{w}-{n}");
            n += 1;
            match create_at(at, token, &name) {
                Ok(id) => self.acked.lock().unwrap().push((id, name)),
                Err(e) => self.refused.lock().unwrap().push((at, e)),
            }
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` creations were acknowledged.
    fn wait_acks(&self, n: usize) {
        let start = Instant::now();
        while self.acked() < n {
            assert!(start.elapsed() < BOUND, "the burst made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Every acknowledged `(id, name)` is there, read through `cp`.
fn check_present(cp: &ControlPlane, token: &str, acked: &[(String, String)], when: &str) {
    let mut missing = Vec::new();
    for (id, name) in acked {
        match cp.token_info(token, id) {
            Ok(v) if v.get("name").and_then(Value::as_str) == Some(name.as_str()) => {}
            other => missing.push(format!("{id} ({name}): {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{when}: {} of {} acknowledged creations are missing through {}: {missing:?}",
        missing.len(),
        acked.len(),
        cp.url()
    );
    println!(
        "[replicas] {when}: all {} acknowledged creations read back through {}",
        acked.len(),
        cp.url()
    );
}

#[test]
fn three_replicas_on_postgres_two_envoys_survive_replica_and_database_kills() {
    let began = Instant::now();
    let (envoy_bin, wasm) = tools();
    let cp_bin = control_plane_path();
    // fsync off: processes are killed here, never the machine, and a commit is in the WAL
    // the server wrote before it answered.
    let mut pg = PgCluster::start(
        &repo_root().join("target").join("pg"),
        &PgOptions {
            fsync: false,
            ..PgOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let db = pg
        .create_database("tessera_replicas")
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let first = ControlPlane::start(&ControlPlaneOptions::new(&cp_bin).database(&db))
        .unwrap_or_else(|e| panic!("replica 1: {e}"));
    let second = first.replica().unwrap_or_else(|e| panic!("replica 2: {e}"));
    let third = first.replica().unwrap_or_else(|e| panic!("replica 3: {e}"));
    let mut replicas = [first, second, third];
    let addrs: Vec<SocketAddr> = replicas.iter().map(ControlPlane::addr).collect();
    for r in &replicas[1..] {
        assert_eq!(r.issuer(), replicas[0].issuer(), "one issuer");
    }

    let upstream = EchoUpstream::start().expect("echo upstream");
    let policies = ["closed", "open"];
    let envoys: Vec<Envoy> = policies
        .iter()
        .map(|policy| {
            let filter = replicas[0].filter_config(policy, MAX_STALENESS_SECS, None);
            let mut sync = replicas[0].sync_service_config(CP_CLUSTER, POLL_WAIT_SECS);
            sync["jwks_refresh_secs"] = json!(30);
            Envoy::start(
                &EnvoyOptions::new(&envoy_bin)
                    .filter(&wasm, &filter)
                    .upstream(upstream.addr())
                    .cluster_endpoints(CP_CLUSTER, &addrs)
                    .sync_service(&sync),
            )
            .unwrap_or_else(|e| panic!("envoy ({policy}) did not start: {e}"))
        })
        .collect();
    println!(
        "[replicas] PostgreSQL, 3 replicas {addrs:?} and 2 Envoys started in {:?}",
        began.elapsed()
    );

    // --- 1. A revoke through one replica reaches both Envoys. ----------------------------
    let alice = replicas[0].admin_token().to_owned();
    let (_, valid) = replicas[1]
        .create_and_download(&alice, "valid", &["read"])
        .expect("create + download through replica 2");
    let (first_id, first_jwt) = replicas[2]
        .create_and_download(&alice, "revoked-first", &["read"])
        .expect("create + download through replica 3");
    until_all(&envoys, &valid, &Seen::Allow, Instant::now());
    until_all(&envoys, &first_jwt, &Seen::Allow, Instant::now());
    let polls: Vec<SocketAddr> = envoys.iter().map(|e| poll_endpoint(e).0).collect();
    let via = (0..replicas.len())
        .find(|i| !polls.contains(&addrs[*i]))
        .expect("3 replicas, 2 long polls");
    let call = Instant::now();
    replicas[via]
        .revoke(&alice, &first_id)
        .expect("revoke through a replica without a long poll");
    let answered = Instant::now();
    let took = until_all(&envoys, &first_jwt, &revoked(), answered);
    println!(
        "[replicas] revoke through replica {} (call {:?}; the long polls are on replicas {:?}, \
         wait {POLL_WAIT_SECS} s): refused at the closed Envoy {:?} and at the open Envoy {:?} \
         after its answer",
        via + 1,
        answered - call,
        polls
            .iter()
            .map(|p| addrs.iter().position(|a| a == p).map_or(0, |i| i + 1))
            .collect::<Vec<_>>(),
        took[0],
        took[1]
    );

    // --- 2. SIGKILL the replica holding a long poll, in a burst of writes. ---------------
    let (later_id, later_jwt) = replicas[1]
        .create_and_download(&alice, "revoked-after-kill", &["read"])
        .expect("create + download");
    until_all(&envoys, &later_jwt, &Seen::Allow, Instant::now());
    let fail_open_before = fail_open_count(&envoys[1]);
    let mut log_from: Vec<usize> = envoys.iter().map(|e| sync_warnings(e, 0).1).collect();
    let burst = Burst::new();
    let stop_probe = AtomicBool::new(false);
    let probe_bad = Mutex::new(Vec::<(usize, Seen)>::new());
    let probes = Mutex::new(0u64);
    let mut killed = None;
    std::thread::scope(|s| {
        // A failing assertion below must not leave the scope waiting for these threads.
        let _stop = StopOnDrop([&burst.stop, &stop_probe]);
        // Valid-token requests through both Envoys from before the kill until the revoke
        // made after it is refused: a stale closed Envoy would answer 503
        // status_unavailable, a stale open one would count a fail-open. That refusal is an
        // answer from a live replica, which makes the sync fresh again, so no staleness
        // can start in a window the probe did not see.
        s.spawn(|| {
            while !stop_probe.load(Ordering::Relaxed) {
                for (i, envoy) in envoys.iter().enumerate() {
                    let got = ask(envoy, &valid);
                    if got != Seen::Allow {
                        probe_bad.lock().unwrap().push((i, got));
                    }
                }
                *probes.lock().unwrap() += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        for w in 0..WRITERS {
            let (burst, addrs, alice) = (&burst, &addrs, &alice);
            s.spawn(move || burst.write(w, "burst", addrs, alice));
        }
        burst.wait_acks(ACKS_BEFORE_KILL);

        // The replica the closed Envoy's long poll is on, from that Envoy's own view.
        let (target, before) = poll_endpoint(&envoys[0]);
        let k = addrs
            .iter()
            .position(|a| *a == target)
            .expect("the poll is on one of the replicas");
        let other_poll = poll_endpoint(&envoys[1]).0;
        let acks_at_kill = burst.acked();
        replicas[k].kill();
        let kill_at = Instant::now();
        let after = endpoint_stats(&envoys[0]);
        // That very poll was cut by the kill: it had not ended well before (no new
        // success on that endpoint since it was seen in flight).
        assert_eq!(
            stat(&after, target, "rq_success"),
            stat(&before, target, "rq_success"),
            "the long poll seen on replica {} ended before the kill; stats before {before:?}, \
             after {after:?}",
            k + 1
        );
        killed = Some(k);
        println!(
            "[replicas] SIGKILLed replica {} ({target}), holding the closed Envoy's long poll \
             (the open Envoy's was on {other_poll}), after {acks_at_kill} acknowledged \
             creations",
            k + 1
        );
        // The failover: a new long poll in flight on another replica.
        let (next, _) = {
            let start = Instant::now();
            loop {
                let (at, stats) = poll_endpoint(&envoys[0]);
                if at != target {
                    break (at, stats);
                }
                assert!(
                    start.elapsed() < BOUND,
                    "the long poll stays on the dead replica"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let failover = kill_at.elapsed();
        let cut = endpoint_stats(&envoys[0]);
        println!(
            "[replicas] the closed Envoy's long poll is on {next} {failover:?} after the kill \
             (on the dead endpoint: rq_error {} -> {}, cx_connect_fail {} -> {})",
            stat(&before, target, "rq_error"),
            stat(&cut, target, "rq_error"),
            stat(&before, target, "cx_connect_fail"),
            stat(&cut, target, "cx_connect_fail"),
        );
        assert!(
            stat(&cut, target, "rq_error") > stat(&before, target, "rq_error"),
            "the long poll on the killed replica did not fail: before {before:?}, after {cut:?}"
        );
        burst.wait_acks(acks_at_kill + ACKS_AFTER_KILL);
        burst.stop.store(true, Ordering::Relaxed);

        // A revoke after the kill, through the surviving replica that does not hold the
        // closed Envoy's new long poll, reaches both Envoys.
        let via = (0..replicas.len())
            .find(|i| *i != k && addrs[*i] != next)
            .expect("a third replica");
        let call = Instant::now();
        replicas[via]
            .revoke(&alice, &later_id)
            .expect("revoke after the kill");
        let answered = Instant::now();
        let took = until_all(&envoys, &later_jwt, &revoked(), answered);
        println!(
            "[replicas] revoke through replica {} {:?} after the kill (call {:?}): refused at \
             the closed Envoy {:?} and at the open Envoy {:?} after its answer",
            via + 1,
            call - kill_at,
            answered - call,
            took[0],
            took[1]
        );
        stop_probe.store(true, Ordering::Relaxed);
    });
    let k = killed.expect("a replica was killed");
    let bad = probe_bad.into_inner().unwrap();
    assert!(
        bad.is_empty(),
        "a valid token was not allowed through the failover (Envoy 0 closed, 1 open): {bad:?}"
    );
    assert_eq!(
        fail_open_count(&envoys[1]),
        fail_open_before,
        "the open Envoy failed open: its status went stale during the failover"
    );
    let dead = addrs[k];
    let acked = burst.acked.into_inner().unwrap();
    let refused = burst.refused.into_inner().unwrap();
    let refused_alive: Vec<&(SocketAddr, String)> =
        refused.iter().filter(|(at, _)| *at != dead).collect();
    println!(
        "[replicas] burst: {} creations acknowledged, {} refused ({} by live replicas: {:?}); \
         {} probes of both Envoys, all allowed; tessera.status_fail_open stayed {fail_open_before}",
        acked.len(),
        refused.len(),
        refused_alive.len(),
        refused_alive.iter().take(3).collect::<Vec<_>>(),
        probes.into_inner().unwrap(),
    );
    print_sync_warnings(&envoys, &mut log_from, "replica kill");
    let survivor = (k + 1) % replicas.len();
    check_present(
        &replicas[survivor],
        &alice,
        &acked,
        "after the replica kill",
    );
    // The killed replica comes back on the same port and database.
    replicas[k].restart().expect("restart the killed replica");

    // --- 3. SIGKILL PostgreSQL, then restart it. ----------------------------------------
    let pids: Vec<Option<u32>> = replicas.iter().map(ControlPlane::pid).collect();
    let pg_burst = Burst::new();
    let mut after_restart = Vec::new();
    std::thread::scope(|s| {
        let _stop = StopOnDrop([&pg_burst.stop]);
        for w in 0..WRITERS {
            let (burst, addrs, alice) = (&pg_burst, &addrs, &alice);
            s.spawn(move || burst.write(w, "pg-burst", addrs, alice));
        }
        pg_burst.wait_acks(ACKS_BEFORE_KILL);
        let acks_at_kill = pg_burst.acked();
        let pg_killed = Instant::now();
        pg.kill().expect("SIGKILL PostgreSQL");
        println!(
            "[replicas] PostgreSQL SIGKILLed (down {:?} after the signal) after {acks_at_kill} \
             acknowledged creations of a second burst",
            pg_killed.elapsed()
        );
        // Every replica, a read and a write at once (each waits for a pool connection up to
        // the backend's checkout timeout before it answers 503).
        let down_answers: Vec<(usize, &str, Response, Duration)> = std::thread::scope(|s| {
            let mut calls = Vec::new();
            for (i, cp) in replicas.iter().enumerate() {
                for kind in ["read", "write"] {
                    let (alice, later_id) = (&alice, &later_id);
                    calls.push(s.spawn(move || {
                        let start = Instant::now();
                        loop {
                            let r = if kind == "read" {
                                cp.call("GET", &format!("/v1/tokens/{later_id}"), Some(alice), None)
                            } else {
                                let body =
                                    json!({"name": format!("while-down-{i}"), "scopes": ["read"]});
                                cp.call("POST", "/v1/tokens", Some(alice), Some(&body))
                            }
                            .expect("the replica answers");
                            if r.status == 503 {
                                return (i, kind, r, start.elapsed());
                            }
                            assert!(
                                start.elapsed() < BOUND,
                                "replica {} still answers a {kind} {} with PostgreSQL down: {}",
                                i + 1,
                                r.status,
                                r.text()
                            );
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }));
                }
            }
            calls
                .into_iter()
                .map(|c| c.join().expect("a call with PostgreSQL down"))
                .collect()
        });
        for (i, kind, r, took) in &down_answers {
            let body = r.json().unwrap_or_default();
            assert_eq!(body["error"], "unavailable", "503 body: {}", r.text());
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("database is unavailable")),
                "the 503 body names the reason: {}",
                r.text()
            );
            println!(
                "[replicas] replica {} answers a {kind} 503 {} {took:?} after the call",
                i + 1,
                r.text().trim()
            );
        }
        for (i, cp) in replicas.iter().enumerate() {
            let log = cp.log();
            let line = log
                .lines()
                .rev()
                .find(|l| l.contains("status=503") && l.contains("database"))
                .unwrap_or_else(|| panic!("replica {}'s log names the reason:\n{log}", i + 1));
            println!("[replicas] replica {}'s log: {}", i + 1, line.trim());
        }
        for (envoy, policy) in envoys.iter().zip(policies) {
            assert_eq!(
                ask(envoy, &valid),
                Seen::Allow,
                "[{policy}] PostgreSQL down: valid"
            );
            assert_eq!(
                ask(envoy, &first_jwt),
                revoked(),
                "[{policy}] PostgreSQL down: revoked"
            );
            assert_eq!(
                ask(envoy, &later_jwt),
                revoked(),
                "[{policy}] PostgreSQL down: revoked"
            );
        }
        println!(
            "[replicas] PostgreSQL down {:?}: both Envoys still allow the valid token and refuse \
             the two revoked ones",
            pg_killed.elapsed()
        );
        let restarted = Instant::now();
        pg.restart().expect("restart PostgreSQL");
        println!(
            "[replicas] PostgreSQL restarted in {:?} ({:?} after the kill)",
            restarted.elapsed(),
            pg_killed.elapsed()
        );
        for (i, cp) in replicas.iter().enumerate() {
            let start = Instant::now();
            loop {
                let r = cp
                    .call("GET", &format!("/v1/tokens/{later_id}"), Some(&alice), None)
                    .expect("the replica answers");
                if r.status == 200 {
                    break;
                }
                assert!(
                    start.elapsed() < BOUND,
                    "replica {} has not recovered {BOUND:?} after PostgreSQL's restart: {}",
                    i + 1,
                    r.summary()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            let recovered = restarted.elapsed();
            let name = format!("after-restart-{i}");
            let id = create_at(cp.addr(), &alice, &name)
                .unwrap_or_else(|e| panic!("replica {} write after the restart: {e}", i + 1));
            after_restart.push((id, name));
            println!(
                "[replicas] replica {} (same process) reads {recovered:?} and writes {:?} after \
                 PostgreSQL's restart began",
                i + 1,
                restarted.elapsed()
            );
        }
        // The burst goes on through the recovered replicas.
        pg_burst.wait_acks(pg_burst.acked() + ACKS_AFTER_KILL);
        pg_burst.stop.store(true, Ordering::Relaxed);
    });
    let pg_acked = pg_burst.acked.into_inner().unwrap();
    let pg_refused = pg_burst.refused.into_inner().unwrap();
    let unavailable = pg_refused
        .iter()
        .filter(|(_, e)| e.starts_with("503 "))
        .count();
    println!(
        "[replicas] second burst: {} creations acknowledged, {} refused ({unavailable} with 503)",
        pg_acked.len(),
        pg_refused.len()
    );
    assert_eq!(
        replicas.iter().map(ControlPlane::pid).collect::<Vec<_>>(),
        pids,
        "no replica was restarted"
    );
    // The change feed works again across replicas: a revoke through one reaches both
    // Envoys, whichever replica their long polls are on.
    let call = Instant::now();
    let (last_id, last_jwt) = replicas[2]
        .create_and_download(&alice, "revoked-after-restart", &["read"])
        .expect("create + download after the restart");
    until_all(&envoys, &last_jwt, &Seen::Allow, call);
    replicas[1]
        .revoke(&alice, &last_id)
        .expect("revoke after the restart");
    let answered = Instant::now();
    let took = until_all(&envoys, &last_jwt, &revoked(), answered);
    println!(
        "[replicas] revoke through replica 2 after PostgreSQL's restart: refused at the closed \
         Envoy {:?} and at the open Envoy {:?} after its answer",
        took[0], took[1]
    );
    for (envoy, policy) in envoys.iter().zip(policies) {
        assert_eq!(
            ask(envoy, &valid),
            Seen::Allow,
            "[{policy}] after the restart: valid"
        );
    }
    print_sync_warnings(&envoys, &mut log_from, "PostgreSQL kill and restart");

    // Concurrent downloads through all three replicas get distinct status-list indices.
    let started = Instant::now();
    let minted: Vec<(String, String, i64)> = std::thread::scope(|s| {
        let calls: Vec<_> = replicas
            .iter()
            .enumerate()
            .map(|(i, cp)| {
                let alice = &alice;
                s.spawn(move || {
                    (0..DOWNLOADS_PER_REPLICA)
                        .map(|n| {
                            let name = format!("download-{i}-{n}");
                            let (id, jwt) = cp
                                .create_and_download(alice, &name, &["read"])
                                .unwrap_or_else(|e| panic!("replica {}: {e}", i + 1));
                            let idx = status_idx(&jwt)
                                .unwrap_or_else(|| panic!("no status index in {jwt}"));
                            (id, jwt, idx)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        calls
            .into_iter()
            .flat_map(|c| c.join().expect("downloads"))
            .collect()
    });
    let mut indices: Vec<i64> = minted.iter().map(|(_, _, idx)| *idx).collect();
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(
        indices.len(),
        minted.len(),
        "two downloads got the same status-list index: {:?}",
        minted
            .iter()
            .map(|(id, _, idx)| (id, idx))
            .collect::<Vec<_>>()
    );
    let newest = &minted[minted.len() - 1].1;
    until_all(&envoys, newest, &Seen::Allow, Instant::now());
    println!(
        "[replicas] {} concurrent downloads through the 3 replicas got {} distinct status \
         indices in {:?}",
        minted.len(),
        indices.len(),
        started.elapsed()
    );
    let mut all = acked;
    all.extend(pg_acked);
    all.extend(after_restart);
    check_present(&replicas[0], &alice, &all, "after PostgreSQL's restart");
    println!("[replicas] whole test: {:?}", began.elapsed());
}
