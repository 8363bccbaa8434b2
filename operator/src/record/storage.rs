//! Where recordings are kept, behind one trait with two implementations: a local directory (the
//! default, no cloud needed) and S3 or any S3-compatible store (aws-sdk-s3). [`Store`] picks one
//! at startup. Writes never go to a store directly: they go through the local spool
//! ([`crate::record::spool`]), which uploads them and keeps them while the store is unreachable.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::{
    error::DisplayErrorContext,
    primitives::{ByteStream, DateTime},
    types::ObjectLockMode,
};

/// An object store for recording files, addressed by `<namespace>/<session>-<uid>/<file>` keys.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Writes an object whole (replacing it). `sha256` is the bytes' SHA-256 in lowercase hex
    /// when the caller already has it (a segment's, from its sidecar): S3 then signs the request
    /// with it rather than hashing the bytes once more ([`precomputed_payload`]).
    fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        sha256: Option<&str>,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Reads an object whole, at most `max` bytes.
    fn get(&self, key: &str, max: u64)
    -> impl std::future::Future<Output = Result<Vec<u8>>> + Send;
    /// The keys under `prefix` (a `<namespace>/<session>-<uid>` directory), file names only.
    fn list(&self, prefix: &str) -> impl std::future::Future<Output = Result<Vec<String>>> + Send;
    /// The "directories" directly under `parent` ("" for the root) whose names start with
    /// `starts_with`, names only, sorted: the namespaces (under the root) and the sessions'
    /// `<session>-<uid>` directories (under a namespace), to find session records.
    fn list_dirs(
        &self,
        parent: &str,
        starts_with: &str,
    ) -> impl std::future::Future<Output = Result<Vec<String>>> + Send;
    /// The URI of a key, for the session's status.
    fn uri(&self, key: &str) -> String;
}

/// Refuses keys that could climb out of a prefix or name nothing.
pub fn check_key(key: &str) -> Result<()> {
    if key
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        bail!("invalid recording key {key:?}");
    }
    Ok(())
}

/// The store chosen on the command line.
#[derive(Clone, Debug)]
pub enum Store {
    Local(LocalDir),
    S3(S3Store),
}

impl Storage for Store {
    async fn put(&self, key: &str, bytes: Vec<u8>, sha256: Option<&str>) -> Result<()> {
        match self {
            Store::Local(s) => s.put(key, bytes, sha256).await,
            Store::S3(s) => s.put(key, bytes, sha256).await,
        }
    }

    async fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        match self {
            Store::Local(s) => s.get(key, max).await,
            Store::S3(s) => s.get(key, max).await,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        match self {
            Store::Local(s) => s.list(prefix).await,
            Store::S3(s) => s.list(prefix).await,
        }
    }

    async fn list_dirs(&self, parent: &str, starts_with: &str) -> Result<Vec<String>> {
        match self {
            Store::Local(s) => s.list_dirs(parent, starts_with).await,
            Store::S3(s) => s.list_dirs(parent, starts_with).await,
        }
    }

    fn uri(&self, key: &str) -> String {
        match self {
            Store::Local(s) => s.uri(key),
            Store::S3(s) => s.uri(key),
        }
    }
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
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Runs a filesystem job on tokio's blocking pool: one trip there and back however many calls
/// the job makes. Each `tokio::fs` call is a trip of its own (a thread woken, a task woken
/// back), and the trips of the spool's files were about a tenth of the operator's CPU under a
/// bulk stream (docs/performance.md, "Where #18 stands (2026-12-04)").
pub async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(job)
        .await
        .context("a filesystem task of the operator panicked")?
}

/// Writes `bytes` to `path` through a temporary file renamed into place (and synced, so a
/// crash of the machine does not leave an empty file under the final name).
pub async fn write_atomic(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let path = path.to_owned();
    blocking(move || write_atomic_now(&path, &bytes)).await
}

/// [`write_atomic`], on the calling thread.
fn write_atomic_now(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_data()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
}

/// Reads `path` whole if it is at most `max` bytes.
pub async fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let path = path.to_owned();
    blocking(move || {
        use std::io::Read as _;
        let f =
            std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if len > max {
            bail!(
                "{} is {len} bytes, more than the {max} allowed",
                path.display()
            );
        }
        // Read through the handle whose length was checked, and never past `max` should the
        // file grow in between.
        let mut bytes = Vec::with_capacity(len as usize);
        f.take(max + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        if bytes.len() as u64 > max {
            bail!(
                "{} grew past the {max} bytes allowed while it was read",
                path.display()
            );
        }
        Ok(bytes)
    })
    .await
}

/// The file names in `dir` (none if it does not exist), temporary files left out.
pub async fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let dir = dir.to_owned();
    blocking(move || list_dir_now(&dir)).await
}

/// [`list_dir`], on the calling thread.
pub fn list_dir_now(dir: &Path) -> Result<Vec<String>> {
    list_now(dir, |name, _| !name.ends_with(".tmp"))
}

/// The subdirectories of `dir` whose names start with `starts_with` (none if `dir` does not
/// exist), sorted.
pub async fn list_subdirs(dir: &Path, starts_with: &str) -> Result<Vec<String>> {
    let (dir, starts_with) = (dir.to_owned(), starts_with.to_owned());
    blocking(move || {
        list_now(&dir, |name, entry| {
            name.starts_with(&starts_with) && entry.file_type().is_ok_and(|t| t.is_dir())
        })
    })
    .await
}

/// The names in `dir` that `keep` keeps, sorted; none if `dir` does not exist.
fn list_now(dir: &Path, keep: impl Fn(&str, &std::fs::DirEntry) -> bool) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if let Some(name) = entry.file_name().to_str()
            && keep(name, &entry)
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

impl Storage for LocalDir {
    async fn put(&self, key: &str, bytes: Vec<u8>, _sha256: Option<&str>) -> Result<()> {
        write_atomic(&self.path(key)?, bytes).await
    }

    async fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        read_bounded(&self.path(key)?, max).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        list_dir(&self.path(prefix)?).await
    }

    async fn list_dirs(&self, parent: &str, starts_with: &str) -> Result<Vec<String>> {
        let dir = if parent.is_empty() {
            self.root.clone()
        } else {
            self.path(parent)?
        };
        list_subdirs(&dir, starts_with).await
    }

    fn uri(&self, key: &str) -> String {
        format!("file://{}", self.root.join(key).display())
    }
}

/// Settings of the S3 store.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Prepended to every key (`recordings/`, say); empty for the bucket's root.
    pub prefix: String,
    /// A custom endpoint (MinIO, Ceph, ...); the AWS endpoint of the region otherwise.
    pub endpoint: Option<String>,
    /// The region; otherwise the usual AWS chain (AWS_REGION, profile, instance metadata).
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub force_path_style: bool,
    /// Object Lock retention for every object written: mode and days. The bucket must have
    /// Object Lock enabled.
    pub object_lock: Option<(ObjectLock, u32)>,
}

/// S3 Object Lock modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum ObjectLock {
    /// Users with `s3:BypassGovernanceRetention` can still delete or shorten retention.
    Governance,
    /// Nobody, not even the root account, can delete an object before its retention ends.
    Compliance,
}

/// Recordings in an S3 bucket. Credentials come from the usual AWS chain: environment
/// variables, shared config and credentials files, web identity (EKS IRSA / pod identity),
/// ECS and EC2 instance metadata.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    settings: S3Settings,
}

/// The S3 client's connection pool: HTTPS (or plain HTTP, for an `http://` endpoint) with rustls
/// and ring, the same TLS crypto as the operator's other clients and its server.
pub fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// An interceptor that has SigV4 sign a PUT's body with `sha256` (its SHA-256 in lowercase hex,
/// already computed by the caller) instead of hashing the body again: the hash of every
/// uploaded byte was 7.5% of the operator's CPU for random output (docs/performance.md). The
/// request still carries the hash in `x-amz-content-sha256` under the signature, and the store
/// checks the body against it: a wrong hash is refused, never stored. The end-to-end test
/// `a_precomputed_payload_hash_is_what_s3_checks` puts both a right and a wrong one to MinIO.
pub fn precomputed_payload(sha256: &str) -> impl aws_sdk_s3::config::Intercept + 'static {
    PrecomputedPayload(sha256.to_owned())
}

#[derive(Debug)]
struct PrecomputedPayload(String);

impl aws_sdk_s3::config::Intercept for PrecomputedPayload {
    fn name(&self) -> &'static str {
        "aexec precomputed payload SHA-256"
    }

    fn modify_before_signing(
        &self,
        _: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        cfg.interceptor_state()
            .store_put(aws_runtime::auth::PayloadSigningOverride::Precomputed(
                self.0.clone(),
            ));
        Ok(())
    }
}

impl S3Store {
    /// Builds the client (no request is made).
    pub async fn new(settings: S3Settings) -> Result<Self> {
        if settings.bucket.is_empty() {
            bail!("--s3-bucket is required with --storage=s3");
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(https_client())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(3))
                    .operation_attempt_timeout(std::time::Duration::from_secs(20))
                    .build(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            bail!(
                "no AWS region: pass --s3-region or set AWS_REGION (any value works for most S3-compatible servers)"
            );
        }
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(endpoint) = &settings.endpoint {
            conf = conf.endpoint_url(endpoint);
        }
        conf = conf.force_path_style(settings.force_path_style);
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            settings,
        })
    }

    fn key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(format!("{}{key}", self.settings.prefix))
    }
}

impl Storage for S3Store {
    async fn put(&self, key: &str, bytes: Vec<u8>, sha256: Option<&str>) -> Result<()> {
        let full = self.key(key)?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .body(ByteStream::from(bytes));
        if let Some((mode, days)) = self.settings.object_lock {
            let until = std::time::SystemTime::now()
                + std::time::Duration::from_secs(u64::from(days) * 86_400);
            req = req
                .object_lock_mode(match mode {
                    ObjectLock::Governance => ObjectLockMode::Governance,
                    ObjectLock::Compliance => ObjectLockMode::Compliance,
                })
                .object_lock_retain_until_date(DateTime::from(until));
        }
        let sent = match sha256 {
            Some(sha) => {
                req.customize()
                    .interceptor(precomputed_payload(sha))
                    .send()
                    .await
            }
            None => req.send().await,
        };
        sent.map_err(|e| {
            anyhow::anyhow!("uploading {}: {}", self.uri(key), DisplayErrorContext(e))
        })?;
        Ok(())
    }

    async fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        let full = self.key(key)?;
        let resp = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("downloading {}: {}", self.uri(key), DisplayErrorContext(e))
            })?;
        let len = u64::try_from(resp.content_length().unwrap_or(0)).unwrap_or(0);
        if len > max {
            bail!(
                "{} is {len} bytes, more than the {max} allowed",
                self.uri(key)
            );
        }
        // Read at most one byte past the bound: a store that sends more than it announced
        // (or announces nothing) cannot make us buffer it.
        use tokio::io::AsyncReadExt as _;
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        resp.body
            .into_async_read()
            .take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("downloading {}", self.uri(key)))?;
        if bytes.len() as u64 > max {
            bail!("{} is more than the {max} bytes allowed", self.uri(key));
        }
        Ok(bytes)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = format!("{}/", self.key(prefix)?);
        let mut names = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(&dir)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                anyhow::anyhow!("listing {}: {}", self.uri(prefix), DisplayErrorContext(e))
            })?;
            for obj in page.contents() {
                if let Some(name) = obj.key().and_then(|k| k.strip_prefix(&dir))
                    && !name.contains('/')
                {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn list_dirs(&self, parent: &str, starts_with: &str) -> Result<Vec<String>> {
        let dir = if parent.is_empty() {
            self.settings.prefix.clone()
        } else {
            format!("{}/", self.key(parent)?)
        };
        let mut names = Vec::new();
        // The delimiter makes S3 return one common prefix per directory, not every object.
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(format!("{dir}{starts_with}"))
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                anyhow::anyhow!("listing {}: {}", self.uri(parent), DisplayErrorContext(e))
            })?;
            for p in page.common_prefixes() {
                if let Some(name) = p
                    .prefix()
                    .and_then(|k| k.strip_prefix(&dir))
                    .and_then(|k| k.strip_suffix('/'))
                    && !name.is_empty()
                    && !name.contains('/')
                {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn uri(&self, key: &str) -> String {
        format!(
            "s3://{}/{}{key}",
            self.settings.bucket, self.settings.prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_and_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDir::new(dir.path());
        s.put("ns/s-1/seg-000000.cast", b"hello".to_vec(), None)
            .await
            .expect("put");
        s.put("ns/s-1/seg-000000.json", b"{}".to_vec(), None)
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
        assert_eq!(
            s.list("ns/s-1").await.expect("list"),
            ["seg-000000.cast", "seg-000000.json"]
        );
        assert!(s.list("ns/none").await.expect("list").is_empty());
        s.put("ns/s-2/record.json", b"{}".to_vec(), None)
            .await
            .expect("put");
        s.put("other/t-1/record.json", b"{}".to_vec(), None)
            .await
            .expect("put");
        assert_eq!(s.list_dirs("", "").await.expect("dirs"), ["ns", "other"]);
        assert_eq!(s.list_dirs("ns", "").await.expect("dirs"), ["s-1", "s-2"]);
        assert_eq!(s.list_dirs("ns", "s-2").await.expect("dirs"), ["s-2"]);
        assert!(s.list_dirs("none", "").await.expect("dirs").is_empty());
        // Files are not directories.
        assert!(s.list_dirs("ns/s-1", "").await.expect("dirs").is_empty());
        assert!(s.put("../escape", vec![], None).await.is_err());
        assert!(s.put("ns//x", vec![], None).await.is_err());
        assert!(s.uri("ns/s-1/manifest.json").starts_with("file://"));
    }

    #[tokio::test]
    async fn s3_needs_a_bucket_and_a_region() {
        let e = S3Store::new(S3Settings::default())
            .await
            .expect_err("no bucket");
        assert!(e.to_string().contains("--s3-bucket"), "{e}");
        let s = S3Store::new(S3Settings {
            bucket: "b".into(),
            prefix: "rec/".into(),
            region: Some("us-east-1".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
            force_path_style: true,
            object_lock: None,
        })
        .await
        .expect("client");
        assert_eq!(
            s.uri("ns/s-1/manifest.json"),
            "s3://b/rec/ns/s-1/manifest.json"
        );
        assert!(s.key("../x").is_err());
        // Nothing listens on port 1: a clear error naming the object, quickly.
        let e = s.get("ns/s-1/manifest.json", 10).await.expect_err("down");
        assert!(
            e.to_string().contains("s3://b/rec/ns/s-1/manifest.json"),
            "{e}"
        );
    }
}
