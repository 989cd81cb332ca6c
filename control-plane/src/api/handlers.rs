//! The handlers: each takes its inputs from extractors, runs one service operation in one
//! transaction, and returns the operation's typed view.

use super::extract::{
    body_error, parse_json, read_body, BearerSecret, Caller, ConnectInfoOpt, JsonBody, PeerAddr,
    QueryParams,
};
use super::{ApiError, ApiResult, AppState};
use crate::service::input::{
    AuditParams, CreateEdge, CreateOrg, CreateToken, CreateUser, EditToken, LogParams, PageParams,
    RevokeAll, RotateKey, SearchParams, UpdateUser, UsageBatch,
};
use crate::service::views::{
    AuditEntries, AuthEvents, Deleted, EdgeCreated, Edited, Health, KeyRotated, Me, Minted,
    OrgList, OrgView, Ready, RevokedAll, StatusListView, TokenPage, TokenView, UsageAccepted,
    UserList, UserView,
};
use crate::service::{self, authn, keys, logs, orgs, tokens, users};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::time::Duration;

type Created<T> = ApiResult<(StatusCode, Json<T>)>;

fn created<T>(v: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(v))
}

pub(super) async fn health() -> Json<Health> {
    Json(Health { ok: true })
}

pub(super) async fn ready(State(s): State<AppState>) -> ApiResult<Json<Ready>> {
    s.ready().await?;
    Ok(Json(Ready { status: "ready" }))
}

pub(super) async fn openapi(State(s): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::openapi(s.base_url()))
}

pub(super) async fn me(State(s): State<AppState>, Caller(a): Caller) -> ApiResult<Json<Me>> {
    s.read_as(a, |_, ctx, a| {
        Ok(Me {
            user: UserView::new(&a.user),
            org: OrgView::new(ctx, &a.org),
            token: a.token_id.clone(),
        })
    })
    .await
    .map(Json)
}

pub(super) async fn orgs_list(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<OrgList>> {
    s.read_as(a, |tx, ctx, a| {
        let orgs = orgs::visible_orgs(tx, a)?;
        Ok(OrgList {
            orgs: orgs.iter().map(|o| OrgView::new(ctx, o)).collect(),
        })
    })
    .await
    .map(Json)
}

pub(super) async fn orgs_create(
    State(s): State<AppState>,
    Caller(a): Caller,
    JsonBody(req): JsonBody<CreateOrg>,
) -> Created<OrgView> {
    s.write_as(a, |tx, ctx, a| {
        let org = orgs::create_org(tx, ctx, a, req)?;
        Ok(OrgView::new(ctx, &org))
    })
    .await
    .map(created)
}

pub(super) async fn orgs_get(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<OrgView>> {
    s.read_as(a, move |tx, ctx, a| {
        Ok(OrgView::new(ctx, &orgs::get_org(tx, a, &org)?))
    })
    .await
    .map(Json)
}

pub(super) async fn jwks(
    State(s): State<AppState>,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    let v = s.read(move |tx, ctx| keys::jwks(tx, ctx, &org)).await?;
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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StatusParams {
    /// The version the client has: answer only once the list differs (long poll).
    #[serde(default)]
    since: Option<i64>,
    /// Seconds to wait for a change after `since` (at most 60); 304 when none came.
    #[serde(default)]
    wait: Option<u64>,
    /// `json` (default) or `jwt`.
    #[serde(default)]
    format: Option<String>,
}

/// The longest a status-list long poll is held open.
const MAX_WAIT_SECS: u64 = 60;

pub(super) async fn status_list(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
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
        Some(_) => return Err(ApiError::field("format", "json or jwt")),
    };
    let wait = p.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::field(
            "wait",
            format!("at most {MAX_WAIT_SECS} seconds"),
        ));
    }
    if p.since.is_some_and(|v| v < 0) {
        return Err(ApiError::field("since", "must be >= 0"));
    }
    // An edge may name itself with its credential (`Authorization: Bearer`): its long
    // polls then hold places of the credential's reserved share, which no stranger's
    // polls can take. A refused credential is refused (and counts against the address's
    // rate of unauthenticated requests).
    let edge = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let secret = super::extract::bearer_value(v).unwrap_or_default();
            let o = org.clone();
            match s
                .read(move |tx, _| logs::edge_for_org(tx, &secret, &o))
                .await
            {
                Ok(id) => Some(id),
                Err(e) => {
                    return Ok(match s.address_limit().and_then(|l| l.check(peer)) {
                        Some(too_many) => too_many,
                        None => e.into_response(),
                    })
                }
            }
        }
    };
    // Subscribe before reading the version so no change slips between the two.
    let mut rx = s.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let etag_for = |v: i64| format!("\"{v}{}\"", if jwt { "-jwt" } else { "" });
    // Held while this poll waits: one address holds at most its share of long polls.
    let mut place = None;
    loop {
        // One read per org per change on this process, shared by every poll it woke.
        let generation = *rx.borrow_and_update();
        let version = s.poll_version(generation, &org).await?;
        // Any difference answers at once: a client ahead of us (a database restored from
        // a backup, another deployment) must get our list, not wait for a version that
        // may never come.
        let fresh = p.since.is_none_or(|since| version != since);
        if fresh {
            break;
        }
        if place.is_none() && wait > 0 {
            match s.long_poll_place(peer, edge.as_deref()) {
                Some(p) => place = Some(p),
                None => return Ok(too_many_polls()),
            }
        }
        let changed = tokio::select! {
            c = tokio::time::timeout_at(deadline, rx.changed()) => matches!(c, Ok(Ok(()))),
            // The server is shutting down: answer now, the client polls again elsewhere.
            () = s.closing() => false,
        };
        if !changed {
            return Ok(not_modified(&etag_for(version), version));
        }
    }
    drop(place);
    let (version, body, ctype) = if jwt {
        // A signed list costs a signature and a write: unauthenticated, so it counts
        // against the address's rate like the other public routes.
        if let Some(limited) = s.address_limit().and_then(|l| l.check(peer)) {
            return Ok(limited);
        }
        let o = org.clone();
        let st = s.clone();
        let (v, j) = s
            .write(move |tx, ctx| {
                let org = crate::service::load_org(tx, &o)?;
                let (_, withdrawn) = st.verifiers().encoded_withdrawn(tx, ctx, &org)?;
                keys::status_list_jwt(tx, ctx, &org.id, withdrawn)
            })
            .await?;
        (v, j, "application/statuslist+jwt")
    } else {
        let o = org.clone();
        let st = s.clone();
        let (v, lst, withdrawn) = s
            .read(move |tx, ctx| {
                let org = crate::service::load_org(tx, &o)?;
                let (v, lst) = st.verifiers().encoded_list(tx, ctx, &org)?;
                let (_, withdrawn) = st.verifiers().encoded_withdrawn(tx, ctx, &org)?;
                Ok((v, lst, withdrawn))
            })
            .await?;
        let body = serde_json::to_string(&StatusListView {
            bits: 2,
            lst,
            withdrawn,
        })
        .map_err(ApiError::internal)?;
        (v, body, "application/json")
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

/// 429: the address already holds its share of waiting long polls.
fn too_many_polls() -> Response {
    ApiError::retry_after(
        "too_many_requests",
        Some("too_many_long_polls"),
        "too many status-list long polls from this address are waiting; retry in 1 s",
        1,
    )
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

pub(super) async fn orgs_update(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<service::input::UpdateOrg>,
) -> ApiResult<Json<OrgView>> {
    s.write_as(a, move |tx, ctx, a| {
        orgs::update_org(tx, ctx, a, &org, req).map(|o| OrgView::new(ctx, &o))
    })
    .await
    .map(Json)
}

pub(super) async fn keys_list(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<service::views::KeyList>> {
    s.read_as(a, move |tx, ctx, a| orgs::list_keys(tx, ctx, a, &org))
        .await
        .map(Json)
}

pub(super) async fn keys_rotate(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<RotateKey>,
) -> ApiResult<Json<KeyRotated>> {
    s.write_as(a, move |tx, ctx, a| orgs::rotate_key(tx, ctx, a, &org, req))
        .await
        .map(Json)
}

pub(super) async fn edges_create(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<CreateEdge>,
) -> Created<EdgeCreated> {
    s.write_as(a, move |tx, ctx, a| {
        orgs::create_edge(tx, ctx, a, &org, req)
    })
    .await
    .map(created)
}

pub(super) async fn users_list(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<UserList>> {
    s.read_as(a, move |tx, _, a| {
        let (users, total, page) = users::list_users(tx, a, &org, &p)?;
        Ok(UserList {
            users,
            total,
            page: page.page,
            per_page: page.per_page,
        })
    })
    .await
    .map(Json)
}

pub(super) async fn users_create(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<CreateUser>,
) -> Created<UserView> {
    s.write_as(a, move |tx, ctx, a| {
        users::create_user(tx, ctx, a, &org, req)
    })
    .await
    .map(created)
}

pub(super) async fn users_get(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    s.read_as(a, move |tx, _, a| {
        let user = users::get_user(tx, a, &id)?;
        service::accounts::user_view(tx, &user)
    })
    .await
    .map(Json)
}

pub(super) async fn users_update(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateUser>,
) -> ApiResult<Json<UserView>> {
    s.write_as(a, move |tx, ctx, a| {
        Ok(UserView::new(&users::update_user(tx, ctx, a, &id, req)?))
    })
    .await
    .map(Json)
}

pub(super) async fn tokens_search(
    State(s): State<AppState>,
    Caller(a): Caller,
    QueryParams(p): QueryParams<SearchParams>,
) -> ApiResult<Json<TokenPage>> {
    s.read_as(a, move |tx, ctx, a| tokens::search(tx, ctx, a, &p))
        .await
        .map(Json)
}

/// Every matching row, streamed: the header first, then one short read per batch of rows
/// (keyset paging, so each batch costs the same), so an export of any size neither holds
/// the store nor the whole file in memory. A failure after the first bytes ends the body
/// with an error, which the client sees as a truncated transfer, never as a short file.
pub(super) async fn tokens_csv(
    State(s): State<AppState>,
    Caller(a): Caller,
    QueryParams(p): QueryParams<SearchParams>,
) -> ApiResult<Response> {
    let query = s
        .read_as(a, move |_, ctx, a| tokens::token_query(ctx, a, &p))
        .await?;
    let (tx_rows, rx_rows) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let header = crate::csv::row(&service::views::TOKEN_COLUMNS).into_bytes();
    tokio::spawn(async move {
        if tx_rows.send(Ok(header)).await.is_err() {
            return;
        }
        let mut after: Option<String> = None;
        loop {
            let q = query.clone();
            let cursor = after.take();
            // Rendered on the blocking pool with the read, so a large export never keeps
            // the async workers from other requests.
            let batch = s
                .read(move |tx, ctx| {
                    let (rows, next) = tokens::export_batch(tx, ctx, &q, cursor)?;
                    let mut chunk = String::new();
                    for r in &rows {
                        chunk.push_str(&crate::csv::row(&r.cells()));
                    }
                    Ok((chunk, next))
                })
                .await;
            let (chunk, next) = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "CSV export failed midway");
                    let _ = tx_rows
                        .send(Err(std::io::Error::other("export failed")))
                        .await;
                    return;
                }
            };
            if tx_rows.send(Ok(chunk.into_bytes())).await.is_err() {
                return;
            }
            match next {
                Some(n) => after = Some(n),
                None => return,
            }
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx_rows));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tokens.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

pub(super) async fn tokens_create(
    State(s): State<AppState>,
    Caller(a): Caller,
    JsonBody(req): JsonBody<CreateToken>,
) -> Created<TokenView> {
    s.write_as(a, move |tx, ctx, a| tokens::create_token(tx, ctx, a, req))
        .await
        .map(created)
}

pub(super) async fn tokens_revoke_all(
    State(s): State<AppState>,
    Caller(a): Caller,
    JsonBody(req): JsonBody<RevokeAll>,
) -> ApiResult<Json<RevokedAll>> {
    s.write_as(a, move |tx, ctx, a| tokens::revoke_all(tx, ctx, a, req))
        .await
        .map(Json)
}

pub(super) async fn tokens_get(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    s.read_as(a, move |tx, ctx, a| tokens::get_token(tx, ctx, a, &id))
        .await
        .map(Json)
}

pub(super) async fn tokens_edit(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<EditToken>,
) -> ApiResult<Json<Edited>> {
    s.write_as(a, move |tx, ctx, a| tokens::edit(tx, ctx, a, &id, req))
        .await
        .map(Json)
}

/// A token operation that takes only the id.
type TokenOp<T> =
    fn(&mut dyn crate::store::Tx, &service::Ctx, &crate::policy::Actor, &str) -> service::Result<T>;

async fn token_op<T: Send + 'static>(
    s: AppState,
    a: crate::policy::Actor,
    id: String,
    op: TokenOp<T>,
) -> ApiResult<Json<T>> {
    s.write_as(a, move |tx, ctx, a| op(tx, ctx, a, &id))
        .await
        .map(Json)
}

pub(super) async fn tokens_delete(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    token_op(s, a, id, tokens::delete).await
}

pub(super) async fn tokens_download(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Minted>> {
    token_op(s, a, id, tokens::download).await
}

pub(super) async fn tokens_regenerate(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Minted>> {
    token_op(s, a, id, tokens::regenerate).await
}

pub(super) async fn tokens_rotate(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<service::rotation::RotateToken>,
) -> ApiResult<(StatusCode, Json<service::rotation::Rotated>)> {
    s.write_as(a, move |tx, ctx, a| {
        service::rotation::rotate(tx, ctx, a, &id, req.clone())
    })
    .await
    .map(|r| (StatusCode::CREATED, Json(r)))
}

pub(super) async fn tokens_rotation(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<service::rotation::RotationView>> {
    s.read_as(a, move |tx, _, a| service::rotation::get(tx, a, &id))
        .await
        .map(Json)
}

pub(super) async fn tokens_revoke(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    token_op(s, a, id, tokens::revoke).await
}

pub(super) async fn tokens_enable(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    token_op(s, a, id, tokens::enable).await
}

pub(super) async fn tokens_disable(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    token_op(s, a, id, tokens::disable).await
}

pub(super) async fn tokens_auth_log(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    QueryParams(p): QueryParams<LogParams>,
) -> ApiResult<Json<AuthEvents>> {
    s.flush_api_uses().await?;
    s.read_as(a, move |tx, _, a| logs::token_auth_log(tx, a, &id, &p))
        .await
        .map(Json)
}

pub(super) async fn tokens_usage(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    QueryParams(p): QueryParams<logs::UsageParams>,
) -> ApiResult<Json<crate::service::views::TokenUsage>> {
    s.flush_api_uses().await?;
    s.read_as(a, move |tx, ctx, a| logs::token_usage(tx, ctx, a, &id, &p))
        .await
        .map(Json)
}

pub(super) async fn auth_log(
    State(s): State<AppState>,
    Caller(a): Caller,
    QueryParams(p): QueryParams<LogParams>,
) -> ApiResult<Json<AuthEvents>> {
    s.flush_api_uses().await?;
    s.read_as(a, move |tx, _, a| logs::auth_log(tx, a, &p))
        .await
        .map(Json)
}

pub(super) async fn audit_log(
    State(s): State<AppState>,
    Caller(a): Caller,
    QueryParams(p): QueryParams<AuditParams>,
) -> ApiResult<Json<AuditEntries>> {
    s.read_as(a, move |tx, _, a| logs::audit_log(tx, a, &p))
        .await
        .map(Json)
}

/// The JSON form of the exchange: the API token to exchange.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExchangeJson {
    #[serde(rename = "refreshToken")]
    refresh_token: String,
}

/// The RFC 8693 form of the exchange.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub(super) struct ExchangeForm {
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
pub(super) async fn exchange(
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
            return Err(ApiError::from(service::Error::UnsupportedGrantType(
                format!("grant_type: only {GRANT_TOKEN_EXCHANGE}"),
            )));
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
    let st = s.clone();
    let exchanged = s
        .write(move |tx, ctx| authn::exchange(tx, ctx, st.verifiers(), &token, peer.as_deref()))
        .await?;
    let mut v = match exchanged {
        authn::Exchanged::Issued(v) => v,
        authn::Exchanged::Refused(reason) => {
            return Err(ApiError::from(service::Error::InvalidGrant(format!(
                "the API token is not usable: {reason}"
            ))))
        }
    };
    if form {
        v.issued_token_type = Some("urn:ietf:params:oauth:token-type:access_token".into());
    }
    let mut resp = Json(v).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// A refused edge credential counts against the per-address rate: past it, 429.
pub(super) async fn usage(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    credential: Result<BearerSecret, ApiError>,
    JsonBody(batch): JsonBody<UsageBatch>,
) -> Result<Json<UsageAccepted>, Response> {
    let refused = |e: ApiError| match s.address_limit().and_then(|l| l.check(peer)) {
        Some(too_many) => too_many,
        None => e.into_response(),
    };
    let BearerSecret(c) = credential.map_err(refused)?;
    s.write(move |tx, ctx| logs::record_usage(tx, ctx, &c, batch))
        .await
        .map(Json)
        .map_err(|e| {
            if e.status == StatusCode::UNAUTHORIZED {
                refused(e)
            } else {
                e.into_response()
            }
        })
}

pub(super) async fn leak_policy_get(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<service::leaks::LeakPolicyView>> {
    s.read(move |tx, _| service::leaks::get_policy(tx, &a, &org))
        .await
        .map(Json)
}

pub(super) async fn leak_policy_put(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<service::leaks::SetLeakPolicy>,
) -> ApiResult<Json<service::leaks::LeakPolicyView>> {
    s.write_as(a, move |tx, ctx, a| {
        service::leaks::put_policy(tx, ctx, a, &org, req)
    })
    .await
    .map(Json)
}
