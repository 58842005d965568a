//! Per-mailbox flag interning: a flag is stored in an entry as a `u32`.
//!
//! Indices `0..5` are the system flags in [`Flag::SYSTEM`] order; keyword
//! `k` gets `5 + position of k in the table`. The table only grows, so an
//! index never changes meaning. The order in which keywords were first seen
//! differs between replicas; indices never leave the replica (ops carry
//! [`Flag`]s), and a checkpoint carries its own table.

use super::flag::{Flag, Keyword};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;

/// Number of system flags, i.e. the first keyword index.
const SYSTEM_FLAGS: u32 = Flag::SYSTEM.len() as u32;

/// Keyword table of one mailbox. Serialized as the table alone; the index
/// is rebuilt on load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "Vec<Keyword>")]
pub(crate) struct Interner {
    table: Vec<Keyword>,
    index: BTreeMap<Keyword, u32>,
}

impl Interner {
    /// The index of `flag` if it has one.
    pub(crate) fn get(&self, flag: &Flag) -> Option<u32> {
        match flag {
            Flag::Seen => Some(0),
            Flag::Answered => Some(1),
            Flag::Flagged => Some(2),
            Flag::Deleted => Some(3),
            Flag::Draft => Some(4),
            Flag::Keyword(k) => self.index.get(k).copied(),
        }
    }

    /// The index of `flag`, giving it one if needed.
    pub(crate) fn intern(&mut self, flag: &Flag) -> u32 {
        if let Some(i) = self.get(flag) {
            return i;
        }
        let Flag::Keyword(k) = flag else {
            unreachable!("system flags always have an index")
        };
        let i = SYSTEM_FLAGS + self.table.len() as u32;
        self.table.push(k.clone());
        self.index.insert(k.clone(), i);
        i
    }

    /// The flag behind an index; `None` for an index never given (only a
    /// corrupt checkpoint could hold one).
    pub(crate) fn flag(&self, i: u32) -> Option<Flag> {
        match i {
            0..SYSTEM_FLAGS => Some(Flag::SYSTEM[i as usize].clone()),
            _ => self
                .table
                .get((i - SYSTEM_FLAGS) as usize)
                .cloned()
                .map(Flag::Keyword),
        }
    }

    /// The keywords in the table, in first-seen order.
    pub(crate) fn keywords(&self) -> Vec<Flag> {
        self.table.iter().cloned().map(Flag::Keyword).collect()
    }

    /// Number of keywords in the table.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Approximate heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        let strings: usize = self.table.iter().map(|k| k.as_str().len()).sum();
        // The table, the index (keys are copies) and B-tree node overhead.
        self.table.capacity() * std::mem::size_of::<Keyword>()
            + self.index.len() * (std::mem::size_of::<Keyword>() + 4) * 3 / 2
            + 2 * strings
    }
}

impl Serialize for Interner {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.table.serialize(s)
    }
}

impl From<Vec<Keyword>> for Interner {
    fn from(table: Vec<Keyword>) -> Self {
        let mut index = BTreeMap::new();
        for (i, k) in table.iter().enumerate() {
            // A duplicate (never written by `intern`) keeps its first index.
            index.entry(k.clone()).or_insert(SYSTEM_FLAGS + i as u32);
        }
        Interner { table, index }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_round_trips() {
        let mut i = Interner::default();
        let a = Flag::keyword("$A").unwrap();
        let b = Flag::keyword("$B").unwrap();
        assert_eq!(i.intern(&Flag::Draft), 4);
        assert_eq!(i.intern(&a), 5);
        assert_eq!(i.intern(&b), 6);
        assert_eq!(i.intern(&a), 5);
        assert_eq!(i.flag(6), Some(b.clone()));
        assert_eq!(i.flag(0), Some(Flag::Seen));
        assert_eq!(i.flag(7), None);
        let back: Interner = postcard::from_bytes(&postcard::to_allocvec(&i).unwrap()).unwrap();
        assert_eq!(back, i);
        assert_eq!(back.get(&b), Some(6));
    }
}
