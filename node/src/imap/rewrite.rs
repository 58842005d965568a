//! Command forms imap-codec `2.0.0-alpha.10` cannot parse, reduced to forms
//! it can, and the one response it cannot encode:
//!
//! - ESEARCH (RFC 4731): `[UID] SEARCH RETURN (...) criteria` has no place
//!   for the return options in `CommandBody::Search`, and the `ESEARCH`
//!   response has no variant in `Data`. [`search_return`] takes the options
//!   out (the criteria are then parsed by imap-codec), [`esearch`] writes
//!   the response.
//! - UTF8=ACCEPT (RFC 6855): `APPEND mailbox [flags] [date] UTF8 (~{n}...)`
//!   (a `literal8` inside the `UTF8` data item) is not in imap-codec's
//!   APPEND grammar. [`append_utf8`] turns it into the plain literal form,
//!   for a partial command (the first line, before the literal) as well as
//!   a complete one.
//!
//! Only tried when imap-codec refused a command.

/// RFC 4731 return options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReturnOpts {
    /// MIN.
    pub min: bool,
    /// MAX.
    pub max: bool,
    /// ALL.
    pub all: bool,
    /// COUNT.
    pub count: bool,
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Splits `s` at the first space.
fn word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

/// `tag [UID] SEARCH RETURN (opts) criteria`: the options, and the command
/// without the RETURN clause. `None` if the command is not of this form;
/// `Some(Err)` if it is but the options are invalid.
pub fn search_return(cmd: &[u8]) -> Option<Result<(ReturnOpts, Vec<u8>), &'static str>> {
    let (tag, rest) = word(cmd)?;
    let (mut name, mut rest) = word(rest)?;
    let mut prefix = tag.len() + 1;
    if eq(name, "UID") {
        prefix += name.len() + 1;
        (name, rest) = word(rest)?;
    }
    if !eq(name, "SEARCH") {
        return None;
    }
    prefix += name.len() + 1;
    let (ret, rest) = word(rest)?;
    if !eq(ret, "RETURN") {
        return None;
    }
    let Some(inner) = rest.strip_prefix(b"(") else {
        return Some(Err("RETURN needs a parenthesized list"));
    };
    let Some(close) = inner.iter().position(|&b| b == b')') else {
        return Some(Err("RETURN list not closed"));
    };
    let mut opts = ReturnOpts::default();
    for o in inner[..close]
        .split(|&b| b == b' ')
        .filter(|o| !o.is_empty())
    {
        match o.to_ascii_uppercase().as_slice() {
            b"MIN" => opts.min = true,
            b"MAX" => opts.max = true,
            b"ALL" => opts.all = true,
            b"COUNT" => opts.count = true,
            b"SAVE" => return Some(Err("SAVE (SEARCHRES) is not supported")),
            _ => return Some(Err("unknown RETURN option")),
        }
    }
    // RFC 4731: an empty list means ALL.
    if opts == ReturnOpts::default() {
        opts.all = true;
    }
    let Some(criteria) = inner[close + 1..].strip_prefix(b" ") else {
        return Some(Err("missing search criteria"));
    };
    let mut out = cmd[..prefix].to_vec();
    out.extend_from_slice(criteria);
    Some(Ok((opts, out)))
}

/// Numbers (ascending) as a compact sequence set: `1:3,7,9:10`.
pub fn sequence_set(sorted: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// The `* ESEARCH` response for `found` (ascending).
pub fn esearch(
    tag: &str,
    uid: bool,
    opts: ReturnOpts,
    found: &[u32],
    modseq: Option<u64>,
) -> Vec<u8> {
    // Tags never hold `"` or `\` (they are atoms), so quoting is plain.
    let mut s = format!("* ESEARCH (TAG \"{tag}\")");
    if uid {
        s.push_str(" UID");
    }
    if let (true, Some(m)) = (opts.min, found.first()) {
        s.push_str(&format!(" MIN {m}"));
    }
    if let (true, Some(m)) = (opts.max, found.last()) {
        s.push_str(&format!(" MAX {m}"));
    }
    if opts.count {
        s.push_str(&format!(" COUNT {}", found.len()));
    }
    if opts.all && !found.is_empty() {
        s.push_str(&format!(" ALL {}", sequence_set(found)));
    }
    if let Some(m) = modseq {
        s.push_str(&format!(" MODSEQ {m}"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// `tag APPEND ... UTF8 (~{n}` CRLF [n octets `)` CRLF] as the same APPEND
/// with a plain literal, `{n}` CRLF [n octets CRLF]. `None` if the command
/// is not of this form.
pub fn append_utf8(cmd: &[u8]) -> Option<Vec<u8>> {
    let (_, rest) = word(cmd)?;
    let (name, _) = word(rest)?;
    if !eq(name, "APPEND") {
        return None;
    }
    let eol = cmd.iter().position(|&b| b == b'\n')?;
    let line = &cmd[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let open = line.iter().rposition(|&b| b == b'{')?;
    const MARK: &[u8] = b"UTF8 (~";
    let start = open.checked_sub(MARK.len())?;
    if !line[start..open].eq_ignore_ascii_case(MARK) {
        return None;
    }
    let digits = line[open + 1..].strip_suffix(b"}")?;
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let mut out = cmd[..start].to_vec();
    out.extend_from_slice(&cmd[open..=eol]);
    let data = &cmd[eol + 1..];
    if data.is_empty() {
        return Some(out); // partial: the literal has not come yet
    }
    if data.len() < n {
        return None;
    }
    out.extend_from_slice(&data[..n]);
    let tail = data[n..].strip_prefix(b")")?;
    out.extend_from_slice(tail);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_return_options() {
        let (o, c) = search_return(b"a1 UID SEARCH RETURN (MIN COUNT) SUBJECT x\r\n")
            .unwrap()
            .unwrap();
        assert!(o.min && o.count && !o.max && !o.all);
        assert_eq!(c, b"a1 UID SEARCH SUBJECT x\r\n");
        let (o, c) = search_return(b"a2 search return () ALL\r\n")
            .unwrap()
            .unwrap();
        assert!(o.all && !o.min);
        assert_eq!(c, b"a2 search ALL\r\n");
        assert!(search_return(b"a3 SEARCH ALL\r\n").is_none());
        assert!(search_return(b"a4 FETCH 1 RETURN\r\n").is_none());
        assert!(search_return(b"a5 SEARCH RETURN (SAVE) ALL\r\n")
            .unwrap()
            .is_err());
        assert!(search_return(b"a6 SEARCH RETURN (MIN)\r\n")
            .unwrap()
            .is_err());
    }

    #[test]
    fn esearch_response() {
        let all = ReturnOpts {
            min: true,
            max: true,
            all: true,
            count: true,
        };
        assert_eq!(
            esearch("t", true, all, &[2, 3, 4, 9, 11, 12], None),
            b"* ESEARCH (TAG \"t\") UID MIN 2 MAX 12 COUNT 6 ALL 2:4,9,11:12\r\n"
        );
        assert_eq!(
            esearch("t", false, all, &[], None),
            b"* ESEARCH (TAG \"t\") COUNT 0\r\n"
        );
        let count = ReturnOpts {
            count: true,
            ..ReturnOpts::default()
        };
        assert_eq!(
            esearch("t", false, count, &[5], Some(7)),
            b"* ESEARCH (TAG \"t\") COUNT 1 MODSEQ 7\r\n"
        );
    }

    #[test]
    fn append_utf8_forms() {
        assert_eq!(
            append_utf8(b"a APPEND INBOX (\\Seen) UTF8 (~{3}\r\n").unwrap(),
            b"a APPEND INBOX (\\Seen) {3}\r\n"
        );
        assert_eq!(
            append_utf8(b"a APPEND INBOX utf8 (~{3+}\r\nabc)\r\n").unwrap(),
            b"a APPEND INBOX {3+}\r\nabc\r\n"
        );
        assert!(append_utf8(b"a APPEND INBOX {3}\r\nabc\r\n").is_none());
        assert!(append_utf8(b"a SELECT UTF8 (~{3}\r\n").is_none());
        assert!(append_utf8(b"a APPEND INBOX UTF8 (~{3}\r\nabc\r\n").is_none());
    }
}
