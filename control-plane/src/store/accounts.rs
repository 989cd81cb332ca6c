//! What the store keeps for people signing in: accounts (password hash, disabled or
//! deleted), single-use sign-in links, sessions, sign-in throttles, and the edge
//! credentials' list and revocation. A supertrait of `Tx`, so every transaction has it.

use super::StoreResult;
use crate::model::EdgeCredential;

/// A user's sign-in state; absent until the user first gets a link or a password.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Account {
    pub user_id: String,
    /// The argon2id PHC string; `None` until a password is set.
    pub password_hash: Option<String>,
    pub disabled_at: Option<i64>,
    pub deleted_at: Option<i64>,
    /// The tokens disabling the user suspended (enabling the user enables them again).
    pub suspended_tokens: Vec<String>,
    /// The web page's remembered choices (hidden columns, ...), a JSON object.
    pub prefs: serde_json::Value,
}

/// A one-time link: invitation, password reset, or the bootstrap sign-in. Only the
/// SHA-256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInLink {
    pub secret_sha256: String,
    pub user_id: String,
    /// `invite`, `reset` or `bootstrap`.
    pub kind: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// A web session. The cookie carries the secret; only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Public id: named in the audit log.
    pub id: String,
    pub secret_sha256: String,
    pub user_id: String,
    /// The CSRF token every state-changing request of this session must carry.
    pub csrf: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub ended_at: Option<i64>,
    /// The issuer of the identity provider the session was signed in through (single
    /// sign-on); `None` for a password or a one-time link.
    pub sso_issuer: Option<String>,
}

/// Failed sign-ins for one key (`user:<id>` or `addr:<ip>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    pub key: String,
    pub failures: i64,
    pub locked_until: i64,
    pub last_at: i64,
}

/// An edge credential with its revocation time.
#[derive(Debug, Clone)]
pub struct EdgeRecord {
    pub edge: EdgeCredential,
    pub revoked_at: Option<i64>,
}

pub trait AccountsTx {
    fn get_account(&mut self, user_id: &str) -> StoreResult<Option<Account>>;
    /// Inserts or replaces.
    fn put_account(&mut self, account: &Account) -> StoreResult<()>;
    /// The accounts of an org's users that have one.
    fn org_accounts(&mut self, org_id: &str) -> StoreResult<Vec<Account>>;

    fn insert_link(&mut self, link: &SignInLink) -> StoreResult<()>;
    fn get_link(&mut self, secret_sha256: &str) -> StoreResult<Option<SignInLink>>;
    /// Marks an unused link used; `false` if it was already used.
    fn use_link(&mut self, secret_sha256: &str, at: i64) -> StoreResult<bool>;
    /// Voids (marks used at `at`) every unused link of the user, or only those of `kind`;
    /// answers how many.
    fn void_links(&mut self, user_id: &str, kind: Option<&str>, at: i64) -> StoreResult<u64>;

    fn insert_session(&mut self, session: &Session) -> StoreResult<()>;
    fn get_session(&mut self, secret_sha256: &str) -> StoreResult<Option<Session>>;
    fn touch_session(&mut self, id: &str, at: i64) -> StoreResult<()>;
    fn end_session(&mut self, id: &str, at: i64) -> StoreResult<()>;
    /// Ends every open session of the user.
    fn end_user_sessions(&mut self, user_id: &str, at: i64) -> StoreResult<()>;
    fn session_by_id(&mut self, id: &str) -> StoreResult<Option<Session>>;

    fn get_throttle(&mut self, key: &str) -> StoreResult<Option<Throttle>>;
    /// The throttle row of `key`, created empty (no failures, `last_at` = `now`) when
    /// there is none, and locked for the rest of this write: concurrent sign-ins for the
    /// same key reserve their attempts one after the other, on every backend and replica.
    fn lock_throttle(&mut self, key: &str, now: i64) -> StoreResult<Throttle>;
    fn put_throttle(&mut self, t: &Throttle) -> StoreResult<()>;
    fn clear_throttle(&mut self, key: &str) -> StoreResult<()>;
    /// Deletes what sign-in no longer needs: sessions last used, started or ended
    /// before `sessions_before`/`started_before`, throttle rows untouched since
    /// `throttles_before` and no longer delaying at `now`, links that expired or were used
    /// before `links_before`. Answers how many rows went.
    fn prune_sign_in(&mut self, cut: &SignInCutoffs) -> StoreResult<u64>;

    fn list_edges(&mut self, org_id: &str) -> StoreResult<Vec<EdgeRecord>>;
    fn get_edge(&mut self, id: &str) -> StoreResult<Option<EdgeRecord>>;
    /// Revokes: the secret no longer matches anything (usage reports stop at once).
    fn revoke_edge(&mut self, id: &str, at: i64) -> StoreResult<()>;
}

/// The cutoffs of [`AccountsTx::prune_sign_in`] (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInCutoffs {
    pub now: i64,
    /// Sessions idle, or ended, since before this.
    pub sessions_before: i64,
    /// Sessions started before this (past their absolute timeout).
    pub started_before: i64,
    pub throttles_before: i64,
    pub links_before: i64,
}
