//! What the store keeps for SCIM provisioning: the SCIM credentials an org admin creates
//! (only the SHA-256 of the secret), and the SCIM attributes of users that Tessera's own
//! user record has no column for (`externalId`, `name`, `emails`) with the resource
//! version behind `meta.version`/ETags. A supertrait of `Tx`, so every transaction has it.

use super::StoreResult;

/// A SCIM credential: a bearer secret an identity provider sends to `/scim/v2/{org}/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimCredential {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub secret_sha256: String,
    /// The admin who made it: the credential acts as them and never beyond their role.
    pub created_by: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// The SCIM side of a user: what the user record has no column for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScimUser {
    pub user_id: String,
    pub org_id: String,
    pub external_id: Option<String>,
    /// The SCIM attributes kept as given (`name`, `emails`, ...), a JSON object.
    pub attrs: serde_json::Value,
    /// Bumped on every change of the resource through SCIM or the API; `meta.version`.
    pub version: i64,
    pub updated_at: i64,
}

pub trait ScimTx {
    fn insert_scim_credential(&mut self, c: &ScimCredential) -> StoreResult<()>;
    fn list_scim_credentials(&mut self, org_id: &str) -> StoreResult<Vec<ScimCredential>>;
    fn get_scim_credential(&mut self, id: &str) -> StoreResult<Option<ScimCredential>>;
    /// The credential (revoked or not) whose secret hashes to `hash`.
    fn find_scim_credential(&mut self, hash: &str) -> StoreResult<Option<ScimCredential>>;
    fn revoke_scim_credential(&mut self, id: &str, at: i64) -> StoreResult<()>;
    fn touch_scim_credential(&mut self, id: &str, at: i64) -> StoreResult<()>;

    /// Renames a user (SCIM `userName`, a deleted user's tombstone); the token search's owner
    /// text follows.
    fn rename_user(&mut self, user: &crate::model::User) -> StoreResult<()>;

    fn get_scim_user(&mut self, user_id: &str) -> StoreResult<Option<ScimUser>>;
    /// Inserts or replaces.
    fn put_scim_user(&mut self, u: &ScimUser) -> StoreResult<()>;
    fn list_scim_users(&mut self, org_id: &str) -> StoreResult<Vec<ScimUser>>;
}
