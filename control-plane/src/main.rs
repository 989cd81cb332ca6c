//! `tessera`: the control-plane server and its command-line client.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::PathBuf;
use tessera_control_plane::api::handlers as api_render;
use tessera_control_plane::client::{encode, Client};
use tessera_control_plane::crypto::{self, MasterKey};
use tessera_control_plane::model::KeyAlg;
use tessera_control_plane::service::{self, Ctx};
use tessera_control_plane::store::sqlite::SqliteStore;
use tessera_control_plane::store::Store;
use tessera_control_plane::{app, timefmt, AppState, Config};

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tessera control plane and CLI")]
struct Cli {
    /// The control plane's URL (client commands).
    #[arg(
        long,
        global = true,
        env = "TESSERA_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// A Tessera token to authenticate with (client commands).
    #[arg(long, global = true, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Csv,
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
    /// Exchange an API token for a short-lived access token.
    Exchange {
        /// The API token (default: --token).
        api_token: Option<String>,
    },
    /// Show the authenticated user.
    Whoami,
}

#[derive(Args)]
struct DbArgs {
    #[arg(long, default_value = "./tessera.db")]
    db: PathBuf,
    /// A file holding the master key (64 hex digits or base64 of 32 bytes).
    #[arg(long, env = "TESSERA_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
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
        #[arg(long, conflicts_with = "expires_at")]
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
        #[arg(long)]
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
}

#[derive(Subcommand)]
enum EdgesCmd {
    Create {
        #[arg(long)]
        org: String,
        name: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(format!("cannot start the runtime: {e}")),
    };
    if let Err(e) = rt.block_on(run(cli)) {
        fail(e);
    }
}

fn fail(msg: String) -> ! {
    eprintln!("tessera: {msg}");
    std::process::exit(1)
}

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

/// Opens the database and checks the master key against the one it was first used with.
fn open_store(db: &DbArgs) -> Result<(Box<dyn Store>, MasterKey), String> {
    let master = load_master_key(db)?;
    let store: Box<dyn Store> =
        Box::new(SqliteStore::open(&db.db).map_err(|e| format!("{}: {e}", db.db.display()))?);
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
    Ok((store, master))
}

fn stored_base_url(store: &dyn Store) -> Result<Option<String>, String> {
    store
        .read(|tx| tx.get_setting("base_url"))
        .map_err(|e: tessera_control_plane::store::StoreError| e.to_string())
}

async fn run(cli: Cli) -> Result<(), String> {
    let client = || Client::new(&cli.url, cli.token.clone());
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Admin(AdminCmd::GenMasterKey) => {
            println!(
                "{}",
                MasterKey::generate().map_err(|e| e.to_string())?.to_hex()
            );
            Ok(())
        }
        Command::Admin(AdminCmd::Bootstrap {
            db,
            org,
            org_name,
            admin,
            alg,
            base_url,
        }) => {
            let alg = KeyAlg::parse(&alg).ok_or("--alg: EdDSA or ES256")?;
            let (store, master) = open_store(&db)?;
            let base = match base_url {
                Some(b) => b.trim_end_matches('/').to_string(),
                None => stored_base_url(store.as_ref())?
                    .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            };
            let b = store
                .write(|tx| {
                    tx.set_setting("base_url", &base)?;
                    let ctx = Ctx::new(&base, &master, timefmt::now(), 1800);
                    service::orgs::bootstrap(tx, &ctx, &org, &org_name, &admin, alg)
                })
                .map_err(|e: service::Error| e.to_string())?;
            match cli.output {
                Output::Json => println!(
                    "{}",
                    json!({"org": b.org.id, "user": b.user.id, "username": b.user.username, "token_id": b.token.id, "token": b.jwt, "base_url": base})
                ),
                _ => {
                    eprintln!(
                        "Organization {} (issuer {base}/v1/orgs/{}), admin {} ({}).\nThis admin token is shown once; it expires {}:",
                        b.org.id,
                        b.org.id,
                        b.user.username,
                        b.user.id,
                        timefmt::format(b.token.expires_at)
                    );
                    println!("{}", b.jwt);
                }
            }
            Ok(())
        }
        Command::Tokens(cmd) => tokens(&client()?, cli.output, cmd).await,
        Command::Orgs(cmd) => orgs(&client()?, cli.output, cmd).await,
        Command::Users(cmd) => users(&client()?, cli.output, cmd).await,
        Command::Edges(EdgesCmd::Create { org, name }) => {
            let v = client()?
                .json(
                    "POST",
                    &format!("/v1/orgs/{}/edge-credentials", encode(&org)),
                    &json!({"name": name}),
                )
                .await?
                .ok_json()?;
            print_one(cli.output, &v)
        }
        Command::Exchange { api_token } => {
            let t = api_token
                .or(cli.token.clone())
                .ok_or("give the API token (or --token)")?;
            let c = Client::new(&cli.url, None)?;
            let v = c
                .json("POST", "/v1/auth/accesstoken", &json!({"refreshToken": t}))
                .await?
                .ok_json()?;
            match cli.output {
                Output::Table => {
                    println!(
                        "{}",
                        v.get("access_token").and_then(Value::as_str).unwrap_or("")
                    );
                    Ok(())
                }
                o => print_one(o, &v),
            }
        }
        Command::Whoami => {
            let v = client()?.get("/v1/me").await?.ok_json()?;
            print_one(cli.output, &v)
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let (store, master) = open_store(&args.db)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let base_url = match args.base_url {
        Some(b) => {
            let b = b.trim_end_matches('/').to_string();
            store
                .write(|tx| tx.set_setting("base_url", &b))
                .map_err(|e| e.to_string())?;
            b
        }
        None => stored_base_url(store.as_ref())?.unwrap_or_else(|| format!("http://{addr}")),
    };
    if args.access_ttl < 60 || args.access_ttl > 86_400 {
        return Err("--access-ttl: 60..=86400 seconds".into());
    }
    let state = AppState::new(
        store,
        Config {
            base_url: base_url.clone(),
            master,
            access_ttl: args.access_ttl,
        },
    );
    println!("tessera: listening on http://{addr} (base URL {base_url})");
    let _ = std::io::stdout().flush();
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await
    .map_err(|e| e.to_string())
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
}

fn id_path(id: &str, suffix: &str) -> String {
    format!("/v1/tokens/{}{suffix}", encode(id))
}

async fn tokens(c: &Client, out: Output, cmd: TokensCmd) -> Result<(), String> {
    match cmd {
        TokensCmd::Create {
            name,
            description,
            user,
            lifetime_days,
            expires_at,
            not_before,
            scopes,
            ips,
            disabled,
        } => {
            let mut body = json!({"name": name, "description": description, "scopes": scopes, "ip_allow": ips, "enabled": !disabled});
            let m = body.as_object_mut().ok_or("internal")?;
            if let Some(u) = user {
                m.insert("user".into(), json!(u));
            }
            if let Some(d) = lifetime_days {
                m.insert("lifetime_days".into(), json!(d));
            }
            if let Some(e) = expires_at {
                m.insert("expires_at".into(), json!(e));
            }
            if let Some(n) = not_before {
                m.insert("not_before".into(), json!(n));
            }
            let v = c.json("POST", "/v1/tokens", &body).await?.ok_json()?;
            print_token(out, &v)
        }
        TokensCmd::List(f) => {
            let v = c
                .get(&format!("/v1/tokens{}", f.query()))
                .await?
                .ok_json()?;
            let list = v
                .get("tokens")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            print_tokens(out, &list)?;
            if out == Output::Table {
                eprintln!(
                    "{} of {} (page {})",
                    list.len(),
                    v.get("total").and_then(Value::as_i64).unwrap_or(0),
                    v.get("page").and_then(Value::as_i64).unwrap_or(1)
                );
            }
            Ok(())
        }
        TokensCmd::Export(f) => {
            let r = c.get(&format!("/v1/tokens.csv{}", f.query())).await?;
            if r.status != 200 {
                return Err(r.error_text());
            }
            print!("{}", r.text());
            Ok(())
        }
        TokensCmd::Show { id } => {
            let v = c.get(&id_path(&id, "")).await?.ok_json()?;
            print_token(out, &v)
        }
        TokensCmd::Download { id } => mint_cmd(c, out, &id_path(&id, "/download")).await,
        TokensCmd::Regenerate { id } => mint_cmd(c, out, &id_path(&id, "/regenerate")).await,
        TokensCmd::Revoke { id } => simple(c, out, "POST", &id_path(&id, "/revoke")).await,
        TokensCmd::Enable { id } => simple(c, out, "POST", &id_path(&id, "/enable")).await,
        TokensCmd::Disable { id } => simple(c, out, "POST", &id_path(&id, "/disable")).await,
        TokensCmd::Delete { id } => {
            let v = c
                .send("DELETE", &id_path(&id, ""), "application/json", Vec::new())
                .await?
                .ok_json()?;
            print_one(out, &v)
        }
        TokensCmd::RevokeAll { user, org } => {
            let body = match (user, org) {
                (Some(u), _) => json!({"user": u}),
                (None, Some(o)) => json!({"org": o}),
                (None, None) => return Err("give --user or --org".into()),
            };
            let v = c
                .json("POST", "/v1/tokens/revoke-all", &body)
                .await?
                .ok_json()?;
            print_one(out, &v)
        }
        TokensCmd::Edit {
            id,
            name,
            description,
            expires_at,
            lifetime_days,
            not_before,
            scopes,
            clear_scopes,
            ips,
            clear_ips,
            enable,
            disable,
        } => {
            let mut m = Map::new();
            if let Some(v) = name {
                m.insert("name".into(), json!(v));
            }
            if let Some(v) = description {
                m.insert("description".into(), json!(v));
            }
            if let Some(v) = expires_at {
                m.insert("expires_at".into(), json!(v));
            }
            if let Some(v) = lifetime_days {
                m.insert("lifetime_days".into(), json!(v));
            }
            if let Some(v) = not_before {
                m.insert("not_before".into(), json!(v));
            }
            if clear_scopes || !scopes.is_empty() {
                m.insert("scopes".into(), json!(scopes));
            }
            if clear_ips || !ips.is_empty() {
                m.insert("ip_allow".into(), json!(ips));
            }
            if enable || disable {
                m.insert("enabled".into(), json!(enable));
            }
            let v = c
                .json("PATCH", &id_path(&id, ""), &Value::Object(m))
                .await?
                .ok_json()?;
            if out == Output::Table && v.get("jwt_revoked") == Some(&json!(true)) {
                eprintln!("The outstanding JWT was revoked: the token is Pending until its user downloads it again.");
            }
            let token = v.get("token").cloned().unwrap_or(Value::Null);
            match out {
                Output::Json => print_one(out, &v),
                _ => print_token(out, &token),
            }
        }
        TokensCmd::AuthLog { id } => {
            let v = c.get(&id_path(&id, "/auth-log")).await?.ok_json()?;
            let list = v
                .get("events")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            print_list(
                out,
                &list,
                &["at", "outcome", "reason", "ip", "method", "path", "source"],
            )
        }
    }
}

/// Download or regenerate: the table output is only the JWT, for `$(tessera tokens download ...)`.
async fn mint_cmd(c: &Client, out: Output, path: &str) -> Result<(), String> {
    let v = c.json("POST", path, &json!({})).await?.ok_json()?;
    match out {
        Output::Table => {
            eprintln!("This JWT is shown once; store it now.");
            println!("{}", v.get("jwt").and_then(Value::as_str).unwrap_or(""));
            Ok(())
        }
        o => print_one(o, &v),
    }
}

async fn simple(c: &Client, out: Output, method: &str, path: &str) -> Result<(), String> {
    let v = c.json(method, path, &json!({})).await?.ok_json()?;
    print_token(out, &v)
}

async fn orgs(c: &Client, out: Output, cmd: OrgsCmd) -> Result<(), String> {
    let cols = [
        "id",
        "name",
        "partner",
        "managed_by",
        "key_alg",
        "max_lifetime_days",
        "issuer",
    ];
    match cmd {
        OrgsCmd::List => {
            let v = c.get("/v1/orgs").await?.ok_json()?;
            print_list(
                out,
                v.get("orgs")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                &cols,
            )
        }
        OrgsCmd::Show { id } => print_one(
            out,
            &c.get(&format!("/v1/orgs/{}", encode(&id)))
                .await?
                .ok_json()?,
        ),
        OrgsCmd::Create {
            id,
            name,
            partner,
            managed_by,
            alg,
            max_lifetime_days,
            audience,
        } => {
            let mut m = Map::new();
            m.insert("id".into(), json!(id));
            m.insert("partner".into(), json!(partner));
            for (k, v) in [
                ("name", name),
                ("managed_by", managed_by),
                ("key_alg", alg),
                ("audience", audience),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            if let Some(d) = max_lifetime_days {
                m.insert("max_lifetime_days".into(), json!(d));
            }
            print_one(
                out,
                &c.json("POST", "/v1/orgs", &Value::Object(m))
                    .await?
                    .ok_json()?,
            )
        }
        OrgsCmd::RotateKey { id, alg } => {
            let body = match alg {
                Some(a) => json!({"alg": a}),
                None => json!({}),
            };
            let v = c
                .json(
                    "POST",
                    &format!("/v1/orgs/{}/keys/rotate", encode(&id)),
                    &body,
                )
                .await?
                .ok_json()?;
            print_one(out, &v)
        }
    }
}

async fn users(c: &Client, out: Output, cmd: UsersCmd) -> Result<(), String> {
    let cols = ["id", "org", "username", "display_name", "role", "delegated"];
    match cmd {
        UsersCmd::List { org } => {
            let v = c
                .get(&format!("/v1/orgs/{}/users", encode(&org)))
                .await?
                .ok_json()?;
            print_list(
                out,
                v.get("users")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                &cols,
            )
        }
        UsersCmd::Show { id } => print_one(
            out,
            &c.get(&format!("/v1/users/{}", encode(&id)))
                .await?
                .ok_json()?,
        ),
        UsersCmd::Create {
            org,
            username,
            role,
            display_name,
            delegated,
        } => {
            let mut body = json!({"username": username, "role": role, "delegated": delegated});
            if let (Some(d), Some(m)) = (display_name, body.as_object_mut()) {
                m.insert("display_name".into(), json!(d));
            }
            let v = c
                .json("POST", &format!("/v1/orgs/{}/users", encode(&org)), &body)
                .await?
                .ok_json()?;
            print_one(out, &v)
        }
        UsersCmd::Update {
            id,
            role,
            display_name,
            delegated,
        } => {
            let mut m = Map::new();
            if let Some(r) = role {
                m.insert("role".into(), json!(r));
            }
            if let Some(d) = display_name {
                m.insert("display_name".into(), json!(d));
            }
            if let Some(d) = delegated {
                m.insert("delegated".into(), json!(d));
            }
            let v = c
                .json(
                    "PATCH",
                    &format!("/v1/users/{}", encode(&id)),
                    &Value::Object(m),
                )
                .await?
                .ok_json()?;
            print_one(out, &v)
        }
    }
}

const TOKEN_TABLE: [&str; 7] = [
    "id",
    "username",
    "name",
    "status",
    "expires_at",
    "scopes",
    "last_used_at",
];

fn print_tokens(out: Output, tokens: &[Value]) -> Result<(), String> {
    match out {
        Output::Csv => {
            print!("{}", api_render::tokens_to_csv(tokens));
            Ok(())
        }
        _ => print_list(out, tokens, &TOKEN_TABLE),
    }
}

fn print_token(out: Output, token: &Value) -> Result<(), String> {
    match out {
        Output::Json => print_one(out, token),
        _ => print_tokens(out, std::slice::from_ref(token)),
    }
}

fn print_one(out: Output, v: &Value) -> Result<(), String> {
    match (out, v) {
        (Output::Json, _) => print_list(out, std::slice::from_ref(v), &[]),
        (_, Value::Object(m)) => {
            if out == Output::Csv {
                let keys: Vec<&str> = m.keys().map(String::as_str).collect();
                return print_list(out, std::slice::from_ref(v), &keys);
            }
            let width = m.keys().map(|k| k.len()).max().unwrap_or(0);
            for (k, val) in m {
                println!(
                    "{k:width$}  {}",
                    api_render::cell(Some(val)).replace('\n', "\\n")
                );
            }
            Ok(())
        }
        _ => {
            println!("{v}");
            Ok(())
        }
    }
}

fn print_list(out: Output, rows: &[Value], cols: &[&str]) -> Result<(), String> {
    match out {
        Output::Json => {
            let v = if rows.len() == 1 && cols.is_empty() {
                rows[0].clone()
            } else {
                Value::from(rows.to_vec())
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
            );
        }
        Output::Csv => {
            let mut s = tessera_control_plane::csv::row(cols);
            for r in rows {
                let cells: Vec<String> = cols.iter().map(|c| api_render::cell(r.get(*c))).collect();
                s.push_str(&tessera_control_plane::csv::row(&cells));
            }
            print!("{s}");
        }
        Output::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    cols.iter()
                        .map(|c| api_render::cell(r.get(*c)).replace('\n', "\\n"))
                        .collect()
                })
                .collect();
            let widths: Vec<usize> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    cells
                        .iter()
                        .map(|r| r[i].chars().count())
                        .chain([c.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |fields: Vec<String>| {
                fields
                    .iter()
                    .zip(&widths)
                    .map(|(f, w)| format!("{f:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            println!("{}", line(cols.iter().map(|c| c.to_uppercase()).collect()));
            for r in cells {
                println!("{}", line(r));
            }
        }
    }
    Ok(())
}
