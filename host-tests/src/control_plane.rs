//! Starting and stopping the real control plane (`tessera serve`) on loopback, and a few
//! REST helpers for what the host tests do to tokens.
//!
//! [`ControlPlane::start`] creates a temporary directory with a master key and a SQLite
//! database, bootstraps the organization with its admins (`tessera admin bootstrap`),
//! starts `tessera serve --listen 127.0.0.1:<port>` and waits for `/healthz`. Dropping it
//! kills the server and waits for it. [`ControlPlane::kill`] and [`ControlPlane::restart`]
//! stop it hard (SIGKILL) and start it again on the same database and the same port, for
//! outage tests.
//!
//! With [`ControlPlaneOptions::database`] set (a `postgres://` URL) the server runs on that
//! database instead of a SQLite file, and [`ControlPlane::replica`] starts further
//! `tessera serve` processes on the same database, with the same master key and base URL
//! (so one issuer), each on its own port.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{Request, Response};
use crate::lookup_tool;
use crate::tmp::TempDir;

/// Environment variable naming the control-plane binary (`target/debug/tessera`).
pub const ENV_CP_BIN: &str = "TESSERA_CP_BIN";

/// The control-plane binary from `TESSERA_CP_BIN`. Panics (failing the test) when it is
/// missing, naming `cargo xtask test`, which builds it and sets the variable.
/// The scopes a bootstrapped admin's token carries besides `tessera:manage`.
pub const ADMIN_SCOPES: &str = "read write admin update wrk";

pub fn control_plane_path() -> PathBuf {
    match lookup_tool(ENV_CP_BIN) {
        Ok(p) => p,
        Err(_) => panic!("{ENV_CP_BIN} does not name the control-plane binary: {CP_RUN_HINT}"),
    }
}

/// What to do when the control-plane binary is missing.
pub const CP_RUN_HINT: &str = "run `cargo xtask test` (it builds the control plane with \
     `cargo build -p tessera-control-plane --bin tessera` and runs these tests with \
     TESSERA_CP_BIN=<target/debug/tessera>, TESSERA_ENVOY and TESSERA_FILTER_WASM set)";

/// What to bootstrap.
#[derive(Clone, Debug)]
pub struct ControlPlaneOptions {
    /// The `tessera` binary.
    pub bin: PathBuf,
    /// The organization id.
    pub org: String,
    /// Admins to bootstrap, the first one being [`ControlPlane::admin_token`]'s. Each gets
    /// a one-time admin token ([`ControlPlane::token_of`]). None: the database stays empty
    /// and `serve` prints its first-run setup link ([`ControlPlane::setup_link`]).
    pub admins: Vec<String>,
    /// How long to wait for `/healthz` (a safety net, default 30 s).
    pub ready_timeout: Duration,
    /// An external database URL (`postgres://…`, created and empty); `None`: a SQLite
    /// file in the temporary directory.
    pub database: Option<String>,
    /// More arguments for `tessera serve` (e.g. `--secret-scanning-keys-url <url>`).
    pub serve_args: Vec<String>,
}

impl ControlPlaneOptions {
    /// Org `acme` with admins `alice` and `bob`.
    pub fn new(bin: &Path) -> ControlPlaneOptions {
        ControlPlaneOptions {
            bin: bin.to_path_buf(),
            org: "acme".into(),
            admins: vec!["alice".into(), "bob".into()],
            ready_timeout: Duration::from_secs(30),
            database: None,
            serve_args: Vec::new(),
        }
    }

    /// Runs on the database at `url` (e.g. [`crate::PgCluster::create_database`]'s).
    pub fn database(mut self, url: &str) -> ControlPlaneOptions {
        self.database = Some(url.to_owned());
        self
    }
}

/// A running control plane. Dropping it kills the process and waits for it, then removes
/// its temporary directory (database, master key, log).
pub struct ControlPlane {
    options: ControlPlaneOptions,
    child: Option<Child>,
    dir: TempDir,
    addr: SocketAddr,
    /// The URL tokens are issued under: `http://<addr>` of the first process, shared by
    /// its replicas.
    base_url: String,
    /// The SQLite file, or the external database URL.
    db: PathBuf,
    /// `(username, user id, admin token)` in bootstrap order.
    admins: Vec<(String, String, String)>,
    /// `(username, one-time sign-in link)` for the web page, in bootstrap order.
    links: Vec<(String, String)>,
}

/// A free loopback port (bound and released: a small race, acceptable in tests; the caller
/// retries when `serve` cannot bind it).
fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

impl ControlPlane {
    /// Bootstraps a fresh database (unless no admin is named) and starts `tessera serve` on
    /// a free loopback port.
    pub fn start(options: &ControlPlaneOptions) -> Result<ControlPlane, String> {
        let dir = TempDir::new("cp").map_err(|e| format!("temp dir: {e}"))?;
        let key = Command::new(&options.bin)
            .args(["admin", "gen-master-key"])
            .output()
            .map_err(|e| format!("running {}: {e}", options.bin.display()))?;
        if !key.status.success() {
            return Err(format!(
                "tessera admin gen-master-key failed: {}",
                String::from_utf8_lossy(&key.stderr)
            ));
        }
        std::fs::write(dir.path().join("master.key"), &key.stdout)
            .map_err(|e| format!("writing the master key: {e}"))?;
        let mut cp = ControlPlane {
            options: options.clone(),
            child: None,
            dir,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            base_url: String::new(),
            db: PathBuf::new(),
            admins: Vec::new(),
            links: Vec::new(),
        };
        // The port is chosen before `serve` binds it (the base URL, and so every issuer,
        // derives from it): if another process takes it in between, start over with a
        // fresh database on another port. An external database is bootstrapped once; a
        // later attempt keeps its base URL and only listens elsewhere.
        let mut last = String::new();
        for attempt in 0..5 {
            cp.addr = SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                free_port().map_err(|e| format!("free port: {e}"))?,
            ));
            match &options.database {
                Some(url) if attempt > 0 => cp.db = PathBuf::from(url),
                Some(url) => {
                    cp.db = PathBuf::from(url);
                    cp.base_url = cp.url();
                    for admin in &options.admins {
                        cp.bootstrap_admin(admin)?;
                    }
                }
                None => {
                    cp.db = cp.dir.path().join(format!("tessera-{attempt}.db"));
                    cp.base_url = cp.url();
                    cp.admins.clear();
                    cp.links.clear();
                    for admin in &options.admins {
                        cp.bootstrap_admin(admin)?;
                    }
                }
            }
            match cp.spawn() {
                Ok(()) => return Ok(cp),
                Err(e) => last = e,
            }
        }
        Err(format!("the control plane did not start: {last}"))
    }

    /// Starts one more `tessera serve` on this one's external database, with the same
    /// master key and base URL (so the same issuer), on its own free port; no bootstrap.
    /// The admins' tokens work on every replica.
    pub fn replica(&self) -> Result<ControlPlane, String> {
        if self.options.database.is_none() {
            return Err(
                "replicas need an external database (ControlPlaneOptions::database)".into(),
            );
        }
        let dir = TempDir::new("cp-replica").map_err(|e| format!("temp dir: {e}"))?;
        std::fs::copy(
            self.dir.path().join("master.key"),
            dir.path().join("master.key"),
        )
        .map_err(|e| format!("copying the master key: {e}"))?;
        let mut cp = ControlPlane {
            options: self.options.clone(),
            child: None,
            dir,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            base_url: self.base_url.clone(),
            db: self.db.clone(),
            admins: self.admins.clone(),
            links: self.links.clone(),
        };
        let mut last = String::new();
        for _ in 0..5 {
            cp.addr = SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                free_port().map_err(|e| format!("free port: {e}"))?,
            ));
            match cp.spawn() {
                Ok(()) => return Ok(cp),
                Err(e) => last = e,
            }
        }
        Err(format!("the replica did not start: {last}"))
    }

    fn bootstrap_admin(&mut self, admin: &str) -> Result<(), String> {
        let out = self
            .command()
            .args(["admin", "bootstrap", "--db"])
            .arg(&self.db)
            .args(["--org", &self.options.org, "--admin", admin])
            // The scopes the tests' tokens carry: a token the admin's token makes may
            // carry only scopes the admin's has (besides `tessera:manage`).
            .args(["--scopes", ADMIN_SCOPES, "--base-url"])
            .arg(&self.base_url)
            .args(["-o", "json"])
            .output()
            .map_err(|e| format!("tessera admin bootstrap: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tessera admin bootstrap --admin {admin} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("bootstrap output is not JSON: {e}"))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("bootstrap output has no {k}: {v}"))
        };
        self.admins
            .push((admin.to_owned(), field("user")?, field("token")?));
        self.links.push((admin.to_owned(), field("sign_in_link")?));
        Ok(())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.options.bin);
        cmd.current_dir(self.dir.path())
            .env(
                "TESSERA_MASTER_KEY_FILE",
                self.dir.path().join("master.key"),
            )
            .env_remove("TESSERA_MASTER_KEY")
            .env_remove("TESSERA_TOKEN")
            .env_remove("TESSERA_URL");
        cmd
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("log file: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = self
            .command()
            .args(["serve", "--db"])
            .arg(&self.db)
            .args(["--listen", &self.addr.to_string(), "--base-url"])
            .arg(&self.base_url)
            // Every edge and client of a host test or bench is 127.0.0.1: no per-address
            // share (the bench holds 1,000 long polls from it).
            .args(["--max-connections-per-address", "100000"])
            .args(&self.options.serve_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.options.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + self.options.ready_timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("tessera serve exited ({status}):\n{}", self.log()));
                }
            }
            if self.is_healthy() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "no /healthz after {:?}:\n{}",
                    self.options.ready_timeout,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn is_healthy(&self) -> bool {
        Request::get("/healthz")
            .timeout(Duration::from_secs(2))
            .send(self.addr)
            .map(|r| r.status == 200)
            .unwrap_or(false)
    }

    /// Stops the server hard (SIGKILL) and waits for it. The database and port stay.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): its sockets stay open and the kernel still accepts
    /// connections, but nothing is answered — a hung process or a partition rather than a
    /// crash. [`ControlPlane::resume`] (SIGCONT) lets it go on; drop still kills it.
    pub fn pause(&self) -> Result<(), String> {
        self.signal("-STOP")
    }

    /// Resumes a server frozen by [`ControlPlane::pause`].
    pub fn resume(&self) -> Result<(), String> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> Result<(), String> {
        let pid = self.pid().ok_or("the control plane is not running")?;
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .map_err(|e| format!("kill {signal} {pid}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill {signal} {pid}: {status}"))
        }
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server again on the same database and the same port (after
    /// [`ControlPlane::kill`]); waits for `/healthz`.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        // The port was ours a moment ago; give the kernel a few tries to release it.
        let mut last = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(format!("restart on {} failed: {last}", self.addr))
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (also the base URL tokens are issued under, except on a
    /// replica: see [`ControlPlane::base_url`]).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL tokens are issued under (the first process's URL, also on replicas).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The organization id.
    pub fn org(&self) -> &str {
        &self.options.org
    }

    /// The issuer of the org's tokens.
    pub fn issuer(&self) -> String {
        format!("{}/v1/orgs/{}", self.base_url, self.org())
    }

    /// The status list URI exactly as the org's tokens carry it.
    pub fn status_list_uri(&self) -> String {
        format!("{}/status-list", self.issuer())
    }

    /// The org's JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.issuer())
    }

    /// A workerd edge worker synced from this control plane: the org's issuer, its JWKS
    /// (read now), the status list required and polled every 900 ms, fail closed; its
    /// origin is `upstream`. Callers add their own bindings (usage reports, ...).
    pub fn workerd_options(&self, upstream: SocketAddr) -> crate::workerd::WorkerdOptions {
        let (workerd_bin, bundle) = crate::workerd::workerd_tools();
        let jwks_path = self.jwks_url().replacen(&self.url(), "", 1);
        let jwks = self
            .api("GET", &jwks_path, None, None)
            .unwrap_or_else(|e| panic!("JWKS: {e}"));
        let config = json!({
            "issuers": [self.issuer()],
            "audiences": ["tessera"],
            "jwks": jwks,
            "status": {"required": true, "fail_policy": "closed"},
        });
        crate::workerd::WorkerdOptions::new(
            &workerd_bin,
            &bundle,
            &config,
            crate::workerd::Origin::Url(format!("http://{upstream}")),
        )
        .var(
            "TESSERA_STATUS_URLS",
            &json!({ self.status_list_uri(): self.status_list_uri() }).to_string(),
        )
        .var("TESSERA_STATUS_TTL_MS", "900")
    }

    /// The first admin's token.
    pub fn admin_token(&self) -> &str {
        &self.admins[0].2
    }

    /// The last first-run setup link the server printed (a start on an empty database).
    pub fn setup_link(&self) -> Option<String> {
        self.log().lines().rev().find_map(|l| {
            l.find("http://")
                .filter(|_| l.contains("/#/setup/"))
                .map(|at| l[at..].trim().to_string())
        })
    }

    /// The bootstrap token of admin `username`.
    /// The bootstrapped admin's one-time sign-in link for the web page.
    pub fn sign_in_link_of(&self, username: &str) -> Option<&str> {
        self.links
            .iter()
            .find(|(u, _)| u == username)
            .map(|(_, l)| l.as_str())
    }

    pub fn token_of(&self, username: &str) -> Option<&str> {
        self.admins
            .iter()
            .find(|(u, _, _)| u == username)
            .map(|(_, _, t)| t.as_str())
    }

    /// The user id of admin `username`.
    pub fn user_id_of(&self, username: &str) -> Option<&str> {
        self.admins
            .iter()
            .find(|(u, _, _)| u == username)
            .map(|(_, id, _)| id.as_str())
    }

    /// The database file (the URL for an external database).
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// Where the server's output goes (removed on drop).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// The server's output so far (every start).
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    // -----------------------------------------------------------------------------------
    // Configurations pointing an Envoy at this control plane

    /// The sync service's plugin configuration: this org's status list and JWKS through
    /// Envoy cluster `cluster`, long polls of `poll_wait_secs`, JWKS refreshed every second
    /// and failed calls retried after a second.
    pub fn sync_service_config(&self, cluster: &str, poll_wait_secs: u64) -> Value {
        json!({
            "role": "sync",
            "cluster": cluster,
            "authority": self.addr.to_string(),
            "status_lists": [self.status_list_uri()],
            "jwks_urls": [self.jwks_url()],
            "poll_wait_secs": poll_wait_secs,
            "jwks_refresh_secs": 1,
            "retry_secs": 1,
        })
    }

    /// The `sync.usage` section: usage reports to this control plane through `cluster`
    /// (`authority` is this control plane's address), with an edge credential `secret`,
    /// flushed every 200 ms or every 500 records, at most `max_buffer` waiting.
    pub fn usage_config(&self, cluster: &str, secret: &str, max_buffer: u64) -> Value {
        json!({
            "cluster": cluster,
            "authority": self.addr.to_string(),
            "credential": secret,
            "flush_interval_ms": 200,
            "max_batch": 500,
            "max_buffer": max_buffer,
        })
    }

    /// A filter plugin configuration for this org's tokens whose keys and status lists
    /// come from the sync service (no inline `jwks`): audience `tessera`, `/admin` needs
    /// scope `admin`, the given fail policy (`"closed"` or `"open"`) and staleness bound,
    /// and usage reporting when `usage` is given ([`ControlPlane::usage_config`]).
    pub fn filter_config(
        &self,
        fail_policy: &str,
        max_staleness_secs: u64,
        usage: Option<Value>,
    ) -> Value {
        let mut sync = json!({"max_staleness_secs": max_staleness_secs});
        if let Some(u) = usage {
            sync["usage"] = u;
        }
        json!({
            "issuers": [self.issuer()],
            "audiences": ["tessera"],
            "routes": [{"path_prefix": "/admin", "scopes": ["admin"]}],
            "status": {"required": true, "fail_policy": fail_policy},
            "sync": sync,
        })
    }

    // -----------------------------------------------------------------------------------
    // REST

    /// Sends `method path` with `Authorization: Bearer <token>` (if any) and a JSON body
    /// (if any).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> std::io::Result<Response> {
        let mut req = Request::new(method, path)
            .header("host", &self.addr.to_string())
            .timeout(Duration::from_secs(30));
        if let Some(t) = token {
            req = req.bearer(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        req.send(self.addr)
    }

    /// Like [`ControlPlane::call`], but any transport error or a status outside 2xx is an
    /// error naming the call; returns the JSON body (`null` when empty).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let r = self
            .call(method, path, token, body)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if !(200..300).contains(&r.status) {
            return Err(format!("{method} {path}: {} {}", r.status, r.text()));
        }
        if r.body.is_empty() {
            return Ok(Value::Null);
        }
        r.json()
            .ok_or_else(|| format!("{method} {path}: not JSON: {}", r.text()))
    }

    /// Creates an API token (as `token`'s user, for that user unless `body` names another)
    /// and returns its id. `body` is the `POST /v1/tokens` body (e.g.
    /// `{"name": "ci", "scopes": ["read"]}`).
    pub fn create_token(&self, token: &str, body: &Value) -> Result<String, String> {
        let v = self.api("POST", "/v1/tokens", Some(token), Some(body))?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("POST /v1/tokens: no id in {v}"))
    }

    /// Downloads (mints) the JWT of token `id`; only its owner may.
    pub fn download(&self, token: &str, id: &str) -> Result<String, String> {
        let v = self.api(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(token),
            None,
        )?;
        jwt_of(&v, "jwt")
    }

    /// Creates a token named `name` with `scopes` for `token`'s user and downloads it:
    /// `(id, jwt)`.
    pub fn create_and_download(
        &self,
        token: &str,
        name: &str,
        scopes: &[&str],
    ) -> Result<(String, String), String> {
        let id = self.create_token(token, &json!({"name": name, "scopes": scopes}))?;
        let jwt = self.download(token, &id)?;
        Ok((id, jwt))
    }

    /// Revokes token `id`.
    pub fn revoke(&self, token: &str, id: &str) -> Result<Value, String> {
        self.api(
            "POST",
            &format!("/v1/tokens/{id}/revoke"),
            Some(token),
            None,
        )
    }

    /// Disables (suspends) token `id`.
    pub fn disable(&self, token: &str, id: &str) -> Result<Value, String> {
        self.api(
            "POST",
            &format!("/v1/tokens/{id}/disable"),
            Some(token),
            None,
        )
    }

    /// Enables token `id` again.
    pub fn enable(&self, token: &str, id: &str) -> Result<Value, String> {
        self.api(
            "POST",
            &format!("/v1/tokens/{id}/enable"),
            Some(token),
            None,
        )
    }

    /// Regenerates token `id`: the previous JWT is revoked; returns the new JWT.
    pub fn regenerate(&self, token: &str, id: &str) -> Result<String, String> {
        let v = self.api(
            "POST",
            &format!("/v1/tokens/{id}/regenerate"),
            Some(token),
            None,
        )?;
        jwt_of(&v, "jwt")
    }

    /// Revokes every token of `user` (id or username).
    pub fn revoke_all_of_user(&self, token: &str, user: &str) -> Result<Value, String> {
        self.api(
            "POST",
            "/v1/tokens/revoke-all",
            Some(token),
            Some(&json!({"user": user})),
        )
    }

    /// Exchanges an API token for a short-lived access token (`POST /v1/auth/accesstoken`).
    pub fn exchange(&self, api_token: &str) -> Result<String, String> {
        let v = self.api(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(&json!({"refreshToken": api_token})),
        )?;
        jwt_of(&v, "access_token")
    }

    /// Rotates the org's signing key; returns the new `kid`.
    pub fn rotate_key(&self, token: &str) -> Result<String, String> {
        let v = self.api(
            "POST",
            &format!("/v1/orgs/{}/keys/rotate", self.org()),
            Some(token),
            Some(&json!({})),
        )?;
        v.get("kid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("rotate: no kid in {v}"))
    }

    /// Creates an edge credential for `/v1/usage`; returns its secret.
    pub fn edge_credential(&self, token: &str, name: &str) -> Result<String, String> {
        let v = self.api(
            "POST",
            &format!("/v1/orgs/{}/edge-credentials", self.org()),
            Some(token),
            Some(&json!({"name": name})),
        )?;
        v.get("secret")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("edge credential: no secret in {v}"))
    }

    /// The authentication log of token `id` (newest first, as the API returns it; up to
    /// 1000 events).
    pub fn auth_log(&self, token: &str, id: &str) -> Result<Vec<Value>, String> {
        let v = self.api(
            "GET",
            &format!("/v1/tokens/{id}/auth-log?per_page=1000"),
            Some(token),
            None,
        )?;
        v.get("events")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| format!("auth log: no events in {v}"))
    }

    /// Token `id` as the API shows it.
    pub fn token_info(&self, token: &str, id: &str) -> Result<Value, String> {
        self.api("GET", &format!("/v1/tokens/{id}"), Some(token), None)
    }
}

fn jwt_of(v: &Value, field: &str) -> Result<String, String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("no {field} in {v}"))
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!(
                "--- control plane log (last lines) from {} ---\n{tail}",
                self.log_path().display()
            );
        }
    }
}
