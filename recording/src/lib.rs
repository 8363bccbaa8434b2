//! Recordings of kubectl-aexec sessions, shared by the operator (which writes and serves them)
//! and the plugin (which replays, exports and verifies them): the asciicast v3 event stream
//! ([`cast`]) and its storage as hash-chained segments sealed by a manifest ([`chain`]).
//! Pure: no storage backend, no clock.

pub mod cast;
pub mod chain;
