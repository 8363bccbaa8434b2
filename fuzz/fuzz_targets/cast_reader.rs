//! The asciicast reader (`recording/src/cast.rs`) on arbitrary files: reading never panics and
//! allocates only in proportion to the input; reading whole, in any chunking, or line by line
//! gives the same events and the same error; a recording it accepts converts to asciicast v2
//! (every line valid JSON) and to a text transcript (no escape sequences, no control characters
//! but newline and tab); and writing the events it read gives them back.
#![no_main]

use std::time::Duration;

use aexec_fuzz::cast::{expected, normalize, read_chunked, read_lines};
use aexec_recording::cast::{CastReader, CastWriter, Event, to_text, to_v2};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Chunk sizes derived from the input itself (a cheap deterministic sequence).
fn sizes(data: &[u8]) -> Vec<usize> {
    let mut x = data.len() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    (0..16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 97) as usize
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let whole = read_chunked(data, &[]);
    assert_eq!(
        read_chunked(data, &sizes(data)),
        whole,
        "chunked feeding differs"
    );
    assert_eq!(read_lines(data), whole, "line by line differs");

    let parsed = CastReader::parse(data);
    let rec = match (parsed, whole) {
        (Ok(rec), Ok((header, events, ignored))) => {
            assert_eq!(rec.header, header);
            assert_eq!(rec.ignored_events, ignored);
            assert_eq!(normalize(rec.events.clone()), normalize(events));
            rec
        }
        (Err(a), Err(b)) => return assert_eq!(a, b),
        (a, b) => panic!("parse and feed disagree: {a:?} vs {b:?}"),
    };
    assert!(
        rec.events.windows(2).all(|w| w[0].0 <= w[1].0),
        "times go backwards"
    );
    assert!(
        rec.events.iter().all(|(_, ev)| match ev {
            Event::Output(b) | Event::Error(b) | Event::Input(b) => !b.is_empty(),
            _ => true,
        }),
        "an empty data event"
    );

    let v2 = to_v2(&rec);
    let lines: Vec<&str> = v2.lines().collect();
    assert_eq!(
        lines.len(),
        rec.events.len() + 1,
        "v2 has one line per event"
    );
    let head: Value = serde_json::from_str(lines[0]).expect("v2 header is JSON");
    assert_eq!(head["version"], 2);
    for (line, (at, _)) in lines[1..].iter().zip(&rec.events) {
        let (t, code, _): (f64, String, String) =
            serde_json::from_str(line).expect("v2 event is [time, code, data]");
        assert!(
            ["o", "i", "r", "m"].contains(&code.as_str()),
            "v2 code {code}"
        );
        assert!((t - at.as_secs_f64()).abs() < 1e-3 * (1.0 + at.as_secs_f64()));
    }

    let text = to_text(&rec);
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        panic!("text transcript holds control character {c:?}");
    }

    // Writing what was read gives it back.
    let (mut writer, mut file) = CastWriter::new(&rec.header);
    let mut file = std::mem::take(&mut file).into_bytes();
    for (at, ev) in &rec.events {
        writer.event(*at, ev, &mut file);
    }
    let end = rec.events.last().map_or(Duration::ZERO, |(at, _)| *at);
    writer.finish(end, &mut file);
    let again = CastReader::parse(&file).expect("a written recording reads back");
    assert_eq!(again.header, rec.header);
    assert_eq!(normalize(again.events), expected(&rec.events, end));
});
