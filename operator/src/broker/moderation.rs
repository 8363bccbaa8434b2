//! Moderated sessions and the watch protocol's messages (`docs/watch.md`): pure decisions, no
//! I/O. Who may moderate, how long a session waits, what the requester and the watchers are
//! told, and how a watcher's messages are read. The broker (`moderated`, `broker`) and the
//! observe subresource (`observe`) act on them; the fuzz target `watch_protocol` feeds them
//! arbitrary input.

use std::time::Duration;

use aexec_crds::{ModerationRule, OnModeratorLeave, WatchMode};
use serde_json::json;

/// How long a session waits for its moderators when the policy does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Input the requester sends while the session waits for moderators (or is paused) is held,
/// up to this many bytes; beyond it the broker stops reading the requester's connection
/// (TCP backpressure), so memory stays bounded and nothing typed is lost.
pub const HOLD_BYTES: usize = 64 << 10;

/// Whether `user` (with `groups`) counts as a moderator under `rule`. The requester never does:
/// the caller checks that first, with its own message.
pub fn eligible(rule: &ModerationRule, user: &str, groups: &[String]) -> bool {
    (rule.groups.is_empty() && rule.users.is_empty())
        || rule.users.iter().any(|u| u == user)
        || groups.iter().any(|g| rule.groups.contains(g))
}

/// Who may moderate, as a refusal says it.
pub fn who_may(rule: &ModerationRule) -> String {
    let mut parts = Vec::new();
    if !rule.groups.is_empty() {
        parts.push(format!("members of {}", rule.groups.join(", ")));
    }
    if !rule.users.is_empty() {
        parts.push(rule.users.join(", "));
    }
    if parts.is_empty() {
        "anyone allowed to watch it except the requester".into()
    } else {
        parts.join(" or ")
    }
}

/// A duration as a person writes it: `10m`, `90s`, `2h`, `1h30m`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// How long the session waits for moderators, at its start or while paused.
pub fn timeout(rule: &ModerationRule) -> Duration {
    rule.timeout.map_or(DEFAULT_TIMEOUT, Duration::from)
}

/// The number of moderators the rule needs (at least one).
pub fn required(rule: &ModerationRule) -> usize {
    usize::try_from(rule.required.max(1)).unwrap_or(1)
}

fn moderators_word(required: usize) -> &'static str {
    if required == 1 {
        "a moderator"
    } else {
        "moderators"
    }
}

/// What the requester reads while the command waits for its moderators.
pub fn waiting_notice(watching: usize, required: usize, namespace: &str, name: &str) -> String {
    format!(
        "waiting for {} ({watching} of {required}) before the command starts; ask one to run: \
         kubectl aexec watch {name} -n {namespace} --moderate",
        moderators_word(required)
    )
}

/// What everyone reads when the command starts under moderation.
pub fn started_notice(watching: usize, required: usize) -> String {
    format!("moderated ({watching} of {required} watching): the command starts")
}

/// What everyone reads when the moderators drop below the rule mid-session, by its action.
pub fn left_notice(rule: &ModerationRule, watching: usize) -> String {
    let required = required(rule);
    match rule.on_moderator_leave {
        OnModeratorLeave::Pause => format!(
            "input held: {watching} of {required} moderators watching; what the requester types \
             is kept and sent when enough watch again (output goes on, recorded); the session \
             ends if none returns within {}",
            human(timeout(rule))
        ),
        OnModeratorLeave::Terminate => format!(
            "session ended: {watching} of {required} moderators watching, and the policy ends \
             the session when its moderators leave"
        ),
    }
}

/// What everyone reads when enough moderators watch again after a pause.
pub fn resumed_notice(watching: usize, required: usize) -> String {
    format!("input resumes: {watching} of {required} moderators watching")
}

/// Why a session ends when its moderators did not come (or come back) in time.
pub fn timed_out(rule: &ModerationRule, started: bool) -> String {
    let d = human(timeout(rule));
    if started {
        format!("no moderator returned within {d}")
    } else {
        format!("no moderator watched within {d}; the command never started")
    }
}

/// What a watcher may send: two text messages.
#[derive(Debug, PartialEq, Eq)]
pub enum Control {
    Leave,
    Terminate,
}

/// Largest message a watcher may send; anything longer is not read as a control message.
pub const MAX_CONTROL: usize = 1024;

/// Reads a watcher's text message: a JSON object with a `type` and nothing else.
pub fn parse_control(text: &str) -> Result<Control, String> {
    if text.len() > MAX_CONTROL {
        return Err(format!(
            "a message of {} bytes is longer than any control message ({MAX_CONTROL} bytes at most)",
            text.len()
        ));
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("a control message is a JSON object")?;
    if obj.len() != 1 {
        return Err(format!(
            "a control message has a type and nothing else; this one has {} fields",
            obj.len()
        ));
    }
    match obj.get("type").and_then(serde_json::Value::as_str) {
        Some("leave") => Ok(Control::Leave),
        Some("terminate") => Ok(Control::Terminate),
        Some(other) => Err(format!("unknown control message type {other:?}")),
        None => Err("a control message needs a string field \"type\"".into()),
    }
}

/// The watcher's mode, from the query string `mode=observer|moderator` (observer when absent).
pub fn parse_mode(query: Option<&str>) -> Result<WatchMode, String> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("mode="));
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("observer") => Ok(WatchMode::Observer),
        Some("moderator") => Ok(WatchMode::Moderator),
        Some(other) => Err(format!(
            "unknown watch mode {other:?}: use observer or moderator"
        )),
    }
}

/// A notice as a text message on the requester's or a watcher's connection.
pub fn notice_message(text: &str) -> String {
    json!({"type": "notice", "message": text}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], users: &[&str]) -> ModerationRule {
        ModerationRule {
            required: 1,
            groups: groups.iter().map(|s| s.to_string()).collect(),
            users: users.iter().map(|s| s.to_string()).collect(),
            on_moderator_leave: OnModeratorLeave::Pause,
            timeout: None,
        }
    }

    #[test]
    fn moderators_come_from_the_rule_or_anyone_when_it_names_nobody() {
        let sre = vec!["sre".to_string()];
        assert!(eligible(&rule(&["sre"], &[]), "bob", &sre));
        assert!(!eligible(&rule(&["dba"], &[]), "bob", &sre));
        assert!(eligible(&rule(&["dba"], &["bob"]), "bob", &[]));
        assert!(!eligible(&rule(&[], &["carol"]), "bob", &sre));
        assert!(eligible(&rule(&[], &[]), "anyone", &[]));
        assert_eq!(
            who_may(&rule(&["sre"], &["dave"])),
            "members of sre or dave"
        );
        assert_eq!(
            who_may(&rule(&[], &[])),
            "anyone allowed to watch it except the requester"
        );
    }

    #[test]
    fn notices_name_the_count_and_the_command_to_send() {
        assert_eq!(
            waiting_notice(0, 1, "prod", "s1"),
            "waiting for a moderator (0 of 1) before the command starts; ask one to run: \
             kubectl aexec watch s1 -n prod --moderate"
        );
        assert!(waiting_notice(1, 2, "prod", "s1").starts_with("waiting for moderators (1 of 2)"));
        let mut r = rule(&[], &[]);
        assert!(left_notice(&r, 0).starts_with("input held: 0 of 1 moderators watching"));
        assert!(
            left_notice(&r, 0).ends_with("within 10m"),
            "{}",
            left_notice(&r, 0)
        );
        r.on_moderator_leave = OnModeratorLeave::Terminate;
        assert!(left_notice(&r, 0).starts_with("session ended: 0 of 1"));
        r.timeout = Some(Duration::from_secs(30).into());
        assert_eq!(timeout(&r), Duration::from_secs(30));
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(0)), "0s");
        assert_eq!(
            timed_out(&r, false),
            "no moderator watched within 30s; the command never started"
        );
    }

    #[test]
    fn a_watcher_sends_leave_or_terminate_and_nothing_else() {
        assert_eq!(parse_control(r#"{"type":"leave"}"#), Ok(Control::Leave));
        assert_eq!(
            parse_control(r#"{"type":"terminate"}"#),
            Ok(Control::Terminate)
        );
        assert!(parse_control(r#"{"type":"stdin","data":"rm -rf /"}"#).is_err());
        assert!(parse_control(r#"{"type":"leave","data":"x"}"#).is_err());
        assert!(parse_control(&format!("{{\"type\":\"leave\"{}}}", " ".repeat(2000))).is_err());
        assert!(parse_control("").is_err());
    }

    #[test]
    fn modes_from_the_query() {
        assert_eq!(parse_mode(None), Ok(WatchMode::Observer));
        assert_eq!(parse_mode(Some("mode=Moderator")), Ok(WatchMode::Moderator));
        assert_eq!(
            parse_mode(Some("x=1&mode=observer")),
            Ok(WatchMode::Observer)
        );
        assert!(
            parse_mode(Some("mode=owner"))
                .expect_err("no such mode")
                .contains("\"owner\"")
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&notice_message("a \"b\"")).expect("JSON")["message"],
            "a \"b\""
        );
    }
}
