//! The HTTP API: state, extractors, the route table (also the source of `/openapi.json`)
//! and the handlers, which authenticate and run one service operation per transaction.

use crate::auth::Verifiers;
use crate::crypto::MasterKey;
use crate::error::{ApiError, ApiResult};
use crate::policy::Actor;
use crate::service::{self, Ctx, Kind};
use crate::store::{Store, Tx};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Everything the service needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Box<dyn Store>,
    master: MasterKey,
    base_url: String,
    access_ttl: i64,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    /// Bumped after every committed write; wakes status-list long polls.
    changes: watch::Sender<u64>,
    /// The core verifier API calls are authenticated with.
    verifiers: Arc<Verifiers>,
}

pub struct Config {
    /// Scheme, host and port the API is reached at, without a trailing slash. Token
    /// issuers and status-list URIs are built from it.
    pub base_url: String,
    pub master: MasterKey,
    /// Lifetime of exchanged access tokens, seconds.
    pub access_ttl: i64,
}

impl AppState {
    pub fn new(store: Box<dyn Store>, config: Config) -> Self {
        Self::with_clock(store, config, Box::new(crate::timefmt::now))
    }

    /// With an injected clock (tests move time forward).
    pub fn with_clock(
        store: Box<dyn Store>,
        config: Config,
        clock: Box<dyn Fn() -> i64 + Send + Sync>,
    ) -> Self {
        let (changes, _) = watch::channel(0);
        AppState {
            inner: Arc::new(Inner {
                store,
                master: config.master,
                base_url: config.base_url.trim_end_matches('/').to_string(),
                access_ttl: config.access_ttl,
                clock,
                changes,
                verifiers: Arc::new(Verifiers::new()),
            }),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Runs `f` in one transaction on a blocking thread.
    pub async fn run<T: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&mut dyn Tx, &Ctx) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let st = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let i = &st.inner;
            let ctx = Ctx {
                base_url: &i.base_url,
                master: &i.master,
                now: (i.clock)(),
                access_ttl: i.access_ttl,
            };
            if write {
                i.store.write(|tx| f(tx, &ctx))
            } else {
                i.store.read(|tx| f(tx, &ctx))
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("worker: {e}")))?;
        if write && result.is_ok() {
            self.inner.changes.send_modify(|v| *v += 1);
        }
        result
    }

    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx, &Ctx) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        self.run(true, f).await
    }

    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx, &Ctx) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        self.run(false, f).await
    }
}

// ---------------------------------------------------------------------------------------
// Extractors

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

/// What an API call presents to authenticate: its method, path, headers and peer address,
/// checked in the handler's transaction by [`authenticate`] (core's verifier, then the
/// database). Extraction refuses only a request with no usable token (core's
/// `token_missing` or `token_ambiguous`), before the body is read.
pub struct Credential {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    peer: Option<String>,
    verifiers: Arc<Verifiers>,
}

impl FromRequestParts<AppState> for Credential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let headers = header_pairs(&parts.headers);
        if let Some(deny) = crate::auth::early_refusal(&headers) {
            return Err(ApiError::refused(&deny));
        }
        Ok(Credential {
            method: parts.method.as_str().to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
            headers,
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.to_string()),
            verifiers: Arc::clone(&s.inner.verifiers),
        })
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

fn body_error(path: String, e: impl std::fmt::Display) -> ApiError {
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

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> ApiResult<Bytes> {
    let req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, BODY_LIMIT)));
    Bytes::from_request(req, state).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_body",
            format!("body: larger than {BODY_LIMIT} bytes or unreadable"),
        )
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
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

/// Authenticates an API call: `tessera_core::Verifier` (the data plane's code), then the
/// control plane's database checks (`service::verify_presented`). A refusal keeps core's
/// status (401, 403 for `ip_not_allowed`, ...) and `WWW-Authenticate`, and names the
/// reason code in `reason` and in the message.
fn authenticate(tx: &mut dyn Tx, ctx: &Ctx, cred: &Credential) -> ApiResult<Actor> {
    let presented = service::Presentation {
        method: &cred.method,
        path: &cred.path,
        headers: &cred.headers,
        peer: cred.peer.as_deref(),
    };
    match service::verify_presented(
        tx,
        ctx,
        &cred.verifiers,
        &presented,
        &[Kind::Api, Kind::Access],
    )? {
        Ok(p) => Ok(Actor {
            token_id: p.token.id.clone(),
            user: p.user,
            org: p.org,
        }),
        Err(r) => Err(ApiError::refused(&r.deny)),
    }
}

// ---------------------------------------------------------------------------------------
// The route table

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Public,
    Token,
    Edge,
}

/// One operation: the router and `/openapi.json` are both built from these.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// An example request body; `None` when the operation takes none.
    pub body: Option<Value>,
    pub query: &'static [&'static str],
    pub handler: MethodRouter<AppState>,
}

fn route(
    method: Method,
    path: &'static str,
    summary: &'static str,
    auth: Auth,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        summary,
        auth,
        body: None,
        query: &[],
        handler,
    }
}

impl Route {
    fn body(mut self, example: Value) -> Self {
        self.body = Some(example);
        self
    }

    fn query(mut self, q: &'static [&'static str]) -> Self {
        self.query = q;
        self
    }
}

const SEARCH_QUERY: &[&str] = &[
    "q",
    "status",
    "user",
    "expires_before",
    "sort",
    "page",
    "per_page",
];
const LOG_QUERY: &[&str] = &[
    "token", "user", "outcome", "since", "until", "page", "per_page",
];

macro_rules! h {
    ($m:ident, $f:expr) => {
        on(MethodFilter::$m, $f)
    };
}

pub fn routes() -> Vec<Route> {
    use Auth::*;
    vec![
        route(Method::GET, "/healthz", "Liveness", Public, h!(GET, health)),
        route(Method::GET, "/openapi.json", "This description", Public, h!(GET, openapi)),
        route(Method::GET, "/v1/me", "The authenticated user and organization", Token, h!(GET, me)),
        route(Method::GET, "/v1/orgs", "Organizations visible to the caller", Token, h!(GET, orgs_list)),
        route(Method::POST, "/v1/orgs", "Create an organization (root admin; partner admin for customers)", Token, h!(POST, orgs_create))
            .body(json!({"id": "acme", "name": "Acme", "partner": false, "managed_by": null, "key_alg": "EdDSA", "max_lifetime_days": 365, "audience": "tessera"})),
        route(Method::GET, "/v1/orgs/{org}", "One organization", Token, h!(GET, orgs_get)),
        route(Method::GET, "/v1/orgs/{org}/jwks.json", "The organization's public keys (JWKS)", Public, h!(GET, jwks)),
        route(Method::GET, "/v1/orgs/{org}/status-list", "Token status list (raw JSON, or statuslist+jwt); ETag; long-poll with since/wait", Public, h!(GET, status_list))
            .query(&["since", "wait", "format"]),
        route(Method::POST, "/v1/orgs/{org}/keys/rotate", "Rotate the signing key (org admin)", Token, h!(POST, keys_rotate))
            .body(json!({"alg": "ES256"})),
        route(Method::POST, "/v1/orgs/{org}/edge-credentials", "Create an edge credential for /v1/usage (org admin); the secret is shown once", Token, h!(POST, edges_create))
            .body(json!({"name": "edge-eu-1"})),
        route(Method::GET, "/v1/orgs/{org}/users", "Users of an organization (org admin)", Token, h!(GET, users_list)),
        route(Method::POST, "/v1/orgs/{org}/users", "Create a user (org admin)", Token, h!(POST, users_create))
            .body(json!({"username": "bob", "display_name": "Bob", "role": "user", "delegated": false})),
        route(Method::GET, "/v1/users/{id}", "One user (self or org admin)", Token, h!(GET, users_get)),
        route(Method::PATCH, "/v1/users/{id}", "Change a user (org admin; self: display_name, delegated)", Token, h!(PATCH, users_update))
            .body(json!({"display_name": "Bob B.", "delegated": true})),
        route(Method::GET, "/v1/tokens", "Search API tokens", Token, h!(GET, tokens_search)).query(SEARCH_QUERY),
        route(Method::POST, "/v1/tokens", "Create an API token (Pending until its user downloads it)", Token, h!(POST, tokens_create))
            .body(json!({"name": "ci", "description": "CI pipeline", "user": null, "lifetime_days": 90, "not_before": null, "ip_allow": ["10.0.0.0/8"], "scopes": ["read"], "enabled": true})),
        route(Method::GET, "/v1/tokens.csv", "Export API tokens as CSV (same filters as search)", Token, h!(GET, tokens_csv)).query(SEARCH_QUERY),
        route(Method::POST, "/v1/tokens/revoke-all", "Revoke every token of a user, or of an org (org admin)", Token, h!(POST, tokens_revoke_all))
            .body(json!({"user": "bob"})),
        route(Method::GET, "/v1/tokens/{id}", "One API token", Token, h!(GET, tokens_get)),
        route(Method::PATCH, "/v1/tokens/{id}", "Edit; changing a field inside the JWT revokes the outstanding JWT (back to Pending)", Token, h!(PATCH, tokens_edit))
            .body(json!({"name": "ci-2", "description": "", "ip_allow": [], "expires_at": "2030-01-01T00:00:00Z", "not_before": null, "scopes": ["read"], "enabled": true})),
        route(Method::DELETE, "/v1/tokens/{id}", "Delete (cannot be undone; the JWT stays revoked)", Token, h!(DELETE, tokens_delete)),
        route(Method::POST, "/v1/tokens/{id}/download", "Mint and return the JWT, once (owner only)", Token, h!(POST, tokens_download)),
        route(Method::POST, "/v1/tokens/{id}/regenerate", "Mint a new JWT; the previous one is revoked (owner only)", Token, h!(POST, tokens_regenerate)),
        route(Method::POST, "/v1/tokens/{id}/revoke", "Revoke (final)", Token, h!(POST, tokens_revoke)),
        route(Method::POST, "/v1/tokens/{id}/enable", "Enable a disabled token", Token, h!(POST, tokens_enable)),
        route(Method::POST, "/v1/tokens/{id}/disable", "Disable (suspend) a token; reversible", Token, h!(POST, tokens_disable)),
        route(Method::GET, "/v1/tokens/{id}/auth-log", "Authentication log of one token", Token, h!(GET, tokens_auth_log)).query(LOG_QUERY),
        route(Method::GET, "/v1/auth-log", "Authentication log of the caller's tokens (the org's, for admins)", Token, h!(GET, auth_log)).query(LOG_QUERY),
        route(Method::GET, "/v1/audit-log", "Audit log of management actions (org admin)", Token, h!(GET, audit_log))
            .query(&["org", "target", "page", "per_page"]),
        route(Method::POST, "/v1/auth/accesstoken", "Exchange an API token for a short-lived at+jwt (JSON, or RFC 8693 form)", Public, h!(POST, exchange))
            .body(json!({"refreshToken": "<api token>"})),
        route(Method::POST, "/v1/usage", "Usage events from an edge (edge credential)", Edge, h!(POST, usage))
            .body(json!({"events": [{"token_id": "tok_0123", "at": "2026-01-01T00:00:00Z", "ip": "192.0.2.1", "outcome": "allow", "reason": null, "method": "GET", "path": "/v1/things"}]})),
    ]
}

pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        router = router.route(r.path, r.handler);
    }
    router
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such route; see /openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route; see /openapi.json",
            )
        })
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Handlers

type JsonResult = ApiResult<Json<Value>>;

async fn health() -> Json<Value> {
    Json(json!({"ok": true}))
}

async fn openapi(State(s): State<AppState>) -> Json<Value> {
    Json(crate::openapi::document(s.base_url()))
}

async fn me(State(s): State<AppState>, c: Credential) -> JsonResult {
    s.read(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        Ok(json!({"user": service::user_view(&a.user), "org": service::org_view(ctx, &a.org), "token": a.token_id}))
    })
    .await
    .map(Json)
}

async fn orgs_list(State(s): State<AppState>, c: Credential) -> JsonResult {
    s.read(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        let orgs = service::visible_orgs(tx, &a)?;
        Ok(json!({"orgs": orgs.iter().map(|o| service::org_view(ctx, o)).collect::<Vec<_>>()}))
    })
    .await
    .map(Json)
}

async fn orgs_create(
    State(s): State<AppState>,
    c: Credential,
    JsonBody(req): JsonBody<service::CreateOrg>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let v = s
        .write(move |tx, ctx| {
            let a = authenticate(tx, ctx, &c)?;
            let org = service::create_org(tx, ctx, &a, req)?;
            Ok(service::org_view(ctx, &org))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn orgs_get(State(s): State<AppState>, c: Credential, Path(org): Path<String>) -> JsonResult {
    s.read(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        let o = service::get_org(tx, &a, &org)?;
        Ok(service::org_view(ctx, &o))
    })
    .await
    .map(Json)
}

async fn jwks(State(s): State<AppState>, Path(org): Path<String>) -> ApiResult<Response> {
    let v = s.read(move |tx, ctx| service::jwks(tx, ctx, &org)).await?;
    let mut resp = Json(v).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    Ok(resp)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusParams {
    #[serde(default)]
    since: Option<i64>,
    #[serde(default)]
    wait: Option<u64>,
    /// `json` (default) or `jwt`.
    #[serde(default)]
    format: Option<String>,
}

/// The longest a status-list long poll is held open.
const MAX_WAIT_SECS: u64 = 60;

async fn status_list(
    State(s): State<AppState>,
    Path(org): Path<String>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<StatusParams>,
) -> ApiResult<Response> {
    let accept_jwt = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/statuslist+jwt"));
    let jwt = match p.format.as_deref() {
        None => accept_jwt,
        Some("json") => false,
        Some("jwt") => true,
        Some(_) => return Err(ApiError::field("query.format", "json or jwt")),
    };
    let wait = p.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::field(
            "query.wait",
            format!("at most {MAX_WAIT_SECS} seconds"),
        ));
    }
    if p.since.is_some_and(|v| v < 0) {
        return Err(ApiError::field("query.since", "must be >= 0"));
    }
    // Subscribe before reading the version so no change slips between the two.
    let mut rx = s.inner.changes.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let etag_for = |v: i64| format!("\"{v}{}\"", if jwt { "-jwt" } else { "" });
    loop {
        let o = org.clone();
        let version = s.read(move |tx, _| service::status_version(tx, &o)).await?;
        // Any difference answers at once: a client ahead of us (a database restored from
        // a backup, another deployment) must get our list, not wait for a version that
        // may never come.
        let fresh = p.since.is_none_or(|since| version != since);
        if fresh {
            break;
        }
        let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
        if !matches!(changed, Ok(Ok(()))) {
            return Ok(not_modified(&etag_for(version), version));
        }
    }
    let (version, body, ctype) = if jwt {
        let o = org.clone();
        let (v, j) = s
            .write(move |tx, ctx| service::status_list_jwt(tx, ctx, &o))
            .await?;
        (v, j, "application/statuslist+jwt")
    } else {
        let o = org.clone();
        let (v, l) = s.read(move |tx, _| service::status_list(tx, &o)).await?;
        (v, l.to_string(), "application/json")
    };
    let etag = etag_for(version);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return Ok(not_modified(&etag, version));
    }
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    set_version_headers(h, &etag, version);
    Ok(resp)
}

fn set_version_headers(h: &mut HeaderMap, etag: &str, version: i64) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert("tessera-status-version", HeaderValue::from(version));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

fn not_modified(etag: &str, version: i64) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    set_version_headers(resp.headers_mut(), etag, version);
    resp
}

async fn keys_rotate(
    State(s): State<AppState>,
    c: Credential,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<service::RotateKey>,
) -> JsonResult {
    s.write(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        service::rotate_key(tx, ctx, &a, &org, req)
    })
    .await
    .map(Json)
}

async fn edges_create(
    State(s): State<AppState>,
    c: Credential,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<service::CreateEdge>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let v = s
        .write(move |tx, ctx| {
            let a = authenticate(tx, ctx, &c)?;
            service::create_edge(tx, ctx, &a, &org, req)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn users_list(
    State(s): State<AppState>,
    c: Credential,
    Path(org): Path<String>,
) -> JsonResult {
    s.read(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        let users = service::list_users(tx, &a, &org)?;
        Ok(json!({"users": users.iter().map(service::user_view).collect::<Vec<_>>()}))
    })
    .await
    .map(Json)
}

async fn users_create(
    State(s): State<AppState>,
    c: Credential,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<service::CreateUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let v = s
        .write(move |tx, ctx| {
            let a = authenticate(tx, ctx, &c)?;
            Ok(service::user_view(&service::create_user(
                tx, ctx, &a, &org, req,
            )?))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn users_get(State(s): State<AppState>, c: Credential, Path(id): Path<String>) -> JsonResult {
    s.read(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        Ok(service::user_view(&service::get_user(tx, &a, &id)?))
    })
    .await
    .map(Json)
}

async fn users_update(
    State(s): State<AppState>,
    c: Credential,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<service::UpdateUser>,
) -> JsonResult {
    s.write(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        Ok(service::user_view(&service::update_user(
            tx, ctx, &a, &id, req,
        )?))
    })
    .await
    .map(Json)
}

async fn tokens_search(
    State(s): State<AppState>,
    c: Credential,
    QueryParams(p): QueryParams<service::SearchParams>,
) -> JsonResult {
    s.read(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        let (tokens, total, page, per_page) = service::search(tx, ctx, &a, &p, false)?;
        Ok(json!({"tokens": tokens, "total": total, "page": page, "per_page": per_page}))
    })
    .await
    .map(Json)
}

/// Renders token views as CSV in `TOKEN_COLUMNS` order.
pub fn tokens_to_csv(tokens: &[Value]) -> String {
    let mut out = crate::csv::row(&service::TOKEN_COLUMNS);
    for t in tokens {
        let fields: Vec<String> = service::TOKEN_COLUMNS
            .iter()
            .map(|c| cell(t.get(*c)))
            .collect();
        out.push_str(&crate::csv::row(&fields));
    }
    out
}

/// A JSON value as one table or CSV cell (arrays space-separated, null empty).
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => other.to_string(),
    }
}

async fn tokens_csv(
    State(s): State<AppState>,
    c: Credential,
    QueryParams(p): QueryParams<service::SearchParams>,
) -> ApiResult<Response> {
    let csv = s
        .read(move |tx, ctx| {
            let a = authenticate(tx, ctx, &c)?;
            let (tokens, _, _, _) = service::search(tx, ctx, &a, &p, true)?;
            Ok(tokens_to_csv(&tokens))
        })
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tokens.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

async fn tokens_create(
    State(s): State<AppState>,
    c: Credential,
    JsonBody(req): JsonBody<service::CreateToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let v = s
        .write(move |tx, ctx| {
            let a = authenticate(tx, ctx, &c)?;
            service::create_token(tx, ctx, &a, req)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn tokens_revoke_all(
    State(s): State<AppState>,
    c: Credential,
    JsonBody(req): JsonBody<service::RevokeAll>,
) -> JsonResult {
    s.write(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        service::revoke_all(tx, ctx, &a, req)
    })
    .await
    .map(Json)
}

async fn tokens_get(
    State(s): State<AppState>,
    c: Credential,
    Path(id): Path<String>,
) -> JsonResult {
    s.read(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        service::get_token(tx, ctx, &a, &id)
    })
    .await
    .map(Json)
}

async fn tokens_edit(
    State(s): State<AppState>,
    c: Credential,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<service::EditToken>,
) -> JsonResult {
    s.write(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        service::edit(tx, ctx, &a, &id, req)
    })
    .await
    .map(Json)
}

/// The token operations that take only the id.
type TokenOp = fn(&mut dyn Tx, &Ctx, &Actor, &str) -> ApiResult<Value>;

async fn token_op(s: AppState, c: Credential, id: String, op: TokenOp) -> JsonResult {
    s.write(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        op(tx, ctx, &a, &id)
    })
    .await
    .map(Json)
}

async fn tokens_delete(
    State(s): State<AppState>,
    c: Credential,
    Path(id): Path<String>,
) -> JsonResult {
    token_op(s, c, id, service::delete).await
}

async fn tokens_download(
    State(s): State<AppState>,
    c: Credential,
    Path(id): Path<String>,
) -> JsonResult {
    token_op(s, c, id, service::download).await
}

async fn tokens_regenerate(
    State(s): State<AppState>,
    c: Credential,
    Path(id): Path<String>,
) -> JsonResult {
    token_op(s, c, id, service::regenerate).await
}

async fn tokens_revoke(
    State(s): State<AppState>,
    c: Credential,
    Path(id): Path<String>,
) -> JsonResult {
    token_op(s, c, id, service::revoke).await
}

async fn tokens_enable(
    State(s): State<AppState>,
    c: Credential,
    Path(id): Path<String>,
) -> JsonResult {
    token_op(s, c, id, service::enable).await
}

async fn tokens_disable(
    State(s): State<AppState>,
    c: Credential,
    Path(id): Path<String>,
) -> JsonResult {
    token_op(s, c, id, service::disable).await
}

async fn tokens_auth_log(
    State(s): State<AppState>,
    c: Credential,
    Path(id): Path<String>,
    QueryParams(p): QueryParams<service::LogParams>,
) -> JsonResult {
    s.read(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        Ok(json!({"events": service::token_auth_log(tx, &a, &id, &p)?}))
    })
    .await
    .map(Json)
}

async fn auth_log(
    State(s): State<AppState>,
    c: Credential,
    QueryParams(p): QueryParams<service::LogParams>,
) -> JsonResult {
    s.read(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        Ok(json!({"events": service::auth_log(tx, &a, &p)?}))
    })
    .await
    .map(Json)
}

async fn audit_log(
    State(s): State<AppState>,
    c: Credential,
    QueryParams(p): QueryParams<service::AuditParams>,
) -> JsonResult {
    s.read(move |tx, ctx| {
        let a = authenticate(tx, ctx, &c)?;
        Ok(json!({"entries": service::audit_log(tx, &a, &p)?}))
    })
    .await
    .map(Json)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeJson {
    #[serde(rename = "refreshToken")]
    refresh_token: String,
}

#[derive(serde::Deserialize)]
struct ExchangeForm {
    grant_type: String,
    subject_token: String,
    subject_token_type: String,
}

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const SUBJECT_TYPES: [&str; 3] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:access_token",
    "urn:ietf:params:oauth:token-type:refresh_token",
];

/// JSON `{"refreshToken"}` or the RFC 8693 form (`grant_type=...token-exchange`).
async fn exchange(
    State(s): State<AppState>,
    PeerAddr(peer): PeerAddr,
    req: Request,
) -> ApiResult<Response> {
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let bytes = read_body(req, &()).await?;
    let token = if form {
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(&bytes));
        let f: ExchangeForm = serde_path_to_error::deserialize(de)
            .map_err(|e| body_error(e.path().to_string(), e.inner()))?;
        if f.grant_type != GRANT_TOKEN_EXCHANGE {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type: only {GRANT_TOKEN_EXCHANGE}"),
            ));
        }
        if !SUBJECT_TYPES.contains(&f.subject_token_type.as_str()) {
            return Err(ApiError::field(
                "subject_token_type",
                format!("one of {SUBJECT_TYPES:?}"),
            ));
        }
        f.subject_token
    } else {
        parse_json::<ExchangeJson>(&bytes)?.refresh_token
    };
    let verifiers = Arc::clone(&s.inner.verifiers);
    let mut v = s
        .write(move |tx, ctx| service::exchange(tx, ctx, &verifiers, &token, peer.as_deref()))
        .await??;
    if form {
        if let Value::Object(m) = &mut v {
            m.insert(
                "issued_token_type".into(),
                json!("urn:ietf:params:oauth:token-type:access_token"),
            );
        }
    }
    let mut resp = Json(v).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn usage(
    State(s): State<AppState>,
    BearerSecret(c): BearerSecret,
    JsonBody(batch): JsonBody<service::UsageBatch>,
) -> JsonResult {
    s.write(move |tx, ctx| service::record_usage(tx, ctx, &c, batch))
        .await
        .map(Json)
}
