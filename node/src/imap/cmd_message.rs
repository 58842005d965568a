//! Commands on the selected mailbox's messages: FETCH (CHANGEDSINCE,
//! VANISHED), STORE (UNCHANGEDSINCE), SEARCH, COPY/MOVE (COPYUID),
//! EXPUNGE/UID EXPUNGE, CLOSE/UNSELECT, and the untagged updates from other
//! sessions (EXISTS, EXPUNGE or VANISHED, FETCH FLAGS).

use super::backend::{Backend, BackendError, Event, FlagMode, Mailboxes, MessageMeta};
use super::cmd_mailbox::now_ms;
use super::convert;
use super::fetch;
use super::rewrite;
use super::search::{self, Candidate, Scope};
use super::selected::SelectedBox;
use super::selected::{ranges, to_set};
use super::session::{backend_err, encode_into, Reply, Session};
use super::summary::{SearchFields, Summary};
use aerogramme_proto::ids::MailboxId;
use aerogramme_proto::mailbox::Flag;
use imap_codec::imap_types::{
    command::{FetchModifier, StoreModifier},
    core::{Charset, Vec1},
    extensions::uidplus::{UidElement, UidSet},
    fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
    flag::{Flag as IFlag, StoreResponse, StoreType},
    mailbox::Mailbox,
    response::{Code, Data, Response, StatusKind},
    search::SearchKey,
    sequence::SequenceSet,
    IntoStatic,
};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;

fn nz32(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn nz64(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN)
}

/// Messages whose STORE answers are written before the output is sent
/// (~40 bytes each: a little over the session's flush threshold).
const STORE_SLICE: usize = 8192;

/// At most this many message reads of one FETCH or SEARCH are in flight
/// (and at most [`WINDOW_BYTES`] of message sizes): the backend serves
/// concurrent reads together, and parsing here overlaps its work.
const WINDOW: usize = 32;
const WINDOW_BYTES: u64 = 8 << 20;

/// Summaries asked of the backend at once (they are small).
const SUMMARY_WINDOW: usize = 256;

/// Search fields asked of the backend at once (a backend keeps them in
/// memory; the others are small).
const FIELDS_WINDOW: usize = 1024;

/// Consecutive groups of `metas` within the window's bounds; `raw`: the
/// messages themselves are read (else only summaries, smaller windows'
/// byte bound does not apply).
fn windows(metas: &[MessageMeta], raw: bool) -> Vec<&[MessageMeta]> {
    let (count, limit) = if raw {
        (WINDOW, WINDOW_BYTES)
    } else {
        (SUMMARY_WINDOW, u64::MAX)
    };
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, m) in metas.iter().enumerate() {
        if i > start && (i - start >= count || bytes.saturating_add(u64::from(m.size)) > limit) {
            out.push(&metas[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += u64::from(m.size);
    }
    if start < metas.len() {
        out.push(&metas[start..]);
    }
    out
}

/// Polls every future until all are ready; outputs in order.
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// What SEARCH read of a message: its bytes (body keys) or its search
/// fields (header keys).
type SearchLoaded = (Option<Vec<u8>>, Option<Arc<SearchFields>>);

/// Runs `work` on this window while `next` reads the next one: `next` is
/// polled first, so that its jobs reach the core before `work` takes this
/// thread (polled second, they waited for it); both outputs, in the order
/// of the arguments.
async fn read_ahead<N: std::future::Future, W: std::future::Future>(
    next: N,
    work: W,
) -> (N::Output, W::Output) {
    tokio::join!(biased; next, work)
}

/// What SEARCH reads of a window's messages, as `needs` asks: their bytes
/// (body keys), their search fields (header keys), or nothing. A message
/// that cannot be read gets neither.
async fn load_search_window<M: Mailboxes>(
    user: &M,
    id: &MailboxId,
    window: &[MessageMeta],
    needs: search::Needs,
) -> Vec<SearchLoaded> {
    if needs.raw {
        load_window(user, id, window, true, false)
            .await
            .into_iter()
            .map(|l| (l.ok().flatten().and_then(|(r, _)| r), None))
            .collect()
    } else if needs.fields {
        let uids: Vec<u32> = window.iter().map(|m| m.uid).collect();
        match user.fetch_search_fields(id, &uids, needs.all_fields).await {
            Ok(v) => v.into_iter().map(|f| (None, f)).collect(),
            Err(_) => window.iter().map(|_| (None, None)).collect(),
        }
    } else {
        window.iter().map(|_| (None, None)).collect()
    }
}

/// A message's bytes and/or summary, as asked; `None` if it is gone.
type Loaded = Option<(Option<Vec<u8>>, Option<Arc<Summary>>)>;

async fn load<M: Mailboxes>(
    user: &M,
    id: &MailboxId,
    uid: u32,
    raw: bool,
    summary: bool,
) -> Result<Loaded, BackendError> {
    let bytes = if raw {
        match user.fetch_raw(id, uid).await? {
            Some(r) => Some(r),
            None => return Ok(None),
        }
    } else {
        None
    };
    let sum = match (&bytes, summary) {
        (Some(r), true) => Some(Arc::new(Summary::parse(r))),
        (None, true) => match user.fetch_summary(id, uid).await? {
            Some(s) => Some(s),
            None => return Ok(None),
        },
        _ => None,
    };
    Ok(Some((bytes, sum)))
}

/// A FETCH response whose partial BINARY items name their origin
/// (`BINARY[1]<0>`, RFC 3516), which imap-codec's `MessageDataItem::Binary`
/// cannot: each item is encoded by imap-codec alone, the origin inserted
/// after its name, and the items joined.
fn fetch_line(
    seq: u32,
    items: Vec<MessageDataItem<'_>>,
    origins: &[(usize, u32)],
) -> Option<Vec<u8>> {
    use imap_codec::encode::Encoder;
    let prefix = format!("* {seq} FETCH (");
    let mut out = prefix.clone().into_bytes();
    for (i, item) in items.into_iter().enumerate() {
        let bytes = imap_codec::ResponseCodec::default()
            .encode(&Response::Data(Data::fetch(seq, vec![item]).ok()?))
            .dump();
        let inner = bytes
            .strip_prefix(prefix.as_bytes())?
            .strip_suffix(b")\r\n")?;
        if i > 0 {
            out.push(b' ');
        }
        match origins.iter().find(|(k, _)| *k == i) {
            Some((_, o)) => {
                let sp = inner.iter().position(|&b| b == b' ')?;
                out.extend_from_slice(&inner[..sp]);
                out.extend_from_slice(format!("<{o}>").as_bytes());
                out.extend_from_slice(&inner[sp..]);
            }
            None => out.extend_from_slice(inner),
        }
    }
    out.extend_from_slice(b")\r\n");
    Some(out)
}

/// The bytes and/or summaries of a window's messages, in order.
async fn load_window<M: Mailboxes>(
    user: &M,
    id: &MailboxId,
    window: &[MessageMeta],
    raw: bool,
    summary: bool,
) -> Vec<Result<Loaded, BackendError>> {
    match (raw, summary) {
        (false, false) => window.iter().map(|_| Ok(Some((None, None)))).collect(),
        (false, true) => {
            let uids: Vec<u32> = window.iter().map(|m| m.uid).collect();
            match user.fetch_summaries(id, &uids).await {
                Ok(v) => v
                    .into_iter()
                    .map(|s| Ok(s.map(|s| (None, Some(s)))))
                    .collect(),
                Err(e) => window.iter().map(|_| Err(e.clone())).collect(),
            }
        }
        _ => {
            let reads = window
                .iter()
                .map(|m| load(user, id, m.uid, raw, summary))
                .collect();
            join_all(reads).await
        }
    }
}

/// Appends the FETCH responses of a window's messages to `out`, from what
/// was loaded for them; `next_seq` carries the walk of sequence numbers.
/// A message gone since is skipped; the first that cannot be answered
/// ends the command with this reply.
fn format_window(
    out: &mut Vec<u8>,
    sel: Option<&SelectedBox>,
    plan: &fetch::Plan,
    origins: &[(usize, u32)],
    window: &[MessageMeta],
    loaded: Vec<Result<Loaded, BackendError>>,
    next_seq: &mut u32,
) -> Result<(), Reply> {
    for (m, l) in window.iter().zip(loaded) {
        let Some(seq) = sel.and_then(|s| s.seq_near(m.uid, *next_seq)) else {
            continue;
        };
        *next_seq = seq;
        let (raw, summary) = match l {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(e) => return Err(backend_err(e)),
        };
        if origins.is_empty() && fetch::write_meta_line(out, seq, &plan.items, m) {
            continue;
        }
        let items = match fetch::items(plan, m, raw.as_deref(), summary.as_deref()) {
            Ok(i) => i,
            Err(fetch::ItemError::UnknownCte) => {
                return Err(Reply::No(
                    Some(Code::UnknownCte),
                    "Unknown Content-Transfer-Encoding".into(),
                ));
            }
        };
        if origins.is_empty() {
            if let Ok(d) = Data::fetch(seq, items) {
                encode_into(out, &Response::Data(d));
            }
        } else if let Some(line) = fetch_line(seq, items, origins) {
            out.extend_from_slice(&line);
        }
    }
    Ok(())
}

/// An untagged FETCH of a message's flags (and UID and MODSEQ as asked),
/// at sequence number `seq`.
fn write_flags_update(
    out: &mut Vec<u8>,
    seq: u32,
    uid: u32,
    flags: &[Flag],
    modseq: u64,
    with_uid: bool,
    condstore: bool,
) {
    use MessageDataItemName as N;
    let names = match (with_uid, condstore) {
        (true, true) => &[N::Uid, N::Flags, N::ModSeq][..],
        (true, false) => &[N::Uid, N::Flags][..],
        (false, true) => &[N::Flags, N::ModSeq][..],
        (false, false) => &[N::Flags][..],
    };
    if fetch::write_state_line(out, seq, names, uid, flags, modseq, 0) {
        return;
    }
    let mut items = Vec::new();
    if with_uid {
        items.push(MessageDataItem::Uid(nz32(uid)));
    }
    items.push(MessageDataItem::Flags(convert::flags_fetch(flags)));
    if condstore {
        items.push(MessageDataItem::ModSeq(nz64(modseq)));
    }
    if let Ok(d) = Data::fetch(seq, items) {
        encode_into(out, &Response::Data(d));
    }
}

/// COPYUID sets: runs where both sides are consecutive become ranges.
fn uid_sets(pairs: &[(u32, u32)]) -> Option<(UidSet, UidSet)> {
    let mut src = Vec::new();
    let mut dst = Vec::new();
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j + 1 < pairs.len()
            && pairs[j + 1].0 == pairs[j].0 + 1
            && pairs[j + 1].1 == pairs[j].1 + 1
        {
            j += 1;
        }
        let el = |a: u32, b: u32| {
            if a == b {
                UidElement::Single(nz32(a))
            } else {
                UidElement::Range(nz32(a), nz32(b))
            }
        };
        src.push(el(pairs[i].0, pairs[j].0));
        dst.push(el(pairs[i].1, pairs[j].1));
        i = j + 1;
    }
    Some((
        UidSet(Vec1::try_from(src).ok()?),
        UidSet(Vec1::try_from(dst).ok()?),
    ))
}

impl<B: Backend> Session<B> {
    /// Tells the client what changed in the selected mailbox.
    pub(crate) async fn announce(&mut self, allow_expunge: bool) {
        let (Some(sel), Some(user)) = (self.selected.as_mut(), self.user.as_ref()) else {
            return;
        };
        sel.drain();
        // A closed event stream: the user's account was removed (or the
        // node is stopping); the snapshot tells which.
        if sel.needs_resync() || sel.is_closed() {
            match user.snapshot(&sel.id).await {
                Ok(s) if sel.needs_resync() => sel.resync_from(&s),
                Ok(_) => {}
                Err(BackendError::NoSuchMailbox) => sel.expunge_all(),
                Err(BackendError::AccountGone) => {
                    self.gone = true;
                    return;
                }
                Err(_) => {}
            }
        }
        let upd = sel.process(allow_expunge);
        if upd.is_empty() {
            return;
        }
        let id = sel.id;
        let metas = if upd.flags.is_empty() {
            Vec::new()
        } else {
            user.fetch_meta(&id, &upd.flags).await.unwrap_or_default()
        };
        if self.qresync {
            let uids: Vec<u32> = upd.expunged.iter().map(|e| e.1).collect();
            if let Some(set) = to_set(&uids) {
                self.data(Data::Vanished {
                    earlier: false,
                    known_uids: set,
                });
            }
        } else {
            for (seq, _) in &upd.expunged {
                self.data(Data::Expunge(nz32(*seq)));
            }
        }
        if let Some(n) = upd.exists {
            self.data(Data::Exists(n));
        }
        for m in metas {
            self.flags_update(&m, self.qresync);
        }
    }

    /// An untagged FETCH of a message's flags.
    fn flags_update(&mut self, m: &MessageMeta, with_uid: bool) {
        let Some(seq) = self.selected.as_ref().and_then(|s| s.seq_of(m.uid)) else {
            return;
        };
        let condstore = self.condstore;
        write_flags_update(
            self.output(),
            seq,
            m.uid,
            &m.flags,
            m.modseq,
            with_uid,
            condstore,
        );
    }

    /// Whether `set` is the `$` of SEARCHRES (RFC 5182) in this command.
    pub(crate) fn is_dollar(&self, set: &SequenceSet) -> bool {
        use imap_codec::imap_types::sequence::{SeqOrUid, Sequence};
        self.dollar
            && matches!(set.0.as_ref(), [Sequence::Single(SeqOrUid::Value(n))] if n.get() == rewrite::DOLLAR)
    }

    /// The saved result's UIDs still in the selected mailbox, ascending.
    pub(crate) fn saved_uids(&self) -> Vec<u32> {
        let Some(sel) = self.selected.as_ref() else {
            return Vec::new();
        };
        let mut v: Vec<u32> = self
            .saved
            .iter()
            .copied()
            .filter(|u| sel.seq_of(*u).is_some())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// UIDs of a set in the selected mailbox.
    fn uids_of(&self, set: &SequenceSet, uid: bool) -> Result<Vec<u32>, Reply> {
        let sel = self
            .selected
            .as_ref()
            .ok_or_else(|| Reply::bad("No mailbox selected"))?;
        if self.is_dollar(set) {
            // `$`: the saved result (empty: a valid set matching nothing).
            return Ok(self.saved_uids());
        }
        let idx = sel.resolve(set, uid).map_err(Reply::bad)?;
        Ok(idx.into_iter().map(|i| sel.uids()[i]).collect())
    }

    // ----- CLOSE / UNSELECT / EXPUNGE --------------------------------------

    pub(crate) async fn close(&mut self, expunge: bool) -> Reply {
        let Some(sel) = self.selected.take() else {
            return Reply::bad("No mailbox selected");
        };
        self.saved.clear();
        if expunge && !sel.read_only {
            if let Ok(user) = self.mailboxes() {
                let metas = user
                    .fetch_meta(&sel.id, sel.uids())
                    .await
                    .unwrap_or_default();
                let deleted: Vec<u32> = metas
                    .iter()
                    .filter(|m| m.flags.contains(&Flag::Deleted))
                    .map(|m| m.uid)
                    .collect();
                if !deleted.is_empty() {
                    if let Err(e) = user.expunge(&sel.id, &deleted).await {
                        return backend_err(e);
                    }
                }
            }
        }
        Reply::ok(if expunge {
            "CLOSE completed"
        } else {
            "UNSELECT completed"
        })
    }

    pub(crate) async fn expunge(&mut self, set: Option<SequenceSet>) -> Reply {
        let (id, read_only) = match self.selected.as_ref() {
            Some(s) => (s.id, s.read_only),
            None => return Reply::bad("No mailbox selected"),
        };
        if read_only {
            return Reply::no("Mailbox is read-only");
        }
        let uids = match &set {
            Some(s) => match self.uids_of(s, true) {
                Ok(u) => u,
                Err(r) => return r,
            },
            None => self
                .selected
                .as_ref()
                .map(|s| s.uids().to_vec())
                .unwrap_or_default(),
        };
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        let metas = match user.fetch_meta(&id, &uids).await {
            Ok(m) => m,
            Err(e) => return backend_err(e),
        };
        let deleted: Vec<u32> = metas
            .iter()
            .filter(|m| m.flags.contains(&Flag::Deleted))
            .map(|m| m.uid)
            .collect();
        if deleted.is_empty() {
            return Reply::ok("EXPUNGE completed");
        }
        match user.expunge(&id, &deleted).await {
            Ok(done) => {
                if let Some(sel) = self.selected.as_mut() {
                    for uid in done {
                        sel.push(Event::Expunged { uid });
                    }
                }
                Reply::ok("EXPUNGE completed")
            }
            Err(e) => backend_err(e),
        }
    }

    // ----- SEARCH ------------------------------------------------------------

    pub(crate) async fn search(
        &mut self,
        charset: Option<Charset<'_>>,
        criteria: Vec<SearchKey<'_>>,
        uid: bool,
    ) -> Reply {
        if let Some(c) = &charset {
            let c = c.as_ref();
            if !c.eq_ignore_ascii_case("UTF-8") && !c.eq_ignore_ascii_case("US-ASCII") {
                let allowed = ["UTF-8", "US-ASCII"]
                    .into_iter()
                    .filter_map(|s| Charset::try_from(s).ok())
                    .collect();
                if self.esearch.as_ref().is_some_and(|(_, o)| o.save) {
                    self.saved.clear();
                }
                return Reply::No(
                    Some(Code::BadCharset { allowed }),
                    "Unsupported charset".into(),
                );
            }
        }
        let key = match Vec1::try_from(criteria) {
            Ok(v) => SearchKey::And(v).into_static(),
            Err(_) => return Reply::bad("Empty search"),
        };
        let key = if self.dollar {
            let saved = self.saved_uids();
            self.replace_dollar(key, &saved)
        } else {
            key
        };
        let with_modseq = search::uses_modseq(&key);
        if with_modseq {
            self.condstore = true;
        }
        let needs = search::needs(&key);
        let Some(sel) = self.selected.as_ref() else {
            return Reply::bad("No mailbox selected");
        };
        let id = sel.id;
        let uids = sel.uids().to_vec();
        let scope = Scope {
            exists: uids.len() as u32,
            max_uid: uids.last().copied().unwrap_or(0),
            now_ms: now_ms(),
        };
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        // Header keys alone need no flags, dates or sizes: the UIDs stand
        // for the metadata and a UID the backend no longer has is left out
        // below (it has no fields), as the metadata read would.
        let fields_only = needs.fields && !needs.meta && !needs.raw;
        let metas = if !fields_only {
            match user.fetch_meta(&id, &uids).await {
                Ok(m) => m,
                Err(e) => return backend_err(e),
            }
        } else {
            uids.iter()
                .map(|&uid| MessageMeta {
                    uid,
                    flags: Vec::new(),
                    internal_date_ms: 0,
                    size: 0,
                    modseq: 0,
                })
                .collect()
        };
        let mut found = Vec::new();
        let mut highest = 0;
        // Body keys read the messages (their header fields are computed
        // from them); header keys only the search fields, in larger windows.
        let groups: Vec<&[MessageMeta]> = if needs.raw {
            windows(&metas, true)
        } else {
            metas.chunks(FIELDS_WINDOW).collect()
        };
        // The core reads the next window while this one is matched.
        let mut loaded = match groups.first() {
            Some(w) => load_search_window(user, &id, w, needs).await,
            None => Vec::new(),
        };
        for (k, window) in groups.iter().enumerate() {
            let next = async {
                match groups.get(k + 1) {
                    Some(w) => load_search_window(user, &id, w, needs).await,
                    None => Vec::new(),
                }
            };
            let current = std::mem::take(&mut loaded);
            let matching = async {
                for (m, (raw, fields)) in window.iter().zip(current) {
                    let Some(seq) = uids.binary_search(&m.uid).ok().map(|i| i as u32 + 1) else {
                        continue;
                    };
                    if fields_only && fields.is_none() {
                        continue;
                    }
                    // A message that cannot be read matches only what needs no
                    // content (no fields: every header key fails).
                    let empty = SearchFields::default();
                    let fields = match (&raw, &fields) {
                        (_, Some(f)) => Some(&**f),
                        (Some(_), None) => None,
                        (None, None) => needs.fields.then_some(&empty),
                    };
                    let c = Candidate {
                        seq,
                        meta: m,
                        raw: raw.as_deref(),
                        fields,
                    };
                    if search::matches(&key, &c, &scope) {
                        found.push(nz32(if uid { m.uid } else { seq }));
                        highest = highest.max(m.modseq);
                    }
                }
            };
            (loaded, ()) = read_ahead(next, matching).await;
        }
        let modseq = (with_modseq && !found.is_empty()).then(|| nz64(highest));
        // IMAP4rev2 (RFC 9051 §6.4.4): a SEARCH without RETURN answers
        // ESEARCH with ALL.
        let esearch = self.esearch.take().or_else(|| {
            self.rev2.then(|| {
                let all = rewrite::ReturnOpts {
                    all: true,
                    ..Default::default()
                };
                (self.current_tag.clone(), all)
            })
        });
        if let Some((tag, opts)) = esearch {
            // RFC 4731: imap-codec has no ESEARCH response, so it is written here.
            let mut nums: Vec<u32> = found.iter().map(|n| n.get()).collect();
            nums.sort_unstable();
            if opts.save {
                self.saved = self.save_result(&nums, uid, opts);
            }
            if opts.answers() {
                let out = rewrite::esearch(&tag, uid, opts, &nums, modseq.map(|m| m.get()));
                self.raw(&out);
            }
            return Reply::ok("SEARCH completed");
        }
        self.data(Data::Search(found, modseq));
        Reply::ok("SEARCH completed")
    }

    /// The UIDs a `SEARCH RETURN (... SAVE)` keeps (RFC 5182 §2.4): all
    /// found, or only the MIN and/or MAX one. `found` is ascending, UIDs
    /// or sequence numbers.
    fn save_result(&self, found: &[u32], uid: bool, opts: rewrite::ReturnOpts) -> Vec<u32> {
        let picked: Vec<u32> = if opts.saves_extremes() {
            let mut v = Vec::new();
            if let (true, Some(m)) = (opts.min, found.first()) {
                v.push(*m);
            }
            if let (true, Some(m)) = (opts.max, found.last()) {
                v.push(*m);
            }
            v.dedup();
            v
        } else {
            found.to_vec()
        };
        if uid {
            return picked;
        }
        let Some(sel) = self.selected.as_ref() else {
            return Vec::new();
        };
        picked
            .iter()
            .filter_map(|s| sel.uids().get((*s as usize).checked_sub(1)?).copied())
            .collect()
    }

    /// A search key with the `$` sets (RFC 5182) replaced by the saved
    /// result: `UID set`, or a key matching nothing when it is empty.
    fn replace_dollar(&self, key: SearchKey<'static>, saved: &[u32]) -> SearchKey<'static> {
        let dollar = |s: &SequenceSet| self.is_dollar(s);
        let substitute = || match to_set(saved) {
            Some(set) => SearchKey::Uid(set),
            None => SearchKey::Not(Box::new(SearchKey::All)),
        };
        match key {
            SearchKey::SequenceSet(s) | SearchKey::Uid(s) if dollar(&s) => substitute(),
            SearchKey::And(keys) => {
                let v: Vec<SearchKey<'static>> = keys
                    .into_inner()
                    .into_iter()
                    .map(|k| self.replace_dollar(k, saved))
                    .collect();
                match Vec1::try_from(v) {
                    Ok(v) => SearchKey::And(v),
                    Err(_) => SearchKey::All,
                }
            }
            SearchKey::Not(k) => SearchKey::Not(Box::new(self.replace_dollar(*k, saved))),
            SearchKey::Or(a, b) => SearchKey::Or(
                Box::new(self.replace_dollar(*a, saved)),
                Box::new(self.replace_dollar(*b, saved)),
            ),
            other => other,
        }
    }

    // ----- FETCH -------------------------------------------------------------

    pub(crate) async fn fetch(
        &mut self,
        set: SequenceSet,
        names: MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: Vec<FetchModifier>,
    ) -> Reply {
        let mut changed_since = None;
        let mut vanished = false;
        for m in modifiers {
            match m {
                FetchModifier::ChangedSince(m) => changed_since = Some(m.get()),
                FetchModifier::Vanished => vanished = true,
            }
        }
        if vanished && (!uid || !self.qresync || changed_since.is_none()) {
            return Reply::bad("VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE");
        }
        if changed_since.is_some() {
            self.condstore = true;
        }
        let names: Vec<MessageDataItemName<'static>> = match names {
            MacroOrMessageDataItemNames::Macro(m) => m.expand().into_static(),
            MacroOrMessageDataItemNames::MessageDataItemNames(n) => n.into_static(),
        };
        let mut plan = match fetch::plan(names, uid, changed_since.is_some()) {
            Ok(p) => p,
            Err(e) => return Reply::bad(e),
        };
        let uids = match self.uids_of(&set, uid) {
            Ok(u) => u,
            Err(r) => return r,
        };
        let Some(sel) = self.selected.as_ref() else {
            return Reply::bad("No mailbox selected");
        };
        let (id, read_only) = (sel.id, sel.read_only);
        let max_uid = sel.uids().last().copied().unwrap_or(0);
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        let mut metas = match user.fetch_meta(&id, &uids).await {
            Ok(m) => m,
            Err(e) => return backend_err(e),
        };
        if let Some(since) = changed_since {
            metas.retain(|m| m.modseq > since);
            if vanished {
                let gone = match user.changed_since(&id, since).await {
                    Ok((_, v)) => v,
                    Err(e) => return backend_err(e),
                };
                let r = ranges(&set, max_uid.max(1));
                let gone: Vec<u32> = gone
                    .into_iter()
                    .filter(|u| r.iter().any(|&(a, b)| a <= *u && *u <= b))
                    .collect();
                if let Some(s) = to_set(&gone) {
                    self.data(Data::Vanished {
                        earlier: true,
                        known_uids: s,
                    });
                }
            }
        }
        if plan.sets_seen && !read_only {
            let unseen: Vec<u32> = metas
                .iter()
                .filter(|m| !m.flags.contains(&Flag::Seen))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let user = match self.mailboxes() {
                    Ok(u) => u,
                    Err(r) => return r,
                };
                let stored = match user
                    .store(&id, &unseen, FlagMode::Add, &[Flag::Seen], None)
                    .await
                {
                    Ok((mut out, mut parts, durable)) => {
                        while let Some(p) = parts.next().await {
                            out.updated.extend(p);
                        }
                        durable.wait().await.map(|()| out)
                    }
                    Err(e) => Err(e),
                };
                if let Ok(out) = stored {
                    // By UID: a FETCH BODY[] over a whole mailbox updates
                    // every message (a linear search each was quadratic).
                    let at: std::collections::HashMap<u32, usize> =
                        metas.iter().enumerate().map(|(i, m)| (m.uid, i)).collect();
                    for st in out.updated {
                        if let Some(m) = at.get(&st.uid).map(|&i| &mut metas[i]) {
                            m.flags = st.flags.to_vec();
                            m.modseq = st.modseq;
                        }
                        if let Some(sel) = self.selected.as_mut() {
                            sel.note_modseq(st.uid, st.modseq);
                        }
                    }
                    if !plan.items.contains(&MessageDataItemName::Flags) {
                        plan.items.push(MessageDataItemName::Flags);
                    }
                }
            }
        }
        let origins = fetch::binary_origins(&plan);
        let mut next_seq = 0;
        // The core loads the next window while this one is formatted.
        let ws = windows(&metas, plan.raw);
        let mut loaded = match (ws.first(), self.mailboxes()) {
            (Some(w), Ok(user)) => load_window(user, &id, w, plan.raw, plan.summary).await,
            (None, _) => Vec::new(),
            (_, Err(r)) => return r,
        };
        for (k, window) in ws.iter().enumerate() {
            let mut out = self.take_output();
            let (formatted, next) = {
                let Ok(user) = self.mailboxes() else {
                    self.put_output(out);
                    return Reply::bad("Not authenticated");
                };
                let next = async {
                    match ws.get(k + 1) {
                        Some(w) => load_window(user, &id, w, plan.raw, plan.summary).await,
                        None => Vec::new(),
                    }
                };
                let current = std::mem::take(&mut loaded);
                let sel = self.selected.as_ref();
                let format = async {
                    format_window(
                        &mut out,
                        sel,
                        &plan,
                        &origins,
                        window,
                        current,
                        &mut next_seq,
                    )
                };
                let (next, formatted) = read_ahead(next, format).await;
                (formatted, next)
            };
            self.put_output(out);
            if let Err(r) = formatted {
                return r;
            }
            loaded = next;
            if self.maybe_flush().await.is_err() {
                return Reply::no("Connection lost");
            }
        }
        Reply::ok("FETCH completed")
    }

    // ----- STORE ---------------------------------------------------------------

    pub(crate) async fn store(
        &mut self,
        set: SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[IFlag<'_>],
        uid: bool,
        modifiers: Vec<StoreModifier>,
    ) -> Reply {
        let mut unchanged_since = None;
        for m in modifiers {
            let StoreModifier::UnchangedSince(u) = m;
            unchanged_since = Some(u);
            self.condstore = true;
        }
        let flags = match convert::flags_from(flags) {
            Ok(f) => f,
            Err(e) => return Reply::Bad(format!("Invalid flag: {e}")),
        };
        let Some(sel) = self.selected.as_ref() else {
            return Reply::bad("No mailbox selected");
        };
        if sel.read_only {
            return Reply::no("Mailbox is read-only");
        }
        let id = sel.id;
        let uids = match self.uids_of(&set, uid) {
            Ok(u) => u,
            Err(r) => return r,
        };
        let mode = match kind {
            StoreType::Add => FlagMode::Add,
            StoreType::Remove => FlagMode::Remove,
            StoreType::Replace => FlagMode::Replace,
        };
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        let (out, mut parts, durable) =
            match user.store(&id, &uids, mode, &flags, unchanged_since).await {
                Ok(o) => o,
                Err(e) => return backend_err(e),
            };
        // The answers (UIDs ascending within a part) and the MODSEQs noted
        // in walks over the session's UIDs, a part (or slice) at a time:
        // each part's lines go out while the backend makes the next parts
        // and the change durable (only the tagged OK waits for that).
        let (answer, with_uid, condstore) = (
            response == StoreResponse::Answer,
            uid || self.qresync,
            self.condstore,
        );
        let mut part = out.updated;
        loop {
            for slice in part.chunks(STORE_SLICE) {
                let mut buf = self.take_output();
                if answer {
                    // ~40 bytes a line: no regrowth while a slice is written.
                    buf.reserve(slice.len() * 48);
                }
                if let Some(sel) = self.selected.as_mut() {
                    sel.note_modseqs(
                        slice,
                        |st| (st.uid, st.modseq),
                        |seq, st| {
                            if answer && seq > 0 {
                                let (u, f, m) = (st.uid, &st.flags, st.modseq);
                                write_flags_update(&mut buf, seq, u, f, m, with_uid, condstore);
                            }
                        },
                    );
                }
                self.put_output(buf);
                if self.maybe_flush().await.is_err() {
                    return Reply::no("Connection lost");
                }
            }
            match parts.next().await {
                Some(p) => part = p,
                None => break,
            }
        }
        if let Err(e) = durable.wait().await {
            return backend_err(e);
        }
        if !out.modified.is_empty() {
            let ids: Vec<u32> = if uid {
                out.modified.clone()
            } else {
                let sel = self.selected.as_ref();
                out.modified
                    .iter()
                    .filter_map(|u| sel.and_then(|s| s.seq_of(*u)))
                    .collect()
            };
            if let Some(s) = to_set(&ids) {
                return Reply::Ok(Some(Code::Modified(s)), "Conditional STORE failed".into());
            }
        }
        Reply::ok("STORE completed")
    }

    // ----- COPY / MOVE ---------------------------------------------------------

    pub(crate) async fn copy(
        &mut self,
        set: SequenceSet,
        dest: &Mailbox<'_>,
        uid: bool,
        is_move: bool,
    ) -> Reply {
        let name = match self.name_of(dest) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let Some(sel) = self.selected.as_ref() else {
            return Reply::bad("No mailbox selected");
        };
        if is_move && sel.read_only {
            return Reply::no("Mailbox is read-only");
        }
        let (id, same) = (sel.id, sel.name == name);
        let uids = match self.uids_of(&set, uid) {
            Ok(u) => u,
            Err(r) => return r,
        };
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        let res = if is_move {
            user.move_messages(&id, &uids, &name).await
        } else {
            user.copy(&id, &uids, &name).await
        };
        let out = match res {
            Ok(o) => o,
            Err(BackendError::NoSuchMailbox) => {
                return Reply::No(Some(Code::TryCreate), "No such mailbox".into());
            }
            Err(e) => return backend_err(e),
        };
        let mut pairs = out.pairs.clone();
        pairs.sort_unstable();
        let copyuid = uid_sets(&pairs).map(|(source, destination)| Code::CopyUid {
            uid_validity: nz32(out.uidvalidity),
            source,
            destination,
        });
        if let Some(sel) = self.selected.as_mut() {
            for &(src, dst) in &out.pairs {
                if is_move {
                    sel.push(Event::Expunged { uid: src });
                }
                if same {
                    sel.push(Event::Exists { uid: dst });
                }
            }
        }
        if is_move {
            if let Some(c) = copyuid {
                self.untagged(StatusKind::Ok, Some(c), "Moved UIDs");
            }
            return Reply::ok("MOVE completed");
        }
        Reply::Ok(copyuid, "COPY completed".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: u32, size: u32) -> MessageMeta {
        MessageMeta {
            uid,
            flags: Vec::new(),
            internal_date_ms: 0,
            size,
            modseq: 1,
        }
    }

    #[test]
    fn windows_bound_count_and_bytes() {
        let small: Vec<_> = (1..=70).map(|u| meta(u, 100)).collect();
        let w = windows(&small, true);
        assert_eq!(w.iter().map(|w| w.len()).collect::<Vec<_>>(), [32, 32, 6]);
        assert_eq!(windows(&small, false).len(), 1);
        // Large messages: a window holds at most WINDOW_BYTES, but at least one.
        let big = [
            meta(1, 5 << 20),
            meta(2, 2 << 20),
            meta(3, 20 << 20),
            meta(4, 1),
        ];
        let w = windows(&big, true);
        assert_eq!(w.iter().map(|w| w.len()).collect::<Vec<_>>(), [2, 1, 1]);
        assert!(windows(&[], true).is_empty());
    }

    #[test]
    fn join_all_keeps_order() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let out = rt.block_on(join_all(
            (0..5u64)
                .map(|i| async move {
                    tokio::time::sleep(std::time::Duration::from_millis(10 * (5 - i))).await;
                    i
                })
                .collect(),
        ));
        assert_eq!(out, [0, 1, 2, 3, 4]);
    }
}
