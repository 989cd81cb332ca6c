//! Checks the filter's OCI images with real tools: Debian's `skopeo` reads both layouts,
//! pushes them to Debian's `docker-registry` running on loopback, and pulls them back;
//! the pulled layer must give back the very module (same sha256).

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dist::{self, Dist, Image, Variant};
use crate::tools::{self, Result};

/// The Debian packages this check needs.
pub const DEBS: [&str; 2] = ["skopeo", "docker-registry"];

/// A running `docker-registry`, stopped (killed and reaped) when dropped, also when a
/// check fails half-way.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("no free loopback port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// `GET /v2/` answers (200, or 401 for a registry with auth).
fn registry_answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

impl Registry {
    /// Starts `docker-registry serve` on a free loopback port with a temporary config and
    /// storage directory, and waits until `/v2/` answers.
    pub fn start(scratch: &Path) -> Result<Registry> {
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let dir = scratch.join(format!("registry-{port}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data"))
            .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )
        .map_err(|e| format!("could not write {}: {e}", config.display()))?;
        let log = fs::File::create(dir.join("registry.log"))
            .map_err(|e| format!("could not create the registry log: {e}"))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("could not open the registry log: {e}"))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        println!("$ {}", tools::display_command(&cmd));
        let child = cmd
            .spawn()
            .map_err(|e| format!("could not start docker-registry: {e}"))?;
        let registry = Registry { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry_answers(addr) {
            if Instant::now() > deadline {
                let log = fs::read_to_string(registry.dir.join("registry.log")).unwrap_or_default();
                return Err(format!(
                    "docker-registry did not answer on {addr} within 20 s; its log:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("docker-registry answers on http://{addr}/v2/");
        Ok(registry)
    }
}

/// Runs skopeo (with a policy that accepts the unsigned local images) and returns stdout;
/// an error with its stderr otherwise.
fn skopeo(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").args(args).stdin(Stdio::null());
    let shown = tools::display_command(&cmd);
    println!("$ {shown}");
    let out = cmd
        .output()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn parse(text: &str, what: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}\n{text}"))
}

/// Reads a layout's one manifest for `tag`: (manifest digest, manifest JSON).
fn layout_manifest(dir: &Path, tag: &str) -> Result<(String, Value)> {
    let index_path = dir.join("index.json");
    let index = parse(
        &fs::read_to_string(&index_path)
            .map_err(|e| format!("could not read {}: {e}", index_path.display()))?,
        "index.json",
    )?;
    let desc = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        })
        .ok_or_else(|| format!("{} has no manifest tagged {tag}", index_path.display()))?;
    let digest = desc["digest"].as_str().unwrap_or_default().to_string();
    let manifest = parse(
        &String::from_utf8_lossy(&blob(dir, &digest)?),
        "the manifest",
    )?;
    Ok((digest, manifest))
}

fn blob(dir: &Path, digest: &str) -> Result<Vec<u8>> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("unexpected digest {digest}"))?;
    let path = dir.join("blobs").join("sha256").join(hex);
    let bytes = fs::read(&path).map_err(|e| format!("could not read {}: {e}", path.display()))?;
    if dist::oci_digest(&bytes) != digest {
        return Err(format!("{} does not hash to its name", path.display()));
    }
    Ok(bytes)
}

/// The module a layout carries: the layer itself (Wasm artifact), or `plugin.wasm` from
/// the gzipped tar layer (compat).
fn module_of(dir: &Path, manifest: &Value, variant: Variant) -> Result<Vec<u8>> {
    let layers = manifest["layers"]
        .as_array()
        .ok_or("the manifest has no layers")?;
    if layers.len() != 1 {
        return Err(format!("expected one layer, found {}", layers.len()));
    }
    let layer = &layers[0];
    let digest = layer["digest"].as_str().unwrap_or_default();
    let bytes = blob(dir, digest)?;
    let media = layer["mediaType"].as_str().unwrap_or_default();
    match variant {
        Variant::Oci => {
            if media != dist::WASM_LAYER_MEDIA_TYPE {
                return Err(format!("layer media type {media}"));
            }
            Ok(bytes)
        }
        Variant::Compat => {
            if media != dist::OCI_LAYER_MEDIA_TYPE {
                return Err(format!("layer media type {media}"));
            }
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
            let entries = archive
                .entries()
                .map_err(|e| format!("the compat layer is not a tar: {e}"))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| format!("the compat layer: {e}"))?;
                let name = entry
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                if name == dist::COMPAT_WASM_NAME {
                    let mut data = Vec::new();
                    entry
                        .read_to_end(&mut data)
                        .map_err(|e| format!("reading {name}: {e}"))?;
                    return Ok(data);
                }
            }
            Err(format!(
                "the compat layer holds no {}",
                dist::COMPAT_WASM_NAME
            ))
        }
    }
}

/// What the check saw, for the report.
pub struct Checked {
    /// Per image: (variant, the `skopeo inspect` summary line, the registry's digest).
    pub images: Vec<(Variant, String, String)>,
}

fn summary(inspect: &Value) -> String {
    let layers: Vec<String> = inspect["LayersData"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    format!(
                        "{} {} ({} bytes)",
                        l["MIMEType"].as_str().unwrap_or("?"),
                        l["Digest"].as_str().unwrap_or("?"),
                        l["Size"]
                    )
                })
                .collect()
        })
        .unwrap_or_else(|| {
            // Older skopeo (Debian 12's 1.9) lists layer digests only.
            inspect["Layers"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .filter_map(|l| l.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        });
    format!(
        "Digest {} Architecture {} Os {} Layers [{}]",
        inspect["Digest"].as_str().unwrap_or("?"),
        inspect["Architecture"].as_str().unwrap_or("-"),
        inspect["Os"].as_str().unwrap_or("-"),
        layers.join(", ")
    )
}

/// `skopeo inspect` of one layout: the full inspection where skopeo can make one (an
/// image), and for the Wasm artifact, whose config is not an image config, the raw
/// manifest and config, each checked against what we wrote.
fn inspect_layout(image: &Image) -> Result<String> {
    let reference = format!("oci:{}:{}", image.dir.display(), dist::TAG);
    let raw = parse(
        &skopeo(&["inspect", "--raw", &reference])?,
        "skopeo's raw manifest",
    )?;
    let (digest, ours) = layout_manifest(&image.dir, dist::TAG)?;
    if raw != ours || digest != image.manifest_digest {
        return Err(format!("skopeo read a different manifest from {reference}"));
    }
    let config = parse(
        &skopeo(&["inspect", "--config", "--raw", &reference])?,
        "skopeo's raw config",
    )?;
    println!("config: {config}");
    match skopeo(&["inspect", &reference]) {
        Ok(text) => {
            let inspect = parse(&text, "skopeo inspect")?;
            println!("{}", text.trim());
            if inspect["Digest"] != image.manifest_digest.as_str() {
                return Err(format!(
                    "skopeo inspect reports digest {} for {reference}, expected {}",
                    inspect["Digest"], image.manifest_digest
                ));
            }
            Ok(summary(&inspect))
        }
        // skopeo refuses image-only operations on artifacts; the raw reads above are its
        // whole view of one.
        Err(e) if image.variant == Variant::Oci => {
            println!("(as expected for an artifact) {e}");
            Ok(format!(
                "Digest {} (raw) config {} {} layer {} {}",
                digest,
                raw["config"]["mediaType"].as_str().unwrap_or("?"),
                raw["config"]["digest"].as_str().unwrap_or("?"),
                raw["layers"][0]["mediaType"].as_str().unwrap_or("?"),
                raw["layers"][0]["digest"].as_str().unwrap_or("?"),
            ))
        }
        Err(e) => Err(e),
    }
}

/// The whole check: inspect both layouts, start a registry, push both, pull both back into
/// new layouts and compare the module with the one that was imaged.
pub fn check(dist: &Dist, scratch: &Path) -> Result<Checked> {
    for tool in DEBS {
        if tools::output_of(Command::new("sh").args(["-c", &format!("command -v {tool}")]))
            .is_none()
        {
            return Err(format!(
                "`{tool}` is not on PATH although its Debian package is installed; \
                 reinstall it: apt-get install --reinstall -y {tool}"
            ));
        }
    }
    let module = fs::read(dist.dir.join(dist::FILTER_NAME))
        .map_err(|e| format!("could not read the module in {}: {e}", dist.dir.display()))?;
    let mut images = Vec::new();
    let mut summaries = Vec::new();
    for image in [&dist.oci, &dist.compat] {
        summaries.push(inspect_layout(image)?);
    }
    let registry = Registry::start(scratch)?;
    for (image, summary) in [&dist.oci, &dist.compat].into_iter().zip(summaries) {
        let name = format!("tessera/filter-{}", image.variant.dir_name());
        let remote = format!("docker://{}/{name}:{}", registry.addr, dist::TAG);
        let local = format!("oci:{}:{}", image.dir.display(), dist::TAG);
        skopeo(&["copy", "--dest-tls-verify=false", &local, &remote])?;
        let remote_raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &remote])?;
        let remote_digest = dist::oci_digest(remote_raw.as_bytes());
        if remote_digest != image.manifest_digest {
            return Err(format!(
                "the registry holds manifest {remote_digest} for {name}, not the pushed {}",
                image.manifest_digest
            ));
        }
        let pulled = scratch.join(format!("pulled-{}", image.variant.dir_name()));
        let _ = fs::remove_dir_all(&pulled);
        let pulled_ref = format!("oci:{}:{}", pulled.display(), dist::TAG);
        skopeo(&["copy", "--src-tls-verify=false", &remote, &pulled_ref])?;
        let (pulled_digest, manifest) = layout_manifest(&pulled, dist::TAG)?;
        let back = module_of(&pulled, &manifest, image.variant)?;
        let (want, got) = (dist::sha256_hex(&module), dist::sha256_hex(&back));
        if want != got {
            return Err(format!(
                "{name}: the pulled module has sha256 {got}, the built one {want}"
            ));
        }
        println!(
            "{name}: pushed to and pulled from {}, manifest {pulled_digest}, module sha256 {got} (equal)",
            registry.addr
        );
        let _ = fs::remove_dir_all(&pulled);
        images.push((image.variant, summary, remote_digest));
    }
    drop(registry);
    Ok(Checked { images })
}
