//! Running the edge worker bundle in a real workerd, on loopback.
//!
//! - [`Workerd`] writes a capnp config into a temporary directory (the bundle's glue as an
//!   `esModule`, the `.wasm` as a `wasm` module, the entry `worker.mjs` that imports both
//!   and calls `initSync({ module })`), starts `workerd serve` on `127.0.0.1:<ephemeral>`
//!   (the port is read from workerd's `--control-fd` report, so there is no port race) and
//!   kills it on drop; the origin is a URL, an external server, or (`Origin::Worker`, for
//!   `cargo xtask bench`) a second worker in the same process;
//! - [`ControlStub`] is a tiny loopback HTTP server standing in for the control plane: it
//!   serves status lists with ETags (and answers `If-None-Match` with 304) and collects
//!   usage report POSTs.
//!
//! The tools come from the environment: `TESSERA_WORKERD` (the workerd binary) and
//! `TESSERA_EDGE_WORKER_DIR` (the bundle, `target/wasm/edge-worker`); `cargo xtask test`
//! installs workerd, builds the bundle and sets both.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{repo_root, Request, Response, TempDir};

/// Environment variable naming the workerd binary.
pub const ENV_WORKERD: &str = "TESSERA_WORKERD";
/// Environment variable naming the edge worker bundle directory.
pub const ENV_EDGE_WORKER_DIR: &str = "TESSERA_EDGE_WORKER_DIR";
/// What to do when they are missing.
pub const WORKERD_RUN_HINT: &str = "run `cargo xtask test` (it installs workerd and builds the \
     edge worker bundle, then runs these tests with TESSERA_WORKERD and TESSERA_EDGE_WORKER_DIR set)";
/// The files of the bundle, as `xtask build-wasm` writes them.
pub const BUNDLE_FILES: [&str; 3] = [
    "worker.mjs",
    "tessera_edge_worker.js",
    "tessera_edge_worker_bg.wasm",
];

fn env_path(var: &str) -> Result<PathBuf, String> {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => {
            let p = PathBuf::from(v);
            Ok(if p.is_absolute() {
                p
            } else if p.exists() {
                std::path::absolute(&p).unwrap_or(p)
            } else {
                repo_root().join(p)
            })
        }
        _ => Err(format!("{var} is not set: {WORKERD_RUN_HINT}")),
    }
}

/// `(workerd binary, bundle directory)` from the environment; panics (failing the test)
/// naming whatever is missing and `cargo xtask test`.
pub fn workerd_tools() -> (PathBuf, PathBuf) {
    let mut problems = Vec::new();
    let workerd = env_path(ENV_WORKERD).map_err(|e| problems.push(e)).ok();
    if let Some(w) = &workerd {
        if !w.is_file() {
            problems.push(format!(
                "{ENV_WORKERD}={} is not a file: {WORKERD_RUN_HINT}",
                w.display()
            ));
        }
    }
    let bundle = env_path(ENV_EDGE_WORKER_DIR)
        .map_err(|e| problems.push(e))
        .ok();
    if let Some(b) = &bundle {
        for file in BUNDLE_FILES {
            if !b.join(file).is_file() {
                problems.push(format!(
                    "{ENV_EDGE_WORKER_DIR}={} has no {file}: {WORKERD_RUN_HINT}",
                    b.display()
                ));
            }
        }
    }
    match (workerd, bundle) {
        (Some(w), Some(b)) if problems.is_empty() => (w, b),
        _ => panic!("{}", problems.join("\n")),
    }
}

/// Where allowed requests go.
#[derive(Clone, Debug)]
pub enum Origin {
    /// The `ORIGIN` URL binding (through the worker's global outbound, loopback allowed).
    Url(String),
    /// The `ORIGIN_SERVICE` service binding to an external HTTP server at this address.
    Service(SocketAddr),
    /// The `ORIGIN_SERVICE` service binding to a second worker in the same workerd
    /// process, whose ES module source (`origin.mjs`) is this text: an origin with no
    /// network hop (the bench answers 200 from one).
    Worker(String),
}

/// The capnp `Workerd.Service` entry of an [`Origin::Worker`] named `origin`, running
/// `origin.mjs` (next to the config); other configs may use it to give a worker the same
/// origin as [`WorkerdOptions::capnp`] does.
pub const ORIGIN_WORKER_SERVICE: &str = "(name = \"origin\", worker = (\
     modules = [(name = \"origin.mjs\", esModule = embed \"origin.mjs\")], \
     compatibilityDate = \"2025-01-01\"))";

/// What to start.
#[derive(Clone, Debug)]
pub struct WorkerdOptions {
    /// The workerd binary.
    pub workerd: PathBuf,
    /// The bundle directory (`worker.mjs`, glue, wasm).
    pub bundle: PathBuf,
    /// `TESSERA_CONFIG`, the filter's configuration schema as JSON text.
    pub config: String,
    /// The origin.
    pub origin: Origin,
    /// More text bindings (`TESSERA_STATUS_URLS`, `TESSERA_STATUS_TTL_MS`, ...).
    pub vars: BTreeMap<String, String>,
    /// How long to wait for the listening report (a safety net, default 60 s).
    pub ready_timeout: Duration,
}

impl WorkerdOptions {
    /// The worker with this configuration in front of `origin`.
    pub fn new(workerd: &Path, bundle: &Path, config: &Value, origin: Origin) -> WorkerdOptions {
        WorkerdOptions {
            workerd: workerd.to_path_buf(),
            bundle: bundle.to_path_buf(),
            config: config.to_string(),
            origin,
            vars: BTreeMap::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// Adds a text binding.
    pub fn var(mut self, name: &str, value: &str) -> WorkerdOptions {
        self.vars.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The capnp config; every file it names is relative to the directory it is written
    /// in (see [`Workerd::start`]).
    pub fn capnp(&self) -> String {
        let q = |s: &str| {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        };
        let mut bindings =
            vec!["(name = \"TESSERA_CONFIG\", text = embed \"tessera-config.json\")".to_owned()];
        let mut services = vec![
            "(name = \"main\", worker = .tesseraWorker)".to_owned(),
            // Outbound fetches (ORIGIN, status lists, usage) may reach loopback only.
            "(name = \"loopback\", network = (allow = [\"local\"]))".to_owned(),
        ];
        match &self.origin {
            Origin::Url(url) => bindings.push(format!("(name = \"ORIGIN\", text = {})", q(url))),
            Origin::Service(addr) => {
                services.push(format!(
                    "(name = \"origin\", external = (address = {}, http = ()))",
                    q(&addr.to_string())
                ));
                bindings.push("(name = \"ORIGIN_SERVICE\", service = \"origin\")".to_owned());
            }
            Origin::Worker(_) => {
                services.push(ORIGIN_WORKER_SERVICE.to_owned());
                bindings.push("(name = \"ORIGIN_SERVICE\", service = \"origin\")".to_owned());
            }
        }
        for (name, value) in &self.vars {
            bindings.push(format!("(name = {}, text = {})", q(name), q(value)));
        }
        format!(
            r#"# Written by tessera-host-tests.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    {services}
  ],
  sockets = [(name = "http", address = "127.0.0.1:0", http = (), service = "main")],
);

const tesseraWorker :Workerd.Worker = (
  modules = [
    (name = "worker.mjs", esModule = embed "worker.mjs"),
    (name = "tessera_edge_worker.js", esModule = embed "tessera_edge_worker.js"),
    (name = "tessera_edge_worker_bg.wasm", wasm = embed "tessera_edge_worker_bg.wasm"),
  ],
  compatibilityDate = "2025-01-01",
  bindings = [
    {bindings}
  ],
  globalOutbound = "loopback",
);
"#,
            services = services.join(",\n    "),
            bindings = bindings.join(",\n    "),
        )
    }
}

/// A running workerd. Dropping it kills the process, waits for it and removes its
/// temporary directory (config, bundle copy, log).
pub struct Workerd {
    child: Child,
    dir: TempDir,
    addr: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Workerd {
    /// Writes the config next to a copy of the bundle, starts `workerd serve` and waits
    /// until it reports its listening port. `Err` carries workerd's log.
    pub fn start(options: &WorkerdOptions) -> Result<Workerd, String> {
        let dir = TempDir::new("workerd").map_err(|e| format!("temp dir: {e}"))?;
        for file in BUNDLE_FILES {
            let from = options.bundle.join(file);
            std::fs::copy(&from, dir.path().join(file))
                .map_err(|e| format!("copying {}: {e}", from.display()))?;
        }
        std::fs::write(dir.path().join("tessera-config.json"), &options.config)
            .map_err(|e| format!("writing the config: {e}"))?;
        if let Origin::Worker(source) = &options.origin {
            std::fs::write(dir.path().join("origin.mjs"), source)
                .map_err(|e| format!("writing origin.mjs: {e}"))?;
        }
        let capnp = dir.path().join("tessera.capnp");
        std::fs::write(&capnp, options.capnp())
            .map_err(|e| format!("writing {}: {e}", capnp.display()))?;
        Workerd::serve(&options.workerd, dir, &capnp, None, options.ready_timeout)
    }

    /// Runs `workerd serve <capnp>` for a config written elsewhere (e.g. an example),
    /// with `socket` (a socket name in that config) moved to `127.0.0.1:<ephemeral>`.
    /// `dir` is kept (and removed) with the process; the log is written there.
    pub fn start_config(
        workerd: &Path,
        dir: TempDir,
        capnp: &Path,
        socket: &str,
    ) -> Result<Workerd, String> {
        Workerd::serve(workerd, dir, capnp, Some(socket), Duration::from_secs(60))
    }

    fn serve(
        workerd: &Path,
        dir: TempDir,
        capnp: &Path,
        socket: Option<&str>,
        ready_timeout: Duration,
    ) -> Result<Workerd, String> {
        let socket_name = socket.unwrap_or("http").to_owned();
        let log_path = dir.path().join("workerd.log");
        let log = File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(workerd);
        if let Some(config_dir) = capnp.parent() {
            cmd.current_dir(config_dir);
        }
        cmd.arg("serve").arg(capnp).args(["--control-fd", "1"]);
        if let Some(name) = socket {
            cmd.arg("--socket-addr").arg(format!("{name}=127.0.0.1:0"));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", workerd.display()))?;
        let stdout_pipe = child.stdout.take();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let reader = stdout_pipe.and_then(|pipe| {
            let lines = Arc::clone(&stdout);
            std::thread::Builder::new()
                .name("workerd-stdout".into())
                .spawn(move || read_control(pipe, &socket_name, &lines, &port_tx))
                .ok()
        });
        // From here on the value owns the process: any early return kills it.
        let mut workerd = Workerd {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
            reader,
        };
        let deadline = Instant::now() + ready_timeout;
        loop {
            match port_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(port) => {
                    workerd.addr.set_port(port);
                    return Ok(workerd);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if let Ok(Some(status)) = workerd.child.try_wait() {
                return Err(format!(
                    "workerd exited before listening ({status})\n--- workerd log ---\n{}",
                    workerd.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "workerd did not listen within {:?}\n--- workerd log ---\n{}",
                    ready_timeout,
                    workerd.log()
                ));
            }
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request to the worker.
    pub fn send(&self, request: &Request) -> io::Result<Response> {
        request.send(self.addr)
    }

    /// workerd's output so far (stderr, then stdout lines other than control messages).
    pub fn log(&self) -> String {
        let mut text = std::fs::read(self.dir.path().join("workerd.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if let Ok(lines) = self.stdout.lock() {
            for line in lines.iter() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            eprintln!("--- workerd log ---\n{}", self.log());
        }
    }
}

/// Reads workerd's stdout: `{"event":"listen","socket":<socket>,"port":N}` reports the port;
/// every other line is kept for the log.
fn read_control(
    pipe: ChildStdout,
    socket: &str,
    lines: &Mutex<Vec<String>>,
    port: &mpsc::Sender<u16>,
) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        let listen = serde_json::from_str::<Value>(&line).ok().and_then(|v| {
            (v.get("event")?.as_str()? == "listen" && v.get("socket")?.as_str()? == socket)
                .then(|| v.get("port")?.as_u64())
                .flatten()
        });
        match listen.and_then(|p| u16::try_from(p).ok()) {
            Some(p) => {
                let _ = port.send(p);
            }
            None => {
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The control-plane stand-in.

/// One request the stub received.
#[derive(Clone, Debug)]
pub struct StubRequest {
    /// Method.
    pub method: String,
    /// Request target.
    pub path: String,
    /// Header fields, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The status the stub answered.
    pub status: u16,
}

impl StubRequest {
    /// The first value of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct StubState {
    /// path → (version, JSON document)
    lists: BTreeMap<String, (u64, String)>,
    seen: Vec<StubRequest>,
}

/// A loopback HTTP/1.1 server standing in for the control plane:
/// - `GET <path>` of a list set with [`ControlStub::set_status_list`] → `200` with the
///   JSON document and `ETag: "<version>"`, or `304` when `If-None-Match` names the
///   current version;
/// - `POST` to any other path → `202` (usage reports); everything is recorded.
///
/// One request per connection (`connection: close`). Dropped: stops and joins its thread.
pub struct ControlStub {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<StubState>>,
    acceptor: Option<JoinHandle<()>>,
}

impl ControlStub {
    /// Binds `127.0.0.1:0` and serves.
    pub fn start() -> io::Result<ControlStub> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(StubState::default()));
        let acceptor = {
            let stop = Arc::clone(&stop);
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("control-stub".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(stream) = stream {
                            let _ = serve_one(stream, &state);
                        }
                    }
                })?
        };
        Ok(ControlStub {
            addr,
            stop,
            state,
            acceptor: Some(acceptor),
        })
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Publishes (or replaces) the status list at `path` with a new ETag.
    pub fn set_status_list(&self, path: &str, document: &Value) {
        if let Ok(mut s) = self.state.lock() {
            let version = s.lists.get(path).map_or(1, |(v, _)| v + 1);
            s.lists
                .insert(path.to_owned(), (version, document.to_string()));
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<StubRequest> {
        self.state
            .lock()
            .map(|s| s.seen.clone())
            .unwrap_or_default()
    }
}

impl Drop for ControlStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn serve_one(stream: TcpStream, state: &Mutex<StubState>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len.min(16 << 20), 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }

    let (status, extra, payload) = {
        let s = state.lock().map_err(|_| io::Error::other("poisoned"))?;
        match (method.as_str(), s.lists.get(&path)) {
            ("GET", Some((version, doc))) => {
                let etag = format!("\"{version}\"");
                if header("if-none-match").is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
                    (304, format!("etag: {etag}\r\n"), String::new())
                } else {
                    (
                        200,
                        format!("etag: {etag}\r\ncontent-type: application/json\r\n"),
                        doc.clone(),
                    )
                }
            }
            ("POST", _) => (202, String::new(), "{}".to_owned()),
            _ => (404, String::new(), String::new()),
        }
    };
    if let Ok(mut s) = state.lock() {
        s.seen.push(StubRequest {
            method,
            path,
            headers,
            body,
            status,
        });
    }
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        304 => "Not Modified",
        _ => "Not Found",
    };
    let mut out = stream;
    let head = if status == 304 {
        format!("HTTP/1.1 {status} {reason}\r\n{extra}connection: close\r\n\r\n")
    } else {
        format!(
            "HTTP/1.1 {status} {reason}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
            payload.len()
        )
    };
    out.write_all(head.as_bytes())?;
    out.write_all(payload.as_bytes())?;
    out.flush()?;
    let _ = out.shutdown(Shutdown::Both);
    Ok(())
}
