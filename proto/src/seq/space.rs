//! The number spaces a sequencer hands out (UIDs and MODSEQs) and the ranges
//! reserved in them for replicas cut off from the owner.
//!
//! Invariants (each holds on the committed ledger, so on every replica that
//! applied it):
//! - reservations never overlap, and the owner's counter never allocates a
//!   value inside any reservation: a value is assigned by exactly one
//!   authority (the owner of the ballot, or the one replica whose range it is);
//! - the counter only grows, and when it reaches a reservation it jumps past
//!   it, so a reserved range is never handed out by anyone else, ever.

use super::msg::Uids;
use crate::ids::ReplicaId;
use serde::{Deserialize, Serialize};

/// A half-open interval `[lo, hi)` of a number space.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// First value.
    pub lo: u64,
    /// One past the last value.
    pub hi: u64,
}

impl Span {
    /// Whether `v` lies in the span.
    pub fn contains(&self, v: u64) -> bool {
        self.lo <= v && v < self.hi
    }
}

/// Values reserved in advance for one replica, which it may assign on its own
/// when it cannot reach the owner (L1). Committed through the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The replica the values belong to.
    pub replica: ReplicaId,
    /// Reserved UIDs.
    pub uids: Span,
    /// Reserved MODSEQs.
    pub modseqs: Span,
    /// The owner's MODSEQ counter when the reservation was committed: every
    /// committed change below it precedes the reservation in the ledger.
    /// (It does not tell what a client whose HIGHESTMODSEQ lies in this
    /// reservation has seen: the replica that showed that value may have
    /// lacked changes below it, so CHANGEDSINCE reports everything then;
    /// ARCHITECTURE.md §4.4.)
    pub floor_modseq: u64,
}

/// Sizes of the reservations and how far ahead of the counter they start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceParams {
    /// UIDs the owner may assign before it reaches the reservations.
    pub uid_gap: u64,
    /// UIDs per reservation: how many messages a cut-off replica can show
    /// per mailbox before it reaches the owner again.
    pub uid_range: u64,
    /// MODSEQs the owner may assign before it reaches the reservations.
    /// Large (2^32 by default): a member whose reservation the MODSEQ
    /// counter reaches gets a new one, and every new reservation stacks a
    /// UID range too, so a small gap made flag changes drain the UID space
    /// (ARCHITECTURE.md §4.5). MODSEQs have 63 bits to spare.
    pub modseq_gap: u64,
    /// MODSEQs per reservation.
    pub modseq_range: u64,
}

impl Default for SpaceParams {
    fn default() -> Self {
        SpaceParams {
            uid_gap: 1 << 16,
            uid_range: 1 << 12,
            modseq_gap: 1 << 32,
            modseq_range: 1 << 20,
        }
    }
}

/// Largest UID (IMAP UIDs are non-zero 32-bit numbers).
pub const MAX_UID: u64 = u32::MAX as u64;
/// Largest MODSEQ (RFC 7162: 63 bits).
pub const MAX_MODSEQ: u64 = (1 << 63) - 1;

/// The state of both number spaces as the committed ledger defines it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spaces {
    /// Next UID the owner may assign (before skipping reservations).
    pub next_uid: u64,
    /// Next MODSEQ the owner may assign.
    pub next_modseq: u64,
    /// Highest UID named by any final decision.
    pub max_uid: u64,
    /// Highest MODSEQ named by any final decision.
    pub max_modseq: u64,
    /// Every reservation ever committed, in ledger order. Kept forever: a
    /// reserved value belongs to its replica even after the counter passed.
    pub reservations: Vec<Reservation>,
}

impl Spaces {
    /// A fresh mailbox: UIDs and MODSEQs start at 1.
    pub fn new() -> Self {
        Spaces {
            next_uid: 1,
            next_modseq: 1,
            ..Default::default()
        }
    }

    /// The newest reservation of `replica`.
    pub fn reservation_of(&self, replica: ReplicaId) -> Option<&Reservation> {
        self.reservations
            .iter()
            .rev()
            .find(|r| r.replica == replica)
    }

    /// The reservation a UID belongs to.
    pub fn uid_owner(&self, uid: u64) -> Option<&Reservation> {
        self.reservations
            .iter()
            .rev()
            .find(|r| r.uids.contains(uid))
    }

    /// The reservation a MODSEQ belongs to.
    pub fn modseq_owner(&self, modseq: u64) -> Option<&Reservation> {
        self.reservations
            .iter()
            .rev()
            .find(|r| r.modseqs.contains(modseq))
    }

    fn skip_uid(&self, mut v: u64) -> u64 {
        // Reservations are few and sorted by position; loop until stable.
        loop {
            match self.reservations.iter().find(|r| r.uids.contains(v)) {
                Some(r) => v = r.uids.hi,
                None => return v,
            }
        }
    }

    fn skip_modseq(&self, mut v: u64) -> u64 {
        loop {
            match self.reservations.iter().find(|r| r.modseqs.contains(v)) {
                Some(r) => v = r.modseqs.hi,
                None => return v,
            }
        }
    }

    /// Takes `n` UIDs from the counter, skipping reservations. `None` when
    /// the UID space is exhausted.
    pub fn take_uids(&mut self, n: u32) -> Option<Uids> {
        let mut out = Uids::with_capacity(n as usize);
        let mut v = self.next_uid;
        for _ in 0..n {
            v = self.skip_uid(v);
            if v > MAX_UID {
                return None;
            }
            out.push(v as u32);
            v += 1;
        }
        self.next_uid = v;
        Some(out)
    }

    /// Takes one MODSEQ from the counter, skipping reservations.
    pub fn take_modseq(&mut self) -> Option<u64> {
        let v = self.skip_modseq(self.next_modseq);
        if v > MAX_MODSEQ {
            return None;
        }
        self.next_modseq = v + 1;
        Some(v)
    }

    /// Moves the counters past values named by a final decision.
    pub fn note_final(&mut self, uids: &[u32], modseq: u64) {
        for &u in uids {
            self.max_uid = self.max_uid.max(u as u64);
            self.next_uid = self.next_uid.max(u as u64 + 1);
        }
        self.max_modseq = self.max_modseq.max(modseq);
        self.next_modseq = self.next_modseq.max(modseq + 1);
    }

    /// Moves the counters to at least the given values (used to re-announce
    /// above what a replica has exposed).
    pub fn raise(&mut self, uid: u64, modseq: u64) {
        self.next_uid = self.next_uid.max(uid);
        self.next_modseq = self.next_modseq.max(modseq);
    }

    /// Whether the highest final values or the counters lie inside one of
    /// `replica`'s reservations: a value taken from the counters then jumps
    /// past that reservation, above every value the replica may still show
    /// from it (which could then no longer be confirmed).
    pub fn frontier_in_reservation_of(&self, replica: ReplicaId) -> bool {
        self.reservations.iter().any(|r| {
            r.replica == replica
                && (r.uids.contains(self.max_uid)
                    || r.uids.contains(self.next_uid)
                    || r.modseqs.contains(self.max_modseq)
                    || r.modseqs.contains(self.next_modseq))
        })
    }

    /// Whether a replica's newest reservation is still ahead of the counter
    /// (usable, and not yet to be renewed).
    pub fn reservation_is_ahead(&self, replica: ReplicaId) -> bool {
        match self.reservation_of(replica) {
            Some(r) => r.uids.lo >= self.next_uid && r.modseqs.lo >= self.next_modseq,
            None => false,
        }
    }

    /// A new reservation for `replica`, placed `gap` ahead of the counters
    /// and above every existing reservation. `None` when the space is full.
    pub fn plan_reservation(&self, replica: ReplicaId, p: &SpaceParams) -> Option<Reservation> {
        let top_uid = self
            .reservations
            .iter()
            .map(|r| r.uids.hi)
            .max()
            .unwrap_or(0);
        let top_mod = self
            .reservations
            .iter()
            .map(|r| r.modseqs.hi)
            .max()
            .unwrap_or(0);
        let ulo = (self.next_uid + p.uid_gap).max(top_uid);
        let mlo = (self.next_modseq + p.modseq_gap).max(top_mod);
        let uhi = ulo.checked_add(p.uid_range)?;
        let mhi = mlo.checked_add(p.modseq_range)?;
        if uhi > MAX_UID + 1 || mhi > MAX_MODSEQ + 1 {
            return None;
        }
        Some(Reservation {
            replica,
            uids: Span { lo: ulo, hi: uhi },
            modseqs: Span { lo: mlo, hi: mhi },
            floor_modseq: self.next_modseq.saturating_sub(1),
        })
    }

    /// Whether a ledger decision lies where an owner would have placed it
    /// given these spaces: values above every final one, a reservation
    /// above the counters and every other reservation.
    pub fn admits(&self, d: &super::Decision) -> bool {
        match d {
            super::Decision::Sequence { assign, .. } => {
                assign.modseq > self.max_modseq
                    && assign.uids.iter().all(|&u| u as u64 > self.max_uid)
            }
            super::Decision::Reserve(r) => {
                r.uids.lo > self.max_uid
                    && r.modseqs.lo > self.max_modseq
                    && self
                        .reservations
                        .iter()
                        .all(|o| r.uids.lo >= o.uids.hi && r.modseqs.lo >= o.modseqs.hi)
            }
        }
    }

    /// Records a committed reservation.
    pub fn reserve(&mut self, r: Reservation) {
        self.reservations.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_skips_reservations_and_they_never_overlap() {
        let p = SpaceParams {
            uid_gap: 4,
            uid_range: 3,
            modseq_gap: 4,
            modseq_range: 3,
        };
        let mut s = Spaces::new();
        let a = s.plan_reservation(ReplicaId(1), &p).unwrap();
        s.reserve(a.clone());
        let b = s.plan_reservation(ReplicaId(2), &p).unwrap();
        s.reserve(b.clone());
        assert_eq!(a.uids, Span { lo: 5, hi: 8 });
        assert_eq!(b.uids, Span { lo: 8, hi: 11 });
        let got = s.take_uids(6).unwrap();
        assert_eq!(got.as_slice(), [1, 2, 3, 4, 11, 12]);
        assert!(!s.reservation_is_ahead(ReplicaId(1)));
        assert_eq!(s.uid_owner(9).unwrap().replica, ReplicaId(2));
    }

    #[test]
    fn uid_space_exhaustion_is_reported() {
        let mut s = Spaces::new();
        s.next_uid = MAX_UID;
        assert_eq!(s.take_uids(1).as_deref(), Some(&[u32::MAX][..]));
        assert_eq!(s.take_uids(1), None);
    }
}
