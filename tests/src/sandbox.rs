//! The private mount and cgroup namespaces a real node runs in, so that it leaves nothing behind
//! on the host.
//!
//! kubelet, containerd, runc and the CNI plugins write to fixed host paths whatever data
//! directories they are given (`/var/lib/kubelet/device-plugins`, `/var/log/pods`,
//! `/var/lib/cni`, `/run/containerd/s`, `/usr/libexec/kubernetes`, ...), check kernel sysctls,
//! and make cgroups. Inside the run's own mount namespace each of those trees is an overlay
//! whose writes land in the run directory; the three sysctls kubelet insists on see files with
//! the values it expects (bind mounts in this namespace only, so the host keeps its own); and
//! the cgroup hierarchies are mounted again inside the run's cgroup namespace, rooted at the
//! cgroup the run started in, so every cgroup the node makes sits under
//! `<that cgroup>/aexec-<run id>` and is removed by the runner afterwards
//! ([`remove_cgroups`]). What the host looks like before and after is compared by
//! [`crate::host`].

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Host trees the node's components write to at fixed paths: overlaid, writes go to the run.
pub const OVERLAID: [&str; 6] = [
    "/var/lib",
    "/var/log",
    "/run",
    "/usr/libexec",
    "/opt",
    "/etc",
];

/// The kernel settings kubelet checks with `protectKernelDefaults: true` (it refuses to start
/// when one differs; with `false` it would rewrite them on the host), and the values it wants.
pub const KUBELET_SYSCTLS: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// The cgroup every pod of the run lives under (kubelet's `cgroupRoot`), relative to the run's
/// cgroup namespace.
pub fn cgroup_root(run_id: &str) -> String {
    format!("/aexec-{run_id}")
}

fn mount(args: &[&str]) -> Result<()> {
    // -n: no entry in the host's /run/mount/utab (libmount's table), which a first run made.
    let out = Command::new("mount")
        .arg("-n")
        .args(args)
        .output()
        .context("running mount (util-linux)")?;
    if !out.status.success() {
        bail!(
            "mount {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One cgroup hierarchy as mounted on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted (`/sys/fs/cgroup/memory`).
    pub mount_point: PathBuf,
    /// `cgroup` (v1) or `cgroup2`.
    pub fs_type: String,
    /// The mount's super options for v1 (`memory`, `cpu,cpuacct`, `none,name=systemd`).
    pub options: String,
}

/// The cgroup hierarchies in `mountinfo` (the text of `/proc/self/mountinfo`).
pub fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let fs_type = r.next()?;
            let _source = r.next()?;
            let superopts = r.next().unwrap_or("");
            if fs_type != "cgroup" && fs_type != "cgroup2" {
                return None;
            }
            // Keep only the options that select the hierarchy (controllers, name=).
            let options = superopts
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro" | "relatime" | "nosuid" | "nodev" | "noexec"))
                .collect::<Vec<_>>()
                .join(",");
            Some(Hierarchy {
                mount_point: PathBuf::from(mount_point),
                fs_type: fs_type.to_owned(),
                options,
            })
        })
        .collect()
}

/// Where this process sits in each hierarchy, from `/proc/self/cgroup` (`ID:CONTROLLERS:PATH`),
/// keyed by the controllers field (`memory`, `name=systemd`, empty for v2).
pub fn own_cgroups(proc_cgroup: &str) -> Vec<(String, String)> {
    proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// The directory of the hierarchy mounted at `h` that holds this process's cgroup, on the
/// host (outside the cgroup namespace).
pub fn own_cgroup_dir(h: &Hierarchy, own: &[(String, String)]) -> Option<PathBuf> {
    let key = if h.fs_type == "cgroup2" {
        String::new()
    } else {
        h.options
            .split(',')
            .filter(|o| *o != "none")
            .collect::<Vec<_>>()
            .join(",")
    };
    let path = own.iter().find(|(k, _)| *k == key).map(|(_, p)| p)?;
    Some(h.mount_point.join(path.trim_start_matches('/')))
}

/// Sets up the mount namespace for a real node (run as root inside `unshare --mount --cgroup`,
/// with `/proc` already mounted for the new PID namespace): overlays over [`OVERLAID`],
/// kubelet's sysctls, and the cgroup hierarchies rooted at this run's cgroup namespace with
/// the run's cgroup root made in each.
pub fn setup(dir: &Path, run_id: &str) -> Result<()> {
    for tree in OVERLAID {
        if !Path::new(tree).is_dir() {
            continue;
        }
        let base = dir
            .join("overlay")
            .join(tree.trim_start_matches('/').replace('/', "-"));
        let (upper, work) = (base.join("upper"), base.join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        mount(&[
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!(
                "lowerdir={tree},upperdir={},workdir={}",
                upper.display(),
                work.display()
            ),
            tree,
        ])
        .with_context(|| format!("overlaying {tree} (the kernel needs overlayfs)"))?;
    }
    let sysctl_dir = dir.join("sysctl");
    std::fs::create_dir_all(&sysctl_dir)?;
    for (name, want) in KUBELET_SYSCTLS {
        let path = Path::new("/proc/sys").join(name);
        let have = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if have.trim() == want {
            continue;
        }
        let file = sysctl_dir.join(name.replace('/', "."));
        std::fs::write(&file, format!("{want}\n"))?;
        mount(&[
            "--bind",
            &file.display().to_string(),
            &path.display().to_string(),
        ])?;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let found = hierarchies(&mountinfo);
    if found.is_empty() {
        bail!(
            "no cgroup hierarchy is mounted: kubelet needs cgroups (v1 or v2) under /sys/fs/cgroup"
        );
    }
    // A fresh tmpfs, then every hierarchy again: mounted inside this cgroup namespace, each
    // shows this run's cgroup as its root.
    mount(&[
        "-t",
        "tmpfs",
        "-o",
        "mode=755",
        "cgroup-root",
        "/sys/fs/cgroup",
    ])?;
    let root = cgroup_root(run_id);
    for h in &found {
        std::fs::create_dir_all(&h.mount_point)?;
        let mp = h.mount_point.display().to_string();
        if h.fs_type == "cgroup2" {
            mount(&["-t", "cgroup2", "cgroup2", &mp])?;
        } else {
            mount(&["-t", "cgroup", "-o", &h.options, "cgroup", &mp])?;
        }
        let run_cgroup = h.mount_point.join(root.trim_start_matches('/'));
        std::fs::create_dir_all(&run_cgroup)
            .with_context(|| format!("creating {}", run_cgroup.display()))?;
        if h.options.split(',').any(|o| o == "cpuset") {
            // A new cpuset is empty: give it its parent's CPUs and memory nodes.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = std::fs::read_to_string(h.mount_point.join(f))?;
                std::fs::write(run_cgroup.join(f), v.trim())
                    .with_context(|| format!("writing {}", run_cgroup.join(f).display()))?;
            }
        }
    }
    Ok(())
}

/// Removes `aexec-<run id>` and everything under it from each hierarchy, as seen from the host
/// (run by the runner after the namespace's processes are gone). Returns what could not be
/// removed.
pub fn remove_cgroups(run_id: &str) -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = own_cgroups(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    let mut left = Vec::new();
    for h in hierarchies(&mountinfo) {
        let Some(base) = own_cgroup_dir(&h, &own) else {
            continue;
        };
        let dir = base.join(cgroup_root(run_id).trim_start_matches('/'));
        if !dir.exists() {
            continue;
        }
        // Processes of the run may take a moment to leave their cgroups after the kill.
        let start = std::time::Instant::now();
        loop {
            match remove_tree(&dir) {
                Ok(()) => break,
                Err(e) if start.elapsed() > std::time::Duration::from_secs(20) => {
                    left.push(format!("{}: {e}", dir.display()));
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }
    left
}

/// rmdir of a cgroup directory tree, deepest first (cgroupfs directories are removed with
/// rmdir even though they list files).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";

    #[test]
    fn hierarchies_and_own_cgroups_are_read() {
        let hs = hierarchies(MOUNTINFO);
        let opts: Vec<&str> = hs.iter().map(|h| h.options.as_str()).collect();
        assert_eq!(opts, vec!["cpu", "memory", "name=systemd", ""]);
        let own = own_cgroups("4:memory:/process_api/abc\n1:cpu:/\n9:name=systemd:/\n0::/\n");
        assert_eq!(
            own_cgroup_dir(&hs[1], &own),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"))
        );
        assert_eq!(
            own_cgroup_dir(&hs[0], &own),
            Some(PathBuf::from("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(
            own_cgroup_dir(&hs[2], &own),
            Some(PathBuf::from("/sys/fs/cgroup/systemd"))
        );
        assert_eq!(
            own_cgroup_dir(&hs[3], &own),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }
}
