//! Command-line parsing (RFC 2033 / RFC 5321 §4.1 syntax), sans I/O.
//!
//! A line is given without its line end. Anything malformed comes back as
//! the reply to send (`500` for an unknown or unusable command, `501` for
//! bad arguments, `555` for unsupported parameters), so the session just
//! writes it and goes on.

use super::reply::Reply;

/// BODY= parameter of MAIL FROM (RFC 6152).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Body {
    /// `7BIT` (or no parameter).
    #[default]
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
}

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `LHLO domain`.
    Lhlo(String),
    /// `MAIL FROM:<path> [SIZE=n] [BODY=…]`; `from` is `""` for `<>`.
    Mail {
        /// Reverse-path without brackets and source route.
        from: String,
        /// Declared size (RFC 1870), saturating.
        size: Option<u64>,
        /// Declared body type.
        body: Body,
    },
    /// `RCPT TO:<path>`.
    Rcpt {
        /// Forward-path without brackets and source route.
        to: String,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets of the chunk that follow the command line.
        size: u64,
        /// Last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy,
    /// `HELP [string]`.
    Help,
}

const UNKNOWN: Reply = Reply::new(500, "5.5.1", "Unrecognized command");
const NOT_LMTP: Reply = Reply::new(500, "5.5.1", "This is an LMTP server: use LHLO");
const NOT_IMPLEMENTED: Reply = Reply::new(502, "5.5.1", "Command not implemented");
const BAD_BYTES: Reply = Reply::new(500, "5.5.2", "Invalid characters in command");

fn syntax(text: &'static str) -> Reply {
    Reply::new(501, "5.5.4", text)
}

/// Parses one command line (without CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, Reply> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(BAD_BYTES);
    };
    if line.bytes().any(|b| b < 0x20 && b != b'\t') || line.contains('\u{7f}') {
        return Err(BAD_BYTES);
    }
    let (verb, args) = match line.find(' ') {
        Some(p) => (&line[..p], &line[p + 1..]),
        None => (line, ""),
    };
    if verb.len() != 4 && !verb.eq_ignore_ascii_case("STARTTLS") {
        return Err(UNKNOWN);
    }
    let verb = verb.to_ascii_uppercase();
    let args_trim = args.trim();
    match verb.as_str() {
        "LHLO" => {
            if args_trim.is_empty() {
                Err(syntax("Syntax: LHLO hostname"))
            } else {
                Ok(Command::Lhlo(args_trim.to_string()))
            }
        }
        "HELO" | "EHLO" => Err(NOT_LMTP),
        "MAIL" => parse_mail(args),
        "RCPT" => parse_rcpt(args),
        "DATA" => no_args(args_trim, Command::Data, "Syntax: DATA"),
        "BDAT" => parse_bdat(args_trim),
        "RSET" => no_args(args_trim, Command::Rset, "Syntax: RSET"),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(args_trim, Command::Quit, "Syntax: QUIT"),
        "VRFY" => {
            if args_trim.is_empty() {
                Err(syntax("Syntax: VRFY address"))
            } else {
                Ok(Command::Vrfy)
            }
        }
        "HELP" => Ok(Command::Help),
        "EXPN" | "TURN" | "AUTH" | "STARTTLS" | "ETRN" | "SEND" | "SOML" | "SAML" => {
            Err(NOT_IMPLEMENTED)
        }
        _ => Err(UNKNOWN),
    }
}

fn no_args(args: &str, cmd: Command, text: &'static str) -> Result<Command, Reply> {
    if args.is_empty() {
        Ok(cmd)
    } else {
        Err(syntax(text))
    }
}

/// Strips a case-insensitive `prefix` (`FROM:`), then optional spaces
/// (RFC 5321 forbids them, many clients send them).
fn after_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| args[keyword.len()..].trim_start_matches(' '))
}

fn parse_mail(args: &str) -> Result<Command, Reply> {
    let Some(rest) = after_keyword(args, "FROM:") else {
        return Err(syntax("Syntax: MAIL FROM:<address>"));
    };
    let (path, params) = split_path(rest).ok_or(BAD_SENDER)?;
    if !path.is_empty() {
        check_mailbox(path, false).map_err(|e| e.unwrap_or(BAD_SENDER))?;
    }
    let mut size = None;
    let mut body = None;
    for p in params.split(' ').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if k.eq_ignore_ascii_case("SIZE") {
            if size.is_some() || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax("Invalid SIZE parameter"));
            }
            size = Some(v.parse::<u64>().unwrap_or(u64::MAX));
        } else if k.eq_ignore_ascii_case("BODY") {
            if body.is_some() {
                return Err(syntax("Duplicate BODY parameter"));
            }
            body = Some(if v.eq_ignore_ascii_case("7BIT") {
                Body::SevenBit
            } else if v.eq_ignore_ascii_case("8BITMIME") {
                Body::EightBitMime
            } else {
                return Err(Reply::new(555, "5.5.4", "Unsupported BODY type"));
            });
        } else {
            return Err(Reply::new(555, "5.5.4", "Unsupported MAIL parameter"));
        }
    }
    Ok(Command::Mail {
        from: path.to_string(),
        size,
        body: body.unwrap_or_default(),
    })
}

const BAD_SENDER: Reply = Reply::new(501, "5.1.7", "Bad sender address syntax");
const BAD_RCPT: Reply = Reply::new(501, "5.1.3", "Bad recipient address syntax");
const NON_ASCII: Reply = Reply::new(553, "5.6.7", "Non-ASCII addresses are not supported");

fn parse_rcpt(args: &str) -> Result<Command, Reply> {
    let Some(rest) = after_keyword(args, "TO:") else {
        return Err(syntax("Syntax: RCPT TO:<address>"));
    };
    let (path, params) = split_path(rest).ok_or(BAD_RCPT)?;
    check_mailbox(path, true).map_err(|e| e.unwrap_or(BAD_RCPT))?;
    if params.split(' ').any(|p| !p.is_empty()) {
        return Err(Reply::new(555, "5.5.4", "Unsupported RCPT parameter"));
    }
    Ok(Command::Rcpt {
        to: path.to_string(),
    })
}

fn parse_bdat(args: &str) -> Result<Command, Reply> {
    let mut it = args.split(' ').filter(|s| !s.is_empty());
    let size = it
        .next()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| syntax("Syntax: BDAT size [LAST]"))?;
    let last = match it.next() {
        None => false,
        Some(l) if l.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(syntax("Syntax: BDAT size [LAST]")),
    };
    if it.next().is_some() {
        return Err(syntax("Syntax: BDAT size [LAST]"));
    }
    Ok(Command::Bdat { size, last })
}

/// Splits `<path> params` (or, leniently, `path params`) and removes a
/// source route (`@a,@b:`). Returns `None` on unbalanced brackets.
fn split_path(s: &str) -> Option<(&str, &str)> {
    let (inner, rest) = if let Some(body) = s.strip_prefix('<') {
        let bytes = body.as_bytes();
        let mut i = 0;
        let mut quoted = false;
        loop {
            match *bytes.get(i)? {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b'>' if !quoted => break,
                b'<' if !quoted => return None,
                _ => {}
            }
            i += 1;
        }
        (&body[..i], &body[i + 1..])
    } else {
        let (inner, rest) = match s.find(' ') {
            Some(p) => (&s[..p], &s[p..]),
            None => (s, ""),
        };
        if inner.is_empty() {
            return None;
        }
        (inner, rest)
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    let inner = match inner.strip_prefix('@') {
        Some(route) => &route[route.find(':')? + 1..],
        None => inner,
    };
    Some((inner, rest))
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Checks `local@domain` (or a bare `postmaster` when `rcpt`). `Err(None)`
/// is a plain syntax error, `Err(Some(reply))` a more specific refusal.
fn check_mailbox(path: &str, rcpt: bool) -> Result<(), Option<Reply>> {
    if !path.is_ascii() {
        return Err(Some(NON_ASCII));
    }
    let b = path.as_bytes();
    // Local part: dot-string (leniently: dots anywhere) or quoted string.
    let mut i = 0;
    if b.first() == Some(&b'"') {
        i = 1;
        loop {
            match *b.get(i).ok_or(None)? {
                b'\\' => {
                    let c = *b.get(i + 1).ok_or(None)?;
                    if !(0x20..0x7f).contains(&c) {
                        return Err(None);
                    }
                    i += 2;
                }
                b'"' => {
                    i += 1;
                    break;
                }
                c if (0x20..0x7f).contains(&c) => i += 1,
                _ => return Err(None),
            }
        }
    } else {
        while i < b.len() && (is_atext(b[i]) || b[i] == b'.') {
            i += 1;
        }
        if i == 0 {
            return Err(None);
        }
    }
    if i == b.len() {
        return if rcpt && path.eq_ignore_ascii_case("postmaster") {
            Ok(())
        } else {
            Err(None)
        };
    }
    if b[i] != b'@' {
        return Err(None);
    }
    let domain = &path[i + 1..];
    if let Some(lit) = domain.strip_prefix('[') {
        let lit = lit.strip_suffix(']').ok_or(None)?;
        if lit.is_empty()
            || !lit
                .bytes()
                .all(|c| (0x21..0x7f).contains(&c) && !b"[]\\".contains(&c))
        {
            return Err(None);
        }
        return Ok(());
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty()
        || domain.len() > 255
        || !domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
    {
        return Err(None);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> (u16, Option<&'static str>) {
        let r = parse_command(line.as_bytes()).unwrap_err();
        (r.code, r.status)
    }

    #[test]
    fn simple_commands() {
        assert_eq!(
            parse_command(b"LHLO mx.example.org"),
            Ok(Command::Lhlo("mx.example.org".into()))
        );
        assert_eq!(parse_command(b"lhlo  x "), Ok(Command::Lhlo("x".into())));
        assert_eq!(parse_command(b"DATA"), Ok(Command::Data));
        assert_eq!(parse_command(b"data"), Ok(Command::Data));
        assert_eq!(parse_command(b"RSET"), Ok(Command::Rset));
        assert_eq!(parse_command(b"NOOP hello"), Ok(Command::Noop));
        assert_eq!(parse_command(b"QUIT"), Ok(Command::Quit));
        assert_eq!(parse_command(b"VRFY bob"), Ok(Command::Vrfy));
        assert_eq!(parse_command(b"HELP"), Ok(Command::Help));
    }

    #[test]
    fn refusals() {
        assert_eq!(code("HELO x"), (500, Some("5.5.1")));
        assert_eq!(code("EHLO x"), (500, Some("5.5.1")));
        assert_eq!(code("LHLO"), (501, Some("5.5.4")));
        assert_eq!(code("DATA x"), (501, Some("5.5.4")));
        assert_eq!(code("VRFY"), (501, Some("5.5.4")));
        assert_eq!(code("EXPN list"), (502, Some("5.5.1")));
        assert_eq!(code("STARTTLS"), (502, Some("5.5.1")));
        assert_eq!(code("XYZZY"), (500, Some("5.5.1")));
        assert_eq!(code(""), (500, Some("5.5.1")));
        assert_eq!(code("FOOB"), (500, Some("5.5.1")));
        assert_eq!(code("NOOP \u{1}"), (500, Some("5.5.2")));
        assert_eq!(
            parse_command(b"NOOP \xff\xfe").unwrap_err().status,
            Some("5.5.2")
        );
    }

    #[test]
    fn mail_from() {
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME"),
            Ok(Command::Mail {
                from: "a@b.c".into(),
                size: Some(1000),
                body: Body::EightBitMime
            })
        );
        assert_eq!(
            parse_command(b"mail from: <>"),
            Ok(Command::Mail {
                from: "".into(),
                size: None,
                body: Body::SevenBit
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<@r1.x,@r2.y:a@b.c> body=7bit"),
            Ok(Command::Mail {
                from: "a@b.c".into(),
                size: None,
                body: Body::SevenBit
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b> SIZE=99999999999999999999999"),
            Ok(Command::Mail {
                from: "a@b".into(),
                size: Some(u64::MAX),
                body: Body::SevenBit
            })
        );
        assert_eq!(code("MAIL FROM:<a@b> SIZE=x"), (501, Some("5.5.4")));
        assert_eq!(code("MAIL FROM:<a@b> SIZE=1 SIZE=2"), (501, Some("5.5.4")));
        assert_eq!(
            code("MAIL FROM:<a@b> BODY=BINARYMIME"),
            (555, Some("5.5.4"))
        );
        assert_eq!(code("MAIL FROM:<a@b> SMTPUTF8"), (555, Some("5.5.4")));
        assert_eq!(code("MAIL FROM:<a@b"), (501, Some("5.1.7")));
        assert_eq!(code("MAIL FROM:<a b@c>"), (501, Some("5.1.7")));
        assert_eq!(code("MAIL FROM:<a@b>x"), (501, Some("5.1.7")));
        assert_eq!(code("MAIL TO:<a@b>"), (501, Some("5.5.4")));
        assert_eq!(code("MAIL"), (501, Some("5.5.4")));
        assert_eq!(code("MAIL FROM:"), (501, Some("5.1.7")));
        assert_eq!(code("MAIL FROM: "), (501, Some("5.1.7")));
        assert_eq!(code("MAIL FROM:<postmaster>"), (501, Some("5.1.7")));
    }

    #[test]
    fn rcpt_to() {
        let to = |s: &str| match parse_command(s.as_bytes()) {
            Ok(Command::Rcpt { to }) => to,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(to("RCPT TO:<alice@example.org>"), "alice@example.org");
        assert_eq!(to("rcpt to:alice+x@example.org"), "alice+x@example.org");
        assert_eq!(to("RCPT TO:<Postmaster>"), "Postmaster");
        assert_eq!(to("RCPT TO:<\"a b>\"@x.y>"), "\"a b>\"@x.y");
        assert_eq!(to("RCPT TO:<u@[127.0.0.1]>"), "u@[127.0.0.1]");
        assert_eq!(to("RCPT TO:<first..last@x.y.>"), "first..last@x.y.");
        assert_eq!(code("RCPT TO:<>"), (501, Some("5.1.3")));
        assert_eq!(code("RCPT TO:<a@>"), (501, Some("5.1.3")));
        assert_eq!(code("RCPT TO:<a@b..c>"), (501, Some("5.1.3")));
        assert_eq!(code("RCPT TO:<bob>"), (501, Some("5.1.3")));
        assert_eq!(code("RCPT TO:<\"open@x.y>"), (501, Some("5.1.3")));
        assert_eq!(code("RCPT TO:<a@b> NOTIFY=NEVER"), (555, Some("5.5.4")));
        assert_eq!(code("RCPT TO:<jöé@x.y>"), (553, Some("5.6.7")));
        assert_eq!(code("RCPT FROM:<a@b>"), (501, Some("5.5.4")));
    }

    #[test]
    fn bdat() {
        assert_eq!(
            parse_command(b"BDAT 100"),
            Ok(Command::Bdat {
                size: 100,
                last: false
            })
        );
        assert_eq!(
            parse_command(b"bdat 0 last"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(code("BDAT"), (501, Some("5.5.4")));
        assert_eq!(code("BDAT -1"), (501, Some("5.5.4")));
        assert_eq!(code("BDAT 1 FIRST"), (501, Some("5.5.4")));
        assert_eq!(code("BDAT 1 LAST x"), (501, Some("5.5.4")));
        assert_eq!(code("BDAT 99999999999999999999999"), (501, Some("5.5.4")));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz over short lines.
        let alphabet: &[u8] = b"<>@\":\\ .+=,[]aZ9MAILFROMRCPTTOBDATSIZE\x00\xff\xc3\xa9\t";
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let mut line = Vec::with_capacity(len + 10);
            let prefix: &[&[u8]] = &[b"MAIL FROM:", b"RCPT TO:", b"BDAT ", b"LHLO ", b""];
            line.extend_from_slice(prefix[(x >> 40) as usize % prefix.len()]);
            let mut y = x;
            for _ in 0..len {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                line.push(alphabet[(y >> 33) as usize % alphabet.len()]);
            }
            let _ = parse_command(&line);
        }
    }
}
