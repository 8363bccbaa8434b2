//! The ground the product stands on: exec into kwok pods, the CRDs, MinIO, distinct users.

use aexec_crds::{ExecPolicy, ExecSession};
use aexec_testenv::{User, install_crds};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{AttachParams, Patch, PatchParams, PostParams, TerminalSize},
};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::common::{env, kubectl};

#[tokio::test]
async fn kubectl_exec_into_kwok_pod_returns_output_and_exit_code() {
    let env = env();
    let admin = env.client(User::Admin).await.expect("admin client");
    let t = env.target(&admin).await.expect("target pod");

    let out = kubectl(
        User::Admin,
        &[
            "exec",
            "-n",
            &t.namespace,
            &t.pod,
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 3",
        ],
        None,
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-stdout\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("to-stderr"), "stderr: {stderr}");
    assert_eq!(
        out.status.code(),
        Some(3),
        "kubectl exec exit code; stderr: {stderr}"
    );

    // Piped stdin reaches the command and its end ends the command (`cat` terminates).
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = kubectl(
        User::Admin,
        &["exec", "-i", "-n", &t.namespace, &t.pod, "--", "cat"],
        Some(&input),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "cat echoed different bytes");
}

#[tokio::test]
async fn kubectl_exec_into_kwok_pod_through_kube_rs_with_tty_and_resize() {
    let env = env();
    let admin = env.client(User::Admin).await.expect("admin client");
    let t = env.target(&admin).await.expect("target pod");
    let pods: Api<Pod> = Api::namespaced(admin, &t.namespace);

    let mut proc = pods
        .exec(
            &t.pod,
            vec!["sh"],
            &AttachParams::interactive_tty().container("app"),
        )
        .await
        .expect("exec with tty");
    let mut size = proc.terminal_size().expect("tty has a size channel");
    let mut stdin = proc.stdin().expect("stdin");
    let mut stdout = proc.stdout().expect("stdout");
    let status = proc.take_status().expect("status");
    let mut seen = Vec::new();

    size.try_send(TerminalSize {
        width: 123,
        height: 45,
    })
    .expect("first resize");
    // A resize travels on its own channel and is applied asynchronously by the node, so the
    // shell may answer before it lands: ask until the size shows (bounded).
    ask_until(&mut stdin, &mut stdout, &mut seen, b"stty size\n", "45 123").await;
    // And a real terminal (its output, not the echo of the command line, names the device).
    ask_until(&mut stdin, &mut stdout, &mut seen, b"tty\n", "/dev/pts/").await;

    size.try_send(TerminalSize {
        width: 132,
        height: 50,
    })
    .expect("second resize");
    ask_until(&mut stdin, &mut stdout, &mut seen, b"stty size\n", "50 132").await;

    stdin.write_all(b"exit 7\n").await.expect("type exit");
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), status)
        .await
        .expect("status within 20s")
        .expect("a status");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let code = status
        .details
        .and_then(|d| d.causes)
        .and_then(|c| {
            c.into_iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|c| c.message);
    assert_eq!(code.as_deref(), Some("7"));
}

/// Types `line` until `want` appears in the output (20 tries, 300 ms each).
async fn ask_until(
    stdin: &mut (impl tokio::io::AsyncWrite + Unpin),
    stdout: &mut (impl tokio::io::AsyncRead + Unpin),
    seen: &mut Vec<u8>,
    line: &[u8],
    want: &str,
) {
    use tokio::io::AsyncReadExt;
    for _ in 0..20 {
        stdin.write_all(line).await.expect("type");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stdout.read(&mut buf)).await {
            assert!(
                n > 0,
                "stream ended; seen {:?}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        if String::from_utf8_lossy(seen).contains(want) {
            return;
        }
    }
    panic!(
        "{want:?} never showed; seen {:?}",
        String::from_utf8_lossy(seen)
    );
}

#[tokio::test]
async fn crds_install_and_validate() {
    let env = env();
    let admin = env.client(User::Admin).await.expect("admin client");
    // The checked-in YAML applies (again: the environment applied it at start) and is established.
    install_crds(&admin)
        .await
        .expect("CRDs apply and are established");
    let t = env.target(&admin).await.expect("namespace");
    let sessions: Api<ExecSession> = Api::namespaced(admin.clone(), &t.namespace);
    let policies: Api<ExecPolicy> = Api::all(admin.clone());

    // Valid objects are accepted, with defaults filled in by the server.
    let session: ExecSession = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
        "metadata": {"name": "ok"},
        "spec": {"pod": t.pod, "command": ["sh", "-c", "id"], "reason": "INC-1",
                 "requester": {"username": "admin", "groups": ["system:masters", "system:authenticated"]}}
    }))
    .expect("session");
    let created = sessions
        .create(&PostParams::default(), &session)
        .await
        .expect("valid session accepted");
    assert!(!created.spec.tty && !created.spec.stdin, "defaults applied");

    let policy_name = format!("{}-ok", t.namespace);
    let policy: ExecPolicy = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecPolicy",
        "metadata": {"name": policy_name},
        "spec": {"decision": "RequireApproval", "priority": 10,
                 "podSelector": {"matchLabels": {"app": "web"}},
                 "approval": {"required": 2, "groups": ["sre"], "pendingTimeout": "30m"},
                 "limits": {"maxDuration": "1h", "idleTimeout": "15m", "approvalValidFor": "10m"}}
    }))
    .expect("policy");
    let created = policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("valid policy accepted");
    assert!(
        created.spec.limits.recording_required && created.spec.limits.allow_tty,
        "defaults"
    );

    // The spec is immutable.
    let err = sessions
        .patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"command": ["rm", "-rf", "/"]}})),
        )
        .await
        .expect_err("spec change must be rejected");
    assert_invalid(&err, "spec is immutable");

    // Invalid objects get the server's validation error.
    let cases = [
        (
            json!({"pod": "", "command": ["id"], "requester": {"username": "alice"}}),
            "spec.pod",
        ),
        (
            json!({"pod": "web", "command": [], "requester": {"username": "alice"}}),
            "spec.command",
        ),
        (
            json!({"pod": "web", "command": ["id"]}),
            "spec.requester: Required value",
        ),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let res = raw_create(
            &admin,
            &t.namespace,
            json!({
                "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
                "metadata": {"name": format!("bad-{i}")}, "spec": spec
            }),
        )
        .await;
        assert_invalid(&res.expect_err("invalid session must be rejected"), want);
    }

    let bad_policies = [
        (
            json!({"decision": "RequireApproval"}),
            "decision RequireApproval needs an approval section",
        ),
        (json!({"decision": "Sometimes"}), "spec.decision"),
        (
            json!({"decision": "AutoApprove", "limits": {"maxDuration": "forever"}}),
            "maxDuration must be a duration",
        ),
        (
            json!({"decision": "AutoApprove", "limits": {"idleTimeout": "400h"}}),
            "idleTimeout must be a duration between 1s and 168h",
        ),
        (
            json!({"decision": "RequireApproval", "approval": {"required": 1}}),
            "name at least one approver group or user",
        ),
        (
            json!({"decision": "RequireApproval", "approval": {"required": 0, "users": ["bob"]}}),
            "spec.approval.required",
        ),
    ];
    for (i, (spec, want)) in bad_policies.into_iter().enumerate() {
        let res = raw_create_cluster(
            &admin,
            json!({
                "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecPolicy",
                "metadata": {"name": format!("{}-bad-{i}", t.namespace)}, "spec": spec
            }),
        )
        .await;
        assert_invalid(&res.expect_err("invalid policy must be rejected"), want);
    }
    policies
        .delete(&policy_name, &Default::default())
        .await
        .expect("cleanup");
}

async fn raw_create(
    client: &kube::Client,
    ns: &str,
    obj: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ar::<ExecSession>());
    let obj: kube::api::DynamicObject = serde_json::from_value(obj).expect("dynamic");
    api.create(&PostParams::default(), &obj).await.map(|_| ())
}

async fn raw_create_cluster(
    client: &kube::Client,
    obj: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar::<ExecPolicy>());
    let obj: kube::api::DynamicObject = serde_json::from_value(obj).expect("dynamic");
    api.create(&PostParams::default(), &obj).await.map(|_| ())
}

fn ar<K: kube::Resource<DynamicType = ()>>() -> kube::api::ApiResource {
    kube::api::ApiResource::erase::<K>(&())
}

fn assert_invalid(err: &kube::Error, want: &str) {
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            assert!(
                status.message.contains(want),
                "expected {want:?} in: {}",
                status.message
            );
        }
        other => panic!("expected the server's validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn minio_roundtrip_put_get_and_multipart() {
    let env = env();
    let s3 = env.s3_client().await;
    let bucket = &env.s3.bucket;

    s3.put_object()
        .bucket(bucket)
        .key("roundtrip/small")
        .body(b"hello, recordings".to_vec().into())
        .send()
        .await
        .expect("put");
    let got = s3
        .get_object()
        .bucket(bucket)
        .key("roundtrip/small")
        .send()
        .await
        .expect("get");
    let body = got.body.collect().await.expect("body").into_bytes();
    assert_eq!(&body[..], b"hello, recordings");

    // Multipart: two 5 MiB parts (the S3 minimum for all but the last) and a short last part.
    let parts: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            let len = if i < 2 { 5 << 20 } else { 12345 };
            (0..len)
                .map(|j: usize| (j as u8).wrapping_mul(31).wrapping_add(i))
                .collect()
        })
        .collect();
    let key = "roundtrip/multipart";
    let up = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("create upload");
    let upload_id = up.upload_id().expect("upload id").to_owned();
    let mut done = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let r = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(n)
            .body(part.clone().into())
            .send()
            .await
            .expect("upload part");
        done.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().expect("etag"))
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .expect("complete upload");
    let got = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("get multipart");
    let body = got.body.collect().await.expect("body").into_bytes();
    let want: Vec<u8> = parts.concat();
    assert_eq!(body.len(), want.len());
    assert!(
        body[..] == want[..],
        "multipart object differs from what was uploaded"
    );
}

#[tokio::test]
async fn rbac_users_are_distinct() {
    let env = env();
    let admin = env.client(User::Admin).await.expect("admin");
    let t = env.target(&admin).await.expect("target");

    // The same request, two certificates: admin may, mallory may not.
    let as_admin: Api<Pod> = Api::namespaced(admin, &t.namespace);
    as_admin.get(&t.pod).await.expect("admin reads the pod");
    let mallory = env.client(User::Mallory).await.expect("mallory");
    let as_mallory: Api<Pod> = Api::namespaced(mallory, &t.namespace);
    match as_mallory.get(&t.pod).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(s.message.contains("User \"mallory\""), "{}", s.message);
        }
        other => panic!("mallory must be forbidden, got {other:?}"),
    }

    // kubectl agrees, and names the user it authenticated.
    let who = kubectl(
        User::Alice,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}/{.status.userInfo.groups}",
        ],
        None,
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        "alice/[\"dev\",\"system:authenticated\"]"
    );
    let can = kubectl(
        User::Mallory,
        &["auth", "can-i", "get", "pods", "-n", &t.namespace],
        None,
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&can.stdout).trim(), "no");

    // Users read pods but hold no pods/exec: only the operator will.
    let exec = kubectl(
        User::Alice,
        &["exec", "-n", &t.namespace, &t.pod, "--", "id"],
        None,
    )
    .await;
    assert_ne!(exec.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&exec.stderr);
    assert!(
        stderr.contains("forbidden") && stderr.contains("pods/exec"),
        "{stderr}"
    );
}

#[tokio::test]
async fn spoofed_requester_is_rejected_by_the_admission_policy() {
    let env = env();
    let admin = env.client(User::Admin).await.expect("admin");
    let t = env.target(&admin).await.expect("target");
    let alice = env.client(User::Alice).await.expect("alice");
    let sessions: Api<ExecSession> = Api::namespaced(alice, &t.namespace);
    let session = |name: &str, user: &str, groups: &[&str]| -> ExecSession {
        serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
            "metadata": {"name": name},
            "spec": {"pod": t.pod, "command": ["sh"], "requester": {"username": user, "groups": groups}}
        }))
        .expect("session")
    };
    let forbidden = |r: Result<ExecSession, kube::Error>, want: &str| match r {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(
                s.message.contains(want),
                "expected {want:?} in {}",
                s.message
            );
        }
        other => panic!("expected the admission policy to refuse, got {other:?}"),
    };

    let pp = PostParams::default();
    forbidden(
        sessions
            .create(
                &pp,
                &session("as-bob", "bob", &["sre", "system:authenticated"]),
            )
            .await,
        "spec.requester.username must be the user creating the session: you are alice, not bob",
    );
    forbidden(
        sessions
            .create(
                &pp,
                &session(
                    "extra-group",
                    "alice",
                    &["dev", "sre", "system:authenticated"],
                ),
            )
            .await,
        "spec.requester.groups must be exactly the groups of the user creating the session",
    );
    let ok = sessions
        .create(
            &pp,
            &session("honest", "alice", &["dev", "system:authenticated"]),
        )
        .await
        .expect("alice naming herself is accepted");
    assert_eq!(ok.spec.requester.username, "alice");
}
