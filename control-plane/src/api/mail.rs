//! The caller's notification settings (`/v1/me/notifications`: their mail address and the
//! events they mute), and the mail worker `tessera serve --smtp-url` runs
//! ([`run_worker`]), the only code that sends mail (see `service::mail` for the outbox and
//! whom it writes to). SMTP through `lettre` over rustls: `smtps://` (implicit TLS),
//! `smtp://…?tls=required` (STARTTLS, refused without it), `smtp://` (plain: loopback and
//! tests only; the log says so for any other host).

use super::extract::{Caller, JsonBody};
use super::{route, ApiResult, AppState, Auth, Route};
use crate::service::mail::{self, NotificationSettings, SetNotifications};
use crate::store::notifications::MailRecord;
use axum::extract::State;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Json;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
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
        route(Method::GET, "/v1/me/notifications", "The caller's mail address and which events are mailed to them", Token, h!(GET, get))
            .ok::<NotificationSettings>(200).cli("notifications show"),
        route(Method::PUT, "/v1/me/notifications", "Set the caller's mail address and the events they receive no mail for", Token, h!(PUT, put))
            .body::<SetNotifications>(json!({"email": "ula@example.com", "muted": ["token.used_from_new_network"]}))
            .ok::<NotificationSettings>(200).cli("notifications set"),
    ]
}

async fn get(
    State(s): State<AppState>,
    Caller(a): Caller,
) -> ApiResult<Json<NotificationSettings>> {
    s.read_as(a, move |tx, ctx, a| mail::get_settings(tx, ctx, a))
        .await
        .map(Json)
}

async fn put(
    State(s): State<AppState>,
    Caller(a): Caller,
    JsonBody(req): JsonBody<SetNotifications>,
) -> ApiResult<Json<NotificationSettings>> {
    s.write_as(a, move |tx, ctx, a| {
        mail::put_settings(tx, ctx, a, req.clone())
    })
    .await
    .map(Json)
}

/// How long one SMTP conversation may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// The SMTP server and the sender (`tessera serve --smtp-url`, `--smtp-from`).
#[derive(Clone)]
pub struct MailServer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for MailServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailServer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl MailServer {
    /// `url` as lettre reads it (`smtps://user:pass@host:465`,
    /// `smtp://host:587?tls=required`, `smtp://127.0.0.1:2525`), `from` an address
    /// (`Tessera <tessera@example.com>`). The message names the flag at fault.
    pub fn new(url: &str, from: &str) -> Result<MailServer, String> {
        MailServer::with_ca(url, from, None)
    }

    /// [`MailServer::new`], trusting also the CA certificates of `ca_pem` (`--smtp-ca`, a
    /// PEM file's content) beside the system's, for a server whose certificate a private CA
    /// signed. Only with TLS (`smtps://` or `?tls=required`).
    pub fn with_ca(url: &str, from: &str, ca_pem: Option<&[u8]>) -> Result<MailServer, String> {
        // lettre's rustls uses the process's provider (ring), as reqwest does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            format!(
                "--smtp-url: not a URL ({e}); give smtps://host or smtp://host:587?tls=required"
            )
        })?;
        if !matches!(parsed.scheme(), "smtp" | "smtps") || parsed.host_str().is_none() {
            return Err(
                "--smtp-url: give smtps://[user:pass@]host[:465], smtp://[user:pass@]host[:587]?tls=required, or smtp://host:port (unencrypted)"
                    .into(),
            );
        }
        let tls_required = parsed.scheme() == "smtps"
            || parsed
                .query_pairs()
                .any(|(k, v)| k == "tls" && v == "required");
        let host = parsed.host_str().unwrap_or("").trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
        if !tls_required && !loopback {
            tracing::warn!(
                host = parsed.host_str().unwrap_or(""),
                "--smtp-url: mail to this server may travel unencrypted; use smtps:// or ?tls=required"
            );
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("--smtp-url: {e}"))?
            .timeout(Some(SEND_TIMEOUT));
        if let Some(pem) = ca_pem {
            if !tls_required {
                return Err("--smtp-ca: the --smtp-url has no TLS to verify; give smtps://host or smtp://host:587?tls=required".into());
            }
            const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
            let not_pem = || {
                "--smtp-ca: not a PEM file of CA certificates (-----BEGIN CERTIFICATE----- …)"
                    .to_string()
            };
            if !pem.windows(BEGIN.len()).any(|w| w == BEGIN) {
                return Err(not_pem());
            }
            let ca = Certificate::from_pem(pem).map_err(|_| not_pem())?;
            let params = TlsParameters::builder(host.to_string())
                .add_root_certificate(ca)
                .build_rustls()
                .map_err(|e| format!("--smtp-ca: {e}"))?;
            builder = builder.tls(if parsed.scheme() == "smtps" {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            });
        }
        let transport = builder.build();
        let from: Mailbox = from.parse().map_err(|e| {
            format!("--smtp-from: {e}; give an address such as \"Tessera <tessera@example.com>\"")
        })?;
        Ok(MailServer { transport, from })
    }

    /// Sends one message: `Err((why, permanent))` when it was not accepted.
    async fn send(&self, m: &MailRecord) -> Result<(), (String, bool)> {
        let to: Mailbox = m
            .to_addr
            .parse()
            .map_err(|e| (format!("the address {:?}: {e}", m.to_addr), true))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(m.body.clone())
            .map_err(|e| (format!("building the message: {e}"), true))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => Err((with_causes(&e), e.is_permanent())),
        }
    }
}

/// An error with its causes, for the log and the outbox row.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// One pass of the worker: a read looks for due messages; when there are, a write claims
/// them, they are sent one after the other (an SMTP connection each), and each outcome is
/// written back. How many were sent.
pub async fn deliver_due(state: &AppState, server: &MailServer) -> usize {
    match state.read(mail::any_due).await {
        Ok(true) => {}
        Ok(false) => return 0,
        Err(e) => {
            tracing::error!(error = %e.message, "mail: reading the outbox failed");
            return 0;
        }
    }
    let claimed = match state.write(mail::claim).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e.message, "mail: claiming messages failed");
            return 0;
        }
    };
    let mut sent = 0;
    for m in claimed {
        let outcome = server.send(&m).await;
        let (error, permanent) = match outcome {
            Ok(()) => {
                sent += 1;
                tracing::info!(message = %m.id, event = %m.event, to = %m.to_addr, "mail sent");
                (None, false)
            }
            Err((why, permanent)) => {
                tracing::warn!(message = %m.id, to = %m.to_addr, error = %why, permanent, "mail not sent");
                (Some(why), permanent)
            }
        };
        let id = m.id.clone();
        let r = state
            .write(move |tx, ctx| mail::record(tx, ctx, &id, error.clone(), permanent))
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e.message, "mail: recording an attempt failed");
        }
    }
    sent
}

/// The mail worker: [`deliver_due`] every `every`, until the process ends. A message
/// claimed by a process that dies is taken again once its claim lapses.
pub async fn run_worker(state: AppState, every: Duration, server: MailServer) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        deliver_due(&state, &server).await;
    }
}
