//! `kubectl aexec cp`: `kubectl cp` through the approval broker, as pure pieces around
//! [`std::io::Read`]/[`std::io::Write`] and local paths. Creating the session and moving the
//! bytes over the WebSocket is the caller's.
//!
//! Like kubectl, a copy is a `tar` pipe through an exec session:
//!
//! - **download** (`POD:PATH LOCAL`): the pod runs `aexec_crds::copy_command` (`tar cf - PATH`) and
//!   [`untar`] writes the stream under `LOCAL`, stripping [`download_prefix`] from each name;
//! - **upload** (`LOCAL POD:PATH`): [`mktar`] streams `LOCAL` as a tar whose entries are named
//!   from [`upload_target`], and the pod runs `aexec_crds::copy_command` (`tar -xmf - -C DIR`).
//!
//! The argument forms, the commands, the entry names and what is skipped follow kubectl
//! (`k8s.io/kubectl/pkg/cmd/cp`), so a command line that works with `kubectl cp` does the same
//! here. Where kubectl asks the pod whether a destination is a directory (a second exec), the
//! destination is taken as one when it ends with `/` ([`upload_target`]).
//!
//! A download is safe by construction against a hostile container (kubectl's
//! CVE-2019-1002101, CVE-2019-11249 and their variants): [`untar`] maps every name itself and
//! never lets the `tar` crate unpack; a name that would land outside the destination (`..`, an
//! absolute name, a NUL, an entry outside the requested path) stops the copy with an error
//! naming it; links are never created (kubectl skips them too), and one pointing outside is
//! refused with a warning saying so; a GNU sparse entry (whose holes would expand without
//! bound, and which `tar cf -` never writes) stops the copy; nothing is written through a symlink already on the local disk below the
//! destination. File contents are streamed, never held in memory.
//!
//! Errors say whose side failed: the pod's stream ([`CpError::Hostile`], [`CpError::Stream`]),
//! the local disk ([`CpError::LocalWrite`], [`CpError::LocalRead`], ...), or the arguments
//! ([`CpError::Usage`]), and what to do about it.

mod mktar;
mod spec;
mod untar;

use std::path::PathBuf;

use thiserror::Error;

pub use mktar::mktar;
pub use spec::{Direction, Location, Plan, download_prefix, parse_location, plan, upload_target};
pub use untar::untar;

/// What a copy reports as it goes, for progress and warnings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A file was copied: for a download the local file written, for an upload the local file
    /// read. `bytes` is its size.
    File { path: PathBuf, bytes: u64 },
    /// Something was skipped or is worth telling; print it as `warning: {0}` (kubectl's form).
    Warning(String),
}

/// [`Event`], under the name [`untar`]'s callers may know it by.
pub type UntarEvent = Event;

/// What a copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Regular files copied.
    pub files: u64,
    /// Directories: for a download the directory entries created, for an upload the local
    /// directories walked.
    pub dirs: u64,
    /// Bytes of file content copied.
    pub bytes: u64,
}

/// Why a copy did not happen or stopped. Each message says what happened, on whose side, and
/// what to do.
#[derive(Debug, Error)]
pub enum CpError {
    /// The arguments do not describe a copy (already a full sentence).
    #[error("{0}")]
    Usage(String),
    /// The pod's tar stream names an entry that must not be written: the pod's side.
    #[error(
        "the pod's tar stream is corrupt or hostile: entry {entry:?} {reason}; nothing was \
         written for it and the copy stopped (earlier entries are in {}); check the container \
         before trusting files from it",
        .dest.display()
    )]
    Hostile {
        entry: String,
        reason: String,
        dest: PathBuf,
    },
    /// The tar stream from the pod could not be read (connection dropped, `tar` failed in the
    /// container, or the bytes are not a tar archive).
    #[error(
        "cannot read the tar stream from the pod: {0}; the connection dropped or `tar` in the \
         container failed (see its error output); check that the path exists in the pod and \
         retry"
    )]
    Stream(String),
    /// Sending the upload's tar stream failed: the connection or the pod's `tar` stopped.
    #[error(
        "cannot send the tar stream to the pod: {0}; the connection dropped or `tar` in the \
         container stopped (see its error output); retry"
    )]
    Send(std::io::Error),
    /// A symbolic link already on the local disk is where a download would write.
    #[error(
        "refusing to write {}: it is a symbolic link on the local disk, and a download never \
         writes through one; remove it, or copy into another (e.g. empty) directory",
        .path.display()
    )]
    LocalSymlink { path: PathBuf },
    /// Something already on the local disk is in the way (a directory where a file goes, ...);
    /// `reason` says what and what to do.
    #[error("cannot write {}: {reason}", .path.display())]
    LocalConflict { path: PathBuf, reason: String },
    /// Writing to the local disk failed.
    #[error(
        "cannot write {} on the local disk: {source}; check its free space and permissions",
        .path.display()
    )]
    LocalWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The local path to upload does not exist.
    #[error(
        "{} doesn't exist in the local filesystem: check the path (a relative one starts from \
         the current directory)",
        .0.display()
    )]
    LocalMissing(PathBuf),
    /// Reading the local files to upload failed.
    #[error(
        "cannot read {} on the local disk: {source}; check that it exists and is readable, and \
         that nothing changes it during the copy",
        .path.display()
    )]
    LocalRead {
        path: PathBuf,
        source: std::io::Error,
    },
}
