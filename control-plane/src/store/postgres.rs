//! The PostgreSQL backend, for several `tessera serve` replicas on one database.
//!
//! - Driver: the synchronous `postgres` client with an `r2d2` pool (`r2d2_postgres`); the
//!   `Store` trait is synchronous and runs on blocking threads, like the SQLite backend.
//!   No TLS yet: connections are plain TCP or a Unix socket (see ARCHITECTURE.md).
//! - Read transactions are `REPEATABLE READ, READ ONLY` snapshots (as SQLite's readers);
//!   write transactions are `READ COMMITTED`, and every getter that reads one row inside a
//!   write takes `FOR UPDATE`, so the services' read-modify-write (status-list index
//!   allocation on the org row, version bumps, sessions, throttles) is race-free across
//!   processes: a second writer waits for the first's commit and then reads its result.
//! - A deadlock or serialization failure (40P01/40001), a lost connection or a pool
//!   checkout that times out is `StoreError::Unavailable` (the API answers 503); a
//!   constraint violation is `Conflict`.
//! - Migrations are the numbered `MIGRATIONS` (their PostgreSQL texts), recorded in
//!   `tessera_migrations`, applied under an advisory lock so that replicas starting
//!   together migrate once.
//! - Replicas: a write that changed a status list or key set sends `NOTIFY tessera_edges`
//!   in its transaction (delivered on commit); every store LISTENs on its own connection
//!   and wakes its long polls (`watch_remote_changes`).
//! - The authentication log is partitioned by day; retention drops whole partitions.

use super::migrations::MIGRATIONS;
use super::{
    AuthEventQuery, Store, StoreError, StoreResult, TokenHit, TokenHits, TokenQuery, TokenScope,
    TokenSort, Tx,
};
use crate::model::{
    AuditEntry, AuthEvent, EdgeCredential, KeyAlg, Org, Role, SigningKey, Token, User,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, ToSql};
use postgres::{Client, NoTls, Row};
use r2d2::Pool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod accounts;

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
        let st = self.client.prepare(sql)?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

/// The pool's connections: `r2d2_postgres`'s manager keeps no prepared statements, so
/// this one (the same three calls) wraps each client with its statement cache.
pub(crate) struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.config.connect(NoTls)?,
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
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The advisory lock migrations run under (any constant; "tessera" in ASCII).
const MIGRATION_LOCK: i64 = 0x0074_6573_7365_7261;
/// The advisory lock creating and dropping authentication-log partitions runs under.
const PARTITION_LOCK: i64 = 0x0074_6573_7365_7262;
/// The NOTIFY channel of status-list and key-set changes.
pub const CHANNEL: &str = "tessera_edges";
/// Rows per multi-row INSERT of authentication events (10 parameters each; PostgreSQL
/// allows 65535 per statement).
const EVENTS_PER_INSERT: usize = 1000;
/// Daily partitions of the authentication log created ahead of today.
const PARTITIONS_AHEAD: i64 = 7;
const DAY: i64 = 86_400;

pub struct PostgresStore {
    /// `None` only while dropping.
    pool: Option<Pool<Manager>>,
    config: postgres::Config,
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

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("postgres: column {what}"))
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`), migrates the schema
    /// and opens the pool.
    pub fn open(url: &str) -> StoreResult<Self> {
        off_runtime(|| Self::open_here(url))
    }

    fn open_here(url: &str) -> StoreResult<Self> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("--db: not a PostgreSQL URL: {e}")))?;
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(StoreError::Backend(
                "--db: sslmode=require, but this build speaks to PostgreSQL without TLS \
                 (use a Unix socket, loopback or a private network)"
                    .into(),
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("tessera");
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        migrate(&config)?;
        let manager = Manager {
            config: config.clone(),
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
            config,
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
            let made = tx.batch_execute(&format!(
                "CREATE TABLE {name} (LIKE auth_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);                  WITH moved AS (DELETE FROM auth_events_default WHERE at >= {lo} AND at < {hi} RETURNING *)                  INSERT INTO {name} SELECT * FROM moved;                  ALTER TABLE auth_events ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
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
fn migrate(config: &postgres::Config) -> StoreResult<()> {
    let mut client = config
        .connect(NoTls)
        .map_err(|e| unavailable("cannot connect", e))?;
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
        let config = self.config.clone();
        let stop = self.stop.clone();
        let instance = self.instance.clone();
        // The first LISTEN is in place before this returns: a change committed after it
        // is never missed. (If it fails, the thread retries, and wakes once it listens.)
        let first = off_runtime(|| match config.connect(NoTls) {
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
            .spawn(move || listen(config, stop, instance, wake, first));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "postgres: cannot start the LISTEN thread");
        }
    }

    fn prune_auth_log(&self, now: i64, keep_days: i64) -> StoreResult<u64> {
        off_runtime(|| self.prune_here(now, keep_days))
    }
}

impl PostgresStore {
    fn transaction_here(
        &self,
        write: bool,
        f: &mut dyn FnMut(&mut dyn Tx) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut pooled = self.checkout()?;
        let conn = &mut *pooled;
        conn.client.batch_execute(if write {
            "BEGIN ISOLATION LEVEL READ COMMITTED"
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        })?;
        let mut tx = PgTx {
            c: conn,
            write,
            failed: None,
            instance: &self.instance,
        };
        let r = f(&mut tx);
        let failed = tx.failed.take();
        match (r, failed) {
            (Ok(()), None) => Ok(conn.client.batch_execute("COMMIT")?),
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
        }
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
    config: postgres::Config,
    stop: Arc<AtomicBool>,
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
                let connected = config.connect(NoTls).and_then(|mut c| {
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
    /// The store's NOTIFY payload.
    instance: &'a str,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl PgTx<'_> {
    /// ` FOR UPDATE` inside a write transaction: the row stays locked until commit.
    fn lock(&self) -> &'static str {
        if self.write {
            " FOR UPDATE"
        } else {
            ""
        }
    }

    fn note<T>(&mut self, r: Result<T, postgres::Error>) -> StoreResult<T> {
        r.map_err(|e| {
            let e = StoreError::from(e);
            if self.failed.is_none() {
                self.failed = Some(e.clone());
            }
            e
        })
    }

    fn rows(&mut self, sql: &str, p: &Params) -> StoreResult<Vec<Row>> {
        if has_nul(p) {
            // No stored text holds a NUL (PostgreSQL refuses them), so nothing matches;
            // sending it would abort the transaction.
            return Ok(Vec::new());
        }
        let r = self
            .c
            .statement(sql)
            .and_then(|st| self.c.client.query(&st, p));
        self.note(r)
    }

    fn exec(&mut self, sql: &str, p: &Params) -> StoreResult<u64> {
        if has_nul(p) {
            if sql.trim_start().starts_with("INSERT") {
                return Err(StoreError::Conflict(
                    "text with a NUL character cannot be stored".into(),
                ));
            }
            return Ok(0);
        }
        let r = self
            .c
            .statement(sql)
            .and_then(|st| self.c.client.execute(&st, p));
        self.note(r)
    }

    fn one<T>(
        &mut self,
        sql: &str,
        p: &Params,
        f: impl Fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        self.rows(sql, p)?.first().map(f).transpose()
    }

    fn all<T>(
        &mut self,
        sql: &str,
        p: &Params,
        f: impl Fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        self.rows(sql, p)?.iter().map(f).collect()
    }
}

/// Whether a text parameter holds a NUL character (PostgreSQL's text cannot; SQLite's can).
fn has_nul(p: &Params) -> bool {
    let mut buf = bytes::BytesMut::new();
    p.iter().any(|v| {
        buf.clear();
        matches!(
            v.to_sql_checked(&postgres::types::Type::TEXT, &mut buf),
            Ok(postgres::types::IsNull::No)
        ) && buf.contains(&0)
    })
}

/// The derived token status in SQL; must agree with `Token::status` (tested, as SQLite's).
fn status_sql(now: &str) -> String {
    format!(
        "(CASE WHEN t.revoked_at IS NOT NULL OR t.deleted_at IS NOT NULL THEN 'revoked' \
         WHEN t.expires_at <= {now} THEN 'expired' \
         WHEN NOT t.enabled THEN 'disabled' \
         WHEN t.jwt_sha256 IS NULL THEN 'pending' \
         ELSE 'enabled' END) COLLATE \"C\""
    )
}

const TOKEN_COLS: &str =
    "t.id, t.org_id, t.user_id, t.name, t.description, t.created_by, t.created_at, \
     t.lifetime_days, t.not_before, t.expires_at, t.ip_allow, t.scopes, t.enabled, t.revoked_at, \
     t.deleted_at, t.minted_at, t.jwt_sha256, t.status_idx, t.kid, t.last_used_at, t.last_used_ip";

const ORG_COLS: &str = "id, name, partner_org_id, is_partner, is_root, max_lifetime_days, audience, key_alg, status_version, next_status_idx, created_at";

const KEY_COLS: &str =
    "kid, org_id, alg, public_jwk, private_enc, created_at, retired_at, last_exp";

const USER_COLS: &str = "id, org_id, username, display_name, role, delegated, created_at";

fn org_from_row(r: &Row) -> StoreResult<Org> {
    let alg: String = get(r, 7)?;
    Ok(Org {
        id: get(r, 0)?,
        name: get(r, 1)?,
        partner_org_id: get(r, 2)?,
        is_partner: get(r, 3)?,
        is_root: get(r, 4)?,
        max_lifetime_days: get(r, 5)?,
        audience: get(r, 6)?,
        key_alg: KeyAlg::parse(&alg).ok_or_else(|| corrupt("key_alg"))?,
        status_version: get(r, 8)?,
        next_status_idx: get(r, 9)?,
        created_at: get(r, 10)?,
    })
}

fn key_from_row(r: &Row) -> StoreResult<SigningKey> {
    let alg: String = get(r, 2)?;
    let jwk: String = get(r, 3)?;
    Ok(SigningKey {
        kid: get(r, 0)?,
        org_id: get(r, 1)?,
        alg: KeyAlg::parse(&alg).ok_or_else(|| corrupt("alg"))?,
        public_jwk: serde_json::from_str(&jwk).map_err(|_| corrupt("public_jwk"))?,
        private_enc: get(r, 4)?,
        created_at: get(r, 5)?,
        retired_at: get(r, 6)?,
        last_exp: get(r, 7)?,
    })
}

fn user_from_row(r: &Row) -> StoreResult<User> {
    let role: String = get(r, 4)?;
    Ok(User {
        id: get(r, 0)?,
        org_id: get(r, 1)?,
        username: get(r, 2)?,
        display_name: get(r, 3)?,
        role: Role::parse(&role).ok_or_else(|| corrupt("role"))?,
        delegated: get(r, 5)?,
        created_at: get(r, 6)?,
    })
}

fn token_from_row(r: &Row) -> StoreResult<Token> {
    let ip: String = get(r, 10)?;
    let scopes: String = get(r, 11)?;
    Ok(Token {
        id: get(r, 0)?,
        org_id: get(r, 1)?,
        user_id: get(r, 2)?,
        name: get(r, 3)?,
        description: get(r, 4)?,
        created_by: get(r, 5)?,
        created_at: get(r, 6)?,
        lifetime_days: get(r, 7)?,
        not_before: get(r, 8)?,
        expires_at: get(r, 9)?,
        ip_allow: serde_json::from_str(&ip).map_err(|_| corrupt("ip_allow"))?,
        scopes: scopes.split_whitespace().map(str::to_string).collect(),
        enabled: get(r, 12)?,
        revoked_at: get(r, 13)?,
        deleted_at: get(r, 14)?,
        minted_at: get(r, 15)?,
        jwt_sha256: get(r, 16)?,
        status_idx: get(r, 17)?,
        kid: get(r, 18)?,
        last_used_at: get(r, 19)?,
        last_used_ip: get(r, 20)?,
    })
}

fn auth_event_from_row(r: &Row) -> StoreResult<AuthEvent> {
    Ok(AuthEvent {
        id: get(r, 0)?,
        org_id: get(r, 1)?,
        token_id: get(r, 2)?,
        user_id: get(r, 3)?,
        at: get(r, 4)?,
        ip: get(r, 5)?,
        outcome: get(r, 6)?,
        reason: get(r, 7)?,
        method: get(r, 8)?,
        path: get(r, 9)?,
        source: get(r, 10)?,
    })
}

/// The searchable owner text of a user, lower-cased as the search folds case.
fn owner_lc(u: &User) -> String {
    format!("{} {}", u.username, u.display_name).to_lowercase()
}

/// A SQL statement's positional parameters, collected while its text is built.
#[derive(Default)]
struct Args {
    values: Vec<Box<dyn ToSql + Sync>>,
}

impl Args {
    /// Adds a value; returns its placeholder (`$n`).
    fn add(&mut self, v: impl ToSql + Sync + 'static) -> String {
        self.values.push(Box::new(v));
        format!("${}", self.values.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values.iter().map(|b| b.as_ref()).collect()
    }
}

/// The SQL a sort orders by (also the keyset key), and whether that key is text.
fn sort_key_sql(sort: TokenSort, args: &mut Args, now: i64) -> (String, bool) {
    match sort {
        TokenSort::Name => ("lower(t.name)".into(), true),
        TokenSort::CreatedAt => ("t.created_at".into(), false),
        TokenSort::ExpiresAt => ("t.expires_at".into(), false),
        TokenSort::LastUsedAt => ("coalesce(t.last_used_at, -1)".into(), false),
        TokenSort::User => ("u.username".into(), true),
        TokenSort::Status => (status_sql(&args.add(now)), true),
    }
}

fn like_pattern(q: &str) -> String {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// A token search's WHERE clause (its arguments go to `args`).
fn token_filter(q: &TokenQuery, args: &mut Args, driven: bool) -> String {
    let mut wh = vec!["t.deleted_at IS NULL".to_string()];
    match &q.scope {
        TokenScope::Org(org) => wh.push(format!("t.org_id = {}", args.add(org.clone()))),
        TokenScope::User(user) => wh.push(format!("t.user_id = {}", args.add(user.clone()))),
        TokenScope::Partner {
            user_id,
            partner_org_id,
        } => {
            let u = args.add(user_id.clone());
            let o = args.add(partner_org_id.clone());
            wh.push(format!(
                "(t.user_id = {u} OR (u.delegated AND t.org_id IN \
                 (SELECT id FROM orgs WHERE partner_org_id = {o})))"
            ));
        }
    }
    if let Some(text) = &q.q {
        let p = args.add(like_pattern(text));
        if driven {
            // Few matches: looked up through the trigram indexes (see TEXT_DRIVE_MAX).
            wh.push(format!("t.id IN ({})", text_ids(&p, false)));
        } else if text.chars().count() >= 3 {
            // As SQLite's trigram index: the text as given, case-insensitively, within the
            // name, the description, or the owner's "username display name".
            wh.push(format!(
                "(t.name_lc LIKE {p} ESCAPE '\\' OR t.description_lc LIKE {p} ESCAPE '\\' \
                 OR u.owner_lc LIKE {p} ESCAPE '\\')"
            ));
        } else {
            // As SQLite's short search: each of name, description, username, display name.
            wh.push(format!(
                "(t.name_lc LIKE {p} ESCAPE '\\' OR t.description_lc LIKE {p} ESCAPE '\\' \
                 OR split_part(u.owner_lc, ' ', 1) LIKE {p} ESCAPE '\\' \
                 OR substr(u.owner_lc, length(split_part(u.owner_lc, ' ', 1)) + 2) LIKE {p} ESCAPE '\\')"
            ));
        }
    }
    if !q.statuses.is_empty() {
        let names: Vec<String> = q
            .statuses
            .iter()
            .map(|s| args.add(s.as_str().to_string()))
            .collect();
        let now = args.add(q.now);
        wh.push(format!("{} IN ({})", status_sql(&now), names.join(", ")));
    }
    if let Some(user) = &q.user {
        let u = args.add(user.clone());
        wh.push(format!(
            "t.user_id IN (SELECT id FROM users WHERE id = {u} OR username = {u})"
        ));
    }
    if let Some(before) = q.expires_before {
        wh.push(format!("t.expires_at < {}", args.add(before)));
    }
    if let Some(after) = q.expires_after {
        wh.push(format!("t.expires_at >= {}", args.add(after)));
    }
    wh.join(" AND ")
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

/// A keyset cursor: the row's sort key and id, as base64url of JSON (opaque to clients).
fn encode_cursor(key: &serde_json::Value, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::json!([key, id]).to_string())
}

/// The sort key and id of a cursor; a cursor whose key is not of the sort's type is not
/// one of this listing's.
fn decode_cursor(cursor: &str, text_key: bool) -> StoreResult<(CursorKey, String)> {
    let bad = || StoreError::BadCursor;
    let json = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|_| bad())?;
    let key = match (v.get(0), text_key) {
        (Some(serde_json::Value::String(t)), true) => CursorKey::Text(t.clone()),
        (Some(serde_json::Value::Number(n)), false) => CursorKey::Int(n.as_i64().ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    let id = v.get(1).and_then(|x| x.as_str()).ok_or_else(bad)?;
    if v.as_array().map(Vec::len) != Some(2) {
        return Err(bad());
    }
    Ok((key, id.to_string()))
}

enum CursorKey {
    Int(i64),
    Text(String),
}

fn auth_event_filter(q: &AuthEventQuery, args: &mut Args) -> String {
    let mut wh = vec!["TRUE".to_string()];
    if let Some(v) = &q.org_id {
        wh.push(format!("org_id = {}", args.add(v.clone())));
    }
    if let Some(v) = &q.token_id {
        wh.push(format!("token_id = {}", args.add(v.clone())));
    }
    if let Some(v) = &q.user_id {
        wh.push(format!("user_id = {}", args.add(v.clone())));
    }
    if let Some(v) = &q.outcome {
        wh.push(format!("outcome = {}", args.add(v.clone())));
    }
    if let Some(v) = q.since {
        wh.push(format!("at >= {}", args.add(v)));
    }
    if let Some(v) = q.until {
        wh.push(format!("at < {}", args.add(v)));
    }
    wh.join(" AND ")
}

const AUTH_EVENT_COLS: &str =
    "org_id, token_id, user_id, at, ip, outcome, reason, method, path, source";

impl Tx for PgTx<'_> {
    fn get_setting(&mut self, key: &str) -> StoreResult<Option<String>> {
        let sql = format!("SELECT value FROM settings WHERE key = $1{}", self.lock());
        self.one(&sql, &[&key], |r| get(r, 0))
    }

    fn set_setting(&mut self, key: &str, value: &str) -> StoreResult<()> {
        self.exec(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    fn insert_org(&mut self, o: &Org) -> StoreResult<()> {
        self.exec(
            &format!("INSERT INTO orgs ({ORG_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
            &[
                &o.id, &o.name, &o.partner_org_id, &o.is_partner, &o.is_root, &o.max_lifetime_days,
                &o.audience, &o.key_alg.as_str(), &o.status_version, &o.next_status_idx, &o.created_at,
            ],
        )?;
        Ok(())
    }

    fn update_org(&mut self, o: &Org) -> StoreResult<()> {
        self.exec(
            "UPDATE orgs SET name = $2, partner_org_id = $3, is_partner = $4, is_root = $5, \
             max_lifetime_days = $6, audience = $7, key_alg = $8, status_version = $9, \
             next_status_idx = $10 WHERE id = $1",
            &[
                &o.id,
                &o.name,
                &o.partner_org_id,
                &o.is_partner,
                &o.is_root,
                &o.max_lifetime_days,
                &o.audience,
                &o.key_alg.as_str(),
                &o.status_version,
                &o.next_status_idx,
            ],
        )?;
        Ok(())
    }

    fn get_org(&mut self, id: &str) -> StoreResult<Option<Org>> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE id = $1{}", self.lock());
        self.one(&sql, &[&id], org_from_row)
    }

    fn list_orgs(&mut self) -> StoreResult<Vec<Org>> {
        self.all(
            &format!("SELECT {ORG_COLS} FROM orgs ORDER BY id"),
            &[],
            org_from_row,
        )
    }

    fn list_managed_orgs(&mut self, partner_org_id: &str) -> StoreResult<Vec<Org>> {
        self.all(
            &format!("SELECT {ORG_COLS} FROM orgs WHERE partner_org_id = $1 ORDER BY id"),
            &[&partner_org_id],
            org_from_row,
        )
    }

    fn any_org(&mut self) -> StoreResult<Option<Org>> {
        self.one(
            &format!("SELECT {ORG_COLS} FROM orgs ORDER BY is_root DESC, id LIMIT 1"),
            &[],
            org_from_row,
        )
    }

    fn insert_key(&mut self, k: &SigningKey) -> StoreResult<()> {
        self.exec(
            &format!(
                "INSERT INTO signing_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &k.kid,
                &k.org_id,
                &k.alg.as_str(),
                &k.public_jwk.to_string(),
                &k.private_enc,
                &k.created_at,
                &k.retired_at,
                &k.last_exp,
            ],
        )?;
        Ok(())
    }

    fn update_key(&mut self, k: &SigningKey) -> StoreResult<()> {
        self.exec(
            "UPDATE signing_keys SET retired_at = $2, last_exp = $3 WHERE kid = $1",
            &[&k.kid, &k.retired_at, &k.last_exp],
        )?;
        Ok(())
    }

    fn get_key(&mut self, kid: &str) -> StoreResult<Option<SigningKey>> {
        let sql = format!(
            "SELECT {KEY_COLS} FROM signing_keys WHERE kid = $1{}",
            self.lock()
        );
        self.one(&sql, &[&kid], key_from_row)
    }

    fn list_keys(&mut self, org_id: &str) -> StoreResult<Vec<SigningKey>> {
        self.all(
            &format!(
                "SELECT {KEY_COLS} FROM signing_keys WHERE org_id = $1 ORDER BY created_at DESC, seq DESC"
            ),
            &[&org_id],
            key_from_row,
        )
    }

    fn insert_user(&mut self, u: &User) -> StoreResult<()> {
        self.exec(
            &format!(
                "INSERT INTO users ({USER_COLS}, owner_lc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &u.id,
                &u.org_id,
                &u.username,
                &u.display_name,
                &u.role.as_str(),
                &u.delegated,
                &u.created_at,
                &owner_lc(u),
            ],
        )?;
        Ok(())
    }

    fn update_user(&mut self, u: &User) -> StoreResult<()> {
        // The username never changes; the searchable owner text follows the display name.
        self.exec(
            "UPDATE users SET display_name = $2, role = $3, delegated = $4, \
             owner_lc = $5 WHERE id = $1",
            &[
                &u.id,
                &u.display_name,
                &u.role.as_str(),
                &u.delegated,
                &owner_lc(u),
            ],
        )?;
        Ok(())
    }

    fn get_user(&mut self, id: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1{}", self.lock());
        self.one(&sql, &[&id], user_from_row)
    }

    fn find_user(&mut self, org_id: &str, username: &str) -> StoreResult<Option<User>> {
        let sql = format!(
            "SELECT {USER_COLS} FROM users WHERE org_id = $1 AND username = $2{}",
            self.lock()
        );
        self.one(&sql, &[&org_id, &username], user_from_row)
    }

    fn list_users(&mut self, org_id: &str) -> StoreResult<Vec<User>> {
        self.all(
            &format!("SELECT {USER_COLS} FROM users WHERE org_id = $1 ORDER BY username"),
            &[&org_id],
            user_from_row,
        )
    }

    fn insert_token(&mut self, t: &Token) -> StoreResult<()> {
        self.exec(
            "INSERT INTO tokens (id, org_id, user_id, name, description, created_by, created_at, lifetime_days, \
             not_before, expires_at, ip_allow, scopes, enabled, revoked_at, deleted_at, minted_at, jwt_sha256, \
             status_idx, kid, last_used_at, last_used_ip, name_lc, description_lc) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
            &[
                &t.id, &t.org_id, &t.user_id, &t.name, &t.description, &t.created_by, &t.created_at,
                &t.lifetime_days, &t.not_before, &t.expires_at,
                &serde_json::Value::from(t.ip_allow.clone()).to_string(), &t.scopes.join(" "),
                &t.enabled, &t.revoked_at, &t.deleted_at, &t.minted_at, &t.jwt_sha256, &t.status_idx,
                &t.kid, &t.last_used_at, &t.last_used_ip, &t.name.to_lowercase(),
                &t.description.to_lowercase(),
            ],
        )?;
        Ok(())
    }

    fn update_token(&mut self, t: &Token) -> StoreResult<()> {
        self.exec(
            "UPDATE tokens SET name = $2, description = $3, lifetime_days = $4, not_before = $5, \
             expires_at = $6, ip_allow = $7, scopes = $8, enabled = $9, revoked_at = $10, \
             deleted_at = $11, minted_at = $12, jwt_sha256 = $13, status_idx = $14, kid = $15, \
             last_used_at = $16, last_used_ip = $17, name_lc = $18, description_lc = $19 WHERE id = $1",
            &[
                &t.id, &t.name, &t.description, &t.lifetime_days, &t.not_before, &t.expires_at,
                &serde_json::Value::from(t.ip_allow.clone()).to_string(), &t.scopes.join(" "),
                &t.enabled, &t.revoked_at, &t.deleted_at, &t.minted_at, &t.jwt_sha256,
                &t.status_idx, &t.kid, &t.last_used_at, &t.last_used_ip,
                &t.name.to_lowercase(), &t.description.to_lowercase(),
            ],
        )?;
        Ok(())
    }

    fn get_token(&mut self, id: &str) -> StoreResult<Option<Token>> {
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM tokens t WHERE t.id = $1{}",
            self.lock()
        );
        self.one(&sql, &[&id], token_from_row)
    }

    fn set_last_used(&mut self, id: &str, at: i64, ip: Option<&str>) -> StoreResult<()> {
        self.exec(
            "UPDATE tokens SET last_used_at = $2, last_used_ip = $3 WHERE id = $1",
            &[&id, &at, &ip],
        )?;
        Ok(())
    }

    fn search_tokens(&mut self, q: &TokenQuery) -> StoreResult<TokenHits> {
        let mut args = Args::default();
        let driven = match q.q.as_deref() {
            Some(text) if text.chars().count() >= 3 => {
                let probe = format!(
                    "SELECT count(*) FROM ({} LIMIT {}) m",
                    text_ids("$1", true),
                    TEXT_DRIVE_MAX + 1
                );
                let pattern = like_pattern(text);
                let n = self.one(&probe, &[&pattern], |r| get::<i64>(r, 0))?;
                n.unwrap_or(0) <= TEXT_DRIVE_MAX
            }
            _ => false,
        };
        let where_sql = token_filter(q, &mut args, driven);
        let count_args = args.values.len();
        let (order, text_key) = sort_key_sql(q.sort, &mut args, q.now);
        let dir = if q.descending { "DESC" } else { "ASC" };
        let from = "FROM tokens t JOIN users u ON u.id = t.user_id";
        let total = if q.count {
            let sql = format!("SELECT count(*) {from} WHERE {where_sql}");
            let refs = &args.refs()[..count_args];
            let row = self.rows(&sql, refs)?;
            Some(match row.first() {
                Some(r) => get::<i64>(r, 0)?,
                None => 0,
            })
        } else {
            None
        };
        let mut keyset = String::new();
        let mut offset = q.offset;
        if let Some(cursor) = &q.after {
            let (key, id) = decode_cursor(cursor, text_key)?;
            let k = match key {
                CursorKey::Int(n) => args.add(n),
                CursorKey::Text(s) => args.add(s),
            };
            let i = args.add(id);
            let cmp = if q.descending { "<" } else { ">" };
            keyset = format!(" AND ({order}, t.id) {cmp} ({k}, {i})");
            offset = 0;
        }
        let limit = args.add(q.limit.max(0));
        let offset = args.add(offset.max(0));
        let sql = format!(
            "SELECT {TOKEN_COLS}, u.username, {order} {from} WHERE {where_sql}{keyset} \
             ORDER BY {order} {dir}, t.id {dir} LIMIT {limit} OFFSET {offset}"
        );
        let refs = args.refs();
        let rows = self.rows(&sql, &refs)?;
        let mut hits = Vec::with_capacity(rows.len());
        for r in &rows {
            let token = token_from_row(r)?;
            let username: String = get(r, 21)?;
            let key = if text_key {
                serde_json::json!(get::<String>(r, 22)?)
            } else {
                serde_json::json!(get::<i64>(r, 22)?)
            };
            hits.push(TokenHit {
                cursor: encode_cursor(&key, &token.id),
                token,
                username,
            });
        }
        Ok(TokenHits { hits, total })
    }

    fn live_unrevoked_tokens(&mut self, scope: &TokenScope) -> StoreResult<Vec<Token>> {
        let (clause, arg) = match scope {
            TokenScope::Org(org) => ("t.org_id = $1", org.clone()),
            TokenScope::User(user) => ("t.user_id = $1", user.clone()),
            TokenScope::Partner { .. } => {
                return Err(StoreError::Backend(
                    "revoke-all never spans a partner's customers".into(),
                ))
            }
        };
        self.all(
            &format!(
                "SELECT {TOKEN_COLS} FROM tokens t WHERE {clause} AND t.deleted_at IS NULL \
                 AND t.revoked_at IS NULL ORDER BY t.created_at, t.id"
            ),
            &[&arg],
            token_from_row,
        )
    }

    fn set_status(
        &mut self,
        org_id: &str,
        idx: i64,
        value: u8,
        token_id: &str,
        version: i64,
    ) -> StoreResult<()> {
        self.exec(
            "INSERT INTO status_entries (org_id, idx, value, token_id, version) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (org_id, idx) DO UPDATE SET value = excluded.value, version = excluded.version",
            &[&org_id, &idx, &i16::from(value), &token_id, &version],
        )?;
        Ok(())
    }

    fn status_entries(&mut self, org_id: &str) -> StoreResult<Vec<(i64, u8)>> {
        self.all(
            "SELECT idx, value FROM status_entries WHERE org_id = $1 AND value != 0",
            &[&org_id],
            status_row,
        )
    }

    fn status_changes_since(&mut self, org_id: &str, version: i64) -> StoreResult<Vec<(i64, u8)>> {
        self.all(
            "SELECT idx, value FROM status_entries WHERE org_id = $1 AND version > $2",
            &[&org_id, &version],
            status_row,
        )
    }

    fn insert_auth_event(&mut self, e: &AuthEvent) -> StoreResult<()> {
        self.insert_auth_events(std::slice::from_ref(e))
    }

    fn insert_auth_events(&mut self, events: &[AuthEvent]) -> StoreResult<()> {
        for chunk in events.chunks(EVENTS_PER_INSERT) {
            let mut sql = format!("INSERT INTO auth_events ({AUTH_EVENT_COLS}) VALUES ");
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 10);
            for (i, e) in chunk.iter().enumerate() {
                let b = i * 10;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9,
                    b + 10
                ));
                params.extend_from_slice(&[
                    &e.org_id,
                    &e.token_id,
                    &e.user_id,
                    &e.at,
                    &e.ip,
                    &e.outcome,
                    &e.reason,
                    &e.method,
                    &e.path,
                    &e.source,
                ]);
            }
            // Not kept prepared: its text varies with the batch size.
            if has_nul(&params) {
                return Err(StoreError::Conflict(
                    "text with a NUL character cannot be stored".into(),
                ));
            }
            let r = self.c.client.execute(sql.as_str(), &params);
            self.note(r)?;
        }
        Ok(())
    }

    fn delete_auth_events_before(&mut self, cutoff: i64, limit: u64) -> StoreResult<u64> {
        let limit = limit.min(i64::MAX as u64) as i64;
        self.exec(
            "DELETE FROM auth_events WHERE (id, at) IN \
             (SELECT id, at FROM auth_events WHERE at < $1 LIMIT $2)",
            &[&cutoff, &limit],
        )
    }

    fn list_auth_events(&mut self, q: &AuthEventQuery) -> StoreResult<Vec<AuthEvent>> {
        let mut args = Args::default();
        let wh = auth_event_filter(q, &mut args);
        let limit = args.add(q.limit.max(0));
        let offset = args.add(q.offset.max(0));
        let sql = format!(
            "SELECT id, {AUTH_EVENT_COLS} FROM auth_events WHERE {wh} \
             ORDER BY at DESC, id DESC LIMIT {limit} OFFSET {offset}"
        );
        let refs = args.refs();
        self.all(&sql, &refs, auth_event_from_row)
    }

    fn count_auth_events(&mut self, q: &AuthEventQuery) -> StoreResult<i64> {
        let mut args = Args::default();
        let wh = auth_event_filter(q, &mut args);
        let refs = args.refs();
        let n = self.one(
            &format!("SELECT count(*) FROM auth_events WHERE {wh}"),
            &refs,
            |r| get::<i64>(r, 0),
        )?;
        Ok(n.unwrap_or(0))
    }

    fn count_audit(&mut self, org_id: &str, target: Option<&str>) -> StoreResult<i64> {
        let n = self.one(
            "SELECT count(*) FROM audit_log WHERE org_id = $1 AND ($2::text IS NULL OR target = $2)",
            &[&org_id, &target],
            |r| get::<i64>(r, 0),
        )?;
        Ok(n.unwrap_or(0))
    }

    fn insert_audit(&mut self, a: &AuditEntry) -> StoreResult<()> {
        self.exec(
            "INSERT INTO audit_log (at, org_id, actor, action, target, detail, credential) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &a.at,
                &a.org_id,
                &a.actor,
                &a.action,
                &a.target,
                &a.detail.to_string(),
                &a.credential,
            ],
        )?;
        Ok(())
    }

    fn list_audit(
        &mut self,
        org_id: &str,
        target: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        self.all(
            "SELECT id, at, org_id, actor, action, target, detail, credential FROM audit_log \
             WHERE org_id = $1 AND ($2::text IS NULL OR target = $2) ORDER BY id DESC LIMIT $3 OFFSET $4",
            &[&org_id, &target, &limit.max(0), &offset.max(0)],
            |r| {
                let detail: String = get(r, 6)?;
                Ok(AuditEntry {
                    id: get(r, 0)?,
                    at: get(r, 1)?,
                    org_id: get(r, 2)?,
                    actor: get(r, 3)?,
                    action: get(r, 4)?,
                    target: get(r, 5)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    credential: get(r, 7)?,
                })
            },
        )
    }

    fn insert_edge(&mut self, e: &EdgeCredential) -> StoreResult<()> {
        self.exec(
            "INSERT INTO edge_credentials (id, org_id, name, secret_sha256, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&e.id, &e.org_id, &e.name, &e.secret_sha256, &e.created_at],
        )?;
        Ok(())
    }

    fn find_edge_by_secret_hash(&mut self, hash: &str) -> StoreResult<Option<EdgeCredential>> {
        self.one(
            "SELECT id, org_id, name, secret_sha256, created_at FROM edge_credentials WHERE secret_sha256 = $1",
            &[&hash],
            |r| {
                Ok(EdgeCredential {
                    id: get(r, 0)?,
                    org_id: get(r, 1)?,
                    name: get(r, 2)?,
                    secret_sha256: get(r, 3)?,
                    created_at: get(r, 4)?,
                })
            },
        )
    }

    fn announce_edges_changed(&mut self) -> StoreResult<()> {
        let instance = self.instance;
        self.exec("SELECT pg_notify($1, $2)", &[&CHANNEL, &instance])?;
        Ok(())
    }
}

fn status_row(r: &Row) -> StoreResult<(i64, u8)> {
    let v: i16 = get(r, 1)?;
    Ok((
        get(r, 0)?,
        u8::try_from(v).map_err(|_| corrupt("status_entries.value"))?,
    ))
}
