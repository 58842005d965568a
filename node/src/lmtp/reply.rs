//! Server replies: a code, an enhanced status code (RFC 3463, on every
//! reply but the greeting, LHLO and 354) and a text.

use std::borrow::Cow;
use std::fmt;

/// One reply line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code (`"2.0.0"`), if any.
    pub status: Option<&'static str>,
    /// Human-readable text. Control characters are replaced by spaces on
    /// output, so a backend message cannot break the protocol.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply with an enhanced status code and a fixed text.
    pub const fn new(code: u16, status: &'static str, text: &'static str) -> Self {
        Reply {
            code,
            status: Some(status),
            text: Cow::Borrowed(text),
        }
    }

    /// A reply with an enhanced status code and a computed text.
    pub fn with_text(code: u16, status: &'static str, text: impl Into<String>) -> Self {
        Reply {
            code,
            status: Some(status),
            text: Cow::Owned(text.into()),
        }
    }

    /// A reply without an enhanced status code.
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            status: None,
            text: Cow::Owned(text.into()),
        }
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Appends the reply, CRLF-terminated, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_line(out, self.code, ' ', self.status, &self.text);
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = Vec::new();
        write_line(&mut v, self.code, ' ', self.status, &self.text);
        v.truncate(v.len() - 2);
        f.write_str(&String::from_utf8_lossy(&v))
    }
}

/// Appends one line `code<sep>[status ]text\r\n`.
pub(crate) fn write_line(
    out: &mut Vec<u8>,
    code: u16,
    sep: char,
    status: Option<&str>,
    text: &str,
) {
    let code = code.clamp(100, 599);
    out.extend_from_slice(code.to_string().as_bytes());
    out.push(sep as u8);
    if let Some(s) = status {
        out.extend_from_slice(s.as_bytes());
        out.push(b' ');
    }
    // At most ~500 octets of text, no control characters.
    for (i, c) in text.chars().enumerate() {
        if i >= 480 {
            break;
        }
        let mut b = [0u8; 4];
        let c = if c.is_control() { ' ' } else { c };
        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// A multi-line reply with one code and no enhanced status (LHLO).
pub(crate) fn write_multiline(out: &mut Vec<u8>, code: u16, lines: &[String]) {
    for (i, l) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        write_line(out, code, sep, None, l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_sanitises() {
        let mut out = Vec::new();
        Reply::with_text(451, "4.3.0", "disk\r\nfull").write_to(&mut out);
        assert_eq!(out, b"451 4.3.0 disk  full\r\n");
        let mut out = Vec::new();
        write_multiline(&mut out, 250, &["a".into(), "b".into()]);
        assert_eq!(out, b"250-a\r\n250 b\r\n");
        assert_eq!(Reply::plain(354, "go").to_string(), "354 go");
    }
}
