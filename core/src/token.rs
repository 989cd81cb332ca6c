//! The Tessera token format as types: the JOSE header and the claims of ARCHITECTURE.md's
//! "Token format", defined once for the control plane, which mints them, and the verifier,
//! which checks them.
//!
//! Minting serialises these types (with `jwt-compact` in the control plane and testkit).
//! The verifier reads a token's payload field by field rather than through the derived
//! `Deserialize` (see `verify`): each fault must map to its own stable reason code in a
//! fixed order, and claims headed for upstream headers must be free of control characters.
//! It reads exactly the members named here, and builds the shared sub-types
//! ([`StatusListRef`], [`Cidr`], scopes split as [`scopes`] splits them). A core test checks
//! that every payload the verifier accepts deserialises into [`Claims`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::ip::Cidr;
pub use crate::jwks::KeyAlg;

/// `typ` of a Tessera API token.
pub const TYP_API_TOKEN: &str = "tessera-api+jwt";
/// `typ` of an access token obtained by exchange (RFC 9068).
pub const TYP_ACCESS_TOKEN: &str = "at+jwt";

/// The text every API token the control plane issues starts with: `tsr_` and then the
/// compact JWS, unchanged. The prefix names no org, so one pattern finds every org's tokens;
/// it is shared with no other product's published token formats (GitHub `ghp_`/`github_pat_`,
/// GitLab `glpat-`, Stripe `sk_live_`, Slack `xox?-`, among others), and the `eyJ` that
/// follows it (a JSON object's `{"` in base64url) makes generic `tsr_` identifiers miss.
/// Removing it gives a standard JWS any JOSE library verifies with the org's JWKS.
/// Access tokens obtained by exchange are short-lived and stay bare JWTs.
pub const API_TOKEN_PREFIX: &str = "tsr_";

/// The regular expression a secret scanner registers for Tessera API tokens (documented in
/// the README and `docs/token-format.md`): the prefix, a header and a payload that are JSON
/// objects in base64url, and a signature of at least 64 bytes (Ed25519 and P-256; RSA is
/// longer). No checksum: the signature is one that anyone holding the org's public JWKS
/// checks offline, with no false positive, and the partner endpoint does exactly that.
pub const API_TOKEN_PATTERN: &str = r"tsr_eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{86,}";

/// The compact JWS inside a presented token: the text after [`API_TOKEN_PREFIX`], or the
/// text itself for a token issued before the prefix (those keep working).
pub fn strip_api_prefix(text: &str) -> &str {
    text.strip_prefix(API_TOKEN_PREFIX).unwrap_or(text)
}

/// Normalises a `typ` value as RFC 7515 §4.1.9 suggests: case-insensitive, and an
/// `application/` prefix may be omitted.
pub fn normalise_typ(t: &str) -> String {
    let lower = t.trim().to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

/// The two kinds of Tessera token, by their header `typ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TokenType {
    /// `tessera-api+jwt`: a long-lived API token.
    #[serde(rename = "tessera-api+jwt")]
    Api,
    /// `at+jwt`: a short-lived access token exchanged from an API token.
    #[serde(rename = "at+jwt")]
    Access,
}

impl TokenType {
    /// The `typ` value as minted.
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenType::Api => TYP_API_TOKEN,
            TokenType::Access => TYP_ACCESS_TOKEN,
        }
    }

    /// The type a (normalised or not) `typ` names, if it is one of ours.
    pub fn from_typ(typ: &str) -> Option<TokenType> {
        match normalise_typ(typ).as_str() {
            TYP_API_TOKEN => Some(TokenType::Api),
            TYP_ACCESS_TOKEN => Some(TokenType::Access),
            _ => None,
        }
    }
}

impl From<TokenType> for String {
    fn from(t: TokenType) -> String {
        t.as_str().to_string()
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protected header a Tessera token is minted with. No `crit`, `jku`, `jwk` or `x5u`:
/// the verifier refuses `crit` and takes keys only from its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The signing key's algorithm (the verifier requires the key's pinned one).
    pub alg: KeyAlg,
    /// The signing key's id in the org's JWKS.
    pub kid: String,
    /// The token type.
    pub typ: TokenType,
}

/// `aud`: one audience or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single string.
    One(String),
    /// An array of strings.
    Many(Vec<String>),
}

impl Audience {
    /// The audiences, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many): (Option<&String>, &[String]) = match self {
            Audience::One(a) => (Some(a), &[]),
            Audience::Many(list) => (None, list),
        };
        one.into_iter().chain(many).map(String::as_str)
    }

    /// Whether `aud` is one of them.
    pub fn contains(&self, aud: &str) -> bool {
        self.iter().any(|a| a == aud)
    }
}

impl From<&str> for Audience {
    fn from(a: &str) -> Audience {
        Audience::One(a.to_string())
    }
}

impl From<String> for Audience {
    fn from(a: String) -> Audience {
        Audience::One(a)
    }
}

/// Where a token's status lives: `status.status_list` of the Token Status List draft.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StatusListRef {
    /// Index in the list.
    pub idx: u64,
    /// The list's uri.
    pub uri: String,
}

/// The `status` claim: `{"status_list": {"idx": .., "uri": ..}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The token's entry.
    pub status_list: StatusListRef,
}

/// The claims of a Tessera token (ARCHITECTURE.md, "Token format"). Times are NumericDate
/// in whole seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuing org's issuer URL (`<control-plane-base>/v1/orgs/<org-id>`).
    pub iss: String,
    /// The user the token belongs to (the user id).
    pub sub: String,
    /// The user's username when the token was issued (OpenID Connect's registered claim);
    /// only for people to read (the identity headers), never an authority: `sub` is.
    /// Tokens minted before it was added have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// The organization (tenant) id.
    pub org: String,
    /// The token id.
    pub jti: String,
    /// Must contain one of the verifier's audiences.
    pub aud: Audience,
    /// Issued at. The control plane always sets it; the verifier takes "now" without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Expiry (required).
    pub exp: i64,
    /// Space-separated scopes; see [`scopes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The IP filter; empty (left out) means any address.
    #[serde(default, with = "cidr_list", skip_serializing_if = "Vec::is_empty")]
    pub ip_allow: Vec<Cidr>,
    /// The status-list entry (required unless the verifier is configured otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Access tokens: the `jti` of the API token it was exchanged from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Access tokens (RFC 9068): equals `parent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Claims {
    /// The scopes of `scope`, in order.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        scopes(self.scope.as_deref().unwrap_or(""))
    }

    /// The status-list entry, if any.
    pub fn status_list(&self) -> Option<&StatusListRef> {
        self.status.as_ref().map(|s| &s.status_list)
    }
}

/// Splits a `scope` claim into its scopes (single spaces separate them; empty pieces are
/// skipped).
pub fn scopes(scope: &str) -> impl Iterator<Item = &str> {
    scope.split(' ').filter(|s| !s.is_empty())
}

/// Whether `s` is an RFC 6749 §3.3 scope-token: one or more of `%x21 / %x23-5B / %x5D-7E`
/// (printable ASCII without space, `"` and `\`).
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// `ip_allow` as strings in [`Cidr`]'s normalised form; read with the verifier's parser.
mod cidr_list {
    use super::*;

    pub fn serialize<S: Serializer>(list: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
        let raw = Option::<Vec<String>>::deserialize(d)?.unwrap_or_default();
        raw.iter()
            .map(|s| {
                Cidr::parse(s).ok_or_else(|| {
                    serde::de::Error::custom(format!("{s:?} is not an IP address or CIDR"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_serialise_with_the_documented_names() {
        let c = Claims {
            iss: "https://cp/v1/orgs/acme".into(),
            sub: "usr_1".into(),
            preferred_username: Some("alice".into()),
            org: "acme".into(),
            jti: "tok_1".into(),
            aud: "tessera".into(),
            iat: Some(10),
            nbf: None,
            exp: 20,
            scope: Some("read write".into()),
            ip_allow: vec![
                Cidr::parse("10.0.0.1/8").unwrap(),
                Cidr::parse("::1").unwrap(),
            ],
            status: Some(Status {
                status_list: StatusListRef {
                    idx: 3,
                    uri: "https://cp/v1/orgs/acme/status-list".into(),
                },
            }),
            parent: None,
            client_id: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({
                "iss": "https://cp/v1/orgs/acme", "sub": "usr_1", "preferred_username": "alice",
                "org": "acme", "jti": "tok_1",
                "aud": "tessera", "iat": 10, "exp": 20, "scope": "read write",
                "ip_allow": ["10.0.0.0/8", "::1"],
                "status": {"status_list": {"idx": 3, "uri": "https://cp/v1/orgs/acme/status-list"}},
            })
        );
        let back: Claims = serde_json::from_value(v).unwrap();
        assert_eq!(back.ip_allow[0].to_string(), "10.0.0.0/8");
        assert_eq!(back.scopes().collect::<Vec<_>>(), ["read", "write"]);
        let many: Claims = serde_json::from_value(json!({
            "iss": "i", "sub": "s", "org": "o", "jti": "j", "aud": ["a", "b"], "exp": 1,
        }))
        .unwrap();
        assert!(many.aud.contains("b") && !many.aud.contains("c"));
        assert!(many.ip_allow.is_empty() && many.status.is_none());
    }

    #[test]
    fn header_and_types() {
        let h = Header {
            alg: KeyAlg::EdDSA,
            kid: "k1".into(),
            typ: TokenType::Access,
        };
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"})
        );
        assert_eq!(
            TokenType::from_typ("Application/Tessera-API+JWT"),
            Some(TokenType::Api)
        );
        assert_eq!(TokenType::from_typ("JWT"), None);
        assert_eq!(TokenType::Api.to_string(), TYP_API_TOKEN);
    }

    #[test]
    fn scope_tokens() {
        for ok in ["read", "a:b/c", "!", "~"] {
            assert!(is_scope_token(ok), "{ok}");
        }
        for bad in ["", "a b", "a\"b", "a\\b", "é", "a\tb"] {
            assert!(!is_scope_token(bad), "{bad}");
        }
        assert_eq!(scopes(" a  b ").collect::<Vec<_>>(), ["a", "b"]);
    }
}
