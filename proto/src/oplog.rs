//! Operations and the in-memory op log of one (user, log).
//!
//! # Causal context
//!
//! An op carries two pieces of causal context, both in clear:
//! - its hybrid-logical-clock timestamp ([`Op::hlc`]), which orders it after
//!   every op its origin had seen when it was made;
//! - its origin's gap-free sequence number ([`OpId::seq`], 1, 2, 3, … per
//!   origin and log), which lets a replica tell exactly which ops of an origin
//!   it has (a version vector of contiguous prefixes, [`OpLog::version`]).
//!
//! No cross-origin causal delivery is needed: mailbox ops commute, and
//! observed-remove sets carry explicit tags (a remove names the add tags it
//! observed), so applying ops of different origins in any order converges.
//! Ops are idempotent: a duplicate is recognised by its [`OpId`] and ignored.
//!
//! An origin must never issue two different ops under one [`OpId`]: it makes
//! an op durable (store flush) before it gossips it, so that a crash cannot
//! make it reuse a sequence number. [`OpLog::insert`] reports a violation
//! as [`OpLogError::Conflict`].
//!
//! # Blobs
//!
//! A user's blob (the full message bytes, encrypted elsewhere) is announced by
//! an op in [`LogId::Blobs`] whose payload is a [`BlobAnnounce`]: the blob id
//! and its length in clear (so that a replica without the user's key can
//! fetch and keep the chunks), plus sealed metadata produced by the crypto
//! layer. The bytes travel as separate [`BlobChunk`] records of at most
//! [`CHUNK_BYTES`] each.

use crate::codec::Codec;
use crate::hlc::Timestamp;
use crate::ids::{BlobId, LogId, OpId, ReplicaId, UserId};
use crdts::VClock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

/// Largest accepted op payload. An op always fits one sync message.
pub const MAX_OP_PAYLOAD: usize = 1024 * 1024;

/// Largest blob chunk (256 KiB). All chunks of a blob but the last are full.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// At most this many op ids held beyond a gap are listed in a [`LogVersion`].
pub const MAX_BEYOND: usize = 1024;

/// One operation of one log of one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Owner of the log.
    pub user: UserId,
    /// The log.
    pub log: LogId,
    /// Origin replica and its gap-free sequence number (from 1).
    pub id: OpId,
    /// Hybrid timestamp at the origin when the op was made.
    pub hlc: Timestamp,
    /// How many UIDs the op needs (n for an op that adds n messages, else
    /// 0). In clear, so that a replica without the user's key can sequence
    /// UIDs.
    pub uids: u32,
    /// Ciphertext, bound by the crypto layer to (user, log, id). Never
    /// decrypted here. Shared: the log, the store and the messages that
    /// carry an op hold one copy (encoded like a `Vec<u8>`).
    #[serde(with = "crate::bytes::shared")]
    pub payload: Arc<[u8]>,
}

/// Length of the LEB128 varint postcard uses for `v`.
fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Encoded length of a [`LogId`] in postcard.
fn log_id_len(log: &LogId) -> usize {
    match log {
        LogId::Mailboxes | LogId::Blobs => 1,
        LogId::Mailbox(_) => 1 + 16,
    }
}

impl Op {
    /// Exact length of the postcard encoding of this op.
    pub fn encoded_len(&self) -> usize {
        16 + log_id_len(&self.log)
            + varint_len(self.id.origin.0)
            + varint_len(self.id.seq)
            + varint_len(self.hlc.0)
            + varint_len(self.uids as u64)
            + varint_len(self.payload.len() as u64)
            + self.payload.len()
    }

    /// The blob this op announces, when it is a well-formed op of
    /// [`LogId::Blobs`].
    pub fn blob_announce(&self) -> Option<BlobAnnounce> {
        if self.log != LogId::Blobs {
            return None;
        }
        BlobAnnounce::decode(&self.payload)
    }
}

/// Payload of an op of [`LogId::Blobs`]: announces one blob of the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobAnnounce {
    /// The blob.
    pub blob: BlobId,
    /// Length of the stored (encrypted) blob bytes, i.e. of all its chunks.
    pub len: u64,
    /// Encrypted blob metadata, produced and read by the crypto layer
    /// (bound to the op's place); opaque here.
    #[serde(with = "crate::bytes")]
    pub sealed: Vec<u8>,
    /// How the plaintext holds the message. Encoded as one byte after the
    /// fields above, absent for [`Codec::Raw`] (as announcements were
    /// before blobs were compressed).
    #[serde(skip)]
    pub codec: Codec,
}

/// The byte that follows an announcement of a [`Codec::Lz4`] blob.
const CODEC_LZ4: u8 = 1;

impl BlobAnnounce {
    /// Postcard encoding, to be used as an [`Op::payload`].
    pub fn encode(&self) -> Vec<u8> {
        let mut v = postcard::to_allocvec(self).unwrap_or_default();
        if self.codec == Codec::Lz4 {
            v.push(CODEC_LZ4);
        }
        v
    }

    /// Decodes an announce; `None` when malformed or trailed by junk.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (mut a, rest) = postcard::take_from_bytes::<BlobAnnounce>(bytes).ok()?;
        a.codec = match rest {
            [] => Codec::Raw,
            [CODEC_LZ4] => Codec::Lz4,
            _ => return None,
        };
        Some(a)
    }

    /// How many chunks the blob has.
    pub fn chunks(&self) -> u64 {
        chunk_count(self.len)
    }
}

/// Number of chunks of a blob of `len` bytes (0 for an empty blob).
pub fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK_BYTES as u64)
}

/// Expected length of chunk `index` of a blob of `len` bytes, `None` when the
/// blob has no such chunk.
pub fn chunk_len(len: u64, index: u32) -> Option<usize> {
    let start = index as u64 * CHUNK_BYTES as u64;
    if start >= len {
        return None;
    }
    Some((len - start).min(CHUNK_BYTES as u64) as usize)
}

/// One chunk of a user's blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobChunk {
    /// Owner of the blob.
    pub user: UserId,
    /// The blob.
    pub blob: BlobId,
    /// Index of the chunk in the blob, from 0.
    pub index: u32,
    /// The chunk's bytes (ciphertext), at most [`CHUNK_BYTES`]. Shared: the
    /// store and the messages that carry a chunk hold one copy (encoded
    /// like a `Vec<u8>`).
    #[serde(with = "crate::bytes::shared")]
    pub bytes: Arc<[u8]>,
}

/// Why an op was not inserted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpLogError {
    /// The op belongs to another (user, log).
    #[error("op {id:?} belongs to {user:?}/{log:?}, not this log")]
    WrongLog {
        /// The op's id.
        id: OpId,
        /// The op's user.
        user: UserId,
        /// The op's log.
        log: LogId,
    },
    /// Sequence numbers start at 1.
    #[error("op {0:?} has sequence number 0")]
    ZeroSeq(OpId),
    /// The payload is larger than [`MAX_OP_PAYLOAD`].
    #[error("op {id:?} payload of {len} bytes exceeds {MAX_OP_PAYLOAD}")]
    TooLarge {
        /// The op's id.
        id: OpId,
        /// Its payload length.
        len: usize,
    },
    /// Another op with the same id and different content is already stored.
    #[error("op {0:?} conflicts with a different op of the same id")]
    Conflict(OpId),
}

/// Outcome of a successful [`OpLog::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The op was not known; it is now in the log.
    New,
    /// The same op was already in the log; nothing changed.
    Duplicate,
}

/// What a replica has of one log: the contiguous prefix per origin, plus
/// (at most [`MAX_BEYOND`]) ids of ops it holds beyond a gap, so that a peer
/// does not re-send those either.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogVersion {
    /// Per origin, the highest `n` such that ops 1..=n are all held.
    pub prefix: VClock<ReplicaId>,
    /// Ops held above the prefix (received beyond a gap).
    pub beyond: Vec<OpId>,
}

impl LogVersion {
    /// Whether the replica described holds op `id`.
    pub fn covers(&self, id: &OpId) -> bool {
        id.seq <= self.prefix.get(&id.origin) || self.beyond.contains(id)
    }
}

impl From<VClock<ReplicaId>> for LogVersion {
    fn from(prefix: VClock<ReplicaId>) -> Self {
        LogVersion {
            prefix,
            beyond: Vec::new(),
        }
    }
}

/// A page of ops a peer lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The ops, origin by origin (ascending [`ReplicaId`]), each origin's in
    /// ascending sequence.
    pub ops: Vec<Arc<Op>>,
    /// Whether the peer lacks more ops than this page holds.
    pub more: bool,
}

impl Page {
    /// Sum of the ops' encoded lengths.
    pub fn encoded_len(&self) -> usize {
        self.ops.iter().map(|o| o.encoded_len()).sum()
    }
}

/// How far beyond the end of an origin's vector of ops an op may land and
/// still be placed in it (the slots between wait empty); ops further ahead
/// (a peer's gap, or a bogus sequence number) go to a map.
const DENSE_SLACK: u64 = MAX_BEYOND as u64;

/// One origin's ops, by sequence number. An origin's ops arrive nearly in
/// order, so they sit in a vector indexed by `seq - 1` (an ordered map
/// filled in ascending order leaves its nodes half empty, and this is the
/// largest structure of a replica); the few far beyond its end sit in a
/// map, every key of which is above the vector's length. Each slot is a
/// pointer to a shared op: the log, the store and the messages that
/// carried the op (and, in the simulator, every replica that received
/// the same message) hold one copy.
#[derive(Clone, Debug, Default)]
struct Seqs {
    dense: Vec<Option<Arc<Op>>>,
    far: BTreeMap<u64, Arc<Op>>,
}

impl Seqs {
    fn get(&self, seq: u64) -> Option<&Arc<Op>> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        match self.dense.get(i) {
            Some(slot) => slot.as_ref(),
            None => self.far.get(&seq),
        }
    }

    /// Places an op, returning the one it replaces.
    fn insert(&mut self, seq: u64, op: Arc<Op>) -> Option<Arc<Op>> {
        let len = self.dense.len() as u64;
        if seq == 0 || seq > len.saturating_add(DENSE_SLACK) {
            return self.far.insert(seq, op);
        }
        if seq > len {
            self.dense.resize_with(seq as usize, || None);
            // Keep every key of the map above the vector's length.
            while let Some(e) = self.far.first_entry() {
                if *e.key() > seq {
                    break;
                }
                let (k, v) = e.remove_entry();
                self.dense[k as usize - 1] = Some(v);
            }
        }
        self.dense[seq as usize - 1].replace(op)
    }

    /// The ops above `seq`, ascending.
    fn since(&self, seq: u64) -> impl Iterator<Item = (u64, &Arc<Op>)> + '_ {
        let start = usize::try_from(seq)
            .unwrap_or(usize::MAX)
            .min(self.dense.len());
        self.dense[start..]
            .iter()
            .enumerate()
            .filter_map(move |(i, o)| o.as_ref().map(|o| ((start + i + 1) as u64, o)))
            .chain(
                self.far
                    .range((Bound::Excluded(seq), Bound::Unbounded))
                    .map(|(k, v)| (*k, v)),
            )
    }
}

/// The ops of one (user, log), in memory.
///
/// Tracks the version vector of contiguous prefixes; ops received beyond a
/// gap are held in the log (they are served, iterated and counted like the
/// others) and folded into the prefix when the gap fills.
#[derive(Clone, Debug)]
pub struct OpLog {
    user: UserId,
    log: LogId,
    ops: BTreeMap<ReplicaId, Seqs>,
    prefix: VClock<ReplicaId>,
    len: usize,
    /// Sum of the prefixes: `len - in_prefix` ops are held beyond a gap
    /// (usually none, and then [`OpLog::beyond`] looks at no origin).
    in_prefix: usize,
}

impl OpLog {
    /// An empty log.
    pub fn new(user: UserId, log: LogId) -> Self {
        OpLog {
            user,
            log,
            ops: BTreeMap::new(),
            prefix: VClock::new(),
            len: 0,
            in_prefix: 0,
        }
    }

    /// Owner of the log.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// Which log this is.
    pub fn log(&self) -> &LogId {
        &self.log
    }

    /// Number of ops held (including those beyond a gap).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the log holds no op.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks an op could be inserted here (place, sequence, size).
    pub fn check(&self, op: &Op) -> Result<(), OpLogError> {
        if op.user != self.user || op.log != self.log {
            return Err(OpLogError::WrongLog {
                id: op.id,
                user: op.user,
                log: op.log,
            });
        }
        if op.id.seq == 0 {
            return Err(OpLogError::ZeroSeq(op.id));
        }
        if op.payload.len() > MAX_OP_PAYLOAD {
            return Err(OpLogError::TooLarge {
                id: op.id,
                len: op.payload.len(),
            });
        }
        Ok(())
    }

    /// Inserts an op. Idempotent; ops may arrive in any order.
    pub fn insert(&mut self, op: impl Into<Arc<Op>>) -> Result<Inserted, OpLogError> {
        let op = op.into();
        self.check(&op)?;
        let origin = op.id.origin;
        let seq = op.id.seq;
        let per_origin = self.ops.entry(origin).or_default();
        if let Some(existing) = per_origin.get(seq) {
            return if Arc::ptr_eq(existing, &op) || **existing == *op {
                Ok(Inserted::Duplicate)
            } else {
                Err(OpLogError::Conflict(op.id))
            };
        }
        per_origin.insert(seq, op);
        self.len += 1;
        let old = self.prefix.get(&origin);
        let mut top = old;
        while per_origin.get(top + 1).is_some() {
            top += 1;
        }
        if top > old {
            self.prefix.dots.insert(origin, top);
            self.in_prefix += (top - old) as usize;
        }
        Ok(Inserted::New)
    }

    /// The version vector: per origin, the contiguous prefix held.
    pub fn version(&self) -> &VClock<ReplicaId> {
        &self.prefix
    }

    /// Ids of ops held beyond a gap, ascending.
    pub fn beyond(&self) -> impl Iterator<Item = OpId> + '_ {
        let any = self.len > self.in_prefix;
        self.ops
            .iter()
            .take_while(move |_| any)
            .flat_map(move |(origin, per)| {
                let p = self.prefix.get(origin);
                per.since(p).map(|(seq, _)| OpId {
                    origin: *origin,
                    seq,
                })
            })
    }

    /// Whether some op is held beyond a gap.
    pub fn has_gaps(&self) -> bool {
        self.beyond().next().is_some()
    }

    /// What this log holds, to send in a `Have`.
    pub fn summary(&self) -> LogVersion {
        LogVersion {
            prefix: self.prefix.clone(),
            beyond: self.beyond().take(MAX_BEYOND).collect(),
        }
    }

    /// Whether op `id` is held.
    pub fn contains(&self, id: &OpId) -> bool {
        self.ops
            .get(&id.origin)
            .is_some_and(|p| p.get(id.seq).is_some())
    }

    /// The op `id`, if held.
    pub fn get(&self, id: &OpId) -> Option<&Op> {
        self.ops.get(&id.origin)?.get(id.seq).map(|o| &**o)
    }

    /// All ops, origin by origin, each origin's in ascending sequence.
    pub fn iter(&self) -> impl Iterator<Item = &Op> + '_ {
        self.ops
            .values()
            .flat_map(|p| p.since(0).map(|(_, op)| &**op))
    }

    /// The ops of `origin` with a sequence number above `seq`, ascending
    /// (those beyond a gap included).
    pub fn ops_since(&self, origin: ReplicaId, seq: u64) -> impl Iterator<Item = &Op> + '_ {
        self.shared_since(origin, seq).map(|op| &**op)
    }

    /// [`OpLog::ops_since`], as the shared ops.
    fn shared_since(&self, origin: ReplicaId, seq: u64) -> impl Iterator<Item = &Arc<Op>> + '_ {
        self.ops
            .get(&origin)
            .into_iter()
            .flat_map(move |p| p.since(seq).map(|(_, op)| op))
    }

    /// The ops a peer that holds `peer` lacks, in order.
    fn lacking<'a>(&'a self, peer: &'a LogVersion) -> impl Iterator<Item = &'a Arc<Op>> + 'a {
        let beyond: BTreeSet<OpId> = peer.beyond.iter().copied().collect();
        self.ops.keys().flat_map(move |origin| {
            let beyond = beyond.clone();
            self.shared_since(*origin, peer.prefix.get(origin))
                .filter(move |op| !beyond.contains(&op.id))
        })
    }

    /// Whether a peer that holds `peer` lacks any op of this log.
    pub fn peer_lacks_any(&self, peer: &LogVersion) -> bool {
        self.lacking(peer).next().is_some()
    }

    /// The ops a peer holding `peer` lacks, as one page: origin by origin
    /// (ascending [`ReplicaId`]), each origin's from the peer's prefix
    /// upwards, so each page extends the peer's contiguous prefixes and the
    /// next `Have` does not ask for them again. Ops the peer lists as held
    /// beyond a gap are skipped. The page's ops encode to at most
    /// `budget_bytes` except that a page holds at least one op when the peer
    /// lacks any; `more` tells whether the peer lacks more.
    pub fn missing_for(&self, peer: &LogVersion, budget_bytes: usize) -> Page {
        self.page(peer, budget_bytes, true)
    }

    /// As [`OpLog::missing_for`]; with `at_least_one` false the page may be
    /// empty (with `more` set) when the first op does not fit the budget.
    pub(crate) fn page(&self, peer: &LogVersion, budget_bytes: usize, at_least_one: bool) -> Page {
        let mut page = Page::default();
        let mut used = 0usize;
        for op in self.lacking(peer) {
            let len = op.encoded_len();
            let fits = used.saturating_add(len) <= budget_bytes;
            if fits || (at_least_one && page.ops.is_empty()) {
                used = used.saturating_add(len);
                page.ops.push(op.clone());
            } else {
                page.more = true;
                break;
            }
        }
        page
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids::MailboxId;

    pub fn user() -> UserId {
        UserId([7; 16])
    }

    pub fn mk(log: LogId, origin: u64, seq: u64, payload_len: usize) -> Op {
        Op {
            user: user(),
            log,
            id: OpId {
                origin: ReplicaId(origin),
                seq,
            },
            hlc: Timestamp::new(seq.wrapping_add(1_000), origin as u16),
            uids: (seq % 3) as u32,
            payload: vec![(origin as u8) ^ (seq as u8); payload_len].into(),
        }
    }

    fn op(origin: u64, seq: u64) -> Op {
        mk(LogId::Mailboxes, origin, seq, 10)
    }

    fn log() -> OpLog {
        OpLog::new(user(), LogId::Mailboxes)
    }

    #[test]
    fn ops_far_ahead_and_out_of_order_iterate_like_a_map() {
        let mut l = log();
        let mut want = BTreeMap::new();
        let mut x = 3u64;
        for _ in 0..3_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let seq = match (x >> 50) % 4 {
                0 => 1 + (x >> 20) % 5_000,
                1 => 1 + (x >> 20) % 200,
                2 => 5_000 + (x >> 20) % 100_000,
                _ => u64::MAX - (x >> 20) % 3,
            };
            let o = op(1 + (x >> 40) % 2, seq);
            let new = !want.contains_key(&o.id);
            assert_eq!(
                l.insert(o.clone()),
                Ok(if new {
                    Inserted::New
                } else {
                    Inserted::Duplicate
                })
            );
            want.insert(o.id, o);
        }
        assert_eq!(l.len(), want.len());
        assert!(l.iter().eq(want.values()));
        for origin in [1, 2] {
            for from in [0, 7, 199, 5_000, 60_000, u64::MAX - 2] {
                let r = ReplicaId(origin);
                let w = want
                    .values()
                    .filter(|o| o.id.origin == r && o.id.seq > from);
                assert!(l.ops_since(r, from).eq(w));
            }
        }
        for id in want.keys() {
            assert!(l.contains(id));
        }
        let prefix = |o: u64| {
            (1..)
                .take_while(|s| want.contains_key(&op(o, *s).id))
                .count() as u64
        };
        assert_eq!(l.version().get(&ReplicaId(1)), prefix(1));
        let beyond: Vec<OpId> = want
            .keys()
            .filter(|id| id.seq > prefix(id.origin.0))
            .copied()
            .collect();
        assert!(l.beyond().eq(beyond));
    }

    #[test]
    fn insert_duplicate_and_conflict() {
        let mut l = log();
        assert_eq!(l.insert(op(1, 1)), Ok(Inserted::New));
        assert_eq!(l.insert(op(1, 1)), Ok(Inserted::Duplicate));
        let mut other = op(1, 1);
        other.payload = [&other.payload[..], &[0]].concat().into();
        assert_eq!(l.insert(other), Err(OpLogError::Conflict(op(1, 1).id)));
        assert_eq!(l.len(), 1);
        assert!(l.contains(&op(1, 1).id));
        assert_eq!(l.get(&op(1, 1).id), Some(&op(1, 1)));
        assert_eq!(l.get(&op(1, 2).id), None);
    }

    #[test]
    fn rejects_wrong_place_zero_seq_and_oversize() {
        let mut l = log();
        let mut wrong_user = op(1, 1);
        wrong_user.user = UserId([8; 16]);
        assert!(matches!(
            l.insert(wrong_user),
            Err(OpLogError::WrongLog { .. })
        ));
        let wrong_log = mk(LogId::Mailbox(MailboxId([1; 16])), 1, 1, 1);
        assert!(matches!(
            l.insert(wrong_log),
            Err(OpLogError::WrongLog { .. })
        ));
        assert!(matches!(l.insert(op(1, 0)), Err(OpLogError::ZeroSeq(_))));
        let big = mk(LogId::Mailboxes, 1, 1, MAX_OP_PAYLOAD + 1);
        assert!(matches!(l.insert(big), Err(OpLogError::TooLarge { .. })));
        assert!(l.is_empty());
        assert!(l.version().is_empty());
    }

    #[test]
    fn gap_then_fill() {
        let mut l = log();
        l.insert(op(1, 1)).unwrap();
        l.insert(op(1, 3)).unwrap();
        l.insert(op(1, 4)).unwrap();
        l.insert(op(2, 2)).unwrap();
        assert_eq!(l.version().get(&ReplicaId(1)), 1);
        assert_eq!(l.version().get(&ReplicaId(2)), 0);
        assert!(l.has_gaps());
        let s = l.summary();
        assert_eq!(s.beyond, vec![op(1, 3).id, op(1, 4).id, op(2, 2).id]);
        assert_eq!(l.len(), 4);
        l.insert(op(1, 2)).unwrap();
        assert_eq!(l.version().get(&ReplicaId(1)), 4);
        l.insert(op(2, 1)).unwrap();
        assert_eq!(l.version().get(&ReplicaId(2)), 2);
        assert!(!l.has_gaps());
        let seqs: Vec<u64> = l.ops_since(ReplicaId(1), 2).map(|o| o.id.seq).collect();
        assert_eq!(seqs, vec![3, 4]);
        assert_eq!(l.ops_since(ReplicaId(9), 0).count(), 0);
        assert_eq!(l.iter().count(), 6);
    }

    #[test]
    fn missing_for_is_the_difference_and_respects_budget() {
        let mut a = log();
        for s in 1..=10 {
            a.insert(op(1, s)).unwrap();
        }
        for s in 1..=5 {
            a.insert(op(2, s)).unwrap();
        }
        let mut peer = LogVersion::default();
        peer.prefix.dots.insert(ReplicaId(1), 7);
        peer.beyond.push(op(2, 4).id);
        let all = a.missing_for(&peer, usize::MAX);
        let ids: Vec<(u64, u64)> = all.ops.iter().map(|o| (o.id.origin.0, o.id.seq)).collect();
        assert_eq!(
            ids,
            vec![(1, 8), (1, 9), (1, 10), (2, 1), (2, 2), (2, 3), (2, 5)]
        );
        assert!(!all.more);
        let one = op(1, 8).encoded_len();
        let page = a.missing_for(&peer, 2 * one + 1);
        assert_eq!(page.ops.len(), 2);
        assert!(page.more);
        assert!(page.encoded_len() <= 2 * one + 1);
        // A budget smaller than one op still yields one op.
        let tiny = a.missing_for(&peer, 0);
        assert_eq!(tiny.ops.len(), 1);
        assert!(tiny.more);
        assert!(a.page(&peer, 0, false).ops.is_empty());
        // Nothing lacking: empty page.
        let full = a.summary();
        assert_eq!(a.missing_for(&full, 0), Page::default());
        assert!(!a.peer_lacks_any(&full));
        assert!(a.peer_lacks_any(&peer));
    }

    #[test]
    fn encoded_len_is_exact() {
        for (origin, seq, len) in [
            (0, 1, 0),
            (127, 128, 5),
            (u64::MAX, u64::MAX, 300),
            (1 << 40, 3, 70_000),
        ] {
            for log in [
                LogId::Mailboxes,
                LogId::Blobs,
                LogId::Mailbox(MailboxId([3; 16])),
            ] {
                let mut o = mk(log, origin, seq, len);
                o.hlc = Timestamp(u64::MAX >> (seq % 64));
                o.uids = u32::MAX >> (origin % 32);
                assert_eq!(o.encoded_len(), postcard::to_allocvec(&o).unwrap().len());
            }
        }
    }

    #[test]
    fn chunk_helpers_and_blob_announce() {
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(CHUNK_BYTES as u64), 1);
        assert_eq!(chunk_count(CHUNK_BYTES as u64 + 1), 2);
        assert_eq!(chunk_len(0, 0), None);
        assert_eq!(chunk_len(10, 0), Some(10));
        assert_eq!(chunk_len(CHUNK_BYTES as u64 + 3, 0), Some(CHUNK_BYTES));
        assert_eq!(chunk_len(CHUNK_BYTES as u64 + 3, 1), Some(3));
        assert_eq!(chunk_len(CHUNK_BYTES as u64 + 3, 2), None);
        assert_eq!(chunk_len(u64::MAX, u32::MAX), Some(CHUNK_BYTES));
        let a = BlobAnnounce {
            blob: BlobId([5; 16]),
            len: 600_000,
            sealed: vec![1, 2, 3],
            codec: Codec::Raw,
        };
        assert_eq!(a.chunks(), 3);
        let mut o = mk(LogId::Blobs, 1, 1, 0);
        o.payload = a.encode().into();
        assert_eq!(o.blob_announce(), Some(a.clone()));
        o.payload = [&o.payload[..], &[0]].concat().into();
        assert_eq!(o.blob_announce(), None);
        // A compressed blob's announcement: one more byte, and only that.
        let z = BlobAnnounce {
            codec: Codec::Lz4,
            ..a.clone()
        };
        assert_eq!(z.encode().len(), a.encode().len() + 1);
        o.payload = z.encode().into();
        assert_eq!(o.blob_announce(), Some(z.clone()));
        o.payload = [&z.encode()[..], &[1]].concat().into();
        assert_eq!(o.blob_announce(), None);
        let mut m = mk(LogId::Mailboxes, 1, 1, 0);
        m.payload = a.encode().into();
        assert_eq!(m.blob_announce(), None);
    }
}
