//! First run in the browser (issue 24): on a database without any organization, `tessera
//! serve` issues a one-time setup secret (only its SHA-256 is stored, in the `settings` row
//! [`SETTING`]) and prints the link `<base URL>/#/setup/<secret>`; the web page's form
//! sends it with the first organization, its admin and their password to `POST /v1/setup`,
//! which creates both, signs the admin in and voids the secret. The CLI equivalent, with
//! database access, is `tessera admin bootstrap`.
//!
//! The route is unauthenticated: it is under the per-address rate limit, its fields are
//! checked before anything is read, the secret is checked (in constant time, on a read)
//! before the password is judged or hashed, and everything is checked again under the
//! setup row's lock in the write, so two uses at once create one organization.

use super::input::{check_org_id, check_text, check_username};
use super::{audit, Ctx, Error, Result};
use crate::crypto;
use crate::model::{KeyAlg, Role, User};
use crate::store::Tx;
use crate::timefmt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

/// The `settings` key holding the setup secret's hash, expiry and use.
pub const SETTING: &str = "setup";
/// How long a setup link stays usable (a restart on a still-empty database prints a new
/// one, which replaces it).
pub const SETUP_SECS: i64 = 24 * 3600;
/// Why a setup secret cannot be used (the same words whether it never existed, was used
/// or was replaced by a newer one).
pub const SETUP_UNUSABLE: &str = "this setup link is not valid: it was already used, replaced by a newer one (tessera serve prints a new one each time it starts on an empty database), or never issued";
pub const SETUP_EXPIRED: &str =
    "this setup link has expired; restart tessera serve to print a new one";
/// Why setup is refused once an organization exists.
pub const ALREADY_SET_UP: &str = "this Tessera is already set up: an organization exists. Sign in, or ask an admin of your organization for an invitation";

/// What the `settings` row holds (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    secret_sha256: String,
    expires_at: i64,
    #[serde(default)]
    used_at: Option<i64>,
}

/// Whether this Tessera still needs its first organization (the sign-in page asks).
#[derive(Debug, Serialize, ToSchema)]
pub struct SetupState {
    /// `true` while the database has no organization: nobody can sign in yet, and the
    /// operator has a setup link (printed by `tessera serve`) or `tessera admin bootstrap`.
    pub needed: bool,
}

/// The first organization and its admin, created with the setup link's secret.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The secret from the setup link's fragment (`#/setup/<secret>`).
    pub secret: String,
    /// The organization's id, used to sign in (a-z, 0-9 and '-').
    pub org: String,
    /// The organization's display name (default: its id).
    #[serde(default)]
    pub org_name: String,
    /// The admin's username.
    pub username: String,
    /// The admin's mail address (optional; for notifications).
    #[serde(default)]
    pub email: String,
    pub password: String,
}

/// The longest secret looked at (ours are 64 hex digits).
const SECRET_MAX: usize = 200;

/// Checks the request's fields, cheapest first, before anything is read; the words a
/// password must not be built from (the usernames and names in the request).
pub fn check_fields(req: &Setup) -> Result<Vec<String>> {
    if req.secret.is_empty() || req.secret.len() > SECRET_MAX {
        return Err(Error::field("secret", SETUP_UNUSABLE));
    }
    check_org_id("org", &req.org)?;
    check_text("org_name", &req.org_name, 200, true)?;
    check_username("username", &req.username)?;
    if !req.email.is_empty() {
        super::mail::check_address("email", &req.email)?;
    }
    if req.password.is_empty() {
        return Err(Error::field(
            "password",
            format!("must not be empty: {}", super::accounts::PASSWORD_RULE),
        ));
    }
    if req.password.len() > super::accounts::PASSWORD_MAX {
        return Err(Error::field(
            "password",
            format!("at most {} bytes", super::accounts::PASSWORD_MAX),
        ));
    }
    let mut words = vec![req.org.clone(), req.username.clone()];
    if !req.org_name.is_empty() {
        words.push(req.org_name.clone());
    }
    if let Some((local, _)) = req.email.split_once('@') {
        words.push(local.to_string());
    }
    Ok(words)
}

/// Whether the database has no organization.
pub fn state(tx: &mut dyn Tx) -> Result<SetupState> {
    Ok(SetupState {
        needed: tx.any_org()?.is_none(),
    })
}

/// On a database without an organization: a new setup secret (replacing any earlier
/// one), its hash stored, and the link to print; `None` once an organization exists.
pub fn issue(tx: &mut dyn Tx, ctx: &Ctx) -> Result<Option<(String, String)>> {
    if tx.any_org()?.is_some() {
        return Ok(None);
    }
    let secret = crypto::hex(&crypto::random_bytes::<32>().map_err(Error::internal)?);
    let stored = Stored {
        secret_sha256: crypto::sha256_hex(secret.as_bytes()),
        expires_at: ctx.now + SETUP_SECS,
        used_at: None,
    };
    tx.set_setting(
        SETTING,
        &serde_json::to_string(&stored).map_err(Error::internal)?,
    )?;
    Ok(Some((
        format!("{}/#/setup/{secret}", ctx.base_url),
        timefmt::format(stored.expires_at),
    )))
}

/// Checks `secret` against the stored setup: one issued, unused, unexpired, and no
/// organization yet. In a write the setup row is read `FOR UPDATE` (PostgreSQL), so a
/// second use waits for the first and then finds it used.
pub fn check(tx: &mut dyn Tx, ctx: &Ctx, secret: &str) -> Result<()> {
    let stored: Option<Stored> = tx
        .get_setting(SETTING)?
        .and_then(|v| serde_json::from_str(&v).ok());
    let presented = crypto::sha256_hex(secret.as_bytes());
    // Constant-time: how much of the hash matched never shows in the answer's time.
    let matches = stored
        .as_ref()
        .is_some_and(|s| bool::from(s.secret_sha256.as_bytes().ct_eq(presented.as_bytes())));
    if tx.any_org()?.is_some() {
        return Err(Error::conflict(ALREADY_SET_UP));
    }
    let stored = match stored {
        Some(s) if matches && s.used_at.is_none() => s,
        _ => return Err(Error::field("secret", SETUP_UNUSABLE)),
    };
    if stored.expires_at <= ctx.now {
        return Err(Error::field("secret", SETUP_EXPIRED));
    }
    Ok(())
}

/// Voids the setup secret (used, or the first organization made another way). Locks the
/// setup row, so it also orders a bootstrap after a setup in flight.
pub fn void(tx: &mut dyn Tx, ctx: &Ctx) -> Result<()> {
    let Some(mut stored) = tx
        .get_setting(SETTING)?
        .and_then(|v| serde_json::from_str::<Stored>(&v).ok())
    else {
        return Ok(());
    };
    if stored.used_at.is_none() {
        stored.used_at = Some(ctx.now);
        tx.set_setting(
            SETTING,
            &serde_json::to_string(&stored).map_err(Error::internal)?,
        )?;
    }
    Ok(())
}

/// Creates the first organization and its admin with the password `hash` (computed off
/// the transaction), after checking everything again; voids the secret. The caller
/// starts the admin's session in the same transaction.
pub fn complete(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    req: &Setup,
    hash: String,
    from: Option<&str>,
) -> Result<User> {
    check(tx, ctx, &req.secret)?;
    void(tx, ctx)?;
    let org =
        super::orgs::create_by_operator(tx, ctx, "setup", &req.org, &req.org_name, KeyAlg::EdDSA)?;
    let user = User {
        id: crypto::new_id("usr")?,
        org_id: org.id.clone(),
        username: req.username.clone(),
        display_name: req.username.clone(),
        role: Role::Admin,
        delegated: false,
        created_at: ctx.now,
    };
    tx.insert_user(&user)?;
    let mut account = super::accounts::account_of(tx, &user.id)?;
    account.password_hash = Some(hash);
    tx.put_account(&account)?;
    if !req.email.is_empty() {
        super::mail::set_address(tx, ctx, &user, &req.email)?;
    }
    audit(
        tx,
        ctx,
        "setup",
        &org.id,
        "user.create",
        &user.id,
        json!({"role": "admin"}),
    )?;
    audit(
        tx,
        ctx,
        &user.id,
        &org.id,
        "setup.complete",
        &org.id,
        json!({"admin": user.id, "username": user.username, "email": !req.email.is_empty(), "ip": from}),
    )?;
    Ok(user)
}
