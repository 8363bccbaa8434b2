//! The hash chain (`recording/src/chain.rs`): segments cut from any stream of pushes hold exactly
//! the bytes pushed, cut only after a newline, and verify; changing, dropping or reordering a
//! segment is caught; `seal_from_metas` with arbitrary sidecars (garbled digests, gaps,
//! duplicates, any order, huge indices) never panics and always produces a manifest that
//! verifies; `Verifier` fed arbitrary segments never panics; file names round-trip. Segments
//! are cut plain or as zstd frames (as the operator stores them): they decode to exactly the
//! bytes pushed, and decoding arbitrary bytes with an arbitrary claimed size never panics and
//! never yields another size than claimed.
#![no_main]

use aexec_fuzz::bounded_vec;
use aexec_recording::chain::{
    Encoding, RecordingFile, SegmentLimits, SegmentMeta, Segmenter, SessionRef, StoredSegment,
    Verifier, parse_file_name, seal, seal_from_metas, segment_name, sidecar_name, verify,
};
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// A digest field as a sidecar could hold it.
#[derive(Debug, Arbitrary)]
enum Digest {
    /// The right value.
    Right,
    /// Well-formed but wrong.
    Other([u8; 32]),
    /// Anything.
    Garbage(String),
}

impl Digest {
    fn apply(&self, right: &str) -> String {
        match self {
            Digest::Right => right.to_owned(),
            Digest::Other(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
            Digest::Garbage(s) => s.clone(),
        }
    }
}

/// A sidecar derived from a real one, possibly damaged.
#[derive(Debug, Arbitrary)]
struct MetaEdit {
    /// Which real segment it starts from.
    of: u8,
    index: Option<u64>,
    bytes: Option<u64>,
    sha256: Digest,
    prev_sha256: Digest,
    chain_sha256: Digest,
}

#[derive(Debug, Arbitrary)]
enum Damage {
    FlipByte { segment: u8, at: u16, bit: u8 },
    Drop(u8),
    Swap(u8, u8),
    Append(Vec<u8>),
}

#[derive(Debug)]
struct Input {
    max_bytes: u16,
    max_age: u16,
    /// Cut segments as zstd frames.
    compress: bool,
    /// The size a garbage segment claims to decode to (small: the fuzzer's malloc limit is
    /// 64 MiB, and claims past the bound are refused before decoding, a unit test shows).
    claimed: u16,
    pushes: Vec<(Vec<u8>, u16)>,
    damage: Damage,
    metas: Vec<MetaEdit>,
    /// Arbitrary segments given to a verifier: (index, bytes).
    given: Vec<(u64, Vec<u8>)>,
    name: String,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Input {
            max_bytes: u.arbitrary()?,
            max_age: u.arbitrary()?,
            compress: u.arbitrary()?,
            claimed: u.arbitrary()?,
            pushes: bounded_vec(u, 32)?,
            damage: u.arbitrary()?,
            metas: bounded_vec(u, 16)?,
            given: bounded_vec(u, 8)?,
            name: u.arbitrary()?,
        })
    }
}

fn session() -> SessionRef {
    SessionRef {
        namespace: "team".into(),
        name: "s".into(),
        uid: "u".into(),
    }
}

fuzz_target!(|input: Input| {
    // Cut a stream of pushes as the recorder does.
    let mut seg = Segmenter::new(SegmentLimits {
        max_bytes: usize::from(input.max_bytes),
        max_age_micros: u64::from(input.max_age),
    });
    if input.compress {
        seg = seg.zstd(1);
    }
    let mut pushed = Vec::new();
    let mut segments: Vec<(SegmentMeta, Vec<u8>)> = Vec::new();
    let mut now = 0u64;
    for (bytes, dt) in &input.pushes {
        now += u64::from(*dt);
        seg.push(bytes, now);
        pushed.extend_from_slice(bytes);
        while seg.should_cut(now) {
            let (meta, bytes) = seg.cut().expect("should_cut means there is a whole line");
            let cast = meta.decode(&bytes).expect("a cut segment decodes");
            assert!(cast.ends_with(b"\n"), "a segment cut mid-line");
            segments.push((meta, bytes));
        }
        assert!(seg.buffered() <= pushed.len());
    }
    if let Some(last) = seg.finish() {
        segments.push(last);
    }
    assert!(seg.finish().is_none());
    let mut concat: Vec<u8> = Vec::new();
    for (m, b) in &segments {
        assert_eq!(m.encoding.is_some(), input.compress);
        concat.extend_from_slice(&m.decode(b).expect("a segment decodes"));
    }
    assert_eq!(
        concat, pushed,
        "segments do not hold exactly the bytes pushed"
    );
    assert_eq!(seg.segments(), segments.len() as u64);
    assert_eq!(seg.cast_bytes(), pushed.len() as u64);
    let stored_total: u64 = segments.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(seg.total_bytes(), stored_total);

    let metas: Vec<SegmentMeta> = segments.iter().map(|(m, _)| m.clone()).collect();
    for (i, m) in metas.iter().enumerate() {
        assert_eq!(m.index, i as u64);
        let prev = i.checked_sub(1).map(|p| &metas[p]);
        let again = SegmentMeta::compute(
            prev,
            &segments[i].1,
            m.first_event_at_micros,
            m.last_event_at_micros,
        )
        .expect("computing a meta from a valid one");
        // `compute` knows the stored bytes only; the encoding is the segmenter's to say.
        let again = SegmentMeta {
            encoding: m.encoding,
            cast_bytes: m.cast_bytes,
            ..again
        };
        assert_eq!(&again, m);
    }
    let manifest = seal(session(), metas.clone(), "now".into()).expect("a segmenter's chain seals");
    assert_eq!(manifest.head, seg.head());
    let stored: Vec<StoredSegment<'_>> = segments
        .iter()
        .map(|(m, b)| StoredSegment {
            index: m.index,
            bytes: b,
            sidecar: Some(m),
        })
        .collect();
    let report =
        verify(&manifest, &stored, Some(&manifest.head)).expect("an intact recording verifies");
    assert_eq!(report.total_bytes, stored_total);
    assert_eq!(manifest.cast_bytes(), pushed.len() as u64);

    // Any damage to the stored segments is caught.
    let mut damaged: Vec<(u64, Vec<u8>)> =
        segments.iter().map(|(m, b)| (m.index, b.clone())).collect();
    let n = damaged.len();
    let changed = match &input.damage {
        Damage::FlipByte { segment, at, bit } if n > 0 => {
            let s = &mut damaged[usize::from(*segment) % n].1;
            if s.is_empty() {
                false
            } else {
                let i = usize::from(*at) % s.len();
                s[i] ^= 1 << (bit % 8);
                true
            }
        }
        Damage::Drop(i) if n > 0 => {
            damaged.remove(usize::from(*i) % n);
            true
        }
        Damage::Swap(a, b) if n > 0 => {
            let (a, b) = (usize::from(*a) % n, usize::from(*b) % n);
            let differ = damaged[a].1 != damaged[b].1;
            let (x, y) = (damaged[a].1.clone(), damaged[b].1.clone());
            damaged[a].1 = y;
            damaged[b].1 = x;
            differ
        }
        Damage::Append(extra) => {
            damaged.push((n as u64, extra.clone()));
            true
        }
        _ => false,
    };
    let given: Vec<StoredSegment<'_>> = damaged
        .iter()
        .map(|(i, b)| StoredSegment {
            index: *i,
            bytes: b,
            sidecar: None,
        })
        .collect();
    let result = verify(&manifest, &given, None);
    if changed {
        assert!(result.is_err(), "damage {:?} was not caught", input.damage);
    } else {
        assert!(result.is_ok(), "{result:?}");
    }

    // Sealing from arbitrary, possibly damaged sidecars never panics and yields a manifest
    // that verifies as such.
    let edited: Vec<SegmentMeta> = input
        .metas
        .iter()
        .map(|e| {
            let base = if metas.is_empty() {
                SegmentMeta::compute(None, b"", 0, 0).expect("first meta")
            } else {
                metas[usize::from(e.of) % metas.len()].clone()
            };
            SegmentMeta {
                index: e.index.unwrap_or(base.index),
                bytes: e.bytes.unwrap_or(base.bytes),
                sha256: e.sha256.apply(&base.sha256),
                prev_sha256: e.prev_sha256.apply(&base.prev_sha256),
                chain_sha256: e.chain_sha256.apply(&base.chain_sha256),
                ..base
            }
        })
        .collect();
    let sealed = seal_from_metas(session(), edited.clone(), "now".into(), "fuzz");
    assert!(sealed.interrupted);
    let v = Verifier::new(&sealed, None);
    assert!(
        v.is_ok(),
        "seal_from_metas made a manifest that does not verify: {v:?}"
    );
    for (i, m) in sealed.segments.iter().enumerate() {
        assert_eq!(m.index, i as u64);
        assert!(edited.contains(m), "a kept sidecar was not given");
    }
    if let Ok(m) = seal(session(), edited.clone(), "now".into()) {
        assert!(Verifier::new(&m, None).is_ok());
    }
    // A meta computed after any sidecar, however damaged, is an error or a link.
    for e in &edited {
        let _ = SegmentMeta::compute(Some(e), b"x\n", 0, 0);
    }

    // A verifier given arbitrary segments never panics, and passes only what matches.
    let mut v = Verifier::new(&manifest, None).expect("verifies");
    let mut ok = true;
    for (index, bytes) in &input.given {
        if v.segment(*index, bytes, None).is_err() {
            ok = false;
            break;
        }
    }
    if ok && v.finish().is_ok() {
        assert!(input.given.len() == segments.len());
        for ((i, b), (m, s)) in input.given.iter().zip(&segments) {
            assert_eq!((*i, b), (m.index, s));
        }
    }

    // Decoding arbitrary bytes as a zstd segment of an arbitrary claimed size never panics,
    // and never yields another size than claimed.
    let base = SegmentMeta::compute(None, b"", 0, 0).expect("first meta");
    for (_, bytes) in &input.given {
        let m = SegmentMeta {
            encoding: Some(Encoding::Zstd),
            cast_bytes: Some(u64::from(input.claimed)),
            ..base.clone()
        };
        if let Ok(cast) = m.decode(bytes) {
            assert_eq!(cast.len() as u64, u64::from(input.claimed));
        }
    }

    // File names.
    match parse_file_name(&input.name) {
        Some(RecordingFile::Segment(i)) => assert_eq!(segment_name(i), input.name),
        Some(RecordingFile::Sidecar(i)) => assert_eq!(sidecar_name(i), input.name),
        Some(RecordingFile::Manifest) => assert_eq!(input.name, "manifest.json"),
        None => {}
    }
    let i = input.max_bytes as u64 * input.max_age as u64;
    assert_eq!(
        parse_file_name(&segment_name(i)),
        Some(RecordingFile::Segment(i))
    );
    assert_eq!(
        parse_file_name(&sidecar_name(u64::MAX)),
        Some(RecordingFile::Sidecar(u64::MAX))
    );
});
