//! A file system layer: entries collected from files and directories on disk, written as a
//! reproducible tar (sorted paths, every parent directory present, owner root, one timestamp),
//! gzip-compressed as OCI layers are.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use crate::Error;

/// What one path in the layer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file whose content is read from `source` when the layer is written.
    File {
        source: PathBuf,
    },
    /// A regular file with the given content.
    Bytes(Vec<u8>),
    Symlink {
        target: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
}

/// The entries of one layer, keyed by their absolute path in the image (`/etc/passwd`).
#[derive(Clone, Debug, Default)]
pub struct Layer {
    entries: BTreeMap<String, Entry>,
}

/// A written layer: the gzip blob and the digests OCI needs.
#[derive(Clone, Debug)]
pub struct Blob {
    pub gzip: Vec<u8>,
    /// `sha256:` of the compressed bytes (the blob's digest).
    pub digest: String,
    /// `sha256:` of the uncompressed tar (the config's `diff_id`).
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
}

/// Normalises an image path: absolute, no `.`/`..`, no trailing slash (except `/`).
pub fn clean(path: &str) -> Result<String, Error> {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                return Err(Error::Layer(format!("path {path} leaves the image's root")));
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

impl Layer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Adds an entry at `path` (parents are added as directories when written).
    pub fn insert(&mut self, path: &str, kind: Kind, mode: u32) -> Result<(), Error> {
        let path = clean(path)?;
        if path == "/" {
            return Ok(()); // the root always exists
        }
        self.entries.insert(path, Entry { kind, mode });
        Ok(())
    }

    /// Copies `source` (a file, or a directory's contents recursively) to `dest` as `COPY`
    /// does: a file onto `dest`, or into it when `dest` ends with `/`; a directory's contents
    /// into `dest`. Symlinks are kept as links. `chmod` overrides every file's mode.
    pub fn copy_from(
        &mut self,
        source: &Path,
        dest: &str,
        chmod: Option<u32>,
    ) -> Result<(), Error> {
        let meta = std::fs::symlink_metadata(source)
            .map_err(|e| Error::Io(format!("reading {}", source.display()), e))?;
        if meta.is_dir() {
            self.copy_dir(source, &clean(dest)?, chmod)
        } else {
            let name = source
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Layer(format!("{} has no file name", source.display())))?;
            let target = if dest.ends_with('/') {
                format!("{}/{name}", clean(dest)?)
            } else {
                clean(dest)?
            };
            self.copy_one(source, &target, &meta, chmod)
        }
    }

    fn copy_dir(&mut self, dir: &Path, dest: &str, chmod: Option<u32>) -> Result<(), Error> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::Io(format!("listing {}", dir.display()), e))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Io(format!("listing {}", dir.display()), e))?;
        names.sort();
        if dest != "/" {
            self.insert(dest, Kind::Dir, 0o755)?;
        }
        for path in names {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Layer(format!("{} is not UTF-8", path.display())))?
                .to_owned();
            let target = format!("{}/{name}", dest.trim_end_matches('/'));
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| Error::Io(format!("reading {}", path.display()), e))?;
            if meta.is_dir() {
                self.copy_dir(&path, &target, chmod)?;
            } else {
                self.copy_one(&path, &target, &meta, chmod)?;
            }
        }
        Ok(())
    }

    fn copy_one(
        &mut self,
        source: &Path,
        target: &str,
        meta: &std::fs::Metadata,
        chmod: Option<u32>,
    ) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(source)
                .map_err(|e| Error::Io(format!("reading link {}", source.display()), e))?;
            let link = link
                .to_str()
                .ok_or_else(|| Error::Layer(format!("{} is not UTF-8", link.display())))?;
            return self.insert(
                target,
                Kind::Symlink {
                    target: link.into(),
                },
                0o777,
            );
        }
        if !meta.is_file() {
            return Err(Error::Layer(format!(
                "{} is neither a file, a directory nor a symlink",
                source.display()
            )));
        }
        // Reproducible modes: executable or not, never writable by others.
        let mode = chmod.unwrap_or(if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        });
        self.insert(
            target,
            Kind::File {
                source: source.to_path_buf(),
            },
            mode,
        )
    }

    /// Writes the layer. `mtime` is every entry's timestamp (`SOURCE_DATE_EPOCH`).
    pub fn write(&self, mtime: u64) -> Result<Blob, Error> {
        // Every parent directory gets an entry of its own, as runtimes expect.
        let mut all: BTreeMap<String, Entry> = BTreeMap::new();
        for (path, entry) in &self.entries {
            let mut parent = Path::new(path).parent();
            while let Some(p) = parent {
                let s = p.to_string_lossy().into_owned();
                if s != "/" {
                    all.entry(s).or_insert(Entry {
                        kind: Kind::Dir,
                        mode: 0o755,
                    });
                }
                parent = p.parent();
            }
            all.insert(path.clone(), entry.clone());
        }
        let mut tar = tar::Builder::new(Vec::new());
        for (path, entry) in &all {
            let rel = path.trim_start_matches('/');
            let mut header = tar::Header::new_ustar();
            header.set_mode(entry.mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(mtime);
            let result = match &entry.kind {
                Kind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{rel}/"), std::io::empty())
                }
                Kind::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    tar.append_link(&mut header, rel, target)
                }
                Kind::File { source } => {
                    let data = std::fs::read(source)
                        .map_err(|e| Error::Io(format!("reading {}", source.display()), e))?;
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, rel, data.as_slice())
                }
                Kind::Bytes(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, rel, data.as_slice())
                }
            };
            result.map_err(|e| Error::Io(format!("writing {path} into the layer"), e))?;
        }
        let tar = tar
            .into_inner()
            .map_err(|e| Error::Io("finishing the layer".into(), e))?;
        let diff_id = sha256(&tar);
        // No name and mtime 0 in the gzip header: the same tar always compresses the same.
        let mut gz = GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::best());
        gz.write_all(&tar)
            .and_then(|_| gz.try_finish())
            .map_err(|e| Error::Io("compressing the layer".into(), e))?;
        let gzip = gz
            .finish()
            .map_err(|e| Error::Io("compressing the layer".into(), e))?;
        Ok(Blob {
            digest: sha256(&gzip),
            diff_id,
            tar_size: tar.len() as u64,
            gzip,
        })
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(blob: &Blob) -> Vec<(String, u32, u64, tar::EntryType)> {
        let tar = flate2::read::GzDecoder::new(blob.gzip.as_slice());
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    e.path().expect("path").display().to_string(),
                    h.mode().expect("mode"),
                    h.mtime().expect("mtime"),
                    h.entry_type(),
                )
            })
            .collect()
    }

    #[test]
    fn parents_sorted_owned_by_root_with_one_timestamp() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("etc/ssl")).expect("mkdir");
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/:/x\n").expect("write");
        std::fs::write(dir.path().join("etc/ssl/ca.crt"), "CA").expect("write");
        let mut layer = Layer::new();
        layer.copy_from(dir.path(), "/", None).expect("copy");
        layer
            .insert(
                "/bin/sh",
                Kind::Symlink {
                    target: "busybox".into(),
                },
                0o777,
            )
            .expect("link");
        let blob = layer.write(1_700_000_000).expect("write");
        let l = listing(&blob);
        let paths: Vec<&str> = l.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "bin/",
                "bin/sh",
                "etc/",
                "etc/passwd",
                "etc/ssl/",
                "etc/ssl/ca.crt"
            ]
        );
        assert!(l.iter().all(|e| e.2 == 1_700_000_000));
        assert_eq!(l[3].1, 0o644);
        assert_eq!(l[1].3, tar::EntryType::Symlink);
        // Same input, same bytes: the digest is reproducible.
        let again = layer.write(1_700_000_000).expect("write");
        assert_eq!(blob.digest, again.digest);
        assert_eq!(blob.diff_id, again.diff_id);
        assert_ne!(blob.digest, blob.diff_id);
    }

    #[test]
    fn file_into_directory_and_chmod() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("tool");
        std::fs::write(&bin, "x").expect("write");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let mut layer = Layer::new();
        layer
            .copy_from(&bin, "/usr/local/bin/", None)
            .expect("copy");
        layer
            .copy_from(&bin, "/opt/renamed", Some(0o555))
            .expect("copy");
        let l = listing(&layer.write(0).expect("write"));
        let find = |p: &str| l.iter().find(|e| e.0 == p).expect(p).1;
        assert_eq!(find("usr/local/bin/tool"), 0o755);
        assert_eq!(find("opt/renamed"), 0o555);
    }

    #[test]
    fn paths_cannot_leave_the_root() {
        assert!(clean("/a/../../b").is_err());
        assert_eq!(clean("a//b/./c/").expect("clean"), "/a/b/c");
    }
}
