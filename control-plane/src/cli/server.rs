//! The commands that work on the database in this process: `serve` and `admin`.

use super::render::{self, Output};
use super::{CliError, CliResult, DbArgs, ServeArgs};
use crate::api::limit::RateLimit;
use crate::api::server::ServerOptions;
use crate::crypto::{self, MasterKey};
use crate::model::KeyAlg;
use crate::service::{self, Ctx};
use crate::store::StoreError;
use crate::store::{self, Store};
use crate::{app, telemetry, timefmt, AppState, Config};
use serde_json::json;
use std::io::{self, Write};

fn load_master_key(db: &DbArgs) -> Result<MasterKey, String> {
    if let Some(path) = &db.master_key_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        return MasterKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()));
    }
    if let Ok(text) = std::env::var("TESSERA_MASTER_KEY") {
        return MasterKey::parse(&text).map_err(|e| format!("TESSERA_MASTER_KEY: {e}"));
    }
    Err("no master key: pass --master-key-file or set TESSERA_MASTER_KEY (make one with `tessera admin gen-master-key`)".into())
}

/// An open database, checked against the master key it was first used with.
struct Opened {
    store: Box<dyn Store>,
    master: MasterKey,
    schema_version: i64,
}

fn open_store(db: &DbArgs, options: &store::OpenOptions) -> Result<Opened, String> {
    let master = load_master_key(db)?;
    let location = db.location()?;
    let store = store::open_with(&location, options)
        .map_err(|e| format!("{}: {e}", location.describe()))?;
    let schema_version = store
        .schema_version()
        .map_err(|e| format!("{}: {e}", location.describe()))?;
    let check = store.write(|tx| {
        match tx.get_setting("master_key_check")? {
            Some(hexed) => {
                let sealed: Vec<u8> = (0..hexed.len() / 2)
                    .filter_map(|i| u8::from_str_radix(hexed.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect();
                if master.open("master-key-check", &sealed).is_err() {
                    return Err(service::Error::bad_request(
                        "the master key does not match the one this database was created with",
                    ));
                }
            }
            None => {
                let sealed = master.seal("master-key-check", b"tessera")?;
                tx.set_setting("master_key_check", &crypto::hex(&sealed))?;
            }
        }
        Ok(())
    });
    check.map_err(|e: service::Error| e.to_string())?;
    Ok(Opened {
        store,
        master,
        schema_version,
    })
}

fn stored_base_url(store: &dyn Store) -> Result<Option<String>, String> {
    store
        .read(|tx| tx.get_setting("base_url"))
        .map_err(|e: StoreError| e.to_string())
}

/// `tessera admin gen-master-key`.
pub(super) fn gen_master_key() -> CliResult {
    let key = MasterKey::generate().map_err(|e| e.to_string())?;
    Ok(render::line(&mut io::stdout().lock(), &key.to_hex())?)
}

/// `tessera admin bootstrap`.
pub(super) fn bootstrap(
    out: Output,
    db: &DbArgs,
    (org, org_name, admin, alg, scopes): (&str, &str, &str, &str, &str),
    base_url: Option<String>,
) -> CliResult {
    let scopes: Vec<String> = scopes
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let alg = KeyAlg::parse(alg).ok_or("--alg: EdDSA or ES256")?;
    let Opened { store, master, .. } = open_store(db, &store::OpenOptions::default())?;
    let base = match base_url {
        Some(b) => b.trim_end_matches('/').to_string(),
        None => stored_base_url(store.as_ref())?.unwrap_or_else(|| "http://127.0.0.1:8080".into()),
    };
    let b = store
        .write(|tx| {
            tx.set_setting("base_url", &base)?;
            let ctx = Ctx::new(&base, &master, timefmt::now(), 1800);
            service::orgs::bootstrap_scoped(tx, &ctx, (org, org_name, admin, alg), &scopes)
        })
        .map_err(|e: service::Error| e.to_string())?;
    let mut stdout = io::stdout().lock();
    match out {
        Output::Json => writeln!(
            stdout,
            "{}",
            json!({"org": b.org.id, "user": b.user.id, "username": b.user.username, "token_id": b.token.id, "token": b.jwt, "base_url": base, "sign_in_link": b.link.url, "sign_in_link_expires_at": b.link.expires_at})
        )?,
        // stdout carries the token alone, so `export TESSERA_TOKEN=$(tessera admin
        // bootstrap ...)` holds just the JWT; everything else is for the person, on stderr.
        _ => {
            render::note(&format!(
                "Organization {} (issuer {base}/v1/orgs/{}), admin {} ({}).",
                b.org.id, b.org.id, b.user.username, b.user.id,
            ));
            render::note(&format!(
                "This admin token (on stdout) is shown once; it expires {}.",
                timefmt::format(b.token.expires_at)
            ));
            render::note(&format!(
                "One-time sign-in link for the web page (set a password; expires {}):",
                b.link.expires_at
            ));
            render::note(&b.link.url);
            writeln!(stdout, "{}", b.jwt)?;
        }
    }
    Ok(())
}

/// `tessera serve`: logs go to stderr through `tracing`; the one stdout line
/// `tessera: listening on http://<addr> (base URL <url>)` tells scripts and tests the port.
pub(super) async fn serve(args: ServeArgs) -> CliResult {
    telemetry::init_logging(args.log_format);
    match serve_logged(args).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!(error = %e, "tessera serve stopped");
            Err(CliError::Reported)
        }
    }
}

async fn serve_logged(args: ServeArgs) -> Result<(), String> {
    if args.access_ttl < 60 || args.access_ttl > 86_400 {
        return Err("--access-ttl: 60..=86400 seconds".into());
    }
    let Opened {
        store,
        master,
        schema_version,
    } = open_store(
        &args.db,
        &store::OpenOptions {
            sqlite_cache_mib: args.sqlite_cache_mib,
        },
    )?;
    tracing::info!(db = %args.db.location()?.describe(), schema_version, "database opened");
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let base_url = match args.base_url {
        Some(b) => {
            let b = b.trim_end_matches('/').to_string();
            store
                .write(|tx| tx.set_setting("base_url", &b))
                .map_err(|e: StoreError| e.to_string())?;
            b
        }
        None => stored_base_url(store.as_ref())?.unwrap_or_else(|| format!("http://{addr}")),
    };
    let empty = store
        .read(|tx| tx.any_org())
        .map_err(|e: StoreError| e.to_string())?
        .is_none();
    // Mail (`--smtp-url`): checked before anything listens, so a wrong flag stops here.
    let mail = match (&args.smtp_url, &args.smtp_from) {
        (Some(url), Some(from)) => {
            let ca = match &args.smtp_ca {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| format!("--smtp-ca: cannot read {}: {e}", path.display()))?,
                ),
                None => None,
            };
            Some(crate::api::mail::MailServer::with_ca(
                url,
                from,
                ca.as_deref(),
            )?)
        }
        _ => None,
    };
    let state = AppState::new(
        store,
        Config {
            base_url: base_url.clone(),
            master,
            access_ttl: args.access_ttl,
        },
    )
    .with_rate_limit(RateLimit {
        per_minute: args.unauth_rate,
        burst: args.unauth_burst,
    })
    // Half an address's connections may wait in long polls: the rest stay for requests.
    .with_long_poll_share(
        usize::try_from(args.max_connections_per_address / 2).unwrap_or(usize::MAX),
    )
    .with_scanner_keys_url(&args.secret_scanning_keys_url)
    .with_edge_long_poll_share(usize::try_from(args.max_long_polls_per_edge).unwrap_or(usize::MAX))
    .with_quotas(crate::service::quotas::Quotas {
        tokens_per_user: args.max_tokens_per_user,
        users_per_org: args.max_users_per_org,
        orgs_per_partner: args.max_orgs_per_partner,
    });
    tracing::info!(
        %addr,
        base_url,
        access_ttl = args.access_ttl,
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );
    {
        let mut stdout = io::stdout().lock();
        writeln!(
            stdout,
            "tessera: listening on http://{addr} (base URL {base_url})"
        )
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    }
    if empty {
        // A first start: nobody can sign in yet. A one-time setup link (its secret's hash
        // stored, replacing any earlier one) lets the operator create the first
        // organization and admin in the browser. On stderr, beside the log (the secret
        // never goes to the structured log), and never fatal.
        let issued = state.write(crate::service::setup::issue).await;
        let said = match issued {
            Ok(Some((link, expires))) => {
                tracing::warn!(
                    expires_at = %expires,
                    "the database has no organization yet; a one-time setup link was printed"
                );
                format!(
                    "tessera: this database has no organization yet, so nobody can sign in.\n\
                     Open this one-time setup link in a browser to create the first organization \
                     and its admin (it works once, until {expires}; each start on an empty \
                     database prints a new one and voids the old):\n  {link}\n\
                     Or, with the same database: \
                     tessera admin bootstrap --org <organization> --admin <your username>\n\
                     then open the sign-in link it prints to choose your password."
                )
            }
            Ok(None) => String::new(),
            Err(e) => {
                tracing::error!(error = %e.message, "issuing the setup link failed");
                "tessera: this database has no organization yet, so nobody can sign in. \
                 Create the first one and its admin with the same database:\n  \
                 tessera admin bootstrap --org <organization> --admin <your username>\n\
                 then open the sign-in link it prints to choose your password."
                    .to_string()
            }
        };
        if !said.is_empty() {
            let _ = writeln!(io::stderr().lock(), "{said}");
        }
    }
    if let Some(limit) = state.address_limit().cloned() {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                limit.forget_idle();
            }
        });
    }
    {
        // Authentication-log retention, and the sign-in rows no longer needed: now, then
        // every hour.
        let st = state.clone();
        let keep_days = args.auth_log_retention_days;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                every.tick().await;
                match st.prune_auth_log(keep_days).await {
                    Ok(n) => tracing::info!(removed = n, keep_days, "authentication log pruned"),
                    Err(e) => {
                        tracing::error!(error = %e, "pruning the authentication log failed")
                    }
                }
                match st.write(crate::service::sessions::prune).await {
                    Ok(n) => tracing::info!(
                        removed = n,
                        "ended sessions, old throttles and links pruned"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e.message, "pruning sessions and links failed")
                    }
                }
            }
        });
    }
    {
        // Uses of tokens against the API reach the authentication log within a second.
        let st = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                if let Err(e) = st.flush_api_uses().await {
                    tracing::error!(error = %e, "writing API uses to the authentication log failed");
                }
            }
        });
    }
    {
        // Rotations whose grace or deadline has ended are stopped within 200 ms
        // (`service::rotation`): a cheap read finds one due, then a write marks it rotated
        // in the status list, which wakes the edges' long polls.
        let st = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(200));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                match st.read(crate::service::rotation::any_due).await {
                    Ok(false) => {}
                    Ok(true) => match st.write(crate::service::rotation::end_due).await {
                        Ok(n) => tracing::info!(ended = n, "token rotations ended"),
                        Err(e) => {
                            tracing::error!(error = %e.message, "ending token rotations failed")
                        }
                    },
                    Err(e) => tracing::error!(error = %e.message, "reading token rotations failed"),
                }
            }
        });
    }
    {
        // Tokens close to expiry are announced (`token.expiring`, `service::notifications`):
        // every minute a cheap read looks for one owed a notice, then a write claims and
        // raises them.
        let st = state.clone();
        tokio::spawn(async move {
            use crate::service::notifications;
            let mut every = tokio::time::interval(std::time::Duration::from_secs(
                notifications::EXPIRING_TICK_SECS,
            ));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                match st.read(notifications::any_expiring).await {
                    Ok(false) => {}
                    Ok(true) => match st.write(notifications::warn_expiring).await {
                        Ok(n) => tracing::info!(warned = n, "tokens about to expire announced"),
                        Err(e) => {
                            tracing::error!(error = %e.message, "announcing expiring tokens failed")
                        }
                    },
                    Err(e) => tracing::error!(error = %e.message, "reading expiring tokens failed"),
                }
            }
        });
    }
    // Mail: the outbox is looked at every second (`api::mail::run_worker`).
    let state = match mail {
        Some(server) => {
            let state = state.with_mail();
            tracing::info!(?server, "mail is sent for token events");
            tokio::spawn(crate::api::mail::run_worker(
                state.clone(),
                std::time::Duration::from_secs(1),
                server,
            ));
            state
        }
        None => state,
    };
    // Webhooks: the outbox is looked at every second (`api::webhooks::run_worker`).
    tokio::spawn(crate::api::webhooks::run_worker(
        state.clone(),
        std::time::Duration::from_secs(1),
        if args.webhook_private_destinations {
            crate::api::webhooks::Destinations::Any
        } else {
            crate::api::webhooks::Destinations::Public
        },
    ));
    let options = ServerOptions {
        header_timeout: std::time::Duration::from_secs(args.header_timeout),
        body_timeout: std::time::Duration::from_secs(args.body_timeout),
        body_deadline: std::time::Duration::from_secs(args.body_deadline),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        max_connections_per_address: usize::try_from(args.max_connections_per_address)
            .unwrap_or(usize::MAX),
        ..ServerOptions::default()
    };
    crate::api::server::serve(
        listener,
        app(state.clone()),
        state.clone(),
        options,
        shutdown(),
    )
    .await;
    if let Err(e) = state.flush_api_uses().await {
        tracing::error!(error = %e, "writing API uses to the authentication log failed");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    tracing::info!("interrupted; finishing the requests in flight");
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal; finishing the requests in flight");
}
