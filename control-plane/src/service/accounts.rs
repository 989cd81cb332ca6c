//! People's accounts: argon2id passwords, one-time links (invitation, password reset,
//! bootstrap sign-in; only their hashes are kept), disabling and deleting users, and the
//! edge credentials' list and revocation.

use super::tokens::{apply_enabled, revoke_one};
use super::views::{LinkView, UserView};
use super::{audit, load_org, load_user, Ctx, Error, Result};
use crate::crypto;
use crate::model::User;
use crate::policy::{self, Actor};
use crate::store::accounts::{Account, SignInLink};
use crate::store::{TokenScope, Tx};
use crate::timefmt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// How long an invitation stays usable when the admin does not say.
pub const INVITE_DAYS_DEFAULT: i64 = 7;
/// The longest an invitation may stay usable.
pub const INVITE_DAYS_MAX: i64 = 30;
/// How long a password-reset or bootstrap link stays usable.
pub const RESET_SECS: i64 = 24 * 3600;
pub const PASSWORD_MIN: usize = 10;
pub const PASSWORD_MAX: usize = 1024;

/// An argon2id PHC string for `password` (the crate's default cost: 19 MiB, t=2, p=1,
/// OWASP's first recommendation). Slow by design: callers run it off the store's
/// transaction.
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&crypto::random_bytes::<16>().map_err(Error::internal)?)
        .map_err(Error::internal)?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(Error::internal)?
        .to_string())
}

/// Whether `password` matches the PHC string; `None` checks against a fixed throwaway
/// hash so an unknown user costs the same time as a wrong password.
pub fn verify_password(password: &str, phc: Option<&str>) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default());
    let (phc, real) = match phc {
        Some(p) => (p, true),
        None => (dummy.as_str(), false),
    };
    let ok = PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false);
    ok && real
}

/// The least zxcvbn score (0 to 4) a new password must reach: 3 is "safely unguessable:
/// moderate protection from an offline slow-hash scenario" (about 10^8 guesses or more).
pub const PASSWORD_MIN_SCORE: u8 = 3;

/// What a new password must be, said the same way on the page, the API and the CLI.
pub const PASSWORD_RULE: &str =
    "at least 10 characters, and not a common password, a word with a few changes, or a pattern such as aaaa or 1234";

/// Checks a new password: its length, then its strength as zxcvbn estimates it (common
/// passwords, dictionary words, names, keyboard patterns, repeats and sequences), with
/// the user's own names as words an attacker would try first. The refusal says what is
/// wrong in words and the rule.
pub fn check_password(field: &str, password: &str, own_words: &[&str]) -> Result<()> {
    let n = password.chars().count();
    if n < PASSWORD_MIN {
        return Err(Error::field(field, format!("too short: {PASSWORD_RULE}")));
    }
    if password.len() > PASSWORD_MAX {
        return Err(Error::field(field, format!("at most {PASSWORD_MAX} bytes")));
    }
    let estimate = zxcvbn::zxcvbn(password, own_words);
    if u8::from(estimate.score()) >= PASSWORD_MIN_SCORE {
        return Ok(());
    }
    let why = estimate
        .feedback()
        .and_then(|f| f.warning())
        .map(|w| w.to_string())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "this password is easy to guess".to_string());
    let why = why.trim_end_matches('.');
    Err(Error::field(
        field,
        format!("too weak ({why}): {PASSWORD_RULE}"),
    ))
}

/// The account of a user (a default one when none is stored yet).
pub fn account_of(tx: &mut dyn Tx, user_id: &str) -> Result<Account> {
    Ok(tx.get_account(user_id)?.unwrap_or_else(|| Account {
        user_id: user_id.to_string(),
        prefs: json!({}),
        ..Account::default()
    }))
}

/// `invited` (no password, no token handed out and no single sign-on yet: the invitation
/// is all they have), `active`, `disabled` or `deleted`. A user who works with a token only
/// (the bootstrap admin, whose token was printed) or signs in through SSO is active.
pub fn state_of(tx: &mut dyn Tx, a: &Account) -> Result<&'static str> {
    Ok(if a.deleted_at.is_some() {
        "deleted"
    } else if a.disabled_at.is_some() {
        "disabled"
    } else if a.password_hash.is_some() || tx.holds_credential(&a.user_id)? {
        "active"
    } else {
        "invited"
    })
}

/// A user as seen by an admin: with their account state.
pub fn user_view(tx: &mut dyn Tx, user: &User) -> Result<UserView> {
    let mut v = UserView::new(user);
    let account = account_of(tx, &user.id)?;
    v.state = Some(state_of(tx, &account)?.to_string());
    Ok(v)
}

/// Issues a one-time link for `user`: a random secret in the URL's fragment (never sent
/// to a server log or a `Referer`), its SHA-256 in the store. It voids the user's older
/// unused links of the same kind.
pub fn issue_link(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    user: &User,
    kind: &str,
    ttl: i64,
) -> Result<LinkView> {
    let secret = crypto::hex(&crypto::random_bytes::<32>().map_err(Error::internal)?);
    let link = SignInLink {
        secret_sha256: crypto::sha256_hex(secret.as_bytes()),
        user_id: user.id.clone(),
        kind: kind.to_string(),
        created_at: ctx.now,
        expires_at: ctx.now + ttl,
        used_at: None,
    };
    tx.void_links(&user.id, Some(kind), ctx.now)?;
    tx.insert_link(&link)?;
    Ok(LinkView {
        kind: kind.to_string(),
        url: format!("{}/#/{kind}/{secret}", ctx.base_url),
        expires_at: timefmt::format(link.expires_at),
    })
}

/// The invitation a new user gets (`users::create_user` calls this).
pub fn invite(tx: &mut dyn Tx, ctx: &Ctx, user: &User, days: Option<i64>) -> Result<LinkView> {
    let days = invite_days(days)?;
    issue_link(tx, ctx, user, "invite", days * 86_400)
}

/// How many days an invitation stays usable (the default when not given).
pub fn invite_days(days: Option<i64>) -> Result<i64> {
    let days = days.unwrap_or(INVITE_DAYS_DEFAULT);
    if !(1..=INVITE_DAYS_MAX).contains(&days) {
        return Err(Error::field(
            "invite_days",
            format!("1 to {INVITE_DAYS_MAX} days"),
        ));
    }
    Ok(days)
}

/// Whether the caller may receive a link for a user of `org`: only an admin of that org
/// (a link is the user's password). The admins of the org managing it (a partner, the
/// root) receive one only while the org has no enabled admin of its own, to set it up.
pub fn link_reaches(tx: &mut dyn Tx, actor: &Actor, org: &crate::model::Org) -> Result<bool> {
    Ok(actor.org.id == org.id || super::users::enabled_admins(tx, &org.id)?.is_empty())
}

/// An admin of the user's org issues a password-reset link (the admins of the org
/// managing it only while the org has no enabled admin). Resetting another user's
/// existing account also ends every session of that user and revokes the tokens waiting
/// for their download, so that the admin never signs in as them and takes those; all of
/// it is in the audit log.
pub fn reset_link(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, user_id: &str) -> Result<UserView> {
    let user = user_for(tx, actor, user_id)?;
    let org = load_org(tx, &user.org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    if !link_reaches(tx, actor, &org)? {
        return Err(Error::forbidden(format!(
            "a reset link for a user of {} is issued only by an admin of {}",
            org.id, org.id
        )));
    }
    super::authority::require_unlimited(tx, actor, "link", "a reset link sets a password, which")?;
    let account = account_of(tx, &user.id)?;
    if account.disabled_at.is_some() {
        return Err(Error::conflict(format!(
            "{} is disabled; enable the user first",
            user.username
        )));
    }
    // With mail, the link goes to the user's own address only; without one, no link.
    let mail_to = if ctx.mail {
        match super::mail::address_of(tx, &user.id)? {
            Some((a, _)) => Some(a),
            None => {
                return Err(Error::conflict(format!(
                    "{} has no mail address, and this server mails reset links to their user \
                     only: they give one under Notifications, or their identity provider \
                     sends one",
                    user.username
                )))
            }
        }
    } else {
        None
    };
    let mut voided = Vec::new();
    let takeover = user.id != actor.user.id && account.password_hash.is_some();
    if takeover {
        tx.end_user_sessions(&user.id, ctx.now)?;
        for mut t in tx.live_unrevoked_tokens(&TokenScope::User(user.id.clone()))? {
            if t.jwt_sha256.is_none() {
                revoke_one(tx, ctx, &mut t)?;
                voided.push(t.id);
            }
        }
    }
    let link = issue_link(tx, ctx, &user, "reset", RESET_SECS)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "user.reset_link",
        &user.id,
        json!({"expires_at": link.expires_at, "sessions_ended": takeover, "pending_revoked": voided, "mailed": mail_to.is_some()}),
    )?;
    let mut v = user_view(tx, &user)?;
    match mail_to {
        Some(to) => {
            super::mail::mail_link(tx, ctx, &user, &to, &link)?;
            v.link_mailed_to = Some(to);
        }
        None => v.link = Some(link),
    }
    Ok(v)
}

/// A user that is not deleted.
pub fn live_user(tx: &mut dyn Tx, user_id: &str) -> Result<User> {
    let user = load_user(tx, user_id)?;
    if tx
        .get_account(user_id)?
        .is_some_and(|a| a.deleted_at.is_some())
    {
        return Err(Error::not_found(format!("no user {user_id:?}")));
    }
    Ok(user)
}

/// A user that is not deleted, looked up for `actor` by id or by username (in the
/// caller's organization): a user of an organization the
/// caller has nothing to do with (not theirs, not managed by their partner org, and the
/// caller not in the root org) is answered like an unknown id, 404, as a token id is, so
/// ids do not tell which organization they belong to.
pub fn user_for(tx: &mut dyn Tx, actor: &Actor, user_id: &str) -> Result<User> {
    // An id, or a username of the caller's own organization (as the page and the CLI
    // show them).
    let id = match tx.get_user(user_id)? {
        Some(u) => u.id,
        None => tx
            .find_user(&actor.org.id, user_id)?
            .map(|u| u.id)
            .ok_or_else(|| Error::not_found(format!("no user {user_id:?}")))?,
    };
    let user = live_user(tx, &id)?;
    if user.org_id != actor.org.id && !actor.org.is_root {
        let org = load_org(tx, &user.org_id)?;
        if org.partner_org_id.as_deref() != Some(actor.org.id.as_str()) {
            return Err(Error::not_found(format!("no user {user_id:?}")));
        }
    }
    Ok(user)
}

/// Why a link cannot be used (the same words whether it never existed or was used).
pub const LINK_UNUSABLE: &str = "this link is not valid: it was already used or never issued";
pub const LINK_EXPIRED: &str = "this link has expired; ask an admin for a new one";

/// The user a link is for, if the link can be used now, and the words a password for
/// them must not be built from (their username, display name and organization). A
/// read, done before any password work.
pub fn usable_link(tx: &mut dyn Tx, ctx: &Ctx, secret: &str) -> Result<(User, Vec<String>)> {
    let link = tx
        .get_link(&crypto::sha256_hex(secret.as_bytes()))?
        .filter(|l| l.used_at.is_none())
        .ok_or_else(|| Error::field("secret", LINK_UNUSABLE))?;
    if link.expires_at <= ctx.now {
        return Err(Error::field("secret", LINK_EXPIRED));
    }
    let user = load_user(tx, &link.user_id)?;
    let account = account_of(tx, &user.id)?;
    if account.deleted_at.is_some() || account.disabled_at.is_some() {
        return Err(Error::field("secret", LINK_UNUSABLE));
    }
    let org = super::load_org(tx, &user.org_id)?;
    let words = vec![
        user.username.clone(),
        user.display_name.clone(),
        org.name,
        org.id,
    ];
    Ok((user, words))
}

/// Consumes a one-time link and sets the password; the caller then starts a session.
/// `hash` was computed off the transaction.
pub fn accept_link(tx: &mut dyn Tx, ctx: &Ctx, secret: &str, hash: String) -> Result<User> {
    let h = crypto::sha256_hex(secret.as_bytes());
    let link = tx
        .get_link(&h)?
        .filter(|l| l.used_at.is_none())
        .ok_or_else(|| Error::field("secret", LINK_UNUSABLE))?;
    if link.expires_at <= ctx.now {
        return Err(Error::field("secret", LINK_EXPIRED));
    }
    let user = load_user(tx, &link.user_id)?;
    let mut account = account_of(tx, &user.id)?;
    if account.deleted_at.is_some() || account.disabled_at.is_some() {
        return Err(Error::field("secret", LINK_UNUSABLE));
    }
    if !tx.use_link(&h, ctx.now)? {
        return Err(Error::field("secret", LINK_UNUSABLE));
    }
    account.password_hash = Some(hash);
    tx.put_account(&account)?;
    // A new password ends the sessions made with the old one, and voids every other link.
    tx.end_user_sessions(&user.id, ctx.now)?;
    tx.void_links(&user.id, None, ctx.now)?;
    audit(
        tx,
        ctx,
        &user.id,
        &user.org_id,
        "user.password_set",
        &user.id,
        json!({"link": link.kind}),
    )?;
    Ok(user)
}

/// Disables a user: their sessions end, their enabled tokens are suspended (and come back
/// when the user is enabled again), they cannot sign in.
pub fn disable_user(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, user_id: &str) -> Result<UserView> {
    let (user, mut account) = managed_user(tx, actor, user_id)?;
    if account.disabled_at.is_some() {
        return Err(Error::conflict("the user is already disabled"));
    }
    super::users::keep_an_admin(tx, &user, "disabled")?;
    let mut suspended = Vec::new();
    for mut t in tx.live_unrevoked_tokens(&TokenScope::User(user.id.clone()))? {
        if t.enabled {
            apply_enabled(ctx, tx, &mut t, false)?;
            tx.update_token(&t)?;
            suspended.push(t.id);
        }
    }
    account.disabled_at = Some(ctx.now);
    account.suspended_tokens = suspended.clone();
    tx.put_account(&account)?;
    tx.end_user_sessions(&user.id, ctx.now)?;
    tx.void_links(&user.id, None, ctx.now)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &user.org_id,
        "user.disable",
        &user.id,
        json!({"suspended": suspended}),
    )?;
    user_view(tx, &user)
}

/// Enables a disabled user, and the tokens disabling them suspended.
pub fn enable_user(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, user_id: &str) -> Result<UserView> {
    let (user, mut account) = managed_user(tx, actor, user_id)?;
    if account.disabled_at.is_none() {
        return Err(Error::conflict("the user is not disabled"));
    }
    let mut resumed = Vec::new();
    for id in std::mem::take(&mut account.suspended_tokens) {
        if let Some(mut t) = tx.get_token(&id)? {
            if t.revoked_at.is_none() && t.deleted_at.is_none() && !t.enabled {
                apply_enabled(ctx, tx, &mut t, true)?;
                tx.update_token(&t)?;
                resumed.push(t.id);
            }
        }
    }
    account.disabled_at = None;
    tx.put_account(&account)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &user.org_id,
        "user.enable",
        &user.id,
        json!({"resumed": resumed}),
    )?;
    user_view(tx, &user)
}

/// Deletes a user: every token revoked, sessions ended, links unusable, sign-in refused.
/// The record stays (the logs name it), hidden from listings.
pub fn delete_user(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, user_id: &str) -> Result<UserView> {
    let (user, _) = managed_user(tx, actor, user_id)?;
    super::users::keep_an_admin(tx, &user, "deleted")?;
    erase_user(tx, ctx, actor, &user, json!({}))?;
    user_view(tx, &user)
}

/// What deleting a user does, however it is asked for (the API, SCIM): every token
/// revoked (final), sign-in refused, sessions ended, links voided, the username free
/// again, and a `user.delete` audit entry with `detail` and the revoked tokens. The
/// caller has checked who may delete whom.
pub fn erase_user(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    user: &User,
    mut detail: serde_json::Value,
) -> Result<()> {
    let mut revoked = Vec::new();
    for mut t in tx.live_unrevoked_tokens(&TokenScope::User(user.id.clone()))? {
        revoke_one(tx, ctx, &mut t)?;
        revoked.push(t.id);
    }
    let mut account = account_of(tx, &user.id)?;
    account.deleted_at = Some(ctx.now);
    account.password_hash = None;
    account.suspended_tokens.clear();
    tx.put_account(&account)?;
    // The username is free again for a new user; the deleted one keeps it with a mark
    // no username can contain, so logs still read `bob (deleted)`.
    let mut retired = user.clone();
    retired.username = tombstone(user);
    tx.rename_user(&retired)?;
    tx.end_user_sessions(&user.id, ctx.now)?;
    tx.void_links(&user.id, None, ctx.now)?;
    if let Some(d) = detail.as_object_mut() {
        d.insert("revoked".into(), json!(revoked));
    }
    audit(
        tx,
        ctx,
        &actor.user.id,
        &user.org_id,
        "user.delete",
        &user.id,
        detail,
    )
}

/// The mark between a deleted user's username and their id's tail: never in a username
/// (`input::check_username`).
pub const TOMBSTONE_MARK: char = '~';

/// `bob~0193a1f2c4de5f0c1d0ddbd7`: a deleted user's username, unique in its org (the whole
/// id tail: its start is only the creation time) and never a live one.
fn tombstone(user: &User) -> String {
    let tail = user.id.strip_prefix("usr_").unwrap_or(&user.id);
    format!("{}{TOMBSTONE_MARK}{tail}", user.username)
}

/// How people read a username: a deleted user's as `bob (deleted)`.
pub fn shown_username(username: &str) -> String {
    match username.split_once(TOMBSTONE_MARK) {
        Some((name, _)) => format!("{name} (deleted)"),
        None => username.to_string(),
    }
}

/// A live user the caller administers (never the caller themselves).
fn managed_user(tx: &mut dyn Tx, actor: &Actor, user_id: &str) -> Result<(User, Account)> {
    let user = user_for(tx, actor, user_id)?;
    let org = load_org(tx, &user.org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    if user.id == actor.user.id {
        return Err(Error::forbidden("you cannot disable or delete yourself"));
    }
    let account = account_of(tx, &user.id)?;
    Ok((user, account))
}

/// An edge credential as listed (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EdgeView {
    pub id: String,
    pub org: String,
    pub name: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// An org's edge credentials.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EdgeList {
    pub edges: Vec<EdgeView>,
}

fn edge_view(r: crate::store::accounts::EdgeRecord) -> EdgeView {
    EdgeView {
        id: r.edge.id,
        org: r.edge.org_id,
        name: r.edge.name,
        created_at: timefmt::format(r.edge.created_at),
        revoked_at: r.revoked_at.map(timefmt::format),
    }
}

pub fn list_edges(tx: &mut dyn Tx, actor: &Actor, org_id: &str) -> Result<EdgeList> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    Ok(EdgeList {
        edges: tx.list_edges(org_id)?.into_iter().map(edge_view).collect(),
    })
}

/// Revokes an edge credential: its secret stops authenticating in this commit, so its
/// next usage report is refused.
pub fn revoke_edge(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    id: &str,
) -> Result<EdgeView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let found = tx
        .get_edge(id)?
        .filter(|e| e.edge.org_id == org.id)
        .ok_or_else(|| Error::not_found(format!("no edge credential {id:?}")))?;
    if found.revoked_at.is_some() {
        return Err(Error::conflict("the edge credential is already revoked"));
    }
    tx.revoke_edge(id, ctx.now)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "edge.revoke",
        id,
        json!({"name": found.edge.name}),
    )?;
    let r = tx
        .get_edge(id)?
        .ok_or_else(|| Error::internal("revoked edge credential vanished"))?;
    Ok(edge_view(r))
}

/// The web page's remembered choices for the caller (hidden columns, page size).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Prefs {
    /// Any JSON object the page keeps (at most 4 KiB).
    #[schema(value_type = Object)]
    pub prefs: serde_json::Value,
}

pub fn get_prefs(tx: &mut dyn Tx, actor: &Actor) -> Result<Prefs> {
    let a = account_of(tx, &actor.user.id)?;
    let prefs = if a.prefs.is_object() {
        a.prefs
    } else {
        json!({})
    };
    Ok(Prefs { prefs })
}

pub fn put_prefs(tx: &mut dyn Tx, actor: &Actor, prefs: Prefs) -> Result<Prefs> {
    if !prefs.prefs.is_object() {
        return Err(Error::field("prefs", "a JSON object"));
    }
    if prefs.prefs.to_string().len() > 4096 {
        return Err(Error::field("prefs", "at most 4096 bytes"));
    }
    let mut a = account_of(tx, &actor.user.id)?;
    a.prefs = prefs.prefs.clone();
    tx.put_account(&a)?;
    Ok(prefs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused_with_the_rule() {
        for weak in [
            "aaaaaaaaaa",
            "1234567890",
            "password123",
            "qwertyuiop",
            "Password1!",
            "bob-the-user",
        ] {
            let e = check_password("password", weak, &["bob-the-user", "acme"]).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(PASSWORD_RULE), "{weak}: {msg}");
            assert!(msg.starts_with("password: too"), "{weak}: {msg}");
        }
        assert!(check_password("password", "short", &[])
            .unwrap_err()
            .to_string()
            .contains("too short"));
    }

    #[test]
    fn the_passwords_the_suites_use_are_strong_enough() {
        for strong in [
            "correct horse battery",
            "a long enough password",
            "bob's long password",
            "a long password",
            "the admin's password",
            "rita's long password",
        ] {
            check_password("password", strong, &[]).unwrap_or_else(|e| panic!("{strong}: {e}"));
        }
    }
}
