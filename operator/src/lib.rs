//! The kubectl-aexec operator: it decides the fate of every ExecSession (controller), serves the
//! session subresources behind the API server (aggregated API), and brokers and records the
//! exec streams. One folder per part:
//!
//! - [`control`]: the controller and what it decides with (policies, the session state machine),
//!   leader election, notifications, metrics;
//! - [`api`]: the aggregated API server and its subresources other than `attach`, and the
//!   replicas' calls to each other;
//! - [`broker`]: `attach`: the requester's stream relayed to the pod's, live watchers and
//!   moderation, debug sessions;
//! - [`record`]: the recorder, the spool, the store, the signed session records;
//! - [`run`]: the command line and the wiring of the tasks.
//!
//! Pure decisions ([`control::policy`], [`control::lifecycle`], [`broker::frames`],
//! [`broker::moderation`]) are apart from I/O and built without the default `runtime` feature:
//! without it the crate is only those, which is what the fuzz targets build.

#[cfg(feature = "runtime")]
pub mod api;
pub mod broker;
pub mod control;
#[cfg(feature = "runtime")]
pub mod record;
/// The recording format lives in its own crate, shared with the plugin.
pub use aexec_recording as recording;
#[cfg(feature = "runtime")]
pub mod run;
