//! The leaks part of `cargo xtask bench` (issue 26): leak to lockout, and the notices
//! people act on.
//!
//! One real control plane (`tessera serve`, SQLite) told where a secret scanner's keys
//! are (`--secret-scanning-keys-url`, a key made at run time and published on loopback by
//! `tessera_host_tests::scanner`) and allowed to deliver webhooks to loopback
//! (`--webhook-private-destinations`); two Envoys (the filter and its sync service, usage
//! reported with the filter's default flush interval) and one workerd (the edge worker,
//! the status list revalidated at its default period). Measured:
//!
//! - **scanner post → 401** at each edge: for each of N tokens in use, one thread per
//!   edge polls it (propagation's pollers) while the scanner posts it, signed; the sample
//!   is the first `401 revoked` minus the instant the post's answer (`true_positive`) was
//!   read;
//! - **first use from a new network → webhook**: a fresh token is used through Envoy 1
//!   from 127.0.0.1 (its owner's network, learnt without an event), then from another
//!   loopback /24 (127.0.K.1, the client bound to it: the filter reports the peer
//!   address); the sample is the arrival of the signed `token.used_from_new_network`
//!   webhook at a loopback receiver minus the instant that request was sent;
//! - **false positives**: the control plane stopped, its database opened in-process
//!   with `store::open`, and 10⁷ candidates (10⁴ in the smoke run) put through
//!   `service::leaks::ours` — the confirmation the scanner endpoint runs, in read
//!   transactions of up to 1,000 (a post's most) — half random strings matching the
//!   published pattern, half near-misses: real tokens with 1 to 16 characters of the
//!   header, payload or signature replaced ([`near_miss`]). Every candidate must match
//!   the pattern; the figure is how many would be labelled `true_positive`.
//!
//! Not measured yet (rows say so): rotation with a client switching mid-grace, the end of
//! grace at every edge, events lost across a SIGKILL (the host tests `rotation` and
//! `webhooks` check these without timing them).

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tessera_control_plane::crypto::MasterKey;
use tessera_control_plane::service::leaks::{self, Found, MAX_TOKENS_PER_REPORT};
use tessera_control_plane::service::{Ctx, Verifiers};
use tessera_control_plane::store::{self, DbLocation};
use tessera_control_plane::timefmt;
use tessera_core::token::{API_TOKEN_PATTERN, API_TOKEN_PREFIX};
use tessera_host_tests::scanner::Scanner;
use tessera_host_tests::webhook::{self, Receiver};
use tessera_host_tests::workerd::Workerd;
use tessera_host_tests::{ControlPlane, ControlPlaneOptions, EchoUpstream, Envoy, EnvoyOptions};

use super::propagation::{
    classify, data_plane_request, fmt_duration, load_average, poll_until_revoked, stats_row,
    wait_allowed, Seen,
};
use super::stats::percentile;
use super::{Inputs, Plan, Section, TargetRow};
use crate::tools::Result;

/// The Envoy cluster that reaches the control plane.
const CP_CLUSTER: &str = "tessera_control_plane";
/// Envoys, then workerds.
const ENVOYS: usize = 2;
const WORKERDS: usize = 1;
const EDGES: usize = ENVOYS + WORKERDS;
/// Scanner posts measured (full, smoke).
const POSTS: (usize, usize) = (20, 2);
/// New-network webhooks measured (full, smoke).
const NETWORKS: (usize, usize) = (20, 1);
/// Candidates put through the confirmation (full, smoke).
const CANDIDATES: (u64, u64) = (10_000_000, 10_000);
/// Rotations measured (full, smoke), and their grace in seconds.
const ROTATIONS: (usize, usize) = (5, 1);
const GRACE_SECS: (usize, usize) = (5, 3);
/// Events made before the SIGKILL (full, smoke).
const CRASH_EVENTS: (usize, usize) = (20, 3);
/// Tokens made for the near-misses (besides the posts' tokens).
const SOURCE_TOKENS: usize = 8;
/// The filter's staleness bound (never reached: the feed is live).
const MAX_STALENESS_SECS: u64 = 30;
/// A safety net for waits that are not measures.
const SAFETY_NET: Duration = Duration::from_secs(90);
/// Targets.
const ENVOY_TARGET: Duration = Duration::from_secs(2);
const ENVOY_AIM: Duration = Duration::from_millis(100);
const WORKER_TARGET: Duration = Duration::from_secs(3);
const WEBHOOK_TARGET: Duration = Duration::from_secs(30);

/// The base64url alphabet (RFC 4648 §5): the characters the published pattern allows in
/// each part of a token.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn edge_name(e: usize) -> String {
    if e < ENVOYS {
        format!("Envoy {}", e + 1)
    } else {
        format!("workerd {}", e - ENVOYS + 1)
    }
}

// ---------------------------------------------------------------------------------------
// Candidates

/// Where a near-miss is changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Region {
    /// The JOSE header (its key id, algorithm, type).
    Header,
    /// The claims.
    Payload,
    /// The signature.
    Signature,
    /// Any of the three.
    Anywhere,
}

impl Region {
    const ALL: [Region; 4] = [
        Region::Header,
        Region::Payload,
        Region::Signature,
        Region::Anywhere,
    ];
}

/// The byte ranges of a prefixed token's header, payload and signature that a near-miss
/// may change: everything but `tsr_`, the `eyJ` each of the first two parts starts with
/// (the pattern requires them) and the dots. `None` for text not of that shape.
pub(super) fn mutable_ranges(token: &str) -> Option<[Range<usize>; 3]> {
    let jws = token.strip_prefix(API_TOKEN_PREFIX)?;
    let mut parts = jws.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !h.starts_with("eyJ") || !p.starts_with("eyJ") || s.is_empty() {
        return None;
    }
    let h0 = API_TOKEN_PREFIX.len();
    let p0 = h0 + h.len() + 1;
    let s0 = p0 + p.len() + 1;
    let ranges = [h0 + 3..h0 + h.len(), p0 + 3..p0 + p.len(), s0..s0 + s.len()];
    ranges.iter().all(|r| !r.is_empty()).then_some(ranges)
}

/// `token` with `k` distinct characters of `region` each replaced by another base64url
/// character: prefix, `eyJ`s, dots and length kept, so the result still matches the
/// published pattern and differs from `token` in exactly `k` places (fewer when the
/// region is shorter than `k`). `None` for text not shaped like a prefixed token.
pub(super) fn near_miss(
    token: &str,
    region: Region,
    k: usize,
    rng: &mut impl Rng,
) -> Option<String> {
    let ranges = mutable_ranges(token)?;
    let chosen: &[Range<usize>] = match region {
        Region::Header => &ranges[0..1],
        Region::Payload => &ranges[1..2],
        Region::Signature => &ranges[2..3],
        Region::Anywhere => &ranges[..],
    };
    let room: usize = chosen.iter().map(|r| r.len()).sum();
    let mut bytes = token.as_bytes().to_vec();
    for mut i in rand::seq::index::sample(rng, room, k.min(room)) {
        // The i-th character of the chosen ranges, taken in order.
        let Some(at) = chosen.iter().find_map(|r| {
            if i < r.len() {
                Some(r.start + i)
            } else {
                i -= r.len();
                None
            }
        }) else {
            continue;
        };
        let old = bytes[at];
        bytes[at] = loop {
            let c = ALPHABET[usize::from(rng.gen::<u8>() & 63)];
            if c != old {
                break c;
            }
        };
    }
    String::from_utf8(bytes).ok()
}

/// How many characters a near-miss changes: 1 (half of them), 2 (a quarter), else 3–16.
fn mutation_count(rng: &mut impl Rng) -> usize {
    match rng.gen_range(0..4) {
        0 | 1 => 1,
        2 => 2,
        _ => rng.gen_range(3..=16),
    }
}

/// `len` random base64url characters: one random byte each, its low 6 bits picking one of
/// the 64 (uniform, as 64 divides 256).
fn random_part(rng: &mut impl Rng, len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + len, 0);
    rng.fill_bytes(&mut out[start..]);
    for b in &mut out[start..] {
        *b = ALPHABET[usize::from(*b & 63)];
    }
}

/// A random string matching the published pattern: `tsr_eyJ` and 1–120 characters, `.eyJ`
/// and 1–800, `.` and a signature of 86–342 characters (Ed25519 and P-256 signatures
/// encode to 86; RSA-2048 to 342).
pub(super) fn random_candidate(rng: &mut impl Rng) -> String {
    let (h, p, s) = (
        rng.gen_range(1..=120),
        rng.gen_range(1..=800),
        rng.gen_range(86..=342),
    );
    let mut out = Vec::with_capacity(API_TOKEN_PREFIX.len() + h + p + s + 8);
    out.extend_from_slice(API_TOKEN_PREFIX.as_bytes());
    out.extend_from_slice(b"eyJ");
    random_part(rng, h, &mut out);
    out.extend_from_slice(b".eyJ");
    random_part(rng, p, &mut out);
    out.push(b'.');
    random_part(rng, s, &mut out);
    // Only ASCII was pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// The published pattern, anchored (a candidate must be all of one match).
fn anchored_pattern() -> Result<regex::Regex> {
    regex::Regex::new(&format!("^(?:{API_TOKEN_PATTERN})$"))
        .map_err(|e| format!("leaks: the published pattern does not compile: {e}"))
}

/// What the false-positive run counted.
struct FpRun {
    candidates: u64,
    random: u64,
    /// Near-misses per region (in [`Region::ALL`]'s order).
    near: [u64; 4],
    /// Near-misses per number of characters changed: 1, 2, 3–16.
    near_by_count: [u64; 3],
    /// Candidates labelled `true_positive`.
    labelled: u64,
    examples: Vec<String>,
    seconds: f64,
    threads: usize,
    sources: usize,
    seed: u64,
}

/// One thread's share: `n` candidates, alternately random and near-miss, confirmed in
/// batches of up to [`MAX_TOKENS_PER_REPORT`], each in its own read transaction (as one
/// scanner post is), with this thread's own verifier cache.
#[allow(clippy::too_many_arguments)]
fn confirm_share(
    store: &dyn store::Store,
    base_url: &str,
    master: &MasterKey,
    sources: &[String],
    pattern: &regex::Regex,
    seed: u64,
    n: u64,
    done: &AtomicUsize,
) -> Result<FpRun> {
    let mut rng = StdRng::seed_from_u64(seed);
    let verifiers = Verifiers::new();
    let mut run = FpRun {
        candidates: 0,
        random: 0,
        near: [0; 4],
        near_by_count: [0; 3],
        labelled: 0,
        examples: Vec::new(),
        seconds: 0.0,
        threads: 1,
        sources: sources.len(),
        seed,
    };
    let mut left = n;
    while left > 0 {
        let size = left.min(MAX_TOKENS_PER_REPORT as u64);
        let mut found = Vec::with_capacity(size as usize);
        for _ in 0..size {
            let token = if run.candidates.is_multiple_of(2) {
                run.random += 1;
                random_candidate(&mut rng)
            } else {
                let region = Region::ALL[rng.gen_range(0..Region::ALL.len())];
                let k = mutation_count(&mut rng);
                let source = &sources[rng.gen_range(0..sources.len())];
                let made = near_miss(source, region, k, &mut rng)
                    .ok_or("leaks: a real token is not shaped as the pattern says")?;
                if made == *source {
                    return Err("leaks: a near-miss equal to its token".into());
                }
                if let Some(i) = Region::ALL.iter().position(|r| *r == region) {
                    run.near[i] += 1;
                }
                run.near_by_count[k.clamp(1, 3) - 1] += 1;
                made
            };
            if !pattern.is_match(&token) {
                return Err(format!(
                    "leaks: a candidate does not match the published pattern: {token}"
                ));
            }
            run.candidates += 1;
            found.push(Found {
                token,
                url: None,
                source: None,
            });
        }
        let ctx = Ctx::new(base_url, master, timefmt::now(), 1800);
        let ours = store
            .read(|tx| leaks::ours(tx, &ctx, &verifiers, &found))
            .map_err(|e| format!("leaks: confirming candidates: {e}"))?;
        for (f, ours) in found.iter().zip(ours) {
            if ours {
                run.labelled += 1;
                if run.examples.len() < 5 {
                    run.examples.push(f.token.clone());
                }
            }
        }
        left -= size;
        done.fetch_add(size as usize, Ordering::Relaxed);
    }
    Ok(run)
}

/// The false-positive run on the (stopped) control plane's database: the real tokens
/// must be confirmed, then `total` candidates over every core.
fn false_positives(cp: &mut ControlPlane, sources: &[String], total: u64) -> Result<FpRun> {
    cp.kill();
    let key_path = cp.log_path().with_file_name("master.key");
    let key_text = fs::read_to_string(&key_path)
        .map_err(|e| format!("reading the master key {}: {e}", key_path.display()))?;
    let master = MasterKey::parse(&key_text)?;
    let base_url = cp.url();
    let store = store::open(&DbLocation::Sqlite(cp.db_path().to_path_buf()))
        .map_err(|e| format!("leaks: opening the database: {e}"))?;
    let store: &dyn store::Store = store.as_ref();
    let pattern = anchored_pattern()?;
    // The path confirms what is ours: every real token, as issued.
    {
        let verifiers = Verifiers::new();
        let ctx = Ctx::new(&base_url, &master, timefmt::now(), 1800);
        let found: Vec<Found> = sources
            .iter()
            .map(|t| Found {
                token: t.clone(),
                url: None,
                source: None,
            })
            .collect();
        let ours = store
            .read(|tx| leaks::ours(tx, &ctx, &verifiers, &found))
            .map_err(|e| format!("leaks: confirming the real tokens: {e}"))?;
        if ours.iter().any(|o| !o) || sources.iter().any(|t| !pattern.is_match(t)) {
            return Err("leaks: a real token was not confirmed as ours, or does not match the published pattern".into());
        }
    }
    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(1);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    println!("leaks: {total} candidates on {threads} threads (seed {seed})");
    let done = AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    let started = Instant::now();
    let runs: Vec<Result<FpRun>> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = total / threads as u64 + u64::from((t as u64) < total % threads as u64);
                let (base_url, master, pattern, done) = (&base_url, &master, &pattern, &done);
                s.spawn(move || {
                    confirm_share(
                        store,
                        base_url,
                        master,
                        sources,
                        pattern,
                        seed.wrapping_add(t as u64),
                        share,
                        done,
                    )
                })
            })
            .collect();
        s.spawn(|| {
            let mut last = Instant::now();
            while !finished.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= Duration::from_secs(30) {
                    last = Instant::now();
                    let n = done.load(Ordering::Relaxed);
                    println!(
                        "  {n} / {total} candidates ({:.0} /s)",
                        n as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
        });
        let out = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("leaks: a confirming thread panicked".into()))
            })
            .collect();
        finished.store(true, Ordering::Relaxed);
        out
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut all = FpRun {
        candidates: 0,
        random: 0,
        near: [0; 4],
        near_by_count: [0; 3],
        labelled: 0,
        examples: Vec::new(),
        seconds,
        threads,
        sources: sources.len(),
        seed,
    };
    for r in runs {
        let r = r?;
        all.candidates += r.candidates;
        all.random += r.random;
        for i in 0..4 {
            all.near[i] += r.near[i];
        }
        for i in 0..3 {
            all.near_by_count[i] += r.near_by_count[i];
        }
        all.labelled += r.labelled;
        all.examples.extend(r.examples);
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------
// Scanner post → 401

/// One edge's view of one scanner post.
#[derive(Clone, Copy, Debug)]
struct LockoutSample {
    post: usize,
    edge: usize,
    /// First 401 minus the instant the post's answer was read (0 when before it).
    after_answer: Duration,
    before_answer: bool,
    /// The post's own duration.
    call: Duration,
    /// Between the last 200 and the first 401 at this edge.
    gap: Duration,
}

fn scanner_to_401(
    cp: &ControlPlane,
    scanner: &Scanner,
    addrs: &[SocketAddr],
    tokens: &[(String, String)],
) -> Result<Vec<LockoutSample>> {
    let mut samples = Vec::new();
    for (n, (id, jwt)) in tokens.iter().enumerate() {
        let request = data_plane_request(jwt);
        for (e, addr) in addrs.iter().enumerate() {
            if !matches!(classify(*addr, &request), Seen::Allow) {
                return Err(format!(
                    "leaks: before post {}, {} did not answer 200 for the token",
                    n + 1,
                    edge_name(e)
                ));
            }
        }
        let ready = AtomicUsize::new(0);
        let abort = AtomicBool::new(false);
        let (posted, polled) = thread::scope(|s| {
            let handles: Vec<_> = addrs
                .iter()
                .map(|addr| {
                    let (request, ready, abort) = (&request, &ready, &abort);
                    s.spawn(move || poll_until_revoked(*addr, request, ready, abort))
                })
                .collect();
            let wait = Instant::now();
            while ready.load(Ordering::SeqCst) < addrs.len() {
                if handles.iter().any(|h| h.is_finished()) || wait.elapsed() > SAFETY_NET {
                    abort.store(true, Ordering::SeqCst);
                    break;
                }
                thread::sleep(Duration::from_micros(200));
            }
            let posted = if abort.load(Ordering::SeqCst) {
                Err("a poller stopped before the post".to_owned())
            } else {
                let start = Instant::now();
                let answer = scanner.post(
                    cp.addr(),
                    &[(jwt, "https://github.com/octo/repo/blob/main/.env")],
                );
                let t0 = Instant::now();
                let checked = match answer {
                    Ok(r) if r.status == 200 => match r.json() {
                        Some(v) if v[0]["label"] == "true_positive" => Ok((start, t0)),
                        other => Err(format!("the post was labelled {other:?}")),
                    },
                    Ok(r) => Err(format!("the post was answered {}", r.summary())),
                    Err(e) => Err(format!("the post failed: {e}")),
                };
                if checked.is_err() {
                    abort.store(true, Ordering::SeqCst);
                }
                checked
            };
            let polled: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("a poller panicked".into())))
                .collect();
            (posted, polled)
        });
        let (start, t0) = posted.map_err(|e| format!("leaks: post {} (token {id}): {e}", n + 1))?;
        for (e, p) in polled.into_iter().enumerate() {
            let p = p.map_err(|why| format!("leaks: post {}, {}: {why}", n + 1, edge_name(e)))?;
            samples.push(LockoutSample {
                post: n,
                edge: e,
                after_answer: p.first_revoked.saturating_duration_since(t0),
                before_answer: p.first_revoked < t0,
                call: t0.duration_since(start),
                gap: p.first_revoked.duration_since(p.last_allow),
            });
        }
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------------------
// First use from a new network → webhook

/// One new network's webhook.
#[derive(Clone, Copy, Debug)]
struct NetworkSample {
    /// The request from the new network sent → the webhook read by the receiver.
    took: Duration,
}

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let since = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if since.elapsed() > SAFETY_NET {
            return Err(format!("leaks: {what} not within {SAFETY_NET:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn new_network_to_webhook(
    cp: &ControlPlane,
    envoy: SocketAddr,
    receiver: &Receiver,
    secret: &str,
    n: usize,
) -> Result<Vec<NetworkSample>> {
    let admin = cp.admin_token().to_owned();
    let mut samples = Vec::new();
    for i in 0..n {
        let (id, jwt) = cp
            .create_and_download(&admin, &format!("leaks-network-{i}"), &["read"])
            .map_err(|e| format!("leaks: token: {e}"))?;
        // Its owner's network: learnt (no event) once the usage report is in.
        wait_allowed(envoy, &jwt, SAFETY_NET).map_err(|e| format!("leaks: {e}"))?;
        until("the first network learnt", || {
            cp.api("GET", &format!("/v1/tokens/{id}/usage"), Some(&admin), None)
                .ok()
                .filter(|u| u["allowed"].as_i64() >= Some(1))
        })?;
        let octet = u8::try_from(20 + i % 200).unwrap_or(20);
        let from = Ipv4Addr::new(127, 0, octet, 1);
        let network = format!("127.0.{octet}.0/24");
        let sent = Instant::now();
        let r = data_plane_request(&jwt)
            .bind(IpAddr::V4(from))
            .send(envoy)
            .map_err(|e| format!("leaks: the request from {from}: {e}"))?;
        if r.status != 200 {
            return Err(format!("leaks: the request from {from}: {}", r.summary()));
        }
        let got = until("the new-network webhook", || {
            receiver.received().into_iter().find(|m| {
                m.body.contains("token.used_from_new_network")
                    && m.body.contains(&id)
                    && m.body.contains(&network)
            })
        })?;
        if !webhook::verifies(secret, &got) {
            return Err(format!(
                "leaks: a webhook whose signature does not verify: {got:?}"
            ));
        }
        samples.push(NetworkSample {
            took: got.at.saturating_duration_since(sent),
        });
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------------------
// Rotation with a client switching mid-grace

/// What the rotations measured.
struct RotationRun {
    rotations: usize,
    grace_secs: u64,
    /// Requests the client sent, and those that did not reach the origin.
    sent: u64,
    failed: Vec<String>,
    /// Per edge and rotation: the first `401 rotated` minus the rotation's end
    /// (`ends_at`, whole seconds), in seconds (negative: before it).
    first_refusal: Vec<(usize, f64)>,
    /// Per edge and rotation: the last 200 for the old token minus `ends_at`, seconds.
    last_allow: Vec<(usize, f64)>,
}

/// `n` rotations with a grace of `grace_secs`: a client sends requests round robin to
/// every edge with the token it holds, and switches to the successor once every edge
/// accepts it (those probes are the successor's first uses: the grace starts); one
/// poller per edge sends the old token until it is refused with `rotated`.
fn rotations(
    cp: &ControlPlane,
    addrs: &[SocketAddr],
    n: usize,
    grace_secs: u64,
) -> Result<RotationRun> {
    let admin = cp.admin_token().to_owned();
    let mut run = RotationRun {
        rotations: n,
        grace_secs,
        sent: 0,
        failed: Vec::new(),
        first_refusal: Vec::new(),
        last_allow: Vec::new(),
    };
    for i in 0..n {
        let (old_id, old) = cp
            .create_and_download(&admin, &format!("leaks-rotation-{i}"), &["read"])
            .map_err(|e| format!("leaks: token: {e}"))?;
        for addr in addrs {
            wait_allowed(*addr, &old, SAFETY_NET).map_err(|e| format!("leaks: {e}"))?;
        }
        // Instants to wall-clock seconds.
        let (inst0, wall0) = (Instant::now(), SystemTime::now());
        let wall = |at: Instant| {
            wall0
                .checked_add(at.saturating_duration_since(inst0))
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let current = std::sync::Mutex::new(old.clone());
        let stop = AtomicBool::new(false);
        let abort = AtomicBool::new(false);
        let ready = AtomicUsize::new(0);
        let sent = std::sync::atomic::AtomicU64::new(0);
        let failed = std::sync::Mutex::new(Vec::<String>::new());
        let old_request = data_plane_request(&old);
        let limit = Duration::from_secs(grace_secs) + SAFETY_NET;
        let (rotated, polled) = thread::scope(|s| {
            let client = s.spawn(|| {
                let mut k = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let token = current.lock().map(|t| t.clone()).unwrap_or_default();
                    let addr = addrs[k % addrs.len()];
                    k += 1;
                    let bad = match data_plane_request(&token).send(addr) {
                        Ok(r) if r.status == 200 => None,
                        Ok(r) => Some(format!("{addr}: {}", r.summary())),
                        Err(e) => Some(format!("{addr}: request failed: {e}")),
                    };
                    sent.fetch_add(1, Ordering::SeqCst);
                    if let Some(b) = bad {
                        if let Ok(mut f) = failed.lock() {
                            f.push(b);
                        }
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            });
            let pollers: Vec<_> = addrs
                .iter()
                .map(|addr| {
                    let (request, ready, abort) = (&old_request, &ready, &abort);
                    s.spawn(move || {
                        super::propagation::poll_until_refused(
                            *addr, request, "rotated", limit, ready, abort,
                        )
                    })
                })
                .collect();
            let rotated = (|| -> Result<String> {
                let wait = Instant::now();
                while ready.load(Ordering::SeqCst) < addrs.len() {
                    if pollers.iter().any(|h| h.is_finished()) || wait.elapsed() > SAFETY_NET {
                        return Err("a poller stopped before the rotation".into());
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                let r = cp
                    .api(
                        "POST",
                        &format!("/v1/tokens/{old_id}/rotate"),
                        Some(&admin),
                        Some(&json!({"grace_secs": grace_secs})),
                    )
                    .map_err(|e| format!("rotate: {e}"))?;
                let succ = r["successor"]["id"]
                    .as_str()
                    .ok_or_else(|| format!("rotate answered {r}"))?
                    .to_owned();
                let new = cp
                    .download(&admin, &succ)
                    .map_err(|e| format!("download the successor: {e}"))?;
                for addr in addrs {
                    wait_allowed(*addr, &new, SAFETY_NET)?;
                }
                if let Ok(mut c) = current.lock() {
                    *c = new;
                }
                Ok(succ)
            })();
            if rotated.is_err() {
                abort.store(true, Ordering::SeqCst);
            }
            let polled: Vec<_> = pollers
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("a poller panicked".into())))
                .collect();
            // The client goes on with the successor a little after the end.
            thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::SeqCst);
            let _ = client.join();
            (rotated, polled)
        });
        rotated.map_err(|e| format!("leaks: rotation {}: {e}", i + 1))?;
        let rotation = cp
            .api(
                "GET",
                &format!("/v1/tokens/{old_id}/rotation"),
                Some(&admin),
                None,
            )
            .map_err(|e| format!("leaks: rotation {}: {e}", i + 1))?;
        let ends_at = rotation["ends_at"]
            .as_str()
            .and_then(|t| timefmt::parse(t).ok())
            .ok_or_else(|| format!("leaks: rotation {} has no end: {rotation}", i + 1))?;
        for (e, p) in polled.into_iter().enumerate() {
            let p =
                p.map_err(|why| format!("leaks: rotation {}, {}: {why}", i + 1, edge_name(e)))?;
            run.first_refusal
                .push((e, wall(p.first_revoked) - ends_at as f64));
            run.last_allow
                .push((e, wall(p.last_allow) - ends_at as f64));
        }
        run.sent += sent.load(Ordering::SeqCst);
        run.failed.extend(failed.into_inner().unwrap_or_default());
    }
    Ok(run)
}

// ---------------------------------------------------------------------------------------
// Events across a SIGKILL

/// What the crash measured.
struct CrashRun {
    events: usize,
    /// Delivered before the kill (as far as the receiver saw), and in all.
    before_kill: usize,
    delivered: usize,
    /// From the restart's end to the last event's arrival.
    after_restart: Duration,
}

/// `events` revokes in a row (each writes its webhook's outbox row in its own
/// transaction), the control plane SIGKILLed at once after the last answer and started
/// again on the same database: how many of the events the receiver gets (a safety net
/// bounds the wait; a missing one is counted, not waited for forever).
fn events_across_sigkill(
    cp: &mut ControlPlane,
    receiver: &Receiver,
    events: usize,
) -> Result<CrashRun> {
    let admin = cp.admin_token().to_owned();
    let hook = cp
        .api(
            "POST",
            &format!("/v1/orgs/{}/webhooks", cp.org()),
            Some(&admin),
            Some(
                &json!({"url": format!("http://{}/revoked", receiver.addr()),
                         "events": ["token.revoked"]}),
            ),
        )
        .map_err(|e| format!("leaks: creating the webhook: {e}"))?;
    let secret = hook["secret"]
        .as_str()
        .ok_or("leaks: no webhook secret")?
        .to_owned();
    let mut ids = Vec::with_capacity(events);
    for i in 0..events {
        ids.push(
            cp.create_and_download(&admin, &format!("leaks-crash-{i}"), &["read"])
                .map_err(|e| format!("leaks: token: {e}"))?
                .0,
        );
    }
    for id in &ids {
        cp.revoke(&admin, id)
            .map_err(|e| format!("leaks: revoke: {e}"))?;
    }
    cp.kill();
    let arrived = |id: &str| {
        receiver.received().into_iter().any(|m| {
            m.body.contains("token.revoked")
                && m.body.contains(id)
                && webhook::verifies(&secret, &m)
        })
    };
    let before_kill = ids.iter().filter(|id| arrived(id)).count();
    cp.restart().map_err(|e| format!("leaks: restart: {e}"))?;
    let restarted = Instant::now();
    let since = Instant::now();
    while ids.iter().any(|id| !arrived(id)) && since.elapsed() < SAFETY_NET {
        thread::sleep(Duration::from_millis(20));
    }
    Ok(CrashRun {
        events,
        before_kill,
        delivered: ids.iter().filter(|id| arrived(id)).count(),
        after_restart: restarted.elapsed(),
    })
}

// ---------------------------------------------------------------------------------------
// The part

pub fn run(inputs: &Inputs<'_>, plan: &Plan, dir: &Path) -> Result<Section> {
    let pick = |(full, smoke)| if plan.smoke { smoke } else { full };
    let (posts, networks, candidates) = (
        pick(POSTS),
        pick(NETWORKS),
        if plan.smoke {
            CANDIDATES.1
        } else {
            CANDIDATES.0
        },
    );
    let load_before = load_average();
    let scanner = Scanner::start().map_err(|e| format!("leaks: scanner key server: {e}"))?;
    let mut options = ControlPlaneOptions::new(inputs.cp_bin);
    options.serve_args = vec![
        "--secret-scanning-keys-url".into(),
        scanner.keys_url(),
        "--webhook-private-destinations".into(),
    ];
    println!("leaks: starting the control plane, {ENVOYS} Envoys and {WORKERDS} workerd");
    let mut cp = ControlPlane::start(&options).map_err(|e| format!("leaks: control plane: {e}"))?;
    let admin = cp.admin_token().to_owned();
    let receiver = Receiver::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("leaks: webhook receiver: {e}"))?;
    let hook = cp
        .api(
            "POST",
            &format!("/v1/orgs/{}/webhooks", cp.org()),
            Some(&admin),
            Some(&json!({"url": format!("http://{}/hooks", receiver.addr()),
                         "events": ["token.used_from_new_network"]})),
        )
        .map_err(|e| format!("leaks: creating the webhook: {e}"))?;
    let secret = hook["secret"]
        .as_str()
        .ok_or("leaks: no webhook secret")?
        .to_owned();
    let edge_secret = cp
        .edge_credential(&admin, "leaks-fleet")
        .map_err(|e| format!("leaks: edge credential: {e}"))?;

    let mut usage = cp.usage_config(CP_CLUSTER, &edge_secret, 100_000);
    // The filter's default flush interval, not the harness's 200 ms.
    if let Some(u) = usage.as_object_mut() {
        u.remove("flush_interval_ms");
    }
    let filter = cp.filter_config("closed", MAX_STALENESS_SECS, Some(usage));
    let mut envoy_options = EnvoyOptions::new(inputs.envoy)
        .filter(inputs.filter_wasm, &filter)
        .cluster(CP_CLUSTER, cp.addr())
        .sync_service(&cp.sync_service_config(CP_CLUSTER, 20))
        .concurrency(1);
    envoy_options.log_level = "warn".into();
    let envoys: Vec<Envoy> = (0..ENVOYS)
        .map(|n| Envoy::start(&envoy_options).map_err(|e| format!("leaks: Envoy {}: {e}", n + 1)))
        .collect::<Result<_>>()?;
    let origin = EchoUpstream::start().map_err(|e| format!("leaks: origin: {e}"))?;
    let worker_options = super::propagation::synced_worker(inputs, &cp, origin.addr());
    let workers: Vec<Workerd> = (0..WORKERDS)
        .map(|n| {
            Workerd::start(&worker_options).map_err(|e| format!("leaks: workerd {}: {e}", n + 1))
        })
        .collect::<Result<_>>()?;
    let addrs: Vec<SocketAddr> = envoys
        .iter()
        .map(Envoy::addr)
        .chain(workers.iter().map(Workerd::addr))
        .collect();

    // The posts' tokens, in use at every edge.
    let mut tokens = Vec::with_capacity(posts);
    for i in 0..posts {
        tokens.push(
            cp.create_and_download(&admin, &format!("leaks-post-{i}"), &["read"])
                .map_err(|e| format!("leaks: token {i}: {e}"))?,
        );
    }
    for addr in &addrs {
        for (_, jwt) in &tokens {
            wait_allowed(*addr, jwt, SAFETY_NET).map_err(|e| format!("leaks: {e}"))?;
        }
    }
    println!("leaks: {posts} scanner posts, each polled at {EDGES} edges");
    let lockouts = scanner_to_401(&cp, &scanner, &addrs, &tokens)?;
    println!("leaks: {networks} first uses from a new network");
    let nets = new_network_to_webhook(&cp, envoys[0].addr(), &receiver, &secret, networks)?;
    let (rotation_count, grace) = (pick(ROTATIONS), pick(GRACE_SECS));
    println!("leaks: {rotation_count} rotations with a {grace} s grace");
    let rotated = rotations(&cp, &addrs, rotation_count, grace as u64)?;
    drop(workers);
    drop(envoys);
    drop(origin);
    let crash_events = pick(CRASH_EVENTS);
    println!("leaks: {crash_events} events, then a SIGKILL");
    let crash = events_across_sigkill(&mut cp, &receiver, crash_events)?;

    // Real tokens for the near-misses: the posts' (revoked: still ours) and fresh ones.
    let mut sources: Vec<String> = tokens.iter().map(|(_, jwt)| jwt.clone()).collect();
    for i in 0..SOURCE_TOKENS {
        let scopes: &[&str] = if i % 2 == 0 {
            &["read"]
        } else {
            &["read", "write"]
        };
        sources.push(
            cp.create_and_download(&admin, &format!("leaks-source-{i}"), scopes)
                .map_err(|e| format!("leaks: token: {e}"))?
                .1,
        );
    }
    let fp = false_positives(&mut cp, &sources, candidates)?;
    drop(cp);
    let load_after = load_average();
    write_samples(dir, &lockouts, &nets)?;
    println!(
        "leaks: {} of {} candidates labelled true_positive in {:.1} s",
        fp.labelled, fp.candidates, fp.seconds
    );
    if fp.labelled > 0 {
        return Err(format!(
            "leaks: {} false positives, e.g. {:?}",
            fp.labelled, fp.examples
        ));
    }
    let measured = Measured {
        lockouts,
        nets,
        fp,
        rotated,
        crash,
    };
    Ok(report(
        inputs,
        plan,
        dir,
        &measured,
        (&load_before, &load_after),
    ))
}

fn write_samples(dir: &Path, lockouts: &[LockoutSample], nets: &[NetworkSample]) -> Result<()> {
    let mut csv = String::from("post,edge,after_answer_us,before_answer,post_call_us,gap_us\n");
    for s in lockouts {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{}",
            s.post + 1,
            edge_name(s.edge),
            s.after_answer.as_micros(),
            s.before_answer,
            s.call.as_micros(),
            s.gap.as_micros()
        );
    }
    let path = dir.join("lockout.csv");
    fs::write(&path, csv).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let mut csv = String::from("sample,request_to_webhook_us\n");
    for (i, s) in nets.iter().enumerate() {
        let _ = writeln!(csv, "{},{}", i + 1, s.took.as_micros());
    }
    let path = dir.join("new-network.csv");
    fs::write(&path, csv).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Signed seconds: `+0.184 s`, `-0.020 s`; `—` when not a finite number.
fn fmt_signed(secs: f64) -> String {
    if secs.is_finite() {
        format!("{secs:+.3} s")
    } else {
        "—".into()
    }
}

/// [`super::control_plane::count`] for the u64 counters here.
fn thousands(n: u64) -> String {
    super::control_plane::count(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Everything the part measured.
struct Measured {
    lockouts: Vec<LockoutSample>,
    nets: Vec<NetworkSample>,
    fp: FpRun,
    rotated: RotationRun,
    crash: CrashRun,
}

fn report(
    inputs: &Inputs<'_>,
    plan: &Plan,
    dir: &Path,
    m: &Measured,
    load: (&str, &str),
) -> Section {
    let (lockouts, nets, fp, rot, crash) = (&m.lockouts, &m.nets, &m.fp, &m.rotated, &m.crash);
    let rel = |p: &Path| {
        p.strip_prefix(inputs.root)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let of = |envoy: bool| -> Vec<Duration> {
        lockouts
            .iter()
            .filter(|s| (s.edge < ENVOYS) == envoy)
            .map(|s| s.after_answer)
            .collect()
    };
    let (envoy_all, worker_all) = (of(true), of(false));
    let calls: Vec<Duration> = lockouts
        .iter()
        .filter(|s| s.edge == 0)
        .map(|s| s.call)
        .collect();
    let gaps: Vec<Duration> = lockouts.iter().map(|s| s.gap).collect();
    let early = lockouts.iter().filter(|s| s.before_answer).count();
    let took: Vec<Duration> = nets.iter().map(|s| s.took).collect();
    let build = if inputs
        .cp_bin
        .components()
        .any(|c| c.as_os_str() == "release")
    {
        "release build"
    } else {
        "debug build (smoke run)"
    };
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let rate = fp.candidates as f64 / fp.seconds.max(1e-9);
    let posts = lockouts.iter().filter(|s| s.edge == 0).count();

    let mut md = String::new();
    let _ = writeln!(md, "### Method\n");
    let _ = writeln!(
        md,
        "- One control plane (`{}`, {build}, `tessera serve` on SQLite, loopback) started \
         with `--secret-scanning-keys-url` pointing at a loopback server that publishes, \
         in GitHub's key-document format, a P-256 key made at run time \
         (`tessera_host_tests::scanner`), and with `--webhook-private-destinations` (the \
         webhook receiver is on loopback). {ENVOYS} Envoy processes (`--concurrency 1`, \
         the filter fail-closed with keys and lists only from its sync service, long \
         polls of 20 s; usage reported to the control plane at the filter's default \
         flush interval, 1 s) and {WORKERDS} workerd (the edge worker, keys from the \
         JWKS, the status list revalidated in the background at its default period). \
         The machine has {cores} logical cores, shared by all of it.\n\
         - **Scanner post → 401**: {posts} tokens, created and downloaded up front, each \
         answered 200 at every edge first. For each in turn, one thread per edge polls \
         it (`GET /api/orders`, a fresh connection per request, the pollers of the \
         propagation part) and, once each has had a 200, the scanner POSTs it to \
         `/v1/secret-scanning/github`, signed over the body; the answer must label it \
         `true_positive`. The sample is the first `401 revoked` at that edge minus the \
         instant the post's answer was read (0 when it came first: {early} of {} \
         samples). The post itself took {} at the median (the key document is fetched \
         once and cached).\n\
         - **First use from a new network → webhook**: a webhook for \
         `token.used_from_new_network` points at a loopback receiver. {} times: a fresh \
         token is used through Envoy 1 from 127.0.0.1 (the first network a token is used \
         from is its owner's: learnt without an event; the bench waits until the usage \
         report is in), then sent once from 127.0.K.1, another /24 (the client binds that \
         address; the filter reports the peer address). The sample is the arrival of the \
         webhook naming that token and network (its Standard Webhooks signature checked \
         with the `hmac` crate the control plane signs with) minus the instant that \
         request was sent: the filter's flush (≤ 1 s), the usage report's write, the \
         delivery worker's next look at the outbox (every second) and the POST.\n\
         - **False positives**: the control plane stopped, its database opened in-process \
         (`store::open`) and {} candidates put through `service::leaks::ours`, the \
         confirmation `POST /v1/secret-scanning/github` and `POST /v1/leaks` run before \
         labelling (`true_positive` only for a string whose signature, `typ`, `iss`, \
         `aud` and lifetime verify against the org's keys), in read transactions of up \
         to {MAX_TOKENS_PER_REPORT} candidates (one post's most), {} threads each with \
         its own verifier cache. Half ({}) are random strings matching the published \
         pattern (`tsr_eyJ` + 1–120 base64url characters, `.eyJ` + 1–800, `.` + a \
         signature of 86–342); half are near-misses of {} real tokens of the org: 1 \
         (half of them), 2 (a quarter) or 3–16 characters replaced by other base64url \
         characters in the header ({}), the payload ({}), the signature ({}) or anywhere \
         ({}), the prefix, the `eyJ`s and the dots kept. Every candidate is checked \
         against the published pattern (`{API_TOKEN_PATTERN}`), and every real token \
         must first be confirmed as ours. Seed {} (`rand`'s `StdRng`). Near-misses by \
         characters changed: {} with 1, {} with 2, {} with 3–16.\n\
         - **Rotation**: {} times, a fresh token in use at every edge; a client sends \
         requests round robin to the {EDGES} edges (one every 10 ms, each must reach the \
         origin) with the token it holds, and one poller per edge sends the old token in \
         a tight loop. The token is rotated with a {} s grace (`POST \
         /v1/tokens/<id>/rotate`), the successor downloaded and sent to every edge until \
         each accepts it (its first uses, reported by the Envoys' usage reports: the grace \
         starts), then the client switches to it. Each poller stops at its first `401 \
         rotated`; the sample is that arrival (wall clock) minus the rotation's `ends_at` \
         (whole seconds, as the control plane keeps it; it stops a due rotation within \
         200 ms). The client goes on 300 ms after the last poller stopped.\n\
         - **Events across a SIGKILL**: a second webhook (`token.revoked`) at the same \
         receiver; {} tokens revoked one after the other through the API (each outbox row \
         is written in its revoke's transaction), the control plane SIGKILLed right after \
         the last answer and started again on the same database; an event is delivered \
         when the receiver has a signed message naming its token ({} had arrived before the \
         kill). Waited for at most {} s.\n\
         - One run, nearest-rank percentiles (`bench::stats`). Load average {} before \
         the part and {} after it.\n",
        rel(inputs.cp_bin),
        lockouts.len(),
        percentile(&calls, 50.0).map_or("—".into(), fmt_duration),
        nets.len(),
        thousands(fp.candidates),
        fp.threads,
        thousands(fp.random),
        fp.sources,
        thousands(fp.near[0]),
        thousands(fp.near[1]),
        thousands(fp.near[2]),
        thousands(fp.near[3]),
        fp.seed,
        thousands(fp.near_by_count[0]),
        thousands(fp.near_by_count[1]),
        thousands(fp.near_by_count[2]),
        rot.rotations,
        rot.grace_secs,
        crash.events,
        crash.before_kill,
        SAFETY_NET.as_secs(),
        load.0,
        load.1,
    );
    let _ = writeln!(md, "### Commands\n");
    let _ = writeln!(
        md,
        "```sh\ncargo xtask bench --only leaks           # this part alone: \
         target/bench/BENCHMARKS-partial.md\n\
         cargo xtask bench --only leaks --smoke   # {} posts, {} webhook, {} candidates; \
         no target asserted\n# raw samples: {d}/lockout.csv, {d}/new-network.csv\n```\n",
        POSTS.1,
        NETWORKS.1,
        thousands(CANDIDATES.1),
        d = rel(dir),
    );
    let _ = writeln!(md, "### Results\n");
    let _ = writeln!(md, "| measure | samples | p50 | p90 | p99 | max |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "{}",
        stats_row(
            &format!("**scanner post answered → first 401, {ENVOYS} Envoys**"),
            &envoy_all
        )
    );
    for e in 0..EDGES {
        let one: Vec<Duration> = lockouts
            .iter()
            .filter(|s| s.edge == e)
            .map(|s| s.after_answer)
            .collect();
        if e == ENVOYS {
            let _ = writeln!(
                md,
                "{}",
                stats_row(
                    &format!("**scanner post answered → first 401, {WORKERDS} workerd**"),
                    &worker_all
                )
            );
        }
        let _ = writeln!(
            md,
            "{}",
            stats_row(&format!("{} alone", edge_name(e)), &one)
        );
    }
    let _ = writeln!(
        md,
        "{}",
        stats_row("the scanner post's own duration", &calls)
    );
    let _ = writeln!(
        md,
        "{}",
        stats_row("last 200 → first 401 at one edge (resolution)", &gaps)
    );
    let _ = writeln!(
        md,
        "{}",
        stats_row("**first use from a new /24 → webhook received**", &took)
    );
    let _ = writeln!(
        md,
        "\nFalse positives: **{}** of {} candidates labelled `true_positive` ({} random, {} \
         near-misses), confirmed in {:.1} s ({:.0} candidates/s on {} threads).",
        fp.labelled,
        thousands(fp.candidates),
        thousands(fp.random),
        thousands(fp.candidates - fp.random),
        fp.seconds,
        rate,
        fp.threads
    );
    let _ = writeln!(
        md,
        "\nRotation ({} rotations, grace {} s): the client sent {} requests, {} failed{}. \
         Per edge, the first `401 rotated` and the last 200 for the old token, relative to \
         the rotation's `ends_at` (negative: before it):\n",
        rot.rotations,
        rot.grace_secs,
        thousands(rot.sent),
        rot.failed.len(),
        rot.failed
            .first()
            .map_or(String::new(), |f| format!(" (e.g. {f})")),
    );
    let _ = writeln!(
        md,
        "| edge | rotations | first 401 − deadline: least | median | most | last 200 − deadline: most |\n|---|---:|---:|---:|---:|---:|"
    );
    for e in 0..EDGES {
        let first: Vec<f64> = rot
            .first_refusal
            .iter()
            .filter(|(x, _)| *x == e)
            .map(|(_, d)| *d)
            .collect();
        let last: Vec<f64> = rot
            .last_allow
            .iter()
            .filter(|(x, _)| *x == e)
            .map(|(_, d)| *d)
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            edge_name(e),
            first.len(),
            fmt_signed(first.iter().copied().fold(f64::INFINITY, f64::min)),
            fmt_signed(super::stats::median(&first)),
            fmt_signed(first.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            fmt_signed(last.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        );
    }
    let _ = writeln!(
        md,
        "\nEvents across a SIGKILL: {} of {} delivered ({} before the kill), the last \
         {} after the restart.",
        crash.delivered,
        crash.events,
        crash.before_kill,
        fmt_duration(crash.after_restart)
    );

    let decided = |ok: bool| (!plan.smoke).then_some(ok);
    let refusals: Vec<f64> = rot.first_refusal.iter().map(|(_, d)| *d).collect();
    let earliest = refusals.iter().copied().fold(f64::INFINITY, f64::min);
    let latest = refusals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let p = |v: &[Duration], pct| percentile(v, pct).unwrap_or(Duration::MAX);
    let full = !plan.smoke && fp.candidates >= CANDIDATES.0;
    let targets = vec![
        TargetRow {
            measure: "Scanner post → 401 at every Envoy (p99, 2 Envoys)".into(),
            measured: percentile(&envoy_all, 99.0).map_or("—".into(), fmt_duration),
            target: format!(
                "≤ {} (aim: ≤ {})",
                fmt_duration(ENVOY_TARGET),
                fmt_duration(ENVOY_AIM)
            ),
            met: decided(p(&envoy_all, 99.0) <= ENVOY_TARGET),
        },
        TargetRow {
            measure: "Scanner post → 401 at every worker (p99, workerd)".into(),
            measured: percentile(&worker_all, 99.0).map_or("—".into(), fmt_duration),
            target: format!("≤ {}", fmt_duration(WORKER_TARGET)),
            met: decided(p(&worker_all, 99.0) <= WORKER_TARGET),
        },
        TargetRow {
            measure:
                "False positives among random and near-miss strings (prefix kept, body mutated)"
                    .into(),
            measured: format!("{} of {}", fp.labelled, thousands(fp.candidates)),
            target: format!("0 of {}", thousands(CANDIDATES.0)),
            met: full.then_some(fp.labelled == 0),
        },
        TargetRow {
            measure: "First use from a new network → webhook received (p95)".into(),
            measured: percentile(&took, 95.0).map_or("—".into(), fmt_duration),
            target: format!("≤ {}", fmt_duration(WEBHOOK_TARGET)),
            met: decided(p(&took, 95.0) <= WEBHOOK_TARGET),
        },
        TargetRow {
            measure: format!(
                "Rotation with a client switching mid-grace: failed requests ({} rotations)",
                rot.rotations
            ),
            measured: format!("{} of {}", rot.failed.len(), thousands(rot.sent)),
            target: "0".into(),
            met: Some(rot.failed.is_empty()),
        },
        TargetRow {
            measure: "End of grace enforced at every edge: first 401 `rotated` − deadline".into(),
            measured: if refusals.is_empty() {
                "—".into()
            } else {
                format!("{} to {}", fmt_signed(earliest), fmt_signed(latest))
            },
            target: "within 1 s of the deadline".into(),
            met: decided(!refusals.is_empty() && earliest >= -1.0 && latest <= 1.0),
        },
        TargetRow {
            measure: "Events lost across a control-plane SIGKILL".into(),
            measured: format!("{} of {}", crash.events - crash.delivered, crash.events),
            target: "0".into(),
            met: Some(crash.delivered == crash.events),
        },
    ];
    Section {
        title: "Leak to lockout and notifications (issue 26)".into(),
        body: md,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token shaped as the control plane issues them (what is signed does not matter
    /// here).
    fn token() -> String {
        format!(
            "{API_TOKEN_PREFIX}eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1MSJ9.{}",
            "A".repeat(86)
        )
    }

    #[test]
    fn near_misses_change_k_characters_of_their_region_and_keep_the_pattern() {
        let pattern = anchored_pattern().expect("pattern");
        let t = token();
        assert!(pattern.is_match(&t));
        let ranges = mutable_ranges(&t).expect("shaped");
        let mut rng = StdRng::seed_from_u64(7);
        for region in Region::ALL {
            for k in [1, 2, 5, 16] {
                let m = near_miss(&t, region, k, &mut rng).expect("near-miss");
                assert_eq!(m.len(), t.len());
                assert!(pattern.is_match(&m), "{m}");
                let changed: Vec<usize> = t
                    .bytes()
                    .zip(m.bytes())
                    .enumerate()
                    .filter(|(_, (a, b))| a != b)
                    .map(|(i, _)| i)
                    .collect();
                let room = match region {
                    Region::Header => ranges[0].len(),
                    Region::Payload => ranges[1].len(),
                    Region::Signature => ranges[2].len(),
                    Region::Anywhere => ranges.iter().map(|r| r.len()).sum(),
                };
                assert_eq!(changed.len(), k.min(room), "{region:?} {k}: {m}");
                let inside = |i: &usize| match region {
                    Region::Header => ranges[0].contains(i),
                    Region::Payload => ranges[1].contains(i),
                    Region::Signature => ranges[2].contains(i),
                    Region::Anywhere => ranges.iter().any(|r| r.contains(i)),
                };
                assert!(changed.iter().all(inside), "{region:?}: {changed:?}");
                assert!(m.starts_with("tsr_eyJ"));
            }
        }
        // A region shorter than k: every character of it changes.
        let short = format!("{API_TOKEN_PREFIX}eyJa.eyJb.{}", "B".repeat(86));
        let m = near_miss(&short, Region::Header, 5, &mut rng).expect("near-miss");
        assert_ne!(m, short);
        assert_eq!(&m[..7], "tsr_eyJ");
        assert_eq!(&m[8..], &short[8..]);
    }

    #[test]
    fn text_not_shaped_as_a_token_has_no_near_miss() {
        let mut rng = StdRng::seed_from_u64(1);
        for bad in [
            "eyJa.eyJb.sig",
            "tsr_abc.eyJb.sig",
            "tsr_eyJa.b.sig",
            "tsr_eyJa.eyJb",
            "tsr_eyJa.eyJb.",
            "tsr_eyJa.eyJb.c.d",
            "tsr_eyJ.eyJb.c",
        ] {
            assert!(
                near_miss(bad, Region::Anywhere, 1, &mut rng).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn random_candidates_match_the_published_pattern() {
        let pattern = anchored_pattern().expect("pattern");
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..2_000 {
            let c = random_candidate(&mut rng);
            assert!(pattern.is_match(&c), "{c}");
        }
    }

    #[test]
    fn mutation_counts_stay_within_1_to_16() {
        let mut rng = StdRng::seed_from_u64(5);
        let counts: Vec<usize> = (0..10_000).map(|_| mutation_count(&mut rng)).collect();
        assert!(counts.iter().all(|k| (1..=16).contains(k)));
        let ones = counts.iter().filter(|k| **k == 1).count();
        assert!((4_000..6_000).contains(&ones), "{ones}");
    }
}
