//! Replaying a recording in the terminal with its real timing, like `asciinema play`: `--speed`,
//! `--idle-limit`, and asciinema's keys (space pauses and resumes, `.` steps one frame while
//! paused, `]` jumps to the next marker while paused, `q` or Ctrl-C quits). The schedule and the
//! player's state are pure; the loop that sleeps and reads keys is at the end.

use std::time::Duration;

use aexec_recording::cast::{Event, Recording};

/// Something to show at a time of the playback clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub at: Duration,
    pub kind: FrameKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Bytes for the terminal (stdout and stderr, as the person saw them).
    Output(Vec<u8>),
    /// A marker (a note on the timeline, like "terminated by bob"): a stop for `]`.
    Marker(String),
}

/// The frames of a recording at playback times: every gap longer than `idle_limit` is cut to
/// it, then every time is divided by `speed`. Input, resizes and the exit status are not shown
/// (asciinema does the same), but they keep their place in time.
///
/// Playback starts `from` into the session: what came before is shown at once.
pub fn schedule(
    rec: &Recording,
    speed: f64,
    idle_limit: Option<f64>,
    from: Duration,
) -> Vec<Frame> {
    let limit = idle_limit.map(Duration::from_secs_f64);
    let mut frames = Vec::new();
    let (mut last_real, mut clock) = (from, Duration::ZERO);
    for (at, ev) in &rec.events {
        let real = (*at).max(from);
        let mut gap = real.saturating_sub(last_real);
        if let Some(l) = limit {
            gap = gap.min(l);
        }
        last_real = real;
        clock += gap;
        let kind = match ev {
            Event::Output(b) | Event::Error(b) => FrameKind::Output(b.clone()),
            Event::Marker(m) => FrameKind::Marker(m.clone()),
            _ => continue,
        };
        frames.push(Frame {
            at: clock.div_f64(speed),
            kind,
        });
    }
    frames
}

/// A key the player reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Pause,
    Step,
    NextMarker,
    Quit,
}

/// The key for a byte typed at the terminal.
pub fn key(byte: u8) -> Option<Key> {
    match byte {
        b' ' => Some(Key::Pause),
        b'.' => Some(Key::Step),
        b']' => Some(Key::NextMarker),
        b'q' | 0x03 => Some(Key::Quit),
        _ => None,
    }
}

/// Where playback is. Times are "real" (since the player started) or "playback" (the
/// schedule's clock); they differ by the time spent paused.
#[derive(Debug)]
pub struct Player {
    frames: Vec<Frame>,
    next: usize,
    /// real - playback (nanoseconds; negative after stepping ahead), while playing.
    offset: i128,
    /// The playback time at which playback is paused.
    paused_at: Option<Duration>,
    quit: bool,
}

impl Player {
    pub fn new(frames: Vec<Frame>) -> Self {
        Player {
            frames,
            next: 0,
            offset: 0,
            paused_at: None,
            quit: false,
        }
    }

    pub fn done(&self) -> bool {
        self.quit || self.next >= self.frames.len()
    }

    pub fn paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// The real time at which the next frame is due (none while paused or at the end).
    pub fn due(&self) -> Option<Duration> {
        if self.paused() || self.done() {
            return None;
        }
        let due = self.frames[self.next].at.as_nanos() as i128 + self.offset;
        Some(Duration::from_nanos(
            u64::try_from(due.max(0)).unwrap_or(u64::MAX),
        ))
    }

    /// The frames due at real time `now`.
    pub fn take_due(&mut self, now: Duration) -> Vec<FrameKind> {
        let mut out = Vec::new();
        while let Some(due) = self.due() {
            if due > now {
                break;
            }
            out.push(self.frames[self.next].kind.clone());
            self.next += 1;
        }
        out
    }

    /// Reacts to a key at real time `now`; returns the frames to show at once.
    pub fn key(&mut self, key: Key, now: Duration) -> Vec<FrameKind> {
        match (key, self.paused_at) {
            (Key::Quit, _) => {
                self.quit = true;
                Vec::new()
            }
            (Key::Pause, None) => {
                let playback = (now.as_nanos() as i128 - self.offset).max(0);
                self.paused_at = Some(Duration::from_nanos(
                    u64::try_from(playback).unwrap_or(u64::MAX),
                ));
                Vec::new()
            }
            (Key::Pause, Some(p)) => {
                self.offset = now.as_nanos() as i128 - p.as_nanos() as i128;
                self.paused_at = None;
                Vec::new()
            }
            (Key::Step, Some(_)) => match self.frames.get(self.next) {
                Some(f) => {
                    self.paused_at = Some(f.at);
                    self.next += 1;
                    vec![f.kind.clone()]
                }
                None => Vec::new(),
            },
            (Key::NextMarker, Some(_)) => {
                let mut out = Vec::new();
                while let Some(f) = self.frames.get(self.next) {
                    self.next += 1;
                    self.paused_at = Some(f.at);
                    let marker = matches!(f.kind, FrameKind::Marker(_));
                    out.push(f.kind.clone());
                    if marker {
                        break;
                    }
                }
                out
            }
            // Step and marker jumps work while paused, as in asciinema.
            (Key::Step | Key::NextMarker, None) => Vec::new(),
        }
    }
}

/// Turns lone `\n` into `\r\n` (output of sessions without a terminal, shown on a terminal in
/// raw mode).
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Plays `frames` on the terminal: in time, with keys, when stdin and stdout are terminals;
/// otherwise all at once (for pipes and tests).
pub async fn play(frames: Vec<Frame>, tty_session: bool, interactive: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout();
    let show = |out: &mut std::io::Stdout, kind: &FrameKind, raw: bool| -> std::io::Result<()> {
        match kind {
            FrameKind::Output(b) if raw && !tty_session => out.write_all(&crlf(b))?,
            FrameKind::Output(b) => out.write_all(b)?,
            FrameKind::Marker(m) => {
                let nl = if raw { "\r\n" } else { "\n" };
                write!(out, "{nl}[marker: {m}]{nl}")?;
            }
        }
        out.flush()
    };
    if !interactive {
        for f in &frames {
            show(&mut out, &f.kind, false)?;
        }
        return Ok(());
    }
    let _raw = crate::terminal::RawMode::enable()?;
    let (tx, mut keys) = tokio::sync::mpsc::channel::<u8>(16);
    std::thread::Builder::new()
        .name("keys".into())
        .spawn(move || {
            use std::io::Read;
            let mut b = [0u8; 1];
            while let Ok(1) = std::io::stdin().read(&mut b) {
                if tx.blocking_send(b[0]).is_err() {
                    break;
                }
            }
        })?;
    let start = tokio::time::Instant::now();
    let mut player = Player::new(frames);
    while !player.done() {
        let now = start.elapsed();
        for k in player.take_due(now) {
            show(&mut out, &k, true)?;
        }
        if player.done() {
            break;
        }
        let sleep = match player.due() {
            Some(due) => tokio::time::sleep_until(start + due),
            None => tokio::time::sleep(Duration::from_secs(3600)),
        };
        tokio::select! {
            _ = sleep => {}
            k = keys.recv() => match k.and_then(key) {
                Some(k) => {
                    for f in player.key(k, start.elapsed()) {
                        show(&mut out, &f, true)?;
                    }
                }
                None if k.is_none() => {
                    // stdin closed: play on without keys.
                    if let Some(due) = player.due() { tokio::time::sleep_until(start + due).await; }
                }
                None => {}
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aexec_recording::cast::{CastWriter, Header, SessionFacts};

    fn recording(events: &[(u64, Event)]) -> Recording {
        let (mut w, head) = CastWriter::new(&Header::new(SessionFacts::default(), 0, None));
        let mut bytes = head.into_bytes();
        for (ms, ev) in events {
            w.event(Duration::from_millis(*ms), ev, &mut bytes);
        }
        aexec_recording::cast::CastReader::parse(&bytes).expect("parse")
    }

    fn out(s: &str) -> Event {
        Event::Output(s.as_bytes().to_vec())
    }

    #[test]
    fn timing_speed_and_idle_limit() {
        let rec = recording(&[
            (0, out("a")),
            (500, Event::Input(b"x".to_vec())),
            (1000, out("b")),
            (11000, Event::Error(b"c".to_vec())),
            (11500, Event::Marker("m".into())),
        ]);
        let at = |f: &[Frame]| f.iter().map(|f| f.at.as_millis()).collect::<Vec<_>>();
        assert_eq!(
            at(&schedule(&rec, 1.0, None, Duration::ZERO)),
            vec![0, 1000, 11000, 11500]
        );
        assert_eq!(
            at(&schedule(&rec, 2.0, None, Duration::ZERO)),
            vec![0, 500, 5500, 5750]
        );
        // The 10 s pause is cut to 2 s.
        assert_eq!(
            at(&schedule(&rec, 1.0, Some(2.0), Duration::ZERO)),
            vec![0, 1000, 3000, 3500]
        );
        let kinds = schedule(&rec, 1.0, None, Duration::ZERO);
        assert_eq!(kinds[2].kind, FrameKind::Output(b"c".to_vec()));
        assert_eq!(kinds[3].kind, FrameKind::Marker("m".into()));
        // From 10.5 s in: what came before at once, then the session's own pace.
        assert_eq!(
            at(&schedule(&rec, 1.0, None, Duration::from_millis(10_500))),
            vec![0, 0, 500, 1000]
        );
    }

    fn frames() -> Vec<Frame> {
        let f = |ms: u64, k: FrameKind| Frame {
            at: Duration::from_millis(ms),
            kind: k,
        };
        vec![
            f(0, FrameKind::Output(b"1".to_vec())),
            f(1000, FrameKind::Output(b"2".to_vec())),
            f(2000, FrameKind::Marker("m".into())),
            f(3000, FrameKind::Output(b"3".to_vec())),
            f(4000, FrameKind::Output(b"4".to_vec())),
        ]
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn plays_in_time_and_pauses() {
        let mut p = Player::new(frames());
        assert_eq!(p.take_due(ms(0)).len(), 1);
        assert_eq!(p.due(), Some(ms(1000)));
        assert!(p.take_due(ms(999)).is_empty());
        assert_eq!(p.take_due(ms(1000)).len(), 1);
        // Pause at 1.5 s for 10 s: frame 3 (marker at 2 s) is due 10 s later.
        p.key(Key::Pause, ms(1500));
        assert!(p.paused() && p.due().is_none());
        assert!(p.take_due(ms(5000)).is_empty());
        p.key(Key::Pause, ms(11500));
        assert_eq!(p.due(), Some(ms(12000)));
        assert_eq!(p.take_due(ms(12000)), vec![FrameKind::Marker("m".into())]);
    }

    #[test]
    fn step_and_marker_jump_while_paused() {
        let mut p = Player::new(frames());
        p.take_due(ms(0));
        // Not paused: step does nothing.
        assert!(p.key(Key::Step, ms(10)).is_empty());
        p.key(Key::Pause, ms(10));
        assert_eq!(
            p.key(Key::Step, ms(20)),
            vec![FrameKind::Output(b"2".to_vec())]
        );
        assert_eq!(
            p.key(Key::NextMarker, ms(30)),
            vec![FrameKind::Marker("m".into())]
        );
        // Resuming continues from the marker's time (2 s): frame "3" is 1 s later.
        p.key(Key::Pause, ms(100));
        assert_eq!(p.due(), Some(ms(1100)));
        p.key(Key::Quit, ms(200));
        assert!(p.done());
    }

    #[test]
    fn keys_and_newlines() {
        assert_eq!(key(b' '), Some(Key::Pause));
        assert_eq!(key(b'.'), Some(Key::Step));
        assert_eq!(key(b']'), Some(Key::NextMarker));
        assert_eq!(key(b'q'), Some(Key::Quit));
        assert_eq!(key(3), Some(Key::Quit));
        assert_eq!(key(b'x'), None);
        assert_eq!(crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n".to_vec());
    }
}
