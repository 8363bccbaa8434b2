//! `kubectl aexec watch NAME`: a running session's terminal, live and read-only. The operator's
//! `observe` WebSocket sends a hello, the terminal's size, what the session showed so far (its
//! last 256 KiB), then what it shows, in the exec stream's channels (1 stdout, 2 stderr, 3 the
//! exit status, 4 resize) with text notices. Keys, when stdin is a terminal: `q` leaves, `T`
//! terminates the session after a confirmation. Nothing typed here reaches the pod: the
//! plugin sends only `leave` and `terminate`, and the operator has no path from a watcher to
//! the pod anyway.

use std::{io::Read, time::Duration};

use aexec_crds::{ExecSession, Phase};
use futures::{SinkExt, StreamExt};
use kube::Api;
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, sync::mpsc};
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

use crate::{
    attach::{Outcome, outcome, subresource_path},
    cli::WatchArgs,
    connect::Conn,
    error::{Doing, Error, Result, explain},
    terminal,
};

const PING_EVERY: Duration = Duration::from_secs(5);
const POLL_EVERY: Duration = Duration::from_secs(1);

/// A key pressed by the watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Leave,
    AskTerminate,
    Confirm,
    Other,
}

/// What a key means: `q` (or Ctrl-C, which raw mode delivers as a byte) leaves, `T` asks to
/// terminate, `y` confirms a pending question.
pub fn key(b: u8) -> Key {
    match b {
        b'q' | b'Q' | 0x03 => Key::Leave,
        b'T' => Key::AskTerminate,
        b'y' | b'Y' => Key::Confirm,
        _ => Key::Other,
    }
}

/// A text message from the operator, as a line for the watcher (none for the hello).
pub fn notice(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    match v["type"].as_str()? {
        "skipped" => Some(format!(
            "[aexec] you fell behind: {} bytes of output were skipped",
            v["bytes"]
        )),
        "terminating" => Some("[aexec] terminating the session".into()),
        "error" => Some(format!(
            "[aexec] {}",
            v["message"].as_str().unwrap_or("the operator refused")
        )),
        "notice" => Some(format!("[aexec] {}", v["message"].as_str()?)),
        _ => None,
    }
}

/// The line printed when watching starts.
pub fn banner(hello: &Value, keys: bool) -> String {
    let command = hello["command"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let how = if keys {
        "read-only; q leaves, T terminates"
    } else {
        "read-only; Ctrl-C leaves"
    };
    format!(
        "watching session {} in {}: {} runs `{command}` in pod {} ({how})",
        hello["session"].as_str().unwrap_or_default(),
        hello["namespace"].as_str().unwrap_or_default(),
        hello["requester"].as_str().unwrap_or_default(),
        hello["pod"].as_str().unwrap_or_default(),
    )
}

/// Waits until the session is Active; an ended one is an error that says how to see it.
async fn wait_started(c: &Conn, name: &str, quiet: bool) -> Result<ExecSession> {
    let api: Api<ExecSession> = Api::namespaced(c.client.clone(), &c.namespace);
    let mut said = false;
    loop {
        let s = api
            .get(name)
            .await
            .map_err(|e| explain(&e, &format!("reading session {name}"), Doing::Audit))?;
        match s.phase() {
            Phase::Active => return Ok(s),
            p @ (Phase::Pending | Phase::Approved) => {
                if !said && !quiet {
                    eprintln!(
                        "waiting for session {name} to start (it is {p}; {} has not attached yet) ...",
                        s.spec.requester.username
                    );
                    said = true;
                }
            }
            p => {
                return Err(Error::Session(format!(
                    "session {name} has ended (it is {p}); see what happened with kubectl aexec replay {name} -n {}",
                    c.namespace
                )));
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// `watch NAME`.
pub async fn watch(c: &Conn, a: &WatchArgs) -> Result<i32> {
    let session = wait_started(c, &a.name, a.quiet).await?;
    let mode = if a.moderate { "moderator" } else { "observer" };
    let path = format!(
        "{}?mode={mode}",
        subresource_path(&c.namespace, &a.name, "observe")
    );
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| Error::Api(e.to_string()))?;
    let conn = c
        .client
        .connect(req)
        .await
        .map_err(|e| explain(&e, &format!("watching session {}", a.name), Doing::Audit))?;
    let ws = conn.into_stream();
    let keys = terminal::stdin_is_terminal();
    let raw = if keys {
        Some(
            terminal::RawMode::enable()
                .map_err(|e| Error::Io(format!("cannot put the terminal in raw mode: {e}")))?,
        )
    } else {
        None
    };
    let ended = relay(ws, &session, keys, a.quiet).await;
    drop(raw);
    let ended = ended?;
    if let Some(m) = &ended.1
        && !a.quiet
    {
        eprintln!("{m}");
    }
    Ok(ended.0)
}

/// Relays the watch until the session ends or the watcher leaves: the exit code of `watch`
/// (0 unless the connection failed) and a last line.
async fn relay<S>(
    ws: S,
    session: &ExecSession,
    keys: bool,
    quiet: bool,
) -> Result<(i32, Option<String>)>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin,
{
    let name = session.metadata.name.clone().unwrap_or_default();
    let (mut sink, mut stream) = ws.split();
    let (key_tx, mut key_rx) = mpsc::channel::<Key>(8);
    if keys {
        spawn_key_reader(key_tx);
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    // In raw mode a line needs its carriage return.
    let eol = if keys { "\r\n" } else { "\n" };
    let mut asking = false;
    let mut exit: Option<Outcome> = None;
    macro_rules! say {
        ($line:expr) => {
            if !quiet {
                let line: String = $line;
                stderr.write_all(format!("{line}{eol}").as_bytes()).await?;
                stderr.flush().await?;
            }
        };
    }
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => match b.first() {
                    Some(1) => { stdout.write_all(&b[1..]).await?; stdout.flush().await?; }
                    Some(2) => { stderr.write_all(&b[1..]).await?; stderr.flush().await?; }
                    Some(3) => exit = serde_json::from_slice(&b[1..]).ok().map(|v| outcome(&v)),
                    // A resize: the watcher's own terminal keeps its size.
                    _ => {}
                },
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    if v["type"] == "hello" {
                        if session.spec.tty && terminal::stdout_is_terminal() {
                            // A clean screen for what follows (a full-screen program's state).
                            stdout.write_all(b"\x1bc").await?;
                        }
                        say!(banner(&v, keys));
                    } else if let Some(n) = notice(&t) {
                        say!(n);
                    }
                }
                Some(Ok(Message::Close(frame))) => return Ok((0, Some(closed(&name, frame.as_ref(), exit.as_ref())))),
                None => return Ok((0, Some(closed(&name, None, exit.as_ref())))),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ok((1, Some(format!("error: the connection to the aexec operator broke: {e}")))),
            },
            k = key_rx.recv() => match k {
                Some(Key::Leave) => {
                    let _ = sink.send(Message::Text(json!({"type": "leave"}).to_string().into())).await;
                    let _ = sink.close().await;
                    return Ok((0, Some(format!("stopped watching session {name}"))));
                }
                Some(Key::AskTerminate) => {
                    asking = true;
                    say!(format!("terminate session {name}? [y/N]"));
                }
                Some(Key::Confirm) if asking => {
                    asking = false;
                    sink.send(Message::Text(json!({"type": "terminate"}).to_string().into()))
                        .await
                        .map_err(|e| Error::Io(format!("could not ask to terminate: {e}")))?;
                }
                Some(_) if asking => {
                    asking = false;
                    say!("not terminated".into());
                }
                Some(_) | None => {}
            },
            _ = ping.tick() => { let _ = sink.send(Message::Ping(Vec::new().into())).await; }
        }
    }
}

/// The last line when the operator closes the watch.
fn closed(name: &str, frame: Option<&CloseFrame>, exit: Option<&Outcome>) -> String {
    let how = match exit {
        Some(Outcome::Exited(c)) => format!(" (the command exited with {c})"),
        Some(Outcome::Failed(m)) => format!(" (the command failed: {m})"),
        None => String::new(),
    };
    match frame {
        Some(f) if f.reason == "the session ended" || exit.is_some() => {
            format!("session {name} ended{how}")
        }
        Some(f) if !f.reason.trim().is_empty() => {
            format!("stopped watching session {name}: {}", f.reason)
        }
        _ => format!("session {name}: the operator closed the watch{how}"),
    }
}

/// Reads the watcher's keys on a thread of its own (reads block).
fn spawn_key_reader(tx: mpsc::Sender<Key>) {
    std::thread::Builder::new()
        .name("keys".into())
        .spawn(move || {
            let mut stdin = std::io::stdin();
            let mut b = [0u8; 1];
            while let Ok(1) = stdin.read(&mut b) {
                if tx.blocking_send(key(b[0])).is_err() {
                    return;
                }
            }
        })
        .ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(key(b'q'), Key::Leave);
        assert_eq!(key(3), Key::Leave);
        assert_eq!(key(b'T'), Key::AskTerminate);
        // A lower-case t is not enough to end someone's session.
        assert_eq!(key(b't'), Key::Other);
        assert_eq!(key(b'y'), Key::Confirm);
    }

    #[test]
    fn notices_say_what_happened() {
        assert_eq!(
            notice(r#"{"type":"skipped","bytes":4096}"#).as_deref(),
            Some("[aexec] you fell behind: 4096 bytes of output were skipped")
        );
        assert_eq!(
            notice(r#"{"type":"error","message":"User \"carol\" cannot update"}"#).as_deref(),
            Some("[aexec] User \"carol\" cannot update")
        );
        assert_eq!(
            notice(r#"{"type":"notice","message":"input held"}"#).as_deref(),
            Some("[aexec] input held")
        );
        assert_eq!(notice(r#"{"type":"hello"}"#), None);
        assert_eq!(notice("not json"), None);
    }

    #[test]
    fn the_banner_says_whose_session_and_the_keys() {
        let hello = json!({"type": "hello", "session": "s1", "namespace": "prod",
            "requester": "alice", "pod": "web", "command": ["sh", "-c", "top"]});
        assert_eq!(
            banner(&hello, true),
            "watching session s1 in prod: alice runs `sh -c top` in pod web (read-only; q leaves, T terminates)"
        );
        assert!(banner(&hello, false).ends_with("(read-only; Ctrl-C leaves)"));
    }

    #[test]
    fn the_last_line_says_how_the_session_ended() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        let f = CloseFrame {
            code: CloseCode::Normal,
            reason: "the session ended".into(),
        };
        assert_eq!(
            closed("s1", Some(&f), Some(&Outcome::Exited(3))),
            "session s1 ended (the command exited with 3)"
        );
        assert_eq!(closed("s1", Some(&f), None), "session s1 ended");
        let away = CloseFrame {
            code: CloseCode::Away,
            reason: "operator replica op-1 is shutting down".into(),
        };
        assert_eq!(
            closed("s1", Some(&away), None),
            "stopped watching session s1: operator replica op-1 is shutting down"
        );
    }
}
