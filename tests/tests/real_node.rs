//! On a real node: kubelet, containerd and runc run each command in a real container, and the
//! operator runs in the cluster from its image, installed with helm (two replicas). These tests
//! run through `aexec-testenv run --node real` (`./dev test` does, one at a time: some of them
//! kill, roll or restart what the others use).

#[allow(dead_code)]
#[path = "e2e/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "e2e/pty.rs"]
mod pty;

use std::{process::Output, time::Duration};

use aexec_crds::{ExecSession, Phase};
use aexec_operator::recording::cast::{CastReader, Event};
use aexec_testenv::{Target, User, chart};
use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{Api, api::ListParams};
use serde_json::json;
use tokio::io::AsyncReadExt;

use common::{aexec, env, kubectl, plugin_bin, policy};

/// A fresh namespace with a busybox pod (running as uid 1000) on the real node, and a policy
/// that approves alice's sessions there at once.
async fn target_auto(limits: serde_json::Value) -> Target {
    let env = env();
    assert_eq!(
        env.node,
        aexec_testenv::NodeKind::Real,
        "run through `aexec-testenv run --node real`"
    );
    let admin = env.client(User::Admin).await.expect("admin");
    let t = env
        .target(&admin)
        .await
        .expect("target pod on the real node");
    policy(
        &t,
        "auto",
        json!({"decision": "AutoApprove", "limits": limits}),
    )
    .await;
    t
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Where two byte strings first differ, for a failure message that fits on a screen.
/// `b` with every run of 64 hex digits (a container runtime's exec or container ID) replaced
/// by `<id>`.
fn without_ids(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let run = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if run == 64 {
            out.extend_from_slice(b"<id>");
            i += run;
        } else {
            out.extend_from_slice(&b[i..i + run.max(1)]);
            i += run.max(1);
        }
    }
    out
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let show = |s: &[u8]| text(&s[i.saturating_sub(20)..(i + 40).min(s.len())]);
    format!(
        "lengths {} and {}, first difference at byte {i}: {:?} vs {:?}",
        a.len(),
        b.len(),
        show(a),
        show(b)
    )
}

/// The session alice's plugin run created with reason `reason`.
async fn session_by_reason(t: &Target, reason: &str) -> ExecSession {
    let admin = env().client(User::Admin).await.expect("admin");
    let api: Api<ExecSession> = Api::namespaced(admin, &t.namespace);
    for _ in 0..100 {
        let found = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .find(|s| s.spec.reason.as_deref() == Some(reason));
        if let Some(s) = found {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no session with reason {reason:?} in {}", t.namespace)
}

async fn session(t: &Target, name: &str) -> ExecSession {
    let admin = env().client(User::Admin).await.expect("admin");
    Api::<ExecSession>::namespaced(admin, &t.namespace)
        .get(name)
        .await
        .expect("session")
}

/// Session `name` once it has ended, whichever way (within `secs`).
async fn ended(t: &Target, name: &str, secs: u64) -> ExecSession {
    let start = std::time::Instant::now();
    loop {
        let s = session(t, name).await;
        if matches!(
            s.phase(),
            Phase::Succeeded | Phase::Failed | Phase::Terminated
        ) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{name} did not end within {secs}s: {:#?}",
            s.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a recording holds, read by carol through the operator (which verifies its hash chain
/// on the way: a 409 if it was altered).
#[derive(Debug, Default)]
struct Recorded {
    out: Vec<u8>,
    err: Vec<u8>,
    input: Vec<u8>,
    exit: Option<i32>,
    resizes: Vec<(u16, u16)>,
    markers: Vec<String>,
    interrupted: bool,
}

async fn recorded(t: &Target, name: &str) -> Recorded {
    // Right after the end, the last upload and the manifest may still be on their way to the
    // store (seen under load in a cold CI run: NoSuchKey for manifest.json): read again for up
    // to 30 s. A recording that fails verification keeps failing, and the last error is shown.
    let start = std::time::Instant::now();
    let cast = loop {
        match common::recording_named(User::Carol, t, name, "v3").await {
            Ok(cast) => break cast,
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                eprintln!("the recording of {name} is not readable yet ({e}); reading again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the recording of {name} reads and verifies: {e}"),
        }
    };
    let rec = CastReader::parse(&cast).expect("valid asciicast v3");
    // Sealed as interrupted: the session's status says so, from the recording's manifest.
    let interrupted = session(t, name)
        .await
        .status
        .and_then(|s| s.recording)
        .is_some_and(|r| r.interrupted);
    let mut r = Recorded {
        interrupted,
        ..Default::default()
    };
    for (_, ev) in rec.events {
        match ev {
            Event::Output(b) => r.out.extend(b),
            Event::Error(b) => r.err.extend(b),
            Event::Input(b) => r.input.extend(b),
            Event::Exit(c) => r.exit = Some(c),
            Event::Resize { cols, rows } => r.resizes.push((cols, rows)),
            Event::Marker(m) => r.markers.push(m),
        }
    }
    r
}

/// One command run both ways.
struct Case {
    what: &'static str,
    argv: Vec<String>,
    stdin: Option<Vec<u8>>,
}

fn case(what: &'static str, argv: &[&str], stdin: Option<Vec<u8>>) -> Case {
    Case {
        what,
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        stdin,
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be reproduced.
fn pseudo_random(n: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(n);
    v
}

#[tokio::test]
async fn real_node_exec_matches_kubectl_exec() {
    let t = target_auto(json!({})).await;
    let ns = t.namespace.as_str();
    // 5 MB of random bytes, written once in the container, so both runs read the same bytes.
    let made = kubectl(
        User::Admin,
        &[
            "exec",
            "-n",
            ns,
            &t.pod,
            "--",
            "sh",
            "-c",
            "head -c 5000000 /dev/urandom > /home/app/random.bin",
        ],
        None,
    )
    .await;
    assert!(made.status.success(), "{}", text(&made.stderr));
    let cases = vec![
        case("exit 0", &["true"], None),
        case("exit 1", &["false"], None),
        case("exit 2", &["sh", "-c", "exit 2"], None),
        case("exit 42", &["sh", "-c", "echo forty-two; exit 42"], None),
        case("exit 255", &["sh", "-c", "exit 255"], None),
        case(
            "stdout and stderr apart",
            &[
                "sh",
                "-c",
                "echo to-stdout; echo to-stderr >&2; echo more-stdout; echo more-stderr >&2",
            ],
            None,
        ),
        case(
            "interleaved lines on both streams, then exit 3",
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 2000 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done; exit 3",
            ],
            None,
        ),
        case(
            "binary bytes",
            &["printf", "\\000\\001\\002\\377\\376\\200binary\\n\\000"],
            None,
        ),
        case(
            "no trailing newline",
            &["printf", "no newline at the end"],
            None,
        ),
        case("UTF-8", &["printf", "héllo wörld ✓ 日本語 🚀\\n"], None),
        case(
            "5 MB of random bytes",
            &["cat", "/home/app/random.bin"],
            None,
        ),
        case(
            "1 MiB of stdin through cat",
            &["cat"],
            Some(pseudo_random(1 << 20, 42)),
        ),
        case("empty stdin", &["cat"], Some(Vec::new())),
        case(
            "stdin to stderr",
            &["sh", "-c", "cat >&2"],
            Some(b"to stderr\nvia stdin\n".to_vec()),
        ),
        case("a command that does not exist", &["/no/such/command"], None),
        case(
            "killed by SIGKILL",
            &["sh", "-c", "echo about to die; kill -KILL $$"],
            None,
        ),
        case("killed by SIGTERM", &["sh", "-c", "kill -TERM $$"], None),
        case("the container's user", &["id"], None),
        case("the pod's hostname", &["hostname"], None),
    ];
    assert!(cases.len() >= 15);
    for (i, c) in cases.iter().enumerate() {
        let reason = format!("real-node-case-{i}");
        // -q on both sides, kubectl exec's own flag for "only print output from the remote
        // session": without it the plugin also says which ExecSession it created.
        let mut common_args: Vec<&str> = vec!["-q"];
        if c.stdin.is_some() {
            common_args.push("-i");
        }
        common_args.extend(["-n", ns, &t.pod, "--"]);
        common_args.extend(c.argv.iter().map(String::as_str));
        let mut kargs = vec!["exec"];
        kargs.extend(&common_args);
        let aexec_run = |attempt: usize| {
            let reason = format!("{reason}-{attempt}");
            let mut aargs: Vec<String> = vec!["-r".into(), reason.clone()];
            aargs.extend(common_args.iter().map(|a| a.to_string()));
            async move {
                let aargs: Vec<&str> = aargs.iter().map(String::as_str).collect();
                (
                    reason.clone(),
                    aexec(User::Alice, &aargs, c.stdin.as_deref()).await,
                )
            }
        };
        let (mut reason, mut mine) = aexec_run(0).await;
        let mut plain = kubectl(User::Admin, &kargs, c.stdin.as_deref()).await;
        // The runtime sometimes loses the end of stderr when the command exits at once: containerd
        // logs "Failed to pipe stdout for container exec ... EOF", and kubectl exec itself sees it
        // (1 run in 5 with `sh -c 'cat >&2'`: exit 0, no stderr at all). Whichever side lost it
        // (its stderr a strict prefix of the other's) runs again. When it is the aexec side, its
        // recording must hold exactly what the client printed: the operator relayed all it got,
        // so the loss came before it.
        for attempt in 1..=4 {
            let lost = |a: &Vec<u8>, b: &Vec<u8>| a.len() < b.len() && b.starts_with(a);
            if lost(&plain.stderr, &mine.stderr) {
                eprintln!(
                    "{}: kubectl exec lost stderr (the runtime's race); running it again",
                    c.what
                );
                plain = kubectl(User::Admin, &kargs, c.stdin.as_deref()).await;
            } else if lost(&mine.stderr, &plain.stderr) {
                let s = session_by_reason(&t, &reason).await;
                let name = s.metadata.name.clone().expect("name");
                ended(&t, &name, 60).await;
                let rec = recorded(&t, &name).await;
                // What the command wrote: the client's stderr without kubectl's own last line.
                let marker = b"command terminated with exit code";
                let end = mine
                    .stderr
                    .windows(marker.len())
                    .position(|w| w == marker)
                    .unwrap_or(mine.stderr.len());
                let printed = &mine.stderr[..end];
                assert!(
                    rec.err == printed,
                    "{}: aexec printed {} bytes of stderr but the recording holds {}: the operator lost or invented bytes",
                    c.what,
                    printed.len(),
                    rec.err.len()
                );
                eprintln!(
                    "{}: the aexec run lost stderr before the operator (recorded {} bytes, as printed); running it again",
                    c.what,
                    rec.err.len()
                );
                (reason, mine) = aexec_run(attempt).await;
            } else {
                break;
            }
        }
        let what = c.what;
        assert_eq!(
            mine.status.code(),
            plain.status.code(),
            "{what}: exit codes differ; aexec's stderr: {}; kubectl's: {}",
            text(&mine.stderr),
            text(&plain.stderr)
        );
        assert!(
            mine.stdout == plain.stdout,
            "{what}: stdout differs: {}",
            first_difference(&mine.stdout, &plain.stdout)
        );
        // The runtime names each exec by a random ID ("failed to start exec \"<64 hex>\"").
        let (mine_err, plain_err) = (without_ids(&mine.stderr), without_ids(&plain.stderr));
        assert!(
            mine_err == plain_err,
            "{what}: stderr differs: {}\naexec: {}\nkubectl: {}",
            first_difference(&mine_err, &plain_err),
            text(&mine.stderr),
            text(&plain.stderr)
        );
        // The recording holds exactly what the command wrote and read: stdout as is; stderr
        // without kubectl's own last line; stdin as sent.
        let s = session_by_reason(&t, &reason).await;
        let name = s.metadata.name.clone().expect("name");
        let s = ended(&t, &name, 60).await;
        let rec = recorded(&t, &name).await;
        assert!(
            rec.out == plain.stdout,
            "{what}: the recording's stdout differs from what kubectl exec printed: {}",
            first_difference(&rec.out, &plain.stdout)
        );
        let code = plain.status.code().unwrap_or(-1);
        let kubectl_line = format!("command terminated with exit code {code}\n");
        let command_stderr: &[u8] = if c.what == "a command that does not exist" {
            b"" // kubectl's error about the failed start; the command wrote nothing
        } else if code != 0 {
            plain
                .stderr
                .strip_suffix(kubectl_line.as_bytes())
                .unwrap_or_else(|| panic!("{what}: kubectl's stderr ends with {kubectl_line:?}"))
        } else {
            &plain.stderr
        };
        assert!(
            rec.err == command_stderr,
            "{what}: the recording's stderr differs: {}",
            first_difference(&rec.err, command_stderr)
        );
        assert_eq!(
            rec.input,
            c.stdin.clone().unwrap_or_default(),
            "{what}: the recording's stdin"
        );
        if c.what != "a command that does not exist" {
            assert_eq!(rec.exit, Some(code), "{what}: the recording's exit status");
            assert_eq!(
                s.status.as_ref().and_then(|s| s.exit_code),
                Some(code),
                "{what}"
            );
        }
        eprintln!(
            "{what}: exit {code}, {} bytes out, {} bytes err, {} bytes in: equal to kubectl exec and recorded",
            plain.stdout.len(),
            plain.stderr.len(),
            rec.input.len()
        );
    }
}

#[tokio::test]
async fn real_node_tty_session() {
    let t = target_auto(json!({})).await;
    let kc = env().kubeconfig(User::Alice);
    let script = format!(
        "{} --kubeconfig {} -n {} -it -r tty-on-real-node {} -- sh; echo \"plugin-exit=$?\"; sleep 1",
        plugin_bin().display(),
        kc.display(),
        t.namespace,
        t.pod
    );
    let mut pty = pty::Pty::spawn("sh", &["-c", &script], 80, 24);
    // The container's shell sees our terminal's size, then a resize (SIGWINCH in the container).
    pty.expect("24 80", Some("stty size\r"), 60).await;
    pty.master
        .resize(portable_pty::PtySize {
            rows: 30,
            cols: 100,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("resize");
    pty.expect("30 100", Some("stty size\r"), 20).await;
    pty.type_text("echo typed-$((6*7)) on $(hostname) as $(id -un)\r");
    pty.expect(&format!("typed-42 on {} as app", t.pod), None, 10)
        .await;
    pty.type_text("exit 3\r");
    pty.expect("plugin-exit=3", None, 20).await;
    let _ = tokio::task::spawn_blocking(move || pty.child.wait()).await;

    let s = session_by_reason(&t, "tty-on-real-node").await;
    let name = s.metadata.name.clone().expect("name");
    let s = ended(&t, &name, 30).await;
    assert_eq!(s.status.as_ref().and_then(|s| s.exit_code), Some(3));
    let rec = recorded(&t, &name).await;
    assert_eq!(rec.exit, Some(3));
    assert!(rec.resizes.contains(&(100, 30)), "{:?}", rec.resizes);
    assert!(
        text(&rec.input).contains("echo typed-$((6*7))"),
        "{}",
        text(&rec.input)
    );
    // The replay shows what the terminal showed.
    let replay = aexec(
        User::Carol,
        &["replay", &name, "-n", &t.namespace, "--idle-limit", "0.1"],
        None,
    )
    .await;
    let out = text(&replay.stdout);
    assert!(
        out.contains(&format!("typed-42 on {} as app", t.pod)) && out.contains("30 100"),
        "{out}"
    );
}

/// alice's plugin running `command` in the background, its stdout read line by line.
struct Running {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Running {
    async fn start(t: &Target, reason: &str, command: &[&str]) -> Running {
        let mut cmd = tokio::process::Command::new(plugin_bin());
        cmd.arg("--kubeconfig")
            .arg(env().kubeconfig(User::Alice))
            .args(["-n", &t.namespace, "-r", reason, &t.pod, "--"])
            .args(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("plugin starts");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let all = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = all.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut pending = Vec::new();
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
                pending.extend_from_slice(&buf[..n]);
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let _ = tx.send(text(&line).trim_end().to_owned());
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            stdout: all,
        }
    }

    /// Waits for a line containing `want`.
    async fn expect(&mut self, want: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !self.seen.iter().any(|l| l.contains(want)) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => self.seen.push(l),
                _ => panic!("{want:?} never came; seen: {:?}", self.seen),
            }
        }
    }

    /// Waits for the plugin to exit: (exit code, all of stdout, stderr).
    async fn finish(mut self, secs: u64) -> (Option<i32>, Vec<u8>, String) {
        let mut stderr = self.child.stderr.take().expect("stderr");
        let status = tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the plugin did not exit within {secs}s"))
            .expect("wait");
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err).await;
        // The reader may still be draining the pipe.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let out = self.stdout.lock().expect("lock").clone();
        (status.code(), out, text(&err))
    }
}

const TICKS: &str = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done";

/// The operator pod (replica) named in the session's status.
async fn broker_of(t: &Target, name: &str) -> String {
    for _ in 0..50 {
        if let Some(b) = session(t, name).await.status.and_then(|s| s.broker) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("session {name} names no broker")
}

async fn delete_pod_now(namespace: &str, pod: &str) -> Output {
    kubectl(
        User::Admin,
        &[
            "delete",
            "pod",
            "-n",
            namespace,
            pod,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
        None,
    )
    .await
}

/// A session that must work: alice runs `echo NAME` and gets it back with exit 0.
async fn a_new_session_works(t: &Target, word: &str) -> Output {
    aexec(
        User::Alice,
        &["-n", &t.namespace, "-r", word, &t.pod, "--", "echo", word],
        None,
    )
    .await
}

#[tokio::test]
async fn real_node_operator_runs_in_the_cluster() {
    let env = env();
    let admin = env.client(User::Admin).await.expect("admin");
    let pods = env.operator_pods().await.expect("operator pods");
    assert_eq!(pods.len(), 2, "two replicas");
    for p in &pods {
        let spec = p.spec.clone().expect("spec");
        let c = &spec.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some(
                format!(
                    "ghcr.io/kubectl-aexec/aexec-operator:{}",
                    env!("CARGO_PKG_VERSION")
                )
                .as_str()
            )
        );
        let st = p.status.clone().expect("status");
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(
            spec.node_name.as_deref(),
            Some(aexec_testenv::node::NODE_NAME)
        );
        let sc = c.security_context.clone().expect("securityContext");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
        // The image has no shell: there is nothing to exec into.
        let name = p.metadata.name.clone().expect("name");
        let sh = kubectl(
            User::Admin,
            &[
                "exec",
                "-n",
                chart::NAMESPACE,
                &name,
                "--",
                "sh",
                "-c",
                "true",
            ],
            None,
        )
        .await;
        assert!(!sh.status.success());
        assert!(
            text(&sh.stderr).contains("no such file or directory")
                || text(&sh.stderr).contains("executable file not found"),
            "{}",
            text(&sh.stderr)
        );
        // It runs as the image's non-root user, whatever the pod asked.
        let status = text(
            &kubectl(
                User::Admin,
                &[
                    "get",
                    "pod",
                    "-n",
                    chart::NAMESPACE,
                    &name,
                    "-o",
                    "jsonpath={.status.containerStatuses[0].ready}",
                ],
                None,
            )
            .await
            .stdout,
        );
        assert_eq!(status, "true");
    }
    // The Service's endpoints were written by the EndpointSlice controller from the pods.
    let slices: Api<EndpointSlice> = Api::namespaced(admin, chart::NAMESPACE);
    let list = slices
        .list(
            &ListParams::default()
                .labels(&format!("kubernetes.io/service-name={}", chart::RELEASE)),
        )
        .await
        .expect("slices");
    let managed: Vec<_> = list
        .items
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("endpointslice.kubernetes.io/managed-by"))
                == Some(&"endpointslice-controller.k8s.io".to_owned())
        })
        .collect();
    assert_eq!(managed.len(), 1, "{list:?}");
    let ready = managed[0]
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count();
    assert_eq!(ready, 2);
    assert!(env.apiservice_available().await);
}

#[tokio::test]
async fn real_node_operator_pod_killed() {
    let t = target_auto(json!({})).await;
    let mut run = Running::start(&t, "killed-broker", &["sh", "-c", TICKS]).await;
    // Past the first segments' cut (every 2 s): what reached the store outlives the replica,
    // what was still in its spool (an emptyDir) goes with its pod.
    run.expect("tick-25", 60).await;
    let name = session_by_reason(&t, "killed-broker")
        .await
        .metadata
        .name
        .expect("name");
    let broker = broker_of(&t, &name).await;
    let killed_at = std::time::Instant::now();
    let deleted = delete_pod_now(chart::NAMESPACE, &broker).await;
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    // alice's stream breaks with the replica; the session ends with the reason.
    let (code, out, err) = run.finish(60).await;
    assert_ne!(code, Some(0), "stderr: {err}");
    let s = ended(&t, &name, 90).await;
    let ended_after = killed_at.elapsed();
    let st = s.status.clone().expect("status");
    assert_eq!(s.phase(), Phase::Failed, "{st:#?}");
    let message = st.message.clone().unwrap_or_default();
    assert!(message.contains(&broker), "{message}");
    // Its recording is sealed (marked interrupted: the replica's spool went with its pod) and
    // verifies; what it holds is a prefix of what alice saw.
    let rec = recorded(&t, &name).await;
    assert!(rec.interrupted, "the recording is marked interrupted");
    assert!(
        out.starts_with(&rec.out),
        "{}",
        first_difference(&out, &rec.out)
    );
    let verify = aexec(User::Carol, &["verify", &name, "-n", &t.namespace], None).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    // New sessions work: the other replica serves them.
    let start = std::time::Instant::now();
    loop {
        let out =
            a_new_session_works(&t, &format!("after-kill-{}", start.elapsed().as_millis())).await;
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no new session works 30s after the kill: {}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "replica {broker} force-deleted: the session ended after {:.1}s ({message}); a new session worked {:.1}s after that",
        ended_after.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    env()
        .wait_operator_rolled_out(Duration::from_secs(120))
        .await
        .expect("the Deployment replaces the replica");
}

/// The API server sends each watch to either replica; every watch works. The replica that does
/// not relay the session forwards the watch to the pod that does, at the address the chart gave
/// it (`POD_IP`): pod to pod, over the replicas' mutual TLS (issue #14, `docs/watch.md`).
#[tokio::test]
async fn real_node_watch_through_either_replica() {
    let t = target_auto(json!({})).await;
    let mut run = Running::start(&t, "watched", &["sh", "-c", TICKS]).await;
    run.expect("tick-3", 60).await;
    let name = session_by_reason(&t, "watched")
        .await
        .metadata
        .name
        .expect("name");
    let broker = broker_of(&t, &name).await;
    let pods = env().operator_pods().await.expect("operator pods");
    let ip = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(broker.as_str()))
        .and_then(|p| p.status.as_ref()?.pod_ip.clone())
        .expect("the broker's pod and its IP");
    let st = session(&t, &name).await.status.expect("status");
    assert_eq!(st.broker_address, Some(format!("{ip}:8443")));

    // Eight watches: if only the broker could serve them, about half would fail (all eight
    // succeed by chance once in 256 runs).
    const WATCHES: usize = 8;
    for i in 0..WATCHES {
        let mut w = tokio::process::Command::new(plugin_bin())
            .arg("--kubeconfig")
            .arg(env().kubeconfig(User::Bob))
            .args(["watch", &name, "-n", &t.namespace])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the plugin starts");
        let mut stdout = w.stdout.take().expect("stdout");
        let mut got = Vec::new();
        let saw = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = vec![0u8; 8192];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                if text(&got).contains("tick-") {
                    return true;
                }
            }
        })
        .await
        .unwrap_or(false);
        if !saw {
            let _ = w.start_kill();
            let out = w.wait_with_output().await.expect("the plugin ends");
            panic!(
                "watch {i} showed no output: {} / {}",
                text(&got),
                text(&out.stderr)
            );
        }
        let _ = w.kill().await;
    }
    // How many the other replica forwarded (its log says so for each).
    let other = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .find(|n| *n != broker)
        .expect("the other replica");
    let logs = kubectl(User::Admin, &["logs", "-n", chart::NAMESPACE, &other], None).await;
    let forwarded = text(&logs.stdout)
        .lines()
        .filter(|l| l.trim_end().ends_with(" forwarding") || l.contains("\"forwarding\""))
        .count();
    eprintln!(
        "{WATCHES} watches of a session relayed by {broker}: all showed its output; {other} forwarded {forwarded} of them"
    );
    drop(run);
}

#[tokio::test]
async fn real_node_helm_upgrade_mid_session() {
    let t = target_auto(json!({})).await;
    // Sessions that stream for about 12 s, and one that ends within the upgrade's first
    // seconds: all running when the rollout starts.
    let mut runs = Vec::new();
    for i in 0..4 {
        let reason = format!("upgrade-{i}");
        let cmd = "i=0; while [ $i -lt 60 ]; do echo tick-$i; i=$((i+1)); sleep 0.2; done";
        runs.push((
            reason.clone(),
            Running::start(&t, &reason, &["sh", "-c", cmd]).await,
        ));
    }
    for (_, r) in runs.iter_mut() {
        r.expect("tick-2", 60).await;
    }
    let before: Vec<String> = env()
        .operator_pods()
        .await
        .expect("pods")
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    // A changed value that rolls the pods, as a real upgrade does.
    env()
        .helm_in_cluster(
            "upgrade",
            // Not a number: the chart's schema wants annotation values as strings.
            &["podAnnotations.aexec\\.dev/rollout=second".to_owned()],
        )
        .await
        .expect("helm upgrade");
    for (reason, r) in runs {
        let (code, out, err) = r.finish(120).await;
        let name = session_by_reason(&t, &reason)
            .await
            .metadata
            .name
            .expect("name");
        let s = ended(&t, &name, 60).await;
        let rec = recorded(&t, &name).await;
        let st = s.status.clone().expect("status");
        match s.phase() {
            // Finished before its replica stopped.
            Phase::Succeeded => {
                assert_eq!(code, Some(0), "{err}");
                assert!(text(&out).contains("tick-59"));
            }
            // Ended cleanly by a stopping replica: told, recorded, sealed.
            Phase::Failed => {
                let m = st.message.clone().unwrap_or_default();
                assert!(m.contains("shut down (restart or rollout)"), "{m}");
                assert!(err.contains("(restart or rollout)"), "alice is told: {err}");
                assert!(rec.interrupted);
            }
            other => panic!("{name} ended {other}: {st:#?}"),
        }
        // Nothing alice saw is missing from the recording.
        assert!(
            rec.out == out,
            "{name}: {}",
            first_difference(&rec.out, &out)
        );
        eprintln!("{name}: {} ({} bytes recorded)", s.phase(), rec.out.len());
    }
    env()
        .wait_operator_rolled_out(Duration::from_secs(180))
        .await
        .expect("rollout");
    let after: Vec<String> = env()
        .operator_pods()
        .await
        .expect("pods")
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );
    let out = a_new_session_works(&t, "after-upgrade").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "after-upgrade\n");
}

#[tokio::test]
async fn real_node_container_restart_mid_session() {
    let t = target_auto(json!({})).await;
    let mut run = Running::start(&t, "container-killed", &["sh", "-c", TICKS]).await;
    run.expect("tick-3", 60).await;
    let name = session_by_reason(&t, "container-killed")
        .await
        .metadata
        .name
        .expect("name");
    let admin = env().client(User::Admin).await.expect("admin");
    let pods: Api<Pod> = Api::namespaced(admin, &t.namespace);
    let pod = pods.get(&t.pod).await.expect("pod");
    let id = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().and_then(|c| c.container_id.clone()))
        .expect("container id");
    let id = id.trim_start_matches("containerd://").to_owned();
    // The container's main process is killed on the node, as an OOM kill would.
    let mut kill = env().ctr().expect("ctr");
    let killed = kill
        .args(["tasks", "kill", "--signal", "SIGKILL", &id])
        .output()
        .expect("ctr tasks kill");
    assert!(killed.status.success(), "{}", text(&killed.stderr));
    let (code, out, err) = run.finish(60).await;
    assert_ne!(code, Some(0), "{err}");
    let s = ended(&t, &name, 60).await;
    let st = s.status.clone().expect("status");
    assert_ne!(s.phase(), Phase::Succeeded, "{st:#?}");
    let rec = recorded(&t, &name).await;
    assert!(rec.out == out, "{}", first_difference(&rec.out, &out));
    assert_eq!(
        rec.exit, st.exit_code,
        "the exit status, if any, is recorded as it was reported"
    );
    eprintln!(
        "container killed: the session ended {} ({}), exit status {:?}; plugin exit {code:?}: {}",
        s.phase(),
        st.message.unwrap_or_default(),
        st.exit_code,
        err.trim()
    );
    // The kubelet restarts the container; the pod (same UID) takes new sessions.
    for _ in 0..120 {
        let p = pods.get(&t.pod).await.expect("pod");
        let restarted = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.first().map(|c| c.restart_count >= 1 && c.ready))
            .unwrap_or(false);
        if restarted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let again = a_new_session_works(&t, "after-restart").await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), "after-restart\n");
}

/// A pod whose image has no shell (the pause image: one static binary), running.
async fn distroless_pod(t: &Target) -> String {
    let admin = env().client(User::Admin).await.expect("admin");
    let pods: Api<Pod> = Api::namespaced(admin, &t.namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "distroless"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": aexec_testenv::images::PAUSE.reference(),
                "imagePullPolicy": "Never",
            }]
        }
    }))
    .expect("pod");
    pods.create(&Default::default(), &pod)
        .await
        .expect("created");
    tokio::time::timeout(
        Duration::from_secs(90),
        kube::runtime::wait::await_condition(
            pods,
            "distroless",
            kube::runtime::conditions::is_pod_running(),
        ),
    )
    .await
    .expect("the distroless pod runs within 90s")
    .expect("watch");
    "distroless".into()
}

/// The ephemeral containers of pod `name`: (name, image).
async fn ephemeral_containers(t: &Target, name: &str) -> Vec<(String, String)> {
    let admin = env().client(User::Admin).await.expect("admin");
    Api::<Pod>::namespaced(admin, &t.namespace)
        .get(name)
        .await
        .expect("pod")
        .spec
        .and_then(|s| s.ephemeral_containers)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.image.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn real_node_debug_ephemeral_container_recorded() {
    let busybox = aexec_testenv::images::BUSYBOX.reference();
    let t = target_auto(json!({"debugImages": [busybox]})).await;
    let ns = t.namespace.as_str();
    let pod = distroless_pod(&t).await;
    // Nothing to exec into: the image has no shell.
    let plain = kubectl(
        User::Admin,
        &["exec", "-n", ns, &pod, "--", "sh", "-c", "true"],
        None,
    )
    .await;
    assert!(
        !plain.status.success(),
        "the pod was expected to have no shell"
    );

    // alice debugs it beside its container: her shell sees the target's processes.
    let script = b"echo debug-marker; tr '\\0' ' ' < /proc/1/cmdline; echo; exit 3\n";
    let out = aexec(
        User::Alice,
        &[
            "debug",
            "-n",
            ns,
            &pod,
            "--image",
            &busybox,
            "--target",
            "app",
            "-i",
            "-r",
            "INC-DEBUG",
            "--",
            "sh",
        ],
        Some(script),
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains("debug-marker"), "{stdout}");
    assert!(
        stdout.contains("/pause"),
        "PID 1 is not the target's: {stdout}"
    );
    assert!(
        stderr.contains("command terminated with exit code 3"),
        "{stderr}"
    );

    let s = session_by_reason(&t, "INC-DEBUG").await;
    let name = s.metadata.name.clone().expect("name");
    let s = ended(&t, &name, 60).await;
    assert_eq!(s.phase(), Phase::Failed, "{:#?}", s.status);
    assert_eq!(s.status.as_ref().and_then(|st| st.exit_code), Some(3));
    // The operator added exactly the approved container.
    assert_eq!(
        ephemeral_containers(&t, &pod).await,
        [(aexec_crds::debug_container_name(&name), busybox.clone())]
    );
    // Recorded like an exec: what was typed, what was shown, the exit code.
    let rec = recorded(&t, &name).await;
    assert!(
        text(&rec.out).contains("debug-marker"),
        "{:?}",
        text(&rec.out)
    );
    assert!(
        text(&rec.input).contains("echo debug-marker"),
        "{:?}",
        text(&rec.input)
    );
    assert_eq!(rec.exit, Some(3));
    // describe says what ran where.
    let d = text(
        &aexec(User::Carol, &["describe", &name, "-n", ns], None)
            .await
            .stdout,
    );
    assert!(d.contains(&format!("of image {busybox}")), "{d}");
}

#[tokio::test]
async fn real_node_debug_image_not_allowed() {
    let busybox = aexec_testenv::images::BUSYBOX.reference();
    let t = target_auto(json!({"debugImages": [busybox]})).await;
    let ns = t.namespace.as_str();
    let pod = distroless_pod(&t).await;
    let other = aexec_testenv::images::PAUSE.reference();
    let out = aexec(
        User::Alice,
        &["debug", "-n", ns, &pod, "--image", &other, "-i", "--", "sh"],
        Some(b"exit 0\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("does not allow debugging with image {other}"))
            && err.contains(&busybox),
        "{err}"
    );
    // Denied before anything touched the pod.
    assert!(ephemeral_containers(&t, &pod).await.is_empty());
}
