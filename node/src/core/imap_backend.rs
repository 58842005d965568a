//! The IMAP layer's backend over the core.

use super::record_cache::{RecordCache, Weigh};
use super::{CoreGone, CoreHandle, CoreState};
use crate::imap::backend::{
    AuthError, Backend, BackendError, BackendResult, CopyOutcome, Durable, MailboxInfo,
    MailboxStatus, Mailboxes, MessageMeta, MessageState, NewMail, Selected, Snapshot, StoreOutcome,
    StoreParts,
};
use crate::imap::summary::{summarize, SearchFields, Summary, SUMMARY_VERSION};
use crate::node::Node;
use crate::unlock::UnlockError;
use aerogramme_proto::ids::{BlobId, MailboxId, UserId};
use aerogramme_proto::mailbox::{Flag, FlagBits, SpecialUse};
use aerogramme_proto::replica::{
    FlagMode, MailboxView, NewMessage, Outcome, ReplicaError, Row, Ticket, MAX_MESSAGE_SIZE,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

impl From<CoreGone> for BackendError {
    fn from(e: CoreGone) -> Self {
        BackendError::Unavailable(e.to_string())
    }
}

fn backend_error(e: ReplicaError) -> BackendError {
    match e {
        ReplicaError::NoSuchMailbox => BackendError::NoSuchMailbox,
        ReplicaError::NoSuchUser => BackendError::AccountGone,
        ReplicaError::AlreadyExists => BackendError::AlreadyExists,
        ReplicaError::Name(n) => BackendError::InvalidName(n.to_string()),
        ReplicaError::TooLarge => BackendError::TooLarge,
        ReplicaError::Locked | ReplicaError::Store(_) | ReplicaError::BlobMissing => {
            BackendError::Unavailable(e.to_string())
        }
        other => BackendError::Internal(other.to_string()),
    }
}

/// Authentication for IMAP sessions: checks the password (Argon2 off the
/// core thread, cached by the unlocker) and gives the keys to the replica.
#[derive(Clone)]
pub struct ImapBackend {
    core: CoreHandle,
    node: Arc<Node>,
}

impl ImapBackend {
    /// A backend over `core`, with `node`'s accounts and unlocker.
    pub fn new(core: CoreHandle, node: Arc<Node>) -> Self {
        ImapBackend { core, node }
    }
}

impl Backend for ImapBackend {
    type Mailboxes = UserMailboxes;

    async fn authenticate(
        &self,
        user: &str,
        password: &[u8],
        peer: SocketAddr,
    ) -> Result<UserMailboxes, AuthError> {
        let node = self.node.clone();
        let (name, pw, source) = (
            user.to_owned(),
            zeroize::Zeroizing::new(password.to_vec()),
            peer.ip().to_string(),
        );
        let unlocked = tokio::task::spawn_blocking(move || {
            let secrets = node.unlocker.unlock(&name, &pw, &source)?;
            let id = node
                .accounts
                .lookup(&name)
                .ok()
                .flatten()
                .ok_or(UnlockError::Denied)?;
            Ok::<_, UnlockError>((id, secrets))
        })
        .await
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let (id, secrets) = match unlocked {
            Ok(v) => v,
            Err(UnlockError::Denied) => return Err(AuthError::InvalidCredentials),
            Err(e) => return Err(AuthError::Unavailable(e.to_string())),
        };
        let opened = self
            .core
            .call(move |st| -> Result<(), ReplicaError> {
                let now = CoreState::now();
                st.replica.unlock(now, id, (*secrets).clone())?;
                st.replica.ensure_inbox(now, &mut st.rng, id)?;
                st.replica.ensure_special_use(now, &mut st.rng, id)?;
                st.session_opened(id);
                Ok(())
            })
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        opened.map_err(|e| AuthError::Unavailable(e.to_string()))?;
        Ok(UserMailboxes {
            core: self.core.clone(),
            user: id,
        })
    }
}

/// One logged-in session's view of its user's mailboxes.
pub struct UserMailboxes {
    core: CoreHandle,
    user: UserId,
}

impl Drop for UserMailboxes {
    fn drop(&mut self) {
        let user = self.user;
        let _ = self.core.run(move |st| st.session_closed(user));
    }
}

/// A mailbox's snapshot for SELECT: the view's shared arrays of UIDs and
/// MODSEQs (made once per change, not per SELECT), the first unseen
/// message its index keeps, keywords from the mailbox's interned table.
fn snapshot_of(v: &MailboxView) -> Snapshot {
    Snapshot {
        uidvalidity: v.uidvalidity(),
        uidnext: v.uidnext(),
        highest_modseq: v.highest_modseq(),
        uids: v.uid_column(),
        modseqs: v.modseq_column(),
        first_unseen: v.first_unseen(),
        keywords: v.state().known_keywords(),
    }
}

/// What FETCH and SEARCH read of a message, from its row.
fn meta_of(v: &MailboxView, r: &Row) -> MessageMeta {
    MessageMeta {
        uid: r.uid,
        flags: v.flags_of(r),
        internal_date_ms: r.internal_date_ms,
        size: r.size,
        modseq: r.modseq,
    }
}

impl UserMailboxes {
    /// Runs a read or a synchronous change on the core; answers once durable.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut CoreState, UserId) -> Result<T, ReplicaError> + Send + 'static,
    ) -> BackendResult<T> {
        let user = self.user;
        self.core
            .call(move |st| f(st, user))
            .await?
            .map_err(backend_error)
    }

    /// Starts an action that completes with a ticket; answers with `done`'s
    /// value once the action is durable and visible.
    async fn act<T: Send + 'static>(
        &self,
        start: impl FnOnce(&mut CoreState, UserId) -> Result<Ticket, ReplicaError> + Send + 'static,
        done: impl FnOnce(&mut CoreState, UserId, Outcome) -> T + Send + 'static,
    ) -> BackendResult<T> {
        let user = self.user;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.core.run(move |st| match start(st, user) {
            Ok(ticket) => st.on_done(ticket, move |st, r| {
                let _ = tx.send(
                    r.map(|o| done(st, user, o))
                        .map_err(BackendError::Unavailable),
                );
            }),
            Err(e) => {
                let e = backend_error(e);
                st.after_flush(move |_| {
                    let _ = tx.send(Err(e));
                });
            }
        })?;
        rx.await.map_err(|_| BackendError::from(CoreGone))?
    }
}

/// The states of `rows` after a STORE: most rows share a few flag sets,
/// each set's flags are read once (`last` keeps the last one across calls).
fn stored_states<'a>(
    v: &MailboxView,
    rows: impl Iterator<Item = &'a Row>,
    last: &mut Option<(FlagBits, Arc<[Flag]>)>,
) -> Vec<MessageState> {
    let mut out = Vec::with_capacity(rows.size_hint().0);
    for r in rows {
        let flags = match &*last {
            Some((b, f)) if *b == r.flags => f.clone(),
            _ => {
                let f: Arc<[Flag]> = v.flags_of(r).into();
                if r.flags.is_complete() {
                    *last = Some((r.flags, f.clone()));
                }
                f
            }
        };
        out.push(MessageState {
            uid: r.uid,
            flags,
            modseq: r.modseq,
        });
    }
    out
}

impl Mailboxes for UserMailboxes {
    async fn list(&self) -> BackendResult<Vec<MailboxInfo>> {
        self.with(|st, user| {
            Ok(st
                .replica
                .mailboxes(&user)?
                .into_iter()
                .map(|m| MailboxInfo {
                    name: m.name,
                    special_use: m.special_use,
                    subscribed: m.subscribed,
                })
                .collect())
        })
        .await
    }

    async fn create(&self, name: &str, special_use: Option<SpecialUse>) -> BackendResult<()> {
        let name = name.to_owned();
        self.with(move |st, user| {
            st.replica
                .create_mailbox(CoreState::now(), &mut st.rng, user, &name, special_use)
                .map(|_| ())
        })
        .await
    }

    async fn delete(&self, name: &str) -> BackendResult<()> {
        let name = name.to_owned();
        self.with(move |st, user| {
            let id = st.replica.lookup(&user, &name)?;
            st.replica
                .delete_mailbox(CoreState::now(), &mut st.rng, user, id)
        })
        .await
    }

    async fn rename(&self, from: &str, to: &str) -> BackendResult<()> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.with(move |st, user| {
            let id = st.replica.lookup(&user, &from)?;
            st.replica
                .rename_mailbox(CoreState::now(), &mut st.rng, user, id, &to)
        })
        .await
    }

    async fn subscribe(&self, name: &str, subscribed: bool) -> BackendResult<()> {
        let name = name.to_owned();
        self.with(move |st, user| {
            let id = st.replica.lookup(&user, &name)?;
            st.replica
                .subscribe(CoreState::now(), &mut st.rng, user, id, subscribed)
        })
        .await
    }

    async fn status(&self, name: &str) -> BackendResult<MailboxStatus> {
        let name = name.to_owned();
        self.with(move |st, user| {
            let id = st.replica.lookup(&user, &name)?;
            let v = st.replica.mailbox(&user, &id)?;
            let mut s = MailboxStatus {
                uidnext: v.uidnext(),
                uidvalidity: v.uidvalidity(),
                highest_modseq: v.highest_modseq(),
                ..Default::default()
            };
            for r in v.rows() {
                s.messages += 1;
                s.size += r.size as u64;
                if !r.flags.seen() {
                    s.unseen += 1;
                }
                if r.flags.deleted() {
                    s.deleted += 1;
                }
            }
            Ok(s)
        })
        .await
    }

    async fn select(&self, name: &str) -> BackendResult<Selected> {
        // Published by an earlier SELECT and still current: no round trip.
        if let Some(s) = self.core.selects().select(self.user, name) {
            return Ok(s);
        }
        let name = name.to_owned();
        self.with(move |st, user| {
            let id = st.replica.lookup(&user, &name)?;
            let events = st.subscribe(user, id);
            let snapshot = snapshot_of(st.replica.mailbox(&user, &id)?);
            st.stage_select(user, name, id, snapshot.clone());
            Ok(Selected {
                id,
                snapshot,
                events,
            })
        })
        .await
    }

    async fn snapshot(&self, mailbox: &MailboxId) -> BackendResult<Snapshot> {
        let id = *mailbox;
        self.with(move |st, user| Ok(snapshot_of(st.replica.mailbox(&user, &id)?)))
            .await
    }

    async fn fetch_meta(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
    ) -> BackendResult<Vec<MessageMeta>> {
        let (id, uids) = (*mailbox, uids.to_vec());
        self.with(move |st, user| {
            let v = st.replica.mailbox(&user, &id)?;
            Ok(if uids.is_sorted() {
                v.rows_of(&uids).map(|r| meta_of(v, r)).collect()
            } else {
                let mut sorted = uids.clone();
                sorted.sort_unstable();
                let by_uid: HashMap<u32, MessageMeta> =
                    v.rows_of(&sorted).map(|r| (r.uid, meta_of(v, r))).collect();
                uids.iter().filter_map(|u| by_uid.get(u).cloned()).collect()
            })
        })
        .await
    }

    async fn fetch_raw(&self, mailbox: &MailboxId, uid: u32) -> BackendResult<Option<Vec<u8>>> {
        let id = *mailbox;
        self.with(move |st, user| {
            // The blob only: the message's flags are not decoded.
            let Some(blob) = blob_of(st.replica.mailbox(&user, &id)?, uid) else {
                return Ok(None);
            };
            st.replica.read_blob(&user, &blob).map(Some)
        })
        .await
    }

    async fn fetch_summary(
        &self,
        mailbox: &MailboxId,
        uid: u32,
    ) -> BackendResult<Option<Arc<Summary>>> {
        Ok(self
            .fetch_summaries(mailbox, &[uid])
            .await?
            .into_iter()
            .next()
            .flatten())
    }

    async fn fetch_summaries(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
    ) -> BackendResult<Vec<Option<Arc<Summary>>>> {
        let (id, list) = (*mailbox, uids.to_vec());
        // One core job for all: cached summaries are shared, the kept ones
        // decrypted there; the decoding (and the parse of messages without
        // one) is done here.
        let found = self
            .with(move |st, user| {
                let v = st.replica.mailbox(&user, &id)?;
                let cached = st.summary_cache.of(&user);
                list.iter()
                    .map(|u| {
                        let Some(b) = blob_of(v, *u) else {
                            return Ok(None);
                        };
                        if let Some(s) = cached.and_then(|c| c.get(&b)) {
                            return Ok(Some((b, FoundSummary::Cached(s.clone()))));
                        }
                        find_summary(st, &user, &b).map(|f| Some((b, FoundSummary::Found(f))))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut out = Vec::with_capacity(found.len());
        let (mut to_keep, mut to_cache) = (Vec::new(), Vec::new());
        for (i, f) in found.into_iter().enumerate() {
            out.push(match f {
                None => None,
                Some((_, FoundSummary::Cached(s))) => Some(s),
                Some((blob, FoundSummary::Found(Found::Kept(plain)))) => {
                    match decode_summary(&plain) {
                        Some(s) => {
                            let s = Arc::new(s);
                            to_cache.push((blob, s.clone()));
                            Some(s)
                        }
                        // An older layout: summarize the message again.
                        None => match self.fetch_raw(mailbox, uids[i]).await? {
                            Some(raw) => {
                                let (s, _, kept) = to_keep_of(&raw);
                                to_keep.push((blob, kept));
                                Some(s)
                            }
                            None => None,
                        },
                    }
                }
                Some((blob, FoundSummary::Found(Found::Raw(raw)))) => {
                    let (s, _, kept) = to_keep_of(&raw);
                    to_keep.push((blob, kept));
                    Some(s)
                }
            });
        }
        if !to_cache.is_empty() {
            let user = self.user;
            let _ = self.core.run(move |st| {
                for (blob, s) in to_cache {
                    st.summary_cache.insert(&user, blob, s, false);
                }
            });
        }
        self.keep_later(to_keep);
        Ok(out)
    }

    async fn fetch_search_fields(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        all: bool,
    ) -> BackendResult<Vec<Option<Arc<SearchFields>>>> {
        let (id, list) = (*mailbox, uids.to_vec());
        // One core job for all: the common fields come from the memory
        // cache, the others are decrypted there and decoded here.
        let found = self
            .with(move |st, user| {
                let v = st.replica.mailbox(&user, &id)?;
                let cached = st.fields_cache.of(&user).filter(|_| !all);
                list.iter()
                    .map(|u| {
                        let Some(b) = blob_of(v, *u) else {
                            return Ok(None);
                        };
                        if let Some(f) = cached.and_then(|c| c.get(&b)) {
                            return Ok(Some((b, FoundFields::Cached(f.clone()))));
                        }
                        let (key, tag) = match all {
                            true => (fields_key(&user, &b), FIELDS_TAG),
                            false => (common_key(&user, &b), COMMON_TAG),
                        };
                        find_kept(st, &user, &b, &key, tag)
                            .map(|f| Some((b, FoundFields::Found(f))))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut out = Vec::with_capacity(found.len());
        let (mut to_keep, mut to_cache) = (Vec::new(), Vec::new());
        for (i, f) in found.into_iter().enumerate() {
            out.push(match f {
                None => None,
                Some((_, FoundFields::Cached(f))) => Some(f),
                Some((blob, FoundFields::Found(Found::Kept(plain)))) => {
                    let tag = if all { FIELDS_TAG } else { COMMON_TAG };
                    match decode_fields(&plain, tag) {
                        Some(f) if all => {
                            to_cache.push((blob, Arc::new(f.common())));
                            Some(Arc::new(f))
                        }
                        Some(f) => {
                            let f = Arc::new(f);
                            to_cache.push((blob, f.clone()));
                            Some(f)
                        }
                        // An older layout: summarize the message again.
                        None => match self.fetch_raw(mailbox, uids[i]).await? {
                            Some(raw) => {
                                let (_, f, kept) = to_keep_of(&raw);
                                to_keep.push((blob, kept));
                                Some(Arc::new(f))
                            }
                            None => None,
                        },
                    }
                }
                Some((blob, FoundFields::Found(Found::Raw(raw)))) => {
                    let (_, f, kept) = to_keep_of(&raw);
                    to_keep.push((blob, kept));
                    Some(Arc::new(f))
                }
            });
        }
        if !to_cache.is_empty() {
            let user = self.user;
            let _ = self.core.run(move |st| {
                for (blob, f) in to_cache {
                    st.fields_cache.insert(&user, blob, f, false);
                }
            });
        }
        self.keep_later(to_keep);
        Ok(out)
    }

    async fn append(
        &self,
        name: &str,
        flags: Vec<Flag>,
        internal_date_ms: i64,
        raw: Vec<u8>,
    ) -> BackendResult<(u32, u32)> {
        let name = name.to_owned();
        // Summarized here, on the session's thread, and kept once the
        // message has its UID.
        let (_, _, plain) = to_keep_of(&raw);
        let looked_up = Arc::new(std::sync::OnceLock::new());
        let found = looked_up.clone();
        self.act(
            move |st, user| {
                let id = st.replica.lookup(&user, &name)?;
                let _ = looked_up.set(id);
                let msg = NewMessage {
                    raw: &raw,
                    flags,
                    internal_date_ms,
                };
                st.replica
                    .append(CoreState::now(), &mut st.rng, user, id, msg)
            },
            move |st, user, outcome| match outcome {
                Outcome::Appended { uidvalidity, uid } => {
                    if let Some(id) = found.get() {
                        keep_appended(st, &user, id, uid, &plain);
                    }
                    (uidvalidity, uid)
                }
                _ => (0, 0),
            },
        )
        .await
    }

    async fn append_many(&self, name: &str, msgs: Vec<NewMail>) -> BackendResult<(u32, Vec<u32>)> {
        if msgs.iter().any(|m| m.raw.len() > MAX_MESSAGE_SIZE) {
            return Err(BackendError::TooLarge);
        }
        let (name, user) = (name.to_owned(), self.user);
        let plains: Vec<Kept> = msgs.iter().map(|m| to_keep_of(&m.raw).2).collect();
        let (tx, rx) = tokio::sync::oneshot::channel::<BackendResult<(u32, Vec<u32>)>>();
        self.core
            .run(move |st| match start_appends(st, user, &name, msgs) {
                Ok((id, tickets)) => {
                    // Every ticket is done after the flush of this one batch.
                    let n = tickets.len();
                    let acc = Arc::new(Mutex::new(Many {
                        uids: vec![0; n],
                        uidvalidity: 0,
                        left: n,
                        error: None,
                        tx: Some(tx),
                    }));
                    for ((i, t), plain) in tickets.into_iter().enumerate().zip(plains) {
                        let acc = acc.clone();
                        st.on_done(t, move |st, r| {
                            let mut g = acc.lock().unwrap_or_else(|e| e.into_inner());
                            match r {
                                Ok(Outcome::Appended { uidvalidity, uid }) => {
                                    keep_appended(st, &user, &id, uid, &plain);
                                    g.uids[i] = uid;
                                    g.uidvalidity = uidvalidity;
                                }
                                Ok(_) => {}
                                Err(e) => g.error = Some(e),
                            }
                            g.left -= 1;
                            if g.left == 0 {
                                let res = match g.error.take() {
                                    Some(e) => Err(BackendError::Unavailable(e)),
                                    None => Ok((g.uidvalidity, std::mem::take(&mut g.uids))),
                                };
                                if let Some(tx) = g.tx.take() {
                                    let _ = tx.send(res);
                                }
                            }
                        });
                    }
                }
                Err(e) => {
                    let e = backend_error(e);
                    st.after_flush(move |_| {
                        let _ = tx.send(Err(e));
                    });
                }
            })?;
        rx.await.map_err(|_| BackendError::from(CoreGone))?
    }

    async fn store(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        mode: FlagMode,
        flags: &[Flag],
        unchanged_since: Option<u64>,
    ) -> BackendResult<(StoreOutcome, StoreParts, Durable)> {
        let (id, uids, flags, user) = (*mailbox, uids.to_vec(), flags.to_vec(), self.user);
        // The outcome (what UNCHANGEDSINCE refused) goes out before the
        // change is made, then each op's answers as soon as that op is
        // applied (the session formats them while the core makes the next
        // ops and flushes); `done` says when the change is durable.
        let (tx, rx) = tokio::sync::oneshot::channel::<BackendResult<StoreOutcome>>();
        let (part_tx, part_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<MessageState>>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<BackendResult<()>>();
        self.core.run(move |st| {
            let named = (|| {
                let v = st.replica.mailbox(&user, &id)?;
                let mut uids = uids;
                uids.sort_unstable();
                uids.dedup();
                let (mut ok, mut modified) = (Vec::new(), Vec::new());
                for r in v.rows_of(&uids) {
                    match unchanged_since {
                        Some(s) if r.modseq > s => modified.push(r.uid),
                        _ => ok.push(r.uid),
                    }
                }
                Ok((ok, modified))
            })();
            let ok = match named {
                Ok((ok, modified)) => {
                    let _ = tx.send(Ok(StoreOutcome {
                        updated: Vec::new(),
                        modified,
                    }));
                    ok
                }
                Err(e) => {
                    let e = backend_error(e);
                    st.after_flush(move |_| {
                        let _ = tx.send(Err(e));
                    });
                    return;
                }
            };
            let mut last = None;
            let ticket = st.replica.store_flags_with(
                CoreState::now(),
                &mut st.rng,
                user,
                id,
                &ok,
                mode,
                &flags,
                |v, uids| {
                    let part =
                        stored_states(v, uids.iter().filter_map(|u| v.row_of(*u)), &mut last);
                    let _ = part_tx.send(part);
                },
            );
            drop(part_tx);
            match ticket {
                Ok(ticket) => st.on_done(ticket, move |_, r| {
                    let _ = done_tx.send(r.map(|_| ()).map_err(BackendError::Unavailable));
                }),
                Err(e) => {
                    let e = backend_error(e);
                    st.after_flush(move |_| {
                        let _ = done_tx.send(Err(e));
                    });
                }
            }
        })?;
        let outcome = rx.await.map_err(|_| BackendError::from(CoreGone))??;
        Ok((outcome, StoreParts::from(part_rx), Durable::after(done_rx)))
    }

    async fn expunge(&self, mailbox: &MailboxId, uids: &[u32]) -> BackendResult<Vec<u32>> {
        let (id, uids) = (*mailbox, uids.to_vec());
        let (tx, rx) = tokio::sync::oneshot::channel::<Vec<u32>>();
        self.act(
            move |st, user| {
                let v = st.replica.mailbox(&user, &id)?;
                let present: Vec<u32> = uids
                    .into_iter()
                    .filter(|u| v.message(*u).is_some())
                    .collect();
                let _ = tx.send(present.clone());
                st.replica
                    .expunge(CoreState::now(), &mut st.rng, user, id, &present)
            },
            |_, _, _| (),
        )
        .await?;
        rx.await.map_err(|_| BackendError::from(CoreGone))
    }

    async fn copy(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        dest: &str,
    ) -> BackendResult<CopyOutcome> {
        self.transfer(mailbox, uids, dest, false).await
    }

    async fn move_messages(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        dest: &str,
    ) -> BackendResult<CopyOutcome> {
        self.transfer(mailbox, uids, dest, true).await
    }

    async fn changed_since(
        &self,
        mailbox: &MailboxId,
        modseq: u64,
    ) -> BackendResult<(Vec<u32>, Vec<u32>)> {
        let id = *mailbox;
        self.with(move |st, user| {
            let v = st.replica.mailbox(&user, &id)?;
            let empty = aerogramme_proto::seq::Spaces::new();
            let spaces = st.replica.spaces(&user, &id).unwrap_or(&empty);
            Ok(v.changed_since(modseq, spaces))
        })
        .await
    }
}

/// Where a message blob's records are kept, in the meta tree, each sealed
/// with the user's master key (`Replica::seal_summary`): the summary under
/// `node/summary/` ‖ user ‖ blob, every search field under `node/fields/` ‖
/// user ‖ blob, the common search fields under `node/common/` ‖ user ‖ blob
/// (apart, so that a cold SEARCH FROM/SUBJECT reads small records that lie
/// together). A cache: computed at APPEND, or at the first read that needs
/// it (a delivered or replicated message), never replicated.
fn record_key(prefix: &[u8], user: &UserId, blob: &BlobId) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 32);
    k.extend_from_slice(prefix);
    k.extend_from_slice(user.as_bytes());
    k.extend_from_slice(blob.as_bytes());
    k
}

/// The blob of the shown message `uid`, without decoding its flags.
fn blob_of(v: &MailboxView, uid: u32) -> Option<BlobId> {
    v.state().blob_of(&v.entry_of(uid)?)
}

fn summary_key(user: &UserId, blob: &BlobId) -> Vec<u8> {
    record_key(crate::store::SUMMARY_PREFIX, user, blob)
}

fn fields_key(user: &UserId, blob: &BlobId) -> Vec<u8> {
    record_key(crate::store::FIELDS_PREFIX, user, blob)
}

fn common_key(user: &UserId, blob: &BlobId) -> Vec<u8> {
    record_key(crate::store::COMMON_PREFIX, user, blob)
}

/// Format tag of a kept summary's plaintext (the blob announcement's sealed
/// metadata shares its place), then the postcard of [`Summary`].
const SUMMARY_TAG: &[u8] = b"imap-summary:";

/// Format tag of kept search fields (same place), then the postcard of
/// [`SearchFields`].
const FIELDS_TAG: &[u8] = b"imap-fields:";

/// Format tag of the kept common search fields ([`SearchFields::common`],
/// same place), then their postcard.
const COMMON_TAG: &[u8] = b"imap-common:";

fn encode_tagged<T: serde::Serialize>(tag: &[u8], v: &T) -> Vec<u8> {
    let mut out = tag.to_vec();
    out.extend(postcard::to_allocvec(v).unwrap_or_default());
    out
}

fn decode_summary(plain: &[u8]) -> Option<Summary> {
    let s: Summary = postcard::from_bytes(plain.strip_prefix(SUMMARY_TAG)?).ok()?;
    (s.version == SUMMARY_VERSION).then_some(s)
}

fn decode_fields(plain: &[u8], tag: &[u8]) -> Option<SearchFields> {
    let f: SearchFields = postcard::from_bytes(plain.strip_prefix(tag)?).ok()?;
    (f.version == SUMMARY_VERSION).then_some(f)
}

/// What is kept of a message: the plaintexts of its three records (sealed
/// in the core), and its summary and common search fields for the memory
/// caches.
struct Kept {
    summary_plain: Vec<u8>,
    fields: Vec<u8>,
    common_plain: Vec<u8>,
    summary: Arc<Summary>,
    common: Arc<SearchFields>,
}

/// Summarizes a message (one parse) for the reader and for keeping.
fn to_keep_of(raw: &[u8]) -> (Arc<Summary>, SearchFields, Kept) {
    let (s, f) = summarize(raw);
    let common = f.common();
    let s = Arc::new(s);
    let kept = Kept {
        summary_plain: encode_tagged(SUMMARY_TAG, &*s),
        fields: encode_tagged(FIELDS_TAG, &f),
        common_plain: encode_tagged(COMMON_TAG, &common),
        summary: s.clone(),
        common: Arc::new(common),
    };
    (s, f, kept)
}

impl UserMailboxes {
    /// Seals and keeps these records in a later core job (not waited for).
    fn keep_later(&self, to_keep: Vec<(BlobId, Kept)>) {
        if !to_keep.is_empty() {
            let user = self.user;
            let _ = self.core.run(move |st| {
                for (blob, kept) in to_keep {
                    keep_summary(st, &user, &blob, &kept, false);
                }
            });
        }
    }
}

/// A summary as the core found it.
enum FoundSummary {
    /// In the memory cache.
    Cached(Arc<Summary>),
    /// Kept or not.
    Found(Found),
}

/// A record as the core found it.
enum Found {
    /// Kept: the decrypted record.
    Kept(Vec<u8>),
    /// Not kept (or unreadable): the message, to summarize.
    Raw(Vec<u8>),
}

/// Search fields as the core found them.
enum FoundFields {
    /// In the memory cache (the common fields only).
    Cached(Arc<SearchFields>),
    /// Kept or not.
    Found(Found),
}

/// The kept summary of `blob`, or else the message itself.
fn find_summary(st: &CoreState, user: &UserId, blob: &BlobId) -> Result<Found, ReplicaError> {
    find_kept(st, user, blob, &summary_key(user, blob), SUMMARY_TAG)
}

/// The record kept under `key` (its plaintext starts with `tag`), or else
/// the message itself.
fn find_kept(
    st: &CoreState,
    user: &UserId,
    blob: &BlobId,
    key: &[u8],
    tag: &[u8],
) -> Result<Found, ReplicaError> {
    if let Some(sealed) = st.replica.store().get_meta(key)? {
        if let Ok(plain) = st.replica.open_summary(user, blob, &sealed) {
            if plain.starts_with(tag) {
                return Ok(Found::Kept(plain));
            }
        }
    }
    st.replica.read_blob(user, blob).map(Found::Raw)
}

/// Seals and keeps a message's records (best effort: they are a cache),
/// and its summary and common search fields in memory; `appended`: the
/// message is new, its summary makes room in the memory cache.
fn keep_summary(st: &mut CoreState, user: &UserId, blob: &BlobId, kept: &Kept, appended: bool) {
    for (key, plain) in [
        (summary_key(user, blob), &kept.summary_plain),
        (fields_key(user, blob), &kept.fields),
        (common_key(user, blob), &kept.common_plain),
    ] {
        if let Ok(sealed) = st.replica.seal_summary(&mut st.rng, user, blob, plain) {
            let _ = st.replica.store().put_meta(&key, &sealed);
        }
    }
    st.fields_cache
        .insert(user, *blob, kept.common.clone(), false);
    st.summary_cache
        .insert(user, *blob, kept.summary.clone(), appended);
}

/// Keeps the records of the message `uid` of `mailbox` just appended.
fn keep_appended(st: &mut CoreState, user: &UserId, mailbox: &MailboxId, uid: u32, kept: &Kept) {
    let blob = st
        .replica
        .mailbox(user, mailbox)
        .ok()
        .and_then(|v| v.message(uid))
        .map(|m| m.view.blob);
    if let Some(blob) = blob {
        keep_summary(st, user, &blob, kept, true);
    }
}

/// At most this many bytes (roughly) of search fields are kept in memory,
/// all users together.
pub(crate) const FIELDS_CACHE_BYTES: usize = 64 << 20;

/// At most this many bytes (roughly) of decoded summaries are kept in
/// memory, all users together.
pub(crate) const SUMMARY_CACHE_BYTES: usize = 64 << 20;

/// Unlocked users' common search fields ([`SearchFields::common`]),
/// decrypted, in memory only: SEARCH FROM/TO/CC/BCC/SUBJECT and SENT* read
/// them without a store read or a decryption.
pub(crate) type FieldsCache = RecordCache<Arc<SearchFields>>;

/// Unlocked users' summaries, decrypted and decoded, in memory only: FETCH
/// ENVELOPE, BODY and BODYSTRUCTURE read them without a store read, a
/// decryption or a decoding. Appended messages make room (the newest are
/// the likeliest to be fetched); a read that decoded one adds it if there
/// is room.
pub(crate) type SummaryCache = RecordCache<Arc<Summary>>;

impl Weigh for Arc<SearchFields> {
    fn weight(&self) -> usize {
        SearchFields::weight(self)
    }
}

impl Weigh for Arc<Summary> {
    fn weight(&self) -> usize {
        Summary::weight(self)
    }
}

/// Where a MULTIAPPEND's answer goes: UIDVALIDITY and the UIDs.
type ManySender = tokio::sync::oneshot::Sender<BackendResult<(u32, Vec<u32>)>>;

/// What a MULTIAPPEND waits for: one outcome per message.
struct Many {
    uids: Vec<u32>,
    uidvalidity: u32,
    left: usize,
    error: Option<String>,
    tx: Option<ManySender>,
}

/// Starts the APPEND of every message in one core job: the mailbox is
/// looked up and the user's keys checked first, so the appends of one
/// MULTIAPPEND are started together (and made durable by the same flush)
/// or not at all.
fn start_appends(
    st: &mut CoreState,
    user: UserId,
    name: &str,
    msgs: Vec<NewMail>,
) -> Result<(MailboxId, Vec<Ticket>), ReplicaError> {
    let id = st.replica.lookup(&user, name)?;
    st.replica.mailbox(&user, &id)?;
    let mut tickets = Vec::with_capacity(msgs.len());
    for m in msgs {
        let msg = NewMessage {
            raw: &m.raw,
            flags: m.flags,
            internal_date_ms: m.internal_date_ms,
        };
        tickets.push(
            st.replica
                .append(CoreState::now(), &mut st.rng, user, id, msg)?,
        );
    }
    Ok((id, tickets))
}

impl UserMailboxes {
    async fn transfer(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        dest: &str,
        moving: bool,
    ) -> BackendResult<CopyOutcome> {
        let (id, uids, dest) = (*mailbox, uids.to_vec(), dest.to_owned());
        self.act(
            move |st, user| {
                let to = st.replica.lookup(&user, &dest)?;
                let v = st.replica.mailbox(&user, &id)?;
                let present: Vec<u32> = uids
                    .into_iter()
                    .filter(|u| v.message(*u).is_some())
                    .collect();
                let now = CoreState::now();
                if moving {
                    st.replica
                        .move_messages(now, &mut st.rng, user, id, &present, to)
                } else {
                    st.replica.copy(now, &mut st.rng, user, id, &present, to)
                }
            },
            |_, _, outcome| match outcome {
                Outcome::Copied {
                    uidvalidity,
                    mut uids,
                } => {
                    uids.sort();
                    CopyOutcome {
                        uidvalidity,
                        pairs: uids,
                    }
                }
                _ => CopyOutcome::default(),
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_other_tags() {
        let raw = b"From: a@x\r\nSubject: Free\r\nX-Other: y\r\n\r\nbody\r\n";
        let (s, f, kept) = to_keep_of(raw);
        assert_eq!(decode_summary(&kept.summary_plain).as_ref(), Some(&*s));
        assert_eq!(decode_fields(&kept.fields, FIELDS_TAG), Some(f.clone()));
        let common = decode_fields(&kept.common_plain, COMMON_TAG).unwrap();
        assert_eq!(common, *kept.common);
        assert_eq!(common.iter().count(), 2);
        assert_eq!(f.iter().count(), 3);
        assert!(decode_fields(&kept.fields, COMMON_TAG).is_none());
        assert!(decode_fields(&kept.summary_plain, FIELDS_TAG).is_none());
    }
}
