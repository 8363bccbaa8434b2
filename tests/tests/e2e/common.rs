//! Helpers shared by the end-to-end tests.

use std::{process::Output, time::Duration};

use aexec_testenv::{TestEnv, User};

/// The shared control plane.
pub fn env() -> &'static TestEnv {
    TestEnv::shared()
}

/// The real `kubectl` (built at the server's version) as `user`, with `args`.
pub async fn kubectl(user: User, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use tokio::io::AsyncWriteExt;
    let env = env();
    let mut cmd = tokio::process::Command::new(&env.upstream.kubectl);
    cmd.arg("--kubeconfig")
        .arg(env.kubeconfig(user))
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("kubectl starts");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        tokio::spawn(async move {
            w.write_all(&input).await.expect("write kubectl stdin");
            // Dropping `w` closes kubectl's stdin: end of input.
        });
    }
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl finished within 60s")
        .expect("kubectl ran")
}
