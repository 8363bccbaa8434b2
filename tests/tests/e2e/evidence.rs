//! The evidence outlives the ExecSession: nobody erases it by deleting the object (the
//! requester cannot delete, withdrawing leaves a final phase, an administrator's delete ends
//! and seals first), every finished session has a signed record in the store, and review,
//! verification (online and offline) and key rotation work from the records when the object is
//! gone.

use std::{path::Path, time::Duration};

use aexec_crds::{ExecSession, Phase};
use aexec_recording::{
    chain::{self, Manifest, SegmentMeta},
    record::{self, Envelope, KeyRing, SessionRecord, SigningKey},
};
use aexec_testenv::{Target, User};
use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api,
    api::DeleteParams,
    runtime::{WatchStreamExt, wait::await_condition, watcher},
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    broker::{collect, drain},
    common::{
        aexec, attach_named, env, kubectl, plugin_bin, policy, request_named, target_with_operator,
        target_with_operator_exclusive, wait_phase,
    },
    plugin::text,
};

/// Policies in the target's namespace.
async fn auto(t: &Target) {
    policy(t, "auto", json!({"decision": "AutoApprove"})).await;
}

async fn sre(t: &Target) {
    policy(
        t,
        "sre",
        json!({"decision": "RequireApproval", "approval": {"required": 1, "groups": ["sre"]}}),
    )
    .await;
}

fn sessions(t: &Target, client: kube::Client) -> Api<ExecSession> {
    Api::namespaced(client, &t.namespace)
}

async fn admin_sessions(t: &Target) -> Api<ExecSession> {
    sessions(t, env().client(User::Admin).await.expect("admin"))
}

async fn recorded(t: &Target, name: &str) -> ExecSession {
    crate::common::wait_record(t, name).await
}

/// alice runs session `name` (auto-approved) through the broker to its end; the session once
/// its signed record is written.
async fn ran(t: &Target, name: &str, command: &[&str]) -> ExecSession {
    request_named(t, name, command, false, false).await;
    wait_phase(t, name, Phase::Approved, 15).await;
    let mut ws = attach_named(User::Alice, t, name)
        .await
        .expect("alice attaches");
    let _ = collect(&mut ws).await;
    recorded(t, name).await
}

/// The admin deletes session `name` and waits until the object is gone.
pub(crate) async fn delete_and_wait_gone(t: &Target, s: &ExecSession) {
    let api = admin_sessions(t).await;
    let name = s.metadata.name.clone().expect("name");
    let uid = s.metadata.uid.clone().expect("uid");
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("admin deletes");
    gone(&api, &name, &uid, 30).await;
}

async fn gone(api: &Api<ExecSession>, name: &str, uid: &str, secs: u64) {
    tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(
            api.clone(),
            name,
            kube::runtime::wait::conditions::is_deleted(uid),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("session {name} still exists after {secs}s"))
    .expect("watch");
}

/// The session's directory in the bucket.
fn prefix(s: &ExecSession) -> String {
    format!(
        "{}/{}-{}",
        s.metadata.namespace.clone().expect("ns"),
        s.metadata.name.clone().expect("name"),
        s.metadata.uid.clone().expect("uid")
    )
}

async fn s3_get(key: &str) -> Vec<u8> {
    env()
        .s3_client()
        .await
        .get_object()
        .bucket(&env().s3.bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key} in MinIO: {e:?}"))
        .body
        .collect()
        .await
        .expect("body")
        .to_vec()
}

async fn s3_put(key: &str, bytes: Vec<u8>) {
    env()
        .s3_client()
        .await
        .put_object()
        .bucket(&env().s3.bucket)
        .key(key)
        .body(bytes.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("writing {key} to MinIO: {e:?}"));
}

/// Every object of the session's directory, copied into `dir` (as an auditor would copy them
/// out of the bucket).
async fn copy_out(prefix: &str, dir: &Path) -> Vec<String> {
    let list = env()
        .s3_client()
        .await
        .list_objects_v2()
        .bucket(&env().s3.bucket)
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .expect("list");
    let mut names = Vec::new();
    for o in list.contents() {
        let key = o.key().expect("key");
        let name = key.rsplit('/').next().expect("name").to_owned();
        std::fs::write(dir.join(&name), s3_get(key).await).expect("write");
        names.push(name);
    }
    names.sort();
    names
}

/// The public keys the operator publishes, from the plugin (as an auditor pins them).
async fn pinned_keys(dir: &Path) -> std::path::PathBuf {
    let out = aexec(User::Carol, &["keys"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let file = dir.join("aexec-keys.pem");
    std::fs::write(&file, &out.stdout).expect("write keys");
    file
}

/// `kubectl-aexec ARGS` with no kubeconfig at all: what an auditor runs away from any cluster.
async fn offline(args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(plugin_bin());
    cmd.args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", "/nonexistent");
    crate::common::output(cmd, None, "kubectl-aexec offline").await
}

fn record_of(bytes: &[u8]) -> (Envelope, SessionRecord) {
    let env = Envelope::parse(bytes).expect("record.json is an envelope");
    let r = env.unverified().expect("record.json holds a record").record;
    (env, r)
}

#[tokio::test]
async fn requester_cannot_delete_session() {
    let (t, _op) = target_with_operator().await;
    sre(&t).await;
    request_named(&t, "s1", &["id"], false, false).await;
    wait_phase(&t, "s1", Phase::Pending, 15).await;
    let alice = sessions(&t, env().client(User::Alice).await.expect("alice"));

    // Not through the API, not through kubectl, and the role says so.
    match alice.delete("s1", &DeleteParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("alice deleted her session: {other:?}"),
    }
    let ns = t.namespace.as_str();
    let out = kubectl(
        User::Alice,
        &["delete", "execsession", "s1", "-n", ns],
        None,
    )
    .await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("forbidden"),
        "{}",
        text(&out.stderr)
    );
    let can = kubectl(
        User::Alice,
        &[
            "auth",
            "can-i",
            "delete",
            "execsessions.aexec.dev",
            "-n",
            ns,
        ],
        None,
    )
    .await;
    assert_eq!(text(&can.stdout).trim(), "no");
    // Nor can she strip the operator's finalizer to make a later delete immediate.
    let patch = json!({"metadata": {"finalizers": null}});
    match alice
        .patch(
            "s1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("alice patched her session: {other:?}"),
    }
    // The session is still there, pending, and carries the finalizer.
    let s = admin_sessions(&t)
        .await
        .get("s1")
        .await
        .expect("still there");
    assert_eq!(s.phase(), Phase::Pending);
    assert_eq!(
        s.metadata.finalizers.unwrap_or_default(),
        vec![aexec_operator::control::controller::FINALIZER.to_owned()]
    );
}

#[tokio::test]
async fn withdraw_leaves_final_phase() {
    let (t, _op) = target_with_operator().await;
    sre(&t).await;
    let ns = t.namespace.as_str();
    request_named(&t, "s1", &["id"], false, false).await;
    wait_phase(&t, "s1", Phase::Pending, 15).await;

    // bob (an approver) may not withdraw alice's request: he denies instead.
    let bob = aexec(User::Bob, &["withdraw", "s1", "-n", ns], None).await;
    assert_eq!(bob.status.code(), Some(1));
    assert!(
        text(&bob.stderr).contains("forbidden"),
        "{}",
        text(&bob.stderr)
    );

    let out = aexec(
        User::Alice,
        &["withdraw", "s1", "-n", ns, "-m", "found it myself"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "execsession.aexec.dev/s1 withdrawn\n");
    let s = wait_phase(&t, "s1", Phase::Withdrawn, 15).await;
    let st = s.status.clone().expect("status");
    assert_eq!(
        st.message.as_deref(),
        Some("withdrawn by alice: found it myself")
    );
    let w = st.withdrawal.expect("withdrawal");
    assert_eq!(w.user.username, "alice");
    assert_eq!(w.comment.as_deref(), Some("found it myself"));
    assert!(st.end_time.is_some());

    // Final: no approval, no attach, no second withdrawal.
    let approve = aexec(User::Bob, &["approve", "s1", "-n", ns], None).await;
    assert_eq!(approve.status.code(), Some(1));
    assert!(
        text(&approve.stderr).contains("session is Withdrawn; it no longer takes approvals"),
        "{}",
        text(&approve.stderr)
    );
    match attach_named(User::Alice, &t, "s1").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
        Err(e) => panic!("unexpected {e:?}"),
        Ok(_) => panic!("a withdrawn session was attached"),
    }
    let again = aexec(User::Alice, &["withdraw", "s1", "-n", ns], None).await;
    assert!(
        text(&again.stderr).contains("already over (Withdrawn)"),
        "{}",
        text(&again.stderr)
    );

    // An approved request can be withdrawn too, until it is attached.
    request_named(&t, "s2", &["id"], false, false).await;
    wait_phase(&t, "s2", Phase::Pending, 15).await;
    let ok = aexec(User::Bob, &["approve", "s2", "-n", ns], None).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    wait_phase(&t, "s2", Phase::Approved, 15).await;
    let out = aexec(User::Alice, &["withdraw", "s2", "-n", ns], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_phase(&t, "s2", Phase::Withdrawn, 15).await;

    // Its record says so, and stays when the object goes.
    let s = recorded(&t, "s1").await;
    delete_and_wait_gone(&t, &s).await;
    let d = aexec(User::Carol, &["describe", "s1", "-n", ns], None).await;
    assert_eq!(d.status.code(), Some(0), "{}", text(&d.stderr));
    let d = text(&d.stdout);
    for want in [
        "the session record in the store",
        "Phase:        Withdrawn\n",
        "Withdrawn by: alice at ",
        ": found it myself\n",
        "Recording: <none> (the session never ran)",
    ] {
        assert!(d.contains(want), "{want:?} missing in\n{d}");
    }
}

#[tokio::test]
async fn admin_delete_active_session_seals_recording() {
    let (t, _op) = target_with_operator().await;
    auto(&t).await;
    request_named(
        &t,
        "s1",
        &["sh", "-c", "echo started-before-delete; sleep 60"],
        false,
        false,
    )
    .await;
    wait_phase(&t, "s1", Phase::Approved, 15).await;
    let mut ws = attach_named(User::Alice, &t, "s1").await.expect("attach");
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while !String::from_utf8_lossy(&seen).contains("started-before-delete") {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&1) => {
                    seen.extend_from_slice(&b[1..])
                }
                Some(Ok(_)) => {}
                other => panic!("stream ended early: {other:?}"),
            }
        }
    })
    .await
    .expect("output within 15s");
    let api = admin_sessions(&t).await;
    let s = api.get("s1").await.expect("s1");
    let uid = s.metadata.uid.clone().expect("uid");

    // Every version of the object from now until it is gone.
    let (watching, watched) = tokio::sync::oneshot::channel::<()>();
    let history = tokio::spawn({
        let api = api.clone();
        async move {
            let mut watching = Some(watching);
            let mut versions: Vec<Option<ExecSession>> = Vec::new();
            let stream = watcher(api, watcher::Config::default().fields("metadata.name=s1"))
                .default_backoff();
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(w) = watching.take() {
                            let _ = w.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                        versions.push(Some(s))
                    }
                    Ok(watcher::Event::Delete(_)) => {
                        versions.push(None);
                        return versions;
                    }
                    _ => {}
                }
            }
            versions
        }
    });
    tokio::time::timeout(Duration::from_secs(10), watched)
        .await
        .expect("watching within 10s")
        .expect("watch task");
    api.delete("s1", &DeleteParams::default())
        .await
        .expect("admin deletes the active session");

    // The relay ends at once, and the user is told why.
    let (_, err) = drain(&mut ws, 15).await;
    assert!(
        String::from_utf8_lossy(&err).contains(
            "[aexec] session ended: the ExecSession was deleted while the session was active"
        ),
        "{}",
        String::from_utf8_lossy(&err)
    );
    gone(&api, "s1", &uid, 30).await;
    let versions = tokio::time::timeout(Duration::from_secs(10), history)
        .await
        .expect("history")
        .expect("watch task");
    // The object went only after its end was written and its record was in the store.
    let last = versions
        .iter()
        .rev()
        .flatten()
        .next()
        .expect("a version before the deletion");
    assert!(last.metadata.deletion_timestamp.is_some());
    let st = last.status.clone().expect("status");
    assert_eq!(st.phase, Some(Phase::Terminated), "{st:#?}");
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains("marked as ended by deletion")),
        "{st:#?}"
    );
    assert!(st.record.is_some(), "gone before its record: {st:#?}");
    assert!(st.recording.as_ref().is_some_and(|r| r.interrupted));
    assert_eq!(versions.last(), Some(&None));

    // The store holds the sealed recording, marked as ended by deletion, and its record.
    let prefix = prefix(&s);
    let manifest: Manifest =
        serde_json::from_slice(&s3_get(&format!("{prefix}/manifest.json")).await)
            .expect("manifest");
    assert!(manifest.interrupted);
    assert!(
        manifest
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("ended by deletion")),
        "{:?}",
        manifest.reason
    );
    let (_, r) = record_of(&s3_get(&format!("{prefix}/record.json")).await);
    assert!(r.end.deleted);
    assert_eq!(r.end.phase, "Terminated");
    assert!(
        r.timeline.iter().any(|e| e.event == "Deleted"),
        "{:?}",
        r.timeline
    );
    let mut cast = Vec::new();
    for seg in &manifest.segments {
        let stored = s3_get(&format!("{prefix}/{}", chain::segment_name(seg.index))).await;
        cast.extend_from_slice(&seg.decode(&stored).expect("a segment decodes"));
    }
    let cast = String::from_utf8_lossy(&cast);
    assert!(cast.contains("started-before-delete"), "{cast}");
    assert!(
        cast.contains("session ended: the ExecSession was deleted"),
        "the marker is in the recording: {cast}"
    );

    // And it verifies from the store, the object being gone.
    let ns = t.namespace.as_str();
    let v = aexec(User::Carol, &["verify", "s1", "-n", ns], None).await;
    assert_eq!(v.status.code(), Some(0), "{}", text(&v.stderr));
    assert!(
        text(&v.stdout).contains("sealed after an interruption: ended by deletion"),
        "{}",
        text(&v.stdout)
    );
}

#[tokio::test]
async fn review_after_object_deleted() {
    let (t, _op) = target_with_operator().await;
    auto(&t).await;
    let ns = t.namespace.as_str();
    // One session deleted by an administrator at once, one left to the retention.
    let deleted = ran(&t, "s1", &["sh", "-c", "echo review-me-later; exit 3"]).await;
    let retained = ran(&t, "s2", &["sh", "-c", "echo kept-by-retention"]).await;
    delete_and_wait_gone(&t, &deleted).await;
    let retention = aexec_testenv::operator::RETENTION;
    gone(
        &admin_sessions(&t).await,
        "s2",
        &retained.metadata.uid.clone().expect("uid"),
        retention.as_secs() + 30,
    )
    .await;

    for (name, phase, output, exit) in [
        ("s1", "Failed", "review-me-later", "3"),
        ("s2", "Succeeded", "kept-by-retention", "0"),
    ] {
        // The object is gone: kubectl knows nothing of it.
        let get = kubectl(User::Carol, &["get", "execsession", name, "-n", ns], None).await;
        assert!(
            text(&get.stderr).contains("NotFound"),
            "{}",
            text(&get.stderr)
        );

        let d = aexec(User::Carol, &["describe", name, "-n", ns], None).await;
        assert_eq!(d.status.code(), Some(0), "{}", text(&d.stderr));
        let d = text(&d.stdout);
        for want in [
            "Source:       the session record in the store (s3://".to_owned(),
            "the ExecSession object no longer exists".to_owned(),
            "Signature:    valid, key ".to_owned(),
            format!("Phase:        {phase}\n"),
            "Requester:    alice".to_owned(),
            format!("Exit Code:    {exit}\n"),
            "Decided: AutoApproved".to_owned(),
            "Ended: ".to_owned(),
        ] {
            assert!(d.contains(&want), "{want:?} missing in\n{d}");
        }

        let replay = aexec(
            User::Carol,
            &["replay", name, "-n", ns, "--speed", "10"],
            None,
        )
        .await;
        assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stderr));
        assert_eq!(text(&replay.stdout), format!("{output}\n"));
        assert!(
            text(&replay.stderr).contains("from its signed session record in the store"),
            "{}",
            text(&replay.stderr)
        );

        let v3 = aexec(User::Carol, &["export", name, "-n", ns], None).await;
        assert_eq!(v3.status.code(), Some(0), "{}", text(&v3.stderr));
        let cast = aexec_recording::cast::CastReader::parse(&v3.stdout).expect("v3");
        assert_eq!(cast.header.aexec.name, name);
        let txt = aexec(
            User::Carol,
            &["export", name, "-n", ns, "--format", "text"],
            None,
        )
        .await;
        assert!(text(&txt.stdout).contains(output), "{}", text(&txt.stdout));

        let v = aexec(User::Carol, &["verify", name, "-n", ns], None).await;
        assert_eq!(v.status.code(), Some(0), "{}", text(&v.stderr));
        let out = text(&v.stdout);
        assert!(
            out.contains(&format!("session record of {ns}/{name} (uid "))
                && out.contains("verified: signed by key"),
            "{out}"
        );
        assert!(out.contains("matches the signed session record"), "{out}");
    }

    // The archive lists both, says they are signed and that their objects are gone, and
    // filters by requester, pod, phase and time.
    let list = aexec(User::Carol, &["list", "--archived", "-n", ns], None).await;
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    let table = text(&list.stdout);
    assert!(table.starts_with("SESSION "), "{table}");
    for (name, phase) in [("s1", "Failed"), ("s2", "Succeeded")] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{table}"));
        for cell in [t.pod.as_str(), "alice", phase, "yes", "deleted"] {
            assert!(row.contains(cell), "{cell:?} missing in {row:?}");
        }
    }
    let by = |args: &'static [&'static str]| {
        let ns = ns.to_owned();
        async move {
            let mut all = vec!["list", "--archived", "-n", ns.as_str(), "-o", "name"];
            all.extend(args);
            let out = aexec(User::Carol, &all, None).await;
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            text(&out.stdout).lines().count()
        }
    };
    assert_eq!(by(&["--requester", "alice"]).await, 2);
    assert_eq!(by(&["--requester", "bob"]).await, 0);
    assert_eq!(by(&["--phase", "Failed"]).await, 1);
    assert_eq!(by(&["--since", "1h"]).await, 2);
    assert_eq!(by(&["--until", "2000-01-01T00:00:00Z"]).await, 0);
    let pod = aexec(
        User::Carol,
        &["list", "--archived", "-A", "--pod", &t.pod, "-o", "json"],
        None,
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&pod.stdout).expect("json");
    let mine: Vec<&serde_json::Value> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["metadata"]["namespace"] == ns)
        .collect();
    assert_eq!(mine.len(), 2, "{v}");

    // RBAC as for recordings: only auditors read them.
    for user in [User::Alice, User::Mallory] {
        let out = aexec(user, &["list", "--archived", "-n", ns], None).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("aexec-auditor"),
            "{}",
            text(&out.stderr)
        );
        let out = aexec(user, &["replay", "s1", "-n", ns], None).await;
        assert_eq!(out.status.code(), Some(1));
    }
}

/// Rewrites session `s`'s stored recording consistently: the last segment where `needle`
/// occurs (the output, not the command in the header) changed there, every sidecar and the
/// manifest recomputed so that the chain holds. Returns the forged manifest's bytes.
async fn rewrite_recording(s: &ExecSession, needle: &[u8]) -> Vec<u8> {
    let prefix = prefix(s);
    let manifest: Manifest =
        serde_json::from_slice(&s3_get(&format!("{prefix}/manifest.json")).await)
            .expect("manifest");
    let has_needle = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
    let mut target = None;
    for seg in &manifest.segments {
        let key = format!("{prefix}/{}", chain::segment_name(seg.index));
        if has_needle(&seg.decode(&s3_get(&key).await).expect("decodes")) {
            target = Some(seg.index);
        }
    }
    let target = target.expect("needle in a segment");
    let mut metas: Vec<SegmentMeta> = Vec::new();
    for seg in &manifest.segments {
        let key = format!("{prefix}/{}", chain::segment_name(seg.index));
        let mut bytes = s3_get(&key).await;
        let plain = seg.index == target;
        if plain {
            // The forger stores the changed segment decompressed (a plain segment is valid).
            bytes = seg.decode(&bytes).expect("decodes").into_owned();
            let pos = bytes
                .windows(needle.len())
                .rposition(|w| w == needle)
                .expect("needle in the segment");
            bytes[pos] ^= 0x20;
            s3_put(&key, bytes.clone()).await;
        }
        let mut meta = SegmentMeta::compute(
            metas.last(),
            &bytes,
            seg.first_event_at_micros,
            seg.last_event_at_micros,
        )
        .expect("meta");
        if !plain {
            meta.encoding = seg.encoding;
            meta.cast_bytes = seg.cast_bytes;
        }
        s3_put(
            &format!("{prefix}/{}", chain::sidecar_name(seg.index)),
            serde_json::to_vec(&meta).expect("json"),
        )
        .await;
        metas.push(meta);
    }
    let mut forged =
        chain::seal(manifest.session.clone(), metas, manifest.sealed_at.clone()).expect("seal");
    forged.interrupted = manifest.interrupted;
    forged.reason = manifest.reason.clone();
    let bytes = serde_json::to_vec_pretty(&forged).expect("json");
    s3_put(&format!("{prefix}/manifest.json"), bytes.clone()).await;
    bytes
}

#[tokio::test]
async fn rewritten_bucket_detected_without_object() {
    let (t, _op) = target_with_operator().await;
    auto(&t).await;
    let ns = t.namespace.as_str();
    let s = ran(&t, "s1", &["sh", "-c", "echo transferred-100-eur"]).await;
    delete_and_wait_gone(&t, &s).await;
    let ok = aexec(User::Carol, &["verify", "s1", "-n", ns], None).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));

    // Someone with write access to the bucket rewrites the recording consistently: segment,
    // sidecars and manifest agree with each other, and no ExecSession is left to compare with.
    let forged_manifest = rewrite_recording(&s, b"transferred-100").await;
    let bad = aexec(User::Carol, &["verify", "s1", "-n", ns], None).await;
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(
        err.contains("FAILED") && err.contains("manifest.json was altered"),
        "{err}"
    );
    // The operator refuses to serve it too.
    let replay = aexec(User::Carol, &["replay", "s1", "-n", ns], None).await;
    assert_eq!(replay.status.code(), Some(1));
    assert!(
        text(&replay.stderr).contains("failed verification"),
        "{}",
        text(&replay.stderr)
    );

    // ... and the session record too, to match (its signature kept): the signature fails.
    let key = format!("{}/record.json", prefix(&s));
    let original = s3_get(&key).await;
    let (env_, mut r) = record_of(&original);
    let forged: Manifest = serde_json::from_slice(&forged_manifest).expect("forged");
    {
        use sha2::Digest as _;
        let rec = r.recording.as_mut().expect("recording");
        rec.head = forged.head.clone();
        rec.manifest_sha256 = Some(hex::encode(sha2::Sha256::digest(&forged_manifest)));
        rec.segments = forged
            .segments
            .iter()
            .map(|m| record::RecordSegment {
                index: m.index,
                bytes: m.bytes,
                sha256: m.sha256.clone(),
            })
            .collect();
        rec.total_bytes = forged.total_bytes;
    }
    let mut tampered = env_.clone();
    tampered.payload =
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&r).expect("json"));
    s3_put(&key, serde_json::to_vec(&tampered).expect("json")).await;
    let bad = aexec(User::Carol, &["verify", "s1", "-n", ns], None).await;
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(
        err.contains("FAILED")
            && err.contains("signature by key")
            && err.contains("does not match its content: the record was altered or forged"),
        "{err}"
    );
    let list = aexec(User::Carol, &["list", "--archived", "-n", ns], None).await;
    let row = text(&list.stdout)
        .lines()
        .find(|l| l.starts_with("s1 "))
        .map(str::to_owned)
        .expect("listed");
    assert!(row.contains("INVALID"), "{row}");

    // ... or re-signed with a key of the forger's own: nobody published it.
    let forger = SigningKey::from(record::ed25519_dalek::SigningKey::from_bytes(&[66; 32]));
    s3_put(&key, forger.sign(&r).expect("sign")).await;
    let bad = aexec(User::Carol, &["verify", "s1", "-n", ns], None).await;
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(
        err.contains(&format!("signed with key {}", forger.id()))
            && err.contains("not among the trusted public keys"),
        "{err}"
    );

    // The original versions are still in the bucket, under Object Lock: the evidence of what
    // was recorded survives the rewrite.
    let versions = env()
        .s3_client()
        .await
        .list_object_versions()
        .bucket(&env().s3.bucket)
        .prefix(&key)
        .send()
        .await
        .expect("versions");
    assert!(versions.versions().len() >= 3, "{versions:?}");
}

#[tokio::test]
async fn verify_offline_with_public_key() {
    let (t, _op) = target_with_operator().await;
    auto(&t).await;
    let s = ran(&t, "s1", &["sh", "-c", "echo checked-far-away"]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let keys = pinned_keys(dir.path()).await;
    let keys_text = std::fs::read_to_string(&keys).expect("keys");
    assert!(
        keys_text.contains("-----BEGIN PUBLIC KEY-----"),
        "{keys_text}"
    );
    let copy = dir.path().join("s1");
    std::fs::create_dir(&copy).expect("mkdir");
    let names = copy_out(&prefix(&s), &copy).await;
    assert!(names.contains(&"record.json".to_owned()), "{names:?}");
    assert!(names.contains(&"manifest.json".to_owned()), "{names:?}");

    // No kubeconfig, no cluster: the copy and the pinned keys are enough.
    let args = |d: &Path, k: &Path| {
        vec![
            "verify".to_owned(),
            "--dir".to_owned(),
            d.display().to_string(),
            "--public-key".to_owned(),
            k.display().to_string(),
        ]
    };
    let run = |a: Vec<String>| async move {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        offline(&a).await
    };
    let ok = run(args(&copy, &keys)).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let out = text(&ok.stdout);
    assert!(out.contains("verified: signed by key"), "{out}");
    assert!(out.contains("matches the signed session record"), "{out}");

    // A copy with one byte changed fails, naming the segment.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    copy_out(&prefix(&s), &bad).await;
    // Segment 0 is the header; the output is in segment 1.
    let seg = bad.join("seg-000001.cast");
    let bytes = crate::common::flip(std::fs::read(&seg).expect("seg"), b"checked", "segment 1");
    std::fs::write(&seg, bytes).expect("write");
    let out = run(args(&bad, &keys)).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("FAILED") && err.contains("seg-000001.cast") && err.contains("was altered"),
        "{err}"
    );

    // Keys that did not sign it: refused, saying which key it needs.
    let stranger = SigningKey::from(record::ed25519_dalek::SigningKey::from_bytes(&[5; 32]));
    let other = dir.path().join("other.pem");
    std::fs::write(
        &other,
        KeyRing::new(vec![stranger.public()]).to_pem_bundle(),
    )
    .expect("write");
    let out = run(args(&copy, &other)).await;
    assert_eq!(out.status.code(), Some(1));
    let key_id = s
        .status
        .and_then(|s| s.record)
        .and_then(|r| r.key_id)
        .expect("key id");
    assert!(
        text(&out.stderr).contains(&format!("signed with key {key_id}")),
        "{}",
        text(&out.stderr)
    );

    // Without its record, a copy proves nothing: said so.
    std::fs::remove_file(copy.join("record.json")).expect("rm");
    let out = run(args(&copy, &keys)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no record.json"),
        "{}",
        text(&out.stderr)
    );
    // Offline needs the keys, and a file of the wrong kind is refused.
    let out = offline(&["verify", "--dir", copy.to_str().expect("path")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--public-key"),
        "{}",
        text(&out.stderr)
    );
    let out = run(args(&bad, &seg)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no public key found"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn signing_key_rotation_keeps_old_records_valid() {
    // Exclusive: the rotation changes the key every other test's records are signed with.
    let (t, _op) = target_with_operator_exclusive().await;
    auto(&t).await;
    let ns = t.namespace.as_str();
    let admin = env().client(User::Admin).await.expect("admin");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), aexec_testenv::operator::NAMESPACE);
    let secret_name = format!("{}-signing", aexec_testenv::chart::RELEASE);
    let before = secrets
        .get(&secret_name)
        .await
        .expect("the chart's signing Secret");
    let before = before.data.unwrap_or_default();
    let newest = before
        .keys()
        .filter_map(|k| {
            k.strip_prefix("signing-key-")?
                .strip_suffix(".pem")?
                .parse::<u32>()
                .ok()
        })
        .max()
        .expect("a key");

    let old = ran(&t, "s1", &["sh", "-c", "echo signed-before"]).await;
    let old_key = old
        .status
        .clone()
        .and_then(|s| s.record)
        .and_then(|r| r.key_id)
        .expect("key");

    // Rotate the way the chart's README says.
    let chart = aexec_testenv::chart::chart_dir();
    let generation = format!("signing.generation={}", newest + 1);
    let out = env()
        .helm(
            &[
                "upgrade",
                aexec_testenv::chart::RELEASE,
                chart.to_str().expect("path"),
                "-n",
                aexec_testenv::operator::NAMESPACE,
                "--reuse-values",
                "--set",
                &generation,
            ],
            None,
        )
        .await
        .expect("helm");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = secrets
        .get(&secret_name)
        .await
        .expect("secret")
        .data
        .unwrap_or_default();
    assert_eq!(after.len(), before.len() + 1, "one key added");
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} kept as it was");
    }

    // New records are signed with the new key, with no restart.
    let new = ran(&t, "s2", &["sh", "-c", "echo signed-after"]).await;
    let new_key = new
        .status
        .clone()
        .and_then(|s| s.record)
        .and_then(|r| r.key_id)
        .expect("key");
    assert_ne!(new_key, old_key);

    // Both keys are published (API and ConfigMap), the new one signing.
    let keys = aexec(User::Carol, &["keys", "-o", "json"], None).await;
    let v: serde_json::Value = serde_json::from_slice(&keys.stdout).expect("json");
    let items = v["items"].as_array().expect("items");
    let id = |i: &serde_json::Value| {
        i["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        items
            .iter()
            .any(|i| id(i) == old_key && i["signing"] == false),
        "{v}"
    );
    assert!(
        items
            .iter()
            .any(|i| id(i) == new_key && i["signing"] == true),
        "{v}"
    );
    let cm: ConfigMap = Api::namespaced(admin, aexec_testenv::operator::NAMESPACE)
        .get(&format!("{}-signing-keys", aexec_testenv::chart::RELEASE))
        .await
        .expect("configmap");
    let data = cm.data.unwrap_or_default();
    for k in [&old_key, &new_key] {
        assert!(
            data.contains_key(&format!("{k}.pem")),
            "{k} not in {data:?}"
        );
    }

    // Both verify, online, with and without the objects, and offline with the pinned keys.
    let dir = tempfile::tempdir().expect("tmp");
    let pinned = pinned_keys(dir.path()).await;
    for (s, key) in [(&old, &old_key), (&new, &new_key)] {
        let name = s.metadata.name.clone().expect("name");
        let v = aexec(User::Carol, &["verify", &name, "-n", ns], None).await;
        assert_eq!(v.status.code(), Some(0), "{}", text(&v.stderr));
        assert!(
            text(&v.stdout).contains(&format!("signed by key {key}")),
            "{}",
            text(&v.stdout)
        );
        delete_and_wait_gone(&t, s).await;
        let v = aexec(
            User::Carol,
            &[
                "verify",
                &name,
                "-n",
                ns,
                "--public-key",
                pinned.to_str().expect("path"),
            ],
            None,
        )
        .await;
        assert_eq!(v.status.code(), Some(0), "{}", text(&v.stderr));
        let copy = dir.path().join(&name);
        std::fs::create_dir(&copy).expect("mkdir");
        copy_out(&prefix(s), &copy).await;
        let v = offline(&[
            "verify",
            "--dir",
            copy.to_str().expect("path"),
            "--public-key",
            pinned.to_str().expect("path"),
        ])
        .await;
        assert_eq!(v.status.code(), Some(0), "{}", text(&v.stderr));
        assert!(
            text(&v.stdout).contains(&format!("signed by key {key}")),
            "{}",
            text(&v.stdout)
        );
    }
}
