//! The API-token lifecycle: create (Pending), download once (Enabled), regenerate, edit,
//! enable and disable, revoke, revoke all, delete; and search.

use super::input::{
    check_ip_allow, check_scopes, check_text, optional_time, CreateToken, EditToken, Page,
    RevokeAll, SearchParams, Timestamp,
};
use super::keys::{mint, retire_jwt, set_status};
use super::views::{Deleted, Edited, Minted, RevokedAll, TokenPage, TokenView};
use super::{audit, authority, load_org, token_for, Ctx, Error, Result, DEFAULT_LIFETIME_DAYS};
use crate::crypto;
use crate::model::{status_value, Org, Role, Token, TokenStatus, User, LIFETIMES};
use crate::policy::{self, Action, Actor};
use crate::store::{StoreError, TokenQuery, TokenScope, TokenSort, Tx};
use serde_json::json;

fn resolve_user(tx: &mut dyn Tx, actor: &Actor, who: Option<&str>) -> Result<User> {
    match who {
        None => Ok(actor.user.clone()),
        Some(w) => {
            if let Some(u) = tx.get_user(w)? {
                return Ok(u);
            }
            tx.find_user(&actor.org.id, w)?
                .ok_or_else(|| Error::field("user", format!("no user {w:?}")))
        }
    }
}

fn expiry(
    ctx: &Ctx,
    org: &Org,
    lifetime_days: Option<i64>,
    expires_at: Option<Timestamp>,
) -> Result<(Option<i64>, i64)> {
    let max = org.max_lifetime_days * 86_400;
    match (lifetime_days, expires_at) {
        (Some(_), Some(_)) => Err(Error::field(
            "expires_at",
            "give either lifetime_days or expires_at",
        )),
        (None, Some(Timestamp(at))) => {
            if at <= ctx.now {
                Err(Error::field("expires_at", "must be in the future"))
            } else if at - ctx.now > max {
                Err(Error::field(
                    "expires_at",
                    format!(
                        "at most {} days from now (the org maximum)",
                        org.max_lifetime_days
                    ),
                ))
            } else {
                Ok((None, at))
            }
        }
        (days, None) => {
            let days = days.unwrap_or(DEFAULT_LIFETIME_DAYS.min(org.max_lifetime_days));
            if !LIFETIMES.contains(&days) {
                return Err(Error::field(
                    "lifetime_days",
                    format!(
                        "{days} days is not offered: choose {}, or give expires_at",
                        in_words(&LIFETIMES)
                    ),
                ));
            }
            if days > org.max_lifetime_days {
                return Err(Error::field(
                    "lifetime_days",
                    format!("the org maximum is {} days", org.max_lifetime_days),
                ));
            }
            Ok((Some(days), ctx.now + days * 86_400))
        }
    }
}

/// A token is made or enabled only for a user who may use it: not deleted, not disabled.
pub(crate) fn usable_owner(tx: &mut dyn Tx, owner: &User) -> Result<()> {
    let account = super::accounts::account_of(tx, &owner.id)?;
    if account.deleted_at.is_some() {
        return Err(Error::not_found(format!("no user {:?}", owner.id)));
    }
    if account.disabled_at.is_some() {
        return Err(Error::conflict(format!(
            "{} is disabled; enable the user first (that also enables the tokens disabling suspended)",
            owner.username
        )));
    }
    Ok(())
}

/// Inserts a new token; the store's unique index on (user, live name) decides duplicates,
/// so no search is needed.
fn insert_unique(tx: &mut dyn Tx, token: &Token, owner: &User) -> Result<()> {
    tx.insert_token(token)
        .map_err(|e| duplicate_name(e, owner, &token.name))
}

fn duplicate_name(e: StoreError, owner: &User, name: &str) -> Error {
    match e {
        StoreError::Conflict(_) => Error::conflict(format!(
            "{} already has a token named {name:?}",
            owner.username
        )),
        other => Error::from(other),
    }
}

/// Creates a Pending token for the caller or (with the authority to) another user.
pub fn create_token(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    req: CreateToken,
) -> Result<TokenView> {
    check_text("name", &req.name, 200, false)?;
    check_text("description", &req.description, 2000, true)?;
    let owner = resolve_user(tx, actor, req.user.as_deref())?;
    let org = load_org(tx, &owner.org_id)?;
    policy::check(actor, &owner, &org, Action::Create)?;
    usable_owner(tx, &owner)?;
    super::quotas::check_tokens(tx, ctx, &owner)?;
    let (mut lifetime_days, mut expires_at) = expiry(ctx, &org, req.lifetime_days, req.expires_at)?;
    if req.expires_at.is_none() {
        if let Some(at) = authority::clamp_preset(actor, expires_at, req.lifetime_days.is_some()) {
            (lifetime_days, expires_at) = (None, at);
        }
    }
    let not_before = req.not_before.map(|t| t.0);
    if not_before.is_some_and(|nb| nb >= expires_at) {
        return Err(Error::field("not_before", "must be before the expiry"));
    }
    let ip_allow = check_ip_allow(&req.ip_allow)?;
    let scopes = check_scopes(&req.scopes)?;
    super::scopes::check_granted(tx, &owner, &scopes)?;
    authority::bound_token(actor, &scopes, &ip_allow, expires_at)?;
    let token = Token {
        id: crypto::new_id("tok")?,
        org_id: org.id.clone(),
        user_id: owner.id.clone(),
        name: req.name,
        description: req.description,
        created_by: actor.user.id.clone(),
        created_at: ctx.now,
        lifetime_days,
        not_before,
        expires_at,
        ip_allow,
        scopes,
        enabled: req.enabled,
        revoked_at: None,
        deleted_at: None,
        minted_at: None,
        jwt_sha256: None,
        status_idx: None,
        kid: None,
        last_used_at: None,
        last_used_ip: None,
    };
    super::keys::check_mintable(tx, ctx, &org, &token)?;
    insert_unique(tx, &token, &owner)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "token.create",
        &token.id,
        json!({"user": owner.id, "name": token.name}),
    )?;
    super::limits::set_for_token(tx, ctx, actor, &org, &token.id, req.limits, true)?;
    Ok(TokenView::new(&token, &owner.username, ctx.now))
}

pub fn get_token(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> Result<TokenView> {
    let (token, owner, _) = token_for(tx, actor, id, Action::Read)?;
    Ok(TokenView::new(&token, &owner.username, ctx.now))
}

/// The largest page of a search.
pub const MAX_PER_PAGE: i64 = 500;
/// Rows fetched per store call while streaming an export.
pub const EXPORT_BATCH: i64 = 1_000;

/// The search the caller's filters describe, within what the caller may see (decided by
/// the caller's role, never by the client). No paging yet.
pub fn token_query(ctx: &Ctx, actor: &Actor, p: &SearchParams) -> Result<TokenQuery> {
    let scope = match actor.user.role {
        Role::Admin => TokenScope::Org(actor.org.id.clone()),
        Role::Partner => TokenScope::Partner {
            user_id: actor.user.id.clone(),
            partner_org_id: actor.org.id.clone(),
        },
        Role::User | Role::Readonly => TokenScope::User(actor.user.id.clone()),
    };
    // One status, or several separated by commas.
    let mut statuses = Vec::new();
    for s in p
        .status
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let st = TokenStatus::parse(s.trim()).ok_or_else(|| {
            Error::field(
                "status",
                "one or more (comma-separated) of pending, enabled, disabled, revoked, expired",
            )
        })?;
        if !statuses.contains(&st) {
            statuses.push(st);
        }
    }
    let expires_before = optional_time("expires_before", p.expires_before.as_deref())?;
    let expires_after = optional_time("expires_after", p.expires_after.as_deref())?;
    let sort_text = p
        .sort
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-created_at".into());
    let (descending, col) = match sort_text.strip_prefix('-') {
        Some(c) => (true, c),
        None => (false, sort_text.as_str()),
    };
    let sort = TokenSort::parse(col).ok_or_else(|| {
        Error::field(
            "sort",
            format!("one of {:?}, optionally prefixed by '-'", TokenSort::NAMES),
        )
    })?;
    if let Some(q) = &p.q {
        check_text("q", q, 200, true)?;
    }
    Ok(TokenQuery {
        scope,
        q: p.q.clone().filter(|s| !s.is_empty()),
        statuses,
        user: p.user.clone().filter(|s| !s.is_empty()),
        org: p.org.clone().filter(|s| !s.is_empty()),
        expires_before,
        expires_after,
        sort,
        descending,
        limit: 50,
        offset: 0,
        after: None,
        count: false,
        now: ctx.now,
    })
}

/// One page of the tokens the caller may see, matching the filters, with the total.
pub fn search(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, p: &SearchParams) -> Result<TokenPage> {
    let mut query = token_query(ctx, actor, p)?;
    let page = Page::parse(p.page, p.per_page, 50, MAX_PER_PAGE)?;
    if let Some(after) = p.after.as_deref().filter(|a| !a.is_empty()) {
        if page.page != 1 {
            return Err(Error::field(
                "page",
                "not with after (after chooses the page)",
            ));
        }
        query.after = Some(after.to_string());
    }
    // One row more than the page tells whether a next page exists.
    query.limit = page.per_page + 1;
    query.offset = page.offset();
    query.count = true;
    let mut found = tx.search_tokens(&query)?;
    let more = found.hits.len() as i64 > page.per_page;
    found.hits.truncate(page.per_page as usize);
    Ok(TokenPage {
        tokens: found
            .hits
            .iter()
            .map(|h| TokenView::new(&h.token, &h.username, ctx.now))
            .collect(),
        total: found.total.unwrap_or(0),
        page: page.page,
        per_page: page.per_page,
        next: if more {
            found.hits.last().map(|h| h.cursor.clone())
        } else {
            None
        },
    })
}

/// The next batch of an export: up to [`EXPORT_BATCH`] rows after `after` (a cursor from
/// the previous batch), in the query's order, and the cursor of the last row. Each batch
/// is its own short read, so an export of any size never holds the store.
pub fn export_batch(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    query: &TokenQuery,
    after: Option<String>,
) -> Result<(Vec<TokenView>, Option<String>)> {
    let mut q = query.clone();
    q.limit = EXPORT_BATCH;
    q.offset = 0;
    q.after = after;
    q.count = false;
    let found = tx.search_tokens(&q)?;
    let next = if found.hits.len() as i64 == EXPORT_BATCH {
        found.hits.last().map(|h| h.cursor.clone())
    } else {
        None
    };
    Ok((
        found
            .hits
            .iter()
            .map(|h| TokenView::new(&h.token, &h.username, ctx.now))
            .collect(),
        next,
    ))
}

/// Mints the token's JWT once. The owner only; the token becomes Enabled.
pub fn download(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> Result<Minted> {
    let (mut token, owner, mut org) = token_for(tx, actor, id, Action::Download)?;
    match token.status(ctx.now) {
        TokenStatus::Pending => {}
        TokenStatus::Enabled => {
            return Err(Error::conflict(
                "the token was already downloaded; regenerate it to get a new JWT",
            ))
        }
        s => return Err(Error::conflict(format!("the token is {}", s.as_str()))),
    }
    // A limited token never brings down a JWT stronger than itself: refused, naming the
    // field and the most it may be (download it with a session, or edit it first).
    authority::bound_token(actor, &token.scopes, &token.ip_allow, token.expires_at)?;
    let jwt = mint(tx, ctx, &mut org, &mut token)?;
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        "token.download",
        &token.id,
        json!({"status_idx": token.status_idx}),
    )?;
    Ok(Minted {
        jwt,
        token: TokenView::new(&token, &owner.username, ctx.now),
    })
}

/// Mints a new JWT for the same record; the previous one is revoked in the status list.
pub fn regenerate(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> Result<Minted> {
    let (mut token, owner, mut org) = token_for(tx, actor, id, Action::Regenerate)?;
    match token.status(ctx.now) {
        TokenStatus::Pending | TokenStatus::Enabled => {}
        s => return Err(Error::conflict(format!("the token is {}", s.as_str()))),
    }
    authority::bound_token(actor, &token.scopes, &token.ip_allow, token.expires_at)?;
    let old_idx = token.status_idx;
    // One org row for both status changes: the old JWT's entry revoked, the new one's taken.
    retire_jwt(ctx, tx, &mut org, &mut token)?;
    let jwt = mint(tx, ctx, &mut org, &mut token)?;
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        "token.regenerate",
        &token.id,
        json!({"old_status_idx": old_idx, "status_idx": token.status_idx}),
    )?;
    Ok(Minted {
        jwt,
        token: TokenView::new(&token, &owner.username, ctx.now),
    })
}

/// Marks the token revoked (keeping an earlier revocation time) and its JWT revoked in the
/// status list; the caller stores the record.
fn mark_revoked(tx: &mut dyn Tx, ctx: &Ctx, token: &mut Token) -> Result<()> {
    if token.revoked_at.is_none() {
        token.revoked_at = Some(ctx.now);
    }
    if let Some(idx) = token.status_idx {
        set_status(
            ctx,
            tx,
            &token.org_id,
            idx,
            status_value::REVOKED,
            &token.id,
        )?;
    }
    Ok(())
}

pub(crate) fn revoke_one(tx: &mut dyn Tx, ctx: &Ctx, token: &mut Token) -> Result<()> {
    mark_revoked(tx, ctx, token)?;
    Ok(tx.update_token(token)?)
}

/// Final: a revoked token never comes back.
pub fn revoke(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> Result<TokenView> {
    let (mut token, owner, _) = token_for(tx, actor, id, Action::Revoke)?;
    if token.revoked_at.is_some() {
        return Err(Error::conflict("the token is already revoked"));
    }
    revoke_one(tx, ctx, &mut token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        "token.revoke",
        &token.id,
        json!({}),
    )?;
    Ok(TokenView::new(&token, &owner.username, ctx.now))
}

pub fn revoke_all(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, req: RevokeAll) -> Result<RevokedAll> {
    let scope = match (&req.user, &req.org) {
        (Some(_), Some(_)) => return Err(Error::field("org", "give either user or org")),
        (None, None) => return Err(Error::field("user", "give user or org")),
        (Some(u), None) => {
            let owner = resolve_user(tx, actor, Some(u))?;
            let org = load_org(tx, &owner.org_id)?;
            policy::check(actor, &owner, &org, Action::RevokeAllOfUser)?;
            (TokenScope::User(owner.id), org.id)
        }
        (None, Some(o)) => {
            let org = load_org(tx, o)?;
            policy::require_org_admin(actor, &org, false)?;
            (TokenScope::Org(org.id.clone()), org.id)
        }
    };
    let mut ids = Vec::new();
    for mut t in tx.live_unrevoked_tokens(&scope.0)? {
        revoke_one(tx, ctx, &mut t)?;
        ids.push(t.id);
    }
    let target = match &scope.0 {
        TokenScope::User(u) => u.clone(),
        _ => scope.1.clone(),
    };
    audit(
        tx,
        ctx,
        &actor.user.id,
        &scope.1,
        "token.revoke_all",
        &target,
        json!({"revoked": ids}),
    )?;
    Ok(RevokedAll {
        revoked: ids.len(),
        ids,
    })
}

fn set_enabled(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    enabled: bool,
) -> Result<TokenView> {
    let action = if enabled {
        Action::Enable
    } else {
        Action::Disable
    };
    let (mut token, owner, _) = token_for(tx, actor, id, action)?;
    if token.revoked_at.is_some() {
        return Err(Error::conflict("the token is revoked; revocation is final"));
    }
    if enabled {
        usable_owner(tx, &owner)?;
        if !token.enabled && actor.user.id == owner.id && actor.user.role != Role::Admin {
            suspended_by_owner(tx, &token)?;
        }
    }
    apply_enabled(ctx, tx, &mut token, enabled)?;
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        if enabled {
            "token.enable"
        } else {
            "token.disable"
        },
        &token.id,
        json!({}),
    )?;
    Ok(TokenView::new(&token, &owner.username, ctx.now))
}

/// An owner enables again only a token they disabled themselves: a suspension by an admin
/// (the last `token.disable` of the token in the audit log was not the owner's) is lifted
/// by an admin, never by the person it was meant to stop.
fn suspended_by_owner(tx: &mut dyn Tx, token: &Token) -> Result<()> {
    let mut offset = 0;
    loop {
        let page = tx.list_audit(&token.org_id, Some(&token.id), 100, offset)?;
        if let Some(e) = page.iter().find(|e| e.action == "token.disable") {
            if e.actor == token.user_id {
                return Ok(());
            }
            let who = tx
                .get_user(&e.actor)?
                .map_or_else(|| e.actor.clone(), |u| u.username);
            return Err(Error::forbidden(format!(
                "{who} disabled this token; only an admin of the organization enables it again"
            )));
        }
        if page.len() < 100 {
            return Ok(());
        }
        offset += 100;
    }
}

/// Disabled is "suspended" in the status list: reversible, unlike revoked.
pub(crate) fn apply_enabled(
    ctx: &Ctx,
    tx: &mut dyn Tx,
    token: &mut Token,
    enabled: bool,
) -> Result<()> {
    if token.enabled != enabled {
        token.enabled = enabled;
        if let Some(idx) = token.status_idx {
            let v = if enabled {
                status_value::VALID
            } else {
                status_value::SUSPENDED
            };
            set_status(ctx, tx, &token.org_id, idx, v, &token.id)?;
        }
    }
    Ok(())
}

pub fn enable(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> Result<TokenView> {
    set_enabled(tx, ctx, actor, id, true)
}

pub fn disable(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> Result<TokenView> {
    set_enabled(tx, ctx, actor, id, false)
}

/// Changes fields. When a field that lives inside the JWT changes (expiry, not-before, IP
/// filter, scopes), the outstanding JWT is revoked and the token returns to Pending: its
/// owner downloads a new one.
pub fn edit(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str, req: EditToken) -> Result<Edited> {
    let (mut token, owner, org) = token_for(tx, actor, id, Action::Edit)?;
    if token.revoked_at.is_some() {
        return Err(Error::conflict("the token is revoked; revocation is final"));
    }
    let mut changed: Vec<&str> = Vec::new();
    let mut in_jwt = false;
    if let Some(name) = req.name {
        check_text("name", &name, 200, false)?;
        if name != token.name {
            token.name = name;
            changed.push("name");
        }
    }
    if let Some(d) = req.description {
        check_text("description", &d, 2000, true)?;
        if d != token.description {
            token.description = d;
            changed.push("description");
        }
    }
    if let Some(list) = req.ip_allow {
        let list = check_ip_allow(&list)?;
        if list != token.ip_allow {
            token.ip_allow = list;
            changed.push("ip_allow");
            in_jwt = true;
        }
    }
    if let Some(list) = req.scopes {
        let list = check_scopes(&list)?;
        if list != token.scopes {
            super::scopes::check_granted(tx, &owner, &list)?;
            token.scopes = list;
            changed.push("scopes");
            in_jwt = true;
        }
    }
    if req.expires_at.is_some() || req.lifetime_days.is_some() {
        let (mut days, mut at) = expiry(ctx, &org, req.lifetime_days, req.expires_at)?;
        if req.expires_at.is_none() {
            if let Some(clamped) = authority::clamp_preset(actor, at, true) {
                (days, at) = (None, clamped);
            }
        }
        if at != token.expires_at {
            token.lifetime_days = days;
            token.expires_at = at;
            changed.push("expires_at");
            in_jwt = true;
        }
    }
    if let Some(nb) = req.not_before {
        let nb = nb.map(|t| t.0);
        if nb != token.not_before {
            token.not_before = nb;
            changed.push("not_before");
            in_jwt = true;
        }
    }
    if token.not_before.is_some_and(|nb| nb >= token.expires_at) {
        return Err(Error::field("not_before", "must be before the expiry"));
    }
    if in_jwt {
        authority::bound_token(actor, &token.scopes, &token.ip_allow, token.expires_at)?;
        super::keys::check_mintable(tx, ctx, &org, &token)?;
    }
    if let Some(e) = req.enabled {
        if e != token.enabled {
            if e {
                usable_owner(tx, &owner)?;
            }
            changed.push("enabled");
        }
        apply_enabled(ctx, tx, &mut token, e)?;
    }
    if super::limits::set_for_token(tx, ctx, actor, &org, &token.id, req.limits, false)? {
        changed.push("limits");
    }
    // The org row read again: enabling or disabling above may have moved its list version.
    let jwt_revoked = in_jwt && {
        let mut org = load_org(tx, &token.org_id)?;
        retire_jwt(ctx, tx, &mut org, &mut token)?
    };
    tx.update_token(&token)
        .map_err(|e| duplicate_name(e, &owner, &token.name))?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        "token.edit",
        &token.id,
        json!({"changed": changed, "jwt_revoked": jwt_revoked}),
    )?;
    Ok(Edited {
        token: TokenView::new(&token, &owner.username, ctx.now),
        changed: changed.into_iter().map(str::to_string).collect(),
        jwt_revoked,
    })
}

/// Cannot be undone: the record disappears from lists, its JWT stays revoked.
pub fn delete(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> Result<Deleted> {
    let (mut token, _, _) = token_for(tx, actor, id, Action::Delete)?;
    mark_revoked(tx, ctx, &mut token)?;
    token.deleted_at = Some(ctx.now);
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        "token.delete",
        &token.id,
        json!({"name": token.name}),
    )?;
    Ok(Deleted {
        status: token.status(ctx.now).as_str().to_string(),
        id: token.id,
        deleted: true,
    })
}

/// `30, 60, 90, 180 or 365 days`.
fn in_words(days: &[i64]) -> String {
    let all: Vec<String> = days.iter().map(i64::to_string).collect();
    match all.split_last() {
        Some((last, [])) => format!("{last} days"),
        Some((last, rest)) => format!("{} or {last} days", rest.join(", ")),
        None => String::new(),
    }
}
