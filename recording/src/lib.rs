//! Recordings of kubectl-aexec sessions, shared by the operator (which writes and serves them)
//! and the plugin (which replays, exports and verifies them): the asciicast v3 event stream
//! ([`cast`]), its storage as hash-chained segments sealed by a manifest ([`chain`]), and the
//! signed session record stored next to it ([`record`]).
//! Pure: no storage backend, no clock.

pub mod cast;
pub mod chain;
pub mod record;
