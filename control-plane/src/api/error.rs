//! The API's error: a service error (or a malformed request) as an HTTP answer,
//! `{"error", "message"[, "reason"]}`. This is the one place an error becomes a response,
//! and so the one place it is logged.

use crate::service;
use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Core's reason code of a refused credential, left on the response for the request log.
#[derive(Debug, Clone, Copy)]
pub struct RefusalReason(pub Option<&'static str>);

/// An error that reaches an API client. `message` is safe to show: internal detail is
/// logged, never returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code (`invalid_request`, `forbidden`, ...).
    pub code: &'static str,
    pub message: String,
    /// For a refused credential: core's reason code, sent as `reason`.
    pub reason: Option<&'static str>,
    /// For a refused credential: core's `WWW-Authenticate` challenge.
    pub challenge: Option<String>,
    /// What went wrong inside, for the log only (a 5xx).
    pub detail: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The body of every error answer. `ApiError` is rendered through this type, and
/// `/openapi.json` documents this type, so the two cannot drift.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code: `invalid_request`, `invalid_body`, `unauthorized`,
    /// `forbidden`, `not_found`, `conflict`, `invalid_grant`, `unsupported_grant_type`,
    /// `no_route`, `method_not_allowed`, `unavailable`, `internal`.
    pub error: String,
    /// What went wrong, for a person; names the offending field.
    pub message: String,
    /// For a refused credential: the verifier's reason code (`token_expired`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ApiError {
    /// A 429 with `Retry-After` (whole seconds, at least 1): `code` is the error, `reason`
    /// the stable reason when there is one.
    pub fn retry_after(
        code: &'static str,
        reason: Option<&'static str>,
        message: impl Into<String>,
        secs: u64,
    ) -> Response {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        e.reason = reason;
        let mut resp = e.into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        resp
    }

    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            reason: None,
            challenge: None,
            detail: None,
        }
    }

    /// A credential refused by `tessera_core` or by the control plane's own checks on top:
    /// core's status and challenge, our `error` codes, and the reason code.
    pub fn refused(deny: &tessera_core::Deny) -> Self {
        let status = StatusCode::from_u16(deny.status).unwrap_or(StatusCode::UNAUTHORIZED);
        let code = match deny.status {
            401 => "unauthorized",
            403 => "forbidden",
            400 => "invalid_request",
            _ => "unavailable",
        };
        let reason = deny.reason.as_str();
        let message = match deny.reason {
            tessera_core::Reason::TokenMissing => {
                "send Authorization: Bearer <tessera token> (token_missing)".to_string()
            }
            _ => format!("the token was refused: {reason}"),
        };
        ApiError {
            status,
            code,
            message,
            reason: Some(reason),
            challenge: deny.www_authenticate.clone(),
            detail: None,
        }
    }

    /// 400, naming the offending field.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("{field}: {message}"),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500: `detail` goes to the log (when the response is made), never to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        );
        e.detail = Some(detail.to_string());
        e
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<service::Error> for ApiError {
    fn from(e: service::Error) -> Self {
        use service::Error as E;
        match e {
            E::Invalid { field, message } => ApiError::field(&field, message),
            E::BadRequest(m) => ApiError::bad_request(m),
            E::Unauthenticated(m) => ApiError::unauthorized(m),
            E::Refused(deny) => ApiError::refused(&deny),
            E::Forbidden(m) => ApiError::forbidden(m),
            E::Denied { reason, message } => {
                let mut e = ApiError::forbidden(message);
                e.reason = Some(reason);
                e
            }
            E::Throttled { retry_after } => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    format!("too many failed sign-ins; try again in {retry_after} s"),
                );
                e.reason = Some("sign_in_throttled");
                e
            }
            E::NotFound(m) => ApiError::not_found(m),
            E::Conflict(m) => ApiError::conflict(m),
            E::InvalidGrant(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_grant", m),
            E::UnsupportedGrantType(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", m)
            }
            E::Store(StoreError::Unavailable(m)) => {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable (unreachable or busy); try again",
                );
                // A stable reason in the body; the driver's own words go to the log only.
                e.reason = Some("database_unavailable");
                e.detail = Some(m);
                e
            }
            E::Store(other) => ApiError::internal(other),
            E::Internal(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request span (method, route, caller) gives the context.
        if let Some(detail) = &self.detail {
            tracing::error!(status = self.status.as_u16(), code = self.code, detail = %detail, "request failed");
        } else if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), code = self.code, message = %self.message, "request failed");
        } else if let Some(reason) = self.reason {
            tracing::info!(status = self.status.as_u16(), reason, "credential refused");
        } else {
            tracing::debug!(status = self.status.as_u16(), code = self.code, message = %self.message, "request refused");
        }
        let refusal = RefusalReason(self.reason);
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
            reason: self.reason.map(str::to_string),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        let challenge = self
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok());
        match challenge {
            Some(c) => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            None if self.status == StatusCode::UNAUTHORIZED => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tessera\""),
                );
            }
            None => {}
        }
        resp.extensions_mut().insert(refusal);
        resp
    }
}
