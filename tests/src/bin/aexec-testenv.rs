//! `aexec-testenv`: build, start and use the local control plane.
//!
//!   aexec-testenv build          build the upstream binaries (cached by version)
//!   aexec-testenv up [--operator local|s3] [-- CMD]
//!                                start the control plane (and the operator), print how to use
//!                                it, then run CMD or open a shell
//!   aexec-testenv run -- CMD     run CMD inside a private network namespace (the test runner)

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
};

use aexec_testenv::{
    TestEnv, User, netns, operator::RecordingStore, process::tail, upstream::Upstream,
};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The kubectl-aexec local control plane: etcd, kube-apiserver, kwok and MinIO, built from source"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the upstream binaries from their Go modules into the cache (needs network once).
    Build,
    /// Start the control plane and print how to use it; then run CMD, or an interactive shell,
    /// and stop everything when it exits.
    Up {
        /// Also run the operator (built beforehand: `cargo build -p aexec-operator`) as the
        /// chart's ServiceAccount, recording to a local directory or to MinIO.
        #[arg(long, value_enum)]
        operator: Option<Store>,
        /// Command to run with the control plane up (default: $SHELL when interactive).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Run CMD inside a private network namespace with the control plane's addresses, keeping
    /// the components' logs when CMD fails. `cargo test` uses this as its runner.
    Run {
        /// Keep the run directory (logs, certificates) even when CMD succeeds.
        #[arg(long)]
        keep: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    #[command(hide = true)]
    Inside {
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        up: bool,
        #[arg(long, value_enum)]
        operator: Option<Store>,
        #[arg(last = true)]
        command: Vec<String>,
    },
}

/// Where the operator of `up --operator` keeps recordings.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Store {
    /// `recordings/` in the run directory (the chart's default kind of store).
    Local,
    /// MinIO's bucket, with Object Lock (as the end-to-end tests run it).
    S3,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aexec-testenv: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Cmd::Build => Upstream::build(&[]).map(|_| ExitCode::SUCCESS),
        Cmd::Up { operator, command } => {
            Upstream::build(&[])?;
            let mut inner = vec!["inside".to_owned(), "--up".to_owned()];
            match operator {
                Some(Store::Local) => inner.push("--operator=local".into()),
                Some(Store::S3) => inner.push("--operator=s3".into()),
                None => {}
            }
            inner.push("--".into());
            inner.extend(command);
            reexec(inner)
        }
        Cmd::Run { keep, command } => {
            Upstream::require()?;
            let mut inner = vec!["inside".to_owned()];
            if keep {
                inner.push("--keep".into());
            }
            inner.push("--".into());
            inner.extend(command);
            reexec(inner)
        }
        Cmd::Inside {
            keep,
            up,
            operator,
            command,
        } => inside(keep, up, operator, command),
    }
}

fn reexec(args: Vec<String>) -> Result<ExitCode> {
    let me = std::env::current_exe().context("locating this program")?;
    match netns::reexec_inside(&me, &args)? {}
}

fn inside(keep: bool, up: bool, operator: Option<Store>, command: Vec<String>) -> Result<ExitCode> {
    netns::setup()?;
    let dir = run_dir()?;
    let code = if up {
        serve(&dir, operator, command)?
    } else {
        let status = Command::new(&command[0])
            .args(&command[1..])
            .env("AEXEC_TESTENV_DIR", &dir)
            .status()
            .with_context(|| format!("running {}", command[0]))?;
        status.code().unwrap_or(1)
    };
    if code != 0 || keep {
        report_logs(&dir);
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// A fresh run directory under target/ (or $AEXEC_TESTENV_ROOT).
fn run_dir() -> Result<PathBuf> {
    let root = std::env::var_os("AEXEC_TESTENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("aexec-testenv"));
    let stamp = chrono_free_stamp();
    let dir = root.join(format!("run-{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn chrono_free_stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn report_logs(dir: &std::path::Path) {
    let logs = dir.join("logs");
    eprintln!("\naexec-testenv: run directory kept: {}", dir.display());
    let Ok(entries) = std::fs::read_dir(&logs) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files {
        eprintln!("--- last lines of {} ---\n{}", f.display(), tail(&f, 15));
    }
}

fn serve(dir: &std::path::Path, operator: Option<Store>, command: Vec<String>) -> Result<i32> {
    let rt = tokio::runtime::Runtime::new()?;
    let env = rt.block_on(TestEnv::start_in(dir.to_path_buf()))?;
    if let Some(store) = operator {
        env.set_recording_store(match store {
            Store::Local => RecordingStore::Local,
            Store::S3 => RecordingStore::S3,
        });
        rt.block_on(env.ensure_operator())
            .context("starting the operator")?;
    }
    println!(
        "\nThe local control plane is up (run directory {}).",
        env.dir.display()
    );
    println!("API server: {}", env.server);
    for user in User::ALL {
        println!(
            "  {:<8} KUBECONFIG={}",
            user.name(),
            env.kubeconfig(user).display()
        );
    }
    println!(
        "S3 (MinIO): {} bucket {} (access key {}, secret {})",
        env.s3.endpoint, env.s3.bucket, env.s3.access_key, env.s3.secret_key
    );
    println!(
        "kubectl at the server's version: {}\n\
         From another terminal, enter this network namespace with: nsenter -t {} -n -U --preserve-credentials (or -n as root)",
        env.upstream.kubectl.display(),
        host_pid()
    );
    if let Some(store) = operator {
        println!(
            "Operator: {} (the chart's ServiceAccount), recordings in {}",
            TestEnv::shared_replica().api,
            match store {
                Store::Local => env.recordings_dir().display().to_string(),
                Store::S3 => format!("s3://{}", env.s3.bucket),
            }
        );
    }
    let (program, args) = match command.split_first() {
        Some((p, a)) => (p.clone(), a.to_vec()),
        None => (
            std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()),
            Vec::new(),
        ),
    };
    let kubectl_dir = env
        .upstream
        .kubectl
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let status = Command::new(&program)
        .args(&args)
        .env("KUBECONFIG", env.kubeconfig(User::Admin))
        .env("AEXEC_TESTENV_DIR", &env.dir)
        .env("AEXEC_KUBECTL", &env.upstream.kubectl)
        .env("AEXEC_KUBECTL_DIR", kubectl_dir)
        .env("AEXEC_RECORDINGS_DIR", env.recordings_dir())
        .status()
        .with_context(|| format!("running {program}"))?;
    env.stop();
    Ok(status.code().unwrap_or(1))
}

/// This process's id as the host sees it: /proc is the host's procfs (no new mount namespace), so
/// /proc/self names the host pid, not the 1 of our PID namespace.
fn host_pid() -> String {
    std::fs::read_link("/proc/self")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| std::process::id().to_string())
}
