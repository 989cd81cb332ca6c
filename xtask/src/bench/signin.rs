//! Sign-in under attack (issue 23's targets): a flood of junk sign-ins and link accepts
//! from 64 addresses while another user works, then a burst of wrong passwords against
//! one account.
//!
//! - Each flooding client sends from its own loopback address (127.0.2.N; Linux answers
//!   on all of 127/8), so each has its own share of the per-address rate limit and
//!   connection cap: the flood reaches as much password work as 64 real addresses would.
//! - Each client alternates a link accept with a made-up secret (refused on a read, before
//!   any password hashing) and a sign-in with a wrong password, for the one real account
//!   or for a made-up username (hashed all the same, so as not to tell who exists), each
//!   checked while the throttle allows and refused once it delays.
//! - Meanwhile another user's `GET /v1/me` is timed back to back from 127.0.0.1, and the
//!   server's resident memory is read every 100 ms.
//! - After the flood the memory is read again after a pause, and 24 wrong passwords for a
//!   second account are sent at one instant: how many of them the server checked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_host_tests::{ControlPlane, ControlPlaneOptions, Request, Response};

use super::stats::{self, percentile_or_nan};
use super::{Inputs, Plan, Section, TargetRow};
use crate::tools::Result;

/// Flooding clients (one address each) and the flood's length, full run.
const CLIENTS: usize = 64;
const FLOOD: Duration = Duration::from_secs(60);
/// The smoke run: enough to see every answer kind.
const SMOKE_CLIENTS: usize = 8;
const SMOKE_FLOOD: Duration = Duration::from_secs(3);
/// Wrong passwords sent at one instant against one account.
const BURST: usize = 24;
/// What a stranger's burst may get checked: the throttle's allowance.
const ALLOWANCE: usize = 3;
/// A password that passes the strength rule; the bench's accounts only.
const PASSWORD: &str = "correct horse battery staple for the flood bench";

/// What one run saw.
struct Flood {
    clients: usize,
    seconds: f64,
    /// Answers to the flood, by status.
    statuses: BTreeMap<u16, u64>,
    idle_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    /// Seconds of `GET /v1/me` during the flood.
    me: Vec<f64>,
    /// Statuses of the burst, and how many of its passwords were checked (401).
    burst: Vec<u16>,
    checked: usize,
}

fn send(cp: &ControlPlane, req: Request) -> Result<Response> {
    req.header("host", &cp.addr().to_string())
        .timeout(Duration::from_secs(30))
        .send(cp.addr())
        .map_err(|e| format!("sign-in bench: {e}"))
}

fn post(path: &str, body: &Value) -> Request {
    Request::new("POST", path)
        .header("content-type", "application/json")
        .body(body.to_string())
}

/// Gives `username` (bootstrapped with a sign-in link) a password.
fn set_password(cp: &ControlPlane, username: &str) -> Result<()> {
    let link = cp
        .sign_in_link_of(username)
        .ok_or_else(|| format!("no sign-in link for {username}"))?;
    let secret = link.rsplit('/').next().unwrap_or_default();
    let r = send(
        cp,
        post(
            "/v1/links/accept",
            &json!({"secret": secret, "password": PASSWORD}),
        ),
    )?;
    if r.status != 200 {
        return Err(format!("accepting {username}'s link: {}", r.summary()));
    }
    Ok(())
}

fn flood_client(
    cp: &ControlPlane,
    from: IpAddr,
    n: usize,
    stop: &AtomicBool,
) -> Result<BTreeMap<u16, u64>> {
    let mut seen = BTreeMap::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let junk = post(
            "/v1/links/accept",
            &json!({"secret": format!("junk-{n}-{i}"), "password": PASSWORD}),
        );
        // Every other guess names nobody: an unknown user costs the same hashing.
        let username = if i.is_multiple_of(2) {
            "alice".to_owned()
        } else {
            format!("nobody-{n}-{i}")
        };
        let guess = post(
            "/v1/session",
            &json!({"org": cp.org(), "username": username, "password": format!("guess {n} {i}")}),
        );
        for req in [junk, guess] {
            let r = send(cp, req.bind(from))?;
            *seen.entry(r.status).or_default() += 1;
        }
        i += 1;
    }
    Ok(seen)
}

fn measure(cp: &ControlPlane, clients: usize, length: Duration) -> Result<Flood> {
    let pid = cp.pid().ok_or("the control plane is not running")?;
    let rss = || stats::rss_kib(pid).unwrap_or(0);
    set_password(cp, "alice")?;
    set_password(cp, "bob")?;
    let carol_token = cp.token_of("carol").ok_or("no bootstrap admin carol")?;
    // Settle, then the idle figure.
    std::thread::sleep(Duration::from_secs(1));
    let idle_kib = rss();
    let stop = AtomicBool::new(false);
    let peak = AtomicU64::new(idle_kib);
    let started = Instant::now();
    let (statuses, me) = std::thread::scope(|scope| -> Result<_> {
        let flooders: Vec<_> = (0..clients)
            .map(|n| {
                let from = IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1 + n as u8));
                let stop = &stop;
                scope.spawn(move || flood_client(cp, from, n, stop))
            })
            .collect();
        {
            let (stop, peak) = (&stop, &peak);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        let mut me = Vec::new();
        let mut failed = None;
        while started.elapsed() < length {
            let t = Instant::now();
            match send(cp, Request::get("/v1/me").bearer(carol_token)) {
                Ok(r) if r.status == 200 => me.push(t.elapsed().as_secs_f64()),
                Ok(r) => {
                    failed = Some(format!("GET /v1/me during the flood: {}", r.summary()));
                    break;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut statuses = BTreeMap::new();
        for f in flooders {
            for (status, n) in f.join().map_err(|_| "a flooding client panicked")?? {
                *statuses.entry(status).or_default() += n;
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok((statuses, me)),
        }
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_kib = peak.into_inner().max(rss());
    // The memory the flood leaves behind, once the last answers are written.
    std::thread::sleep(Duration::from_secs(2));
    let after_kib = rss();

    // The burst: every connection opened first, then all requests at one instant.
    let gate = Barrier::new(BURST);
    let burst: Vec<u16> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..BURST)
            .map(|n| {
                let gate = &gate;
                scope.spawn(move || {
                    gate.wait();
                    let body = json!({"org": cp.org(), "username": "bob", "password": format!("burst guess {n}")});
                    send(
                        cp,
                        post("/v1/session", &body)
                            .bind(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1 + n as u8))),
                    )
                    .map(|r| r.status)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a burst client panicked".to_string())?
            })
            .collect::<Result<Vec<u16>>>()
    })?;
    let checked = burst.iter().filter(|&&s| s == 401).count();
    if let Some(odd) = burst.iter().find(|s| ![401, 429].contains(*s)) {
        return Err(format!("the burst got a {odd}: {burst:?}"));
    }
    if let Some(odd) = statuses.keys().find(|s| ![400, 401, 429].contains(*s)) {
        return Err(format!(
            "the flood got a {odd} (expected only 400, 401 and 429): {statuses:?}"
        ));
    }
    Ok(Flood {
        clients,
        seconds,
        statuses,
        idle_kib,
        peak_kib,
        after_kib,
        me,
        burst,
        checked,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn run(inputs: &Inputs<'_>, plan: &Plan) -> Result<Section> {
    let (clients, length) = if plan.smoke {
        (SMOKE_CLIENTS, SMOKE_FLOOD)
    } else {
        (CLIENTS, FLOOD)
    };
    let mut options = ControlPlaneOptions::new(inputs.cp_bin);
    options.admins = vec!["alice".into(), "bob".into(), "carol".into()];
    let cp = ControlPlane::start(&options)?;
    println!(
        "sign-in flood: {clients} addresses for {} s, then a burst of {BURST}",
        length.as_secs()
    );
    let f = measure(&cp, clients, length)?;
    drop(cp);

    let grew = mib(f.peak_kib.saturating_sub(f.idle_kib));
    let kept = mib(f.after_kib.saturating_sub(f.idle_kib));
    let p50 = 1000.0 * percentile_or_nan(&f.me, 50.0);
    let p99 = 1000.0 * percentile_or_nan(&f.me, 99.0);
    let answers: u64 = f.statuses.values().sum();
    println!(
        "  {answers} answers ({:?}); RSS {:.1} MiB idle, {:.1} MiB peak, {:.1} MiB after; \
         /v1/me p50 {p50:.2} ms p99 {p99:.2} ms ({} calls); burst: {} of {BURST} checked",
        f.statuses,
        mib(f.idle_kib),
        mib(f.peak_kib),
        mib(f.after_kib),
        f.me.len(),
        f.checked
    );

    let mut md = String::new();
    let _ = writeln!(
        md,
        "{} clients, each from its own loopback address (127.0.2.N), sent for {:.0} s \
         alternately a link accept with a made-up secret and a sign-in with a wrong \
         password (for one real account or a made-up username), as fast as the server answered. Meanwhile another \
         user's `GET /v1/me` was timed back to back, and the server's `VmRSS` read every \
         100 ms. Then {BURST} wrong passwords for a second account were sent at one instant \
         from {BURST} addresses.\n",
        f.clients, f.seconds
    );
    let _ = writeln!(md, "| Answer to the flood | Count |\n|---|---|");
    for (status, n) in &f.statuses {
        let what = match status {
            400 => "400 (no such link: refused on a read)",
            401 => "401 (a wrong password, checked)",
            429 => "429 (rate limit or sign-in throttle)",
            _ => "other",
        };
        let _ = writeln!(md, "| {what} | {n} |");
    }
    let _ = writeln!(
        md,
        "\nServer memory: {:.1} MiB idle, {:.1} MiB at most during the flood, {:.1} MiB 2 s \
         after it. `GET /v1/me` during the flood: p50 {p50:.2} ms, p99 {p99:.2} ms over {} \
         calls. The burst's answers: {:?}.",
        mib(f.idle_kib),
        mib(f.peak_kib),
        mib(f.after_kib),
        f.me.len(),
        f.burst
    );
    let decide = |ok: bool| (!plan.smoke).then_some(ok);
    let targets = vec![
        TargetRow {
            measure: format!(
                "Server RSS during a {:.0}-s flood of junk sign-ins and link accepts from {} clients",
                f.seconds, f.clients
            ),
            measured: format!("+{grew:.1} MiB over idle, +{kept:.1} MiB after"),
            target: "≤ +64 MiB over idle, back to idle after (≤ +16 MiB)".into(),
            met: decide(grew <= 64.0 && kept <= 16.0),
        },
        TargetRow {
            measure: "Another user's `/v1/me` during that flood".into(),
            measured: format!("p99 {p99:.2} ms"),
            target: "p99 ≤ 20 ms".into(),
            met: decide(p99 <= 20.0),
        },
        TargetRow {
            measure: format!("Wrong passwords checked in a burst of {BURST} against one account"),
            measured: f.checked.to_string(),
            target: format!("≤ the allowance ({ALLOWANCE})"),
            met: decide(f.checked <= ALLOWANCE),
        },
    ];
    Ok(Section {
        title: "Sign-in under attack".into(),
        body: md,
        targets,
    })
}
