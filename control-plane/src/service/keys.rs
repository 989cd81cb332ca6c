//! Signing and minting with the org's keys, the published key set (JWKS), and the status
//! lists the edges sync.

use super::{load_org, Ctx, Error, Result, SKEW, TYP_STATUS_LIST};
use crate::crypto;
use crate::model::{status_value, KeyAlg, Org, SigningKey, Token};
use crate::store::Tx;
use serde_json::{json, Value};
use tessera_core::token::{
    Audience, Cidr, Claims, Status, StatusListRef, TokenType, API_TOKEN_PREFIX,
};
use tessera_core::{StatusList, TokenStatus};

/// Sets one status-list entry and bumps the org's list version; the entry remembers the
/// version it was changed at, so a reader holding an older version fetches only what
/// changed since ([`Tx::status_changes_since`]).
pub(crate) fn set_status(
    ctx: &Ctx,
    tx: &mut dyn Tx,
    org_id: &str,
    idx: i64,
    value: u8,
    token_id: &str,
) -> Result<()> {
    let mut org = load_org(tx, org_id)?;
    set_status_of(ctx, tx, &mut org, idx, value, token_id)
}

/// [`set_status`] with the org row this transaction already loaded (and locked), which is
/// written back with the new version (and whatever else the caller changed in it).
fn set_status_of(
    ctx: &Ctx,
    tx: &mut dyn Tx,
    org: &mut Org,
    idx: i64,
    value: u8,
    token_id: &str,
) -> Result<()> {
    org.status_version += 1;
    tx.update_org(org)?;
    tx.set_status(&org.id, idx, value, token_id, org.status_version)?;
    ctx.mark_edges_changed();
    Ok(())
}

fn active_key(tx: &mut dyn Tx, org_id: &str) -> Result<SigningKey> {
    tx.list_keys(org_id)?
        .into_iter()
        .find(|k| k.retired_at.is_none())
        .ok_or_else(|| Error::internal(format!("organization {org_id} has no active key")))
}

/// Signs with the org's active key, remembering how long the key must stay published.
pub(crate) fn sign(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    typ: &str,
    claims: &Value,
    exp: i64,
) -> Result<(String, String)> {
    let mut key = active_key(tx, org_id)?;
    let secret = ctx.master.open(&key.kid, &key.private_enc)?;
    let jws = crypto::sign_jws(key.alg, &key.kid, &secret, typ, claims)?;
    if exp > key.last_exp {
        key.last_exp = exp;
        tx.update_key(&key)?;
    }
    Ok((jws, key.kid))
}

/// Signs a Tessera token (the shared claims type core checks) with the org's active key.
pub(crate) fn sign_claims(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    typ: TokenType,
    claims: &Claims,
) -> Result<(String, String)> {
    let mut key = active_key(tx, org_id)?;
    let secret = ctx.master.open(&key.kid, &key.private_enc)?;
    let jws = crypto::sign_token(key.alg, &key.kid, &secret, typ, claims)?;
    if claims.exp > key.last_exp {
        key.last_exp = claims.exp;
        tx.update_key(&key)?;
    }
    Ok((jws, key.kid))
}

pub(crate) fn new_key(tx: &mut dyn Tx, ctx: &Ctx, org_id: &str, alg: KeyAlg) -> Result<SigningKey> {
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
    ctx.mark_edges_changed();
    Ok(key)
}

/// Mints the JWT of ARCHITECTURE.md for `token` under a fresh status-list index and returns
/// it with the scannable prefix (`tsr_`, core's `API_TOKEN_PREFIX`); only the JWT's hash is
/// kept (the hash of the JWS, which is what core extracts from either form). `org` is the
/// token's org as this transaction loaded it (locked), and is written back once with the
/// index taken and the list's new version.
pub(crate) fn mint(tx: &mut dyn Tx, ctx: &Ctx, org: &mut Org, token: &mut Token) -> Result<String> {
    if org.id != token.org_id {
        return Err(Error::internal("minting a token under another org"));
    }
    let idx = org.next_status_idx;
    org.next_status_idx += 1;
    set_status_of(ctx, tx, org, idx, status_value::VALID, &token.id)?;
    let claims = claims_of(tx, ctx, org, token, idx)?;
    let (jwt, kid) = sign_claims(tx, ctx, &org.id, TokenType::Api, &claims)?;
    token.jwt_sha256 = Some(crypto::sha256_hex(jwt.as_bytes()));
    token.minted_at = Some(ctx.now);
    token.status_idx = Some(idx);
    token.kid = Some(kid);
    Ok(format!("{API_TOKEN_PREFIX}{jwt}"))
}

/// The longest token the verifiers accept by default (core's `max_token_bytes`).
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Refuses a token whose JWT would be longer than the verifiers accept. The length is
/// computed, not measured on a signed trial ([`crypto::token_len`]): the claims with the
/// largest status index and what an exchanged access token adds, under the org's active
/// key id. The error names the larger of the two lists that make a JWT long (`scopes`,
/// `ip_allow`).
pub(crate) fn check_mintable(tx: &mut dyn Tx, ctx: &Ctx, org: &Org, token: &Token) -> Result<()> {
    // An access token exchanged from it carries the same claims and its parent's id twice.
    let mut claims = claims_of(tx, ctx, org, token, i64::from(u32::MAX))?;
    claims.parent = Some(token.id.clone());
    claims.client_id = Some(token.id.clone());
    let key = active_key(tx, &org.id)?;
    let len = crypto::token_len(key.alg, &key.kid, TokenType::Api, &claims)?;
    if len <= MAX_TOKEN_BYTES {
        return Ok(());
    }
    let scopes: usize = token.scopes.iter().map(|s| s.len() + 1).sum();
    let ips: usize = token.ip_allow.iter().map(|s| s.len() + 3).sum();
    let field = if scopes >= ips { "scopes" } else { "ip_allow" };
    Err(Error::field(
        field,
        format!(
            "the token would be {len} bytes, over the verifiers' limit of {MAX_TOKEN_BYTES}; use fewer or shorter scopes or ip_allow entries"
        ),
    ))
}

/// The claims of `token`'s JWT under status index `idx`, with its owner's username as
/// `preferred_username` (for the identity headers; `sub` stays the authority).
fn claims_of(tx: &mut dyn Tx, ctx: &Ctx, org: &Org, token: &Token, idx: i64) -> Result<Claims> {
    let owner = super::load_user(tx, &token.user_id)?;
    let ip_allow = token
        .ip_allow
        .iter()
        .map(|c| c.parse::<Cidr>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::internal(format!("stored ip_allow of {}: {e}", token.id)))?;
    Ok(Claims {
        iss: ctx.issuer(&org.id),
        sub: token.user_id.clone(),
        preferred_username: Some(owner.username),
        org: org.id.clone(),
        jti: token.id.clone(),
        aud: Audience::One(org.audience.clone()),
        iat: Some(ctx.now),
        nbf: Some(token.not_before.unwrap_or(ctx.now)),
        exp: token.expires_at,
        scope: Some(token.scopes.join(" ")),
        ip_allow,
        status: Some(Status {
            status_list: StatusListRef {
                idx: u64::try_from(idx).map_err(|_| Error::internal("negative status index"))?,
                uri: ctx.status_uri(&org.id),
            },
        }),
        parent: None,
        client_id: None,
    })
}

/// Marks the outstanding JWT revoked in the status list and returns the token to Pending.
/// `org` is the token's org as this transaction holds it (see [`mint`]).
pub(crate) fn retire_jwt(
    ctx: &Ctx,
    tx: &mut dyn Tx,
    org: &mut Org,
    token: &mut Token,
) -> Result<bool> {
    let had = token.jwt_sha256.is_some();
    if let Some(idx) = token.status_idx {
        set_status_of(ctx, tx, org, idx, status_value::REVOKED, &token.id)?;
    }
    token.jwt_sha256 = None;
    token.minted_at = None;
    token.status_idx = None;
    token.kid = None;
    Ok(had)
}

/// The public keys the org publishes now: active keys, and retired keys whose tokens may
/// still be alive. Each names the org's issuer (`iss`, a member core reads and RFC 7517
/// lets others ignore), so a verifier trusting several orgs accepts a key only for its own
/// org's tokens (RFC 8725 §3.8).
pub fn jwks_keys(tx: &mut dyn Tx, ctx: &Ctx, org_id: &str) -> Result<Vec<Value>> {
    let issuer = Value::String(ctx.issuer(org_id));
    Ok(tx
        .list_keys(org_id)?
        .into_iter()
        .filter(|k| k.retired_at.is_none() || k.last_exp + SKEW > ctx.now)
        .map(|k| {
            let mut jwk = k.public_jwk;
            if let Some(m) = jwk.as_object_mut() {
                m.insert("iss".into(), issuer.clone());
            }
            jwk
        })
        .collect())
}

/// The org's JWKS document.
pub fn jwks(tx: &mut dyn Tx, ctx: &Ctx, org_id: &str) -> Result<super::views::Jwks> {
    load_org(tx, org_id)?;
    Ok(super::views::Jwks {
        keys: jwks_keys(tx, ctx, org_id)?,
    })
}

/// The org's status list at the version the transaction sees, built with core's codec
/// (the one the edges decode with): `(version, list)`.
pub fn status_list_of(tx: &mut dyn Tx, org_id: &str) -> Result<(i64, StatusList)> {
    let org = load_org(tx, org_id)?;
    let entries = tx.status_entries(org_id)?;
    let list = StatusList::from_entries(
        usize::try_from(org.next_status_idx).unwrap_or(0).max(1),
        entries
            .into_iter()
            .filter_map(|(i, v)| Some((usize::try_from(i).ok()?, status_of(v)))),
    );
    Ok((org.status_version, list))
}

/// A stored entry's value (`model::status_value`) as core's status.
pub fn status_of(value: u8) -> TokenStatus {
    match value {
        status_value::VALID => TokenStatus::Valid,
        status_value::REVOKED => TokenStatus::Revoked,
        status_value::SUSPENDED => TokenStatus::Suspended,
        // ROTATED, and nothing else is ever stored.
        _ => TokenStatus::Rotated,
    }
}

/// `(version, {"bits": 2, "lst": ...})`.
pub fn status_list(tx: &mut dyn Tx, org_id: &str) -> Result<(i64, Value)> {
    let (version, list) = status_list_of(tx, org_id)?;
    Ok((version, json!({"bits": 2, "lst": list.to_lst()})))
}

/// The status list as a signed `statuslist+jwt`. `withdrawn` (the scopes withdrawn from
/// live tokens, as the JSON form carries them) joins the `status_list` claim beside `bits`
/// and `lst`, so a consumer of the signed form narrows tokens exactly as the edges do.
pub fn status_list_jwt(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    org_id: &str,
    withdrawn: Option<Value>,
) -> Result<(i64, String)> {
    let (version, mut list) = status_list(tx, org_id)?;
    if let (Some(w), Some(obj)) = (withdrawn, list.as_object_mut()) {
        obj.insert("withdrawn".into(), w);
    }
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

pub fn status_version(tx: &mut dyn Tx, org_id: &str) -> Result<i64> {
    Ok(load_org(tx, org_id)?.status_version)
}
