//! What a credential may do, on top of what its user's role may do (`policy`): access
//! tokens never manage anything, API tokens manage only with [`MANAGE_SCOPE`], and a token
//! made by a token never exceeds the token that made it.

use super::authn::{Kind, Presented};
use super::{Error, Result};
use crate::policy::{Actor, Credential};
use tessera_core::ip::Cidr;

/// The scope an API token must carry to call any management route (tokens, users,
/// organizations, keys, edge credentials, logs). Sessions need no scope; access tokens
/// are refused whatever they carry.
pub const MANAGE_SCOPE: &str = "tessera:manage";

/// Stable reason: an access token (from exchange) was presented to a management route.
pub const ACCESS_TOKEN_REFUSED: &str = "access_token_not_allowed";
/// Stable reason: an API token without [`MANAGE_SCOPE`] was presented to a management route.
pub const SCOPE_REQUIRED: &str = "management_scope_required";
/// Stable reason: a token-authenticated call asked for a token stronger than its own.
pub const EXCEEDS_CREATOR: &str = "exceeds_creator";

/// The routes any credential may call: who am I.
const IDENTITY_ROUTES: [&str; 2] = ["/v1/me", "/v1/session"];

/// The credential a verified token speaks for.
pub fn credential_of(p: &Presented) -> Credential {
    match p.kind {
        Kind::Api => Credential::ApiToken {
            id: p.token.id.clone(),
            scopes: p.claims.scopes().map(str::to_string).collect(),
            ip_allow: p.claims.ip_allow.iter().map(|c| c.to_string()).collect(),
            expires_at: p.claims.exp,
        },
        Kind::Access => Credential::Access {
            id: p.claims.jti.clone(),
            parent: p.token.id.clone(),
        },
    }
}

/// Whether the caller's credential may call `route` (the matched route path) at all.
pub fn admit(actor: &Actor, route: &str) -> Result<()> {
    if IDENTITY_ROUTES.contains(&route) {
        return Ok(());
    }
    match &actor.credential {
        Credential::Internal | Credential::Session { .. } => Ok(()),
        Credential::Access { .. } => Err(Error::denied(
            ACCESS_TOKEN_REFUSED,
            "access tokens call the APIs behind the data plane; they manage nothing",
        )),
        Credential::ApiToken { scopes, .. } => {
            if scopes.iter().any(|s| s == MANAGE_SCOPE) {
                Ok(())
            } else {
                Err(Error::denied(
                    SCOPE_REQUIRED,
                    format!("this API token lacks the {MANAGE_SCOPE} scope"),
                ))
            }
        }
    }
}

/// Checks, inside a write, that the caller's credential is still usable: the token not
/// revoked or disabled since it was verified, the session not ended or timed out.
pub fn still_valid(tx: &mut dyn crate::store::Tx, ctx: &super::Ctx, actor: &Actor) -> Result<()> {
    match &actor.credential {
        Credential::Session { id } => super::sessions::still_open(tx, ctx, id),
        _ => super::authn::still_valid(tx, ctx, actor),
    }
}

/// A token made or changed by a token-authenticated call: its scopes must be a subset of
/// the creator's, its IP filter inside the creator's, and its expiry no later. Sessions
/// and in-process callers are bound only by the role matrix and the org's maximum.
pub fn bound_token(
    actor: &Actor,
    scopes: &[String],
    ip_allow: &[String],
    expires_at: i64,
) -> Result<()> {
    let Credential::ApiToken {
        scopes: own,
        ip_allow: own_ip,
        expires_at: own_exp,
        ..
    } = &actor.credential
    else {
        return match &actor.credential {
            Credential::Access { .. } => admit(actor, ""),
            _ => Ok(()),
        };
    };
    if let Some(extra) = scopes.iter().find(|s| !own.contains(s)) {
        return Err(exceeds(
            "scopes",
            format!("{extra:?} is not a scope of the token you act with"),
        ));
    }
    if !own_ip.is_empty() {
        let own: Vec<Cidr> = own_ip.iter().filter_map(|c| Cidr::parse(c)).collect();
        if ip_allow.is_empty() {
            return Err(exceeds(
                "ip_allow",
                "must stay inside the IP filter of the token you act with (empty means any address)",
            ));
        }
        for (n, c) in ip_allow.iter().enumerate() {
            let inside = Cidr::parse(c).is_some_and(|c| own.iter().any(|o| cidr_inside(&c, o)));
            if !inside {
                return Err(exceeds(
                    &format!("ip_allow[{n}]"),
                    format!("{c} is outside the IP filter of the token you act with"),
                ));
            }
        }
    }
    if expires_at > *own_exp {
        return Err(exceeds(
            "expires_at",
            "may not be later than the expiry of the token you act with",
        ));
    }
    Ok(())
}

fn exceeds(field: &str, message: impl std::fmt::Display) -> Error {
    Error::denied(EXCEEDS_CREATOR, format!("{field}: {message}"))
}

/// Whether `inner` lies inside `outer`: same family, a prefix at least as long, and its
/// network address inside.
fn cidr_inside(inner: &Cidr, outer: &Cidr) -> bool {
    inner.address().is_ipv4() == outer.address().is_ipv4()
        && inner.prefix() >= outer.prefix()
        && outer.contains(inner.address())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_containment() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        for (inner, outer, want) in [
            ("10.1.0.0/16", "10.0.0.0/8", true),
            ("10.0.0.0/8", "10.0.0.0/8", true),
            ("10.0.0.0/7", "10.0.0.0/8", false),
            ("11.0.0.1", "10.0.0.0/8", false),
            ("10.0.0.1", "10.0.0.0/8", true),
            ("::ffff:10.0.0.1", "10.0.0.0/8", false),
            ("2001:db8::/48", "2001:db8::/32", true),
            ("2001:db9::/48", "2001:db8::/32", false),
        ] {
            assert_eq!(
                cidr_inside(&c(inner), &c(outer)),
                want,
                "{inner} in {outer}"
            );
        }
    }
}
