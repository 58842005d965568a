//! Splits the client's byte stream into complete commands (lines and the
//! literals they announce) before imap-codec parses them, with bounded
//! memory: a line longer than the limit, a literal larger than APPENDLIMIT
//! or a command larger than the total limit is discarded up to its end
//! (following the literals it announces, so literal bytes are never taken
//! for commands) and reported, and the connection goes on.
//!
//! Synchronizing literals wait for the session's decision
//! ([`Framer::accept`] after it sent a continuation request, or
//! [`Framer::reject`]); non-synchronizing ones (LITERAL+) flow on.

/// Size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest line (without literals).
    pub max_line: usize,
    /// Largest literal (APPENDLIMIT).
    pub max_literal: u32,
    /// Largest command, lines and literals together.
    pub max_command: usize,
}

/// Why a command was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// A line exceeded [`Limits::max_line`].
    LineTooLong,
    /// A literal exceeded [`Limits::max_literal`].
    LiteralTooLarge,
    /// The whole command exceeded [`Limits::max_command`].
    CommandTooLong,
    /// The session rejected a non-synchronizing literal.
    Rejected,
}

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete command, ready to decode.
    Complete(Vec<u8>),
    /// The last line announced a literal. The partial command is
    /// [`Framer::partial`]; answer with [`Framer::accept`] or
    /// [`Framer::reject`] before calling [`Framer::next_frame`] again.
    Literal {
        /// Announced length.
        length: u32,
        /// Synchronizing (`{n}`: the client waits for `+`).
        sync: bool,
    },
    /// A command was discarded.
    Discarded {
        /// Its tag, if one could be read.
        tag: Option<String>,
        /// Why.
        reason: Discard,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Line,
    Literal(u32),
    Decide(u32, bool),
}

/// The framer. Feed it with [`Framer::push`], drain it with [`Framer::next_frame`].
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
    input: Vec<u8>,
    pos: usize,
    msg: Vec<u8>,
    head: Vec<u8>,
    tail: Vec<u8>,
    line_len: usize,
    total: usize,
    state: State,
    poison: Option<Discard>,
}

const HEAD: usize = 80;
const TAIL: usize = 24;

impl Framer {
    /// A framer with these limits.
    pub fn new(limits: Limits) -> Self {
        Framer {
            limits,
            input: Vec::new(),
            pos: 0,
            msg: Vec::new(),
            head: Vec::new(),
            tail: Vec::new(),
            line_len: 0,
            total: 0,
            state: State::Line,
            poison: None,
        }
    }

    /// Adds bytes read from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Bytes received and not framed yet.
    pub fn buffered(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Drops everything buffered (after STARTTLS: plaintext sent after the
    /// command must not be executed inside TLS).
    pub fn clear_input(&mut self) {
        self.input.clear();
        self.pos = 0;
    }

    /// The command received so far (while a literal decision is pending).
    pub fn partial(&self) -> &[u8] {
        &self.msg
    }

    /// Continue a pending literal: its bytes belong to the command.
    pub fn accept(&mut self) {
        if let State::Decide(len, _) = self.state {
            self.state = State::Literal(len);
        }
    }

    /// Refuse a pending literal. A synchronizing one ends the command (the
    /// client sends nothing more of it); a non-synchronizing one is read and
    /// dropped with the rest of its command, then reported as
    /// [`Discard::Rejected`].
    pub fn reject(&mut self) {
        match self.state {
            State::Decide(_, true) => self.reset(),
            State::Decide(len, false) => {
                self.poison = Some(Discard::Rejected);
                self.msg.clear();
                self.state = State::Literal(len);
            }
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.msg.clear();
        self.head.clear();
        self.tail.clear();
        self.line_len = 0;
        self.total = 0;
        self.state = State::Line;
        self.poison = None;
    }

    fn poison(&mut self, why: Discard) {
        if self.poison.is_none() {
            self.poison = Some(why);
            self.msg = Vec::new();
        }
    }

    fn finish(&mut self) -> Frame {
        let frame = match self.poison {
            None => Frame::Complete(std::mem::take(&mut self.msg)),
            Some(reason) => Frame::Discarded {
                tag: tag_of(&self.head),
                reason,
            },
        };
        self.reset();
        frame
    }

    /// The next frame, or `None` when more input is needed (or a literal
    /// decision is pending).
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.state {
                State::Decide(..) => return None,
                State::Literal(remaining) => {
                    let avail = self.input.len() - self.pos;
                    let n = avail.min(remaining as usize);
                    let chunk = &self.input[self.pos..self.pos + n];
                    self.total += n;
                    if self.poison.is_none() {
                        if self.total > self.limits.max_command {
                            self.poison(Discard::CommandTooLong);
                        } else {
                            self.msg.extend_from_slice(chunk);
                        }
                    }
                    self.pos += n;
                    let left = remaining - n as u32;
                    if left > 0 {
                        self.state = State::Literal(left);
                        return None;
                    }
                    self.state = State::Line;
                    self.tail.clear();
                }
                State::Line => {
                    let rest = &self.input[self.pos..];
                    if rest.is_empty() {
                        return None;
                    }
                    let (n, eol) = match rest.iter().position(|&b| b == b'\n') {
                        Some(p) => (p + 1, true),
                        None => (rest.len(), false),
                    };
                    let chunk = &rest[..n];
                    if self.head.len() < HEAD {
                        let k = (HEAD - self.head.len()).min(n);
                        self.head.extend_from_slice(&chunk[..k]);
                    }
                    self.tail.extend_from_slice(chunk);
                    if self.tail.len() > TAIL {
                        self.tail.drain(..self.tail.len() - TAIL);
                    }
                    self.line_len += n;
                    self.total += n;
                    let chunk = chunk.to_vec();
                    self.pos += n;
                    if self.poison.is_none() {
                        if self.line_len > self.limits.max_line {
                            self.poison(Discard::LineTooLong);
                        } else if self.total > self.limits.max_command {
                            self.poison(Discard::CommandTooLong);
                        } else {
                            self.msg.extend_from_slice(&chunk);
                        }
                    }
                    if !eol {
                        return None;
                    }
                    self.line_len = 0;
                    let announced = announcement(&self.tail);
                    self.tail.clear();
                    match announced {
                        None => return Some(self.finish()),
                        Some((_, true)) if self.poison.is_some() => return Some(self.finish()),
                        Some((len, false)) if self.poison.is_some() => {
                            self.state = State::Literal(len);
                        }
                        Some((len, sync)) if len > self.limits.max_literal => {
                            self.poison(Discard::LiteralTooLarge);
                            if sync {
                                return Some(self.finish());
                            }
                            self.state = State::Literal(len);
                        }
                        Some((len, sync)) => {
                            self.state = State::Decide(len, sync);
                            return Some(Frame::Literal { length: len, sync });
                        }
                    }
                }
            }
        }
    }
}

/// `{123}` / `{123+}` at the end of a line (before CRLF or LF).
fn announcement(line: &[u8]) -> Option<(u32, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    let inner = &line[open + 1..];
    let (digits, sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    u32::try_from(n).ok().map(|n| (n, sync))
}

/// The tag at the start of a command, if it looks like one.
pub fn tag_of(head: &[u8]) -> Option<String> {
    let end = head.iter().position(|&b| b == b' ')?;
    let tag = &head[..end];
    let ok = !tag.is_empty()
        && tag
            .iter()
            .all(|&b| (0x21..0x7f).contains(&b) && !b"(){%*\"\\+".contains(&b));
    ok.then(|| String::from_utf8_lossy(tag).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framer() -> Framer {
        Framer::new(Limits {
            max_line: 100,
            max_literal: 50,
            max_command: 200,
        })
    }

    #[test]
    fn lines_and_literals() {
        let mut f = framer();
        f.push(b"a NOOP\r\nb LOGIN {3}\r\n");
        assert_eq!(
            f.next_frame(),
            Some(Frame::Complete(b"a NOOP\r\n".to_vec()))
        );
        assert_eq!(
            f.next_frame(),
            Some(Frame::Literal {
                length: 3,
                sync: true
            })
        );
        assert_eq!(f.partial(), b"b LOGIN {3}\r\n");
        assert_eq!(f.next_frame(), None);
        f.accept();
        f.push(b"bob {2+}\r\npw\r\n");
        assert_eq!(
            f.next_frame(),
            Some(Frame::Literal {
                length: 2,
                sync: false
            })
        );
        f.accept();
        assert_eq!(
            f.next_frame(),
            Some(Frame::Complete(
                b"b LOGIN {3}\r\nbob {2+}\r\npw\r\n".to_vec()
            ))
        );
        assert_eq!(f.next_frame(), None);
        // Split across reads.
        f.push(b"c NO");
        assert_eq!(f.next_frame(), None);
        f.push(b"OP\r\n");
        assert_eq!(
            f.next_frame(),
            Some(Frame::Complete(b"c NOOP\r\n".to_vec()))
        );
    }

    #[test]
    fn long_line_discarded_and_stream_goes_on() {
        let mut f = framer();
        f.push(b"t1 ");
        f.push(&[b'x'; 500]);
        assert_eq!(f.next_frame(), None);
        f.push(b" {5+}\r\nhello\r\nt2 NOOP\r\n");
        assert_eq!(
            f.next_frame(),
            Some(Frame::Discarded {
                tag: Some("t1".into()),
                reason: Discard::LineTooLong
            })
        );
        assert_eq!(
            f.next_frame(),
            Some(Frame::Complete(b"t2 NOOP\r\n".to_vec()))
        );
    }

    #[test]
    fn literal_limits() {
        let mut f = framer();
        f.push(b"a APPEND x {999}\r\nb NOOP\r\n");
        assert_eq!(
            f.next_frame(),
            Some(Frame::Discarded {
                tag: Some("a".into()),
                reason: Discard::LiteralTooLarge
            })
        );
        assert_eq!(
            f.next_frame(),
            Some(Frame::Complete(b"b NOOP\r\n".to_vec()))
        );
        // Non-synchronizing: the bytes are skipped.
        let mut f = framer();
        f.push(b"a APPEND x {60+}\r\n");
        f.push(&[b'y'; 60]);
        f.push(b"\r\nb NOOP\r\n");
        assert!(matches!(
            f.next_frame(),
            Some(Frame::Discarded {
                reason: Discard::LiteralTooLarge,
                ..
            })
        ));
        assert_eq!(
            f.next_frame(),
            Some(Frame::Complete(b"b NOOP\r\n".to_vec()))
        );
        // Total size.
        let mut f = framer();
        for _ in 0..5 {
            f.push(b"a X {50+}\r\n");
            f.push(&[b'z'; 50]);
            f.push(b" ");
        }
        f.push(b"\r\n");
        let mut last = None;
        while let Some(fr) = f.next_frame() {
            if let Frame::Literal { .. } = fr {
                f.accept();
                continue;
            }
            last = Some(fr);
        }
        assert!(matches!(
            last,
            Some(Frame::Discarded {
                reason: Discard::CommandTooLong,
                ..
            })
        ));
    }

    #[test]
    fn reject() {
        let mut f = framer();
        f.push(b"a BOGUS {3}\r\nb NOOP\r\n");
        assert!(matches!(
            f.next_frame(),
            Some(Frame::Literal { sync: true, .. })
        ));
        f.reject();
        assert_eq!(
            f.next_frame(),
            Some(Frame::Complete(b"b NOOP\r\n".to_vec()))
        );
        f.push(b"a BOGUS {3+}\r\nabc more\r\nb NOOP\r\n");
        assert!(matches!(
            f.next_frame(),
            Some(Frame::Literal { sync: false, .. })
        ));
        f.reject();
        assert_eq!(
            f.next_frame(),
            Some(Frame::Discarded {
                tag: Some("a".into()),
                reason: Discard::Rejected
            })
        );
        assert_eq!(
            f.next_frame(),
            Some(Frame::Complete(b"b NOOP\r\n".to_vec()))
        );
    }

    #[test]
    fn announcements() {
        assert_eq!(announcement(b"x {5}\r\n"), Some((5, true)));
        assert_eq!(announcement(b"x {5+}\n"), Some((5, false)));
        assert_eq!(announcement(b"x {}\r\n"), None);
        assert_eq!(announcement(b"x {99999999999}\r\n"), None);
        assert_eq!(announcement(b"x {5a}\r\n"), None);
        assert_eq!(announcement(b"x\r\n"), None);
        assert_eq!(tag_of(b"a1 NOOP"), Some("a1".into()));
        assert_eq!(tag_of(b"* NOOP"), None);
        assert_eq!(tag_of(b"NOOP"), None);
    }
}
