//! What the store keeps for single sign-on (OpenID Connect): each organization's
//! connection to its identity provider (the client secret sealed with the master key),
//! the email domains that route to it, the sign-ins under way (single use, ten minutes),
//! and the identities (issuer + subject) linked to users. A supertrait of `Tx`, so every
//! transaction has it.

use super::StoreResult;

/// An organization's OpenID Connect connection (one per organization).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoConnection {
    pub org_id: String,
    /// The issuer identifier: discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The client secret, sealed with the master key (`crypto::MasterKey::seal`, bound to
    /// the org by its associated data).
    pub secret_enc: Vec<u8>,
    /// The email domains (lower case) whose people sign in through this connection.
    pub domains: Vec<String>,
    /// Password sign-in refused for the org's users (admins keep a break-glass path).
    pub require_sso: bool,
    /// The role a user created at first sign-in gets when no group maps.
    pub default_role: String,
    /// `[[group, role], ...]` as JSON text: the first group the user is in gives the role.
    pub group_roles: String,
    /// The mapping sets the role at every sign-in (else only at the first).
    pub sync_roles: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An organization's claim of an email domain. It routes sign-ins only once approved by
/// the operator (a root admin); at most one claim of a domain is approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoDomainClaim {
    pub domain: String,
    pub org_id: String,
    pub claimed_at: i64,
    /// When a root admin approved it (`None`: pending).
    pub approved_at: Option<i64>,
    /// The approving user's id (`None` for a claim approved before approvals existed).
    pub approved_by: Option<String>,
}

/// A sign-in under way: created by `/v1/sso/start`, taken (and so deleted) by the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoLogin {
    /// SHA-256 of the `state` sent to the provider.
    pub state_sha256: String,
    pub org_id: String,
    pub nonce: String,
    /// The PKCE verifier, sealed with the master key (bound to the state's hash).
    pub verifier_enc: Vec<u8>,
    /// SHA-256 of the secret in the browser's binding cookie.
    pub browser_sha256: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An identity at a provider linked to a user: the one key a returning sign-in is found by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoIdentity {
    pub org_id: String,
    pub issuer: String,
    pub subject: String,
    pub user_id: String,
    pub email: String,
    pub created_at: i64,
    pub last_sign_in_at: i64,
}

pub trait SsoTx {
    fn get_sso_connection(&mut self, org_id: &str) -> StoreResult<Option<SsoConnection>>;
    /// Inserts or replaces the org's connection, and its domain claims: claims of domains
    /// no longer listed are dropped, new ones start pending, kept ones keep their state.
    fn put_sso_connection(&mut self, c: &SsoConnection) -> StoreResult<()>;
    /// Deletes the org's connection and its domain claims; whether there was one.
    fn delete_sso_connection(&mut self, org_id: &str) -> StoreResult<bool>;
    /// The org whose approved claim holds `domain` (lower case).
    fn sso_domain_owner(&mut self, domain: &str) -> StoreResult<Option<String>>;
    /// Domain claims, by domain then org: of one org, or of all orgs; only pending ones
    /// when `pending_only`.
    fn sso_domain_claims(
        &mut self,
        org_id: Option<&str>,
        pending_only: bool,
    ) -> StoreResult<Vec<SsoDomainClaim>>;
    /// Approves (`Some((at, by))`) or withdraws the approval of (`None`) the org's claim of
    /// `domain`; whether the claim exists.
    fn set_sso_domain_approved(
        &mut self,
        domain: &str,
        org_id: &str,
        approved: Option<(i64, &str)>,
    ) -> StoreResult<bool>;

    fn insert_sso_login(&mut self, l: &SsoLogin) -> StoreResult<()>;
    /// Takes the sign-in whose state hashes to `state_sha256`: it is deleted in the same
    /// transaction, so a state is used once, also across replicas.
    fn take_sso_login(&mut self, state_sha256: &str) -> StoreResult<Option<SsoLogin>>;

    fn find_sso_identity(
        &mut self,
        org_id: &str,
        issuer: &str,
        subject: &str,
    ) -> StoreResult<Option<SsoIdentity>>;
    fn insert_sso_identity(&mut self, i: &SsoIdentity) -> StoreResult<()>;
    fn touch_sso_identity(
        &mut self,
        org_id: &str,
        issuer: &str,
        subject: &str,
        at: i64,
    ) -> StoreResult<()>;

    /// Deletes sign-ins that expired before `before`; how many.
    fn prune_sso_logins(&mut self, before: i64) -> StoreResult<u64>;
}
