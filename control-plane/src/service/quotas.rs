//! Quotas: how many tokens a user may hold, users an org may have, and customer
//! organizations a partner may manage. Each is set by `tessera serve` (flags below) and
//! checked inside the write that would exceed it, so replicas and concurrent requests
//! cannot overshoot. A refusal is 403 `quota_exceeded`, naming the holder, the count
//! and the way out.

use super::{Ctx, Error, Result};
use crate::model::{Org, User};
use crate::store::{TokenQuery, TokenScope, TokenSort, Tx};

/// Stable reason of a refusal.
pub const QUOTA_EXCEEDED: &str = "quota_exceeded";

/// The limits; the defaults are generous for people and tight for a script gone wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Tokens one user holds (any state but deleted): `--max-tokens-per-user`.
    pub tokens_per_user: i64,
    /// Users of one organization (deleted ones do not count): `--max-users-per-org`.
    pub users_per_org: i64,
    /// Customer organizations one partner manages: `--max-orgs-per-partner`.
    pub orgs_per_partner: i64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            tokens_per_user: 1000,
            users_per_org: 10_000,
            orgs_per_partner: 1000,
        }
    }
}

/// Refuses a new token for `owner` once they hold the most allowed.
pub fn check_tokens(tx: &mut dyn Tx, ctx: &Ctx, owner: &User) -> Result<()> {
    let max = ctx.quotas.tokens_per_user;
    let held = tx
        .search_tokens(&TokenQuery {
            scope: TokenScope::User(owner.id.clone()),
            q: None,
            statuses: Vec::new(),
            user: None,
            org: None,
            expires_before: None,
            expires_after: None,
            sort: TokenSort::CreatedAt,
            descending: false,
            limit: 1,
            offset: 0,
            after: None,
            count: true,
            now: ctx.now,
        })?
        .total
        .unwrap_or(0);
    if held >= max {
        return Err(Error::denied(
            QUOTA_EXCEEDED,
            format!(
                "{} already holds the most tokens one user may hold ({max}); delete tokens they no longer use first",
                owner.username
            ),
        ));
    }
    Ok(())
}

/// Refuses a new user of `org` once it has the most allowed.
pub fn check_users(tx: &mut dyn Tx, ctx: &Ctx, org: &Org) -> Result<()> {
    let max = ctx.quotas.users_per_org;
    let deleted = tx
        .org_accounts(&org.id)?
        .into_iter()
        .filter(|a| a.deleted_at.is_some())
        .count();
    let live = tx.list_users(&org.id)?.len().saturating_sub(deleted) as i64;
    if live >= max {
        return Err(Error::denied(
            QUOTA_EXCEEDED,
            format!(
                "{} already has the most users one organization may have ({max}); delete users who left first",
                org.name
            ),
        ));
    }
    Ok(())
}

/// Refuses a new customer organization of `partner` once it manages the most allowed.
pub fn check_orgs(tx: &mut dyn Tx, ctx: &Ctx, partner: &Org) -> Result<()> {
    let max = ctx.quotas.orgs_per_partner;
    let managed = tx.list_managed_orgs(&partner.id)?.len() as i64;
    if managed >= max {
        return Err(Error::denied(
            QUOTA_EXCEEDED,
            format!(
                "{} already manages the most organizations one partner may manage ({max})",
                partner.name
            ),
        ));
    }
    Ok(())
}
