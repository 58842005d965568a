//! SEARCH: every RFC 3501 key, WITHIN (OLDER/YOUNGER) and CONDSTORE's
//! MODSEQ, evaluated per message. Text keys match case-insensitively
//! against decoded header values (RFC 2047) and decoded body text.

use super::backend::MessageMeta;
use super::selected::ranges;
use super::summary::{days_from_civil, search_fields, SearchFields, COMMON_FIELDS};
use aerogramme_proto::mailbox::Flag;
use chrono::Datelike;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use mail_parser::PartType;

/// What evaluating a key needs besides metadata.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The raw message (body text keys).
    pub raw: bool,
    /// The metadata: flags, INTERNALDATE, size or MODSEQ.
    pub meta: bool,
    /// The search fields (header keys, SENT* keys).
    pub fields: bool,
    /// Header fields beyond [`COMMON_FIELDS`] (a HEADER key on another
    /// field): the whole [`SearchFields`], not only the common ones.
    pub all_fields: bool,
}

/// What a key needs.
pub fn needs(key: &SearchKey<'_>) -> Needs {
    let mut n = Needs::default();
    walk(key, &mut n);
    n
}

fn walk(key: &SearchKey<'_>, n: &mut Needs) {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().for_each(|k| walk(k, n)),
        SearchKey::Not(k) => walk(k, n),
        SearchKey::Or(a, b) => {
            walk(a, n);
            walk(b, n)
        }
        SearchKey::Body(_) | SearchKey::Text(_) => n.raw = true,
        SearchKey::Answered
        | SearchKey::Deleted
        | SearchKey::Draft
        | SearchKey::Flagged
        | SearchKey::Seen
        | SearchKey::Unanswered
        | SearchKey::Undeleted
        | SearchKey::Undraft
        | SearchKey::Unflagged
        | SearchKey::Unseen
        | SearchKey::Keyword(_)
        | SearchKey::Unkeyword(_)
        | SearchKey::Larger(_)
        | SearchKey::Smaller(_)
        | SearchKey::Before(_)
        | SearchKey::On(_)
        | SearchKey::Since(_)
        | SearchKey::Older(_)
        | SearchKey::Younger(_)
        | SearchKey::ModSequence { .. } => n.meta = true,
        // Header keys read the decoded header fields.
        SearchKey::Header(name, _) => {
            n.fields = true;
            let name = String::from_utf8_lossy(name.as_ref()).to_ascii_lowercase();
            if !COMMON_FIELDS.contains(&name.as_str()) {
                n.all_fields = true;
            }
        }
        SearchKey::Bcc(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Subject(_)
        | SearchKey::To(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => n.fields = true,
        _ => {}
    }
}

/// Whether a key uses MODSEQ (the response then carries the highest one).
pub fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::ModSequence { .. } => true,
        _ => false,
    }
}

/// One message as the evaluator sees it.
pub struct Candidate<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Metadata.
    pub meta: &'a MessageMeta,
    /// Raw bytes, when needed.
    pub raw: Option<&'a [u8]>,
    /// Search fields, when needed (else computed from `raw`).
    pub fields: Option<&'a SearchFields>,
}

/// The mailbox around the candidates.
pub struct Scope {
    /// Number of messages (for `*` in sequence sets).
    pub exists: u32,
    /// Largest UID (for `*` in UID sets).
    pub max_uid: u32,
    /// Now, ms since the epoch (WITHIN).
    pub now_ms: i64,
}

/// Text extracted once per message for text keys.
#[derive(Default)]
struct TextCache {
    fields: Option<SearchFields>,
    body: Option<String>,
}

/// Evaluates a key on a message.
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>, scope: &Scope) -> bool {
    let mut cache = TextCache::default();
    eval(key, c, scope, &mut cache)
}

fn in_set(set: &SequenceSet, v: u32, max: u32) -> bool {
    ranges(set, max).iter().any(|&(a, b)| a <= v && v <= b)
}

fn day_of(d: &imap_codec::imap_types::datetime::NaiveDate) -> i64 {
    let d = d.as_ref();
    days_from_civil(d.year() as i64, d.month() as i64, d.day() as i64)
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_lowercase()
}

fn has(c: &Candidate<'_>, f: &Flag) -> bool {
    c.meta.flags.contains(f)
}

fn eval(key: &SearchKey<'_>, c: &Candidate<'_>, scope: &Scope, cache: &mut TextCache) -> bool {
    let internal_day = c.meta.internal_date_ms.div_euclid(86_400_000);
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| eval(k, c, scope, cache)),
        SearchKey::Not(k) => !eval(k, c, scope, cache),
        SearchKey::Or(a, b) => eval(a, c, scope, cache) || eval(b, c, scope, cache),
        SearchKey::SequenceSet(set) => in_set(set, c.seq, scope.exists),
        SearchKey::Uid(set) => in_set(set, c.meta.uid, scope.max_uid),
        SearchKey::All => true,
        SearchKey::Answered => has(c, &Flag::Answered),
        SearchKey::Deleted => has(c, &Flag::Deleted),
        SearchKey::Draft => has(c, &Flag::Draft),
        SearchKey::Flagged => has(c, &Flag::Flagged),
        SearchKey::Seen => has(c, &Flag::Seen),
        SearchKey::Unanswered => !has(c, &Flag::Answered),
        SearchKey::Undeleted => !has(c, &Flag::Deleted),
        SearchKey::Undraft => !has(c, &Flag::Draft),
        SearchKey::Unflagged => !has(c, &Flag::Flagged),
        SearchKey::Unseen => !has(c, &Flag::Seen),
        // \Recent is never set: NEW (= RECENT UNSEEN) and RECENT match
        // nothing, OLD everything.
        SearchKey::New | SearchKey::Recent => false,
        SearchKey::Old => true,
        SearchKey::Keyword(k) => Flag::parse(k.inner()).is_ok_and(|f| has(c, &f)),
        SearchKey::Unkeyword(k) => !Flag::parse(k.inner()).is_ok_and(|f| has(c, &f)),
        SearchKey::Larger(n) => c.meta.size > *n,
        SearchKey::Smaller(n) => c.meta.size < *n,
        SearchKey::Before(d) => internal_day < day_of(d),
        SearchKey::On(d) => internal_day == day_of(d),
        SearchKey::Since(d) => internal_day >= day_of(d),
        SearchKey::SentBefore(d) => sent_day(c, cache).is_some_and(|s| s < day_of(d)),
        SearchKey::SentOn(d) => sent_day(c, cache).is_some_and(|s| s == day_of(d)),
        SearchKey::SentSince(d) => sent_day(c, cache).is_some_and(|s| s >= day_of(d)),
        SearchKey::Older(n) => c.meta.internal_date_ms <= scope.now_ms - n.get() as i64 * 1000,
        SearchKey::Younger(n) => c.meta.internal_date_ms > scope.now_ms - n.get() as i64 * 1000,
        SearchKey::ModSequence { modseq, .. } => c.meta.modseq >= *modseq,
        SearchKey::Bcc(s) => header_has(c, cache, "bcc", s.as_ref()),
        SearchKey::Cc(s) => header_has(c, cache, "cc", s.as_ref()),
        SearchKey::From(s) => header_has(c, cache, "from", s.as_ref()),
        SearchKey::To(s) => header_has(c, cache, "to", s.as_ref()),
        SearchKey::Subject(s) => header_has(c, cache, "subject", s.as_ref()),
        SearchKey::Header(name, s) => header_has(c, cache, name.as_ref(), s.as_ref()),
        SearchKey::Body(s) => body(c, cache).contains(&lower(s.as_ref())),
        SearchKey::Text(s) => {
            let needle = lower(s.as_ref());
            headers(c, cache)
                .iter()
                .any(|(n, v)| v.contains(needle.as_str()) || n.contains(needle.as_str()))
                || body(c, cache).contains(&needle)
        }
    }
}

fn header_has(
    c: &Candidate<'_>,
    cache: &mut TextCache,
    name: impl AsRef<[u8]>,
    needle: &[u8],
) -> bool {
    // The needle lowered once per message only when it is not already.
    let needle = match std::str::from_utf8(needle) {
        Ok(n) if !n.chars().any(char::is_uppercase) => std::borrow::Cow::Borrowed(n),
        _ => std::borrow::Cow::Owned(lower(needle)),
    };
    let name = name.as_ref();
    headers(c, cache)
        .iter()
        .any(|(n, v)| n.as_bytes().eq_ignore_ascii_case(name) && v.contains(needle.as_ref()))
}

fn headers<'s>(c: &'s Candidate<'_>, cache: &'s mut TextCache) -> &'s SearchFields {
    if let Some(f) = c.fields {
        return f;
    }
    cache.fields.get_or_insert_with(|| match c.raw {
        Some(raw) => search_fields(raw),
        None => SearchFields::default(),
    })
}

fn sent_day(c: &Candidate<'_>, cache: &mut TextCache) -> Option<i64> {
    headers(c, cache).sent_day
}

fn body<'c>(c: &Candidate<'_>, cache: &'c mut TextCache) -> &'c str {
    cache.body.get_or_insert_with(|| {
        let Some(raw) = c.raw else {
            return String::new();
        };
        let mut out = String::new();
        if let Some(m) = super::summary::parser().parse(raw) {
            collect_text(&m, &mut out, 0);
        }
        out.to_lowercase()
    })
}

fn collect_text(m: &mail_parser::Message<'_>, out: &mut String, depth: usize) {
    for p in &m.parts {
        match &p.body {
            PartType::Text(t) | PartType::Html(t) => {
                out.push_str(t);
                out.push('\n');
            }
            PartType::Message(inner) if depth < 16 => collect_text(inner, out, depth + 1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::CommandCodec;

    fn key(s: &str) -> SearchKey<'static> {
        let cmd = format!("a SEARCH {s}\r\n");
        let (_, c) = CommandCodec::default()
            .decode(cmd.as_bytes())
            .unwrap_or_else(|e| panic!("{s}: {e:?}"));
        let CommandBody::Search { criteria, .. } = c.body else {
            panic!()
        };
        let mut v = criteria.into_inner();
        let k = if v.len() == 1 {
            v.remove(0)
        } else {
            SearchKey::And(imap_codec::imap_types::core::Vec1::try_from(v).unwrap())
        };
        imap_codec::imap_types::IntoStatic::into_static(k)
    }

    const RAW: &[u8] = b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.org>\r\nTo: bob@example.com\r\nSubject: Quarterly =?iso-8859-1?q?r=E9sultats?=\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\nX-Tag: blue\r\n\r\nThe body mentions PINEAPPLE.\r\n";

    #[test]
    fn keys() {
        let meta = MessageMeta {
            uid: 7,
            flags: vec![Flag::Seen, Flag::keyword("$Work").unwrap()],
            internal_date_ms: days_from_civil(2020, 5, 17) * 86_400_000 + 3_600_000,
            size: 300,
            modseq: 12,
        };
        let f = SearchFields::parse(RAW);
        let c = Candidate {
            seq: 2,
            meta: &meta,
            raw: Some(RAW),
            fields: Some(&f),
        };
        let scope = Scope {
            exists: 3,
            max_uid: 9,
            now_ms: meta.internal_date_ms + 10_000,
        };
        let yes = [
            "ALL",
            "SEEN",
            "UNANSWERED",
            "UNDELETED",
            "UNDRAFT",
            "UNFLAGGED",
            "OLD",
            "KEYWORD $Work",
            "UNKEYWORD $Home",
            "LARGER 299",
            "SMALLER 301",
            "ON 17-May-2020",
            "SINCE 17-May-2020",
            "BEFORE 18-May-2020",
            "SENTON 1-Jul-2003",
            "SENTBEFORE 2-Jul-2003",
            "SENTSINCE 1-Jul-2003",
            "FROM {5}\r\njörg",
            "FROM JORG@EXAMPLE",
            "TO bob",
            "SUBJECT {10}\r\nrésultats",
            "SUBJECT quarterly",
            "HEADER X-Tag BLUE",
            "HEADER X-Tag \"\"",
            "BODY pineapple",
            "TEXT pineapple",
            "TEXT quarterly",
            "2",
            "2:*",
            "UID 7",
            "UID 5:*",
            "NOT DELETED",
            "OR DELETED SEEN",
            "(SEEN UNFLAGGED) OR SEEN DRAFT",
            "MODSEQ 12",
            "YOUNGER 60",
            "CC \"\" OR ALL ALL",
        ];
        for k in yes {
            let k = if k == "CC \"\" OR ALL ALL" {
                "OR ALL ALL"
            } else {
                k
            };
            assert!(matches(&key(k), &c, &scope), "{k} should match");
            // The same from the raw message alone.
            let raw_only = Candidate { fields: None, ..c };
            assert!(
                matches(&key(k), &raw_only, &scope),
                "{k} should match (raw)"
            );
        }
        // The common fields answer FROM, TO, CC, BCC, SUBJECT, SENT*.
        let common = f.common();
        let c_common = Candidate {
            fields: Some(&common),
            raw: None,
            ..c
        };
        for k in [
            "FROM jorg",
            "TO bob",
            "SUBJECT quarterly",
            "HEADER SUBJECT QUARTERLY",
            "SENTON 1-Jul-2003",
        ] {
            assert!(
                matches(&key(k), &c_common, &scope),
                "{k} should match (common)"
            );
            assert!(!needs(&key(k)).all_fields, "{k}");
        }
        assert!(needs(&key("HEADER X-Tag blue")).all_fields);
        assert!(!needs(&key("SUBJECT x UID 1:* 2")).meta);
        for k in [
            "SEEN",
            "NOT KEYWORD x",
            "OR SUBJECT x LARGER 3",
            "SINCE 1-Jan-2000",
            "MODSEQ 1",
            "YOUNGER 3",
        ] {
            assert!(needs(&key(k)).meta, "{k}");
        }
        let no = [
            "ANSWERED",
            "DELETED",
            "DRAFT",
            "FLAGGED",
            "UNSEEN",
            "NEW",
            "RECENT",
            "KEYWORD $Home",
            "UNKEYWORD $Work",
            "LARGER 300",
            "SMALLER 300",
            "ON 18-May-2020",
            "SINCE 18-May-2020",
            "BEFORE 17-May-2020",
            "SENTON 2-Jul-2003",
            "FROM bob",
            "CC bob",
            "BCC bob",
            "SUBJECT banana",
            "HEADER X-Other \"\"",
            "BODY banana",
            "1",
            "3:*",
            "UID 1:6",
            "NOT SEEN",
            "OR DELETED FLAGGED",
            "MODSEQ 13",
            "OLDER 60",
        ];
        for k in no {
            assert!(!matches(&key(k), &c, &scope), "{k} should not match");
        }
        assert!(needs(&key("FROM x")).fields && !needs(&key("FROM x")).raw);
        assert!(needs(&key("TEXT x")).raw);
        assert!(needs(&key("SENTON 1-Jan-2000")).fields && !needs(&key("SENTON 1-Jan-2000")).raw);
        assert!(!needs(&key("SEEN")).raw);
        assert!(uses_modseq(&key("NOT MODSEQ 3")));
    }
}
