//! The broker: `attach` on the aggregated API. The requester's WebSocket is relayed, frame by
//! frame, to an exec stream the operator opens to the approved pod with its own credentials and
//! the approved spec (command, container, stdin, tty), never the client's.
//!
//! Backpressure: each direction reads one message, and reads the next only once the other leg
//! has taken it, so a slow side slows the other and memory per session stays at one frame per
//! direction.

use std::time::Duration;

use aexec_crds::{ExecSession, ExecSessionStatus, ModerationState, Phase};
use axum::{
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_openapi::{api::core::v1::Pod, jiff};
use kube::{
    Api, Client,
    api::{AttachParams, PostParams},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Error as WsError, Message,
        error::{CapacityError, ProtocolError},
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};
use tracing::{Instrument, error, info, info_span, warn};

use crate::{
    api::server::{AppState, Caller, StatusError, get_session, status_error},
    broker::frames::{self, Frame, Outcome},
    broker::moderated::{self, Announcer, Held},
    broker::moderation,
    broker::watch::{Hub, Shown},
    record::recorder::Recorder,
    recording::cast::{Event, Stream},
};

/// How a relayed session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The command ended with this outcome (from the pod's status frame).
    Command(Outcome),
    /// The requester went away before the command ended.
    ClientGone,
    /// The pod's stream ended without a status.
    PodGone(String),
    /// The client broke the protocol.
    ClientError(String),
    /// A limit of the policy ended it (idle timeout, maximum duration).
    Limit(String),
    /// Someone ended it with `terminate`.
    TerminatedBy(String),
    /// The recording stopped and the policy requires one (fail closed).
    RecordingFailed(String),
    /// The replica relaying it shut down (SIGTERM: a restart, a rollout, a drained node).
    Shutdown(String),
    /// Something failed after the session was claimed and before the relay began (the exec
    /// request could not be built or opened, the client's upgrade failed): nothing was relayed.
    NotStarted(String),
    /// The ExecSession was deleted while it was active (by someone allowed to delete it).
    Deleted,
}

/// The phase, message and exit code a session ends with.
pub fn final_state(end: &End) -> (Phase, String, Option<i32>) {
    match end {
        End::Command(Outcome::Exited(0)) => (
            Phase::Succeeded,
            "the command exited with code 0".into(),
            Some(0),
        ),
        End::Command(Outcome::Exited(c)) => (
            Phase::Failed,
            format!("the command exited with code {c}"),
            Some(*c),
        ),
        End::Command(Outcome::Failed(m)) => (
            Phase::Failed,
            format!("the command could not run: {m}"),
            None,
        ),
        End::ClientGone => (
            Phase::Terminated,
            "the requester disconnected before the command ended".into(),
            None,
        ),
        End::PodGone(m) => (
            Phase::Failed,
            format!("the pod's stream ended without an exit status: {m}"),
            None,
        ),
        End::ClientError(m) => (
            Phase::Terminated,
            format!("ended: the client broke the exec protocol: {m}"),
            None,
        ),
        End::Limit(m) => (Phase::Terminated, format!("ended by the policy: {m}"), None),
        End::TerminatedBy(who) => (Phase::Terminated, format!("terminated by {who}"), None),
        End::RecordingFailed(m) => (
            Phase::Failed,
            format!(
                "ended because the policy requires a recording and it could not be stored: {m}"
            ),
            None,
        ),
        End::NotStarted(m) => (
            Phase::Failed,
            format!("the session could not start: {m}; request a new session"),
            None,
        ),
        End::Deleted => (
            Phase::Terminated,
            format!("ended: {DELETED}; the recording is sealed, marked as ended by deletion"),
            None,
        ),
        End::Shutdown(instance) => (
            Phase::Failed,
            format!(
                "ended: operator replica {instance} shut down (restart or rollout) before the command \
                 ended; the recording is sealed, marked interrupted; request a new session to go on"
            ),
            None,
        ),
    }
}

/// Why a session ended by deletion.
pub const DELETED: &str =
    "the ExecSession was deleted while the session was active (by someone allowed to delete it)";

/// The limits a relay enforces, resolved from the status (copied from the policy at approval).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_duration: Duration,
    pub idle_timeout: Duration,
    /// End the session when the recording cannot be stored.
    pub recording_required: bool,
}

impl Limits {
    /// From the session's status, with the lifecycle's defaults.
    pub fn of(session: &ExecSession) -> Self {
        let l = session
            .status
            .as_ref()
            .and_then(|s| s.limits.clone())
            .unwrap_or_default();
        Limits {
            max_duration: l
                .max_duration
                .map(Into::into)
                .unwrap_or(crate::control::lifecycle::DEFAULT_MAX_DURATION),
            idle_timeout: l
                .idle_timeout
                .map(Into::into)
                .unwrap_or(crate::control::lifecycle::DEFAULT_IDLE_TIMEOUT),
            recording_required: l.recording_required,
        }
    }
}

/// Why a relay is told to stop from outside.
#[derive(Debug)]
pub enum Stop {
    /// `terminate`, by this user.
    TerminatedBy(String),
    /// This replica is shutting down.
    Shutdown,
    /// The ExecSession was deleted.
    Deleted,
}

/// A session this replica holds, from just before its claim until its end is written. The
/// sender is taken by the first `terminate` or shutdown.
type StopSenders =
    std::collections::HashMap<SessionKey, Option<tokio::sync::oneshot::Sender<Stop>>>;

/// Namespace, name and UID: a session deleted and created again under its name while the old
/// one still ends is another session.
type SessionKey = (String, String, String);

/// What `terminate` found on this replica.
#[derive(Debug, PartialEq, Eq)]
pub enum Termination {
    /// The relay was told to stop; it ends the session with the notice.
    Stopping,
    /// The relay is already ending (the command exited, or someone stopped it first).
    AlreadyEnding,
    /// This replica holds no relay of the session.
    NotHere,
}
/// Sessions deleted before their relay registered (the deletion watch saw them between the
/// attach claim and the start of the relay): they stop as soon as they register.
type PendingDeletions = std::collections::HashSet<SessionKey>;

/// Sessions this replica is relaying, so that `terminate` and a shutdown can reach them, and
/// the tasks that relay them, so that a shutdown can wait until each has written its end.
#[derive(Clone, Debug)]
pub struct Sessions {
    inner: std::sync::Arc<std::sync::Mutex<StopSenders>>,
    deleted: std::sync::Arc<std::sync::Mutex<PendingDeletions>>,
    /// The live watchers of each session relayed here (`docs/watch.md`).
    hubs: std::sync::Arc<std::sync::Mutex<Hubs>>,
    tasks: tokio_util::task::TaskTracker,
    /// The most watchers one session takes at once.
    max_watchers: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_max_watchers(MAX_WATCHERS)
    }
}

type Hubs = std::collections::HashMap<SessionKey, std::sync::Arc<Hub>>;

/// The most watchers one session takes at once, unless `--max-watchers-per-session` says.
pub const MAX_WATCHERS: usize = 16;

fn key(ns: &str, name: &str, uid: &str) -> SessionKey {
    (ns.to_owned(), name.to_owned(), uid.to_owned())
}

impl Sessions {
    /// No session relayed yet; each takes at most `max_watchers` watchers at once.
    pub fn with_max_watchers(max_watchers: usize) -> Self {
        Sessions {
            inner: Default::default(),
            deleted: Default::default(),
            hubs: Default::default(),
            tasks: Default::default(),
            max_watchers,
        }
    }

    fn register(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> (tokio::sync::oneshot::Receiver<Stop>, std::sync::Arc<Hub>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let k = key(ns, name, uid);
        let hub = Hub::new(self.max_watchers);
        if let Ok(mut h) = self.hubs.lock() {
            h.insert(k.clone(), hub.clone());
        }
        let deleted = self.deleted.lock().is_ok_and(|mut d| d.remove(&k));
        let slot = if deleted {
            let _ = tx.send(Stop::Deleted);
            None
        } else {
            Some(tx)
        };
        if let Ok(mut m) = self.inner.lock() {
            m.insert(k, slot);
        }
        (rx, hub)
    }

    /// The watchers' hub of a session relayed here.
    pub fn hub(&self, ns: &str, name: &str, uid: &str) -> Option<std::sync::Arc<Hub>> {
        self.hubs.lock().ok()?.get(&key(ns, name, uid)).cloned()
    }

    /// Ends the relay of a session held here because its ExecSession was deleted; one whose
    /// relay has not started yet stops as soon as it starts.
    pub fn deleted(&self, ns: &str, name: &str, uid: &str) {
        let k = key(ns, name, uid);
        let held = self.inner.lock().ok().map(|mut m| {
            m.get_mut(&k).map(|slot| {
                if let Some(tx) = slot.take() {
                    let _ = tx.send(Stop::Deleted);
                }
            })
        });
        if !matches!(held, Some(Some(())))
            && let Ok(mut d) = self.deleted.lock()
        {
            d.insert(k);
        }
    }

    fn remove(&self, ns: &str, name: &str, uid: &str) {
        let k = key(ns, name, uid);
        if let Ok(mut m) = self.inner.lock() {
            m.remove(&k);
        }
        if let Some(hub) = self.hubs.lock().ok().and_then(|mut h| h.remove(&k)) {
            hub.end();
        }
        if let Ok(mut d) = self.deleted.lock() {
            d.remove(&k);
        }
    }

    /// Ends the relay of a session held here.
    pub fn terminate(&self, ns: &str, name: &str, uid: &str, by: &str) -> Termination {
        let Ok(mut m) = self.inner.lock() else {
            return Termination::NotHere;
        };
        match m.get_mut(&key(ns, name, uid)) {
            None => Termination::NotHere,
            Some(slot) => match slot
                .take()
                .map(|tx| tx.send(Stop::TerminatedBy(by.to_owned())))
            {
                Some(Ok(())) => Termination::Stopping,
                // Stopped already, or the relay returned and is writing the end.
                _ => Termination::AlreadyEnding,
            },
        }
    }

    /// True once a shutdown began: no new session may start here.
    pub fn is_closed(&self) -> bool {
        self.tasks.is_closed()
    }

    /// How many sessions this replica relays now.
    pub fn active(&self) -> usize {
        self.tasks.len()
    }

    /// The shutdown of the relays: no new session starts here; sessions that end by themselves
    /// within `grace` end as usual; the rest are stopped (the user is told, the recording is
    /// sealed and marked interrupted, the session fails with the reason). Returns once every
    /// relay has written its session's end, or after `grace + write_within`.
    pub async fn shut_down(&self, grace: Duration, write_within: Duration) {
        self.tasks.close();
        if self.tasks.is_empty() {
            return;
        }
        info!(
            sessions = self.tasks.len(),
            ?grace,
            "waiting for active sessions to end"
        );
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_ok() {
            return;
        }
        let senders: Vec<_> = self
            .inner
            .lock()
            .map(|mut m| m.values_mut().filter_map(Option::take).collect())
            .unwrap_or_default();
        info!(sessions = senders.len(), "ending the sessions still active");
        for tx in senders {
            let _ = tx.send(Stop::Shutdown);
        }
        if tokio::time::timeout(write_within, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                sessions = self.tasks.len(),
                "sessions still ending at exit; a restart of this replica recovers them"
            );
        }
    }
}

/// Chooses the subprotocol: v5 when offered (stdin half-close), else v4.
pub(crate) fn choose_protocol(headers: &HeaderMap) -> Option<&'static str> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    [frames::V5, frames::V4]
        .into_iter()
        .find(|p| offered.contains(p))
}

/// `GET .../execsessions/{name}/attach` with a WebSocket upgrade.
pub async fn attach(
    state: AppState,
    caller: Caller,
    namespace: String,
    name: String,
    req: Request,
) -> Response {
    match prepare(&state, &caller, &namespace, &name, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn prepare(
    state: &AppState,
    caller: &Caller,
    namespace: &str,
    name: &str,
    mut req: Request,
) -> Result<Response, StatusError> {
    let headers = req.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let (Some(key), true) = (key, is_upgrade) else {
        return Err(status_error(
            400,
            "BadRequest",
            "attach is a WebSocket: upgrade the connection (kubectl aexec attach does)",
        ));
    };
    let protocol = choose_protocol(headers).ok_or_else(|| {
        status_error(
            400,
            "BadRequest",
            format!(
                "offer the {} (or {}) WebSocket subprotocol",
                frames::V5,
                frames::V4
            ),
        )
    })?;

    if state.sessions.is_closed() {
        return Err(status_error(
            503,
            "ServiceUnavailable",
            format!(
                "operator replica {} is shutting down; attach again (another replica takes it)",
                state.instance
            ),
        ));
    }
    // Held until the relay task takes over: a shutdown waits for this attach too.
    let in_flight = state.sessions.tasks.token();
    let sessions: Api<ExecSession> = Api::namespaced(state.client.clone(), namespace);
    let internal =
        |what: &str, e: kube::Error| status_error(500, "InternalError", format!("{what}: {e}"));
    let session = get_session(&state.client, namespace, name).await?;
    check_attach(&session, caller, Utc::now())?;
    let st = session.status.clone().unwrap_or_default();
    let pod = Api::<Pod>::namespaced(state.client.clone(), namespace)
        .get_opt(&session.spec.pod)
        .await
        .map_err(|e| internal("reading the pod", e))?;
    let pod_uid = pod.as_ref().and_then(|p| p.metadata.uid.clone());
    if pod_uid.is_none() || pod_uid != st.pod_uid {
        return Err(status_error(
            409,
            "Conflict",
            format!(
                "pod {} is not the approved pod (UID {}): it was deleted or replaced; request a new session",
                session.spec.pod,
                st.pod_uid.as_deref().unwrap_or("unknown")
            ),
        ));
    }

    // Registered before the claim is written, so that from the moment the session is Active
    // with this replica as its broker, a `terminate` here finds it.
    let uid = session.metadata.uid.clone().unwrap_or_default();
    let (stop, hub) = state.sessions.register(namespace, name, &uid);

    // Claim the session: the resourceVersion makes this write fail if anyone else (another
    // replica, a second attach) changed it since we read it. Only one attach ever wins.
    let mut claimed = session.clone();
    let mut cst = st.clone();
    cst.phase = Some(Phase::Active);
    cst.broker = Some(state.instance.clone());
    cst.broker_address = state.peers.address.map(|a| a.to_string());
    cst.start_time = Some(now_time());
    cst.message = Some(format!("attached by {}", caller.user.username));
    claimed.status = Some(cst);
    let claimed = match sessions
        .replace_status(name, &PostParams::default(), &claimed)
        .await
    {
        // Held by the relay for the session's life: without the managedFields the API server
        // returns (a few KiB of JSON that nothing here reads; docs/performance.md).
        Ok(mut s) => {
            crate::control::controller::without_managed_fields(&mut s);
            s
        }
        Err(e) => {
            state.sessions.remove(namespace, name, &uid);
            return Err(match e {
                kube::Error::Api(e) if e.code == 409 => status_error(
                    409,
                    "Conflict",
                    "the session was attached or changed at the same moment; it can be attached only once",
                ),
                e => internal("claiming the session", e),
            });
        }
    };

    // From here on the session is Active in its status: every failure before the relay runs
    // ends it (Failed, with the reason, and a sealed recording saying what happened), never
    // leaves it Active with nobody relaying it.
    let recorder = Recorder::start(state.recordings.clone(), &claimed);
    let rule = claimed
        .status
        .as_ref()
        .and_then(|s| s.limits.as_ref())
        .and_then(|l| l.moderation.clone());
    // Open the pod leg before answering the client, so a failure is still a plain error. A
    // moderated session opens it (which starts the command) only once its moderators watch.
    let pod_ws = match &rule {
        Some(_) => None,
        None => match open_pod_leg(&state.client, namespace, &claimed).await {
            Ok(ws) => Some(ws),
            Err(failure) => {
                warn!(error = %failure.message, "the session could not start");
                let _ = recorder
                    .record(Event::Marker(failure.message.clone()))
                    .await;
                finish(
                    &state.client,
                    namespace,
                    name,
                    &End::NotStarted(failure.message.clone()),
                    recorder.finish().await,
                )
                .await;
                state.sessions.remove(namespace, name, &uid);
                return Err(status_error(
                    failure.code,
                    failure.reason,
                    format!(
                        "{}; the session has ended (Failed): request a new session",
                        failure.message
                    ),
                ));
            }
        },
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let client = state.client.clone();
    let (ns, n, user) = (
        namespace.to_owned(),
        name.to_owned(),
        caller.user.username.clone(),
    );
    let session_for_relay = claimed;
    // The task's state is held by every attached session, idle or not (docs/performance.md,
    // memory per idle session): what only some sessions need, or only for a moment, is boxed
    // there (the pod's leg until the relay splits it; the operator's state, for moderation).
    let pod_ws = pod_ws.map(Box::new);
    let state_for_relay = rule.is_some().then(|| Box::new(state.clone()));
    let sessions = state.sessions.clone();
    state.sessions.tasks.spawn(
        async move {
            let _in_flight = in_flight;
            let end = match on_upgrade.await {
                Err(e) => {
                    let why = format!(
                        "the requester's connection failed before the relay began ({e}); the \
                         command's stream was closed"
                    );
                    warn!(error = %e, "the client's upgrade failed");
                    let _ = recorder.record(Event::Marker(why.clone())).await;
                    End::NotStarted(why)
                }
                Ok(upgraded) => {
                    let mut client_ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(client_ws_config()),
                    )
                    .await;
                    info!(%user, "attached");
                    let mut stop = stop;
                    let moderated = rule.as_ref().zip(state_for_relay.as_deref());
                    let started = match (pod_ws, moderated) {
                        (Some(pod_ws), _) => Ok((pod_ws, Held::new(), None)),
                        (None, Some((rule, state))) => Box::pin(start_moderated(
                            state,
                            &mut client_ws,
                            &session_for_relay,
                            rule,
                            &hub,
                            &mut stop,
                            &recorder,
                        ))
                        .await
                        .map(|(leg, held, announcer)| (Box::new(leg), held, announcer)),
                        (None, None) => Err(End::NotStarted("no exec stream was opened".into())),
                    };
                    let end = match started {
                        Ok((pod_leg, held, announcer)) => {
                            relay(
                                client_ws,
                                pod_leg,
                                &session_for_relay,
                                stop,
                                &recorder,
                                &hub,
                                Moderation {
                                    held,
                                    rule: rule.as_ref().zip(announcer.as_ref()),
                                },
                            )
                            .await
                        }
                        Err(end) => end,
                    };
                    // The watchers hear the end at once, not after the end is written; joins
                    // and leaves the relay had not taken yet still go into the recording.
                    hub.end();
                    for note in hub.take_notes() {
                        let _ = recorder.record(Event::Marker(note)).await;
                    }
                    end
                }
            };
            info!(?end, "session ended");
            if let End::Shutdown(instance) = &end {
                recorder.interrupt(format!(
                    "operator replica {instance} shut down before the session ended"
                ));
            }
            if end == End::Deleted {
                // In the recording itself too, at its place: why it stops here.
                let _ = recorder
                    .record(Event::Marker(format!("session ended: {DELETED}")))
                    .await;
                recorder.interrupt(format!("ended by deletion: {DELETED}"));
            }
            let recorded = recorder.finish().await;
            Box::pin(finish(&client, &ns, &n, &end, recorded)).await;
            // Only now: until its end is written, a `terminate` here hears it is ending.
            sessions.remove(&ns, &n, &uid);
        }
        .instrument(info_span!("session", namespace = %namespace, session = %name)),
    );

    Ok(switching_protocols(protocol, &accept))
}

/// The answer that completes a WebSocket upgrade (attach, observe) with `protocol`.
pub(crate) fn switching_protocols(protocol: &'static str, accept: &str) -> Response {
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Starts a moderated session: waits for its moderators with the requester attached, then
/// opens the pod's exec stream (which starts the command). When it cannot start, the requester
/// hears why (a notice, then the close frame) and the end is returned.
async fn start_moderated(
    state: &AppState,
    client_ws: &mut moderated::ClientWs,
    session: &ExecSession,
    rule: &aexec_crds::ModerationRule,
    hub: &std::sync::Arc<Hub>,
    stop: &mut tokio::sync::oneshot::Receiver<Stop>,
    recorder: &Recorder,
) -> Result<(PodLeg, Held, Option<Announcer>), End> {
    let announcer = Announcer::start(state, session, hub.clone());
    let fail = match moderated::await_moderators(
        client_ws, session, rule, hub, stop, recorder, &announcer,
    )
    .await
    {
        Ok(held) => {
            let ns = session.metadata.namespace.as_deref().unwrap_or_default();
            match open_pod_leg(&state.client, ns, session).await {
                Ok(pod) => return Ok((pod, held, Some(announcer))),
                Err(failure) => {
                    warn!(error = %failure.message, "the session could not start");
                    let why = failure.message;
                    let _ = recorder.record(Event::Marker(why.clone())).await;
                    (
                        End::NotStarted(why.clone()),
                        format!("session ended: {why}"),
                    )
                }
            }
        }
        Err(ended) => ended,
    };
    let (end, notice) = fail;
    if end != End::ClientGone {
        let _ = tokio::time::timeout(
            CLOSING_GRACE,
            client_ws.send(Message::Text(moderation::notice_message(&notice).into())),
        )
        .await;
        let _ = tokio::time::timeout(
            CLOSING_GRACE,
            client_ws.close(Some(close_frame(CloseCode::Normal, &notice))),
        )
        .await;
    }
    Err(end)
}

/// Why the pod leg could not be opened, as the client's `Status` will say it.
#[derive(Debug)]
struct StartFailure {
    code: u16,
    reason: &'static str,
    message: String,
}

/// The pod's leg, and, for a debug session, where its exit code is read.
type PodLeg = (Ws, Option<crate::broker::debug::Exit>);

/// Opens the exec stream to the approved pod with the approved spec (command, container,
/// stdin, tty), never anything from the client; for a debug session, the attach stream of the
/// ephemeral container it adds (`debug`).
async fn open_pod_leg(
    client: &Client,
    namespace: &str,
    session: &ExecSession,
) -> Result<PodLeg, StartFailure> {
    let spec = &session.spec;
    if let Some(debug) = &spec.debug {
        return crate::broker::debug::open_leg(client, namespace, session, debug)
            .await
            .map(|(ws, exit)| (ws, Some(exit)))
            .map_err(|message| StartFailure {
                code: 502,
                reason: "BadGateway",
                message,
            });
    }
    let ap = AttachParams {
        container: session.status.as_ref().and_then(|s| s.container.clone()),
        stdin: spec.stdin,
        stdout: true,
        stderr: !spec.tty,
        tty: spec.tty,
        ..Default::default()
    };
    let exec_req = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
        .exec(&spec.pod, spec.command.clone(), &ap)
        .map_err(|e| StartFailure {
            code: 500,
            reason: "InternalError",
            message: match aexec_crds::command_too_long(&spec.command) {
                Some(why) => why,
                None => format!("the exec request could not be built: {e}"),
            },
        })?;
    crate::broker::podleg::connect(client, exec_req)
        .await
        .map(|ws| (ws, None))
        .map_err(|e| StartFailure {
            code: 502,
            reason: "BadGateway",
            message: format!("could not open the exec stream to the pod: {e}"),
        })
}

/// The requester's leg: small buffers (an idle session holds a few KiB, not tungstenite's
/// 128 KiB per direction; reads of 4 KiB, as on the pod's leg: `podleg::config`), and messages bounded just above the largest frame a client may send,
/// so an oversized one is refused by `frames::parse` with a clear message after at most 2 MiB,
/// never buffered up to the library's 64 MiB default.
fn client_ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(16 << 10)
        .max_write_buffer_size(4 << 20)
        .max_message_size(Some(2 * frames::MAX_CLIENT_FRAME))
        .max_frame_size(Some(2 * frames::MAX_CLIENT_FRAME))
}

/// The business rules of attach (pure): only the requester, only while Approved, only before
/// the deadline.
pub fn check_attach(
    session: &ExecSession,
    caller: &Caller,
    now: chrono::DateTime<Utc>,
) -> Result<(), StatusError> {
    let requester = &session.spec.requester.username;
    if &caller.user.username != requester {
        return Err(status_error(
            403,
            "Forbidden",
            format!(
                "only the requester ({requester}) may attach to this session; {} may not",
                caller.user.username
            ),
        ));
    }
    if session.metadata.deletion_timestamp.is_some() {
        return Err(status_error(
            409,
            "Conflict",
            "the session is being deleted; it can no longer be attached",
        ));
    }
    let st = session.status.clone().unwrap_or_default();
    match st.phase.unwrap_or_default() {
        Phase::Approved => {}
        Phase::Active => {
            return Err(status_error(
                409,
                "Conflict",
                "the session is already attached; a session can be attached only once",
            ));
        }
        p => {
            return Err(status_error(
                409,
                "Conflict",
                format!(
                    "the session is {p}{}; only an Approved session can be attached",
                    st.message.map(|m| format!(" ({m})")).unwrap_or_default()
                ),
            ));
        }
    }
    let deadline = st.deadline.map(|d| d.0.as_second()).unwrap_or(0);
    if now.timestamp() >= deadline {
        return Err(status_error(
            409,
            "Conflict",
            "the approval has expired; request a new session",
        ));
    }
    Ok(())
}

pub(crate) fn now_time() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let secs = Utc::now().timestamp();
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    )
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A leg quiet for this long gets a ping, so that proxies and load balancers on the way (and
/// the API server) do not take it for dead.
const PING_AFTER: Duration = Duration::from_secs(5);

/// How long the last frames of a session (a notice, the close handshake) may take: a client
/// that does not read or answer is not waited for longer.
const CLOSING_GRACE: Duration = Duration::from_secs(2);

/// Ends a session whose reason is told: `said` on the user's terminal (on `channel`), then the
/// pod's leg closes and the client's, with `said` in its close frame (a client shows it as why
/// it ended). Neither leg is waited for long: the limits must end a session whose client or
/// pod stopped reading.
async fn tell_and_close(
    client_tx: &mut futures::stream::SplitSink<Ws, Message>,
    client_rx: &mut futures::stream::SplitStream<Ws>,
    pod_tx: &mut futures::stream::SplitSink<Ws, Message>,
    channel: u8,
    said: String,
) {
    let text = format!("\r\n[aexec] {said}\r\n");
    let notice = frames::encode(channel, text.as_bytes());
    let _ = tokio::time::timeout(
        CLOSING_GRACE,
        client_tx.send(Message::Binary(notice.into())),
    )
    .await;
    let _ = tokio::time::timeout(CLOSING_GRACE, pod_tx.close()).await;
    let reason = close_frame(CloseCode::Normal, &said);
    close_gracefully(client_tx, client_rx, Some(reason)).await;
}

/// Ends a session whose client broke the protocol: the pod's stream closes, the client hears
/// why in the close frame (`code`: 1009 for a message too large, ...).
async fn refuse(
    pod_tx: &mut futures::stream::SplitSink<Ws, Message>,
    client_tx: futures::stream::SplitSink<Ws, Message>,
    client_rx: futures::stream::SplitStream<Ws>,
    code: CloseCode,
    why: String,
) -> End {
    let _ = tokio::time::timeout(CLOSING_GRACE, pod_tx.close()).await;
    close_refused(client_tx, client_rx, close_frame(code, &why)).await;
    End::ClientError(why)
}

/// Completes the WebSocket closing handshake, so the last frames (status, notice) are not lost
/// to a connection torn down under them; a client that never reads or answers gets 2 s.
async fn close_gracefully(
    tx: &mut futures::stream::SplitSink<Ws, Message>,
    rx: &mut futures::stream::SplitStream<Ws>,
    frame: Option<CloseFrame>,
) {
    let _ = tokio::time::timeout(CLOSING_GRACE, async {
        if let Some(frame) = frame {
            let _ = tx.send(Message::Close(Some(frame))).await;
        }
        let _ = tx.close().await;
        while let Some(Ok(m)) = rx.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

/// The most a close frame's reason carries (125 bytes of payload, less the code's 2).
const MAX_CLOSE_REASON: usize = 123;

/// The longest a refused client is read from after its close frame (see [`close_refused`]).
const LINGER: Duration = Duration::from_secs(10);

/// A close frame with `reason` cut at a character boundary to what a close frame carries.
fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].into(),
    }
}

/// Closes the connection of a client that broke the protocol, with `frame` saying why. What
/// the client still sends (the rest of an oversized message) is read and dropped until it
/// closes, for at most [`LINGER`] and [`CLOSING_GRACE`] of silence: a socket closed with unread
/// data is reset, and a reset can overtake the close frame on its way, leaving the client with
/// a broken connection and no reason.
async fn close_refused(
    mut tx: futures::stream::SplitSink<Ws, Message>,
    rx: futures::stream::SplitStream<Ws>,
    frame: CloseFrame,
) {
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(CLOSING_GRACE, tx.send(Message::Close(Some(frame)))).await;
    let Ok(mut ws) = rx.reunite(tx) else { return };
    let io = ws.get_mut();
    let until = tokio::time::Instant::now() + LINGER;
    let mut scratch = vec![0u8; 16 << 10];
    while let Ok(Ok(n)) = tokio::time::timeout_at(
        until.min(tokio::time::Instant::now() + CLOSING_GRACE),
        io.read(&mut scratch),
    )
    .await
    {
        if n == 0 {
            break;
        }
    }
}

/// What a read error on the client's leg means: `None` when the client went away (the
/// connection closed or broke), else the close code and reason for a client that broke the
/// WebSocket protocol. A message over the bound is reported with the bound a client may send,
/// as a frame over it is.
fn client_leg_error(e: WsError) -> Option<(CloseCode, String)> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => Some((
            CloseCode::Size,
            frames::FrameError::TooLarge {
                len: size,
                max: frames::MAX_CLIENT_FRAME,
            }
            .to_string(),
        )),
        WsError::Utf8(e) => Some((
            CloseCode::Invalid,
            format!("a text message was not valid UTF-8: {e}"),
        )),
        // A connection dropped without the closing handshake is a client gone, not a fault.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(e) => Some((CloseCode::Protocol, format!("invalid WebSocket: {e}"))),
        WsError::Capacity(e) => Some((CloseCode::Size, e.to_string())),
        WsError::AttackAttempt => Some((CloseCode::Policy, "attack attempt detected".into())),
        _ => None,
    }
}

/// Why the pod's leg ended with an error, for the session's message.
fn pod_leg_error(e: &WsError) -> String {
    match e {
        WsError::Io(_)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Tls(_)
        | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            format!(
                "the connection to the API server that carried it broke (an API server restart \
                 or a network failure): {e}"
            )
        }
        other => format!("the API server sent an invalid exec stream: {other}"),
    }
}

/// The marker for a frame from the API server on a channel it does not send on (stdin,
/// resize): relayed to the client as it came, and noted since its bytes are not recorded.
fn relayed_as_is(frame: &Frame<'_>) -> String {
    let (channel, len) = match frame {
        Frame::Stdin(d) => ("stdin (0)", d.len()),
        Frame::Resize(d) => ("resize (4)", d.len()),
        Frame::Stdout(d) => ("stdout (1)", d.len()),
        Frame::Stderr(d) => ("stderr (2)", d.len()),
        Frame::Status(d) => ("status (3)", d.len()),
        Frame::Close(_) | Frame::Empty(_) => ("control", 0),
    };
    format!("a frame from the API server on the {channel} channel ({len} bytes) was relayed as is")
}

/// The marker for a text message from the client, which is not forwarded.
pub fn text_message_marker(text: &[u8]) -> String {
    format!(
        "a text message from the client was not forwarded: the exec protocol carries binary \
         messages only (it sent {})",
        excerpt(text)
    )
}

/// The end and the user's notice when the maximum duration is reached.
fn max_duration_reached(limits: &Limits) -> (End, String) {
    let d = kube::core::Duration::from(limits.max_duration);
    let why = format!("the maximum duration of {d} was reached");
    (End::Limit(why.clone()), format!("session ended: {why}"))
}

/// The end and the user's notice when the session was idle too long.
fn idle_timed_out(limits: &Limits) -> (End, String) {
    let d = kube::core::Duration::from(limits.idle_timeout);
    let why = format!("no input or output for {d} (idle timeout)");
    (End::Limit(why.clone()), format!("session ended: {why}"))
}

/// The end and the user's notice for `terminate` or a shutdown of this replica.
pub(crate) fn stopped(stop: Stop, session: &ExecSession) -> (End, String) {
    match stop {
        Stop::TerminatedBy(by) => {
            let notice = format!("session terminated by {by}");
            (End::TerminatedBy(by), notice)
        }
        Stop::Deleted => (End::Deleted, format!("session ended: {DELETED}")),
        Stop::Shutdown => {
            let instance = session
                .status
                .as_ref()
                .and_then(|s| s.broker.clone())
                .unwrap_or_else(|| "unknown".into());
            let notice = format!(
                "session ended: operator replica {instance} is shutting down (restart or rollout); \
                 the recording is sealed; request a new session to go on"
            );
            (End::Shutdown(instance), notice)
        }
    }
}

/// What the recording says about a frame the client sent that is not forwarded (`None` for
/// frames that carry nothing, which are dropped quietly). The session goes on: these are
/// harmless to drop, and a client may send them by mistake (a terminal that reports no size).
pub fn dropped_frame_marker(frame: &Frame<'_>, tty: bool, stdin: bool) -> Option<String> {
    match *frame {
        Frame::Resize(doc) if tty => frames::parse_resize(doc).err().map(|e| {
            format!(
                "a resize from the client was not applied: {e} (it sent {})",
                excerpt(doc)
            )
        }),
        Frame::Resize(doc) => Some(format!(
            "a resize from the client was ignored: the session has no terminal (it sent {})",
            excerpt(doc)
        )),
        Frame::Stdin(d) if !stdin => Some(format!(
            "{} bytes of input from the client were not forwarded: the session has no stdin",
            d.len()
        )),
        Frame::Close(0) if !stdin => {
            Some("a stdin close from the client was ignored: the session has no stdin".into())
        }
        Frame::Close(n) if n != 0 => Some(format!(
            "a close of stream {n} from the client was ignored: a client may close only stdin (0)"
        )),
        _ => None,
    }
}

/// The start of untrusted bytes, quoted for a marker.
fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 128;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    let more = if bytes.len() > MAX {
        format!(" and {} more bytes", bytes.len() - MAX)
    } else {
        String::new()
    };
    format!("{text:?}{more}")
}

/// A relay's moderation: what the requester sent while the command waited, and the rule with
/// the announcer of its changes (none for a session without moderation).
struct Moderation<'a> {
    held: Held,
    rule: Option<(&'a aexec_crds::ModerationRule, &'a Announcer)>,
}

/// Relays frames both ways until the command's status arrives or a side goes away.
fn relay<'a>(
    client: Ws,
    pod_leg: Box<PodLeg>,
    session: &'a ExecSession,
    stop: tokio::sync::oneshot::Receiver<Stop>,
    recorder: &'a Recorder,
    hub: &'a Hub,
    moderation: Moderation<'a>,
) -> impl std::future::Future<Output = End> + 'a {
    let (pod, debug_exit) = *pod_leg;
    let (client_tx, client_rx) = client.split();
    let (pod_tx, pod_rx) = pod.split();
    let legs = Legs {
        client_tx,
        client_rx,
        pod_tx,
        pod_rx,
        debug_exit: debug_exit.map(Box::new),
    };
    relay_legs(legs, session, stop, recorder, hub, moderation)
}

/// Both legs, split before the relay's state machine is made: an async fn keeps its arguments
/// in its state for its whole life, so whole streams passed in would sit there beside their
/// halves, for every idle session.
struct Legs {
    client_tx: futures::stream::SplitSink<Ws, Message>,
    client_rx: futures::stream::SplitStream<Ws>,
    pod_tx: futures::stream::SplitSink<Ws, Message>,
    pod_rx: futures::stream::SplitStream<Ws>,
    /// Boxed: only `kubectl aexec debug` has one.
    debug_exit: Option<Box<crate::broker::debug::Exit>>,
}

async fn relay_legs(
    legs: Legs,
    session: &ExecSession,
    stop: tokio::sync::oneshot::Receiver<Stop>,
    recorder: &Recorder,
    hub: &Hub,
    Moderation { held, rule }: Moderation<'_>,
) -> End {
    let Legs {
        mut client_tx,
        mut client_rx,
        mut pod_tx,
        mut pod_rx,
        debug_exit,
    } = legs;
    let limits = Limits::of(session);
    let moderation = rule;
    // A sender dropped without a word (the registry itself went away) is not a stop: only a
    // `terminate` or a shutdown says why a session ends from outside.
    let stop = async move {
        match stop.await {
            Ok(why) => why,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    let (stdin_allowed, tty) = (session.spec.stdin, session.spec.tty);
    // Moderation: while too few moderators watch, the requester's input is held (up to
    // HOLD_BYTES, then their connection is not read) and relayed in order once enough watch
    // again. What was sent while the command waited for its moderators comes first.
    let mut held = held;
    let mut held_bytes: usize = held.iter().map(Message::len).sum();
    let mut paused = false;
    let mut moderators = hub.moderators();
    let mut moderators_gone = moderation.is_none();
    moderators.mark_changed();
    let never = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400);
    let pause_deadline = tokio::time::sleep_until(never);
    tokio::pin!(pause_deadline);
    // A leg is pinged after PING_AFTER without traffic on it, not on a fixed beat: a ping
    // written to the API server after it closed the pod's stream (it may still be sending the
    // output's tail, which the broker reads seconds later when the client is slow) makes its
    // kernel reset the connection and drop that tail and the exit status.
    let mut ping = tokio::time::interval(Duration::from_secs(1));
    let (mut pod_traffic, mut client_traffic) =
        (tokio::time::Instant::now(), tokio::time::Instant::now());
    let started = tokio::time::Instant::now();
    let hard_stop = tokio::time::sleep_until(started + limits.max_duration);
    tokio::pin!(hard_stop);
    let idle = tokio::time::sleep_until(started + limits.idle_timeout);
    tokio::pin!(idle);
    // Why the session ends is told on the user's terminal, then both legs close. Neither leg
    // is waited for long: the limits must end a session whose client or pod stopped reading.
    let notice_channel = if tty { 1 } else { 2 };
    // Each is one call awaited once, not code repeated at every use: the relay's state keeps
    // the locals of every inlined copy apart, which made each idle session's task 4 KiB
    // larger (docs/performance.md, memory per idle session).
    macro_rules! end_with_notice {
        ($end:expr, $text:expr) => {{
            let end: End = $end;
            let said: String = $text.to_string();
            tell_and_close(
                &mut client_tx,
                &mut client_rx,
                &mut pod_tx,
                notice_channel,
                said,
            )
            .await;
            return end;
        }};
    }
    // A client that broke the protocol: the pod's stream closes, the client hears why in the
    // close frame (`$code`: 1009 for a message too large, ...), and the session ends.
    macro_rules! refuse_client {
        ($code:expr, $why:expr) => {{
            return refuse(&mut pod_tx, client_tx, client_rx, $code, $why).await;
        }};
    }
    // Sends to a leg, which waits while that side does not read (backpressure: nothing else is
    // read meanwhile, so memory stays flat), yet the limits and `terminate` still end the
    // session.
    macro_rules! send {
        ($sink:expr, $msg:expr) => {{
            let outcome = {
                let mut send = $sink.send($msg);
                tokio::select! {
                    r = &mut send => Ok(r),
                    () = &mut hard_stop => Err(max_duration_reached(&limits)),
                    () = &mut idle => Err(idle_timed_out(&limits)),
                    by = &mut stop => Err(stopped(by, session)),
                }
            };
            match outcome {
                Ok(r) => r,
                Err((end, text)) => end_with_notice!(end, text),
            }
        }};
    }
    // Every frame is recorded before it is forwarded. When the recording stops (the spool is
    // full), a policy that requires one ends the session; otherwise the relay goes on unrecorded
    // and the recording says where it stopped.
    macro_rules! rec {
        ($ev:expr) => {
            recorded!(recorder.record($ev).await)
        };
    }
    // Stream bytes are encoded straight from the message they came in: no copy.
    macro_rules! rec_data {
        ($stream:expr, $data:expr) => {
            recorded!(recorder.record_data($stream, &$data[1..]).await)
        };
    }
    macro_rules! recorded {
        ($result:expr) => {{
            if let Err(why) = $result
                && limits.recording_required
            {
                end_with_notice!(
                    End::RecordingFailed(why.clone()),
                    format!("session ended: the recording cannot be stored ({why})")
                );
            }
        }};
    }
    loop {
        tokio::select! {
            () = &mut hard_stop => {
                let (end, text) = max_duration_reached(&limits);
                end_with_notice!(end, text);
            }
            () = &mut idle => {
                let (end, text) = idle_timed_out(&limits);
                end_with_notice!(end, text);
            }
            by = &mut stop => {
                let (end, text) = stopped(by, session);
                end_with_notice!(end, text);
            }
            m = pod_rx.next() => { pod_traffic = tokio::time::Instant::now(); match m {
                Some(Ok(Message::Binary(data))) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                    // A debug container's attach ends with `Success` whatever its command did:
                    // the status relayed and recorded is the container's own, from the pod.
                    let data = match (&debug_exit, frames::parse(&data, usize::MAX)) {
                        (Some(exit), Ok(Frame::Status(_))) => {
                            let mut doc = vec![3u8];
                            // Boxed: awaited once, by debug sessions only; in place, it was the largest
                            // part of every relay's state.
                            doc.extend(frames::status_doc(&Box::pin(exit.outcome()).await));
                            doc.into()
                        }
                        _ => data,
                    };
                    let frame = frames::parse(&data, usize::MAX);
                    // A status that cannot be read ends the session as a stream without one,
                    // not as a command that "could not run".
                    let status = match frame {
                        Ok(Frame::Status(doc)) => Some(frames::exit_code(doc).map_err(|e| e.to_string())),
                        _ => None,
                    };
                    // Watchers get the message's own buffer: the frame as the API server sent it.
                    match (frame, &status) {
                        (Ok(Frame::Stdout(_)), _) => {
                            rec_data!(Stream::Out, data);
                            hub.publish(Shown::Output(data.clone()));
                        }
                        (Ok(Frame::Stderr(_)), _) => {
                            rec_data!(Stream::Err, data);
                            hub.publish(Shown::Error(data.clone()));
                        }
                        (_, Some(Ok(Outcome::Exited(code)))) => {
                            rec!(Event::Exit(*code));
                            hub.publish(Shown::Exit(*code));
                        }
                        (_, Some(Ok(Outcome::Failed(m)))) => rec!(Event::Marker(format!("failed: {m}"))),
                        (_, Some(Err(why))) => rec!(Event::Marker(format!("the command's status could not be read: {why}"))),
                        // Control frames that show nothing.
                        (Ok(Frame::Empty(_) | Frame::Close(_)), _) => {}
                        // Anything else is relayed as it came; the recording says it passed.
                        (Ok(other), None) => rec!(Event::Marker(relayed_as_is(&other))),
                        (Err(e), _) => rec!(Event::Marker(format!(
                            "a message from the API server that is not an exec frame was relayed as is: {e}"
                        ))),
                    }
                    if send!(client_tx, Message::Binary(data)).is_err() {
                        let _ = tokio::time::timeout(CLOSING_GRACE, pod_tx.close()).await;
                        return End::ClientGone;
                    }
                    client_traffic = tokio::time::Instant::now();
                    if let Some(outcome) = status {
                        let _ = pod_tx.close().await;
                        close_gracefully(&mut client_tx, &mut client_rx, None).await;
                        return match outcome {
                            Ok(outcome) => End::Command(outcome),
                            Err(why) => End::PodGone(format!("its status could not be read: {why}")),
                        };
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    let _ = client_tx.close().await;
                    return End::PodGone("the pod's stream closed".into());
                }
                Some(Ok(Message::Text(t))) => {
                    // The exec protocol is binary: nothing to relay, but the recording says so.
                    rec!(Event::Marker(format!(
                        "a text message from the API server was not relayed: the exec protocol \
                         carries binary messages only (it sent {})",
                        excerpt(t.as_bytes())
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = client_tx.close().await;
                    return End::PodGone(pod_leg_error(&e));
                }
            }},
            m = async {
                if !paused && let Some(m) = held.pop_front() {
                    held_bytes -= m.len();
                    return Some(Ok(m));
                }
                client_rx.next().await
            }, if !paused || held_bytes < moderation::HOLD_BYTES => { client_traffic = tokio::time::Instant::now(); match m {
                Some(Ok(Message::Binary(data))) => {
                    if paused && matches!(frames::parse(&data, frames::MAX_CLIENT_FRAME), Ok(Frame::Stdin(_) | Frame::Close(0))) {
                        held_bytes += data.len();
                        held.push_back(Message::Binary(data));
                        continue;
                    }
                    let forward = match frames::parse(&data, frames::MAX_CLIENT_FRAME) {
                        Ok(Frame::Stdin(_)) if stdin_allowed => {
                            rec_data!(Stream::In, data);
                            true
                        }
                        Ok(Frame::Close(0)) if stdin_allowed => {
                            rec!(Event::Marker("stdin closed".into()));
                            true
                        }
                        Ok(Frame::Resize(doc)) if tty => match frames::parse_resize(doc) {
                            Ok(size) => {
                                rec!(Event::Resize { cols: size.cols, rows: size.rows });
                                hub.publish(Shown::Resize { cols: size.cols, rows: size.rows });
                                true
                            }
                            Err(_) => {
                                if let Some(note) = dropped_frame_marker(&Frame::Resize(doc), tty, stdin_allowed) {
                                    rec!(Event::Marker(note));
                                }
                                false
                            }
                        },
                        // Not forwarded, and the session goes on; the recording says so.
                        Ok(frame @ (Frame::Empty(_) | Frame::Resize(_) | Frame::Stdin(_) | Frame::Close(_))) => {
                            if let Some(note) = dropped_frame_marker(&frame, tty, stdin_allowed) {
                                tracing::debug!(%note, "a client frame was not forwarded");
                                rec!(Event::Marker(note));
                            }
                            false
                        }
                        Ok(other) => {
                            refuse_client!(CloseCode::Policy, format!("a client may not send {other:?}"));
                        }
                        Err(e @ frames::FrameError::TooLarge { .. }) => {
                            refuse_client!(CloseCode::Size, e.to_string());
                        }
                        Err(e) => {
                            refuse_client!(CloseCode::Protocol, e.to_string());
                        }
                    };
                    if forward {
                        idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                    }
                    if forward {
                        if send!(pod_tx, Message::Binary(data)).is_err() {
                            return End::PodGone("the pod's stream closed".into());
                        }
                        pod_traffic = tokio::time::Instant::now();
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    // Not forwarded (the exec protocol is binary), and the session goes on; the
                    // recording says so, as for every other client frame that is not forwarded.
                    let note = text_message_marker(t.as_bytes());
                    tracing::debug!(%note, "a client frame was not forwarded");
                    rec!(Event::Marker(note));
                }
                Some(Ok(Message::Close(_))) | None => {
                    let _ = pod_tx.close().await;
                    return End::ClientGone;
                }
                Some(Err(e)) => match client_leg_error(e) {
                    None => {
                        let _ = pod_tx.close().await;
                        return End::ClientGone;
                    }
                    Some((code, why)) => refuse_client!(code, why),
                },
                // Pings and pongs (answered by the library) carry nothing to record.
                Some(Ok(_)) => {}
            }},
            changed = moderators.changed(), if !moderators_gone => {
                let Some((rule, announcer)) = moderation else { continue };
                if changed.is_err() {
                    moderators_gone = true;
                    continue;
                }
                let watching = *moderators.borrow_and_update();
                let required = moderation::required(rule);
                if watching < required && !paused {
                    let notice = moderation::left_notice(rule, watching);
                    rec!(Event::Marker(format!("moderation: {notice}")));
                    hub.publish(Shown::Notice(notice.clone()));
                    if rule.on_moderator_leave == aexec_crds::OnModeratorLeave::Terminate {
                        announcer.say(ModerationState::Moderated, watching, required, Some(("ModeratorsLeft", notice.clone())));
                        end_with_notice!(
                            End::Limit(format!("its moderators left ({watching} of {required} watching)")),
                            notice
                        );
                    }
                    paused = true;
                    pause_deadline.as_mut().reset(tokio::time::Instant::now() + moderation::timeout(rule));
                    announcer.say(ModerationState::Paused, watching, required, Some(("ModerationPaused", notice.clone())));
                    if send!(client_tx, Message::Text(moderation::notice_message(&notice).into())).is_err() {
                        let _ = pod_tx.close().await;
                        return End::ClientGone;
                    }
                } else if watching >= required && paused {
                    paused = false;
                    pause_deadline.as_mut().reset(never);
                    let notice = moderation::resumed_notice(watching, required);
                    rec!(Event::Marker(format!("moderation: {notice}")));
                    hub.publish(Shown::Notice(notice.clone()));
                    announcer.say(ModerationState::Moderated, watching, required, Some(("ModerationResumed", notice.clone())));
                    if send!(client_tx, Message::Text(moderation::notice_message(&notice).into())).is_err() {
                        let _ = pod_tx.close().await;
                        return End::ClientGone;
                    }
                } else {
                    let state = if paused { ModerationState::Paused } else { ModerationState::Moderated };
                    announcer.say(state, watching, required, None);
                }
            }
            () = &mut pause_deadline, if paused => {
                let why = moderation.map_or_else(String::new, |(rule, _)| moderation::timed_out(rule, true));
                end_with_notice!(End::Limit(why.clone()), format!("session ended: {why}"));
            }
            // A watcher joined or left: the recording says so where it happened.
            () = hub.noted() => {
                for note in hub.take_notes() {
                    rec!(Event::Marker(note));
                }
            }
            _ = ping.tick() => {
                if pod_traffic.elapsed() >= PING_AFTER {
                    let _ = send!(pod_tx, Message::Ping(Vec::new().into()));
                    pod_traffic = tokio::time::Instant::now();
                }
                if client_traffic.elapsed() >= PING_AFTER {
                    let _ = send!(client_tx, Message::Ping(Vec::new().into()));
                    client_traffic = tokio::time::Instant::now();
                }
            }
        }
    }
}

/// `PUT .../terminate`: ends an Active session relayed by this replica. RBAC decided who may
/// (the requester's and approvers' roles include it); the session must be Active.
pub async fn terminate(
    state: &AppState,
    caller: &Caller,
    namespace: &str,
    name: &str,
) -> Result<ExecSession, StatusError> {
    let session = get_session(&state.client, namespace, name).await?;
    let st = session.status.clone().unwrap_or_default();
    if st.phase != Some(Phase::Active) {
        return Err(status_error(
            409,
            "Conflict",
            format!(
                "the session is {}; only an Active session can be terminated (the requester withdraws a pending one: kubectl aexec withdraw NAME)",
                st.phase.unwrap_or_default()
            ),
        ));
    }
    let by = &caller.user.username;
    let uid = session.metadata.uid.clone().unwrap_or_default();
    match state.sessions.terminate(namespace, name, &uid, by) {
        Termination::Stopping => {
            info!(user = %by, %namespace, session = %name, "terminate requested");
            Ok(session)
        }
        Termination::AlreadyEnding => Err(status_error(
            409,
            "Conflict",
            "the session is already ending (its command exited, or it was stopped a moment \
             ago); its final phase is being written",
        )),
        Termination::NotHere => match st.broker.as_deref() {
            Some(holder) if holder != state.instance => Err(status_error(
                409,
                "Conflict",
                format!(
                    "the session is relayed by operator replica {holder}, and this request \
                     reached replica {}, which cannot end it; try again (the API server picks a \
                     replica for each request)",
                    state.instance
                ),
            )),
            // The status names this replica (or nobody) yet no relay runs here: the claim
            // outlived its relay. Nothing else would end it before its maximum duration, so
            // this request does.
            _ => end_unrelayed(state, session, by).await,
        },
    }
}

/// Ends a session that is Active with no relay behind it on this replica: its recording is
/// sealed from what reached the store (marked interrupted) and it is Terminated by `by`. The
/// write carries the resourceVersion read, so a relay that ended it meanwhile wins, and the
/// caller hears the phase it wrote.
async fn end_unrelayed(
    state: &AppState,
    session: ExecSession,
    by: &str,
) -> Result<ExecSession, StatusError> {
    let (namespace, name) = (
        session.metadata.namespace.clone().unwrap_or_default(),
        session.metadata.name.clone().unwrap_or_default(),
    );
    let holder = session
        .status
        .as_ref()
        .and_then(|s| s.broker.clone())
        .unwrap_or_else(|| state.instance.clone());
    let lost = format!("no relay of it was running on operator replica {holder}");
    warn!(%namespace, session = %name, "terminate of a session with no relay: {lost}");
    let recording =
        match crate::record::recorder::seal_interrupted(&state.recordings, &session, &lost).await {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "sealing the recording of an unrelayed session");
                None
            }
        };
    let mut ended = session.clone();
    let mut st = ended.status.clone().unwrap_or_default();
    st.phase = Some(Phase::Terminated);
    st.message = Some(format!("terminated by {by} ({lost})"));
    st.end_time = Some(now_time());
    if recording.is_some() {
        st.recording = recording;
    }
    ended.status = Some(st);
    let api: Api<ExecSession> = Api::namespaced(state.client.clone(), &namespace);
    match api
        .replace_status(&name, &PostParams::default(), &ended)
        .await
    {
        Ok(s) => {
            info!(user = %by, %namespace, session = %name, "terminated a session with no relay");
            Ok(s)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let now = get_session(&state.client, &namespace, &name).await?;
            Err(status_error(
                409,
                "Conflict",
                format!("the session ended meanwhile: it is {}", now.phase()),
            ))
        }
        Err(e) => Err(status_error(
            500,
            "InternalError",
            format!("writing the end of the session: {e}"),
        )),
    }
}

/// Watches the Active sessions (`status.phase=Active`) until `stop`: one this replica relays
/// that gets a deletion timestamp (an administrator deleted it; the controller's finalizer
/// holds the object) is ended at once, its recording sealed and marked as ended by deletion.
pub async fn watch_deletions(
    client: Client,
    sessions: Sessions,
    instance: String,
    stop: impl std::future::Future<Output = ()>,
) {
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};
    let api: Api<ExecSession> = Api::all(client);
    let stream = watcher(
        api,
        watcher::Config::default().fields("status.phase=Active"),
    )
    .default_backoff()
    .applied_objects();
    futures::pin_mut!(stream);
    tokio::pin!(stop);
    loop {
        let s = tokio::select! {
            () = &mut stop => return,
            s = stream.next() => s,
        };
        match s {
            Some(Ok(s)) => {
                let ours = s.status.as_ref().and_then(|st| st.broker.as_deref())
                    == Some(instance.as_str());
                if ours && s.metadata.deletion_timestamp.is_some() {
                    let (ns, name, uid) = (
                        s.metadata.namespace.clone().unwrap_or_default(),
                        s.metadata.name.clone().unwrap_or_default(),
                        s.metadata.uid.clone().unwrap_or_default(),
                    );
                    info!(namespace = %ns, session = %name, "the session was deleted while active: ending it");
                    sessions.deleted(&ns, &name, &uid);
                }
            }
            Some(Err(e)) => warn!(error = %e, "watching active sessions for deletions"),
            None => return,
        }
    }
}

/// Writes the session's final phase, retrying on conflicts.
async fn finish(
    client: &Client,
    namespace: &str,
    name: &str,
    end: &End,
    recorded: crate::record::recorder::Finished,
) {
    let (phase, mut message, exit_code) = final_state(end);
    if let Some(why) = &recorded.failure
        && !matches!(end, End::RecordingFailed(_))
    {
        message.push_str(&format!("; the recording stopped early: {why}"));
    }
    let recording = recorded.status;
    let api: Api<ExecSession> = Api::namespaced(client.clone(), namespace);
    // The API server may be away (a restart, an upgrade): the end is written once it is back,
    // for up to FINAL_STATUS_PATIENCE; a shutdown bounds this by its own deadline.
    let give_up = tokio::time::Instant::now() + FINAL_STATUS_PATIENCE;
    let mut backoff = Duration::from_millis(200);
    let mut conflicts = 0;
    while conflicts < 10 && tokio::time::Instant::now() < give_up {
        let mut s = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "reading the session to write its end; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut st: ExecSessionStatus = s.status.clone().unwrap_or_default();
        st.phase = Some(phase);
        st.message = Some(message.clone());
        st.exit_code = exit_code;
        st.end_time = Some(now_time());
        if recording.is_some() {
            st.recording = recording.clone();
        }
        s.status = Some(st);
        match api.replace_status(name, &PostParams::default(), &s).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => conflicts += 1,
            Err(e) => {
                warn!(error = %e, "writing the final status; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    error!(?end, "the session's end could not be written to its status");
}

/// How long a relay that ended keeps trying to write the session's end.
const FINAL_STATUS_PATIENCE: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;
    use aexec_crds::UserRef;
    use serde_json::json;

    fn session(phase: &str, deadline: &str) -> ExecSession {
        serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"pod": "web", "command": ["sh"], "requester": {"username": "alice"}},
            "status": {"phase": phase, "deadline": deadline, "podUID": "u1"}
        }))
        .expect("session")
    }

    fn caller(user: &str) -> Caller {
        Caller {
            user: UserRef {
                username: user.into(),
                groups: vec![],
            },
            uid: None,
            extra: Default::default(),
        }
    }

    fn now() -> chrono::DateTime<Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    #[tokio::test]
    async fn shutdown_lets_sessions_end_within_the_grace_then_stops_the_rest() {
        let sessions = Sessions::default();
        // One session ends by itself within the grace; one would run on.
        let quick = sessions.register("ns", "quick", "u1").0;
        let slow = sessions.register("ns", "slow", "u2").0;
        let quick_task = sessions.tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(quick);
            "ended by itself".to_owned()
        });
        let slow_task = sessions.tasks.spawn(async move {
            match slow.await {
                Ok(Stop::Shutdown) => "stopped for the shutdown".to_owned(),
                other => format!("{other:?}"),
            }
        });
        assert_eq!(sessions.active(), 2);
        let started = tokio::time::Instant::now();
        sessions
            .shut_down(Duration::from_millis(300), Duration::from_secs(5))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(sessions.is_closed());
        assert_eq!(sessions.active(), 0);
        assert_eq!(quick_task.await.expect("task"), "ended by itself");
        assert_eq!(slow_task.await.expect("task"), "stopped for the shutdown");
        // And a shutdown with nothing running returns at once.
        let idle = Sessions::default();
        let started = tokio::time::Instant::now();
        idle.shut_down(Duration::from_secs(30), Duration::from_secs(30))
            .await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn terminate_finds_a_session_from_its_claim_until_its_end_is_written() {
        let sessions = Sessions::default();
        assert_eq!(
            sessions.terminate("ns", "s", "u1", "bob"),
            Termination::NotHere
        );
        let mut stop = sessions.register("ns", "s", "u1").0;
        // Another session under the same name (deleted and created again) is another one.
        assert_eq!(
            sessions.terminate("ns", "s", "u0", "bob"),
            Termination::NotHere
        );
        assert_eq!(
            sessions.terminate("ns", "s", "u1", "bob"),
            Termination::Stopping
        );
        match stop.try_recv() {
            Ok(Stop::TerminatedBy(by)) => assert_eq!(by, "bob"),
            other => panic!("expected terminated by bob, got {other:?}"),
        }
        // Once stopped (or once the relay returned), until its end is written.
        assert_eq!(
            sessions.terminate("ns", "s", "u1", "dave"),
            Termination::AlreadyEnding
        );
        let returned = sessions.register("ns", "t", "u2").0;
        drop(returned);
        assert_eq!(
            sessions.terminate("ns", "t", "u2", "dave"),
            Termination::AlreadyEnding
        );
        sessions.remove("ns", "s", "u1");
        assert_eq!(
            sessions.terminate("ns", "s", "u1", "dave"),
            Termination::NotHere
        );
    }

    #[test]
    fn a_failure_before_the_relay_fails_the_session_with_the_reason() {
        let (phase, message, code) = final_state(&End::NotStarted(
            "could not open the exec stream to the pod: 500".into(),
        ));
        assert_eq!(phase, Phase::Failed);
        assert_eq!(
            message,
            "the session could not start: could not open the exec stream to the pod: 500; \
             request a new session"
        );
        assert_eq!(code, None);
    }

    #[test]
    fn client_leg_errors_say_whose_fault_and_why() {
        // A message over the bound names it, as a frame over it does, and closes with 1009.
        let (code, why) = client_leg_error(WsError::Capacity(CapacityError::MessageTooLong {
            size: 16 << 20,
            max_size: 2 << 20,
        }))
        .expect("a client fault");
        assert_eq!(code, CloseCode::Size);
        assert_eq!(
            why,
            frames::FrameError::TooLarge {
                len: 16 << 20,
                max: frames::MAX_CLIENT_FRAME
            }
            .to_string()
        );
        assert_eq!(
            why,
            "frame of 16777216 bytes exceeds the limit of 1048576 bytes"
        );
        let (code, _) = client_leg_error(WsError::Utf8("bad".into())).expect("fault");
        assert_eq!(code, CloseCode::Invalid);
        // A connection that closed or broke is the client going away, not a fault.
        assert_eq!(client_leg_error(WsError::ConnectionClosed), None);
        assert_eq!(
            client_leg_error(WsError::Io(std::io::ErrorKind::ConnectionReset.into())),
            None
        );
        assert_eq!(
            client_leg_error(WsError::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            None
        );
        let (code, why) = client_leg_error(WsError::Protocol(ProtocolError::NonZeroReservedBits))
            .expect("a fault");
        assert_eq!(code, CloseCode::Protocol);
        assert!(why.starts_with("invalid WebSocket"), "{why}");
        assert!(
            pod_leg_error(&WsError::Io(std::io::ErrorKind::ConnectionReset.into()))
                .starts_with("the connection to the API server that carried it broke")
        );
        assert!(
            pod_leg_error(&WsError::Utf8("bad".into()))
                .starts_with("the API server sent an invalid exec stream")
        );
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let f = close_frame(CloseCode::Size, &long);
        assert!(f.reason.len() <= MAX_CLOSE_REASON);
        assert_eq!(f.reason.as_str(), "é".repeat(61));
        assert_eq!(
            close_frame(CloseCode::Normal, "short").reason.as_str(),
            "short"
        );
    }

    #[test]
    fn frames_relayed_as_is_are_noted_with_their_channel_and_size() {
        assert_eq!(
            relayed_as_is(&Frame::Stdin(b"abc")),
            "a frame from the API server on the stdin (0) channel (3 bytes) was relayed as is"
        );
        assert!(relayed_as_is(&Frame::Resize(b"{}")).contains("resize (4)"));
    }

    #[test]
    fn a_text_message_is_noted_for_the_recording() {
        let note = text_message_marker(b"{\"Width\":80}");
        assert_eq!(
            note,
            "a text message from the client was not forwarded: the exec protocol carries binary \
             messages only (it sent \"{\\\"Width\\\":80}\")"
        );
    }

    #[test]
    fn the_longest_command_allowed_fits_the_exec_request_with_room_to_spare() {
        let exec = |command: Vec<String>| {
            let ap = AttachParams {
                container: Some("c".repeat(63)),
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
                ..Default::default()
            };
            let ns = "n".repeat(63);
            kube::core::Request::new(format!("/api/v1/namespaces/{ns}/pods"))
                .exec(&"p".repeat(253), command, &ap)
                .map(|r| r.uri().to_string().len())
        };
        // Arguments that each take 4009 bytes ('/' is sent as %2F), then one for the rest.
        let mut command = vec!["/".repeat(1333) + "a"; 15];
        let rest = aexec_crds::MAX_COMMAND_URL_BYTES - 15 * 4009 - 9;
        command.push("a".repeat(rest));
        assert_eq!(
            aexec_crds::command_url_bytes(&command),
            aexec_crds::MAX_COMMAND_URL_BYTES
        );
        let len = exec(command.clone()).expect("the exec request builds");
        // The longest names and flags take 456 bytes (kube puts a `&` after the `?` too); the
        // rest is room for a path prefix of the API server's URL.
        assert_eq!(len, aexec_crds::MAX_COMMAND_URL_BYTES + 456);
        assert!(len + 1000 < 65_534);
        // The bound is real: the client refuses a request line past 65534 bytes.
        command.push("a".repeat(1600));
        let e = exec(command).expect_err("too long for the client");
        assert!(e.to_string().contains("uri too long"), "{e}");
    }

    #[tokio::test]
    async fn an_exec_request_that_cannot_be_built_is_a_start_failure_that_says_why() {
        // The issue's session: 18 arguments of 4000 bytes, approved before the schema's rule.
        let mut s = session("Active", "2026-01-01T00:10:00Z");
        s.spec.command = vec!["a".repeat(4000); 18];
        let client = Client::try_from(kube::Config::new(
            "https://127.0.0.1:9".parse().expect("url"),
        ))
        .expect("client");
        let failure = open_pod_leg(&client, "ns", &s)
            .await
            .expect_err("too long to build");
        assert_eq!((failure.code, failure.reason), (500, "InternalError"));
        assert!(
            failure
                .message
                .starts_with("the command is too long to reach the pod: it takes 72162 bytes"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn a_shutdown_fails_the_session_and_says_so() {
        let (phase, message, code) = final_state(&End::Shutdown("aexec-operator-1".into()));
        assert_eq!(phase, Phase::Failed);
        assert!(
            message.contains("operator replica aexec-operator-1 shut down"),
            "{message}"
        );
        assert_eq!(code, None);
    }

    #[test]
    fn only_the_requester_attaches_an_approved_unexpired_session() {
        let ok = session("Approved", "2026-01-01T00:10:00Z");
        assert_eq!(check_attach(&ok, &caller("alice"), now()), Ok(()));
        let e = check_attach(&ok, &caller("bob"), now()).expect_err("not the requester");
        assert_eq!(e.code, 403);
        assert!(
            e.message.contains("only the requester (alice) may attach"),
            "{}",
            e.message
        );
        let e = check_attach(
            &session("Active", "2026-01-01T00:10:00Z"),
            &caller("alice"),
            now(),
        )
        .expect_err("twice");
        assert!(e.message.contains("attached only once"));
        let e = check_attach(
            &session("Pending", "2026-01-01T00:10:00Z"),
            &caller("alice"),
            now(),
        )
        .expect_err("pending");
        assert!(e.message.contains("the session is Pending"));
        let e = check_attach(
            &session("Approved", "2026-01-01T00:00:00Z"),
            &caller("alice"),
            now(),
        )
        .expect_err("expired at the deadline");
        assert!(e.message.contains("expired"));
    }

    #[test]
    fn frames_not_forwarded_are_noted_for_the_recording() {
        let note = |f: Frame<'_>, tty, stdin| dropped_frame_marker(&f, tty, stdin);
        // A valid resize with a tty and allowed input are forwarded, not noted.
        assert_eq!(
            note(Frame::Resize(br#"{"Width":80,"Height":24}"#), true, true),
            None
        );
        assert_eq!(note(Frame::Stdin(b"ls\n"), true, true), None);
        assert_eq!(note(Frame::Close(0), false, true), None);
        assert_eq!(note(Frame::Empty(0), true, true), None);

        let bad = note(Frame::Resize(br#"{"Width":"wide"}"#), true, false).expect("noted");
        assert!(
            bad.starts_with("a resize from the client was not applied: invalid resize")
                && bad.ends_with(r#"(it sent "{\"Width\":\"wide\"}")"#),
            "{bad}"
        );
        let zero = note(Frame::Resize(br#"{"Width":0,"Height":0}"#), true, false).expect("noted");
        assert!(zero.contains("0x0"), "{zero}");
        let huge = vec![b'x'; 70_000];
        let long = note(Frame::Resize(&huge), true, false).expect("noted");
        assert!(
            long.contains("too large") && long.contains("and 69872 more bytes"),
            "{long}"
        );
        assert!(long.len() < 400, "bounded: {long}");
        let no_tty = note(Frame::Resize(br#"{"Width":80,"Height":24}"#), false, true);
        assert!(no_tty.expect("noted").contains("has no terminal"));
        let no_stdin = note(Frame::Stdin(&[0xff; 10]), false, false).expect("noted");
        assert_eq!(
            no_stdin,
            "10 bytes of input from the client were not forwarded: the session has no stdin"
        );
        assert!(note(Frame::Close(0), false, false).is_some());
        assert!(note(Frame::Close(1), false, true).is_some());
    }

    #[tokio::test]
    async fn a_deleted_session_stops_whether_its_relay_started_or_not() {
        let sessions = Sessions::default();
        let running = sessions.register("ns", "running", "u1").0;
        sessions.deleted("ns", "running", "u1");
        assert!(matches!(running.await, Ok(Stop::Deleted)));
        // Deleted between the attach claim and the start of the relay: stops on registering.
        sessions.deleted("ns", "starting", "u2");
        let starting = sessions.register("ns", "starting", "u2").0;
        assert!(matches!(starting.await, Ok(Stop::Deleted)));
        // Only once: a later session of the same name is not affected.
        let mut again = sessions.register("ns", "starting", "u2").0;
        assert!(again.try_recv().is_err());
        // Nor is another session created again under the name.
        sessions.deleted("ns", "other", "old");
        let mut other = sessions.register("ns", "other", "new").0;
        assert!(other.try_recv().is_err());
        let (phase, message, _) = final_state(&End::Deleted);
        assert_eq!(phase, Phase::Terminated);
        assert!(message.contains("marked as ended by deletion"), "{message}");
    }

    #[test]
    fn final_phases() {
        assert_eq!(
            final_state(&End::Command(Outcome::Exited(0))).0,
            Phase::Succeeded
        );
        assert_eq!(
            final_state(&End::Command(Outcome::Exited(2))),
            (
                Phase::Failed,
                "the command exited with code 2".into(),
                Some(2)
            )
        );
        assert_eq!(
            final_state(&End::Command(Outcome::Failed("no such container".into()))).0,
            Phase::Failed
        );
        assert_eq!(final_state(&End::ClientGone).0, Phase::Terminated);
        assert_eq!(final_state(&End::PodGone("eof".into())).0, Phase::Failed);
        assert_eq!(
            final_state(&End::ClientError("bad".into())).0,
            Phase::Terminated
        );
    }

    #[test]
    fn protocol_negotiation_prefers_v5() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"),
        );
        assert_eq!(choose_protocol(&h), Some(frames::V5));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        assert_eq!(choose_protocol(&h), Some(frames::V4));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("channel.k8s.io"),
        );
        assert_eq!(choose_protocol(&h), None);
    }
}
