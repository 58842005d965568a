//! Raw RFC 5322 header blocks: splitting into fields, unfolding, and the
//! `HEADER.FIELDS` / `HEADER.FIELDS.NOT` filters. Works on bytes (headers may
//! hold 8-bit text) and never fails: malformed lines are kept as they are.

/// One header field as it appears in the block, with its continuation lines
/// and its line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name, without the colon.
    pub name: &'a [u8],
    /// The whole field: name, colon, value, continuation lines and CRLF.
    pub raw: &'a [u8],
    /// The value: everything after the colon, folded, with its line ending.
    pub value: &'a [u8],
}

/// The fields of a header block (which may end with its blank line).
pub fn fields(block: &[u8]) -> Vec<Field<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < block.len() {
        // A blank line ends the header.
        if block[i..].starts_with(b"\r\n") || block[i] == b'\n' {
            break;
        }
        let start = i;
        // The field runs to the end of a line not followed by WSP.
        let mut end = i;
        loop {
            match memchr(b'\n', &block[end..]) {
                Some(p) => {
                    end += p + 1;
                    if end < block.len() && (block[end] == b' ' || block[end] == b'\t') {
                        continue;
                    }
                }
                None => end = block.len(),
            }
            break;
        }
        let raw = &block[start..end];
        let (name, value) = match memchr(b':', raw) {
            Some(c) => (trim_end(&raw[..c]), &raw[c + 1..]),
            None => (&raw[..0], raw),
        };
        out.push(Field { name, raw, value });
        i = end;
    }
    out
}

/// The first field of this name (case-insensitive), unfolded and trimmed.
pub fn first_value(block: &[u8], name: &str) -> Option<Vec<u8>> {
    fields(block)
        .into_iter()
        .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| unfold(f.value))
}

/// Removes line breaks that fold a value and trims surrounding whitespace.
pub fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if b != b'\r' && b != b'\n' {
            out.push(b);
        }
    }
    trim(&out).to_vec()
}

/// `HEADER.FIELDS (names)` (or `.NOT` when `not`): the matching fields as
/// they appear, followed by the blank line that ends a header.
pub fn filter(block: &[u8], names: &[Vec<u8>], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields(block) {
        let hit = !f.name.is_empty() && names.iter().any(|n| n.eq_ignore_ascii_case(f.name));
        if hit != not {
            out.extend_from_slice(f.raw);
            if !f.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub(crate) fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

pub(crate) fn trim(s: &[u8]) -> &[u8] {
    trim_end(trim_start(s))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    &s[..s.len() - n]
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &[u8] = b"From: a@b\r\nSubject: hello\r\n  world\r\nX-A: 1\r\nBroken line\r\n\r\n";

    #[test]
    fn splits_and_unfolds() {
        let f = fields(H);
        assert_eq!(f.len(), 4);
        assert_eq!(f[1].name, b"Subject");
        assert_eq!(f[1].raw, b"Subject: hello\r\n  world\r\n");
        assert_eq!(unfold(f[1].value), b"hello  world");
        assert_eq!(first_value(H, "subject").unwrap(), b"hello  world");
        assert_eq!(first_value(H, "nope"), None);
    }

    #[test]
    fn filters_fields() {
        let names = vec![b"subject".to_vec(), b"x-a".to_vec()];
        assert_eq!(
            filter(H, &names, false),
            b"Subject: hello\r\n  world\r\nX-A: 1\r\n\r\n"
        );
        assert_eq!(filter(H, &names, true), b"From: a@b\r\nBroken line\r\n\r\n");
        assert_eq!(filter(b"", &names, false), b"\r\n");
    }
}
