//! What the store keeps for the scope catalogue: each organization's scopes (name,
//! description) and their grants to roles and to single users. A supertrait of `Tx`, so
//! every transaction has it.

use super::StoreResult;

/// One scope of an organization's catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRecord {
    pub org_id: String,
    pub name: String,
    pub description: String,
    /// `tessera:manage`: made with the organization, never deleted.
    pub builtin: bool,
    pub created_at: i64,
}

/// A grant of a scope to a grantee: `role:<role>` or `user:<user id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub org_id: String,
    pub scope: String,
    pub grantee: String,
    pub created_at: i64,
}

pub trait ScopesTx {
    /// The organization's catalogue, by name.
    fn list_scopes(&mut self, org_id: &str) -> StoreResult<Vec<ScopeRecord>>;
    fn get_scope(&mut self, org_id: &str, name: &str) -> StoreResult<Option<ScopeRecord>>;
    /// Adds a scope; a scope of that name already there is a `Conflict`.
    fn insert_scope(&mut self, scope: &ScopeRecord) -> StoreResult<()>;
    fn update_scope(&mut self, scope: &ScopeRecord) -> StoreResult<()>;
    /// Removes a scope and every grant of it.
    fn delete_scope(&mut self, org_id: &str, name: &str) -> StoreResult<()>;
    /// Every grant of the organization, by scope then grantee.
    fn list_grants(&mut self, org_id: &str) -> StoreResult<Vec<GrantRecord>>;
    /// Adds a grant; `false` when it was already there.
    fn insert_grant(&mut self, grant: &GrantRecord) -> StoreResult<bool>;
    /// Withdraws a grant; `false` when there was none.
    fn delete_grant(&mut self, org_id: &str, scope: &str, grantee: &str) -> StoreResult<bool>;
    /// The scopes granted to any of `grantees` in the organization, by name, once each.
    fn granted_scopes(&mut self, org_id: &str, grantees: &[String]) -> StoreResult<Vec<String>>;
}
