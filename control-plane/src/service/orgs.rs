//! Bootstrap, organizations, key rotation and edge credentials.

use super::input::{
    check_org_id, check_text, check_username, CreateEdge, CreateOrg, RotateKey, UpdateOrg,
};
use super::keys::{mint, new_key};
use super::views::{EdgeCreated, KeyList, KeyRotated, KeyView};
use super::{audit, load_org, Ctx, Error, Result};
use crate::crypto;
use crate::model::{EdgeCredential, KeyAlg, Org, Role, Token, User};
use crate::policy::{self, Actor};
use crate::store::Tx;
use crate::timefmt;
use serde_json::json;

pub struct Bootstrapped {
    pub org: Org,
    pub user: User,
    pub token: Token,
    pub jwt: String,
    /// A one-time link for the admin to set a password and sign in to the web page.
    pub link: super::views::LinkView,
}

/// Creates the organization (the root one if it is the first) and its admin if missing,
/// and mints a one-time admin token. Run by the operator, with database access.
pub fn bootstrap(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    org_name: &str,
    admin: &str,
    alg: KeyAlg,
) -> Result<Bootstrapped> {
    bootstrap_scoped(tx, ctx, (org_id, org_name, admin, alg), &[])
}

/// [`bootstrap`], the admin's token carrying `scopes` besides the management scope (a
/// token it makes may carry only scopes it has); they are put in the org's scope
/// catalogue, granted to every role.
pub fn bootstrap_scoped(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    (org_id, org_name, admin, alg): (&str, &str, &str, KeyAlg),
    scopes: &[String],
) -> Result<Bootstrapped> {
    let mut scopes = super::input::check_scopes(scopes)?;
    if !scopes.iter().any(|s| s == super::authority::MANAGE_SCOPE) {
        scopes.insert(0, super::authority::MANAGE_SCOPE.to_string());
    }
    check_org_id("org", org_id)?;
    check_username("admin", admin)?;
    let org = match tx.get_org(org_id)? {
        Some(o) => o,
        None => create_by_operator(tx, ctx, "bootstrap", org_id, org_name, alg)?,
    };
    // The scopes named at bootstrap start the org's catalogue, granted to every role (the
    // org's admins narrow it later).
    super::scopes::seed_bootstrap(tx, org_id, &scopes, ctx.now)?;
    let user = match tx.find_user(org_id, admin)? {
        Some(u) if u.role == Role::Admin => u,
        Some(_) => {
            return Err(Error::conflict(format!(
                "user {admin} exists and is not an admin"
            )))
        }
        None => {
            let u = User {
                id: crypto::new_id("usr")?,
                org_id: org_id.to_string(),
                username: admin.to_string(),
                display_name: admin.to_string(),
                role: Role::Admin,
                delegated: false,
                created_at: ctx.now,
            };
            tx.insert_user(&u)?;
            audit(
                tx,
                ctx,
                "bootstrap",
                org_id,
                "user.create",
                &u.id,
                json!({"role": "admin"}),
            )?;
            u
        }
    };
    // The operator's credential lives as long as the org allows, so that the tokens it
    // makes may too (a token never makes one that outlives it).
    let days = org.max_lifetime_days;
    let mut token = Token {
        id: crypto::new_id("tok")?,
        org_id: org_id.to_string(),
        user_id: user.id.clone(),
        name: format!("bootstrap {}", timefmt::format(ctx.now)),
        description: "created by tessera admin bootstrap".into(),
        created_by: user.id.clone(),
        created_at: ctx.now,
        lifetime_days: crate::model::LIFETIMES.contains(&days).then_some(days),
        not_before: None,
        expires_at: ctx.now + days * 86_400,
        ip_allow: vec![],
        // The operator's first credential manages the control plane.
        scopes,
        enabled: true,
        revoked_at: None,
        deleted_at: None,
        minted_at: None,
        jwt_sha256: None,
        status_idx: None,
        kid: None,
        last_used_at: None,
        last_used_ip: None,
    };
    tx.insert_token(&token)?;
    let mut org = super::load_org(tx, org_id)?;
    let jwt = mint(tx, ctx, &mut org, &mut token)?;
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        "bootstrap",
        org_id,
        "token.bootstrap",
        &token.id,
        json!({"user": user.id}),
    )?;
    let org = load_org(tx, org_id)?;
    // The admin's way in to the web page: a one-time link to set a password.
    let link =
        super::accounts::issue_link(tx, ctx, &user, "bootstrap", super::accounts::RESET_SECS)?;
    Ok(Bootstrapped {
        org,
        user,
        token,
        jwt,
        link,
    })
}

/// Creates an organization made by the operator (`tessera admin bootstrap`, or the
/// first-run setup link, named by `by` in the audit log): the root one if it is the first.
/// Its catalogue holds the built-in scope, and it gets its first signing key. A setup
/// secret still open is voided first (which locks its row, so a setup in flight and a
/// bootstrap are ordered, and the later one sees the earlier one's organization).
pub(crate) fn create_by_operator(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    by: &str,
    org_id: &str,
    org_name: &str,
    alg: KeyAlg,
) -> Result<Org> {
    check_org_id("org", org_id)?;
    super::setup::void(tx, ctx)?;
    let is_root = tx.list_orgs()?.is_empty();
    let org = Org {
        id: org_id.to_string(),
        name: if org_name.is_empty() {
            org_id.to_string()
        } else {
            org_name.to_string()
        },
        partner_org_id: None,
        is_partner: is_root,
        is_root,
        max_lifetime_days: 365,
        audience: "tessera".into(),
        key_alg: alg,
        status_version: 0,
        next_status_idx: 0,
        created_at: ctx.now,
        owners_manage_tokens: true,
    };
    tx.insert_org(&org)?;
    super::scopes::seed_org(tx, org_id, ctx.now)?;
    new_key(tx, ctx, org_id, alg)?;
    audit(
        tx,
        ctx,
        by,
        org_id,
        "org.create",
        org_id,
        json!({"root": is_root}),
    )?;
    Ok(org)
}

/// The longest token lifetime any organization may allow, in days.
pub const MAX_LIFETIME_LIMIT: i64 = 400;

/// Changes an organization's name, its longest token lifetime or whether owners manage
/// their own tokens. Its own admins may rename it, shorten the lifetime and turn owners'
/// management on or off; lengthening the lifetime is for those who set it (root admins, and
/// the managing partner's admins for a customer), so an org never widens its own ceiling.
/// Tokens already issued keep their expiry; the new ceiling applies to new tokens and edits.
pub fn update_org(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: UpdateOrg,
) -> Result<Org> {
    let mut org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    let mut changed = serde_json::Map::new();
    if let Some(name) = req.name {
        check_text("name", &name, 200, false)?;
        if name != org.name {
            changed.insert("name".into(), json!({"from": org.name, "to": name}));
            org.name = name;
        }
    }
    if let Some(max) = req.max_lifetime_days {
        if !(1..=MAX_LIFETIME_LIMIT).contains(&max) {
            return Err(Error::field(
                "max_lifetime_days",
                format!("must be a whole number of days from 1 to {MAX_LIFETIME_LIMIT}, not {max}"),
            ));
        }
        let setter =
            actor.org.is_root || org.partner_org_id.as_deref() == Some(actor.org.id.as_str());
        if max > org.max_lifetime_days && !setter {
            return Err(Error::forbidden(format!(
                "only {} may lengthen this organization's token lifetime beyond {} days; you may shorten it",
                if org.partner_org_id.is_some() { "admins of its managing partner or the root organization" } else { "root admins" },
                org.max_lifetime_days
            )));
        }
        if max != org.max_lifetime_days {
            changed.insert(
                "max_lifetime_days".into(),
                json!({"from": org.max_lifetime_days, "to": max}),
            );
            org.max_lifetime_days = max;
        }
    }
    if let Some(on) = req.owners_manage_tokens {
        if on != org.owners_manage_tokens {
            changed.insert(
                "owners_manage_tokens".into(),
                json!({"from": org.owners_manage_tokens, "to": on}),
            );
            org.owners_manage_tokens = on;
        }
    }
    if !changed.is_empty() {
        tx.update_org(&org)?;
        audit(
            tx,
            ctx,
            &actor.user.id,
            org_id,
            "org.update",
            org_id,
            json!(changed),
        )?;
    }
    Ok(org)
}

pub fn create_org(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, req: CreateOrg) -> Result<Org> {
    check_org_id("id", &req.id)?;
    if actor.user.role != Role::Admin || !(actor.org.is_root || actor.org.is_partner) {
        return Err(Error::forbidden(
            "only admins of the root or a partner organization create organizations",
        ));
    }
    let managed_by = if actor.org.is_root {
        req.managed_by
    } else {
        // A partner admin creates customer organizations of their own partner org only.
        if req.partner {
            return Err(Error::forbidden(
                "only root admins create partner organizations",
            ));
        }
        match req.managed_by {
            Some(m) if m != actor.org.id => {
                return Err(Error::forbidden(
                    "partner admins create customer organizations of their own org",
                ))
            }
            _ => Some(actor.org.id.clone()),
        }
    };
    if let Some(m) = &managed_by {
        let p = tx
            .get_org(m)?
            .ok_or_else(|| Error::field("managed_by", format!("no organization {m:?}")))?;
        if !p.is_partner {
            return Err(Error::field(
                "managed_by",
                format!("{m} is not a partner organization"),
            ));
        }
        super::quotas::check_orgs(tx, ctx, &p)?;
    }
    let max = req.max_lifetime_days.unwrap_or(365);
    if !(1..=400).contains(&max) {
        return Err(Error::field(
            "max_lifetime_days",
            format!("must be a whole number of days from 1 to {MAX_LIFETIME_LIMIT}, not {max}"),
        ));
    }
    let name = req.name.unwrap_or_else(|| req.id.clone());
    check_text("name", &name, 200, false)?;
    let audience = req.audience.unwrap_or_else(|| "tessera".into());
    check_text("audience", &audience, 200, false)?;
    if tx.get_org(&req.id)?.is_some() {
        return Err(Error::conflict(format!("organization {} exists", req.id)));
    }
    let alg = req.key_alg.unwrap_or(KeyAlg::EdDSA);
    let org = Org {
        id: req.id,
        name,
        partner_org_id: managed_by,
        is_partner: req.partner,
        is_root: false,
        max_lifetime_days: max,
        audience,
        key_alg: alg,
        status_version: 0,
        next_status_idx: 0,
        created_at: ctx.now,
        owners_manage_tokens: true,
    };
    tx.insert_org(&org)?;
    super::scopes::seed_org(tx, &org.id, ctx.now)?;
    new_key(tx, ctx, &org.id, alg)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "org.create",
        &org.id,
        json!({"by_org": actor.org.id}),
    )?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &actor.org.id,
        "org.create",
        &org.id,
        json!({}),
    )?;
    Ok(org)
}

/// Organizations the caller may see: all for root admins, else their own and the customer
/// organizations their (partner) organization manages.
pub fn visible_orgs(tx: &mut dyn Tx, actor: &Actor) -> Result<Vec<Org>> {
    if actor.org.is_root && actor.user.role == Role::Admin {
        return Ok(tx.list_orgs()?);
    }
    let mut orgs = vec![actor.org.clone()];
    orgs.extend(tx.list_managed_orgs(&actor.org.id)?);
    orgs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(orgs)
}

/// One organization, if the caller may see it.
pub fn get_org(tx: &mut dyn Tx, actor: &Actor, id: &str) -> Result<Org> {
    let hidden = || Error::not_found(format!("no organization {id:?} visible to you"));
    let org = tx.get_org(id)?.ok_or_else(hidden)?;
    let visible = org.id == actor.org.id
        || (actor.org.is_root && actor.user.role == Role::Admin)
        || org.partner_org_id.as_deref() == Some(actor.org.id.as_str());
    if visible {
        Ok(org)
    } else {
        Err(hidden())
    }
}

/// Starts signing with a new key; the old one stays published until what it signed expires.
pub fn rotate_key(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: RotateKey,
) -> Result<KeyRotated> {
    let mut org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let mut retired = Vec::new();
    for mut k in tx.list_keys(org_id)? {
        if k.retired_at.is_none() {
            k.retired_at = Some(ctx.now);
            tx.update_key(&k)?;
            retired.push(k.kid);
        }
    }
    let alg = req.alg.unwrap_or(org.key_alg);
    org.key_alg = alg;
    tx.update_org(&org)?;
    let key = new_key(tx, ctx, org_id, alg)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        org_id,
        "key.rotate",
        &key.kid,
        json!({"retired": retired, "alg": alg.as_str()}),
    )?;
    Ok(KeyRotated {
        kid: key.kid,
        alg: alg.as_str().to_string(),
        retired,
    })
}

/// The org's signing keys for its admins (and its managers): the active one first, then
/// the retired ones still published, newest first. Keys no longer published are left out.
pub fn list_keys(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, org_id: &str) -> Result<KeyList> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    let mut keys: Vec<_> = tx
        .list_keys(org_id)?
        .into_iter()
        .filter(|k| k.retired_at.is_none() || k.last_exp > ctx.now)
        .collect();
    keys.sort_by_key(|k| (k.retired_at.is_some(), std::cmp::Reverse(k.created_at)));
    Ok(KeyList {
        keys: keys
            .into_iter()
            .map(|k| KeyView {
                active: k.retired_at.is_none(),
                alg: k.alg.as_str().to_string(),
                created_at: timefmt::format(k.created_at),
                retired_at: k.retired_at.map(timefmt::format),
                published_until: k.retired_at.map(|_| timefmt::format(k.last_exp)),
                kid: k.kid,
            })
            .collect(),
    })
}

/// An edge credential for `POST /v1/usage`; the secret is shown once, only its hash kept.
pub fn create_edge(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: CreateEdge,
) -> Result<EdgeCreated> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    check_text("name", &req.name, 200, false)?;
    super::authority::require_unlimited(tx, actor, "edge_credential", "an edge credential")?;
    let secret = format!("tse_{}", crypto::hex(&crypto::random_bytes::<32>()?));
    let edge = EdgeCredential {
        id: crypto::new_id("edge")?,
        org_id: org_id.to_string(),
        name: req.name,
        secret_sha256: crypto::sha256_hex(secret.as_bytes()),
        created_at: ctx.now,
    };
    tx.insert_edge(&edge)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        org_id,
        "edge.create",
        &edge.id,
        json!({"name": edge.name}),
    )?;
    Ok(EdgeCreated {
        id: edge.id,
        org: org_id.to_string(),
        name: edge.name,
        secret,
    })
}
