//! FETCH: which data a request needs, and the data items of one message
//! (`BODY[section]<partial>` for every section form, from the raw bytes and
//! the part ranges of its [`Summary`]).

use super::backend::MessageMeta;
use super::convert;
use super::header;
use super::summary::{BodyPart, PartKind, Summary};
use aerogramme_proto::mailbox::Flag;
use imap_codec::imap_types::{
    core::{AString, LiteralMode, NString8},
    extensions::binary::Literal8,
    fetch::{MessageDataItem, MessageDataItemName, Section},
};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::LazyLock;

/// A FETCH request, analysed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Items, in request order (UID first for UID FETCH).
    pub items: Vec<MessageDataItemName<'static>>,
    /// Whether the raw message is needed.
    pub raw: bool,
    /// Whether the summary is needed.
    pub summary: bool,
    /// Whether `\Seen` is set by this FETCH.
    pub sets_seen: bool,
}

/// Analyses the requested items. `modseq` adds MODSEQ (CHANGEDSINCE).
pub fn plan(
    names: Vec<MessageDataItemName<'static>>,
    uid: bool,
    modseq: bool,
) -> Result<Plan, &'static str> {
    let mut items = Vec::new();
    if uid {
        items.push(MessageDataItemName::Uid);
    }
    let mut p = Plan {
        items: Vec::new(),
        raw: false,
        summary: false,
        sets_seen: false,
    };
    for n in names {
        match &n {
            MessageDataItemName::Binary { peek, .. } => {
                p.raw = true;
                p.summary = true;
                p.sets_seen |= !peek;
            }
            MessageDataItemName::BinarySize { .. } => {
                p.raw = true;
                p.summary = true;
            }
            MessageDataItemName::Body
            | MessageDataItemName::BodyStructure
            | MessageDataItemName::Envelope => p.summary = true,
            MessageDataItemName::BodyExt { section, peek, .. } => {
                p.raw = true;
                p.summary |= section.is_some();
                p.sets_seen |= !peek;
            }
            MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text => {
                p.raw = true;
                p.summary = true;
                p.sets_seen = true;
            }
            MessageDataItemName::Rfc822Header => {
                p.raw = true;
                p.summary = true;
            }
            _ => {}
        }
        if !items.contains(&n) {
            items.push(n);
        }
    }
    if modseq && !items.contains(&MessageDataItemName::ModSeq) {
        items.push(MessageDataItemName::ModSeq);
    }
    p.items = items;
    Ok(p)
}

fn slice(raw: &[u8], r: (u32, u32)) -> Vec<u8> {
    let a = (r.0 as usize).min(raw.len());
    let b = (r.1 as usize).clamp(a, raw.len());
    raw[a..b].to_vec()
}

fn names(list: &[AString<'_>]) -> Vec<Vec<u8>> {
    list.iter().map(|n| n.as_ref().to_vec()).collect()
}

/// The header and body ranges of the message a section is about: the top
/// level without a part, else a `message/rfc822` part's encapsulated
/// message.
fn message_of<'s>(s: &'s Summary, part: Option<&[u32]>) -> Option<&'s BodyPart> {
    match part {
        None => Some(&s.root),
        Some(p) => match &s.part(p)?.kind {
            PartKind::Message(_, inner) => Some(inner),
            _ => None,
        },
    }
}

/// The bytes of `BODY[section]` (empty when the part does not exist).
pub fn section_bytes(raw: &[u8], s: &Summary, section: Option<&Section<'_>>) -> Vec<u8> {
    let path = |p: &imap_codec::imap_types::fetch::Part| -> Vec<u32> {
        p.0.as_ref().iter().map(|n| n.get()).collect()
    };
    let got = match section {
        None => Some(raw.to_vec()),
        Some(Section::Part(p)) => s.part(&path(p)).map(|b| slice(raw, b.body)),
        Some(Section::Mime(p)) => s.part(&path(p)).map(|b| slice(raw, b.header)),
        Some(Section::Header(p)) => {
            let p = p.as_ref().map(path);
            message_of(s, p.as_deref()).map(|m| slice(raw, m.header))
        }
        Some(Section::Text(p)) => {
            let p = p.as_ref().map(path);
            message_of(s, p.as_deref()).map(|m| slice(raw, m.body))
        }
        Some(Section::HeaderFields(p, list)) | Some(Section::HeaderFieldsNot(p, list)) => {
            let not = matches!(section, Some(Section::HeaderFieldsNot(..)));
            let p = p.as_ref().map(path);
            message_of(s, p.as_deref())
                .map(|m| header::filter(&slice(raw, m.header), &names(list.as_ref()), not))
        }
    };
    got.unwrap_or_default()
}

/// A part's content with its Content-Transfer-Encoding removed (RFC 3516);
/// `None` for an encoding this server does not know (`UNKNOWN-CTE`).
pub fn decode_cte(encoding: &str, body: &[u8]) -> Option<Vec<u8>> {
    use mail_parser::decoders::{base64::base64_decode, quoted_printable::quoted_printable_decode};
    match encoding.to_ascii_lowercase().as_str() {
        "" | "7bit" | "8bit" | "binary" => Some(body.to_vec()),
        // Damaged encodings decode to what could be read, not an error.
        "base64" => Some(base64_decode(body).unwrap_or_default()),
        "quoted-printable" => Some(quoted_printable_decode(body).unwrap_or_default()),
        _ => None,
    }
}

/// The decoded bytes of `BINARY[section]`: the whole message for an empty
/// section, else the part's body decoded (multipart and message parts are
/// not encoded); empty when the part does not exist. `Err` for an unknown
/// transfer encoding.
pub fn binary_bytes(raw: &[u8], s: &Summary, section: &[NonZeroU32]) -> Result<Vec<u8>, ItemError> {
    if section.is_empty() {
        return Ok(raw.to_vec());
    }
    let path: Vec<u32> = section.iter().map(|n| n.get()).collect();
    let Some(part) = s.part(&path) else {
        return Ok(Vec::new());
    };
    let body = slice(raw, part.body);
    match part.kind {
        PartKind::Single => decode_cte(&part.encoding, &body).ok_or(ItemError::UnknownCte),
        _ => Ok(body),
    }
}

/// Writes `* seq FETCH (...)` for items that are all UID, FLAGS, MODSEQ or
/// RFC822.SIZE, byte for byte as imap-codec encodes them, without building
/// the codec's values (a STORE or `FETCH 1:* (FLAGS)` over 100k messages
/// writes 100k such lines). False, writing nothing, for another item or a
/// keyword (the codec's path then validates and encodes it).
pub fn write_meta_line(
    out: &mut Vec<u8>,
    seq: u32,
    items: &[MessageDataItemName<'_>],
    meta: &MessageMeta,
) -> bool {
    write_state_line(
        out,
        seq,
        items,
        meta.uid,
        &meta.flags,
        meta.modseq,
        meta.size,
    )
}

/// [`write_meta_line`] from the message's fields.
pub fn write_state_line(
    out: &mut Vec<u8>,
    seq: u32,
    items: &[MessageDataItemName<'_>],
    uid: u32,
    flags: &[Flag],
    modseq: u64,
    size: u32,
) -> bool {
    let simple = items.iter().all(|i| {
        matches!(
            i,
            MessageDataItemName::Uid
                | MessageDataItemName::Flags
                | MessageDataItemName::ModSeq
                | MessageDataItemName::Rfc822Size
        )
    });
    if !simple || flags.iter().any(|f| matches!(f, Flag::Keyword(_))) {
        return false;
    }
    out.extend_from_slice(b"* ");
    write_decimal(out, seq.into());
    out.extend_from_slice(b" FETCH (");
    let mut first = true;
    for name in items {
        if name == &MessageDataItemName::Uid && uid == 0 {
            continue; // as `items`: no UID 0
        }
        if !std::mem::take(&mut first) {
            out.push(b' ');
        }
        match name {
            MessageDataItemName::Uid => {
                out.extend_from_slice(b"UID ");
                write_decimal(out, uid.into());
            }
            MessageDataItemName::ModSeq => {
                out.extend_from_slice(b"MODSEQ (");
                write_decimal(out, modseq.max(1));
                out.push(b')');
            }
            MessageDataItemName::Rfc822Size => {
                out.extend_from_slice(b"RFC822.SIZE ");
                write_decimal(out, size.into());
            }
            _ => write_flags(out, flags),
        }
    }
    out.extend_from_slice(b")\r\n");
    true
}

/// `n` in decimal, without the formatting machinery (a STORE or FETCH
/// over a large mailbox writes three numbers a line).
fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `FLAGS (\Seen ...)` of system flags.
fn write_flags(out: &mut Vec<u8>, flags: &[Flag]) {
    out.extend_from_slice(b"FLAGS (");
    for (i, f) in flags.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(match f {
            Flag::Seen => b"\\Seen".as_slice(),
            Flag::Answered => b"\\Answered",
            Flag::Flagged => b"\\Flagged",
            Flag::Deleted => b"\\Deleted",
            Flag::Draft => b"\\Draft",
            Flag::Keyword(k) => k.as_str().as_bytes(),
        });
    }
    out.push(b')');
}

/// Why a message's items could not all be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemError {
    /// BINARY of a part with an unknown Content-Transfer-Encoding.
    UnknownCte,
}

/// The data items of one message (ENVELOPE, BODY and BODYSTRUCTURE borrow
/// the summary's strings).
pub fn items<'s>(
    plan: &Plan,
    meta: &MessageMeta,
    raw: Option<&[u8]>,
    summary: Option<&'s Summary>,
) -> Result<Vec<MessageDataItem<'s>>, ItemError> {
    static EMPTY: LazyLock<Summary> = LazyLock::new(|| Summary::parse(b""));
    let mut out = Vec::with_capacity(plan.items.len());
    let s = summary.unwrap_or(&EMPTY);
    let raw = raw.unwrap_or_default();
    for name in &plan.items {
        let item = match name {
            MessageDataItemName::Uid => match NonZeroU32::new(meta.uid) {
                Some(u) => MessageDataItem::Uid(u),
                None => continue,
            },
            MessageDataItemName::Flags => MessageDataItem::Flags(convert::flags_fetch(&meta.flags)),
            MessageDataItemName::InternalDate => {
                MessageDataItem::InternalDate(convert::datetime(meta.internal_date_ms))
            }
            MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(meta.size),
            MessageDataItemName::ModSeq => match NonZeroU64::new(meta.modseq.max(1)) {
                Some(m) => MessageDataItem::ModSeq(m),
                None => continue,
            },
            MessageDataItemName::Envelope => {
                MessageDataItem::Envelope(convert::envelope(&s.envelope))
            }
            MessageDataItemName::Body => {
                MessageDataItem::Body(convert::body_structure(&s.root, false))
            }
            MessageDataItemName::BodyStructure => {
                MessageDataItem::BodyStructure(convert::body_structure(&s.root, true))
            }
            MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(convert::literal(raw.to_vec())),
            MessageDataItemName::Rfc822Header => {
                MessageDataItem::Rfc822Header(convert::literal(slice(raw, s.root.header)))
            }
            MessageDataItemName::Rfc822Text => {
                MessageDataItem::Rfc822Text(convert::literal(slice(raw, s.root.body)))
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let mut data = section_bytes(raw, s, section.as_ref());
                let origin = partial.map(|(o, n)| {
                    let a = (o as usize).min(data.len());
                    let b = a.saturating_add(n.get() as usize).min(data.len());
                    data = data[a..b].to_vec();
                    o
                });
                MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin,
                    data: convert::literal(data),
                }
            }
            MessageDataItemName::Binary {
                section, partial, ..
            } => {
                let mut data = binary_bytes(raw, s, section)?;
                if let Some((o, n)) = partial {
                    let a = (*o as usize).min(data.len());
                    let b = a.saturating_add(n.get() as usize).min(data.len());
                    data = data[a..b].to_vec();
                }
                MessageDataItem::Binary {
                    section: section.clone(),
                    value: NString8::Literal8(Literal8 {
                        data: data.into(),
                        mode: LiteralMode::Sync,
                    }),
                }
            }
            MessageDataItemName::BinarySize { section } => {
                let data = binary_bytes(raw, s, section)?;
                MessageDataItem::BinarySize {
                    section: section.clone(),
                    size: data.len() as u32,
                }
            }
        };
        out.push(item);
    }
    Ok(out)
}

/// The origins of the partial BINARY items of a plan, by item index: the
/// response names them `BINARY[section]<origin>`, which imap-codec's
/// `MessageDataItem::Binary` cannot say.
pub fn binary_origins(plan: &Plan) -> Vec<(usize, u32)> {
    plan.items
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n {
            MessageDataItemName::Binary {
                partial: Some((o, _)),
                ..
            } => Some((i, *o)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::imap_types::fetch::MacroOrMessageDataItemNames;
    use imap_codec::imap_types::IntoStatic;
    use imap_codec::CommandCodec;

    const RAW: &[u8] = b"From: a@x\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\none\r\n--B\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nX-A: 1\r\n\r\ninner body\r\n--B--\r\n";

    fn names(s: &str) -> Vec<MessageDataItemName<'static>> {
        let cmd = format!("a FETCH 1 {s}\r\n");
        let (_, c) = CommandCodec::default().decode(cmd.as_bytes()).unwrap();
        let CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = c.body
        else {
            panic!()
        };
        match macro_or_item_names.into_static() {
            MacroOrMessageDataItemNames::Macro(m) => m.expand().into_static(),
            MacroOrMessageDataItemNames::MessageDataItemNames(n) => n,
        }
    }

    #[test]
    fn meta_lines_are_the_codecs_bytes() {
        use imap_codec::imap_types::response::{Data, Response};
        use imap_codec::{encode::Encoder, ResponseCodec};
        let flag_sets: [&[Flag]; 4] = [
            &[],
            &[Flag::Seen],
            &[
                Flag::Answered,
                Flag::Deleted,
                Flag::Draft,
                Flag::Flagged,
                Flag::Seen,
            ],
            &[Flag::Flagged],
        ];
        for items in [
            "(UID FLAGS)",
            "(FLAGS)",
            "(UID FLAGS MODSEQ)",
            "(FLAGS UID RFC822.SIZE MODSEQ)",
        ] {
            let plan = names(items);
            for (i, flags) in flag_sets.iter().enumerate() {
                let meta = MessageMeta {
                    uid: 40 + i as u32,
                    flags: flags.to_vec(),
                    internal_date_ms: 0,
                    size: 1234,
                    modseq: 7 * i as u64,
                };
                let mut fast = Vec::new();
                assert!(write_meta_line(&mut fast, 3 + i as u32, &plan, &meta));
                let plan = Plan {
                    items: plan.clone(),
                    raw: false,
                    summary: false,
                    sets_seen: false,
                };
                let d = Data::fetch(3 + i as u32, items_of(&plan, &meta)).unwrap();
                let codec = ResponseCodec::default().encode(&Response::Data(d)).dump();
                assert_eq!(
                    String::from_utf8_lossy(&fast),
                    String::from_utf8_lossy(&codec)
                );
            }
        }
        // Anything else goes to the codec.
        let kw = MessageMeta {
            uid: 1,
            flags: vec![Flag::parse("$Junk").unwrap()],
            internal_date_ms: 0,
            size: 1,
            modseq: 1,
        };
        let mut out = Vec::new();
        assert!(!write_meta_line(&mut out, 1, &names("(FLAGS)"), &kw));
        assert!(!write_meta_line(
            &mut out,
            1,
            &names("(FLAGS ENVELOPE)"),
            &MessageMeta {
                flags: vec![],
                ..kw
            }
        ));
        assert!(out.is_empty());
    }

    fn items_of<'a>(plan: &Plan, meta: &MessageMeta) -> Vec<MessageDataItem<'a>> {
        items(plan, meta, None, None).unwrap()
    }

    fn section(s: &str) -> String {
        let n = names(&format!("BODY.PEEK[{s}]"));
        let MessageDataItemName::BodyExt { section, .. } = &n[0] else {
            panic!()
        };
        let sum = Summary::parse(RAW);
        String::from_utf8(section_bytes(RAW, &sum, section.as_ref())).unwrap()
    }

    #[test]
    fn sections() {
        assert_eq!(section(""), String::from_utf8(RAW.to_vec()).unwrap());
        assert_eq!(
            section("HEADER"),
            "From: a@x\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        );
        assert_eq!(section("HEADER.FIELDS (subject)"), "Subject: s\r\n\r\n");
        assert_eq!(
            section("HEADER.FIELDS.NOT (subject content-type)"),
            "From: a@x\r\n\r\n"
        );
        assert_eq!(section("1"), "one");
        assert_eq!(section("1.MIME"), "Content-Type: text/plain\r\n\r\n");
        assert_eq!(section("2.HEADER"), "Subject: inner\r\nX-A: 1\r\n\r\n");
        assert_eq!(section("2.HEADER.FIELDS (X-A)"), "X-A: 1\r\n\r\n");
        assert_eq!(section("2.TEXT"), "inner body");
        assert_eq!(section("2.1"), "inner body");
        assert_eq!(section("2"), "Subject: inner\r\nX-A: 1\r\n\r\ninner body");
        assert_eq!(section("3"), "");
        assert_eq!(section("1.HEADER"), "");
        assert!(section("TEXT").starts_with("--B\r\n"));
    }

    #[test]
    fn binary() {
        let raw = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n/w==\r\n--B\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nau lait\r\n--B\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--B--\r\n";
        let s = Summary::parse(raw);
        let n = |v: u32| vec![NonZeroU32::new(v).unwrap()];
        assert_eq!(binary_bytes(raw, &s, &n(1)).unwrap(), [0, 1, 2, 255]);
        assert_eq!(
            binary_bytes(raw, &s, &n(2)).unwrap(),
            "café au lait".as_bytes()
        );
        assert!(binary_bytes(raw, &s, &n(3)).is_err());
        assert_eq!(binary_bytes(raw, &s, &[]).unwrap(), raw);
        assert!(binary_bytes(raw, &s, &n(9)).unwrap().is_empty());
        let meta = MessageMeta {
            uid: 1,
            flags: vec![],
            internal_date_ms: 0,
            size: raw.len() as u32,
            modseq: 1,
        };
        let p = plan(names("(BINARY.SIZE[1] BINARY.PEEK[1]<1.2>)"), false, false).unwrap();
        assert_eq!(binary_origins(&p), [(1, 1)]);
        let it = items(&p, &meta, Some(raw), Some(&s)).unwrap();
        assert_eq!(
            it[0],
            MessageDataItem::BinarySize {
                section: n(1),
                size: 4
            }
        );
        let p = plan(names("BINARY[3]"), false, false).unwrap();
        assert_eq!(
            items(&p, &meta, Some(raw), Some(&s)),
            Err(ItemError::UnknownCte)
        );
    }

    #[test]
    fn plans() {
        let p = plan(names("(FLAGS BODY[TEXT]<0.2>)"), true, false).unwrap();
        assert_eq!(p.items[0], MessageDataItemName::Uid);
        assert!(p.raw && p.sets_seen);
        let p = plan(names("(BODY.PEEK[1] UID)"), true, true).unwrap();
        assert!(!p.sets_seen);
        assert_eq!(p.items.len(), 3);
        assert!(plan(names("ALL"), false, false).unwrap().summary);
        assert!(plan(names("BINARY[1]"), false, false).unwrap().sets_seen);
        assert!(
            !plan(names("BINARY.PEEK[1]"), false, false)
                .unwrap()
                .sets_seen
        );
        let meta = MessageMeta {
            uid: 4,
            flags: vec![],
            internal_date_ms: 0,
            size: RAW.len() as u32,
            modseq: 3,
        };
        let p = plan(names("(BODY[1]<1.1> RFC822.SIZE)"), false, false).unwrap();
        let s = Summary::parse(RAW);
        let it = items(&p, &meta, Some(RAW), Some(&s)).unwrap();
        assert_eq!(
            it[0],
            MessageDataItem::BodyExt {
                section: Some(Section::Part(imap_codec::imap_types::fetch::Part(
                    imap_codec::imap_types::core::Vec1::from(NonZeroU32::new(1).unwrap())
                ))),
                origin: Some(1),
                data: convert::literal(b"n".to_vec()),
            }
        );
        assert_eq!(it[1], MessageDataItem::Rfc822Size(RAW.len() as u32));
    }
}
