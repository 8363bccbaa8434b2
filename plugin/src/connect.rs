//! Connecting as kubectl does: the kubeconfig from `--kubeconfig`, else the `$KUBECONFIG` list
//! (merged), else `~/.kube/config`; `--context`, `--cluster`, `--user` over the current context;
//! every auth method kube's loader supports (client certificates, tokens, exec credential
//! plugins); the namespace from `-n`, else the context's, else `default`. And who we are, from
//! `SelfSubjectReview`.

use aexec_crds::UserRef;
use k8s_openapi::api::{
    authentication::v1::SelfSubjectReview,
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{
    cli::Global,
    error::{Doing, Error, Result, explain},
};

/// A client and the namespace to work in.
#[derive(Clone)]
pub struct Conn {
    pub client: Client,
    pub namespace: String,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Reads the kubeconfig the way kubectl finds it.
pub fn load_kubeconfig(global: &Global) -> Result<Kubeconfig> {
    let loaded = match &global.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).map_err(|e| {
            Error::Kubeconfig(format!(
                "cannot load kubeconfig {}: {}; check the file or pass another with --kubeconfig",
                path.display(),
                first_line(&e)
            ))
        })?,
        None => Kubeconfig::read().map_err(|e| {
            let source = match std::env::var_os("KUBECONFIG") {
                Some(v) if !v.is_empty() => format!("$KUBECONFIG ({})", v.to_string_lossy()),
                _ => "~/.kube/config".to_owned(),
            };
            Error::Kubeconfig(format!(
                "cannot load the kubeconfig from {source}: {}; set --kubeconfig or $KUBECONFIG",
                first_line(&e)
            ))
        })?,
    };
    Ok(loaded)
}

/// The first line of an error (YAML parsers add a multi-line excerpt of the input).
fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Connects with the kubeconfig and flags.
pub async fn connect(global: &Global) -> Result<Conn> {
    let kubeconfig = load_kubeconfig(global)?;
    let options = KubeConfigOptions {
        context: global.context.clone(),
        cluster: global.cluster.clone(),
        user: global.user.clone(),
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| Error::Kubeconfig(format!("cannot use the kubeconfig: {e}")))?;
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = aexec_client::client(config).map_err(|e| {
        Error::Kubeconfig(format!("cannot build a client from the kubeconfig: {e}"))
    })?;
    Ok(Conn { client, namespace })
}

/// Who the API server says we are (username and exact groups), as the admission policy will
/// compare them with `spec.requester`.
pub async fn whoami(client: &Client) -> Result<UserRef> {
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"
    }))
    .map_err(|e| Error::Api(e.to_string()))?;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            explain(
                &e,
                "asking the API server who you are (SelfSubjectReview)",
                Doing::Other,
            )
        })?;
    let info = review.status.and_then(|s| s.user_info).ok_or_else(|| {
        Error::Api(
            "the API server did not say who you are (SelfSubjectReview has no userInfo)".into(),
        )
    })?;
    Ok(UserRef {
        username: info.username.unwrap_or_default(),
        groups: info.groups.unwrap_or_default(),
    })
}

/// Whether the API server says we may do what `attrs` describes (a SelfSubjectAccessReview;
/// an empty namespace or name means any). A review that fails counts as no: this is for saying
/// early what a refusal would say later, never for deciding.
pub async fn allowed(client: &Client, attrs: ResourceAttributes) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: attrs.namespace.filter(|n| !n.is_empty()),
                name: attrs.name.filter(|n| !n.is_empty()),
                ..attrs
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed)
}
