//! Leaked tokens: what a secret scanner (GitHub's partner program) or anyone reports as
//! found in public. Each reported string is confirmed with the org's own verifier —
//! signature, `typ`, `iss`, `aud` and lifetime, the checks that do not depend on the time
//! or the status list, so an expired or already revoked token is still recognised as ours —
//! and a confirmed leak of a live token gets the org's leak policy: revoke (the default) or
//! only notify. Every confirmed leak is in the org's audit log (`token.leaked`, with where
//! it was found), and so is the notification the owner and the org's admins are owed
//! (`notification.needed`, event `token.exposed`): nothing sends mail or webhooks yet, and
//! that entry is the seam where the notifications will read from.

use super::keys::MAX_TOKEN_BYTES;
use super::verifiers::unverified_kid;
use super::{audit, load_org, Ctx, Error, Result, Verifiers};
use crate::crypto;
use crate::model::{Role, Token, TokenStatus};
use crate::policy::{self, Actor};
use crate::store::Tx;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_core::token::strip_api_prefix;
use utoipa::ToSchema;

/// Most tokens one report or scanner post may carry (GitHub's credential revocation API
/// takes as many).
pub const MAX_TOKENS_PER_REPORT: usize = 1000;

/// The longest `url` or `source` kept from a report.
const MAX_WHERE: usize = 2048;

/// What an org does with a confirmed leak of one of its live tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeakPolicy {
    /// Revoke the token (final), then notify.
    Revoke,
    /// Leave the token working and notify its owner and the org's admins.
    NotifyOnly,
}

impl LeakPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            LeakPolicy::Revoke => "revoke",
            LeakPolicy::NotifyOnly => "notify_only",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "revoke" => Some(LeakPolicy::Revoke),
            "notify_only" => Some(LeakPolicy::NotifyOnly),
            _ => None,
        }
    }
}

fn setting_key(org_id: &str) -> String {
    format!("leak_policy:{org_id}")
}

/// The org's leak policy (revoke unless the org chose otherwise).
pub fn policy_of(tx: &mut dyn Tx, org_id: &str) -> Result<LeakPolicy> {
    Ok(tx
        .get_setting(&setting_key(org_id))?
        .and_then(|s| LeakPolicy::parse(&s))
        .unwrap_or(LeakPolicy::Revoke))
}

/// Sets the org's leak policy (the caller checked the caller may), with an audit entry.
pub fn set_policy(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &str,
    org_id: &str,
    policy: LeakPolicy,
) -> Result<()> {
    let old = policy_of(tx, org_id)?;
    tx.set_setting(&setting_key(org_id), policy.as_str())?;
    audit(
        tx,
        ctx,
        actor,
        org_id,
        "org.leak_policy",
        org_id,
        json!({"from": old.as_str(), "to": policy.as_str()}),
    )
}

/// One string reported as a leaked token, and where it was found.
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub token: String,
    pub url: Option<String>,
    pub source: Option<String>,
}

/// What became of one reported string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not one of our tokens (no key of ours signed it, or it is not a token).
    NotOurs,
    /// One of our tokens.
    Confirmed,
}

/// Which reported strings are ours, read only: the handlers ask this in a read, so a
/// report with nothing of ours in it (the usual junk) costs no write, and write only the
/// confirmed ones through [`report`].
pub fn ours(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    verifiers: &Verifiers,
    found: &[Found],
) -> Result<Vec<bool>> {
    if found.len() > MAX_TOKENS_PER_REPORT {
        return Err(Error::field(
            "tokens",
            format!("at most {MAX_TOKENS_PER_REPORT} tokens per request"),
        ));
    }
    found
        .iter()
        .map(|f| Ok(confirm(tx, ctx, verifiers, &f.token)?.is_some()))
        .collect()
}

/// Confirms each reported string (again, in the write) and applies the leak policy to the
/// confirmed ones. `reporter` names who reported (`github`, `report`) in the audit log.
pub fn report(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    verifiers: &Verifiers,
    reporter: &str,
    found: &[Found],
) -> Result<Vec<Verdict>> {
    if found.len() > MAX_TOKENS_PER_REPORT {
        return Err(Error::field(
            "tokens",
            format!("at most {MAX_TOKENS_PER_REPORT} tokens per request"),
        ));
    }
    let mut out = Vec::with_capacity(found.len());
    for f in found {
        out.push(match confirm(tx, ctx, verifiers, &f.token)? {
            None => Verdict::NotOurs,
            Some(c) => {
                leaked(tx, ctx, reporter, f, &c)?;
                Verdict::Confirmed
            }
        });
    }
    Ok(out)
}

/// A confirmed token: its org, and the API token record it speaks for (itself, or an
/// access token's parent), with whether this is that record's current JWT.
struct Confirmed {
    org_id: String,
    jti: String,
    record: Option<Token>,
    current: bool,
}

fn confirm(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    verifiers: &Verifiers,
    text: &str,
) -> Result<Option<Confirmed>> {
    let jws = strip_api_prefix(text.trim());
    if jws.is_empty() || jws.len() > MAX_TOKEN_BYTES {
        return Ok(None);
    }
    // The kid picks the org whose verifier judges; a kid we never issued is not ours.
    let Some(kid) = unverified_kid(jws) else {
        return Ok(None);
    };
    let Some(key) = tx.get_key(&kid)? else {
        return Ok(None);
    };
    let Some(org) = tx.get_org(&key.org_id)? else {
        return Ok(None);
    };
    let entry = verifiers.for_org(tx, ctx, &org)?;
    let verified = {
        let v = entry
            .lock()
            .map_err(|_| Error::internal("verifier lock poisoned"))?;
        // Signature, typ, iss, aud and lifetime; not the time or the status list.
        tessera_core::verify::verify(
            v.verifier.config(),
            jws,
            u64::try_from(ctx.now).unwrap_or(0),
        )
    };
    let Ok(v) = verified else {
        return Ok(None);
    };
    if v.org != org.id {
        return Ok(None);
    }
    let record = tx
        .get_token(v.parent.as_deref().unwrap_or(&v.jti))?
        .filter(|t| t.org_id == org.id && t.user_id == v.sub);
    let current = record.as_ref().is_some_and(|r| {
        let idx = v.status.as_ref().and_then(|s| i64::try_from(s.idx).ok());
        let same_jwt = v.parent.is_some()
            || r.jwt_sha256.as_deref() == Some(crypto::sha256_hex(jws.as_bytes()).as_str());
        same_jwt && idx.is_some() && r.status_idx == idx
    });
    Ok(Some(Confirmed {
        org_id: org.id,
        jti: v.jti,
        record,
        current,
    }))
}

fn clip(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|s| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(MAX_WHERE)
            .collect()
    })
}

/// Applies the org's policy to one confirmed leak and writes its audit entries.
fn leaked(tx: &mut dyn Tx, ctx: &Ctx, reporter: &str, f: &Found, c: &Confirmed) -> Result<()> {
    let actor = format!("leak-report:{reporter}");
    let policy = policy_of(tx, &c.org_id)?;
    let (target, action, live_record) = match &c.record {
        None => (c.jti.clone(), "none: no such token", None),
        Some(r) if !c.current => (
            r.id.clone(),
            "none: an earlier JWT of the token, already revoked",
            None,
        ),
        Some(r) => match r.status(ctx.now) {
            TokenStatus::Revoked => (r.id.clone(), "none: already revoked", None),
            TokenStatus::Expired => (r.id.clone(), "none: expired", None),
            TokenStatus::Pending => (r.id.clone(), "none: not downloaded", None),
            TokenStatus::Enabled | TokenStatus::Disabled => match policy {
                LeakPolicy::Revoke => (r.id.clone(), "revoked", Some(r.clone())),
                LeakPolicy::NotifyOnly => (r.id.clone(), "notified", Some(r.clone())),
            },
        },
    };
    if let (Some(mut t), LeakPolicy::Revoke) = (live_record.clone(), policy) {
        super::tokens::revoke_one(tx, ctx, &mut t)?;
    }
    let url = clip(&f.url);
    let source = clip(&f.source);
    audit(
        tx,
        ctx,
        &actor,
        &c.org_id,
        "token.leaked",
        &target,
        json!({
            "reporter": reporter,
            "url": url,
            "source": source,
            "policy": policy.as_str(),
            "action": action,
            "jti": c.jti,
        }),
    )?;
    // Only a leak that left a token working, or that stopped one, is news to people; a
    // token left working by `notify_only` is told about once a day however often the
    // scanners find it again (every report stays in the audit log).
    if let Some(t) = live_record {
        if policy == LeakPolicy::Revoke || !told_within_a_day(tx, ctx, &t)? {
            notification_needed(tx, ctx, &actor, &t, reporter, &url, &source, action)?;
        }
    }
    Ok(())
}

/// Most recent audit entries of a token read to find its last exposure notice.
const RECENT_ENTRIES: i64 = 200;

/// Whether the owner and admins were told of `t`'s exposure in the last 24 hours.
fn told_within_a_day(tx: &mut dyn Tx, ctx: &Ctx, t: &Token) -> Result<bool> {
    Ok(tx
        .list_audit(&t.org_id, Some(&t.id), RECENT_ENTRIES, 0)?
        .iter()
        .take_while(|e| e.at > ctx.now - 86_400)
        .any(|e| e.action == "notification.needed" && e.detail["event"] == "token.exposed"))
}

/// Records that the owner and the org's admins must be told of an exposed token. The
/// notifications (mail, webhooks) are to read these entries; until then the audit log
/// is where an admin sees them.
#[allow(clippy::too_many_arguments)]
fn notification_needed(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &str,
    t: &Token,
    reporter: &str,
    url: &Option<String>,
    source: &Option<String>,
    action: &str,
) -> Result<()> {
    let recipients = recipients(tx, t)?;
    audit(
        tx,
        ctx,
        actor,
        &t.org_id,
        "notification.needed",
        &t.id,
        json!({
            "event": "token.exposed",
            "recipients": recipients,
            "token": t.id,
            "owner": t.user_id,
            "reporter": reporter,
            "url": url,
            "source": source,
            "action": action,
        }),
    )
}

/// Who is told about a token: its owner and the org's enabled admins (ids).
pub(crate) fn recipients(tx: &mut dyn Tx, t: &Token) -> Result<Vec<String>> {
    let mut recipients = vec![t.user_id.clone()];
    for u in tx.list_users(&t.org_id)? {
        if u.role == Role::Admin && !recipients.contains(&u.id) {
            let enabled = tx
                .get_account(&u.id)?
                .is_none_or(|a| a.deleted_at.is_none() && a.disabled_at.is_none());
            if enabled {
                recipients.push(u.id);
            }
        }
    }
    Ok(recipients)
}

/// The org's leak policy, as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LeakPolicyView {
    pub org: String,
    /// `revoke` (the default) or `notify_only`.
    pub policy: LeakPolicy,
}

/// A change of the org's leak policy.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLeakPolicy {
    /// `revoke` or `notify_only`.
    pub policy: LeakPolicy,
}

/// `GET /v1/orgs/{org}/leak-policy` (org admin, or an admin of the org managing it).
pub fn get_policy(tx: &mut dyn Tx, actor: &Actor, org_id: &str) -> Result<LeakPolicyView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    Ok(LeakPolicyView {
        policy: policy_of(tx, &org.id)?,
        org: org.id,
    })
}

/// `PUT /v1/orgs/{org}/leak-policy` (org admin).
pub fn put_policy(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: SetLeakPolicy,
) -> Result<LeakPolicyView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    set_policy(tx, ctx, &actor.user.id, &org.id, req.policy)?;
    Ok(LeakPolicyView {
        org: org.id,
        policy: req.policy,
    })
}
