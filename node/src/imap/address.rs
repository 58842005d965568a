//! RFC 5322 address lists as IMAP's ENVELOPE wants them: raw text kept
//! (RFC 2047 encoded words are not decoded), display names unquoted, groups
//! marked the RFC 3501 way (a start entry whose host is NIL, an end entry of
//! all NILs), route addresses' source routes in `adl`.

use serde::{Deserialize, Serialize};

/// One ENVELOPE address; `None` is NIL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Display name.
    pub name: Option<Vec<u8>>,
    /// Source route (obsolete).
    pub adl: Option<Vec<u8>>,
    /// Local part, or the group name at the start of a group.
    pub mailbox: Option<Vec<u8>>,
    /// Domain; NIL marks group syntax.
    pub host: Option<Vec<u8>>,
}

/// Host given to an address without a domain (as UW-IMAP and Dovecot do).
pub const MISSING_HOST: &[u8] = b".MISSING-HOST-NAME.";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(Vec<u8>),
    Quoted(Vec<u8>),
    Comment(Vec<u8>),
    Special(u8),
}

fn tokenize(s: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | b')' => i += 1,
            b'"' => {
                let mut v = Vec::new();
                i += 1;
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    if s[i] != b'\r' && s[i] != b'\n' {
                        v.push(s[i]);
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Quoted(v));
            }
            b'(' => {
                let mut depth = 0usize;
                let mut v = Vec::new();
                while i < s.len() {
                    match s[i] {
                        b'\\' if i + 1 < s.len() => {
                            i += 1;
                            v.push(s[i]);
                        }
                        b'(' => {
                            if depth > 0 {
                                v.push(b'(');
                            }
                            depth += 1;
                        }
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                            v.push(b')');
                        }
                        b'\r' | b'\n' => {}
                        b => v.push(b),
                    }
                    i += 1;
                }
                out.push(Tok::Comment(v));
            }
            b'<' | b'>' | b'@' | b',' | b';' | b':' | b'.' | b'[' | b']' => {
                if c == b'[' {
                    // A domain literal stays one word.
                    let end = s[i..].iter().position(|&b| b == b']').map(|p| i + p + 1);
                    let end = end.unwrap_or(s.len());
                    out.push(Tok::Word(s[i..end].to_vec()));
                    i = end;
                } else {
                    out.push(Tok::Special(c));
                    i += 1;
                }
            }
            _ => {
                let start = i;
                while i < s.len() && !b" \t\r\n\"()<>@,;:.[]".contains(&s[i]) {
                    i += 1;
                }
                out.push(Tok::Word(s[start..i].to_vec()));
            }
        }
    }
    out
}

/// Parses an address-list header value.
pub fn parse_list(value: &[u8]) -> Vec<Address> {
    let toks = tokenize(value);
    let mut p = Parser { toks, i: 0 };
    let mut out = Vec::new();
    p.list(&mut out, false);
    out
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn is_special(&self, c: u8) -> bool {
        self.peek() == Some(&Tok::Special(c))
    }

    /// Addresses until the end (or `;` inside a group).
    fn list(&mut self, out: &mut Vec<Address>, in_group: bool) {
        while self.i < self.toks.len() {
            if self.is_special(b',') {
                self.i += 1;
                continue;
            }
            if in_group && self.is_special(b';') {
                return;
            }
            let before = self.i;
            self.address(out, in_group);
            if self.i == before {
                self.i += 1; // never loop on a stray token
            }
        }
    }

    fn address(&mut self, out: &mut Vec<Address>, in_group: bool) {
        // Collect a phrase (or an addr-spec) up to a delimiter.
        let start = self.i;
        while let Some(t) = self.peek() {
            match t {
                Tok::Special(b'<') | Tok::Special(b',') | Tok::Special(b';') => break,
                Tok::Special(b':') if !in_group => break,
                _ => self.i += 1,
            }
        }
        let phrase: Vec<Tok> = self.toks[start..self.i].to_vec();
        match self.peek() {
            Some(Tok::Special(b':')) => {
                self.i += 1;
                out.push(Address {
                    name: None,
                    adl: None,
                    mailbox: Some(join_phrase(&phrase)),
                    host: None,
                });
                self.list(out, true);
                if self.is_special(b';') {
                    self.i += 1;
                }
                out.push(Address::default());
            }
            Some(Tok::Special(b'<')) => {
                self.i += 1;
                let rstart = self.i;
                while let Some(t) = self.peek() {
                    if *t == Tok::Special(b'>') {
                        break;
                    }
                    self.i += 1;
                }
                let route: Vec<Tok> = self.toks[rstart..self.i].to_vec();
                if self.is_special(b'>') {
                    self.i += 1;
                }
                // Comments after the address are not part of the name.
                while matches!(self.peek(), Some(Tok::Comment(_))) {
                    self.i += 1;
                }
                let name = phrase_words(&phrase);
                let (adl, spec) = split_route(&route);
                let (mailbox, host) = addr_spec(spec);
                if mailbox.is_none() && host.is_none() && name.is_none() {
                    return;
                }
                out.push(Address {
                    name,
                    adl,
                    mailbox,
                    host,
                });
            }
            _ => {
                if phrase.is_empty() {
                    return;
                }
                let comment = phrase.iter().rev().find_map(|t| match t {
                    Tok::Comment(c) if !c.is_empty() => Some(c.clone()),
                    _ => None,
                });
                let (mailbox, host) = addr_spec(&phrase);
                if mailbox.is_none() && host.is_none() {
                    return;
                }
                out.push(Address {
                    name: comment,
                    adl: None,
                    mailbox,
                    host,
                });
            }
        }
    }
}

/// Display name: words joined by single spaces, comments dropped.
fn phrase_words(toks: &[Tok]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut prev_dot = false;
    for t in toks {
        let (w, is_dot) = match t {
            Tok::Word(w) | Tok::Quoted(w) => (w.as_slice(), false),
            Tok::Special(b'.') => (&b"."[..], true),
            Tok::Special(c) => (std::slice::from_ref(c), false),
            Tok::Comment(_) => continue,
        };
        if !out.is_empty() && !is_dot && !prev_dot {
            out.push(b' ');
        }
        out.extend_from_slice(w);
        prev_dot = is_dot;
    }
    (!out.is_empty()).then_some(out)
}

fn join_phrase(toks: &[Tok]) -> Vec<u8> {
    phrase_words(toks).unwrap_or_default()
}

/// `@a,@b:` source route before the addr-spec of a route address.
fn split_route(toks: &[Tok]) -> (Option<Vec<u8>>, &[Tok]) {
    let Some(colon) = toks.iter().position(|t| *t == Tok::Special(b':')) else {
        return (None, toks);
    };
    let mut adl = Vec::new();
    for t in &toks[..colon] {
        match t {
            Tok::Word(w) => adl.extend_from_slice(w),
            Tok::Special(c) => adl.push(*c),
            _ => {}
        }
    }
    ((!adl.is_empty()).then_some(adl), &toks[colon + 1..])
}

/// local@domain from tokens (comments ignored; quoted local parts keep
/// their quotes).
fn addr_spec(toks: &[Tok]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let at = toks.iter().rposition(|t| *t == Tok::Special(b'@'));
    let (local, domain) = match at {
        Some(a) => (&toks[..a], Some(&toks[a + 1..])),
        None => (toks, None),
    };
    let glue = |ts: &[Tok], quote: bool| {
        let mut v = Vec::new();
        for t in ts {
            match t {
                Tok::Word(w) => v.extend_from_slice(w),
                Tok::Quoted(w) if quote => {
                    v.push(b'"');
                    v.extend_from_slice(w);
                    v.push(b'"');
                }
                Tok::Quoted(w) => v.extend_from_slice(w),
                Tok::Special(c) => v.push(*c),
                Tok::Comment(_) => {}
            }
        }
        v
    };
    let mailbox = glue(local, true);
    let host = domain.map(|d| glue(d, false)).filter(|h| !h.is_empty());
    if mailbox.is_empty() && host.is_none() {
        return (None, None);
    }
    (
        Some(mailbox),
        Some(host.unwrap_or_else(|| MISSING_HOST.to_vec())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: Option<&str>, mailbox: &str, host: &str) -> Address {
        Address {
            name: name.map(|n| n.as_bytes().to_vec()),
            adl: None,
            mailbox: Some(mailbox.as_bytes().to_vec()),
            host: Some(host.as_bytes().to_vec()),
        }
    }

    #[test]
    fn plain_and_named() {
        assert_eq!(parse_list(b"a@b.c"), vec![a(None, "a", "b.c")]);
        assert_eq!(
            parse_list(b"\"Doe, John\" <j@x.org>, Mary Smith <m@y>"),
            vec![
                a(Some("Doe, John"), "j", "x.org"),
                a(Some("Mary Smith"), "m", "y")
            ]
        );
        assert_eq!(
            parse_list(b"=?utf-8?q?J=C3=B6rg?= <j@x>"),
            vec![a(Some("=?utf-8?q?J=C3=B6rg?="), "j", "x")]
        );
        assert_eq!(
            parse_list(b"j.doe@x (John Doe)"),
            vec![a(Some("John Doe"), "j.doe", "x")]
        );
        assert_eq!(
            parse_list(b"\"quoted local\"@x"),
            vec![a(None, "\"quoted local\"", "x")]
        );
        assert_eq!(
            parse_list(b"nobody"),
            vec![a(None, "nobody", ".MISSING-HOST-NAME.")]
        );
        assert_eq!(parse_list(b""), vec![]);
        assert_eq!(parse_list(b" , ,"), vec![]);
    }

    #[test]
    fn groups_and_routes() {
        let got = parse_list(b"Team: a@x, B <b@y>; c@z");
        assert_eq!(
            got,
            vec![
                Address {
                    mailbox: Some(b"Team".to_vec()),
                    ..Default::default()
                },
                a(None, "a", "x"),
                a(Some("B"), "b", "y"),
                Address::default(),
                a(None, "c", "z"),
            ]
        );
        assert_eq!(
            parse_list(b"undisclosed-recipients:;"),
            vec![
                Address {
                    mailbox: Some(b"undisclosed-recipients".to_vec()),
                    ..Default::default()
                },
                Address::default()
            ]
        );
        let r = parse_list(b"<@relay.a,@relay.b:u@h>");
        assert_eq!(r[0].adl.as_deref(), Some(&b"@relay.a,@relay.b"[..]));
        assert_eq!(r[0].mailbox.as_deref(), Some(&b"u"[..]));
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            &b"<<<>>>"[..],
            b"\"unterminated",
            b"(unterminated",
            b"a@",
            b"@b",
            b":;:;",
            b"))((",
            b"[",
            b"\\",
        ] {
            let _ = parse_list(s);
        }
    }
}
