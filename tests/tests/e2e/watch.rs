//! Watching a session live (`kubectl aexec watch`, the `observe` subresource; issue #14).

use std::{process::Stdio, time::Duration};

use aexec_crds::{Phase, WatchMode};
use aexec_testenv::{Target, User};
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Event;
use kube::{Api, api::ListParams};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    broker::{attach, final_session, recording, setup},
    common::{Conn, aexec, env, plugin_bin},
    plugin::text,
};

/// `user` opens the observe WebSocket of session `s1`.
pub(crate) async fn observe(user: User, t: &Target, query: &str) -> Result<Conn, kube::Error> {
    crate::common::observe_named(user, t, "s1", query).await
}

/// Sends stdin to the attached requester's stream.
async fn type_in(ws: &mut Conn, bytes: &[u8]) {
    let mut m = vec![0u8];
    m.extend_from_slice(bytes);
    ws.send(Message::Binary(m.into())).await.expect("stdin");
}

/// Reads the requester's stream until its stdout holds `want` bytes in all.
async fn read_until(ws: &mut Conn, out: &mut Vec<u8>, want: usize) {
    let fut = async {
        while out.len() < want {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&1) => {
                    out.extend_from_slice(&b[1..])
                }
                Some(Ok(_)) => {}
                other => panic!("the stream ended early: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("output within 30 s");
}

/// Bytes of every value 0-255 and some UTF-8 and escape sequences, as a session may show.
fn mixed(len: usize, seed: u32) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8)
        .collect();
    v.extend_from_slice("\x1b[31mred\x1b[0m héllo ✓\n".as_bytes());
    v
}

#[tokio::test]
async fn watch_sees_what_the_requester_sees() {
    let (t, _op) = setup(&["cat"], true).await;
    let mut alice = attach(User::Alice, &t).await.expect("attach");
    final_session(&t, Phase::Active).await;
    // What the session showed before anyone watched: the watcher gets it first.
    let before = mixed(40 << 10, 1);
    type_in(&mut alice, &before).await;
    let mut alice_out = Vec::new();
    read_until(&mut alice, &mut alice_out, before.len()).await;

    // bob (approver) watches with the plugin.
    let mut bob = tokio::process::Command::new(plugin_bin())
        .arg("--kubeconfig")
        .arg(env().kubeconfig(User::Bob))
        .args(["watch", "s1", "-n", &t.namespace])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the plugin starts");
    let mut bob_stdout = bob.stdout.take().expect("stdout");
    let mut bob_out = Vec::new();
    let caught_up = async {
        let mut buf = vec![0u8; 64 << 10];
        while bob_out.len() < before.len() {
            let n = bob_stdout.read(&mut buf).await.expect("read");
            assert!(n > 0, "the watch ended before it showed the backlog");
            bob_out.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), caught_up)
        .await
        .expect("the watcher sees the backlog within 30 s");
    assert!(bob_out == before, "the backlog differs from what alice saw");

    // Live: more output in several pieces, then the end.
    let mut sent = before.len();
    for i in 0..8 {
        let piece = mixed(16 << 10, 100 + i);
        sent += piece.len();
        type_in(&mut alice, &piece).await;
        read_until(&mut alice, &mut alice_out, sent).await;
    }
    alice
        .send(Message::Binary(vec![255u8, 0].into()))
        .await
        .expect("stdin closed");
    let (rest, _) = crate::broker::drain(&mut alice, 30).await;
    alice_out.extend_from_slice(&rest);

    let finished = tokio::time::timeout(Duration::from_secs(30), async {
        bob_stdout.read_to_end(&mut bob_out).await.expect("read");
        bob.wait_with_output().await.expect("the plugin ends")
    })
    .await
    .expect("the watch ends with the session");
    let bob_err = text(&finished.stderr);
    assert_eq!(finished.status.code(), Some(0), "{bob_err}");
    assert_eq!(alice_out.len(), sent, "alice's output");
    assert!(
        bob_out == alice_out,
        "the watcher saw {} bytes, the requester {}: not byte-identical",
        bob_out.len(),
        alice_out.len()
    );
    assert!(
        bob_err.contains(&format!(
            "watching session s1 in {}: alice runs `cat`",
            t.namespace
        )),
        "{bob_err}"
    );
    assert!(
        bob_err.contains("session s1 ended (the command exited with 0)"),
        "{bob_err}"
    );

    // Who watched: in the status, in the recording, as Events. The leave is written when the
    // watcher's connection is done, which may be just after the session's end.
    final_session(&t, Phase::Succeeded).await;
    let mut watchers = Vec::new();
    for _ in 0..50 {
        watchers = final_session(&t, Phase::Succeeded)
            .await
            .status
            .map(|s| s.watchers)
            .unwrap_or_default();
        if watchers.iter().any(|w| w.left.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let w = watchers
        .iter()
        .find(|w| w.user.username == "bob")
        .unwrap_or_else(|| panic!("bob in status.watchers: {watchers:?}"));
    assert_eq!(w.mode, WatchMode::Observer);
    assert!(w.user.groups.iter().any(|g| g == "sre"), "{w:?}");
    assert!(w.left.is_some(), "bob's leave is in the status: {w:?}");
    let cast = text(&recording(User::Carol, &t, "v3").await.expect("recording"));
    // bob stayed to the end: the recording has his join; his leave came after its end.
    assert!(cast.contains("watch: bob (Observer) joined"), "{cast}");
    let events: Api<Event> = Api::namespaced(
        env().client(User::Admin).await.expect("admin"),
        &t.namespace,
    );
    let mut reasons = Vec::new();
    for _ in 0..50 {
        reasons = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect::<Vec<_>>();
        if reasons.iter().any(|r| r == "WatcherLeft") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reasons.iter().any(|r| r == "WatcherJoined"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "WatcherLeft"), "{reasons:?}");
}

#[tokio::test]
async fn watch_is_read_only() {
    let (t, _op) = setup(&["cat"], true).await;
    let mut alice = attach(User::Alice, &t).await.expect("attach");
    final_session(&t, Phase::Active).await;
    // A hostile watcher speaks the exec protocol itself: stdin, a resize, stdin's close, and a
    // text message pretending to be input.
    let mut bob = observe(User::Bob, &t, "").await.expect("bob watches");
    for frame in [
        b"\x00rm -rf /\n".to_vec(),
        b"\x04{\"Width\":10,\"Height\":5}".to_vec(),
        vec![255u8, 0],
    ] {
        bob.send(Message::Binary(frame.into())).await.expect("sent");
    }
    bob.send(Message::Text(
        r#"{"type":"stdin","data":"reboot\n"}"#.into(),
    ))
    .await
    .expect("sent");
    // The operator says it did not understand the text; the binary frames are dropped silently.
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match bob.next().await {
                Some(Ok(Message::Text(t))) if t.contains("\"error\"") => return t.to_string(),
                Some(Ok(_)) => {}
                other => panic!("the watch ended: {other:?}"),
            }
        }
    })
    .await
    .expect("an answer to the text message");
    assert!(refused.contains("not understood"), "{refused}");

    // The session goes on with alice's input only.
    type_in(&mut alice, b"only alice types here\n").await;
    alice
        .send(Message::Binary(vec![255u8, 0].into()))
        .await
        .expect("stdin closed");
    let (out, _) = crate::broker::drain(&mut alice, 30).await;
    assert_eq!(text(&out), "only alice types here\n");
    // bob saw the same, and nothing of his own.
    let (bob_out, _) = crate::broker::drain(&mut bob, 30).await;
    assert_eq!(text(&bob_out), "only alice types here\n");
    final_session(&t, Phase::Succeeded).await;
    let cast = text(&recording(User::Carol, &t, "v3").await.expect("recording"));
    assert!(cast.contains("only alice types here"), "{cast}");
    for planted in ["rm -rf", "reboot", "\"10x5\"", "[10,5]"] {
        assert!(
            !cast.contains(planted),
            "{planted:?} reached the recording: {cast}"
        );
    }
}

#[tokio::test]
async fn watch_refused_for_requester_and_outsider() {
    let (t, _op) = setup(&["sleep", "30"], false).await;
    let _alice = attach(User::Alice, &t).await.expect("attach");
    final_session(&t, Phase::Active).await;
    // RBAC: the requester role has no observe; an outsider cannot even read the session.
    for (user, refused) in [
        (User::Alice, "cannot get resource \"execsessions/observe\""),
        (User::Mallory, "cannot get resource \"execsessions\""),
    ] {
        let o = aexec(user, &["watch", "s1", "-n", &t.namespace], None).await;
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(refused), "{err}");
        assert!(err.contains("ask your cluster admin for the"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    // A moderator only where the policy asks for one.
    let o = aexec(
        User::Bob,
        &["watch", "s1", "--moderate", "-n", &t.namespace],
        None,
    )
    .await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("needs no moderator"), "{err}");
}

#[tokio::test]
async fn watcher_terminate_needs_the_right() {
    let (t, _op) = setup(&["sleep", "30"], false).await;
    let mut alice = attach(User::Alice, &t).await.expect("attach");
    final_session(&t, Phase::Active).await;
    let terminate = Message::Text(r#"{"type":"terminate"}"#.into());
    // carol (auditor) may watch, not end the session.
    let mut carol = observe(User::Carol, &t, "").await.expect("carol watches");
    carol.send(terminate.clone()).await.expect("sent");
    let answer = next_text(&mut carol).await;
    assert!(
        answer.contains("cannot update resource \\\"execsessions/terminate\\\""),
        "{answer}"
    );
    // carol leaves mid-session: the recording says so where it happened.
    carol
        .send(Message::Text(r#"{"type":"leave"}"#.into()))
        .await
        .expect("sent");
    let _ = crate::broker::drain(&mut carol, 10).await;
    // bob (approver) may.
    let mut bob = observe(User::Bob, &t, "?mode=observer")
        .await
        .expect("bob watches");
    bob.send(terminate).await.expect("sent");
    assert!(next_text(&mut bob).await.contains("terminating"));
    let (_, err) = crate::broker::drain(&mut alice, 15).await;
    assert!(
        text(&err).contains("session terminated by bob"),
        "{}",
        text(&err)
    );
    let s = final_session(&t, Phase::Terminated).await;
    assert_eq!(
        s.status.and_then(|s| s.message).as_deref(),
        Some("terminated by bob")
    );
    let cast = text(&recording(User::Carol, &t, "v3").await.expect("recording"));
    let joined = cast
        .find("watch: carol (Observer) joined")
        .expect("carol's join");
    let left = cast
        .find("watch: carol (Observer) left")
        .expect("carol's leave");
    let bob = cast
        .find("watch: bob (Observer) joined")
        .expect("bob's join");
    assert!(joined < left && left < bob, "{cast}");
}

/// The next text message (skipping the hello and output).
async fn next_text(ws: &mut Conn) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if !t.contains("\"hello\"") => return t.to_string(),
                Some(Ok(_)) => {}
                other => panic!("the watch ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a text message within 10 s")
}

#[tokio::test]
async fn slow_watcher_keeps_memory_flat() {
    const TOTAL: usize = 128 << 20;
    let (t, _op) = crate::common::target_with_operator_exclusive().await;
    crate::broker::auto_policy(&t, serde_json::json!({})).await;
    let cmd = format!("sleep 3; head -c {TOTAL} /dev/zero");
    crate::broker::request(&t, &["sh", "-c", &cmd], false, false).await;
    final_session(&t, Phase::Approved).await;
    let proc = std::path::PathBuf::from(format!(
        "/proc/{}",
        env().operator_pid().await.expect("the operator runs")
    ));
    let mut alice = attach(User::Alice, &t).await.expect("attach");
    final_session(&t, Phase::Active).await;
    // bob watches and then reads nothing while the session sends 128 MiB.
    let mut bob = observe(User::Bob, &t, "").await.expect("bob watches");
    let (read, before, peak) = crate::common::with_peak_rss(&proc, async {
        let mut n = 0usize;
        let fut = async {
            while let Some(Ok(m)) = alice.next().await {
                if let Message::Binary(b) = m {
                    match b.first() {
                        Some(1) => n += b.len() - 1,
                        Some(3) => return,
                        _ => {}
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), fut)
            .await
            .expect("the session ends within 120 s");
        n
    })
    .await;
    let grown = peak.saturating_sub(before);
    eprintln!(
        "operator memory while a watcher read nothing of {} MiB: {} MiB before, {:.1} MiB more at the peak",
        TOTAL >> 20,
        before >> 20,
        grown as f64 / f64::from(1 << 20)
    );
    // Under load the end of a bulk stream is sometimes lost before it reaches the operator, with
    // the exit status still Success (seen in CI and in the benchmark; docs/performance.md, "A
    // short stream"): not what this test is about, so it is printed, and the watcher is held to
    // what the session relayed.
    if read != TOTAL {
        eprintln!(
            "the stream ended {} bytes short of {TOTAL} before the operator (see docs/performance.md)",
            TOTAL - read
        );
    }
    assert!(read > TOTAL / 2 && read <= TOTAL, "alice got {read} bytes");
    // Unbounded, bob's queue alone would hold up to 128 MiB.
    assert!(grown < 32 << 20, "the operator grew by {grown} bytes");
    final_session(&t, Phase::Succeeded).await;

    // bob reads now: what fitted his queue, a notice of what he missed, and the end.
    let (mut shown, mut skipped, mut ended) = (0usize, 0u64, false);
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(m)) = bob.next().await {
            match m {
                Message::Binary(b) if b.first() == Some(&1) => shown += b.len() - 1,
                Message::Binary(b) if b.first() == Some(&3) => ended = true,
                Message::Text(t) if t.contains("\"skipped\"") => {
                    let v: serde_json::Value = serde_json::from_str(&t).expect("json");
                    skipped += v["bytes"].as_u64().expect("bytes");
                }
                _ => {}
            }
        }
    })
    .await;
    eprintln!("the slow watcher got {shown} bytes and was told {skipped} were skipped");
    assert!(ended, "bob saw the exit status");
    assert!(skipped > 0, "bob was told he fell behind");
    assert_eq!(
        shown as u64 + skipped,
        read as u64,
        "what bob was shown and told he missed adds up to what alice got"
    );
}
