//! Storage behind two traits: `Store` opens transactions, `Tx` is what one transaction can
//! do. All business logic runs against `dyn Tx`, so a PostgreSQL backend only has to
//! implement these two traits. Every API change runs in exactly one transaction.

pub mod sqlite;

use crate::error::{ApiError, ApiResult};
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
    /// Substring of name, description or username (case-insensitive).
    pub q: Option<String>,
    pub status: Option<TokenStatus>,
    /// A user id or username.
    pub user: Option<String>,
    pub expires_before: Option<i64>,
    pub sort: TokenSort,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
    /// For the derived status.
    pub now: i64,
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
pub trait Tx {
    fn get_setting(&mut self, key: &str) -> ApiResult<Option<String>>;
    fn set_setting(&mut self, key: &str, value: &str) -> ApiResult<()>;

    fn insert_org(&mut self, org: &Org) -> ApiResult<()>;
    fn update_org(&mut self, org: &Org) -> ApiResult<()>;
    fn get_org(&mut self, id: &str) -> ApiResult<Option<Org>>;
    fn list_orgs(&mut self) -> ApiResult<Vec<Org>>;

    fn insert_key(&mut self, key: &SigningKey) -> ApiResult<()>;
    fn update_key(&mut self, key: &SigningKey) -> ApiResult<()>;
    fn get_key(&mut self, kid: &str) -> ApiResult<Option<SigningKey>>;
    /// All keys of the org, newest first.
    fn list_keys(&mut self, org_id: &str) -> ApiResult<Vec<SigningKey>>;

    fn insert_user(&mut self, user: &User) -> ApiResult<()>;
    fn update_user(&mut self, user: &User) -> ApiResult<()>;
    fn get_user(&mut self, id: &str) -> ApiResult<Option<User>>;
    fn find_user(&mut self, org_id: &str, username: &str) -> ApiResult<Option<User>>;
    fn list_users(&mut self, org_id: &str) -> ApiResult<Vec<User>>;

    fn insert_token(&mut self, token: &Token) -> ApiResult<()>;
    fn update_token(&mut self, token: &Token) -> ApiResult<()>;
    fn get_token(&mut self, id: &str) -> ApiResult<Option<Token>>;
    /// A page of matching tokens and the total number of matches.
    fn search_tokens(&mut self, query: &TokenQuery) -> ApiResult<(Vec<Token>, i64)>;

    fn set_status(&mut self, org_id: &str, idx: i64, value: u8, token_id: &str) -> ApiResult<()>;
    fn status_entries(&mut self, org_id: &str) -> ApiResult<Vec<(i64, u8)>>;

    fn insert_auth_event(&mut self, event: &AuthEvent) -> ApiResult<()>;
    fn list_auth_events(&mut self, query: &AuthEventQuery) -> ApiResult<Vec<AuthEvent>>;

    fn insert_audit(&mut self, entry: &AuditEntry) -> ApiResult<()>;
    fn list_audit(
        &mut self,
        org_id: &str,
        target: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> ApiResult<Vec<AuditEntry>>;

    fn insert_edge(&mut self, edge: &EdgeCredential) -> ApiResult<()>;
    fn find_edge_by_secret_hash(&mut self, hash: &str) -> ApiResult<Option<EdgeCredential>>;
}

/// A storage backend. The closure runs inside one transaction, committed only if it
/// returns `Ok` (a write commit is durable before this returns).
pub trait Store: Send + Sync {
    fn transaction(
        &self,
        write: bool,
        f: &mut dyn FnMut(&mut dyn Tx) -> ApiResult<()>,
    ) -> ApiResult<()>;
}

impl dyn Store + '_ {
    pub fn write<T>(&self, f: impl FnOnce(&mut dyn Tx) -> ApiResult<T>) -> ApiResult<T> {
        self.run(true, f)
    }

    pub fn read<T>(&self, f: impl FnOnce(&mut dyn Tx) -> ApiResult<T>) -> ApiResult<T> {
        self.run(false, f)
    }

    fn run<T>(&self, write: bool, f: impl FnOnce(&mut dyn Tx) -> ApiResult<T>) -> ApiResult<T> {
        let mut f = Some(f);
        let mut out = None;
        self.transaction(write, &mut |tx| {
            let f = f
                .take()
                .ok_or_else(|| ApiError::internal("transaction body ran twice"))?;
            out = Some(f(tx)?);
            Ok(())
        })?;
        out.ok_or_else(|| ApiError::internal("transaction produced no value"))
    }
}
