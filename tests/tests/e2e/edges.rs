//! Edges found by trying to break the product (issue 13): a command too long to reach the node,
//! a failure between the claim of a session and its relay, `terminate` on the holding replica,
//! an oversized or a text WebSocket message, approvals racing, a role hint that misled, and a
//! bare 405.

use std::time::Duration;

use aexec_crds::{ExecSession, MAX_COMMAND_URL_BYTES, Phase, command_url_bytes};
use aexec_testenv::{Target, User};
use futures::{SinkExt, StreamExt};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

use crate::{
    broker::{auto_policy, collect, request, setup},
    common::{
        aexec, attach_named, env, kubectl, policy, recording_named, request_named,
        target_with_operator, wait_phase,
    },
};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sh -c 'echo $#' x ARGS...` whose command takes exactly `bytes` in the exec request's URL.
/// The arguments mix what the URL carries as it is (letters), as one byte (space) and as three
/// (`/`, and `é`'s two bytes), so the schema's count and the plugin's must agree on all of them.
fn command_of(bytes: usize) -> Vec<String> {
    let mut command: Vec<String> = ["sh", "-c", "echo $#", "x"].map(String::from).to_vec();
    let unit = "ab c/é"; // 1+1+1+1+3+6 = 13 bytes encoded
    let arg = unit.repeat(300); // 3900 bytes encoded, 1800 characters
    // Leave between 4105 and 8013 bytes...
    while command_url_bytes(&command) + (9 + 3900) + (9 + 4096) <= bytes {
        command.push(arg.clone());
    }
    // ...for two arguments of letters, each well under the 4096 characters allowed.
    let left = bytes - command_url_bytes(&command);
    let first = left / 2;
    command.push("a".repeat(first - 9));
    command.push("a".repeat(left - first - 9));
    assert_eq!(command_url_bytes(&command), bytes);
    command
}

/// How many arguments the command gives `sh` after `x` (what `echo $#` prints).
fn positional(command: &[String]) -> usize {
    command.len() - 4
}

#[tokio::test]
async fn long_command_just_under_the_bound_runs_and_just_over_is_refused_by_schema_and_plugin() {
    let (t, _op) = target_with_operator().await;
    auto_policy(&t, json!({})).await;

    // At the bound: the plugin asks, the operator execs it, the node runs it.
    let at = command_of(MAX_COMMAND_URL_BYTES);
    let mut args: Vec<&str> = vec!["-n", &t.namespace, &t.pod, "--"];
    args.extend(at.iter().map(String::as_str));
    let out = aexec(User::Alice, &args, None).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "at the bound: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), format!("{}\n", positional(&at)));

    // One byte over: the plugin refuses before it creates anything, and says what to do.
    let over = command_of(MAX_COMMAND_URL_BYTES + 1);
    let mut args: Vec<&str> = vec!["-n", &t.namespace, &t.pod, "--"];
    args.extend(over.iter().map(String::as_str));
    let out = aexec(User::Alice, &args, None).await;
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the command is too long to reach the pod: it takes {} bytes",
            MAX_COMMAND_URL_BYTES + 1
        )) && err.contains("pass a long script on stdin"),
        "{err}"
    );
    // The plugin's own refusal, before it asked the API server anything.
    assert!(!err.contains("creating the ExecSession"), "{err}");
    // The issue's command (18 arguments of 4000 bytes, 72162 in the URL) is refused the same
    // way; it used to be approved and then leave its session Active, unrelayed.
    let issue: Vec<String> = vec!["a".repeat(4000); 18];
    let mut args: Vec<&str> = vec!["-n", &t.namespace, &t.pod, "--"];
    args.extend(issue.iter().map(String::as_str));
    let out = aexec(User::Alice, &args, None).await;
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("it takes 72162 bytes"), "{err}");
    let admin = env().client(User::Admin).await.expect("admin");
    let all = Api::<ExecSession>::namespaced(admin, &t.namespace)
        .list(&ListParams::default())
        .await
        .expect("list");
    assert_eq!(all.items.len(), 1, "only the session at the bound exists");
    let ran = wait_phase(&t, &all.items[0].name_any(), Phase::Succeeded, 20).await;
    assert_eq!(ran.spec.command.len(), positional(&at) + 4);
    assert!(
        ran.status
            .as_ref()
            .and_then(|s| s.recording.as_ref())
            .is_some(),
        "recorded"
    );

    // And the API server's schema refuses the same command from any other client, with the
    // size, counting exactly as the plugin does (the bound itself was accepted above).
    let alice = env().client(User::Alice).await.expect("alice");
    let s: ExecSession = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession", "metadata": {"name": "over"},
        "spec": {"pod": t.pod, "command": over,
                 "requester": {"username": "alice", "groups": ["dev", "system:authenticated"]}}
    }))
    .expect("session");
    let api = Api::<ExecSession>::namespaced(alice, &t.namespace);
    match api.create(&PostParams::default(), &s).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(
                e.message.contains(&format!(
                    "the command is too long to reach the pod: it takes {} bytes",
                    MAX_COMMAND_URL_BYTES + 1
                )),
                "{}",
                e.message
            );
        }
        other => panic!("the schema accepted a command over the bound: {other:?}"),
    }
    let mut at_bound = s.clone();
    at_bound.metadata.name = Some("at".into());
    at_bound.spec.command = at;
    api.create(&PostParams::default(), &at_bound)
        .await
        .expect("the schema takes a command at the bound");
}

/// A ValidatingAdmissionPolicy that refuses every exec into the target's pods: the operator's
/// exec fails after the session was claimed, as any failure between the claim and the relay
/// can (the API server or the node refusing, the pod leg failing to open).
async fn refuse_exec_in(t: &Target) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let admin = env().client(User::Admin).await.expect("admin");
    let name = format!("{}-no-exec", t.namespace);
    let vap: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                   "operations": ["CONNECT"], "resources": ["pods/exec"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": t.namespace}}
            },
            "validations": [{"expression": "false", "message": "exec is switched off in this namespace for the test"}]
        }
    }))
    .expect("policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": t.namespace}}}}
    }))
    .expect("binding");
    Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .create(&PostParams::default(), &vap)
        .await
        .expect("admission policy");
    Api::<ValidatingAdmissionPolicyBinding>::all(admin)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    // The API server applies a new policy a moment later: wait until plain exec is refused.
    for _ in 0..100 {
        let out = kubectl(
            User::Admin,
            &["exec", "-n", &t.namespace, &t.pod, "--", "true"],
            None,
        )
        .await;
        if text(&out.stderr).contains("switched off") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the admission policy never refused an exec");
}

#[tokio::test]
async fn long_command_start_failure_after_the_claim_fails_the_session_and_seals_its_recording() {
    let (t, _op) = setup(&["echo", "never"], false).await;
    refuse_exec_in(&t).await;
    let err = match attach_named(User::Alice, &t, "s1").await {
        Err(kube::Error::Api(e)) => e,
        Err(other) => panic!("expected a Status, got {other:?}"),
        Ok(_) => panic!("attached although exec is refused"),
    };
    assert_eq!(err.code, 502, "{err:?}");
    assert!(
        err.message
            .contains("could not open the exec stream to the pod")
            && err.message.contains("the session has ended (Failed)"),
        "{}",
        err.message
    );
    // Failed with the reason, not Active with nobody relaying it; the recording is sealed and
    // says what happened.
    let s = wait_phase(&t, "s1", Phase::Failed, 20).await;
    let st = s.status.clone().expect("status");
    let msg = st.message.clone().unwrap_or_default();
    assert!(
        msg.starts_with("the session could not start: could not open the exec stream to the pod")
            && msg.contains("switched off"),
        "{msg}"
    );
    assert!(st.end_time.is_some());
    let rec = st.recording.expect("a sealed recording");
    assert!(rec.sha256.is_some(), "{rec:?}");
    let cast = recording_named(User::Carol, &t, "s1", "v3")
        .await
        .expect("carol reads the recording (verified)");
    assert!(
        text(&cast).contains("could not open the exec stream to the pod"),
        "{}",
        text(&cast)
    );
    // alice's next attach and bob's terminate say what is true.
    let again = match attach_named(User::Alice, &t, "s1").await {
        Err(kube::Error::Api(e)) => e,
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    };
    assert_eq!(again.code, 409);
    assert!(
        again
            .message
            .contains("the session is Failed (the session could not start"),
        "{}",
        again.message
    );
    let end = terminate(User::Bob, &t, "s1")
        .await
        .expect_err("nothing to end");
    assert!(
        end.message
            .contains("the session is Failed; only an Active session can be terminated"),
        "{}",
        end.message
    );
}

/// `PUT .../terminate` as `user`.
async fn terminate(user: User, t: &Target, name: &str) -> Result<ExecSession, kube::core::Status> {
    let client = env().client(user).await.expect("client");
    let req = http::Request::put(format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/{name}/terminate",
        t.namespace
    ))
    .body(Vec::new())
    .expect("request");
    client
        .request::<ExecSession>(req)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => *s,
            other => panic!("terminate: {other}"),
        })
}

/// Makes session `name` Active as held by `broker`, as a claim whose relay died would leave it.
async fn claim_as(t: &Target, name: &str, broker: &str) {
    let admin = env().client(User::Admin).await.expect("admin");
    Api::<ExecSession>::namespaced(admin, &t.namespace)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Active", "broker": broker,
                                            "message": "attached by alice"}})),
        )
        .await
        .expect("status written");
}

#[tokio::test]
async fn long_command_terminate_on_the_holding_replica_works_and_its_message_is_true() {
    let (t, _op) = target_with_operator().await;
    auto_policy(&t, json!({})).await;
    // The local test operator is replica aexec-operator-0.
    let me = "aexec-operator-0";
    request(&t, &["sleep", "60"], false, false).await;
    wait_phase(&t, "s1", Phase::Approved, 20).await;
    // Active on this replica with no relay behind it: terminate here ends it, truly.
    claim_as(&t, "s1", me).await;
    let ended = terminate(User::Bob, &t, "s1")
        .await
        .expect("the holding replica ends it");
    let st = ended.status.expect("status");
    assert_eq!(st.phase, Some(Phase::Terminated));
    assert_eq!(
        st.message.as_deref(),
        Some("terminated by bob (no relay of it was running on operator replica aexec-operator-0)")
    );
    // Sealed from what reached the store (nothing, here), marked interrupted.
    let rec = st.recording.expect("sealed");
    assert!(rec.interrupted && rec.sha256.is_some(), "{rec:?}");

    // Held by another replica: the refusal names both, and says what to do.
    request_named(&t, "s2", &["sleep", "60"], false, false).await;
    wait_phase(&t, "s2", Phase::Approved, 20).await;
    claim_as(&t, "s2", "aexec-operator-9").await;
    let e = terminate(User::Bob, &t, "s2").await.expect_err("not here");
    assert_eq!(e.code, 409);
    assert!(
        e.message.contains(
            "relayed by operator replica aexec-operator-9, and this request reached replica \
             aexec-operator-0, which cannot end it; try again"
        ),
        "{}",
        e.message
    );

    // And a live relay here is ended by terminate, as before.
    request_named(&t, "s3", &["sleep", "60"], false, false).await;
    wait_phase(&t, "s3", Phase::Approved, 20).await;
    let mut ws = attach_named(User::Alice, &t, "s3").await.expect("attach");
    wait_phase(&t, "s3", Phase::Active, 20).await;
    terminate(User::Bob, &t, "s3").await.expect("terminated");
    let close = closing_frame(&mut ws).await;
    assert_eq!(
        close.as_ref().map(|f| (f.code, f.reason.as_str())),
        Some((CloseCode::Normal, "session terminated by bob"))
    );
    let s = wait_phase(&t, "s3", Phase::Terminated, 20).await;
    assert_eq!(
        s.status.and_then(|s| s.message).as_deref(),
        Some("terminated by bob")
    );
}

/// Reads a client's stream to its end; the close frame the operator sent, if any.
async fn closing_frame(
    ws: &mut crate::common::Conn,
) -> Option<tokio_tungstenite::tungstenite::protocol::CloseFrame> {
    let read = async {
        let mut frame = None;
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(f)) => frame = f,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        frame
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the stream ended in time")
}

#[tokio::test]
async fn oversized_message_closes_with_1009_and_the_bound_and_blames_its_size() {
    // 16 MiB is refused by the WebSocket reader, 1.5 MiB by the frame parser: both say the same.
    for size in [16 << 20, 3 << 19] {
        let (t, _op) = setup(&["cat"], true).await;
        let mut ws = attach_named(User::Alice, &t, "s1").await.expect("attach");
        let mut big = vec![b'x'; size];
        big[0] = 0; // stdin
        // The operator may close before it took it all: that is its answer, read below.
        let _ = ws.send(Message::Binary(big.into())).await;
        let close = closing_frame(&mut ws).await.expect("a close frame");
        assert_eq!(close.code, CloseCode::Size, "{size}: {close:?}");
        let why = format!("frame of {size} bytes exceeds the limit of 1048576 bytes");
        assert_eq!(close.reason.as_str(), why);
        let s = wait_phase(&t, "s1", Phase::Terminated, 20).await;
        let msg = s.status.and_then(|s| s.message).unwrap_or_default();
        assert_eq!(
            msg,
            format!("ended: the client broke the exec protocol: {why}"),
            "{size}"
        );
    }
}

#[tokio::test]
async fn text_frame_is_recorded_as_a_marker_and_the_session_goes_on() {
    let (t, _op) = setup(&["cat"], true).await;
    let mut ws = attach_named(User::Alice, &t, "s1").await.expect("attach");
    ws.send(Message::Text("typed as text".into()))
        .await
        .expect("text sent");
    ws.send(Message::Binary(b"\x00after\n".to_vec().into()))
        .await
        .expect("stdin sent");
    ws.send(Message::Binary(vec![255u8, 0].into()))
        .await
        .expect("stdin closed");
    let (out, _, status) = collect(&mut ws).await;
    assert_eq!(text(&out), "after\n");
    assert_eq!(status["status"], "Success");
    wait_phase(&t, "s1", Phase::Succeeded, 20).await;
    let cast = recording_named(User::Carol, &t, "s1", "v3")
        .await
        .expect("recording");
    let rec = aexec_operator::recording::cast::CastReader::parse(&cast).expect("valid v3");
    use aexec_operator::recording::cast::Event as E;
    let marker = "a text message from the client was not forwarded: the exec protocol carries \
                  binary messages only (it sent \"typed as text\")";
    let at = |want: &dyn Fn(&E) -> bool| rec.events.iter().position(|(_, e)| want(e));
    let m = at(&|e| matches!(e, E::Marker(m) if m == marker));
    let i = at(&|e| matches!(e, E::Input(b) if b == b"after\n"));
    // In its place: before the input that followed it.
    assert!(
        m.is_some() && i.is_some() && m < i,
        "{m:?} {i:?}: {:?}",
        rec.events
    );
}

#[tokio::test]
async fn concurrent_approvals_record_at_most_one_and_the_loser_hears_already_approved() {
    let (t, _op) = target_with_operator().await;
    policy(
        &t,
        "one",
        json!({"decision": "RequireApproval", "approval": {"required": 1, "groups": ["sre"]}}),
    )
    .await;
    let approve = |user: User, name: String, ns: String| async move {
        let client = env().client(user).await.expect("client");
        let req = http::Request::put(format!(
            "/apis/subresources.aexec.dev/v1alpha1/namespaces/{ns}/execsessions/{name}/approve"
        ))
        .header("content-type", "application/json")
        .body(b"{}".to_vec())
        .expect("request");
        client.request::<ExecSession>(req).await
    };
    for round in 0..12 {
        let name = format!("s{round}");
        request_named(&t, &name, &["true"], false, false).await;
        wait_phase(&t, &name, Phase::Pending, 20).await;
        // bob and dave, twice each, at the same moment.
        let racers = [User::Bob, User::Dave, User::Bob, User::Dave];
        let results = futures::future::join_all(
            racers.map(|u| approve(u, name.clone(), t.namespace.clone())),
        )
        .await;
        let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one approval lands: {results:?}"
        );
        for r in &results {
            if let Err(e) = r {
                let kube::Error::Api(s) = e else {
                    panic!("round {round}: {e}")
                };
                assert_eq!(s.code, 409, "round {round}: {s:?}");
                assert!(
                    s.message.contains("session is already approved")
                        || s.message.ends_with("already approved this session"),
                    "round {round}: {}",
                    s.message
                );
            }
        }
        let s = wait_phase(&t, &name, Phase::Approved, 20).await;
        let st = s.status.expect("status");
        assert_eq!(st.approvals.len(), 1, "round {round}: {:?}", st.approvals);
        assert_eq!(st.approval_summary.as_deref(), Some("1/1"));
        // An approval after it is refused the same way.
        let late = approve(User::Dave, name.clone(), t.namespace.clone()).await;
        match late {
            Err(kube::Error::Api(s)) => assert!(
                s.message.contains("already approved"),
                "round {round}: {}",
                s.message
            ),
            other => panic!("round {round}: a late approval landed: {other:?}"),
        }
    }
}

#[tokio::test]
async fn role_hint_only_for_refusals_by_rbac_not_by_the_operators_rules() {
    let (t, _op) = target_with_operator().await;
    // Only bob approves here; dave holds the approver role all the same.
    policy(
        &t,
        "bob-only",
        json!({"decision": "RequireApproval", "approval": {"required": 1, "users": ["bob"]}}),
    )
    .await;
    request_named(&t, "s1", &["true"], false, false).await;
    wait_phase(&t, "s1", Phase::Pending, 20).await;
    let hint = "ask your cluster admin";
    let args = ["approve", "s1", "-n", t.namespace.as_str()];
    let approve = |user| aexec(user, &args, None);

    let out = approve(User::Dave).await;
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("dave may not approve sessions under policy"),
        "{err}"
    );
    assert!(!err.contains(hint), "dave holds the role: {err}");

    // The requester, even with the approver role, never approves: no role would change that.
    let admin = env().client(User::Admin).await.expect("admin");
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "alice-approver"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "aexec-approver"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]
    }))
    .expect("binding");
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin, &t.namespace)
        .create(&PostParams::default(), &rb)
        .await
        .expect("bind");
    let mut err = String::new();
    for _ in 0..50 {
        // Until the API server's RBAC has seen the binding, the refusal is RBAC's.
        err = text(&approve(User::Alice).await.stderr);
        if !err.contains("cannot update resource") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        err.contains("you requested this session; someone else must approve it"),
        "{err}"
    );
    assert!(!err.contains(hint), "{err}");

    // mallory holds no role: the API server's RBAC refuses, and the hint names the role.
    let err = text(&approve(User::Mallory).await.stderr);
    assert!(
        err.contains("cannot update resource \"execsessions/approve\"")
            && err.contains("ask your cluster admin for the aexec-approver role"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_method_gets_a_status_that_says_which_method_to_use() {
    let (t, _op) = target_with_operator().await;
    auto_policy(&t, json!({})).await;
    request(&t, &["true"], false, false).await;
    let base = format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/s1",
        t.namespace
    );
    // The real kubectl, as the admin (whom RBAC lets through to the operator with any verb).
    let out = kubectl(
        User::Admin,
        &["create", "--raw", &format!("{base}/approve"), "-f", "-"],
        Some(b"{}"),
    )
    .await;
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "POST is not allowed on {base}/approve: use PUT, with an optional JSON body"
        )),
        "{err}"
    );
    // alice may `create` attach (RBAC), as kubectl exec's SPDY POST would: told to use GET.
    let alice = env().client(User::Alice).await.expect("alice");
    let req = http::Request::post(format!("{base}/attach"))
        .body(Vec::new())
        .expect("request");
    match alice.request_text(req).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(
                (s.code, s.reason.as_str()),
                (405, "MethodNotAllowed"),
                "{s:?}"
            );
            assert!(
                s.message
                    .contains("use GET with a WebSocket upgrade offering v5.channel.k8s.io"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 405, got {other:?}"),
    }
}
