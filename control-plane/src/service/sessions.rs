//! Web sessions: signing in with a password (throttled per account and per client
//! address, every attempt in the audit log), the session a cookie names (idle and absolute
//! timeouts, CSRF token), and signing out. Sessions live in the store, so replicas share
//! them.

use super::accounts::{account_of, verify_password};
use super::{audit, Ctx, Error, Result};
use crate::crypto;
use crate::model::{Org, User};
use crate::policy::{Actor, Credential};
use crate::store::accounts::{Session, SignInCutoffs};
use crate::store::Tx;
use serde_json::json;
use std::net::{IpAddr, Ipv6Addr};

/// The session cookie's name.
pub const COOKIE: &str = "tessera_session";
/// The header every state-changing request made with a session cookie carries.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session ends after this long without a request.
pub const IDLE_SECS: i64 = 30 * 60;
/// A session ends this long after sign-in, whatever its use.
pub const ABSOLUTE_SECS: i64 = 12 * 3600;
/// A session's last use is written at most this often (a request within it only reads).
pub const TOUCH_EVERY_SECS: i64 = 60;

/// Free failures per account before delays start, and per client address.
pub const ACCOUNT_FREE_FAILURES: i64 = 3;
pub const ADDRESS_FREE_FAILURES: i64 = 10;
/// The longest delay; delays double from 1 s after the free failures.
pub const MAX_DELAY_SECS: i64 = 15 * 60;
/// Failures older than this are forgotten.
pub const FORGET_SECS: i64 = 3600;

/// The one answer to a wrong organization, username or password, an account without a
/// password, and a disabled one.
pub const WRONG_CREDENTIALS: &str = "wrong organization, username or password";

/// Stable reason: a right password of a user whose organization requires single sign-on.
pub const SSO_REQUIRED: &str = "sso_required";

/// The address a throttle or a rate limit counts: an IPv4 address whole, an IPv6 one by
/// its /64 (one subscriber's usual allocation, so rotating through it gains nothing), an
/// IPv4-mapped IPv6 address as the IPv4 one.
pub fn address_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The throttle keys of an attempt, each with its free failures: the client address
/// first (by [`address_bucket`]), then the account as named (existing or not). The
/// address comes first so that one client's burst is stopped by its own limit before it
/// can push the account's delay up: a stranger locks the real user out for seconds, not
/// the longest delay.
pub fn throttle_keys(org: &str, username: &str, ip: Option<&str>) -> Vec<(String, i64)> {
    let mut keys = Vec::with_capacity(2);
    if let Some(ip) = ip {
        let addr = ip
            .parse::<IpAddr>()
            .map_or_else(|_| ip.to_string(), |a| address_bucket(a).to_string());
        keys.push((format!("addr:{addr}"), ADDRESS_FREE_FAILURES));
    }
    keys.push((format!("user:{org}/{username}"), ACCOUNT_FREE_FAILURES));
    keys
}

/// The delay after `failures` failures with `free` free ones: none, then 1, 2, 4, ... s.
pub fn delay_after(failures: i64, free: i64) -> i64 {
    if failures < free {
        0
    } else {
        let exp = (failures - free).min(20) as u32;
        (1i64 << exp).min(MAX_DELAY_SECS)
    }
}

/// Seconds the attempt must wait, if a throttle row is delaying it: a read, done before
/// the reservation so that attempts refused anyway cost no write (the reservation checks
/// again, atomically).
pub fn waiting(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org: &str,
    username: &str,
    ip: Option<&str>,
) -> Result<Option<i64>> {
    let mut wait = 0;
    for (k, _) in throttle_keys(org, username, ip) {
        if let Some(t) = tx.get_throttle(&k)? {
            if ctx.now - t.last_at < FORGET_SECS {
                wait = wait.max(t.locked_until - ctx.now);
            }
        }
    }
    Ok((wait > 0).then_some(wait))
}

/// Reserves one attempt, atomically on both backends and across replicas: the throttle
/// rows are locked (address, then account, always in that order), and if any of them is
/// delaying, the attempt is refused without being counted; otherwise it is counted as a
/// failure on every key *before* the password is checked, so a burst of simultaneous
/// attempts is counted in full. A success gives the reservation back
/// ([`finish_sign_in`]).
pub fn reserve_attempt(tx: &mut dyn Tx, ctx: &Ctx, keys: &[(String, i64)]) -> Result<()> {
    let mut rows = Vec::with_capacity(keys.len());
    let mut wait = 0;
    for (k, free) in keys {
        let mut t = tx.lock_throttle(k, ctx.now)?;
        if ctx.now - t.last_at >= FORGET_SECS {
            t.failures = 0;
            t.locked_until = 0;
        }
        wait = wait.max(t.locked_until - ctx.now);
        rows.push((t, *free));
    }
    if wait > 0 {
        return Err(Error::Throttled { retry_after: wait });
    }
    for (mut t, free) in rows {
        t.failures += 1;
        t.last_at = ctx.now;
        t.locked_until = ctx.now + delay_after(t.failures, free);
        tx.put_throttle(&t)?;
    }
    Ok(())
}

/// Gives back a successful attempt's reservation: the account's failures are cleared,
/// the address's count loses the one this attempt added.
fn release_attempt(tx: &mut dyn Tx, ctx: &Ctx, keys: &[(String, i64)]) -> Result<()> {
    for (k, free) in keys {
        if k.starts_with("user:") {
            tx.clear_throttle(k)?;
            continue;
        }
        let mut t = tx.lock_throttle(k, ctx.now)?;
        t.failures = (t.failures - 1).max(0);
        if delay_after(t.failures, *free) == 0 {
            t.locked_until = 0;
        }
        tx.put_throttle(&t)?;
    }
    Ok(())
}

/// What the sign-in read found: the user and their password hash, if any.
#[derive(Clone)]
pub struct Candidate {
    pub org: Option<Org>,
    pub user: Option<User>,
    pub hash: Option<String>,
    /// Why it cannot succeed whatever the password (for the audit log only).
    pub blocked: Option<&'static str>,
}

/// Phase 1 (a write): reserves the attempt in the throttle ([`reserve_attempt`]), then
/// finds the account. The password is checked off the transaction (argon2 is slow by
/// design, and bounded by the caller), then [`finish_sign_in`] records the outcome.
pub fn begin_sign_in(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org: &str,
    username: &str,
    ip: Option<&str>,
) -> Result<Candidate> {
    reserve_attempt(tx, ctx, &throttle_keys(org, username, ip))?;
    let org = tx.get_org(org)?;
    let user = match &org {
        Some(o) => tx.find_user(&o.id, username)?,
        None => None,
    };
    let (hash, blocked) = match &user {
        None => (None, Some("unknown user")),
        Some(u) => {
            let a = account_of(tx, &u.id)?;
            if a.deleted_at.is_some() {
                (None, Some("deleted"))
            } else if a.disabled_at.is_some() {
                (None, Some("disabled"))
            } else if a.password_hash.is_none() {
                (None, Some("no password set"))
            } else {
                (a.password_hash, None)
            }
        }
    };
    Ok(Candidate {
        org,
        user,
        hash,
        blocked,
    })
}

/// Checks the password against the candidate (an unknown user costs the same).
pub fn password_matches(c: &Candidate, password: &str) -> bool {
    let ok = verify_password(password, c.hash.as_deref());
    ok && c.blocked.is_none()
}

/// A new session: the cookie's secret (shown once, to set the cookie) and the record.
pub struct Started {
    pub secret: String,
    pub session: Session,
    pub actor: Actor,
}

/// Starts a session for `user` (after a password, a one-time link or the first-run setup,
/// or through the identity provider whose issuer is `sso_issuer`), acts as it for the rest
/// of the transaction, and records the sign-in (`session.sign_in` with `detail`: how).
pub fn start_session(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    user: &User,
    sso_issuer: Option<&str>,
    detail: serde_json::Value,
) -> Result<Started> {
    let secret = crypto::hex(&crypto::random_bytes::<32>().map_err(Error::internal)?);
    let session = Session {
        id: crypto::new_id("ses").map_err(Error::internal)?,
        secret_sha256: crypto::sha256_hex(secret.as_bytes()),
        user_id: user.id.clone(),
        csrf: crypto::hex(&crypto::random_bytes::<32>().map_err(Error::internal)?),
        created_at: ctx.now,
        last_seen_at: ctx.now,
        ended_at: None,
        sso_issuer: sso_issuer.map(str::to_owned),
    };
    tx.insert_session(&session)?;
    let org = super::load_org(tx, &user.org_id)?;
    let actor = Actor {
        user: user.clone(),
        org,
        token_id: String::new(),
        credential: Credential::Session {
            id: session.id.clone(),
        },
    };
    ctx.act_with(actor.credential.label());
    audit(
        tx,
        ctx,
        &user.id,
        &user.org_id,
        "session.sign_in",
        &user.id,
        detail,
    )?;
    Ok(Started {
        secret,
        session,
        actor,
    })
}

/// How a password sign-in ended ([`finish_sign_in`]).
pub enum Finished {
    Started(Box<Started>),
    /// Wrong organization, username or password (or an account that cannot sign in).
    Refused,
    /// The right password, but the user's organization requires single sign-on; why, in
    /// words.
    SsoRequired(String),
}

/// Phase 3 (a write): records the outcome and, on success, gives the throttle
/// reservation back and starts the session. A failure is returned as `Ok(Finished::Refused)` so it is
/// committed. A failure against an existing org is in that org's audit log; one naming
/// no org is logged by the service only (it belongs to no organization).
pub fn finish_sign_in(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    c: &Candidate,
    org_name: &str,
    username: &str,
    ip: Option<&str>,
    ok: bool,
) -> Result<Finished> {
    match (&c.user, ok) {
        (Some(user), true) => {
            release_attempt(tx, ctx, &throttle_keys(org_name, username, ip))?;
            // An org that requires single sign-on refuses its users' passwords; its admins
            // keep a break-glass password sign-in, marked as such in the audit log.
            if let Some(why) = super::sso::password_refused(tx, user)? {
                audit(
                    tx,
                    ctx,
                    "anonymous",
                    &user.org_id,
                    "session.sign_in_failed",
                    &user.id,
                    json!({"ip": ip, "org": org_name, "username": username, "why": "single sign-on required"}),
                )?;
                return Ok(Finished::SsoRequired(why));
            }
            let break_glass = super::sso::break_glass(tx, user)?;
            let detail = if break_glass {
                json!({"ip": ip, "break_glass": true})
            } else {
                json!({"ip": ip})
            };
            let started = start_session(tx, ctx, user, None, detail)?;
            Ok(Finished::Started(Box::new(started)))
        }
        _ => {
            let why = c.blocked.unwrap_or("wrong password");
            match &c.org {
                Some(org) => {
                    let target = c
                        .user
                        .as_ref()
                        .map_or_else(|| username.to_string(), |u| u.id.clone());
                    audit(
                        tx,
                        ctx,
                        "anonymous",
                        &org.id,
                        "session.sign_in_failed",
                        &target,
                        json!({"ip": ip, "org": org_name, "username": username, "why": why}),
                    )?;
                }
                None => tracing::info!(
                    ip = ip.unwrap_or("-"),
                    org = %org_name.escape_debug(),
                    username = %username.escape_debug(),
                    "sign-in failed: no such organization"
                ),
            }
            Ok(Finished::Refused)
        }
    }
}

/// How long a used or expired link is kept (so that using it again says "expired" or
/// "already used" rather than nothing) before it is pruned.
pub const KEEP_LINKS_SECS: i64 = 30 * 86_400;

/// Deletes ended and timed-out sessions, throttle rows forgotten and no longer delaying,
/// and links used or expired more than [`KEEP_LINKS_SECS`] ago (`tessera serve`, hourly).
pub fn prune(tx: &mut dyn Tx, ctx: &Ctx) -> Result<u64> {
    let sso = tx.prune_sso_logins(ctx.now)?;
    Ok(sso
        + tx.prune_sign_in(&SignInCutoffs {
            now: ctx.now,
            sessions_before: ctx.now - IDLE_SECS,
            started_before: ctx.now - ABSOLUTE_SECS,
            throttles_before: ctx.now - FORGET_SECS,
            links_before: ctx.now - KEEP_LINKS_SECS,
        })?)
}

/// The caller a session cookie names: the session must be open, used within the idle
/// timeout and younger than the absolute one, its user live; a state-changing request
/// must carry the session's CSRF token (`csrf` is `None` for a safe method). Answers the
/// actor and whether the session's last use should be written.
pub fn authenticate(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    secret: &str,
    csrf: Option<Option<&str>>,
) -> Result<(Actor, bool)> {
    let gone = || Error::Unauthenticated("the session has ended; sign in again".into());
    let s = tx
        .get_session(&crypto::sha256_hex(secret.as_bytes()))?
        .ok_or_else(gone)?;
    if s.ended_at.is_some()
        || ctx.now - s.last_seen_at >= IDLE_SECS
        || ctx.now - s.created_at >= ABSOLUTE_SECS
    {
        return Err(gone());
    }
    if let Some(sent) = csrf {
        // Compared through their hashes, so the time taken says nothing about the token.
        let same = sent.is_some_and(|t| {
            crypto::sha256_hex(t.as_bytes()) == crypto::sha256_hex(s.csrf.as_bytes())
        });
        if !same {
            return Err(Error::denied(
                "csrf_token_invalid",
                format!("send the session's CSRF token in {CSRF_HEADER}"),
            ));
        }
    }
    let user = tx.get_user(&s.user_id)?.ok_or_else(gone)?;
    let a = account_of(tx, &user.id)?;
    if a.disabled_at.is_some() || a.deleted_at.is_some() {
        return Err(gone());
    }
    let org = super::load_org(tx, &user.org_id)?;
    let touch = ctx.now - s.last_seen_at >= TOUCH_EVERY_SECS;
    Ok((
        Actor {
            user,
            org,
            token_id: String::new(),
            credential: Credential::Session { id: s.id },
        },
        touch,
    ))
}

/// Checks, inside a write, that a session the caller authenticated with is still open.
pub fn still_open(tx: &mut dyn Tx, ctx: &Ctx, id: &str) -> Result<()> {
    let open = tx.session_by_id(id)?.is_some_and(|s| {
        s.ended_at.is_none()
            && ctx.now - s.last_seen_at < IDLE_SECS
            && ctx.now - s.created_at < ABSOLUTE_SECS
    });
    if open {
        Ok(())
    } else {
        Err(Error::Unauthenticated(
            "the session has ended; sign in again".into(),
        ))
    }
}

pub fn touch(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor) -> Result<()> {
    if let Credential::Session { id } = &actor.credential {
        tx.touch_session(id, ctx.now)?;
    }
    Ok(())
}

/// The identity provider a session signed out of was signed in through, for ending the
/// provider's session too (OpenID Connect RP-Initiated Logout).
pub struct ProviderSession {
    pub issuer: String,
    pub client_id: String,
}

/// Ends the caller's session on the server; answers the identity provider it was signed in
/// through, when its org's connection still names that provider.
pub fn sign_out(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor) -> Result<Option<ProviderSession>> {
    let Credential::Session { id } = &actor.credential else {
        return Err(Error::bad_request("not signed in with a session"));
    };
    let issuer = tx.session_by_id(id)?.and_then(|s| s.sso_issuer);
    tx.end_session(id, ctx.now)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &actor.user.org_id,
        "session.sign_out",
        &actor.user.id,
        json!({}),
    )?;
    let Some(issuer) = issuer else {
        return Ok(None);
    };
    Ok(tx
        .get_sso_connection(&actor.user.org_id)?
        .filter(|c| c.issuer == issuer)
        .map(|c| ProviderSession {
            issuer,
            client_id: c.client_id,
        }))
}

/// The CSRF token of the caller's session.
pub fn csrf_of(tx: &mut dyn Tx, actor: &Actor) -> Result<String> {
    let Credential::Session { id } = &actor.credential else {
        return Err(Error::bad_request("not signed in with a session"));
    };
    tx.session_by_id(id)?
        .map(|s| s.csrf)
        .ok_or_else(|| Error::Unauthenticated("the session has ended".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_counted_by_its_64() {
        let a = throttle_keys("o", "u", Some("2001:db8:1:2:aaaa::1"));
        let b = throttle_keys("o", "u", Some("2001:db8:1:2:bbbb::7"));
        assert_eq!(a[0].0, "addr:2001:db8:1:2::");
        assert_eq!(a, b);
        let v4 = throttle_keys("o", "u", Some("::ffff:192.0.2.1"));
        assert_eq!(v4[0].0, "addr:192.0.2.1");
        assert_eq!(v4[1], ("user:o/u".to_string(), ACCOUNT_FREE_FAILURES));
    }

    #[test]
    fn delays_grow_and_cap() {
        let got: Vec<i64> = (0..8).map(|f| delay_after(f, 3)).collect();
        assert_eq!(got, [0, 0, 0, 1, 2, 4, 8, 16]);
        assert_eq!(delay_after(100, 3), MAX_DELAY_SECS);
    }
}
