//! `ExecSession`: one request to run one command in one pod, and everything that happened to it.
//!
//! The spec is what the requester asked for and is immutable once created (a CEL rule the API
//! server enforces), so what was approved is exactly what runs. The status is written only by the
//! operator.

// clippy reads the repeated `printcolumn(...)` arguments of `#[kube]` as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request to execute a command in a pod, subject to an ExecPolicy: it is approved, denied or
/// waits for approvals, is then attached to once by its requester through the operator, and is
/// recorded byte for byte.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "aexec.dev",
    version = "v1alpha1",
    kind = "ExecSession",
    plural = "execsessions",
    singular = "execsession",
    shortname = "exs",
    category = "aexec",
    namespaced,
    status = "ExecSessionStatus",
    derive = "PartialEq",
    doc = "An audited request to execute a command in a pod: approved by policy or by people, attached once by its requester through the operator, and recorded.",
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.pod"),
    printcolumn(
        name = "Requester",
        type_ = "string",
        json_path = ".spec.requester.username"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Policy", type_ = "string", json_path = ".status.policy"),
    printcolumn(
        name = "Approvals",
        type_ = "string",
        json_path = ".status.approvalSummary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Command",
        type_ = "string",
        json_path = ".spec.command",
        priority = 1
    ),
    printcolumn(
        name = "Exit",
        type_ = "integer",
        json_path = ".status.exitCode",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".spec.reason",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    selectable = ".spec.pod",
    selectable = ".spec.requester.username",
    selectable = ".status.phase"
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: create a new ExecSession instead").reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct ExecSessionSpec {
    /// Name of the pod to execute in, in the session's namespace. The operator pins the pod's UID
    /// when it validates the session; a pod recreated under the same name is not the approved one.
    #[schemars(length(min = 1, max = 253))]
    pub pod: String,

    /// Container to execute in. When omitted, the pod's `kubectl.kubernetes.io/default-container`
    /// annotation, or its only container, is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,

    /// The command and its arguments (argv), executed without a shell unless the command is one.
    /// It travels to the node in the URL of the exec request, so all of it must fit in 64000
    /// bytes there: each argument takes 9 bytes plus its URL-encoded length (letters, digits,
    /// spaces and `-._*` one byte each, any other byte three). Pass a long script on stdin.
    #[schemars(length(min = 1, max = 256), inner(length(max = 4096)))]
    #[x_kube(validation = command_rule())]
    pub command: Vec<String>,

    /// Pass the requester's standard input to the command (`kubectl exec -i`).
    #[serde(default)]
    pub stdin: bool,

    /// Allocate a terminal for the command (`kubectl exec -t`); stderr is then merged into stdout.
    #[serde(default)]
    pub tty: bool,

    /// Why the requester needs this session (a ticket or incident reference); shown to approvers
    /// and kept with the recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,

    /// Who asked. Must equal the authenticated user creating the object; the admission policy
    /// shipped next to this CRD rejects anything else.
    pub requester: UserRef,

    /// A file copy (`kubectl aexec cp`) rather than a command of the requester's choosing: the
    /// command is then the `tar` that `kubectl cp` runs for it ([`copy_command`]), policies
    /// allow it with `limits.allowCopy` instead of `allowedCommands`, and the recording keeps
    /// the transferred tar stream and a list of its files with their SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopySpec>,

    /// Debugging (`kubectl aexec debug`): after approval the operator adds an ephemeral
    /// container of this image to the pod, sharing the process namespace of `container` (the
    /// target), runs `command` in it, and attaches to it; policies allow the image with
    /// `limits.debugImages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<DebugSpec>,
}

/// What a debug session runs its command in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DebugSpec {
    /// The image of the ephemeral container, as the policy's `limits.debugImages` names it.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
}

/// The name of the ephemeral container a debug session adds to its pod: `aexec-` and the
/// session's name, cut to the 63 characters a container name may have.
pub fn debug_container_name(session: &str) -> String {
    let mut name = format!("aexec-{session}");
    name.truncate(63);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// What a copy moves, and where.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CopySpec {
    /// `Download` copies out of the pod, `Upload` into it.
    pub direction: CopyDirection,

    /// The path in the container: what is copied out (a file or a directory), or where the
    /// upload lands (its last element names the file or directory written).
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,

    /// The path on the requester's machine, as they gave it: for the people reading the
    /// session, not checked by anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub local: Option<String>,
}

/// Which way a copy goes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CopyDirection {
    /// Out of the pod, to the requester.
    Download,
    /// From the requester, into the pod.
    Upload,
}

impl CopyDirection {
    /// The direction as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyDirection::Download => "Download",
            CopyDirection::Upload => "Upload",
        }
    }
}

/// `path` cleaned as a slash-separated path (Go's `path.Clean`): repeated slashes, `.` and
/// `..` elements resolved lexically; `..` above the root of an absolute path is dropped; an
/// empty result is `.`.
pub fn clean_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The command a copy runs in the container, as `kubectl cp` builds it: `tar cf - PATH` to
/// copy out; to copy in, `tar -xmf - -C DIR NAME`, `DIR` being the destination's directory
/// (Go's `path.Dir`: `.` for a bare name) and `NAME` its last element. The uploaded tar's
/// entries are named after `NAME` (`NAME`, `NAME/...`); kubectl passes no member, and so lets
/// its tar write anything under `DIR`: naming `NAME` as the only member to extract keeps an
/// upload to what was approved (a requester's own client could send other names).
pub fn copy_command(copy: &CopySpec) -> Vec<String> {
    let mut argv: Vec<String> = match copy.direction {
        CopyDirection::Download => vec!["tar".into(), "cf".into(), "-".into(), copy.path.clone()],
        CopyDirection::Upload => vec!["tar".into(), "-xmf".into(), "-".into()],
    };
    if copy.direction == CopyDirection::Upload {
        let dest = clean_path(&copy.path);
        let dir = match dest.rfind('/') {
            Some(0) => "/",
            Some(i) => &dest[..i],
            None => ".",
        };
        let name = dest.rsplit('/').next().unwrap_or(&dest);
        argv.extend(["-C".to_owned(), dir.to_owned(), name.to_owned()]);
    }
    argv
}

/// The most bytes a session's command may take in the URL of the exec request the operator
/// sends to the API server (see [`command_url_bytes`]). The operator's HTTP client refuses a
/// request line longer than 65534 bytes (the `http` crate's `Uri` bound, the tightest on the
/// way: the API server and the kubelet accept 1 MiB); the rest of that URL (path, namespace,
/// pod and container names at their maximum lengths, the stream flags) takes at most 456, and
/// the remainder is left for an API server URL with a path prefix (a proxy in front of it).
pub const MAX_COMMAND_URL_BYTES: usize = 64_000;
/// The most arguments a command may have (the schema's `maxItems`).
pub const MAX_COMMAND_ARGS: usize = 256;
/// The most characters one argument may have (the schema's `maxLength`).
pub const MAX_ARGUMENT_CHARS: usize = 4096;

/// The bytes `command` takes in the exec request's URL: per argument, `&command=` (9 bytes)
/// and the argument form-urlencoded as the operator's client encodes it (`*-._`, ASCII letters
/// and digits as they are, a space as `+`, any other byte as `%XX`).
pub fn command_url_bytes<S: AsRef<str>>(command: &[S]) -> usize {
    command
        .iter()
        .map(|a| {
            9 + form_urlencoded::byte_serialize(a.as_ref().as_bytes())
                .map(str::len)
                .sum::<usize>()
        })
        .sum()
}

/// Why `command` cannot reach the node, in a sentence that says what to do, or `None` when it
/// fits. The plugin checks before it creates a session; the schema's rule and the operator's
/// evaluation check the same bound.
pub fn command_too_long(command: &[String]) -> Option<String> {
    if command.len() > MAX_COMMAND_ARGS {
        return Some(format!(
            "the command has {} arguments, and at most {MAX_COMMAND_ARGS} are allowed; pass a \
             long script on stdin instead, like kubectl aexec -i POD -- sh < script.sh",
            command.len()
        ));
    }
    if let Some((i, len)) = command
        .iter()
        .map(|a| a.chars().count())
        .enumerate()
        .find(|(_, len)| *len > MAX_ARGUMENT_CHARS)
    {
        return Some(format!(
            "argument {} of the command is {len} characters long, and at most \
             {MAX_ARGUMENT_CHARS} are allowed; pass a long script on stdin instead, like \
             kubectl aexec -i POD -- sh < script.sh",
            i + 1
        ));
    }
    let bytes = command_url_bytes(command);
    (bytes > MAX_COMMAND_URL_BYTES).then(|| {
        format!(
            "the command is too long to reach the pod: it takes {bytes} bytes in the exec \
             request's URL, and at most {MAX_COMMAND_URL_BYTES} fit (9 bytes per argument plus \
             the argument URL-encoded: letters, digits, spaces and -._* one byte each, any other \
             byte three); pass a long script on stdin instead, like kubectl aexec -i POD -- sh < script.sh"
        )
    })
}

/// [`command_url_bytes`] in CEL, for the schema: 3 bytes per byte of an argument, less 2 for
/// each character sent as it is (all of those are one byte), plus 9 per argument.
const COMMAND_URL_BYTES_CEL: &str =
    "self.map(a, 9 + 3 * size(bytes(a)) - 2 * size(a.findAll('[A-Za-z0-9*._ -]'))).sum()";

/// The schema's rule for [`MAX_COMMAND_URL_BYTES`], with a message that gives the size.
fn command_rule() -> kube::core::Rule {
    kube::core::Rule::new(format!(
        "{COMMAND_URL_BYTES_CEL} <= {MAX_COMMAND_URL_BYTES}"
    ))
    // `format`, not `+ string(...)`: the API server cannot bound the cost of a concatenation
    // with a converted number and refuses the CRD.
    .message(kube::core::Message::Expression(format!(
        "'the command is too long to reach the pod: it takes %d bytes in the exec request URL, \
         and at most {MAX_COMMAND_URL_BYTES} fit (9 bytes per argument plus the argument \
         URL-encoded: letters, digits, spaces and -._* one byte each, any other byte three); \
         pass a long script on stdin instead'.format([{COMMAND_URL_BYTES_CEL}])"
    )))
}

/// An authenticated Kubernetes user, as the API server saw them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    /// The user name.
    #[schemars(length(min = 1, max = 512))]
    pub username: String,

    /// The groups the user belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(max = 512)))]
    pub groups: Vec<String>,
}

/// Where a session is in its life. Terminal phases are `Denied`, `Expired`, `Withdrawn`,
/// `Succeeded`, `Failed` and `Terminated`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    /// Waiting for the policy decision or for approvals.
    #[default]
    Pending,
    /// Approved: the requester may attach once before the approval deadline.
    Approved,
    /// Refused by a policy or by an approver.
    Denied,
    /// Approved but not attached before the deadline, or still pending when it ran out.
    Expired,
    /// The requester withdrew the request before attaching (`withdraw`).
    Withdrawn,
    /// Attached: the command is running and being recorded.
    Active,
    /// The command ran and exited with code 0.
    Succeeded,
    /// The command could not run, exited non-zero, or the session broke (pod gone, storage lost).
    Failed,
    /// Ended from outside (terminate, deletion), or by a limit (maximum duration, idle
    /// timeout).
    Terminated,
}

impl Phase {
    /// Every phase, in the order of a session's life.
    pub const ALL: [Phase; 9] = [
        Phase::Pending,
        Phase::Approved,
        Phase::Denied,
        Phase::Expired,
        Phase::Withdrawn,
        Phase::Active,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Terminated,
    ];
}

impl Phase {
    /// No further transition can happen from this phase.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Denied
                | Phase::Expired
                | Phase::Withdrawn
                | Phase::Succeeded
                | Phase::Failed
                | Phase::Terminated
        )
    }

    /// The phase as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Approved => "Approved",
            Phase::Denied => "Denied",
            Phase::Expired => "Expired",
            Phase::Withdrawn => "Withdrawn",
            Phase::Active => "Active",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Terminated => "Terminated",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One approval or denial: who decided, as what, when and why.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The approver, as authenticated by the API server.
    pub user: UserRef,
    /// When the decision was made.
    pub time: Time,
    /// The approver's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comment: Option<String>,
}

/// How a watcher watches a session live.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchMode {
    /// Sees the session, read-only.
    Observer,
    /// Sees it, and counts toward the policy's moderation.
    Moderator,
}

/// Someone who watched the session live (`kubectl aexec watch`): who, as what, from when to when.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WatcherEntry {
    /// The watcher, as authenticated by the API server.
    pub user: UserRef,
    pub mode: WatchMode,
    /// When the watcher joined.
    pub joined: Time,
    /// When the watcher left; none while watching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<Time>,
}

/// The limits that govern an approved session, copied from the policy at approval so that a
/// later policy edit cannot change a session already granted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionLimits {
    /// The session is ended this long after it was attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<kube::core::Duration>,
    /// The session is ended after this long without input or output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<kube::core::Duration>,
    /// End the session rather than run it unrecorded when storage fails.
    #[serde(default)]
    pub recording_required: bool,
    /// The policy's moderation, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<crate::policy::ModerationRule>,
}

/// Where a moderated session stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModerationState {
    /// Attached, waiting for moderators; the command has not started.
    Waiting,
    /// Enough moderators watch; the command runs.
    Moderated,
    /// Moderators left mid-session; the requester's input is held.
    Paused,
}

/// The live state of a moderated session.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModerationStatus {
    pub state: ModerationState,
    /// Moderators watching now.
    pub moderators: i32,
    /// Moderators the policy requires.
    pub required: i32,
}

/// Where the recording is and how to check it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RecordingStatus {
    /// Location of the recording's manifest (`file://...` or `s3://bucket/key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Recording format, `asciicast-v3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Size of the recording (its asciicast, as a reviewer gets it), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Size of its segments as stored (compressed), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,
    /// Head of the hash chain (hex): the chain value of the last segment, which commits to every
    /// segment before it. Verification compares the stored recording against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Number of segments written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<i64>,
    /// The recording was sealed after an interruption (operator crash, lost stream) rather than at
    /// the end of the session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// The signed session record the operator wrote to the store when the session ended.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecordStatus {
    /// Location of the record (`record.json` next to the recording's manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Id of the key that signed it (see `kubectl aexec keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// SHA-256 (hex) of the stored record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What the operator knows and decided about a session. Written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExecSessionStatus {
    /// Where the session is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// A sentence for people saying why the session is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The ExecPolicy that governs this session (empty when the operator's default applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// How many approvals the policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_approvals: Option<i32>,
    /// Approvals given so far, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Decision>,
    /// `given/required`, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_summary: Option<String>,
    /// The denial, when an approver denied the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<Decision>,
    /// The requester's withdrawal, when the request was withdrawn before it was attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal: Option<Decision>,
    /// UID of the pod at validation: only this pod may be attached.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podUID")]
    pub pod_uid: Option<String>,
    /// Container resolved at validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Until when the session may be approved (while Pending) or attached (while Approved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Time>,
    /// Limits copied from the policy at approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<SessionLimits>,
    /// When the requester attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// The command's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The operator replica that holds the attached stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Where the other operator replicas reach the broker (`IP:port` of its aggregated API), to
    /// forward a watch that reached one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_address: Option<String>,
    /// Who watched the session live, in the order they joined (the last 64; the recording has
    /// every join and leave).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watchers: Vec<WatcherEntry>,
    /// Moderation, for sessions whose policy requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationStatus>,
    /// The recording of the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingStatus>,
    /// The signed session record in the store, once written (after the session ended). The
    /// operator deletes the session only after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<SessionRecordStatus>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Ready` (the session may be attached), `Approved`, `Recorded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl ExecSession {
    /// The session's phase, `Pending` until the operator has written one.
    pub fn phase(&self) -> Phase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_like_go_path_clean() {
        for (p, want) in [
            ("/tmp//a/./b/", "/tmp/a/b"),
            ("a/../../b", "../b"),
            ("/../x", "/x"),
            ("", "."),
            ("./", "."),
            ("/", "/"),
            ("a/b/..", "a"),
        ] {
            assert_eq!(clean_path(p), want, "{p:?}");
        }
    }

    fn copy(direction: CopyDirection, path: &str) -> Vec<String> {
        copy_command(&CopySpec {
            direction,
            path: path.into(),
            local: None,
        })
    }

    #[test]
    fn copy_commands_are_the_tar_kubectl_cp_runs() {
        assert_eq!(
            copy(CopyDirection::Download, "/var/log"),
            ["tar", "cf", "-", "/var/log"]
        );
        assert_eq!(
            copy(CopyDirection::Upload, "/tmp/x/file.txt"),
            ["tar", "-xmf", "-", "-C", "/tmp/x", "file.txt"]
        );
        assert_eq!(
            copy(CopyDirection::Upload, "/file.txt"),
            ["tar", "-xmf", "-", "-C", "/", "file.txt"]
        );
        assert_eq!(
            copy(CopyDirection::Upload, "file.txt"),
            ["tar", "-xmf", "-", "-C", ".", "file.txt"]
        );
        assert_eq!(
            copy(CopyDirection::Upload, "a//b/../c"),
            ["tar", "-xmf", "-", "-C", "a", "c"]
        );
    }

    #[test]
    fn debug_containers_are_named_after_their_session_within_63_characters() {
        assert_eq!(debug_container_name("debug-x7k2p"), "aexec-debug-x7k2p");
        let long = format!("{}-{}", "a".repeat(56), "bcdef");
        let n = debug_container_name(&long);
        assert!(n.len() <= 63 && n.starts_with("aexec-aaa"), "{n}");
        assert!(!n.ends_with('-'), "{n}");
    }
}
