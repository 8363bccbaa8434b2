//! `kubectl aexec search`: which sessions typed or showed something, where in them, and the
//! command to see it in context.
//!
//! What a terminal showed is what a terminal emulator makes of the bytes: cursor movement,
//! clearing and full-screen programs (vim, top, less) defeat stripping escape sequences. The
//! output is fed to asciinema's own emulator (`avt`, the library behind its player), and every
//! line the screen held after a change is matched, as well as every line scrolled off it. What
//! was typed is matched as lines, with what the line editor would have made of them: backspace
//! and delete remove a character, Ctrl-U the line, Ctrl-W a word, and escape sequences (arrow
//! keys) are dropped.
//!
//! The matching ([`Searcher`]) is pure; the command around it lists the sessions and streams
//! each verified recording from the operator in bounded memory (the cast is read a piece at a
//! time; the emulator holds one screen).

use std::{collections::HashSet, time::Duration};

use aexec_recording::{
    cast::{CastReader, Event},
    editor::LineEditor,
    transcript::{MAX_COLS, MAX_ROWS},
};
use regex::Regex;

/// Distinct matching lines remembered per session, so a line shown again is reported once.
const MAX_SEEN: usize = 10_000;

/// A terminal size as the emulator gets it: at least 1, at most the transcript's cap (a crafted
/// header or resize of 65535x65535 would otherwise ask for billions of cells).
fn screen(n: u16, max: u16) -> usize {
    usize::from(n.clamp(1, max))
}

/// Where a match was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// A line the requester typed.
    Input,
    /// A line the terminal showed.
    Output,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Input => "input",
            Side::Output => "output",
        }
    }
}

/// One match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub side: Side,
    /// When, since the session started.
    pub at: Duration,
    pub line: String,
}

/// What was typed, as lines, each with when its first key was pressed.
#[derive(Debug, Default)]
struct Typed {
    editor: LineEditor,
    /// When the line being typed began.
    since: Option<Duration>,
}

impl Typed {
    /// Adds typed bytes; appends the lines they end (not blank ones) with when they began.
    fn feed(&mut self, at: Duration, bytes: &[u8], done: &mut Vec<(Duration, String)>) {
        let start = self.since.unwrap_or(at);
        let mut lines = Vec::new();
        self.editor.feed(bytes, &mut lines);
        let ended = !lines.is_empty();
        for (i, line) in lines.into_iter().enumerate() {
            if !line.trim().is_empty() {
                done.push((if i == 0 { start } else { at }, line));
            }
        }
        // What is left was begun in this event, or before it if no line ended.
        self.since = (!self.editor.is_empty()).then_some(if ended { at } else { start });
    }

    /// The end of the session: a line typed without Enter still counts.
    fn finish(&mut self, at: Duration, done: &mut Vec<(Duration, String)>) {
        let start = self.since.unwrap_or(at);
        let mut lines = Vec::new();
        self.editor.finish(&mut lines);
        done.extend(
            lines
                .into_iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| (start, l)),
        );
    }
}

/// `text` cut before each escape and carriage return and after each newline.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .char_indices()
            .skip(1)
            .find(|&(i, c)| c == '\u{1b}' || c == '\r' || rest[..i].ends_with('\n'))
            .map_or(rest.len(), |(i, _)| i);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// Matches one session's events against a pattern.
pub struct Searcher {
    pattern: Regex,
    input: bool,
    output: bool,
    vt: avt::Vt,
    typed: Typed,
    seen: HashSet<(Side, String)>,
}

impl std::fmt::Debug for Searcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Searcher")
            .field("pattern", &self.pattern.as_str())
            .finish_non_exhaustive()
    }
}

impl Searcher {
    /// A searcher for one session whose terminal is `cols` x `rows`; `input` and `output`
    /// choose what is matched.
    pub fn new(pattern: Regex, cols: u16, rows: u16, input: bool, output: bool) -> Self {
        Searcher {
            pattern,
            input,
            output,
            vt: avt::Vt::builder()
                .size(screen(cols, MAX_COLS), screen(rows, MAX_ROWS))
                .scrollback_limit(0)
                .build(),
            typed: Typed::default(),
            seen: HashSet::new(),
        }
    }

    fn check(&mut self, side: Side, at: Duration, line: &str, hits: &mut Vec<Hit>) {
        let line = line.trim_end();
        if !self.pattern.is_match(line) {
            return;
        }
        let key = (side, line.to_owned());
        if self.seen.contains(&key) {
            return;
        }
        if self.seen.len() < MAX_SEEN {
            self.seen.insert(key);
        }
        hits.push(Hit {
            side,
            at,
            line: line.to_owned(),
        });
    }

    /// Matches one event.
    pub fn event(&mut self, at: Duration, ev: &Event, hits: &mut Vec<Hit>) {
        match ev {
            Event::Output(b) | Event::Error(b) if self.output => {
                let text = String::from_utf8_lossy(b);
                // The screen is looked at before every escape sequence and carriage return and
                // after every newline: text one write shows and the next control erases (a
                // clear screen, a redrawn line) in the same event is still seen.
                for piece in pieces(&text) {
                    let (scrolled, changed) = {
                        let changes = self.vt.feed_str(piece);
                        let changed = changes.lines;
                        let scrolled: Vec<String> = changes.scrollback.map(|l| l.text()).collect();
                        (scrolled, changed)
                    };
                    for line in scrolled {
                        self.check(Side::Output, at, &line, hits);
                    }
                    for i in changed {
                        let line = self.vt.line(i).text();
                        self.check(Side::Output, at, &line, hits);
                    }
                }
            }
            Event::Input(b) if self.input => {
                let mut done = Vec::new();
                self.typed.feed(at, b, &mut done);
                for (since, line) in done {
                    self.check(Side::Input, since, &line, hits);
                }
            }
            Event::Resize { cols, rows } => {
                let _ = self
                    .vt
                    .resize(screen(*cols, MAX_COLS), screen(*rows, MAX_ROWS));
            }
            _ => {}
        }
    }

    /// The end of the session: a line typed without Enter still counts.
    pub fn finish(mut self, at: Duration, hits: &mut Vec<Hit>) {
        if !self.input {
            return;
        }
        let mut done = Vec::new();
        self.typed.finish(at, &mut done);
        for (since, line) in done {
            self.check(Side::Input, since, &line, hits);
        }
    }
}

/// Searches a whole cast (for tests and small recordings): the hits in order.
pub fn search_cast(cast: &[u8], pattern: &Regex, input: bool, output: bool) -> Vec<Hit> {
    let mut reader = CastReader::new();
    let mut events = Vec::new();
    if reader.feed(cast, &mut events).is_err() {
        return Vec::new();
    }
    let (cols, rows) = reader
        .header()
        .map_or((80, 24), |h| (h.term.cols, h.term.rows));
    let mut s = Searcher::new(pattern.clone(), cols, rows, input, output);
    let mut hits = Vec::new();
    let mut last = Duration::ZERO;
    for (at, ev) in &events {
        s.event(*at, ev, &mut hits);
        last = *at;
    }
    s.finish(last, &mut hits);
    hits
}

/// What to search: the pattern, which sessions, and which side of them.
#[derive(Debug, Clone)]
pub struct Query {
    pub pattern: Regex,
    /// The namespace, or every namespace (`None`).
    pub namespace: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub requester: Option<String>,
    pub input: bool,
    pub output: bool,
    /// Also the signed records of sessions that no longer exist (from the store).
    pub archived: bool,
}

impl Query {
    /// Parses the pattern; neither side chosen means both.
    pub fn new(pattern: &str, input: bool, output: bool) -> crate::error::Result<Query> {
        let pattern = Regex::new(pattern).map_err(|e| {
            crate::error::Error::Usage(format!(
                "the pattern is not a regular expression: {}",
                e.to_string().lines().last().unwrap_or_default()
            ))
        })?;
        let (input, output) = match (input, output) {
            (false, false) => (true, true),
            both => both,
        };
        Ok(Query {
            pattern,
            namespace: None,
            since: None,
            requester: None,
            input,
            output,
            archived: false,
        })
    }

    /// Whether a session is one to search: sealed recording, requester, age.
    fn wants(&self, s: &aexec_crds::ExecSession) -> bool {
        let recorded = s
            .status
            .as_ref()
            .and_then(|st| st.recording.as_ref())
            .is_some_and(|r| r.sha256.is_some());
        let by = self
            .requester
            .as_ref()
            .is_none_or(|r| &s.spec.requester.username == r);
        let recent = match (self.since, s.metadata.creation_timestamp.as_ref()) {
            (Some(since), Some(t)) => crate::table::ts(t) >= since,
            _ => true,
        };
        recorded && by && recent
    }

    /// Whether a signed record's session is one to search by its age: created at or after
    /// `since`, as for a session that still exists. The store's own `since` selects sessions
    /// still going on at that time (`list --archived`), which takes in older ones (pure).
    fn wants_record(&self, rec: &aexec_recording::record::SessionRecord) -> bool {
        self.since.is_none_or(|since| {
            chrono::DateTime::parse_from_rfc3339(&rec.session.created)
                .is_ok_and(|created| created >= since)
        })
    }
}

/// A match and the session it is in.
#[derive(Debug, Clone)]
pub struct Found<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub requester: &'a str,
    pub pod: &'a str,
    pub hit: &'a Hit,
    /// From the signed record of a session that no longer exists.
    pub archived: bool,
}

impl Found<'_> {
    /// The command that plays the recording from the match on.
    pub fn replay_command(&self) -> String {
        format!(
            "kubectl aexec replay {} -n {} --from {:.1}",
            self.name,
            self.namespace,
            self.hit.at.as_secs_f64()
        )
    }
}

/// What a search went through.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scanned {
    pub sessions: usize,
    pub bytes: u64,
    pub hits: usize,
}

/// A recording to search.
#[derive(Clone, Debug)]
struct Source {
    namespace: String,
    name: String,
    requester: String,
    pod: String,
    /// Where its asciicast v3 is read (verified by the operator as it is sent).
    path: String,
    archived: bool,
    /// For a session that still existed when listed: its signed record's recording in the
    /// store (with `--archived`), read instead if the session is deleted before its turn.
    archive: Option<String>,
}

/// The sessions the query wants, oldest first: the ExecSessions, then (with `archived`) the
/// signed records in the store of sessions that no longer exist.
async fn sources(client: &kube::Client, q: &Query) -> crate::error::Result<Vec<Source>> {
    use aexec_crds::ExecSession;
    use kube::Api;

    use crate::error::{Doing, explain};

    let api: Api<ExecSession> = match &q.namespace {
        None => Api::all(client.clone()),
        Some(ns) => Api::namespaced(client.clone(), ns),
    };
    let mut sessions = api
        .list(&Default::default())
        .await
        .map_err(|e| explain(&e, "listing sessions", Doing::Audit))?
        .items;
    // Searching reads recordings: a user who may list sessions but not read their recordings
    // (a requester) is told so now, with or without recorded sessions to read.
    let may_read = crate::connect::allowed(
        client,
        k8s_openapi::api::authorization::v1::ResourceAttributes {
            group: Some(aexec_crds::SUBRESOURCE_GROUP.into()),
            resource: Some("execsessions".into()),
            subresource: Some("recording".into()),
            verb: Some("get".into()),
            namespace: q.namespace.clone(),
            ..Default::default()
        },
    )
    .await;
    if !may_read {
        return Err(crate::error::Error::Refused {
            status: 403,
            message: format!(
                "searching {} reads recordings, which you may not (get execsessions/recording \
                 in {}): ask your cluster admin for the aexec-auditor role",
                q.namespace
                    .as_deref()
                    .map_or("all namespaces".to_owned(), |n| format!("namespace {n}")),
                aexec_crds::SUBRESOURCE_GROUP
            ),
        });
    }
    let uids: HashSet<String> = sessions
        .iter()
        .filter_map(|s| s.metadata.uid.clone())
        .collect();
    sessions.retain(|s| q.wants(s));
    sessions.sort_by_key(|s| s.metadata.creation_timestamp.as_ref().map(crate::table::ts));
    let mut out: Vec<Source> = sessions
        .iter()
        .map(|s| {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            let name = s.metadata.name.clone().unwrap_or_default();
            Source {
                path: format!(
                    "{}?format=v3",
                    crate::attach::subresource_path(&ns, &name, "recording")
                ),
                namespace: ns,
                name,
                requester: s.spec.requester.username.clone(),
                pod: s.spec.pod.clone(),
                archived: false,
                archive: None,
            }
        })
        .collect();
    if !q.archived {
        return Ok(out);
    }
    let conn = crate::connect::Conn {
        client: client.clone(),
        namespace: q.namespace.clone().unwrap_or_default(),
    };
    let mut query = Vec::new();
    if let Some(u) = &q.requester {
        query.push(("fieldSelector", format!("requester={u}")));
    }
    if let Some(t) = q.since {
        query.push((
            "since",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    let mut records =
        crate::commands::list_recordings(&conn, q.namespace.is_none(), &query).await?;
    // Records without a recording (denied, withdrawn) have nothing to search, and the store
    // selected by when sessions ended, not by when they were created.
    records.retain(|r| {
        r.record
            .as_ref()
            .is_some_and(|rec| rec.recording.is_some() && q.wants_record(rec))
    });
    // Records of sessions that still exist are searched through the session, and kept for it
    // should the retention delete it before its turn.
    let archive_path = |r: &crate::records::Recording| {
        format!(
            "{}/content?format=v3",
            crate::commands::recordings_path(&r.metadata.namespace, Some(&r.metadata.name))
        )
    };
    let by_uid: std::collections::HashMap<&str, String> = records
        .iter()
        .filter_map(|r| {
            let rec = r.record.as_ref()?;
            uids.contains(&rec.session.uid)
                .then(|| (rec.session.uid.as_str(), archive_path(r)))
        })
        .collect();
    for (src, s) in out.iter_mut().zip(&sessions) {
        src.archive = s
            .metadata
            .uid
            .as_deref()
            .and_then(|u| by_uid.get(u).cloned());
    }
    records.retain(|r| {
        r.record
            .as_ref()
            .is_some_and(|rec| !uids.contains(&rec.session.uid))
    });
    records.sort_by(|a, b| {
        let created = |r: &crate::records::Recording| {
            r.record.as_ref().map(|rec| rec.session.created.clone())
        };
        created(a).cmp(&created(b))
    });
    out.extend(records.into_iter().filter_map(|r| {
        let path = archive_path(&r);
        let rec = r.record?;
        Some(Source {
            path,
            namespace: rec.session.namespace,
            name: rec.session.name,
            requester: rec.requester.username,
            pod: rec.spec.pod,
            archived: true,
            archive: None,
        })
    }));
    Ok(out)
}

/// Hands `hits` (then empty) to `found`; false when `found` wants no more.
fn deliver(
    hits: &mut Vec<Hit>,
    src: &Source,
    scanned: &mut Scanned,
    found: &mut impl FnMut(Found<'_>) -> crate::error::Result<bool>,
) -> crate::error::Result<bool> {
    for hit in hits.drain(..) {
        scanned.hits += 1;
        let more = found(Found {
            namespace: &src.namespace,
            name: &src.name,
            requester: &src.requester,
            pod: &src.pod,
            hit: &hit,
            archived: src.archived,
        })?;
        if !more {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Opens a source's recording. A session deleted since it was listed (the retention) is read
/// from its signed record in the store, when the query takes archived sessions.
async fn open<'a>(
    client: &kube::Client,
    src: &'a Source,
    what: &str,
) -> crate::error::Result<(
    impl futures::AsyncRead + Unpin + use<'a>,
    std::borrow::Cow<'a, Source>,
)> {
    use std::borrow::Cow;

    use crate::error::{Doing, Error, explain};
    let get = |path: &str| {
        http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| Error::Api(e.to_string()))
    };
    match (client.request_stream(get(&src.path)?).await, &src.archive) {
        (Ok(body), _) => Ok((body, Cow::Borrowed(src))),
        // Not the operator's 404 for a stored object that is missing: that is the answer.
        (Err(kube::Error::Api(s)), Some(archive))
            if s.code == 404 && !s.message.starts_with("recording object") =>
        {
            let body = client
                .request_stream(get(archive)?)
                .await
                .map_err(|e| explain(&e, what, Doing::Audit))?;
            let moved = Source {
                path: archive.clone(),
                archived: true,
                archive: None,
                ..src.clone()
            };
            Ok((body, Cow::Owned(moved)))
        }
        (Err(e), _) => Err(explain(&e, what, Doing::Audit)),
    }
}

/// Streams the verified recording of every session the query wants, oldest first, and hands
/// each match to `found` as soon as its session is read; `found` returning false stops the
/// search. Bounded memory: a piece of a recording and one session's matches at a time.
pub async fn run(
    client: &kube::Client,
    q: &Query,
    mut found: impl FnMut(Found<'_>) -> crate::error::Result<bool>,
) -> crate::error::Result<Scanned> {
    let sources = sources(client, q).await?;
    let mut scanned = Scanned {
        sessions: sources.len(),
        ..Scanned::default()
    };
    for src in &sources {
        let (ns, name) = (&src.namespace, &src.name);
        let what = format!("reading the recording of {ns}/{name}");
        let (body, src) = open(client, src, &what).await?;
        if !scan(body, &what, q, &src, &mut scanned, &mut found).await? {
            break;
        }
    }
    Ok(scanned)
}

/// Reads one source's recording from `body` and hands its matches to `found` as they are
/// found; false when `found` wants no more.
async fn scan(
    mut body: impl futures::AsyncRead + Unpin,
    what: &str,
    q: &Query,
    src: &Source,
    scanned: &mut Scanned,
    found: &mut impl FnMut(Found<'_>) -> crate::error::Result<bool>,
) -> crate::error::Result<bool> {
    use futures::AsyncReadExt;

    use crate::error::Error;

    let fail = |e: &dyn std::fmt::Display| Error::Api(format!("{what}: {e}"));
    let mut reader = CastReader::new();
    let mut searcher: Option<Searcher> = None;
    let (mut events, mut hits) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 64 << 10];
    let mut last = Duration::ZERO;
    let mut feed = |searcher: &mut Option<Searcher>,
                    header: &aexec_recording::cast::Header,
                    events: &mut Vec<(Duration, Event)>,
                    hits: &mut Vec<Hit>| {
        let (cols, rows) = (header.term.cols, header.term.rows);
        let s = searcher
            .get_or_insert_with(|| Searcher::new(q.pattern.clone(), cols, rows, q.input, q.output));
        for (at, ev) in events.drain(..) {
            s.event(at, &ev, hits);
            last = at;
        }
    };
    loop {
        let n = body.read(&mut buf).await.map_err(|e| fail(&e))?;
        if n == 0 {
            break;
        }
        scanned.bytes += n as u64;
        reader.feed(&buf[..n], &mut events).map_err(|e| fail(&e))?;
        // The terminal's size is the header's: wait for it (the first line may span reads).
        let Some(header) = reader.header() else {
            continue;
        };
        feed(&mut searcher, header, &mut events, &mut hits);
        // Matches go out as they are found: a pattern matching every line of a long
        // recording holds one read's matches, not the recording's.
        if !deliver(&mut hits, src, scanned, found)? {
            return Ok(false);
        }
    }
    // The last line, should the recording not end with a newline.
    let header = reader.finish(&mut events).map_err(|e| fail(&e))?;
    feed(&mut searcher, &header, &mut events, &mut hits);
    if let Some(s) = searcher {
        s.finish(last, &mut hits);
    }
    deliver(&mut hits, src, scanned, found)
}

/// `kubectl aexec search PATTERN`: the sessions (of the namespace, or `-A` all) whose
/// recordings match, each hit with its time and line, and the replay command to see it.
pub async fn search(
    c: &crate::connect::Conn,
    a: &crate::cli::SearchArgs,
) -> crate::error::Result<i32> {
    let mut q = Query::new(&a.pattern, a.input, a.output)?;
    q.namespace = (!a.all_namespaces).then(|| c.namespace.clone());
    q.since = a.since;
    q.requester = a.requester.clone();
    q.archived = a.archived;
    let scanned = run(&c.client, &q, |f| {
        crate::error::out(&format!(
            "{}/{}{}  +{:.1}s  {:<6}  {}\n  {}\n",
            f.namespace,
            f.name,
            if f.archived { " (archived)" } else { "" },
            f.hit.at.as_secs_f64(),
            f.hit.side.as_str(),
            f.hit.line,
            f.replay_command()
        ))?;
        Ok(true)
    })
    .await?;
    eprintln!(
        "{} match{} in {} session{} ({:.1} MiB of recordings read)",
        scanned.hits,
        if scanned.hits == 1 { "" } else { "es" },
        scanned.sessions,
        if scanned.sessions == 1 { "" } else { "s" },
        scanned.bytes as f64 / f64::from(1u32 << 20)
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aexec_recording::cast::{CastWriter, Header, SessionFacts};

    fn cast(events: &[(u64, Event)]) -> Vec<u8> {
        let header = Header::new(SessionFacts::default(), 0, Some((40, 5)));
        let (mut w, head) = CastWriter::new(&header);
        let mut out = head.into_bytes();
        for (ms, ev) in events {
            w.event(Duration::from_millis(*ms), ev, &mut out);
        }
        out
    }

    fn re(p: &str) -> Regex {
        Regex::new(p).expect("pattern")
    }

    /// An API server on loopback answering the live session's recording with 404 (deleted by
    /// the retention since the search listed it, or the operator's 404 for a stored object
    /// that is missing) and its signed record's recording with a cast.
    async fn api() -> kube::Client {
        use axum::{Router, http::StatusCode, routing::get};
        let status = |message: &str| {
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": message, "reason": "NotFound", "code": 404
            })
            .to_string()
        };
        let (gone, missing) = (
            status(r#"execsessions.aexec.dev "s1" not found"#),
            status("recording object ns/s2-uid/seg-000001.cast is not in the store"),
        );
        let app = Router::new()
            .route(
                "/live/s1",
                get(move || async move { (StatusCode::NOT_FOUND, gone) }),
            )
            .route(
                "/live/s2",
                get(move || async move { (StatusCode::NOT_FOUND, missing) }),
            )
            .route("/archive/s1", get(|| async { "the archived cast" }))
            .route("/archive/s2", get(|| async { "the archived cast" }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client")
    }

    fn source(name: &str, archive: bool) -> Source {
        Source {
            namespace: "ns".into(),
            name: name.into(),
            requester: "alice".into(),
            pod: "web".into(),
            path: format!("/live/{name}"),
            archived: false,
            archive: archive.then(|| format!("/archive/{name}")),
        }
    }

    /// A session deleted between the search's listing and its turn is read from its signed
    /// record (with `--archived`) and shown as archived; without a record to fall back on, or
    /// when the 404 is the operator's for a missing object, the error is the answer.
    #[tokio::test]
    async fn a_session_deleted_before_its_turn_is_read_from_its_record() {
        use futures::AsyncReadExt;
        let client = api().await;
        let src = source("s1", true);
        let (mut body, used) = open(&client, &src, "reading the recording of ns/s1")
            .await
            .expect("read from the record");
        let mut text = String::new();
        body.read_to_string(&mut text).await.expect("body");
        assert_eq!(text, "the archived cast");
        assert!(used.archived && used.archive.is_none(), "{used:?}");
        assert_eq!(used.path, "/archive/s1");

        let refused = |name: &'static str, archive| {
            let client = client.clone();
            async move {
                let what = format!("reading the recording of ns/{name}");
                match open(&client, &source(name, archive), &what).await {
                    Ok((_, used)) => panic!("{name} was read from {}", used.path),
                    Err(e) => e.to_string(),
                }
            }
        };
        // No record to fall back on.
        let err = refused("s1", false).await;
        assert!(err.contains("not found"), "{err}");
        // The operator's 404 for a missing object is the answer.
        let err = refused("s2", true).await;
        assert!(err.contains("is not in the store"), "{err}");
    }

    /// A recording's last line is searched when it has no newline, and an empty recording is
    /// an error that names it, not a search that found nothing.
    #[tokio::test]
    async fn the_last_line_is_searched_without_a_newline() {
        let q = Query::new("needle", false, true).expect("a pattern");
        let src = source("s1", false);
        let search = |cast: Vec<u8>| {
            let (q, src) = (&q, &src);
            async move {
                let mut scanned = Scanned::default();
                let mut lines = Vec::new();
                let more = scan(
                    futures::io::Cursor::new(cast),
                    "reading the recording of ns/s1",
                    q,
                    src,
                    &mut scanned,
                    &mut |f: Found<'_>| {
                        lines.push(f.hit.line.clone());
                        Ok(true)
                    },
                )
                .await?;
                assert!(more);
                Ok::<_, crate::error::Error>((scanned.hits, lines))
            }
        };
        let whole = cast(&[
            (100, Event::Output(b"hay\r\n".to_vec())),
            (200, Event::Output(b"a needle".to_vec())),
        ]);
        assert_eq!(whole.last(), Some(&b'\n'));
        let cut = whole[..whole.len() - 1].to_vec();
        for cast in [whole, cut] {
            let newline = cast.ends_with(b"\n");
            let (hits, lines) = search(cast).await.expect("searched");
            assert_eq!(hits, 1, "ending with a newline: {newline}: {lines:?}");
            assert!(lines[0].contains("a needle"), "{lines:?}");
        }
        let err = search(Vec::new()).await.expect_err("an empty recording");
        assert!(err.to_string().contains("ns/s1"), "{err}");
    }

    /// `--since` selects by creation, for signed records as for sessions that still exist: a
    /// session created before it and ended after it (what the store's `since` takes in) is not
    /// searched.
    #[test]
    fn since_selects_records_by_creation() {
        let mut q = Query::new("x", false, false).expect("a pattern");
        let record = |created: &str, ended: &str| {
            let mut r = aexec_recording::record::SessionRecord::default();
            r.session.created = created.into();
            r.end.end_time = Some(ended.into());
            r
        };
        let ran_across = record("2026-12-04T13:10:15Z", "2026-12-04T13:10:21Z");
        let after = record("2026-12-04T13:10:20Z", "2026-12-04T13:10:22Z");
        assert!(q.wants_record(&ran_across) && q.wants_record(&after));
        q.since = Some("2026-12-04T13:10:20Z".parse().expect("a time"));
        assert!(!q.wants_record(&ran_across));
        assert!(q.wants_record(&after));
        // A record whose creation cannot be read is not taken to be recent.
        assert!(!q.wants_record(&record("", "2026-12-04T13:10:22Z")));
    }

    #[test]
    fn a_huge_terminal_is_capped() {
        let header = Header::new(SessionFacts::default(), 0, Some((u16::MAX, u16::MAX)));
        let (mut w, head) = CastWriter::new(&header);
        let mut c = head.into_bytes();
        w.event(
            Duration::from_millis(1),
            &Event::Resize {
                cols: u16::MAX,
                rows: u16::MAX,
            },
            &mut c,
        );
        w.event(
            Duration::from_millis(2),
            &Event::Output(b"\x1b[5;5Hfound me".to_vec()),
            &mut c,
        );
        // 65535 x 65535 cells would be about 100 GiB: this returns at once.
        let hits = search_cast(&c, &re("found me"), false, true);
        assert_eq!(hits.len(), 1);
        assert_eq!(screen(0, MAX_COLS), 1);
        assert_eq!(screen(u16::MAX, MAX_ROWS), usize::from(MAX_ROWS));
    }

    #[test]
    fn typed_lines_are_what_the_line_editor_made_of_the_keys() {
        let c = cast(&[
            (10, Event::Input(b"drop tabel\x7f\x7fle users;".to_vec())),
            (20, Event::Input(b"\r".to_vec())),
            (30, Event::Input(b"rm -rf /tmp/x\x15ls\x1b[A\r".to_vec())),
            (40, Event::Input(b"echo one two\x17three\n".to_vec())),
        ]);
        let hits = search_cast(&c, &re("(?i)DROP TABLE"), true, false);
        assert_eq!(
            hits,
            [Hit {
                side: Side::Input,
                at: Duration::from_millis(10),
                line: "drop table users;".into()
            }]
        );
        // Ctrl-U erased the rm; the arrow key left nothing; Ctrl-W the last word.
        assert!(search_cast(&c, &re("rm -rf"), true, false).is_empty());
        assert_eq!(search_cast(&c, &re("^ls$"), true, false).len(), 1);
        assert_eq!(
            search_cast(&c, &re("^echo one three$"), true, false).len(),
            1
        );
    }

    #[test]
    fn what_a_full_screen_program_showed_is_found_where_escape_stripping_fails() {
        // Cleared screen, the cursor moved to row 3 column 5, text written there in two parts
        // with a cursor jump between: no line of the raw bytes holds "secret plan".
        let c = cast(&[
            (5, Event::Output(b"\x1b[2J\x1b[3;5Hsecret".to_vec())),
            (6, Event::Output(b"\x1b[3;12Hplan\x1b[1;1H".to_vec())),
            (7, Event::Output(b"\x1b[2Jgone\r\n".to_vec())),
        ]);
        let hits = search_cast(&c, &re("secret plan"), false, true);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].at, Duration::from_millis(6));
        assert_eq!(hits[0].line.trim(), "secret plan");
        assert!(!String::from_utf8_lossy(&c).contains("secret plan"));
    }

    #[test]
    fn text_erased_in_the_same_write_is_still_seen() {
        assert_eq!(
            pieces("a\nb\x1b[2Jc\rd").collect::<Vec<_>>(),
            ["a\n", "b", "\x1b[2Jc", "\rd"]
        );
        let c = cast(&[(1, Event::Output(b"hello world\n\x1b[2J\x1b[Hgone".to_vec()))]);
        assert_eq!(search_cast(&c, &re("hello world"), false, true).len(), 1);
    }

    #[test]
    fn lines_scrolled_off_the_screen_are_matched_once() {
        // A 5-row terminal; 20 lines scroll past it.
        let mut text = Vec::new();
        for i in 0..20 {
            text.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        let c = cast(&[(1, Event::Output(text.clone())), (2, Event::Output(text))]);
        let hits = search_cast(&c, &re("^line 3$"), false, true);
        assert_eq!(hits.len(), 1, "{hits:?}");
        // Input and output are apart: asking for input only finds nothing here.
        assert!(search_cast(&c, &re("line"), true, false).is_empty());
    }
}
