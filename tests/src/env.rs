//! Starting the control plane and handing out what tests need: clients per user, fresh
//! namespaces with running pods, the S3 endpoint.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};

use crate::{
    netns,
    pki::{self, Ca},
    process::{self, Component},
    upstream::Upstream,
};

const ETCD_PORT: u16 = 2379;
const APISERVER_PORT: u16 = 6443;
const KUBELET_PORT: u16 = 10250;
const MINIO_PORT: u16 = 9000;
/// The kwok node every test pod runs on.
pub const NODE_NAME: &str = "kwok-node-0";

/// The test users: client certificates with CN = user name and O = group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum User {
    /// Cluster admin (`system:masters`).
    Admin,
    /// A developer who requests sessions (group `dev`).
    Alice,
    /// An SRE who approves sessions (group `sre`).
    Bob,
    /// An auditor who reads sessions and recordings (group `audit`).
    Carol,
    /// A second SRE approver (group `sre`).
    Dave,
    /// Authenticated, but granted nothing.
    Mallory,
}

impl User {
    pub const ALL: [User; 6] = [
        User::Admin,
        User::Alice,
        User::Bob,
        User::Carol,
        User::Dave,
        User::Mallory,
    ];

    /// The user name the API server sees.
    pub fn name(self) -> &'static str {
        match self {
            User::Admin => "admin",
            User::Alice => "alice",
            User::Bob => "bob",
            User::Carol => "carol",
            User::Dave => "dave",
            User::Mallory => "mallory",
        }
    }

    /// The user's group (certificate O), if any.
    pub fn group(self) -> Option<&'static str> {
        match self {
            User::Admin => Some("system:masters"),
            User::Alice => Some("dev"),
            User::Bob | User::Dave => Some("sre"),
            User::Carol => Some("audit"),
            User::Mallory => None,
        }
    }
}

/// The S3 server (MinIO) and its bucket.
#[derive(Clone, Debug)]
pub struct S3 {
    /// Its URL from the run's namespace (tests, a local operator).
    pub endpoint: String,
    /// Its URL from a pod (the operator in the cluster).
    pub pod_endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

/// A fresh namespace with one running pod on the kwok node.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub uid: String,
}

/// What plays the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// kwok: every exec is a local process on the test machine. Fast; most end-to-end tests.
    Kwok,
    /// A real kubelet with containerd and runc, and the operator running in the cluster from
    /// its image (the `real_node_` tests, the demo).
    Real,
}

/// Set by `aexec-testenv run --node real` for what runs inside: which node to start.
pub const NODE_KIND_ENV: &str = "AEXEC_TESTENV_NODE";
/// Set by the runner: the run's id (its cgroups are named after it).
pub const RUN_ID_ENV: &str = "AEXEC_TESTENV_RUN_ID";

impl NodeKind {
    /// The node this process was started for.
    pub fn current() -> NodeKind {
        match std::env::var(NODE_KIND_ENV).as_deref() {
            Ok("real") => NodeKind::Real,
            _ => NodeKind::Kwok,
        }
    }
}

/// A running control plane.
#[derive(Debug)]
pub struct TestEnv {
    /// Run directory: certificates, kubeconfigs, data and `logs/`.
    pub dir: PathBuf,
    /// The API server's URL.
    pub server: String,
    /// The S3 server.
    pub s3: S3,
    /// The upstream binaries (kubectl and helm at the server's version among them).
    pub upstream: Upstream,
    /// Certificate authorities, for components the tests start later (the operator).
    pub front_proxy_ca: PathBuf,
    pub cluster_ca: PathBuf,
    /// What plays the node.
    pub node: NodeKind,
    /// The real node's programs (with [`NodeKind::Real`]).
    node_binaries: Option<crate::node::NodeBinaries>,
    run_id: String,
    components: Mutex<Vec<Component>>,
    ca: Ca,
    pub(crate) operator: crate::operator::Operator,
}

/// How to start one component.
pub(crate) struct Launch<'a> {
    pub name: &'a str,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub envs: &'a [(&'a str, &'a str)],
    /// The port it serves on, checked free before it starts (`None`: a unix socket).
    pub port: Option<SocketAddr>,
    pub timeout: Duration,
}

static SHARED: OnceLock<Result<TestEnv, String>> = OnceLock::new();

impl TestEnv {
    /// The control plane of this process, started on first use. Tests in one binary share it and
    /// isolate themselves by namespace. Panics with the reason if it cannot start (every test
    /// then reports the same reason: it is tried once).
    pub fn shared() -> &'static TestEnv {
        let started = SHARED.get_or_init(|| {
            // A thread and runtime of their own: each #[tokio::test] has a runtime that ends with
            // the test, and nothing of the shared environment may depend on one of those.
            std::thread::scope(|s| {
                s.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(TestEnv::start()).map_err(|e| format!("{e:#}"))
                })
                .join()
                .unwrap_or_else(|_| Err("starting it panicked".into()))
            })
        });
        match started {
            Ok(env) => env,
            Err(e) => panic!("the local control plane did not start: {e}"),
        }
    }

    /// Starts etcd, kube-apiserver, kwok and MinIO in this network namespace, in the directory
    /// named by `AEXEC_TESTENV_DIR` (or a new temporary one), and bootstraps the cluster.
    pub async fn start() -> Result<TestEnv> {
        let dir = match std::env::var_os("AEXEC_TESTENV_DIR") {
            Some(d) => PathBuf::from(d),
            None => std::env::temp_dir().join(format!("aexec-testenv-{}", std::process::id())),
        };
        Self::start_in(dir).await
    }

    /// Starts the control plane with `dir` as its run directory.
    pub async fn start_in(dir: PathBuf) -> Result<TestEnv> {
        Self::start_with(dir, crate::operator::RecordingStore::S3).await
    }

    /// Starts the control plane with `dir` as its run directory; operators keep recordings in
    /// `store` (on a real node that is how the chart installs the operator).
    pub async fn start_with(
        dir: PathBuf,
        store: crate::operator::RecordingStore,
    ) -> Result<TestEnv> {
        if !netns::inside() {
            bail!(
                "the local control plane runs inside a private network namespace: run tests \
                 through `./dev test`, or wrap the command: \
                 `cargo run -p aexec-tests --bin aexec-testenv -- run -- <command>`"
            );
        }
        let upstream = Upstream::require()?;
        let node = NodeKind::current();
        let node_binaries = match node {
            NodeKind::Real => Some(crate::node::NodeBinaries::require(&Upstream::paths()?)?),
            NodeKind::Kwok => None,
        };
        let logs = dir.join("logs");
        let pki_dir = dir.join("pki");
        for d in [&logs, &pki_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }

        let ca = Ca::new("aexec-test-ca")?;
        ca.pem.write(&pki_dir, "ca")?;
        let front_proxy = Ca::new("aexec-front-proxy-ca")?;
        front_proxy.pem.write(&pki_dir, "front-proxy-ca")?;
        front_proxy
            .client("front-proxy-client", None)?
            .write(&pki_dir, "front-proxy-client")?;
        ca.server(
            "kube-apiserver",
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
            &netns::addresses(),
        )?
        .write(&pki_dir, "apiserver")?;
        ca.server("kwok-node", &[NODE_NAME], &netns::addresses())?
            .write(&pki_dir, "kubelet")?;
        ca.client("kube-apiserver-kubelet-client", Some("system:masters"))?
            .write(&pki_dir, "apiserver-kubelet-client")?;
        let (sa_key, sa_pub) = pki::service_account_key()?;
        std::fs::write(pki_dir.join("sa.key"), sa_key)?;
        std::fs::write(pki_dir.join("sa.pub"), sa_pub)?;

        let server = format!("https://{}:{APISERVER_PORT}", netns::APISERVER_IP);
        for user in User::ALL {
            let cert = ca.client(user.name(), user.group())?;
            let kc = kubeconfig(&server, &ca.pem.cert, &cert, user.name());
            let path = dir.join(format!("{}.kubeconfig", user.name()));
            std::fs::write(&path, kc).with_context(|| format!("writing {}", path.display()))?;
        }

        let env = TestEnv {
            front_proxy_ca: pki_dir.join("front-proxy-ca.crt"),
            cluster_ca: pki_dir.join("ca.crt"),
            dir,
            server,
            s3: S3 {
                endpoint: format!("http://127.0.0.1:{MINIO_PORT}"),
                pod_endpoint: format!("http://{}:{MINIO_PORT}", netns::STORE_IP),
                region: "us-east-1".into(),
                bucket: "aexec-recordings".into(),
                access_key: "aexec-test".into(),
                secret_key: "aexec-test-secret".into(),
            },
            upstream,
            node,
            node_binaries,
            run_id: std::env::var(RUN_ID_ENV).unwrap_or_else(|_| std::process::id().to_string()),
            components: Mutex::new(Vec::new()),
            ca,
            operator: Default::default(),
        };
        env.set_recording_store(store);
        env.start_etcd().await?;
        env.start_apiserver().await?;
        env.bootstrap().await?;
        env.start_minio().await?;
        match node {
            NodeKind::Kwok => env.start_kwok().await?,
            NodeKind::Real => {
                env.start_real_node().await?;
                env.install_operator_in_cluster().await?;
            }
        }
        Ok(env)
    }

    /// The real node's programs; an error in a kwok environment.
    pub fn node_binaries(&self) -> Result<&crate::node::NodeBinaries> {
        self.node_binaries.as_ref().context(
            "this control plane has no real node (run it with `aexec-testenv run --node real`)",
        )
    }

    /// The run's id (cgroups and the like are named after it).
    pub fn run_id(&self) -> String {
        self.run_id.clone()
    }

    fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    fn pki(&self, file: &str) -> String {
        self.dir.join("pki").join(file).display().to_string()
    }

    /// Starts a component and waits until `ready` says it serves.
    pub(crate) async fn run_component(
        &self,
        l: Launch<'_>,
        ready: impl AsyncFnMut() -> bool,
    ) -> Result<()> {
        if let Some(port) = l.port {
            process::ensure_port_free(port, l.name)?;
        }
        let mut c = Component::spawn(l.name, l.program, &l.args, l.envs, &self.logs())?;
        let what = match l.port {
            Some(p) => format!("serving on {p}"),
            None => "serving".to_owned(),
        };
        c.wait_ready(&what, l.timeout, ready).await?;
        self.components
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .push(c);
        Ok(())
    }

    async fn start_etcd(&self) -> Result<()> {
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, ETCD_PORT));
        let url = format!("http://{addr}");
        let args = vec![
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            "--listen-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-cluster=default=http://127.0.0.1:2380".into(),
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ];
        self.run_component(
            Launch {
                name: "etcd",
                program: &self.upstream.etcd,
                args,
                envs: &[],
                port: Some(addr),
                timeout: Duration::from_secs(30),
            },
            async || process::accepts(addr).await,
        )
        .await
    }

    async fn start_apiserver(&self) -> Result<()> {
        let p = |f: &str| self.pki(f);
        let args = vec![
            format!("--etcd-servers=http://127.0.0.1:{ETCD_PORT}"),
            "--bind-address=0.0.0.0".into(),
            format!("--secure-port={APISERVER_PORT}"),
            format!("--advertise-address={}", netns::APISERVER_IP),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            match self.node {
                // The Node authorizer: kubelets read only what their own pods need.
                NodeKind::Real => "--authorization-mode=Node,RBAC".into(),
                NodeKind::Kwok => "--authorization-mode=RBAC".into(),
            },
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--service-cluster-ip-range={}", netns::SERVICE_CIDR),
            "--allow-privileged=true".into(),
            match self.node {
                // kube-controller-manager runs: pods get their ServiceAccount's projected token.
                NodeKind::Real => "--enable-admission-plugins=NodeRestriction".into(),
                // No kube-controller-manager runs, so nothing would create ServiceAccount tokens.
                NodeKind::Kwok => "--disable-admission-plugins=ServiceAccount".into(),
            },
            "--kubelet-preferred-address-types=InternalIP".into(),
            format!(
                "--kubelet-client-certificate={}",
                p("apiserver-kubelet-client.crt")
            ),
            format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
            format!("--kubelet-certificate-authority={}", p("ca.crt")),
            // The aggregation layer: the operator serves subresources.aexec.dev behind it.
            format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-uid-headers=X-Remote-Uid".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
            format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        let mut args = args;
        if self.node == NodeKind::Kwok {
            // No kube-proxy: reach the APIService's endpoint directly, not its ClusterIP. (On
            // the real node the aggregator dials the Service's ClusterIP, as in a cluster.)
            args.push("--enable-aggregator-routing=true".into());
        }
        let addr = SocketAddr::V4(SocketAddrV4::new(netns::APISERVER_IP, APISERVER_PORT));
        let admin = self.kubeconfig(User::Admin);
        self.run_component(
            Launch {
                name: "kube-apiserver",
                program: &self.upstream.kube_apiserver,
                args,
                envs: &[],
                port: Some(addr),
                timeout: Duration::from_secs(120),
            },
            async || readyz(&admin).await,
        )
        .await
    }

    /// Cluster objects every test expects: the chart, RBAC for the test users, and the kwok node.
    async fn bootstrap(&self) -> Result<()> {
        let client = self.client(User::Admin).await?;
        // The human groups may read pods and events: the built-in `view` role cannot serve,
        // it is aggregated and no kube-controller-manager runs to fill in its rules.
        let reader: ClusterRole = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "aexec-test-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods", "events", "namespaces"],
                       "verbs": ["get", "list", "watch"]}]
        }))?;
        apply(&Api::<ClusterRole>::all(client.clone()), &reader).await?;
        if self.node == NodeKind::Kwok {
            // The product as a platform team installs it: CRDs, admission policy, user roles,
            // the operator's RBAC and ServiceAccount, its Service and APIService. (On the real
            // node it is installed once the node runs, operator pods included.)
            self.install_chart().await?;
        }
        // Each group gets the product's role for it; mallory (no group) gets nothing.
        let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
        for (group, role) in [
            ("dev", "aexec-requester"),
            ("sre", "aexec-approver"),
            ("audit", "aexec-auditor"),
            ("dev", "aexec-test-reader"),
            ("sre", "aexec-test-reader"),
            ("audit", "aexec-test-reader"),
        ] {
            let b: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("aexec-test-{group}-{role}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "Group", "name": group, "apiGroup": "rbac.authorization.k8s.io"}]
            }))?;
            apply(&bindings, &b).await?;
        }
        if self.node == NodeKind::Real {
            return Ok(()); // the kubelet registers its node
        }
        let nodes: Api<Node> = Api::all(client);
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "labels": {"type": "kwok", "kubernetes.io/hostname": NODE_NAME},
                "annotations": {"kwok.x-k8s.io/node": "fake"}
            },
            "spec": {}
        }))?;
        apply(&nodes, &node).await?;
        Ok(())
    }

    async fn start_kwok(&self) -> Result<()> {
        let config = self.dir.join("kwok.yaml");
        std::fs::write(&config, kwok_config(&self.dir.join("pods")))?;
        std::fs::create_dir_all(self.dir.join("pods"))?;
        let stages = &self.upstream.kwok_stages;
        let mut args = vec![
            format!("--kubeconfig={}", self.kubeconfig(User::Admin).display()),
            format!("--config={}", config.display()),
            "--manage-all-nodes=true".into(),
            format!("--node-ip={}", netns::NODE_IP),
            format!("--node-port={KUBELET_PORT}"),
            format!("--server-address={}:{KUBELET_PORT}", netns::NODE_IP),
            format!("--tls-cert-file={}", self.pki("kubelet.crt")),
            format!("--tls-private-key-file={}", self.pki("kubelet.key")),
        ];
        for stage in [
            "node/fast/node-initialize.yaml",
            "node/heartbeat/node-heartbeat.yaml",
            "pod/fast/pod-ready.yaml",
            "pod/fast/pod-complete.yaml",
            "pod/fast/pod-delete.yaml",
        ] {
            args.push(format!("--config={}", stages.join(stage).display()));
        }
        let addr = SocketAddr::V4(SocketAddrV4::new(netns::NODE_IP, KUBELET_PORT));
        let client = self.client(User::Admin).await?;
        let nodes: Api<Node> = Api::all(client);
        self.run_component(
            Launch {
                name: "kwok",
                program: &self.upstream.kwok,
                args,
                envs: &[],
                port: Some(addr),
                timeout: Duration::from_secs(60),
            },
            async || process::accepts(addr).await && node_ready(&nodes).await,
        )
        .await
    }

    async fn start_minio(&self) -> Result<()> {
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, MINIO_PORT));
        let args = vec![
            "server".into(),
            self.dir.join("minio").display().to_string(),
            // Every address of the run's namespace: the operator's pods reach it at STORE_IP.
            format!("--address=:{MINIO_PORT}"),
            "--console-address=127.0.0.1:9001".into(),
            "--quiet".into(),
        ];
        let envs = [
            ("MINIO_ROOT_USER", self.s3.access_key.as_str()),
            ("MINIO_ROOT_PASSWORD", self.s3.secret_key.as_str()),
            ("MINIO_BROWSER", "off"),
            ("MINIO_UPDATE", "off"),
            ("HOME", self.dir.to_str().unwrap_or("/tmp")),
        ];
        let health = format!("{}/minio/health/ready", self.s3.endpoint);
        self.run_component(
            Launch {
                name: "minio",
                program: &self.upstream.minio,
                args,
                envs: &envs,
                port: Some(addr),
                timeout: Duration::from_secs(60),
            },
            async || http_ok(&health).await,
        )
        .await?;
        let s3 = self.s3_client().await;
        if s3
            .head_bucket()
            .bucket(&self.s3.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(()); // a restart: the data directory has it
        }
        // Object Lock on, as a bank would have it: the operator writes every recording object
        // with a GOVERNANCE retention.
        s3.create_bucket()
            .bucket(&self.s3.bucket)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "creating bucket {}: {}",
                    self.s3.bucket,
                    e.into_service_error()
                )
            })?;
        Ok(())
    }

    /// Stops MinIO (SIGKILL): a recording store outage. Hold
    /// [`Self::operator_exclusive`]: every session's uploads stall meanwhile.
    pub fn stop_minio(&self) -> Result<()> {
        let mut cs = self.components.lock().map_err(|_| anyhow!("poisoned"))?;
        let before = cs.len();
        cs.retain(|c| c.name != "minio");
        if cs.len() == before {
            bail!("MinIO is not running");
        }
        Ok(())
    }

    /// Restarts kube-apiserver as a crash or an OOM kill would (SIGKILL, then the same flags on
    /// the same etcd), and waits until it is ready again. Every client's connection and watch
    /// breaks meanwhile: only for tests that have the control plane to themselves. (A SIGTERM
    /// makes it drain its requests for up to a minute first; a kill is both quicker and the
    /// harsher case for clients.)
    pub async fn restart_apiserver(&self) -> Result<()> {
        let old = {
            let mut cs = self.components.lock().map_err(|_| anyhow!("poisoned"))?;
            let i = cs
                .iter()
                .position(|c| c.name == "kube-apiserver")
                .context("kube-apiserver is not running")?;
            cs.remove(i)
        };
        let mut old = old;
        old.kill();
        self.start_apiserver().await
    }

    /// Starts MinIO again on the same data directory (after [`Self::stop_minio`]).
    pub async fn restart_minio(&self) -> Result<()> {
        self.start_minio().await
    }

    /// The kubeconfig file of `user` (one context, named after the user).
    pub fn kubeconfig(&self, user: User) -> PathBuf {
        self.dir.join(format!("{}.kubeconfig", user.name()))
    }

    /// A client authenticated as `user`.
    pub async fn client(&self, user: User) -> Result<Client> {
        client_from(&self.kubeconfig(user)).await
    }

    /// A cluster CA that signs serving certificates for components started later.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// An S3 client for the MinIO server (path-style, static credentials).
    pub async fn s3_client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            &self.s3.access_key,
            &self.s3.secret_key,
            None,
            None,
            "aexec-testenv",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(aexec_operator::record::storage::https_client())
            .endpoint_url(&self.s3.endpoint)
            .region(aws_sdk_s3::config::Region::new(self.s3.region.clone()))
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// A new namespace (`aexec-<prefix>-xxxxx`) with a running pod `web` (container `app`) on
    /// the kwok node.
    pub async fn target(&self, admin: &Client) -> Result<Target> {
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"generateName": "aexec-t-", "labels": {"aexec.dev/test": "true"}}
        }))?;
        let ns = namespaces.create(&PostParams::default(), &ns).await?;
        let namespace = ns.name_any();
        let (pod, uid) = self.run_pod(admin, &namespace, "web").await?;
        Ok(Target {
            namespace,
            pod,
            container: "app".into(),
            uid,
        })
    }

    /// Creates pod `name` (container `app`) on the kwok node and waits until it runs; returns
    /// its name and UID.
    pub async fn run_pod(
        &self,
        admin: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<(String, String)> {
        let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
        let pod: Pod = match self.node {
            NodeKind::Kwok => serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": {
                    "nodeName": NODE_NAME,
                    "containers": [{"name": "app", "image": "registry.invalid/aexec/app:1"}]
                }
            }))?,
            NodeKind::Real => {
                // Pods need their namespace's ServiceAccount, which its controller makes a
                // moment after the namespace.
                crate::cluster::wait_default_service_account(admin, namespace).await?;
                crate::cluster::busybox_pod(name)?
            }
        };
        let pod = pods.create(&PostParams::default(), &pod).await?;
        let uid = pod.uid().context("created pod has no uid")?;
        let wait = match self.node {
            NodeKind::Kwok => Duration::from_secs(30),
            NodeKind::Real => Duration::from_secs(90),
        };
        if tokio::time::timeout(
            wait,
            await_condition(pods.clone(), name, conditions::is_pod_running()),
        )
        .await
        .is_err()
        {
            let status = pods
                .get(name)
                .await
                .ok()
                .and_then(|p| p.status)
                .map(|s| serde_json::to_string(&s).unwrap_or_default())
                .unwrap_or_default();
            bail!(
                "pod {namespace}/{name} did not become Running within {}s ({}); its status: {status}",
                wait.as_secs(),
                match self.node {
                    NodeKind::Kwok => "is kwok running?",
                    NodeKind::Real => "see the kubelet and containerd logs",
                }
            );
        }
        Ok((name.to_owned(), uid))
    }

    /// Kills every component (the PID namespace would too, when the run ends).
    pub fn stop(&self) {
        if let Ok(mut cs) = self.components.lock() {
            cs.clear();
        }
    }
}

/// A kube Client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(aexec_client::client(config)?)
}

/// Server-side applies the CRDs checked in under `crds/` and waits until they are established.
pub async fn install_crds(client: &Client) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for (file, _) in aexec_crds::crds() {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text)?;
        apply(&crds, &crd).await?;
        let name = crd.name_any();
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| anyhow!("CRD {name} was not established within 30s"))??;
    }
    Ok(())
}

/// Server-side applies every object of a multi-document YAML file, finding each kind's API by
/// discovery.
pub async fn apply_file(client: &Client, path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    apply_yaml(client, &text)
        .await
        .with_context(|| format!("applying {}", path.display()))
}

/// Server-side applies every object of a multi-document YAML text.
pub async fn apply_yaml(client: &Client, text: &str) -> Result<()> {
    use kube::api::{DynamicObject, GroupVersionKind};
    use serde::Deserialize;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value.clone())?;
        let types = obj
            .types
            .as_ref()
            .context("object without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(types)?;
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
        let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            (kube::discovery::Scope::Namespaced, None) => {
                Api::default_namespaced_with(client.clone(), &ar)
            }
            (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
        };
        let name = obj.name_any();
        api.patch(
            &name,
            &PatchParams::apply("aexec-testenv").force(),
            &Patch::Apply(value),
        )
        .await
        .with_context(|| format!("applying {} {name}", gvk.kind))?;
    }
    Ok(())
}

/// Server-side apply with the test environment's field manager.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: kube::Resource<DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().context("object without a name")?;
    let mut value = serde_json::to_value(obj)?;
    // Apply patches must carry apiVersion and kind, which k8s-openapi types omit when built
    // from a struct literal.
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    api.patch(
        &name,
        &PatchParams::apply("aexec-testenv").force(),
        &Patch::Apply(value),
    )
    .await
    .with_context(|| format!("applying {} {name}", K::kind(&())))
}

async fn readyz(kubeconfig: &Path) -> bool {
    let Ok(client) = client_from(kubeconfig).await else {
        return false;
    };
    let req = http::Request::get("/readyz").body(Vec::new());
    match req {
        Ok(req) => client
            .request_text(req)
            .await
            .is_ok_and(|t| t.trim() == "ok"),
        Err(_) => false,
    }
}

async fn node_ready(nodes: &Api<Node>) -> bool {
    let Ok(node) = nodes.get(NODE_NAME).await else {
        return false;
    };
    node.status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// True when a plain-HTTP GET of `url` answers 200.
pub async fn http_ok(url: &str) -> bool {
    http_get(url).await.is_some_and(|(code, _)| code == 200)
}

/// A plain-HTTP/1.0 GET on loopback-like addresses: (status code, body). A tiny request by hand
/// keeps the test environment free of another HTTP client.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
        let req = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.take(16 << 20).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub(crate) fn kubeconfig(server: &str, ca: &str, cert: &pki::CertPem, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: aexec-local\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    \
         client-key-data: {}\ncontexts:\n- name: {user}\n  context:\n    cluster: aexec-local\n    user: {user}\n    \
         namespace: default\ncurrent-context: {user}\n",
        b64(ca),
        b64(&cert.cert),
        b64(&cert.key)
    )
}

fn kwok_config(workdir: &Path) -> String {
    format!(
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n  enableDebuggingHandlers: true\n  \
         podPlayStageParallelism: 4\n  nodePlayStageParallelism: 2\n  nodeLeaseParallelism: 2\n  \
         podsOnNodeSyncParallelism: 2\n\
         ---\napiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterExec\nmetadata:\n  name: local\nspec:\n  execs:\n  \
         - local:\n      workDir: {}\n      envs:\n      - name: TERM\n        value: xterm\n",
        workdir.display()
    )
}
