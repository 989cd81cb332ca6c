//! A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` into a directory,
//! the server on its own free loopback port, stopped (and its files removed) on drop.
//!
//! The binaries come from `TESSERA_PG_BIN` (the directory holding `initdb`, `pg_ctl` and
//! `postgres`; `cargo xtask test` installs Debian's `postgresql` and sets it), else from
//! the newest `/usr/lib/postgresql/<major>/bin`. The server refuses to run as root, so as
//! root every server command runs as the `postgres` system user (`runuser`), which owns the
//! data directory. Authentication is `trust` on loopback only: the cluster lives as long
//! as one test run and holds nothing but test data.
//!
//! With [`PgOptions::tls`] the server also speaks TLS with a certificate for `127.0.0.1`
//! and `localhost` signed by a CA made at start ([`PgCluster::ca_file`]), and
//! [`PgCluster::url`] asks for `sslmode=verify-full` with that CA; with
//! [`PgOptions::hostssl_only`] its `pg_hba.conf` takes TCP connections only over TLS.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::tmp::TempDir;

/// Environment variable naming the PostgreSQL server's binary directory.
pub const ENV_PG_BIN: &str = "TESSERA_PG_BIN";
/// Environment variable holding the admin URL of a running cluster (set by `cargo xtask
/// test` for the control plane's backend matrix).
pub const ENV_TEST_POSTGRES: &str = "TESSERA_TEST_POSTGRES";

/// The superuser the cluster is created with.
const SUPERUSER: &str = "postgres";

/// The PostgreSQL binaries: `TESSERA_PG_BIN`, else the newest Debian install.
pub fn pg_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(ENV_PG_BIN).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.join("pg_ctl").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "{ENV_PG_BIN}={} holds no pg_ctl: point it at PostgreSQL's bin directory or run `cargo xtask test`",
                dir.display()
            ))
        };
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("pg_ctl").is_file().then_some((major, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "no PostgreSQL server found (no /usr/lib/postgresql/*/bin/pg_ctl and {ENV_PG_BIN} unset): run `cargo xtask test`, which installs Debian's postgresql"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("no free loopback port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Settings of a new cluster.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `fsync` of the server. Off makes tests faster and still keeps every acknowledged
    /// commit across a kill of the server process (the WAL is written before a commit
    /// is acknowledged; only a crash of the machine loses unsynced pages). Benchmarks keep
    /// it on.
    pub fsync: bool,
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// `ssl = on` with a run-time CA and server certificate; URLs ask for `verify-full`.
    pub tls: bool,
    /// `pg_hba.conf` takes TCP clients only over TLS (`hostssl`); needs `tls`.
    pub hostssl_only: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            fsync: true,
            max_connections: 300,
            tls: false,
            hostssl_only: false,
        }
    }
}

/// A running PostgreSQL cluster on `127.0.0.1:<port>`. Dropping it stops the server
/// (immediate shutdown) and removes its files.
pub struct PgCluster {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    as_postgres: bool,
    running: bool,
    /// The CA file of a cluster with TLS.
    ca: Option<PathBuf>,
}

impl PgCluster {
    /// `initdb` into a new temporary directory under `parent`, then starts the server and
    /// waits until it accepts connections.
    pub fn start(parent: &Path, options: &PgOptions) -> Result<PgCluster, String> {
        let bin = pg_bin_dir()?;
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("could not create {}: {e}", parent.display()))?;
        let dir = TempDir::new_in(parent, "pg")
            .map_err(|e| format!("could not create a cluster directory: {e}"))?;
        let as_postgres = is_root();
        let mut cluster = PgCluster {
            bin,
            dir,
            port: free_port()?,
            as_postgres,
            running: false,
            ca: None,
        };
        if as_postgres {
            // The server runs as `postgres`: it must own its directory and reach it.
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            check("chown", &out)?;
            allow_traversal(cluster.dir.path());
        }
        let data = cluster.data_dir();
        let out = cluster
            .server_cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        check("initdb", &out)?;
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = {}\nmax_connections = {}\nlog_min_messages = warning\nlog_line_prefix = '%m [%p] '\n",
            cluster.port,
            cluster.dir.path().display(),
            if options.fsync { "on" } else { "off" },
            options.max_connections,
        );
        if options.tls {
            cluster.ca = Some(cluster.make_certificates(&data)?);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        if options.hostssl_only {
            if !options.tls {
                return Err("PgOptions::hostssl_only needs tls".into());
            }
            // Unix-socket clients (psql of these helpers) stay trusted; TCP needs TLS.
            let hba = data.join("pg_hba.conf");
            std::fs::write(
                &hba,
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .map_err(|e| format!("could not write {}: {e}", hba.display()))?;
        }
        let auto = data.join("postgresql.auto.conf");
        std::fs::write(&auto, conf)
            .map_err(|e| format!("could not write {}: {e}", auto.display()))?;
        if as_postgres {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&auto)
                .output();
        }
        cluster.start_server()?;
        Ok(cluster)
    }

    /// A CA and a server certificate for `127.0.0.1` and `localhost` it signed: the
    /// server's in the data directory (its key of mode 0600 owned by the server's user,
    /// as PostgreSQL demands), the CA's certificate beside it, readable by all. Returns the
    /// CA file.
    fn make_certificates(&self, data: &Path) -> Result<PathBuf, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        use std::os::unix::fs::PermissionsExt;
        let fail = |e: rcgen::Error| format!("making the test CA: {e}");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Tessera test PostgreSQL CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(fail)?)
            .map_err(fail)?;
        let key = KeyPair::generate().map_err(fail)?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(fail)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "tessera test postgres");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &ca).map_err(fail)?;
        let write = |path: &Path, text: &str, mode: u32| -> Result<(), String> {
            std::fs::write(path, text)
                .and_then(|()| {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                })
                .map_err(|e| format!("could not write {}: {e}", path.display()))
        };
        write(&data.join("server.crt"), &cert.pem(), 0o644)?;
        write(&data.join("server.key"), &key.serialize_pem(), 0o600)?;
        let ca_file = self.dir.path().join("ca.crt");
        write(&ca_file, &ca.pem(), 0o644)?;
        if self.as_postgres {
            let out = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            check("chown", &out)?;
        }
        Ok(ca_file)
    }

    /// The CA that signed the server's certificate (a cluster with [`PgOptions::tls`]).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A command of the server's binaries, as `postgres` when we are root.
    fn server_cmd(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn start_server(&mut self) -> Result<(), String> {
        let out = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("pg_ctl start: {e}"))?;
        check("pg_ctl start", &out).map_err(|e| format!("{e}\nserver log:\n{}", self.log()))?;
        self.running = true;
        // pg_ctl -w waited for the server; make sure it listens where we said.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "PostgreSQL does not listen on {}\nserver log:\n{}",
                    self.addr(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` as the superuser; on a cluster with TLS it asks for
    /// `sslmode=verify-full` with the cluster's CA.
    pub fn url(&self, db: &str) -> String {
        let plain = self.plain_url(db);
        match &self.ca {
            Some(ca) => format!("{plain}?sslmode=verify-full&sslrootcert={}", ca.display()),
            None => plain,
        }
    }

    /// The URL of database `db` as the superuser, without TLS parameters.
    pub fn plain_url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The admin URL (database `postgres`).
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// Runs SQL through `psql` as the superuser on database `db`, over the Unix socket
    /// (whatever the cluster's TLS settings).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let psql = self.bin.join("psql");
        let out = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db])
            .args(["-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        check(&format!("psql {sql:?}"), &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// The postmaster's process id (from `postmaster.pid`).
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// SIGKILLs the postmaster (a crash, not a shutdown), then waits until its other
    /// processes are gone and nothing listens on the port.
    pub fn kill(&mut self) -> Result<(), String> {
        let pid = self
            .pid()
            .ok_or("no postmaster.pid: the server is not running")?;
        let out = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .output()
            .map_err(|e| format!("kill: {e}"))?;
        check("kill -KILL postmaster", &out)?;
        self.running = false;
        // The backends notice the postmaster's death and exit; until they have, the
        // shared memory is in use and a restart is refused.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let backends = Command::new("pgrep")
                .args(["-u", "postgres", "-f"])
                .arg(self.data_dir())
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            let listening =
                TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_ok();
            if !listening && !backends && !alive(pid) {
                // A killed postmaster whose parent does not reap it stays a zombie, and
                // PostgreSQL refuses to start while the pid in its lock file exists: the
                // process is dead, so its lock file goes (what an operator does after a
                // crash, having checked the same).
                let _ = std::fs::remove_file(self.data_dir().join("postmaster.pid"));
                let socket = self.dir.path().join(format!(".s.PGSQL.{}", self.port));
                let _ = std::fs::remove_file(socket.with_extension(format!("{}.lock", self.port)));
                let _ = std::fs::remove_file(&socket);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("PostgreSQL's processes are still up 30 s after SIGKILL".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same port and data (after [`Self::kill`]); it runs
    /// crash recovery from its WAL.
    pub fn restart(&mut self) -> Result<(), String> {
        self.start_server()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .output();
        self.running = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether process `pid` runs (a zombie, dead but not reaped, does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Lets `postgres` reach a directory under root-owned parents (mode o+x on each parent
/// that lacks it; the usual checkout already has it).
fn allow_traversal(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut p = dir.parent();
    while let Some(d) = p {
        if let Ok(meta) = std::fs::metadata(d) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o001));
            }
        }
        p = d.parent();
    }
}

fn check(what: &str, out: &Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
