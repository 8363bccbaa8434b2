//! The operator in the cluster, on the real node: `helm install` of the chart with the image
//! `./dev image` built (imported into containerd, `pullPolicy: Never`), two replicas, the
//! chart's Service with EndpointSlices written by the real EndpointSlice controller, and the
//! APIService Available through them: nothing on this path is written by the test environment
//! but what a platform team would write (the S3 credentials Secret, or a volume for local
//! recordings).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, ServiceAccount},
};
use kube::{Api, Client, api::ListParams};

use crate::{
    TestEnv, User,
    chart::{NAMESPACE, RELEASE, chart_dir},
    env::apply_yaml,
    images::{APP_UID, BUSYBOX},
    operator::RecordingStore,
};

/// The Secret holding MinIO's credentials for the operator (`storage.s3.credentials`).
pub const S3_SECRET: &str = "aexec-s3";
/// The claim for local recordings on the node (`storage.local.persistence.existingClaim`).
pub const RECORDINGS_CLAIM: &str = "aexec-recordings";

/// A pod running busybox as an unprivileged user, container `app`, that sleeps until deleted.
pub fn busybox_pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsUser": APP_UID, "runAsGroup": APP_UID, "runAsNonRoot": true},
            "containers": [{
                "name": "app",
                "image": BUSYBOX.reference(),
                "imagePullPolicy": "Never",
                "command": ["sleep", "2000000"],
                "workingDir": "/home/app",
                "securityContext": {"allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}}
            }]
        }
    }))?)
}

/// Waits for the `default` ServiceAccount of a new namespace (made by its controller).
pub async fn wait_default_service_account(client: &Client, namespace: &str) -> Result<()> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if sas.get_opt("default").await?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "namespace {namespace} has no default ServiceAccount after 30s: is kube-controller-manager running?"
    )
}

impl TestEnv {
    /// The helm values for the operator in the cluster, by recording store.
    pub fn in_cluster_values(&self, store: RecordingStore) -> Vec<String> {
        let mut v = vec![
            "image.pullPolicy=Never".to_owned(),
            "replicaCount=2".into(),
            "operator.logLevel=info\\,aexec_operator=debug\\,kube=warn".into(),
        ];
        match store {
            RecordingStore::S3 => v.extend([
                "storage.type=s3".into(),
                format!("storage.s3.bucket={}", self.s3.bucket),
                format!("storage.s3.endpoint={}", self.s3.pod_endpoint),
                format!("storage.s3.region={}", self.s3.region),
                "storage.s3.forcePathStyle=true".into(),
                "storage.s3.objectLock.mode=GOVERNANCE".into(),
                "storage.s3.objectLock.days=1".into(),
                format!("storage.s3.credentials.existingSecret={S3_SECRET}"),
            ]),
            RecordingStore::Local => v.extend([
                "storage.type=local".into(),
                format!("storage.local.persistence.existingClaim={RECORDINGS_CLAIM}"),
            ]),
        }
        v
    }

    /// `helm install` (or `upgrade` with `extra` values) of the chart for the real node.
    pub async fn helm_in_cluster(&self, verb: &str, extra: &[String]) -> Result<()> {
        let chart = chart_dir();
        let chart = chart.to_str().context("chart path is not UTF-8")?;
        let mut args: Vec<String> = vec![
            verb.into(),
            RELEASE.into(),
            chart.into(),
            "--namespace".into(),
            NAMESPACE.into(),
        ];
        if verb == "upgrade" {
            args.push("--reuse-values".into());
        }
        for value in self
            .in_cluster_values(self.recording_store())
            .iter()
            .chain(extra)
        {
            args.push("--set".into());
            args.push(value.clone());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.helm(&refs, None).await?;
        if !out.status.success() {
            bail!(
                "helm {verb} of {chart} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Installs the operator as a platform team would on this cluster, and waits until both
    /// replicas are ready and the APIService is Available.
    pub(crate) async fn install_operator_in_cluster(&self) -> Result<()> {
        let admin = self.client(User::Admin).await?;
        apply_yaml(
            &admin,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n"),
        )
        .await?;
        match self.recording_store() {
            RecordingStore::S3 => {
                apply_yaml(
                    &admin,
                    &format!(
                        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {S3_SECRET}, namespace: {NAMESPACE}}}\n\
                         stringData: {{AWS_ACCESS_KEY_ID: {}, AWS_SECRET_ACCESS_KEY: {}}}\n",
                        self.s3.access_key, self.s3.secret_key
                    ),
                )
                .await?;
            }
            RecordingStore::Local => {
                // The node's disk, shared by both replicas (one node): a hostPath volume the
                // operator's user may write.
                let dir = self.recordings_dir();
                std::fs::create_dir_all(&dir)?;
                std::fs::set_permissions(
                    &dir,
                    std::os::unix::fs::PermissionsExt::from_mode(0o777),
                )?;
                apply_yaml(
                    &admin,
                    &format!(
                        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: {RECORDINGS_CLAIM}-{ns}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteMany]
  storageClassName: ""
  hostPath: {{path: {dir}, type: Directory}}
  claimRef: {{namespace: {ns}, name: {RECORDINGS_CLAIM}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {RECORDINGS_CLAIM}, namespace: {ns}}}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: {RECORDINGS_CLAIM}-{ns}
  resources: {{requests: {{storage: 1Gi}}}}
"#,
                        ns = NAMESPACE,
                        dir = dir.display()
                    ),
                )
                .await?;
            }
        }
        self.helm_in_cluster("install", &[]).await?;
        self.wait_operator_rolled_out(Duration::from_secs(180))
            .await
            .context("installing the operator in the cluster")
    }

    /// Waits until the Deployment has all its replicas updated and ready, no old pod remains,
    /// and the APIService is Available; on timeout says what the pods are doing.
    pub async fn wait_operator_rolled_out(&self, timeout: Duration) -> Result<()> {
        let admin = self.client(User::Admin).await?;
        let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NAMESPACE);
        let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
        let start = std::time::Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            if let Some(d) = deployments.get_opt(RELEASE).await? {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                let generation_seen =
                    st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
                let all_pods = pods
                    .list(
                        &ListParams::default()
                            .labels(&format!("app.kubernetes.io/instance={RELEASE}")),
                    )
                    .await?
                    .items
                    .len() as i32;
                last = format!(
                    "{}/{want} ready, {} updated, {all_pods} pods",
                    st.ready_replicas.unwrap_or(0),
                    st.updated_replicas.unwrap_or(0)
                );
                if generation_seen
                    && st.ready_replicas.unwrap_or(0) == want
                    && st.updated_replicas.unwrap_or(0) == want
                    && st.available_replicas.unwrap_or(0) == want
                    && all_pods == want
                    && self.apiservice_available().await
                {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(anyhow!(
            "the operator did not roll out within {}s ({last}); its pods:\n{}",
            timeout.as_secs(),
            self.describe_operator_pods().await
        ))
    }

    /// True when the APIService `v1alpha1.subresources.aexec.dev` is Available.
    pub async fn apiservice_available(&self) -> bool {
        let Ok(client) = self.client(User::Admin).await else {
            return false;
        };
        let Ok(req) = http::Request::get(
            "/apis/apiregistration.k8s.io/v1/apiservices/v1alpha1.subresources.aexec.dev",
        )
        .body(Vec::new()) else {
            return false;
        };
        client
            .request::<serde_json::Value>(req)
            .await
            .ok()
            .and_then(|v| {
                v["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Available")
                    .map(|c| c["status"] == "True")
            })
            .unwrap_or(false)
    }

    /// The operator's pods: name, phase, node, and the last lines of each one's log (from the
    /// node's pod log directory).
    pub async fn describe_operator_pods(&self) -> String {
        let Ok(admin) = self.client(User::Admin).await else {
            return "(no client)".into();
        };
        let pods: Api<Pod> = Api::namespaced(admin, NAMESPACE);
        let Ok(list) = pods.list(&ListParams::default()).await else {
            return "(cannot list pods)".into();
        };
        let mut out = String::new();
        for p in list.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let status = p.status.clone().unwrap_or_default();
            out.push_str(&format!(
                "- {name}: {} {}\n",
                status.phase.unwrap_or_default(),
                serde_json::to_string(&status.container_statuses).unwrap_or_default()
            ));
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let dir = self
                .dir
                .join(format!("node/pod-logs/{NAMESPACE}_{name}_{uid}/operator"));
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    out.push_str(&crate::process::tail(&e.path(), 15));
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The names of the operator's pods now.
    pub async fn operator_pods(&self) -> Result<Vec<Pod>> {
        let admin = self.client(User::Admin).await?;
        let pods: Api<Pod> = Api::namespaced(admin, NAMESPACE);
        Ok(pods
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
            .await?
            .items)
    }
}
