//! Usage reports from the edges, and the authentication and audit logs.

use super::input::{check_text, optional_time, AuditParams, LogParams, Page, UsageBatch};
use super::views::{AuditEntries, AuditEntryView, AuthEventView, AuthEvents, UsageAccepted};
use super::{load_org, token_for, Ctx, Error, Result};
use crate::crypto;
use crate::model::{AuthEvent, Role};
use crate::policy::{self, Action, Actor};
use crate::store::{AuthEventQuery, Tx};
use std::net::IpAddr;

/// Records edge usage events for tokens of the edge's org; allowed uses update last-used.
pub fn record_usage(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    edge_secret: &str,
    batch: UsageBatch,
) -> Result<UsageAccepted> {
    let edge = tx
        .find_edge_by_secret_hash(&crypto::sha256_hex(edge_secret.as_bytes()))?
        .ok_or_else(|| Error::Unauthenticated("unknown edge credential".into()))?;
    if batch.events.len() > 1000 {
        return Err(Error::field("events", "at most 1000 events per batch"));
    }
    let (mut accepted, mut unknown) = (0, Vec::new());
    for (n, e) in batch.events.into_iter().enumerate() {
        let f = |name: &str| format!("events[{n}].{name}");
        if e.at.0 > ctx.now + 300 {
            return Err(Error::field(&f("at"), "more than 5 minutes in the future"));
        }
        if e.outcome != "allow" && e.outcome != "deny" {
            return Err(Error::field(&f("outcome"), "allow or deny"));
        }
        let ip = match &e.ip {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| Error::field(&f("ip"), "not an IP address"))?
                    .to_string(),
            ),
            None => None,
        };
        for (name, v, max) in [
            ("reason", &e.reason, 100),
            ("method", &e.method, 20),
            ("path", &e.path, 2048),
        ] {
            if let Some(v) = v {
                check_text(&f(name), v, max, true)?;
            }
        }
        let record = e.parent.as_deref().unwrap_or(&e.token_id);
        let token = tx.get_token(record)?.filter(|t| t.org_id == edge.org_id);
        let Some(mut token) = token else {
            unknown.push(e.token_id);
            continue;
        };
        tx.insert_auth_event(&AuthEvent {
            id: 0,
            org_id: token.org_id.clone(),
            token_id: token.id.clone(),
            user_id: token.user_id.clone(),
            at: e.at.0,
            ip: ip.clone(),
            outcome: e.outcome.clone(),
            reason: e.reason,
            method: e.method,
            path: e.path,
            source: format!("edge:{}", edge.id),
        })?;
        if e.outcome == "allow" && token.last_used_at.is_none_or(|l| l < e.at.0) {
            token.last_used_at = Some(e.at.0);
            token.last_used_ip = ip;
            tx.update_token(&token)?;
        }
        accepted += 1;
    }
    Ok(UsageAccepted {
        accepted,
        unknown_tokens: unknown,
    })
}

/// The largest page of a log listing.
pub const MAX_LOG_PAGE: i64 = 1000;

fn log_query(p: &LogParams) -> Result<AuthEventQuery> {
    if let Some(o) = p.outcome.as_deref().filter(|s| !s.is_empty()) {
        if o != "allow" && o != "deny" {
            return Err(Error::field("outcome", "allow or deny"));
        }
    }
    let page = Page::parse(p.page, p.per_page, 100, MAX_LOG_PAGE)?;
    Ok(AuthEventQuery {
        org_id: None,
        token_id: p.token.clone().filter(|s| !s.is_empty()),
        user_id: p.user.clone().filter(|s| !s.is_empty()),
        outcome: p.outcome.clone().filter(|s| !s.is_empty()),
        since: optional_time("since", p.since.as_deref())?,
        until: optional_time("until", p.until.as_deref())?,
        limit: page.per_page,
        offset: page.offset(),
    })
}

fn events(tx: &mut dyn Tx, q: &AuthEventQuery) -> Result<AuthEvents> {
    Ok(AuthEvents {
        events: tx
            .list_auth_events(q)?
            .iter()
            .map(AuthEventView::new)
            .collect(),
    })
}

/// The authentication log of one token.
pub fn token_auth_log(
    tx: &mut dyn Tx,
    actor: &Actor,
    id: &str,
    p: &LogParams,
) -> Result<AuthEvents> {
    let (token, _, _) = token_for(tx, actor, id, Action::ReadAuthLog)?;
    let mut q = log_query(p)?;
    q.token_id = Some(token.id);
    events(tx, &q)
}

/// All of the caller's tokens; an admin sees the whole org.
pub fn auth_log(tx: &mut dyn Tx, actor: &Actor, p: &LogParams) -> Result<AuthEvents> {
    let mut q = log_query(p)?;
    q.org_id = Some(actor.org.id.clone());
    if actor.user.role != Role::Admin {
        if q.user_id.as_deref().is_some_and(|u| u != actor.user.id) {
            return Err(Error::forbidden(format!(
                "the {} role reads only its own log",
                actor.user.role.as_str()
            )));
        }
        q.user_id = Some(actor.user.id.clone());
    }
    events(tx, &q)
}

/// The audit log of an org: its own admins only (not the partner or root admins
/// managing it).
pub fn audit_log(tx: &mut dyn Tx, actor: &Actor, p: &AuditParams) -> Result<AuditEntries> {
    let org_id = p.org.clone().unwrap_or_else(|| actor.org.id.clone());
    let org = load_org(tx, &org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let page = Page::parse(p.page, p.per_page, 100, MAX_LOG_PAGE)?;
    Ok(AuditEntries {
        entries: tx
            .list_audit(&org_id, p.target.as_deref(), page.per_page, page.offset())?
            .into_iter()
            .map(AuditEntryView::new)
            .collect(),
    })
}
