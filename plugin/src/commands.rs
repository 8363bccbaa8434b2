//! The commands, at the edge: each reads from the cluster, calls the pure parts, and prints.

use std::{io::Write, time::Duration};

use aexec_crds::{ExecPolicy, ExecSession, ExecSessionSpec, Phase};
use futures::{AsyncReadExt, StreamExt};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

use crate::{
    attach::{self, subresource_path},
    cli::{self, ExecArgs, Output},
    connect::{self, Conn},
    error::{Doing, Error, Result, explain, out},
    progress::{self, Progress},
    records::{self, Recording, RecordingList},
    replay, table, target, terminal,
};

/// Largest recording `replay` holds in memory (export streams, verify goes segment by segment).
const MAX_REPLAY_BYTES: u64 = 256 << 20;
/// Largest single stored object `verify` reads (segments are cut at 1 MiB plus one line).
const MAX_OBJECT_BYTES: u64 = 64 << 20;

pub(crate) fn sessions(c: &Conn) -> Api<ExecSession> {
    Api::namespaced(c.client.clone(), &c.namespace)
}

/// `kubectl aexec [flags] POD -- COMMAND`: request, wait, attach. Returns the exit code.
pub async fn exec(c: &Conn, args: &ExecArgs) -> Result<i32> {
    let (target, command) = target::split_exec_args(&args.target, &args.command)?;
    let (tty, warning) = target::tty_decision(args.stdin, args.tty, terminal::stdin_is_terminal());
    if let Some(w) = warning
        && !args.quiet
    {
        eprintln!("{w}");
    }
    // The pod and who the caller is, asked at once (two round trips in the time of one); the
    // pod's answer is looked at first, so the error shown does not depend on which came back
    // first.
    let (pod, me) = tokio::join!(
        target::find_pod(&c.client, &c.namespace, &target),
        connect::whoami(&c.client)
    );
    let pod = pod?;
    let (container, notice) = target::resolve_container(&pod, args.container.as_deref())?;
    if let Some(n) = notice
        && !args.quiet
    {
        eprintln!("{n}");
    }
    let me = me?;
    let spec = ExecSessionSpec {
        pod: pod.metadata.name.clone().unwrap_or_default(),
        container: Some(container),
        command,
        stdin: args.stdin,
        tty,
        reason: args.reason.clone(),
        requester: me,
        copy: None,
        debug: None,
    };
    let mut s = ExecSession::new("", spec);
    s.metadata.name = None;
    s.metadata.generate_name = Some("exec-".into());
    let created = sessions(c)
        .create(&PostParams::default(), &s)
        .await
        .map_err(|e| explain(&e, "creating the ExecSession", Doing::Request))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    if args.no_wait {
        out(&format!("{name}\n"))?;
        if !args.quiet {
            eprintln!(
                "execsession {name} created; attach once approved: kubectl aexec attach {name} -n {}",
                c.namespace
            );
        }
        return Ok(0);
    }
    if !args.quiet {
        eprintln!("execsession {name} created in namespace {}", c.namespace);
    }
    let approved = wait_approved(c, &name, args.wait.map(Into::into), args.quiet, true).await?;
    run_attached(c, &name, &approved.spec).await
}

/// `kubectl aexec debug POD --image IMAGE -- COMMAND`: asks for a debug session (an ephemeral
/// container of IMAGE beside the target container, added by the operator once approved), waits,
/// then attaches like the exec form.
pub async fn debug(c: &Conn, a: &cli::DebugArgs) -> Result<i32> {
    let (tty, warning) = target::tty_decision(a.stdin, a.tty, terminal::stdin_is_terminal());
    if let Some(w) = warning
        && !a.quiet
    {
        eprintln!("{w}");
    }
    let pod_target = target::Target {
        kind: target::Kind::Pod,
        name: a.pod.clone(),
    };
    let (pod, me) = tokio::join!(
        target::find_pod(&c.client, &c.namespace, &pod_target),
        connect::whoami(&c.client)
    );
    let pod = pod?;
    let (container, _) = target::resolve_container(&pod, a.target.as_deref())?;
    let spec = ExecSessionSpec {
        pod: a.pod.clone(),
        container: Some(container),
        command: a.command.clone(),
        stdin: a.stdin,
        tty,
        reason: a.reason.clone(),
        requester: me?,
        copy: None,
        debug: Some(aexec_crds::DebugSpec {
            image: a.image.clone(),
        }),
    };
    let mut s = ExecSession::new("", spec);
    s.metadata.name = None;
    s.metadata.generate_name = Some("debug-".into());
    let created = sessions(c)
        .create(&PostParams::default(), &s)
        .await
        .map_err(|e| explain(&e, "creating the ExecSession for debugging", Doing::Request))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    if !a.quiet {
        eprintln!("execsession {name} created in namespace {}", c.namespace);
    }
    let approved = wait_approved(c, &name, a.wait.map(Into::into), a.quiet, true).await?;
    run_attached(c, &name, &approved.spec).await
}

/// `attach NAME`: waits for the approval of a `--no-wait` session, then attaches.
pub async fn attach_existing(c: &Conn, a: &cli::AttachArgs) -> Result<i32> {
    let s = get(c, &a.name, Doing::Request).await?;
    if s.spec.tty && !terminal::stdin_is_terminal() && !a.quiet {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
    }
    let approved = wait_approved(c, &a.name, a.wait.map(Into::into), a.quiet, false).await?;
    run_attached(c, &a.name, &approved.spec).await
}

async fn run_attached(c: &Conn, name: &str, spec: &ExecSessionSpec) -> Result<i32> {
    let ended = attach::attach(&c.client, &c.namespace, name, spec).await?;
    // The terminal is restored by now: the message gets its own line.
    if let Some(m) = ended.message {
        eprintln!("{m}");
    }
    Ok(ended.code)
}

/// Watches session `name` until it is Approved, printing progress; a denial or expiry is an
/// error saying why. On Ctrl-C (or SIGTERM, or a hangup) the request is withdrawn when
/// `withdraw` (it stays, in phase Withdrawn: the requester cannot delete it).
pub(crate) async fn wait_approved(
    c: &Conn,
    name: &str,
    limit: Option<Duration>,
    quiet: bool,
    withdraw: bool,
) -> Result<ExecSession> {
    use crate::signals::{Signal, Signals};
    let api = sessions(c);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api.clone(), cfg).default_backoff().boxed();
    let mut progress = Progress::new();
    let mut policy: Option<ExecPolicy> = None;
    let mut policy_read = false;
    let mut signals = Signals::new(false)?;
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let timeout = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => futures::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    let mut seen = false;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            sig = signals.recv() => match sig {
                // The terminal is gone with a hangup: nobody is left to attach.
                Signal::Interrupt | Signal::Terminate | Signal::Hangup => {
                    return Err(interrupted(c, name, withdraw).await)
                }
                // Not asked for (Signals::new(false)).
                Signal::WindowChange => continue,
            },
            _ = &mut timeout => {
                return Err(Error::Session(format!(
                    "session {name} was not approved within {}; it stays open: attach later with \
                     kubectl aexec attach {name} -n {}, or withdraw it with kubectl aexec withdraw {name} -n {}",
                    kube::core::Duration::from(limit.unwrap_or_default()), c.namespace, c.namespace
                )));
            }
        };
        let s = match ev {
            Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => s,
            Some(Ok(watcher::Event::Delete(_))) => {
                return Err(Error::Session(format!(
                    "session {name} was deleted while waiting for approval"
                )));
            }
            Some(Ok(watcher::Event::InitDone)) if !seen => {
                return Err(Error::Session(format!(
                    "execsession {name:?} not found in namespace {:?}",
                    c.namespace
                )));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                // Refusals will not go away by retrying; other errors are retried with backoff.
                if let watcher::Error::InitialListFailed(kube::Error::Api(s))
                | watcher::Error::WatchStartFailed(kube::Error::Api(s)) = &e
                    && matches!(s.code, 401 | 403 | 404)
                {
                    let e = kube::Error::Api(s.clone());
                    return Err(explain(
                        &e,
                        &format!("watching session {name}"),
                        Doing::Request,
                    ));
                }
                continue;
            }
            None => {
                return Err(Error::Api(format!(
                    "watching session {name}: the watch ended"
                )));
            }
        };
        seen = true;
        if !policy_read && let Some(p) = s.status.as_ref().and_then(|st| st.policy.clone()) {
            policy_read = true;
            policy = Api::<ExecPolicy>::all(c.client.clone())
                .get_opt(&p)
                .await
                .ok()
                .flatten();
        }
        if !quiet {
            for line in progress.update(&s, policy.as_ref()) {
                eprintln!("{line}");
            }
        }
        match s.phase() {
            Phase::Pending => continue,
            Phase::Approved => return Ok(s),
            _ => {
                return Err(Error::Session(
                    progress::not_attachable(&s)
                        .unwrap_or_else(|| format!("session {name} cannot be attached")),
                ));
            }
        }
    }
}

async fn interrupted(c: &Conn, name: &str, withdraw: bool) -> Error {
    if !withdraw {
        return Error::Session(format!(
            "interrupted; session {name} stays open (withdraw it with kubectl aexec withdraw {name} -n {})",
            c.namespace
        ));
    }
    match put_subresource(c, name, "withdraw", None).await {
        Ok(_) => Error::Session(format!("interrupted: request {name} withdrawn")),
        Err(e) => explain(
            &e,
            &format!("interrupted; withdrawing request {name}"),
            Doing::Request,
        ),
    }
}

/// `PUT .../execsessions/NAME/SUB` with an optional comment; the session as written.
pub(crate) async fn put_subresource(
    c: &Conn,
    name: &str,
    sub: &str,
    comment: Option<&str>,
) -> Result<ExecSession, kube::Error> {
    let body = match comment {
        Some(m) => json!({"comment": m}),
        None => json!({}),
    };
    let req = http::Request::put(subresource_path(&c.namespace, name, sub))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(kube::Error::HttpError)?;
    c.client.request(req).await
}

/// `withdraw NAME`: the requester takes back a request not yet attached.
pub async fn withdraw(c: &Conn, d: &cli::DecideArgs) -> Result<i32> {
    put_subresource(c, &d.name, "withdraw", d.message.as_deref())
        .await
        .map_err(|e| {
            explain(
                &e,
                &format!("withdrawing session {}", d.name),
                Doing::Request,
            )
        })?;
    out(&format!("execsession.aexec.dev/{} withdrawn\n", d.name))?;
    Ok(0)
}

async fn get(c: &Conn, name: &str, doing: Doing) -> Result<ExecSession> {
    match get_opt(c, name, doing).await? {
        Some(s) => Ok(s),
        None => Err(Error::Usage(format!(
            "execsession {name:?} not found in namespace {:?} (kubectl aexec list -n {})",
            c.namespace, c.namespace
        ))),
    }
}

async fn get_opt(c: &Conn, name: &str, doing: Doing) -> Result<Option<ExecSession>> {
    sessions(c)
        .get_opt(name)
        .await
        .map_err(|e| explain(&e, &format!("reading session {name}"), doing))
}

/// `approve` / `deny`.
pub async fn decide(c: &Conn, d: &cli::DecideArgs, approve: bool) -> Result<i32> {
    let (verb, done) = if approve {
        ("approve", "approved")
    } else {
        ("deny", "denied")
    };
    let body = match &d.message {
        Some(m) => json!({"comment": m}),
        None => json!({}),
    };
    let req = http::Request::put(subresource_path(&c.namespace, &d.name, verb))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).map_err(|e| Error::Api(e.to_string()))?)
        .map_err(|e| Error::Api(e.to_string()))?;
    let s: ExecSession = c.client.request(req).await.map_err(|e| {
        explain(
            &e,
            &format!("{}ing session {}", verb.trim_end_matches('e'), d.name),
            Doing::Decide,
        )
    })?;
    let summary = s
        .status
        .as_ref()
        .and_then(|st| st.approval_summary.clone())
        .map(|a| format!(" ({a} approvals)"))
        .filter(|_| approve)
        .unwrap_or_default();
    out(&format!(
        "execsession.aexec.dev/{} {done}{summary}\n",
        d.name
    ))?;
    Ok(0)
}

/// `terminate NAME`.
pub async fn terminate(c: &Conn, name: &str) -> Result<i32> {
    let req = http::Request::put(subresource_path(&c.namespace, name, "terminate"))
        .body(Vec::new())
        .map_err(|e| Error::Api(e.to_string()))?;
    c.client
        .request_text(req)
        .await
        .map_err(|e| explain(&e, &format!("terminating session {name}"), Doing::Request))?;
    out(&format!("execsession.aexec.dev/{name} terminated\n"))?;
    Ok(0)
}

/// `list`.
pub async fn list(c: &Conn, l: &cli::ListArgs) -> Result<i32> {
    let api: Api<ExecSession> = if l.all_namespaces {
        Api::all(c.client.clone())
    } else {
        sessions(c)
    };
    let mut lp = ListParams::default();
    if let Some(p) = l.phase {
        lp = lp.fields(&format!("status.phase={p}"));
    }
    let mut items = api
        .list(&lp)
        .await
        .map_err(|e| explain(&e, "listing sessions", Doing::Audit))?
        .items;
    for s in &mut items {
        s.metadata.managed_fields = None;
    }
    let mut stdout = std::io::stdout().lock();
    match l.output {
        Some(Output::Json) | Some(Output::Yaml) => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}});
            let text = if l.output == Some(Output::Json) {
                serde_json::to_string_pretty(&list)
                    .map(|s| s + "\n")
                    .map_err(|e| Error::Io(e.to_string()))?
            } else {
                serde_yaml::to_string(&list).map_err(|e| Error::Io(e.to_string()))?
            };
            stdout.write_all(text.as_bytes())?;
        }
        Some(Output::Name) => {
            for s in &items {
                writeln!(
                    stdout,
                    "execsession.aexec.dev/{}",
                    s.metadata.name.clone().unwrap_or_default()
                )?;
            }
        }
        other => {
            if items.is_empty() {
                if l.all_namespaces {
                    eprintln!("No resources found");
                } else {
                    eprintln!("No resources found in {} namespace.", c.namespace);
                }
                return Ok(0);
            }
            let wide = other == Some(Output::Wide);
            stdout.write_all(
                table::list(
                    &items,
                    l.all_namespaces,
                    wide,
                    l.no_headers,
                    chrono::Utc::now(),
                )
                .as_bytes(),
            )?;
        }
    }
    Ok(0)
}

/// `describe NAME`: the ExecSession, or its signed record in the store once it is gone.
pub async fn describe(c: &Conn, name: &str) -> Result<i32> {
    match get_opt(c, name, Doing::Audit).await? {
        Some(s) => {
            out(&table::describe(&s, chrono::Utc::now()))?;
            match crate::copy::files_of(c, &s).await {
                Some(Ok(list)) => out(&crate::copy::files_section(&list))?,
                Some(Err(e)) => out(&format!("Files:\t<cannot be read: {e}>\n"))?,
                None => {}
            }
        }
        None => {
            let r = find_recording(c, name).await?;
            out(&records::describe(&r, false))?;
        }
    }
    Ok(0)
}

pub(crate) fn recording_path(c: &Conn, name: &str, query: &str) -> String {
    format!(
        "{}?{query}",
        subresource_path(&c.namespace, name, "recording")
    )
}

/// Where a session's recording is read from: the ExecSession's `recording` subresource while
/// it exists, else the `content` of its signed record in the store (and the user is told).
pub(crate) async fn recording_source(c: &Conn, name: &str, query: &str) -> Result<String> {
    if get_opt(c, name, Doing::Audit).await?.is_some() {
        return Ok(recording_path(c, name, query));
    }
    let r = find_recording(c, name).await?;
    eprintln!(
        "execsession {name} no longer exists: reading its recording from its signed session record in the store ({})",
        r.status.uri
    );
    Ok(format!(
        "{}/content?{query}",
        recordings_path(&r.metadata.namespace, Some(&r.metadata.name))
    ))
}

/// GETs `path` from the API server and returns the answer's body as it streams in; a refusal
/// is explained as `what` failing.
pub(crate) async fn get_stream(
    client: &Client,
    path: &str,
    what: &str,
) -> Result<impl futures::AsyncRead + Unpin + use<>> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| Error::Api(e.to_string()))?;
    client
        .request_stream(req)
        .await
        .map_err(|e| explain(&e, what, Doing::Audit))
}

/// GETs `path` and reads at most `limit` bytes of the answer (more is an error, never buffered).
pub(crate) async fn get_bounded(
    client: &Client,
    path: &str,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let body = get_stream(client, path, what).await?;
    let mut buf = Vec::new();
    body.take(limit + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| Error::Api(format!("{what}: {e}")))?;
    if buf.len() as u64 > limit {
        return Err(Error::Api(format!("{what}: larger than {limit} bytes")));
    }
    Ok(buf)
}

/// `export NAME [-o FILE] [--format F]`: streams the recording (verified by the operator) to
/// the file (written whole or not at all) or to stdout.
pub async fn export(c: &Conn, e: &cli::ExportArgs) -> Result<i32> {
    let what = format!("reading the recording of {}", e.name);
    let path = recording_source(c, &e.name, &format!("format={}", e.format.as_str())).await?;
    let mut body = get_stream(&c.client, &path, &what).await?;
    match &e.output {
        None => {
            let mut stdout = std::io::stdout().lock();
            copy_body(&mut body, &mut stdout, &what, "standard output").await?;
            stdout.flush()?;
        }
        Some(path) => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .map_err(|err| Error::Io(format!("cannot write in {}: {err}", dir.display())))?;
            let total = copy_body(&mut body, &mut tmp, &what, &path.display().to_string()).await?;
            tmp.persist(path)
                .map_err(|err| Error::Io(format!("writing {}: {err}", path.display())))?;
            eprintln!(
                "wrote {} ({total} bytes, {})",
                path.display(),
                e.format.as_str()
            );
        }
    }
    Ok(0)
}

/// Copies a response body to `out` in 64 KiB chunks; the number of bytes.
async fn copy_body(
    body: &mut (impl futures::AsyncRead + Unpin),
    out: &mut impl Write,
    what: &str,
    to: &str,
) -> Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = body
            .read(&mut buf)
            .await
            .map_err(|err| Error::Api(format!("{what}: {err}")))?;
        if n == 0 {
            return Ok(total);
        }
        out.write_all(&buf[..n])
            .map_err(|err| match Error::from(err) {
                Error::Io(m) => Error::Io(format!("writing {to}: {m}")),
                closed => closed, // a closed pipe stays Error::OutputClosed (exit 141)
            })?;
        total += n as u64;
    }
}

/// `replay NAME`: plays the recording (verified by the operator) with its timing.
pub async fn replay(c: &Conn, r: &cli::ReplayArgs) -> Result<i32> {
    let bytes = get_bounded(
        &c.client,
        &recording_source(c, &r.name, "format=v3").await?,
        MAX_REPLAY_BYTES,
        &format!("reading the recording of {}", r.name),
    )
    .await
    .map_err(|e| match e {
        Error::Api(m) if m.ends_with("bytes") => Error::Api(format!(
            "{m}: too long to replay here; export it (kubectl aexec export {} -o FILE) and play it with asciinema",
            r.name
        )),
        other => other,
    })?;
    let rec = aexec_recording::cast::CastReader::parse(&bytes).map_err(|e| {
        Error::Api(format!(
            "the recording of {} is not valid asciicast v3: {e}",
            r.name
        ))
    })?;
    let interactive = terminal::stdin_is_terminal() && terminal::stdout_is_terminal();
    if interactive {
        let f = &rec.header.aexec;
        eprintln!(
            "replaying {}/{}: {} by {} in {}/{} (space: pause, '.': step, ']': next marker, q: quit)",
            f.namespace,
            f.name,
            aexec_recording::cast::display_command(&f.command),
            f.requester.username,
            f.pod,
            f.container
        );
    }
    let tty = rec.header.aexec.tty;
    let from = Duration::from_secs_f64(r.from.unwrap_or(0.0));
    let frames = replay::schedule(&rec, r.speed, r.idle_limit, from);
    replay::play(frames, tty, interactive).await?;
    Ok(0)
}

/// `verify NAME`: checks the session's signed record (its signature, with the keys the
/// operator publishes or the ones pinned with --public-key), then the stored manifest against
/// the record and every segment against the manifest, here, with the same code as the
/// operator. While the ExecSession exists, its status must agree; before the record is written
/// (the session still going on), the chain is checked against the status alone.
pub async fn verify(c: &Conn, v: &cli::VerifyArgs) -> Result<i32> {
    let name = v.name.clone().unwrap_or_default();
    let keys = match &v.public_key {
        Some(file) => Some(read_keys(file)?),
        None => None,
    };
    out(&verify_report(c, &name, keys).await?)?;
    Ok(0)
}

/// The report of `verify NAME` (see [`verify`]); an error when verification fails.
pub async fn verify_report(
    c: &Conn,
    name: &str,
    keys: Option<aexec_recording::record::KeyRing>,
) -> Result<String> {
    let name = name.to_owned();
    let session = get_opt(c, &name, Doing::Audit).await?;
    let (recording, status_head) = match &session {
        Some(s) => {
            let st = s.status.clone().unwrap_or_default();
            if st.record.is_none() {
                return verify_against_status(c, s).await;
            }
            let uid = s.metadata.uid.clone().unwrap_or_default();
            (format!("{name}-{uid}"), st.recording.and_then(|r| r.sha256))
        }
        None => {
            let r = find_recording(c, &name).await?;
            eprintln!(
                "execsession {name} no longer exists: verifying its signed session record in the store ({})",
                r.status.uri
            );
            (r.metadata.name.clone(), None)
        }
    };
    let keys = match keys {
        Some(k) => k,
        None => fetch_keys(c).await?,
    };
    let objects = ClusterObjects {
        client: c.client.clone(),
        path: recordings_path(&c.namespace, Some(&recording)),
        name: recording,
    };
    let verified = records::verify(&objects, &keys).await?;
    if let Some(s) = &session
        && verified.record.session.uid != s.metadata.uid.clone().unwrap_or_default()
    {
        return Err(Error::Verify(format!(
            "FAILED: the session record belongs to session uid {}, not to this session",
            verified.record.session.uid
        )));
    }
    records::report(&verified, status_head.as_deref())
}

/// `verify --dir PATH --public-key FILE`: the same checks on files copied out of the store,
/// with no cluster.
pub async fn verify_dir(v: &cli::VerifyArgs) -> Result<i32> {
    let (Some(dir), Some(key_file)) = (&v.dir, &v.public_key) else {
        return Err(Error::Usage(
            "verify --dir needs --public-key FILE (the keys from kubectl aexec keys)".into(),
        ));
    };
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory: give the directory holding the session's record.json, manifest.json and seg-* files",
            dir.display()
        )));
    }
    let keys = read_keys(key_file)?;
    let verified = records::verify(&DirObjects(dir.clone()), &keys).await?;
    out(&records::report(&verified, None)?)?;
    Ok(0)
}

/// The public keys of a PEM file.
fn read_keys(file: &std::path::Path) -> Result<aexec_recording::record::KeyRing> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", file.display())))?;
    aexec_recording::record::KeyRing::from_pem_bundle(&text)
        .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))
}

/// The stored objects of a session directory copied out of the store.
struct DirObjects(std::path::PathBuf);

impl records::Objects for DirObjects {
    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.0.join(name);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io(format!("reading {}: {e}", path.display()))),
            Ok(m) if m.len() > MAX_OBJECT_BYTES => {
                return Err(Error::Verify(format!(
                    "FAILED: {} is {} bytes, more than any object of a recording ({MAX_OBJECT_BYTES})",
                    path.display(),
                    m.len()
                )));
            }
            Ok(_) => {}
        }
        std::fs::read(&path)
            .map(Some)
            .map_err(|e| Error::Io(format!("reading {}: {e}", path.display())))
    }

    fn source(&self) -> String {
        self.0.display().to_string()
    }
}

/// The stored objects of a session, through the operator (`recordings/NAME/content?object=`).
struct ClusterObjects {
    client: Client,
    /// `.../namespaces/NS/recordings/NAME`.
    path: String,
    name: String,
}

impl records::Objects for ClusterObjects {
    async fn get(&self, object: &str) -> Result<Option<Vec<u8>>> {
        let path = format!("{}/content?object={object}", self.path);
        let req = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| Error::Api(e.to_string()))?;
        let what = format!("reading {object} of {}", self.name);
        let body = match self.client.request_stream(req).await {
            Ok(b) => b,
            // The object is not there (the operator's 404 for a stored object, not for the
            // recording as a whole).
            Err(kube::Error::Api(s))
                if s.code == 404 && s.message.starts_with("recording object") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(explain(&e, &what, Doing::Audit)),
        };
        let mut buf = Vec::new();
        body.take(MAX_OBJECT_BYTES + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Error::Api(format!("{what}: {e}")))?;
        if buf.len() as u64 > MAX_OBJECT_BYTES {
            return Err(Error::Api(format!(
                "{what}: larger than {MAX_OBJECT_BYTES} bytes"
            )));
        }
        Ok(Some(buf))
    }

    fn source(&self) -> String {
        format!("the store (recording {})", self.name)
    }
}

/// Before the session's record is written (it is still going on, or ended a moment ago): the
/// chain against the head in the session's status.
async fn verify_against_status(c: &Conn, s: &ExecSession) -> Result<String> {
    use aexec_recording::chain::{Manifest, SegmentMeta, Verifier, sidecar_name};
    let name = s.metadata.name.clone().unwrap_or_default();
    let name = name.as_str();
    let rec = s
        .status
        .as_ref()
        .and_then(|st| st.recording.clone())
        .ok_or_else(|| {
            Error::Verify(format!(
                "session {name} has no recording (phase {})",
                s.phase()
            ))
        })?;
    let expected = rec.sha256.clone().ok_or_else(|| {
        Error::Verify(format!(
            "session {name}'s recording is not sealed yet (no sha256 in its status)"
        ))
    })?;
    let fetch = |object: String| {
        let path = recording_path(c, name, &format!("object={object}"));
        async move {
            get_bounded(
                &c.client,
                &path,
                MAX_OBJECT_BYTES,
                &format!("reading {object} of {name}"),
            )
            .await
        }
    };
    let manifest: Manifest = serde_json::from_slice(&fetch("manifest.json".into()).await?)
        .map_err(|e| Error::Verify(format!("FAILED: the manifest of {name} is not valid: {e}")))?;
    let uid = s.metadata.uid.clone().unwrap_or_default();
    if manifest.session.name != name
        || manifest.session.namespace != c.namespace
        || manifest.session.uid != uid
    {
        return Err(Error::Verify(format!(
            "FAILED: the recording belongs to {}/{} ({}), not to this session ({}/{name}, {uid})",
            manifest.session.namespace, manifest.session.name, manifest.session.uid, c.namespace
        )));
    }
    let fail = |e: aexec_recording::chain::VerifyError| Error::Verify(format!("FAILED: {e}"));
    let mut v = Verifier::new(&manifest, Some(&expected)).map_err(fail)?;
    for meta in &manifest.segments {
        let bytes = fetch(meta.file_name()).await.map_err(|e| match e {
            Error::Api(m) if m.contains("cannot be read") || m.contains("not found") => {
                Error::Verify(format!(
                    "FAILED: segment {} ({}) is missing: {m}",
                    meta.index,
                    meta.file_name()
                ))
            }
            other => other,
        })?;
        // A missing sidecar is allowed (a crash may lose the newest); a present one must agree.
        let sidecar: Option<SegmentMeta> = match fetch(sidecar_name(meta.index)).await {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                Error::Verify(format!(
                    "FAILED: sidecar {} is not valid: {e}",
                    sidecar_name(meta.index)
                ))
            })?),
            Err(_) => None,
        };
        v.segment(meta.index, &bytes, sidecar.as_ref())
            .map_err(fail)?;
    }
    let report = v.finish().map_err(fail)?;
    Ok(format!(
        "recording of {}/{name} verified: {} segments, {} bytes, chain head {} matches the session's status{} \
         (no signed session record yet: the session is {})\n",
        c.namespace,
        report.segments,
        report.total_bytes,
        report.head,
        if report.interrupted {
            format!(
                " (sealed after an interruption: {})",
                report.reason.unwrap_or_default()
            )
        } else {
            String::new()
        },
        s.phase()
    ))
}

// ---- review from the store

/// `/apis/.../namespaces/NS/recordings[/NAME]`.
pub(crate) fn recordings_path(namespace: &str, name: Option<&str>) -> String {
    let base = format!(
        "/apis/{}/{}/namespaces/{namespace}/recordings",
        aexec_crds::SUBRESOURCE_GROUP,
        aexec_crds::VERSION
    );
    match name {
        Some(n) => format!("{base}/{n}"),
        None => base,
    }
}

/// GETs `path` as JSON (bounded).
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
    what: &str,
) -> Result<T> {
    let bytes = get_bounded(client, path, MAX_OBJECT_BYTES, what).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Api(format!("{what}: unexpected answer: {e}")))
}

/// Every session record in the namespace (all with `all`) matching the query, page by page.
pub(crate) async fn list_recordings(
    c: &Conn,
    all: bool,
    query: &[(&str, String)],
) -> Result<Vec<Recording>> {
    let base = if all {
        format!(
            "/apis/{}/{}/recordings",
            aexec_crds::SUBRESOURCE_GROUP,
            aexec_crds::VERSION
        )
    } else {
        recordings_path(&c.namespace, None)
    };
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    loop {
        // (The serializer is not Send: it is done before the await.)
        let path = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in query {
                q.append_pair(k, v);
            }
            if let Some(n) = &next {
                q.append_pair("continue", n);
            }
            format!("{base}?{}", q.finish())
        };
        let page: RecordingList = get_json(&c.client, &path, "listing session records").await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(n) if !n.is_empty() && Some(&n) != next.as_ref() => next = Some(n),
            _ => return Ok(items),
        }
    }
}

/// The record of session `name` (or of recording `name`) in the namespace.
async fn find_recording(c: &Conn, name: &str) -> Result<Recording> {
    let found = list_recordings(c, false, &[("fieldSelector", format!("session={name}"))]).await?;
    if !found.is_empty() {
        return records::pick(&found, name, &c.namespace).cloned();
    }
    // Named by its recording (SESSION-UID)?
    let req = http::Request::get(recordings_path(&c.namespace, Some(name)))
        .body(Vec::new())
        .map_err(|e| Error::Api(e.to_string()))?;
    match c.client.request::<Recording>(req).await {
        Ok(r) => Ok(r),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            records::pick(&[], name, &c.namespace).cloned()
        }
        Err(e) => Err(explain(
            &e,
            &format!("reading recording {name}"),
            Doing::Audit,
        )),
    }
}

/// `list --archived`: the session records in the store.
pub async fn list_archived(c: &Conn, l: &cli::ListArgs) -> Result<i32> {
    let mut selector = vec![];
    if let Some(u) = &l.requester {
        selector.push(format!("requester={u}"));
    }
    if let Some(p) = &l.pod {
        selector.push(format!("pod={p}"));
    }
    if let Some(p) = l.phase {
        selector.push(format!("phase={p}"));
    }
    let mut query = vec![];
    if !selector.is_empty() {
        query.push(("fieldSelector", selector.join(",")));
    }
    let rfc =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let Some(t) = l.since {
        query.push(("since", rfc(t)));
    }
    if let Some(t) = l.until {
        query.push(("until", rfc(t)));
    }
    let items = list_recordings(c, l.all_namespaces, &query).await?;
    let mut stdout = std::io::stdout().lock();
    match l.output {
        Some(Output::Json) | Some(Output::Yaml) => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}});
            let text = if l.output == Some(Output::Json) {
                serde_json::to_string_pretty(&list)
                    .map(|s| s + "\n")
                    .map_err(|e| Error::Io(e.to_string()))?
            } else {
                serde_yaml::to_string(&list).map_err(|e| Error::Io(e.to_string()))?
            };
            stdout.write_all(text.as_bytes())?;
        }
        Some(Output::Name) => {
            for r in &items {
                writeln!(
                    stdout,
                    "recording.{}/{}",
                    aexec_crds::SUBRESOURCE_GROUP,
                    r.metadata.name
                )?;
            }
        }
        other => {
            if items.is_empty() {
                if l.all_namespaces {
                    eprintln!("No session records found in the store");
                } else {
                    eprintln!(
                        "No session records found in the store for namespace {}.",
                        c.namespace
                    );
                }
                return Ok(0);
            }
            // Which sessions still exist, for the OBJECT column.
            let api: Api<ExecSession> = if l.all_namespaces {
                Api::all(c.client.clone())
            } else {
                sessions(c)
            };
            let uids: std::collections::HashSet<String> = api
                .list_metadata(&ListParams::default())
                .await
                .map_err(|e| explain(&e, "listing sessions", Doing::Audit))?
                .items
                .into_iter()
                .filter_map(|m| m.metadata.uid)
                .collect();
            let wide = other == Some(Output::Wide);
            stdout.write_all(
                records::list(
                    &items,
                    &uids,
                    l.all_namespaces,
                    wide,
                    l.no_headers,
                    chrono::Utc::now(),
                )
                .as_bytes(),
            )?;
        }
    }
    Ok(0)
}

/// The operator's public keys for session records.
async fn fetch_keys(c: &Conn) -> Result<aexec_recording::record::KeyRing> {
    let path = format!(
        "/apis/{}/{}/signingkeys",
        aexec_crds::SUBRESOURCE_GROUP,
        aexec_crds::VERSION
    );
    let list: serde_json::Value =
        get_json(&c.client, &path, "reading the operator's public keys").await?;
    let mut ring = aexec_recording::record::KeyRing::default();
    for item in list["items"].as_array().into_iter().flatten() {
        let pem = item["publicKey"].as_str().unwrap_or_default();
        let key = aexec_recording::record::PublicKey::from_pem(pem).map_err(|e| {
            Error::Api(format!(
                "the operator published an unreadable public key: {e}"
            ))
        })?;
        ring.add(key);
    }
    if ring.keys().is_empty() {
        return Err(Error::Api(
            "the operator publishes no public key for session records".into(),
        ));
    }
    Ok(ring)
}

/// `keys`: the public keys that verify session records, as PEM (to pin for verify
/// --public-key) or as the API's list.
pub async fn keys(c: &Conn, k: &cli::KeysArgs) -> Result<i32> {
    match k.output {
        None => {
            let ring = fetch_keys(c).await?;
            out(&ring.to_pem_bundle())?;
        }
        Some(format) => {
            let path = format!(
                "/apis/{}/{}/signingkeys",
                aexec_crds::SUBRESOURCE_GROUP,
                aexec_crds::VERSION
            );
            let list: serde_json::Value =
                get_json(&c.client, &path, "reading the operator's public keys").await?;
            let text = match format {
                cli::JsonOrYaml::Json => serde_json::to_string_pretty(&list)
                    .map(|s| s + "\n")
                    .map_err(|e| Error::Io(e.to_string()))?,
                cli::JsonOrYaml::Yaml => {
                    serde_yaml::to_string(&list).map_err(|e| Error::Io(e.to_string()))?
                }
            };
            out(&text)?;
        }
    }
    Ok(0)
}

/// `completion SHELL`.
pub fn completion(shell: cli::Shell) -> Result<i32> {
    use clap::CommandFactory;
    let mut cmd = crate::cli::Cli::command();
    let shell = match shell {
        cli::Shell::Bash => clap_complete::Shell::Bash,
        cli::Shell::Zsh => clap_complete::Shell::Zsh,
        cli::Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kubectl-aexec", &mut script);
    out(&String::from_utf8_lossy(&script))?;
    Ok(0)
}
