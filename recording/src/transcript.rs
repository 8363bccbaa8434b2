//! The text transcript of a recording: what a terminal showed, as plain lines for people
//! ([`crate::cast::to_text`] whole, [`crate::cast::Converter`] with
//! [`crate::cast::Export::Text`] as the recording arrives: the same bytes either way).
//!
//! # What a terminal showed
//!
//! What a terminal showed is what a terminal emulator makes of the bytes: a carriage return
//! redraws a line (progress bars), backspace and `ESC[K` edit it, cursor movement writes
//! anywhere on the screen, and full-screen programs (vim, top, less) draw on an alternate
//! screen that goes away when they end. Removing escape sequences from the bytes gets none of
//! this right (text written in two pieces with a cursor jump between them comes out in pieces,
//! every frame of a progress bar comes out concatenated). So the output is fed to asciinema's
//! own emulator (`avt`, the library of its player, which `kubectl aexec search` uses too) of
//! the recording's size (the header's, then each resize's), and the transcript holds:
//!
//! - every line that scrolls off the top of the screen, as it leaves, with the rows the
//!   terminal wrapped joined back into one line;
//! - the screen, when all of it is about to be erased (`clear`, `ESC[2J`, `ESC[H ESC[J`, a
//!   reset) and at the end: its lines down to the last non-blank one, or to the cursor;
//! - the alternate screen of a full-screen program when the program leaves it, clears it, or
//!   the recording ends: its lines down to the last non-blank one, once per distinct picture.
//!   Lines scrolled off the alternate screen in between are not kept (the emulator drops them,
//!   as a terminal does: they never reach its scrollback). The v3 recording has every byte.
//!
//! Only the final state of what a line showed is kept: a progress bar redrawn a thousand
//! times is its last frame, an edited line its final text, text erased before it scrolled off
//! is gone, as on the screen. Tabs are the spaces they moved the cursor over.
//!
//! Sessions without a terminal (the header's `aexec.tty` is false) wrote to pipes: their lines
//! end in LF alone, which moves an emulator's cursor down without returning it to the left
//! margin, so a CR is put before each LF, as a terminal's line discipline does (`onlcr`).
//! Their stdout and stderr are separate streams: each is shown on a screen of its own, and
//! when the other stream writes, the screen is written out (as before a clear) and a new one
//! starts, so the lines stay in the order they were written and stderr lines are marked
//! `[stderr] ` (sessions with a terminal have stdout only: the terminal merges stderr).
//!
//! # Input and notes
//!
//! What the requester typed is shown as lines `[stdin] TEXT`, as a line editor takes them:
//! escape sequences (arrow keys) are dropped, backspace and DEL erase a character, Ctrl-U the
//! line, Ctrl-W a word; Enter (CR, LF or CRLF) ends the line, and a line typed without one ends
//! with the recording. A lone ESC in an event of its own is a key press (vim's Escape), not the
//! start of a sequence. Resizes, markers and the exit status are notes: `[resize COLSxROWS]`,
//! `[marker] LABEL`, `[exit N]`. Input lines and notes go right after the output line the cursor
//! was on when they happened (before it, when the cursor was at its start): a command follows
//! the prompt it was typed at, the exit status the last output. A full-screen program's screen
//! and the lines typed into it go where the cursor was when it started.
//!
//! # Bounds
//!
//! Memory does not grow with the recording: one screen of at most [`MAX_COLS`] x [`MAX_ROWS`]
//! (larger terminals are emulated at that size: longer lines wrap, and are joined again), one
//! line being joined or typed (a line reaching [`MAX_TEXT_LINE`] is cut there, the rest goes on
//! the next line), and the input lines and notes waiting for their output line (beyond [`MAX_QUEUED`]
//! bytes they are written at once, out of place). An emulator can show much more text than it
//! was sent (a cursor jump of a few bytes moves over hundreds of blank columns, a clear writes
//! out the whole screen), so the transcript's lines of output hold at most [`AMPLIFICATION`]
//! bytes per byte of output plus [`ALLOWANCE`]: lines beyond that are omitted and counted in a
//! note. No real session comes near (a screen shows less than the bytes that drew it); a
//! crafted one cannot make a transcript, or the buffer of one conversion step, blow up.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use avt::Line;
use avt::parser::{DecMode, EdScope, Function, Parser};
use avt::terminal::Terminal;
use avt::util::TextUnwrapper;

use crate::cast::{Event, Header, Stream, decode_utf8 as decode, display_command};
use crate::editor::LineEditor;

/// Widest screen emulated; a wider terminal's lines wrap at this width (and are joined again).
pub const MAX_COLS: u16 = 400;
/// Tallest screen emulated.
pub const MAX_ROWS: u16 = 200;
/// A line of the transcript (a typed line, or output rows joined where they wrapped) is cut
/// once it reaches this size (bytes typed, cells of output rows): the rest goes on the next.
pub const MAX_TEXT_LINE: usize = 64 * 1024;
/// Input lines and notes waiting for the output line they follow: beyond this many bytes they
/// are written at once.
pub const MAX_QUEUED: usize = 1 << 20;
/// Bytes of output lines the transcript holds per byte of output...
pub const AMPLIFICATION: u64 = 16;
/// ... plus this many.
pub const ALLOWANCE: u64 = 1 << 20;

/// The transcript being built: the text written so far (taken by [`Transcript::take`]), and the
/// state of the terminal, the line editor and the notes waiting for their line.
#[derive(Debug)]
pub(crate) struct Transcript {
    tty: bool,
    /// The emulated size (capped).
    size: (usize, usize),
    /// The output stream the screen shows.
    stream: Stream,
    screen: Screen,
    /// Per output stream (stdout, stderr): an escape sequence or a character may continue in
    /// the stream's next event.
    decoders: [Decoder; 2],
    typed: LineEditor,
    sink: Sink,
}

/// Where one output stream's bytes have got to: the emulator's parser (inside an escape
/// sequence or not) and an incomplete UTF-8 sequence (at most 3 bytes).
#[derive(Debug, Default)]
struct Decoder {
    parser: Parser,
    carry: Vec<u8>,
}

/// The terminal and what of it has been written out.
#[derive(Debug)]
struct Screen {
    term: Terminal,
    /// The number of the screen's first row, counting every row written out before it (rows
    /// scrolled off, and whole screens cleared): where input lines and notes go.
    base: u64,
    /// Whether the active screen may hold text (false after a clear: nothing printed since).
    dirty: bool,
    /// While a full-screen program has the alternate screen: where its notes go, and whether
    /// the primary screen it left may hold text.
    alt: Option<(u64, bool)>,
    /// The last picture of the alternate screen written out, hashed (the same picture is not
    /// written twice in a row).
    last_picture: Option<u64>,
}

impl Screen {
    fn new((cols, rows): (usize, usize)) -> Screen {
        Screen {
            term: Terminal::new((cols, rows), Some(0)),
            base: 0,
            dirty: false,
            alt: None,
            last_picture: None,
        }
    }

    fn rows(&self) -> usize {
        self.term.size().1
    }
}

/// Text on its way out: finished text, the output line being joined from wrapped rows, the
/// input lines and notes waiting for the output line they follow, and the output budget.
#[derive(Debug, Default)]
struct Sink {
    out: String,
    /// `[stderr]` while the screen shows stderr, else empty.
    prefix: &'static str,
    unwrapper: Unwrapper,
    /// Characters in `unwrapper` (0: no line is being joined).
    open: usize,
    /// Notes in order, each with the row number it waits for (written once every row before
    /// that number was).
    queue: VecDeque<(u64, String)>,
    queued: usize,
    /// Bytes of output lines the transcript may still hold.
    budget: u64,
    /// Output lines omitted since the budget ran out.
    omitted: u64,
}

/// `avt::util::TextUnwrapper` (which joins wrapped rows into lines), with a `Debug`.
#[derive(Default)]
struct Unwrapper(TextUnwrapper);

impl std::fmt::Debug for Unwrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unwrapper")
    }
}

impl Sink {
    /// A row of the output screen written out: joined with the rows before it while they
    /// wrapped, a line of the transcript when it ends one. `row` is its number.
    fn row(&mut self, line: &Line, row: u64) {
        match self.unwrapper.0.push(line) {
            Some(text) => {
                self.open = 0;
                self.output_line(&text);
            }
            None => {
                self.open += line.len();
                if self.open >= MAX_TEXT_LINE {
                    self.close();
                }
            }
        }
        self.drain(row + 1);
    }

    /// Ends the line being joined, if any.
    fn close(&mut self) {
        if self.open > 0 {
            self.open = 0;
            if let Some(text) = std::mem::take(&mut self.unwrapper).0.flush() {
                self.output_line(text.trim_end());
            }
        }
    }

    /// A line of output, within the budget.
    fn output_line(&mut self, text: &str) {
        admit(
            &mut self.budget,
            &mut self.omitted,
            self.prefix,
            text,
            &mut self.out,
        );
    }

    /// The note on lines omitted, at the end.
    fn flush_omitted(&mut self) {
        if self.omitted > 0 {
            self.out.push_str(&omitted_note(self.omitted));
            self.omitted = 0;
        }
    }

    /// Queues `text` (whole lines) to be written once every row numbered below `after` was.
    fn note(&mut self, after: u64, text: String, next: u64) {
        self.queued += text.len();
        self.queue.push_back((after, text));
        if self.queued > MAX_QUEUED {
            self.drain_all();
        } else {
            self.drain(next);
        }
    }

    /// Writes the notes in order while the rows they wait for were written (`next` is the
    /// number of the next row to be written) and no line is being joined.
    fn drain(&mut self, next: u64) {
        if self.open > 0 {
            return;
        }
        while let Some((after, _)) = self.queue.front() {
            if *after > next {
                break;
            }
            self.pop();
        }
    }

    fn drain_all(&mut self) {
        self.close();
        while !self.queue.is_empty() {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some((_, text)) = self.queue.pop_front() {
            self.queued -= text.len();
            self.out.push_str(&text);
        }
    }
}

/// Appends `prefix` and `text` as a line to `into` if the `budget` allows it (preceded by the
/// note on the lines `omitted` before it, which the budget pays for too); counts it omitted
/// otherwise.
fn admit(budget: &mut u64, omitted: &mut u64, prefix: &str, text: &str, into: &mut String) {
    let note = if *omitted > 0 {
        omitted_note(*omitted)
    } else {
        String::new()
    };
    let cost = (note.len() + prefix.len() + text.len() + 2) as u64;
    if cost > *budget {
        *omitted += 1;
        return;
    }
    *budget -= cost;
    *omitted = 0;
    into.push_str(&note);
    push_line(into, prefix, text);
}

fn omitted_note(n: u64) -> String {
    format!(
        "[{n} lines omitted: the screen showed more than {AMPLIFICATION} bytes of text per byte of output]\n"
    )
}

/// `prefix` and `text` as a line: `[stderr] text`, `[stderr]` when the text is empty.
fn push_line(out: &mut String, prefix: &str, text: &str) {
    out.push_str(prefix);
    if !prefix.is_empty() && !text.is_empty() {
        out.push(' ');
    }
    out.push_str(text);
    out.push('\n');
}

fn prefix(stream: Stream) -> &'static str {
    match stream {
        Stream::Out => "",
        Stream::Err => "[stderr]",
        Stream::In => "[stdin]",
    }
}

impl Transcript {
    /// A transcript of the session `header` describes, starting with its `#` lines.
    pub(crate) fn new(header: &Header) -> Transcript {
        let cap = |n: u16, max: u16| usize::from(n.clamp(1, max));
        let size = (
            cap(header.term.cols, MAX_COLS),
            cap(header.term.rows, MAX_ROWS),
        );
        let mut t = Transcript {
            tty: header.aexec.tty,
            size,
            stream: Stream::Out,
            screen: Screen::new(size),
            decoders: Default::default(),
            typed: LineEditor::default(),
            sink: Sink {
                budget: ALLOWANCE,
                ..Sink::default()
            },
        };
        text_header(&mut t.sink.out, header);
        t
    }

    /// Moves the text written so far to `out`.
    pub(crate) fn take(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.sink.out.as_bytes());
        self.sink.out.clear();
    }

    /// Bytes of text held (not yet taken, being joined, waiting for their line, being typed):
    /// what the bounds limit, besides the screen.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.sink.out.len() + self.sink.open + self.sink.queued + self.typed.len()
    }

    /// The whole text, once [`Transcript::finish`] was called.
    pub(crate) fn into_text(self) -> String {
        self.sink.out
    }

    pub(crate) fn event(&mut self, ev: &Event) {
        match ev {
            Event::Output(b) => self.output(Stream::Out, b),
            Event::Error(b) => self.output(Stream::Err, b),
            Event::Input(b) => {
                let mut done = Vec::new();
                self.typed.feed(b, &mut done);
                self.typed_lines(done);
            }
            Event::Resize { cols, rows } => {
                self.note(format!("[resize {cols}x{rows}]\n"));
                self.size = (
                    usize::from((*cols).clamp(1, MAX_COLS)),
                    usize::from((*rows).clamp(1, MAX_ROWS)),
                );
                self.screen.term.resize(self.size.0, self.size.1);
                self.scrolled();
            }
            Event::Exit(code) => self.note(format!("[exit {code}]\n")),
            Event::Marker(label) => self.note(format!("[marker] {}\n", single_line(label))),
        }
    }

    /// The end of the recording: what is still on the screen, the line typed without Enter,
    /// and whatever waits.
    pub(crate) fn finish(&mut self) {
        self.flush_carry();
        let mut done = Vec::new();
        self.typed.finish(&mut done);
        self.typed_lines(done);
        self.write_out_screen();
        self.sink.drain_all();
        self.sink.flush_omitted();
    }

    /// The incomplete character the screen's stream ended with, as a terminal shows it (the
    /// end of the recording, or the other stream wrote in between).
    fn flush_carry(&mut self) {
        let i = self.stream.idx();
        let rest = std::mem::take(&mut self.decoders[i].carry);
        if !rest.is_empty() {
            self.chars(i, &String::from_utf8_lossy(&rest));
        }
    }

    fn typed_lines(&mut self, done: Vec<String>) {
        for line in done {
            let mut text = String::new();
            push_line(&mut text, prefix(Stream::In), &line);
            self.note(text);
        }
    }

    /// Queues a note (whole lines) after the output line the cursor is on, or before it when
    /// the cursor is at its start; while a full-screen program runs, where it started.
    fn note(&mut self, text: String) {
        let after = match self.screen.alt {
            Some((after, _)) => after,
            None => self.cursor_place(),
        };
        self.sink.note(after, text, self.screen.base);
    }

    fn cursor_place(&self) -> u64 {
        let c = self.screen.term.cursor();
        self.screen.base + c.row as u64 + u64::from(c.col > 0)
    }

    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        if stream != self.stream {
            // Each stream has its screen: the other one's is written out, so lines stay in
            // the order they were written.
            self.flush_carry();
            self.write_out_screen();
            self.sink.drain_all();
            self.screen = Screen::new(self.size);
            self.stream = stream;
            self.sink.prefix = prefix(stream);
        }
        let i = stream.idx();
        self.sink.budget = self
            .sink
            .budget
            .saturating_add(AMPLIFICATION.saturating_mul(bytes.len() as u64));
        let text = decode(&mut self.decoders[i].carry, bytes);
        self.chars(i, &text);
    }

    fn chars(&mut self, i: usize, text: &str) {
        for c in text.chars() {
            if !self.tty && c == '\n' {
                // onlcr: the pipe's LF is a terminal's CR LF.
                if let Some(f) = self.decoders[i].parser.feed('\r') {
                    self.execute(f);
                }
            }
            if let Some(f) = self.decoders[i].parser.feed(c) {
                self.execute(f);
            }
        }
    }

    /// Runs one terminal function, writing out first what it is about to erase.
    fn execute(&mut self, f: Function) {
        let f = match f {
            // DEL has no glyph; avt would print it.
            Function::Print(c) if c.is_control() => return,
            Function::Print(_) | Function::Decaln => {
                self.screen.dirty = true;
                f
            }
            // A repeat longer than a line only costs time: a line's worth shows the same.
            Function::Rep(n) => {
                self.screen.dirty = true;
                Function::Rep(n.min(u16::try_from(self.size.0).unwrap_or(u16::MAX)))
            }
            Function::Ed(EdScope::All) => {
                if !self.clearing() {
                    return;
                }
                f
            }
            Function::Ed(EdScope::Below) if self.screen.term.cursor() == (0, 0) => {
                if !self.clearing() {
                    return;
                }
                f
            }
            Function::Ris => {
                self.leave_alternate();
                self.write_out_primary();
                self.screen.last_picture = None;
                f
            }
            Function::Decset(ref modes) if self.screen.alt.is_none() && alternate(modes) => {
                let after = self.cursor_place();
                self.screen.alt = Some((after, self.screen.dirty));
                self.screen.dirty = false;
                self.screen.last_picture = None;
                f
            }
            Function::Decrst(ref modes) if self.screen.alt.is_some() && alternate(modes) => {
                self.write_out_alternate();
                if let Some((_, dirty)) = self.screen.alt.take() {
                    self.screen.dirty = dirty;
                }
                f
            }
            f => f,
        };
        self.screen.term.execute(f);
        self.scrolled();
    }

    /// The screen is about to be cleared: writes it out. False when it is blank already (and
    /// the clear can be skipped: it would change nothing the transcript shows).
    fn clearing(&mut self) -> bool {
        if self.screen.alt.is_some() {
            if !self.screen.dirty {
                return false;
            }
            self.write_out_alternate();
        } else {
            if !self.screen.dirty && self.screen.term.cursor().row == 0 {
                return false;
            }
            self.write_out_primary();
        }
        self.screen.dirty = false;
        true
    }

    /// Writes out the rows that scrolled off the top of the primary screen.
    fn scrolled(&mut self) {
        let Screen { term, base, .. } = &mut self.screen;
        for line in term.gc() {
            self.sink.row(&line, *base);
            *base += 1;
        }
    }

    /// Writes out the primary screen down to its last non-blank row or the cursor, as if all
    /// of it scrolled off.
    fn write_out_primary(&mut self) {
        let rows = self.screen.rows();
        let cursor = self.screen.term.cursor().row.min(rows);
        let end = if self.screen.dirty {
            last_text_row(&self.screen.term).max(cursor)
        } else {
            cursor
        };
        let base = self.screen.base;
        for (r, line) in self.screen.term.view().take(end).enumerate() {
            self.sink.row(line, base + r as u64);
        }
        self.sink.close();
        self.screen.base += rows as u64;
        self.screen.dirty = false;
        self.sink.drain(self.screen.base);
    }

    /// Writes out the alternate screen (a full-screen program's) as a note where the program
    /// started: its lines down to the last non-blank one, unless it is the picture written
    /// last.
    fn write_out_alternate(&mut self) {
        let Some((after, _)) = self.screen.alt else {
            return;
        };
        if !self.screen.dirty {
            return;
        }
        let end = last_text_row(&self.screen.term);
        let mut lines = Vec::new();
        let mut unwrapper = TextUnwrapper::new();
        for line in self.screen.term.view().take(end) {
            lines.extend(unwrapper.push(line));
        }
        lines.extend(unwrapper.flush().map(|l| l.trim_end().to_owned()));
        let mut hasher = DefaultHasher::new();
        lines.hash(&mut hasher);
        let picture = hasher.finish();
        if lines.is_empty() || self.screen.last_picture == Some(picture) {
            return;
        }
        self.screen.last_picture = Some(picture);
        let mut text = String::new();
        for line in lines {
            let sink = &mut self.sink;
            admit(
                &mut sink.budget,
                &mut sink.omitted,
                sink.prefix,
                &line,
                &mut text,
            );
        }
        if !text.is_empty() {
            self.sink.note(after, text, self.screen.base);
        }
    }

    /// Leaves the alternate screen if a full-screen program has it, writing it out.
    fn leave_alternate(&mut self) {
        if self.screen.alt.is_some() {
            self.execute(Function::Decrst(vec![DecMode::AltScreenBuffer]));
        }
    }

    /// Writes out all of the screen: the end of the recording, or of the stream's turn.
    fn write_out_screen(&mut self) {
        self.leave_alternate();
        self.write_out_primary();
    }
}

/// Whether these modes switch between the primary and the alternate screen.
fn alternate(modes: &[DecMode]) -> bool {
    modes.iter().any(|m| {
        matches!(
            m,
            DecMode::AltScreenBuffer | DecMode::SaveCursorAltScreenBuffer
        )
    })
}

/// How many rows of the screen there are down to the last one with text.
fn last_text_row(term: &Terminal) -> usize {
    let mut end = 0;
    for (r, line) in term.view().enumerate() {
        if line.chars().any(|c| !c.is_whitespace()) {
            end = r + 1;
        }
    }
    end
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `s` with control characters (newlines included) replaced by spaces.
pub(crate) fn single_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The transcript's `#` lines on the session.
fn text_header(out: &mut String, h: &Header) {
    let f = &h.aexec;
    let started = chrono::DateTime::from_timestamp(i64::try_from(h.timestamp).unwrap_or(0), 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_else(|| h.timestamp.to_string());
    out.push_str(&format!(
        "# aexec session {}/{} ({})\n",
        single_line(&f.namespace),
        single_line(&f.name),
        single_line(&f.uid)
    ));
    out.push_str(&format!(
        "# pod {} ({}), container {}, tty {}, stdin {}\n",
        single_line(&f.pod),
        single_line(&f.pod_uid),
        single_line(&f.container),
        yes_no(f.tty),
        yes_no(f.stdin)
    ));
    out.push_str(&format!(
        "# command: {}\n",
        single_line(&display_command(&f.command))
    ));
    let groups = if f.requester.groups.is_empty() {
        String::new()
    } else {
        format!(" [{}]", f.requester.groups.join(", "))
    };
    out.push_str(&format!(
        "# requested by {}{}{}\n",
        single_line(&f.requester.username),
        single_line(&groups),
        f.reason
            .as_deref()
            .map(|r| format!(", reason: {}", single_line(r)))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "# policy {}, approved by {}\n",
        f.policy
            .as_deref()
            .map_or_else(|| "(default)".to_owned(), single_line),
        if f.approvers.is_empty() {
            "policy".to_owned()
        } else {
            single_line(&f.approvers.join(", "))
        }
    ));
    out.push_str(&format!("# started {started}\n"));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::cast::{CastReader, CastWriter, Converter, Export, SessionFacts, to_text};

    fn header(tty: bool, cols: u16, rows: u16) -> Header {
        let facts = SessionFacts {
            tty,
            ..SessionFacts::default()
        };
        Header::new(facts, 1_700_000_000, Some((cols, rows)))
    }

    /// The transcript's lines after its `#` header, fed to a [`Transcript`] as they are.
    fn body_of(h: &Header, events: &[Event]) -> Vec<String> {
        let mut t = Transcript::new(h);
        for ev in events {
            t.event(ev);
        }
        t.finish();
        let text = t.into_text();
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{text:?}"
        );
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    /// [`body_of`] through a recording: `events` (one millisecond apart) written as v3,
    /// converted whole ([`to_text`]) and streamed ([`Converter`] fed in small pieces), which
    /// must agree.
    fn body(h: &Header, events: &[Event]) -> Vec<String> {
        let (mut w, head) = CastWriter::new(h);
        let mut file = head.into_bytes();
        for (i, ev) in events.iter().enumerate() {
            w.event(Duration::from_millis(i as u64 + 1), ev, &mut file);
        }
        w.finish(Duration::from_secs(3600), &mut file);
        let whole = to_text(&CastReader::parse(&file).unwrap());
        let mut c = Converter::new(Export::Text);
        let mut streamed = Vec::new();
        for piece in file.chunks(7) {
            c.feed(piece, &mut streamed).unwrap();
        }
        c.finish(&mut streamed).unwrap();
        assert_eq!(String::from_utf8(streamed).unwrap(), whole);
        let lines: Vec<String> = whole
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert_eq!(lines, body_of(h, events), "events fed as they are");
        lines
    }

    fn out(s: &str) -> Event {
        Event::Output(s.as_bytes().to_vec())
    }

    fn typed(s: &str) -> Event {
        Event::Input(s.as_bytes().to_vec())
    }

    #[test]
    fn a_full_screen_program_shows_what_its_screen_showed() {
        // vim-like: the alternate screen, "secret plan" written in two pieces with cursor
        // jumps between them, a redraw, and back. Removing the escape sequences from these
        // bytes gives "secret", "-- INSERT --" and " plan" run together, never "secret plan".
        let events = [
            out("$ vim plan.txt\r\n"),
            out("\x1b[?1049h\x1b[H\x1b[2J"),
            out("\x1b[5;10Hsecret"),
            out("\x1b[24;1H-- INSERT --\x1b[2;1H~\x1b[3;1H~"),
            typed("i secret plan"),
            out("\x1b[5;16H plan"),
            // A redraw (Ctrl-L): the same screen, cleared and drawn again.
            out("\x1b[H\x1b[2J\x1b[2;1H~\x1b[3;1H~\x1b[5;10Hsecret plan\x1b[24;1H-- INSERT --"),
            typed("\x1b"),
            typed(":wq\r"),
            out("\x1b[24;1H\x1b[K:wq"),
            out("\x1b[?1049l"),
            out("$ "),
            Event::Exit(0),
        ];
        let body = body(&header(true, 80, 24), &events);
        // A picture of the 24 rows: "~" on rows 2 and 3, the plan on row 5, `last` on 24.
        let picture = |last: &str| {
            let mut rows = vec![String::new(); 24];
            rows[1] = "~".into();
            rows[2] = "~".into();
            rows[4] = "         secret plan".into();
            rows[23] = last.into();
            rows
        };
        let mut want = vec!["$ vim plan.txt".to_owned()];
        // The screen the redraw cleared, what was typed into the program (Escape is a key,
        // not a line end), and the screen the program left.
        want.extend(picture("-- INSERT --"));
        want.push("[stdin] i secret plan:wq".into());
        want.extend(picture(":wq"));
        want.extend(["$".into(), "[exit 0]".into()]);
        assert_eq!(body, want);
        assert!(body.contains(&"         secret plan".to_owned()));
    }

    #[test]
    fn a_redrawn_identical_screen_is_written_once() {
        let frame = "\x1b[H\x1b[2Jtop - 10:00\r\nPID USER\r\n  1 root";
        let mut events = vec![out("\x1b[?1049h")];
        events.extend(std::iter::repeat_n(out(frame), 5));
        events.push(out("\x1b[?1049l"));
        let body = body(&header(true, 40, 5), &events);
        assert_eq!(body, vec!["top - 10:00", "PID USER", "  1 root"]);
    }

    #[test]
    fn a_progress_bar_redrawn_with_cr_gives_its_last_state() {
        let mut events = vec![out("downloading\n")];
        for i in 0..=100 {
            let bar = format!("\r{i:>3}% [{:<10}]", "#".repeat(i / 10));
            events.push(Event::Error(bar.into_bytes()));
        }
        events.push(Event::Error(b"\n".to_vec()));
        events.push(out("done\n"));
        let body = body(&header(false, 80, 24), &events);
        assert_eq!(
            body,
            vec!["downloading", "[stderr] 100% [##########]", "done"]
        );
    }

    #[test]
    fn backspaces_and_erase_in_line_give_the_final_line() {
        let events = [
            // A shell's echo of typing "lss", two backspaces, " -l" (readline erases with
            // BS, space, BS).
            out("$ lss\x08 \x08\x08 \x08s -l\r\n"),
            // A line redrawn: back to its start, erased to its end, written again.
            out("$ echo hello world\r\x1b[K$ echo bye\r\n"),
            // Backspaces only move the cursor: what follows overwrites.
            out("abcdef\x08\x08\x08XY\r\n"),
        ];
        let body = body(&header(true, 80, 24), &events);
        assert_eq!(body, vec!["$ ls -l", "$ echo bye", "abcXYf"]);
    }

    #[test]
    fn utf8_split_across_events_and_wide_characters() {
        let h = header(true, 10, 5);
        let events = [
            Event::Output(b"caf\xc3".to_vec()),
            Event::Output(b"\xa9 \xe4\xb8".to_vec()),
            Event::Output(b"\xad\xe6\x96\x87|\r\n".to_vec()),
            // Wide characters take two columns: six of them wrap on a 10-column screen, and
            // the rows are joined again.
            out("中文中文中文\r\n"),
            Event::Output(b"\xff ok\r\n".to_vec()),
            // An incomplete character at the end is what a terminal shows for it.
            Event::Output(b"end \xe4".to_vec()),
        ];
        // Fed as events as they are (the writer would carry the split characters itself).
        assert_eq!(
            body_of(&h, &events),
            vec!["café 中文|", "中文中文中文", "\u{fffd} ok", "end \u{fffd}"]
        );
    }

    #[test]
    fn split_and_odd_sequences_are_what_a_terminal_makes_of_them() {
        let h = header(false, 80, 24);
        let show = |chunks: &[&[u8]]| {
            let events: Vec<Event> = chunks.iter().map(|c| Event::Output(c.to_vec())).collect();
            body_of(&h, &events).join("\n")
        };
        // Sequences split across events: the parser's state carries over.
        assert_eq!(show(&[b"a\x1b[3", b"8;5;1", b"mb\n"]), "ab");
        assert_eq!(
            show(&[b"x\x1b]8;;http://e\x1b", b"\\link\x1b]8;;\x1b\\\n"]),
            "xlink"
        );
        // DECSC/DECRC: the cursor goes back to where it was saved, and the text after it
        // overwrites (escape stripping gave "saved k").
        assert_eq!(show(&[b"\x1b7saved\x1b8 \x1b=k\n"]), " kved");
        // An 8-bit CSI clearing the screen; a CSI cut by a character that cannot be in one
        // (the character ends it, as in avt's parser: escape stripping kept "\u{e9}z").
        assert_eq!(show(&["\u{9b}2Jc1\n".as_bytes()]), "c1");
        assert_eq!(show(&[b"\x1b[12\xc3\xa9z\n"]), "z");
        // A CR returns to the start of the line, and what follows overwrites it (escape
        // stripping ended the line: "a", "b").
        assert_eq!(show(&[b"a\rb\r\nc\n"]), "b\nc");
        assert_eq!(show(&[b"ab\x08 \x08c\x07\n"]), "ac");
        assert_eq!(show(&[b"\n\n"]), "\n");
    }

    #[test]
    fn output_without_a_terminal_gives_its_lines() {
        // A pipe's lines end in LF alone: a CR is put before each, as a terminal's onlcr does.
        let events = [
            out("one\ntwo\n"),
            Event::Error(b"oops\n".to_vec()),
            out("\tthree\n\n"),
            Event::Exit(1),
        ];
        let body = body(&header(false, 80, 24), &events);
        assert_eq!(
            body,
            vec![
                "one",
                "two",
                "[stderr] oops",
                "        three",
                "",
                "[exit 1]"
            ]
        );
        // The same bytes on a terminal would have been a staircase (the pty adds the CRs).
        let staircase = body_of(&header(true, 80, 24), &[out("one\ntwo\n")]);
        assert_eq!(staircase, vec!["one", "   two"]);
    }

    #[test]
    fn interleaved_streams_keep_their_order_and_marks() {
        let events = [
            out("foo"),
            Event::Error(b"bar\nbaz".to_vec()),
            out("qux\n"),
            Event::Error(b"\n".to_vec()),
            typed("yes\r"),
            typed("\nno"),
        ];
        let body = body_of(&header(false, 80, 24), &events);
        assert_eq!(
            body,
            vec![
                "foo",
                "[stderr] bar",
                "[stderr] baz",
                "qux",
                "[stderr]",
                "[stdin] yes",
                "[stdin] no"
            ]
        );
    }

    #[test]
    fn typed_lines_follow_the_line_they_were_typed_at() {
        let events = [
            out("$ "),
            typed("l"),
            out("l"),
            typed("s"),
            out("s"),
            typed("\r"),
            out("\r\nfile1  file2\r\nPassword: "),
            typed("hunter2\r"),
            out("\r\n$ "),
            // An arrow key, a typo erased, a word and a line taken back.
            typed("\x1b[Aexiy\x7ft now\x17\r"),
            out("exit\r\n"),
            typed("gone\x15"),
            Event::Resize {
                cols: 100,
                rows: 30,
            },
            Event::Marker("terminated by bob".into()),
            Event::Exit(0),
        ];
        let body = body(&header(true, 80, 24), &events);
        assert_eq!(
            body,
            vec![
                "$ ls",
                "[stdin] ls",
                "file1  file2",
                "Password:",
                "[stdin] hunter2",
                "$ exit",
                "[stdin] exit ",
                "[resize 100x30]",
                "[marker] terminated by bob",
                "[exit 0]",
            ]
        );
    }

    #[test]
    fn clear_and_scroll_keep_every_line() {
        let mut events = vec![out("$ cat notes\r\n")];
        for i in 1..=10 {
            events.push(out(&format!("line {i}\r\n")));
        }
        events.push(out("$ clear\r\n\x1b[H\x1b[2J\x1b[3J$ "));
        // A reset (ESC c) clears too.
        events.push(out("echo x\r\nx\r\n$ \x1bc$ "));
        let body = body(&header(true, 20, 4), &events);
        let mut want = vec!["$ cat notes".to_owned()];
        want.extend((1..=10).map(|i| format!("line {i}")));
        want.extend(["$ clear", "$ echo x", "x", "$", "$"].map(String::from));
        assert_eq!(body, want);
    }

    #[test]
    fn control_characters_never_reach_the_transcript() {
        let mut all = String::new();
        for c in (0u32..0x20).chain(0x7f..0xa0) {
            all.push(char::from_u32(c).unwrap());
            all.push('x');
        }
        let h = header(true, 80, 24);
        for ev in [out(&all), typed(&all), Event::Marker(all.clone())] {
            let body = body(&h, &[ev]);
            for line in body {
                // A typed tab stays a tab (the completion key); output tabs are spaces.
                assert!(
                    !line.chars().any(|c| c.is_control() && c != '\t'),
                    "{line:?}"
                );
            }
        }
    }

    #[test]
    fn huge_terminal_sizes_are_capped() {
        let h = header(true, u16::MAX, u16::MAX);
        let t = Transcript::new(&h);
        assert_eq!(
            t.screen.term.size(),
            (usize::from(MAX_COLS), usize::from(MAX_ROWS))
        );
        let events = [
            Event::Resize { cols: 0, rows: 0 },
            out("tiny\r\n"),
            Event::Resize {
                cols: u16::MAX,
                rows: u16::MAX,
            },
            out("big\r\n"),
        ];
        assert_eq!(
            body(&h, &events),
            vec!["[resize 0x0]", "tiny", "[resize 65535x65535]", "big"]
        );
    }

    #[test]
    fn text_drawn_from_a_few_bytes_is_bounded() {
        // Each 9-byte line moves the cursor over 399 blank columns: 401 bytes of text. Beyond
        // the allowance, lines are omitted (and counted) so the text stays within 16 bytes
        // per byte of output.
        let h = header(true, 400, 50);
        let line = "\x1b[399C.\r\n";
        let n = 20_000;
        let mut t = Transcript::new(&h);
        for _ in 0..n {
            t.event(&out(line));
        }
        t.finish();
        let text = t.into_text();
        let fed = (n * line.len()) as u64;
        assert!(text.len() as u64 <= ALLOWANCE + AMPLIFICATION * fed + 4096);
        assert!(text.contains(" lines omitted: the screen showed more than 16 bytes"));
        // A full screen of 'E' (DECALN) cleared again and again.
        let mut t = Transcript::new(&h);
        for _ in 0..2_000 {
            t.event(&out("\x1b#8\x1b[2J"));
        }
        t.finish();
        assert!(t.into_text().len() as u64 <= ALLOWANCE + AMPLIFICATION * 2_000 * 7 + 4096);
    }
}
