//! Inputs for the policy target: policies, the target's labels, a session and its approvals,
//! the pod, and the time, all drawn from a small pool of names so that they meet.

use std::collections::BTreeMap;

use aexec_crds::{
    AllowCopy, ApprovalRule, CopyDirection, CopySpec, Decision, ExecPolicy, ExecPolicySpec,
    ExecSession, ExecSessionSpec, ExecSessionStatus, ModerationRule, OnModeratorLeave, Phase,
    PolicyDecision, PolicyLimits, UserRef,
};
use arbitrary::{Arbitrary, Result, Unstructured};
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, Time,
};
use k8s_openapi::jiff::Timestamp;

use crate::{Name, bounded_vec, strings};

fn labels(u: &mut Unstructured<'_>, max: usize) -> Result<BTreeMap<String, String>> {
    let pairs: Vec<(Name, Name)> = bounded_vec(u, max)?;
    Ok(pairs.into_iter().map(|(k, v)| (k.0, v.0)).collect())
}

fn selector(u: &mut Unstructured<'_>) -> Result<Option<LabelSelector>> {
    if u.ratio(1u8, 3u8)? {
        return Ok(None);
    }
    let match_labels = if u.arbitrary()? {
        Some(labels(u, 3)?)
    } else {
        None
    };
    let match_expressions = if u.arbitrary()? {
        let n = u.int_in_range(0..=3)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(LabelSelectorRequirement {
                key: Name::arbitrary(u)?.0,
                // Mostly the four valid operators (the pool holds them), sometimes anything.
                operator: Name::arbitrary(u)?.0,
                values: if u.arbitrary()? {
                    Some(strings(bounded_vec(u, 3)?))
                } else {
                    None
                },
            });
        }
        Some(v)
    } else {
        None
    };
    Ok(Some(LabelSelector {
        match_expressions,
        match_labels,
    }))
}

/// A Go-style duration the API would accept in a policy, or one it would not (negative, huge).
fn duration(u: &mut Unstructured<'_>) -> Result<Option<kube::core::Duration>> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => None,
        1 => Some(std::time::Duration::from_secs(u64::from(u.arbitrary::<u32>()?)).into()),
        2 => format!("-{}s", u.arbitrary::<u16>()?).parse().ok(),
        _ => {
            Some(std::time::Duration::new(u.arbitrary()?, u.int_in_range(0..=999_999_999)?).into())
        }
    })
}

fn user(u: &mut Unstructured<'_>) -> Result<UserRef> {
    Ok(UserRef {
        username: Name::arbitrary(u)?.0,
        groups: strings(bounded_vec(u, 3)?),
    })
}

fn policy(u: &mut Unstructured<'_>) -> Result<ExecPolicy> {
    let name = Name::arbitrary(u)?.0;
    let approval = if u.ratio(3u8, 4u8)? {
        Some(ApprovalRule {
            required: u.arbitrary()?,
            groups: strings(bounded_vec(u, 3)?),
            users: strings(bounded_vec(u, 3)?),
            pending_timeout: duration(u)?,
        })
    } else {
        None
    };
    let limits = PolicyLimits {
        approval_valid_for: duration(u)?,
        max_duration: duration(u)?,
        idle_timeout: duration(u)?,
        allow_tty: u.arbitrary()?,
        allow_stdin: u.arbitrary()?,
        allowed_commands: if u.arbitrary()? {
            Some(strings(bounded_vec(u, 3)?))
        } else {
            None
        },
        recording_required: u.arbitrary()?,
        allow_copy: *u.choose(&[
            AllowCopy::None,
            AllowCopy::Download,
            AllowCopy::Upload,
            AllowCopy::Both,
        ])?,
        debug_images: if u.arbitrary()? {
            Some(strings(bounded_vec(u, 2)?))
        } else {
            None
        },
    };
    let spec = ExecPolicySpec {
        namespace_selector: selector(u)?,
        pod_selector: selector(u)?,
        priority: *u.choose(&[i32::MIN, -1, 0, 0, 1, 5, i32::MAX])?,
        decision: *u.choose(&[
            PolicyDecision::AutoApprove,
            PolicyDecision::Deny,
            PolicyDecision::RequireApproval,
        ])?,
        approval,
        limits,
        moderation: if u.ratio(1u8, 4u8)? {
            Some(ModerationRule {
                required: u.arbitrary()?,
                groups: strings(bounded_vec(u, 3)?),
                users: strings(bounded_vec(u, 3)?),
                on_moderator_leave: *u
                    .choose(&[OnModeratorLeave::Pause, OnModeratorLeave::Terminate])?,
                timeout: duration(u)?,
            })
        } else {
            None
        },
        reason_required: u.arbitrary()?,
        message: u.arbitrary()?,
    };
    Ok(ExecPolicy::new(&name, spec))
}

/// A time within what both `chrono` and the API's `Time` represent.
fn time(u: &mut Unstructured<'_>) -> Result<DateTime<Utc>> {
    let secs = u.int_in_range(-62_000_000_000i64..=250_000_000_000)?;
    Ok(DateTime::from_timestamp(secs, 0).unwrap_or_default())
}

fn api_time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::new(t.timestamp(), 0).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Everything the policy engine and the session state machine are given.
#[derive(Debug)]
pub struct PolicyInput {
    pub policies: Vec<ExecPolicy>,
    pub namespace_labels: BTreeMap<String, String>,
    pub pod_labels: BTreeMap<String, String>,
    pub default_auto_approve: bool,
    /// A session never evaluated, or Pending with some approvals.
    pub session: ExecSession,
    /// The pod's UID now, its containers and its default-container annotation.
    pub pod: Option<(String, Vec<String>, Option<String>)>,
    /// Someone who approves or denies.
    pub approver: UserRef,
    pub comment: Option<String>,
    pub now: DateTime<Utc>,
    pub retention_secs: u32,
}

impl<'a> Arbitrary<'a> for PolicyInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let n = u.int_in_range(0..=4)?;
        let policies = (0..n).map(|_| policy(u)).collect::<Result<Vec<_>>>()?;
        let namespace_labels = labels(u, 3)?;
        let pod_labels = labels(u, 3)?;
        let spec = ExecSessionSpec {
            pod: Name::arbitrary(u)?.0,
            container: u.arbitrary::<Option<Name>>()?.map(|n| n.0),
            command: strings(bounded_vec(u, 3)?),
            stdin: u.arbitrary()?,
            tty: u.arbitrary()?,
            reason: u.arbitrary()?,
            requester: user(u)?,
            copy: if u.arbitrary()? {
                Some(CopySpec {
                    direction: *u.choose(&[CopyDirection::Download, CopyDirection::Upload])?,
                    path: Name::arbitrary(u)?.0,
                    local: None,
                })
            } else {
                None
            },
            debug: if u.arbitrary()? {
                Some(aexec_crds::DebugSpec {
                    image: Name::arbitrary(u)?.0,
                })
            } else {
                None
            },
        };
        let mut spec = spec;
        // Half the copies are the copy they say (their tar, stdin for an upload, no terminal),
        // so that the approving paths are reached too.
        if let Some(c) = spec.copy.clone()
            && u.arbitrary()?
        {
            spec.command = aexec_crds::copy_command(&c);
            spec.stdin = c.direction == CopyDirection::Upload;
            spec.tty = false;
        }
        let mut session = ExecSession::new(&Name::arbitrary(u)?.0, spec);
        session.metadata.namespace = Some(Name::arbitrary(u)?.0);
        if u.arbitrary()? {
            session.metadata.creation_timestamp = Some(api_time(time(u)?));
        }
        if u.arbitrary()? {
            let n = u.int_in_range(0..=4)?;
            let mut approvals = Vec::with_capacity(n);
            for _ in 0..n {
                approvals.push(Decision {
                    user: user(u)?,
                    time: api_time(time(u)?),
                    comment: None,
                });
            }
            session.status = Some(ExecSessionStatus {
                phase: Some(Phase::Pending),
                policy: u.arbitrary::<Option<Name>>()?.map(|n| n.0),
                pod_uid: u.arbitrary::<Option<Name>>()?.map(|n| n.0),
                container: u.arbitrary::<Option<Name>>()?.map(|n| n.0),
                approvals,
                ..ExecSessionStatus::default()
            });
        }
        let pod = if u.ratio(7u8, 8u8)? {
            Some((
                Name::arbitrary(u)?.0,
                strings(bounded_vec(u, 3)?),
                u.arbitrary::<Option<Name>>()?.map(|n| n.0),
            ))
        } else {
            None
        };
        Ok(PolicyInput {
            policies,
            namespace_labels,
            pod_labels,
            default_auto_approve: u.arbitrary()?,
            session,
            pod,
            approver: user(u)?,
            comment: u.arbitrary()?,
            now: time(u)?,
            retention_secs: u.arbitrary()?,
        })
    }
}
