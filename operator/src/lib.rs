//! The kubectl-aexec operator: it decides the fate of every ExecSession (controller), serves the
//! session subresources behind the API server (aggregated API), and brokers and records the
//! exec streams.
//!
//! Pure decisions live in [`policy`] and [`lifecycle`]; everything that talks to the cluster or
//! the network sits at the edges ([`controller`], [`apiserver`], [`run`]).

pub mod apiserver;
pub mod archive;
pub mod broker;
pub mod controller;
pub mod frames;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod policy;
pub mod recorder;
/// The recording format lives in its own crate, shared with the plugin.
pub use aexec_recording as recording;
pub mod run;
pub mod signing;
pub mod spool;
pub mod storage;
