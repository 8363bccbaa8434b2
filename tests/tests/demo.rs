//! The README's demo command, run as a newcomer runs it: `./dev demo`, non-interactive (CI=true,
//! no terminal on stdin). It starts its own control plane with a real node (kubelet,
//! containerd, runc) and the operator installed in it with helm from its image, so this test
//! runs outside `aexec-testenv run` (`./dev test` runs it after the end-to-end tests).

use std::{path::Path, process::Stdio};

/// Position of `needle` in `text` at or after `from`, or a failure that shows the output.
fn find_after(text: &str, from: usize, needle: &str) -> usize {
    match text[from..].find(needle) {
        Some(i) => from + i,
        None => panic!("the demo's output lacks {needle:?} (after byte {from}):\n{text}"),
    }
}

#[test]
fn real_node_demo() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root");
    // One stream, as a terminal shows it: the order of what each user sees is checked below.
    let mut demo = std::process::Command::new("bash");
    demo.args(["-c", "exec ./dev demo 2>&1"]).current_dir(root);
    // Without what cargo sets for a test (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...): build
    // scripts watch some of these names, and the demo's own `cargo build` would rebuild half
    // the dependency tree for them, then again for the next build outside this test.
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        let from_cargo = n == "CARGO"
            || n == "OUT_DIR"
            || [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|p| n.starts_with(p))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&n.as_ref());
        if from_cargo {
            demo.env_remove(&name);
        }
    }
    let out = demo
        .env("CI", "true")
        .stdin(Stdio::null())
        .output()
        .expect("./dev demo starts");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "./dev demo failed:\n{text}");

    // A real node, and the operator in the cluster from its image, recording to the node's
    // disk (a hostPath volume).
    let at = find_after(
        &text,
        0,
        "the operator runs in the cluster (helm release aexec-operator in aexec-system, 2 replicas), recordings in /",
    );
    let at = find_after(&text, at, "aexec-node-0   Ready");
    let at = find_after(&text, at, "containerd://");
    let at = find_after(&text, at, "aexec-operator-");
    // alice is refused plain exec, then asks and waits.
    let at = find_after(
        &text,
        at,
        "User \"alice\" cannot create resource \"pods/exec\"",
    );
    let at = find_after(&text, at, "waiting for approval of exec-");
    let at = find_after(
        &text,
        at,
        "send this to an approver:  kubectl aexec approve exec-",
    );
    // Nobody but an approver of the policy can approve.
    let at = find_after(
        &text,
        at,
        "User \"mallory\" cannot update resource \"execsessions/approve\"",
    );
    // bob approves; only then does alice's command run, with its exit code.
    let at = find_after(&text, at, "approved (1/1 approvals)");
    let at = find_after(&text, at, "approved; attaching to exec-");
    // alice's command ran in the container: its hostname is the pod's, its user the
    // container's (not the machine's, not root).
    let at = find_after(&text, at, "\n    api\n    uid=1000(app) gid=1000(app)");
    let at = find_after(&text, at, "diagnosing INC-1234");
    let at = find_after(&text, at, "command terminated with exit code 3");
    let at = find_after(&text, at, "exited with 3");
    // carol lists, describes, replays, exports and verifies.
    let at = find_after(&text, at, "carol");
    let at = find_after(&text, at, "the command exited with code 3");
    let at = find_after(&text, at, "bob at ");
    let at = find_after(&text, at, "URI:        file:///");
    let at = find_after(&text, at, "diagnosing INC-1234");
    let at = find_after(&text, at, "bytes, v2)");
    let at = find_after(&text, at, "\"version\":2");
    let at = find_after(&text, at, "matches the session's status");
    // alice cannot delete it; the admin can, and the signed record stays in the store.
    let at = find_after(&text, at, "cannot delete resource \"execsessions\"");
    let at = find_after(&text, at, "\" deleted");
    let at = find_after(&text, at, "SESSION ");
    let at = find_after(&text, at, "deleted\n");
    let at = find_after(&text, at, "-----BEGIN PUBLIC KEY-----");
    // The hash-chained files and the record landed in the local store.
    let at = find_after(&text, at, "/manifest.json");
    let at = find_after(&text, at, "/record.json");
    let at = find_after(&text, at, "/seg-000000.cast");
    // And a copy verifies with no cluster.
    let at = find_after(&text, at, "verified: signed by key");
    find_after(&text, at, "matches the signed session record");
}
