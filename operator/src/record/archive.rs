//! Session records in the store: building one when a session ends ([`build_record`], pure),
//! writing it signed next to the recording ([`write_record`]), and finding and reading them for
//! review once the ExecSession is gone ([`list`], [`read_record`], [`Filter`]).
//!
//! The record is written by the controller (on the leader) for every session that reached a
//! final phase, whichever way it got there (the broker's end, a denial, an expiry, a
//! withdrawal, a crash recovery, a lost broker, a deletion), after the recording's manifest is
//! in the store, and straight to the store (not through the spool): the session's status then
//! names it (`status.record`), and only then may the session be deleted (retention, or the
//! finalizer of a deleted session).

use std::time::Duration;

use aexec_crds::{Decision, ExecSession, UserRef};
use aexec_recording::{
    chain::{self, MANIFEST_NAME, Manifest, Verifier},
    record::{
        self, Envelope, KeyRing, Person, RECORD_FORMAT, RECORD_NAME, RecordDecision, RecordEnd,
        RecordLimits, RecordPolicy, RecordRecording, RecordSegment, RecordSession, RecordSpec,
        RecordWritten, SessionRecord, TimelineEntry,
    },
};
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{
    record::recorder::prefix,
    record::signing::Signer,
    record::spool::Spool,
    record::storage::{Storage, Store},
};

/// How long after a session's end the record waits for its manifest to reach the store
/// (another replica's spool uploads it, normally within a second; a store outage delays it).
/// After that the record is written without the segment list, saying why: an outage must not
/// keep the evidence unsigned forever.
pub const MANIFEST_PATIENCE: Duration = Duration::from_secs(600);

/// The stored manifest, as the record's writer found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestRead {
    /// Its bytes as stored.
    Read(Vec<u8>),
    /// It could not be read (past [`MANIFEST_PATIENCE`]): why.
    Unreadable(String),
}

fn rfc3339(t: &Time) -> String {
    t.0.to_string()
}

fn person(u: &UserRef) -> Person {
    Person {
        username: u.username.clone(),
        groups: u.groups.clone(),
    }
}

fn decision(d: &Decision) -> RecordDecision {
    RecordDecision {
        user: person(&d.user),
        time: rfc3339(&d.time),
        comment: d.comment.clone(),
    }
}

fn with_comment(what: String, comment: Option<&str>) -> String {
    match comment {
        Some(c) => format!("{what}: {c}"),
        None => what,
    }
}

/// The record of `session` (which has reached a final phase), written by replica `by` at
/// `now`, with the stored manifest when the session has a recording (pure).
pub fn build_record(
    session: &ExecSession,
    manifest: Option<ManifestRead>,
    recording_uri: &str,
    by: &str,
    now: DateTime<Utc>,
) -> SessionRecord {
    let st = session.status.clone().unwrap_or_default();
    let meta = &session.metadata;
    let created = meta
        .creation_timestamp
        .as_ref()
        .map(rfc3339)
        .unwrap_or_default();
    let requester = &session.spec.requester;

    let mut timeline = vec![TimelineEntry {
        time: created.clone(),
        event: "Requested".into(),
        detail: with_comment(
            format!(
                "by {} for pod {}: {}",
                requester.username,
                session.spec.pod,
                chain_free_command(&session.spec.command)
            ),
            session.spec.reason.as_deref(),
        ),
    }];
    let approved = st.conditions.iter().find(|c| c.type_ == "Approved");
    if let Some(c) = approved.filter(|c| c.reason != "WaitingForApproval") {
        timeline.push(TimelineEntry {
            time: rfc3339(&c.last_transition_time),
            event: "Decided".into(),
            detail: format!("{}: {}", c.reason, c.message),
        });
    }
    for a in &st.approvals {
        timeline.push(TimelineEntry {
            time: rfc3339(&a.time),
            event: "Approved".into(),
            detail: with_comment(format!("by {}", a.user.username), a.comment.as_deref()),
        });
    }
    if let Some(d) = &st.denial {
        timeline.push(TimelineEntry {
            time: rfc3339(&d.time),
            event: "Denied".into(),
            detail: with_comment(format!("by {}", d.user.username), d.comment.as_deref()),
        });
    }
    if let Some(w) = &st.withdrawal {
        timeline.push(TimelineEntry {
            time: rfc3339(&w.time),
            event: "Withdrawn".into(),
            detail: with_comment(format!("by {}", w.user.username), w.comment.as_deref()),
        });
    }
    if let Some(t) = &st.start_time {
        timeline.push(TimelineEntry {
            time: rfc3339(t),
            event: "Attached".into(),
            detail: format!(
                "by {}, relayed by operator replica {}",
                requester.username,
                st.broker.as_deref().unwrap_or("unknown")
            ),
        });
    }
    if let Some(t) = &meta.deletion_timestamp {
        timeline.push(TimelineEntry {
            time: rfc3339(t),
            event: "Deleted".into(),
            detail: "the ExecSession was deleted".into(),
        });
    }
    let phase = st.phase.unwrap_or_default();
    if let Some(t) = &st.end_time {
        timeline.push(TimelineEntry {
            time: rfc3339(t),
            event: "Ended".into(),
            detail: format!("{phase}: {}", st.message.as_deref().unwrap_or_default()),
        });
    }
    // RFC 3339 in UTC with whole seconds sorts as text; the sort is stable, so events of one
    // second keep the order above.
    timeline.sort_by(|a, b| a.time.cmp(&b.time));

    let recording = st.recording.as_ref().map(|r| {
        let head = r.sha256.clone().unwrap_or_default();
        let mut out = RecordRecording {
            uri: r.uri.clone().unwrap_or_else(|| recording_uri.to_owned()),
            format: r.format.clone().unwrap_or_else(|| chain::CAST_FORMAT.into()),
            head: head.clone(),
            manifest_sha256: None,
            total_bytes: r
                .stored_bytes
                .or(r.bytes)
                .and_then(|b| u64::try_from(b).ok())
                .unwrap_or(0),
            segments: Vec::new(),
            interrupted: r.interrupted,
            reason: None,
            problem: None,
        };
        match manifest {
            Some(ManifestRead::Read(bytes)) => match checked_manifest(&bytes, &head) {
                Ok(m) => {
                    out.manifest_sha256 = Some(hex::encode(Sha256::digest(&bytes)));
                    out.total_bytes = m.total_bytes;
                    out.segments = m
                        .segments
                        .iter()
                        .map(|s| RecordSegment {
                            index: s.index,
                            bytes: s.bytes,
                            sha256: s.sha256.clone(),
                        })
                        .collect();
                    out.interrupted = m.interrupted;
                    out.reason = m.reason;
                }
                Err(why) => out.problem = Some(why),
            },
            Some(ManifestRead::Unreadable(why)) => {
                out.problem = Some(format!(
                    "{MANIFEST_NAME} could not be read when the record was written, only the head is signed: {why}"
                ));
            }
            None => {
                out.problem =
                    Some(format!("{MANIFEST_NAME} was not read; only the head is signed"));
            }
        }
        out
    });

    SessionRecord {
        format: RECORD_FORMAT.into(),
        session: RecordSession {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            created,
        },
        spec: RecordSpec {
            pod: session.spec.pod.clone(),
            pod_uid: st.pod_uid.clone(),
            container: st.container.clone().or(session.spec.container.clone()),
            command: session.spec.command.clone(),
            tty: session.spec.tty,
            stdin: session.spec.stdin,
            reason: session.spec.reason.clone(),
            copy: session
                .spec
                .copy
                .as_ref()
                .map(|c| crate::recording::record::RecordCopy {
                    direction: c.direction.as_str().to_owned(),
                    path: c.path.clone(),
                    local: c.local.clone(),
                }),
            debug_image: session.spec.debug.as_ref().map(|d| d.image.clone()),
        },
        requester: person(requester),
        policy: RecordPolicy {
            name: st.policy.clone(),
            decision: approved.map(|c| c.reason.clone()).unwrap_or_default(),
            message: approved
                .map(|c| c.message.clone())
                .filter(|m| !m.is_empty()),
            required_approvals: st.required_approvals,
        },
        approvals: st.approvals.iter().map(decision).collect(),
        denial: st.denial.as_ref().map(decision),
        withdrawal: st.withdrawal.as_ref().map(decision),
        limits: st.limits.as_ref().map(|l| RecordLimits {
            max_duration: l.max_duration.map(|d| d.to_string()),
            idle_timeout: l.idle_timeout.map(|d| d.to_string()),
            recording_required: l.recording_required,
        }),
        timeline,
        end: RecordEnd {
            phase: phase.to_string(),
            message: st.message.clone().unwrap_or_default(),
            exit_code: st.exit_code,
            start_time: st.start_time.as_ref().map(rfc3339),
            end_time: st.end_time.as_ref().map(rfc3339),
            deleted: meta.deletion_timestamp.is_some(),
        },
        recording,
        broker: st.broker.clone(),
        written: RecordWritten {
            by: by.to_owned(),
            at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
    }
}

/// The command for the timeline (argv joined for display).
fn chain_free_command(argv: &[String]) -> String {
    aexec_recording::cast::display_command(argv)
}

/// The stored manifest, if it is one whose chain ends at `head` (the broker's).
fn checked_manifest(bytes: &[u8], head: &str) -> Result<Manifest, String> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("the stored {MANIFEST_NAME} is not valid: {e}"))?;
    Verifier::new(&m, Some(head)).map_err(|e| {
        format!("the stored {MANIFEST_NAME} does not match the head the broker recorded: {e}")
    })?;
    Ok(m)
}

/// Why a record was not written yet.
#[derive(Debug, thiserror::Error)]
pub enum NotWritten {
    /// Expected to pass by itself soon (the manifest is still on its way to the store).
    #[error("{0}")]
    Waiting(String),
    /// Signing or storing failed.
    #[error("{0}")]
    Failed(String),
}

/// Writes the signed record of `session` (in a final phase) to the store, unless a valid one
/// is there already (a retry after the status could not be written), and returns what goes
/// into `status.record`.
pub async fn write_record(
    spool: &Spool,
    signer: &Signer,
    session: &ExecSession,
    by: &str,
    now: DateTime<Utc>,
) -> Result<aexec_crds::SessionRecordStatus, NotWritten> {
    let store = spool.store();
    let prefix = prefix(session);
    let key = format!("{prefix}/{RECORD_NAME}");
    let keys = signer
        .keys()
        .await
        .map_err(|e| NotWritten::Failed(e.to_string()))?;
    if let Err(e) = signer.publish(&keys.ring).await {
        tracing::warn!(error = %e, "the public keys could not be published; records are signed anyway");
    }
    // Written before (and its status lost)? Keep that one: one record per session.
    if let Ok(bytes) = store.get(&key, record::MAX_RECORD_BYTES as u64).await
        && let Ok(env) = Envelope::parse(&bytes)
        && let Ok(v) = env.verify(&keys.ring)
        && v.record.session.uid == session.metadata.uid.clone().unwrap_or_default()
    {
        return Ok(record_status(store, &key, &bytes, &v.key_id));
    }
    let st = session.status.clone().unwrap_or_default();
    let manifest = match &st.recording {
        None => None,
        Some(_) => {
            let mkey = format!("{prefix}/{MANIFEST_NAME}");
            match store.get(&mkey, crate::record::recorder::MAX_OBJECT).await {
                Ok(bytes) => Some(ManifestRead::Read(bytes)),
                Err(e) => {
                    let ended = st
                        .end_time
                        .as_ref()
                        .map(|t| t.0.as_second())
                        .unwrap_or_else(|| now.timestamp());
                    let waited = now.timestamp().saturating_sub(ended);
                    if waited < MANIFEST_PATIENCE.as_secs() as i64 {
                        return Err(NotWritten::Waiting(format!(
                            "the recording's manifest is not in the store yet: {e:#}"
                        )));
                    }
                    Some(ManifestRead::Unreadable(format!("{e:#}")))
                }
            }
        }
    };
    let record = build_record(
        session,
        manifest,
        &store.uri(&format!("{prefix}/{MANIFEST_NAME}")),
        by,
        now,
    );
    let bytes = keys
        .signing
        .sign(&record)
        .map_err(|e| NotWritten::Failed(e.to_string()))?;
    store
        .put(&key, bytes.clone(), None)
        .await
        .map_err(|e| NotWritten::Failed(format!("storing the session record: {e:#}")))?;
    Ok(record_status(store, &key, &bytes, keys.signing.id()))
}

fn record_status(
    store: &Store,
    key: &str,
    bytes: &[u8],
    key_id: &str,
) -> aexec_crds::SessionRecordStatus {
    aexec_crds::SessionRecordStatus {
        uri: Some(store.uri(key)),
        key_id: Some(key_id.to_owned()),
        sha256: Some(hex::encode(Sha256::digest(bytes))),
    }
}

// ---- review

/// Which records a listing keeps (from the `fieldSelector` and time parameters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub requester: Option<String>,
    pub pod: Option<String>,
    pub session: Option<String>,
    pub phase: Option<String>,
    /// Sessions that were still going on (or ended) at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Sessions requested at or before this time.
    pub until: Option<DateTime<Utc>>,
}

/// The fields a `fieldSelector` may name.
pub const SELECTABLE: [&str; 4] = ["requester", "pod", "session", "phase"];

impl Filter {
    /// From the query's `fieldSelector` (`requester=alice,pod=web-0`, `=` or `==` only) and
    /// `since`/`until` (RFC 3339) (pure).
    pub fn parse(
        field_selector: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Filter, String> {
        let mut f = Filter::default();
        for term in field_selector
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if term.contains("!=") {
                return Err(format!(
                    "field selector {term:?}: only = is supported here, not !="
                ));
            }
            let (k, v) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| format!("field selector {term:?} is not FIELD=VALUE"))?;
            let v = Some(v.trim().to_owned());
            match k.trim() {
                "requester" | "record.requester.username" => f.requester = v,
                "pod" | "record.spec.pod" => f.pod = v,
                "session" | "record.session.name" => f.session = v,
                "phase" | "record.end.phase" => f.phase = v,
                other => {
                    return Err(format!(
                        "field selector: unknown field {other:?}; use {}",
                        SELECTABLE.join(", ")
                    ));
                }
            }
        }
        let time = |name: &str, v: Option<&str>| -> Result<Option<DateTime<Utc>>, String> {
            v.map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| format!("{name}={v:?} is not an RFC 3339 time: {e}"))
            })
            .transpose()
        };
        f.since = time("since", since)?;
        f.until = time("until", until)?;
        Ok(f)
    }

    /// Whether anything is selected: an unreadable record matches no selection.
    pub fn selects_any(&self) -> bool {
        *self != Filter::default()
    }

    pub fn matches(&self, r: &SessionRecord) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let time = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let created = time(&r.session.created);
        let ended = r.end.end_time.as_deref().and_then(time).or(created);
        eq(&self.requester, &r.requester.username)
            && eq(&self.pod, &r.spec.pod)
            && eq(&self.session, &r.session.name)
            && eq(&self.phase, &r.end.phase)
            && self
                .since
                .is_none_or(|since| ended.is_some_and(|e| e >= since))
            && self
                .until
                .is_none_or(|until| created.is_some_and(|c| c <= until))
    }
}

/// A session directory in the store: `<namespace>/<session>-<uid>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dir {
    pub namespace: String,
    pub name: String,
}

impl Dir {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The session directories in `namespace` (every namespace when `None`) whose names start with
/// `starts_with`, sorted.
pub async fn list(
    store: &Store,
    namespace: Option<&str>,
    starts_with: &str,
) -> anyhow::Result<Vec<Dir>> {
    let namespaces = match namespace {
        Some(ns) => vec![ns.to_owned()],
        None => store.list_dirs("", "").await?,
    };
    let mut out = Vec::new();
    for ns in namespaces {
        if crate::record::storage::check_key(&ns).is_err() {
            continue;
        }
        for name in store.list_dirs(&ns, starts_with).await? {
            out.push(Dir {
                namespace: ns.clone(),
                name,
            });
        }
    }
    // In the order of their keys, which a list's `continue` compares: sorted by namespace
    // first, `a-b/x` would come after `a/x` while its key is before it, and a page could skip or
    // repeat records across such namespaces.
    out.sort_by_cached_key(Dir::key);
    Ok(out)
}

/// `record.json` of a session directory, `None` when there is none (a session still going on,
/// or one that ended before records existed).
pub async fn read_record(store: &Store, dir: &Dir) -> anyhow::Result<Option<Vec<u8>>> {
    let key = format!("{}/{RECORD_NAME}", dir.key());
    let names = store.list(&dir.key()).await?;
    if !names.iter().any(|n| n == RECORD_NAME) {
        return Ok(None);
    }
    store
        .get(&key, record::MAX_RECORD_BYTES as u64)
        .await
        .map(Some)
}

/// What a record's signature check gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Signed by a published key.
    Valid {
        key_id: String,
        record: SessionRecord,
    },
    /// The signature does not hold (or names an unknown key) but the content parses: shown,
    /// marked invalid.
    Invalid {
        key_id: String,
        record: SessionRecord,
        why: String,
    },
    /// Not even readable.
    Unreadable(String),
}

/// Checks `bytes` (a `record.json`) against `keys` (pure).
pub fn check(bytes: &[u8], keys: &KeyRing) -> Checked {
    let env = match Envelope::parse(bytes) {
        Ok(e) => e,
        Err(e) => return Checked::Unreadable(e.to_string()),
    };
    match env.verify(keys) {
        Ok(v) => Checked::Valid {
            key_id: v.key_id,
            record: v.record,
        },
        Err(why) => match env.unverified() {
            Ok(u) => Checked::Invalid {
                key_id: u.key_id,
                record: u.record,
                why: why.to_string(),
            },
            Err(e) => Checked::Unreadable(format!("{why}; {e}")),
        },
    }
}

/// The `Recording` object the aggregated API serves for a session directory (pure). `summary`
/// leaves out the segment list (listings).
pub fn recording_object(dir: &Dir, uri: &str, checked: &Checked, summary: bool) -> Value {
    let (record, signature) = match checked {
        Checked::Valid { key_id, record } => (
            Some(record),
            json!({"keyId": key_id, "valid": true, "message": format!("signed by key {key_id}")}),
        ),
        Checked::Invalid {
            key_id,
            record,
            why,
        } => (
            Some(record),
            json!({"keyId": key_id, "valid": false, "message": why}),
        ),
        Checked::Unreadable(why) => (None, json!({"valid": false, "message": why})),
    };
    let mut record = record.map(|r| {
        let mut r = r.clone();
        if summary && let Some(rec) = &mut r.recording {
            rec.segments.clear();
        }
        r
    });
    let created = record.as_ref().map(|r| r.session.created.clone());
    let mut object = json!({
        "apiVersion": format!("{}/{}", aexec_crds::SUBRESOURCE_GROUP, aexec_crds::VERSION),
        "kind": "Recording",
        "metadata": {"name": dir.name, "namespace": dir.namespace},
        "status": {"uri": uri, "signature": signature},
    });
    if let Some(c) = created.filter(|c| !c.is_empty()) {
        object["metadata"]["creationTimestamp"] = json!(c);
    }
    if let Some(r) = record.take() {
        object["record"] = serde_json::to_value(r).unwrap_or(Value::Null);
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use aexec_recording::chain::{SegmentMeta, SessionRef, seal};
    use serde_json::json;

    fn session(status: Value) -> ExecSession {
        serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
            "metadata": {"name": "exec-1", "namespace": "prod", "uid": "u-1",
                         "creationTimestamp": "2026-01-02T03:00:00Z"},
            "spec": {"pod": "api-0", "command": ["sh", "-c", "ls -l"], "tty": true, "stdin": true,
                     "reason": "INC-1",
                     "requester": {"username": "alice", "groups": ["dev"]}},
            "status": status
        }))
        .expect("session")
    }

    fn manifest() -> (Manifest, Vec<u8>) {
        let bytes = b"[0.1, \"o\", \"hi\"]\n".to_vec();
        let meta = SegmentMeta::compute(None, &bytes, 0, 100).expect("meta");
        let m = seal(
            SessionRef {
                namespace: "prod".into(),
                name: "exec-1".into(),
                uid: "u-1".into(),
            },
            vec![meta],
            "2026-01-02T03:05:00Z".into(),
        )
        .expect("seal");
        let b = serde_json::to_vec_pretty(&m).expect("json");
        (m, b)
    }

    fn ended(head: &str) -> Value {
        json!({
            "phase": "Succeeded", "message": "the command exited with code 0", "exitCode": 0,
            "policy": "prod-shell", "requiredApprovals": 1, "podUID": "p-1", "container": "app",
            "approvals": [{"user": {"username": "bob", "groups": ["sre"]}, "time": "2026-01-02T03:01:00Z", "comment": "ok"}],
            "conditions": [{"type": "Approved", "status": "True", "reason": "Approved", "message": "approved by bob",
                            "lastTransitionTime": "2026-01-02T03:01:00Z"}],
            "limits": {"maxDuration": "1h", "idleTimeout": "15m", "recordingRequired": true},
            "startTime": "2026-01-02T03:02:00Z", "endTime": "2026-01-02T03:04:00Z", "broker": "op-0",
            "recording": {"uri": "s3://b/prod/exec-1-u-1/manifest.json", "format": "asciicast-v3",
                          "bytes": 18, "sha256": head, "segments": 1}
        })
    }

    fn now() -> DateTime<Utc> {
        "2026-01-02T03:06:00Z".parse().expect("time")
    }

    /// Directories come in the order of their keys, which is what a page's `continue` is
    /// compared with: a namespace that extends another with `-` sorts before it by key.
    #[tokio::test]
    async fn dirs_are_listed_in_key_order() {
        use crate::record::storage::{LocalDir, Storage, Store};
        let root = tempfile::tempdir().expect("tmp");
        let store = Store::Local(LocalDir::new(root.path()));
        for key in ["a/x-1", "a/y-2", "a-b/x-3", "a.c/z-4", "b/w-5"] {
            store
                .put(&format!("{key}/{RECORD_NAME}"), b"{}".to_vec(), None)
                .await
                .expect("put");
        }
        let keys: Vec<String> = list(&store, None, "")
            .await
            .expect("list")
            .iter()
            .map(Dir::key)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 5);
        // Paging after each key takes exactly the keys after it.
        for (i, after) in keys.iter().enumerate() {
            let rest: Vec<&String> = keys.iter().filter(|k| *k > after).collect();
            assert_eq!(rest, keys[i + 1..].iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_record_holds_the_whole_session_and_the_recording() {
        let (m, bytes) = manifest();
        let s = session(ended(&m.head));
        let r = build_record(
            &s,
            Some(ManifestRead::Read(bytes.clone())),
            "x",
            "op-1",
            now(),
        );
        assert_eq!(r.format, RECORD_FORMAT);
        assert_eq!(r.session.uid, "u-1");
        assert_eq!(r.spec.pod_uid.as_deref(), Some("p-1"));
        assert_eq!(r.spec.container.as_deref(), Some("app"));
        assert_eq!(r.requester.username, "alice");
        assert_eq!(r.policy.name.as_deref(), Some("prod-shell"));
        assert_eq!(r.policy.decision, "Approved");
        assert_eq!(r.approvals[0].comment.as_deref(), Some("ok"));
        assert_eq!(r.end.phase, "Succeeded");
        assert_eq!(r.end.exit_code, Some(0));
        assert!(!r.end.deleted);
        assert_eq!(r.broker.as_deref(), Some("op-0"));
        assert_eq!(r.written.by, "op-1");
        assert_eq!(
            r.limits
                .as_ref()
                .and_then(|l| l.max_duration.clone())
                .as_deref(),
            Some("3600s")
        );
        let events: Vec<&str> = r.timeline.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            events,
            ["Requested", "Decided", "Approved", "Attached", "Ended"]
        );
        assert!(
            r.timeline[0].detail.contains("'ls -l'"),
            "{:?}",
            r.timeline[0]
        );
        assert!(
            r.timeline[0].detail.ends_with(": INC-1"),
            "{:?}",
            r.timeline[0]
        );
        let rec = r.recording.as_ref().expect("recording");
        assert_eq!(rec.head, m.head);
        assert_eq!(rec.segments.len(), 1);
        assert_eq!(rec.problem, None);
        // The record checks the manifest it was built from.
        assert_eq!(r.check_manifest(&bytes).expect("manifest"), m);
    }

    #[test]
    fn a_manifest_that_disagrees_with_the_broker_is_not_signed_as_good() {
        let (_, bytes) = manifest();
        let other = hex::encode([3u8; 32]);
        let s = session(ended(&other));
        let r = build_record(&s, Some(ManifestRead::Read(bytes)), "x", "op-1", now());
        let rec = r.recording.expect("recording");
        assert_eq!(
            rec.head, other,
            "the broker's head is signed, not the store's"
        );
        assert_eq!(rec.manifest_sha256, None);
        assert!(rec.segments.is_empty());
        assert!(
            rec.problem
                .as_deref()
                .is_some_and(|p| p.contains("does not match the head the broker recorded")),
            "{:?}",
            rec.problem
        );
        let r = build_record(
            &session(ended(&other)),
            Some(ManifestRead::Unreadable("gone".into())),
            "x",
            "op-1",
            now(),
        );
        assert!(
            r.recording
                .and_then(|r| r.problem)
                .is_some_and(|p| p.ends_with("gone"))
        );
    }

    #[test]
    fn sessions_that_never_ran_have_no_recording() {
        let s = session(json!({
            "phase": "Withdrawn", "message": "withdrawn by alice",
            "withdrawal": {"user": {"username": "alice"}, "time": "2026-01-02T03:00:30Z"},
            "endTime": "2026-01-02T03:00:30Z"
        }));
        let mut s = s;
        s.metadata.deletion_timestamp = Some(Time("2026-01-02T03:00:40Z".parse().expect("t")));
        let r = build_record(&s, None, "x", "op-1", now());
        assert_eq!(r.recording, None);
        assert_eq!(r.end.phase, "Withdrawn");
        assert!(r.end.deleted);
        assert_eq!(
            r.withdrawal.as_ref().map(|w| w.user.username.as_str()),
            Some("alice")
        );
        let events: Vec<&str> = r.timeline.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(events, ["Requested", "Withdrawn", "Ended", "Deleted"]);
    }

    #[test]
    fn filters() {
        let (m, bytes) = manifest();
        let r = build_record(
            &session(ended(&m.head)),
            Some(ManifestRead::Read(bytes)),
            "x",
            "op",
            now(),
        );
        let f = |sel: &str, since: Option<&str>, until: Option<&str>| {
            Filter::parse(Some(sel), since, until)
                .expect("filter")
                .matches(&r)
        };
        assert!(f("", None, None));
        assert!(f("requester=alice,pod=api-0", None, None));
        assert!(f("session==exec-1,phase=Succeeded", None, None));
        assert!(!f("requester=bob", None, None));
        assert!(
            f("", Some("2026-01-02T03:03:00Z"), None),
            "still going on then"
        );
        assert!(!f("", Some("2026-01-02T03:05:00Z"), None), "over by then");
        assert!(f("", None, Some("2026-01-02T03:00:00Z")));
        assert!(
            !f("", None, Some("2026-01-02T02:59:59Z")),
            "not yet requested"
        );
        assert!(
            Filter::parse(Some("owner=x"), None, None)
                .expect_err("field")
                .contains("unknown field")
        );
        assert!(Filter::parse(Some("pod!=x"), None, None).is_err());
        assert!(Filter::parse(Some("pod"), None, None).is_err());
        assert!(
            Filter::parse(None, Some("yesterday"), None)
                .expect_err("time")
                .contains("RFC 3339")
        );
    }

    #[test]
    fn recording_objects_say_whether_the_signature_holds() {
        use aexec_recording::record::SigningKey;
        let (m, bytes) = manifest();
        let r = build_record(
            &session(ended(&m.head)),
            Some(ManifestRead::Read(bytes)),
            "x",
            "op",
            now(),
        );
        let key = SigningKey::from(record::ed25519_dalek::SigningKey::from_bytes(&[4; 32]));
        let signed = key.sign(&r).expect("sign");
        let ring = KeyRing::new(vec![key.public()]);
        let dir = Dir {
            namespace: "prod".into(),
            name: "exec-1-u-1".into(),
        };
        let checked = check(&signed, &ring);
        assert!(matches!(checked, Checked::Valid { .. }));
        let o = recording_object(&dir, "s3://b/prod/exec-1-u-1/record.json", &checked, true);
        assert_eq!(o["kind"], "Recording");
        assert_eq!(o["metadata"]["name"], "exec-1-u-1");
        assert_eq!(o["metadata"]["creationTimestamp"], "2026-01-02T03:00:00Z");
        assert_eq!(o["status"]["signature"]["valid"], true);
        assert_eq!(o["record"]["recording"]["segments"], json!([]));
        let full = recording_object(&dir, "u", &checked, false);
        assert_eq!(full["record"]["recording"]["segments"][0]["index"], 0);

        let other = KeyRing::new(vec![
            SigningKey::from(record::ed25519_dalek::SigningKey::from_bytes(&[5; 32])).public(),
        ]);
        let checked = check(&signed, &other);
        assert!(matches!(checked, Checked::Invalid { .. }));
        let o = recording_object(&dir, "u", &checked, true);
        assert_eq!(o["status"]["signature"]["valid"], false);
        assert_eq!(o["record"]["requester"]["username"], "alice");
        let o = recording_object(&dir, "u", &check(b"{not json", &ring), true);
        assert_eq!(o["status"]["signature"]["valid"], false);
        assert!(o.get("record").is_none());
    }
}
