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
            "{source} holds more than one line: {token_alone} (a JWT is one line, eyJ...)"
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
    /// The scope catalogue: what tokens may carry, granted to roles and users.
    #[command(subcommand)]
    Scopes(ScopesCmd),
    /// Exchange an API token for a short-lived access token.
    Exchange {
        /// The API token; `-` reads it from stdin (default: the token of TESSERA_TOKEN,
        /// --token-file or --token). Given here it shows in the process list: prefer `-`.
        api_token: Option<String>,
    },
    /// Show the authenticated user.
    Whoami,
    /// The audit log of management actions (org admins).
    AuditLog {
        /// The organization (default: your own).
        #[arg(long)]
        org: Option<String>,
        /// Only entries about this id (a user, token or credential).
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        page: Option<i64>,
        #[arg(long)]
        per_page: Option<i64>,
    },
}

#[derive(Args)]
struct DbArgs {
    /// The database: a SQLite file (a path or sqlite:///path), or PostgreSQL
    /// (postgres://user@host:port/db).
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
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "")]
        org_name: String,
        #[arg(long)]
        admin: String,
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
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    expires_before: Option<String>,
    /// name, created_at, expires_at, last_used_at, user, status; '-' first for descending.
    #[arg(long, allow_hyphen_values = true)]
    sort: Option<String>,
    #[arg(long)]
    page: Option<i64>,
    #[arg(long)]
    per_page: Option<i64>,
}

impl Filters {
    fn query(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={}", encode(&v)));
            }
        };
        add("q", self.q.clone());
        add("status", self.status.clone());
        add("user", self.user.clone());
        add("expires_before", self.expires_before.clone());
        add("sort", self.sort.clone());
        add("page", self.page.map(|p| p.to_string()));
        add("per_page", self.per_page.map(|p| p.to_string()));
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

#[derive(Subcommand)]
enum TokensCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The owner (user id or username); default: you.
        #[arg(long)]
        user: Option<String>,
        /// 30, 60, 90, 180 or 365.
        #[arg(long, conflicts_with = "expires_at", allow_negative_numbers = true)]
        lifetime_days: Option<i64>,
        /// A custom expiry (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long)]
        not_before: Option<String>,
        /// Repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Allowed client CIDR; repeatable.
        #[arg(long = "ip")]
        ips: Vec<String>,
        #[arg(long)]
        disabled: bool,
    },
    List(Filters),
    Show {
        id: String,
    },
    /// Print the JWT (once).
    Download {
        id: String,
    },
    Regenerate {
        id: String,
    },
    Revoke {
        id: String,
    },
    RevokeAll {
        #[arg(long, required_unless_present = "org", conflicts_with = "org")]
        user: Option<String>,
        #[arg(long)]
        org: Option<String>,
    },
    Edit {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        lifetime_days: Option<i64>,
        #[arg(long)]
        not_before: Option<String>,
        /// Replaces the scopes; repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long)]
        clear_scopes: bool,
        /// Replaces the IP filter; repeatable.
        #[arg(long = "ip")]
        ips: Vec<String>,
        #[arg(long)]
        clear_ips: bool,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    Enable {
        id: String,
    },
    Disable {
        id: String,
    },
    Delete {
        id: String,
    },
    /// CSV of the matching tokens.
    Export(Filters),
    /// Authentication log of one token.
    AuthLog {
        id: String,
    },
}

#[derive(Subcommand)]
enum OrgsCmd {
    List,
    Show {
        id: String,
    },
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        partner: bool,
        #[arg(long)]
        managed_by: Option<String>,
        #[arg(long)]
        alg: Option<String>,
        #[arg(long)]
        max_lifetime_days: Option<i64>,
        #[arg(long)]
        audience: Option<String>,
    },
    RotateKey {
        id: String,
        #[arg(long)]
        alg: Option<String>,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    List {
        #[arg(long)]
        org: String,
    },
    Show {
        id: String,
    },
    Create {
        #[arg(long)]
        org: String,
        username: String,
        /// admin, user, partner or readonly.
        #[arg(long)]
        role: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        delegated: bool,
    },
    Update {
        id: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        delegated: Option<bool>,
    },
    /// Disable a user: their sessions end, their tokens are suspended until enabled again.
    Disable {
        /// The user's id.
        id: String,
    },
    /// Enable a disabled user again (their suspended tokens come back).
    Enable {
        /// The user's id.
        id: String,
    },
    /// Delete a user: their tokens are revoked; this cannot be undone.
    Delete {
        /// The user's id.
        id: String,
    },
    /// A one-time link for the user to set a new password (shown once).
    ResetLink {
        /// The user's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum ScopesCmd {
    /// The organization's scopes and whom they are granted to (org admins).
    List {
        #[arg(long)]
        org: String,
    },
    /// Add a scope to the catalogue (org admins).
    Create {
        #[arg(long)]
        org: String,
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Change a scope's description (org admins).
    Update {
        #[arg(long)]
        org: String,
        name: String,
        #[arg(long)]
        description: String,
    },
    /// Delete a scope and its grants; live tokens lose it at every edge (org admins).
    Delete {
        #[arg(long)]
        org: String,
        name: String,
    },
    /// Grant a scope to a role or to one user (org admins).
    Grant {
        #[arg(long)]
        org: String,
        name: String,
        #[command(flatten)]
        to: GranteeArgs,
    },
    /// Withdraw a scope from a role or a user; their live tokens lose it at every edge.
    Withdraw {
        #[arg(long)]
        org: String,
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
enum EdgesCmd {
    /// Create an edge credential; its secret is shown once.
    Create {
        #[arg(long)]
        org: String,
        name: String,
    },
    /// The organization's edge credentials (never their secrets).
    List {
        #[arg(long)]
        org: String,
    },
    /// Revoke an edge credential: the edges using it stop reporting at once.
    Revoke {
        #[arg(long)]
        org: String,
        /// The edge credential's id (from `edges list`).
        id: String,
    },
}
