//! The session state machine: the desired status of an `ExecSession` given what the controller
//! observed (the pod, the governing policy, the time), and the approve and deny decisions the
//! aggregated API records.
//!
//! Everything here is pure: no client, no clock (the caller passes `now`), no I/O. The controller
//! writes the returned status, emits the returned transition as an Event and requeues or deletes
//! as told. Reconciling a status this module produced, at the same instant, yields the same
//! status, so the controller never fights itself.
//!
//! Phases this module moves: not yet evaluated or `Pending` to `Pending`, `Approved`, `Denied`,
//! `Expired` or `Failed`; `Approved` to `Expired` or `Failed`. `Active` and what follows belong
//! to the broker. Terminal sessions are only kept until their retention passes.

use std::time::Duration as StdDuration;

use aexec_crds::{
    Decision, ExecPolicy, ExecSession, ExecSessionStatus, Phase, PolicyLimits, SessionLimits,
    UserRef,
};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::control::policy::{
    self, DefaultPolicy, Refusal, Verdict, approval_rule, bracketed, policy_name,
    required_approvals, valid_approvers,
};

/// How long an approval lasts unused when the policy does not say (`limits.approvalValidFor`).
pub const DEFAULT_APPROVAL_VALID_FOR: StdDuration = StdDuration::from_secs(15 * 60);
/// The shortest time an approval lasts, the CRD's minimum for `limits.approvalValidFor`. A
/// shorter one (zero, or negative, which validation forbids but a policy written past it could
/// hold) would make the session Approved and Expired at the same instant.
pub const MIN_APPROVAL_VALID_FOR: StdDuration = StdDuration::from_secs(1);
/// How long an attached session may run when the policy does not say (`limits.maxDuration`).
pub const DEFAULT_MAX_DURATION: StdDuration = StdDuration::from_secs(60 * 60);
/// How long an attached session may stay silent when the policy does not say
/// (`limits.idleTimeout`).
pub const DEFAULT_IDLE_TIMEOUT: StdDuration = StdDuration::from_secs(15 * 60);
/// How long a session may wait for approvals when the policy does not say
/// (`approval.pendingTimeout`).
pub const DEFAULT_PENDING_TIMEOUT: StdDuration = StdDuration::from_secs(60 * 60);
/// The longest comment an approver may leave (the CRD's limit).
pub const MAX_COMMENT_CHARS: usize = 1024;

/// Condition type: the session has the approvals it needs (or was approved by policy).
pub const CONDITION_APPROVED: &str = "Approved";
/// Condition type: the requester may attach now.
pub const CONDITION_READY: &str = "Ready";

/// The target pod, as the controller found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// No pod of that name in the session's namespace.
    Missing,
    /// The pod exists.
    Present {
        /// `metadata.uid`.
        uid: String,
        /// Names of the pod's (regular) containers, in order.
        containers: Vec<String>,
        /// The `kubectl.kubernetes.io/default-container` annotation, if any.
        default_container: Option<String>,
    },
}

/// Everything [`reconcile`] needs, gathered by the controller.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The session as read.
    pub session: &'a ExecSession,
    /// Its target pod.
    pub pod: PodState,
    /// The governing policy, already chosen by [`policy::select`] (`None`: none matched).
    pub policy: Option<&'a ExecPolicy>,
    /// What to do when no policy matched.
    pub default_policy: DefaultPolicy,
    /// The current time.
    pub now: DateTime<Utc>,
    /// How long finished sessions are kept.
    pub retention: StdDuration,
}

/// A phase change, to be reported as a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The phase before (`Pending` for a session never evaluated).
    pub from: Phase,
    /// The phase after.
    pub to: Phase,
    /// CamelCase Event reason: `Approved`, `AutoApproved`, `Denied`, `Expired`, `PodMissing`,
    /// `PodReplaced`, `ContainerMissing`, `WaitingForApproval` or `BrokerLost`.
    pub reason: &'static str,
    /// The session's new status message.
    pub message: String,
}

/// What the controller should do with a session.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The full desired status.
    pub status: ExecSessionStatus,
    /// Set when the phase changes, and on the first evaluation.
    pub transition: Option<Transition>,
    /// Reconcile again after this long: the next deadline (approval, pending timeout, retention).
    pub requeue_after: Option<StdDuration>,
    /// The retention of a finished session has passed: delete it.
    pub delete: bool,
}

// ---- time helpers

/// `t` truncated to whole seconds: `metav1.Time` is serialized with second precision, so
/// anything finer would not survive a round trip through the API server.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn to_time(t: DateTime<Utc>) -> Time {
    let secs = t.timestamp();
    let ts = Timestamp::new(secs, 0).unwrap_or(if secs < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    Time(ts)
}

fn from_time(t: &Time) -> DateTime<Utc> {
    let nanos = u32::try_from(t.0.subsec_nanosecond()).unwrap_or(0);
    DateTime::from_timestamp(t.0.as_second(), nanos).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn delta(d: StdDuration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// A policy duration, or `default` when unset. A negative duration (which the CRD's validation
/// forbids) counts as zero.
fn policy_duration(d: Option<kube::core::Duration>, default: StdDuration) -> StdDuration {
    match d {
        Some(d) if d.is_negative() => StdDuration::ZERO,
        Some(d) => d.into(),
        None => default,
    }
}

fn plus(t: DateTime<Utc>, d: StdDuration) -> DateTime<Utc> {
    t.checked_add_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Time from `now` until `t`, zero if `t` has passed.
fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> StdDuration {
    (t - now).to_std().unwrap_or(StdDuration::ZERO)
}

fn creation_time(session: &ExecSession, now: DateTime<Utc>) -> DateTime<Utc> {
    session
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(|| whole_seconds(now), from_time)
}

// ---- conditions

/// Sets condition `type_`, moving `lastTransitionTime` to `now` only when its status changes.
fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
    generation: Option<i64>,
) {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.status = status.to_owned();
            c.last_transition_time = to_time(now);
        }
        c.reason = reason.to_owned();
        c.message = message.to_owned();
        c.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: to_time(now),
            observed_generation: generation,
        });
    }
}

// ---- reconcile

/// The status being built for one reconcile, with what is needed to report it.
struct Step {
    status: ExecSessionStatus,
    /// Phase before this reconcile; `None` when never evaluated.
    before: Option<Phase>,
    now: DateTime<Utc>,
    generation: Option<i64>,
    retention: StdDuration,
}

impl Step {
    fn condition(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        set_condition(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
            self.now,
            self.generation,
        );
    }

    /// Whether the session had been approved before this reconcile.
    fn was_approved(&self) -> bool {
        matches!(self.before, Some(Phase::Approved | Phase::Active))
    }

    /// Ends the session in a terminal `phase`.
    fn end(mut self, phase: Phase, reason: &'static str, message: String) -> Outcome {
        self.status.phase = Some(phase);
        self.status.message = Some(message.clone());
        self.status.end_time = Some(to_time(self.now));
        if !self.was_approved() {
            self.condition(CONDITION_APPROVED, "False", reason, &message);
        }
        self.condition(CONDITION_READY, "False", reason, &message);
        let requeue = Some(self.retention);
        self.finish(reason, requeue)
    }

    /// Grants the session: `Approved` until the policy's `approvalValidFor` from now, with the
    /// policy's limits copied.
    fn grant(
        mut self,
        policy: Option<&ExecPolicy>,
        reason: &'static str,
        message: String,
    ) -> Outcome {
        let default_limits = PolicyLimits::default();
        let limits = policy.map_or(&default_limits, |p| &p.spec.limits);
        let valid_for = policy_duration(limits.approval_valid_for, DEFAULT_APPROVAL_VALID_FOR);
        // At least a second past the whole second of `now`: always later than `now`.
        let deadline = plus(
            whole_seconds(self.now),
            valid_for.max(MIN_APPROVAL_VALID_FOR),
        );
        self.status.phase = Some(Phase::Approved);
        self.status.message = Some(message.clone());
        self.status.deadline = Some(to_time(deadline));
        self.status.limits = Some(SessionLimits {
            max_duration: Some(policy_duration(limits.max_duration, DEFAULT_MAX_DURATION).into()),
            idle_timeout: Some(policy_duration(limits.idle_timeout, DEFAULT_IDLE_TIMEOUT).into()),
            recording_required: limits.recording_required,
            moderation: policy.and_then(|p| p.spec.moderation.clone()),
        });
        self.condition(CONDITION_APPROVED, "True", reason, &message);
        let ready = format!("the requester may attach until {}", rfc3339(deadline));
        self.condition(CONDITION_READY, "True", reason, &ready);
        let requeue = Some(until(deadline, self.now));
        self.finish(reason, requeue)
    }

    fn finish(self, reason: &'static str, requeue_after: Option<StdDuration>) -> Outcome {
        let from = self.before.unwrap_or_default();
        let to = self.status.phase.unwrap_or_default();
        let transition = (self.before.is_none() || from != to).then(|| Transition {
            from,
            to,
            reason,
            message: self.status.message.clone().unwrap_or_default(),
        });
        Outcome {
            status: self.status,
            transition,
            requeue_after,
            delete: false,
        }
    }
}

/// How soon a finished session past its retention is looked at again while its record is not
/// written yet.
pub const RECORD_RETRY: StdDuration = StdDuration::from_secs(5);

/// The Event and condition reason of a session deleted before it was attached.
pub const DELETED_REASON: &str = "Deleted";

/// Where a terminal session stands against its retention.
fn retain(
    session: &ExecSession,
    status: ExecSessionStatus,
    now: DateTime<Utc>,
    retention: StdDuration,
) -> Outcome {
    let ended = status
        .end_time
        .as_ref()
        .map_or_else(|| creation_time(session, now), from_time);
    let expires = plus(ended, retention);
    // Only once its signed record is in the store: the evidence outlives the object, never the
    // other way round. (The controller writes the record first; a status without one waits.)
    let expired = expires <= now;
    let delete = expired && status.record.is_some();
    let requeue_after = match (delete, expired) {
        (true, _) => None,
        (false, true) => Some(RECORD_RETRY),
        (false, false) => Some(until(expires, now)),
    };
    Outcome {
        status,
        transition: None,
        requeue_after,
        delete,
    }
}

/// The container a session runs in: the one it names, else the one already pinned, else the
/// pod's default-container annotation (when it names a container of the pod), else the first.
fn resolve_container(
    session: &ExecSession,
    pinned: Option<&str>,
    containers: &[String],
    default_container: Option<&str>,
) -> Result<String, String> {
    let pod = &session.spec.pod;
    let has = |c: &str| containers.iter().any(|x| x == c);
    if let Some(wanted) = session.spec.container.as_deref() {
        if has(wanted) {
            return Ok(wanted.to_owned());
        }
        let list = if containers.is_empty() {
            "none".to_owned()
        } else {
            containers.join(", ")
        };
        return Err(format!(
            "container {wanted} not found in pod {pod}; it has: {list}"
        ));
    }
    pinned
        .filter(|c| has(c))
        .or(default_container.filter(|c| has(c)))
        .or(containers.first().map(String::as_str))
        .map(str::to_owned)
        .ok_or_else(|| format!("pod {pod} has no containers"))
}

/// An `Active` session belongs to its broker, which ends it (at the latest at its maximum
/// duration) and writes its end. One still `Active` [`BROKER_LOST_AFTER`] past its maximum
/// duration has lost its broker: a replica killed that never came back (a crash recovery
/// happens only when the same replica restarts). It fails with a message saying so; the
/// controller seals its recording from what reached the store.
fn active(obs: &Observed<'_>, current: ExecSessionStatus) -> Outcome {
    let now = obs.now;
    let max = current
        .limits
        .as_ref()
        .and_then(|l| l.max_duration)
        .map_or(DEFAULT_MAX_DURATION, Into::into);
    let started = current
        .start_time
        .as_ref()
        .map_or_else(|| creation_time(obs.session, now), from_time);
    let lost_at = plus(plus(started, max), BROKER_LOST_AFTER);
    if now < lost_at {
        return Outcome {
            status: current,
            transition: None,
            requeue_after: Some(until(lost_at, now)),
            delete: false,
        };
    }
    let broker = current.broker.clone().unwrap_or_else(|| "unknown".into());
    let message = format!(
        "{BROKER_LOST}: operator replica {broker} stopped relaying it without ending it (killed, \
         and it did not come back); ended {}s after its maximum duration, its recording sealed \
         with what reached the store, marked interrupted",
        BROKER_LOST_AFTER.as_secs()
    );
    let step = Step {
        status: current,
        before: Some(Phase::Active),
        now,
        generation: obs.session.metadata.generation,
        retention: obs.retention,
    };
    step.end(Phase::Failed, BROKER_LOST_REASON, message)
}

/// An `Active` session whose broker's pod is gone (`why`): no process is left to end it, so it
/// fails at once with [`BROKER_LOST_REASON`], without waiting for its maximum duration. The
/// controller seals its recording from what reached the store. Any other session is left to
/// [`reconcile`].
pub fn broker_gone(obs: &Observed<'_>, why: &str) -> Outcome {
    let current = obs.session.status.clone().unwrap_or_default();
    if current.phase != Some(Phase::Active) {
        return reconcile(obs);
    }
    let broker = current.broker.clone().unwrap_or_else(|| "unknown".into());
    let message = format!(
        "{BROKER_LOST}: operator replica {broker} is gone ({why}) and cannot end it; its \
         recording sealed with what reached the store, marked interrupted"
    );
    let step = Step {
        status: current,
        before: Some(Phase::Active),
        now: obs.now,
        generation: obs.session.metadata.generation,
        retention: obs.retention,
    };
    step.end(Phase::Failed, BROKER_LOST_REASON, message)
}

/// See [`active`]: time a broker has past a session's maximum duration to write its end.
pub const BROKER_LOST_AFTER: StdDuration = StdDuration::from_secs(30);
/// The start of the message of a session whose broker was lost.
pub const BROKER_LOST: &str = "the session's broker was lost";
/// The Event and condition reason of a session whose broker was lost.
pub const BROKER_LOST_REASON: &str = "BrokerLost";

/// The desired status of a session, given what the controller observed. See the module
/// documentation for the phases it moves.
pub fn reconcile(obs: &Observed<'_>) -> Outcome {
    let session = obs.session;
    let current = session.status.clone().unwrap_or_default();
    let now = obs.now;
    match current.phase {
        Some(p) if p.is_terminal() => return retain(session, current, now, obs.retention),
        Some(Phase::Active) => return active(obs, current),
        _ => {}
    }

    let before = current.phase;
    let mut step = Step {
        status: current,
        before,
        now,
        generation: session.metadata.generation,
        retention: obs.retention,
    };
    step.status.observed_generation = session.metadata.generation;

    // Deleted (by someone allowed to: the requester is not) before it was attached: it will
    // never run, and ends so that its record says so before the finalizer lets the object go.
    if session.metadata.deletion_timestamp.is_some() {
        return step.end(
            Phase::Terminated,
            DELETED_REASON,
            "the ExecSession was deleted before it was attached; it will not run".to_owned(),
        );
    }

    // The pod: it must exist, be the one pinned at first evaluation, and have the container.
    match &obs.pod {
        PodState::Missing => {
            let pod = match session.metadata.namespace.as_deref() {
                Some(ns) => format!("{ns}/{}", session.spec.pod),
                None => session.spec.pod.clone(),
            };
            return step.end(
                Phase::Failed,
                "PodMissing",
                format!("pod {pod} no longer exists"),
            );
        }
        PodState::Present {
            uid,
            containers,
            default_container,
        } => {
            if step
                .status
                .pod_uid
                .as_ref()
                .is_some_and(|pinned| pinned != uid)
            {
                let message = format!(
                    "pod {} was replaced (UID changed): the approved pod is gone",
                    session.spec.pod
                );
                return step.end(Phase::Failed, "PodReplaced", message);
            }
            step.status.pod_uid = Some(uid.clone());
            match resolve_container(
                session,
                step.status.container.as_deref(),
                containers,
                default_container.as_deref(),
            ) {
                Ok(c) => step.status.container = Some(c),
                Err(message) => return step.end(Phase::Failed, "ContainerMissing", message),
            }
        }
    }

    if step.was_approved() {
        // Approved sessions keep what they were granted, whatever the policy says now.
        let deadline = step.status.deadline.as_ref().map(from_time);
        return match deadline {
            Some(d) if d > now => step.finish("Approved", Some(until(d, now))),
            _ => {
                let at = rfc3339(deadline.unwrap_or(now));
                step.end(
                    Phase::Expired,
                    "Expired",
                    format!("approval expired unused at {at}"),
                )
            }
        };
    }

    // Pending or never evaluated: the current policy decides.
    step.status.policy = obs.policy.map(|p| policy_name(p).to_owned());
    match policy::evaluate(obs.policy, obs.default_policy, &session.spec) {
        Verdict::Deny { message } => {
            step.status.required_approvals = None;
            step.status.approval_summary = None;
            step.end(Phase::Denied, "Denied", message)
        }
        Verdict::Approve => {
            step.status.required_approvals = None;
            step.status.approval_summary = None;
            let message = match obs.policy {
                Some(p) => format!("approved by policy {}", policy_name(p)),
                None => "approved by the operator's default policy".to_owned(),
            };
            step.grant(obs.policy, "AutoApproved", message)
        }
        Verdict::NeedApprovals { required } => {
            // evaluate() only asks for approvals when there is a policy with an approval rule.
            let (Some(policy), Some(rule)) = (obs.policy, obs.policy.and_then(approval_rule))
            else {
                return step.end(
                    Phase::Denied,
                    "Denied",
                    "no policy names approvers for this session".to_owned(),
                );
            };
            let approvers =
                valid_approvers(policy, &session.spec.requester, &step.status.approvals);
            let given = u32::try_from(approvers.len()).unwrap_or(u32::MAX);
            step.status.required_approvals = Some(i32::try_from(required).unwrap_or(i32::MAX));
            step.status.approval_summary = Some(format!("{given}/{required}"));
            if given >= required {
                let message = format!("approved by {}", approvers.join(", "));
                return step.grant(Some(policy), "Approved", message);
            }
            let deadline = plus(
                creation_time(session, now),
                policy_duration(rule.pending_timeout, DEFAULT_PENDING_TIMEOUT),
            );
            step.status.deadline = Some(to_time(deadline));
            if deadline <= now {
                let message = format!("no approval before {}", rfc3339(deadline));
                return step.end(Phase::Expired, "Expired", message);
            }
            let message = format!(
                "waiting for {} more approval(s) from users {} or groups {}",
                required - given,
                bracketed(&rule.users),
                bracketed(&rule.groups)
            );
            step.status.phase = Some(Phase::Pending);
            step.status.message = Some(message.clone());
            step.condition(
                CONDITION_APPROVED,
                "Unknown",
                "WaitingForApproval",
                &message,
            );
            step.condition(CONDITION_READY, "False", "WaitingForApproval", &message);
            step.finish("WaitingForApproval", Some(until(deadline, now)))
        }
    }
}

// ---- approve and deny

/// The refusal of an approval that would come after the last one needed.
const ALREADY_APPROVED: &str = "session is already approved; it takes no more approvals";

/// The checks shared by approve and deny: the session is Pending under `policy`, which is the
/// policy its status names. Returns the policy.
fn takes_decisions<'p>(
    session: &ExecSession,
    policy: Option<&'p ExecPolicy>,
    verb: &str,
) -> Result<&'p ExecPolicy, Refusal> {
    match session.status.as_ref().and_then(|s| s.phase) {
        None => {
            return Err(Refusal::conflict(
                "session has not been evaluated yet; try again in a moment",
            ));
        }
        Some(Phase::Pending) => {}
        Some(Phase::Approved) if verb == "approve" => {
            return Err(Refusal::conflict(ALREADY_APPROVED));
        }
        Some(phase) => {
            return Err(Refusal::conflict(if verb == "approve" {
                format!("session is {phase}; it no longer takes approvals")
            } else {
                format!("session is {phase}; it can no longer be denied")
            }));
        }
    }
    let recorded = session.status.as_ref().and_then(|s| s.policy.as_deref());
    let Some(policy) = policy else {
        return Err(Refusal::conflict(
            "no ExecPolicy governs this session now, so it takes no approvals",
        ));
    };
    let name = policy_name(policy);
    if recorded != Some(name) {
        return Err(Refusal::conflict(format!(
            "the policy governing this session changed (from {} to {name}); try again in a moment",
            recorded.unwrap_or("the operator's default")
        )));
    }
    Ok(policy)
}

/// A comment as recorded: blank means none; too long is refused.
fn checked_comment(comment: Option<String>) -> Result<Option<String>, Refusal> {
    let comment = comment.filter(|c| !c.trim().is_empty());
    if let Some(c) = &comment {
        let len = c.chars().count();
        if len > MAX_COMMENT_CHARS {
            return Err(Refusal::invalid(format!(
                "comment is {len} characters long; at most {MAX_COMMENT_CHARS} are allowed"
            )));
        }
    }
    Ok(comment)
}

/// Records `approver`'s approval of a Pending session and returns the new status. The phase is
/// left to the next [`reconcile`], which counts the approvals under the policy then current.
pub fn approve(
    session: &ExecSession,
    policy: Option<&ExecPolicy>,
    approver: &UserRef,
    comment: Option<String>,
    now: DateTime<Utc>,
) -> Result<ExecSessionStatus, Refusal> {
    let policy = takes_decisions(session, policy, "approve")?;
    let requester = &session.spec.requester;
    policy::may_approve(policy, requester, approver)?;
    let mut status = session.status.clone().unwrap_or_default();
    if status
        .approvals
        .iter()
        .any(|a| a.user.username == approver.username)
    {
        return Err(Refusal::conflict(format!(
            "{} already approved this session",
            approver.username
        )));
    }
    // The approvals needed may all be in while the phase still says Pending (the controller
    // turns them into Approved a moment later): one more would be recorded as a surplus
    // approval (`2/1`) of a session already approved. Two approvers racing both read the
    // session before either wrote; the loser's write fails on the resourceVersion, and its
    // retry, reading the winner's approval, ends here.
    if let Some(rule) = approval_rule(policy) {
        let required = required_approvals(rule);
        let given = policy::valid_approvals(policy, requester, &status.approvals);
        if given >= required {
            return Err(Refusal::conflict(format!(
                "{ALREADY_APPROVED} ({given}/{required} approvals)"
            )));
        }
    }
    let comment = checked_comment(comment)?;
    status.approvals.push(Decision {
        user: approver.clone(),
        time: to_time(now),
        comment,
    });
    if let Some(rule) = approval_rule(policy) {
        let required = required_approvals(rule);
        let given = policy::valid_approvals(policy, requester, &status.approvals);
        status.required_approvals = Some(i32::try_from(required).unwrap_or(i32::MAX));
        status.approval_summary = Some(format!("{given}/{required}"));
    }
    Ok(status)
}

/// Records `approver`'s denial of a Pending session: it becomes `Denied` at once.
pub fn deny(
    session: &ExecSession,
    policy: Option<&ExecPolicy>,
    approver: &UserRef,
    comment: Option<String>,
    now: DateTime<Utc>,
) -> Result<ExecSessionStatus, Refusal> {
    let policy = takes_decisions(session, policy, "deny")?;
    if approver.username == session.spec.requester.username {
        return Err(Refusal::forbidden(
            "you requested this session; withdraw it instead of denying it (kubectl aexec withdraw NAME)",
        ));
    }
    policy::check_approver(policy, approver, "deny")?;
    let comment = checked_comment(comment)?;
    let message = match &comment {
        Some(c) => format!("denied by {}: {c}", approver.username),
        None => format!("denied by {}", approver.username),
    };
    let mut status = session.status.clone().unwrap_or_default();
    status.denial = Some(Decision {
        user: approver.clone(),
        time: to_time(now),
        comment,
    });
    status.phase = Some(Phase::Denied);
    status.message = Some(message.clone());
    status.end_time = Some(to_time(now));
    let generation = session.metadata.generation;
    for type_ in [CONDITION_APPROVED, CONDITION_READY] {
        set_condition(
            &mut status.conditions,
            type_,
            "False",
            "Denied",
            &message,
            now,
            generation,
        );
    }
    Ok(status)
}

/// The requester's withdrawal of a request not yet attached: it becomes `Withdrawn` at once,
/// kept (not deleted) so that its record shows who asked, who approved, and that it was
/// withdrawn.
pub fn withdraw(
    session: &ExecSession,
    caller: &UserRef,
    comment: Option<String>,
    now: DateTime<Utc>,
) -> Result<ExecSessionStatus, Refusal> {
    let requester = &session.spec.requester.username;
    if caller.username != *requester {
        return Err(Refusal::forbidden(format!(
            "only the requester ({requester}) may withdraw this session; an approver denies it \
             instead (kubectl aexec deny NAME)"
        )));
    }
    let mut status = session.status.clone().unwrap_or_default();
    match status.phase {
        None | Some(Phase::Pending) | Some(Phase::Approved) => {}
        Some(Phase::Active) => {
            return Err(Refusal::conflict(
                "the session is Active: it can no longer be withdrawn; end it with kubectl aexec terminate NAME",
            ));
        }
        Some(phase) => {
            return Err(Refusal::conflict(format!(
                "the session is already over ({phase}); there is nothing to withdraw"
            )));
        }
    }
    let comment = checked_comment(comment)?;
    let message = match &comment {
        Some(c) => format!("withdrawn by {}: {c}", caller.username),
        None => format!("withdrawn by {}", caller.username),
    };
    let was_approved = status.phase == Some(Phase::Approved);
    status.withdrawal = Some(Decision {
        user: caller.clone(),
        time: to_time(now),
        comment,
    });
    status.phase = Some(Phase::Withdrawn);
    status.message = Some(message.clone());
    status.end_time = Some(to_time(now));
    let generation = session.metadata.generation;
    let types: &[&str] = if was_approved {
        &[CONDITION_READY]
    } else {
        &[CONDITION_APPROVED, CONDITION_READY]
    };
    for type_ in types {
        set_condition(
            &mut status.conditions,
            type_,
            "False",
            "Withdrawn",
            &message,
            now,
            generation,
        );
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const CREATED: &str = "2026-03-01T10:00:00Z";
    const HOUR: StdDuration = StdDuration::from_secs(3600);

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    /// `CREATED` plus `secs` seconds.
    fn t(secs: i64) -> DateTime<Utc> {
        at(CREATED) + TimeDelta::seconds(secs)
    }

    fn time(secs: i64) -> Time {
        to_time(t(secs))
    }

    fn session_with(spec: Value, status: Option<Value>) -> ExecSession {
        let mut base_spec = json!({
            "pod": "web-0",
            "command": ["ls", "-l"],
            "requester": {"username": "alice", "groups": ["dev"]},
        });
        if let (Some(b), Some(o)) = (base_spec.as_object_mut(), spec.as_object()) {
            for (k, v) in o {
                b.insert(k.clone(), v.clone());
            }
        }
        let mut obj = json!({
            "apiVersion": "aexec.dev/v1alpha1",
            "kind": "ExecSession",
            "metadata": {
                "name": "s1",
                "namespace": "shop",
                "generation": 1,
                "creationTimestamp": CREATED,
            },
            "spec": base_spec,
        });
        if let Some(st) = status {
            obj["status"] = st;
        }
        serde_json::from_value(obj).expect("session")
    }

    fn session(status: Option<Value>) -> ExecSession {
        session_with(json!({}), status)
    }

    fn with_status(s: &ExecSession, status: ExecSessionStatus) -> ExecSession {
        let mut s = s.clone();
        s.status = Some(status);
        s
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

    fn sre_policy() -> ExecPolicy {
        policy(
            "sre",
            json!({
                "decision": "RequireApproval",
                "approval": {"required": 2, "users": ["carol"], "groups": ["sre"]},
                "limits": {"approvalValidFor": "10m", "maxDuration": "30m", "idleTimeout": "5m",
                           "recordingRequired": false},
            }),
        )
    }

    fn auto_policy() -> ExecPolicy {
        policy(
            "auto",
            json!({"decision": "AutoApprove", "limits": {"approvalValidFor": "2m", "maxDuration": "20m"}}),
        )
    }

    fn pod() -> PodState {
        pod_with(&["app", "sidecar"], None)
    }

    fn pod_with(containers: &[&str], default: Option<&str>) -> PodState {
        PodState::Present {
            uid: "uid-1".into(),
            containers: containers.iter().map(|c| (*c).to_owned()).collect(),
            default_container: default.map(str::to_owned),
        }
    }

    fn user(name: &str, groups: &[&str]) -> UserRef {
        UserRef {
            username: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn approval(name: &str, groups: &[&str]) -> Value {
        json!({"user": {"username": name, "groups": groups}, "time": "2026-03-01T10:01:00Z"})
    }

    fn run(
        session: &ExecSession,
        pod: PodState,
        policy: Option<&ExecPolicy>,
        default: DefaultPolicy,
        now: DateTime<Utc>,
    ) -> Outcome {
        reconcile(&Observed {
            session,
            pod,
            policy,
            default_policy: default,
            now,
            retention: HOUR,
        })
    }

    fn run_simple(
        session: &ExecSession,
        policy: Option<&ExecPolicy>,
        now: DateTime<Utc>,
    ) -> Outcome {
        run(session, pod(), policy, DefaultPolicy::Deny, now)
    }

    fn condition<'a>(status: &'a ExecSessionStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    fn cond_summary(status: &ExecSessionStatus, type_: &str) -> (String, String) {
        let c = condition(status, type_);
        (c.status.clone(), c.reason.clone())
    }

    fn transition(o: &Outcome) -> (Phase, Phase, &'static str, String) {
        let tr = o.transition.as_ref().expect("transition");
        (tr.from, tr.to, tr.reason, tr.message.clone())
    }

    /// Reconciles the outcome's status again at the same instant: nothing may change.
    fn assert_idempotent(
        session: &ExecSession,
        pod: PodState,
        policy: Option<&ExecPolicy>,
        default: DefaultPolicy,
        now: DateTime<Utc>,
    ) -> Outcome {
        let first = run(session, pod.clone(), policy, default, now);
        let again = with_status(session, first.status.clone());
        let second = run(&again, pod, policy, default, now);
        assert_eq!(second.status, first.status, "reconcile is not idempotent");
        assert_eq!(second.transition, None);
        assert!(!second.delete);
        // And the status survives a round trip through JSON (second precision) unchanged.
        let json = serde_json::to_value(&first.status).expect("serialize");
        let back: ExecSessionStatus = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, first.status);
        first
    }

    #[test]
    fn an_approval_valid_for_no_time_still_lasts_a_second() {
        // Found by fuzzing (fuzz/corpus/policy/crash-approval-valid-for-zero): a policy whose
        // approvalValidFor is zero or negative (the CRD forbids both) made reconcile write
        // Approved with a deadline of now, then Expired on the next reconcile at the same
        // instant: the controller rewrote its own status.
        for valid_for in ["0s", "-5m"] {
            let p = policy(
                "zero",
                json!({"decision": "AutoApprove", "limits": {"approvalValidFor": valid_for}}),
            );
            let o = assert_idempotent(&session(None), pod(), Some(&p), DefaultPolicy::Deny, t(5));
            assert_eq!(o.status.phase, Some(Phase::Approved));
            assert_eq!(o.status.deadline, Some(time(6)));
        }
    }

    // ---- first evaluation without a policy

    #[test]
    fn no_policy_default_deny() {
        let o = run_simple(&session(None), None, t(5));
        let st = &o.status;
        assert_eq!(st.phase, Some(Phase::Denied));
        assert_eq!(
            st.message.as_deref(),
            Some("no ExecPolicy governs this pod and the operator's default is to deny")
        );
        assert_eq!(st.policy, None);
        assert_eq!(st.end_time, Some(time(5)));
        assert_eq!(st.pod_uid.as_deref(), Some("uid-1"));
        assert_eq!(st.observed_generation, Some(1));
        assert_eq!(
            transition(&o),
            (
                Phase::Pending,
                Phase::Denied,
                "Denied",
                "no ExecPolicy governs this pod and the operator's default is to deny".into()
            )
        );
        assert_eq!(
            cond_summary(st, "Approved"),
            ("False".into(), "Denied".into())
        );
        assert_eq!(cond_summary(st, "Ready"), ("False".into(), "Denied".into()));
        assert_eq!(
            condition(st, "Ready").message,
            st.message.clone().unwrap_or_default()
        );
        assert_eq!(o.requeue_after, Some(HOUR));
        assert!(!o.delete);
    }

    #[test]
    fn no_policy_default_auto_approve() {
        let o = run(
            &session(None),
            pod(),
            None,
            DefaultPolicy::AutoApprove,
            t(5),
        );
        let st = &o.status;
        assert_eq!(st.phase, Some(Phase::Approved));
        assert_eq!(
            st.message.as_deref(),
            Some("approved by the operator's default policy")
        );
        assert_eq!(st.policy, None);
        assert_eq!(st.deadline, Some(time(5 + 15 * 60)));
        assert_eq!(
            st.limits,
            Some(SessionLimits {
                max_duration: Some(HOUR.into()),
                idle_timeout: Some(StdDuration::from_secs(900).into()),
                recording_required: true,
                moderation: None,
            })
        );
        assert_eq!(st.end_time, None);
        assert_eq!(st.container.as_deref(), Some("app"));
        assert_eq!(o.requeue_after, Some(StdDuration::from_secs(900)));
        let (from, to, reason, msg) = transition(&o);
        assert_eq!(
            (from, to, reason),
            (Phase::Pending, Phase::Approved, "AutoApproved")
        );
        assert_eq!(msg, "approved by the operator's default policy");
        assert_eq!(
            cond_summary(st, "Approved"),
            ("True".into(), "AutoApproved".into())
        );
        assert_eq!(
            cond_summary(st, "Ready"),
            ("True".into(), "AutoApproved".into())
        );
        assert_eq!(
            condition(st, "Ready").message,
            "the requester may attach until 2026-03-01T10:15:05Z"
        );
        assert_eq!(condition(st, "Ready").last_transition_time, time(5));
        assert_eq!(condition(st, "Ready").observed_generation, Some(1));
    }

    // ---- policies

    #[test]
    fn auto_approve_policy_copies_its_limits() {
        let p = auto_policy();
        let o = run_simple(&session(None), Some(&p), t(0));
        let st = &o.status;
        assert_eq!(st.phase, Some(Phase::Approved));
        assert_eq!(st.policy.as_deref(), Some("auto"));
        assert_eq!(st.message.as_deref(), Some("approved by policy auto"));
        assert_eq!(st.deadline, Some(time(120)));
        assert_eq!(
            st.limits,
            Some(SessionLimits {
                max_duration: Some(StdDuration::from_secs(20 * 60).into()),
                idle_timeout: Some(StdDuration::from_secs(15 * 60).into()),
                recording_required: true,
                moderation: None,
            })
        );
        assert_eq!(st.required_approvals, None);
        assert_eq!(st.approval_summary, None);
        assert_eq!(o.requeue_after, Some(StdDuration::from_secs(120)));
        assert_eq!(transition(&o).2, "AutoApproved");
    }

    #[test]
    fn deny_policy_denies_with_its_message() {
        let p = policy(
            "no-prod",
            json!({"decision": "Deny", "message": "use the runbook"}),
        );
        let o = run(
            &session(None),
            pod(),
            Some(&p),
            DefaultPolicy::AutoApprove,
            t(1),
        );
        assert_eq!(o.status.phase, Some(Phase::Denied));
        assert_eq!(o.status.message.as_deref(), Some("use the runbook"));
        assert_eq!(o.status.policy.as_deref(), Some("no-prod"));
        assert_eq!(o.status.end_time, Some(time(1)));
        assert_eq!(transition(&o).2, "Denied");
    }

    #[test]
    fn spec_checks_deny() {
        let p = policy(
            "strict",
            json!({"decision": "AutoApprove", "limits": {"allowTty": false}}),
        );
        let s = session_with(json!({"tty": true}), None);
        let o = run_simple(&s, Some(&p), t(0));
        assert_eq!(o.status.phase, Some(Phase::Denied));
        assert_eq!(
            o.status.message.as_deref(),
            Some("policy strict does not allow a terminal (-t)")
        );
    }

    #[test]
    fn require_approval_waits() {
        let p = sre_policy();
        let o = run_simple(&session(None), Some(&p), t(60));
        let st = &o.status;
        assert_eq!(st.phase, Some(Phase::Pending));
        assert_eq!(st.policy.as_deref(), Some("sre"));
        assert_eq!(st.required_approvals, Some(2));
        assert_eq!(st.approval_summary.as_deref(), Some("0/2"));
        // Default pending timeout: an hour after creation.
        assert_eq!(st.deadline, Some(time(3600)));
        let msg = "waiting for 2 more approval(s) from users [carol] or groups [sre]";
        assert_eq!(st.message.as_deref(), Some(msg));
        assert_eq!(st.limits, None);
        assert_eq!(st.end_time, None);
        assert_eq!(
            transition(&o),
            (
                Phase::Pending,
                Phase::Pending,
                "WaitingForApproval",
                msg.into()
            )
        );
        assert_eq!(o.requeue_after, Some(StdDuration::from_secs(3540)));
        assert_eq!(
            cond_summary(st, "Approved"),
            ("Unknown".into(), "WaitingForApproval".into())
        );
        assert_eq!(
            cond_summary(st, "Ready"),
            ("False".into(), "WaitingForApproval".into())
        );
        assert_eq!(condition(st, "Approved").message, msg);
    }

    #[test]
    fn pending_uses_the_policy_pending_timeout() {
        let p = policy(
            "quick",
            json!({"decision": "RequireApproval", "approval": {"users": ["bob"], "pendingTimeout": "5m"}}),
        );
        let o = run_simple(&session(None), Some(&p), t(10));
        assert_eq!(o.status.deadline, Some(time(300)));
        assert_eq!(o.requeue_after, Some(StdDuration::from_secs(290)));
        assert_eq!(
            o.status.message.as_deref(),
            Some("waiting for 1 more approval(s) from users [bob] or groups []")
        );
    }

    #[test]
    fn partial_approvals_are_counted() {
        let p = sre_policy();
        let s = session(Some(json!({
            "phase": "Pending", "policy": "sre", "podUID": "uid-1",
            "approvals": [approval("bob", &["sre"])],
        })));
        let o = run_simple(&s, Some(&p), t(120));
        assert_eq!(o.status.phase, Some(Phase::Pending));
        assert_eq!(o.status.approval_summary.as_deref(), Some("1/2"));
        assert_eq!(
            o.status.message.as_deref(),
            Some("waiting for 1 more approval(s) from users [carol] or groups [sre]")
        );
        assert_eq!(o.transition, None);
    }

    #[test]
    fn enough_approvals_approve() {
        let p = sre_policy();
        let s = session(Some(json!({
            "phase": "Pending", "policy": "sre", "podUID": "uid-1",
            "approvals": [approval("bob", &["sre"]), approval("mallory", &[]), approval("dave", &["sre"])],
        })));
        let o = run_simple(&s, Some(&p), t(200));
        let st = &o.status;
        assert_eq!(st.phase, Some(Phase::Approved));
        assert_eq!(st.message.as_deref(), Some("approved by bob, dave"));
        assert_eq!(st.approval_summary.as_deref(), Some("2/2"));
        assert_eq!(st.deadline, Some(time(200 + 600)));
        assert_eq!(
            st.limits,
            Some(SessionLimits {
                max_duration: Some(StdDuration::from_secs(1800).into()),
                idle_timeout: Some(StdDuration::from_secs(300).into()),
                recording_required: false,
                moderation: None,
            })
        );
        assert_eq!(st.approvals.len(), 3, "approvals are kept as they are");
        assert_eq!(
            transition(&o),
            (
                Phase::Pending,
                Phase::Approved,
                "Approved",
                "approved by bob, dave".into()
            )
        );
        assert_eq!(o.requeue_after, Some(StdDuration::from_secs(600)));
        assert_eq!(
            cond_summary(st, "Approved"),
            ("True".into(), "Approved".into())
        );
        assert_eq!(
            cond_summary(st, "Ready"),
            ("True".into(), "Approved".into())
        );
    }

    #[test]
    fn requester_and_duplicate_approvals_do_not_count() {
        let p = sre_policy();
        let s = session(Some(json!({
            "phase": "Pending", "policy": "sre",
            "approvals": [approval("alice", &["sre"]), approval("bob", &["sre"]), approval("bob", &["sre"])],
        })));
        let o = run_simple(&s, Some(&p), t(10));
        assert_eq!(o.status.phase, Some(Phase::Pending));
        assert_eq!(o.status.approval_summary.as_deref(), Some("1/2"));
    }

    #[test]
    fn pending_expires_exactly_at_the_deadline() {
        let p = sre_policy();
        let s = session(Some(
            json!({"phase": "Pending", "policy": "sre", "podUID": "uid-1"}),
        ));
        let before = run_simple(&s, Some(&p), t(3599));
        assert_eq!(before.status.phase, Some(Phase::Pending));
        assert_eq!(before.requeue_after, Some(StdDuration::from_secs(1)));

        let o = run_simple(&s, Some(&p), t(3600));
        assert_eq!(o.status.phase, Some(Phase::Expired));
        assert_eq!(
            o.status.message.as_deref(),
            Some("no approval before 2026-03-01T11:00:00Z")
        );
        assert_eq!(o.status.end_time, Some(time(3600)));
        assert_eq!(o.status.deadline, Some(time(3600)));
        assert_eq!(
            transition(&o),
            (
                Phase::Pending,
                Phase::Expired,
                "Expired",
                "no approval before 2026-03-01T11:00:00Z".into()
            )
        );
        assert_eq!(
            cond_summary(&o.status, "Approved"),
            ("False".into(), "Expired".into())
        );
        assert_eq!(
            cond_summary(&o.status, "Ready"),
            ("False".into(), "Expired".into())
        );
        assert_eq!(o.requeue_after, Some(HOUR));

        let later = run_simple(&s, Some(&p), t(7200));
        assert_eq!(later.status.phase, Some(Phase::Expired));
    }

    #[test]
    fn enough_approvals_win_over_an_elapsed_pending_deadline() {
        // Approvals that arrived in time are honoured even if the controller runs late.
        let p = sre_policy();
        let s = session(Some(json!({
            "phase": "Pending", "policy": "sre",
            "approvals": [approval("bob", &["sre"]), approval("carol", &[])],
        })));
        let o = run_simple(&s, Some(&p), t(3600));
        assert_eq!(o.status.phase, Some(Phase::Approved));
    }

    #[test]
    fn a_policy_change_applies_to_pending_sessions() {
        let s = session(Some(json!({
            "phase": "Pending", "policy": "sre", "podUID": "uid-1",
            "approvals": [approval("bob", &["sre"])],
        })));
        // bob's group is no longer accepted: his approval stops counting.
        let narrowed = policy(
            "sre",
            json!({"decision": "RequireApproval", "approval": {"required": 1, "users": ["carol"]}}),
        );
        let o = run_simple(&s, Some(&narrowed), t(60));
        assert_eq!(o.status.phase, Some(Phase::Pending));
        assert_eq!(o.status.approval_summary.as_deref(), Some("0/1"));
        assert_eq!(o.status.required_approvals, Some(1));

        // The required count lowered to what was given: approved.
        let lowered = policy(
            "sre",
            json!({"decision": "RequireApproval", "approval": {"required": 1, "groups": ["sre"]}}),
        );
        let o = run_simple(&s, Some(&lowered), t(60));
        assert_eq!(o.status.phase, Some(Phase::Approved));
        assert_eq!(o.status.message.as_deref(), Some("approved by bob"));
        assert_eq!(o.status.approval_summary.as_deref(), Some("1/1"));

        // A different policy now governs and denies.
        let deny = policy("lockdown", json!({"decision": "Deny"}));
        let o = run_simple(&s, Some(&deny), t(60));
        assert_eq!(o.status.phase, Some(Phase::Denied));
        assert_eq!(o.status.policy.as_deref(), Some("lockdown"));
        assert_eq!(
            o.status.message.as_deref(),
            Some("denied by policy lockdown")
        );
        assert_eq!(o.status.approval_summary, None);
        assert_eq!(o.status.approvals.len(), 1);

        // No policy any more, and the default approves.
        let o = run(&s, pod(), None, DefaultPolicy::AutoApprove, t(60));
        assert_eq!(o.status.phase, Some(Phase::Approved));
        assert_eq!(o.status.policy, None);
        assert_eq!(o.status.required_approvals, None);
    }

    // ---- the pod

    #[test]
    fn missing_pod_fails_new_pending_and_approved_sessions() {
        let p = sre_policy();
        for status in [
            None,
            Some(json!({"phase": "Pending", "policy": "sre", "podUID": "uid-1"})),
            Some(
                json!({"phase": "Approved", "policy": "sre", "podUID": "uid-1",
                        "deadline": "2026-03-01T12:00:00Z"}),
            ),
        ] {
            let before = status.as_ref().map(|s| s["phase"].clone());
            let o = run(
                &session(status),
                PodState::Missing,
                Some(&p),
                DefaultPolicy::Deny,
                t(30),
            );
            assert_eq!(o.status.phase, Some(Phase::Failed), "{before:?}");
            assert_eq!(
                o.status.message.as_deref(),
                Some("pod shop/web-0 no longer exists")
            );
            assert_eq!(o.status.end_time, Some(time(30)));
            let (_, to, reason, _) = transition(&o);
            assert_eq!((to, reason), (Phase::Failed, "PodMissing"));
            assert_eq!(
                cond_summary(&o.status, "Ready"),
                ("False".into(), "PodMissing".into())
            );
        }
    }

    #[test]
    fn a_replaced_pod_fails_the_session() {
        let replaced = PodState::Present {
            uid: "uid-2".into(),
            containers: vec!["app".into()],
            default_container: None,
        };
        let s = session(Some(json!({
            "phase": "Approved", "policy": "auto", "podUID": "uid-1", "container": "app",
            "deadline": "2026-03-01T12:00:00Z",
            "conditions": [
                {"type": "Approved", "status": "True", "reason": "AutoApproved",
                 "message": "approved by policy auto", "lastTransitionTime": CREATED},
                {"type": "Ready", "status": "True", "reason": "AutoApproved",
                 "message": "m", "lastTransitionTime": CREATED},
            ],
        })));
        let o = run(
            &s,
            replaced,
            Some(&auto_policy()),
            DefaultPolicy::Deny,
            t(40),
        );
        assert_eq!(o.status.phase, Some(Phase::Failed));
        assert_eq!(
            o.status.message.as_deref(),
            Some("pod web-0 was replaced (UID changed): the approved pod is gone")
        );
        assert_eq!(
            o.status.pod_uid.as_deref(),
            Some("uid-1"),
            "the pinned UID is kept"
        );
        assert_eq!(
            transition(&o),
            (
                Phase::Approved,
                Phase::Failed,
                "PodReplaced",
                "pod web-0 was replaced (UID changed): the approved pod is gone".into()
            )
        );
        // It was approved; only readiness changes.
        assert_eq!(
            cond_summary(&o.status, "Approved"),
            ("True".into(), "AutoApproved".into())
        );
        assert_eq!(
            condition(&o.status, "Approved").last_transition_time,
            time(0)
        );
        assert_eq!(
            cond_summary(&o.status, "Ready"),
            ("False".into(), "PodReplaced".into())
        );
        assert_eq!(condition(&o.status, "Ready").last_transition_time, time(40));
    }

    #[test]
    fn the_pod_uid_is_pinned_at_first_evaluation() {
        let o = run_simple(&session(None), Some(&sre_policy()), t(1));
        assert_eq!(o.status.pod_uid.as_deref(), Some("uid-1"));
    }

    #[test]
    fn container_named_in_the_spec() {
        let s = session_with(json!({"container": "sidecar"}), None);
        let o = run(
            &s,
            pod_with(&["app", "sidecar"], Some("app")),
            None,
            DefaultPolicy::AutoApprove,
            t(0),
        );
        assert_eq!(o.status.container.as_deref(), Some("sidecar"));
    }

    #[test]
    fn container_missing_fails() {
        let s = session_with(json!({"container": "db"}), None);
        let o = run(&s, pod(), None, DefaultPolicy::AutoApprove, t(0));
        assert_eq!(o.status.phase, Some(Phase::Failed));
        assert_eq!(
            o.status.message.as_deref(),
            Some("container db not found in pod web-0; it has: app, sidecar")
        );
        assert_eq!(transition(&o).2, "ContainerMissing");
        assert_eq!(
            cond_summary(&o.status, "Approved"),
            ("False".into(), "ContainerMissing".into())
        );

        let o = run(
            &s,
            pod_with(&[], None),
            None,
            DefaultPolicy::AutoApprove,
            t(0),
        );
        assert_eq!(
            o.status.message.as_deref(),
            Some("container db not found in pod web-0; it has: none")
        );
    }

    #[test]
    fn default_container_annotation_then_first_container() {
        let s = session(None);
        let annotated = run(
            &s,
            pod_with(&["app", "sidecar"], Some("sidecar")),
            None,
            DefaultPolicy::AutoApprove,
            t(0),
        );
        assert_eq!(annotated.status.container.as_deref(), Some("sidecar"));
        let stale = run(
            &s,
            pod_with(&["app", "sidecar"], Some("gone")),
            None,
            DefaultPolicy::AutoApprove,
            t(0),
        );
        assert_eq!(stale.status.container.as_deref(), Some("app"));
        let plain = run(
            &s,
            pod_with(&["only"], None),
            None,
            DefaultPolicy::AutoApprove,
            t(0),
        );
        assert_eq!(plain.status.container.as_deref(), Some("only"));
    }

    #[test]
    fn a_pod_without_containers_fails() {
        let o = run(
            &session(None),
            pod_with(&[], None),
            None,
            DefaultPolicy::AutoApprove,
            t(0),
        );
        assert_eq!(o.status.phase, Some(Phase::Failed));
        assert_eq!(
            o.status.message.as_deref(),
            Some("pod web-0 has no containers")
        );
        assert_eq!(transition(&o).2, "ContainerMissing");
    }

    #[test]
    fn the_resolved_container_stays_pinned_when_the_annotation_changes() {
        let s = session(Some(json!({
            "phase": "Pending", "policy": "sre", "podUID": "uid-1", "container": "app",
        })));
        let o = run(
            &s,
            pod_with(&["app", "sidecar"], Some("sidecar")),
            Some(&sre_policy()),
            DefaultPolicy::Deny,
            t(5),
        );
        assert_eq!(o.status.container.as_deref(), Some("app"));
    }

    // ---- approved sessions

    fn approved_session(deadline: i64) -> ExecSession {
        session(Some(json!({
            "phase": "Approved", "policy": "auto", "podUID": "uid-1", "container": "app",
            "message": "approved by policy auto",
            "deadline": serde_json::to_value(time(deadline)).expect("time"),
        })))
    }

    #[test]
    fn approved_waits_until_its_deadline() {
        let s = approved_session(600);
        let o = run_simple(&s, Some(&auto_policy()), t(100));
        assert_eq!(o.status.phase, Some(Phase::Approved));
        assert_eq!(o.transition, None);
        assert_eq!(o.requeue_after, Some(StdDuration::from_secs(500)));
        let mut expected = s.status.clone().expect("status");
        expected.observed_generation = Some(1);
        assert_eq!(o.status, expected);
    }

    #[test]
    fn approved_expires_exactly_at_its_deadline() {
        for now in [600, 601, 5000] {
            let o = run_simple(&approved_session(600), Some(&auto_policy()), t(now));
            assert_eq!(o.status.phase, Some(Phase::Expired), "now = {now}");
            assert_eq!(
                o.status.message.as_deref(),
                Some("approval expired unused at 2026-03-01T10:10:00Z")
            );
            assert_eq!(o.status.end_time, Some(time(now)));
            let (from, to, reason, _) = transition(&o);
            assert_eq!(
                (from, to, reason),
                (Phase::Approved, Phase::Expired, "Expired")
            );
            assert_eq!(
                cond_summary(&o.status, "Ready"),
                ("False".into(), "Expired".into())
            );
        }
    }

    #[test]
    fn approved_without_a_deadline_expires() {
        let s = session(Some(json!({"phase": "Approved", "podUID": "uid-1"})));
        let o = run_simple(&s, None, t(9));
        assert_eq!(o.status.phase, Some(Phase::Expired));
        assert_eq!(
            o.status.message.as_deref(),
            Some("approval expired unused at 2026-03-01T10:00:09Z")
        );
    }

    #[test]
    fn a_granted_approval_ignores_later_policy_changes() {
        let lockdown = policy("lockdown", json!({"decision": "Deny"}));
        let o = run_simple(&approved_session(600), Some(&lockdown), t(100));
        assert_eq!(o.status.phase, Some(Phase::Approved));
        assert_eq!(o.status.policy.as_deref(), Some("auto"));
    }

    // ---- active and terminal sessions

    #[test]
    fn active_sessions_belong_to_the_broker_until_it_is_lost() {
        // Started at +100 s with a 10-minute maximum duration: the broker ends it by +700 s.
        let s = session(Some(json!({
            "phase": "Active", "podUID": "uid-1", "deadline": CREATED, "broker": "aexec-operator-1",
            "startTime": "2026-03-01T10:01:40Z",
            "limits": {"maxDuration": "10m", "idleTimeout": "1m", "recordingRequired": true},
            "conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved",
                            "message": "ok", "lastTransitionTime": CREATED}]
        })));
        for now in [0, 700, 729] {
            let o = run(&s, PodState::Missing, None, DefaultPolicy::Deny, t(now));
            assert_eq!(o.status, s.status.clone().expect("status"), "at +{now}s");
            assert_eq!(o.transition, None);
            assert_eq!(
                o.requeue_after,
                Some(StdDuration::from_secs(730 - now as u64))
            );
            assert!(!o.delete);
        }
        // Still Active 30 s past its maximum duration: its broker was lost.
        let o = run(&s, PodState::Missing, None, DefaultPolicy::Deny, t(730));
        assert_eq!(o.status.phase, Some(Phase::Failed));
        let t_ = o.transition.expect("transition");
        assert_eq!(
            (t_.from, t_.to, t_.reason),
            (Phase::Active, Phase::Failed, "BrokerLost")
        );
        assert!(t_.message.starts_with(BROKER_LOST), "{}", t_.message);
        assert!(t_.message.contains("aexec-operator-1"), "{}", t_.message);
        assert_eq!(o.status.end_time, Some(time(730)));
        let cond = |ty: &str| {
            o.status
                .conditions
                .iter()
                .find(|c| c.type_ == ty)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        assert_eq!(
            cond("Approved"),
            Some(("True".into(), "AutoApproved".into()))
        );
        assert_eq!(cond("Ready"), Some(("False".into(), "BrokerLost".into())));
        // Without a start time or limits: the creation time and the default maximum duration.
        let bare = session(Some(json!({"phase": "Active", "podUID": "uid-1"})));
        let o = run(&bare, PodState::Missing, None, DefaultPolicy::Deny, t(0));
        assert_eq!(
            o.requeue_after,
            Some(DEFAULT_MAX_DURATION + BROKER_LOST_AFTER)
        );
    }

    #[test]
    fn a_session_whose_broker_pod_is_gone_fails_at_once() {
        let s = session(Some(json!({
            "phase": "Active", "podUID": "uid-1", "broker": "aexec-operator-7d9-x2",
            "startTime": "2026-03-01T10:01:40Z",
            "limits": {"maxDuration": "1h", "idleTimeout": "1m", "recordingRequired": true}
        })));
        let obs = Observed {
            session: &s,
            pod: PodState::Missing,
            policy: None,
            default_policy: DefaultPolicy::Deny,
            now: t(120),
            retention: HOUR,
        };
        // Long before its maximum duration.
        let o = broker_gone(
            &obs,
            "its pod aexec-system/aexec-operator-7d9-x2 was deleted",
        );
        assert_eq!(o.status.phase, Some(Phase::Failed));
        let tr = o.transition.expect("transition");
        assert_eq!(
            (tr.from, tr.to, tr.reason),
            (Phase::Active, Phase::Failed, "BrokerLost")
        );
        assert!(tr.message.starts_with(BROKER_LOST), "{}", tr.message);
        assert!(
            tr.message
                .contains("aexec-operator-7d9-x2 is gone (its pod"),
            "{}",
            tr.message
        );
        assert_eq!(o.status.end_time, Some(time(120)));
        // A session that is not Active is not a broker's to lose: decided as usual.
        let done = session(Some(
            json!({"phase": "Succeeded", "endTime": "2026-03-01T10:01:00Z"}),
        ));
        let o = broker_gone(
            &Observed {
                session: &done,
                ..obs
            },
            "gone",
        );
        assert_eq!(o.status.phase, Some(Phase::Succeeded));
        assert_eq!(o.transition, None);
    }

    #[test]
    fn terminal_sessions_are_kept_for_the_retention() {
        for phase in [
            "Denied",
            "Expired",
            "Withdrawn",
            "Succeeded",
            "Failed",
            "Terminated",
        ] {
            let s = session(Some(
                json!({"phase": phase, "endTime": "2026-03-01T10:30:00Z",
                                        "record": {"uri": "s3://b/shop/s1-u/record.json"}}),
            ));
            let o = run(
                &s,
                PodState::Missing,
                None,
                DefaultPolicy::AutoApprove,
                t(1800 + 600),
            );
            assert_eq!(
                o.status,
                s.status.clone().expect("status"),
                "{phase}: unchanged"
            );
            assert_eq!(o.transition, None);
            assert!(!o.delete);
            assert_eq!(o.requeue_after, Some(StdDuration::from_secs(3000)));

            let o = run(&s, pod(), None, DefaultPolicy::AutoApprove, t(1800 + 3600));
            assert!(o.delete, "{phase}: retention passed exactly now");
            assert_eq!(o.requeue_after, None);

            let o = run(&s, pod(), None, DefaultPolicy::AutoApprove, t(1800 + 3599));
            assert!(!o.delete);
            assert_eq!(o.requeue_after, Some(StdDuration::from_secs(1)));
        }
    }

    #[test]
    fn no_session_is_deleted_before_its_record_is_written() {
        let s = session(Some(
            json!({"phase": "Succeeded", "endTime": "2026-03-01T10:30:00Z"}),
        ));
        let o = run(&s, pod(), None, DefaultPolicy::AutoApprove, t(1800 + 7200));
        assert!(!o.delete);
        assert_eq!(o.requeue_after, Some(RECORD_RETRY));
    }

    #[test]
    fn retention_without_an_end_time_counts_from_creation() {
        let s = session(Some(json!({"phase": "Failed", "record": {"uri": "x"}})));
        assert!(run_simple(&s, None, t(3600)).delete);
        let o = run_simple(&s, None, t(3000));
        assert!(!o.delete);
        assert_eq!(o.requeue_after, Some(StdDuration::from_secs(600)));
    }

    #[test]
    fn zero_retention_deletes_on_the_next_reconcile() {
        let s = session(Some(
            json!({"phase": "Succeeded", "endTime": CREATED, "record": {"uri": "x"}}),
        ));
        let o = reconcile(&Observed {
            session: &s,
            pod: pod(),
            policy: None,
            default_policy: DefaultPolicy::Deny,
            now: t(0),
            retention: StdDuration::ZERO,
        });
        assert!(o.delete);
    }

    // ---- bookkeeping

    #[test]
    fn observed_generation_follows_metadata() {
        let mut s = session(None);
        s.metadata.generation = Some(7);
        let o = run_simple(&s, Some(&sre_policy()), t(0));
        assert_eq!(o.status.observed_generation, Some(7));
        assert!(
            o.status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(7))
        );
    }

    #[test]
    fn existing_approvals_and_denial_are_untouched() {
        let s = session(Some(json!({
            "phase": "Pending", "policy": "sre",
            "approvals": [approval("mallory", &[]), approval("bob", &["sre"])],
            "denial": approval("carol", &[]),
        })));
        let o = run_simple(&s, Some(&sre_policy()), t(10));
        let before = s.status.expect("status");
        assert_eq!(o.status.approvals, before.approvals);
        assert_eq!(o.status.denial, before.denial);
    }

    #[test]
    fn no_creation_timestamp_counts_from_now() {
        let mut s = session(None);
        s.metadata.creation_timestamp = None;
        let o = run_simple(&s, Some(&sre_policy()), t(500));
        assert_eq!(o.status.deadline, Some(time(500 + 3600)));
        assert_eq!(o.requeue_after, Some(HOUR));
        let s = session_with(json!({}), Some(json!({"phase": "Denied"})));
        let mut s2 = s.clone();
        s2.metadata.creation_timestamp = None;
        let o = run_simple(&s2, None, t(500));
        assert_eq!(o.requeue_after, Some(HOUR));
    }

    #[test]
    fn times_are_written_in_whole_seconds() {
        let now = t(5) + TimeDelta::milliseconds(750);
        let o = run(&session(None), pod(), None, DefaultPolicy::AutoApprove, now);
        assert_eq!(o.status.deadline, Some(time(5 + 900)));
        assert_eq!(condition(&o.status, "Ready").last_transition_time, time(5));
        // Requeue is measured from the precise now.
        assert_eq!(o.requeue_after, Some(StdDuration::from_millis(899_250)));
    }

    #[test]
    fn reconcile_is_idempotent() {
        let sre = sre_policy();
        let auto = auto_policy();
        let approvals = json!([approval("bob", &["sre"]), approval("dave", &["sre"])]);
        let cases: Vec<(
            ExecSession,
            PodState,
            Option<&ExecPolicy>,
            DefaultPolicy,
            i64,
        )> = vec![
            (session(None), pod(), Some(&sre), DefaultPolicy::Deny, 10),
            (session(None), pod(), Some(&auto), DefaultPolicy::Deny, 10),
            (session(None), pod(), None, DefaultPolicy::AutoApprove, 10),
            (session(None), pod(), None, DefaultPolicy::Deny, 10),
            (
                session(None),
                PodState::Missing,
                Some(&sre),
                DefaultPolicy::Deny,
                10,
            ),
            (
                session(None),
                pod_with(&[], None),
                Some(&sre),
                DefaultPolicy::Deny,
                10,
            ),
            (session(None), pod(), Some(&sre), DefaultPolicy::Deny, 3600),
            (
                session(Some(
                    json!({"phase": "Pending", "policy": "sre", "approvals": approvals}),
                )),
                pod(),
                Some(&sre),
                DefaultPolicy::Deny,
                100,
            ),
            (
                session(Some(
                    json!({"phase": "Pending", "policy": "sre", "approvals": [approval("bob", &["sre"])]}),
                )),
                pod(),
                Some(&sre),
                DefaultPolicy::Deny,
                100,
            ),
            (
                approved_session(600),
                pod(),
                Some(&auto),
                DefaultPolicy::Deny,
                100,
            ),
            (
                approved_session(600),
                pod(),
                Some(&auto),
                DefaultPolicy::Deny,
                600,
            ),
        ];
        for (s, pod, p, default, now) in cases {
            assert_idempotent(&s, pod, p, default, t(now));
        }
    }

    #[test]
    fn last_transition_time_moves_only_when_a_condition_status_changes() {
        let sre = sre_policy();
        // t=10: first evaluation, waiting.
        let o1 = run_simple(&session(None), Some(&sre), t(10));
        assert_eq!(
            condition(&o1.status, "Approved").last_transition_time,
            time(10)
        );
        // t=20: bob approves; still waiting, the message changes but not the status.
        let mut st = o1.status.clone();
        st.approvals
            .push(serde_json::from_value(approval("bob", &["sre"])).expect("decision"));
        let o2 = run_simple(&with_status(&session(None), st), Some(&sre), t(20));
        let c = condition(&o2.status, "Approved");
        assert_eq!(c.last_transition_time, time(10));
        assert_eq!(
            c.message,
            "waiting for 1 more approval(s) from users [carol] or groups [sre]"
        );
        assert_eq!(
            condition(&o2.status, "Ready").last_transition_time,
            time(10)
        );
        // t=30: carol approves; both conditions turn True now.
        let mut st = o2.status.clone();
        st.approvals
            .push(serde_json::from_value(approval("carol", &[])).expect("decision"));
        let o3 = run_simple(&with_status(&session(None), st), Some(&sre), t(30));
        assert_eq!(o3.status.phase, Some(Phase::Approved));
        assert_eq!(
            condition(&o3.status, "Approved").last_transition_time,
            time(30)
        );
        assert_eq!(
            condition(&o3.status, "Ready").last_transition_time,
            time(30)
        );
        assert_eq!(o3.status.conditions.len(), 2);
        // t=700: expired unused; Approved stays True (and keeps its time), Ready turns False.
        let o4 = run_simple(
            &with_status(&session(None), o3.status.clone()),
            Some(&sre),
            t(700),
        );
        assert_eq!(o4.status.phase, Some(Phase::Expired));
        assert_eq!(
            cond_summary(&o4.status, "Approved"),
            ("True".into(), "Approved".into())
        );
        assert_eq!(
            condition(&o4.status, "Approved").last_transition_time,
            time(30)
        );
        assert_eq!(
            condition(&o4.status, "Ready").last_transition_time,
            time(700)
        );
    }

    // ---- approve

    fn pending_session(approvals: Value) -> ExecSession {
        session(Some(json!({
            "phase": "Pending", "policy": "sre", "podUID": "uid-1",
            "requiredApprovals": 2, "approvalSummary": "0/2", "approvals": approvals,
        })))
    }

    #[test]
    fn approve_appends_a_decision() {
        let s = pending_session(json!([]));
        let bob = user("bob", &["sre"]);
        let st = approve(
            &s,
            Some(&sre_policy()),
            &bob,
            Some("looks fine".into()),
            t(42),
        )
        .expect("approved");
        assert_eq!(
            st.phase,
            Some(Phase::Pending),
            "approve never moves the phase"
        );
        assert_eq!(st.approvals.len(), 1);
        assert_eq!(st.approvals[0].user, bob);
        assert_eq!(st.approvals[0].time, time(42));
        assert_eq!(st.approvals[0].comment.as_deref(), Some("looks fine"));
        assert_eq!(st.approval_summary.as_deref(), Some("1/2"));
        assert_eq!(st.required_approvals, Some(2));
        let mut rest = st.clone();
        rest.approvals.clear();
        rest.approval_summary = Some("0/2".into());
        let mut before = s.status.clone().expect("status");
        before.approvals.clear();
        assert_eq!(rest, before, "nothing else changes");

        // The second approval completes the count; reconcile then approves.
        let s2 = with_status(&s, st);
        let st2 =
            approve(&s2, Some(&sre_policy()), &user("carol", &[]), None, t(50)).expect("approved");
        assert_eq!(st2.approval_summary.as_deref(), Some("2/2"));
        assert_eq!(st2.approvals[1].comment, None);
        let o = run_simple(&with_status(&s, st2), Some(&sre_policy()), t(60));
        assert_eq!(o.status.phase, Some(Phase::Approved));
        assert_eq!(o.status.message.as_deref(), Some("approved by bob, carol"));
    }

    #[test]
    fn approve_summary_counts_only_valid_approvals() {
        let s = pending_session(json!([approval("mallory", &[])]));
        let st =
            approve(&s, Some(&sre_policy()), &user("bob", &["sre"]), None, t(1)).expect("approved");
        assert_eq!(st.approval_summary.as_deref(), Some("1/2"));
        assert_eq!(st.approvals.len(), 2);
    }

    #[test]
    fn approve_refuses_sessions_not_pending() {
        let bob = user("bob", &["sre"]);
        let p = sre_policy();
        for s in [session(None), session(Some(json!({"policy": "sre"})))] {
            let err = approve(&s, Some(&p), &bob, None, t(0)).expect_err("not evaluated");
            assert_eq!(
                err,
                Refusal::conflict("session has not been evaluated yet; try again in a moment")
            );
        }
        let s = session(Some(json!({"phase": "Approved", "policy": "sre"})));
        let err = approve(&s, Some(&p), &bob, None, t(0)).expect_err("approved");
        assert_eq!(err, Refusal::conflict(ALREADY_APPROVED));
        for phase in [
            "Denied",
            "Expired",
            "Active",
            "Succeeded",
            "Failed",
            "Terminated",
        ] {
            let s = session(Some(json!({"phase": phase, "policy": "sre"})));
            let err = approve(&s, Some(&p), &bob, None, t(0)).expect_err("not pending");
            assert_eq!(err.code, 409);
            assert_eq!(
                err.message,
                format!("session is {phase}; it no longer takes approvals")
            );
        }
    }

    #[test]
    fn approve_refuses_when_the_policy_is_not_the_recorded_one() {
        let bob = user("bob", &["sre"]);
        let s = pending_session(json!([]));
        let err = approve(&s, None, &bob, None, t(0)).expect_err("no policy");
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "no ExecPolicy governs this session now, so it takes no approvals"
        );
        let other = policy(
            "other",
            json!({"decision": "RequireApproval", "approval": {"groups": ["sre"]}}),
        );
        let err = approve(&s, Some(&other), &bob, None, t(0)).expect_err("changed");
        assert_eq!(
            err,
            Refusal::conflict(
                "the policy governing this session changed (from sre to other); try again in a moment"
            )
        );
        let unrecorded = session(Some(json!({"phase": "Pending"})));
        let err = approve(&unrecorded, Some(&other), &bob, None, t(0)).expect_err("changed");
        assert!(
            err.message.contains("from the operator's default to other"),
            "{}",
            err.message
        );
    }

    #[test]
    fn approve_refuses_the_requester_and_strangers() {
        let s = pending_session(json!([]));
        let p = sre_policy();
        let err =
            approve(&s, Some(&p), &user("alice", &["sre"]), None, t(0)).expect_err("requester");
        assert_eq!(
            err,
            Refusal::forbidden("you requested this session; someone else must approve it")
        );
        let err = approve(&s, Some(&p), &user("mallory", &[]), None, t(0)).expect_err("stranger");
        assert_eq!(
            err,
            Refusal::forbidden(
                "mallory may not approve sessions under policy sre: it accepts users [carol] and groups [sre]"
            )
        );
    }

    #[test]
    fn approve_refuses_under_a_policy_without_approvals() {
        let auto = policy("sre", json!({"decision": "AutoApprove"}));
        let err = approve(
            &pending_session(json!([])),
            Some(&auto),
            &user("bob", &["sre"]),
            None,
            t(0),
        )
        .expect_err("no approvals");
        assert_eq!(err, Refusal::conflict("policy sre does not take approvals"));
    }

    #[test]
    fn approve_refuses_a_second_approval_by_the_same_user() {
        let s = pending_session(json!([approval("bob", &["sre"])]));
        let err = approve(&s, Some(&sre_policy()), &user("bob", &["sre"]), None, t(0))
            .expect_err("twice");
        assert_eq!(err, Refusal::conflict("bob already approved this session"));
    }

    #[test]
    fn an_approval_after_the_last_one_needed_is_refused_while_still_pending() {
        // One approval needed, bob's is in, the controller has not yet written Approved: dave
        // (who lost a race with bob) is refused as for an approved session.
        let p = policy(
            "sre",
            json!({"decision": "RequireApproval", "approval": {"groups": ["sre"], "required": 1}}),
        );
        let s = pending_session(json!([approval("bob", &["sre"])]));
        let err = approve(&s, Some(&p), &user("dave", &["sre"]), None, t(0)).expect_err("surplus");
        assert_eq!(
            err,
            Refusal::conflict(format!("{ALREADY_APPROVED} (1/1 approvals)"))
        );
        // An approval that no longer counts (its approver left the policy) does not fill the
        // quota: another approver is still needed, and accepted.
        let s = pending_session(json!([approval("erin", &["ops"])]));
        let status = approve(&s, Some(&p), &user("dave", &["sre"]), None, t(0)).expect("needed");
        assert_eq!(status.approval_summary.as_deref(), Some("1/1"));
    }

    #[test]
    fn approve_limits_the_comment() {
        let s = pending_session(json!([]));
        let bob = user("bob", &["sre"]);
        let long = "é".repeat(1025);
        let err = approve(&s, Some(&sre_policy()), &bob, Some(long), t(0)).expect_err("too long");
        assert_eq!(err.code, 422);
        assert_eq!(err.reason, "Invalid");
        assert_eq!(
            err.message,
            "comment is 1025 characters long; at most 1024 are allowed"
        );
        // The limit counts characters, not bytes.
        let st = approve(&s, Some(&sre_policy()), &bob, Some("é".repeat(1024)), t(0)).expect("ok");
        assert_eq!(
            st.approvals[0]
                .comment
                .as_deref()
                .map(|c| c.chars().count()),
            Some(1024)
        );
        // A blank comment is no comment.
        let st = approve(&s, Some(&sre_policy()), &bob, Some("  ".into()), t(0)).expect("ok");
        assert_eq!(st.approvals[0].comment, None);
    }

    // ---- deny

    #[test]
    fn deny_ends_the_session() {
        let s = pending_session(json!([approval("bob", &["sre"])]));
        let dave = user("dave", &["sre"]);
        let st = deny(
            &s,
            Some(&sre_policy()),
            &dave,
            Some("not during the freeze".into()),
            t(77),
        )
        .expect("denied");
        assert_eq!(st.phase, Some(Phase::Denied));
        assert_eq!(
            st.message.as_deref(),
            Some("denied by dave: not during the freeze")
        );
        assert_eq!(st.end_time, Some(time(77)));
        let denial = st.denial.clone().expect("denial");
        assert_eq!(denial.user, dave);
        assert_eq!(denial.time, time(77));
        assert_eq!(denial.comment.as_deref(), Some("not during the freeze"));
        assert_eq!(st.approvals.len(), 1, "approvals are kept");
        assert_eq!(
            cond_summary(&st, "Approved"),
            ("False".into(), "Denied".into())
        );
        assert_eq!(
            cond_summary(&st, "Ready"),
            ("False".into(), "Denied".into())
        );
        assert_eq!(
            condition(&st, "Ready").message,
            "denied by dave: not during the freeze"
        );

        // The controller leaves it as it is.
        let o = run_simple(&with_status(&s, st.clone()), Some(&sre_policy()), t(80));
        assert_eq!(o.status, st);
        assert_eq!(o.transition, None);

        let st = deny(&s, Some(&sre_policy()), &user("carol", &[]), None, t(77)).expect("denied");
        assert_eq!(st.message.as_deref(), Some("denied by carol"));
        assert_eq!(st.denial.expect("denial").comment, None);
    }

    #[test]
    fn deny_refuses_the_requester() {
        let err = deny(
            &pending_session(json!([])),
            Some(&sre_policy()),
            &user("alice", &["sre"]),
            None,
            t(0),
        )
        .expect_err("requester");
        assert_eq!(
            err,
            Refusal::forbidden(
                "you requested this session; withdraw it instead of denying it (kubectl aexec withdraw NAME)"
            )
        );
    }

    #[test]
    fn deny_refuses_strangers_and_policies_without_approvals() {
        let s = pending_session(json!([]));
        let err =
            deny(&s, Some(&sre_policy()), &user("mallory", &[]), None, t(0)).expect_err("stranger");
        assert_eq!(
            err,
            Refusal::forbidden(
                "mallory may not deny sessions under policy sre: it accepts users [carol] and groups [sre]"
            )
        );
        let auto = policy("sre", json!({"decision": "AutoApprove"}));
        let err =
            deny(&s, Some(&auto), &user("bob", &["sre"]), None, t(0)).expect_err("no approvals");
        assert_eq!(err, Refusal::conflict("policy sre does not take approvals"));
    }

    #[test]
    fn deny_refuses_sessions_not_pending_and_changed_policies() {
        let bob = user("bob", &["sre"]);
        let p = sre_policy();
        let err = deny(&session(None), Some(&p), &bob, None, t(0)).expect_err("not evaluated");
        assert_eq!(
            err,
            Refusal::conflict("session has not been evaluated yet; try again in a moment")
        );
        let s = session(Some(json!({"phase": "Approved", "policy": "sre"})));
        let err = deny(&s, Some(&p), &bob, None, t(0)).expect_err("approved");
        assert_eq!(
            err,
            Refusal::conflict("session is Approved; it can no longer be denied")
        );
        let err = deny(&pending_session(json!([])), None, &bob, None, t(0)).expect_err("no policy");
        assert_eq!(err.code, 409);
        let other = policy(
            "other",
            json!({"decision": "RequireApproval", "approval": {"groups": ["sre"]}}),
        );
        let err =
            deny(&pending_session(json!([])), Some(&other), &bob, None, t(0)).expect_err("changed");
        assert_eq!(err.code, 409);
    }

    #[test]
    fn deny_limits_the_comment() {
        let err = deny(
            &pending_session(json!([])),
            Some(&sre_policy()),
            &user("bob", &["sre"]),
            Some("x".repeat(1025)),
            t(0),
        )
        .expect_err("too long");
        assert_eq!(err.code, 422);
    }

    #[test]
    fn deny_keeps_the_transition_time_of_an_already_false_condition() {
        let s = pending_session(json!([]));
        let waiting = run_simple(&s, Some(&sre_policy()), t(10)).status;
        let st = deny(
            &with_status(&s, waiting),
            Some(&sre_policy()),
            &user("bob", &["sre"]),
            None,
            t(50),
        )
        .expect("denied");
        // Ready was already False: its time stays; Approved went Unknown -> False: it moves.
        assert_eq!(condition(&st, "Ready").last_transition_time, time(10));
        assert_eq!(condition(&st, "Approved").last_transition_time, time(50));
        assert_eq!(condition(&st, "Ready").reason, "Denied");
    }

    // ---- withdrawal and deletion

    #[test]
    fn the_requester_withdraws_a_request_not_yet_attached() {
        let alice = UserRef {
            username: "alice".into(),
            groups: vec!["dev".into()],
        };
        for phase in [None, Some("Pending"), Some("Approved")] {
            let s = session(phase.map(|p| json!({"phase": p})));
            let st = withdraw(&s, &alice, Some("not needed".into()), t(30)).expect("withdrawn");
            assert_eq!(st.phase, Some(Phase::Withdrawn));
            assert!(st.phase.expect("phase").is_terminal());
            assert_eq!(
                st.message.as_deref(),
                Some("withdrawn by alice: not needed")
            );
            assert_eq!(st.end_time, Some(time(30)));
            assert_eq!(
                st.withdrawal.as_ref().map(|w| w.user.username.as_str()),
                Some("alice")
            );
            let ready = st.conditions.iter().find(|c| c.type_ == CONDITION_READY);
            assert_eq!(ready.map(|c| c.reason.as_str()), Some("Withdrawn"));
            // Terminal from then on: kept for the retention, approvals refused.
            let done = with_status(&s, st);
            assert!(!run_simple(&done, Some(&sre_policy()), t(40)).delete);
            let bob = UserRef {
                username: "bob".into(),
                groups: vec!["sre".into()],
            };
            let e = approve(&done, Some(&sre_policy()), &bob, None, t(41)).expect_err("over");
            assert_eq!(e.code, 409);
        }
        // Not someone else's, and not once attached or over.
        let bob = UserRef {
            username: "bob".into(),
            groups: vec!["sre".into()],
        };
        let e = withdraw(
            &session(Some(json!({"phase": "Pending"}))),
            &bob,
            None,
            t(1),
        )
        .expect_err("not bob");
        assert_eq!(e.code, 403);
        assert!(
            e.message.contains("only the requester (alice)"),
            "{}",
            e.message
        );
        let e = withdraw(
            &session(Some(json!({"phase": "Active"}))),
            &alice,
            None,
            t(1),
        )
        .expect_err("active");
        assert_eq!(e.code, 409);
        assert!(
            e.message.contains("kubectl aexec terminate"),
            "{}",
            e.message
        );
        let e = withdraw(
            &session(Some(json!({"phase": "Denied"}))),
            &alice,
            None,
            t(1),
        )
        .expect_err("over");
        assert!(e.message.contains("already over (Denied)"), "{}", e.message);
        let long = "x".repeat(MAX_COMMENT_CHARS + 1);
        assert_eq!(
            withdraw(&session(None), &alice, Some(long), t(1))
                .expect_err("long")
                .code,
            422
        );
    }

    #[test]
    fn a_deleted_request_ends_before_it_runs() {
        for status in [
            None,
            Some(json!({"phase": "Pending"})),
            Some(json!({"phase": "Approved", "deadline": "2026-03-01T11:00:00Z"})),
        ] {
            let mut s = session(status);
            s.metadata.deletion_timestamp = Some(time(5));
            let o = run_simple(&s, Some(&sre_policy()), t(10));
            assert_eq!(o.status.phase, Some(Phase::Terminated));
            assert_eq!(
                o.transition.as_ref().map(|t| t.reason),
                Some(DELETED_REASON)
            );
            assert!(
                o.status
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("deleted before it was attached"))
            );
        }
        // An Active one belongs to its broker, which ends it.
        let mut s = session(Some(
            json!({"phase": "Active", "startTime": "2026-03-01T10:00:00Z"}),
        ));
        s.metadata.deletion_timestamp = Some(time(5));
        let o = run_simple(&s, None, t(10));
        assert_eq!(o.status.phase, Some(Phase::Active));
        assert_eq!(o.transition, None);
    }
}
