//! Extracting a download's tar stream under a local destination: kubectl's `untarAll`
//! semantics, safe by construction against a hostile container.
//!
//! The `tar` crate only reads the stream (long GNU and PAX names included); every name is
//! mapped here, and nothing is unpacked by the crate. The rules:
//!
//! - Every name must start (component by component) with the requested path's prefix, and the
//!   rest lands under the destination; a name that would leave it (`..`, absolute, NUL, a
//!   component that is not a plain name on this system) stops the copy with an error naming
//!   it, before anything is written for it (CVE-2019-1002101, CVE-2019-11249).
//! - Links are never created (kubectl skips symlinks too): one staying inside the destination
//!   is skipped with a warning, one pointing outside is refused. A hard link must name a
//!   member inside the requested path (tar only links to members it archived), and is skipped
//!   too.
//! - Nothing is written through a symlink already on the local disk below the destination:
//!   each directory between the destination and a file is checked with `symlink_metadata`
//!   and created one level at a time, a new file is created with `create_new` (`O_EXCL`, which
//!   fails on any symlink), and an existing regular file is opened without truncation, checked
//!   to be the same file as the one inspected, then truncated. What remains is a race with a
//!   local process swapping a checked directory for a symlink between the check and the
//!   creation: without `O_NOFOLLOW`/`openat` (no `libc` here) that window is not closed. The
//!   destination itself is the user's choice and is followed if it is a symlink, like `cp`.
//! - Directories are created 0755 and files like Go's `os.Create` (0666 before the umask).
//!   The modes, owners and times in the stream are not applied, as kubectl does not apply
//!   them.
//! - Devices and FIFOs are skipped with a warning. Contents are streamed through a fixed
//!   buffer, never held whole.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use super::{CpError, Event, Summary};

/// The buffer file contents go through.
const BUF: usize = 64 * 1024;

/// Writes the tar stream `reader` (from `tar cf - PATH` in the pod) under `dest`: each
/// entry's name must start with `prefix` ([`super::download_prefix`] of `PATH`), and the rest
/// of it is joined under `dest` (an entry equal to the prefix is `dest` itself). Stops at the
/// first entry that cannot be written safely. `events` hears of each file written and of what
/// was skipped.
pub fn untar<R: Read>(
    reader: R,
    prefix: &str,
    dest: &Path,
    events: &mut dyn FnMut(Event),
) -> Result<Summary, CpError> {
    let prefix_parts: Vec<&[u8]> = split(prefix.as_bytes()).collect();
    let budget = std::rc::Rc::new(std::cell::Cell::new(u64::MAX));
    let mut archive = tar::Archive::new(HeaderBudget {
        inner: reader,
        left: budget.clone(),
    });
    let mut summary = Summary::default();
    let mut buf = vec![0u8; BUF];
    let x = Extract {
        prefix,
        prefix_parts: &prefix_parts,
        dest,
    };
    let mut entries = archive.entries().map_err(stream_error)?;
    loop {
        // The `tar` crate reads an entry's headers (GNU long names, PAX records) whole into
        // memory: a hostile stream's are cut at MAX_HEADERS.
        budget.set(MAX_HEADERS);
        let Some(entry) = entries.next() else { break };
        budget.set(u64::MAX);
        let mut entry = entry.map_err(stream_error)?;
        x.entry(&mut entry, &mut buf, events, &mut summary)?;
    }
    Ok(summary)
}

/// The most bytes one entry's headers may take (real ones take a few KiB).
const MAX_HEADERS: u64 = 1 << 20;

/// The stream, refusing to read past what `left` allows (while an entry's headers are read).
struct HeaderBudget<R> {
    inner: R,
    left: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for HeaderBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "an entry's headers take more than {MAX_HEADERS} bytes (a long name or PAX \
                 record no real file has)"
            )));
        }
        let len = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..len])?;
        if left != u64::MAX {
            self.left.set(left - n as u64);
        }
        Ok(n)
    }
}

/// What every entry is extracted against.
struct Extract<'a> {
    prefix: &'a str,
    prefix_parts: &'a [&'a [u8]],
    dest: &'a Path,
}

impl Extract<'_> {
    fn entry<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        buf: &mut [u8],
        events: &mut dyn FnMut(Event),
        summary: &mut Summary,
    ) -> Result<(), CpError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Metadata for the whole archive, not a file.
            return Ok(());
        }
        let name = entry.path_bytes().into_owned();
        let rest = map_name(&name, self.prefix_parts, self.prefix)
            .map_err(|reason| self.hostile(&name, reason))?;
        let path = under(self.dest, &rest);
        if kind.is_dir() || (kind.is_file() && name.ends_with(b"/")) {
            self.make_dir(&rest)?;
            summary.dirs += 1;
        } else if kind.is_gnu_sparse() {
            // `tar cf -` never writes one (only with -S), and its holes are expanded on read:
            // a 512-byte header can claim exabytes of zeros.
            return Err(self.hostile(
                &name,
                "is a GNU sparse file, which `tar cf -` never writes (its holes would be \
                 expanded into zeros without bound)"
                    .into(),
            ));
        } else if kind.is_file() || kind.is_contiguous() {
            let mut file = self.create_file(&rest, &name)?;
            let bytes = copy(entry, &mut file, &path, buf)?;
            summary.files += 1;
            summary.bytes += bytes;
            events(Event::File { path, bytes });
        } else if kind.is_symlink() {
            let target = link_name(entry);
            if !link_stays_inside(&rest, &target) {
                // Refused: links are never created, so this one cannot lead anything outside;
                // the copy goes on, as kubectl's does past every link.
                events(Event::Warning(format!(
                    "refused symlink: \"{}\" -> \"{}\" points outside {}; it is not created",
                    path.display(),
                    lossy(&target),
                    self.dest.display()
                )));
                return Ok(());
            }
            events(Event::Warning(format!(
                "skipping symlink: \"{}\" -> \"{}\"",
                path.display(),
                lossy(&target)
            )));
        } else if kind.is_hard_link() {
            let target = link_name(entry);
            if map_name(&target, self.prefix_parts, self.prefix).is_err() {
                let reason = format!(
                    "is a hard link to {:?}, outside the requested path {:?}",
                    lossy(&target),
                    self.prefix
                );
                return Err(self.hostile(&name, reason));
            }
            events(Event::Warning(format!(
                "skipping hard link: \"{}\" -> \"{}\"",
                path.display(),
                lossy(&target)
            )));
        } else {
            events(Event::Warning(format!(
                "skipping \"{}\": a {} is not copied",
                path.display(),
                kind_name(kind)
            )));
        }
        Ok(())
    }

    fn hostile(&self, name: &[u8], reason: String) -> CpError {
        CpError::Hostile {
            entry: lossy(name),
            reason,
            dest: self.dest.to_path_buf(),
        }
    }

    /// Creates the directory at `rest` under `dest`, and the ones above it.
    fn make_dir(&self, rest: &[&OsStr]) -> Result<(), CpError> {
        ensure_dest_dir(self.dest)?;
        ensure_dirs(self.dest, rest)
    }

    /// Creates (or truncates) the file at `rest` under `dest`, never through a symlink below
    /// `dest`.
    fn create_file(&self, rest: &[&OsStr], name: &[u8]) -> Result<File, CpError> {
        let Some((_, parents)) = rest.split_last() else {
            return create_dest_file(self.dest, name);
        };
        ensure_dest_dir(self.dest)?;
        ensure_dirs(self.dest, parents)?;
        create_below(&under(self.dest, rest))
    }
}

/// Maps an entry's name to its components under the destination, or says why it must not be
/// written. `.` and empty components are ignored, as `tar` writes `./a` and `a//b`.
fn map_name<'a>(
    name: &'a [u8],
    prefix: &[&[u8]],
    prefix_text: &str,
) -> Result<Vec<&'a OsStr>, String> {
    if name.contains(&0) {
        return Err("contains a NUL byte".to_string());
    }
    if name.starts_with(b"/") {
        return Err("has an absolute name (`tar` in the pod writes relative ones)".to_string());
    }
    let parts: Vec<&[u8]> = split(name).collect();
    if parts.contains(&&b".."[..]) {
        return Err("contains `..`, and would be written outside the destination".to_string());
    }
    if parts.len() < prefix.len() || parts[..prefix.len()] != *prefix {
        return Err(format!(
            "is outside the requested path {prefix_text:?} (kubectl: \"tar contents corrupted\")"
        ));
    }
    parts[prefix.len()..]
        .iter()
        .map(|c| {
            plain_name(c).ok_or_else(|| {
                format!(
                    "has a component {:?} that is not a plain file name here",
                    lossy(c)
                )
            })
        })
        .collect()
}

/// The components of a `/`-separated name, without empty and `.` ones.
fn split(name: &[u8]) -> impl Iterator<Item = &[u8]> {
    name.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// `c` as one normal path component on this system (on Windows, `a\b` or `C:` is not one).
fn plain_name(c: &[u8]) -> Option<&OsStr> {
    let s = os_str(c)?;
    let mut parts = Path::new(s).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(n)), None) if n == s => Some(s),
        _ => None,
    }
}

#[cfg(unix)]
fn os_str(bytes: &[u8]) -> Option<&OsStr> {
    use std::os::unix::ffi::OsStrExt;
    Some(OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn os_str(bytes: &[u8]) -> Option<&OsStr> {
    std::str::from_utf8(bytes).ok().map(OsStr::new)
}

/// Whether a symlink at `rest` under the destination, pointing to `target`, resolves
/// (lexically) inside the destination without climbing out of it on the way. A link that is
/// the destination itself points from the destination's parent: outside.
fn link_stays_inside(rest: &[&OsStr], target: &[u8]) -> bool {
    if target.starts_with(b"/") || target.contains(&0) {
        return false;
    }
    let Some((_, dir)) = rest.split_last() else {
        return false;
    };
    let mut depth = dir.len();
    for c in split(target) {
        if c == b".." {
            let Some(d) = depth.checked_sub(1) else {
                return false;
            };
            depth = d;
        } else if plain_name(c).is_some() {
            depth += 1;
        } else {
            return false;
        }
    }
    true
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>) -> Vec<u8> {
    entry
        .link_name_bytes()
        .map(|l| l.into_owned())
        .unwrap_or_default()
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    if kind.is_character_special() {
        "character device"
    } else if kind.is_block_special() {
        "block device"
    } else if kind.is_fifo() {
        "FIFO"
    } else {
        "tar entry of an unsupported type"
    }
}

fn under(dest: &Path, rest: &[&OsStr]) -> PathBuf {
    let mut p = dest.to_path_buf();
    p.extend(rest);
    p
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn stream_error(e: io::Error) -> CpError {
    CpError::Stream(e.to_string())
}

fn local_write(path: &Path) -> impl FnOnce(io::Error) -> CpError + '_ {
    move |source| CpError::LocalWrite {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes sure the destination is a directory, creating it (and its parents) if missing. It is
/// the user's path: a symlink to a directory is followed.
fn ensure_dest_dir(dest: &Path) -> Result<(), CpError> {
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(CpError::LocalConflict {
            path: dest.to_path_buf(),
            reason: "it exists and is not a directory, but the path in the pod is a directory; \
                     give a new path or a directory"
                .to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            dir_builder(true).create(dest).map_err(local_write(dest))
        }
        Err(e) => Err(local_write(dest)(e)),
    }
}

/// Creates each directory of `parts` under `dest`, one level at a time, refusing any that is a
/// symlink or not a directory.
fn ensure_dirs(dest: &Path, parts: &[&OsStr]) -> Result<(), CpError> {
    let mut path = dest.to_path_buf();
    for part in parts {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return Err(CpError::LocalSymlink { path }),
            Ok(_) => {
                return Err(CpError::LocalConflict {
                    path,
                    reason: "it exists and is not a directory, but the pod's tar stream has a \
                             directory there; remove it or copy into another directory"
                        .to_string(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                dir_builder(false)
                    .create(&path)
                    .map_err(local_write(&path))?;
            }
            Err(e) => return Err(local_write(&path)(e)),
        }
    }
    Ok(())
}

/// Directories are created 0755 (before the umask), like kubectl's `os.MkdirAll(_, 0755)`.
fn dir_builder(recursive: bool) -> fs::DirBuilder {
    let mut b = fs::DirBuilder::new();
    b.recursive(recursive);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o755);
    }
    b
}

/// A single-file download written at the destination itself: the user's path, followed if a
/// symlink, like `cp` and kubectl's `os.Create`. Its parent directories are created.
fn create_dest_file(dest: &Path, name: &[u8]) -> Result<File, CpError> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        dir_builder(true)
            .create(parent)
            .map_err(local_write(parent))?;
    }
    if fs::metadata(dest).is_ok_and(|m| m.is_dir()) {
        let base = split(name).last().map(lossy).unwrap_or_default();
        return Err(CpError::LocalConflict {
            path: dest.to_path_buf(),
            reason: format!(
                "it is a directory, and the path in the pod is a file; give the file's local \
                 path, e.g. {}",
                dest.join(base).display()
            ),
        });
    }
    File::create(dest).map_err(local_write(dest))
}

/// A file below the destination: created new (`O_EXCL` fails on any symlink), or, if a regular
/// file is there, opened without truncating, checked to be that same file, then truncated.
/// Modes from the stream are not applied (kubectl does not): new files get 0666 before the
/// umask, existing ones keep theirs.
fn create_below(path: &Path) -> Result<File, CpError> {
    let seen = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => changed(path),
                    _ => local_write(path)(e),
                });
        }
        Err(e) => return Err(local_write(path)(e)),
        Ok(m) => m,
    };
    if seen.file_type().is_symlink() {
        return Err(CpError::LocalSymlink {
            path: path.to_path_buf(),
        });
    }
    if !seen.is_file() {
        return Err(CpError::LocalConflict {
            path: path.to_path_buf(),
            reason: "it exists and is not a regular file (a directory, FIFO, socket or device), \
                     but the pod's tar stream has a file there; remove it or copy into another \
                     directory"
                .to_string(),
        });
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(local_write(path))?;
    let opened = file.metadata().map_err(local_write(path))?;
    if !same_file(&seen, &opened) {
        return Err(changed(path));
    }
    file.set_len(0).map_err(local_write(path))?;
    Ok(file)
}

fn changed(path: &Path) -> CpError {
    CpError::LocalConflict {
        path: path.to_path_buf(),
        reason: "it changed on the local disk while the copy was writing it (it may have been \
                 replaced by a symbolic link); check it, and retry"
            .to_string(),
    }
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Without stable file ids outside Unix, only the file's kind is checked.
#[cfg(not(unix))]
fn same_file(_: &Metadata, b: &Metadata) -> bool {
    b.is_file()
}

/// Streams an entry's contents into `file`, telling a failure to read the pod's stream from a
/// failure to write the local disk.
fn copy(
    entry: &mut impl Read,
    file: &mut File,
    path: &Path,
    buf: &mut [u8],
) -> Result<u64, CpError> {
    let mut total = 0u64;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(e)),
        };
        file.write_all(&buf[..n]).map_err(local_write(path))?;
        total += n as u64;
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tar::{EntryType, Header};

    /// A destination and a sibling that must stay empty.
    struct Dirs {
        _tmp: tempfile::TempDir,
        dest: PathBuf,
        outside: PathBuf,
    }

    fn dirs() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let outside = tmp.path().join("outside");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&outside).unwrap();
        Dirs {
            _tmp: tmp,
            dest,
            outside,
        }
    }

    impl Dirs {
        fn assert_outside_untouched(&self) {
            let left: Vec<_> = fs::read_dir(&self.outside).unwrap().collect();
            assert!(left.is_empty(), "written outside dest: {left:?}");
            let root: Vec<_> = fs::read_dir(self.dest.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(root.len(), 2, "written beside dest: {root:?}");
        }
    }

    /// Appends an entry with a raw name and link name, as a hostile `tar` would write them
    /// (the crate's own setters refuse `..` and absolute names). Long names get a GNU
    /// long-name entry first.
    fn raw(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: EntryType, link: &[u8], data: &[u8]) {
        let mut h = Header::new_gnu();
        if name.len() >= 100 {
            let mut long = name.to_vec();
            long.push(0);
            raw(b, b"././@LongLink", EntryType::GNULongName, b"", &long);
            h.as_old_mut().name[..10].copy_from_slice(&name[..10]);
        } else {
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
        }
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn archive(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn run(tar: &[u8], prefix: &str, dest: &Path) -> (Result<Summary, CpError>, Vec<Event>) {
        let mut seen = Vec::new();
        let r = untar(tar, prefix, dest, &mut |e| seen.push(e));
        (r, seen)
    }

    fn err(r: Result<Summary, CpError>) -> String {
        r.expect_err("refused").to_string()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        raw(b, name.as_bytes(), EntryType::Regular, b"", data);
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, name: &str) {
        raw(b, name.as_bytes(), EntryType::Directory, b"", b"");
    }

    #[test]
    fn cp_refuses_path_escape_dotdot() {
        let d = dirs();
        let tar = archive(|b| {
            dir(b, "data/");
            file(b, "data/../../outside/evil", b"x");
            file(b, "data/after", b"never");
        });
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(
            m.contains("the pod's tar stream is corrupt or hostile"),
            "{m}"
        );
        assert!(m.contains("\"data/../../outside/evil\""), "{m}");
        assert!(m.contains("contains `..`"), "{m}");
        assert!(!d.dest.join("after").exists(), "the copy must stop");
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_dotdot_with_an_empty_prefix() {
        let d = dirs();
        let tar = archive(|b| file(b, "../outside/evil", b"x"));
        let m = err(run(&tar, "", &d.dest).0);
        assert!(m.contains("contains `..`"), "{m}");
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_dotdot_in_a_gnu_long_name() {
        let d = dirs();
        let name = format!("data/{}/../../../outside/evil", "a".repeat(120));
        let tar = archive(|b| file(b, &name, b"x"));
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(m.contains("contains `..`"), "{m}");
        assert!(m.contains(&name), "{m}");
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_dotdot_in_a_pax_name() {
        let d = dirs();
        let body = "path=data/../../outside/evil\n";
        // A PAX record is "LEN key=value\n", LEN counting itself.
        let mut len = body.len() + 2;
        while (len.to_string().len() + 1 + body.len()) != len {
            len += 1;
        }
        let record = format!("{len} {body}");
        let tar = archive(|b| {
            raw(b, b"pax", EntryType::XHeader, b"", record.as_bytes());
            file(b, "data/innocent", b"x");
        });
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(m.contains("\"data/../../outside/evil\""), "{m}");
        assert!(m.contains("contains `..`"), "{m}");
        assert_eq!(fs::read_dir(&d.dest).unwrap().count(), 0);
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_absolute() {
        let d = dirs();
        let name = format!("{}/evil", d.outside.display());
        let tar = archive(|b| file(b, &name, b"x"));
        let m = err(run(&tar, "", &d.dest).0);
        assert!(m.contains("has an absolute name"), "{m}");
        assert!(m.contains(&name), "{m}");
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_nul() {
        let d = dirs();
        let tar = archive(|b| {
            raw(
                b,
                &[b"data/a\0/../../outside/evil".as_slice(), &[b'x'; 100]].concat(),
                EntryType::Regular,
                b"",
                b"x",
            )
        });
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(m.contains("contains a NUL byte"), "{m}");
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_outside_the_requested_path() {
        let d = dirs();
        // A string prefix match is not enough: `data2` is not under `data`.
        for name in ["etc/passwd", "data2/x"] {
            let tar = archive(|b| file(b, name, b"x"));
            let m = err(run(&tar, "data", &d.dest).0);
            assert!(
                m.contains(&format!(
                    "entry {name:?} is outside the requested path \"data\""
                )),
                "{m}"
            );
        }
        assert_eq!(fs::read_dir(&d.dest).unwrap().count(), 0);
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_symlink_outside() {
        let d = dirs();
        let tar = archive(|b| {
            dir(b, "data/");
            raw(b, b"data/link", EntryType::Symlink, b"../../outside", b"");
            file(b, "data/link/evil", b"x");
        });
        let (r, seen) = run(&tar, "data", &d.dest);
        r.expect("the copy goes on past a refused link");
        let warned = seen.iter().any(|e| {
            matches!(e, Event::Warning(w) if w.starts_with("refused symlink")
                && w.contains("../../outside") && w.contains("points outside"))
        });
        assert!(warned, "{seen:?}");
        // The link was not created: what came through it is a plain directory under dest.
        let link = fs::symlink_metadata(d.dest.join("link")).unwrap();
        assert!(link.is_dir() && !link.file_type().is_symlink());
        assert_eq!(fs::read(d.dest.join("link/evil")).unwrap(), b"x");
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_symlink_absolute() {
        let d = dirs();
        let target = d.outside.display().to_string();
        let tar = archive(|b| {
            raw(
                b,
                b"data/sub/link",
                EntryType::Symlink,
                target.as_bytes(),
                b"",
            );
        });
        let (r, seen) = run(&tar, "data", &d.dest);
        r.expect("refused, not fatal");
        assert!(
            seen.iter().any(|e| matches!(e, Event::Warning(w)
                if w.contains(&format!("-> \"{target}\" points outside")))),
            "{seen:?}"
        );
        assert!(fs::symlink_metadata(d.dest.join("sub/link")).is_err());
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_sparse() {
        let d = dirs();
        let tar = archive(|b| {
            let mut h = Header::new_gnu();
            h.as_old_mut().name[..10].copy_from_slice(b"data/holes");
            h.set_entry_type(EntryType::GNUSparse);
            h.set_size(0);
            h.set_mode(0o644);
            // A terabyte of holes, claimed in 512 bytes: never expanded onto the disk.
            let gnu = h.as_gnu_mut().unwrap();
            gnu.set_real_size(1 << 40);
            gnu.sparse[0].set_offset(1 << 40);
            gnu.sparse[0].set_length(0);
            h.set_cksum();
            b.append(&h, &b""[..]).unwrap();
        });
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(m.contains("GNU sparse"), "{m}");
        assert!(fs::symlink_metadata(d.dest.join("holes")).is_err());
    }

    #[test]
    fn cp_refuses_path_escape_through_existing_local_symlink() {
        let d = dirs();
        std::os::unix::fs::symlink(&d.outside, d.dest.join("lib")).unwrap();
        let tar = archive(|b| {
            dir(b, "data/");
            dir(b, "data/lib/");
            file(b, "data/lib/evil", b"x");
        });
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(m.contains("refusing to write"), "{m}");
        assert!(m.contains("/dest/lib"), "{m}");
        assert!(m.contains("symbolic link on the local disk"), "{m}");
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_through_existing_local_symlink_deeper() {
        let d = dirs();
        fs::create_dir(d.dest.join("a")).unwrap();
        std::os::unix::fs::symlink(&d.outside, d.dest.join("a/lib")).unwrap();
        // No directory entries: the file's parents are created (and checked) on the way.
        let tar = archive(|b| file(b, "data/a/lib/x/evil", b"x"));
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(m.contains("/dest/a/lib"), "{m}");
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_through_existing_local_symlink_file() {
        let d = dirs();
        let victim = d.outside.join("victim");
        std::os::unix::fs::symlink(&victim, d.dest.join("x.txt")).unwrap();
        let tar = archive(|b| file(b, "data/x.txt", b"x"));
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(m.contains("/dest/x.txt"), "{m}");
        assert!(m.contains("symbolic link on the local disk"), "{m}");
        assert!(!victim.exists());
        d.assert_outside_untouched();
    }

    #[test]
    fn cp_refuses_path_escape_hardlink() {
        let d = dirs();
        let tar = archive(|b| {
            raw(b, b"data/h", EntryType::Link, b"etc/shadow", b"");
        });
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(m.contains("corrupt or hostile"), "{m}");
        assert!(
            m.contains("\"data/h\" is a hard link to \"etc/shadow\", outside the requested path"),
            "{m}"
        );
        let tar = archive(|b| raw(b, b"data/h", EntryType::Link, b"data/../../x", b""));
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(m.contains("hard link to \"data/../../x\""), "{m}");
        assert_eq!(fs::read_dir(&d.dest).unwrap().count(), 0);
        d.assert_outside_untouched();
    }

    #[test]
    fn a_tree_is_written_under_dest() {
        let d = dirs();
        let out = d.dest.join("new/logs");
        let tar = archive(|b| {
            dir(b, "var/log/");
            file(b, "var/log/a.txt", b"alpha");
            dir(b, "var/log/sub/");
            dir(b, "var/log/sub/deeper/");
            file(b, "var/log/sub/deeper/b.txt", b"beta!");
            dir(b, "var/log/empty/");
            // Parents without their own entries are created too.
            file(b, "var/log/implicit/c.txt", b"");
        });
        let (r, events) = run(&tar, "var/log", &out);
        let s = r.unwrap();
        assert_eq!(
            s,
            Summary {
                files: 3,
                dirs: 4,
                bytes: 10
            }
        );
        assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"alpha");
        assert_eq!(fs::read(out.join("sub/deeper/b.txt")).unwrap(), b"beta!");
        assert!(out.join("empty").is_dir());
        assert_eq!(fs::read(out.join("implicit/c.txt")).unwrap(), b"");
        assert_eq!(
            events[0],
            Event::File {
                path: out.join("a.txt"),
                bytes: 5
            }
        );
        d.assert_outside_untouched();
    }

    #[test]
    fn dot_slash_names_and_an_empty_prefix_are_accepted() {
        let d = dirs();
        let tar = archive(|b| {
            dir(b, "./");
            file(b, "./a.txt", b"a");
            file(b, "./data//b.txt", b"b");
        });
        run(&tar, "", &d.dest).0.unwrap();
        assert_eq!(fs::read(d.dest.join("a.txt")).unwrap(), b"a");
        assert_eq!(fs::read(d.dest.join("data/b.txt")).unwrap(), b"b");
        let tar = archive(|b| file(b, "./data/c.txt", b"c"));
        run(&tar, "data", &d.dest).0.unwrap();
        assert_eq!(fs::read(d.dest.join("c.txt")).unwrap(), b"c");
    }

    #[test]
    fn a_single_file_is_written_at_dest() {
        let d = dirs();
        let target = d.dest.join("hosts.copy");
        let tar = archive(|b| file(b, "etc/hosts", b"127.0.0.1 localhost\n"));
        let (r, events) = run(&tar, "etc/hosts", &target);
        assert_eq!(r.unwrap().files, 1);
        assert_eq!(fs::read(&target).unwrap(), b"127.0.0.1 localhost\n");
        assert_eq!(
            events,
            [Event::File {
                path: target,
                bytes: 20
            }]
        );
    }

    #[test]
    fn a_single_file_onto_a_directory_says_to_name_the_file() {
        let d = dirs();
        let tar = archive(|b| file(b, "etc/hosts", b"x"));
        let m = err(run(&tar, "etc/hosts", &d.dest).0);
        assert!(
            m.contains("it is a directory, and the path in the pod is a file"),
            "{m}"
        );
        assert!(m.contains("/dest/hosts"), "{m}");
    }

    #[test]
    fn an_existing_file_is_overwritten() {
        let d = dirs();
        fs::write(d.dest.join("a.txt"), b"a much longer old content").unwrap();
        let tar = archive(|b| file(b, "data/a.txt", b"new"));
        run(&tar, "data", &d.dest).0.unwrap();
        assert_eq!(fs::read(d.dest.join("a.txt")).unwrap(), b"new");
    }

    #[test]
    fn a_directory_where_a_file_goes_is_a_local_conflict() {
        let d = dirs();
        fs::create_dir(d.dest.join("a.txt")).unwrap();
        let tar = archive(|b| file(b, "data/a.txt", b"new"));
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(m.contains("exists and is not a regular file"), "{m}");
        assert!(!m.contains("pod's tar stream is corrupt"), "{m}");
    }

    #[test]
    fn a_symlink_inside_is_skipped_with_a_warning() {
        let d = dirs();
        let tar = archive(|b| {
            file(b, "data/a.txt", b"a");
            raw(b, b"data/sub/link", EntryType::Symlink, b"../a.txt", b"");
            raw(b, b"data/h", EntryType::Link, b"data/a.txt", b"");
        });
        let (r, events) = run(&tar, "data", &d.dest);
        assert_eq!(r.unwrap().files, 1);
        assert!(fs::symlink_metadata(d.dest.join("sub/link")).is_err());
        assert!(fs::symlink_metadata(d.dest.join("h")).is_err());
        assert_eq!(
            events[1],
            Event::Warning(format!(
                "skipping symlink: \"{}\" -> \"../a.txt\"",
                d.dest.join("sub/link").display()
            ))
        );
        assert_eq!(
            events[2],
            Event::Warning(format!(
                "skipping hard link: \"{}\" -> \"data/a.txt\"",
                d.dest.join("h").display()
            ))
        );
    }

    #[test]
    fn devices_and_fifos_are_skipped_with_a_warning() {
        let d = dirs();
        let tar = archive(|b| {
            raw(b, b"dev/null", EntryType::Char, b"", b"");
            raw(b, b"dev/fifo", EntryType::Fifo, b"", b"");
        });
        let (r, events) = run(&tar, "dev", &d.dest);
        assert_eq!(r.unwrap(), Summary::default());
        assert_eq!(fs::read_dir(&d.dest).unwrap().count(), 0);
        assert!(
            matches!(&events[0], Event::Warning(w) if w.ends_with("a character device is not copied"))
        );
        assert!(matches!(&events[1], Event::Warning(w) if w.ends_with("a FIFO is not copied")));
    }

    #[test]
    fn a_corrupt_stream_is_the_pods() {
        let d = dirs();
        let mut tar = archive(|b| file(b, "data/a.txt", b"a"));
        tar[0] ^= 0xff;
        let m = err(run(&tar, "data", &d.dest).0);
        assert!(
            m.starts_with("cannot read the tar stream from the pod"),
            "{m}"
        );
    }

    #[test]
    fn a_truncated_stream_is_the_pods() {
        let d = dirs();
        let tar = archive(|b| file(b, "data/a.txt", &[7u8; 4000]));
        let m = err(run(&tar[..2048], "data", &d.dest).0);
        assert!(
            m.starts_with("cannot read the tar stream from the pod"),
            "{m}"
        );
    }

    #[test]
    fn link_targets_are_resolved_from_the_links_directory() {
        let n = |s: &'static str| OsStr::new(s);
        assert!(link_stays_inside(&[n("a"), n("l")], b"b"));
        assert!(link_stays_inside(&[n("a"), n("l")], b"../b"));
        assert!(link_stays_inside(&[n("a"), n("l")], b"./x/../../b"));
        assert!(!link_stays_inside(&[n("a"), n("l")], b"../../b"));
        assert!(!link_stays_inside(&[n("l")], b"../l"));
        assert!(!link_stays_inside(&[n("l")], b"/etc"));
        // Climbing out and back in is refused too.
        assert!(!link_stays_inside(&[n("a"), n("l")], b"../../dest/a"));
        // The link is the destination itself: it points from the destination's parent.
        assert!(!link_stays_inside(&[], b"b"));
    }

    #[test]
    fn names_map_component_by_component() {
        let p: Vec<&[u8]> = vec![b"var", b"log"];
        let ok = |n: &'static str| map_name(n.as_bytes(), &p, "var/log");
        assert_eq!(ok("var/log").unwrap(), Vec::<&OsStr>::new());
        assert_eq!(ok("var/log/").unwrap(), Vec::<&OsStr>::new());
        assert_eq!(
            ok("./var//log/./a/b").unwrap(),
            [OsStr::new("a"), OsStr::new("b")]
        );
        assert!(
            ok("var/logs/a")
                .unwrap_err()
                .contains("outside the requested path")
        );
        assert!(
            ok("var")
                .unwrap_err()
                .contains("outside the requested path")
        );
        assert!(ok("var/log/a/../../x").unwrap_err().contains("`..`"));
        assert!(ok("/var/log/a").unwrap_err().contains("absolute"));
    }

    #[test]
    fn cp_refuses_path_escape_giant_long_name() {
        let d = dirs();
        // A GNU long name of 3 MiB: refused before the tar crate holds it all.
        let mut name = vec![b'a'; 3 << 20];
        name.push(0);
        let tar = archive(|b| raw(b, b"././@LongLink", EntryType::GNULongName, b"", &name));
        let m = err(run(&tar, "", &d.dest).0);
        assert!(m.contains("headers take more than"), "{m}");
    }
}
