//! A real node in the local control plane: containerd (with runc and the CNI plugins from
//! Debian's packages), kubelet, kube-proxy, and the controllers a real cluster runs around it
//! (kube-controller-manager, kube-scheduler), all built from the pinned Kubernetes version.
//! It runs inside the run's namespaces (see [`crate::sandbox`]); the traps met on the way and
//! what got past each are in docs/architecture.md ("The real node").

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::{
    TestEnv, User,
    env::{Launch, client_from},
    netns, process,
};

/// The real node's name.
pub const NODE_NAME: &str = "aexec-node-0";
/// The pods' network (one bridge, host-local addresses).
pub const POD_SUBNET: &str = "10.244.0.0/24";
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
const KUBELET_PORT: u16 = 10250;
const KUBELET_HEALTHZ: u16 = 10248;

/// The node's programs: the Kubernetes ones built by `tests/upstream/build.sh node`, the
/// runtime from Debian's packages.
#[derive(Clone, Debug)]
pub struct NodeBinaries {
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub pause: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub runc: PathBuf,
    pub cni_bin: PathBuf,
    pub busybox: PathBuf,
}

/// Debian packages the real node needs, with a program each provides.
pub const DEBIAN_PACKAGES: [(&str, &str); 6] = [
    ("containerd", "/usr/bin/containerd"),
    ("runc", "/usr/sbin/runc"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("iptables", "/usr/sbin/iptables"),
    ("busybox-static", "/bin/busybox"),
    ("conntrack", "/usr/sbin/conntrack"),
];

impl NodeBinaries {
    /// Locates everything, or says what is missing and how to get it.
    pub fn require(paths: &std::collections::HashMap<String, PathBuf>) -> Result<Self> {
        if let Some(why) = missing_packages(|p| p.exists()) {
            bail!(why);
        }
        let get = |k: &str| -> Result<PathBuf> {
            let p = paths
                .get(k)
                .cloned()
                .with_context(|| format!("build.sh --paths did not name {k}"))?;
            if !p.exists() {
                bail!(
                    "{k} is not built ({}): build the node's components with `bash tests/upstream/build.sh node` \
                     (cold about 8 minutes; ./dev test does it)",
                    p.display()
                );
            }
            Ok(p)
        };
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("busybox is missing: apt-get install busybox-static")?;
        Ok(NodeBinaries {
            kubelet: get("kubelet")?,
            kube_proxy: get("kube-proxy")?,
            kube_controller_manager: get("kube-controller-manager")?,
            kube_scheduler: get("kube-scheduler")?,
            pause: get("pause")?,
            containerd: "/usr/bin/containerd".into(),
            ctr: "/usr/bin/ctr".into(),
            runc: "/usr/sbin/runc".into(),
            cni_bin: "/usr/lib/cni".into(),
            busybox,
        })
    }
}

/// What to install when a Debian package the node needs is missing (`exists` says whether a
/// path is there).
fn missing_packages(exists: impl Fn(&Path) -> bool) -> Option<String> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, p)| !exists(Path::new(p)))
        .map(|(pkg, _)| *pkg)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the real node needs Debian packages that are not installed: {}\n\
             install them with: apt-get install {} (./dev test and ./dev demo do, as root)",
            missing.join(", "),
            missing.join(" ")
        )
    })
}

/// Paths of the node's state in the run directory.
pub(crate) struct NodeDirs {
    pub root: PathBuf,
}

impl NodeDirs {
    pub fn new(run: &Path) -> Self {
        NodeDirs {
            root: run.join("node"),
        }
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.root.join("containerd/containerd.sock")
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl TestEnv {
    fn node_dirs(&self) -> NodeDirs {
        NodeDirs::new(&self.dir)
    }

    /// The address with `ctr` pointed at this node's containerd, in the `k8s.io` namespace
    /// (where kubelet's images and containers are).
    pub fn ctr(&self) -> Result<std::process::Command> {
        let node = self.node_binaries()?;
        let mut cmd = std::process::Command::new(&node.ctr);
        cmd.arg("--address")
            .arg(self.node_dirs().containerd_socket())
            .args(["--namespace", "k8s.io"]);
        Ok(cmd)
    }

    /// Starts containerd, imports the node's images, then kubelet, kube-proxy,
    /// kube-controller-manager and kube-scheduler, and waits for the node to be Ready.
    pub(crate) async fn start_real_node(&self) -> Result<()> {
        let node = self.node_binaries()?.clone();
        self.start_containerd(&node).await?;
        self.import_node_images(&node).await?;
        self.start_controller_manager(&node).await?;
        self.start_scheduler(&node).await?;
        self.start_kubelet(&node).await?;
        self.start_kube_proxy(&node).await?;
        Ok(())
    }

    async fn start_containerd(&self, node: &NodeBinaries) -> Result<()> {
        let d = self.node_dirs();
        let cni_conf = d.p("cni/net.d");
        for dir in [
            d.p("containerd/root"),
            d.p("containerd/state"),
            cni_conf.clone(),
        ] {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(
            cni_conf.join("10-aexec.conflist"),
            cni_config(&d.p("cni/ipam")),
        )?;
        let config = d.p("containerd/config.toml");
        std::fs::write(
            &config,
            containerd_config(
                &d,
                &node.cni_bin,
                &crate::images::PAUSE.reference(),
                &node.runc,
            ),
        )?;
        let socket = d.containerd_socket();
        let args = vec![
            format!("--config={}", config.display()),
            "--log-level=warn".into(),
        ];
        let ctr = self.ctr()?;
        let ctr_program = ctr.get_program().to_owned();
        let ctr_args: Vec<_> = ctr.get_args().map(|a| a.to_owned()).collect();
        self.run_component(
            Launch {
                name: "containerd",
                program: &node.containerd,
                args,
                envs: &[],
                port: None,
                timeout: Duration::from_secs(30),
            },
            async || {
                socket.exists()
                    && tokio::process::Command::new(&ctr_program)
                        .args(&ctr_args)
                        .arg("version")
                        .output()
                        .await
                        .is_ok_and(|o| o.status.success())
            },
        )
        .await
    }

    async fn start_kubelet(&self, node: &NodeBinaries) -> Result<()> {
        let d = self.node_dirs();
        let root = d.p("kubelet");
        for dir in [&root, &d.p("pod-logs"), &d.p("volume-plugins")] {
            std::fs::create_dir_all(dir)?;
        }
        let pki = self.dir.join("pki");
        let node_cert = self
            .ca()
            .client(&format!("system:node:{NODE_NAME}"), Some("system:nodes"))?;
        node_cert.write(&pki, "kubelet-client")?;
        self.ca()
            .server(NODE_NAME, &[NODE_NAME], &netns::addresses())?
            .write(&pki, "kubelet-serving")?;
        let kubeconfig = self.component_kubeconfig("kubelet", "kubelet-client")?;
        let config = d.p("kubelet-config.yaml");
        std::fs::write(
            &config,
            kubelet_config(&pki, &d, &crate::sandbox::cgroup_root(&self.run_id())),
        )?;
        let args = vec![
            format!("--config={}", config.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", root.display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={}", netns::NODE_IP),
            "--v=1".into(),
        ];
        let healthz = format!("http://127.0.0.1:{KUBELET_HEALTHZ}/healthz");
        let admin = self.client(User::Admin).await?;
        let nodes: Api<Node> = Api::all(admin);
        self.run_component(
            Launch {
                name: "kubelet",
                program: &node.kubelet,
                args,
                envs: &[],
                port: Some(SocketAddr::V4(SocketAddrV4::new(
                    netns::NODE_IP,
                    KUBELET_PORT,
                ))),
                timeout: Duration::from_secs(120),
            },
            async || crate::env::http_ok(&healthz).await && node_ready(&nodes).await,
        )
        .await
    }

    async fn start_kube_proxy(&self, node: &NodeBinaries) -> Result<()> {
        let pki = self.dir.join("pki");
        self.ca()
            .client("system:kube-proxy", Some("system:node-proxier"))?
            .write(&pki, "kube-proxy")?;
        let kubeconfig = self.component_kubeconfig("kube-proxy", "kube-proxy")?;
        let config = self.node_dirs().p("kube-proxy.yaml");
        std::fs::write(&config, kube_proxy_config(&kubeconfig))?;
        let healthz = "http://127.0.0.1:10256/healthz".to_owned();
        self.run_component(
            Launch {
                name: "kube-proxy",
                program: &node.kube_proxy,
                args: vec![format!("--config={}", config.display()), "--v=1".into()],
                envs: &[],
                port: None,
                timeout: Duration::from_secs(60),
            },
            async || crate::env::http_ok(&healthz).await,
        )
        .await
    }

    async fn start_controller_manager(&self, node: &NodeBinaries) -> Result<()> {
        let pki = self.dir.join("pki");
        self.ca()
            .client("system:kube-controller-manager", None)?
            .write(&pki, "kube-controller-manager")?;
        let kubeconfig =
            self.component_kubeconfig("kube-controller-manager", "kube-controller-manager")?;
        let p = |f: &str| pki.join(f).display().to_string();
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kubeconfig.display()),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=10257".into(),
            "--leader-elect=false".into(),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            "--use-service-account-credentials=true".into(),
            format!("--cluster-cidr={CLUSTER_CIDR}"),
            "--allocate-node-cidrs=false".into(),
            format!("--service-cluster-ip-range={}", netns::SERVICE_CIDR),
            // Its flex-volume directory defaults to a host path (/usr/libexec/kubernetes).
            format!(
                "--flex-volume-plugin-dir={}",
                self.node_dirs().p("flexvolume").display()
            ),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10257));
        self.run_component(
            Launch {
                name: "kube-controller-manager",
                program: &node.kube_controller_manager,
                args,
                envs: &[],
                port: Some(addr),
                timeout: Duration::from_secs(60),
            },
            async || process::accepts(addr).await,
        )
        .await
    }

    async fn start_scheduler(&self, node: &NodeBinaries) -> Result<()> {
        let pki = self.dir.join("pki");
        self.ca()
            .client("system:kube-scheduler", None)?
            .write(&pki, "kube-scheduler")?;
        let kubeconfig = self.component_kubeconfig("kube-scheduler", "kube-scheduler")?;
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kubeconfig.display()),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=10259".into(),
            "--leader-elect=false".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10259));
        self.run_component(
            Launch {
                name: "kube-scheduler",
                program: &node.kube_scheduler,
                args,
                envs: &[],
                port: Some(addr),
                timeout: Duration::from_secs(60),
            },
            async || process::accepts(addr).await,
        )
        .await
    }

    /// A kubeconfig for a node component authenticated by the client certificate `cert`.
    fn component_kubeconfig(&self, name: &str, cert: &str) -> Result<PathBuf> {
        let pki = self.dir.join("pki");
        let read =
            |f: &str| std::fs::read_to_string(pki.join(f)).with_context(|| format!("reading {f}"));
        let cert = crate::pki::CertPem {
            cert: read(&format!("{cert}.crt"))?,
            key: read(&format!("{cert}.key"))?,
        };
        let path = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(
            &path,
            crate::env::kubeconfig(&self.server, &read("ca.crt")?, &cert, name),
        )?;
        Ok(path)
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

/// Waits until the node is Ready, for example after a component restarts.
pub async fn wait_node_ready(kubeconfig: &Path, timeout: Duration) -> Result<()> {
    let client = client_from(kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client);
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if node_ready(&nodes).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(anyhow!(
        "node {NODE_NAME} is not Ready after {}s",
        timeout.as_secs()
    ))
}

fn cni_config(ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "aexec-pods",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            // Pods reach only the run's own addresses, which are local to this namespace:
            // nothing to masquerade, no route out of the machine.
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_SUBNET}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                // Its default is a host path (/var/lib/cni/networks).
                "dataDir": ipam_dir,
            }
        }]
    })
    .to_string()
}

/// containerd 1.6's configuration (version 2 of its format).
fn containerd_config(d: &NodeDirs, cni_bin: &Path, pause: &str, runc: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
# Storage drivers and tracing this node does not use: fewer plugins, fewer warnings.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Even root may not lower oom_score_adj here (no CAP_SYS_RESOURCE in the bounding set):
  # runc would fail with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"#,
        root = d.p("containerd/root").display(),
        state = d.p("containerd/state").display(),
        socket = d.containerd_socket().display(),
        runc = runc.display(),
        cni_bin = cni_bin.display(),
        cni_conf = d.p("cni/net.d").display(),
    )
}

fn kubelet_config(pki: &Path, d: &NodeDirs, cgroup_root: &str) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {node_ip}
port: {KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {KUBELET_HEALTHZ}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
tlsCertFile: {pki}/kubelet-serving.crt
tlsPrivateKeyFile: {pki}/kubelet-serving.key
containerRuntimeEndpoint: unix://{socket}
# cgroup v1 is deprecated in 1.35 and refused unless allowed; the run's cgroups live under
# cgroupRoot inside its cgroup namespace.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
cgroupsPerQOS: true
# true: check the kernel settings it wants instead of rewriting them on the host (the run
# shows it the values it expects, see tests/src/sandbox.rs).
protectKernelDefaults: true
makeIPTablesUtilChains: false
failSwapOn: false
# No DNS in the run: pods get no resolv.conf from the host and no cluster DNS.
resolvConf: ""
podLogsDir: {pod_logs}
volumePluginDir: {volume_plugins}
# A test machine's disk may be nearly full: evict only when it really is.
evictionHard: {{memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
# The node's images are imported, never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 50
"#,
        node_ip = netns::NODE_IP,
        ca = pki.join("ca.crt").display(),
        pki = pki.display(),
        socket = d.containerd_socket().display(),
        pod_logs = d.p("pod-logs").display(),
        volume_plugins = d.p("volume-plugins").display(),
    )
}

fn kube_proxy_config(kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
mode: iptables
hostnameOverride: {NODE_NAME}
bindAddress: {node_ip}
clusterCIDR: {CLUSTER_CIDR}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Zero leaves each conntrack setting as it is: some are global to the host.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
iptables:
  localhostNodePorts: false
oomScoreAdj: 0
"#,
        kubeconfig = kubeconfig.display(),
        node_ip = netns::NODE_IP,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_package_is_named_with_the_command_to_install_it() {
        assert_eq!(missing_packages(|_| true), None);
        let why = missing_packages(|p| {
            !p.starts_with("/usr/sbin/runc") && p != Path::new("/usr/lib/cni/bridge")
        })
        .expect("missing");
        assert!(
            why.contains("not installed: runc, containernetworking-plugins"),
            "{why}"
        );
        assert!(
            why.contains("apt-get install runc containernetworking-plugins"),
            "{why}"
        );
    }

    #[test]
    fn a_component_not_built_is_named_with_the_command_to_build_it() {
        // On a machine without the Debian packages, that is the message instead.
        let paths: std::collections::HashMap<String, PathBuf> = [
            "kubelet",
            "kube-proxy",
            "kube-controller-manager",
            "kube-scheduler",
            "pause",
        ]
        .into_iter()
        .map(|k| (k.to_owned(), PathBuf::from(format!("/nonexistent/{k}"))))
        .collect();
        let why = format!(
            "{:#}",
            NodeBinaries::require(&paths).expect_err("not built")
        );
        match missing_packages(|p| p.exists()) {
            Some(pkgs) => assert_eq!(why, pkgs),
            None => {
                assert!(
                    why.starts_with("kubelet is not built (/nonexistent/kubelet)"),
                    "{why}"
                );
                assert!(why.contains("bash tests/upstream/build.sh node"), "{why}");
            }
        }
    }
}
