//! Moderated sessions (`ExecPolicy.spec.moderation`; issue #14): the command starts only while
//! enough moderators watch; when they leave, the requester's input is held or the session ends.

use std::{process::Stdio, time::Duration};

use aexec_crds::{ModerationState, Phase};
use aexec_testenv::{Target, User};
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::{core::v1::Event, rbac::v1::RoleBinding};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    broker::{attach, drain, final_session, recording, request},
    common::{Conn, aexec, env, plugin_bin, policy, target_with_operator},
    plugin::text,
};

/// An auto-approving policy that requires one moderator from `groups`, and an approved `s1`.
async fn moderated(
    command: &[&str],
    stdin: bool,
    groups: &[&str],
    on_leave: &str,
    timeout: &str,
) -> (Target, tokio::sync::RwLockReadGuard<'static, ()>) {
    let (t, guard) = target_with_operator().await;
    policy(
        &t,
        "moderated",
        json!({"decision": "AutoApprove", "moderation": {
            "required": 1, "groups": groups, "onModeratorLeave": on_leave, "timeout": timeout}}),
    )
    .await;
    request(&t, command, stdin, false).await;
    final_session(&t, Phase::Approved).await;
    (t, guard)
}

/// `user` opens the observe WebSocket of `s1` as a moderator.
async fn moderate(user: User, t: &Target) -> Result<Conn, kube::Error> {
    crate::watch::observe(user, t, "?mode=moderator").await
}

/// Reads the requester's stream until a notice containing `want`; returns the stdout read on
/// the way.
async fn until_notice(ws: &mut Conn, want: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains(want) => return t.to_string(),
                Some(Ok(Message::Binary(b))) if b.first() == Some(&1) => {
                    out.extend_from_slice(&b[1..])
                }
                Some(Ok(_)) => {}
                other => panic!("the stream ended before a notice with {want:?}: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a notice with {want:?} within 20 s"));
    assert!(found.contains("\"notice\""), "{found}");
    out
}

/// Reads stdout for `secs`, expecting the stream to stay open.
async fn output_for(ws: &mut Conn, secs: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m
                && b.first() == Some(&1)
            {
                out.extend_from_slice(&b[1..]);
            }
        }
    })
    .await;
    out
}

async fn stdin(ws: &mut Conn, bytes: &[u8]) {
    let mut m = vec![0u8];
    m.extend_from_slice(bytes);
    ws.send(Message::Binary(m.into())).await.expect("stdin");
}

/// The moderation in `s1`'s status, once it says `state`.
async fn moderation_becomes(t: &Target, state: ModerationState, moderators: i32) {
    let admin = env().client(User::Admin).await.expect("admin");
    let api: Api<aexec_crds::ExecSession> = Api::namespaced(admin, &t.namespace);
    let mut last = None;
    for _ in 0..100 {
        let s = api.get("s1").await.expect("s1");
        last = s.status.and_then(|s| s.moderation);
        if last
            .as_ref()
            .is_some_and(|m| m.state == state && m.moderators == moderators)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("status.moderation never became {state:?} with {moderators}: {last:?}");
}

async fn event_reasons(t: &Target) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(
        env().client(User::Admin).await.expect("admin"),
        &t.namespace,
    );
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn moderated_session_waits_for_moderator() {
    let (t, _op) = moderated(
        &["sh", "-c", "echo started; cat"],
        true,
        &["sre"],
        "Pause",
        "5m",
    )
    .await;
    let mut alice = attach(User::Alice, &t).await.expect("attach");
    // alice hears what she waits for and the exact line to send; the command has not started.
    let before = until_notice(&mut alice, "waiting for a moderator (0 of 1)").await;
    assert!(
        before.is_empty(),
        "output before a moderator watched: {before:?}"
    );
    moderation_becomes(&t, ModerationState::Waiting, 0).await;
    // What she types while waiting is held, not lost.
    stdin(&mut alice, b"typed early\n").await;
    let quiet = output_for(&mut alice, 2).await;
    assert!(
        quiet.is_empty(),
        "the command started without a moderator: {quiet:?}"
    );

    // bob (sre) moderates with the plugin.
    let bob = tokio::process::Command::new(plugin_bin())
        .arg("--kubeconfig")
        .arg(env().kubeconfig(User::Bob))
        .args(["watch", "s1", "-n", &t.namespace, "--moderate"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the plugin starts");
    let started = until_notice(&mut alice, "the command starts").await;
    let mut out = started;
    stdin(&mut alice, b"after\n").await;
    alice
        .send(Message::Binary(vec![255u8, 0].into()))
        .await
        .expect("stdin closed");
    let (rest, _) = drain(&mut alice, 30).await;
    out.extend_from_slice(&rest);
    assert_eq!(text(&out), "started\ntyped early\nafter\n");
    final_session(&t, Phase::Succeeded).await;

    let bob_done = tokio::time::timeout(Duration::from_secs(30), bob.wait_with_output())
        .await
        .expect("bob's watch ends with the session")
        .expect("output");
    assert_eq!(text(&bob_done.stdout), "started\ntyped early\nafter\n");
    let bob_err = text(&bob_done.stderr);
    assert!(bob_err.contains("the command starts"), "{bob_err}");

    // The recording shows the wait, the moderator's join, then the command.
    let cast = text(&recording(User::Carol, &t, "v3").await.expect("recording"));
    let waiting = cast.find("moderation: waiting for 1").expect("the wait");
    let joined = cast
        .find("watch: bob (Moderator) joined")
        .expect("bob's join");
    // (`started\n` as the cast's JSON writes it: the header's command has `started;`.)
    let first = cast.find("started\\n").expect("the output");
    assert!(waiting < joined && joined < first, "{cast}");
    let reasons = event_reasons(&t).await;
    for r in ["ModerationWaiting", "ModerationStarted", "WatcherJoined"] {
        assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
    }
    // describe tells the moderation and the watchers.
    let d = aexec(User::Carol, &["describe", "s1", "-n", &t.namespace], None).await;
    let d = text(&d.stdout);
    assert!(
        d.contains("Moderation:   Moderated, 1 of 1 watching; 1 required from sre"),
        "{d}"
    );
    assert!(d.contains("  bob (Moderator) from "), "{d}");
}

#[tokio::test]
async fn moderation_wait_times_out() {
    let (t, _op) = moderated(
        &["sh", "-c", "echo started"],
        false,
        &["sre"],
        "Pause",
        "2s",
    )
    .await;
    let mut alice = attach(User::Alice, &t).await.expect("attach");
    until_notice(&mut alice, "waiting for a moderator").await;
    let (out, _) = drain(&mut alice, 20).await;
    assert!(out.is_empty(), "{out:?}");
    let s = final_session(&t, Phase::Terminated).await;
    assert_eq!(
        s.status.and_then(|s| s.message).as_deref(),
        Some("ended by the policy: no moderator watched within 2s; the command never started")
    );
}

#[tokio::test]
async fn moderator_leaving_pauses_input() {
    let (t, _op) = moderated(&["cat"], true, &["sre"], "Pause", "5m").await;
    let mut alice = attach(User::Alice, &t).await.expect("attach");
    until_notice(&mut alice, "waiting for a moderator").await;
    let mut bob = moderate(User::Bob, &t).await.expect("bob moderates");
    until_notice(&mut alice, "the command starts").await;
    stdin(&mut alice, b"one\n").await;
    let mut out = output_for(&mut alice, 2).await;
    assert_eq!(text(&out), "one\n");

    // bob leaves: alice's input is held, with a notice.
    bob.send(Message::Text(r#"{"type":"leave"}"#.into()))
        .await
        .expect("leave");
    let _ = drain(&mut bob, 10).await;
    until_notice(&mut alice, "input held: 0 of 1 moderators watching").await;
    moderation_becomes(&t, ModerationState::Paused, 0).await;
    stdin(&mut alice, b"two\n").await;
    let held = output_for(&mut alice, 2).await;
    assert!(
        held.is_empty(),
        "input reached the pod while paused: {held:?}"
    );

    // dave (sre) moderates: the held input goes through, in order, and the session goes on.
    let mut dave = moderate(User::Dave, &t).await.expect("dave moderates");
    out = until_notice(&mut alice, "input resumes").await;
    stdin(&mut alice, b"three\n").await;
    alice
        .send(Message::Binary(vec![255u8, 0].into()))
        .await
        .expect("stdin closed");
    let (rest, _) = drain(&mut alice, 30).await;
    out.extend_from_slice(&rest);
    assert_eq!(text(&out), "two\nthree\n");
    final_session(&t, Phase::Succeeded).await;
    // dave saw the notice and the output.
    let mut dave_saw = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = dave.next().await {
            match m {
                Message::Text(t) => dave_saw.push_str(&t),
                Message::Binary(b) if b.first() == Some(&1) => {
                    dave_saw.push_str(&String::from_utf8_lossy(&b[1..]))
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(dave_saw.contains("input resumes"), "{dave_saw}");
    assert!(dave_saw.contains("two\nthree\n"), "{dave_saw}");

    let cast = text(&recording(User::Carol, &t, "v3").await.expect("recording"));
    let paused = cast.find("moderation: input held").expect("the pause");
    let resumed = cast.find("moderation: input resumes").expect("the resume");
    let two = cast.find("two\\n").expect("the held input");
    assert!(paused < resumed && resumed < two, "{cast}");
    let reasons = event_reasons(&t).await;
    for r in ["ModerationPaused", "ModerationResumed"] {
        assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
    }
}

#[tokio::test]
async fn moderator_leaving_terminates() {
    let (t, _op) = moderated(&["sleep", "30"], false, &["sre"], "Terminate", "5m").await;
    let mut alice = attach(User::Alice, &t).await.expect("attach");
    until_notice(&mut alice, "waiting for a moderator").await;
    let bob = moderate(User::Bob, &t).await.expect("bob moderates");
    until_notice(&mut alice, "the command starts").await;
    drop(bob);
    let (_, err) = drain(&mut alice, 20).await;
    assert!(
        text(&err).contains("[aexec] session ended: 0 of 1 moderators watching"),
        "{}",
        text(&err)
    );
    let s = final_session(&t, Phase::Terminated).await;
    assert_eq!(
        s.status.and_then(|s| s.message).as_deref(),
        Some("ended by the policy: its moderators left (0 of 1 watching)")
    );
}

#[tokio::test]
async fn moderator_terminates() {
    // carol (auditor) may watch, and has no right to terminate sessions; as a moderator the
    // policy names, ending the session is hers to do.
    let (t, _op) = moderated(&["sleep", "30"], false, &["audit"], "Pause", "5m").await;
    let mut alice = attach(User::Alice, &t).await.expect("attach");
    until_notice(&mut alice, "waiting for a moderator").await;
    // bob (sre) is not among this policy's moderators.
    let refused = moderate(User::Bob, &t)
        .await
        .expect_err("bob is no moderator here");
    assert!(
        refused
            .to_string()
            .contains("you are not a moderator of session s1"),
        "{refused}"
    );
    let mut carol = moderate(User::Carol, &t).await.expect("carol moderates");
    until_notice(&mut alice, "the command starts").await;
    carol
        .send(Message::Text(r#"{"type":"terminate"}"#.into()))
        .await
        .expect("sent");
    let (_, err) = drain(&mut alice, 20).await;
    assert!(
        text(&err).contains("session terminated by carol"),
        "{}",
        text(&err)
    );
    let s = final_session(&t, Phase::Terminated).await;
    assert_eq!(
        s.status.and_then(|s| s.message).as_deref(),
        Some("terminated by carol")
    );
}

#[tokio::test]
async fn requester_cannot_moderate_self() {
    let (t, _op) = moderated(&["sleep", "30"], false, &["dev", "sre"], "Pause", "5m").await;
    // alice gets the approver's role in this namespace too: RBAC lets her watch, so the rule
    // itself is what refuses her, even though her group is among the moderators.
    let admin = env().client(User::Admin).await.expect("admin");
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "alice-approves"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "aexec-approver"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin, &t.namespace)
        .create(&PostParams::default(), &rb)
        .await
        .expect("binding created");
    let mut alice = attach(User::Alice, &t).await.expect("attach");
    until_notice(&mut alice, "waiting for a moderator").await;
    let mut refused = None;
    for _ in 0..50 {
        let o = aexec(
            User::Alice,
            &["watch", "s1", "-n", &t.namespace, "--moderate"],
            None,
        )
        .await;
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        // The binding may take a moment to reach the authorizer's cache.
        if err.contains("cannot get resource") {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        refused = Some(err);
        break;
    }
    let err = refused.expect("RBAC let alice watch within 10 s");
    assert!(
        err.contains("you requested session s1: you cannot moderate it"),
        "{err}"
    );
    // As an observer she may watch it, and she does not count: the session still waits.
    let observer = crate::watch::observe(User::Alice, &t, "").await;
    assert!(observer.is_ok(), "{observer:?}");
    moderation_becomes(&t, ModerationState::Waiting, 0).await;
    let quiet = output_for(&mut alice, 1).await;
    assert!(quiet.is_empty(), "{quiet:?}");
}

#[tokio::test]
async fn moderated_session_through_the_plugin() {
    // The requester's whole path with the plugin: the request, the wait for a moderator with the
    // line to send, then the command's output and exit code.
    let (t, _op) = target_with_operator().await;
    policy(
        &t,
        "moderated",
        json!({"decision": "AutoApprove", "moderation": {"required": 1, "groups": ["sre"]}}),
    )
    .await;
    let ns = t.namespace.as_str();
    let out = aexec(
        User::Alice,
        &[
            "-n",
            ns,
            "--no-wait",
            &t.pod,
            "--",
            "sh",
            "-c",
            "echo ran; exit 3",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = text(&out.stdout).trim().to_owned();
    crate::common::wait_phase(&t, &name, Phase::Approved, 15).await;
    let mut alice = tokio::process::Command::new(plugin_bin())
        .arg("--kubeconfig")
        .arg(env().kubeconfig(User::Alice))
        .args(["attach", &name, "-n", ns])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("attach starts");
    let mut stderr = tokio::io::BufReader::new(alice.stderr.take().expect("stderr"));
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncBufReadExt;
        while !line.contains("waiting for a moderator") {
            line.clear();
            let n = stderr.read_line(&mut line).await.expect("read");
            assert!(n > 0, "alice's attach ended before the wait notice");
        }
    })
    .await
    .expect("the wait notice within 20 s");
    assert_eq!(
        line.trim_end(),
        format!(
            "[aexec] waiting for a moderator (0 of 1) before the command starts; ask one to run: \
             kubectl aexec watch {name} -n {ns} --moderate"
        )
    );
    let client = env().client(User::Bob).await.expect("bob");
    let req = http::Request::get(format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{ns}/execsessions/{name}/observe?mode=moderator"
    ))
    .body(Vec::new())
    .expect("request");
    let _bob = client.connect(req).await.expect("bob moderates");
    let done = tokio::time::timeout(Duration::from_secs(30), alice.wait_with_output())
        .await
        .expect("alice's attach ends")
        .expect("output");
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut rest)
        .await
        .expect("stderr");
    assert_eq!(done.status.code(), Some(3), "{rest}");
    assert_eq!(text(&done.stdout), "ran\n");
    assert!(
        rest.contains("[aexec] moderated (1 of 1 watching): the command starts"),
        "{rest}"
    );
}
