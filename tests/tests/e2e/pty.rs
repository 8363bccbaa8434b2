//! A terminal for the plugin in tests: a pty whose output is collected by a thread.

use std::{
    io::{Read as _, Write as _},
    time::Duration,
};

/// A terminal for the plugin: a pty whose output is collected by a thread.
pub struct Pty {
    pub master: Box<dyn portable_pty::MasterPty + Send>,
    pub writer: Box<dyn std::io::Write + Send>,
    pub child: Box<dyn portable_pty::Child + Send + Sync>,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Pty {
    pub fn spawn(program: &str, args: &[&str], cols: u16, rows: u16) -> Pty {
        use portable_pty::{CommandBuilder, PtySize, native_pty_system};
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("openpty");
        let mut cmd = CommandBuilder::new(program);
        cmd.args(args);
        cmd.env("TERM", "xterm");
        let child = pair.slave.spawn_command(cmd).expect("spawn in pty");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("reader");
        let writer = pair.master.take_writer().expect("writer");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.extend_from_slice(&buf[..n]);
                }
            }
        });
        Pty {
            master: pair.master,
            writer,
            child,
            seen,
        }
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("lock")).into_owned()
    }

    pub fn type_text(&mut self, s: &str) {
        self.writer.write_all(s.as_bytes()).expect("type");
        self.writer.flush().expect("flush");
    }

    /// Waits until `want` shows (after `from` bytes), typing `retype` every 300 ms if given.
    pub async fn expect(&mut self, want: &str, retype: Option<&str>, secs: u64) -> usize {
        let start = std::time::Instant::now();
        loop {
            if let Some(pos) = self.screen().find(want) {
                return pos;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{want:?} never showed; the terminal shows:\n{}",
                self.screen()
            );
            if let Some(r) = retype {
                self.type_text(r);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
