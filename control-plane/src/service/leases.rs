//! Leases of rate-limit budget to the edges (issue 25). An edge reports, with its usage
//! batch, what it admitted and refused per limited token and window (`SpendReport`); the
//! answer carries its next leases (`core::ratelimit::Lease`: at most `per_window`
//! admissions in each window of a range). One write transaction grants them, so replicas
//! on PostgreSQL grant from one budget (a serialization failure retries the grant).
//!
//! The invariant, per token, window kind and window index: the sum over edges of the
//! largest allowance each was ever leased for that window is at most the limit. A grant
//! keeps it by construction — an edge's new allowance is at most what the other edges
//! leave (`limit − Σ others`), and allowances only grow (the edges keep the larger of two
//! leases for a window, `Budget::grant`). Within that bound the split follows demand
//! (`core::ratelimit::apportion`, each active edge keeping a floor of a twentieth of the
//! limit so an edge's first requests find a lease): every reporting edge gets a lease of
//! every token with limits of its own, before any request of that token reaches it.

use super::{Ctx, Error, Result};
use crate::store::limits::{LeaseRecord, ORG_CEILING, ORG_DEFAULT};
use crate::store::Tx;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use tessera_core::ratelimit::{apportion, lease_span, SpendReport, Window};
use utoipa::ToSchema;

/// Edges that reported within this many seconds share a token's limit.
pub const ACTIVE_SECS: i64 = 30;
/// An edge's floor is at most `limit / FLOOR_PARTS` (and never more than it wanted:
/// `core::ratelimit::apportion`).
pub const FLOOR_PARTS: u64 = 20;
/// The most tokens one report may name.
pub const MAX_REPORTED: usize = 1000;

/// One lease in the usage answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LeaseView {
    pub token_id: String,
    /// `per_second`, `per_minute`, `per_hour`, `per_day`, `per_month` or `total`.
    pub window: String,
    /// The first window index it covers (windows aligned to the Unix epoch; months since
    /// 1970-01; 0 for `total`).
    pub first: u64,
    /// The last window index it covers.
    pub last: u64,
    /// Admissions this edge may make in each of those windows.
    pub per_window: u64,
    /// The token's limit for the window across the fleet (for the headers).
    pub limit: u64,
}

fn check_report(report: &SpendReport) -> Result<()> {
    super::input::check_text("spend.edge", &report.edge, 64, false)?;
    if report.tokens.len() > MAX_REPORTED {
        return Err(Error::field(
            "spend.tokens",
            format!("at most {MAX_REPORTED} entries per report"),
        ));
    }
    if report.wanted.len() > MAX_REPORTED {
        return Err(Error::field(
            "spend.wanted",
            format!("at most {MAX_REPORTED} entries per report"),
        ));
    }
    for (n, t) in report.tokens.iter().enumerate() {
        if Window::parse(&t.window).is_none() {
            return Err(Error::field(
                &format!("spend.tokens[{n}].window"),
                "one of per_second, per_minute, per_hour, per_day, per_month, total",
            ));
        }
    }
    Ok(())
}

/// How recently a token must have been used or downloaded for an org's default limits
/// (or ceiling) to be leased for it ahead of its requests.
pub const RECENT_SECS: i64 = 86_400;
/// The most such tokens leased ahead per report (the rest are asked for by the edges).
pub const MAX_AHEAD: i64 = 200;

/// What a grant answers an edge.
#[derive(Debug, Default)]
pub struct Granted {
    pub leases: Vec<LeaseView>,
    /// Tokens it reported or asked about that have no limit (or are not its org's).
    pub unlimited: Vec<String>,
    /// Whether any token of the org is limited.
    pub limited: bool,
    /// How many edges (this one included) hold leases of the tokens answered that reach
    /// the current window: what an edge divides a limit by when the control plane is lost
    /// (its fallback).
    pub edges: u64,
}

/// Grants `edge` (the edge credential's id and the process's id) its next leases of every
/// token it reported or asked about, every token of `org_id` with limits of its own, and —
/// when the org sets defaults or a ceiling, which limit every token — its tokens used or
/// downloaded in the last [`RECENT_SECS`] (at most [`MAX_AHEAD`]), so that a token's
/// first request at an edge finds a lease there (an edge asks for one it lacks).
pub fn grant(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    edge: &str,
    report: &SpendReport,
) -> Result<Granted> {
    check_report(report)?;
    let edge = format!("{edge}/{}", report.edge);
    // What this edge wanted per (token, kind): its busiest reported window.
    let mut wanted: BTreeMap<(String, Window), u64> = BTreeMap::new();
    for t in &report.tokens {
        if let Some(w) = Window::parse(&t.window) {
            let d = wanted.entry((t.token_id.clone(), w)).or_insert(0);
            *d = (*d).max(t.admitted.saturating_add(t.refused));
        }
    }
    // The tokens the edge named: each is answered, a lease or `unlimited`.
    let named: BTreeSet<String> = wanted
        .keys()
        .map(|(t, _)| t.clone())
        .chain(report.wanted.iter().cloned())
        .collect();
    let mut ids = named.clone();
    let own = tx.list_token_limits(org_id)?;
    for (subject, _) in &own {
        if let Some(id) = subject.strip_prefix("token:") {
            ids.insert(id.to_string());
        }
    }
    let default = tx.get_limits(org_id, ORG_DEFAULT)?.unwrap_or_default();
    let ceiling = tx.get_limits(org_id, ORG_CEILING)?.unwrap_or_default();
    let every_token = !default.is_empty() || !ceiling.is_empty();
    if every_token {
        ids.extend(tx.recent_tokens(org_id, ctx.now - RECENT_SECS, MAX_AHEAD)?);
    }
    let now_ms = u64::try_from(ctx.now).unwrap_or(0).saturating_mul(1000);
    let mut out = Granted {
        limited: every_token || !own.is_empty(),
        ..Granted::default()
    };
    let mut active: BTreeSet<String> = BTreeSet::from([edge.clone()]);
    for id in ids {
        let mut leased = false;
        let token = tx.get_token(&id)?;
        if let Some(token) =
            token.filter(|t| t.org_id == org_id && t.revoked_at.is_none() && t.deleted_at.is_none())
        {
            let limits = super::limits::effective_for(tx, org_id, &token.id)?;
            for (w, limit) in Window::ALL.into_iter().zip(limits.values()) {
                let Some(limit) = limit.and_then(|l| u64::try_from(l).ok()) else {
                    continue;
                };
                let demand = wanted.get(&(id.clone(), w)).copied().unwrap_or(0);
                out.leases.extend(grant_one(
                    tx,
                    ctx,
                    &id,
                    w,
                    limit,
                    &edge,
                    demand,
                    now_ms,
                    &mut active,
                )?);
                leased = true;
            }
        }
        if !leased && named.contains(&id) {
            out.unlimited.push(id);
        }
    }
    out.edges = active.len() as u64;
    Ok(out)
}

/// The lease of one token and window kind for `edge`, and every lease it holds of them;
/// nothing when the edge wanted none of it and still holds a lease reaching far enough
/// ahead (an idle token is not re-granted, and its row not rewritten, on every report).
/// Adds the edges active on the token to `active`.
#[allow(clippy::too_many_arguments)]
fn grant_one(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    token_id: &str,
    w: Window,
    limit: u64,
    edge: &str,
    demand: u64,
    now_ms: u64,
    active: &mut BTreeSet<String>,
) -> Result<Vec<LeaseView>> {
    let kind = w.as_str();
    let cur = w.index(now_ms);
    let cur_i = i64::try_from(cur).map_err(Error::internal)?;
    tx.forget_leases(token_id, kind, cur_i)?;
    let rows = tx.leases_from(token_id, kind, cur_i)?;
    // Every edge holding a lease that reaches the current window (an idle edge's row is
    // rewritten only now and then, so its age says nothing): more edges than are alive
    // only makes the fallback's share smaller.
    for r in &rows {
        active.insert(r.edge.clone());
    }
    let first = cur;
    let last = cur + lease_span(w) - 1;
    // Idle here: re-granted only once the lease held reaches less than half its span
    // ahead (the idle edge keeps a lease for now and the next windows without a write).
    let ahead = cur + lease_span(w) / 2;
    if demand == 0
        && rows
            .iter()
            .any(|r| r.edge == edge && r.first as u64 <= cur && r.last as u64 >= ahead)
    {
        return Ok(Vec::new());
    }
    // Per edge, the largest allowance it holds for each window of the range.
    let held = |e: &str, i: u64| -> u64 {
        rows.iter()
            .filter(|r| r.edge == e && r.first as u64 <= i && i <= r.last as u64)
            .map(|r| r.per_window as u64)
            .max()
            .unwrap_or(0)
    };
    let mut edges: Vec<&str> = rows
        .iter()
        .filter(|r| r.edge != edge && r.granted_at >= ctx.now - ACTIVE_SECS)
        .map(|r| r.edge.as_str())
        .collect();
    edges.sort_unstable();
    edges.dedup();
    let all_edges: BTreeSet<&str> = rows.iter().map(|r| r.edge.as_str()).collect();
    // What the other edges hold, at the fullest window of the range.
    let others = (first..=last)
        .map(|i| {
            all_edges
                .iter()
                .filter(|e| **e != edge)
                .map(|e| held(e, i))
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    let mut demands: Vec<u64> = edges
        .iter()
        .map(|e| {
            rows.iter()
                .filter(|r| r.edge == *e)
                .max_by_key(|r| r.granted_at)
                .map_or(0, |r| r.demand as u64)
        })
        .collect();
    demands.push(demand);
    let floor = (limit / FLOOR_PARTS).max(1);
    let share = apportion(limit, &demands, floor)
        .last()
        .copied()
        .unwrap_or(0);
    let grant = share.min(limit.saturating_sub(others));
    // Always written, a zero lease too: it records the edge's demand and that it is
    // active, so the next grants of the other edges leave it its floor.
    {
        let same = rows.iter().find(|r| r.edge == edge && r.first == cur_i);
        let record = LeaseRecord {
            token_id: token_id.to_string(),
            kind: kind.to_string(),
            edge: edge.to_string(),
            first: cur_i,
            last: i64::try_from(last)
                .map_err(Error::internal)?
                .max(same.map_or(0, |r| r.last)),
            per_window: i64::try_from(grant)
                .map_err(Error::internal)?
                .max(same.map_or(0, |r| r.per_window)),
            demand: i64::try_from(demand).unwrap_or(i64::MAX),
            granted_at: ctx.now,
        };
        tx.put_lease(&record)?;
    }
    let mine = tx.leases_from(token_id, kind, cur_i)?;
    Ok(mine
        .into_iter()
        .filter(|r| r.edge == edge)
        .map(|r| LeaseView {
            token_id: token_id.to_string(),
            window: kind.to_string(),
            first: r.first as u64,
            last: r.last as u64,
            per_window: r.per_window as u64,
            limit,
        })
        .collect())
}
