//! Who may do what. One table (`allowed`) decides every token action from the caller's
//! role and their relation to the token's owner; org-level actions need an org admin.

use crate::model::{Org, Role, User};
use crate::service::{Error, Result};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user: User,
    pub org: Org,
    /// The id of the API token (or, for an access token, its parent) that authenticated;
    /// empty for a session or an in-process caller.
    pub token_id: String,
    /// The credential the caller acts with (its kind decides what it may manage:
    /// `service::authority`).
    pub credential: Credential,
}

/// What authenticated the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An in-process caller: the operator's `tessera admin` commands, fixtures.
    Internal,
    /// A person signed in to the web page (a session kept in the store).
    Session { id: String },
    /// An API token (`tessera-api+jwt`): its verified scopes, IP filter and expiry bound
    /// what it may create.
    ApiToken {
        id: String,
        scopes: Vec<String>,
        ip_allow: Vec<String>,
        expires_at: i64,
    },
    /// An access token from exchange (`at+jwt`): calls the APIs behind the data plane,
    /// never manages anything.
    Access { id: String, parent: String },
    /// A SCIM credential (`service::scim`): acts as the admin who created it, only on
    /// the `/scim/v2/{org}` routes of that admin's organization.
    Scim { id: String },
}

impl Credential {
    /// How the audit log and the request log name it: `session:<id>`, `token:<id>`,
    /// `access:<id>` (of `token:<parent>`), `internal`.
    pub fn label(&self) -> String {
        match self {
            Credential::Internal => "internal".into(),
            Credential::Session { id } => format!("session:{id}"),
            Credential::ApiToken { id, .. } => format!("token:{id}"),
            Credential::Access { id, parent } => format!("access:{id} (token:{parent})"),
            Credential::Scim { id } => format!("scim:{id}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Read,
    Download,
    Regenerate,
    Revoke,
    RevokeAllOfUser,
    Edit,
    Enable,
    Disable,
    Delete,
    ReadAuthLog,
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::Create,
        Action::Read,
        Action::Download,
        Action::Regenerate,
        Action::Revoke,
        Action::RevokeAllOfUser,
        Action::Edit,
        Action::Enable,
        Action::Disable,
        Action::Delete,
        Action::ReadAuthLog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Download => "download",
            Action::Regenerate => "regenerate",
            Action::Revoke => "revoke",
            Action::RevokeAllOfUser => "revoke-all (user)",
            Action::Edit => "edit",
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Delete => "delete",
            Action::ReadAuthLog => "read auth log",
        }
    }
}

/// How the caller stands to the owner of the token acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The caller's own token.
    Own,
    /// Another user of the caller's organization.
    SameOrg,
    /// A user of a customer organization managed by the caller's (partner) organization,
    /// who has delegated permissions to the partner.
    DelegatedCustomer,
    /// Anyone else.
    Unrelated,
}

pub fn relation(actor: &Actor, owner: &User, owner_org: &Org) -> Relation {
    if owner.id == actor.user.id {
        Relation::Own
    } else if owner.org_id == actor.org.id {
        Relation::SameOrg
    } else if owner.delegated && owner_org.partner_org_id.as_deref() == Some(actor.org.id.as_str())
    {
        Relation::DelegatedCustomer
    } else {
        Relation::Unrelated
    }
}

/// What a token's owner with the role `user` or `partner` may do to their own tokens only
/// while their org lets owners manage them (`Org::owners_manage_tokens`, on by default).
/// Nothing here reaches beyond the owner's own tokens, and nothing loosens more than the
/// owner could by creating a new token: an edit goes through the same checks as a create
/// (granted scopes, the org's longest lifetime, the acting credential's bounds).
pub const OWNER_MANAGES: [Action; 4] = [
    Action::Edit,
    Action::Enable,
    Action::Disable,
    Action::Delete,
];

/// The role × relation × action matrix; `owners_manage_tokens` is the owner's org's
/// setting (it matters only to [`OWNER_MANAGES`] on one's own tokens). `Err` carries the
/// reason given with the 403.
pub fn allowed(
    role: Role,
    relation: Relation,
    action: Action,
    owners_manage_tokens: bool,
) -> std::result::Result<(), String> {
    use Action::*;
    if action == Download && relation != Relation::Own {
        return Err("only the token's own user may download it".into());
    }
    if action == Regenerate && relation != Relation::Own {
        return Err(
            "only the token's own user may regenerate it (the new JWT is theirs to see); you may revoke or disable it"
                .into(),
        );
    }
    let ok = match (role, relation) {
        (Role::Admin, Relation::Own) => true,
        (Role::Admin, Relation::SameOrg) => !matches!(action, Download | Regenerate),
        (Role::User | Role::Partner, Relation::Own) => {
            matches!(
                action,
                Create | Read | Download | Regenerate | Revoke | RevokeAllOfUser | ReadAuthLog
            ) || (owners_manage_tokens && OWNER_MANAGES.contains(&action))
        }
        (Role::Partner, Relation::DelegatedCustomer) => {
            matches!(action, Create | Read | Revoke | RevokeAllOfUser)
        }
        // A specialist may fetch a token an admin made for them, but never mint or change one.
        (Role::Readonly, Relation::Own) => matches!(action, Read | Download | ReadAuthLog),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(match (role, relation) {
        (_, Relation::Unrelated) => "the token belongs to a user you cannot act for".into(),
        (Role::Readonly, _) => format!("the readonly role cannot {}", action.as_str()),
        (Role::Partner, Relation::SameOrg) => {
            "partner users act only for delegating customer users".into()
        }
        (_, Relation::SameOrg | Relation::DelegatedCustomer) => {
            format!(
                "the {} role cannot {} another user's tokens",
                role.as_str(),
                action.as_str()
            )
        }
        (Role::User | Role::Partner, Relation::Own) if OWNER_MANAGES.contains(&action) => format!(
            "your organization lets token owners create, regenerate and revoke their tokens but not {} them (owners_manage_tokens is off); ask an org admin",
            action.as_str()
        ),
        (_, Relation::Own) => format!(
            "the {} role cannot {} tokens; ask an org admin",
            role.as_str(),
            action.as_str()
        ),
    })
}

pub fn check(actor: &Actor, owner: &User, owner_org: &Org, action: Action) -> Result<()> {
    allowed(
        actor.user.role,
        relation(actor, owner, owner_org),
        action,
        owner_org.owners_manage_tokens,
    )
    .map_err(Error::forbidden)
}

/// Org-level management (users, keys, edge credentials, audit log, revoke-all of an org):
/// an admin of that org. Admins of the root org, and of the partner org managing it, may
/// manage its users too (`allow_managers`).
pub fn require_org_admin(actor: &Actor, org: &Org, allow_managers: bool) -> Result<()> {
    if actor.user.role != Role::Admin {
        return Err(Error::forbidden(format!(
            "the {} role cannot manage the organization",
            actor.user.role.as_str()
        )));
    }
    let manager = actor.org.is_root || org.partner_org_id.as_deref() == Some(actor.org.id.as_str());
    if actor.org.id == org.id || (allow_managers && manager) {
        Ok(())
    } else {
        Err(Error::forbidden(format!(
            "you are not an admin of organization {}",
            org.id
        )))
    }
}
