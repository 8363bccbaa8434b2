//! Child processes of the control plane: started with their output in a log file, watched while
//! we wait for them, and reported with the tail of that log when they fail.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

/// A running component of the control plane.
#[derive(Debug)]
pub struct Component {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Component {
    /// Starts `program` with `args`, stdout and stderr going to `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        // Appending: a restarted component keeps the log of its previous life.
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("{name}: cannot start {}", program.display()))?;
        Ok(Component {
            name: name.to_owned(),
            log,
            child,
        })
    }

    /// An error if the process has exited, naming it and quoting its log.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} exited early ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 25)
            )),
        }
    }

    /// Polls `ready` every 200 ms until it says yes, failing at once if the process dies and
    /// after `timeout` with the log tail if it never gets ready.
    pub async fn wait_ready(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl AsyncFnMut() -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_running()?;
            if ready().await {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not become ready ({what}) within {}s; last lines of {}:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.log.display(),
                    tail(&self.log, 25)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process with SIGTERM and waits up to `grace` for it to exit (then SIGKILL):
    /// an error if it had to be killed or did not exit cleanly.
    pub async fn terminate(&mut self, grace: Duration) -> Result<()> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM {} failed ({sent})", self.child.id());
        }
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Some(status) = self.child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                bail!(
                    "{} exited with {status} on SIGTERM; last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 25)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        bail!(
            "{} did not exit within {}s of SIGTERM; last lines of {}:\n{}",
            self.name,
            grace.as_secs(),
            self.log.display(),
            tail(&self.log, 25)
        )
    }

    /// Stops the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a file, or a note that it could not be read.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            lines[from..]
                .iter()
                .map(|l| format!("  | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("  (cannot read {}: {e})", path.display()),
    }
}

/// Fails with a clear message if `addr` cannot be bound, before a component fails on it with a
/// less obvious one.
pub fn ensure_port_free(addr: SocketAddr, component: &str) -> Result<()> {
    TcpListener::bind(addr).map(drop).map_err(|e| {
        anyhow!(
            "{component} needs {addr}, which cannot be bound ({e}); another process is using it: \
             stop it, or run the control plane in a fresh network namespace (aexec-testenv does)"
        )
    })
}

/// True once something accepts TCP connections on `addr`.
pub async fn accepts(addr: SocketAddr) -> bool {
    tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn component_that_exits_early_is_reported_with_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Component::spawn(
            "fake-apiserver",
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "echo 'flag provided but not defined: -bogus' >&2; exit 3".into(),
            ],
            &[],
            dir.path(),
        )
        .expect("spawn");
        let err = c
            .wait_ready("serving", Duration::from_secs(10), async || false)
            .await
            .expect_err("must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("fake-apiserver exited early"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(
            msg.contains("flag provided but not defined: -bogus"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn component_that_never_gets_ready_times_out_with_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Component::spawn(
            "slow-etcd",
            Path::new("/bin/sh"),
            &["-c".into(), "echo still starting; sleep 30".into()],
            &[],
            dir.path(),
        )
        .expect("spawn");
        let err = c
            .wait_ready("port 2379", Duration::from_millis(600), async || false)
            .await
            .expect_err("must time out");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("slow-etcd did not become ready (port 2379) within 0s"),
            "{msg}"
        );
        assert!(msg.contains("still starting"), "{msg}");
    }

    #[test]
    fn port_in_use_names_the_component_and_address() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = ensure_port_free(addr, "kube-apiserver").expect_err("port is taken");
        let msg = err.to_string();
        assert!(msg.contains("kube-apiserver needs 127.0.0.1:"), "{msg}");
        assert!(msg.contains("another process is using it"), "{msg}");
        drop(taken);
        ensure_port_free(addr, "kube-apiserver").expect("free again");
    }

    #[tokio::test]
    async fn terminate_waits_for_a_clean_exit_and_reports_a_stubborn_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut polite = Component::spawn(
            "polite",
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "trap 'exit 0' TERM; while :; do sleep 0.05; done".into(),
            ],
            &[],
            dir.path(),
        )
        .expect("spawn");
        tokio::time::sleep(Duration::from_millis(200)).await;
        polite
            .terminate(Duration::from_secs(5))
            .await
            .expect("exits cleanly on SIGTERM");
        let mut stubborn = Component::spawn(
            "stubborn",
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "trap '' TERM; echo ignoring; while :; do sleep 0.05; done".into(),
            ],
            &[],
            dir.path(),
        )
        .expect("spawn");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let err = stubborn
            .terminate(Duration::from_millis(300))
            .await
            .expect_err("ignores SIGTERM");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("stubborn did not exit within 0s of SIGTERM"),
            "{msg}"
        );
        assert!(msg.contains("ignoring"), "{msg}");
        assert!(stubborn.check_running().is_err(), "killed after the grace");
    }

    #[test]
    fn missing_program_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Component::spawn("etcd", Path::new("/nonexistent/etcd"), &[], &[], dir.path())
            .expect_err("no such binary");
        assert!(format!("{err:#}").contains("etcd: cannot start /nonexistent/etcd"));
    }
}
