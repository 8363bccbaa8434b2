//! What to run where: the exec arguments checked as kubectl checks them, `TYPE/NAME` resolved to
//! a pod the way kubectl picks one, the container defaulted like kubectl does, and whether a
//! terminal can be used. Pure functions first; the lookups that need the API at the end.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    core::v1::Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Api, Client, api::ListParams};

use crate::error::{Doing, Error, Result, explain};

/// The annotation naming the container kubectl uses by default.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// Kinds a target may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" => Kind::Pod,
            "deployment" | "deployments" | "deploy" | "deployment.apps" => Kind::Deployment,
            "replicaset" | "replicasets" | "rs" | "replicaset.apps" => Kind::ReplicaSet,
            "statefulset" | "statefulsets" | "sts" | "statefulset.apps" => Kind::StatefulSet,
            "daemonset" | "daemonsets" | "ds" | "daemonset.apps" => Kind::DaemonSet,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Deployment => "deployment",
            Kind::ReplicaSet => "replicaset",
            Kind::StatefulSet => "statefulset",
            Kind::DaemonSet => "daemonset",
        }
    }
}

/// `POD` or `TYPE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub name: String,
}

/// Parses `POD` or `TYPE/NAME`.
pub fn parse_target(s: &str) -> Result<Target> {
    let (kind, name) = match s.split_once('/') {
        None => (Kind::Pod, s),
        Some((k, n)) => (
            Kind::parse(k).ok_or_else(|| {
                Error::Usage(format!(
                    "cannot exec into a {k:?}: name a pod (POD or pod/NAME) or a workload \
                     (deploy/NAME, rs/NAME, sts/NAME, ds/NAME)"
                ))
            })?,
            n,
        ),
    };
    if name.is_empty() || name.contains('/') {
        return Err(Error::Usage(format!(
            "{s:?} is not a pod: use POD or TYPE/NAME, like web-0 or deploy/web"
        )));
    }
    Ok(Target {
        kind,
        name: name.to_owned(),
    })
}

/// The positional words and the words after `--`, checked like kubectl exec checks them.
pub fn split_exec_args(target: &[String], command: &[String]) -> Result<(Target, Vec<String>)> {
    match (target, command) {
        ([], _) => Err(Error::Usage(
            "name the pod and the command: kubectl aexec POD -- COMMAND [ARGS...] (see --help)"
                .into(),
        )),
        ([pod, rest @ ..], _) if !rest.is_empty() => Err(Error::Usage(format!(
            "put `--` before the command: kubectl aexec {pod} -- {} (aexec POD COMMAND is not \
             supported, as with kubectl exec)",
            rest.join(" ")
        ))),
        ([_], []) => Err(Error::Usage(format!(
            "no command given: add it after `--`, like kubectl aexec {} -- sh",
            target[0]
        ))),
        // A command the operator could not send to the node is refused before anything is
        // created (the schema would refuse it too).
        ([pod], cmd) => match aexec_crds::command_too_long(cmd) {
            Some(why) => Err(Error::Usage(why)),
            None => Ok((parse_target(pod)?, cmd.to_vec())),
        },
        _ => unreachable_args(),
    }
}

fn unreachable_args() -> Result<(Target, Vec<String>)> {
    Err(Error::Usage(
        "name one pod and the command after `--`".into(),
    ))
}

/// Whether the session asks for a terminal, and the warning to print: kubectl's rules (`-t`
/// without `-i` is silently dropped; with `-i` but a stdin that is not a terminal it is dropped
/// with kubectl's warning).
pub fn tty_decision(
    stdin: bool,
    tty: bool,
    stdin_is_terminal: bool,
) -> (bool, Option<&'static str>) {
    match (stdin, tty, stdin_is_terminal) {
        (_, false, _) => (false, None),
        (false, true, _) => (false, None),
        (true, true, false) => (
            false,
            Some("Unable to use a TTY - input is not a terminal or the right kind of file"),
        ),
        (true, true, true) => (true, None),
    }
}

/// The container to use and a notice to print (kubectl's "Defaulted container" line).
pub fn resolve_container(pod: &Pod, requested: Option<&str>) -> Result<(String, Option<String>)> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let containers: Vec<String> = spec
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let ephemeral: Vec<String> = spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .map(|e| e.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    if let Some(c) = requested {
        if containers.iter().chain(&ephemeral).any(|n| n == c) {
            return Ok((c.to_owned(), None));
        }
        return Err(Error::Usage(format!(
            "container {c:?} not found in pod {name}: its containers are {}; pick one with -c",
            containers.join(", ")
        )));
    }
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
        .filter(|c| containers.contains(c));
    if let Some(c) = annotated {
        return Ok((c.clone(), None));
    }
    let first = containers
        .first()
        .cloned()
        .ok_or_else(|| Error::Usage(format!("pod {name} has no containers")))?;
    let notice = (containers.len() > 1).then(|| {
        format!(
            "Defaulted container {first:?} out of: {}",
            containers.join(", ")
        )
    });
    Ok((first, notice))
}

/// The rank kubectl gives a pod when it picks one for a workload (reverse of
/// `controller.ActivePods`): running and ready for longest first, fewer restarts, older.
fn rank(pod: &Pod) -> impl Ord {
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => 3,
        Some("Unknown") => 2,
        Some("Pending") => 1,
        _ => 0,
    };
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    let ready_since = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0));
    let ready = ready_since.is_some();
    let restarts: i32 = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        pod.metadata.deletion_timestamp.is_none(),
        assigned,
        phase,
        ready,
        // Ready longer (earlier time) ranks higher.
        std::cmp::Reverse(ready_since.flatten()),
        std::cmp::Reverse(restarts),
        std::cmp::Reverse(created),
    )
}

/// The pod kubectl would pick among a workload's pods.
pub fn choose_pod(pods: &[Pod]) -> Option<&Pod> {
    pods.iter().max_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            // Deterministic among equals: the alphabetically first name.
            .then_with(|| b.metadata.name.cmp(&a.metadata.name))
    })
}

/// A label selector as a query string (`matchLabels` and `matchExpressions`).
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .as_ref()
        .map(|m: &BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({values})", e.key),
        });
    }
    parts.join(",")
}

/// Finds the pod a target names, in `namespace`.
/// The pod selector of the workload `target` names (`None` when it has no spec).
async fn selector_of<K>(
    client: &Client,
    namespace: &str,
    target: &Target,
    what: &str,
    selector: impl FnOnce(K) -> Option<LabelSelector>,
) -> Result<Option<LabelSelector>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object = Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(&target.name)
        .await
        .map_err(|e| explain(&e, what, Doing::Target))?
        .ok_or_else(|| {
            Error::Usage(format!(
                "{} {:?} not found in namespace {namespace:?}",
                target.kind.name(),
                target.name
            ))
        })?;
    Ok(selector(object))
}

pub async fn find_pod(client: &Client, namespace: &str, target: &Target) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if target.kind == Kind::Pod {
        return match pods.get_opt(&target.name).await {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(Error::Usage(format!(
                "pod {:?} not found in namespace {namespace:?} (kubectl get pods -n {namespace})",
                target.name
            ))),
            Err(e) => Err(explain(
                &e,
                &format!("reading pod {}", target.name),
                Doing::Target,
            )),
        };
    }
    let what = format!("reading {}/{}", target.kind.name(), target.name);
    let selector = match target.kind {
        Kind::Deployment => {
            selector_of::<Deployment>(client, namespace, target, &what, |d| {
                d.spec.map(|s| s.selector)
            })
            .await?
        }
        Kind::ReplicaSet => {
            selector_of::<ReplicaSet>(client, namespace, target, &what, |r| {
                r.spec.map(|s| s.selector)
            })
            .await?
        }
        Kind::StatefulSet => {
            selector_of::<StatefulSet>(client, namespace, target, &what, |s| {
                s.spec.map(|s| s.selector)
            })
            .await?
        }
        Kind::DaemonSet => {
            selector_of::<DaemonSet>(client, namespace, target, &what, |d| {
                d.spec.map(|s| s.selector)
            })
            .await?
        }
        Kind::Pod => None,
    };
    let selector = selector.map(|s| selector_string(&s)).unwrap_or_default();
    if selector.is_empty() {
        return Err(Error::Usage(format!(
            "{}/{} has no pod selector",
            target.kind.name(),
            target.name
        )));
    }
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            explain(
                &e,
                &format!("listing the pods of {}/{}", target.kind.name(), target.name),
                Doing::Target,
            )
        })?;
    choose_pod(&list.items).cloned().ok_or_else(|| {
        Error::Usage(format!(
            "{}/{} has no pods (selector {selector})",
            target.kind.name(),
            target.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn exec_args_like_kubectl() {
        let (t, cmd) = split_exec_args(&s(&["web"]), &s(&["sh", "-c", "id"])).expect("ok");
        assert_eq!(
            t,
            Target {
                kind: Kind::Pod,
                name: "web".into()
            }
        );
        assert_eq!(cmd, s(&["sh", "-c", "id"]));
        let e = split_exec_args(&s(&["web", "ls", "/"]), &[]).expect_err("no --");
        assert_eq!(
            e.to_string(),
            "put `--` before the command: kubectl aexec web -- ls / (aexec POD COMMAND is not supported, as with kubectl exec)"
        );
        let e = split_exec_args(&s(&["web"]), &[]).expect_err("no command");
        assert!(e.to_string().contains("no command given"), "{e}");
        let e = split_exec_args(&[], &s(&["id"])).expect_err("no pod");
        assert!(e.to_string().contains("name the pod"), "{e}");
        // A command that cannot reach the node is refused before anything is asked.
        let max = aexec_crds::MAX_COMMAND_URL_BYTES;
        let mut fits = vec!["a".repeat(4000); 15];
        fits.push("a".repeat(max - 15 * 4009 - 9));
        assert_eq!(aexec_crds::command_url_bytes(&fits), max);
        assert!(split_exec_args(&s(&["web"]), &fits).is_ok());
        let mut over = fits.clone();
        over[0].push('a');
        let e = split_exec_args(&s(&["web"]), &over).expect_err("too long");
        assert!(
            e.to_string()
                .starts_with("the command is too long to reach the pod"),
            "{e}"
        );
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("deploy/api").expect("ok").kind,
            Kind::Deployment
        );
        assert_eq!(
            parse_target("pod/list").expect("ok"),
            Target {
                kind: Kind::Pod,
                name: "list".into()
            }
        );
        assert_eq!(parse_target("sts/db").expect("ok").kind, Kind::StatefulSet);
        assert!(
            parse_target("svc/api")
                .expect_err("svc")
                .to_string()
                .contains("cannot exec into a \"svc\"")
        );
        assert!(parse_target("deploy/").is_err());
        assert!(parse_target("a/b/c").is_err());
    }

    #[test]
    fn tty_rules_match_kubectl() {
        assert_eq!(tty_decision(true, true, true), (true, None));
        assert_eq!(tty_decision(false, true, true), (false, None));
        let (tty, warn) = tty_decision(true, true, false);
        assert!(!tty);
        assert_eq!(
            warn,
            Some("Unable to use a TTY - input is not a terminal or the right kind of file")
        );
        assert_eq!(tty_decision(true, false, false), (false, None));
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn containers_default_like_kubectl() {
        let two = pod(json!({"metadata": {"name": "web"},
            "spec": {"containers": [{"name": "app"}, {"name": "sidecar"}]}}));
        let (c, notice) = resolve_container(&two, None).expect("ok");
        assert_eq!(c, "app");
        assert_eq!(
            notice.as_deref(),
            Some("Defaulted container \"app\" out of: app, sidecar")
        );
        assert_eq!(
            resolve_container(&two, Some("sidecar")).expect("ok"),
            ("sidecar".into(), None)
        );
        let e = resolve_container(&two, Some("db")).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "container \"db\" not found in pod web: its containers are app, sidecar; pick one with -c"
        );
        let annotated = pod(json!({"metadata": {"name": "web",
                "annotations": {DEFAULT_CONTAINER_ANNOTATION: "sidecar"}},
            "spec": {"containers": [{"name": "app"}, {"name": "sidecar"}]}}));
        assert_eq!(
            resolve_container(&annotated, None).expect("ok"),
            ("sidecar".into(), None)
        );
        let one =
            pod(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app"}]}}));
        assert_eq!(
            resolve_container(&one, None).expect("ok"),
            ("app".into(), None)
        );
    }

    #[test]
    fn workload_pod_choice() {
        let mk = |name: &str, phase: &str, ready: Option<&str>, restarts: i32, created: &str| {
            let mut conds = vec![];
            if let Some(t) = ready {
                conds.push(json!({"type": "Ready", "status": "True", "lastTransitionTime": t}));
            }
            pod(
                json!({"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeName": "n", "containers": [{"name": "app"}]},
                "status": {"phase": phase, "conditions": conds,
                    "containerStatuses": [{"name": "app", "restartCount": restarts, "ready": ready.is_some(),
                        "image": "i", "imageID": ""}]}}),
            )
        };
        let pods = vec![
            mk("pending", "Pending", None, 0, "2024-01-01T00:00:00Z"),
            mk(
                "young",
                "Running",
                Some("2024-01-03T00:00:00Z"),
                0,
                "2024-01-02T00:00:00Z",
            ),
            mk(
                "old",
                "Running",
                Some("2024-01-02T00:00:00Z"),
                0,
                "2024-01-01T00:00:00Z",
            ),
            mk("notready", "Running", None, 0, "2024-01-01T00:00:00Z"),
        ];
        assert_eq!(
            choose_pod(&pods).and_then(|p| p.metadata.name.as_deref()),
            Some("old")
        );
        let crashy = vec![
            mk(
                "a",
                "Running",
                Some("2024-01-02T00:00:00Z"),
                5,
                "2024-01-01T00:00:00Z",
            ),
            mk(
                "b",
                "Running",
                Some("2024-01-02T00:00:00Z"),
                0,
                "2024-01-01T00:00:00Z",
            ),
        ];
        assert_eq!(
            choose_pod(&crashy).and_then(|p| p.metadata.name.as_deref()),
            Some("b")
        );
        assert!(choose_pod(&[]).is_none());
    }

    #[test]
    fn selectors() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web", "tier": "fe"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .expect("selector");
        assert_eq!(
            selector_string(&sel),
            "app=web,tier=fe,env in (a,b),!canary"
        );
    }
}
