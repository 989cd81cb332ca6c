//! The scope catalogue: each organization's scopes (name, description), granted to roles
//! and to single users by the org's admins. A token carries only scopes its user is
//! granted ([`check_granted`], at create and edit), and what a user is no longer granted
//! is withdrawn from their live tokens at every edge (`keys::withdrawn_document`).
//! [`MANAGE_SCOPE`] is built in: made with every organization, granted to every role,
//! never deleted (its grants may be withdrawn).

use super::authority::MANAGE_SCOPE;
use super::input::{check_scopes, check_text};
use super::{audit, load_org, Ctx, Error, Result};
use crate::model::{Role, User};
use crate::policy::{self, Actor};
use crate::store::scopes::{GrantRecord, ScopeRecord};
use crate::store::{StoreError, TokenScope, Tx};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use tessera_core::withdrawn::WithdrawnScopes;
use utoipa::ToSchema;

/// Stable reason: a token was asked for with a scope its user is not granted.
pub const NOT_GRANTED: &str = "scope_not_granted";

/// The description of the built-in scope.
const MANAGE_DESCRIPTION: &str = "Call the Tessera management API";

/// Add a scope to the organization's catalogue.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScope {
    /// An RFC 6749 scope-token: printable ASCII without spaces, '"' or '\'.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// Change a scope's description.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateScope {
    pub description: String,
}

/// Whom a scope is granted to (or withdrawn from): a role, or one user (id or username
/// of the organization). Exactly one of the two.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grantee {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub user: Option<String>,
}

/// A user a scope is granted to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GrantedUser {
    pub id: String,
    pub username: String,
}

/// One scope of the catalogue with its grants.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScopeView {
    pub name: String,
    pub description: String,
    /// `tessera:manage`: cannot be deleted.
    pub builtin: bool,
    /// The roles granted the scope.
    pub roles: Vec<Role>,
    /// The single users granted the scope.
    pub users: Vec<GrantedUser>,
}

/// An organization's scope catalogue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScopeList {
    pub scopes: Vec<ScopeView>,
}

/// A scope a user may put on their tokens.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GrantedScope {
    pub name: String,
    pub description: String,
}

/// The scopes a user is granted (by role or by name): what their tokens may carry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GrantedScopes {
    pub user: String,
    pub scopes: Vec<GrantedScope>,
}

fn role_grantee(role: Role) -> String {
    format!("role:{}", role.as_str())
}

fn user_grantee(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// Puts the built-in scope in a new organization's catalogue, granted to every role.
pub(crate) fn seed_org(tx: &mut dyn Tx, org_id: &str, now: i64) -> Result<()> {
    tx.insert_scope(&ScopeRecord {
        org_id: org_id.to_string(),
        name: MANAGE_SCOPE.to_string(),
        description: MANAGE_DESCRIPTION.to_string(),
        builtin: true,
        created_at: now,
    })?;
    for role in Role::ALL {
        tx.insert_grant(&GrantRecord {
            org_id: org_id.to_string(),
            scope: MANAGE_SCOPE.to_string(),
            grantee: role_grantee(role),
            created_at: now,
        })?;
    }
    Ok(())
}

/// The scopes named at bootstrap: in the catalogue (if missing), granted to every role.
pub(crate) fn seed_bootstrap(
    tx: &mut dyn Tx,
    org_id: &str,
    scopes: &[String],
    now: i64,
) -> Result<()> {
    for name in scopes {
        if tx.get_scope(org_id, name)?.is_none() {
            tx.insert_scope(&ScopeRecord {
                org_id: org_id.to_string(),
                name: name.clone(),
                description: String::new(),
                builtin: false,
                created_at: now,
            })?;
        }
        for role in Role::ALL {
            tx.insert_grant(&GrantRecord {
                org_id: org_id.to_string(),
                scope: name.clone(),
                grantee: role_grantee(role),
                created_at: now,
            })?;
        }
    }
    Ok(())
}

/// The scopes `user` is granted now: by their role and by name.
pub fn granted_to(tx: &mut dyn Tx, user: &User) -> Result<Vec<String>> {
    Ok(tx.granted_scopes(
        &user.org_id,
        &[role_grantee(user.role), user_grantee(&user.id)],
    )?)
}

/// Refuses scopes `owner` is not granted: one outside the catalogue is a 400 naming it,
/// one in the catalogue but not granted a 403 [`NOT_GRANTED`]; both say what is allowed.
pub fn check_granted(tx: &mut dyn Tx, owner: &User, scopes: &[String]) -> Result<()> {
    if scopes.is_empty() {
        return Ok(());
    }
    let granted = granted_to(tx, owner)?;
    let allowed = || {
        if granted.is_empty() {
            format!("{} is granted no scopes", owner.username)
        } else {
            format!("{} is granted {}", owner.username, granted.join(", "))
        }
    };
    for (i, s) in scopes.iter().enumerate() {
        if granted.contains(s) {
            continue;
        }
        if tx.get_scope(&owner.org_id, s)?.is_none() {
            return Err(Error::field(
                &format!("scopes[{i}]"),
                format!(
                    "{s:?} is not in the organization's scope catalogue (an org admin adds it); {}",
                    allowed()
                ),
            ));
        }
        return Err(Error::denied(
            NOT_GRANTED,
            format!(
                "scopes[{i}]: {s:?} is not granted to {} (an org admin grants it to their role or to them); {}",
                owner.username,
                allowed()
            ),
        ));
    }
    Ok(())
}

fn view(tx: &mut dyn Tx, scope: &ScopeRecord, grants: &[GrantRecord]) -> Result<ScopeView> {
    let mut roles = Vec::new();
    let mut users = Vec::new();
    for g in grants.iter().filter(|g| g.scope == scope.name) {
        if let Some(r) = g.grantee.strip_prefix("role:").and_then(Role::parse) {
            roles.push(r);
        } else if let Some(id) = g.grantee.strip_prefix("user:") {
            let username = tx.get_user(id)?.map(|u| u.username).unwrap_or_default();
            users.push(GrantedUser {
                id: id.to_string(),
                username,
            });
        }
    }
    roles.sort_by_key(|r| Role::ALL.iter().position(|x| x == r));
    Ok(ScopeView {
        name: scope.name.clone(),
        description: scope.description.clone(),
        builtin: scope.builtin,
        roles,
        users,
    })
}

fn one_view(tx: &mut dyn Tx, org_id: &str, name: &str) -> Result<ScopeView> {
    let scope = load_scope(tx, org_id, name)?;
    let grants = tx.list_grants(org_id)?;
    view(tx, &scope, &grants)
}

fn load_scope(tx: &mut dyn Tx, org_id: &str, name: &str) -> Result<ScopeRecord> {
    tx.get_scope(org_id, name)?.ok_or_else(|| {
        Error::not_found(format!(
            "no scope {name:?} in the catalogue of organization {org_id}"
        ))
    })
}

/// The catalogue with its grants (org admin).
pub fn list(tx: &mut dyn Tx, actor: &Actor, org_id: &str) -> Result<ScopeList> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let grants = tx.list_grants(org_id)?;
    let mut scopes = Vec::new();
    for s in tx.list_scopes(org_id)? {
        scopes.push(view(tx, &s, &grants)?);
    }
    Ok(ScopeList { scopes })
}

/// The scopes the caller's tokens may carry, with their descriptions (the web page's
/// picker), or those of a user of the caller's organization for its admin.
pub fn granted(tx: &mut dyn Tx, actor: &Actor, who: Option<&str>) -> Result<GrantedScopes> {
    let user = match who.filter(|w| !w.is_empty()) {
        None => actor.user.clone(),
        Some(w) => {
            let u = match tx.get_user(w)? {
                Some(u) if u.org_id == actor.org.id => Some(u),
                _ => tx.find_user(&actor.org.id, w)?,
            }
            .ok_or_else(|| Error::not_found(format!("no user {w:?} in your organization")))?;
            if u.id != actor.user.id {
                policy::require_org_admin(actor, &actor.org, false)?;
            }
            u
        }
    };
    let mut scopes = Vec::new();
    for name in granted_to(tx, &user)? {
        let description = tx
            .get_scope(&user.org_id, &name)?
            .map(|s| s.description)
            .unwrap_or_default();
        scopes.push(GrantedScope { name, description });
    }
    Ok(GrantedScopes {
        user: user.username,
        scopes,
    })
}

pub fn create(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: CreateScope,
) -> Result<ScopeView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    check_scopes(std::slice::from_ref(&req.name)).map_err(|_| {
        Error::field(
            "name",
            "a scope is 1 to 200 printable ASCII characters without spaces, '\"' or '\\'",
        )
    })?;
    if req.name.is_empty() {
        return Err(Error::field("name", "must not be empty"));
    }
    check_text("description", &req.description, 2000, true)?;
    let record = ScopeRecord {
        org_id: org.id.clone(),
        name: req.name,
        description: req.description,
        builtin: false,
        created_at: ctx.now,
    };
    tx.insert_scope(&record).map_err(|e| match e {
        StoreError::Conflict(_) => Error::conflict(format!(
            "the catalogue already has a scope {:?}",
            record.name
        )),
        other => Error::from(other),
    })?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "scope.create",
        &record.name,
        json!({"description": record.description}),
    )?;
    one_view(tx, &org.id, &record.name)
}

pub fn update(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    name: &str,
    req: UpdateScope,
) -> Result<ScopeView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let mut record = load_scope(tx, &org.id, name)?;
    check_text("description", &req.description, 2000, true)?;
    record.description = req.description;
    tx.update_scope(&record)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "scope.update",
        name,
        json!({"description": record.description}),
    )?;
    one_view(tx, &org.id, name)
}

/// Removes a scope and its grants: every live token carrying it loses it at the edges.
pub fn delete(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    name: &str,
) -> Result<ScopeView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let before = one_view(tx, &org.id, name)?;
    if before.builtin {
        return Err(Error::conflict(format!(
            "{name} is built in and cannot be deleted; withdraw its grants instead"
        )));
    }
    tx.delete_scope(&org.id, name)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "scope.delete",
        name,
        json!({
            "roles": before.roles,
            "users": before.users.iter().map(|u| &u.id).collect::<Vec<_>>(),
        }),
    )?;
    grants_changed(tx, ctx, &org.id)?;
    Ok(before)
}

/// The grantee text of a request: exactly one of a role and a user of the organization.
fn grantee_of(tx: &mut dyn Tx, org_id: &str, g: &Grantee) -> Result<(String, serde_json::Value)> {
    match (&g.role, g.user.as_deref()) {
        (Some(role), None) => Ok((role_grantee(*role), json!({"role": role.as_str()}))),
        (None, Some(who)) => {
            let user = match tx.get_user(who)? {
                Some(u) if u.org_id == org_id => Some(u),
                _ => tx.find_user(org_id, who)?,
            }
            .ok_or_else(|| {
                Error::field("user", format!("no user {who:?} in organization {org_id}"))
            })?;
            Ok((user_grantee(&user.id), json!({"user": user.id})))
        }
        _ => Err(Error::field(
            "role",
            "give either role (admin, user, partner, readonly) or user, not both",
        )),
    }
}

/// Grants a scope to a role or to one user.
pub fn grant(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    name: &str,
    req: Grantee,
) -> Result<ScopeView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    // A grant lets the grantee's tokens carry the scope from any address and for as long
    // as the org allows, like the admin role: bound by the role only, so a token limited
    // by an IP filter or a short lifetime does not give it (issue 22).
    super::authority::require_unlimited(tx, actor, "grant", "a scope grant")?;
    load_scope(tx, &org.id, name)?;
    let (grantee, detail) = grantee_of(tx, &org.id, &req)?;
    let added = tx.insert_grant(&GrantRecord {
        org_id: org.id.clone(),
        scope: name.to_string(),
        grantee,
        created_at: ctx.now,
    })?;
    if added {
        audit(
            tx,
            ctx,
            &actor.user.id,
            &org.id,
            "scope.grant",
            name,
            detail,
        )?;
        // A grant may give back what the edges withdrew.
        grants_changed(tx, ctx, &org.id)?;
    }
    one_view(tx, &org.id, name)
}

/// Withdraws a scope from a role or one user: their live tokens lose it at the edges.
pub fn withdraw(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    name: &str,
    req: Grantee,
) -> Result<ScopeView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    load_scope(tx, &org.id, name)?;
    let (grantee, detail) = grantee_of(tx, &org.id, &req)?;
    if !tx.delete_grant(&org.id, name, &grantee)? {
        return Err(Error::conflict(format!(
            "{name} is not granted to {}",
            grantee.replace(':', " ")
        )));
    }
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "scope.withdraw",
        name,
        detail,
    )?;
    grants_changed(tx, ctx, &org.id)?;
    one_view(tx, &org.id, name)
}

/// What the edges must withdraw: for every live token with a status index, the scopes
/// it carries that its user is no longer granted (by role or by name).
pub fn withdrawn_scopes(tx: &mut dyn Tx, org_id: &str) -> Result<WithdrawnScopes> {
    let tokens = tx.live_unrevoked_tokens(&TokenScope::Org(org_id.to_string()))?;
    let mut granted: HashMap<String, Vec<String>> = HashMap::new();
    let mut entries: Vec<(String, u32)> = Vec::new();
    for t in tokens {
        let Some(idx) = t.status_idx.and_then(|i| u32::try_from(i).ok()) else {
            continue;
        };
        if t.scopes.is_empty() {
            continue;
        }
        if !granted.contains_key(&t.user_id) {
            let now = match tx.get_user(&t.user_id)? {
                Some(u) => granted_to(tx, &u)?,
                None => Vec::new(),
            };
            granted.insert(t.user_id.clone(), now);
        }
        let now = &granted[&t.user_id];
        for s in t.scopes.iter().filter(|s| !now.contains(s)) {
            entries.push((s.clone(), idx));
        }
    }
    Ok(WithdrawnScopes::from_entries(
        entries.iter().map(|(s, i)| (s.as_str(), *i)),
    ))
}

/// A change of grants (or of a role) changes what the edges withdraw: the org's
/// status-list version moves, so every edge fetches the list, and this with it.
pub(crate) fn grants_changed(tx: &mut dyn Tx, ctx: &Ctx, org_id: &str) -> Result<()> {
    let mut org = load_org(tx, org_id)?;
    org.status_version += 1;
    tx.update_org(&org)?;
    ctx.mark_edges_changed();
    Ok(())
}
