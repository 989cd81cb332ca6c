//! Single sign-on with OpenID Connect: each organization's connection to its identity
//! provider (set up by the org's own admins, the client secret sealed with the master key),
//! the routing of an email domain to a connection, the sign-ins under way (stored, single
//! use, ten minutes), and the end of a sign-in: the user found by the identity (issuer +
//! subject) or created just in time with the role the group mapping gives. The network
//! half (discovery, the code exchange, the ID token's checks) is `crate::oidc`'s; here
//! only transactions.

use super::input::check_text;
use super::sessions::{self, Started};
use super::{audit, load_org, Ctx, Error, Result};
use crate::crypto;
use crate::model::{Role, User};
use crate::policy::{self, Actor};
use crate::store::sso::{SsoConnection, SsoIdentity, SsoLogin};
use crate::store::Tx;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// How long a sign-in may take between `/v1/sso/start` and the callback.
pub const LOGIN_TTL_SECS: i64 = 600;
/// The path the identity provider sends the browser back to (register
/// `<base URL>/v1/sso/callback` as the client's redirect URI).
pub const CALLBACK_PATH: &str = "/v1/sso/callback";
/// The cookie that binds a sign-in under way to the browser that started it.
pub const BROWSER_COOKIE: &str = "tessera_sso";
/// Most domains and group mappings one connection may hold.
const MAX_DOMAINS: usize = 50;
const MAX_GROUP_ROLES: usize = 100;

/// One group → role mapping: a user in `group` (the ID token's `groups` claim) gets `role`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRole {
    /// A group name as the identity provider sends it in the `groups` claim.
    pub group: String,
    /// admin, user, readonly (partner in a partner organization).
    pub role: Role,
}

/// Create or change the organization's OpenID Connect connection.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSso {
    /// The provider's issuer URL (https; http only on loopback, for tests). Discovery reads
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client secret; required the first time, kept when omitted afterwards. Stored
    /// sealed, never shown again.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Email domains whose people sign in through this connection (e.g. `example.com`);
    /// a domain belongs to one organization.
    pub domains: Vec<String>,
    /// Refuse password sign-in for the organization's users (admins keep a break-glass
    /// password sign-in, marked in the audit log).
    #[serde(default)]
    pub require_sso: bool,
    /// The role of a user created at first sign-in when no group maps (default `user`).
    #[serde(default)]
    pub default_role: Option<Role>,
    /// Group → role mappings, in order: the first group the user is in gives the role.
    #[serde(default)]
    pub group_roles: Vec<GroupRole>,
    /// Set the role from the groups at every sign-in (a user in no mapped group gets the
    /// default role), so that a change at the identity provider reaches Tessera at the
    /// next sign-in; off (the default), the groups decide the role at the first sign-in
    /// and Tessera's admins manage it afterwards. The last enabled admin is never demoted.
    #[serde(default)]
    pub sync_roles: bool,
}

/// The organization's connection (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SsoView {
    pub org: String,
    pub issuer: String,
    pub client_id: String,
    /// Always true: a secret is stored (sealed); it is never shown.
    pub client_secret_set: bool,
    /// Every email domain the connection claims.
    pub domains: Vec<String>,
    /// The claimed domains still waiting for the operator's approval (a root admin's):
    /// people with such addresses are not sent to this provider yet.
    pub pending_domains: Vec<String>,
    /// Password sign-in is refused for the organization's users (admins keep a
    /// break-glass path); in effect once at least one domain is approved.
    pub require_sso: bool,
    pub default_role: Role,
    pub group_roles: Vec<GroupRole>,
    /// The role follows the groups at every sign-in.
    pub sync_roles: bool,
    /// The redirect URI to register at the provider.
    pub redirect_uri: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The associated data that binds a sealed client secret to its organization.
fn secret_aad(org_id: &str) -> String {
    format!("sso-client-secret:{org_id}")
}

/// `<base URL>/v1/sso/callback`.
pub fn redirect_uri(ctx: &Ctx) -> String {
    format!("{}{CALLBACK_PATH}", ctx.base_url)
}

fn group_roles_of(c: &SsoConnection) -> Vec<GroupRole> {
    serde_json::from_str(&c.group_roles).unwrap_or_default()
}

fn default_role_of(c: &SsoConnection) -> Role {
    Role::parse(&c.default_role).unwrap_or(Role::User)
}

fn view(tx: &mut dyn Tx, ctx: &Ctx, c: &SsoConnection) -> Result<SsoView> {
    let pending_domains = tx
        .sso_domain_claims(Some(&c.org_id), true)?
        .into_iter()
        .map(|d| d.domain)
        .collect();
    Ok(SsoView {
        org: c.org_id.clone(),
        issuer: c.issuer.clone(),
        client_id: c.client_id.clone(),
        client_secret_set: !c.secret_enc.is_empty(),
        domains: c.domains.clone(),
        pending_domains,
        require_sso: c.require_sso,
        default_role: default_role_of(c),
        group_roles: group_roles_of(c),
        sync_roles: c.sync_roles,
        redirect_uri: redirect_uri(ctx),
        created_at: crate::timefmt::format(c.created_at),
        updated_at: crate::timefmt::format(c.updated_at),
    })
}

/// The org's approved domains: the ones that route sign-ins to its connection.
fn approved_domains(tx: &mut dyn Tx, org_id: &str) -> Result<Vec<String>> {
    Ok(tx
        .sso_domain_claims(Some(org_id), false)?
        .into_iter()
        .filter(|d| d.approved_at.is_some())
        .map(|d| d.domain)
        .collect())
}

/// An issuer URL we fetch from: https, or http on a loopback host (a provider on the same
/// machine, as in tests); no query, fragment or credentials.
pub fn check_issuer(field: &str, s: &str) -> Result<()> {
    check_text(field, s, 500, false)?;
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| Error::field(field, "an https:// URL, e.g. https://login.example.com"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    let ok_scheme = scheme == "https" || (scheme == "http" && loopback);
    if !ok_scheme {
        return Err(Error::field(
            field,
            "an https:// URL (http:// only for a provider on localhost)",
        ));
    }
    if host.is_empty() || authority.contains('@') || s.contains(['?', '#', ' ']) {
        return Err(Error::field(
            field,
            "a URL with a host and no user, query or fragment, e.g. https://login.example.com",
        ));
    }
    Ok(())
}

/// A domain as a person types it, lower-cased: letters, digits, '-' and dots, at least
/// one dot, each label 1-63 characters.
pub fn check_domain(field: &str, d: &str) -> Result<String> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(d)
    } else {
        Err(Error::field(
            field,
            format!("{d:?} is not a domain name like example.com"),
        ))
    }
}

/// The domain of an email address (lower case), or why it is not one.
pub fn email_domain(field: &str, email: &str) -> Result<String> {
    let email = email.trim();
    check_text(field, email, 254, false)?;
    let (local, domain) = email
        .rsplit_once('@')
        .ok_or_else(|| Error::field(field, "an email address like ana@example.com"))?;
    if local.is_empty() {
        return Err(Error::field(field, "an email address like ana@example.com"));
    }
    check_domain(field, domain)
}

/// The org's connection, for its own admins.
pub fn get(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, org_id: &str) -> Result<SsoView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let c = tx.get_sso_connection(&org.id)?.ok_or_else(|| {
        Error::not_found(format!(
            "organization {} has no single sign-on connection; set one with PUT /v1/orgs/{}/sso",
            org.id, org.id
        ))
    })?;
    view(tx, ctx, &c)
}

/// Creates or changes the org's connection (its own admins only), audited as
/// `sso.create` or `sso.update`.
pub fn set(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: SetSso,
) -> Result<SsoView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    // It decides who becomes a user and with which role, admin included: never through a
    // limited token.
    super::authority::require_unlimited(
        tx,
        actor,
        "sso",
        "a single sign-on connection, which makes users (admins too),",
    )?;
    let issuer = req.issuer.trim().trim_end_matches('/').to_string();
    check_issuer("issuer", &issuer)?;
    check_text("client_id", &req.client_id, 500, false)?;
    if let Some(s) = &req.client_secret {
        if s.is_empty() || s.len() > 1000 {
            return Err(Error::field("client_secret", "1 to 1000 bytes"));
        }
    }
    if req.domains.is_empty() || req.domains.len() > MAX_DOMAINS {
        return Err(Error::field(
            "domains",
            format!("1 to {MAX_DOMAINS} email domains, e.g. [\"example.com\"]"),
        ));
    }
    let mut domains = Vec::with_capacity(req.domains.len());
    for (i, d) in req.domains.iter().enumerate() {
        let field = format!("domains[{i}]");
        let d = check_domain(&field, d)?;
        // Claiming a domain another org holds approved is refused; a pending claim of
        // another org blocks nobody (claims route nothing until a root admin approves).
        if let Some(owner) = tx.sso_domain_owner(&d)? {
            if owner != org.id {
                return Err(Error::conflict(format!(
                    "{field}: {d} already signs in through another organization's connection; ask the operator (a root admin) if it is yours"
                )));
            }
        }
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    let allowed = |r: Role| r != Role::Partner || org.is_partner;
    let default_role = req.default_role.unwrap_or(Role::User);
    if !allowed(default_role) {
        return Err(Error::field(
            "default_role",
            "partner users belong to partner organizations",
        ));
    }
    if req.group_roles.len() > MAX_GROUP_ROLES {
        return Err(Error::field(
            "group_roles",
            format!("at most {MAX_GROUP_ROLES} mappings"),
        ));
    }
    for (i, g) in req.group_roles.iter().enumerate() {
        check_text(&format!("group_roles[{i}].group"), &g.group, 200, false)?;
        if !allowed(g.role) {
            return Err(Error::field(
                &format!("group_roles[{i}].role"),
                "partner users belong to partner organizations",
            ));
        }
    }
    let old = tx.get_sso_connection(&org.id)?;
    let secret_enc = match (&req.client_secret, &old) {
        (Some(s), _) => ctx.master.seal(&secret_aad(&org.id), s.as_bytes())?,
        (None, Some(o)) => o.secret_enc.clone(),
        (None, None) => {
            return Err(Error::field(
                "client_secret",
                "required when the connection is first set up",
            ))
        }
    };
    let c = SsoConnection {
        org_id: org.id.clone(),
        issuer,
        client_id: req.client_id.clone(),
        secret_enc,
        domains,
        require_sso: req.require_sso,
        default_role: default_role.as_str().to_string(),
        group_roles: serde_json::to_string(&req.group_roles).map_err(Error::internal)?,
        sync_roles: req.sync_roles,
        created_at: old.as_ref().map_or(ctx.now, |o| o.created_at),
        updated_at: ctx.now,
    };
    tx.put_sso_connection(&c)?;
    // The operator's own organization needs nobody's approval.
    if org.is_root {
        for d in tx.sso_domain_claims(Some(&org.id), true)? {
            tx.set_sso_domain_approved(&d.domain, &org.id, Some((ctx.now, &actor.user.id)))?;
        }
    }
    let view = view(tx, ctx, &c)?;
    let action = if old.is_some() {
        "sso.update"
    } else {
        "sso.create"
    };
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        action,
        &org.id,
        json!({
            "issuer": c.issuer,
            "client_id": c.client_id,
            "client_secret_changed": req.client_secret.is_some(),
            "domains": c.domains,
            "pending_domains": view.pending_domains,
            "require_sso": c.require_sso,
            "default_role": c.default_role,
            "group_roles": req.group_roles,
            "sync_roles": c.sync_roles,
        }),
    )?;
    Ok(view)
}

/// Deletes the org's connection (its own admins only): its people sign in with passwords
/// or links again. Audited as `sso.delete`.
pub fn delete(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, org_id: &str) -> Result<SsoView> {
    let before = get(tx, ctx, actor, org_id)?;
    super::authority::require_unlimited(
        tx,
        actor,
        "sso",
        "a single sign-on connection, which makes users (admins too),",
    )?;
    tx.delete_sso_connection(org_id)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        org_id,
        "sso.delete",
        org_id,
        json!({"issuer": before.issuer, "domains": before.domains}),
    )?;
    Ok(before)
}

/// An organization's claim of an email domain, as the operator sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DomainClaim {
    pub domain: String,
    /// The claiming organization's id and name.
    pub org: String,
    pub org_name: String,
    /// `pending` (routes nothing yet) or `approved` (sign-ins with this domain go to the
    /// organization's identity provider).
    pub state: String,
    pub claimed_at: String,
    pub approved_at: Option<String>,
    /// The root admin who approved it, by name and id (absent for claims approved before
    /// approvals existed).
    pub approved_by: Option<String>,
    pub approved_by_name: Option<String>,
}

/// Domain claims, by domain then organization.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DomainClaimList {
    pub domains: Vec<DomainClaim>,
}

/// Which organization's claim an approval or withdrawal is about.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainDecision {
    /// The claiming organization's id.
    pub org: String,
}

/// `a`, and `b` when it is another org.
fn dedup<'a>(a: &'a str, b: &'a str) -> Vec<&'a str> {
    if a == b {
        vec![a]
    } else {
        vec![a, b]
    }
}

/// Domain approvals are the operator's: an admin of the root organization.
fn require_operator(actor: &Actor) -> Result<()> {
    if actor.org.is_root && actor.user.role == Role::Admin {
        Ok(())
    } else {
        Err(Error::forbidden(
            "only the operator (an admin of the root organization) approves email domains for single sign-on",
        ))
    }
}

fn claim_view(tx: &mut dyn Tx, c: crate::store::sso::SsoDomainClaim) -> Result<DomainClaim> {
    let org_name = tx
        .get_org(&c.org_id)?
        .map_or_else(|| c.org_id.clone(), |o| o.name);
    let approved_by_name = match &c.approved_by {
        Some(u) => tx.get_user(u)?.map(|u| u.display_name),
        None => None,
    };
    Ok(DomainClaim {
        domain: c.domain,
        org: c.org_id,
        org_name,
        state: if c.approved_at.is_some() {
            "approved"
        } else {
            "pending"
        }
        .to_string(),
        claimed_at: crate::timefmt::format(c.claimed_at),
        approved_at: c.approved_at.map(crate::timefmt::format),
        approved_by: c.approved_by,
        approved_by_name,
    })
}

/// Every organization's domain claims (the operator only), pending ones alone when
/// `pending_only`.
pub fn list_domains(
    tx: &mut dyn Tx,
    _ctx: &Ctx,
    actor: &Actor,
    pending_only: bool,
) -> Result<DomainClaimList> {
    require_operator(actor)?;
    let claims = tx.sso_domain_claims(None, pending_only)?;
    let domains = claims
        .into_iter()
        .map(|c| claim_view(tx, c))
        .collect::<Result<_>>()?;
    Ok(DomainClaimList { domains })
}

fn find_claim(
    tx: &mut dyn Tx,
    domain: &str,
    org_id: &str,
) -> Result<crate::store::sso::SsoDomainClaim> {
    tx.sso_domain_claims(Some(org_id), false)?
        .into_iter()
        .find(|c| c.domain == domain)
        .ok_or_else(|| {
            Error::not_found(format!(
                "organization {org_id} does not claim {domain}; its admins add it to the organization's single sign-on connection first"
            ))
        })
}

/// Approves `org`'s claim of `domain` (the operator only, with an unlimited credential):
/// from now on people with such addresses are sent to that organization's provider.
/// Refused while another organization holds the domain approved. Audited in the claiming
/// organization's log as `sso.domain_approve`.
pub fn approve_domain(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    domain: &str,
    req: DomainDecision,
) -> Result<DomainClaim> {
    require_operator(actor)?;
    super::authority::require_unlimited(
        tx,
        actor,
        "sso_domain",
        "approving a domain, which sends its people to an identity provider that makes users,",
    )?;
    let domain = check_domain("domain", domain)?;
    let org = load_org(tx, req.org.trim())?;
    let claim = find_claim(tx, &domain, &org.id)?;
    if claim.approved_at.is_none() {
        if let Some(owner) = tx.sso_domain_owner(&domain)? {
            let name = tx
                .get_org(&owner)?
                .map_or_else(|| owner.clone(), |o| o.name);
            return Err(Error::conflict(format!(
                "{domain} is approved for organization {name} ({owner}); withdraw that approval first"
            )));
        }
        tx.set_sso_domain_approved(&domain, &org.id, Some((ctx.now, &actor.user.id)))?;
        // In the claiming org's log (its admins see it) and the operator's own.
        for log in dedup(&org.id, &actor.org.id) {
            audit(
                tx,
                ctx,
                &actor.user.id,
                log,
                "sso.domain_approve",
                &org.id,
                json!({"domain": domain, "org": org.id}),
            )?;
        }
    }
    let claim = find_claim(tx, &domain, &org.id)?;
    claim_view(tx, claim)
}

/// Withdraws the approval of `org`'s claim of `domain` (the operator only): the claim is
/// pending again and sign-ins with such addresses stop going to that provider. Audited
/// as `sso.domain_withdraw`.
pub fn withdraw_domain(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    domain: &str,
    req: DomainDecision,
) -> Result<DomainClaim> {
    require_operator(actor)?;
    let domain = check_domain("domain", domain)?;
    let org = load_org(tx, req.org.trim())?;
    let claim = find_claim(tx, &domain, &org.id)?;
    if claim.approved_at.is_some() {
        tx.set_sso_domain_approved(&domain, &org.id, None)?;
        // In the claiming org's log (its admins see it) and the operator's own.
        for log in dedup(&org.id, &actor.org.id) {
            audit(
                tx,
                ctx,
                &actor.user.id,
                log,
                "sso.domain_withdraw",
                &org.id,
                json!({"domain": domain, "org": org.id}),
            )?;
        }
    }
    let claim = find_claim(tx, &domain, &org.id)?;
    claim_view(tx, claim)
}

/// What a sign-in needs from the connection: where to go, as whom, and the secret.
#[derive(Clone)]
pub struct Route {
    pub org_id: String,
    pub org_name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
}

/// The connection an email's domain routes to (a read; no network, no crypto but the
/// secret's opening).
pub fn route_email(tx: &mut dyn Tx, ctx: &Ctx, email: &str) -> Result<Route> {
    let domain = email_domain("email", email)?;
    let org_id = tx.sso_domain_owner(&domain)?.ok_or_else(|| {
        Error::denied(
            "sso_not_configured",
            format!(
                "no organization signs in {domain} addresses with single sign-on; sign in with your organization, username and password"
            ),
        )
    })?;
    route_org(tx, ctx, &org_id)
}

/// The org's connection with its secret opened.
pub fn route_org(tx: &mut dyn Tx, ctx: &Ctx, org_id: &str) -> Result<Route> {
    let org = load_org(tx, org_id)?;
    let c = tx.get_sso_connection(org_id)?.ok_or_else(|| {
        Error::denied(
            "sso_not_configured",
            format!("organization {org_id} has no single sign-on connection any more"),
        )
    })?;
    let secret = ctx.master.open(&secret_aad(org_id), &c.secret_enc)?;
    Ok(Route {
        org_id: org.id,
        org_name: org.name,
        issuer: c.issuer,
        client_id: c.client_id,
        client_secret: String::from_utf8(secret).map_err(Error::internal)?,
    })
}

/// Keeps a sign-in under way: the state's hash, the nonce, the PKCE verifier (sealed) and
/// the hash of the browser's binding secret.
pub fn record_login(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    state: &str,
    nonce: &str,
    verifier: &str,
    browser_secret: &str,
) -> Result<()> {
    let state_sha256 = crypto::sha256_hex(state.as_bytes());
    let verifier_enc = ctx.master.seal(&state_sha256, verifier.as_bytes())?;
    tx.insert_sso_login(&SsoLogin {
        state_sha256,
        org_id: org_id.to_string(),
        nonce: nonce.to_string(),
        verifier_enc,
        browser_sha256: crypto::sha256_hex(browser_secret.as_bytes()),
        created_at: ctx.now,
        expires_at: ctx.now + LOGIN_TTL_SECS,
    })?;
    Ok(())
}

/// A refused sign-in: a stable reason and what to tell the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
        }
    }
}

/// A sign-in taken back from the store: the nonce, the verifier, the connection.
#[derive(Clone)]
pub struct Resumed {
    pub nonce: String,
    pub verifier: String,
    pub route: Route,
}

/// Takes the sign-in `state` names (deleting it: a state is used once), checks it was
/// started by this browser and has not expired, and opens the connection. A write.
pub fn take_login(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    state: &str,
    browser_secret: Option<&str>,
) -> Result<std::result::Result<Resumed, Refusal>> {
    let state_sha256 = crypto::sha256_hex(state.as_bytes());
    let Some(l) = tx.take_sso_login(&state_sha256)? else {
        return Ok(Err(Refusal::new(
            "sso_state_invalid",
            "this sign-in is unknown or was already used; start again from the sign-in page",
        )));
    };
    let same_browser = browser_secret.is_some_and(|b| {
        crypto::sha256_hex(crypto::sha256_hex(b.as_bytes()).as_bytes())
            == crypto::sha256_hex(l.browser_sha256.as_bytes())
    });
    if !same_browser {
        return Ok(Err(Refusal::new(
            "sso_browser_mismatch",
            "this sign-in was started in another browser (or its cookie is gone); start again from the sign-in page",
        )));
    }
    if ctx.now >= l.expires_at {
        return Ok(Err(Refusal::new(
            "sso_login_expired",
            format!(
                "the sign-in took longer than {} minutes; start again",
                LOGIN_TTL_SECS / 60
            ),
        )));
    }
    let verifier = ctx.master.open(&l.state_sha256, &l.verifier_enc)?;
    let route = match route_org(tx, ctx, &l.org_id) {
        Ok(r) => r,
        Err(Error::Denied { reason, message }) => return Ok(Err(Refusal::new(reason, message))),
        Err(e) => return Err(e),
    };
    Ok(Ok(Resumed {
        nonce: l.nonce,
        verifier: String::from_utf8(verifier).map_err(Error::internal)?,
        route,
    }))
}

/// What the provider said about the person, from a verified ID token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// `false` only when the provider says the address is not verified.
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

/// The role the connection's mapping gives someone in `groups`: the first mapped group's,
/// else the default.
fn role_from_groups(c: &SsoConnection, groups: &[String]) -> Role {
    group_roles_of(c)
        .into_iter()
        .find(|g| groups.contains(&g.group))
        .map_or_else(|| default_role_of(c), |g| g.role)
}

/// A returning sign-in with `sync_roles`: the role follows the groups (audited
/// `user.update` with `"via": "sso"`, the role's grants going with it to every edge),
/// except that the org's last enabled admin is never demoted (audited
/// `sso.role_sync_skipped`).
fn sync_role(tx: &mut dyn Tx, ctx: &Ctx, mut u: User, who: &Verified) -> Result<User> {
    let Some(c) = tx.get_sso_connection(&u.org_id)? else {
        return Ok(u);
    };
    let want = role_from_groups(&c, &who.groups);
    if want == u.role {
        return Ok(u);
    }
    if u.role == Role::Admin && super::users::keep_an_admin(tx, &u, "demoted").is_err() {
        audit(
            tx,
            ctx,
            &u.id,
            &u.org_id,
            "sso.role_sync_skipped",
            &u.id,
            json!({"role": u.role.as_str(), "groups_give": want.as_str(), "why": "the last enabled admin of the organization is never demoted"}),
        )?;
        return Ok(u);
    }
    let from = u.role;
    u.role = want;
    tx.update_user(&u)?;
    super::scopes::grants_changed(tx, ctx, &u.org_id)?;
    audit(
        tx,
        ctx,
        &u.id,
        &u.org_id,
        "user.update",
        &u.id,
        json!({"role": want.as_str(), "from": from.as_str(), "via": "sso", "groups": who.groups}),
    )?;
    Ok(u)
}

/// A refused end of sign-in, in the org's audit log (committed with it).
fn refuse(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    who: &Verified,
    ip: Option<&str>,
    r: Refusal,
) -> Result<std::result::Result<Started, Refusal>> {
    audit(
        tx,
        ctx,
        "anonymous",
        org_id,
        "session.sign_in_failed",
        &who.subject,
        json!({"ip": ip, "sso": true, "issuer": who.issuer, "email": who.email, "why": r.reason}),
    )?;
    Ok(Err(r))
}

/// A sign-in the provider's answer failed (the code exchange or the ID token's checks),
/// in the org's audit log as `session.sign_in_failed` with the reason.
pub fn refused_at_provider(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    issuer: &str,
    ip: Option<&str>,
    reason: &'static str,
) -> Result<()> {
    audit(
        tx,
        ctx,
        "anonymous",
        org_id,
        "session.sign_in_failed",
        org_id,
        json!({"ip": ip, "sso": true, "issuer": issuer, "why": reason}),
    )
}

/// The end of a sign-in (a write): the user linked to the identity, or one created just in
/// time (role from the group mapping, else the default), then a session exactly as a
/// password sign-in starts one. Refusals are committed with their audit entry.
pub fn complete(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    who: &Verified,
    ip: Option<&str>,
) -> Result<std::result::Result<Started, Refusal>> {
    let org = load_org(tx, org_id)?;
    let Some(c) = tx.get_sso_connection(org_id)? else {
        return Ok(Err(Refusal::new(
            "sso_not_configured",
            format!("organization {org_id} has no single sign-on connection any more"),
        )));
    };
    if who.issuer != c.issuer {
        return refuse(
            tx,
            ctx,
            org_id,
            who,
            ip,
            Refusal::new(
                "sso_issuer_mismatch",
                "the identity provider changed while you signed in; start again",
            ),
        );
    }
    let linked = tx.find_sso_identity(org_id, &who.issuer, &who.subject)?;
    let user = match linked {
        Some(i) => {
            let Some(u) = tx.get_user(&i.user_id)? else {
                return refuse(
                    tx,
                    ctx,
                    org_id,
                    who,
                    ip,
                    Refusal::new(
                        "sso_account_disabled",
                        "your account was deleted; ask an admin of your organization",
                    ),
                );
            };
            tx.touch_sso_identity(org_id, &who.issuer, &who.subject, ctx.now)?;
            if c.sync_roles {
                sync_role(tx, ctx, u, who)?
            } else {
                u
            }
        }
        None => {
            // A first sign-in: the address must be one of the connection's domains and not
            // marked unverified by the provider.
            let Some(email) = who.email.as_deref().map(|e| e.trim().to_ascii_lowercase()) else {
                return refuse(tx, ctx, org_id, who, ip,
                    Refusal::new(
                        "sso_email_missing",
                        "the identity provider sent no email address; ask it to release the email claim",
                    ),
                );
            };
            if who.email_verified == Some(false) {
                return refuse(
                    tx,
                    ctx,
                    org_id,
                    who,
                    ip,
                    Refusal::new(
                        "sso_email_unverified",
                        format!("the identity provider says {email} is not verified"),
                    ),
                );
            }
            let domain = email_domain("email", &email).ok();
            let approved = approved_domains(tx, org_id)?;
            if !domain.is_some_and(|d| approved.contains(&d)) {
                return refuse(
                    tx,
                    ctx,
                    org_id,
                    who,
                    ip,
                    Refusal::new(
                        "sso_domain_not_allowed",
                        format!(
                            "{email} is not in a domain {} signs in ({})",
                            org.name,
                            approved.join(", ")
                        ),
                    ),
                );
            }
            if super::input::check_username("email", &email).is_err() {
                return refuse(tx, ctx, org_id, who, ip,
                    Refusal::new(
                        "sso_email_unusable",
                        format!("{email} cannot be a username (1-64 characters of A-Z, a-z, 0-9, '.', '_', '@', '-')"),
                    ),
                );
            }
            if tx.find_user(org_id, &email)?.is_some() {
                // Never taken over by its email alone: the identity must be linked.
                return refuse(tx, ctx, org_id, who, ip,
                    Refusal::new(
                        "sso_account_exists",
                        format!(
                            "{} already has a user {email} that was not created by single sign-on; an admin must delete or rename it first",
                            org.name
                        ),
                    ),
                );
            }
            super::quotas::check_users(tx, ctx, &org)?;
            let role = role_from_groups(&c, &who.groups);
            let display_name = who
                .name
                .clone()
                .filter(|n| check_text("name", n, 200, false).is_ok())
                .unwrap_or_else(|| email.clone());
            let user = User {
                id: crypto::new_id("usr")?,
                org_id: org_id.to_string(),
                username: email.clone(),
                display_name,
                role,
                delegated: false,
                created_at: ctx.now,
            };
            tx.insert_user(&user)?;
            tx.insert_sso_identity(&SsoIdentity {
                org_id: org_id.to_string(),
                issuer: who.issuer.clone(),
                subject: who.subject.clone(),
                user_id: user.id.clone(),
                email: email.clone(),
                created_at: ctx.now,
                last_sign_in_at: ctx.now,
            })?;
            audit(
                tx,
                ctx,
                &user.id,
                org_id,
                "user.create",
                &user.id,
                json!({"role": role.as_str(), "via": "sso", "issuer": who.issuer, "subject": who.subject, "groups": who.groups}),
            )?;
            user
        }
    };
    let a = super::accounts::account_of(tx, &user.id)?;
    if a.disabled_at.is_some() || a.deleted_at.is_some() {
        return refuse(
            tx,
            ctx,
            org_id,
            who,
            ip,
            Refusal::new(
                "sso_account_disabled",
                "your account is disabled; ask an admin of your organization",
            ),
        );
    }
    let detail = json!({"ip": ip, "sso": true, "issuer": who.issuer});
    let started = sessions::start_session(tx, ctx, &user, Some(&who.issuer), detail)?;
    Ok(Ok(started))
}

/// Whether password sign-in is refused for `user` (their org requires single sign-on and
/// they are not one of its admins, who keep a break-glass path).
pub fn password_refused(tx: &mut dyn Tx, user: &User) -> Result<Option<String>> {
    let Some(c) = tx.get_sso_connection(&user.org_id)? else {
        return Ok(None);
    };
    if !c.require_sso || user.role == Role::Admin {
        return Ok(None);
    }
    // Until a domain is approved nobody can reach the provider: passwords keep working.
    let approved = approved_domains(tx, &user.org_id)?;
    if approved.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "organization {} signs in with single sign-on: use \"Sign in with SSO\" with your work email ({})",
        user.org_id,
        approved.join(", ")
    )))
}

/// Whether `user`'s password sign-in passed only as an admin's break glass.
pub fn break_glass(tx: &mut dyn Tx, user: &User) -> Result<bool> {
    Ok(user.role == Role::Admin
        && tx
            .get_sso_connection(&user.org_id)?
            .is_some_and(|c| c.require_sso)
        && !approved_domains(tx, &user.org_id)?.is_empty())
}

/// Deletes sign-ins that expired (`tessera serve`, hourly, with the other sign-in rows).
pub fn prune(tx: &mut dyn Tx, ctx: &Ctx) -> Result<u64> {
    Ok(tx.prune_sso_logins(ctx.now)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_https_or_loopback_http() {
        for ok in [
            "https://login.example.com",
            "https://login.example.com/tenant/v2.0",
            "http://localhost:4000",
            "http://127.0.0.1:9/x",
            "http://[::1]:8080",
        ] {
            assert!(check_issuer("issuer", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://login.example.com",
            "ftp://x.example",
            "https://",
            "https://user@x.example",
            "https://x.example/?a=b",
            "login.example.com",
            "http://localhost.evil.example",
        ] {
            assert!(check_issuer("issuer", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains_and_emails() {
        assert_eq!(check_domain("d", "Example.COM.").unwrap(), "example.com");
        assert!(check_domain("d", "localhost").is_err());
        assert!(check_domain("d", "-a.example").is_err());
        assert!(check_domain("d", "a..example").is_err());
        assert_eq!(
            email_domain("email", "Ana@Example.com").unwrap(),
            "example.com"
        );
        assert!(email_domain("email", "@example.com").is_err());
        assert!(email_domain("email", "ana").is_err());
    }
}
