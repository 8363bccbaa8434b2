//! Control: the ExecSession controller and the decisions it makes (which policy governs a
//! session, what the session's status should be), the lease that makes one replica the
//! controller, the notifications it posts and the metrics it keeps.

#[cfg(feature = "runtime")]
pub mod controller;
#[cfg(feature = "runtime")]
pub mod leader;
pub mod lifecycle;
#[cfg(feature = "runtime")]
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod notify;
pub mod policy;
