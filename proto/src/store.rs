//! Storage: the [`Store`] trait the drivers implement (sled in the node) and
//! [`MemStore`], the in-memory implementation used by tests and the simulator.
//!
//! # Durability contract
//!
//! Writes (`put_*`) are visible to reads at once but are only guaranteed to
//! survive a crash once [`Store::flush`] has returned `Ok`: every record
//! written before a successful `flush` is durable. The driver flushes once per
//! batch of outputs, *before* releasing the acknowledgements of that batch
//! (APPEND OK, LMTP 250, a gossiped op, an exposed UID): group commit, so
//! durability costs one fsync per batch rather than one per message. A crash
//! may lose any write made after the last successful flush, and nothing else.
//!
//! Writes are idempotent overwrites: putting a record again under the same
//! key replaces it. The store does no merging or validation; callers (the op
//! log, the account logic) decide what to write.

use crate::ids::{BlobId, LogId, UserId};
use crate::oplog::{BlobChunk, Op};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The underlying storage failed.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// No space left; the write was not made.
    #[error("storage full")]
    Full,
}

/// Meta records as `(key, value)` pairs, in key order.
pub type MetaRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// Persistent storage of one replica. Synchronous and object-safe
/// (`&mut dyn Store`); see the module documentation for the durability
/// contract of [`Store::flush`].
pub trait Store {
    /// Stores an op under (user, log, id).
    fn put_op(&mut self, op: &Op) -> Result<(), StoreError>;

    /// [`Store::put_op`] for an op the caller shares: a store that keeps
    /// ops in memory may keep this one instead of a copy.
    fn put_shared_op(&mut self, op: &Arc<Op>) -> Result<(), StoreError> {
        self.put_op(op)
    }

    /// All stored ops of one log, in (origin, seq) order.
    fn ops(&self, user: &UserId, log: &LogId) -> Result<Vec<Op>, StoreError>;

    /// The logs of a user that have at least one stored op, ascending.
    fn logs(&self, user: &UserId) -> Result<Vec<LogId>, StoreError>;

    /// Stores a blob chunk under (user, blob, index).
    fn put_chunk(&mut self, chunk: &BlobChunk) -> Result<(), StoreError>;

    /// A stored blob chunk.
    fn get_chunk(
        &self,
        user: &UserId,
        blob: &BlobId,
        index: u32,
    ) -> Result<Option<BlobChunk>, StoreError>;

    /// Lends a stored blob chunk's bytes to `f`, without the copy
    /// [`Store::get_chunk`] returns where the store can; false when the
    /// chunk is not stored.
    fn read_chunk(
        &self,
        user: &UserId,
        blob: &BlobId,
        index: u32,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, StoreError> {
        Ok(self
            .get_chunk(user, blob, index)?
            .map(|c| f(&c.bytes))
            .is_some())
    }

    /// Whether a blob chunk is stored.
    fn has_chunk(&self, user: &UserId, blob: &BlobId, index: u32) -> Result<bool, StoreError> {
        Ok(self.get_chunk(user, blob, index)?.is_some())
    }

    /// Stores a checkpoint (an encrypted snapshot) of a log covering its ops
    /// up to `upto` (meaning defined by the log layer). Replaces the stored
    /// checkpoint of that log when `upto` is not lower than its own, and is
    /// ignored otherwise.
    fn put_checkpoint(
        &mut self,
        user: &UserId,
        log: &LogId,
        upto: u64,
        bytes: &[u8],
    ) -> Result<(), StoreError>;

    /// The checkpoint of a log with the highest `upto`, as `(upto, bytes)`.
    fn latest_checkpoint(
        &self,
        user: &UserId,
        log: &LogId,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Stores a value of the replica's own safety state (exposed UID
    /// high-water marks, epochs owned, the HLC, …) under `key`.
    fn put_meta(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// A value stored with [`Store::put_meta`].
    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every meta record whose key starts with `prefix`, in key order.
    fn scan_meta(&self, prefix: &[u8]) -> Result<MetaRecords, StoreError>;

    /// Stores a user's account record (replacing the stored one, whatever its
    /// version: the caller keeps the newest).
    fn put_account(&mut self, user: &UserId, version: u64, record: &[u8])
        -> Result<(), StoreError>;

    /// A user's account record, as `(version, record)`.
    fn get_account(&self, user: &UserId) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Every user with a stored op, chunk, checkpoint or account, ascending.
    fn users(&self) -> Result<Vec<UserId>, StoreError>;

    /// Makes every write made so far durable; see the module documentation.
    fn flush(&mut self) -> Result<(), StoreError>;
}

/// What a write replaced, journaled by [`MemStore`] until the next flush so
/// that a crash can take the write back.
#[derive(Clone, Debug)]
enum Undo {
    /// The last op written to this log goes.
    Op((UserId, LogId)),
    Chunk((UserId, BlobId, u32), Option<Arc<[u8]>>),
    Checkpoint((UserId, LogId), Option<(u64, Vec<u8>)>),
    /// The key inline: the replica's keys are 41 bytes, and one is
    /// journaled per record written.
    Meta(smallvec::SmallVec<[u8; 48]>, Option<Box<[u8]>>),
    Account(UserId, Option<(u64, Vec<u8>)>),
}

/// Meta records, keyed in two levels: the first `META_SPLIT` bytes of the
/// key (a hash map: the replica's keys share long prefixes — tag, user,
/// mailbox: 33 bytes — and comparing them in an ordered map was the first
/// line of the simulator's profile), then the rest, in a vector sorted by
/// key. The rest is almost always an 8-byte big-endian record number
/// that only grows, so a write is usually a push at the end and compares
/// integers. [`MetaMap::scan`] sorts what it returns: the order is the flat
/// map's.
#[derive(Clone, Debug, Default)]
struct MetaMap(HashMap<Prefix, Records, BuildPrefixHasher>);

/// The first `META_SPLIT` bytes of a meta key, held inline (no pointer to
/// follow when comparing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Prefix {
    len: u8,
    bytes: [u8; META_SPLIT],
}

impl Prefix {
    fn new(a: &[u8]) -> Self {
        let mut bytes = [0; META_SPLIT];
        bytes[..a.len()].copy_from_slice(a);
        Prefix {
            len: a.len() as u8,
            bytes,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// One prefix's records. Their suffixes (the key after the split) come in
/// two kinds, each in its own vector sorted by suffix: 8 bytes (the
/// replica's record numbers: almost every record), held as a big-endian
/// number, which orders like its bytes, and any other length, held as
/// bytes. A suffix of one kind never equals one of the other, and
/// [`MetaMap::scan`] sorts what it returns. A number's entry is 24 bytes
/// (a single vector of either kind took 48 per record).
#[derive(Clone, Debug, Default)]
struct Records {
    nums: Vec<(u64, Bytes)>,
    other: Vec<(Bytes, Bytes)>,
}

/// A meta key's suffix or a meta value, as stored.
type Bytes = Box<[u8]>;

impl Records {
    fn is_empty(&self) -> bool {
        self.nums.is_empty() && self.other.is_empty()
    }
}

/// Puts `(k, v)` in a vector sorted by key (a push when `k` is the
/// greatest, as a new record number is); returns the value replaced.
fn put_sorted<K: Ord>(recs: &mut Vec<(K, Box<[u8]>)>, k: K, v: Box<[u8]>) -> Option<Box<[u8]>> {
    if recs.last().is_none_or(|(last, _)| *last < k) {
        recs.push((k, v));
        return None;
    }
    match recs.binary_search_by(|(x, _)| x.cmp(&k)) {
        Ok(i) => Some(std::mem::replace(&mut recs[i].1, v)),
        Err(i) => {
            recs.insert(i, (k, v));
            None
        }
    }
}

/// An 8-byte suffix as its number.
fn suffix_num(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

const META_SPLIT: usize = 33;

fn split_key(key: &[u8]) -> (&[u8], &[u8]) {
    key.split_at(key.len().min(META_SPLIT))
}

/// A small multiplicative hash for the meta map's prefixes (keys chosen by
/// the replica, not by peers; the map is never iterated in an order that
/// matters) and the chunk and op tables' keys.
#[derive(Clone, Copy, Debug, Default)]
struct BuildPrefixHasher;

#[derive(Default)]
struct PrefixHasher(u64);

impl std::hash::BuildHasher for BuildPrefixHasher {
    type Hasher = PrefixHasher;
    fn build_hasher(&self) -> PrefixHasher {
        PrefixHasher(0)
    }
}

impl std::hash::Hasher for PrefixHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

impl MetaMap {
    fn insert(&mut self, key: &[u8], value: Box<[u8]>) -> Option<Box<[u8]>> {
        let (a, b) = split_key(key);
        let recs = self.0.entry(Prefix::new(a)).or_default();
        match suffix_num(b) {
            Some(n) => put_sorted(&mut recs.nums, n, value),
            None => put_sorted(&mut recs.other, b.into(), value),
        }
    }

    fn remove(&mut self, key: &[u8]) {
        let (a, b) = split_key(key);
        let a = Prefix::new(a);
        if let Some(recs) = self.0.get_mut(&a) {
            match suffix_num(b) {
                Some(n) => {
                    if let Ok(i) = recs.nums.binary_search_by(|(k, _)| k.cmp(&n)) {
                        recs.nums.remove(i);
                    }
                }
                None => {
                    if let Ok(i) = recs.other.binary_search_by(|(k, _)| (**k).cmp(b)) {
                        recs.other.remove(i);
                    }
                }
            }
            if recs.is_empty() {
                self.0.remove(&a);
            }
        }
    }

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let (a, b) = split_key(key);
        let recs = self.0.get(&Prefix::new(a))?;
        match suffix_num(b) {
            Some(n) => {
                let i = recs.nums.binary_search_by(|(k, _)| k.cmp(&n)).ok()?;
                Some(&recs.nums[i].1)
            }
            None => {
                let i = recs.other.binary_search_by(|(k, _)| (**k).cmp(b)).ok()?;
                Some(&recs.other[i].1)
            }
        }
    }

    fn scan(&self, prefix: &[u8]) -> MetaRecords {
        let (a, b) = split_key(prefix);
        let mut out = Vec::new();
        for (k, recs) in &self.0 {
            let k = k.as_slice();
            if !k.starts_with(a) || (!b.is_empty() && k.len() != a.len()) {
                continue;
            }
            for (n, v) in &recs.nums {
                let r = n.to_be_bytes();
                if r.starts_with(b) {
                    out.push(([k, &r].concat(), v.to_vec()));
                }
            }
            for (r, v) in &recs.other {
                if r.starts_with(b) {
                    out.push(([k, r].concat(), v.to_vec()));
                }
            }
        }
        out.sort_unstable_by(|x, y| x.0.cmp(&y.0));
        out
    }
}

#[derive(Clone, Debug, Default)]
struct Tables {
    /// Each log's ops in the order they were written, a write of an op
    /// already held included: most writes are new ops, so a write is a
    /// push (the ordered per-origin tables it replaces were a visible
    /// share of the simulator's time), and [`Store::ops`], read only when
    /// a replica starts, sorts them and keeps the last write of each id.
    ops: HashMap<(UserId, LogId), Vec<Arc<Op>>, BuildPrefixHasher>,
    /// A hash map: every replica asks [`Store::has_chunk`] for each chunk
    /// of each incomplete blob, and an ordered map's search on the 36-byte
    /// keys showed in the simulator's profile. Never iterated in an order
    /// that matters. (Blob ids come from peers: fine for a store the
    /// tests and the simulator use.)
    chunks: HashMap<(UserId, BlobId, u32), Arc<[u8]>, BuildPrefixHasher>,
    checkpoints: BTreeMap<(UserId, LogId), (u64, Vec<u8>)>,
    meta: MetaMap,
    accounts: BTreeMap<UserId, (u64, Vec<u8>)>,
}

impl Tables {
    fn undo(&mut self, u: Undo) {
        match u {
            Undo::Op(key) => {
                if let Some(v) = self.ops.get_mut(&key) {
                    v.pop();
                    if v.is_empty() {
                        self.ops.remove(&key);
                    }
                }
            }
            Undo::Chunk(k, old) => match old {
                Some(v) => {
                    self.chunks.insert(k, v);
                }
                None => {
                    self.chunks.remove(&k);
                }
            },
            Undo::Checkpoint(k, old) => match old {
                Some(v) => {
                    self.checkpoints.insert(k, v);
                }
                None => {
                    self.checkpoints.remove(&k);
                }
            },
            Undo::Meta(k, old) => match old {
                Some(v) => {
                    self.meta.insert(&k, v);
                }
                None => self.meta.remove(&k),
            },
            Undo::Account(k, old) => match old {
                Some(v) => {
                    self.accounts.insert(k, v);
                }
                None => {
                    self.accounts.remove(&k);
                }
            },
        }
    }
}

/// In-memory [`Store`] for tests and the simulator.
///
/// Keeps one copy of the data and, since the last flush, a journal of what
/// each write replaced; [`MemStore::crash`] takes back exactly the journaled
/// (unflushed) writes. (It used to keep a second, durable copy and apply
/// every write twice.)
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    live: Tables,
    journal: Vec<Undo>,
    full: bool,
    flushes: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a crash: every write since the last successful flush is
    /// lost; everything flushed stays.
    pub fn crash(&mut self) {
        while let Some(u) = self.journal.pop() {
            self.live.undo(u);
        }
    }

    /// While `full`, every `put_*` fails with [`StoreError::Full`] and
    /// changes nothing (fault injection for the simulator).
    pub fn set_full(&mut self, full: bool) {
        self.full = full;
    }

    /// Number of writes not yet flushed.
    pub fn unflushed(&self) -> usize {
        self.journal.len()
    }

    /// Number of successful flushes so far.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.full {
            return Err(StoreError::Full);
        }
        Ok(())
    }
}

impl Store for MemStore {
    fn put_op(&mut self, op: &Op) -> Result<(), StoreError> {
        self.put_shared_op(&Arc::new(op.clone()))
    }

    fn put_shared_op(&mut self, op: &Arc<Op>) -> Result<(), StoreError> {
        self.check()?;
        let key = (op.user, op.log);
        self.live.ops.entry(key).or_default().push(op.clone());
        self.journal.push(Undo::Op(key));
        Ok(())
    }

    fn ops(&self, user: &UserId, log: &LogId) -> Result<Vec<Op>, StoreError> {
        let Some(written) = self.live.ops.get(&(*user, *log)) else {
            return Ok(Vec::new());
        };
        // In (origin, seq) order, the last write of an id winning (a stable
        // sort keeps the writes of one id in the order they were made).
        let mut all: Vec<&Arc<Op>> = written.iter().collect();
        all.sort_by_key(|o| (o.id.origin, o.id.seq));
        let mut out: Vec<Op> = Vec::with_capacity(all.len());
        for op in all {
            match out.last_mut() {
                Some(last) if last.id == op.id => *last = Op::clone(op),
                _ => out.push(Op::clone(op)),
            }
        }
        Ok(out)
    }

    fn logs(&self, user: &UserId) -> Result<Vec<LogId>, StoreError> {
        let mut logs: Vec<LogId> = self
            .live
            .ops
            .iter()
            .filter(|((u, _), v)| u == user && !v.is_empty())
            .map(|((_, l), _)| *l)
            .collect();
        logs.sort_unstable();
        Ok(logs)
    }

    fn put_chunk(&mut self, chunk: &BlobChunk) -> Result<(), StoreError> {
        self.check()?;
        let k = (chunk.user, chunk.blob, chunk.index);
        let old = self.live.chunks.insert(k, chunk.bytes.clone());
        self.journal.push(Undo::Chunk(k, old));
        Ok(())
    }

    fn get_chunk(
        &self,
        user: &UserId,
        blob: &BlobId,
        index: u32,
    ) -> Result<Option<BlobChunk>, StoreError> {
        Ok(self
            .live
            .chunks
            .get(&(*user, *blob, index))
            .map(|bytes| BlobChunk {
                user: *user,
                blob: *blob,
                index,
                bytes: bytes.clone(),
            }))
    }

    fn has_chunk(&self, user: &UserId, blob: &BlobId, index: u32) -> Result<bool, StoreError> {
        Ok(self.live.chunks.contains_key(&(*user, *blob, index)))
    }

    fn put_checkpoint(
        &mut self,
        user: &UserId,
        log: &LogId,
        upto: u64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.check()?;
        let k = (*user, *log);
        let old = self.live.checkpoints.get(&k).cloned();
        if old.as_ref().is_none_or(|(u, _)| upto >= *u) {
            self.live.checkpoints.insert(k, (upto, bytes.to_vec()));
        }
        self.journal.push(Undo::Checkpoint(k, old));
        Ok(())
    }

    fn latest_checkpoint(
        &self,
        user: &UserId,
        log: &LogId,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self.live.checkpoints.get(&(*user, *log)).cloned())
    }

    fn put_meta(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.check()?;
        let old = self.live.meta.insert(key, value.into());
        self.journal.push(Undo::Meta(key.into(), old));
        Ok(())
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.live.meta.get(key).map(<[u8]>::to_vec))
    }

    fn scan_meta(&self, prefix: &[u8]) -> Result<MetaRecords, StoreError> {
        Ok(self.live.meta.scan(prefix))
    }

    fn put_account(
        &mut self,
        user: &UserId,
        version: u64,
        record: &[u8],
    ) -> Result<(), StoreError> {
        self.check()?;
        let old = self.live.accounts.insert(*user, (version, record.to_vec()));
        self.journal.push(Undo::Account(*user, old));
        Ok(())
    }

    fn get_account(&self, user: &UserId) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self.live.accounts.get(user).cloned())
    }

    fn users(&self) -> Result<Vec<UserId>, StoreError> {
        let t = &self.live;
        let mut users = BTreeSet::new();
        users.extend(t.ops.keys().map(|(u, _)| *u));
        users.extend(t.chunks.keys().map(|(u, _, _)| *u));
        users.extend(t.checkpoints.keys().map(|(u, _)| *u));
        users.extend(t.accounts.keys().copied());
        Ok(users.into_iter().collect())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.journal.clear();
        self.flushes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MailboxId, OpId, ReplicaId};
    use crate::oplog::tests::{mk, user};

    fn chunk(i: u32) -> BlobChunk {
        BlobChunk {
            user: user(),
            blob: BlobId([2; 16]),
            index: i,
            bytes: vec![i as u8; 5].into(),
        }
    }

    #[test]
    fn reads_see_writes_and_records_round_trip() {
        let mut s = MemStore::new();
        let mb = LogId::Mailbox(MailboxId([4; 16]));
        s.put_op(&mk(mb, 2, 1, 3)).unwrap();
        s.put_op(&mk(mb, 1, 2, 3)).unwrap();
        s.put_op(&mk(LogId::Blobs, 1, 1, 3)).unwrap();
        let ids: Vec<_> = s.ops(&user(), &mb).unwrap().iter().map(|o| o.id).collect();
        assert_eq!(
            ids,
            vec![
                OpId {
                    origin: ReplicaId(1),
                    seq: 2
                },
                OpId {
                    origin: ReplicaId(2),
                    seq: 1
                }
            ]
        );
        assert_eq!(s.logs(&user()).unwrap(), vec![LogId::Blobs, mb]);
        assert!(s.ops(&UserId([0; 16]), &mb).unwrap().is_empty());
        s.put_chunk(&chunk(0)).unwrap();
        assert_eq!(
            s.get_chunk(&user(), &BlobId([2; 16]), 0).unwrap(),
            Some(chunk(0))
        );
        assert!(!s.has_chunk(&user(), &BlobId([2; 16]), 1).unwrap());
        s.put_checkpoint(&user(), &mb, 5, b"five").unwrap();
        s.put_checkpoint(&user(), &mb, 3, b"three").unwrap();
        assert_eq!(
            s.latest_checkpoint(&user(), &mb).unwrap(),
            Some((5, b"five".to_vec()))
        );
        s.put_meta(b"k", b"v").unwrap();
        assert_eq!(s.get_meta(b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(s.get_meta(b"x").unwrap(), None);
        let other = UserId([9; 16]);
        s.put_account(&other, 2, b"acct").unwrap();
        assert_eq!(s.get_account(&other).unwrap(), Some((2, b"acct".to_vec())));
        assert_eq!(s.users().unwrap(), vec![user(), other]);
    }

    #[test]
    fn meta_scan_matches_a_flat_map_around_the_split() {
        let mut s = MemStore::new();
        let mut flat = BTreeMap::new();
        let mut k = 0u64;
        for len in [1usize, 5, 32, 33, 34, 41, 60] {
            for first in [b'a', b's', b'v'] {
                for n in 0..3u8 {
                    k += 1;
                    let mut key = vec![first; len];
                    key[len - 1] = n;
                    s.put_meta(&key, &k.to_be_bytes()).unwrap();
                    flat.insert(key, k.to_be_bytes().to_vec());
                }
            }
        }
        for prefix in [
            &b""[..],
            b"s",
            b"ss",
            &[b's'; 33][..],
            &[b's'; 34][..],
            &[b's'; 40][..],
        ] {
            let want: MetaRecords = flat
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(s.scan_meta(prefix).unwrap(), want, "prefix {prefix:?}");
        }
        s.crash();
        assert!(s.scan_meta(b"").unwrap().is_empty());
    }

    #[test]
    fn meta_writes_in_any_order_match_a_flat_map() {
        // Record numbers out of order, overwrites, suffixes of other
        // lengths beside the 8-byte ones, and a crash that takes some back.
        let mut s = MemStore::new();
        let mut flat = BTreeMap::new();
        let mut x = 7u64;
        let key = |x: &mut u64| {
            *x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut k = vec![b's'; 33];
            k[20] = (*x >> 60) as u8;
            match (*x >> 40) % 4 {
                0 => k.extend_from_slice(&((*x >> 8) % 50).to_be_bytes()),
                1 => k.extend_from_slice(&[(*x >> 8) as u8; 3]),
                2 => k.truncate(10 + (*x >> 8) as usize % 23),
                _ => k.extend_from_slice(&[(*x >> 8) as u8; 9]),
            }
            k
        };
        for i in 0..2_000u64 {
            let k = key(&mut x);
            s.put_meta(&k, &i.to_be_bytes()).unwrap();
            flat.insert(k, i.to_be_bytes().to_vec());
            if i == 1_000 {
                s.flush().unwrap();
            }
        }
        let all = |m: &BTreeMap<Vec<u8>, Vec<u8>>| -> MetaRecords {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        assert_eq!(s.scan_meta(b"").unwrap(), all(&flat));
        for (k, v) in &flat {
            assert_eq!(s.get_meta(k).unwrap().as_ref(), Some(v));
        }
        let mut x2 = 7u64;
        let mut durable = BTreeMap::new();
        for i in 0..=1_000u64 {
            durable.insert(key(&mut x2), i.to_be_bytes().to_vec());
        }
        s.crash();
        assert_eq!(s.scan_meta(b"").unwrap(), all(&durable));
        let mut long = durable.clone();
        long.retain(|k, _| k.starts_with(&[b's'; 20]));
        assert_eq!(s.scan_meta(&[b's'; 20]).unwrap(), all(&long));
    }

    #[test]
    fn crash_drops_exactly_unflushed_writes() {
        let mut s = MemStore::new();
        let d: &mut dyn Store = &mut s;
        d.put_op(&mk(LogId::Mailboxes, 1, 1, 3)).unwrap();
        d.put_chunk(&chunk(0)).unwrap();
        d.put_meta(b"hw", b"1").unwrap();
        d.put_checkpoint(&user(), &LogId::Mailboxes, 1, b"c1")
            .unwrap();
        d.flush().unwrap();
        d.put_op(&mk(LogId::Mailboxes, 1, 2, 3)).unwrap();
        d.put_chunk(&chunk(1)).unwrap();
        d.put_meta(b"hw", b"2").unwrap();
        d.put_checkpoint(&user(), &LogId::Mailboxes, 2, b"c2")
            .unwrap();
        d.put_account(&user(), 1, b"a").unwrap();
        assert_eq!(s.unflushed(), 5);
        s.crash();
        assert_eq!(s.unflushed(), 0);
        assert_eq!(
            s.ops(&user(), &LogId::Mailboxes).unwrap(),
            vec![mk(LogId::Mailboxes, 1, 1, 3)]
        );
        assert!(s.has_chunk(&user(), &BlobId([2; 16]), 0).unwrap());
        assert!(!s.has_chunk(&user(), &BlobId([2; 16]), 1).unwrap());
        assert_eq!(s.get_meta(b"hw").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            s.latest_checkpoint(&user(), &LogId::Mailboxes).unwrap(),
            Some((1, b"c1".to_vec()))
        );
        assert_eq!(s.get_account(&user()).unwrap(), None);
        // Flushed writes survive repeated crashes; new writes flush again.
        s.put_meta(b"hw", b"3").unwrap();
        s.flush().unwrap();
        s.crash();
        assert_eq!(s.get_meta(b"hw").unwrap(), Some(b"3".to_vec()));
        assert_eq!(s.flushes(), 2);
    }

    #[test]
    fn full_store_refuses_writes() {
        let mut s = MemStore::new();
        s.set_full(true);
        assert_eq!(s.put_meta(b"k", b"v"), Err(StoreError::Full));
        assert_eq!(s.get_meta(b"k").unwrap(), None);
        assert_eq!(s.unflushed(), 0);
        s.set_full(false);
        s.put_meta(b"k", b"v").unwrap();
        assert_eq!(s.unflushed(), 1);
    }
}
