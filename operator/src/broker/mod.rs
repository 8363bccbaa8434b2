//! The broker: `attach` relays the requester's exec stream to the pod's, frame by frame, and hands
//! what passes to the recorder and to live watchers; moderated sessions and debug sessions
//! (an ephemeral container as the pod leg) are its variants.

#[cfg(feature = "runtime")]
pub mod attach;
#[cfg(feature = "runtime")]
pub mod debug;
pub mod frames;
#[cfg(feature = "runtime")]
pub mod moderated;
pub mod moderation;
#[cfg(feature = "runtime")]
pub mod podleg;
#[cfg(feature = "runtime")]
pub mod watch;
