//! Attaching to an approved session: the `attach` WebSocket of the aggregated API, spoken like
//! kubectl exec speaks the pod exec stream (channels 0 stdin, 1 stdout, 2 stderr, 3 status,
//! 4 resize, 255 close), with the terminal in raw mode for `-t`, resizes forwarded, stdin EOF
//! forwarded (v5), pings every 5 s, and the remote exit code returned.

use std::{io::Read, time::Duration};

use aexec_crds::{ExecSessionSpec, SUBRESOURCE_GROUP, VERSION};
use futures::{SinkExt, StreamExt};
use kube::Client;
use serde_json::Value;
use tokio::{io::AsyncWriteExt, sync::mpsc};
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

use crate::{
    error::{Doing, Error, Result, explain},
    terminal,
};

/// Stdin is read and sent in chunks of at most this many bytes.
const STDIN_CHUNK: usize = 32 * 1024;
/// Frames waiting to be sent: stdin reading pauses when the socket is slow (bounded memory).
const OUTGOING: usize = 16;
/// kubectl pings every 5 s; proxies close idle sockets.
const PING_EVERY: Duration = Duration::from_secs(5);

/// How the remote command ended, from the status frame (channel 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with this code.
    Exited(i32),
    /// Could not run (the status message says why).
    Failed(String),
}

/// Reads a `metav1.Status` from channel 3 the way kubectl does.
pub fn outcome(status: &Value) -> Outcome {
    if status["status"] == "Success" {
        return Outcome::Exited(0);
    }
    if status["reason"] == "NonZeroExitCode"
        && let Some(code) = status["details"]["causes"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["reason"] == "ExitCode"))
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.trim().parse::<i32>().ok())
    {
        return Outcome::Exited(code);
    }
    Outcome::Failed(
        status["message"]
            .as_str()
            .unwrap_or("the command failed without a message")
            .to_owned(),
    )
}

/// A resize frame (channel 4).
pub fn resize_frame(cols: u16, rows: u16) -> Vec<u8> {
    let mut f = vec![4u8];
    f.extend_from_slice(format!("{{\"Width\":{cols},\"Height\":{rows}}}").as_bytes());
    f
}

/// The path of a session's subresource on the aggregated API.
pub fn subresource_path(namespace: &str, name: &str, sub: &str) -> String {
    format!("/apis/{SUBRESOURCE_GROUP}/{VERSION}/namespaces/{namespace}/execsessions/{name}/{sub}")
}

/// How an attach ended for the process: the exit code, and a line for stderr.
#[derive(Debug)]
pub struct Ended {
    pub code: i32,
    pub message: Option<String>,
}

/// Where an attached session's input comes from and its output goes: the process's own stdin
/// and stdout, or, for a copy, the tar stream being written or unpacked.
pub struct Io {
    /// Read on a thread of its own (reads block) and sent as stdin, when the session has it.
    pub stdin: Box<dyn Read + Send>,
    /// Receives the command's stdout.
    pub stdout: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
}

impl Io {
    /// The process's stdin and stdout.
    pub fn process() -> Self {
        Io {
            stdin: Box::new(std::io::stdin()),
            stdout: Box::new(tokio::io::stdout()),
        }
    }
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io").finish_non_exhaustive()
    }
}

/// Attaches to session `name` and relays until the command ends. Returns the exit code as
/// kubectl exec would (and the line kubectl prints for a non-zero exit).
pub async fn attach(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: &ExecSessionSpec,
) -> Result<Ended> {
    attach_with(client, namespace, name, spec, Io::process()).await
}

/// [`attach`] with the session's input and output given.
pub async fn attach_with(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: &ExecSessionSpec,
    io: Io,
) -> Result<Ended> {
    let req = http::Request::get(subresource_path(namespace, name, "attach"))
        .body(Vec::new())
        .map_err(|e| Error::Api(e.to_string()))?;
    let conn = client
        .connect(req)
        .await
        .map_err(|e| explain(&e, &format!("attaching to session {name}"), Doing::Request))?;
    let v5 = conn.supports_stream_close();
    let ws = conn.into_stream();
    if spec.copy.is_some() && spec.stdin && !v5 {
        return Err(Error::Api(
            "the aexec operator did not offer the v5 exec protocol, without which the end of an \
             upload cannot be signalled; upgrade the operator"
                .into(),
        ));
    }

    // Raw mode only when the session has a terminal and ours is one.
    let raw = if spec.tty && terminal::stdin_is_terminal() {
        Some(
            terminal::RawMode::enable()
                .map_err(|e| Error::Io(format!("cannot put the terminal in raw mode: {e}")))?,
        )
    } else {
        None
    };
    let result = relay(ws, spec, v5, raw.is_some(), io).await;
    drop(raw);
    result
}

async fn relay<S>(ws: S, spec: &ExecSessionSpec, v5: bool, raw: bool, io: Io) -> Result<Ended>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin
        + Send
        + 'static,
{
    use crate::signals::{Signal, Signals};
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(OUTGOING);

    // One task owns the sending half.
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });

    if spec.tty
        && let Some((cols, rows)) = terminal::size()
    {
        let _ = tx
            .send(Message::Binary(resize_frame(cols, rows).into()))
            .await;
    }
    let Io {
        stdin,
        stdout: mut out,
    } = io;
    if spec.stdin {
        spawn_stdin_reader(stdin, tx.clone(), v5);
    }
    let mut signals = Signals::new(spec.tty).map_err(Error::from)?;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;

    let stdout = &mut out;
    let mut stderr = tokio::io::stderr();
    let ended = loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => match b.first() {
                    Some(1) => { stdout.write_all(&b[1..]).await?; stdout.flush().await?; }
                    Some(2) => { stderr.write_all(&b[1..]).await?; stderr.flush().await?; }
                    Some(3) => break ended_with_status(&b[1..]),
                    _ => {}
                },
                // The operator's own notices (a moderated session waiting, paused, resumed):
                // on our stderr, apart from the command's output.
                Some(Ok(Message::Text(t))) => if let Some(line) = crate::watch::notice(&t) {
                    let eol = if raw { "\r\n" } else { "\n" };
                    stderr.write_all(format!("{line}{eol}").as_bytes()).await?;
                    stderr.flush().await?;
                },
                Some(Ok(Message::Close(frame))) => break closed(frame.as_ref()),
                None => break closed(None),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Ended {
                    code: 1,
                    message: Some(format!("error: the connection to the aexec operator broke: {e}")),
                },
            },
            _ = ping.tick() => { let _ = tx.try_send(Message::Ping(Vec::new().into())); }
            sig = signals.recv() => match sig {
                Signal::WindowChange => {
                    if let Some((cols, rows)) = terminal::size() {
                        let _ = tx.send(Message::Binary(resize_frame(cols, rows).into())).await;
                    }
                }
                Signal::Terminate => break Ended { code: 143, message: Some("error: terminated (SIGTERM); the session ends".into()) },
                Signal::Hangup => break Ended { code: 129, message: Some("error: hangup (SIGHUP); the session ends".into()) },
                Signal::Interrupt => break Ended { code: 130, message: Some("error: interrupted; the session ends".into()) },
            },
        }
    };
    // Raw mode may be on: a message printed now needs a carriage return too, so leave printing
    // to the caller after the terminal is restored.
    let _ = tx.try_send(Message::Close(None));
    drop(tx);
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(1), &mut writer)
        .await
        .is_err()
    {
        // Still sending (a stdin thread keeps the queue full): the connection goes, and the
        // thread's next send fails, which stops it.
        writer.abort();
    }
    Ok(ended)
}

/// How an attach ends with the command's status frame. A status that is not JSON says so,
/// rather than passing for a command that failed without a message.
fn ended_with_status(doc: &[u8]) -> Ended {
    let status: Value = match serde_json::from_slice(doc) {
        Ok(v) => v,
        Err(e) => {
            return Ended {
                code: 1,
                message: Some(format!(
                    "error: the command's exit status could not be read (not JSON: {e})"
                )),
            };
        }
    };
    match outcome(&status) {
        Outcome::Exited(0) => Ended {
            code: 0,
            message: None,
        },
        Outcome::Exited(c) => Ended {
            code: c,
            message: Some(format!("command terminated with exit code {c}")),
        },
        Outcome::Failed(m) => Ended {
            code: 1,
            message: Some(format!("error: {m}")),
        },
    }
}

/// How an attach ends when the operator closes the connection before the command's status: with
/// the reason its close frame gives (why the session ended, or what the client did wrong, like a
/// message too large), else a plain statement.
fn closed(frame: Option<&CloseFrame>) -> Ended {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let message = match frame {
        Some(f) if !f.reason.trim().is_empty() => match f.code {
            CloseCode::Normal => format!("error: {}", f.reason),
            code => format!(
                "error: the aexec operator closed the connection: {} (WebSocket close code {code})",
                f.reason
            ),
        },
        _ => "error: the connection to the aexec operator closed before the command ended".into(),
    };
    Ended {
        code: 1,
        message: Some(message),
    }
}

/// Reads stdin on a thread of its own (reads block) and sends it as channel 0 frames; at end of
/// input sends the v5 close of stdin. The bounded channel stops reading while the socket is slow.
fn spawn_stdin_reader(mut stdin: Box<dyn Read + Send>, tx: mpsc::Sender<Message>, v5: bool) {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; STDIN_CHUNK];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut frame = Vec::with_capacity(n + 1);
                        frame.push(0u8);
                        frame.extend_from_slice(&buf[..n]);
                        if tx.blocking_send(Message::Binary(frame.into())).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            if v5 {
                let _ = tx.blocking_send(Message::Binary(vec![255u8, 0].into()));
            }
        })
        .ok();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exit_codes_from_status_frames() {
        assert_eq!(outcome(&json!({"status": "Success"})), Outcome::Exited(0));
        assert_eq!(
            outcome(&json!({"status": "Failure", "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "42"}]}})),
            Outcome::Exited(42)
        );
        assert_eq!(
            outcome(&json!({"status": "Failure", "message": "exec: \"nope\": not found"})),
            Outcome::Failed("exec: \"nope\": not found".into())
        );
        assert!(matches!(outcome(&Value::Null), Outcome::Failed(_)));
    }

    #[test]
    fn a_close_frame_says_why_the_session_ended() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        let frame = |code, reason: &str| CloseFrame {
            code,
            reason: reason.into(),
        };
        let too_large = closed(Some(&frame(
            CloseCode::Size,
            "frame of 16777217 bytes exceeds the limit of 1048576 bytes",
        )));
        assert_eq!(too_large.code, 1);
        assert_eq!(
            too_large.message.as_deref(),
            Some(
                "error: the aexec operator closed the connection: frame of 16777217 bytes exceeds \
                 the limit of 1048576 bytes (WebSocket close code 1009)"
            )
        );
        let ended = closed(Some(&frame(CloseCode::Normal, "session terminated by bob")));
        assert_eq!(
            ended.message.as_deref(),
            Some("error: session terminated by bob")
        );
        for plain in [None, Some(frame(CloseCode::Normal, ""))] {
            assert_eq!(
                closed(plain.as_ref()).message.as_deref(),
                Some("error: the connection to the aexec operator closed before the command ended")
            );
        }
    }

    /// The relay against a real WebSocket peer (in memory) that closes with 1009 and a reason:
    /// the reason reaches the user.
    #[tokio::test]
    async fn the_relay_shows_the_operators_close_reason() {
        use tokio_tungstenite::{
            WebSocketStream,
            tungstenite::protocol::{Role, frame::coding::CloseCode},
        };
        let (ours, theirs) = tokio::io::duplex(64 << 10);
        let operator = tokio::spawn(async move {
            let mut ws = WebSocketStream::from_raw_socket(theirs, Role::Server, None).await;
            ws.send(Message::Close(Some(CloseFrame {
                code: CloseCode::Size,
                reason: "frame of 16777217 bytes exceeds the limit of 1048576 bytes".into(),
            })))
            .await
            .expect("close sent");
            while let Some(Ok(_)) = ws.next().await {}
        });
        let ws = WebSocketStream::from_raw_socket(ours, Role::Client, None).await;
        let spec: ExecSessionSpec = serde_json::from_value(json!({
            "pod": "web", "command": ["cat"], "requester": {"username": "alice"}
        }))
        .expect("spec");
        let ended = relay(ws, &spec, true, false, Io::process())
            .await
            .expect("relay");
        assert_eq!(ended.code, 1);
        let m = ended.message.unwrap_or_default();
        assert!(
            m.contains("exceeds the limit of 1048576 bytes (WebSocket close code 1009)"),
            "{m}"
        );
        operator.await.expect("peer");
    }

    #[test]
    fn an_unreadable_status_says_so() {
        let e = ended_with_status(b"{not json");
        assert_eq!(e.code, 1);
        assert!(
            e.message.as_deref().is_some_and(
                |m| m.starts_with("error: the command's exit status could not be read")
            ),
            "{e:?}"
        );
        let ok = ended_with_status(br#"{"status":"Success"}"#);
        assert_eq!((ok.code, ok.message), (0, None));
    }

    #[test]
    fn frames_and_paths() {
        assert_eq!(
            resize_frame(100, 30),
            b"\x04{\"Width\":100,\"Height\":30}".to_vec()
        );
        assert_eq!(
            subresource_path("ns", "s1", "attach"),
            "/apis/subresources.aexec.dev/v1alpha1/namespaces/ns/execsessions/s1/attach"
        );
    }
}
