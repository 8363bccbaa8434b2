//! The local terminal: raw mode for `-t`, restored on every way out (normal return, error,
//! signal, panic), and its size.

use std::sync::atomic::{AtomicBool, Ordering};

use std::io::IsTerminal;

/// Raw mode is on (so the panic hook knows to restore it).
static RAW: AtomicBool = AtomicBool::new(false);

/// Restores the terminal if raw mode is on. Safe to call more than once.
pub fn restore() {
    if RAW.swap(false, Ordering::SeqCst) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Makes a panic restore the terminal before the panic message is printed.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}

/// Raw mode while this lives.
#[derive(Debug)]
pub struct RawMode(());

impl RawMode {
    pub fn enable() -> std::io::Result<RawMode> {
        crossterm::terminal::enable_raw_mode()?;
        RAW.store(true, Ordering::SeqCst);
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// The terminal's size (columns, rows), if stdout or stdin is a terminal.
pub fn size() -> Option<(u16, u16)> {
    crossterm::terminal::size()
        .ok()
        .filter(|(c, r)| *c > 0 && *r > 0)
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
