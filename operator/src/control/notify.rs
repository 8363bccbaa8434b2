//! Notifications: the operator posts to webhooks when a session is requested, approved,
//! denied, expired, started, ended or terminated, so approvers hear that something waits for
//! them and a team's channel sees what happens.
//!
//! - Events: `requested` is a session the operator decided to keep Pending (it waits for
//!   approvers; an auto-approved one is first seen `approved`), then each later phase.
//! - Bodies: a Slack-compatible incoming-webhook message (`{"text": ...}`, with the exact
//!   approve command in a request's), or a CloudEvents 1.0 event in structured mode
//!   (`application/cloudevents+json`), chosen per webhook ([`Format`]).
//! - Every request is signed: `X-Aexec-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the
//!   body with the webhook's secret (as GitHub signs its webhooks), so a receiver can trust it.
//! - A notification never blocks or fails a session: transitions are seen on a watch of the
//!   sessions (by the leader only, so once), each webhook has a bounded queue
//!   ([`QUEUE`]) drained by a task of its own with retries and backoff ([`ATTEMPTS`]); a
//!   receiver that is down or slow fills its queue, and what does not fit is dropped and counted
//!   (`aexec_notifications_total{result="dropped"}`), never held.
//!
//! Transitions that happen while no replica leads (or before the watch's first list) are not
//! sent: the first list sets what was already known.
//!
//! The pure parts (configuration, which event a transition is, the bodies, the signature) are
//! apart from the delivery, and tested on their own.

use std::{collections::HashMap, time::Duration};

use aexec_crds::{ExecSession, Phase};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

/// Notifications waiting per webhook; more are dropped (and counted).
pub const QUEUE: usize = 256;
/// Tries per notification: the first, then after 1, 2, 4 and 8 seconds.
pub const ATTEMPTS: u32 = 5;
/// How long one try may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-aexec-signature-256";
/// The header naming the event (`requested`, ...).
pub const EVENT_HEADER: &str = "x-aexec-event";

/// What happened to a session.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Requested,
    Approved,
    Denied,
    Expired,
    Started,
    Ended,
    Terminated,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Requested => "requested",
            Kind::Approved => "approved",
            Kind::Denied => "denied",
            Kind::Expired => "expired",
            Kind::Started => "started",
            Kind::Ended => "ended",
            Kind::Terminated => "terminated",
        }
    }
}

/// The body a webhook takes.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Slack's incoming webhooks (and the many receivers that take the same `{"text": ...}`).
    Slack,
    /// A CloudEvents 1.0 event, structured mode.
    CloudEvents,
}

/// One webhook, as configured.
#[derive(Deserialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// A name for logs and metrics.
    pub name: String,
    /// Where to post (http or https).
    pub url: String,
    pub format: Format,
    /// The HMAC key the bodies are signed with.
    pub secret: String,
    /// The events to send; empty: all.
    #[serde(default)]
    pub events: Vec<Kind>,
    /// The namespaces whose sessions are sent; empty: all.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// Without the secret, which must not reach a log.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            // A Slack URL's path is its secret: the host only.
            .field(
                "url",
                &self
                    .url
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|u| u.host().map(str::to_owned)),
            )
            .field("format", &self.format)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("namespaces", &self.namespaces)
            .finish()
    }
}

impl Webhook {
    /// Whether this webhook wants `kind` for a session in `namespace`.
    pub fn wants(&self, kind: Kind, namespace: &str) -> bool {
        (self.events.is_empty() || self.events.contains(&kind))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
    }
}

/// The notifications file (`--notifications`, from a Secret the chart mounts).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub webhooks: Vec<Webhook>,
}

/// Reads and checks a notifications file (YAML or JSON); the error says what to fix.
pub fn parse(text: &str) -> Result<Config, String> {
    let config: Config = serde_yaml::from_str(text)
        .map_err(|e| format!("the notifications file is not valid: {e}"))?;
    let mut names = std::collections::HashSet::new();
    for w in &config.webhooks {
        if !names.insert(w.name.as_str()) {
            return Err(format!(
                "two webhooks are named {:?}; names must differ",
                w.name
            ));
        }
        let uri: http::Uri = w
            .url
            .parse()
            .map_err(|e| format!("webhook {:?}: url {:?} is not a URL: {e}", w.name, w.url))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "webhook {:?}: url {:?} must be http:// or https:// with a host",
                w.name, w.url
            ));
        }
        if w.secret.len() < 16 {
            return Err(format!(
                "webhook {:?}: its secret has {} bytes; use at least 16 (random), so receivers \
                 can trust the signature",
                w.name,
                w.secret.len()
            ));
        }
    }
    Ok(config)
}

/// The event a session's move from `before` (unknown: `None`) to `now` is, if any.
pub fn kind_of(before: Option<Phase>, now: Phase) -> Option<Kind> {
    if before == Some(now) {
        return None;
    }
    match now {
        Phase::Pending if before.is_none() => Some(Kind::Requested),
        Phase::Pending | Phase::Withdrawn => None,
        Phase::Approved => Some(Kind::Approved),
        Phase::Denied => Some(Kind::Denied),
        Phase::Expired => Some(Kind::Expired),
        Phase::Active => Some(Kind::Started),
        Phase::Succeeded | Phase::Failed => Some(Kind::Ended),
        Phase::Terminated => Some(Kind::Terminated),
    }
}

/// The facts of a session every body carries.
fn facts(s: &ExecSession) -> Value {
    let st = s.status.clone().unwrap_or_default();
    json!({
        "namespace": s.metadata.namespace,
        "name": s.metadata.name,
        "uid": s.metadata.uid,
        "pod": s.spec.pod,
        "container": st.container.or(s.spec.container.clone()),
        "command": s.spec.command,
        "requester": s.spec.requester.username,
        "reason": s.spec.reason,
        "phase": s.phase().as_str(),
        "policy": st.policy,
        "message": st.message,
        "exitCode": st.exit_code,
        "approveCommand": approve_command(s),
    })
}

fn approve_command(s: &ExecSession) -> String {
    format!(
        "kubectl aexec approve {} -n {}",
        s.metadata.name.as_deref().unwrap_or_default(),
        s.metadata.namespace.as_deref().unwrap_or_default()
    )
}

/// A Slack-compatible message: one line saying who, what, where and what happened; a request's
/// says how many approvals it needs and the exact approve command.
pub fn slack_body(kind: Kind, s: &ExecSession) -> Value {
    let st = s.status.clone().unwrap_or_default();
    let ns = s.metadata.namespace.as_deref().unwrap_or_default();
    let name = s.metadata.name.as_deref().unwrap_or_default();
    let who = &s.spec.requester.username;
    let what = format!(
        "`{}` in pod {ns}/{}",
        crate::recording::cast::display_command(&s.spec.command),
        s.spec.pod
    );
    let reason = s
        .spec
        .reason
        .as_deref()
        .map(|r| format!(" (reason: {r})"))
        .unwrap_or_default();
    let text = match kind {
        Kind::Requested => format!(
            "{who} asks to run {what}{reason}: session {name} needs {} approval{}. Approve \
             with `{}`",
            st.required_approvals.unwrap_or(1),
            if st.required_approvals.unwrap_or(1) == 1 {
                ""
            } else {
                "s"
            },
            approve_command(s)
        ),
        Kind::Approved => format!("session {name} ({who}: {what}) was approved"),
        Kind::Denied => format!(
            "session {name} ({who}: {what}) was denied: {}",
            st.message.as_deref().unwrap_or("no reason given")
        ),
        Kind::Expired => format!("session {name} ({who}: {what}) expired"),
        Kind::Started => format!("session {name} started: {who} runs {what}"),
        Kind::Ended => format!(
            "session {name} ({who}: {what}) ended{}",
            st.exit_code
                .map(|c| format!(" with exit code {c}"))
                .unwrap_or_default()
        ),
        Kind::Terminated => format!(
            "session {name} ({who}: {what}) was terminated: {}",
            st.message.as_deref().unwrap_or("no reason given")
        ),
    };
    json!({ "text": text })
}

/// A CloudEvents 1.0 event (structured mode) for `kind`: its `id` is the session's UID and the
/// event, so a receiver can drop a repeat.
pub fn cloud_event(kind: Kind, s: &ExecSession, time: DateTime<Utc>) -> Value {
    let ns = s.metadata.namespace.as_deref().unwrap_or_default();
    let name = s.metadata.name.as_deref().unwrap_or_default();
    json!({
        "specversion": "1.0",
        "type": format!("dev.aexec.session.{}", kind.as_str()),
        "source": format!("/apis/aexec.dev/v1alpha1/namespaces/{ns}/execsessions/{name}"),
        "subject": name,
        "id": format!("{}/{}", s.metadata.uid.as_deref().unwrap_or_default(), kind.as_str()),
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "datacontenttype": "application/json",
        "data": facts(s),
    })
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // An HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub kind: Kind,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub signature: String,
}

/// The request for `kind` of session `s` to `hook`.
pub fn delivery(hook: &Webhook, kind: Kind, s: &ExecSession, time: DateTime<Utc>) -> Delivery {
    let (body, content_type) = match hook.format {
        Format::Slack => (slack_body(kind, s), "application/json"),
        Format::CloudEvents => (cloud_event(kind, s, time), "application/cloudevents+json"),
    };
    let body = body.to_string().into_bytes();
    Delivery {
        kind,
        signature: sign(&hook.secret, &body),
        body,
        content_type,
    }
}

/// Tracks the phase of each session the watch has seen, to tell transitions.
#[derive(Debug, Default)]
pub struct Phases(HashMap<String, Phase>);

impl Phases {
    /// Notes session `uid` in `phase`; returns the event this is, unless `quiet` (the watch's
    /// first list: what was already so is not news).
    pub fn seen(&mut self, uid: &str, phase: Phase, quiet: bool) -> Option<Kind> {
        let before = self.0.insert(uid.to_owned(), phase);
        if quiet {
            return None;
        }
        kind_of(before, phase)
    }

    /// Forgets a deleted session.
    pub fn gone(&mut self, uid: &str) {
        self.0.remove(uid);
    }
}

pub use delivery::{Notifier, watch};

mod delivery {
    use super::*;
    use crate::control::metrics::{Metrics, ResultLabel};
    use futures::StreamExt;
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
    use kube::{
        Api,
        runtime::{WatchStreamExt, watcher},
    };
    use tokio::sync::mpsc;
    use tracing::{debug, warn};

    type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

    /// Sends notifications: one bounded queue and one sending task per webhook.
    #[derive(Clone, Debug)]
    pub struct Notifier {
        hooks: Vec<(Webhook, mpsc::Sender<Delivery>)>,
        metrics: Metrics,
    }

    fn count(metrics: &Metrics, result: &str) {
        metrics
            .notifications
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    impl Notifier {
        /// Starts a sending task per webhook of `config`.
        pub fn start(config: Config, metrics: Metrics) -> anyhow::Result<Self> {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()?
                .https_or_http()
                .enable_http1()
                .build();
            let client: HttpClient<Https, Full<Bytes>> =
                HttpClient::builder(TokioExecutor::new()).build(https);
            let hooks = config
                .webhooks
                .into_iter()
                .map(|hook| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(send_all(hook.clone(), client.clone(), rx, metrics.clone()));
                    (hook, tx)
                })
                .collect();
            Ok(Notifier { hooks, metrics })
        }

        /// Queues `kind` of session `s` for every webhook that wants it; never waits.
        pub fn notify(&self, kind: Kind, s: &ExecSession) {
            let ns = s.metadata.namespace.as_deref().unwrap_or_default();
            let now = Utc::now();
            for (hook, tx) in &self.hooks {
                if !hook.wants(kind, ns) {
                    continue;
                }
                if tx.try_send(delivery(hook, kind, s, now)).is_err() {
                    count(&self.metrics, "dropped");
                    warn!(webhook = %hook.name, event = kind.as_str(),
                          "a notification was dropped: the webhook's queue is full (its receiver is down or slow)");
                }
            }
        }
    }

    /// Sends a webhook's notifications one after the other, each retried with backoff.
    async fn send_all(
        hook: Webhook,
        client: HttpClient<Https, Full<Bytes>>,
        mut rx: mpsc::Receiver<Delivery>,
        metrics: Metrics,
    ) {
        while let Some(d) = rx.recv().await {
            let mut wait = Duration::from_secs(1);
            for attempt in 1..=ATTEMPTS {
                match send_one(&hook, &client, &d).await {
                    Ok(()) => {
                        count(&metrics, "delivered");
                        debug!(webhook = %hook.name, event = d.kind.as_str(), "notification delivered");
                        break;
                    }
                    Err(why) if attempt == ATTEMPTS => {
                        count(&metrics, "failed");
                        warn!(webhook = %hook.name, event = d.kind.as_str(), error = %why,
                              "a notification could not be delivered; given up after {ATTEMPTS} tries");
                    }
                    Err(why) => {
                        count(&metrics, "retried");
                        debug!(webhook = %hook.name, error = %why, "notification refused; retrying");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        }
    }

    async fn send_one(
        hook: &Webhook,
        client: &HttpClient<Https, Full<Bytes>>,
        d: &Delivery,
    ) -> Result<(), String> {
        let req = http::Request::post(&hook.url)
            .header(http::header::CONTENT_TYPE, d.content_type)
            .header(SIGNATURE_HEADER, &d.signature)
            .header(EVENT_HEADER, d.kind.as_str())
            .body(Full::new(Bytes::from(d.body.clone())))
            .map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(TIMEOUT, client.request(req))
            .await
            .map_err(|_| format!("no answer within {}s", TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {}", res.status()))
        }
    }

    /// Watches every session and notifies their transitions, until dropped (the leader runs it).
    pub async fn watch(client: kube::Client, notifier: Notifier) {
        let api: Api<ExecSession> = Api::all(client);
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut phases = Phases::default();
        // The first list (and every relist) tells what is already so: not news.
        let mut listing = true;
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::Init) => listing = true,
                Ok(watcher::Event::InitDone) => listing = false,
                Ok(watcher::Event::InitApply(s)) | Ok(watcher::Event::Apply(s)) => {
                    let uid = s.metadata.uid.clone().unwrap_or_default();
                    // Not decided yet (no phase written): nothing to say. "requested" is a
                    // session the operator left Pending, waiting for approvers.
                    let Some(phase) = s.status.as_ref().and_then(|st| st.phase) else {
                        continue;
                    };
                    if let Some(kind) = phases.seen(&uid, phase, listing) {
                        notifier.notify(kind, &s);
                    }
                }
                Ok(watcher::Event::Delete(s)) => {
                    phases.gone(s.metadata.uid.as_deref().unwrap_or_default());
                }
                Err(e) => debug!(error = %e, "the notifications' watch of sessions; retrying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(phase: &str) -> ExecSession {
        serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
            "metadata": {"name": "exec-7xk2p", "namespace": "prod", "uid": "u-1"},
            "spec": {"pod": "api-0", "command": ["psql", "-c", "select 1"], "reason": "INC-9",
                     "requester": {"username": "alice"}},
            "status": {"phase": phase, "requiredApprovals": 2, "exitCode": 3,
                       "message": "denied by bob: not now"}
        }))
        .expect("session")
    }

    fn hook(v: Value) -> Webhook {
        let mut base = json!({"name": "ops", "url": "https://hooks.example/x",
                              "format": "slack", "secret": "0123456789abcdef"});
        if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
            b.extend(o.clone());
        }
        serde_json::from_value(base).expect("hook")
    }

    #[test]
    fn the_configuration_is_checked_and_says_what_to_fix() {
        let ok = parse(
            "webhooks:\n- name: slack\n  url: https://hooks.slack.com/services/T/B/X\n  \
             format: slack\n  secret: s3cr3t-s3cr3t-s3cr3t\n  events: [requested, denied]\n  \
             namespaces: [prod]\n- name: events\n  url: http://receiver.ops:8080/\n  \
             format: cloudevents\n  secret: another-long-secret\n",
        )
        .expect("valid");
        assert_eq!(ok.webhooks.len(), 2);
        assert_eq!(ok.webhooks[1].format, Format::CloudEvents);
        for (text, want) in [
            (
                "webhooks: [{name: a, url: 'ftp://x', format: slack, secret: 0123456789abcdef}]",
                "must be http:// or https://",
            ),
            (
                "webhooks: [{name: a, url: 'https://x', format: slack, secret: short}]",
                "at least 16",
            ),
            (
                "webhooks: [{name: a, url: 'https://x', format: teams, secret: 0123456789abcdef}]",
                "not valid",
            ),
            (
                "webhooks: [{name: a, url: 'https://x', format: slack, secret: 0123456789abcdef}, {name: a, url: 'https://y', format: slack, secret: 0123456789abcdef}]",
                "two webhooks are named",
            ),
            (
                "webhooks: [{name: a, url: 'https://x', format: slack, secret: 0123456789abcdef, evnts: []}]",
                "unknown field",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn transitions_are_the_events_people_care_about() {
        use Phase::*;
        assert_eq!(kind_of(None, Pending), Some(Kind::Requested));
        assert_eq!(kind_of(Some(Pending), Pending), None);
        assert_eq!(kind_of(Some(Pending), Approved), Some(Kind::Approved));
        assert_eq!(kind_of(Some(Pending), Denied), Some(Kind::Denied));
        assert_eq!(kind_of(Some(Approved), Expired), Some(Kind::Expired));
        assert_eq!(kind_of(Some(Approved), Active), Some(Kind::Started));
        assert_eq!(kind_of(Some(Active), Succeeded), Some(Kind::Ended));
        assert_eq!(kind_of(Some(Active), Failed), Some(Kind::Ended));
        assert_eq!(kind_of(Some(Active), Terminated), Some(Kind::Terminated));
        assert_eq!(kind_of(Some(Pending), Withdrawn), None);
        // Seen for the first time already approved (the watch started late): that news.
        assert_eq!(kind_of(None, Approved), Some(Kind::Approved));
        let mut p = Phases::default();
        assert_eq!(
            p.seen("u", Active, true),
            None,
            "the first list is not news"
        );
        assert_eq!(p.seen("u", Active, false), None);
        assert_eq!(p.seen("u", Succeeded, false), Some(Kind::Ended));
        p.gone("u");
        assert_eq!(p.seen("u", Pending, false), Some(Kind::Requested));
    }

    #[test]
    fn a_request_tells_the_approvers_the_exact_command() {
        let text = slack_body(Kind::Requested, &session("Pending"))["text"]
            .as_str()
            .expect("text")
            .to_owned();
        assert_eq!(
            text,
            "alice asks to run `psql -c 'select 1'` in pod prod/api-0 (reason: INC-9): session \
             exec-7xk2p needs 2 approvals. Approve with `kubectl aexec approve exec-7xk2p -n prod`"
        );
        let ended = slack_body(Kind::Ended, &session("Failed"))["text"].to_string();
        assert!(ended.contains("ended with exit code 3"), "{ended}");
        let denied = slack_body(Kind::Denied, &session("Denied"))["text"].to_string();
        assert!(denied.contains("denied by bob: not now"), "{denied}");
    }

    #[test]
    fn cloud_events_are_structured_and_name_the_session() {
        let t = DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let e = cloud_event(Kind::Requested, &session("Pending"), t);
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "dev.aexec.session.requested");
        assert_eq!(
            e["source"],
            "/apis/aexec.dev/v1alpha1/namespaces/prod/execsessions/exec-7xk2p"
        );
        assert_eq!(e["id"], "u-1/requested");
        assert_eq!(e["time"], "2026-12-02T10:00:00.000Z");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["data"]["requester"], "alice");
        assert_eq!(
            e["data"]["approveCommand"],
            "kubectl aexec approve exec-7xk2p -n prod"
        );
        let d = delivery(
            &hook(json!({"format": "cloudevents"})),
            Kind::Requested,
            &session("Pending"),
            t,
        );
        assert_eq!(d.content_type, "application/cloudevents+json");
        assert_eq!(d.signature, sign("0123456789abcdef", &d.body));
    }

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn webhooks_choose_events_and_namespaces() {
        let h = hook(json!({"events": ["requested"], "namespaces": ["prod"]}));
        assert!(h.wants(Kind::Requested, "prod"));
        assert!(!h.wants(Kind::Ended, "prod"));
        assert!(!h.wants(Kind::Requested, "dev"));
        assert!(hook(json!({})).wants(Kind::Terminated, "any"));
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_costs_a_bounded_queue_and_drops_the_rest() {
        // Accepts connections and never answers: the sender waits on its first request.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let metrics = crate::control::metrics::Metrics::default();
        let n = Notifier::start(
            Config {
                webhooks: vec![hook(json!({"url": format!("http://127.0.0.1:{port}/")}))],
            },
            metrics.clone(),
        )
        .expect("notifier");
        let s = session("Pending");
        let started = std::time::Instant::now();
        for _ in 0..QUEUE + 50 {
            n.notify(Kind::Requested, &s);
        }
        // Never waits on the receiver.
        assert!(started.elapsed() < Duration::from_secs(2));
        let dropped: u64 = metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("aexec_notifications_total{result=\"dropped\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        // The queue holds QUEUE; one may already be in flight.
        assert!((49..=50).contains(&dropped), "dropped {dropped}");
    }
}
