//! The Helm chart in the test environment: the environment installs the product with
//! `helm install` of `charts/aexec-operator` (CRDs, admission policy, user roles, the operator's
//! RBAC and ServiceAccount, Service, APIService and its certificate), exactly as a platform team
//! would. The operator itself runs as a local process (kwok runs no containers) authenticated as
//! the chart's ServiceAccount, with the chart's serving certificate: see [`crate::operator`].

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use anyhow::{Context, Result, bail};

use crate::{TestEnv, User};

/// The release name of the chart in the test environment; with the chart's naming rules it is
/// also the name of the Service, the ServiceAccount and the operator's RBAC objects.
pub const RELEASE: &str = "aexec-operator";
/// The release namespace.
pub const NAMESPACE: &str = "aexec-system";
/// The Kubernetes version `helm template` renders for (the local API server's).
pub const KUBE_VERSION: &str = "v1.35.4";

/// The chart's directory in this repository.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/aexec-operator")
}

impl TestEnv {
    /// Runs the real `helm` with `args` against this control plane as admin. Its cache, config
    /// and data directories live in the run directory: nothing of the user's helm setup is read.
    pub async fn helm(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
        use tokio::io::AsyncWriteExt;
        let home = self.dir.join("helm");
        let mut cmd = tokio::process::Command::new(&self.upstream.helm);
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig(User::Admin))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting helm")?;
        if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(input).await.context("writing helm's input")?;
        }
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            child.wait_with_output(),
        )
        .await
        .context("helm did not finish within 120s")??;
        Ok(out)
    }

    /// `helm install` of the chart with its default values, as the environment's bootstrap.
    pub(crate) async fn install_chart(&self) -> Result<()> {
        let chart = chart_dir();
        let chart = chart.to_str().context("chart path is not UTF-8")?;
        let out = self
            .helm(
                &[
                    "install",
                    RELEASE,
                    chart,
                    "--namespace",
                    NAMESPACE,
                    "--create-namespace",
                ],
                None,
            )
            .await?;
        if !out.status.success() {
            bail!(
                "helm install of {chart} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values whose children are plain Kubernetes fields, documented as a whole.
    const OPAQUE: [&str; 3] = ["resources", "podSecurityContext", "securityContext"];

    fn leaves(prefix: &str, v: &serde_yaml::Value, out: &mut Vec<String>) {
        match v {
            serde_yaml::Value::Mapping(m) if !m.is_empty() && !OPAQUE.contains(&prefix) => {
                for (k, child) in m {
                    let k = k.as_str().expect("string keys");
                    let path = if prefix.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&path, child, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    #[test]
    fn every_value_is_documented_in_the_readme_and_the_schema() {
        let dir = chart_dir();
        let values: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("values.yaml")).expect("read"))
                .expect("values.yaml parses");
        let readme = std::fs::read_to_string(dir.join("README.md")).expect("README");
        let schema: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("values.schema.json")).expect("schema"),
        )
        .expect("schema parses");
        let mut paths = Vec::new();
        leaves("", &values, &mut paths);
        assert!(paths.len() > 50, "{paths:?}");
        for path in paths {
            assert!(
                readme.contains(&format!("| `{path}` |")),
                "{path} is not in the values table of charts/aexec-operator/README.md"
            );
            let mut node = &schema;
            for key in path.split('.') {
                node = &node["properties"][key];
            }
            assert!(
                node.is_object(),
                "{path} is not described by values.schema.json"
            );
        }
    }
}
