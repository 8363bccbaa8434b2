//! `kubectl cp`'s argument forms and the commands run in the pod, as kubectl builds them
//! (`extractFileSpec`, `copyToPod`, `copyFromPod` in `k8s.io/kubectl/pkg/cmd/cp`). Pure: no I/O.
//!
//! Remote paths are `/`-separated strings with Go's `path.Clean` semantics (the container is
//! Linux); local paths are [`PathBuf`]s.

use std::path::{Component, Path, PathBuf};

use super::CpError;

/// One side of a copy: `PATH` (local) or `[[NAMESPACE/]POD:]PATH` (in a pod).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A path on this machine.
    Local(PathBuf),
    /// A path in a pod's container; `namespace` is `None` when the argument did not give one.
    Pod {
        namespace: Option<String>,
        pod: String,
        path: String,
    },
}

/// Which way the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the pod to this machine (`tar cf -` in the pod, [`super::untar`] here).
    Download,
    /// From this machine to the pod ([`super::mktar`] here, `tar -xmf -` in the pod).
    Upload,
}

/// A copy between one pod path and one local path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub direction: Direction,
    pub namespace: Option<String>,
    pub pod: String,
    /// The path in the container, as given.
    pub pod_path: String,
    /// The local path, as given.
    pub local: PathBuf,
}

const FORM: &str = "use [[NAMESPACE/]POD:]PATH for a path in a pod (e.g. web-0:/tmp/out.txt or \
                    prod/web-0:/var/log) and a path without ':' for a local one";

/// Parses one argument like kubectl's `extractFileSpec`: no `:` is a local path; otherwise the
/// text before the first `:` is `POD` or `NAMESPACE/POD` and the rest is the path in the pod.
pub fn parse_location(arg: &str) -> Result<Location, CpError> {
    let Some(i) = arg.find(':') else {
        if arg.is_empty() {
            return Err(CpError::Usage(format!(
                "a local path is empty: give a file or directory, e.g. ./out.txt; {FORM}"
            )));
        }
        return Ok(Location::Local(PathBuf::from(arg)));
    };
    let (target, path) = (&arg[..i], &arg[i + 1..]);
    let pieces: Vec<&str> = target.split('/').collect();
    let (namespace, pod) = match pieces.as_slice() {
        [pod] if !pod.is_empty() => (None, *pod),
        [ns, pod] if !ns.is_empty() && !pod.is_empty() => (Some(ns.to_string()), *pod),
        _ => {
            return Err(CpError::Usage(format!(
                "{arg:?} is not a valid copy location: {FORM}"
            )));
        }
    };
    if path.is_empty() {
        return Err(CpError::Usage(format!(
            "the path in the pod is empty in {arg:?}: give the file or directory after the ':', \
             e.g. {target}:/tmp/out.txt"
        )));
    }
    Ok(Location::Pod {
        namespace,
        pod: pod.to_string(),
        path: path.to_string(),
    })
}

/// Parses `SRC DEST`: exactly one of them must be in a pod.
pub fn plan(src: &str, dst: &str) -> Result<Plan, CpError> {
    match (parse_location(src)?, parse_location(dst)?) {
        (
            Location::Pod {
                namespace,
                pod,
                path,
            },
            Location::Local(local),
        ) => Ok(Plan {
            direction: Direction::Download,
            namespace,
            pod,
            pod_path: path,
            local,
        }),
        (
            Location::Local(local),
            Location::Pod {
                namespace,
                pod,
                path,
            },
        ) => Ok(Plan {
            direction: Direction::Upload,
            namespace,
            pod,
            pod_path: path,
            local,
        }),
        (Location::Pod { .. }, Location::Pod { .. }) => Err(CpError::Usage(
            "both SRC and DEST are in pods, and one of them must be a local path: copy through \
             this machine in two steps, e.g. `kubectl aexec cp a-0:/tmp/f ./f` then \
             `kubectl aexec cp ./f b-0:/tmp/f`"
                .to_string(),
        )),
        (Location::Local(_), Location::Local(_)) => Err(CpError::Usage(
            "both SRC and DEST are local paths, and one of them must be in a pod: write it as \
             [[NAMESPACE/]POD:]PATH, e.g. `kubectl aexec cp web-0:/tmp/out.txt ./out.txt`"
                .to_string(),
        )),
    }
}

// The commands the pod runs are `aexec_crds::copy_command`: the operator checks a copy's
// command against the same function.

/// Where an upload of `local` to `pod_path` lands: `(entry base name, directory for -C)`, as
/// kubectl's `copyToPod` and `makeTar` compute them. kubectl asks the pod (`test -d`) whether
/// the destination is a directory, and if so copies into it under the local base name; without
/// that round trip, the destination is taken as a directory when it ends with `/` or is `.`,
/// `..` or `/` (`pod:/tmp/` puts `./x` at `/tmp/x`; `pod:/tmp/y` puts it at `/tmp/y`).
pub fn upload_target(local: &Path, pod_path: &str) -> (String, String) {
    let cleaned = clean(pod_path);
    let is_dir = pod_path.ends_with('/') || matches!(base(&cleaned).as_str(), "." | ".." | "/");
    let dest = if is_dir {
        clean(&format!("{cleaned}/{}", local_base(local)))
    } else {
        cleaned
    };
    (base(&dest), dir(&dest))
}

/// The prefix every entry of a download's tar stream starts with, to strip: kubectl's
/// `stripPathShortcuts(src.StripSlashes().Clean())` (`tar` in the pod drops a leading `/` and
/// leading `../` from member names too).
pub fn download_prefix(pod_path: &str) -> String {
    strip_path_shortcuts(&clean(pod_path.trim_start_matches('/')))
}

/// kubectl's `stripPathShortcuts`: leading `../` removed repeatedly; `.` and `..` become empty.
fn strip_path_shortcuts(p: &str) -> String {
    let mut p = p;
    while let Some(rest) = p.strip_prefix("../") {
        p = rest;
    }
    if p == "." || p == ".." {
        return String::new();
    }
    p.strip_prefix('/').unwrap_or(p).to_string()
}

/// Go's `path.Clean`: the shortest equivalent `/`-path, lexically (`""` is `"."`).
pub(crate) fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                _ if rooted => {}
                _ => out.push(".."),
            },
            name => out.push(name),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `path.Base`: the last element, trailing slashes ignored (`"/"` for the root, `"."` for
/// an empty path).
fn base(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Go's `path.Dir`: everything before the last element, cleaned (`"."` when there is none).
fn dir(p: &str) -> String {
    match p.rfind('/') {
        Some(i) => clean(&p[..=i]),
        None => ".".to_string(),
    }
}

/// Go's `filepath.Base(filepath.Clean(local))`, from the path's components.
fn local_base(local: &Path) -> String {
    let mut parts: Vec<Component> = Vec::new();
    for c in local.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(parts.last(), Some(Component::Normal(_))) => {
                parts.pop();
            }
            Component::ParentDir if matches!(parts.last(), Some(Component::RootDir)) => {}
            c => parts.push(c),
        }
    }
    match parts.last() {
        Some(Component::Normal(name)) => name.to_string_lossy().into_owned(),
        Some(Component::ParentDir) => "..".to_string(),
        Some(Component::RootDir) | Some(Component::Prefix(_)) => "/".to_string(),
        Some(Component::CurDir) | None => ".".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pod(ns: Option<&str>, pod: &str, path: &str) -> Location {
        Location::Pod {
            namespace: ns.map(String::from),
            pod: pod.to_string(),
            path: path.to_string(),
        }
    }

    fn usage(r: Result<impl std::fmt::Debug, CpError>) -> String {
        match r {
            Err(CpError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn a_path_without_colon_is_local() {
        assert_eq!(
            parse_location("./out.txt").unwrap(),
            Location::Local(PathBuf::from("./out.txt"))
        );
        assert_eq!(
            parse_location("/tmp/a b").unwrap(),
            Location::Local(PathBuf::from("/tmp/a b"))
        );
    }

    #[test]
    fn pod_and_namespaced_pod_forms() {
        assert_eq!(
            parse_location("web-0:/tmp/x").unwrap(),
            pod(None, "web-0", "/tmp/x")
        );
        assert_eq!(
            parse_location("prod/web-0:/var/log").unwrap(),
            pod(Some("prod"), "web-0", "/var/log")
        );
        // Only the first ':' separates; the path may contain more.
        assert_eq!(
            parse_location("web-0:a:b").unwrap(),
            pod(None, "web-0", "a:b")
        );
        // A relative path is relative to the container's working directory.
        assert_eq!(
            parse_location("web-0:data").unwrap(),
            pod(None, "web-0", "data")
        );
    }

    #[test]
    fn a_leading_colon_is_refused() {
        let m = usage(parse_location(":/tmp/x"));
        assert!(m.contains("not a valid copy location"), "{m}");
        assert!(m.contains("[[NAMESPACE/]POD:]PATH"), "{m}");
    }

    #[test]
    fn too_many_slashes_before_the_colon_are_refused() {
        let m = usage(parse_location("a/b/c:/tmp"));
        assert!(
            m.contains("\"a/b/c:/tmp\" is not a valid copy location"),
            "{m}"
        );
    }

    #[test]
    fn an_empty_namespace_or_pod_is_refused() {
        for arg in ["prod/:/tmp", "/web:/tmp"] {
            let m = usage(parse_location(arg));
            assert!(m.contains("not a valid copy location"), "{arg}: {m}");
        }
    }

    #[test]
    fn an_empty_path_is_refused_with_an_example() {
        let m = usage(parse_location("web-0:"));
        assert!(m.contains("the path in the pod is empty"), "{m}");
        assert!(m.contains("web-0:/tmp/out.txt"), "{m}");
        let m = usage(parse_location(""));
        assert!(m.contains("a local path is empty"), "{m}");
    }

    #[test]
    fn plan_download_and_upload() {
        assert_eq!(
            plan("prod/web-0:/var/log", "./logs").unwrap(),
            Plan {
                direction: Direction::Download,
                namespace: Some("prod".into()),
                pod: "web-0".into(),
                pod_path: "/var/log".into(),
                local: PathBuf::from("./logs"),
            }
        );
        assert_eq!(
            plan("./conf", "web-0:/etc/app/").unwrap(),
            Plan {
                direction: Direction::Upload,
                namespace: None,
                pod: "web-0".into(),
                pod_path: "/etc/app/".into(),
                local: PathBuf::from("./conf"),
            }
        );
    }

    #[test]
    fn plan_between_two_pods_is_refused() {
        let m = usage(plan("a-0:/tmp/f", "b-0:/tmp/f"));
        assert!(m.contains("one of them must be a local path"), "{m}");
        assert!(m.contains("two steps"), "{m}");
    }

    #[test]
    fn plan_between_two_local_paths_is_refused() {
        let m = usage(plan("./a", "./b"));
        assert!(m.contains("one of them must be in a pod"), "{m}");
        assert!(m.contains("kubectl aexec cp web-0:/tmp/out.txt"), "{m}");
    }

    #[test]
    fn plan_reports_the_bad_argument_first() {
        let m = usage(plan("a/b/c:x", "./b"));
        assert!(m.contains("a/b/c:x"), "{m}");
    }

    #[test]
    fn upload_target_to_a_file_path() {
        let t = |l: &str, p: &str| upload_target(Path::new(l), p);
        assert_eq!(t("./a.txt", "/tmp/b.txt"), ("b.txt".into(), "/tmp".into()));
        assert_eq!(
            t("a.txt", "/tmp//x/../b.txt"),
            ("b.txt".into(), "/tmp".into())
        );
        assert_eq!(t("a.txt", "b.txt"), ("b.txt".into(), ".".into()));
        assert_eq!(t("a.txt", "/b.txt"), ("b.txt".into(), "/".into()));
    }

    #[test]
    fn upload_target_into_a_directory() {
        let t = |l: &str, p: &str| upload_target(Path::new(l), p);
        assert_eq!(t("./conf", "/etc/app/"), ("conf".into(), "/etc/app".into()));
        assert_eq!(
            t("/x/conf/", "/etc/app/"),
            ("conf".into(), "/etc/app".into())
        );
        assert_eq!(t("a.txt", "/"), ("a.txt".into(), "/".into()));
        assert_eq!(t("a.txt", "."), ("a.txt".into(), ".".into()));
        assert_eq!(t("a.txt", "/tmp/.."), ("a.txt".into(), "/".into()));
        assert_eq!(t("a.txt", ".."), ("a.txt".into(), "..".into()));
        // kubectl joins the local base name as Go cleans it: `.` is the directory itself.
        assert_eq!(t(".", "/tmp/"), ("tmp".into(), "/".into()));
        assert_eq!(t("x/..", "/tmp/"), ("tmp".into(), "/".into()));
    }

    #[test]
    fn download_prefix_is_kubectls() {
        assert_eq!(download_prefix("/var/log"), "var/log");
        assert_eq!(download_prefix("/var/log/"), "var/log");
        assert_eq!(download_prefix("//var//./log"), "var/log");
        assert_eq!(download_prefix("data"), "data");
        assert_eq!(download_prefix("./data"), "data");
        assert_eq!(download_prefix("../../data"), "data");
        assert_eq!(download_prefix("/tmp/../etc/x"), "etc/x");
        assert_eq!(download_prefix("/"), "");
        assert_eq!(download_prefix("."), "");
        assert_eq!(download_prefix(".."), "");
        assert_eq!(download_prefix("../.."), "");
    }

    #[test]
    fn clean_base_and_dir_follow_go() {
        assert_eq!(clean(""), ".");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("/.."), "/");
        assert_eq!(clean("a/../.."), "..");
        assert_eq!(clean("a//b/./c/"), "a/b/c");
        assert_eq!(base("/a/b/"), "b");
        assert_eq!(base("/"), "/");
        assert_eq!(base(""), ".");
        assert_eq!(dir("/a/b"), "/a");
        assert_eq!(dir("/a"), "/");
        assert_eq!(dir("a"), ".");
    }
}
