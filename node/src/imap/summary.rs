//! A message's [`Summary`]: its ENVELOPE, its body structure (with the byte
//! ranges of every part, so that `BODY[section]` is cut from the raw bytes
//! without parsing again) and its `Date:`. Computed once from the raw bytes
//! with mail-parser; serializable (postcard) so a backend can keep it, e.g.
//! encrypted next to the blob as the design's "summary".

use super::address::{self, Address};
use super::header;
use mail_parser::{HeaderName, HeaderValue, MessageParser, PartType};
use serde::{Deserialize, Serialize};

/// RFC 3501 ENVELOPE; every `None` is NIL. Strings are raw header text,
/// unfolded (RFC 2047 encoded words are kept, as clients expect).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// `Date:`
    pub date: Option<Vec<u8>>,
    /// `Subject:`
    pub subject: Option<Vec<u8>>,
    /// `From:`
    pub from: Vec<Address>,
    /// `Sender:` (defaults to From)
    pub sender: Vec<Address>,
    /// `Reply-To:` (defaults to From)
    pub reply_to: Vec<Address>,
    /// `To:`
    pub to: Vec<Address>,
    /// `Cc:`
    pub cc: Vec<Address>,
    /// `Bcc:`
    pub bcc: Vec<Address>,
    /// `In-Reply-To:`
    pub in_reply_to: Option<Vec<u8>>,
    /// `Message-ID:`
    pub message_id: Option<Vec<u8>>,
}

/// What a part holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartKind {
    /// A leaf.
    Single,
    /// `multipart/*` with its children.
    Multipart(Vec<BodyPart>),
    /// `message/rfc822`: the encapsulated message's envelope and body.
    /// The body's `header` range is the encapsulated message's header.
    Message(Box<Envelope>, Box<BodyPart>),
}

/// One MIME part with what BODYSTRUCTURE says of it and where it lies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyPart {
    /// Byte range of the part's header block, blank line included (for the
    /// top level: the message header).
    pub header: (u32, u32),
    /// Byte range of the part's body.
    pub body: (u32, u32),
    /// Media type, lower case (`text`).
    pub media_type: String,
    /// Media subtype, lower case (`plain`).
    pub subtype: String,
    /// Content-Type parameters (RFC 2231 decoded).
    pub params: Vec<(String, String)>,
    /// Content-ID.
    pub id: Option<Vec<u8>>,
    /// Content-Description.
    pub description: Option<Vec<u8>>,
    /// Content-Transfer-Encoding (default `7bit`).
    pub encoding: String,
    /// Lines of the body (text and message parts).
    pub lines: u32,
    /// Content-MD5.
    pub md5: Option<Vec<u8>>,
    /// Content-Disposition and its parameters.
    pub disposition: Option<(String, Vec<(String, String)>)>,
    /// Content-Language tags.
    pub language: Vec<String>,
    /// Content-Location.
    pub location: Option<Vec<u8>>,
    /// Children or encapsulated message.
    pub kind: PartKind,
}

impl BodyPart {
    /// Size of the body in octets.
    pub fn size(&self) -> u32 {
        self.body.1.saturating_sub(self.body.0)
    }
}

/// What IMAP needs to answer FETCH ENVELOPE / BODY / BODYSTRUCTURE and
/// `BODY[section]` without parsing the message again. What SEARCH compares
/// is apart, in [`SearchFields`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Version of this layout (bump when the computation changes, so cached
    /// summaries are recomputed).
    pub version: u8,
    /// The top-level envelope.
    pub envelope: Envelope,
    /// The top-level body (its `header` is the message header).
    pub root: BodyPart,
}

/// Layout version of [`Summary`] and [`SearchFields`].
pub const SUMMARY_VERSION: u8 = 3;

/// The top-level header fields as SEARCH compares them, and the `Date:`
/// day: names and values lower case, values decoded (RFC 2047, addresses
/// as `name <addr>`). SEARCH FROM/TO/CC/BCC/SUBJECT/HEADER/SENT* read
/// these, not the message. Compact: every name and value back to back in
/// one string, so that decoding one is two allocations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchFields {
    /// Version of this layout ([`SUMMARY_VERSION`]).
    pub version: u8,
    /// The `Date:` header's calendar day in its own time zone, as days
    /// since 1970-01-01 (for SENTBEFORE, SENTON, SENTSINCE).
    pub sent_day: Option<i64>,
    /// Names and values back to back.
    text: String,
    /// Per field, where its name ends and where its value ends in `text`
    /// (the name starts where the previous value ended).
    ends: Vec<(u32, u32)>,
}

/// The fields SEARCH FROM, TO, CC, BCC and SUBJECT compare: what a
/// backend may keep in memory (see [`SearchFields::common`]).
pub const COMMON_FIELDS: [&str; 5] = ["from", "to", "cc", "bcc", "subject"];

impl SearchFields {
    /// From (name, value) pairs, both already lower case.
    pub fn from_pairs<'a>(
        sent_day: Option<i64>,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut f = SearchFields {
            version: SUMMARY_VERSION,
            sent_day,
            text: String::new(),
            ends: Vec::new(),
        };
        for (n, v) in pairs {
            f.text.push_str(n);
            let n_end = f.text.len() as u32;
            f.text.push_str(v);
            f.ends.push((n_end, f.text.len() as u32));
        }
        f.text.shrink_to_fit();
        f.ends.shrink_to_fit();
        f
    }

    /// The fields of a raw message's header (its `Date:` day included).
    pub fn parse(raw: &[u8]) -> Self {
        summarize(raw).1
    }

    /// Every (name, value), in header order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        self.ends.iter().filter_map(move |&(n, v)| {
            let (n, v) = (n as usize, v as usize);
            let name = self.text.get(start..n)?;
            let value = self.text.get(n..v)?;
            start = v;
            Some((name, value))
        })
    }

    /// Only the [`COMMON_FIELDS`] and the `Date:` day.
    pub fn common(&self) -> Self {
        let pairs: Vec<(&str, &str)> = self
            .iter()
            .filter(|(n, _)| COMMON_FIELDS.contains(n))
            .collect();
        SearchFields::from_pairs(self.sent_day, pairs)
    }

    /// Bytes of memory it holds, roughly (for a cache's bound).
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.text.capacity() + self.ends.capacity() * 8
    }
}

/// The parser: mail-parser's defaults, but `Received:` kept as text (its
/// structured parse is costly and nothing here reads it).
pub(crate) fn parser() -> &'static MessageParser {
    static PARSER: std::sync::OnceLock<MessageParser> = std::sync::OnceLock::new();
    PARSER.get_or_init(|| {
        use HeaderName as H;
        // mail-parser's default table (used when none is given), with
        // `Received:` as raw text.
        let mut p = MessageParser::new();
        for h in [
            H::Subject,
            H::Comments,
            H::ContentDescription,
            H::ContentLocation,
            H::ContentTransferEncoding,
        ] {
            p = p.header_text(h);
        }
        for h in [
            H::From,
            H::To,
            H::Cc,
            H::Bcc,
            H::ReplyTo,
            H::Sender,
            H::ResentTo,
            H::ResentFrom,
            H::ResentBcc,
            H::ResentCc,
            H::ResentSender,
            H::ListArchive,
            H::ListHelp,
            H::ListId,
            H::ListOwner,
            H::ListPost,
            H::ListSubscribe,
            H::ListUnsubscribe,
        ] {
            p = p.header_address(h);
        }
        for h in [
            H::MessageId,
            H::References,
            H::InReplyTo,
            H::ReturnPath,
            H::ContentId,
            H::ResentMessageId,
        ] {
            p = p.header_id(h);
        }
        p.header_date(H::Date)
            .header_date(H::ResentDate)
            .header_comma_separated(H::Keywords)
            .header_comma_separated(H::ContentLanguage)
            .header_content_type(H::ContentType)
            .header_content_type(H::ContentDisposition)
            .header_raw(H::Received)
            .header_raw(H::MimeVersion)
    })
}

/// The top-level header fields of `raw` (a message or its header block)
/// for SEARCH, and its `Date:` day (see [`SearchFields`]).
pub fn search_fields(raw: &[u8]) -> SearchFields {
    let Some(m) = parser().parse_headers(raw) else {
        return SearchFields::from_pairs(None, []);
    };
    let Some(part) = m.parts.first() else {
        return SearchFields::from_pairs(None, []);
    };
    let sent_day = part.headers.iter().find_map(|h| match (&h.name, &h.value) {
        (HeaderName::Date, HeaderValue::DateTime(d)) => {
            Some(days_from_civil(d.year as i64, d.month as i64, d.day as i64))
        }
        _ => None,
    });
    let pairs: Vec<(String, String)> = part
        .headers
        .iter()
        .map(|h| {
            let rawv = raw
                .get(h.offset_start as usize..h.offset_end as usize)
                .unwrap_or_default();
            let v = match &h.value {
                HeaderValue::Text(t) => t.to_string(),
                HeaderValue::TextList(l) => l.join(" "),
                HeaderValue::Address(a) => {
                    let mut s = String::new();
                    for ad in a.iter() {
                        if let Some(n) = ad.name() {
                            s.push_str(n);
                            s.push(' ');
                        }
                        if let Some(x) = ad.address() {
                            s.push('<');
                            s.push_str(x);
                            s.push_str("> ");
                        }
                    }
                    s
                }
                _ => String::from_utf8_lossy(rawv).into_owned(),
            };
            (h.name.as_str().to_ascii_lowercase(), v.to_lowercase())
        })
        .collect();
    SearchFields::from_pairs(
        sent_day,
        pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    )
}

/// The summary and the search fields of a raw RFC 5322 message, from one
/// parse. Never fails: what cannot be parsed is described as `text/plain`.
pub fn summarize(raw: &[u8]) -> (Summary, SearchFields) {
    let len = raw.len() as u32;
    let parsed = parser().parse(raw);
    let (envelope, root) = match parsed {
        Some(m) if !m.parts.is_empty() => {
            let root = part(raw, &m, 0, 0);
            let hdr = &raw[range(root.header, raw.len())];
            (envelope(hdr), root)
        }
        _ => (
            Envelope::default(),
            BodyPart {
                header: (0, 0),
                body: (0, len),
                media_type: "text".into(),
                subtype: "plain".into(),
                params: vec![("charset".into(), "us-ascii".into())],
                id: None,
                description: None,
                encoding: "7bit".into(),
                lines: count_lines(raw),
                md5: None,
                disposition: None,
                language: Vec::new(),
                location: None,
                kind: PartKind::Single,
            },
        ),
    };
    let fields = search_fields(&raw[range(root.header, raw.len())]);
    let summary = Summary {
        version: SUMMARY_VERSION,
        envelope,
        root,
    };
    (summary, fields)
}

/// Bytes of a heap block of `n` bytes, with an allocator's bookkeeping.
fn block(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n + 16
    }
}

fn bytes_weight(b: &Option<Vec<u8>>) -> usize {
    b.as_ref().map_or(0, |v| block(v.capacity()))
}

fn params_weight(p: &[(String, String)], cap: usize) -> usize {
    block(cap * std::mem::size_of::<(String, String)>())
        + p.iter()
            .map(|(k, v)| block(k.capacity()) + block(v.capacity()))
            .sum::<usize>()
}

impl Envelope {
    /// Bytes of heap it holds, roughly.
    fn heap_weight(&self) -> usize {
        let addrs = |l: &Vec<Address>| {
            block(l.capacity() * std::mem::size_of::<Address>())
                + l.iter()
                    .map(|a| {
                        bytes_weight(&a.name)
                            + bytes_weight(&a.adl)
                            + bytes_weight(&a.mailbox)
                            + bytes_weight(&a.host)
                    })
                    .sum::<usize>()
        };
        bytes_weight(&self.date)
            + bytes_weight(&self.subject)
            + bytes_weight(&self.in_reply_to)
            + bytes_weight(&self.message_id)
            + [
                &self.from,
                &self.sender,
                &self.reply_to,
                &self.to,
                &self.cc,
                &self.bcc,
            ]
            .into_iter()
            .map(addrs)
            .sum::<usize>()
    }
}

impl BodyPart {
    /// Bytes of heap it holds, roughly.
    fn heap_weight(&self) -> usize {
        let kind = match &self.kind {
            PartKind::Single => 0,
            PartKind::Multipart(c) => {
                block(c.capacity() * std::mem::size_of::<BodyPart>())
                    + c.iter().map(BodyPart::heap_weight).sum::<usize>()
            }
            PartKind::Message(env, inner) => {
                block(std::mem::size_of::<Envelope>())
                    + env.heap_weight()
                    + block(std::mem::size_of::<BodyPart>())
                    + inner.heap_weight()
            }
        };
        block(self.media_type.capacity())
            + block(self.subtype.capacity())
            + block(self.encoding.capacity())
            + params_weight(&self.params, self.params.capacity())
            + bytes_weight(&self.id)
            + bytes_weight(&self.description)
            + bytes_weight(&self.md5)
            + bytes_weight(&self.location)
            + self.disposition.as_ref().map_or(0, |(d, p)| {
                block(d.capacity()) + params_weight(p, p.capacity())
            })
            + block(self.language.capacity() * std::mem::size_of::<String>())
            + self
                .language
                .iter()
                .map(|l| block(l.capacity()))
                .sum::<usize>()
            + kind
    }
}

/// How deep nested messages and multiparts are followed.
const MAX_DEPTH: usize = 32;

impl Summary {
    /// Computes the summary of a raw RFC 5322 message. Never fails: what
    /// cannot be parsed is described as `text/plain`.
    pub fn parse(raw: &[u8]) -> Summary {
        summarize(raw).0
    }

    /// Bytes of memory it holds, roughly (for a cache's bound).
    pub fn weight(&self) -> usize {
        block(std::mem::size_of::<Self>()) + self.envelope.heap_weight() + self.root.heap_weight()
    }

    /// The part a section number path names (RFC 3501 §6.4.5): numbers index
    /// the children of a multipart; a non-multipart message (top level or
    /// encapsulated) has only part 1, its body.
    pub fn part(&self, path: &[u32]) -> Option<&BodyPart> {
        let mut level = &self.root;
        let mut in_message = true;
        let mut cur = None;
        for &n in path {
            let next = match &level.kind {
                PartKind::Multipart(children) => children.get((n as usize).checked_sub(1)?)?,
                _ if in_message && n == 1 => level,
                _ => return None,
            };
            cur = Some(next);
            match &next.kind {
                PartKind::Message(_, inner) => {
                    level = inner;
                    in_message = true;
                }
                _ => {
                    level = next;
                    in_message = false;
                }
            }
        }
        cur
    }
}

fn range(r: (u32, u32), len: usize) -> std::ops::Range<usize> {
    let a = (r.0 as usize).min(len);
    let b = (r.1 as usize).clamp(a, len);
    a..b
}

fn part(raw: &[u8], m: &mail_parser::Message<'_>, id: usize, depth: usize) -> BodyPart {
    let p = &m.parts[id];
    let header = (p.offset_header, p.offset_body);
    let body = (p.offset_body, p.offset_end.max(p.offset_body));
    let hdr = &raw[range(header, raw.len())];
    let fields = header::fields(hdr);
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| header::unfold(f.value))
    };
    let (mut media_type, mut subtype, mut params) =
        ("text".to_string(), "plain".to_string(), Vec::new());
    let mut disposition = None;
    for h in &p.headers {
        match (&h.name, &h.value) {
            (HeaderName::ContentType, HeaderValue::ContentType(ct)) => {
                media_type = ct.c_type.to_ascii_lowercase();
                subtype = ct
                    .c_subtype
                    .as_deref()
                    .unwrap_or(if media_type == "text" {
                        "plain"
                    } else {
                        "octet-stream"
                    })
                    .to_ascii_lowercase();
                params = attrs(ct.attributes.as_deref());
            }
            (HeaderName::ContentDisposition, HeaderValue::ContentType(ct)) => {
                disposition = Some((
                    ct.c_type.to_ascii_lowercase(),
                    attrs(ct.attributes.as_deref()),
                ));
            }
            _ => {}
        }
    }
    // A part inside multipart/digest defaults to message/rfc822; mail-parser
    // tells us by parsing it as a message.
    if matches!(p.body, PartType::Message(_))
        && media_type == "text"
        && get("content-type").is_none()
    {
        media_type = "message".into();
        subtype = "rfc822".into();
    }
    if media_type == "text" && !params.iter().any(|(k, _)| k == "charset") {
        params.insert(0, ("charset".into(), "us-ascii".into()));
    }
    let encoding = get("content-transfer-encoding")
        .map(|e| String::from_utf8_lossy(&e).to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "7bit".into());
    let language = get("content-language")
        .map(|l| {
            String::from_utf8_lossy(&l)
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let body_bytes = &raw[range(body, raw.len())];
    let kind = match &p.body {
        PartType::Multipart(children) if depth < MAX_DEPTH => PartKind::Multipart(
            children
                .iter()
                .filter(|&&c| (c as usize) < m.parts.len() && c as usize != id)
                .map(|&c| part(raw, m, c as usize, depth + 1))
                .collect(),
        ),
        PartType::Message(inner) if depth < MAX_DEPTH && !inner.parts.is_empty() => {
            let mut root = part(raw, inner, 0, depth + 1);
            let env = envelope(&raw[range(root.header, raw.len())]);
            root.header.0 = root.header.0.max(body.0);
            PartKind::Message(Box::new(env), Box::new(root))
        }
        _ => PartKind::Single,
    };
    let kind = match kind {
        PartKind::Multipart(c) if c.is_empty() => PartKind::Single,
        k => k,
    };
    let lines = match kind {
        PartKind::Multipart(_) => 0,
        _ => count_lines(body_bytes),
    };
    BodyPart {
        header,
        body,
        media_type,
        subtype,
        params,
        id: get("content-id"),
        description: get("content-description"),
        encoding,
        lines,
        md5: get("content-md5"),
        disposition,
        language,
        location: get("content-location"),
        kind,
    }
}

fn attrs(a: Option<&[mail_parser::Attribute<'_>]>) -> Vec<(String, String)> {
    a.unwrap_or_default()
        .iter()
        .map(|a| (a.name.to_ascii_lowercase(), a.value.to_string()))
        .collect()
}

fn count_lines(b: &[u8]) -> u32 {
    let n = b.iter().filter(|&&c| c == b'\n').count();
    let tail = usize::from(!b.is_empty() && !b.ends_with(b"\n"));
    (n + tail).min(u32::MAX as usize) as u32
}

/// The envelope of a header block.
pub fn envelope(hdr: &[u8]) -> Envelope {
    let fields = header::fields(hdr);
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| header::unfold(f.value))
    };
    let addrs = |name: &str| {
        get(name)
            .map(|v| address::parse_list(&v))
            .unwrap_or_default()
    };
    let from = addrs("from");
    let mut sender = addrs("sender");
    if sender.is_empty() {
        sender = from.clone();
    }
    let mut reply_to = addrs("reply-to");
    if reply_to.is_empty() {
        reply_to = from.clone();
    }
    let nonempty = |v: Option<Vec<u8>>| v.filter(|v| !v.is_empty());
    Envelope {
        date: nonempty(get("date")),
        subject: nonempty(get("subject")),
        from,
        sender,
        reply_to,
        to: addrs("to"),
        cc: addrs("cc"),
        bcc: addrs("bcc"),
        in_reply_to: nonempty(get("in-reply-to")),
        message_id: nonempty(get("message-id")),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    const NESTED: &[u8] = b"From: \"A\" <a@x>\r\nSubject: =?utf-8?q?h=C3=A9?=\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npre\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@y\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n--YY\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ninner \xc3\xa9\r\n--YY\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--YY--\r\n\r\n--XX\r\nContent-Type: application/octet-stream; name=\"f.bin\"\r\nContent-Disposition: attachment; filename=\"f.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--XX--\r\n";

    fn slice(raw: &[u8], r: (u32, u32)) -> &[u8] {
        &raw[r.0 as usize..r.1 as usize]
    }

    #[test]
    fn nested_structure_and_ranges() {
        let s = Summary::parse(NESTED);
        assert_eq!(
            s.envelope.subject.as_deref(),
            Some(&b"=?utf-8?q?h=C3=A9?="[..])
        );
        assert_eq!(s.envelope.from[0].name.as_deref(), Some(&b"A"[..]));
        assert_eq!(s.envelope.sender, s.envelope.from);
        let f = SearchFields::parse(NESTED);
        assert_eq!(f.sent_day, Some(days_from_civil(2003, 7, 1)));
        let fields: Vec<(&str, &str)> = f.iter().collect();
        assert_eq!(fields[0], ("from", "a <a@x> "));
        assert_eq!(fields[1], ("subject", "hé"));
        assert_eq!(fields.len(), 4);
        let common = f.common();
        let common: Vec<(&str, &str)> = common.iter().collect();
        assert_eq!(common, fields[..2].to_vec());
        assert_eq!(f.common().sent_day, f.sent_day);
        let bytes = postcard::to_allocvec(&f).unwrap();
        assert_eq!(postcard::from_bytes::<SearchFields>(&bytes).unwrap(), f);
        assert_eq!(s.root.subtype, "mixed");
        let PartKind::Multipart(ch) = &s.root.kind else {
            panic!()
        };
        assert_eq!(ch.len(), 3);
        assert_eq!(slice(NESTED, s.part(&[1]).unwrap().body), b"hello");
        let msg = s.part(&[2]).unwrap();
        assert_eq!(
            (msg.media_type.as_str(), msg.subtype.as_str()),
            ("message", "rfc822")
        );
        assert!(slice(NESTED, msg.body).starts_with(b"From: b@y\r\n"));
        let inner_text = s.part(&[2, 1]).unwrap();
        assert_eq!(slice(NESTED, inner_text.body), b"inner \xc3\xa9");
        assert_eq!(inner_text.encoding, "8bit");
        assert_eq!(inner_text.params, vec![("charset".into(), "utf-8".into())]);
        assert_eq!(slice(NESTED, s.part(&[2, 2]).unwrap().body), b"<p>x</p>");
        let PartKind::Message(env, inner) = &msg.kind else {
            panic!()
        };
        assert_eq!(env.subject.as_deref(), Some(&b"inner"[..]));
        assert!(slice(NESTED, inner.header).starts_with(b"From: b@y"));
        assert!(slice(NESTED, inner.header).ends_with(b"\r\n\r\n"));
        let att = s.part(&[3]).unwrap();
        assert_eq!(att.disposition.as_ref().unwrap().0, "attachment");
        assert_eq!(slice(NESTED, att.body), b"AAEC");
        assert!(s.part(&[4]).is_none());
        assert!(s.part(&[1, 1]).is_none());
        assert!(s.part(&[0]).is_none());
        // Round trip for caching.
        let bytes = postcard::to_allocvec(&s).unwrap();
        assert_eq!(postcard::from_bytes::<Summary>(&bytes).unwrap(), s);
    }

    #[test]
    fn single_part_and_garbage() {
        let raw = b"Subject: x\r\n\r\nbody\r\nline2\r\n";
        let s = Summary::parse(raw);
        assert_eq!(s.part(&[1]).unwrap().body, s.root.body);
        assert_eq!(s.root.lines, 2);
        assert!(s.part(&[2]).is_none());
        for junk in [
            &b""[..],
            b"\r\n",
            b"\xff\xfe",
            b"--\r\n--",
            b"Content-Type: multipart/mixed\r\n\r\n",
        ] {
            let s = Summary::parse(junk);
            let _ = s.part(&[1, 1, 1]);
        }
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
    }
}
