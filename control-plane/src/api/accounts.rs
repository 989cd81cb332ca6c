//! Routes for people and credentials: signing in and out (the session cookie), one-time
//! links, disabling and deleting users, reset links, edge credentials' list and
//! revocation, and the web page's remembered choices. Also the session half of the
//! `Caller` extractor and the credential admission every authenticated route goes through.

use super::extract::{Caller, ConnectInfoOpt, JsonBody, PeerAddr};
use super::{route, ActingSlot, ApiError, ApiResult, AppState, Auth, Route};
use crate::policy::Actor;
use crate::service::accounts::{self, EdgeList, EdgeView, Prefs};
use crate::service::sessions::{self, Started};
use crate::service::views::{OrgView, UserView};
use crate::service::{authority, input, Ctx, Error};
use axum::extract::{MatchedPath, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// Sign in with a password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub org: String,
    pub username: String,
    pub password: String,
}

/// Use a one-time link (invitation, password reset, bootstrap): set the password and sign in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptLink {
    /// The secret from the link's fragment (`#/invite/<secret>`).
    pub secret: String,
    pub password: String,
}

/// The signed-in session (the cookie carries its secret; this is everything else).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The session's id (named in the audit log).
    pub session: String,
    pub user: UserView,
    pub org: OrgView,
    /// Send this in `X-CSRF-Token` with every state-changing request.
    pub csrf: String,
    pub idle_timeout_secs: i64,
    pub expires_at: String,
}

/// A signed-out session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedOut {
    pub signed_out: bool,
    /// For a session signed in through single sign-on: where to send the browser so that
    /// the identity provider ends its own session too (its `end_session_endpoint`, with
    /// `client_id` and `post_logout_redirect_uri` set to this page). Absent when the
    /// provider publishes no such endpoint or cannot be reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_sign_out_url: Option<String>,
}

macro_rules! h {
    ($m:ident, $f:expr) => {
        on(MethodFilter::$m, $f)
    };
}

/// Why the browser's session routes have no command: the CLI authenticates with a token.
const WEB_SIGN_IN: &str =
    "the web page's sign-in; the command line authenticates with a token (TESSERA_TOKEN)";
/// Why the page's remembered choices have no command.
const WEB_PREFS: &str =
    "the web page's remembered choices (hidden columns), nothing a command uses";

pub(super) fn routes() -> Vec<Route> {
    use Auth::*;
    vec![
        route(
            Method::POST,
            "/v1/session",
            "Sign in with a password (sets the session cookie); throttled: 429 with Retry-After",
            Public,
            h!(POST, sign_in),
        )
        .body::<SignIn>(
            json!({"org": "acme", "username": "bob", "password": "correct horse battery"}),
        )
        .ok::<SessionView>(200)
        // 403 sso_required: the organization signs in with single sign-on.
        .error(&[401, 403, 429])
        .no_cli(WEB_SIGN_IN),
        route(
            Method::GET,
            "/v1/session",
            "The signed-in session and its CSRF token (session cookie)",
            Session,
            h!(GET, session_get),
        )
        .ok::<SessionView>(200)
        .error(&[400])
        .no_cli(WEB_SIGN_IN),
        route(
            Method::DELETE,
            "/v1/session",
            "Sign out: ends the session on the server (and, for a single sign-on session, answers where the browser ends the provider's session too)",
            Session,
            h!(DELETE, sign_out),
        )
        .ok::<SignedOut>(200)
        .error(&[400])
        .no_cli(WEB_SIGN_IN),
        route(
            Method::POST,
            "/v1/links/accept",
            "Use a one-time link: set the password and sign in",
            Public,
            h!(POST, accept_link),
        )
        .body::<AcceptLink>(
            json!({"secret": "<from the link>", "password": "correct horse battery"}),
        )
        .ok::<SessionView>(200)
        // Secrets that name no usable link count against the address's rate.
        .error(&[429])
        .cli("links accept"),
        route(
            Method::POST,
            "/v1/users/{id}/reset-link",
            "Issue a one-time password-reset link (org admin)",
            Token,
            h!(POST, reset_link),
        )
        .ok::<UserView>(200)
        .cli("users reset-link"),
        route(
            Method::POST,
            "/v1/users/{id}/disable",
            "Disable a user: sessions end, enabled tokens suspended (org admin)",
            Token,
            h!(POST, user_disable),
        )
        .ok::<UserView>(200)
        .cli("users disable"),
        route(
            Method::POST,
            "/v1/users/{id}/enable",
            "Enable a disabled user and the tokens disabling suspended (org admin)",
            Token,
            h!(POST, user_enable),
        )
        .ok::<UserView>(200)
        .cli("users enable"),
        route(
            Method::DELETE,
            "/v1/users/{id}",
            "Delete a user: every token revoked (org admin; cannot be undone)",
            Token,
            h!(DELETE, user_delete),
        )
        .ok::<UserView>(200)
        .cli("users delete"),
        route(
            Method::GET,
            "/v1/orgs/{org}/edge-credentials",
            "Edge credentials of an organization (org admin)",
            Token,
            h!(GET, edges_list),
        )
        .ok::<EdgeList>(200)
        .cli("edges list"),
        route(
            Method::POST,
            "/v1/orgs/{org}/edge-credentials/{id}/revoke",
            "Revoke an edge credential: its usage reports are refused at once (org admin)",
            Token,
            h!(POST, edge_revoke),
        )
        .ok::<EdgeView>(200)
        .cli("edges revoke"),
        route(
            Method::GET,
            "/v1/me/prefs",
            "The web page's remembered choices for the caller",
            Token,
            h!(GET, prefs_get),
        )
        .ok::<Prefs>(200)
        .no_cli(WEB_PREFS),
        route(
            Method::PUT,
            "/v1/me/prefs",
            "Remember the web page's choices for the caller",
            Token,
            h!(PUT, prefs_put),
        )
        .body::<Prefs>(json!({"prefs": {"hidden_columns": ["description"]}}))
        .ok::<Prefs>(200)
        .no_cli(WEB_PREFS),
    ]
}

/// The session cookie's secret, when the request has no `Authorization` (a token always
/// wins) and carries our cookie.
fn cookie_secret(headers: &HeaderMap) -> Option<String> {
    if headers.contains_key(header::AUTHORIZATION) {
        return None;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == sessions::COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// The caller a session cookie names (`None` when the request is not a session's). A
/// state-changing method must carry the session's CSRF token. The session's last use is
/// written at most once a minute.
pub(super) async fn session_caller(parts: &Parts, s: &AppState) -> Option<ApiResult<Actor>> {
    let secret = cookie_secret(&parts.headers)?;
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let csrf = parts
        .headers
        .get(sessions::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let r = s
        .read(move |tx, ctx| {
            let check = if safe { None } else { Some(csrf.as_deref()) };
            sessions::authenticate(tx, ctx, &secret, check)
        })
        .await;
    let (actor, touch) = match r {
        Ok(v) => v,
        Err(e) => return Some(Err(e)),
    };
    if touch {
        let a = actor.clone();
        if let Err(e) = s.write(move |tx, ctx| sessions::touch(tx, ctx, &a)).await {
            return Some(Err(e));
        }
    }
    if let Some(slot) = parts.extensions.get::<ActingSlot>() {
        slot.set(&actor.user.id, &actor.credential.label());
    }
    Some(Ok(actor))
}

/// Every authenticated route: the credential must be allowed to call it at all
/// (`service::authority::admit`).
pub(super) fn admitted(parts: &Parts, actor: Actor) -> ApiResult<Actor> {
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str());
    authority::admit(&actor, route)?;
    Ok(actor)
}

pub(super) fn client_ip(peer: Option<String>) -> Option<String> {
    peer.and_then(|p| p.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_string())
}

/// The answer that starts a session: the view and the cookie.
pub(super) fn started(s: &AppState, (secret, view): (String, SessionView)) -> ApiResult<Response> {
    let secure = if s.base_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        sessions::COOKIE,
        secret,
        sessions::ABSOLUTE_SECS
    );
    let mut resp = Json(view).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn session_view(ctx: &Ctx, a: &Actor, csrf: String, created_at: i64) -> SessionView {
    let id = match &a.credential {
        crate::policy::Credential::Session { id } => id.clone(),
        _ => String::new(),
    };
    SessionView {
        session: id,
        user: UserView::new(&a.user),
        org: OrgView::new(ctx, &a.org),
        csrf,
        idle_timeout_secs: sessions::IDLE_SECS,
        expires_at: crate::timefmt::format(created_at + sessions::ABSOLUTE_SECS),
    }
}

/// The cookie's secret and the view of a session just started.
pub(super) fn opened(ctx: &Ctx, st: Started) -> (String, SessionView) {
    let view = session_view(
        ctx,
        &st.actor,
        st.session.csrf.clone(),
        st.session.created_at,
    );
    (st.secret, view)
}

fn check_len(field: &str, v: &str, max: usize) -> ApiResult<()> {
    if v.is_empty() || v.len() > max {
        return Err(ApiError::field(field, format!("1 to {max} bytes")));
    }
    Ok(())
}

async fn sign_in(
    State(s): State<AppState>,
    PeerAddr(peer): PeerAddr,
    JsonBody(req): JsonBody<SignIn>,
) -> ApiResult<Response> {
    // The cheap checks first: sizes, and no control or invisible characters (they would
    // reach the audit log, and a NUL cannot be stored at all).
    input::check_text("org", &req.org, 200, false)?;
    input::check_text("username", &req.username, 200, false)?;
    check_len("password", &req.password, accounts::PASSWORD_MAX)?;
    let ip = client_ip(peer);
    // A delayed attempt is refused on a read, without a write.
    let (org, user, addr) = (req.org.clone(), req.username.clone(), ip.clone());
    let wait = s
        .read(move |tx, ctx| sessions::waiting(tx, ctx, &org, &user, addr.as_deref()))
        .await?;
    if let Some(wait) = wait {
        return Ok(too_many(wait));
    }
    let (org, user, addr) = (req.org.clone(), req.username.clone(), ip.clone());
    // Then the throttle reservation, committed before any password work.
    let found = s
        .write(move |tx, ctx| {
            match sessions::begin_sign_in(tx, ctx, &org, &user, addr.as_deref()) {
                Ok(c) => Ok(Ok(c)),
                Err(Error::Throttled { retry_after }) => Ok(Err(retry_after)),
                Err(e) => Err(e),
            }
        })
        .await?;
    let candidate = match found {
        Ok(c) => c,
        Err(wait) => return Ok(too_many(wait)),
    };
    let password = req.password;
    let (candidate, ok) = s
        .password_work(move || {
            let ok = sessions::password_matches(&candidate, &password);
            (candidate, ok)
        })
        .await?;
    let (org, user) = (req.org, req.username);
    let outcome = s
        .write(move |tx, ctx| {
            let st = sessions::finish_sign_in(tx, ctx, &candidate, &org, &user, ip.as_deref(), ok)?;
            Ok(match st {
                sessions::Finished::Started(st) => Ok(opened(ctx, *st)),
                sessions::Finished::Refused => Err(None),
                sessions::Finished::SsoRequired(why) => Err(Some(why)),
            })
        })
        .await?;
    match outcome {
        Ok(st) => started(&s, st),
        Err(None) => Err(ApiError::unauthorized(sessions::WRONG_CREDENTIALS)),
        Err(Some(why)) => Err(Error::denied(sessions::SSO_REQUIRED, why).into()),
    }
}

/// 429 with `Retry-After`.
fn too_many(wait: i64) -> Response {
    ApiError::retry_after(
        "too_many_requests",
        Some("sign_in_throttled"),
        format!("too many failed sign-ins; try again in {wait} s"),
        u64::try_from(wait).unwrap_or(1),
    )
}

async fn session_get(State(s): State<AppState>, Caller(a): Caller) -> ApiResult<Json<SessionView>> {
    s.read_as(a, move |tx, ctx, a| {
        let csrf = sessions::csrf_of(tx, a)?;
        let created = match &a.credential {
            crate::policy::Credential::Session { id } => {
                tx.session_by_id(id)?.map_or(0, |x| x.created_at)
            }
            _ => 0,
        };
        Ok(session_view(ctx, a, csrf, created))
    })
    .await
    .map(Json)
}

async fn sign_out(State(s): State<AppState>, Caller(a): Caller) -> ApiResult<Response> {
    let provider = s
        .write_as(a, |tx, ctx, a| sessions::sign_out(tx, ctx, a))
        .await?;
    // Discovery is cached; a provider that cannot be reached only costs the redirect.
    let provider_sign_out_url = match provider {
        Some(p) => {
            let back = format!("{}/", s.base_url());
            super::sso::rp()
                .end_session_url(&p.issuer, &p.client_id, &back)
                .await
        }
        None => None,
    };
    let mut resp = Json(SignedOut {
        signed_out: true,
        provider_sign_out_url,
    })
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tessera_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(resp)
}

async fn accept_link(
    State(s): State<AppState>,
    ConnectInfoOpt(peer): ConnectInfoOpt,
    JsonBody(req): JsonBody<AcceptLink>,
) -> ApiResult<Response> {
    check_len("secret", &req.secret, 200)?;
    check_len("password", &req.password, accounts::PASSWORD_MAX)?;
    // The link first (a read): an unknown, used or expired secret is refused before any
    // password work, and counts against the address's rate of unauthenticated requests.
    let secret = req.secret.clone();
    let looked = s
        .read(move |tx, ctx| accounts::usable_link(tx, ctx, &secret))
        .await;
    let (_, words) = match looked {
        Ok(found) => found,
        Err(e) => {
            if let Some(limited) = s.address_limit().and_then(|l| l.check(peer)) {
                return Ok(limited);
            }
            return Err(e);
        }
    };
    let own: Vec<&str> = words.iter().map(String::as_str).collect();
    accounts::check_password("password", &req.password, &own)?;
    let password = req.password;
    let hash = s
        .password_work(move || accounts::hash_password(&password))
        .await??;
    let secret = req.secret;
    let st = s
        .write(move |tx, ctx| {
            let user = accounts::accept_link(tx, ctx, &secret, hash)?;
            let st = sessions::start_session(tx, ctx, &user, None, json!({"link": true}))?;
            Ok(opened(ctx, st))
        })
        .await?;
    started(&s, st)
}

async fn reset_link(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    s.write_as(a, move |tx, ctx, a| accounts::reset_link(tx, ctx, a, &id))
        .await
        .map(Json)
}

async fn user_disable(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    s.write_as(a, move |tx, ctx, a| accounts::disable_user(tx, ctx, a, &id))
        .await
        .map(Json)
}

async fn user_enable(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    s.write_as(a, move |tx, ctx, a| accounts::enable_user(tx, ctx, a, &id))
        .await
        .map(Json)
}

async fn user_delete(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    s.write_as(a, move |tx, ctx, a| accounts::delete_user(tx, ctx, a, &id))
        .await
        .map(Json)
}

async fn edges_list(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<EdgeList>> {
    s.read_as(a, move |tx, _, a| accounts::list_edges(tx, a, &org))
        .await
        .map(Json)
}

async fn edge_revoke(
    State(s): State<AppState>,
    Caller(a): Caller,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<Json<EdgeView>> {
    s.write_as(a, move |tx, ctx, a| {
        accounts::revoke_edge(tx, ctx, a, &org, &id)
    })
    .await
    .map(Json)
}

async fn prefs_get(State(s): State<AppState>, Caller(a): Caller) -> ApiResult<Json<Prefs>> {
    s.read_as(a, |tx, _, a| accounts::get_prefs(tx, a))
        .await
        .map(Json)
}

async fn prefs_put(
    State(s): State<AppState>,
    Caller(a): Caller,
    JsonBody(p): JsonBody<Prefs>,
) -> ApiResult<Json<Prefs>> {
    s.write_as(a, move |tx, _, a| accounts::put_prefs(tx, a, p))
        .await
        .map(Json)
}
