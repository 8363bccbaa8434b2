//! The kubectl-aexec operator: it decides the fate of every ExecSession (controller), serves the
//! session subresources behind the API server (aggregated API), and brokers and records the
//! exec streams.
//!
//! Pure decisions live in [`policy`] and [`lifecycle`]; everything that talks to the cluster or
//! the network sits at the edges (`controller`, `apiserver`, `run`), behind the default
//! `runtime` feature: without it the crate is only the pure decisions ([`frames`], [`policy`],
//! [`lifecycle`]), which is what the fuzz targets build.

#[cfg(feature = "runtime")]
pub mod apiserver;
#[cfg(feature = "runtime")]
pub mod archive;
#[cfg(feature = "runtime")]
pub mod broker;
#[cfg(feature = "runtime")]
pub mod controller;
#[cfg(feature = "runtime")]
pub mod debug;
pub mod frames;
#[cfg(feature = "runtime")]
pub mod leader;
pub mod lifecycle;
#[cfg(feature = "runtime")]
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod moderated;
pub mod moderation;
#[cfg(feature = "runtime")]
pub mod notify;
#[cfg(feature = "runtime")]
pub mod observe;
#[cfg(feature = "runtime")]
pub mod peer;
#[cfg(feature = "runtime")]
pub mod podleg;
pub mod policy;
#[cfg(feature = "runtime")]
pub mod recorder;
/// The recording format lives in its own crate, shared with the plugin.
pub use aexec_recording as recording;
#[cfg(feature = "runtime")]
pub mod run;
#[cfg(feature = "runtime")]
pub mod segment_file;
#[cfg(feature = "runtime")]
pub mod signing;
#[cfg(feature = "runtime")]
pub mod spool;
#[cfg(feature = "runtime")]
pub mod storage;
#[cfg(feature = "runtime")]
pub mod watch;
