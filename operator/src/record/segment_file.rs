//! The segment a session is recording, kept in an unnamed file in the spool rather than in
//! memory, and the process-wide workspaces a cut is compressed and hashed in.
//!
//! A busy session used to hold its open segment (up to 1 MiB of cast) in memory and to compress
//! it into a second buffer when cut: 1.6-1.8 MiB per busy session under `load_concurrent_sessions`
//! (docs/performance.md, "Memory"). Now the recorder task appends each chunk the relay hands it
//! to the session's file (a `pwrite` into the page cache), and a cut reads the file back, a
//! piece at a time, into one of [`WORKSPACES`] workspaces, compresses and hashes it there on a
//! blocking thread, and spools it. The memory cuts need is the same for 1 session as for 1,000:
//! two workspaces, each a piece of 256 KiB, the segment's compressed form (at most about the
//! segment, for bytes that do not compress) and a zstd context, kept and reused.
//!
//! The file has no name (`O_TMPFILE`, through the tempfile crate, which falls back to creating
//! and unlinking a file): it vanishes with the process, so a crash loses what it held, which is
//! what an in-memory segment lost (docs/architecture.md, "Crash recovery"). Its bytes count in
//! the spool's budget while it holds them ([`crate::record::spool::Held`]): they take the spool's disk.
//! The kernel's page cache keeps recently written bytes in memory, but that memory is the
//! kernel's to write back and reclaim under pressure, not the operator's heap.

use std::{
    os::unix::fs::FileExt,
    sync::{Arc, LazyLock, Mutex},
};

use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{
    record::spool::{Held, Spool},
    recording::chain::{Chain, Content, Cut, Lines, SegmentLimits, SegmentMeta},
};

/// Cuts compressed and hashed at the same time, process-wide.
pub const WORKSPACES: usize = 2;

/// The zstd level segments are stored at: 1, the fastest standard level (docs/performance.md).
pub const ZSTD_LEVEL: i32 = 1;

/// The most bytes of cast a segment holds before it is cut: 4 MiB with the default spool of
/// 1 GiB. Each segment costs the same whatever its size (a sidecar, two files spooled, synced,
/// read back and removed, two PUTs, a zstd frame), so a bulk stream pays that four times less
/// often than at the 1 MiB of [`crate::recording::chain::DEFAULT_MAX_BYTES`]; readers take
/// segments of up to 64 MiB. What a crash can lose stays bounded by the segment's age (2 s).
/// The open segment is on the spool's disk and counts in its budget, so a segment is at most a
/// 256th of the budget (never under 1 MiB): a small spool is not filled by a handful of busy
/// sessions' open segments (docs/performance.md, "Where #18 stands (2026-12-04)").
pub const MAX_SEGMENT_BYTES: usize = 4 << 20;

/// The least a segment is cut at however small the spool: the size before 2026-12-04.
pub const MIN_SEGMENT_BYTES: usize = 1 << 20;

/// How many bytes of cast a segment holds before it is cut, for a spool of `budget` bytes
/// (pure): a 256th of it, from [`MIN_SEGMENT_BYTES`] to [`MAX_SEGMENT_BYTES`].
pub fn segment_bytes(budget: u64) -> usize {
    let bytes = (budget / 256).clamp(MIN_SEGMENT_BYTES as u64, MAX_SEGMENT_BYTES as u64);
    usize::try_from(bytes).unwrap_or(MIN_SEGMENT_BYTES)
}

/// When the operator cuts a segment for a spool of `budget` bytes: at [`segment_bytes`], or
/// 2 s after its first byte.
pub fn limits(budget: u64) -> SegmentLimits {
    SegmentLimits {
        max_bytes: segment_bytes(budget),
        ..SegmentLimits::default()
    }
}

/// A workspace's buffers are given back to the allocator after a cut that grew them past this
/// (a segment and its compressed form fit; a copy's file list can be larger).
const KEEP: usize = MAX_SEGMENT_BYTES + (MAX_SEGMENT_BYTES >> 6) + (64 << 10);

/// A segment is read back from its file and compressed this many bytes at a time: the
/// workspace holds a piece of the segment, not all of it.
const PIECE: usize = 256 << 10;

/// Buffers and a zstd context for one cut at a time.
#[derive(Default)]
struct Workspace {
    /// A piece of the segment being read back (the whole segment only when it is stored as it
    /// is, should compressing fail).
    input: Vec<u8>,
    /// The stored form: the zstd frame.
    output: Vec<u8>,
    /// At [`ZSTD_LEVEL`]: for a segment read back from its file, a piece at a time, and for
    /// bytes already in memory (a copy's tar bytes), in one call.
    cctx: Option<zstd::zstd_safe::CCtx<'static>>,
}

/// The workspace's zstd context, made at [`ZSTD_LEVEL`] on first use; `None` if zstd cannot
/// make one (allocation failure only).
fn context<'a>(
    cctx: &'a mut Option<zstd::zstd_safe::CCtx<'static>>,
) -> Option<&'a mut zstd::zstd_safe::CCtx<'static>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    if cctx.is_none() {
        let mut c = CCtx::try_create()?;
        c.set_parameter(CParameter::CompressionLevel(ZSTD_LEVEL))
            .ok()?;
        *cctx = Some(c);
    }
    cctx.as_mut()
}

/// A segment's stored form, made in a workspace: where its bytes are, its length before
/// compression if it was compressed, and its SHA-256.
struct Stored {
    compressed_from: Option<u64>,
    sha: [u8; 32],
}

impl Workspace {
    /// Compresses `src` into `output` and hashes what is to be stored: the zstd frame, or `src`
    /// itself if compressing failed (allocation failure only; readers take either).
    fn store(&mut self, src: &[u8]) -> Stored {
        let Workspace { output, cctx, .. } = self;
        output.clear();
        output.reserve(zstd::zstd_safe::compress_bound(src.len()));
        // compress2 starts a new frame whatever the context was doing.
        let compressed = context(cctx)
            .and_then(|c| c.compress2(output, src).ok())
            .is_some();
        let stored: &[u8] = if compressed { output } else { src };
        Stored {
            compressed_from: compressed.then_some(src.len() as u64),
            sha: Sha256::digest(stored).into(),
        }
    }

    /// Compresses the `len` bytes at the start of `file` into `output` a piece at a time and
    /// hashes the frame. Should compressing fail (allocation failure only), the segment is read
    /// whole into `input` and stored as it is (readers take either).
    fn store_file(&mut self, file: &std::fs::File, len: usize) -> std::io::Result<Stored> {
        if let Some(sha) = self.compress_file(file, len)? {
            return Ok(Stored {
                compressed_from: Some(len as u64),
                sha,
            });
        }
        self.input.clear();
        self.input.resize(len, 0);
        file.read_exact_at(&mut self.input, 0)?;
        Ok(Stored {
            compressed_from: None,
            sha: Sha256::digest(&self.input).into(),
        })
    }

    /// The SHA-256 of the zstd frame of `file`'s first `len` bytes, left in `output`; `None` if
    /// zstd failed.
    fn compress_file(
        &mut self,
        file: &std::fs::File,
        len: usize,
    ) -> std::io::Result<Option<[u8; 32]>> {
        use zstd::zstd_safe::{
            InBuffer, OutBuffer, ResetDirective, zstd_sys::ZSTD_EndDirective as EndDirective,
        };
        let Workspace {
            input,
            output,
            cctx,
        } = self;
        let Some(cctx) = context(cctx) else {
            return Ok(None);
        };
        if cctx.reset(ResetDirective::SessionOnly).is_err()
            || cctx.set_pledged_src_size(Some(len as u64)).is_err()
        {
            return Ok(None);
        }
        output.clear();
        // A frame of `len` bytes fits in the bound, so the loop below does not grow it (its
        // check only keeps a full buffer from spinning, should zstd ever need more).
        output.reserve_exact(zstd::zstd_safe::compress_bound(len));
        input.resize(PIECE.min(len), 0);
        let mut at = 0;
        loop {
            let n = PIECE.min(len - at);
            file.read_exact_at(&mut input[..n], at as u64)?;
            at += n;
            let end = if at == len {
                EndDirective::ZSTD_e_end
            } else {
                EndDirective::ZSTD_e_continue
            };
            let mut src = InBuffer::around(&input[..n]);
            loop {
                if output.len() == output.capacity() {
                    output.reserve(PIECE);
                }
                let mut dst = OutBuffer::around_pos(output, output.len());
                let Ok(remaining) = cctx.compress_stream2(&mut dst, &mut src, end) else {
                    return Ok(None);
                };
                let done = match end {
                    EndDirective::ZSTD_e_end => remaining == 0,
                    _ => src.pos() == n,
                };
                if done {
                    break;
                }
            }
            if at == len {
                return Ok(Some(Sha256::digest(&output[..]).into()));
            }
        }
    }

    fn trim(&mut self) {
        for b in [&mut self.input, &mut self.output] {
            if b.capacity() > KEEP {
                *b = Vec::new();
            }
        }
    }
}

/// The process's workspaces: at most [`WORKSPACES`] cuts at a time, the others wait.
struct Pool {
    permits: Semaphore,
    free: Mutex<Vec<Workspace>>,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| Pool {
    permits: Semaphore::new(WORKSPACES),
    free: Mutex::new(Vec::new()),
});

/// A workspace lent for one cut; back in the pool when dropped.
struct Lent {
    ws: Option<Workspace>,
    _permit: SemaphorePermit<'static>,
}

impl Pool {
    async fn lend(&'static self) -> Lent {
        // The semaphore is never closed.
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the workspace semaphore is never closed");
        let ws = self.free.lock().ok().and_then(|mut f| f.pop());
        Lent {
            ws: Some(ws.unwrap_or_default()),
            _permit: permit,
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            ws.trim();
            if let Ok(mut free) = POOL.free.lock() {
                free.push(ws);
            }
        }
    }
}

/// Runs `f` with a lent workspace on a blocking thread; the workspace comes back with it (a
/// panic loses it, and the pool makes a new one).
async fn in_workspace<T: Send + 'static>(
    f: impl FnOnce(&mut Workspace) -> T + Send + 'static,
) -> Result<(Lent, T), String> {
    let mut lent = POOL.lend().await;
    let mut ws = lent.ws.take().unwrap_or_default();
    let (ws, out) = tokio::task::spawn_blocking(move || {
        let out = f(&mut ws);
        (ws, out)
    })
    .await
    .map_err(|e| format!("the segment could not be compressed: {e}"))?;
    lent.ws = Some(ws);
    Ok((lent, out))
}

/// Where a session's segments go: the spool, under the recording's prefix, with the metas of
/// those stored so far (for the manifest).
#[derive(Debug)]
pub struct Sink<'a> {
    pub spool: &'a Spool,
    pub prefix: &'a str,
    pub metas: &'a mut Vec<SegmentMeta>,
}

impl Sink<'_> {
    /// Spools a segment and then its sidecar (a crash between the two leaves a segment without a
    /// sidecar, which sealing after a crash leaves out and says so).
    pub async fn write(&mut self, meta: SegmentMeta, bytes: &[u8]) -> Result<(), String> {
        self.spool
            .put_hashed(
                &format!("{}/{}", self.prefix, meta.file_name()),
                bytes,
                true,
                Some(&meta.sha256),
            )
            .await
            .map_err(|e| e.to_string())?;
        let sidecar = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
        self.spool
            .put(
                &format!(
                    "{}/{}",
                    self.prefix,
                    crate::recording::chain::sidecar_name(meta.index)
                ),
                &sidecar,
                false,
            )
            .await
            .map_err(|e| e.to_string())?;
        self.metas.push(meta);
        Ok(())
    }
}

/// Compresses, hashes, chains and stores bytes that are not cast (a copy's tar bytes or its
/// list of files) as the next segment.
pub async fn store_content(
    chain: &mut Chain,
    sink: &mut Sink<'_>,
    bytes: Vec<u8>,
    content: Content,
    times: (u64, u64),
) -> Result<(), String> {
    let (lent, (bytes, stored)) = in_workspace(move |ws| {
        let stored = ws.store(&bytes);
        (bytes, stored)
    })
    .await?;
    let ws = lent.ws.as_ref().expect("lent with a workspace");
    let data: &[u8] = if stored.compressed_from.is_some() {
        &ws.output
    } else {
        &bytes
    };
    let meta = chain.link_digest(
        stored.sha,
        data.len(),
        stored.compressed_from,
        Some(content),
        times,
    );
    sink.write(meta, data).await
}

/// The cast segment being recorded, in an unnamed file.
#[derive(Debug)]
pub struct SegmentFile {
    file: Arc<std::fs::File>,
    lines: Lines,
    limits: SegmentLimits,
    held: Held,
}

impl SegmentFile {
    /// An empty segment in `spool`'s directory for open segments.
    pub fn create(spool: &Arc<Spool>) -> Result<Self, String> {
        let dir = spool.open_dir();
        let file = tempfile::tempfile_in(&dir).map_err(|e| {
            format!(
                "the segment being recorded cannot be kept in the spool ({}): {e}",
                dir.display()
            )
        })?;
        Ok(SegmentFile {
            file: Arc::new(file),
            lines: Lines::default(),
            limits: limits(spool.max_bytes()),
            held: spool.hold(),
        })
    }

    /// Appends cast lines written from `first` to `last` (microseconds since the start),
    /// holding spool budget for them first.
    pub fn append(&mut self, bytes: &[u8], first: u64, last: u64) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.held
            .grow(bytes.len() as u64)
            .map_err(|e| e.to_string())?;
        // Written on the async thread: a chunk's write into the page cache took 9 us of CPU,
        // against 24-33 us handed to a blocking thread (docs/performance.md, "Busy memory").
        self.file
            .write_all_at(bytes, self.lines.len() as u64)
            .map_err(|e| format!("writing the segment being recorded to the spool: {e}"))?;
        self.lines.pushed(bytes, first, last);
        Ok(())
    }

    /// Whether `more` bytes would take a segment of whole lines past its size: cut first.
    pub fn would_overflow(&self, more: usize) -> bool {
        self.lines.would_overflow(more, &self.limits)
    }

    /// Whether the segment is full or old enough to be cut.
    pub fn should_cut(&self, now_micros: u64) -> bool {
        self.lines.should_cut(now_micros, &self.limits)
    }

    /// Bytes in the segment.
    pub fn buffered(&self) -> usize {
        self.lines.len()
    }

    /// Cuts after the last whole line and stores the segment; what follows it starts the next.
    pub async fn cut(&mut self, chain: &mut Chain, sink: &mut Sink<'_>) -> Result<(), String> {
        match self.lines.cut() {
            Some(cut) => self.store(cut, chain, sink).await,
            None => Ok(()),
        }
    }

    /// Cuts and stores everything left, at the end of the recording.
    pub async fn finish(&mut self, chain: &mut Chain, sink: &mut Sink<'_>) -> Result<(), String> {
        match self.lines.finish() {
            Some(cut) => self.store(cut, chain, sink).await,
            None => Ok(()),
        }
    }

    async fn store(
        &mut self,
        cut: Cut,
        chain: &mut Chain,
        sink: &mut Sink<'_>,
    ) -> Result<(), String> {
        let rest = self.lines.len();
        let file = self.file.clone();
        let (lent, stored) = in_workspace(move |ws| -> std::io::Result<Stored> {
            let stored = ws.store_file(&file, cut.len)?;
            // What follows the cut (a partial line, rarely anything) starts the file again.
            if rest > 0 {
                let mut tail = vec![0; rest];
                file.read_exact_at(&mut tail, cut.len as u64)?;
                file.write_all_at(&tail, 0)?;
            }
            file.set_len(rest as u64)?;
            Ok(stored)
        })
        .await?;
        let stored = stored.map_err(|e| format!("reading back the segment being recorded: {e}"))?;
        self.held.shrink(cut.len as u64);
        let ws = lent.ws.as_ref().expect("lent with a workspace");
        let data: &[u8] = if stored.compressed_from.is_some() {
            &ws.output
        } else {
            &ws.input
        };
        let meta = chain.link_digest(
            stored.sha,
            data.len(),
            stored.compressed_from,
            None,
            (cut.first, cut.last),
        );
        sink.write(meta, data).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        record::spool::tests::spool,
        recording::chain::{self, SessionRef},
    };

    /// What the file-backed segments store is what the in-memory segmenter stores, byte for
    /// byte and hash for hash, partial lines included.
    #[tokio::test]
    async fn same_segments_as_in_memory() {
        let (d, st) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let s = spool(1 << 30, st.path(), d.path()).await;
        let mut file = SegmentFile::create(&s).expect("file");
        let mut mem = chain::Segmenter::new(limits(s.max_bytes())).zstd(ZSTD_LEVEL);
        assert_eq!(segment_bytes(s.max_bytes()), MAX_SEGMENT_BYTES);
        let (mut chain, mut metas, mut mem_segs) = (Chain::default(), Vec::new(), Vec::new());
        let mut sink = Sink {
            spool: &s,
            prefix: "ns/s-1",
            metas: &mut metas,
        };
        // Lines of every length, a chunk ending in a partial line, 2.5 segments' worth.
        let mut at = 0;
        for i in 0..1_600u64 {
            let mut chunk: Vec<u8> = (0..(i * 97 % 13_000))
                .map(|j| b"abcdefgh \x1b[1m"[(j % 13) as usize])
                .collect();
            chunk.extend_from_slice(if i % 7 == 3 { b"partial" } else { b"\n" });
            at += 1_000;
            let overflow = mem.would_overflow(chunk.len());
            assert_eq!(file.would_overflow(chunk.len()), overflow);
            if overflow {
                file.cut(&mut chain, &mut sink).await.expect("cut");
                mem_segs.extend(mem.cut());
            }
            mem.push(&chunk, at);
            file.append(&chunk, at, at).expect("append");
            assert_eq!(file.buffered(), mem.buffered());
            assert_eq!(file.should_cut(at), mem.should_cut(at));
            if mem.should_cut(at) {
                mem_segs.extend(mem.cut());
                file.cut(&mut chain, &mut sink).await.expect("cut");
            }
        }
        mem_segs.extend(mem.finish());
        file.finish(&mut chain, &mut sink).await.expect("finish");
        assert!(mem_segs.len() >= 3, "{} segments", mem_segs.len());
        assert_eq!(metas.len(), mem_segs.len());
        for (meta, (mem_meta, mem_bytes)) in metas.iter().zip(&mem_segs) {
            assert_eq!(meta, mem_meta);
            let stored = s
                .get(&format!("ns/s-1/{}", meta.file_name()), 64 << 20)
                .await
                .expect("spooled");
            assert_eq!(&stored, mem_bytes);
        }
        assert_eq!(chain.head(), mem.head());
        let session = SessionRef::default();
        chain::seal(session, metas.clone(), String::new()).expect("the segments chain");
        // Nothing is held once the segment is cut and gone.
        drop(file);
        assert_eq!(s.open_bytes(), 0);
    }

    /// Segments are a 256th of the spool's budget, from 1 to 4 MiB: 4 MiB for the default 1 GiB,
    /// 1 MiB for the 32 MiB of the end-to-end tests' spool.
    #[test]
    fn segments_are_a_256th_of_the_spool_from_1_to_4_mib() {
        assert_eq!(segment_bytes(1 << 30), 4 << 20);
        assert_eq!(segment_bytes(8 << 30), 4 << 20);
        assert_eq!(segment_bytes(512 << 20), 2 << 20);
        assert_eq!(segment_bytes(32 << 20), 1 << 20);
        assert_eq!(segment_bytes(0), 1 << 20);
        assert_eq!(segment_bytes(u64::MAX), 4 << 20);
    }

    /// The segment's bytes count in the spool's budget while it holds them: a session that
    /// would take the spool past its budget is refused, naming busy sessions, not the store.
    #[tokio::test]
    async fn open_segments_count_in_the_budget() {
        let (d, st) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let s = spool(100_000, st.path(), d.path()).await;
        let mut a = SegmentFile::create(&s).expect("file");
        let mut b = SegmentFile::create(&s).expect("file");
        a.append(&[b'a'; 60_000], 0, 0).expect("fits");
        let e = b
            .append(&[b'b'; 60_000], 0, 0)
            .expect_err("over the budget");
        assert!(
            e.contains("spool is full") && e.contains("busy sessions"),
            "{e}"
        );
        assert_eq!(s.open_bytes(), 60_000);
        drop(a);
        assert_eq!(s.open_bytes(), 0);
        b.append(&[b'b'; 60_000], 0, 0).expect("room again");
        // The file has no name: the spool's directory for them stays empty.
        let names: Vec<_> = std::fs::read_dir(s.open_dir()).expect("dir").collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
