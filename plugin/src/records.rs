//! Review from the store (pure parts): the `Recording` objects the operator serves from the
//! signed session records (sessions whose ExecSession is gone, after the retention or a
//! deletion), their table and description, and the verification of a stored recording against
//! its signed record, from any source of stored objects (the cluster, or a directory copied out
//! of the bucket: `verify --dir`).

use std::collections::HashSet;

use aexec_recording::{
    cast::display_command,
    chain::{MANIFEST_NAME, SegmentMeta, Verifier, sidecar_name},
    record::{self, KeyRing, RECORD_NAME, SessionRecord},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    table::{age, render},
};

/// `metadata` of a `Recording`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Meta {
    /// `<session>-<uid>`: the session's directory in the store.
    pub name: String,
    pub namespace: String,
}

/// What the operator found about a record's signature.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Signature {
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub valid: bool,
    #[serde(default)]
    pub message: String,
}

/// `status` of a `Recording`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct RecordingStatus {
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub signature: Signature,
}

/// `recordings.subresources.aexec.dev`: one session record in the store.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Recording {
    pub metadata: Meta,
    /// None when the stored record cannot even be read.
    #[serde(default)]
    pub record: Option<SessionRecord>,
    #[serde(default)]
    pub status: RecordingStatus,
}

/// `RecordingList`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RecordingList {
    #[serde(default)]
    pub items: Vec<Recording>,
    #[serde(default)]
    pub metadata: ListMeta,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListMeta {
    #[serde(default, rename = "continue")]
    pub continue_: Option<String>,
}

fn time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn none(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn single_line(s: &str) -> String {
    s.replace(['\n', '\r', '\t'], " ")
}

/// The `list --archived` table: SESSION, POD, REQUESTER, PHASE, EXIT, AGE (since requested),
/// SIGNED (`yes`, or `INVALID`), OBJECT (`present` while the ExecSession still exists, else
/// `deleted`: `uids` holds the UIDs of those that exist); NAMESPACE first with `-A`; RECORDING,
/// CONTAINER, COMMAND, REASON, MESSAGE, KEY with `-o wide`.
pub fn list(
    items: &[Recording],
    uids: &HashSet<String>,
    all_namespaces: bool,
    wide: bool,
    no_headers: bool,
    now: DateTime<Utc>,
) -> String {
    let mut headers = vec![];
    if all_namespaces {
        headers.push("NAMESPACE");
    }
    headers.extend([
        "SESSION",
        "POD",
        "REQUESTER",
        "PHASE",
        "EXIT",
        "AGE",
        "SIGNED",
        "OBJECT",
    ]);
    if wide {
        headers.extend([
            "RECORDING",
            "CONTAINER",
            "COMMAND",
            "REASON",
            "MESSAGE",
            "KEY",
        ]);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            let r = item.record.clone().unwrap_or_default();
            let mut row = vec![];
            if all_namespaces {
                row.push(item.metadata.namespace.clone());
            }
            let unreadable = item.record.is_none();
            row.extend([
                if unreadable {
                    format!("<unreadable: {}>", item.metadata.name)
                } else {
                    r.session.name.clone()
                },
                none(Some(r.spec.pod.clone())),
                none(Some(r.requester.username.clone())),
                none(Some(r.end.phase.clone())),
                none(r.end.exit_code.map(|c| c.to_string())),
                time(&r.session.created).map_or_else(|| "<unknown>".into(), |t| age(t, now)),
                if item.status.signature.valid {
                    "yes".into()
                } else {
                    "INVALID".into()
                },
                if uids.contains(&r.session.uid) {
                    "present".into()
                } else {
                    "deleted".into()
                },
            ]);
            if wide {
                row.extend([
                    item.metadata.name.clone(),
                    none(r.spec.container.clone()),
                    single_line(&display_command(&r.spec.command)),
                    none(r.spec.reason.as_deref().map(single_line)),
                    none(Some(single_line(&r.end.message))),
                    none(item.status.signature.key_id.clone()),
                ]);
            }
            row
        })
        .collect();
    render(&headers, &rows, no_headers)
}

/// `describe` of a session whose ExecSession is gone, from its record in the store.
pub fn describe(item: &Recording, object_exists: bool) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{:<14}{v}\n", format!("{k}:")));
    kv(
        "Source",
        format!(
            "the session record in the store ({}){}",
            item.status.uri,
            if object_exists {
                "; the ExecSession still exists"
            } else {
                "; the ExecSession object no longer exists"
            }
        ),
    );
    let sig = &item.status.signature;
    kv(
        "Signature",
        if sig.valid {
            format!(
                "valid, key {} ({})",
                sig.key_id.clone().unwrap_or_default(),
                record::ALGORITHM
            )
        } else {
            format!("INVALID: {}", sig.message)
        },
    );
    kv("Recording", item.metadata.name.clone());
    let Some(r) = &item.record else {
        return out;
    };
    let mut kv = |k: &str, v: String| out.push_str(&format!("{:<14}{v}\n", format!("{k}:")));
    kv("Name", r.session.name.clone());
    kv("Namespace", r.session.namespace.clone());
    kv("UID", r.session.uid.clone());
    kv(
        "Pod",
        format!(
            "{}{}",
            r.spec.pod,
            r.spec
                .pod_uid
                .as_deref()
                .map(|u| format!(" (UID {u})"))
                .unwrap_or_default()
        ),
    );
    kv("Container", none(r.spec.container.clone()));
    kv("Command", display_command(&r.spec.command));
    if let Some(c) = &r.spec.copy {
        kv(
            "Copy",
            format!(
                "{} of {} (local: {})",
                c.direction,
                c.path,
                c.local.as_deref().unwrap_or("not given")
            ),
        );
    }
    if let Some(image) = &r.spec.debug_image {
        kv("Debug", format!("ephemeral container of image {image}"));
    }
    kv("Stdin", r.spec.stdin.to_string());
    kv("TTY", r.spec.tty.to_string());
    kv("Reason", none(r.spec.reason.clone()));
    let groups = if r.requester.groups.is_empty() {
        String::new()
    } else {
        format!(" (groups: {})", r.requester.groups.join(", "))
    };
    kv("Requester", format!("{}{groups}", r.requester.username));
    kv("Phase", r.end.phase.clone());
    kv("Message", none(Some(r.end.message.clone())));
    kv(
        "Policy",
        format!(
            "{}{}",
            none(r.policy.name.clone()),
            if r.policy.decision.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.policy.decision)
            }
        ),
    );
    if let Some(required) = r.policy.required_approvals {
        kv("Approvals", format!("{} of {required}", r.approvals.len()));
    }
    for a in &r.approvals {
        out.push_str(&format!(
            "  {} at {}{}\n",
            a.user.username,
            a.time,
            a.comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ));
    }
    let mut kv = |k: &str, v: String| out.push_str(&format!("{:<14}{v}\n", format!("{k}:")));
    for (what, d) in [("Denied by", &r.denial), ("Withdrawn by", &r.withdrawal)] {
        if let Some(d) = d {
            kv(
                what,
                format!(
                    "{} at {}{}",
                    d.user.username,
                    d.time,
                    d.comment
                        .as_deref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                ),
            );
        }
    }
    if let Some(l) = &r.limits {
        let mut parts = vec![];
        if let Some(d) = &l.max_duration {
            parts.push(format!("max duration {d}"));
        }
        if let Some(d) = &l.idle_timeout {
            parts.push(format!("idle timeout {d}"));
        }
        parts.push(format!("recording required {}", l.recording_required));
        kv("Limits", parts.join(", "));
    }
    if let Some(c) = r.end.exit_code {
        kv("Exit Code", c.to_string());
    }
    kv("Broker", none(r.broker.clone()));
    kv(
        "Recorded by",
        format!("{} at {}", r.written.by, r.written.at),
    );
    out.push_str("Timeline:\n");
    for e in &r.timeline {
        out.push_str(&format!("  {}  {}: {}\n", e.time, e.event, e.detail));
    }
    out.push_str("Recording:");
    match &r.recording {
        None => out.push_str(" <none> (the session never ran)\n"),
        Some(rec) => {
            out.push('\n');
            let mut kv =
                |k: &str, v: String| out.push_str(&format!("  {:<12}{v}\n", format!("{k}:")));
            kv("URI", rec.uri.clone());
            kv("Format", rec.format.clone());
            kv("Bytes", rec.total_bytes.to_string());
            kv("Segments", rec.segments.len().to_string());
            kv("SHA-256", rec.head.clone());
            if rec.interrupted {
                kv(
                    "Interrupted",
                    format!("true ({})", rec.reason.clone().unwrap_or_default()),
                );
            }
            if let Some(p) = &rec.problem {
                kv("Problem", p.clone());
            }
        }
    }
    out
}

/// Where the stored objects of one session come from: the cluster (the operator's
/// `recordings/NAME/content?object=`) or a directory copied out of the store.
pub trait Objects {
    /// The object `name` (`record.json`, `manifest.json`, `seg-NNNNNN.cast`, ...), `None`
    /// when there is none.
    fn get(&self, name: &str) -> impl std::future::Future<Output = Result<Option<Vec<u8>>>>;
    /// Where they are, for messages.
    fn source(&self) -> String;
}

/// What `verify` established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub key_id: String,
    pub record: SessionRecord,
    /// `None` when the session never ran.
    pub recording: Option<aexec_recording::chain::VerifyReport>,
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::Verify(format!("FAILED: {e}"))
}

/// Verifies the session record's signature with `keys`, then the manifest against the record
/// and every segment (and sidecar, when there is one) against the manifest.
pub async fn verify(objects: &impl Objects, keys: &KeyRing) -> Result<Verified> {
    let bytes = objects.get(RECORD_NAME).await?.ok_or_else(|| {
        failed(format!(
            "there is no {RECORD_NAME} in {}: the session has no signed record (is it still going on?)",
            objects.source()
        ))
    })?;
    let verified = record::open(&bytes, keys).map_err(failed)?;
    let record = verified.record;
    let Some(rec) = record.recording.as_ref() else {
        return Ok(Verified {
            key_id: verified.key_id,
            record,
            recording: None,
        });
    };
    if let Some(problem) = &rec.problem {
        return Err(failed(format!(
            "the signed record says the recording could not be checked when the session ended: {problem}"
        )));
    }
    let manifest_bytes = objects.get(MANIFEST_NAME).await?.ok_or_else(|| {
        failed(format!(
            "{MANIFEST_NAME} is missing from {}",
            objects.source()
        ))
    })?;
    let manifest = record.check_manifest(&manifest_bytes).map_err(failed)?;
    let mut v = Verifier::new(&manifest, Some(&rec.head)).map_err(failed)?;
    for meta in &manifest.segments {
        let bytes = objects.get(&meta.file_name()).await?.ok_or_else(|| {
            failed(format!(
                "segment {} ({}) is missing from {}",
                meta.index,
                meta.file_name(),
                objects.source()
            ))
        })?;
        // A missing sidecar is allowed (a crash may lose the newest); a present one must agree.
        let sidecar: Option<SegmentMeta> = match objects.get(&sidecar_name(meta.index)).await? {
            Some(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                failed(format!(
                    "sidecar {} is not valid: {e}",
                    sidecar_name(meta.index)
                ))
            })?),
            None => None,
        };
        v.segment(meta.index, &bytes, sidecar.as_ref())
            .map_err(failed)?;
    }
    let report = v.finish().map_err(failed)?;
    Ok(Verified {
        key_id: verified.key_id,
        record,
        recording: Some(report),
    })
}

/// The lines `verify` prints for a verified record (and its recording). `status_head` is the
/// chain head in the ExecSession's status, when the object still exists.
pub fn report(v: &Verified, status_head: Option<&str>) -> Result<String> {
    let r = &v.record;
    let who = format!("{}/{}", r.session.namespace, r.session.name);
    let mut out = format!(
        "session record of {who} (uid {}) verified: signed by key {} ({})\n",
        r.session.uid,
        v.key_id,
        record::ALGORITHM
    );
    match &v.recording {
        None => out.push_str(&format!(
            "the session never ran ({}: {}): it has no recording\n",
            r.end.phase, r.end.message
        )),
        Some(rep) => {
            if let Some(h) = status_head
                && !h.eq_ignore_ascii_case(&rep.head)
            {
                return Err(failed(format!(
                    "the session's status records the chain head {h}, the signed session record {}: the status was rewritten",
                    rep.head
                )));
            }
            out.push_str(&format!(
                "recording of {who} verified: {} segments, {} bytes, chain head {} matches {}{}\n",
                rep.segments,
                rep.total_bytes,
                rep.head,
                if status_head.is_some() {
                    "the session's status and the signed session record"
                } else {
                    "the signed session record"
                },
                if rep.interrupted {
                    format!(
                        " (sealed after an interruption: {})",
                        rep.reason.clone().unwrap_or_default()
                    )
                } else {
                    String::new()
                }
            ));
        }
    }
    Ok(out)
}

/// The recording among `items` for session `name`: the only one, or an error listing them.
pub fn pick<'a>(items: &'a [Recording], name: &str, namespace: &str) -> Result<&'a Recording> {
    match items {
        [] => Err(Error::Usage(format!(
            "execsession {name:?} not found in namespace {namespace:?}, and the store holds no session record of that name (kubectl aexec list --archived -n {namespace})"
        ))),
        [one] => Ok(one),
        many => Err(Error::Usage(format!(
            "several sessions named {name} were recorded in namespace {namespace}: name one by its recording ({})",
            many.iter()
                .map(|r| r.metadata.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aexec_recording::record::{
        Person, RecordEnd, RecordSession, RecordSpec, RecordWritten, SigningKey,
    };

    fn record(name: &str, uid: &str) -> SessionRecord {
        SessionRecord {
            format: record::RECORD_FORMAT.into(),
            session: RecordSession {
                namespace: "prod".into(),
                name: name.into(),
                uid: uid.into(),
                created: "2024-01-09T23:55:00Z".into(),
            },
            spec: RecordSpec {
                pod: "web".into(),
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                ..Default::default()
            },
            requester: Person {
                username: "alice".into(),
                groups: vec!["dev".into()],
            },
            end: RecordEnd {
                phase: "Withdrawn".into(),
                message: "withdrawn by alice".into(),
                ..Default::default()
            },
            written: RecordWritten {
                by: "op-0".into(),
                at: "2024-01-09T23:56:00Z".into(),
            },
            ..Default::default()
        }
    }

    fn item(name: &str, uid: &str, valid: bool) -> Recording {
        Recording {
            metadata: Meta {
                name: format!("{name}-{uid}"),
                namespace: "prod".into(),
            },
            record: Some(record(name, uid)),
            status: RecordingStatus {
                uri: format!("s3://b/prod/{name}-{uid}/record.json"),
                signature: Signature {
                    key_id: Some("k1".into()),
                    valid,
                    message: if valid {
                        String::new()
                    } else {
                        "forged".into()
                    },
                },
            },
        }
    }

    #[test]
    fn the_archive_table_says_what_is_signed_and_what_is_gone() {
        let now = DateTime::parse_from_rfc3339("2024-01-10T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let items = [item("exec-1", "u1", true), item("exec-2", "u2", false)];
        let uids = HashSet::from(["u2".to_owned()]);
        let t = list(&items, &uids, false, false, false, now);
        assert_eq!(
            t,
            "SESSION   POD   REQUESTER   PHASE       EXIT     AGE   SIGNED    OBJECT\n\
             exec-1    web   alice       Withdrawn   <none>   5m    yes       deleted\n\
             exec-2    web   alice       Withdrawn   <none>   5m    INVALID   present\n"
        );
        let wide = list(&items[..1], &uids, true, true, true, now);
        assert!(
            wide.starts_with("prod   exec-1   web   alice   Withdrawn   <none>   5m   yes   deleted   exec-1-u1   <none>   sh -c 'echo hi'"),
            "{wide}"
        );
        assert!(wide.trim_end().ends_with("k1"), "{wide}");
    }

    #[test]
    fn describe_says_where_it_came_from() {
        let d = describe(&item("exec-1", "u1", true), false);
        for want in [
            "Source:       the session record in the store (s3://b/prod/exec-1-u1/record.json); the ExecSession object no longer exists\n",
            "Signature:    valid, key k1 (Ed25519)\n",
            "Requester:    alice (groups: dev)\n",
            "Phase:        Withdrawn\n",
            "Recording: <none> (the session never ran)\n",
        ] {
            assert!(d.contains(want), "missing {want:?} in\n{d}");
        }
        let d = describe(&item("exec-1", "u1", false), true);
        assert!(d.contains("Signature:    INVALID: forged\n"), "{d}");
        assert!(d.contains("; the ExecSession still exists"), "{d}");
    }

    #[test]
    fn picking_a_recording_by_session_name() {
        let items = [item("exec-1", "u1", true), item("exec-1", "u2", true)];
        assert!(pick(&items[..1], "exec-1", "prod").is_ok());
        let e = pick(&items, "exec-1", "prod").expect_err("two");
        assert!(e.to_string().contains("exec-1-u1, exec-1-u2"), "{e}");
        let e = pick(&[], "exec-1", "prod").expect_err("none");
        assert!(e.to_string().contains("list --archived -n prod"), "{e}");
    }

    /// Objects in memory.
    struct Mem(std::collections::HashMap<String, Vec<u8>>);

    impl Objects for Mem {
        async fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.0.get(name).cloned())
        }
        fn source(&self) -> String {
            "memory".into()
        }
    }

    #[tokio::test]
    async fn verification_from_any_source() {
        let key = SigningKey::from(record::ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
        let keys = KeyRing::new(vec![key.public()]);
        let objects = Mem(std::collections::HashMap::from([(
            RECORD_NAME.to_owned(),
            key.sign(&record("exec-1", "u1")).expect("sign"),
        )]));
        let v = verify(&objects, &keys).await.expect("verified");
        assert_eq!(v.recording, None);
        let text = report(&v, None).expect("report");
        assert!(text.contains("signed by key"), "{text}");
        assert!(text.contains("never ran (Withdrawn"), "{text}");
        let other = KeyRing::new(vec![
            SigningKey::from(record::ed25519_dalek::SigningKey::from_bytes(&[8; 32])).public(),
        ]);
        let e = verify(&objects, &other).await.expect_err("unknown key");
        assert!(e.to_string().starts_with("FAILED: "), "{e}");
        let e = verify(&Mem(Default::default()), &keys)
            .await
            .expect_err("none");
        assert!(e.to_string().contains("no record.json in memory"), "{e}");
    }
}
