//! `list` and `describe` output (pure: the time is passed in): kubectl's table layout (upper-case
//! headers, columns padded to the widest cell plus three spaces, kubectl's age format) and a
//! kubectl-describe-like page.

use aexec_crds::ExecSession;
use aexec_recording::cast::display_command;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// kubectl's short age: `45s`, `5m10s`, `3h2m`, `4d5h`, `400d`.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

/// Lays out rows under headers like kubectl: left-aligned, three spaces between columns.
pub fn render(headers: &[&str], rows: &[Vec<String>], no_headers: bool) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers
        .iter()
        .map(|h| if no_headers { 0 } else { h.chars().count() })
        .collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(width[i] - c.chars().count() + 3));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    if !no_headers {
        line(headers.to_vec());
    }
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// A Kubernetes time as chrono's.
pub fn ts(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn or_none(v: Option<String>) -> String {
    v.filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn single_line(s: &str) -> String {
    s.replace(['\n', '\r', '\t'], " ")
}

/// The session table: NAME, POD, REQUESTER, PHASE, POLICY, APPROVALS, AGE (NAMESPACE first
/// with `-A`; CONTAINER, COMMAND, EXIT, WATCHERS, MODERATION, REASON, MESSAGE too with
/// `-o wide`).
pub fn list(
    sessions: &[ExecSession],
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
        "NAME",
        "POD",
        "REQUESTER",
        "PHASE",
        "POLICY",
        "APPROVALS",
        "AGE",
    ]);
    if wide {
        headers.extend([
            "CONTAINER",
            "COMMAND",
            "EXIT",
            "WATCHERS",
            "MODERATION",
            "REASON",
            "MESSAGE",
        ]);
    }
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let st = s.status.clone().unwrap_or_default();
            let mut r = vec![];
            if all_namespaces {
                r.push(s.metadata.namespace.clone().unwrap_or_default());
            }
            r.extend([
                s.metadata.name.clone().unwrap_or_default(),
                s.spec.pod.clone(),
                s.spec.requester.username.clone(),
                s.phase().to_string(),
                or_none(st.policy.clone()),
                or_none(st.approval_summary.clone()),
                s.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| age(ts(t), now))
                    .unwrap_or_else(|| "<unknown>".into()),
            ]);
            if wide {
                r.extend([
                    or_none(st.container.clone().or_else(|| s.spec.container.clone())),
                    single_line(&display_command(&s.spec.command)),
                    or_none(st.exit_code.map(|c| c.to_string())),
                    st.watchers
                        .iter()
                        .filter(|w| w.left.is_none())
                        .count()
                        .to_string(),
                    or_none(moderation(s)),
                    or_none(s.spec.reason.as_deref().map(single_line)),
                    or_none(st.message.as_deref().map(single_line)),
                ]);
            }
            r
        })
        .collect();
    render(&headers, &rows, no_headers)
}

/// Where moderation stands, in a cell: `Waiting 0/1`, `Moderated 1/1`, `Paused 0/2`; for a
/// session not yet attached, what its policy requires (`1 required`).
pub fn moderation(s: &ExecSession) -> Option<String> {
    let st = s.status.as_ref()?;
    match (
        &st.moderation,
        st.limits.as_ref().and_then(|l| l.moderation.as_ref()),
    ) {
        (Some(m), _) => Some(format!("{:?} {}/{}", m.state, m.moderators, m.required)),
        (None, Some(rule)) => Some(format!("{} required", rule.required)),
        (None, None) => None,
    }
}

fn time(t: &Time, now: DateTime<Utc>) -> String {
    let at = ts(t);
    if at <= now {
        format!("{} ({} ago)", rfc3339(at), age(at, now))
    } else {
        format!("{} (in {})", rfc3339(at), age(now, at))
    }
}

/// `describe NAME`: what was asked, the decision, the timeline and the recording.
pub fn describe(s: &ExecSession, now: DateTime<Utc>) -> String {
    let st = s.status.clone().unwrap_or_default();
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{:<14}{v}\n", format!("{k}:")));
    kv("Source", "the ExecSession in the cluster".into());
    kv("Name", s.metadata.name.clone().unwrap_or_default());
    kv(
        "Namespace",
        s.metadata.namespace.clone().unwrap_or_default(),
    );
    kv(
        "Pod",
        format!(
            "{}{}",
            s.spec.pod,
            st.pod_uid
                .as_deref()
                .map(|u| format!(" (UID {u})"))
                .unwrap_or_default()
        ),
    );
    kv(
        "Container",
        or_none(st.container.clone().or_else(|| s.spec.container.clone())),
    );
    kv("Command", display_command(&s.spec.command));
    if let Some(c) = &s.spec.copy {
        kv(
            "Copy",
            format!(
                "{} of {} (local: {})",
                c.direction.as_str(),
                c.path,
                c.local.as_deref().unwrap_or("not given")
            ),
        );
    }
    if let Some(d) = &s.spec.debug {
        kv(
            "Debug",
            format!(
                "ephemeral container {} of image {}",
                aexec_crds::debug_container_name(s.metadata.name.as_deref().unwrap_or_default()),
                d.image
            ),
        );
    }
    kv("Stdin", s.spec.stdin.to_string());
    kv("TTY", s.spec.tty.to_string());
    kv("Reason", or_none(s.spec.reason.clone()));
    let groups = if s.spec.requester.groups.is_empty() {
        String::new()
    } else {
        format!(" (groups: {})", s.spec.requester.groups.join(", "))
    };
    kv(
        "Requester",
        format!("{}{groups}", s.spec.requester.username),
    );
    kv("Phase", s.phase().to_string());
    kv("Message", or_none(st.message.clone()));
    kv("Policy", or_none(st.policy.clone()));
    if let Some(required) = st.required_approvals {
        kv("Approvals", format!("{} of {required}", st.approvals.len()));
    }
    for a in &st.approvals {
        out.push_str(&format!(
            "  {} at {}{}\n",
            a.user.username,
            rfc3339(ts(&a.time)),
            a.comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ));
    }
    let mut kv = |k: &str, v: String| out.push_str(&format!("{:<14}{v}\n", format!("{k}:")));
    for (what, d) in [("Denied by", &st.denial), ("Withdrawn by", &st.withdrawal)] {
        if let Some(d) = d {
            kv(
                what,
                format!(
                    "{} at {}{}",
                    d.user.username,
                    rfc3339(ts(&d.time)),
                    d.comment
                        .as_deref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                ),
            );
        }
    }
    if let Some(d) = &st.deadline {
        kv("Deadline", time(d, now));
    }
    if let Some(l) = &st.limits {
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
    if let Some(rule) = st.limits.as_ref().and_then(|l| l.moderation.as_ref()) {
        let who = [rule.groups.join(", "), rule.users.join(", ")]
            .into_iter()
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let who = if who.is_empty() {
            "anyone who may watch, except the requester".into()
        } else {
            who
        };
        let now_state = st
            .moderation
            .as_ref()
            .map(|m| {
                format!(
                    "{:?}, {} of {} watching; ",
                    m.state, m.moderators, m.required
                )
            })
            .unwrap_or_default();
        kv(
            "Moderation",
            format!(
                "{now_state}{} required from {who}; on leave: {:?}{}",
                rule.required,
                rule.on_moderator_leave,
                rule.timeout
                    .as_ref()
                    .map(|t| format!(", timeout {t}"))
                    .unwrap_or_default()
            ),
        );
    }
    if let Some(c) = st.exit_code {
        kv("Exit Code", c.to_string());
    }
    if !st.watchers.is_empty() {
        out.push_str("Watchers:\n");
        for w in &st.watchers {
            out.push_str(&format!(
                "  {} ({:?}) from {}{}\n",
                w.user.username,
                w.mode,
                rfc3339(ts(&w.joined)),
                w.left
                    .as_ref()
                    .map(|l| format!(" to {}", rfc3339(ts(l))))
                    .unwrap_or_else(|| ", watching".into())
            ));
        }
    }
    out.push_str("Timeline:\n");
    let mut events: Vec<(DateTime<Utc>, String)> = vec![];
    if let Some(t) = &s.metadata.creation_timestamp {
        events.push((ts(t), format!("requested by {}", s.spec.requester.username)));
    }
    for a in &st.approvals {
        events.push((ts(&a.time), format!("approved by {}", a.user.username)));
    }
    if let Some(d) = &st.denial {
        events.push((ts(&d.time), format!("denied by {}", d.user.username)));
    }
    if let Some(d) = &st.withdrawal {
        events.push((ts(&d.time), format!("withdrawn by {}", d.user.username)));
    }
    if let Some(t) = &st.start_time {
        events.push((ts(t), "attached".into()));
    }
    if let Some(t) = &st.end_time {
        events.push((ts(t), format!("ended: {}", s.phase())));
    }
    events.sort_by_key(|(t, _)| *t);
    for (t, what) in events {
        out.push_str(&format!("  {}  {what}\n", rfc3339(t)));
    }
    out.push_str("Recording:");
    match &st.recording {
        None => out.push_str(" <none>\n"),
        Some(r) => {
            out.push('\n');
            let mut kv =
                |k: &str, v: String| out.push_str(&format!("  {:<12}{v}\n", format!("{k}:")));
            kv("URI", or_none(r.uri.clone()));
            kv("Format", or_none(r.format.clone()));
            kv("Bytes", or_none(r.bytes.map(|b| b.to_string())));
            if let Some(stored) = r.stored_bytes {
                kv("Stored", format!("{stored} bytes (zstd)"));
            }
            kv("Segments", or_none(r.segments.map(|b| b.to_string())));
            kv("SHA-256", or_none(r.sha256.clone()));
            if r.interrupted {
                kv("Interrupted", "true (sealed after an interruption)".into());
            }
        }
    }
    out.push_str("Session Record:");
    match &st.record {
        None if s.phase().is_terminal() => out.push_str(" <not written yet>\n"),
        None => out.push_str(" <none> (written when the session ends)\n"),
        Some(r) => {
            out.push('\n');
            let mut kv =
                |k: &str, v: String| out.push_str(&format!("  {:<12}{v}\n", format!("{k}:")));
            kv("URI", or_none(r.uri.clone()));
            kv("Signed by", or_none(r.key_id.clone()));
            kv("SHA-256", or_none(r.sha256.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn ages_like_kubectl() {
        let now = at("2024-01-10T00:00:00Z");
        let ago = |secs: i64| age(now - chrono::Duration::seconds(secs), now);
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(119), "119s");
        assert_eq!(ago(310), "5m10s");
        assert_eq!(ago(300), "5m");
        assert_eq!(ago(45 * 60), "45m");
        assert_eq!(ago(3 * 3600 + 120), "3h2m");
        assert_eq!(ago(20 * 3600), "20h");
        assert_eq!(ago(4 * 86400 + 5 * 3600), "4d5h");
        assert_eq!(ago(30 * 86400), "30d");
        assert_eq!(ago(-5), "0s");
    }

    fn session() -> ExecSession {
        serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
            "metadata": {"name": "exec-1", "namespace": "prod", "creationTimestamp": "2024-01-09T23:55:00Z"},
            "spec": {"pod": "web", "command": ["sh", "-c", "echo hi"], "tty": true, "stdin": true,
                     "reason": "INC-1", "requester": {"username": "alice", "groups": ["dev"]}},
            "status": {"phase": "Succeeded", "policy": "prod-shell", "requiredApprovals": 1,
                "approvalSummary": "1/1", "container": "app", "exitCode": 0, "message": "the command exited with code 0",
                "approvals": [{"user": {"username": "bob"}, "time": "2024-01-09T23:56:00Z", "comment": "ok"}],
                "startTime": "2024-01-09T23:57:00Z", "endTime": "2024-01-09T23:58:00Z",
                "recording": {"uri": "file:///r", "format": "asciicast-v3", "bytes": 1234, "segments": 1, "sha256": "ab"},
                "limits": {"recordingRequired": true, "moderation": {"required": 1, "groups": ["sre"], "onModeratorLeave": "Pause"}},
                "moderation": {"state": "Moderated", "moderators": 1, "required": 1},
                "watchers": [{"user": {"username": "bob", "groups": ["sre"]}, "mode": "Moderator",
                              "joined": "2024-01-09T23:57:01Z", "left": "2024-01-09T23:58:00Z"}]}
        }))
        .expect("session")
    }

    #[test]
    fn table_like_kubectl() {
        let now = at("2024-01-10T00:00:00Z");
        let t = list(&[session()], false, false, false, now);
        assert_eq!(
            t,
            "NAME     POD   REQUESTER   PHASE       POLICY       APPROVALS   AGE\n\
             exec-1   web   alice       Succeeded   prod-shell   1/1         5m\n"
        );
        let wide = list(&[session()], true, true, true, now);
        assert_eq!(
            wide,
            "prod   exec-1   web   alice   Succeeded   prod-shell   1/1   5m   app   sh -c 'echo hi'   0   0   Moderated 1/1   INC-1   the command exited with code 0\n"
        );
        assert_eq!(render(&["A", "B"], &[], false), "A   B\n");
    }

    #[test]
    fn describe_tells_the_story() {
        let d = describe(&session(), at("2024-01-10T00:00:00Z"));
        for want in [
            "Name:         exec-1\n",
            "Command:      sh -c 'echo hi'\n",
            "Requester:    alice (groups: dev)\n",
            "Approvals:    1 of 1\n",
            "  bob at 2024-01-09T23:56:00Z: ok\n",
            "  2024-01-09T23:55:00Z  requested by alice\n",
            "  2024-01-09T23:58:00Z  ended: Succeeded\n",
            "  SHA-256:    ab\n",
            "Moderation:   Moderated, 1 of 1 watching; 1 required from sre; on leave: Pause\n",
            "Watchers:\n  bob (Moderator) from 2024-01-09T23:57:01Z to 2024-01-09T23:58:00Z\n",
        ] {
            assert!(d.contains(want), "missing {want:?} in\n{d}");
        }
    }
}
