//! The aggregated API (`subresources.aexec.dev/v1alpha1`) behind the Kubernetes API server: the
//! server and its subresources (`attach` is the broker's), live observation, and the calls one
//! replica makes to another.

pub mod observe;
pub mod peer;
pub mod server;
