//! The live view of an Active session: the operator's `observe` stream (the one `kubectl aexec
//! watch` reads) turned into what asciinema-player's `eventsource` driver plays.
//!
//! The observe stream sends a hello (with the terminal's size and how many backlog bytes
//! follow), the size as a resize frame, the backlog (the last 256 KiB the session showed), then
//! live frames: 1 stdout, 2 stderr, 3 the exit status, 4 resize; and text notices. The player
//! wants messages of JSON: a reset `{cols, rows, time, init}` (init: what the terminal showed so
//! far: the backlog), then events `[seconds, "o", text]` and `[seconds, "r", "COLSxROWS"]`, and
//! an event named `done` at the end. [`Translator`] is that translation, without I/O.

use std::time::Duration;

use aexec_recording::cast::decode_utf8 as decode;
use serde_json::{Value, json};

/// The most backlog held before the reset is sent (the operator sends at most 256 KiB).
const MAX_BACKLOG: usize = 512 << 10;

/// A message for the page: the SSE event's name (`None`: the default, `message`) and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    pub event: Option<&'static str>,
    pub data: Value,
}

impl Out {
    fn message(data: Value) -> Out {
        Out { event: None, data }
    }
}

#[derive(Debug, PartialEq)]
enum Stage {
    /// Before the hello.
    Hello,
    /// Gathering this many more bytes of backlog.
    Backlog(usize),
    Live,
}

/// The observe stream's frames in, the player's messages out.
#[derive(Debug)]
pub struct Translator {
    stage: Stage,
    cols: u64,
    rows: u64,
    backlog: Vec<u8>,
    /// The start of a UTF-8 character cut by a frame's end.
    carry: Vec<u8>,
    /// The session has a terminal (else its output went to a pipe: see [`onlcr`]).
    tty: bool,
    /// The last character shown was a carriage return.
    after_cr: bool,
}

impl Default for Translator {
    fn default() -> Self {
        Translator {
            stage: Stage::Hello,
            cols: 80,
            rows: 24,
            backlog: Vec::new(),
            carry: Vec::new(),
            tty: true,
            after_cr: false,
        }
    }
}

/// A session without a terminal wrote to a pipe: its lines end in LF alone, which a terminal
/// (the requester's, through kubectl) shows as new lines because its own line discipline adds
/// the carriage return. The player is a terminal without one: add it, as `onlcr` would.
/// `after_cr` carries whether the previous text ended in CR. (The recording and its exports
/// stay as the bytes were: this is for showing them; the page does the same for playback.)
pub fn onlcr(text: &str, after_cr: &mut bool) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    for c in text.chars() {
        if c == '\n' && !*after_cr {
            out.push('\r');
        }
        out.push(c);
        *after_cr = c == '\r';
    }
    out
}

impl Translator {
    /// Bytes the session showed, as the player's text.
    fn shown(&mut self, bytes: &[u8]) -> String {
        let text = decode(&mut self.carry, bytes);
        if self.tty {
            text
        } else {
            onlcr(&text, &mut self.after_cr)
        }
    }

    fn reset(&mut self) -> Out {
        let backlog = std::mem::take(&mut self.backlog);
        let init = self.shown(&backlog);
        self.stage = Stage::Live;
        Out::message(json!({
            "cols": self.cols, "rows": self.rows, "time": 0.0, "init": init,
        }))
    }

    /// A text frame: the hello or a notice.
    pub fn text(&mut self, text: &str) -> Vec<Out> {
        let v: Value = serde_json::from_str(text).unwrap_or_default();
        if v["type"] == "hello" && self.stage == Stage::Hello {
            if let (Some(c), Some(r)) = (v["size"]["cols"].as_u64(), v["size"]["rows"].as_u64()) {
                (self.cols, self.rows) = (c.max(1), r.max(1));
            }
            self.tty = v["tty"].as_bool().unwrap_or(true);
            let backlog = v["backlog"].as_u64().unwrap_or(0) as usize;
            if backlog == 0 {
                return vec![self.reset()];
            }
            self.stage = Stage::Backlog(backlog.min(MAX_BACKLOG));
            return Vec::new();
        }
        match crate::watch::notice(text) {
            Some(line) => vec![Out {
                event: Some("notice"),
                data: json!({ "message": line }),
            }],
            None => Vec::new(),
        }
    }

    /// A binary frame (channel byte, then data) `at` into the watch.
    pub fn binary(&mut self, frame: &[u8], at: Duration) -> Vec<Out> {
        let Some((&channel, data)) = frame.split_first() else {
            return Vec::new();
        };
        let size = || -> Option<(u64, u64)> {
            let v: Value = serde_json::from_slice(data).ok()?;
            Some((v["Width"].as_u64()?.max(1), v["Height"].as_u64()?.max(1)))
        };
        match (&self.stage, channel) {
            (Stage::Hello, _) => Vec::new(),
            (Stage::Backlog(_), 4) => {
                if let Some((c, r)) = size() {
                    (self.cols, self.rows) = (c, r);
                }
                Vec::new()
            }
            (Stage::Backlog(left), 1 | 2) => {
                let left = left.saturating_sub(data.len());
                if self.backlog.len() + data.len() <= MAX_BACKLOG {
                    self.backlog.extend_from_slice(data);
                }
                if left == 0 {
                    return vec![self.reset()];
                }
                self.stage = Stage::Backlog(left);
                Vec::new()
            }
            (Stage::Backlog(_), _) => {
                // The status before the backlog ended: show what there is, then the rest.
                let mut out = vec![self.reset()];
                out.extend(self.binary(frame, at));
                out
            }
            (Stage::Live, 1 | 2) => {
                let text = self.shown(data);
                if text.is_empty() {
                    return Vec::new();
                }
                vec![Out::message(json!([at.as_secs_f64(), "o", text]))]
            }
            (Stage::Live, 4) => match size() {
                Some((c, r)) => vec![Out::message(json!([
                    at.as_secs_f64(),
                    "r",
                    format!("{c}x{r}")
                ]))],
                None => Vec::new(),
            },
            (Stage::Live, 3) => {
                let v: Value = serde_json::from_slice(data).unwrap_or_default();
                let message = match crate::attach::outcome(&v) {
                    crate::attach::Outcome::Exited(c) => format!("the command exited with {c}"),
                    crate::attach::Outcome::Failed(m) => format!("the command failed: {m}"),
                };
                vec![Out {
                    event: Some("status"),
                    data: json!({ "message": message }),
                }]
            }
            (Stage::Live, _) => Vec::new(),
        }
    }

    /// The stream's end.
    pub fn done(&mut self, why: &str) -> Vec<Out> {
        let mut out = Vec::new();
        if self.stage != Stage::Live {
            out.push(self.reset());
        }
        out.push(Out {
            event: Some("done"),
            data: json!({ "message": why }),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_pipe_s_lines_get_their_carriage_return() {
        let mut cr = false;
        assert_eq!(onlcr("a\nb\r\nc\r", &mut cr), "a\r\nb\r\nc\r");
        // The CR ended the previous frame: the LF starting this one gets none.
        assert_eq!(onlcr("\nd\n", &mut cr), "\nd\r\n");
        let mut t = Translator::default();
        t.text(r#"{"type":"hello","tty":false,"backlog":3}"#);
        let reset = t.binary(b"\x01a\nb", ms(0));
        assert_eq!(reset[0].data["init"], "a\r\nb");
        assert_eq!(
            t.binary(b"\x01\n", ms(5)),
            [Out::message(json!([0.005, "o", "\r\n"]))]
        );
    }

    #[test]
    fn utf8_cut_between_frames_is_joined() {
        let mut carry = Vec::new();
        let s = "héllo ✓";
        let b = s.as_bytes();
        let cut = b.len() - 2; // inside the check mark
        let mut got = decode(&mut carry, &b[..cut]);
        assert_eq!(carry.len(), 1);
        got.push_str(&decode(&mut carry, &b[cut..]));
        assert_eq!(got, s);
        assert!(carry.is_empty());
        // Invalid bytes are replaced, not kept.
        assert_eq!(decode(&mut carry, b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn hello_size_and_backlog_make_the_reset_then_live_events_follow() {
        let mut t = Translator::default();
        assert!(
            t.binary(b"\x01early", ms(0)).is_empty(),
            "nothing before the hello"
        );
        assert!(
            t.text(r#"{"type":"hello","size":{"cols":100,"rows":30},"backlog":10}"#)
                .is_empty()
        );
        let mut frame = vec![4u8];
        frame.extend_from_slice(br#"{"Width":120,"Height":40}"#);
        assert!(t.binary(&frame, ms(0)).is_empty());
        assert!(t.binary(b"\x01hello", ms(1)).is_empty());
        let reset = t.binary(b"\x02 wor\xc3", ms(2));
        assert_eq!(
            reset,
            [Out::message(
                json!({"cols": 120, "rows": 40, "time": 0.0, "init": "hello wor"})
            )]
        );
        // The cut character completes in the first live frame.
        assert_eq!(
            t.binary(b"\x01\xa9ld", ms(1500)),
            [Out::message(json!([1.5, "o", "éld"]))]
        );
        assert_eq!(
            t.binary(&frame, ms(2000)),
            [Out::message(json!([2.0, "r", "120x40"]))]
        );
        let mut frame3 = vec![3u8];
        frame3.extend_from_slice(br#"{"status":"Success"}"#);
        assert_eq!(
            t.binary(&frame3, ms(2500)),
            [Out {
                event: Some("status"),
                data: json!({"message": "the command exited with 0"})
            }]
        );
        assert_eq!(
            t.done("the session ended"),
            [Out {
                event: Some("done"),
                data: json!({"message": "the session ended"})
            }]
        );
    }

    #[test]
    fn no_backlog_resets_at_the_hello_and_notices_pass() {
        let mut t = Translator::default();
        assert_eq!(
            t.text(r#"{"type":"hello","size":null,"backlog":0}"#),
            [Out::message(
                json!({"cols": 80, "rows": 24, "time": 0.0, "init": ""})
            )]
        );
        let n = t.text(r#"{"type":"skipped","bytes":42}"#);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].event, Some("notice"));
        assert!(
            n[0].data["message"]
                .as_str()
                .unwrap_or_default()
                .contains("42 bytes")
        );
    }

    #[test]
    fn a_watch_that_ends_early_still_resets_the_player() {
        let mut t = Translator::default();
        t.text(r#"{"type":"hello","backlog":100}"#);
        t.binary(b"\x01part", ms(0));
        let out = t.done("closed");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data["init"], "part");
        assert_eq!(out[1].event, Some("done"));
    }
}
