//! The SQLite backend: WAL journal, `synchronous=FULL` (a committed write survives a kill
//! or power loss), migrations tracked in `PRAGMA user_version`.

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
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

mod accounts;

/// The ids of the tokens whose text matches the FTS5 phrase `:q`.
const FTS_IDS: &str = "SELECT m.token_id FROM token_text JOIN token_search_ids m \
                       ON m.n = token_text.rowid WHERE token_text MATCH :q";

/// The derived token status in SQL; must agree with `Token::status` (tested).
const STATUS_SQL: &str =
    "CASE WHEN t.revoked_at IS NOT NULL OR t.deleted_at IS NOT NULL THEN 'revoked' \
     WHEN t.expires_at <= :now THEN 'expired' \
     WHEN t.enabled = 0 THEN 'disabled' \
     WHEN t.jwt_sha256 IS NULL THEN 'pending' \
     ELSE 'enabled' END";

const TOKEN_COLS: &str =
    "t.id, t.org_id, t.user_id, t.name, t.description, t.created_by, t.created_at, \
     t.lifetime_days, t.not_before, t.expires_at, t.ip_allow, t.scopes, t.enabled, t.revoked_at, \
     t.deleted_at, t.minted_at, t.jwt_sha256, t.status_idx, t.kid, t.last_used_at, t.last_used_ip";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                ErrorCode::ConstraintViolation => {
                    StoreError::Conflict("the change conflicts with an existing record".into())
                }
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    StoreError::Unavailable(format!("sqlite: {e}"))
                }
                ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::DiskFull => {
                    StoreError::Unavailable(format!("sqlite: {e}"))
                }
                _ => StoreError::Backend(format!("sqlite: {e}")),
            },
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..) => {
                StoreError::Corrupt(format!("sqlite: {e}"))
            }
            _ => StoreError::Backend(format!("sqlite: {e}")),
        }
    }
}

/// Authentication-log events one pruning transaction deletes at most.
const PRUNE_SLICE: u64 = 10_000;

/// Reader connections the pool keeps (more requests wait for one; a read is short).
const READERS: u32 = 8;

/// How long an SQLite call waits for a lock before it fails as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// One writer connection and a pool of read-only connections (`r2d2_sqlite`). In WAL mode
/// readers see the last committed state and neither wait for the writer nor block it.
///
/// Writes are group-committed: SQLite allows one writer, and with `synchronous=FULL` each
/// COMMIT costs an fsync (≈1.5 ms on the bench machine), so one commit per write would cap
/// the API near 300 writes/s whatever the CPU. Each write runs in a SAVEPOINT of the open
/// batch transaction (an error rolls back only its own changes); the last writer in line
/// (none waiting for the connection) commits the batch, and every member of the batch
/// returns only once that COMMIT is durable, with its outcome. No write is acknowledged
/// before its fsync. An in-memory database commits every write at once and reads through
/// the writer.
pub struct SqliteStore {
    writer: Mutex<Writer>,
    /// Signalled when a batch is committed (or failed).
    committed: Condvar,
    /// Writers waiting for the writer connection.
    queued: AtomicUsize,
    readers: Option<Pool<SqliteConnectionManager>>,
}

struct Writer {
    conn: Connection,
    /// The open batch: its members wait on its outcome.
    batch: Option<Arc<OnceLock<StoreResult<()>>>>,
    /// Whether a member's failure rolled the whole batch back (SQLite ends the transaction
    /// itself on some errors, e.g. disk full); the batch then fails for every member.
    broken: bool,
}

impl SqliteStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut s = Self::init(Connection::open(path)?)?;
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(|c| {
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                add_functions(c)?;
                c.busy_timeout(BUSY_TIMEOUT)
            });
        let pool = Pool::builder()
            .max_size(READERS)
            .min_idle(Some(0))
            .connection_timeout(BUSY_TIMEOUT)
            .build_unchecked(manager);
        s.readers = Some(pool);
        Ok(s)
    }

    pub fn open_in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        add_functions(&conn)?;
        // journal_mode answers with a row, so it is queried rather than executed.
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                batch: None,
                broken: false,
            }),
            committed: Condvar::new(),
            queued: AtomicUsize::new(0),
            readers: None,
        })
    }

    fn lock_writer(&self) -> StoreResult<MutexGuard<'_, Writer>> {
        self.writer
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned".into()))
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> StoreResult<i64> {
        let w = self.lock_writer()?;
        Ok(w.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// A read snapshot on `conn`.
    fn read_in(
        conn: &Connection,
        f: &mut dyn FnMut(&mut dyn Tx) -> StoreResult<()>,
    ) -> StoreResult<()> {
        conn.execute_batch("BEGIN DEFERRED")?;
        let r = f(&mut SqliteTx { conn: Cached(conn) });
        let end = conn.execute_batch(if r.is_ok() { "COMMIT" } else { "ROLLBACK" });
        r?;
        Ok(end?)
    }

    /// One write as a member of the open batch (see [`SqliteStore`]).
    fn write(&self, f: &mut dyn FnMut(&mut dyn Tx) -> StoreResult<()>) -> StoreResult<()> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let locked = self.lock_writer();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let mut w = locked?;
        if w.batch.is_none() {
            w.conn.execute_batch("BEGIN IMMEDIATE")?;
            w.batch = Some(Arc::new(OnceLock::new()));
            w.broken = false;
        }
        let batch = w.batch.clone().unwrap_or_default();
        let mine = match w.conn.execute_batch("SAVEPOINT w") {
            Ok(()) => {
                let r = f(&mut SqliteTx {
                    conn: Cached(&w.conn),
                });
                if w.conn.is_autocommit() {
                    // SQLite ended the batch's transaction itself.
                    w.broken = true;
                    r.and(Err(StoreError::Unavailable(
                        "the write's transaction was rolled back by the database".into(),
                    )))
                } else if r.is_ok() {
                    match w.conn.execute_batch("RELEASE w") {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            w.broken = true;
                            Err(e.into())
                        }
                    }
                } else {
                    if w.conn.execute_batch("ROLLBACK TO w; RELEASE w").is_err() {
                        w.broken = true;
                    }
                    r
                }
            }
            Err(e) => {
                w.broken = true;
                Err(e.into())
            }
        };
        let in_memory = self.readers.is_none();
        if in_memory || self.queued.load(Ordering::SeqCst) == 0 {
            // The last in line commits the batch for all its members.
            let outcome = if w.broken {
                let _ = w.conn.execute_batch("ROLLBACK");
                Err(StoreError::Unavailable(
                    "a write failed inside the database; the batch it was in was rolled back"
                        .into(),
                ))
            } else {
                match w.conn.execute_batch("COMMIT") {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let _ = w.conn.execute_batch("ROLLBACK");
                        Err(StoreError::from(e))
                    }
                }
            };
            w.batch = None;
            let _ = batch.set(outcome);
            self.committed.notify_all();
        } else {
            while batch.get().is_none() {
                w = self
                    .committed
                    .wait(w)
                    .map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
            }
        }
        drop(w);
        let committed = batch
            .get()
            .cloned()
            .unwrap_or_else(|| Err(StoreError::Backend("batch outcome missing".into())));
        // A member whose own body failed reports its own error (its changes were undone);
        // the others report the batch's.
        mine?;
        committed
    }
}

/// Creates a new database file readable by its owner only, before SQLite opens it (SQLite
/// gives the `-wal` and `-shm` files the database file's mode). An existing file is left
/// as it is.
pub fn create_private(path: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match made {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::Unavailable(format!("{}: {e}", path.display()))),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

pub fn latest_schema_version() -> i64 {
    super::migrations::latest()
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest_schema_version() {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this binary ({})",
            latest_schema_version()
        )));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(m.sqlite)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn schema_version(&self) -> StoreResult<i64> {
        SqliteStore::schema_version(self)
    }

    fn prune_auth_log(&self, now: i64, keep_days: i64) -> StoreResult<u64> {
        let cutoff = now.saturating_sub(keep_days.saturating_mul(86_400));
        // In slices, so that the writer is never held long.
        let mut removed = 0u64;
        loop {
            let n = super::run::<_, StoreError>(self, true, |tx| {
                tx.delete_auth_events_before(cutoff, PRUNE_SLICE)
            })?;
            removed += n;
            if n < PRUNE_SLICE {
                return Ok(removed);
            }
        }
    }

    fn transaction(
        &self,
        write: bool,
        f: &mut dyn FnMut(&mut dyn Tx) -> StoreResult<()>,
    ) -> StoreResult<()> {
        match (&self.readers, write) {
            (_, true) => self.write(f),
            (Some(pool), false) => {
                let conn = pool
                    .get()
                    .map_err(|e| StoreError::Unavailable(format!("sqlite reader pool: {e}")))?;
                Self::read_in(&conn, f)
            }
            (None, false) => {
                let w = self.lock_writer()?;
                Self::read_in(&w.conn, f)
            }
        }
    }
}

struct SqliteTx<'a> {
    conn: Cached<'a>,
}

/// Statements kept prepared per connection (parsing SQL was a tenth of a request's CPU).
const STATEMENT_CACHE: usize = 64;

/// A connection whose statements come from its prepared-statement cache.
struct Cached<'a>(&'a Connection);

impl<'a> Cached<'a> {
    fn prepare(&self, sql: &str) -> rusqlite::Result<rusqlite::CachedStatement<'a>> {
        self.0.prepare_cached(sql)
    }

    fn execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.0.prepare_cached(sql)?.execute(params)
    }

    fn query_row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.0.prepare_cached(sql)?.query_row(params, f)
    }
}

fn bad_column(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_string(), rusqlite::types::Type::Text)
}

fn org_from_row(r: &Row) -> rusqlite::Result<Org> {
    let alg: String = r.get(7)?;
    Ok(Org {
        id: r.get(0)?,
        name: r.get(1)?,
        partner_org_id: r.get(2)?,
        is_partner: r.get(3)?,
        is_root: r.get(4)?,
        max_lifetime_days: r.get(5)?,
        audience: r.get(6)?,
        key_alg: KeyAlg::parse(&alg).ok_or_else(|| bad_column("key_alg"))?,
        status_version: r.get(8)?,
        next_status_idx: r.get(9)?,
        created_at: r.get(10)?,
    })
}

const ORG_COLS: &str = "id, name, partner_org_id, is_partner, is_root, max_lifetime_days, audience, key_alg, status_version, next_status_idx, created_at";

fn key_from_row(r: &Row) -> rusqlite::Result<SigningKey> {
    let alg: String = r.get(2)?;
    let jwk: String = r.get(3)?;
    Ok(SigningKey {
        kid: r.get(0)?,
        org_id: r.get(1)?,
        alg: KeyAlg::parse(&alg).ok_or_else(|| bad_column("alg"))?,
        public_jwk: serde_json::from_str(&jwk).map_err(|_| bad_column("public_jwk"))?,
        private_enc: r.get(4)?,
        created_at: r.get(5)?,
        retired_at: r.get(6)?,
        last_exp: r.get(7)?,
    })
}

const KEY_COLS: &str =
    "kid, org_id, alg, public_jwk, private_enc, created_at, retired_at, last_exp";

fn user_from_row(r: &Row) -> rusqlite::Result<User> {
    let role: String = r.get(4)?;
    Ok(User {
        id: r.get(0)?,
        org_id: r.get(1)?,
        username: r.get(2)?,
        display_name: r.get(3)?,
        role: Role::parse(&role).ok_or_else(|| bad_column("role"))?,
        delegated: r.get(5)?,
        created_at: r.get(6)?,
    })
}

const USER_COLS: &str = "id, org_id, username, display_name, role, delegated, created_at";

fn token_from_row(r: &Row) -> rusqlite::Result<Token> {
    let ip: String = r.get(10)?;
    let scopes: String = r.get(11)?;
    Ok(Token {
        id: r.get(0)?,
        org_id: r.get(1)?,
        user_id: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
        lifetime_days: r.get(7)?,
        not_before: r.get(8)?,
        expires_at: r.get(9)?,
        ip_allow: serde_json::from_str(&ip).map_err(|_| bad_column("ip_allow"))?,
        scopes: scopes.split_whitespace().map(str::to_string).collect(),
        enabled: r.get(12)?,
        revoked_at: r.get(13)?,
        deleted_at: r.get(14)?,
        minted_at: r.get(15)?,
        jwt_sha256: r.get(16)?,
        status_idx: r.get(17)?,
        kid: r.get(18)?,
        last_used_at: r.get(19)?,
        last_used_ip: r.get(20)?,
    })
}

fn auth_event_from_row(r: &Row) -> rusqlite::Result<AuthEvent> {
    Ok(AuthEvent {
        id: r.get(0)?,
        org_id: r.get(1)?,
        token_id: r.get(2)?,
        user_id: r.get(3)?,
        at: r.get(4)?,
        ip: r.get(5)?,
        outcome: r.get(6)?,
        reason: r.get(7)?,
        method: r.get(8)?,
        path: r.get(9)?,
        source: r.get(10)?,
    })
}

/// The SQL a sort orders by (also the keyset paging key). `last_used_at` is never NULL in
/// it, so that keyset comparisons work.
fn sort_key_sql(sort: TokenSort) -> String {
    match sort {
        TokenSort::Name => "lower(t.name)".to_string(),
        TokenSort::CreatedAt => "t.created_at".into(),
        TokenSort::ExpiresAt => "t.expires_at".into(),
        TokenSort::LastUsedAt => "coalesce(t.last_used_at, -1)".into(),
        TokenSort::User => "u.username".into(),
        TokenSort::Status => format!("({STATUS_SQL})"),
    }
}

/// The WHERE clause of a token search and its named arguments.
/// The text search as an FTS5 phrase, when `q` is long enough for the trigram index (3
/// characters or more; shorter text is matched with LIKE).
fn fts_phrase(q: &TokenQuery) -> Option<String> {
    let text = q.q.as_deref()?;
    (text.chars().count() >= 3).then(|| format!("\"{}\"", text.replace('"', "\"\"")))
}

/// A text search matching at most this many tokens is driven from the trigram index (the
/// few matches are looked up, then sorted); more matches are filtered while walking the
/// sort order, which is cheaper when a page of them is near the start. Measured on 100k
/// tokens: one match 168 ms → 3 ms driven; 10k matches 25 ms walked, 74 ms driven.
const FTS_DRIVE_MAX: i64 = 1000;

/// The WHERE clause of a token search and its named arguments. With `fts_driven`, the
/// text condition is left to the FROM clause (see [`FTS_DRIVE_MAX`]).
/// A token search's WHERE clause, its named arguments, and whether it reads the owner's
/// row (`u`).
struct TokenFilter {
    sql: String,
    args: Vec<(&'static str, SqlValue)>,
    needs_owner: bool,
}

fn token_filter(q: &TokenQuery, fts_driven: bool) -> TokenFilter {
    let mut wh = vec!["t.deleted_at IS NULL".to_string()];
    let mut needs_owner = false;
    let mut args: Vec<(&'static str, SqlValue)> = vec![(":now", SqlValue::Integer(q.now))];
    match &q.scope {
        TokenScope::Org(org) => {
            wh.push("t.org_id = :scope_org".into());
            args.push((":scope_org", SqlValue::Text(org.clone())));
        }
        TokenScope::User(user) => {
            wh.push("t.user_id = :scope_user".into());
            args.push((":scope_user", SqlValue::Text(user.clone())));
        }
        TokenScope::Partner {
            user_id,
            partner_org_id,
        } => {
            needs_owner = true;
            wh.push(
                "(t.user_id = :scope_user OR (u.delegated = 1 AND t.org_id IN \
                 (SELECT id FROM orgs WHERE partner_org_id = :scope_org)))"
                    .into(),
            );
            args.push((":scope_user", SqlValue::Text(user_id.clone())));
            args.push((":scope_org", SqlValue::Text(partner_org_id.clone())));
        }
    }
    if let Some(text) = &q.q {
        if let Some(phrase) = fts_phrase(q) {
            // The trigram index finds substrings of 3 characters or more, case-insensitively
            // (Unicode case folding); one phrase, so the words must appear as given.
            if !fts_driven {
                wh.push(format!("t.id IN ({FTS_IDS})"));
            }
            args.push((":q", SqlValue::Text(phrase)));
        } else {
            needs_owner = true;
            wh.push(
                "(unicode_lower(t.name) LIKE :q ESCAPE '\\' OR unicode_lower(t.description) LIKE :q ESCAPE '\\' \
                 OR unicode_lower(u.username) LIKE :q ESCAPE '\\' OR unicode_lower(u.display_name) LIKE :q ESCAPE '\\')"
                    .into(),
            );
            args.push((":q", SqlValue::Text(like_pattern(text))));
        }
    }
    const STATUS_ARGS: [&str; 5] = [":status0", ":status1", ":status2", ":status3", ":status4"];
    let mut names = Vec::new();
    for (name, status) in STATUS_ARGS.iter().zip(&q.statuses) {
        names.push(*name);
        args.push((name, SqlValue::Text(status.as_str().into())));
    }
    if !names.is_empty() {
        wh.push(format!("({STATUS_SQL}) IN ({})", names.join(", ")));
    }
    if let Some(user) = &q.user {
        wh.push("t.user_id IN (SELECT id FROM users WHERE id = :user OR username = :user)".into());
        args.push((":user", SqlValue::Text(user.clone())));
    }
    if let Some(before) = q.expires_before {
        wh.push("t.expires_at < :expires_before".into());
        args.push((":expires_before", SqlValue::Integer(before)));
    }
    if let Some(after) = q.expires_after {
        wh.push("t.expires_at >= :expires_after".into());
        args.push((":expires_after", SqlValue::Integer(after)));
    }
    TokenFilter {
        sql: wh.join(" AND "),
        args,
        needs_owner,
    }
}

/// A keyset cursor: the row's sort key and id, as base64url of JSON (opaque to clients).
fn encode_cursor(key: &SqlValue, id: &str) -> String {
    let k = match key {
        SqlValue::Integer(n) => serde_json::json!(n),
        SqlValue::Text(t) => serde_json::json!(t),
        SqlValue::Real(f) => serde_json::json!(f),
        _ => serde_json::Value::Null,
    };
    URL_SAFE_NO_PAD.encode(serde_json::json!([k, id]).to_string())
}

/// The sort key and id of a cursor. Anything but `[key, id]` with a key of the sort's type
/// (text or a whole number) is not a cursor of this listing (as on PostgreSQL).
fn decode_cursor(cursor: &str, text_key: bool) -> StoreResult<(SqlValue, String)> {
    let bad = || StoreError::BadCursor;
    let json = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|_| bad())?;
    let [key, id] = v.as_array().map(Vec::as_slice).ok_or_else(bad)? else {
        return Err(bad());
    };
    let key = match (key, text_key) {
        (serde_json::Value::String(t), true) => SqlValue::Text(t.clone()),
        (serde_json::Value::Number(n), false) => SqlValue::Integer(n.as_i64().ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    let id = id.as_str().ok_or_else(bad)?;
    Ok((key, id.to_string()))
}

/// `unicode_lower(text)`: Rust's Unicode lower case (SQLite's `lower` folds ASCII only), so
/// that a short search matches `É` as `é`, as the trigram index does for longer ones.
fn add_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "unicode_lower",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(ctx.get::<Option<String>>(0)?.map(|s| s.to_lowercase())),
    )
}

/// The WHERE clause and arguments of an authentication-log query.
fn auth_event_filter(q: &AuthEventQuery) -> (String, Vec<SqlValue>) {
    let mut wh = vec!["1 = 1"];
    let mut args: Vec<SqlValue> = Vec::new();
    let mut add = |clause: &'static str, v: SqlValue| {
        wh.push(clause);
        args.push(v);
    };
    if let Some(v) = &q.org_id {
        add("org_id = ?", SqlValue::Text(v.clone()));
    }
    if let Some(v) = &q.token_id {
        add("token_id = ?", SqlValue::Text(v.clone()));
    }
    if let Some(v) = &q.user_id {
        add("user_id = ?", SqlValue::Text(v.clone()));
    }
    if let Some(v) = &q.outcome {
        add("outcome = ?", SqlValue::Text(v.clone()));
    }
    if let Some(v) = q.since {
        add("at >= ?", SqlValue::Integer(v));
    }
    if let Some(v) = q.until {
        add("at < ?", SqlValue::Integer(v));
    }
    (wh.join(" AND "), args)
}

fn like_pattern(q: &str) -> String {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

impl Tx for SqliteTx<'_> {
    fn get_setting(&mut self, key: &str) -> StoreResult<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_setting(&mut self, key: &str, value: &str) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    fn insert_org(&mut self, o: &Org) -> StoreResult<()> {
        self.conn.execute(
            &format!("INSERT INTO orgs ({ORG_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                o.id, o.name, o.partner_org_id, o.is_partner, o.is_root, o.max_lifetime_days, o.audience,
                o.key_alg.as_str(), o.status_version, o.next_status_idx, o.created_at
            ],
        )?;
        Ok(())
    }

    fn update_org(&mut self, o: &Org) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE orgs SET name = ?2, partner_org_id = ?3, is_partner = ?4, is_root = ?5, max_lifetime_days = ?6, \
             audience = ?7, key_alg = ?8, status_version = ?9, next_status_idx = ?10 WHERE id = ?1",
            params![
                o.id, o.name, o.partner_org_id, o.is_partner, o.is_root, o.max_lifetime_days, o.audience,
                o.key_alg.as_str(), o.status_version, o.next_status_idx
            ],
        )?;
        Ok(())
    }

    fn get_org(&mut self, id: &str) -> StoreResult<Option<Org>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {ORG_COLS} FROM orgs WHERE id = ?1"),
                [id],
                org_from_row,
            )
            .optional()?)
    }

    fn list_orgs(&mut self) -> StoreResult<Vec<Org>> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {ORG_COLS} FROM orgs ORDER BY id"))?;
        let rows = st
            .query_map([], org_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn list_managed_orgs(&mut self, partner_org_id: &str) -> StoreResult<Vec<Org>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {ORG_COLS} FROM orgs WHERE partner_org_id = ?1 ORDER BY id"
        ))?;
        let rows = st
            .query_map([partner_org_id], org_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn any_org(&mut self) -> StoreResult<Option<Org>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {ORG_COLS} FROM orgs ORDER BY is_root DESC, id LIMIT 1"),
                [],
                org_from_row,
            )
            .optional()?)
    }

    fn insert_key(&mut self, k: &SigningKey) -> StoreResult<()> {
        self.conn.execute(
            &format!(
                "INSERT INTO signing_keys ({KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                k.kid,
                k.org_id,
                k.alg.as_str(),
                k.public_jwk.to_string(),
                k.private_enc,
                k.created_at,
                k.retired_at,
                k.last_exp
            ],
        )?;
        Ok(())
    }

    fn update_key(&mut self, k: &SigningKey) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE signing_keys SET retired_at = ?2, last_exp = ?3 WHERE kid = ?1",
            params![k.kid, k.retired_at, k.last_exp],
        )?;
        Ok(())
    }

    fn get_key(&mut self, kid: &str) -> StoreResult<Option<SigningKey>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {KEY_COLS} FROM signing_keys WHERE kid = ?1"),
                [kid],
                key_from_row,
            )
            .optional()?)
    }

    fn list_keys(&mut self, org_id: &str) -> StoreResult<Vec<SigningKey>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {KEY_COLS} FROM signing_keys WHERE org_id = ?1 ORDER BY created_at DESC, rowid DESC"
        ))?;
        let rows = st
            .query_map([org_id], key_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_user(&mut self, u: &User) -> StoreResult<()> {
        self.conn.execute(
            &format!("INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                u.id,
                u.org_id,
                u.username,
                u.display_name,
                u.role.as_str(),
                u.delegated,
                u.created_at
            ],
        )?;
        Ok(())
    }

    fn update_user(&mut self, u: &User) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE users SET display_name = ?2, role = ?3, delegated = ?4 WHERE id = ?1",
            params![u.id, u.display_name, u.role.as_str(), u.delegated],
        )?;
        Ok(())
    }

    fn get_user(&mut self, id: &str) -> StoreResult<Option<User>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )
            .optional()?)
    }

    fn find_user(&mut self, org_id: &str, username: &str) -> StoreResult<Option<User>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE org_id = ?1 AND username = ?2"),
                [org_id, username],
                user_from_row,
            )
            .optional()?)
    }

    fn list_users(&mut self, org_id: &str) -> StoreResult<Vec<User>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {USER_COLS} FROM users WHERE org_id = ?1 ORDER BY username"
        ))?;
        let rows = st
            .query_map([org_id], user_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_token(&mut self, t: &Token) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO tokens (id, org_id, user_id, name, description, created_by, created_at, lifetime_days, \
             not_before, expires_at, ip_allow, scopes, enabled, revoked_at, deleted_at, minted_at, jwt_sha256, \
             status_idx, kid, last_used_at, last_used_ip) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
            params![
                t.id, t.org_id, t.user_id, t.name, t.description, t.created_by, t.created_at, t.lifetime_days,
                t.not_before, t.expires_at, serde_json::Value::from(t.ip_allow.clone()).to_string(),
                t.scopes.join(" "), t.enabled, t.revoked_at, t.deleted_at, t.minted_at, t.jwt_sha256,
                t.status_idx, t.kid, t.last_used_at, t.last_used_ip
            ],
        )?;
        Ok(())
    }

    fn update_token(&mut self, t: &Token) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE tokens SET name = ?2, description = ?3, lifetime_days = ?4, not_before = ?5, expires_at = ?6, \
             ip_allow = ?7, scopes = ?8, enabled = ?9, revoked_at = ?10, deleted_at = ?11, minted_at = ?12, \
             jwt_sha256 = ?13, status_idx = ?14, kid = ?15, last_used_at = ?16, last_used_ip = ?17 WHERE id = ?1",
            params![
                t.id, t.name, t.description, t.lifetime_days, t.not_before, t.expires_at,
                serde_json::Value::from(t.ip_allow.clone()).to_string(), t.scopes.join(" "), t.enabled,
                t.revoked_at, t.deleted_at, t.minted_at, t.jwt_sha256, t.status_idx, t.kid, t.last_used_at,
                t.last_used_ip
            ],
        )?;
        Ok(())
    }

    fn get_token(&mut self, id: &str) -> StoreResult<Option<Token>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {TOKEN_COLS} FROM tokens t WHERE t.id = ?1"),
                [id],
                token_from_row,
            )
            .optional()?)
    }

    fn set_last_used(&mut self, id: &str, at: i64, ip: Option<&str>) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE tokens SET last_used_at = ?2, last_used_ip = ?3 WHERE id = ?1",
            params![id, at, ip],
        )?;
        Ok(())
    }

    fn search_tokens(&mut self, q: &TokenQuery) -> StoreResult<TokenHits> {
        let fts_driven = match fts_phrase(q) {
            Some(phrase) => {
                let matches: i64 = self.conn.query_row(
                    "SELECT count(*) FROM token_text WHERE token_text MATCH ?1",
                    [phrase],
                    |r| r.get(0),
                )?;
                matches <= FTS_DRIVE_MAX
            }
            None => false,
        };
        let TokenFilter {
            sql: where_sql,
            args,
            needs_owner,
        } = token_filter(q, fts_driven);
        let order = sort_key_sql(q.sort);
        let dir = if q.descending { "DESC" } else { "ASC" };
        // CROSS JOIN keeps the matches as the outer loop (SQLite never reorders it).
        let driven_from = format!(
            "FROM ({FTS_IDS}) s CROSS JOIN tokens t ON t.id = s.token_id \
             JOIN users u ON u.id = t.user_id"
        );
        let from = if fts_driven {
            driven_from.as_str()
        } else {
            "FROM tokens t JOIN users u ON u.id = t.user_id"
        };
        let bind =
            |sql: &str, extra: &[(&'static str, SqlValue)]| -> Vec<(&'static str, SqlValue)> {
                args.iter()
                    .chain(extra.iter())
                    .filter(|(n, _)| sql.contains(n))
                    .map(|(n, v)| (*n, v.clone()))
                    .collect()
            };
        let total = if q.count {
            // The owner's row is joined only when a condition needs it.
            let count_from = if fts_driven || needs_owner {
                from
            } else {
                "FROM tokens t"
            };
            let count_sql = format!("SELECT count(*) {count_from} WHERE {where_sql}");
            let b = bind(&count_sql, &[]);
            let refs: Vec<(&str, &dyn rusqlite::ToSql)> = b
                .iter()
                .map(|(n, v)| (*n, v as &dyn rusqlite::ToSql))
                .collect();
            Some(
                self.conn
                    .query_row(&count_sql, refs.as_slice(), |r| r.get(0))?,
            )
        } else {
            None
        };
        let mut extra: Vec<(&'static str, SqlValue)> = Vec::new();
        let mut keyset = String::new();
        let mut offset = q.offset;
        if let Some(cursor) = &q.after {
            let text_key = matches!(
                q.sort,
                TokenSort::Name | TokenSort::User | TokenSort::Status
            );
            let (key, id) = decode_cursor(cursor, text_key)?;
            let cmp = if q.descending { "<" } else { ">" };
            keyset = format!(" AND ({order}, t.id) {cmp} (:after_key, :after_id)");
            extra.push((":after_key", key));
            extra.push((":after_id", SqlValue::Text(id)));
            offset = 0;
        }
        let sql = format!(
            "SELECT {TOKEN_COLS}, u.username, {order} {from} WHERE {where_sql}{keyset} \
             ORDER BY {order} {dir}, t.id {dir} LIMIT {} OFFSET {}",
            q.limit, offset
        );
        let b = bind(&sql, &extra);
        let refs: Vec<(&str, &dyn rusqlite::ToSql)> = b
            .iter()
            .map(|(n, v)| (*n, v as &dyn rusqlite::ToSql))
            .collect();
        let mut st = self.conn.prepare(&sql)?;
        let hits = st
            .query_map(refs.as_slice(), |r| {
                let token = token_from_row(r)?;
                let username: String = r.get(21)?;
                let key: SqlValue = r.get(22)?;
                Ok((token, username, key))
            })?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|(token, username, key)| TokenHit {
                cursor: encode_cursor(&key, &token.id),
                token,
                username,
            })
            .collect();
        Ok(TokenHits { hits, total })
    }

    fn live_unrevoked_tokens(&mut self, scope: &TokenScope) -> StoreResult<Vec<Token>> {
        let (clause, arg) = match scope {
            TokenScope::Org(org) => ("t.org_id = ?1", org.clone()),
            TokenScope::User(user) => ("t.user_id = ?1", user.clone()),
            TokenScope::Partner { .. } => {
                return Err(StoreError::Backend(
                    "revoke-all never spans a partner's customers".into(),
                ))
            }
        };
        let mut st = self.conn.prepare(&format!(
            "SELECT {TOKEN_COLS} FROM tokens t WHERE {clause} AND t.deleted_at IS NULL \
             AND t.revoked_at IS NULL ORDER BY t.created_at, t.id"
        ))?;
        let rows = st
            .query_map([arg], token_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn set_status(
        &mut self,
        org_id: &str,
        idx: i64,
        value: u8,
        token_id: &str,
        version: i64,
    ) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO status_entries (org_id, idx, value, token_id, version) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(org_id, idx) DO UPDATE SET value = excluded.value, version = excluded.version",
            params![org_id, idx, value, token_id, version],
        )?;
        Ok(())
    }

    fn status_entries(&mut self, org_id: &str) -> StoreResult<Vec<(i64, u8)>> {
        let mut st = self
            .conn
            .prepare("SELECT idx, value FROM status_entries WHERE org_id = ?1 AND value != 0")?;
        let rows = st
            .query_map([org_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn status_changes_since(&mut self, org_id: &str, version: i64) -> StoreResult<Vec<(i64, u8)>> {
        let mut st = self
            .conn
            .prepare("SELECT idx, value FROM status_entries WHERE org_id = ?1 AND version > ?2")?;
        let rows = st
            .query_map(params![org_id, version], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn delete_auth_events_before(&mut self, cutoff: i64, limit: u64) -> StoreResult<u64> {
        let n = self.conn.execute(
            "DELETE FROM auth_events WHERE id IN \
             (SELECT id FROM auth_events WHERE at < ?1 LIMIT ?2)",
            params![cutoff, limit as i64],
        )?;
        Ok(n as u64)
    }

    fn insert_auth_event(&mut self, e: &AuthEvent) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO auth_events (org_id, token_id, user_id, at, ip, outcome, reason, method, path, source) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![e.org_id, e.token_id, e.user_id, e.at, e.ip, e.outcome, e.reason, e.method, e.path, e.source],
        )?;
        Ok(())
    }

    fn list_auth_events(&mut self, q: &AuthEventQuery) -> StoreResult<Vec<AuthEvent>> {
        let (wh, args) = auth_event_filter(q);
        let sql = format!(
            "SELECT id, org_id, token_id, user_id, at, ip, outcome, reason, method, path, source FROM auth_events \
             WHERE {} ORDER BY at DESC, id DESC LIMIT {} OFFSET {}",
            wh,
            q.limit,
            q.offset
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), auth_event_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_audit(&mut self, a: &AuditEntry) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO audit_log (at, org_id, actor, action, target, detail, credential) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![a.at, a.org_id, a.actor, a.action, a.target, a.detail.to_string(), a.credential],
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
        let mut st = self.conn.prepare(
            "SELECT id, at, org_id, actor, action, target, detail, credential FROM audit_log \
             WHERE org_id = ?1 AND (?2 IS NULL OR target = ?2) ORDER BY id DESC LIMIT ?3 OFFSET ?4",
        )?;
        let rows = st
            .query_map(params![org_id, target, limit, offset], |r| {
                let detail: String = r.get(6)?;
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    org_id: r.get(2)?,
                    actor: r.get(3)?,
                    action: r.get(4)?,
                    target: r.get(5)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    credential: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn count_auth_events(&mut self, q: &AuthEventQuery) -> StoreResult<i64> {
        let (wh, args) = auth_event_filter(q);
        let sql = format!("SELECT count(*) FROM auth_events WHERE {wh}");
        Ok(self
            .conn
            .query_row(&sql, rusqlite::params_from_iter(args), |r| r.get(0))?)
    }

    fn count_audit(&mut self, org_id: &str, target: Option<&str>) -> StoreResult<i64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM audit_log WHERE org_id = ?1 AND (?2 IS NULL OR target = ?2)",
            params![org_id, target],
            |r| r.get(0),
        )?)
    }

    fn insert_edge(&mut self, e: &EdgeCredential) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO edge_credentials (id, org_id, name, secret_sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.id, e.org_id, e.name, e.secret_sha256, e.created_at],
        )?;
        Ok(())
    }

    fn find_edge_by_secret_hash(&mut self, hash: &str) -> StoreResult<Option<EdgeCredential>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, org_id, name, secret_sha256, created_at FROM edge_credentials WHERE secret_sha256 = ?1",
                [hash],
                |r| {
                    Ok(EdgeCredential {
                        id: r.get(0)?,
                        org_id: r.get(1)?,
                        name: r.get(2)?,
                        secret_sha256: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_to_latest_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), latest_schema_version());
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), latest_schema_version());
        let w = s.writer.lock().unwrap();
        let conn = &w.conn;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    /// Group commit: 8 threads × 50 writes, every third of which fails after writing. Every
    /// successful write is there afterwards (read through a fresh connection, i.e. after
    /// commit), no failed write left anything, and the batch a failure was in committed
    /// the others' writes.
    #[test]
    fn concurrent_writes_commit_in_batches_and_a_failure_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let s = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..50 {
                        let key = format!("k{t}-{i}");
                        let fail = i % 3 == 0;
                        let r: StoreResult<()> = super::super::run(s.as_ref(), true, |tx| {
                            tx.set_setting(&key, "v")?;
                            if fail {
                                return Err(StoreError::Conflict("refused".into()));
                            }
                            Ok(())
                        });
                        match r {
                            Ok(()) => acked.push(key),
                            Err(e) => {
                                assert!(fail, "{key}: {e}");
                                assert_eq!(e, StoreError::Conflict("refused".into()));
                            }
                        }
                    }
                    acked
                })
            })
            .collect();
        let acked: Vec<String> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(acked.len(), 8 * 33);
        drop(s);
        let conn = Connection::open(&path).unwrap();
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM settings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            stored,
            acked.len() as i64,
            "exactly the acknowledged writes"
        );
        for key in &acked {
            let v: Option<String> = conn
                .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()
                .unwrap();
            assert_eq!(v.as_deref(), Some("v"), "{key}");
        }
    }

    /// A read on the pool sees a write as soon as the write has returned.
    #[test]
    fn a_returned_write_is_visible_to_readers() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        for i in 0..20 {
            let v = i.to_string();
            super::super::run::<_, StoreError>(&s, true, |tx| tx.set_setting("a", &v)).unwrap();
            let got = super::super::run::<_, StoreError>(&s, false, |tx| tx.get_setting("a"));
            assert_eq!(got.unwrap(), Some(v));
        }
    }

    /// Both plans of a text search (driven from the trigram index when it matches at most
    /// `FTS_DRIVE_MAX` tokens, filtered along the sort order otherwise) find the same rows
    /// in the same order, and keyset cursors page through either without loss or overlap.
    #[test]
    fn text_search_plans_agree_and_cursors_page_through_both() {
        let s = SqliteStore::open_in_memory().unwrap();
        let broad = FTS_DRIVE_MAX as usize + 100;
        {
            let w = s.writer.lock().unwrap();
            w.conn
                .execute_batch(
                    "INSERT INTO orgs VALUES ('o', 'o', NULL, 0, 0, 365, 'aud', 'ES256', 0, 0, 0);
                     INSERT INTO users VALUES ('u', 'o', 'ula', 'Ula', 'user', 0, 0);",
                )
                .unwrap();
            let mut st = w
                .conn
                .prepare(
                    "INSERT INTO tokens (id, org_id, user_id, name, description, created_by, \
                     created_at, expires_at, ip_allow, scopes, enabled) \
                     VALUES (?1, 'o', 'u', ?2, '', 'u', ?3, 9999999999, '[]', 'read', 1)",
                )
                .unwrap();
            for i in 0..broad + 50 {
                let name = if i < broad {
                    format!("wide-{i:05}")
                } else {
                    format!("narrow-{i:05}")
                };
                // Equal creation times in pairs, so the id breaks ties.
                st.execute(params![format!("t{i:05}"), name, (i / 2) as i64])
                    .unwrap();
            }
        }
        let query = |q: &str, after: Option<String>| TokenQuery {
            scope: TokenScope::Org("o".into()),
            q: Some(q.into()),
            statuses: Vec::new(),
            user: None,
            expires_before: None,
            expires_after: None,
            sort: TokenSort::CreatedAt,
            descending: true,
            limit: 70,
            offset: 0,
            after,
            count: true,
            now: 0,
        };
        for (q, expected) in [("wide", broad), ("narrow", 50), ("row-0", 50)] {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = super::super::run::<_, StoreError>(&s, false, |tx| {
                    tx.search_tokens(&query(q, after.clone()))
                })
                .unwrap();
                assert_eq!(page.total, Some(expected as i64), "{q}");
                seen.extend(page.hits.iter().map(|h| h.token.id.clone()));
                match page.hits.last() {
                    Some(h) if page.hits.len() == 70 => after = Some(h.cursor.clone()),
                    _ => break,
                }
            }
            let mut want = seen.clone();
            want.sort_by(|a, b| b.cmp(a));
            assert_eq!(seen.len(), expected, "{q}: every match once");
            assert_eq!(seen, want, "{q}: newest first, then id");
        }
        let bad = super::super::run::<_, StoreError>(&s, false, |tx| {
            tx.search_tokens(&query("wide", Some("not-a-cursor".into())))
        });
        assert_eq!(bad.unwrap_err(), StoreError::BadCursor);
    }

    /// Retention deletes the events older than the kept days (in slices), and only them.
    #[test]
    fn pruning_deletes_only_events_older_than_the_kept_days() {
        let s = SqliteStore::open_in_memory().unwrap();
        let now = 1_800_000_000;
        let event = |at: i64| AuthEvent {
            id: 0,
            org_id: "o".into(),
            token_id: "t".into(),
            user_id: "u".into(),
            at,
            ip: None,
            outcome: "allow".into(),
            reason: None,
            method: None,
            path: None,
            source: "api".into(),
        };
        let old: Vec<AuthEvent> = (0..PRUNE_SLICE as i64 + 5)
            .map(|i| event(now - 91 * 86_400 - i))
            .collect();
        let recent: Vec<AuthEvent> = (0..3).map(|i| event(now - 89 * 86_400 - i)).collect();
        super::super::run::<_, StoreError>(&s, true, |tx| {
            tx.insert_auth_events(&old)?;
            tx.insert_auth_events(&recent)
        })
        .unwrap();
        assert_eq!(s.prune_auth_log(now, 90).unwrap(), old.len() as u64);
        let left = super::super::run::<_, StoreError>(&s, false, |tx| {
            tx.count_auth_events(&AuthEventQuery::default())
        })
        .unwrap();
        assert_eq!(left, 3);
        assert_eq!(s.prune_auth_log(now, 90).unwrap(), 0);
    }

    #[test]
    fn failed_transaction_leaves_nothing() {
        let s = SqliteStore::open_in_memory().unwrap();
        let r: StoreResult<()> = super::super::run(&s, true, |tx| {
            tx.set_setting("a", "1")?;
            Err(StoreError::Conflict("no".into()))
        });
        assert_eq!(r, Err(StoreError::Conflict("no".into())));
        assert_eq!(
            super::super::run(&s, false, |tx| tx.get_setting("a")).unwrap(),
            None
        );
    }
}
