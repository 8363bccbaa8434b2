//! The files of a `kubectl cp`-style transfer: the tar stream the operator relays between a pod
//! and a client, listed entry by entry ([`list_files`]) so that an auditor can answer "which
//! files left this pod, and what was in them" without unpacking anything.
//!
//! Each entry keeps the SHA-256 of its content, so a file is identified by what it held, not
//! only by its name: an auditor compares it with a known copy (a leaked file found elsewhere, a
//! secret's current value) from the list alone, and the list, committed to by the recording's
//! hash chain through [`digest`], still says what each file held if the stream itself is not
//! kept. Each entry also keeps the byte offset of its header in the stream, so that one file is
//! found and extracted from a recorded stream directly (`tail -c +$((offset + 1)) | tar x`),
//! and [`check`] re-lists a recorded stream and says which file differs from the list.
//!
//! The list is what the `tar` crate reads. Where tar readers are known to disagree, `error`
//! says so rather than the list being silently one reader's view: bytes after the
//! end-of-archive marker that are not zeros (which a reader that goes on past it extracts), and
//! content in a directory, link or device entry (which Go's `archive/tar`, kubectl's, does not
//! read as content but as further entries).
//!
//! Pure: no storage, no clock; memory is bounded whatever the stream holds ([`MAX_FILES`],
//! [`MAX_NAME_BYTES`], [`MAX_HEADER_BYTES`], one 64 KiB buffer).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tar::EntryType;

/// The most entries one list holds; the entries after them are not listed
/// ([`FileList::truncated`]), though their bytes are still read and counted.
pub const MAX_FILES: usize = 50_000;
/// The most bytes of names and link targets one list holds, in total; the entries after them
/// are not listed ([`FileList::truncated`]). With [`MAX_FILES`], this keeps the list's JSON
/// (a name's byte may take 6 there, escaped) well under the 64 MiB a segment may hold
/// (`chain::MAX_SEGMENT_CAST_BYTES`).
pub const MAX_NAME_BYTES: usize = 4 << 20;
/// The most bytes read for one entry's headers (its GNU long name and link, PAX extensions and
/// header). A stream that needs more is not listed further: no real file's headers are that
/// large, and the `tar` crate holds them in memory.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// A tar block: headers are one, contents are padded to a multiple of it.
const BLOCK: u64 = 512;
/// The one buffer a listing reads through.
const BUF_SIZE: usize = 64 << 10;

/// What an entry of a transfer is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum FileKind {
    /// A regular file (including contiguous and GNU sparse files, listed with their content
    /// as a reader extracts it, holes as zeros).
    File,
    /// A directory.
    Directory,
    /// A symbolic link; `link` is its target.
    Symlink,
    /// A hard link; `link` is the path, in the same stream, of the file it links to.
    HardLink,
    /// Anything else: a device, a FIFO, a PAX global header, a type no reader knows.
    Other,
}

/// One entry of a transfer's tar stream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileEntry {
    /// The entry's name as in the tar, after its GNU long name or PAX `path`; converted
    /// lossily (invalid bytes as U+FFFD) if it is not UTF-8, which `lossy_name` then says.
    pub path: String,
    /// `path` or `link` was not UTF-8, and was converted lossily.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lossy_name: bool,
    /// What the entry is.
    pub kind: FileKind,
    /// The bytes of content: a file's size; 0 for other entries, unless the stream puts
    /// content in them (which `error` then points out).
    pub size: u64,
    /// The permission bits of the header's mode (`mode & 0o7777`).
    pub mode: u32,
    /// The SHA-256 (lowercase hex) of the content, for a file, and for any other entry with
    /// content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The link target of a symlink or hard link, after its GNU long link or PAX `linkpath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The byte offset in the stream of the entry's header: the header block itself, after
    /// any GNU long-name or PAX headers that describe it.
    pub offset: u64,
}

/// The files of a transfer, in the order they appear in its tar stream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileList {
    /// The entries, in stream order.
    pub files: Vec<FileEntry>,
    /// The bytes of the stream, all of them: read to its end even when the listing stopped
    /// early.
    pub tar_bytes: u64,
    /// What was wrong with the stream, if anything, with the byte it was found at: why the
    /// listing stopped early (not a tar stream, cut short, a read error, headers over
    /// [`MAX_HEADER_BYTES`]), or which bytes the list may not describe as a tar reader
    /// extracts them (data after the end-of-archive marker, content in a directory or link).
    /// Several are joined by `"; "`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The stream has more than [`MAX_FILES`] entries, or more than [`MAX_NAME_BYTES`] of
    /// names: the entries after those listed are not listed (their bytes are still read,
    /// counted in `tar_bytes`, and checked for the errors `error` reports).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// How a list and a tar stream differ ([`check`]): the first difference found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// An entry's field differs.
    #[error(
        "file {index} ({path:?}): the list records {field} {recorded}, the stream has {actual}"
    )]
    Differs {
        /// The entry's position in the list.
        index: usize,
        /// Its path, as the list records it.
        path: String,
        /// The field that differs (its JSON name).
        field: &'static str,
        /// The list's value.
        recorded: String,
        /// The stream's value.
        actual: String,
    },
    /// The list has an entry the stream does not have.
    #[error("file {index} ({path:?}) is in the list but not in the stream")]
    Missing {
        /// The entry's position in the list.
        index: usize,
        /// Its path.
        path: String,
    },
    /// The stream has an entry the list does not have.
    #[error("file {index} ({path:?}) is in the stream but not in the list")]
    Unlisted {
        /// The entry's position in the stream.
        index: usize,
        /// Its path.
        path: String,
    },
    /// The entries agree, and a field of the list itself differs.
    #[error("the list records {field} {recorded}, the stream has {actual}")]
    Stream {
        /// The field that differs (its JSON name).
        field: &'static str,
        /// The list's value.
        recorded: String,
        /// The stream's value.
        actual: String,
    },
}

/// Reads a tar stream to its end and lists its entries, with each file's SHA-256.
///
/// Streaming, in bounded memory: one 64 KiB buffer, never a whole file, and the list within
/// [`MAX_FILES`] and [`MAX_NAME_BYTES`]. Never fails: a stream that is not a tar, is cut short,
/// or whose reader returns an error gives the entries read before, with
/// [`FileList::error`] saying what was wrong and at which byte. The stream is then read to its
/// end (into nothing), so that `tar_bytes` counts all of it and a pipe feeding it never
/// blocks; except after a read error, when the reader is not read again.
/// [`io::ErrorKind::Interrupted`] is retried.
pub fn list_files<R: Read>(reader: R) -> FileList {
    list_files_limited(reader, Limits::DEFAULT)
}

/// The SHA-256 (lowercase hex) of the list's JSON (`serde_json::to_vec(list)`, fields in
/// declaration order), which the recording's hash chain commits to.
pub fn digest(list: &FileList) -> String {
    let mut hasher = Sha256::new();
    // Cannot fail: these types have no maps and no floats, and hashing never fails. Were it
    // to, the empty string is no digest, and matches no recorded one.
    match serde_json::to_writer(&mut hasher, list) {
        Ok(()) => hex::encode(hasher.finalize()),
        Err(_) => String::new(),
    }
}

/// Checks a list against a tar stream read again (a recorded one, when verifying): lists
/// `reader` ([`list_files`]) and returns the first difference, naming the file, the field,
/// and the recorded and actual values.
pub fn check<R: Read>(list: &FileList, reader: R) -> Result<(), TransferError> {
    compare(list, &list_files(reader))
}

/// The limits of a listing: the public constants, smaller in tests.
#[derive(Clone, Copy, Debug)]
struct Limits {
    files: usize,
    name_bytes: usize,
    header_bytes: u64,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        files: MAX_FILES,
        name_bytes: MAX_NAME_BYTES,
        header_bytes: MAX_HEADER_BYTES,
    };
}

/// [`list_files`] with the given limits.
fn list_files_limited<R: Read>(reader: R, limits: Limits) -> FileList {
    let progress = Progress::default();
    let mut list = FileList::default();
    let mut problems = Vec::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut archive = tar::Archive::new(Meter {
        inner: reader,
        progress: &progress,
    });
    let end = list_entries(
        &mut archive,
        &progress,
        limits,
        &mut buf,
        &mut list,
        &mut problems,
    );
    let mut meter = archive.into_inner();
    if progress.failed.borrow().is_none() {
        progress.limit.set(u64::MAX);
        let mut found = None;
        loop {
            let at = progress.pos.get();
            match meter.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if end.is_some() && found.is_none() {
                        found = buf[..n].iter().position(|&b| b != 0).map(|i| at + i as u64);
                    }
                }
                Err(e) => {
                    problems.push(read_failed(&progress, &e));
                    break;
                }
            }
        }
        if let (Some(end), Some(found)) = (end, found) {
            problems.push(format!(
                "the archive ends at byte {end}, but the stream goes on with data (byte {found} \
                 is not zero), which is not listed"
            ));
        }
    }
    list.tar_bytes = progress.pos.get();
    if !problems.is_empty() {
        list.error = Some(problems.join("; "));
    }
    list
}

/// Lists the archive's entries into `list`, and what was wrong into `problems`. Returns the
/// position of the end-of-archive marker if the archive ended with one.
fn list_entries<R: Read>(
    archive: &mut tar::Archive<Meter<'_, R>>,
    progress: &Progress,
    limits: Limits,
    buf: &mut [u8],
    list: &mut FileList,
    problems: &mut Vec<String>,
) -> Option<u64> {
    let mut entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(format!("not a tar stream: {e}"));
            return None;
        }
    };
    let mut seen = 0u64;
    let mut name_bytes = 0usize;
    let mut noted_content = false;
    loop {
        // Where the next entry's headers start: the end of the last content, padded.
        let start = progress.pos.get().next_multiple_of(BLOCK);
        progress
            .limit
            .set(progress.pos.get().saturating_add(limits.header_bytes));
        let next = entries.next();
        progress.limit.set(u64::MAX);
        let mut entry = match next {
            None if progress.eof.get() => {
                let at = progress.pos.get();
                problems.push(if at == 0 {
                    "the stream is empty: not a tar stream".to_string()
                } else {
                    format!(
                        "the tar stream is cut short: it ends at byte {at}, after {seen} entries, \
                         without the end-of-archive marker"
                    )
                });
                return None;
            }
            None => return Some(progress.pos.get().saturating_sub(BLOCK)),
            Some(Err(e)) => {
                problems.push(header_problem(progress, &e, seen, start, limits));
                return None;
            }
            Some(Ok(entry)) => entry,
        };
        seen += 1;
        let offset = entry.raw_header_position();
        let entry_type = entry.header().entry_type();
        let kind = kind_of(entry_type);
        let mode = match entry.header().mode() {
            Ok(mode) => mode & 0o7777,
            Err(e) => {
                problems.push(format!("invalid tar header at byte {offset}: {e}"));
                return None;
            }
        };
        let size = entry.size();
        let (path, lossy_path) = lossy(&entry.path_bytes());
        let (link, lossy_link) = match kind {
            FileKind::Symlink | FileKind::HardLink => match entry.link_name_bytes() {
                Some(bytes) => {
                    let (link, lossy) = lossy(&bytes);
                    (Some(link), lossy)
                }
                None => (None, false),
            },
            _ => (None, false),
        };
        let names = path.len() + link.as_ref().map_or(0, String::len);
        if !list.truncated
            && (list.files.len() >= limits.files
                || name_bytes.saturating_add(names) > limits.name_bytes)
        {
            list.truncated = true;
        }
        let listed = !list.truncated;
        if size > 0 && !noted_content && header_only(entry_type) {
            noted_content = true;
            problems.push(format!(
                "entry {path:?} at byte {offset} is a {} with {size} bytes of content, which \
                 readers that take such entries to have none (Go's archive/tar, kubectl's) \
                 read as further entries: they may extract files this list does not show",
                type_name(entry_type)
            ));
        }

        // A GNU sparse entry's holes are expanded on read: its 512-byte header can claim
        // exabytes of zeros. `tar cf -` never writes one (only with -S); it is listed without
        // a digest, its stored bytes skipped, and the list says so.
        let sparse = entry_type.is_gnu_sparse();
        if sparse {
            problems.push(format!(
                "entry {path:?} at byte {offset} is a GNU sparse file, which `tar cf -` never \
                 writes: its content is not read (its holes would expand without bound), so it \
                 has no digest"
            ));
        }
        let mut hasher =
            (listed && !sparse && (kind == FileKind::File || size > 0)).then(Sha256::new);
        let mut got = if sparse { size } else { 0 };
        if !sparse {
            loop {
                match entry.read(buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Some(hasher) = hasher.as_mut() {
                            hasher.update(&buf[..n]);
                        }
                        got += n as u64;
                    }
                    Err(e) => {
                        problems.push(read_failed(progress, &e));
                        return None;
                    }
                }
            }
        }
        if got < size {
            problems.push(format!(
                "the tar stream is cut short: it ends at byte {}, in the content of {path:?} \
                 (entry at byte {offset}), after {got} of its {size} bytes",
                progress.pos.get()
            ));
            return None;
        }
        if listed {
            name_bytes += names;
            list.files.push(FileEntry {
                path,
                lossy_name: lossy_path || lossy_link,
                kind,
                size,
                mode,
                sha256: hasher.map(|h| hex::encode(h.finalize())),
                link,
                offset,
            });
        }
    }
}

fn kind_of(t: EntryType) -> FileKind {
    match t {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => FileKind::File,
        EntryType::Directory => FileKind::Directory,
        EntryType::Symlink => FileKind::Symlink,
        EntryType::Link => FileKind::HardLink,
        _ => FileKind::Other,
    }
}

/// Entry types that Go's `archive/tar` reads as having no content, whatever their size field.
fn header_only(t: EntryType) -> bool {
    matches!(
        t,
        EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo
    )
}

fn type_name(t: EntryType) -> &'static str {
    match t {
        EntryType::Directory => "directory",
        EntryType::Symlink => "symlink",
        EntryType::Link => "hard link",
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "FIFO",
        _ => "entry",
    }
}

/// A name as a string, and whether it was not UTF-8.
fn lossy(bytes: &[u8]) -> (String, bool) {
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(s) => (s.to_string(), false),
        Cow::Owned(s) => (s, true),
    }
}

/// Why reading an entry's headers failed.
fn header_problem(
    progress: &Progress,
    e: &io::Error,
    seen: u64,
    start: u64,
    limits: Limits,
) -> String {
    let at = progress.pos.get();
    if progress.failed.borrow().is_some() {
        return read_failed(progress, e);
    }
    if progress.over.get() {
        return format!(
            "the headers of the entry at byte {start} are over {} bytes (no real file's are): \
             the stream is not listed further",
            limits.header_bytes
        );
    }
    let eof = progress.eof.get();
    if seen == 0 && (!eof || at < BLOCK) {
        return format!("not a tar stream: {e} (at byte {start})");
    }
    if eof {
        return format!(
            "the tar stream is cut short: it ends at byte {at}, in the headers of the entry at \
             byte {start} ({e})"
        );
    }
    format!("invalid tar header at byte {start}: {e}")
}

/// A read error of the stream's reader, with the byte it came at.
fn read_failed(progress: &Progress, e: &io::Error) -> String {
    let at = progress.pos.get();
    match progress.failed.borrow().as_deref() {
        Some(message) => format!("reading the stream failed at byte {at}: {message}"),
        None => format!("reading the stream failed at byte {at}: {e}"),
    }
}

/// What a [`Meter`] has seen of the stream.
#[derive(Debug)]
struct Progress {
    /// Bytes read.
    pos: Cell<u64>,
    /// Reads stop here, with an error and `over` set.
    limit: Cell<u64>,
    /// The last read was at the end of the stream.
    eof: Cell<bool>,
    /// A read was refused at `limit`.
    over: Cell<bool>,
    /// The reader's error, if it returned one.
    failed: RefCell<Option<String>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            pos: Cell::new(0),
            limit: Cell::new(u64::MAX),
            eof: Cell::new(false),
            over: Cell::new(false),
            failed: RefCell::new(None),
        }
    }
}

/// The stream's reader, counting what it reads into a [`Progress`] the listing sees while the
/// `tar` crate owns the reader.
#[derive(Debug)]
struct Meter<'p, R> {
    inner: R,
    progress: &'p Progress,
}

impl<R: Read> Read for Meter<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let p = self.progress;
        let room = p.limit.get().saturating_sub(p.pos.get());
        if room == 0 {
            p.over.set(true);
            return Err(io::Error::other("over the limit for one entry's headers"));
        }
        let len = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
        loop {
            match self.inner.read(&mut buf[..len]) {
                Ok(n) => {
                    p.pos.set(p.pos.get() + n as u64);
                    p.eof.set(n == 0);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    *p.failed.borrow_mut() = Some(e.to_string());
                    return Err(e);
                }
            }
        }
    }
}

/// The first difference between a recorded list and the stream's.
fn compare(recorded: &FileList, actual: &FileList) -> Result<(), TransferError> {
    let (rec, act) = (&recorded.files, &actual.files);
    for index in 0..rec.len().max(act.len()) {
        let (r, a) = match (rec.get(index), act.get(index)) {
            (Some(r), Some(a)) => (r, a),
            (Some(r), None) => {
                return Err(TransferError::Missing {
                    index,
                    path: r.path.clone(),
                });
            }
            (None, Some(a)) => {
                return Err(TransferError::Unlisted {
                    index,
                    path: a.path.clone(),
                });
            }
            (None, None) => break,
        };
        if r.path != a.path {
            if !act[index..].iter().any(|x| x.path == r.path) {
                return Err(TransferError::Missing {
                    index,
                    path: r.path.clone(),
                });
            }
            if !rec[index..].iter().any(|x| x.path == a.path) {
                return Err(TransferError::Unlisted {
                    index,
                    path: a.path.clone(),
                });
            }
        }
        let opt = |o: &Option<String>| o.as_ref().map_or("none".to_string(), |s| format!("{s:?}"));
        let fields: [(&'static str, String, String); 8] = [
            ("path", format!("{:?}", r.path), format!("{:?}", a.path)),
            (
                "lossyName",
                r.lossy_name.to_string(),
                a.lossy_name.to_string(),
            ),
            ("kind", format!("{:?}", r.kind), format!("{:?}", a.kind)),
            ("size", r.size.to_string(), a.size.to_string()),
            ("sha256", opt(&r.sha256), opt(&a.sha256)),
            ("mode", format!("{:#o}", r.mode), format!("{:#o}", a.mode)),
            ("link", opt(&r.link), opt(&a.link)),
            ("offset", r.offset.to_string(), a.offset.to_string()),
        ];
        for (field, recorded, actual) in fields {
            if recorded != actual {
                return Err(TransferError::Differs {
                    index,
                    path: r.path.clone(),
                    field,
                    recorded,
                    actual,
                });
            }
        }
    }
    let opt = |o: &Option<String>| o.as_ref().map_or("none".to_string(), |s| format!("{s:?}"));
    let fields: [(&'static str, String, String); 3] = [
        (
            "tarBytes",
            recorded.tar_bytes.to_string(),
            actual.tar_bytes.to_string(),
        ),
        (
            "truncated",
            recorded.truncated.to_string(),
            actual.truncated.to_string(),
        ),
        ("error", opt(&recorded.error), opt(&actual.error)),
    ];
    for (field, recorded, actual) in fields {
        if recorded != actual {
            return Err(TransferError::Stream {
                field,
                recorded,
                actual,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tar::{Builder, Header};

    /// Random-ish bytes (xorshift).
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    }

    fn file(b: &mut Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
        let mut h = header(EntryType::Regular, mode, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn dir(b: &mut Builder<Vec<u8>>, path: &str) {
        let mut h = header(EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, path, io::empty()).unwrap();
    }

    fn link(b: &mut Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
        let mut h = header(kind, 0o777, 0);
        b.append_link(&mut h, path, target).unwrap();
    }

    /// A PAX extended header record: `"<len> <key>=<value>\n"`, `len` counting itself.
    fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        loop {
            let record = format!("{len}{body}");
            if record.len() == len {
                return record;
            }
            len = record.len();
        }
    }

    const SMALL: &[u8] = b"hello, world\n";

    /// A tree: a directory, two files (one 300 KiB), a symlink, a hard link, an empty
    /// directory; `with_small: false` leaves the small file out.
    fn tree(big: &[u8], with_small: bool) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        dir(&mut b, "d/");
        if with_small {
            file(&mut b, "d/a.txt", 0o644, SMALL);
        }
        file(&mut b, "d/big.bin", 0o104755, big);
        link(&mut b, EntryType::Symlink, "d/link", "a.txt");
        link(&mut b, EntryType::Link, "d/hard", "d/big.bin");
        dir(&mut b, "d/empty/");
        b.into_inner().unwrap()
    }

    #[test]
    fn a_tree_is_listed_with_kinds_sizes_modes_links_offsets_and_hashes() {
        let big = bytes(1, 300 << 10);
        let tar = tree(&big, true);
        let list = list_files(&tar[..]);
        assert_eq!(list.error, None);
        assert!(!list.truncated);
        assert_eq!(list.tar_bytes, tar.len() as u64);
        let got: Vec<_> = list
            .files
            .iter()
            .map(|f| {
                (
                    f.path.as_str(),
                    f.kind,
                    f.size,
                    f.mode,
                    f.sha256.clone(),
                    f.link.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("d/", FileKind::Directory, 0, 0o755, None, None),
                ("d/a.txt", FileKind::File, 13, 0o644, Some(sha(SMALL)), None),
                (
                    "d/big.bin",
                    FileKind::File,
                    300 << 10,
                    0o4755,
                    Some(sha(&big)),
                    None
                ),
                ("d/link", FileKind::Symlink, 0, 0o777, None, Some("a.txt")),
                (
                    "d/hard",
                    FileKind::HardLink,
                    0,
                    0o777,
                    None,
                    Some("d/big.bin")
                ),
                ("d/empty/", FileKind::Directory, 0, 0o755, None, None),
            ]
        );
        assert!(list.files.iter().all(|f| !f.lossy_name));
        // Offsets increase, and each is the entry's header block.
        assert_eq!(list.files[0].offset, 0);
        for w in list.files.windows(2) {
            assert!(w[0].offset < w[1].offset);
        }
        for f in &list.files {
            let at = f.offset as usize;
            let mut block = [0u8; 512];
            block.copy_from_slice(&tar[at..at + 512]);
            let h = Header::from_byte_slice(&block);
            assert_eq!(&*h.path_bytes(), f.path.as_bytes());
        }
    }

    #[test]
    fn gnu_long_names_and_pax_paths_come_out_whole() {
        let long = format!("long/{}/name.txt", "n".repeat(150));
        let long_target = format!("{}/target", "t".repeat(120));
        let pax_path = format!("pax/{}/file.txt", "p".repeat(200));
        let pax_link = format!("{}/pax-target", "l".repeat(110));
        let mut b = Builder::new(Vec::new());
        file(&mut b, &long, 0o600, b"long");
        link(&mut b, EntryType::Symlink, "short-link", &long_target);
        for (key, value, entry) in [
            ("path", &pax_path, header(EntryType::Regular, 0o640, 3)),
            ("linkpath", &pax_link, header(EntryType::Symlink, 0o777, 0)),
        ] {
            let record = pax_record(key, value);
            let mut x = Header::new_ustar();
            x.set_entry_type(EntryType::XHeader);
            x.set_path("PaxHeaders/x").unwrap();
            x.set_size(record.len() as u64);
            x.set_cksum();
            b.append(&x, record.as_bytes()).unwrap();
            let mut entry = entry;
            entry.set_path("short").unwrap();
            entry.set_cksum();
            b.append(&entry, &b"pax"[..entry.size().unwrap() as usize])
                .unwrap();
        }
        let tar = b.into_inner().unwrap();
        let list = list_files(&tar[..]);
        assert_eq!(list.error, None);
        let got: Vec<_> = list
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.link.as_deref(), f.size))
            .collect();
        assert_eq!(
            got,
            [
                (long.as_str(), None, 4),
                ("short-link", Some(long_target.as_str()), 0),
                (pax_path.as_str(), None, 3),
                ("short", Some(pax_link.as_str()), 0),
            ]
        );
        assert_eq!(list.files[2].sha256, Some(sha(b"pax")));
        // The offset is the entry's own header, after the extension headers.
        assert!(list.files[0].offset > 0);
        assert_eq!(list.tar_bytes, tar.len() as u64);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_converted_and_flagged() {
        let mut h = header(EntryType::Regular, 0o644, 1);
        h.as_old_mut().name[..4].copy_from_slice(b"a\xffb\xfe");
        h.set_cksum();
        let mut b = Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).unwrap();
        let list = list_files(&b.into_inner().unwrap()[..]);
        assert_eq!(list.error, None);
        assert_eq!(list.files[0].path, "a\u{fffd}b\u{fffd}");
        assert!(list.files[0].lossy_name);
        assert!(
            serde_json::to_string(&list)
                .unwrap()
                .contains("\"lossyName\":true")
        );
    }

    #[test]
    fn random_bytes_are_not_a_tar_stream_and_are_all_counted() {
        for len in [100, 5000, 300_000] {
            let data = bytes(7, len);
            let list = list_files(&data[..]);
            assert!(list.files.is_empty());
            let error = list.error.unwrap();
            assert!(error.starts_with("not a tar stream: "), "{error}");
            assert!(error.contains("at byte 0"), "{error}");
            assert_eq!(list.tar_bytes, len as u64);
        }
    }

    #[test]
    fn an_empty_stream_says_so() {
        let list = list_files(&b""[..]);
        assert_eq!(
            list.error.as_deref(),
            Some("the stream is empty: not a tar stream")
        );
        assert_eq!(list.tar_bytes, 0);
        // Only the end-of-archive marker: an empty archive, not an error.
        let list = list_files(&[0u8; 1024][..]);
        assert_eq!(
            list,
            FileList {
                tar_bytes: 1024,
                ..FileList::default()
            }
        );
    }

    #[test]
    fn a_stream_cut_in_a_file_lists_the_entries_before_and_says_where() {
        let big = bytes(2, 300 << 10);
        let tar = tree(&big, true);
        let full = list_files(&tar[..]);
        let cut = full.files[2].offset as usize + 512 + 1000;
        let list = list_files(&tar[..cut]);
        assert_eq!(list.files, full.files[..2]);
        assert_eq!(list.tar_bytes, cut as u64);
        let error = list.error.unwrap();
        assert!(error.contains("cut short"), "{error}");
        assert!(error.contains("\"d/big.bin\""), "{error}");
        assert!(error.contains(&format!("at byte {cut}")), "{error}");

        // Cut in a header, and cut where a header would start (no end-of-archive marker).
        let at = full.files[3].offset as usize + 100;
        let error = list_files(&tar[..at]).error.unwrap();
        assert!(error.contains("cut short"), "{error}");
        let at = full.files[3].offset as usize;
        let list = list_files(&tar[..at]);
        assert_eq!(list.files, full.files[..3]);
        let error = list.error.unwrap();
        assert!(error.contains("cut short"), "{error}");
        assert!(error.contains("end-of-archive marker"), "{error}");
    }

    #[test]
    fn more_entries_than_the_limit_are_truncated_and_still_read() {
        let mut b = Builder::new(Vec::new());
        for i in 0..10 {
            file(&mut b, &format!("f{i}"), 0o644, &bytes(i, 1000));
        }
        let mut tar = b.into_inner().unwrap();
        tar.extend([0u8; 8192]);
        let limits = Limits {
            files: 3,
            ..Limits::DEFAULT
        };
        let list = list_files_limited(&tar[..], limits);
        assert!(list.truncated);
        assert_eq!(list.error, None);
        assert_eq!(list.files.len(), 3);
        assert_eq!(list.files[2].path, "f2");
        assert_eq!(list.tar_bytes, tar.len() as u64);
        // Entries past the limit are still checked: a cut among them is reported.
        let list = list_files_limited(&tar[..tar.len() - 8192 - 1024 - 600], limits);
        assert!(list.truncated);
        assert!(list.error.unwrap().contains("\"f9\""));

        // Names over their budget truncate too.
        let limits = Limits {
            name_bytes: 5,
            ..Limits::DEFAULT
        };
        let list = list_files_limited(&tar[..], limits);
        assert!(list.truncated);
        assert_eq!(list.files.len(), 2);
    }

    #[test]
    fn headers_over_the_limit_stop_the_listing_and_the_stream_is_drained() {
        let mut b = Builder::new(Vec::new());
        file(&mut b, "a", 0o644, b"a");
        file(&mut b, &"x".repeat(5000), 0o644, b"b");
        let tar = b.into_inner().unwrap();
        let limits = Limits {
            header_bytes: 4096,
            ..Limits::DEFAULT
        };
        let list = list_files_limited(&tar[..], limits);
        assert_eq!(list.files.len(), 1);
        let error = list.error.unwrap();
        assert!(
            error.contains("the headers of the entry at byte 1024 are over 4096 bytes"),
            "{error}"
        );
        assert_eq!(list.tar_bytes, tar.len() as u64);
        assert_eq!(list_files(&tar[..]).files.len(), 2);
    }

    #[test]
    fn data_after_the_end_of_the_archive_is_pointed_out() {
        let tar = tree(b"big", true);
        let mut padded = tar.clone();
        padded.extend([0u8; 9216]);
        let list = list_files(&padded[..]);
        assert_eq!(list.error, None);
        assert_eq!(list.tar_bytes, padded.len() as u64);

        let mut hidden = tar.clone();
        hidden.extend([0u8; 512]);
        hidden.extend(b"secret");
        let list = list_files(&hidden[..]);
        assert_eq!(list.files, list_files(&tar[..]).files);
        assert_eq!(list.tar_bytes, hidden.len() as u64);
        let end = tar.len() - 1024;
        let error = list.error.unwrap();
        assert_eq!(
            error,
            format!(
                "the archive ends at byte {end}, but the stream goes on with data (byte {} is \
                 not zero), which is not listed",
                tar.len() + 512
            )
        );
    }

    #[test]
    fn content_in_a_directory_entry_is_hashed_and_pointed_out() {
        let mut b = Builder::new(Vec::new());
        let mut h = header(EntryType::Directory, 0o755, 600);
        b.append_data(&mut h, "d/", &bytes(3, 600)[..]).unwrap();
        file(&mut b, "f", 0o644, b"f");
        let list = list_files(&b.into_inner().unwrap()[..]);
        assert_eq!(list.files.len(), 2);
        assert_eq!(list.files[0].size, 600);
        assert_eq!(list.files[0].sha256, Some(sha(&bytes(3, 600))));
        let error = list.error.unwrap();
        assert!(
            error.starts_with("entry \"d/\" at byte 0 is a directory with 600 bytes of content"),
            "{error}"
        );
    }

    /// Gives `good` bytes of `data`, a few at a time, with interruptions, then fails.
    struct Flaky<'a> {
        data: &'a [u8],
        good: usize,
        calls: usize,
    }

    impl Read for Flaky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.good == 0 {
                return Err(io::Error::other("connection reset"));
            }
            let n = buf.len().min(self.good).min(self.data.len()).min(777);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.good -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_reader_error_ends_the_listing_with_the_error_and_interruptions_are_retried() {
        let big = bytes(4, 300 << 10);
        let tar = tree(&big, true);
        let whole = Flaky {
            data: &tar,
            good: usize::MAX,
            calls: 0,
        };
        assert_eq!(list_files(whole), list_files(&tar[..]));

        let full = list_files(&tar[..]);
        for good in [0, 700, full.files[2].offset as usize + 5000] {
            let list = list_files(Flaky {
                data: &tar,
                good,
                calls: 0,
            });
            assert_eq!(list.tar_bytes, good as u64);
            assert!(list.files.len() <= 2);
            let error = list.error.unwrap();
            assert_eq!(
                error,
                format!("reading the stream failed at byte {good}: connection reset")
            );
        }
    }

    #[test]
    fn check_finds_a_changed_byte_a_missing_file_and_passes_the_same_stream() {
        let big = bytes(5, 300 << 10);
        let tar = tree(&big, true);
        let list = list_files(&tar[..]);
        assert_eq!(check(&list, &tar[..]), Ok(()));

        let mut changed = tar.clone();
        changed[list.files[2].offset as usize + 512 + 200_000] ^= 1;
        let e = check(&list, &changed[..]).unwrap_err();
        let TransferError::Differs {
            index,
            ref path,
            field,
            ..
        } = e
        else {
            panic!("{e}")
        };
        assert_eq!((index, path.as_str(), field), (2, "d/big.bin", "sha256"));
        assert!(
            e.to_string()
                .starts_with("file 2 (\"d/big.bin\"): the list records sha256 ")
        );

        let without = tree(&big, false);
        let e = check(&list, &without[..]).unwrap_err();
        assert_eq!(
            e,
            TransferError::Missing {
                index: 1,
                path: "d/a.txt".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "file 1 (\"d/a.txt\") is in the list but not in the stream"
        );
        let e = check(&list_files(&without[..]), &tar[..]).unwrap_err();
        assert_eq!(
            e,
            TransferError::Unlisted {
                index: 1,
                path: "d/a.txt".into()
            }
        );

        let cut = &tar[..tar.len() - 1024];
        let mut short = list.clone();
        short.tar_bytes = cut.len() as u64;
        let e = check(&short, cut).unwrap_err();
        assert!(
            matches!(e, TransferError::Stream { field: "error", .. }),
            "{e}"
        );
    }

    #[test]
    fn a_list_round_trips_through_json_and_its_digest_is_stable() {
        let mut list = list_files(&tree(&bytes(6, 5000), true)[..]);
        list.error = Some("x".into());
        list.truncated = true;
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(serde_json::from_str::<FileList>(&json).unwrap(), list);
        assert!(json.contains("\"kind\":\"hardLink\""), "{json}");
        assert!(json.contains("\"tarBytes\":"), "{json}");
        assert!(!json.contains("lossyName"), "{json}");
        let extra = json.replacen("{", "{\"extra\":1,", 1);
        assert!(serde_json::from_str::<FileList>(&extra).is_err());

        let d = digest(&list);
        assert_eq!(d, digest(&list.clone()));
        assert_eq!(d, sha(&serde_json::to_vec(&list).unwrap()));
        let mut other = list.clone();
        other.files[1].mode = 0o600;
        assert_ne!(digest(&other), d);
        let mut other = list.clone();
        other.tar_bytes += 1;
        assert_ne!(digest(&other), d);
    }

    #[test]
    fn a_sparse_entry_is_listed_without_expanding_its_holes() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::GNUSparse);
        h.set_size(0);
        h.set_mode(0o644);
        // A terabyte of holes, claimed in 512 bytes: never expanded.
        if let Some(gnu) = h.as_gnu_mut() {
            gnu.set_real_size(1 << 40);
            gnu.sparse[0].set_offset(1 << 40);
            gnu.sparse[0].set_length(0);
        }
        h.set_cksum();
        b.append_data(&mut h, "holes", std::io::empty())
            .expect("sparse");
        let mut f = tar::Header::new_gnu();
        f.set_size(2);
        f.set_mode(0o644);
        f.set_cksum();
        b.append_data(&mut f, "after", &b"ok"[..]).expect("file");
        let bytes = b.into_inner().expect("tar");
        let list = list_files(bytes.as_slice());
        let error = list.error.clone().unwrap_or_default();
        assert!(
            error.contains("\"holes\"") && error.contains("GNU sparse"),
            "{error}"
        );
        assert_eq!(list.files.len(), 2, "{list:?}");
        assert_eq!(list.files[0].sha256, None);
        assert_eq!(list.files[1].path, "after");
        assert!(list.files[1].sha256.is_some());
        assert_eq!(list.tar_bytes, bytes.len() as u64);
    }
}
