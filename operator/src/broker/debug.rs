//! Debug sessions (`kubectl aexec debug`): the pod leg is an ephemeral container the operator
//! adds to the approved pod, with the approved image and command, sharing the process namespace
//! of the session's container, and then attaches to (`pods/attach`), instead of an exec.
//!
//! An attach's status frame says only that the attach ended (`Success`), not how the command
//! did: the exit code is read from the container's status in the pod ([`Exit::outcome`]), and
//! the status frame the requester gets and the recording says that.

use std::time::Duration;

use aexec_crds::{DebugSpec, ExecSession, debug_container_name};
use k8s_openapi::api::core::v1::{ContainerState, Pod};
use kube::{
    Api, Client,
    api::{AttachParams, Patch, PatchParams},
};

use crate::broker::frames::Outcome;

/// How long the ephemeral container may take to run (pulling its image included).
const START_WITHIN: Duration = Duration::from_secs(120);
/// How long the container's exit code may take to reach the pod's status after its stream ends.
const EXIT_WITHIN: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(250);

/// Waiting reasons that will not resolve by waiting.
const STUCK: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerError",
    "CreateContainerConfigError",
];

/// Where a debug session's command runs: its pod and its ephemeral container.
#[derive(Clone, Debug)]
pub struct Exit {
    pods: Api<Pod>,
    pod: String,
    container: String,
}

/// The ephemeral container a session adds, as the pod's `ephemeralcontainers` subresource takes
/// it: the approved image and command, the terminal and stdin of the spec (stdin once: the end
/// of the requester's input ends the command's), in the process namespace of `target`.
pub fn container_spec(session: &ExecSession, debug: &DebugSpec) -> serde_json::Value {
    let name = session.metadata.name.as_deref().unwrap_or_default();
    let target = session.status.as_ref().and_then(|s| s.container.clone());
    let mut c = serde_json::json!({
        "name": debug_container_name(name),
        "image": debug.image,
        "command": session.spec.command,
        "stdin": session.spec.stdin,
        "stdinOnce": session.spec.stdin,
        "tty": session.spec.tty,
        "terminationMessagePolicy": "File",
    });
    if let Some(t) = target {
        c["targetContainerName"] = t.into();
    }
    c
}

/// Adds the session's ephemeral container, waits until it runs, and opens the attach stream to
/// it. An error says what failed, for the requester.
pub async fn open_leg(
    client: &Client,
    namespace: &str,
    session: &ExecSession,
    debug: &DebugSpec,
) -> Result<(crate::broker::podleg::PodWs, Exit), String> {
    let spec = &session.spec;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let container = debug_container_name(session.metadata.name.as_deref().unwrap_or_default());
    let patch =
        serde_json::json!({"spec": {"ephemeralContainers": [container_spec(session, debug)]}});
    pods.patch_ephemeral_containers(&spec.pod, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "the operator may not add debug containers ({}); its RBAC needs patch on \
                 pods/ephemeralcontainers (the chart grants it)",
                s.message
            ),
            e => format!(
                "the debug container could not be added to pod {}: {e}",
                spec.pod
            ),
        })?;
    wait_running(&pods, &spec.pod, &container).await?;
    let ap = AttachParams {
        container: Some(container.clone()),
        stdin: spec.stdin,
        stdout: true,
        stderr: !spec.tty,
        tty: spec.tty,
        ..Default::default()
    };
    let req = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
        .attach(&spec.pod, &ap)
        .map_err(|e| format!("the attach request could not be built: {e}"))?;
    let ws = crate::broker::podleg::connect(client, req)
        .await
        .map_err(|e| format!("could not attach to the debug container {container}: {e}"))?;
    Ok((
        ws,
        Exit {
            pods,
            pod: spec.pod.clone(),
            container,
        },
    ))
}

/// The state of ephemeral container `name` in `pod`, if the pod reports one yet.
fn state_of(pod: &Pod, name: &str) -> Option<ContainerState> {
    pod.status
        .as_ref()?
        .ephemeral_container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == name)?
        .state
        .clone()
}

/// What a container state means for a debug session about to attach: `Ok(true)` running,
/// `Ok(false)` not yet, `Err` never (with why).
pub fn ready(state: Option<&ContainerState>, image: &str) -> Result<bool, String> {
    let Some(state) = state else {
        return Ok(false);
    };
    if state.running.is_some() {
        return Ok(true);
    }
    if let Some(t) = &state.terminated {
        return Err(format!(
            "the debug container ended before it could be attached (exit code {}{}); run a \
             command that waits for input, like -i -- sh",
            t.exit_code,
            t.reason
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default()
        ));
    }
    match &state.waiting {
        Some(w) if w.reason.as_deref().is_some_and(|r| STUCK.contains(&r)) => Err(format!(
            "the debug container cannot start: {}{} (image {image})",
            w.reason.as_deref().unwrap_or_default(),
            w.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )),
        _ => Ok(false),
    }
}

async fn wait_running(pods: &Api<Pod>, pod: &str, container: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + START_WITHIN;
    loop {
        let p = pods
            .get(pod)
            .await
            .map_err(|e| format!("reading pod {pod} while its debug container starts: {e}"))?;
        let image = p
            .spec
            .as_ref()
            .and_then(|s| s.ephemeral_containers.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == container))
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        if ready(state_of(&p, container).as_ref(), &image)? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the debug container {container} did not run within {}s",
                START_WITHIN.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Exit {
    /// How the command ended, from the container's status once it has terminated.
    pub async fn outcome(&self) -> Outcome {
        let deadline = tokio::time::Instant::now() + EXIT_WITHIN;
        loop {
            match self.pods.get(&self.pod).await {
                Ok(p) => {
                    if let Some(t) = state_of(&p, &self.container).and_then(|s| s.terminated) {
                        return Outcome::Exited(t.exit_code);
                    }
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Outcome::Failed(format!(
                        "the debug container's exit code could not be read: {e}"
                    ));
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Outcome::Failed(format!(
                    "the debug container's stream ended, and it had not exited {}s later (it \
                     keeps running in the pod until the pod goes)",
                    EXIT_WITHIN.as_secs()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(v: serde_json::Value) -> ContainerState {
        serde_json::from_value(v).expect("state")
    }

    #[test]
    fn the_container_runs_the_approved_image_and_command_beside_the_target() {
        let s: ExecSession = serde_json::from_value(json!({
            "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
            "metadata": {"name": "debug-x1", "namespace": "ns"},
            "spec": {"pod": "web", "command": ["sh"], "stdin": true, "tty": true,
                     "requester": {"username": "alice"}, "debug": {"image": "busybox:1.36"}},
            "status": {"container": "app"}
        }))
        .expect("session");
        let debug = s.spec.debug.clone().expect("debug");
        let c = container_spec(&s, &debug);
        assert_eq!(c["name"], "aexec-debug-x1");
        assert_eq!(c["image"], "busybox:1.36");
        assert_eq!(c["command"], json!(["sh"]));
        assert_eq!(c["targetContainerName"], "app");
        assert_eq!(c["stdin"], true);
        assert_eq!(c["stdinOnce"], true);
        assert_eq!(c["tty"], true);
    }

    #[test]
    fn a_container_is_attached_once_running_and_never_when_it_cannot_start() {
        assert_eq!(ready(None, "i"), Ok(false));
        assert_eq!(ready(Some(&state(json!({"running": {}}))), "i"), Ok(true));
        assert_eq!(
            ready(
                Some(&state(json!({"waiting": {"reason": "ContainerCreating"}}))),
                "i"
            ),
            Ok(false)
        );
        let e = ready(
            Some(&state(
                json!({"waiting": {"reason": "ErrImageNeverPull", "message": "not present"}}),
            )),
            "busybox:9",
        )
        .expect_err("stuck");
        assert_eq!(
            e,
            "the debug container cannot start: ErrImageNeverPull: not present (image busybox:9)"
        );
        let e = ready(
            Some(&state(
                json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            )),
            "i",
        )
        .expect_err("gone");
        assert!(
            e.contains("ended before it could be attached (exit code 0, Completed)"),
            "{e}"
        );
    }
}
