//! The plugin, as people use it: the real `kubectl-aexec` binary (and the real kubectl and
//! krew) against the local control plane and the operator.

use std::{
    path::Path,
    process::{Output, Stdio},
    time::Duration,
};

use aexec_crds::{ExecSession, Phase};
use aexec_testenv::{Target, User};
use kube::Api;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::common::{
    aexec, env, kubectl, output, plugin_bin, policy, tamper, target_with_operator, uploaded,
    wait_phase,
};
use crate::pty::Pty;

async fn run(cmd: tokio::process::Command, stdin: Option<&[u8]>) -> Output {
    output(cmd, stdin, "the command").await
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A target namespace with the operator running and a policy for it.
async fn setup(spec: serde_json::Value) -> (Target, tokio::sync::RwLockReadGuard<'static, ()>) {
    let (t, guard) = target_with_operator().await;
    policy(&t, "plugin", spec).await;
    (t, guard)
}

fn auto() -> serde_json::Value {
    json!({"decision": "AutoApprove"})
}

pub(crate) fn sre_approval() -> serde_json::Value {
    json!({"decision": "RequireApproval", "approval": {"required": 1, "groups": ["sre"]}})
}

/// The only session in the target's namespace.
pub(crate) async fn only_session(t: &Target) -> ExecSession {
    let admin = env().client(User::Admin).await.expect("admin");
    let mut l = Api::<ExecSession>::namespaced(admin, &t.namespace)
        .list(&Default::default())
        .await
        .expect("list")
        .items;
    assert_eq!(l.len(), 1, "one session expected");
    l.remove(0)
}

#[tokio::test]
async fn plugin_exit_code_matches_kubectl_exec() {
    let (t, _op) = setup(auto()).await;
    for code in [0, 1, 3, 42] {
        let script = format!("echo out-{code}; echo err-{code} >&2; exit {code}");
        let args = ["-n", &t.namespace, &t.pod, "--", "sh", "-c", &script];
        let mine = aexec(User::Alice, &args, None).await;
        let mut kargs = vec!["exec"];
        kargs.extend(args);
        let plain = kubectl(User::Admin, &kargs, None).await;
        assert_eq!(mine.status.code(), plain.status.code(), "exit {code}");
        assert_eq!(mine.status.code(), Some(code));
        assert_eq!(text(&mine.stdout), text(&plain.stdout));
        let (mine_err, plain_err) = (text(&mine.stderr), text(&plain.stderr));
        assert!(mine_err.contains(&format!("err-{code}\n")), "{mine_err}");
        // kubectl's own last line for a non-zero exit, word for word.
        let last = |s: &str| s.lines().last().unwrap_or_default().to_owned();
        if code != 0 {
            assert_eq!(last(&mine_err), last(&plain_err));
            assert_eq!(
                last(&mine_err),
                format!("command terminated with exit code {code}")
            );
        }
    }
    // Piped stdin without -t: the bytes arrive, end of input is delivered, the code comes back.
    let input = b"line one\nline two\n";
    let out = aexec(
        User::Alice,
        &[
            "-n",
            &t.namespace,
            "-i",
            &t.pod,
            "--",
            "sh",
            "-c",
            "cat; exit 5",
        ],
        Some(input),
    )
    .await;
    assert_eq!(out.stdout, input);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}

/// alice's request running in the background.
pub(crate) struct Waiting {
    child: tokio::process::Child,
    /// The session's name, from the approver line the plugin printed.
    pub(crate) name: String,
    /// stderr up to the approver line.
    pub(crate) progress: String,
    rest: tokio::task::JoinHandle<String>,
}

/// Starts alice's request and reads its progress until it prints the line for approvers.
pub(crate) async fn alice_waits(t: &Target, cmd: &[&str]) -> Waiting {
    let mut c = tokio::process::Command::new(plugin_bin());
    c.arg("--kubeconfig")
        .arg(env().kubeconfig(User::Alice))
        .args(["-n", &t.namespace, "-r", "INC-7", &t.pod, "--"])
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().expect("plugin starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut progress = String::new();
    let name = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = lines.next_line().await.expect("read stderr") {
            progress.push_str(&l);
            progress.push('\n');
            if let Some(rest) = l.split("kubectl aexec approve ").nth(1) {
                return rest.split_whitespace().next().expect("name").to_owned();
            }
        }
        panic!("no approver line in: {progress}");
    })
    .await
    .expect("the approver line within 20s");
    let rest = tokio::spawn(async move {
        let mut more = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            more.push_str(&l);
            more.push('\n');
        }
        more
    });
    Waiting {
        child,
        name,
        progress,
        rest,
    }
}

/// Waits for the background plugin: (exit code, stdout, all of stderr).
pub(crate) async fn finish(w: Waiting) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), w.child.wait_with_output())
        .await
        .expect("the plugin finished within 30s")
        .expect("wait");
    let rest = w.rest.await.expect("stderr reader");
    (
        out.status.code(),
        text(&out.stdout),
        format!("{}{rest}", w.progress),
    )
}

#[tokio::test]
async fn plugin_waits_then_attaches() {
    let (t, _op) = setup(sre_approval()).await;
    let w = alice_waits(&t, &["sh", "-c", "echo ran-after-approval"]).await;
    assert!(
        w.progress
            .contains("0 of 1 approvals; may approve: group sre"),
        "{}",
        w.progress
    );
    assert!(
        w.progress.contains(&format!(
            "send this to an approver:  kubectl aexec approve {} -n {}",
            w.name, t.namespace
        )),
        "{}",
        w.progress
    );
    assert_eq!(
        wait_phase(&t, &w.name, Phase::Pending, 15)
            .await
            .spec
            .reason
            .as_deref(),
        Some("INC-7")
    );
    // alice cannot approve her own request; bob can, with the plugin.
    let own = aexec(User::Alice, &["approve", &w.name, "-n", &t.namespace], None).await;
    assert_eq!(own.status.code(), Some(1));
    let bob = aexec(
        User::Bob,
        &["approve", &w.name, "-n", &t.namespace, "-m", "go ahead"],
        None,
    )
    .await;
    assert_eq!(bob.status.code(), Some(0), "{}", text(&bob.stderr));
    assert!(text(&bob.stdout).contains(&format!(
        "execsession.aexec.dev/{} approved (1/1 approvals)",
        w.name
    )));
    let (code, stdout, stderr) = finish(w).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "ran-after-approval\n");
    assert!(
        stderr.contains("approved by bob (1 of 1): go ahead"),
        "{stderr}"
    );
}

#[tokio::test]
async fn plugin_denied_shows_reason() {
    let (t, _op) = setup(sre_approval()).await;
    let w = alice_waits(&t, &["id"]).await;
    let bob = aexec(
        User::Bob,
        &[
            "deny",
            &w.name,
            "-n",
            &t.namespace,
            "-m",
            "not during the freeze",
        ],
        None,
    )
    .await;
    assert_eq!(bob.status.code(), Some(0), "{}", text(&bob.stderr));
    assert!(text(&bob.stdout).contains("denied"));
    let name = w.name.clone();
    let (code, stdout, stderr) = finish(w).await;
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty());
    assert!(
        stderr.ends_with(&format!(
            "error: session {name} was denied by bob: not during the freeze\n"
        )),
        "{stderr}"
    );
    // A policy that denies outright says which policy and why.
    let (t, _op2) =
        setup(json!({"decision": "Deny", "message": "no exec in this namespace"})).await;
    let out = aexec(User::Alice, &["-n", &t.namespace, &t.pod, "--", "id"], None).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("was denied by policy {}-plugin", t.namespace)),
        "{err}"
    );
    assert!(err.contains("no exec in this namespace"), "{err}");
}

#[tokio::test]
async fn plugin_ctrl_c_withdraws_request() {
    let (t, _op) = setup(sre_approval()).await;
    let w = alice_waits(&t, &["id"]).await;
    let pid = w.child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let name = w.name.clone();
    let (code, _, stderr) = finish(w).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("interrupted: request {name} withdrawn")),
        "{stderr}"
    );
    // Withdrawn, not deleted: the request stays with its final phase (and gets its record).
    let s = wait_phase(&t, &name, Phase::Withdrawn, 15).await;
    assert_eq!(
        s.status
            .and_then(|st| st.withdrawal)
            .map(|w| w.user.username),
        Some("alice".to_owned())
    );
}

#[tokio::test]
async fn plugin_list_describe_replay_export_verify() {
    let (t, _op) = setup(auto()).await;
    let ns = t.namespace.as_str();
    let run = aexec(
        User::Alice,
        &[
            "-n",
            ns,
            &t.pod,
            "-r",
            "INC-9",
            "--",
            "sh",
            "-c",
            "echo replay-me; sleep 0.3; echo oops >&2; exit 2",
        ],
        None,
    )
    .await;
    assert_eq!(run.status.code(), Some(2));
    let s = only_session(&t).await;
    let name = s.metadata.name.clone().expect("name");
    let s = wait_phase(&t, &name, Phase::Failed, 15).await;
    assert!(
        s.status
            .and_then(|s| s.recording)
            .and_then(|r| r.sha256)
            .is_some()
    );

    // carol, the auditor, reviews.
    let list = aexec(User::Carol, &["list", "-n", ns], None).await;
    let table = text(&list.stdout);
    assert!(table.starts_with("NAME "), "{table}");
    let row = table.lines().nth(1).expect("a row");
    for cell in [name.as_str(), "web", "alice", "Failed"] {
        assert!(row.contains(cell), "{row}");
    }
    let wide = aexec(
        User::Carol,
        &["list", "-A", "--phase", "Failed", "-o", "wide"],
        None,
    )
    .await;
    let wide = text(&wide.stdout);
    assert!(
        wide.lines()
            .any(|l| l.starts_with(ns) && l.contains("INC-9")),
        "{wide}"
    );
    let json_out = aexec(User::Carol, &["list", "-n", ns, "-o", "json"], None).await;
    let v: serde_json::Value = serde_json::from_slice(&json_out.stdout).expect("json list");
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"][0]["metadata"]["name"], name.as_str());
    let none = aexec(User::Carol, &["list", "-n", ns, "--phase", "Pending"], None).await;
    assert!(text(&none.stderr).contains("No resources found"));

    let d = text(
        &aexec(User::Carol, &["describe", &name, "-n", ns], None)
            .await
            .stdout,
    );
    for want in [
        "Requester:    alice (groups: dev, system:authenticated)",
        "Exit Code:    2",
        "Reason:       INC-9",
        "SHA-256:",
        "attached",
    ] {
        assert!(d.contains(want), "{want:?} missing in\n{d}");
    }

    let replay = aexec(
        User::Carol,
        &["replay", &name, "-n", ns, "--speed", "4"],
        None,
    )
    .await;
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stderr));
    assert_eq!(text(&replay.stdout), "replay-me\noops\n");

    let dir = tempfile::tempdir().expect("tempdir");
    let v3 = dir.path().join("s.cast");
    let out = aexec(
        User::Carol,
        &["export", &name, "-n", ns, "-o", v3.to_str().expect("path")],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rec =
        aexec_recording::cast::CastReader::parse(&std::fs::read(&v3).expect("export")).expect("v3");
    assert_eq!(rec.header.aexec.requester.username, "alice");
    let v2 = aexec(
        User::Carol,
        &["export", &name, "-n", ns, "--format", "v2"],
        None,
    )
    .await;
    let v2 = text(&v2.stdout);
    let header: serde_json::Value =
        serde_json::from_str(v2.lines().next().expect("header")).expect("v2 header");
    assert_eq!(header["version"], 2, "{v2}");
    assert!(v2.contains(r#""o", "oops\n"]"#), "{v2}");
    let txt = aexec(
        User::Carol,
        &["export", &name, "-n", ns, "--format", "text"],
        None,
    )
    .await;
    assert!(
        text(&txt.stdout).contains("[stderr] oops"),
        "{}",
        text(&txt.stdout)
    );

    let ok = aexec(User::Carol, &["verify", &name, "-n", ns], None).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    // Against the session's status, and the signed record once it is written.
    assert!(
        text(&ok.stdout).contains("matches the session's status"),
        "{}",
        text(&ok.stdout)
    );

    // Others may not read recordings: the refusal names the role to ask for.
    let alice = aexec(User::Alice, &["replay", &name, "-n", ns], None).await;
    assert_eq!(alice.status.code(), Some(1));
    assert!(
        text(&alice.stderr).contains("aexec-auditor"),
        "{}",
        text(&alice.stderr)
    );
    let mallory = aexec(User::Mallory, &["list", "-n", ns], None).await;
    assert_eq!(mallory.status.code(), Some(1));
    assert!(
        text(&mallory.stderr).contains("role"),
        "{}",
        text(&mallory.stderr)
    );

    // One changed byte in storage: verify fails, naming the segment.
    let uid = only_session(&t).await.metadata.uid.expect("uid");
    // Once the operator has uploaded it, change the segment stored in MinIO.
    let prefix = uploaded(&t, &name, &uid).await;
    // Segment 0 is the header; the output is in segment 1.
    tamper(&format!("{prefix}/seg-000001.cast"), b"replay-me").await;
    let bad = aexec(User::Carol, &["verify", &name, "-n", ns], None).await;
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(
        err.contains("FAILED") && err.contains("seg-000001.cast") && err.contains("was altered"),
        "{err}"
    );
}

#[tokio::test]
async fn plugin_interactive_shell() {
    let (t, _op) = setup(auto()).await;
    let kc = env().kubeconfig(User::Alice);
    // The plugin runs under a shell in the pty; after it exits the shell prints its exit code
    // and the terminal's settings, which must be back to cooked mode.
    let script = format!(
        "{} --kubeconfig {} -n {} -it -r pty-test {} -- sh; echo \"plugin-exit=$?\"; stty -a; sleep 1",
        plugin_bin().display(),
        kc.display(),
        t.namespace,
        t.pod
    );
    let mut pty = Pty::spawn("sh", &["-c", &script], 80, 24);
    // The remote shell sees our terminal's size, then the new size after a resize.
    pty.expect("24 80", Some("stty size\r"), 30).await;
    pty.master
        .resize(portable_pty::PtySize {
            rows: 30,
            cols: 100,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("resize");
    pty.expect("30 100", Some("stty size\r"), 20).await;
    pty.type_text("echo typed-$((6*7))\r");
    pty.expect("typed-42", None, 10).await;
    pty.type_text("exit 7\r");
    let pos = pty.expect("plugin-exit=7", None, 20).await;
    let after = pty.screen()[pos..].to_owned();
    // stty -a lists "-icanon" / "-echo" in raw mode; restored, they are on.
    assert!(
        after.contains(" icanon") && after.contains(" echo ") && !after.contains("-icanon"),
        "terminal not restored: {after}"
    );
    let _ = tokio::task::spawn_blocking(move || pty.child.wait()).await;

    let s = only_session(&t).await;
    assert!(s.spec.tty && s.spec.stdin);
    let name = s.metadata.name.clone().expect("name");
    let s = wait_phase(&t, &name, Phase::Failed, 15).await;
    assert_eq!(s.status.and_then(|s| s.exit_code), Some(7));
    // The recording replays what happened on the terminal.
    let replay = aexec(
        User::Carol,
        &["replay", &name, "-n", &t.namespace, "--idle-limit", "0.1"],
        None,
    )
    .await;
    let out = text(&replay.stdout);
    assert!(out.contains("typed-42") && out.contains("30 100"), "{out}");
}

#[tokio::test]
async fn plugin_runs_as_kubectl_plugin() {
    let (t, _op) = setup(auto()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    let built = plugin_bin();
    for b in ["kubectl-aexec", "kubectl_complete-aexec"] {
        std::os::unix::fs::symlink(built.with_file_name(b), bin.join(b)).expect("link");
    }
    // $KUBECONFIG is a list whose first file's current context points nowhere: only
    // --context alice (from the second file) reaches the cluster.
    let broken = dir.path().join("first.kubeconfig");
    std::fs::write(
        &broken,
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\nclusters:\n- name: nowhere\n  cluster: {server: 'https://127.0.0.1:1'}\n\
         users:\n- name: nobody\n  user: {token: x}\ncontexts:\n- name: nowhere\n  context: {cluster: nowhere, user: nobody}\n",
    )
    .expect("kubeconfig");
    let kubeconfig =
        std::env::join_paths([broken.as_path(), env().kubeconfig(User::Alice).as_path()])
            .expect("list");
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let kubectl = |args: &[&str]| {
        let mut c = tokio::process::Command::new(&env().upstream.kubectl);
        c.args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", &kubeconfig);
        c
    };
    let list = run(kubectl(&["plugin", "list"]), None).await;
    assert!(
        text(&list.stdout).contains(&bin.join("kubectl-aexec").display().to_string()),
        "{}",
        text(&list.stdout)
    );
    let out = run(
        kubectl(&[
            "aexec",
            "--context",
            "alice",
            "-n",
            &t.namespace,
            &t.pod,
            "--",
            "echo",
            "via-kubectl",
        ]),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "via-kubectl\n");
    let s = only_session(&t).await;
    assert_eq!(s.spec.requester.username, "alice");
    // Without --context the first file's current context is used, and fails clearly.
    let nowhere = run(
        kubectl(&["aexec", "-n", &t.namespace, &t.pod, "--", "id"]),
        None,
    )
    .await;
    assert_eq!(nowhere.status.code(), Some(1));
    assert!(
        text(&nowhere.stderr).starts_with("error: "),
        "{}",
        text(&nowhere.stderr)
    );
    // kubectl's own completion asks the helper: session names and namespaces come back.
    let name = s.metadata.name.expect("name");
    let comp = run(
        kubectl(&[
            "__complete",
            "aexec",
            "--context",
            "alice",
            "-n",
            &t.namespace,
            "describe",
            "",
        ]),
        None,
    )
    .await;
    let comp = text(&comp.stdout);
    assert!(comp.lines().any(|l| l == name), "{comp}");
    assert!(comp.lines().any(|l| l == ":4"), "{comp}");
    let comp = run(
        kubectl(&[
            "__complete",
            "aexec",
            "--context",
            "alice",
            "-n",
            &t.namespace,
            "w",
        ]),
        None,
    )
    .await;
    assert!(
        text(&comp.stdout).lines().any(|l| l == "web"),
        "{}",
        text(&comp.stdout)
    );
}

#[tokio::test]
async fn krew_installs_plugin_offline() {
    let krew = env().upstream.krew.clone();
    assert!(
        krew.exists(),
        "krew is not built ({}): bash tests/upstream/build.sh krew",
        krew.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let dist = dir.path().join("dist");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = plugin_bin();
    let pkg = std::process::Command::new("bash")
        .arg(repo.join("plugin/package.sh"))
        .arg("--binary-dir")
        .arg(built.parent().expect("dir"))
        .arg("--out")
        .arg(&dist)
        .output()
        .expect("package.sh");
    assert!(pkg.status.success(), "{}", text(&pkg.stderr));
    let manifest = std::fs::read_to_string(dist.join("aexec.yaml")).expect("manifest");
    let archive = std::fs::read_dir(&dist)
        .expect("dist")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("archive");
    let sha = std::process::Command::new("sha256sum")
        .arg(&archive)
        .output()
        .expect("sha256sum");
    let sha = text(&sha.stdout)
        .split_whitespace()
        .next()
        .expect("sha")
        .to_owned();
    assert!(
        manifest.contains(&format!("sha256: \"{sha}\"")),
        "{manifest}"
    );

    // krew as kubectl runs it (`kubectl krew`), into an empty KREW_ROOT, with no network.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    std::os::unix::fs::symlink(&krew, bin.join("kubectl-krew")).expect("link krew");
    let root = dir.path().join("krew");
    let path = std::env::join_paths([
        bin.clone(),
        root.join("bin"),
        "/usr/bin".into(),
        "/bin".into(),
    ])
    .expect("PATH");
    let kubectl = |args: &[&str]| {
        let mut c = tokio::process::Command::new(&env().upstream.kubectl);
        c.args(args)
            .env("PATH", &path)
            .env("KREW_ROOT", &root)
            .env("KREW_NO_UPGRADE_CHECK", "1")
            .env("KUBECONFIG", env().kubeconfig(User::Alice));
        c
    };
    let install = run(
        kubectl(&[
            "krew",
            "install",
            &format!("--manifest={}", dist.join("aexec.yaml").display()),
            &format!("--archive={}", archive.display()),
        ]),
        None,
    )
    .await;
    assert!(
        install.status.success(),
        "krew install failed: {}{}",
        text(&install.stdout),
        text(&install.stderr)
    );
    assert!(root.join("bin/kubectl-aexec").exists());
    let help = run(kubectl(&["aexec", "--help"]), None).await;
    assert_eq!(help.status.code(), Some(0), "{}", text(&help.stderr));
    let help = text(&help.stdout);
    assert!(
        help.contains("Usage: kubectl aexec") && help.contains("kubectl aexec approve"),
        "{help}"
    );
    // kubectl finds it where krew linked it (krew's own `list` needs the index, which an
    // offline install never fetches).
    let listed = run(kubectl(&["plugin", "list"]), None).await;
    let want = root.join("bin/kubectl-aexec").display().to_string();
    assert!(
        text(&listed.stdout).contains(&want),
        "{}",
        text(&listed.stdout)
    );
}

#[tokio::test]
async fn plugin_bad_input_is_one_clear_line() {
    let (t, _op) = setup(auto()).await;
    let ns = t.namespace.as_str();
    let one_line = |o: &Output, want: &str| {
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "one line expected: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{want:?} not in {err}"
        );
        assert!(!err.contains("panicked"));
    };
    one_line(
        &aexec(User::Alice, &["-n", ns, &t.pod, "ls", "/"], None).await,
        "put `--` before the command",
    );
    one_line(
        &aexec(User::Alice, &["-n", ns, "nope", "--", "id"], None).await,
        "pod \"nope\" not found",
    );
    one_line(
        &aexec(
            User::Alice,
            &["-n", ns, &t.pod, "-c", "db", "--", "id"],
            None,
        )
        .await,
        "container \"db\" not found in pod web: its containers are app; pick one with -c",
    );
    // cp's arguments are checked before any kubeconfig is read, like kubectl cp's.
    let mut cmd = tokio::process::Command::new(plugin_bin());
    cmd.args(["cp", "./a", "./b"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    one_line(
        &run(cmd, None).await,
        "both SRC and DEST are local paths, and one of them must be in a pod",
    );
    one_line(
        &aexec(User::Alice, &["cp", "-n", ns, ":/x", "./y"], None).await,
        "[[NAMESPACE/]POD:]PATH",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.kubeconfig");
    std::fs::write(&broken, "apiVersion: v1\nclusters: {{{ not yaml").expect("write");
    let mut cmd = tokio::process::Command::new(plugin_bin());
    cmd.arg("--kubeconfig").arg(&broken).args(["list"]);
    one_line(&run(cmd, None).await, "cannot load kubeconfig");
    let mut cmd = tokio::process::Command::new(plugin_bin());
    cmd.args(["-n", ns, &t.pod, "--", "id"])
        .env("KUBECONFIG", dir.path().join("missing"));
    one_line(
        &run(cmd, None).await,
        "cannot load the kubeconfig from $KUBECONFIG",
    );
    // No session was created by any of these.
    let admin = env().client(User::Admin).await.expect("admin");
    let l = Api::<ExecSession>::namespaced(admin, ns)
        .list(&Default::default())
        .await
        .expect("list");
    assert!(l.items.is_empty());

    // -t with a stdin that is not a terminal: kubectl's warning, then it runs without a tty.
    let out = aexec(
        User::Alice,
        &[
            "-n",
            ns,
            "-it",
            &t.pod,
            "--",
            "sh",
            "-c",
            "cat; tty || true",
        ],
        Some(b"piped\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with(
            "Unable to use a TTY - input is not a terminal or the right kind of file\n"
        )
    );
    assert_eq!(text(&out.stdout), "piped\nnot a tty\n");
    assert!(!only_session(&t).await.spec.tty);
}

#[tokio::test]
async fn plugin_no_wait_attach_terminate_and_wait_timeout() {
    let (t, _op) = setup(sre_approval()).await;
    let ns = t.namespace.as_str();
    // --wait gives up, and says the request stays open.
    let out = aexec(
        User::Alice,
        &["-n", ns, "--wait", "1s", &t.pod, "--", "id"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("was not approved within 1s; it stays open"),
        "{err}"
    );
    let waited = only_session(&t).await;
    assert_eq!(waited.phase(), Phase::Pending);
    let admin = env().client(User::Admin).await.expect("admin");
    Api::<ExecSession>::namespaced(admin, ns)
        .delete(
            waited.metadata.name.as_deref().expect("name"),
            &Default::default(),
        )
        .await
        .expect("delete");

    // --no-wait prints the name; bob approves; alice attaches later; bob ends it.
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
            "echo started; sleep 30",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = text(&out.stdout).trim().to_owned();
    assert!(name.starts_with("exec-"), "{name}");
    // Once the operator has decided that it waits for approval (an approval before that is
    // refused: "not evaluated yet; try again in a moment").
    wait_phase(&t, &name, Phase::Pending, 15).await;
    let bob = aexec(User::Bob, &["approve", &name, "-n", ns], None).await;
    assert_eq!(bob.status.code(), Some(0), "{}", text(&bob.stderr));
    let mut c = tokio::process::Command::new(plugin_bin());
    c.arg("--kubeconfig")
        .arg(env().kubeconfig(User::Alice))
        .args(["attach", &name, "-n", ns])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut attached = c.spawn().expect("attach starts");
    // Terminate only once the command's first line has reached alice: Active alone does not
    // mean the pod's output has crossed yet.
    let mut stdout = tokio::io::BufReader::new(attached.stdout.take().expect("stdout"));
    let mut first = String::new();
    tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut first))
        .await
        .expect("the command's output reaches alice")
        .expect("read stdout");
    assert_eq!(first, "started\n");
    let bob = aexec(User::Bob, &["terminate", &name, "-n", ns], None).await;
    assert_eq!(bob.status.code(), Some(0), "{}", text(&bob.stderr));
    assert!(text(&bob.stdout).contains("terminated"));
    let out = tokio::time::timeout(Duration::from_secs(20), attached.wait_with_output())
        .await
        .expect("attach ends after terminate")
        .expect("wait");
    assert_ne!(out.status.code(), Some(0));
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut rest)
        .await
        .expect("read stdout");
    assert_eq!(rest, "", "nothing after the first line");
    assert!(
        text(&out.stderr).contains("terminated by bob"),
        "{}",
        text(&out.stderr)
    );
    let s = wait_phase(&t, &name, Phase::Terminated, 15).await;
    assert_eq!(
        s.status.and_then(|s| s.message).as_deref(),
        Some("terminated by bob")
    );
    // A session is attached once: a second attach says why not.
    let again = aexec(User::Alice, &["attach", &name, "-n", ns], None).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already over (Terminated"),
        "{}",
        text(&again.stderr)
    );
}

#[tokio::test]
async fn search_finds_typed_and_shown() {
    let (t, _op) = setup(auto()).await;
    let ns = t.namespace.as_str();
    // What alice types, and a screen written with cursor moves: "secret plan" is never in
    // the bytes as such.
    let script = b"echo hello world\nprintf '\\033[2J\\033[3;5Hsecret\\033[3;12Hplan\\n'\nexit 0\n";
    let ran = aexec(
        User::Alice,
        &["-n", ns, "-i", &t.pod, "--", "sh"],
        Some(script),
    )
    .await;
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let name = only_session(&t).await.metadata.name.expect("name");
    crate::common::wait_record(&t, &name).await;

    let found = aexec(User::Carol, &["search", "-n", ns, "hello world"], None).await;
    assert_eq!(found.status.code(), Some(0), "{}", text(&found.stderr));
    let out = text(&found.stdout);
    assert!(out.contains(&format!("{ns}/{name}")), "{out}");
    assert!(out.contains("input   echo hello world"), "{out}");
    assert!(out.contains("output  hello world"), "{out}");
    assert!(
        out.contains(&format!("kubectl aexec replay {name} -n {ns} --from ")),
        "{out}"
    );
    assert!(
        text(&found.stderr).contains("2 matches in 1 session"),
        "{}",
        text(&found.stderr)
    );
    // Typed only.
    let typed = text(
        &aexec(User::Carol, &["search", "-n", ns, "--input", "hello"], None)
            .await
            .stdout,
    );
    assert!(
        typed.contains("input") && !typed.contains("output"),
        "{typed}"
    );
    // What the terminal showed, through the emulator.
    let screen = text(
        &aexec(
            User::Carol,
            &["search", "-n", ns, "--output", "secret plan"],
            None,
        )
        .await
        .stdout,
    );
    assert!(
        screen.contains("output  ") && screen.contains("secret plan"),
        "{screen}"
    );
    // The text export goes through a terminal emulator too: the screen the printf drew, with
    // "secret plan" on one line, after what the clear took away, and the typed lines.
    let txt = aexec(
        User::Carol,
        &["export", &name, "-n", ns, "--format", "text"],
        None,
    )
    .await;
    assert_eq!(txt.status.code(), Some(0), "{}", text(&txt.stderr));
    let transcript = text(&txt.stdout);
    let lines: Vec<&str> = transcript.lines().collect();
    let at = |want: &str| lines.iter().position(|l| l.trim_end() == want);
    let (typed, hello, plan) = (
        at("[stdin] echo hello world"),
        at("hello world"),
        at("    secret plan"),
    );
    assert!(
        typed.is_some() && hello > typed && plan > hello,
        "{transcript}"
    );
    assert!(!transcript.contains('\u{1b}'), "{transcript}");
    // Nothing for a word nobody typed or saw.
    let none = aexec(User::Carol, &["search", "-n", ns, "DROP TABLE"], None).await;
    assert_eq!(none.status.code(), Some(0));
    assert!(text(&none.stdout).is_empty());
    assert!(
        text(&none.stderr).contains("0 matches"),
        "{}",
        text(&none.stderr)
    );
    // The printed replay command works, from that point.
    let from = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("kubectl aexec replay {name} -n {ns} --from "))
        })
        .expect("a replay line")
        .to_owned();
    let replay = aexec(
        User::Carol,
        &["replay", &name, "-n", ns, "--from", &from],
        None,
    )
    .await;
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stderr));
    assert!(text(&replay.stdout).contains("hello world"));
    // A pattern that is not one says so.
    let bad = aexec(User::Carol, &["search", "-n", ns, "(unclosed"], None).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("not a regular expression"),
        "{}",
        text(&bad.stderr)
    );
}

#[tokio::test]
async fn search_refused_for_requester() {
    let (t, _op) = setup(auto()).await;
    let ns = t.namespace.as_str();
    let ran = aexec(User::Alice, &["-n", ns, &t.pod, "--", "echo", "mine"], None).await;
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let name = only_session(&t).await.metadata.name.expect("name");
    crate::common::wait_record(&t, &name).await;
    // Her own session's recording is still the auditors' to read: the API server says no.
    let refused = aexec(User::Alice, &["search", "-n", ns, "mine"], None).await;
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(err.contains("aexec-auditor"), "{err}");
    assert!(text(&refused.stdout).is_empty());
}

/// `kubectl aexec version`: the plugin's and the operator's version (from its discovery
/// document, which any user may read: mallory holds no aexec role); `--client` needs no
/// cluster; an unreachable cluster still prints the client's version, then says why, exit 1.
#[tokio::test]
async fn release_version_shows_both() {
    let (_t, _guard) = target_with_operator().await;
    let v = env!("CARGO_PKG_VERSION");
    for user in [User::Alice, User::Mallory] {
        let out = aexec(user, &["version"], None).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            format!("Client Version: v{v}\nOperator Version: v{v}\n")
        );
        assert!(
            !text(&out.stderr).contains("WARNING"),
            "same version, no warning: {}",
            text(&out.stderr)
        );
    }
    let out = aexec(User::Alice, &["version", "-o", "json"], None).await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["clientVersion"]["version"], format!("v{v}").as_str());
    assert_eq!(doc["operatorVersion"]["version"], format!("v{v}").as_str());

    // --client reads no kubeconfig at all.
    let out = run(
        {
            let mut c = tokio::process::Command::new(plugin_bin());
            c.args([
                "--kubeconfig",
                "/nonexistent/kubeconfig",
                "version",
                "--client",
            ]);
            c
        },
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("Client Version: v{v}\n"));

    // A cluster nobody answers for: the client's version, then the reason, exit 1.
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        ),
    )
    .expect("kubeconfig");
    let out = run(
        {
            let mut c = tokio::process::Command::new(plugin_bin());
            c.arg("--kubeconfig").arg(&kubeconfig).arg("version");
            c
        },
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), format!("Client Version: v{v}\n"));
    let err = text(&out.stderr);
    assert!(
        err.contains("reading the operator's version") && err.contains("cannot be reached"),
        "{err}"
    );
}
