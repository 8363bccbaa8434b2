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
