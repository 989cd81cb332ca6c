//! The PostgreSQL backend, for several `tessera serve` replicas on one database.
//!
//! - Driver: the synchronous `postgres` client with an `r2d2` pool (`r2d2_postgres`); the
//!   `Store` trait is synchronous and runs on blocking threads, like the SQLite backend.
//! - TLS over rustls as the URL's `sslmode` and `sslrootcert` say (`tls.rs`): `prefer`
//!   (the default) and `require` encrypt, `verify-full` also checks the CA and host name.
//! - Read transactions are `REPEATABLE READ, READ ONLY` snapshots (as SQLite's readers);
//!   write transactions are `READ COMMITTED`, and every getter that reads one row inside a
//!   write takes `FOR UPDATE`, so the services' read-modify-write (status-list index
//!   allocation on the org row, version bumps, sessions, throttles) is race-free across
//!   processes: a second writer waits for the first's commit and then reads its result.
//! - A transaction that lost a deadlock or a serialization race (40P01/40001) is rolled
//!   back and run again, up to [`ATTEMPTS`] times in all, after a short jittered pause;
//!   only then, like a lost connection or a pool checkout that times out, it is
//!   `StoreError::Unavailable` (the API answers 503). A constraint violation is `Conflict`.
//! - Fail fast while the database is down: a lost connection or a checkout that timed out
//!   starts a background probe; while the probe cannot connect the store is marked down and
//!   every transaction is answered `Unavailable` at once, without waiting for a connection,
//!   until the probe connects again ([`Health`]).
//! - Migrations are the numbered `MIGRATIONS` (their PostgreSQL texts), recorded in
//!   `tessera_migrations`, applied under an advisory lock so that replicas starting
//!   together migrate once.
//! - Replicas: a write that changed a status list or key set sends `NOTIFY tessera_edges`
//!   in its transaction (delivered on commit); every store LISTENs on its own connection
//!   and wakes its long polls (`watch_remote_changes`).
//! - The authentication log is partitioned by day; retention drops whole partitions.

use super::migrations::MIGRATIONS;
use super::sql::{like_pattern, one, Args, Conn, Dialect, Engine, SqlRow, TextCondition, Value};
use super::{Store, StoreError, StoreResult, Tx};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use postgres::{Client, Row};
use r2d2::Pool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod tls;
pub use tls::Connect;

/// Statements kept prepared per connection (each is parsed and planned once, and a query
/// then costs one round trip instead of two).
const STATEMENT_CACHE: usize = 128;

/// A pooled connection and its prepared statements.
pub(crate) struct PgConn {
    client: Client,
    statements: HashMap<String, postgres::Statement>,
}

impl PgConn {
    /// The prepared statement of `sql`, prepared on first use.
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(&pg_placeholders(sql))?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

/// The shared SQL's `?n` placeholders as PostgreSQL's `$n` (no statement has a `?` in a
/// literal or an operator; a statement written with `$n` is left as it is).
fn pg_placeholders(sql: &str) -> String {
    sql.replace('?', "$")
}

/// The pool's connections: `r2d2_postgres`'s manager keeps no prepared statements, so
/// this one (the same three calls) wraps each client with its statement cache.
pub(crate) struct Manager {
    connect: Connect,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.connect.open()?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

/// Connections one process keeps at most.
const POOL_SIZE: u32 = 16;
/// How long a request waits for a connection before it is answered 503: short, so that
/// while PostgreSQL is down requests fail fast instead of piling up.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a readiness check waits for a pooled connection.
const READY_CHECKOUT: Duration = Duration::from_millis(1000);
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The advisory lock migrations run under (any constant; "tessera" in ASCII).
const MIGRATION_LOCK: i64 = 0x0074_6573_7365_7261;
/// The advisory lock creating and dropping authentication-log partitions runs under.
const PARTITION_LOCK: i64 = 0x0074_6573_7365_7262;
/// The NOTIFY channel of status-list and key-set changes.
pub const CHANNEL: &str = "tessera_edges";
/// Daily partitions of the authentication log created ahead of today.
const PARTITIONS_AHEAD: i64 = 7;
const DAY: i64 = 86_400;

pub struct PostgresStore {
    /// `None` only while dropping.
    pool: Option<Pool<Manager>>,
    connect: Connect,
    /// Whether the database is known to be unreachable.
    health: Arc<Health>,
    /// Set on drop: the LISTEN thread ends.
    stop: Arc<AtomicBool>,
    /// This store's NOTIFY payload: its own notifications are not remote changes (its
    /// process already woke its long polls).
    instance: String,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Closing the connections closes their client runtimes, which tokio forbids on
        // an async thread: it is done on a thread of its own (and waited for, so that
        // the connections are closed when the store is gone).
        if let Some(pool) = self.pool.take() {
            off_runtime(move || drop(pool));
        }
    }
}

/// Runs `f` on a thread of its own when called on a tokio runtime's thread: the
/// synchronous client runs its own small runtime, which cannot start (or stop) inside
/// another. Store calls from `spawn_blocking` threads and plain threads run in place.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| match s.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    } else {
        f()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("postgres: {what}: {e}"))
}

/// How often the probe tries to connect while the database is down.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// What the store knows of its database's reachability. A lost connection (or a checkout
/// that timed out) is a suspicion: one probe thread connects to find out. While it cannot,
/// the store is `down` and answers at once; its first successful connection clears it.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    probing: AtomicBool,
    /// Why the last probe failed (for the answer's log detail).
    last: Mutex<String>,
}

impl Health {
    /// `Unavailable` at once while the database is known to be down.
    fn check(&self) -> StoreResult<()> {
        if !self.down.load(Ordering::SeqCst) {
            return Ok(());
        }
        let last = self.last.lock().map(|l| l.clone()).unwrap_or_default();
        Err(StoreError::Unavailable(format!(
            "postgres: the database is unreachable; reconnecting in the background (last attempt: {last})"
        )))
    }

    /// A connection was lost: start the probe (one at a time) unless it runs.
    fn suspect(self: &Arc<Self>, connect: &Connect, stop: &Arc<AtomicBool>) {
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let (health, connect, stop) = (self.clone(), connect.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("tessera-pg-probe".into())
            .spawn(move || health.probe(&connect, &stop));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "postgres: cannot start the reconnect probe");
            self.probing.store(false, Ordering::SeqCst);
        }
    }

    fn probe(&self, connect: &Connect, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            let tried = connect
                .open()
                .and_then(|mut c| c.simple_query("SELECT 1").map(|_| ()));
            match tried {
                Ok(()) => {
                    if self.down.swap(false, Ordering::SeqCst) {
                        tracing::info!("postgres: the database is reachable again");
                    }
                    break;
                }
                // Too many connections or out of resources: the server runs, and the
                // pool's open connections may serve; not "down".
                Err(e) if e.code().is_some_and(|c| c.code().starts_with("53")) => break,
                Err(e) => {
                    if let Ok(mut last) = self.last.lock() {
                        *last = connect.explain(&e);
                    }
                    if !self.down.swap(true, Ordering::SeqCst) {
                        tracing::warn!(error = %connect.explain(&e), "postgres: the database is unreachable; requests are answered 503 until it is back");
                    }
                }
            }
            std::thread::sleep(PROBE_EVERY);
        }
        self.probing.store(false, Ordering::SeqCst);
    }
}

/// Attempts of a transaction that keeps losing deadlocks or serialization races.
const ATTEMPTS: u32 = 3;

/// Whether `e` is a lost deadlock (40P01) or serialization race (40001).
fn collision(e: &postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| matches!(c.code(), "40P01" | "40001"))
}

/// The pause before attempt `attempt + 1`: 5 ms doubled per attempt, plus up to as much
/// again at random, so that two transactions that collided do not collide again in step.
fn retry_pause(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    let mut r = [0u8; 2];
    let jitter = match getrandom::getrandom(&mut r) {
        Ok(()) => u64::from(u16::from_le_bytes(r)) % (base + 1),
        Err(_) => base / 2,
    };
    Duration::from_millis(base + jitter)
}

/// Whether `e` says the connection (or the server) is gone, rather than that a statement
/// failed.
fn connection_lost(e: &postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let code = code.code();
        // Connection exceptions; admin or crash shutdown, cannot connect now.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            if code.starts_with("23") {
                return StoreError::Conflict("the change conflicts with an existing record".into());
            }
            if code == "40P01" || code == "40001" {
                return StoreError::Unavailable(format!(
                    "postgres: the transaction collided with a concurrent one ({code}: {}); try again",
                    db.message()
                ));
            }
            // Connection exceptions, shutdown, too many connections, out of resources.
            if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") {
                return StoreError::Unavailable(format!("postgres: {code}: {}", db.message()));
            }
            return StoreError::Backend(format!("postgres: {code}: {}", db.message()));
        }
        let io = std::error::Error::source(&e)
            .map(|s| s.is::<std::io::Error>())
            .unwrap_or(false);
        if e.is_closed() || io {
            return unavailable("connection lost", e);
        }
        StoreError::Backend(format!("postgres: {e}"))
    }
}

/// Reads column `i`; a value of the wrong shape is `Corrupt`.
fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> StoreResult<T> {
    r.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("postgres: column {i}: {e}")))
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`), migrates the schema
    /// and opens the pool.
    pub fn open(url: &str) -> StoreResult<Self> {
        off_runtime(|| Self::open_here(url))
    }

    fn open_here(url: &str) -> StoreResult<Self> {
        let mut connect = Connect::parse(url).map_err(StoreError::Backend)?;
        let config = &mut connect.config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("tessera");
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        migrate(&connect)?;
        let manager = Manager {
            connect: connect.clone(),
        };
        // Every checkout is tested (a connection broken by a restart of the server is
        // discarded, and a new one opened), and fails after CHECKOUT_TIMEOUT.
        let pool = Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CHECKOUT_TIMEOUT)
            .test_on_check_out(true)
            .build_unchecked(manager);
        let mut id = [0u8; 12];
        getrandom::getrandom(&mut id)
            .map_err(|e| StoreError::Backend(format!("getrandom: {e}")))?;
        Ok(PostgresStore {
            pool: Some(pool),
            health: Arc::new(Health::default()),
            connect,
            stop: Arc::new(AtomicBool::new(false)),
            instance: URL_SAFE_NO_PAD.encode(id),
        })
    }

    fn checkout(&self) -> StoreResult<r2d2::PooledConnection<Manager>> {
        self.pool
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("postgres: the store is closing".into()))?
            .get()
            .map_err(|e| unavailable("no connection to the database", e))
    }

    /// Creates the daily authentication-log partitions from yesterday to
    /// [`PARTITIONS_AHEAD`] days ahead, where missing. Events of such a day already in
    /// the default partition (written before its partition existed) move into it.
    fn ensure_partitions(&self, client: &mut Client, now: i64) -> StoreResult<()> {
        let today = now.div_euclid(DAY);
        for day in today - 1..=today + PARTITIONS_AHEAD {
            let name = format!("auth_events_d{day}");
            let (lo, hi) = (day * DAY, (day + 1) * DAY);
            let mut tx = client.transaction()?;
            tx.batch_execute("SET LOCAL lock_timeout = '5s'")?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])?;
            let exists: bool = get(
                &tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])?,
                0,
            )?;
            if exists {
                continue;
            }
            // ATTACH alone locks the parent only against other schema changes: an insert
            // routed by the old partition map to the default partition would wait for it
            // and then fail the default's narrowed constraint. Inserts wait here instead
            // (milliseconds, once a day) and route by the new map.
            let made = tx.batch_execute(&format!(
                "LOCK TABLE auth_events IN ACCESS EXCLUSIVE MODE; CREATE TABLE {name} (LIKE auth_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);                  WITH moved AS (DELETE FROM auth_events_default WHERE at >= {lo} AND at < {hi} RETURNING *)                  INSERT INTO {name} SELECT * FROM moved;                  ALTER TABLE auth_events ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
            ));
            match made {
                Ok(()) => tx.commit()?,
                Err(e) => {
                    drop(tx);
                    tracing::warn!(day, error = %StoreError::from(e), "auth_events: partition not created");
                }
            }
        }
        Ok(())
    }
}

/// Applies the missing migrations, once, under an advisory lock (replicas starting
/// together wait for the first to finish, then find nothing to do).
fn migrate(connect: &Connect) -> StoreResult<()> {
    let mut client = connect
        .open()
        .map_err(|e| unavailable("cannot connect", connect.explain(&e)))?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let r = migrate_locked(&mut client);
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    r
}

fn migrate_locked(client: &mut Client) -> StoreResult<()> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS tessera_migrations (\
         version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )?;
    let current = schema_version_of(client)?;
    let latest = super::migrations::latest();
    if current > latest {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this binary ({latest})"
        )));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        let mut tx = client.transaction()?;
        tx.batch_execute(m.postgres)?;
        tx.execute(
            "INSERT INTO tessera_migrations (version) VALUES ($1)",
            &[&version],
        )?;
        tx.commit()?;
        tracing::info!(version, "postgres: migration applied");
    }
    Ok(())
}

fn schema_version_of(client: &mut Client) -> StoreResult<i64> {
    let row = client.query_one(
        "SELECT coalesce(max(version), 0) FROM tessera_migrations",
        &[],
    )?;
    get(&row, 0)
}

impl Store for PostgresStore {
    fn schema_version(&self) -> StoreResult<i64> {
        off_runtime(|| schema_version_of(&mut self.checkout()?.client))
    }

    fn transaction(
        &self,
        write: bool,
        f: &mut dyn FnMut(&mut dyn Tx) -> StoreResult<()>,
    ) -> StoreResult<()> {
        // The client blocks on a runtime of its own: on a worker of a multi-threaded
        // runtime (a CLI command's setup code), step out of the worker first.
        // `spawn_blocking` threads and plain threads run it in place.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.transaction_here(write, f))
            }
            _ => self.transaction_here(write, f),
        }
    }
    fn watch_remote_changes(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let connect = self.connect.clone();
        let stop = self.stop.clone();
        let health = self.health.clone();
        let instance = self.instance.clone();
        // The first LISTEN is in place before this returns: a change committed after it
        // is never missed. (If it fails, the thread retries, and wakes once it listens.)
        let first = off_runtime(|| match connect.open() {
            Ok(mut c) => match c.batch_execute(&format!("LISTEN {CHANNEL}")) {
                Ok(()) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "postgres: LISTEN failed; retrying");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "postgres: LISTEN connection failed; retrying");
                None
            }
        });
        let spawned = std::thread::Builder::new()
            .name("tessera-pg-listen".into())
            .spawn(move || listen(connect, stop, health, instance, wake, first));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "postgres: cannot start the LISTEN thread");
        }
    }

    fn prune_auth_log(&self, now: i64, keep_days: i64) -> StoreResult<u64> {
        off_runtime(|| self.prune_here(now, keep_days))
    }

    /// `Unavailable` at once while the database is known to be down; else `SELECT 1` on a
    /// pooled connection, waiting at most [`READY_CHECKOUT`] for one.
    fn ready(&self) -> StoreResult<()> {
        self.health.check()?;
        off_runtime(|| {
            let pool = self
                .pool
                .as_ref()
                .ok_or_else(|| StoreError::Unavailable("postgres: the store is closing".into()))?;
            let mut conn = pool.get_timeout(READY_CHECKOUT).map_err(|e| {
                self.suspect();
                unavailable("no connection to the database", e)
            })?;
            conn.client.simple_query("SELECT 1").map_err(|e| {
                if connection_lost(&e) {
                    self.suspect();
                }
                StoreError::from(e)
            })?;
            Ok(())
        })
    }
}

impl PostgresStore {
    /// Runs `f` in a transaction, again (up to [`ATTEMPTS`] in all) when it lost a
    /// deadlock or a serialization race: PostgreSQL aborted it whole, so nothing of it
    /// was kept, and the body runs anew on a new snapshot.
    fn transaction_here(
        &self,
        write: bool,
        f: &mut dyn FnMut(&mut dyn Tx) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut attempt = 1;
        loop {
            let (r, collided) = self.attempt(write, f);
            if !collided || r.is_ok() || attempt >= ATTEMPTS {
                return r;
            }
            tracing::debug!(
                attempt,
                "postgres: transaction collided with a concurrent one; running it again"
            );
            std::thread::sleep(retry_pause(attempt));
            attempt += 1;
        }
    }

    /// One attempt of [`Self::transaction_here`], and whether it lost a race.
    fn attempt(
        &self,
        write: bool,
        f: &mut dyn FnMut(&mut dyn Tx) -> StoreResult<()>,
    ) -> (StoreResult<()>, bool) {
        if let Err(e) = self.health.check() {
            return (Err(e), false);
        }
        let mut pooled = match self.checkout() {
            Ok(p) => p,
            Err(e) => {
                self.suspect();
                return (Err(e), false);
            }
        };
        let conn = &mut *pooled;
        let begun = conn.client.batch_execute(if write {
            "BEGIN ISOLATION LEVEL READ COMMITTED"
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        });
        if let Err(e) = begun {
            if connection_lost(&e) {
                self.suspect();
            }
            return (Err(e.into()), false);
        }
        let mut tx = PgTx {
            c: conn,
            write,
            failed: None,
            lost: false,
            collided: false,
            instance: &self.instance,
        };
        let r = f(&mut tx);
        let failed = tx.failed.take();
        let collided = tx.collided;
        if tx.lost {
            self.suspect();
        }
        let r = match (r, failed) {
            (Ok(()), None) => match conn.client.batch_execute("COMMIT") {
                Ok(()) => Ok(()),
                Err(e) => {
                    if connection_lost(&e) {
                        self.suspect();
                    }
                    let lost_race = collision(&e);
                    return (Err(e.into()), lost_race);
                }
            },
            (Ok(()), Some(e)) => {
                // A statement failed and the body went on: PostgreSQL has aborted the
                // transaction, so nothing of it may be reported as committed.
                let _ = conn.client.batch_execute("ROLLBACK");
                Err(e)
            }
            (Err(e), _) => {
                let _ = conn.client.batch_execute("ROLLBACK");
                Err(e)
            }
        };
        (r, collided)
    }

    fn suspect(&self) {
        self.health.suspect(&self.connect, &self.stop);
    }

    fn prune_here(&self, now: i64, keep_days: i64) -> StoreResult<u64> {
        let mut pooled = self.checkout()?;
        let c = &mut pooled.client;
        self.ensure_partitions(c, now)?;
        let cutoff = now.saturating_sub(keep_days.saturating_mul(DAY));
        let rows = c.query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'auth_events'::regclass",
            &[],
        )?;
        let mut removed = 0u64;
        for row in rows {
            let name: String = get(&row, 0)?;
            let Some(day) = name
                .strip_prefix("auth_events_d")
                .and_then(|d| d.parse::<i64>().ok())
            else {
                continue;
            };
            if (day + 1) * DAY > cutoff {
                continue;
            }
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL lock_timeout = '5s'")?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])?;
            let n: i64 = get(
                &tx.query_one(&format!("SELECT count(*) FROM {name}"), &[])?,
                0,
            )?;
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))?;
            tx.commit()?;
            tracing::info!(partition = %name, events = n, "auth_events: partition dropped");
            removed += n as u64;
        }
        // Events of days without a partition.
        let n = c.execute("DELETE FROM auth_events_default WHERE at < $1", &[&cutoff])?;
        Ok(removed + n)
    }
}

/// The LISTEN loop of [`Store::watch_remote_changes`]: wakes on every notification from
/// another store, and also whenever notifications may have been missed (the connection
/// was lost, and again once listening anew), reconnecting with a backoff until the store
/// is dropped.
fn listen(
    connect: Connect,
    stop: Arc<AtomicBool>,
    health: Arc<Health>,
    instance: String,
    wake: Box<dyn Fn() + Send + Sync>,
    mut first: Option<Client>,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    // Short: while nobody listens, a change on another replica reaches this one's long
    // polls only once listening resumes (with a wake).
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff = MIN_BACKOFF;
    let mut lost = first.is_none();
    while !stop.load(Ordering::SeqCst) {
        let mut client = match first.take() {
            Some(c) => c,
            None => {
                let connected = connect.open().and_then(|mut c| {
                    c.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                    Ok(c)
                });
                match connected {
                    Ok(c) => {
                        tracing::info!("postgres: listening for other replicas' changes");
                        backoff = MIN_BACKOFF;
                        // Changes made while nobody listened are not replayed: re-read.
                        wake();
                        c
                    }
                    Err(e) => {
                        if !lost {
                            tracing::warn!(error = %e, "postgres: LISTEN connection failed; retrying");
                        }
                        lost = true;
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        match watch(&mut client, &stop, &instance, &*wake) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "postgres: LISTEN connection lost; reconnecting");
                lost = true;
                // The server may be gone: find out now rather than at the next request.
                health.suspect(&connect, &stop);
                // Notifications may have been missed.
                wake();
            }
        }
    }
}

/// Waits for notifications on a listening connection until the store is dropped (`Ok`)
/// or the connection fails. An idle connection is checked every few seconds, so that a
/// server gone without closing the socket is noticed.
fn watch(
    client: &mut Client,
    stop: &AtomicBool,
    instance: &str,
    wake: &(dyn Fn() + Send + Sync),
) -> Result<(), postgres::Error> {
    const TICK: Duration = Duration::from_millis(250);
    const PING: Duration = Duration::from_secs(5);
    let mut pinged = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut remote = false;
        {
            let mut n = client.notifications();
            let first = n.timeout_iter(TICK).next()?;
            if let Some(first) = first {
                remote |= first.payload() != instance;
                // Drain what else is buffered: one wake covers them all.
                let mut more = n.iter();
                while let Some(m) = more.next()? {
                    remote |= m.payload() != instance;
                }
            }
        }
        if remote {
            wake();
        } else if pinged.elapsed() >= PING {
            client.batch_execute("SELECT 1")?;
            pinged = Instant::now();
        }
    }
}

/// One transaction on one pooled connection.
pub(crate) struct PgTx<'a> {
    c: &'a mut PgConn,
    write: bool,
    /// The first statement error, kept even when the body ignored it.
    failed: Option<StoreError>,
    /// Whether a statement failed because the connection is gone.
    lost: bool,
    /// Whether a statement lost a deadlock or a serialization race (the transaction may
    /// run again).
    collided: bool,
    /// The store's NOTIFY payload.
    instance: &'a str,
}

impl PgTx<'_> {
    fn note<T>(&mut self, r: Result<T, postgres::Error>) -> StoreResult<T> {
        r.map_err(|e| {
            self.lost |= connection_lost(&e);
            self.collided |= collision(&e);
            let e = StoreError::from(e);
            if self.failed.is_none() {
                self.failed = Some(e.clone());
            }
            e
        })
    }

    fn rows(&mut self, sql: &str, args: &[Value]) -> StoreResult<Vec<Row>> {
        if has_nul(args) {
            // No stored text holds a NUL (PostgreSQL refuses them), so nothing matches;
            // sending it would abort the transaction.
            return Ok(Vec::new());
        }
        let p = refs(args);
        let r = self
            .c
            .statement(sql)
            .and_then(|st| self.c.client.query(&st, &p));
        self.note(r)
    }

    /// Runs a statement, kept prepared when `prepared`.
    fn run(&mut self, sql: &str, args: &[Value], prepared: bool) -> StoreResult<u64> {
        if has_nul(args) {
            if sql.trim_start().starts_with("INSERT") {
                return Err(StoreError::Conflict(
                    "text with a NUL character cannot be stored".into(),
                ));
            }
            return Ok(0);
        }
        let p = refs(args);
        let r = if prepared {
            self.c
                .statement(sql)
                .and_then(|st| self.c.client.execute(&st, &p))
        } else {
            self.c.client.execute(pg_placeholders(sql).as_str(), &p)
        };
        self.note(r)
    }
}

/// Whether a text parameter holds a NUL character (PostgreSQL's text cannot; SQLite's can).
fn has_nul(args: &[Value]) -> bool {
    args.iter()
        .any(|v| matches!(v, Value::Text(s) if s.contains('\0')))
}

/// A text search matching at most this many tokens is driven from the trigram indexes (the
/// few matches looked up, then sorted); more matches are filtered while walking the scope
/// in sort order. Measured on 300k tokens in one org, page of 50: a narrow term 313 ms
/// walked, 12 ms driven (+ 20 ms to probe); a term matching every token 296 ms walked,
/// 1313 ms driven. (As SQLite's `FTS_DRIVE_MAX`.)
const TEXT_DRIVE_MAX: i64 = 1000;

/// The ids of the tokens whose name, description or owner text contains pattern `p`
/// (each part through its trigram index); `all` keeps duplicates (for a cheap probe).
fn text_ids(p: &str, all: bool) -> String {
    let union = if all { "UNION ALL" } else { "UNION" };
    format!(
        "SELECT id FROM tokens WHERE name_lc LIKE {p} ESCAPE '\\' \
         {union} SELECT id FROM tokens WHERE description_lc LIKE {p} ESCAPE '\\' \
         {union} SELECT id FROM tokens WHERE user_id IN \
         (SELECT id FROM users WHERE owner_lc LIKE {p} ESCAPE '\\')"
    )
}

/// `sql.rs`'s statements on this connection.
impl Conn for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn writing(&self) -> bool {
        self.write
    }

    fn exec(&mut self, sql: &str, args: &[Value]) -> StoreResult<u64> {
        self.run(sql, args, true)
    }

    fn exec_once(&mut self, sql: &str, args: &[Value]) -> StoreResult<u64> {
        self.run(sql, args, false)
    }

    fn each(
        &mut self,
        sql: &str,
        args: &[Value],
        f: &mut dyn FnMut(&dyn SqlRow) -> StoreResult<()>,
    ) -> StoreResult<()> {
        for r in self.rows(sql, args)? {
            f(&r)?;
        }
        Ok(())
    }
}

fn refs(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// A parameter as the statement's column type wants it (an integer into SMALLINT or
/// INTEGER columns is narrowed, refused when out of range).
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::INT2 => i16::try_from(*n)?.to_sql_checked(ty, out),
                Type::INT4 => i32::try_from(*n)?.to_sql_checked(ty, out),
                _ => n.to_sql_checked(ty, out),
            },
            Value::Text(s) => s.to_sql_checked(ty, out),
            Value::Bool(b) => b.to_sql_checked(ty, out),
            Value::Bytes(b) => b.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl SqlRow for Row {
    fn int(&self, i: usize) -> StoreResult<Option<i64>> {
        match self.columns().get(i).map(|c| c.type_().clone()) {
            Some(Type::INT2) => Ok(get::<Option<i16>>(self, i)?.map(i64::from)),
            Some(Type::INT4) => Ok(get::<Option<i32>>(self, i)?.map(i64::from)),
            _ => get(self, i),
        }
    }
    fn text(&self, i: usize) -> StoreResult<Option<String>> {
        get(self, i)
    }
    fn boolean(&self, i: usize) -> StoreResult<Option<bool>> {
        get(self, i)
    }
    fn bytes(&self, i: usize) -> StoreResult<Option<Vec<u8>>> {
        get(self, i)
    }
}

impl Engine for PgTx<'_> {
    /// As SQLite's: text of 3 characters or more is found within the name, the description
    /// or the owner's "username display name" through the trigram indexes, driven from them
    /// when it matches at most [`TEXT_DRIVE_MAX`] tokens; shorter text within each of name,
    /// description, username and display name. Case is folded by the lower-cased copies.
    fn text_condition(&mut self, text: &str, args: &mut Args) -> StoreResult<TextCondition> {
        let pattern = like_pattern(text);
        let long = text.chars().count() >= 3;
        let driven = long && {
            let probe = format!(
                "SELECT count(*) FROM ({} LIMIT {}) m",
                text_ids("$1", true),
                TEXT_DRIVE_MAX + 1
            );
            let n = one(self, &probe, &[Value::from(pattern.as_str())], |r| {
                super::sql::get::<i64>(r, 0)
            })?;
            n.unwrap_or(0) <= TEXT_DRIVE_MAX
        };
        let p = args.add(pattern);
        let (where_sql, needs_owner) = if driven {
            (format!("t.id IN ({})", text_ids(&p, false)), false)
        } else if long {
            (
                format!(
                    "(t.name_lc LIKE {p} ESCAPE '\\' OR t.description_lc LIKE {p} ESCAPE '\\' \
                     OR u.owner_lc LIKE {p} ESCAPE '\\')"
                ),
                true,
            )
        } else {
            (
                format!(
                    "(t.name_lc LIKE {p} ESCAPE '\\' OR t.description_lc LIKE {p} ESCAPE '\\' \
                     OR split_part(u.owner_lc, ' ', 1) LIKE {p} ESCAPE '\\' \
                     OR substr(u.owner_lc, length(split_part(u.owner_lc, ' ', 1)) + 2) LIKE {p} ESCAPE '\\')"
                ),
                true,
            )
        };
        Ok(TextCondition {
            where_sql: Some(where_sql),
            from: None,
            needs_owner,
        })
    }

    fn announce(&mut self) -> StoreResult<()> {
        let instance = self.instance;
        self.run(
            "SELECT pg_notify(?1, ?2)",
            &[Value::from(CHANNEL), Value::from(instance)],
            true,
        )?;
        Ok(())
    }
}
