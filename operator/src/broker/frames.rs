//! The Kubernetes exec stream's frames (`v4.channel.k8s.io` / `v5.channel.k8s.io`), as the
//! broker sees them: binary WebSocket messages whose first byte is a channel. Pure parsing of
//! untrusted bytes: every malformed input is an error value, never a panic, and nothing is
//! allocated beyond the frame itself.
//!
//! Channels (apimachinery `wsstream`, client-go `tools/remotecommand`): 0 stdin, 1 stdout,
//! 2 stderr, 3 status (one JSON `metav1.Status` at the end), 4 resize (JSON
//! `{"Width":W,"Height":H}`), 255 close (v5 only: `[255, stream]`, `[255, 0]` = stdin EOF).

use serde::Deserialize;

/// The subprotocol the broker speaks on both legs.
pub const V5: &str = "v5.channel.k8s.io";
/// The older subprotocol, accepted from clients: no close signal.
pub const V4: &str = "v4.channel.k8s.io";
/// Largest frame the broker accepts from a client (stdin chunks and control messages). The
/// API server's own limit is far larger; ours bounds memory per session.
pub const MAX_CLIENT_FRAME: usize = 1 << 20;
/// Largest resize or status document accepted.
pub const MAX_CONTROL_JSON: usize = 64 * 1024;

/// One frame, borrowed from the message it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Stdin(&'a [u8]),
    Stdout(&'a [u8]),
    Stderr(&'a [u8]),
    /// The final status document (parse it with [`exit_code`]).
    Status(&'a [u8]),
    /// A terminal resize document (parse it with [`parse_resize`]).
    Resize(&'a [u8]),
    /// v5 close signal for a stream (0 = stdin EOF).
    Close(u8),
    /// A message with a channel byte and nothing else: servers send one right after the
    /// upgrade; it carries nothing and is not recorded.
    Empty(u8),
}

/// Why a message is not a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty message: a frame needs at least its channel byte")]
    Empty,
    #[error("unknown channel {0}: expected 0 (stdin) to 4 (resize), or 255 (close)")]
    UnknownChannel(u8),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed close frame: expected [255, stream], got {0} bytes")]
    BadClose(usize),
}

/// Parses a binary message of at most `max` bytes.
pub fn parse(msg: &[u8], max: usize) -> Result<Frame<'_>, FrameError> {
    if msg.len() > max {
        return Err(FrameError::TooLarge {
            len: msg.len(),
            max,
        });
    }
    let (&channel, payload) = msg.split_first().ok_or(FrameError::Empty)?;
    if payload.is_empty() && channel != 255 {
        return if channel <= 4 {
            Ok(Frame::Empty(channel))
        } else {
            Err(FrameError::UnknownChannel(channel))
        };
    }
    Ok(match channel {
        0 => Frame::Stdin(payload),
        1 => Frame::Stdout(payload),
        2 => Frame::Stderr(payload),
        3 => Frame::Status(payload),
        4 => Frame::Resize(payload),
        255 => match payload {
            [stream] => Frame::Close(*stream),
            _ => return Err(FrameError::BadClose(msg.len())),
        },
        other => return Err(FrameError::UnknownChannel(other)),
    })
}

/// Encodes a frame into a new message.
pub fn encode(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(payload.len() + 1);
    m.push(channel);
    m.extend_from_slice(payload);
    m
}

/// A terminal size, in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

/// Whether a control document is a JSON object. serde also reads a struct from an array
/// (`[80,24]` as a resize), which no client or API server sends; the fuzz target `control_json`
/// found it, since a generic JSON reader sees no `Width` in it.
fn is_object(doc: &[u8]) -> bool {
    doc.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{')
}

#[derive(Deserialize)]
struct ResizeDoc {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Why a resize or status document is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("control document of {0} bytes is too large")]
    TooLarge(usize),
    #[error("invalid resize: expected {{\"Width\":W,\"Height\":H}} with 1..=65535 cells, got {0}")]
    BadResize(String),
    #[error("invalid status document: {0}")]
    BadStatus(String),
}

/// Parses a resize document; zero sizes are refused (a terminal has at least one cell).
pub fn parse_resize(doc: &[u8]) -> Result<TermSize, ControlError> {
    if doc.len() > MAX_CONTROL_JSON {
        return Err(ControlError::TooLarge(doc.len()));
    }
    if !is_object(doc) {
        return Err(ControlError::BadResize(
            "a resize is a JSON object, {\"Width\":COLS,\"Height\":ROWS}".into(),
        ));
    }
    let r: ResizeDoc =
        serde_json::from_slice(doc).map_err(|e| ControlError::BadResize(e.to_string()))?;
    if r.width == 0 || r.height == 0 {
        return Err(ControlError::BadResize(format!("{}x{}", r.width, r.height)));
    }
    Ok(TermSize {
        cols: r.width,
        rows: r.height,
    })
}

/// Encodes a resize document.
pub fn resize_doc(size: TermSize) -> Vec<u8> {
    format!("{{\"Width\":{},\"Height\":{}}}", size.cols, size.rows).into_bytes()
}

#[derive(Deserialize)]
struct StatusDoc {
    status: Option<String>,
    reason: Option<String>,
    message: Option<String>,
    details: Option<StatusDetails>,
}

#[derive(Deserialize)]
struct StatusDetails {
    causes: Option<Vec<StatusCause>>,
}

#[derive(Deserialize)]
struct StatusCause {
    reason: Option<String>,
    message: Option<String>,
}

/// How the command ended, from the status document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and exited with this code (0 for `Success`).
    Exited(i32),
    /// It could not run or the stream failed (container not found, command not found): the
    /// server's message.
    Failed(String),
}

/// Reads the exit status: `Success` is 0; a `NonZeroExitCode` failure carries the code in the
/// `ExitCode` cause; any other failure is [`Outcome::Failed`] with its message.
pub fn exit_code(doc: &[u8]) -> Result<Outcome, ControlError> {
    if doc.len() > MAX_CONTROL_JSON {
        return Err(ControlError::TooLarge(doc.len()));
    }
    if !is_object(doc) {
        return Err(ControlError::BadStatus(
            "the status is not a JSON object (a Kubernetes Status)".into(),
        ));
    }
    let s: StatusDoc =
        serde_json::from_slice(doc).map_err(|e| ControlError::BadStatus(e.to_string()))?;
    match s.status.as_deref() {
        Some("Success") => Ok(Outcome::Exited(0)),
        Some("Failure") if s.reason.as_deref() == Some("NonZeroExitCode") => {
            let code = s
                .details
                .and_then(|d| d.causes)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message)
                .ok_or_else(|| {
                    ControlError::BadStatus("NonZeroExitCode without an ExitCode cause".into())
                })?;
            code.trim()
                .parse()
                .map(Outcome::Exited)
                .map_err(|_| ControlError::BadStatus(format!("exit code {code:?} is not a number")))
        }
        Some("Failure") => Ok(Outcome::Failed(
            s.message.unwrap_or_else(|| "the command failed".into()),
        )),
        other => Err(ControlError::BadStatus(format!(
            "unexpected status {other:?}"
        ))),
    }
}

/// The status document for an outcome, as the API server writes it.
pub fn status_doc(outcome: &Outcome) -> Vec<u8> {
    let v = match outcome {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => serde_json::json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        }),
        Outcome::Failed(msg) => serde_json::json!({
            "metadata": {}, "status": "Failure", "message": msg, "reason": "InternalError"
        }),
    };
    v.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_parses() {
        assert_eq!(parse(&[0, b'a'], 10), Ok(Frame::Stdin(b"a")));
        // Documents in array form, which serde would read as the structs, are refused.
        assert!(matches!(
            parse_resize(b"[2,2]"),
            Err(ControlError::BadResize(_))
        ));
        assert!(matches!(
            exit_code(b" [\"Success\"]"),
            Err(ControlError::BadStatus(_))
        ));
        assert_eq!(
            parse_resize(b" \n{\"Width\":2,\"Height\":3}"),
            Ok(TermSize { cols: 2, rows: 3 })
        );
        assert_eq!(parse(&[1, b'b'], 10), Ok(Frame::Stdout(b"b")));
        assert_eq!(parse(&[2, b'c'], 10), Ok(Frame::Stderr(b"c")));
        assert_eq!(parse(&[3, b'{'], 10), Ok(Frame::Status(b"{")));
        assert_eq!(parse(&[4, b'{'], 10), Ok(Frame::Resize(b"{")));
        assert_eq!(parse(&[255, 0], 10), Ok(Frame::Close(0)));
        assert_eq!(parse(&[1], 10), Ok(Frame::Empty(1)));
        assert_eq!(encode(1, b"xy"), vec![1, b'x', b'y']);
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(parse(&[], 10), Err(FrameError::Empty));
        assert_eq!(parse(&[7, 1], 10), Err(FrameError::UnknownChannel(7)));
        assert_eq!(parse(&[9], 10), Err(FrameError::UnknownChannel(9)));
        assert_eq!(parse(&[255], 10), Err(FrameError::BadClose(1)));
        assert_eq!(parse(&[255, 0, 1], 10), Err(FrameError::BadClose(3)));
        assert_eq!(
            parse(&[0; 11], 10),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
    }

    #[test]
    fn resize_documents() {
        let s = parse_resize(br#"{"Width":120,"Height":40}"#).expect("valid");
        assert_eq!(
            s,
            TermSize {
                cols: 120,
                rows: 40
            }
        );
        assert_eq!(parse_resize(&resize_doc(s)), Ok(s));
        for bad in [
            &br#"{"Width":0,"Height":40}"#[..],
            br#"{"Width":-1,"Height":1}"#,
            br#"{"Width":70000,"Height":1}"#,
            b"{",
            b"[]",
            br#"{"Height":3}"#,
        ] {
            assert!(
                matches!(parse_resize(bad), Err(ControlError::BadResize(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_resize(&vec![b' '; MAX_CONTROL_JSON + 1]),
            Err(ControlError::TooLarge(MAX_CONTROL_JSON + 1))
        );
    }

    #[test]
    fn exit_codes_from_status() {
        assert_eq!(
            exit_code(br#"{"metadata":{},"status":"Success"}"#),
            Ok(Outcome::Exited(0))
        );
        let doc = status_doc(&Outcome::Exited(42));
        assert_eq!(exit_code(&doc), Ok(Outcome::Exited(42)));
        let failed = br#"{"status":"Failure","reason":"InternalError","message":"container \"x\" not found"}"#;
        assert_eq!(
            exit_code(failed),
            Ok(Outcome::Failed("container \"x\" not found".into()))
        );
        assert_eq!(
            exit_code(&status_doc(&Outcome::Failed("boom".into()))),
            Ok(Outcome::Failed("boom".into()))
        );
        for bad in [&b"nope"[..], br#"{"status":"Maybe"}"#, br#"{"status":"Failure","reason":"NonZeroExitCode"}"#,
                    br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"x"}]}}"#] {
            assert!(matches!(exit_code(bad), Err(ControlError::BadStatus(_))), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
