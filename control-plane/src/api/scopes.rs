//! Routes of the scope catalogue: an organization's scopes and their grants to roles and
//! users (org admins), and the scopes a user's tokens may carry (the web page's picker).

use super::extract::{Caller, JsonBody};
use super::{route, ApiResult, AppState, Auth, Route};
use crate::service::scopes::{
    self, CreateScope, GrantedScopes, Grantee, ScopeList, ScopeView, UpdateScope,
};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{on, MethodFilter};
use axum::Json;
use serde_json::json;

macro_rules! h {
    ($m:ident, $f:expr) => {
        on(MethodFilter::$m, $f)
    };
}

#[rustfmt::skip]
pub(super) fn routes() -> Vec<Route> {
    use Auth::*;
    vec![
        route(Method::GET, "/v1/orgs/{org}/scopes", "The organization's scope catalogue with its grants (org admin)", Token, h!(GET, list))
            .ok::<ScopeList>(200).cli("scopes list"),
        route(Method::POST, "/v1/orgs/{org}/scopes", "Add a scope to the catalogue (org admin)", Token, h!(POST, create))
            .body::<CreateScope>(json!({"name": "orders:read", "description": "Read orders"}))
            .ok::<ScopeView>(201)
            // The name is already in the catalogue.
            .error(&[409]).cli("scopes create"),
        route(Method::PATCH, "/v1/orgs/{org}/scopes/{name}", "Change a scope's description (org admin)", Token, h!(PATCH, update))
            .body::<UpdateScope>(json!({"description": "Read orders and invoices"}))
            .ok::<ScopeView>(200).cli("scopes update"),
        route(Method::DELETE, "/v1/orgs/{org}/scopes/{name}", "Delete a scope and its grants: live tokens lose it at every edge (org admin; not tessera:manage)", Token, h!(DELETE, delete))
            .ok::<ScopeView>(200)
            // The built-in scope cannot be deleted.
            .error(&[409]).cli("scopes delete"),
        route(Method::POST, "/v1/orgs/{org}/scopes/{name}/grant", "Grant a scope to a role or a user (org admin)", Token, h!(POST, grant))
            .body::<Grantee>(json!({"role": "user"}))
            .ok::<ScopeView>(200).cli("scopes grant"),
        route(Method::POST, "/v1/orgs/{org}/scopes/{name}/withdraw", "Withdraw a scope from a role or a user: their live tokens lose it at every edge (org admin)", Token, h!(POST, withdraw))
            .body::<Grantee>(json!({"user": "bob"}))
            .ok::<ScopeView>(200)
            // The scope was not granted to that grantee.
            .error(&[409]).cli("scopes withdraw"),
        route(Method::GET, "/v1/me/scopes", "The scopes the caller's tokens may carry", Token, h!(GET, mine))
            .ok::<GrantedScopes>(200).cli("scopes granted"),
        route(Method::GET, "/v1/users/{id}/scopes", "The scopes a user's tokens may carry (self or org admin)", Token, h!(GET, of_user))
            .ok::<GrantedScopes>(200).cli("scopes granted"),
    ]
}

async fn list(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<ScopeList>> {
    s.read_as(a, move |tx, _, a| scopes::list(tx, a, &org))
        .await
        .map(Json)
}

async fn create(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<CreateScope>,
) -> ApiResult<(StatusCode, Json<ScopeView>)> {
    s.write_as(a, move |tx, ctx, a| scopes::create(tx, ctx, a, &org, req))
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

async fn update(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path((org, name)): Path<(String, String)>,
    JsonBody(req): JsonBody<UpdateScope>,
) -> ApiResult<Json<ScopeView>> {
    s.write_as(a, move |tx, ctx, a| {
        scopes::update(tx, ctx, a, &org, &name, req)
    })
    .await
    .map(Json)
}

async fn delete(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path((org, name)): Path<(String, String)>,
) -> ApiResult<Json<ScopeView>> {
    s.write_as(a, move |tx, ctx, a| scopes::delete(tx, ctx, a, &org, &name))
        .await
        .map(Json)
}

async fn grant(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path((org, name)): Path<(String, String)>,
    JsonBody(req): JsonBody<Grantee>,
) -> ApiResult<Json<ScopeView>> {
    s.write_as(a, move |tx, ctx, a| {
        scopes::grant(tx, ctx, a, &org, &name, req)
    })
    .await
    .map(Json)
}

async fn withdraw(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path((org, name)): Path<(String, String)>,
    JsonBody(req): JsonBody<Grantee>,
) -> ApiResult<Json<ScopeView>> {
    s.write_as(a, move |tx, ctx, a| {
        scopes::withdraw(tx, ctx, a, &org, &name, req)
    })
    .await
    .map(Json)
}

async fn mine(State(s): State<AppState>, Caller(a): Caller) -> ApiResult<Json<GrantedScopes>> {
    s.read_as(a, |tx, _, a| scopes::granted(tx, a, None))
        .await
        .map(Json)
}

async fn of_user(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<GrantedScopes>> {
    s.read_as(a, move |tx, _, a| scopes::granted(tx, a, Some(&id)))
        .await
        .map(Json)
}
