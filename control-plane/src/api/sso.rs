//! Routes of single sign-on (OpenID Connect): the organization's connection (its own
//! admins: show, set, delete), and the browser's sign-in through the identity provider —
//! `/v1/sso/start` (the email's domain picks the connection; answers the provider's
//! authorization URL and sets a cookie binding the sign-in to this browser) and
//! `/v1/sso/callback` (where the provider sends the browser back: the code exchanged, the
//! ID token checked, a session started exactly as a password sign-in starts one).
//!
//! Both public routes are under the per-address rate limit, and each does its cheap
//! checks (sizes, the domain's lookup, the stored sign-in and its browser cookie) before
//! any network call or signature check.

use super::extract::{Caller, JsonBody, PeerAddr, QueryParams};
use super::{route, ApiError, ApiResult, AppState, Auth, Route};
use crate::oidc::RelyingParty;
use crate::service::sessions;
use crate::service::sso::{
    self, DomainClaim, DomainClaimList, DomainDecision, Refusal, SetSso, SsoView, BROWSER_COOKIE,
    CALLBACK_PATH,
};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::OnceLock;
use utoipa::{IntoParams, ToSchema};

macro_rules! h {
    ($m:ident, $f:expr) => {
        on(MethodFilter::$m, $f)
    };
}

/// Why the sign-in routes have no command: the command line authenticates with a token.
const WEB_SSO: &str = "the web page's sign-in through the organization's identity provider; the command line authenticates with a token (TESSERA_TOKEN)";

/// Where the page shows a refused sign-in (the reason is one of the stable codes the
/// page has words for).
const FAILED_PAGE: &str = "/#/sso-failed/";

#[rustfmt::skip]
pub(super) fn routes() -> Vec<Route> {
    use Auth::*;
    vec![
        route(Method::GET, "/v1/orgs/{org}/sso", "The organization's single sign-on (OpenID Connect) connection, never its client secret (its own admins)", Token, h!(GET, show))
            .ok::<SsoView>(200).cli("sso show"),
        route(Method::PUT, "/v1/orgs/{org}/sso", "Create or change the organization's single sign-on connection; the client secret is stored sealed (its own admins)", Token, h!(PUT, set))
            .body::<SetSso>(json!({"issuer": "https://login.example.com", "client_id": "tessera", "client_secret": "<from the provider>", "domains": ["example.com"], "require_sso": false, "default_role": "user", "group_roles": [{"group": "tessera-admins", "role": "admin"}]}))
            .ok::<SsoView>(200)
            // A domain already routes to another organization's connection.
            .error(&[409]).cli("sso set"),
        route(Method::DELETE, "/v1/orgs/{org}/sso", "Delete the organization's single sign-on connection: its people sign in with passwords again (its own admins)", Token, h!(DELETE, delete))
            .ok::<SsoView>(200).cli("sso delete"),
        route(Method::GET, "/v1/sso/domains", "Every organization's claims of email domains for single sign-on: a claim routes sign-ins only once approved (the operator: root admins)", Token, h!(GET, domains))
            .query::<DomainsParams>()
            .ok::<DomainClaimList>(200).cli("sso domains"),
        route(Method::POST, "/v1/sso/domains/{domain}/approve", "Approve an organization's claim of an email domain: people with such addresses sign in through its identity provider (the operator: root admins)", Token, h!(POST, approve))
            .body::<DomainDecision>(json!({"org": "acme"}))
            .ok::<DomainClaim>(200)
            // Another organization holds the domain approved.
            .error(&[409]).cli("sso approve"),
        route(Method::POST, "/v1/sso/domains/{domain}/withdraw", "Withdraw the approval of an organization's claim of an email domain: the claim is pending again and routes no sign-in (the operator: root admins)", Token, h!(POST, withdraw))
            .body::<DomainDecision>(json!({"org": "acme"}))
            .ok::<DomainClaim>(200).cli("sso withdraw"),
        route(Method::GET, "/v1/sso/start", "Start signing in through the identity provider of the email's domain: answers the provider's authorization URL and sets a 10-minute cookie binding the sign-in to this browser", Public, h!(GET, start))
            .query::<StartParams>()
            .ok::<SsoStarted>(200)
            // No organization signs in the email's domain (403 sso_not_configured); the
            // identity provider cannot be reached (502).
            .error(&[403, 502])
            .limited().no_cli(WEB_SSO),
        route(Method::GET, "/v1/sso/callback", "Where the identity provider sends the browser back: the code is exchanged, the ID token checked, and a session started (303 to the page; a refusal goes to the page with its reason)", Public, h!(GET, callback))
            .query::<CallbackParams>()
            .answer(303, "To the web page: signed in (the session cookie is set), or /#/sso-failed/<reason>", vec![])
            .limited().no_cli(WEB_SSO),
    ]
}

/// The one relying party of this process (HTTP client and discovery cache).
pub(super) fn rp() -> &'static RelyingParty {
    static RP: OnceLock<RelyingParty> = OnceLock::new();
    RP.get_or_init(RelyingParty::new)
}

/// Which claims to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DomainsParams {
    /// Only the claims waiting for approval.
    #[serde(default)]
    pending: bool,
}

async fn domains(
    State(s): State<AppState>,
    Caller(a): Caller,
    QueryParams(p): QueryParams<DomainsParams>,
) -> ApiResult<Json<DomainClaimList>> {
    s.read_as(a, move |tx, ctx, a| {
        sso::list_domains(tx, ctx, a, p.pending)
    })
    .await
    .map(Json)
}

async fn approve(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(domain): Path<String>,
    JsonBody(req): JsonBody<DomainDecision>,
) -> ApiResult<Json<DomainClaim>> {
    s.write_as(a, move |tx, ctx, a| {
        sso::approve_domain(tx, ctx, a, &domain, req)
    })
    .await
    .map(Json)
}

async fn withdraw(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(domain): Path<String>,
    JsonBody(req): JsonBody<DomainDecision>,
) -> ApiResult<Json<DomainClaim>> {
    s.write_as(a, move |tx, ctx, a| {
        sso::withdraw_domain(tx, ctx, a, &domain, req)
    })
    .await
    .map(Json)
}

/// The sign-in's start.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StartParams {
    /// Your work email address; its domain picks the organization's identity provider.
    email: String,
}

/// Where to send the browser.
#[derive(Debug, Serialize, ToSchema)]
pub struct SsoStarted {
    /// The identity provider's authorization URL (with state, nonce and a PKCE challenge).
    pub authorize_url: String,
    /// The organization the email's domain belongs to.
    pub org: String,
    pub org_name: String,
    /// Seconds the sign-in may take.
    pub expires_in: i64,
}

/// What the identity provider sends back (RFC 6749 §4.1.2; extra members are ignored).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackParams {
    /// The authorization code.
    #[serde(default)]
    code: Option<String>,
    /// The state sent with the authorization request.
    #[serde(default)]
    state: Option<String>,
    /// The provider's error code, when it refused (e.g. `access_denied`).
    #[serde(default)]
    error: Option<String>,
    /// The issuer of the answer (RFC 9207); when sent, it must be the connection's.
    #[serde(default)]
    iss: Option<String>,
}

async fn show(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<SsoView>> {
    s.read_as(a, move |tx, ctx, a| sso::get(tx, ctx, a, &org))
        .await
        .map(Json)
}

async fn set(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<SetSso>,
) -> ApiResult<Json<SsoView>> {
    s.write_as(a, move |tx, ctx, a| sso::set(tx, ctx, a, &org, req))
        .await
        .map(Json)
}

async fn delete(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<SsoView>> {
    s.write_as(a, move |tx, ctx, a| sso::delete(tx, ctx, a, &org))
        .await
        .map(Json)
}

fn secure(s: &AppState) -> &'static str {
    if s.base_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

fn refused(status: StatusCode, r: Refusal) -> ApiError {
    let mut e = ApiError::new(
        status,
        if status == StatusCode::BAD_GATEWAY {
            "unavailable"
        } else {
            "forbidden"
        },
        r.message,
    );
    e.reason = Some(r.reason);
    e
}

async fn start(
    State(s): State<AppState>,
    QueryParams(p): QueryParams<StartParams>,
) -> ApiResult<Response> {
    // Cheap first: the address's form and its domain's connection (a read), then the
    // provider (discovery, cached), then one write.
    let email = p.email.trim().to_string();
    let lookup = email.clone();
    let route = s
        .read(move |tx, ctx| sso::route_email(tx, ctx, &lookup))
        .await?;
    let redirect_uri = format!("{}{CALLBACK_PATH}", s.base_url());
    let begun = rp()
        .begin(
            &route.issuer,
            &route.client_id,
            &route.client_secret,
            &redirect_uri,
            &email,
        )
        .await
        .map_err(|r| refused(StatusCode::BAD_GATEWAY, r))?;
    let browser = crate::crypto::hex(&crate::crypto::random_bytes::<32>()?);
    let (org_id, state, nonce, verifier, b) = (
        route.org_id.clone(),
        begun.state.clone(),
        begun.nonce.clone(),
        begun.verifier.clone(),
        browser.clone(),
    );
    s.write(move |tx, ctx| sso::record_login(tx, ctx, &org_id, &state, &nonce, &verifier, &b))
        .await?;
    let mut resp = Json(SsoStarted {
        authorize_url: begun.authorize_url,
        org: route.org_id,
        org_name: route.org_name,
        expires_in: sso::LOGIN_TTL_SECS,
    })
    .into_response();
    // Lax, not Strict: the provider's redirect back is a cross-site navigation.
    let cookie = format!(
        "{BROWSER_COOKIE}={browser}; Path={CALLBACK_PATH}; HttpOnly; SameSite=Lax; Max-Age={}{}",
        sso::LOGIN_TTL_SECS,
        secure(&s)
    );
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(resp)
}

/// The browser's binding cookie.
fn browser_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == BROWSER_COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A refused sign-in: to the page, which says why in words; the binding cookie cleared.
fn failed(s: &AppState, reason: &'static str) -> Response {
    let mut resp = see_other(&format!("{FAILED_PAGE}{reason}"));
    let clear = format!(
        "{BROWSER_COOKIE}=; Path={CALLBACK_PATH}; HttpOnly; SameSite=Lax; Max-Age=0{}",
        secure(s)
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp.extensions_mut()
        .insert(super::error::RefusalReason(Some(reason)));
    resp
}

async fn callback(
    State(s): State<AppState>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    QueryParams(p): QueryParams<CallbackParams>,
) -> Response {
    match finish(&s, peer, &headers, p).await {
        Ok(resp) => resp,
        Err(reason) => failed(&s, reason),
    }
}

fn client_ip(peer: Option<String>) -> Option<String> {
    peer.and_then(|p| p.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_string())
}

async fn finish(
    s: &AppState,
    peer: Option<String>,
    headers: &HeaderMap,
    p: CallbackParams,
) -> Result<Response, &'static str> {
    if let Some(err) = &p.error {
        tracing::info!(error = %err.escape_debug(), "the identity provider refused the sign-in");
        return Err("sso_provider_refused");
    }
    let small = |v: &Option<String>| {
        v.as_deref()
            .filter(|x| !x.is_empty() && x.len() <= 2048)
            .map(str::to_string)
    };
    let (Some(code), Some(state)) = (small(&p.code), small(&p.state)) else {
        return Err("sso_state_invalid");
    };
    let browser = browser_secret(headers);
    // The stored sign-in, taken (single use) before any network call.
    let taken = s
        .write(move |tx, ctx| sso::take_login(tx, ctx, &state, browser.as_deref()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e.message, "single sign-on: taking the sign-in failed");
            "sso_unavailable"
        })?;
    let resumed = taken.map_err(|r| {
        tracing::info!(reason = r.reason, "single sign-on refused: {}", r.message);
        r.reason
    })?;
    // RFC 9207: an answer naming another issuer is a mix-up; refused before the exchange.
    if p.iss
        .as_deref()
        .is_some_and(|i| i.trim_end_matches('/') != resumed.route.issuer)
    {
        return Err("sso_issuer_mismatch");
    }
    let redirect_uri = format!("{}{CALLBACK_PATH}", s.base_url());
    let now = s
        .read(|_, ctx| Ok(ctx.now))
        .await
        .map_err(|_| "sso_unavailable")?;
    let r = &resumed.route;
    let who = rp()
        .finish(
            &r.issuer,
            &r.client_id,
            &r.client_secret,
            &redirect_uri,
            &code,
            &resumed.verifier,
            &resumed.nonce,
            now,
        )
        .await;
    let ip = client_ip(peer);
    let who = match who {
        Ok(w) => w,
        Err(refusal) => {
            // In the org's audit log too, not only the service log: an admin sees why
            // their people's sign-ins fail (wrong audience, clock, keys).
            let (org_id, issuer, ip) = (r.org_id.clone(), r.issuer.clone(), ip.clone());
            let reason = refusal.reason;
            let logged = s
                .write(move |tx, ctx| {
                    sso::refused_at_provider(tx, ctx, &org_id, &issuer, ip.as_deref(), reason)
                })
                .await;
            if let Err(e) = logged {
                tracing::error!(error = %e.message, "single sign-on: auditing a refusal failed");
            }
            tracing::info!(reason, "single sign-on refused: {}", refusal.message);
            return Err(reason);
        }
    };
    let org_id = r.org_id.clone();
    let outcome = s
        .write(move |tx, ctx| {
            Ok(sso::complete(tx, ctx, &org_id, &who, ip.as_deref())?.map(|st| st.secret))
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e.message, "single sign-on: completing the sign-in failed");
            "sso_unavailable"
        })?;
    let secret = outcome.map_err(|r| {
        tracing::info!(reason = r.reason, "single sign-on refused: {}", r.message);
        r.reason
    })?;
    let mut resp = see_other("/");
    // The same session cookie as a password sign-in (`accounts::started`).
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        sessions::COOKIE,
        secret,
        sessions::ABSOLUTE_SECS,
        secure(s)
    );
    let clear = format!(
        "{BROWSER_COOKIE}=; Path={CALLBACK_PATH}; HttpOnly; SameSite=Lax; Max-Age=0{}",
        secure(s)
    );
    for c in [cookie, clear] {
        let v = HeaderValue::from_str(&c).map_err(|_| "sso_unavailable")?;
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}
