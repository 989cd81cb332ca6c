//! The records the control plane keeps, and the values derived from them.

use serde::{Deserialize, Serialize};

/// What a user may do; see `policy` for the full matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Org admin / API-token manager.
    Admin,
    /// Enterprise user: manages their own tokens.
    User,
    /// Partner super user: acts for delegating users of customer organizations.
    Partner,
    /// Business specialist: read-only.
    Readonly,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::User, Role::Partner, Role::Readonly];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Partner => "partner",
            Role::Readonly => "readonly",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A signing algorithm; each key pins exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum KeyAlg {
    EdDSA,
    ES256,
}

impl KeyAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::EdDSA => "EdDSA",
            KeyAlg::ES256 => "ES256",
        }
    }

    pub fn parse(s: &str) -> Option<KeyAlg> {
        match s {
            "EdDSA" => Some(KeyAlg::EdDSA),
            "ES256" => Some(KeyAlg::ES256),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    /// The partner organization that manages this one, if any.
    pub partner_org_id: Option<String>,
    /// A partner organization may manage customer organizations.
    pub is_partner: bool,
    /// The first organization (made by `tessera admin bootstrap`); its admins create orgs.
    pub is_root: bool,
    pub max_lifetime_days: i64,
    pub audience: String,
    pub key_alg: KeyAlg,
    /// Bumped on every change of the org's status list.
    pub status_version: i64,
    pub next_status_idx: i64,
    pub created_at: i64,
    /// Whether a token's owner (role `user` or `partner`) may edit, enable, disable and
    /// delete their own tokens (`policy::allowed`); revoking, regenerating and rotating
    /// them stay theirs either way. On unless the org's admins turn it off.
    pub owners_manage_tokens: bool,
}

#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub org_id: String,
    pub alg: KeyAlg,
    pub public_jwk: serde_json::Value,
    /// The private key, sealed with the master key (see `crypto::MasterKey`).
    pub private_enc: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    /// The latest `exp` of anything this key signed: a retired key is published until then.
    pub last_exp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub org_id: String,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// The user lets the partner managing their org act on their tokens.
    pub delegated: bool,
    pub created_at: i64,
}

/// An API token record. The JWT itself is never stored: only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub org_id: String,
    pub user_id: String,
    pub name: String,
    pub description: String,
    pub created_by: String,
    pub created_at: i64,
    /// One of `LIFETIMES`, or `None` for a custom expiry.
    pub lifetime_days: Option<i64>,
    pub not_before: Option<i64>,
    pub expires_at: i64,
    pub ip_allow: Vec<String>,
    pub scopes: Vec<String>,
    pub enabled: bool,
    pub revoked_at: Option<i64>,
    pub deleted_at: Option<i64>,
    /// When the outstanding JWT was minted; `None` while Pending.
    pub minted_at: Option<i64>,
    pub jwt_sha256: Option<String>,
    /// The status-list index of the outstanding JWT.
    pub status_idx: Option<i64>,
    pub kid: Option<String>,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
}

/// The lifetimes offered in the UI; anything else is a custom expiry.
pub const LIFETIMES: [i64; 5] = [30, 60, 90, 180, 365];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Pending,
    Enabled,
    Disabled,
    Revoked,
    Expired,
}

impl TokenStatus {
    pub const ALL: [TokenStatus; 5] = [
        TokenStatus::Pending,
        TokenStatus::Enabled,
        TokenStatus::Disabled,
        TokenStatus::Revoked,
        TokenStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Pending => "pending",
            TokenStatus::Enabled => "enabled",
            TokenStatus::Disabled => "disabled",
            TokenStatus::Revoked => "revoked",
            TokenStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<TokenStatus> {
        TokenStatus::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl Token {
    /// The derived status. The SQL in `store::sqlite::STATUS_SQL` must agree (tested).
    pub fn status(&self, now: i64) -> TokenStatus {
        if self.revoked_at.is_some() || self.deleted_at.is_some() {
            TokenStatus::Revoked
        } else if self.expires_at <= now {
            TokenStatus::Expired
        } else if !self.enabled {
            TokenStatus::Disabled
        } else if self.jwt_sha256.is_none() {
            TokenStatus::Pending
        } else {
            TokenStatus::Enabled
        }
    }
}

/// Values of a status-list entry (Token Status List draft, 2 bits).
pub mod status_value {
    pub const VALID: u8 = 0;
    pub const REVOKED: u8 = 1;
    pub const SUSPENDED: u8 = 2;
    /// The draft's application-specific value: the token was rotated and its grace is
    /// over (`service::rotation`); edges refuse it with reason `rotated`.
    pub const ROTATED: u8 = 3;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthEvent {
    pub id: i64,
    pub org_id: String,
    pub token_id: String,
    pub user_id: String,
    pub at: i64,
    pub ip: Option<String>,
    /// `allow` or `deny`.
    pub outcome: String,
    pub reason: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// `edge:<credential id>` or `exchange`.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub org_id: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
    /// The credential that acted (`session:<id>`, `token:<id>`, ...); empty for the
    /// operator's commands and entries written before it was recorded.
    pub credential: String,
}

#[derive(Debug, Clone)]
pub struct EdgeCredential {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub secret_sha256: String,
    pub created_at: i64,
}
