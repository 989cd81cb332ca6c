//! The `tessera` command line: its arguments, and the dispatch of each command.
//!
//! `serve` and `admin` work on the database in this process ([`server`]); every other
//! command is a client of the REST API ([`commands`], over [`crate::client`]) and shows the
//! answer through [`render`]. `main.rs` only parses, runs and turns errors into exit codes.

mod commands;
pub mod render;
mod server;

use crate::client::{encode, Client};
use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand};
use render::Output;
use std::io;
use std::path::PathBuf;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// A message for stderr (`tessera: <message>`, exit 1).
    Msg(String),
    /// Writing the output failed; a closed pipe (`| head`) is an ordinary end (exit 0).
    Output(io::Error),
    /// Already reported through the log (`tessera serve`); exit 1.
    Reported,
}

impl From<String> for CliError {
    fn from(m: String) -> Self {
        CliError::Msg(m)
    }
}

impl From<&str> for CliError {
    fn from(m: &str) -> Self {
        CliError::Msg(m.to_string())
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        CliError::Output(e)
    }
}

pub type CliResult = Result<(), CliError>;

/// Runs one command to its end.
pub async fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Serve(args) => server::serve(args).await,
        Command::Admin(AdminCmd::GenMasterKey) => server::gen_master_key(),
        Command::Admin(AdminCmd::Bootstrap {
            db,
            org,
            org_name,
            admin,
            alg,
            base_url,
            scopes,
        }) => server::bootstrap(
            cli.output,
            &db,
            (&org, &org_name, &admin, &alg, &scopes),
            base_url,
        ),
        command => {
            let ca = match &cli.ca_cert {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| format!("--ca-cert {}: {e}", path.display()))?,
                ),
                None => None,
            };
            let client =
                |token: Option<String>| Client::with_ca_cert(&cli.url, token, ca.as_deref());
            let token = match &cli.token_file {
                Some(path) => Some(read_secret(path, "--token-file")?),
                None => cli.token.clone(),
            };
            if let Some(t) = &token {
                check_token(t, token_source(cli.token_file.as_deref(), t))?;
            }
            let command = match command {
                Command::Exchange {
                    api_token: Some(dash),
                } if dash == "-" => Command::Exchange {
                    api_token: Some(read_secret(std::path::Path::new("-"), "stdin")?),
                },
                Command::Introspect { file, .. }
                    if file.as_os_str() == "-"
                        && cli.token_file.as_deref() == Some(std::path::Path::new("-")) =>
                {
                    return Err("--token-file - and the token to introspect cannot both come from stdin: give one of them as a file".into());
                }
                c => c,
            };
            commands::run(client, token, cli.output, command).await
        }
    }
}

/// Where the token came from, as the person gave it: `--token-file`, `TESSERA_TOKEN` or
/// `--token`.
fn token_source(file: Option<&std::path::Path>, token: &str) -> &'static str {
    if file.is_some() {
        "--token-file"
    } else if std::env::var("TESSERA_TOKEN").is_ok_and(|v| v == token) {
        "TESSERA_TOKEN"
    } else {
        "--token"
    }
}

/// Refuses a token that cannot travel in an `Authorization` header, saying what is wrong
/// with it (rather than the HTTP library's "failed to parse header value").
fn check_token(token: &str, source: &str) -> Result<(), String> {
    let token_alone = "set it to the token alone";
    if token.trim().is_empty() {
        return Err(format!("{source} is empty: {token_alone}"));
    }
    if token.trim().contains(['\n', '\r']) {
        return Err(format!(
            "{source} holds more than one line: {token_alone} (a token is one line, tsr_eyJ...)"
        ));
    }
    if token != token.trim() {
        return Err(format!(
            "{source} has spaces or a line break around the token: {token_alone}"
        ));
    }
    if let Some((i, c)) = token
        .chars()
        .enumerate()
        .find(|&(_, c)| !c.is_ascii_graphic())
    {
        let shown = match c {
            ' ' => "a space".to_string(),
            '\t' => "a tab".to_string(),
            c => format!("the character {}", c.escape_default()),
        };
        return Err(format!(
            "{source} holds {shown} at character {}, which no token has: {token_alone}",
            i + 1
        ));
    }
    Ok(())
}

/// A secret from a file, or from stdin for `-`: its first line, without surrounding
/// whitespace.
fn read_secret(path: &std::path::Path, what: &str) -> Result<String, String> {
    let text = if path == std::path::Path::new("-") {
        let mut line = String::new();
        io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("{what}: {e}"))?;
        line
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))?
    };
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        return Err(format!("{what}: no token in it"));
    }
    Ok(secret)
}

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tessera control plane and CLI")]
pub struct Cli {
    /// The control plane's URL (client commands).
    #[arg(
        long,
        global = true,
        env = "TESSERA_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// A PEM file of the CA certificate(s) that signed the server's certificate, for
    /// `--url https://...` with a private CA; only these are trusted then (client commands).
    #[arg(long, global = true, env = "TESSERA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// A Tessera token to authenticate with (client commands). Prefer TESSERA_TOKEN or
    /// --token-file: a command line is visible to every local user (ps, /proc).
    #[arg(long, global = true, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the token to authenticate with; `-` reads it from stdin.
    #[arg(
        long,
        global = true,
        env = "TESSERA_TOKEN_FILE",
        conflicts_with = "token",
        value_name = "PATH"
    )]
    token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Serve(ServeArgs),
    /// Operator commands that work on the database directly.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// API tokens.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Organizations.
    #[command(subcommand)]
    Orgs(OrgsCmd),
    /// Users.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Edge credentials (for POST /v1/usage).
    #[command(subcommand)]
    Edges(EdgesCmd),
    /// SCIM credentials (for an identity provider's provisioning at /scim/v2/<org>).
    #[command(subcommand)]
    Scim(ScimCmd),
    /// The scope catalogue: what tokens may carry, granted to roles and users.
    #[command(subcommand)]
    Scopes(ScopesCmd),
    /// Webhooks: endpoints that receive signed events (Standard Webhooks), and their
    /// delivery log.
    #[command(subcommand)]
    Webhooks(WebhooksCmd),
    /// Single sign-on: the organization's OpenID Connect identity provider (org admins).
    #[command(subcommand)]
    Sso(SsoCmd),
    /// Your mail address and which events about tokens are mailed to you.
    #[command(subcommand)]
    Notifications(NotificationsCmd),
    /// Exchange an API token for a short-lived access token.
    Exchange {
        /// The API token; `-` reads it from stdin (default: the token of TESSERA_TOKEN,
        /// --token-file or --token). Given here it shows in the process list: prefer `-`.
        api_token: Option<String>,
    },
    /// RFC 7662 introspection: whether a token is active as the organization's edges see
    /// it, with its scopes, subject and expiry (or the reason it is not). Authenticate with
    /// an edge credential of the token's organization (TESSERA_TOKEN or --token-file).
    Introspect {
        /// A file holding the token to introspect on its first line; `-` (the default)
        /// reads it from stdin. Never the token itself: a command line is visible to every
        /// local user.
        #[arg(default_value = "-", value_name = "FILE")]
        file: PathBuf,
        /// The address the token's client called from, for its IP filter (without it, a
        /// token with an IP filter is inactive).
        #[arg(long)]
        client_ip: Option<String>,
    },
    /// Report tokens found in public (no sign-in needed): each one that is a Tessera
    /// token gets its organization's leak policy (revoke by default).
    ReportLeak {
        /// The tokens; `-` reads them from stdin, one per line (given here they show in
        /// the process list: prefer `-`).
        #[arg(required = true)]
        tokens: Vec<String>,
        /// Where they were found (a URL; `--url` is the control plane's).
        #[arg(long)]
        found_at: Option<String>,
        /// What kind of place (a paste, a repository, a log).
        #[arg(long)]
        source: Option<String>,
    },
    /// Show who you are: your user, organization and the token you used.
    Whoami,
    /// The audit log of management actions (org admins).
    AuditLog {
        /// The organization (default: your own).
        #[arg(long)]
        org: Option<String>,
        /// Only entries about this id (a user, token or credential).
        #[arg(long)]
        target: Option<String>,
        /// The page to show, from 1.
        #[arg(long)]
        page: Option<i64>,
        /// Entries per page (at most 500).
        #[arg(long)]
        per_page: Option<i64>,
    },
    /// The authentication log: where and when tokens were used or refused (your own
    /// tokens; every token of the organization for its admins).
    AuthLog(LogFilters),
    /// One-time links (invitations and password resets).
    #[command(subcommand)]
    Links(LinksCmd),
}

/// The filters of an authentication log.
#[derive(Args, Default)]
struct LogFilters {
    /// Only this token (its id). Not `--token`, which is the token you authenticate with.
    #[arg(long = "token-id", id = "token_id")]
    token_id: Option<String>,
    /// Only this user's tokens (a username or a user id).
    #[arg(long)]
    user: Option<String>,
    /// Only `allow` or only `deny`.
    #[arg(long)]
    outcome: Option<String>,
    /// From this time on (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Up to this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// The page to show, from 1.
    #[arg(long)]
    page: Option<i64>,
    /// Events per page (at most 500).
    #[arg(long)]
    per_page: Option<i64>,
}

impl LogFilters {
    fn query(&self) -> String {
        query_string(&[
            ("token", self.token_id.clone()),
            ("user", self.user.clone()),
            ("outcome", self.outcome.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
            ("page", self.page.map(|p| p.to_string())),
            ("per_page", self.per_page.map(|p| p.to_string())),
        ])
    }
}

/// `?k=v&...` of the given pairs (percent-encoded), or nothing when none is set.
fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[derive(Subcommand)]
enum NotificationsCmd {
    /// Your mail address (and where it comes from) and the events mailed to you.
    Show,
    /// Change your mail address or the events mailed to you.
    Set {
        /// The address to mail; "" removes it (your identity provider's is used, if any).
        #[arg(long)]
        email: Option<String>,
        /// Mail no more about these events, comma-separated: token.expiring,
        /// token.exposed, token.revoked, token.used_from_new_network,
        /// token.revoked_but_presented.
        #[arg(long, value_delimiter = ',')]
        mute: Vec<String>,
        /// Mail again about these events, comma-separated.
        #[arg(long, value_delimiter = ',')]
        unmute: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LinksCmd {
    /// Use a one-time link you were given: set your password. The secret and the new
    /// password are read from stdin, one per line, so they never show in the process
    /// list; the link itself (the web page's address) works too.
    Accept,
}

#[derive(Args)]
struct DbArgs {
    /// The database: a SQLite file (a path or sqlite:///path), or PostgreSQL
    /// (postgres://user@host:port/db). TLS to PostgreSQL: add `?sslmode=verify-full&sslrootcert=/path/ca.pem`
    /// (the CA and the host name are checked; `verify-ca`: the CA only); `require` encrypts without checking (the CA
    /// is checked when `sslrootcert` is given), `prefer` (the default) encrypts when the
    /// server offers it, `disable` never does.
    #[arg(long, env = "TESSERA_DB", default_value = "./tessera.db")]
    db: String,
    /// A file holding the master key (64 hex digits or base64 of 32 bytes).
    #[arg(long, env = "TESSERA_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
}

impl DbArgs {
    fn location(&self) -> Result<crate::store::DbLocation, String> {
        crate::store::DbLocation::parse(&self.db)
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The URL clients and edges reach this service at (token issuers derive from it).
    /// Default: the one stored by bootstrap, else http://<listen>.
    #[arg(long)]
    base_url: Option<String>,
    /// Lifetime of exchanged access tokens, seconds.
    #[arg(long, default_value_t = 1800)]
    access_ttl: i64,
    /// Seconds a client may take to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Seconds a request body may stall between two chunks before the request ends (408).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout: u64,
    /// Seconds a client may take to send a whole request body, from its request head; a
    /// body still arriving then ends the request (408).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_deadline: u64,
    /// Connections open at once; further clients wait until one closes.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Connections one client address (IPv6: its /64) may hold open at once; past it, new
    /// ones are answered 429 and closed, so one client cannot take them all.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections_per_address: u64,
    /// Status-list long polls one edge credential may hold (edges that send their
    /// credential with their polls are counted here, not against their address's share).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_long_polls_per_edge: u64,
    /// Tokens one user may hold (any state but deleted); past it, 403 quota_exceeded.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=10_000_000))]
    max_tokens_per_user: i64,
    /// Where the secret-scanning partner's public keys are published (GitHub's format:
    /// `{"public_keys": [{"key_identifier", "key", "is_current"}]}`), for
    /// POST /v1/secret-scanning/github.
    #[arg(long, env = "TESSERA_SECRET_SCANNING_KEYS_URL", default_value = crate::api::scanning::GITHUB_KEYS_URL)]
    secret_scanning_keys_url: String,
    /// Let webhooks be delivered to loopback, private, link-local and other non-public
    /// addresses (receivers inside your own network, tests). Off by default, so an org admin
    /// cannot point a webhook at the operator's internal services.
    #[arg(long, env = "TESSERA_WEBHOOK_PRIVATE_DESTINATIONS")]
    webhook_private_destinations: bool,
    /// The SMTP server that mails people about their tokens (expiring, exposed, revoked,
    /// used from a new network): smtps://[user:pass@]host[:465] (TLS),
    /// smtp://[user:pass@]host[:587]?tls=required (STARTTLS), or smtp://host:port
    /// (unencrypted: loopback only). Without it, no mail is sent. Needs --smtp-from.
    #[arg(long, env = "TESSERA_SMTP_URL", requires = "smtp_from")]
    smtp_url: Option<String>,
    /// The sender of Tessera's mail, e.g. "Tessera <tessera@example.com>".
    #[arg(long, env = "TESSERA_SMTP_FROM", requires = "smtp_url")]
    smtp_from: Option<String>,
    /// A PEM file of the CA certificates that signed the SMTP server's certificate, trusted
    /// beside the system's (a private CA). Only with TLS in --smtp-url.
    #[arg(long, env = "TESSERA_SMTP_CA", requires = "smtp_url")]
    smtp_ca: Option<std::path::PathBuf>,
    /// Users one organization may have (deleted ones do not count).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..=10_000_000))]
    max_users_per_org: i64,
    /// Customer organizations one partner organization may manage.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=10_000_000))]
    max_orgs_per_partner: i64,
    /// Unauthenticated requests (token exchange, usage with a refused edge credential)
    /// per minute from one address, after a burst; past it, 429 with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 30)]
    unauth_rate: u32,
    /// The burst of unauthenticated requests one address may send before the rate applies.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    unauth_burst: u32,
    /// Days of authentication-log events kept; older ones are removed at start and every
    /// hour (PostgreSQL drops whole daily partitions).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(i64).range(1..=36_500))]
    auth_log_retention_days: i64,
    /// Memory for SQLite's page caches, MiB, split evenly between the writer connection and
    /// the 8 readers (SQLite only; the default keeps SQLite's own 2,000 KiB per connection).
    #[arg(long, env = "TESSERA_SQLITE_CACHE_MIB", default_value_t = crate::store::sqlite::DEFAULT_CACHE_MIB,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    sqlite_cache_mib: u32,
    /// Log lines on stderr as text or JSON (level: TESSERA_LOG or RUST_LOG, default info).
    #[arg(long, env = "TESSERA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create the first organization and its admin, and print a one-time admin token.
    /// Run again with another --org to onboard a further organization's admin.
    Bootstrap {
        #[command(flatten)]
        db: DbArgs,
        /// The organization's id (letters, digits, `-` and `_`), e.g. `acme`.
        #[arg(long)]
        org: String,
        /// The organization's name as people read it (default: its id).
        #[arg(long, default_value = "")]
        org_name: String,
        /// The admin's username.
        #[arg(long)]
        admin: String,
        /// The organization's signing algorithm: EdDSA or ES256.
        #[arg(long, default_value = "EdDSA")]
        alg: String,
        /// Stored for `serve`; default: the stored one, else http://127.0.0.1:8080.
        #[arg(long)]
        base_url: Option<String>,
        /// Scopes the admin's token carries besides `tessera:manage` (space- or
        /// comma-separated): a token made with it carries only scopes it has.
        #[arg(long, default_value = "")]
        scopes: String,
    },
    /// Print a new random master key (hex).
    GenMasterKey,
}

#[derive(Args, Default)]
struct Filters {
    /// Text in name, description or user.
    #[arg(long)]
    q: Option<String>,
    /// Only tokens in these states: pending, enabled, disabled, revoked, expired
    /// (comma-separated).
    #[arg(long)]
    status: Option<String>,
    /// Only this user's tokens (a username or a user id).
    #[arg(long)]
    user: Option<String>,
    /// Only tokens of this organization (its id): for a partner, one customer
    /// organization.
    #[arg(long)]
    org: Option<String>,
    /// Only tokens that expire before this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    expires_before: Option<String>,
    /// name, created_at, expires_at, last_used_at, user, status; '-' first for descending.
    #[arg(long, allow_hyphen_values = true)]
    sort: Option<String>,
    /// The page to show, from 1.
    #[arg(long)]
    page: Option<i64>,
    /// Tokens per page (at most 500).
    #[arg(long)]
    per_page: Option<i64>,
}

impl Filters {
    fn query(&self) -> String {
        query_string(&[
            ("q", self.q.clone()),
            ("status", self.status.clone()),
            ("user", self.user.clone()),
            ("org", self.org.clone()),
            ("expires_before", self.expires_before.clone()),
            ("sort", self.sort.clone()),
            ("page", self.page.map(|p| p.to_string())),
            ("per_page", self.per_page.map(|p| p.to_string())),
        ])
    }
}

/// Rate limits and quotas, as flags (`tokens create`, `tokens edit`, `orgs rate-limits`).
#[derive(Args, Default, Clone, Copy)]
struct LimitFlags {
    /// Requests per second at most.
    #[arg(long)]
    per_second: Option<i64>,
    /// Requests per minute at most.
    #[arg(long)]
    per_minute: Option<i64>,
    /// Requests per hour at most.
    #[arg(long)]
    per_hour: Option<i64>,
    /// Requests per UTC day at most (a quota).
    #[arg(long)]
    per_day: Option<i64>,
    /// Requests per UTC calendar month at most (a quota).
    #[arg(long)]
    per_month: Option<i64>,
    /// Requests over the token's whole life at most (a quota).
    #[arg(long)]
    total: Option<i64>,
}

impl LimitFlags {
    /// The flags given, as a `RateLimits` JSON object's members.
    fn members(&self) -> Vec<(&'static str, i64)> {
        [
            ("per_second", self.per_second),
            ("per_minute", self.per_minute),
            ("per_hour", self.per_hour),
            ("per_day", self.per_day),
            ("per_month", self.per_month),
            ("total", self.total),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    /// `base` (a `RateLimits` object) with the flags given laid over it.
    fn over(&self, base: Option<&serde_json::Value>) -> serde_json::Value {
        let mut m = base
            .and_then(serde_json::Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in self.members() {
            m.insert(k.into(), serde_json::json!(v));
        }
        serde_json::Value::Object(m)
    }
}

#[derive(Subcommand)]
enum TokensCmd {
    /// Create an API token; it stays pending until its owner downloads it.
    Create {
        /// A name people recognise, e.g. `ci-deploy`.
        #[arg(long)]
        name: String,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
        /// The owner (user id or username); default: you.
        #[arg(long)]
        user: Option<String>,
        /// 30, 60, 90, 180 or 365 (within your organization's maximum).
        #[arg(long, conflicts_with = "expires_at", allow_negative_numbers = true)]
        lifetime_days: Option<i64>,
        /// A custom expiry (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        expires_at: Option<String>,
        /// Not valid before this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        not_before: Option<String>,
        /// A scope the token carries; repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Allowed client CIDR; repeatable.
        #[arg(long = "ip")]
        ips: Vec<String>,
        /// Create it disabled (enable it later with `tokens enable`).
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        limits: LimitFlags,
    },
    /// Search tokens (yours; the organization's for admins).
    List(Filters),
    /// One token.
    Show {
        /// The token's id.
        id: String,
    },
    /// Print the token (once; the owner only): `tsr_` followed by the JWT.
    Download {
        /// The token's id.
        id: String,
    },
    /// Mint a new JWT for the token; the previous one is revoked (the owner only).
    Regenerate {
        /// The token's id.
        id: String,
    },
    /// Rotate a token: make its successor (the same settings, pending until its owner
    /// downloads it); the token keeps working until the successor's first use plus the
    /// grace, or the deadline, whichever comes first; then every edge refuses it
    /// (`rotated`).
    Rotate {
        /// The token: its id, or the name of one of your tokens.
        #[arg(value_name = "TOKEN")]
        id: String,
        /// How long the token keeps working after its successor is first used: `0`, `30s`,
        /// `5m`, `2h`, `7d` (at most 7 days).
        #[arg(long)]
        grace: String,
        /// Stop the token then at the latest, even if the successor is never used (RFC
        /// 3339, or YYYY-MM-DD for midnight UTC).
        #[arg(long)]
        deadline: Option<String>,
        /// The successor's name (default: the token's name followed by ` #2`, ` #3`, ...).
        #[arg(long)]
        name: Option<String>,
    },
    /// Show a token's rotation (as the old token or as its successor): when the successor
    /// was first used and when the old token stops.
    Rotation {
        /// The token: its id, or the name of one of your tokens.
        #[arg(value_name = "TOKEN")]
        id: String,
    },
    /// Revoke a token: refused at every edge within a second; cannot be undone.
    Revoke {
        /// The token's id.
        id: String,
    },
    /// Revoke every token of a user, or of a whole organization (org admins).
    RevokeAll {
        /// The user (a username or a user id).
        #[arg(long, required_unless_present = "org", conflicts_with = "org")]
        user: Option<String>,
        /// The organization's id.
        #[arg(long)]
        org: Option<String>,
    },
    /// Change a token; changing what its JWT carries revokes the JWT (back to pending).
    Edit {
        /// The token's id.
        id: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        /// A new expiry (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        expires_at: Option<String>,
        /// A new lifetime from now: 30, 60, 90, 180 or 365 days.
        #[arg(long, allow_negative_numbers = true)]
        lifetime_days: Option<i64>,
        /// Not valid before this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        not_before: Option<String>,
        /// Replaces the scopes; repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Remove every scope.
        #[arg(long)]
        clear_scopes: bool,
        /// Replaces the IP filter; repeatable.
        #[arg(long = "ip")]
        ips: Vec<String>,
        /// Remove the IP filter (usable from any address).
        #[arg(long)]
        clear_ips: bool,
        /// Enable the token.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Disable the token.
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        limits: LimitFlags,
        /// Remove the token's own rate limits and quotas (the organization's default applies).
        #[arg(long)]
        clear_limits: bool,
    },
    /// A token's rate limits and quotas: its own, its organization's, and what the edges enforce.
    RateLimits {
        /// The token's id.
        id: String,
    },
    /// Enable a disabled token.
    Enable {
        /// The token's id.
        id: String,
    },
    /// Disable (suspend) a token; `tokens enable` brings it back.
    Disable {
        /// The token's id.
        id: String,
    },
    /// Delete a token (its JWT stays revoked); cannot be undone.
    Delete {
        /// The token's id.
        id: String,
    },
    /// CSV of the matching tokens.
    Export(Filters),
    /// Authentication log of one token.
    AuthLog {
        /// The token's id.
        id: String,
    },
    /// One token's uses per hour or day (allowed and refused) and the networks they came
    /// from.
    Usage {
        /// The token's id.
        id: String,
        /// hour (default) or day.
        #[arg(long)]
        bucket: Option<String>,
        /// How many hours (1 to 744, default 48) or days (1 to 400, default 30) back.
        #[arg(long)]
        buckets: Option<i64>,
    },
}

#[derive(Subcommand)]
enum OrgsCmd {
    /// The organizations you can see.
    List,
    /// One organization.
    Show {
        /// The organization's id.
        id: String,
    },
    /// Create an organization (root admins; partner admins create their customers').
    Create {
        /// The new organization's id (letters, digits, `-` and `_`), e.g. `acme`.
        id: String,
        /// Its name as people read it (default: its id).
        #[arg(long)]
        name: Option<String>,
        /// A partner organization, which may manage customer organizations.
        #[arg(long)]
        partner: bool,
        /// The partner organization that manages this one.
        #[arg(long)]
        managed_by: Option<String>,
        /// Its signing algorithm: EdDSA (default) or ES256.
        #[arg(long)]
        alg: Option<String>,
        /// The longest token lifetime its users may choose, in days (1 to 400; default 365).
        #[arg(long)]
        max_lifetime_days: Option<i64>,
        /// The `aud` its tokens carry (default: tessera).
        #[arg(long)]
        audience: Option<String>,
    },
    /// Rename an organization, change its longest token lifetime (its admins may shorten
    /// it; root admins and its managing partner's admins may also lengthen it), or say
    /// whether token owners manage their own tokens.
    Update {
        /// The organization's id.
        id: String,
        /// Its new name as people read it.
        #[arg(long)]
        name: Option<String>,
        /// The longest token lifetime its users may choose, in days (1 to 400).
        #[arg(long)]
        max_lifetime_days: Option<i64>,
        /// Whether a token's owner may edit, enable, disable and delete their own tokens
        /// (true or false; on by default). Off, owners still create, download, regenerate,
        /// rotate and revoke them, and org admins do the rest.
        #[arg(long)]
        owners_manage_tokens: Option<bool>,
    },
    /// The organization's signing keys: the active one, and the retired ones still published.
    Keys {
        /// The organization's id.
        id: String,
    },
    /// Rotate the organization's signing key; tokens signed with the old key keep working.
    RotateKey {
        /// The organization's id.
        id: String,
        /// The new key's algorithm: EdDSA or ES256 (default: the current one).
        #[arg(long)]
        alg: Option<String>,
    },
    /// Show the organization's default rate limits and quotas and their ceiling, or with
    /// --default or --ceiling and limit flags change one of them (flags not given are kept).
    RateLimits {
        /// The organization's id.
        id: String,
        /// The limit flags set the default: what a token gets for a limit it does not set.
        #[arg(long, conflicts_with = "ceiling")]
        default: bool,
        /// The limit flags set the ceiling: the most any token of the organization may have.
        #[arg(long)]
        ceiling: bool,
        #[command(flatten)]
        limits: LimitFlags,
        /// Remove every limit of the default or the ceiling (with --default or --ceiling).
        #[arg(long)]
        clear: bool,
    },
    /// Show, or with --set change, what a confirmed leak of the org's token does.
    LeakPolicy {
        /// The organization's id.
        id: String,
        /// revoke (the default) or notify_only.
        #[arg(long)]
        set: Option<String>,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    /// The users of an organization (org admins).
    List {
        /// The organization's id.
        #[arg(long)]
        org: String,
    },
    /// One user.
    Show {
        /// The user (a username or a user id).
        id: String,
    },
    /// Create a user; prints a one-time link for them to set their password (mails it
    /// to them instead when the server sends mail).
    Create {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The new user's username.
        username: String,
        /// admin, user, partner or readonly.
        #[arg(long)]
        role: String,
        /// Their name as people read it.
        #[arg(long)]
        display_name: Option<String>,
        /// Let the managing partner organization act for this user.
        #[arg(long)]
        delegated: bool,
        /// Their mail address. When the server sends mail, the invitation is mailed
        /// there (and not printed), so it is then required.
        #[arg(long)]
        email: Option<String>,
    },
    /// Change a user (org admins; users may change their own display name and delegation).
    Update {
        /// The user (a username or a user id).
        id: String,
        /// admin, user, partner or readonly.
        #[arg(long)]
        role: Option<String>,
        /// Their name as people read it.
        #[arg(long)]
        display_name: Option<String>,
        /// Let the managing partner organization act for this user (true or false).
        #[arg(long)]
        delegated: Option<bool>,
    },
    /// Disable a user: their sessions end, their tokens are suspended until enabled again.
    Disable {
        /// The user (a username or a user id).
        id: String,
    },
    /// Enable a disabled user again (their suspended tokens come back).
    Enable {
        /// The user (a username or a user id).
        id: String,
    },
    /// Delete a user: their tokens are revoked; this cannot be undone.
    Delete {
        /// The user (a username or a user id).
        id: String,
    },
    /// A one-time link for the user to set a new password (shown once).
    ResetLink {
        /// The user (a username or a user id).
        id: String,
    },
}

#[derive(Subcommand)]
enum ScimCmd {
    /// Create a SCIM credential acting as you (an admin of the organization); its secret
    /// is shown once, with the SCIM base URL to give the identity provider.
    Create {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// What it is for (the identity provider's name).
        name: String,
    },
    /// The organization's SCIM credentials (never their secrets).
    List {
        /// The organization's id.
        #[arg(long)]
        org: String,
    },
    /// Revoke a SCIM credential: its next request is refused.
    Revoke {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The SCIM credential's id (from `scim list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum WebhooksCmd {
    /// Add an endpoint; its signing secret (`whsec_…`) is shown once.
    Create {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// Where events are POSTed (http:// or https://). (`--url` is the control
        /// plane's own address.)
        #[arg(long)]
        endpoint: String,
        /// Only these event types, comma-separated (default: every type): token.expiring,
        /// token.revoked, token.rotated, token.exposed, token.revoked_but_presented,
        /// token.used_from_new_network, user.deprovisioned.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// What the endpoint is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// The organization's endpoints (never their secrets).
    List {
        /// The organization's id.
        #[arg(long)]
        org: String,
    },
    /// Delete an endpoint: nothing more is sent to it.
    Delete {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The endpoint's id (from `webhooks list`).
        id: String,
    },
    /// An endpoint's delivery log, newest first.
    Deliveries {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The endpoint's id (from `webhooks list`).
        id: String,
    },
    /// Send a message again now, with the same webhook-id.
    Resend {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The endpoint's id (from `webhooks list`).
        id: String,
        /// The message's id (the webhook-id, from `webhooks deliveries`).
        message: String,
    },
}

#[derive(Subcommand)]
enum ScopesCmd {
    /// The organization's scopes and whom they are granted to (org admins).
    List {
        /// The organization's id.
        #[arg(long)]
        org: String,
    },
    /// Add a scope to the catalogue (org admins).
    Create {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The scope's name, e.g. `orders:read`.
        name: String,
        /// What the scope lets a token do, in words.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Change a scope's description (org admins).
    Update {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The scope's name, e.g. `orders:read`.
        name: String,
        /// The new description.
        #[arg(long)]
        description: String,
    },
    /// Delete a scope and its grants; live tokens lose it at every edge (org admins).
    Delete {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The scope's name, e.g. `orders:read`.
        name: String,
    },
    /// Grant a scope to a role or to one user (org admins).
    Grant {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The scope's name, e.g. `orders:read`.
        name: String,
        #[command(flatten)]
        to: GranteeArgs,
    },
    /// Withdraw a scope from a role or a user; their live tokens lose it at every edge.
    Withdraw {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The scope's name, e.g. `orders:read`.
        name: String,
        #[command(flatten)]
        to: GranteeArgs,
    },
    /// The scopes your tokens (or a user's, for an org admin) may carry.
    Granted {
        /// A user of your organization (id or username); default: you.
        #[arg(long)]
        user: Option<String>,
    },
}

/// A role or one user.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct GranteeArgs {
    /// admin, user, partner or readonly.
    #[arg(long)]
    role: Option<String>,
    /// A user of the organization (id or username).
    #[arg(long)]
    user: Option<String>,
}

#[derive(Subcommand)]
enum SsoCmd {
    /// The organization's single sign-on connection and the redirect URI to register at
    /// the identity provider (never the client secret).
    Show {
        /// The organization's id.
        #[arg(long)]
        org: String,
    },
    /// Create or replace the organization's single sign-on connection.
    Set {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The identity provider's issuer URL, e.g. https://login.example.com (discovery
        /// reads <issuer>/.well-known/openid-configuration).
        #[arg(long)]
        issuer: String,
        /// The client id registered at the identity provider.
        #[arg(long)]
        client_id: String,
        /// A file holding the client secret on its first line (`-` reads it from stdin);
        /// required the first time, kept when omitted afterwards.
        #[arg(long)]
        client_secret_file: Option<PathBuf>,
        /// An email domain whose people sign in through this provider; repeatable.
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// Refuse password sign-in for the organization's users (admins keep a
        /// break-glass password sign-in, marked in the audit log).
        #[arg(long)]
        require_sso: bool,
        /// The role of a user created at first sign-in when no group maps: user, readonly,
        /// admin (partner in a partner organization). Default: user.
        #[arg(long)]
        default_role: Option<String>,
        /// GROUP=ROLE: a user in GROUP (the ID token's `groups` claim) gets ROLE at first
        /// sign-in; repeatable, the first group that matches wins.
        #[arg(long = "group-role")]
        group_roles: Vec<String>,
        /// Set the role from the groups at every sign-in, not only at the first (the
        /// organization's last enabled admin is never demoted).
        #[arg(long)]
        sync_roles: bool,
    },
    /// Delete the organization's single sign-on connection (passwords work again).
    Delete {
        /// The organization's id.
        #[arg(long)]
        org: String,
    },
    /// Every organization's claims of email domains (root admins): a claim sends people
    /// to the organization's identity provider only once approved.
    Domains {
        /// Only the claims waiting for approval.
        #[arg(long)]
        pending: bool,
    },
    /// Approve an organization's claim of an email domain (root admins).
    Approve {
        /// The domain, e.g. example.com.
        domain: String,
        /// The claiming organization's id.
        #[arg(long)]
        org: String,
    },
    /// Withdraw the approval of an organization's claim of an email domain (root admins).
    Withdraw {
        /// The domain, e.g. example.com.
        domain: String,
        /// The claiming organization's id.
        #[arg(long)]
        org: String,
    },
}

#[derive(Subcommand)]
enum EdgesCmd {
    /// Create an edge credential; its secret is shown once.
    Create {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// A name for the edge, e.g. `envoy-eu-1`.
        name: String,
    },
    /// The organization's edge credentials (never their secrets).
    List {
        /// The organization's id.
        #[arg(long)]
        org: String,
    },
    /// Revoke an edge credential: the edges using it stop reporting at once.
    Revoke {
        /// The organization's id.
        #[arg(long)]
        org: String,
        /// The edge credential's id (from `edges list`).
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use crate::api::{routes, CliCommand};
    use clap::CommandFactory;

    /// `tessera <words>`'s subcommand, if it exists.
    fn find(words: &str) -> Option<clap::Command> {
        let mut cmd = Cli::command();
        for w in words.split(' ') {
            cmd = cmd.find_subcommand(w)?.clone();
        }
        Some(cmd)
    }

    /// Every subcommand under `cmd`, with its full name.
    fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let name = format!("{prefix} {}", sub.get_name()).trim().to_string();
            out.push((name.clone(), sub.clone()));
            walk(&name, sub, out);
        }
    }

    #[test]
    fn every_api_operation_has_a_command_or_a_reason() {
        let mut missing = Vec::new();
        let mut named = std::collections::BTreeSet::new();
        for r in routes() {
            match r.cli {
                None => missing.push(format!("{} {}: no command and no reason", r.method, r.path)),
                Some(CliCommand::Command(words)) => {
                    if find(words).is_none() {
                        missing.push(format!(
                            "{} {}: `tessera {words}` does not exist",
                            r.method, r.path
                        ));
                    }
                    named.insert(words);
                }
                Some(CliCommand::NotForPeople(why)) => {
                    assert!(why.len() > 10, "{} {}: say why", r.method, r.path)
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
        // And every client command is one an operation names (serve, admin and help are
        // not API clients).
        let mut all = Vec::new();
        walk("", &Cli::command(), &mut all);
        let unnamed: Vec<&str> = all
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| {
                let top = n.split(' ').next().unwrap_or_default();
                !["serve", "admin", "help"].contains(&top)
                    && !n.ends_with(" help")
                    && find(n).is_some_and(|c| !c.has_subcommands())
                    && !named.contains(n)
            })
            .collect();
        assert!(
            unnamed.is_empty(),
            "commands no operation names: {unnamed:?}"
        );
    }

    #[test]
    fn every_command_and_argument_says_what_it_is() {
        let mut all = Vec::new();
        walk("", &Cli::command(), &mut all);
        let mut bare = Vec::new();
        for (name, cmd) in &all {
            if name == "help" || name.ends_with(" help") {
                continue;
            }
            if cmd.get_about().is_none() {
                bare.push(format!("`tessera {name}` has no help text"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) || arg.is_global_set() {
                    continue;
                }
                if arg.get_help().is_none() {
                    bare.push(format!("`tessera {name}`: `{id}` has no help text"));
                }
            }
        }
        for arg in Cli::command().get_arguments() {
            if arg.get_help().is_none() && !["help", "version"].contains(&arg.get_id().as_str()) {
                bare.push(format!("global `{}` has no help text", arg.get_id()));
            }
        }
        assert!(bare.is_empty(), "{}", bare.join("\n"));
    }
}
