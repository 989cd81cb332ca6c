//! `POST /v1/introspect`: RFC 7662 token introspection for resource servers that do not run
//! the filter (the decision itself is `service::introspect`). The caller authenticates with
//! an edge credential of the org (`Authorization: Bearer <edge credential>`), like the
//! edges' usage reports and status-list polls: a resource server asking about tokens is an
//! edge that checks them elsewhere, so no second kind of credential is needed.
//!
//! Unauthenticated calls cost a header look-up: no credential is a 401 before the body is
//! read; a refused credential is a 401 after one point read. Both count against the
//! per-address rate of unauthenticated requests (429 past it), as a refused credential of
//! `POST /v1/usage` does; an authenticated resource server is not limited per address.
//! Answers carry `Cache-Control: no-store` (the router's default), as RFC 7662 §4 wants.

use super::extract::{bearer_value, body_error, read_body, ConnectInfoOpt};
use super::{route, ApiError, AppState, Auth, Route};
use crate::service::introspect::{self, IntrospectForm, Introspection};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Json;
use serde_json::json;

macro_rules! h {
    ($m:ident, $f:expr) => {
        on(MethodFilter::$m, $f)
    };
}

/// The form's media type (RFC 7662 §2.1).
const FORM: &str = "application/x-www-form-urlencoded";

#[rustfmt::skip]
pub(super) fn routes() -> Vec<Route> {
    vec![
        route(Method::POST, "/v1/introspect", "RFC 7662 introspection (edge credential): whether a token is active — the decision an edge of the credential's org gives, from the same verifier, status list and withdrawn scopes — with its scopes, subject, expiry and client; `reason` when it is not. `client_ip` (optional, a Tessera extension) is the address the token's IP filter is applied to", Auth::Edge, h!(POST, handler))
            .form_only::<IntrospectForm>(json!({"token": "tsr_eyJ…", "token_type_hint": "access_token", "client_ip": "203.0.113.7"}))
            .ok::<Introspection>(200)
            .error(&[429])
            .cli("introspect"),
    ]
}

/// 401 for a refused edge credential: RFC 6750's `invalid_token` challenge.
fn refused_credential(e: ApiError) -> ApiError {
    ApiError {
        challenge: Some(format!(
            r#"Bearer realm="{}", error="invalid_token""#,
            crate::service::authn::REALM
        )),
        ..e
    }
}

async fn handler(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    req: Request,
) -> Result<Json<Introspection>, Response> {
    // Past the address's rate, the 429; else the refusal itself.
    let limited = |e: ApiError| match s.address_limit().and_then(|l| l.check(peer)) {
        Some(too_many) => too_many,
        None => e.into_response(),
    };
    let Some(secret) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(bearer_value)
    else {
        return Err(limited(ApiError::unauthorized(
            "send Authorization: Bearer <edge credential> (an edge credential of the token's organization)",
        )));
    };
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(FORM));
    if !form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_body",
            format!("body: send it as a form, with Content-Type: {FORM} (RFC 7662)"),
        )
        .into_response());
    }
    let bytes = read_body(req, &())
        .await
        .map_err(IntoResponse::into_response)?;
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(&bytes));
    let f: IntrospectForm = serde_path_to_error::deserialize(de)
        .map_err(|e| body_error(e.path().to_string(), e.inner()).into_response())?;
    // The form's own faults answer before the credential is looked up.
    introspect::check_form(&f).map_err(|e| ApiError::from(e).into_response())?;
    let st = s.clone();
    let answer = s
        .read(move |tx, ctx| introspect::introspect(tx, ctx, st.verifiers(), &secret, &f))
        .await;
    match answer {
        Ok(v) => Ok(Json(v)),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(limited(refused_credential(e))),
        Err(e) => Err(e.into_response()),
    }
}
