//! The operator as a real process behind a real APIService: the test environment runs the
//! operator binary on the operator's address, registers it with the aggregation layer (Service,
//! EndpointSlice, APIService) and waits until the API server calls it Available.

use std::{
    net::{SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use tokio::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{TestEnv, User, env::apply_yaml, netns, process, process::Component};

/// Port of the aggregated API (HTTPS) on the operator's address.
pub const API_PORT: u16 = 8443;
/// Port of the operations endpoint (health, metrics).
pub const OPS_PORT: u16 = 8080;
/// How long the test operator keeps finished sessions: short, so that deletion is tested, and
/// long enough for every test to inspect its finished sessions.
pub const RETENTION: Duration = Duration::from_secs(40);
/// The test operator's spool budget: larger than any test's burst while MinIO is up, small
/// enough that an outage test fills it quickly. `AEXEC_TEST_SPOOL_MAX_BYTES` overrides it
/// (the benchmarks move hundreds of MiB).
pub const SPOOL_MAX_BYTES: u64 = 32 << 20;
/// Namespace of the operator's Service.
pub const NAMESPACE: &str = "aexec-system";

/// The shared operator. Tests that use it hold a read guard; a test that restarts or kills it
/// takes the write guard, so it never pulls the operator from under another test.
pub struct Operator {
    process: Mutex<Option<Component>>,
    lock: RwLock<()>,
    registered: tokio::sync::OnceCell<()>,
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
            lock: RwLock::new(()),
            registered: tokio::sync::OnceCell::new(),
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

    /// Kills the operator with SIGKILL (hold [`Self::operator_exclusive`]).
    pub async fn kill_operator(&self) {
        if let Some(mut c) = self.operator.process.lock().await.take() {
            c.kill();
        }
    }

    /// Starts the operator if it is not running, and waits until it serves.
    pub async fn ensure_operator(&self) -> Result<()> {
        let mut slot = self.operator.process.lock().await;
        if slot.as_mut().is_some_and(|c| c.check_running().is_ok()) {
            return Ok(());
        }
        *slot = None;
        let pki = self.dir.join("pki");
        let (cert, key) = (pki.join("operator.crt"), pki.join("operator.key"));
        if !cert.exists() {
            self.ca()
                .server(
                    "aexec-operator",
                    &[
                        "aexec-operator.aexec-system.svc",
                        "aexec-operator.aexec-system.svc.cluster.local",
                    ],
                    &[std::net::IpAddr::V4(netns::OPERATOR_IP)],
                )?
                .write(&pki, "operator")?;
        }
        let api = SocketAddr::V4(SocketAddrV4::new(netns::OPERATOR_IP, API_PORT));
        let ops = SocketAddr::V4(SocketAddrV4::new(netns::OPERATOR_IP, OPS_PORT));
        process::ensure_port_free(api, "aexec-operator")?;
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig(User::Admin).display()),
            format!("--api-bind={api}"),
            format!("--ops-bind={ops}"),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-private-key-file={}", key.display()),
            "--default-policy=deny".into(),
            format!("--retention={}s", RETENTION.as_secs()),
            "--instance=aexec-operator-0".into(),
            "--storage=s3".into(),
            format!("--s3-endpoint={}", self.s3.endpoint),
            format!("--s3-bucket={}", self.s3.bucket),
            format!("--s3-region={}", self.s3.region),
            "--s3-force-path-style".into(),
            "--s3-object-lock-mode=GOVERNANCE".into(),
            "--s3-object-lock-days=1".into(),
            format!("--spool-dir={}", self.spool_dir().display()),
            format!(
                "--spool-max-bytes={}",
                std::env::var("AEXEC_TEST_SPOOL_MAX_BYTES")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(SPOOL_MAX_BYTES)
            ),
        ];
        let mut c = Component::spawn(
            "aexec-operator",
            &binary()?,
            &args,
            &[
                ("RUST_LOG", "info,aexec_operator=debug,kube=warn"),
                // The standard AWS credential chain, from the environment.
                ("AWS_ACCESS_KEY_ID", self.s3.access_key.as_str()),
                ("AWS_SECRET_ACCESS_KEY", self.s3.secret_key.as_str()),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
            &self.dir.join("logs"),
        )?;
        let readyz = format!("http://{ops}/readyz");
        c.wait_ready("/readyz", Duration::from_secs(30), async || {
            crate::env::http_ok(&readyz).await
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

    async fn register_operator(&self) -> Result<()> {
        let client = self.client(User::Admin).await?;
        let ca = std::fs::read_to_string(&self.cluster_ca)?;
        let ca = base64::engine::general_purpose::STANDARD.encode(ca);
        let ip = netns::OPERATOR_IP;
        let yaml = format!(
            r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: v1
kind: Service
metadata: {{name: aexec-operator, namespace: {NAMESPACE}}}
spec:
  ports: [{{name: https, port: 443, targetPort: {API_PORT}, protocol: TCP}}]
---
# No kube-controller-manager writes EndpointSlices here: the aggregator needs one, labelled with
# the Service and with a port named like the Service's.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: aexec-operator-local
  namespace: {NAMESPACE}
  labels: {{kubernetes.io/service-name: aexec-operator}}
addressType: IPv4
ports: [{{name: https, port: {API_PORT}, protocol: TCP}}]
endpoints: [{{addresses: ["{ip}"], conditions: {{ready: true}}}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1alpha1.subresources.aexec.dev}}
spec:
  group: subresources.aexec.dev
  version: v1alpha1
  groupPriorityMinimum: 1000
  versionPriority: 15
  service: {{name: aexec-operator, namespace: {NAMESPACE}, port: 443}}
  caBundle: {ca}
"#
        );
        apply_yaml(&client, &yaml).await
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
        let log = self.dir.join("logs/aexec-operator.log");
        Err(anyhow!(
            "the APIService v1alpha1.subresources.aexec.dev did not become Available within 60s ({last}); operator log:\n{}",
            process::tail(&log, 20)
        ))
        .context("registering the operator")
    }
}
