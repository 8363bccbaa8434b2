//! `kubectl aexec cp` and `export --files`, at the edge: the session that asks for the copy,
//! the approval, and the tar stream between the WebSocket and the local files. The pure parts
//! (argument forms, the safe unpacking, the tar of an upload) are in [`crate::cp`].

use std::{
    io::Read,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aexec_crds::{CopyDirection, CopySpec, ExecSession, ExecSessionSpec, copy_command};
use aexec_recording::transfer::{FileKind, FileList};
use kube::api::PostParams;

use crate::{
    attach::{self, Io},
    cli,
    commands::{self, sessions},
    connect::{self, Conn},
    cp::{self, Direction, Event, Summary},
    error::{Doing, Error, Result, explain},
    target,
};

/// How much of a download may wait between the WebSocket and the thread unpacking it.
const PIPE: usize = 256 << 10;
/// How often progress is redrawn on a terminal.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// `kubectl aexec cp SRC DEST`: asks for the copy, waits for its approval, then moves the files
/// through the operator, which records them.
pub async fn cp(c: &Conn, a: &cli::CpArgs) -> Result<i32> {
    let plan = cp::plan(&a.src, &a.dst).map_err(|e| Error::Usage(e.to_string()))?;
    let mut c = c.clone();
    if let Some(ns) = &plan.namespace {
        c.namespace = ns.clone();
    }
    let copy = copy_spec(&plan)?;
    let pod_target = target::Target {
        kind: target::Kind::Pod,
        name: plan.pod.clone(),
    };
    let (pod, me) = tokio::join!(
        target::find_pod(&c.client, &c.namespace, &pod_target),
        connect::whoami(&c.client)
    );
    let pod = pod?;
    let (container, notice) = target::resolve_container(&pod, a.container.as_deref())?;
    if let Some(n) = notice
        && !a.quiet
    {
        eprintln!("{n}");
    }
    let spec = ExecSessionSpec {
        pod: plan.pod.clone(),
        container: Some(container),
        command: copy_command(&copy),
        stdin: copy.direction == CopyDirection::Upload,
        tty: false,
        reason: a.reason.clone(),
        requester: me?,
        copy: Some(copy),
        debug: None,
    };
    let mut s = ExecSession::new("", spec);
    s.metadata.name = None;
    s.metadata.generate_name = Some("cp-".into());
    let created = sessions(&c)
        .create(&PostParams::default(), &s)
        .await
        .map_err(|e| explain(&e, "creating the ExecSession for the copy", Doing::Request))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    if !a.quiet {
        eprintln!("execsession {name} created in namespace {}", c.namespace);
    }
    let approved =
        commands::wait_approved(&c, &name, a.wait.map(Into::into), a.quiet, true).await?;
    let started = Instant::now();
    let counts = Counts::default();
    let shown = progress(counts.clone(), a.quiet);
    let result = match plan.direction {
        Direction::Download => download(&c, &name, &approved.spec, &plan, counts).await,
        Direction::Upload => upload(&c, &name, &approved.spec, &plan, counts).await,
    };
    shown.abort();
    if !a.quiet && console::is_terminal() {
        eprint!("\r\x1b[K");
    }
    let (ended, summary) = result?;
    if let Some(m) = &ended.message {
        eprintln!("{m}");
    }
    if ended.code == 0 && !a.quiet {
        eprintln!("{}", done_line(&plan, &summary, started.elapsed(), &name));
    }
    Ok(ended.code)
}

/// What the session asks for: the direction and the paths, the pod path as the command uses it.
fn copy_spec(plan: &cp::Plan) -> Result<CopySpec> {
    let local = plan.local.display().to_string();
    Ok(match plan.direction {
        Direction::Download => CopySpec {
            direction: CopyDirection::Download,
            path: plan.pod_path.clone(),
            local: Some(local),
        },
        Direction::Upload => {
            std::fs::symlink_metadata(&plan.local).map_err(|e| {
                Error::Usage(format!(
                    "{local} doesn't exist in the local filesystem ({e}): give an existing file \
                     or directory to copy into the pod"
                ))
            })?;
            let (base, dir) = cp::upload_target(&plan.local, &plan.pod_path);
            let path = match dir.as_str() {
                "" | "." => base,
                "/" => format!("/{base}"),
                d => format!("{d}/{base}"),
            };
            CopySpec {
                direction: CopyDirection::Upload,
                path,
                local: Some(local),
            }
        }
    })
}

/// Copies out of the pod: the command's stdout is the tar stream, unpacked on a thread of its
/// own as it comes.
async fn download(
    c: &Conn,
    name: &str,
    spec: &ExecSessionSpec,
    plan: &cp::Plan,
    counts: Counts,
) -> Result<(attach::Ended, Summary)> {
    let (w, r) = tokio::io::duplex(PIPE);
    let prefix = cp::download_prefix(&plan.pod_path);
    let dest = plan.local.clone();
    let mut reader = Counting {
        inner: tokio_util::io::SyncIoBridge::new(r),
        n: counts.bytes.clone(),
    };
    let unpack = tokio::task::spawn_blocking(move || {
        let unpacked = cp::untar(&mut reader, &prefix, &dest, &mut |e| counts.event(&e));
        // The archive ends before the stream does (tar pads it to 10 KiB): read the rest, so
        // the relay never writes into a closed pipe.
        if unpacked.is_ok() {
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        }
        unpacked
    });
    let io = Io {
        stdin: Box::new(std::io::empty()),
        stdout: Box::new(w),
    };
    let ended = attach::attach_with(&c.client, &c.namespace, name, spec, io).await;
    let unpacked = unpack
        .await
        .map_err(|e| Error::Io(format!("unpacking the copy failed: {e}")))?;
    finish(ended, unpacked)
}

/// Copies into the pod: a thread writes the local files as a tar stream into a pipe, which is
/// the command's stdin.
async fn upload(
    c: &Conn,
    name: &str,
    spec: &ExecSessionSpec,
    plan: &cp::Plan,
    counts: Counts,
) -> Result<(attach::Ended, Summary)> {
    let (r, w) = std::io::pipe().map_err(|e| Error::Io(format!("cannot make a pipe: {e}")))?;
    let local = plan.local.clone();
    let (base, _) = cp::upload_target(&plan.local, &plan.pod_path);
    let bytes = counts.bytes.clone();
    let pack = std::thread::spawn(move || cp::mktar(&local, &base, w, &mut |e| counts.event(&e)));
    let io = Io {
        stdin: Box::new(Counting { inner: r, n: bytes }),
        stdout: Box::new(tokio::io::sink()),
    };
    let ended = attach::attach_with(&c.client, &c.namespace, name, spec, io).await;
    let packed = tokio::task::spawn_blocking(move || pack.join())
        .await
        .ok()
        .and_then(std::result::Result::ok)
        .unwrap_or_else(|| Err(cp::CpError::Usage("the tar of the upload failed".into())));
    finish(ended, packed)
}

/// The end of a copy. A session that ended badly is the cause when the local side only saw
/// its stream break (cut off, or never started); otherwise the local side's error is why the
/// stream broke (a hostile entry, a full disk), and comes first.
fn finish(
    ended: Result<attach::Ended>,
    local: std::result::Result<Summary, cp::CpError>,
) -> Result<(attach::Ended, Summary)> {
    let broken_stream =
        |e: &cp::CpError| matches!(e, cp::CpError::Stream(_) | cp::CpError::Send(_));
    match (ended, local) {
        (Ok(ended), Err(e)) if ended.code != 0 && broken_stream(&e) => {
            Ok((ended, Summary::default()))
        }
        (Err(session), Err(e)) if broken_stream(&e) => Err(session),
        (_, Err(e)) => Err(Error::Session(e.to_string())),
        (Err(e), Ok(_)) => Err(e),
        (Ok(ended), Ok(summary)) => Ok((ended, summary)),
    }
}

/// What a running copy has moved so far: bytes of tar stream, and files.
#[derive(Clone, Debug, Default)]
struct Counts {
    bytes: Arc<AtomicU64>,
    files: Arc<AtomicU64>,
}

impl Counts {
    /// Counts a file copied; prints a warning (kubectl's form).
    fn event(&self, e: &Event) {
        match e {
            Event::File { .. } => {
                self.files.fetch_add(1, Ordering::Relaxed);
            }
            w @ Event::Warning(_) => warn(w),
        }
    }
}

fn warn(e: &Event) {
    if let Event::Warning(w) = e {
        eprintln!("warning: {w}");
    }
}

/// Counts the bytes read through it, for progress.
struct Counting<R> {
    inner: R,
    n: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Redraws `copied 3 files, 12.3 MiB (4.1 MiB/s)` on stderr while a copy runs, when stderr is
/// a terminal.
fn progress(counts: Counts, quiet: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if quiet || !console::is_terminal() {
            return;
        }
        let started = Instant::now();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let n = counts.bytes.load(Ordering::Relaxed);
            let files = counts.files.load(Ordering::Relaxed);
            eprint!(
                "\r\x1b[Kcopied {files} file{}, {} of tar stream ({}/s)",
                if files == 1 { "" } else { "s" },
                human_bytes(n),
                human_bytes(rate(n, started.elapsed()))
            );
        }
    })
}

mod console {
    /// Whether stderr is a terminal (progress is drawn only there).
    pub fn is_terminal() -> bool {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal()
    }
}

fn rate(bytes: u64, took: Duration) -> u64 {
    let secs = took.as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    (bytes as f64 / secs) as u64
}

/// `1.2 MiB`, `340 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The line printed when a copy ended well.
fn done_line(plan: &cp::Plan, s: &Summary, took: Duration, name: &str) -> String {
    let (from, to) = match plan.direction {
        Direction::Download => (
            format!("{}:{}", plan.pod, plan.pod_path),
            plan.local.display().to_string(),
        ),
        Direction::Upload => (
            plan.local.display().to_string(),
            format!("{}:{}", plan.pod, plan.pod_path),
        ),
    };
    format!(
        "copied {} file{} ({}) from {from} to {to} in {:.1}s ({}/s); recorded as session {name}",
        s.files,
        if s.files == 1 { "" } else { "s" },
        human_bytes(s.bytes),
        took.as_secs_f64(),
        human_bytes(rate(s.bytes, took)),
    )
}

/// `kubectl aexec export NAME --files DIR`: the files a copy moved, written into an empty or
/// new `DIR` under the names they had in the tar stream, from the recording the operator has
/// verified (chain, and every file against the recorded list).
pub async fn export_files(c: &Conn, e: &cli::ExportArgs) -> Result<i32> {
    let Some(dir) = &e.files else {
        return Err(Error::Usage("--files needs a directory".into()));
    };
    check_empty_dir(dir)?;
    let what = format!("reading the files of {}", e.name);
    // From the ExecSession while it exists, else from its signed record in the store.
    let path = commands::recording_source(c, &e.name, "format=tar").await?;
    let body = commands::get_stream(&c.client, &path, &what).await?;
    let reader = tokio_util::io::SyncIoBridge::new(
        tokio_util::compat::FuturesAsyncReadCompatExt::compat(body),
    );
    let dest = dir.clone();
    let summary =
        tokio::task::spawn_blocking(move || cp::untar(reader, "", &dest, &mut |e| warn(&e)))
            .await
            .map_err(|err| Error::Io(format!("writing the files failed: {err}")))?
            .map_err(|err| {
                Error::Session(format!(
                    "the recorded files of {} could not all be written (they are the recording \
                     as the operator verified and served it; an upload's came from its \
                     requester): {err}",
                    e.name
                ))
            })?;
    eprintln!(
        "wrote {} file{} ({}) of session {} into {}",
        summary.files,
        if summary.files == 1 { "" } else { "s" },
        human_bytes(summary.bytes),
        e.name,
        dir.display()
    );
    Ok(0)
}

/// `DIR` must be new or empty: the files of a copy are not mixed with others.
fn check_empty_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Usage(format!(
                    "{} is not empty: give a new or empty directory, so the copied files are \
                     not mixed with others",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display()))),
        Err(e) => Err(Error::Io(format!("cannot read {}: {e}", dir.display()))),
    }
}

/// The files of a copy session, for `describe`: `None` when the session is not a copy or has
/// no recording yet.
pub async fn files_of(c: &Conn, s: &ExecSession) -> Option<Result<FileList>> {
    s.spec.copy.as_ref()?;
    s.status.as_ref()?.recording.as_ref()?;
    let name = s.metadata.name.clone().unwrap_or_default();
    let path = commands::recording_path(c, &name, "format=files");
    Some(
        commands::get_bounded(&c.client, &path, 64 << 20, "reading the copy's file list")
            .await
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| Error::Api(format!("the copy's file list is unreadable: {e}")))
            }),
    )
}

/// The `Files:` section of `describe` for a copy.
pub fn files_section(list: &FileList) -> String {
    let mut out = format!(
        "Files:\t{} entries, {} of tar stream\n",
        list.files.len(),
        human_bytes(list.tar_bytes)
    );
    let rows: Vec<Vec<String>> = list
        .files
        .iter()
        .map(|f| {
            vec![
                format!("{:?}", f.kind),
                format!("{:o}", f.mode),
                f.size.to_string(),
                f.sha256.clone().unwrap_or_else(|| "-".into()),
                match (&f.kind, &f.link) {
                    (FileKind::Symlink | FileKind::HardLink, Some(l)) => {
                        format!("{} -> {l}", f.path)
                    }
                    _ => f.path.clone(),
                },
            ]
        })
        .collect();
    for line in
        crate::table::render(&["KIND", "MODE", "SIZE", "SHA256", "PATH"], &rows, false).lines()
    {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    if list.truncated {
        out.push_str("  (more entries than a list keeps: the tar stream holds them all)\n");
    }
    if let Some(e) = &list.error {
        out.push_str(&format!(
            "  the tar stream could not be read to its end: {e}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aexec_recording::transfer::FileEntry;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn the_last_line_says_what_went_where_and_the_session() {
        let plan = cp::plan("web-0:/var/log/app", "./logs").expect("plan");
        let s = Summary {
            files: 3,
            dirs: 1,
            bytes: 3 << 20,
        };
        assert_eq!(
            done_line(&plan, &s, Duration::from_secs(2), "cp-x1"),
            "copied 3 files (3.0 MiB) from web-0:/var/log/app to ./logs in 2.0s (1.5 MiB/s); \
             recorded as session cp-x1"
        );
        let up = cp::plan("./a.txt", "web-0:/tmp/a.txt").expect("plan");
        let one = Summary {
            files: 1,
            dirs: 0,
            bytes: 6,
        };
        assert!(
            done_line(&up, &one, Duration::from_secs(1), "cp-x2")
                .starts_with("copied 1 file (6 B) from ./a.txt to web-0:/tmp/a.txt")
        );
    }

    #[test]
    fn an_upload_names_the_file_it_writes_in_the_pod() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("fix.sql");
        std::fs::write(&f, b"select 1;\n").expect("write");
        let local = f.display().to_string();
        for (dest, path) in [
            ("db-0:/tmp/x.sql", "/tmp/x.sql"),
            ("db-0:/tmp/", "/tmp/fix.sql"),
            ("db-0:rel.sql", "rel.sql"),
        ] {
            let spec = copy_spec(&cp::plan(&local, dest).expect("plan")).expect("spec");
            assert_eq!(spec.direction, CopyDirection::Upload);
            assert_eq!(spec.path, path, "{dest}");
        }
        let missing = dir.path().join("nope").display().to_string();
        let e = copy_spec(&cp::plan(&missing, "db-0:/tmp/").expect("plan")).expect_err("missing");
        assert!(
            e.to_string()
                .contains("doesn't exist in the local filesystem"),
            "{e}"
        );
    }

    #[test]
    fn describe_lists_each_entry_with_its_digest() {
        let entry = |path: &str, kind: FileKind, size: u64, sha: Option<&str>, link| FileEntry {
            path: path.into(),
            lossy_name: false,
            kind,
            size,
            mode: 0o644,
            sha256: sha.map(str::to_owned),
            link,
            offset: 0,
        };
        let list = FileList {
            files: vec![
                entry("data/", FileKind::Directory, 0, None, None),
                entry("data/a.txt", FileKind::File, 6, Some("5891b5b5"), None),
                entry(
                    "data/l",
                    FileKind::Symlink,
                    0,
                    None,
                    Some("/etc/passwd".into()),
                ),
            ],
            tar_bytes: 10240,
            error: None,
            truncated: false,
        };
        let out = files_section(&list);
        assert!(
            out.starts_with("Files:\t3 entries, 10.0 KiB of tar stream\n"),
            "{out}"
        );
        assert!(out.contains("5891b5b5"), "{out}");
        assert!(out.contains("data/l -> /etc/passwd"), "{out}");
        assert!(out.contains("KIND"), "{out}");
    }
}
