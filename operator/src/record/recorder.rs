//! The recorder: turns relayed frames into asciicast v3, cuts it into hash-chained segments,
//! spools each segment (and its sidecar) as soon as it is cut (at most every 2 s or 1 MiB) for
//! upload to the store, and seals the recording with a manifest at the end. If the spool refuses
//! a segment (full: the store has been down too long), the recording stops, is sealed as
//! interrupted, and the relay is told, so a policy that requires recording ends the session
//! (fail closed).
//!
//! The work is split in two. The relay encodes each event itself, into a buffer of its own
//! ([`Pending`]): a frame costs it the encoding and no hand-over. Every [`CHUNK`] bytes, and at
//! the latest [`TICK`] after the first write into an empty buffer, the encoded lines go to the
//! session's recorder task, which cuts, compresses, hashes and spools them; a session that shows
//! nothing leaves its task asleep. So the recorder task is woken once per chunk, not once
//! per frame (docs/performance.md: the wake-ups cost more than the encoding).
//!
//! The chunks travel over a bounded channel: when storage is slow the relay waits, so memory
//! stays bounded and nothing is dropped silently. The recorder task appends them to the segment
//! being written, which lives in a file of the spool, not in memory, and is compressed and
//! hashed when cut in one of two process-wide workspaces ([`crate::record::segment_file`]): what a busy
//! session costs in memory is its chunks in flight, whatever the segment's size.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use aexec_crds::{CopyDirection, ExecSession, RecordingStatus};
use anyhow::{Context, Result};
use tokio::sync::{Mutex, Notify, mpsc};
use tracing::warn;

use crate::{
    record::segment_file::{SegmentFile, Sink, store_content},
    record::spool::Spool,
    recording::{
        cast::{CastReader, CastWriter, Converter, Event, Export, Header, SessionFacts, Stream},
        chain::{self, Chain, Content, SegmentMeta, SessionRef},
        transfer::{self, FileList},
    },
};

/// Encoded lines the relay gathers before handing them to the recorder task (the last event
/// may take a chunk past it).
const CHUNK: usize = 32 << 10;
/// Chunks in flight between the relay and the recorder: with the chunk being gathered and the
/// one being written, at most 3 chunks (about 100 KiB) per session wait for a recorder that falls
/// behind (a slow disk, a busy CPU, a cut waiting for a workspace), which slows its session
/// instead of growing memory. Measured under `load_concurrent_sessions` (docs/performance.md):
/// 64 KiB chunks and a queue of 2 cost 1,003 KiB per busy session, these 732 KiB, at the same
/// speed.
const QUEUE: usize = 1;
/// How often the recorder task takes what the relay gathered when the chunks do not fill (from
/// the relay's first write into an empty buffer on): the most a quiet session's recording lags
/// behind it (docs/architecture.md, "Crash recovery":
/// what a crash can lose).
const TICK: Duration = Duration::from_millis(500);

/// Bytes on their way to the recorder task, with the times of their first and last events.
type Span = (Vec<u8>, Duration, Duration);

/// What the relay hands the recorder task: encoded cast lines, or the bytes of a copy's tar
/// stream (which are kept in segments of their own, not in the cast).
///
/// Boxed: the channel allocates its slots 32 at a time, up front, for every session, busy or
/// not; a span in place made them 2 KiB per session (docs/performance.md).
#[derive(Debug)]
enum Chunk {
    Cast(Box<Span>),
    Tar(Box<Span>),
}

/// Bytes the relay gathered and has not handed over yet, with when they came.
#[derive(Debug, Default)]
struct Gathered {
    buf: Vec<u8>,
    first: Option<Duration>,
    last: Duration,
}

impl Gathered {
    /// Notes that bytes were added at `at`; says whether the buffer was empty before.
    fn wrote(&mut self, at: Duration) -> bool {
        let was_empty = self.first.is_none();
        self.first.get_or_insert(at);
        self.last = at;
        was_empty
    }

    /// Takes the gathered bytes, if any.
    fn take(&mut self) -> Option<Span> {
        let first = self.first.take()?;
        Some((std::mem::take(&mut self.buf), first, self.last))
    }
}

/// What the relay has encoded and not yet handed over.
#[derive(Debug)]
struct Pending {
    writer: CastWriter,
    cast: Gathered,
    /// A copy's tar stream, when the session is a copy.
    tar: Gathered,
}

impl Pending {
    /// Takes everything gathered: the cast lines, then the tar bytes.
    fn take(&mut self) -> [Option<Chunk>; 2] {
        [
            self.cast.take().map(|s| Chunk::Cast(Box::new(s))),
            self.tar.take().map(|s| Chunk::Tar(Box::new(s))),
        ]
    }
}

/// Largest manifest or segment read back.
pub const MAX_OBJECT: u64 = 64 << 20;

/// How much of a segment's cast is read, converted or sent at a time when a recording is served.
const PIECE: usize = 64 << 10;

/// Where a session's recording lives in the store.
pub fn prefix(session: &ExecSession) -> String {
    let ns = session.metadata.namespace.clone().unwrap_or_default();
    let name = session.metadata.name.clone().unwrap_or_default();
    let uid = session.metadata.uid.clone().unwrap_or_default();
    format!("{ns}/{name}-{uid}")
}

/// The handle the relay feeds.
#[derive(Debug)]
pub struct Recorder {
    tx: mpsc::Sender<Chunk>,
    /// The stream whose bytes are a copy's tar stream (stdout for a download, stdin for an
    /// upload): kept as they are in segments of their own, not as cast events.
    tar_stream: Option<Stream>,
    pending: Arc<Mutex<Pending>>,
    /// Told when the relay writes into an empty buffer: the recorder task looks at the buffer
    /// only from then until it has taken it, so an idle session's task sleeps.
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<Finished>,
    started: tokio::time::Instant,
    failure: Arc<OnceLock<String>>,
    interrupted: Arc<OnceLock<String>>,
}

/// What a recording ended with.
#[derive(Debug)]
pub struct Finished {
    /// For the session's status; `None` when not even a manifest could be written.
    pub status: Option<RecordingStatus>,
    /// Why the recording stopped before the session did, if it did.
    pub failure: Option<String>,
}

impl Finished {
    /// Nothing was recorded (the session ended before the relay started).
    pub fn none() -> Self {
        Finished {
            status: None,
            failure: None,
        }
    }
}

/// The facts a recording's header carries, from the approved session.
fn facts(session: &ExecSession) -> SessionFacts {
    let st = session.status.clone().unwrap_or_default();
    SessionFacts {
        namespace: session.metadata.namespace.clone().unwrap_or_default(),
        name: session.metadata.name.clone().unwrap_or_default(),
        uid: session.metadata.uid.clone().unwrap_or_default(),
        pod: session.spec.pod.clone(),
        pod_uid: st.pod_uid.clone().unwrap_or_default(),
        container: st.container.clone().unwrap_or_default(),
        command: session.spec.command.clone(),
        tty: session.spec.tty,
        stdin: session.spec.stdin,
        requester: session.spec.requester.clone(),
        reason: session.spec.reason.clone(),
        policy: st.policy.clone(),
        approvers: st
            .approvals
            .iter()
            .map(|a| a.user.username.clone())
            .collect(),
        ..Default::default()
    }
}

fn session_ref(session: &ExecSession) -> SessionRef {
    SessionRef {
        namespace: session.metadata.namespace.clone().unwrap_or_default(),
        name: session.metadata.name.clone().unwrap_or_default(),
        uid: session.metadata.uid.clone().unwrap_or_default(),
    }
}

impl Recorder {
    /// Starts recording `session` through `spool`.
    pub fn start(spool: Arc<Spool>, session: &ExecSession) -> Self {
        let timestamp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let header = Header::new(facts(session), timestamp, None);
        let (writer, head_line) = CastWriter::new(&header);
        let pending = Arc::new(Mutex::new(Pending {
            writer,
            cast: Gathered::default(),
            tar: Gathered::default(),
        }));
        let tar_stream = session.spec.copy.as_ref().map(|c| match c.direction {
            CopyDirection::Download => Stream::Out,
            CopyDirection::Upload => Stream::In,
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        let failure = Arc::new(OnceLock::new());
        let interrupted = Arc::new(OnceLock::new());
        let task = tokio::spawn(run(
            Task {
                spool,
                prefix: prefix(session),
                session: session_ref(session),
                pending: pending.clone(),
                wake: wake.clone(),
                failure: failure.clone(),
                interrupted: interrupted.clone(),
                copy: tar_stream.is_some(),
            },
            head_line,
            rx,
        ));
        Recorder {
            tx,
            tar_stream,
            pending,
            wake,
            task,
            started: tokio::time::Instant::now(),
            failure,
            interrupted,
        }
    }

    /// Records an event now. Waits when the recorder is behind (backpressure). An error says
    /// the recording stopped (the spool is full, or the disk failed): nothing more is recorded.
    pub async fn record(&self, ev: Event) -> Result<(), String> {
        self.encode(|w, at, out| {
            w.event(at, &ev, out);
        })
        .await
    }

    /// [`Self::record`] for the bytes of a stream, encoded straight from the relay's own
    /// message, with no copy. A copy's tar stream is kept as it is instead, apart from the
    /// cast.
    pub async fn record_data(&self, stream: Stream, bytes: &[u8]) -> Result<(), String> {
        if self.tar_stream == Some(stream) {
            return self
                .gather(|_, at, _, tar| {
                    tar.buf.extend_from_slice(bytes);
                    tar.wrote(at)
                })
                .await;
        }
        self.encode(|w, at, out| {
            w.data_event(at, stream, bytes, out);
        })
        .await
    }

    async fn encode(
        &self,
        write: impl FnOnce(&mut CastWriter, Duration, &mut Vec<u8>),
    ) -> Result<(), String> {
        self.gather(|writer, at, cast, _| {
            let before = cast.buf.len();
            write(writer, at, &mut cast.buf);
            cast.buf.len() > before && cast.wrote(at)
        })
        .await
    }

    /// Adds to what the relay gathered (`add` says whether it wrote into an empty buffer, which
    /// wakes the recorder task), and hands a buffer over once it holds a chunk.
    async fn gather(
        &self,
        add: impl FnOnce(&mut CastWriter, Duration, &mut Gathered, &mut Gathered) -> bool,
    ) -> Result<(), String> {
        if let Some(why) = self.failure.get() {
            return Err(why.clone());
        }
        let at = self.started.elapsed();
        // The lock is held until a full chunk is queued, so chunks reach the recorder task in
        // the order they were written (its tick takes the rest only when nobody holds it).
        let mut p = self.pending.lock().await;
        let Pending { writer, cast, tar } = &mut *p;
        if add(writer, at, cast, tar) {
            self.wake.notify_one();
        }
        // A session that filled a chunk is likely to fill the next: room for it at once,
        // rather than growing from nothing (a quiet session's buffer starts empty).
        let full = |g: &mut Gathered| {
            (g.buf.len() >= CHUNK).then(|| {
                let span = g.take();
                g.buf.reserve(CHUNK + CHUNK / 4);
                span
            })
        };
        let chunks = [
            full(cast).flatten().map(|s| Chunk::Cast(Box::new(s))),
            full(tar).flatten().map(|s| Chunk::Tar(Box::new(s))),
        ];
        for chunk in chunks.into_iter().flatten() {
            if self.tx.send(chunk).await.is_err() {
                return Err(self
                    .failure
                    .get()
                    .cloned()
                    .unwrap_or_else(|| "the recorder stopped".into()));
            }
        }
        Ok(())
    }

    /// Marks the recording interrupted (sealed by [`Self::finish`] with `why`): the session was
    /// cut off by something other than its own end.
    pub fn interrupt(&self, why: String) {
        let _ = self.interrupted.set(why);
    }

    /// Ends the recording: flushes, seals, and returns what goes into the session's status.
    pub async fn finish(self) -> Finished {
        let last = self.started.elapsed();
        {
            let mut p = self.pending.lock().await;
            let Pending { writer, cast, .. } = &mut *p;
            let before = cast.buf.len();
            writer.finish(last, &mut cast.buf);
            if cast.buf.len() > before {
                cast.wrote(last);
            }
        }
        drop(self.tx);
        self.task.await.unwrap_or_else(|e| Finished {
            status: None,
            failure: Some(format!("the recorder task failed: {e}")),
        })
    }
}

/// What the recorder task works with.
struct Task {
    spool: Arc<Spool>,
    prefix: String,
    session: SessionRef,
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    failure: Arc<OnceLock<String>>,
    interrupted: Arc<OnceLock<String>>,
    /// The session is a copy: its tar stream is kept, and its files listed.
    copy: bool,
}

/// The recorder task's state: the segment being written (in a file) and the chain of those
/// stored, with their metas, and, for a copy, the tar bytes gathered for the next tar segment
/// and the lister of its files.
struct Recording {
    open: SegmentFile,
    chain: Chain,
    metas: Vec<SegmentMeta>,
    tar: Gathered,
    lister: Option<Lister>,
}

/// Lists a copy's files as its tar stream goes by, on a thread of its own (the tar crate reads
/// from a blocking `Read`), fed over a bounded channel: a lister that falls behind slows the
/// copy, it never grows memory.
struct Lister {
    tx: mpsc::Sender<Vec<u8>>,
    thread: tokio::task::JoinHandle<FileList>,
}

impl Lister {
    fn start() -> Self {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        let reader = channel_reader(rx);
        let thread = tokio::task::spawn_blocking(move || transfer::list_files(reader));
        Lister { tx, thread }
    }

    /// The list, once the stream has ended.
    async fn finish(self) -> FileList {
        drop(self.tx);
        self.thread.await.unwrap_or_else(|e| FileList {
            error: Some(format!("the listing of the copied files failed: {e}")),
            ..FileList::default()
        })
    }
}

/// A blocking `Read` over the chunks of a channel, for a thread of its own: what the tar crate
/// needs, fed by the async relay.
fn channel_reader(rx: mpsc::Receiver<Vec<u8>>) -> impl std::io::Read {
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(chunk)), rx))
    });
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(Box::pin(chunks)))
}

impl Recording {
    fn sink<'a>(t: &'a Task, metas: &'a mut Vec<SegmentMeta>) -> Sink<'a> {
        Sink {
            spool: &t.spool,
            prefix: &t.prefix,
            metas,
        }
    }

    /// Takes a chunk from the relay.
    async fn push(&mut self, t: &Task, chunk: Chunk) -> Result<(), String> {
        match chunk {
            Chunk::Cast(span) => self.push_cast(t, *span).await,
            Chunk::Tar(span) => self.push_tar(t, *span).await,
        }
    }

    /// Appends cast lines to the segment, cutting before them if they would overflow it and
    /// after them if it is full or old enough.
    async fn push_cast(&mut self, t: &Task, (bytes, first, last): Span) -> Result<(), String> {
        if self.open.would_overflow(bytes.len()) {
            self.cut(t).await?;
        }
        self.open.append(&bytes, micros(first), micros(last))?;
        if self.open.should_cut(micros(last)) {
            self.cut(t).await?;
        }
        Ok(())
    }

    /// Cuts the cast segment and stores it.
    async fn cut(&mut self, t: &Task) -> Result<(), String> {
        let mut sink = Self::sink(t, &mut self.metas);
        self.open.cut(&mut self.chain, &mut sink).await
    }

    /// Adds tar bytes: to the lister, and to the next tar segment, which is stored first
    /// if they would take it past a segment's size.
    async fn push_tar(&mut self, t: &Task, (bytes, first, last): Span) -> Result<(), String> {
        if let Some(l) = &self.lister {
            // A lister gone (it never stops before its input ends) is seen at the end.
            let _ = l.tx.send(bytes.clone()).await;
        }
        if self.tar.buf.len() + bytes.len() > chain::DEFAULT_MAX_BYTES {
            self.store_tar(t).await?;
        }
        self.tar.buf.extend_from_slice(&bytes);
        self.tar.wrote(first);
        self.tar.last = last;
        Ok(())
    }

    /// Stores the tar bytes gathered as the next segment.
    async fn store_tar(&mut self, t: &Task) -> Result<(), String> {
        let Some((bytes, first, last)) = self.tar.take() else {
            return Ok(());
        };
        let mut sink = Self::sink(t, &mut self.metas);
        let times = (micros(first), micros(last));
        store_content(&mut self.chain, &mut sink, bytes, Content::Tar, times).await
    }

    /// Whether the tar bytes gathered are as old as a segment may be (what a crash can lose
    /// is bounded as for the cast).
    fn tar_due(&self, now: Duration) -> bool {
        self.tar
            .first
            .is_some_and(|f| micros(now.saturating_sub(f)) >= chain::DEFAULT_MAX_AGE_MICROS)
    }

    /// At the end of a copy: the last tar bytes, then the list of the files, each as a
    /// segment.
    async fn finish_copy(&mut self, t: &Task, now: Duration) -> Result<(), String> {
        self.store_tar(t).await?;
        let Some(lister) = self.lister.take() else {
            return Ok(());
        };
        let list = lister.finish().await;
        let json = serde_json::to_vec(&list).map_err(|e| e.to_string())?;
        let at = micros(now);
        let mut sink = Self::sink(t, &mut self.metas);
        store_content(&mut self.chain, &mut sink, json, Content::Files, (at, at)).await
    }

    /// At the end: the rest of the cast, a partial last line included.
    async fn finish(&mut self, t: &Task) -> Result<(), String> {
        let mut sink = Self::sink(t, &mut self.metas);
        self.open.finish(&mut self.chain, &mut sink).await
    }
}

async fn run(t: Task, head_line: String, mut rx: mpsc::Receiver<Chunk>) -> Finished {
    // Segments are stored as zstd frames (level 1): a tenth of the bytes for terminal text and
    // next to nothing for runs of NULs, so less to hash, spool and upload (docs/performance.md).
    // The segment being written is in a file of the spool (crate::record::segment_file).
    let mut metas = Vec::new();
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the relay wrote lines this task has not taken yet (it says so through `wake`).
    // The task ticks only then, or while a segment waits to be cut: a session that shows
    // nothing costs no wake-up at all (1,000 idle sessions woke 2,000 times a second).
    let mut armed = false;
    let mut recording = None;
    let stopped: Result<(), String> = async {
        let r = recording.insert(Recording {
            open: SegmentFile::create(&t.spool)?,
            chain: Chain::default(),
            metas: std::mem::take(&mut metas),
            tar: Gathered::default(),
            lister: t.copy.then(Lister::start),
        });
        // The header goes to the spool at once, as segment 0: a replica killed in the first
        // seconds still leaves a recording that says who ran what, where (the output of those
        // seconds is what such a crash can lose: docs/architecture.md, "Crash recovery").
        r.open.append(head_line.as_bytes(), 0, 0)?;
        r.cut(&t).await?;
        loop {
            let ticking = armed || r.open.buffered() > 0 || r.tar.first.is_some();
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(chunk) => r.push(&t, chunk).await?,
                    None => break,
                },
                () = t.wake.notified(), if !ticking => {
                    // The first tick a whole TICK from now: what the relay writes meanwhile is
                    // taken in one go.
                    armed = true;
                    tick.reset();
                }
                _ = tick.tick(), if ticking => {
                    // What the relay gathered since, unless it is queueing a chunk right now
                    // (then the queue is read first, and the rest waits for the next tick).
                    let gathered = match t.pending.try_lock() {
                        Ok(mut p) if rx.is_empty() => Some(p.take()),
                        _ => None,
                    };
                    if let Some(chunks) = gathered {
                        armed = false;
                        for chunk in chunks.into_iter().flatten() {
                            r.push(&t, chunk).await?;
                        }
                    }
                    let now = started.elapsed();
                    if r.open.should_cut(micros(now)) {
                        r.cut(&t).await?;
                    }
                    if r.tar_due(now) {
                        r.store_tar(&t).await?;
                    }
                }
            }
        }
        // The relay is done (`finish` wrote the writer's last bytes): the rest, then the seal.
        let rest = t.pending.lock().await.take();
        for chunk in rest.into_iter().flatten() {
            match chunk {
                Chunk::Cast(span) => {
                    let (bytes, first, last) = *span;
                    if r.open.would_overflow(bytes.len()) {
                        r.cut(&t).await?;
                    }
                    r.open.append(&bytes, micros(first), micros(last))?;
                }
                tar @ Chunk::Tar(_) => r.push(&t, tar).await?,
            }
        }
        r.finish_copy(&t, started.elapsed()).await?;
        r.finish(&t).await?;
        Ok(())
    }
    .await;
    // The segment file is closed (and its budget given back) before the seal.
    let metas = recording.map(|r| r.metas).unwrap_or(metas);
    let Task {
        spool,
        prefix,
        session,
        failure,
        interrupted,
        ..
    } = t;
    let sealed_at = chrono::Utc::now().to_rfc3339();
    let (manifest, failure_msg) = match stopped {
        Ok(()) if interrupted.get().is_some() => {
            let why = interrupted.get().cloned().unwrap_or_default();
            (
                chain::seal_from_metas(session, metas, sealed_at, &why),
                None,
            )
        }
        Ok(()) => match chain::seal(session.clone(), metas.clone(), sealed_at.clone()) {
            Ok(m) => (m, None),
            Err(e) => {
                let why = format!("the segments do not chain: {e}");
                (
                    chain::seal_from_metas(session, metas, sealed_at, &why),
                    Some(why),
                )
            }
        },
        Err(why) => {
            warn!(error = %why, "the recording stopped before the session");
            // Keep what was stored, sealed and marked interrupted; refuse further events.
            let _ = failure.set(why.clone());
            rx.close();
            (
                chain::seal_from_metas(
                    session,
                    metas,
                    sealed_at,
                    &format!("the recording stopped: {why}"),
                ),
                Some(why),
            )
        }
    };
    let key = format!("{prefix}/{}", chain::MANIFEST_NAME);
    let status = match serde_json::to_vec_pretty(&manifest) {
        Ok(bytes) => match spool.put(&key, &bytes, false).await {
            Ok(()) => Some(status_of(&spool, &key, &manifest)),
            Err(e) => {
                warn!(error = %e, "the recording could not be sealed");
                None
            }
        },
        Err(e) => {
            warn!(error = %e, "the manifest could not be encoded");
            None
        }
    };
    Finished {
        status,
        failure: failure_msg,
    }
}

/// The session's `status.recording` for a sealed manifest.
fn status_of(spool: &Spool, key: &str, manifest: &chain::Manifest) -> RecordingStatus {
    RecordingStatus {
        uri: Some(spool.uri(key)),
        format: Some("asciicast-v3".into()),
        bytes: i64::try_from(manifest.cast_bytes()).ok(),
        stored_bytes: i64::try_from(manifest.total_bytes).ok(),
        sha256: Some(manifest.head.clone()),
        segments: i64::try_from(manifest.segments.len()).ok(),
        interrupted: manifest.interrupted,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Seals the recording of a session whose broker died (this replica, before a restart): from
/// the sidecars in the spool and the store, keeping the longest valid chain from segment 0,
/// marked interrupted. An existing manifest (the crash came after sealing) is kept as it is.
pub async fn seal_interrupted(
    spool: &Spool,
    session: &ExecSession,
    reason: &str,
) -> Result<RecordingStatus> {
    let prefix = prefix(session);
    let key = format!("{prefix}/{}", chain::MANIFEST_NAME);
    let (names, list_err) = spool.list(&prefix).await;
    if names.iter().any(|n| n == chain::MANIFEST_NAME)
        && let Ok(bytes) = spool.get(&key, MAX_OBJECT).await
        && let Ok(manifest) = serde_json::from_slice::<chain::Manifest>(&bytes)
    {
        return Ok(status_of(spool, &key, &manifest));
    }
    let mut why = reason.to_owned();
    if let Some(e) = list_err {
        why.push_str(&format!(
            "; the store could not be listed, only spooled segments were kept: {e:#}"
        ));
    }
    let mut metas = Vec::new();
    for name in &names {
        if let Some(chain::RecordingFile::Sidecar(_)) = chain::parse_file_name(name) {
            let bytes = spool
                .get(&format!("{prefix}/{name}"), MAX_OBJECT)
                .await
                .with_context(|| format!("reading {name}"))?;
            match serde_json::from_slice::<SegmentMeta>(&bytes) {
                Ok(m) => metas.push(m),
                Err(e) => warn!(file = %name, error = %e, "an unreadable sidecar is left out"),
            }
        }
    }
    let manifest = chain::seal_from_metas(
        session_ref(session),
        metas,
        chrono::Utc::now().to_rfc3339(),
        &why,
    );
    spool
        .put(&key, &serde_json::to_vec_pretty(&manifest)?, false)
        .await?;
    Ok(status_of(spool, &key, &manifest))
}

/// Why a recording cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Missing, unreadable or failing verification: the caller must not trust it.
    #[error("{0}")]
    Verification(String),
    /// Verified, yet not asciicast this build reads (so it cannot be converted).
    #[error("{0}")]
    Cast(String),
    /// Sealed and verified, yet holding no segment at all: nothing to replay.
    #[error("{0}")]
    Empty(String),
}

/// A recording whose manifest and segments were verified against the session's chain head,
/// ready to be streamed ([`Verified::stream`]).
#[derive(Debug)]
pub struct Verified {
    store: Arc<Spool>,
    prefix: String,
    manifest: chain::Manifest,
}

/// The first of the two passes of serving a recording: verifies the manifest against the chain
/// head in the session's status and every segment against the manifest, holding one segment in
/// memory at a time and keeping none. With `export`, also reads the cast, so that a conversion
/// cannot fail half-way through a response.
pub async fn verify(
    store: Arc<Spool>,
    session: &ExecSession,
    export: Option<Export>,
) -> Result<Verified, ReadError> {
    verify_at(
        store,
        prefix(session),
        &recorded_head(session)?,
        None,
        export,
    )
    .await
}

/// The chain head the session's status holds: what its recording is verified against.
fn recorded_head(session: &ExecSession) -> Result<String, ReadError> {
    session
        .status
        .as_ref()
        .and_then(|s| s.recording.as_ref())
        .and_then(|r| r.sha256.clone())
        .ok_or_else(|| ReadError::Verification("the session has no recording yet".into()))
}

/// [`verify`] of the recording under `prefix` against `head`; with the session's signed
/// `record` (whose signature the caller checked), the manifest must also be the one it names.
pub async fn verify_at(
    store: Arc<Spool>,
    prefix: String,
    head: &str,
    record: Option<&crate::recording::record::SessionRecord>,
    export: Option<Export>,
) -> Result<Verified, ReadError> {
    let manifest_bytes = store
        .get(&format!("{prefix}/{}", chain::MANIFEST_NAME), MAX_OBJECT)
        .await
        .map_err(|e| ReadError::Verification(format!("reading the manifest: {e:#}")))?;
    let manifest: chain::Manifest = match record {
        Some(r) => r
            .check_manifest(&manifest_bytes)
            .map_err(|e| ReadError::Verification(e.to_string()))?,
        None => serde_json::from_slice(&manifest_bytes)
            .map_err(|e| ReadError::Verification(format!("the manifest is unreadable: {e}")))?,
    };
    let head = head.to_owned();
    {
        let mut verifier = chain::Verifier::new(&manifest, Some(&head))
            .map_err(|e| ReadError::Verification(e.to_string()))?;
        if manifest.segments.is_empty() {
            return Err(ReadError::Empty(format!(
                "the recording holds nothing to replay: it was sealed with no segment ({}). The \
                 operator replica relaying the session stopped before it stored the first one; the \
                 session's status and Events say what happened",
                manifest.reason.as_deref().unwrap_or("no reason given")
            )));
        }
        let mut reader = export.map(|_| CastReader::new());
        let mut events = Vec::new();
        // A copy's tar bytes are checked against its file list as they go by.
        let mut tar_check = read_file_list(&store, &prefix, &manifest)
            .await
            .map_err(ReadError::Verification)?
            .map(TarCheck::start);
        for meta in &manifest.segments {
            let bytes = read_segment(&store, &prefix, meta)
                .await
                .map_err(ReadError::Verification)?;
            verifier
                .segment(meta.index, &bytes, None)
                .map_err(|e| ReadError::Verification(e.to_string()))?;
            if meta.content == Some(Content::Tar) {
                let Some(check) = &tar_check else {
                    // A copy cut off before its end (a crash, the store lost) has no list:
                    // its tar bytes are still chained, so still verified, only not listed.
                    if manifest.interrupted {
                        continue;
                    }
                    return Err(ReadError::Verification(format!(
                        "segment {} holds copied files, and the recording, sealed as complete, \
                         has no list of them",
                        meta.index
                    )));
                };
                let tar = meta
                    .decode(&bytes)
                    .map_err(|e| ReadError::Verification(e.to_string()))?;
                // The checker stops reading only at the end of the tar stream; what follows
                // is still read (and counted).
                let _ = check.tx.send(tar.into_owned()).await;
                continue;
            }
            if !meta.is_cast() {
                continue;
            }
            if let Some(r) = &mut reader {
                let cast = meta
                    .decode(&bytes)
                    .map_err(|e| ReadError::Verification(e.to_string()))?;
                // A piece at a time: the events read are dropped as they come, so a segment's
                // worth of them (more than the segment) is never held.
                for piece in cast.chunks(PIECE) {
                    r.feed(piece, &mut events)
                        .map_err(|e| ReadError::Cast(e.to_string()))?;
                    events.clear();
                }
            }
        }
        verifier
            .finish()
            .map_err(|e| ReadError::Verification(e.to_string()))?;
        if let Some(check) = tar_check.take() {
            check.finish().await.map_err(|e| {
                ReadError::Verification(format!(
                    "the copied files do not match the recording's list of them: {e}"
                ))
            })?;
        }
        if let Some(r) = reader {
            r.finish(&mut events)
                .map_err(|e| ReadError::Cast(e.to_string()))?;
        }
    }
    Ok(Verified {
        store,
        prefix,
        manifest,
    })
}

async fn read_segment(store: &Spool, prefix: &str, meta: &SegmentMeta) -> Result<Vec<u8>, String> {
    store
        .get(&format!("{prefix}/{}", meta.file_name()), MAX_OBJECT)
        .await
        .map_err(|e| {
            format!(
                "reading segment {} ({}): {e:#}",
                meta.index,
                meta.file_name()
            )
        })
}

/// The list of the files a copy moved, from its recording: the manifest is checked against the
/// chain head in the session's status, and the list's segment against the manifest (the tar
/// bytes themselves are not read: `verify` and `files` do that).
pub async fn file_list(store: &Spool, session: &ExecSession) -> Result<FileList, ReadError> {
    let head = recorded_head(session)?;
    let prefix = prefix(session);
    let manifest_bytes = store
        .get(&format!("{prefix}/{}", chain::MANIFEST_NAME), MAX_OBJECT)
        .await
        .map_err(|e| ReadError::Verification(format!("reading the manifest: {e:#}")))?;
    let manifest: chain::Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| ReadError::Verification(format!("the manifest is unreadable: {e}")))?;
    chain::Verifier::new(&manifest, Some(&head))
        .map_err(|e| ReadError::Verification(e.to_string()))?;
    read_file_list(store, &prefix, &manifest)
        .await
        .map_err(ReadError::Verification)?
        .ok_or_else(|| {
            ReadError::Empty(if session.spec.copy.is_some() {
                "the copy's recording has no list of files: it ended before the list was stored \
                 (see the session's status and Events)"
                    .into()
            } else {
                "the session is not a copy (kubectl aexec cp): it has no files".into()
            })
        })
}

/// A copy's file list, from its segment (checked against the verified manifest's meta).
async fn read_file_list(
    store: &Spool,
    prefix: &str,
    manifest: &chain::Manifest,
) -> Result<Option<FileList>, String> {
    let Some(meta) = manifest
        .segments
        .iter()
        .find(|m| m.content == Some(Content::Files))
    else {
        return Ok(None);
    };
    let bytes = read_segment(store, prefix, meta).await?;
    meta.check(&bytes).map_err(|e| e.to_string())?;
    let json = meta.decode(&bytes).map_err(|e| e.to_string())?;
    serde_json::from_slice(&json).map(Some).map_err(|e| {
        format!(
            "the copy's file list ({}) is unreadable: {e}",
            meta.file_name()
        )
    })
}

/// Checks a copy's tar segments against its file list as they are read: the list is re-made
/// from the tar bytes on a thread of its own and compared at the end.
struct TarCheck {
    tx: mpsc::Sender<Vec<u8>>,
    thread: tokio::task::JoinHandle<Result<(), String>>,
}

impl TarCheck {
    fn start(list: FileList) -> Self {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        let reader = channel_reader(rx);
        let thread = tokio::task::spawn_blocking(move || {
            transfer::check(&list, reader).map_err(|e| e.to_string())
        });
        TarCheck { tx, thread }
    }

    async fn finish(self) -> Result<(), String> {
        drop(self.tx);
        self.thread
            .await
            .map_err(|e| format!("checking the copied files failed: {e}"))?
    }
}

impl Verified {
    /// The size of the cast (v3) in bytes (its segments decompressed).
    pub fn cast_bytes(&self) -> u64 {
        self.manifest.cast_bytes()
    }

    /// The second pass: the cast (or, with `export`, its conversion) segment by segment, one
    /// segment in memory at a time, pulled as the receiver takes it. Every segment is checked
    /// against the manifest again, since the store may have changed since [`verify`]: a
    /// mismatch ends the stream with an error, so the receiver sees a broken transfer instead
    /// of bytes that were not verified.
    pub fn stream(
        self,
        export: Option<Export>,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, String>> + Send + 'static {
        self.stream_part(None, export)
    }

    /// The size of a copy's tar stream (its tar segments decompressed).
    pub fn tar_bytes(&self) -> u64 {
        self.manifest
            .segments
            .iter()
            .filter(|m| m.content == Some(Content::Tar))
            .map(SegmentMeta::cast_len)
            .sum()
    }

    /// [`Self::stream`] of a copy's tar stream: the files as they were copied.
    pub fn stream_tar(
        self,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, String>> + Send + 'static {
        self.stream_part(Some(Content::Tar), None)
    }

    /// The segments holding `content` (`None`: the cast), streamed as [`Self::stream`] does.
    fn stream_part(
        self,
        content: Option<Content>,
        export: Option<Export>,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, String>> + Send + 'static {
        struct Pass {
            store: Arc<Spool>,
            prefix: String,
            segments: std::vec::IntoIter<SegmentMeta>,
            converter: Option<Converter>,
            /// The segment being sent, as cast, and how much of it was.
            cast: Vec<u8>,
            sent: usize,
        }
        let pass = Pass {
            store: self.store,
            prefix: self.prefix,
            // One part only: the cast, or a copy's tar bytes.
            segments: self
                .manifest
                .segments
                .into_iter()
                .filter(|m| m.content == content)
                .collect::<Vec<_>>()
                .into_iter(),
            converter: export.map(Converter::new),
            cast: Vec::new(),
            sent: 0,
        };
        // A segment goes out in pieces of at most PIECE bytes (converted: about as many): the
        // response's buffers (the body, TLS) hold a piece, not a segment.
        futures::stream::try_unfold(pass, |mut pass| async move {
            loop {
                if pass.sent < pass.cast.len() {
                    let end = (pass.sent + PIECE).min(pass.cast.len());
                    let piece = &pass.cast[pass.sent..end];
                    let out = match &mut pass.converter {
                        None => piece.to_vec(),
                        Some(c) => {
                            let mut out = Vec::with_capacity(piece.len() + piece.len() / 4);
                            c.feed(piece, &mut out).map_err(|e| e.to_string())?;
                            out
                        }
                    };
                    pass.sent = end;
                    if pass.sent == pass.cast.len() {
                        pass.cast = Vec::new();
                        pass.sent = 0;
                    }
                    if out.is_empty() {
                        continue;
                    }
                    return Ok(Some((out, pass)));
                }
                let Some(meta) = pass.segments.next() else {
                    let mut out = Vec::new();
                    if let Some(c) = pass.converter.take() {
                        c.finish(&mut out).map_err(|e| e.to_string())?;
                    }
                    return Ok(if out.is_empty() {
                        None
                    } else {
                        Some((out, pass))
                    });
                };
                let bytes = read_segment(&pass.store, &pass.prefix, &meta).await?;
                if let Err(e) = meta.check(&bytes) {
                    warn!(error = %e, "a recording changed while it was being sent; the transfer is cut");
                    return Err(format!(
                        "the recording changed while it was being sent: {e}"
                    ));
                }
                pass.cast = match meta.encoding {
                    None => bytes,
                    Some(_) => meta.decode(&bytes).map_err(|e| e.to_string())?.into_owned(),
                };
            }
        })
    }
}

/// At startup, before this process serves attaches: the sessions this replica (`instance`) was
/// relaying when it stopped (Active with it as broker). Listed later, a session this process has
/// just claimed would look the same and be ended under its user.
pub async fn interrupted_sessions(client: &kube::Client, instance: &str) -> Vec<ExecSession> {
    let api: kube::Api<ExecSession> = kube::Api::all(client.clone());
    let mut delay = Duration::from_millis(500);
    let list = loop {
        match api.list(&Default::default()).await {
            Ok(l) => break l,
            Err(e) => {
                warn!(error = %e, "listing sessions to recover; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    };
    list.into_iter()
        .filter(|s| {
            let st = s.status.as_ref();
            st.and_then(|st| st.phase) == Some(aexec_crds::Phase::Active)
                && st.and_then(|st| st.broker.as_deref()) == Some(instance)
        })
        .collect()
}

/// Ends the `interrupted` sessions (from [`interrupted_sessions`]). Their streams died with the
/// process and cannot resume; their recordings are sealed from what was spooled or stored,
/// marked interrupted, and the sessions fail with a message saying so.
pub async fn recover(
    client: kube::Client,
    spool: Arc<Spool>,
    instance: String,
    interrupted: Vec<ExecSession>,
    started: k8s_openapi::jiff::Timestamp,
) {
    for s in interrupted {
        let (ns, name) = (
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
        );
        let why = format!(
            "the operator replica {instance} relaying the session stopped (crash or kill) while it was active"
        );
        let recording = match seal_interrupted(&spool, &s, &why).await {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(namespace = %ns, session = %name, error = %format!("{e:#}"), "sealing an interrupted recording");
                None
            }
        };
        tracing::info!(namespace = %ns, session = %name, "an interrupted session was ended and its recording sealed");
        let mut message = format!("{why}; the session was ended");
        if recording.is_some() {
            message.push_str(" and its recording sealed, marked interrupted");
        }
        if let Err(e) =
            end_interrupted(&client, &ns, &name, &instance, started, message, recording).await
        {
            warn!(namespace = %ns, session = %name, error = %e, "ending an interrupted session");
        }
    }
}

/// Whether a session was left Active by an earlier process of `instance` (pure).
pub fn orphaned(
    st: &aexec_crds::ExecSessionStatus,
    instance: &str,
    started: k8s_openapi::jiff::Timestamp,
) -> bool {
    st.phase == Some(aexec_crds::Phase::Active)
        && st.broker.as_deref() == Some(instance)
        && st.start_time.as_ref().is_none_or(|t| t.0 < started)
}

/// Writes the final status of an interrupted session, if it is still Active on `instance`.
async fn end_interrupted(
    client: &kube::Client,
    ns: &str,
    name: &str,
    instance: &str,
    started: k8s_openapi::jiff::Timestamp,
    message: String,
    recording: Option<RecordingStatus>,
) -> Result<(), kube::Error> {
    let api: kube::Api<ExecSession> = kube::Api::namespaced(client.clone(), ns);
    for _ in 0..10 {
        let Some(mut s) = api.get_opt(name).await? else {
            return Ok(());
        };
        let mut st = s.status.clone().unwrap_or_default();
        if !orphaned(&st, instance, started) {
            return Ok(());
        }
        st.phase = Some(aexec_crds::Phase::Failed);
        st.message = Some(message.clone());
        st.end_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        if recording.is_some() {
            st.recording = recording.clone();
        }
        s.status = Some(st);
        match api
            .replace_status(name, &kube::api::PostParams::default(), &s)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::orphaned;
    use aexec_crds::{ExecSessionStatus, Phase};
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    #[test]
    fn only_sessions_claimed_by_an_earlier_process_are_orphans() {
        let started: Timestamp = "2026-11-23T10:00:00Z".parse().expect("time");
        let st = |phase, broker: &str, at: &str| ExecSessionStatus {
            phase: Some(phase),
            broker: Some(broker.into()),
            start_time: Some(Time(at.parse().expect("time"))),
            ..Default::default()
        };
        assert!(orphaned(
            &st(Phase::Active, "op-0", "2026-11-23T09:59:59Z"),
            "op-0",
            started
        ));
        // Attached to this process after it started: live, not an orphan.
        assert!(!orphaned(
            &st(Phase::Active, "op-0", "2026-11-23T10:00:01Z"),
            "op-0",
            started
        ));
        assert!(!orphaned(
            &st(Phase::Active, "op-1", "2026-11-23T09:00:00Z"),
            "op-0",
            started
        ));
        assert!(!orphaned(
            &st(Phase::Succeeded, "op-0", "2026-11-23T09:00:00Z"),
            "op-0",
            started
        ));
    }

    use std::path::Path;

    use futures::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::{
        control::metrics::Metrics,
        record::storage::{LocalDir, Store},
        recording::{
            cast::{self, Export},
            chain::SegmentLimits,
        },
    };

    async fn spool(root: &Path) -> Arc<Spool> {
        Arc::new(
            Spool::open(
                root.join("spool"),
                1 << 30,
                Store::Local(LocalDir::new(root.join("store"))),
                Metrics::default(),
            )
            .await
            .expect("spool"),
        )
    }

    fn session() -> ExecSession {
        serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
            "metadata": {"name": "s1", "namespace": "ns", "uid": "u-1"},
            "spec": {"pod": "web", "command": ["sh"], "requester": {"username": "alice"}},
            "status": {"phase": "Active", "podUID": "p-1", "container": "app"}
        }))
        .expect("session")
    }

    /// Records about 10 MiB of output (several segments) and returns the sealed session.
    async fn recorded(spool: &Arc<Spool>) -> ExecSession {
        let mut s = session();
        let rec = Recorder::start(spool.clone(), &s);
        for i in 0..10_000u32 {
            let mut line = format!("line {i:05} \u{1b}[1mbold\u{1b}[0m ").into_bytes();
            line.resize(1020, b'x');
            line.extend_from_slice(b"\r\n");
            rec.record(Event::Output(line)).await.expect("record");
        }
        rec.record(Event::Exit(0)).await.expect("record");
        let status = rec.finish().await.status.expect("sealed");
        assert!(status.segments.unwrap_or(0) >= 3, "{status:?}");
        with_recording(&mut s, status);
        s
    }

    /// Puts a sealed recording's status into the session, as the broker does.
    fn with_recording(s: &mut ExecSession, status: RecordingStatus) {
        if let Some(st) = s.status.as_mut() {
            st.recording = Some(status);
        }
    }

    async fn collect(
        stream: impl futures::Stream<Item = Result<Vec<u8>, String>>,
    ) -> (Vec<u8>, Option<String>, usize) {
        let mut stream = std::pin::pin!(stream);
        let (mut out, mut chunks) = (Vec::new(), 0);
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => {
                    out.extend(b);
                    chunks += 1;
                }
                Err(e) => return (out, Some(e), chunks),
            }
        }
        (out, None, chunks)
    }

    /// Waits (at most 5 s) until segment `index`'s sidecar is in the spool.
    async fn wait_for_sidecar(root: &Path, index: u64) {
        let sidecar = root
            .join("spool/ns/s1-u-1")
            .join(chain::sidecar_name(index));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !sidecar.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no segment {index} in the spool after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn cast_of(root: &Path) -> Vec<u8> {
        let dir = root.join("spool/ns/s1-u-1");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("spooled")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cast"))
            .collect();
        names.sort();
        // Each segment as its sidecar says it is stored (a zstd frame).
        let mut cast = Vec::new();
        for n in &names {
            // A copy's tar and list segments take indices between the cast's.
            let Some(chain::RecordingFile::Segment(i)) = chain::parse_file_name(n) else {
                panic!("{n} is not a segment");
            };
            let meta: SegmentMeta = serde_json::from_slice(
                &std::fs::read(dir.join(chain::sidecar_name(i))).expect("sidecar"),
            )
            .expect("meta");
            let stored = std::fs::read(dir.join(n)).expect("segment");
            cast.extend_from_slice(&meta.decode(&stored).expect("decodes"));
        }
        cast
    }

    #[tokio::test]
    async fn the_header_is_stored_at_once_so_a_crash_in_the_first_seconds_leaves_who_and_what() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = spool(dir.path()).await;
        let mut s = session();
        let rec = Recorder::start(spool.clone(), &s);
        // No event, no tick: only the start writes segment 0 (and its sidecar).
        wait_for_sidecar(dir.path(), 0).await;
        // The replica dies here: the recorder never finishes.
        rec.task.abort();
        let status = seal_interrupted(&spool, &s, "the replica stopped")
            .await
            .expect("sealed");
        assert_eq!(status.segments, Some(1), "{status:?}");
        assert!(status.interrupted);
        with_recording(&mut s, status);
        let v = verify(spool.clone(), &s, None).await.expect("verifies");
        let (out, err, _) = collect(v.stream(None)).await;
        assert_eq!(err, None);
        let cast = cast::CastReader::parse(&out).expect("a valid cast");
        assert_eq!(cast.header.aexec.requester.username, "alice");
        assert_eq!(cast.header.aexec.pod, "web");
        assert!(cast.events.is_empty(), "{:?}", cast.events);
    }

    #[tokio::test]
    async fn what_the_relay_gathers_reaches_the_spool_in_order_by_chunk_or_by_tick() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = spool(dir.path()).await;
        let s = session();
        let rec = Recorder::start(spool.clone(), &s);
        // A quiet session: a few bytes, far from a chunk, are in a segment within the segment's
        // age limit and a tick.
        rec.record_data(Stream::Out, b"quiet\r\n")
            .await
            .expect("record");
        wait_for_sidecar(dir.path(), 1).await;
        // Bursts that fill chunks, with pauses in which ticks take partial ones: every byte is
        // recorded once, in order (arbitrary bytes, frames cutting UTF-8 sequences included).
        let mut expected = b"quiet\r\n".to_vec();
        let mut x: u32 = 7;
        for i in 0..300u32 {
            let len = (i * 997 % 9000 + 1) as usize;
            let frame: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8
                })
                .collect();
            rec.record_data(Stream::Out, &frame).await.expect("record");
            expected.extend_from_slice(&frame);
            if i % 100 == 50 {
                tokio::time::sleep(TICK + Duration::from_millis(100)).await;
            }
        }
        rec.record(Event::Exit(0)).await.expect("record");
        let status = rec.finish().await.status.expect("sealed");
        assert!(!status.interrupted, "{status:?}");
        let parsed = cast::CastReader::parse(&cast_of(dir.path())).expect("a valid cast");
        let mut out = Vec::new();
        let mut at = Duration::ZERO;
        for (t, ev) in &parsed.events {
            assert!(*t >= at, "time went back: {t:?} after {at:?}");
            at = *t;
            if let Event::Output(b) = ev {
                out.extend_from_slice(b);
            }
        }
        assert_eq!(out.len(), expected.len());
        assert!(
            out == expected,
            "the recorded output differs from what was relayed"
        );
        assert!(matches!(parsed.events.last(), Some((_, Event::Exit(0)))));
    }

    #[tokio::test]
    async fn a_recording_sealed_without_segments_is_refused_with_a_reason_not_served_empty() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = spool(dir.path()).await;
        let mut s = session();
        // Sealed after a crash that came before anything reached the spool.
        let status = seal_interrupted(&spool, &s, "the replica stopped")
            .await
            .expect("sealed");
        assert_eq!(status.segments, Some(0));
        with_recording(&mut s, status);
        match verify(spool.clone(), &s, None).await {
            Err(ReadError::Empty(e)) => {
                assert!(e.contains("nothing to replay"), "{e}");
                assert!(e.contains("the replica stopped"), "{e}");
            }
            other => panic!("expected Empty, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_manifest_swapped_for_an_empty_one_fails_verification() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = spool(dir.path()).await;
        let s = recorded(&spool).await;
        let empty = chain::seal_from_metas(session_ref(&s), Vec::new(), "now".into(), "forged");
        let key = format!("{}/{}", prefix(&s), chain::MANIFEST_NAME);
        spool
            .put(&key, &serde_json::to_vec(&empty).expect("json"), false)
            .await
            .expect("put");
        match verify(spool.clone(), &s, None).await {
            Err(ReadError::Verification(_)) => {}
            other => panic!("expected a verification failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_verified_recording_streams_segment_by_segment_in_every_format() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = spool(dir.path()).await;
        let s = recorded(&spool).await;
        let cast_file = cast_of(dir.path());
        let whole = cast::CastReader::parse(&cast_file).expect("cast");
        for (export, expected) in [
            (None, cast_file.clone()),
            (Some(Export::V2), cast::to_v2(&whole).into_bytes()),
            (Some(Export::Text), cast::to_text(&whole).into_bytes()),
        ] {
            let v = verify(spool.clone(), &s, export).await.expect("verifies");
            assert_eq!(v.cast_bytes(), cast_file.len() as u64);
            let (out, err, chunks) = collect(v.stream(export)).await;
            assert_eq!(err, None);
            assert!(out == expected, "{export:?} differs");
            assert!(chunks >= 3, "{export:?}: {chunks} chunks");
            // Sent a piece at a time, never a segment at once (the response's buffers hold a
            // piece): the converted forms may grow a piece by a few bytes per line.
            let v = verify(spool.clone(), &s, export).await.expect("verifies");
            let largest = std::pin::pin!(v.stream(export))
                .fold(
                    0,
                    |m, item| async move { m.max(item.expect("piece").len()) },
                )
                .await;
            assert!(
                largest <= PIECE + PIECE / 4,
                "{export:?}: a piece of {largest} bytes"
            );
        }
    }

    /// A tar stream of `files` (name, content), as `tar cf -` would write it.
    fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice())
                .expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[tokio::test]
    async fn a_copys_tar_stream_is_kept_apart_from_the_cast_listed_and_verified() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = spool(dir.path()).await;
        let mut s = session();
        s.spec.copy = Some(aexec_crds::CopySpec {
            direction: CopyDirection::Download,
            path: "/data".into(),
            local: None,
        });
        // 2.5 MiB of a file that does not compress, then a small one: several tar segments.
        let big: Vec<u8> = (0..(5u32 << 19))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let tar = tar_of(&[
            ("data/big.bin", big.clone()),
            ("data/a.txt", b"hello\n".to_vec()),
        ]);
        let rec = Recorder::start(spool.clone(), &s);
        for frame in tar.chunks(30_000) {
            rec.record_data(Stream::Out, frame).await.expect("record");
        }
        rec.record_data(Stream::Err, b"tar: removing leading /\n")
            .await
            .expect("record");
        rec.record(Event::Exit(0)).await.expect("record");
        let status = rec.finish().await.status.expect("sealed");
        with_recording(&mut s, status);

        // The cast holds the stderr and the exit, not the tar bytes.
        let cast = cast_of(dir.path());
        let text = String::from_utf8_lossy(&cast);
        assert!(text.contains("removing leading"), "{text}");
        assert!(!text.contains("hello"), "tar bytes leaked into the cast");
        assert!(cast.len() < 4096, "{} bytes of cast", cast.len());

        // The tar segments hold the stream byte for byte, in order; the list is right.
        let v = verify(spool.clone(), &s, None).await.expect("verifies");
        assert_eq!(v.tar_bytes(), tar.len() as u64);
        let tars = v
            .manifest
            .segments
            .iter()
            .filter(|m| m.content == Some(Content::Tar))
            .count();
        assert!(tars >= 3, "{tars} tar segments");
        let (out, err, _) = collect(v.stream_tar()).await;
        assert_eq!(err, None);
        assert!(out == tar, "the served tar differs from the relayed one");
        let list = file_list(&spool, &s).await.expect("listed");
        assert_eq!(list.tar_bytes, tar.len() as u64);
        assert_eq!(list.error, None);
        let names: Vec<_> = list.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["data/big.bin", "data/a.txt"]);
        use sha2::Digest as _;
        assert_eq!(
            list.files[0].sha256.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(&big)).as_str())
        );
        // The cast, served, is the cast alone.
        let v = verify(spool.clone(), &s, None).await.expect("verifies");
        let (served, _, _) = collect(v.stream(None)).await;
        assert!(served == cast);
    }

    async fn write_segment(
        spool: &Spool,
        prefix: &str,
        metas: &mut Vec<SegmentMeta>,
        (meta, bytes): (SegmentMeta, Vec<u8>),
    ) -> Result<(), String> {
        let mut sink = Sink {
            spool,
            prefix,
            metas,
        };
        sink.write(meta, &bytes).await
    }

    #[tokio::test]
    async fn a_file_list_that_does_not_match_the_tar_fails_verification() {
        // A well-chained recording whose list was written wrong (the operator's bug, or a forger
        // with the signing key who re-chained it): the chain holds, the listing check does not.
        let dir = tempfile::tempdir().expect("tmp");
        let spool = spool(dir.path()).await;
        let mut s = session();
        let tar = tar_of(&[("data/a.txt", b"hello\n".to_vec())]);
        let mut list = transfer::list_files(tar.as_slice());
        list.files[0].sha256 = Some("0".repeat(64));
        let mut seg = chain::Segmenter::new(SegmentLimits::default()).zstd(1);
        let mut metas = Vec::new();
        seg.push(b"{}\n", 0);
        let cast = seg.cut().expect("cast segment");
        let tar_seg = seg.emit_content(tar, Content::Tar, 1, 1);
        let files = seg.emit_content(
            serde_json::to_vec(&list).expect("json"),
            Content::Files,
            2,
            2,
        );
        for cut in [cast, tar_seg, files] {
            write_segment(&spool, &prefix(&s), &mut metas, cut)
                .await
                .expect("stored");
        }
        let manifest = chain::seal(session_ref(&s), metas, "now".into()).expect("sealed");
        let key = format!("{}/{}", prefix(&s), chain::MANIFEST_NAME);
        spool
            .put(&key, &serde_json::to_vec(&manifest).expect("json"), false)
            .await
            .expect("manifest");
        with_recording(&mut s, status_of(&spool, &key, &manifest));
        let e = verify(spool.clone(), &s, None).await.expect_err("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("do not match the recording's list") && msg.contains("data/a.txt"),
            "{msg}"
        );
        // The list alone is still served (its segment is the chain's): describe shows it.
        assert_eq!(file_list(&spool, &s).await.expect("list").files.len(), 1);
    }

    #[tokio::test]
    async fn a_recording_changed_after_verification_cuts_the_stream() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = spool(dir.path()).await;
        let s = recorded(&spool).await;
        let v = verify(spool.clone(), &s, None).await.expect("verifies");
        let before = cast_of(dir.path());
        // Between the passes, segment 1 changes in the store.
        let seg = dir.path().join("spool/ns/s1-u-1/seg-000001.cast");
        let mut bytes = std::fs::read(&seg).expect("segment");
        bytes[10] ^= 0x20;
        std::fs::write(&seg, &bytes).expect("tamper");
        let (out, err, chunks) = collect(v.stream(None)).await;
        assert_eq!(chunks, 1, "segment 0 went out, nothing after");
        assert!(before.starts_with(&out));
        let err = err.expect("the stream fails");
        assert!(
            err.contains("changed while it was being sent") && err.contains("segment 1"),
            "{err}"
        );
        // And a new request is refused before any byte.
        match verify(spool.clone(), &s, Some(Export::Text)).await {
            Err(ReadError::Verification(e)) => assert!(e.contains("was altered"), "{e}"),
            other => panic!("expected a verification error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_recording_that_is_not_asciicast_is_refused_before_conversion() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = spool(dir.path()).await;
        let mut s = session();
        // Chained and sealed correctly, but not a cast: a header line is missing.
        let mut seg = chain::Segmenter::new(SegmentLimits::default());
        seg.push(b"[0.1, \"o\", \"no header\"]\n", 0);
        let (meta, bytes) = seg.finish().expect("segment");
        let prefix = prefix(&s);
        let mut metas = Vec::new();
        write_segment(&spool, &prefix, &mut metas, (meta, bytes))
            .await
            .expect("write");
        let manifest = chain::seal(session_ref(&s), metas, "now".into()).expect("seal");
        let key = format!("{prefix}/{}", chain::MANIFEST_NAME);
        spool
            .put(&key, &serde_json::to_vec(&manifest).expect("json"), false)
            .await
            .expect("manifest");
        if let Some(st) = s.status.as_mut() {
            st.recording = Some(status_of(&spool, &key, &manifest));
        }
        assert!(
            verify(spool.clone(), &s, None).await.is_ok(),
            "v3 is served as stored"
        );
        match verify(spool.clone(), &s, Some(Export::V2)).await {
            Err(ReadError::Cast(e)) => assert!(e.contains("line 1"), "{e}"),
            other => panic!("expected a cast error, got {other:?}"),
        }
    }
}
