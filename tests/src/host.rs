//! What a run must leave as it found it on the host: kernel settings, firewall rules, mounts,
//! network links, kernel modules, the directories node components write to, and cgroups. The
//! runner takes a [`Snapshot`] before a real-node run and after it (outside its namespaces)
//! and fails the run on any difference.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

/// Sysctls that change on their own (counters, random values, the last PID): not settings.
const VOLATILE: [&str; 14] = [
    "kernel/random/",
    "kernel/ns_last_pid",
    "kernel/pty/nr",
    "fs/dentry-state",
    "fs/inode-nr",
    "fs/inode-state",
    "fs/file-nr",
    "fs/quota/",
    "net/netfilter/nf_conntrack_count",
    "kernel/tainted",
    "vm/stat_refresh",
    "kernel/sched_domain/",
    "fs/binfmt_misc/",
    "kernel/usermodehelper/",
];

/// Trees whose top-level entries must not change (a node component writing to a fixed path
/// would add one: `/var/lib/kubelet`, `/run/containerd`, `/etc/cni`, ...).
const WATCHED_DIRS: [&str; 7] = [
    "/var/lib",
    "/var/log",
    "/run",
    "/etc",
    "/usr/libexec",
    "/opt",
    "/var/run",
];

/// The host as a run must leave it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub sysctls: BTreeMap<String, String>,
    pub iptables: BTreeMap<String, String>,
    pub mounts: BTreeSet<String>,
    pub links: BTreeSet<String>,
    pub modules: BTreeSet<String>,
    pub entries: BTreeSet<String>,
    pub cgroups: BTreeSet<String>,
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read_sysctls(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if VOLATILE.iter().any(|v| name.starts_with(v)) {
            continue;
        }
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => read_sysctls(&path, &format!("{name}/"), out),
            Ok(_) => {
                // Write-only or refused entries are skipped; they hold no setting to compare.
                if let Ok(v) = std::fs::read_to_string(&path) {
                    out.insert(name, v.trim().to_owned());
                }
            }
            Err(_) => {}
        }
    }
}

/// `iptables-save` without its timestamps and packet counters.
fn rules(program: &str) -> String {
    run(program, &[])
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.find(" [") {
            Some(i) if l.starts_with(':') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn cgroup_dirs(dir: &Path, depth: usize, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.insert(e.path().display().to_string());
            if depth > 0 {
                cgroup_dirs(&e.path(), depth - 1, out);
            }
        }
    }
}

impl Snapshot {
    /// Reads the host as this process sees it (call it outside the run's namespaces).
    pub fn take() -> Snapshot {
        let mut s = Snapshot::default();
        read_sysctls(Path::new("/proc/sys"), "", &mut s.sysctls);
        for program in ["iptables-save", "ip6tables-save"] {
            s.iptables.insert(program.into(), rules(program));
        }
        s.mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mp = left.split_whitespace().nth(4)?;
                let mut r = right.split_whitespace();
                Some(format!("{mp} {} {}", r.next()?, r.next()?))
            })
            .collect();
        s.links = run("ip", &["-o", "link", "show"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_owned()))
            .collect();
        s.modules = std::fs::read_to_string("/proc/modules")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        for dir in WATCHED_DIRS {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    s.entries.insert(e.path().display().to_string());
                }
            }
        }
        // Every hierarchy's top level, and this process's own cgroup two levels down (a run's
        // cgroups live there; the rest of the tree belongs to other processes and moves).
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = crate::sandbox::own_cgroups(
            &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        );
        for h in crate::sandbox::hierarchies(&mountinfo) {
            cgroup_dirs(&h.mount_point, 0, &mut s.cgroups);
            if let Some(mine) = crate::sandbox::own_cgroup_dir(&h, &own)
                && mine != h.mount_point
            {
                cgroup_dirs(&mine, 2, &mut s.cgroups);
            }
        }
        s
    }

    /// What differs from `before`, one line each (empty when nothing does).
    pub fn changes_since(&self, before: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        map_diff("sysctl", &before.sysctls, &self.sysctls, &mut out);
        map_diff("firewall", &before.iptables, &self.iptables, &mut out);
        set_diff("mount", &before.mounts, &self.mounts, &mut out);
        set_diff("network link", &before.links, &self.links, &mut out);
        set_diff("kernel module", &before.modules, &self.modules, &mut out);
        set_diff("path", &before.entries, &self.entries, &mut out);
        set_diff("cgroup", &before.cgroups, &self.cgroups, &mut out);
        out
    }

    /// A one-line account of what was compared.
    pub fn summary(&self) -> String {
        format!(
            "{} sysctls, {} firewall tables, {} mounts, {} links, {} modules, {} paths, {} cgroups",
            self.sysctls.len(),
            self.iptables.len(),
            self.mounts.len(),
            self.links.len(),
            self.modules.len(),
            self.entries.len(),
            self.cgroups.len()
        )
    }
}

fn map_diff(
    what: &str,
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    out: &mut Vec<String>,
) {
    for (k, v) in b {
        match a.get(k) {
            None => out.push(format!("{what} {k} appeared: {v}")),
            Some(old) if old != v => out.push(format!("{what} {k} changed: {old:?} -> {v:?}")),
            _ => {}
        }
    }
    for k in a.keys().filter(|k| !b.contains_key(*k)) {
        out.push(format!("{what} {k} disappeared"));
    }
}

fn set_diff(what: &str, a: &BTreeSet<String>, b: &BTreeSet<String>, out: &mut Vec<String>) {
    for k in b.difference(a) {
        out.push(format!("{what} added: {k}"));
    }
    for k in a.difference(b) {
        out.push(format!("{what} removed: {k}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named() {
        let before = Snapshot::take();
        assert!(
            before.sysctls.contains_key("vm/overcommit_memory"),
            "{}",
            before.summary()
        );
        assert!(before.changes_since(&before).is_empty());
        let mut after = before.clone();
        after
            .sysctls
            .insert("vm/overcommit_memory".into(), "9".into());
        after.entries.insert("/var/lib/kubelet".into());
        after.mounts.clear();
        let changes = after.changes_since(&before);
        assert!(
            changes
                .iter()
                .any(|c| c.starts_with("sysctl vm/overcommit_memory changed")),
            "{changes:?}"
        );
        assert!(
            changes.contains(&"path added: /var/lib/kubelet".to_owned()),
            "{changes:?}"
        );
        assert!(
            changes.iter().any(|c| c.starts_with("mount removed: ")),
            "{changes:?}"
        );
    }

    #[test]
    fn two_snapshots_of_a_quiet_host_agree() {
        // Nothing the snapshot reads may change on its own, or every run would fail.
        let a = Snapshot::take();
        let b = Snapshot::take();
        assert_eq!(b.changes_since(&a), Vec::<String>::new());
    }
}
