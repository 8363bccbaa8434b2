//! The policy engine and the session state machine (`operator/src/control/policy.rs`,
//! `operator/src/control/lifecycle.rs`) with arbitrary policies, labels, sessions, approvals, pods and
//! times. Nothing panics, and:
//! - label selectors agree with a reference implementation of the Kubernetes rules, and an
//!   invalid selector is invalid whatever the labels;
//! - `select` picks a matching policy of the highest priority (ties: the first name), or none
//!   when none matches;
//! - `evaluate` never lets through what the policy forbids (terminal, stdin, commands, reason),
//!   a `Deny` policy always denies, and approvals are asked only from a rule that names someone;
//! - nobody approves their own session, only people the rule names count, each once;
//! - `reconcile` never approves a session its policy denies, or one without enough valid
//!   approvals, and reconciling its own result at the same instant changes nothing;
//! - `approve` and `deny` accept only eligible people other than the requester.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::time::Duration;

use aexec_crds::{ExecPolicy, Phase, PolicyDecision};
use aexec_fuzz::policy::PolicyInput;
use aexec_operator::control::lifecycle::{self, Observed, PodState};
use aexec_operator::control::policy::{
    DefaultPolicy, TargetLabels, Verdict, approval_rule, evaluate, may_approve, policy_name,
    required_approvals, select, selector_matches, valid_approvals, valid_approvers,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use libfuzzer_sys::fuzz_target;

/// Kubernetes label selector semantics, written independently: `None` on an invalid selector.
fn reference_matches(
    sel: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Option<bool> {
    let Some(sel) = sel else { return Some(true) };
    let mut all = true;
    for (k, v) in sel.match_labels.iter().flatten() {
        all &= labels.get(k) == Some(v);
    }
    for r in sel.match_expressions.iter().flatten() {
        let values = r.values.clone().unwrap_or_default();
        let value = labels.get(&r.key);
        all &= match r.operator.as_str() {
            "In" if !values.is_empty() => value.is_some_and(|v| values.contains(v)),
            "NotIn" if !values.is_empty() => value.is_none_or(|v| !values.contains(v)),
            "Exists" if values.is_empty() => value.is_some(),
            "DoesNotExist" if values.is_empty() => value.is_none(),
            _ => return None,
        };
    }
    Some(all)
}

fn matches(p: &ExecPolicy, ns: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    reference_matches(p.spec.namespace_selector.as_ref(), ns) == Some(true)
        && reference_matches(p.spec.pod_selector.as_ref(), pod) == Some(true)
}

/// Whether the policy's shape rules let the session through.
/// Whether a session that says it is a copy is the copy it says (and not a debug session too);
/// true for any other session.
fn copy_shape_ok(spec: &aexec_crds::ExecSessionSpec) -> bool {
    use aexec_crds::CopyDirection;
    let Some(c) = &spec.copy else {
        return true;
    };
    let operand = match c.direction {
        CopyDirection::Download => c.path.as_str(),
        CopyDirection::Upload => c.path.rsplit('/').next().unwrap_or(&c.path),
    };
    spec.command == aexec_crds::copy_command(c)
        && !spec.tty
        && spec.stdin == (c.direction == CopyDirection::Upload)
        && !operand.starts_with('-')
        && spec.debug.is_none()
}

fn shape_allows(p: &ExecPolicy, spec: &aexec_crds::ExecSessionSpec) -> bool {
    let l = &p.spec.limits;
    let reason_ok =
        !p.spec.reason_required || spec.reason.as_deref().is_some_and(|r| !r.trim().is_empty());
    // A copy is governed by allowCopy alone.
    if let Some(c) = &spec.copy {
        return copy_shape_ok(spec) && l.allow_copy.allows(c.direction) && reason_ok;
    }
    let debug_ok = spec.debug.as_ref().is_none_or(|d| {
        l.debug_images
            .as_deref()
            .unwrap_or_default()
            .contains(&d.image)
    });
    let command_ok = match &l.allowed_commands {
        None => true,
        Some(allowed) => spec.command.first().is_some_and(|program| {
            let base = match Path::new(program).components().next_back() {
                Some(Component::Normal(b)) => b.to_str(),
                _ => None,
            };
            allowed
                .iter()
                .any(|a| a == program || base == Some(a.as_str()))
        }),
    };
    (!spec.tty || l.allow_tty)
        && (!spec.stdin || l.allow_stdin)
        && command_ok
        && reason_ok
        && debug_ok
}

fn named(p: &ExecPolicy, user: &aexec_crds::UserRef) -> bool {
    p.spec.approval.as_ref().is_some_and(|r| {
        r.users.contains(&user.username) || user.groups.iter().any(|g| r.groups.contains(g))
    })
}

fuzz_target!(|input: PolicyInput| {
    let ns = &input.namespace_labels;
    let pod_labels = &input.pod_labels;
    let spec = &input.session.spec;
    let requester = &spec.requester;

    // Selectors.
    let empty = BTreeMap::new();
    for p in &input.policies {
        for sel in [
            p.spec.namespace_selector.as_ref(),
            p.spec.pod_selector.as_ref(),
        ] {
            for labels in [ns, pod_labels, &empty] {
                let got = selector_matches(sel, labels);
                assert_eq!(
                    got.clone().ok(),
                    reference_matches(sel, labels),
                    "{sel:?} on {labels:?}: {got:?}"
                );
            }
        }
    }

    // Which policy governs.
    let target = TargetLabels {
        namespace: ns,
        pod: pod_labels,
    };
    let chosen = select(&input.policies, &target);
    let matching: Vec<&ExecPolicy> = input
        .policies
        .iter()
        .filter(|p| matches(p, ns, pod_labels))
        .collect();
    match chosen {
        None => assert!(
            matching.is_empty(),
            "no policy chosen among {}",
            matching.len()
        ),
        Some(c) => {
            assert!(
                matching.iter().any(|m| std::ptr::eq(*m, c)),
                "chose a policy that does not match"
            );
            for m in &matching {
                let (pm, pc) = (m.spec.priority, c.spec.priority);
                assert!(
                    pm < pc || (pm == pc && policy_name(c) <= policy_name(m)),
                    "a better policy was passed over"
                );
            }
        }
    }

    // What it decides.
    let default = if input.default_auto_approve {
        DefaultPolicy::AutoApprove
    } else {
        DefaultPolicy::Deny
    };
    let verdict = evaluate(chosen, default, spec);
    match (chosen, &verdict) {
        // The default decides, except that it never approves a debug image nobody listed, nor
        // a copy that is not the copy it says.
        (None, v) => assert_eq!(
            *v == Verdict::Approve,
            default == DefaultPolicy::AutoApprove && spec.debug.is_none() && copy_shape_ok(spec)
        ),
        (Some(_), Verdict::Deny { message }) => {
            assert!(!message.trim().is_empty(), "a denial without a reason");
        }
        (Some(p), Verdict::Approve) => {
            assert_eq!(p.spec.decision, PolicyDecision::AutoApprove);
            assert!(
                shape_allows(p, spec),
                "approved what the policy's limits forbid"
            );
        }
        (Some(p), Verdict::NeedApprovals { required }) => {
            assert_eq!(p.spec.decision, PolicyDecision::RequireApproval);
            assert!(
                shape_allows(p, spec),
                "asked approvals for what the policy's limits forbid"
            );
            let rule = p.spec.approval.as_ref().expect("approvals without a rule");
            assert!(!rule.users.is_empty() || !rule.groups.is_empty());
            assert_eq!(i64::from(*required), i64::from(rule.required).max(1));
        }
    }
    if let Some(p) = chosen {
        if p.spec.decision == PolicyDecision::Deny {
            assert!(
                matches!(verdict, Verdict::Deny { .. }),
                "a Deny policy did not deny"
            );
        }
        if let Some(rule) = approval_rule(p) {
            assert!(required_approvals(rule) >= 1);
        }
    }

    // Who may approve, and which approvals count.
    let approvals = input
        .session
        .status
        .as_ref()
        .map(|s| s.approvals.clone())
        .unwrap_or_default();
    for p in &input.policies {
        for a in approvals.iter().map(|a| &a.user).chain([&input.approver]) {
            let ok = may_approve(p, requester, a).is_ok();
            let expected =
                a.username != requester.username && approval_rule(p).is_some() && named(p, a);
            assert_eq!(
                ok, expected,
                "may_approve({a:?}) under {:?}",
                p.spec.approval
            );
        }
        let counted = valid_approvers(p, requester, &approvals);
        assert_eq!(
            valid_approvals(p, requester, &approvals) as usize,
            counted.len()
        );
        for (i, name) in counted.iter().enumerate() {
            assert!(!counted[..i].contains(name), "{name} counted twice");
            assert_ne!(
                *name, requester.username,
                "the requester's own approval counted"
            );
            assert!(approvals.iter().any(|a| a.user.username == *name && may_approve(p, requester, &a.user).is_ok()));
        }
        for a in &approvals {
            if may_approve(p, requester, &a.user).is_ok() {
                assert!(
                    counted.contains(&a.user.username.as_str()),
                    "an eligible approval was not counted"
                );
            }
        }
    }

    // The session's next status.
    let pod = match &input.pod {
        Some((uid, containers, default_container)) => PodState::Present {
            uid: uid.clone(),
            containers: containers.clone(),
            default_container: default_container.clone(),
        },
        None => PodState::Missing,
    };
    let retention = Duration::from_secs(u64::from(input.retention_secs));
    let obs = Observed {
        session: &input.session,
        pod: pod.clone(),
        policy: chosen,
        default_policy: default,
        now: input.now,
        retention,
    };
    let out = lifecycle::reconcile(&obs);
    let phase = out.status.phase.expect("reconcile sets a phase");
    if phase == Phase::Approved {
        match (&verdict, chosen) {
            (Verdict::Approve, _) => {}
            (Verdict::NeedApprovals { required }, Some(p)) => {
                assert!(
                    valid_approvals(p, requester, &approvals) >= *required,
                    "approved without enough approvals"
                );
            }
            (v, _) => panic!("approved a session the policy decided {v:?}"),
        }
        assert!(out.status.deadline.is_some() && out.status.limits.is_some());
        // The moderation granted is the chosen policy's, never dropped or invented.
        assert_eq!(
            out.status
                .limits
                .as_ref()
                .and_then(|l| l.moderation.as_ref()),
            chosen.and_then(|p| p.spec.moderation.as_ref()),
            "the session's moderation differs from its policy's"
        );
    }
    if matches!(verdict, Verdict::Deny { .. }) {
        assert!(
            matches!(phase, Phase::Denied | Phase::Failed),
            "a denied session became {phase}"
        );
    }
    assert!(matches!(
        phase,
        Phase::Pending | Phase::Approved | Phase::Denied | Phase::Expired | Phase::Failed
    ));

    // Reconciling its own result at the same instant changes nothing.
    let mut again = input.session.clone();
    again.status = Some(out.status.clone());
    let obs2 = Observed {
        session: &again,
        pod,
        ..obs
    };
    let out2 = lifecycle::reconcile(&obs2);
    assert_eq!(out2.status, out.status, "reconcile is not idempotent");
    assert_eq!(out2.transition, None);

    // Approving and denying.
    let policy = chosen;
    if let Ok(st) = lifecycle::approve(
        &input.session,
        policy,
        &input.approver,
        input.comment.clone(),
        input.now,
    ) {
        let p = policy.expect("approved under no policy");
        assert_ne!(
            input.approver.username, requester.username,
            "the requester approved"
        );
        assert!(approval_rule(p).is_some() && named(p, &input.approver));
        assert_eq!(st.approvals.len(), approvals.len() + 1);
        assert_eq!(st.approvals.last().map(|a| &a.user), Some(&input.approver));
        assert_eq!(st.phase, Some(Phase::Pending));
    }
    if let Ok(st) = lifecycle::deny(
        &input.session,
        policy,
        &input.approver,
        input.comment.clone(),
        input.now,
    ) {
        let p = policy.expect("denied under no policy");
        assert_ne!(
            input.approver.username, requester.username,
            "the requester denied"
        );
        assert!(approval_rule(p).is_some() && named(p, &input.approver));
        assert_eq!(st.phase, Some(Phase::Denied));
    }
});
