//! The private network namespace every control plane runs in.
//!
//! The API server refuses loopback addresses in Endpoints and EndpointSlices, and the aggregated
//! API must be reached at a real address, so the control plane needs addresses of its own. A new
//! network namespace gives it those addresses on its own loopback, with no route anywhere: nothing the
//! tests do can reach another machine. A new PID namespace makes every process of the run die
//! with it, so a crashed test leaves nothing behind.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::unix::process::CommandExt,
    path::Path,
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Set in the environment of processes inside the namespace.
pub const INSIDE_ENV: &str = "AEXEC_NETNS";
/// The API server's advertised address.
pub const APISERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The kwok node's address (the kubelet API).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// The operator's address (the aggregated API's endpoint).
pub const OPERATOR_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 3);
/// A second operator replica's address, for tests of two replicas behind the APIService.
pub const OPERATOR_IP_2: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 4);
/// The S3 server's address for pods (MinIO listens on every address of the namespace; a pod
/// cannot reach the namespace's loopback).
pub const STORE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 5);
/// Service cluster IP range; `10.96.0.1` is the `kubernetes` Service.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// True inside a namespace made by [`reexec_inside`].
pub fn inside() -> bool {
    std::env::var_os(INSIDE_ENV).is_some()
}

/// Replaces this process with `program args` run inside new network and PID namespaces
/// (`unshare`); as a non-root user, inside a new user namespace mapping them to root. The
/// program is expected to call [`setup`] first.
pub fn reexec_inside(program: &Path, args: &[String]) -> Result<std::convert::Infallible> {
    which("unshare").context(
        "`unshare` (util-linux) is needed to make the private network namespace: apt-get install util-linux",
    )?;
    which("ip").context(
        "`ip` (iproute2) is needed to set up the network namespace: apt-get install iproute2",
    )?;
    let mut cmd = Command::new("unshare");
    if !is_root() {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--net", "--pid", "--fork", "--kill-child"])
        .arg("--")
        .arg(program)
        .args(args)
        .env(INSIDE_ENV, "1");
    let err = cmd.exec();
    bail!("cannot run unshare: {err}")
}

/// Runs `program args` inside new network, PID, mount, cgroup, UTS and IPC namespaces with a
/// fresh `/proc`, and waits for it: a real node's run (see [`crate::sandbox`]). Unlike
/// [`reexec_inside`] the caller lives on, outside, to clean up and check the host afterwards.
/// Root only: the node mounts file systems and makes cgroups.
pub fn run_inside_for_real_node(
    program: &Path,
    args: &[String],
    envs: &[(&str, &str)],
) -> Result<std::process::ExitStatus> {
    which("unshare").context(
        "`unshare` (util-linux) is needed to make the private namespaces: apt-get install util-linux",
    )?;
    if !is_root() {
        bail!(
            "the real node runs containers (mounts, cgroups, containerd): run it as root \
             (the kwok environment also runs as an unprivileged user)"
        );
    }
    let status = Command::new("unshare")
        .args([
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--mount-proc",
            "--propagation",
            "private",
            "--cgroup",
            "--uts",
            "--ipc",
        ])
        .arg("--")
        .arg(program)
        .args(args)
        .env(INSIDE_ENV, "1")
        .envs(envs.iter().copied())
        .status()
        .context("cannot run unshare")?;
    Ok(status)
}

/// Brings up loopback carrying the control plane's addresses as well. (A dummy interface would
/// be the textbook choice, but sandboxes often lack its kernel module; addresses outside 127/8 on
/// `lo` are just as unreachable from outside and are not "loopback" to the API server.)
pub fn setup() -> Result<()> {
    if !inside() {
        bail!("refusing to change the network outside a private namespace ({INSIDE_ENV} unset)");
    }
    ip(&["link", "set", "lo", "up"])?;
    for addr in [APISERVER_IP, NODE_IP, OPERATOR_IP, OPERATOR_IP_2, STORE_IP] {
        ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"])?;
    }
    Ok(())
}

/// For a real node: the API server dials a Service's ClusterIP (the APIService's) before
/// kube-proxy's DNAT rewrites it, and a namespace with no default route answers "network is
/// unreachable" first. A route for the Service range to `lo` lets the lookup succeed; the
/// DNAT then sends the packet to the pod.
pub fn route_services() -> Result<()> {
    ip(&["route", "add", SERVICE_CIDR, "dev", "lo"])
}

/// The addresses as `IpAddr`, for certificates.
pub fn addresses() -> Vec<IpAddr> {
    vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(APISERVER_IP),
        IpAddr::V4(NODE_IP),
        IpAddr::V4(OPERATOR_IP),
        IpAddr::V4(OPERATOR_IP_2),
        IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
    ]
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn is_root() -> bool {
    // The effective uid of this process, from procfs (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn which(program: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        bail!("{program} not found on PATH")
    }
}
