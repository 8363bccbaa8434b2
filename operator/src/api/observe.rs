//! `GET .../execsessions/{name}/observe`: watching a session live (`docs/watch.md`).
//!
//! The watcher gets a hello (text, JSON), the terminal's size, the last output the session
//! showed (the hub's backlog), then what it shows, in the exec stream's own channel framing
//! (1 stdout, 2 stderr, 3 the exit status, 4 resize), with text notices (`skipped`). The only
//! things a watcher may send are two text messages, `{"type":"leave"}` and
//! `{"type":"terminate"}`; nothing a watcher sends reaches the pod: this module holds no path to
//! it, only the hub's receiving end.

use std::time::Duration;

use aexec_crds::{ExecSession, Phase};
use axum::{
    extract::Request,
    http::header,
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
};
use serde_json::json;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    },
};
use tracing::{Instrument, info, info_span, warn};

use crate::{
    api::peer::{Forward, PeerWs},
    api::server::{AppState, Caller, StatusError, get_session, may, status_error},
    broker::moderation::{self, Control},
    broker::watch::{Delivery, Hub, JoinError, Mode, Shown, Start, Subscription, Watcher},
};

/// Output is sent to a watcher in messages of at most this many bytes (the backlog).
const CHUNK: usize = 32 << 10;
/// A watcher that reads nothing for this long is dropped: its connection is not held forever.
const SEND_PATIENCE: Duration = Duration::from_secs(60);

/// The watcher's mode, from `?mode=observer|moderator` (observer when absent).
pub fn parse_mode(query: Option<&str>) -> Result<Mode, StatusError> {
    moderation::parse_mode(query).map_err(|m| status_error(400, "BadRequest", m))
}

/// Whether `caller` may watch `session` now as `mode`. RBAC (`get` on `execsessions/observe`)
/// has already said yes; these are the business rules.
pub fn check_watch(session: &ExecSession, caller: &Caller, mode: Mode) -> Result<(), StatusError> {
    let name = session.metadata.name.as_deref().unwrap_or_default();
    let ns = session.metadata.namespace.as_deref().unwrap_or_default();
    let requester = &session.spec.requester.username;
    match session.phase() {
        Phase::Active => {}
        phase @ (Phase::Pending | Phase::Approved) => {
            return Err(status_error(
                409,
                "Conflict",
                format!(
                    "session {name} has not started yet (it is {phase}); watch it once {requester} \
                     attached (kubectl aexec watch waits for that)"
                ),
            ));
        }
        phase => {
            return Err(status_error(
                409,
                "Conflict",
                format!(
                    "session {name} has ended (it is {phase}); its recording shows what happened: \
                     kubectl aexec replay {name} -n {ns}"
                ),
            ));
        }
    }
    if mode == Mode::Moderator {
        if caller.user.username == *requester {
            return Err(status_error(
                403,
                "Forbidden",
                format!(
                    "you requested session {name}: you cannot moderate it; someone else must \
                     (you may watch it as an observer)"
                ),
            ));
        }
        let rule = session
            .status
            .as_ref()
            .and_then(|s| s.limits.as_ref())
            .and_then(|l| l.moderation.as_ref());
        let Some(rule) = rule else {
            return Err(status_error(
                400,
                "BadRequest",
                format!(
                    "session {name} needs no moderator: its policy has no moderation; watch it \
                     as an observer (without --moderate)"
                ),
            ));
        };
        if !moderation::eligible(rule, &caller.user.username, &caller.user.groups) {
            return Err(status_error(
                403,
                "Forbidden",
                format!(
                    "you are not a moderator of session {name}: its policy lets {} moderate; \
                     you may watch it as an observer (without --moderate)",
                    moderation::who_may(rule)
                ),
            ));
        }
    }
    Ok(())
}

/// The message a watcher gets first.
pub fn hello(session: &ExecSession, watcher: &Watcher, start: &Start) -> serde_json::Value {
    let st = session.status.clone().unwrap_or_default();
    json!({
        "type": "hello",
        "session": session.metadata.name,
        "namespace": session.metadata.namespace,
        "pod": session.spec.pod,
        "container": st.container.or(session.spec.container.clone()),
        "command": session.spec.command,
        "tty": session.spec.tty,
        "requester": session.spec.requester.username,
        "mode": watcher.mode,
        "size": start.size.map(|(cols, rows)| json!({"cols": cols, "rows": rows})),
        "backlog": start.backlog.len(),
    })
}

/// One delivery as the watcher receives it.
pub fn message(d: &Delivery) -> Message {
    match d {
        // The relay's own frame, sent on as it is.
        Delivery::Shown(Shown::Output(f) | Shown::Error(f)) => Message::Binary(f.clone()),
        Delivery::Shown(Shown::Resize { cols, rows }) => Message::Binary(
            framed(
                4,
                format!("{{\"Width\":{cols},\"Height\":{rows}}}").as_bytes(),
            )
            .into(),
        ),
        Delivery::Shown(Shown::Exit(code)) => {
            Message::Binary(framed(3, exit_status(*code).to_string().as_bytes()).into())
        }
        Delivery::Shown(Shown::Notice(text)) => {
            Message::Text(moderation::notice_message(text).into())
        }
        Delivery::Skipped { bytes } => Message::Text(
            json!({"type": "skipped", "bytes": bytes})
                .to_string()
                .into(),
        ),
    }
}

fn framed(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 1);
    f.push(channel);
    f.extend_from_slice(payload);
    f
}

/// The exit status as the exec stream's channel 3 says it.
fn exit_status(code: i32) -> serde_json::Value {
    if code == 0 {
        json!({"status": "Success"})
    } else {
        json!({"status": "Failure", "reason": "NonZeroExitCode",
               "message": format!("command terminated with non-zero exit code {code}"),
               "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    }
}

/// What serving a watcher comes to, once the session is read.
enum Plan {
    /// The session is relayed here: the watcher joined its hub.
    Here(
        Box<(
            ExecSession,
            std::sync::Arc<Hub>,
            Watcher,
            Start,
            Subscription,
        )>,
    ),
    /// Another replica relays it: the watch is forwarded to it.
    Forward { broker: String, address: String },
}

/// Serves a watcher of a session relayed here, or forwards the watch to the replica that
/// relays it (`forwarded`: this request is itself a forward, and is never forwarded again).
pub async fn observe(
    state: AppState,
    caller: Caller,
    namespace: String,
    name: String,
    forwarded: bool,
    mut req: Request,
) -> Response {
    // What the request asks, read before any wait (a request is not shared across threads).
    let asked = (|| {
        let mode = parse_mode(req.uri().query())?;
        let headers = req.headers();
        let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        let upgrade = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let (Some(key), true) = (key, upgrade) else {
            return Err(status_error(
                400,
                "BadRequest",
                "observe is a WebSocket: upgrade the connection (kubectl aexec watch does)",
            ));
        };
        let protocol = crate::broker::attach::choose_protocol(headers).ok_or_else(|| {
            status_error(
                400,
                "BadRequest",
                format!(
                    "offer the {} WebSocket subprotocol",
                    crate::broker::frames::V5
                ),
            )
        })?;
        Ok((mode, key, protocol))
    })();
    let (mode, key, protocol) = match asked {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let prepared = async {
        let session = get_session(&state.client, &namespace, &name).await?;
        check_watch(&session, &caller, mode)?;
        let uid = session.metadata.uid.clone().unwrap_or_default();
        let Some(hub) = state.sessions.hub(&namespace, &name, &uid) else {
            let st = session.status.clone().unwrap_or_default();
            return match (st.broker, st.broker_address) {
                (Some(broker), Some(address)) if broker != state.instance && !forwarded => {
                    Ok(Plan::Forward { broker, address })
                }
                // 409 as for `terminate` on the wrong replica: a 503 would read as "the operator
                // is down" to clients of the aggregated API.
                (Some(b), None) if b != state.instance => Err(status_error(
                    409,
                    "Conflict",
                    format!(
                        "session {name} is relayed by operator replica {b}, which gave no address \
                         for the other replicas to forward a watch to (it runs without \
                         --advertise-address), and this request reached replica {}: try again \
                         (the API server picks a replica for each request)",
                        state.instance
                    ),
                )),
                (Some(b), Some(_)) if b != state.instance => Err(status_error(
                    409,
                    "Conflict",
                    format!(
                        "session {name} is relayed by operator replica {b}, but this watch was \
                         forwarded to replica {}, which does not relay it (the session moved \
                         or is ending): try again",
                        state.instance
                    ),
                )),
                _ => Err(status_error(
                    409,
                    "Conflict",
                    format!("session {name} is ending; replay it: kubectl aexec replay {name} -n {namespace}"),
                )),
            };
        };
        let watcher = Watcher {
            user: caller.user.username.clone(),
            groups: caller.user.groups.clone(),
            mode,
        };
        let (start, sub) = hub.join(watcher.clone()).map_err(|e| match e {
            JoinError::Full(_) => status_error(429, "TooManyRequests", e.to_string()),
            JoinError::Ended => status_error(
                409,
                "Conflict",
                format!("session {name} has ended; replay it: kubectl aexec replay {name} -n {namespace}"),
            ),
        })?;
        Ok(Plan::Here(Box::new((session, hub, watcher, start, sub))))
    }
    .await;
    let (session, hub, watcher, start, sub) = match prepared {
        Ok(Plan::Here(p)) => *p,
        Ok(Plan::Forward { broker, address }) => {
            return forward(&state, &broker, &address, protocol, &key, req).await;
        }
        Err(e) => return e.into_response(),
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let span =
        info_span!("watch", namespace = %namespace, session = %name, watcher = %watcher.user);
    tokio::spawn(
        async move {
            announce(&state, &session, &hub, &watcher, true).await;
            match watcher_ws(on_upgrade).await {
                Some(ws) => {
                    info!(mode = ?watcher.mode, "watching");
                    serve(ws, &state, &caller, &session, &watcher, start, sub).await;
                }
                // Left before the announcement of the leave, as `serve` leaves.
                None => drop(sub),
            }
            info!("stopped watching");
            announce(&state, &session, &hub, &watcher, false).await;
        }
        .instrument(span),
    );

    crate::broker::attach::switching_protocols(protocol, &accept)
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The watcher's WebSocket, once its upgrade completes (`None`, logged, if it fails).
async fn watcher_ws(on_upgrade: hyper::upgrade::OnUpgrade) -> Option<Ws> {
    match on_upgrade.await {
        Ok(upgraded) => Some(
            WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(watcher_ws_config()),
            )
            .await,
        ),
        Err(e) => {
            warn!(error = %e, "the watcher's upgrade failed");
            None
        }
    }
}

/// The watcher's leg: a watcher sends only two short text messages, so what it sends is
/// bounded at 64 KiB (not tungstenite's 64 MiB default), and the buffers are small.
fn watcher_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(16 << 10)
        .max_write_buffer_size(4 << 20)
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10))
}

/// The leg to the broker replica of a forwarded watch: it sends what a watcher gets, frames
/// that fit a watcher's queue ([`crate::broker::watch::QUEUE_BYTES`]) and chunks of the backlog.
fn peer_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(16 << 10)
        .max_write_buffer_size(4 << 20)
        .max_message_size(Some(crate::broker::watch::QUEUE_BYTES + CHUNK))
        .max_frame_size(Some(crate::broker::watch::QUEUE_BYTES + CHUNK))
}

/// Forwards a watch to the replica that relays the session: the same path, the caller's
/// identity as the front proxy sent it, over the replicas' mutual TLS ([`crate::api::peer`]). The
/// broker decides (RBAC, business rules) as for a watch that reached it; its refusal is passed
/// on as it is. Then messages are relayed both ways, one at a time: a slow watcher here slows
/// only this connection, and the broker skips it ahead as for any slow watcher.
async fn forward(
    state: &AppState,
    broker: &str,
    address: &str,
    protocol: &'static str,
    key: &header::HeaderValue,
    mut req: Request,
) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut headers: Vec<_> = req
        .headers()
        .iter()
        .filter(|(n, _)| state.front_proxy.is_identity_header(n.as_str()))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    headers.push((
        header::SEC_WEBSOCKET_PROTOCOL,
        header::HeaderValue::from_static(protocol),
    ));
    let upstream = match state
        .peers
        .connect(address, &path, headers, peer_ws_config())
        .await
    {
        Ok((ws, _)) => ws,
        Err(Forward::Refused { code, body }) => {
            let mut resp = Response::new(axum::body::Body::from(body));
            *resp.status_mut() = axum::http::StatusCode::from_u16(code)
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            return resp;
        }
        Err(Forward::Unreachable(why)) => {
            warn!(%broker, %address, %why, "forwarding a watch failed");
            return status_error(
                503,
                "ServiceUnavailable",
                format!(
                    "this session is relayed by operator replica {broker}, and replica {} \
                     could not reach it to forward the watch ({why}): try again; if it keeps \
                     failing, the replicas cannot reach each other on the API port (a \
                     NetworkPolicy?)",
                    state.instance
                ),
            )
            .into_response();
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let span = info_span!("forwarded watch", broker = %broker);
    tokio::spawn(
        async move {
            if let Some(ws) = watcher_ws(on_upgrade).await {
                info!("forwarding");
                splice(ws, upstream).await;
                info!("forwarding ended");
            }
        }
        .instrument(span),
    );
    crate::broker::attach::switching_protocols(protocol, &accept)
}

/// Relays data and close messages between the watcher and the broker until either ends. Each
/// leg answers its own pings.
async fn splice(watcher: Ws, broker: PeerWs) {
    let (mut wtx, mut wrx) = watcher.split();
    let (mut btx, mut brx) = broker.split();
    let down = async {
        while let Some(m) = brx.next().await {
            let m = match m {
                Ok(m @ (Message::Binary(_) | Message::Text(_) | Message::Close(_))) => m,
                Ok(_) => continue,
                Err(e) => {
                    warn!(error = %e, "the broker replica's stream broke");
                    let _ = wtx
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Error,
                            reason: "the operator replica relaying the session is gone".into(),
                        })))
                        .await;
                    return;
                }
            };
            let close = matches!(m, Message::Close(_));
            match tokio::time::timeout(SEND_PATIENCE, wtx.send(m)).await {
                Ok(Ok(())) if !close => {}
                _ => return,
            }
        }
    };
    let up = async {
        while let Some(m) = wrx.next().await {
            let m = match m {
                Ok(m @ (Message::Binary(_) | Message::Text(_) | Message::Close(_))) => m,
                Ok(_) => continue,
                Err(e) => {
                    info!(error = %e, "the watcher's stream ended");
                    let _ = btx.send(Message::Close(None)).await;
                    return;
                }
            };
            let close = matches!(m, Message::Close(_));
            if btx.send(m).await.is_err() || close {
                return;
            }
        }
        let _ = btx.send(Message::Close(None)).await;
    };
    tokio::select! {
        () = down => {}
        () = up => {}
    }
}

/// Relays the hub to the watcher until the session ends or the watcher leaves.
async fn serve(
    ws: Ws,
    state: &AppState,
    caller: &Caller,
    session: &ExecSession,
    watcher: &Watcher,
    start: Start,
    mut sub: Subscription,
) {
    let (mut tx, mut rx) = ws.split();
    macro_rules! send {
        ($m:expr) => {
            match tokio::time::timeout(SEND_PATIENCE, tx.send($m)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    warn!("the watcher read nothing for {SEND_PATIENCE:?}; dropped");
                    return;
                }
            }
        };
    }
    send!(Message::Text(
        hello(session, watcher, &start).to_string().into()
    ));
    if let Some((cols, rows)) = start.size {
        send!(message(&Delivery::Shown(Shown::Resize { cols, rows })));
    }
    for chunk in start.backlog.chunks(CHUNK) {
        send!(Message::Binary(framed(1, chunk).into()));
    }
    let (ns, name) = (
        session.metadata.namespace.clone().unwrap_or_default(),
        session.metadata.name.clone().unwrap_or_default(),
    );
    let mut ignored = 0u64;
    loop {
        tokio::select! {
            d = sub.next() => match d {
                Some(d) => send!(message(&d)),
                None => {
                    let close = CloseFrame { code: CloseCode::Normal, reason: "the session ended".into() };
                    let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(Message::Close(Some(close)))).await;
                    return;
                }
            },
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => match moderation::parse_control(&t) {
                    Ok(Control::Leave) => {
                        let _ = tx.send(Message::Close(None)).await;
                        return;
                    }
                    Ok(Control::Terminate) => {
                        let notice = terminate(state, caller, watcher.mode, &ns, &name).await;
                        send!(Message::Text(notice.to_string().into()));
                    }
                    Err(e) => {
                        let notice = json!({"type": "error", "message": format!(
                            "not understood: {e}; a watcher sends {{\"type\":\"leave\"}} or {{\"type\":\"terminate\"}}")});
                        send!(Message::Text(notice.to_string().into()));
                    }
                },
                // A watcher has no input: whatever it sends is dropped here, counted.
                Some(Ok(Message::Binary(b))) => {
                    ignored += b.len() as u64;
                    tracing::debug!(bytes = ignored, "a watcher sent binary data; ignored");
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A watcher's `terminate`: allowed to a moderator (the policy made them one: ending the session
/// is part of moderating it), and to an observer with `update` on `execsessions/terminate`, as
/// the subresource itself is.
async fn terminate(
    state: &AppState,
    caller: &Caller,
    mode: Mode,
    ns: &str,
    name: &str,
) -> serde_json::Value {
    let allowed = match mode {
        Mode::Moderator => Ok(true),
        Mode::Observer => may(state, caller, ns, name, "update", "terminate").await,
    };
    match allowed {
        Ok(true) => match crate::broker::attach::terminate(state, caller, ns, name).await {
            Ok(_) => json!({"type": "terminating"}),
            Err(e) => json!({"type": "error", "message": e.message}),
        },
        Ok(false) => json!({"type": "error", "message": format!(
            "User \"{}\" cannot update resource \"execsessions/terminate\": you may watch this session, not end it; ask for the aexec-approver role",
            caller.user.username)}),
        Err(e) => json!({"type": "error", "message": e.message}),
    }
}

/// A join or a leave, in the session's status (who watched, from when to when) and as an Event.
async fn announce(
    state: &AppState,
    session: &ExecSession,
    hub: &Hub,
    watcher: &Watcher,
    joined: bool,
) {
    let (ns, name) = (
        session.metadata.namespace.clone().unwrap_or_default(),
        session.metadata.name.clone().unwrap_or_default(),
    );
    {
        // One write at a time per session, each with the whole list as it is then: a later
        // write never carries an older list.
        let _turn = hub.status_writes.lock().await;
        let patch = json!({"status": {"watchers": hub.history()}});
        let api: Api<ExecSession> = Api::namespaced(state.client.clone(), &ns);
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            warn!(error = %e, "writing the watchers into the session's status");
        }
    }
    let (reason, note) = if joined {
        (
            "WatcherJoined",
            format!("{} started watching", watcher.describe()),
        )
    } else {
        (
            "WatcherLeft",
            format!("{} stopped watching", watcher.describe()),
        )
    };
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: "Watch".into(),
        secondary: None,
    };
    if let Err(e) = state
        .recorder
        .publish(&event, &session.object_ref(&()))
        .await
    {
        warn!(error = %e, "publishing an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aexec_crds::{ExecSessionStatus, UserRef};

    fn session(phase: Phase) -> ExecSession {
        let mut s: ExecSession = serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
            "metadata": {"name": "s1", "namespace": "prod", "uid": "u1"},
            "spec": {"pod": "web", "command": ["sh"], "requester": {"username": "alice"}}
        }))
        .expect("session");
        s.status = Some(ExecSessionStatus {
            phase: Some(phase),
            ..Default::default()
        });
        s
    }

    fn caller(user: &str) -> Caller {
        Caller {
            user: UserRef {
                username: user.into(),
                groups: vec!["sre".into()],
            },
            uid: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn modes_from_the_query() {
        assert_eq!(parse_mode(None), Ok(Mode::Observer));
        assert_eq!(parse_mode(Some("mode=observer")), Ok(Mode::Observer));
        assert_eq!(parse_mode(Some("x=1&mode=Moderator")), Ok(Mode::Moderator));
        let e = parse_mode(Some("mode=driver")).expect_err("unknown");
        assert_eq!(e.code, 400);
        assert!(e.message.contains("\"driver\""), "{}", e.message);
    }

    #[test]
    fn only_an_active_session_is_watched_and_the_refusals_say_what_to_do() {
        assert_eq!(
            check_watch(&session(Phase::Active), &caller("bob"), Mode::Observer),
            Ok(())
        );
        let early = check_watch(&session(Phase::Approved), &caller("bob"), Mode::Observer)
            .expect_err("not started");
        assert_eq!(early.code, 409);
        assert!(
            early.message.contains("has not started yet"),
            "{}",
            early.message
        );
        for phase in [Phase::Succeeded, Phase::Failed, Phase::Terminated] {
            let late =
                check_watch(&session(phase), &caller("bob"), Mode::Observer).expect_err("ended");
            assert!(
                late.message.contains("kubectl aexec replay s1 -n prod"),
                "{}",
                late.message
            );
        }
    }

    #[test]
    fn a_requester_never_moderates_their_own_session() {
        let e = check_watch(&session(Phase::Active), &caller("alice"), Mode::Moderator)
            .expect_err("own session");
        assert_eq!(e.code, 403);
        assert!(
            e.message.contains("you cannot moderate it"),
            "{}",
            e.message
        );
        // Watching it as an observer is not refused by the rules (RBAC decides).
        assert_eq!(
            check_watch(&session(Phase::Active), &caller("alice"), Mode::Observer),
            Ok(())
        );
    }

    #[test]
    fn moderators_are_whom_the_policy_names_and_never_the_requester() {
        let moderated = |groups: &[&str]| {
            let mut s = session(Phase::Active);
            let st = s.status.as_mut().expect("status");
            st.limits = Some(aexec_crds::SessionLimits {
                moderation: Some(aexec_crds::ModerationRule {
                    required: 1,
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                    users: vec![],
                    on_moderator_leave: aexec_crds::OnModeratorLeave::Pause,
                    timeout: None,
                }),
                ..Default::default()
            });
            s
        };
        // bob is in sre.
        assert_eq!(
            check_watch(&moderated(&["sre"]), &caller("bob"), Mode::Moderator),
            Ok(())
        );
        let e = check_watch(&moderated(&["dba"]), &caller("bob"), Mode::Moderator)
            .expect_err("not in the groups");
        assert_eq!(e.code, 403);
        assert!(e.message.contains("members of dba"), "{}", e.message);
        // alice is in sre too, and requested it.
        let e = check_watch(&moderated(&["sre"]), &caller("alice"), Mode::Moderator)
            .expect_err("own session");
        assert!(
            e.message.contains("you cannot moderate it"),
            "{}",
            e.message
        );
        // Without moderation in the policy, a moderator is refused as needless.
        let e = check_watch(&session(Phase::Active), &caller("bob"), Mode::Moderator)
            .expect_err("no moderation");
        assert_eq!(e.code, 400);
    }

    #[test]
    fn deliveries_use_the_exec_streams_channels() {
        use tokio_tungstenite::tungstenite::Bytes;
        let bin = |d: Delivery| match message(&d) {
            Message::Binary(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bin(Delivery::Shown(Shown::Output(Bytes::from_static(
                b"\x01hi"
            )))),
            b"\x01hi"
        );
        assert_eq!(
            bin(Delivery::Shown(Shown::Error(Bytes::from_static(b"\x02no")))),
            b"\x02no"
        );
        assert_eq!(
            bin(Delivery::Shown(Shown::Resize { cols: 80, rows: 24 })),
            b"\x04{\"Width\":80,\"Height\":24}"
        );
        let exit: serde_json::Value =
            serde_json::from_slice(&bin(Delivery::Shown(Shown::Exit(3)))[1..]).expect("json");
        assert_eq!(exit["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value =
            serde_json::from_slice(&bin(Delivery::Shown(Shown::Exit(0)))[1..]).expect("json");
        assert_eq!(ok["status"], "Success");
        match message(&Delivery::Skipped { bytes: 7 }) {
            Message::Text(t) => assert_eq!(t.as_str(), r#"{"bytes":7,"type":"skipped"}"#),
            other => panic!("{other:?}"),
        }
    }
}
