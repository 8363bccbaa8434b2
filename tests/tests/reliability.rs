//! Reliability under load and faults, on a control plane of their own: these tests restart the
//! API server, MinIO and operator replicas, and load the operator with hundreds of sessions, so
//! they run one at a time (`--test-threads=1`, as `./dev test` runs them) after the end-to-end
//! tests, where they cannot disturb anyone else's timing.

#[allow(dead_code)]
#[path = "e2e/common.rs"]
mod common;

use std::time::{Duration, Instant};

use aexec_crds::{ExecSession, Phase};
use aexec_operator::recording::cast::{CastReader, Event};
use aexec_testenv::{Target, User, netns, operator::Replica};
use futures::{SinkExt, StreamExt, stream};
use kube::Api;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use common::{Conn, env, policy, target_with_operator_exclusive, wait_phase, with_peak_rss};

/// alice asks for session `name` running `command` (no tty) in the target pod.
async fn ask(t: &Target, name: &str, command: &[&str], stdin: bool) {
    common::request_named(t, name, command, stdin, false).await
}

/// alice attaches to session `name`.
async fn attach(t: &Target, name: &str) -> Conn {
    common::attach_named(User::Alice, t, name)
        .await
        .unwrap_or_else(|e| panic!("alice attaches to {name}: {e}"))
}

/// What a client got from its stream until `until` appeared in stdout, the status frame came,
/// or the stream ended: (stdout, stderr, the status if one came).
async fn read(
    ws: &mut Conn,
    until: Option<&[u8]>,
    secs: u64,
) -> (Vec<u8>, Vec<u8>, Option<serde_json::Value>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let fut = async {
        while let Some(m) = ws.next().await {
            let b = match m {
                Ok(Message::Binary(b)) => b,
                Ok(_) => continue,
                Err(_) => return None,
            };
            match b.first() {
                Some(1) => {
                    out.extend_from_slice(&b[1..]);
                    if until.is_some_and(|u| out.windows(u.len()).any(|w| w == u)) {
                        return None;
                    }
                }
                Some(2) => err.extend_from_slice(&b[1..]),
                Some(3) => return Some(serde_json::from_slice(&b[1..]).expect("status json")),
                _ => {}
            }
        }
        None
    };
    let status = tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("nothing more within {secs}s"));
    (out, err, status)
}

/// The session's recording as carol (the auditor) reads it: (output, input), and whether it
/// is marked interrupted. Reading it verifies its hash chain (a 409 otherwise).
async fn recorded(t: &Target, name: &str) -> (Vec<u8>, Vec<u8>) {
    let cast = common::recording_named(User::Carol, t, name, "v3")
        .await
        .unwrap_or_else(|e| panic!("the recording of {name} reads and verifies: {e}"));
    let rec = CastReader::parse(&cast).expect("valid asciicast v3");
    let (mut out, mut input) = (Vec::new(), Vec::new());
    for (_, ev) in rec.events {
        match ev {
            Event::Output(b) => out.extend(b),
            Event::Input(b) => input.extend(b),
            _ => {}
        }
    }
    (out, input)
}

async fn session(t: &Target, name: &str) -> ExecSession {
    let admin = env().client(User::Admin).await.expect("admin");
    Api::<ExecSession>::namespaced(admin, &t.namespace)
        .get(name)
        .await
        .expect("session")
}

/// Session `name` once it has ended, whichever way.
async fn wait_phase_any(t: &Target, name: &str) -> ExecSession {
    for _ in 0..300 {
        let s = session(t, name).await;
        if matches!(
            s.phase(),
            Phase::Succeeded | Phase::Failed | Phase::Terminated
        ) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{name} did not end within 60s");
}

/// A command that prints `tick-0`, `tick-1`, ... every 0.1 s, `n` times.
fn ticks(n: u32) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("i=0; while [ $i -lt {n} ]; do echo tick-$i; i=$((i+1)); sleep 0.1; done"),
    ]
}

/// The ticks in `out`, which must be `tick-0` up to the last one, each once and in order.
fn tick_count(out: &[u8]) -> usize {
    let text = String::from_utf8_lossy(out);
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("tick-{i}"), "ticks out of order in:\n{text}");
    }
    lines.len()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The operator process's `/proc` directory.
async fn operator_proc() -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "/proc/{}",
        env().operator_pid().await.expect("the operator runs")
    ))
}

/// 200 sessions at once, each sending 1 MiB through `cat` and reading it back: every byte
/// arrives and is recorded exactly, for every session, and the operator's memory stays far
/// below what crosses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_concurrent_sessions() {
    const SESSIONS: usize = 200;
    const BYTES: usize = 1 << 20;
    let (t, _op) = target_with_operator_exclusive().await;
    policy(&t, "auto", json!({"decision": "AutoApprove"})).await;
    let names: Vec<String> = (0..SESSIONS).map(|i| format!("load-{i:03}")).collect();
    stream::iter(&names)
        .for_each_concurrent(16, |n| ask(&t, n, &["cat"], true))
        .await;
    for n in &names {
        wait_phase(&t, n, Phase::Approved, 60).await;
    }
    // Each session's bytes are its own: a byte crossing into another session shows.
    let data = |i: usize| -> Vec<u8> {
        let seed = (i as u32).wrapping_mul(0x9E37_79B9) | 1;
        (0..BYTES as u32)
            .map(|j| (j.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect()
    };
    let one = |i: usize| {
        let (t, name) = (&t, &names[i]);
        async move {
            let input = data(i);
            let (mut tx, mut rx) = attach(t, name).await.split();
            let send = async {
                for chunk in input.chunks(32 << 10) {
                    let mut m = Vec::with_capacity(chunk.len() + 1);
                    m.push(0u8);
                    m.extend_from_slice(chunk);
                    tx.send(Message::Binary(m.into())).await.expect("stdin");
                }
                tx.send(Message::Binary(vec![255u8, 0].into()))
                    .await
                    .expect("end of input");
                tx
            };
            let recv = async {
                let mut out = Vec::with_capacity(BYTES);
                let mut status = None;
                while let Some(Ok(m)) = rx.next().await {
                    if let Message::Binary(b) = m {
                        match b.first() {
                            Some(1) => out.extend_from_slice(&b[1..]),
                            Some(3) => {
                                status = Some(
                                    serde_json::from_slice::<serde_json::Value>(&b[1..])
                                        .expect("status"),
                                );
                                break;
                            }
                            _ => {}
                        }
                    }
                }
                (out, status)
            };
            let (_tx, (out, status)) = futures::future::join(send, recv).await;
            let success = status.as_ref().map(|s| s["status"].clone()) == Some(json!("Success"));
            match (success, out == input) {
                (true, true) => None,
                _ => Some(format!(
                    "{name}: {} bytes back (a prefix of its own: {}), status {status:?}",
                    out.len(),
                    input.starts_with(&out)
                )),
            }
        }
    };
    let proc = operator_proc().await;
    let start = Instant::now();
    let (failed, before, peak) = with_peak_rss(&proc, async {
        tokio::time::timeout(
            Duration::from_secs(600),
            futures::future::join_all((0..SESSIONS).map(one)),
        )
        .await
        .expect("200 sessions within 600s")
    })
    .await;
    let failed: Vec<String> = failed.into_iter().flatten().collect();
    if !failed.is_empty() {
        // Where the bytes went missing: what the operator received is in the recordings.
        let mut report = Vec::new();
        for f in &failed {
            let name = f.split(':').next().unwrap_or_default();
            let s = wait_phase_any(&t, name).await;
            let (out, input) = recorded(&t, name).await;
            report.push(format!(
                "{f}; recorded: {} bytes in, {} bytes out; {} ({:?})",
                input.len(),
                out.len(),
                s.phase(),
                s.status.and_then(|s| s.message)
            ));
        }
        panic!(
            "{} of {SESSIONS} sessions failed:\n{}",
            failed.len(),
            report.join("\n")
        );
    }
    let took = start.elapsed();
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{SESSIONS} sessions x 1 MiB both ways in {took:?}; operator memory {} MiB before, peak {} MiB (+{} KiB per session)",
        before >> 20,
        peak >> 20,
        (grown >> 10) / SESSIONS as u64
    );
    // Per busy session the operator holds, by design: the chunks between the relay and the
    // recorder (3 of 32 KiB or a message more), and the buffers of its two legs (WebSocket,
    // TLS); never the session's bytes, nor the segment being written (a file in the spool), nor
    // a cut's buffers (two workspaces for the whole process). Issue #18's bound: 1 MiB.
    let per_session = grown / SESSIONS as u64;
    assert!(
        per_session < 1 << 20,
        "the operator grew by {} MiB for {SESSIONS} sessions, {} KiB each",
        grown >> 20,
        per_session >> 10
    );

    // Every session ended on its own, and its recording holds exactly its bytes, both ways.
    let checks = stream::iter(0..SESSIONS)
        .map(|i| {
            let (t, name) = (&t, &names[i]);
            async move {
                let s = wait_phase(t, name, Phase::Succeeded, 60).await;
                let rec = s.status.and_then(|s| s.recording).expect("recording");
                assert!(!rec.interrupted, "{name}");
                let (out, input) = recorded(t, name).await;
                let want = data(i);
                assert!(out == want, "{name}: the recorded output is not its bytes");
                assert!(input == want, "{name}: the recorded input is not its bytes");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>();
    tokio::time::timeout(Duration::from_secs(600), checks)
        .await
        .expect("recordings checked within 600s");
}

/// MinIO restarts while a session streams: the session does not notice, and once MinIO is
/// back the whole recording is in it, complete and verified.
#[tokio::test]
async fn minio_restart_mid_session() {
    let (t, _op) = target_with_operator_exclusive().await;
    policy(&t, "auto", json!({"decision": "AutoApprove"})).await;
    ask(&t, "s1", &strs(&ticks(80)), false).await;
    wait_phase(&t, "s1", Phase::Approved, 30).await;
    let mut ws = attach(&t, "s1").await;
    let (mut out, _, _) = read(&mut ws, Some(b"tick-10\n"), 30).await;
    env().stop_minio().expect("MinIO stops");
    let (more, _, _) = read(&mut ws, Some(b"tick-30\n"), 30).await;
    out.extend(more);
    env().restart_minio().await.expect("MinIO starts again");
    let (rest, _, status) = read(&mut ws, None, 30).await;
    out.extend(rest);
    assert_eq!(status.expect("status")["status"], "Success");
    assert_eq!(tick_count(&out), 80, "every tick reached the client");
    let s = wait_phase(&t, "s1", Phase::Succeeded, 30).await;
    let rec = s.status.and_then(|s| s.recording).expect("recording");
    assert!(!rec.interrupted);
    // The spool drains into the restarted MinIO; the recording read from there is complete.
    let uid = s.metadata.uid.expect("uid");
    let prefix = common::uploaded(&t, "s1", &uid).await;
    assert!(
        rec.uri.as_deref().is_some_and(|u| u.starts_with("s3://")),
        "{rec:?}"
    );
    let (recorded_out, _) = recorded(&t, "s1").await;
    assert!(recorded_out == out, "the recording holds every tick");
    eprintln!("recording {prefix} complete in MinIO after its restart");
}

/// kube-apiserver restarts while a session streams. Both legs of the session pass through it,
/// so the session ends; what matters: it ends with a reason once the API server is back, its
/// recording holds everything the client got and verifies, and the operator (watches, lease,
/// relay) works again without a restart of its own.
#[tokio::test]
async fn apiserver_restart_mid_session() {
    let (t, _op) = target_with_operator_exclusive().await;
    policy(&t, "auto", json!({"decision": "AutoApprove"})).await;
    ask(&t, "s1", &strs(&ticks(600)), false).await;
    wait_phase(&t, "s1", Phase::Approved, 30).await;
    let mut ws = attach(&t, "s1").await;
    let (mut out, _, _) = read(&mut ws, Some(b"tick-10\n"), 30).await;
    let (restarted, (rest, _, status)) =
        tokio::join!(env().restart_apiserver(), read(&mut ws, None, 90));
    restarted.expect("kube-apiserver restarts");
    out.extend(rest);
    assert!(
        status.is_none(),
        "the stream was cut, not ended: {status:?}"
    );
    let seen = tick_count(&out);

    // The relay's end is written once the API server is back.
    let deadline = Instant::now() + Duration::from_secs(90);
    let s = loop {
        let s = session(&t, "s1").await;
        if matches!(s.phase(), Phase::Failed | Phase::Terminated) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "s1 still {} 90s after the restart: {:?}",
            s.phase(),
            s.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let st = s.status.expect("status");
    let message = st.message.unwrap_or_default();
    assert!(
        message.contains("the pod's stream ended")
            || message.contains("the requester disconnected"),
        "{message}"
    );
    assert!(st.end_time.is_some());
    let (recorded_out, _) = recorded(&t, "s1").await;
    assert!(
        recorded_out.starts_with(&out),
        "the recording holds the {seen} ticks the client got"
    );
    eprintln!(
        "client got {seen} ticks; recorded {} ticks; ended: {message}",
        tick_count(&recorded_out)
    );

    // The operator decides and relays new sessions on the restarted API server.
    ask(&t, "s2", &["sh", "-c", "echo after-restart; exit 4"], false).await;
    wait_phase(&t, "s2", Phase::Approved, 60).await;
    let mut ws = attach(&t, "s2").await;
    let (out, _, status) = read(&mut ws, None, 30).await;
    assert_eq!(out, b"after-restart\n");
    let status = status.expect("status");
    assert_eq!(status["details"]["causes"][0]["message"], "4", "{status}");
    wait_phase(&t, "s2", Phase::Failed, 30).await;
}

/// A rolling restart of two replicas. Sessions relayed by the replica that stops end at once
/// and cleanly: the user is told, the session fails with the reason, the recording is sealed,
/// marked interrupted, and verifies. Sessions on the other replica go on untouched; the
/// controller moves to the replica that stays; the restarted replica serves new sessions.
#[tokio::test]
async fn operator_rolling_restart() {
    let env = env();
    let (t, _op) = target_with_operator_exclusive().await;
    policy(&t, "auto", json!({"decision": "AutoApprove"})).await;
    let (a_ip, b_ip) = (netns::OPERATOR_IP, netns::OPERATOR_IP_2);
    let b = Replica::at("aexec-operator-1", b_ip, Duration::from_secs(15));
    let mut b_proc = env.spawn_operator(&b).await.expect("replica b starts");

    // Two sessions through each replica: the endpoints route the attach.
    let mut conns = Vec::new();
    for (names, ready) in [
        (["a1", "a2"], [(a_ip, true), (b_ip, false)]),
        (["b1", "b2"], [(a_ip, false), (b_ip, true)]),
    ] {
        env.set_operator_endpoints(&ready).await.expect("endpoints");
        tokio::time::sleep(Duration::from_secs(2)).await;
        for n in names {
            ask(&t, n, &strs(&ticks(900)), false).await;
            wait_phase(&t, n, Phase::Approved, 30).await;
            let mut ws = attach(&t, n).await;
            let (out, _, _) = read(&mut ws, Some(b"tick-1\n"), 30).await;
            conns.push((n, ws, out));
        }
    }
    let broker = |s: &ExecSession| s.status.as_ref().and_then(|s| s.broker.clone());
    for (n, _, _) in &conns {
        let want = if n.starts_with('a') {
            "aexec-operator-0"
        } else {
            "aexec-operator-1"
        };
        assert_eq!(broker(&session(&t, n).await).as_deref(), Some(want), "{n}");
    }

    // Replica a is restarted: its endpoint is already not ready (a terminating pod), SIGTERM.
    let stopping = Instant::now();
    env.stop_operator()
        .await
        .expect("replica a stops on SIGTERM");
    eprintln!("replica a stopped in {:?}", stopping.elapsed());
    for (n, ws, out) in conns.iter_mut().filter(|(n, _, _)| n.starts_with('a')) {
        let (more, err, status) = read(ws, None, 30).await;
        out.extend(more);
        assert!(status.is_none(), "{n}: {status:?}");
        let err = String::from_utf8_lossy(&err);
        assert!(
            err.contains(
                "[aexec] session ended: operator replica aexec-operator-0 is shutting down"
            ),
            "{n}: {err}"
        );
        let s = wait_phase(&t, n, Phase::Failed, 30).await;
        let st = s.status.expect("status");
        assert!(
            st.message
                .as_deref()
                .unwrap_or_default()
                .contains("operator replica aexec-operator-0 shut down"),
            "{n}: {:?}",
            st.message
        );
        let rec = st.recording.expect("recording");
        assert!(rec.interrupted, "{n}: {rec:?}");
    }
    // b's sessions did not notice: they go on ticking.
    for (n, ws, out) in conns.iter_mut().filter(|(n, _, _)| n.starts_with('b')) {
        let seen = tick_count(out);
        let next = format!("tick-{}\n", seen + 20);
        let (more, _, status) = read(ws, Some(next.as_bytes()), 30).await;
        assert!(status.is_none(), "{n}: {status:?}");
        out.extend(more);
        assert_eq!(session(&t, n).await.phase(), Phase::Active, "{n}");
    }
    // The controller moved to b: a new session is decided while a is away.
    ask(&t, "c1", &["sh", "-c", "echo decided-by-b"], false).await;
    wait_phase(&t, "c1", Phase::Approved, 30).await;

    // a comes back (a new pod) and takes new sessions; then b is restarted the same way.
    env.restart_operator_as_follower()
        .await
        .expect("replica a starts again");
    env.set_operator_endpoints(&[(a_ip, true), (b_ip, false)])
        .await
        .expect("endpoints");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut c1 = attach(&t, "c1").await;
    let (out, _, status) = read(&mut c1, None, 30).await;
    assert_eq!(out, b"decided-by-b\n");
    assert_eq!(status.expect("status")["status"], "Success");
    assert_eq!(
        broker(&session(&t, "c1").await).as_deref(),
        Some("aexec-operator-0")
    );
    ask(&t, "a3", &strs(&ticks(900)), false).await;
    wait_phase(&t, "a3", Phase::Approved, 30).await;
    let mut a3 = attach(&t, "a3").await;
    let (mut a3_out, _, _) = read(&mut a3, Some(b"tick-1\n"), 30).await;
    b_proc
        .terminate(Duration::from_secs(30))
        .await
        .expect("replica b stops on SIGTERM");
    for (n, ws, out) in conns.iter_mut().filter(|(n, _, _)| n.starts_with('b')) {
        let (more, err, status) = read(ws, None, 30).await;
        out.extend(more);
        assert!(status.is_none(), "{n}: {status:?}");
        assert!(
            String::from_utf8_lossy(&err)
                .contains("operator replica aexec-operator-1 is shutting down"),
            "{n}"
        );
        let s = wait_phase(&t, n, Phase::Failed, 30).await;
        assert!(
            s.status
                .and_then(|s| s.recording)
                .is_some_and(|r| r.interrupted),
            "{n}"
        );
    }
    let seen = tick_count(&a3_out);
    let next = format!("tick-{}\n", seen + 20);
    let (more, _, status) = read(&mut a3, Some(next.as_bytes()), 30).await;
    assert!(status.is_none(), "a3 went on while b stopped: {status:?}");
    a3_out.extend(more);

    // Every interrupted recording verifies and holds what its client got. A frame is recorded
    // before it is forwarded, and a send still waiting when the replica stops is abandoned
    // (broker.rs, `send!`): the recording may hold that one frame more, never less.
    for (n, _, out) in &conns {
        let (recorded_out, _) = recorded(&t, n).await;
        let (rec, got) = (tick_count(&recorded_out), tick_count(out));
        assert!(
            recorded_out.starts_with(out) && (got..=got + 1).contains(&rec),
            "{n}: recorded {rec} ticks, the client got {got}"
        );
    }
    drop(a3);
    wait_phase(&t, "a3", Phase::Terminated, 30).await;
    // a leads again once b is gone: the environment is as the other tests expect it.
    env.ensure_operator().await.expect("replica a leads");
}

/// A watch that reaches the replica which does not relay the session is forwarded to the one
/// that does (issue #14, `docs/watch.md`): the watcher sees byte for byte what the requester
/// sees, moderates from there (its presence starts the command, its terminate ends it), and
/// nothing it types reaches the pod. The replicas' own certificate, which carries forwarded
/// watches, is believed for nothing else.
#[tokio::test]
async fn watch_on_other_replica() {
    let env = env();
    let (t, _op) = target_with_operator_exclusive().await;
    policy(
        &t,
        "moderated",
        json!({"decision": "AutoApprove", "moderation": {
            "required": 1, "groups": ["sre"], "onModeratorLeave": "Pause", "timeout": "5m"}}),
    )
    .await;
    let (a_ip, b_ip) = (netns::OPERATOR_IP, netns::OPERATOR_IP_2);
    let b = Replica::at("aexec-operator-1", b_ip, Duration::from_secs(15));
    let mut b_proc = env.spawn_operator(&b).await.expect("replica b starts");

    // alice attaches through replica a (aexec-operator-0), which relays the session.
    env.set_operator_endpoints(&[(a_ip, true), (b_ip, false)])
        .await
        .expect("endpoints");
    tokio::time::sleep(Duration::from_secs(2)).await;
    ask(&t, "w1", &["sh", "-c", "echo started; cat"], true).await;
    wait_phase(&t, "w1", Phase::Approved, 30).await;
    let mut alice = attach(&t, "w1").await;
    let st = wait_phase(&t, "w1", Phase::Active, 30)
        .await
        .status
        .expect("status");
    assert_eq!(st.broker.as_deref(), Some("aexec-operator-0"));
    assert_eq!(
        st.broker_address,
        Some(format!("{a_ip}:{}", aexec_testenv::operator::API_PORT))
    );

    // From now on every request reaches replica b, which does not relay w1.
    env.set_operator_endpoints(&[(a_ip, false), (b_ip, true)])
        .await
        .expect("endpoints");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut bob = common::observe_named(User::Bob, &t, "w1", "?mode=moderator")
        .await
        .expect("bob watches w1 through replica b");
    let hello = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match bob.next().await {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(_)) => {}
                other => panic!("the watch ended before its hello: {other:?}"),
            }
        }
    })
    .await
    .expect("a hello within 10 s");
    let hello: serde_json::Value = serde_json::from_str(&hello).expect("hello json");
    assert_eq!(
        (&hello["type"], &hello["session"], &hello["mode"]),
        (&json!("hello"), &json!("w1"), &json!("Moderator")),
        "{hello}"
    );

    // bob's presence, counted by replica a, starts the command.
    let (mut alice_out, _, status) = read(&mut alice, Some(b"started\n"), 30).await;
    assert!(status.is_none(), "{status:?}");
    async fn stdin(ws: &mut Conn, bytes: &[u8]) {
        let mut m = vec![0u8];
        m.extend_from_slice(bytes);
        ws.send(Message::Binary(m.into())).await.expect("send");
    }
    stdin(&mut alice, b"hello from alice\n").await;
    let (more, _, _) = read(&mut alice, Some(b"hello from alice\n"), 30).await;
    alice_out.extend(more);
    let (mut bob_out, _, _) = read(&mut bob, Some(b"hello from alice\n"), 30).await;
    assert_eq!(
        String::from_utf8_lossy(&bob_out),
        String::from_utf8_lossy(&alice_out),
        "the forwarded watch shows what the requester sees"
    );
    // What bob sends as stdin goes nowhere.
    stdin(&mut bob, b"from-bob\n").await;
    stdin(&mut alice, b"second\n").await;
    let (more, _, _) = read(&mut alice, Some(b"second\n"), 30).await;
    alice_out.extend(more);
    let (more, _, _) = read(&mut bob, Some(b"second\n"), 30).await;
    bob_out.extend(more);
    assert_eq!(bob_out, alice_out);
    assert!(
        !String::from_utf8_lossy(&alice_out).contains("from-bob"),
        "a watcher's input reached the pod"
    );

    // Replica a keeps the session's status: bob watches as a moderator, and it is moderated.
    // The status is written beside the stream, not before it (broker/moderated.rs, Announcer):
    // read until it says so, for at most 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st = session(&t, "w1").await.status.expect("status");
        let moderated =
            st.moderation.as_ref().map(|m| m.state) == Some(aexec_crds::ModerationState::Moderated);
        if moderated && !st.watchers.is_empty() || Instant::now() > deadline {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let entry = st.watchers.last().expect("a watcher entry");
    assert_eq!(
        (entry.user.username.as_str(), entry.mode),
        ("bob", aexec_crds::WatchMode::Moderator)
    );
    assert_eq!(
        st.moderation.map(|m| m.state),
        Some(aexec_crds::ModerationState::Moderated),
        "the session's status did not say Moderated within 30 s of bob's watch"
    );

    // The operator's own certificate opens nothing but watches: straight to replica a with it
    // and a forged identity, an approval is refused.
    let pki = env.dir.join("pki");
    let mut config = kube::Config::new(
        format!("https://{a_ip}:{}", aexec_testenv::operator::API_PORT)
            .parse()
            .expect("url"),
    );
    config.accept_invalid_certs = true;
    config.auth_info.client_certificate = Some(pki.join("operator.crt").display().to_string());
    config.auth_info.client_key = Some(pki.join("operator.key").display().to_string());
    let as_replica = kube::Client::try_from(config).expect("client");
    let req = http::Request::put(format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/w1/approve",
        t.namespace
    ))
    .header("X-Remote-User", "bob")
    .header("X-Remote-Group", "sre")
    .body(b"{}".to_vec())
    .expect("request");
    match as_replica.request_text(req).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized"), "{s:?}");
            assert!(s.message.contains("forward only watches"), "{}", s.message);
        }
        other => panic!("the replicas' certificate must not approve: {other:?}"),
    }

    // bob ends the session from replica b.
    bob.send(Message::Text(r#"{"type":"terminate"}"#.into()))
        .await
        .expect("terminate");
    let (more, _, _) = read(&mut alice, None, 30).await;
    alice_out.extend(more);
    let s = wait_phase(&t, "w1", Phase::Terminated, 30).await;
    eprintln!("w1 ended: {:?}", s.status.and_then(|s| s.message));
    // The recording is read once it is sealed (its manifest in the store, its signed record
    // written): right after the end, the last upload may still be on its way (seen under a
    // load average of 10: the manifest was not in MinIO yet).
    common::wait_record(&t, "w1").await;
    let (recorded_out, recorded_in) = recorded(&t, "w1").await;
    assert_eq!(
        String::from_utf8_lossy(&recorded_out),
        String::from_utf8_lossy(&alice_out),
        "the recording holds what alice saw"
    );
    assert!(
        !String::from_utf8_lossy(&recorded_in).contains("from-bob"),
        "the recording's input holds only alice's"
    );

    // As the other tests expect it: replica a alone.
    b_proc
        .terminate(Duration::from_secs(30))
        .await
        .expect("replica b stops");
    env.set_operator_endpoints(&[(a_ip, true), (b_ip, false)])
        .await
        .expect("endpoints");
    env.ensure_operator().await.expect("replica a leads");
}

/// A replica killed mid-session that never comes back (its pod deleted after a node loss):
/// nothing can resume its streams, and its own crash recovery never runs. The leader ends the
/// session once it is past its maximum duration, with the recording sealed from what reached
/// the store, marked interrupted.
#[tokio::test]
async fn killed_replica_that_never_returns_is_ended_by_the_leader() {
    let env = env();
    let (t, _op) = target_with_operator_exclusive().await;
    policy(
        &t,
        "auto",
        json!({"decision": "AutoApprove", "limits": {"maxDuration": "8s"}}),
    )
    .await;
    let (a_ip, b_ip) = (netns::OPERATOR_IP, netns::OPERATOR_IP_2);
    let b = Replica::at("aexec-operator-1", b_ip, Duration::from_secs(15));
    let mut b_proc = env.spawn_operator(&b).await.expect("replica b starts");
    env.set_operator_endpoints(&[(a_ip, false), (b_ip, true)])
        .await
        .expect("endpoints");
    tokio::time::sleep(Duration::from_secs(2)).await;
    ask(&t, "s1", &strs(&ticks(600)), false).await;
    wait_phase(&t, "s1", Phase::Approved, 30).await;
    let mut ws = attach(&t, "s1").await;
    // Three seconds of ticks: at least one segment (cut every 2 s) reached MinIO.
    let (mut out, _, _) = read(&mut ws, Some(b"tick-30\n"), 30).await;
    let killed = Instant::now();
    b_proc.kill();
    env.set_operator_endpoints(&[(a_ip, true), (b_ip, false)])
        .await
        .expect("endpoints");
    let (rest, _, status) = read(&mut ws, None, 30).await;
    out.extend(rest);
    assert!(status.is_none(), "the stream broke: {status:?}");
    assert_eq!(
        session(&t, "s1").await.phase(),
        Phase::Active,
        "nobody ended it yet"
    );

    let s = wait_phase(&t, "s1", Phase::Failed, 90).await;
    eprintln!("ended {:?} after the kill", killed.elapsed());
    let st = s.status.expect("status");
    let message = st.message.unwrap_or_default();
    assert!(
        message.starts_with("the session's broker was lost: operator replica aexec-operator-1"),
        "{message}"
    );
    let rec = st.recording.expect("the recording is sealed");
    assert!(rec.interrupted, "{rec:?}");
    let (recorded_out, _) = recorded(&t, "s1").await;
    let n = tick_count(&recorded_out);
    assert!(
        n >= 10 && out.starts_with(&recorded_out),
        "recorded {n} ticks of {}",
        tick_count(&out)
    );
    eprintln!(
        "the client got {} ticks; the sealed recording holds {n}",
        tick_count(&out)
    );
    // Its signed session record is written too, by the leader, like any other ending's.
    let mut record = None;
    for _ in 0..150 {
        record = session(&t, "s1").await.status.and_then(|s| s.record);
        if record.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let record = record.expect("a signed session record within 30 s");
    assert!(
        record
            .uri
            .as_deref()
            .is_some_and(|u| u.ends_with("/record.json")),
        "{record:?}"
    );
    assert!(record.key_id.is_some(), "{record:?}");
}
