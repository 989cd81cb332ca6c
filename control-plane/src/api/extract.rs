//! Extractors: the authenticated caller, the edge credential, the peer address, and JSON
//! bodies and query strings that refuse bad input naming the field.

use super::{ActingSlot, ApiError, ApiResult, AppState};
use crate::policy::Actor;
use crate::service::authn;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

/// The bare secret from `Authorization: Bearer <secret>` (or `Token <secret>`): the edge
/// credential of `POST /v1/usage`.
pub struct BearerSecret(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BearerSecret {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let missing = || ApiError::unauthorized("send Authorization: Bearer <edge credential>");
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(missing)?;
        let value = value.to_str().map_err(|_| missing())?;
        let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
        if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")) {
            return Err(missing());
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(missing());
        }
        Ok(BearerSecret(token.to_string()))
    }
}

/// The authenticated caller of an API call: the `Authorization` token checked by core's
/// verifier (the data plane's code) and then by the control plane's database checks
/// (`service::authn`), in a read of its own before the handler runs. A refusal keeps
/// core's status (401, 403 for `ip_not_allowed`, ...) and `WWW-Authenticate`, and names the
/// reason code. A request with no usable token is refused before anything is read.
pub struct Caller(pub Actor);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        // No Authorization but a session cookie: a person on the web page.
        if let Some(actor) = super::accounts::session_caller(parts, s).await {
            return Ok(Caller(super::accounts::admitted(parts, actor?)?));
        }
        let headers = header_pairs(&parts.headers);
        if let Some(deny) = authn::early_refusal(&headers) {
            return Err(ApiError::refused(&deny));
        }
        let method = parts.method.as_str().to_string();
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string());
        let st = s.clone();
        let actor = s
            .read(move |tx, ctx| {
                let presented = authn::Presentation {
                    method: &method,
                    path: &path,
                    headers: &headers,
                    peer: peer.as_deref(),
                };
                authn::authenticate(tx, ctx, st.verifiers(), &presented)
            })
            .await?;
        if let Some(slot) = parts.extensions.get::<ActingSlot>() {
            slot.set(&actor.user.id, &actor.token_id);
        }
        Ok(Caller(super::accounts::admitted(parts, actor)?))
    }
}

/// Headers as core takes them; a value that is not visible ASCII is passed as nothing
/// (a token never contains one).
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// The peer address as `ip:port`, when served over a socket.
pub struct PeerAddr(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.to_string()),
        ))
    }
}

const BODY_LIMIT: usize = 1 << 20;

pub(crate) fn body_error(path: String, e: impl std::fmt::Display) -> ApiError {
    let field = if path == "." || path.is_empty() {
        "body".to_string()
    } else {
        format!("body.{path}")
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        format!("{field}: {e}"),
    )
}

/// A JSON body; a bad one is a 400 naming the field.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub(crate) async fn read_body<S: Send + Sync>(req: Request, state: &S) -> ApiResult<Bytes> {
    let req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, BODY_LIMIT)));
    Bytes::from_request(req, state).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_body",
            format!("body: larger than {BODY_LIMIT} bytes or unreadable"),
        )
    })
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(de)
        .map_err(|e| body_error(e.path().to_string(), e.inner()))?;
    Ok(v)
}

/// Query parameters; unknown or malformed ones are a 400 naming the parameter.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| {
                let p = e.path().to_string();
                let field = if p == "." {
                    "query".to_string()
                } else {
                    format!("query.{p}")
                };
                ApiError::field(&field, e.inner())
            })
    }
}
