//! The console's JSON API: each handler is a command of the plugin, answered as JSON, with the
//! user's own client. Refusals keep the API server's status (403 stays 403) and its
//! explanation, worded as the command line words it.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use aexec_crds::{ExecPolicy, ExecSession, SUBRESOURCE_GROUP};
use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt};
use k8s_openapi::api::authorization::v1::ResourceAttributes;
use kube::{
    Api,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Ui;
use crate::{
    connect::Conn,
    error::{Doing, Error, explain},
    search,
};

/// Sessions listed at most per answer (the page says when there are more).
const MAX_SESSIONS: u32 = 2000;
/// Search hits returned at most (the page says when there are more).
const MAX_HITS: usize = 500;

type Shared = State<Arc<Ui>>;

/// A JSON error answer: `{"message": ...}`.
pub fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// A failed handler: the status to answer and the sentence for the person.
#[derive(Debug)]
pub struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        problem(self.0, &self.1)
    }
}

impl Failure {
    /// A refusal or failure of the API server, with its status and the plugin's explanation.
    fn kube(e: &kube::Error, what: &str, doing: Doing) -> Failure {
        let status = match e {
            kube::Error::Api(s) => StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY),
            _ => StatusCode::BAD_GATEWAY,
        };
        Failure(status, explain(e, what, doing).to_string())
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let status = match e {
            Error::Usage(_) => StatusCode::BAD_REQUEST,
            // The cluster refused the user: the same status, for the same reason.
            Error::Refused { status, .. } => {
                StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN)
            }
            // Any other failure of the cluster, already explained: the console passed it on.
            _ => StatusCode::BAD_GATEWAY,
        };
        Failure(status, crate::one_line(&e.to_string()))
    }
}

type Answer = Result<Response, Failure>;

/// A GET of `path` on the API server, for the handlers that read a stream (kube's `Api` does
/// not reach subresources' streams).
fn get_request(path: String) -> Result<http::Request<Vec<u8>>, Failure> {
    http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn conn(ui: &Ui, namespace: &str) -> Conn {
    Conn {
        client: ui.conn.client.clone(),
        namespace: namespace.to_owned(),
    }
}

fn sessions_api(ui: &Ui, namespace: Option<&str>) -> Api<ExecSession> {
    match namespace.filter(|n| !n.is_empty()) {
        Some(ns) => Api::namespaced(ui.conn.client.clone(), ns),
        None => Api::all(ui.conn.client.clone()),
    }
}

/// `GET /api/whoami`.
pub async fn whoami(State(ui): Shared) -> Json<Value> {
    Json(json!({
        "user": ui.user.username,
        "groups": ui.user.groups,
        "context": ui.context,
        "namespace": ui.conn.namespace,
        "defaultNamespace": ui.start_namespace,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

#[derive(Debug, Deserialize)]
pub struct NamespaceQuery {
    #[serde(default)]
    namespace: Option<String>,
}

fn where_(namespace: Option<&str>) -> String {
    match namespace.filter(|n| !n.is_empty()) {
        Some(ns) => format!("in namespace {ns}"),
        None => "in all namespaces".into(),
    }
}

/// `GET /api/sessions?namespace=NS`: the sessions (all namespaces when NS is empty).
pub async fn sessions(State(ui): Shared, Query(q): Query<NamespaceQuery>) -> Answer {
    let ns = q.namespace.as_deref();
    let list = sessions_api(&ui, ns)
        .list(&ListParams::default().limit(MAX_SESSIONS))
        .await
        .map_err(|e| {
            Failure::kube(
                &e,
                &format!("listing sessions {}", where_(ns)),
                Doing::Audit,
            )
        })?;
    let more = list.metadata.continue_.is_some_and(|c| !c.is_empty());
    Ok(Json(json!({ "items": list.items, "truncated": more })).into_response())
}

/// `GET /api/events?namespace=NS`: the sessions' changes as server-sent events, from a watch
/// (`session`: `{type, object}`; `problem`: `{message}` when the watch fails, and it is
/// retried with backoff). A slow page slows the watch, nothing piles up here.
pub async fn events(
    State(ui): Shared,
    Query(q): Query<NamespaceQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let ns = q.namespace.clone();
    let stream = watcher(sessions_api(&ui, ns.as_deref()), watcher::Config::default())
        .default_backoff()
        .filter_map(move |ev| {
            let ns = ns.clone();
            async move {
                let (kind, object) = match ev {
                    Ok(watcher::Event::InitApply(o)) => ("ADDED", o),
                    Ok(watcher::Event::Apply(o)) => ("MODIFIED", o),
                    Ok(watcher::Event::Delete(o)) => ("DELETED", o),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => return None,
                    Err(e) => {
                        let message = match &e {
                            watcher::Error::InitialListFailed(k)
                            | watcher::Error::WatchStartFailed(k)
                            | watcher::Error::WatchFailed(k) => explain(
                                k,
                                &format!("watching sessions {}", where_(ns.as_deref())),
                                Doing::Audit,
                            )
                            .to_string(),
                            other => {
                                format!("watching sessions {}: {other}", where_(ns.as_deref()))
                            }
                        };
                        return Some(Ok(SseEvent::default()
                            .event("problem")
                            .json_data(json!({ "message": message }))
                            .unwrap_or_default()));
                    }
                };
                Some(Ok(SseEvent::default()
                    .event("session")
                    .json_data(json!({ "type": kind, "object": object }))
                    .unwrap_or_default()))
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Whether the user may `verb` the subresource `sub` of session `name` (a hint for the page;
/// the API server and the operator still decide).
async fn may(ui: &Ui, ns: &str, name: &str, verb: &str, sub: &str) -> bool {
    crate::connect::allowed(
        &ui.conn.client,
        ResourceAttributes {
            group: Some(SUBRESOURCE_GROUP.into()),
            resource: Some("execsessions".into()),
            subresource: Some(sub.into()),
            verb: Some(verb.into()),
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
    )
    .await
}

/// `GET /api/sessions/NS/NAME`: the session, its policy (when readable) and what the user may
/// do with it.
pub async fn session(State(ui): Shared, Path((ns, name)): Path<(String, String)>) -> Answer {
    let s = Api::<ExecSession>::namespaced(ui.conn.client.clone(), &ns)
        .get(&name)
        .await
        .map_err(|e| Failure::kube(&e, &format!("reading session {ns}/{name}"), Doing::Audit))?;
    let policy_name = s.status.as_ref().and_then(|st| st.policy.clone());
    let policy = async {
        match policy_name {
            Some(p) => Api::<ExecPolicy>::all(ui.conn.client.clone())
                .get_opt(&p)
                .await
                .ok()
                .flatten(),
            None => None,
        }
    };
    let (policy, approve, deny, read, watch) = tokio::join!(
        policy,
        may(&ui, &ns, &name, "update", "approve"),
        may(&ui, &ns, &name, "update", "deny"),
        may(&ui, &ns, &name, "get", "recording"),
        may(&ui, &ns, &name, "get", "observe"),
    );
    Ok(Json(json!({
        "session": s,
        "policy": policy,
        "canApprove": approve,
        "canDeny": deny,
        "canReadRecording": read,
        "canWatch": watch,
    }))
    .into_response())
}

/// `GET /api/sessions/NS/NAME/verify`: `verify NAME`'s checks and report; a failed
/// verification is an answer (`ok: false`), not an error.
pub async fn verify(State(ui): Shared, Path((ns, name)): Path<(String, String)>) -> Answer {
    let result = crate::commands::verify_report(&conn(&ui, &ns), &name, None).await;
    match result {
        Ok(report) => Ok(Json(json!({ "ok": true, "report": report })).into_response()),
        Err(Error::Verify(report)) => {
            Ok(Json(json!({ "ok": false, "report": report })).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/sessions/NS/NAME/recording`: the recording as asciicast v2 (what the player
/// reads), streamed from the operator, which verifies it as it sends it.
pub async fn recording(State(ui): Shared, Path((ns, name)): Path<(String, String)>) -> Answer {
    use tokio_util::{compat::FuturesAsyncReadCompatExt, io::ReaderStream};
    let path = format!(
        "{}?format=v2",
        crate::attach::subresource_path(&ns, &name, "recording")
    );
    let req = get_request(path)?;
    let body = ui.conn.client.request_stream(req).await.map_err(|e| {
        Failure::kube(
            &e,
            &format!("reading the recording of {ns}/{name}"),
            Doing::Audit,
        )
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-asciicast")],
        Body::from_stream(ReaderStream::new(body.compat())),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct Decision {
    #[serde(default)]
    comment: Option<String>,
}

async fn decide(ui: &Ui, ns: &str, name: &str, verb: &str, comment: Option<String>) -> Answer {
    let comment = comment.filter(|c| !c.trim().is_empty());
    let s = crate::commands::put_subresource(&conn(ui, ns), name, verb, comment.as_deref())
        .await
        .map_err(|e| {
            let doing = if verb == "approve" {
                "approving"
            } else {
                "denying"
            };
            Failure::kube(&e, &format!("{doing} session {ns}/{name}"), Doing::Decide)
        })?;
    Ok(Json(json!({ "session": s })).into_response())
}

/// `POST /api/sessions/NS/NAME/approve` `{"comment": ...}`.
pub async fn approve(
    State(ui): Shared,
    Path((ns, name)): Path<(String, String)>,
    Json(d): Json<Decision>,
) -> Answer {
    decide(&ui, &ns, &name, "approve", d.comment).await
}

/// `POST /api/sessions/NS/NAME/deny` `{"comment": ...}`.
pub async fn deny(
    State(ui): Shared,
    Path((ns, name)): Path<(String, String)>,
    Json(d): Json<Decision>,
) -> Answer {
    decide(&ui, &ns, &name, "deny", d.comment).await
}

/// `GET /api/search?pattern=RE&namespace=NS&since=24h&requester=U&stream=input|output|both`:
/// `search`'s matches, at most [`MAX_HITS`].
pub async fn search(State(ui): Shared, Query(q): Query<BTreeMap<String, String>>) -> Answer {
    let arg = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let pattern = arg("pattern")
        .ok_or_else(|| Failure(StatusCode::BAD_REQUEST, "give a pattern to search".into()))?;
    let (input, output) = match arg("stream") {
        Some("input") => (true, false),
        Some("output") => (false, true),
        None | Some("both") => (true, true),
        Some(other) => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("stream is input, output or both, not {other:?}"),
            ));
        }
    };
    let mut query = search::Query::new(pattern, input, output)?;
    query.namespace = arg("namespace").map(str::to_owned);
    query.requester = arg("requester").map(str::to_owned);
    query.archived = arg("archived").is_some_and(|v| v == "1" || v == "true");
    query.since = match arg("since") {
        Some(s) => Some(
            crate::cli::parse_when(s)
                .map_err(|e| Failure(StatusCode::BAD_REQUEST, format!("since {s:?}: {e}")))?,
        ),
        None => None,
    };
    let mut hits = Vec::new();
    let scanned = search::run(&ui.conn.client, &query, |f| {
        hits.push(json!({
            "namespace": f.namespace,
            "session": f.name,
            "requester": f.requester,
            "pod": f.pod,
            "at": f.hit.at.as_secs_f64(),
            "stream": f.hit.side.as_str(),
            "line": f.hit.line,
            "replay": f.replay_command(),
            "archived": f.archived,
        }));
        Ok(hits.len() < MAX_HITS)
    })
    .await?;
    Ok(Json(json!({
        "hits": hits,
        "truncated": hits.len() >= MAX_HITS,
        "scanned": scanned.sessions,
        "bytes": scanned.bytes,
        "problems": [],
    }))
    .into_response())
}

/// Live events queued for a slow page at most; past that the relay stops reading the watch,
/// and the operator drops what this watcher misses (and says how much: a `notice`).
const LIVE_QUEUE: usize = 64;

/// `GET /api/sessions/NS/NAME/live`: an Active session as it happens, for the player's
/// `eventsource` driver (the `observe` stream `kubectl aexec watch` reads, translated by
/// [`super::live::Translator`]), read-only: nothing from the page reaches the session.
pub async fn live(State(ui): Shared, Path((ns, name)): Path<(String, String)>) -> Answer {
    use tokio_tungstenite::tungstenite::Message;
    let path = format!(
        "{}?mode=observer",
        crate::attach::subresource_path(&ns, &name, "observe")
    );
    let req = get_request(path)?;
    let ws =
        ui.conn.client.connect(req).await.map_err(|e| {
            Failure::kube(&e, &format!("watching session {ns}/{name}"), Doing::Audit)
        })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<super::live::Out>(LIVE_QUEUE);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.into_stream().split();
        let mut t = super::live::Translator::default();
        let started = tokio::time::Instant::now();
        let mut ping = tokio::time::interval(Duration::from_secs(5));
        let why = loop {
            let out = tokio::select! {
                m = stream.next() => match m {
                    Some(Ok(Message::Binary(b))) => t.binary(&b, started.elapsed()),
                    Some(Ok(Message::Text(text))) => t.text(&text),
                    Some(Ok(Message::Close(f))) => break f
                        .map(|f| f.reason.to_string())
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "the operator closed the watch".into()),
                    Some(Ok(_)) => Vec::new(),
                    Some(Err(e)) => break format!("the connection to the aexec operator broke: {e}"),
                    None => break "the operator closed the watch".into(),
                },
                _ = ping.tick() => {
                    let _ = futures::SinkExt::send(&mut sink, Message::Ping(Vec::new().into())).await;
                    Vec::new()
                }
                // The page went away: leave (the operator records who watched until when).
                () = tx.closed() => {
                    let leave = json!({"type": "leave"}).to_string();
                    let _ = futures::SinkExt::send(&mut sink, Message::Text(leave.into())).await;
                    return;
                }
            };
            for o in out {
                if tx.send(o).await.is_err() {
                    return;
                }
            }
        };
        for o in t.done(&why) {
            let _ = tx.send(o).await;
        }
    });
    let events = tokio_stream_from(rx).map(|o| {
        let e = SseEvent::default().json_data(o.data).unwrap_or_default();
        Ok::<_, Infallible>(match o.event {
            Some(name) => e.event(name),
            None => e,
        })
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// A receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
