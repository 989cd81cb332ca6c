//! RFC 7662 token introspection, for resource servers that do not run the filter: they ask
//! the control plane whether a token is active, authenticated by an edge credential of the
//! org, and get the answer an edge of that org would give — the same core verifier, the
//! same status list and the same withdrawn scopes (`Verifiers::judge`).
//!
//! What the answer leaves to the resource server is what a route rule does at an edge:
//! `scope` lists the scopes the token still holds, and the resource server requires the
//! ones its route needs. The IP filter is core's, applied to the address the resource
//! server names (`client_ip`); without one, a token with an IP filter is inactive
//! (`ip_not_allowed`), as at an edge that cannot tell the client.
//!
//! A token is judged only by the caller's org's verifier, so a token of another org is
//! inactive with the reason a forged one gets (`key_unknown`: its key is not one of this
//! org's), and the answer never says that it exists elsewhere.

use super::{load_org, Ctx, Error, Result, Verifiers};
use crate::crypto::UntrustedJws;
use crate::store::Tx;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use tessera_core::Decision;
use utoipa::ToSchema;

/// The request: RFC 7662 §2.1, form-encoded.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct IntrospectForm {
    /// The token to introspect: an API token (with or without its `tsr_` prefix) or an
    /// access token from the exchange.
    pub token: String,
    /// RFC 7662's hint (`access_token`, `refresh_token`, ...): accepted and not needed,
    /// since a Tessera token says what it is.
    #[serde(default)]
    pub token_type_hint: Option<String>,
    /// Tessera's extension: the address the resource server's client called from, for the
    /// token's IP filter (as an edge applies it). Without it, a token that has an IP filter
    /// is inactive (`ip_not_allowed`).
    #[serde(default)]
    pub client_ip: Option<String>,
}

/// The answer: RFC 7662 §2.2. An inactive token gets `active: false` and Tessera's
/// `reason` only (the caller is an edge credential of the org, which an edge's refusal
/// body tells as much).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Introspection {
    /// Whether the token is active: an edge of the org would let it through a route that
    /// requires none of the scopes it lacks.
    pub active: bool,
    /// The scopes the token holds now, space-separated (what the catalogue withdrew since
    /// it was issued is left out, as at every edge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The API token the caller uses: the token itself, or an access token's parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The user the token belongs to (a user id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Issued at, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before, Unix seconds, when the token has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// How the token is presented (RFC 6749 §7.1): `Bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Tessera's kind of token, its header `typ` as core normalises it: `tessera-api+jwt`
    /// (an API token) or `at+jwt` (an access token from the exchange).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// The token's id (`jti`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The issuer: the org's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Why the token is inactive: the reason code an edge of the org gives (`expired`,
    /// `revoked`, `key_unknown`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The longest `token_type_hint` taken (the registered hints are a dozen characters).
const MAX_HINT: usize = 100;

/// The address in `client_ip` as core takes a peer address (`ip:port`).
fn client_address(client_ip: Option<&str>) -> Result<Option<String>> {
    let Some(text) = client_ip.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let ip: IpAddr = text.parse().map_err(|_| {
        Error::field(
            "client_ip",
            format!("{text:?} is not an IPv4 or IPv6 address (give the bare address, no port)"),
        )
    })?;
    Ok(Some(SocketAddr::new(ip, 0).to_string()))
}

/// Checks the form before anything is read: a token, a short hint, an address.
pub fn check_form(form: &IntrospectForm) -> Result<Option<String>> {
    if form.token.trim().is_empty() {
        return Err(Error::field("token", "required: the token to introspect"));
    }
    if form
        .token_type_hint
        .as_ref()
        .is_some_and(|h| h.len() > MAX_HINT)
    {
        return Err(Error::field(
            "token_type_hint",
            format!("at most {MAX_HINT} characters"),
        ));
    }
    client_address(form.client_ip.as_deref())
}

/// Introspects `form.token` for the org of the edge credential `secret` (401 when the
/// credential is unknown or revoked).
pub fn introspect(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    verifiers: &Verifiers,
    secret: &str,
    form: &IntrospectForm,
) -> Result<Introspection> {
    let client = check_form(form)?;
    let edge = super::logs::edge_of(tx, secret)?;
    let org = load_org(tx, &edge.org_id)?;
    let outcome = verifiers.judge(tx, ctx, &org, form.token.trim(), client.as_deref())?;
    let identity = match outcome.decision {
        Decision::Allow(identity) => identity,
        Decision::Deny(deny) => {
            return Ok(Introspection {
                active: false,
                reason: Some(deny.reason.as_str().to_string()),
                ..Introspection::default()
            })
        }
    };
    // Core verified the signature: the claims are the org's. iat and nbf are read here
    // (core's identity carries what the edges forward, not these).
    let jws = UntrustedJws::parse(tessera_core::token::strip_api_prefix(form.token.trim()))
        .map_err(|e| Error::internal(format!("a token core accepted does not parse: {e}")))?;
    let number = |name: &str| jws.claims.get(name).and_then(Value::as_i64);
    Ok(Introspection {
        active: true,
        scope: (!identity.scopes.is_empty()).then(|| identity.scopes.join(" ")),
        client_id: Some(identity.parent.unwrap_or_else(|| identity.token_id.clone())),
        sub: Some(identity.user),
        exp: Some(identity.expires_at),
        iat: number("iat"),
        nbf: number("nbf"),
        token_type: Some("Bearer".into()),
        typ: Some(identity.token_type),
        jti: Some(identity.token_id),
        iss: Some(ctx.issuer(&org.id)),
        reason: None,
    })
}
