//! How a recording is stored: the cast byte stream ([`super::cast`]) cut into segments, each
//! segment's SHA-256 chained to the previous one, the whole sealed by a manifest; and how a
//! stored recording is verified. Pure: no storage, no clock (times are passed in).
//!
//! # Layout
//!
//! ```text
//! seg-000000.cast  seg-000000.json
//! seg-000001.cast  seg-000001.json
//! ...
//! manifest.json
//! ```
//!
//! A segment file (`seg-NNNNNN.cast`) is a slice of the cast stream that always ends at the end
//! of a line, stored as it is or, when its sidecar says `"encoding": "zstd"`, as one zstd frame
//! of it (what the operator writes: [`Segmenter::zstd`]). So `zstdcat -f seg-*.cast` (which
//! passes plain segments through) is the recording, playable by asciinema, and every prefix of
//! the segments is a valid (shorter) recording. Nothing about the chain is written
//! inside the cast stream, where it would break players. The chain lives beside it: each
//! segment's [`SegmentMeta`] is written as `seg-NNNNNN.json` once the segment itself is stored
//! (so a crash leaves at most the newest segment without its sidecar), and [`Manifest`] is
//! written as `manifest.json` when the recording is sealed.
//!
//! # The chain
//!
//! For segment `n` with bytes `B_n` (as stored: compressed, for a zstd segment, so a recording
//! is verified without decompressing it, and decompressed only to be read):
//!
//! ```text
//! sha256_n       = SHA-256(B_n)
//! prev_sha256_n  = sha256_{n-1}                 (64 zeros for n = 0)
//! chain_sha256_n = SHA-256(chain_{n-1} || sha256_n)  over the raw 32-byte digests,
//!                                                     chain_{-1} = 32 zero bytes
//! ```
//!
//! The manifest's `head` is the last `chain_sha256`: it commits to every byte of every segment
//! and to their order. The operator also publishes it in the ExecSession's status
//! (`recording.sha256`), outside the storage, so that a recording rewritten together with its
//! manifest is still caught when verified against the session ([`verify`]'s `expected_head`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `format` of every manifest this module writes.
pub const FORMAT: &str = "aexec-recording/v1";
/// `cast` of every manifest this module writes: the segments' concatenation format.
pub const CAST_FORMAT: &str = "asciicast-v3";
/// The manifest's file name.
pub const MANIFEST_NAME: &str = "manifest.json";
/// The "previous" digest of segment 0.
pub const ZERO_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Default segment size limit: a segment is cut once it holds this many bytes.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// Default segment age limit: a segment is cut this long after its first byte.
pub const DEFAULT_MAX_AGE_MICROS: u64 = 2_000_000;
/// The most cast bytes one segment may decompress to: a segment is cut at `max_bytes` plus
/// one event, which the cast writer bounds well below this. A segment that says more, or
/// decompresses to more, is refused ([`VerifyError::Undecodable`]): reading a recording never
/// allocates more than this for one segment.
pub const MAX_SEGMENT_CAST_BYTES: u64 = 64 << 20;

/// How a segment file is stored.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One zstd frame of the segment's cast bytes.
    Zstd,
}

/// `seg-NNNNNN.cast`: the file holding segment `index` of the cast.
pub fn segment_name(index: u64) -> String {
    format!("seg-{index:06}.cast")
}

/// What a segment holds besides the cast. A copy (`kubectl aexec cp`) keeps the files it moved
/// in the same chain as its cast, in their own format rather than inside the cast: the tar
/// stream itself, cut into segments in order, then one segment listing its files
/// ([`crate::transfer::FileList`]). So the chain's head, which the session's status and signed
/// record hold, commits to every byte copied and to the list.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// A slice of the copy's tar stream (`seg-NNNNNN.tar`).
    Tar,
    /// The copy's file list, as JSON (`seg-NNNNNN.files.json`).
    Files,
}

/// The file holding segment `index` with `content` (`None`: cast).
pub fn content_file_name(index: u64, content: Option<Content>) -> String {
    match content {
        None => segment_name(index),
        Some(Content::Tar) => format!("seg-{index:06}.tar"),
        Some(Content::Files) => format!("seg-{index:06}.files.json"),
    }
}

/// `seg-NNNNNN.json`: the sidecar holding segment `index`'s [`SegmentMeta`].
pub fn sidecar_name(index: u64) -> String {
    format!("seg-{index:06}.json")
}

/// What a file of a recording is, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordingFile {
    /// `seg-NNNNNN.cast`, `.tar` or `.files.json`.
    Segment(u64),
    /// `seg-NNNNNN.json`.
    Sidecar(u64),
    /// `manifest.json`.
    Manifest,
}

/// Recognises the names this module gives files; anything else is `None`.
pub fn parse_file_name(name: &str) -> Option<RecordingFile> {
    if name == MANIFEST_NAME {
        return Some(RecordingFile::Manifest);
    }
    let rest = name.strip_prefix("seg-")?;
    let (digits, ext) = rest.split_once('.')?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: u64 = digits.parse().ok()?;
    // Exactly the name `segment_name` gives: no extra leading zeros.
    if format!("{index:06}") != digits {
        return None;
    }
    match ext {
        "cast" | "tar" | "files.json" => Some(RecordingFile::Segment(index)),
        "json" => Some(RecordingFile::Sidecar(index)),
        _ => None,
    }
}

/// One segment's facts: its size, its digest, its link to the previous segment and its chain
/// value. Written as the segment's sidecar and repeated in the manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SegmentMeta {
    /// Position in the recording, from 0.
    pub index: u64,
    /// Size of the segment file.
    pub bytes: u64,
    /// SHA-256 (lowercase hex) of the segment file.
    pub sha256: String,
    /// `sha256` of the previous segment; [`ZERO_SHA256`] for segment 0.
    pub prev_sha256: String,
    /// SHA-256 of the previous segment's `chain_sha256` followed by this segment's `sha256`
    /// (raw digests; 32 zero bytes before segment 0).
    pub chain_sha256: String,
    /// Time of the first event written into the segment, since the session started.
    pub first_event_at_micros: u64,
    /// Time of the last event written into the segment, since the session started.
    pub last_event_at_micros: u64,
    /// How the file is encoded; absent for plain cast bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The size of the cast bytes the file decodes to, for an encoded segment (of the tar or
    /// list bytes, for a segment with `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cast_bytes: Option<u64>,
    /// What the segment holds, when it is not cast (a copy's tar stream or file list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

impl SegmentMeta {
    /// The segment's cast bytes, from its stored bytes (already verified against this meta):
    /// borrowed for a plain segment, decompressed (bounded by `cast_bytes` and
    /// [`MAX_SEGMENT_CAST_BYTES`]) for a zstd one.
    pub fn decode<'a>(&self, stored: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, VerifyError> {
        let Some(Encoding::Zstd) = self.encoding else {
            return Ok(std::borrow::Cow::Borrowed(stored));
        };
        let undecodable = |why: String| VerifyError::Undecodable {
            index: self.index,
            why,
        };
        let want = self
            .cast_bytes
            .ok_or_else(|| undecodable("its meta gives no cast_bytes".into()))?;
        if want > MAX_SEGMENT_CAST_BYTES {
            return Err(undecodable(format!(
                "it claims {want} bytes of cast, more than a segment may hold ({MAX_SEGMENT_CAST_BYTES})"
            )));
        }
        // Into one buffer of the claimed size plus a byte, so that a frame longer than it says
        // is caught, not truncated. One pass, no window buffer: the claim, at most
        // MAX_SEGMENT_CAST_BYTES, is the whole memory a segment's decoding takes.
        let out = zstd::bulk::decompress(stored, want as usize + 1)
            .map_err(|e| undecodable(format!("it is not a valid zstd frame: {e}")))?;
        if out.len() as u64 != want {
            return Err(undecodable(format!(
                "it decompresses to {} bytes, its meta says {want}",
                out.len()
            )));
        }
        Ok(std::borrow::Cow::Owned(out))
    }

    /// The size of the segment's bytes decoded: `cast_bytes` when encoded, else its file's
    /// size.
    pub fn cast_len(&self) -> u64 {
        self.cast_bytes.unwrap_or(self.bytes)
    }

    /// Whether the segment is part of the cast (not a copy's tar stream or file list).
    pub fn is_cast(&self) -> bool {
        self.content.is_none()
    }

    /// The segment's file name.
    pub fn file_name(&self) -> String {
        content_file_name(self.index, self.content)
    }

    /// The meta of the segment that follows `prev` (or of segment 0) and holds `bytes`. The
    /// storage layer uses it for a segment found without its sidecar after a crash.
    pub fn compute(
        prev: Option<&SegmentMeta>,
        bytes: &[u8],
        first_event_at_micros: u64,
        last_event_at_micros: u64,
    ) -> Result<SegmentMeta, VerifyError> {
        let (index, prev_sha, prev_chain) = match prev {
            None => (0, [0; 32], [0; 32]),
            Some(p) => (
                p.index
                    .checked_add(1)
                    .ok_or(VerifyError::LastIndex { index: p.index })?,
                digest(p.index, "sha256", &p.sha256)?,
                digest(p.index, "chain_sha256", &p.chain_sha256)?,
            ),
        };
        Ok(link(
            index,
            bytes,
            &prev_sha,
            &prev_chain,
            first_event_at_micros,
            last_event_at_micros,
        ))
    }

    /// Checks that `bytes` are still this segment (its SHA-256 and size): for a second read of
    /// a recording whose chain [`Verifier`] already checked, such as while streaming it.
    pub fn check(&self, bytes: &[u8]) -> Result<(), VerifyError> {
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != self.sha256 {
            return Err(VerifyError::Altered {
                index: self.index,
                actual,
                recorded: self.sha256.clone(),
            });
        }
        if bytes.len() as u64 != self.bytes {
            return Err(VerifyError::Resized {
                index: self.index,
                actual: bytes.len() as u64,
                recorded: self.bytes,
            });
        }
        Ok(())
    }
}

fn link(
    index: u64,
    bytes: &[u8],
    prev_sha: &[u8; 32],
    prev_chain: &[u8; 32],
    first_event_at_micros: u64,
    last_event_at_micros: u64,
) -> SegmentMeta {
    let sha: [u8; 32] = Sha256::digest(bytes).into();
    link_hashed(
        index,
        bytes.len(),
        &sha,
        prev_sha,
        prev_chain,
        (first_event_at_micros, last_event_at_micros),
    )
}

/// [`link`] for a segment whose SHA-256 is already known: a segment is hashed once (hashing
/// is the largest single cost of recording a bulk stream, `docs/performance.md`).
fn link_hashed(
    index: u64,
    len: usize,
    sha: &[u8; 32],
    prev_sha: &[u8; 32],
    prev_chain: &[u8; 32],
    (first_event_at_micros, last_event_at_micros): (u64, u64),
) -> SegmentMeta {
    SegmentMeta {
        index,
        bytes: len as u64,
        sha256: hex::encode(sha),
        prev_sha256: hex::encode(prev_sha),
        chain_sha256: hex::encode(chain(prev_chain, sha)),
        first_event_at_micros,
        last_event_at_micros,
        encoding: None,
        cast_bytes: None,
        content: None,
    }
}

fn chain(prev_chain: &[u8; 32], sha: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_chain);
    h.update(sha);
    h.finalize().into()
}

/// Decodes a lowercase hex SHA-256 of segment `index`'s `field`.
fn digest(index: u64, field: &'static str, value: &str) -> Result<[u8; 32], VerifyError> {
    let mut out = [0u8; 32];
    let canonical = value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !canonical || hex::decode_to_slice(value, &mut out).is_err() {
        return Err(VerifyError::MalformedDigest {
            index,
            field,
            value: value.chars().take(80).collect(),
        });
    }
    Ok(out)
}

/// When to cut a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentLimits {
    /// Cut once the segment holds this many bytes.
    pub max_bytes: usize,
    /// Cut this long after the segment's first byte.
    pub max_age_micros: u64,
}

impl Default for SegmentLimits {
    fn default() -> Self {
        SegmentLimits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_age_micros: DEFAULT_MAX_AGE_MICROS,
        }
    }
}

/// Where the segment being written has its whole lines, and when its bytes came: the
/// bookkeeping of cutting at line boundaries, without the bytes (pure). [`Segmenter`] keeps the
/// bytes in memory; the operator keeps them in a file and uses this alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lines {
    /// Bytes in the segment.
    len: usize,
    /// Length of its prefix that ends with a newline.
    complete: usize,
    /// When its first byte was pushed.
    first_at: Option<u64>,
    /// When the bytes up to `complete` were pushed (the last of them).
    complete_at: u64,
    /// When the last bytes were pushed.
    last_at: u64,
}

/// A cut: the segment's first `len` bytes, written from `first` to `last` (microseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    pub len: usize,
    pub first: u64,
    pub last: u64,
}

impl Lines {
    /// Notes `bytes` appended, written from `first_micros` to `last_micros`.
    pub fn pushed(&mut self, bytes: &[u8], first_micros: u64, last_micros: u64) {
        if bytes.is_empty() {
            return;
        }
        if self.first_at.is_none() {
            self.first_at = Some(first_micros);
        }
        self.last_at = last_micros;
        if let Some(nl) = bytes.iter().rposition(|&b| b == b'\n') {
            self.complete = self.len + nl + 1;
            self.complete_at = last_micros;
        }
        self.len += bytes.len();
    }

    /// Whether pushing `more` bytes would take a segment that ends with a whole line past
    /// `max_bytes`: cut it first, and no segment ever grows beyond `max_bytes` plus one event.
    pub fn would_overflow(&self, more: usize, limits: &SegmentLimits) -> bool {
        self.complete > 0 && self.complete == self.len && self.len + more > limits.max_bytes
    }

    /// Whether the segment should be cut now: it holds at least one whole line and is either
    /// `max_bytes` long or `max_age` old.
    pub fn should_cut(&self, now_micros: u64, limits: &SegmentLimits) -> bool {
        if self.complete == 0 {
            return false;
        }
        let old = self
            .first_at
            .is_some_and(|first| now_micros.saturating_sub(first) >= limits.max_age_micros);
        self.len >= limits.max_bytes || old
    }

    /// Cuts after the last whole line; what follows it starts the next segment. `None` when
    /// there is no whole line.
    pub fn cut(&mut self) -> Option<Cut> {
        if self.complete == 0 {
            return None;
        }
        let cut = Cut {
            len: self.complete,
            first: self.first_at.unwrap_or(self.complete_at),
            last: self.complete_at,
        };
        self.len -= self.complete;
        self.complete = 0;
        self.first_at = (self.len > 0).then_some(self.last_at);
        Some(cut)
    }

    /// Cuts everything, a partial last line included. `None` when nothing is left.
    pub fn finish(&mut self) -> Option<Cut> {
        if self.len == 0 {
            return None;
        }
        let cut = Cut {
            len: self.len,
            first: self.first_at.unwrap_or(self.last_at),
            last: self.last_at,
        };
        *self = Lines::default();
        Some(cut)
    }

    /// Bytes in the segment.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The chain so far: links each stored segment to the ones before it (pure).
#[derive(Clone, Debug, Default)]
pub struct Chain {
    next_index: u64,
    prev_sha: [u8; 32],
    prev_chain: [u8; 32],
    total_bytes: u64,
    cast_total: u64,
}

impl Chain {
    /// The meta of the next segment, stored as `stored`: `cast_len` is its length before
    /// compression when it is a zstd frame, `content` says what it holds when it is not cast.
    pub fn link(
        &mut self,
        stored: &[u8],
        compressed_from: Option<u64>,
        content: Option<Content>,
        (first, last): (u64, u64),
    ) -> SegmentMeta {
        self.link_digest(
            Sha256::digest(stored).into(),
            stored.len(),
            compressed_from,
            content,
            (first, last),
        )
    }

    /// [`Chain::link`] for stored bytes already hashed (`sha` of `len` bytes).
    pub fn link_digest(
        &mut self,
        sha: [u8; 32],
        len: usize,
        compressed_from: Option<u64>,
        content: Option<Content>,
        times: (u64, u64),
    ) -> SegmentMeta {
        let mut meta = link_hashed(
            self.next_index,
            len,
            &sha,
            &self.prev_sha,
            &self.prev_chain,
            times,
        );
        if let Some(cast_len) = compressed_from {
            meta.encoding = Some(Encoding::Zstd);
            meta.cast_bytes = Some(cast_len);
        }
        meta.content = content;
        self.prev_sha = sha;
        self.prev_chain = chain(&self.prev_chain, &self.prev_sha);
        self.next_index += 1;
        self.total_bytes += len as u64;
        if content.is_none() {
            self.cast_total += compressed_from.unwrap_or(len as u64);
        }
        meta
    }

    /// Segments linked so far.
    pub fn segments(&self) -> u64 {
        self.next_index
    }

    /// Bytes in the segments linked so far, as stored.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Cast bytes in the segments linked so far (before compression).
    pub fn cast_bytes(&self) -> u64 {
        self.cast_total
    }

    /// The chain value of the last segment ([`ZERO_SHA256`] before the first).
    pub fn head(&self) -> String {
        hex::encode(self.prev_chain)
    }
}

/// Cuts the cast byte stream into chained segments, at line boundaries only, holding the
/// segment being written in memory.
///
/// Push the output of each [`super::cast::CastWriter::event`] call whole (so that the lines of
/// one event, a stderr tag and its output for instance, never straddle two segments), then ask
/// [`Segmenter::should_cut`] and [`Segmenter::cut`]. Done so, memory is bounded by `max_bytes`
/// plus one event's lines, which the writer bounds. The segmenter keeps no list of metas: the
/// caller stores each sidecar and collects the metas for [`seal`].
#[derive(Debug)]
pub struct Segmenter {
    limits: SegmentLimits,
    buf: Vec<u8>,
    lines: Lines,
    chain: Chain,
    /// Store segments as zstd frames at this level.
    zstd: Option<i32>,
}

impl Segmenter {
    pub fn new(limits: SegmentLimits) -> Self {
        Segmenter {
            limits,
            buf: Vec::new(),
            lines: Lines::default(),
            chain: Chain::default(),
            zstd: None,
        }
    }

    /// Cut segments are zstd frames at `level` (1, the fastest standard level, is what the
    /// operator uses: docs/performance.md), hashed and chained as stored.
    pub fn zstd(mut self, level: i32) -> Self {
        self.zstd = Some(level);
        self
    }

    /// Adds cast bytes written at `at_micros` (time since the session started).
    pub fn push(&mut self, bytes: &[u8], at_micros: u64) {
        self.push_span(bytes, at_micros, at_micros);
    }

    /// [`Segmenter::push`] for the lines of several events written from `first_micros` to
    /// `last_micros`, pushed at once.
    pub fn push_span(&mut self, bytes: &[u8], first_micros: u64, last_micros: u64) {
        self.lines.pushed(bytes, first_micros, last_micros);
        self.buf.extend_from_slice(bytes);
    }

    /// Whether pushing `more` bytes would take a segment that ends with a whole line past
    /// `max_bytes`: cut it first, and no segment's buffer ever grows (or doubles its
    /// allocation) beyond `max_bytes` plus one event.
    pub fn would_overflow(&self, more: usize) -> bool {
        self.lines.would_overflow(more, &self.limits)
    }

    /// Whether the current segment should be cut now: it holds at least one whole line and is
    /// either `max_bytes` long or `max_age` old.
    pub fn should_cut(&self, now_micros: u64) -> bool {
        self.lines.should_cut(now_micros, &self.limits)
    }

    /// Cuts the current segment after its last whole line: returns its bytes and meta (store
    /// the bytes, then the meta as its sidecar) and starts the next segment with whatever
    /// partial line remains. `None` when there is no whole line to cut.
    pub fn cut(&mut self) -> Option<(SegmentMeta, Vec<u8>)> {
        let cut = self.lines.cut()?;
        let rest = self.buf.split_off(cut.len);
        let bytes = std::mem::replace(&mut self.buf, rest);
        Some(self.emit(bytes, None, cut.first, cut.last))
    }

    /// Cuts everything left at the end of the recording, a partial last line included (the
    /// writer never leaves one; bytes are never dropped). `None` when nothing is left.
    pub fn finish(&mut self) -> Option<(SegmentMeta, Vec<u8>)> {
        let cut = self.lines.finish()?;
        let bytes = std::mem::take(&mut self.buf);
        Some(self.emit(bytes, None, cut.first, cut.last))
    }

    /// Chains on a segment that is not cast (a copy's tar bytes or file list), between the
    /// cast's segments: it takes the next index; the cast's buffered bytes wait for theirs.
    /// Stored compressed like the cast's segments.
    pub fn emit_content(
        &mut self,
        bytes: Vec<u8>,
        content: Content,
        first: u64,
        last: u64,
    ) -> (SegmentMeta, Vec<u8>) {
        self.emit(bytes, Some(content), first, last)
    }

    /// The stored form of a cut segment (compressed if asked) and its meta, chained on.
    fn emit(
        &mut self,
        cast: Vec<u8>,
        content: Option<Content>,
        first: u64,
        last: u64,
    ) -> (SegmentMeta, Vec<u8>) {
        let cast_len = cast.len() as u64;
        // Compressing a buffer in memory fails only on allocation failure or a bad level; the
        // segment is then stored as it is, which readers handle the same.
        let (bytes, compressed_from) = match self
            .zstd
            .and_then(|level| zstd::bulk::compress(&cast, level).ok())
        {
            Some(z) => (z, Some(cast_len)),
            None => (cast, None),
        };
        let meta = self
            .chain
            .link(&bytes, compressed_from, content, (first, last));
        (meta, bytes)
    }

    /// Bytes waiting in the current segment.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Segments cut so far.
    pub fn segments(&self) -> u64 {
        self.chain.segments()
    }

    /// Bytes in the segments cut so far, as stored.
    pub fn total_bytes(&self) -> u64 {
        self.chain.total_bytes()
    }

    /// Cast bytes in the segments cut so far (before compression).
    pub fn cast_bytes(&self) -> u64 {
        self.chain.cast_bytes()
    }

    /// The chain value of the last segment cut ([`ZERO_SHA256`] before the first).
    pub fn head(&self) -> String {
        self.chain.head()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct SessionRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// `manifest.json`: the sealed list of segments and the head of their chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// [`CAST_FORMAT`].
    pub cast: String,
    pub session: SessionRef,
    /// Every segment, in order.
    pub segments: Vec<SegmentMeta>,
    /// Sum of the segments' sizes.
    pub total_bytes: u64,
    /// The last segment's `chain_sha256` ([`ZERO_SHA256`] without segments).
    pub head: String,
    /// When the recording was sealed (RFC 3339).
    pub sealed_at: String,
    /// Sealed after an interruption (operator crash, lost stream), from the sidecars found,
    /// rather than at the end of the session.
    pub interrupted: bool,
    /// Why it was interrupted, and what was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Manifest {
    /// The size of the recording's cast (its cast segments decompressed).
    pub fn cast_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|m| m.is_cast())
            .map(SegmentMeta::cast_len)
            .sum()
    }
}

/// Seals a recording that ended normally. The metas must form a valid chain from segment 0.
pub fn seal(
    session: SessionRef,
    segments: Vec<SegmentMeta>,
    sealed_at: String,
) -> Result<Manifest, VerifyError> {
    let (total_bytes, head) = check_chain(&segments)?;
    Ok(Manifest {
        format: FORMAT.to_owned(),
        cast: CAST_FORMAT.to_owned(),
        session,
        segments,
        total_bytes,
        head: hex::encode(head),
        sealed_at,
        interrupted: false,
        reason: None,
    })
}

/// Seals an interrupted recording (after a crash) from the sidecars found on storage, in any
/// order. It keeps the longest run of segments from 0 whose sidecars chain correctly and says in
/// `reason` what it left out and why; the manifest is marked `interrupted`. A segment file found
/// without its sidecar can be given a meta with [`SegmentMeta::compute`] first.
pub fn seal_from_metas(
    session: SessionRef,
    mut metas: Vec<SegmentMeta>,
    sealed_at: String,
    reason: &str,
) -> Manifest {
    metas.sort_by_key(|m| m.index);
    let found = metas.len();
    let mut kept: Vec<SegmentMeta> = Vec::with_capacity(found);
    let mut prev_sha = [0u8; 32];
    let mut prev_chain = [0u8; 32];
    let mut stopped: Option<String> = None;
    for meta in metas {
        let expected = kept.len() as u64;
        if meta.index < expected {
            if kept.last() == Some(&meta) {
                continue;
            }
            // Which of the two is the real one cannot be told: neither is kept.
            stopped = Some(format!("two different sidecars for segment {}", meta.index));
            kept.pop();
            break;
        }
        if meta.index > expected {
            stopped = Some(format!(
                "segment {expected} ({}) has no sidecar",
                segment_name(expected)
            ));
            break;
        }
        match check_link(&meta, &prev_sha, &prev_chain) {
            Ok((sha, chained)) => {
                prev_sha = sha;
                prev_chain = chained;
                kept.push(meta);
            }
            Err(e) => {
                stopped = Some(e.to_string());
                break;
            }
        }
    }
    // Every kept meta was checked, so the last one's chain value is the head.
    let head = kept
        .last()
        .map_or_else(|| ZERO_SHA256.to_owned(), |m| m.chain_sha256.clone());
    // Saturating, as the verifier adds: sidecars can claim any size.
    let total_bytes = kept.iter().fold(0u64, |t, m| t.saturating_add(m.bytes));
    let mut why = reason.to_owned();
    let n = kept.len();
    let summary = match n {
        0 => "no segment could be kept".to_owned(),
        1 => "kept segment 0".to_owned(),
        _ => format!("kept segments 0 to {}", n - 1),
    };
    why.push_str(if why.is_empty() { "" } else { "; " });
    why.push_str(&summary);
    if let Some(stop) = stopped {
        let dropped = found.saturating_sub(n);
        why.push_str(&format!(
            "; left out {dropped} later sidecar{} because {stop}",
            if dropped == 1 { "" } else { "s" }
        ));
    }
    Manifest {
        format: FORMAT.to_owned(),
        cast: CAST_FORMAT.to_owned(),
        session,
        segments: kept,
        total_bytes,
        head,
        sealed_at,
        interrupted: true,
        reason: Some(why),
    }
}

/// Checks one meta against the previous segment's digest and chain value; returns its own.
fn check_link(
    meta: &SegmentMeta,
    prev_sha: &[u8; 32],
    prev_chain: &[u8; 32],
) -> Result<([u8; 32], [u8; 32]), VerifyError> {
    let sha = digest(meta.index, "sha256", &meta.sha256)?;
    let recorded_prev = digest(meta.index, "prev_sha256", &meta.prev_sha256)?;
    let recorded_chain = digest(meta.index, "chain_sha256", &meta.chain_sha256)?;
    if &recorded_prev != prev_sha {
        return Err(VerifyError::BrokenLink {
            index: meta.index,
            recorded: meta.prev_sha256.clone(),
            actual: hex::encode(prev_sha),
        });
    }
    let chained = chain(prev_chain, &sha);
    if recorded_chain != chained {
        return Err(VerifyError::BrokenChain {
            index: meta.index,
            recorded: meta.chain_sha256.clone(),
            computed: hex::encode(chained),
        });
    }
    Ok((sha, chained))
}

/// Checks that metas are numbered from 0 and chain correctly; returns the total size and head.
fn check_chain(metas: &[SegmentMeta]) -> Result<(u64, [u8; 32]), VerifyError> {
    let mut prev_sha = [0u8; 32];
    let mut prev_chain = [0u8; 32];
    let mut total = 0u64;
    for (position, meta) in metas.iter().enumerate() {
        let position = position as u64;
        if meta.index != position {
            return Err(VerifyError::Numbering {
                position,
                index: meta.index,
            });
        }
        (prev_sha, prev_chain) = check_link(meta, &prev_sha, &prev_chain)?;
        total = total.saturating_add(meta.bytes);
    }
    Ok((total, prev_chain))
}

/// Why a recording failed verification: which segment, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the manifest's format is {0:?}; this build verifies {FORMAT:?}")]
    Format(String),
    #[error("the manifest's cast format is {0:?}; this build verifies {CAST_FORMAT:?}")]
    CastFormat(String),
    #[error(
        "the manifest's entry {position} describes segment {index}: entries must be segments 0, 1, 2, ... in order"
    )]
    Numbering { position: u64, index: u64 },
    #[error("segment {index} has the highest possible number: no segment can follow it")]
    LastIndex { index: u64 },
    #[error("segment {index}: {field} {value:?} is not a lowercase hex SHA-256")]
    MalformedDigest {
        index: u64,
        field: &'static str,
        value: String,
    },
    #[error(
        "segment {index} ({}) does not follow the segment before it: it records the previous SHA-256 as {recorded}, but that segment's is {actual}",
        segment_name(*.index)
    )]
    BrokenLink {
        index: u64,
        recorded: String,
        actual: String,
    },
    #[error(
        "segment {index} ({}) has a wrong chain value: {recorded} is recorded, {computed} is computed from the segments before it",
        segment_name(*.index)
    )]
    BrokenChain {
        index: u64,
        recorded: String,
        computed: String,
    },
    #[error(
        "the manifest's head is {recorded}, but its segments chain to {computed}: the manifest was altered"
    )]
    Head { recorded: String, computed: String },
    #[error(
        "the manifest's head is {manifest}, but the session recorded {expected}: the recording was rewritten or belongs to another session"
    )]
    UnexpectedHead { manifest: String, expected: String },
    #[error(
        "the manifest's total is {recorded} bytes, but its segments add up to {computed} bytes"
    )]
    Total { recorded: u64, computed: u64 },
    #[error(
        "segment {index} ({}) was altered: its SHA-256 is {actual}, the manifest recorded {recorded}",
        segment_name(*.index)
    )]
    Altered {
        index: u64,
        actual: String,
        recorded: String,
    },
    #[error(
        "segment {index} ({}) was altered: it is {actual} bytes long, the manifest recorded {recorded}",
        segment_name(*.index)
    )]
    Resized {
        index: u64,
        actual: u64,
        recorded: u64,
    },
    #[error(
        "segment {index} ({}) holds the bytes of segment {holds} ({}): segments were reordered",
        segment_name(*.index),
        segment_name(*.holds)
    )]
    Reordered { index: u64, holds: u64 },
    #[error("segment {index} ({}) is missing", segment_name(*.index))]
    Missing { index: u64 },
    #[error(
        "segment {index} ({}) is not in the manifest, which lists {listed} segments: it was added after the recording was sealed",
        segment_name(*.index)
    )]
    Extra { index: u64, listed: u64 },
    #[error(
        "segment {index} ({}) was given after segment {after}: segments are verified once each, in order",
        segment_name(*.index)
    )]
    OutOfOrder { index: u64, after: u64 },
    #[error(
        "segment {index} ({}) cannot be read although its bytes are the ones recorded: {why}",
        segment_name(*.index)
    )]
    Undecodable { index: u64, why: String },
    #[error(
        "sidecar {} disagrees with the manifest: its {field} is {sidecar}, the manifest's is {manifest}",
        sidecar_name(*.index)
    )]
    Sidecar {
        index: u64,
        field: &'static str,
        sidecar: String,
        manifest: String,
    },
}

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: u64,
    pub total_bytes: u64,
    /// The verified head of the chain.
    pub head: String,
    pub interrupted: bool,
    pub reason: Option<String>,
    /// Time of the first and last events recorded, since the session started.
    pub first_event_at_micros: Option<u64>,
    pub last_event_at_micros: Option<u64>,
}

/// Verifies a stored recording segment by segment, so that segments can be streamed from
/// storage one at a time: [`Verifier::new`] checks the manifest, [`Verifier::segment`] each
/// segment in order, [`Verifier::finish`] that none is missing.
#[derive(Debug)]
pub struct Verifier<'m> {
    manifest: &'m Manifest,
    next: u64,
}

impl<'m> Verifier<'m> {
    /// Checks the manifest itself: its formats, the numbering and links of its segments, their
    /// chain, its head and total, and, when given, that its head is `expected_head` (the value
    /// the session's status recorded).
    pub fn new(manifest: &'m Manifest, expected_head: Option<&str>) -> Result<Self, VerifyError> {
        if manifest.format != FORMAT {
            return Err(VerifyError::Format(manifest.format.clone()));
        }
        if manifest.cast != CAST_FORMAT {
            return Err(VerifyError::CastFormat(manifest.cast.clone()));
        }
        let (total, head) = check_chain(&manifest.segments)?;
        let head = hex::encode(head);
        if manifest.head != head {
            return Err(VerifyError::Head {
                recorded: manifest.head.clone(),
                computed: head,
            });
        }
        if manifest.total_bytes != total {
            return Err(VerifyError::Total {
                recorded: manifest.total_bytes,
                computed: total,
            });
        }
        if let Some(expected) = expected_head
            && !expected.eq_ignore_ascii_case(&manifest.head)
        {
            return Err(VerifyError::UnexpectedHead {
                manifest: manifest.head.clone(),
                expected: expected.to_owned(),
            });
        }
        Ok(Verifier { manifest, next: 0 })
    }

    /// Checks the next stored segment: `index` is the number in its file name, `bytes` its
    /// content, `sidecar` its sidecar if one was found.
    pub fn segment(
        &mut self,
        index: u64,
        bytes: &[u8],
        sidecar: Option<&SegmentMeta>,
    ) -> Result<(), VerifyError> {
        let listed = self.manifest.segments.len() as u64;
        if index < self.next {
            return Err(VerifyError::OutOfOrder {
                index,
                after: self.next - 1,
            });
        }
        if index > self.next && self.next < listed {
            return Err(VerifyError::Missing { index: self.next });
        }
        let Some(meta) = usize::try_from(index)
            .ok()
            .and_then(|i| self.manifest.segments.get(i))
        else {
            return Err(VerifyError::Extra { index, listed });
        };
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != meta.sha256 {
            if let Some(other) = self.manifest.segments.iter().find(|m| m.sha256 == actual) {
                return Err(VerifyError::Reordered {
                    index,
                    holds: other.index,
                });
            }
            if bytes.len() as u64 != meta.bytes {
                return Err(VerifyError::Resized {
                    index,
                    actual: bytes.len() as u64,
                    recorded: meta.bytes,
                });
            }
            return Err(VerifyError::Altered {
                index,
                actual,
                recorded: meta.sha256.clone(),
            });
        }
        if bytes.len() as u64 != meta.bytes {
            return Err(VerifyError::Resized {
                index,
                actual: bytes.len() as u64,
                recorded: meta.bytes,
            });
        }
        if let Some(sidecar) = sidecar
            && let Some((field, s, m)) = first_difference(sidecar, meta)
        {
            return Err(VerifyError::Sidecar {
                index,
                field,
                sidecar: s,
                manifest: m,
            });
        }
        self.next = index + 1;
        Ok(())
    }

    /// Checks that every segment of the manifest was verified.
    pub fn finish(self) -> Result<VerifyReport, VerifyError> {
        let m = self.manifest;
        if self.next < m.segments.len() as u64 {
            return Err(VerifyError::Missing { index: self.next });
        }
        Ok(VerifyReport {
            segments: m.segments.len() as u64,
            total_bytes: m.total_bytes,
            head: m.head.clone(),
            interrupted: m.interrupted,
            reason: m.reason.clone(),
            first_event_at_micros: m.segments.first().map(|s| s.first_event_at_micros),
            last_event_at_micros: m.segments.last().map(|s| s.last_event_at_micros),
        })
    }
}

fn first_difference(a: &SegmentMeta, b: &SegmentMeta) -> Option<(&'static str, String, String)> {
    let fields: [(&'static str, String, String); 10] = [
        ("index", a.index.to_string(), b.index.to_string()),
        ("bytes", a.bytes.to_string(), b.bytes.to_string()),
        ("sha256", a.sha256.clone(), b.sha256.clone()),
        ("prev_sha256", a.prev_sha256.clone(), b.prev_sha256.clone()),
        (
            "chain_sha256",
            a.chain_sha256.clone(),
            b.chain_sha256.clone(),
        ),
        (
            "first_event_at_micros",
            a.first_event_at_micros.to_string(),
            b.first_event_at_micros.to_string(),
        ),
        (
            "last_event_at_micros",
            a.last_event_at_micros.to_string(),
            b.last_event_at_micros.to_string(),
        ),
        (
            "encoding",
            format!("{:?}", a.encoding),
            format!("{:?}", b.encoding),
        ),
        (
            "cast_bytes",
            format!("{:?}", a.cast_bytes),
            format!("{:?}", b.cast_bytes),
        ),
        (
            "content",
            format!("{:?}", a.content),
            format!("{:?}", b.content),
        ),
    ];
    fields.into_iter().find(|(_, x, y)| x != y)
}

/// One stored segment, for [`verify`].
#[derive(Clone, Copy, Debug)]
pub struct StoredSegment<'a> {
    /// The number in the file's name.
    pub index: u64,
    pub bytes: &'a [u8],
    pub sidecar: Option<&'a SegmentMeta>,
}

/// Verifies a whole stored recording: the manifest, then every segment in the order given
/// (list them by index), then that none is missing. `expected_head` is the head the session's
/// status recorded, when known.
pub fn verify(
    manifest: &Manifest,
    segments: &[StoredSegment<'_>],
    expected_head: Option<&str>,
) -> Result<VerifyReport, VerifyError> {
    let mut v = Verifier::new(manifest, expected_head)?;
    for s in segments {
        v.segment(s.index, s.bytes, s.sidecar)?;
    }
    v.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::cast::{CastReader, CastWriter, Event, Header, SessionFacts};

    fn session() -> SessionRef {
        SessionRef {
            namespace: "team-a".into(),
            name: "debug-1".into(),
            uid: "uid-1".into(),
        }
    }

    const SEALED: &str = "2026-01-02T03:04:05Z";

    /// The cast bytes of each write, with the time they were written.
    type Pushes = Vec<(Vec<u8>, u64)>;

    /// A recorded session: its events, and the cast bytes written for them.
    fn session_stream(n: usize) -> (Vec<(Duration, Event)>, Pushes) {
        let facts = SessionFacts {
            namespace: "team-a".into(),
            name: "debug-1".into(),
            uid: "uid-1".into(),
            command: vec!["sh".into()],
            ..SessionFacts::default()
        };
        let (mut w, head) = CastWriter::new(&Header::new(facts, 1_700_000_000, None));
        let mut pushes = vec![(head.into_bytes(), 0)];
        let mut events = Vec::new();
        for i in 0..n {
            let at = Duration::from_millis(100 * i as u64);
            let ev = match i % 4 {
                0 => Event::Output(format!("line {i} \u{1b}[1mbold\u{1b}[0m\n").into_bytes()),
                1 => Event::Error(format!("warn {i}\n").into_bytes()),
                2 => Event::Input(vec![b'a' + (i % 26) as u8, 0xff]),
                _ => Event::Output(vec![b'x'; 300]),
            };
            let mut out = Vec::new();
            w.event(at, &ev, &mut out);
            pushes.push((out, at.as_micros() as u64));
            events.push((at, ev));
        }
        let end = Duration::from_millis(100 * n as u64);
        let mut out = Vec::new();
        w.event(end, &Event::Exit(0), &mut out);
        pushes.push((out, end.as_micros() as u64));
        events.push((end, Event::Exit(0)));
        (events, pushes)
    }

    /// Segments a stream the way the recorder does: push, cut when due, finish.
    fn segment(
        pushes: &[(Vec<u8>, u64)],
        limits: SegmentLimits,
    ) -> (Vec<(SegmentMeta, Vec<u8>)>, Segmenter) {
        let mut s = Segmenter::new(limits);
        let mut out = Vec::new();
        for (bytes, at) in pushes {
            s.push(bytes, *at);
            if s.should_cut(*at) {
                out.extend(s.cut());
            }
            assert!(s.buffered() <= limits.max_bytes + 4096);
        }
        out.extend(s.finish());
        (out, s)
    }

    fn sealed(n: usize, limits: SegmentLimits) -> (Manifest, Vec<(SegmentMeta, Vec<u8>)>) {
        let (_, pushes) = session_stream(n);
        let (segs, _) = segment(&pushes, limits);
        let metas = segs.iter().map(|(m, _)| m.clone()).collect();
        (seal(session(), metas, SEALED.into()).unwrap(), segs)
    }

    fn small() -> SegmentLimits {
        SegmentLimits {
            max_bytes: 512,
            max_age_micros: 60_000_000,
        }
    }

    fn stored(segs: &[(SegmentMeta, Vec<u8>)]) -> Vec<StoredSegment<'_>> {
        segs.iter()
            .map(|(m, b)| StoredSegment {
                index: m.index,
                bytes: b,
                sidecar: Some(m),
            })
            .collect()
    }

    #[test]
    fn zstd_segments_verify_as_stored_and_decode_to_the_recording() {
        let (events, pushes) = session_stream(400);
        let limits = SegmentLimits {
            max_bytes: 4096,
            max_age_micros: 60_000_000,
        };
        let mut s = Segmenter::new(limits).zstd(1);
        let mut segs = Vec::new();
        for (bytes, at) in &pushes {
            s.push(bytes, *at);
            if s.should_cut(*at) {
                segs.extend(s.cut());
            }
        }
        segs.extend(s.finish());
        assert!(segs.len() > 3, "{}", segs.len());
        let metas: Vec<SegmentMeta> = segs.iter().map(|(m, _)| m.clone()).collect();
        let m = seal(session(), metas, SEALED.into()).unwrap();
        // The chain is over the stored (compressed) bytes: verified without decompressing.
        verify(&m, &stored(&segs), Some(&m.head)).unwrap();
        assert_eq!(m.total_bytes, s.total_bytes());
        assert_eq!(m.cast_bytes(), s.cast_bytes());
        assert!(
            m.total_bytes * 3 < m.cast_bytes(),
            "compressed {} of {}",
            m.total_bytes,
            m.cast_bytes()
        );
        let mut cast = Vec::new();
        for (meta, bytes) in &segs {
            assert_eq!(meta.encoding, Some(Encoding::Zstd));
            let plain = meta.decode(bytes).unwrap();
            assert_eq!(plain.len() as u64, meta.cast_bytes.unwrap());
            assert_eq!(
                plain.last(),
                Some(&b'\n'),
                "a segment ends with a whole line"
            );
            cast.extend_from_slice(&plain);
        }
        assert_eq!(CastReader::parse(&cast).unwrap().events, events);
        // The concatenated frames are one zstd stream of the whole recording (zstdcat).
        let all: Vec<u8> = segs.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(zstd::stream::decode_all(&all[..]).unwrap(), cast);
    }

    #[test]
    fn a_zstd_segment_that_lies_about_its_size_is_refused() {
        let mut s = Segmenter::new(SegmentLimits::default()).zstd(1);
        s.push(&[b'a'; 100_000], 0);
        s.push(b"\n", 1);
        let (meta, bytes) = s.finish().unwrap();
        assert_eq!(meta.decode(&bytes).unwrap().len(), 100_001);
        // Smaller than the frame holds: refused, never truncated; larger: refused too.
        for claimed in [100, 100_000, 100_002] {
            let m = SegmentMeta {
                cast_bytes: Some(claimed),
                ..meta.clone()
            };
            let e = m.decode(&bytes).unwrap_err();
            assert!(
                matches!(e, VerifyError::Undecodable { index: 0, .. }),
                "{e}"
            );
        }
        // A claim past the bound is refused before anything is allocated.
        let m = SegmentMeta {
            cast_bytes: Some(MAX_SEGMENT_CAST_BYTES + 1),
            ..meta.clone()
        };
        assert!(
            m.decode(&bytes)
                .unwrap_err()
                .to_string()
                .contains("more than a segment")
        );
        // Bytes that are not zstd.
        let e = meta.decode(b"not zstd at all").unwrap_err();
        assert!(e.to_string().contains("not a valid zstd frame"), "{e}");
        // A plain segment is its own cast.
        let plain = SegmentMeta {
            encoding: None,
            cast_bytes: None,
            ..meta
        };
        assert_eq!(&*plain.decode(b"x\n").unwrap(), b"x\n");
    }

    #[test]
    fn a_segment_is_checked_again_against_its_meta() {
        let (_, segs) = sealed(20, small());
        let (meta, bytes) = &segs[1];
        assert_eq!(meta.check(bytes), Ok(()));
        let mut changed = bytes.clone();
        changed[3] ^= 1;
        assert!(matches!(
            meta.check(&changed),
            Err(VerifyError::Altered { index: 1, .. })
        ));
        assert!(matches!(
            meta.check(&segs[2].1),
            Err(VerifyError::Altered { index: 1, .. })
        ));
        // A meta whose size is wrong but digest right (a forged sidecar) is caught too.
        let mut forged = meta.clone();
        forged.bytes += 1;
        assert!(matches!(
            forged.check(bytes),
            Err(VerifyError::Resized { index: 1, .. })
        ));
    }

    #[test]
    fn cutting_before_an_overflow_keeps_segments_within_the_limit() {
        let limits = SegmentLimits {
            max_bytes: 100,
            max_age_micros: u64::MAX,
        };
        let mut seg = Segmenter::new(limits);
        let line = [b'x'; 29].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let mut sizes = Vec::new();
        for i in 0..10u64 {
            if seg.would_overflow(line.len()) {
                sizes.push(seg.cut().expect("whole lines").0.bytes);
            }
            seg.push(&line, i);
        }
        // 30-byte lines: three fit in 100 bytes, the fourth goes to the next segment.
        assert_eq!(sizes, vec![90, 90, 90]);
        // A partial line is never cut off: no overflow cut then.
        seg.push(b"partial", 11);
        assert!(!seg.would_overflow(1000));
    }

    #[test]
    fn file_names() {
        assert_eq!(segment_name(3), "seg-000003.cast");
        assert_eq!(sidecar_name(1_234_567), "seg-1234567.json");
        assert_eq!(
            parse_file_name("seg-000003.cast"),
            Some(RecordingFile::Segment(3))
        );
        assert_eq!(
            parse_file_name("seg-1234567.json"),
            Some(RecordingFile::Sidecar(1_234_567))
        );
        assert_eq!(
            parse_file_name("manifest.json"),
            Some(RecordingFile::Manifest)
        );
        for bad in [
            "seg-3.cast",
            "seg-0000003.cast",
            "seg-00000a.cast",
            "seg-000003.txt",
            "x",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn cuts_by_size_at_line_boundaries() {
        let (_, pushes) = session_stream(200);
        let (segs, s) = segment(&pushes, small());
        assert!(segs.len() > 5);
        let mut concatenated = Vec::new();
        for (i, (meta, bytes)) in segs.iter().enumerate() {
            assert_eq!(meta.index, i as u64);
            assert_eq!(meta.bytes, bytes.len() as u64);
            assert!(bytes.ends_with(b"\n"));
            assert!(!bytes.is_empty());
            if i + 1 < segs.len() {
                assert!(bytes.len() >= small().max_bytes, "segment {i} cut early");
                // Cut right after the push that crossed the limit.
                assert!(bytes.len() < small().max_bytes + 1024);
            }
            concatenated.extend_from_slice(bytes);
        }
        let all: Vec<u8> = pushes.iter().flat_map(|(b, _)| b.clone()).collect();
        assert_eq!(concatenated, all);
        assert_eq!(s.total_bytes(), all.len() as u64);
        assert_eq!(s.segments(), segs.len() as u64);
        assert_eq!(s.head(), segs.last().unwrap().0.chain_sha256);
    }

    #[test]
    fn cuts_by_age() {
        let limits = SegmentLimits {
            max_bytes: 1 << 20,
            max_age_micros: 2_000_000,
        };
        let mut s = Segmenter::new(limits);
        assert!(!s.should_cut(10_000_000));
        s.push(b"[0.1, \"o\", \"a\"]\n", 1_000_000);
        assert!(!s.should_cut(1_000_000));
        s.push(b"[0.1, \"o\", \"b\"]\n", 2_500_000);
        assert!(!s.should_cut(2_999_999));
        assert!(s.should_cut(3_000_000));
        let (meta, bytes) = s.cut().unwrap();
        assert_eq!(bytes, b"[0.1, \"o\", \"a\"]\n[0.1, \"o\", \"b\"]\n");
        assert_eq!(
            (meta.first_event_at_micros, meta.last_event_at_micros),
            (1_000_000, 2_500_000)
        );
        // The next segment's age starts at its own first byte.
        assert!(!s.should_cut(10_000_000));
        assert!(s.cut().is_none());
        s.push(b"[0.1, \"o\", \"c\"]\n", 9_000_000);
        assert!(!s.should_cut(10_999_999));
        assert!(s.should_cut(11_000_000));
        let (meta, _) = s.cut().unwrap();
        assert_eq!(meta.index, 1);
        assert_eq!(meta.first_event_at_micros, 9_000_000);
    }

    #[test]
    fn never_cuts_inside_a_line() {
        let mut s = Segmenter::new(SegmentLimits {
            max_bytes: 8,
            max_age_micros: 1,
        });
        s.push(b"[0.1, \"o\"", 1);
        assert!(!s.should_cut(100));
        assert!(s.cut().is_none());
        s.push(b", \"a\"]\n[0.2, ", 2);
        assert!(s.should_cut(100));
        let (meta, bytes) = s.cut().unwrap();
        assert_eq!(bytes, b"[0.1, \"o\", \"a\"]\n");
        assert_eq!(meta.last_event_at_micros, 2);
        assert_eq!(s.buffered(), 6);
        assert!(!s.should_cut(100));
        s.push(b"\"o\", \"b\"]\n", 3);
        let (meta, bytes) = s.cut().unwrap();
        assert_eq!(bytes, b"[0.2, \"o\", \"b\"]\n");
        assert_eq!(
            (meta.first_event_at_micros, meta.last_event_at_micros),
            (2, 3)
        );
        assert!(s.finish().is_none());
        // A partial last line is kept, not dropped, at the very end.
        s.push(b"[0.3", 4);
        let (meta, bytes) = s.finish().unwrap();
        assert_eq!((meta.index, bytes.as_slice()), (2, &b"[0.3"[..]));
    }

    #[test]
    fn chain_values_follow_the_definition() {
        let (m, segs) = sealed(40, small());
        let mut prev_chain = [0u8; 32];
        let mut prev_sha = ZERO_SHA256.to_owned();
        for (meta, bytes) in &segs {
            let sha: [u8; 32] = Sha256::digest(bytes).into();
            assert_eq!(meta.sha256, hex::encode(sha));
            assert_eq!(meta.prev_sha256, prev_sha);
            let mut h = Sha256::new();
            h.update(prev_chain);
            h.update(sha);
            prev_chain = h.finalize().into();
            assert_eq!(meta.chain_sha256, hex::encode(prev_chain));
            prev_sha = meta.sha256.clone();
        }
        assert_eq!(m.head, hex::encode(prev_chain));
        // compute() gives the same metas as the segmenter.
        let mut prev: Option<SegmentMeta> = None;
        for (meta, bytes) in &segs {
            let c = SegmentMeta::compute(
                prev.as_ref(),
                bytes,
                meta.first_event_at_micros,
                meta.last_event_at_micros,
            )
            .unwrap();
            assert_eq!(&c, meta);
            prev = Some(c);
        }
    }

    #[test]
    fn verification_passes_and_the_concatenation_is_the_recording() {
        let (events, pushes) = session_stream(120);
        let (segs, _) = segment(&pushes, small());
        let metas = segs.iter().map(|(m, _)| m.clone()).collect();
        let m = seal(session(), metas, SEALED.into()).unwrap();
        let report = verify(&m, &stored(&segs), Some(&m.head.to_uppercase())).unwrap();
        assert_eq!(report.segments, segs.len() as u64);
        assert_eq!(report.head, m.head);
        assert!(!report.interrupted);
        assert_eq!(report.first_event_at_micros, Some(0));
        assert_eq!(report.last_event_at_micros, Some(12_000_000));

        let concatenated: Vec<u8> = segs.iter().flat_map(|(_, b)| b.clone()).collect();
        let rec = CastReader::parse(&concatenated).unwrap();
        assert_eq!(rec.events, events);
        assert_eq!(rec.header.aexec.uid, "uid-1");
        // Every prefix of the segments is a valid recording too.
        let mut prefix = Vec::new();
        for (_, b) in &segs {
            prefix.extend_from_slice(b);
            CastReader::parse(&prefix).unwrap();
        }
    }

    #[test]
    fn one_flipped_byte_is_found() {
        let (m, mut segs) = sealed(60, small());
        segs[3].1[17] ^= 0x01;
        let e = verify(&m, &stored(&segs), None).unwrap_err();
        let VerifyError::Altered {
            index,
            actual,
            recorded,
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(*index, 3);
        assert_eq!(
            e.to_string(),
            format!(
                "segment 3 (seg-000003.cast) was altered: its SHA-256 is {actual}, the manifest recorded {recorded}"
            )
        );
    }

    #[test]
    fn a_truncated_segment_is_found() {
        let (m, mut segs) = sealed(60, small());
        segs[2].1.pop();
        let e = verify(&m, &stored(&segs), None).unwrap_err();
        assert!(matches!(e, VerifyError::Resized { index: 2, .. }), "{e}");
        assert!(e.to_string().contains("seg-000002.cast"));
    }

    #[test]
    fn a_dropped_segment_is_found() {
        let (m, mut segs) = sealed(60, small());
        segs.remove(2);
        let e = verify(&m, &stored(&segs), None).unwrap_err();
        assert_eq!(e, VerifyError::Missing { index: 2 });
        assert_eq!(e.to_string(), "segment 2 (seg-000002.cast) is missing");

        // The last one too.
        let (m, mut segs) = sealed(60, small());
        segs.pop();
        let e = verify(&m, &stored(&segs), None).unwrap_err();
        assert_eq!(
            e,
            VerifyError::Missing {
                index: segs.len() as u64
            }
        );
    }

    #[test]
    fn swapped_segments_are_found() {
        let (m, mut segs) = sealed(60, small());
        let (a, b) = (segs[1].1.clone(), segs[2].1.clone());
        segs[1].1 = b;
        segs[2].1 = a;
        let e = verify(&m, &stored(&segs), None).unwrap_err();
        assert_eq!(e, VerifyError::Reordered { index: 1, holds: 2 });
        assert_eq!(
            e.to_string(),
            "segment 1 (seg-000001.cast) holds the bytes of segment 2 (seg-000002.cast): segments were reordered"
        );

        // Given out of order (file names and all) instead.
        let (m, segs) = sealed(60, small());
        let mut given = stored(&segs);
        given.swap(1, 2);
        let e = verify(&m, &given, None).unwrap_err();
        assert_eq!(e, VerifyError::Missing { index: 1 });
        let mut v = Verifier::new(&m, None).unwrap();
        v.segment(0, &segs[0].1, None).unwrap();
        v.segment(1, &segs[1].1, None).unwrap();
        let e = v.segment(0, &segs[0].1, None).unwrap_err();
        assert_eq!(e, VerifyError::OutOfOrder { index: 0, after: 1 });
    }

    #[test]
    fn an_appended_segment_is_found() {
        let (m, mut segs) = sealed(60, small());
        let last = segs.last().unwrap().0.clone();
        let extra = b"[0.1, \"o\", \"injected\"]\n".to_vec();
        let meta = SegmentMeta::compute(Some(&last), &extra, 0, 0).unwrap();
        segs.push((meta, extra));
        let e = verify(&m, &stored(&segs), None).unwrap_err();
        let listed = m.segments.len() as u64;
        assert_eq!(
            e,
            VerifyError::Extra {
                index: listed,
                listed
            }
        );
        assert!(
            e.to_string()
                .contains("added after the recording was sealed")
        );
    }

    #[test]
    fn a_wrong_manifest_is_found() {
        let (m, segs) = sealed(60, small());
        let mut bad = m.clone();
        bad.head = hex::encode([7u8; 32]);
        let e = verify(&bad, &stored(&segs), None).unwrap_err();
        assert!(matches!(e, VerifyError::Head { .. }), "{e}");
        assert!(e.to_string().contains("the manifest was altered"));

        // A manifest rewritten consistently (segment 1 replaced, chain recomputed) still
        // differs from the head the session recorded.
        let mut forged_segs = segs.clone();
        forged_segs[1].1[5] ^= 0x20;
        let mut metas: Vec<SegmentMeta> = Vec::new();
        for (meta, bytes) in &forged_segs {
            let c = SegmentMeta::compute(
                metas.last(),
                bytes,
                meta.first_event_at_micros,
                meta.last_event_at_micros,
            )
            .unwrap();
            metas.push(c);
        }
        let forged = seal(session(), metas, SEALED.into()).unwrap();
        let forged_stored: Vec<StoredSegment<'_>> = forged_segs
            .iter()
            .map(|(m, b)| StoredSegment {
                index: m.index,
                bytes: b,
                sidecar: None,
            })
            .collect();
        assert!(verify(&forged, &forged_stored, None).is_ok());
        let e = verify(&forged, &forged_stored, Some(&m.head)).unwrap_err();
        assert!(matches!(e, VerifyError::UnexpectedHead { .. }), "{e}");

        let mut bad = m.clone();
        bad.segments[2].sha256 = hex::encode([1u8; 32]);
        let e = verify(&bad, &stored(&segs), None).unwrap_err();
        assert!(
            matches!(e, VerifyError::BrokenChain { index: 2, .. }),
            "{e}"
        );

        let mut bad = m.clone();
        bad.segments[3].prev_sha256 = hex::encode([1u8; 32]);
        let e = verify(&bad, &stored(&segs), None).unwrap_err();
        assert!(matches!(e, VerifyError::BrokenLink { index: 3, .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("segment 3 (seg-000003.cast) does not follow")
        );

        let mut bad = m.clone();
        bad.segments.swap(1, 2);
        let e = verify(&bad, &stored(&segs), None).unwrap_err();
        assert_eq!(
            e,
            VerifyError::Numbering {
                position: 1,
                index: 2
            }
        );

        let mut bad = m.clone();
        bad.total_bytes += 1;
        assert!(matches!(
            verify(&bad, &stored(&segs), None),
            Err(VerifyError::Total { .. })
        ));

        let mut bad = m.clone();
        bad.segments[0].chain_sha256 = "XYZ".into();
        assert!(matches!(
            verify(&bad, &stored(&segs), None),
            Err(VerifyError::MalformedDigest {
                index: 0,
                field: "chain_sha256",
                ..
            })
        ));

        let mut bad = m.clone();
        bad.format = "aexec-recording/v2".into();
        assert!(matches!(
            verify(&bad, &stored(&segs), None),
            Err(VerifyError::Format(_))
        ));
    }

    #[test]
    fn a_sidecar_that_disagrees_is_found() {
        let (m, segs) = sealed(60, small());
        let mut side = segs[4].0.clone();
        side.last_event_at_micros += 1;
        let mut given = stored(&segs);
        given[4].sidecar = Some(&side);
        let e = verify(&m, &given, None).unwrap_err();
        assert_eq!(
            e,
            VerifyError::Sidecar {
                index: 4,
                field: "last_event_at_micros",
                sidecar: (segs[4].0.last_event_at_micros + 1).to_string(),
                manifest: segs[4].0.last_event_at_micros.to_string(),
            }
        );
        assert!(
            e.to_string()
                .starts_with("sidecar seg-000004.json disagrees")
        );
    }

    #[test]
    fn manifest_and_sidecars_serialise_strictly() {
        let (m, segs) = sealed(10, small());
        let json = serde_json::to_string_pretty(&m).unwrap();
        assert!(json.contains("\"format\": \"aexec-recording/v1\""));
        assert!(json.contains("\"cast\": \"asciicast-v3\""));
        assert!(json.contains("\"sealed_at\": \"2026-01-02T03:04:05Z\""));
        assert!(!json.contains("\"reason\""));
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        let side = serde_json::to_string(&segs[0].0).unwrap();
        assert!(side.contains(&format!("\"prev_sha256\":\"{ZERO_SHA256}\"")));
        assert_eq!(
            serde_json::from_str::<SegmentMeta>(&side).unwrap(),
            segs[0].0
        );
        let extra = side.replacen('{', "{\"trusted\":true,", 1);
        assert!(serde_json::from_str::<SegmentMeta>(&extra).is_err());
    }

    #[test]
    fn an_interrupted_recording_is_sealed_from_its_sidecars() {
        let (_, segs) = sealed(200, small());
        assert!(segs.len() > 7);
        let mut metas: Vec<SegmentMeta> = segs.iter().map(|(m, _)| m.clone()).collect();
        metas.reverse();
        let all = seal_from_metas(
            session(),
            metas.clone(),
            SEALED.into(),
            "operator restarted",
        );
        assert!(all.interrupted);
        assert_eq!(all.segments.len(), segs.len());
        assert_eq!(
            all.reason.as_deref(),
            Some(format!("operator restarted; kept segments 0 to {}", segs.len() - 1).as_str())
        );
        let report = verify(&all, &stored(&segs), None).unwrap();
        assert!(report.interrupted);

        // Segment 5's sidecar was never written: 0 to 4 are kept, and verify as such.
        let gap: Vec<SegmentMeta> = metas.iter().filter(|m| m.index != 5).cloned().collect();
        let m = seal_from_metas(session(), gap, SEALED.into(), "stream lost");
        assert_eq!(m.segments.len(), 5);
        assert_eq!(m.head, segs[4].0.chain_sha256);
        let later = segs.len() - 6;
        assert_eq!(
            m.reason.as_deref(),
            Some(
                format!(
                    "stream lost; kept segments 0 to 4; left out {later} later sidecars because segment 5 (seg-000005.cast) has no sidecar"
                )
                .as_str()
            )
        );
        verify(&m, &stored(&segs[..5]), None).unwrap();

        // A sidecar that does not chain ends the run too.
        let mut broken = metas.clone();
        let at = broken.iter().position(|m| m.index == 3).unwrap();
        broken[at].sha256 = hex::encode([9u8; 32]);
        let m = seal_from_metas(session(), broken, SEALED.into(), "");
        assert_eq!(m.segments.len(), 3);
        assert_eq!(m.head, segs[2].0.chain_sha256);
        assert!(
            m.reason
                .as_deref()
                .unwrap()
                .starts_with("kept segments 0 to 2; left out")
        );
        Verifier::new(&m, None).unwrap();

        // Duplicates of the same sidecar are harmless; conflicting ones are not trusted.
        let mut dup = metas.clone();
        dup.push(segs[0].0.clone());
        let m = seal_from_metas(session(), dup, SEALED.into(), "");
        assert_eq!(m.segments.len(), segs.len());
        let mut conflict = metas.clone();
        let mut other = segs[2].0.clone();
        other.last_event_at_micros += 1;
        conflict.push(other);
        let m = seal_from_metas(session(), conflict, SEALED.into(), "");
        assert_eq!(m.segments.len(), 2);
        Verifier::new(&m, None).unwrap();

        let none = seal_from_metas(session(), Vec::new(), SEALED.into(), "crashed");
        assert_eq!(none.head, ZERO_SHA256);
        assert_eq!(none.total_bytes, 0);
        verify(&none, &[], None).unwrap();
    }

    #[test]
    fn sidecars_claiming_huge_sizes_still_seal_a_manifest_that_verifies() {
        // Found by fuzzing (fuzz/corpus/chain/crash-sizes-overflow): sidecars whose sizes add up
        // past u64::MAX made seal_from_metas overflow (a panic in debug builds; in release a
        // wrapped total, and a manifest its own verifier refused).
        let (_, segs) = sealed(10, small());
        let mut metas: Vec<SegmentMeta> = segs.iter().map(|(m, _)| m.clone()).collect();
        metas[0].bytes = u64::MAX;
        metas[1].bytes = 7;
        let m = seal_from_metas(session(), metas, SEALED.into(), "");
        assert_eq!(m.segments.len(), segs.len());
        assert_eq!(m.total_bytes, u64::MAX);
        let mut v = Verifier::new(&m, None).unwrap();
        // The stored segments are not that long: verifying them says so.
        assert!(matches!(
            v.segment(0, &segs[0].1, None),
            Err(VerifyError::Resized { index: 0, .. })
        ));
    }

    #[test]
    fn no_meta_follows_the_highest_index() {
        // Found by fuzzing (fuzz/corpus/chain/crash-meta-after-u64-max): a sidecar claiming
        // index u64::MAX (a damaged or forged store) made compute() overflow: a panic in debug
        // builds, a segment numbered 0 in release builds.
        let (_, segs) = sealed(10, small());
        let mut last = segs[0].0.clone();
        last.index = u64::MAX;
        assert_eq!(
            SegmentMeta::compute(Some(&last), b"x\n", 0, 0),
            Err(VerifyError::LastIndex { index: u64::MAX })
        );
        last.index = u64::MAX - 1;
        let next = SegmentMeta::compute(Some(&last), b"x\n", 0, 0).unwrap();
        assert_eq!(next.index, u64::MAX);
    }

    #[test]
    fn seal_refuses_a_broken_chain() {
        let (_, segs) = sealed(30, small());
        let mut metas: Vec<SegmentMeta> = segs.iter().map(|(m, _)| m.clone()).collect();
        metas.remove(1);
        assert_eq!(
            seal(session(), metas, SEALED.into()).unwrap_err(),
            VerifyError::Numbering {
                position: 1,
                index: 2
            }
        );
    }
}
