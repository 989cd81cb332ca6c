//! Per-token rate limits and quotas (issue 25): the policy. A token may carry its own
//! limits; its organization sets defaults (what a token gets for a field it does not set)
//! and a ceiling (the most any of its tokens may have). What the edges enforce is the
//! *effective* limit: per field the token's own value, else the default, never above the
//! ceiling (a ceiling lowered later tightens existing tokens at once). A token made or
//! changed through an API token never gets looser limits than the limits set on that
//! token: a field it leaves unset takes the acting token's value, and one set higher is
//! refused (`exceeds_creator`). Limits are not in the JWT: the edges learn them with the lease
//! of budget the control plane grants them, so changing them never revokes a JWT.

use super::{audit, authority, load_org, token_for, Ctx, Error, Result};
use crate::model::Org;
use crate::policy::{self, Action, Actor, Credential};
use crate::store::limits::{token_subject, RateLimits, ORG_CEILING, ORG_DEFAULT};
use crate::store::Tx;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// The largest count any limit may be: a trillion requests.
pub const MAX_LIMIT: i64 = 1_000_000_000_000;

/// An organization's defaults and ceiling.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrgLimitsView {
    pub org: String,
    /// What a token gets for a field it does not set.
    pub default: RateLimits,
    /// The most any token of the organization may have.
    pub ceiling: RateLimits,
}

/// `PUT /v1/orgs/{org}/rate-limits`: an absent member is left as it is; `{}` clears.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetOrgLimits {
    #[serde(default)]
    pub default: Option<RateLimits>,
    #[serde(default)]
    pub ceiling: Option<RateLimits>,
}

/// A token's limits: its own, its organization's, and what the edges enforce.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenLimitsView {
    pub token: String,
    /// The limits set on the token itself.
    pub own: RateLimits,
    pub org_default: RateLimits,
    pub org_ceiling: RateLimits,
    /// What the edges enforce: per field the token's own value, else the default, never
    /// above the ceiling.
    pub effective: RateLimits,
}

/// Refuses a count outside 1..=[`MAX_LIMIT`], naming the field (`limits.per_second`).
pub fn check(prefix: &str, l: &RateLimits) -> Result<()> {
    for (name, v) in RateLimits::FIELDS.iter().zip(l.values()) {
        if let Some(n) = v {
            if !(1..=MAX_LIMIT).contains(&n) {
                return Err(Error::field(
                    &format!("{prefix}.{name}"),
                    format!(
                        "must be a whole number of requests from 1 to {MAX_LIMIT} (leave it out for no limit; disable the token to refuse every request)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Per field: `own`, else `default`, never above `ceiling` (the ceiling alone when neither
/// is set).
pub fn effective(own: &RateLimits, default: &RateLimits, ceiling: &RateLimits) -> RateLimits {
    let (o, d, c) = (own.values(), default.values(), ceiling.values());
    let mut out = [None; 6];
    for i in 0..6 {
        out[i] = match (o[i].or(d[i]), c[i]) {
            (Some(v), Some(c)) => Some(v.min(c)),
            (v, c) => v.or(c),
        };
    }
    RateLimits::from_values(out)
}

fn org_limits(tx: &mut dyn Tx, org_id: &str) -> Result<(RateLimits, RateLimits)> {
    let d = tx.get_limits(org_id, ORG_DEFAULT)?.unwrap_or_default();
    let c = tx.get_limits(org_id, ORG_CEILING)?.unwrap_or_default();
    Ok((d, c))
}

/// What the edges enforce for a token.
pub fn effective_for(tx: &mut dyn Tx, org_id: &str, token_id: &str) -> Result<RateLimits> {
    let own = tx
        .get_limits(org_id, &token_subject(token_id))?
        .unwrap_or_default();
    let (d, c) = org_limits(tx, org_id)?;
    Ok(effective(&own, &d, &c))
}

/// The limits set on the API token the caller acts with (its own, not its org's
/// defaults: those are a baseline for tokens that set nothing, not a restriction someone
/// chose for this credential); `None` for a session or an in-process caller, bound only
/// by the role and the org's ceiling.
fn creator_limits(tx: &mut dyn Tx, actor: &Actor) -> Result<Option<RateLimits>> {
    let Credential::ApiToken { id, .. } = &actor.credential else {
        return Ok(None);
    };
    let Some(t) = tx.get_token(id)? else {
        return Ok(None);
    };
    Ok(Some(
        tx.get_limits(&t.org_id, &token_subject(&t.id))?
            .unwrap_or_default(),
    ))
}

/// Checks `own` (the limits a token of `org` is to carry) against the org's ceiling and
/// the acting token's limits, and fills the fields it leaves unset from the acting token
/// when that is tighter than what the org would give. Returns what to store.
fn bound(tx: &mut dyn Tx, actor: &Actor, org: &Org, own: RateLimits) -> Result<RateLimits> {
    check("limits", &own)?;
    let (d, c) = org_limits(tx, &org.id)?;
    for ((name, v), ceil) in RateLimits::FIELDS.iter().zip(own.values()).zip(c.values()) {
        if let (Some(v), Some(ceil)) = (v, ceil) {
            if v > ceil {
                return Err(Error::field(
                    &format!("limits.{name}"),
                    format!("at most {ceil}, the ceiling of organization {}", org.id),
                ));
            }
        }
    }
    let Some(creator) = creator_limits(tx, actor)? else {
        return Ok(own);
    };
    let mut stored = own.values();
    let org_gives = effective(&RateLimits::default(), &d, &c).values();
    for (i, name) in RateLimits::FIELDS.iter().enumerate() {
        let Some(most) = creator.values()[i] else {
            continue;
        };
        match stored[i] {
            Some(v) if v > most => {
                return Err(Error::denied(
                    authority::EXCEEDS_CREATOR,
                    format!("limits.{name}: at most {most}, the limit of the token you are using"),
                ))
            }
            Some(_) => {}
            None => {
                if org_gives[i].is_none_or(|g| g > most) {
                    stored[i] = Some(most);
                }
            }
        }
    }
    Ok(RateLimits::from_values(stored))
}

/// Sets a token's own limits (inside the create or edit that carries them); audited as
/// `token.rate_limits` with the limits before and after. `Ok(true)` when they changed.
pub(crate) fn set_for_token(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org: &Org,
    token_id: &str,
    own: Option<RateLimits>,
    creating: bool,
) -> Result<bool> {
    if own.is_none() && (!creating || !matches!(actor.credential, Credential::ApiToken { .. })) {
        return Ok(false);
    }
    let stored = bound(tx, actor, org, own.unwrap_or_default())?;
    let subject = token_subject(token_id);
    let before = tx.get_limits(&org.id, &subject)?.unwrap_or_default();
    if before == stored {
        return Ok(false);
    }
    tx.put_limits(&org.id, &subject, &stored, ctx.now)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "token.rate_limits",
        token_id,
        json!({"before": before, "after": stored}),
    )?;
    Ok(true)
}

/// `GET /v1/tokens/{id}/rate-limits`.
pub fn token_view(tx: &mut dyn Tx, actor: &Actor, id: &str) -> Result<TokenLimitsView> {
    let (token, _, org) = token_for(tx, actor, id, Action::Read)?;
    let own = tx
        .get_limits(&org.id, &token_subject(&token.id))?
        .unwrap_or_default();
    let (d, c) = org_limits(tx, &org.id)?;
    Ok(TokenLimitsView {
        token: token.id,
        effective: effective(&own, &d, &c),
        own,
        org_default: d,
        org_ceiling: c,
    })
}

/// `GET /v1/orgs/{org}/rate-limits` (org admin, or a manager's admin).
pub fn org_view(tx: &mut dyn Tx, actor: &Actor, org_id: &str) -> Result<OrgLimitsView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    let (default, ceiling) = org_limits(tx, &org.id)?;
    Ok(OrgLimitsView {
        org: org.id,
        default,
        ceiling,
    })
}

/// `PUT /v1/orgs/{org}/rate-limits` (the org's own admin, with a session or an unlimited
/// token: the ceiling bounds every token, the acting one included). The default may not
/// exceed the ceiling; audited as `org.rate_limits`.
pub fn set_org(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: SetOrgLimits,
) -> Result<OrgLimitsView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    authority::require_unlimited(tx, actor, "ceiling", "the organization's rate limits")?;
    if creator_limits(tx, actor)?.is_some_and(|l| !l.is_empty()) {
        return Err(Error::denied(
            authority::EXCEEDS_CREATOR,
            "ceiling: the organization's rate limits bound every token, and the token you are using has rate limits of its own; sign in to the web page, or use a token without them",
        ));
    }
    let (old_d, old_c) = org_limits(tx, &org.id)?;
    if let Some(d) = &req.default {
        check("default", d)?;
    }
    if let Some(c) = &req.ceiling {
        check("ceiling", c)?;
    }
    let d = req.default.unwrap_or(old_d);
    let c = req.ceiling.unwrap_or(old_c);
    for ((name, dv), cv) in RateLimits::FIELDS.iter().zip(d.values()).zip(c.values()) {
        if let (Some(dv), Some(cv)) = (dv, cv) {
            if dv > cv {
                return Err(Error::field(
                    &format!("default.{name}"),
                    format!("at most {cv}, the ceiling.{name} of the organization"),
                ));
            }
        }
    }
    if (d, c) != (old_d, old_c) {
        tx.put_limits(&org.id, ORG_DEFAULT, &d, ctx.now)?;
        tx.put_limits(&org.id, ORG_CEILING, &c, ctx.now)?;
        audit(
            tx,
            ctx,
            &actor.user.id,
            &org.id,
            "org.rate_limits",
            &org.id,
            json!({"before": {"default": old_d, "ceiling": old_c},
                   "after": {"default": d, "ceiling": c}}),
        )?;
    }
    Ok(OrgLimitsView {
        org: org.id,
        default: d,
        ceiling: c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: Option<i64>, m: Option<i64>, t: Option<i64>) -> RateLimits {
        RateLimits {
            per_second: s,
            per_minute: m,
            total: t,
            ..RateLimits::default()
        }
    }

    #[test]
    fn effective_takes_own_then_default_never_above_the_ceiling() {
        let own = l(Some(50), None, None);
        let default = l(Some(10), Some(600), None);
        let ceiling = l(Some(20), None, Some(1000));
        assert_eq!(
            effective(&own, &default, &ceiling),
            l(Some(20), Some(600), Some(1000))
        );
        assert_eq!(
            effective(
                &RateLimits::default(),
                &RateLimits::default(),
                &RateLimits::default()
            ),
            RateLimits::default()
        );
    }

    #[test]
    fn counts_outside_the_range_name_the_field() {
        let e = check("limits", &l(None, Some(0), None)).unwrap_err();
        assert!(matches!(e, Error::Invalid { ref field, .. } if field == "limits.per_minute"));
        assert!(check("limits", &l(Some(MAX_LIMIT), None, Some(1))).is_ok());
        assert!(check("ceiling", &l(Some(MAX_LIMIT + 1), None, None)).is_err());
    }
}
