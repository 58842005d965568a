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

use crate::ids::{BlobId, LogId, OpId, UserId};
use crate::oplog::{BlobChunk, Op};
use std::collections::{BTreeMap, BTreeSet};

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
    Op(UserId, LogId, OpId, Option<Op>),
    Chunk((UserId, BlobId, u32), Option<Vec<u8>>),
    Checkpoint((UserId, LogId), Option<(u64, Vec<u8>)>),
    Meta(Vec<u8>, Option<Vec<u8>>),
    Account(UserId, Option<(u64, Vec<u8>)>),
}

/// Meta records, keyed in two levels: the first `META_SPLIT` bytes of the
/// key, then the rest. Keys share long prefixes (tag, user, mailbox: 33
/// bytes, then a record number), so one flat map spent its time comparing
/// those prefixes. The order is the same as the flat map's.
#[derive(Clone, Debug, Default)]
struct MetaMap(BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>);

const META_SPLIT: usize = 33;

fn split_key(key: &[u8]) -> (&[u8], &[u8]) {
    key.split_at(key.len().min(META_SPLIT))
}

impl MetaMap {
    fn insert(&mut self, key: &[u8], value: Vec<u8>) -> Option<Vec<u8>> {
        let (a, b) = split_key(key);
        match self.0.get_mut(a) {
            Some(m) => m.insert(b.to_vec(), value),
            None => {
                let mut m = BTreeMap::new();
                m.insert(b.to_vec(), value);
                self.0.insert(a.to_vec(), m);
                None
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        let (a, b) = split_key(key);
        if let Some(m) = self.0.get_mut(a) {
            m.remove(b);
            if m.is_empty() {
                self.0.remove(a);
            }
        }
    }

    fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        let (a, b) = split_key(key);
        self.0.get(a)?.get(b)
    }

    fn scan(&self, prefix: &[u8]) -> MetaRecords {
        let (a, b) = split_key(prefix);
        let mut out = Vec::new();
        for (k, m) in self.0.range(a.to_vec()..) {
            if !k.starts_with(a) {
                break;
            }
            if b.is_empty() {
                out.extend(
                    m.iter()
                        .map(|(r, v)| ([k.as_slice(), r].concat(), v.clone())),
                );
            } else {
                // The prefix is longer than the split: `k == a` here.
                out.extend(
                    m.range(b.to_vec()..)
                        .take_while(|(r, _)| r.starts_with(b))
                        .map(|(r, v)| ([k.as_slice(), r].concat(), v.clone())),
                );
                break;
            }
        }
        out
    }
}

#[derive(Clone, Debug, Default)]
struct Tables {
    ops: BTreeMap<(UserId, LogId), BTreeMap<OpId, Op>>,
    chunks: BTreeMap<(UserId, BlobId, u32), Vec<u8>>,
    checkpoints: BTreeMap<(UserId, LogId), (u64, Vec<u8>)>,
    meta: MetaMap,
    accounts: BTreeMap<UserId, (u64, Vec<u8>)>,
}

impl Tables {
    fn undo(&mut self, u: Undo) {
        match u {
            Undo::Op(user, log, id, old) => {
                let m = self.ops.entry((user, log)).or_default();
                match old {
                    Some(op) => {
                        m.insert(id, op);
                    }
                    None => {
                        m.remove(&id);
                        if m.is_empty() {
                            self.ops.remove(&(user, log));
                        }
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
        self.check()?;
        let old = self
            .live
            .ops
            .entry((op.user, op.log))
            .or_default()
            .insert(op.id, op.clone());
        self.journal.push(Undo::Op(op.user, op.log, op.id, old));
        Ok(())
    }

    fn ops(&self, user: &UserId, log: &LogId) -> Result<Vec<Op>, StoreError> {
        Ok(self
            .live
            .ops
            .get(&(*user, *log))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    fn logs(&self, user: &UserId) -> Result<Vec<LogId>, StoreError> {
        Ok(self
            .live
            .ops
            .iter()
            .filter(|((u, _), m)| u == user && !m.is_empty())
            .map(|((_, l), _)| *l)
            .collect())
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
        let old = self.live.meta.insert(key, value.to_vec());
        self.journal.push(Undo::Meta(key.to_vec(), old));
        Ok(())
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.live.meta.get(key).cloned())
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
    use crate::ids::{MailboxId, ReplicaId};
    use crate::oplog::tests::{mk, user};

    fn chunk(i: u32) -> BlobChunk {
        BlobChunk {
            user: user(),
            blob: BlobId([2; 16]),
            index: i,
            bytes: vec![i as u8; 5],
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
