//! Recording: the recorder turns relayed frames into hash-chained segments, the spool keeps them
//! on local disk until the store (S3 or a directory) has them, and a signed session record is
//! written when a session ends.

pub mod archive;
pub mod recorder;
pub mod segment_file;
pub mod signing;
pub mod spool;
pub mod storage;
