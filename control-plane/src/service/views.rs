//! What the API returns, as typed values: one struct per shape, built from the model by a
//! constructor. The CLI, the CSV export and `/openapi.json` all read these same types.

use super::Ctx;
use crate::model::{AuditEntry, AuthEvent, Org, Token, User};
use crate::model::{KeyAlg, Role};
use crate::timefmt;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

fn ts(v: Option<i64>) -> Option<String> {
    v.map(timefmt::format)
}

/// An organization.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrgView {
    pub id: String,
    pub name: String,
    pub partner: bool,
    pub root: bool,
    pub managed_by: Option<String>,
    pub max_lifetime_days: i64,
    pub audience: String,
    #[schema(value_type = KeyAlg)]
    pub key_alg: String,
    pub issuer: String,
    pub jwks_uri: String,
    pub status_list_uri: String,
    pub created_at: String,
    /// Whether a token's owner may edit, enable, disable and delete their own tokens (off:
    /// only an org admin does; owners still create, download, regenerate, rotate, revoke).
    pub owners_manage_tokens: bool,
}

impl OrgView {
    pub fn new(ctx: &Ctx, o: &Org) -> Self {
        let issuer = ctx.issuer(&o.id);
        OrgView {
            id: o.id.clone(),
            name: o.name.clone(),
            partner: o.is_partner,
            root: o.is_root,
            managed_by: o.partner_org_id.clone(),
            max_lifetime_days: o.max_lifetime_days,
            audience: o.audience.clone(),
            key_alg: o.key_alg.as_str().to_string(),
            jwks_uri: format!("{issuer}/jwks.json"),
            issuer,
            status_list_uri: ctx.status_uri(&o.id),
            created_at: timefmt::format(o.created_at),
            owners_manage_tokens: o.owners_manage_tokens,
        }
    }
}

/// A user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub org: String,
    pub username: String,
    pub display_name: String,
    #[schema(value_type = Role)]
    pub role: String,
    pub delegated: bool,
    pub created_at: String,
    /// `invited` (no password, token handed out or single sign-on yet), `active`, `disabled`
    /// or `deleted`; absent where the answer did not look it up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// A one-time link (invitation or password reset), only in the answer that made it,
    /// and only when this server sends no mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkView>,
    /// Where the one-time link was mailed instead (when this server sends mail, a link
    /// reaches only its user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_mailed_to: Option<String>,
}

/// A one-time sign-in link: shown once, only its hash is kept.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LinkView {
    /// `invite`, `reset` or `bootstrap`.
    pub kind: String,
    pub url: String,
    pub expires_at: String,
}

impl UserView {
    pub fn new(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            org: u.org_id.clone(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            role: u.role.as_str().to_string(),
            delegated: u.delegated,
            created_at: timefmt::format(u.created_at),
            state: None,
            link: None,
            link_mailed_to: None,
        }
    }
}

/// Token columns, in table and CSV order (every field of [`TokenView`] but `deleted`).
pub const TOKEN_COLUMNS: [&str; 19] = [
    "id",
    "org",
    "user",
    "username",
    "name",
    "description",
    "status",
    "enabled",
    "scopes",
    "ip_allow",
    "lifetime_days",
    "not_before",
    "expires_at",
    "created_by",
    "created_at",
    "downloaded_at",
    "status_idx",
    "last_used_at",
    "last_used_ip",
];

/// An API token record (never its JWT).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub org: String,
    pub user: String,
    pub username: String,
    pub name: String,
    pub description: String,
    /// `pending`, `enabled`, `disabled`, `revoked` or `expired`.
    pub status: String,
    /// Whether the token authenticates (or will, once downloaded): false when it is
    /// disabled, revoked or expired.
    pub enabled: bool,
    pub scopes: Vec<String>,
    pub ip_allow: Vec<String>,
    pub lifetime_days: Option<i64>,
    pub not_before: Option<String>,
    pub expires_at: String,
    pub created_by: String,
    pub created_at: String,
    pub downloaded_at: Option<String>,
    pub status_idx: Option<i64>,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    pub deleted: bool,
}

impl TokenView {
    pub fn new(t: &Token, username: &str, now: i64) -> Self {
        TokenView {
            id: t.id.clone(),
            org: t.org_id.clone(),
            user: t.user_id.clone(),
            username: super::accounts::shown_username(username),
            name: t.name.clone(),
            description: t.description.clone(),
            status: t.status(now).as_str().to_string(),
            // A revoked or expired token never works again, whatever its switch says.
            enabled: t.enabled
                && !matches!(
                    t.status(now),
                    crate::model::TokenStatus::Revoked | crate::model::TokenStatus::Expired
                ),
            scopes: t.scopes.clone(),
            ip_allow: t.ip_allow.clone(),
            lifetime_days: t.lifetime_days,
            not_before: ts(t.not_before),
            expires_at: timefmt::format(t.expires_at),
            created_by: t.created_by.clone(),
            created_at: timefmt::format(t.created_at),
            downloaded_at: ts(t.minted_at),
            status_idx: t.status_idx,
            last_used_at: ts(t.last_used_at),
            last_used_ip: t.last_used_ip.clone(),
            deleted: t.deleted_at.is_some(),
        }
    }

    /// The cells of one CSV or table row, in [`TOKEN_COLUMNS`] order (lists joined by
    /// spaces, absent values empty).
    pub fn cells(&self) -> [String; 19] {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        [
            self.id.clone(),
            self.org.clone(),
            self.user.clone(),
            self.username.clone(),
            self.name.clone(),
            self.description.clone(),
            self.status.clone(),
            self.enabled.to_string(),
            self.scopes.join(" "),
            self.ip_allow.join(" "),
            num(self.lifetime_days),
            opt(&self.not_before),
            self.expires_at.clone(),
            self.created_by.clone(),
            self.created_at.clone(),
            opt(&self.downloaded_at),
            num(self.status_idx),
            opt(&self.last_used_at),
            opt(&self.last_used_ip),
        ]
    }
}

/// One page of a token search.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenPage {
    pub tokens: Vec<TokenView>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
    /// Where the next page starts (pass it as `after`); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A freshly minted JWT, shown once, with its record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Minted {
    /// The API token: `tsr_` followed by the compact JWS (remove the prefix for a JOSE
    /// library; the API and the edges take either form).
    pub jwt: String,
    pub token: TokenView,
}

/// The result of an edit.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Edited {
    pub token: TokenView,
    /// The fields that changed.
    pub changed: Vec<String>,
    /// Whether the outstanding JWT was revoked (a field inside it changed).
    pub jwt_revoked: bool,
}

/// The result of a delete.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
    pub status: String,
}

/// The result of revoke-all.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevokedAll {
    pub revoked: usize,
    pub ids: Vec<String>,
}

/// One of an organization's signing keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    pub kid: String,
    #[schema(value_type = KeyAlg)]
    pub alg: String,
    /// Whether new tokens are signed with it (exactly one key is active).
    pub active: bool,
    pub created_at: String,
    /// When a rotation retired it; absent for the active key.
    pub retired_at: Option<String>,
    /// Until when edges still find it in the JWKS (the latest expiry of what it signed);
    /// absent for the active key.
    pub published_until: Option<String>,
}

/// An organization's signing keys, the active one first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// A key rotation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyRotated {
    pub kid: String,
    #[schema(value_type = KeyAlg)]
    pub alg: String,
    pub retired: Vec<String>,
}

/// A new edge credential; the secret is shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EdgeCreated {
    pub id: String,
    pub org: String,
    pub name: String,
    pub secret: String,
}

/// An access token from `/v1/auth/accesstoken`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccessToken {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
    /// RFC 8693 answers (form requests) name the issued token type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<String>,
}

/// What `/v1/usage` did with a batch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageAccepted {
    pub accepted: usize,
    pub unknown_tokens: Vec<String>,
    /// The edge's next rate-limit leases, when the batch carried `spend`
    /// (`service::leases`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<super::leases::LeaseView>,
    /// Tokens the batch's `spend` reported or asked about (`wanted`) that have no limit:
    /// the edge admits them without a lease.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unlimited: Vec<String>,
    /// When the batch carried `spend`: whether any token of the edge's organization is
    /// limited (when so, an edge asks for a lease of a token it holds nothing for before
    /// admitting it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited: Option<bool>,
    /// When the batch carried `spend`: how many edges (this one included) hold leases of
    /// the tokens answered that reach the current window. An edge that loses the control
    /// plane divides each limit by it (its fallback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edges: Option<u64>,
}

/// One authentication-log record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuthEventView {
    pub id: i64,
    pub token: String,
    /// The token's name (none once the token is deleted).
    pub token_name: Option<String>,
    pub user: String,
    /// The user's username (none once the user is gone).
    pub username: Option<String>,
    pub org: String,
    pub at: String,
    pub ip: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub source: String,
}

impl AuthEventView {
    pub fn new(e: &AuthEvent) -> Self {
        AuthEventView {
            id: e.id,
            token: e.token_id.clone(),
            token_name: None,
            user: e.user_id.clone(),
            username: None,
            org: e.org_id.clone(),
            at: timefmt::format(e.at),
            ip: e.ip.clone(),
            outcome: e.outcome.clone(),
            reason: e.reason.clone(),
            method: e.method.clone(),
            path: e.path.clone(),
            source: e.source.clone(),
        }
    }
}

/// One audit-log entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub id: i64,
    pub at: String,
    pub org: String,
    pub actor: String,
    /// The acting user's username (none for the operator's commands).
    pub actor_name: Option<String>,
    pub action: String,
    pub target: String,
    /// The target's name, when it is a user (username) or a token (its name).
    pub target_name: Option<String>,
    /// What changed, as recorded by the action.
    #[schema(value_type = Object)]
    pub detail: Value,
    /// The credential that acted: `session:<id>`, `token:<id>`, `access:<id> (token:<id>)`,
    /// or empty for the operator's commands.
    pub credential: String,
}

impl AuditEntryView {
    pub fn new(a: AuditEntry) -> Self {
        AuditEntryView {
            id: a.id,
            at: timefmt::format(a.at),
            org: a.org_id,
            actor: a.actor,
            actor_name: None,
            action: a.action,
            target: a.target,
            target_name: None,
            detail: a.detail,
            credential: a.credential,
        }
    }
}

/// The authenticated caller (`/v1/me`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    pub user: UserView,
    pub org: OrgView,
    pub token: String,
}

/// A list of organizations.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrgList {
    pub orgs: Vec<OrgView>,
}

/// A list of users.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
    /// How many match, over all pages.
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

/// A page of the authentication log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuthEvents {
    pub events: Vec<AuthEventView>,
    /// How many match, over all pages.
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

/// A page of the audit log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntries {
    pub entries: Vec<AuditEntryView>,
    /// How many match, over all pages.
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

/// Liveness (`/healthz`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub ok: bool,
}

/// Readiness (`/readyz`): the database answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready` (a database that does not answer is a 503).
    #[schema(example = "ready")]
    pub status: &'static str,
}

/// An organization's public keys, as a JWK Set (RFC 7517).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Jwks {
    /// Public JWKs (`kty`, `kid`, `alg`, `use` and the key's own members).
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<Value>,
}

/// A token status list in JSON (draft-ietf-oauth-status-list): `lst` is the
/// base64url-encoded, DEFLATE-compressed list of `bits`-bit statuses.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusListView {
    pub bits: u8,
    pub lst: String,
    /// Tessera's addition (issue 22): scopes withdrawn from live tokens, each a
    /// base64url-encoded, DEFLATE-compressed bitset (1 bit per status-list index; 1 =
    /// withdrawn). Absent when nothing is withdrawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub withdrawn: Option<Value>,
}

/// One slice of time of a token's uses.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsagePoint {
    /// The slice's start (RFC 3339); it lasts one `bucket`.
    pub start: String,
    pub allowed: i64,
    pub refused: i64,
}

/// A network a token was used from (an IPv4 /24 or an IPv6 /48, as `token.used_from_new_network` names them).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageNetwork {
    /// e.g. `203.0.113.0/24`; `unknown` for uses the edge could not place.
    pub network: String,
    pub uses: i64,
    pub last_used_at: String,
}

/// A token's uses over time, from the authentication log: per hour or per day, allowed
/// and refused, and the networks it was used from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenUsage {
    pub token: String,
    pub name: String,
    /// `hour` or `day`.
    pub bucket: String,
    /// The window: from `since` (inclusive) to `until` (exclusive), RFC 3339.
    pub since: String,
    pub until: String,
    /// Every slice of the window, oldest first, zeros included.
    pub series: Vec<UsagePoint>,
    pub allowed: i64,
    pub refused: i64,
    /// The networks of the window's uses, most recently used first (at most 50).
    pub networks: Vec<UsageNetwork>,
}
