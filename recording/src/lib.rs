//! Recordings of kubectl-aexec sessions, shared by the operator (which writes and serves them)
//! and the plugin (which replays, exports and verifies them): the asciicast v3 event stream
//! ([`cast`]), its storage as hash-chained segments sealed by a manifest ([`chain`]), the
//! signed session record stored next to it ([`record`]), the list of the files a
//! `kubectl cp`-style transfer carried, with each file's SHA-256 ([`transfer`]), and the text
//! transcript of what the terminal showed ([`transcript`]).
//! Pure: no storage backend, no clock.

pub mod cast;
pub mod chain;
pub mod editor;
pub mod record;
pub mod transcript;
pub mod transfer;
