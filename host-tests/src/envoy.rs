//! Starting and stopping a real Envoy with the Tessera module.

use std::fmt;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{Request, Response};
use crate::tmp::TempDir;

/// The filter's counter flush period (`tessera_filter::METRICS_FLUSH_MS`).
const FILTER_METRICS_FLUSH_MS: u64 = 100;

/// The `vm_config.vm_id` of the filter and of the sync service: shared data is scoped by
/// it, so both must use the same one.
pub const VM_ID: &str = "tessera";

/// What to start: the Envoy binary, the optional filter, where requests go.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// The Envoy binary.
    pub envoy: PathBuf,
    /// The wasm module and the plugin configuration (JSON text); `None` starts Envoy
    /// without the filter (to check the harness itself).
    pub filter: Option<(PathBuf, String)>,
    /// The upstream every route goes to; `None` answers `200` with a direct response.
    pub upstream: Option<SocketAddr>,
    /// One listener (port chosen by the system) per address; default `127.0.0.1`.
    pub listen: Vec<IpAddr>,
    /// `--concurrency` (worker threads); default 1.
    pub concurrency: u32,
    /// The HTTP connection manager's `use_remote_address` (default false).
    pub use_remote_address: bool,
    /// `--log-level`; default `info`.
    pub log_level: String,
    /// How long to wait for readiness before giving up (a safety net, default 90 s).
    pub ready_timeout: Duration,
    /// A complete bootstrap to use instead of the generated one (e.g. an example config
    /// with its ports set to 0). Its admin must listen on a loopback address and
    /// `listen` must have one entry per listener it declares.
    pub bootstrap: Option<String>,
    /// Extra `STATIC` clusters `(name, endpoints)`, e.g. one to the control plane (or to
    /// several of its replicas, balanced round robin) for the sync service and usage
    /// reports.
    pub clusters: Vec<(String, Vec<SocketAddr>)>,
    /// The sync service's plugin configuration (JSON text): adds the same module as a
    /// singleton `envoy.bootstrap.wasm` service in the filter's `vm_id`, so that both
    /// share data. Needs [`EnvoyOptions::filter`] (the module comes from there).
    pub sync_service: Option<String>,
    /// Further Envoy command-line arguments (e.g. `--drain-time-s 1`).
    pub extra_args: Vec<String>,
}

impl EnvoyOptions {
    /// Envoy without the filter, listening on `127.0.0.1`.
    pub fn new(envoy: &Path) -> EnvoyOptions {
        EnvoyOptions {
            envoy: envoy.to_path_buf(),
            filter: None,
            upstream: None,
            listen: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            concurrency: 1,
            use_remote_address: false,
            log_level: "info".into(),
            ready_timeout: Duration::from_secs(90),
            bootstrap: None,
            clusters: Vec::new(),
            sync_service: None,
            extra_args: Vec::new(),
        }
    }

    /// Adds Envoy command-line arguments.
    pub fn args(mut self, args: &[&str]) -> EnvoyOptions {
        self.extra_args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Adds a `STATIC` cluster `name` with one endpoint, `addr` (HTTP/1.1).
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> EnvoyOptions {
        self.clusters.push((name.to_owned(), vec![addr]));
        self
    }

    /// Adds a `STATIC` cluster `name` with every address of `endpoints` as an endpoint
    /// (HTTP/1.1, round robin), e.g. the control plane's replicas.
    pub fn cluster_endpoints(mut self, name: &str, endpoints: &[SocketAddr]) -> EnvoyOptions {
        self.clusters.push((name.to_owned(), endpoints.to_vec()));
        self
    }

    /// Adds the sync service (a singleton bootstrap wasm service running the filter's
    /// module) with this plugin configuration.
    pub fn sync_service(mut self, config: &Value) -> EnvoyOptions {
        self.sync_service = Some(config.to_string());
        self
    }

    /// Uses this bootstrap text as it is instead of generating one.
    pub fn custom_bootstrap(mut self, yaml: &str) -> EnvoyOptions {
        self.bootstrap = Some(yaml.to_owned());
        self
    }

    /// Adds the wasm filter with this module and plugin configuration.
    pub fn filter(mut self, wasm: &Path, plugin_config: &Value) -> EnvoyOptions {
        self.filter = Some((wasm.to_path_buf(), plugin_config.to_string()));
        self
    }

    /// Adds the wasm filter with a plugin configuration given as raw text.
    pub fn filter_raw(mut self, wasm: &Path, plugin_config: &str) -> EnvoyOptions {
        self.filter = Some((wasm.to_path_buf(), plugin_config.to_owned()));
        self
    }

    /// Routes every request to `upstream`.
    pub fn upstream(mut self, upstream: SocketAddr) -> EnvoyOptions {
        self.upstream = Some(upstream);
        self
    }

    /// Also listens on `[::1]`.
    pub fn with_ipv6(mut self) -> EnvoyOptions {
        if !self.listen.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)) {
            self.listen.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
        self
    }

    /// Sets `--concurrency`.
    pub fn concurrency(mut self, n: u32) -> EnvoyOptions {
        self.concurrency = n;
        self
    }

    /// Sets the HCM's `use_remote_address`.
    pub fn use_remote_address(mut self, on: bool) -> EnvoyOptions {
        self.use_remote_address = on;
        self
    }

    /// The bootstrap YAML for these options.
    pub fn bootstrap_yaml(&self) -> String {
        let q = |s: &str| Value::String(s.to_owned()).to_string();
        let mut http_filters = String::new();
        if let Some((wasm, config)) = &self.filter {
            http_filters.push_str(&format!(
                r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: tessera
                vm_config:
                  vm_id: {vm_id}
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local:
                      filename: {wasm}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {config}
"#,
                wasm = q(&wasm.to_string_lossy()),
                config = q(config),
                vm_id = q(VM_ID),
            ));
        }
        http_filters.push_str(
            r#"          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        );
        let action = if self.upstream.is_some() {
            "route: {cluster: echo}".to_owned()
        } else {
            r#"direct_response: {status: 200, body: {inline_string: "no upstream"}}"#.to_owned()
        };
        let mut listeners = String::new();
        for ip in &self.listen {
            let name = match ip {
                IpAddr::V4(_) => format!("tessera_v4_{}", ip.to_string().replace('.', "_")),
                IpAddr::V6(_) => format!("tessera_v6_{}", ip.to_string().replace(':', "_")),
            };
            listeners.push_str(&format!(
                r#"  - name: {name}
    address:
      socket_address: {{address: {ip}, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          codec_type: AUTO
          normalize_path: true
          merge_slashes: true
          use_remote_address: {ura}
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                {action}
          http_filters:
{http_filters}"#,
                name = q(&name),
                ip = q(&ip.to_string()),
                ura = self.use_remote_address,
            ));
        }
        let mut endpoints: Vec<(String, Vec<SocketAddr>)> = Vec::new();
        if let Some(up) = self.upstream {
            endpoints.push(("echo".into(), vec![up]));
        }
        endpoints.extend(self.clusters.iter().cloned());
        let mut clusters = String::new();
        if !endpoints.is_empty() {
            clusters.push_str("  clusters:\n");
        }
        for (name, addrs) in &endpoints {
            clusters.push_str(&format!(
                r#"  - name: {name}
    type: STATIC
    connect_timeout: 5s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
"#,
                name = q(name),
            ));
            for addr in addrs {
                clusters.push_str(&format!(
                    r#"        - endpoint:
            address:
              socket_address: {{address: {ip}, port_value: {port}}}
"#,
                    ip = q(&addr.ip().to_string()),
                    port = addr.port()
                ));
            }
        }
        let mut extensions = String::new();
        if let (Some(service), Some((wasm, _))) = (&self.sync_service, &self.filter) {
            extensions.push_str(&format!(
                r#"bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: true
    config:
      name: tessera_sync
      vm_config:
        vm_id: {vm_id}
        runtime: envoy.wasm.runtime.v8
        code:
          local:
            filename: {wasm}
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: {config}
"#,
                wasm = q(&wasm.to_string_lossy()),
                config = q(service),
                vm_id = q(VM_ID),
            ));
        }
        format!(
            r#"# Written by tessera-host-tests.
{extensions}admin:
  address:
    socket_address: {{address: "127.0.0.1", port_value: 0}}
static_resources:
  listeners:
{listeners}{clusters}"#
        )
    }
}

/// Why Envoy did not become ready.
#[derive(Debug)]
pub struct StartError {
    /// What went wrong.
    pub message: String,
    /// Envoy's exit status, if it exited on its own.
    pub exit: Option<ExitStatus>,
    /// Envoy's log (stdout and stderr).
    pub log: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (exit: {:?})\n--- envoy log (excerpt) ---\n{}",
            self.message,
            self.exit,
            log_excerpt(&self.log)
        )
    }
}

impl std::error::Error for StartError {}

/// A running Envoy. Dropping it kills the process and waits for it, then removes its
/// temporary directory (bootstrap, log).
pub struct Envoy {
    child: Child,
    dir: TempDir,
    admin: SocketAddr,
    listeners: Vec<SocketAddr>,
}

impl Envoy {
    /// Writes the bootstrap, starts Envoy and waits until `/ready` says `LIVE` and every
    /// listener has its port.
    pub fn start(options: &EnvoyOptions) -> Result<Envoy, StartError> {
        let fail = |message: String| StartError {
            message,
            exit: None,
            log: String::new(),
        };
        let dir = TempDir::new("envoy").map_err(|e| fail(format!("temp dir: {e}")))?;
        let bootstrap = dir.path().join("bootstrap.yaml");
        let admin_file = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        let text = match &options.bootstrap {
            Some(custom) => custom.clone(),
            None => options.bootstrap_yaml(),
        };
        std::fs::write(&bootstrap, text)
            .map_err(|e| fail(format!("writing {}: {e}", bootstrap.display())))?;
        let log = File::create(&log_path).map_err(|e| fail(format!("log file: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| fail(format!("log file: {e}")))?;
        let child = Command::new(&options.envoy)
            .arg("-c")
            .arg(&bootstrap)
            .arg("--concurrency")
            .arg(options.concurrency.to_string())
            .arg("--log-level")
            .arg(&options.log_level)
            .arg("--disable-hot-restart")
            .args(&options.extra_args)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| fail(format!("starting {}: {e}", options.envoy.display())))?;
        // From here on the guard owns the process: any early return kills it.
        let mut envoy = Envoy {
            child,
            dir,
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            listeners: Vec::new(),
        };
        let deadline = Instant::now() + options.ready_timeout;
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(StartError {
                    message: "envoy exited before it was ready".into(),
                    exit: Some(status),
                    log: envoy.log(),
                });
            }
            if Instant::now() > deadline {
                return Err(StartError {
                    message: format!("envoy not ready after {:?}", options.ready_timeout),
                    exit: None,
                    log: envoy.log(),
                });
            }
            if envoy.admin.port() == 0 {
                if let Some(addr) = std::fs::read_to_string(&admin_file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    envoy.admin = addr;
                }
            }
            if envoy.admin.port() != 0 && envoy.is_live() {
                if let Some(listeners) = envoy.listener_addresses() {
                    if listeners.len() == options.listen.len()
                        && listeners.iter().all(|a| a.port() != 0)
                    {
                        envoy.listeners = listeners;
                        return Ok(envoy);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_live(&self) -> bool {
        self.admin_get("/ready")
            .map(|r| r.status == 200 && r.text().trim() == "LIVE")
            .unwrap_or(false)
    }

    fn listener_addresses(&self) -> Option<Vec<SocketAddr>> {
        let v = self.admin_get("/listeners?format=json").ok()?.json()?;
        v.get("listener_statuses")?
            .as_array()?
            .iter()
            .map(|l| {
                let sa = l.get("local_address")?.get("socket_address")?;
                let ip: IpAddr = sa.get("address")?.as_str()?.parse().ok()?;
                let port = sa.get("port_value")?.as_u64()?;
                Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
            })
            .collect()
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Every listener address (in the order of [`EnvoyOptions::listen`] as Envoy reports them).
    pub fn listeners(&self) -> &[SocketAddr] {
        &self.listeners
    }

    /// The IPv4 loopback listener.
    pub fn addr(&self) -> SocketAddr {
        self.listener_for(true)
            .or_else(|| self.listeners.first().copied())
            .unwrap_or(self.admin)
    }

    /// The IPv6 loopback listener, if one was requested with [`EnvoyOptions::with_ipv6`].
    pub fn addr_v6(&self) -> Option<SocketAddr> {
        self.listener_for(false)
    }

    fn listener_for(&self, v4: bool) -> Option<SocketAddr> {
        self.listeners.iter().copied().find(|a| a.is_ipv4() == v4)
    }

    /// Sends `request` to the IPv4 listener.
    pub fn send(&self, request: &Request) -> std::io::Result<Response> {
        request.send(self.addr())
    }

    /// `GET path` on the admin interface.
    pub fn admin_get(&self, path: &str) -> std::io::Result<Response> {
        Request::get(path)
            .timeout(Duration::from_secs(10))
            .send(self.admin)
    }

    /// The admin `/stats` text.
    pub fn stats(&self) -> std::io::Result<String> {
        self.admin_get("/stats").map(|r| r.text())
    }

    /// Every stat line (`name: value`) whose name contains `needle`, as `(name, value)`.
    /// The filter counts in wasm memory and adds its counts to Envoy's on its tick
    /// (`tessera_filter::METRICS_FLUSH_MS`), so a read of `tessera.` counters first
    /// waits for three ticks: decisions answered before the call are then counted.
    pub fn stats_matching(&self, needle: &str) -> std::io::Result<Vec<(String, u64)>> {
        if needle.contains("tessera.") {
            std::thread::sleep(Duration::from_millis(3 * FILTER_METRICS_FLUSH_MS));
        }
        Ok(self
            .stats()?
            .lines()
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(": ")?;
                if !name.contains(needle) {
                    return None;
                }
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// The value of the counter whose name ends with `suffix` (e.g. `tessera.allow`).
    pub fn counter(&self, suffix: &str) -> Option<u64> {
        self.stats_matching(suffix)
            .ok()?
            .into_iter()
            .find(|(name, _)| name.ends_with(suffix))
            .map(|(_, v)| v)
    }

    /// The per-endpoint statistics of cluster `cluster` from the admin `/clusters` page:
    /// `(endpoint, stat name, value)` for every numeric line
    /// `<cluster>::<ip>:<port>::<stat>::<value>` (e.g. `rq_active`, `rq_total`,
    /// `rq_success`, `rq_error`, `cx_connect_fail`).
    pub fn endpoint_stats(&self, cluster: &str) -> std::io::Result<Vec<(SocketAddr, String, u64)>> {
        let text = self.admin_get("/clusters")?.text();
        Ok(text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(cluster)?.strip_prefix("::")?;
                let mut parts = rest.splitn(3, "::");
                let addr: SocketAddr = parts.next()?.parse().ok()?;
                let stat = parts.next()?.to_owned();
                let value = parts.next()?.trim().parse().ok()?;
                Some((addr, stat, value))
            })
            .collect())
    }

    /// Connections accepted so far by each worker thread on the IPv4 listener, indexed by
    /// worker (`listener.<ip>_<port>.worker_<n>.downstream_cx_total`); shows that
    /// requests were spread over every worker.
    pub fn worker_connections(&self) -> std::io::Result<Vec<u64>> {
        // Stat names carry the configured address (port 0), not the bound one.
        let prefix = format!("listener.{}_", self.addr().ip());
        let mut per_worker: Vec<(usize, u64)> = self
            .stats_matching(".downstream_cx_total")?
            .into_iter()
            .filter_map(|(name, v)| {
                let rest = name.strip_prefix(&prefix)?;
                let (_port, rest) = rest.split_once(".worker_")?;
                let (n, stat) = rest.split_once('.')?;
                (stat == "downstream_cx_total").then_some((n.parse().ok()?, v))
            })
            .collect();
        per_worker.sort();
        Ok(per_worker.into_iter().map(|(_, v)| v).collect())
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Where the log is written (removed on drop).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- envoy log (excerpt) from {} ---\n{}",
                self.log_path().display(),
                log_excerpt(&self.log())
            );
        }
    }
}

/// The part of an Envoy log worth reading in a failure message: every warning, error and
/// critical line and every line mentioning tessera, then the last lines (without the
/// start-up lists of extensions and header maps).
pub fn log_excerpt(log: &str) -> String {
    let noise = |l: &str| l.contains("server.cc:467]") || l.contains("server.cc:547]");
    let lines: Vec<&str> = log.lines().filter(|l| !noise(l)).collect();
    let mut out: Vec<&str> = Vec::new();
    let tail_from = lines.len().saturating_sub(15);
    for (i, line) in lines.iter().enumerate() {
        let notable = line.contains("][warning][")
            || line.contains("][error][")
            || line.contains("][critical][")
            || line.contains("tessera");
        if notable || i >= tail_from {
            out.push(line);
        }
    }
    // Keep failure messages readable.
    let skip = out.len().saturating_sub(80);
    out[skip..].join("\n")
}
