//! Token rotation with a grace period (issue 26). `rotate` makes the token's successor —
//! the same settings, Pending until its owner downloads it (once, the owner only, as for
//! any token) — and leaves the old token working. The old token stops at the earlier of
//! the successor's first use plus the grace (learnt from the usage reports the edges send,
//! or from a use at this API) and the hard deadline, if one was given. Stopping it
//! (`end_due`, run by `tessera serve` every 200 ms, and at once when the first use
//! arrives after the end) marks its status-list entry *rotated* (value 3, the draft's
//! application-specific value): the edges' long polls wake on that commit as on a
//! revocation, and every edge refuses the token with reason `rotated`. The record becomes
//! revoked (final). A use of the old token reported after that is audited as a possible
//! leak (`token.revoked_but_presented`, with the notification owed), at most once a day
//! per rotation.

use super::input::{check_text, Timestamp};
use super::keys::set_status;
use super::views::TokenView;
use super::{audit, authority, load_user, token_for, Ctx, Error, Result};
use crate::crypto;
use crate::model::{status_value, Token, TokenStatus};
use crate::policy::{self, Action, Actor};
use crate::store::rotations::RotationRecord;
use crate::store::{StoreError, Tx};
use crate::timefmt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// The longest grace: 7 days.
pub const MAX_GRACE_SECS: i64 = 7 * 86_400;

/// How many rotations one `end_due` stops (the rest wait for the next tick).
const END_BATCH: i64 = 100;

/// A rotation request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    /// The successor's name (default: the old name followed by ` #2`, ` #3`, ...). First,
    /// so that a JSON array (which serde would read field by field) is refused.
    #[serde(default)]
    pub name: Option<String>,
    /// How long the old token keeps working after its successor is first used, in
    /// seconds: 0 to 604800 (7 days).
    #[schema(minimum = 0, maximum = 604_800)]
    pub grace_secs: i64,
    /// A hard deadline: the old token stops then at the latest, even if the successor is
    /// never used. In the future, and before the old token expires.
    #[serde(default)]
    pub deadline: Option<Timestamp>,
}

/// A rotation as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RotationView {
    /// The old token's id.
    pub token: String,
    /// The successor's id.
    pub successor: String,
    pub grace_secs: i64,
    pub deadline: Option<String>,
    /// When the successor was first used (at an edge or at this API).
    pub successor_seen_at: Option<String>,
    /// When the old token stops: the earlier of the successor's first use + the grace
    /// and the deadline, once either is known.
    pub ends_at: Option<String>,
    /// When the old token was stopped (refused with `rotated` at every edge).
    pub ended_at: Option<String>,
    pub created_at: String,
    pub created_by: String,
}

impl RotationView {
    fn new(r: &RotationRecord) -> Self {
        let ts = |v: Option<i64>| v.map(timefmt::format);
        RotationView {
            token: r.token_id.clone(),
            successor: r.successor_id.clone(),
            grace_secs: r.grace_secs,
            deadline: ts(r.deadline),
            successor_seen_at: ts(r.successor_seen_at),
            ends_at: ts(r.ends_at),
            ended_at: ts(r.ended_at),
            created_at: timefmt::format(r.created_at),
            created_by: r.created_by.clone(),
        }
    }
}

/// The answer to a rotation: the old token, its Pending successor and the rotation.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Rotated {
    /// The old token (still working until `rotation.ends_at`).
    pub token: TokenView,
    /// The successor, Pending until its owner downloads it.
    pub successor: TokenView,
    pub rotation: RotationView,
}

/// The token `id_or_name` names: an id, else the name of one of the caller's own tokens.
fn resolve(tx: &mut dyn Tx, actor: &Actor, id_or_name: &str) -> Result<String> {
    if tx
        .get_token(id_or_name)?
        .is_some_and(|t| t.deleted_at.is_none())
    {
        return Ok(id_or_name.to_string());
    }
    tx.token_id_by_name(&actor.user.id, id_or_name)?
        .ok_or_else(|| {
            Error::not_found(format!(
                "no token {id_or_name:?} (give a token id, or the name of one of your tokens)"
            ))
        })
}

/// `ci` → `ci #2`, `ci #2` → `ci #3`.
fn next_name(name: &str, attempt: u32) -> String {
    let (base, n) = match name.rsplit_once(" #") {
        Some((b, n)) if !b.is_empty() => match n.parse::<u32>() {
            Ok(n) if n >= 2 => (b, n),
            _ => (name, 1),
        },
        _ => (name, 1),
    };
    let suffix = format!(" #{}", n + 1 + attempt);
    let keep: String = base.chars().take(200 - suffix.chars().count()).collect();
    format!("{keep}{suffix}")
}

/// `POST /v1/tokens/{id}/rotate`: makes the successor and starts the hand-over. Whoever
/// may both create a token for the owner and revoke this one may rotate it (the owner, an
/// admin of the owner's org, a partner for a delegating customer user).
pub fn rotate(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id_or_name: &str,
    req: RotateToken,
) -> Result<Rotated> {
    let id = resolve(tx, actor, id_or_name)?;
    let (old, owner, org) = token_for(tx, actor, &id, Action::Revoke)?;
    policy::check(actor, &owner, &org, Action::Create)?;
    if !(0..=MAX_GRACE_SECS).contains(&req.grace_secs) {
        return Err(Error::field(
            "grace_secs",
            format!(
                "{} s is outside 0 to {MAX_GRACE_SECS} seconds (7 days)",
                req.grace_secs
            ),
        ));
    }
    if let Some(r) = tx.rotation_of(&old.id)? {
        let name = tx
            .get_token(&r.successor_id)?
            .map(|t| t.name)
            .unwrap_or_default();
        return Err(Error::conflict(format!(
            "the token was already rotated: its successor is {name:?} ({}); rotate the successor instead",
            r.successor_id
        )));
    }
    match old.status(ctx.now) {
        TokenStatus::Enabled => {}
        TokenStatus::Pending => {
            return Err(Error::conflict(
                "the token was never downloaded, so nothing uses it: download it instead of rotating it",
            ))
        }
        TokenStatus::Disabled => {
            return Err(Error::conflict(
                "the token is disabled; enable it first (a rotation hands over a working token)",
            ))
        }
        s => return Err(Error::conflict(format!("the token is {}", s.as_str()))),
    }
    let deadline = req.deadline.map(|t| t.0);
    if let Some(d) = deadline {
        if d <= ctx.now {
            return Err(Error::field("deadline", "must be in the future"));
        }
        if d >= old.expires_at {
            return Err(Error::field(
                "deadline",
                format!(
                    "must be before the token expires ({}); it stops then anyway",
                    timefmt::format(old.expires_at)
                ),
            ));
        }
    }
    if let Some(n) = &req.name {
        check_text("name", n, 200, false)?;
    }
    super::tokens::usable_owner(tx, &owner)?;
    super::quotas::check_tokens(tx, ctx, &owner)?;
    // The same settings; a preset lifetime runs anew from now (capped by the org's
    // maximum and by the caller's own credential), a fixed expiry stays.
    let (lifetime_days, expires_at) = match old.lifetime_days {
        Some(days) => {
            let days = days.min(org.max_lifetime_days);
            let at = ctx.now + days * 86_400;
            match authority::clamp_preset(actor, at, false) {
                Some(clamped) => (None, clamped),
                None => (Some(days), at),
            }
        }
        None => (None, old.expires_at),
    };
    super::scopes::check_granted(tx, &owner, &old.scopes)?;
    authority::bound_token(actor, &old.scopes, &old.ip_allow, expires_at)?;
    let mut successor = Token {
        id: crypto::new_id("tok")?,
        org_id: old.org_id.clone(),
        user_id: old.user_id.clone(),
        name: req.name.clone().unwrap_or_else(|| next_name(&old.name, 0)),
        description: old.description.clone(),
        created_by: actor.user.id.clone(),
        created_at: ctx.now,
        lifetime_days,
        not_before: old.not_before.filter(|nb| *nb > ctx.now),
        expires_at,
        ip_allow: old.ip_allow.clone(),
        scopes: old.scopes.clone(),
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
    super::keys::check_mintable(tx, ctx, &org, &successor)?;
    // A default name taken already (`ci #2` from an earlier rotation) moves on; a name
    // the caller chose is theirs to change.
    let mut attempt = 0;
    loop {
        match tx.insert_token(&successor) {
            Ok(()) => break,
            Err(StoreError::Conflict(_)) if req.name.is_none() && attempt < 20 => {
                attempt += 1;
                successor.name = next_name(&old.name, attempt);
            }
            Err(StoreError::Conflict(_)) => {
                return Err(Error::conflict(format!(
                    "{} already has a token named {:?}; give the successor another name",
                    owner.username, successor.name
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let record = RotationRecord {
        token_id: old.id.clone(),
        successor_id: successor.id.clone(),
        org_id: old.org_id.clone(),
        created_by: actor.user.id.clone(),
        created_at: ctx.now,
        grace_secs: req.grace_secs,
        deadline,
        successor_seen_at: None,
        ends_at: deadline,
        ended_at: None,
        presented_at: None,
    };
    tx.insert_rotation(&record).map_err(|e| match e {
        StoreError::Conflict(_) => Error::conflict("the token was already rotated"),
        e => e.into(),
    })?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &old.org_id,
        "token.rotate",
        &old.id,
        json!({
            "successor": successor.id,
            "successor_name": successor.name,
            "grace_secs": req.grace_secs,
            "deadline": deadline,
        }),
    )?;
    Ok(Rotated {
        token: TokenView::new(&old, &owner.username, ctx.now),
        successor: TokenView::new(&successor, &owner.username, ctx.now),
        rotation: RotationView::new(&record),
    })
}

/// The successor `token_id` was used for the first time at `at` (a usage report or a use
/// at this API): the grace starts. Nothing when `token_id` is no rotation's successor or
/// was seen already. Called only on a token's first recorded use, so it costs one point
/// read then and nothing afterwards.
pub fn successor_used(tx: &mut dyn Tx, ctx: &Ctx, token_id: &str, at: i64) -> Result<()> {
    let Some(mut r) = tx.rotation_by_successor(token_id)? else {
        return Ok(());
    };
    if r.successor_seen_at.is_some() || r.ended_at.is_some() {
        return Ok(());
    }
    // Not before the rotation, not after now (an edge's clock may run ahead).
    let seen = at.min(ctx.now).max(r.created_at);
    let end = seen + r.grace_secs;
    r.successor_seen_at = Some(seen);
    r.ends_at = Some(r.deadline.map_or(end, |d| d.min(end)));
    tx.update_rotation(&r)?;
    audit(
        tx,
        ctx,
        "rotation",
        &r.org_id,
        "token.rotation_seen",
        &r.token_id,
        json!({"successor": r.successor_id, "seen_at": seen, "ends_at": r.ends_at}),
    )?;
    if r.ends_at.is_some_and(|e| e <= ctx.now) {
        end_one(tx, ctx, &r.token_id)?;
    }
    Ok(())
}

/// Stops every rotation whose end has come; how many were stopped. `tessera serve` runs
/// it every 200 ms (after a read that finds one due); replicas may run it at once: the
/// rotation's row is locked and re-read, so each is stopped once.
pub fn end_due(tx: &mut dyn Tx, ctx: &Ctx) -> Result<usize> {
    let mut n = 0;
    for id in tx.due_rotations(ctx.now, END_BATCH)? {
        if end_one(tx, ctx, &id)? {
            n += 1;
        }
    }
    Ok(n)
}

/// Whether any rotation is due (the cheap read before [`end_due`]'s write).
pub fn any_due(tx: &mut dyn Tx, ctx: &Ctx) -> Result<bool> {
    Ok(!tx.due_rotations(ctx.now, 1)?.is_empty())
}

fn end_one(tx: &mut dyn Tx, ctx: &Ctx, token_id: &str) -> Result<bool> {
    let Some(mut r) = tx.rotation_of(token_id)? else {
        return Ok(false);
    };
    if r.ended_at.is_some() || r.ends_at.is_none_or(|e| e > ctx.now) {
        return Ok(false);
    }
    r.ended_at = Some(ctx.now);
    tx.update_rotation(&r)?;
    let Some(mut token) = tx.get_token(&r.token_id)? else {
        return Ok(true);
    };
    // Revoked or deleted in the meantime: that stays what the edges say.
    if token.revoked_at.is_some() || token.deleted_at.is_some() {
        return Ok(true);
    }
    token.revoked_at = Some(ctx.now);
    if let Some(idx) = token.status_idx {
        set_status(
            ctx,
            tx,
            &token.org_id,
            idx,
            status_value::ROTATED,
            &token.id,
        )?;
    }
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        "rotation",
        &r.org_id,
        "token.rotated",
        &token.id,
        json!({
            "successor": r.successor_id,
            "successor_seen_at": r.successor_seen_at,
            "deadline": r.deadline,
            "grace_secs": r.grace_secs,
        }),
    )?;
    Ok(true)
}

/// An edge (or this API) refused the old token `token_id` with `rotated` at `at`: it was
/// presented after its successor took over and the grace ended, so someone still holds
/// it — perhaps not its owner. Audited with the notification owed, at most once a day
/// per rotation (the authentication log has every refusal).
pub fn presented_after_end(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    token_id: &str,
    at: i64,
    ip: Option<&str>,
    source: &str,
) -> Result<()> {
    let Some(mut r) = tx.rotation_of(token_id)? else {
        return Ok(());
    };
    if r.ended_at.is_none() || r.presented_at.is_some_and(|p| at < p + 86_400) {
        return Ok(());
    }
    r.presented_at = Some(at);
    tx.update_rotation(&r)?;
    let token = tx.get_token(token_id)?;
    let owner = match &token {
        Some(t) => Some(load_user(tx, &t.user_id)?),
        None => None,
    };
    let detail = json!({
        "reason": "rotated",
        "at": at,
        "ip": ip,
        "source": source,
        "successor": r.successor_id,
        "ended_at": r.ended_at,
    });
    audit(
        tx,
        ctx,
        "rotation",
        &r.org_id,
        "token.revoked_but_presented",
        token_id,
        detail.clone(),
    )?;
    if let (Some(t), Some(owner)) = (token, owner) {
        let recipients = super::leaks::recipients(tx, &t)?;
        let mut d = detail;
        d["event"] = json!("token.revoked_but_presented");
        d["recipients"] = json!(recipients);
        d["token"] = json!(t.id);
        d["owner"] = json!(owner.id);
        audit(
            tx,
            ctx,
            "rotation",
            &r.org_id,
            "notification.needed",
            &t.id,
            d,
        )?;
    }
    Ok(())
}

/// `GET /v1/tokens/{id}/rotation`: the rotation of a token, as its old token or as its
/// successor (anyone who may read the token).
pub fn get(tx: &mut dyn Tx, actor: &Actor, id_or_name: &str) -> Result<RotationView> {
    let id = resolve(tx, actor, id_or_name)?;
    let (token, _, _) = token_for(tx, actor, &id, Action::Read)?;
    let r = match tx.rotation_of(&token.id)? {
        Some(r) => Some(r),
        None => tx.rotation_by_successor(&token.id)?,
    };
    r.map(|r| RotationView::new(&r))
        .ok_or_else(|| Error::not_found(format!("the token {:?} has not been rotated", token.name)))
}

#[cfg(test)]
mod tests {
    use super::next_name;

    #[test]
    fn successor_names_count_up() {
        assert_eq!(next_name("ci", 0), "ci #2");
        assert_eq!(next_name("ci #2", 0), "ci #3");
        assert_eq!(next_name("ci #2", 2), "ci #5");
        assert_eq!(next_name("a #b", 0), "a #b #2");
        assert_eq!(next_name("#7", 0), "#7 #2");
        let long = "x".repeat(200);
        assert_eq!(next_name(&long, 0).chars().count(), 200);
    }
}
