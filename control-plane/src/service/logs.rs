//! Usage reports from the edges, and the authentication and audit logs.

use super::input::{
    check_text, optional_time, AuditParams, LogParams, Page, UsageBatch, UsageOutcome,
};
use super::views::{
    AuditEntries, AuditEntryView, AuthEventView, AuthEvents, TokenUsage, UsageAccepted,
    UsageNetwork, UsagePoint,
};
use super::{load_org, token_for, Ctx, Error, Result, SKEW};
use crate::crypto;
use crate::model::{AuthEvent, Role};
use crate::policy::{self, Action, Actor};
use crate::store::{AuthEventQuery, Tx};
use std::collections::HashMap;
use std::net::IpAddr;

/// Records edge usage events for tokens of the edge's org; allowed uses update last-used.
/// The edge credential a secret names (not revoked).
pub(crate) fn edge_of(tx: &mut dyn Tx, secret: &str) -> Result<crate::model::EdgeCredential> {
    let hash = crypto::sha256_hex(secret.as_bytes());
    if let Some(edge) = tx.find_edge_by_secret_hash(&hash)? {
        return Ok(edge);
    }
    // A revoked credential keeps its hash behind a prefix no SHA-256 hex has.
    Err(Error::Unauthenticated(
        match tx.find_edge_by_secret_hash(&format!("revoked:{hash}"))? {
            Some(e) => format!(
                "the edge credential {:?} of {} was revoked; an admin of {} can create a new one",
                e.name, e.org_id, e.org_id
            ),
            None => "unknown edge credential".into(),
        },
    ))
}

/// The id of the edge credential a secret names, which must be one of `org`'s (an
/// organization's edges poll that organization's list).
pub fn edge_for_org(tx: &mut dyn Tx, secret: &str, org: &str) -> Result<String> {
    let edge = edge_of(tx, secret)?;
    if edge.org_id != org {
        return Err(Error::Unauthenticated(format!(
            "this edge credential is not one of {org}'s"
        )));
    }
    Ok(edge.id)
}

pub fn record_usage(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    edge_secret: &str,
    batch: UsageBatch,
) -> Result<UsageAccepted> {
    let edge = edge_of(tx, edge_secret)?;
    let spend = batch.spend.clone();
    if batch.events.len() > 1000 {
        return Err(Error::field("events", "at most 1000 events per batch"));
    }
    let (mut accepted, mut unknown) = (0, Vec::new());
    // Each token is read once per batch (its last use kept current here), and the
    // events are written together at the end (one multi-row insert on PostgreSQL).
    let mut tokens: std::collections::HashMap<String, Option<crate::model::Token>> =
        std::collections::HashMap::new();
    // Read (and, on PostgreSQL, lock) the batch's tokens in one global order, so that
    // concurrent batches naming the same tokens wait for each other instead of deadlocking.
    let mut named: Vec<&str> = batch
        .events
        .iter()
        .map(|e| e.parent.as_deref().unwrap_or(&e.token_id))
        .collect();
    named.sort_unstable();
    named.dedup();
    for id in named {
        let t = tx.get_token(id)?.filter(|t| t.org_id == edge.org_id);
        tokens.insert(id.to_string(), t);
    }
    let mut events = Vec::with_capacity(batch.events.len());
    // First uses (for rotations' grace) and refusals as `rotated` (possible leaks).
    let (mut first_uses, mut rotated) = (Vec::new(), Vec::new());
    // Allowed uses with their addresses (new networks).
    let mut sightings = Vec::new();
    for (n, e) in batch.events.into_iter().enumerate() {
        let f = |name: &str| format!("events[{n}].{name}");
        let at = match i64::try_from(e.at) {
            Ok(at) if at <= ctx.now + SKEW => at,
            _ => {
                return Err(Error::field(
                    &f("at"),
                    format!("more than {SKEW} s in the future"),
                ))
            }
        };
        let addr = match &e.ip {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| Error::field(&f("ip"), "not an IP address"))?,
            ),
            None => None,
        };
        let ip = addr.map(|a| a.to_string());
        if let Some(reason) = &e.reason {
            check_text(&f("reason"), reason, 100, true)?;
        }
        check_text(&f("method"), &e.method, 20, true)?;
        check_text(
            &f("path"),
            &e.path,
            tessera_core::plan::MAX_USAGE_PATH,
            true,
        )?;
        let record = e.parent.as_deref().unwrap_or(&e.token_id);
        let Some(token) = tokens.get_mut(record).and_then(Option::as_mut) else {
            unknown.push(e.token_id);
            continue;
        };
        events.push(AuthEvent {
            id: 0,
            org_id: token.org_id.clone(),
            token_id: token.id.clone(),
            user_id: token.user_id.clone(),
            at,
            ip: ip.clone(),
            outcome: e.outcome.as_str().to_string(),
            reason: e.reason.map(|r| r.into_owned()),
            method: Some(e.method),
            path: Some(e.path),
            source: format!("edge:{}", edge.id),
        });
        // Last use: only what a usable JWT did (never a pending, revoked or deleted
        // token's), and never later than now, so that an edge's clock ahead of ours cannot
        // hide the real uses that follow.
        let at = at.min(ctx.now);
        let usable = token.deleted_at.is_none()
            && token.jwt_sha256.is_some()
            && used_before_revoke(at, token.revoked_at);
        if let (UsageOutcome::Allow, true, Some(addr)) = (e.outcome, usable, addr) {
            sightings.push(super::notifications::Sighting {
                token_id: token.id.clone(),
                org_id: token.org_id.clone(),
                ip: addr,
                at,
            });
        }
        if e.outcome == UsageOutcome::Allow && usable && token.last_used_at.is_none_or(|l| l < at) {
            if token.last_used_at.is_none() {
                // A token's first use: if it is a rotation's successor, the grace starts.
                first_uses.push((token.id.clone(), at));
            }
            tx.set_last_used(&token.id, at, ip.as_deref())?;
            token.last_used_at = Some(at);
            token.last_used_ip = ip;
        } else if e.outcome == UsageOutcome::Deny
            && events.last().and_then(|ev| ev.reason.as_deref()) == Some(ROTATED)
        {
            rotated.push((token.id.clone(), at, ip));
        }
        accepted += 1;
    }
    tx.insert_auth_events(&events)?;
    let granted = match &spend {
        Some(report) => Some(super::leases::grant(
            tx,
            ctx,
            &edge.org_id,
            &edge.id,
            report,
        )?),
        None => None,
    };
    super::notifications::networks_seen(tx, ctx, &edge, &sightings)?;
    for (id, at) in first_uses {
        super::rotation::successor_used(tx, ctx, &id, at)?;
    }
    let source = format!("edge:{}", edge.id);
    for (id, at, ip) in rotated {
        super::rotation::presented_after_end(tx, ctx, &id, at, ip.as_deref(), &source)?;
    }
    let (leases, unlimited, limited, edges) = match granted {
        Some(g) => (g.leases, g.unlimited, Some(g.limited), Some(g.edges)),
        None => (Vec::new(), Vec::new(), None, None),
    };
    Ok(UsageAccepted {
        accepted,
        unknown_tokens: unknown,
        leases,
        unlimited,
        limited,
        edges,
    })
}

/// The largest page of a log listing.
pub const MAX_LOG_PAGE: i64 = 1000;

fn log_query(p: &LogParams) -> Result<(AuthEventQuery, Page)> {
    if let Some(o) = p.outcome.as_deref().filter(|s| !s.is_empty()) {
        if o != "allow" && o != "deny" {
            return Err(Error::field("outcome", "allow or deny"));
        }
    }
    let page = Page::parse(p.page, p.per_page, 100, MAX_LOG_PAGE)?;
    let since = optional_time("since", p.since.as_deref())?;
    let until = optional_time("until", p.until.as_deref())?;
    if let (Some(a), Some(b)) = (since, until) {
        if a > b {
            return Err(Error::field(
                "until",
                format!(
                    "{} is before since ({}): nothing can match; swap them",
                    crate::timefmt::format(b),
                    crate::timefmt::format(a)
                ),
            ));
        }
    }
    let q = AuthEventQuery {
        org_id: None,
        token_id: p.token.clone().filter(|s| !s.is_empty()),
        user_id: p.user.clone().filter(|s| !s.is_empty()),
        outcome: p.outcome.clone().filter(|s| !s.is_empty()),
        since,
        until,
        limit: page.per_page,
        offset: page.offset(),
    };
    Ok((q, page))
}

/// The names of the users and tokens a page of a log refers to, each read once.
#[derive(Default)]
struct Names {
    users: HashMap<String, Option<String>>,
    tokens: HashMap<String, Option<String>>,
}

impl Names {
    fn user(&mut self, tx: &mut dyn Tx, id: &str) -> Result<Option<String>> {
        if let Some(n) = self.users.get(id) {
            return Ok(n.clone());
        }
        let name = tx
            .get_user(id)?
            .map(|u| super::accounts::shown_username(&u.username));
        self.users.insert(id.to_string(), name.clone());
        Ok(name)
    }

    fn token(&mut self, tx: &mut dyn Tx, id: &str) -> Result<Option<String>> {
        if let Some(n) = self.tokens.get(id) {
            return Ok(n.clone());
        }
        let name = tx.get_token(id)?.map(|t| t.name);
        self.tokens.insert(id.to_string(), name.clone());
        Ok(name)
    }

    /// The name of whatever an audit entry's target id names (by its prefix).
    fn any(&mut self, tx: &mut dyn Tx, id: &str) -> Result<Option<String>> {
        if id.starts_with("usr_") {
            self.user(tx, id)
        } else if id.starts_with("tok_") {
            self.token(tx, id)
        } else {
            Ok(None)
        }
    }
}

fn events(tx: &mut dyn Tx, q: &AuthEventQuery, page: Page) -> Result<AuthEvents> {
    let mut names = Names::default();
    let mut views = Vec::new();
    for e in tx.list_auth_events(q)? {
        let mut v = AuthEventView::new(&e);
        v.username = names.user(tx, &e.user_id)?;
        v.token_name = names.token(tx, &e.token_id)?;
        views.push(v);
    }
    Ok(AuthEvents {
        events: views,
        total: tx.count_auth_events(q)?,
        page: page.page,
        per_page: page.per_page,
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
    let (mut q, page) = log_query(p)?;
    q.token_id = Some(token.id);
    events(tx, &q, page)
}

/// Which slices a token's usage is counted in (`GET /v1/tokens/{id}/usage`).
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// `hour` (default) or `day`.
    #[serde(default)]
    pub bucket: Option<String>,
    /// How many slices back from now: hours 1 to 744 (default 48), days 1 to 400 (default
    /// 30).
    #[serde(default)]
    pub buckets: Option<i64>,
}

/// Most networks listed in a token's usage.
const MAX_NETWORKS: usize = 50;

/// A token's uses per hour or day over a window ending now, allowed and refused, with the
/// networks they came from (whoever may read the token's authentication log).
pub fn token_usage(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    p: &UsageParams,
) -> Result<TokenUsage> {
    let (token, _, _) = token_for(tx, actor, id, Action::ReadAuthLog)?;
    let (bucket, secs, default, max) = match p.bucket.as_deref().unwrap_or("hour") {
        "hour" => ("hour", 3_600, 48, 744),
        "day" => ("day", 86_400, 30, 400),
        other => {
            return Err(Error::field(
                "bucket",
                format!("hour or day, not {other:?}"),
            ))
        }
    };
    let n = p.buckets.unwrap_or(default);
    if !(1..=max).contains(&n) {
        return Err(Error::field(
            "buckets",
            format!("a whole number of {bucket}s from 1 to {max}, not {n}"),
        ));
    }
    // Slices aligned on the hour or the (UTC) day; the last one holds now.
    let until = (ctx.now / secs + 1) * secs;
    let since = until - n * secs;
    let q = AuthEventQuery {
        token_id: Some(token.id.clone()),
        since: Some(since),
        until: Some(until),
        limit: 1_000,
        ..AuthEventQuery::default()
    };
    let mut series: Vec<UsagePoint> = (0..n)
        .map(|i| UsagePoint {
            start: crate::timefmt::format(since + i * secs),
            allowed: 0,
            refused: 0,
        })
        .collect();
    let (mut allowed, mut refused) = (0, 0);
    for (start, outcome, count) in tx.auth_event_buckets(&q, secs)? {
        let Some(point) = usize::try_from((start - since) / secs)
            .ok()
            .and_then(|i| series.get_mut(i))
        else {
            continue;
        };
        if outcome == "allow" {
            point.allowed += count;
            allowed += count;
        } else {
            point.refused += count;
            refused += count;
        }
    }
    let mut nets: HashMap<String, (i64, i64)> = HashMap::new();
    for (ip, count, last) in tx.auth_event_addresses(&q)? {
        let net = ip
            .as_deref()
            .and_then(|i| i.parse::<IpAddr>().ok())
            .map_or_else(|| "unknown".to_string(), super::notifications::network_of);
        let e = nets.entry(net).or_insert((0, last));
        e.0 += count;
        e.1 = e.1.max(last);
    }
    let mut networks: Vec<(String, (i64, i64))> = nets.into_iter().collect();
    networks.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
    networks.truncate(MAX_NETWORKS);
    Ok(TokenUsage {
        token: token.id,
        name: token.name,
        bucket: bucket.to_string(),
        since: crate::timefmt::format(since),
        until: crate::timefmt::format(until),
        series,
        allowed,
        refused,
        networks: networks
            .into_iter()
            .map(|(network, (uses, last))| UsageNetwork {
                network,
                uses,
                last_used_at: crate::timefmt::format(last),
            })
            .collect(),
    })
}

/// All of the caller's tokens; an admin sees the whole org.
pub fn auth_log(tx: &mut dyn Tx, actor: &Actor, p: &LogParams) -> Result<AuthEvents> {
    let (mut q, page) = log_query(p)?;
    q.org_id = Some(actor.org.id.clone());
    // `user` is an id or a username of the caller's organization, as the page and the
    // CLI show them; a username names its id here (a user of no org matches nothing).
    if let Some(named) = q.user_id.clone() {
        if named == actor.user.username {
            q.user_id = Some(actor.user.id.clone());
        } else if let Some(u) = tx.find_user(&actor.org.id, &named)? {
            q.user_id = Some(u.id);
        }
    }
    if actor.user.role != Role::Admin {
        if q.user_id.as_deref().is_some_and(|u| u != actor.user.id) {
            return Err(Error::forbidden(format!(
                "the {} role reads only its own log",
                actor.user.role.as_str()
            )));
        }
        q.user_id = Some(actor.user.id.clone());
    }
    events(tx, &q, page)
}

/// The audit log of an org: its own admins only (not the partner or root admins
/// managing it).
pub fn audit_log(tx: &mut dyn Tx, actor: &Actor, p: &AuditParams) -> Result<AuditEntries> {
    let org_id = p.org.clone().unwrap_or_else(|| actor.org.id.clone());
    let org = load_org(tx, &org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let page = Page::parse(p.page, p.per_page, 100, MAX_LOG_PAGE)?;
    let mut names = Names::default();
    let mut entries = Vec::new();
    for a in tx.list_audit(&org_id, p.target.as_deref(), page.per_page, page.offset())? {
        let mut v = AuditEntryView::new(a);
        v.actor_name = names.any(tx, &v.actor)?;
        v.target_name = names.any(tx, &v.target)?;
        entries.push(v);
    }
    Ok(AuditEntries {
        entries,
        total: tx.count_audit(&org_id, p.target.as_deref())?,
        page: page.page,
        per_page: page.per_page,
    })
}

/// A use of a token against the control plane's own API, from an authentication (`allow`)
/// or a refusal that identified the token (`deny`, with core's reason), for the
/// authentication log (source `api`). The path is given without its query.
pub fn api_use(
    verdict: &super::authn::Verdict,
    now: i64,
    peer: Option<&str>,
    method: &str,
    path: &str,
) -> Option<AuthEvent> {
    use super::authn::Verdict;
    let (token, outcome, reason) = match verdict {
        Verdict::Accepted(p) => (&p.token, "allow", None),
        Verdict::Refused(r) => (
            r.token.as_ref()?,
            "deny",
            Some(r.reason.as_str().to_string()),
        ),
    };
    let ip = peer
        .and_then(|p| p.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_string());
    Some(AuthEvent {
        id: 0,
        org_id: token.org_id.clone(),
        token_id: token.id.clone(),
        user_id: token.user_id.clone(),
        at: now,
        ip,
        outcome: outcome.into(),
        reason,
        method: Some(method.to_string()),
        path: Some(path.split('?').next().unwrap_or(path).to_string()),
        source: "api".into(),
    })
}

/// Whether a use at `at` may have come before the revoke at `revoked_at`. Both are whole
/// seconds, so a use in the revoke's own second counts: a token used and revoked within
/// the same second was used (the demo's last step showed it as never used).
fn used_before_revoke(at: i64, revoked_at: Option<i64>) -> bool {
    revoked_at.is_none_or(|r| at <= r)
}

/// Writes a batch of API uses: one authentication-log row each, and each token's last use
/// from its latest allowed one (never for a deleted token, nor a use after its revoke).
pub fn record_api_uses(tx: &mut dyn Tx, ctx: &Ctx, uses: &[AuthEvent]) -> Result<()> {
    // Ordered: tokens are read (and locked, on PostgreSQL) in one global order, so the
    // flushes of several replicas cannot deadlock.
    let mut latest: std::collections::BTreeMap<&str, &AuthEvent> =
        std::collections::BTreeMap::new();
    tx.insert_auth_events(uses)?;
    for e in uses {
        if e.outcome == "allow" {
            let slot = latest.entry(e.token_id.as_str()).or_insert(e);
            if e.at >= slot.at {
                *slot = e;
            }
        }
    }
    for (id, e) in latest {
        let Some(token) = tx.get_token(id)? else {
            continue;
        };
        // The API accepted the use, so the token was not revoked when it was made.
        let usable = token.deleted_at.is_none() && used_before_revoke(e.at, token.revoked_at);
        if usable && token.last_used_at.is_none_or(|l| l < e.at) {
            tx.set_last_used(&token.id, e.at, e.ip.as_deref())?;
            if token.last_used_at.is_none() {
                super::rotation::successor_used(tx, ctx, &token.id, e.at)?;
            }
        }
    }
    for e in uses {
        if e.outcome == "deny" && e.reason.as_deref() == Some(ROTATED) {
            super::rotation::presented_after_end(
                tx,
                ctx,
                &e.token_id,
                e.at,
                e.ip.as_deref(),
                "api",
            )?;
        }
    }
    Ok(())
}

/// The reason code of a token refused after its rotation ended.
const ROTATED: &str = "rotated";
