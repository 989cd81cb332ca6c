//! Users of an organization.

use super::input::{check_text, check_username, CreateUser, Page, PageParams, UpdateUser};
use super::views::UserView;
use super::{accounts, audit, authority, load_org, Ctx, Error, Result};
use crate::crypto;
use crate::model::{Role, User};
use crate::policy::{self, Actor};
use crate::store::accounts::Account;
use crate::store::Tx;
use serde_json::json;

/// Creates a user with a one-time invitation link (in the answer only).
pub fn create_user(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: CreateUser,
) -> Result<UserView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    check_username("username", &req.username)?;
    let display_name = req.display_name.unwrap_or_else(|| req.username.clone());
    check_text("display_name", &display_name, 200, false)?;
    if req.role == Role::Partner && !org.is_partner {
        return Err(Error::field(
            "role",
            "partner users belong to partner organizations",
        ));
    }
    let days = accounts::invite_days(req.invite_days)?;
    let email = match req.email.as_deref().map(str::trim) {
        Some(e) if !e.is_empty() => Some(super::mail::check_address("email", e)?),
        _ => None,
    };
    if ctx.mail && email.is_none() {
        return Err(Error::field(
            "email",
            "required: this server mails the invitation to the new user, and to nobody else; \
             give their address",
        ));
    }
    // The invitation sets a password: never through a limited token.
    authority::require_unlimited(
        tx,
        actor,
        "link",
        "the invitation link sets a password, which",
    )?;
    if tx.find_user(org_id, &req.username)?.is_some() {
        return Err(Error::conflict(format!(
            "user {} exists in {org_id}",
            req.username
        )));
    }
    super::quotas::check_users(tx, ctx, &org)?;
    // The org's own admins receive the invitation; its managers only while it has no
    // enabled admin (otherwise an admin of the org issues it: `reset_link`).
    let reaches = accounts::link_reaches(tx, actor, &org)?;
    let user = User {
        id: crypto::new_id("usr")?,
        org_id: org_id.to_string(),
        username: req.username,
        display_name,
        role: req.role,
        delegated: req.delegated,
        created_at: ctx.now,
    };
    tx.insert_user(&user)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        org_id,
        "user.create",
        &user.id,
        json!({"role": user.role.as_str(), "link": reaches && !ctx.mail, "mailed": ctx.mail}),
    )?;
    if let Some(e) = &email {
        super::mail::set_address(tx, ctx, &user, e)?;
    }
    // With mail, the invitation goes to the new user's address only, whoever creates them.
    if let (true, Some(to)) = (ctx.mail, &email) {
        let link = accounts::invite(tx, ctx, &user, Some(days))?;
        super::mail::mail_link(tx, ctx, &user, to, &link)?;
        let mut view = accounts::user_view(tx, &user)?;
        view.link_mailed_to = Some(to.clone());
        return Ok(view);
    }
    let link = if reaches {
        Some(accounts::invite(tx, ctx, &user, Some(days))?)
    } else {
        None
    };
    let mut view = accounts::user_view(tx, &user)?;
    view.link = link;
    Ok(view)
}

/// The org's admins that are neither disabled nor deleted.
pub(crate) fn enabled_admins(tx: &mut dyn Tx, org_id: &str) -> Result<Vec<User>> {
    let gone: std::collections::HashSet<String> = tx
        .org_accounts(org_id)?
        .into_iter()
        .filter(|a| a.disabled_at.is_some() || a.deleted_at.is_some())
        .map(|a| a.user_id)
        .collect();
    Ok(tx
        .list_users(org_id)?
        .into_iter()
        .filter(|u| u.role == Role::Admin && !gone.contains(&u.id))
        .collect())
}

/// Refuses (409) to take away the org's last enabled admin: demoted, disabled or deleted
/// (`change` says which).
pub(crate) fn keep_an_admin(tx: &mut dyn Tx, user: &User, change: &str) -> Result<()> {
    if user.role != Role::Admin {
        return Ok(());
    }
    let admins = enabled_admins(tx, &user.org_id)?;
    if admins.len() == 1 && admins[0].id == user.id {
        return Err(Error::conflict(format!(
            "{} is the last enabled admin of {} and cannot be {change}; make another user admin first",
            user.username, user.org_id
        )));
    }
    Ok(())
}

/// The largest page of the users listing.
pub const MAX_USERS_PAGE: i64 = 1000;

/// One page of the org's users that are not deleted (by username), with their account
/// state, and how many there are.
pub fn list_users(
    tx: &mut dyn Tx,
    actor: &Actor,
    org_id: &str,
    p: &PageParams,
) -> Result<(Vec<UserView>, i64, Page)> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    let page = Page::parse(p.page, p.per_page, 100, MAX_USERS_PAGE)?;
    let accounts: std::collections::HashMap<String, Account> = tx
        .org_accounts(org_id)?
        .into_iter()
        .map(|a| (a.user_id.clone(), a))
        .collect();
    let mut all = Vec::new();
    for u in tx.list_users(org_id)? {
        let account = accounts.get(&u.id).cloned().unwrap_or_else(|| Account {
            user_id: u.id.clone(),
            ..Account::default()
        });
        let state = accounts::state_of(tx, &account)?;
        if state == "deleted" {
            continue;
        }
        let mut v = UserView::new(&u);
        v.state = Some(state.to_string());
        all.push(v);
    }
    let total = i64::try_from(all.len()).unwrap_or(i64::MAX);
    let skip = usize::try_from(page.offset()).unwrap_or(usize::MAX);
    let take = usize::try_from(page.per_page).unwrap_or(0);
    Ok((all.into_iter().skip(skip).take(take).collect(), total, page))
}

pub fn get_user(tx: &mut dyn Tx, actor: &Actor, id: &str) -> Result<User> {
    let user = accounts::user_for(tx, actor, id)?;
    if user.id != actor.user.id {
        let org = load_org(tx, &user.org_id)?;
        policy::require_org_admin(actor, &org, true)?;
    }
    Ok(user)
}

/// Admins change anything; a user may change their own display name and delegation.
pub fn update_user(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    req: UpdateUser,
) -> Result<User> {
    let mut user = accounts::user_for(tx, actor, id)?;
    let org = load_org(tx, &user.org_id)?;
    let is_admin = policy::require_org_admin(actor, &org, true).is_ok();
    // Delegation is the customer's: the user, or an admin of their own org, gives or
    // withdraws it; the partner it is given to (or the root org) never can.
    if req.delegated.is_some_and(|d| d != user.delegated)
        && user.id != actor.user.id
        && policy::require_org_admin(actor, &org, false).is_err()
    {
        return Err(Error::forbidden(
            "delegation is given or withdrawn only by the user or an admin of their own organization",
        ));
    }
    if !is_admin && (user.id != actor.user.id || req.role.is_some()) {
        return Err(Error::forbidden(if user.id == actor.user.id {
            "only an org admin changes roles"
        } else {
            "you may change only your own user"
        }));
    }
    if let Some(name) = req.display_name {
        check_text("display_name", &name, 200, false)?;
        user.display_name = name;
    }
    if let Some(role) = req.role {
        if role == Role::Partner && !org.is_partner {
            return Err(Error::field(
                "role",
                "partner users belong to partner organizations",
            ));
        }
        if user.role == Role::Admin && role != Role::Admin {
            keep_an_admin(tx, &user, "demoted")?;
        }
        if role == Role::Admin && user.role != Role::Admin {
            // The user's password and sessions are bound only by the role.
            authority::require_unlimited(
                tx,
                actor,
                "role",
                "the admin role, with the user's password,",
            )?;
        }
        if user.role != role {
            // The role's grants go with it: the edges narrow the user's live tokens.
            super::scopes::grants_changed(tx, ctx, &user.org_id)?;
        }
        user.role = role;
    }
    if let Some(d) = req.delegated {
        user.delegated = d;
    }
    tx.update_user(&user)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &user.org_id,
        "user.update",
        &user.id,
        json!({"role": user.role.as_str(), "delegated": user.delegated}),
    )?;
    Ok(user)
}
