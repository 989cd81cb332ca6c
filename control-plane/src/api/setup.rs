//! First run in the browser (`service::setup`): whether the database still needs its first
//! organization (the sign-in page asks), and the setup link's form, which creates the
//! first organization and its admin and signs the admin in.

use super::accounts::{client_ip, opened, started, SessionView};
use super::extract::{JsonBody, PeerAddr};
use super::{route, ApiResult, AppState, Auth, Route};
use crate::service::setup::{self, Setup, SetupState};
use crate::service::{accounts, sessions};
use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use axum::routing::{on, MethodFilter};
use axum::Json;
use serde_json::json;

macro_rules! h {
    ($m:ident, $f:expr) => {
        on(MethodFilter::$m, $f)
    };
}

/// Why the setup routes have no command: the operator has `tessera admin bootstrap`.
const WEB_SETUP: &str = "the web page's first-run setup; on the command line `tessera admin bootstrap` creates the first organization and admin with the database";

pub(super) fn routes() -> Vec<Route> {
    use Auth::*;
    vec![
        route(
            Method::GET,
            "/v1/setup",
            "Whether this Tessera still needs its first organization (the sign-in page asks)",
            Public,
            h!(GET, get_state),
        )
        .ok::<SetupState>(200)
        // One small read, as cheap as the session's 401: not under the rate limit, so the
        // sign-in page never spends an address's budget of exchanges.
        .no_cli(WEB_SETUP),
        route(
            Method::POST,
            "/v1/setup",
            "First run: create the first organization and its admin with the one-time setup link `tessera serve` prints on an empty database, and sign the admin in (rate-limited per address; refused once an organization exists)",
            Public,
            h!(POST, complete),
        )
        .body::<Setup>(json!({
            "secret": "<from the setup link>", "org": "acme", "org_name": "Acme Inc.",
            "username": "alice", "email": "alice@example.com", "password": "correct horse battery"
        }))
        .ok::<SessionView>(200)
        // An organization exists already.
        .error(&[409])
        .limited()
        .no_cli(WEB_SETUP),
    ]
}

async fn get_state(State(s): State<AppState>) -> ApiResult<Json<SetupState>> {
    s.read(|tx, _| setup::state(tx)).await.map(Json)
}

/// Under the per-address rate limit (the route's layer, before this runs). Then the
/// fields (no read), the secret (a read, constant-time), the password's strength, its
/// hash off the transaction, and last the write, which checks the secret again under the
/// setup row's lock.
async fn complete(
    State(s): State<AppState>,
    PeerAddr(peer): PeerAddr,
    JsonBody(req): JsonBody<Setup>,
) -> ApiResult<Response> {
    let words = setup::check_fields(&req)?;
    let secret = req.secret.clone();
    s.read(move |tx, ctx| setup::check(tx, ctx, &secret))
        .await?;
    let own: Vec<&str> = words.iter().map(String::as_str).collect();
    accounts::check_password("password", &req.password, &own)?;
    let password = req.password.clone();
    let hash = s
        .password_work(move || accounts::hash_password(&password))
        .await??;
    let ip = client_ip(peer);
    let st = s
        .write(move |tx, ctx| {
            let user = setup::complete(tx, ctx, &req, hash.clone(), ip.as_deref())?;
            let st = sessions::start_session(tx, ctx, &user, None, json!({"setup": true}))?;
            Ok(opened(ctx, st))
        })
        .await?;
    started(&s, st)
}
