//! Storage behind two traits: `Store` opens transactions, `Tx` is what one transaction can
//! do. All business logic runs against `dyn Tx`. Every API change runs in exactly one
//! transaction. `sql.rs` implements `Tx` once for both backends over a small connection
//! abstraction (`sql::Conn`); `sqlite.rs` and `postgres.rs` keep what only their engine
//! has.

pub mod accounts;
pub mod limits;
pub mod migrations;
pub mod notifications;
pub mod postgres;
pub mod rotations;
pub mod scim;
pub mod scopes;
pub(crate) mod sql;
pub mod sqlite;
pub mod sso;
pub mod webhooks;

pub use accounts::AccountsTx;
pub use limits::LimitsTx;
pub use notifications::NotificationsTx;
pub use rotations::RotationsTx;
pub use scim::ScimTx;
pub use scopes::ScopesTx;
pub use sso::SsoTx;
pub use webhooks::WebhooksTx;

use std::path::PathBuf;

/// Where the data lives: the `--db` value (or `TESSERA_DB`) of the commands that open the
/// database themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// `sqlite:///abs/path.db`, `sqlite://rel/path.db`, or a bare path (the default).
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, kept whole for the driver.
    Postgres(String),
}

impl DbLocation {
    /// Reads a `--db` value. A bare path (no `scheme://`) is a SQLite file.
    pub fn parse(s: &str) -> Result<DbLocation, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("--db: empty; give a file path, sqlite:///path or postgres://…".into());
        }
        if let Some(rest) = s.strip_prefix("sqlite://") {
            if rest.is_empty() {
                return Err("--db: sqlite:// names no file".into());
            }
            return Ok(DbLocation::Sqlite(PathBuf::from(rest)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DbLocation::Postgres(s.to_string()));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "--db: unknown scheme `{scheme}://`; use a file path, sqlite:///path or postgres://user@host:port/db"
            ));
        }
        Ok(DbLocation::Sqlite(PathBuf::from(s)))
    }

    /// For logs and errors: a PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match self {
            DbLocation::Sqlite(p) => p.display().to_string(),
            DbLocation::Postgres(url) => redact_password(url),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            DbLocation::Sqlite(_) => "sqlite",
            DbLocation::Postgres(_) => "postgres",
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, tail) = match rest.find('@') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{tail}"),
        None => url.to_string(),
    }
}

/// Opens (and migrates) the database `db` names. A new SQLite file is created readable by
/// its owner only.
pub fn open(db: &DbLocation) -> StoreResult<Box<dyn Store>> {
    open_with(db, &OpenOptions::default())
}

/// What `tessera serve` may tune when it opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// The memory SQLite's page caches may take, MiB, split evenly between the writer
    /// connection and the readers (`--sqlite-cache-mib`). PostgreSQL ignores it.
    pub sqlite_cache_mib: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            sqlite_cache_mib: sqlite::DEFAULT_CACHE_MIB,
        }
    }
}

/// [`open`] with options.
pub fn open_with(db: &DbLocation, options: &OpenOptions) -> StoreResult<Box<dyn Store>> {
    match db {
        DbLocation::Sqlite(path) => {
            sqlite::create_private(path)?;
            Ok(Box::new(sqlite::SqliteStore::open_with_cache(
                path,
                options.sqlite_cache_mib,
            )?))
        }
        DbLocation::Postgres(url) => Ok(Box::new(postgres::PostgresStore::open(url)?)),
    }
}

/// Why the store could not do what was asked. Says nothing about HTTP: the service maps
/// it, and only the API turns it into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// A uniqueness or reference constraint refused the change.
    Conflict(String),
    /// The database could not be reached or is busy beyond the timeout.
    Unavailable(String),
    /// A stored value could not be read back (a column of the wrong shape).
    Corrupt(String),
    /// Any other backend failure.
    Backend(String),
    /// A paging cursor that no listing of this store produced.
    BadCursor,
    /// The caller's closure failed; its own error is kept by [`run`]. Never shown.
    Aborted,
}

pub type StoreResult<T> = Result<T, StoreError>;

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(m) => write!(f, "conflict: {m}"),
            StoreError::Unavailable(m) => write!(f, "database unavailable: {m}"),
            StoreError::Corrupt(m) => write!(f, "stored value unreadable: {m}"),
            StoreError::Backend(m) => write!(f, "database error: {m}"),
            StoreError::BadCursor => f.write_str("not a paging cursor of this listing"),
            StoreError::Aborted => f.write_str("transaction aborted by its caller"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Runs `f` in one transaction of `store` and returns its value. `f`'s error type only
/// needs to hold a [`StoreError`]; an error from `f` rolls the transaction back and comes
/// back unchanged.
pub fn run<T, E: From<StoreError>>(
    store: &dyn Store,
    write: bool,
    mut f: impl FnMut(&mut dyn Tx) -> Result<T, E>,
) -> Result<T, E> {
    let mut out: Option<Result<T, E>> = None;
    let r = store.transaction(write, &mut |tx| match f(tx) {
        Ok(v) => {
            out = Some(Ok(v));
            Ok(())
        }
        Err(e) => {
            out = Some(Err(e));
            Err(StoreError::Aborted)
        }
    });
    match (r, out) {
        (Ok(()), Some(Ok(v))) => Ok(v),
        (Err(StoreError::Aborted), Some(Err(e))) => Err(e),
        // The commit itself failed after the body succeeded.
        (Err(e), _) => Err(E::from(e)),
        (Ok(()), _) => Err(E::from(StoreError::Backend(
            "transaction produced no value".into(),
        ))),
    }
}

use crate::model::{
    AuditEntry, AuthEvent, EdgeCredential, Org, SigningKey, Token, TokenStatus, User,
};

/// Which tokens a search may see (decided by the caller's role, never by the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    Org(String),
    User(String),
    /// The partner user's own tokens and those of delegating users of customer orgs.
    Partner {
        user_id: String,
        partner_org_id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSort {
    Name,
    CreatedAt,
    ExpiresAt,
    LastUsedAt,
    User,
    Status,
}

impl TokenSort {
    pub const NAMES: [&'static str; 6] = [
        "name",
        "created_at",
        "expires_at",
        "last_used_at",
        "user",
        "status",
    ];

    pub fn parse(s: &str) -> Option<TokenSort> {
        Some(match s {
            "name" => TokenSort::Name,
            "created_at" => TokenSort::CreatedAt,
            "expires_at" => TokenSort::ExpiresAt,
            "last_used_at" => TokenSort::LastUsedAt,
            "user" => TokenSort::User,
            "status" => TokenSort::Status,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct TokenQuery {
    pub scope: TokenScope,
    /// Words of the name, description, username or display name (case-insensitive, also
    /// beyond ASCII); each word matches a substring.
    pub q: Option<String>,
    /// Tokens in any of these statuses; empty: any status.
    pub statuses: Vec<TokenStatus>,
    /// A user id or username.
    pub user: Option<String>,
    /// Only tokens of this organization (within the scope).
    pub org: Option<String>,
    pub expires_before: Option<i64>,
    /// Only tokens expiring at or after this time.
    pub expires_after: Option<i64>,
    pub sort: TokenSort,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
    /// Keyset paging: only rows after this cursor (a [`TokenHit::cursor`] of an earlier
    /// call with the same query); `offset` is then ignored.
    pub after: Option<String>,
    /// Whether to count all matches (costs a pass over them).
    pub count: bool,
    /// For the derived status.
    pub now: i64,
}

/// One row of a token search.
#[derive(Debug, Clone)]
pub struct TokenHit {
    pub token: Token,
    /// The owner's username.
    pub username: String,
    /// Where the next page starts when this is the last row (opaque, for `after`).
    pub cursor: String,
}

/// The rows of a token search, and the number of all matches when it was asked for.
#[derive(Debug, Clone)]
pub struct TokenHits {
    pub hits: Vec<TokenHit>,
    pub total: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct AuthEventQuery {
    pub org_id: Option<String>,
    pub token_id: Option<String>,
    pub user_id: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

/// One transaction's operations. Getters return `Ok(None)` when the record is absent.
/// What concerns people signing in is in the supertrait [`AccountsTx`].
pub trait Tx:
    AccountsTx + ScimTx + ScopesTx + LimitsTx + RotationsTx + WebhooksTx + SsoTx + NotificationsTx
{
    fn get_setting(&mut self, key: &str) -> StoreResult<Option<String>>;
    fn set_setting(&mut self, key: &str, value: &str) -> StoreResult<()>;

    fn insert_org(&mut self, org: &Org) -> StoreResult<()>;
    fn update_org(&mut self, org: &Org) -> StoreResult<()>;
    fn get_org(&mut self, id: &str) -> StoreResult<Option<Org>>;
    /// Every org (root admins only list them all).
    fn list_orgs(&mut self) -> StoreResult<Vec<Org>>;
    /// The customer orgs a partner org manages.
    fn list_managed_orgs(&mut self, partner_org_id: &str) -> StoreResult<Vec<Org>>;
    /// Some org, if there is any (judges tokens whose key is unknown).
    fn any_org(&mut self) -> StoreResult<Option<Org>>;

    fn insert_key(&mut self, key: &SigningKey) -> StoreResult<()>;
    fn update_key(&mut self, key: &SigningKey) -> StoreResult<()>;
    fn get_key(&mut self, kid: &str) -> StoreResult<Option<SigningKey>>;
    /// All keys of the org, newest first.
    fn list_keys(&mut self, org_id: &str) -> StoreResult<Vec<SigningKey>>;

    fn insert_user(&mut self, user: &User) -> StoreResult<()>;
    fn update_user(&mut self, user: &User) -> StoreResult<()>;
    fn get_user(&mut self, id: &str) -> StoreResult<Option<User>>;
    fn find_user(&mut self, org_id: &str, username: &str) -> StoreResult<Option<User>>;
    fn list_users(&mut self, org_id: &str) -> StoreResult<Vec<User>>;
    /// Whether the user has a way in besides a password: a token that was handed out
    /// (downloaded or printed) and is not revoked or deleted, or a single sign-on identity.
    fn holds_credential(&mut self, user_id: &str) -> StoreResult<bool>;

    fn insert_token(&mut self, token: &Token) -> StoreResult<()>;
    fn update_token(&mut self, token: &Token) -> StoreResult<()>;
    fn get_token(&mut self, id: &str) -> StoreResult<Option<Token>>;
    /// Sets only a token's last use (every allowed use reports one; rewriting the whole
    /// row for it would also move its index entries).
    fn set_last_used(&mut self, id: &str, at: i64, ip: Option<&str>) -> StoreResult<()>;
    /// A page of matching live tokens with their owners' usernames.
    fn search_tokens(&mut self, query: &TokenQuery) -> StoreResult<TokenHits>;
    /// The live tokens of the scope that are not revoked.
    fn live_unrevoked_tokens(&mut self, scope: &TokenScope) -> StoreResult<Vec<Token>>;

    /// Sets one status-list entry, remembering the list `version` it was changed at.
    fn set_status(
        &mut self,
        org_id: &str,
        idx: i64,
        value: u8,
        token_id: &str,
        version: i64,
    ) -> StoreResult<()>;
    /// The entries that are not valid (0), for building a whole list.
    fn status_entries(&mut self, org_id: &str) -> StoreResult<Vec<(i64, u8)>>;
    /// The entries changed after list version `version`.
    fn status_changes_since(&mut self, org_id: &str, version: i64) -> StoreResult<Vec<(i64, u8)>>;

    fn insert_auth_event(&mut self, event: &AuthEvent) -> StoreResult<()>;
    /// Many events at once (PostgreSQL: multi-row INSERTs). Their `id`s are ignored.
    fn insert_auth_events(&mut self, events: &[AuthEvent]) -> StoreResult<()> {
        for e in events {
            self.insert_auth_event(e)?;
        }
        Ok(())
    }
    /// Deletes at most `limit` events older than `cutoff` (retention); returns how many.
    fn delete_auth_events_before(&mut self, cutoff: i64, limit: u64) -> StoreResult<u64>;
    fn list_auth_events(&mut self, query: &AuthEventQuery) -> StoreResult<Vec<AuthEvent>>;
    /// How many events the query matches, ignoring its limit and offset.
    fn count_auth_events(&mut self, query: &AuthEventQuery) -> StoreResult<i64>;
    /// Events matching `query` counted per `bucket_secs`-long slice of time and outcome:
    /// `(slice start, outcome, count)`, oldest first (`limit`/`offset` unused).
    fn auth_event_buckets(
        &mut self,
        query: &AuthEventQuery,
        bucket_secs: i64,
    ) -> StoreResult<Vec<(i64, String, i64)>>;
    /// The addresses of events matching `query`: `(ip, count, last at)`, most recent
    /// first, at most `query.limit`.
    fn auth_event_addresses(
        &mut self,
        query: &AuthEventQuery,
    ) -> StoreResult<Vec<(Option<String>, i64, i64)>>;
    /// How many audit entries `list_audit` pages through.
    fn count_audit(&mut self, org_id: &str, target: Option<&str>) -> StoreResult<i64>;

    fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()>;
    fn list_audit(
        &mut self,
        org_id: &str,
        target: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<AuditEntry>>;

    fn insert_edge(&mut self, edge: &EdgeCredential) -> StoreResult<()>;
    fn find_edge_by_secret_hash(&mut self, hash: &str) -> StoreResult<Option<EdgeCredential>>;

    /// Tells the other processes on this database, once this transaction commits, that a
    /// status list or key set changed (PostgreSQL: `NOTIFY` inside the transaction, so it
    /// is delivered only on commit). A single-process backend has no one to tell.
    fn announce_edges_changed(&mut self) -> StoreResult<()> {
        Ok(())
    }
}

/// A storage backend. The closure runs inside one transaction, committed only if it
/// returns `Ok` (a write commit is durable before this returns).
pub trait Store: Send + Sync {
    /// The schema version (the number of migrations applied).
    fn schema_version(&self) -> StoreResult<i64>;

    /// Runs `f` in one transaction: a write transaction when `write` (one at a time), a
    /// read snapshot otherwise. An `Err` from `f` rolls back and is returned as it is.
    fn transaction(
        &self,
        write: bool,
        f: &mut dyn FnMut(&mut dyn Tx) -> StoreResult<()>,
    ) -> StoreResult<()>;

    /// Calls `wake` whenever another process may have committed a change announced with
    /// [`Tx::announce_edges_changed`], and whenever such a change may have been missed
    /// (a lost connection). Returns at once; the watching runs in the background for the
    /// life of the store. A single-process backend never calls it.
    fn watch_remote_changes(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = wake;
    }

    /// Whether the database answers now (readiness): a trivial read. PostgreSQL answers
    /// at once while it is known to be down, and waits for a connection only briefly.
    fn ready(&self) -> StoreResult<()> {
        self.transaction(false, &mut |tx| tx.get_setting("base_url").map(|_| ()))
    }

    /// Removes the authentication-log events older than `keep_days` days before `now`
    /// (Unix seconds) and prepares for the days ahead (PostgreSQL: drops whole daily
    /// partitions, creates the next days' ones). Returns how many events were removed.
    fn prune_auth_log(&self, now: i64, keep_days: i64) -> StoreResult<u64>;
}

impl dyn Store + '_ {
    /// [`run`] in a write transaction.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        run(self, true, f)
    }

    /// [`run`] in a read transaction.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        run(self, false, f)
    }
}
