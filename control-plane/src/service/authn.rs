//! Presented tokens: authenticating an API call and exchanging an API token for an access
//! token. Both go through core's `Verifier` first (exactly what the data plane runs), then
//! through what only the control plane knows (the record, its current JWT, the key's org).

use super::keys::sign_claims;
use super::views::AccessToken;
use super::{Ctx, Error, Result, TYP_ACCESS, TYP_API};
use crate::crypto::{self, UntrustedJws};
use crate::model::{AuthEvent, Org, Token, TokenStatus, User};
use crate::policy::Actor;
use crate::store::Tx;
use serde_json::Value;
use tessera_core::token::{Claims, TokenType};
use tessera_core::{Decision, Deny, Reason, Request as CoreRequest};

pub use super::verifiers::{early_refusal, presented_token, unverified_kid, Verifiers, REALM};

/// The kinds of Tessera token a caller may present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Api,
    Access,
}

/// The answer to a presented token.
pub enum Verdict {
    Accepted(Box<Presented>),
    Refused(Box<Refused>),
}

/// A token that passed every check of the control plane.
pub struct Presented {
    pub kind: Kind,
    pub token: Token,
    pub user: User,
    pub org: Org,
    /// The token's claims (core verified them).
    pub claims: Claims,
}

/// Why a presented token was refused: core's reason code (the data plane would say the
/// same, or the token passed core and a database check refused it), the refusal core
/// builds for it (status and `WWW-Authenticate`), and the token record when it could be
/// identified (so the refusal can be logged against it).
pub struct Refused {
    pub reason: Reason,
    pub deny: Deny,
    pub token: Option<Token>,
}

fn refused(reason: Reason, token: Option<Token>) -> Box<Refused> {
    Box::new(Refused {
        reason,
        deny: Deny::new(reason, REALM, &[]),
        token,
    })
}

/// What was presented: the request as core sees it.
pub struct Presentation<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The request headers (only `Authorization` matters to the API's verifier).
    pub headers: &'a [(String, String)],
    /// The peer address (`ip:port`), when the request came over a socket.
    pub peer: Option<&'a str>,
}

/// The record a verified token speaks for: the API token itself, or an access token's
/// parent, if it belongs to the token's org and user.
fn record_of(
    tx: &mut dyn Tx,
    org: &str,
    user: Option<&str>,
    jti: &str,
    parent: Option<&str>,
) -> Result<Option<Token>> {
    Ok(tx
        .get_token(parent.unwrap_or(jti))?
        .filter(|t| t.org_id == org && user.is_none_or(|u| t.user_id == u)))
}

/// The first address of the presented token's `ip_allow` (unverified: only used to ask
/// core again, which verifies everything).
fn first_allowed_address(jwt: &str) -> Option<String> {
    let jws = UntrustedJws::parse(jwt).ok()?;
    let first = jws.claims.get("ip_allow")?.get(0)?.as_str()?;
    Some(first.split('/').next().unwrap_or(first).to_string())
}

/// Checks a Tessera token with `tessera_core::Verifier` (exactly what the data plane runs:
/// signature with the key's pinned algorithm, `typ`, `iss`, `aud`, times, IP filter, and
/// the org's current status list), then what only the control plane knows: the key belongs
/// to the token's org and `iss` is that org's, `aud` is that org's audience, the record
/// exists and is Enabled, the JWT carries the record's current status index, and (for an
/// API token) its SHA-256 is the stored one.
pub fn verify_presented(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    verifiers: &Verifiers,
    presented: &Presentation<'_>,
    accept: &[Kind],
) -> Result<Verdict> {
    let Some(jwt) = presented_token(presented.headers) else {
        let deny = early_refusal(presented.headers)
            .unwrap_or_else(|| Deny::new(Reason::TokenMissing, REALM, &[]));
        return Ok(Verdict::Refused(Box::new(Refused {
            reason: deny.reason,
            deny,
            token: None,
        })));
    };
    // The kid only picks which org's verifier judges the token; that verifier knows only
    // its org's keys, issuer and audience. An unknown kid is judged by any org's verifier,
    // which refuses it for what core finds first (a malformed token, `alg: none`, or
    // `key_unknown`).
    let key_org = match unverified_kid(jwt) {
        Some(kid) => match tx.get_key(&kid)? {
            Some(k) => tx.get_org(&k.org_id)?,
            None => None,
        },
        None => None,
    };
    let judge = match key_org {
        Some(o) => o,
        None => match tx.any_org()? {
            Some(o) => o,
            // An empty database: no key can verify anything.
            None => return Ok(Verdict::Refused(refused(Reason::KeyUnknown, None))),
        },
    };
    let entry = verifiers.for_org(tx, ctx, &judge)?;
    let outcome = {
        let v = entry
            .lock()
            .map_err(|_| Error::internal("verifier lock poisoned"))?;
        let req = CoreRequest {
            method: presented.method,
            path: presented.path,
            headers: presented.headers,
            source_address: presented.peer,
        };
        let now = u64::try_from(ctx.now).unwrap_or(0);
        let mut outcome = v.verifier.check(&req, now, None);
        if presented.peer.is_none() && outcome.decision.reason() == Some(Reason::IpNotAllowed) {
            // No socket, so no client address (an in-process caller; `tessera serve`
            // always knows the peer): the IP filter cannot apply. Core decides the request
            // as coming from inside the token's filter; every other check stands.
            if let Some(inside) = first_allowed_address(jwt) {
                outcome = v.verifier.check(
                    &CoreRequest {
                        source_address: Some(&inside),
                        ..req
                    },
                    now,
                    None,
                );
            }
        }
        outcome
    };
    let identity = match outcome.decision {
        Decision::Allow(identity) => identity,
        Decision::Deny(deny) => {
            // Once the signature verified, the token's record is known: log against it.
            let token = match &outcome.subject {
                Some(s) => record_of(tx, &s.org, None, &s.token_id, s.parent.as_deref())?,
                None => None,
            };
            return Ok(Verdict::Refused(Box::new(Refused {
                reason: deny.reason,
                deny,
                token,
            })));
        }
    };
    let kind = match identity.token_type.as_str() {
        TYP_API => Kind::Api,
        TYP_ACCESS => Kind::Access,
        _ => return Ok(Verdict::Refused(refused(Reason::TypeMismatch, None))),
    };
    if !accept.contains(&kind) {
        return Ok(Verdict::Refused(refused(Reason::TypeMismatch, None)));
    }
    // Core verified the signature: the header and claims are the issuer's.
    let Ok(jws) = UntrustedJws::parse(jwt) else {
        return Ok(Verdict::Refused(refused(Reason::TokenMalformed, None)));
    };
    let c = &jws.claims;
    let org_id = identity.org.as_str();
    let token = record_of(
        tx,
        org_id,
        Some(&identity.user),
        &identity.token_id,
        identity.parent.as_deref(),
    )?;
    let with = |reason: Reason| Ok(Verdict::Refused(refused(reason, token.clone())));
    let key_org = match jws.header_str("kid") {
        Some(kid) => tx.get_key(kid)?.map(|k| k.org_id),
        None => None,
    };
    if key_org.as_deref() != Some(org_id)
        || c.get("iss").and_then(Value::as_str) != Some(ctx.issuer(org_id).as_str())
    {
        return with(Reason::IssuerMismatch);
    }
    if judge.id != org_id {
        return with(Reason::IssuerMismatch);
    }
    let org = judge;
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => *a == org.audience,
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str() == Some(org.audience.as_str())),
        _ => false,
    };
    if !aud_ok {
        return with(Reason::AudienceMismatch);
    }
    if kind == Kind::Access && identity.parent.is_none() {
        return with(Reason::ClaimMissing);
    }
    let Some(record) = token.clone() else {
        return with(Reason::Revoked);
    };
    match record.status(ctx.now) {
        TokenStatus::Enabled => {}
        TokenStatus::Disabled => return with(Reason::Suspended),
        TokenStatus::Expired => return with(Reason::Expired),
        TokenStatus::Revoked | TokenStatus::Pending => return with(Reason::Revoked),
    }
    // An older JWT of a regenerated or edited token carries a retired index.
    let idx = c
        .get("status")
        .and_then(|v| v.get("status_list"))
        .and_then(|v| v.get("idx"))
        .and_then(Value::as_i64);
    if idx.is_none() || record.status_idx != idx {
        return with(Reason::Revoked);
    }
    if kind == Kind::Api
        && record.jwt_sha256.as_deref() != Some(crypto::sha256_hex(jwt.as_bytes()).as_str())
    {
        return with(Reason::Revoked);
    }
    let Some(user) = tx.get_user(&identity.user)? else {
        return with(Reason::Revoked);
    };
    // A token authenticates only while its user is enabled too (an admin may have
    // enabled the token itself).
    if let Some(reason) = user_refusal(tx, &user.id)? {
        return with(reason);
    }
    let Ok(claims) = jws.tessera_claims() else {
        return with(Reason::ClaimMissing);
    };
    Ok(Verdict::Accepted(Box::new(Presented {
        kind,
        token: record,
        user,
        org,
        claims,
    })))
}

/// Why a user's tokens must be refused now: `revoked` once the user is deleted,
/// `suspended` while disabled.
fn user_refusal(tx: &mut dyn Tx, user_id: &str) -> Result<Option<Reason>> {
    Ok(tx.get_account(user_id)?.and_then(|a| {
        if a.deleted_at.is_some() {
            Some(Reason::Revoked)
        } else if a.disabled_at.is_some() {
            Some(Reason::Suspended)
        } else {
            None
        }
    }))
}

/// Authenticates an API call: [`verify_presented`] with API and access tokens. A refusal
/// keeps core's status (401, 403 for `ip_not_allowed`, ...) and `WWW-Authenticate`.
pub fn authenticate(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    verifiers: &Verifiers,
    presented: &Presentation<'_>,
) -> Result<Actor> {
    let verdict = verify_presented(tx, ctx, verifiers, presented, &[Kind::Api, Kind::Access])?;
    let mut actor = actor_of(verdict).map_err(|deny| Error::Refused(Box::new(deny)))?;
    narrow_to_grants(tx, &mut actor)?;
    Ok(actor)
}

/// A token speaks only for the scopes its user is still granted (the catalogue can
/// withdraw what the JWT carries), at the API as at the edges.
pub fn narrow_to_grants(tx: &mut dyn Tx, actor: &mut Actor) -> Result<()> {
    if let crate::policy::Credential::ApiToken { scopes, .. } = &mut actor.credential {
        let granted = super::scopes::granted_to(tx, &actor.user)?;
        scopes.retain(|s| granted.contains(s));
    }
    Ok(())
}

/// The caller a verdict admits, or core's refusal.
pub fn actor_of(verdict: Verdict) -> std::result::Result<Actor, Deny> {
    match verdict {
        Verdict::Accepted(p) => {
            let p = *p;
            let credential = super::authority::credential_of(&p);
            Ok(Actor {
                token_id: p.token.id,
                user: p.user,
                org: p.org,
                credential,
            })
        }
        Verdict::Refused(r) => Err(r.deny),
    }
}

/// Checks, inside an operation's own transaction, that the credential the caller was
/// authenticated with is still usable (not revoked, disabled or deleted since), so that a
/// write never acts on a credential revoked after authentication.
pub fn still_valid(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor) -> Result<()> {
    if actor.token_id.is_empty() {
        // An in-process caller (bootstrap, tests): no credential to re-check.
        return Ok(());
    }
    if let Some(reason) = user_refusal(tx, &actor.user.id)? {
        return Err(Error::refused(reason));
    }
    let reason = match tx.get_token(&actor.token_id)?.map(|t| t.status(ctx.now)) {
        Some(TokenStatus::Enabled) => return Ok(()),
        Some(TokenStatus::Disabled) => Reason::Suspended,
        Some(TokenStatus::Expired) => Reason::Expired,
        _ => Reason::Revoked,
    };
    Err(Error::refused(reason))
}

/// What an exchange gave: an access token, or a refusal (committed, so that it stays in
/// the authentication log).
pub enum Exchanged {
    Issued(AccessToken),
    Refused(Reason),
}

/// Exchanges an API token for a short-lived `at+jwt` carrying the parent's status entry.
/// An error aborts the transaction; a refusal is an answer, committed so that it stays in
/// the authentication log.
///
/// The API token goes through the same verifier as an API credential, presented as
/// `Authorization: Bearer <api token>` from `peer` (`ip:port`), so its IP filter applies.
pub fn exchange(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    verifiers: &Verifiers,
    api_token: &str,
    peer: Option<&str>,
) -> Result<Exchanged> {
    let ip = peer
        .and_then(|p| p.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_string());
    let headers = [("authorization".to_string(), format!("Bearer {api_token}"))];
    let presented = Presentation {
        method: "POST",
        path: "/v1/auth/accesstoken",
        headers: &headers,
        peer,
    };
    let p = match verify_presented(tx, ctx, verifiers, &presented, &[Kind::Api])? {
        Verdict::Accepted(p) => p,
        Verdict::Refused(r) => {
            if let Some(t) = &r.token {
                log_event(tx, ctx, t, ip, "deny", Some(r.reason.as_str()), "exchange")?;
            }
            return Ok(Exchanged::Refused(r.reason));
        }
    };
    let exp = (ctx.now + ctx.access_ttl).min(p.token.expires_at);
    // The parent's claims (its scopes, IP filter and status entry), as a fresh token.
    let mut claims = p.claims.clone();
    // Only the scopes the user is still granted: what the catalogue withdrew stays withdrawn.
    let granted = super::scopes::granted_to(tx, &p.user)?;
    let kept: Vec<&str> = claims
        .scopes()
        .filter(|s| granted.iter().any(|g| g == s))
        .collect();
    claims.scope = (!kept.is_empty()).then(|| kept.join(" "));
    claims.jti = crypto::new_id("at")?;
    claims.iat = Some(ctx.now);
    claims.nbf = Some(ctx.now);
    claims.exp = exp;
    claims.parent = Some(p.token.id.clone());
    claims.client_id = Some(p.token.id.clone());
    // The owner's username now (the API token may predate the claim, or a rename).
    claims.preferred_username = Some(p.user.username.clone());
    let (jwt, _) = sign_claims(tx, ctx, &p.org.id, TokenType::Access, &claims)?;
    log_event(tx, ctx, &p.token, ip.clone(), "allow", None, "exchange")?;
    tx.set_last_used(&p.token.id, ctx.now, ip.as_deref())?;
    Ok(Exchanged::Issued(AccessToken {
        access_token: jwt,
        token_type: "Bearer".into(),
        expires_in: exp - ctx.now,
        issued_token_type: None,
    }))
}

fn log_event(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    t: &Token,
    ip: Option<String>,
    outcome: &str,
    reason: Option<&str>,
    source: &str,
) -> Result<()> {
    Ok(tx.insert_auth_event(&AuthEvent {
        id: 0,
        org_id: t.org_id.clone(),
        token_id: t.id.clone(),
        user_id: t.user_id.clone(),
        at: ctx.now,
        ip,
        outcome: outcome.into(),
        reason: reason.map(str::to_string),
        method: None,
        path: None,
        source: source.into(),
    })?)
}
