//! The tar stream an upload sends to `tar -xmf -` in the pod: kubectl's `makeTar` and
//! `recursiveTar` semantics.
//!
//! Entries are named `ENTRY_BASE` and `ENTRY_BASE/sub/...` (from [`super::upload_target`]);
//! regular files carry their mode, size, mtime, owner and contents; symlinks are sent as
//! symlinks with their target (kubectl does the same); a directory has an entry of its own
//! only when it is empty (kubectl's `tar` in the pod creates the others from their contents);
//! FIFOs, sockets and devices are skipped with a warning (kubectl would try to read them).
//! Directory entries are sorted by name, so the same tree gives the same stream. File contents
//! are streamed, never held whole.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Take, Write};
use std::path::{Component, Path, PathBuf};

use tar::{Builder, Header, HeaderMode};

use super::{CpError, Event, Summary};

/// Writes `local` (a file, a symlink or a directory tree) to `out` as a tar stream whose
/// entries are named from `entry_base`. `events` hears of each file sent and of what was
/// skipped.
pub fn mktar<W: Write>(
    local: &Path,
    entry_base: &str,
    out: W,
    events: &mut dyn FnMut(Event),
) -> Result<Summary, CpError> {
    let meta = fs::symlink_metadata(local).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => CpError::LocalMissing(local.to_path_buf()),
        _ => local_read(local)(e),
    })?;
    let base = base_name(entry_base)?;
    let mut builder = Builder::new(out);
    let mut summary = Summary::default();
    let mut tar = Tar {
        builder: &mut builder,
        events,
        summary: &mut summary,
    };
    tar.add(local, &meta, &base)?;
    let mut out = builder.into_inner().map_err(CpError::Send)?;
    out.flush().map_err(CpError::Send)?;
    Ok(summary)
}

/// The name of the top entry. `/` (an upload to the pod's root) is `.`: kubectl names entries
/// `/x`, which `tar` in the pod strips to `x` under `-C /` anyway.
fn base_name(entry_base: &str) -> Result<PathBuf, CpError> {
    if entry_base == "/" {
        return Ok(PathBuf::from("."));
    }
    let plain = !entry_base.is_empty()
        && Path::new(entry_base)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain {
        return Err(CpError::Usage(format!(
            "cannot name the upload {entry_base:?} in the pod: give the destination file or \
             directory by name, e.g. web-0:/tmp/ or web-0:/tmp/out.txt"
        )));
    }
    Ok(PathBuf::from(entry_base))
}

/// An upload being written.
struct Tar<'a, W: Write> {
    builder: &'a mut Builder<W>,
    events: &'a mut dyn FnMut(Event),
    summary: &'a mut Summary,
}

impl<W: Write> Tar<'_, W> {
    /// Adds the local `path` (whose `symlink_metadata` is `meta`) as `name`, and what is under
    /// it.
    fn add(&mut self, path: &Path, meta: &Metadata, name: &Path) -> Result<(), CpError> {
        let kind = meta.file_type();
        if kind.is_dir() {
            self.add_dir(path, meta, name)
        } else if kind.is_symlink() {
            let target = fs::read_link(path).map_err(local_read(path))?;
            let mut h = header(meta);
            self.builder
                .append_link(&mut h, name, &target)
                .map_err(CpError::Send)
        } else if kind.is_file() {
            self.add_file(path, name)
        } else {
            (self.events)(Event::Warning(format!(
                "skipping \"{}\": not a regular file, directory or symlink (a FIFO, socket or \
                 device is not copied)",
                path.display()
            )));
            Ok(())
        }
    }

    fn add_dir(&mut self, path: &Path, meta: &Metadata, name: &Path) -> Result<(), CpError> {
        self.summary.dirs += 1;
        let children = sorted_children(path)?;
        if children.is_empty() {
            let mut h = header(meta);
            return self
                .builder
                .append_data(&mut h, name, io::empty())
                .map_err(CpError::Send);
        }
        for child in children {
            let child_path = path.join(&child);
            let child_meta = fs::symlink_metadata(&child_path).map_err(local_read(&child_path))?;
            self.add(&child_path, &child_meta, &name.join(&child))?;
        }
        Ok(())
    }

    /// A regular file: its header from the opened file, then exactly that many bytes of it.
    fn add_file(&mut self, path: &Path, name: &Path) -> Result<(), CpError> {
        let file = File::open(path).map_err(local_read(path))?;
        let meta = file.metadata().map_err(local_read(path))?;
        let size = meta.len();
        let mut h = header(&meta);
        let mut source = Source {
            inner: file.take(size),
            remaining: size,
            error: None,
        };
        let sent = self.builder.append_data(&mut h, name, &mut source);
        if let Some(source) = source.error.take() {
            return Err(CpError::LocalRead {
                path: path.to_path_buf(),
                source,
            });
        }
        sent.map_err(CpError::Send)?;
        self.summary.files += 1;
        self.summary.bytes += size;
        (self.events)(Event::File {
            path: path.to_path_buf(),
            bytes: size,
        });
        Ok(())
    }
}

/// The names in a directory, sorted, for a stable stream.
fn sorted_children(path: &Path) -> Result<Vec<std::ffi::OsString>, CpError> {
    let mut names = fs::read_dir(path)
        .map_err(local_read(path))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(local_read(path))?;
    names.sort();
    Ok(names)
}

/// A header from the local metadata: type, size, mtime, owner, and the permission bits (without
/// the file-type bits, as Go's `tar.FileInfoHeader` writes them).
fn header(meta: &Metadata) -> Header {
    let mut h = Header::new_gnu();
    h.set_metadata_in_mode(meta, HeaderMode::Complete);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        h.set_mode(meta.permissions().mode() & 0o7777);
    }
    h
}

fn local_read(path: &Path) -> impl FnOnce(io::Error) -> CpError + '_ {
    move |source| CpError::LocalRead {
        path: path.to_path_buf(),
        source,
    }
}

/// A local file's contents, exactly as many bytes as its header says: a file that shrank is an
/// error (padding it would send wrong contents), one that grew is cut at its header's size.
/// Read errors are kept to be reported as the local disk's, not the connection's.
struct Source {
    inner: Take<File>,
    remaining: u64,
    error: Option<io::Error>,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if self.remaining > 0 && !buf.is_empty() => Err(self.fail(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being read",
            ))),
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl Source {
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.error = Some(e);
        io::Error::other("reading the local file failed")
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::cp::untar;
    use std::os::unix::fs::PermissionsExt;

    /// `tree/a.txt` (0640), `tree/run.sh` (0755), `tree/sub/b.txt`, `tree/empty/`,
    /// `tree/sub/link -> ../a.txt`.
    fn tree(root: &Path) -> PathBuf {
        let t = root.join("tree");
        fs::create_dir_all(t.join("sub")).unwrap();
        fs::create_dir(t.join("empty")).unwrap();
        fs::write(t.join("a.txt"), b"alpha").unwrap();
        fs::write(t.join("run.sh"), b"#!/bin/sh\n").unwrap();
        fs::write(t.join("sub/b.txt"), b"beta").unwrap();
        fs::set_permissions(t.join("a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(t.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        t
    }

    fn make(local: &Path, base: &str) -> (Vec<u8>, Summary, Vec<Event>) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let s = mktar(local, base, &mut out, &mut |e| events.push(e)).unwrap();
        (out, s, events)
    }

    /// (name, type byte, mode, link target, contents) of each entry.
    fn read_back(tar: &[u8]) -> Vec<(String, u8, u32, String, Vec<u8>)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let h = e.header().clone();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap())
                    .unwrap_or_default();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (
                    name,
                    h.entry_type().as_byte(),
                    h.mode().unwrap(),
                    link,
                    data,
                )
            })
            .collect()
    }

    #[test]
    fn a_tree_becomes_named_sorted_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tree(tmp.path());
        std::os::unix::fs::symlink("../a.txt", t.join("sub/link")).unwrap();
        let (tar, summary, events) = make(&t, "conf");
        let entries = read_back(&tar);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        // Non-empty directories have no entry of their own; the empty one has.
        assert_eq!(
            names,
            [
                "conf/a.txt",
                "conf/empty",
                "conf/run.sh",
                "conf/sub/b.txt",
                "conf/sub/link"
            ]
        );
        assert_eq!(entries[0].1, b'0');
        assert_eq!(entries[0].2, 0o640);
        assert_eq!(entries[0].4, b"alpha");
        assert_eq!(entries[1].1, b'5');
        assert_eq!(entries[2].2, 0o755);
        assert_eq!(entries[2].4, b"#!/bin/sh\n");
        assert_eq!(entries[3].4, b"beta");
        assert_eq!((entries[4].1, entries[4].3.as_str()), (b'2', "../a.txt"));
        assert_eq!(
            summary,
            Summary {
                files: 3,
                dirs: 3,
                bytes: 19
            }
        );
        assert_eq!(
            events[0],
            Event::File {
                path: t.join("a.txt"),
                bytes: 5
            }
        );
        // The same tree gives the same stream.
        assert_eq!(make(&t, "conf").0, tar);
    }

    #[test]
    fn a_single_file_and_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tree(tmp.path());
        let entries = read_back(&make(&t.join("a.txt"), "b.txt").0);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, "b.txt");
        assert_eq!(entries[0].4, b"alpha");
        // A symlink given as the source is sent as a symlink, as kubectl does.
        std::os::unix::fs::symlink("/etc/hosts", tmp.path().join("l")).unwrap();
        let entries = read_back(&make(&tmp.path().join("l"), "l").0);
        assert_eq!((entries[0].1, entries[0].3.as_str()), (b'2', "/etc/hosts"));
    }

    #[test]
    fn an_upload_to_the_root_is_named_relative() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tree(tmp.path());
        let entries = read_back(&make(&t, "/").0);
        assert_eq!(entries[0].0, "a.txt");
    }

    #[test]
    fn long_names_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let long = "n".repeat(150);
        fs::write(tmp.path().join(&long), b"x").unwrap();
        let entries = read_back(&make(&tmp.path().join(&long), &long).0);
        assert_eq!(entries[0].0, long);
    }

    #[test]
    fn sockets_are_skipped_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tree(tmp.path());
        let _sock = std::os::unix::net::UnixListener::bind(t.join("sock")).unwrap();
        let (tar, _, events) = make(&t, "t");
        assert!(read_back(&tar).iter().all(|e| e.0 != "t/sock"));
        assert!(
            events.iter().any(
                |e| matches!(e, Event::Warning(w) if w.contains("sock") && w.contains("not copied"))
            ),
            "{events:?}"
        );
    }

    #[test]
    fn a_missing_local_path_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let e = mktar(&missing, "nope", Vec::new(), &mut |_| {}).unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with(&format!(
                "{} doesn't exist in the local filesystem",
                missing.display()
            )),
            "{m}"
        );
        assert!(m.contains("check the path"), "{m}");
    }

    #[test]
    fn an_unusable_entry_base_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tree(tmp.path());
        for base in ["", "..", "a/../.."] {
            let m = mktar(&t, base, Vec::new(), &mut |_| {})
                .unwrap_err()
                .to_string();
            assert!(m.contains("cannot name the upload"), "{base}: {m}");
        }
    }

    #[test]
    fn a_failing_connection_is_reported_as_such() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = tree(tmp.path());
        let m = mktar(&t, "t", Closed, &mut |_| {}).unwrap_err().to_string();
        assert!(
            m.starts_with("cannot send the tar stream to the pod"),
            "{m}"
        );
    }

    /// Every path under `root`, with its kind and contents, sorted.
    fn snapshot(root: &Path) -> Vec<(PathBuf, &'static str, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                let m = fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    out.push((rel, "dir", Vec::new()));
                    stack.push(p);
                } else if m.is_file() {
                    out.push((rel, "file", fs::read(&p).unwrap()));
                } else {
                    out.push((rel, "other", Vec::new()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn mktar_then_untar_gives_the_same_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tree(tmp.path());
        fs::create_dir_all(t.join("sub/deep/er")).unwrap();
        fs::write(t.join("sub/deep/er/big"), vec![42u8; 300_000]).unwrap();
        let (tar, sent, _) = make(&t, "tree");
        let dest = tmp.path().join("copy");
        let got = untar(tar.as_slice(), "tree", &dest, &mut |_| {}).unwrap();
        assert_eq!((got.files, got.bytes), (sent.files, sent.bytes));
        assert_eq!(snapshot(&dest), snapshot(&t));
    }

    #[test]
    fn a_symlink_round_trip_is_skipped_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tree(tmp.path());
        std::os::unix::fs::symlink("../a.txt", t.join("sub/link")).unwrap();
        let (tar, _, _) = make(&t, "tree");
        let dest = tmp.path().join("copy");
        let mut events = Vec::new();
        untar(tar.as_slice(), "tree", &dest, &mut |e| events.push(e)).unwrap();
        assert!(!dest.join("sub/link").exists());
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Warning(w) if w.starts_with("skipping symlink"))),
            "{events:?}"
        );
    }
}
