//! The SQL both backends run, written once: column lists, row mappers, the token search's
//! filters and sort keys, the derived token status, the paging-cursor codec, and `Tx`
//! itself, over a small connection abstraction ([`Conn`]) with a [`Dialect`].
//!
//! A backend supplies only what really differs ([`Engine`]): how a statement is sent
//! (SQLite's prepared-statement cache and named rows, PostgreSQL's prepared statements and
//! NUL refusal), the text search (FTS5 trigrams against `pg_trgm`), and NOTIFY.
//! Invariant: SQL text lives in one place per statement; a backend file holds no query
//! that the other backend also runs.

use super::{
    AuthEventQuery, StoreError, StoreResult, TokenHit, TokenHits, TokenQuery, TokenScope,
    TokenSort, Tx,
};
use crate::model::{
    AuditEntry, AuthEvent, EdgeCredential, KeyAlg, Org, Role, SigningKey, Token, User,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// `?n` placeholders for `n` parameters (1-based): `?1, ?2, …`.
pub(crate) fn placeholders(n: usize) -> String {
    placeholders_from(1, n)
}

/// `count` placeholders from `?first`, comma-separated.
pub(crate) fn placeholders_from(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("?{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What differs in the SQL text of the two engines, beyond placeholders: the shared SQL
/// numbers its parameters `?1, ?2, …`, which SQLite reads as they are and the PostgreSQL
/// connection rewrites to `$1, $2, …` once per prepared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// ` FOR UPDATE` on a row read inside a PostgreSQL write (SQLite has one writer, whose
    /// transaction already excludes the others).
    fn for_update(self, write: bool) -> &'static str {
        match (self, write) {
            (Dialect::Postgres, true) => " FOR UPDATE",
            _ => "",
        }
    }

    /// Text compared bytewise (SQLite's BINARY is already).
    fn bytewise(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " COLLATE \"C\"",
        }
    }

    /// The column that breaks ties in insertion order (SQLite's rowid).
    fn insertion_order(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "seq",
        }
    }

    /// Whether tokens and users carry lower-cased copies for the text search
    /// (PostgreSQL's trigram indexes; SQLite's FTS table is kept by triggers).
    fn lowercase_copies(self) -> bool {
        self == Dialect::Postgres
    }
}

/// One statement parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u8> for Value {
    fn from(v: u8) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Self {
        v.as_deref().into()
    }
}

/// `[a, b, …]` as statement parameters.
macro_rules! values {
    ($($v:expr),* $(,)?) => { [$(Value::from($v)),*] };
}

mod accounts;
mod limits;
mod notifications;
mod rotations;
mod scim;
mod scopes;
mod sso;
mod webhooks;

/// A statement's parameters, collected while its text is built.
pub(crate) struct Args {
    dialect: Dialect,
    pub(crate) values: Vec<Value>,
}

impl Args {
    pub(crate) fn new(dialect: Dialect) -> Args {
        Args {
            dialect,
            values: Vec::new(),
        }
    }

    /// Adds a value; returns its placeholder.
    pub(crate) fn add(&mut self, v: impl Into<Value>) -> String {
        self.values.push(v.into());
        format!("?{}", self.values.len())
    }
}

/// One result row, read by column index (`rusqlite::Row`, `postgres::Row`). A NULL is
/// `None`; a value of another type is [`StoreError::Corrupt`].
pub(crate) trait SqlRow {
    fn int(&self, i: usize) -> StoreResult<Option<i64>>;
    fn text(&self, i: usize) -> StoreResult<Option<String>>;
    fn boolean(&self, i: usize) -> StoreResult<Option<bool>>;
    fn bytes(&self, i: usize) -> StoreResult<Option<Vec<u8>>>;
}

/// A type a column is read as.
pub(crate) trait Col: Sized {
    fn read(r: &dyn SqlRow, i: usize) -> StoreResult<Option<Self>>;
}

impl Col for i64 {
    fn read(r: &dyn SqlRow, i: usize) -> StoreResult<Option<Self>> {
        r.int(i)
    }
}
impl Col for String {
    fn read(r: &dyn SqlRow, i: usize) -> StoreResult<Option<Self>> {
        r.text(i)
    }
}
impl Col for bool {
    fn read(r: &dyn SqlRow, i: usize) -> StoreResult<Option<Self>> {
        r.boolean(i)
    }
}
impl Col for Vec<u8> {
    fn read(r: &dyn SqlRow, i: usize) -> StoreResult<Option<Self>> {
        r.bytes(i)
    }
}

/// What a column may be read into: a [`Col`], or an `Option` of one for a nullable column.
pub(crate) trait FromCol: Sized {
    fn from_col(r: &dyn SqlRow, i: usize) -> StoreResult<Self>;
}

impl<T: Col> FromCol for T {
    fn from_col(r: &dyn SqlRow, i: usize) -> StoreResult<Self> {
        T::read(r, i)?.ok_or_else(|| corrupt(&format!("{i} (NULL)")))
    }
}
impl<T: Col> FromCol for Option<T> {
    fn from_col(r: &dyn SqlRow, i: usize) -> StoreResult<Self> {
        T::read(r, i)
    }
}

/// Reads column `i`.
pub(crate) fn get<T: FromCol>(r: &dyn SqlRow, i: usize) -> StoreResult<T> {
    T::from_col(r, i)
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("column {what}"))
}

/// One transaction's connection: sends statements, hands back rows.
pub(crate) trait Conn {
    fn dialect(&self) -> Dialect;
    /// Whether this is a write transaction.
    fn writing(&self) -> bool;
    /// ` FOR UPDATE` where a row read in this transaction must stay locked until commit.
    fn lock(&self) -> &'static str {
        self.dialect().for_update(self.writing())
    }
    /// Runs a statement (kept prepared); returns the rows it changed.
    fn exec(&mut self, sql: &str, args: &[Value]) -> StoreResult<u64>;
    /// Runs a statement whose text varies (not kept prepared).
    fn exec_once(&mut self, sql: &str, args: &[Value]) -> StoreResult<u64>;
    /// Runs a query and hands each row to `f`.
    fn each(
        &mut self,
        sql: &str,
        args: &[Value],
        f: &mut dyn FnMut(&dyn SqlRow) -> StoreResult<()>,
    ) -> StoreResult<()>;
}

/// Every row of a query, mapped.
pub(crate) fn all<C: Conn + ?Sized, T>(
    c: &mut C,
    sql: &str,
    args: &[Value],
    f: impl Fn(&dyn SqlRow) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut out = Vec::new();
    c.each(sql, args, &mut |r| {
        out.push(f(r)?);
        Ok(())
    })?;
    Ok(out)
}

/// The first row of a query, mapped.
pub(crate) fn one<C: Conn + ?Sized, T>(
    c: &mut C,
    sql: &str,
    args: &[Value],
    f: impl Fn(&dyn SqlRow) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut out = None;
    c.each(sql, args, &mut |r| {
        if out.is_none() {
            out = Some(f(r)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The text condition of a token search, as an engine makes it (see [`Engine`]).
#[derive(Default)]
pub(crate) struct TextCondition {
    /// A condition for the WHERE clause.
    pub(crate) where_sql: Option<String>,
    /// A FROM clause driven from the text index (few matches), instead of the default.
    pub(crate) from: Option<String>,
    /// Whether the condition reads the owner's row (`u`).
    pub(crate) needs_owner: bool,
}

/// What an engine adds to [`Conn`]: the rest of `Tx` is written once, below.
pub(crate) trait Engine: Conn {
    /// The condition of a search's text (`TokenQuery::q`), its arguments added to `args`.
    fn text_condition(&mut self, text: &str, args: &mut Args) -> StoreResult<TextCondition>;

    /// See [`Tx::announce_edges_changed`].
    fn announce(&mut self) -> StoreResult<()> {
        Ok(())
    }
}

// ---- Columns and row mappers -------------------------------------------------------

pub(crate) const ORG_COLS: &str = "id, name, partner_org_id, is_partner, is_root, max_lifetime_days, audience, key_alg, status_version, next_status_idx, created_at, owners_manage_tokens";
pub(crate) const KEY_COLS: &str =
    "kid, org_id, alg, public_jwk, private_enc, created_at, retired_at, last_exp";
pub(crate) const USER_COLS: &str =
    "id, org_id, username, display_name, role, delegated, created_at";
pub(crate) const TOKEN_COLS: &str =
    "t.id, t.org_id, t.user_id, t.name, t.description, t.created_by, t.created_at, \
     t.lifetime_days, t.not_before, t.expires_at, t.ip_allow, t.scopes, t.enabled, t.revoked_at, \
     t.deleted_at, t.minted_at, t.jwt_sha256, t.status_idx, t.kid, t.last_used_at, t.last_used_ip";
/// The columns written on insert (`t.` free, in [`TOKEN_COLS`]' order).
const TOKEN_INSERT_COLS: &str =
    "id, org_id, user_id, name, description, created_by, created_at, lifetime_days, \
     not_before, expires_at, ip_allow, scopes, enabled, revoked_at, deleted_at, minted_at, \
     jwt_sha256, status_idx, kid, last_used_at, last_used_ip";
pub(crate) const AUTH_EVENT_COLS: &str =
    "org_id, token_id, user_id, at, ip, outcome, reason, method, path, source";
const AUDIT_COLS: &str = "id, at, org_id, actor, action, target, detail, credential";
const EDGE_COLS: &str = "id, org_id, name, secret_sha256, created_at";

pub(crate) fn org_from_row(r: &dyn SqlRow) -> StoreResult<Org> {
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
        owners_manage_tokens: get(r, 11)?,
    })
}

pub(crate) fn key_from_row(r: &dyn SqlRow) -> StoreResult<SigningKey> {
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

pub(crate) fn user_from_row(r: &dyn SqlRow) -> StoreResult<User> {
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

pub(crate) fn token_from_row(r: &dyn SqlRow) -> StoreResult<Token> {
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

/// An event read as `id, {AUTH_EVENT_COLS}`.
pub(crate) fn auth_event_from_row(r: &dyn SqlRow) -> StoreResult<AuthEvent> {
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

fn audit_from_row(r: &dyn SqlRow) -> StoreResult<AuditEntry> {
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
}

pub(crate) fn edge_from_row(r: &dyn SqlRow) -> StoreResult<EdgeCredential> {
    Ok(EdgeCredential {
        id: get(r, 0)?,
        org_id: get(r, 1)?,
        name: get(r, 2)?,
        secret_sha256: get(r, 3)?,
        created_at: get(r, 4)?,
    })
}

fn status_from_row(r: &dyn SqlRow) -> StoreResult<(i64, u8)> {
    let v: i64 = get(r, 1)?;
    Ok((
        get(r, 0)?,
        u8::try_from(v).map_err(|_| corrupt("status_entries.value"))?,
    ))
}

/// A token's IP filter as stored (a JSON array).
fn ip_allow_text(t: &Token) -> String {
    serde_json::Value::from(t.ip_allow.clone()).to_string()
}

/// The searchable owner text of a user, lower-cased as the search folds case.
fn owner_lc(u: &User) -> String {
    format!("{} {}", u.username, u.display_name).to_lowercase()
}

// ---- The token search ----------------------------------------------------------------

/// The derived token status in SQL, at time `now` (a placeholder); must agree with
/// `Token::status` (tested on both backends). Compared and sorted bytewise.
pub(crate) fn status_sql(d: Dialect, now: &str) -> String {
    format!(
        "(CASE WHEN t.revoked_at IS NOT NULL OR t.deleted_at IS NOT NULL THEN 'revoked' \
         WHEN t.expires_at <= {now} THEN 'expired' \
         WHEN NOT t.enabled THEN 'disabled' \
         WHEN t.jwt_sha256 IS NULL THEN 'pending' \
         ELSE 'enabled' END){}",
        d.bytewise()
    )
}

/// The SQL a sort orders by (also the keyset key), and whether that key is text.
/// `last_used_at` is never NULL in it, so that keyset comparisons work.
fn sort_key_sql(sort: TokenSort, args: &mut Args, now: i64) -> (String, bool) {
    match sort {
        TokenSort::Name => ("lower(t.name)".into(), true),
        TokenSort::CreatedAt => ("t.created_at".into(), false),
        TokenSort::ExpiresAt => ("t.expires_at".into(), false),
        TokenSort::LastUsedAt => ("coalesce(t.last_used_at, -1)".into(), false),
        TokenSort::User => ("u.username".into(), true),
        TokenSort::Status => {
            let now = args.add(now);
            (status_sql(args.dialect, &now), true)
        }
    }
}

/// `%text%` for `LIKE … ESCAPE '\'`, lower-cased.
pub(crate) fn like_pattern(q: &str) -> String {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The scope's condition; whether it reads the owner's row.
fn scope_filter(scope: &TokenScope, args: &mut Args, wh: &mut Vec<String>) -> bool {
    match scope {
        TokenScope::Org(org) => {
            wh.push(format!("t.org_id = {}", args.add(org)));
            false
        }
        TokenScope::User(user) => {
            wh.push(format!("t.user_id = {}", args.add(user)));
            false
        }
        TokenScope::Partner {
            user_id,
            partner_org_id,
        } => {
            let u = args.add(user_id);
            let o = args.add(partner_org_id);
            wh.push(format!(
                "(t.user_id = {u} OR (u.delegated = TRUE AND t.org_id IN \
                 (SELECT id FROM orgs WHERE partner_org_id = {o})))"
            ));
            true
        }
    }
}

/// The filters after the text: statuses, owner, expiry.
fn field_filters(q: &TokenQuery, args: &mut Args, wh: &mut Vec<String>) {
    if !q.statuses.is_empty() {
        let names: Vec<String> = q.statuses.iter().map(|s| args.add(s.as_str())).collect();
        let now = args.add(q.now);
        wh.push(format!(
            "{} IN ({})",
            status_sql(args.dialect, &now),
            names.join(", ")
        ));
    }
    if let Some(user) = &q.user {
        let u = args.add(user);
        wh.push(format!(
            "t.user_id IN (SELECT id FROM users WHERE id = {u} OR username = {u})"
        ));
    }
    if let Some(org) = &q.org {
        wh.push(format!("t.org_id = {}", args.add(org)));
    }
    if let Some(before) = q.expires_before {
        wh.push(format!("t.expires_at < {}", args.add(before)));
    }
    if let Some(after) = q.expires_after {
        wh.push(format!("t.expires_at >= {}", args.add(after)));
    }
}

/// A keyset cursor's sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CursorKey {
    Int(i64),
    Text(String),
}

/// A keyset cursor: the row's sort key and id, as base64url of JSON (opaque to clients).
pub(crate) fn encode_cursor(key: &CursorKey, id: &str) -> String {
    let k = match key {
        CursorKey::Int(n) => serde_json::json!(n),
        CursorKey::Text(t) => serde_json::json!(t),
    };
    URL_SAFE_NO_PAD.encode(serde_json::json!([k, id]).to_string())
}

/// The sort key and id of a cursor. Anything but `[key, id]` with a key of the sort's
/// type (text or a whole number) is not a cursor of this listing: [`StoreError::BadCursor`]
/// (the API answers 400 naming `after`).
pub(crate) fn decode_cursor(cursor: &str, text_key: bool) -> StoreResult<(CursorKey, String)> {
    let bad = || StoreError::BadCursor;
    let json = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|_| bad())?;
    let [key, id] = v.as_array().map(Vec::as_slice).ok_or_else(bad)? else {
        return Err(bad());
    };
    let key = match (key, text_key) {
        (serde_json::Value::String(t), true) => CursorKey::Text(t.clone()),
        (serde_json::Value::Number(n), false) => CursorKey::Int(n.as_i64().ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    let id = id.as_str().ok_or_else(bad)?;
    Ok((key, id.to_string()))
}

/// The WHERE clause and arguments of an authentication-log query.
fn auth_event_filter(q: &AuthEventQuery, args: &mut Args) -> String {
    let mut wh = vec!["1 = 1".to_string()];
    let mut add = |col: &str, v: Value| {
        let p = args.add(v);
        wh.push(format!("{col} {p}"));
    };
    if let Some(v) = &q.org_id {
        add("org_id =", v.into());
    }
    if let Some(v) = &q.token_id {
        add("token_id =", v.into());
    }
    if let Some(v) = &q.user_id {
        add("user_id =", v.into());
    }
    if let Some(v) = &q.outcome {
        add("outcome =", v.into());
    }
    if let Some(v) = q.since {
        add("at >=", v.into());
    }
    if let Some(v) = q.until {
        add("at <", v.into());
    }
    wh.join(" AND ")
}

/// The audit log's condition: the org, and the target when given.
fn audit_filter(target: Option<&str>) -> &'static str {
    match target {
        Some(_) => "org_id = ?1 AND target = ?2",
        None => "org_id = ?1",
    }
}

fn audit_args(org_id: &str, target: Option<&str>) -> Vec<Value> {
    let mut v = vec![Value::from(org_id)];
    v.extend(target.map(Value::from));
    v
}

/// Rows per multi-row INSERT of authentication events (10 parameters each; PostgreSQL
/// allows 65535 per statement, SQLite 32766).
const EVENTS_PER_INSERT: usize = 1000;

// ---- Tx, written once -----------------------------------------------------------------

impl<E: Engine> Tx for E {
    fn get_setting(&mut self, key: &str) -> StoreResult<Option<String>> {
        let sql = format!("SELECT value FROM settings WHERE key = ?1{}", self.lock());
        one(self, &sql, &values![key], |r| get(r, 0))
    }

    fn set_setting(&mut self, key: &str, value: &str) -> StoreResult<()> {
        self.exec(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &values![key, value],
        )?;
        Ok(())
    }

    fn insert_org(&mut self, o: &Org) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO orgs ({ORG_COLS}) VALUES ({})",
            placeholders(12)
        );
        #[rustfmt::skip]
        let v = values![
            &o.id, &o.name, &o.partner_org_id, o.is_partner, o.is_root, o.max_lifetime_days,
            &o.audience, o.key_alg.as_str(), o.status_version, o.next_status_idx, o.created_at,
            o.owners_manage_tokens,
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn update_org(&mut self, o: &Org) -> StoreResult<()> {
        #[rustfmt::skip]
        let v = values![
            &o.id, &o.name, &o.partner_org_id, o.is_partner, o.is_root, o.max_lifetime_days,
            &o.audience, o.key_alg.as_str(), o.status_version, o.next_status_idx,
            o.owners_manage_tokens,
        ];
        self.exec(
            "UPDATE orgs SET name = ?2, partner_org_id = ?3, is_partner = ?4, is_root = ?5, \
             max_lifetime_days = ?6, audience = ?7, key_alg = ?8, status_version = ?9, \
             next_status_idx = ?10, owners_manage_tokens = ?11 WHERE id = ?1",
            &v,
        )?;
        Ok(())
    }

    fn get_org(&mut self, id: &str) -> StoreResult<Option<Org>> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE id = ?1{}", self.lock());
        one(self, &sql, &values![id], org_from_row)
    }

    fn list_orgs(&mut self) -> StoreResult<Vec<Org>> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs ORDER BY id");
        all(self, &sql, &[], org_from_row)
    }

    fn list_managed_orgs(&mut self, partner_org_id: &str) -> StoreResult<Vec<Org>> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs WHERE partner_org_id = ?1 ORDER BY id");
        all(self, &sql, &values![partner_org_id], org_from_row)
    }

    fn any_org(&mut self) -> StoreResult<Option<Org>> {
        let sql = format!("SELECT {ORG_COLS} FROM orgs ORDER BY is_root DESC, id LIMIT 1");
        one(self, &sql, &[], org_from_row)
    }

    fn insert_key(&mut self, k: &SigningKey) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO signing_keys ({KEY_COLS}) VALUES ({})",
            placeholders(8)
        );
        #[rustfmt::skip]
        let v = values![
            &k.kid, &k.org_id, k.alg.as_str(), k.public_jwk.to_string(),
            k.private_enc.as_slice(), k.created_at, k.retired_at, k.last_exp,
        ];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn update_key(&mut self, k: &SigningKey) -> StoreResult<()> {
        self.exec(
            "UPDATE signing_keys SET retired_at = ?2, last_exp = ?3 WHERE kid = ?1",
            &values![&k.kid, k.retired_at, k.last_exp],
        )?;
        Ok(())
    }

    fn get_key(&mut self, kid: &str) -> StoreResult<Option<SigningKey>> {
        let sql = format!(
            "SELECT {KEY_COLS} FROM signing_keys WHERE kid = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![kid], key_from_row)
    }

    fn list_keys(&mut self, org_id: &str) -> StoreResult<Vec<SigningKey>> {
        let sql = format!(
            "SELECT {KEY_COLS} FROM signing_keys WHERE org_id = ?1 \
             ORDER BY created_at DESC, {} DESC",
            self.dialect().insertion_order()
        );
        all(self, &sql, &values![org_id], key_from_row)
    }

    fn insert_user(&mut self, u: &User) -> StoreResult<()> {
        #[rustfmt::skip]
        let mut v = values![
            &u.id, &u.org_id, &u.username, &u.display_name, u.role.as_str(), u.delegated,
            u.created_at,
        ]
        .to_vec();
        let mut cols = USER_COLS.to_string();
        if self.dialect().lowercase_copies() {
            cols.push_str(", owner_lc");
            v.push(owner_lc(u).into());
        }
        let sql = format!(
            "INSERT INTO users ({cols}) VALUES ({})",
            placeholders(v.len())
        );
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn update_user(&mut self, u: &User) -> StoreResult<()> {
        // The username never changes; the searchable owner text follows the display name.
        let mut v = values![&u.id, &u.display_name, u.role.as_str(), u.delegated].to_vec();
        let mut set = "display_name = ?2, role = ?3, delegated = ?4".to_string();
        if self.dialect().lowercase_copies() {
            set.push_str(", owner_lc = ?5");
            v.push(owner_lc(u).into());
        }
        self.exec(&format!("UPDATE users SET {set} WHERE id = ?1"), &v)?;
        Ok(())
    }

    fn get_user(&mut self, id: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?1{}", self.lock());
        one(self, &sql, &values![id], user_from_row)
    }

    fn find_user(&mut self, org_id: &str, username: &str) -> StoreResult<Option<User>> {
        let sql = format!(
            "SELECT {USER_COLS} FROM users WHERE org_id = ?1 AND username = ?2{}",
            self.lock()
        );
        one(self, &sql, &values![org_id, username], user_from_row)
    }

    fn list_users(&mut self, org_id: &str) -> StoreResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE org_id = ?1 ORDER BY username");
        all(self, &sql, &values![org_id], user_from_row)
    }

    fn holds_credential(&mut self, user_id: &str) -> StoreResult<bool> {
        let sql = "SELECT 1 FROM tokens WHERE user_id = ?1 AND minted_at IS NOT NULL \
                   AND revoked_at IS NULL AND deleted_at IS NULL \
                   UNION ALL SELECT 1 FROM sso_identities WHERE user_id = ?1 LIMIT 1";
        Ok(one(self, sql, &values![user_id], |r| get::<i64>(r, 0))?.is_some())
    }

    fn insert_token(&mut self, t: &Token) -> StoreResult<()> {
        #[rustfmt::skip]
        let mut v = values![
            &t.id, &t.org_id, &t.user_id, &t.name, &t.description, &t.created_by, t.created_at,
            t.lifetime_days, t.not_before, t.expires_at, ip_allow_text(t), t.scopes.join(" "),
            t.enabled, t.revoked_at, t.deleted_at, t.minted_at, &t.jwt_sha256, t.status_idx,
            &t.kid, t.last_used_at, &t.last_used_ip,
        ]
        .to_vec();
        let mut cols = TOKEN_INSERT_COLS.to_string();
        if self.dialect().lowercase_copies() {
            cols.push_str(", name_lc, description_lc");
            v.push(t.name.to_lowercase().into());
            v.push(t.description.to_lowercase().into());
        }
        let sql = format!(
            "INSERT INTO tokens ({cols}) VALUES ({})",
            placeholders(v.len())
        );
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn update_token(&mut self, t: &Token) -> StoreResult<()> {
        #[rustfmt::skip]
        let mut v = values![
            &t.id, &t.name, &t.description, t.lifetime_days, t.not_before, t.expires_at,
            ip_allow_text(t), t.scopes.join(" "), t.enabled, t.revoked_at, t.deleted_at,
            t.minted_at, &t.jwt_sha256, t.status_idx, &t.kid, t.last_used_at, &t.last_used_ip,
        ]
        .to_vec();
        let mut set = "name = ?2, description = ?3, lifetime_days = ?4, not_before = ?5, \
                       expires_at = ?6, ip_allow = ?7, scopes = ?8, enabled = ?9, \
                       revoked_at = ?10, deleted_at = ?11, minted_at = ?12, jwt_sha256 = ?13, \
                       status_idx = ?14, kid = ?15, last_used_at = ?16, last_used_ip = ?17"
            .to_string();
        if self.dialect().lowercase_copies() {
            set.push_str(", name_lc = ?18, description_lc = ?19");
            v.push(t.name.to_lowercase().into());
            v.push(t.description.to_lowercase().into());
        }
        self.exec(&format!("UPDATE tokens SET {set} WHERE id = ?1"), &v)?;
        Ok(())
    }

    fn get_token(&mut self, id: &str) -> StoreResult<Option<Token>> {
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM tokens t WHERE t.id = ?1{}",
            self.lock()
        );
        one(self, &sql, &values![id], token_from_row)
    }

    fn set_last_used(&mut self, id: &str, at: i64, ip: Option<&str>) -> StoreResult<()> {
        self.exec(
            "UPDATE tokens SET last_used_at = ?2, last_used_ip = ?3 WHERE id = ?1",
            &values![id, at, ip],
        )?;
        Ok(())
    }

    fn search_tokens(&mut self, q: &TokenQuery) -> StoreResult<TokenHits> {
        let mut args = Args::new(self.dialect());
        let mut wh = vec!["t.deleted_at IS NULL".to_string()];
        let mut needs_owner = scope_filter(&q.scope, &mut args, &mut wh);
        let text = match q.q.as_deref() {
            Some(text) => self.text_condition(text, &mut args)?,
            None => TextCondition::default(),
        };
        needs_owner |= text.needs_owner;
        wh.extend(text.where_sql);
        field_filters(q, &mut args, &mut wh);
        let where_sql = wh.join(" AND ");
        let count_args = args.values.len();
        let driven = text.from.is_some();
        let from = text
            .from
            .unwrap_or_else(|| "FROM tokens t JOIN users u ON u.id = t.user_id".into());
        let total = if q.count {
            // The owner's row is joined only when a condition needs it.
            let count_from = if driven || needs_owner {
                from.as_str()
            } else {
                "FROM tokens t"
            };
            let sql = format!("SELECT count(*) {count_from} WHERE {where_sql}");
            Some(one(self, &sql, &args.values[..count_args], |r| get::<i64>(r, 0))?.unwrap_or(0))
        } else {
            None
        };
        let (order, text_key) = sort_key_sql(q.sort, &mut args, q.now);
        let dir = if q.descending { "DESC" } else { "ASC" };
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
        let hits = all(self, &sql, &args.values, |r| {
            let token = token_from_row(r)?;
            let key = if text_key {
                CursorKey::Text(get(r, 22)?)
            } else {
                CursorKey::Int(get(r, 22)?)
            };
            Ok(TokenHit {
                cursor: encode_cursor(&key, &token.id),
                username: get(r, 21)?,
                token,
            })
        })?;
        Ok(TokenHits { hits, total })
    }

    fn live_unrevoked_tokens(&mut self, scope: &TokenScope) -> StoreResult<Vec<Token>> {
        let (col, arg) = match scope {
            TokenScope::Org(org) => ("t.org_id", org),
            TokenScope::User(user) => ("t.user_id", user),
            TokenScope::Partner { .. } => {
                return Err(StoreError::Backend(
                    "revoke-all never spans a partner's customers".into(),
                ))
            }
        };
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM tokens t WHERE {col} = ?1 AND t.deleted_at IS NULL \
             AND t.revoked_at IS NULL ORDER BY t.created_at, t.id"
        );
        all(self, &sql, &values![arg], token_from_row)
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
            "INSERT INTO status_entries (org_id, idx, value, token_id, version) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (org_id, idx) \
             DO UPDATE SET value = excluded.value, version = excluded.version",
            &values![org_id, idx, value, token_id, version],
        )?;
        Ok(())
    }

    fn status_entries(&mut self, org_id: &str) -> StoreResult<Vec<(i64, u8)>> {
        let sql = "SELECT idx, value FROM status_entries WHERE org_id = ?1 AND value != 0";
        all(self, sql, &values![org_id], status_from_row)
    }

    fn status_changes_since(&mut self, org_id: &str, version: i64) -> StoreResult<Vec<(i64, u8)>> {
        let sql = "SELECT idx, value FROM status_entries WHERE org_id = ?1 AND version > ?2";
        all(self, sql, &values![org_id, version], status_from_row)
    }

    fn insert_auth_event(&mut self, e: &AuthEvent) -> StoreResult<()> {
        self.insert_auth_events(std::slice::from_ref(e))
    }

    fn insert_auth_events(&mut self, events: &[AuthEvent]) -> StoreResult<()> {
        for chunk in events.chunks(EVENTS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders_from(i * 10 + 1, 10)))
                .collect();
            let sql = format!(
                "INSERT INTO auth_events ({AUTH_EVENT_COLS}) VALUES {}",
                rows.join(", ")
            );
            let mut v = Vec::with_capacity(chunk.len() * 10);
            for e in chunk {
                #[rustfmt::skip]
                v.extend(values![
                    &e.org_id, &e.token_id, &e.user_id, e.at, &e.ip, &e.outcome, &e.reason,
                    &e.method, &e.path, &e.source,
                ]);
            }
            if chunk.len() == 1 {
                self.exec(&sql, &v)?;
            } else {
                // Its text varies with the batch size: not kept prepared.
                self.exec_once(&sql, &v)?;
            }
        }
        Ok(())
    }

    fn delete_auth_events_before(&mut self, cutoff: i64, limit: u64) -> StoreResult<u64> {
        // (id, at): PostgreSQL's table is partitioned on `at`.
        let limit = limit.min(i64::MAX as u64) as i64;
        self.exec(
            "DELETE FROM auth_events WHERE (id, at) IN \
             (SELECT id, at FROM auth_events WHERE at < ?1 LIMIT ?2)",
            &values![cutoff, limit],
        )
    }

    fn list_auth_events(&mut self, q: &AuthEventQuery) -> StoreResult<Vec<AuthEvent>> {
        let mut args = Args::new(self.dialect());
        let wh = auth_event_filter(q, &mut args);
        let limit = args.add(q.limit.max(0));
        let offset = args.add(q.offset.max(0));
        let sql = format!(
            "SELECT id, {AUTH_EVENT_COLS} FROM auth_events WHERE {wh} \
             ORDER BY at DESC, id DESC LIMIT {limit} OFFSET {offset}"
        );
        all(self, &sql, &args.values, auth_event_from_row)
    }

    fn count_auth_events(&mut self, q: &AuthEventQuery) -> StoreResult<i64> {
        let mut args = Args::new(self.dialect());
        let wh = auth_event_filter(q, &mut args);
        let sql = format!("SELECT count(*) FROM auth_events WHERE {wh}");
        Ok(one(self, &sql, &args.values, |r| get::<i64>(r, 0))?.unwrap_or(0))
    }

    fn auth_event_buckets(
        &mut self,
        q: &AuthEventQuery,
        bucket_secs: i64,
    ) -> StoreResult<Vec<(i64, String, i64)>> {
        let mut args = Args::new(self.dialect());
        let wh = auth_event_filter(q, &mut args);
        let b = args.add(bucket_secs.max(1));
        let sql = format!(
            "SELECT (at / {b}) * {b}, outcome, count(*) FROM auth_events WHERE {wh} \
             GROUP BY 1, 2 ORDER BY 1, 2"
        );
        all(self, &sql, &args.values, |r| {
            Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?))
        })
    }

    fn auth_event_addresses(
        &mut self,
        q: &AuthEventQuery,
    ) -> StoreResult<Vec<(Option<String>, i64, i64)>> {
        let mut args = Args::new(self.dialect());
        let wh = auth_event_filter(q, &mut args);
        let limit = args.add(q.limit.max(0));
        let sql = format!(
            "SELECT ip, count(*), max(at) FROM auth_events WHERE {wh} \
             GROUP BY ip ORDER BY 3 DESC LIMIT {limit}"
        );
        all(self, &sql, &args.values, |r| {
            Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?))
        })
    }

    fn count_audit(&mut self, org_id: &str, target: Option<&str>) -> StoreResult<i64> {
        let sql = format!(
            "SELECT count(*) FROM audit_log WHERE {}",
            audit_filter(target)
        );
        Ok(one(self, &sql, &audit_args(org_id, target), |r| {
            get::<i64>(r, 0)
        })?
        .unwrap_or(0))
    }

    fn insert_audit(&mut self, a: &AuditEntry) -> StoreResult<()> {
        #[rustfmt::skip]
        let v = values![
            a.at, &a.org_id, &a.actor, &a.action, &a.target, a.detail.to_string(), &a.credential,
        ];
        self.exec(
            "INSERT INTO audit_log (at, org_id, actor, action, target, detail, credential) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &v,
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
        let mut args = Args::new(self.dialect());
        args.values = audit_args(org_id, target);
        let limit = args.add(limit.max(0));
        let offset = args.add(offset.max(0));
        let sql = format!(
            "SELECT {AUDIT_COLS} FROM audit_log WHERE {} \
             ORDER BY id DESC LIMIT {limit} OFFSET {offset}",
            audit_filter(target)
        );
        all(self, &sql, &args.values, audit_from_row)
    }

    fn insert_edge(&mut self, e: &EdgeCredential) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO edge_credentials ({EDGE_COLS}) VALUES ({})",
            placeholders(5)
        );
        let v = values![&e.id, &e.org_id, &e.name, &e.secret_sha256, e.created_at];
        self.exec(&sql, &v)?;
        Ok(())
    }

    fn find_edge_by_secret_hash(&mut self, hash: &str) -> StoreResult<Option<EdgeCredential>> {
        let sql = format!("SELECT {EDGE_COLS} FROM edge_credentials WHERE secret_sha256 = ?1");
        one(self, &sql, &values![hash], edge_from_row)
    }

    fn announce_edges_changed(&mut self) -> StoreResult<()> {
        self.announce()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        for (key, text) in [
            (CursorKey::Int(-1), false),
            (CursorKey::Int(i64::MAX), false),
            (CursorKey::Text("é \"x\"".into()), true),
        ] {
            let c = encode_cursor(&key, "t1");
            assert_eq!(decode_cursor(&c, text).unwrap(), (key, "t1".to_string()));
            // A cursor of a listing sorted by a key of the other type.
            assert_eq!(decode_cursor(&c, !text), Err(StoreError::BadCursor));
        }
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "not-a-cursor".to_string(),
            String::new(),
            enc("{}"),
            enc("[]"),
            enc("[1]"),
            enc("[1, \"t\", 2]"),
            enc("[1.5, \"t\"]"),
            enc("[1, 2]"),
            enc("[null, \"t\"]"),
            enc("[18446744073709551615, \"t\"]"),
        ] {
            assert_eq!(
                decode_cursor(&bad, false),
                Err(StoreError::BadCursor),
                "{bad}"
            );
        }
    }
}
