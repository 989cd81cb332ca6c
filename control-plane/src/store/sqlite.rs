//! The SQLite backend: WAL journal, `synchronous=FULL` (a committed write survives a kill
//! or power loss), migrations tracked in `PRAGMA user_version`.

use super::migrations::MIGRATIONS;
use super::sql::{like_pattern, Args, Conn, Dialect, Engine, SqlRow, TextCondition, Value};
use super::{Store, StoreError, StoreResult, Tx};
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, Row, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

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

/// The page-cache budget of a store, MiB (`--sqlite-cache-mib`): SQLite's own default is
/// 2,000 KiB per connection, so the writer and [`READERS`] readers took up to about 17.6
/// MiB; 18 keeps that.
pub const DEFAULT_CACHE_MIB: u32 = 18;

/// The page cache of each connection, KiB, when `mib` is split evenly between the writer
/// and the readers (at least 64 KiB each).
pub fn cache_kib_per_connection(mib: u32) -> i64 {
    (i64::from(mib) * 1024 / i64::from(READERS + 1)).max(64)
}

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
        Self::open_with_cache(path, DEFAULT_CACHE_MIB)
    }

    /// [`Self::open`] with a page-cache budget of `cache_mib` MiB for all its connections
    /// (see [`cache_kib_per_connection`]).
    pub fn open_with_cache(path: &Path, cache_mib: u32) -> StoreResult<Self> {
        let kib = cache_kib_per_connection(cache_mib);
        let writer = Connection::open(path)?;
        // A negative cache_size is KiB rather than pages.
        writer.pragma_update(None, "cache_size", -kib)?;
        let mut s = Self::init(writer)?;
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(move |c| {
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                add_functions(c)?;
                c.pragma_update(None, "cache_size", -kib)?;
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
        let r = f(&mut SqliteTx {
            conn: Cached(conn),
            write: false,
        });
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
                    write: true,
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
    write: bool,
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

/// `sql.rs`'s statements on this connection.
impl Conn for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn writing(&self) -> bool {
        self.write
    }

    fn exec(&mut self, sql: &str, args: &[Value]) -> StoreResult<u64> {
        Ok(self
            .conn
            .execute(sql, rusqlite::params_from_iter(args.iter()))? as u64)
    }

    fn exec_once(&mut self, sql: &str, args: &[Value]) -> StoreResult<u64> {
        Ok(self
            .conn
            .0
            .execute(sql, rusqlite::params_from_iter(args.iter()))? as u64)
    }

    fn each(
        &mut self,
        sql: &str,
        args: &[Value],
        f: &mut dyn FnMut(&dyn SqlRow) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut st = self.conn.prepare(sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
        while let Some(r) = rows.next()? {
            f(r)?;
        }
        Ok(())
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(SqlValue::Null),
            Value::Int(n) => ToSqlOutput::Owned(SqlValue::Integer(*n)),
            Value::Bool(b) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(*b))),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

impl SqlRow for Row<'_> {
    fn int(&self, i: usize) -> StoreResult<Option<i64>> {
        Ok(self.get(i)?)
    }
    fn text(&self, i: usize) -> StoreResult<Option<String>> {
        Ok(self.get(i)?)
    }
    fn boolean(&self, i: usize) -> StoreResult<Option<bool>> {
        Ok(self.get(i)?)
    }
    fn bytes(&self, i: usize) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.get(i)?)
    }
}

impl Engine for SqliteTx<'_> {
    /// Text of 3 characters or more goes through the FTS5 trigram index (Unicode case
    /// folding; one phrase, so the words must appear as given), driven from it when it
    /// matches at most [`FTS_DRIVE_MAX`] tokens; shorter text is matched with LIKE on each
    /// of name, description, username and display name.
    fn text_condition(&mut self, text: &str, args: &mut Args) -> StoreResult<TextCondition> {
        if text.chars().count() < 3 {
            let p = args.add(like_pattern(text));
            return Ok(TextCondition {
                where_sql: Some(format!(
                    "(unicode_lower(t.name) LIKE {p} ESCAPE '\\' \
                     OR unicode_lower(t.description) LIKE {p} ESCAPE '\\' \
                     OR unicode_lower(u.username) LIKE {p} ESCAPE '\\' \
                     OR unicode_lower(u.display_name) LIKE {p} ESCAPE '\\')"
                )),
                from: None,
                needs_owner: true,
            });
        }
        let phrase = format!("\"{}\"", text.replace('"', "\"\""));
        let matches: i64 = self.conn.query_row(
            "SELECT count(*) FROM token_text WHERE token_text MATCH ?1",
            [&phrase],
            |r| r.get(0),
        )?;
        let p = args.add(phrase);
        let ids = format!(
            "SELECT m.token_id FROM token_text JOIN token_search_ids m \
             ON m.n = token_text.rowid WHERE token_text MATCH {p}"
        );
        Ok(if matches <= FTS_DRIVE_MAX {
            // CROSS JOIN keeps the matches as the outer loop (SQLite never reorders it).
            TextCondition {
                where_sql: None,
                from: Some(format!(
                    "FROM ({ids}) s CROSS JOIN tokens t ON t.id = s.token_id \
                     JOIN users u ON u.id = t.user_id"
                )),
                needs_owner: false,
            }
        } else {
            TextCondition {
                where_sql: Some(format!("t.id IN ({ids})")),
                from: None,
                needs_owner: false,
            }
        })
    }
}

/// A text search matching at most this many tokens is driven from the trigram index (the
/// few matches are looked up, then sorted); more matches are filtered while walking the
/// sort order, which is cheaper when a page of them is near the start. Measured on 100k
/// tokens: one match 168 ms → 3 ms driven; 10k matches 25 ms walked, 74 ms driven.
const FTS_DRIVE_MAX: i64 = 1000;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AuthEvent;
    use crate::store::AuthEventQuery;
    use rusqlite::OptionalExtension;

    /// The budget is split evenly: the writer and every reader get the same page cache,
    /// and the default keeps SQLite's own (2,000 KiB, here 2,048) per connection.
    #[test]
    fn the_cache_budget_is_split_between_the_writer_and_the_readers() {
        assert_eq!(cache_kib_per_connection(DEFAULT_CACHE_MIB), 2048);
        assert_eq!(cache_kib_per_connection(1), 113);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let s = SqliteStore::open_with_cache(&path, 90).unwrap();
        let size =
            |c: &Connection| -> i64 { c.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap() };
        assert_eq!(size(&s.lock_writer().unwrap().conn), -10_240);
        let reader = s.readers.as_ref().unwrap().get().unwrap();
        assert_eq!(size(&reader), -10_240);
    }

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
