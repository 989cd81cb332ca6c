//! The SCIM 2.0 routes (`/scim/v2/{org}/…`, RFC 7644) and the SCIM credentials' routes
//! (`/v1/orgs/{org}/scim-credentials`). A SCIM request is authenticated by its bearer
//! secret inside the transaction that serves it (one hash lookup), and answered in
//! `application/scim+json`, errors included (`urn:ietf:params:scim:api:messages:2.0:Error`
//! with `scimType`). A refused credential counts against the per-address rate limit.

use super::extract::{Caller, ConnectInfoOpt, JsonBody};
use super::scim_docs::{self, ResourceType, SchemaDoc, ServiceProviderConfig};
use super::{route, schema_ref, ActingSlot, ApiError, ApiResult, AppState, Auth, Body, Route};
use crate::policy::Actor;
use crate::service::scim::patch::PatchOp;
use crate::service::scim::resource::{
    Fault, GroupListResponse, GroupResource, ListResponse, ScimErrorBody, ScimUserResource,
    UserListResponse, ERROR_SCHEMA,
};
use crate::service::scim::{
    self, CreateScimCredential, ListParams, ScimCredentialCreated, ScimCredentialList,
    ScimCredentialView, SearchRequest, Versioned,
};
use crate::service::{Ctx, Error};
use crate::store::Tx;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

pub const SCIM_JSON: &str = "application/scim+json";

macro_rules! h {
    ($m:ident, $f:expr) => {
        on(MethodFilter::$m, $f)
    };
}

/// An answer in `application/scim+json`.
fn scim_json<T: Serialize>(status: StatusCode, body: &T, version: Option<i64>) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    if let Some(v) = version {
        if let Ok(tag) = HeaderValue::from_str(&scim::etag(v)) {
            r.headers_mut().insert(header::ETAG, tag);
        }
    }
    r
}

/// A SCIM error answer.
fn scim_error(status: u16, scim_type: Option<&str>, detail: String) -> Response {
    let body = ScimErrorBody {
        schemas: vec![ERROR_SCHEMA.into()],
        status: status.to_string(),
        scim_type: scim_type.map(str::to_string),
        detail,
    };
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = scim_json(code, &body, None);
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tessera-scim\""),
        );
    }
    r
}

/// A service error as a SCIM error: the status and words the rest of the API gives it
/// (logged there when it is a 5xx).
fn api_error(e: ApiError) -> Response {
    let status = e.status.as_u16();
    if let Some(detail) = &e.detail {
        tracing::error!(status, code = e.code, detail = %detail, "SCIM request failed");
    }
    let scim_type = match (status, e.code) {
        (400, _) => Some("invalidValue"),
        (409, _) => Some("uniqueness"),
        _ => None,
    };
    let mut r = scim_error(status, scim_type, e.message);
    r.extensions_mut()
        .insert(super::error::RefusalReason(e.reason));
    r
}

fn fault(f: Fault) -> Response {
    match f {
        Fault::Scim {
            status,
            scim_type,
            detail,
        } => scim_error(status, scim_type, detail),
        Fault::Service(e) => api_error(ApiError::from(e)),
    }
}

/// The SCIM credential from `Authorization: Bearer <secret>`.
struct Presented {
    secret: Option<String>,
    peer: Option<std::net::SocketAddr>,
}

fn presented(headers: &HeaderMap, peer: Option<std::net::SocketAddr>) -> Presented {
    Presented {
        secret: headers
            .get(header::AUTHORIZATION)
            .and_then(super::extract::bearer_value),
        peer,
    }
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Runs one SCIM operation in one transaction: the credential is authenticated inside
/// it, the operation acts as the credential's admin, and a write that changed a status
/// list wakes the edges' long polls on commit (as `AppState::run` does).
async fn scim_op<T: Send + 'static>(
    s: &AppState,
    write: bool,
    org: String,
    who: Presented,
    slot: Option<Extension<ActingSlot>>,
    f: impl FnOnce(&mut dyn Tx, &Ctx, &Actor) -> Result<T, Fault> + Clone + Send + 'static,
) -> Result<T, Response> {
    let refused = |r: Response| match s.address_limit().and_then(|l| l.check(who.peer)) {
        Some(too_many) => {
            let retry = too_many.headers().get(header::RETRY_AFTER).cloned();
            let mut r = scim_error(
                429,
                None,
                "too many refused SCIM credentials from this address; try again later".into(),
            );
            if let Some(v) = retry {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        None => r,
    };
    let Some(secret) = who.secret else {
        return Err(refused(scim_error(
            401,
            None,
            "send Authorization: Bearer <SCIM credential>".into(),
        )));
    };
    let st = s.clone();
    let acting = std::sync::Arc::new(std::sync::Mutex::new(None::<(String, String)>));
    let seen = acting.clone();
    let (result, changed) = tokio::task::spawn_blocking(move || {
        let i = &st.inner;
        let now = (i.clock)();
        // As `AppState::run`: an attempt that lost a deadlock or a serialization race on
        // PostgreSQL runs again, from a fresh context and its own copy of the body.
        let mut changed = false;
        let r = crate::store::run(i.store.as_ref(), write, |tx| -> Result<T, Fault> {
            let ctx = Ctx::new(&i.base_url, &i.master, now, i.access_ttl)
                .with_quotas(i.quotas.get().copied().unwrap_or_default())
                .with_mail(i.mail.get().copied().unwrap_or(false));
            let actor = scim::authenticate(tx, &org, &secret)?;
            let label = actor.credential.label();
            if let Ok(mut a) = seen.lock() {
                *a = Some((actor.user.id.clone(), label.clone()));
            }
            ctx.act_with(label);
            if write {
                if let crate::policy::Credential::Scim { id } = &actor.credential {
                    tx.touch_scim_credential(id, ctx.now)?;
                }
            }
            let v = f.clone()(tx, &ctx, &actor);
            changed = ctx.edges_changed();
            let v = v?;
            if changed {
                tx.announce_edges_changed()?;
            }
            Ok(v)
        });
        (r, changed)
    })
    .await
    .map_err(|e| api_error(ApiError::internal(format!("worker: {e}"))))?;
    if let (Some(Extension(slot)), Ok(Some((user, cred)))) =
        (slot, acting.lock().map(|a| a.clone()))
    {
        slot.set(&user, &cred);
    }
    if write && matches!(result, Err(Fault::Service(Error::Store(_)))) {
        s.inner.verifiers.forget_all();
    }
    if changed && result.is_ok() {
        s.inner.changes.send_modify(|v| *v += 1);
    }
    result.map_err(|f| match f {
        Fault::Service(Error::Unauthenticated(m)) => refused(scim_error(401, None, m)),
        other => fault(other),
    })
}

/// A SCIM request body (`application/scim+json` or `application/json`); a bad one is a
/// SCIM 400 `invalidSyntax` naming the attribute.
struct ScimBody<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for ScimBody<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match JsonBody::<T>::from_request(req, state).await {
            Ok(JsonBody(v)) => Ok(ScimBody(v)),
            Err(e) => {
                let t = (e.status == StatusCode::BAD_REQUEST).then_some("invalidSyntax");
                Err(scim_error(e.status.as_u16(), t, e.message))
            }
        }
    }
}

/// Query parameters of a listing; a bad one is a SCIM 400.
struct ScimQuery(ListParams);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ScimQuery {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        match Query::<ListParams>::from_request_parts(parts, state).await {
            Ok(Query(p)) => Ok(ScimQuery(p)),
            Err(e) => Err(scim_error(400, Some("invalidValue"), e.body_text())),
        }
    }
}

type Scim = Result<Response, Response>;

/// A resource as JSON with `attributes`/`excludedAttributes` applied.
fn projected<T: Serialize>(r: &T, p: &ListParams) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    crate::service::scim::resource::project(
        &mut v,
        p.attributes.as_deref(),
        p.excluded_attributes.as_deref(),
    );
    v
}

/// A page with `attributes`/`excludedAttributes` applied to each resource.
fn projected_page<T: Serialize>(
    page: ListResponse<T>,
    p: &ListParams,
) -> ListResponse<serde_json::Value> {
    let resources: Vec<serde_json::Value> =
        page.resources.iter().map(|r| projected(r, p)).collect();
    ListResponse {
        schemas: page.schemas,
        total_results: page.total_results,
        start_index: page.start_index,
        items_per_page: page.items_per_page,
        resources,
    }
}

// ---- Discovery ----------------------------------------------------------------------

/// A page of discovery documents.
macro_rules! doc_list {
    ($name:ident, $t:ty) => {
        #[derive(Debug, Clone, Serialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub schemas: Vec<String>,
            pub total_results: usize,
            pub start_index: i64,
            pub items_per_page: usize,
            #[serde(rename = "Resources")]
            pub resources: Vec<$t>,
        }
    };
}
doc_list!(ResourceTypeList, ResourceType);
doc_list!(SchemaList, SchemaDoc);

fn base(s: &AppState, org: &str) -> String {
    format!("{}/scim/v2/{org}", s.base_url())
}

async fn service_provider_config(State(s): State<AppState>, Path(org): Path<String>) -> Response {
    scim_json(
        StatusCode::OK,
        &scim_docs::service_provider_config(&base(&s, &org)),
        None,
    )
}

async fn resource_types(State(s): State<AppState>, Path(org): Path<String>) -> Response {
    let all = scim_docs::resource_types(&base(&s, &org));
    scim_json(StatusCode::OK, &ListResponse::new(all.len(), 1, all), None)
}

async fn resource_type(
    State(s): State<AppState>,
    Path((org, id)): Path<(String, String)>,
) -> Response {
    match scim_docs::resource_types(&base(&s, &org))
        .into_iter()
        .find(|r| r.id == id)
    {
        Some(r) => scim_json(StatusCode::OK, &r, None),
        None => scim_error(
            404,
            None,
            format!("no resource type {id:?}; there are User and Group"),
        ),
    }
}

async fn schemas(State(s): State<AppState>, Path(org): Path<String>) -> Response {
    let all = scim_docs::schemas(&base(&s, &org));
    scim_json(StatusCode::OK, &ListResponse::new(all.len(), 1, all), None)
}

async fn schema(State(s): State<AppState>, Path((org, id)): Path<(String, String)>) -> Response {
    match scim_docs::schemas(&base(&s, &org))
        .into_iter()
        .find(|r| r.id == id)
    {
        Some(r) => scim_json(StatusCode::OK, &r, None),
        None => scim_error(404, None, format!("no schema {id:?}")),
    }
}

// ---- Users ----------------------------------------------------------------------------

fn user_answer(status: StatusCode, v: Versioned<ScimUserResource>, org: &str) -> Response {
    let mut r = scim_json(status, &v.resource, Some(v.version));
    if status == StatusCode::CREATED {
        if let Some(loc) = v
            .resource
            .meta
            .as_ref()
            .and_then(|m| HeaderValue::from_str(&m.location).ok())
        {
            r.headers_mut().insert(header::LOCATION, loc);
        }
    }
    let _ = org;
    r
}

async fn users_list(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    q: Result<ScimQuery, Response>,
) -> Scim {
    let who = presented(&headers, peer);
    let ScimQuery(p) = q?;
    users_page(s, org, who, slot, p).await
}

async fn users_page(
    s: AppState,
    org: String,
    who: Presented,
    slot: Option<Extension<ActingSlot>>,
    p: ListParams,
) -> Scim {
    let (page, p) = scim_op(&s, false, org, who, slot, move |tx, ctx, a| {
        scim::list_users(tx, ctx, a, &p).map(|page| (page, p))
    })
    .await?;
    Ok(scim_json(StatusCode::OK, &projected_page(page, &p), None))
}

/// `POST /.search` at the SCIM root: users and groups in one listing.
async fn search_all(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Result<ScimBody<SearchRequest>, Response>,
) -> Scim {
    let who = presented(&headers, peer);
    let ScimBody(req) = body?;
    let p: ListParams = req.into();
    let (page, p) = scim_op(&s, false, org, who, slot, move |tx, ctx, a| {
        scim::search_all(tx, ctx, a, &p).map(|page| (page, p))
    })
    .await?;
    Ok(scim_json(StatusCode::OK, &projected_page(page, &p), None))
}

/// `POST /Users/.search`: the listing, its parameters in the body.
async fn users_search(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Result<ScimBody<SearchRequest>, Response>,
) -> Scim {
    let who = presented(&headers, peer);
    let ScimBody(req) = body?;
    users_page(s, org, who, slot, req.into()).await
}

async fn users_create(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Result<ScimBody<ScimUserResource>, Response>,
) -> Scim {
    let who = presented(&headers, peer);
    let ScimBody(req) = body?;
    let o = org.clone();
    let v = scim_op(&s, true, org, who, slot, move |tx, ctx, a| {
        scim::create_user(tx, ctx, a, req)
    })
    .await?;
    Ok(user_answer(StatusCode::CREATED, v, &o))
}

async fn users_get(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    q: Result<ScimQuery, Response>,
) -> Scim {
    let who = presented(&headers, peer);
    let ScimQuery(p) = q?;
    let none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let o = org.clone();
    let v = scim_op(&s, false, org, who, slot, move |tx, ctx, a| {
        scim::get_user(tx, ctx, a, &id)
    })
    .await?;
    if none_match.is_some_and(|t| t.split(',').any(|t| t.trim() == scim::etag(v.version))) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(tag) = HeaderValue::from_str(&scim::etag(v.version)) {
            r.headers_mut().insert(header::ETAG, tag);
        }
        return Ok(r);
    }
    if p.attributes.is_some() || p.excluded_attributes.is_some() {
        return Ok(scim_json(
            StatusCode::OK,
            &projected(&v.resource, &p),
            Some(v.version),
        ));
    }
    Ok(user_answer(StatusCode::OK, v, &o))
}

async fn users_replace(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<ScimBody<ScimUserResource>, Response>,
) -> Scim {
    let who = presented(&headers, peer);
    let ScimBody(req) = body?;
    let m = if_match(&headers);
    let o = org.clone();
    let v = scim_op(&s, true, org, who, slot, move |tx, ctx, a| {
        scim::replace_user(tx, ctx, a, &id, m.as_deref(), req)
    })
    .await?;
    Ok(user_answer(StatusCode::OK, v, &o))
}

async fn users_patch(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<ScimBody<PatchOp>, Response>,
) -> Scim {
    let who = presented(&headers, peer);
    let ScimBody(req) = body?;
    let m = if_match(&headers);
    let o = org.clone();
    let v = scim_op(&s, true, org, who, slot, move |tx, ctx, a| {
        scim::patch_user(tx, ctx, a, &id, m.as_deref(), req)
    })
    .await?;
    Ok(user_answer(StatusCode::OK, v, &o))
}

async fn users_delete(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Scim {
    let who = presented(&headers, peer);
    let m = if_match(&headers);
    scim_op(&s, true, org, who, slot, move |tx, ctx, a| {
        scim::delete_user(tx, ctx, a, &id, m.as_deref())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- Groups ---------------------------------------------------------------------------

async fn groups_list(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    q: Result<ScimQuery, Response>,
) -> Scim {
    let who = presented(&headers, peer);
    let ScimQuery(p) = q?;
    let (page, p) = scim_op(&s, false, org, who, slot, move |tx, ctx, a| {
        scim::list_groups(tx, ctx, a, &p).map(|page| (page, p))
    })
    .await?;
    Ok(scim_json(StatusCode::OK, &projected_page(page, &p), None))
}

async fn groups_get(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Scim {
    let who = presented(&headers, peer);
    let g = scim_op(&s, false, org, who, slot, move |tx, ctx, a| {
        scim::get_group(tx, ctx, a, &id)
    })
    .await?;
    Ok(scim_json(StatusCode::OK, &g, None))
}

async fn groups_patch(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<ScimBody<PatchOp>, Response>,
) -> Scim {
    let who = presented(&headers, peer);
    let ScimBody(req) = body?;
    let g = scim_op(&s, true, org, who, slot, move |tx, ctx, a| {
        scim::patch_group(tx, ctx, a, &id, req)
    })
    .await?;
    Ok(scim_json(StatusCode::OK, &g, None))
}

async fn groups_replace(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    slot: Option<Extension<ActingSlot>>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<ScimBody<GroupResource>, Response>,
) -> Scim {
    let who = presented(&headers, peer);
    let ScimBody(req) = body?;
    let g = scim_op(&s, true, org, who, slot, move |tx, ctx, a| {
        scim::replace_group(tx, ctx, a, &id, req)
    })
    .await?;
    Ok(scim_json(StatusCode::OK, &g, None))
}

// ---- SCIM credentials (the /v1 API) ----------------------------------------------------------

async fn credentials_create(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<CreateScimCredential>,
) -> ApiResult<(StatusCode, Json<ScimCredentialCreated>)> {
    s.write_as(a, move |tx, ctx, a| {
        scim::create_credential(tx, ctx, a, &org, req)
    })
    .await
    .map(|v| (StatusCode::CREATED, Json(v)))
}

async fn credentials_list(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<ScimCredentialList>> {
    s.read_as(a, move |tx, _, a| scim::list_credentials(tx, a, &org))
        .await
        .map(Json)
}

async fn credentials_revoke(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<Json<ScimCredentialView>> {
    s.write_as(a, move |tx, ctx, a| {
        scim::revoke_credential(tx, ctx, a, &org, &id)
    })
    .await
    .map(Json)
}

// ---- The route table --------------------------------------------------------------------

fn scim_body<T: ToSchema>() -> Body {
    Body {
        media_type: SCIM_JSON,
        schema: schema_ref::<T>,
    }
}

impl Route {
    /// A SCIM answer of type `T`.
    fn scim_ok<T: ToSchema>(self, status: u16) -> Self {
        let description = if status == 201 { "Created" } else { "OK" };
        self.answer(status, description, vec![scim_body::<T>()])
    }

    /// A SCIM request body of type `T` (`application/scim+json` or `application/json`).
    fn scim_request<T: ToSchema>(mut self, example: serde_json::Value) -> Self {
        self.body = Some(example);
        self.request.push(scim_body::<T>());
        self.request.push(Body {
            media_type: "application/json",
            schema: schema_ref::<T>,
        });
        self.error(&[400, 413, 415])
    }

    /// Listing parameters.
    fn scim_query(mut self) -> Self {
        use utoipa::IntoParams;
        self.query =
            Some(|| ListParams::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query)));
        self.error(&[400])
    }
}

pub(super) fn routes() -> Vec<Route> {
    use Auth::*;
    let user_example = json!({
        "schemas": [crate::service::scim::resource::USER_SCHEMA],
        "userName": "bjensen@example.com",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
        "active": true
    });
    let patch_example = json!({
        "schemas": [crate::service::scim::resource::PATCH_SCHEMA],
        "Operations": [{"op": "replace", "path": "active", "value": false}]
    });
    let mut routes = vec![
        route(Method::POST, "/v1/orgs/{org}/scim-credentials", "Create a SCIM credential (org admin); it acts as you, and the secret is shown once", Token, h!(POST, credentials_create))
            .body::<CreateScimCredential>(json!({"name": "okta"}))
            .ok::<ScimCredentialCreated>(201).cli("scim create"),
        route(Method::GET, "/v1/orgs/{org}/scim-credentials", "SCIM credentials of an organization (org admin)", Token, h!(GET, credentials_list))
            .ok::<ScimCredentialList>(200).cli("scim list"),
        route(Method::POST, "/v1/orgs/{org}/scim-credentials/{id}/revoke", "Revoke a SCIM credential: its next request is refused (org admin)", Token, h!(POST, credentials_revoke))
            .ok::<ScimCredentialView>(200).cli("scim revoke"),
        route(Method::GET, "/scim/v2/{org}/ServiceProviderConfig", "SCIM: what this service provider supports", Public, h!(GET, service_provider_config))
            .scim_ok::<ServiceProviderConfig>(200).infallible(),
        route(Method::GET, "/scim/v2/{org}/ResourceTypes", "SCIM: the resource types (User, Group)", Public, h!(GET, resource_types))
            .scim_ok::<ResourceTypeList>(200).infallible(),
        route(Method::GET, "/scim/v2/{org}/ResourceTypes/{id}", "SCIM: one resource type", Public, h!(GET, resource_type))
            .scim_ok::<ResourceType>(200).infallible().error(&[404]),
        route(Method::GET, "/scim/v2/{org}/Schemas", "SCIM: the schemas of User and Group", Public, h!(GET, schemas))
            .scim_ok::<SchemaList>(200).infallible(),
        route(Method::GET, "/scim/v2/{org}/Schemas/{id}", "SCIM: one schema", Public, h!(GET, schema))
            .scim_ok::<SchemaDoc>(200).infallible().error(&[404]),
        route(Method::GET, "/scim/v2/{org}/Users", "SCIM: users of the organization (filter, startIndex, count)", Scim, h!(GET, users_list))
            .scim_query()
            .scim_ok::<UserListResponse>(200),
        route(Method::POST, "/scim/v2/{org}/Users", "SCIM: provision a user (role user, no password)", Scim, h!(POST, users_create))
            .scim_request::<ScimUserResource>(user_example.clone())
            .scim_ok::<ScimUserResource>(201)
            .error(&[409]),
        route(Method::POST, "/scim/v2/{org}/.search", "SCIM: users and groups of the organization in one listing", Scim, h!(POST, search_all))
            .scim_request::<SearchRequest>(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "displayName eq \"admin\""}))
            .answer(200, "OK", vec![Body { media_type: SCIM_JSON, schema: super::any_object }]),
        route(Method::POST, "/scim/v2/{org}/Users/.search", "SCIM: users of the organization, the listing's parameters in the body", Scim, h!(POST, users_search))
            .scim_request::<SearchRequest>(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName eq \"bjensen@example.com\"", "attributes": ["userName"], "startIndex": 1, "count": 10}))
            .scim_ok::<UserListResponse>(200),
        route(Method::GET, "/scim/v2/{org}/Users/{id}", "SCIM: one user (ETag; If-None-Match; attributes, excludedAttributes)", Scim, h!(GET, users_get))
            .scim_query()
            .scim_ok::<ScimUserResource>(200)
            .answer(304, "Not modified: the user is still at the version in If-None-Match", vec![]),
        route(Method::PUT, "/scim/v2/{org}/Users/{id}", "SCIM: replace a user (If-Match); active=false deprovisions", Scim, h!(PUT, users_replace))
            .scim_request::<ScimUserResource>(user_example)
            .scim_ok::<ScimUserResource>(200)
            .error(&[409, 412]),
        route(Method::PATCH, "/scim/v2/{org}/Users/{id}", "SCIM: change a user (If-Match); active=false deprovisions", Scim, h!(PATCH, users_patch))
            .scim_request::<PatchOp>(patch_example.clone())
            .scim_ok::<ScimUserResource>(200)
            .error(&[409, 412]),
        route(Method::DELETE, "/scim/v2/{org}/Users/{id}", "SCIM: delete a user: every token revoked (If-Match)", Scim, h!(DELETE, users_delete))
            .answer(204, "Deleted", vec![])
            .error(&[409, 412]),
        route(Method::GET, "/scim/v2/{org}/Groups", "SCIM: the groups (one per role)", Scim, h!(GET, groups_list))
            .scim_query()
            .scim_ok::<GroupListResponse>(200),
        route(Method::GET, "/scim/v2/{org}/Groups/{id}", "SCIM: one group (a role) and its members", Scim, h!(GET, groups_get))
            .scim_ok::<GroupResource>(200),
        route(Method::PUT, "/scim/v2/{org}/Groups/{id}", "SCIM: set a role's members", Scim, h!(PUT, groups_replace))
            .scim_request::<GroupResource>(json!({"schemas": [crate::service::scim::resource::GROUP_SCHEMA], "displayName": "admin", "members": [{"value": "usr_0123"}]}))
            .scim_ok::<GroupResource>(200)
            .error(&[409]),
        route(Method::PATCH, "/scim/v2/{org}/Groups/{id}", "SCIM: add or remove a role's members", Scim, h!(PATCH, groups_patch))
            .scim_request::<PatchOp>(json!({"schemas": [crate::service::scim::resource::PATCH_SCHEMA], "Operations": [{"op": "add", "path": "members", "value": [{"value": "usr_0123"}]}]}))
            .scim_ok::<GroupResource>(200)
            .error(&[409]),
    ];
    // The SCIM protocol is the identity provider's, not a person's.
    for r in routes
        .iter_mut()
        .filter(|r| r.path.starts_with("/scim/v2/"))
    {
        r.cli = Some(super::CliCommand::NotForPeople(
            "SCIM 2.0, called by the identity provider with a SCIM credential",
        ));
    }
    routes
}

/// What the rest of the API answers on a SCIM path (no such route, a method not served,
/// a rate limit) becomes a SCIM error with the same status, words and headers.
pub(super) async fn scim_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    #[derive(serde::Deserialize)]
    struct Plain {
        message: String,
    }
    let scim_path = req.uri().path().starts_with("/scim/");
    let resp = next.run(req).await;
    let plain_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    if !scim_path || resp.status().as_u16() < 400 || !plain_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let detail = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => serde_json::from_slice::<Plain>(&bytes)
            .map(|p| p.message)
            .unwrap_or_else(|_| parts.status.to_string()),
        Err(_) => parts.status.to_string(),
    };
    let mut r = scim_error(parts.status.as_u16(), None, detail);
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    r.extensions_mut().extend(parts.extensions);
    r
}
