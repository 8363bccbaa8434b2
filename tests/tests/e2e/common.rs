//! Helpers shared by the end-to-end tests.

use std::{path::PathBuf, process::Output, time::Duration};

use aexec_crds::{ExecPolicy, ExecSession, Phase};
use aexec_testenv::{Target, TestEnv, User};
use kube::{Api, api::PostParams, runtime::wait::await_condition};
use serde_json::{Value, json};

/// The shared control plane.
pub fn env() -> &'static TestEnv {
    TestEnv::shared()
}

/// The real `kubectl` (built at the server's version) as `user`, with `args`.
pub async fn kubectl(user: User, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let env = env();
    let mut cmd = tokio::process::Command::new(&env.upstream.kubectl);
    cmd.arg("--kubeconfig").arg(env.kubeconfig(user)).args(args);
    output(cmd, stdin, "kubectl").await
}

/// Runs `cmd` to completion (at most 60 s) with `stdin` as its whole input (closed after it:
/// end of input), capturing stdout and stderr.
pub async fn output(mut cmd: tokio::process::Command, stdin: Option<&[u8]>, what: &str) -> Output {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        tokio::spawn(async move {
            // The command may exit before reading everything: that is its answer, not ours.
            let _ = w.write_all(&input).await;
        });
    }
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60s"))
        .unwrap_or_else(|e| panic!("{what} did not run: {e}"))
}

/// A fresh target namespace with the shared operator running; hold the guard meanwhile.
pub async fn target_with_operator() -> (Target, tokio::sync::RwLockReadGuard<'static, ()>) {
    let env = env();
    let guard = env.operator().await.expect("operator running");
    let admin = env.client(User::Admin).await.expect("admin");
    (env.target(&admin).await.expect("target"), guard)
}

/// A fresh target namespace with the operator to this test alone (it may stop or restart it).
pub async fn target_with_operator_exclusive() -> (Target, tokio::sync::RwLockWriteGuard<'static, ()>)
{
    let env = env();
    let guard = env.operator_exclusive().await.expect("operator running");
    let admin = env.client(User::Admin).await.expect("admin");
    (env.target(&admin).await.expect("target"), guard)
}

/// A policy named `<namespace>-<suffix>`, governing only the target's namespace.
pub async fn policy(t: &Target, suffix: &str, spec: Value) -> ExecPolicy {
    let admin = env().client(User::Admin).await.expect("admin");
    let mut spec = spec;
    spec["namespaceSelector"] =
        json!({"matchLabels": {"kubernetes.io/metadata.name": t.namespace}});
    let p: ExecPolicy = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecPolicy",
        "metadata": {"name": format!("{}-{suffix}", t.namespace)}, "spec": spec
    }))
    .expect("policy");
    Api::<ExecPolicy>::all(admin)
        .create(&PostParams::default(), &p)
        .await
        .expect("policy created")
}

/// Waits until session `name` reaches `phase` (written by the operator), failing with its last
/// status.
pub async fn wait_phase(t: &Target, name: &str, phase: Phase, secs: u64) -> ExecSession {
    let admin = env().client(User::Admin).await.expect("admin");
    let api: Api<ExecSession> = Api::namespaced(admin, &t.namespace);
    let cond = move |s: Option<&ExecSession>| {
        s.is_some_and(|s| s.phase() == phase && s.status.as_ref().and_then(|st| st.phase).is_some())
    };
    match tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, cond),
    )
    .await
    {
        Ok(Ok(Some(s))) => s,
        other => {
            let now = api.get(name).await.ok().and_then(|s| s.status);
            panic!(
                "session {name} did not reach {phase} within {secs}s ({other:?}); status: {now:#?}"
            )
        }
    }
}

/// Waits until session `name` has its signed record in the store (`status.record`).
pub async fn wait_record(t: &Target, name: &str) -> ExecSession {
    let admin = env().client(User::Admin).await.expect("admin");
    let api: Api<ExecSession> = Api::namespaced(admin, &t.namespace);
    let cond = |s: Option<&ExecSession>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.record.is_some())
    };
    match tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(api.clone(), name, cond),
    )
    .await
    {
        Ok(Ok(Some(s))) => s,
        other => panic!(
            "session {name} got no signed record within 30s ({other:?}); status: {:#?}",
            api.get(name).await.ok().and_then(|s| s.status)
        ),
    }
}

/// Waits until the operator has uploaded every file of session `name` (its spool directory is
/// gone) and returns the recording's key prefix in the bucket.
pub async fn uploaded(t: &Target, name: &str, uid: &str) -> String {
    let prefix = format!("{}/{name}-{uid}", t.namespace);
    let dir = env().spool_dir().join(&prefix);
    for _ in 0..100 {
        if !dir.exists() {
            return prefix;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{} was not uploaded within 20s", dir.display());
}

/// Changes one byte of a stored object in MinIO: flips the case of the first letter of
/// `needle`, which must occur in it. (A new object version: Object Lock keeps the original, but readers get the latest.)
pub async fn tamper(key: &str, needle: &[u8]) {
    let s3 = env().s3_client().await;
    let bucket = &env().s3.bucket;
    let obj = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key} in MinIO: {e:?}"));
    let bytes = flip(
        obj.body.collect().await.expect("body").to_vec(),
        needle,
        key,
    );
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(bytes.into())
        .send()
        .await
        .expect("tamper");
}

/// `bytes` of a stored object with the first letter of `needle` flipped in case. A segment
/// stored as a zstd frame is decompressed first (and returned plain: what matters is that the
/// stored bytes change, as a forger's would).
pub fn flip(bytes: Vec<u8>, needle: &[u8], what: &str) -> Vec<u8> {
    let mut bytes = if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(&bytes[..]).expect("a zstd segment decodes")
    } else {
        bytes
    };
    let pos = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{} not in {what}", String::from_utf8_lossy(needle)));
    assert!(
        needle[0].is_ascii_alphabetic(),
        "the needle starts with a letter"
    );
    bytes[pos] ^= 0x20; // flips the letter's case
    bytes
}

/// Resident anonymous memory (`RssAnon`: the heap, not the mapped binary) of the process whose `/proc` directory is `proc`, in bytes.
pub fn rss(proc: &std::path::Path) -> u64 {
    let status = std::fs::read_to_string(proc.join("status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .expect("RssAnon")
        * 1024
}

/// Runs `f` while sampling the resident memory of the process at `proc` every millisecond:
/// `f`'s output, the memory before, and the most seen meanwhile.
pub async fn with_peak_rss<T>(
    proc: &std::path::Path,
    f: impl std::future::Future<Output = T>,
) -> (T, u64, u64) {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let before = rss(proc);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (stop, proc) = (stop.clone(), proc.to_owned());
        move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss(&proc));
                std::thread::sleep(Duration::from_millis(1));
            }
            peak.max(rss(&proc))
        }
    });
    let out = f.await;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    (out, before, peak)
}

/// alice asks for session `name` running `command` in the target pod.
pub async fn request_named(t: &Target, name: &str, command: &[&str], stdin: bool, tty: bool) {
    let alice = env().client(User::Alice).await.expect("alice");
    let s: ExecSession = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession", "metadata": {"name": name},
        "spec": {"pod": t.pod, "command": command, "stdin": stdin, "tty": tty,
                 "requester": {"username": "alice", "groups": ["dev", "system:authenticated"]}}
    }))
    .expect("session");
    Api::<ExecSession>::namespaced(alice, &t.namespace)
        .create(&PostParams::default(), &s)
        .await
        .unwrap_or_else(|e| panic!("alice asks for {name}: {e}"));
}

/// A client's attach stream.
pub type Conn =
    tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// `user` attaches to session `name` of the target's namespace.
pub async fn attach_named(user: User, t: &Target, name: &str) -> Result<Conn, kube::Error> {
    let client = env().client(user).await.expect("client");
    let req = http::Request::get(format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/{name}/attach",
        t.namespace
    ))
    .body(Vec::new())
    .expect("request");
    client.connect(req).await.map(|c| c.into_stream())
}

/// `user` opens the observe WebSocket of session `name` (`query`: `""` or `?mode=...`).
pub async fn observe_named(
    user: User,
    t: &Target,
    name: &str,
    query: &str,
) -> Result<Conn, kube::Error> {
    let client = env().client(user).await.expect("client");
    let req = http::Request::get(format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/{name}/observe{query}",
        t.namespace
    ))
    .body(Vec::new())
    .expect("request");
    client.connect(req).await.map(|c| c.into_stream())
}

/// Session `name`'s recording in `format` (v3, v2, text), as `user` reads it (verified by the
/// operator on the way: a 409 if it was altered).
pub async fn recording_named(
    user: User,
    t: &Target,
    name: &str,
    format: &str,
) -> Result<Vec<u8>, kube::Error> {
    let client = env().client(user).await.expect("client");
    let req = http::Request::get(format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/{name}/recording?format={format}",
        t.namespace
    ))
    .body(Vec::new())
    .expect("request");
    client.request_text(req).await.map(String::into_bytes)
}

/// The plugin binary: `AEXEC_PLUGIN_BIN`, or next to the test binary's directory
/// (`target/debug/deps/e2e-*` -> `target/debug/kubectl-aexec`).
pub fn plugin_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AEXEC_PLUGIN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("kubectl-aexec");
    assert!(
        bin.exists(),
        "the plugin is not built ({}): run `cargo build -p kubectl-aexec` first (./dev test does)",
        bin.display()
    );
    bin
}

/// `kubectl-aexec --kubeconfig <user> ARGS` with `stdin`, to completion.
pub async fn aexec(user: User, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = tokio::process::Command::new(plugin_bin());
    cmd.arg("--kubeconfig")
        .arg(env().kubeconfig(user))
        .args(args);
    output(cmd, stdin, "kubectl-aexec").await
}

/// Deletes pod `t.pod` and creates a new one under the same name (a new UID), waiting until it
/// runs; returns the new UID.
///
/// kwok (v0.8) now and then drops a pod created under the name of one it is still deleting (its
/// log: "failed to delete pod web: not found" for the old one, then nothing for the new one), or
/// deletes the new one a while after it ran (a late delete of the old one, by name). Such a pod
/// is deleted and created again, at most twice more; a pod is kept once it stays.
pub async fn replace_pod(t: &Target) -> String {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::DeleteParams;
    let env = env();
    let admin = env.client(User::Admin).await.expect("admin");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &t.namespace);
    let gone = || async {
        pods.delete(&t.pod, &DeleteParams::default().grace_period(0))
            .await
            .expect("delete the pod");
        for _ in 0..100 {
            if pods.get_opt(&t.pod).await.expect("get").is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "pod {}/{} still exists 10 s after its deletion",
            t.namespace, t.pod
        );
    };
    gone().await;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match env.run_pod(&admin, &t.namespace, &t.pod).await {
            Ok((_, uid)) => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let now = pods.get_opt(&t.pod).await.expect("get");
                if now.and_then(|p| p.metadata.uid).as_deref() == Some(uid.as_str()) {
                    assert_ne!(uid, t.uid, "the new pod has the old pod's UID");
                    return uid;
                }
                assert!(attempt < 3, "kwok dropped the new pod {attempt} times");
                eprintln!(
                    "same name again, attempt {attempt}: kwok dropped the new pod; creating it anew"
                );
            }
            Err(e) if attempt < 3 && format!("{e:#}").contains("did not become Running") => {
                eprintln!("same name again, attempt {attempt}: {e:#}; creating it anew");
                gone().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("same name again: {e:#}"),
        }
    }
}
