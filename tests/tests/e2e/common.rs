//! Helpers shared by the end-to-end tests.

use std::{process::Output, time::Duration};

use aexec_testenv::{TestEnv, User};
use tokio::io::{AsyncRead, AsyncReadExt};

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

/// Reads from `r` until the bytes read so far satisfy `done`, failing after `secs` seconds with
/// what was read.
pub async fn read_until(
    r: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    secs: u64,
    done: impl Fn(&str) -> bool,
) {
    let fut = async {
        let mut chunk = [0u8; 4096];
        while !done(&String::from_utf8_lossy(buf)) {
            let n = r.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "stream ended; read so far: {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    if tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .is_err()
    {
        panic!(
            "timed out after {secs}s; read so far: {:?}",
            String::from_utf8_lossy(buf)
        );
    }
}
