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
///
/// `destinations` says where a webhook may be delivered: with [`Destinations::Public`] (the
/// default of `tessera serve`) a URL whose host is, or resolves only to, a loopback,
/// private, link-local or other non-public address is refused at delivery, so an org admin
/// cannot make the control plane POST into the operator's own network.
pub async fn run_worker(state: AppState, every: Duration, destinations: Destinations) {
    // reqwest uses the process's rustls provider (ring), as the CLI's client does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DELIVERY_TIMEOUT);
    if destinations == Destinations::Public {
        // Names are resolved here and only public addresses are connected to (a name that
        // later resolves elsewhere cannot slip past a check made at creation).
        builder = builder.dns_resolver(std::sync::Arc::new(PublicOnly));
    }
    let http = match builder.build() {
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
                let (status, error) = match refused_destination(&d.url, destinations) {
                    Some(why) => (None, Some(why)),
                    None => send(&http, &d).await,
                };
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
        Err(e) => (None, Some(in_words(&e))),
    }
}

/// Why a POST got no answer, for the delivery log, in an operator's words: "could not
/// connect to host:port: connection refused", "no answer within 10 s", with the deepest
/// cause (the OS's or our resolver's "resolves only to …") rather than reqwest's layers.
fn in_words(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(c) = root.source() {
        root = c;
    }
    let mut why = root.to_string();
    if let Some(i) = why.find(" (os error") {
        why.truncate(i);
    }
    let why = why.to_lowercase();
    let place = e
        .url()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_else(|| "the endpoint".into());
    if e.is_timeout() {
        format!(
            "no answer from {place} within {} s",
            DELIVERY_TIMEOUT.as_secs()
        )
    } else if e.is_connect() {
        format!("could not connect to {place}: {why}")
    } else {
        format!("the request to {place} failed: {why}")
    }
}

/// Where webhooks may be delivered (`tessera serve --webhook-private-destinations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destinations {
    /// Only public internet addresses (the default).
    Public,
    /// Any address, loopback and private networks included: on-premises receivers, tests.
    Any,
}

/// Why a delivery to `url` is refused before any connection: an IP-literal host that is
/// not public (names are checked by [`PublicOnly`] as they are resolved).
fn refused_destination(url: &str, destinations: Destinations) -> Option<String> {
    if destinations == Destinations::Any {
        return None;
    }
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    // An IPv6 literal comes bracketed; a name does not parse as an address.
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    (!is_public(ip)).then(|| not_public_message(&ip.to_string()))
}

fn not_public_message(what: &str) -> String {
    format!(
        "{what} is not a public internet address (loopback, private, link-local or reserved); \
         the operator allows such receivers with `tessera serve --webhook-private-destinations`"
    )
}

/// A resolver that keeps only public addresses, for [`Destinations::Public`].
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> =
                all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(not_public_message(&format!("{host} resolves only to what")).into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether `ip` is a public internet address: not loopback, unspecified, private
/// (RFC 1918, unique local), shared (RFC 6598), link-local, multicast, broadcast,
/// documentation or otherwise reserved. Hand-written because std's `IpAddr::is_global` is
/// still unstable and these few ranges do not justify a crate.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(a) => {
            let [o0, o1, ..] = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_documentation()
                || a.is_multicast()
                || o0 == 0
                || o0 >= 240
                || (o0 == 100 && (64..128).contains(&o1))
                || (o0 == 192 && o1 == 0 && a.octets()[2] == 0)
                || (o0 == 198 && (18..20).contains(&o1)))
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x0064 && s[1] == 0xff9b)
                || s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_private_ip_literal_is_refused_unless_allowed() {
        let why = refused_destination("http://169.254.169.254/latest", Destinations::Public);
        assert!(why.is_some_and(|w| w.contains("--webhook-private-destinations")));
        assert!(refused_destination("http://[::1]:8080/", Destinations::Public).is_some());
        assert!(refused_destination("http://127.0.0.1:9/", Destinations::Any).is_none());
        assert!(refused_destination("https://hooks.example.com/x", Destinations::Public).is_none());
    }
}
