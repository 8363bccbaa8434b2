//! The signals the plugin acts on, on every platform it is released for: Ctrl-C, a request to
//! terminate, a hangup, and the terminal changing size.
//!
//! - Unix: SIGINT, SIGTERM, SIGHUP and SIGWINCH (tokio's signal streams).
//! - Windows: Ctrl-C, Ctrl-Break (taken as a request to terminate) and the console window
//!   closing (as a hangup). Windows has no signal for a resized console, so the size is polled
//!   every [`SIZE_POLL`] while a terminal is attached (only then is a size change asked for).

use std::io;

#[cfg(windows)]
use std::time::Duration;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM; Ctrl-Break on Windows.
    Terminate,
    /// SIGHUP; the console window closing on Windows.
    Hangup,
    /// The terminal changed size (SIGWINCH; polled on Windows).
    WindowChange,
}

/// How often the console's size is polled on Windows.
#[cfg(windows)]
pub const SIZE_POLL: Duration = Duration::from_millis(250);

/// The signal streams, registered from [`Signals::new`] on: a signal that arrives later waits
/// for [`Signals::recv`].
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    unix: UnixSignals,
    #[cfg(windows)]
    windows: WindowsSignals,
}

#[cfg(unix)]
#[derive(Debug)]
struct UnixSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    winch: Option<tokio::signal::unix::Signal>,
}

#[cfg(windows)]
#[derive(Debug)]
struct WindowsSignals {
    ctrl_c: tokio::signal::windows::CtrlC,
    ctrl_break: tokio::signal::windows::CtrlBreak,
    close: tokio::signal::windows::CtrlClose,
    size: Option<(tokio::time::Interval, Option<(u16, u16)>)>,
}

impl Signals {
    /// Registers for the signals; with `window_changes`, for the terminal's size changes too.
    pub fn new(window_changes: bool) -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                unix: UnixSignals {
                    int: signal(SignalKind::interrupt())?,
                    term: signal(SignalKind::terminate())?,
                    hup: signal(SignalKind::hangup())?,
                    winch: if window_changes {
                        Some(signal(SignalKind::window_change())?)
                    } else {
                        None
                    },
                },
            })
        }
        #[cfg(windows)]
        {
            use tokio::signal::windows;
            let size = window_changes.then(|| {
                let mut every = tokio::time::interval(SIZE_POLL);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                (every, crate::terminal::size())
            });
            Ok(Signals {
                windows: WindowsSignals {
                    ctrl_c: windows::ctrl_c()?,
                    ctrl_break: windows::ctrl_break()?,
                    close: windows::ctrl_close()?,
                    size,
                },
            })
        }
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            let s = &mut self.unix;
            let winch = async {
                match &mut s.winch {
                    Some(w) => w.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = s.int.recv() => Signal::Interrupt,
                _ = s.term.recv() => Signal::Terminate,
                _ = s.hup.recv() => Signal::Hangup,
                _ = winch => Signal::WindowChange,
            }
        }
        #[cfg(windows)]
        {
            let s = &mut self.windows;
            let resized = async {
                match &mut s.size {
                    Some((every, last)) => loop {
                        every.tick().await;
                        let now = crate::terminal::size();
                        if now != *last {
                            *last = now;
                            break;
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = s.ctrl_c.recv() => Signal::Interrupt,
                _ = s.ctrl_break.recv() => Signal::Terminate,
                _ = s.close.recv() => Signal::Hangup,
                _ = resized => Signal::WindowChange,
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A window change is reported as one (SIGWINCH, raised at this test process). Only
    /// SIGWINCH: the other three would end a relay that another test runs at the same time.
    #[tokio::test]
    async fn a_window_change_is_reported() {
        let mut s = Signals::new(true).expect("signals");
        let ok = std::process::Command::new("kill")
            .args(["-WINCH", &std::process::id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -WINCH failed");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), s.recv())
            .await
            .expect("the signal arrives");
        assert_eq!(got, Signal::WindowChange);
    }

    /// Without window changes asked for, a SIGWINCH is not reported.
    #[tokio::test]
    async fn window_changes_only_when_asked() {
        let mut s = Signals::new(false).expect("signals");
        let ok = std::process::Command::new("kill")
            .args(["-WINCH", &std::process::id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok);
        let got = tokio::time::timeout(std::time::Duration::from_millis(300), s.recv()).await;
        assert!(got.is_err(), "nothing is reported: {got:?}");
    }
}
