//! The real node's images. Nothing can be pulled here, so every image a pod runs is built in
//! this run and imported into containerd: pause (the sandbox every pod starts with, built from
//! the C file in the Kubernetes module), busybox (a small image with a shell, for target pods)
//! and the operator's own image (built by `./dev image`).

use std::path::{Path, PathBuf};

use aexec_image::{
    Platform, PlatformImage, RunConfig,
    layer::{Kind, Layer},
    layout,
};
use anyhow::{Context, Result, bail};

use crate::{TestEnv, node::NodeBinaries};

/// An image the node runs, by name.
#[derive(Clone, Copy, Debug)]
pub struct LocalImage {
    pub repository: &'static str,
    pub tag: &'static str,
}

impl LocalImage {
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// The sandbox image (containerd's `sandbox_image`).
pub const PAUSE: LocalImage = LocalImage {
    repository: "localhost/aexec/pause",
    tag: "v1.35.4",
};
/// A shell and the usual tools, as the target of sessions.
pub const BUSYBOX: LocalImage = LocalImage {
    repository: "localhost/aexec/busybox",
    tag: "1.35",
};
/// The unprivileged user target pods run as (`id` shows it).
pub const APP_UID: u32 = 1000;

fn amd64() -> Platform {
    Platform {
        os: "linux".into(),
        arch: "amd64".into(),
    }
}

/// Writes `image` as an OCI archive in `dir` and returns its path.
fn archive(dir: &Path, name: &str, reference: &str, image: PlatformImage) -> Result<PathBuf> {
    let layout_dir = dir.join(format!("{name}-oci"));
    layout::write_layout(&layout_dir, reference, &[image], 0)?;
    let tar = dir.join(format!("{name}.oci.tar"));
    layout::write_archive(&layout_dir, &tar, 0)?;
    Ok(tar)
}

fn pause_image(node: &NodeBinaries) -> Result<PlatformImage> {
    let mut layer = Layer::new();
    layer.copy_from(&node.pause, "/pause", Some(0o755))?;
    Ok(PlatformImage {
        platform: amd64(),
        layers: vec![(layer, "COPY pause /pause".into())],
        config: RunConfig {
            user: Some("65535:65535".into()),
            entrypoint: Some(vec!["/pause".into()]),
            ..Default::default()
        },
    })
}

fn busybox_image(node: &NodeBinaries) -> Result<PlatformImage> {
    let mut layer = Layer::new();
    layer.copy_from(&node.busybox, "/bin/busybox", Some(0o755))?;
    let out = std::process::Command::new(&node.busybox)
        .arg("--list-full")
        .output()
        .context("listing busybox's applets")?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet.trim().is_empty() || applet == "bin/busybox" {
            continue;
        }
        layer.insert(
            &format!("/{applet}"),
            Kind::Symlink {
                target: "/bin/busybox".into(),
            },
            0o777,
        )?;
    }
    let passwd = format!(
        "root:x:0:0:root:/root:/bin/sh\napp:x:{APP_UID}:{APP_UID}:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    );
    let group = format!("root:x:0:\napp:x:{APP_UID}:\nnogroup:x:65534:\n");
    layer.insert("/etc/passwd", Kind::Bytes(passwd.into_bytes()), 0o644)?;
    layer.insert("/etc/group", Kind::Bytes(group.into_bytes()), 0o644)?;
    layer.insert("/tmp", Kind::Dir, 0o1777)?;
    layer.insert("/root", Kind::Dir, 0o700)?;
    layer.insert("/home/app", Kind::Dir, 0o777)?;
    Ok(PlatformImage {
        platform: amd64(),
        layers: vec![(layer, "busybox-static with its applets".into())],
        config: RunConfig {
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        },
    })
}

/// The operator's image archive: `AEXEC_OPERATOR_IMAGE`, or what `./dev image` wrote.
pub fn operator_archive() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AEXEC_OPERATOR_IMAGE") {
        return Ok(PathBuf::from(p));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let version = env!("CARGO_PKG_VERSION");
    let path = repo.join(format!("dist/aexec-operator_{version}.oci.tar"));
    if !path.exists() {
        bail!(
            "the operator's image is not built ({}): run `./dev image` first (./dev test does)",
            path.display()
        );
    }
    Ok(path)
}

impl TestEnv {
    /// Builds pause and busybox, and imports them with the operator's image into containerd.
    pub(crate) async fn import_node_images(&self, node: &NodeBinaries) -> Result<()> {
        let dir = self.dir.join("images");
        std::fs::create_dir_all(&dir)?;
        let archives = [
            archive(&dir, "pause", &PAUSE.reference(), pause_image(node)?)?,
            archive(&dir, "busybox", &BUSYBOX.reference(), busybox_image(node)?)?,
            operator_archive()?,
        ];
        for a in archives {
            self.import_image(&a).await?;
        }
        Ok(())
    }

    /// `ctr images import` of an OCI archive into the node's image store.
    pub async fn import_image(&self, archive: &Path) -> Result<()> {
        let mut cmd = tokio::process::Command::from(self.ctr()?);
        let out = cmd
            .args(["images", "import"])
            .arg(archive)
            .output()
            .await
            .context("running ctr images import")?;
        if !out.status.success() {
            bail!(
                "importing {} into containerd failed: {}{}",
                archive.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}
