//! The control-plane part of `cargo xtask bench` (issue 6, "Control plane"): tokens
//! created and downloaded per second, search and CSV export over 100,000 tokens, and usage
//! events ingested per second, all against a real `tessera serve` on loopback.
//!
//! The order matters and is fixed:
//!
//! 1. start the control plane (`tessera_host_tests::ControlPlane`: `admin gen-master-key`,
//!    one `admin bootstrap` per admin, `serve`), with one admin per concurrent client;
//! 2. stop it and seed the database to exactly [`Sizes::tokens`] tokens with the control
//!    plane's own library (`service::create_user`, `create_token`, `download`, `disable`,
//!    `revoke`: the rows, status-list entries and audit entries the API writes), in a few
//!    large transactions, then start it again on the same database and port. Creating
//!    100,000 tokens over HTTP would cost one fsync'd commit each (see the create figures);
//! 3. time searches (`GET /v1/tokens`), a walk over every page and the CSV export
//!    (`GET /v1/tokens.csv`) while the org holds exactly that many tokens — the export
//!    streams every row;
//! 4. time create + download pairs (`POST /v1/tokens`, `POST /v1/tokens/{id}/download`)
//!    with 1 and N concurrent clients, then the cost of the API verifier's rebuild after a
//!    status-list change (`GET /v1/me` right after a download, and again);
//! 5. time usage ingestion (`POST /v1/usage`, batches of 500) with 1 and M concurrent
//!    edges, then count the authentication log through the API.
//!
//! Every answer is checked (status, ids, row counts, totals); the smoke run does the same
//! with small counts and no timing claims.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_control_plane::crypto::MasterKey;
use tessera_control_plane::model::Role;
use tessera_control_plane::policy::{Actor, Credential};
use tessera_control_plane::service::{self, Ctx, Error as ServiceError, Result as ServiceResult};
use tessera_control_plane::store::{self, DbLocation, TokenQuery, TokenScope, TokenSort};
use tessera_control_plane::timefmt;
use tessera_host_tests::{ControlPlane, ControlPlaneOptions, Request, Response};

use super::stats::{self, median, percentile_or_nan};
use super::wrk::{cpu_count, cpu_ticks, process_ticks};
use super::{Inputs, Plan, Section, TargetRow};
use crate::tools::{self, Result};

/// Events per `POST /v1/usage` (the filter's default `max_batch`).
const BATCH: usize = 500;
/// Page size of the page walk (the API's maximum for `GET /v1/tokens`).
const WALK_PER_PAGE: usize = 500;
/// Page size when counting the authentication log (the API's maximum).
const LOG_PER_PAGE: usize = 1000;
/// Seeded tokens per write transaction.
const SEED_CHUNK: usize = 5_000;
/// Teams and purposes in the seeded token names (`<team>-<purpose>-<nnnnnn>`).
const TEAMS: [&str; 10] = [
    "payments",
    "search",
    "billing",
    "mobile",
    "analytics",
    "platform",
    "identity",
    "checkout",
    "support",
    "warehouse",
];
const PURPOSES: [&str; 5] = ["ci", "deploy", "monitoring", "backup", "reporting"];

/// How much of everything.
#[derive(Clone, Debug)]
struct Sizes {
    /// Tokens in the org during search and export (bootstrap tokens included).
    tokens: usize,
    /// Seeded users (role `user`) owning the seeded tokens.
    users: usize,
    /// Concurrent create + download clients, one configuration each.
    clients: Vec<usize>,
    /// Smoke: pairs per client instead of a timed run.
    pairs_per_client: Option<usize>,
    /// Concurrent usage senders, one configuration each.
    senders: Vec<usize>,
    /// Smoke: batches per sender instead of a timed run.
    batches_per_sender: Option<usize>,
    /// Timed repetitions of each search query per round.
    search_reps: usize,
}

impl Sizes {
    fn of(plan: &Plan) -> Sizes {
        if plan.smoke {
            Sizes {
                tokens: 1_000,
                users: 20,
                clients: vec![1, 2],
                pairs_per_client: Some(3),
                senders: vec![1],
                batches_per_sender: Some(1),
                search_reps: 1,
            }
        } else {
            Sizes {
                tokens: 100_000,
                users: 1_000,
                clients: vec![1, 8],
                pairs_per_client: None,
                senders: vec![1, 4],
                batches_per_sender: None,
                search_reps: 5,
            }
        }
    }

    fn max_clients(&self) -> usize {
        self.clients.iter().copied().max().unwrap_or(1)
    }
}

// ---------------------------------------------------------------------------------------
// The seeded tokens, as a function of their number

/// What token `i` of the seed looks like (and so what each search must find).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeedStatus {
    Enabled,
    Pending,
    Disabled,
    Revoked,
}

/// 70 % enabled (downloaded), 10 % pending, 10 % disabled, 10 % revoked, in runs of 50.
fn seed_status(i: usize) -> SeedStatus {
    match (i / 50) % 20 {
        0..=13 => SeedStatus::Enabled,
        14..=15 => SeedStatus::Pending,
        16..=17 => SeedStatus::Disabled,
        _ => SeedStatus::Revoked,
    }
}

fn seed_team(i: usize) -> &'static str {
    TEAMS[i % TEAMS.len()]
}

fn seed_name(i: usize) -> String {
    format!(
        "{}-{}-{i:06}",
        seed_team(i),
        PURPOSES[(i / TEAMS.len()) % PURPOSES.len()]
    )
}

fn seed_user(i: usize, users: usize) -> usize {
    i % users
}

fn username(u: usize) -> String {
    format!("user{u:04}")
}

fn seed_body(i: usize, users: usize) -> Value {
    const LIFETIMES: [i64; 5] = [30, 60, 90, 180, 365];
    const SCOPES: [&[&str]; 3] = [&["read"], &["read", "write"], &["admin"]];
    let ip_allow: Vec<String> = match i % 4 {
        0 => vec![format!("10.{}.0.0/16", i % 256)],
        1 => vec!["192.0.2.0/24".into(), "2001:db8::/32".into()],
        _ => vec![],
    };
    json!({
        "name": seed_name(i),
        "description": format!(
            "{} token of the {} team, seeded for {}",
            PURPOSES[(i / TEAMS.len()) % PURPOSES.len()],
            seed_team(i),
            username(seed_user(i, users))
        ),
        "lifetime_days": LIFETIMES[i % LIFETIMES.len()],
        "ip_allow": ip_allow,
        "scopes": SCOPES[i % SCOPES.len()],
    })
}

/// One search the bench times, and how many tokens it must report (`total`).
struct Search {
    label: String,
    query: String,
    expected: usize,
}

fn searches(seeded: usize, boot: usize, users: usize) -> Vec<Search> {
    let count = |f: &dyn Fn(usize) -> bool| (0..seeded).filter(|&i| f(i)).count();
    let one = seeded / 2;
    let total = seeded + boot;
    let last_page = total.div_ceil(50);
    vec![
        Search {
            label: format!("one token by name (`q` = its number, `{}`)", seed_name(one)),
            query: format!("q=-{one:06}"),
            expected: 1,
        },
        Search {
            label: "one team (`q=payments`), newest first, first page of 50".into(),
            query: "q=payments".into(),
            expected: count(&|i| seed_team(i) == "payments"),
        },
        Search {
            label: "status filter (`status=disabled`), first page of 50".into(),
            query: "status=disabled".into(),
            expected: count(&|i| seed_status(i) == SeedStatus::Disabled),
        },
        Search {
            label: "team + status, sorted by name (`q=billing&status=enabled&sort=name`)".into(),
            query: "q=billing&status=enabled&sort=name".into(),
            expected: count(&|i| {
                seed_team(i) == "billing" && seed_status(i) == SeedStatus::Enabled
            }),
        },
        Search {
            label: format!("one user's tokens (`user={}`)", username(7 % users)),
            query: format!("user={}", username(7 % users)),
            expected: count(&|i| seed_user(i, users) == 7 % users),
        },
        Search {
            label: format!(
                "last page, no filter (`page={last_page}`, offset {})",
                (last_page - 1) * 50
            ),
            query: format!("page={last_page}"),
            expected: total,
        },
    ]
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn api_err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A request to the control plane, with its `Host` and a generous safety timeout.
fn request(cp: &ControlPlane, method: &str, target: &str, bearer: &str) -> Request {
    Request::new(method, target)
        .header("host", &cp.addr().to_string())
        .bearer(bearer)
        .timeout(Duration::from_secs(300))
}

fn json_request(
    cp: &ControlPlane,
    method: &str,
    target: &str,
    bearer: &str,
    body: String,
) -> Request {
    request(cp, method, target, bearer)
        .header("content-type", "application/json")
        .body(body)
}

/// Sends `req` and returns the answer and the seconds it took (connect to last byte).
fn timed(cp: &ControlPlane, req: &Request, status: u16) -> Result<(Response, f64)> {
    let t = Instant::now();
    let r = req
        .send(cp.addr())
        .map_err(|e| format!("{} {}: {e}", req.method_name(), req.target()))?;
    let secs = t.elapsed().as_secs_f64();
    if r.status != status {
        return Err(format!(
            "{} {}: {} (expected {status}): {}",
            req.method_name(),
            req.target(),
            r.status,
            r.text().chars().take(300).collect::<String>()
        ));
    }
    Ok((r, secs))
}

/// `GET target` for an answer larger than the host tests' client takes (it stops at
/// 16 MiB; the CSV of 100,000 tokens is about 28 MB): one HTTP/1.1 request on a fresh
/// connection, read to the end. Returns the body and the seconds it took (connect to
/// last byte), after checking the status is 200.
fn get_large(cp: &ControlPlane, target: &str, bearer: &str) -> Result<(Vec<u8>, f64)> {
    let what = |e: &dyn std::fmt::Display| format!("GET {target}: {e}");
    let t = Instant::now();
    let mut stream = TcpStream::connect(cp.addr()).map_err(|e| what(&e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .map_err(|e| what(&e))?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {bearer}\r\n\
         connection: close\r\n\r\n",
        cp.addr()
    )
    .map_err(|e| what(&e))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| what(&e))?;
    let secs = t.elapsed().as_secs_f64();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| what(&"no end of the head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw.split_off(split + 4);
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(what(&format!(
            "{status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        )));
    }
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        body = dechunk(&body).ok_or_else(|| what(&"bad chunked body"))?;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() != len {
            return Err(what(&format!("{} bytes, content-length {len}", body.len())));
        }
    }
    Ok((body, secs))
}

/// Decodes a chunked body (no trailers expected).
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn json_of(r: &Response, what: &str) -> Result<Value> {
    r.json().ok_or_else(|| {
        format!(
            "{what}: not JSON: {}",
            r.text().chars().take(300).collect::<String>()
        )
    })
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// `median (min–max)` with `decimals` decimals; just the value when there is one.
fn med_range(values: &[f64], decimals: usize) -> String {
    let m = median(values);
    if values.len() < 2 {
        return format!("{m:.decimals$}");
    }
    let (lo, hi) = min_max(values);
    format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
}

/// Thousands separators for counts.
pub(super) fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = Vec::new();
    let mut end = digits.len();
    while end > 3 {
        groups.push(&digits[end - 3..end]);
        end -= 3;
    }
    groups.push(&digits[..end]);
    groups.reverse();
    groups.join(",")
}

/// CPU used while `f` runs: (cores used by the server, cores busy on the machine).
pub(super) fn with_cpu<T>(
    pid: Option<u32>,
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, Option<(f64, f64)>)> {
    let before = (cpu_ticks(), pid.and_then(process_ticks));
    let out = f()?;
    let cpu = match (before, cpu_ticks(), pid.and_then(process_ticks)) {
        ((Some((t0, b0)), Some(s0)), Some((t1, b1)), Some(s1)) => {
            let per_core = t1.saturating_sub(t0) as f64 / cpu_count() as f64;
            // Under half a second of ticks (100 a second) the figures are noise.
            (per_core >= 50.0).then(|| {
                (
                    s1.saturating_sub(s0) as f64 / per_core,
                    b1.saturating_sub(b0) as f64 / per_core,
                )
            })
        }
        _ => None,
    };
    Ok((out, cpu))
}

/// A tiny deterministic generator (xorshift64*), for the usage events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------
// Seeding

struct Seeded {
    /// Ids of the seeded tokens, in seed order.
    ids: Vec<String>,
    /// Tokens in the org before seeding (the bootstrap admin tokens).
    boot: usize,
    seconds: f64,
    transactions: usize,
    db_bytes: u64,
    /// Seeded tokens downloaded (one status-list index each).
    minted: usize,
}

/// Stops the server, seeds the database to `sizes.tokens` tokens with the control plane's
/// library, and starts the server again on the same database and port.
fn seed(cp: &mut ControlPlane, sizes: &Sizes) -> Result<Seeded> {
    cp.kill();
    // `ControlPlane` keeps the master key next to the server's log in its directory.
    let key_path = cp.log_path().with_file_name("master.key");
    let key_text = std::fs::read_to_string(&key_path)
        .map_err(|e| format!("reading the master key {}: {e}", key_path.display()))?;
    let master = MasterKey::parse(&key_text)?;
    let base_url = cp.url();
    let org_id = cp.org().to_owned();
    let alice_id = cp
        .user_id_of("alice")
        .ok_or("no bootstrap admin alice")?
        .to_owned();
    let started = Instant::now();
    // The store the server opens (the same `store::open`), so the bench seeds whatever
    // backend it runs on through one path.
    let store = store::open(&DbLocation::Sqlite(cp.db_path().to_path_buf()))
        .map_err(api_err("opening the database"))?;
    let ctx_at = |now: i64| Ctx::new(&base_url, &master, now, 1800);

    let (admin, boot) = store
        .read(|tx| {
            let user = tx.get_user(&alice_id)?;
            let org = tx.get_org(&org_id)?;
            let found = tx.search_tokens(&TokenQuery {
                scope: TokenScope::Org(org_id.clone()),
                q: None,
                statuses: Vec::new(),
                user: None,
                org: None,
                expires_before: None,
                expires_after: None,
                sort: TokenSort::CreatedAt,
                descending: true,
                limit: 1,
                offset: 0,
                after: None,
                count: true,
                now: timefmt::now(),
            })?;
            Ok::<_, ServiceError>((user.zip(org), found.total.unwrap_or(0)))
        })
        .map_err(api_err("reading the bootstrap"))?;
    let (admin_user, org) = admin.ok_or("the bootstrap admin or org is missing")?;
    let alice = Actor {
        user: admin_user,
        org: org.clone(),
        token_id: String::new(),
        credential: Credential::Internal,
    };
    let boot = usize::try_from(boot).unwrap_or(0);
    let n = sizes
        .tokens
        .checked_sub(boot)
        .ok_or("more bootstrap tokens than tokens to seed")?;

    // The users were created first, then the tokens one a second up to now; the API
    // would have written exactly these rows at those times.
    let base = timefmt::now();
    let mut transactions = 1;
    let owners: Vec<Actor> = store
        .write(|tx| {
            let ctx = ctx_at(base - n as i64 - 60);
            (0..sizes.users)
                .map(|u| -> ServiceResult<Actor> {
                    let req: service::input::CreateUser = serde_json::from_value(json!({
                        "username": username(u),
                        "display_name": format!("Seeded user {}", u + 1),
                        "role": Role::User,
                    }))
                    .map_err(|e| ServiceError::internal(e.to_string()))?;
                    let made = service::users::create_user(tx, &ctx, &alice, &org.id, req)?;
                    let user = tx
                        .get_user(&made.id)?
                        .ok_or_else(|| ServiceError::internal("a seeded user vanished"))?;
                    Ok(Actor {
                        user,
                        org: org.clone(),
                        token_id: String::new(),
                        credential: Credential::Internal,
                    })
                })
                .collect()
        })
        .map_err(api_err("seeding users"))?;

    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(SEED_CHUNK) {
        let end = (start + SEED_CHUNK).min(n);
        let chunk: Vec<String> = store
            .write(|tx| {
                let mut out = Vec::with_capacity(end - start);
                for i in start..end {
                    // As if created one a second, the last one a second ago.
                    let ctx = ctx_at(base - (n - i) as i64);
                    let owner = &owners[seed_user(i, sizes.users)];
                    let req: service::input::CreateToken =
                        serde_json::from_value(seed_body(i, sizes.users))
                            .map_err(|e| ServiceError::internal(e.to_string()))?;
                    let id = service::tokens::create_token(tx, &ctx, owner, req)?.id;
                    match seed_status(i) {
                        SeedStatus::Pending => {}
                        SeedStatus::Enabled => {
                            service::tokens::download(tx, &ctx, owner, &id)?;
                        }
                        SeedStatus::Disabled => {
                            service::tokens::download(tx, &ctx, owner, &id)?;
                            service::tokens::disable(tx, &ctx, &alice, &id)?;
                        }
                        SeedStatus::Revoked => {
                            service::tokens::download(tx, &ctx, owner, &id)?;
                            service::tokens::revoke(tx, &ctx, owner, &id)?;
                        }
                    }
                    out.push(id);
                }
                Ok::<_, ServiceError>(out)
            })
            .map_err(api_err("seeding tokens"))?;
        transactions += 1;
        ids.extend(chunk);
        println!(
            "  seeded {} / {} tokens ({:.1} s)",
            count(ids.len()),
            count(n),
            started.elapsed().as_secs_f64()
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    // Closing the last connection checkpoints the WAL into the database file.
    drop(store);
    let db_bytes = ["", "-wal"]
        .iter()
        .map(|suffix| {
            let mut path = cp.db_path().as_os_str().to_owned();
            path.push(suffix);
            std::fs::metadata(path).map_or(0, |m| m.len())
        })
        .sum();
    cp.restart()?;
    Ok(Seeded {
        minted: (0..n)
            .filter(|&i| seed_status(i) != SeedStatus::Pending)
            .count(),
        ids,
        boot,
        seconds,
        transactions,
        db_bytes,
    })
}

// ---------------------------------------------------------------------------------------
// Search, page walk, CSV

struct SearchResults {
    /// Per search: (label, query, total, seconds of each timed request).
    searches: Vec<(String, String, usize, Vec<f64>)>,
    walk_pages: usize,
    walk_secs: Vec<f64>,
    csv_bytes: usize,
    csv_rows: usize,
    csv_secs: Vec<f64>,
}

fn total_of(v: &Value, what: &str) -> Result<usize> {
    v.get("total")
        .and_then(Value::as_u64)
        .and_then(|t| usize::try_from(t).ok())
        .ok_or_else(|| format!("{what}: no total in the answer"))
}

fn tokens_of<'a>(v: &'a Value, what: &str) -> Result<&'a Vec<Value>> {
    v.get("tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{what}: no tokens in the answer"))
}

fn measure_search(
    cp: &ControlPlane,
    plan: &Plan,
    sizes: &Sizes,
    seeded: &Seeded,
) -> Result<SearchResults> {
    let admin = cp.admin_token();
    let total = seeded.ids.len() + seeded.boot;
    let list = searches(seeded.ids.len(), seeded.boot, sizes.users);
    let mut out = SearchResults {
        searches: list
            .iter()
            .map(|s| (s.label.clone(), s.query.clone(), s.expected, Vec::new()))
            .collect(),
        walk_pages: total.div_ceil(WALK_PER_PAGE),
        walk_secs: Vec::new(),
        csv_bytes: 0,
        csv_rows: 0,
        csv_secs: Vec::new(),
    };
    let seeded_ids: HashSet<&str> = seeded.ids.iter().map(String::as_str).collect();
    for round in 1..=plan.rounds {
        // Searches: `search_reps` timed requests each; the first request of the first
        // round is also untimed warm-up for the server's caches (verifier, page cache).
        for (k, s) in list.iter().enumerate() {
            let req = request(cp, "GET", &format!("/v1/tokens?{}", s.query), admin);
            if round == 1 {
                timed(cp, &req, 200)?;
            }
            for _ in 0..sizes.search_reps {
                let (r, secs) = timed(cp, &req, 200)?;
                let v = json_of(&r, &s.label)?;
                let got = total_of(&v, &s.label)?;
                if got != s.expected {
                    return Err(format!(
                        "GET /v1/tokens?{}: total {got}, expected {}",
                        s.query, s.expected
                    ));
                }
                let page = tokens_of(&v, &s.label)?;
                if page.is_empty() || page.len() > 50 {
                    return Err(format!(
                        "GET /v1/tokens?{}: {} tokens on the page",
                        s.query,
                        page.len()
                    ));
                }
                out.searches[k].3.push(secs);
            }
        }

        // Every page of 500, in the default order; every token exactly once.
        let t = Instant::now();
        let mut seen: HashSet<String> = HashSet::with_capacity(total);
        // Each page after the first starts at the previous page's `next` cursor (keyset
        // paging: no page costs more than the first).
        let mut next: Option<String> = None;
        for page in 1..=out.walk_pages {
            let target = match &next {
                None => format!("/v1/tokens?per_page={WALK_PER_PAGE}"),
                Some(cursor) => format!("/v1/tokens?per_page={WALK_PER_PAGE}&after={cursor}"),
            };
            let (r, _) = timed(cp, &request(cp, "GET", &target, admin), 200)?;
            let v = json_of(&r, &target)?;
            next = v.get("next").and_then(Value::as_str).map(str::to_owned);
            if (page < out.walk_pages) != next.is_some() {
                return Err(format!(
                    "page walk: page {page} of {} came with next = {next:?}",
                    out.walk_pages
                ));
            }
            for tok in tokens_of(&v, &target)? {
                let id = tok.get("id").and_then(Value::as_str).unwrap_or_default();
                if !seen.insert(id.to_owned()) {
                    return Err(format!("page walk: token {id} seen twice"));
                }
            }
        }
        let walk = t.elapsed().as_secs_f64();
        if seen.len() != total || !seeded_ids.iter().all(|id| seen.contains(*id)) {
            return Err(format!(
                "page walk: {} distinct tokens, expected {total} including every seeded one",
                seen.len()
            ));
        }
        out.walk_secs.push(walk);

        // The CSV export of every token.
        let (body, secs) = get_large(cp, "/v1/tokens.csv", admin)?;
        let text = String::from_utf8(body).map_err(|_| "the CSV is not UTF-8")?;
        let rows = tessera_control_plane::csv::parse(&text);
        let header = rows.first().ok_or("the CSV is empty")?;
        if header
            .iter()
            .map(String::as_str)
            .ne(service::views::TOKEN_COLUMNS)
        {
            return Err(format!("the CSV header is {header:?}"));
        }
        let ids: HashSet<&str> = rows[1..]
            .iter()
            .filter_map(|r| r.first().map(String::as_str))
            .collect();
        if rows.len() - 1 != total
            || ids.len() != total
            || !seeded_ids.iter().all(|id| ids.contains(id))
        {
            return Err(format!(
                "the CSV has {} rows ({} distinct ids), expected {total}",
                rows.len() - 1,
                ids.len()
            ));
        }
        out.csv_bytes = text.len();
        out.csv_rows = rows.len() - 1;
        out.csv_secs.push(secs);
        println!(
            "  round {round}/{}: searches {} ms; page walk {} pages {:.2} s; CSV {} rows {} in {:.2} s",
            plan.rounds,
            out.searches
                .iter()
                .map(|s| format!("{:.1}", 1000.0 * median(&s.3)))
                .collect::<Vec<_>>()
                .join(" / "),
            out.walk_pages,
            walk,
            count(out.csv_rows),
            tools::human_size(out.csv_bytes as u64),
            secs
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Create + download

/// One timed run of concurrent clients.
pub(super) struct Run {
    /// Completed operations (pairs, or events).
    pub(super) ops: usize,
    pub(super) secs: f64,
    /// Latencies, seconds: create and download, or one batch.
    pub(super) lat_a: Vec<f64>,
    lat_b: Vec<f64>,
    /// (server cores, machine cores busy) during the run.
    pub(super) cpu: Option<(f64, f64)>,
}

impl Run {
    pub(super) fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Unique token names across every run.
static NAME_SEQ: AtomicU64 = AtomicU64::new(0);

/// One create + download pair as admin `token`'s user: (create s, download s).
fn create_download_pair(cp: &ControlPlane, token: &str) -> Result<(f64, f64)> {
    let n = NAME_SEQ.fetch_add(1, Ordering::Relaxed);
    let body = json!({"name": format!("bench-{n}"), "scopes": ["read"], "lifetime_days": 90});
    let (r, create) = timed(
        cp,
        &json_request(cp, "POST", "/v1/tokens", token, body.to_string()),
        201,
    )?;
    let v = json_of(&r, "POST /v1/tokens")?;
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or("POST /v1/tokens: no id")?;
    if v.get("status").and_then(Value::as_str) != Some("pending") {
        return Err(format!("POST /v1/tokens: token {id} is not pending: {v}"));
    }
    let target = format!("/v1/tokens/{id}/download");
    let (r, download) = timed(cp, &request(cp, "POST", &target, token), 200)?;
    let v = json_of(&r, &target)?;
    let jwt = v.get("jwt").and_then(Value::as_str).unwrap_or_default();
    if jwt.split('.').count() != 3
        || v.pointer("/token/status").and_then(Value::as_str) != Some("enabled")
    {
        return Err(format!("{target}: no JWT or not enabled: {v}"));
    }
    Ok((create, download))
}

/// `clients` threads, each its own admin, doing pairs until `until` passes (or `pairs`
/// each); returns every pair's latencies and the wall time until the last one finished.
/// Client `k` talks to `cps[k % cps.len()]` (replicas of one database).
pub(super) fn pairs_run(
    cps: &[&ControlPlane],
    tokens: &[&str],
    seconds: f64,
    pairs: Option<usize>,
) -> Result<Run> {
    let barrier = Barrier::new(tokens.len() + 1);
    let (results, secs) = std::thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(k, token)| {
                let barrier = &barrier;
                let cp = cps[k % cps.len()];
                s.spawn(move || -> Result<Vec<(f64, f64)>> {
                    barrier.wait();
                    let start = Instant::now();
                    let mut lat = Vec::new();
                    loop {
                        let done = match pairs {
                            Some(p) => lat.len() >= p,
                            None => start.elapsed().as_secs_f64() >= seconds,
                        };
                        if done {
                            return Ok(lat);
                        }
                        lat.push(create_download_pair(cp, token)?);
                    }
                })
            })
            .collect();
        release_and_join(&barrier, handles, "client")
    });
    let mut run = Run {
        ops: 0,
        secs,
        lat_a: Vec::new(),
        lat_b: Vec::new(),
        cpu: None,
    };
    for r in results {
        for (c, d) in r? {
            run.ops += 1;
            run.lat_a.push(c);
            run.lat_b.push(d);
        }
    }
    Ok(run)
}

fn measure_create(cp: &ControlPlane, plan: &Plan, sizes: &Sizes) -> Result<Vec<Vec<Run>>> {
    let tokens: Vec<&str> = (1..=sizes.max_clients())
        .map(|c| {
            cp.token_of(&format!("bench-{c}"))
                .ok_or_else(|| format!("no bootstrap admin bench-{c}"))
        })
        .collect::<Result<_>>()?;
    let mut runs: Vec<Vec<Run>> = sizes.clients.iter().map(|_| Vec::new()).collect();
    for round in 1..=plan.rounds {
        for (k, &clients) in sizes.clients.iter().enumerate() {
            let tokens = &tokens[..clients];
            if plan.warmup > 0 {
                pairs_run(&[cp], tokens, plan.warmup as f64, None)?;
            }
            let (mut run, cpu) = with_cpu(cp.pid(), || {
                pairs_run(&[cp], tokens, plan.seconds as f64, sizes.pairs_per_client)
            })?;
            run.cpu = cpu;
            println!(
                "  round {round}/{}: {clients} client(s): {:.1} pairs/s ({} pairs in {:.2} s), \
                 create p50 {:.1} ms p99 {:.1} ms, download p50 {:.1} ms p99 {:.1} ms{}",
                plan.rounds,
                run.rate(),
                run.ops,
                run.secs,
                1000.0 * percentile_or_nan(&run.lat_a, 50.0),
                1000.0 * percentile_or_nan(&run.lat_a, 99.0),
                1000.0 * percentile_or_nan(&run.lat_b, 50.0),
                1000.0 * percentile_or_nan(&run.lat_b, 99.0),
                run.cpu
                    .map(|(s, m)| format!(", cpu: server {s:.2}, machine {m:.2}"))
                    .unwrap_or_default()
            );
            runs[k].push(run);
        }
    }
    Ok(runs)
}

/// The cost of the API's verifier rebuild: `GET /v1/me` right after a download (which
/// moves the status list, so the next authenticated call applies the changed entries to
/// the org's verifier, `control-plane/src/service/verifiers.rs`), then again. Seconds, per
/// pair.
struct Rebuild {
    after_change: Vec<f64>,
    cached: Vec<f64>,
}

fn measure_rebuild(cp: &ControlPlane, reps: usize) -> Result<Rebuild> {
    let token = cp.token_of("bench-1").ok_or("no bootstrap admin bench-1")?;
    let me = request(cp, "GET", "/v1/me", token);
    let mut out = Rebuild {
        after_change: Vec::new(),
        cached: Vec::new(),
    };
    for _ in 0..reps {
        create_download_pair(cp, token)?;
        out.after_change.push(timed(cp, &me, 200)?.1);
        out.cached.push(timed(cp, &me, 200)?.1);
    }
    println!(
        "  GET /v1/me after a download: {:.1} ms, then {:.1} ms (medians of {reps})",
        1000.0 * median(&out.after_change),
        1000.0 * median(&out.cached)
    );
    Ok(out)
}

/// Whether an API call's cost stays flat as the data grows: `GET /v1/me` with many
/// organizations in the database, and while CSV exports of every seeded token run.
struct Scale {
    orgs: usize,
    /// `GET /v1/me` (alice) with `orgs` more organizations, seconds.
    me_many_orgs: Vec<f64>,
    /// Concurrent exports running meanwhile.
    exports: usize,
    /// `GET /v1/me` (bench-1) while the exports run, seconds.
    me_during_exports: Vec<f64>,
    /// Rows each export returned (all of them, every time).
    export_rows: Vec<usize>,
    /// The server's resident memory (KiB) before the exports, and the most seen while
    /// they ran (sampled every 50 ms).
    rss_before_kib: u64,
    rss_peak_kib: u64,
    /// Bytes of one export.
    export_bytes: usize,
}

fn measure_scale(cp: &ControlPlane, plan: &Plan) -> Result<Scale> {
    let alice = cp.token_of("alice").ok_or("no bootstrap admin alice")?;
    // Every token of the org, as the export must return them (nothing writes meanwhile).
    let (r, _) = timed(cp, &request(cp, "GET", "/v1/tokens?per_page=1", alice), 200)?;
    let expected_rows = total_of(&json_of(&r, "token count")?, "token count")?;
    let other = cp.token_of("bench-1").ok_or("no bootstrap admin bench-1")?;
    let (orgs, reps) = if plan.smoke { (10, 20) } else { (1_000, 500) };
    for i in 0..orgs {
        let body = json!({"id": format!("scale-{i:04}"), "name": format!("Scale {i}")});
        timed(
            cp,
            &json_request(cp, "POST", "/v1/orgs", alice, body.to_string()),
            201,
        )?;
    }
    let me = request(cp, "GET", "/v1/me", alice);
    let mut me_many_orgs = Vec::with_capacity(reps);
    for _ in 0..reps {
        me_many_orgs.push(timed(cp, &me, 200)?.1);
    }
    println!(
        "  GET /v1/me with {orgs} more organizations: p50 {:.2} ms, p99 {:.2} ms ({reps} calls)",
        1000.0 * percentile_or_nan(&me_many_orgs, 50.0),
        1000.0 * percentile_or_nan(&me_many_orgs, 99.0)
    );
    let exports = 4;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rss_before_kib = cp.pid().and_then(stats::rss_kib).unwrap_or(0);
    let rss_peak = std::sync::atomic::AtomicU64::new(rss_before_kib);
    let export_bytes = std::sync::atomic::AtomicUsize::new(0);
    let (me_during_exports, export_rows) = std::thread::scope(|scope| -> Result<_> {
        {
            let (stop, rss_peak) = (&stop, &rss_peak);
            scope.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    rss_peak.fetch_max(
                        cp.pid().and_then(stats::rss_kib).unwrap_or(0),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        let workers: Vec<_> = (0..exports)
            .map(|_| {
                let (stop, export_bytes) = (&stop, &export_bytes);
                scope.spawn(move || -> Result<Vec<usize>> {
                    let mut rows = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (body, _) = get_large(cp, "/v1/tokens.csv", alice)?;
                        export_bytes.store(body.len(), std::sync::atomic::Ordering::Relaxed);
                        // Header line excluded.
                        rows.push(
                            body.iter()
                                .filter(|&&b| b == b'\n')
                                .count()
                                .saturating_sub(1),
                        );
                    }
                    Ok(rows)
                })
            })
            .collect();
        // Let every export start before timing.
        std::thread::sleep(Duration::from_millis(300));
        let me = request(cp, "GET", "/v1/me", other);
        let mut lat = Vec::with_capacity(reps);
        let mut failed = None;
        for _ in 0..reps {
            match timed(cp, &me, 200) {
                Ok((_, t)) => lat.push(t),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut rows = Vec::new();
        for w in workers {
            rows.extend(w.join().map_err(|_| "an export thread panicked")??);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok((lat, rows))
    })?;
    if let Some(short) = export_rows.iter().find(|&&r| r != expected_rows) {
        return Err(format!(
            "an export returned {short} rows, not {expected_rows}"
        ));
    }
    println!(
        "  GET /v1/me while {exports} CSV exports of {} rows run: p50 {:.2} ms, p99 {:.2} ms \
         ({} exports completed meanwhile)",
        count(expected_rows),
        1000.0 * percentile_or_nan(&me_during_exports, 50.0),
        1000.0 * percentile_or_nan(&me_during_exports, 99.0),
        export_rows.len()
    );
    let rss_peak_kib = rss_peak.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "  server memory: {} KiB before the exports, at most {} KiB during them (one export is {} bytes)",
        count(rss_before_kib as usize),
        count(rss_peak_kib as usize),
        count(export_bytes.load(std::sync::atomic::Ordering::Relaxed))
    );
    Ok(Scale {
        orgs,
        me_many_orgs,
        exports,
        me_during_exports,
        export_rows,
        rss_before_kib,
        rss_peak_kib,
        export_bytes: export_bytes.load(std::sync::atomic::Ordering::Relaxed),
    })
}

// ---------------------------------------------------------------------------------------
// Usage

/// A batch of `BATCH` events for random seeded tokens, stamped now: 90 % allow, 10 % deny.
fn usage_batch(rng: &mut Rng, ids: &[String]) -> String {
    let at = timefmt::now();
    let events: Vec<Value> = (0..BATCH)
        .map(|_| {
            let id = &ids[rng.below(ids.len())];
            let ip = format!("192.0.2.{}", 1 + rng.below(254));
            let path = format!("/v1/things/{}", rng.below(1000));
            if rng.below(10) == 0 {
                json!({"token_id": id, "at": at, "ip": ip, "outcome": "deny",
                       "reason": "insufficient_scope", "method": "POST", "path": path})
            } else {
                json!({"token_id": id, "at": at, "ip": ip, "outcome": "allow",
                       "method": "GET", "path": path})
            }
        })
        .collect();
    json!({ "events": events }).to_string()
}

/// Sender `k` talks to `cps[k % cps.len()]` (replicas of one database).
pub(super) fn usage_run(
    cps: &[&ControlPlane],
    secret: &str,
    ids: &[String],
    senders: usize,
    seconds: f64,
    batches: Option<usize>,
    seed: u64,
) -> Result<Run> {
    let barrier = Barrier::new(senders + 1);
    let (results, secs) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..senders)
            .map(|k| {
                let barrier = &barrier;
                let cp = cps[k % cps.len()];
                s.spawn(move || -> Result<Vec<f64>> {
                    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k as u64 + 1));
                    barrier.wait();
                    let start = Instant::now();
                    let mut lat = Vec::new();
                    loop {
                        let done = match batches {
                            Some(b) => lat.len() >= b,
                            None => start.elapsed().as_secs_f64() >= seconds,
                        };
                        if done {
                            return Ok(lat);
                        }
                        let req = json_request(
                            cp,
                            "POST",
                            "/v1/usage",
                            secret,
                            usage_batch(&mut rng, ids),
                        );
                        let (r, secs) = timed(cp, &req, 200)?;
                        let v = json_of(&r, "POST /v1/usage")?;
                        let accepted = v.get("accepted").and_then(Value::as_u64);
                        let unknown = v
                            .get("unknown_tokens")
                            .and_then(Value::as_array)
                            .map(Vec::len);
                        if accepted != Some(BATCH as u64) || unknown != Some(0) {
                            return Err(format!("POST /v1/usage: not every event accepted: {v}"));
                        }
                        lat.push(secs);
                    }
                })
            })
            .collect();
        release_and_join(&barrier, handles, "sender")
    });
    let mut run = Run {
        ops: 0,
        secs,
        lat_a: Vec::new(),
        lat_b: Vec::new(),
        cpu: None,
    };
    for r in results {
        let lat = r?;
        run.ops += lat.len() * BATCH;
        run.lat_a.extend(lat);
    }
    Ok(run)
}

struct UsageResults {
    runs: Vec<Vec<Run>>,
    /// Events sent (warm-up included) and events the auth log holds afterwards.
    sent: usize,
    logged: usize,
    count_secs: f64,
}

/// Edge-reported events in the org's authentication log with `since <= at < until`, through
/// `GET /v1/auth-log`, one second at a time (each second paged with `per_page=1000`).
fn count_auth_log(cp: &ControlPlane, since: i64, until: i64) -> Result<usize> {
    let mut total = 0;
    for s in since..until {
        for page in 1.. {
            let target = format!(
                "/v1/auth-log?since={s}&until={}&per_page={LOG_PER_PAGE}&page={page}",
                s + 1
            );
            let (r, _) = timed(cp, &request(cp, "GET", &target, cp.admin_token()), 200)?;
            let v = json_of(&r, &target)?;
            let events = v
                .get("events")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("{target}: no events"))?;
            let n = events.len();
            // Only the edges' reports: the log also holds the uses of tokens against the
            // API itself (source `api`), this walk's own requests among them.
            total += events
                .iter()
                .filter(|e| {
                    e.get("source")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.starts_with("edge:"))
                })
                .count();
            if n < LOG_PER_PAGE {
                break;
            }
        }
    }
    Ok(total)
}

fn measure_usage(
    cp: &ControlPlane,
    plan: &Plan,
    sizes: &Sizes,
    ids: &[String],
) -> Result<UsageResults> {
    let secret = cp.edge_credential(cp.admin_token(), "bench-edge")?;
    let since = timefmt::now();
    let mut runs: Vec<Vec<Run>> = sizes.senders.iter().map(|_| Vec::new()).collect();
    let mut sent = 0;
    let mut seed = 1;
    for round in 1..=plan.rounds {
        for (k, &senders) in sizes.senders.iter().enumerate() {
            if plan.warmup > 0 {
                seed += 1;
                sent +=
                    usage_run(&[cp], &secret, ids, senders, plan.warmup as f64, None, seed)?.ops;
            }
            seed += 1;
            let (mut run, cpu) = with_cpu(cp.pid(), || {
                usage_run(
                    &[cp],
                    &secret,
                    ids,
                    senders,
                    plan.seconds as f64,
                    sizes.batches_per_sender,
                    seed,
                )
            })?;
            run.cpu = cpu;
            sent += run.ops;
            println!(
                "  round {round}/{}: {senders} sender(s): {:.0} events/s ({} events in {:.2} s), \
                 batch p50 {:.1} ms p99 {:.1} ms{}",
                plan.rounds,
                run.rate(),
                count(run.ops),
                run.secs,
                1000.0 * percentile_or_nan(&run.lat_a, 50.0),
                1000.0 * percentile_or_nan(&run.lat_a, 99.0),
                run.cpu
                    .map(|(s, m)| format!(", cpu: server {s:.2}, machine {m:.2}"))
                    .unwrap_or_default()
            );
            runs[k].push(run);
        }
    }
    let t = Instant::now();
    let logged = count_auth_log(cp, since, timefmt::now() + 1)?;
    let count_secs = t.elapsed().as_secs_f64();
    println!(
        "  auth log: {} events through GET /v1/auth-log ({} sent) in {count_secs:.1} s",
        count(logged),
        count(sent)
    );
    if logged != sent {
        return Err(format!(
            "the authentication log holds {logged} events, {sent} were sent and accepted"
        ));
    }
    Ok(UsageResults {
        runs,
        sent,
        logged,
        count_secs,
    })
}

// ---------------------------------------------------------------------------------------
// Introspection (RFC 7662)

/// The issue's bound on introspection's p99 with 8 clients, milliseconds.
const INTROSPECT_P99_MS: f64 = 2.0;

/// One `POST /v1/introspect` of `token` with the edge credential `edge`: the seconds it
/// took, after checking the token is active (so every call verified a signature).
fn introspect_call(cp: &ControlPlane, edge: &str, token: &str) -> Result<f64> {
    // A token is base64url, dots and the `tsr_` prefix: nothing to percent-encode.
    let body = format!("token={token}");
    let req = request(cp, "POST", "/v1/introspect", edge)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let (r, secs) = timed(cp, &req, 200)?;
    let v = json_of(&r, "POST /v1/introspect")?;
    if v.get("active") != Some(&Value::Bool(true)) {
        return Err(format!("POST /v1/introspect: the token is not active: {v}"));
    }
    Ok(secs)
}

/// `tokens.len()` threads, each introspecting its own token until `seconds` pass (or
/// `calls` each).
fn introspect_run(
    cp: &ControlPlane,
    edge: &str,
    tokens: &[&str],
    seconds: f64,
    calls: Option<usize>,
) -> Result<Run> {
    let barrier = Barrier::new(tokens.len() + 1);
    let (results, secs) = std::thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                let barrier = &barrier;
                s.spawn(move || -> Result<Vec<f64>> {
                    barrier.wait();
                    let start = Instant::now();
                    let mut lat = Vec::new();
                    loop {
                        let done = match calls {
                            Some(c) => lat.len() >= c,
                            None => start.elapsed().as_secs_f64() >= seconds,
                        };
                        if done {
                            return Ok(lat);
                        }
                        lat.push(introspect_call(cp, edge, token)?);
                    }
                })
            })
            .collect();
        release_and_join(&barrier, handles, "introspection client")
    });
    let mut run = Run {
        ops: 0,
        secs,
        lat_a: Vec::new(),
        lat_b: Vec::new(),
        cpu: None,
    };
    for r in results {
        let lat = r?;
        run.ops += lat.len();
        run.lat_a.extend(lat);
    }
    Ok(run)
}

/// Introspection by an edge credential, with 1 and `max_clients` clients, each asking
/// about its own admin's token (Ed25519, active: the org's verifier checks the signature,
/// the status list and the withdrawn scopes on every call; it keeps no cache).
fn measure_introspect(cp: &ControlPlane, plan: &Plan, sizes: &Sizes) -> Result<Vec<Vec<Run>>> {
    let edge = cp.edge_credential(cp.admin_token(), "bench-introspection")?;
    let tokens: Vec<&str> = (1..=sizes.max_clients())
        .map(|c| {
            cp.token_of(&format!("bench-{c}"))
                .ok_or_else(|| format!("no bootstrap admin bench-{c}"))
        })
        .collect::<Result<_>>()?;
    let calls = sizes.pairs_per_client;
    let mut runs: Vec<Vec<Run>> = sizes.clients.iter().map(|_| Vec::new()).collect();
    for round in 1..=plan.rounds {
        for (k, &clients) in sizes.clients.iter().enumerate() {
            let tokens = &tokens[..clients];
            if plan.warmup > 0 {
                introspect_run(cp, &edge, tokens, plan.warmup as f64, None)?;
            }
            let (mut run, cpu) = with_cpu(cp.pid(), || {
                introspect_run(cp, &edge, tokens, plan.seconds as f64, calls)
            })?;
            run.cpu = cpu;
            println!(
                "  round {round}/{}: {clients} client(s): {:.0} calls/s ({} calls in {:.2} s), \
                 p50 {:.2} ms p99 {:.2} ms{}",
                plan.rounds,
                run.rate(),
                run.ops,
                run.secs,
                1000.0 * percentile_or_nan(&run.lat_a, 50.0),
                1000.0 * percentile_or_nan(&run.lat_a, 99.0),
                run.cpu
                    .map(|(s, m)| format!(", cpu: server {s:.2}, machine {m:.2}"))
                    .unwrap_or_default()
            );
            runs[k].push(run);
        }
    }
    Ok(runs)
}

/// The introspection table and the issue's target row.
fn introspect_report(plan: &Plan, sizes: &Sizes, runs: &[Vec<Run>]) -> (String, TargetRow) {
    let ms = |v: &[f64]| v.iter().map(|x| 1000.0 * x).collect::<Vec<f64>>();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "**Introspection** (`POST /v1/introspect`, RFC 7662, with an edge credential)\n\n\
         Each client (a thread) asks, in a loop, about its own admin's bootstrap token \
         (Ed25519, active), on a connection of its own per call; every answer must be 200 \
         with `active: true`. The org's verifier checks the signature, the times, the \
         status list and the withdrawn scopes on every call (no cache); one read transaction \
         per call. Same server and database as above ({} tokens), {} s per configuration \
         and round after {} s of warm-up.\n",
        count(sizes.tokens),
        plan.seconds,
        plan.warmup
    );
    let _ = writeln!(
        md,
        "| clients | calls/s | p50 / p99 ms | server CPU (cores) | machine CPU (cores) | calls per round |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---|");
    let mut p99_max_clients = f64::NAN;
    for (clients, runs) in sizes.clients.iter().zip(runs) {
        let rates: Vec<f64> = runs.iter().map(Run::rate).collect();
        let a: Vec<f64> = runs.iter().flat_map(|r| ms(&r.lat_a)).collect();
        let p99 = percentile_or_nan(&a, 99.0);
        if *clients == sizes.max_clients() {
            p99_max_clients = p99;
        }
        let _ = writeln!(
            md,
            "| {clients} | {} | {:.2} / {:.2} | {} | {} | {} |",
            med_range(&rates, 0),
            percentile_or_nan(&a, 50.0),
            p99,
            cpu_cell(runs, |c| c.0),
            cpu_cell(runs, |c| c.1),
            runs.iter()
                .map(|r| r.ops.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
        );
    }
    let row = TargetRow {
        measure: format!(
            "Introspection p99 ({} clients, `POST /v1/introspect`)",
            sizes.max_clients()
        ),
        measured: format!("{p99_max_clients:.2} ms"),
        target: format!("≤ {INTROSPECT_P99_MS} ms with 8 clients"),
        met: (!plan.smoke && p99_max_clients.is_finite())
            .then_some(p99_max_clients <= INTROSPECT_P99_MS),
    };
    (md, row)
}

// ---------------------------------------------------------------------------------------
// The part

pub fn run(inputs: &Inputs<'_>, plan: &Plan, dir: &Path) -> Result<Section> {
    let sizes = Sizes::of(plan);
    let started = Instant::now();
    let mut options = ControlPlaneOptions::new(inputs.cp_bin);
    options.admins = std::iter::once("alice".to_owned())
        .chain((1..=sizes.max_clients()).map(|c| format!("bench-{c}")))
        .collect();
    println!(
        "starting {} serve (bootstrap of {} admins) ...",
        inputs.cp_bin.display(),
        options.admins.len()
    );
    let mut cp = ControlPlane::start(&options)?;
    let fs_type = tools::output_of(
        Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(cp.db_path()),
    )
    .unwrap_or_default()
    .trim()
    .to_owned();
    println!("  {} on {} ({fs_type})", cp.url(), cp.db_path().display());

    println!(
        "seeding the database to {} tokens with the control plane's library ...",
        count(sizes.tokens)
    );
    let seeded = seed(&mut cp, &sizes).map_err(|e| format!("{e}\n{}", tail(&cp)))?;
    println!(
        "  {} tokens seeded in {:.1} s ({} transactions); database {}",
        count(seeded.ids.len()),
        seeded.seconds,
        seeded.transactions,
        tools::human_size(seeded.db_bytes)
    );

    println!(
        "search, page walk and CSV export over {} tokens:",
        count(sizes.tokens)
    );
    let search =
        measure_search(&cp, plan, &sizes, &seeded).map_err(|e| format!("{e}\n{}", tail(&cp)))?;
    println!("create + download pairs:");
    let create = measure_create(&cp, plan, &sizes).map_err(|e| format!("{e}\n{}", tail(&cp)))?;
    let rebuild = measure_rebuild(&cp, if plan.smoke { 2 } else { 20 })
        .map_err(|e| format!("{e}\n{}", tail(&cp)))?;
    println!("cost against the size of the data:");
    let scale = measure_scale(&cp, plan).map_err(|e| format!("{e}\n{}", tail(&cp)))?;
    println!("usage ingestion (batches of {BATCH}):");
    let usage =
        measure_usage(&cp, plan, &sizes, &seeded.ids).map_err(|e| format!("{e}\n{}", tail(&cp)))?;
    println!("introspection (RFC 7662):");
    let introspection =
        measure_introspect(&cp, plan, &sizes).map_err(|e| format!("{e}\n{}", tail(&cp)))?;
    let pid_alive = cp.is_running();
    drop(cp);
    if !pid_alive {
        return Err("the control plane stopped during the bench".into());
    }
    println!(
        "control plane part: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let raw = raw_results(&sizes, &seeded, &search, &create, &rebuild, &usage);
    let raw_path = dir.join("results.json");
    std::fs::write(&raw_path, format!("{raw:#}\n"))
        .map_err(|e| format!("writing {}: {e}", raw_path.display()))?;
    println!("  per-run figures in {}", raw_path.display());
    let mut section = report(
        inputs, plan, &sizes, &fs_type, &seeded, &search, &create, &rebuild, &usage,
    );
    section.body.push_str(&scale_report(&scale));
    let (md, row) = introspect_report(plan, &sizes, &introspection);
    section.body.push_str(&md);
    section.targets.push(row);
    Ok(section)
}

fn scale_report(s: &Scale) -> String {
    let ms = |v: &[f64], p: f64| format!("{:.2}", 1000.0 * percentile_or_nan(v, p));
    format!(
        "\n### Cost against the size of the data\n\n\
         | measure | p50 ms | p99 ms | calls |\n|---|---:|---:|---:|\n\
         | `GET /v1/me` with {} more organizations | {} | {} | {} |\n\
         | `GET /v1/me` (another user) while {} CSV exports of every token run | {} | {} | {} |\n\n\
         Every export meanwhile returned every row ({} exports, {} rows each). The server's \
         resident memory was {:.1} MiB before the exports and at most {:.1} MiB while {} of \
         them ({:.1} MiB each) streamed at once: the export holds one batch per stream, not \
         the file.\n",
        s.orgs,
        ms(&s.me_many_orgs, 50.0),
        ms(&s.me_many_orgs, 99.0),
        s.me_many_orgs.len(),
        s.exports,
        ms(&s.me_during_exports, 50.0),
        ms(&s.me_during_exports, 99.0),
        s.me_during_exports.len(),
        s.export_rows.len(),
        s.export_rows
            .first()
            .copied()
            .map(count)
            .unwrap_or_default(),
        s.rss_before_kib as f64 / 1024.0,
        s.rss_peak_kib as f64 / 1024.0,
        s.exports,
        s.export_bytes as f64 / 1_048_576.0,
    )
}

/// Every run's figures, written next to the report (`results.json`).
fn raw_results(
    sizes: &Sizes,
    seeded: &Seeded,
    search: &SearchResults,
    create: &[Vec<Run>],
    rebuild: &Rebuild,
    usage: &UsageResults,
) -> Value {
    let runs = |runs: &[Run]| -> Vec<Value> {
        runs.iter()
            .map(|r| {
                json!({
                    "ops": r.ops,
                    "seconds": r.secs,
                    "rate": r.rate(),
                    "p50_ms": [1000.0 * percentile_or_nan(&r.lat_a, 50.0), 1000.0 * percentile_or_nan(&r.lat_b, 50.0)],
                    "p99_ms": [1000.0 * percentile_or_nan(&r.lat_a, 99.0), 1000.0 * percentile_or_nan(&r.lat_b, 99.0)],
                    "cpu_server_machine": r.cpu.map(|(s, m)| vec![s, m]),
                })
            })
            .collect()
    };
    json!({
        "seed": {
            "tokens": seeded.ids.len() + seeded.boot,
            "seeded": seeded.ids.len(),
            "users": sizes.users,
            "seconds": seeded.seconds,
            "transactions": seeded.transactions,
            "minted": seeded.minted,
            "db_bytes": seeded.db_bytes,
        },
        "searches": search.searches.iter().map(|(label, query, total, secs)| json!({
            "label": label, "query": query, "total": total, "seconds": secs,
        })).collect::<Vec<_>>(),
        "page_walk": {"pages": search.walk_pages, "seconds": search.walk_secs},
        "csv": {"rows": search.csv_rows, "bytes": search.csv_bytes, "seconds": search.csv_secs},
        "create_download": sizes.clients.iter().zip(create).map(|(c, r)| json!({
            "clients": c, "runs": runs(r),
        })).collect::<Vec<_>>(),
        "me_after_download_seconds": {
            "first": rebuild.after_change,
            "second": rebuild.cached,
        },
        "usage": {
            "configurations": sizes.senders.iter().zip(&usage.runs).map(|(n, r)| json!({
                "senders": n, "runs": runs(r),
            })).collect::<Vec<_>>(),
            "sent": usage.sent,
            "logged": usage.logged,
        },
    })
}

/// The end of the server's log, for an error message.
fn tail(cp: &ControlPlane) -> String {
    let log = cp.log();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "--- control plane log (last lines) ---\n{}",
        lines[lines.len().saturating_sub(20)..].join("\n")
    )
}

// ---------------------------------------------------------------------------------------
// The report

#[allow(clippy::too_many_arguments)]
fn report(
    inputs: &Inputs<'_>,
    plan: &Plan,
    sizes: &Sizes,
    fs_type: &str,
    seeded: &Seeded,
    search: &SearchResults,
    create: &[Vec<Run>],
    rebuild: &Rebuild,
    usage: &UsageResults,
) -> Section {
    let bin = inputs
        .cp_bin
        .strip_prefix(inputs.root)
        .unwrap_or(inputs.cp_bin)
        .display()
        .to_string();
    let total = seeded.ids.len() + seeded.boot;
    let ms = |v: &[f64]| v.iter().map(|x| 1000.0 * x).collect::<Vec<f64>>();
    let mut md = String::new();

    let _ = writeln!(md, "### Method\n");
    let _ = writeln!(
        md,
        "- One real `tessera serve` (`{bin}`, release profile: `opt-level = 3`, LTO) on \
         loopback, started by `tessera_host_tests::ControlPlane`: `tessera admin \
         gen-master-key`, then `tessera admin bootstrap` for org `acme` and {admins} admins \
         (`alice`, who searches and exports, and `bench-1`…`bench-{maxc}`, one per \
         concurrent client), then `tessera serve`. The SQLite database (WAL, \
         `synchronous=FULL`) is in a temporary directory on the machine's disk \
         ({fs_type}). The store has one writer connection, whose concurrent writes are \
         group-committed (each in a savepoint of a batch; one fsync per batch; a call \
         answers only after its batch's commit is durable), and a pool of reader \
         connections (WAL: reads run beside the writer).\n\
         - The client is the host tests' HTTP/1.1 client: one TCP connection per request \
         (`Connection: close`); a latency is connect to last byte of the answer, measured by \
         the client. The clients run on the same {cores}-core machine as the server, with \
         other work going on, so the figures are noisy; the CPU columns show what the server \
         used.\n\
         - **Seeding.** Creating {total} tokens over HTTP would cost one fsync'd commit each \
         (at the 1-client create + download rate measured below, about {create_min:.0} min), so the \
         bench stops the server and writes them with the control plane's own library \
         (`service::create_user`, `service::create_token`, then `download`, `disable` or \
         `revoke` as the API does them: the same rows, status-list entries and audit \
         entries) in {tx} transactions of up to {chunk} tokens, then starts the server again \
         on the same database and port. The org then holds exactly {total} tokens: {seeded_n} \
         seeded for {users} users (role `user`) plus the {boot} bootstrap admin tokens. \
         Each seeded token gets the clock of its own call (one a second, the last one a \
         second before the seed), as if created over the preceding hours. Seeded tokens \
         are named `<team>-<purpose>-<nnnnnn>` (10 teams, 5 purposes) with a \
         description naming both and the owner; lifetimes 30–365 days, three scope sets, a \
         quarter with an IP filter; 70 % enabled (downloaded), 10 % pending, 10 % disabled, \
         10 % revoked.\n\
         - **Search and CSV** (`alice`, an org admin, so every token of the org is in \
         scope). Each search is sent {reps} times per round (plus one untimed request first); \
         every answer's `total` must equal the number the seed defines and the page must \
         hold tokens. `q` is a case-insensitive substring of name, description, username or \
         display name, found through a trigram full-text index (3 characters or more). The \
         page walk reads every page of {walk_pp} (`per_page` maximum) in the default order \
         (newest first), each after the first from the previous page's `next` cursor \
         (`after=`, keyset paging), and must see every token exactly once. The CSV export \
         (`GET /v1/tokens.csv`, no filter) must parse (RFC 4180) to the documented header \
         and one row per token (the export streams every row, in batches read with keyset \
         paging).\n\
         - **Create + download.** Each client (a thread, its own admin) repeats: `POST \
         /v1/tokens` (`{{\"name\":\"bench-<n>\",\"scopes\":[\"read\"],\"lifetime_days\":90}}`, \
         must be 201 and `pending`), then `POST /v1/tokens/<id>/download` (must be 200 with a \
         JWT and status `enabled`). A pair is both calls; pairs/s is pairs completed by all \
         clients divided by the wall time from the common start until the last client's \
         last pair ({seconds} s measured after {warmup} s of untimed warm-up, per \
         configuration and round). **Each create and each download is its own write, \
         answered only once it is committed and fsync'd (`synchronous=FULL`)**; concurrent \
         writes share a commit, so one client waits for two fsyncs per pair and eight \
         clients share them; the download also signs the JWT (Ed25519) and allocates a \
         status-list index. A duplicate name is refused by the store's unique index.\n\
         - **Usage.** Each sender (a thread) posts batches of {batch} events (`POST \
         /v1/usage` with an edge credential from `POST /v1/orgs/acme/edge-credentials`), \
         each event for a random seeded token, stamped with the current second, 90 % \
         `allow` (which may also update the token's last use) and 10 % `deny`; each answer \
         must be 200 with every event accepted. One batch is one write transaction (one \
         fsync). Afterwards every event sent (warm-up included) is counted back through \
         `GET /v1/auth-log` (one second at a time, pages of {log_pp}).\n\
         - Rounds: {rounds}; rates are the median over rounds with the range in brackets; \
         latency percentiles are over every call of every round of that configuration.\n",
        admins = 1 + sizes.max_clients(),
        maxc = sizes.max_clients(),
        cores = cpu_count(),
        create_min = {
            let r = create
                .first()
                .map(|runs| median(&runs.iter().map(Run::rate).collect::<Vec<_>>()))
                .unwrap_or(f64::NAN);
            total as f64 / r / 60.0
        },
        tx = seeded.transactions,
        chunk = count(SEED_CHUNK),
        total = count(total),
        seeded_n = count(seeded.ids.len()),
        users = count(sizes.users),
        boot = seeded.boot,
        reps = sizes.search_reps,
        walk_pp = WALK_PER_PAGE,
        seconds = plan.seconds,
        warmup = plan.warmup,
        batch = BATCH,
        log_pp = LOG_PER_PAGE,
        rounds = plan.rounds,
    );

    let _ = writeln!(md, "### Commands\n");
    let _ = writeln!(
        md,
        "```sh\n\
         cargo xtask bench --only control-plane      # this part alone (target/bench/BENCHMARKS-partial.md)\n\
         \n\
         # what it runs (<tmp> is a fresh temporary directory, <port> a free loopback port):\n\
         {bin} admin gen-master-key > <tmp>/master.key\n\
         TESSERA_MASTER_KEY_FILE=<tmp>/master.key {bin} admin bootstrap --db <tmp>/tessera-0.db \
         --org acme --admin alice --base-url http://127.0.0.1:<port> -o json   # and --admin bench-1 … bench-{maxc}\n\
         TESSERA_MASTER_KEY_FILE=<tmp>/master.key {bin} serve --db <tmp>/tessera-0.db \
         --listen 127.0.0.1:<port> --base-url http://127.0.0.1:<port>\n\
         # (stopped, seeded in-process with tessera_control_plane::service, started again)\n\
         \n\
         # then, over HTTP/1.1 with Authorization: Bearer <admin token>:\n\
         GET  /v1/tokens?<query>                        # the searches below\n\
         GET  /v1/tokens?per_page={WALK_PER_PAGE}  then  &after=<next> ({pages} pages)\n\
         GET  /v1/tokens.csv\n\
         POST /v1/tokens  +  POST /v1/tokens/<id>/download     # per client, in a loop\n\
         POST /v1/usage  (Authorization: Bearer <edge credential>, {BATCH} events)\n\
         GET  /v1/auth-log?since=<s>&until=<s+1>&per_page={LOG_PER_PAGE}&page=<n>\n\
         POST /v1/introspect  (Authorization: Bearer <edge credential>, form token=<admin token>)\n\
         ```\n",
        maxc = sizes.max_clients(),
        pages = search.walk_pages,
    );

    let _ = writeln!(md, "### Results\n");
    let _ = writeln!(
        md,
        "Seeding: {} tokens and {} users written in {:.1} s through the library ({} \
         transactions); database and WAL files {} afterwards.\n",
        count(seeded.ids.len()),
        count(sizes.users),
        seeded.seconds,
        seeded.transactions,
        tools::human_size(seeded.db_bytes)
    );

    let _ = writeln!(md, "**Tokens created and downloaded per second**\n");
    let _ = writeln!(
        md,
        "| clients | pairs/s | create p50 / p99 ms | download p50 / p99 ms | server CPU (cores) | machine CPU (cores) | pairs per round |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---|");
    for (clients, runs) in sizes.clients.iter().zip(create) {
        let rates: Vec<f64> = runs.iter().map(Run::rate).collect();
        let a: Vec<f64> = runs.iter().flat_map(|r| ms(&r.lat_a)).collect();
        let b: Vec<f64> = runs.iter().flat_map(|r| ms(&r.lat_b)).collect();
        let _ = writeln!(
            md,
            "| {clients} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {} | {} | {} |",
            med_range(&rates, 1),
            percentile_or_nan(&a, 50.0),
            percentile_or_nan(&a, 99.0),
            percentile_or_nan(&b, 50.0),
            percentile_or_nan(&b, 99.0),
            cpu_cell(runs, |c| c.0),
            cpu_cell(runs, |c| c.1),
            runs.iter()
                .map(|r| r.ops.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
        );
    }
    let _ = writeln!(
        md,
        "\nA pair is two calls, so tokens created per second equal pairs/s and API calls per \
         second are twice that. These ran after the seed, with {} tokens already in the \
         org. Server CPU well under one core means the server spent the time waiting — on \
         its commits, on the clients, or for a CPU that the clients and other work on the \
         machine held — rather than computing. One client is bound by the fsync of each \
         commit; with more clients, writes that arrive during a commit share the next one, \
         so throughput grows until the CPU is spent.\n",
        count(total)
    );

    let _ = writeln!(
        md,
        "The API's verifier after a status-list change: every download (and every revoke, \
         disable or enable) moves the org's status list; the API's verifier of that org \
         (`control-plane/src/service/verifiers.rs`) applies only the entries changed since \
         its version on the next authenticated call. Measured directly \
         ({} times: create + download as `bench-1`, then `GET /v1/me` twice): the first \
         `GET /v1/me` took {} ms (median, range), the second {} ms, with {} indices \
         allocated by the seed alone.\n",
        rebuild.cached.len(),
        med_range(&ms(&rebuild.after_change), 1),
        med_range(&ms(&rebuild.cached), 1),
        count(seeded.minted),
    );
    let _ = writeln!(
        md,
        "**Search over {} tokens** (`GET /v1/tokens`)\n",
        count(total)
    );
    let _ = writeln!(
        md,
        "| search | query | matches (`total`) | ms, median (range) | requests |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|");
    for (label, query, expected, secs) in &search.searches {
        let _ = writeln!(
            md,
            "| {label} | `{query}` | {} | {} | {} |",
            count(*expected),
            med_range(&ms(secs), 1),
            secs.len()
        );
    }
    let walk_rate: Vec<f64> = search.walk_secs.iter().map(|s| total as f64 / s).collect();
    let csv_rate: Vec<f64> = search
        .csv_secs
        .iter()
        .map(|s| search.csv_rows as f64 / s)
        .collect();
    let _ = writeln!(
        md,
        "\n**Full page walk and CSV export over {} tokens**\n",
        count(total)
    );
    let _ = writeln!(
        md,
        "| what | requests | rows | bytes | seconds, median (range) | rows/s, median (range) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| page walk (`per_page={WALK_PER_PAGE}`, every page) | {} | {} | — | {} | {} |",
        search.walk_pages,
        count(total),
        med_range(&search.walk_secs, 2),
        med_range(&walk_rate, 0),
    );
    let _ = writeln!(
        md,
        "| CSV export (`GET /v1/tokens.csv`) | 1 | {} | {} | {} | {} |",
        count(search.csv_rows),
        tools::human_size(search.csv_bytes as u64),
        med_range(&search.csv_secs, 2),
        med_range(&csv_rate, 0),
    );
    let _ = writeln!(
        md,
        "\nThe page walk uses `LIMIT/OFFSET`, so later pages cost more than early ones \
         (the last-page search above is the worst single page).\n"
    );

    let _ = writeln!(
        md,
        "**Usage events ingested per second** (`POST /v1/usage`, {BATCH} events a batch)\n"
    );
    let _ = writeln!(
        md,
        "| senders | events/s | batch p50 / p99 ms | server CPU (cores) | machine CPU (cores) | events per round |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---|");
    for (senders, runs) in sizes.senders.iter().zip(&usage.runs) {
        let rates: Vec<f64> = runs.iter().map(Run::rate).collect();
        let a: Vec<f64> = runs.iter().flat_map(|r| ms(&r.lat_a)).collect();
        let _ = writeln!(
            md,
            "| {senders} | {} | {:.1} / {:.1} | {} | {} | {} |",
            med_range(&rates, 0),
            percentile_or_nan(&a, 50.0),
            percentile_or_nan(&a, 99.0),
            cpu_cell(runs, |c| c.0),
            cpu_cell(runs, |c| c.1),
            runs.iter()
                .map(|r| count(r.ops))
                .collect::<Vec<_>>()
                .join(" / "),
        );
    }
    let _ = writeln!(
        md,
        "\nThe authentication log holds every event sent: {} counted back through \
         `GET /v1/auth-log` ({} sent, warm-up included; counting took {:.1} s).\n",
        count(usage.logged),
        count(usage.sent),
        usage.count_secs
    );
    Section {
        title: "Control plane".into(),
        body: md,
        targets: Vec::new(),
    }
}

fn cpu_cell(runs: &[Run], pick: fn((f64, f64)) -> f64) -> String {
    let v: Vec<f64> = runs.iter().filter_map(|r| r.cpu.map(pick)).collect();
    if v.is_empty() {
        "n/a".into()
    } else {
        format!("{:.2}", median(&v))
    }
}

/// Releases the threads waiting on `barrier` and joins them: their results and the seconds
/// from the release until the last one ended.
fn release_and_join<'scope, T>(
    barrier: &std::sync::Barrier,
    handles: Vec<std::thread::ScopedJoinHandle<'scope, Result<T>>>,
    who: &str,
) -> (Vec<Result<T>>, f64) {
    barrier.wait();
    let start = Instant::now();
    let results = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(format!("a {who} thread panicked")))
        })
        .collect();
    (results, start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_mix() {
        let n = 100_000;
        let of = |s: SeedStatus| (0..n).filter(|&i| seed_status(i) == s).count();
        assert_eq!(of(SeedStatus::Enabled), 70_000);
        assert_eq!(of(SeedStatus::Pending), 10_000);
        assert_eq!(of(SeedStatus::Disabled), 10_000);
        assert_eq!(of(SeedStatus::Revoked), 10_000);
        assert_eq!(seed_name(42), "billing-reporting-000042");
        // The name search matches exactly one token, and team names do not overlap.
        let list = searches(n - 9, 9, 1_000);
        assert_eq!(list[0].expected, 1);
        assert_eq!(
            (0..n - 9)
                .filter(|&i| seed_name(i).contains(&list[0].query[2..]))
                .count(),
            1
        );
        for t in TEAMS {
            assert_eq!(TEAMS.iter().filter(|o| o.contains(t)).count(), 1, "{t}");
        }
    }

    #[test]
    fn seed_bodies_are_valid_requests() {
        for i in 0..40 {
            let body = seed_body(i, 20);
            let req: service::input::CreateToken =
                serde_json::from_value(body).expect("valid body");
            assert_eq!(req.name, seed_name(i));
        }
    }

    #[test]
    fn chunked() {
        let body = dechunk(b"4\r\nabcd\r\n3;x=1\r\nefg\r\n0\r\n\r\n").expect("valid");
        assert_eq!(body, b"abcdefg");
        assert!(dechunk(b"4\r\nab").is_none());
    }

    #[test]
    fn figures() {
        assert_eq!(count(100_000), "100,000");
        assert_eq!(count(999), "999");
        assert_eq!(med_range(&[1.0, 3.0, 2.0], 1), "2.0 (1.0–3.0)");
    }
}
