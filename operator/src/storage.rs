//! Where recordings are kept, behind one trait: a local directory (the default, no cloud needed).
//! S3 (aws-sdk-s3) is the second implementation, to come.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// An object store for recording files, addressed by `<namespace>/<session>-<uid>/<file>` keys.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Writes an object whole (replacing it).
    fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Reads an object whole, at most `max` bytes.
    fn get(&self, key: &str, max: u64)
    -> impl std::future::Future<Output = Result<Vec<u8>>> + Send;
    /// The URI of a key, for the session's status.
    fn uri(&self, key: &str) -> String;
}

/// Recordings in a local directory. Writes go to a temporary file renamed into place, so a
/// reader never sees half an object and a crash leaves either the old object or the new one.
#[derive(Clone, Debug)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDir { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        // Keys come from our own naming, but never let one climb out of the root.
        if key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            bail!("invalid recording key {key:?}");
        }
        Ok(self.root.join(key))
    }
}

impl Storage for LocalDir {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, &bytes)
            .await
            .with_context(|| format!("writing {}", tmp.display()))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .with_context(|| format!("renaming {} into place", tmp.display()))
    }

    async fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        let len = tokio::fs::metadata(&path)
            .await
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if len > max {
            bail!(
                "{} is {len} bytes, more than the {max} allowed",
                path.display()
            );
        }
        tokio::fs::read(&path)
            .await
            .with_context(|| format!("reading {}", path.display()))
    }

    fn uri(&self, key: &str) -> String {
        format!("file://{}", self.root.join(key).display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_and_bounds() {
        let dir = std::env::temp_dir().join(format!("aexec-storage-{}", std::process::id()));
        let s = LocalDir::new(&dir);
        s.put("ns/s-1/seg-000000.cast", b"hello".to_vec())
            .await
            .expect("put");
        assert_eq!(
            s.get("ns/s-1/seg-000000.cast", 10).await.expect("get"),
            b"hello"
        );
        assert!(
            s.get("ns/s-1/seg-000000.cast", 2).await.is_err(),
            "bounded read"
        );
        assert!(s.put("../escape", vec![]).await.is_err());
        assert!(s.put("ns//x", vec![]).await.is_err());
        assert!(s.uri("ns/s-1/manifest.json").starts_with("file://"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
