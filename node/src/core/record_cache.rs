//! Decrypted records of unlocked users' messages kept in memory (the
//! common search fields, the summaries): keyed by blob, since a blob's
//! records are computed from its bytes alone and never change (flags,
//! MODSEQs and UIDs are not in them; an expunged message's UID no longer
//! leads to its blob). Bounded in bytes for all users together, never
//! written anywhere, and a user's entries are dropped with the user's keys
//! ([`RecordCache::forget`]).

use aerogramme_proto::ids::{BlobId, UserId};
use std::collections::{HashMap, VecDeque};

/// A value's cost in memory, roughly, for a cache's bound.
pub(crate) trait Weigh {
    /// Bytes of memory the value holds.
    fn weight(&self) -> usize;
}

/// What one entry costs besides its value (map slot, `Arc`, order slot).
pub(crate) const ENTRY_OVERHEAD: usize = 96;

/// Records of unlocked users' blobs, in memory, bounded in bytes.
///
/// Once full, an entry is added only when asked to make room
/// ([`RecordCache::insert`]'s `make_room`): then the oldest entries (of
/// any user) are dropped first. Reads that miss fill the free room only,
/// so that a scan of a mailbox larger than the bound does not churn.
pub(crate) struct RecordCache<V> {
    users: HashMap<UserId, (usize, HashMap<BlobId, V>)>,
    /// Every entry, oldest first.
    order: VecDeque<(UserId, BlobId)>,
    bytes: usize,
    bound: usize,
}

impl<V: Weigh> RecordCache<V> {
    /// An empty cache of at most `bound` bytes (roughly).
    pub(crate) fn new(bound: usize) -> Self {
        RecordCache {
            users: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            bound,
        }
    }

    /// The cached records of `user`'s blobs.
    pub(crate) fn of(&self, user: &UserId) -> Option<&HashMap<BlobId, V>> {
        self.users.get(user).map(|(_, m)| m)
    }

    /// Caches the record of `blob` if there is room or, with `make_room`,
    /// after dropping the oldest entries. A blob already cached keeps its
    /// entry.
    pub(crate) fn insert(&mut self, user: &UserId, blob: BlobId, v: V, make_room: bool) {
        let w = v.weight() + ENTRY_OVERHEAD;
        if w > self.bound || self.of(user).is_some_and(|m| m.contains_key(&blob)) {
            return;
        }
        if self.bytes + w > self.bound {
            if !make_room {
                return;
            }
            while self.bytes + w > self.bound {
                let Some((u, b)) = self.order.pop_front() else {
                    break;
                };
                self.remove(&u, &b);
            }
        }
        let (bytes, map) = self.users.entry(*user).or_default();
        map.insert(blob, v);
        *bytes += w;
        self.bytes += w;
        self.order.push_back((*user, blob));
    }

    fn remove(&mut self, user: &UserId, blob: &BlobId) {
        if let Some((bytes, map)) = self.users.get_mut(user) {
            if let Some(v) = map.remove(blob) {
                let w = v.weight() + ENTRY_OVERHEAD;
                *bytes -= w;
                self.bytes -= w;
            }
            if map.is_empty() {
                self.users.remove(user);
            }
        }
    }

    /// Drops every entry of `user`.
    pub(crate) fn forget(&mut self, user: &UserId) {
        if let Some((bytes, _)) = self.users.remove(user) {
            self.bytes -= bytes;
            self.order.retain(|(u, _)| u != user);
        }
    }

    /// Bytes held (roughly, as counted against the bound).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value of a given weight.
    struct W(usize);

    impl Weigh for W {
        fn weight(&self) -> usize {
            self.0
        }
    }

    fn blob(n: u32) -> BlobId {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&n.to_be_bytes());
        BlobId(b)
    }

    fn has(c: &RecordCache<W>, u: &UserId, n: u32) -> bool {
        c.of(u).is_some_and(|m| m.contains_key(&blob(n)))
    }

    #[test]
    fn bounded_without_making_room_and_forgets_a_user() {
        let (alice, bob) = (UserId([1; 16]), UserId([2; 16]));
        let one = 4 + ENTRY_OVERHEAD;
        let mut c = RecordCache::new(10 * one);
        c.insert(&alice, blob(1), W(4), false);
        c.insert(&alice, blob(1), W(4), false);
        c.insert(&bob, blob(2), W(4), false);
        assert_eq!(c.bytes(), 2 * one);
        assert!(has(&c, &alice, 1) && has(&c, &bob, 2));
        c.forget(&alice);
        assert!(c.of(&alice).is_none());
        assert_eq!(c.bytes(), one);
        for n in 10..100 {
            c.insert(&alice, blob(n), W(4), false);
        }
        // Full: the first nine went in, nothing after.
        assert_eq!(c.bytes(), 10 * one);
        assert!(has(&c, &alice, 18) && !has(&c, &alice, 19));
        assert!(has(&c, &bob, 2));
        // Too large for the bound: never kept.
        c.forget(&alice);
        c.insert(&alice, blob(1), W(11 * one), true);
        assert!(!has(&c, &alice, 1));
        assert_eq!(c.bytes(), one);
    }

    #[test]
    fn making_room_drops_the_oldest_of_any_user() {
        let (alice, bob) = (UserId([1; 16]), UserId([2; 16]));
        let one = 4 + ENTRY_OVERHEAD;
        let mut c = RecordCache::new(3 * one);
        c.insert(&bob, blob(1), W(4), true);
        c.insert(&alice, blob(2), W(4), true);
        c.insert(&alice, blob(3), W(4), true);
        c.insert(&alice, blob(4), W(4), true);
        assert!(c.of(&bob).is_none(), "bob's entry was the oldest");
        assert!(has(&c, &alice, 2) && has(&c, &alice, 4));
        assert_eq!(c.bytes(), 3 * one);
        // Two entries' worth at once: the two oldest go.
        c.insert(&bob, blob(5), W(4 + one), true);
        assert!(!has(&c, &alice, 2) && !has(&c, &alice, 3) && has(&c, &alice, 4));
        assert_eq!(c.bytes(), 3 * one);
        // Forgetting a user also forgets its place in the order.
        c.forget(&alice);
        assert_eq!(c.bytes(), 2 * one);
        c.insert(&alice, blob(6), W(4), true);
        assert!(has(&c, &bob, 5) && has(&c, &alice, 6));
        c.insert(&alice, blob(7), W(4 + one), true);
        assert!(c.of(&bob).is_none() && has(&c, &alice, 6) && has(&c, &alice, 7));
        assert_eq!(c.bytes(), 3 * one);
    }
}
