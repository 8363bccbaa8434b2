//! The policy engine: which `ExecPolicy` governs a session, what that policy decides for the
//! session's spec, and who may approve or deny it.
//!
//! Everything here is pure: the caller reads the policies, the labels of the target namespace
//! and pod, and the session, and this module only decides. Refusals are shaped like a Kubernetes
//! `Status` ([`Refusal`]) so the aggregated API can return them as they are.

use std::collections::BTreeMap;
use std::path::Path;

use aexec_crds::{Decision, ExecPolicy, ExecSessionSpec, PolicyDecision, UserRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// What the operator does when no ExecPolicy selects a session (`--default-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "runtime", derive(clap::ValueEnum))]
pub enum DefaultPolicy {
    /// Deny every session no policy governs (fail closed).
    #[default]
    Deny,
    /// Approve every session no policy governs (it is still recorded).
    AutoApprove,
}

/// Labels of the target, read by the caller.
#[derive(Clone, Copy, Debug)]
pub struct TargetLabels<'a> {
    /// Labels of the session's namespace.
    pub namespace: &'a BTreeMap<String, String>,
    /// Labels of the target pod.
    pub pod: &'a BTreeMap<String, String>,
}

/// A label selector that cannot be evaluated, as the API server would reject it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The operator is not one of `In`, `NotIn`, `Exists`, `DoesNotExist`.
    #[error(
        "label selector on key {key:?} uses unknown operator {operator:?} (expected In, NotIn, Exists or DoesNotExist)"
    )]
    UnknownOperator {
        /// The requirement's key.
        key: String,
        /// The operator as written.
        operator: String,
    },
    /// `In` or `NotIn` without values.
    #[error("label selector operator {operator} on key {key:?} needs at least one value")]
    MissingValues {
        /// The requirement's key.
        key: String,
        /// The operator.
        operator: String,
    },
    /// `Exists` or `DoesNotExist` with values.
    #[error("label selector operator {operator} on key {key:?} takes no values")]
    UnexpectedValues {
        /// The requirement's key.
        key: String,
        /// The operator.
        operator: String,
    },
}

/// Whether `labels` satisfy `sel`, with Kubernetes semantics.
///
/// `None` or an empty selector matches everything (an omitted selector in a policy means "all").
/// `matchLabels` and every `matchExpressions` requirement must all hold. `NotIn` matches when the
/// key is absent. The whole selector is validated before matching, so an invalid selector is an
/// error whatever the labels.
pub fn selector_matches(
    sel: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let Some(sel) = sel else {
        return Ok(true);
    };
    let expressions = sel.match_expressions.as_deref().unwrap_or_default();
    let requirements = expressions
        .iter()
        .map(Requirement::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let labels_match = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    Ok(labels_match && requirements.iter().all(|r| r.matches(labels)))
}

/// A validated `matchExpressions` entry.
enum Requirement<'s> {
    In(&'s str, &'s [String]),
    NotIn(&'s str, &'s [String]),
    Exists(&'s str),
    DoesNotExist(&'s str),
}

impl<'s> Requirement<'s> {
    fn parse(r: &'s LabelSelectorRequirement) -> Result<Self, SelectorError> {
        let key = r.key.as_str();
        let values = r.values.as_deref().unwrap_or_default();
        let err_key = || r.key.clone();
        let op = r.operator.as_str();
        match op {
            "In" | "NotIn" if values.is_empty() => Err(SelectorError::MissingValues {
                key: err_key(),
                operator: op.to_owned(),
            }),
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                Err(SelectorError::UnexpectedValues {
                    key: err_key(),
                    operator: op.to_owned(),
                })
            }
            "In" => Ok(Requirement::In(key, values)),
            "NotIn" => Ok(Requirement::NotIn(key, values)),
            "Exists" => Ok(Requirement::Exists(key)),
            "DoesNotExist" => Ok(Requirement::DoesNotExist(key)),
            _ => Err(SelectorError::UnknownOperator {
                key: err_key(),
                operator: op.to_owned(),
            }),
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match *self {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        }
    }
}

/// The policy's name (`metadata.name`), empty if it somehow has none.
pub fn policy_name(policy: &ExecPolicy) -> &str {
    policy.metadata.name.as_deref().unwrap_or_default()
}

/// The policy that governs a target: among the policies whose `namespaceSelector` matches the
/// namespace's labels and whose `podSelector` matches the pod's labels, the one with the highest
/// `spec.priority`; ties go to the alphabetically first `metadata.name`. Policies with an invalid
/// selector select nothing.
pub fn select<'p>(policies: &'p [ExecPolicy], target: &TargetLabels<'_>) -> Option<&'p ExecPolicy> {
    policies
        .iter()
        .filter(|p| {
            selector_matches(p.spec.namespace_selector.as_ref(), target.namespace) == Ok(true)
                && selector_matches(p.spec.pod_selector.as_ref(), target.pod) == Ok(true)
        })
        .min_by(|a, b| {
            b.spec
                .priority
                .cmp(&a.spec.priority)
                .then_with(|| policy_name(a).cmp(policy_name(b)))
        })
}

/// What a policy decides for a session's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Refuse the session, saying why.
    Deny {
        /// For the requester: which policy refused and which rule.
        message: String,
    },
    /// Approve at once.
    Approve,
    /// Wait for this many distinct eligible approvals.
    NeedApprovals {
        /// Approvals needed, at least 1.
        required: u32,
    },
}

fn refuse(message: impl Into<String>) -> Verdict {
    Verdict::Deny {
        message: message.into(),
    }
}

/// Whether `command` (argv) starts with one of `allowed`, by full path or by base name.
fn command_allowed(command: &[String], allowed: &[String]) -> bool {
    let Some(program) = command.first() else {
        return false;
    };
    let base = Path::new(program).file_name().and_then(|b| b.to_str());
    allowed
        .iter()
        .any(|a| a == program || base == Some(a.as_str()))
}

/// The approval rule of a policy that takes approvals: decision `RequireApproval` with an
/// `approval` section naming at least one user or group.
pub fn approval_rule(policy: &ExecPolicy) -> Option<&aexec_crds::ApprovalRule> {
    match (&policy.spec.decision, &policy.spec.approval) {
        (PolicyDecision::RequireApproval, Some(rule))
            if !(rule.users.is_empty() && rule.groups.is_empty()) =>
        {
            Some(rule)
        }
        _ => None,
    }
}

/// Approvals a rule requires, at least 1.
pub fn required_approvals(rule: &aexec_crds::ApprovalRule) -> u32 {
    u32::try_from(rule.required).unwrap_or(0).max(1)
}

/// What `policy` (or, when `None`, the operator's `default`) decides for a session's spec.
///
/// The spec's shape is checked first (terminal, standard input, command, reason), then the
/// policy's decision applies.
pub fn evaluate(
    policy: Option<&ExecPolicy>,
    default: DefaultPolicy,
    spec: &ExecSessionSpec,
) -> Verdict {
    // The schema refuses such a command since it has this rule; a session created before (or
    // under an older CRD) would be approved and then fail to start on every attach.
    if let Some(why) = aexec_crds::command_too_long(&spec.command) {
        return refuse(why);
    }
    if let Some(why) = spec.copy.as_ref().and_then(|c| copy_shape(spec, c)) {
        return refuse(why);
    }
    if spec.debug.is_some() && spec.copy.is_some() {
        return refuse("a session is a copy or a debug session, not both");
    }
    let Some(policy) = policy else {
        if let Some(debug) = &spec.debug {
            return refuse(format!(
                "no ExecPolicy governs this pod, and debugging needs one that lists the image \
                 {} in limits.debugImages",
                debug.image
            ));
        }
        return match default {
            DefaultPolicy::Deny => {
                refuse("no ExecPolicy governs this pod and the operator's default is to deny")
            }
            DefaultPolicy::AutoApprove => Verdict::Approve,
        };
    };
    let name = policy_name(policy);
    let limits = &policy.spec.limits;
    if let Some(copy) = &spec.copy {
        if !limits.allow_copy.allows(copy.direction) {
            return refuse(copy_refused(name, copy.direction, limits.allow_copy));
        }
        return decide(policy, spec);
    }
    if let Some(debug) = &spec.debug {
        let allowed = limits.debug_images.as_deref().unwrap_or_default();
        if !allowed.iter().any(|i| i == &debug.image) {
            return refuse(if allowed.is_empty() {
                format!(
                    "policy {name} allows no debugging (limits.debugImages is empty); ask the \
                     policy's owners to list the debug image {} there",
                    debug.image
                )
            } else {
                format!(
                    "policy {name} does not allow debugging with image {}: its \
                     limits.debugImages allows {}; use one of those with --image",
                    debug.image,
                    allowed.join(", ")
                )
            });
        }
    }
    if spec.tty && !limits.allow_tty {
        return refuse(format!("policy {name} does not allow a terminal (-t)"));
    }
    if spec.stdin && !limits.allow_stdin {
        return refuse(format!("policy {name} does not allow standard input (-i)"));
    }
    if let Some(allowed) = &limits.allowed_commands
        && !command_allowed(&spec.command, allowed)
    {
        return refuse(if allowed.is_empty() {
            format!("policy {name} allows no commands")
        } else {
            format!(
                "policy {name} allows only these commands: {}",
                allowed.join(", ")
            )
        });
    }
    decide(policy, spec)
}

/// Why a copy's session is not the copy it says it is, if it is not: its command must be the
/// `tar` the copy needs ([`aexec_crds::copy_command`]), with standard input for an upload
/// only, and no terminal (a terminal would mangle the tar stream).
fn copy_shape(spec: &ExecSessionSpec, copy: &aexec_crds::CopySpec) -> Option<String> {
    let operand = match copy.direction {
        aexec_crds::CopyDirection::Download => copy.path.as_str(),
        aexec_crds::CopyDirection::Upload => copy.path.rsplit('/').next().unwrap_or(&copy.path),
    };
    if operand.starts_with('-') {
        return Some(format!(
            "a copy's path may not start with '-', which tar would read as an option \
             ({operand:?}); write it as ./{operand}"
        ));
    }
    let want = aexec_crds::copy_command(copy);
    if spec.command != want {
        return Some(format!(
            "a copy's command must be the tar the copy runs ({}), not {}; use kubectl aexec cp",
            want.join(" "),
            spec.command.join(" ")
        ));
    }
    if spec.tty {
        return Some("a copy cannot have a terminal (-t): it would alter the bytes copied".into());
    }
    let upload = copy.direction == aexec_crds::CopyDirection::Upload;
    if spec.stdin != upload {
        return Some(format!(
            "a copy {} standard input: an upload sends the files on it, a download sends none",
            if upload { "needs" } else { "takes no" }
        ));
    }
    None
}

/// The refusal of a copy the policy does not allow.
fn copy_refused(
    name: &str,
    direction: aexec_crds::CopyDirection,
    allowed: aexec_crds::AllowCopy,
) -> String {
    let what = match direction {
        aexec_crds::CopyDirection::Download => "copying files out of the pod",
        aexec_crds::CopyDirection::Upload => "copying files into the pod",
    };
    let has = match allowed {
        aexec_crds::AllowCopy::None => "no copies".to_owned(),
        other => format!("only {other:?} copies"),
    };
    format!(
        "policy {name} does not allow {what} (its limits.allowCopy allows {has}); ask the \
         policy's owners to set limits.allowCopy to {} or Both",
        direction.as_str()
    )
}

/// The policy's decision, once the session's shape is allowed: the reason it requires, then
/// approve, deny or wait for approvals.
fn decide(policy: &ExecPolicy, spec: &ExecSessionSpec) -> Verdict {
    let name = policy_name(policy);
    if policy.spec.reason_required && spec.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return refuse(format!(
            "policy {name} requires a reason (kubectl aexec -r ...)"
        ));
    }
    match policy.spec.decision {
        PolicyDecision::Deny => refuse(
            policy
                .spec
                .message
                .as_deref()
                .filter(|m| !m.trim().is_empty())
                .map_or_else(|| format!("denied by policy {name}"), str::to_owned),
        ),
        PolicyDecision::AutoApprove => Verdict::Approve,
        PolicyDecision::RequireApproval => match approval_rule(policy) {
            Some(rule) => Verdict::NeedApprovals {
                required: required_approvals(rule),
            },
            None => refuse(format!(
                "policy {name} requires approvals but names no approvers"
            )),
        },
    }
}

/// A refused request, shaped like a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// HTTP status code: 403, 409 or 422.
    pub code: u16,
    /// The `Status` reason: `Forbidden`, `Conflict` or `Invalid`.
    pub reason: &'static str,
    /// For the caller.
    pub message: String,
}

impl Refusal {
    /// 403 Forbidden: the caller may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Refusal {
            code: 403,
            reason: "Forbidden",
            message: message.into(),
        }
    }

    /// 409 Conflict: not in the session's or policy's current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Refusal {
            code: 409,
            reason: "Conflict",
            message: message.into(),
        }
    }

    /// 422 Invalid: the request itself is malformed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Refusal {
            code: 422,
            reason: "Invalid",
            message: message.into(),
        }
    }
}

/// `[a, b]`
pub(crate) fn bracketed(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// Whether `user` is named by the policy's approval rule (ignoring who requested). `verb` is
/// "approve" or "deny", for the message.
pub(crate) fn check_approver(
    policy: &ExecPolicy,
    user: &UserRef,
    verb: &str,
) -> Result<(), Refusal> {
    let name = policy_name(policy);
    let Some(rule) = approval_rule(policy) else {
        return Err(Refusal::conflict(format!(
            "policy {name} does not take approvals"
        )));
    };
    if rule.users.contains(&user.username) || user.groups.iter().any(|g| rule.groups.contains(g)) {
        return Ok(());
    }
    Err(Refusal::forbidden(format!(
        "{} may not {verb} sessions under policy {name}: it accepts users {} and groups {}",
        user.username,
        bracketed(&rule.users),
        bracketed(&rule.groups)
    )))
}

/// Whether `approver` may approve a session `requester` asked for under `policy`: never the
/// requester, only under a policy that takes approvals, and only a user or group member the
/// policy names.
pub fn may_approve(
    policy: &ExecPolicy,
    requester: &UserRef,
    approver: &UserRef,
) -> Result<(), Refusal> {
    if approver.username == requester.username {
        return Err(Refusal::forbidden(
            "you requested this session; someone else must approve it",
        ));
    }
    check_approver(policy, approver, "approve")
}

/// The distinct usernames among `approvals` that count under the CURRENT `policy`, in the order
/// they first approved. The requester never counts; an approver the policy no longer names stops
/// counting.
pub fn valid_approvers<'a>(
    policy: &ExecPolicy,
    requester: &UserRef,
    approvals: &'a [Decision],
) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for a in approvals {
        let user = a.user.username.as_str();
        if !seen.contains(&user) && may_approve(policy, requester, &a.user).is_ok() {
            seen.push(user);
        }
    }
    seen
}

/// How many distinct approvals count under the current `policy` (see [`valid_approvers`]).
pub fn valid_approvals(policy: &ExecPolicy, requester: &UserRef, approvals: &[Decision]) -> u32 {
    u32::try_from(valid_approvers(policy, requester, approvals).len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn selector(v: Value) -> LabelSelector {
        serde_json::from_value(v).expect("selector")
    }

    fn policy(name: &str, spec: Value) -> ExecPolicy {
        serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1",
            "kind": "ExecPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("policy")
    }

    fn approval_policy() -> ExecPolicy {
        policy(
            "sre",
            json!({
                "decision": "RequireApproval",
                "approval": {"required": 2, "users": ["carol"], "groups": ["sre"]},
            }),
        )
    }

    fn spec(v: Value) -> ExecSessionSpec {
        let mut base = json!({
            "pod": "web-0",
            "command": ["ls", "-l"],
            "requester": {"username": "alice", "groups": ["dev"]},
        });
        if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
            for (k, val) in o {
                b.insert(k.clone(), val.clone());
            }
        }
        serde_json::from_value(base).expect("spec")
    }

    fn user(name: &str, groups: &[&str]) -> UserRef {
        UserRef {
            username: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn decision(name: &str, groups: &[&str]) -> Decision {
        serde_json::from_value(json!({
            "user": {"username": name, "groups": groups},
            "time": "2026-01-01T00:00:00Z",
        }))
        .expect("decision")
    }

    fn matches(sel: Value, l: &[(&str, &str)]) -> bool {
        selector_matches(Some(&selector(sel)), &labels(l)).expect("valid selector")
    }

    // ---- selectors

    #[test]
    fn none_and_empty_selectors_match_everything() {
        assert_eq!(selector_matches(None, &labels(&[])), Ok(true));
        assert_eq!(selector_matches(None, &labels(&[("a", "b")])), Ok(true));
        assert!(matches(json!({}), &[]));
        assert!(matches(
            json!({"matchLabels": {}, "matchExpressions": []}),
            &[("a", "b")]
        ));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let sel = json!({"matchLabels": {"app": "web", "tier": "front"}});
        assert!(matches(
            sel.clone(),
            &[("app", "web"), ("tier", "front"), ("x", "y")]
        ));
        assert!(!matches(sel.clone(), &[("app", "web")]));
        assert!(!matches(sel.clone(), &[("app", "web"), ("tier", "back")]));
        assert!(!matches(sel, &[]));
    }

    #[test]
    fn operator_in() {
        let sel = json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev", "test"]}]});
        assert!(matches(sel.clone(), &[("env", "dev")]));
        assert!(matches(sel.clone(), &[("env", "test")]));
        assert!(!matches(sel.clone(), &[("env", "prod")]));
        assert!(!matches(sel, &[]));
    }

    #[test]
    fn operator_not_in_matches_absent_keys() {
        let sel =
            json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]});
        assert!(matches(sel.clone(), &[("env", "dev")]));
        assert!(matches(sel.clone(), &[]));
        assert!(!matches(sel, &[("env", "prod")]));
    }

    #[test]
    fn operator_exists_and_does_not_exist() {
        let exists = json!({"matchExpressions": [{"key": "debug", "operator": "Exists"}]});
        assert!(matches(exists.clone(), &[("debug", "")]));
        assert!(matches(exists.clone(), &[("debug", "yes")]));
        assert!(!matches(exists, &[("other", "x")]));
        let absent = json!({"matchExpressions": [{"key": "debug", "operator": "DoesNotExist", "values": []}]});
        assert!(matches(absent.clone(), &[("other", "x")]));
        assert!(!matches(absent, &[("debug", "yes")]));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        });
        assert!(matches(sel.clone(), &[("app", "web"), ("env", "prod")]));
        assert!(!matches(sel.clone(), &[("app", "api"), ("env", "prod")]));
        assert!(!matches(sel.clone(), &[("app", "web"), ("env", "dev")]));
        assert!(!matches(
            sel,
            &[("app", "web"), ("env", "prod"), ("canary", "1")]
        ));
    }

    #[test]
    fn unknown_operator_is_an_error_naming_it() {
        let sel = selector(
            json!({"matchExpressions": [{"key": "env", "operator": "Equals", "values": ["x"]}]}),
        );
        let err = selector_matches(Some(&sel), &labels(&[("env", "x")])).expect_err("invalid");
        assert_eq!(
            err,
            SelectorError::UnknownOperator {
                key: "env".into(),
                operator: "Equals".into()
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("Equals") && msg.contains("env"), "{msg}");
        // Operators are case-sensitive, as in Kubernetes.
        let lower = selector(
            json!({"matchExpressions": [{"key": "env", "operator": "in", "values": ["x"]}]}),
        );
        assert!(selector_matches(Some(&lower), &labels(&[])).is_err());
    }

    #[test]
    fn in_and_not_in_need_values() {
        for op in ["In", "NotIn"] {
            for values in [json!(null), json!([])] {
                let sel = selector(
                    json!({"matchExpressions": [{"key": "env", "operator": op, "values": values}]}),
                );
                let err = selector_matches(Some(&sel), &labels(&[])).expect_err("no values");
                assert_eq!(
                    err,
                    SelectorError::MissingValues {
                        key: "env".into(),
                        operator: op.into()
                    }
                );
                assert!(err.to_string().contains(op));
            }
        }
    }

    #[test]
    fn exists_and_does_not_exist_take_no_values() {
        for op in ["Exists", "DoesNotExist"] {
            let sel = selector(
                json!({"matchExpressions": [{"key": "env", "operator": op, "values": ["x"]}]}),
            );
            let err = selector_matches(Some(&sel), &labels(&[("env", "x")])).expect_err("values");
            assert_eq!(
                err,
                SelectorError::UnexpectedValues {
                    key: "env".into(),
                    operator: op.into()
                }
            );
            assert!(err.to_string().contains("\"env\""));
        }
    }

    #[test]
    fn an_invalid_requirement_fails_even_when_labels_already_mismatch() {
        let sel = selector(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "Bogus"}],
        }));
        assert!(selector_matches(Some(&sel), &labels(&[])).is_err());
    }

    // ---- select

    fn target_select<'p>(
        policies: &'p [ExecPolicy],
        ns: &[(&str, &str)],
        pod: &[(&str, &str)],
    ) -> Option<&'p str> {
        let (ns, pod) = (labels(ns), labels(pod));
        select(
            policies,
            &TargetLabels {
                namespace: &ns,
                pod: &pod,
            },
        )
        .map(policy_name)
    }

    #[test]
    fn select_filters_by_namespace_and_pod_selectors() {
        let policies = vec![
            policy(
                "prod-only",
                json!({"decision": "Deny", "namespaceSelector": {"matchLabels": {"env": "prod"}}}),
            ),
            policy(
                "db-pods",
                json!({"decision": "Deny", "podSelector": {"matchLabels": {"app": "db"}}}),
            ),
        ];
        assert_eq!(
            target_select(&policies, &[("env", "prod")], &[]),
            Some("prod-only")
        );
        assert_eq!(
            target_select(&policies, &[], &[("app", "db")]),
            Some("db-pods")
        );
        assert_eq!(
            target_select(&policies, &[("env", "dev")], &[("app", "web")]),
            None
        );
        // Pod labels do not satisfy a namespace selector.
        assert_eq!(target_select(&policies, &[], &[("env", "prod")]), None);
        assert_eq!(target_select(&[], &[], &[]), None);
    }

    #[test]
    fn select_highest_priority_wins() {
        let policies = vec![
            policy("a-low", json!({"decision": "Deny", "priority": -5})),
            policy("z-high", json!({"decision": "AutoApprove", "priority": 10})),
            policy("m-mid", json!({"decision": "Deny"})),
        ];
        assert_eq!(target_select(&policies, &[], &[]), Some("z-high"));
    }

    #[test]
    fn select_ties_go_to_the_alphabetically_first_name() {
        let policies = vec![
            policy("charlie", json!({"decision": "Deny", "priority": 3})),
            policy("alpha", json!({"decision": "Deny", "priority": 3})),
            policy("bravo", json!({"decision": "Deny", "priority": 3})),
            policy("aaa-lower", json!({"decision": "Deny", "priority": 2})),
        ];
        assert_eq!(target_select(&policies, &[], &[]), Some("alpha"));
        let mut reversed = policies.clone();
        reversed.reverse();
        assert_eq!(target_select(&reversed, &[], &[]), Some("alpha"));
    }

    #[test]
    fn select_skips_policies_with_invalid_selectors() {
        let policies = vec![
            policy(
                "broken",
                json!({"decision": "AutoApprove", "priority": 100,
                       "podSelector": {"matchExpressions": [{"key": "a", "operator": "Nope"}]}}),
            ),
            policy(
                "broken-ns",
                json!({"decision": "AutoApprove", "priority": 99,
                       "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
            ),
            policy("fallback", json!({"decision": "Deny"})),
        ];
        assert_eq!(
            target_select(&policies, &[("a", "b")], &[("a", "b")]),
            Some("fallback")
        );
    }

    // ---- evaluate

    fn denied(v: Verdict) -> String {
        match v {
            Verdict::Deny { message } => message,
            other => panic!("expected Deny, got {other:?}"),
        }
    }

    #[test]
    fn no_policy_uses_the_default() {
        let s = spec(json!({}));
        assert_eq!(
            evaluate(None, DefaultPolicy::Deny, &s),
            Verdict::Deny {
                message: "no ExecPolicy governs this pod and the operator's default is to deny"
                    .into()
            }
        );
        assert_eq!(
            evaluate(None, DefaultPolicy::AutoApprove, &s),
            Verdict::Approve
        );
        assert_eq!(DefaultPolicy::default(), DefaultPolicy::Deny);
    }

    #[test]
    fn default_policy_parses_as_a_flag_value() {
        use clap::ValueEnum;
        assert_eq!(
            DefaultPolicy::from_str("auto-approve", false),
            Ok(DefaultPolicy::AutoApprove)
        );
        assert_eq!(
            DefaultPolicy::from_str("deny", false),
            Ok(DefaultPolicy::Deny)
        );
    }

    fn copy_spec(direction: &str, command: &[&str], stdin: bool) -> ExecSessionSpec {
        spec(json!({
            "command": command,
            "stdin": stdin,
            "copy": {"direction": direction, "path": "/data/x"},
        }))
    }

    #[test]
    fn copies_are_allowed_by_allow_copy_alone() {
        let down = copy_spec("Download", &["tar", "cf", "-", "/data/x"], false);
        let up = copy_spec("Upload", &["tar", "-xmf", "-", "-C", "/data", "x"], true);
        // allowedCommands and allowStdin do not govern copies; allowCopy does.
        let p = |allow: &str| {
            policy(
                "files",
                json!({"decision": "AutoApprove", "limits": {
                    "allowCopy": allow, "allowedCommands": ["ls"], "allowStdin": false}}),
            )
        };
        for (allow, down_ok, up_ok) in [
            ("Both", true, true),
            ("Download", true, false),
            ("Upload", false, true),
            ("None", false, false),
        ] {
            let pol = p(allow);
            let verdict = |s| evaluate(Some(&pol), DefaultPolicy::Deny, s);
            assert_eq!(
                verdict(&down) == Verdict::Approve,
                down_ok,
                "{allow} download"
            );
            assert_eq!(verdict(&up) == Verdict::Approve, up_ok, "{allow} upload");
        }
        let m = denied(evaluate(Some(&p("Download")), DefaultPolicy::Deny, &up));
        assert_eq!(
            m,
            "policy files does not allow copying files into the pod (its limits.allowCopy \
             allows only Download copies); ask the policy's owners to set limits.allowCopy to \
             Upload or Both"
        );
        // Omitted: no copies (fail closed).
        let plain = policy("plain", json!({"decision": "AutoApprove"}));
        let m = denied(evaluate(Some(&plain), DefaultPolicy::Deny, &down));
        assert!(m.contains("allows no copies"), "{m}");
        // Approvals still apply to an allowed copy.
        let gated = policy(
            "gated",
            json!({"decision": "RequireApproval", "approval": {"users": ["bob"]},
                   "limits": {"allowCopy": "Both"}}),
        );
        assert_eq!(
            evaluate(Some(&gated), DefaultPolicy::Deny, &down),
            Verdict::NeedApprovals { required: 1 }
        );
    }

    #[test]
    fn debug_images_come_from_the_policys_list_and_the_other_limits_still_apply() {
        let debug = |image: &str, command: &[&str]| {
            spec(json!({"command": command, "debug": {"image": image}}))
        };
        let p = policy(
            "dbg",
            json!({"decision": "AutoApprove", "limits": {
                "debugImages": ["busybox:1.36"], "allowedCommands": ["sh"]}}),
        );
        assert_eq!(
            evaluate(
                Some(&p),
                DefaultPolicy::Deny,
                &debug("busybox:1.36", &["sh"])
            ),
            Verdict::Approve
        );
        assert_eq!(
            denied(evaluate(
                Some(&p),
                DefaultPolicy::Deny,
                &debug("evil:latest", &["sh"])
            )),
            "policy dbg does not allow debugging with image evil:latest: its limits.debugImages \
             allows busybox:1.36; use one of those with --image"
        );
        let m = denied(evaluate(
            Some(&p),
            DefaultPolicy::Deny,
            &debug("busybox:1.36", &["nc"]),
        ));
        assert!(m.contains("allows only these commands: sh"), "{m}");
        // No policy: the operator's default never approves an image nobody listed.
        let m = denied(evaluate(
            None,
            DefaultPolicy::AutoApprove,
            &debug("busybox:1.36", &["sh"]),
        ));
        assert!(m.contains("needs one that lists the image"), "{m}");
        // No list: no debugging, fail closed.
        let plain = policy("plain", json!({"decision": "AutoApprove"}));
        let m = denied(evaluate(
            Some(&plain),
            DefaultPolicy::Deny,
            &debug("busybox:1.36", &["sh"]),
        ));
        assert!(m.contains("allows no debugging"), "{m}");
    }

    #[test]
    fn a_copy_must_run_exactly_its_tar_whatever_the_policy() {
        let both = policy(
            "files",
            json!({"decision": "AutoApprove", "limits": {"allowCopy": "Both"}}),
        );
        for (s, want) in [
            (
                copy_spec("Download", &["sh", "-c", "cat /etc/shadow"], false),
                "a copy's command must be the tar the copy runs (tar cf - /data/x), not sh -c \
                 cat /etc/shadow; use kubectl aexec cp",
            ),
            (
                copy_spec("Download", &["tar", "cf", "-", "/data/x"], true),
                "a copy takes no standard input: an upload sends the files on it, a download \
                 sends none",
            ),
            (
                copy_spec("Upload", &["tar", "-xmf", "-", "-C", "/data", "x"], false),
                "a copy needs standard input: an upload sends the files on it, a download \
                 sends none",
            ),
        ] {
            assert_eq!(denied(evaluate(Some(&both), DefaultPolicy::Deny, &s)), want);
            // The operator's default applies the same check when no policy governs the pod.
            assert_eq!(denied(evaluate(None, DefaultPolicy::AutoApprove, &s)), want);
        }
        // The tar kubectl cp runs, without the member that keeps an upload to its path.
        let loose = copy_spec("Upload", &["tar", "-xmf", "-", "-C", "/data"], true);
        let m = denied(evaluate(Some(&both), DefaultPolicy::Deny, &loose));
        assert!(m.contains("tar -xmf - -C /data x"), "{m}");
        // A path tar would read as an option.
        let dash = spec(json!({
            "command": ["tar", "cf", "-", "-T/etc/list"],
            "copy": {"direction": "Download", "path": "-T/etc/list"},
        }));
        let m = denied(evaluate(Some(&both), DefaultPolicy::Deny, &dash));
        assert!(m.contains("may not start with '-'"), "{m}");
        let mut tty = copy_spec("Download", &["tar", "cf", "-", "/data/x"], false);
        tty.tty = true;
        let m = denied(evaluate(Some(&both), DefaultPolicy::Deny, &tty));
        assert!(m.contains("terminal"), "{m}");
    }

    #[test]
    fn terminal_not_allowed() {
        let p = policy(
            "strict",
            json!({"decision": "AutoApprove", "limits": {"allowTty": false}}),
        );
        assert_eq!(
            denied(evaluate(
                Some(&p),
                DefaultPolicy::AutoApprove,
                &spec(json!({"tty": true}))
            )),
            "policy strict does not allow a terminal (-t)"
        );
        assert_eq!(
            evaluate(Some(&p), DefaultPolicy::Deny, &spec(json!({"tty": false}))),
            Verdict::Approve
        );
    }

    #[test]
    fn stdin_not_allowed() {
        let p = policy(
            "strict",
            json!({"decision": "AutoApprove", "limits": {"allowStdin": false}}),
        );
        assert_eq!(
            denied(evaluate(
                Some(&p),
                DefaultPolicy::Deny,
                &spec(json!({"stdin": true}))
            )),
            "policy strict does not allow standard input (-i)"
        );
        assert_eq!(
            evaluate(Some(&p), DefaultPolicy::Deny, &spec(json!({}))),
            Verdict::Approve
        );
    }

    #[test]
    fn tty_is_checked_before_stdin() {
        let p = policy(
            "strict",
            json!({"decision": "AutoApprove", "limits": {"allowStdin": false, "allowTty": false}}),
        );
        let m = denied(evaluate(
            Some(&p),
            DefaultPolicy::Deny,
            &spec(json!({"stdin": true, "tty": true})),
        ));
        assert!(m.contains("terminal"), "{m}");
    }

    #[test]
    fn allowed_commands_by_full_path_or_base_name() {
        let p = policy(
            "cmds",
            json!({"decision": "AutoApprove", "limits": {"allowedCommands": ["ls", "/usr/bin/cat"]}}),
        );
        let eval = |cmd: Value| {
            evaluate(
                Some(&p),
                DefaultPolicy::Deny,
                &spec(json!({"command": cmd})),
            )
        };
        assert_eq!(eval(json!(["ls"])), Verdict::Approve);
        assert_eq!(eval(json!(["/bin/ls", "-l"])), Verdict::Approve);
        assert_eq!(eval(json!(["/usr/bin/cat", "x"])), Verdict::Approve);
        let msg = "policy cmds allows only these commands: ls, /usr/bin/cat";
        // An entry with a path matches only that path.
        assert_eq!(denied(eval(json!(["cat", "x"]))), msg);
        assert_eq!(denied(eval(json!(["/bin/cat"]))), msg);
        assert_eq!(denied(eval(json!(["sh", "-c", "ls"]))), msg);
        // Arguments are not commands.
        assert_eq!(denied(eval(json!(["bash", "ls"]))), msg);
        assert_eq!(denied(eval(json!([]))), msg);
    }

    #[test]
    fn a_command_too_long_to_reach_the_pod_is_denied_whatever_the_policy() {
        let p = policy("auto", json!({"decision": "AutoApprove"}));
        let eval = |cmd: Value| {
            evaluate(
                Some(&p),
                DefaultPolicy::AutoApprove,
                &spec(json!({"command": cmd})),
            )
        };
        let mut fits = vec!["a".repeat(4000); 15];
        fits.push("a".repeat(aexec_crds::MAX_COMMAND_URL_BYTES - 15 * 4009 - 9));
        assert_eq!(eval(json!(fits)), Verdict::Approve);
        let mut over = fits.clone();
        over[0].push('a');
        let m = denied(eval(json!(over)));
        assert!(
            m.starts_with("the command is too long to reach the pod"),
            "{m}"
        );
    }

    #[test]
    fn empty_allowed_commands_allow_nothing() {
        let p = policy(
            "none",
            json!({"decision": "AutoApprove", "limits": {"allowedCommands": []}}),
        );
        assert_eq!(
            denied(evaluate(Some(&p), DefaultPolicy::Deny, &spec(json!({})))),
            "policy none allows no commands"
        );
    }

    #[test]
    fn reason_required() {
        let p = policy(
            "why",
            json!({"decision": "AutoApprove", "reasonRequired": true}),
        );
        let msg = "policy why requires a reason (kubectl aexec -r ...)";
        assert_eq!(
            denied(evaluate(Some(&p), DefaultPolicy::Deny, &spec(json!({})))),
            msg
        );
        assert_eq!(
            denied(evaluate(
                Some(&p),
                DefaultPolicy::Deny,
                &spec(json!({"reason": "  \t"}))
            )),
            msg
        );
        assert_eq!(
            evaluate(
                Some(&p),
                DefaultPolicy::Deny,
                &spec(json!({"reason": "INC-42"}))
            ),
            Verdict::Approve
        );
    }

    #[test]
    fn shape_checks_come_before_the_decision() {
        let p = policy(
            "deny-all",
            json!({"decision": "Deny", "message": "ask the DBA", "reasonRequired": true}),
        );
        assert_eq!(
            denied(evaluate(Some(&p), DefaultPolicy::Deny, &spec(json!({})))),
            "policy deny-all requires a reason (kubectl aexec -r ...)"
        );
    }

    #[test]
    fn deny_decision_uses_the_policy_message_or_a_default() {
        let with = policy("no", json!({"decision": "Deny", "message": "ask the DBA"}));
        assert_eq!(
            denied(evaluate(
                Some(&with),
                DefaultPolicy::AutoApprove,
                &spec(json!({}))
            )),
            "ask the DBA"
        );
        let without = policy("no", json!({"decision": "Deny"}));
        assert_eq!(
            denied(evaluate(
                Some(&without),
                DefaultPolicy::AutoApprove,
                &spec(json!({}))
            )),
            "denied by policy no"
        );
        let blank = policy("no", json!({"decision": "Deny", "message": " "}));
        assert_eq!(
            denied(evaluate(
                Some(&blank),
                DefaultPolicy::AutoApprove,
                &spec(json!({}))
            )),
            "denied by policy no"
        );
    }

    #[test]
    fn auto_approve_decision_ignores_the_default() {
        let p = policy("yes", json!({"decision": "AutoApprove"}));
        assert_eq!(
            evaluate(
                Some(&p),
                DefaultPolicy::Deny,
                &spec(json!({"tty": true, "stdin": true}))
            ),
            Verdict::Approve
        );
    }

    #[test]
    fn require_approval_decision() {
        assert_eq!(
            evaluate(
                Some(&approval_policy()),
                DefaultPolicy::Deny,
                &spec(json!({}))
            ),
            Verdict::NeedApprovals { required: 2 }
        );
        for required in [0, -3] {
            let p = policy(
                "p",
                json!({"decision": "RequireApproval", "approval": {"required": required, "groups": ["sre"]}}),
            );
            assert_eq!(
                evaluate(Some(&p), DefaultPolicy::Deny, &spec(json!({}))),
                Verdict::NeedApprovals { required: 1 }
            );
        }
        let defaulted = policy(
            "p",
            json!({"decision": "RequireApproval", "approval": {"users": ["bob"]}}),
        );
        assert_eq!(
            evaluate(Some(&defaulted), DefaultPolicy::Deny, &spec(json!({}))),
            Verdict::NeedApprovals { required: 1 }
        );
    }

    #[test]
    fn require_approval_without_approvers_denies() {
        let msg = "policy lonely requires approvals but names no approvers";
        let none = policy("lonely", json!({"decision": "RequireApproval"}));
        assert_eq!(
            denied(evaluate(
                Some(&none),
                DefaultPolicy::AutoApprove,
                &spec(json!({}))
            )),
            msg
        );
        let empty = policy(
            "lonely",
            json!({"decision": "RequireApproval", "approval": {"users": [], "groups": []}}),
        );
        assert_eq!(
            denied(evaluate(
                Some(&empty),
                DefaultPolicy::AutoApprove,
                &spec(json!({}))
            )),
            msg
        );
    }

    // ---- may_approve

    #[test]
    fn requester_may_not_approve() {
        let alice = user("alice", &["sre"]);
        let err = may_approve(&approval_policy(), &alice, &alice).expect_err("self-approval");
        assert_eq!(
            err,
            Refusal {
                code: 403,
                reason: "Forbidden",
                message: "you requested this session; someone else must approve it".into()
            }
        );
    }

    #[test]
    fn requester_is_matched_by_username_not_groups() {
        // Same user name with different groups is still the requester.
        let err = may_approve(
            &approval_policy(),
            &user("alice", &[]),
            &user("alice", &["sre"]),
        )
        .expect_err("self-approval");
        assert_eq!(err.code, 403);
    }

    #[test]
    fn policies_without_approvals_refuse_with_conflict() {
        for p in [
            policy("auto", json!({"decision": "AutoApprove"})),
            policy("no", json!({"decision": "Deny"})),
            policy("broken", json!({"decision": "RequireApproval"})),
        ] {
            let err =
                may_approve(&p, &user("alice", &[]), &user("bob", &["sre"])).expect_err("409");
            assert_eq!(err.code, 409);
            assert_eq!(err.reason, "Conflict");
            assert_eq!(
                err.message,
                format!("policy {} does not take approvals", policy_name(&p))
            );
        }
    }

    #[test]
    fn approvers_by_user_or_group() {
        let p = approval_policy();
        let alice = user("alice", &["dev"]);
        assert_eq!(may_approve(&p, &alice, &user("carol", &[])), Ok(()));
        assert_eq!(
            may_approve(&p, &alice, &user("bob", &["dev", "sre"])),
            Ok(())
        );
        let err = may_approve(&p, &alice, &user("mallory", &["dev"])).expect_err("403");
        assert_eq!(
            err,
            Refusal::forbidden(
                "mallory may not approve sessions under policy sre: it accepts users [carol] and groups [sre]"
            )
        );
        assert_eq!(err.to_string(), err.message);
    }

    #[test]
    fn refusal_constructors() {
        assert_eq!(
            (Refusal::forbidden("x").code, Refusal::forbidden("x").reason),
            (403, "Forbidden")
        );
        assert_eq!(
            (Refusal::conflict("x").code, Refusal::conflict("x").reason),
            (409, "Conflict")
        );
        assert_eq!(
            (Refusal::invalid("x").code, Refusal::invalid("x").reason),
            (422, "Invalid")
        );
    }

    // ---- valid_approvals

    #[test]
    fn valid_approvals_counts_distinct_eligible_non_requesters() {
        let p = approval_policy();
        let alice = user("alice", &["dev"]);
        let approvals = vec![
            decision("bob", &["sre"]),
            decision("bob", &["sre"]),     // duplicate
            decision("alice", &["sre"]),   // requester
            decision("mallory", &["dev"]), // not eligible
            decision("carol", &[]),        // by name
            decision("dave", &["sre"]),
        ];
        assert_eq!(valid_approvals(&p, &alice, &approvals), 3);
        assert_eq!(
            valid_approvers(&p, &alice, &approvals),
            vec!["bob", "carol", "dave"]
        );
        assert_eq!(valid_approvals(&p, &alice, &[]), 0);
    }

    #[test]
    fn valid_approvals_follow_the_current_policy() {
        let alice = user("alice", &["dev"]);
        let approvals = vec![decision("bob", &["sre"]), decision("carol", &[])];
        assert_eq!(valid_approvals(&approval_policy(), &alice, &approvals), 2);
        let narrowed = policy(
            "sre",
            json!({"decision": "RequireApproval", "approval": {"users": ["carol"]}}),
        );
        assert_eq!(valid_approvals(&narrowed, &alice, &approvals), 1);
        let auto = policy("sre", json!({"decision": "AutoApprove"}));
        assert_eq!(valid_approvals(&auto, &alice, &approvals), 0);
    }

    #[test]
    fn a_duplicate_that_was_ineligible_first_does_not_hide_a_later_eligible_one() {
        // Group membership is as recorded with each decision.
        let p = approval_policy();
        let approvals = vec![decision("bob", &[]), decision("bob", &["sre"])];
        assert_eq!(valid_approvals(&p, &user("alice", &[]), &approvals), 1);
    }
}
