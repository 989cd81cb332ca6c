//! The `tessera` CLI as a user runs it: over https with a private CA, into a pipe that
//! closes early, and the logs of `tessera serve`. Every server started here is stopped here.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::backend::Scratch;
use common::World;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use tessera_control_plane::client::Client;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

const BIN: &str = env!("CARGO_BIN_EXE_tessera");
const MASTER: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

// ---------------------------------------------------------------------------------------
// https

/// The run-time CA (`common::TestPki`) and a rustls server configuration with its
/// certificate.
struct Pki {
    ca_pem: String,
    server: rustls::ServerConfig,
}

fn make_pki() -> Pki {
    let pki = common::TestPki::new();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert_der.clone().into(), pki.ca_der.clone().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
        )
        .unwrap();
    Pki {
        ca_pem: pki.ca_pem,
        server,
    }
}

/// Accepts TCP connections and completes the TLS handshake before axum sees them; a client
/// that refuses the certificate is dropped here.
struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.tls.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The control plane of `World`, served over https on a loopback port; aborted on drop.
struct HttpsServer {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_https(w: &World, pki: &Pki) -> HttpsServer {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener {
        tcp,
        tls: TlsAcceptor::from(Arc::new(pki.server.clone())),
    };
    let app = w.app.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    HttpsServer {
        url: format!("https://127.0.0.1:{port}"),
        task,
    }
}

/// Runs the real binary off the async runtime.
async fn tessera_async(args: Vec<String>, envs: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("TESSERA_TOKEN")
            .env_remove("TESSERA_URL")
            .env_remove("TESSERA_CA_CERT")
            .envs(envs)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_speaks_https_to_a_trusted_ca_only() {
    let w = World::new().await;
    let pki = make_pki();
    let server = serve_https(&w, &pki).await;
    let jwt = w.jwt("ula");

    // The library client: trusted CA → the real API answers.
    let c =
        Client::with_ca_cert(&server.url, Some(jwt.clone()), Some(pki.ca_pem.as_bytes())).unwrap();
    let me = c.get("/v1/me").await.unwrap().ok_json().unwrap();
    assert_eq!(me["user"]["username"], "ula");

    // Not trusted: the system roots, or another CA, refuse the certificate clearly.
    let other = make_pki();
    for c in [
        Client::new(&server.url, Some(jwt.clone())).unwrap(),
        Client::with_ca_cert(
            &server.url,
            Some(jwt.clone()),
            Some(other.ca_pem.as_bytes()),
        )
        .unwrap(),
    ] {
        let e = c.get("/v1/me").await.unwrap_err();
        assert!(e.contains("certificate"), "{e}");
        assert!(e.contains("--ca-cert"), "{e}");
        assert!(e.starts_with(&server.url), "{e}");
        assert!(!e.contains(&jwt), "the token leaked into {e}");
    }

    // Not PEM at all.
    let e = Client::with_ca_cert(&server.url, None, Some(b"not a certificate"))
        .err()
        .unwrap();
    assert!(e.starts_with("--ca-cert"), "{e}");
    // Neither http nor https.
    let e = Client::new("ftp://127.0.0.1", None).err().unwrap();
    assert!(e.contains("https://"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_https_with_ca_cert() {
    let w = World::new().await;
    let pki = make_pki();
    let server = serve_https(&w, &pki).await;
    let dir = Scratch::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let ca = ca_file.to_str().unwrap().to_string();
    let jwt = w.jwt("ula");
    let token = || ("TESSERA_TOKEN", jwt.clone());
    let args = |extra: &[&str]| {
        let mut a = vec!["--url".to_string(), server.url.clone()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // --ca-cert, and the same through TESSERA_CA_CERT.
    for (extra, env) in [
        (
            vec!["whoami", "-o", "json", "--ca-cert", ca.as_str()],
            vec![token()],
        ),
        (
            vec!["whoami", "-o", "json"],
            vec![token(), ("TESSERA_CA_CERT", ca.clone())],
        ),
    ] {
        let out = tessera_async(args(&extra), env).await;
        assert!(
            out.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let me: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(me["user"]["username"], "ula");
    }

    // Without the CA: exit 1 and a message that says what to do, no stack trace.
    let out = tessera_async(args(&["whoami"]), vec![token()]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("tessera: https://127.0.0.1:"), "{err}");
    assert!(
        err.contains("certificate") && err.contains("--ca-cert"),
        "{err}"
    );
    assert!(!err.contains("panicked") && !err.contains(&jwt), "{err}");
    assert!(out.stdout.is_empty());

    // A CA file that is missing names the option.
    let out = tessera_async(
        args(&["whoami", "--ca-cert", "/nonexistent/ca.pem"]),
        vec![token()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-cert /nonexistent/ca.pem"));
}

// ---------------------------------------------------------------------------------------
// The real `tessera serve`, for pipes and logs

/// Kills the server when dropped, so a failing assertion leaves no process behind.
struct Server {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Server {
    /// What the server wrote to stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (SIGKILL) and returns its log.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tessera(dir: &Scratch, args: &[&str], token: Option<&str>, url: Option<&str>) -> Command {
    let mut cmd = dir.command(BIN);
    cmd.args(args)
        .env("TESSERA_MASTER_KEY", MASTER)
        .env_remove("TESSERA_TOKEN")
        .env_remove("TESSERA_URL")
        .env_remove("TESSERA_CA_CERT");
    if let Some(t) = token {
        cmd.env("TESSERA_TOKEN", t);
    }
    if let Some(u) = url {
        cmd.env("TESSERA_URL", u);
    }
    cmd
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn bootstrap(dir: &Scratch) -> String {
    let out = ok(tessera(
        dir,
        &[
            "admin",
            "bootstrap",
            "--org",
            "acme",
            "--admin",
            "alice",
            "--scopes",
            "read write admin",
            "-o",
            "json",
        ],
        None,
        None,
    )
    .output()
    .unwrap());
    let v: Value = serde_json::from_str(&out).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// Starts `tessera serve` on a free port with its stderr in a file, and waits for the
/// stdout line that names the address.
fn serve(dir: &Scratch, extra: &[&str], envs: &[(&str, &str)]) -> Server {
    let log = dir.join(format!("serve-{}.log", rand_suffix()));
    let mut cmd = tessera(dir, &["serve", "--listen", "127.0.0.1:0"], None, None);
    cmd.args(extra)
        .env_remove("RUST_LOG")
        .env_remove("TESSERA_LOG")
        .env_remove("TESSERA_LOG_FORMAT")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let mut server = Server {
        child,
        url: String::new(),
        log,
    };
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}; log:\n{}", server.log()))
        .to_string();
    server.url = url;
    server
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = Scratch::new();
    let d = &dir;
    let admin = bootstrap(d);
    let server = serve(d, &[], &[]);
    for i in 0..3 {
        ok(tessera(
            d,
            &["tokens", "create", "--name", &format!("piped-{i}")],
            Some(&admin),
            Some(&server.url),
        )
        .output()
        .unwrap());
    }
    for args in [
        &["tokens", "list"][..],
        &["tokens", "list", "-o", "json"],
        &["tokens", "list", "-o", "csv"],
        &["tokens", "export"],
        &["whoami"],
        &["orgs", "list"],
    ] {
        // The reading end is closed before the command writes: every write is EPIPE, as
        // with `tessera tokens list | head -0`.
        let mut child = tessera(d, args, Some(&admin), Some(&server.url))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // And through a real `head`: the first lines arrive, the command still succeeds.
    let script = format!(
        "\"{BIN}\" tokens list --per-page 3; echo \"exit=$?\" >&2",
        BIN = BIN
    );
    let out = Command::new("sh")
        .args(["-c", &format!("{{ {script}; }} | head -n 1")])
        .current_dir(d.path())
        .env("TESSERA_TOKEN", &admin)
        .env("TESSERA_URL", &server.url)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ID"));
    assert!(err.contains("exit=0"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    drop(server);
}

#[test]
fn serve_logs_start_up_to_stderr_as_text_or_json() {
    let dir = Scratch::new();
    let d = &dir;
    let admin = bootstrap(d);

    // Default: text at info, with the address, the database and its schema version.
    let server = serve(d, &[], &[]);
    let url = server.url.clone();
    ok(tessera(d, &["whoami"], Some(&admin), Some(&url))
        .output()
        .unwrap());
    let log = server.stop();
    let addr = url.trim_start_matches("http://");
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("listening") && l.contains(addr)),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("database opened")
            && l.contains(&dir.db.location().describe())
            && l.contains("schema_version=")),
        "{log}"
    );
    assert!(!log.contains(&admin), "the token reached the log");

    // --log-format json: one JSON object per line, with level, message and fields.
    let server = serve(d, &["--log-format", "json"], &[]);
    let log = server.stop();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let listening = lines
        .iter()
        .find(|v| v["message"] == "listening")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(listening["level"], "INFO");
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback(), "{listening}");
    assert!(lines
        .iter()
        .any(|v| v["message"] == "database opened" && v["schema_version"].is_i64()));

    // TESSERA_LOG (or RUST_LOG) raises the level: nothing at info.
    for var in ["TESSERA_LOG", "RUST_LOG"] {
        let server = serve(d, &[], &[(var, "warn")]);
        let log = server.stop();
        assert!(!log.contains("listening"), "{var}: {log}");
    }
    // A filter that does not parse falls back to info and says so.
    let server = serve(d, &[], &[("TESSERA_LOG", "=!bad[")]);
    let log = server.stop();
    assert!(
        log.contains("TESSERA_LOG") && log.contains("listening"),
        "{log}"
    );

    // A start-up failure is logged and exits 1.
    let out = tessera(
        d,
        &["serve", "--listen", "127.0.0.1:0", "--access-ttl", "5"],
        None,
        None,
    )
    .env_remove("TESSERA_LOG")
    .env_remove("RUST_LOG")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ERROR") && err.contains("--access-ttl"),
        "{err}"
    );
}

// ---- The first hour (issue 24) ----

/// Runs shell lines copied from the documentation, as a person pastes them, in a fresh
/// directory with `tessera` on the PATH. The only changes: `127.0.0.1:8080` becomes a free
/// port (other tests share the machine), `tessera serve &` listens there and is waited for
/// (a person types the next line later), and lines that build are left out (the test has
/// the binary). stdout and stderr of the whole script; panics when a line fails.
fn run_as_written(
    what: &str,
    lines: &[String],
    after: &str,
) -> (String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut script = String::from("set -eu -o pipefail\n");
    for line in lines {
        if line.trim_start().starts_with("cargo ") {
            continue;
        }
        let line = line.replace("127.0.0.1:8080", &addr);
        if line.trim() == "tessera serve &" {
            script.push_str(&format!(
                "tessera serve --listen {addr} 2>serve.log &\n\
                 SERVE=$!; trap 'kill $SERVE' EXIT\n\
                 for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.05; done\n"
            ));
        } else {
            script.push_str(&line);
            script.push('\n');
        }
    }
    script.push_str(after);
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("TESSERA_URL", format!("http://{addr}"))
        .env_remove("TESSERA_TOKEN")
        .env_remove("TESSERA_TOKEN_FILE")
        .env_remove("TESSERA_MASTER_KEY")
        .env_remove("TESSERA_MASTER_KEY_FILE")
        .env_remove("TESSERA_DB")
        .env_remove("TESSERA_CA_CERT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{what} failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    (stdout, stderr, dir)
}

/// The lines of the first ```sh block after `heading` in `text`.
fn sh_block(text: &str, heading: &str) -> Vec<String> {
    let from = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"));
    text[from..]
        .lines()
        .skip_while(|l| l.trim() != "```sh")
        .skip(1)
        .take_while(|l| l.trim() != "```")
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    if Command::new("jq").arg("--version").output().is_err() {
        panic!("jq is needed: the README's example uses it");
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut lines = sh_block(&readme, "## Quick start");
    assert!(lines
        .iter()
        .any(|l| l.contains("TESSERA_TOKEN=$(tessera admin bootstrap")));
    lines.extend(sh_block(&readme, "### With the CLI"));
    assert!(lines.iter().any(|l| l.contains("tokens revoke")));
    let (stdout, _, dir) =
        run_as_written("README quick start", &lines, "printf 'ID=%s\\n' \"$ID\"\n");
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ID="))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(id.starts_with("tok_"), "{stdout}");
    // The token went through its whole life: downloaded, exchanged, revoked and exported.
    let csv = std::fs::read_to_string(dir.path().join("revoked.csv")).unwrap();
    assert!(csv.contains(id), "{csv}");
}

#[test]
fn the_envoy_sync_example_header_runs_as_written() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/envoy/envoy-sync.yaml"
    ))
    .unwrap();
    // The commented commands, from the master key up to the edge credential.
    let lines: Vec<String> = yaml
        .lines()
        .skip_while(|l| !l.contains("tessera admin gen-master-key"))
        .take_while(|l| !l.contains("cargo xtask"))
        .map(|l| l.trim_start_matches('#').trim_start().to_string())
        .collect();
    assert!(lines
        .iter()
        .any(|l| l.contains("TESSERA_TOKEN=$(tessera admin bootstrap")));
    assert!(lines.iter().any(|l| l.contains("tessera edges create")));
    let (stdout, _, _dir) = run_as_written("envoy-sync.yaml's header", &lines, "tessera whoami\n");
    assert!(stdout.contains("\"secret\""), "{stdout}");
    assert!(stdout.contains("alice"), "{stdout}");
}

#[test]
fn bootstrap_prints_the_token_alone_on_stdout_and_the_rest_on_stderr() {
    let dir = Scratch::new();
    let out = tessera(
        &dir,
        &["admin", "bootstrap", "--org", "acme", "--admin", "alice"],
        None,
        None,
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // One line, the token (`tsr_` and the JWT): `$(...)` captures exactly the token.
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("tsr_eyJ") && stdout.ends_with('\n'),
        "{stdout}"
    );
    assert_eq!(stdout.trim().split('.').count(), 3, "{stdout}");
    // The person reads the rest: the sign-in link on a line of its own, real line breaks.
    assert!(!stderr.contains("\\n"), "a literal \\n: {stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("/#/bootstrap/") && !l.contains(' ')),
        "{stderr}"
    );
    assert!(stderr.contains("shown once"), "{stderr}");

    // -o json keeps everything, for scripts.
    let dir = Scratch::new();
    let out = ok(tessera(
        &dir,
        &[
            "admin",
            "bootstrap",
            "--org",
            "acme",
            "--admin",
            "alice",
            "-o",
            "json",
        ],
        None,
        None,
    )
    .output()
    .unwrap());
    let v: Value = serde_json::from_str(&out).unwrap();
    for key in [
        "org",
        "user",
        "username",
        "token_id",
        "token",
        "base_url",
        "sign_in_link",
    ] {
        assert!(v[key].is_string(), "{key}: {v}");
    }
}

#[test]
fn a_token_that_cannot_be_a_header_is_named_and_explained() {
    let dir = Scratch::new();
    let admin = bootstrap(&dir);
    let url = "http://127.0.0.1:9"; // never reached: the token is refused first
    let cases = [
        (
            format!("{admin}\nhttp://127.0.0.1:8080/#/bootstrap/abc"),
            "TESSERA_TOKEN holds more than one line: set it to the token alone",
        ),
        (
            format!("{admin} x"),
            "TESSERA_TOKEN holds a space at character",
        ),
        (
            format!("{admin}\u{1}"),
            "TESSERA_TOKEN holds the character \\u{1} at character",
        ),
        (
            format!("{admin}é"),
            "TESSERA_TOKEN holds the character \\u{e9} at character",
        ),
    ];
    for (token, want) in cases {
        let out = tessera(&dir, &["whoami"], Some(&token), Some(url))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "want {want:?} in {err}");
        assert!(!err.contains("header value"), "{err}");
        assert!(
            !err.contains(&admin),
            "the token reached the message: {err}"
        );
    }
    // The same through --token.
    let out = tessera(
        &dir,
        &["whoami", "--token", &format!("{admin}\nmore")],
        None,
        Some(url),
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token holds more than one line"), "{err}");
}

/// What the API does to users, edge credentials and the audit log, the CLI does too.
/// `tessera <args>` with `token` against `server`, which must succeed: its stdout.
fn as_admin(dir: &Scratch, token: &str, server: &Server, args: &[&str]) -> String {
    ok(tessera(dir, args, Some(token), Some(&server.url))
        .output()
        .unwrap())
}

/// [`as_admin`] with `-o json`, parsed.
fn as_admin_json(dir: &Scratch, token: &str, server: &Server, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&as_admin(dir, token, server, &a)).unwrap()
}

/// `tessera links accept` with the link and a new password on its stdin.
fn accept_link(dir: &Scratch, server: &Server, link: &str, password: &str) -> Output {
    let mut child = tessera(dir, &["links", "accept"], None, Some(&server.url))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{link}\n{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn users_edges_and_the_audit_log_from_the_cli() {
    let dir = Scratch::new();
    let admin = bootstrap(&dir);
    let server = serve(&dir, &[], &[]);
    let run = |args: &[&str]| as_admin(&dir, &admin, &server, args);
    let json = |args: &[&str]| as_admin_json(&dir, &admin, &server, args);
    let bob = json(&["users", "create", "--org", "acme", "bob", "--role", "user"]);
    let bob_id = bob["id"]
        .as_str()
        .or(bob["user"]["id"].as_str())
        .unwrap()
        .to_string();
    let link = json(&["users", "reset-link", &bob_id]);
    assert!(link.to_string().contains("/#/reset/"), "{link}");
    let v = json(&["users", "disable", &bob_id]);
    assert_eq!(v["state"], "disabled", "{v}");
    let v = json(&["users", "enable", &bob_id]);
    assert_ne!(v["state"], "disabled", "{v}");
    let v = json(&["users", "delete", &bob_id]);
    assert_eq!(v["state"], "deleted", "{v}");

    let edge = json(&["edges", "create", "--org", "acme", "envoy-eu"]);
    let edge_id = edge["id"].as_str().unwrap().to_string();
    let table = run(&["edges", "list", "--org", "acme"]);
    assert!(
        table.contains("envoy-eu") && table.contains(&edge_id),
        "{table}"
    );
    run(&["edges", "revoke", "--org", "acme", &edge_id]);
    let listed = json(&["edges", "list", "--org", "acme"]);
    assert!(listed.to_string().contains("revoked_at"), "{listed}");

    let log = run(&["audit-log", "--org", "acme"]);
    for action in ["user.delete", "user.disable", "user.enable", "edge.revoke"] {
        assert!(log.contains(action), "{action} not in:\n{log}");
    }
}

/// Two first-hour trips: a negative number is an argument, not an unknown flag, and a
/// missing token is said in the CLI's terms.
#[test]
fn the_cli_says_what_to_do_about_a_bad_lifetime_and_a_missing_token() {
    let dir = Scratch::new();
    let admin = bootstrap(&dir);
    let server = serve(&dir, &[], &[]);
    let out = tessera(
        &dir,
        &["tokens", "create", "--name", "x", "--lifetime-days", "-5"],
        Some(&admin),
        Some(&server.url),
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("unexpected argument"), "{err}");
    assert!(
        err.contains("-5 days is not offered: choose 30, 60, 90, 180 or 365 days"),
        "{err}"
    );
    let out = tessera(&dir, &["whoami"], None, Some(&server.url))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("set TESSERA_TOKEN"), "{err}");
    assert!(!err.contains("Authorization: Bearer"), "{err}");
}

/// The CLI in people's terms: `whoami` as lines, not JSON; logs with names; a user set
/// up entirely from the command line (create, link accepted, logs filtered by username);
/// `revoke-all` as a count and one id a line.
#[test]
fn the_cli_shows_names_and_covers_links_and_the_org_auth_log() {
    let dir = Scratch::new();
    let admin = bootstrap(&dir);
    let server = serve(&dir, &[], &[]);
    let run = |args: &[&str]| as_admin(&dir, &admin, &server, args);
    let json = |args: &[&str]| as_admin_json(&dir, &admin, &server, args);

    let me = run(&["whoami"]);
    assert!(!me.contains('{'), "{me}");
    assert!(
        me.lines()
            .any(|l| l.starts_with("user.username") && l.ends_with(" alice")),
        "{me}"
    );

    // bob sets his password from the command line, with what the admin handed him.
    let bob = json(&["users", "create", "--org", "acme", "bob", "--role", "user"]);
    let link = bob["link"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no link in {bob}"))
        .to_string();
    let password = "correct horse battery staple of bob";
    let said = ok(accept_link(&dir, &server, &link, password));
    assert!(said.contains("Password set for bob"), "{said}");
    // The same link again: used, said in words.
    let out = accept_link(&dir, &server, &link, password);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already used"), "{err}");

    // Two tokens for bob; revoke-all says how many and lists one id a line.
    for name in ["ci-one", "ci-two"] {
        run(&["tokens", "create", "--name", name, "--user", "bob"]);
    }
    let out = tessera(
        &dir,
        &["tokens", "revoke-all", "--user", "bob"],
        Some(&admin),
        Some(&server.url),
    )
    .output()
    .unwrap();
    let table = ok(out.clone());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 tokens revoked."),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(lines[0], "ID");
    assert!(lines[1..].iter().all(|l| l.starts_with("tok_")), "{table}");

    // The admin's own calls are in the org's authentication log, by name, and the
    // filter takes a username.
    let log = run(&["auth-log", "--user", "alice"]);
    let header = log.lines().next().unwrap_or_default();
    assert!(
        header.contains("USERNAME") && header.contains("TOKEN_NAME"),
        "{log}"
    );
    assert!(log.lines().skip(1).any(|l| l.contains("alice")), "{log}");
    let v = json(&["auth-log", "--user", "alice"]);
    assert!(v["total"].as_i64().unwrap() > 0, "{v}");
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["username"] == "alice"),
        "{v}"
    );
    let v = json(&["auth-log", "--user", "bob"]);
    assert_eq!(v["total"], 0, "{v}");
    let own = json(&["whoami"])["token"].as_str().unwrap().to_string();
    let v = json(&["auth-log", "--token-id", &own]);
    assert!(v["total"].as_i64().unwrap() > 0, "{v}");

    // The audit log names who acted and on whom.
    let audit = run(&["audit-log"]);
    let created = audit
        .lines()
        .find(|l| l.contains("user.create"))
        .unwrap_or_else(|| panic!("no user.create in:\n{audit}"));
    assert!(
        created.contains("alice") && created.contains("bob"),
        "{created}"
    );
}

/// SCIM credentials from the CLI: created (secret and SCIM base URL shown once), listed
/// without the secret, revoked; the secret works on the SCIM routes until then.
#[test]
fn scim_credentials_from_the_cli() {
    let dir = Scratch::new();
    let admin = bootstrap(&dir);
    let server = serve(&dir, &[], &[]);
    let run = |args: &[&str]| as_admin(&dir, &admin, &server, args);
    let json = |args: &[&str]| as_admin_json(&dir, &admin, &server, args);
    let c = json(&["scim", "create", "--org", "acme", "okta"]);
    let (id, secret) = (c["id"].as_str().unwrap(), c["secret"].as_str().unwrap());
    // The service's base URL (`--base-url`) and the org's SCIM base under it.
    assert!(
        c["base_url"].as_str().unwrap().ends_with("/scim/v2/acme"),
        "{c}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let users = |secret: &str| {
        let c = Client::new(&server.url, Some(secret.to_string())).unwrap();
        rt.block_on(c.get("/scim/v2/acme/Users")).unwrap().status
    };
    assert_eq!(users(secret), 200);
    let table = run(&["scim", "list", "--org", "acme"]);
    assert!(table.contains("okta") && table.contains(id), "{table}");
    assert!(!table.contains(secret));
    run(&["scim", "revoke", "--org", "acme", id]);
    let listed = json(&["scim", "list", "--org", "acme"]);
    assert!(listed.to_string().contains("revoked_at"), "{listed}");
    assert_eq!(users(secret), 401);
}

#[test]
fn rate_limits_from_the_cli() {
    let dir = Scratch::new();
    let admin = bootstrap(&dir);
    let server = serve(&dir, &[], &[]);
    let json = |args: &[&str]| as_admin_json(&dir, &admin, &server, args);
    // The org's ceiling and default, one flag set at a time (the others are kept).
    let v = json(&[
        "orgs",
        "rate-limits",
        "acme",
        "--ceiling",
        "--per-second",
        "100",
    ]);
    assert_eq!(v["ceiling"], serde_json::json!({"per_second": 100}), "{v}");
    let v = json(&[
        "orgs",
        "rate-limits",
        "acme",
        "--ceiling",
        "--per-day",
        "5000",
    ]);
    assert_eq!(
        v["ceiling"],
        serde_json::json!({"per_second": 100, "per_day": 5000}),
        "{v}"
    );
    let v = json(&[
        "orgs",
        "rate-limits",
        "acme",
        "--default",
        "--per-hour",
        "3000",
    ]);
    assert_eq!(v["default"], serde_json::json!({"per_hour": 3000}), "{v}");
    // Which of the two to change must be said.
    let out = tessera(
        &dir,
        &["orgs", "rate-limits", "acme", "--per-second", "5"],
        Some(&admin),
        Some(&server.url),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--default or --ceiling"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A token with its own limits; an edit changes one and keeps the other.
    let t = json(&[
        "tokens",
        "create",
        "--name",
        "metered",
        "--per-second",
        "50",
        "--per-minute",
        "600",
    ]);
    let id = t["id"].as_str().unwrap().to_string();
    json(&["tokens", "edit", &id, "--per-minute", "60"]);
    let v = json(&["tokens", "rate-limits", &id]);
    assert_eq!(
        v["own"],
        serde_json::json!({"per_second": 50, "per_minute": 60}),
        "{v}"
    );
    assert_eq!(
        v["effective"],
        serde_json::json!({"per_second": 50, "per_minute": 60, "per_hour": 3000, "per_day": 5000}),
        "{v}"
    );
    // Above the ceiling: refused, naming the flag's field.
    let out = tessera(
        &dir,
        &["tokens", "edit", &id, "--per-second", "500"],
        Some(&admin),
        Some(&server.url),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("limits.per_second"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&["tokens", "edit", &id, "--clear-limits"]);
    let v = json(&["tokens", "rate-limits", &id]);
    assert_eq!(v["own"], serde_json::json!({}), "{v}");
}

/// Single sign-on from the CLI: `sso set` with the client secret from a file (never on the
/// command line), `sso show` without it, a change that keeps it, `sso delete`.
#[test]
fn single_sign_on_from_the_cli() {
    let dir = Scratch::new();
    let admin = bootstrap(&dir);
    let server = serve(&dir, &[], &[]);
    let json = |args: &[&str]| as_admin_json(&dir, &admin, &server, args);
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "provider-s3cret\n").unwrap();
    let set = |extra: &[&str]| {
        let mut a = vec![
            "sso",
            "set",
            "--org",
            "acme",
            "--issuer",
            "https://login.example.com",
            "--client-id",
            "tessera",
            "--domain",
            "example.com",
            "--group-role",
            "tessera-admins=admin",
        ];
        a.extend(extra);
        json(&a)
    };
    let v = set(&["--client-secret-file", secret_file.to_str().unwrap()]);
    assert_eq!(v["client_secret_set"], true, "{v}");
    assert_eq!(
        v["group_roles"],
        serde_json::json!([{"group": "tessera-admins", "role": "admin"}])
    );
    assert!(
        v["redirect_uri"]
            .as_str()
            .unwrap()
            .ends_with("/v1/sso/callback"),
        "{v}"
    );
    let v = set(&["--require-sso"]);
    assert_eq!(v["require_sso"], true, "{v}");
    // The operator's list of domain claims (acme is the root org: its claim needs no
    // approval); withdrawn and approved again from the command line.
    let claims = json(&["sso", "domains"]);
    assert_eq!(claims[0]["domain"], "example.com", "{claims}");
    assert_eq!(claims[0]["state"], "approved", "{claims}");
    let v = json(&["sso", "withdraw", "example.com", "--org", "acme"]);
    assert_eq!(v["state"], "pending", "{v}");
    let pending = json(&["sso", "domains", "--pending"]);
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    let v = json(&["sso", "approve", "example.com", "--org", "acme"]);
    assert_eq!(v["state"], "approved", "{v}");
    let table = as_admin(&dir, &admin, &server, &["sso", "domains"]);
    assert!(
        table.contains("example.com") && table.contains("approved"),
        "{table}"
    );
    let shown = as_admin(&dir, &admin, &server, &["sso", "show", "--org", "acme"]);
    assert!(
        shown.contains("https://login.example.com") && !shown.contains("s3cret"),
        "{shown}"
    );
    let v = json(&["sso", "delete", "--org", "acme"]);
    assert_eq!(v["issuer"], "https://login.example.com");
    let out = tessera(
        &dir,
        &["sso", "show", "--org", "acme"],
        Some(&admin),
        Some(&server.url),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no single sign-on connection"));
}
