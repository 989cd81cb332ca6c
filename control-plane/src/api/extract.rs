//! Extractors: the authenticated caller, the edge credential, the peer address, and JSON
//! bodies and query strings that refuse bad input naming the field.

use super::{ActingSlot, ApiError, ApiResult, AppState, PendingUse};
use crate::policy::Actor;
use crate::service::{authn, logs};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

/// The bare secret from `Authorization: Bearer <secret>` (or `Token <secret>`): the edge
/// credential of `POST /v1/usage`.
pub struct BearerSecret(pub String);

/// The secret of an `Authorization: Bearer <secret>` (or `Token <secret>`) value.
pub(crate) fn bearer_value(v: &HeaderValue) -> Option<String> {
    let (scheme, secret) = v.to_str().ok()?.trim().split_once(' ')?;
    let secret = secret.trim();
    ((scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        && !secret.is_empty())
    .then(|| secret.to_string())
}

impl<S: Send + Sync> FromRequestParts<S> for BearerSecret {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(bearer_value)
            .map(BearerSecret)
            .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <edge credential>"))
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
        let (actor, used) = s
            .read(move |tx, ctx| {
                let presented = authn::Presentation {
                    method: &method,
                    path: &path,
                    headers: &headers,
                    peer: peer.as_deref(),
                };
                let accept = [authn::Kind::Api, authn::Kind::Access];
                let verdict =
                    authn::verify_presented(tx, ctx, st.verifiers(), &presented, &accept)?;
                let used = logs::api_use(&verdict, ctx.now, peer.as_deref(), &method, &path);
                let mut actor = authn::actor_of(verdict);
                if let Ok(a) = &mut actor {
                    authn::narrow_to_grants(tx, a)?;
                }
                Ok((actor, used))
            })
            .await?;
        // Every use, and every refusal of a known token, goes to the authentication log
        // (written in batches, off the request's path), with the decision the request
        // ends with (`api_use_log`: a later 401/403 makes it a deny).
        if let Some(e) = used {
            match parts.extensions.get::<PendingUse>() {
                Some(pending) => pending.put(e),
                None => s.note_api_use(e),
            }
        }
        let actor = actor.map_err(|deny| ApiError::refused(&deny))?;
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

/// The peer's socket address, when served over a socket.
pub struct ConnectInfoOpt(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ConnectInfoOpt {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(ConnectInfoOpt(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

const BODY_LIMIT: usize = 1 << 20;

/// The field a deserializer's path names, as every error names it: the bare member path
/// (`ip_allow[0]`, `per_page`), the same as the service's own checks; `whole` (`body`,
/// `query`) when the path names no member. serde's `?` (a position it could not name) is
/// left out.
pub(crate) fn field_name(path: &str, whole: &str) -> String {
    if path.starts_with('[') {
        // An element of a body that is an array where an object belongs.
        return format!("{whole}{path}");
    }
    let named: Vec<&str> = path
        .split('.')
        .filter(|seg| !seg.is_empty() && *seg != "?")
        .collect();
    if named.is_empty() {
        whole.to_string()
    } else {
        named.join(".")
    }
}

pub(crate) fn body_error(path: String, e: impl std::fmt::Display) -> ApiError {
    let (field, message) = in_words(&path, "body", &e.to_string());
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        format!("{field}: {message}"),
    )
}

/// A deserializer's complaint about the value at `path`, said for people: the field it
/// concerns (a missing field is named itself, not its parent) and what is wrong and what
/// is allowed, without the parser's words (Rust type names, backticks, line and column).
pub(crate) fn in_words(path: &str, whole: &str, raw: &str) -> (String, String) {
    // serde_json ends with " at line L column C": the position says nothing to a person
    // who sent one line of JSON.
    let msg = match raw.rfind(" at line ") {
        Some(i) if raw[i..].contains(" column ") => &raw[..i],
        _ => raw,
    };
    let field = field_name(path, whole);
    let quoted = |m: &str| -> Vec<String> {
        m.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let list = |names: &[String]| names.join(", ");
    if let Some(rest) = msg.strip_prefix("missing field ") {
        let name = quoted(rest).into_iter().next().unwrap_or_default();
        let field = if field == whole {
            name
        } else {
            format!("{field}.{name}")
        };
        return (field, "required".into());
    }
    if msg.starts_with("unknown field ") {
        let names = quoted(msg);
        let (name, allowed) = names
            .split_first()
            .map_or((String::new(), &[][..]), |(a, b)| (a.clone(), b));
        let field = if field == whole {
            name
        } else if field.ends_with(name.as_str()) {
            field
        } else {
            format!("{field}.{name}")
        };
        return if allowed.is_empty() {
            (field, "not a field of this request".into())
        } else {
            (
                field,
                format!(
                    "not a field of this request; the fields are {}",
                    list(allowed)
                ),
            )
        };
    }
    if msg.starts_with("unknown variant ") {
        let names = quoted(msg);
        if let Some((got, allowed)) = names.split_first() {
            return (field, format!("{got:?} is not one of: {}", list(allowed)));
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        let expected = rest.split(", expected ").nth(1).unwrap_or("");
        return (field, format!("must be {}", kind_in_words(expected)));
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        let expected = rest.split(", expected ").nth(1).unwrap_or("");
        return (field, format!("must be {}", kind_in_words(expected)));
    }
    if msg.contains("invalid digit") || msg.contains("cannot parse integer") {
        return (field, "must be a whole number".into());
    }
    if msg.contains("number too large") || msg.contains("too large to fit") {
        return (field, "is too large".into());
    }
    if msg.starts_with("provided string was not `true` or `false`") {
        return (field, "must be true or false".into());
    }
    (field, msg.replace('`', ""))
}

/// What a deserializer expected, in words.
fn kind_in_words(expected: &str) -> String {
    let e = expected.trim();
    let one = |w: &str| w.to_string();
    match e {
        "a string" | "string" => one("text"),
        "a boolean" | "boolean" | "bool" => one("true or false"),
        "u8" | "u16" | "u32" | "u64" | "usize" => one("a whole number of 0 or more"),
        "i8" | "i16" | "i32" | "i64" | "isize" | "an integer" => one("a whole number"),
        "f32" | "f64" | "a number" => one("a number"),
        "a sequence" | "sequence" => one("a list"),
        "a map" | "map" => one("an object"),
        _ if e.starts_with("struct ") => one("an object"),
        _ if e.starts_with("variant identifier") || e.starts_with("enum ") => {
            one("one of the listed values")
        }
        _ if e.starts_with("a ") || e.starts_with("an ") => e.replace('`', ""),
        _ => e.replace('`', ""),
    }
}

/// A JSON body; a bad one is a 400 naming the field. A body must be sent as
/// `application/json` (or a `+json` type): a browser form can post `text/plain` across
/// sites without asking, so a JSON route that read any type could be driven by another
/// site (a sign-in CSRF). An empty body needs no type.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(req.headers());
        let bytes = read_body(req, state).await?;
        if !json && !bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(not_json());
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Whether the request says its body is JSON: `application/json` or `application/*+json`,
/// with or without parameters.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| {
            t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
        })
}

/// 415: a body sent as anything but JSON.
pub(crate) fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_body",
        "body: send it as JSON, with Content-Type: application/json",
    )
}

pub(crate) async fn read_body<S: Send + Sync>(req: Request, state: &S) -> ApiResult<Bytes> {
    let deadline = req
        .extensions()
        .get::<super::server::BodyDeadline>()
        .map(|d| d.0);
    let req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, BODY_LIMIT)));
    let too_slow = || {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "body: not received in time",
        )
    };
    let read = Bytes::from_request(req, state);
    let read = match deadline {
        Some(at) => match tokio::time::timeout_at(at, read).await {
            Ok(r) => r,
            Err(_) => return Err(too_slow()),
        },
        None => read.await,
    };
    read.map_err(|e| {
        if timed_out(&e) {
            return too_slow();
        }
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_body",
            format!("body: larger than {BODY_LIMIT} bytes or unreadable"),
        )
    })
}

/// Whether reading the body failed because it stalled (the server's body timeout).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(de).map_err(|e| {
        // A body cut short is the body's fault, wherever the parser stopped.
        use serde_json::error::Category;
        let syntax = match e.inner().classify() {
            Category::Eof => Some("the JSON ends too early"),
            Category::Syntax => Some("not valid JSON"),
            Category::Io | Category::Data => None,
        };
        let path = e.path().to_string();
        let named = field_name(&path, "body");
        match syntax {
            // The parser stopped inside a field (a list where one of a few names belongs).
            Some(_) if named != "body" && e.inner().classify() == Category::Syntax => {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("{named}: not a value this field takes"),
                )
            }
            Some(why) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("body: {why}"),
            ),
            None => body_error(path, e.inner()),
        }
    })?;
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
                let (field, message) =
                    in_words(&e.path().to_string(), "query", &e.inner().to_string());
                ApiError::field(&field, message)
            })
    }
}
