//! The two command forms imap-codec `2.0.0-alpha.10` cannot parse: LIST
//! with RFC 5258 selection and return options (incl. RFC 5819 STATUS and RFC
//! 6154 SPECIAL-USE) and CREATE with RFC 6154 `(USE (...))`. Only tried when
//! imap-codec refused a command whose name is LIST or CREATE; every other
//! command is parsed by imap-codec.

use imap_codec::imap_types::status::StatusDataItemName;

/// A LIST command (base or extended).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListCommand {
    /// Reference name (raw).
    pub reference: Vec<u8>,
    /// Patterns (raw, several with RFC 5258).
    pub patterns: Vec<Vec<u8>>,
    /// Selection: SUBSCRIBED.
    pub subscribed: bool,
    /// Selection: RECURSIVEMATCH.
    pub recursive: bool,
    /// Selection: SPECIAL-USE.
    pub special_use_only: bool,
    /// Return: SUBSCRIBED.
    pub ret_subscribed: bool,
    /// Return: CHILDREN.
    pub ret_children: bool,
    /// Return: SPECIAL-USE.
    pub ret_special_use: bool,
    /// Return: STATUS (items).
    pub ret_status: Option<Vec<StatusDataItemName>>,
    /// Whether the extended syntax was used.
    pub extended: bool,
}

/// A parsed command of the extended forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended {
    /// LIST.
    List(ListCommand),
    /// CREATE with USE attributes.
    Create {
        /// Raw mailbox name.
        mailbox: Vec<u8>,
        /// Attribute names (with `\`).
        uses: Vec<String>,
    },
}

/// A parse failure: the message for the BAD response.
pub type ParseError = &'static str;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    Str(Vec<u8>),
    Atom(Vec<u8>),
}

fn tokenize(mut s: &[u8]) -> Result<Vec<Tok>, ParseError> {
    s = s.strip_suffix(b"\r\n").ok_or("missing CRLF")?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b' ' => i += 1,
            b'(' => {
                out.push(Tok::Open);
                i += 1
            }
            b')' => {
                out.push(Tok::Close);
                i += 1
            }
            b'"' => {
                let mut v = Vec::new();
                i += 1;
                loop {
                    match s.get(i) {
                        None => return Err("unterminated quoted string"),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            let c = *s.get(i + 1).ok_or("bad escape")?;
                            if c != b'"' && c != b'\\' {
                                return Err("bad escape");
                            }
                            v.push(c);
                            i += 2;
                        }
                        Some(b'\r') | Some(b'\n') => return Err("CR or LF in quoted string"),
                        Some(&c) => {
                            v.push(c);
                            i += 1
                        }
                    }
                }
                i += 1;
                out.push(Tok::Str(v));
            }
            b'{' | b'~' => {
                let start = i + usize::from(s[i] == b'~');
                if s.get(start) != Some(&b'{') {
                    return Err("bad literal");
                }
                let close = start
                    + s[start..]
                        .iter()
                        .position(|&b| b == b'}')
                        .ok_or("bad literal")?;
                let spec = &s[start + 1..close];
                let digits = spec.strip_suffix(b"+").unwrap_or(spec);
                let n: usize = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or("bad literal length")?;
                if s.get(close + 1..close + 3) != Some(b"\r\n") {
                    return Err("bad literal");
                }
                let data = s.get(close + 3..close + 3 + n).ok_or("short literal")?;
                out.push(Tok::Str(data.to_vec()));
                i = close + 3 + n;
            }
            _ => {
                let start = i;
                while i < s.len() && !b" ()\"{".contains(&s[i]) && s[i] >= 0x20 && s[i] != 0x7f {
                    i += 1;
                }
                if i == start {
                    return Err("invalid character");
                }
                out.push(Tok::Atom(s[start..i].to_vec()));
            }
        }
    }
    Ok(out)
}

fn upper(t: &Tok) -> Option<String> {
    match t {
        Tok::Atom(a) => Some(String::from_utf8_lossy(a).to_ascii_uppercase()),
        _ => None,
    }
}

fn string(t: Option<&Tok>) -> Result<Vec<u8>, ParseError> {
    match t {
        Some(Tok::Str(s)) | Some(Tok::Atom(s)) => Ok(s.clone()),
        _ => Err("expected a mailbox name"),
    }
}

/// Atoms inside one parenthesized list starting at `toks[*i]`.
fn atom_list(toks: &[Tok], i: &mut usize) -> Result<Vec<String>, ParseError> {
    if toks.get(*i) != Some(&Tok::Open) {
        return Err("expected (");
    }
    *i += 1;
    let mut out = Vec::new();
    loop {
        match toks.get(*i) {
            Some(Tok::Close) => {
                *i += 1;
                return Ok(out);
            }
            Some(t @ Tok::Atom(_)) => {
                out.push(upper(t).unwrap_or_default());
                *i += 1;
            }
            _ => return Err("expected an option"),
        }
    }
}

/// Parses `tag LIST ...` or `tag CREATE ...` (the whole command with CRLF).
pub fn parse(cmd: &[u8]) -> Result<Extended, ParseError> {
    let toks = tokenize(cmd)?;
    let name = toks.get(1).and_then(upper).ok_or("missing command")?;
    let mut i = 2;
    match name.as_str() {
        "LIST" => {
            let mut l = ListCommand::default();
            if toks.get(i) == Some(&Tok::Open) {
                l.extended = true;
                for o in atom_list(&toks, &mut i)? {
                    match o.as_str() {
                        "SUBSCRIBED" => l.subscribed = true,
                        "RECURSIVEMATCH" => l.recursive = true,
                        "SPECIAL-USE" => l.special_use_only = true,
                        "REMOTE" => {}
                        _ => return Err("unknown selection option"),
                    }
                }
                if l.recursive && !l.subscribed && !l.special_use_only {
                    return Err("RECURSIVEMATCH needs another selection option");
                }
            }
            l.reference = string(toks.get(i))?;
            i += 1;
            if toks.get(i) == Some(&Tok::Open) {
                l.extended = true;
                i += 1;
                while let Some(t @ (Tok::Str(_) | Tok::Atom(_))) = toks.get(i) {
                    l.patterns.push(string(Some(t))?);
                    i += 1;
                }
                if toks.get(i) != Some(&Tok::Close) || l.patterns.is_empty() {
                    return Err("bad pattern list");
                }
                i += 1;
            } else {
                l.patterns.push(string(toks.get(i))?);
                i += 1;
            }
            if let Some(t) = toks.get(i) {
                if upper(t).as_deref() != Some("RETURN") {
                    return Err("expected RETURN");
                }
                l.extended = true;
                i += 1;
                if toks.get(i) != Some(&Tok::Open) {
                    return Err("expected (");
                }
                i += 1;
                loop {
                    let Some(t) = toks.get(i) else {
                        return Err("unterminated RETURN options");
                    };
                    if *t == Tok::Close {
                        i += 1;
                        break;
                    }
                    let o = upper(t).ok_or("expected a return option")?;
                    i += 1;
                    match o.as_str() {
                        "SUBSCRIBED" => l.ret_subscribed = true,
                        "CHILDREN" => l.ret_children = true,
                        "SPECIAL-USE" => l.ret_special_use = true,
                        "STATUS" => {
                            let mut items = Vec::new();
                            for a in atom_list(&toks, &mut i)? {
                                items.push(match a.as_str() {
                                    "MESSAGES" => StatusDataItemName::Messages,
                                    "RECENT" => StatusDataItemName::Recent,
                                    "UIDNEXT" => StatusDataItemName::UidNext,
                                    "UIDVALIDITY" => StatusDataItemName::UidValidity,
                                    "UNSEEN" => StatusDataItemName::Unseen,
                                    "DELETED" => StatusDataItemName::Deleted,
                                    "SIZE" => StatusDataItemName::Size,
                                    "HIGHESTMODSEQ" => StatusDataItemName::HighestModSeq,
                                    _ => return Err("unknown STATUS item"),
                                });
                            }
                            l.ret_status = Some(items);
                        }
                        _ => return Err("unknown return option"),
                    }
                }
            }
            if i != toks.len() {
                return Err("unexpected data after LIST");
            }
            Ok(Extended::List(l))
        }
        "CREATE" => {
            let mailbox = string(toks.get(i))?;
            i += 1;
            if toks.get(i) != Some(&Tok::Open) {
                return Err("expected (");
            }
            i += 1;
            if toks.get(i).and_then(upper).as_deref() != Some("USE") {
                return Err("expected USE");
            }
            i += 1;
            let mut uses = Vec::new();
            if toks.get(i) != Some(&Tok::Open) {
                return Err("expected (");
            }
            i += 1;
            loop {
                match toks.get(i) {
                    Some(Tok::Close) => break,
                    Some(Tok::Atom(a)) => uses.push(String::from_utf8_lossy(a).into_owned()),
                    _ => return Err("expected a special-use attribute"),
                }
                i += 1;
            }
            i += 1;
            if toks.get(i) != Some(&Tok::Close) || i + 1 != toks.len() {
                return Err("unexpected data after CREATE");
            }
            Ok(Extended::Create { mailbox, uses })
        }
        _ => Err("unknown command"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_list() {
        let Extended::List(l) = parse(
            b"a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"INBOX\" {3}\r\nfoo %) RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES SIZE))\r\n",
        )
        .unwrap() else {
            panic!()
        };
        assert!(l.subscribed && l.recursive && l.extended && l.ret_children && l.ret_special_use);
        assert_eq!(
            l.patterns,
            vec![b"INBOX".to_vec(), b"foo".to_vec(), b"%".to_vec()]
        );
        assert_eq!(
            l.ret_status,
            Some(vec![StatusDataItemName::Messages, StatusDataItemName::Size])
        );
        let Extended::List(l) = parse(b"a list \"\" * return (subscribed)\r\n").unwrap() else {
            panic!()
        };
        assert!(l.ret_subscribed && !l.subscribed);
        assert!(parse(b"a LIST (RECURSIVEMATCH) \"\" *\r\n").is_err());
        assert!(parse(b"a LIST (BOGUS) \"\" *\r\n").is_err());
        assert!(parse(b"a LIST \"\" * RETURN (STATUS (FOO))\r\n").is_err());
        assert!(parse(b"a LIST \"\" * EXTRA\r\n").is_err());
        assert!(parse(b"a LIST \"\" {10}\r\nab\r\n").is_err());
    }

    #[test]
    fn create_use() {
        assert_eq!(
            parse(b"t CREATE \"Sent Items\" (USE (\\Sent))\r\n").unwrap(),
            Extended::Create {
                mailbox: b"Sent Items".to_vec(),
                uses: vec!["\\Sent".into()]
            }
        );
        assert!(parse(b"t CREATE x (FOO (\\Sent))\r\n").is_err());
        assert!(parse(b"t CREATE x (USE (\\Sent)) y\r\n").is_err());
    }
}
