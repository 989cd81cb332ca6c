//! The operations behind the API: each runs inside one store transaction, checks the
//! policy, changes records and the status list, and writes the audit log.

use crate::auth;
use crate::crypto::{self, MasterKey, UntrustedJws};
use crate::error::{ApiError, ApiResult};
use crate::model::{
    status_value, AuditEntry, AuthEvent, EdgeCredential, KeyAlg, Org, Role, SigningKey, Token,
    TokenStatus, User, LIFETIMES,
};
use crate::policy::{self, Action, Actor};
use crate::statuslist;
use crate::store::{AuthEventQuery, TokenQuery, TokenScope, Tx};
use crate::timefmt;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use tessera_core::{Decision, Deny, Reason, Request as CoreRequest};

pub const TYP_API: &str = "tessera-api+jwt";
pub const TYP_ACCESS: &str = "at+jwt";
pub const TYP_STATUS_LIST: &str = "statuslist+jwt";
/// Leeway on `exp`/`nbf` when the control plane checks a presented token.
pub const SKEW: i64 = 60;
const DEFAULT_LIFETIME_DAYS: i64 = 90;

/// Per-request context.
pub struct Ctx<'a> {
    pub base_url: &'a str,
    pub master: &'a MasterKey,
    pub now: i64,
    /// Lifetime of exchanged access tokens, seconds.
    pub access_ttl: i64,
}

impl Ctx<'_> {
    pub fn issuer(&self, org_id: &str) -> String {
        format!("{}/v1/orgs/{org_id}", self.base_url)
    }

    pub fn status_uri(&self, org_id: &str) -> String {
        format!("{}/v1/orgs/{org_id}/status-list", self.base_url)
    }
}

// ---------------------------------------------------------------------------------------
// Input types and validation

/// A timestamp in JSON: RFC 3339 string, `YYYY-MM-DD`, or Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected an RFC 3339 timestamp or Unix seconds")
        })?;
        match raw {
            Raw::N(n) if (0..=253_402_300_799).contains(&n) => Ok(Timestamp(n)),
            Raw::N(_) => Err(serde::de::Error::custom("timestamp out of range")),
            Raw::S(s) => timefmt::parse(&s)
                .map(Timestamp)
                .map_err(serde::de::Error::custom),
        }
    }
}

fn check_text(field: &str, value: &str, max: usize, allow_empty: bool) -> ApiResult<()> {
    if !allow_empty && value.trim().is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(ApiError::field(field, format!("at most {max} characters")));
    }
    if value.contains('\0') {
        return Err(ApiError::field(field, "must not contain NUL"));
    }
    Ok(())
}

pub fn check_org_id(field: &str, id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "1-63 characters of a-z, 0-9 and '-', not starting with '-'",
        ))
    }
}

fn check_username(field: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "1-64 characters of A-Z, a-z, 0-9, '.', '_', '@', '-'",
        ))
    }
}

/// A CIDR or a bare address (a single host).
pub fn check_cidr(field: &str, s: &str) -> ApiResult<String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| ApiError::field(field, format!("{s:?} is not an IP address or CIDR")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Some(l) = len {
        let n: u8 =
            l.parse().ok().filter(|n| *n <= max).ok_or_else(|| {
                ApiError::field(field, format!("prefix length must be 0..={max}"))
            })?;
        Ok(format!("{ip}/{n}"))
    } else {
        Ok(ip.to_string())
    }
}

fn check_ip_allow(list: &[String]) -> ApiResult<Vec<String>> {
    if list.len() > 100 {
        return Err(ApiError::field("ip_allow", "at most 100 entries"));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| check_cidr(&format!("ip_allow[{i}]"), s))
        .collect()
}

/// RFC 6749 scope-token: printable ASCII without space, `"` and `\`.
fn check_scopes(list: &[String]) -> ApiResult<Vec<String>> {
    if list.len() > 100 {
        return Err(ApiError::field("scopes", "at most 100 scopes"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let ok = !s.is_empty()
            && s.len() <= 200
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            return Err(ApiError::field(
                &format!("scopes[{i}]"),
                "printable ASCII without spaces, '\"' or '\\'",
            ));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Views

pub fn org_view(ctx: &Ctx, o: &Org) -> Value {
    json!({
        "id": o.id,
        "name": o.name,
        "partner": o.is_partner,
        "root": o.is_root,
        "managed_by": o.partner_org_id,
        "max_lifetime_days": o.max_lifetime_days,
        "audience": o.audience,
        "key_alg": o.key_alg.as_str(),
        "issuer": ctx.issuer(&o.id),
        "jwks_uri": format!("{}/jwks.json", ctx.issuer(&o.id)),
        "status_list_uri": ctx.status_uri(&o.id),
        "created_at": timefmt::format(o.created_at),
    })
}

pub fn user_view(u: &User) -> Value {
    json!({
        "id": u.id,
        "org": u.org_id,
        "username": u.username,
        "display_name": u.display_name,
        "role": u.role.as_str(),
        "delegated": u.delegated,
        "created_at": timefmt::format(u.created_at),
    })
}

/// Token columns, in table/CSV order.
pub const TOKEN_COLUMNS: [&str; 19] = [
    "id",
    "org",
    "user",
    "username",
    "name",
    "description",
    "status",
    "enabled",
    "scopes",
    "ip_allow",
    "lifetime_days",
    "not_before",
    "expires_at",
    "created_by",
    "created_at",
    "downloaded_at",
    "status_idx",
    "last_used_at",
    "last_used_ip",
];

pub fn token_view(t: &Token, username: &str, now: i64) -> Value {
    let ts = |v: Option<i64>| v.map(timefmt::format);
    json!({
        "id": t.id,
        "org": t.org_id,
        "user": t.user_id,
        "username": username,
        "name": t.name,
        "description": t.description,
        "status": t.status(now).as_str(),
        "enabled": t.enabled,
        "scopes": t.scopes,
        "ip_allow": t.ip_allow,
        "lifetime_days": t.lifetime_days,
        "not_before": ts(t.not_before),
        "expires_at": timefmt::format(t.expires_at),
        "created_by": t.created_by,
        "created_at": timefmt::format(t.created_at),
        "downloaded_at": ts(t.minted_at),
        "status_idx": t.status_idx,
        "last_used_at": ts(t.last_used_at),
        "last_used_ip": t.last_used_ip,
        "deleted": t.deleted_at.is_some(),
    })
}

fn token_view_tx(tx: &mut dyn Tx, t: &Token, now: i64) -> ApiResult<Value> {
    let username = tx
        .get_user(&t.user_id)?
        .map(|u| u.username)
        .unwrap_or_default();
    Ok(token_view(t, &username, now))
}

pub fn auth_event_view(e: &AuthEvent) -> Value {
    json!({
        "id": e.id,
        "token": e.token_id,
        "user": e.user_id,
        "org": e.org_id,
        "at": timefmt::format(e.at),
        "ip": e.ip,
        "outcome": e.outcome,
        "reason": e.reason,
        "method": e.method,
        "path": e.path,
        "source": e.source,
    })
}

// ---------------------------------------------------------------------------------------
// Helpers

fn audit(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &str,
    org_id: &str,
    action: &str,
    target: &str,
    detail: Value,
) -> ApiResult<()> {
    tx.insert_audit(&AuditEntry {
        id: 0,
        at: ctx.now,
        org_id: org_id.to_string(),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail,
    })
}

fn load_org(tx: &mut dyn Tx, id: &str) -> ApiResult<Org> {
    tx.get_org(id)?
        .ok_or_else(|| ApiError::not_found(format!("no organization {id:?}")))
}

fn load_user(tx: &mut dyn Tx, id: &str) -> ApiResult<User> {
    tx.get_user(id)?
        .ok_or_else(|| ApiError::not_found(format!("no user {id:?}")))
}

/// A live (not deleted) token.
fn load_token(tx: &mut dyn Tx, id: &str) -> ApiResult<Token> {
    tx.get_token(id)?
        .filter(|t| t.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found(format!("no token {id:?}")))
}

/// Loads a token with its owner and the owner's org, and checks `action` for the caller.
fn token_for(
    tx: &mut dyn Tx,
    actor: &Actor,
    id: &str,
    action: Action,
) -> ApiResult<(Token, User, Org)> {
    let token = load_token(tx, id)?;
    let owner = load_user(tx, &token.user_id)?;
    let org = load_org(tx, &token.org_id)?;
    policy::check(actor, &owner, &org, action)?;
    Ok((token, owner, org))
}

/// Sets one status-list entry and bumps the org's list version.
fn set_status(tx: &mut dyn Tx, org_id: &str, idx: i64, value: u8, token_id: &str) -> ApiResult<()> {
    tx.set_status(org_id, idx, value, token_id)?;
    let mut org = load_org(tx, org_id)?;
    org.status_version += 1;
    tx.update_org(&org)
}

fn active_key(tx: &mut dyn Tx, org_id: &str) -> ApiResult<SigningKey> {
    tx.list_keys(org_id)?
        .into_iter()
        .find(|k| k.retired_at.is_none())
        .ok_or_else(|| ApiError::internal(format!("organization {org_id} has no active key")))
}

/// Signs with the org's active key, remembering how long the key must stay published.
fn sign(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    typ: &str,
    claims: &Value,
    exp: i64,
) -> ApiResult<(String, String)> {
    let mut key = active_key(tx, org_id)?;
    let secret = ctx.master.open(&key.kid, &key.private_enc)?;
    let jws = crypto::sign_jws(key.alg, &key.kid, &secret, typ, claims)?;
    if exp > key.last_exp {
        key.last_exp = exp;
        tx.update_key(&key)?;
    }
    Ok((jws, key.kid))
}

fn new_key(tx: &mut dyn Tx, ctx: &Ctx, org_id: &str, alg: KeyAlg) -> ApiResult<SigningKey> {
    let g = crypto::generate_key(alg)?;
    let key = SigningKey {
        kid: g.kid.clone(),
        org_id: org_id.to_string(),
        alg,
        public_jwk: g.public_jwk,
        private_enc: ctx.master.seal(&g.kid, &g.secret)?,
        created_at: ctx.now,
        retired_at: None,
        last_exp: ctx.now,
    };
    tx.insert_key(&key)?;
    Ok(key)
}

/// Mints the JWT of ARCHITECTURE.md for `token` under a fresh status-list index; only its
/// hash is kept.
fn mint(tx: &mut dyn Tx, ctx: &Ctx, token: &mut Token) -> ApiResult<String> {
    let mut org = load_org(tx, &token.org_id)?;
    let idx = org.next_status_idx;
    org.next_status_idx += 1;
    tx.update_org(&org)?;
    set_status(tx, &org.id, idx, status_value::VALID, &token.id)?;
    let claims = json!({
        "iss": ctx.issuer(&org.id),
        "sub": token.user_id,
        "org": org.id,
        "jti": token.id,
        "aud": org.audience,
        "iat": ctx.now,
        "nbf": token.not_before.unwrap_or(ctx.now),
        "exp": token.expires_at,
        "scope": token.scopes.join(" "),
        "ip_allow": token.ip_allow,
        "status": {"status_list": {"idx": idx, "uri": ctx.status_uri(&org.id)}},
    });
    let (jwt, kid) = sign(tx, ctx, &org.id, TYP_API, &claims, token.expires_at)?;
    token.jwt_sha256 = Some(crypto::sha256_hex(jwt.as_bytes()));
    token.minted_at = Some(ctx.now);
    token.status_idx = Some(idx);
    token.kid = Some(kid);
    Ok(jwt)
}

/// Marks the outstanding JWT revoked in the status list and returns the token to Pending.
fn retire_jwt(tx: &mut dyn Tx, token: &mut Token) -> ApiResult<bool> {
    let had = token.jwt_sha256.is_some();
    if let Some(idx) = token.status_idx {
        set_status(tx, &token.org_id, idx, status_value::REVOKED, &token.id)?;
    }
    token.jwt_sha256 = None;
    token.minted_at = None;
    token.status_idx = None;
    token.kid = None;
    Ok(had)
}

// ---------------------------------------------------------------------------------------
// Bootstrap, organizations, keys

pub struct Bootstrapped {
    pub org: Org,
    pub user: User,
    pub token: Token,
    pub jwt: String,
}

/// Creates the organization (the root one if it is the first) and its admin if missing,
/// and mints a one-time admin token. Run by the operator, with database access.
pub fn bootstrap(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    org_name: &str,
    admin: &str,
    alg: KeyAlg,
) -> ApiResult<Bootstrapped> {
    check_org_id("org", org_id)?;
    check_username("admin", admin)?;
    let org = match tx.get_org(org_id)? {
        Some(o) => o,
        None => {
            let is_root = tx.list_orgs()?.is_empty();
            let org = Org {
                id: org_id.to_string(),
                name: if org_name.is_empty() {
                    org_id.to_string()
                } else {
                    org_name.to_string()
                },
                partner_org_id: None,
                is_partner: is_root,
                is_root,
                max_lifetime_days: 365,
                audience: "tessera".into(),
                key_alg: alg,
                status_version: 0,
                next_status_idx: 0,
                created_at: ctx.now,
            };
            tx.insert_org(&org)?;
            new_key(tx, ctx, org_id, alg)?;
            audit(
                tx,
                ctx,
                "bootstrap",
                org_id,
                "org.create",
                org_id,
                json!({"root": is_root}),
            )?;
            org
        }
    };
    let user = match tx.find_user(org_id, admin)? {
        Some(u) if u.role == Role::Admin => u,
        Some(_) => {
            return Err(ApiError::conflict(format!(
                "user {admin} exists and is not an admin"
            )))
        }
        None => {
            let u = User {
                id: crypto::new_id("usr")?,
                org_id: org_id.to_string(),
                username: admin.to_string(),
                display_name: admin.to_string(),
                role: Role::Admin,
                delegated: false,
                created_at: ctx.now,
            };
            tx.insert_user(&u)?;
            audit(
                tx,
                ctx,
                "bootstrap",
                org_id,
                "user.create",
                &u.id,
                json!({"role": "admin"}),
            )?;
            u
        }
    };
    let days = DEFAULT_LIFETIME_DAYS.min(org.max_lifetime_days);
    let mut token = Token {
        id: crypto::new_id("tok")?,
        org_id: org_id.to_string(),
        user_id: user.id.clone(),
        name: format!("bootstrap {}", timefmt::format(ctx.now)),
        description: "created by tessera admin bootstrap".into(),
        created_by: user.id.clone(),
        created_at: ctx.now,
        lifetime_days: Some(days),
        not_before: None,
        expires_at: ctx.now + days * 86_400,
        ip_allow: vec![],
        scopes: vec![],
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
    tx.insert_token(&token)?;
    let jwt = mint(tx, ctx, &mut token)?;
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        "bootstrap",
        org_id,
        "token.bootstrap",
        &token.id,
        json!({"user": user.id}),
    )?;
    let org = load_org(tx, org_id)?;
    Ok(Bootstrapped {
        org,
        user,
        token,
        jwt,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// A partner organization (may manage customer organizations).
    #[serde(default)]
    pub partner: bool,
    /// The partner organization that manages this one.
    #[serde(default)]
    pub managed_by: Option<String>,
    #[serde(default)]
    pub key_alg: Option<KeyAlg>,
    #[serde(default)]
    pub max_lifetime_days: Option<i64>,
    #[serde(default)]
    pub audience: Option<String>,
}

pub fn create_org(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, req: CreateOrg) -> ApiResult<Org> {
    check_org_id("id", &req.id)?;
    if actor.user.role != Role::Admin || !(actor.org.is_root || actor.org.is_partner) {
        return Err(ApiError::forbidden(
            "only admins of the root or a partner organization create organizations",
        ));
    }
    let managed_by = if actor.org.is_root {
        req.managed_by
    } else {
        // A partner admin creates customer organizations of their own partner org only.
        if req.partner {
            return Err(ApiError::forbidden(
                "only root admins create partner organizations",
            ));
        }
        match req.managed_by {
            Some(m) if m != actor.org.id => {
                return Err(ApiError::forbidden(
                    "partner admins create customer organizations of their own org",
                ))
            }
            _ => Some(actor.org.id.clone()),
        }
    };
    if let Some(m) = &managed_by {
        let p = tx
            .get_org(m)?
            .ok_or_else(|| ApiError::field("managed_by", format!("no organization {m:?}")))?;
        if !p.is_partner {
            return Err(ApiError::field(
                "managed_by",
                format!("{m} is not a partner organization"),
            ));
        }
    }
    let max = req.max_lifetime_days.unwrap_or(365);
    if !(1..=400).contains(&max) {
        return Err(ApiError::field("max_lifetime_days", "must be 1..=400"));
    }
    let name = req.name.unwrap_or_else(|| req.id.clone());
    check_text("name", &name, 200, false)?;
    let audience = req.audience.unwrap_or_else(|| "tessera".into());
    check_text("audience", &audience, 200, false)?;
    if tx.get_org(&req.id)?.is_some() {
        return Err(ApiError::conflict(format!(
            "organization {} exists",
            req.id
        )));
    }
    let alg = req.key_alg.unwrap_or(KeyAlg::EdDSA);
    let org = Org {
        id: req.id,
        name,
        partner_org_id: managed_by,
        is_partner: req.partner,
        is_root: false,
        max_lifetime_days: max,
        audience,
        key_alg: alg,
        status_version: 0,
        next_status_idx: 0,
        created_at: ctx.now,
    };
    tx.insert_org(&org)?;
    new_key(tx, ctx, &org.id, alg)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "org.create",
        &org.id,
        json!({"by_org": actor.org.id}),
    )?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &actor.org.id,
        "org.create",
        &org.id,
        json!({}),
    )?;
    Ok(org)
}

/// Organizations the caller may see: all for root admins, a partner's customers, or
/// their own.
pub fn visible_orgs(tx: &mut dyn Tx, actor: &Actor) -> ApiResult<Vec<Org>> {
    Ok(tx
        .list_orgs()?
        .into_iter()
        .filter(|o| {
            o.id == actor.org.id
                || (actor.org.is_root && actor.user.role == Role::Admin)
                || o.partner_org_id.as_deref() == Some(actor.org.id.as_str())
        })
        .collect())
}

pub fn get_org(tx: &mut dyn Tx, actor: &Actor, id: &str) -> ApiResult<Org> {
    visible_orgs(tx, actor)?
        .into_iter()
        .find(|o| o.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no organization {id:?} visible to you")))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    #[serde(default)]
    pub alg: Option<KeyAlg>,
}

/// Starts signing with a new key; the old one stays published until what it signed expires.
pub fn rotate_key(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: RotateKey,
) -> ApiResult<Value> {
    let mut org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let mut retired = Vec::new();
    for mut k in tx.list_keys(org_id)? {
        if k.retired_at.is_none() {
            k.retired_at = Some(ctx.now);
            tx.update_key(&k)?;
            retired.push(k.kid);
        }
    }
    let alg = req.alg.unwrap_or(org.key_alg);
    org.key_alg = alg;
    tx.update_org(&org)?;
    let key = new_key(tx, ctx, org_id, alg)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        org_id,
        "key.rotate",
        &key.kid,
        json!({"retired": retired, "alg": alg.as_str()}),
    )?;
    Ok(json!({"kid": key.kid, "alg": alg.as_str(), "retired": retired}))
}

/// Active keys and retired keys whose tokens may still be alive.
pub fn jwks(tx: &mut dyn Tx, ctx: &Ctx, org_id: &str) -> ApiResult<Value> {
    load_org(tx, org_id)?;
    let keys: Vec<Value> = tx
        .list_keys(org_id)?
        .into_iter()
        .filter(|k| k.retired_at.is_none() || k.last_exp + SKEW > ctx.now)
        .map(|k| k.public_jwk)
        .collect();
    Ok(json!({"keys": keys}))
}

/// `(version, {"bits": 2, "lst": ...})`.
pub fn status_list(tx: &mut dyn Tx, org_id: &str) -> ApiResult<(i64, Value)> {
    let org = load_org(tx, org_id)?;
    let entries = tx.status_entries(org_id)?;
    let lst = statuslist::encode(
        org.next_status_idx.max(0) as usize,
        entries.into_iter().map(|(i, v)| (i.max(0) as usize, v)),
    );
    Ok((org.status_version, json!({"bits": 2, "lst": lst})))
}

/// The status list as a signed `statuslist+jwt`.
pub fn status_list_jwt(tx: &mut dyn Tx, ctx: &Ctx, org_id: &str) -> ApiResult<(i64, String)> {
    let (version, list) = status_list(tx, org_id)?;
    let ttl = 300;
    let exp = ctx.now + 86_400;
    let claims = json!({
        "iss": ctx.issuer(org_id),
        "sub": ctx.status_uri(org_id),
        "iat": ctx.now,
        "exp": exp,
        "ttl": ttl,
        "status_list": list,
    });
    let (jwt, _) = sign(tx, ctx, org_id, TYP_STATUS_LIST, &claims, exp)?;
    Ok((version, jwt))
}

pub fn status_version(tx: &mut dyn Tx, org_id: &str) -> ApiResult<i64> {
    Ok(load_org(tx, org_id)?.status_version)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEdge {
    pub name: String,
}

/// An edge credential for `POST /v1/usage`; the secret is shown once, only its hash kept.
pub fn create_edge(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: CreateEdge,
) -> ApiResult<Value> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    check_text("name", &req.name, 200, false)?;
    let secret = format!("tse_{}", crypto::hex(&crypto::random_bytes::<32>()?));
    let edge = EdgeCredential {
        id: crypto::new_id("edge")?,
        org_id: org_id.to_string(),
        name: req.name,
        secret_sha256: crypto::sha256_hex(secret.as_bytes()),
        created_at: ctx.now,
    };
    tx.insert_edge(&edge)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        org_id,
        "edge.create",
        &edge.id,
        json!({"name": edge.name}),
    )?;
    Ok(json!({"id": edge.id, "org": org_id, "name": edge.name, "secret": secret}))
}

// ---------------------------------------------------------------------------------------
// Users

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub role: Role,
    #[serde(default)]
    pub delegated: bool,
}

pub fn create_user(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: CreateUser,
) -> ApiResult<User> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    check_username("username", &req.username)?;
    let display_name = req.display_name.unwrap_or_else(|| req.username.clone());
    check_text("display_name", &display_name, 200, false)?;
    if req.role == Role::Partner && !org.is_partner {
        return Err(ApiError::field(
            "role",
            "partner users belong to partner organizations",
        ));
    }
    if tx.find_user(org_id, &req.username)?.is_some() {
        return Err(ApiError::conflict(format!(
            "user {} exists in {org_id}",
            req.username
        )));
    }
    let user = User {
        id: crypto::new_id("usr")?,
        org_id: org_id.to_string(),
        username: req.username,
        display_name,
        role: req.role,
        delegated: req.delegated,
        created_at: ctx.now,
    };
    tx.insert_user(&user)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        org_id,
        "user.create",
        &user.id,
        json!({"role": user.role.as_str()}),
    )?;
    Ok(user)
}

pub fn list_users(tx: &mut dyn Tx, actor: &Actor, org_id: &str) -> ApiResult<Vec<User>> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    tx.list_users(org_id)
}

pub fn get_user(tx: &mut dyn Tx, actor: &Actor, id: &str) -> ApiResult<User> {
    let user = load_user(tx, id)?;
    if user.id != actor.user.id {
        let org = load_org(tx, &user.org_id)?;
        policy::require_org_admin(actor, &org, true)?;
    }
    Ok(user)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub delegated: Option<bool>,
}

/// Admins change anything; a user may change their own display name and delegation.
pub fn update_user(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    req: UpdateUser,
) -> ApiResult<User> {
    let mut user = load_user(tx, id)?;
    let org = load_org(tx, &user.org_id)?;
    let is_admin = policy::require_org_admin(actor, &org, true).is_ok();
    if !is_admin && (user.id != actor.user.id || req.role.is_some()) {
        return Err(ApiError::forbidden(if user.id == actor.user.id {
            "only an org admin changes roles"
        } else {
            "you may change only your own user"
        }));
    }
    if let Some(name) = req.display_name {
        check_text("display_name", &name, 200, false)?;
        user.display_name = name;
    }
    if let Some(role) = req.role {
        if role == Role::Partner && !org.is_partner {
            return Err(ApiError::field(
                "role",
                "partner users belong to partner organizations",
            ));
        }
        user.role = role;
    }
    if let Some(d) = req.delegated {
        user.delegated = d;
    }
    tx.update_user(&user)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &user.org_id,
        "user.update",
        &user.id,
        json!({"role": user.role.as_str(), "delegated": user.delegated}),
    )?;
    Ok(user)
}

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// User id or username (of the caller's org); default: the caller.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub lifetime_days: Option<i64>,
    /// A custom expiry instead of `lifetime_days`.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub not_before: Option<Timestamp>,
    #[serde(default)]
    pub ip_allow: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

fn resolve_user(tx: &mut dyn Tx, actor: &Actor, who: Option<&str>) -> ApiResult<User> {
    match who {
        None => Ok(actor.user.clone()),
        Some(w) => {
            if let Some(u) = tx.get_user(w)? {
                return Ok(u);
            }
            tx.find_user(&actor.org.id, w)?
                .ok_or_else(|| ApiError::field("user", format!("no user {w:?}")))
        }
    }
}

fn expiry(
    ctx: &Ctx,
    org: &Org,
    lifetime_days: Option<i64>,
    expires_at: Option<Timestamp>,
) -> ApiResult<(Option<i64>, i64)> {
    let max = org.max_lifetime_days * 86_400;
    match (lifetime_days, expires_at) {
        (Some(_), Some(_)) => Err(ApiError::field(
            "expires_at",
            "give either lifetime_days or expires_at",
        )),
        (None, Some(Timestamp(at))) => {
            if at <= ctx.now {
                Err(ApiError::field("expires_at", "must be in the future"))
            } else if at - ctx.now > max {
                Err(ApiError::field(
                    "expires_at",
                    format!(
                        "at most {} days from now (the org maximum)",
                        org.max_lifetime_days
                    ),
                ))
            } else {
                Ok((None, at))
            }
        }
        (days, None) => {
            let days = days.unwrap_or(DEFAULT_LIFETIME_DAYS.min(org.max_lifetime_days));
            if !LIFETIMES.contains(&days) {
                return Err(ApiError::field(
                    "lifetime_days",
                    format!("one of {LIFETIMES:?}, or give expires_at"),
                ));
            }
            if days > org.max_lifetime_days {
                return Err(ApiError::field(
                    "lifetime_days",
                    format!("the org maximum is {} days", org.max_lifetime_days),
                ));
            }
            Ok((Some(days), ctx.now + days * 86_400))
        }
    }
}

pub fn create_token(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    req: CreateToken,
) -> ApiResult<Value> {
    check_text("name", &req.name, 200, false)?;
    check_text("description", &req.description, 2000, true)?;
    let owner = resolve_user(tx, actor, req.user.as_deref())?;
    let org = load_org(tx, &owner.org_id)?;
    policy::check(actor, &owner, &org, Action::Create)?;
    let (lifetime_days, expires_at) = expiry(ctx, &org, req.lifetime_days, req.expires_at)?;
    let not_before = req.not_before.map(|t| t.0);
    if not_before.is_some_and(|nb| nb >= expires_at) {
        return Err(ApiError::field("not_before", "must be before the expiry"));
    }
    let token = Token {
        id: crypto::new_id("tok")?,
        org_id: org.id.clone(),
        user_id: owner.id.clone(),
        name: req.name,
        description: req.description,
        created_by: actor.user.id.clone(),
        created_at: ctx.now,
        lifetime_days,
        not_before,
        expires_at,
        ip_allow: check_ip_allow(&req.ip_allow)?,
        scopes: check_scopes(&req.scopes)?,
        enabled: req.enabled,
        revoked_at: None,
        deleted_at: None,
        minted_at: None,
        jwt_sha256: None,
        status_idx: None,
        kid: None,
        last_used_at: None,
        last_used_ip: None,
    };
    let mut probe = TokenQuery {
        scope: TokenScope::User(owner.id.clone()),
        q: None,
        status: None,
        user: None,
        expires_before: None,
        sort: crate::store::TokenSort::Name,
        descending: false,
        limit: 1_000_000,
        offset: 0,
        now: ctx.now,
    };
    probe.q = Some(token.name.clone());
    if tx
        .search_tokens(&probe)?
        .0
        .iter()
        .any(|t| t.name == token.name)
    {
        return Err(ApiError::conflict(format!(
            "{} already has a token named {:?}",
            owner.username, token.name
        )));
    }
    tx.insert_token(&token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "token.create",
        &token.id,
        json!({"user": owner.id, "name": token.name}),
    )?;
    Ok(token_view(&token, &owner.username, ctx.now))
}

pub fn get_token(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> ApiResult<Value> {
    let (token, owner, _) = token_for(tx, actor, id, Action::Read)?;
    Ok(token_view(&token, &owner.username, ctx.now))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub expires_before: Option<String>,
    /// A column name, `-` first for descending; default `-created_at`.
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub page: Option<i64>,
    #[serde(default)]
    pub per_page: Option<i64>,
}

/// The tokens the caller may see, matching the filters.
pub fn search(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    p: &SearchParams,
    export: bool,
) -> ApiResult<(Vec<Value>, i64, i64, i64)> {
    let scope = match actor.user.role {
        Role::Admin => TokenScope::Org(actor.org.id.clone()),
        Role::Partner => TokenScope::Partner {
            user_id: actor.user.id.clone(),
            partner_org_id: actor.org.id.clone(),
        },
        Role::User | Role::Readonly => TokenScope::User(actor.user.id.clone()),
    };
    let status = match p.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(TokenStatus::parse(s).ok_or_else(|| {
            ApiError::field(
                "status",
                "one of pending, enabled, disabled, revoked, expired",
            )
        })?),
    };
    let expires_before = match p.expires_before.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(timefmt::parse(s).map_err(|e| ApiError::field("expires_before", e))?),
    };
    let sort_text = p
        .sort
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-created_at".into());
    let (descending, col) = match sort_text.strip_prefix('-') {
        Some(c) => (true, c),
        None => (false, sort_text.as_str()),
    };
    let sort = crate::store::TokenSort::parse(col).ok_or_else(|| {
        ApiError::field(
            "sort",
            format!(
                "one of {:?}, optionally prefixed by '-'",
                crate::store::TokenSort::NAMES
            ),
        )
    })?;
    let max_per_page = if export { 100_000 } else { 500 };
    let per_page = p.per_page.unwrap_or(if export { max_per_page } else { 50 });
    if !(1..=max_per_page).contains(&per_page) {
        return Err(ApiError::field(
            "per_page",
            format!("must be 1..={max_per_page}"),
        ));
    }
    let page = p.page.unwrap_or(1);
    if !(1..=1_000_000).contains(&page) {
        return Err(ApiError::field("page", "must be 1..=1000000"));
    }
    if let Some(q) = &p.q {
        check_text("q", q, 200, true)?;
    }
    let query = TokenQuery {
        scope,
        q: p.q.clone().filter(|s| !s.is_empty()),
        status,
        user: p.user.clone().filter(|s| !s.is_empty()),
        expires_before,
        sort,
        descending,
        limit: per_page,
        offset: (page - 1) * per_page,
        now: ctx.now,
    };
    let (tokens, total) = tx.search_tokens(&query)?;
    let mut names: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(tokens.len());
    for t in &tokens {
        if !names.contains_key(&t.user_id) {
            let n = tx
                .get_user(&t.user_id)?
                .map(|u| u.username)
                .unwrap_or_default();
            names.insert(t.user_id.clone(), n);
        }
        let username = names.get(&t.user_id).map(String::as_str).unwrap_or("");
        out.push(token_view(t, username, ctx.now));
    }
    Ok((out, total, page, per_page))
}

/// Mints the token's JWT once. The owner only; the token becomes Enabled.
pub fn download(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> ApiResult<Value> {
    let (mut token, owner, _) = token_for(tx, actor, id, Action::Download)?;
    match token.status(ctx.now) {
        TokenStatus::Pending => {}
        TokenStatus::Enabled => {
            return Err(ApiError::conflict(
                "the token was already downloaded; regenerate it to get a new JWT",
            ))
        }
        s => return Err(ApiError::conflict(format!("the token is {}", s.as_str()))),
    }
    let jwt = mint(tx, ctx, &mut token)?;
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        "token.download",
        &token.id,
        json!({"status_idx": token.status_idx}),
    )?;
    Ok(json!({"jwt": jwt, "token": token_view(&token, &owner.username, ctx.now)}))
}

/// Mints a new JWT for the same record; the previous one is revoked in the status list.
pub fn regenerate(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> ApiResult<Value> {
    let (mut token, owner, _) = token_for(tx, actor, id, Action::Regenerate)?;
    match token.status(ctx.now) {
        TokenStatus::Pending | TokenStatus::Enabled => {}
        s => return Err(ApiError::conflict(format!("the token is {}", s.as_str()))),
    }
    let old_idx = token.status_idx;
    retire_jwt(tx, &mut token)?;
    let jwt = mint(tx, ctx, &mut token)?;
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        "token.regenerate",
        &token.id,
        json!({"old_status_idx": old_idx, "status_idx": token.status_idx}),
    )?;
    Ok(json!({"jwt": jwt, "token": token_view(&token, &owner.username, ctx.now)}))
}

fn revoke_one(tx: &mut dyn Tx, ctx: &Ctx, token: &mut Token) -> ApiResult<()> {
    token.revoked_at = Some(ctx.now);
    if let Some(idx) = token.status_idx {
        set_status(tx, &token.org_id, idx, status_value::REVOKED, &token.id)?;
    }
    tx.update_token(token)
}

/// Final: a revoked token never comes back.
pub fn revoke(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> ApiResult<Value> {
    let (mut token, owner, _) = token_for(tx, actor, id, Action::Revoke)?;
    if token.revoked_at.is_some() {
        return Err(ApiError::conflict("the token is already revoked"));
    }
    revoke_one(tx, ctx, &mut token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        "token.revoke",
        &token.id,
        json!({}),
    )?;
    Ok(token_view(&token, &owner.username, ctx.now))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeAll {
    /// Revoke every token of this user (id or username)...
    #[serde(default)]
    pub user: Option<String>,
    /// ...or of this whole organization (org admins only).
    #[serde(default)]
    pub org: Option<String>,
}

pub fn revoke_all(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, req: RevokeAll) -> ApiResult<Value> {
    let scope = match (&req.user, &req.org) {
        (Some(_), Some(_)) => return Err(ApiError::field("org", "give either user or org")),
        (None, None) => return Err(ApiError::field("user", "give user or org")),
        (Some(u), None) => {
            let owner = resolve_user(tx, actor, Some(u))?;
            let org = load_org(tx, &owner.org_id)?;
            policy::check(actor, &owner, &org, Action::RevokeAllOfUser)?;
            (TokenScope::User(owner.id), org.id)
        }
        (None, Some(o)) => {
            let org = load_org(tx, o)?;
            policy::require_org_admin(actor, &org, false)?;
            (TokenScope::Org(org.id.clone()), org.id)
        }
    };
    let query = TokenQuery {
        scope: scope.0.clone(),
        q: None,
        status: None,
        user: None,
        expires_before: None,
        sort: crate::store::TokenSort::CreatedAt,
        descending: false,
        limit: 10_000_000,
        offset: 0,
        now: ctx.now,
    };
    let (tokens, _) = tx.search_tokens(&query)?;
    let mut ids = Vec::new();
    for mut t in tokens.into_iter().filter(|t| t.revoked_at.is_none()) {
        revoke_one(tx, ctx, &mut t)?;
        ids.push(t.id);
    }
    let target = match &scope.0 {
        TokenScope::User(u) => u.clone(),
        _ => scope.1.clone(),
    };
    audit(
        tx,
        ctx,
        &actor.user.id,
        &scope.1,
        "token.revoke_all",
        &target,
        json!({"revoked": ids}),
    )?;
    Ok(json!({"revoked": ids.len(), "ids": ids}))
}

fn set_enabled(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    enabled: bool,
) -> ApiResult<Value> {
    let action = if enabled {
        Action::Enable
    } else {
        Action::Disable
    };
    let (mut token, owner, _) = token_for(tx, actor, id, action)?;
    if token.revoked_at.is_some() {
        return Err(ApiError::conflict(
            "the token is revoked; revocation is final",
        ));
    }
    apply_enabled(tx, &mut token, enabled)?;
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        if enabled {
            "token.enable"
        } else {
            "token.disable"
        },
        &token.id,
        json!({}),
    )?;
    Ok(token_view(&token, &owner.username, ctx.now))
}

/// Disabled is "suspended" in the status list: reversible, unlike revoked.
fn apply_enabled(tx: &mut dyn Tx, token: &mut Token, enabled: bool) -> ApiResult<()> {
    if token.enabled != enabled {
        token.enabled = enabled;
        if let Some(idx) = token.status_idx {
            let v = if enabled {
                status_value::VALID
            } else {
                status_value::SUSPENDED
            };
            set_status(tx, &token.org_id, idx, v, &token.id)?;
        }
    }
    Ok(())
}

pub fn enable(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> ApiResult<Value> {
    set_enabled(tx, ctx, actor, id, true)
}

pub fn disable(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> ApiResult<Value> {
    set_enabled(tx, ctx, actor, id, false)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditToken {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub ip_allow: Option<Vec<String>>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub lifetime_days: Option<i64>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    pub not_before: Option<Option<Timestamp>>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Timestamp>>, D::Error> {
    Option::<Timestamp>::deserialize(d).map(Some)
}

/// Changes fields. When a field that lives inside the JWT changes (expiry, not-before, IP
/// filter, scopes), the outstanding JWT is revoked and the token returns to Pending: its
/// owner downloads a new one.
pub fn edit(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    id: &str,
    req: EditToken,
) -> ApiResult<Value> {
    let (mut token, owner, org) = token_for(tx, actor, id, Action::Edit)?;
    if token.revoked_at.is_some() {
        return Err(ApiError::conflict(
            "the token is revoked; revocation is final",
        ));
    }
    let mut changed: Vec<&str> = Vec::new();
    let mut in_jwt = false;
    if let Some(name) = req.name {
        check_text("name", &name, 200, false)?;
        if name != token.name {
            let dup = TokenQuery {
                scope: TokenScope::User(owner.id.clone()),
                q: Some(name.clone()),
                status: None,
                user: None,
                expires_before: None,
                sort: crate::store::TokenSort::Name,
                descending: false,
                limit: 1_000_000,
                offset: 0,
                now: ctx.now,
            };
            if tx.search_tokens(&dup)?.0.iter().any(|t| t.name == name) {
                return Err(ApiError::conflict(format!(
                    "{} already has a token named {name:?}",
                    owner.username
                )));
            }
            token.name = name;
            changed.push("name");
        }
    }
    if let Some(d) = req.description {
        check_text("description", &d, 2000, true)?;
        if d != token.description {
            token.description = d;
            changed.push("description");
        }
    }
    if let Some(list) = req.ip_allow {
        let list = check_ip_allow(&list)?;
        if list != token.ip_allow {
            token.ip_allow = list;
            changed.push("ip_allow");
            in_jwt = true;
        }
    }
    if let Some(list) = req.scopes {
        let list = check_scopes(&list)?;
        if list != token.scopes {
            token.scopes = list;
            changed.push("scopes");
            in_jwt = true;
        }
    }
    if req.expires_at.is_some() || req.lifetime_days.is_some() {
        let (days, at) = expiry(ctx, &org, req.lifetime_days, req.expires_at)?;
        if at != token.expires_at {
            token.lifetime_days = days;
            token.expires_at = at;
            changed.push("expires_at");
            in_jwt = true;
        }
    }
    if let Some(nb) = req.not_before {
        let nb = nb.map(|t| t.0);
        if nb != token.not_before {
            token.not_before = nb;
            changed.push("not_before");
            in_jwt = true;
        }
    }
    if token.not_before.is_some_and(|nb| nb >= token.expires_at) {
        return Err(ApiError::field("not_before", "must be before the expiry"));
    }
    if let Some(e) = req.enabled {
        if e != token.enabled {
            changed.push("enabled");
        }
        apply_enabled(tx, &mut token, e)?;
    }
    let jwt_revoked = in_jwt && retire_jwt(tx, &mut token)?;
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        "token.edit",
        &token.id,
        json!({"changed": changed, "jwt_revoked": jwt_revoked}),
    )?;
    Ok(
        json!({"token": token_view(&token, &owner.username, ctx.now), "changed": changed, "jwt_revoked": jwt_revoked}),
    )
}

/// Cannot be undone: the record disappears from lists, its JWT stays revoked.
pub fn delete(tx: &mut dyn Tx, ctx: &Ctx, actor: &Actor, id: &str) -> ApiResult<Value> {
    let (mut token, _, _) = token_for(tx, actor, id, Action::Delete)?;
    if token.revoked_at.is_none() {
        token.revoked_at = Some(ctx.now);
    }
    if let Some(idx) = token.status_idx {
        set_status(tx, &token.org_id, idx, status_value::REVOKED, &token.id)?;
    }
    token.deleted_at = Some(ctx.now);
    tx.update_token(&token)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &token.org_id,
        "token.delete",
        &token.id,
        json!({"name": token.name}),
    )?;
    Ok(json!({"id": token.id, "deleted": true, "status": token.status(ctx.now).as_str()}))
}

// ---------------------------------------------------------------------------------------
// Presented tokens: API authentication and token exchange

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Api,
    Access,
}

/// A token that passed every check of the control plane.
pub struct Presented {
    pub kind: Kind,
    pub token: Token,
    pub user: User,
    pub org: Org,
    pub claims: serde_json::Map<String, Value>,
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

fn refused(reason: Reason, token: Option<Token>) -> Refused {
    Refused {
        reason,
        deny: Deny::new(reason, auth::REALM, &[]),
        token,
    }
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
) -> ApiResult<Option<Token>> {
    Ok(tx
        .get_token(parent.unwrap_or(jti))?
        .filter(|t| t.org_id == org && user.is_none_or(|u| t.user_id == u)))
}

/// The first address of the presented token's `ip_allow` (unverified: only used to ask
/// core again, which verifies everything).
fn first_allowed_address(
    verifier: &tessera_core::Verifier,
    headers: &[(String, String)],
) -> Option<String> {
    let found = tessera_core::extract::extract(&verifier.config().token_sources, headers)
        .ok()
        .flatten()?;
    let jws = UntrustedJws::parse(found.token).ok()?;
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
    verifiers: &auth::Verifiers,
    presented: &Presentation<'_>,
    accept: &[Kind],
) -> ApiResult<Result<Presented, Refused>> {
    let Some(verifier) = verifiers.current(tx, ctx)? else {
        // An empty database: no key can verify anything.
        let has_token = presented
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
        let reason = if has_token {
            Reason::KeyUnknown
        } else {
            Reason::TokenMissing
        };
        return Ok(Err(refused(reason, None)));
    };
    let req = CoreRequest {
        method: presented.method,
        path: presented.path,
        headers: presented.headers,
        source_address: presented.peer,
    };
    let now = u64::try_from(ctx.now).unwrap_or(0);
    let mut outcome = verifier.check(&req, now, None);
    if presented.peer.is_none() && outcome.decision.reason() == Some(Reason::IpNotAllowed) {
        // No socket, so no client address (an in-process caller; `tessera serve` always
        // knows the peer): the IP filter cannot apply. Core decides the request as coming
        // from inside the token's filter; every other check stands.
        if let Some(inside) = first_allowed_address(&verifier, req.headers) {
            outcome = verifier.check(
                &CoreRequest {
                    source_address: Some(&inside),
                    ..req
                },
                now,
                None,
            );
        }
    }
    let identity = match outcome.decision {
        Decision::Allow(identity) => identity,
        Decision::Deny(deny) => {
            // Once the signature verified, the token's record is known: log against it.
            let token = match &outcome.subject {
                Some(s) => record_of(tx, &s.org, None, &s.token_id, s.parent.as_deref())?,
                None => None,
            };
            return Ok(Err(Refused {
                reason: deny.reason,
                deny,
                token,
            }));
        }
    };
    let jwt = match tessera_core::extract::extract(&verifier.config().token_sources, req.headers) {
        Ok(Some(found)) => found.token,
        // Core allowed, so it found exactly one token.
        _ => return Ok(Err(refused(Reason::TokenMalformed, None))),
    };
    let kind = match identity.token_type.as_str() {
        TYP_API => Kind::Api,
        TYP_ACCESS => Kind::Access,
        _ => return Ok(Err(refused(Reason::TypeMismatch, None))),
    };
    if !accept.contains(&kind) {
        return Ok(Err(refused(Reason::TypeMismatch, None)));
    }
    // Core verified the signature: the header and claims are the issuer's.
    let Ok(jws) = UntrustedJws::parse(jwt) else {
        return Ok(Err(refused(Reason::TokenMalformed, None)));
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
    let with = |reason: Reason| Ok(Err(refused(reason, token.clone())));
    let key_org = match jws.header_str("kid") {
        Some(kid) => tx.get_key(kid)?.map(|k| k.org_id),
        None => None,
    };
    if key_org.as_deref() != Some(org_id)
        || c.get("iss").and_then(Value::as_str) != Some(ctx.issuer(org_id).as_str())
    {
        return with(Reason::IssuerMismatch);
    }
    let Some(org) = tx.get_org(org_id)? else {
        return with(Reason::IssuerMismatch);
    };
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
    let claims = c.clone();
    Ok(Ok(Presented {
        kind,
        token: record,
        user,
        org,
        claims,
    }))
}

/// Exchanges an API token for a short-lived `at+jwt` carrying the parent's status entry.
/// The outer error aborts the transaction; the inner one is a refusal, committed so that
/// it stays in the authentication log.
///
/// The API token goes through the same verifier as an API credential, presented as
/// `Authorization: Bearer <api token>` from `peer` (`ip:port`), so its IP filter applies.
pub fn exchange(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    verifiers: &auth::Verifiers,
    api_token: &str,
    peer: Option<&str>,
) -> ApiResult<ApiResult<Value>> {
    let invalid_grant =
        |msg: String| ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_grant", msg);
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
        Ok(p) => p,
        Err(r) => {
            if let Some(t) = &r.token {
                log_event(tx, ctx, t, ip, "deny", Some(r.reason.as_str()), "exchange")?;
            }
            return Ok(Err(invalid_grant(format!(
                "the API token is not usable: {}",
                r.reason
            ))));
        }
    };
    let exp = (ctx.now + ctx.access_ttl).min(p.token.expires_at);
    let mut claims = p.claims.clone();
    claims.insert("jti".into(), json!(crypto::new_id("at")?));
    claims.insert("iat".into(), json!(ctx.now));
    claims.insert("nbf".into(), json!(ctx.now));
    claims.insert("exp".into(), json!(exp));
    claims.insert("parent".into(), json!(p.token.id));
    claims.insert("client_id".into(), json!(p.token.id));
    let (jwt, _) = sign(tx, ctx, &p.org.id, TYP_ACCESS, &Value::Object(claims), exp)?;
    let mut token = p.token;
    log_event(tx, ctx, &token, ip.clone(), "allow", None, "exchange")?;
    token.last_used_at = Some(ctx.now);
    token.last_used_ip = ip;
    tx.update_token(&token)?;
    Ok(Ok(
        json!({"access_token": jwt, "token_type": "Bearer", "expires_in": exp - ctx.now}),
    ))
}

fn log_event(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    t: &Token,
    ip: Option<String>,
    outcome: &str,
    reason: Option<&str>,
    source: &str,
) -> ApiResult<()> {
    tx.insert_auth_event(&AuthEvent {
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
    })
}

// ---------------------------------------------------------------------------------------
// Usage and logs

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    pub events: Vec<UsageEvent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    /// The `jti` the edge saw.
    pub token_id: String,
    /// For access tokens: the API token it was exchanged from.
    #[serde(default)]
    pub parent: Option<String>,
    pub at: Timestamp,
    #[serde(default)]
    pub ip: Option<String>,
    /// `allow` or `deny`.
    pub outcome: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

/// Records edge usage events for tokens of the edge's org; allowed uses update last-used.
pub fn record_usage(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    edge_secret: &str,
    batch: UsageBatch,
) -> ApiResult<Value> {
    let edge = tx
        .find_edge_by_secret_hash(&crypto::sha256_hex(edge_secret.as_bytes()))?
        .ok_or_else(|| ApiError::unauthorized("unknown edge credential"))?;
    if batch.events.len() > 1000 {
        return Err(ApiError::field("events", "at most 1000 events per batch"));
    }
    let (mut accepted, mut unknown) = (0, Vec::new());
    for (n, e) in batch.events.into_iter().enumerate() {
        let f = |name: &str| format!("events[{n}].{name}");
        if e.at.0 > ctx.now + 300 {
            return Err(ApiError::field(
                &f("at"),
                "more than 5 minutes in the future",
            ));
        }
        if e.outcome != "allow" && e.outcome != "deny" {
            return Err(ApiError::field(&f("outcome"), "allow or deny"));
        }
        let ip = match &e.ip {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| ApiError::field(&f("ip"), "not an IP address"))?
                    .to_string(),
            ),
            None => None,
        };
        for (name, v, max) in [
            ("reason", &e.reason, 100),
            ("method", &e.method, 20),
            ("path", &e.path, 2048),
        ] {
            if let Some(v) = v {
                check_text(&f(name), v, max, true)?;
            }
        }
        let record = e.parent.as_deref().unwrap_or(&e.token_id);
        let token = tx.get_token(record)?.filter(|t| t.org_id == edge.org_id);
        let Some(mut token) = token else {
            unknown.push(e.token_id);
            continue;
        };
        tx.insert_auth_event(&AuthEvent {
            id: 0,
            org_id: token.org_id.clone(),
            token_id: token.id.clone(),
            user_id: token.user_id.clone(),
            at: e.at.0,
            ip: ip.clone(),
            outcome: e.outcome.clone(),
            reason: e.reason,
            method: e.method,
            path: e.path,
            source: format!("edge:{}", edge.id),
        })?;
        if e.outcome == "allow" && token.last_used_at.is_none_or(|l| l < e.at.0) {
            token.last_used_at = Some(e.at.0);
            token.last_used_ip = ip;
            tx.update_token(&token)?;
        }
        accepted += 1;
    }
    Ok(json!({"accepted": accepted, "unknown_tokens": unknown}))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub page: Option<i64>,
    #[serde(default)]
    pub per_page: Option<i64>,
}

fn log_query(p: &LogParams) -> ApiResult<AuthEventQuery> {
    let t = |name: &str, v: &Option<String>| -> ApiResult<Option<i64>> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => timefmt::parse(s)
                .map(Some)
                .map_err(|e| ApiError::field(name, e)),
        }
    };
    if let Some(o) = p.outcome.as_deref().filter(|s| !s.is_empty()) {
        if o != "allow" && o != "deny" {
            return Err(ApiError::field("outcome", "allow or deny"));
        }
    }
    let per_page = p.per_page.unwrap_or(100);
    if !(1..=1000).contains(&per_page) {
        return Err(ApiError::field("per_page", "must be 1..=1000"));
    }
    let page = p.page.unwrap_or(1);
    if !(1..=1_000_000).contains(&page) {
        return Err(ApiError::field("page", "must be 1..=1000000"));
    }
    Ok(AuthEventQuery {
        org_id: None,
        token_id: p.token.clone().filter(|s| !s.is_empty()),
        user_id: p.user.clone().filter(|s| !s.is_empty()),
        outcome: p.outcome.clone().filter(|s| !s.is_empty()),
        since: t("since", &p.since)?,
        until: t("until", &p.until)?,
        limit: per_page,
        offset: (page - 1) * per_page,
    })
}

pub fn token_auth_log(
    tx: &mut dyn Tx,
    actor: &Actor,
    id: &str,
    p: &LogParams,
) -> ApiResult<Vec<Value>> {
    let (token, _, _) = token_for(tx, actor, id, Action::ReadAuthLog)?;
    let mut q = log_query(p)?;
    q.token_id = Some(token.id);
    Ok(tx
        .list_auth_events(&q)?
        .iter()
        .map(auth_event_view)
        .collect())
}

/// All of the caller's tokens; an admin sees the whole org.
pub fn auth_log(tx: &mut dyn Tx, actor: &Actor, p: &LogParams) -> ApiResult<Vec<Value>> {
    let mut q = log_query(p)?;
    q.org_id = Some(actor.org.id.clone());
    if actor.user.role != Role::Admin {
        if q.user_id.as_deref().is_some_and(|u| u != actor.user.id) {
            return Err(ApiError::forbidden(format!(
                "the {} role reads only its own log",
                actor.user.role.as_str()
            )));
        }
        q.user_id = Some(actor.user.id.clone());
    }
    Ok(tx
        .list_auth_events(&q)?
        .iter()
        .map(auth_event_view)
        .collect())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub page: Option<i64>,
    #[serde(default)]
    pub per_page: Option<i64>,
}

pub fn audit_log(tx: &mut dyn Tx, actor: &Actor, p: &AuditParams) -> ApiResult<Vec<Value>> {
    let org_id = p.org.clone().unwrap_or_else(|| actor.org.id.clone());
    let org = load_org(tx, &org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    let per_page = p.per_page.unwrap_or(100);
    if !(1..=1000).contains(&per_page) {
        return Err(ApiError::field("per_page", "must be 1..=1000"));
    }
    let page = p.page.unwrap_or(1);
    if !(1..=1_000_000).contains(&page) {
        return Err(ApiError::field("page", "must be 1..=1000000"));
    }
    Ok(tx
        .list_audit(
            &org_id,
            p.target.as_deref(),
            per_page,
            (page - 1) * per_page,
        )?
        .into_iter()
        .map(|a| {
            json!({"id": a.id, "at": timefmt::format(a.at), "org": a.org_id, "actor": a.actor,
                   "action": a.action, "target": a.target, "detail": a.detail})
        })
        .collect())
}

pub fn token_view_for(tx: &mut dyn Tx, t: &Token, now: i64) -> ApiResult<Value> {
    token_view_tx(tx, t, now)
}
