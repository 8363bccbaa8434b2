//! Command-line arguments and the wiring of the operator's tasks: controller, aggregated API,
//! and the operations endpoint (health, readiness, metrics). Each task runs under its own span;
//! SIGTERM or Ctrl-C stops them all gracefully.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use aexec_crds::ExecSession;
use anyhow::{Context as _, Result};
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use clap::{Parser, ValueEnum};
use kube::{
    Config,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{events::Reporter, reflector::Store},
};
use tokio::sync::watch;
use tracing::{Instrument, error, info, info_span, warn};

use crate::{
    api::server::{self, AppState, FrontProxy},
    control::controller,
    control::leader,
    control::metrics::Metrics,
    control::policy::DefaultPolicy,
};

/// The kubectl-aexec operator: decides ExecSessions against ExecPolicies, serves the session
/// subresources (approve, deny) as an aggregated API, and brokers and records exec streams.
#[derive(Parser, Debug)]
#[command(version)]
pub struct Args {
    /// Kubeconfig to use; without it: $KUBECONFIG, ~/.kube/config, then the in-cluster
    /// ServiceAccount.
    #[arg(long, env = "AEXEC_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Webhooks to notify of sessions requested, approved, denied, expired, started, ended and
    /// terminated (YAML: `webhooks: [{name, url, format: slack|cloudevents, secret, events,
    /// namespaces}]`; the chart mounts it from a Secret). docs/architecture.md, "Notifications".
    #[arg(long, env = "AEXEC_NOTIFICATIONS", value_name = "FILE")]
    pub notifications: Option<PathBuf>,

    /// What to do with a session no ExecPolicy selects.
    #[arg(long, value_enum, default_value_t = DefaultPolicy::Deny, env = "AEXEC_DEFAULT_POLICY")]
    pub default_policy: DefaultPolicy,

    /// How long finished sessions are kept before they are deleted (their recordings stay).
    #[arg(long, default_value = "168h", value_parser = parse_duration, env = "AEXEC_RETENTION")]
    pub retention: Duration,

    /// Address of the aggregated API (HTTPS).
    #[arg(long, default_value = "0.0.0.0:8443", env = "AEXEC_API_BIND")]
    pub api_bind: SocketAddr,

    /// Serving certificate of the aggregated API (PEM).
    #[arg(long, env = "AEXEC_TLS_CERT")]
    pub tls_cert_file: PathBuf,

    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "AEXEC_TLS_KEY")]
    pub tls_private_key_file: PathBuf,

    /// This replica's IP address as the other replicas reach it (the chart sets the pod's IP).
    /// A watch that reaches another replica is forwarded here, to the API port of
    /// `--api-bind`, when this replica relays the session. Without it, such a watch gets a 409
    /// that says which replica relays the session.
    #[arg(long, env = "POD_IP")]
    pub advertise_address: Option<std::net::IpAddr>,

    /// Address of the plain-HTTP operations endpoint: /healthz, /readyz, /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", env = "AEXEC_OPS_BIND")]
    pub ops_bind: SocketAddr,

    /// Where recordings are kept: a local directory (--recordings-dir) or an S3 bucket.
    #[arg(long, value_enum, default_value_t = StorageKind::Local, env = "AEXEC_STORAGE")]
    pub storage: StorageKind,

    /// Directory where recordings are kept with --storage=local (a volume in a cluster).
    #[arg(
        long,
        default_value = "/var/lib/aexec/recordings",
        env = "AEXEC_RECORDINGS_DIR"
    )]
    pub recordings_dir: PathBuf,

    /// S3 bucket for recordings (--storage=s3). Credentials come from the usual AWS chain:
    /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, web identity (IRSA), instance metadata.
    #[arg(long, env = "AEXEC_S3_BUCKET", default_value = "")]
    pub s3_bucket: String,

    /// Key prefix inside the bucket, e.g. `recordings/`.
    #[arg(long, env = "AEXEC_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,

    /// S3 endpoint URL, for S3-compatible stores (MinIO, Ceph); AWS's otherwise.
    #[arg(long, env = "AEXEC_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// AWS region of the bucket; otherwise AWS_REGION or the profile's.
    #[arg(long, env = "AEXEC_S3_REGION")]
    pub s3_region: Option<String>,

    /// Path-style addressing (endpoint/bucket/key), which most S3-compatible stores need.
    #[arg(long, env = "AEXEC_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: bool,

    /// S3 Object Lock mode for every recording object (the bucket must have Object Lock on).
    #[arg(
        long,
        value_enum,
        env = "AEXEC_S3_OBJECT_LOCK_MODE",
        requires = "s3_object_lock_days"
    )]
    pub s3_object_lock_mode: Option<crate::record::storage::ObjectLock>,

    /// Object Lock retention in days.
    #[arg(long, env = "AEXEC_S3_OBJECT_LOCK_DAYS", requires = "s3_object_lock_mode",
          value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub s3_object_lock_days: Option<u32>,

    /// Local directory where recording segments wait until the store has them (an emptyDir
    /// in a cluster: it survives a container restart, so an interrupted recording is sealed).
    #[arg(long, default_value = "/var/lib/aexec/spool", env = "AEXEC_SPOOL_DIR")]
    pub spool_dir: PathBuf,

    /// Bytes the spool may hold while the store is slow or down; when a segment does not fit,
    /// sessions whose policy requires recording are ended (fail closed).
    #[arg(long, default_value_t = 1 << 30, env = "AEXEC_SPOOL_MAX_BYTES")]
    pub spool_max_bytes: u64,

    /// Name of this replica, shown in Events and in the status of sessions it brokers.
    #[arg(long, env = "POD_NAME", default_value = "aexec-operator")]
    pub instance: String,

    /// Replicas are pods named by `--instance` (POD_NAME), in the namespace of
    /// `--leader-election-namespace` (POD_NAMESPACE): when the pod of a session's broker is
    /// gone (deleted without a clean shutdown, evicted, its node lost) the leader ends the
    /// session at once, instead of waiting for its maximum duration. The chart sets it.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, env = "AEXEC_REPLICAS_ARE_PODS")]
    pub replicas_are_pods: bool,

    /// The most people who may watch one session live at once (`kubectl aexec watch`); each
    /// costs up to 256 KiB of queued output while it falls behind. One more is refused with
    /// 429 and told to try again when one leaves.
    #[arg(long, default_value_t = crate::broker::attach::MAX_WATCHERS,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=1000), usize::from),
          env = "AEXEC_MAX_WATCHERS_PER_SESSION")]
    pub max_watchers_per_session: usize,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "AEXEC_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Run the controller on one replica at a time, elected through the Lease `aexec-operator`
    /// (every replica serves the aggregated API and brokers). `--leader-elect=false` for a
    /// single replica.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "AEXEC_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Namespace of the Lease; default: the kubeconfig's or in-cluster namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// How long the Lease stays valid without renewal: how soon another replica takes over
    /// from one that died (whole seconds, at least 3s).
    #[arg(long, default_value = "15s", value_parser = crate::control::leader::parse_lease_duration, env = "AEXEC_LEADER_ELECTION_LEASE_DURATION")]
    pub leader_election_lease_duration: Duration,

    /// The Secret (in the operator's namespace) holding the Ed25519 keys that sign session
    /// records, as `signing-key-<N>.pem` entries; the highest N signs. The chart creates it.
    #[arg(
        long,
        default_value = "aexec-operator-signing",
        env = "AEXEC_SIGNING_KEY_SECRET"
    )]
    pub signing_key_secret: String,

    /// The ConfigMap (in the operator's namespace) where the public keys are published for
    /// auditors (`<key id>.pem`, only ever added to); empty for none. The chart creates it.
    #[arg(
        long,
        default_value = "aexec-operator-signing-keys",
        env = "AEXEC_SIGNING_KEYS_CONFIGMAP"
    )]
    pub signing_keys_configmap: String,

    /// On SIGTERM, how long sessions this replica relays may go on to end by themselves; then
    /// each is ended (the user is told, the recording sealed and marked interrupted) and the
    /// spool is uploaded. Keep it, plus about 30s, under the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "AEXEC_SHUTDOWN_GRACE")]
    pub shutdown_grace: Duration,
}

/// How long a shutdown waits for stopped sessions to write their end, and for the spool to
/// reach the store, each.
const SHUTDOWN_WRITE: Duration = Duration::from_secs(15);

/// Recording stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// A local directory (--recordings-dir).
    Local,
    /// An S3 bucket or S3-compatible store (--s3-*).
    S3,
}

impl Args {
    /// The recording store the arguments describe.
    pub async fn store(&self) -> Result<crate::record::storage::Store> {
        use crate::record::storage::{LocalDir, S3Settings, S3Store, Store};
        Ok(match self.storage {
            StorageKind::Local => Store::Local(LocalDir::new(self.recordings_dir.clone())),
            StorageKind::S3 => Store::S3(
                S3Store::new(S3Settings {
                    bucket: self.s3_bucket.clone(),
                    prefix: self.s3_prefix.clone(),
                    endpoint: self.s3_endpoint.clone(),
                    region: self.s3_region.clone(),
                    force_path_style: self.s3_force_path_style,
                    object_lock: self.s3_object_lock_mode.zip(self.s3_object_lock_days),
                })
                .await?,
            ),
        })
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: kube::core::Duration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 30m or 168h: {e}"))?;
    if d.is_negative() {
        return Err(format!("{s:?} is negative"));
    }
    Ok(d.into())
}

impl Args {
    /// Parses the command line and runs the operator.
    pub fn parse_and_run() -> Result<()> {
        let args = Args::parse();
        init_logging(args.log_format);
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(run(args))
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = fmt().with_env_filter(filter).with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

async fn config(kubeconfig: Option<&PathBuf>) -> Result<Config> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => Config::infer()
            .await
            .context("finding the cluster (kubeconfig or in-cluster)")?,
    };
    Ok(config)
}

/// Shared by the operations endpoint.
#[derive(Clone)]
struct Ops {
    metrics: Metrics,
    /// The session cache of the controller, while this replica runs it.
    sessions: Arc<Mutex<Option<Store<ExecSession>>>>,
    /// Whether this replica runs the controller (holds the lease).
    leading: watch::Receiver<bool>,
}

/// Runs every task until a shutdown signal.
pub async fn run(args: Args) -> Result<()> {
    // Sessions claimed before this instant belong to an earlier process of this instance.
    let process_started = k8s_openapi::jiff::Timestamp::now();
    let config = config(args.kubeconfig.as_ref()).await?;
    let client = aexec_client::client(config.clone())?;
    let metrics = Metrics::default();
    let spool = Arc::new(
        crate::record::spool::Spool::open(
            args.spool_dir.clone(),
            args.spool_max_bytes,
            args.store().await?,
            metrics.clone(),
        )
        .await?,
    );
    let front_proxy = Arc::new(FrontProxy::load(&client).await?);
    // A notifications file that cannot be read stops the start: a typo is said at once, not
    // discovered when nobody hears of a request.
    let notifier = match &args.notifications {
        Some(path) => {
            let text = tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("reading the notifications file {}", path.display()))?;
            let config = crate::control::notify::parse(&text).map_err(anyhow::Error::msg)?;
            info!(webhooks = config.webhooks.len(), "notifications configured");
            Some(crate::control::notify::Notifier::start(
                config,
                metrics.clone(),
            )?)
        }
        None => None,
    };
    // The operator's own namespace: its Lease, its signing keys.
    let namespace = args
        .leader_election_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let signer = crate::record::signing::Signer::new(
        client.clone(),
        &namespace,
        &args.signing_key_secret,
        Some(args.signing_keys_configmap.as_str()).filter(|c| !c.is_empty()),
    );
    // Without a key no session record can be signed: a misconfiguration is said at once.
    let keys = signer
        .keys()
        .await
        .context("the session records cannot be signed")?;
    info!(key_id = %keys.signing.id(), keys = keys.ring.keys().len(), "session records are signed");
    if let Err(e) = signer.publish(&keys.ring).await {
        warn!(error = %e, "the public keys could not be published in the ConfigMap; the aggregated API still serves them");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let (leading_tx, leading) = watch::channel(false);
    let ops = Ops {
        metrics: metrics.clone(),
        sessions: Arc::new(Mutex::new(None)),
        leading,
    };
    let ops_listener = tokio::net::TcpListener::bind(args.ops_bind)
        .await
        .with_context(|| format!("binding the operations endpoint to {}", args.ops_bind))?;
    let ops_app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ops.clone());
    let ops_task = tokio::spawn({
        let stop = stopped();
        async move {
            axum::serve(ops_listener, ops_app)
                .with_graceful_shutdown(stop)
                .await
        }
        .instrument(info_span!("ops"))
    });

    // Listed before the aggregated API serves: what is Active on this replica now was relayed
    // by its previous life.
    let interrupted = crate::record::recorder::interrupted_sessions(&client, &args.instance)
        .instrument(info_span!("recovery"))
        .await;
    let sessions =
        crate::broker::attach::Sessions::with_max_watchers(args.max_watchers_per_session);
    let api_task = tokio::spawn({
        let state = AppState {
            client: client.clone(),
            front_proxy,
            metrics: metrics.clone(),
            recorder: kube::runtime::events::Recorder::new(
                client.clone(),
                Reporter {
                    controller: "aexec-operator".into(),
                    instance: Some(args.instance.clone()),
                },
            ),
            instance: args.instance.clone(),
            sessions: sessions.clone(),
            recordings: spool.clone(),
            signer: signer.clone(),
            peers: std::sync::Arc::new(
                crate::api::peer::Peers::load(
                    &args.tls_cert_file,
                    &args.tls_private_key_file,
                    args.advertise_address
                        .map(|ip| SocketAddr::new(ip, args.api_bind.port())),
                )
                .context("loading the serving certificate for the replicas' peer connections")?,
            ),
        };
        let stop = stopped();
        let (bind, cert, key) = (
            args.api_bind,
            args.tls_cert_file.clone(),
            args.tls_private_key_file.clone(),
        );
        async move { server::serve(bind, &cert, &key, state, stop).await }
            .instrument(info_span!("apiserver"))
    });

    // Sessions this replica relays end at once when their ExecSession is deleted.
    tokio::spawn(
        crate::broker::attach::watch_deletions(
            client.clone(),
            sessions.clone(),
            args.instance.clone(),
            stopped(),
        )
        .instrument(info_span!("deletions")),
    );

    // The controller runs while this replica leads (always, without leader election).
    let election = match args.leader_elect {
        true => Some(leader::Election {
            namespace: namespace.clone(),
            identity: args.instance.clone(),
            timing: leader::Timing::for_duration(args.leader_election_lease_duration)
                .map_err(anyhow::Error::msg)?,
        }),
        false => None,
    };
    let lease_client = match &election {
        Some(e) => Some(leader::lease_client(&config, &e.timing)?),
        None => None,
    };
    let controller_task = tokio::spawn({
        let sessions = ops.sessions.clone();
        let stop = stopped();
        let reporter = Reporter {
            controller: "aexec-operator".into(),
            instance: Some(args.instance.clone()),
        };
        let (client, metrics) = (client.clone(), metrics.clone());
        let (default_policy, retention) = (args.default_policy, args.retention);
        let replica_pods = args.replicas_are_pods.then(|| {
            args.leader_election_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned())
        });
        let spool = spool.clone();
        let (signer, instance) = (signer.clone(), args.instance.clone());
        let lead = move |stop_leading: leader::StopLeading| {
            // The leader notifies (once, whichever replica leads), beside its controller.
            let notifying = notifier.clone().map(|n| {
                tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                    crate::control::notify::watch(client.clone(), n),
                ))
            });
            let (client, metrics, reporter, sessions, recordings, replica_pods, signer, instance) = (
                client.clone(),
                metrics.clone(),
                reporter.clone(),
                sessions.clone(),
                spool.clone(),
                replica_pods.clone(),
                signer.clone(),
                instance.clone(),
            );
            async move {
                let cache = sessions.clone();
                controller::run(
                    client,
                    metrics,
                    controller::Settings {
                        default_policy,
                        retention,
                        recordings,
                        replica_pods,
                        signer,
                        instance,
                    },
                    reporter,
                    move |store| {
                        if let Ok(mut s) = cache.lock() {
                            *s = Some(store);
                        }
                    },
                    stop_leading,
                )
                .await;
                if let Ok(mut s) = sessions.lock() {
                    *s = None;
                }
                drop(notifying);
            }
        };
        async move {
            match (election, lease_client) {
                (Some(election), Some(lease_client)) => {
                    leader::run(lease_client, election, leading_tx, stop, lead).await
                }
                _ => {
                    leading_tx.send_replace(true);
                    lead(Box::pin(stop)).await
                }
            }
        }
        .instrument(info_span!("controller"))
    });

    // The uploader outlives the sessions at shutdown: it stops only after they are sealed.
    let (stop_uploads, uploads_stopped) = tokio::sync::oneshot::channel::<()>();
    let upload_task = tokio::spawn(
        spool
            .clone()
            .upload_loop(async move {
                let _ = uploads_stopped.await;
            })
            .instrument(info_span!("uploader")),
    );
    // Sessions this replica was relaying when it stopped (a crash, a SIGKILL) cannot resume:
    // their recordings are sealed as interrupted and the sessions ended.
    tokio::spawn(
        crate::record::recorder::recover(
            client.clone(),
            spool.clone(),
            args.instance.clone(),
            interrupted,
            process_started,
        )
        .instrument(info_span!("recovery")),
    );

    info!("operator running");
    shutdown_signal().await;
    info!("shutting down");
    // New connections and the controller stop (the lease is released); sessions relayed here
    // get the grace to end, then are ended and sealed; then what the spool holds is uploaded,
    // since a pod's spool (an emptyDir) does not outlive it.
    let _ = stop_tx.send(true);
    sessions
        .shut_down(args.shutdown_grace, SHUTDOWN_WRITE)
        .instrument(info_span!("shutdown"))
        .await;
    let _ = stop_uploads.send(());
    let _ = upload_task.await;
    if let Err(e) = spool.drain(SHUTDOWN_WRITE).await {
        warn!(error = %format!("{e:#}"), "recordings left in the spool at exit; this replica uploads them when it starts again");
    }
    let (api, ops, ctl) = tokio::join!(api_task, ops_task, controller_task);
    if let Ok(Err(e)) = api {
        error!(error = %e, "aggregated API");
        return Err(e);
    }
    if let Ok(Err(e)) = ops {
        error!(error = %e, "operations endpoint");
    }
    ctl.ok();
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    // A standby replica serves the aggregated API and brokers: it is ready as soon as it runs.
    // The leader once its controller runs (policy cache filled). The session cache is not
    // awaited here: a probe waiting on it could take the one wake-up kube-runtime's store gives
    // from the controller, which waits on it to start reconciling.
    if !*ops.leading.borrow() {
        return (StatusCode::OK, "ok");
    }
    match ops.sessions.lock().ok().and_then(|s| s.clone()) {
        Some(_) => (StatusCode::OK, "ok"),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller is starting (its policy cache is not filled yet)",
        ),
    }
}

async fn metrics_text(State(ops): State<Ops>) -> impl IntoResponse {
    ops.metrics.leader.set(i64::from(*ops.leading.borrow()));
    let store = ops.sessions.lock().ok().and_then(|s| s.clone());
    match store {
        Some(store) => controller::observe_phases(&store, &ops.metrics),
        // Only the replica running the controller counts sessions.
        None => ops.metrics.sessions.clear(),
    }
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ops.metrics.render(),
    )
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").finish_non_exhaustive()
    }
}
