//! SCIM 2.0 provisioning (RFC 7643/7644) of an organization's users: the SCIM
//! credentials its admins create, the authentication of a SCIM request, and the
//! operations behind `/scim/v2/{org}/Users` and `/Groups`. The wire types are in
//! [`resource`]; the filter subset in [`filter`]; PATCH in [`patch`].
//!
//! A SCIM credential acts as the admin who created it and never beyond them: it is
//! refused as soon as that admin is no longer an enabled admin of the organization, and
//! manages only users of that organization. Deactivation (`active: false`) suspends every
//! token of the user (so every access token exchanged from them, whose status entry is
//! the parent's, and every token a partner holds for them by delegation, which are theirs
//! too) in the status list the edges poll, ends their sessions and voids their links;
//! re-activation restores none of the tokens (an admin enables each deliberately).
//! DELETE revokes every token (final).

pub mod filter;
pub mod patch;
pub mod resource;

use super::input::check_text;
use super::tokens::apply_enabled;
use super::{accounts, audit, load_org, Ctx, Error, Result};
use crate::crypto;
use crate::model::{Role, User};
use crate::policy::{self, Actor, Credential};
use crate::store::scim::{ScimCredential, ScimUser};
use crate::store::{TokenScope, Tx};
use crate::timefmt;
use resource::{
    Fault, GroupResource, ListResponse, Member, Meta, ScimUserResource, StoredAttrs, GROUP_SCHEMA,
    USER_SCHEMA,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// The prefix of a SCIM credential's secret (tells it from the other secrets).
pub const SECRET_PREFIX: &str = "tsc_";

/// A SCIM credential to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScimCredential {
    /// What the credential is for (the identity provider's name).
    pub name: String,
}

/// A new SCIM credential; the secret is shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScimCredentialCreated {
    pub id: String,
    pub org: String,
    pub name: String,
    /// The bearer secret the identity provider sends; only its SHA-256 is kept.
    pub secret: String,
    /// The SCIM base URL to give the identity provider.
    pub base_url: String,
}

/// A SCIM credential as listed (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScimCredentialView {
    pub id: String,
    pub org: String,
    pub name: String,
    /// The admin it acts as.
    pub created_by: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// An org's SCIM credentials.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScimCredentialList {
    pub credentials: Vec<ScimCredentialView>,
}

fn credential_view(c: ScimCredential) -> ScimCredentialView {
    ScimCredentialView {
        id: c.id,
        org: c.org_id,
        name: c.name,
        created_by: c.created_by,
        created_at: timefmt::format(c.created_at),
        revoked_at: c.revoked_at.map(timefmt::format),
        last_used_at: c.last_used_at.map(timefmt::format),
    }
}

/// The SCIM base URL of an organization.
pub fn base_url(ctx: &Ctx, org_id: &str) -> String {
    format!("{}/scim/v2/{org_id}", ctx.base_url)
}

/// Creates a SCIM credential acting as the caller, an admin of the org itself (not a
/// managing partner or root admin: the credential acts inside the org). It never expires,
/// so, like an edge credential, only a session or an unlimited token makes one.
pub fn create_credential(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: CreateScimCredential,
) -> Result<ScimCredentialCreated> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    check_text("name", &req.name, 200, false)?;
    super::authority::require_unlimited(tx, actor, "scim_credential", "a SCIM credential")?;
    let secret = format!(
        "{SECRET_PREFIX}{}",
        crypto::hex(&crypto::random_bytes::<32>()?)
    );
    let c = ScimCredential {
        id: crypto::new_id("scim")?,
        org_id: org.id.clone(),
        name: req.name,
        secret_sha256: crypto::sha256_hex(secret.as_bytes()),
        created_by: actor.user.id.clone(),
        created_at: ctx.now,
        revoked_at: None,
        last_used_at: None,
    };
    tx.insert_scim_credential(&c)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "scim_credential.create",
        &c.id,
        json!({"name": c.name}),
    )?;
    Ok(ScimCredentialCreated {
        id: c.id,
        org: org.id.clone(),
        name: c.name,
        secret,
        base_url: base_url(ctx, &org.id),
    })
}

pub fn list_credentials(
    tx: &mut dyn Tx,
    actor: &Actor,
    org_id: &str,
) -> Result<ScimCredentialList> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    Ok(ScimCredentialList {
        credentials: tx
            .list_scim_credentials(&org.id)?
            .into_iter()
            .map(credential_view)
            .collect(),
    })
}

/// Revokes a SCIM credential: its next request is refused (401).
pub fn revoke_credential(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    id: &str,
) -> Result<ScimCredentialView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let found = tx
        .get_scim_credential(id)?
        .filter(|c| c.org_id == org.id)
        .ok_or_else(|| Error::not_found(format!("no SCIM credential {id:?}")))?;
    if found.revoked_at.is_some() {
        return Err(Error::conflict("the SCIM credential is already revoked"));
    }
    tx.revoke_scim_credential(id, ctx.now)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "scim_credential.revoke",
        id,
        json!({"name": found.name}),
    )?;
    let c = tx
        .get_scim_credential(id)?
        .ok_or_else(|| Error::internal("revoked SCIM credential vanished"))?;
    Ok(credential_view(c))
}

/// The caller a SCIM secret speaks for, for a request to `org_id`'s SCIM base: the admin
/// who created the credential, acting with it. Refused (401) when the secret names no
/// credential of this org or a revoked one, or when its creator is no longer an enabled
/// admin of the org (a credential never outranks its creator).
pub fn authenticate(tx: &mut dyn Tx, org_id: &str, secret: &str) -> Result<Actor> {
    let unauthorized = |m: &str| Error::Unauthenticated(m.to_string());
    let c = tx
        .find_scim_credential(&crypto::sha256_hex(secret.as_bytes()))?
        .filter(|c| c.org_id == org_id)
        .ok_or_else(|| unauthorized("unknown SCIM credential for this organization"))?;
    if c.revoked_at.is_some() {
        return Err(unauthorized(&format!(
            "the SCIM credential {:?} was revoked; an admin of {org_id} can create a new one",
            c.name
        )));
    }
    let creator = tx
        .get_user(&c.created_by)?
        .ok_or_else(|| unauthorized("the SCIM credential's creator is gone"))?;
    let account = accounts::account_of(tx, &creator.id)?;
    if creator.org_id != org_id
        || creator.role != Role::Admin
        || account.disabled_at.is_some()
        || account.deleted_at.is_some()
    {
        return Err(unauthorized(&format!(
            "the admin who created the SCIM credential {:?} is no longer an enabled admin of {org_id}; an admin can create a new one",
            c.name
        )));
    }
    let org = load_org(tx, org_id)?;
    Ok(Actor {
        user: creator,
        org,
        token_id: String::new(),
        credential: Credential::Scim { id: c.id },
    })
}

/// Whether the SCIM credential the actor acts with is still usable (inside a write).
pub fn still_valid(tx: &mut dyn Tx, actor: &Actor) -> Result<()> {
    let Credential::Scim { id } = &actor.credential else {
        return Ok(());
    };
    let c = tx
        .get_scim_credential(id)?
        .ok_or_else(|| Error::Unauthenticated("unknown SCIM credential".into()))?;
    if c.revoked_at.is_some() {
        return Err(Error::Unauthenticated(
            "the SCIM credential was revoked".into(),
        ));
    }
    Ok(())
}

// ---- Users -----------------------------------------------------------------------------

/// The SCIM view of a user of the actor's org (not deleted).
struct Provisioned {
    user: User,
    scim: ScimUser,
    active: bool,
}

fn load_provisioned(
    tx: &mut dyn Tx,
    actor: &Actor,
    id: &str,
) -> std::result::Result<Provisioned, Fault> {
    let user = tx
        .get_user(id)?
        .filter(|u| u.org_id == actor.org.id)
        .ok_or_else(|| Fault::not_found(format!("no user {id:?}")))?;
    let account = accounts::account_of(tx, &user.id)?;
    if account.deleted_at.is_some() {
        return Err(Fault::not_found(format!("no user {id:?}")));
    }
    let scim = tx.get_scim_user(&user.id)?.unwrap_or_else(|| ScimUser {
        user_id: user.id.clone(),
        org_id: user.org_id.clone(),
        external_id: None,
        attrs: json!({}),
        version: 1,
        updated_at: user.created_at,
    });
    Ok(Provisioned {
        active: account.disabled_at.is_none(),
        user,
        scim,
    })
}

fn user_location(ctx: &Ctx, org_id: &str, id: &str) -> String {
    format!("{}/Users/{id}", base_url(ctx, org_id))
}

/// The ETag of a resource version.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

fn user_resource(ctx: &Ctx, p: &Provisioned) -> ScimUserResource {
    let attrs: StoredAttrs = serde_json::from_value(p.scim.attrs.clone()).unwrap_or_default();
    ScimUserResource {
        schemas: vec![USER_SCHEMA.to_string()],
        id: Some(p.user.id.clone()),
        external_id: p.scim.external_id.clone(),
        user_name: p.user.username.clone(),
        name: attrs.name,
        // A display name the provider never gave (derived from the name or userName) is
        // not shown as if it had.
        display_name: (!attrs.derived_display_name).then(|| p.user.display_name.clone()),
        emails: attrs.emails,
        active: (!(attrs.active_unset && p.active)).then_some(p.active),
        groups: vec![Member {
            value: p.user.role.as_str().to_string(),
            display: Some(p.user.role.as_str().to_string()),
            reference: Some(group_location(ctx, &p.user.org_id, p.user.role)),
        }],
        meta: Some(Meta {
            resource_type: "User".into(),
            created: timefmt::format(p.user.created_at),
            last_modified: timefmt::format(p.scim.updated_at.max(p.user.created_at)),
            location: user_location(ctx, &p.user.org_id, &p.user.id),
            version: etag(p.scim.version),
        }),
    }
}

/// A user resource with its version (for the ETag header).
pub struct Versioned<T> {
    pub resource: T,
    pub version: i64,
}

fn checked_user_name(name: &str) -> std::result::Result<(), Fault> {
    super::input::check_username("userName", name).map_err(|e| Fault::invalid_value(e.to_string()))
}

fn display_of(r: &ScimUserResource) -> String {
    if let Some(d) = r.display_name.as_ref().filter(|d| !d.trim().is_empty()) {
        return d.clone();
    }
    if let Some(n) = &r.name {
        if let Some(f) = n.formatted.as_ref().filter(|f| !f.trim().is_empty()) {
            return f.clone();
        }
        let joined = [n.given_name.as_deref(), n.family_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !joined.trim().is_empty() {
            return joined;
        }
    }
    r.user_name.clone()
}

fn stored_attrs(r: &ScimUserResource) -> serde_json::Value {
    serde_json::to_value(StoredAttrs {
        name: r.name.clone(),
        emails: r.emails.clone(),
        derived_display_name: r.display_name.as_ref().is_none_or(|d| d.trim().is_empty()),
        active_unset: r.active.is_none(),
    })
    .unwrap_or_else(|_| json!({}))
}

/// `POST /Users`: a new user of the org, role `user`, with no password (they sign in
/// through a link an admin issues, or single sign-on). `active: false` creates them
/// disabled.
pub fn create_user(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    req: ScimUserResource,
) -> std::result::Result<Versioned<ScimUserResource>, Fault> {
    checked_user_name(&req.user_name)?;
    let display_name = display_of(&req);
    check_text("displayName", &display_name, 200, false).map_err(Fault::from_invalid)?;
    if tx.find_user(&actor.org.id, &req.user_name)?.is_some() {
        return Err(Fault::uniqueness(format!(
            "a user with userName {:?} exists",
            req.user_name
        )));
    }
    super::quotas::check_users(tx, ctx, &actor.org)?;
    let user = User {
        id: crypto::new_id("usr")?,
        org_id: actor.org.id.clone(),
        username: req.user_name.clone(),
        display_name,
        role: Role::User,
        delegated: false,
        created_at: ctx.now,
    };
    tx.insert_user(&user)?;
    let scim = ScimUser {
        user_id: user.id.clone(),
        org_id: user.org_id.clone(),
        external_id: req.external_id.clone(),
        attrs: stored_attrs(&req),
        version: 1,
        updated_at: ctx.now,
    };
    tx.put_scim_user(&scim)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &user.org_id,
        "user.create",
        &user.id,
        json!({"role": user.role.as_str(), "via": "scim"}),
    )?;
    if req.active == Some(false) {
        deactivate(tx, ctx, actor, &user)?;
    }
    let p = load_provisioned(tx, actor, &user.id)?;
    Ok(Versioned {
        resource: user_resource(ctx, &p),
        version: p.scim.version,
    })
}

pub fn get_user(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
) -> std::result::Result<Versioned<ScimUserResource>, Fault> {
    let p = load_provisioned(tx, actor, id)?;
    Ok(Versioned {
        resource: user_resource(ctx, &p),
        version: p.scim.version,
    })
}

/// The largest page of a listing (`count` past it is lowered to it, RFC 7644 3.4.2.4).
pub const MAX_COUNT: usize = 1000;
const DEFAULT_COUNT: usize = 100;

/// Query parameters of a listing.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// A filter: `<attribute> eq <value>` (see the ServiceProviderConfig).
    pub filter: Option<String>,
    /// 1-based index of the first result (default 1).
    pub start_index: Option<i64>,
    /// Results per page (default 100, at most 1000).
    pub count: Option<i64>,
    /// Only these attributes (comma-separated), with `id`, `schemas` and `meta`.
    pub attributes: Option<String>,
    /// All attributes but these (comma-separated).
    pub excluded_attributes: Option<String>,
}

/// A `POST /.search` body (RFC 7644 3.4.3).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    #[serde(default)]
    pub schemas: Vec<String>,
    #[serde(default)]
    pub attributes: Vec<String>,
    #[serde(default)]
    pub excluded_attributes: Vec<String>,
    pub filter: Option<String>,
    pub start_index: Option<i64>,
    pub count: Option<i64>,
}

impl From<SearchRequest> for ListParams {
    fn from(r: SearchRequest) -> Self {
        let joined = |v: Vec<String>| (!v.is_empty()).then(|| v.join(","));
        ListParams {
            filter: r.filter,
            start_index: r.start_index,
            count: r.count,
            attributes: joined(r.attributes),
            excluded_attributes: joined(r.excluded_attributes),
        }
    }
}

fn page<T>(all: Vec<T>, p: &ListParams) -> ListResponse<T> {
    let start = p.start_index.unwrap_or(1).max(1);
    let count = p
        .count
        .map_or(DEFAULT_COUNT, |c| usize::try_from(c.max(0)).unwrap_or(0))
        .min(MAX_COUNT);
    let total = all.len();
    let items: Vec<T> = all
        .into_iter()
        .skip(usize::try_from(start - 1).unwrap_or(usize::MAX))
        .take(count)
        .collect();
    ListResponse::new(total, start, items)
}

pub fn list_users(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    p: &ListParams,
) -> std::result::Result<ListResponse<ScimUserResource>, Fault> {
    let f = p.filter.as_deref().map(filter::parse).transpose()?;
    Ok(page(user_resources(tx, ctx, actor, f.as_ref())?, p))
}

/// `POST /.search` at the SCIM root: users, then groups, that match, in one listing.
pub fn search_all(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    p: &ListParams,
) -> std::result::Result<ListResponse<serde_json::Value>, Fault> {
    let f = p.filter.as_deref().map(filter::parse).transpose()?;
    let mut all: Vec<serde_json::Value> = user_resources(tx, ctx, actor, f.as_ref())?
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect();
    all.extend(
        group_resources(tx, ctx, actor, f.as_ref())?
            .iter()
            .map(|g| serde_json::to_value(g).unwrap_or_default()),
    );
    Ok(page(all, p))
}

/// Every user of the org (not deleted) the filter matches, by username.
fn user_resources(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    f: Option<&filter::Filter>,
) -> std::result::Result<Vec<ScimUserResource>, Fault> {
    let accounts: std::collections::HashMap<String, crate::store::accounts::Account> = tx
        .org_accounts(&actor.org.id)?
        .into_iter()
        .map(|a| (a.user_id.clone(), a))
        .collect();
    let scim: std::collections::HashMap<String, ScimUser> = tx
        .list_scim_users(&actor.org.id)?
        .into_iter()
        .map(|s| (s.user_id.clone(), s))
        .collect();
    let mut out = Vec::new();
    for user in tx.list_users(&actor.org.id)? {
        let account = accounts.get(&user.id);
        if account.is_some_and(|a| a.deleted_at.is_some()) {
            continue;
        }
        let s = scim.get(&user.id).cloned().unwrap_or_else(|| ScimUser {
            user_id: user.id.clone(),
            org_id: user.org_id.clone(),
            external_id: None,
            attrs: json!({}),
            version: 1,
            updated_at: user.created_at,
        });
        let p = Provisioned {
            active: account.is_none_or(|a| a.disabled_at.is_none()),
            user,
            scim: s,
        };
        let r = user_resource(ctx, &p);
        if let Some(f) = f {
            if !f.matches(&serde_json::to_value(&r).unwrap_or_default()) {
                continue;
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// Checks `If-Match` against the resource's version (412 when it moved).
fn check_precondition(if_match: Option<&str>, version: i64) -> std::result::Result<(), Fault> {
    match if_match.map(str::trim) {
        None | Some("*") => Ok(()),
        Some(tags) => {
            let want = etag(version);
            let strong = format!("\"{version}\"");
            if tags
                .split(',')
                .map(str::trim)
                .any(|t| t == want || t == strong)
            {
                Ok(())
            } else {
                Err(Fault::new(
                    412,
                    None,
                    format!("the resource is at version {want}, not {tags}"),
                ))
            }
        }
    }
}

/// `PUT /Users/{id}`: the user becomes what the body says (userName, displayName, name,
/// emails, externalId, active).
pub fn replace_user(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    if_match: Option<&str>,
    req: ScimUserResource,
) -> std::result::Result<Versioned<ScimUserResource>, Fault> {
    let p = load_provisioned(tx, actor, id)?;
    check_precondition(if_match, p.scim.version)?;
    apply(tx, ctx, actor, p, req)
}

/// `PATCH /Users/{id}`: the operations applied to the current resource, then stored as
/// a replace.
pub fn patch_user(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    if_match: Option<&str>,
    req: patch::PatchOp,
) -> std::result::Result<Versioned<ScimUserResource>, Fault> {
    let p = load_provisioned(tx, actor, id)?;
    check_precondition(if_match, p.scim.version)?;
    let mut doc = serde_json::to_value(user_resource(ctx, &p)).map_err(Fault::internal)?;
    patch::apply(&mut doc, &req)?;
    // `active` unassigned leaves an enabled account as it is; a deprovisioned one stays
    // shown as such (an unassigned `active` would read as enabled).
    if !p.active && doc.get("active").is_none_or(serde_json::Value::is_null) {
        return Err(Fault::new(
            400,
            Some("mutability"),
            "active cannot be removed from a deprovisioned user; send active=true to provision them again".into(),
        ));
    }
    let next: ScimUserResource = serde_json::from_value(doc)
        .map_err(|e| Fault::invalid_value(format!("the patched user is not valid: {e}")))?;
    apply(tx, ctx, actor, p, next)
}

fn apply(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    p: Provisioned,
    req: ScimUserResource,
) -> std::result::Result<Versioned<ScimUserResource>, Fault> {
    if req.id.as_deref().is_some_and(|i| i != p.user.id) {
        return Err(Fault::new(
            400,
            Some("mutability"),
            "id is read-only".into(),
        ));
    }
    checked_user_name(&req.user_name)?;
    let mut user = p.user.clone();
    if req.user_name != user.username {
        if tx.find_user(&actor.org.id, &req.user_name)?.is_some() {
            return Err(Fault::uniqueness(format!(
                "a user with userName {:?} exists",
                req.user_name
            )));
        }
        user.username = req.user_name.clone();
    }
    let display_name = display_of(&req);
    check_text("displayName", &display_name, 200, false).map_err(Fault::from_invalid)?;
    user.display_name = display_name;
    if user.username != p.user.username {
        tx.rename_user(&user)?;
    }
    if user != p.user {
        tx.update_user(&user)?;
    }
    let attrs = stored_attrs(&req);
    let mut scim = p.scim.clone();
    let changed = user != p.user || attrs != scim.attrs || req.external_id != scim.external_id;
    scim.attrs = attrs;
    scim.external_id = req.external_id.clone();
    match req.active {
        Some(false) if p.active => deactivate(tx, ctx, actor, &user)?,
        Some(true) if !p.active => reactivate(tx, ctx, actor, &user)?,
        _ => {}
    }
    let moved = changed || req.active.is_some_and(|a| a != p.active);
    if moved || tx.get_scim_user(&user.id)?.is_none() {
        if moved {
            scim.version += 1;
            scim.updated_at = ctx.now;
        }
        tx.put_scim_user(&scim)?;
    }
    if changed {
        audit(
            tx,
            ctx,
            &actor.user.id,
            &user.org_id,
            "user.update",
            &user.id,
            json!({"username": user.username, "via": "scim"}),
        )?;
    }
    let p = load_provisioned(tx, actor, &user.id)?;
    Ok(Versioned {
        resource: user_resource(ctx, &p),
        version: p.scim.version,
    })
}

/// Refuses to deprovision the admin the credential acts as (the credential would stop
/// working with it) or the org's last enabled admin.
fn deprovisionable(tx: &mut dyn Tx, actor: &Actor, user: &User, change: &str) -> Result<()> {
    if user.id == actor.user.id {
        return Err(Error::forbidden(format!(
            "{} created this SCIM credential and cannot be {change} through it; have another admin create the credential",
            user.username
        )));
    }
    super::users::keep_an_admin(tx, user, change)
}

/// Deactivates: every enabled token of the user is suspended in its org's status list
/// (the edges refuse it, and every access token exchanged from it, on their next sync),
/// sessions end, links are voided. The suspended tokens are not remembered for a later
/// re-activation: it restores none of them.
fn deactivate(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, user: &User) -> Result<()> {
    deprovisionable(tx, actor, user, "deactivated")?;
    let mut account = accounts::account_of(tx, &user.id)?;
    let mut suspended = Vec::new();
    for mut t in tx.live_unrevoked_tokens(&TokenScope::User(user.id.clone()))? {
        if t.enabled {
            apply_enabled(ctx, tx, &mut t, false)?;
            tx.update_token(&t)?;
            suspended.push(t.id);
        }
    }
    account.disabled_at = Some(ctx.now);
    account.suspended_tokens.clear();
    tx.put_account(&account)?;
    tx.end_user_sessions(&user.id, ctx.now)?;
    tx.void_links(&user.id, None, ctx.now)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &user.org_id,
        "user.disable",
        &user.id,
        json!({"suspended": suspended, "via": "scim"}),
    )
}

/// Re-activates: the user may sign in again; their tokens stay suspended.
fn reactivate(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, user: &User) -> Result<()> {
    let mut account = accounts::account_of(tx, &user.id)?;
    account.disabled_at = None;
    account.suspended_tokens.clear();
    tx.put_account(&account)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &user.org_id,
        "user.enable",
        &user.id,
        json!({"resumed": [], "via": "scim"}),
    )
}

/// `DELETE /Users/{id}`: every token of the user revoked (final), sessions ended, links
/// voided, sign-in refused; the record stays for the logs, gone from SCIM and listings.
pub fn delete_user(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    if_match: Option<&str>,
) -> std::result::Result<(), Fault> {
    let p = load_provisioned(tx, actor, id)?;
    check_precondition(if_match, p.scim.version)?;
    let user = p.user;
    deprovisionable(tx, actor, &user, "deleted")?;
    accounts::erase_user(tx, ctx, actor, &user, json!({"via": "scim"}))?;
    Ok(())
}

// ---- Groups: one per role ---------------------------------------------------------------

fn group_location(ctx: &Ctx, org_id: &str, role: Role) -> String {
    format!("{}/Groups/{}", base_url(ctx, org_id), role.as_str())
}

/// The roles the org's users may hold (`partner` only in a partner organization).
fn roles_of(org: &crate::model::Org) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|r| *r != Role::Partner || org.is_partner)
        .collect()
}

fn role_of(org: &crate::model::Org, id: &str) -> std::result::Result<Role, Fault> {
    Role::parse(id)
        .filter(|r| roles_of(org).contains(r))
        .ok_or_else(|| {
            Fault::not_found(format!(
                "no group {id:?}; the groups are the roles {}",
                roles_of(org)
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

fn live_members(tx: &mut dyn Tx, org_id: &str) -> Result<Vec<User>> {
    let gone: std::collections::HashSet<String> = tx
        .org_accounts(org_id)?
        .into_iter()
        .filter(|a| a.deleted_at.is_some())
        .map(|a| a.user_id)
        .collect();
    Ok(tx
        .list_users(org_id)?
        .into_iter()
        .filter(|u| !gone.contains(&u.id))
        .collect())
}

fn group_resource(ctx: &Ctx, org: &crate::model::Org, role: Role, users: &[User]) -> GroupResource {
    let members: Vec<Member> = users
        .iter()
        .filter(|u| u.role == role)
        .map(|u| Member {
            value: u.id.clone(),
            display: Some(u.username.clone()),
            reference: Some(user_location(ctx, &org.id, &u.id)),
        })
        .collect();
    GroupResource {
        schemas: vec![GROUP_SCHEMA.to_string()],
        id: Some(role.as_str().to_string()),
        display_name: role.as_str().to_string(),
        members,
        meta: Some(Meta {
            resource_type: "Group".into(),
            created: timefmt::format(org.created_at),
            last_modified: timefmt::format(org.created_at),
            location: group_location(ctx, &org.id, role),
            version: String::new(),
        }),
    }
}

pub fn list_groups(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    p: &ListParams,
) -> std::result::Result<ListResponse<GroupResource>, Fault> {
    let f = p.filter.as_deref().map(filter::parse).transpose()?;
    Ok(page(group_resources(tx, ctx, actor, f.as_ref())?, p))
}

fn group_resources(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    f: Option<&filter::Filter>,
) -> std::result::Result<Vec<GroupResource>, Fault> {
    let users = live_members(tx, &actor.org.id)?;
    let mut out = Vec::new();
    for role in roles_of(&actor.org) {
        let g = group_resource(ctx, &actor.org, role, &users);
        if let Some(f) = f {
            if !f.matches(&serde_json::to_value(&g).unwrap_or_default()) {
                continue;
            }
        }
        out.push(g);
    }
    Ok(out)
}

pub fn get_group(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
) -> std::result::Result<GroupResource, Fault> {
    let role = role_of(&actor.org, id)?;
    let users = live_members(tx, &actor.org.id)?;
    Ok(group_resource(ctx, &actor.org, role, &users))
}

/// Gives `user` the role `role` (a user holds one role: joining a group leaves the other).
fn set_role(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    user_id: &str,
    role: Role,
) -> std::result::Result<(), Fault> {
    let mut user = tx
        .get_user(user_id)?
        .filter(|u| u.org_id == actor.org.id)
        .ok_or_else(|| {
            Fault::new(
                400,
                Some("invalidValue"),
                format!("no user {user_id:?} in this organization"),
            )
        })?;
    if accounts::account_of(tx, &user.id)?.deleted_at.is_some() {
        return Err(Fault::new(
            400,
            Some("invalidValue"),
            format!("no user {user_id:?} in this organization"),
        ));
    }
    if user.role == role {
        return Ok(());
    }
    if user.role == Role::Admin {
        if user.id == actor.user.id {
            return Err(Error::forbidden(format!(
                "{} created this SCIM credential and keeps the admin role while it is used",
                user.username
            ))
            .into());
        }
        super::users::keep_an_admin(tx, &user, "demoted")?;
    }
    user.role = role;
    tx.update_user(&user)?;
    if let Some(mut s) = tx.get_scim_user(&user.id)? {
        s.version += 1;
        s.updated_at = ctx.now;
        tx.put_scim_user(&s)?;
    }
    audit(
        tx,
        ctx,
        &actor.user.id,
        &user.org_id,
        "user.update",
        &user.id,
        json!({"role": role.as_str(), "delegated": user.delegated, "via": "scim"}),
    )?;
    Ok(())
}

/// `PATCH /Groups/{role}`: `add`/`replace`/`remove` of `members`. Adding a user gives them
/// the role; removing one from a role other than `user` gives them `user`; nobody is
/// removed from `user` (every user holds one role: add them to another group instead).
pub fn patch_group(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    req: patch::PatchOp,
) -> std::result::Result<GroupResource, Fault> {
    let role = role_of(&actor.org, id)?;
    let users = live_members(tx, &actor.org.id)?;
    let current = group_resource(ctx, &actor.org, role, &users);
    let mut doc = serde_json::to_value(&current).map_err(Fault::internal)?;
    patch::apply(&mut doc, &req)?;
    let next: GroupResource = serde_json::from_value(doc)
        .map_err(|e| Fault::invalid_value(format!("the patched group is not valid: {e}")))?;
    set_members(tx, ctx, actor, role, &current, next)
}

/// `PUT /Groups/{role}`: the members become the body's.
pub fn replace_group(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    req: GroupResource,
) -> std::result::Result<GroupResource, Fault> {
    let role = role_of(&actor.org, id)?;
    let users = live_members(tx, &actor.org.id)?;
    let current = group_resource(ctx, &actor.org, role, &users);
    set_members(tx, ctx, actor, role, &current, req)
}

fn set_members(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    role: Role,
    current: &GroupResource,
    next: GroupResource,
) -> std::result::Result<GroupResource, Fault> {
    if next.display_name != role.as_str() {
        return Err(Fault::new(
            400,
            Some("mutability"),
            format!("a group's displayName is its role, {:?}", role.as_str()),
        ));
    }
    let had: std::collections::HashSet<&str> =
        current.members.iter().map(|m| m.value.as_str()).collect();
    let has: std::collections::HashSet<&str> =
        next.members.iter().map(|m| m.value.as_str()).collect();
    for id in has.difference(&had) {
        set_role(tx, ctx, actor, id, role)?;
    }
    let mut left: Vec<&str> = had.difference(&has).copied().collect();
    left.sort_unstable();
    if !left.is_empty() && role == Role::User {
        return Err(Fault::new(
            400,
            Some("mutability"),
            "every user holds one role: add a member of the user group to another group instead of removing them".into(),
        ));
    }
    for id in left {
        set_role(tx, ctx, actor, id, Role::User)?;
    }
    let users = live_members(tx, &actor.org.id)?;
    Ok(group_resource(ctx, &actor.org, role, &users))
}
