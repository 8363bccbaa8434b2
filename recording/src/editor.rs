//! What a line editor makes of typed keys, shared by the text transcript and `kubectl aexec
//! search`: printable characters are added, backspace and DEL remove one, Ctrl-U the line,
//! Ctrl-W a word; Enter (CR, LF or CRLF) ends the line; escape sequences (arrow keys, recognised
//! by the terminal emulator's own parser) are dropped. A line reaching [`MAX_TEXT_LINE`] is cut
//! there and the rest goes on the next.

use avt::parser::{Function, Parser, State};

use crate::{cast::decode_utf8, transcript::MAX_TEXT_LINE};

/// What a line editor makes of typed bytes.
#[derive(Debug, Default)]
pub struct LineEditor {
    /// Escape sequences (arrow keys) are recognised by the emulator's own parser, and dropped.
    parser: Parser,
    carry: Vec<u8>,
    line: String,
    /// The last character was a CR: an LF right after it is the same Enter.
    cr: bool,
}

impl LineEditor {
    /// Adds typed bytes; appends the lines they end to `done`.
    pub fn feed(&mut self, bytes: &[u8], done: &mut Vec<String>) {
        let text = decode_utf8(&mut self.carry, bytes);
        for c in text.chars() {
            self.char(c, done);
        }
        // An ESC that ends an event is the Escape key, not the start of a sequence: keys
        // arrive as events of their own, a sequence (an arrow key) in one.
        if self.parser.state == State::Escape {
            self.parser = Parser::new();
        }
    }

    fn char(&mut self, c: char, done: &mut Vec<String>) {
        let cr = std::mem::replace(&mut self.cr, c == '\r');
        if self.parser.state != State::Ground || c == '\x1b' || ('\u{80}'..='\u{9f}').contains(&c) {
            match self.parser.feed(c) {
                Some(Function::Print(c)) => self.push(c, done),
                Some(Function::Bs) => {
                    self.line.pop();
                }
                Some(Function::Cr | Function::Lf) => done.push(std::mem::take(&mut self.line)),
                _ => {}
            }
            return;
        }
        match c {
            '\r' => done.push(std::mem::take(&mut self.line)),
            '\n' if cr => {}
            '\n' => done.push(std::mem::take(&mut self.line)),
            '\x08' | '\x7f' => {
                self.line.pop();
            }
            '\x15' => self.line.clear(),
            '\x17' => {
                let kept = self.line.trim_end().len();
                self.line.truncate(kept);
                let word = self.line.rfind(' ').map_or(0, |i| i + 1);
                self.line.truncate(word);
            }
            '\t' => self.push(c, done),
            c if c.is_control() => {}
            c => self.push(c, done),
        }
    }

    fn push(&mut self, c: char, done: &mut Vec<String>) {
        self.line.push(c);
        if self.line.len() >= MAX_TEXT_LINE {
            done.push(std::mem::take(&mut self.line));
        }
    }

    /// The end of the recording: an incomplete character, and the line typed without Enter.
    pub fn finish(&mut self, done: &mut Vec<String>) {
        if !self.carry.is_empty() {
            let rest = std::mem::take(&mut self.carry);
            for c in String::from_utf8_lossy(&rest).chars() {
                self.char(c, done);
            }
        }
        if !self.line.is_empty() {
            done.push(std::mem::take(&mut self.line));
        }
    }

    /// Bytes of the line being typed.
    pub fn len(&self) -> usize {
        self.line.len()
    }

    /// Nothing typed since the last line ended.
    pub fn is_empty(&self) -> bool {
        self.line.is_empty()
    }
}
