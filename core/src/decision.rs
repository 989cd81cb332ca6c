//! The outcome of checking one request: allow with an identity, or deny with a stable reason.

use std::fmt;

/// Why a request was refused. The string forms (`as_str`) are stable API: they appear in
/// deny bodies, logs and metric names, and are documented in ARCHITECTURE.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No token in any configured source.
    TokenMissing,
    /// Two different tokens in one request.
    TokenAmbiguous,
    /// Not a compact JWS, bad base64, bad JSON, or an unsupported content type.
    TokenMalformed,
    /// Longer than the configured `max_token_bytes`.
    TokenTooLarge,
    /// The header has a `crit` parameter; this verifier understands no extensions.
    CritUnsupported,
    /// `alg` is not one we accept, or differs from the algorithm pinned by the key.
    AlgNotAllowed,
    /// No configured key has the token's `kid` (or the token has no `kid`).
    KeyUnknown,
    /// The signature does not verify with the selected key.
    SignatureInvalid,
    /// A required claim is absent or has the wrong type.
    ClaimMissing,
    /// `exp` is in the past (beyond the skew).
    Expired,
    /// `nbf` is in the future (beyond the skew).
    NotYetValid,
    /// `iat` is in the future (beyond the skew).
    IssuedInFuture,
    /// `exp - iat` exceeds the configured maximum lifetime.
    LifetimeTooLong,
    /// `iss` is not in the allowed set.
    IssuerMismatch,
    /// `aud` contains none of the configured audiences.
    AudienceMismatch,
    /// The header `typ` is not in the allowed set.
    TypeMismatch,
    /// The status list marks the token revoked.
    Revoked,
    /// The status list marks the token suspended (disabled).
    Suspended,
    /// The status list marks the token rotated: its successor took over and the grace
    /// period (or the hard deadline) of the rotation has passed.
    Rotated,
    /// The client address is outside the token's IP filter, or unknown.
    IpNotAllowed,
    /// The route requires a scope the token lacks.
    InsufficientScope,
    /// The token's status cannot be known and the fail policy is closed.
    StatusUnavailable,
    /// Keys come from the control plane and none have arrived yet.
    KeysUnavailable,
    /// The token's rate limit or quota is spent at this edge for now (`ratelimit`).
    RateLimited,
}

impl Reason {
    /// Every reason, in documentation order (used for metrics and tests).
    pub const ALL: [Reason; 24] = [
        Reason::TokenMissing,
        Reason::TokenAmbiguous,
        Reason::TokenMalformed,
        Reason::TokenTooLarge,
        Reason::CritUnsupported,
        Reason::AlgNotAllowed,
        Reason::KeyUnknown,
        Reason::SignatureInvalid,
        Reason::ClaimMissing,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::IssuedInFuture,
        Reason::LifetimeTooLong,
        Reason::IssuerMismatch,
        Reason::AudienceMismatch,
        Reason::TypeMismatch,
        Reason::Revoked,
        Reason::Suspended,
        Reason::Rotated,
        Reason::IpNotAllowed,
        Reason::InsufficientScope,
        Reason::StatusUnavailable,
        Reason::KeysUnavailable,
        Reason::RateLimited,
    ];

    /// The stable machine-readable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TokenMissing => "token_missing",
            Reason::TokenAmbiguous => "token_ambiguous",
            Reason::TokenMalformed => "token_malformed",
            Reason::TokenTooLarge => "token_too_large",
            Reason::CritUnsupported => "crit_unsupported",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::KeyUnknown => "key_unknown",
            Reason::SignatureInvalid => "signature_invalid",
            Reason::ClaimMissing => "claim_missing",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::IssuedInFuture => "issued_in_future",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::IssuerMismatch => "issuer_mismatch",
            Reason::AudienceMismatch => "audience_mismatch",
            Reason::TypeMismatch => "type_mismatch",
            Reason::Revoked => "revoked",
            Reason::Suspended => "suspended",
            Reason::Rotated => "rotated",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::StatusUnavailable => "status_unavailable",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::RateLimited => "rate_limited",
        }
    }

    /// The HTTP status a host answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Reason::TokenAmbiguous => 400,
            Reason::IpNotAllowed | Reason::InsufficientScope => 403,
            Reason::StatusUnavailable | Reason::KeysUnavailable => 503,
            Reason::RateLimited => 429,
            _ => 401,
        }
    }

    /// The RFC 6750 error code, if the response carries one.
    pub fn error_code(self) -> Option<&'static str> {
        match self {
            Reason::TokenMissing => None,
            Reason::TokenAmbiguous => Some("invalid_request"),
            Reason::InsufficientScope => Some("insufficient_scope"),
            Reason::IpNotAllowed => Some("access_denied"),
            Reason::StatusUnavailable | Reason::KeysUnavailable | Reason::RateLimited => {
                Some("temporarily_unavailable")
            }
            _ => Some("invalid_token"),
        }
    }

    /// Whether the `WWW-Authenticate` header carries the error code. RFC 6750 defines
    /// `invalid_request`, `invalid_token` and `insufficient_scope` for it; the body-only
    /// codes are not authentication challenges.
    fn challenge_has_error(self) -> bool {
        matches!(
            self.error_code(),
            Some("invalid_request" | "invalid_token" | "insufficient_scope")
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who the token belongs to, once it has been accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `sub`: the user.
    pub user: String,
    /// `preferred_username`: the user's username when the token was issued, if the token
    /// carries it (tokens minted before it was added do not).
    pub username: Option<String>,
    /// `org`: the organization.
    pub org: String,
    /// `jti`: the token id.
    pub token_id: String,
    /// Scopes from the `scope` claim.
    pub scopes: Vec<String>,
    /// The header `typ` (`tessera-api+jwt` or `at+jwt`).
    pub token_type: String,
    /// For exchanged access tokens, the API token they came from.
    pub parent: Option<String>,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// Allowed only because the status was unknown and the fail policy is open.
    pub status_fail_open: bool,
}

/// A refusal: what the host answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deny {
    /// HTTP status code.
    pub status: u16,
    /// The stable reason.
    pub reason: Reason,
    /// The `WWW-Authenticate` value, when the response carries one.
    pub www_authenticate: Option<String>,
}

impl Deny {
    /// Builds the refusal for `reason`. `realm` goes into the challenge; `scopes` are the
    /// scopes the route required (used for `insufficient_scope` only).
    pub fn new(reason: Reason, realm: &str, required_scopes: &[String]) -> Deny {
        let www_authenticate = match reason {
            // A 503 says nothing about the credentials: the server cannot decide yet.
            // Every other refusal is a request whose token does not enable access, which
            // RFC 6750 §3 answers with a challenge (`ip_not_allowed` without an error
            // code: none of the three fits).
            // A 429 says nothing about the token either: its budget is spent for now.
            Reason::StatusUnavailable | Reason::KeysUnavailable | Reason::RateLimited => None,
            _ => {
                let mut v = format!("Bearer realm=\"{}\"", quote_safe(realm));
                if reason.challenge_has_error() {
                    if let Some(code) = reason.error_code() {
                        v.push_str(&format!(", error=\"{code}\""));
                    }
                }
                if reason == Reason::InsufficientScope && !required_scopes.is_empty() {
                    v.push_str(&format!(
                        ", scope=\"{}\"",
                        quote_safe(&required_scopes.join(" "))
                    ));
                }
                Some(v)
            }
        };
        Deny {
            status: reason.http_status(),
            reason,
            www_authenticate,
        }
    }

    /// The JSON body: the RFC 6750 code and our reason code, nothing internal.
    pub fn body(&self) -> String {
        let error = self.reason.error_code().unwrap_or("invalid_request");
        // Both values are fixed ASCII identifiers; no escaping is needed.
        format!(
            "{{\"error\":\"{}\",\"reason\":\"{}\"}}",
            error,
            self.reason.as_str()
        )
    }
}

/// Strips characters that could break out of a quoted-string in a header.
fn quote_safe(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

/// The verdict for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward the request, with this identity.
    Allow(Identity),
    /// Answer locally.
    Deny(Deny),
}

impl Decision {
    /// The deny reason, if any.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Decision::Allow(_) => None,
            Decision::Deny(d) => Some(d.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_challenge_has_no_error() {
        let d = Deny::new(Reason::TokenMissing, "tessera", &[]);
        assert_eq!(d.status, 401);
        assert_eq!(
            d.www_authenticate.as_deref(),
            Some("Bearer realm=\"tessera\"")
        );
    }

    #[test]
    fn challenges_and_bodies() {
        let cases: &[(Reason, u16, Option<&str>, &str)] = &[
            (
                Reason::Expired,
                401,
                Some("Bearer realm=\"r\", error=\"invalid_token\""),
                "{\"error\":\"invalid_token\",\"reason\":\"expired\"}",
            ),
            (
                Reason::TokenAmbiguous,
                400,
                Some("Bearer realm=\"r\", error=\"invalid_request\""),
                "{\"error\":\"invalid_request\",\"reason\":\"token_ambiguous\"}",
            ),
            (
                Reason::InsufficientScope,
                403,
                Some("Bearer realm=\"r\", error=\"insufficient_scope\", scope=\"a b\""),
                "{\"error\":\"insufficient_scope\",\"reason\":\"insufficient_scope\"}",
            ),
            (
                Reason::IpNotAllowed,
                403,
                Some("Bearer realm=\"r\""),
                "{\"error\":\"access_denied\",\"reason\":\"ip_not_allowed\"}",
            ),
            (
                Reason::StatusUnavailable,
                503,
                None,
                "{\"error\":\"temporarily_unavailable\",\"reason\":\"status_unavailable\"}",
            ),
        ];
        for (reason, status, challenge, body) in cases {
            let d = Deny::new(*reason, "r", &["a".into(), "b".into()]);
            assert_eq!(d.status, *status, "{reason}");
            assert_eq!(d.www_authenticate.as_deref(), *challenge, "{reason}");
            assert_eq!(d.body(), *body, "{reason}");
        }
    }

    #[test]
    fn reason_codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "duplicate {r}");
        }
    }

    #[test]
    fn realm_cannot_break_the_header() {
        let d = Deny::new(Reason::TokenMissing, "a\"b\\c\r\n", &[]);
        assert_eq!(d.www_authenticate.as_deref(), Some("Bearer realm=\"abc\""));
    }
}
