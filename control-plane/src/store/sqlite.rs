//! The SQLite backend: WAL journal, `synchronous=FULL` (a committed write survives a kill
//! or power loss), migrations tracked in `PRAGMA user_version`.

use super::{AuthEventQuery, Store, TokenQuery, TokenScope, TokenSort, Tx};
use crate::error::{ApiError, ApiResult};
use crate::model::{
    AuditEntry, AuthEvent, EdgeCredential, KeyAlg, Org, Role, SigningKey, Token, User,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;

/// Schema versions, applied in order; version N is `MIGRATIONS[N - 1]`. Never edit a
/// released entry: append a new one.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    partner_org_id TEXT REFERENCES orgs(id),
    is_partner INTEGER NOT NULL,
    is_root INTEGER NOT NULL,
    max_lifetime_days INTEGER NOT NULL,
    audience TEXT NOT NULL,
    key_alg TEXT NOT NULL,
    status_version INTEGER NOT NULL,
    next_status_idx INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    alg TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    private_enc BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER,
    last_exp INTEGER NOT NULL
);
CREATE INDEX signing_keys_org ON signing_keys(org_id);
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    delegated INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (org_id, username)
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    lifetime_days INTEGER,
    not_before INTEGER,
    expires_at INTEGER NOT NULL,
    ip_allow TEXT NOT NULL,
    scopes TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    revoked_at INTEGER,
    deleted_at INTEGER,
    minted_at INTEGER,
    jwt_sha256 TEXT,
    status_idx INTEGER,
    kid TEXT,
    last_used_at INTEGER,
    last_used_ip TEXT
);
CREATE UNIQUE INDEX tokens_user_name ON tokens(user_id, name) WHERE deleted_at IS NULL;
CREATE INDEX tokens_org ON tokens(org_id, created_at);
CREATE TABLE status_entries (
    org_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    value INTEGER NOT NULL,
    token_id TEXT NOT NULL,
    PRIMARY KEY (org_id, idx)
) WITHOUT ROWID;
CREATE TABLE auth_events (
    id INTEGER PRIMARY KEY,
    org_id TEXT NOT NULL,
    token_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    ip TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    method TEXT,
    path TEXT,
    source TEXT NOT NULL
);
CREATE INDEX auth_events_token ON auth_events(token_id, at);
CREATE INDEX auth_events_org ON auth_events(org_id, at);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    org_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_org ON audit_log(org_id, at);
CREATE TABLE edge_credentials (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
"#];

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

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> ApiResult<Self> {
        Self::init(Connection::open(path)?)
    }

    pub fn open_in_memory() -> ApiResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> ApiResult<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // journal_mode answers with a row, so it is queried rather than executed.
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> ApiResult<i64> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| ApiError::internal("store lock poisoned"))?;
        Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}

pub fn latest_schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

fn migrate(conn: &mut Connection) -> ApiResult<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > MIGRATIONS.len() as i64 {
        return Err(ApiError::internal(format!(
            "database schema version {current} is newer than this binary ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn transaction(
        &self,
        write: bool,
        f: &mut dyn FnMut(&mut dyn Tx) -> ApiResult<()>,
    ) -> ApiResult<()> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| ApiError::internal("store lock poisoned"))?;
        let behavior = if write {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = conn.transaction_with_behavior(behavior)?;
        let mut stx = SqliteTx { tx };
        f(&mut stx)?;
        stx.tx.commit()?;
        Ok(())
    }
}

struct SqliteTx<'a> {
    tx: rusqlite::Transaction<'a>,
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

fn like_pattern(q: &str) -> String {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

impl Tx for SqliteTx<'_> {
    fn get_setting(&mut self, key: &str) -> ApiResult<Option<String>> {
        Ok(self
            .tx
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_setting(&mut self, key: &str, value: &str) -> ApiResult<()> {
        self.tx.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    fn insert_org(&mut self, o: &Org) -> ApiResult<()> {
        self.tx.execute(
            &format!("INSERT INTO orgs ({ORG_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                o.id, o.name, o.partner_org_id, o.is_partner, o.is_root, o.max_lifetime_days, o.audience,
                o.key_alg.as_str(), o.status_version, o.next_status_idx, o.created_at
            ],
        )?;
        Ok(())
    }

    fn update_org(&mut self, o: &Org) -> ApiResult<()> {
        self.tx.execute(
            "UPDATE orgs SET name = ?2, partner_org_id = ?3, is_partner = ?4, is_root = ?5, max_lifetime_days = ?6, \
             audience = ?7, key_alg = ?8, status_version = ?9, next_status_idx = ?10 WHERE id = ?1",
            params![
                o.id, o.name, o.partner_org_id, o.is_partner, o.is_root, o.max_lifetime_days, o.audience,
                o.key_alg.as_str(), o.status_version, o.next_status_idx
            ],
        )?;
        Ok(())
    }

    fn get_org(&mut self, id: &str) -> ApiResult<Option<Org>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {ORG_COLS} FROM orgs WHERE id = ?1"),
                [id],
                org_from_row,
            )
            .optional()?)
    }

    fn list_orgs(&mut self) -> ApiResult<Vec<Org>> {
        let mut st = self
            .tx
            .prepare(&format!("SELECT {ORG_COLS} FROM orgs ORDER BY id"))?;
        let rows = st
            .query_map([], org_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_key(&mut self, k: &SigningKey) -> ApiResult<()> {
        self.tx.execute(
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

    fn update_key(&mut self, k: &SigningKey) -> ApiResult<()> {
        self.tx.execute(
            "UPDATE signing_keys SET retired_at = ?2, last_exp = ?3 WHERE kid = ?1",
            params![k.kid, k.retired_at, k.last_exp],
        )?;
        Ok(())
    }

    fn get_key(&mut self, kid: &str) -> ApiResult<Option<SigningKey>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {KEY_COLS} FROM signing_keys WHERE kid = ?1"),
                [kid],
                key_from_row,
            )
            .optional()?)
    }

    fn list_keys(&mut self, org_id: &str) -> ApiResult<Vec<SigningKey>> {
        let mut st = self.tx.prepare(&format!(
            "SELECT {KEY_COLS} FROM signing_keys WHERE org_id = ?1 ORDER BY created_at DESC, rowid DESC"
        ))?;
        let rows = st
            .query_map([org_id], key_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_user(&mut self, u: &User) -> ApiResult<()> {
        self.tx.execute(
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

    fn update_user(&mut self, u: &User) -> ApiResult<()> {
        self.tx.execute(
            "UPDATE users SET display_name = ?2, role = ?3, delegated = ?4 WHERE id = ?1",
            params![u.id, u.display_name, u.role.as_str(), u.delegated],
        )?;
        Ok(())
    }

    fn get_user(&mut self, id: &str) -> ApiResult<Option<User>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )
            .optional()?)
    }

    fn find_user(&mut self, org_id: &str, username: &str) -> ApiResult<Option<User>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE org_id = ?1 AND username = ?2"),
                [org_id, username],
                user_from_row,
            )
            .optional()?)
    }

    fn list_users(&mut self, org_id: &str) -> ApiResult<Vec<User>> {
        let mut st = self.tx.prepare(&format!(
            "SELECT {USER_COLS} FROM users WHERE org_id = ?1 ORDER BY username"
        ))?;
        let rows = st
            .query_map([org_id], user_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_token(&mut self, t: &Token) -> ApiResult<()> {
        self.tx.execute(
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

    fn update_token(&mut self, t: &Token) -> ApiResult<()> {
        self.tx.execute(
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

    fn get_token(&mut self, id: &str) -> ApiResult<Option<Token>> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {TOKEN_COLS} FROM tokens t WHERE t.id = ?1"),
                [id],
                token_from_row,
            )
            .optional()?)
    }

    fn search_tokens(&mut self, q: &TokenQuery) -> ApiResult<(Vec<Token>, i64)> {
        let mut wh = vec!["t.deleted_at IS NULL".to_string()];
        let mut args: Vec<(&str, SqlValue)> = vec![(":now", SqlValue::Integer(q.now))];
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
            wh.push(
                "(lower(t.name) LIKE :q ESCAPE '\\' OR lower(t.description) LIKE :q ESCAPE '\\' \
                 OR lower(u.username) LIKE :q ESCAPE '\\' OR lower(u.display_name) LIKE :q ESCAPE '\\')"
                    .into(),
            );
            args.push((":q", SqlValue::Text(like_pattern(text))));
        }
        if let Some(status) = q.status {
            wh.push(format!("({STATUS_SQL}) = :status"));
            args.push((":status", SqlValue::Text(status.as_str().into())));
        }
        if let Some(user) = &q.user {
            wh.push("(t.user_id = :user OR u.username = :user)".into());
            args.push((":user", SqlValue::Text(user.clone())));
        }
        if let Some(before) = q.expires_before {
            wh.push("t.expires_at < :expires_before".into());
            args.push((":expires_before", SqlValue::Integer(before)));
        }
        let order = match q.sort {
            TokenSort::Name => "lower(t.name)".to_string(),
            TokenSort::CreatedAt => "t.created_at".into(),
            TokenSort::ExpiresAt => "t.expires_at".into(),
            TokenSort::LastUsedAt => "t.last_used_at".into(),
            TokenSort::User => "u.username".into(),
            TokenSort::Status => format!("({STATUS_SQL})"),
        };
        let dir = if q.descending { "DESC" } else { "ASC" };
        let from = "FROM tokens t JOIN users u ON u.id = t.user_id";
        let where_sql = wh.join(" AND ");
        // Count first: it needs only the named parameters actually used in WHERE.
        let count_sql = format!("SELECT count(*) {from} WHERE {where_sql}");
        let bind = |sql: &str| -> Vec<(&str, &dyn rusqlite::ToSql)> {
            args.iter()
                .filter(|(n, _)| sql.contains(n))
                .map(|(n, v)| (*n, v as &dyn rusqlite::ToSql))
                .collect()
        };
        let total: i64 = self
            .tx
            .query_row(&count_sql, bind(&count_sql).as_slice(), |r| r.get(0))?;
        let sql = format!(
            "SELECT {TOKEN_COLS} {from} WHERE {where_sql} ORDER BY {order} {dir}, t.id {dir} LIMIT {} OFFSET {}",
            q.limit, q.offset
        );
        let mut st = self.tx.prepare(&sql)?;
        let rows = st
            .query_map(bind(&sql).as_slice(), token_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }

    fn set_status(&mut self, org_id: &str, idx: i64, value: u8, token_id: &str) -> ApiResult<()> {
        self.tx.execute(
            "INSERT INTO status_entries (org_id, idx, value, token_id) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(org_id, idx) DO UPDATE SET value = excluded.value",
            params![org_id, idx, value, token_id],
        )?;
        Ok(())
    }

    fn status_entries(&mut self, org_id: &str) -> ApiResult<Vec<(i64, u8)>> {
        let mut st = self
            .tx
            .prepare("SELECT idx, value FROM status_entries WHERE org_id = ?1 AND value != 0")?;
        let rows = st
            .query_map([org_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_auth_event(&mut self, e: &AuthEvent) -> ApiResult<()> {
        self.tx.execute(
            "INSERT INTO auth_events (org_id, token_id, user_id, at, ip, outcome, reason, method, path, source) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![e.org_id, e.token_id, e.user_id, e.at, e.ip, e.outcome, e.reason, e.method, e.path, e.source],
        )?;
        Ok(())
    }

    fn list_auth_events(&mut self, q: &AuthEventQuery) -> ApiResult<Vec<AuthEvent>> {
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
        let sql = format!(
            "SELECT id, org_id, token_id, user_id, at, ip, outcome, reason, method, path, source FROM auth_events \
             WHERE {} ORDER BY at DESC, id DESC LIMIT {} OFFSET {}",
            wh.join(" AND "),
            q.limit,
            q.offset
        );
        let mut st = self.tx.prepare(&sql)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), auth_event_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_audit(&mut self, a: &AuditEntry) -> ApiResult<()> {
        self.tx.execute(
            "INSERT INTO audit_log (at, org_id, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![a.at, a.org_id, a.actor, a.action, a.target, a.detail.to_string()],
        )?;
        Ok(())
    }

    fn list_audit(
        &mut self,
        org_id: &str,
        target: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> ApiResult<Vec<AuditEntry>> {
        let mut st = self.tx.prepare(
            "SELECT id, at, org_id, actor, action, target, detail FROM audit_log \
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
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_edge(&mut self, e: &EdgeCredential) -> ApiResult<()> {
        self.tx.execute(
            "INSERT INTO edge_credentials (id, org_id, name, secret_sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.id, e.org_id, e.name, e.secret_sha256, e.created_at],
        )?;
        Ok(())
    }

    fn find_edge_by_secret_hash(&mut self, hash: &str) -> ApiResult<Option<EdgeCredential>> {
        Ok(self
            .tx
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
        let conn = s.conn.lock().unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    #[test]
    fn failed_transaction_leaves_nothing() {
        let s: Box<dyn Store> = Box::new(SqliteStore::open_in_memory().unwrap());
        let r: ApiResult<()> = s.write(|tx| {
            tx.set_setting("a", "1")?;
            Err(ApiError::bad_request("no"))
        });
        assert!(r.is_err());
        assert_eq!(s.read(|tx| tx.get_setting("a")).unwrap(), None);
    }
}
