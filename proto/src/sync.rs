//! Replication messages and anti-entropy.
//!
//! Push: a replica that makes or learns ops sends them as
//! [`SyncMsg::Gossip`] (split with [`SyncMsg::gossip`]).
//!
//! Pull (anti-entropy), on (re)connection and periodically, per user:
//! 1. the requester sends [`UserLogs::have`] (`Have`: per log its
//!    [`LogVersion`], plus its account record's version);
//! 2. the responder answers with [`UserLogs::answer`]: an `Account` if its
//!    record is newer, and pages (`Ops`) of exactly the ops the requester
//!    lacks, bounded by a byte budget; the last page says `more` when the
//!    budget cut the answer short;
//! 3. the requester applies them ([`UserLogs::receive`]) and, when a page
//!    said `more` ([`Received::send_have`]), sends a fresh `Have`.
//!
//! Pages extend the requester's contiguous prefixes, so each `Have` is
//! small and nothing it already holds is sent again: a node that was away
//! for a week catches up page by page. With one `Have` outstanding per peer
//! and user, no op crosses the link twice (several outstanding `Have`s may
//! overlap; duplicates are harmless, ops are idempotent). The responder can
//! tell, with [`UserLogs::needs`], whether the requester holds something it
//! lacks, and then send its own `Have`.
//!
//! Blobs: the requester lists chunks it lacks ([`UserLogs::wanted_chunks`],
//! from the announces of the `Blobs` log) in `WantChunks`; the responder
//! sends each as a `Chunk` ([`answer_want_chunks`]).
//!
//! Wire format: one version byte ([`SYNC_FORMAT_VERSION`]) then postcard.
//! [`SyncMsg::decode`] rejects input over [`MAX_MESSAGE_BYTES`], malformed
//! input, trailing bytes and out-of-bounds contents with a typed error.

use crate::codec::Codec;
use crate::ids::{BlobId, LogId, OpId, UserId};
use crate::oplog::{
    BlobChunk, Inserted, LogVersion, Op, OpLog, OpLogError, Page, CHUNK_BYTES, MAX_BEYOND,
    MAX_OP_PAYLOAD,
};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Largest encoded sync message.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Default byte budget of an anti-entropy answer, and of one gossip message.
pub const PAGE_BYTES: usize = 1024 * 1024;
/// Most chunks one `WantChunks` may ask for (16 × 256 KiB = 4 MiB).
pub const MAX_WANT_CHUNKS: usize = 16;
/// Most logs one `Have` may list.
pub const MAX_HAVE_LOGS: usize = 65_536;
/// Largest account record.
pub const MAX_ACCOUNT_BYTES: usize = 64 * 1024;
/// First byte of every encoded message.
pub const SYNC_FORMAT_VERSION: u8 = 1;

/// Bytes of an `Ops` message besides its ops (version byte, tag, user, log,
/// vector length, `more`), rounded up.
const OPS_OVERHEAD: usize = 64;

/// A replication message between two replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMsg {
    /// Push of new ops (of any logs).
    Gossip {
        /// The ops (shared with the logs and stores that hold them).
        ops: Vec<Arc<Op>>,
    },
    /// "Here is what I have of this user, send me what I miss."
    Have {
        /// The user.
        user: UserId,
        /// What the sender holds of each of its logs of the user (a log not
        /// listed is one it holds nothing of).
        logs: Vec<(LogId, LogVersion)>,
        /// Version of the sender's account record (0: none).
        account_version: u64,
    },
    /// A page of ops the receiver lacks, of one log.
    Ops {
        /// The user.
        user: UserId,
        /// The log.
        log: LogId,
        /// The ops, every one of (user, log).
        ops: Vec<Arc<Op>>,
        /// The sender has more the receiver lacks (send `Have` again).
        more: bool,
    },
    /// Asks for blob chunks.
    WantChunks {
        /// The user.
        user: UserId,
        /// (blob, chunk index), at most [`MAX_WANT_CHUNKS`].
        chunks: Vec<(BlobId, u32)>,
    },
    /// One blob chunk.
    Chunk(BlobChunk),
    /// A user's account record.
    Account {
        /// The user.
        user: UserId,
        /// Its version (greater is newer).
        version: u64,
        /// The record (ciphertext), at most [`MAX_ACCOUNT_BYTES`]; empty
        /// for a removed user (a tombstone, see [`UserLogs::is_removed`]).
        record: Vec<u8>,
    },
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The input is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// The input is empty.
    #[error("empty message")]
    Empty,
    /// Unknown format version.
    #[error("unknown sync format version {0}")]
    Version(u8),
    /// The input is not a well-formed message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes follow the message.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
    /// Well-formed, but its contents break a bound or a rule.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
    /// The message is about another user than the one it was given to.
    #[error("message for another user")]
    WrongUser,
    /// The message is not one this operation handles.
    #[error("unexpected message kind")]
    Unexpected,
}

fn op_in_bounds(op: &Op) -> Result<(), SyncError> {
    if op.id.seq == 0 {
        return Err(SyncError::Invalid("op sequence number 0"));
    }
    if op.payload.len() > MAX_OP_PAYLOAD {
        return Err(SyncError::Invalid("op payload too large"));
    }
    Ok(())
}

impl SyncMsg {
    /// Encodes the message: [`SYNC_FORMAT_VERSION`] then postcard.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_after(Vec::new())
    }

    /// [`SyncMsg::encode`] appended to `out`, which is first given room for
    /// about the whole message (postcard writes byte by byte: growing the
    /// vector from empty cost several reallocations per message).
    pub fn encode_after(&self, mut out: Vec<u8>) -> Vec<u8> {
        out.reserve(self.size_hint());
        out.push(SYNC_FORMAT_VERSION);
        postcard::to_extend(self, out)
            .expect("postcard encoding of a SyncMsg into a Vec cannot fail")
    }

    /// About the encoded size (a little more for small messages).
    fn size_hint(&self) -> usize {
        const OP_OVERHEAD: usize = 96;
        128 + match self {
            SyncMsg::Gossip { ops } | SyncMsg::Ops { ops, .. } => ops
                .iter()
                .map(|o| o.payload.len() + OP_OVERHEAD)
                .sum::<usize>(),
            SyncMsg::Chunk(c) => c.bytes.len(),
            _ => 0,
        }
    }

    /// Decodes and validates a message. Never panics; allocates at most in
    /// proportion to the (bounded) input.
    pub fn decode(bytes: &[u8]) -> Result<SyncMsg, SyncError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(SyncError::TooLarge(bytes.len()));
        }
        let (&version, body) = bytes.split_first().ok_or(SyncError::Empty)?;
        if version != SYNC_FORMAT_VERSION {
            return Err(SyncError::Version(version));
        }
        let (msg, rest) = postcard::take_from_bytes::<SyncMsg>(body)
            .map_err(|e| SyncError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SyncError::Trailing(rest.len()));
        }
        msg.validate()?;
        Ok(msg)
    }

    /// Checks the bounds and rules [`SyncMsg::decode`] enforces.
    pub fn validate(&self) -> Result<(), SyncError> {
        match self {
            SyncMsg::Gossip { ops } => ops.iter().try_for_each(|o| op_in_bounds(o)),
            SyncMsg::Have { logs, .. } => {
                if logs.len() > MAX_HAVE_LOGS {
                    return Err(SyncError::Invalid("too many logs in Have"));
                }
                let mut seen = BTreeSet::new();
                for (log, v) in logs {
                    if !seen.insert(*log) {
                        return Err(SyncError::Invalid("log listed twice in Have"));
                    }
                    if v.beyond.len() > MAX_BEYOND {
                        return Err(SyncError::Invalid("too many ops beyond a gap in Have"));
                    }
                }
                Ok(())
            }
            SyncMsg::Ops { user, log, ops, .. } => {
                for op in ops {
                    op_in_bounds(op)?;
                    if op.user != *user || op.log != *log {
                        return Err(SyncError::Invalid("op of another log in Ops"));
                    }
                }
                Ok(())
            }
            SyncMsg::WantChunks { chunks, .. } => {
                if chunks.len() > MAX_WANT_CHUNKS {
                    return Err(SyncError::Invalid("too many chunks wanted"));
                }
                Ok(())
            }
            SyncMsg::Chunk(c) => {
                if c.bytes.len() > CHUNK_BYTES {
                    return Err(SyncError::Invalid("chunk too large"));
                }
                Ok(())
            }
            SyncMsg::Account { record, .. } => {
                if record.len() > MAX_ACCOUNT_BYTES {
                    return Err(SyncError::Invalid("account record too large"));
                }
                Ok(())
            }
        }
    }

    /// The user the message is about (`None` for an empty gossip).
    pub fn user(&self) -> Option<UserId> {
        match self {
            SyncMsg::Gossip { ops } => ops.first().map(|o| o.user),
            SyncMsg::Have { user, .. }
            | SyncMsg::Ops { user, .. }
            | SyncMsg::WantChunks { user, .. }
            | SyncMsg::Account { user, .. } => Some(*user),
            SyncMsg::Chunk(c) => Some(c.user),
        }
    }

    /// Splits ops into `Gossip` messages whose ops encode to at most
    /// [`PAGE_BYTES`] each (one op per message at least).
    pub fn gossip(ops: Vec<Arc<Op>>) -> Vec<SyncMsg> {
        let mut out = Vec::new();
        let mut batch = Vec::new();
        let mut used = 0usize;
        for op in ops {
            let len = op.encoded_len();
            if !batch.is_empty() && used + len > PAGE_BYTES {
                out.push(SyncMsg::Gossip {
                    ops: std::mem::take(&mut batch),
                });
                used = 0;
            }
            used += len;
            batch.push(op);
        }
        if !batch.is_empty() {
            out.push(SyncMsg::Gossip { ops: batch });
        }
        out
    }
}

/// What [`UserLogs::receive`] did with a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Ops that were new, in arrival order: persist them and feed them to
    /// the CRDTs.
    pub new_ops: Vec<Arc<Op>>,
    /// Ops that were already held.
    pub duplicates: usize,
    /// Ops refused, with why.
    pub rejected: Vec<(OpId, OpLogError)>,
    /// The account record, when the message carried a newer one than held.
    pub account: Option<(u64, Vec<u8>)>,
    /// The sender has more for us (a page said `more`), or gossip left a gap:
    /// send a fresh `Have`.
    pub send_have: bool,
}

/// What an announcement says of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Length of the stored (encrypted) bytes, all chunks together.
    pub len: u64,
    /// How the plaintext holds the message.
    pub codec: Codec,
}

/// All op logs of one user, its blob announces and its account record: what
/// anti-entropy works on.
#[derive(Debug)]
pub struct UserLogs {
    user: UserId,
    logs: BTreeMap<LogId, OpLog>,
    blobs: BTreeMap<BlobId, BlobInfo>,
    account: Option<(u64, Vec<u8>)>,
    /// Announced blobs that [`UserLogs::wanted_chunks`] has not yet seen
    /// complete (stored chunks are never removed), so that it costs in
    /// proportion to the blobs still missing chunks, not to every blob.
    incomplete: Mutex<BTreeSet<BlobId>>,
}

impl Clone for UserLogs {
    fn clone(&self) -> Self {
        UserLogs {
            user: self.user,
            logs: self.logs.clone(),
            blobs: self.blobs.clone(),
            account: self.account.clone(),
            incomplete: Mutex::new(lock(&self.incomplete).clone()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl UserLogs {
    /// Nothing yet.
    pub fn new(user: UserId) -> Self {
        UserLogs {
            user,
            logs: BTreeMap::new(),
            blobs: BTreeMap::new(),
            account: None,
            incomplete: Mutex::new(BTreeSet::new()),
        }
    }

    /// Loads every op and the account record of `user` from a store.
    pub fn load(store: &dyn Store, user: UserId) -> Result<Self, StoreError> {
        let mut this = UserLogs::new(user);
        for log in store.logs(&user)? {
            for op in store.ops(&user, &log)? {
                this.insert(op)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            }
        }
        this.account = store.get_account(&user)?;
        Ok(this)
    }

    /// The user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// Inserts one op into its log (created on first use).
    pub fn insert(&mut self, op: impl Into<Arc<Op>>) -> Result<Inserted, OpLogError> {
        let op: Arc<Op> = op.into();
        let announce = op.blob_announce();
        let log = self
            .logs
            .entry(op.log)
            .or_insert_with(|| OpLog::new(self.user, op.log));
        let r = log.insert(op)?;
        if let Some(a) = announce {
            if let std::collections::btree_map::Entry::Vacant(v) = self.blobs.entry(a.blob) {
                v.insert(BlobInfo {
                    len: a.len,
                    codec: a.codec,
                });
                self.incomplete
                    .get_mut()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(a.blob);
            }
        }
        Ok(r)
    }

    /// One log, if any op of it is held.
    pub fn log(&self, log: &LogId) -> Option<&OpLog> {
        self.logs.get(log)
    }

    /// All logs, ascending.
    pub fn logs(&self) -> impl Iterator<Item = &OpLog> + '_ {
        self.logs.values()
    }

    /// Announced blobs, with their stored lengths and codecs.
    pub fn blobs(&self) -> &BTreeMap<BlobId, BlobInfo> {
        &self.blobs
    }

    /// Adopts an account record if it is newer than the held one; returns
    /// whether it was adopted.
    pub fn set_account(&mut self, version: u64, record: Vec<u8>) -> bool {
        if self.account.as_ref().is_some_and(|(v, _)| *v >= version) {
            return false;
        }
        if record.is_empty() {
            // A removal: the user's ops and blobs go with it.
            self.logs.clear();
            self.blobs.clear();
            lock(&self.incomplete).clear();
        }
        self.account = Some((version, record));
        true
    }

    /// Whether the user was removed: its account record is a tombstone (an
    /// empty record, replicated like any newer record). A removed user's
    /// ops are refused and its `Have` answers carry only the tombstone.
    pub fn is_removed(&self) -> bool {
        self.account.as_ref().is_some_and(|(_, r)| r.is_empty())
    }

    /// The held account record, as `(version, record)`.
    pub fn account(&self) -> Option<(u64, &[u8])> {
        self.account.as_ref().map(|(v, r)| (*v, r.as_slice()))
    }

    fn account_version(&self) -> u64 {
        self.account.as_ref().map_or(0, |(v, _)| *v)
    }

    /// What this replica holds, as a `Have` message.
    pub fn have(&self) -> SyncMsg {
        SyncMsg::Have {
            user: self.user,
            logs: self.logs.iter().map(|(id, l)| (*id, l.summary())).collect(),
            account_version: self.account_version(),
        }
    }

    /// Whether a peer that sent this `Have` holds an op or an account record
    /// this replica lacks (then it is worth sending our own `Have`).
    pub fn needs(&self, logs: &[(LogId, LogVersion)], account_version: u64) -> bool {
        if account_version > self.account_version() {
            return true;
        }
        if self.is_removed() {
            return false;
        }
        logs.iter().any(|(id, peer)| {
            let Some(ours) = self.logs.get(id) else {
                return !peer.prefix.is_empty() || !peer.beyond.is_empty();
            };
            let prefix_lacking = peer.prefix.dots.iter().any(|(origin, &top)| {
                let from = ours.version().get(origin);
                if top <= from {
                    return false;
                }
                let held = ours
                    .ops_since(*origin, from)
                    .take_while(|o| o.id.seq <= top)
                    .count();
                (held as u64) < top - from
            });
            prefix_lacking || peer.beyond.iter().any(|id| !ours.contains(id))
        })
    }

    /// How far behind us a peer is, from its `Have`: the ops we hold that
    /// it lacks, and their encoded bytes (for `status`).
    pub fn behind(&self, logs: &[(LogId, LogVersion)]) -> (u64, u64) {
        let peer: BTreeMap<LogId, &LogVersion> = logs.iter().map(|(l, v)| (*l, v)).collect();
        let empty = LogVersion::default();
        let (mut ops, mut bytes) = (0u64, 0u64);
        for (id, log) in &self.logs {
            let pv = peer.get(id).copied().unwrap_or(&empty);
            for op in log.iter().filter(|op| !pv.covers(&op.id)) {
                ops += 1;
                bytes += op.encoded_len() as u64;
            }
        }
        (ops, bytes)
    }

    /// The answer to a peer's `Have`: an `Account` when ours is newer, then
    /// one `Ops` page per log the peer lacks ops of, in log order, whose ops
    /// encode to at most `budget_bytes` in all (clamped to fit a message;
    /// the first page holds at least one op). When the budget cuts the
    /// answer short, the last page says `more`. Nothing the `Have` says the
    /// peer holds is sent.
    pub fn answer(
        &self,
        logs: &[(LogId, LogVersion)],
        account_version: u64,
        budget_bytes: usize,
    ) -> Vec<SyncMsg> {
        let mut out = Vec::new();
        if let Some((version, record)) = &self.account {
            if *version > account_version {
                out.push(SyncMsg::Account {
                    user: self.user,
                    version: *version,
                    record: record.clone(),
                });
            }
        }
        if self.is_removed() {
            return out;
        }
        if self.is_removed() {
            return out;
        }
        let peer: BTreeMap<LogId, &LogVersion> = logs.iter().map(|(l, v)| (*l, v)).collect();
        let empty = LogVersion::default();
        let mut remaining = budget_bytes.min(MAX_MESSAGE_BYTES - OPS_OVERHEAD);
        let mut first = true;
        let mut cut = false;
        for (id, log) in &self.logs {
            let pv = peer.get(id).copied().unwrap_or(&empty);
            if cut {
                if log.peer_lacks_any(pv) {
                    if let Some(SyncMsg::Ops { more, .. }) = out.last_mut() {
                        *more = true;
                    }
                    break;
                }
                continue;
            }
            let Page { ops, more } = log.page(pv, remaining, first);
            if ops.is_empty() && !more {
                continue;
            }
            if ops.is_empty() {
                // The budget is spent: the previous page must say `more`.
                if let Some(SyncMsg::Ops { more, .. }) = out.last_mut() {
                    *more = true;
                }
                break;
            }
            first = false;
            let used: usize = ops.iter().map(|o| o.encoded_len()).sum();
            remaining = remaining.saturating_sub(used);
            cut = more || remaining == 0;
            out.push(SyncMsg::Ops {
                user: self.user,
                log: *id,
                ops,
                more,
            });
        }
        out
    }

    /// Applies a `Gossip`, `Ops` or `Account` message. Ops of another user
    /// or malformed are reported in [`Received::rejected`] and the others
    /// still applied.
    pub fn receive(&mut self, msg: SyncMsg) -> Result<Received, SyncError> {
        let mut rx = Received::default();
        match msg {
            SyncMsg::Gossip { ops } => {
                for op in ops {
                    let (origin, log) = (op.id.origin, op.log);
                    if self.insert_into(op, &mut rx) {
                        let prefix = self.logs.get(&log).map_or(0, |l| l.version().get(&origin));
                        let seq = rx.new_ops.last().map_or(0, |o| o.id.seq);
                        rx.send_have |= seq > prefix;
                    }
                }
            }
            SyncMsg::Ops {
                user, ops, more, ..
            } => {
                if user != self.user {
                    return Err(SyncError::WrongUser);
                }
                for op in ops {
                    self.insert_into(op, &mut rx);
                }
                rx.send_have = more;
            }
            SyncMsg::Account {
                user,
                version,
                record,
            } => {
                if user != self.user {
                    return Err(SyncError::WrongUser);
                }
                if self.set_account(version, record.clone()) {
                    rx.account = Some((version, record));
                }
            }
            _ => return Err(SyncError::Unexpected),
        }
        Ok(rx)
    }

    /// Inserts, recording the outcome; true when the op was new.
    fn insert_into(&mut self, op: Arc<Op>, rx: &mut Received) -> bool {
        if self.is_removed() {
            return false;
        }
        let id = op.id;
        if op.user != self.user {
            rx.rejected.push((
                id,
                OpLogError::WrongLog {
                    id,
                    user: op.user,
                    log: op.log,
                },
            ));
            return false;
        }
        let copy = op.clone();
        match self.insert(op) {
            Ok(Inserted::New) => {
                rx.new_ops.push(copy);
                true
            }
            Ok(Inserted::Duplicate) => {
                rx.duplicates += 1;
                false
            }
            Err(e) => {
                rx.rejected.push((id, e));
                false
            }
        }
    }

    /// Up to `max` chunks of announced blobs that `has` says are not held,
    /// blob by blob, ascending index. Chunks `has` once reported held for a
    /// whole blob are assumed to stay held (stores never delete chunks):
    /// such blobs are not asked about again.
    pub fn wanted_chunks(
        &self,
        mut has: impl FnMut(&BlobId, u32) -> bool,
        max: usize,
    ) -> Vec<(BlobId, u32)> {
        let mut out = Vec::new();
        let mut incomplete = lock(&self.incomplete);
        let mut complete = Vec::new();
        'blobs: for blob in incomplete.iter() {
            let Some(info) = self.blobs.get(blob) else {
                continue;
            };
            let n = crate::oplog::chunk_count(info.len).min(u32::MAX as u64 + 1);
            let mut all = true;
            for i in 0..n {
                if out.len() >= max {
                    break 'blobs;
                }
                let i = i as u32;
                if !has(blob, i) {
                    out.push((*blob, i));
                    all = false;
                }
            }
            if all {
                complete.push(*blob);
            }
        }
        for b in complete {
            incomplete.remove(&b);
        }
        out
    }

    /// Whether a received chunk belongs to an announced blob and has the
    /// length the announce implies.
    pub fn chunk_fits(&self, chunk: &BlobChunk) -> bool {
        chunk.user == self.user
            && self
                .blobs
                .get(&chunk.blob)
                .and_then(|b| crate::oplog::chunk_len(b.len, chunk.index))
                .is_some_and(|l| l == chunk.bytes.len())
    }
}

/// Answers a `WantChunks` from the store: one `Chunk` message per chunk held
/// (at most [`MAX_WANT_CHUNKS`]); chunks not held are skipped.
pub fn answer_want_chunks(
    store: &dyn Store,
    user: &UserId,
    chunks: &[(BlobId, u32)],
) -> Result<Vec<SyncMsg>, StoreError> {
    let mut out = Vec::new();
    for (blob, index) in chunks.iter().take(MAX_WANT_CHUNKS) {
        if let Some(c) = store.get_chunk(user, blob, *index)? {
            out.push(SyncMsg::Chunk(c));
        }
    }
    Ok(out)
}

// Compile-time: the largest op fits an `Ops` message with its overhead.
const _: () = assert!(MAX_OP_PAYLOAD + 128 + OPS_OVERHEAD <= MAX_MESSAGE_BYTES);
const _: () = assert!(OPS_OVERHEAD > 1 + 1 + 16 + 17 + 10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;
    use crate::ids::{MailboxId, ReplicaId};
    use crate::oplog::tests::{mk, user};
    use crate::oplog::BlobAnnounce;
    use crate::store::MemStore;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn all_variants() -> Vec<SyncMsg> {
        let mb = LogId::Mailbox(MailboxId([3; 16]));
        let mut v = LogVersion::default();
        v.prefix.dots.insert(ReplicaId(1), 4);
        v.beyond.push(OpId {
            origin: ReplicaId(2),
            seq: 9,
        });
        vec![
            SyncMsg::Gossip {
                ops: vec![mk(mb, 1, 1, 5).into(), mk(LogId::Blobs, 2, 3, 0).into()],
            },
            SyncMsg::Gossip { ops: vec![] },
            SyncMsg::Have {
                user: user(),
                logs: vec![(mb, v), (LogId::Mailboxes, LogVersion::default())],
                account_version: 3,
            },
            SyncMsg::Ops {
                user: user(),
                log: mb,
                ops: vec![mk(mb, 1, 2, 7).into()],
                more: true,
            },
            SyncMsg::WantChunks {
                user: user(),
                chunks: vec![(BlobId([1; 16]), 0), (BlobId([1; 16]), 7)],
            },
            SyncMsg::Chunk(BlobChunk {
                user: user(),
                blob: BlobId([1; 16]),
                index: 2,
                bytes: vec![9; 100].into(),
            }),
            SyncMsg::Account {
                user: user(),
                version: 2,
                record: b"wrapped".to_vec(),
            },
        ]
    }

    #[test]
    fn round_trip_every_variant() {
        for m in all_variants() {
            let bytes = m.encode();
            assert_eq!(bytes[0], SYNC_FORMAT_VERSION);
            assert_eq!(SyncMsg::decode(&bytes), Ok(m.clone()));
            assert!(bytes.len() <= MAX_MESSAGE_BYTES);
        }
    }

    #[test]
    fn truncations_and_trailing_bytes_are_errors() {
        for m in all_variants() {
            let bytes = m.encode();
            for n in 0..bytes.len() {
                assert!(SyncMsg::decode(&bytes[..n]).is_err(), "{m:?} cut at {n}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(SyncMsg::decode(&long), Err(SyncError::Trailing(1)));
        }
        assert_eq!(SyncMsg::decode(&[]), Err(SyncError::Empty));
        assert_eq!(SyncMsg::decode(&[9, 0]), Err(SyncError::Version(9)));
    }

    #[test]
    fn oversize_and_out_of_bounds_rejected() {
        let big = vec![SYNC_FORMAT_VERSION; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            SyncMsg::decode(&big),
            Err(SyncError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        let chunks = vec![(BlobId([0; 16]), 0); MAX_WANT_CHUNKS + 1];
        let m = SyncMsg::WantChunks {
            user: user(),
            chunks,
        };
        assert!(matches!(
            SyncMsg::decode(&m.encode()),
            Err(SyncError::Invalid(_))
        ));
        let m = SyncMsg::Chunk(BlobChunk {
            user: user(),
            blob: BlobId([0; 16]),
            index: 0,
            bytes: vec![0; CHUNK_BYTES + 1].into(),
        });
        assert!(matches!(
            SyncMsg::decode(&m.encode()),
            Err(SyncError::Invalid(_))
        ));
        let m = SyncMsg::Account {
            user: user(),
            version: 1,
            record: vec![0; MAX_ACCOUNT_BYTES + 1],
        };
        assert!(matches!(
            SyncMsg::decode(&m.encode()),
            Err(SyncError::Invalid(_))
        ));
        let m = SyncMsg::Ops {
            user: user(),
            log: LogId::Blobs,
            ops: vec![mk(LogId::Mailboxes, 1, 1, 1).into()],
            more: false,
        };
        assert!(matches!(
            SyncMsg::decode(&m.encode()),
            Err(SyncError::Invalid(_))
        ));
        let m = SyncMsg::Gossip {
            ops: vec![mk(LogId::Mailboxes, 1, 0, 1).into()],
        };
        assert!(matches!(
            SyncMsg::decode(&m.encode()),
            Err(SyncError::Invalid(_))
        ));
        let m = SyncMsg::Have {
            user: user(),
            logs: vec![
                (LogId::Blobs, LogVersion::default()),
                (LogId::Blobs, LogVersion::default()),
            ],
            account_version: 0,
        };
        assert!(matches!(
            SyncMsg::decode(&m.encode()),
            Err(SyncError::Invalid(_))
        ));
        // A huge claimed length on little input fails without allocating it.
        let mut lie = vec![SYNC_FORMAT_VERSION, 0];
        lie.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            SyncMsg::decode(&lie),
            Err(SyncError::Malformed(_))
        ));
    }

    #[test]
    fn gossip_split_stays_under_page() {
        let ops: Vec<Arc<Op>> = (1..=5)
            .map(|s| mk(LogId::Mailboxes, 1, s, PAGE_BYTES / 2).into())
            .collect();
        let msgs = SyncMsg::gossip(ops);
        assert_eq!(msgs.len(), 5);
        let ops: Vec<Arc<Op>> = (1..=50)
            .map(|s| mk(LogId::Mailboxes, 1, s, 100).into())
            .collect();
        let msgs = SyncMsg::gossip(ops);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].user(), Some(user()));
    }

    #[test]
    fn receive_reports_new_duplicates_rejects_and_gaps() {
        let mut u = UserLogs::new(user());
        let mut foreign = mk(LogId::Mailboxes, 1, 1, 1);
        foreign.user = UserId([1; 16]);
        let rx = u
            .receive(SyncMsg::Gossip {
                ops: vec![mk(LogId::Mailboxes, 1, 1, 1).into(), foreign.into()],
            })
            .unwrap();
        assert_eq!(rx.new_ops.len(), 1);
        assert_eq!(rx.rejected.len(), 1);
        assert!(!rx.send_have);
        let rx = u
            .receive(SyncMsg::Gossip {
                ops: vec![
                    mk(LogId::Mailboxes, 1, 1, 1).into(),
                    mk(LogId::Mailboxes, 1, 3, 1).into(),
                ],
            })
            .unwrap();
        assert_eq!(rx.duplicates, 1);
        assert!(rx.send_have, "a gap calls for a Have");
        let other = SyncMsg::Account {
            user: UserId([1; 16]),
            version: 1,
            record: vec![],
        };
        assert_eq!(u.receive(other), Err(SyncError::WrongUser));
        assert_eq!(u.receive(u.have()), Err(SyncError::Unexpected));
        let acct = SyncMsg::Account {
            user: user(),
            version: 2,
            record: b"r".to_vec(),
        };
        assert_eq!(
            u.receive(acct.clone()).unwrap().account,
            Some((2, b"r".to_vec()))
        );
        assert_eq!(u.receive(acct).unwrap().account, None);
    }

    #[test]
    fn answer_sends_newer_account_and_needs_detects_lack() {
        let mut a = UserLogs::new(user());
        let mut b = UserLogs::new(user());
        a.set_account(2, b"two".to_vec());
        b.set_account(1, b"one".to_vec());
        b.insert(mk(LogId::Mailboxes, 1, 1, 3)).unwrap();
        let SyncMsg::Have {
            logs,
            account_version,
            ..
        } = b.have()
        else {
            unreachable!()
        };
        assert!(a.needs(&logs, account_version));
        let ans = a.answer(&logs, account_version, PAGE_BYTES);
        assert_eq!(
            ans,
            vec![SyncMsg::Account {
                user: user(),
                version: 2,
                record: b"two".to_vec()
            }]
        );
        let SyncMsg::Have {
            logs,
            account_version,
            ..
        } = a.have()
        else {
            unreachable!()
        };
        assert!(!a.needs(&logs, account_version));
        assert!(b.needs(&logs, account_version), "b lacks the newer account");
        let mut c = b.clone();
        c.set_account(2, b"two".to_vec());
        assert!(!c.needs(&logs, account_version));
    }

    #[test]
    fn chunks_wanted_fit_and_served() {
        let mut u = UserLogs::new(user());
        let blob = BlobId([6; 16]);
        let ann = BlobAnnounce {
            blob,
            len: CHUNK_BYTES as u64 * 2 + 1,
            sealed: vec![],
            codec: Codec::Raw,
        };
        let mut op = mk(LogId::Blobs, 1, 1, 0);
        op.payload = ann.encode().into();
        u.insert(op).unwrap();
        let mut store = MemStore::new();
        let c0 = BlobChunk {
            user: user(),
            blob,
            index: 0,
            bytes: vec![1; CHUNK_BYTES].into(),
        };
        assert!(u.chunk_fits(&c0));
        assert!(!u.chunk_fits(&BlobChunk {
            bytes: vec![1; 3].into(),
            ..c0.clone()
        }));
        store.put_chunk(&c0).unwrap();
        let want = u.wanted_chunks(|b, i| store.has_chunk(&user(), b, i).unwrap(), 10);
        assert_eq!(want, vec![(blob, 1), (blob, 2)]);
        assert_eq!(u.wanted_chunks(|_, _| false, 2).len(), 2);
        let served = answer_want_chunks(&store, &user(), &[(blob, 0), (blob, 1)]).unwrap();
        assert_eq!(served, vec![SyncMsg::Chunk(c0)]);
        // Loading from the store rebuilds the same logs.
        let mut s = MemStore::new();
        for op in u.logs().flat_map(|l| l.iter()) {
            s.put_op(op).unwrap();
        }
        let loaded = UserLogs::load(&s, user()).unwrap();
        assert_eq!(loaded.blobs(), u.blobs());
    }

    /// Pulls everything `from` has that `to` lacks, Have after Have. Returns
    /// the ids sent, checking none is sent twice nor sent while held.
    fn pull(to: &mut UserLogs, from: &UserLogs, budget: usize) -> Result<Vec<OpId>, TestCaseError> {
        let mut sent: BTreeSet<(LogId, OpId)> = BTreeSet::new();
        for _round in 0..10_000 {
            let have = SyncMsg::decode(&to.have().encode()).unwrap();
            let SyncMsg::Have {
                logs,
                account_version,
                ..
            } = have
            else {
                unreachable!()
            };
            let mut again = false;
            let answer = from.answer(&logs, account_version, budget);
            let op_bytes: Vec<usize> = answer
                .iter()
                .flat_map(|m| match m {
                    SyncMsg::Ops { ops, .. } => ops.iter().map(|o| o.encoded_len()).collect(),
                    _ => vec![],
                })
                .collect();
            prop_assert!(op_bytes.len() <= 1 || op_bytes.iter().sum::<usize>() <= budget);
            for msg in answer {
                let bytes = msg.encode();
                prop_assert!(bytes.len() <= MAX_MESSAGE_BYTES);
                if let SyncMsg::Ops { ops, .. } = &msg {
                    prop_assert!(!ops.is_empty());
                    for op in ops {
                        prop_assert!(sent.insert((op.log, op.id)), "op {:?} sent twice", op.id);
                    }
                }
                let rx = to.receive(SyncMsg::decode(&bytes).unwrap()).unwrap();
                prop_assert_eq!(rx.duplicates, 0);
                prop_assert!(rx.rejected.is_empty());
                again |= rx.send_have;
            }
            if !again {
                return Ok(sent.into_iter().map(|(_, id)| id).collect());
            }
        }
        Err(TestCaseError::fail("no convergence"))
    }

    fn ids(u: &UserLogs) -> BTreeSet<(LogId, OpId)> {
        u.logs()
            .flat_map(|l| l.iter())
            .map(|o| (o.log, o.id))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Two replicas holding random overlapping subsets of a universe of
        /// ops converge through repeated Have/Ops exchanges, each op sent at
        /// most once and never to a replica holding it.
        #[test]
        fn anti_entropy_converges_without_resending(
            membership in prop::collection::vec(0u8..4, 1..120),
            sizes in prop::collection::vec(0usize..400, 120),
            budget in 1usize..3000,
        ) {
            let logs = [LogId::Mailboxes, LogId::Blobs, LogId::Mailbox(MailboxId([1; 16]))];
            let mut a = UserLogs::new(user());
            let mut b = UserLogs::new(user());
            let mut universe = BTreeSet::new();
            for (i, m) in membership.iter().enumerate() {
                let log = logs[i % 3];
                let origin = (i / 3 % 3) as u64 + 1;
                let seq = (i / 9) as u64 + 1;
                let mut op = mk(log, origin, seq, sizes[i]);
                op.hlc = Timestamp::new(seq, 0);
                if m & 1 != 0 { a.insert(op.clone()).unwrap(); universe.insert((log, op.id)); }
                if m & 2 != 0 { b.insert(op.clone()).unwrap(); universe.insert((log, op.id)); }
            }
            let (a0, b0) = (ids(&a), ids(&b));
            let to_a = pull(&mut a, &b, budget)?;
            let to_b = pull(&mut b, &a, budget)?;
            prop_assert_eq!(ids(&a), universe.clone());
            prop_assert_eq!(ids(&b), universe.clone());
            prop_assert_eq!(to_a.len(), b0.difference(&a0).count());
            prop_assert_eq!(to_b.len(), a0.difference(&b0).count());
            for l in logs {
                prop_assert_eq!(a.log(&l).map(|x| x.version().clone()), b.log(&l).map(|x| x.version().clone()));
            }
            // Nothing left to exchange.
            let SyncMsg::Have { logs: hl, account_version, .. } = a.have() else { unreachable!() };
            prop_assert!(b.answer(&hl, account_version, budget).is_empty());
            prop_assert!(!b.needs(&hl, account_version));
        }

        /// Random bytes never make decode panic.
        #[test]
        fn decode_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let _ = SyncMsg::decode(&bytes);
            let mut v = vec![SYNC_FORMAT_VERSION];
            v.extend_from_slice(&bytes);
            if let Ok(m) = SyncMsg::decode(&v) {
                prop_assert!(m.validate().is_ok());
            }
        }

        /// Corrupting a valid message never makes decode panic, and what
        /// decodes is valid.
        #[test]
        fn decode_mutations_never_panic(which in 0usize..7, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = all_variants()[which].encode();
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            if let Ok(m) = SyncMsg::decode(&bytes) {
                prop_assert!(m.validate().is_ok());
            }
        }
    }
}
