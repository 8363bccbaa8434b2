//! Images as OCI image layouts (a directory: `oci-layout`, `index.json`, `blobs/sha256/`) and
//! OCI archives (the same directory as one tar), written reproducibly: the same inputs and
//! timestamp give the same digests.
//!
//! **Why JSON by hand and not the `oci-spec` crate:** its types keep labels and annotations in
//! `HashMap`s, so the serialized JSON (and with it every digest) would change from one build to
//! the next. `serde_json` maps keep their keys in a fixed order.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

use crate::{
    Error,
    containerfile::Recipe,
    layer::{Blob, Layer, sha256},
};

pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The annotation containerd reads an imported image's name from.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// BuildKit's default `PATH` for an image whose stages set none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `os/arch` as OCI names them (`linux/amd64`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

impl std::str::FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.split_once('/') {
            Some((os, arch)) if !os.is_empty() && !arch.is_empty() && !arch.contains('/') => {
                Ok(Platform {
                    os: os.into(),
                    arch: arch.into(),
                })
            }
            _ => Err(Error::Usage(format!(
                "platform {s:?} is not OS/ARCH (for example linux/amd64)"
            ))),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

/// The runtime configuration of an image (the config's `config` object).
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub exposed_ports: Vec<String>,
}

impl From<&Recipe> for RunConfig {
    fn from(r: &Recipe) -> Self {
        RunConfig {
            user: r.user.clone(),
            entrypoint: r.entrypoint.clone(),
            cmd: r.cmd.clone(),
            env: r.env.clone(),
            labels: r.labels.clone(),
            workdir: r.workdir.clone(),
            exposed_ports: r.exposed_ports.clone(),
        }
    }
}

/// One platform's image: its layers (each with the instruction that made it) and config.
#[derive(Debug)]
pub struct PlatformImage {
    pub platform: Platform,
    pub layers: Vec<(Layer, String)>,
    pub config: RunConfig,
}

/// The layers a recipe makes for one platform: one per `COPY`, as a Dockerfile build makes
/// them. `context` is the build context; `stages` maps a stage name to the directory that
/// stands in for that stage's file system on this platform.
pub fn recipe_layers(
    recipe: &Recipe,
    context: &Path,
    stages: &BTreeMap<String, PathBuf>,
) -> Result<Vec<(Layer, String)>, Error> {
    let mut layers = Vec::new();
    for copy in &recipe.copies {
        let root = match &copy.from {
            None => context.to_path_buf(),
            Some(stage) => stages.get(stage).cloned().ok_or_else(|| {
                Error::Usage(format!(
                    "COPY --from={stage}: no directory was given for stage {stage}"
                ))
            })?,
        };
        let mut layer = Layer::new();
        for source in &copy.sources {
            let path = root.join(source.trim_start_matches('/'));
            if !path.exists() {
                return Err(Error::Layer(format!(
                    "{}: {} does not exist{}",
                    copy.text,
                    path.display(),
                    match &copy.from {
                        Some(s) => format!(" (the stand-in for stage {s})"),
                        None => " (in the build context)".into(),
                    }
                )));
            }
            let dest = if copy.sources.len() > 1 && !copy.dest.ends_with('/') {
                format!("{}/", copy.dest)
            } else {
                copy.dest.clone()
            };
            layer.copy_from(&path, &dest, copy.chmod)?;
        }
        layers.push((layer, copy.text.clone()));
    }
    Ok(layers)
}

/// A descriptor of a written blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// What was written for one platform.
#[derive(Clone, Debug)]
pub struct Written {
    pub platform: Platform,
    pub manifest: Descriptor,
    pub config: Descriptor,
    /// Sum of the uncompressed layer sizes: the image's size on a node.
    pub uncompressed: u64,
    /// Sum of the compressed layer sizes: what a pull transfers.
    pub compressed: u64,
}

/// The result of [`write_layout`].
#[derive(Clone, Debug)]
pub struct Output {
    /// What `index.json` points at: the multi-platform index, or the one manifest.
    pub top: Descriptor,
    pub images: Vec<Written>,
}

fn rfc3339(epoch: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(epoch).unwrap_or(0), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    fn put(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, Error> {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        let path = self.dir.join(hex);
        std::fs::write(&path, bytes)
            .map_err(|e| Error::Io(format!("writing {}", path.display()), e))?;
        Ok(Descriptor {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as u64,
        })
    }

    fn put_json(&self, media_type: &str, value: &Value) -> Result<Descriptor, Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Layer(e.to_string()))?;
        self.put(media_type, &bytes)
    }
}

/// Writes `images` (one per platform) as an OCI image layout in `dir` (replaced if present),
/// named `reference` (`registry/repo:tag`). With several platforms `index.json` points at an
/// image index listing them; with one, at its manifest. `created` is the timestamp of every
/// file and of the config (`SOURCE_DATE_EPOCH`).
pub fn write_layout(
    dir: &Path,
    reference: &str,
    images: &[PlatformImage],
    created: u64,
) -> Result<Output, Error> {
    if images.is_empty() {
        return Err(Error::Usage("no platform to build".into()));
    }
    let tag = reference
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t.to_owned())
        .ok_or_else(|| {
            Error::Usage(format!(
                "image reference {reference:?} has no tag (expected REPOSITORY:TAG)"
            ))
        })?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| Error::Io(format!("removing {}", dir.display()), e))?;
    }
    let blobs = Blobs {
        dir: dir.join("blobs/sha256"),
    };
    std::fs::create_dir_all(&blobs.dir)
        .map_err(|e| Error::Io(format!("creating {}", blobs.dir.display()), e))?;
    let when = rfc3339(created);
    let mut written = Vec::new();
    for image in images {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut history = Vec::new();
        let (mut uncompressed, mut compressed) = (0, 0);
        for (layer, created_by) in &image.layers {
            let Blob {
                gzip,
                diff_id,
                tar_size,
                ..
            } = layer.write(created)?;
            let d = blobs.put(LAYER, &gzip)?;
            uncompressed += tar_size;
            compressed += d.size;
            layer_descs.push(d.json());
            diff_ids.push(Value::String(diff_id));
            history.push(json!({"created": when, "created_by": created_by}));
        }
        let c = &image.config;
        let mut env: Vec<String> = Vec::new();
        if !c.env.iter().any(|(k, _)| k == "PATH") {
            env.push(DEFAULT_PATH.into());
        }
        env.extend(c.env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut run = serde_json::Map::new();
        run.insert("Env".into(), json!(env));
        if let Some(u) = &c.user {
            run.insert("User".into(), json!(u));
        }
        if let Some(e) = &c.entrypoint {
            run.insert("Entrypoint".into(), json!(e));
        }
        if let Some(cmd) = &c.cmd {
            run.insert("Cmd".into(), json!(cmd));
        }
        if let Some(w) = &c.workdir {
            run.insert("WorkingDir".into(), json!(w));
        }
        if !c.labels.is_empty() {
            run.insert("Labels".into(), json!(c.labels));
        }
        if !c.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, Value> = c
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            run.insert("ExposedPorts".into(), Value::Object(ports));
        }
        let config = json!({
            "created": when,
            "architecture": image.platform.arch,
            "os": image.platform.os,
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        let config_desc = blobs.put_json(CONFIG, &config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config_desc.json(),
            "layers": layer_descs,
            "annotations": image_annotations(c, &when),
        });
        let manifest_desc = blobs.put_json(MANIFEST, &manifest)?;
        written.push(Written {
            platform: image.platform.clone(),
            manifest: manifest_desc,
            config: config_desc,
            uncompressed,
            compressed,
        });
    }
    let names = json!({REF_NAME: tag, CONTAINERD_NAME: reference});
    let top = if written.len() == 1 {
        written[0].manifest.clone()
    } else {
        let manifests: Vec<Value> = written
            .iter()
            .map(|w| {
                let mut d = w.manifest.json();
                d["platform"] = json!({"architecture": w.platform.arch, "os": w.platform.os});
                d
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": manifests,
            "annotations": image_annotations(&images[0].config, &when),
        });
        blobs.put_json(INDEX, &index)?
    };
    let mut top_json = top.json();
    top_json["annotations"] = names;
    if written.len() == 1 {
        let w = &written[0];
        top_json["platform"] = json!({"architecture": w.platform.arch, "os": w.platform.os});
    }
    let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [top_json]});
    let write = |name: &str, v: &Value| {
        let path = dir.join(name);
        let bytes = serde_json::to_vec(v).map_err(|e| Error::Layer(e.to_string()))?;
        std::fs::write(&path, bytes)
            .map_err(|e| Error::Io(format!("writing {}", path.display()), e))
    };
    write("oci-layout", &json!({"imageLayoutVersion": "1.0.0"}))?;
    write("index.json", &index)?;
    Ok(Output {
        top,
        images: written,
    })
}

/// The OCI annotations a manifest carries: the image's `org.opencontainers.image.*` labels
/// and its creation time.
fn image_annotations(c: &RunConfig, when: &str) -> Value {
    let mut a: BTreeMap<String, String> = c
        .labels
        .iter()
        .filter(|(k, _)| k.starts_with("org.opencontainers.image."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    a.insert("org.opencontainers.image.created".into(), when.into());
    json!(a)
}

/// Writes the layout in `dir` as one tar (an "OCI archive", what `ctr images import`,
/// `skopeo copy oci-archive:` and `docker load` of recent versions read), reproducibly.
pub fn write_archive(dir: &Path, archive: &Path, mtime: u64) -> Result<u64, Error> {
    let mut layer = Layer::new();
    layer.copy_from(dir, "/", None)?;
    let mut tar = tar::Builder::new(Vec::new());
    for (path, entry) in layer.entries() {
        let rel = path.trim_start_matches('/');
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_mode(0o644);
        if let crate::layer::Kind::File { source } = &entry.kind {
            let data = std::fs::read(source)
                .map_err(|e| Error::Io(format!("reading {}", source.display()), e))?;
            header.set_size(data.len() as u64);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, rel, data.as_slice())
                .map_err(|e| Error::Io(format!("archiving {rel}"), e))?;
        }
    }
    let bytes = tar
        .into_inner()
        .map_err(|e| Error::Io("finishing the archive".into(), e))?;
    if let Some(parent) = archive.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::Io(format!("creating {}", parent.display()), e))?;
    }
    std::fs::write(archive, &bytes)
        .map_err(|e| Error::Io(format!("writing {}", archive.display()), e))?;
    Ok(bytes.len() as u64)
}

/// Reads back what a layout holds, checking every digest on the way: the images by platform,
/// each with its config and its layers' files. For tests and `aexec-image inspect`.
#[derive(Clone, Debug)]
pub struct Inspected {
    pub reference: Option<String>,
    pub images: Vec<InspectedImage>,
}

#[derive(Clone, Debug)]
pub struct InspectedImage {
    pub platform: Platform,
    pub config: Value,
    /// Every path in the image's layers with its mode and size (later layers win).
    pub files: BTreeMap<String, (u32, u64, tar::EntryType)>,
    pub uncompressed: u64,
}

fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>, Error> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::Layer(format!("unsupported digest {digest}")))?;
    let path = dir.join("blobs/sha256").join(hex);
    let bytes =
        std::fs::read(&path).map_err(|e| Error::Io(format!("reading {}", path.display()), e))?;
    if sha256(&bytes) != digest {
        return Err(Error::Layer(format!(
            "blob {digest} does not match its digest"
        )));
    }
    Ok(bytes)
}

fn parse(bytes: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Layer(format!("invalid JSON: {e}")))
}

pub fn inspect(dir: &Path) -> Result<Inspected, Error> {
    let index_path = dir.join("index.json");
    let index = parse(
        &std::fs::read(&index_path)
            .map_err(|e| Error::Io(format!("reading {}", index_path.display()), e))?,
    )?;
    let top = index["manifests"]
        .get(0)
        .ok_or_else(|| Error::Layer("index.json lists no image".into()))?;
    let reference = top["annotations"][CONTAINERD_NAME]
        .as_str()
        .map(String::from);
    let digest = |v: &Value| v["digest"].as_str().unwrap_or_default().to_owned();
    let manifests: Vec<Value> = if top["mediaType"] == INDEX {
        let nested = parse(&read_blob(dir, &digest(top))?)?;
        nested["manifests"].as_array().cloned().unwrap_or_default()
    } else {
        vec![top.clone()]
    };
    let mut images = Vec::new();
    for m in manifests {
        let manifest = parse(&read_blob(dir, &digest(&m))?)?;
        let config = parse(&read_blob(dir, &digest(&manifest["config"]))?)?;
        let mut files = BTreeMap::new();
        let mut uncompressed = 0;
        for l in manifest["layers"].as_array().cloned().unwrap_or_default() {
            let gz = read_blob(dir, &digest(&l))?;
            let mut tar_bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(gz.as_slice()),
                &mut tar_bytes,
            )
            .map_err(|e| Error::Io("decompressing a layer".into(), e))?;
            uncompressed += tar_bytes.len() as u64;
            let mut archive = tar::Archive::new(tar_bytes.as_slice());
            let entries = archive
                .entries()
                .map_err(|e| Error::Io("reading a layer".into(), e))?;
            for e in entries {
                let e = e.map_err(|e| Error::Io("reading a layer".into(), e))?;
                let h = e.header();
                let path = format!(
                    "/{}",
                    e.path()
                        .map_err(|e| Error::Io("a layer path".into(), e))?
                        .display()
                        .to_string()
                        .trim_end_matches('/')
                );
                files.insert(
                    path,
                    (h.mode().unwrap_or(0), h.size().unwrap_or(0), h.entry_type()),
                );
            }
        }
        images.push(InspectedImage {
            platform: Platform {
                os: config["os"].as_str().unwrap_or_default().into(),
                arch: config["architecture"].as_str().unwrap_or_default().into(),
            },
            config,
            files,
            uncompressed,
        });
    }
    Ok(Inspected { reference, images })
}

/// Copies one file out of the image for `platform` (for example a foreign binary to run
/// under qemu-user).
pub fn extract(dir: &Path, platform: &Platform, path: &str, out: &Path) -> Result<(), Error> {
    let index = parse(
        &std::fs::read(dir.join("index.json"))
            .map_err(|e| Error::Io(format!("reading {}", dir.join("index.json").display()), e))?,
    )?;
    let top = &index["manifests"][0];
    let digest = |v: &Value| v["digest"].as_str().unwrap_or_default().to_owned();
    let manifests: Vec<Value> = if top["mediaType"] == INDEX {
        parse(&read_blob(dir, &digest(top))?)?["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        vec![top.clone()]
    };
    let wanted = path.trim_start_matches('/');
    for m in manifests {
        let manifest = parse(&read_blob(dir, &digest(&m))?)?;
        let config = parse(&read_blob(dir, &digest(&manifest["config"]))?)?;
        if config["architecture"] != platform.arch.as_str() || config["os"] != platform.os.as_str()
        {
            continue;
        }
        let mut found = None;
        for l in manifest["layers"].as_array().cloned().unwrap_or_default() {
            let gz = read_blob(dir, &digest(&l))?;
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
            for e in archive
                .entries()
                .map_err(|e| Error::Io("reading a layer".into(), e))?
            {
                let mut e = e.map_err(|e| Error::Io("reading a layer".into(), e))?;
                if e.path().is_ok_and(|p| p.to_str() == Some(wanted)) {
                    let mut data = Vec::new();
                    std::io::Read::read_to_end(&mut e, &mut data)
                        .map_err(|e| Error::Io("reading a layer".into(), e))?;
                    found = Some(data);
                }
            }
        }
        let data =
            found.ok_or_else(|| Error::Layer(format!("{path} is not in the {platform} image")))?;
        std::fs::write(out, data)
            .map_err(|e| Error::Io(format!("writing {}", out.display()), e))?;
        return Ok(());
    }
    Err(Error::Layer(format!("the layout has no {platform} image")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Kind;

    fn image(arch: &str, content: &[u8]) -> PlatformImage {
        let mut layer = Layer::new();
        layer
            .insert("/bin/tool", Kind::Bytes(content.to_vec()), 0o755)
            .expect("insert");
        PlatformImage {
            platform: Platform {
                os: "linux".into(),
                arch: arch.into(),
            },
            layers: vec![(layer, "COPY tool /bin/tool".into())],
            config: RunConfig {
                user: Some("65532:65532".into()),
                entrypoint: Some(vec!["/bin/tool".into()]),
                labels: [(
                    "org.opencontainers.image.version".to_owned(),
                    "1.0.0".to_owned(),
                )]
                .into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn multi_platform_layout_reads_back_and_is_reproducible() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let images = [image("amd64", b"x86"), image("arm64", b"arm")];
        let out = write_layout(&a, "example.org/tool:1.0.0", &images, 1_700_000_000).expect("w");
        let again = write_layout(&b, "example.org/tool:1.0.0", &images, 1_700_000_000).expect("w");
        assert_eq!(out.top, again.top, "same inputs, same digests");
        assert_eq!(out.top.media_type, INDEX);
        let seen = inspect(&a).expect("inspect");
        assert_eq!(seen.reference.as_deref(), Some("example.org/tool:1.0.0"));
        let archs: Vec<&str> = seen
            .images
            .iter()
            .map(|i| i.platform.arch.as_str())
            .collect();
        assert_eq!(archs, vec!["amd64", "arm64"]);
        let cfg = &seen.images[0].config;
        assert_eq!(cfg["config"]["User"], "65532:65532");
        assert_eq!(
            cfg["config"]["Labels"]["org.opencontainers.image.version"],
            "1.0.0"
        );
        assert_eq!(seen.images[1].files["/bin/tool"].0, 0o755);
        let out_file = tmp.path().join("tool-arm64");
        extract(
            &a,
            &"linux/arm64".parse().expect("p"),
            "/bin/tool",
            &out_file,
        )
        .expect("x");
        assert_eq!(std::fs::read(out_file).expect("read"), b"arm");
        // The archive of the same layout is the same bytes too.
        let (ta, tb) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
        write_archive(&a, &ta, 1).expect("archive");
        write_archive(&b, &tb, 1).expect("archive");
        assert_eq!(std::fs::read(ta).expect("a"), std::fs::read(tb).expect("b"));
    }

    #[test]
    fn a_changed_blob_is_detected() {
        let tmp = tempfile::tempdir().expect("tmp");
        let out = write_layout(tmp.path(), "t:1", &[image("amd64", b"x")], 0).expect("w");
        let layer_hex = {
            let m: Value = serde_json::from_slice(
                &read_blob(tmp.path(), &out.images[0].manifest.digest).expect("m"),
            )
            .expect("json");
            m["layers"][0]["digest"].as_str().expect("d")[7..].to_owned()
        };
        std::fs::write(tmp.path().join("blobs/sha256").join(layer_hex), b"tampered").expect("w");
        let e = inspect(tmp.path()).expect_err("tampered");
        assert!(e.to_string().contains("does not match its digest"), "{e}");
    }

    #[test]
    fn reference_needs_a_tag() {
        let tmp = tempfile::tempdir().expect("tmp");
        let e = write_layout(
            tmp.path(),
            "example.org:5000/tool",
            &[image("amd64", b"x")],
            0,
        )
        .expect_err("no tag");
        assert!(e.to_string().contains("has no tag"), "{e}");
    }
}
