//! The live watchers of one session (`docs/watch.md`): the relay publishes what the session
//! shows, and each watcher reads from a queue of its own, bounded in bytes. Publishing never
//! waits. A watcher that falls behind loses frames: they are counted and it is told with a
//! [`Delivery::Skipped`], and neither the session nor the other watchers slow down. A watcher
//! that joins late first gets the last [`BACKLOG_BYTES`] of output, so that a full-screen
//! program's screen makes sense.
//!
//! Nothing flows from a watcher to the session: a [`Subscription`] can only receive.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
};

use aexec_crds::{UserRef, WatcherEntry};
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Bytes;

use crate::broker::attach::now_time as now;

/// Output kept for watchers who join later.
pub const BACKLOG_BYTES: usize = 256 << 10;
/// What one watcher may have queued and not yet read.
pub const QUEUE_BYTES: usize = 256 << 10;
/// Room beyond [`QUEUE_BYTES`] for resizes and notices, which a watcher that fell behind still
/// needs (a resize counts 32 bytes here).
pub const CONTROL_ROOM: usize = 16 << 10;

/// Something the session showed. Output is shared, not copied: the relay hands over the
/// WebSocket message's own buffer, as the exec stream frames it (the channel byte, then the
/// bytes), every watcher's queue holds a reference to it, and each watcher's connection sends it
/// on as it is. Sizes, costs and counts are of the bytes, without the channel byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// A stdout frame: `1`, then the bytes.
    Output(Bytes),
    /// A stderr frame: `2`, then the bytes.
    Error(Bytes),
    Resize {
        cols: u16,
        rows: u16,
    },
    Exit(i32),
    /// What the broker tells everyone (moderation: paused, resumed), not part of the output.
    Notice(String),
}

impl Shown {
    fn cost(&self) -> usize {
        match self {
            Shown::Output(b) | Shown::Error(b) => shown_len(b).max(1),
            Shown::Notice(t) => t.len().max(1),
            Shown::Resize { .. } => 32,
            Shown::Exit(_) => 1,
        }
    }
}

/// The bytes a stdout or stderr frame shows (without its channel byte).
pub fn shown_len(frame: &Bytes) -> usize {
    frame.len().saturating_sub(1)
}

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Shown(Shown),
    /// This many bytes of output were dropped for this watcher, which fell behind.
    Skipped {
        bytes: u64,
    },
}

/// How a watcher watches (the session's status says it with the same words).
pub use aexec_crds::WatchMode as Mode;

/// Who watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    pub user: String,
    pub groups: Vec<String>,
    pub mode: Mode,
}

impl Watcher {
    /// How the recording and the Events say it: `bob (Observer)`.
    pub fn describe(&self) -> String {
        format!("{} ({:?})", self.user, self.mode)
    }
}

/// Joins and leaves kept for the session's status: the newest this many.
pub const HISTORY: usize = 64;

/// Why a watcher could not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("the session already has {0} watchers, the most it takes; try again when one leaves")]
    Full(usize),
    #[error("the session has ended")]
    Ended,
}

/// The watchers of one session. Shared by the relay (publishing) and the subscriptions.
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    max_watchers: usize,
    moderators: watch::Sender<usize>,
    noted: Notify,
    /// Serialises the writes of [`Hub::history`] to the session's status, so that a later
    /// write never carries an older list.
    pub status_writes: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last output, in the relay's own buffers; `backlog_bytes` in all.
    backlog: VecDeque<Bytes>,
    backlog_bytes: usize,
    size: Option<(u16, u16)>,
    slots: Vec<Slot>,
    next_id: u64,
    ended: bool,
    /// Markers for the recording (joins and leaves), taken by the relay, which alone writes it.
    notes: Vec<String>,
    /// Every watcher's join and leave, the newest [`HISTORY`], for the session's status.
    history: VecDeque<(u64, WatcherEntry)>,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    watcher: Watcher,
    queue: VecDeque<Delivery>,
    queued: usize,
    skipped: u64,
    wake: Arc<Notify>,
}

impl Slot {
    /// Queues `s` if it fits, else counts it as skipped. A skip is announced before the next
    /// frame that fits, so the watcher learns of the gap where it is. The exit status always
    /// fits (there is one), and resizes and notices have room of their own beyond the output's
    /// [`QUEUE_BYTES`], so a watcher that fell behind still learns how the session ended.
    fn offer(&mut self, s: &Shown) {
        let cost = s.cost();
        let room = match s {
            Shown::Output(_) | Shown::Error(_) => QUEUE_BYTES,
            Shown::Resize { .. } | Shown::Notice(_) => QUEUE_BYTES + CONTROL_ROOM,
            Shown::Exit(_) => usize::MAX,
        };
        if self.queued + cost > room {
            if let Shown::Output(b) | Shown::Error(b) = s {
                self.skipped += shown_len(b) as u64;
            }
            return;
        }
        if self.skipped > 0 {
            self.queue.push_back(Delivery::Skipped {
                bytes: self.skipped,
            });
            self.skipped = 0;
        }
        self.queue.push_back(Delivery::Shown(s.clone()));
        self.queued += cost;
        self.wake.notify_one();
    }
}

/// What a joining watcher starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The last [`BACKLOG_BYTES`] of output (stdout and stderr as shown, in order).
    pub backlog: Vec<u8>,
    /// The terminal's size, when the session has set one.
    pub size: Option<(u16, u16)>,
}

impl Hub {
    /// A hub for a session that takes at most `max_watchers` at once.
    pub fn new(max_watchers: usize) -> Arc<Self> {
        Arc::new(Hub {
            inner: Mutex::new(Inner::default()),
            max_watchers,
            moderators: watch::channel(0).0,
            noted: Notify::new(),
            status_writes: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands `s` to every watcher without waiting, and keeps output for later joiners.
    pub fn publish(&self, s: Shown) {
        let mut inner = self.lock();
        match &s {
            Shown::Output(b) | Shown::Error(b) => {
                inner.backlog_bytes += shown_len(b);
                inner.backlog.push_back(b.slice(b.len().min(1)..));
                // Whole buffers leave the front while the rest still holds the limit; the
                // oldest left is cut to size.
                while inner.backlog_bytes > BACKLOG_BYTES {
                    let over = inner.backlog_bytes - BACKLOG_BYTES;
                    let Some(front) = inner.backlog.front_mut() else {
                        break;
                    };
                    if front.len() <= over {
                        inner.backlog_bytes -= front.len();
                        inner.backlog.pop_front();
                    } else {
                        *front = front.slice(over..);
                        inner.backlog_bytes -= over;
                    }
                }
            }
            Shown::Resize { cols, rows } => inner.size = Some((*cols, *rows)),
            Shown::Exit(_) | Shown::Notice(_) => {}
        }
        for slot in &mut inner.slots {
            slot.offer(&s);
        }
    }

    /// Ends the session for its watchers: each receives what is queued, then `None`.
    pub fn end(&self) {
        let mut inner = self.lock();
        inner.ended = true;
        for slot in &inner.slots {
            slot.wake.notify_one();
        }
    }

    /// Adds a watcher. It receives what the session shows from now on, after [`Start`].
    pub fn join(self: &Arc<Self>, watcher: Watcher) -> Result<(Start, Subscription), JoinError> {
        let mut inner = self.lock();
        if inner.ended {
            return Err(JoinError::Ended);
        }
        if inner.slots.len() >= self.max_watchers {
            return Err(JoinError::Full(self.max_watchers));
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner
            .notes
            .push(format!("watch: {} joined", watcher.describe()));
        inner.history.push_back((
            id,
            WatcherEntry {
                user: UserRef {
                    username: watcher.user.clone(),
                    groups: watcher.groups.clone(),
                },
                mode: watcher.mode,
                joined: now(),
                left: None,
            },
        ));
        if inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        self.noted.notify_one();
        let wake = Arc::new(Notify::new());
        inner.slots.push(Slot {
            id,
            watcher,
            queue: VecDeque::new(),
            queued: 0,
            skipped: 0,
            wake: wake.clone(),
        });
        let mut backlog = Vec::with_capacity(inner.backlog_bytes);
        for b in &inner.backlog {
            backlog.extend_from_slice(b);
        }
        let start = Start {
            backlog,
            size: inner.size,
        };
        self.count_moderators(&inner);
        Ok((
            start,
            Subscription {
                hub: self.clone(),
                id,
                wake,
            },
        ))
    }

    /// Who watches now, in the order they joined.
    pub fn watchers(&self) -> Vec<Watcher> {
        self.lock()
            .slots
            .iter()
            .map(|s| s.watcher.clone())
            .collect()
    }

    /// The number of moderators watching, updated as they join and leave.
    pub fn moderators(&self) -> watch::Receiver<usize> {
        self.moderators.subscribe()
    }

    fn count_moderators(&self, inner: &Inner) {
        let n = inner
            .slots
            .iter()
            .filter(|s| s.watcher.mode == Mode::Moderator)
            .count();
        self.moderators.send_if_modified(|m| {
            let changed = *m != n;
            *m = n;
            changed
        });
    }

    fn leave(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(at) = inner.slots.iter().position(|s| s.id == id) {
            let slot = inner.slots.remove(at);
            inner
                .notes
                .push(format!("watch: {} left", slot.watcher.describe()));
            self.noted.notify_one();
        }
        if let Some((_, entry)) = inner.history.iter_mut().find(|(i, _)| *i == id) {
            entry.left = Some(now());
        }
        self.count_moderators(&inner);
    }

    /// Waits until a join or leave has something for the recording.
    pub async fn noted(&self) {
        self.noted.notified().await;
    }

    /// The markers for the recording since the last call.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().notes)
    }

    /// Every join and leave, the newest [`HISTORY`], for the session's status.
    pub fn history(&self) -> Vec<WatcherEntry> {
        self.lock().history.iter().map(|(_, e)| e.clone()).collect()
    }
}

/// One watcher's receiving end. Dropping it leaves the session.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    wake: Arc<Notify>,
}

impl Subscription {
    /// The next delivery; `None` once the session has ended and everything queued was read.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            // Registered before looking, so a publish between the look and the wait still
            // wakes this watcher.
            let notified = self.wake.notified();
            {
                let mut inner = self.hub.lock();
                let ended = inner.ended;
                let slot = inner.slots.iter_mut().find(|s| s.id == self.id)?;
                if let Some(d) = slot.queue.pop_front() {
                    if let Delivery::Shown(s) = &d {
                        slot.queued -= s.cost();
                    }
                    return Some(d);
                }
                if slot.skipped > 0 {
                    let bytes = std::mem::take(&mut slot.skipped);
                    return Some(Delivery::Skipped { bytes });
                }
                if ended {
                    return None;
                }
            }
            notified.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A stdout frame showing `bytes`.
    fn out(bytes: &[u8]) -> Bytes {
        [&[1u8][..], bytes].concat().into()
    }

    /// A stderr frame showing `bytes`.
    fn err(bytes: &[u8]) -> Bytes {
        [&[2u8][..], bytes].concat().into()
    }

    fn watcher(user: &str, mode: Mode) -> Watcher {
        Watcher {
            user: user.into(),
            groups: vec!["sre".into()],
            mode,
        }
    }

    async fn next(sub: &mut Subscription) -> Option<Delivery> {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a delivery within 5 s")
    }

    #[tokio::test]
    async fn a_watcher_gets_the_backlog_then_what_follows_in_order() {
        let hub = Hub::new(4);
        hub.publish(Shown::Resize { cols: 80, rows: 24 });
        hub.publish(Shown::Output(out(b"before ")));
        let (start, mut sub) = hub.join(watcher("bob", Mode::Observer)).expect("join");
        assert_eq!(start.backlog, b"before ");
        assert_eq!(start.size, Some((80, 24)));
        hub.publish(Shown::Output(out(b"after")));
        hub.publish(Shown::Error(err(b"err")));
        hub.publish(Shown::Resize {
            cols: 100,
            rows: 30,
        });
        hub.publish(Shown::Exit(3));
        hub.end();
        let mut got = Vec::new();
        while let Some(d) = next(&mut sub).await {
            got.push(d);
        }
        assert_eq!(
            got,
            [
                Delivery::Shown(Shown::Output(out(b"after"))),
                Delivery::Shown(Shown::Error(err(b"err"))),
                Delivery::Shown(Shown::Resize {
                    cols: 100,
                    rows: 30
                }),
                Delivery::Shown(Shown::Exit(3)),
            ]
        );
    }

    #[tokio::test]
    async fn the_backlog_keeps_only_the_last_256_kib() {
        let hub = Hub::new(4);
        for i in 0..300u32 {
            hub.publish(Shown::Output(out(&[(i % 251) as u8; 1024])));
        }
        let (start, _sub) = hub.join(watcher("bob", Mode::Observer)).expect("join");
        assert_eq!(start.backlog.len(), BACKLOG_BYTES);
        // The newest byte is the last chunk's, the oldest the 45th chunk's (300 - 256 = 44).
        assert_eq!(start.backlog.last(), Some(&((299 % 251) as u8)));
        assert_eq!(start.backlog.first(), Some(&44u8));
    }

    #[tokio::test]
    async fn a_slow_watcher_is_skipped_ahead_and_told_while_a_fast_one_gets_everything() {
        let hub = Hub::new(4);
        let (_, mut slow) = hub.join(watcher("slow", Mode::Observer)).expect("join");
        let (_, mut fast) = hub.join(watcher("fast", Mode::Observer)).expect("join");
        let chunk = out(&vec![b'x'; 32 << 10]);
        let total = 64u64;
        let mut fast_bytes = 0u64;
        for _ in 0..total {
            hub.publish(Shown::Output(chunk.clone()));
            // The fast watcher reads as it goes; the slow one reads nothing yet.
            match next(&mut fast).await {
                Some(Delivery::Shown(Shown::Output(b))) => fast_bytes += shown_len(&b) as u64,
                other => panic!("fast watcher got {other:?}"),
            }
        }
        assert_eq!(fast_bytes, total * shown_len(&chunk) as u64);
        // The slow one: what fitted in its queue (8 chunks of 32 KiB), then the rest skipped;
        // yet the resize and the exit status, which it needs, still reach it.
        hub.publish(Shown::Resize { cols: 90, rows: 30 });
        hub.publish(Shown::Exit(7));
        hub.end();
        let (mut shown, mut skipped, mut resized, mut exited) = (0u64, 0u64, false, false);
        while let Some(d) = next(&mut slow).await {
            match d {
                Delivery::Shown(Shown::Output(b)) => shown += shown_len(&b) as u64,
                Delivery::Skipped { bytes } => skipped += bytes,
                Delivery::Shown(Shown::Resize { cols: 90, rows: 30 }) => resized = true,
                Delivery::Shown(Shown::Exit(7)) => exited = true,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(shown, QUEUE_BYTES as u64);
        assert_eq!(shown + skipped, total * shown_len(&chunk) as u64);
        assert!(resized && exited, "resized {resized}, exited {exited}");
    }

    #[tokio::test]
    async fn a_skip_is_announced_before_the_next_frame_that_fits() {
        let hub = Hub::new(4);
        let (_, mut sub) = hub.join(watcher("bob", Mode::Observer)).expect("join");
        let big = out(&vec![b'x'; QUEUE_BYTES]);
        hub.publish(Shown::Output(big.clone()));
        hub.publish(Shown::Output(out(b"lost")));
        assert_eq!(
            next(&mut sub).await,
            Some(Delivery::Shown(Shown::Output(big)))
        );
        hub.publish(Shown::Output(out(b"kept")));
        assert_eq!(next(&mut sub).await, Some(Delivery::Skipped { bytes: 4 }));
        assert_eq!(
            next(&mut sub).await,
            Some(Delivery::Shown(Shown::Output(out(b"kept"))))
        );
    }

    #[tokio::test]
    async fn moderators_are_counted_as_they_join_and_leave_and_the_hub_has_a_limit() {
        let hub = Hub::new(2);
        let mods = hub.moderators();
        let (_, a) = hub.join(watcher("bob", Mode::Moderator)).expect("join");
        let (_, b) = hub.join(watcher("carol", Mode::Observer)).expect("join");
        assert_eq!(*mods.borrow(), 1);
        assert_eq!(
            hub.join(watcher("dave", Mode::Moderator)).err(),
            Some(JoinError::Full(2))
        );
        assert_eq!(
            hub.watchers()
                .iter()
                .map(|w| w.user.as_str())
                .collect::<Vec<_>>(),
            ["bob", "carol"]
        );
        drop(a);
        assert_eq!(*mods.borrow(), 0);
        drop(b);
        assert!(hub.watchers().is_empty());
        hub.end();
        assert_eq!(
            hub.join(watcher("dave", Mode::Observer)).err(),
            Some(JoinError::Ended)
        );
    }

    #[tokio::test]
    async fn joins_and_leaves_are_noted_for_the_recording_and_kept_for_the_status() {
        let hub = Hub::new(4);
        let (_, bob) = hub.join(watcher("bob", Mode::Observer)).expect("join");
        // The relay wakes for the note without polling.
        tokio::time::timeout(Duration::from_secs(5), hub.noted())
            .await
            .expect("noted");
        assert_eq!(hub.take_notes(), ["watch: bob (Observer) joined"]);
        assert!(hub.take_notes().is_empty());
        let history = hub.history();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].user.username, "bob");
        assert_eq!(history[0].user.groups, ["sre"]);
        assert_eq!(history[0].left, None);
        drop(bob);
        assert_eq!(hub.take_notes(), ["watch: bob (Observer) left"]);
        assert!(hub.history()[0].left.is_some());
        // The status keeps the newest HISTORY entries.
        for i in 0..HISTORY + 5 {
            drop(
                hub.join(watcher(&format!("w{i}"), Mode::Observer))
                    .expect("join"),
            );
        }
        let history = hub.history();
        assert_eq!(history.len(), HISTORY);
        assert_eq!(
            history.last().map(|e| e.user.username.as_str()),
            Some(format!("w{}", HISTORY + 4).as_str())
        );
    }

    #[tokio::test]
    async fn a_waiting_watcher_is_woken_by_a_publish() {
        let hub = Hub::new(2);
        let (_, mut sub) = hub.join(watcher("bob", Mode::Observer)).expect("join");
        let reader = tokio::spawn(async move { next(&mut sub).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        hub.publish(Shown::Output(out(b"hi")));
        assert_eq!(
            reader.await.expect("reader"),
            Some(Delivery::Shown(Shown::Output(out(b"hi"))))
        );
    }
}
