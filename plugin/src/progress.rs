//! What the requester reads while waiting (pure): which policy governs the request, how many
//! approvals it has, who may approve, the line to send to an approver, and, at the end, why it
//! did not run.

use aexec_crds::{ExecPolicy, ExecSession, Phase};

/// Who may approve under a policy, for people: `group sre, user dave`.
pub fn approvers(policy: &ExecPolicy) -> Option<String> {
    let a = policy.spec.approval.as_ref()?;
    let mut who: Vec<String> = a.groups.iter().map(|g| format!("group {g}")).collect();
    who.extend(a.users.iter().map(|u| format!("user {u}")));
    (!who.is_empty()).then(|| who.join(", "))
}

/// The command an approver runs.
pub fn approve_line(name: &str, namespace: &str) -> String {
    format!("kubectl aexec approve {name} -n {namespace}")
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    phase: Phase,
    policy: Option<String>,
    approvals: usize,
}

/// Turns successive views of a waiting session into the lines to print, once each.
#[derive(Debug, Default)]
pub struct Progress {
    seen: Option<Seen>,
    told_approver_line: bool,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// The lines to print for this view of the session (nothing when nothing new happened).
    /// `policy` is the governing policy, when it could be read.
    pub fn update(&mut self, s: &ExecSession, policy: Option<&ExecPolicy>) -> Vec<String> {
        let name = s.metadata.name.clone().unwrap_or_default();
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let st = s.status.clone().unwrap_or_default();
        let now = Seen {
            phase: s.phase(),
            policy: st.policy.clone(),
            approvals: st.approvals.len(),
        };
        let before = self.seen.replace(now.clone());
        if before.as_ref() == Some(&now) {
            return Vec::new();
        }
        let mut out = Vec::new();
        // New approvals since the last view, each with who gave it.
        let already = before.as_ref().map_or(0, |b| b.approvals);
        let required = st.required_approvals.unwrap_or(0);
        for (i, a) in st.approvals.iter().enumerate().skip(already) {
            let comment = a
                .comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            out.push(format!(
                "  approved by {} ({} of {required}){comment}",
                a.user.username,
                i + 1
            ));
        }
        if now.phase == Phase::Pending && st.required_approvals.is_some() {
            let policy_name = st.policy.as_deref().unwrap_or("(operator default)");
            if !self.told_approver_line {
                let who = policy
                    .and_then(approvers)
                    .map(|w| format!("; may approve: {w}"))
                    .unwrap_or_default();
                out.insert(
                    0,
                    format!(
                        "waiting for approval of {name} (policy {policy_name}: {} of {required} approvals{who})...",
                        st.approvals.len()
                    ),
                );
                out.insert(
                    1,
                    format!("  send this to an approver:  {}", approve_line(&name, &ns)),
                );
                self.told_approver_line = true;
            }
        } else if now.phase == Phase::Pending && before.is_none() {
            out.push(format!("waiting for the policy decision on {name}..."));
        }
        if now.phase == Phase::Approved {
            let how = match (st.policy.as_deref(), st.approvals.is_empty()) {
                (Some(p), true) => format!("approved by policy {p}"),
                (None, true) => "approved by the operator's default policy".to_owned(),
                (_, false) => "approved".to_owned(),
            };
            out.push(format!("{how}; attaching to {name}"));
        }
        out
    }
}

/// Why a session that left `Pending` cannot be attached, or `None` when it can (`Approved`).
pub fn not_attachable(s: &ExecSession) -> Option<String> {
    let name = s.metadata.name.clone().unwrap_or_default();
    let st = s.status.clone().unwrap_or_default();
    let message = st.message.clone().unwrap_or_default();
    match s.phase() {
        Phase::Approved => None,
        Phase::Pending => Some(format!("session {name} is still waiting for approval")),
        Phase::Denied => Some(match &st.denial {
            Some(d) => format!(
                "session {name} was denied by {}{}",
                d.user.username,
                d.comment
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default()
            ),
            None => format!(
                "session {name} was denied{}: {message}",
                st.policy
                    .as_deref()
                    .map(|p| format!(" by policy {p}"))
                    .unwrap_or_default()
            ),
        }),
        Phase::Expired => Some(format!(
            "session {name} expired: {message}; request a new one"
        )),
        Phase::Active => Some(format!(
            "session {name} is already attached ({message}); a session can be attached only once"
        )),
        p => Some(format!(
            "session {name} is already over ({p}: {message}); request a new one"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(status: serde_json::Value) -> ExecSession {
        serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
            "metadata": {"name": "exec-1", "namespace": "prod"},
            "spec": {"pod": "web", "command": ["sh"], "requester": {"username": "alice"}},
            "status": status
        }))
        .expect("session")
    }

    fn policy() -> ExecPolicy {
        serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecPolicy", "metadata": {"name": "prod-shell"},
            "spec": {"decision": "RequireApproval", "approval": {"required": 2, "groups": ["sre"], "users": ["dave"]}}
        }))
        .expect("policy")
    }

    fn approval(user: &str) -> serde_json::Value {
        json!({"user": {"username": user}, "time": "2024-01-01T00:00:00Z", "comment": "ok"})
    }

    #[test]
    fn waiting_then_approvals_then_attach() {
        let mut p = Progress::new();
        let pending =
            session(json!({"phase": "Pending", "policy": "prod-shell", "requiredApprovals": 2}));
        assert_eq!(
            p.update(&pending, Some(&policy())),
            vec![
                "waiting for approval of exec-1 (policy prod-shell: 0 of 2 approvals; may approve: group sre, user dave)...",
                "  send this to an approver:  kubectl aexec approve exec-1 -n prod",
            ]
        );
        // The same view again prints nothing.
        assert!(p.update(&pending, Some(&policy())).is_empty());
        let one = session(
            json!({"phase": "Pending", "policy": "prod-shell", "requiredApprovals": 2,
            "approvals": [approval("bob")]}),
        );
        assert_eq!(p.update(&one, None), vec!["  approved by bob (1 of 2): ok"]);
        let two = session(
            json!({"phase": "Approved", "policy": "prod-shell", "requiredApprovals": 2,
            "approvals": [approval("bob"), approval("dave")]}),
        );
        assert_eq!(
            p.update(&two, None),
            vec![
                "  approved by dave (2 of 2): ok",
                "approved; attaching to exec-1"
            ]
        );
    }

    #[test]
    fn before_the_decision_and_auto_approval() {
        let mut p = Progress::new();
        assert_eq!(
            p.update(&session(json!(null)), None),
            vec!["waiting for the policy decision on exec-1..."]
        );
        assert_eq!(
            p.update(
                &session(json!({"phase": "Approved", "policy": "auto"})),
                None
            ),
            vec!["approved by policy auto; attaching to exec-1"]
        );
    }

    #[test]
    fn refusals_say_why() {
        let denied = session(json!({"phase": "Denied", "policy": "p",
            "denial": {"user": {"username": "bob"}, "time": "2024-01-01T00:00:00Z", "comment": "not during the freeze"}}));
        assert_eq!(
            not_attachable(&denied).as_deref(),
            Some("session exec-1 was denied by bob: not during the freeze")
        );
        let by_policy = session(
            json!({"phase": "Denied", "policy": "lockdown", "message": "no shells in prod"}),
        );
        assert_eq!(
            not_attachable(&by_policy).as_deref(),
            Some("session exec-1 was denied by policy lockdown: no shells in prod")
        );
        let expired = session(json!({"phase": "Expired", "message": "not approved within 5m"}));
        assert_eq!(
            not_attachable(&expired).as_deref(),
            Some("session exec-1 expired: not approved within 5m; request a new one")
        );
        assert!(not_attachable(&session(json!({"phase": "Approved"}))).is_none());
        assert!(
            not_attachable(&session(json!({"phase": "Succeeded", "message": "m"})))
                .is_some_and(|m| m.contains("already over (Succeeded: m)"))
        );
    }
}
