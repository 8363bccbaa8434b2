//! `kubectl aexec cp`: copies through the broker, approved and recorded, against the real
//! `kubectl cp` on the same pod. On kwok a pod's exec is a local process, so the pod's paths are
//! paths of this machine (in the test's own temporary directories).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aexec_testenv::{Target, User};
use serde_json::json;

use crate::common::{
    aexec, env, kubectl, policy, tamper, target_with_operator, uploaded, wait_record,
};
use crate::plugin::text;

/// What a tree holds: for each path below the root, a file's bytes, `dir`, or a link's target.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).expect("below").display().to_string();
            let m = std::fs::symlink_metadata(&p).expect("meta");
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!(
                        "link -> {}",
                        std::fs::read_link(&p).expect("link").display()
                    ),
                );
            } else if m.is_dir() {
                out.insert(rel.clone(), "dir".into());
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.insert(rel, format!("{} bytes sha256 {}", bytes.len(), sha(&bytes)));
            }
        }
    }
    let mut out = BTreeMap::new();
    if std::fs::symlink_metadata(root).is_ok_and(|m| m.is_file()) {
        let bytes = std::fs::read(root).expect("read");
        out.insert(
            ".".into(),
            format!("{} bytes sha256 {}", bytes.len(), sha(&bytes)),
        );
        return out;
    }
    walk(root, root, &mut out);
    out
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// A tree of the kinds a copy meets: nested directories, an empty one, text, binary and empty
/// files, a name with spaces and UTF-8, a long name, an executable.
fn sample(root: &Path) {
    let w = |rel: &str, bytes: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    };
    w("a.txt", b"hello\n");
    w("bin/tool.sh", b"#!/bin/sh\necho tool\n");
    w(
        "bin/data.bin",
        &(0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<_>>(),
    );
    w("deep/er/still/empty-file", b"");
    w("naïve name with spaces.log", "ünïcødé\n".as_bytes());
    w(&format!("long/{}", "n".repeat(150)), b"long name\n");
    std::fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("bin/tool.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
}

fn copies(t: &Target) -> serde_json::Value {
    let _ = t;
    json!({"decision": "AutoApprove", "limits": {"allowCopy": "Both"}})
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The session a plugin run created, from its stderr (`execsession NAME created ...`).
fn session_name(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("execsession ")?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no session name in:\n{stderr}"))
}

#[tokio::test]
async fn cp_download_matches_kubectl_cp() {
    let (t, _op) = target_with_operator().await;
    policy(&t, "cp", copies(&t)).await;
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("pod-side/src");
    sample(&src);
    let ns = t.namespace.as_str();
    // A directory, then a single file, each both ways.
    for (what, from) in [("dir", src.clone()), ("file", src.join("bin/data.bin"))] {
        let mine = work.path().join(format!("mine-{what}"));
        let theirs = work.path().join(format!("theirs-{what}"));
        let remote = format!("{}:{}", t.pod, s(&from));
        let out = aexec(User::Alice, &["cp", "-n", ns, &remote, s(&mine)], None).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("recorded as session"),
            "{}",
            text(&out.stderr)
        );
        let k = kubectl(
            User::Admin,
            &["cp", &format!("{ns}/{remote}"), s(&theirs)],
            None,
        )
        .await;
        assert_eq!(k.status.code(), Some(0), "{}", text(&k.stderr));
        let (a, b) = (tree(&mine), tree(&theirs));
        assert_eq!(
            a, b,
            "{what}: aexec cp and kubectl cp wrote different trees"
        );
        assert_eq!(a, tree(&from), "{what}: the copy differs from the source");
        assert!(a.len() > if what == "dir" { 8 } else { 0 }, "{a:?}");
    }
    // The NAMESPACE/POD:PATH form.
    let nsform = work.path().join("nsform");
    let out = aexec(
        User::Alice,
        &[
            "cp",
            &format!("{ns}/{}:{}", t.pod, s(&src.join("a.txt"))),
            s(&nsform),
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&nsform).expect("copied"), b"hello\n");
}

#[tokio::test]
async fn cp_upload_matches_kubectl_cp() {
    let (t, _op) = target_with_operator().await;
    policy(&t, "cp", copies(&t)).await;
    let work = tempfile::tempdir().expect("tmp");
    let local = work.path().join("local");
    sample(&local);
    let pod_side = work.path().join("pod-side");
    std::fs::create_dir_all(&pod_side).expect("mkdir");
    let ns = t.namespace.as_str();
    for (what, from) in [("dir", local.clone()), ("file", local.join("bin/tool.sh"))] {
        let mine = pod_side.join(format!("mine-{what}"));
        let theirs = pod_side.join(format!("theirs-{what}"));
        let out = aexec(
            User::Alice,
            &["cp", "-n", ns, s(&from), &format!("{}:{}", t.pod, s(&mine))],
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let k = kubectl(
            User::Admin,
            &["cp", s(&from), &format!("{ns}/{}:{}", t.pod, s(&theirs))],
            None,
        )
        .await;
        assert_eq!(k.status.code(), Some(0), "{}", text(&k.stderr));
        let (a, b) = (tree(&mine), tree(&theirs));
        assert_eq!(
            a, b,
            "{what}: aexec cp and kubectl cp wrote different trees"
        );
        assert_eq!(a, tree(&from), "{what}: the upload differs from the source");
        // Modes travel with an upload (tar -xmf keeps them), as with kubectl cp.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let tool = |root: &Path| {
            if what == "dir" {
                root.join("bin/tool.sh")
            } else {
                root.to_path_buf()
            }
        };
        assert_eq!(mode(&tool(&mine)), 0o755);
        assert_eq!(mode(&tool(&mine)), mode(&tool(&theirs)));
    }
    // A destination ending in / is a directory: the file keeps its name in it.
    let into = pod_side.join("into");
    std::fs::create_dir_all(&into).expect("mkdir");
    let out = aexec(
        User::Alice,
        &[
            "cp",
            "-n",
            ns,
            s(&local.join("a.txt")),
            &format!("{}:{}/", t.pod, s(&into)),
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(into.join("a.txt")).expect("copied"),
        b"hello\n"
    );
    // A local path that does not exist: refused before anything is asked.
    let sessions = || async {
        let admin = env().client(User::Admin).await.expect("admin");
        kube::Api::<aexec_crds::ExecSession>::namespaced(admin, ns)
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .len()
    };
    let before = sessions().await;
    let out = aexec(
        User::Alice,
        &[
            "cp",
            "-n",
            ns,
            s(&work.path().join("nope")),
            &format!("{}:/tmp/x", t.pod),
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("doesn't exist in the local filesystem"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        sessions().await,
        before,
        "a session was created for nothing"
    );
}

#[tokio::test]
async fn cp_recorded_and_exported() {
    let (t, _op) = target_with_operator().await;
    policy(&t, "cp", copies(&t)).await;
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("pod-side/src");
    sample(&src);
    let ns = t.namespace.as_str();
    let got = work.path().join("got");
    let out = aexec(
        User::Alice,
        &[
            "cp",
            "-n",
            ns,
            "-r",
            "INC-7",
            &format!("{}:{}", t.pod, s(&src)),
            s(&got),
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = session_name(&text(&out.stderr));
    let session = wait_record(&t, &name).await;
    // The session says what was asked.
    let copy = session.spec.copy.clone().expect("a copy");
    assert_eq!(copy.direction, aexec_crds::CopyDirection::Download);
    assert_eq!(copy.path, s(&src));
    assert_eq!(session.spec.command, ["tar", "cf", "-", s(&src)]);

    // describe lists every file with its size and SHA-256.
    let d = aexec(User::Carol, &["describe", &name, "-n", ns], None).await;
    let d = text(&d.stdout);
    let data = std::fs::read(src.join("bin/data.bin")).expect("read");
    for want in [
        "Files:".to_owned(),
        sha(&data),
        sha(b"hello\n"),
        format!("{}/bin/data.bin", s(&src).trim_start_matches('/')),
        "200000".to_owned(),
    ] {
        assert!(d.contains(&want), "{want:?} missing in\n{d}");
    }

    // export --files writes the exact files, under the names they had in the tar stream.
    let evidence = work.path().join("evidence");
    let e = aexec(
        User::Carol,
        &["export", &name, "-n", ns, "--files", s(&evidence)],
        None,
    )
    .await;
    assert_eq!(e.status.code(), Some(0), "{}", text(&e.stderr));
    let exported = evidence.join(s(&src).trim_start_matches('/'));
    assert_eq!(tree(&exported), tree(&src));
    // Not into a directory that holds something already.
    let again = aexec(
        User::Carol,
        &["export", &name, "-n", ns, "--files", s(&evidence)],
        None,
    )
    .await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("is not empty"),
        "{}",
        text(&again.stderr)
    );
    // The requester may not read them: recordings are for auditors.
    let alice = aexec(
        User::Alice,
        &[
            "export",
            &name,
            "-n",
            ns,
            "--files",
            s(&work.path().join("a")),
        ],
        None,
    )
    .await;
    assert_eq!(alice.status.code(), Some(1));
    assert!(
        text(&alice.stderr).contains("aexec-auditor"),
        "{}",
        text(&alice.stderr)
    );

    // The cast holds no file bytes: the tar is in segments of its own, in the chain.
    let uid = session.metadata.uid.clone().unwrap_or_default();
    let prefix = uploaded(&t, &name, &uid).await;

    // Once the ExecSession is gone, the files come from its signed record in the store.
    crate::evidence::delete_and_wait_gone(&t, &session).await;
    let archived = work.path().join("archived");
    let e = aexec(
        User::Carol,
        &["export", &name, "-n", ns, "--files", s(&archived)],
        None,
    )
    .await;
    assert_eq!(e.status.code(), Some(0), "{}", text(&e.stderr));
    assert!(
        text(&e.stderr).contains("no longer exists"),
        "{}",
        text(&e.stderr)
    );
    assert_eq!(
        tree(&archived.join(s(&src).trim_start_matches('/'))),
        tree(&src)
    );
    let manifest: aexec_recording::chain::Manifest = serde_json::from_slice(
        &env()
            .s3_client()
            .await
            .get_object()
            .bucket(&env().s3.bucket)
            .key(format!("{prefix}/manifest.json"))
            .send()
            .await
            .expect("manifest")
            .body
            .collect()
            .await
            .expect("body")
            .to_vec(),
    )
    .expect("manifest json");
    use aexec_recording::chain::Content;
    let tar_seg = manifest
        .segments
        .iter()
        .find(|m| m.content == Some(Content::Tar))
        .expect("a tar segment")
        .clone();
    assert!(
        manifest
            .segments
            .iter()
            .any(|m| m.content == Some(Content::Files))
    );
    let cast = aexec(User::Carol, &["export", &name, "-n", ns], None).await;
    assert_eq!(cast.status.code(), Some(0), "{}", text(&cast.stderr));
    assert!(
        !text(&cast.stdout).contains("tool"),
        "file bytes leaked into the cast"
    );

    let ok = aexec(User::Carol, &["verify", &name, "-n", ns], None).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));

    // A file changed in the store: verification fails, and the files are not served.
    tamper(&format!("{prefix}/{}", tar_seg.file_name()), b"hello").await;
    let bad = aexec(User::Carol, &["verify", &name, "-n", ns], None).await;
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stdout));
    let refused = aexec(
        User::Carol,
        &[
            "export",
            &name,
            "-n",
            ns,
            "--files",
            s(&work.path().join("after")),
        ],
        None,
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("verification"),
        "{}",
        text(&refused.stderr)
    );
}

#[tokio::test]
async fn cp_refuses_path_escape() {
    let (t, _op) = target_with_operator().await;
    policy(&t, "cp", copies(&t)).await;
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("pod-side/src");
    sample(&src);
    // The pod holds a link to a file outside what is copied: a tar of it carries the link.
    let outside = work.path().join("outside-secret");
    std::fs::write(&outside, b"secret\n").expect("write");
    std::os::unix::fs::symlink(&outside, src.join("zz-escape")).expect("symlink");
    let dest = work.path().join("local/dest");
    let out = aexec(
        User::Alice,
        &[
            "cp",
            "-n",
            &t.namespace,
            &format!("{}:{}", t.pod, s(&src)),
            s(&dest),
        ],
        None,
    )
    .await;
    // Refused, not followed: the link is not created, the copy goes on and says so.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let warning = err
        .lines()
        .find(|l| l.contains("refused symlink"))
        .unwrap_or_else(|| panic!("no refusal in:\n{err}"));
    assert!(
        warning.contains("zz-escape") && warning.contains("points outside"),
        "{warning}"
    );
    assert!(std::fs::symlink_metadata(dest.join("zz-escape")).is_err());
    assert_eq!(tree(&dest.join("bin")), tree(&src.join("bin")));
    // Nothing was written outside the destination, and the secret is as it was.
    let local: Vec<_> = std::fs::read_dir(work.path().join("local"))
        .expect("ls")
        .collect();
    assert_eq!(local.len(), 1, "only dest below local/");
    assert_eq!(std::fs::read(&outside).expect("secret"), b"secret\n");
}

#[tokio::test]
async fn cp_denied_by_policy() {
    let (t, _op) = target_with_operator().await;
    policy(
        &t,
        "cp",
        json!({"decision": "AutoApprove", "limits": {"allowCopy": "Download"}}),
    )
    .await;
    let work = tempfile::tempdir().expect("tmp");
    let f = work.path().join("f.txt");
    std::fs::write(&f, b"x\n").expect("write");
    let ns = t.namespace.as_str();
    let target = work.path().join("pod-side-f.txt");
    let out = aexec(
        User::Alice,
        &["cp", "-n", ns, s(&f), &format!("{}:{}", t.pod, s(&target))],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("does not allow copying files into the pod"),
        "{err}"
    );
    assert!(err.contains("limits.allowCopy"), "{err}");
    assert!(
        !target.exists(),
        "the upload was refused, yet the file is there"
    );
    // The same policy lets a download through.
    let back = work.path().join("back.txt");
    let ok = aexec(
        User::Alice,
        &["cp", "-n", ns, &format!("{}:{}", t.pod, s(&f)), s(&back)],
        None,
    )
    .await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));

    // A policy without allowCopy allows no copies, even when it approves every command.
    let (t2, _op2) = target_with_operator().await;
    policy(&t2, "exec-only", json!({"decision": "AutoApprove"})).await;
    let out = aexec(
        User::Alice,
        &[
            "cp",
            "-n",
            &t2.namespace,
            &format!("{}:{}", t2.pod, s(&f)),
            s(&work.path().join("no")),
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("allows no copies"),
        "{}",
        text(&out.stderr)
    );

    // A session that claims to be a copy but runs something else is denied by the operator,
    // whatever the policy (here one that allows copies).
    let admin = env().client(User::Alice).await.expect("alice");
    let me = aexec_crds::UserRef {
        username: "alice".into(),
        groups: vec!["dev".into(), "system:authenticated".into()],
    };
    let forged: aexec_crds::ExecSession = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
        "metadata": {"name": "forged"},
        "spec": {"pod": t.pod, "command": ["sh", "-c", "cat /etc/hostname"],
                 "requester": me, "copy": {"direction": "Download", "path": "/etc/hostname"}}
    }))
    .expect("session");
    kube::Api::<aexec_crds::ExecSession>::namespaced(admin, ns)
        .create(&Default::default(), &forged)
        .await
        .expect("created");
    let denied = crate::common::wait_phase(&t, "forged", aexec_crds::Phase::Denied, 30).await;
    let msg = denied.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("a copy's command must be the tar"), "{msg}");
}

/// The /proc directory of the process with `arg` among its arguments.
fn proc_with_arg(arg: &str) -> Option<PathBuf> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        e.file_name().to_str()?.parse::<u32>().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        cmdline
            .split(|&b| b == 0)
            .any(|a| a == arg.as_bytes())
            .then(|| e.path())
    })
}

/// A process's peak RSS so far (`VmHWM`, bytes), `None` once it has exited.
fn high_water_mark(proc: &Path) -> Option<u64> {
    let status = std::fs::read_to_string(proc.join("status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

#[tokio::test]
async fn cp_large_flat_memory() {
    use std::time::{Duration, Instant};
    // Exclusive: the operator's memory is measured while only this test uses it.
    let (t, _op) = crate::common::target_with_operator_exclusive().await;
    policy(&t, "cp", copies(&t)).await;
    let work = tempfile::tempdir().expect("tmp");
    let big = work.path().join("pod-side/big.img");
    std::fs::create_dir_all(big.parent().expect("dir")).expect("mkdir");
    const SIZE: u64 = 1 << 30;
    const BLOCK: u64 = 64 << 10;
    // Mostly holes on the pod's side, with each 64 KiB block's number at its start: a chunk
    // lost, repeated or reordered on the way shows.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&big).expect("create");
        f.set_len(SIZE).expect("size");
        for block in 0..SIZE / BLOCK {
            f.seek(SeekFrom::Start(block * BLOCK)).expect("seek");
            f.write_all(&block.to_le_bytes()).expect("write");
        }
    }
    let dest = work.path().join("got.img");
    let operator = PathBuf::from(format!(
        "/proc/{}",
        env().operator_pid().await.expect("operator")
    ));
    let mut cmd = tokio::process::Command::new(crate::common::plugin_bin());
    cmd.arg("--kubeconfig")
        .arg(env().kubeconfig(User::Alice))
        .args([
            "cp",
            "-n",
            &t.namespace,
            &format!("{}:{}", t.pod, s(&big)),
            s(&dest),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // One retry, only when the operator's own recording shows the tar stream already cut short
    // as it reached the operator: bytes lost upstream of aexec, between the node's exec and the
    // API server (docs/plugin.md, "Copying files"), which the plugin must still report.
    let mut attempt = 0;
    let (took, plugin_peak, op_before, op_peak) = loop {
        attempt += 1;
        let _ = std::fs::remove_file(&dest);
        let started = Instant::now();
        let ((out, plugin_peak), op_before, op_peak) =
            crate::common::with_peak_rss(&operator, async {
                let child = cmd.spawn().expect("plugin starts");
                // Found by its command line: the test may run in a PID namespace of its own under the
                // machine's /proc, where the child's PID is not its /proc entry.
                let deadline = Instant::now() + Duration::from_secs(30);
                let proc = loop {
                    if let Some(p) = proc_with_arg(s(&dest)) {
                        break p;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the plugin's process was not seen in 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let sampler = std::thread::spawn({
                    let stop = stop.clone();
                    move || {
                        // The kernel's own high-water mark (VmHWM), read until the process is gone.
                        let mut peak = 0;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            match high_water_mark(&proc) {
                                Some(hwm) => peak = peak.max(hwm),
                                None => break,
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        peak
                    }
                });
                let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
                    .await
                    .expect("the copy ends within 10 minutes")
                    .expect("plugin runs");
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                (out, sampler.join().expect("sampler"))
            })
            .await;
        let took = started.elapsed();
        if out.status.code() != Some(0)
            || std::fs::metadata(&dest).map(|m| m.len()).ok() != Some(SIZE)
        {
            // Where were bytes lost? The operator's recording lists the tar stream as it passed
            // (its size, and "cut short" if it ended inside an entry): a short recording puts the
            // loss upstream of the operator, a whole one between the operator and the plugin.
            let stderr = text(&out.stderr);
            let name = session_name(&stderr);
            let _ = wait_record(&t, &name).await;
            let d = aexec(User::Carol, &["describe", &name, "-n", &t.namespace], None).await;
            let recorded = text(&d.stdout);
            let upstream = recorded.contains("the tar stream is cut short");
            if attempt == 1 && upstream && out.status.code() != Some(0) {
                eprintln!(
                    "the copy was cut short before the operator (the plugin said so: {stderr}); \
                 the recording says:\n{recorded}\ncopying again"
                );
                continue;
            }
            panic!(
                "the copy did not arrive whole (exit {:?}, {:?} bytes written, attempt {attempt}): \
             {stderr}\nthe recording says:\n{recorded}{}",
                out.status.code(),
                std::fs::metadata(&dest).map(|m| m.len()).ok(),
                text(&d.stderr)
            );
        }
        break (took, plugin_peak, op_before, op_peak);
    };
    let grown = op_peak.saturating_sub(op_before);
    eprintln!(
        "1 GiB copied out in {:.1}s ({:.0} MiB/s): plugin peak RSS {} KiB, operator grew {} KiB (from {} KiB)",
        took.as_secs_f64(),
        1024.0 / took.as_secs_f64(),
        plugin_peak >> 10,
        grown >> 10,
        op_before >> 10
    );
    // Flat: a copy's bytes stream through bounded buffers on both sides.
    assert!(
        plugin_peak < 48 << 20,
        "the plugin peaked at {plugin_peak} bytes"
    );
    assert!(grown < 32 << 20, "the operator grew by {grown} bytes");
    // Every byte arrived.
    let mut f = std::fs::File::open(&dest).expect("copied");
    assert_eq!(f.metadata().expect("meta").len(), SIZE);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        use std::io::Read;
        let k = f.read(&mut buf).expect("read");
        if k == 0 {
            break;
        }
        for (i, b) in buf[..k].iter().enumerate() {
            let at = n + i as u64;
            let within = at % BLOCK;
            let want = if within < 8 {
                (at / BLOCK).to_le_bytes()[within as usize]
            } else {
                0
            };
            assert_eq!(*b, want, "byte {at} differs");
        }
        n += k as u64;
    }
    assert_eq!(n, SIZE);
}
