//! Inputs for the asciicast targets and the reference model of what a written recording reads
//! back as.

use std::collections::BTreeMap;
use std::time::Duration;

use aexec_crds::UserRef;
use aexec_recording::cast::{CastError, CastReader, Event, Header, MAX_MARKER_BYTES, SessionFacts};
use arbitrary::{Arbitrary, Result, Unstructured};

use crate::{Name, bounded_vec, strings};

/// Most bytes one generated chunk may hold (a repeated piece can exceed the writer's per-line
/// limits, 64 KiB of text and 48 KiB of raw bytes, so that splitting is exercised).
const MAX_CHUNK: usize = 256 * 1024;

/// Bytes for a data event: anything, text, a character cut in two, or a piece repeated.
#[derive(Clone, Debug)]
pub struct Chunk(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Chunk {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let bytes = match u.int_in_range(0u8..=4)? {
            0 => Vec::<u8>::arbitrary(u)?,
            1 => String::arbitrary(u)?.into_bytes(),
            2 => {
                // Part of a multi-byte character, as a relayed frame can end.
                let c = char::arbitrary(u)?;
                let mut buf = [0u8; 4];
                let enc = c.encode_utf8(&mut buf).as_bytes();
                let cut = u.int_in_range(0..=enc.len())?;
                if u.arbitrary()? {
                    enc[..cut].to_vec()
                } else {
                    enc[cut..].to_vec()
                }
            }
            3 => {
                let piece = Vec::<u8>::arbitrary(u)?;
                let times = usize::from(u.arbitrary::<u16>()?);
                repeat(&piece, times)
            }
            _ => {
                let piece = String::arbitrary(u)?.into_bytes();
                let times = usize::from(u.arbitrary::<u16>()?);
                repeat(&piece, times)
            }
        };
        Ok(Chunk(bytes))
    }
}

fn repeat(piece: &[u8], times: usize) -> Vec<u8> {
    if piece.is_empty() {
        return Vec::new();
    }
    let times = times.min(MAX_CHUNK / piece.len());
    piece.repeat(times)
}

/// One event to write.
#[derive(Clone, Debug, Arbitrary)]
pub enum EventSpec {
    Output(Chunk),
    Error(Chunk),
    Input(Chunk),
    Resize {
        cols: u16,
        rows: u16,
    },
    Exit(i32),
    Marker(String),
    /// A marker longer than the writer keeps.
    LongMarker {
        piece: String,
        times: u16,
    },
}

impl EventSpec {
    pub fn event(self) -> Event {
        match self {
            EventSpec::Output(c) => Event::Output(c.0),
            EventSpec::Error(c) => Event::Error(c.0),
            EventSpec::Input(c) => Event::Input(c.0),
            EventSpec::Resize { cols, rows } => Event::Resize { cols, rows },
            EventSpec::Exit(code) => Event::Exit(code),
            EventSpec::Marker(label) => Event::Marker(label),
            EventSpec::LongMarker { piece, times } => {
                let times = usize::from(times).min(MAX_CHUNK / piece.len().max(1));
                Event::Marker(piece.repeat(times))
            }
        }
    }
}

/// When an event happens, relative to the one before (time may even go backwards: the writer
/// must record that as no time).
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum When {
    Same,
    Later(u32),
    Earlier(u32),
    /// Any absolute time, however far.
    At(u64),
}

impl When {
    pub fn after(self, micros: u64) -> u64 {
        match self {
            When::Same => micros,
            When::Later(d) => micros.saturating_add(u64::from(d)),
            When::Earlier(d) => micros.saturating_sub(u64::from(d)),
            When::At(t) => t,
        }
    }
}

/// The header of a recording: any session facts.
#[derive(Clone, Debug)]
pub struct HeaderSpec(pub Header);

impl<'a> Arbitrary<'a> for HeaderSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let facts = SessionFacts {
            namespace: String::arbitrary(u)?,
            name: String::arbitrary(u)?,
            uid: String::arbitrary(u)?,
            pod: String::arbitrary(u)?,
            pod_uid: String::arbitrary(u)?,
            container: String::arbitrary(u)?,
            command: bounded_vec(u, 8)?,
            tty: u.arbitrary()?,
            stdin: u.arbitrary()?,
            requester: UserRef {
                username: Name::arbitrary(u)?.0,
                groups: strings(bounded_vec(u, 4)?),
            },
            reason: u.arbitrary()?,
            policy: u.arbitrary()?,
            approvers: strings(bounded_vec(u, 4)?),
            ..SessionFacts::default()
        };
        let mut header = Header::new(facts, u.arbitrary()?, u.arbitrary()?);
        let env: Vec<(String, String)> = bounded_vec(u, 4)?;
        header.env = env.into_iter().collect::<BTreeMap<_, _>>();
        Ok(HeaderSpec(header))
    }
}

/// The largest character boundary of `s` at or below `max`.
fn truncated(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// How many leading bytes of `data` can be written now: all but an incomplete UTF-8 sequence at
/// its very end, which waits for the stream's next chunk.
fn complete_len(data: &[u8]) -> usize {
    let mut pos = 0;
    loop {
        match std::str::from_utf8(&data[pos..]) {
            Ok(_) => return data.len(),
            Err(e) => match e.error_len() {
                Some(n) => pos += e.valid_up_to() + n,
                None => return pos + e.valid_up_to(),
            },
        }
    }
}

fn stream(ev: &Event) -> Option<(usize, &[u8])> {
    match ev {
        Event::Output(b) => Some((0, b)),
        Event::Error(b) => Some((1, b)),
        Event::Input(b) => Some((2, b)),
        _ => None,
    }
}

fn data_event(stream: usize, bytes: Vec<u8>) -> Event {
    match stream {
        0 => Event::Output(bytes),
        1 => Event::Error(bytes),
        _ => Event::Input(bytes),
    }
}

/// What `CastReader::parse` must return for `events` written with `CastWriter::event` at their
/// times and finished with `CastWriter::finish(end)`, in [`normalize`]d form, following the
/// module's documented contract: times in whole microseconds, capped at 1e9 s and never going
/// backwards; an
/// incomplete UTF-8 sequence at the end of a chunk moves to the stream's next chunk (written at
/// that chunk's time), or is written at the next exit or at the end; markers are truncated at a
/// character boundary; every byte comes back.
pub fn expected(events: &[(Duration, Event)], end: Duration) -> Vec<(Duration, Event)> {
    let mut m = Model::default();
    for (at, ev) in events {
        let at = micros(at);
        if let Some((s, bytes)) = stream(ev) {
            let mut data = std::mem::take(&mut m.carry[s]);
            data.extend_from_slice(bytes);
            let n = complete_len(&data);
            m.carry[s] = data.split_off(n);
            if !data.is_empty() {
                m.emit(at, data_event(s, data));
            }
            continue;
        }
        match ev {
            Event::Exit(_) => {
                m.flush(at);
                m.emit(at, ev.clone());
            }
            Event::Marker(label) => {
                let label = truncated(label, MAX_MARKER_BYTES).to_owned();
                m.emit(at, Event::Marker(label));
            }
            _ => m.emit(at, ev.clone()),
        }
    }
    m.flush(micros(&end));
    normalize(m.out)
}

/// A time as written: whole microseconds, at most 1e9 s (the longest interval a reader takes).
fn micros(d: &Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .min(1_000_000_000 * 1_000_000)
}

#[derive(Default)]
struct Model {
    /// Time of the last line written, in microseconds.
    last: u64,
    /// Per stream (stdout, stderr, stdin): bytes waiting for the rest of their character.
    carry: [Vec<u8>; 3],
    out: Vec<(Duration, Event)>,
}

impl Model {
    fn emit(&mut self, at: u64, ev: Event) {
        self.last = self.last.max(at);
        self.out.push((Duration::from_micros(self.last), ev));
    }

    fn flush(&mut self, at: u64) {
        for s in 0..3 {
            let c = std::mem::take(&mut self.carry[s]);
            if !c.is_empty() {
                self.emit(at, data_event(s, c));
            }
        }
    }
}

/// Merges consecutive data events of one stream at one time, whatever their size. The reader
/// merges the lines of one written event only up to a size limit; comparing merged forms makes
/// the check independent of where that limit cuts.
pub fn normalize(events: Vec<(Duration, Event)>) -> Vec<(Duration, Event)> {
    let mut out: Vec<(Duration, Event)> = Vec::with_capacity(events.len());
    for (at, ev) in events {
        if let Some((last_at, last)) = out.last_mut()
            && *last_at == at
        {
            match (last, &ev) {
                (Event::Output(a), Event::Output(b))
                | (Event::Error(a), Event::Error(b))
                | (Event::Input(a), Event::Input(b)) => {
                    a.extend_from_slice(b);
                    continue;
                }
                _ => {}
            }
        }
        out.push((at, ev));
    }
    out
}

/// What a reader made of a byte stream: the header and the events line by line, or the first
/// error.
pub type Read = std::result::Result<(Header, Vec<(Duration, Event)>, u64), CastError>;

/// Reads `data` with [`CastReader::feed`] in chunks of the given sizes (the rest in one chunk).
pub fn read_chunked(data: &[u8], sizes: &[usize]) -> Read {
    let mut reader = CastReader::new();
    let mut events = Vec::new();
    let mut rest = data;
    for &n in sizes {
        let n = n.min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        reader.feed(chunk, &mut events)?;
        rest = tail;
    }
    reader.feed(rest, &mut events)?;
    // `finish` consumes the reader: end the last line here so that it is counted below.
    if !data.is_empty() && !data.ends_with(b"\n") {
        reader.feed(b"\n", &mut events)?;
    }
    let ignored = reader.ignored_events();
    let header = reader.finish(&mut events)?;
    Ok((header, events, ignored))
}

/// Reads `data` one line at a time with [`CastReader::line`].
pub fn read_lines(data: &[u8]) -> Read {
    let mut reader = CastReader::new();
    let mut events = Vec::new();
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for line in lines {
        events.extend(reader.line(line)?);
    }
    let ignored = reader.ignored_events();
    let header = reader.finish(&mut events)?;
    Ok((header, events, ignored))
}
