//! The service layer's one error type: what went wrong in terms of the operation, never of
//! HTTP. Only `api` turns it into a status code and a body (`api::error`).

use crate::store::StoreError;
use tessera_core::{Deny, Reason};

/// Why an operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An input value is not acceptable; `field` names it (`ip_allow[2]`, `per_page`).
    Invalid { field: String, message: String },
    /// The request as a whole is not acceptable (no single field to blame).
    BadRequest(String),
    /// A credential that is not a Tessera token (an edge secret) is missing or unknown.
    Unauthenticated(String),
    /// A presented Tessera token was refused, by core or by the control plane's own
    /// checks. Carries core's refusal (status, reason, challenge).
    Refused(Box<Deny>),
    /// The caller is known but may not do this.
    Forbidden(String),
    /// The record does not exist (or is not visible to the caller).
    NotFound(String),
    /// The change conflicts with the current state (a duplicate name, a final state).
    Conflict(String),
    /// Token exchange: the presented grant is not usable (RFC 6749 §5.2 `invalid_grant`).
    InvalidGrant(String),
    /// Token exchange: a grant type we do not support.
    UnsupportedGrantType(String),
    /// The store failed.
    Store(StoreError),
    /// A bug or an impossible state; the detail is logged, never shown.
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An invalid input, naming the field.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        Error::Invalid {
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest(message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict(message.into())
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Error::Internal(detail.to_string())
    }

    /// A refused credential, with core's refusal for `reason`.
    pub fn refused(reason: Reason) -> Self {
        Error::Refused(Box::new(Deny::new(
            reason,
            crate::service::authn::REALM,
            &[],
        )))
    }

    /// The reason code of a refused credential.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::Refused(d) => Some(d.reason),
            _ => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Error::Conflict(m),
            StoreError::BadCursor => Error::field("after", "not a cursor of this listing"),
            other => Error::Store(other),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Invalid { field, message } => write!(f, "{field}: {message}"),
            Error::BadRequest(m)
            | Error::Unauthenticated(m)
            | Error::Forbidden(m)
            | Error::NotFound(m)
            | Error::Conflict(m)
            | Error::InvalidGrant(m)
            | Error::UnsupportedGrantType(m) => f.write_str(m),
            Error::Refused(d) => write!(f, "the token was refused: {}", d.reason.as_str()),
            Error::Store(e) => write!(f, "{e}"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for Error {}
