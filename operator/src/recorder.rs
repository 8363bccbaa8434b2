//! The recorder: a task per session that turns relayed frames into asciicast v3, cuts it into
//! hash-chained segments, writes each segment (and its sidecar) to storage as soon as it is cut
//! (at most every 2 s or 1 MiB), and seals the recording with a manifest at the end.
//!
//! The relay hands events over a bounded channel: when storage is slow the relay waits, so memory
//! stays bounded and nothing is dropped silently.

use std::time::Duration;

use aexec_crds::{ExecSession, RecordingStatus};
use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tracing::warn;

use crate::{
    recording::{
        cast::{CastWriter, Event, Header, SessionFacts},
        chain::{self, SegmentLimits, SegmentMeta, Segmenter, SessionRef},
    },
    storage::{LocalDir, Storage},
};

/// Events in flight between the relay and the recorder: a bound, so a stalled store slows the
/// session instead of growing memory (64 frames of at most 1 MiB each from the client; pod
/// frames are bounded by the API server's).
const QUEUE: usize = 64;
/// Largest manifest or segment read back.
pub const MAX_OBJECT: u64 = 64 << 20;

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
    tx: mpsc::Sender<(Duration, Event)>,
    task: tokio::task::JoinHandle<Result<RecordingStatus>>,
    started: tokio::time::Instant,
}

impl Recorder {
    /// Starts recording `session` into `store`.
    pub fn start(store: LocalDir, session: &ExecSession) -> Self {
        let st = session.status.clone().unwrap_or_default();
        let facts = SessionFacts {
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
        };
        let session_ref = SessionRef {
            namespace: facts.namespace.clone(),
            name: facts.name.clone(),
            uid: facts.uid.clone(),
        };
        let timestamp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let header = Header::new(facts, timestamp, None);
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(store, prefix(session), session_ref, header, rx));
        Recorder {
            tx,
            task,
            started: tokio::time::Instant::now(),
        }
    }

    /// Records an event now. Waits when the recorder is behind (backpressure).
    pub async fn record(&self, ev: Event) {
        let at = self.started.elapsed();
        if self.tx.send((at, ev)).await.is_err() {
            warn!("the recorder stopped early; see its error when the session ends");
        }
    }

    /// Ends the recording: flushes, seals, and returns what goes into the session's status.
    pub async fn finish(self) -> Result<RecordingStatus> {
        drop(self.tx);
        self.task.await.context("the recorder task panicked")?
    }
}

async fn run(
    store: LocalDir,
    prefix: String,
    session: SessionRef,
    header: Header,
    mut rx: mpsc::Receiver<(Duration, Event)>,
) -> Result<RecordingStatus> {
    let (mut writer, head_line) = CastWriter::new(&header);
    let mut seg = Segmenter::new(SegmentLimits::default());
    seg.push(head_line.as_bytes(), 0);
    let mut metas: Vec<SegmentMeta> = Vec::new();
    let mut buf = Vec::new();
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last = Duration::ZERO;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some((at, ev)) => {
                    last = at;
                    buf.clear();
                    writer.event(at, &ev, &mut buf);
                    let micros = micros(at);
                    seg.push(&buf, micros);
                    if seg.should_cut(micros) {
                        write_cut(&store, &prefix, &mut seg, &mut metas).await?;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if seg.should_cut(micros(started.elapsed())) {
                    write_cut(&store, &prefix, &mut seg, &mut metas).await?;
                }
            }
        }
    }
    buf.clear();
    writer.finish(last, &mut buf);
    seg.push(&buf, micros(last));
    if let Some((meta, bytes)) = seg.finish() {
        write_segment(&store, &prefix, &meta, bytes).await?;
        metas.push(meta);
    }
    let count = metas.len();
    let manifest = chain::seal(session, metas, chrono::Utc::now().to_rfc3339())
        .map_err(|e| anyhow::anyhow!("sealing the recording: {e}"))?;
    let key = format!("{prefix}/{}", chain::MANIFEST_NAME);
    store
        .put(&key, serde_json::to_vec_pretty(&manifest)?)
        .await?;
    Ok(RecordingStatus {
        uri: Some(store.uri(&key)),
        format: Some("asciicast-v3".into()),
        bytes: i64::try_from(manifest.total_bytes).ok(),
        sha256: Some(manifest.head.clone()),
        segments: i64::try_from(count).ok(),
        interrupted: false,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn write_cut(
    store: &LocalDir,
    prefix: &str,
    seg: &mut Segmenter,
    metas: &mut Vec<SegmentMeta>,
) -> Result<()> {
    if let Some((meta, bytes)) = seg.cut() {
        write_segment(store, prefix, &meta, bytes).await?;
        metas.push(meta);
    }
    Ok(())
}

async fn write_segment(
    store: &LocalDir,
    prefix: &str,
    meta: &SegmentMeta,
    bytes: Vec<u8>,
) -> Result<()> {
    store
        .put(
            &format!("{prefix}/{}", chain::segment_name(meta.index)),
            bytes,
        )
        .await?;
    store
        .put(
            &format!("{prefix}/{}", chain::sidecar_name(meta.index)),
            serde_json::to_vec(meta)?,
        )
        .await
}

/// Reads a sealed recording back, verifying every segment against the manifest and the chain
/// head recorded in the session's status. Returns the cast bytes.
pub async fn read_verified(store: &LocalDir, session: &ExecSession) -> Result<Vec<u8>, String> {
    let prefix = prefix(session);
    let head = session
        .status
        .as_ref()
        .and_then(|s| s.recording.as_ref())
        .and_then(|r| r.sha256.clone())
        .ok_or("the session has no recording yet")?;
    let manifest_bytes = store
        .get(&format!("{prefix}/{}", chain::MANIFEST_NAME), MAX_OBJECT)
        .await
        .map_err(|e| format!("reading the manifest: {e:#}"))?;
    let manifest: chain::Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| format!("the manifest is unreadable: {e}"))?;
    let mut verifier = chain::Verifier::new(&manifest, Some(&head)).map_err(|e| e.to_string())?;
    let mut cast = Vec::new();
    for meta in &manifest.segments {
        let bytes = store
            .get(
                &format!("{prefix}/{}", chain::segment_name(meta.index)),
                MAX_OBJECT,
            )
            .await
            .map_err(|e| format!("reading segment {}: {e:#}", meta.index))?;
        verifier
            .segment(meta.index, &bytes, None)
            .map_err(|e| e.to_string())?;
        cast.extend_from_slice(&bytes);
    }
    verifier.finish().map_err(|e| e.to_string())?;
    Ok(cast)
}
