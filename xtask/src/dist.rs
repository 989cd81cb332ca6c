//! `cargo xtask dist`: the release artifacts in `target/dist/`, and the OCI images of the
//! filter that meshes pull (Istio's `WasmPlugin`, Envoy Gateway's `EnvoyExtensionPolicy`).
//!
//! Everything is made here in Rust (tar, gzip, sha256, the JSON manifests) with no docker
//! daemon, and byte for byte reproducibly: fixed mtimes, owners and modes, sorted entries,
//! a gzip header without time or name, and JSON written in one fixed order. The same
//! module therefore always gives the same image digests.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::tools::Result;

/// Media type of the Wasm artifact's config blob (the "oci" variant of the Wasm image
/// specification that Istio and Envoy Gateway read).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
/// Media type of the Wasm artifact's one layer: the module itself, not tarred.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The OCI image manifest media type.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The "compat" variant: one ordinary gzipped tar layer holding `plugin.wasm`.
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The compat variant's layer media type.
pub const OCI_LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The file the compat layer must hold.
pub const COMPAT_WASM_NAME: &str = "plugin.wasm";
/// The tag both layouts carry (`oci:<dir>:<tag>`): the workspace version.
pub const TAG: &str = env!("CARGO_PKG_VERSION");
/// The module's file name in `target/dist/`.
pub const FILTER_NAME: &str = "tessera_filter.wasm";

/// `target/dist/`.
pub fn dist_dir(root: &Path) -> PathBuf {
    root.join("target").join("dist")
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>`, as OCI descriptors spell a digest.
pub fn oci_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// One file of a tarball: its path inside, its bytes and whether it is executable.
pub struct Entry {
    /// Path inside the archive (relative, `/`-separated).
    pub path: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Mode 0755 instead of 0644.
    pub executable: bool,
}

/// A tar of `entries` with fixed metadata (mtime 0, uid/gid 0, no owner names), sorted
/// by path, so the same files always give the same bytes.
pub fn deterministic_tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut builder = tar::Builder::new(Vec::new());
    for e in sorted {
        let mut header = tar::Header::new_ustar();
        header.set_size(e.data.len() as u64);
        header.set_mode(if e.executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header
            .set_username("")
            .and_then(|()| header.set_groupname(""))
            .map_err(|err| format!("tar header for {}: {err}", e.path))?;
        builder
            .append_data(&mut header, &e.path, e.data.as_slice())
            .map_err(|err| format!("could not add {} to a tar: {err}", e.path))?;
    }
    builder
        .into_inner()
        .map_err(|e| format!("could not finish a tar: {e}"))
}

/// Gzip with a header that carries no time, no file name and a fixed OS byte.
pub fn deterministic_gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder: GzEncoder<Vec<u8>> = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|e| format!("gzip failed: {e}"))
}

/// JSON bytes in one fixed form (serde_json keeps the key order we write).
fn json_bytes(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| format!("could not encode JSON: {e}"))
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": oci_digest(bytes), "size": bytes.len()})
}

/// Which of the two image formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The Wasm OCI artifact: config and layer with the Wasm media types.
    Oci,
    /// One standard gzipped tar layer holding `plugin.wasm`.
    Compat,
}

impl Variant {
    /// The layout's directory name under `target/dist/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Variant::Oci => "oci",
            Variant::Compat => "compat",
        }
    }
}

/// What an image layout holds, for checks and for the notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The layout directory.
    pub dir: PathBuf,
    /// Which format.
    pub variant: Variant,
    /// `sha256:...` of the manifest (what `@sha256:` references and Istio's `sha256`
    /// field name).
    pub manifest_digest: String,
    /// `sha256:...` of the config blob.
    pub config_digest: String,
    /// `sha256:...` of the one layer.
    pub layer_digest: String,
}

/// Writes an OCI image layout of `module` to `dir` (cleared first). Every blob, the
/// manifest and `index.json` are written in one fixed form.
pub fn write_image(dir: &Path, module: &[u8], variant: Variant) -> Result<Image> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("could not clear {}: {e}", dir.display()))?;
    }
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|e| format!("could not create {}: {e}", blobs.display()))?;
    let (config, layer, config_type, layer_type) = match variant {
        Variant::Oci => {
            // The Wasm image specification's config: the runtime the module targets.
            let config = json_bytes(&json!({"type": "envoy_proxy"}))?;
            (
                config,
                module.to_vec(),
                WASM_CONFIG_MEDIA_TYPE,
                WASM_LAYER_MEDIA_TYPE,
            )
        }
        Variant::Compat => {
            let tar = deterministic_tar(&[Entry {
                path: COMPAT_WASM_NAME.into(),
                data: module.to_vec(),
                executable: false,
            }])?;
            let layer = deterministic_gzip(&tar)?;
            // An image config for a filesystem of one file; the diff id is the digest of
            // the uncompressed tar. No creation time: it would change every build.
            let config = json_bytes(&json!({
                "architecture": "wasm",
                "os": "wasip1",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [oci_digest(&tar)]},
            }))?;
            (config, layer, OCI_CONFIG_MEDIA_TYPE, OCI_LAYER_MEDIA_TYPE)
        }
    };
    let mut layer_desc = descriptor(layer_type, &layer);
    if variant == Variant::Oci {
        layer_desc["annotations"] = json!({"org.opencontainers.image.title": FILTER_NAME});
    }
    let mut annotations = json!({
        "org.opencontainers.image.title": "tessera-filter",
        "org.opencontainers.image.description": "Tessera's proxy-wasm token verifier for Envoy",
        "org.opencontainers.image.version": TAG,
        "org.opencontainers.image.licenses": "Apache-2.0",
    });
    if variant == Variant::Compat {
        // The compat variant with the OCI layer media type says so in an annotation.
        annotations["module.wasm.image/variant"] = json!("compat");
    }
    let manifest = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": descriptor(config_type, &config),
        "layers": [layer_desc],
        "annotations": annotations,
    }))?;
    let mut manifest_desc = descriptor(OCI_MANIFEST_MEDIA_TYPE, &manifest);
    manifest_desc["annotations"] = json!({"org.opencontainers.image.ref.name": TAG});
    let index = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    }))?;
    for blob in [&config, &layer, &manifest] {
        write(&blobs.join(sha256_hex(blob)), blob)?;
    }
    write(&dir.join("index.json"), &index)?;
    write(
        &dir.join("oci-layout"),
        &json_bytes(&json!({"imageLayoutVersion": "1.0.0"}))?,
    )?;
    Ok(Image {
        dir: dir.to_path_buf(),
        variant,
        manifest_digest: oci_digest(&manifest),
        config_digest: oci_digest(&config),
        layer_digest: oci_digest(&layer),
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| format!("could not write {}: {e}", path.display()))
}

/// Writes `<name>` and `<name>.sha256` (in `sha256sum` format) into `dir`.
fn write_with_sum(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    write(&path, bytes)?;
    write(
        &dir.join(format!("{name}.sha256")),
        format!("{}  {name}\n", sha256_hex(bytes)).as_bytes(),
    )?;
    Ok(path)
}

/// The files of a directory (not recursive: the edge-worker bundle is flat), as tar
/// entries under `prefix/`.
fn dir_entries(dir: &Path, prefix: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let read = fs::read_dir(dir).map_err(|e| format!("could not read {}: {e}", dir.display()))?;
    for item in read {
        let item = item.map_err(|e| format!("could not read {}: {e}", dir.display()))?;
        let path = item.path();
        if !path.is_file() {
            continue;
        }
        let name = item.file_name().to_string_lossy().into_owned();
        let data =
            fs::read(&path).map_err(|e| format!("could not read {}: {e}", path.display()))?;
        out.push(Entry {
            path: format!("{prefix}/{name}"),
            data,
            executable: false,
        });
    }
    Ok(out)
}

/// The inputs of the artifacts.
pub struct Inputs<'a> {
    /// The release build of the filter.
    pub filter_wasm: &'a Path,
    /// The edge-worker bundle directory.
    pub edge_bundle: &'a Path,
    /// The `tessera` binary (release).
    pub cp_bin: &'a Path,
}

/// What `dist` wrote.
pub struct Dist {
    /// `target/dist/`.
    pub dir: PathBuf,
    /// The filter module's sha256 (hex).
    pub module_sha256: String,
    /// The Wasm artifact image.
    pub oci: Image,
    /// The compat image.
    pub compat: Image,
    /// Every file written at the top of `dir`.
    pub files: Vec<PathBuf>,
}

/// Writes every artifact into `dir` (cleared first).
pub fn write_dist(dir: &Path, inputs: &Inputs<'_>) -> Result<Dist> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("could not clear {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let module = fs::read(inputs.filter_wasm)
        .map_err(|e| format!("could not read {}: {e}", inputs.filter_wasm.display()))?;
    let mut files = vec![write_with_sum(dir, FILTER_NAME, &module)?];

    let edge_prefix = format!("tessera-edge-worker-{TAG}");
    let edge = deterministic_gzip(&deterministic_tar(&dir_entries(
        inputs.edge_bundle,
        &edge_prefix,
    )?)?)?;
    files.push(write_with_sum(
        dir,
        &format!("{edge_prefix}.tar.gz"),
        &edge,
    )?);

    let platform = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    let cp_prefix = format!("tessera-{TAG}-{platform}");
    let bin = fs::read(inputs.cp_bin)
        .map_err(|e| format!("could not read {}: {e}", inputs.cp_bin.display()))?;
    let cp = deterministic_gzip(&deterministic_tar(&[Entry {
        path: format!("{cp_prefix}/tessera"),
        data: bin,
        executable: true,
    }])?)?;
    files.push(write_with_sum(dir, &format!("{cp_prefix}.tar.gz"), &cp)?);

    let oci = write_image(&dir.join(Variant::Oci.dir_name()), &module, Variant::Oci)?;
    let compat = write_image(
        &dir.join(Variant::Compat.dir_name()),
        &module,
        Variant::Compat,
    )?;
    Ok(Dist {
        dir: dir.to_path_buf(),
        module_sha256: sha256_hex(&module),
        oci,
        compat,
        files,
    })
}

/// Prints what was written.
pub fn report(dist: &Dist) {
    for f in &dist.files {
        let size = fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        println!("{}  {}", f.display(), crate::tools::human_size(size));
    }
    println!("module sha256: {}", dist.module_sha256);
    for image in [&dist.oci, &dist.compat] {
        println!(
            "image {} ({}:{TAG}): manifest {}, config {}, layer {}",
            image.variant.dir_name(),
            image.dir.display(),
            image.manifest_digest,
            image.config_digest,
            image.layer_digest
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-dist-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().display().to_string();
                    out.push((rel, fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    /// A module-like input; the real module is imaged the same way by `cargo xtask test`.
    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend((0..5000u32).map(|i| (i * 7 % 251) as u8));
        m
    }

    #[test]
    fn two_runs_give_identical_bytes_and_digests() {
        for variant in [Variant::Oci, Variant::Compat] {
            let (a, b) = (tmp("a"), tmp("b"));
            let ia = write_image(&a, &module(), variant).unwrap();
            // Let the clock move: nothing time-dependent may leak into the bytes.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let ib = write_image(&b, &module(), variant).unwrap();
            assert_eq!(ia.manifest_digest, ib.manifest_digest);
            assert_eq!(files_of(&a), files_of(&b), "{variant:?}");
            // A different module gives a different image.
            let mut other = module();
            other.push(0);
            let ic = write_image(&b, &other, variant).unwrap();
            assert_ne!(ia.manifest_digest, ic.manifest_digest);
            let _ = fs::remove_dir_all(&a);
            let _ = fs::remove_dir_all(&b);
        }
    }

    #[test]
    fn layouts_are_well_formed() {
        let m = module();
        let dir = tmp("layout");
        let oci = write_image(&dir, &m, Variant::Oci).unwrap();
        // The Wasm artifact's layer is the module itself.
        assert_eq!(oci.layer_digest, oci_digest(&m));
        let index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let md = &index["manifests"][0];
        assert_eq!(md["digest"], json!(oci.manifest_digest));
        assert_eq!(
            md["annotations"]["org.opencontainers.image.ref.name"],
            json!(TAG)
        );
        let hex = oci.manifest_digest.trim_start_matches("sha256:");
        let manifest_bytes = fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(md["size"], json!(manifest_bytes.len()));
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(
            manifest["config"]["mediaType"],
            json!(WASM_CONFIG_MEDIA_TYPE)
        );
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            json!(WASM_LAYER_MEDIA_TYPE)
        );
        // Every blob is stored under its own digest.
        for (name, bytes) in files_of(&dir.join("blobs/sha256")) {
            assert_eq!(name, sha256_hex(&bytes));
        }

        let compat = write_image(&dir, &m, Variant::Compat).unwrap();
        let hex = compat.layer_digest.trim_start_matches("sha256:");
        let layer = fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()));
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            assert_eq!(entry.header().mtime().unwrap(), 0);
            assert_eq!(entry.header().uid().unwrap(), 0);
            names.push(entry.path().unwrap().display().to_string());
            assert_eq!(data, m);
        }
        assert_eq!(names, [COMPAT_WASM_NAME]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn tarballs_are_sorted_and_reproducible() {
        let entries = |first: &str| {
            let mut v = vec![
                Entry {
                    path: "p/b".into(),
                    data: b"bb".to_vec(),
                    executable: true,
                },
                Entry {
                    path: "p/a".into(),
                    data: first.as_bytes().to_vec(),
                    executable: false,
                },
            ];
            v.reverse();
            v
        };
        let one = deterministic_gzip(&deterministic_tar(&entries("a")).unwrap()).unwrap();
        let two = deterministic_gzip(&deterministic_tar(&entries("a")).unwrap()).unwrap();
        assert_eq!(one, two);
        // No time in the gzip header (bytes 4..8) and the "unknown" OS byte.
        assert_eq!(&one[4..8], &[0, 0, 0, 0]);
        assert_eq!(one[9], 255);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(one.as_slice()));
        let listed: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [("p/a".to_string(), 0o644), ("p/b".to_string(), 0o755)]
        );
    }
}
