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
//! - SEARCHRES (RFC 5182): the `$` sequence set (the last saved SEARCH
//!   result) is not in imap-codec's sequence-set grammar. [`dollar`]
//!   replaces a standalone `$` by [`DOLLAR`], a number no mailbox reaches,
//!   which the session maps back to the saved result after parsing.
//! - MULTIAPPEND (RFC 3502): `APPEND mailbox msg1 msg2 ...` is not in
//!   imap-codec's APPEND grammar (one message). [`split_append`] cuts it
//!   into one single-message APPEND per message, each parsed by imap-codec,
//!   and recognizes a partial one (waiting for a later message's literal).
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
    /// SAVE (RFC 5182): keep the result for `$`.
    pub save: bool,
}

impl ReturnOpts {
    /// Whether an `ESEARCH` response is sent: not for `RETURN (SAVE)` alone
    /// (RFC 5182 §2.4).
    pub fn answers(&self) -> bool {
        self.min || self.max || self.all || self.count
    }

    /// Whether SAVE keeps only the MIN and/or MAX message (RFC 5182 §2.4:
    /// SAVE with MIN or MAX and neither ALL nor COUNT).
    pub fn saves_extremes(&self) -> bool {
        self.save && (self.min || self.max) && !self.all && !self.count
    }
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
            b"SAVE" => opts.save = true,
            _ => return Some(Err("unknown RETURN option")),
        }
    }
    // RFC 4731: an empty list means ALL.
    if !opts.answers() && !opts.save {
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

/// The number standing for `$` once [`dollar`] rewrote a command: larger
/// than any sequence number or UID a mailbox reaches.
pub const DOLLAR: u32 = u32::MAX;

/// Skips a quoted string starting at `i` (on the `"`); the index after it.
fn skip_quoted(s: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A literal announcement `[~]{n[+]}` CRLF at `i`: (length, index of its
/// first data byte, index after the announcement's `}`).
fn literal_at(s: &[u8], i: usize) -> Option<(usize, usize, usize)> {
    let start = if s.get(i) == Some(&b'~') { i + 1 } else { i };
    if s.get(start) != Some(&b'{') {
        return None;
    }
    let close = start + s[start..].iter().position(|&b| b == b'}')?;
    let digits = &s[start + 1..close];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    if s.get(close + 1..close + 3) != Some(b"\r\n") {
        return None;
    }
    Some((n, close + 3, close + 1))
}

/// `tag CMD ... $ ...` with every standalone `$` (outside quoted strings
/// and literals) replaced by [`DOLLAR`]. `None` if there is none.
pub fn dollar(cmd: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(cmd.len() + 16);
    let mut i = 0;
    let mut found = false;
    while i < cmd.len() {
        match cmd[i] {
            b'"' => {
                let end = skip_quoted(cmd, i).unwrap_or(cmd.len());
                out.extend_from_slice(&cmd[i..end]);
                i = end;
            }
            b'{' | b'~' if literal_at(cmd, i).is_some() => {
                let (n, data, _) = literal_at(cmd, i)?;
                let end = data.saturating_add(n).min(cmd.len());
                out.extend_from_slice(&cmd[i..end]);
                i = end;
            }
            b'$' => {
                let before = i.checked_sub(1).map(|j| cmd[j]);
                let after = cmd.get(i + 1).copied();
                if matches!(before, Some(b' ' | b'(')) && matches!(after, Some(b' ' | b')' | b'\r'))
                {
                    out.extend_from_slice(DOLLAR.to_string().as_bytes());
                    found = true;
                } else {
                    out.push(b'$');
                }
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    found.then_some(out)
}

/// An `astring` (atom, quoted string or literal) at `i`: the index after it.
fn skip_astring(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => skip_quoted(s, i),
        b'{' => {
            let (n, data, _) = literal_at(s, i)?;
            (data + n <= s.len()).then_some(data + n)
        }
        _ => {
            let len = s[i..]
                .iter()
                .position(|&b| matches!(b, b' ' | b'\r' | b'\n' | b'(' | b')' | b'{' | b'"'))
                .unwrap_or(s.len() - i);
            (len > 0).then_some(i + len)
        }
    }
}

/// A MULTIAPPEND (RFC 3502) as single-message APPEND commands, one per
/// message, in order: `tag APPEND mailbox [flags] [date] literal` CRLF.
/// For a partial command (it ends right after a literal announcement, the
/// literal not received yet) the last one is that partial single APPEND,
/// so imap-codec can tell whether the literal is expected. `None` if the
/// command is not an APPEND of this form.
pub fn split_append(cmd: &[u8]) -> Option<Vec<Vec<u8>>> {
    let (tag, rest) = word(cmd)?;
    let (name, _) = word(rest)?;
    if !eq(name, "APPEND") {
        return None;
    }
    let mbox_start = tag.len() + 1 + name.len() + 1;
    let mbox_end = skip_astring(cmd, mbox_start)?;
    let head = &cmd[..mbox_end];
    let mut out = Vec::new();
    let mut i = mbox_end;
    loop {
        // One message: SP [flag-list SP] [date-time SP] literal.
        if cmd.get(i) != Some(&b' ') {
            return None;
        }
        let item_start = i;
        i += 1;
        if cmd.get(i) == Some(&b'(') {
            i += cmd[i..].iter().position(|&b| b == b')')? + 1;
            if cmd.get(i) != Some(&b' ') {
                return None;
            }
            i += 1;
        }
        if cmd.get(i) == Some(&b'"') {
            i = skip_quoted(cmd, i)?;
            if cmd.get(i) != Some(&b' ') {
                return None;
            }
            i += 1;
        }
        let (n, data, _) = literal_at(cmd, i)?;
        let mut one = head.to_vec();
        one.extend_from_slice(&cmd[item_start..data]);
        if data == cmd.len() {
            out.push(one); // partial: this literal has not come yet
            return Some(out);
        }
        let end = data.checked_add(n)?;
        if end > cmd.len() {
            return None;
        }
        one.extend_from_slice(&cmd[data..end]);
        one.extend_from_slice(b"\r\n");
        out.push(one);
        i = end;
        if cmd.get(i..) == Some(b"\r\n") {
            return Some(out);
        }
    }
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
        let (o, _) = search_return(b"a5 SEARCH RETURN (SAVE) ALL\r\n")
            .unwrap()
            .unwrap();
        assert!(o.save && !o.answers() && !o.saves_extremes());
        let (o, _) = search_return(b"a5 SEARCH RETURN (SAVE MIN) ALL\r\n")
            .unwrap()
            .unwrap();
        assert!(o.saves_extremes() && o.answers());
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
            save: false,
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

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn dollar_forms() {
        let d = DOLLAR.to_string();
        assert_eq!(
            dollar(b"a FETCH $ (FLAGS)\r\n").unwrap(),
            format!("a FETCH {d} (FLAGS)\r\n").into_bytes()
        );
        assert_eq!(
            dollar(b"a UID SEARCH NOT $\r\n").unwrap(),
            format!("a UID SEARCH NOT {d}\r\n").into_bytes()
        );
        assert_eq!(
            dollar(b"a SEARCH (UID $)\r\n").unwrap(),
            format!("a SEARCH (UID {d})\r\n").into_bytes()
        );
        // Inside quoted strings and literals, and within words, `$` stays.
        assert!(dollar(b"a SEARCH SUBJECT \"$\"\r\n").is_none());
        assert!(dollar(b"a SEARCH SUBJECT {1}\r\n$\r\n").is_none());
        assert!(dollar(b"a STORE 1 +FLAGS ($Junk)\r\n").is_none());
        assert!(dollar(b"a FETCH 1:$ FLAGS\r\n").is_none());
    }

    #[test]
    fn multiappend_split() {
        let cmd = b"t APPEND \"a b\" (\\Seen) {3}\r\none {3+}\r\ntwo \"01-Jan-2020 00:00:00 +0000\" ~{5}\r\nthree\r\n";
        let parts = split_append(cmd).unwrap();
        assert_eq!(
            parts,
            vec![
                b"t APPEND \"a b\" (\\Seen) {3}\r\none\r\n".to_vec(),
                b"t APPEND \"a b\" {3+}\r\ntwo\r\n".to_vec(),
                b"t APPEND \"a b\" \"01-Jan-2020 00:00:00 +0000\" ~{5}\r\nthree\r\n".to_vec(),
            ]
        );
        // Partial: the second literal is announced, not sent yet.
        let parts = split_append(b"t APPEND INBOX {3}\r\none () {4}\r\n").unwrap();
        assert_eq!(parts[1], b"t APPEND INBOX () {4}\r\n");
        assert!(split_append(b"t APPEND INBOX {3}\r\none junk\r\n").is_none());
        assert!(split_append(b"t SELECT INBOX\r\n").is_none());
        assert!(split_append(b"t APPEND INBOX {9}\r\nshort\r\n").is_none());
    }
}
