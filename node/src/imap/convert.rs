//! Conversions between the store's values (flags, dates, summary parts)
//! and imap-types values, which imap-codec then encodes.

use super::address::Address;
use super::summary::{BodyPart, Envelope, PartKind};
use aerogramme_proto::mailbox::Flag;
use chrono::{FixedOffset, TimeZone};
use imap_codec::imap_types::{
    body::{
        BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
        SinglePartExtensionData, SpecificFields,
    },
    core::{Atom, IString, Literal, NString, Text, Vec1},
    datetime::DateTime,
    envelope,
    flag::{Flag as IFlag, FlagFetch, FlagPerm},
};

/// A store flag as IMAP writes it.
pub fn flag(f: &Flag) -> Option<IFlag<'static>> {
    Some(match f {
        Flag::Seen => IFlag::Seen,
        Flag::Answered => IFlag::Answered,
        Flag::Flagged => IFlag::Flagged,
        Flag::Deleted => IFlag::Deleted,
        Flag::Draft => IFlag::Draft,
        Flag::Keyword(k) => IFlag::Keyword(Atom::try_from(k.as_str().to_owned()).ok()?),
    })
}

/// Flags for a FETCH response.
pub fn flags_fetch(flags: &[Flag]) -> Vec<FlagFetch<'static>> {
    flags.iter().filter_map(flag).map(FlagFetch::Flag).collect()
}

/// An IMAP flag as the store takes it: `Ok(None)` for `\Recent` (ignored),
/// an error for unknown system flags.
pub fn flag_from(f: &IFlag<'_>) -> Result<Option<Flag>, String> {
    let s = f.to_string();
    if s.eq_ignore_ascii_case("\\Recent") {
        return Ok(None);
    }
    Flag::parse(&s).map(Some).map_err(|e| e.to_string())
}

/// Flags of STORE or APPEND.
pub fn flags_from(fs: &[IFlag<'_>]) -> Result<Vec<Flag>, String> {
    let mut out = Vec::new();
    for f in fs {
        if let Some(f) = flag_from(f)? {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The FLAGS and PERMANENTFLAGS of SELECT: system flags and the keywords in
/// use.
pub fn mailbox_flags(keywords: &[Flag]) -> (Vec<IFlag<'static>>, Vec<FlagPerm<'static>>) {
    let mut all: Vec<Flag> = Flag::SYSTEM.to_vec();
    for k in keywords {
        if !all.contains(k) {
            all.push(k.clone());
        }
    }
    let flags: Vec<IFlag<'static>> = all.iter().filter_map(flag).collect();
    let mut perm: Vec<FlagPerm<'static>> = flags.iter().cloned().map(FlagPerm::Flag).collect();
    perm.push(FlagPerm::Asterisk);
    (flags, perm)
}

/// Human text for a response (never empty, no CR/LF).
pub fn text(s: &str) -> Text<'static> {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = if clean.trim().is_empty() {
        "done".to_string()
    } else {
        clean
    };
    Text::try_from(clean).unwrap_or_else(|_| Text::unvalidated("done"))
}

/// A string (quoted when it can be, else a literal; NUL bytes replaced),
/// borrowing `b` unless it holds a NUL.
pub fn istr(b: &[u8]) -> IString<'_> {
    let unusable = || IString::Literal(Literal::unvalidated(Vec::new()));
    if b.contains(&0) {
        let v: Vec<u8> = b.iter().map(|&c| if c == 0 { 0x80 } else { c }).collect();
        return IString::try_from(v).unwrap_or_else(|_| unusable());
    }
    IString::try_from(b).unwrap_or_else(|_| unusable())
}

/// NIL or a string.
pub fn nstr(b: Option<&[u8]>) -> NString<'_> {
    NString(b.map(istr))
}

/// Message data, always as a literal (NUL bytes replaced by 0x80).
pub fn literal(mut v: Vec<u8>) -> NString<'static> {
    for c in v.iter_mut() {
        if *c == 0 {
            *c = 0x80;
        }
    }
    NString(Some(IString::Literal(Literal::unvalidated(v))))
}

/// INTERNALDATE from milliseconds since the epoch (shown in UTC).
pub fn datetime(ms: i64) -> DateTime {
    let secs = ms.div_euclid(1000).clamp(0, 253_402_300_799);
    let utc = FixedOffset::east_opt(0).expect("zero offset");
    let dt = utc
        .timestamp_opt(secs, 0)
        .single()
        .unwrap_or_else(|| utc.timestamp_opt(0, 0).single().expect("epoch"));
    DateTime::try_from(dt)
        .unwrap_or_else(|_| DateTime::unvalidated(utc.timestamp_opt(0, 0).single().expect("epoch")))
}

/// Milliseconds since the epoch of an IMAP date-time.
pub fn datetime_ms(d: &DateTime) -> i64 {
    d.as_ref().timestamp_millis()
}

fn addresses(list: &[Address]) -> Vec<envelope::Address<'_>> {
    list.iter()
        .map(|a| envelope::Address {
            name: nstr(a.name.as_deref()),
            adl: nstr(a.adl.as_deref()),
            mailbox: nstr(a.mailbox.as_deref()),
            host: nstr(a.host.as_deref()),
        })
        .collect()
}

/// ENVELOPE (borrowing the summary's strings).
pub fn envelope(e: &Envelope) -> envelope::Envelope<'_> {
    envelope::Envelope {
        date: nstr(e.date.as_deref()),
        subject: nstr(e.subject.as_deref()),
        from: addresses(&e.from),
        sender: addresses(&e.sender),
        reply_to: addresses(&e.reply_to),
        to: addresses(&e.to),
        cc: addresses(&e.cc),
        bcc: addresses(&e.bcc),
        in_reply_to: nstr(e.in_reply_to.as_deref()),
        message_id: nstr(e.message_id.as_deref()),
    }
}

fn params(p: &[(String, String)]) -> Vec<(IString<'_>, IString<'_>)> {
    p.iter()
        .map(|(k, v)| (istr(k.as_bytes()), istr(v.as_bytes())))
        .collect()
}

fn disposition(p: &BodyPart) -> Disposition<'_> {
    Disposition {
        disposition: p
            .disposition
            .as_ref()
            .map(|(d, ps)| (istr(d.as_bytes()), params(ps))),
        tail: Some(Language {
            language: p.language.iter().map(|l| istr(l.as_bytes())).collect(),
            tail: Some(Location {
                location: nstr(p.location.as_deref()),
                extensions: Vec::new(),
            }),
        }),
    }
}

/// BODYSTRUCTURE (`extended`) or BODY (borrowing the summary's strings).
pub fn body_structure(p: &BodyPart, extended: bool) -> BodyStructure<'_> {
    match &p.kind {
        PartKind::Multipart(children) if !children.is_empty() => {
            let bodies: Vec<BodyStructure<'_>> = children
                .iter()
                .map(|c| body_structure(c, extended))
                .collect();
            BodyStructure::Multi {
                bodies: Vec1::try_from(bodies).unwrap_or_else(|_| Vec1::from(leaf(p, extended))),
                subtype: istr(p.subtype.as_bytes()),
                extension_data: extended.then(|| MultiPartExtensionData {
                    parameter_list: params(&p.params),
                    tail: Some(disposition(p)),
                }),
            }
        }
        _ => leaf(p, extended),
    }
}

fn leaf(p: &BodyPart, extended: bool) -> BodyStructure<'_> {
    let basic = BasicFields {
        parameter_list: params(&p.params),
        id: nstr(p.id.as_deref()),
        description: nstr(p.description.as_deref()),
        content_transfer_encoding: istr(p.encoding.as_bytes()),
        size: p.size(),
    };
    let specific = match &p.kind {
        PartKind::Message(env, inner) if p.subtype == "rfc822" => SpecificFields::Message {
            envelope: Box::new(envelope(env)),
            body_structure: Box::new(body_structure(inner, extended)),
            number_of_lines: p.lines,
        },
        _ if p.media_type == "text" => SpecificFields::Text {
            subtype: istr(p.subtype.as_bytes()),
            number_of_lines: p.lines,
        },
        _ => SpecificFields::Basic {
            r#type: istr(p.media_type.as_bytes()),
            subtype: istr(p.subtype.as_bytes()),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: nstr(p.md5.as_deref()),
            tail: Some(disposition(p)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::summary::Summary;
    use imap_codec::encode::Encoder;
    use imap_codec::imap_types::fetch::MessageDataItem;
    use imap_codec::imap_types::response::{Data, Response};
    use imap_codec::ResponseCodec;

    fn enc(items: Vec<MessageDataItem<'_>>) -> String {
        let r = Response::Data(Data::Fetch {
            seq: std::num::NonZeroU32::new(1).unwrap(),
            items: Vec1::try_from(items).unwrap(),
        });
        String::from_utf8(ResponseCodec::default().encode(&r).dump()).unwrap()
    }

    #[test]
    fn encodes_bodystructure_and_envelope() {
        let raw = b"From: Ann <a@x>\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B\r\nContent-Type: image/png; name=p.png\r\nContent-Disposition: attachment; filename=p.png\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--B--\r\n";
        let s = Summary::parse(raw);
        assert_eq!(
            enc(vec![MessageDataItem::BodyStructure(body_structure(&s.root, true))]),
            "* 1 FETCH (BODYSTRUCTURE ((\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 1 NIL NIL NIL NIL)(\"image\" \"png\" (\"name\" \"p.png\") NIL NIL \"base64\" 4 NIL (\"attachment\" (\"filename\" \"p.png\")) NIL NIL) \"mixed\" (\"boundary\" \"B\") NIL NIL NIL))\r\n"
        );
        assert_eq!(
            enc(vec![MessageDataItem::Body(body_structure(&s.root, false))]),
            "* 1 FETCH (BODY ((\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 1)(\"image\" \"png\" (\"name\" \"p.png\") NIL NIL \"base64\" 4) \"mixed\"))\r\n"
        );
        assert_eq!(
            enc(vec![MessageDataItem::Envelope(envelope(&s.envelope))]),
            "* 1 FETCH (ENVELOPE (NIL \"hi\" ((\"Ann\" NIL \"a\" \"x\")) ((\"Ann\" NIL \"a\" \"x\")) ((\"Ann\" NIL \"a\" \"x\")) NIL NIL NIL NIL NIL))\r\n"
        );
    }

    #[test]
    fn flags_and_dates() {
        let fs = flags_from(&[
            IFlag::Seen,
            IFlag::try_from("$Junk").unwrap(),
            IFlag::try_from("\\Recent").unwrap(),
        ])
        .unwrap();
        assert_eq!(fs, vec![Flag::Seen, Flag::keyword("$Junk").unwrap()]);
        assert!(flags_from(&[IFlag::try_from("\\Bogus").unwrap()]).is_err());
        let d = datetime(1_000_000_000_000);
        assert_eq!(datetime_ms(&d), 1_000_000_000_000);
        assert_eq!(text("a\r\nb").inner(), "a  b");
    }
}
