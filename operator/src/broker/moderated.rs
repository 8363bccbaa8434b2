//! The I/O side of moderated sessions (`docs/watch.md`): the wait for moderators before the
//! command starts, and telling the cluster (the session's status, Events) how moderation
//! stands. The decisions are in [`crate::broker::moderation`]; pausing input mid-session is in the
//! relay (`broker`), which alone owns the two legs.

use std::{collections::VecDeque, sync::Arc};

use aexec_crds::{ExecSession, ModerationRule, ModerationState, ModerationStatus};
use futures::{SinkExt, StreamExt};
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
    runtime::events::{Event as KubeEvent, EventType},
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};
use tracing::warn;

use crate::{
    api::server::AppState,
    broker::attach::{End, Stop, stopped},
    broker::moderation,
    broker::watch::Hub,
    record::recorder::Recorder,
    recording::cast::Event,
};

/// One change of a session's moderation, for its status and (when it says one) an Event.
#[derive(Debug)]
struct Change {
    status: ModerationStatus,
    event: Option<(&'static str, String)>,
}

/// Writes a session's moderation into its status and publishes its Events, in order, from a
/// task of its own: the relay never waits on the API server for it.
#[derive(Clone, Debug)]
pub struct Announcer {
    tx: mpsc::Sender<Change>,
}

/// Changes waiting to be written; more than this (a flood of joins and leaves) are dropped with
/// a warning, and the next change writes the state as it is then.
const PENDING_CHANGES: usize = 64;

impl Announcer {
    pub fn start(state: &AppState, session: &ExecSession, hub: Arc<Hub>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Change>(PENDING_CHANGES);
        let (client, recorder) = (state.client.clone(), state.recorder.clone());
        let reference = session.object_ref(&());
        let ns = session.metadata.namespace.clone().unwrap_or_default();
        let name = session.metadata.name.clone().unwrap_or_default();
        tokio::spawn(async move {
            let api: Api<ExecSession> = Api::namespaced(client, &ns);
            while let Some(change) = rx.recv().await {
                {
                    let _turn = hub.status_writes.lock().await;
                    let patch = json!({"status": {"moderation": change.status}});
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        warn!(error = %e, "writing the moderation into the session's status");
                    }
                }
                if let Some((reason, note)) = change.event {
                    let event = KubeEvent {
                        type_: EventType::Normal,
                        reason: reason.into(),
                        note: Some(note),
                        action: "Moderate".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&event, &reference).await {
                        warn!(error = %e, "publishing a moderation event");
                    }
                }
            }
        });
        Announcer { tx }
    }

    /// Says where moderation stands, and why with an Event when `event` is given.
    pub fn say(
        &self,
        state: ModerationState,
        moderators: usize,
        required: usize,
        event: Option<(&'static str, String)>,
    ) {
        let status = ModerationStatus {
            state,
            moderators: i32::try_from(moderators).unwrap_or(i32::MAX),
            required: i32::try_from(required).unwrap_or(i32::MAX),
        };
        if self.tx.try_send(Change { status, event }).is_err() {
            warn!("too many moderation changes at once; this one is not written");
        }
    }
}

/// What the requester sent while the command waited: relayed once it runs, in order.
pub type Held = VecDeque<Message>;

/// The requester's leg, upgraded but not split.
pub type ClientWs = WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Waits, with the requester attached, until `rule`'s moderators watch. The requester is told
/// where things stand (a text notice on each change); what they send meanwhile is held, up to
/// [`moderation::HOLD_BYTES`], after which their connection is not read (backpressure). Ends
/// early, with the end and the requester's notice, when the requester leaves, the wait times
/// out, or the session is terminated, deleted or its replica shuts down.
pub async fn await_moderators(
    ws: &mut ClientWs,
    session: &ExecSession,
    rule: &ModerationRule,
    hub: &Hub,
    stop: &mut oneshot::Receiver<Stop>,
    recorder: &Recorder,
    announcer: &Announcer,
) -> Result<Held, (End, String)> {
    let (ns, name) = (
        session.metadata.namespace.clone().unwrap_or_default(),
        session.metadata.name.clone().unwrap_or_default(),
    );
    let required = moderation::required(rule);
    let mut moderators = hub.moderators();
    let mut watching = *moderators.borrow_and_update();
    let mut held = Held::new();
    let mut held_bytes = 0usize;
    let deadline = tokio::time::sleep(moderation::timeout(rule));
    tokio::pin!(deadline);
    let _ = recorder
        .record(Event::Marker(format!(
            "moderation: waiting for {required} moderator(s) before the command starts"
        )))
        .await;
    announcer.say(
        ModerationState::Waiting,
        watching,
        required,
        Some((
            "ModerationWaiting",
            format!("waiting for {required} moderator(s) before the command starts"),
        )),
    );
    let mut told = None;
    // A sender dropped without a word (the registry itself went away) is not a stop.
    let mut stop_gone = false;
    loop {
        if watching >= required {
            let notice = moderation::started_notice(watching, required);
            let _ = recorder
                .record(Event::Marker(format!("moderation: {notice}")))
                .await;
            let _ = ws
                .send(Message::Text(moderation::notice_message(&notice).into()))
                .await;
            hub.publish(crate::broker::watch::Shown::Notice(notice.clone()));
            announcer.say(
                ModerationState::Moderated,
                watching,
                required,
                Some(("ModerationStarted", notice)),
            );
            return Ok(held);
        }
        if told != Some(watching) {
            told = Some(watching);
            let notice = moderation::waiting_notice(watching, required, &ns, &name);
            let _ = ws
                .send(Message::Text(moderation::notice_message(&notice).into()))
                .await;
            announcer.say(ModerationState::Waiting, watching, required, None);
        }
        tokio::select! {
            changed = moderators.changed() => {
                if changed.is_err() {
                    return Err((End::NotStarted("the session's watchers went away".into()),
                        "session ended: the session's watchers went away".into()));
                }
                watching = *moderators.borrow_and_update();
            }
            () = hub.noted() => {
                for note in hub.take_notes() {
                    let _ = recorder.record(Event::Marker(note)).await;
                }
            }
            m = ws.next(), if held_bytes < moderation::HOLD_BYTES => match m {
                Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => {
                    held_bytes += m.len();
                    held.push_back(m);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    return Err((End::ClientGone, String::new()));
                }
                Some(Ok(_)) => {}
            },
            () = &mut deadline => {
                let why = moderation::timed_out(rule, false);
                return Err((End::Limit(why.clone()), format!("session ended: {why}")));
            }
            by = &mut *stop, if !stop_gone => match by {
                Ok(by) => return Err(stopped(by, session)),
                Err(_) => stop_gone = true,
            },
        }
    }
}
