//! The asciicast writer and reader together (`recording/src/cast.rs`): any session facts and any
//! events (any bytes, any chunking, characters cut between chunks, time going backwards or
//! jumping, huge chunks and markers) are written in lines no longer than the limit, each a
//! valid `[interval, code, data]` event with a six-decimal interval, and read back as the
//! reference model says: every byte of every stream, in order, at its time.
#![no_main]

use std::time::Duration;

use aexec_fuzz::bounded_vec;
use aexec_fuzz::cast::{EventSpec, HeaderSpec, When, expected, normalize, read_chunked};
use aexec_recording::cast::{CastReader, CastWriter, Event, MAX_LINE_BYTES};
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Most bytes of data written per input.
const MAX_TOTAL: usize = 2 << 20;

#[derive(Debug)]
struct Input {
    header: HeaderSpec,
    events: Vec<(When, EventSpec)>,
    end: When,
    chunks: Vec<u16>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Input {
            header: u.arbitrary()?,
            events: bounded_vec(u, 64)?,
            end: u.arbitrary()?,
            chunks: bounded_vec(u, 8)?,
        })
    }
}

/// Checks one written line: bounded, and an event a strict JSON reader accepts.
fn check_line(line: &[u8]) {
    assert!(line.len() <= MAX_LINE_BYTES, "line of {} bytes", line.len());
    let text = std::str::from_utf8(line).expect("lines are UTF-8");
    let (_, code, _): (f64, String, String) =
        serde_json::from_str(text).expect("a line is [interval, code, data]");
    assert_eq!(code.chars().count(), 1, "codes are one character");
    let interval = &text[1..text.find(',').expect("a comma")];
    let (_, frac) = interval.split_once('.').expect("a decimal point");
    assert_eq!(frac.len(), 6, "interval {interval} has six decimals");
}

fuzz_target!(|input: Input| {
    let header = input.header.0;
    let (mut writer, line) = CastWriter::new(&header);
    let mut file = line.into_bytes();
    let mut written = Vec::new();
    let mut now = 0u64;
    let mut total = 0usize;
    for (when, spec) in input.events {
        now = when.after(now);
        let at = Duration::from_micros(now);
        let ev = spec.event();
        // Enough for every line-splitting path; more would only test the harness's memory.
        total += match &ev {
            Event::Output(b) | Event::Error(b) | Event::Input(b) => b.len(),
            Event::Marker(m) => m.len(),
            _ => 0,
        };
        if total > MAX_TOTAL {
            break;
        }
        let mut out = Vec::new();
        let n = writer.event(at, &ev, &mut out);
        assert_eq!(n, out.len());
        assert!(
            out.is_empty() || out.ends_with(b"\n"),
            "an event ends with a whole line"
        );
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            check_line(line);
        }
        file.extend_from_slice(&out);
        written.push((at, ev));
    }
    let end = Duration::from_micros(input.end.after(now));
    let mut tail = Vec::new();
    writer.finish(end, &mut tail);
    for line in tail.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        check_line(line);
    }
    file.extend_from_slice(&tail);

    let rec = match CastReader::parse(&file) {
        Ok(rec) => rec,
        Err(e) => panic!("a written recording does not read back: {e}"),
    };
    assert_eq!(rec.header, header);
    assert_eq!(rec.ignored_events, 0);
    assert_eq!(normalize(rec.events), expected(&written, end));

    let sizes: Vec<usize> = input.chunks.iter().map(|&c| usize::from(c)).collect();
    let (h, _, _) = read_chunked(&file, &sizes).expect("reads back in chunks too");
    assert_eq!(h, header);
});
