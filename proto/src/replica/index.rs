//! The shown messages of one mailbox as a dense array in UID order, with
//! what SELECT and whole-mailbox FETCH and SEARCH read of each (MODSEQ,
//! flags, date, size): a scan of it touches a few contiguous megabytes
//! instead of three maps per message. Derived from the view: kept in step
//! with it by the view's every change, rebuilt after a checkpoint is
//! loaded, never stored.

use crate::ids::EntryId;
use crate::mailbox::FlagBits;
use std::sync::{Arc, OnceLock};

/// One shown message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// UID.
    pub uid: u32,
    /// RFC822.SIZE.
    pub size: u32,
    /// MODSEQ of its last change.
    pub modseq: u64,
    /// INTERNALDATE, ms since the Unix epoch.
    pub internal_date_ms: i64,
    /// Flags (see [`FlagBits`]: a set may be incomplete).
    pub flags: FlagBits,
    /// The entry the UID names.
    pub entry: EntryId,
}

/// Rows by ascending UID; the position of a row is its sequence number
/// minus one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    rows: Vec<Row>,
    /// The UID of the first message without `\Seen` (above the last UID
    /// when there is none): every row below it is seen. Kept by each
    /// change, so that SELECT finds the first unseen message at once.
    unseen_from: u32,
    /// The rows' UIDs, and their MODSEQs, as shared arrays made at the
    /// first read after a change: SELECT hands them to the session without
    /// a copy. A flag change keeps the UIDs.
    uids: OnceLock<Arc<Vec<u32>>>,
    modseqs: OnceLock<Arc<Vec<u64>>>,
}

impl PartialEq for Index {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows && self.unseen_from == other.unseen_from
    }
}

impl Eq for Index {}

/// How many of `rows` (UIDs ascending) lie below `uid`. UIDs are nearly
/// dense, so the position is guessed from the UIDs at the ends of the range
/// (one far row read where a binary search reads ~17 at 100k rows, most of
/// them cache misses); a guess that does not halve the range is followed by
/// a halving, so that the worst case stays logarithmic. UIDs strictly
/// ascend, so a range's ends also bound the position by the distance in
/// UIDs from either end: exact on a dense run next to an end, even with a
/// large gap elsewhere (a mailbox's UIDs often jump once, where another
/// replica's block of UIDs begins), which the guess from both ends misses.
fn count_below(rows: &[Row], uid: u32) -> usize {
    // rows[..lo] lie below `uid`, rows[hi..] do not.
    let (mut lo, mut hi) = (0usize, rows.len());
    let mut guess = true;
    while hi - lo > 8 {
        let (a, b) = (rows[lo].uid, rows[hi - 1].uid);
        if uid <= a {
            return lo;
        }
        if uid > b {
            return hi;
        }
        // At most one row per UID: rows[lo + (uid - a)] is not below `uid`,
        // and every row more than `b - uid` before rows[hi - 1] is.
        let near = (
            lo.max((hi - 1).saturating_sub((b - uid) as usize)),
            hi.min(lo.saturating_add((uid - a) as usize)),
        );
        if near != (lo, hi) {
            (lo, hi) = near;
            continue;
        }
        let mid = if guess {
            lo + ((uid - a) as u64 * (hi - 1 - lo) as u64 / (b - a) as u64) as usize
        } else {
            lo + (hi - lo) / 2
        };
        let before = hi - lo;
        if rows[mid].uid < uid {
            lo = mid + 1;
        } else {
            hi = mid;
        }
        guess = !guess || (hi - lo) * 2 <= before;
    }
    lo + rows[lo..hi].partition_point(|r| r.uid < uid)
}

/// Beyond this many removals at once, one pass over the rows is cheaper
/// than a shift per removal.
const REMOVE_ONE_BY_ONE: usize = 8;

impl Index {
    /// The rows, UIDs ascending.
    pub(crate) fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The rows' UIDs (shared; made once per change of the UID set).
    pub(crate) fn uid_column(&self) -> Arc<Vec<u32>> {
        self.uids
            .get_or_init(|| Arc::new(self.rows.iter().map(|r| r.uid).collect()))
            .clone()
    }

    /// The rows' MODSEQs (shared; made once per change).
    pub(crate) fn modseq_column(&self) -> Arc<Vec<u64>> {
        self.modseqs
            .get_or_init(|| Arc::new(self.rows.iter().map(|r| r.modseq).collect()))
            .clone()
    }

    /// Whether `uids` and `modseqs` are this index's current shared arrays
    /// (no change since they were made); makes neither.
    pub(crate) fn shares_columns(&self, uids: &Arc<Vec<u32>>, modseqs: &Arc<Vec<u64>>) -> bool {
        self.uids.get().is_some_and(|c| Arc::ptr_eq(c, uids))
            && self.modseqs.get().is_some_and(|c| Arc::ptr_eq(c, modseqs))
    }

    /// Drops the shared arrays a change makes stale.
    fn changed(&mut self, uids: bool) {
        if uids {
            self.uids = OnceLock::new();
        }
        self.modseqs = OnceLock::new();
    }

    /// The row of a UID.
    pub(crate) fn get(&self, uid: u32) -> Option<&Row> {
        self.position(uid).ok().map(|i| &self.rows[i])
    }

    /// Position of the first row without `\Seen`.
    pub(crate) fn first_unseen(&self) -> Option<usize> {
        let start = self.rows.partition_point(|r| r.uid < self.unseen_from);
        let i = self.rows[start..].iter().position(|r| !r.flags.seen())?;
        Some(start + i)
    }

    /// Moves `unseen_from` up to the first unseen row.
    fn advance(&mut self) {
        self.unseen_from = match self.first_unseen() {
            Some(i) => self.rows[i].uid,
            None => self.rows.last().map_or(0, |r| r.uid.saturating_add(1)),
        };
    }

    /// Lowers `unseen_from` to a row that became unseen.
    fn note(&mut self, row: &Row) {
        if !row.flags.seen() && row.uid < self.unseen_from {
            self.unseen_from = row.uid;
        }
    }

    /// An index of `rows`, which must be in ascending UID order.
    pub(crate) fn from_rows(rows: Vec<Row>) -> Self {
        debug_assert!(rows.windows(2).all(|w| w[0].uid < w[1].uid));
        let mut ix = Index {
            rows,
            ..Default::default()
        };
        ix.advance();
        ix
    }

    /// Adds a newly shown message. UIDs are shown in ascending order (S2),
    /// so this appends; an out-of-order UID is inserted in place.
    pub(crate) fn insert(&mut self, row: Row) {
        self.changed(true);
        self.note(&row);
        match self.rows.last() {
            Some(last) if last.uid >= row.uid => match self.position(row.uid) {
                Ok(i) => self.rows[i] = row,
                Err(i) => self.rows.insert(i, row),
            },
            _ => self.rows.push(row),
        }
        self.advance();
    }

    /// Sets the MODSEQ, and the flags where given, of these UIDs (in any
    /// order, the last of a repeated UID wins; absent ones are ignored), in
    /// one merge over the rows.
    pub(crate) fn update(&mut self, changes: &mut [(u32, u64, Option<FlagBits>)]) {
        if changes.is_empty() {
            return;
        }
        self.changed(false);
        changes.sort_by_key(|c| c.0);
        let mut rest = &mut self.rows[..];
        for &(uid, modseq, flags) in changes.iter() {
            let skip = rest.partition_point(|r| r.uid < uid);
            rest = &mut rest[skip..];
            if let Some(r) = rest.first_mut().filter(|r| r.uid == uid) {
                r.modseq = modseq;
                if let Some(f) = flags {
                    r.flags = f;
                    if !f.seen() {
                        self.unseen_from = self.unseen_from.min(uid);
                    }
                }
            }
        }
        self.advance();
    }

    /// [`Index::update`] for changes that name their entry: only a row
    /// that lists that entry under the UID changes (the entry of a UID no
    /// longer listed, or listed under another entry, is skipped), each
    /// row found from its UID's value rather than by a binary search (the
    /// UIDs of a `store_flags` batch are scattered: its entries are in id
    /// order); `listed` is told each change made, by ascending UID.
    pub(crate) fn update_entries(
        &mut self,
        changes: &[(u32, u64, EntryId, Option<FlagBits>)],
        mut listed: impl FnMut(u32, u64, Option<FlagBits>),
    ) {
        if changes.is_empty() {
            return;
        }
        self.changed(false);
        // By UID through packed (UID, position) keys: sorting 8-byte keys
        // moves a sixth of the bytes sorting the changes would.
        let mut order: Vec<u64> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| (u64::from(c.0) << 32) | i as u64)
            .collect();
        order.sort_unstable();
        // Each row is searched for in the whole index, not after the
        // previous one: the searches then do not wait on each other's cache
        // misses (on dense UIDs a search reads one far row).
        for key in order {
            let (uid, modseq, entry, flags) = changes[key as u32 as usize];
            let at = count_below(&self.rows, uid);
            if let Some(r) = self
                .rows
                .get_mut(at)
                .filter(|r| r.uid == uid && r.entry == entry)
            {
                r.modseq = modseq;
                if let Some(f) = flags {
                    r.flags = f;
                    if !f.seen() {
                        self.unseen_from = self.unseen_from.min(uid);
                    }
                }
                listed(uid, modseq, flags);
            }
        }
        self.advance();
    }

    /// Removes these UIDs (in any order; absent ones are ignored).
    pub(crate) fn remove(&mut self, uids: &[u32]) {
        if uids.is_empty() {
            return;
        }
        self.changed(true);
        if uids.len() <= REMOVE_ONE_BY_ONE {
            for &u in uids {
                if let Ok(i) = self.position(u) {
                    self.rows.remove(i);
                }
            }
        } else {
            let mut gone = uids.to_vec();
            gone.sort_unstable();
            self.rows.retain(|r| gone.binary_search(&r.uid).is_err());
        }
        self.advance();
    }

    fn position(&self, uid: u32) -> Result<usize, usize> {
        // Guessed from the UIDs (a row or two read on dense UIDs) rather
        // than halved (a cache miss per step at 100k rows): a STORE's
        // answers read back each row it changed.
        let at = count_below(&self.rows, uid);
        match self.rows.get(at) {
            Some(r) if r.uid == uid => Ok(at),
            _ => Err(at),
        }
    }
}

/// The rows of `rows` (UIDs ascending) whose UIDs are in `uids` (ascending),
/// in that order: a merge that jumps over the gaps by binary search, so a
/// few UIDs cost a few searches and all of them one pass.
pub fn select<'a>(rows: &'a [Row], uids: &'a [u32]) -> impl Iterator<Item = &'a Row> + 'a {
    let mut rest = rows;
    uids.iter().filter_map(move |&u| {
        let skip = match rest.first() {
            Some(r) if r.uid == u => 0,
            _ => rest.partition_point(|r| r.uid < u),
        };
        rest = &rest[skip..];
        let (first, tail) = rest.split_first()?;
        if first.uid == u {
            rest = tail;
            Some(first)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(uid: u32) -> Row {
        Row {
            uid,
            size: uid * 10,
            modseq: uid as u64,
            internal_date_ms: 0,
            flags: FlagBits::EMPTY,
            entry: EntryId([uid as u8; 16]),
        }
    }

    fn uids(ix: &Index) -> Vec<u32> {
        ix.rows().iter().map(|r| r.uid).collect()
    }

    #[test]
    fn insert_keeps_uid_order() {
        let mut ix = Index::default();
        for u in [1, 2, 5, 3, 9, 4] {
            ix.insert(row(u));
        }
        assert_eq!(uids(&ix), [1, 2, 3, 4, 5, 9]);
        ix.insert(Row { size: 7, ..row(3) });
        assert_eq!(uids(&ix), [1, 2, 3, 4, 5, 9]);
        assert_eq!(ix.rows()[2].size, 7);
    }

    #[test]
    fn update_entries_finds_scattered_rows() {
        let all: Vec<u32> = (1..=300).chain(262_445..=262_900).collect();
        let mut ix = Index::from_rows(all.iter().map(|&u| row(u)).collect());
        // Every 7th UID in a scrambled order, one UID not shown and one
        // row named with another entry (neither changes).
        let mut changes: Vec<(u32, u64, EntryId, Option<FlagBits>)> = all
            .iter()
            .rev()
            .step_by(7)
            .map(|&u| (u, 1_000, row(u).entry, Some(FlagBits::EMPTY)))
            .collect();
        changes.push((301, 1_000, row(301).entry, None));
        changes.push((5, 1_000, EntryId([0xee; 16]), None));
        let mut told = Vec::new();
        ix.update_entries(&changes, |uid, modseq, _| told.push((uid, modseq)));
        let mut want: Vec<u32> = all.iter().rev().step_by(7).copied().collect();
        want.sort_unstable();
        assert_eq!(told, want.iter().map(|&u| (u, 1_000)).collect::<Vec<_>>());
        for r in ix.rows() {
            let changed = want.binary_search(&r.uid).is_ok();
            assert_eq!(r.modseq, if changed { 1_000 } else { r.uid as u64 });
        }
    }

    #[test]
    fn update_in_any_order() {
        let mut ix = Index::default();
        (1..=10).for_each(|u| ix.insert(row(u)));
        let seen = FlagBits::EMPTY.with(0);
        ix.update(&mut [
            (9, 99, Some(seen)),
            (2, 22, None),
            (11, 1, None),
            (2, 23, None),
        ]);
        let r = ix.rows();
        assert_eq!(
            (r[1].modseq, r[8].modseq, r[8].flags.seen()),
            (23, 99, true)
        );
        assert_eq!(r[0].modseq, 1);
    }

    #[test]
    fn first_unseen_follows_changes() {
        let seen = FlagBits::EMPTY.with(0);
        let mut ix = Index::default();
        assert_eq!(ix.first_unseen(), None);
        for u in 1..=5 {
            ix.insert(Row {
                flags: seen,
                ..row(u)
            });
        }
        assert_eq!(ix.first_unseen(), None);
        ix.insert(row(6));
        assert_eq!(ix.first_unseen(), Some(5));
        ix.update(&mut [(2, 9, Some(FlagBits::EMPTY))]);
        assert_eq!(ix.first_unseen(), Some(1));
        ix.remove(&[2]);
        assert_eq!(ix.first_unseen(), Some(4));
        ix.update(&mut [(6, 9, Some(seen))]);
        assert_eq!(ix.first_unseen(), None);
        ix.insert(Row {
            flags: seen,
            ..row(7)
        });
        assert_eq!(ix.first_unseen(), None);
        ix.update(&mut [(3, 9, Some(FlagBits::EMPTY)), (1, 9, None)]);
        assert_eq!(ix.first_unseen(), Some(1));
    }

    #[test]
    fn columns_follow_changes() {
        let mut ix = Index::default();
        (1..=5).for_each(|u| ix.insert(row(u)));
        let (u, m) = (ix.uid_column(), ix.modseq_column());
        assert_eq!(
            (u.as_slice(), m.as_slice()),
            (&[1, 2, 3, 4, 5][..], &[1, 2, 3, 4, 5][..])
        );
        assert!(Arc::ptr_eq(&u, &ix.uid_column()));
        ix.update(&mut [(3, 30, None)]);
        assert!(Arc::ptr_eq(&u, &ix.uid_column()));
        assert_eq!(ix.modseq_column().as_slice(), [1, 2, 30, 4, 5]);
        ix.remove(&[2]);
        assert_eq!(ix.uid_column().as_slice(), [1, 3, 4, 5]);
        assert_eq!(ix.modseq_column().as_slice(), [1, 30, 4, 5]);
        ix.insert(row(9));
        assert_eq!(ix.uid_column().as_slice(), [1, 3, 4, 5, 9]);
        assert_eq!(ix.modseq_column().as_slice(), [1, 30, 4, 5, 9]);
    }

    #[test]
    fn shared_columns_are_current_until_a_change() {
        let mut ix = Index::default();
        (1..=5).for_each(|u| ix.insert(row(u)));
        let (u, m) = (ix.uid_column(), ix.modseq_column());
        assert!(ix.shares_columns(&u, &m));
        // Equal contents are not enough: the arrays themselves.
        assert!(!ix.shares_columns(&Arc::new(u.to_vec()), &m));
        // A flag change keeps the UIDs but not the MODSEQs.
        ix.update(&mut [(3, 30, None)]);
        assert!(!ix.shares_columns(&u, &m));
        let m = ix.modseq_column();
        assert!(ix.shares_columns(&u, &m));
        ix.insert(row(9));
        assert!(!ix.shares_columns(&u, &m));
        // Asking does not make them.
        assert!(ix.uids.get().is_none() && ix.modseqs.get().is_none());
    }

    #[test]
    fn remove_few_and_many() {
        let mut ix = Index::default();
        (1..=100).for_each(|u| ix.insert(row(u)));
        ix.remove(&[50, 1, 1000]);
        assert_eq!(ix.rows().len(), 98);
        let many: Vec<u32> = (2..=100).rev().filter(|u| u % 2 == 0).collect();
        ix.remove(&many);
        assert!(ix.rows().iter().all(|r| r.uid % 2 == 1 && r.uid != 1));
        assert_eq!(ix.rows().len(), 49);
    }

    #[test]
    fn count_below_counts_the_smaller_uids() {
        // Dense, with gaps, and skewed (a guess from the ends is far off).
        let sets: Vec<Vec<u32>> = vec![
            (1..=100).collect(),
            (1..=100).map(|u| u * 3).collect(),
            (1..=60)
                .chain([1_000, 1_001, 50_000, 400_000_000])
                .collect(),
            // Dense but for one large jump.
            (1..=300).chain(262_445..=262_900).collect(),
            (0..40)
                .map(|i| 1u32 << (i % 28))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        ];
        for uids in sets {
            let rows: Vec<Row> = uids.iter().map(|&u| row(u)).collect();
            let mut probes: Vec<u32> = uids.iter().flat_map(|&u| [u - 1, u, u + 1]).collect();
            probes.extend([0, 2, 999, 400_000_001]);
            for uid in probes {
                let want = rows.iter().filter(|r| r.uid < uid).count();
                assert_eq!(count_below(&rows, uid), want, "{uid}");
                assert_eq!(count_below(&rows[..7], uid), want.min(7), "{uid}");
            }
        }
        assert_eq!(count_below(&[], 5), 0);
    }

    #[test]
    fn select_merges() {
        let mut ix = Index::default();
        [2, 4, 6, 8, 10].into_iter().for_each(|u| ix.insert(row(u)));
        let got: Vec<u32> = select(ix.rows(), &[1, 2, 3, 8, 9, 10, 11])
            .map(|r| r.uid)
            .collect();
        assert_eq!(got, [2, 8, 10]);
        let all: Vec<u32> = (1..=10).collect();
        assert_eq!(select(ix.rows(), &all).count(), 5);
        assert_eq!(select(ix.rows(), &[]).count(), 0);
    }
}
