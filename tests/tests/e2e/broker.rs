//! The broker: attach through the aggregated API, relayed to the pod by the operator.

use std::time::Duration;

use aexec_crds::{ExecSession, Phase};
use aexec_testenv::{Target, User};
use futures::{SinkExt, StreamExt};
use kube::{Api, runtime::wait::await_condition};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

pub(crate) use crate::common::Conn;
use crate::common::{
    attach_named, env, kubectl, policy, recording_named, replace_pod, request_named, tamper,
    target_with_operator, target_with_operator_exclusive, wait_phase, with_peak_rss,
};

pub(crate) async fn setup(
    command: &[&str],
    stdin: bool,
) -> (Target, tokio::sync::RwLockReadGuard<'static, ()>) {
    setup_with(command, stdin, json!({})).await
}

/// An auto-approving policy with `limits`, and an approved session `s1` for `command`.
pub(crate) async fn setup_with(
    command: &[&str],
    stdin: bool,
    limits: serde_json::Value,
) -> (Target, tokio::sync::RwLockReadGuard<'static, ()>) {
    let (t, guard) = target_with_operator().await;
    auto_policy(&t, limits).await;
    request(&t, command, stdin, false).await;
    final_session(&t, Phase::Approved).await;
    (t, guard)
}

/// An auto-approving policy with `limits`, governing only the target's namespace.
pub(crate) async fn auto_policy(t: &Target, limits: serde_json::Value) {
    policy(
        t,
        "auto",
        json!({"decision": "AutoApprove", "limits": limits}),
    )
    .await;
}

/// alice requests session `s1` for `command` in the target pod.
pub(crate) async fn request(t: &Target, command: &[&str], stdin: bool, tty: bool) {
    request_named(t, "s1", command, stdin, tty).await
}

pub(crate) async fn attach(user: User, t: &Target) -> Result<Conn, kube::Error> {
    attach_named(user, t, "s1").await
}

/// Reads frames until the status frame: (stdout, stderr, status JSON).
pub(crate) async fn collect(ws: &mut Conn) -> (Vec<u8>, Vec<u8>, serde_json::Value) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let fut = async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Binary(b)) = m {
                match b.first() {
                    Some(1) => out.extend_from_slice(&b[1..]),
                    Some(2) => err.extend_from_slice(&b[1..]),
                    Some(3) => return serde_json::from_slice(&b[1..]).expect("status json"),
                    _ => {}
                }
            }
        }
        panic!("stream ended without a status");
    };
    let status = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("status within 30s");
    (out, err, status)
}

#[tokio::test]
async fn attach_streams_output_and_exit_code() {
    let cmd = ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"];
    let (t, _op) = setup(&cmd, false).await;
    let mut ws = attach(User::Alice, &t).await.expect("alice attaches");
    let (out, err, status) = collect(&mut ws).await;

    // The same as plain kubectl exec gives for the same pod and command.
    let mut args = vec!["exec", "-n", &t.namespace, &t.pod, "--"];
    args.extend(cmd);
    let plain = kubectl(User::Admin, &args, None).await;
    assert_eq!(out, plain.stdout);
    assert_eq!(String::from_utf8_lossy(&err), "to-stderr\n");
    assert!(String::from_utf8_lossy(&plain.stderr).starts_with("to-stderr\n"));
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert_eq!(plain.status.code(), Some(3));

    let admin = env().client(User::Admin).await.expect("admin");
    let api: Api<ExecSession> = Api::namespaced(admin, &t.namespace);
    let done = |s: Option<&ExecSession>| s.is_some_and(|s| s.phase() == Phase::Failed);
    let s = tokio::time::timeout(Duration::from_secs(10), await_condition(api, "s1", done))
        .await
        .expect("final phase in time")
        .expect("watch")
        .expect("session");
    let st = s.status.expect("status");
    assert_eq!(st.exit_code, Some(3));
    assert!(st.start_time.is_some() && st.end_time.is_some());
    assert_eq!(st.broker.as_deref(), Some("aexec-operator-0"));
}

#[tokio::test]
async fn stdin_eof_is_delivered_through_the_broker() {
    let (t, _op) = setup(&["cat"], true).await;
    let mut ws = attach(User::Alice, &t).await.expect("attach");
    let input: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for chunk in input.chunks(16 * 1024) {
        let mut m = vec![0u8];
        m.extend_from_slice(chunk);
        ws.send(Message::Binary(m.into()))
            .await
            .expect("send stdin");
    }
    ws.send(Message::Binary(vec![255u8, 0].into()))
        .await
        .expect("stdin EOF");
    let (out, _, status) = collect(&mut ws).await;
    assert_eq!(status["status"], "Success");
    assert!(
        out == input,
        "cat returned {} bytes, sent {}",
        out.len(),
        input.len()
    );
}

#[tokio::test]
async fn only_requester_can_attach_and_only_once() {
    let (t, _op) = setup(&["sh", "-c", "sleep 1; echo done"], false).await;
    // bob approves sessions but has no attach permission: the API server refuses.
    match attach(User::Bob, &t).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("bob must not attach: {:?}", other.map(|_| ())),
    }
    let mut first = attach(User::Alice, &t).await.expect("first attach");
    match attach(User::Alice, &t).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409, "{s:?}");
            assert!(s.message.contains("attached only once"), "{}", s.message);
        }
        other => panic!("a second attach must be refused: {:?}", other.map(|_| ())),
    }
    let (out, _, status) = collect(&mut first).await;
    assert_eq!(out, b"done\n");
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn client_cannot_change_command() {
    let (t, _op) = setup(&["sh", "-c", "echo approved-command"], false).await;
    // Exec-style parameters on the attach URL are ignored: the approved spec is what runs.
    let client = env().client(User::Alice).await.expect("client");
    let req = http::Request::get(format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/s1/attach?command=sh&command=-c&command=echo+pwned&container=other&tty=true",
        t.namespace
    ))
    .body(Vec::new())
    .expect("request");
    let mut ws = client.connect(req).await.expect("attach").into_stream();
    let (out, _, status) = collect(&mut ws).await;
    assert_eq!(out, b"approved-command\n");
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn expired_session_cannot_attach() {
    let env = env();
    let _op = env.operator().await.expect("operator");
    let admin = env.client(User::Admin).await.expect("admin");
    let t = env.target(&admin).await.expect("target");
    auto_policy(&t, json!({"approvalValidFor": "1s"})).await;
    request(&t, &["id"], false, false).await;
    final_session(&t, Phase::Expired).await;
    match attach(User::Alice, &t).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409, "{s:?}");
            assert!(
                s.message.contains("the session is Expired"),
                "{}",
                s.message
            );
        }
        other => panic!(
            "an expired session must not attach: {:?}",
            other.map(|_| ())
        ),
    }
}

#[tokio::test]
async fn replaced_pod_cannot_be_attached() {
    let env = env();
    // Exclusive: the operator is stopped while the pod is replaced, so the session is still
    // Approved when alice attaches and the broker itself must refuse the new pod.
    let (t, _op) = target_with_operator_exclusive().await;
    auto_policy(&t, json!({})).await;
    request(&t, &["id"], false, false).await;
    final_session(&t, Phase::Approved).await;

    // Replace the pod while the operator is down; when it is back, alice attaches at once: the
    // broker must check the pinned UID itself, whatever the controller has noticed yet.
    env.kill_operator().await;
    replace_pod(&t).await;
    env.ensure_operator().await.expect("operator back");
    match attach(User::Alice, &t).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409, "{s:?}");
            assert!(
                s.message.contains("not the approved pod") || s.message.contains("was replaced"),
                "{}",
                s.message
            );
        }
        other => panic!(
            "the replaced pod must not be attached: {:?}",
            other.map(|_| ())
        ),
    }
}

/// Reads until the stream closes: (stdout, stderr).
pub(crate) async fn drain(ws: &mut Conn, secs: u64) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let fut = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                match b.first() {
                    Some(1) => out.extend_from_slice(&b[1..]),
                    Some(2) => err.extend_from_slice(&b[1..]),
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("stream closed in time");
    (out, err)
}

/// Waits until session `s1` reaches `phase`.
pub(crate) async fn final_session(t: &Target, phase: Phase) -> ExecSession {
    wait_phase(t, "s1", phase, 15).await
}

#[tokio::test]
async fn idle_timeout_ends_session() {
    let (t, _op) = setup_with(&["sleep", "60"], false, json!({"idleTimeout": "2s"})).await;
    // Timed from before the attach request: the relay's idle clock starts before the client
    // has read the handshake response.
    let start = std::time::Instant::now();
    let mut ws = attach(User::Alice, &t).await.expect("attach");
    let (_, err) = drain(&mut ws, 20).await;
    ended_by_limit(
        &t,
        (start.elapsed(), Duration::from_secs(2)),
        &err,
        "[aexec] session ended: no input or output for 2s (idle timeout)",
        "idle timeout",
    )
    .await;
}

/// The session was ended by a limit of its policy: not too early, with `notice` on the user's
/// stderr, and Terminated with `message` in its status.
async fn ended_by_limit(
    t: &Target,
    (elapsed, limit): (Duration, Duration),
    err: &[u8],
    notice: &str,
    message: &str,
) {
    assert!(
        elapsed >= limit,
        "ended after {elapsed:?}, before the {limit:?} limit"
    );
    let err = String::from_utf8_lossy(err);
    assert!(err.contains(notice), "{err}");
    let s = final_session(t, Phase::Terminated).await;
    let msg = s.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains(message), "{msg}");
}

#[tokio::test]
async fn max_duration_ends_session() {
    // Output every 200 ms keeps it from idling: only the maximum duration can end it.
    let cmd = ["sh", "-c", "while true; do echo tick; sleep 0.2; done"];
    let limits = json!({"maxDuration": "3s", "idleTimeout": "1s"});
    let (t, _op) = setup_with(&cmd, false, limits).await;
    // Timed from before the attach request: the relay's clock starts after it was sent.
    let start = std::time::Instant::now();
    let mut ws = attach(User::Alice, &t).await.expect("attach");
    let (out, err) = drain(&mut ws, 20).await;
    assert!(String::from_utf8_lossy(&out).matches("tick").count() >= 5);
    ended_by_limit(
        &t,
        (start.elapsed(), Duration::from_secs(3)),
        &err,
        "session ended: the maximum duration of 3s was reached",
        "maximum duration",
    )
    .await;
}

#[tokio::test]
async fn terminate_ends_session() {
    let (t, _op) = setup(&["sleep", "60"], false).await;
    let mut ws = attach(User::Alice, &t).await.expect("attach");
    final_session(&t, Phase::Active).await;
    // bob (approver role) ends it from outside.
    let bob = env().client(User::Bob).await.expect("bob");
    let url = format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/s1/terminate",
        t.namespace
    );
    let put = || {
        http::Request::put(url.clone())
            .body(Vec::new())
            .expect("request")
    };
    bob.request_text(put()).await.expect("bob terminates");
    let (_, err) = drain(&mut ws, 10).await;
    assert!(String::from_utf8_lossy(&err).contains("session terminated by bob"));
    let s = final_session(&t, Phase::Terminated).await;
    assert_eq!(
        s.status.and_then(|s| s.message).as_deref(),
        Some("terminated by bob")
    );
    // A finished session cannot be terminated again.
    match bob.request_text(put()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("expected 409, got {other:?}"),
    }
}

#[tokio::test]
async fn client_protocol_violations_end_the_session_cleanly() {
    // A frame on a channel a client may not use, then one larger than the 1 MiB bound: each
    // ends its session as Terminated, saying why.
    for (bad, why) in [
        (vec![7u8, b'x'], "unknown channel 7"),
        (vec![0u8; (1 << 20) + 2], "exceeds the limit"),
    ] {
        let (t, _op) = setup(&["cat"], true).await;
        let mut ws = attach(User::Alice, &t).await.expect("attach");
        ws.send(Message::Binary(bad.into())).await.expect("send");
        let _ = drain(&mut ws, 10).await;
        let s = final_session(&t, Phase::Terminated).await;
        let msg = s.status.and_then(|s| s.message).unwrap_or_default();
        assert!(msg.contains("the client broke the exec protocol"), "{msg}");
        assert!(msg.contains(why), "{msg}");
    }
}

#[tokio::test]
async fn client_disconnect_terminates_the_session() {
    let (t, _op) = setup(&["sleep", "60"], false).await;
    let ws = attach(User::Alice, &t).await.expect("attach");
    final_session(&t, Phase::Active).await;
    drop(ws);
    let s = final_session(&t, Phase::Terminated).await;
    let msg = s.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("the requester disconnected"), "{msg}");
}

/// GET the recording as `user` in `format`.
pub(crate) async fn recording(
    user: User,
    t: &Target,
    format: &str,
) -> Result<Vec<u8>, kube::Error> {
    recording_named(user, t, "s1", format).await
}

#[tokio::test]
async fn recording_is_byte_exact() {
    // Random binary both ways: 3 MiB from the pod, and 1 MiB of input echoed back by `cat`
    // interleaved with it (stdin is not a terminal, so stdout is exactly the bytes).
    let (t, _op) = setup(&["sh", "-c", "head -c 3145728 /dev/urandom; cat"], true).await;
    let ws = attach(User::Alice, &t).await.expect("attach");
    let input: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (mut tx, mut rx) = ws.split();
    let send = async {
        for chunk in input.chunks(32 * 1024) {
            let mut m = vec![0u8];
            m.extend_from_slice(chunk);
            tx.send(Message::Binary(m.into())).await.expect("stdin");
        }
        tx.send(Message::Binary(vec![255u8, 0].into()))
            .await
            .expect("eof");
        tx
    };
    let recv = async {
        let mut out = Vec::new();
        while let Some(Ok(m)) = rx.next().await {
            if let Message::Binary(b) = m {
                match b.first() {
                    Some(1) => out.extend_from_slice(&b[1..]),
                    Some(3) => break,
                    _ => {}
                }
            }
        }
        out
    };
    let (_tx, out) =
        tokio::time::timeout(Duration::from_secs(60), futures::future::join(send, recv))
            .await
            .expect("session done in time");
    assert_eq!(out.len(), (3 << 20) + input.len());
    assert!(out[3 << 20..] == input[..], "cat echoed the input");
    let s = final_session(&t, Phase::Succeeded).await;
    let rec = s
        .status
        .and_then(|s| s.recording)
        .expect("recording in status");
    // The header's segment and at least two of the bytes (cut at 4 MiB): the bytes cross a cut.
    assert!(rec.segments.unwrap_or(0) >= 3, "{rec:?}");

    // carol (auditor) reads it back; the bytes that crossed are exactly the recorded ones.
    let cast = recording(User::Carol, &t, "v3")
        .await
        .expect("carol reads the recording");
    let rec =
        aexec_operator::recording::cast::CastReader::parse(&cast).expect("valid asciicast v3");
    let (mut o, mut i) = (Vec::new(), Vec::new());
    for (_, ev) in rec.events {
        match ev {
            aexec_operator::recording::cast::Event::Output(b) => o.extend(b),
            aexec_operator::recording::cast::Event::Input(b) => i.extend(b),
            _ => {}
        }
    }
    assert!(
        o == out,
        "recorded output differs from what crossed ({} vs {} bytes)",
        o.len(),
        out.len()
    );
    assert!(i == input, "recorded input differs");
    let text = recording(User::Carol, &t, "text")
        .await
        .expect("text export");
    assert!(!text.is_empty());
}

#[tokio::test]
async fn tampered_recording_fails_verification() {
    let (t, _op) = setup(&["sh", "-c", "echo secret-output; echo more"], false).await;
    let mut ws = attach(User::Alice, &t).await.expect("attach");
    let _ = collect(&mut ws).await;
    let s = final_session(&t, Phase::Succeeded).await;
    let uid = s.metadata.uid.clone().expect("uid");
    recording(User::Carol, &t, "v3")
        .await
        .expect("intact recording verifies");
    // Change one byte of the output's segment stored in MinIO (segment 0 is the header).
    let prefix = crate::common::uploaded(&t, "s1", &uid).await;
    tamper(&format!("{prefix}/seg-000001.cast"), b"secret").await;
    match recording(User::Carol, &t, "v3").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409, "{s:?}");
            assert!(s.message.contains("was altered"), "{}", s.message);
        }
        other => panic!(
            "a tampered recording must fail verification: {:?}",
            other.map(|b| b.len())
        ),
    }
}

/// Sends `line` as stdin until `want` shows in the output (the resize is applied asynchronously
/// by the node, so the shell may answer before it lands).
async fn type_until(ws: &mut Conn, seen: &mut Vec<u8>, line: &[u8], want: &str) {
    for _ in 0..20 {
        let mut m = vec![0u8];
        m.extend_from_slice(line);
        ws.send(Message::Binary(m.into())).await.expect("type");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(Ok(Message::Binary(b)))) =
            tokio::time::timeout_at(deadline, ws.next()).await
        {
            if b.first() == Some(&1) {
                seen.extend_from_slice(&b[1..]);
            }
        }
        if String::from_utf8_lossy(seen).contains(want) {
            return;
        }
    }
    panic!("{want:?} never showed: {:?}", String::from_utf8_lossy(seen));
}

#[tokio::test]
async fn interactive_tty_session_is_recorded() {
    let env = env();
    let _op = env.operator().await.expect("operator");
    let admin = env.client(User::Admin).await.expect("admin");
    let t = env.target(&admin).await.expect("target");
    auto_policy(&t, json!({})).await;
    request(&t, &["sh"], true, true).await;
    final_session(&t, Phase::Approved).await;

    let mut ws = attach(User::Alice, &t).await.expect("attach");
    let mut seen = Vec::new();
    ws.send(Message::Binary(
        frames(4, br#"{"Width":100,"Height":30}"#).into(),
    ))
    .await
    .expect("resize");
    type_until(&mut ws, &mut seen, b"stty size\n", "30 100").await;
    ws.send(Message::Binary(
        frames(4, br#"{"Width":120,"Height":40}"#).into(),
    ))
    .await
    .expect("resize");
    type_until(&mut ws, &mut seen, b"stty size\n", "40 120").await;
    ws.send(Message::Binary(
        frames(0, b"echo typed-$((6*7)); exit 0\n").into(),
    ))
    .await
    .expect("type");
    let (out, _, status) = collect(&mut ws).await;
    seen.extend(out);
    assert_eq!(status["status"], "Success");
    assert!(String::from_utf8_lossy(&seen).contains("typed-42"));
    final_session(&t, Phase::Succeeded).await;

    let cast = recording(User::Carol, &t, "v3").await.expect("recording");
    let rec = aexec_operator::recording::cast::CastReader::parse(&cast).expect("valid v3");
    use aexec_operator::recording::cast::Event as E;
    // In order: the first resize, typed input, its echo and answer, the second resize, the
    // exit code.
    let pos = |f: &dyn Fn(&E) -> bool| {
        rec.events
            .iter()
            .position(|(_, e)| f(e))
            .expect("event recorded")
    };
    let r1 = pos(&|e| {
        matches!(
            e,
            E::Resize {
                cols: 100,
                rows: 30
            }
        )
    });
    let typed = pos(&|e| matches!(e, E::Input(b) if b.starts_with(b"stty size")));
    let answer =
        pos(&|e| matches!(e, E::Output(b) if String::from_utf8_lossy(b).contains("30 100")));
    let r2 = pos(&|e| {
        matches!(
            e,
            E::Resize {
                cols: 120,
                rows: 40
            }
        )
    });
    let forty_two =
        pos(&|e| matches!(e, E::Output(b) if String::from_utf8_lossy(b).contains("typed-42")));
    let exit = pos(&|e| matches!(e, E::Exit(0)));
    assert!(r1 < typed && typed < answer && answer < r2 && r2 < forty_two && forty_two < exit);
    assert!(rec.header.aexec.tty && rec.header.aexec.requester.username == "alice");
}

fn frames(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![channel];
    m.extend_from_slice(payload);
    m
}

#[tokio::test]
async fn command_not_found_fails_the_session_with_the_reason() {
    let (t, _op) = setup(&["no-such-command-aexec"], false).await;
    let mut ws = attach(User::Alice, &t).await.expect("attach");
    let (_, _, status) = collect(&mut ws).await;
    assert_eq!(status["status"], "Failure");
    let s = final_session(&t, Phase::Failed).await;
    let msg = s.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("no-such-command-aexec"), "{msg}");
}

#[tokio::test]
async fn invalid_resize_is_not_applied_and_is_recorded() {
    let env = env();
    let _op = env.operator().await.expect("operator");
    let admin = env.client(User::Admin).await.expect("admin");
    let t = env.target(&admin).await.expect("target");
    auto_policy(&t, json!({})).await;
    request(&t, &["sh"], true, true).await;
    final_session(&t, Phase::Approved).await;

    let mut ws = attach(User::Alice, &t).await.expect("attach");
    let resize = |doc: &[u8]| Message::Binary(frames(4, doc).into());
    ws.send(resize(br#"{"Width":100,"Height":30}"#))
        .await
        .expect("resize");
    let mut seen = Vec::new();
    type_until(
        &mut ws,
        &mut seen,
        b"echo size-$(stty size)\n",
        "size-30 100",
    )
    .await;

    // Not JSON, a wrong type, and a zero size (which the node would apply if it got it).
    let bad: [&[u8]; 3] = [
        b"not json",
        br#"{"Width":"wide","Height":30}"#,
        br#"{"Width":0,"Height":0}"#,
    ];
    for doc in bad {
        ws.send(resize(doc)).await.expect("send a bad resize");
    }
    // The session goes on, at its size.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = Vec::new();
    type_until(
        &mut ws,
        &mut seen,
        b"echo after-$(stty size)\n",
        "after-30 100",
    )
    .await;
    ws.send(resize(br#"{"Width":120,"Height":40}"#))
        .await
        .expect("resize");
    let mut seen = Vec::new();
    type_until(
        &mut ws,
        &mut seen,
        b"echo later-$(stty size)\n",
        "later-40 120",
    )
    .await;
    ws.send(Message::Binary(frames(0, b"exit 0\n").into()))
        .await
        .expect("type");
    let (_, _, status) = collect(&mut ws).await;
    assert_eq!(status["status"], "Success");
    final_session(&t, Phase::Succeeded).await;

    // The recording holds the two real resizes, and says where the bad ones were dropped.
    let cast = recording(User::Carol, &t, "v3").await.expect("recording");
    let rec = aexec_operator::recording::cast::CastReader::parse(&cast).expect("valid v3");
    use aexec_operator::recording::cast::Event as E;
    let sizes: Vec<(u16, u16)> = rec
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            E::Resize { cols, rows } => Some((*cols, *rows)),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [(100, 30), (120, 40)]);
    let notes: Vec<(usize, &str)> = rec
        .events
        .iter()
        .enumerate()
        .filter_map(|(i, (_, e))| match e {
            E::Marker(m) if m.starts_with("a resize from the client was not applied") => {
                Some((i, m.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes[0].1.contains(r#"(it sent "not json")"#),
        "{}",
        notes[0].1
    );
    assert!(notes[1].1.contains("wide"), "{}", notes[1].1);
    assert!(notes[2].1.contains("0x0"), "{}", notes[2].1);
    let at = |w: (u16, u16)| {
        rec.events
            .iter()
            .position(|(_, e)| matches!(e, E::Resize { cols, rows } if (*cols, *rows) == w))
            .expect("resize")
    };
    assert!(at((100, 30)) < notes[0].0 && notes[2].0 < at((120, 40)));
}

#[tokio::test]
async fn slow_client_keeps_memory_flat_and_holds_back_only_its_own_session() {
    // Exclusive: the operator's memory is measured.
    let env = env();
    let _op = env.operator_exclusive().await.expect("operator");
    let admin = env.client(User::Admin).await.expect("admin");
    // Two sessions whose client stops reading (one will read later, one will leave) and one
    // ordinary session beside them.
    let (late, gone, other) = (
        env.target(&admin).await.expect("target"),
        env.target(&admin).await.expect("target"),
        env.target(&admin).await.expect("target"),
    );
    const LATE_BYTES: usize = 12_000_000;
    let filler = "yes aexec-backpressure-0123456789abcdefghijklmnopqrstuvwxyz";
    // The late one's command waits for the end of its input after its output, so that it
    // ends only once the client has read everything: a command that exits while its output
    // still waits in the node's and API server's exec buffers can lose the tail there (with
    // plain `kubectl exec` too, kubernetes/kubernetes#124571).
    let late_cmd = format!("{filler} | head -c {LATE_BYTES}; cat >/dev/null; echo input-closed");
    for (t, cmd, stdin) in [
        (&late, late_cmd.as_str(), true),
        (&gone, filler, false),
        (&other, "sleep 1; echo other-session-ok", false),
    ] {
        auto_policy(t, json!({})).await;
        request(t, &["sh", "-c", cmd], stdin, false).await;
        final_session(t, Phase::Approved).await;
    }
    let proc = std::path::PathBuf::from(format!(
        "/proc/{}",
        env.operator_pid().await.expect("the operator runs")
    ));

    let late_ws = attach(User::Alice, &late).await.expect("attach");
    let gone_ws = attach(User::Alice, &gone).await.expect("attach");
    // Meanwhile another session runs normally.
    let mut ws = attach(User::Alice, &other).await.expect("attach");
    let (out, _, status) = collect(&mut ws).await;
    assert_eq!(out, b"other-session-ok\n");
    assert_eq!(status["status"], "Success");
    final_session(&other, Phase::Succeeded).await;
    // By now the buffers between the pods and the clients are full: from here on the
    // operator's memory stays flat, as nothing more is read from a pod whose client does not
    // read (`yes` would push gigabytes meanwhile).
    let ((), before, peak) = with_peak_rss(&proc, tokio::time::sleep(Duration::from_secs(4))).await;
    let grown = peak.saturating_sub(before);
    eprintln!("operator memory while two clients did not read: {before} bytes, then {grown} more");
    assert!(grown < 8 << 20, "the operator grew by {grown} bytes");
    for t in [&late, &gone] {
        let (phase, message) = session_phase(t).await;
        assert_eq!(phase, Phase::Active, "{message:?}");
    }

    // The client that leaves ends its session; what was relayed is recorded, and it is only
    // what the buffers between the pod and the client hold, not what `yes` could write.
    drop(gone_ws);
    let s = final_session(&gone, Phase::Terminated).await;
    let st = s.status.expect("status");
    assert!(
        st.message
            .clone()
            .unwrap_or_default()
            .contains("the requester disconnected"),
        "{:?}",
        st.message
    );
    let rec = st.recording.expect("recording");
    assert!(!rec.interrupted);
    let recorded = rec.bytes.unwrap_or(0);
    eprintln!("recorded for the client that left: {recorded} bytes");
    // Between the operator and the client sit two TCP connections (through the API server),
    // each with a send and a receive buffer that the kernel grows up to its limits.
    let limit = |f: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{f}"))
            .ok()
            .and_then(|v| v.split_whitespace().last()?.parse::<i64>().ok())
            .unwrap_or(32 << 20)
    };
    let buffers = 2 * (limit("tcp_rmem") + limit("tcp_wmem")) + (16 << 20);
    assert!(
        recorded < buffers,
        "{recorded} bytes recorded; buffers hold {buffers}"
    );
    let cast = recording(User::Carol, &gone, "v3")
        .await
        .expect("the recording verifies");
    assert_eq!(cast.len() as i64, recorded);

    // The client that reads at last gets every byte, closes its input, and gets the rest and
    // the exit status; the recording holds exactly what it got.
    let mut late_ws = late_ws;
    let mut out = Vec::new();
    let read_all = async {
        while out.len() < LATE_BYTES {
            match late_ws.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&1) => {
                    out.extend_from_slice(&b[1..])
                }
                Some(Ok(_)) => {}
                other => panic!("the stream ended early: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("the output within 60s");
    late_ws
        .send(Message::Binary(vec![255u8, 0].into()))
        .await
        .expect("close stdin");
    let (rest, _, status) = collect(&mut late_ws).await;
    assert_eq!(status["status"], "Success");
    out.extend(rest);
    let line = b"aexec-backpressure-0123456789abcdefghijklmnopqrstuvwxyz\n";
    let mut want: Vec<u8> = line.iter().copied().cycle().take(LATE_BYTES).collect();
    want.extend_from_slice(b"input-closed\n");
    assert!(out == want, "{} bytes, not the command's output", out.len());
    final_session(&late, Phase::Succeeded).await;
    let cast = recording(User::Carol, &late, "v3")
        .await
        .expect("recording");
    let rec = aexec_operator::recording::cast::CastReader::parse(&cast).expect("valid v3");
    let mut recorded = Vec::new();
    for (_, ev) in rec.events {
        if let aexec_operator::recording::cast::Event::Output(b) = ev {
            recorded.extend(b);
        }
    }
    assert!(recorded == out, "the recording holds what the client got");
}

/// The phase and message of session `s1` in `t`, now.
async fn session_phase(t: &Target) -> (Phase, Option<String>) {
    let admin = env().client(User::Admin).await.expect("admin");
    let s = Api::<ExecSession>::namespaced(admin, &t.namespace)
        .get("s1")
        .await
        .expect("session");
    (s.phase(), s.status.and_then(|s| s.message))
}

#[tokio::test]
async fn a_client_that_never_reads_cannot_outlast_the_maximum_duration() {
    // Endless output to a client that reads nothing: the broker waits on the client, yet the
    // policy's maximum duration still ends the session.
    let cmd = ["sh", "-c", "yes aexec-never-read-filler"];
    let (t, _op) = setup_with(&cmd, false, json!({"maxDuration": "3s"})).await;
    let ws = attach(User::Alice, &t).await.expect("attach");
    let start = std::time::Instant::now();
    let s = final_session(&t, Phase::Terminated).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(12),
        "ended after {took:?}"
    );
    let msg = s.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        msg.contains("the maximum duration of 3s was reached"),
        "{msg}"
    );
    drop(ws);
}
