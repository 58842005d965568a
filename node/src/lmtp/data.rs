//! The DATA decoder: finds the end of the data (`.` alone on a line),
//! removes dot-stuffing and normalises line ends, incrementally, so that
//! the terminator may be split across reads anywhere.
//!
//! Rules (see the module documentation of [`crate::lmtp`]):
//! - CRLF and a bare LF both end a line; both are stored as CRLF;
//! - a bare CR (not followed by LF) is data and is kept;
//! - a line that is exactly `.` ends the data (`CRLF . CRLF`, also
//!   `LF . LF` and mixes); the line end before it belongs to the message;
//! - any other line starting with `.` loses that first dot.

/// Where the decoder is in the current line.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// Inside a line.
    Mid,
    /// Saw a CR inside a line (or on an empty line), not emitted yet.
    Cr,
    /// Saw `.` at the start of a line.
    Dot,
    /// Saw `.` CR at the start of a line.
    DotCr,
}

/// Incremental DATA decoder with an output limit.
#[derive(Clone, Debug)]
pub struct DotDecoder {
    state: State,
    limit: usize,
    produced: usize,
    overflow: bool,
}

impl DotDecoder {
    /// A decoder that stores at most `limit` decoded octets; beyond that it
    /// keeps looking for the end but stores nothing more.
    pub fn new(limit: usize) -> Self {
        DotDecoder {
            state: State::LineStart,
            limit,
            produced: 0,
            overflow: false,
        }
    }

    /// Whether the decoded message is larger than the limit. `out` then
    /// holds an incomplete message, to be thrown away.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Decoded octets appended so far.
    pub fn produced(&self) -> usize {
        self.produced
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if bytes.len() > self.limit - self.produced {
            self.overflow = true;
            return;
        }
        self.produced += bytes.len();
        out.extend_from_slice(bytes);
    }

    /// Decodes `input`, appending the message octets to `out`. Returns how
    /// many input octets were consumed and whether the end of the data was
    /// reached (the octets after the terminator are not consumed).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Mid {
                let rest = &input[i..];
                match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
                    None => {
                        self.emit(out, rest);
                        return (input.len(), false);
                    }
                    Some(p) => {
                        self.emit(out, &rest[..p]);
                        i += p + 1;
                        if rest[p] == b'\r' {
                            self.state = State::Cr;
                        } else {
                            self.emit(out, b"\r\n");
                            self.state = State::LineStart;
                        }
                    }
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::LineStart, b'.') => State::Dot,
                (State::Dot, b'\r') => State::DotCr,
                (State::Dot | State::DotCr, b'\n') => {
                    self.state = State::LineStart;
                    return (i, true);
                }
                (State::LineStart, b'\r') => State::Cr,
                (State::LineStart | State::Cr, b'\n') => {
                    self.emit(out, b"\r\n");
                    State::LineStart
                }
                // A dot-stuffed line: the dot is dropped. (`Mid` is handled
                // above and never gets here.)
                (State::LineStart | State::Dot | State::Mid, b) => {
                    self.emit(out, &[b]);
                    State::Mid
                }
                (State::Cr | State::DotCr, b'\r') => {
                    self.emit(out, b"\r");
                    State::Cr
                }
                (State::Cr | State::DotCr, b) => {
                    self.emit(out, &[b'\r', b]);
                    State::Mid
                }
            };
        }
        (i, false)
    }
}

/// Dot-stuffs a message for DATA, adding the terminator (for clients:
/// tests and the benchmark). Line ends are kept as they are.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut rest = message;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            out.push(b'.');
        }
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        out.extend_from_slice(&rest[..end]);
        rest = &rest[end..];
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` octets.
    fn run(input: &[u8], step: usize, limit: usize) -> (Vec<u8>, Option<usize>, bool) {
        let mut d = DotDecoder::new(limit);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let (n, done) = d.decode(&input[pos..end], &mut out);
            if done {
                return (out, Some(pos + n), d.overflowed());
            }
            assert_eq!(n, end - pos, "consumes the whole piece");
            pos = end;
        }
        (out, None, d.overflowed())
    }

    fn all_steps(input: &[u8], expect: &[u8], consumed: usize) {
        for step in 1..=input.len().max(1) {
            let (out, end, over) = run(input, step, 1 << 20);
            assert_eq!(
                out,
                expect,
                "step {step}: {:?}",
                String::from_utf8_lossy(&out)
            );
            assert_eq!(end, Some(consumed), "step {step}");
            assert!(!over);
        }
    }

    #[test]
    fn plain_message() {
        all_steps(
            b"Subject: x\r\n\r\nhello\r\n.\r\nNOOP\r\n",
            b"Subject: x\r\n\r\nhello\r\n",
            24,
        );
    }

    #[test]
    fn empty_message() {
        all_steps(b".\r\n", b"", 3);
        all_steps(b".\n", b"", 2);
    }

    #[test]
    fn dot_unstuffing() {
        all_steps(
            b"..\r\n..x\r\n.y\r\na.b\r\n...\r\n.\r\n",
            b".\r\n.x\r\ny\r\na.b\r\n..\r\n",
            26,
        );
    }

    #[test]
    fn split_terminator_every_way() {
        // `all_steps` feeds every piece size from 1 octet upwards, so the
        // terminator is split at every position.
        let msg = b"a\r\nb\r\n.\r\n";
        all_steps(msg, b"a\r\nb\r\n", msg.len());
        // A dot line that is not the terminator.
        all_steps(b"a\r\n.\rb\r\n.\r\n", b"a\r\n\rb\r\n", 11);
    }

    #[test]
    fn bare_lf_is_a_line_end() {
        all_steps(b"a\nb\r\n\n.\n", b"a\r\nb\r\n\r\n", 8);
        all_steps(b"a\n..b\n.\r\n", b"a\r\n.b\r\n", 9);
        all_steps(b"a\r\n.\n", b"a\r\n", 5);
    }

    #[test]
    fn bare_cr_is_kept() {
        all_steps(b"a\rb\r\r\n\r.\r\n.\r\n", b"a\rb\r\r\n\r.\r\n", 13);
        all_steps(b".\r\r\n.\r\n", b"\r\r\n", 7);
    }

    #[test]
    fn no_terminator_yet() {
        let (out, end, _) = run(b"abc\r\n.x\r\n.", 3, 100);
        assert_eq!(end, None);
        assert_eq!(out, b"abc\r\nx\r\n");
    }

    #[test]
    fn limit_keeps_scanning() {
        let input = b"0123456789\r\n0123456789\r\n.\r\nQUIT\r\n";
        let (out, end, over) = run(input, 4, 12);
        assert!(over);
        assert!(out.len() <= 12);
        assert_eq!(end, Some(27));
        let (_, _, over) = run(input, 4, 24);
        assert!(!over, "exactly at the limit is fine");
    }

    #[test]
    fn stuff_then_decode_roundtrip() {
        let msgs: [&[u8]; 5] = [
            b"",
            b"x",
            b".\r\n",
            b"a\r\n.\r\n..\r\n.b\r\n",
            b"Subject: t\r\n\r\n.\r\n.hidden\r\nend",
        ];
        for m in msgs {
            let stuffed = dot_stuff(m);
            let mut expect = m.to_vec();
            if !m.is_empty() && !m.ends_with(b"\r\n") {
                expect.extend_from_slice(b"\r\n");
            }
            all_steps(&stuffed, &expect, stuffed.len());
        }
    }
}
