//! Routes of per-token rate limits and quotas (issue 25): an organization's defaults and
//! ceiling, and a token's limits as the edges enforce them. A token's own limits are set
//! with the token (`POST /v1/tokens`, `PATCH /v1/tokens/{id}`, member `limits`).

use super::extract::{Caller, JsonBody};
use super::{route, ApiResult, AppState, Auth, Route};
use crate::service::limits::{self, OrgLimitsView, SetOrgLimits, TokenLimitsView};
use axum::extract::{Path, State};
use axum::http::Method;
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
        route(Method::GET, "/v1/orgs/{org}/rate-limits", "The organization's default rate limits and quotas, and their ceiling (org admin)", Token, h!(GET, org_get))
            .ok::<OrgLimitsView>(200).cli("orgs rate-limits"),
        route(Method::PUT, "/v1/orgs/{org}/rate-limits", "Set the organization's default rate limits and quotas and their ceiling; an absent member is kept, {} clears (org admin)", Token, h!(PUT, org_put))
            .body::<SetOrgLimits>(json!({"default": {"per_second": 10}, "ceiling": {"per_second": 100, "per_day": 100_000}}))
            .ok::<OrgLimitsView>(200).cli("orgs rate-limits"),
        route(Method::GET, "/v1/tokens/{id}/rate-limits", "A token's rate limits and quotas: its own, its organization's, and what the edges enforce", Token, h!(GET, token_get))
            .ok::<TokenLimitsView>(200).cli("tokens rate-limits"),
    ]
}

async fn org_get(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<OrgLimitsView>> {
    s.read_as(a, move |tx, _, a| limits::org_view(tx, a, &org))
        .await
        .map(Json)
}

async fn org_put(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<SetOrgLimits>,
) -> ApiResult<Json<OrgLimitsView>> {
    s.write_as(a, move |tx, ctx, a| limits::set_org(tx, ctx, a, &org, req))
        .await
        .map(Json)
}

async fn token_get(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenLimitsView>> {
    s.read_as(a, move |tx, _, a| limits::token_view(tx, a, &id))
        .await
        .map(Json)
}
