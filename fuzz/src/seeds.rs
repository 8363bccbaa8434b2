//! The hand-made part of the seed corpus: real frames, control documents and recordings, as the
//! broker and the recorder produce them, plus a few malformed variants. Written to
//! `fuzz/corpus/<target>/seed-*` by the `write_corpus` binary (`./dev fuzz` runs it first, so the
//! seeds always match the current code). Inputs the fuzzers found are kept beside them under
//! their own names; the generator never removes a file.

use std::time::Duration;

use aexec_crds::UserRef;
use aexec_operator::broker::frames::{self, Outcome, TermSize};
use aexec_recording::cast::{CastWriter, Event, Header, SessionFacts};

/// Named seeds for one target.
pub type Seeds = Vec<(&'static str, Vec<u8>)>;

/// A status document as the kubelet writes it for a command that exited non-zero.
const KUBELET_EXIT_3: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
/// ... and for a command that does not exist.
const KUBELET_NOT_FOUND: &str = r#"{"metadata":{},"status":"Failure","message":"failed to exec in container: exec: \"nope\": executable file not found in $PATH","reason":"InternalError","details":{"causes":[{"message":"exec: \"nope\": executable file not found in $PATH"}]}}"#;

pub fn frames() -> Seeds {
    let resize = frames::resize_doc(TermSize {
        cols: 120,
        rows: 40,
    });
    vec![
        ("seed-stdin", frames::encode(0, b"ls -l\r")),
        (
            "seed-stdout",
            frames::encode(1, b"\x1b[1;32mtotal 0\x1b[0m\r\n"),
        ),
        (
            "seed-stderr",
            frames::encode(2, "grép: \u{fffd}\n".as_bytes()),
        ),
        (
            "seed-status-success",
            frames::encode(3, &frames::status_doc(&Outcome::Exited(0))),
        ),
        (
            "seed-status-exit",
            frames::encode(3, KUBELET_EXIT_3.as_bytes()),
        ),
        (
            "seed-status-failed",
            frames::encode(3, KUBELET_NOT_FOUND.as_bytes()),
        ),
        ("seed-resize", frames::encode(4, &resize)),
        ("seed-close-stdin", vec![255, 0]),
        ("seed-empty", vec![1]),
        ("seed-unknown-channel", vec![9, 1, 2]),
        ("seed-bad-close", vec![255, 0, 0]),
    ]
}

pub fn control_json() -> Seeds {
    vec![
        ("seed-resize", br#"{"Width":120,"Height":40}"#.to_vec()),
        ("seed-resize-zero", br#"{"Width":0,"Height":40}"#.to_vec()),
        ("seed-resize-extra", br#"{"Height":1,"Width":65535,"X":[1,{"y":null}]}"#.to_vec()),
        ("seed-status-success", br#"{"metadata":{},"status":"Success"}"#.to_vec()),
        ("seed-status-exit", KUBELET_EXIT_3.as_bytes().to_vec()),
        ("seed-status-failed", KUBELET_NOT_FOUND.as_bytes().to_vec()),
        (
            "seed-status-bad-code",
            br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":" 9999999999 "}]}}"#.to_vec(),
        ),
    ]
}

fn facts(tty: bool) -> SessionFacts {
    SessionFacts {
        namespace: "team-a".into(),
        name: "debug-1".into(),
        uid: "0b6f3c52-9d1e-4c8a-a0f1-3d2c1b0a9e87".into(),
        pod: "web-0".into(),
        pod_uid: "5f0c8a8e-1b7e-4b1f-9a51-2f0e6d7c4b3a".into(),
        container: "app".into(),
        command: if tty {
            vec!["bash".into()]
        } else {
            vec!["sh".into(), "-c".into(), "echo 'hi' && ls /nope".into()]
        },
        tty,
        stdin: true,
        requester: UserRef {
            username: "alice".into(),
            groups: vec!["dev".into()],
        },
        reason: Some("INC-1234".into()),
        policy: Some("prod-shell".into()),
        approvers: vec!["bob".into(), "dave".into()],
        ..SessionFacts::default()
    }
}

fn cast(header: &Header, events: &[(u64, Event)], end_ms: u64) -> Vec<u8> {
    let (mut w, line) = CastWriter::new(header);
    let mut out = line.into_bytes();
    for (ms, ev) in events {
        w.event(Duration::from_millis(*ms), ev, &mut out);
    }
    w.finish(Duration::from_millis(end_ms), &mut out);
    out
}

pub fn cast_reader() -> Seeds {
    let tty = Header::new(facts(true), 1_767_225_600, Some((120, 40)));
    let shell = cast(
        &tty,
        &[
            (5, Event::Output(b"\x1b]0;alice@web-0\x07$ ".to_vec())),
            (900, Event::Input(b"l".to_vec())),
            (901, Event::Output(b"l".to_vec())),
            (1100, Event::Input(b"s\r".to_vec())),
            (
                1102,
                Event::Output(b"s\r\n\x1b[0m\x1b[01;34mbin\x1b[0m  etc\r\n$ ".to_vec()),
            ),
            (1500, Event::Resize { cols: 80, rows: 24 }),
            (2000, Event::Input(b"\x7f\x04".to_vec())),
            (
                2001,
                Event::Output("caf\u{e9} \u{1f600}\r\n".as_bytes().to_vec()),
            ),
            (2100, Event::Marker("terminated by bob".into())),
            (2101, Event::Exit(130)),
        ],
        2101,
    );
    let plain = Header::new(facts(false), 1_767_225_600, None);
    let piped = cast(
        &plain,
        &[
            (3, Event::Output(b"hi\n".to_vec())),
            (
                4,
                Event::Error(b"ls: /nope: No such file or directory\n".to_vec()),
            ),
            (5, Event::Output(vec![0xff, 0xfe, b'x', 0xe2, 0x82])),
            (6, Event::Output(vec![0xac, b'\n'])),
            (7, Event::Input(vec![0, 1, 2, 0xc3])),
            (8, Event::Exit(2)),
        ],
        9,
    );
    let mut crlf = Vec::new();
    for line in piped.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        crlf.extend_from_slice(line);
        crlf.extend_from_slice(b"\r\n");
    }
    let head =
        String::from_utf8_lossy(&piped[..=piped.iter().position(|&b| b == b'\n').unwrap_or(0)])
            .into_owned();
    let odd = format!(
        "{head}# a comment\n\n[0.5, \"z\", \"unknown code\"]\n[0.25, \"o\", \"a\"]\n[1.0, \"e\", \"\"]"
    );
    let bad = format!("{head}[0.1, \"e\", \"\"]\n[0.0, \"i\", \"x\"]\n[0.1, \"r\", \"80x\"]\n");
    vec![
        ("seed-tty-session", shell),
        ("seed-piped-session", piped),
        ("seed-crlf", crlf),
        ("seed-comments-unknown-trailing-tag", odd.into_bytes()),
        ("seed-dangling-tag", bad.into_bytes()),
        (
            "seed-v2-header",
            br#"{"version": 2, "width": 80, "height": 24}"#.to_vec(),
        ),
    ]
}

/// The key the `record` target signs and verifies with (fixed: seeds signed with it verify).
pub fn record_key() -> aexec_recording::record::SigningKey {
    aexec_recording::record::SigningKey::from(
        aexec_recording::record::ed25519_dalek::SigningKey::from_bytes(&[42; 32]),
    )
}

/// A session record as the operator writes one for a session that ran.
pub fn sample_record() -> aexec_recording::record::SessionRecord {
    use aexec_recording::record::*;
    SessionRecord {
        format: RECORD_FORMAT.into(),
        session: RecordSession {
            namespace: "prod".into(),
            name: "exec-7xk2p".into(),
            uid: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0".into(),
            created: "2026-01-02T03:00:00Z".into(),
        },
        spec: RecordSpec {
            pod: "api-7f9c".into(),
            pod_uid: Some("p-1".into()),
            container: Some("app".into()),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            tty: true,
            stdin: true,
            reason: Some("INC-1234".into()),
            ..Default::default()
        },
        requester: Person {
            username: "alice".into(),
            groups: vec!["dev".into()],
        },
        policy: RecordPolicy {
            name: Some("prod-shell".into()),
            decision: "Approved".into(),
            message: Some("approved by bob".into()),
            required_approvals: Some(1),
        },
        approvals: vec![RecordDecision {
            user: Person {
                username: "bob".into(),
                groups: vec!["sre".into()],
            },
            time: "2026-01-02T03:01:00Z".into(),
            comment: Some("ok for INC-1234".into()),
        }],
        denial: None,
        withdrawal: None,
        limits: Some(RecordLimits {
            max_duration: Some("1h".into()),
            idle_timeout: Some("15m".into()),
            recording_required: true,
        }),
        timeline: vec![TimelineEntry {
            time: "2026-01-02T03:00:00Z".into(),
            event: "Requested".into(),
            detail: "by alice".into(),
        }],
        end: RecordEnd {
            phase: "Terminated".into(),
            message: "ended: the ExecSession was deleted".into(),
            exit_code: None,
            start_time: Some("2026-01-02T03:02:00Z".into()),
            end_time: Some("2026-01-02T03:04:00Z".into()),
            deleted: true,
        },
        recording: Some(RecordRecording {
            uri: "s3://recordings/prod/exec-7xk2p/manifest.json".into(),
            format: "asciicast-v3".into(),
            head: "ab".repeat(32),
            manifest_sha256: Some("cd".repeat(32)),
            total_bytes: 120,
            segments: vec![RecordSegment {
                index: 0,
                bytes: 120,
                sha256: "ef".repeat(32),
            }],
            interrupted: true,
            reason: Some("ended by deletion".into()),
            problem: None,
        }),
        broker: Some("aexec-operator-0".into()),
        written: RecordWritten {
            by: "aexec-operator-1".into(),
            at: "2026-01-02T03:05:00Z".into(),
        },
    }
}

pub fn record() -> Seeds {
    let key = record_key();
    let full = sample_record();
    let mut never_ran = full.clone();
    never_ran.recording = None;
    never_ran.end.phase = "Withdrawn".into();
    let other = aexec_recording::record::SigningKey::from(
        aexec_recording::record::ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
    );
    let signed = key.sign(&full).unwrap_or_default();
    let two = String::from_utf8_lossy(&signed).replacen(
        "\"signatures\": [",
        "\"signatures\": [{\"keyid\": \"00\", \"sig\": \"AA==\"},",
        1,
    );
    vec![
        ("seed-signed", signed.clone()),
        ("seed-never-ran", key.sign(&never_ran).unwrap_or_default()),
        ("seed-other-key", other.sign(&full).unwrap_or_default()),
        ("seed-two-signatures", two.into_bytes()),
        (
            "seed-payload",
            serde_json::to_vec(&full).unwrap_or_default(),
        ),
        (
            "seed-public-keys",
            aexec_recording::record::KeyRing::new(vec![key.public(), other.public()])
                .to_pem_bundle()
                .into_bytes(),
        ),
    ]
}
