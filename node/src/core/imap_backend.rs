//! The IMAP layer's backend over the core.

use super::{CoreGone, CoreHandle, CoreState};
use crate::imap::backend::{
    AuthError, Backend, BackendError, BackendResult, CopyOutcome, MailboxInfo, MailboxStatus,
    Mailboxes, MessageMeta, MessageState, NewMail, Selected, Snapshot, StoreOutcome,
};
use crate::imap::summary::{Summary, SUMMARY_VERSION};
use crate::node::Node;
use crate::unlock::UnlockError;
use aerogramme_proto::ids::{BlobId, MailboxId, UserId};
use aerogramme_proto::mailbox::{Flag, SpecialUse};
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

/// A mailbox's snapshot for SELECT: one pass over the view's dense rows
/// (no map walked, no flag decoded); keywords come from the mailbox's
/// interned table.
fn snapshot_of(v: &MailboxView) -> Snapshot {
    let rows = v.rows();
    Snapshot {
        uidvalidity: v.uidvalidity(),
        uidnext: v.uidnext(),
        highest_modseq: v.highest_modseq(),
        uids: rows.iter().map(|r| r.uid).collect(),
        modseqs: rows.iter().map(|r| r.modseq).collect(),
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
                if v.flags_of(r).contains(&Flag::Deleted) {
                    s.deleted += 1;
                }
            }
            Ok(s)
        })
        .await
    }

    async fn select(&self, name: &str) -> BackendResult<Selected> {
        let name = name.to_owned();
        self.with(move |st, user| {
            let id = st.replica.lookup(&user, &name)?;
            let events = st.subscribe(user, id);
            let snapshot = snapshot_of(st.replica.mailbox(&user, &id)?);
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
            let Some(m) = st.replica.mailbox(&user, &id)?.message(uid) else {
                return Ok(None);
            };
            st.replica.read_blob(&user, &m.view.blob).map(Some)
        })
        .await
    }

    async fn fetch_summary(&self, mailbox: &MailboxId, uid: u32) -> BackendResult<Option<Summary>> {
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
    ) -> BackendResult<Vec<Option<Summary>>> {
        let (id, list) = (*mailbox, uids.to_vec());
        // One core job for all: the kept summaries are decrypted there, the
        // decoding (and the parse of messages without one) is done here.
        let found = self
            .with(move |st, user| {
                let v = st.replica.mailbox(&user, &id)?;
                let blobs: Vec<Option<BlobId>> = list
                    .iter()
                    .map(|u| v.message(*u).map(|m| m.view.blob))
                    .collect();
                blobs
                    .into_iter()
                    .map(|b| match b {
                        Some(b) => find_summary(st, &user, &b).map(|f| Some((b, f))),
                        None => Ok(None),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut out = Vec::with_capacity(found.len());
        let mut to_keep = Vec::new();
        for (i, f) in found.into_iter().enumerate() {
            out.push(match f {
                None => None,
                Some((blob, Found::Kept(plain))) => match decode_summary(&plain) {
                    Some(s) => Some(s),
                    // An older layout: summarize the message again.
                    None => match self.fetch_raw(mailbox, uids[i]).await? {
                        Some(raw) => {
                            let s = Summary::parse(&raw);
                            to_keep.push((blob, encode_summary(&s)));
                            Some(s)
                        }
                        None => None,
                    },
                },
                Some((blob, Found::Raw(raw))) => {
                    let s = Summary::parse(&raw);
                    to_keep.push((blob, encode_summary(&s)));
                    Some(s)
                }
            });
        }
        if !to_keep.is_empty() {
            let user = self.user;
            let _ = self.core.run(move |st| {
                for (blob, plain) in to_keep {
                    keep_summary(st, &user, &blob, &plain);
                }
            });
        }
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
        let plain = encode_summary(&Summary::parse(&raw));
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
        let plains: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| encode_summary(&Summary::parse(&m.raw)))
            .collect();
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
    ) -> BackendResult<StoreOutcome> {
        let (id, uids, flags) = (*mailbox, uids.to_vec(), flags.to_vec());
        let (tx, rx) = tokio::sync::oneshot::channel::<Vec<u32>>();
        // The UIDs the STORE applies to, shared with the answer's read-back:
        // only their states are read, not the whole mailbox's.
        let chosen = Arc::new(Mutex::new(Vec::new()));
        let chosen2 = chosen.clone();
        let outcome = self
            .act(
                move |st, user| {
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
                    let _ = tx.send(modified);
                    let res = st.replica.store_flags(
                        CoreState::now(),
                        &mut st.rng,
                        user,
                        id,
                        &ok,
                        mode,
                        &flags,
                    );
                    *chosen2.lock().unwrap_or_else(|e| e.into_inner()) = ok;
                    res
                },
                move |st, user, _| {
                    let ok = std::mem::take(&mut *chosen.lock().unwrap_or_else(|e| e.into_inner()));
                    st.replica.mailbox(&user, &id).map(|v| {
                        v.rows_of(&ok)
                            .map(|r| MessageState {
                                uid: r.uid,
                                flags: v.flags_of(r),
                                modseq: r.modseq,
                            })
                            .collect::<Vec<_>>()
                    })
                },
            )
            .await?;
        let modified = rx.await.map_err(|_| BackendError::from(CoreGone))?;
        let updated = outcome.map_err(backend_error)?;
        Ok(StoreOutcome { updated, modified })
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

/// Where a message blob's summary is kept: `node/summary/` ‖ user ‖ blob in
/// the meta tree, sealed with the user's master key (`Replica::seal_summary`).
/// A cache: computed at APPEND, or at the first read that needs it (a
/// delivered or replicated message), never replicated.
fn summary_key(user: &UserId, blob: &BlobId) -> Vec<u8> {
    let mut k = crate::store::SUMMARY_PREFIX.to_vec();
    k.extend_from_slice(user.as_bytes());
    k.extend_from_slice(blob.as_bytes());
    k
}

/// Format tag of a kept summary's plaintext (the blob announcement's sealed
/// metadata shares its place), then the postcard of [`Summary`].
const SUMMARY_TAG: &[u8] = b"imap-summary:";

fn encode_summary(s: &Summary) -> Vec<u8> {
    let mut out = SUMMARY_TAG.to_vec();
    out.extend(postcard::to_allocvec(s).unwrap_or_default());
    out
}

fn decode_summary(plain: &[u8]) -> Option<Summary> {
    let s: Summary = postcard::from_bytes(plain.strip_prefix(SUMMARY_TAG)?).ok()?;
    (s.version == SUMMARY_VERSION).then_some(s)
}

/// A summary as the core found it.
enum Found {
    /// Kept: the decrypted record.
    Kept(Vec<u8>),
    /// Not kept (or unreadable): the message, to summarize.
    Raw(Vec<u8>),
}

/// The kept summary of `blob`, or else the message itself.
fn find_summary(st: &CoreState, user: &UserId, blob: &BlobId) -> Result<Found, ReplicaError> {
    if let Some(sealed) = st.replica.store().get_meta(&summary_key(user, blob))? {
        if let Ok(plain) = st.replica.open_summary(user, blob, &sealed) {
            if plain.starts_with(SUMMARY_TAG) {
                return Ok(Found::Kept(plain));
            }
        }
    }
    st.replica.read_blob(user, blob).map(Found::Raw)
}

/// Seals and keeps a summary (best effort: it is a cache).
fn keep_summary(st: &mut CoreState, user: &UserId, blob: &BlobId, plain: &[u8]) {
    if let Ok(sealed) = st.replica.seal_summary(&mut st.rng, user, blob, plain) {
        let _ = st
            .replica
            .store()
            .put_meta(&summary_key(user, blob), &sealed);
    }
}

/// Keeps the summary of the message `uid` of `mailbox` just appended.
fn keep_appended(st: &mut CoreState, user: &UserId, mailbox: &MailboxId, uid: u32, plain: &[u8]) {
    let blob = st
        .replica
        .mailbox(user, mailbox)
        .ok()
        .and_then(|v| v.message(uid))
        .map(|m| m.view.blob);
    if let Some(blob) = blob {
        keep_summary(st, user, &blob, plain);
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
