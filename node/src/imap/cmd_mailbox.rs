//! Commands on mailboxes: SELECT/EXAMINE (with CONDSTORE and QRESYNC),
//! CREATE (with USE), DELETE, RENAME, SUBSCRIBE, LIST (base and extended,
//! with STATUS), LSUB, STATUS, APPEND, ENABLE, NAMESPACE.

use super::backend::{Backend, BackendError, Event, MailboxStatus, Mailboxes, NewMail};
use super::convert;
use super::list;
use super::listext::ListCommand;
use super::mutf7;
use super::selected::{ranges, to_set, SelectedBox};
use super::session::{backend_err, code, Reply, Session};
use aerogramme_proto::mailbox::tree::{normalize_name, DELIMITER};
use aerogramme_proto::mailbox::{Flag, SpecialUse};
use imap_codec::encode::Encoder;
use imap_codec::imap_types::{
    command::SelectParameter,
    core::{AString, Atom, IString, QuotedChar},
    datetime::DateTime,
    extensions::{
        binary::LiteralOrLiteral8,
        enable::CapabilityEnable,
        namespace::Namespace,
        utf8::{QuotedUtf8, Utf8Kind},
    },
    fetch::MessageDataItem,
    flag::{Flag as IFlag, FlagNameAttribute},
    mailbox::{Mailbox, MailboxOther},
    response::{Code, CodeOther, Data, Response, StatusKind},
    status::{StatusDataItem, StatusDataItemName},
};
use imap_codec::ResponseCodec;
use std::collections::BTreeSet;
use std::num::{NonZeroU32, NonZeroU64};

fn nz32(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn nz64(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN)
}

/// UIDs in the messages' order as a uid-set: runs of consecutive
/// ascending UIDs become ranges (RFC 4315 APPENDUID).
pub(crate) fn uid_list(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let mut j = i;
        while j + 1 < uids.len() && uids[j + 1] == uids[j].wrapping_add(1) {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if i == j {
            out.push_str(&uids[i].to_string());
        } else {
            out.push_str(&format!("{}:{}", uids[i], uids[j]));
        }
        i = j + 1;
    }
    out
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl<B: Backend> Session<B> {
    // ----- names -----------------------------------------------------------

    pub(crate) fn raw_mailbox(&self, m: &Mailbox<'_>) -> Vec<u8> {
        match m {
            Mailbox::Inbox => b"INBOX".to_vec(),
            Mailbox::Other(o) => o.as_ref().to_vec(),
        }
    }

    /// A client's name (modified UTF-7, or UTF-8 once UTF8=ACCEPT is
    /// enabled) as the store's (UTF-8).
    pub(crate) fn decode_name(&self, raw: &[u8]) -> Result<String, Reply> {
        let s = std::str::from_utf8(raw).map_err(|_| Reply::bad("Mailbox name is not UTF-8"))?;
        Ok(normalize_name(&self.decode_text(s)))
    }

    /// A name or pattern from the client: modified UTF-7 unless UTF8=ACCEPT
    /// is enabled (RFC 6855 §3: then names are UTF-8, not decoded).
    pub(crate) fn decode_text(&self, s: &str) -> String {
        if self.utf8 {
            s.to_owned()
        } else {
            mutf7::decode(s).unwrap_or_else(|| s.to_owned())
        }
    }

    pub(crate) fn name_of(&self, m: &Mailbox<'_>) -> Result<String, Reply> {
        self.decode_name(&self.raw_mailbox(m))
    }

    /// A store name as the client sees it.
    pub(crate) fn encode_name(&self, name: &str) -> Option<Mailbox<'static>> {
        if name == "INBOX" {
            return Some(Mailbox::Inbox);
        }
        if self.utf8 && !name.is_ascii() {
            // RFC 6855: UTF-8 names as quoted UTF-8 strings, not modified UTF-7.
            let q = QuotedUtf8::try_from(name.to_owned()).ok()?;
            let m = MailboxOther::try_from(AString::String(IString::QuotedUtf8(q))).ok()?;
            return Some(Mailbox::Other(m));
        }
        Mailbox::try_from(mutf7::encode(name)).ok()
    }

    // ----- SELECT / EXAMINE --------------------------------------------------

    pub(crate) async fn select(
        &mut self,
        mailbox: &Mailbox<'_>,
        params: Vec<SelectParameter>,
        read_only: bool,
    ) -> Reply {
        let name = match self.name_of(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let mut qresync = None;
        for p in params {
            match p {
                SelectParameter::CondStore => self.condstore = true,
                SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids,
                    ..
                } => {
                    if !self.qresync {
                        return Reply::bad("QRESYNC is not enabled");
                    }
                    qresync = Some((uid_validity.get(), mod_sequence_value.get(), known_uids));
                }
            }
        }
        self.saved.clear();
        if self.selected.take().is_some() && (self.qresync || self.rev2) {
            self.untagged(
                StatusKind::Ok,
                Some(Code::Closed),
                "Previous mailbox closed",
            );
        }
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        let sel = match user.select(&name).await {
            Ok(s) => s,
            Err(e) => return backend_err(e),
        };
        let snap = &sel.snapshot;
        let keywords: BTreeSet<Flag> = snap.keywords.iter().cloned().collect();
        let (flags, perm) = convert::mailbox_flags(&keywords.into_iter().collect::<Vec<_>>());
        self.data(Data::Flags(flags));
        let perm = if read_only { Vec::new() } else { perm };
        self.untagged(
            StatusKind::Ok,
            Some(Code::PermanentFlags(perm)),
            "Flags permitted",
        );
        self.data(Data::Exists(snap.uids.len() as u32));
        if self.rev2 {
            // RFC 9051 §6.3.2: no RECENT and no UNSEEN code, but the
            // mailbox's LIST response.
            let boxes = match self.mailboxes() {
                Ok(u) => u.list().await.ok(),
                Err(_) => None,
            };
            let entry = match boxes {
                Some(boxes) => {
                    let cmd = ListCommand::default();
                    list::list(&boxes, &cmd, std::slice::from_ref(&name))
                        .into_iter()
                        .find(|e| e.name == name)
                }
                None => None,
            };
            if let (Some(e), Some(m)) = (entry, self.encode_name(&name)) {
                self.data(Data::List {
                    items: Self::attributes(&e.attrs),
                    delimiter: QuotedChar::try_from(DELIMITER).ok(),
                    mailbox: m,
                });
            }
        } else {
            self.data(Data::Recent(0));
            if let Some(n) = snap.first_unseen {
                self.untagged(StatusKind::Ok, Some(Code::Unseen(nz32(n))), "First unseen");
            }
        }
        self.untagged(
            StatusKind::Ok,
            Some(Code::UidValidity(nz32(snap.uidvalidity))),
            "UIDs valid",
        );
        self.untagged(
            StatusKind::Ok,
            Some(Code::UidNext(nz32(snap.uidnext))),
            "Predicted next UID",
        );
        self.untagged(
            StatusKind::Ok,
            Some(Code::HighestModSeq(nz64(snap.highest_modseq))),
            "Highest",
        );
        let uidvalidity = snap.uidvalidity;
        let id = sel.id;
        self.selected = Some(SelectedBox::new(
            id,
            name,
            read_only,
            sel.snapshot,
            sel.events,
        ));
        if let Some((uv, modseq, known)) = qresync {
            if uv == uidvalidity {
                if let Err(r) = self.qresync_report(modseq, known.as_ref()).await {
                    return r;
                }
            }
        }
        let c = if read_only {
            Code::ReadOnly
        } else {
            Code::ReadWrite
        };
        Reply::Ok(
            Some(c),
            format!("{} completed", if read_only { "EXAMINE" } else { "SELECT" }),
        )
    }

    /// QRESYNC at SELECT: VANISHED (EARLIER) and FETCH of changed messages.
    async fn qresync_report(
        &mut self,
        modseq: u64,
        known: Option<&imap_codec::imap_types::sequence::SequenceSet>,
    ) -> Result<(), Reply> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let id = sel.id;
        let user = self.mailboxes()?;
        let (changed, vanished) = user.changed_since(&id, modseq).await.map_err(backend_err)?;
        let metas = user.fetch_meta(&id, &changed).await.map_err(backend_err)?;
        let vanished: Vec<u32> = match known {
            Some(set) => {
                let r = ranges(set, u32::MAX);
                vanished
                    .into_iter()
                    .filter(|u| r.iter().any(|&(a, b)| a <= *u && *u <= b))
                    .collect()
            }
            None => vanished,
        };
        if let Some(set) = to_set(&vanished) {
            self.data(Data::Vanished {
                earlier: true,
                known_uids: set,
            });
        }
        for m in metas {
            let Some(seq) = self.selected.as_ref().and_then(|s| s.seq_of(m.uid)) else {
                continue;
            };
            let items = vec![
                MessageDataItem::Uid(nz32(m.uid)),
                MessageDataItem::Flags(convert::flags_fetch(&m.flags)),
                MessageDataItem::ModSeq(nz64(m.modseq)),
            ];
            if let Ok(d) = Data::fetch(seq, items) {
                self.data(d);
            }
        }
        Ok(())
    }

    // ----- CREATE / DELETE / RENAME / SUBSCRIBE ----------------------------

    pub(crate) async fn create(&mut self, mailbox: &Mailbox<'_>, uses: Vec<String>) -> Reply {
        let raw = self.raw_mailbox(mailbox);
        self.create_raw(&raw, uses).await
    }

    pub(crate) async fn create_raw(&mut self, raw: &[u8], uses: Vec<String>) -> Reply {
        let name = match self.decode_name(raw) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let name = name
            .strip_suffix(DELIMITER)
            .map(normalize_name)
            .unwrap_or(name);
        if name == "INBOX" {
            return Reply::No(Some(code("ALREADYEXISTS")), "INBOX always exists".into());
        }
        let special_use = match uses.as_slice() {
            [] => None,
            [one] => match SpecialUse::parse(one) {
                Some(u) => Some(u),
                None => {
                    return Reply::No(
                        Some(code("USEATTR")),
                        "Unknown special-use attribute".into(),
                    )
                }
            },
            _ => {
                return Reply::No(
                    Some(code("USEATTR")),
                    "One special-use attribute per mailbox".into(),
                )
            }
        };
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        match user.create(&name, special_use).await {
            Ok(()) => Reply::ok("CREATE completed"),
            Err(e) => backend_err(e),
        }
    }

    pub(crate) async fn delete(&mut self, mailbox: &Mailbox<'_>) -> Reply {
        let name = match self.name_of(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        if name == "INBOX" {
            return Reply::No(Some(code("CANNOT")), "INBOX cannot be deleted".into());
        }
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        match user.delete(&name).await {
            Ok(()) => Reply::ok("DELETE completed"),
            Err(e) => backend_err(e),
        }
    }

    pub(crate) async fn rename(&mut self, from: &Mailbox<'_>, to: &Mailbox<'_>) -> Reply {
        let (from, to) = match (self.name_of(from), self.name_of(to)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let to = to.strip_suffix(DELIMITER).map(normalize_name).unwrap_or(to);
        if to == "INBOX" {
            return Reply::No(Some(code("ALREADYEXISTS")), "INBOX always exists".into());
        }
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        if from == "INBOX" {
            // RFC 3501: the messages move to the new mailbox, INBOX stays.
            if let Err(e) = user.create(&to, None).await {
                return backend_err(e);
            }
            let sel = match user.select("INBOX").await {
                Ok(s) => s,
                Err(e) => return backend_err(e),
            };
            let uids = sel.snapshot.uids;
            if !uids.is_empty() {
                if let Err(e) = user.move_messages(&sel.id, &uids, &to).await {
                    return backend_err(e);
                }
            }
            return Reply::ok("RENAME completed");
        }
        let prefix = format!("{from}{DELIMITER}");
        if to == from || to.starts_with(&prefix) {
            return Reply::No(
                Some(code("CANNOT")),
                "Cannot rename a mailbox into itself".into(),
            );
        }
        let boxes = match user.list().await {
            Ok(b) => b,
            Err(e) => return backend_err(e),
        };
        let targets: Vec<(String, String)> = boxes
            .iter()
            .filter(|b| b.name == from || b.name.starts_with(&prefix))
            .map(|b| (b.name.clone(), format!("{to}{}", &b.name[from.len()..])))
            .collect();
        if targets.is_empty() {
            return backend_err(BackendError::NoSuchMailbox);
        }
        if targets
            .iter()
            .any(|(_, new)| boxes.iter().any(|b| &b.name == new))
        {
            return backend_err(BackendError::AlreadyExists);
        }
        for (old, new) in targets {
            if let Err(e) = user.rename(&old, &new).await {
                return backend_err(e);
            }
        }
        if let Some(sel) = self.selected.as_mut() {
            if sel.name == from || sel.name.starts_with(&prefix) {
                sel.name = format!("{to}{}", &sel.name[from.len()..]);
            }
        }
        Reply::ok("RENAME completed")
    }

    pub(crate) async fn subscribe(&mut self, mailbox: &Mailbox<'_>, on: bool) -> Reply {
        let name = match self.name_of(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        match user.subscribe(&name, on).await {
            Ok(()) => Reply::ok(if on {
                "SUBSCRIBE completed"
            } else {
                "UNSUBSCRIBE completed"
            }),
            Err(e) => backend_err(e),
        }
    }

    // ----- LIST / LSUB -----------------------------------------------------

    fn attributes(attrs: &[&str]) -> Vec<FlagNameAttribute<'static>> {
        attrs
            .iter()
            .filter_map(|a| {
                let name = a.strip_prefix('\\')?;
                Atom::try_from(name.to_owned())
                    .ok()
                    .map(FlagNameAttribute::from)
            })
            .collect()
    }

    pub(crate) async fn list(&mut self, cmd: ListCommand) -> Reply {
        let reference = match self.decode_name(&cmd.reference) {
            Ok(r) if cmd.reference.is_empty() => {
                let _ = r;
                String::new()
            }
            Ok(r) => r,
            Err(r) => return r,
        };
        let mut patterns = Vec::new();
        for p in &cmd.patterns {
            let s = String::from_utf8_lossy(p);
            patterns.push(self.decode_text(&s));
        }
        if !cmd.extended && patterns.len() == 1 && patterns[0].is_empty() {
            if let Ok(m) = Mailbox::try_from("") {
                self.data(Data::List {
                    items: vec![FlagNameAttribute::Noselect],
                    delimiter: QuotedChar::try_from(DELIMITER).ok(),
                    mailbox: m,
                });
            }
            return Reply::ok("LIST completed");
        }
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        let boxes = match user.list().await {
            Ok(b) => b,
            Err(e) => return backend_err(e),
        };
        let canon: Vec<String> = patterns
            .iter()
            .map(|p| list::canonical(&reference, p))
            .collect();
        for e in list::list(&boxes, &cmd, &canon) {
            let Some(m) = self.encode_name(&e.name) else {
                continue;
            };
            let line = Data::List {
                items: Self::attributes(&e.attrs),
                delimiter: QuotedChar::try_from(DELIMITER).ok(),
                mailbox: m.clone(),
            };
            if e.childinfo_subscribed {
                // imap-codec's LIST response has no extended data items:
                // the item is appended to its encoding.
                let mut bytes = ResponseCodec::default()
                    .encode(&Response::Data(line))
                    .dump();
                if bytes.ends_with(b"\r\n") {
                    bytes.truncate(bytes.len() - 2);
                }
                bytes.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n");
                self.raw(&bytes);
            } else {
                self.data(line);
            }
            if let (Some(items), true) = (&cmd.ret_status, e.exists) {
                let st = match self.mailboxes() {
                    Ok(u) => u.status(&e.name).await,
                    Err(r) => return r,
                };
                if let Ok(st) = st {
                    self.write_status(m, &st, items);
                }
            }
        }
        Reply::ok("LIST completed")
    }

    pub(crate) async fn lsub(&mut self, reference: &[u8], pattern: &[u8]) -> Reply {
        let reference = if reference.is_empty() {
            String::new()
        } else {
            match self.decode_name(reference) {
                Ok(r) => r,
                Err(r) => return r,
            }
        };
        let p = String::from_utf8_lossy(pattern);
        let p = self.decode_text(&p);
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        let boxes = match user.list().await {
            Ok(b) => b,
            Err(e) => return backend_err(e),
        };
        for e in list::lsub(&boxes, &list::canonical(&reference, &p)) {
            if let Some(m) = self.encode_name(&e.name) {
                self.data(Data::Lsub {
                    items: Self::attributes(&e.attrs),
                    delimiter: QuotedChar::try_from(DELIMITER).ok(),
                    mailbox: m,
                });
            }
        }
        Reply::ok("LSUB completed")
    }

    // ----- STATUS ----------------------------------------------------------

    pub(crate) fn write_status(
        &mut self,
        m: Mailbox<'static>,
        st: &MailboxStatus,
        items: &[StatusDataItemName],
    ) {
        let mut out = Vec::new();
        for i in items {
            out.push(match i {
                StatusDataItemName::Messages => StatusDataItem::Messages(st.messages),
                StatusDataItemName::Recent => StatusDataItem::Recent(0),
                StatusDataItemName::UidNext => StatusDataItem::UidNext(nz32(st.uidnext)),
                StatusDataItemName::UidValidity => {
                    StatusDataItem::UidValidity(nz32(st.uidvalidity))
                }
                StatusDataItemName::Unseen => StatusDataItem::Unseen(st.unseen),
                StatusDataItemName::Deleted => StatusDataItem::Deleted(st.deleted),
                StatusDataItemName::Size => StatusDataItem::Size(st.size),
                StatusDataItemName::HighestModSeq => {
                    self.condstore = true;
                    StatusDataItem::HighestModSeq(st.highest_modseq)
                }
                StatusDataItemName::DeletedStorage => continue,
            });
        }
        self.data(Data::Status {
            mailbox: m,
            items: out.into(),
        });
    }

    pub(crate) async fn status(
        &mut self,
        mailbox: &Mailbox<'_>,
        items: &[StatusDataItemName],
    ) -> Reply {
        if items.contains(&StatusDataItemName::DeletedStorage) {
            return Reply::bad("DELETED-STORAGE is not supported");
        }
        let name = match self.name_of(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        match user.status(&name).await {
            Ok(st) => {
                let Some(m) = self.encode_name(&name) else {
                    return Reply::bad("Invalid mailbox name");
                };
                self.write_status(m, &st, items);
                Reply::ok("STATUS completed")
            }
            Err(e) => backend_err(e),
        }
    }

    // ----- APPEND ----------------------------------------------------------

    pub(crate) async fn append(
        &mut self,
        mailbox: &Mailbox<'_>,
        flags: &[IFlag<'_>],
        date: Option<&DateTime>,
        message: LiteralOrLiteral8<'_>,
    ) -> Reply {
        let name = match self.name_of(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let flags = match convert::flags_from(flags) {
            Ok(f) => f,
            Err(e) => return Reply::Bad(format!("Invalid flag: {e}")),
        };
        let date = date.map_or_else(now_ms, convert::datetime_ms);
        let data = match message {
            LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
            LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
        };
        if data.len() > self.shared.config.max_literal as usize {
            return Reply::No(Some(Code::TooBig), "Message too large".into());
        }
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        match user.append(&name, flags, date, data).await {
            Ok((uidvalidity, uid)) => {
                if let Some(sel) = self.selected.as_mut().filter(|s| s.name == name) {
                    sel.push(Event::Exists { uid });
                }
                Reply::Ok(
                    Some(Code::AppendUid {
                        uid_validity: nz32(uidvalidity),
                        uid: nz32(uid),
                    }),
                    "APPEND completed".into(),
                )
            }
            Err(BackendError::NoSuchMailbox) => {
                Reply::No(Some(Code::TryCreate), "No such mailbox".into())
            }
            Err(e) => backend_err(e),
        }
    }

    /// MULTIAPPEND (RFC 3502): `parts` are the single-message APPENDs
    /// [`super::rewrite::split_append`] cut the command into. Every message
    /// is checked first; then all are appended, or none.
    pub(crate) async fn multi_append(&mut self, parts: &[Vec<u8>]) -> Reply {
        use imap_codec::decode::Decoder;
        use imap_codec::imap_types::command::CommandBody;
        use imap_codec::imap_types::IntoStatic;
        let mut name = None;
        let mut msgs = Vec::with_capacity(parts.len());
        for p in parts {
            let cmd = match imap_codec::CommandCodec::default().decode(p) {
                Ok((b"", c)) => c.into_static(),
                _ => return Reply::bad("Syntax error in APPEND"),
            };
            let CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } = cmd.body
            else {
                return Reply::bad("Syntax error in APPEND");
            };
            if name.is_none() {
                name = match self.name_of(&mailbox) {
                    Ok(n) => Some(n),
                    Err(r) => return r,
                };
            }
            let flags = match convert::flags_from(&flags) {
                Ok(f) => f,
                Err(e) => return Reply::Bad(format!("Invalid flag: {e}")),
            };
            let raw = match message {
                LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
                LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
            };
            if raw.len() > self.shared.config.max_literal as usize {
                return Reply::No(Some(Code::TooBig), "Message too large".into());
            }
            msgs.push(NewMail {
                flags,
                internal_date_ms: date.as_ref().map_or_else(now_ms, convert::datetime_ms),
                raw,
            });
        }
        let Some(name) = name else {
            return Reply::bad("No message");
        };
        let user = match self.mailboxes() {
            Ok(u) => u,
            Err(r) => return r,
        };
        match user.append_many(&name, msgs).await {
            Ok((uidvalidity, uids)) => {
                if let Some(sel) = self.selected.as_mut().filter(|s| s.name == name) {
                    for &uid in &uids {
                        sel.push(Event::Exists { uid });
                    }
                }
                // imap-types' APPENDUID holds one UID: the set is written here.
                let text = format!("APPENDUID {uidvalidity} {}", uid_list(&uids));
                Reply::Ok(
                    Some(Code::Other(CodeOther::unvalidated(text.into_bytes()))),
                    "APPEND completed".into(),
                )
            }
            Err(BackendError::NoSuchMailbox) => {
                Reply::No(Some(Code::TryCreate), "No such mailbox".into())
            }
            Err(e) => backend_err(e),
        }
    }

    // ----- ENABLE / NAMESPACE ----------------------------------------------

    pub(crate) fn enable(&mut self, caps: Vec<CapabilityEnable<'static>>) -> Reply {
        let mut enabled = Vec::new();
        for c in caps {
            match &c {
                CapabilityEnable::Utf8(Utf8Kind::Accept) if !self.utf8 => {
                    self.utf8 = true;
                    enabled.push(c);
                }
                CapabilityEnable::Other(_)
                    if !self.rev2 && c.to_string().eq_ignore_ascii_case("IMAP4rev2") =>
                {
                    // RFC 9051: IMAP4rev2 behaviour for the rest of the
                    // session, with UTF-8 mailbox names (§5.1).
                    self.rev2 = true;
                    self.utf8 = true;
                    enabled.push(c);
                }
                CapabilityEnable::CondStore if !self.condstore => {
                    self.condstore = true;
                    enabled.push(c);
                }
                CapabilityEnable::Other(_)
                    if !self.qresync && c.to_string().eq_ignore_ascii_case("QRESYNC") =>
                {
                    self.qresync = true;
                    self.condstore = true;
                    enabled.push(c);
                }
                _ => {}
            }
        }
        self.data(Data::Enabled {
            capabilities: enabled,
        });
        Reply::ok("ENABLE completed")
    }

    pub(crate) fn namespace(&mut self) -> Reply {
        let personal = match IString::try_from("") {
            Ok(prefix) => vec![Namespace::new(prefix, QuotedChar::try_from(DELIMITER).ok())],
            Err(_) => Vec::new(),
        };
        self.data(Data::Namespace {
            personal,
            other: Vec::new(),
            shared: Vec::new(),
        });
        Reply::ok("NAMESPACE completed")
    }
}

#[cfg(test)]
mod tests {
    use super::uid_list;

    #[test]
    fn appenduid_sets_keep_message_order() {
        assert_eq!(uid_list(&[4, 5, 6]), "4:6");
        assert_eq!(uid_list(&[4, 6, 7, 9]), "4,6:7,9");
        // Not ascending: listed as given, never reordered.
        assert_eq!(uid_list(&[9, 3, 4]), "9,3:4");
        assert_eq!(uid_list(&[]), "");
    }
}
