//! The plugin's errors, each a sentence saying what failed and what to do next.

use thiserror::Error;

/// Everything that ends a command with a message. Printed as `error: <message>`.
#[derive(Debug, Error)]
pub enum Error {
    /// The command line is not usable as given.
    #[error("{0}")]
    Usage(String),
    /// The kubeconfig cannot be read or used.
    #[error("{0}")]
    Kubeconfig(String),
    /// The cluster answered with a refusal or failure, already explained.
    #[error("{0}")]
    Api(String),
    /// The cluster refused who we are or what we may do (401, 403), already explained: the
    /// status is kept for whoever passes the refusal on (the console answers with it).
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// A session ended in a way that is an error for the requester (denied, expired).
    #[error("{0}")]
    Session(String),
    /// Local I/O (terminal, files).
    #[error("{0}")]
    Io(String),
    /// A recording failed verification.
    #[error("{0}")]
    Verify(String),
    /// Whoever read our output went away (`| head`): stop quietly, as a shell pipeline expects.
    #[error("output closed")]
    OutputClosed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Error::OutputClosed;
        }
        Error::Io(e.to_string())
    }
}

/// Writes `s` to stdout and flushes; a closed pipe becomes [`Error::OutputClosed`], never a
/// panic (which `print!` would do).
pub fn out(s: &str) -> Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// What the plugin was doing when the API refused, for the message and the role to suggest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doing {
    /// Creating or reading one's own sessions, attaching, withdrawing.
    Request,
    /// Approving or denying.
    Decide,
    /// Reading sessions and recordings.
    Audit,
    /// Reading pods and workloads to resolve the target.
    Target,
    /// Anything else (identity).
    Other,
}

impl Doing {
    fn role(self) -> &'static str {
        match self {
            Doing::Request | Doing::Target => "aexec-requester",
            Doing::Decide => "aexec-approver",
            Doing::Audit => "aexec-auditor",
            Doing::Other => "aexec-requester",
        }
    }
}

/// A kube error as one sentence that says what to do. `what` names the action ("creating the
/// session s1", "approving s1").
pub fn explain(e: &kube::Error, what: &str, doing: Doing) -> Error {
    match e {
        kube::Error::Api(s) => explain_status(s.code, &s.reason, &s.message, what, doing),
        kube::Error::Auth(a) => Error::Kubeconfig(format!(
            "{what}: the kubeconfig's credentials could not be used: {a}"
        )),
        kube::Error::HyperError(_) | kube::Error::Service(_) => Error::Api(format!(
            "{what}: the Kubernetes API server cannot be reached ({e}); check the kubeconfig's \
             server and your network"
        )),
        other => Error::Api(format!("{what}: {other}")),
    }
}

/// The sentence for a `Status` refusal (pure, for tests).
pub fn explain_status(code: u16, reason: &str, message: &str, what: &str, doing: Doing) -> Error {
    let message = message.trim();
    match (code, reason) {
        (401, _) => Error::Refused {
            status: 401,
            message: format!(
                "{what}: not authenticated ({message}); check the kubeconfig's credentials \
                 (kubectl auth whoami)"
            ),
        },
        // Only a refusal by authorization (RBAC) is about a missing role. The operator's own
        // rules (self-approval, someone else's session, an approver the policy does not name)
        // and admission policies refuse people who hold the role: a hint to ask for it would
        // send them to the wrong person. The operator's authorization refusal already names the
        // role.
        (403, _) if is_authorization_refusal(message) && !message.contains("ask for the") => {
            Error::Refused {
                status: 403,
                message: format!(
                    "{what}: {message}: ask your cluster admin for the {} role",
                    doing.role()
                ),
            }
        }
        (403, _) => Error::Refused {
            status: 403,
            message: format!("{what}: {message}"),
        },
        // A path nobody serves: the CRD or the aggregated API is not installed.
        (404, _)
            if message.is_empty()
                || message.contains("could not find the requested resource")
                || message == "404 page not found" =>
        {
            Error::Api(format!(
                "{what}: the kubectl-aexec API is not installed in this cluster (no execsessions.aexec.dev \
                 or subresources.aexec.dev): install the aexec operator (its Helm chart) first"
            ))
        }
        (404, _) => Error::Api(format!("{what}: {message}")),
        (503, _) => Error::Api(format!(
            "{what}: the aexec operator is unreachable ({message}): the APIService \
             v1alpha1.subresources.aexec.dev is not available; check that the operator is running"
        )),
        _ => Error::Api(format!("{what}: {message}")),
    }
}

/// Whether a 403's message is the API server's authorizer refusing a verb, as its
/// `forbiddenMessage` words it: `User "NAME" cannot VERB resource "R" ...` (or `path "P"`).
fn is_authorization_refusal(message: &str) -> bool {
    let Some(rest) = message.find("User \"").map(|i| &message[i + 6..]) else {
        return false;
    };
    let Some(after_name) = rest.find("\" cannot ").map(|i| &rest[i + 9..]) else {
        return false;
    };
    // VERB, then the kind of thing refused.
    after_name
        .split_once(' ')
        .is_some_and(|(_, what)| what.starts_with("resource \"") || what.starts_with("path \""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_the_role() {
        let e = explain_status(
            403,
            "Forbidden",
            "execsessions.aexec.dev is forbidden: User \"mallory\" cannot create resource \"execsessions\"",
            "creating the session",
            Doing::Request,
        );
        let m = e.to_string();
        assert!(
            m.starts_with("creating the session: execsessions.aexec.dev is forbidden"),
            "{m}"
        );
        assert!(
            m.ends_with("ask your cluster admin for the aexec-requester role"),
            "{m}"
        );
        let rbac = "forbidden: User \"mallory\" cannot get resource \"execsessions\" in API group \"aexec.dev\" in the namespace \"ns\"";
        let e = explain_status(403, "Forbidden", rbac, "approving s1", Doing::Decide);
        assert!(e.to_string().contains("aexec-approver"));
        let e = explain_status(403, "Forbidden", rbac, "reading s1", Doing::Audit);
        assert!(e.to_string().contains("aexec-auditor"));
        // The operator's message already says which role: not repeated.
        let e = explain_status(
            403,
            "Forbidden",
            "User \"carol\" cannot update ...: ask for the aexec-approver role",
            "approving s1",
            Doing::Decide,
        );
        assert_eq!(e.to_string().matches("aexec-approver").count(), 1);
    }

    #[test]
    fn the_role_hint_is_only_for_authorization_refusals() {
        let hint = "ask your cluster admin";
        // The API server's RBAC refusals, for resources and for paths.
        for m in [
            "execsessions.aexec.dev \"s1\" is forbidden: User \"mallory\" cannot update resource \"execsessions/approve\" in API group \"subresources.aexec.dev\" in the namespace \"ns\"",
            "forbidden: User \"mallory\" cannot get path \"/apis\"",
        ] {
            let e = explain_status(403, "Forbidden", m, "approving s1", Doing::Decide);
            assert!(
                e.to_string()
                    .ends_with("ask your cluster admin for the aexec-approver role"),
                "{e}"
            );
        }
        // The operator's own rules and admission policies refuse people who hold the role.
        for m in [
            "you requested this session; someone else must approve it",
            "dave may not approve sessions under policy p: it accepts users [bob] and groups []",
            "only the requester (alice) may attach to this session; bob may not",
            "execsessions.aexec.dev \"x\" is forbidden: ValidatingAdmissionPolicy 'aexec-requester' with binding 'aexec-requester' denied request: spec.requester must be the user creating the session",
            "User \"bob\" cannot be the approver of his own session",
        ] {
            let e = explain_status(403, "Forbidden", m, "approving s1", Doing::Decide);
            assert!(!e.to_string().contains(hint), "{e}");
            assert_eq!(e.to_string(), format!("approving s1: {m}"));
        }
    }

    #[test]
    fn missing_api_and_unreachable_operator() {
        let e = explain_status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            "creating the session",
            Doing::Request,
        );
        assert!(e.to_string().contains("install the aexec operator"), "{e}");
        let e = explain_status(
            404,
            "NotFound",
            "execsessions.aexec.dev \"s9\" not found",
            "approving s9",
            Doing::Decide,
        );
        assert_eq!(
            e.to_string(),
            "approving s9: execsessions.aexec.dev \"s9\" not found"
        );
        let e = explain_status(
            503,
            "ServiceUnavailable",
            "service unavailable",
            "attaching",
            Doing::Request,
        );
        assert!(e.to_string().contains("operator is unreachable"), "{e}");
        assert!(
            e.to_string().contains("v1alpha1.subresources.aexec.dev"),
            "{e}"
        );
    }
}
