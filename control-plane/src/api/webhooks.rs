//! Routes of an organization's webhooks (org admins): endpoints, the delivery log, resend;
//! and the delivery worker `tessera serve` runs ([`run_worker`]), the only code that
//! sends them (see `service::webhooks` for the outbox and its guarantees).

use super::extract::{Caller, JsonBody, QueryParams};
use super::{route, ApiResult, AppState, Auth, Route};
use crate::service::input::{Page, PageParams};
use crate::service::webhooks::{
    self, CreateWebhook, Delivery, DeliveryList, DeliveryView, WebhookCreated, WebhookList,
    WebhookView,
};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{on, MethodFilter};
use axum::Json;
use serde_json::json;
use std::time::Duration;

macro_rules! h {
    ($m:ident, $f:expr) => {
        on(MethodFilter::$m, $f)
    };
}

#[rustfmt::skip]
pub(super) fn routes() -> Vec<Route> {
    use Auth::*;
    vec![
        route(Method::GET, "/v1/orgs/{org}/webhooks", "The organization's webhook endpoints (org admin)", Token, h!(GET, list))
            .ok::<WebhookList>(200).cli("webhooks list"),
        route(Method::POST, "/v1/orgs/{org}/webhooks", "Add a webhook endpoint (org admin); its signing secret (Standard Webhooks) is shown once", Token, h!(POST, create))
            .body::<CreateWebhook>(json!({"url": "https://hooks.example.com/tessera", "events": ["token.revoked", "token.exposed"], "description": "security team"}))
            .ok::<WebhookCreated>(201)
            // Too many endpoints.
            .error(&[409]).cli("webhooks create"),
        route(Method::DELETE, "/v1/orgs/{org}/webhooks/{id}", "Delete a webhook endpoint (org admin): nothing more is sent to it", Token, h!(DELETE, delete))
            .ok::<WebhookView>(200).cli("webhooks delete"),
        route(Method::GET, "/v1/orgs/{org}/webhooks/{id}/deliveries", "The delivery log of an endpoint, newest first (org admin)", Token, h!(GET, deliveries))
            .query::<PageParams>()
            .ok::<DeliveryList>(200).cli("webhooks deliveries"),
        route(Method::POST, "/v1/orgs/{org}/webhooks/{id}/deliveries/{message}/resend", "Send a message again now, with the same webhook-id (org admin)", Token, h!(POST, resend))
            .ok::<DeliveryView>(200).cli("webhooks resend"),
    ]
}

async fn list(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<WebhookList>> {
    s.read_as(a, move |tx, _, a| webhooks::list(tx, a, &org))
        .await
        .map(Json)
}

async fn create(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookCreated>)> {
    s.write_as(a, move |tx, ctx, a| {
        webhooks::create(tx, ctx, a, &org, req.clone())
    })
    .await
    .map(|v| (StatusCode::CREATED, Json(v)))
}

async fn delete(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<Json<WebhookView>> {
    s.write_as(a, move |tx, ctx, a| webhooks::delete(tx, ctx, a, &org, &id))
        .await
        .map(Json)
}

async fn deliveries(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path((org, id)): Path<(String, String)>,
    QueryParams(p): QueryParams<PageParams>,
) -> ApiResult<Json<DeliveryList>> {
    s.read_as(a, move |tx, _, a| {
        let page = Page::parse(p.page, p.per_page, 50, 500)?;
        webhooks::deliveries(tx, a, &org, &id, page)
    })
    .await
    .map(Json)
}

async fn resend(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path((org, id, message)): Path<(String, String, String)>,
) -> ApiResult<Json<DeliveryView>> {
    s.write_as(a, move |tx, ctx, a| {
        webhooks::resend(tx, ctx, a, &org, &id, &message)
    })
    .await
    .map(Json)
}

/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The delivery worker: every `every`, a read looks for due messages; when there are, a
/// write claims them, they are POSTed concurrently (signed, [`DELIVERY_TIMEOUT`] each, no
/// redirects followed), and each outcome is written back. Runs until the process ends;
/// a message claimed by a process that dies is taken again once its claim lapses.
pub async fn run_worker(state: AppState, every: Duration) {
    // reqwest uses the process's rustls provider (ring), as the CLI's client does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DELIVERY_TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: no HTTP client; nothing will be delivered");
            return;
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        match state.read(webhooks::any_due).await {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::error!(error = %e.message, "webhooks: reading the outbox failed");
                continue;
            }
        }
        let claimed = match state.write(webhooks::claim).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e.message, "webhooks: claiming messages failed");
                continue;
            }
        };
        let mut sends = tokio::task::JoinSet::new();
        for d in claimed {
            let http = http.clone();
            sends.spawn(async move {
                let (status, error) = send(&http, &d).await;
                (d.id, status, error)
            });
        }
        while let Some(done) = sends.join_next().await {
            let Ok((id, status, error)) = done else {
                continue;
            };
            match (status, &error) {
                (Some(s), _) if (200..300).contains(&s) => {
                    tracing::info!(message = %id, status = s, "webhook delivered")
                }
                _ => {
                    tracing::warn!(message = %id, ?status, error = ?error, "webhook not delivered")
                }
            }
            let r = state
                .write(move |tx, ctx| webhooks::record(tx, ctx, &id, status, error.clone()))
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e.message, "webhooks: recording an attempt failed");
            }
        }
    }
}

/// One POST: the HTTP status, or why there was none.
async fn send(http: &reqwest::Client, d: &Delivery) -> (Option<u16>, Option<String>) {
    let ts = crate::timefmt::now();
    let signature = webhooks::signature(&d.key, &d.id, ts, &d.payload);
    let r = http
        .post(&d.url)
        .header("content-type", "application/json")
        .header("user-agent", "tessera-webhooks")
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(d.payload.clone())
        .send()
        .await;
    match r {
        Ok(resp) => (Some(resp.status().as_u16()), None),
        Err(e) => (None, Some(e.to_string())),
    }
}
