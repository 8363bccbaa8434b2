//! The spool: every recording file is first written to a local directory, then uploaded to the
//! store by one background task, and deleted locally once the store has it.
//!
//! So the session never waits on the network: a slow or unreachable store fills the spool
//! instead, and the uploader catches up when the store is back (with a capped backoff). The
//! spool has a byte budget (`--spool-max-bytes`): a segment that does not fit is refused with
//! [`SpoolError::Full`], and the recorder then ends the session if its policy requires a
//! recording (fail closed). Sidecars and manifests are small and always accepted, so a recording
//! can still be sealed when the spool is full.
//!
//! Reads look in the spool first and then in the store, so a recording is readable (and
//! verifiable) before, during and after its upload. After a crash, whatever was spooled is still
//! on disk: the uploader finds it at startup, and [`crate::record::recorder::recover`] seals it.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::{
    control::metrics::Metrics,
    record::storage::{
        Storage, Store, blocking, check_key, list_dir, list_dir_now, read_bounded, write_atomic,
    },
    recording::chain::MANIFEST_NAME,
};

/// Why the spool refused a file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{}", full_message(*used, *open, *max, last_error))]
    Full {
        /// Bytes counted in the budget, `open` included.
        used: u64,
        /// Of those, the bytes of segments still being recorded.
        open: u64,
        max: u64,
        last_error: String,
    },
    #[error("writing to the local spool: {0:#}")]
    Io(anyhow::Error),
}

/// Why the spool is full, blaming what fills it (pure): a store that does not take uploads, or
/// more busy sessions than the budget has room for the segments they are recording.
pub fn full_message(used: u64, open: u64, max: u64, last_error: &str) -> String {
    let waiting = used.saturating_sub(open);
    if waiting >= open {
        format!(
            "the local spool is full ({used} of {max} bytes, {waiting} of them waiting for the recording store, which is not taking uploads: {last_error})"
        )
    } else {
        format!(
            "the local spool is full ({used} of {max} bytes, {open} of them in the segments busy sessions are recording, up to about 1 MiB each): give it more room (--spool-max-bytes; chart: storage.spool.maxBytes and sizeLimit)"
        )
    }
}

/// The least a spooled segment holds for its hash to be handed to the store ([`Spool::put_hashed`]).
const HASHED_FROM: u64 = 64 << 10;

/// Where the segments being recorded live: unnamed files (`O_TMPFILE`), so normally empty; what
/// a fallback left here is deleted when the spool opens.
const OPEN_DIR: &str = ".open";

/// The spool in front of a [`Store`].
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
    /// Of `used`, the bytes held by segments being recorded ([`Held`]).
    open: AtomicU64,
    store: Store,
    wake: Notify,
    last_error: std::sync::Mutex<Option<String>>,
    /// The SHA-256 (lowercase hex) of spooled files whose writer had it (segments, from their
    /// sidecars), by path: the upload hands it to the store, so S3's signature does not hash
    /// the bytes again. One entry per spooled segment, gone with its upload; after a restart
    /// there is none, and the store hashes what it sends, as it did before.
    hashes: std::sync::Mutex<std::collections::HashMap<PathBuf, String>>,
    metrics: Metrics,
}

impl Spool {
    /// Opens the spool in `dir`, counting what a previous run left there (it is uploaded first).
    pub async fn open(
        dir: PathBuf,
        max_bytes: u64,
        store: Store,
        metrics: Metrics,
    ) -> Result<Self> {
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("creating the spool directory {}", dir.display()))?;
        // Segments a previous run was recording died with it (docs/architecture.md, "Crash
        // recovery"); their unnamed files left nothing, a named fallback's are removed.
        let open = dir.join(OPEN_DIR);
        let _ = tokio::fs::remove_dir_all(&open).await;
        tokio::fs::create_dir_all(&open)
            .await
            .with_context(|| format!("creating {}", open.display()))?;
        let mut used = 0;
        for (_, files) in pending(&dir).await? {
            for f in files {
                used += tokio::fs::metadata(&f).await.map(|m| m.len()).unwrap_or(0);
            }
        }
        if used > 0 {
            info!(
                bytes = used,
                "the spool holds files from a previous run; uploading them"
            );
        }
        metrics
            .spool_bytes
            .set(i64::try_from(used).unwrap_or(i64::MAX));
        Ok(Spool {
            dir,
            max_bytes,
            used: AtomicU64::new(used),
            open: AtomicU64::new(0),
            store,
            wake: Notify::new(),
            last_error: std::sync::Mutex::new(None),
            hashes: std::sync::Mutex::default(),
            metrics,
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.dir.join(key))
    }

    /// Counts `len` more spooled bytes. A `budgeted` file only counts if it fits, checked and
    /// counted in one step, so concurrent sessions cannot overshoot the budget together.
    /// Otherwise the bytes already spooled.
    fn reserve(&self, len: u64, budgeted: bool) -> Result<(), u64> {
        let before = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (!budgeted || used + len <= self.max_bytes).then_some(used + len)
            })?;
        self.show_used(before + len);
        Ok(())
    }

    /// Stops counting `len` bytes (uploaded, or never written).
    fn release(&self, len: u64) {
        let before = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(len))
            })
            .unwrap_or_default();
        self.show_used(before.saturating_sub(len));
    }

    fn show_used(&self, used: u64) {
        self.metrics
            .spool_bytes
            .set(i64::try_from(used).unwrap_or(i64::MAX));
    }

    /// Spools a file for upload. A `budgeted` file (a segment) is refused when it does not fit
    /// in the budget; small bookkeeping files (sidecars, manifests) are always taken.
    pub async fn put(&self, key: &str, bytes: &[u8], budgeted: bool) -> Result<(), SpoolError> {
        self.put_hashed(key, bytes, budgeted, None).await
    }

    /// [`Spool::put`] for bytes whose SHA-256 (lowercase hex) the caller has computed: it goes
    /// to the store with them ([`Storage::put`]) when they are a budgeted segment of at least
    /// [`HASHED_FROM`] bytes; below that, hashing them again costs little and the store does.
    pub async fn put_hashed(
        &self,
        key: &str,
        bytes: &[u8],
        budgeted: bool,
        sha256: Option<&str>,
    ) -> Result<(), SpoolError> {
        let len = bytes.len() as u64;
        let path = self.path(key).map_err(SpoolError::Io)?;
        self.reserve(len, budgeted)
            .map_err(|used| self.full(used))?;
        // Known before the file can be seen, so the uploader never takes it without. Only for
        // segments of at least HASHED_FROM bytes: what is saved is per byte, what is kept per
        // file, so the map holds at most a budget's worth of such segments (16,384 entries
        // with 1 GiB) however many tiny segments an outage piles up.
        if let Some(sha) = sha256.filter(|_| budgeted && len >= HASHED_FROM) {
            self.hashes_now().insert(path.clone(), sha.to_owned());
        }
        // One copy, so the write can go to a blocking thread whole (one trip, not five).
        if let Err(e) = write_atomic(&path, bytes.to_vec()).await {
            self.hashes_now().remove(&path);
            self.release(len);
            return Err(SpoolError::Io(e));
        }
        self.wake.notify_one();
        Ok(())
    }

    fn hashes_now(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<PathBuf, String>> {
        self.hashes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn full(&self, used: u64) -> SpoolError {
        SpoolError::Full {
            used,
            open: self.open.load(Ordering::SeqCst),
            max: self.max_bytes,
            last_error: self
                .last_error()
                .unwrap_or_else(|| "it is slower than the session".into()),
        }
    }

    /// The budget: bytes the spool may hold.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes held by segments being recorded.
    pub fn open_bytes(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    /// The directory for the files of segments being recorded ([`crate::record::segment_file`]).
    pub fn open_dir(&self) -> PathBuf {
        self.dir.join(OPEN_DIR)
    }

    /// Budget for bytes that are not a spooled file yet: the segment a session is recording,
    /// which takes the spool's disk too. Nothing is held until [`Held::grow`].
    pub fn hold(self: &Arc<Self>) -> Held {
        Held {
            spool: self.clone(),
            bytes: 0,
        }
    }

    /// Reads a file of a recording, from the spool if it is still there, else from the store.
    pub async fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        match read_bounded(&self.path(key)?, max).await {
            Ok(b) => Ok(b),
            // Not spooled, or uploaded and removed between the look and the read.
            Err(_) if !self.path(key)?.exists() => self.store.get(key, max).await,
            Err(e) => Err(e),
        }
    }

    /// The files of a recording, in the spool or in the store. When the store cannot be listed
    /// (it is down), what the spool has is returned with the store's error.
    pub async fn list(&self, prefix: &str) -> (Vec<String>, Option<anyhow::Error>) {
        let mut names = match self.path(prefix) {
            Ok(p) => list_dir(&p).await.unwrap_or_default(),
            Err(e) => return (Vec::new(), Some(e)),
        };
        let err = match self.store.list(prefix).await {
            Ok(more) => {
                names.extend(more);
                None
            }
            Err(e) => Some(e),
        };
        names.sort();
        names.dedup();
        (names, err)
    }

    /// The store behind the spool, for what must be in it before anything else happens (the
    /// session record is written straight to it, once the manifest is there).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The URI of a key in the store.
    pub fn uri(&self, key: &str) -> String {
        self.store.uri(key)
    }

    /// Whether files of `prefix` are still waiting for upload.
    pub async fn holds(&self, prefix: &str) -> bool {
        match self.path(prefix) {
            Ok(p) => !list_dir(&p).await.unwrap_or_default().is_empty(),
            Err(_) => false,
        }
    }

    /// The store's last upload error, while it is failing.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = e;
        }
    }

    /// Uploads spooled files until `stop`: at once when something is spooled, after a capped
    /// backoff while the store fails.
    pub async fn upload_loop(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(500);
        loop {
            let wait = match self.upload_pending().await {
                Ok(()) => {
                    if self.last_error().is_some() {
                        info!("the recording store takes uploads again; the spool is drained");
                        self.set_error(None);
                    }
                    backoff = Duration::from_millis(500);
                    None
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if self.last_error().as_deref() != Some(msg.as_str()) {
                        warn!(error = %msg, "the recording store refuses uploads; keeping files in the spool");
                    }
                    self.metrics.storage_errors.inc();
                    self.set_error(Some(msg));
                    let b = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    Some(b)
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = self.wake.notified(), if wait.is_none() => {}
                () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            }
        }
    }

    /// Uploads everything spooled, retrying until the store takes it or `within` has passed
    /// (at shutdown: the spool of a pod does not outlive it).
    pub async fn drain(&self, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.upload_pending()).await;
            match attempt {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e))
                    if tokio::time::Instant::now() + Duration::from_millis(500) < deadline =>
                {
                    debug!(error = %format!("{e:#}"), "draining the spool");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => anyhow::bail!("the store did not take the spool within {within:?}"),
            }
        }
    }

    /// One pass over the spool: every session's files in order, the manifest last; up to
    /// [`PARALLEL_UPLOADS`] sessions at a time (one at a time, the store's round trips would
    /// fall behind hundreds of sessions writing at once).
    async fn upload_pending(&self) -> Result<()> {
        use futures::StreamExt as _;
        let results: Vec<Result<()>> = futures::stream::iter(pending(&self.dir).await?)
            .map(|(dir, files)| self.upload_session(dir, files))
            .buffer_unordered(PARALLEL_UPLOADS)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Uploads one session's spooled files in order.
    async fn upload_session(&self, dir: PathBuf, files: Vec<PathBuf>) -> Result<()> {
        let sealed = files.iter().any(|f| f.ends_with(MANIFEST_NAME));
        for file in files {
            let key = file
                .strip_prefix(&self.dir)
                .ok()
                .and_then(Path::to_str)
                .map(str::to_owned)
                .with_context(|| format!("a spooled file outside the spool: {}", file.display()))?;
            // A failed upload is retried with the store hashing the bytes itself: the hash
            // recorded at the cut is taken once, whatever happens to this file below. Should
            // the file have changed on disk since, the store refuses the first try, and the
            // retry uploads what is there; the hash chain then shows the change (as it did
            // before hashes were handed over).
            let sha = self.hashes_now().remove(&file);
            let path = file.clone();
            let read = blocking(move || match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
            });
            let Some(bytes) = read.await? else { continue };
            let len = bytes.len();
            self.store.put(&key, bytes, sha.as_deref()).await?;
            let last = sealed && file.ends_with(MANIFEST_NAME);
            let dir = dir.clone();
            blocking(move || {
                std::fs::remove_file(&file)
                    .with_context(|| format!("removing uploaded {}", file.display()))?;
                // The manifest is the last file of a recording: once it is uploaded, nothing
                // more comes, and the session's directory can go.
                if last && list_dir_now(&dir)?.is_empty() {
                    let _ = std::fs::remove_dir(&dir);
                }
                Ok(())
            })
            .await?;
            self.release(len as u64);
        }
        Ok(())
    }
}

/// Spool budget held by the segment a session is recording, given back as it is cut (its
/// compressed form is then spooled, and counted, as a file) and when dropped.
#[derive(Debug)]
pub struct Held {
    spool: Arc<Spool>,
    bytes: u64,
}

impl Held {
    /// Holds `len` more bytes, if they fit in the budget.
    pub fn grow(&mut self, len: u64) -> Result<(), SpoolError> {
        let s = &self.spool;
        s.open.fetch_add(len, Ordering::SeqCst);
        if let Err(used) = s.reserve(len, true) {
            s.open.fetch_sub(len, Ordering::SeqCst);
            return Err(s.full(used));
        }
        self.bytes += len;
        Ok(())
    }

    /// Gives back `len` of the bytes held.
    pub fn shrink(&mut self, len: u64) {
        let len = len.min(self.bytes);
        self.bytes -= len;
        self.spool.open.fetch_sub(len, Ordering::SeqCst);
        self.spool.release(len);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

/// Sessions whose files are uploaded at the same time.
const PARALLEL_UPLOADS: usize = 8;

/// The spooled files, by session directory (`<spool>/<namespace>/<session>-<uid>`), each
/// directory's files in upload order: segments and sidecars by name, the manifest last. (The
/// recorder writes the manifest after every other file, so a listed manifest comes with all of
/// them.)
async fn pending(root: &Path) -> Result<Vec<(PathBuf, Vec<PathBuf>)>> {
    let root = root.to_owned();
    // One walk on a blocking thread, not a trip there per directory.
    blocking(move || {
        let mut out = Vec::new();
        for ns in list_dir_now(&root)? {
            if ns == OPEN_DIR {
                continue;
            }
            let ns_dir = root.join(&ns);
            if !ns_dir.is_dir() {
                continue;
            }
            for session in list_dir_now(&ns_dir)? {
                let dir = ns_dir.join(&session);
                if !dir.is_dir() {
                    continue;
                }
                let names = list_dir_now(&dir)?;
                let files = upload_order(&names)
                    .into_iter()
                    .map(|n| dir.join(n))
                    .collect();
                out.push((dir, files));
            }
        }
        Ok(out)
    })
    .await
}

/// The order files of one recording are uploaded in (pure): by name, the manifest last, so a
/// store never holds a manifest naming a segment it does not have.
pub fn upload_order(names: &[String]) -> Vec<&str> {
    let mut order: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != MANIFEST_NAME)
        .collect();
    order.sort_unstable();
    if names.iter().any(|n| n == MANIFEST_NAME) {
        order.push(MANIFEST_NAME);
    }
    order
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::storage::LocalDir;

    #[test]
    fn manifest_goes_last() {
        let names: Vec<String> = [
            "seg-000001.cast",
            "manifest.json",
            "seg-000000.json",
            "seg-000000.cast",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            upload_order(&names),
            [
                "seg-000000.cast",
                "seg-000000.json",
                "seg-000001.cast",
                "manifest.json"
            ]
        );
    }

    pub(crate) async fn spool(max: u64, store_root: &Path, spool_root: &Path) -> Arc<Spool> {
        Arc::new(
            Spool::open(
                spool_root.to_owned(),
                max,
                Store::Local(LocalDir::new(store_root)),
                Metrics::default(),
            )
            .await
            .expect("spool"),
        )
    }

    /// A full spool blames what fills it: the store when the backlog is the bulk, the busy
    /// sessions' open segments otherwise (the store is then not at fault).
    #[test]
    fn a_full_spool_blames_what_fills_it() {
        let store = full_message(1000, 100, 1000, "connection refused");
        assert!(
            store.contains("900 of them waiting for the recording store")
                && store.contains("connection refused")
                && !store.contains("busy sessions"),
            "{store}"
        );
        let busy = full_message(1000, 900, 1000, "it is slower than the session");
        assert!(
            busy.contains("900 of them in the segments busy sessions are recording")
                && busy.contains("--spool-max-bytes")
                && !busy.contains("recording store"),
            "{busy}"
        );
    }

    #[tokio::test]
    async fn budget_refuses_segments_not_bookkeeping() {
        let (store, dir) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let s = spool(10, store.path(), dir.path()).await;
        s.put("ns/s-1/seg-000000.cast", b"12345678", true)
            .await
            .expect("fits");
        let e = s
            .put("ns/s-1/seg-000001.cast", b"123", true)
            .await
            .expect_err("over budget");
        assert!(
            e.to_string().contains("spool is full (8 of 10 bytes"),
            "{e}"
        );
        s.put("ns/s-1/seg-000000.json", b"{}", false)
            .await
            .expect("sidecar always");
        assert!(s.holds("ns/s-1").await);
        // Readable from the spool before any upload.
        assert_eq!(
            s.get("ns/s-1/seg-000000.cast", 100).await.expect("get"),
            b"12345678"
        );
    }

    #[tokio::test]
    async fn concurrent_segments_cannot_overshoot_the_budget_together() {
        let (store, dir) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let s = spool(10, store.path(), dir.path()).await;
        let puts = (0..8).map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.put(&format!("ns/s-{i}/seg-000000.cast"), b"123456", true)
                    .await
                    .is_ok()
            })
        });
        let mut taken = 0;
        for p in puts {
            taken += usize::from(p.await.expect("task"));
        }
        assert_eq!(taken, 1, "only one 6-byte segment fits in 10 bytes");
        assert_eq!(s.used.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn uploads_then_reads_from_the_store_and_survives_a_restart() {
        let (store, dir) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let s = spool(1000, store.path(), dir.path()).await;
        s.put("ns/s-1/seg-000000.cast", b"abc", true)
            .await
            .expect("put");
        s.put("ns/s-1/manifest.json", b"{}", false)
            .await
            .expect("put");
        // A restart: the new spool counts what the old one left.
        let s = spool(1000, store.path(), dir.path()).await;
        assert_eq!(s.used.load(Ordering::SeqCst), 5);
        s.upload_pending().await.expect("upload");
        assert_eq!(s.used.load(Ordering::SeqCst), 0);
        assert!(!s.holds("ns/s-1").await);
        assert!(
            !dir.path().join("ns/s-1").exists(),
            "sealed session dir removed"
        );
        assert_eq!(
            s.get("ns/s-1/seg-000000.cast", 100).await.expect("get"),
            b"abc"
        );
        let (names, err) = s.list("ns/s-1").await;
        assert!(err.is_none());
        assert_eq!(names, ["manifest.json", "seg-000000.cast"]);
    }

    #[tokio::test]
    async fn a_failing_store_keeps_files_and_reports() {
        let dir = tempfile::tempdir().expect("tmp");
        // A store root that is a file: every upload fails.
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").expect("file");
        let s = spool(1000, &blocker, &dir.path().join("spool")).await;
        s.put("ns/s-1/seg-000000.cast", b"abc", true)
            .await
            .expect("put");
        assert!(s.upload_pending().await.is_err());
        assert!(s.holds("ns/s-1").await, "kept for a retry");
        assert_eq!(
            s.get("ns/s-1/seg-000000.cast", 100).await.expect("get"),
            b"abc"
        );
    }

    #[tokio::test]
    async fn a_handed_hash_is_used_once_and_forgotten() {
        let dir = tempfile::tempdir().expect("tmp");
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").expect("file");
        let s = spool(1 << 20, &blocker, &dir.path().join("spool")).await;
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let big = vec![b'x'; HASHED_FROM as usize];
        s.put_hashed("ns/s-1/seg-000000.cast", &big, true, Some(sha))
            .await
            .expect("put");
        // Small segments and unbudgeted files keep no hash: the map stays bounded by the
        // budget however many tiny segments pile up.
        s.put_hashed("ns/s-1/seg-000001.cast", b"abc", true, Some(sha))
            .await
            .expect("put");
        s.put_hashed("ns/s-1/seg-000000.json", &big, false, Some(sha))
            .await
            .expect("put");
        assert_eq!(s.hashes_now().len(), 1, "only the large segment");
        // A failed upload took the hash: the retry has the store hash the bytes itself.
        assert!(s.upload_pending().await.is_err());
        assert!(s.hashes_now().is_empty());
        assert!(s.holds("ns/s-1").await, "kept for a retry");
        // A refused write leaves no hash behind either.
        let full = spool(1, dir.path(), &dir.path().join("spool2")).await;
        assert!(
            full.put_hashed("ns/s-2/seg-000000.cast", &big, true, Some(sha))
                .await
                .is_err()
        );
        assert!(full.hashes_now().is_empty());
    }
}
