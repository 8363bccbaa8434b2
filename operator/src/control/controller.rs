//! The ExecSession controller: dereference (pod, namespace, policies) -> decide
//! ([`lifecycle::reconcile`], pure) -> write status (server-side apply, guarded by the
//! resourceVersion read) -> requeue at the next deadline.
//!
//! Triggers: any change to a session (status included: an approval written by the aggregated API
//! is picked up at once), any change to a policy (policy changes apply to pending sessions), and
//! any change to a pod that a live session targets (vanished or replaced pods).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use aexec_crds::{ExecPolicy, ExecSession, ExecSessionStatus, Phase};
use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{Instrument, info, info_span, warn};

use crate::{
    control::lifecycle::{self, Observed, PodState},
    control::metrics::{Metrics, PhaseLabel},
    control::policy::{self, DefaultPolicy, TargetLabels},
};

/// The field manager of every status write.
pub const MANAGER: &str = "aexec-operator";

/// Every session carries this finalizer until its signed record is in the store: deleting a
/// session (an administrator; the requester may not) first ends it (an Active one through its
/// broker, which seals the recording marked as ended by deletion), then its record is written,
/// and only then does the object go.
pub const FINALIZER: &str = "aexec.dev/session-record";

/// What every reconcile needs.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub policies: Store<ExecPolicy>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub default_policy: DefaultPolicy,
    pub retention: Duration,
    /// Where recordings are, to seal the one of a session whose broker was lost.
    pub recordings: std::sync::Arc<crate::record::spool::Spool>,
    /// The namespace of the replicas' pods, when replicas are pods (`--replicas-are-pods`).
    pub replica_pods: Option<String>,
    /// Signs session records.
    pub signer: crate::record::signing::Signer,
    /// This replica's name, written into the records it signs.
    pub instance: String,
}

/// Errors of one reconcile; each is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the ExecPolicy cache is not filled yet (is the ExecPolicy watch failing?)")]
    PoliciesUnavailable,
    #[error("writing the status of {name}: {source}")]
    Write {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The phase as a metric label (`Pending` before the first evaluation).
fn phase_of(status: Option<&ExecSessionStatus>) -> Phase {
    status.and_then(|s| s.phase).unwrap_or_default()
}

/// What the controller decides with, from the operator's flags.
#[derive(Clone, Debug)]
pub struct Settings {
    pub default_policy: DefaultPolicy,
    pub retention: Duration,
    /// Where recordings are, to seal the one of a session whose broker was lost.
    pub recordings: std::sync::Arc<crate::record::spool::Spool>,
    /// The namespace of the replicas' pods (named by their `--instance`), when replicas are
    /// pods: a session whose broker's pod is gone ends at once.
    pub replica_pods: Option<String>,
    /// Signs session records.
    pub signer: crate::record::signing::Signer,
    /// This replica's name.
    pub instance: String,
}

/// Runs the controller until `shutdown` resolves. Returns the session cache (for readiness and
/// metrics) through `on_store` as soon as it exists.
pub async fn run(
    client: Client,
    metrics: Metrics,
    Settings {
        default_policy,
        retention,
        recordings,
        replica_pods,
        signer,
        instance,
    }: Settings,
    reporter: Reporter,
    on_store: impl FnOnce(Store<ExecSession>),
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let sessions: Api<ExecSession> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let (policies, writer) = reflector::store();
    // The policy cache is fed by a task of its own, so it fills whatever the controller is doing
    // (reconciles wait for it). Every policy event re-evaluates every session: pending ones may
    // change fate. The channel holds one pending trigger; more would only repeat it.
    let (trigger_tx, policy_changes) = futures::channel::mpsc::channel::<()>(1);
    let policy_task = tokio::spawn({
        let mut trigger_tx = trigger_tx;
        let stream = watcher(
            Api::<ExecPolicy>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(without_managed_fields)
        .reflect(writer)
        .touched_objects();
        async move {
            futures::pin_mut!(stream);
            while let Some(r) = stream.next().await {
                match r {
                    Ok(_) => {
                        let _ = trigger_tx.try_send(());
                    }
                    Err(e) => warn!(error = %e, "watching ExecPolicies"),
                }
            }
        }
        .instrument(info_span!("policies"))
    });

    // The policy cache is awaited here, by one task, before the controller runs: kube-runtime's
    // Store::wait_until_ready wakes only the last of several tasks waiting at once (its
    // DelayedInit keeps one oneshot receiver, which remembers one waker), so reconciles waiting
    // on it together hung until their timeout. Once a waiter has seen it ready, the store
    // remembers, and the reconciles' own waits return at once.
    let mut shutdown = Box::pin(shutdown);
    tokio::select! {
        _ = &mut shutdown => {
            policy_task.abort();
            return;
        }
        ready = policies.wait_until_ready() => {
            if ready.is_err() {
                warn!("the policy cache ended before it was filled; the controller does not start");
                return;
            }
        }
    }
    // The session cache keeps every session until it is deleted. Their managedFields (who
    // wrote which field, as JSON trees) were the largest part of each cached object and are
    // read by nothing here: dropped as they arrive (docs/performance.md, memory per session).
    let (store, writer) = reflector::store();
    let session_events = watcher(sessions, watcher::Config::default())
        .default_backoff()
        .modify(without_managed_fields)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(session_events, store.clone());
    on_store(store.clone());
    let session_cache = store.clone();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        policies,
        metrics,
        default_policy,
        retention,
        recordings,
        replica_pods: replica_pods.clone(),
        signer,
        instance,
    });
    controller
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
            // A replica's pod: the sessions it brokers (it may be gone).
            let replica = replica_pods.as_deref() == Some(ns.as_str());
            session_cache
                .state()
                .into_iter()
                .filter(|s| {
                    let targets = s.namespace().as_deref() == Some(ns.as_str())
                        && s.spec.pod == name
                        && !s.phase().is_terminal();
                    let brokered = replica
                        && s.phase() == Phase::Active
                        && s.status.as_ref().and_then(|st| st.broker.as_deref())
                            == Some(name.as_str());
                    targets || brokered
                })
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(policy_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
    policy_task.abort();
}

/// Drops what the API server records of who wrote which field: nothing here reads it, and it
/// was most of a cached object's memory.
pub fn without_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

async fn reconcile(session: Arc<ExecSession>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = session.namespace().unwrap_or_default();
    let name = session.name_any();
    let span = info_span!("reconcile", namespace = %ns, session = %name);
    reconcile_one(session, ctx).instrument(span).await
}

async fn reconcile_one(session: Arc<ExecSession>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let ns = session.namespace().unwrap_or_default();
    let name = session.name_any();
    let before = phase_of(session.status.as_ref());
    let api: Api<ExecSession> = Api::namespaced(ctx.client.clone(), &ns);

    // The evidence before anything else: a finished session gets its signed record, and a
    // deleted one goes only once it has it.
    let deleting = session.metadata.deletion_timestamp.is_some();
    let finalized = session.finalizers().iter().any(|f| f == FINALIZER);
    let recorded = session.status.as_ref().is_some_and(|s| s.record.is_some());
    if before.is_terminal() && !recorded {
        return write_record(&session, &api, &ctx).await;
    }
    if deleting {
        if !finalized {
            return Ok(Action::await_change());
        }
        if before.is_terminal() {
            return remove_finalizer(&session, &api).await;
        }
    }
    let session = if !deleting && !finalized && !recorded {
        match add_finalizer(&session, &api).await? {
            Some(s) => Arc::new(s),
            None => return Ok(Action::requeue(Duration::from_millis(50))),
        }
    } else {
        session
    };

    // Dereference: only sessions that can still change need the pod and the namespace.
    let live = !before.is_terminal() && before != Phase::Active;
    // A session's first decision (approve or deny at once are final) is made on the policies
    // as the API server has them: the cache comes from another watch and may not have seen a
    // policy created just before the session (right after a start, the session list can be
    // newer than the policy list), which would deny the session for want of a policy.
    let from_api = || async {
        Api::<ExecPolicy>::all(ctx.client.clone())
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .map_err(|source| Error::Read {
                what: "the ExecPolicies".into(),
                source,
            })
    };
    let first = session.status.is_none() && live;
    let mut listed = None;
    let (pod, ns_labels, pod_labels) = if live {
        // The reads at once: they are on the path from a request to its decision.
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
        let namespaces = Api::<Namespace>::all(ctx.client.clone());
        let (pod, namespace, policies) = tokio::join!(
            pods.get_opt(&session.spec.pod),
            namespaces.get_opt(&ns),
            async {
                match first {
                    true => Some(from_api().await),
                    false => None,
                }
            }
        );
        listed = policies;
        let pod = pod.map_err(|source| Error::Read {
            what: format!("pod {ns}/{}", session.spec.pod),
            source,
        })?;
        let namespace = namespace.map_err(|source| Error::Read {
            what: format!("namespace {ns}"),
            source,
        })?;
        let ns_labels = namespace.map(|n| n.labels().clone()).unwrap_or_default();
        let pod_labels = pod.as_ref().map(|p| p.labels().clone()).unwrap_or_default();
        (pod_state(pod.as_ref()), ns_labels, pod_labels)
    } else {
        (PodState::Missing, BTreeMap::new(), BTreeMap::new())
    };
    // Deciding on an empty cache would deny every session right after a restart ("no policy
    // governs this pod"): wait until the policies have been listed once.
    match tokio::time::timeout(Duration::from_secs(30), ctx.policies.wait_until_ready()).await {
        Ok(Ok(())) => {}
        _ => return Err(Error::PoliciesUnavailable),
    }
    let labels = TargetLabels {
        namespace: &ns_labels,
        pod: &pod_labels,
    };
    let mut policies: Vec<ExecPolicy> = match listed {
        Some(listed) => listed?,
        None => ctx.policies.state().iter().map(|p| (**p).clone()).collect(),
    };
    // The same holds later while the session is Pending: a cache that does not (yet) select the
    // policy the session was decided under would move it to another policy's decision (or
    // deny it "for want of a policy", seen when a reconcile follows the first decision by a few
    // milliseconds). A change of policy is rare: confirm it from the API server.
    let decided_under = session.status.as_ref().and_then(|s| s.policy.clone());
    if live
        && !first
        && policy::select(&policies, &labels).map(|p| policy::policy_name(p).to_owned())
            != decided_under
    {
        policies = from_api().await?;
    }
    let selected = policy::select(&policies, &labels);

    // Decide.
    let mut outcome = lifecycle::reconcile(&Observed {
        session: &session,
        pod,
        policy: selected,
        default_policy: ctx.default_policy,
        now: Utc::now(),
        retention: ctx.retention,
    });
    // An Active session whose broker's pod is gone: nothing will end it, so end it now.
    if before == Phase::Active
        && let Some(gone) = broker_gone(&ctx, &session).await?
    {
        outcome = lifecycle::broker_gone(
            &Observed {
                session: &session,
                pod: PodState::Missing,
                policy: None,
                default_policy: ctx.default_policy,
                now: Utc::now(),
                retention: ctx.retention,
            },
            &gone,
        );
    }
    // A session whose broker was lost: its recording is sealed from what reached the store
    // (the lost replica's spool went with it), marked interrupted, before its end is written.
    if let Some(t) = outcome
        .transition
        .as_ref()
        .filter(|t| t.reason == lifecycle::BROKER_LOST_REASON)
    {
        match crate::record::recorder::seal_interrupted(&ctx.recordings, &session, &t.message).await
        {
            Ok(recording) => outcome.status.recording = Some(recording),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "sealing the recording of a session whose broker was lost")
            }
        }
    }

    if outcome.delete {
        info!(
            "retention passed, deleting the finished session (its recording and signed record stay)"
        );
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::Write { name, source }),
        }
        return Ok(Action::await_change());
    }

    // Write the status when it changed. The resourceVersion makes the write fail if the session
    // changed since it was read (an approval just landed): the newer version is reconciled next.
    if session.status.as_ref() != Some(&outcome.status) {
        if let Some(retry) = apply_status(&api, &session, &outcome.status).await? {
            return Ok(retry);
        }
        ctx.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    if let Some(t) = &outcome.transition {
        info!(from = %t.from, to = %t.to, reason = t.reason, "{}", t.message);
        ctx.metrics
            .transitions
            .get_or_create(&PhaseLabel {
                phase: t.to.to_string(),
            })
            .inc();
        let type_ = match t.to {
            Phase::Denied | Phase::Expired | Phase::Failed => EventType::Warning,
            _ => EventType::Normal,
        };
        let event = Event {
            type_,
            reason: t.reason.to_owned(),
            note: Some(t.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
            warn!(error = %e, "publishing an event");
        }
    }

    Ok(match outcome.requeue_after {
        // A little past the deadline, so that it has passed when we look again.
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None => Action::await_change(),
    })
}

/// Why the broker of an Active session can no longer end it, when replicas are pods and its
/// pod is gone (deleted without a clean shutdown) or dead (evicted: the object stays, its
/// containers do not). A pod that is terminating is not gone: it ends its sessions itself.
async fn broker_gone(ctx: &Context, session: &ExecSession) -> Result<Option<String>, Error> {
    let (Some(ns), Some(broker)) = (
        ctx.replica_pods.as_deref(),
        session.status.as_ref().and_then(|s| s.broker.as_deref()),
    ) else {
        return Ok(None);
    };
    let pod = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .get_opt(broker)
        .await
        .map_err(|source| Error::Read {
            what: format!("the pod of operator replica {ns}/{broker}"),
            source,
        })?;
    Ok(match pod {
        None => Some(format!(
            "its pod {ns}/{broker} was deleted without a clean shutdown"
        )),
        Some(p) => match p.status.and_then(|s| s.phase).as_deref() {
            Some(phase @ ("Failed" | "Succeeded")) => {
                Some(format!("its pod {ns}/{broker} is {phase}"))
            }
            _ => None,
        },
    })
}

/// Writes `status` with server-side apply, guarded by the resourceVersion read. `Some(action)`
/// when it did not land: a conflict (reconciled again shortly) or a session already gone.
async fn apply_status(
    api: &Api<ExecSession>,
    session: &ExecSession,
    status: &ExecSessionStatus,
) -> Result<Option<Action>, Error> {
    let patch = serde_json::json!({
        "apiVersion": ExecSession::api_version(&()),
        "kind": ExecSession::kind(&()),
        "metadata": {"resourceVersion": session.resource_version()},
        "status": status,
    });
    match api
        .patch_status(
            &session.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
    {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            Ok(Some(Action::requeue(Duration::from_millis(50))))
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Some(Action::await_change())),
        Err(source) => Err(Error::Write {
            name: session.name_any(),
            source,
        }),
    }
}

/// Adds [`FINALIZER`], guarded by the resourceVersion read; returns the updated session, or
/// `None` when it changed meanwhile (reconciled again).
async fn add_finalizer(
    session: &ExecSession,
    api: &Api<ExecSession>,
) -> Result<Option<ExecSession>, Error> {
    let mut finalizers = session.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers, "resourceVersion": session.resource_version()}});
    match api
        .patch(
            &session.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(s) => Ok(Some(s)),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(None),
        Err(source) => Err(Error::Write {
            name: session.name_any(),
            source,
        }),
    }
}

/// Lets a deleted session go: its record is written.
async fn remove_finalizer(session: &ExecSession, api: &Api<ExecSession>) -> Result<Action, Error> {
    let finalizers: Vec<&String> = session
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers, "resourceVersion": session.resource_version()}});
    info!("the session was deleted and its record is in the store: letting it go");
    match api
        .patch(
            &session.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Action::requeue(Duration::from_millis(50))),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(source) => Err(Error::Write {
            name: session.name_any(),
            source,
        }),
    }
}

/// Writes the signed record of a finished session to the store, then names it in the status.
async fn write_record(
    session: &ExecSession,
    api: &Api<ExecSession>,
    ctx: &Context,
) -> Result<Action, Error> {
    let result = |r: &str| {
        ctx.metrics
            .records
            .get_or_create(&crate::control::metrics::ResultLabel { result: r.into() })
            .inc();
    };
    let record = match crate::record::archive::write_record(
        &ctx.recordings,
        &ctx.signer,
        session,
        &ctx.instance,
        Utc::now(),
    )
    .await
    {
        Ok(r) => r,
        Err(crate::record::archive::NotWritten::Waiting(why)) => {
            tracing::debug!(%why, "the session record waits");
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        Err(crate::record::archive::NotWritten::Failed(why)) => {
            warn!(%why, "the session record could not be written; retrying");
            result("failed");
            let event = Event {
                type_: EventType::Warning,
                reason: "RecordNotWritten".into(),
                note: Some(
                    format!("the signed session record could not be written (retrying): {why}")
                        .chars()
                        .take(1000)
                        .collect(),
                ),
                action: "Record".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
                warn!(error = %e, "publishing an event");
            }
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    let mut status = session.status.clone().unwrap_or_default();
    status.record = Some(record.clone());
    // On a conflict the record is written again next time: the stored one is found and kept.
    if let Some(retry) = apply_status(api, session, &status).await? {
        return Ok(retry);
    }
    result("written");
    let uri = record.uri.clone().unwrap_or_default();
    let key = record.key_id.clone().unwrap_or_default();
    info!(%uri, key_id = %key, "the signed session record is in the store");
    let event = Event {
        type_: EventType::Normal,
        reason: "Recorded".into(),
        note: Some(format!(
            "signed session record written to {uri} (key {key})"
        )),
        action: "Record".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
        warn!(error = %e, "publishing an event");
    }
    Ok(Action::await_change())
}

fn pod_state(pod: Option<&Pod>) -> PodState {
    let Some(pod) = pod else {
        return PodState::Missing;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Missing;
    }
    PodState::Present {
        uid: pod.uid().unwrap_or_default(),
        containers: pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default(),
        default_container: pod
            .annotations()
            .get("kubectl.kubernetes.io/default-container")
            .cloned(),
    }
}

fn error_policy(session: Arc<ExecSession>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(session = %session.name_any(), error = %error, "reconcile failed; retrying");
    ctx.metrics.reconcile_errors.inc();
    Action::requeue(Duration::from_secs(2))
}

/// Updates the sessions-by-phase gauge from the controller's cache.
pub fn observe_phases(store: &Store<ExecSession>, metrics: &Metrics) {
    let mut counts: std::collections::HashMap<Phase, i64> = std::collections::HashMap::new();
    for s in store.state() {
        *counts.entry(phase_of(s.status.as_ref())).or_default() += 1;
    }
    metrics.sessions.clear();
    for (phase, n) in counts {
        metrics
            .sessions
            .get_or_create(&PhaseLabel {
                phase: phase.to_string(),
            })
            .set(n);
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}
