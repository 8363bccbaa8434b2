//! The operator as a real process behind the chart's APIService: the test environment runs the
//! operator binary on the operator's address, authenticated as the chart's ServiceAccount (a
//! TokenRequest token) and serving the chart's certificate, points the chart's Service at it
//! with an EndpointSlice, and waits until the API server calls the APIService Available. Every
//! end-to-end test that uses the operator therefore also proves the chart's RBAC is enough.

use std::{
    net::{SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Secret, ServiceAccount},
};
use kube::{Api, api::PostParams};
use tokio::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{
    TestEnv, User,
    chart::{NAMESPACE as CHART_NAMESPACE, RELEASE},
    env::apply_yaml,
    netns, process,
    process::Component,
};

/// Port of the aggregated API (HTTPS) on the operator's address.
pub const API_PORT: u16 = 8443;
/// Port of the operations endpoint (health, metrics).
pub const OPS_PORT: u16 = 8080;
/// How long the test operator keeps finished sessions: short, so that deletion is tested, and
/// long enough for every test to inspect its finished sessions. `AEXEC_TEST_RETENTION_SECS`
/// overrides it (the load test inspects hundreds of sessions after they end).
pub const RETENTION: Duration = Duration::from_secs(40);
/// The test operator's spool budget: larger than any test's burst while MinIO is up, small
/// enough that an outage test fills it quickly. `AEXEC_TEST_SPOOL_MAX_BYTES` overrides it
/// (the benchmarks move hundreds of MiB).
pub const SPOOL_MAX_BYTES: u64 = 32 << 20;
/// Namespace of the operator's Service, ServiceAccount and Lease (the chart's release namespace).
pub const NAMESPACE: &str = CHART_NAMESPACE;
/// The operator's ServiceAccount, Service and serving-certificate Secret, as the chart names them.
pub const SERVICE_ACCOUNT: &str = RELEASE;
pub const SERVICE: &str = RELEASE;
pub const TLS_SECRET: &str = "aexec-operator-tls";
/// The shared operator's name (its Lease identity and the broker named in session status).
pub const INSTANCE: &str = "aexec-operator-0";

/// The shared operator. Tests that use it hold a read guard; a test that restarts or kills it
/// takes the write guard, so it never pulls the operator from under another test.
pub struct Operator {
    process: Mutex<Option<Component>>,
    storage: std::sync::Mutex<RecordingStore>,
    /// `--notifications` for operators started from now on.
    notifications: std::sync::Mutex<Option<PathBuf>>,
    lock: RwLock<()>,
    registered: tokio::sync::OnceCell<()>,
    credentials: tokio::sync::OnceCell<Credentials>,
}

/// Where the test operator keeps recordings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordingStore {
    /// MinIO's bucket with Object Lock, behind a local spool (what the end-to-end tests use).
    #[default]
    S3,
    /// A directory in the run directory (`recordings/`), the chart's default (the demo's).
    Local,
}

/// What an operator process runs with: the chart's ServiceAccount and serving certificate.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// A kubeconfig with a TokenRequest token of the chart's ServiceAccount.
    pub kubeconfig: PathBuf,
    /// The serving certificate and key from the chart's Secret.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One operator process: which replica it is and where it listens.
#[derive(Clone, Debug)]
pub struct Replica {
    /// Its name: log file, `--instance`, Lease identity.
    pub instance: String,
    pub api: SocketAddr,
    pub ops: SocketAddr,
    /// `--leader-election-lease-duration`.
    pub lease_duration: Duration,
}

impl Replica {
    /// A replica on the operator's address with the given ports.
    pub fn new(instance: &str, api_port: u16, ops_port: u16, lease_duration: Duration) -> Self {
        Replica {
            instance: instance.to_owned(),
            api: SocketAddr::V4(SocketAddrV4::new(netns::OPERATOR_IP, api_port)),
            ops: SocketAddr::V4(SocketAddrV4::new(netns::OPERATOR_IP, ops_port)),
            lease_duration,
        }
    }

    /// A replica on an address of its own with the shared replica's ports, as a second pod
    /// behind the chart's Service would be (see [`TestEnv::set_operator_endpoints`]).
    pub fn at(instance: &str, ip: std::net::Ipv4Addr, lease_duration: Duration) -> Self {
        Replica {
            instance: instance.to_owned(),
            api: SocketAddr::V4(SocketAddrV4::new(ip, API_PORT)),
            ops: SocketAddr::V4(SocketAddrV4::new(ip, OPS_PORT)),
            lease_duration,
        }
    }

    /// GET on its operations endpoint: (status, body).
    pub async fn ops_get(&self, path: &str) -> Option<(u16, String)> {
        crate::env::http_get(&format!("http://{}{path}", self.ops)).await
    }

    /// True when it runs the controller (holds the lease) and its session cache is synced.
    pub async fn leads(&self) -> bool {
        let leader = self
            .ops_get("/metrics")
            .await
            .is_some_and(|(code, m)| code == 200 && m.lines().any(|l| l == "aexec_leader 1"));
        leader && self.ops_get("/readyz").await.is_some_and(|(c, _)| c == 200)
    }
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator").finish_non_exhaustive()
    }
}

impl Default for Operator {
    fn default() -> Self {
        Operator {
            process: Mutex::new(None),
            storage: std::sync::Mutex::new(RecordingStore::default()),
            notifications: std::sync::Mutex::new(None),
            lock: RwLock::new(()),
            registered: tokio::sync::OnceCell::new(),
            credentials: tokio::sync::OnceCell::new(),
        }
    }
}

/// The operator binary: `AEXEC_OPERATOR_BIN`, or next to the test binary's directory
/// (`target/debug/deps/e2e-*` -> `target/debug/aexec-operator`).
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AEXEC_OPERATOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("aexec-operator");
    if !bin.exists() {
        bail!(
            "the operator binary is not built ({}): run `cargo build -p aexec-operator` first (./dev test does)",
            bin.display()
        );
    }
    Ok(bin)
}

impl TestEnv {
    /// The operator, started and registered on first use; hold the guard while using it.
    pub async fn operator(&self) -> Result<RwLockReadGuard<'_, ()>> {
        let guard = self.operator.lock.read().await;
        self.ensure_operator().await?;
        Ok(guard)
    }

    /// Exclusive use of the operator, for tests that kill or restart it.
    pub async fn operator_exclusive(&self) -> Result<RwLockWriteGuard<'_, ()>> {
        let guard = self.operator.lock.write().await;
        self.ensure_operator().await?;
        Ok(guard)
    }

    /// Chooses where operators started from now on keep recordings (MinIO by default).
    pub fn set_recording_store(&self, store: RecordingStore) {
        if let Ok(mut s) = self.operator.storage.lock() {
            *s = store;
        }
    }

    /// Makes operators started from now on notify the webhooks of `file` (`None`: none). Hold
    /// [`Self::operator_exclusive`] and restart the operator for it to take effect.
    pub fn set_notifications(&self, file: Option<PathBuf>) {
        if let Ok(mut n) = self.operator.notifications.lock() {
            *n = file;
        }
    }

    pub(crate) fn recording_store(&self) -> RecordingStore {
        self.operator.storage.lock().map(|s| *s).unwrap_or_default()
    }

    /// The directory operators keep recordings in with [`RecordingStore::Local`].
    pub fn recordings_dir(&self) -> PathBuf {
        self.dir.join("recordings")
    }

    /// The test operator's local spool, where recording files wait for upload to MinIO.
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// The operator's process id as `/proc` shows it, while it runs (for memory and CPU
    /// figures). `/proc` is the host's (the run has its own PID namespace but not its own
    /// mount of /proc), so the process is found by its `--spool-dir`, unique to this run.
    pub async fn operator_pid(&self) -> Option<u32> {
        self.operator.process.lock().await.as_ref()?;
        let marker = format!("--spool-dir={}", self.spool_dir().display());
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            cmdline
                .split(|&b| b == 0)
                .any(|a| a == marker.as_bytes())
                .then_some(pid)
        })
    }

    /// The process ids, as `/proc` shows them, of this run's control plane and operator
    /// (etcd, kube-apiserver, kwok, MinIO, aexec-operator), for CPU and memory figures. As in
    /// [`Self::operator_pid`], a process is found by an argument naming this run's directory;
    /// it is named by its program, whose file name carries a version (`kube-apiserver-v1.35.4`).
    pub fn component_pids(&self) -> Vec<(&'static str, u32)> {
        const NAMES: [&str; 5] = ["etcd", "kube-apiserver", "kwok", "minio", "aexec-operator"];
        let dir = format!("{}/", self.dir.display());
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let mut args = cmdline.split(|&b| b == 0).map(String::from_utf8_lossy);
                let program = args.next()?;
                let program = program.rsplit('/').next()?;
                let name = NAMES
                    .into_iter()
                    .find(|n| program == *n || program.starts_with(&format!("{n}-")))?;
                args.any(|a| a.contains(&dir)).then_some((name, pid))
            })
            .collect()
    }

    /// The spool of a replica: each has its own, as each pod has its own emptyDir.
    fn replica_spool_dir(&self, replica: &Replica) -> PathBuf {
        if replica.instance == INSTANCE {
            self.spool_dir()
        } else {
            self.dir.join(format!("spool-{}", replica.instance))
        }
    }

    /// Kills the operator with SIGKILL (hold [`Self::operator_exclusive`]).
    pub async fn kill_operator(&self) {
        if let Some(mut c) = self.operator.process.lock().await.take() {
            c.kill();
        }
    }

    /// Stops the operator with SIGTERM, as Kubernetes does: it finishes its work and releases
    /// the lease (hold [`Self::operator_exclusive`]).
    pub async fn stop_operator(&self) -> Result<()> {
        if let Some(mut c) = self.operator.process.lock().await.take() {
            c.terminate(Duration::from_secs(20)).await?;
        }
        Ok(())
    }

    /// The shared operator's replica.
    pub fn shared_replica() -> Replica {
        Replica::new(INSTANCE, API_PORT, OPS_PORT, Duration::from_secs(15))
    }

    /// Starts the operator if it is not running, and waits until it serves and leads.
    pub async fn ensure_operator(&self) -> Result<()> {
        let mut slot = self.operator.process.lock().await;
        if slot.as_mut().is_some_and(|c| c.check_running().is_ok()) {
            return Ok(());
        }
        *slot = None;
        let replica = Self::shared_replica();
        let mut c = self.spawn_operator(&replica).await?;
        c.wait_ready("leading", Duration::from_secs(60), async || {
            replica.leads().await
        })
        .await?;
        *slot = Some(c);
        drop(slot);
        self.operator
            .registered
            .get_or_try_init(|| self.register_operator())
            .await?;
        self.wait_apiservice_available().await
    }

    /// Starts the shared replica again after [`Self::stop_operator`] while another replica
    /// holds the lease: it serves (healthz) but does not lead until that one goes.
    pub async fn restart_operator_as_follower(&self) -> Result<()> {
        let mut slot = self.operator.process.lock().await;
        if slot.as_mut().is_some_and(|c| c.check_running().is_ok()) {
            bail!("the shared operator still runs");
        }
        *slot = Some(self.spawn_operator(&Self::shared_replica()).await?);
        Ok(())
    }

    /// Starts an operator process for `replica` as the chart's ServiceAccount, and waits until
    /// it answers on its operations endpoint (not until it leads).
    pub async fn spawn_operator(&self, replica: &Replica) -> Result<Component> {
        let creds = self
            .operator
            .credentials
            .get_or_try_init(|| self.operator_credentials())
            .await?;
        process::ensure_port_free(replica.api, &replica.instance)?;
        let mut args = vec![
            format!("--kubeconfig={}", creds.kubeconfig.display()),
            format!("--api-bind={}", replica.api),
            format!("--ops-bind={}", replica.ops),
            format!("--tls-cert-file={}", creds.cert.display()),
            format!("--tls-private-key-file={}", creds.key.display()),
            "--default-policy=deny".into(),
            format!(
                "--retention={}s",
                env_u64("AEXEC_TEST_RETENTION_SECS").unwrap_or(RETENTION.as_secs())
            ),
            format!("--instance={}", replica.instance),
            // As the chart's POD_IP: where the other replicas forward watches.
            format!("--advertise-address={}", replica.api.ip()),
            format!(
                "--leader-election-lease-duration={}s",
                replica.lease_duration.as_secs()
            ),
            format!("--spool-dir={}", self.replica_spool_dir(replica).display()),
            format!(
                "--spool-max-bytes={}",
                env_u64("AEXEC_TEST_SPOOL_MAX_BYTES").unwrap_or(SPOOL_MAX_BYTES)
            ),
        ];
        if let Some(file) = self
            .operator
            .notifications
            .lock()
            .ok()
            .and_then(|n| n.clone())
        {
            args.push(format!("--notifications={}", file.display()));
        }
        args.extend(match self.recording_store() {
            RecordingStore::S3 => vec![
                "--storage=s3".into(),
                format!("--s3-endpoint={}", self.s3.endpoint),
                format!("--s3-bucket={}", self.s3.bucket),
                format!("--s3-region={}", self.s3.region),
                "--s3-force-path-style".into(),
                "--s3-object-lock-mode=GOVERNANCE".into(),
                "--s3-object-lock-days=1".into(),
            ],
            RecordingStore::Local => vec![
                "--storage=local".into(),
                format!("--recordings-dir={}", self.recordings_dir().display()),
            ],
        });
        let mut c = Component::spawn(
            &replica.instance,
            &binary()?,
            &args,
            &[
                ("RUST_LOG", "info,aexec_operator=debug,kube=warn"),
                // As the chart's Deployment sets it: the Lease's namespace.
                ("POD_NAMESPACE", NAMESPACE),
                // The standard AWS credential chain, from the environment.
                ("AWS_ACCESS_KEY_ID", self.s3.access_key.as_str()),
                ("AWS_SECRET_ACCESS_KEY", self.s3.secret_key.as_str()),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
            &self.dir.join("logs"),
        )?;
        let healthz = format!("http://{}/healthz", replica.ops);
        c.wait_ready("/healthz", Duration::from_secs(30), async || {
            crate::env::http_ok(&healthz).await
        })
        .await?;
        Ok(c)
    }

    /// The kubeconfig with the chart ServiceAccount's token (see [`Credentials`]).
    pub async fn operator_kubeconfig(&self) -> Result<PathBuf> {
        Ok(self
            .operator
            .credentials
            .get_or_try_init(|| self.operator_credentials())
            .await?
            .kubeconfig
            .clone())
    }

    /// A token of the chart's ServiceAccount (TokenRequest, as the kubelet would project it)
    /// in a kubeconfig, and the chart's serving certificate, written to the run directory.
    async fn operator_credentials(&self) -> Result<Credentials> {
        let admin = self.client(User::Admin).await?;
        let pki = self.dir.join("pki");
        let secret = Api::<Secret>::namespaced(admin.clone(), NAMESPACE)
            .get(TLS_SECRET)
            .await
            .with_context(|| format!("reading the chart's Secret {NAMESPACE}/{TLS_SECRET}"))?;
        let data = secret.data.unwrap_or_default();
        let (cert, key) = (pki.join("operator.crt"), pki.join("operator.key"));
        for (file, field) in [(&cert, "tls.crt"), (&key, "tls.key")] {
            let bytes = data
                .get(field)
                .with_context(|| format!("the chart's Secret {TLS_SECRET} has no {field}"))?;
            std::fs::write(file, &bytes.0)?;
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(24 * 3600),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let token = Api::<ServiceAccount>::namespaced(admin, NAMESPACE)
            .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
            .await
            .with_context(|| {
                format!("requesting a token for the chart's ServiceAccount {NAMESPACE}/{SERVICE_ACCOUNT}")
            })?
            .status
            .context("TokenRequest without a status")?
            .token;
        let ca = std::fs::read_to_string(&self.cluster_ca)?;
        let ca = base64::engine::general_purpose::STANDARD.encode(ca);
        let kubeconfig = self.dir.join("operator.kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: aexec-local\n  cluster:\n    server: {}\n    \
                 certificate-authority-data: {ca}\nusers:\n- name: {SERVICE_ACCOUNT}\n  user:\n    token: {token}\n\
                 contexts:\n- name: {SERVICE_ACCOUNT}\n  context:\n    cluster: aexec-local\n    user: {SERVICE_ACCOUNT}\n    \
                 namespace: {NAMESPACE}\ncurrent-context: {SERVICE_ACCOUNT}\n",
                self.server
            ),
        )?;
        Ok(Credentials {
            kubeconfig,
            cert,
            key,
        })
    }

    /// Rewrites the endpoints of the chart's Service, as the EndpointSlice controller does
    /// from the operator's pods: each address with its readiness (a terminating pod is not
    /// ready). The aggregator sends each request to one of the ready ones.
    pub async fn set_operator_endpoints(
        &self,
        endpoints: &[(std::net::Ipv4Addr, bool)],
    ) -> Result<()> {
        let client = self.client(User::Admin).await?;
        let list: Vec<String> = endpoints
            .iter()
            .map(|(ip, ready)| {
                format!(r#"{{addresses: ["{ip}"], conditions: {{ready: {ready}}}}}"#)
            })
            .collect();
        apply_yaml(&client, &endpoint_slice(&list.join(", "))).await
    }

    /// Points the chart's Service at the operator process. The chart's Service selects the
    /// operator's pods, which kwok never runs, and no kube-controller-manager writes
    /// EndpointSlices here: the environment writes the one the aggregator resolves (labelled
    /// with the Service, its port named like the Service's port). In a cluster the
    /// EndpointSlice controller writes it from the ready pods.
    async fn register_operator(&self) -> Result<()> {
        self.set_operator_endpoints(&[(netns::OPERATOR_IP, true)])
            .await
    }

    async fn wait_apiservice_available(&self) -> Result<()> {
        let client = self.client(User::Admin).await?;
        let start = std::time::Instant::now();
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(60) {
            let req = http::Request::get(
                "/apis/apiregistration.k8s.io/v1/apiservices/v1alpha1.subresources.aexec.dev",
            )
            .body(Vec::new())?;
            if let Ok(v) = client.request::<serde_json::Value>(req).await {
                let cond = v["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Available").cloned());
                if let Some(c) = cond {
                    if c["status"] == "True" {
                        return Ok(());
                    }
                    last = format!("{}: {}", c["reason"], c["message"]);
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let log = self.dir.join(format!("logs/{INSTANCE}.log"));
        Err(anyhow!(
            "the APIService v1alpha1.subresources.aexec.dev did not become Available within 60s ({last}); operator log:\n{}",
            process::tail(&log, 20)
        ))
        .context("registering the operator")
    }
}

/// The EndpointSlice of the chart's Service with `endpoints` (YAML flow items), labelled as the
/// aggregator looks it up, its port named like the Service's.
fn endpoint_slice(endpoints: &str) -> String {
    format!(
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {SERVICE}-testenv
  namespace: {NAMESPACE}
  labels: {{kubernetes.io/service-name: {SERVICE}, endpointslice.kubernetes.io/managed-by: aexec-testenv}}
addressType: IPv4
ports: [{{name: https, port: {API_PORT}, protocol: TCP}}]
endpoints: [{endpoints}]
"#
    )
}

/// A whole number from the environment, if `name` holds one.
fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}
