//! Where the upstream binaries built by `tests/upstream/build.sh` live, and building them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Paths of the upstream binaries, keyed by version in the cache.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kubectl: PathBuf,
    pub kwok: PathBuf,
    pub kwok_stages: PathBuf,
    pub minio: PathBuf,
    pub helm: PathBuf,
    pub asciinema: PathBuf,
    /// krew (the packaging test runs it as `kubectl krew`).
    pub krew: PathBuf,
}

/// The build script, found relative to this crate so it works from any working directory.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("upstream/build.sh")
}

impl Upstream {
    /// Every path `tests/upstream/build.sh --paths` names, built or not.
    pub fn paths() -> Result<HashMap<String, PathBuf>> {
        let out = Command::new("bash")
            .arg(build_script())
            .arg("--paths")
            .output()
            .context("running tests/upstream/build.sh --paths")?;
        if !out.status.success() {
            bail!(
                "tests/upstream/build.sh --paths failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), PathBuf::from(v)))
            .collect())
    }

    /// Locates the binaries without building anything.
    pub fn locate() -> Result<Self> {
        let paths = Self::paths()?;
        let get = |k: &str| {
            paths
                .get(k)
                .cloned()
                .with_context(|| format!("build.sh --paths did not name {k}"))
        };
        Ok(Upstream {
            etcd: get("etcd")?,
            kube_apiserver: get("kube-apiserver")?,
            kubectl: get("kubectl")?,
            kwok: get("kwok")?,
            kwok_stages: get("kwok-stages")?,
            minio: get("minio")?,
            helm: get("helm")?,
            asciinema: get("asciinema")?,
            krew: get("krew")?,
        })
    }

    /// The binaries the control plane needs that are not built yet (helm among them: the
    /// environment installs the product with its chart).
    pub fn missing(&self) -> Vec<&Path> {
        [
            &self.etcd,
            &self.kube_apiserver,
            &self.kubectl,
            &self.kwok,
            &self.kwok_stages,
            &self.minio,
            &self.asciinema,
            &self.helm,
        ]
        .into_iter()
        .filter(|p| !p.exists())
        .map(PathBuf::as_path)
        .collect()
    }

    /// Locates the binaries and fails with what to do if any is missing.
    pub fn require() -> Result<Self> {
        let up = Self::locate()?;
        let missing = up.missing();
        if !missing.is_empty() {
            bail!(
                "upstream binaries are not built: {}\nbuild them first (needs the Go toolchain and \
                 the Go module proxy; cold builds take about 15 minutes): bash tests/upstream/build.sh",
                missing
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(up)
    }

    /// Builds whatever is missing (`components` empty: the control plane's set), showing the
    /// build's progress on this process's output.
    pub fn build(components: &[&str]) -> Result<Self> {
        let status = Command::new("bash")
            .arg(build_script())
            .args(components)
            .status()
            .context("running tests/upstream/build.sh")?;
        if !status.success() {
            bail!("building the upstream binaries failed ({status}); see the messages above");
        }
        Self::require()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_go_toolchain_is_a_clear_error() {
        let cache = tempfile::tempdir().expect("tempdir");
        // A PATH with bash and coreutils but no Go, and an empty cache so a build is needed.
        let out = Command::new("bash")
            .arg(build_script())
            .arg("etcd")
            .env("PATH", "/usr/bin:/bin")
            .env("AEXEC_CACHE", cache.path())
            .output()
            .expect("run build.sh");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("the Go toolchain is missing: install Go 1.25 or newer"),
            "{stderr}"
        );
    }

    #[test]
    fn unknown_component_is_named() {
        let out = Command::new("bash")
            .arg(build_script())
            .arg("kube-dns")
            .output()
            .expect("run build.sh");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("unknown component 'kube-dns'"), "{stderr}");
    }
}
