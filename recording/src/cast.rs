//! The recording's event stream: asciicast v3 (<https://docs.asciinema.org/manual/asciicast/v3/>)
//! written and read back byte for byte, plus conversions for older players (v2) and for people
//! (a plain-text transcript), whole ([`to_v2`], [`to_text`]) or as the bytes arrive
//! ([`Converter`], same output, bounded memory). Pure: no I/O, no clock; times are passed in.
//!
//! # The file
//!
//! Newline-delimited JSON. Line 1 is the [`Header`]: the asciicast fields (`version` 3, `term`,
//! `timestamp`, `command`, `title`, `env`) plus our own facts under `"aexec"` ([`SessionFacts`]).
//! Every other line is an event `[interval, code, data]`: `interval` is the time since the
//! previous line in seconds, always written with exactly six decimals (whole microseconds, so a
//! reader summing them gets every absolute time back exactly), `code` a one-character string and
//! `data` a string. The standard codes are used as asciinema defines them: `o` output, `i`
//! input, `r` resize (`"COLSxROWS"`), `x` exit status (decimal), `m` marker. All lines written
//! for one [`CastWriter::event`] call carry that call's time: the first its interval, the others
//! `0.000000`.
//!
//! The format has two extension codes. The v3 specification says players and post-processors
//! ignore (or pass through) codes they do not know, and both asciinema's player and its CLI add
//! every line's interval to the clock whatever its code, so extension lines never shift the
//! timing of the lines around them. Both codes are a single character that is not a standard
//! one, because asciinema's CLI keeps only the first character of an unknown code when it
//! rewrites a file.
//!
//! ## Stderr: an `e` tag before an ordinary `o` line
//!
//! Text a non-tty command wrote to stderr is written as an ordinary `o` line immediately preceded
//! by the tag line `[interval, "e", ""]`, which applies to that one next line only:
//!
//! ```text
//! [0.120000, "e", ""]
//! [0.000000, "o", "grep: foo: No such file or directory\n"]
//! ```
//!
//! This keeps all three properties wanted: stderr is *visible* on playback, in order and in time
//! with stdout, exactly as the person at the terminal saw it (players skip the tag and render the
//! `o` line); *which bytes were stderr is exact* (every stderr byte follows a tag, no stdout byte
//! does); and the file is *plain asciicast v3* (one extension code, empty data). The rejected
//! alternatives each lose one property: a code of its own for stderr text is ignored by players,
//! so stderr would vanish from playback; a marker (`m`) per stderr chunk would flood the player's
//! chapter list and could not be told apart from real markers; a fourth array element is not v3
//! and breaks strict parsers. The tag comes *before* the output, not after it: a recording cut
//! short (a crash between two lines) can then lose a tag's output but never show stderr as
//! stdout. A tag left at the very end of a recording is therefore accepted and ignored; a tag
//! followed by anything but an `o` line is an error.
//!
//! ## Bytes that are not UTF-8: `b` lines with base64
//!
//! JSON strings are Unicode, but a command may write any bytes. Each chunk of a stream is split
//! into maximal runs of valid UTF-8, written as ordinary `o`/`i` lines (readable, playable,
//! greppable), and runs of bytes that are not UTF-8, written as
//!
//! ```text
//! [0.000000, "b", "o:/+7/"]
//! ```
//!
//! where the data is the stream (`o` stdout, `e` stderr, `i` stdin), a colon and the run's
//! bytes in standard base64 with padding. Nothing is escaped inside text, so a text line means
//! exactly its characters: output that happens to look like base64 or like a prefix is never
//! misread, which is why "base64:" inside `o` data is not used. Players ignore `b` lines, which
//! costs nothing on screen: invalid bytes have no glyph (a terminal would draw U+FFFD at best).
//! Output of 64 bytes or more that is mostly control characters without a short JSON escape
//! (NULs from `/dev/zero`, say: six bytes each as `\u0000`) is written as `b` runs too, since
//! base64 costs 4/3 and such bytes have no glyph to play. Input stays text: keystrokes like
//! Ctrl-C are short and are what a reviewer looks for. And a chunk of 64 bytes or more of any
//! stream that is binary (valid and invalid UTF-8 alternating every few bytes, as in a
//! compressed file) is one `b` run when that costs less than two thirds of the text lines and
//! runs it would otherwise be: random bytes took about six times their size as lines.
//! A character split across two chunks (the broker relays frames, not characters) is not
//! invalid: the writer keeps an incomplete trailing sequence (at most 3 bytes) per stream and
//! prepends it to that stream's next chunk, so the character is written whole, at the time of
//! the chunk that completed it. Carried bytes still pending at an exit event or at
//! [`CastWriter::finish`] are written as a `b` run. Decoding concatenates, per stream, the text
//! of its lines and the bytes of its `b` runs in file order, so for every stream and every
//! chunking `decode(encode(bytes)) == bytes`; only chunk boundaries may move (by the at most 3
//! carried bytes), never a byte.
//!
//! ## Bounds
//!
//! The writer splits data so that no line exceeds [`MAX_LINE_BYTES`] (text at most 64 KiB per
//! line, which JSON escaping can grow at most sixfold; raw runs at most 48 KiB, 64 KiB of
//! base64), and truncates markers to [`MAX_MARKER_BYTES`]. The reader refuses longer lines
//! without buffering them. The header holds the approved argv, which the API bounds to 256
//! arguments of 4 KiB, so its own limit is [`MAX_HEADER_BYTES`].

use std::collections::BTreeMap;
use std::time::Duration;

use aexec_crds::UserRef;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::transcript::Transcript;

/// Version of our recording conventions (the `aexec` header facts, the `e` and `b` codes).
pub const RECORDING_FORMAT_VERSION: u32 = 1;
/// Longest event line the reader accepts (and the writer ever writes), without its newline.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Longest header line the reader accepts, without its newline.
pub const MAX_HEADER_BYTES: usize = 8 << 20;
/// Markers longer than this are truncated (at a character boundary) when written.
pub const MAX_MARKER_BYTES: usize = 64 * 1024;
/// Terminal size written for sessions without a tty (asciicast v3 requires one).
pub const DEFAULT_COLS: u16 = 80;
/// See [`DEFAULT_COLS`].
pub const DEFAULT_ROWS: u16 = 24;
/// The terminal type written in the header.
pub const TERM_TYPE: &str = "xterm-256color";

/// Most text bytes per line: escaped JSON is at most 6 bytes per byte, 384 KiB.
const MAX_TEXT_PER_LINE: usize = 64 * 1024;
/// Most raw bytes per `b` line (a multiple of 3, so base64 needs no padding but at the end).
const MAX_RAW_PER_LINE: usize = 48 * 1024;
/// The display `command` and `title` are truncated to this many bytes.
const MAX_DISPLAY_BYTES: usize = 1024;
/// [`CastReader::parse`] merges consecutive pieces of one stream at one time up to this size.
const MERGE_LIMIT: usize = 1 << 20;
/// Longest interval accepted by the reader, in seconds (exactly representable in microseconds).
const MAX_INTERVAL_SECS: f64 = 1e9;
/// Latest time the writer records, in microseconds: [`MAX_INTERVAL_SECS`], so that no interval
/// it writes is one the reader refuses. About 31 years; sessions last hours.
const MAX_WRITTEN_MICROS: u64 = 1_000_000_000 * 1_000_000;

const CODE_OUTPUT: &str = "o";
const CODE_INPUT: &str = "i";
const CODE_RESIZE: &str = "r";
const CODE_EXIT: &str = "x";
const CODE_MARKER: &str = "m";
const CODE_STDERR_TAG: &str = "e";
const CODE_BYTES: &str = "b";

/// The first line of a recording.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Header {
    /// Always 3 (the only version this module writes or reads).
    version: u8,
    /// Initial terminal size and type.
    pub term: Term,
    /// Unix time (seconds) when the session started.
    pub timestamp: u64,
    /// The command for display (argv joined, shell-quoted where needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A title for players.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Captured environment variables (asciicast convention); empty unless set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// What was approved and who approved it.
    pub aexec: SessionFacts,
}

/// asciicast v3 `term`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub cols: u16,
    pub rows: u16,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub term_type: Option<String>,
}

/// The session behind a recording, as the operator ran it (the `"aexec"` header key).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SessionFacts {
    /// [`RECORDING_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The ExecSession's namespace (also the pod's).
    pub namespace: String,
    /// The ExecSession's name.
    pub name: String,
    /// The ExecSession's UID.
    pub uid: String,
    /// The pod executed in.
    pub pod: String,
    /// The pod's UID, pinned at validation.
    #[serde(rename = "podUID")]
    pub pod_uid: String,
    /// The container executed in.
    pub container: String,
    /// The approved argv.
    pub command: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    /// Who asked.
    pub requester: UserRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The ExecPolicy that governed the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// User names of the approvers, in order.
    #[serde(default)]
    pub approvers: Vec<String>,
}

impl Default for SessionFacts {
    fn default() -> Self {
        SessionFacts {
            format_version: RECORDING_FORMAT_VERSION,
            namespace: String::new(),
            name: String::new(),
            uid: String::new(),
            pod: String::new(),
            pod_uid: String::new(),
            container: String::new(),
            command: Vec::new(),
            tty: false,
            stdin: false,
            requester: UserRef::default(),
            reason: None,
            policy: None,
            approvers: Vec::new(),
        }
    }
}

impl Header {
    /// A v3 header for `facts`, started at `timestamp` (Unix seconds). `size` is the initial
    /// terminal size of a tty session; without one (always for non-tty sessions) 80x24 is
    /// written. The display command and the title are derived from the facts.
    pub fn new(facts: SessionFacts, timestamp: u64, size: Option<(u16, u16)>) -> Header {
        let (cols, rows) = size.unwrap_or((DEFAULT_COLS, DEFAULT_ROWS));
        let command = display_command(&facts.command);
        let title = format!(
            "{}/{} ({}/{})",
            facts.namespace, facts.name, facts.pod, facts.container
        );
        Header {
            version: 3,
            term: Term {
                cols,
                rows,
                term_type: Some(TERM_TYPE.to_owned()),
            },
            timestamp,
            command: Some(truncate_str(&command, MAX_DISPLAY_BYTES).to_owned()),
            title: Some(truncate_str(&title, MAX_DISPLAY_BYTES).to_owned()),
            env: BTreeMap::new(),
            aexec: facts,
        }
    }

    /// The asciicast version, always 3.
    pub fn version(&self) -> u8 {
        self.version
    }
}

/// Joins argv for display, single-quoting arguments a shell would split or expand.
pub fn display_command(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        if plain {
            out.push_str(arg);
        } else {
            out.push('\'');
            out.push_str(&arg.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    out
}

/// One thing that happened in a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes the command wrote to stdout (with a tty: to the terminal, stderr included).
    Output(Vec<u8>),
    /// Bytes the command wrote to stderr (sessions without a tty).
    Error(Vec<u8>),
    /// Bytes the requester sent to the command's stdin.
    Input(Vec<u8>),
    /// The requester's terminal was resized.
    Resize { cols: u16, rows: u16 },
    /// The command exited with this status.
    Exit(i32),
    /// A note on the timeline (for example "terminated by bob").
    Marker(String),
}

/// Which stream bytes belong to, for [`CastWriter::data_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The command's stdout ([`Event::Output`]).
    Out,
    /// The command's stderr ([`Event::Error`]).
    Err,
    /// The requester's stdin ([`Event::Input`]).
    In,
}

impl Stream {
    const ALL: [Stream; 3] = [Stream::Out, Stream::Err, Stream::In];

    pub(crate) fn idx(self) -> usize {
        match self {
            Stream::Out => 0,
            Stream::Err => 1,
            Stream::In => 2,
        }
    }

    /// The stream's name in `b` lines.
    fn tag(self) -> &'static str {
        match self {
            Stream::Out => "o",
            Stream::Err => "e",
            Stream::In => "i",
        }
    }

    fn event(self, bytes: Vec<u8>) -> Event {
        match self {
            Stream::Out => Event::Output(bytes),
            Stream::Err => Event::Error(bytes),
            Stream::In => Event::Input(bytes),
        }
    }
}

/// Whether `text` would more than double as a JSON string: control characters without a short
/// escape (`\u00XX`, six bytes each) dominate it, as in `head -c N /dev/zero`.
fn mostly_escapes(text: &str) -> bool {
    let long = count_bytes(text.as_bytes(), |b| {
        b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x08 | 0x0c)
    });
    long * 5 > text.len()
}

/// Whether `data` written as text lines and `b` runs (what [`CastWriter`] does by default)
/// would cost more than half again as much as one `b` run: a line per switch between valid
/// and invalid UTF-8, six bytes per control character without a short escape.
///
/// `whole` is `data` as text when all of it is valid UTF-8 (the common case, checked once by
/// the caller). The sum only grows, so the walk over mixed data stops as soon as it is over:
/// random bytes are decided after a few KiB, not after a walk over every tiny chunk.
fn cheaper_as_bytes(data: &[u8], whole: Option<&str>) -> bool {
    let raw = LINE + data.len().div_ceil(3) * 4;
    let limit = raw + raw / 2;
    if let Some(text) = whole {
        return LINE + text.len() + 5 * json_escapes(text.as_bytes()) > limit;
    }
    // Random output is decided by a count first: the walk takes a step per character, two
    // bytes on average for random bytes, and was 6% of the operator's CPU for such output.
    let mut strays = 0;
    let mut at = 1;
    while at < data.len() {
        let end = (at + STRAY_BLOCK).min(data.len());
        strays += stray_continuations(&data[at - 1..end]);
        if strays * (LINE + 4) > limit {
            return true;
        }
        at = end;
    }
    mixed_cost(data, limit) > limit
}

/// About the bytes a cast line costs besides its data: `[0.000000, "b", "o:"]` and its newline.
const LINE: usize = 32;

/// What `data`, not all of it UTF-8, costs as text lines and `b` runs, summed until it is over
/// `stop_over`: a line per valid or invalid stretch, six bytes per escaped control character,
/// base64 for the invalid bytes.
fn mixed_cost(data: &[u8], stop_over: usize) -> usize {
    let mut mixed = 0;
    for chunk in data.utf8_chunks() {
        let text = chunk.valid();
        if !text.is_empty() {
            mixed += LINE + text.len() + 5 * json_escapes(text.as_bytes());
        }
        let invalid = chunk.invalid();
        if !invalid.is_empty() {
            mixed += LINE + invalid.len().div_ceil(3) * 4;
        }
        if mixed > stop_over {
            break;
        }
    }
    mixed
}

/// [`cheaper_as_bytes`] counts stray continuation bytes this many bytes at a time, and stops
/// as soon as they decide.
const STRAY_BLOCK: usize = 4 << 10;

/// How many continuation bytes (`0x80..=0xBF`) of `bytes` follow an ASCII byte, the first byte
/// not counted. Such a byte continues no character, so it is an invalid sequence of one byte,
/// a `b` line of its own between two text lines of what [`cheaper_as_bytes`] sums: each adds
/// at least a line and 4 bytes of base64 to that sum, which makes this count a lower bound of
/// it that needs no step per character. Counted like [`count_bytes`], 255 pairs at a time.
fn stray_continuations(bytes: &[u8]) -> usize {
    let next = bytes.get(1..).unwrap_or_default();
    bytes
        .chunks(255)
        .zip(next.chunks(255))
        .map(|(before, run)| {
            usize::from(before.iter().zip(run).fold(0u8, |n, (&a, &b)| {
                n.wrapping_add(u8::from(a < 0x80 && b & 0xc0 == 0x80))
            }))
        })
        .sum()
}

/// How many bytes of `bytes` JSON escapes.
fn json_escapes(bytes: &[u8]) -> usize {
    count_bytes(bytes, |b| b < 0x20 || b == b'"' || b == b'\\')
}

/// How many bytes of `bytes` match `pred`: counted in runs of 255 into a byte-wide counter, so
/// that the compiler vectorises the count 32 bytes at a time (a `usize` counter takes 4).
fn count_bytes(bytes: &[u8], pred: impl Fn(u8) -> bool + Copy) -> usize {
    bytes
        .chunks(255)
        .map(|run| {
            usize::from(
                run.iter()
                    .fold(0u8, |n, &b| n.wrapping_add(u8::from(pred(b)))),
            )
        })
        .sum()
}

/// Decodes `bytes` after the incomplete sequence `carry` holds: characters, with U+FFFD for
/// bytes that are not UTF-8, and an incomplete sequence at the end kept in `carry`.
pub fn decode_utf8(carry: &mut Vec<u8>, bytes: &[u8]) -> String {
    let joined;
    let data = if carry.is_empty() {
        bytes
    } else {
        carry.extend_from_slice(bytes);
        joined = std::mem::take(carry);
        &joined[..]
    };
    let end = data.len() - incomplete_tail(data);
    let text = String::from_utf8_lossy(&data[..end]).into_owned();
    *carry = data[end..].to_vec();
    text
}

/// The length of the incomplete UTF-8 sequence `data` ends with (0 to 3 bytes): a lead byte
/// and continuation bytes that a next chunk could complete, as `str::from_utf8` sees it.
pub(crate) fn incomplete_tail(data: &[u8]) -> usize {
    let from = data.len().saturating_sub(3);
    let Some(lead) = (from..data.len()).rev().find(|&i| data[i] & 0xc0 != 0x80) else {
        return 0;
    };
    match std::str::from_utf8(&data[lead..]) {
        Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => data.len() - lead,
        _ => 0,
    }
}

/// The incomplete UTF-8 sequence at the end of a stream's last chunk (at most 3 bytes).
#[derive(Clone, Copy, Debug, Default)]
struct Carry {
    bytes: [u8; 3],
    len: usize,
}

impl Carry {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Encodes events as asciicast v3 lines. Holds only the time of the last line and up to 3
/// carried bytes per stream.
#[derive(Debug)]
pub struct CastWriter {
    last_us: u64,
    carry: [Carry; 3],
}

impl CastWriter {
    /// A writer for a recording with this header, and the header line (with its newline).
    pub fn new(header: &Header) -> (Self, String) {
        let mut header = header.clone();
        header.version = 3;
        // Serialising these types cannot fail (string keys, no floats); should it ever, the
        // fallback is still a valid v3 header, without our facts.
        let mut line = serde_json::to_string(&header).unwrap_or_else(|_| {
            format!(
                "{{\"version\": 3, \"term\": {{\"cols\": {}, \"rows\": {}}}}}",
                header.term.cols, header.term.rows
            )
        });
        line.push('\n');
        (
            CastWriter {
                last_us: 0,
                carry: [Carry::default(); 3],
            },
            line,
        )
    }

    /// Encodes one event at `at` (monotonic time since the session started) into JSON lines
    /// appended to `out`; returns the number of bytes appended (0 when everything was carried).
    /// Times are truncated to microseconds and capped at 1e9 s; a time earlier than the previous
    /// event's is recorded as the previous event's time (intervals are never negative).
    pub fn event(&mut self, at: Duration, ev: &Event, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        let at_us = written_micros(at);
        match ev {
            Event::Output(b) => self.data(Stream::Out, b, at_us, out),
            Event::Error(b) => self.data(Stream::Err, b, at_us, out),
            Event::Input(b) => self.data(Stream::In, b, at_us, out),
            Event::Resize { cols, rows } => {
                self.line(at_us, CODE_RESIZE, &format!("{cols}x{rows}"), out)
            }
            Event::Exit(code) => {
                // Nothing follows an exit: whatever is carried is written now.
                self.flush(at_us, out);
                self.line(at_us, CODE_EXIT, &code.to_string(), out);
            }
            Event::Marker(label) => self.line(
                at_us,
                CODE_MARKER,
                truncate_str(label, MAX_MARKER_BYTES),
                out,
            ),
        }
        out.len() - start
    }

    /// [`CastWriter::event`] for output, error or input bytes borrowed from elsewhere (the
    /// relay's own message), so that they need not be copied into an [`Event`] first.
    pub fn data_event(
        &mut self,
        at: Duration,
        stream: Stream,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> usize {
        let start = out.len();
        self.data(stream, bytes, written_micros(at), out);
        out.len() - start
    }

    /// Writes carried partial UTF-8 sequences (as `b` runs) at `at`. Call once at the end.
    pub fn finish(&mut self, at: Duration, out: &mut Vec<u8>) {
        self.flush(written_micros(at), out);
    }

    fn flush(&mut self, at_us: u64, out: &mut Vec<u8>) {
        for stream in Stream::ALL {
            let carry = std::mem::take(&mut self.carry[stream.idx()]);
            if carry.len > 0 {
                self.raw(stream, carry.as_slice(), at_us, out);
            }
        }
    }

    fn data(&mut self, stream: Stream, bytes: &[u8], at_us: u64, out: &mut Vec<u8>) {
        let carry = std::mem::take(&mut self.carry[stream.idx()]);
        let joined;
        let data: &[u8] = if carry.len == 0 {
            bytes
        } else {
            let mut v = Vec::with_capacity(carry.len + bytes.len());
            v.extend_from_slice(carry.as_slice());
            v.extend_from_slice(bytes);
            joined = v;
            &joined
        };
        // Valid UTF-8 as a whole (terminal text, runs of NULs) is checked once here, with SIMD:
        // std's check slows to about 800 MB/s on text with many non-ASCII characters, and was
        // a sixth of the operator's CPU for such output (docs/performance.md).
        let whole = simdutf8::basic::from_utf8(data).ok();
        if data.len() >= 64 && cheaper_as_bytes(data, whole) {
            // Binary data (a compressed file, random bytes): valid UTF-8 and invalid runs
            // alternate every few bytes, and a line per run would cost several times the
            // data; one base64 run costs 4/3 and loses nothing a player could show. An
            // incomplete character at the end is still carried, as on the text path.
            let end = data.len() - incomplete_tail(data);
            self.raw(stream, &data[..end], at_us, out);
            let tail = &data[end..];
            let mut bytes = [0; 3];
            bytes[..tail.len()].copy_from_slice(tail);
            self.carry[stream.idx()] = Carry {
                bytes,
                len: tail.len(),
            };
            return;
        }
        if let Some(text) = whole {
            self.text(stream, text, at_us, out);
            return;
        }
        let mut pos = 0;
        // Start of the pending run of invalid bytes (runs are merged until text follows).
        let mut raw_from: Option<usize> = None;
        while pos < data.len() {
            let (valid, invalid) = match std::str::from_utf8(&data[pos..]) {
                Ok(text) => (text, None),
                Err(e) => {
                    let valid =
                        std::str::from_utf8(&data[pos..pos + e.valid_up_to()]).unwrap_or_default();
                    (valid, Some(e.error_len()))
                }
            };
            if !valid.is_empty() {
                if let Some(from) = raw_from.take() {
                    self.raw(stream, &data[from..pos], at_us, out);
                }
                self.text(stream, valid, at_us, out);
            }
            let after = pos + valid.len();
            match invalid {
                None => pos = data.len(),
                Some(Some(n)) => {
                    raw_from.get_or_insert(after);
                    pos = after + n;
                }
                Some(None) => {
                    // An incomplete sequence at the end: keep it for the stream's next chunk.
                    if let Some(from) = raw_from.take() {
                        self.raw(stream, &data[from..after], at_us, out);
                    }
                    let tail = &data[after..];
                    let len = tail.len().min(3);
                    let mut bytes = [0; 3];
                    bytes[..len].copy_from_slice(&tail[..len]);
                    self.carry[stream.idx()] = Carry { bytes, len };
                    pos = data.len();
                }
            }
        }
        if let Some(from) = raw_from {
            self.raw(stream, &data[from..pos], at_us, out);
        }
    }

    fn text(&mut self, stream: Stream, mut text: &str, at_us: u64, out: &mut Vec<u8>) {
        while !text.is_empty() {
            let mut cut = text.len().min(MAX_TEXT_PER_LINE);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let (piece, rest) = text.split_at(cut);
            if stream != Stream::In && piece.len() >= 64 && mostly_escapes(piece) {
                // NULs and other control bytes cost six bytes each as JSON text; base64 costs
                // 4/3. Such output has no glyphs, so players lose nothing by skipping it.
                self.raw(stream, piece.as_bytes(), at_us, out);
                text = rest;
                continue;
            }
            match stream {
                Stream::Out => self.line(at_us, CODE_OUTPUT, piece, out),
                Stream::Err => {
                    self.line(at_us, CODE_STDERR_TAG, "", out);
                    self.line(at_us, CODE_OUTPUT, piece, out);
                }
                Stream::In => self.line(at_us, CODE_INPUT, piece, out),
            }
            text = rest;
        }
    }

    fn raw(&mut self, stream: Stream, bytes: &[u8], at_us: u64, out: &mut Vec<u8>) {
        for piece in bytes.chunks(MAX_RAW_PER_LINE) {
            // `"o:BASE64"`: the tag and the base64 alphabet need no JSON escape, so the
            // encoding goes straight into the line.
            self.open_line(at_us, CODE_BYTES, out);
            out.push(b'"');
            out.extend_from_slice(stream.tag().as_bytes());
            out.push(b':');
            let start = out.len();
            out.resize(start + piece.len().div_ceil(3) * 4, 0);
            let written = BASE64
                .encode_slice(piece, &mut out[start..])
                .unwrap_or_default();
            out.truncate(start + written);
            out.extend_from_slice(b"\"]\n");
        }
    }

    fn line(&mut self, at_us: u64, code: &str, data: &str, out: &mut Vec<u8>) {
        self.open_line(at_us, code, out);
        push_json_str(out, data);
        out.extend_from_slice(b"]\n");
    }

    /// `[INTERVAL, "CODE", ` of a line.
    fn open_line(&mut self, at_us: u64, code: &str, out: &mut Vec<u8>) {
        let interval = at_us.saturating_sub(self.last_us);
        self.last_us = self.last_us.max(at_us);
        out.push(b'[');
        push_micros(out, interval);
        out.extend_from_slice(b", \"");
        out.extend_from_slice(code.as_bytes());
        out.extend_from_slice(b"\", ");
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A time as the writer records it (see [`MAX_WRITTEN_MICROS`]).
fn written_micros(d: Duration) -> u64 {
    micros(d).min(MAX_WRITTEN_MICROS)
}

/// `S.ffffff`: seconds with exactly six decimals.
fn format_micros(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// Appends `S.ffffff` ([`format_micros`]) without a temporary string.
fn push_micros(out: &mut Vec<u8>, us: u64) {
    use std::io::Write as _;
    let _ = write!(out, "{}.{:06}", us / 1_000_000, us % 1_000_000);
}

/// Appends `s` as a JSON string literal.
///
/// Plain runs are skipped eight bytes at a time: a word with no byte below 0x20, no `"` and no
/// `\` is copied as it is, and a word that holds one jumps straight to the first such byte
/// ([`first_escape`]). Terminal text is mostly such words (a 2026-12 profile of the operator had
/// this function among its largest costs with a byte-by-byte loop; colour codes put an escape
/// every few dozen bytes, and each one used to cost up to eight bytes looked at one by one).
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 16);
    let mut plain_from = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            match first_escape(u64::from_le_bytes(w)) {
                None => {
                    i += 8;
                    continue;
                }
                Some(at) => i += at,
            }
        }
        let b = bytes[i];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        i += 1;
        plain_from = i;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

/// The position of the first of the eight bytes of `w` (little-endian) that is below 0x20, `"`
/// or `\`, if any (the bit tricks of "Bit Twiddling Hacks", `hasless` and `haszero`). Their
/// masks can flag a byte above a true match (a borrow runs upwards), never one below it: the
/// lowest flag is exact.
fn first_escape(w: u64) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let mask = below_space | quote | backslash;
    (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// A recording read back: the header and the events with their absolute times.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    pub header: Header,
    /// Events at their time since the session started. Consecutive pieces of one stream at the
    /// same time (the lines of one written event) are merged back into one event.
    pub events: Vec<(Duration, Event)>,
    /// Lines with a code this module does not know (ignored, as the v3 specification says).
    pub ignored_events: u64,
}

/// A line of a recording is malformed: which line, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct CastError {
    /// 1-based line number (the header is line 1).
    pub line: u64,
    pub kind: CastErrorKind,
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CastErrorKind {
    #[error("the recording is empty: it has no header line")]
    Empty,
    #[error("the line is longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("the line is not UTF-8")]
    NotUtf8,
    #[error("the header is not valid: {0}")]
    Header(String),
    #[error("this is asciicast version {0}; only version 3 is read")]
    Version(String),
    #[error("the recording was written in aexec format {0}; this build reads up to {max}", max = RECORDING_FORMAT_VERSION)]
    FormatVersion(u32),
    #[error("not an event [interval, code, data]: {0}")]
    Syntax(String),
    #[error("the interval {0} is not a number of seconds between 0 and 1e9")]
    Interval(String),
    #[error("the event time overflows")]
    TimeOverflow,
    #[error("resize data {0:?} is not COLSxROWS")]
    Resize(String),
    #[error("exit data {0:?} is not an exit status")]
    Exit(String),
    #[error("raw bytes {0:?} are not STREAM:BASE64 with STREAM one of o, e, i")]
    Bytes(String),
    #[error("the stderr tag must have empty data, found {0:?}")]
    TagData(String),
    #[error("the stderr tag on line {tag_line} is followed by a {code:?} line, not an \"o\" line")]
    DanglingTag { tag_line: u64, code: String },
    #[error("the reader already failed on an earlier line")]
    Failed,
}

/// Reads a recording back, line by line ([`CastReader::line`]), from arbitrary byte chunks
/// ([`CastReader::feed`], bounded: an overlong line is refused, not buffered), or whole
/// ([`CastReader::parse`]).
#[derive(Debug, Default)]
pub struct CastReader {
    line_no: u64,
    header: Option<Header>,
    time_us: u64,
    /// Line number of a stderr tag waiting for its `o` line.
    tag: Option<u64>,
    partial: Vec<u8>,
    failed: bool,
    ignored: u64,
}

impl CastReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a whole recording.
    pub fn parse(bytes: &[u8]) -> Result<Recording, CastError> {
        let mut reader = CastReader::new();
        let mut pieces = Vec::new();
        reader.feed(bytes, &mut pieces)?;
        // A last line without a newline is read before counting the lines ignored.
        reader.last_line(&mut pieces)?;
        let ignored_events = reader.ignored;
        let header = reader.finish(&mut pieces)?;
        let mut events: Vec<(Duration, Event)> = Vec::with_capacity(pieces.len());
        for (at, ev) in pieces {
            push_merged(&mut events, at, ev);
        }
        Ok(Recording {
            header,
            events,
            ignored_events,
        })
    }

    /// The header, once line 1 has been read.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Lines with unknown codes seen so far.
    pub fn ignored_events(&self) -> u64 {
        self.ignored
    }

    /// Reads the next line (a trailing `\n` or `\r\n` is allowed). Returns the event it holds,
    /// if any: the header, comments, empty lines, stderr tags and unknown codes hold none. Data
    /// events are returned per line; [`CastReader::parse`] merges them.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<(Duration, Event)>, CastError> {
        if self.failed {
            return Err(self.err(CastErrorKind::Failed));
        }
        let result = self.line_inner(line);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Reads a chunk of the byte stream, appending the events of its complete lines to
    /// `events`. A partial line is kept for the next chunk, up to the line limit.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        events: &mut Vec<(Duration, Event)>,
    ) -> Result<(), CastError> {
        if self.failed {
            return Err(self.err(CastErrorKind::Failed));
        }
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let (head, tail) = bytes.split_at(nl);
            bytes = &tail[1..];
            let ev = if self.partial.is_empty() {
                self.line(head)?
            } else {
                self.check_partial(head.len())?;
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                let ev = self.line(&line)?;
                line.clear();
                self.partial = line;
                ev
            };
            events.extend(ev);
        }
        if !bytes.is_empty() {
            self.check_partial(bytes.len())?;
            self.partial.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Reads the last line if it had no newline, and returns the header.
    pub fn finish(mut self, events: &mut Vec<(Duration, Event)>) -> Result<Header, CastError> {
        if self.failed {
            return Err(self.err(CastErrorKind::Failed));
        }
        self.last_line(events)?;
        // A tag still pending here lost its output to truncation: nothing to report.
        self.header.ok_or(CastError {
            line: 1,
            kind: CastErrorKind::Empty,
        })
    }

    /// Reads the partial line left at the end of the stream, if any.
    fn last_line(&mut self, events: &mut Vec<(Duration, Event)>) -> Result<(), CastError> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            events.extend(self.line(&line)?);
        }
        Ok(())
    }

    fn limit(&self) -> usize {
        if self.header.is_none() {
            MAX_HEADER_BYTES
        } else {
            MAX_LINE_BYTES
        }
    }

    fn check_partial(&mut self, more: usize) -> Result<(), CastError> {
        let limit = self.limit();
        // `\r` of a `\r\n` may still be in the partial line: allow one byte for it.
        if self.partial.len() + more > limit + 1 {
            self.failed = true;
            self.partial = Vec::new();
            return Err(CastError {
                line: self.line_no + 1,
                kind: CastErrorKind::TooLong { limit },
            });
        }
        Ok(())
    }

    fn err(&self, kind: CastErrorKind) -> CastError {
        CastError {
            line: self.line_no,
            kind,
        }
    }

    fn line_inner(&mut self, line: &[u8]) -> Result<Option<(Duration, Event)>, CastError> {
        self.line_no += 1;
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let limit = self.limit();
        if line.len() > limit {
            return Err(self.err(CastErrorKind::TooLong { limit }));
        }
        let text =
            simdutf8::basic::from_utf8(line).map_err(|_| self.err(CastErrorKind::NotUtf8))?;
        if self.header.is_none() {
            self.header = Some(self.parse_header(text)?);
            return Ok(None);
        }
        if text.trim().is_empty() || text.starts_with('#') {
            return Ok(None);
        }
        let (interval, code, data): (f64, String, String) = serde_json::from_str(text)
            .map_err(|e| self.err(CastErrorKind::Syntax(e.to_string())))?;
        if !(0.0..=MAX_INTERVAL_SECS).contains(&interval) {
            return Err(self.err(CastErrorKind::Interval(interval.to_string())));
        }
        // Exact for every interval below 2^51 µs: the nearest double times 1e6 rounds back.
        let interval_us = (interval * 1e6).round() as u64;
        self.time_us = self
            .time_us
            .checked_add(interval_us)
            .ok_or_else(|| self.err(CastErrorKind::TimeOverflow))?;
        let at = Duration::from_micros(self.time_us);

        if let Some(tag_line) = self.tag
            && code != CODE_OUTPUT
        {
            return Err(self.err(CastErrorKind::DanglingTag { tag_line, code }));
        }
        let event = match code.as_str() {
            // A data line with no data holds no event (the writer never writes one), as for an
            // empty `b` run: readers never see an empty data event. Found by the fuzz target
            // `cast_reader`.
            CODE_OUTPUT if data.is_empty() => {
                self.tag = None;
                return Ok(None);
            }
            CODE_INPUT if data.is_empty() => return Ok(None),
            CODE_OUTPUT => {
                if self.tag.take().is_some() {
                    Event::Error(data.into_bytes())
                } else {
                    Event::Output(data.into_bytes())
                }
            }
            CODE_INPUT => Event::Input(data.into_bytes()),
            CODE_STDERR_TAG => {
                if !data.is_empty() {
                    return Err(self.err(CastErrorKind::TagData(data)));
                }
                self.tag = Some(self.line_no);
                return Ok(None);
            }
            CODE_BYTES => {
                let decoded = data.split_once(':').and_then(|(stream, b64)| {
                    let stream = Stream::ALL.into_iter().find(|s| s.tag() == stream)?;
                    Some((stream, BASE64.decode(b64).ok()?))
                });
                match decoded {
                    Some((_, bytes)) if bytes.is_empty() => return Ok(None),
                    Some((stream, bytes)) => stream.event(bytes),
                    None => return Err(self.err(CastErrorKind::Bytes(data))),
                }
            }
            CODE_RESIZE => {
                let size = data.split_once('x').and_then(|(c, r)| {
                    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                    if !digits(c) || !digits(r) {
                        return None;
                    }
                    Some((c.parse::<u16>().ok()?, r.parse::<u16>().ok()?))
                });
                match size {
                    Some((cols, rows)) => Event::Resize { cols, rows },
                    None => return Err(self.err(CastErrorKind::Resize(data))),
                }
            }
            CODE_EXIT => match data.parse::<i32>() {
                Ok(code) => Event::Exit(code),
                Err(_) => return Err(self.err(CastErrorKind::Exit(data))),
            },
            CODE_MARKER => Event::Marker(data),
            _ => {
                self.ignored += 1;
                return Ok(None);
            }
        };
        Ok(Some((at, event)))
    }

    fn parse_header(&self, text: &str) -> Result<Header, CastError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| self.err(CastErrorKind::Header(e.to_string())))?;
        let Some(object) = value.as_object() else {
            return Err(self.err(CastErrorKind::Header(
                "the first line is not a JSON object".into(),
            )));
        };
        match object.get("version") {
            Some(v) if v.as_u64() == Some(3) => {}
            Some(v) => return Err(self.err(CastErrorKind::Version(v.to_string()))),
            None => {
                return Err(self.err(CastErrorKind::Header("it has no \"version\"".into())));
            }
        }
        if !object.contains_key("aexec") {
            return Err(self.err(CastErrorKind::Header(
                "it has no \"aexec\" session facts: not a kubectl-aexec recording".into(),
            )));
        }
        let header: Header = serde_json::from_value(value)
            .map_err(|e| self.err(CastErrorKind::Header(e.to_string())))?;
        if header.aexec.format_version > RECORDING_FORMAT_VERSION {
            return Err(self.err(CastErrorKind::FormatVersion(header.aexec.format_version)));
        }
        Ok(header)
    }
}

fn push_merged(events: &mut Vec<(Duration, Event)>, at: Duration, ev: Event) {
    if let Some(last) = events.last_mut()
        && merge_into(last, at, &ev)
    {
        return;
    }
    events.push((at, ev));
}

/// Appends `ev` to `last` if it is more of the same stream at the same time and the merged
/// data stays within [`MERGE_LIMIT`]; false (and `last` untouched) otherwise.
fn merge_into(last: &mut (Duration, Event), at: Duration, ev: &Event) -> bool {
    if last.0 != at {
        return false;
    }
    match (&mut last.1, ev) {
        (Event::Output(a), Event::Output(b))
        | (Event::Error(a), Event::Error(b))
        | (Event::Input(a), Event::Input(b))
            if a.len() + b.len() <= MERGE_LIMIT =>
        {
            a.extend_from_slice(b);
            true
        }
        _ => false,
    }
}

/// Converts a recording to asciicast v2 for players that do not read v3: absolute times; codes
/// `o`, `i`, `r` and `m` only. Stderr becomes ordinary output, the exit status a marker
/// `"exit N"`, and bytes that are not UTF-8 are replaced by U+FFFD: v2 is for display, the v3
/// recording stays the exact record. [`Converter`] gives the same bytes from a stream.
pub fn to_v2(rec: &Recording) -> String {
    let mut out = Vec::new();
    v2_header(&rec.header, &mut out);
    for (at, ev) in &rec.events {
        v2_event(*at, ev, &mut out);
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The v2 header line, with its newline.
fn v2_header(h: &Header, out: &mut Vec<u8>) {
    let mut header = serde_json::Map::new();
    header.insert("version".into(), 2.into());
    header.insert("width".into(), h.term.cols.into());
    header.insert("height".into(), h.term.rows.into());
    header.insert("timestamp".into(), h.timestamp.into());
    if let Some(command) = &h.command {
        header.insert("command".into(), command.as_str().into());
    }
    if let Some(title) = &h.title {
        header.insert("title".into(), title.as_str().into());
    }
    let mut env = h.env.clone();
    if let Some(t) = &h.term.term_type {
        env.entry("TERM".into()).or_insert_with(|| t.clone());
    }
    if !env.is_empty() {
        let env: serde_json::Map<String, serde_json::Value> =
            env.into_iter().map(|(k, v)| (k, v.into())).collect();
        header.insert("env".into(), env.into());
    }
    out.extend_from_slice(serde_json::Value::Object(header).to_string().as_bytes());
    out.push(b'\n');
}

/// One v2 event line (of a merged event), with its newline.
fn v2_event(at: Duration, ev: &Event, out: &mut Vec<u8>) {
    let (code, data) = match ev {
        Event::Output(b) | Event::Error(b) => ("o", String::from_utf8_lossy(b)),
        Event::Input(b) => ("i", String::from_utf8_lossy(b)),
        Event::Resize { cols, rows } => ("r", format!("{cols}x{rows}").into()),
        Event::Exit(code) => ("m", format!("exit {code}").into()),
        Event::Marker(label) => ("m", label.as_str().into()),
    };
    out.push(b'[');
    out.extend_from_slice(format_micros(micros(at)).as_bytes());
    out.extend_from_slice(b", \"");
    out.extend_from_slice(code.as_bytes());
    out.extend_from_slice(b"\", ");
    push_json_str(out, &data);
    out.extend_from_slice(b"]\n");
}

/// A plain-text transcript for people: a few `#` lines on the session, then what a terminal
/// showed, as a terminal emulator makes it of the output ([`crate::transcript`] says how: lines
/// as they scroll off the screen, the screen before it is cleared and at the end, a full-screen
/// program's screen when it ends), with stderr lines marked `[stderr] `, typed lines
/// `[stdin] `, and resizes, markers and the exit status noted in brackets on lines of their
/// own. Bytes that are not UTF-8 show as U+FFFD. [`Converter`] gives the same text from a
/// stream.
pub fn to_text(rec: &Recording) -> String {
    let mut t = Transcript::new(&rec.header);
    for (_, ev) in &rec.events {
        t.event(ev);
    }
    t.finish();
    t.into_text()
}

/// What [`Converter`] turns a v3 recording into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    /// asciicast v2, as [`to_v2`].
    V2,
    /// A plain-text transcript, as [`to_text`].
    Text,
}

/// Converts a v3 recording to v2 or to text as its bytes arrive, giving exactly the bytes
/// [`to_v2`] or [`to_text`] give for the whole file, without holding the recording: it keeps
/// one partial line (bounded by the reader's line limit), one merged event (at most 1 MiB, the
/// merge bound of [`CastReader::parse`]) and, for text, one emulated screen and the bounded
/// state of [`crate::transcript`].
#[derive(Debug)]
pub struct Converter {
    export: Export,
    reader: CastReader,
    header_written: bool,
    /// The last event read, held until the next one shows whether it merges with it.
    pending: Option<(Duration, Event)>,
    /// Created with the header (the terminal's size is the header's).
    transcript: Option<Transcript>,
    /// Events of the chunk being fed (bounded by the chunk).
    scratch: Vec<(Duration, Event)>,
}

impl Converter {
    pub fn new(export: Export) -> Self {
        Converter {
            export,
            reader: CastReader::new(),
            header_written: false,
            pending: None,
            transcript: None,
            scratch: Vec::new(),
        }
    }

    /// Reads the next chunk of the v3 recording (any split) and appends the converted bytes
    /// that are final to `out`. An error is the one [`CastReader`] reports for the whole file.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), CastError> {
        let mut events = std::mem::take(&mut self.scratch);
        let read = self.reader.feed(bytes, &mut events);
        self.convert(&mut events, out);
        self.scratch = events;
        read
    }

    /// Reads the last line if it had no newline and appends the rest of the output.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CastError> {
        let mut events = std::mem::take(&mut self.scratch);
        let reader = std::mem::take(&mut self.reader);
        let header = reader.finish(&mut events)?;
        if !self.header_written {
            self.write_header(&header, out);
        }
        self.convert(&mut events, out);
        if let Some((at, ev)) = self.pending.take() {
            self.emit(at, &ev, out);
        }
        if let Some(t) = &mut self.transcript {
            t.finish();
            t.take(out);
        }
        Ok(())
    }

    fn convert(&mut self, events: &mut Vec<(Duration, Event)>, out: &mut Vec<u8>) {
        if !self.header_written
            && let Some(h) = self.reader.header().cloned()
        {
            self.write_header(&h, out);
        }
        for (at, ev) in events.drain(..) {
            if let Some(last) = &mut self.pending
                && merge_into(last, at, &ev)
            {
                continue;
            }
            if let Some((at, ev)) = self.pending.replace((at, ev)) {
                self.emit(at, &ev, out);
            }
        }
    }

    fn write_header(&mut self, h: &Header, out: &mut Vec<u8>) {
        match self.export {
            Export::V2 => v2_header(h, out),
            Export::Text => {
                let mut t = Transcript::new(h);
                t.take(out);
                self.transcript = Some(t);
            }
        }
        self.header_written = true;
    }

    fn emit(&mut self, at: Duration, ev: &Event, out: &mut Vec<u8>) {
        match self.export {
            Export::V2 => v2_event(at, ev, out),
            Export::Text => {
                if let Some(t) = &mut self.transcript {
                    t.event(ev);
                    t.take(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_word_test_finds_the_first_byte_json_escapes() {
        let naive = |w: u64| {
            w.to_le_bytes()
                .iter()
                .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        };
        let mut rng = Rng(7);
        // Every byte value in every position of an otherwise plain word, and random words.
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut w = *b"abcdefgh";
                w[pos] = b;
                let w = u64::from_le_bytes(w);
                assert_eq!(first_escape(w), naive(w), "{b:#x} at {pos}");
            }
        }
        for _ in 0..200_000 {
            let w = rng.next();
            assert_eq!(first_escape(w), naive(w), "{w:#x}");
        }
        // Words with several bytes to escape, the first anywhere: a borrow from a lower match
        // must not hide it or put a flag below it.
        let specials = [
            0u8, 0x1b, 0x1f, b'"', b'\\', b'\n', 0x20, 0x21, 0x5b, 0x5d, 0x80, 0xff,
        ];
        for _ in 0..200_000 {
            let mut w = [0u8; 8];
            for b in &mut w {
                *b = specials[rng.below(specials.len() as u64) as usize];
            }
            let w = u64::from_le_bytes(w);
            assert_eq!(first_escape(w), naive(w), "{w:#x}");
        }
    }

    #[test]
    fn the_stray_count_decides_random_output_as_the_walk_does() {
        let mut rng = Rng(5);
        let mut counted = 0;
        for round in 0..3_000 {
            let len = 64 + rng.below(40_000) as usize;
            // Random bytes, mixed text and garbage, and text with garbage every so often: the
            // count decides the first, the walk the others.
            let data: Vec<u8> = match round % 3 {
                0 => (0..len).map(|_| rng.next() as u8).collect(),
                1 => rng.bytes(len),
                _ => (0..len)
                    .map(|_| match rng.below(200) {
                        0 => 0x80 | rng.below(64) as u8,
                        1 => rng.next() as u8,
                        _ => b'a' + rng.below(26) as u8,
                    })
                    .collect(),
            };
            if std::str::from_utf8(&data).is_ok() {
                continue;
            }
            // A lower bound of the whole walk's sum, so it never decides what the walk would not.
            let strays = stray_continuations(&data);
            let whole = mixed_cost(&data, usize::MAX);
            assert!(
                strays * (LINE + 4) <= whole,
                "round {round}: {strays} strays, {whole}"
            );
            let raw = LINE + data.len().div_ceil(3) * 4;
            let limit = raw + raw / 2;
            assert_eq!(
                cheaper_as_bytes(&data, None),
                whole > limit,
                "round {round}, {len} bytes"
            );
            counted += usize::from(strays * (LINE + 4) > limit);
        }
        // Both ways were taken.
        assert!(
            (500..2_000).contains(&counted),
            "{counted} decided by the count"
        );
    }

    #[test]
    fn json_strings_are_what_serde_json_writes() {
        let mut rng = Rng(11);
        for _ in 0..2000 {
            let len = rng.below(100) as usize;
            let s: String = (0..len)
                .map(|_| match rng.below(6) {
                    0 => char::from(rng.below(0x20) as u8),
                    1 => '"',
                    2 => '\\',
                    3 => 'é',
                    _ => char::from(b'a' + rng.below(26) as u8),
                })
                .collect();
            let mut out = Vec::new();
            push_json_str(&mut out, &s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
        }
    }

    /// xorshift64*: deterministic, good enough to shuffle test data.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// Bytes mixing ASCII, multi-byte characters, control characters and garbage.
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut v = Vec::with_capacity(n + 4);
            while v.len() < n {
                match self.below(6) {
                    0 => v.push(self.below(256) as u8),
                    1 => v.extend_from_slice("é€😀".as_bytes()),
                    2 => v.push(self.below(32) as u8),
                    3 => v.extend_from_slice(&[0xf0, 0x9f]),
                    _ => v.push(b'a' + self.below(26) as u8),
                }
            }
            v
        }
    }

    fn facts() -> SessionFacts {
        SessionFacts {
            namespace: "team-a".into(),
            name: "debug-1".into(),
            uid: "11111111-2222".into(),
            pod: "web-0".into(),
            pod_uid: "pod-uid-1".into(),
            container: "app".into(),
            command: vec!["sh".into(), "-c".into(), "echo 'hi' && ls".into()],
            tty: false,
            stdin: true,
            requester: UserRef {
                username: "alice".into(),
                groups: vec!["dev".into()],
            },
            reason: Some("INC-42".into()),
            policy: Some("prod".into()),
            approvers: vec!["bob".into(), "dave".into()],
            ..SessionFacts::default()
        }
    }

    fn header() -> Header {
        Header::new(facts(), 1_700_000_000, None)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Writes `events` (with a finish at the last time + 1 s) and returns the file.
    fn write(events: &[(Duration, Event)]) -> Vec<u8> {
        let (mut w, head) = CastWriter::new(&header());
        let mut out = head.into_bytes();
        let mut end = Duration::ZERO;
        for (at, ev) in events {
            let before = out.len();
            let n = w.event(*at, ev, &mut out);
            assert_eq!(n, out.len() - before);
            end = end.max(*at);
        }
        w.finish(end + Duration::from_secs(1), &mut out);
        out
    }

    fn lines(file: &[u8]) -> Vec<String> {
        String::from_utf8(file.to_vec())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Every byte of every stream, in order.
    fn streams(events: &[(Duration, Event)]) -> [Vec<u8>; 3] {
        let mut s: [Vec<u8>; 3] = Default::default();
        for (_, ev) in events {
            match ev {
                Event::Output(b) => s[0].extend_from_slice(b),
                Event::Error(b) => s[1].extend_from_slice(b),
                Event::Input(b) => s[2].extend_from_slice(b),
                _ => {}
            }
        }
        s
    }

    #[test]
    fn header_line_is_v3_with_facts() {
        let (_, line) = CastWriter::new(&header());
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["version"], 3);
        assert_eq!(v["term"]["cols"], 80);
        assert_eq!(v["term"]["rows"], 24);
        assert_eq!(v["term"]["type"], "xterm-256color");
        assert_eq!(v["timestamp"], 1_700_000_000u64);
        assert_eq!(v["command"], "sh -c 'echo '\\''hi'\\'' && ls'");
        assert_eq!(v["title"], "team-a/debug-1 (web-0/app)");
        assert_eq!(v["aexec"]["formatVersion"], 1);
        assert_eq!(v["aexec"]["podUID"], "pod-uid-1");
        assert_eq!(v["aexec"]["command"][2], "echo 'hi' && ls");
        assert_eq!(v["aexec"]["requester"]["username"], "alice");
        assert_eq!(v["aexec"]["requester"]["groups"][0], "dev");
        assert_eq!(v["aexec"]["approvers"][1], "dave");
        assert_eq!(v["aexec"]["stdin"], true);
        assert!(v.get("env").is_none());

        let rec = CastReader::parse(line.as_bytes()).unwrap();
        assert_eq!(rec.header, header());
        assert_eq!(rec.header.version(), 3);
        assert!(rec.events.is_empty());

        let tty = Header::new(facts(), 1, Some((120, 40)));
        assert_eq!((tty.term.cols, tty.term.rows), (120, 40));
    }

    #[test]
    fn every_line_is_a_playable_v3_event() {
        let file = write(&[
            (ms(10), Event::Output(b"hello\n".to_vec())),
            (ms(20), Event::Error(b"oops\xff\n".to_vec())),
            (ms(30), Event::Input(b"\x01\x02q".to_vec())),
            (
                ms(40),
                Event::Resize {
                    cols: 100,
                    rows: 50,
                },
            ),
            (ms(50), Event::Marker("note".into())),
            (ms(60), Event::Exit(3)),
        ]);
        let ls = lines(&file);
        for l in &ls[1..] {
            let (t, code, _data): (f64, String, String) = serde_json::from_str(l).unwrap();
            assert!(t >= 0.0);
            assert_eq!(code.chars().count(), 1, "{l}");
        }
        assert_eq!(ls[1], r#"[0.010000, "o", "hello\n"]"#);
        assert_eq!(ls[2], r#"[0.010000, "e", ""]"#);
        assert_eq!(ls[3], r#"[0.000000, "o", "oops"]"#);
        assert_eq!(ls[4], r#"[0.000000, "b", "e:/w=="]"#);
        assert_eq!(ls[5], r#"[0.000000, "e", ""]"#);
        assert_eq!(ls[6], r#"[0.000000, "o", "\n"]"#);
        assert_eq!(ls[7], r#"[0.010000, "i", "\u0001\u0002q"]"#);
        assert_eq!(ls[8], r#"[0.010000, "r", "100x50"]"#);
        assert_eq!(ls[9], r#"[0.010000, "m", "note"]"#);
        assert_eq!(ls[10], r#"[0.010000, "x", "3"]"#);
        assert_eq!(ls.len(), 11);
    }

    #[test]
    fn round_trip_of_random_bytes_in_random_chunkings() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut events = Vec::new();
            let mut t = 0u64;
            let mut written_times = std::collections::BTreeSet::new();
            for _ in 0..rng.below(200) + 1 {
                t += rng.below(3) * rng.below(2_000_000);
                let len = match rng.below(50) {
                    0..=4 => 0,
                    // Now and then a chunk larger than one line may hold.
                    5 if seed % 4 == 0 => 70_000 + rng.below(30_000) as usize,
                    _ => rng.below(40) as usize + 1,
                };
                let bytes = rng.bytes(len);
                let ev = match rng.below(3) {
                    0 => Event::Output(bytes),
                    1 => Event::Error(bytes),
                    _ => Event::Input(bytes),
                };
                written_times.insert(t);
                events.push((us(t), ev));
            }
            let file = write(&events);
            for l in lines(&file) {
                assert!(l.len() <= MAX_LINE_BYTES);
            }
            let rec = CastReader::parse(&file).unwrap();
            assert_eq!(streams(&rec.events), streams(&events), "seed {seed}");
            written_times.insert(t + 1_000_000);
            let mut prev = Duration::ZERO;
            for (at, _) in &rec.events {
                assert!(*at >= prev);
                prev = *at;
                assert!(written_times.contains(&micros(*at)), "seed {seed}: {at:?}");
            }

            // The same file fed in random pieces reads the same.
            let mut reader = CastReader::new();
            let mut pieces = Vec::new();
            let mut rest = &file[..];
            while !rest.is_empty() {
                let n = (rng.below(5000) as usize + 1).min(rest.len());
                reader.feed(&rest[..n], &mut pieces).unwrap();
                rest = &rest[n..];
            }
            reader.finish(&mut pieces).unwrap();
            assert_eq!(streams(&pieces), streams(&events), "seed {seed}");
        }
    }

    #[test]
    fn every_split_of_a_multibyte_character_round_trips() {
        let text = "a€b😀c".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let events = vec![
                    (ms(1), Event::Output(text[..i].to_vec())),
                    (ms(2), Event::Output(text[i..j].to_vec())),
                    (ms(3), Event::Output(text[j..].to_vec())),
                ];
                let file = write(&events);
                // Whole characters only: no raw run was needed.
                assert!(
                    !lines(&file).iter().any(|l| l.contains(", \"b\", ")),
                    "{i} {j}"
                );
                let rec = CastReader::parse(&file).unwrap();
                assert_eq!(streams(&rec.events)[0], text);
            }
        }
    }

    #[test]
    fn split_character_is_written_whole_with_the_completing_chunk() {
        let file = write(&[
            (ms(1), Event::Output(b"x\xe2".to_vec())),
            (ms(2), Event::Error(b"err".to_vec())),
            (ms(3), Event::Output(b"\x82\xacy".to_vec())),
        ]);
        let ls = lines(&file);
        assert_eq!(ls[1], r#"[0.001000, "o", "x"]"#);
        assert_eq!(ls[2], r#"[0.001000, "e", ""]"#);
        assert_eq!(ls[3], r#"[0.000000, "o", "err"]"#);
        assert_eq!(ls[4], r#"[0.001000, "o", "€y"]"#);
        assert_eq!(ls.len(), 5);
    }

    #[test]
    fn control_heavy_output_is_written_as_base64_not_sixfold_escapes() {
        let zeros = vec![0u8; 200_000];
        let file = write(&[(ms(1), Event::Output(zeros.clone()))]);
        let body = file.len() - CastWriter::new(&header()).1.len();
        assert!(body < zeros.len() * 3 / 2, "{body} bytes for 200000 NULs");
        let rec = CastReader::parse(&file).unwrap();
        assert_eq!(rec.events, vec![(ms(1), Event::Output(zeros))]);
        // Ordinary terminal output with a few escapes stays readable text.
        let colored = b"\x1b[1mbold\x1b[0m and plain text\n".repeat(100);
        let file = write(&[(ms(1), Event::Output(colored.clone()))]);
        assert!(!lines(&file).iter().any(|l| l.contains(r#""b""#)));
        assert_eq!(
            CastReader::parse(&file).unwrap().events,
            vec![(ms(1), Event::Output(colored))]
        );
    }

    #[test]
    fn binary_data_is_one_base64_run_not_a_line_per_invalid_byte() {
        // Pseudo-random bytes, as from a compressed file: valid and invalid UTF-8 alternate.
        let random: Vec<u8> = (0u32..300_000)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for event in [Event::Output(random.clone()), Event::Input(random.clone())] {
            let file = write(&[(ms(1), event.clone())]);
            let body = file.len() - CastWriter::new(&header()).1.len();
            assert!(
                body < random.len() * 3 / 2,
                "{body} bytes for {} random bytes",
                random.len()
            );
            assert_eq!(
                CastReader::parse(&file).unwrap().events,
                vec![(ms(1), event)]
            );
        }
        // A character cut at the end of a binary chunk is carried to the next chunk, as on
        // the text path (found by the cast_roundtrip fuzzer).
        let mut cut = random[..1000].to_vec();
        cut.extend_from_slice(&"世".as_bytes()[..2]);
        let file = write(&[
            (ms(1), Event::Output(cut.clone())),
            (ms(2), Event::Output(b"\x96 ok".to_vec())),
        ]);
        let events = CastReader::parse(&file).unwrap().events;
        assert_eq!(events[0], (ms(1), Event::Output(cut[..1000].to_vec())));
        assert_eq!(
            events[1],
            (ms(2), Event::Output("世 ok".as_bytes().to_vec()))
        );
        assert_eq!(incomplete_tail(b"ab\xe4\xb8"), 2);
        assert_eq!(incomplete_tail(b"ab\xe4\xb8\x96"), 0);
        assert_eq!(incomplete_tail(b"ab\xff"), 0);
        assert_eq!(incomplete_tail(b"\x80\x80\x80"), 0);
        assert_eq!(incomplete_tail(b""), 0);
        // Text in any script stays text, invalid bytes among it too.
        let text = "Grüße, 世界! Ünïcödé ok\n".repeat(50).into_bytes();
        let mut with_invalid = text.clone();
        with_invalid.insert(100, 0xff);
        for data in [text, with_invalid] {
            let file = write(&[(ms(1), Event::Output(data.clone()))]);
            assert!(lines(&file).iter().any(|l| l.contains("世界")));
            assert_eq!(
                CastReader::parse(&file).unwrap().events,
                vec![(ms(1), Event::Output(data))]
            );
        }
    }

    #[test]
    fn invalid_sequences_become_raw_runs() {
        let file = write(&[(
            ms(5),
            Event::Output(b"a\xff\xfe\xc0\x80b\xed\xa0\x80".to_vec()),
        )]);
        let ls = lines(&file);
        assert_eq!(ls[1], r#"[0.005000, "o", "a"]"#);
        assert_eq!(ls[2], r#"[0.000000, "b", "o://7AgA=="]"#);
        assert_eq!(ls[3], r#"[0.000000, "o", "b"]"#);
        // A surrogate encoded in UTF-8 is invalid, not incomplete.
        assert_eq!(ls[4], r#"[0.000000, "b", "o:7aCA"]"#);
        let rec = CastReader::parse(&file).unwrap();
        assert_eq!(
            rec.events,
            vec![(
                ms(5),
                Event::Output(b"a\xff\xfe\xc0\x80b\xed\xa0\x80".to_vec())
            )]
        );
    }

    #[test]
    fn carried_bytes_are_flushed_at_finish_and_at_exit() {
        let file = write(&[(ms(1), Event::Input(b"q\xf0\x9f".to_vec()))]);
        let ls = lines(&file);
        assert_eq!(ls[1], r#"[0.001000, "i", "q"]"#);
        assert_eq!(ls[2], r#"[1.000000, "b", "i:8J8="]"#);
        let rec = CastReader::parse(&file).unwrap();
        assert_eq!(streams(&rec.events)[2], b"q\xf0\x9f");

        let file = write(&[
            (ms(1), Event::Output(b"\xe2\x82".to_vec())),
            (ms(2), Event::Error(b"\xc3".to_vec())),
            (ms(3), Event::Exit(0)),
        ]);
        let ls = lines(&file);
        assert_eq!(ls[1], r#"[0.003000, "b", "o:4oI="]"#);
        assert_eq!(ls[2], r#"[0.000000, "b", "e:ww=="]"#);
        assert_eq!(ls[3], r#"[0.000000, "x", "0"]"#);
        assert_eq!(ls.len(), 4);
    }

    #[test]
    fn intervals_are_relative_and_read_back_exactly() {
        let times = [
            us(1_500_000),
            us(1_500_250),
            us(3_000_000),
            us(3_000_000),
            Duration::from_nanos(3_000_000_999),
            us(86_400_000_001),
        ];
        let events: Vec<_> = times
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, Event::Marker(i.to_string())))
            .collect();
        let file = write(&events);
        let ls = lines(&file);
        assert!(ls[1].starts_with("[1.500000,"));
        assert!(ls[2].starts_with("[0.000250,"));
        assert!(ls[3].starts_with("[1.499750,"));
        assert!(ls[4].starts_with("[0.000000,"));
        assert!(ls[5].starts_with("[0.000000,"));
        assert!(ls[6].starts_with("[86397.000001,"));
        let rec = CastReader::parse(&file).unwrap();
        let read: Vec<Duration> = rec.events.iter().map(|(t, _)| *t).collect();
        let expected: Vec<Duration> = times.iter().map(|t| us(micros(*t))).collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn times_past_the_readers_limit_are_capped_not_unreadable() {
        // Found by fuzzing (fuzz/corpus/cast_roundtrip/crash-interval-beyond-1e9s): an event
        // 72 057 594 054 s into a session was written with an interval the reader refuses, so
        // the whole recording became unreadable.
        let cap = Duration::from_secs(1_000_000_000);
        let file = write(&[
            (ms(1), Event::Output(b"a".to_vec())),
            (
                Duration::from_secs(72_057_594_054),
                Event::Output(b"b".to_vec()),
            ),
            (Duration::from_micros(u64::MAX), Event::Exit(0)),
        ]);
        let rec = CastReader::parse(&file).unwrap();
        assert_eq!(
            rec.events,
            vec![
                (ms(1), Event::Output(b"a".to_vec())),
                (cap, Event::Output(b"b".to_vec())),
                (cap, Event::Exit(0)),
            ]
        );
    }

    #[test]
    fn time_going_backwards_is_recorded_as_no_time() {
        let file = write(&[
            (ms(10), Event::Marker("a".into())),
            (ms(5), Event::Marker("b".into())),
            (ms(12), Event::Marker("c".into())),
        ]);
        let rec = CastReader::parse(&file).unwrap();
        let read: Vec<Duration> = rec.events.iter().map(|(t, _)| *t).collect();
        assert_eq!(read, vec![ms(10), ms(10), ms(12)]);
    }

    #[test]
    fn resize_exit_and_marker_round_trip() {
        let events = vec![
            (
                ms(1),
                Event::Resize {
                    cols: 1,
                    rows: 65535,
                },
            ),
            (ms(2), Event::Marker("terminated by \"bob\"\n".into())),
            (ms(3), Event::Marker(String::new())),
            (ms(4), Event::Exit(-1)),
            (ms(5), Event::Exit(i32::MIN)),
        ];
        let rec = CastReader::parse(&write(&events)).unwrap();
        assert_eq!(rec.events, events);
    }

    #[test]
    fn overlong_markers_are_truncated_at_a_character_boundary() {
        let label = "€".repeat(MAX_MARKER_BYTES);
        let rec = CastReader::parse(&write(&[(ms(1), Event::Marker(label))])).unwrap();
        let Event::Marker(read) = &rec.events[0].1 else {
            panic!("not a marker")
        };
        assert!(read.len() <= MAX_MARKER_BYTES && read.len() > MAX_MARKER_BYTES - 3);
    }

    #[test]
    fn large_chunks_are_split_into_bounded_lines() {
        let controls = vec![0x01u8; 1 << 20];
        let garbage = vec![0xffu8; 1 << 20];
        let events = vec![
            (ms(1), Event::Output(controls.clone())),
            (ms(2), Event::Error(garbage.clone())),
        ];
        let file = write(&events);
        let ls = lines(&file);
        assert!(ls.iter().all(|l| l.len() <= MAX_LINE_BYTES));
        assert!(ls.len() > 30);
        let rec = CastReader::parse(&file).unwrap();
        assert_eq!(rec.events, events);
    }

    #[test]
    fn stderr_keeps_its_identity_between_stdout() {
        let events = vec![
            (ms(1), Event::Output(b"out1\n".to_vec())),
            (ms(1), Event::Error(b"err1\n".to_vec())),
            (ms(1), Event::Output(b"out2\n".to_vec())),
            (ms(2), Event::Error(b"err2".to_vec())),
            (ms(2), Event::Error(b" more\n".to_vec())),
        ];
        let rec = CastReader::parse(&write(&events)).unwrap();
        assert_eq!(
            rec.events,
            vec![
                (ms(1), Event::Output(b"out1\n".to_vec())),
                (ms(1), Event::Error(b"err1\n".to_vec())),
                (ms(1), Event::Output(b"out2\n".to_vec())),
                (ms(2), Event::Error(b"err2 more\n".to_vec())),
            ]
        );
    }

    #[test]
    fn empty_data_writes_nothing() {
        let (mut w, _) = CastWriter::new(&header());
        let mut out = Vec::new();
        assert_eq!(w.event(ms(1), &Event::Output(Vec::new()), &mut out), 0);
        assert_eq!(w.event(ms(1), &Event::Output(vec![0xe2]), &mut out), 0);
        assert!(out.is_empty());
    }

    fn header_line() -> String {
        CastWriter::new(&header()).1
    }

    fn parse_err(body: &str) -> CastError {
        let file = format!("{}{body}", header_line());
        CastReader::parse(file.as_bytes()).unwrap_err()
    }

    #[test]
    fn reader_errors_name_the_line() {
        let e = parse_err("[0.1, \"o\", \"a\"]\n\n# comment\n[0.1, \"o\", \"a\"\n");
        assert_eq!(e.line, 5);
        assert!(matches!(e.kind, CastErrorKind::Syntax(_)), "{e}");
        assert!(e.to_string().starts_with("line 5: not an event"), "{e}");

        let e = parse_err("[0.1, \"o\", \"a\", \"extra\"]\n");
        assert_eq!(e.line, 2);
        assert!(matches!(e.kind, CastErrorKind::Syntax(_)));

        let e = parse_err("[0.1, \"o\", 5]\n");
        assert!(matches!(e.kind, CastErrorKind::Syntax(_)));

        let e = parse_err("[-0.1, \"o\", \"a\"]\n");
        assert_eq!(e.kind, CastErrorKind::Interval("-0.1".into()));

        let e = parse_err("[0.1, \"r\", \"80by24\"]\n");
        assert_eq!(
            (e.line, e.kind),
            (2, CastErrorKind::Resize("80by24".into()))
        );
        let e = parse_err("[0.1, \"r\", \"80x99999\"]\n");
        assert!(matches!(e.kind, CastErrorKind::Resize(_)));
        let e = parse_err("[0.1, \"x\", \"zero\"]\n");
        assert_eq!(e.kind, CastErrorKind::Exit("zero".into()));
        let e = parse_err("[0.1, \"b\", \"o:!!\"]\n");
        assert_eq!(e.kind, CastErrorKind::Bytes("o:!!".into()));
        let e = parse_err("[0.1, \"b\", \"q:AA==\"]\n");
        assert!(matches!(e.kind, CastErrorKind::Bytes(_)));
        let e = parse_err("[0.1, \"e\", \"x\"]\n");
        assert_eq!(e.kind, CastErrorKind::TagData("x".into()));

        let e = parse_err("[0.1, \"o\", \"a\"]\n[0.1, \"e\", \"\"]\n[0.0, \"i\", \"a\"]\n");
        assert_eq!(e.line, 4);
        assert_eq!(
            e.kind,
            CastErrorKind::DanglingTag {
                tag_line: 3,
                code: "i".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "line 4: the stderr tag on line 3 is followed by a \"i\" line, not an \"o\" line"
        );

        let e = CastReader::parse(b"").unwrap_err();
        assert_eq!(e.kind, CastErrorKind::Empty);
        let e = CastReader::parse(b"[1, \"o\", \"a\"]\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(matches!(e.kind, CastErrorKind::Header(_)));
        let e =
            CastReader::parse(b"{\"version\": 2, \"width\": 80, \"height\": 24}\n").unwrap_err();
        assert_eq!(e.kind, CastErrorKind::Version("2".into()));
        let e = CastReader::parse(b"{\"version\": 3, \"term\": {\"cols\": 80, \"rows\": 24}}\n")
            .unwrap_err();
        assert!(
            e.to_string().contains("not a kubectl-aexec recording"),
            "{e}"
        );
        let newer = header_line().replace("\"formatVersion\":1", "\"formatVersion\":2");
        let e = CastReader::parse(newer.as_bytes()).unwrap_err();
        assert_eq!(e.kind, CastErrorKind::FormatVersion(2));

        let mut bad = header_line().into_bytes();
        bad.extend_from_slice(b"[0.1, \"o\", \"\xff\"]\n");
        let e = CastReader::parse(&bad).unwrap_err();
        assert_eq!((e.line, e.kind), (2, CastErrorKind::NotUtf8));
    }

    #[test]
    fn reader_tolerates_comments_unknown_codes_and_a_trailing_tag() {
        let body = "# a comment\n[1.0, \"o\", \"a\"]\n\n[0.5, \"z\", \"whatever\"]\n\
                    [0.25, \"o\", \"b\"]\r\n[1.0, \"e\", \"\"]";
        let file = format!("{}{body}", header_line());
        let rec = CastReader::parse(file.as_bytes()).unwrap();
        assert_eq!(rec.ignored_events, 1);
        // The unknown line's interval still counts, as in asciinema's players.
        assert_eq!(
            rec.events,
            vec![
                (ms(1000), Event::Output(b"a".to_vec())),
                (ms(1750), Event::Output(b"b".to_vec())),
            ]
        );
    }

    #[test]
    fn an_unknown_code_on_an_unterminated_last_line_is_counted() {
        // Found by fuzzing (fuzz/corpus/cast_reader/crash-ignored-last-line): parse() counted
        // the ignored lines before reading a last line that has no newline.
        let file = format!("{}[1.0, \"o\", \"a\"]\n[0.5, \"z\", \"\"]", header_line());
        let rec = CastReader::parse(file.as_bytes()).unwrap();
        assert_eq!(rec.ignored_events, 1);
        assert_eq!(rec.events, vec![(ms(1000), Event::Output(b"a".to_vec()))]);
    }

    #[test]
    fn oversized_lines_are_rejected_without_buffering() {
        let mut reader = CastReader::new();
        let mut events = Vec::new();
        reader.feed(header_line().as_bytes(), &mut events).unwrap();
        reader.feed(b"[0.1, \"o\", \"", &mut events).unwrap();
        let chunk = vec![b'a'; 64 * 1024];
        let mut failed = None;
        for _ in 0..32 {
            match reader.feed(&chunk, &mut events) {
                Ok(()) => assert!(reader.partial.len() <= MAX_LINE_BYTES + 1),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let e = failed.unwrap();
        assert_eq!(
            (e.line, e.kind),
            (
                2,
                CastErrorKind::TooLong {
                    limit: MAX_LINE_BYTES
                }
            )
        );
        assert!(reader.partial.capacity() == 0);
        let again = reader.feed(b"\n", &mut events).unwrap_err();
        assert_eq!(again.kind, CastErrorKind::Failed);

        // A whole line given at once is checked too.
        let mut file = header_line().into_bytes();
        file.extend_from_slice(b"[0.1, \"o\", \"");
        file.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES));
        file.extend_from_slice(b"\"]\n");
        let e = CastReader::parse(&file).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(matches!(e.kind, CastErrorKind::TooLong { .. }));
    }

    #[test]
    fn the_longest_allowed_header_fits() {
        let mut f = facts();
        f.command = vec!["\u{1}".repeat(4096); 256];
        let h = Header::new(f, 5, None);
        let (_, line) = CastWriter::new(&h);
        assert!(line.len() > MAX_LINE_BYTES && line.len() <= MAX_HEADER_BYTES);
        assert!(h.command.as_ref().unwrap().len() <= MAX_DISPLAY_BYTES);
        assert_eq!(CastReader::parse(line.as_bytes()).unwrap().header, h);
    }

    fn sample() -> Recording {
        CastReader::parse(&sample_file()).unwrap()
    }

    fn sample_file() -> Vec<u8> {
        let events = vec![
            (
                ms(100),
                Event::Output(b"\x1b[1;31mred\x1b[0m text\r\n".to_vec()),
            ),
            (ms(200), Event::Error(b"warning: \xffbad\n".to_vec())),
            (ms(300), Event::Input(b"ls -lx\x7f\r".to_vec())),
            (
                ms(400),
                Event::Output(b"\x1b]0;title\x07a\x1b[?25lb\x1bPq#0\x1b\\c\x1b(Bd\n".to_vec()),
            ),
            (
                ms(500),
                Event::Resize {
                    cols: 100,
                    rows: 30,
                },
            ),
            (ms(550), Event::Output(b"partial".to_vec())),
            (ms(600), Event::Marker("terminated by bob".into())),
            (ms(700), Event::Exit(2)),
        ];
        write(&events)
    }

    #[test]
    fn v2_conversion_uses_absolute_times_and_standard_codes() {
        let v2 = to_v2(&sample());
        let ls: Vec<&str> = v2.lines().collect();
        let h: serde_json::Value = serde_json::from_str(ls[0]).unwrap();
        assert_eq!(h["version"], 2);
        assert_eq!(h["width"], 80);
        assert_eq!(h["height"], 24);
        assert_eq!(h["timestamp"], 1_700_000_000u64);
        assert_eq!(h["title"], "team-a/debug-1 (web-0/app)");
        assert_eq!(h["env"]["TERM"], "xterm-256color");
        assert!(h.get("term").is_none() && h.get("aexec").is_none());
        assert_eq!(
            ls[1],
            r#"[0.100000, "o", "\u001b[1;31mred\u001b[0m text\r\n"]"#
        );
        assert_eq!(ls[2], "[0.200000, \"o\", \"warning: \u{fffd}bad\\n\"]");
        assert_eq!(
            ls[3],
            r#"[0.300000, "i", "ls -lx\u007f\r"]"#.replace("\\u007f", "\u{7f}")
        );
        assert_eq!(ls[5], r#"[0.500000, "r", "100x30"]"#);
        assert_eq!(ls[7], r#"[0.600000, "m", "terminated by bob"]"#);
        assert_eq!(ls[8], r#"[0.700000, "m", "exit 2"]"#);
        assert_eq!(ls.len(), 9);
        for l in &ls[1..] {
            let (_, code, _): (f64, String, String) = serde_json::from_str(l).unwrap();
            assert!(["o", "i", "r", "m"].contains(&code.as_str()));
        }
    }

    #[test]
    fn text_transcript_shows_the_screen_and_marks_streams() {
        let text = to_text(&sample());
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            vec![
                "red text",
                "[stderr] warning: \u{fffd}bad",
                "[stdin] ls -l",
                "abcd",
                "[resize 100x30]",
                "partial",
                "[marker] terminated by bob",
                "[exit 2]",
            ]
        );
        assert!(text.starts_with("# aexec session team-a/debug-1 (11111111-2222)\n"));
        assert!(text.contains("# command: sh -c 'echo '\\''hi'\\'' && ls'\n"));
        assert!(text.contains("# requested by alice [dev], reason: INC-42\n"));
        assert!(text.contains("# policy prod, approved by bob, dave\n"));
        assert!(text.contains("# started 2023-11-14T22:13:20+00:00\n"));
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn header_facts_cannot_put_control_characters_in_the_transcript() {
        // Found by fuzzing (fuzz/corpus/cast_reader/crash-control-in-header): the session's
        // namespace, name, UID, pod, pod UID and container went into the transcript's header
        // lines as they were, so a recording could move the reader's cursor or clear their
        // screen (`\r`, `\x1b[2J`) when its transcript is shown in a terminal.
        let mut rec = sample();
        let f = &mut rec.header.aexec;
        f.namespace = "ns\r\x1b[2J".into();
        f.name = "n\nfake line".into();
        f.uid = "u\x07".into();
        f.pod = "p\x1b]0;title\x07".into();
        f.pod_uid = "\x08\x08".into();
        f.container = "c\x7f".into();
        let text = to_text(&rec);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(
            text.starts_with("# aexec session ns  [2J/n fake line (u )\n"),
            "{text}"
        );
    }

    #[test]
    fn display_command_quotes_what_a_shell_would_split() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            display_command(&argv(&["ls", "-la", "/tmp"])),
            "ls -la /tmp"
        );
        assert_eq!(
            display_command(&argv(&["echo", "a b", ""])),
            "echo 'a b' ''"
        );
        assert_eq!(display_command(&argv(&["it's"])), "'it'\\''s'");
    }

    /// Converts `file` with a [`Converter`] fed in the pieces `split` chooses.
    fn convert_in_pieces(
        export: Export,
        file: &[u8],
        mut split: impl FnMut(usize) -> usize,
    ) -> Result<Vec<u8>, CastError> {
        let mut c = Converter::new(export);
        let mut out = Vec::new();
        let mut rest = file;
        while !rest.is_empty() {
            let n = split(rest.len()).clamp(1, rest.len());
            c.feed(&rest[..n], &mut out)?;
            rest = &rest[n..];
        }
        c.finish(&mut out)?;
        Ok(out)
    }

    /// Both exports of `file`, whole and streamed in several ways, are the same bytes.
    fn assert_streamed_conversions_match(file: &[u8], rng: &mut Rng, what: &str) {
        let rec = CastReader::parse(file).unwrap();
        for (export, whole) in [
            (Export::V2, to_v2(&rec).into_bytes()),
            (Export::Text, to_text(&rec).into_bytes()),
        ] {
            let at_once = convert_in_pieces(export, file, |n| n).unwrap();
            assert!(at_once == whole, "{what}: {export:?} fed whole differs");
            let random = convert_in_pieces(export, file, |_| rng.below(9000) as usize).unwrap();
            assert!(
                random == whole,
                "{what}: {export:?} fed in random pieces differs"
            );
            if file.len() < 4_000 {
                let bytewise = convert_in_pieces(export, file, |_| 1).unwrap();
                assert!(
                    bytewise == whole,
                    "{what}: {export:?} fed byte by byte differs"
                );
            }
        }
    }

    #[test]
    fn streamed_conversion_matches_the_whole_file_conversion_on_fixtures() {
        let mut rng = Rng(7);
        assert_streamed_conversions_match(&sample_file(), &mut rng, "sample");
        // Comments, an unknown code, CRLF, a trailing tag and no final newline.
        let odd = format!(
            "{}# a comment\n[1.0, \"o\", \"a\"]\n\n[0.5, \"z\", \"whatever\"]\n\
             [0.25, \"o\", \"b\\u0008c\"]\r\n[1.0, \"e\", \"\"]",
            header_line()
        );
        assert_streamed_conversions_match(odd.as_bytes(), &mut rng, "odd");
        // Only a header, with and without its newline.
        let head = header_line();
        assert_streamed_conversions_match(head.as_bytes(), &mut rng, "header");
        assert_streamed_conversions_match(head.trim_end().as_bytes(), &mut rng, "bare header");
        // Pieces of one stream at one time merge up to the merge limit, across lines.
        let big = write(&[
            (ms(1), Event::Output(vec![b'x'; MERGE_LIMIT + 70_000])),
            (ms(1), Event::Output(b"\xff\xfeend\n".to_vec())),
            (ms(2), Event::Error(vec![0x01; 3 * 48 * 1024 + 5])),
        ]);
        assert_streamed_conversions_match(&big, &mut rng, "large events");
    }

    #[test]
    fn streamed_conversion_matches_the_whole_file_conversion_on_random_recordings() {
        for seed in 1..=30u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut events = Vec::new();
            let mut t = 0u64;
            for _ in 0..rng.below(150) + 1 {
                // Often the same time, so that pieces merge.
                t += rng.below(3) * rng.below(1_000_000);
                let len = match rng.below(40) {
                    0 => 0,
                    1 if seed % 6 == 0 => 100_000 + rng.below(100_000) as usize,
                    _ => rng.below(60) as usize + 1,
                };
                let mut bytes = rng.bytes(len);
                // Terminal controls the transcript interprets.
                for b in bytes.iter_mut() {
                    match rng.below(30) {
                        0 => *b = b'\r',
                        1 => *b = b'\n',
                        2 => *b = 0x08,
                        3 => *b = 0x1b,
                        4 => *b = b'[',
                        _ => {}
                    }
                }
                let ev = match rng.below(10) {
                    0..=3 => Event::Output(bytes),
                    4 | 5 => Event::Error(bytes),
                    6 | 7 => Event::Input(bytes),
                    8 => Event::Resize {
                        cols: rng.below(300) as u16 + 1,
                        rows: rng.below(100) as u16 + 1,
                    },
                    _ => Event::Marker(String::from_utf8_lossy(&rng.bytes(10)).into_owned()),
                };
                events.push((us(t), ev));
            }
            if seed % 2 == 0 {
                events.push((us(t + 1), Event::Exit(seed as i32 - 30)));
            }
            let file = write(&events);
            assert_streamed_conversions_match(&file, &mut rng, &format!("seed {seed}"));
        }
    }

    #[test]
    fn streamed_conversion_reports_the_whole_file_error() {
        let bad = format!(
            "{}[0.1, \"o\", \"a\"]\n[0.1, \"r\", \"80by24\"]\n",
            header_line()
        );
        let whole = CastReader::parse(bad.as_bytes()).unwrap_err();
        for export in [Export::V2, Export::Text] {
            let e = convert_in_pieces(export, bad.as_bytes(), |_| 7).unwrap_err();
            assert_eq!(e, whole);
        }
        let e = convert_in_pieces(Export::V2, b"", |n| n).unwrap_err();
        assert_eq!(e.kind, CastErrorKind::Empty);
    }

    #[test]
    fn an_endless_line_streams_in_bounded_memory() {
        use crate::transcript::MAX_TEXT_LINE;
        // 3 MiB without a newline: the terminal wraps it every 80 columns; the rows are joined
        // back into lines of at most MAX_TEXT_LINE characters (and the row that crossed it).
        let file = write(&[(ms(1), Event::Output(vec![b'a'; 3 << 20]))]);
        let text = to_text(&CastReader::parse(&file).unwrap());
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(body.iter().all(|l| l.bytes().all(|b| b == b'a')));
        assert!(body.iter().all(|l| l.len() < MAX_TEXT_LINE + 80));
        assert_eq!(body.iter().map(|l| l.len()).sum::<usize>(), 3 << 20);
        assert_eq!(
            body.len(),
            (3usize << 20).div_ceil(MAX_TEXT_LINE + 80 - MAX_TEXT_LINE % 80)
        );

        // The converter holds no more than one such line, whatever the recording's size.
        let mut c = Converter::new(Export::Text);
        let mut streamed = Vec::new();
        for piece in file.chunks(64 * 1024) {
            c.feed(piece, &mut streamed).unwrap();
            let held = c.transcript.as_ref().map_or(0, |t| t.held());
            assert!(held <= MAX_TEXT_LINE + 80, "{held}");
        }
        c.finish(&mut streamed).unwrap();
        assert!(streamed == text.as_bytes());
    }
}
