//! `aexec-testenv`: build, start and use the local control plane.
//!
//!   aexec-testenv build          build the upstream binaries (cached by version)
//!   aexec-testenv up [--node kwok|real] [--operator local|s3] [-- CMD]
//!                                start the control plane (and the operator), print how to use
//!                                it, then run CMD or open a shell
//!   aexec-testenv run [--node kwok|real] -- CMD
//!                                run CMD inside private namespaces (the test runner)

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
};

use aexec_testenv::{
    TestEnv, User,
    env::{NODE_KIND_ENV, RUN_ID_ENV},
    host, netns,
    operator::RecordingStore,
    process::tail,
    sandbox,
    upstream::Upstream,
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
        /// What plays the node: kwok (every exec a local process) or a real kubelet with
        /// containerd, where the operator runs in the cluster from its image.
        #[arg(long, value_enum, default_value_t = Node::Kwok)]
        node: Node,
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
        /// What plays the node (see `up --help`).
        #[arg(long, value_enum, default_value_t = Node::Kwok)]
        node: Node,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    #[command(hide = true)]
    Inside {
        #[arg(long)]
        keep: bool,
        /// The run directory chosen by the runner (a real node's run).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        up: bool,
        #[arg(long, value_enum)]
        operator: Option<Store>,
        #[arg(last = true)]
        command: Vec<String>,
    },
}

/// What plays the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Node {
    /// kwok: each exec is a process on this machine (fast; most end-to-end tests).
    Kwok,
    /// kubelet, containerd and runc: each exec runs in a real container (root only).
    Real,
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
        Cmd::Up {
            node,
            operator,
            command,
        } => {
            Upstream::build(&[])?;
            let mut inner = vec!["inside".to_owned(), "--up".to_owned()];
            match operator {
                Some(Store::Local) => inner.push("--operator=local".into()),
                Some(Store::S3) => inner.push("--operator=s3".into()),
                None => {}
            }
            enter(node, false, inner, command)
        }
        Cmd::Run {
            keep,
            node,
            command,
        } => {
            Upstream::require()?;
            let mut inner = vec!["inside".to_owned()];
            if keep {
                inner.push("--keep".into());
            }
            enter(node, keep, inner, command)
        }
        Cmd::Inside {
            keep,
            dir,
            up,
            operator,
            command,
        } => inside(keep, dir, up, operator, command),
    }
}

/// Runs `inner -- command` in the run's namespaces.
fn enter(node: Node, keep: bool, mut inner: Vec<String>, command: Vec<String>) -> Result<ExitCode> {
    match node {
        Node::Kwok => {
            inner.push("--".into());
            inner.extend(command);
            reexec(inner)
        }
        Node::Real => run_real_node(keep, inner, command),
    }
}

/// A real node's run: the runner stays outside its namespaces, then removes what the run
/// left (its cgroups, its directory) and fails if the host differs from before.
fn run_real_node(keep: bool, mut inner: Vec<String>, command: Vec<String>) -> Result<ExitCode> {
    let paths = Upstream::paths()?;
    aexec_testenv::node::NodeBinaries::require(&paths)?;
    let dir = run_dir()?;
    let run_id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("run")
        .trim_start_matches("run-")
        .to_owned();
    inner.push(format!("--dir={}", dir.display()));
    inner.push("--".into());
    inner.extend(command);
    let me = std::env::current_exe().context("locating this program")?;
    let before = host::Snapshot::take();
    let status = netns::run_inside_for_real_node(
        &me,
        &inner,
        &[(NODE_KIND_ENV, "real"), (RUN_ID_ENV, &run_id)],
    )?;
    let mut changes: Vec<String> = sandbox::remove_cgroups(&run_id)
        .into_iter()
        .map(|c| format!("cgroup left behind: {c}"))
        .collect();
    let after = host::Snapshot::take();
    changes.extend(after.changes_since(&before));
    let ok = status.success();
    if ok
        && !keep
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        eprintln!("aexec-testenv: could not remove {}: {e}", dir.display());
    }
    if !changes.is_empty() {
        eprintln!(
            "aexec-testenv: the run changed the host ({} differences); it must leave it as it was:",
            changes.len()
        );
        for c in &changes {
            eprintln!("  {c}");
        }
        return Ok(ExitCode::FAILURE);
    }
    eprintln!(
        "aexec-testenv: the host is as it was before the run ({} compared)",
        before.summary()
    );
    Ok(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn inside(
    keep: bool,
    dir: Option<PathBuf>,
    up: bool,
    operator: Option<Store>,
    command: Vec<String>,
) -> Result<ExitCode> {
    netns::setup()?;
    let real = dir.is_some();
    let dir = match dir {
        Some(d) => d,
        None => run_dir()?,
    };
    if real {
        netns::route_services()?;
        let run_id = std::env::var(RUN_ID_ENV).context("the runner sets the run id")?;
        sandbox::setup(&dir, &run_id).context("isolating the real node from the host")?;
    }
    let code = if up {
        serve(&dir, operator, command)?
    } else {
        let status = Command::new(&command[0])
            .args(&command[1..])
            .env("AEXEC_TESTENV_DIR", &dir)
            // kubectl's discovery cache goes to the run, not to ~/.kube/cache.
            .env("KUBECACHEDIR", dir.join("kube-cache"))
            .status()
            .with_context(|| format!("running {}", command[0]))?;
        status.code().unwrap_or(1)
    };
    if code != 0 || keep {
        report_logs(&dir);
    } else if !real {
        // A real node's directory holds its containers' mounts until every process of the
        // run is gone: the runner removes it, outside.
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn reexec(args: Vec<String>) -> Result<ExitCode> {
    let me = std::env::current_exe().context("locating this program")?;
    match netns::reexec_inside(&me, &args)? {}
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
    let store = match operator {
        Some(Store::Local) => RecordingStore::Local,
        _ => RecordingStore::S3,
    };
    let env = rt.block_on(TestEnv::start_with(dir.to_path_buf(), store))?;
    let in_cluster = env.node == aexec_testenv::env::NodeKind::Real;
    if operator.is_some() && !in_cluster {
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
    let where_recorded = match store {
        RecordingStore::Local => env.recordings_dir().display().to_string(),
        RecordingStore::S3 => format!("s3://{}", env.s3.bucket),
    };
    if in_cluster {
        println!(
            "Node: {} (kubelet, containerd, runc); the operator runs in the cluster (helm release \
             aexec-operator in aexec-system, 2 replicas), recordings in {where_recorded}",
            aexec_testenv::node::NODE_NAME
        );
    } else if operator.is_some() {
        println!(
            "Operator: {} (the chart's ServiceAccount), recordings in {where_recorded}",
            TestEnv::shared_replica().api,
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
        .env(
            "AEXEC_NODE",
            match env.node {
                aexec_testenv::NodeKind::Real => "real",
                aexec_testenv::NodeKind::Kwok => "kwok",
            },
        )
        .env(
            "AEXEC_POD_IMAGE",
            aexec_testenv::images::BUSYBOX.reference(),
        )
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
