//! `ExecPolicy`: which sessions a policy governs and what it decides for them.
//!
//! Cluster-scoped, because the people who write policies (platform, security) are not the people
//! who own namespaces. The policy engine in the operator reads these; nothing here has behaviour
//! beyond defaults.

// clippy reads the repeated `printcolumn(...)` arguments of `#[kube]` as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Governs ExecSessions: for the pods it selects, approve at once, deny, or require approvals
/// from named people, and set the limits of the sessions it grants. When several policies select
/// a pod, the one with the highest priority wins (ties: the alphabetically first name).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "aexec.dev",
    version = "v1alpha1",
    kind = "ExecPolicy",
    plural = "execpolicies",
    singular = "execpolicy",
    shortname = "exp",
    category = "aexec",
    derive = "PartialEq",
    doc = "Decides what happens to the ExecSessions of the pods it selects: approve, deny, or require approvals, and with which limits.",
    printcolumn(name = "Decision", type_ = "string", json_path = ".spec.decision"),
    printcolumn(
        name = "Approvals",
        type_ = "integer",
        json_path = ".spec.approval.required"
    ),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Max-Duration",
        type_ = "string",
        json_path = ".spec.limits.maxDuration",
        priority = 1
    ),
    printcolumn(
        name = "Idle-Timeout",
        type_ = "string",
        json_path = ".spec.limits.idleTimeout",
        priority = 1
    )
)]
#[x_kube(validation = Rule::new("self.decision != 'RequireApproval' || has(self.approval)").message("decision RequireApproval needs an approval section (who approves, how many)").field_path(".approval"))]
#[serde(rename_all = "camelCase")]
pub struct ExecPolicySpec {
    /// Namespaces whose pods this policy governs. Omitted or empty: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Pods this policy governs, within the selected namespaces. Omitted or empty: every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,

    /// When several policies select a pod, the highest priority wins.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,

    /// What to do with a session this policy governs.
    pub decision: PolicyDecision,

    /// Who must approve, and how many of them (for `RequireApproval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRule>,

    /// Limits for the sessions this policy grants.
    #[serde(default)]
    pub limits: PolicyLimits,

    /// Live moderation: the command starts only while enough moderators watch
    /// (`kubectl aexec watch --moderate`). Omitted: sessions need no moderator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationRule>,

    /// Sessions must give a reason (`kubectl aexec -r`).
    #[serde(default)]
    pub reason_required: bool,

    /// Shown to the requester when this policy denies a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
}

/// What a policy does with the sessions it governs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyDecision {
    /// Approve at once (the session is still recorded).
    AutoApprove,
    /// Refuse.
    Deny,
    /// Wait for approvals from the people named in `approval`.
    RequireApproval,
}

/// Who may approve, how many must, and how long a granted approval lasts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("size(self.groups) + size(self.users) > 0").message("name at least one approver group or user"))]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRule {
    /// Number of distinct approvals needed. The requester never counts.
    #[serde(default = "default_required")]
    #[schemars(range(min = 1, max = 10))]
    pub required: i32,

    /// Members of these groups may approve.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    pub groups: Vec<String>,

    /// These users may approve.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    pub users: Vec<String>,

    /// How long a session may wait for approvals before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(DURATION_1S_TO_7D).message("pendingTimeout must be a duration between 1s and 168h, like 30m"))]
    pub pending_timeout: Option<kube::core::Duration>,
}

/// Who must watch a session live while it runs, how many, and what happens when they leave.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModerationRule {
    /// Moderators who must be watching before the command starts, and while it runs. The
    /// requester never counts, even when a member of `groups`.
    #[serde(default = "default_required")]
    #[schemars(range(min = 1, max = 10))]
    pub required: i32,

    /// Members of these groups may moderate. With neither groups nor users, anyone allowed to
    /// watch the session (RBAC on `execsessions/observe`) may, except the requester.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    pub groups: Vec<String>,

    /// These users may moderate.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    pub users: Vec<String>,

    /// When moderators drop below `required` mid-session: `Pause` holds the requester's input
    /// (output still flows and is recorded) until enough watch again; `Terminate` ends it.
    #[serde(default)]
    pub on_moderator_leave: OnModeratorLeave,

    /// How long a session waits for moderators, before its command starts or while paused,
    /// before it ends (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(DURATION_1S_TO_7D).message("timeout must be a duration between 1s and 168h, like 10m"))]
    pub timeout: Option<kube::core::Duration>,
}

/// What a moderated session does when its moderators leave.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnModeratorLeave {
    /// Hold the requester's input until enough moderators watch again.
    #[default]
    Pause,
    /// End the session.
    Terminate,
}

fn default_required() -> i32 {
    1
}

/// Limits on the sessions a policy grants.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyLimits {
    /// How long after approval the requester may attach (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(DURATION_1S_TO_7D).message("approvalValidFor must be a duration between 1s and 168h, like 15m"))]
    pub approval_valid_for: Option<kube::core::Duration>,

    /// The session is ended this long after it is attached (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(DURATION_1S_TO_7D).message("maxDuration must be a duration between 1s and 168h, like 1h"))]
    pub max_duration: Option<kube::core::Duration>,

    /// The session is ended after this long without input or output (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(DURATION_1S_TO_7D).message("idleTimeout must be a duration between 1s and 168h, like 15m"))]
    pub idle_timeout: Option<kube::core::Duration>,

    /// Sessions may ask for a terminal (`-t`).
    #[serde(default = "yes")]
    pub allow_tty: bool,

    /// Sessions may send standard input (`-i`).
    #[serde(default = "yes")]
    pub allow_stdin: bool,

    /// When set, only these commands may run: each entry is matched against the first element
    /// of the session's command, by full path or by base name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 4096)))]
    pub allowed_commands: Option<Vec<String>>,

    /// End the session rather than let it run unrecorded when recording storage fails
    /// (default true: fail closed).
    #[serde(default = "yes")]
    pub recording_required: bool,

    /// File copies (`kubectl aexec cp`) this policy allows: `None` (the default), `Download`
    /// (out of the pod), `Upload` (into it) or `Both`. A copy is governed by this alone, not by
    /// `allowedCommands` or `allowStdin`: its command is the `tar` the copy needs.
    #[serde(default)]
    pub allow_copy: AllowCopy,

    /// Images a debug session (`kubectl aexec debug`) may run as an ephemeral container, by
    /// exact reference (`registry/name:tag` or `name@sha256:...`). Omitted or empty: no
    /// debugging. The command, terminal and stdin limits apply to debug sessions too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    pub debug_images: Option<Vec<String>>,
}

/// Which file copies a policy allows.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AllowCopy {
    /// No copies.
    #[default]
    None,
    /// Copies out of the pod only.
    Download,
    /// Copies into the pod only.
    Upload,
    /// Both ways.
    Both,
}

impl AllowCopy {
    /// Whether copies going `direction` are allowed.
    pub fn allows(self, direction: crate::CopyDirection) -> bool {
        matches!(
            (self, direction),
            (AllowCopy::Both, _)
                | (AllowCopy::Download, crate::CopyDirection::Download)
                | (AllowCopy::Upload, crate::CopyDirection::Upload)
        )
    }
}

fn yes() -> bool {
    true
}

/// Not derived: an omitted `limits` must mean the same as `limits: {}`, which fails closed.
impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            approval_valid_for: None,
            max_duration: None,
            idle_timeout: None,
            allow_tty: true,
            allow_stdin: true,
            allowed_commands: None,
            recording_required: true,
            allow_copy: AllowCopy::None,
            debug_images: None,
        }
    }
}

/// CEL rule shared by every duration field: parseable as a Go duration, between 1s and 7 days.
const DURATION_1S_TO_7D: &str =
    "duration(self) >= duration('1s') && duration(self) <= duration('168h')";
