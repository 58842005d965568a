//! One mailbox as this replica shows it to IMAP sessions: the CRDT state
//! joined with the values the sequencer gave each op, under the exposure rule
//! that keeps S2 (ARCHITECTURE.md §4): an op becomes visible only with values
//! above everything this replica has shown, and what it shows is persisted
//! before a client can see it.

use super::index::{self, Index, Row};
use crate::ids::{EntryId, OpId};
use crate::mailbox::{EntryView, Flag, MailboxOp, MailboxState};
use crate::seq::{Assign, Fate, Spaces};
use crate::{FastMap, FastSet};
use serde::{Deserialize, Serialize};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// What a session sees change in a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message became visible with this UID.
    Exists {
        /// Its UID.
        uid: u32,
    },
    /// A UID was expunged (also when its message is re-announced).
    Expunged {
        /// The UID.
        uid: u32,
    },
    /// A message's flags changed.
    Flags {
        /// Its UID.
        uid: u32,
        /// Its new MODSEQ.
        modseq: u64,
    },
    /// The flags of several messages changed in one op (a `FlagsBatch`):
    /// each `Flags` event it stands for, UIDs ascending. One event per op
    /// instead of one per message: a STORE over 100k messages is ~100 of
    /// them, shared by every session without a copy.
    FlagsMany(Arc<[(u32, u64)]>),
}

impl Event {
    /// The `(UID, MODSEQ)` flag changes this event stands for (none for
    /// `Exists` and `Expunged`), in its order.
    pub fn flag_changes(&self) -> &[(u32, u64)] {
        match self {
            Event::FlagsMany(c) => c,
            _ => &[],
        }
    }

    /// Each flag change as its own `Flags` event, other events as they are
    /// (for consumers that take them one by one).
    pub fn each(&self) -> impl Iterator<Item = Event> + '_ {
        let single = match self {
            Event::FlagsMany(_) => None,
            e => Some(e.clone()),
        };
        single.into_iter().chain(
            self.flag_changes()
                .iter()
                .map(|&(uid, modseq)| Event::Flags { uid, modseq }),
        )
    }
}

/// What the view asks of the replica after an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Tell sessions.
    Event(Event),
    /// These values cannot be shown here: ask the owner for new ones.
    Resequence { op: OpId, above: (u64, u64) },
    /// Persist before any output of this batch leaves the node.
    Persist(Persisted),
    /// An op became visible (local actions wait for this).
    Shown { op: OpId, assign: Assign },
}

/// The view's durable part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Persisted {
    /// High-water marks: highest UID and MODSEQ shown.
    Marks(u64, u64),
    /// The values an op is shown with.
    Shown(OpId, Assign),
}

/// One message as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// UID.
    pub uid: u32,
    /// Entry (stable id of this placement).
    pub entry: EntryId,
    /// Blob, flags, date, size.
    pub view: EntryView,
    /// MODSEQ of the last change.
    pub modseq: u64,
}

/// What a replica showed of one op: its values and, for an `Add`, the entry
/// it created (one map for both: a key and a hash slot less per message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Shown {
    assign: Assign,
    added: Option<EntryId>,
}

/// One mailbox as shown by this replica. Serializable: an encrypted
/// checkpoint of it bounds the replay at unlock.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MailboxView {
    state: MailboxState,
    /// Decrypted ops not shown yet.
    held: FastMap<OpId, MailboxOp>,
    /// Ops shown, with their values (and the entry of an `Add`).
    shown: FastMap<OpId, Shown>,
    /// The entries a shown flag change or expunge names, while its values
    /// may still change here (shown at a provisional value, or at one a
    /// final value not shown yet supersedes). Dropped once the op is shown
    /// at its final value, so that they do not pile up over STOREs; a later
    /// re-decision of the op (a `Resequence` asked elsewhere) gets them
    /// back from the op's log first ([`MailboxView::lacks_targets`]).
    targets: FastMap<OpId, Vec<EntryId>>,
    /// UID and MODSEQ of each entry that has a UID (shown, or shown and
    /// expunged: an entry not expunged is shown under its UID here).
    meta: BTreeMap<EntryId, (u32, u64)>,
    /// Final decisions not shown yet: the latest value the ledger gave each
    /// op (its payload may not have arrived, or the value may lie below the
    /// marks and wait for a `Resequence`).
    todo: FastMap<OpId, Assign>,
    /// The lowest final MODSEQ each op of `todo` got that this replica did
    /// not show it at. Final values are shown in ledger order: no final
    /// value above such a MODSEQ is shown until that op is, so that an
    /// announced HIGHESTMODSEQ that is a final value covers every change
    /// below it (ARCHITECTURE.md §4.4).
    order_of: FastMap<OpId, u64>,
    /// Ops of `todo` this replica asked new values for.
    asked: FastSet<OpId>,
    /// Ops shown with values that are not their final ones as this replica
    /// knows them (provisional, or superseded by a final value it cannot
    /// show yet): CHANGEDSINCE reports what they touched whatever the
    /// client's MODSEQ, since a client that synced elsewhere may know them
    /// under other values.
    unsettled: FastSet<OpId>,
    /// Expunged UIDs by the MODSEQ of their expunge (for QRESYNC VANISHED).
    vanished: BTreeMap<u64, Vec<u32>>,
    /// Highest UID and MODSEQ shown.
    marks: (u64, u64),
    uidvalidity: u32,
    /// The shown messages as a dense array, UIDs ascending (sequence
    /// numbers are positions here): the live UIDs and the entries they
    /// name. Derived from `meta` and `state`; rebuilt after a load.
    #[serde(skip)]
    index: Index,
}

impl MailboxView {
    /// An empty view of a mailbox with this UIDVALIDITY.
    pub fn new(uidvalidity: u32) -> Self {
        MailboxView {
            uidvalidity,
            ..Default::default()
        }
    }

    /// The same view under the UIDVALIDITY its mailbox's creation gives
    /// (ops may arrive before the mailbox's Create; nothing is shown then).
    pub(crate) fn with_uidvalidity(mut self, uidvalidity: u32) -> Self {
        self.uidvalidity = uidvalidity;
        self
    }

    /// UIDVALIDITY.
    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }

    /// UIDNEXT: every UID shown later is at least this.
    pub fn uidnext(&self) -> u32 {
        (self.marks.0 + 1).min(u32::MAX as u64) as u32
    }

    /// HIGHESTMODSEQ.
    pub fn highest_modseq(&self) -> u64 {
        self.marks.1
    }

    /// Number of messages shown.
    pub fn exists(&self) -> usize {
        self.index.rows().len()
    }

    /// UIDs shown, ascending.
    pub fn uids(&self) -> impl DoubleEndedIterator<Item = u32> + '_ {
        self.index.rows().iter().map(|r| r.uid)
    }

    /// Every shown message's row, UIDs ascending (the position of a row is
    /// its sequence number minus one).
    pub fn rows(&self) -> &[Row] {
        self.index.rows()
    }

    /// The rows of these UIDs (ascending), skipping those not shown.
    pub fn rows_of<'a>(&'a self, uids: &'a [u32]) -> impl Iterator<Item = &'a Row> + 'a {
        index::select(self.index.rows(), uids)
    }

    /// The shown UIDs, ascending, as one shared array (made once per change
    /// of the UID set, then handed out without a copy).
    pub fn uid_column(&self) -> std::sync::Arc<Vec<u32>> {
        self.index.uid_column()
    }

    /// The MODSEQs of the shown UIDs, in the same order (made once per
    /// change).
    pub fn modseq_column(&self) -> std::sync::Arc<Vec<u64>> {
        self.index.modseq_column()
    }

    /// Whether `uids` and `modseqs`, taken from [`Self::uid_column`] and
    /// [`Self::modseq_column`], are still current: no message shown or
    /// gone, no flag or MODSEQ changed since. Cheap, and makes neither.
    pub fn shares_columns(
        &self,
        uids: &std::sync::Arc<Vec<u32>>,
        modseqs: &std::sync::Arc<Vec<u64>>,
    ) -> bool {
        self.index.shares_columns(uids, modseqs)
    }

    /// The row of a shown UID.
    pub fn row_of(&self, uid: u32) -> Option<&Row> {
        self.index.get(uid)
    }

    /// Sequence number of the first shown message without `\Seen`.
    pub fn first_unseen(&self) -> Option<u32> {
        Some(self.index.first_unseen()? as u32 + 1)
    }

    /// A row's flags, sorted.
    pub fn flags_of(&self, row: &Row) -> Vec<Flag> {
        self.state.flags_in(row.flags).unwrap_or_else(|| {
            self.state
                .entry(&row.entry)
                .map(|v| v.flags)
                .unwrap_or_default()
        })
    }

    /// Rebuilds the rows from the rest of the view (after a load).
    pub(crate) fn rebuild_index(&mut self) {
        self.index = Index::from_rows(self.derived_rows());
    }

    /// The rows the maps and the state give: every entry with a UID that is
    /// not expunged, by UID.
    fn derived_rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .meta
            .iter()
            .filter(|(e, _)| !self.state.is_expunged(e))
            .filter_map(|(e, m)| self.row(m.0, e))
            .collect();
        rows.sort_unstable_by_key(|r| r.uid);
        rows
    }

    /// Whether the rows are what a rebuild would give (for tests and the
    /// simulator's checks; linear in the mailbox size).
    pub fn index_is_consistent(&self) -> bool {
        let rows = self.index.rows();
        let unseen = rows.iter().position(|r| !r.flags.seen());
        unseen == self.index.first_unseen() && rows == self.derived_rows().as_slice()
    }

    /// The row of a shown UID, from the maps and the state.
    fn row(&self, uid: u32, entry: &EntryId) -> Option<Row> {
        let (internal_date_ms, size) = self.state.date_and_size(entry)?;
        Some(Row {
            uid,
            size,
            modseq: self.meta.get(entry).map_or(0, |m| m.1),
            internal_date_ms,
            flags: self.state.flag_bits(entry),
            entry: *entry,
        })
    }

    /// Whether `uid` is shown and names `entry`.
    fn lists(&self, uid: u32, entry: &EntryId) -> bool {
        self.index.get(uid).is_some_and(|r| r.entry == *entry)
    }

    /// Shows `entry` under `uid` (its MODSEQ already in `meta`).
    fn list(&mut self, uid: u32, entry: EntryId) {
        if let Some(r) = self.row(uid, &entry) {
            self.index.insert(r);
        }
    }

    /// Stops showing `uid`.
    fn unlist(&mut self, uid: u32) {
        self.index.remove(&[uid]);
    }

    /// A message by UID.
    pub fn message(&self, uid: u32) -> Option<Message> {
        let entry = self.index.get(uid)?.entry;
        let view = self.state.entry(&entry)?;
        let modseq = self.meta.get(&entry).map_or(0, |m| m.1);
        Some(Message {
            uid,
            entry,
            view,
            modseq,
        })
    }

    /// The entry a shown UID names, without decoding its flags.
    pub fn entry_of(&self, uid: u32) -> Option<EntryId> {
        self.index.get(uid).map(|r| r.entry)
    }

    /// The UID of an entry, if shown.
    pub fn uid_of(&self, entry: &EntryId) -> Option<u32> {
        self.meta
            .get(entry)
            .map(|m| m.0)
            .filter(|&u| self.lists(u, entry))
    }

    /// The CRDT state (for building ops).
    pub fn state(&self) -> &MailboxState {
        &self.state
    }

    /// Ops received but not shown yet.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Changes since a client's MODSEQ `x`: UIDs whose MODSEQ is above
    /// `floor(x)` and UIDs expunged above it. `floor(x)` is `x` for a value of
    /// the owner's counter, and 0 (everything) for a value inside a
    /// reservation (ARCHITECTURE.md §4.4): the replica that showed such a
    /// provisional value was cut off and may have lacked any number of final
    /// changes below it, which the reservation's `floor_modseq` cannot tell
    /// (finding 5). It over-reports after a partition, never misses.
    pub fn changed_since(&self, x: u64, spaces: &Spaces) -> (Vec<u32>, Vec<u32>) {
        let floor = match spaces.modseq_owner(x) {
            Some(_) => 0,
            // The client is ahead of us: it synced where more was shown, or
            // where more of the ledger was known (a final value this
            // replica has not learned). Report everything.
            None if x > self.marks.1 || x > spaces.max_modseq => 0,
            None => x,
        };
        let mut changed: Vec<u32> = self
            .index
            .rows()
            .iter()
            .filter(|r| self.meta.get(&r.entry).is_some_and(|m| m.1 > floor))
            .map(|r| r.uid)
            .collect();
        let mut vanished: Vec<u32> = self
            .vanished
            .range(floor + 1..)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        if floor > 0 && !self.unsettled.is_empty() {
            for op in &self.unsettled {
                let entries = self
                    .shown
                    .get(op)
                    .and_then(|s| s.added.as_ref())
                    .into_iter()
                    .chain(self.targets.get(op).into_iter().flatten());
                for e in entries {
                    let Some(&(uid, _)) = self.meta.get(e) else {
                        continue;
                    };
                    if self.lists(uid, e) {
                        changed.push(uid);
                    } else if self.state.is_expunged(e) {
                        vanished.push(uid);
                    }
                }
            }
            changed.sort_unstable();
            changed.dedup();
            vanished.sort_unstable();
            vanished.dedup();
        }
        (changed, vanished)
    }

    /// Restores what was persisted (before ops are fed again).
    pub(crate) fn restore(
        &mut self,
        records: impl IntoIterator<Item = Persisted>,
    ) -> Vec<(OpId, Assign)> {
        let mut shown = Vec::new();
        for r in records {
            match r {
                Persisted::Marks(u, m) => self.marks = (self.marks.0.max(u), self.marks.1.max(m)),
                Persisted::Shown(op, a) => shown.push((op, a)),
            }
        }
        shown
    }

    /// Re-shows an op exactly as it was shown before a restart.
    pub(crate) fn reshow(&mut self, op: OpId, assign: Assign) {
        let mut sink = Vec::new();
        if let Some(payload) = self.held.remove(&op) {
            self.show(op, payload, &assign, &mut sink);
        } else if self.shown_at(&op).is_some_and(|a| *a != assign) {
            self.reannounce(op, &assign, &mut sink);
        } else if !self.shown.contains_key(&op) {
            return; // the op itself is not here
        }
        self.mark_shown(op, assign);
    }

    /// A decrypted op arrived; `decision` is what the sequencer already says.
    pub(crate) fn on_op(
        &mut self,
        op: OpId,
        payload: MailboxOp,
        decision: Option<(Assign, Fate)>,
    ) -> Vec<Effect> {
        if self.shown.contains_key(&op) || self.held.contains_key(&op) {
            return Vec::new();
        }
        self.held.insert(op, payload);
        match decision {
            Some((a, f)) => self.on_decided(op, a, f),
            None if self.todo.contains_key(&op) => {
                let mut fx = Vec::new();
                self.release(&mut fx);
                fx
            }
            None => Vec::new(),
        }
    }

    /// The sequencer decided values for an op: final ones (the ledger's)
    /// are shown in ledger order; provisional ones (this replica's own op,
    /// from its reservation) at once.
    pub(crate) fn on_decided(&mut self, op: OpId, assign: Assign, fate: Fate) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.uidvalidity == 0 {
            return fx; // the mailbox's Create has not arrived: nothing is shown yet
        }
        match fate {
            Fate::Final => self.queue(op, assign),
            Fate::Provisional => {
                // Its final value, if the ledger has one this replica cannot
                // show yet, stays in `order`: showing the op from the
                // reservation announces a reservation value, which tells
                // every replica that this one may be incomplete (§4.4).
                let known = self.held.contains_key(&op) || self.shown.contains_key(&op);
                if known && self.shown_at(&op) != Some(&assign) && self.is_above(&assign) {
                    self.expose(op, assign.clone(), &mut fx);
                }
                if self.shown_at(&op) == Some(&assign) {
                    self.unsettled.insert(op);
                }
            }
        }
        self.release(&mut fx);
        fx
    }

    /// Own ops (or any) whose final value is not shown here yet.
    pub(crate) fn unshown_finals(&self) -> impl Iterator<Item = &OpId> + '_ {
        self.todo.keys()
    }

    fn is_above(&self, a: &Assign) -> bool {
        a.modseq > self.marks.1 && a.uids.iter().all(|&u| u as u64 > self.marks.0)
    }

    /// Notes a final decision; it is shown by `release`.
    fn queue(&mut self, op: OpId, assign: Assign) {
        self.asked.remove(&op);
        if self.shown_at(&op) == Some(&assign) {
            // Shown at exactly this value (a confirmed provisional value,
            // or a replay): settled.
            self.todo.remove(&op);
            self.order_of.remove(&op);
            self.unsettled.remove(&op);
            self.targets.remove(&op);
            return;
        }
        if self.shown.contains_key(&op) {
            self.unsettled.insert(op);
        }
        self.order_of.entry(op).or_insert(assign.modseq);
        self.todo.insert(op, assign);
    }

    /// Shows what can be shown of the final decisions in `todo`, in ledger
    /// order, and asks new values for those below the marks.
    fn release(&mut self, fx: &mut Vec<Effect>) {
        if self.todo.is_empty() {
            return;
        }
        // Candidates by their current value; the longest run that can be
        // shown in that order (ops here, values above the marks as they
        // rise)...
        let mut cand: Vec<(u64, OpId)> = self.todo.iter().map(|(o, a)| (a.modseq, *o)).collect();
        cand.sort_unstable();
        let mut marks = self.marks;
        let mut n = 0;
        for (_, op) in &cand {
            let a = &self.todo[op];
            let known = self.held.contains_key(op) || self.shown.contains_key(op);
            let above = a.modseq > marks.1 && a.uids.iter().all(|&u| u as u64 > marks.0);
            if !known || !above {
                break;
            }
            marks.1 = a.modseq;
            for &u in &a.uids {
                marks.0 = marks.0.max(u as u64);
            }
            n += 1;
        }
        // ...cut below every op left out: nothing is shown above a final
        // value this replica did not show.
        loop {
            let rest = cand[n..]
                .iter()
                .filter_map(|(_, op)| self.order_of.get(op))
                .min()
                .copied()
                .unwrap_or(u64::MAX);
            let m = cand[..n].iter().take_while(|(v, _)| *v < rest).count();
            if m == n {
                break;
            }
            n = m;
        }
        for (_, op) in &cand[..n] {
            let Some(a) = self.todo.remove(op) else {
                continue;
            };
            self.order_of.remove(op);
            self.asked.remove(op);
            self.unsettled.remove(op);
            self.expose(*op, a, fx);
            // Shown at its final value: settled.
            self.targets.remove(op);
        }
        // What lies below the marks needs new values (whether its op has
        // arrived or not): ask once per decision.
        let below: Vec<OpId> = cand[n..]
            .iter()
            .map(|(_, op)| *op)
            .filter(|op| !self.asked.contains(op) && !self.is_above(&self.todo[op]))
            .collect();
        for op in below {
            self.asked.insert(op);
            fx.push(Effect::Resequence {
                op,
                above: self.marks,
            });
        }
    }

    /// Shows an op with these values (above the marks), persisting them.
    fn expose(&mut self, op: OpId, assign: Assign, fx: &mut Vec<Effect>) {
        if self.shown.contains_key(&op) {
            self.reannounce(op, &assign, fx);
        } else if let Some(payload) = self.held.remove(&op) {
            self.show(op, payload, &assign, fx);
        }
        for &u in &assign.uids {
            self.marks.0 = self.marks.0.max(u as u64);
        }
        self.marks.1 = self.marks.1.max(assign.modseq);
        fx.push(Effect::Persist(Persisted::Marks(
            self.marks.0,
            self.marks.1,
        )));
        fx.push(Effect::Persist(Persisted::Shown(op, assign.clone())));
        self.mark_shown(op, assign.clone());
        fx.push(Effect::Shown { op, assign });
    }

    /// Whether `op` is shown at exactly the final value `a` and nothing is
    /// left to settle about it (feeding that decision again changes nothing).
    pub(crate) fn is_settled_at(&self, op: &OpId, a: &Assign) -> bool {
        self.shown_at(op) == Some(a) && !self.todo.contains_key(op) && !self.unsettled.contains(op)
    }

    /// The values `op` is shown at.
    fn shown_at(&self, op: &OpId) -> Option<&Assign> {
        self.shown.get(op).map(|s| &s.assign)
    }

    /// Records that `op` is shown at `assign`, keeping the entry an `Add`
    /// created.
    fn mark_shown(&mut self, op: OpId, assign: Assign) {
        match self.shown.entry(op) {
            Entry::Occupied(mut e) => e.get_mut().assign = assign,
            Entry::Vacant(e) => {
                e.insert(Shown {
                    assign,
                    added: None,
                });
            }
        }
    }

    /// Applies an op to the state and gives UIDs and MODSEQs to what it touched.
    fn show(&mut self, op: OpId, payload: MailboxOp, assign: &Assign, fx: &mut Vec<Effect>) {
        let touched = self.state.apply_with_bits(op, &payload);
        let modseq = assign.modseq;
        match &payload {
            MailboxOp::Add { entry, .. } => {
                self.shown.insert(
                    op,
                    Shown {
                        assign: assign.clone(),
                        added: Some(*entry),
                    },
                );
                if let Some(&(uid, _)) = self
                    .meta
                    .get(entry)
                    .filter(|m| self.index.get(m.0).is_some())
                {
                    // Entry ids are 128 random bits: a second Add of a shown
                    // entry comes from a broken peer. The entry keeps its UID;
                    // the other is never shown.
                    for &u in &assign.uids {
                        if u != uid {
                            self.vanished.entry(modseq).or_default().push(u);
                        }
                    }
                    if self.lists(uid, entry) {
                        let m = self.meta.get(entry).map_or(0, |m| m.1);
                        let flags = self.state.flag_bits(entry);
                        self.index.update(&mut [(uid, m, Some(flags))]);
                    }
                } else if let Some(&uid) = assign.uids.first() {
                    self.meta.insert(*entry, (uid, modseq));
                    if self.state.is_expunged(entry) {
                        self.vanished.entry(modseq).or_default().push(uid);
                    } else {
                        self.list(uid, *entry);
                        fx.push(Effect::Event(Event::Exists { uid }));
                    }
                }
            }
            MailboxOp::Flags { .. }
            | MailboxOp::FlagsBatch { .. }
            | MailboxOp::FlagsShared { .. } => {
                // Every entry the op names gets its MODSEQ (one per op, even
                // for a batch over many entries: RFC 7162 lets one command's
                // changes share it). It rises whether or not the flags
                // visibly changed, so that it does not depend on the order
                // ops arrived in.
                let entries = payload.targets();
                let mut rows = Vec::with_capacity(entries.len());
                let flags_of = |entry: &EntryId, next: &mut usize| {
                    // `touched` is sorted by entry: walked along sorted
                    // entries, else searched.
                    while touched.get(*next).is_some_and(|t| t.0 < *entry) {
                        *next += 1;
                    }
                    touched.get(*next).filter(|t| t.0 == *entry).map(|t| t.1)
                };
                if entries.windows(2).all(|w| w[0] < w[1]) {
                    // A batch of `store_flags` (entries in order): one walk
                    // of the map.
                    let mut next = 0;
                    crate::walk_sorted(&mut self.meta, &entries, |entry, m| {
                        m.1 = m.1.max(modseq);
                        rows.push((m.0, m.1, *entry, flags_of(entry, &mut next)));
                    });
                } else {
                    for entry in &entries {
                        if let Some(m) = self.meta.get_mut(entry) {
                            m.1 = m.1.max(modseq);
                            let flags = touched
                                .binary_search_by_key(entry, |t| t.0)
                                .ok()
                                .map(|i| touched[i].1);
                            rows.push((m.0, m.1, *entry, flags));
                        }
                    }
                }
                // Only the rows that list these entries change; their events
                // go out by UID, one event for the op.
                let mut changed = Vec::new();
                self.index.update_entries(&rows, |uid, modseq, flags| {
                    if flags.is_some() {
                        changed.push((uid, modseq));
                    }
                });
                match changed[..] {
                    [] => {}
                    [(uid, modseq)] => fx.push(Effect::Event(Event::Flags { uid, modseq })),
                    _ => fx.push(Effect::Event(Event::FlagsMany(changed.into()))),
                }
                self.targets.insert(op, entries);
            }
            MailboxOp::Expunge { entries } => {
                self.targets.insert(op, entries.clone());
                let (mut gone, mut rows) = (Vec::new(), Vec::new());
                let mut once = HashSet::new();
                for e in entries {
                    if let Some(m) = self.meta.get_mut(e) {
                        m.1 = m.1.max(modseq);
                        let uid = m.0;
                        // (`gone` is taken out of the rows after the loop:
                        // an entry named twice is expunged once.)
                        if self.index.get(uid).is_none_or(|r| r.entry != *e) || once.contains(&uid)
                        {
                            continue;
                        }
                        if self.state.is_expunged(e) {
                            once.insert(uid);
                            gone.push(uid);
                            self.vanished.entry(modseq).or_default().push(uid);
                            fx.push(Effect::Event(Event::Expunged { uid }));
                        } else {
                            rows.push((uid, m.1, None));
                        }
                    }
                }
                self.index.remove(&gone);
                self.index.update(&mut rows);
            }
        }
    }

    /// An op shown before gets new values: its old UID is expunged and the
    /// message shown again under the new one (S4).
    fn reannounce(&mut self, op: OpId, assign: &Assign, fx: &mut Vec<Effect>) {
        let Some(entry) = self.shown.get(&op).and_then(|s| s.added) else {
            // A flag change or expunge with a new MODSEQ: raise the entries'.
            let mut rows = Vec::new();
            for e in self.targets.get(&op).into_iter().flatten() {
                if let Some(m) = self.meta.get_mut(e) {
                    m.1 = m.1.max(assign.modseq);
                    if self.index.get(m.0).is_some_and(|r| r.entry == *e) {
                        rows.push((m.0, m.1, None));
                        fx.push(Effect::Event(Event::Flags {
                            uid: m.0,
                            modseq: m.1,
                        }));
                    } else if self.state.is_expunged(e) {
                        self.vanished.entry(assign.modseq).or_default().push(m.0);
                    }
                }
            }
            self.index.update(&mut rows);
            return;
        };
        let Some(&(old, _)) = self.meta.get(&entry) else {
            return;
        };
        let Some(&uid) = assign.uids.first() else {
            return;
        };
        if self.lists(old, &entry) {
            self.unlist(old);
            fx.push(Effect::Event(Event::Expunged { uid: old }));
        }
        self.vanished.entry(assign.modseq).or_default().push(old);
        self.meta.insert(entry, (uid, assign.modseq));
        if self.state.is_expunged(&entry) {
            self.vanished.entry(assign.modseq).or_default().push(uid);
        } else {
            self.list(uid, entry);
            fx.push(Effect::Event(Event::Exists { uid }));
        }
    }

    /// The entry this replica gave `uid` to, if that entry is expunged (also
    /// when it was expunged before its `Add` was shown here, so that the UID
    /// never appeared in an EXISTS). For checks; linear in the mailbox size.
    pub fn expunged_entry(&self, uid: u32) -> Option<EntryId> {
        self.meta
            .iter()
            .find(|(e, m)| m.0 == uid && self.state.is_expunged(e))
            .map(|(e, _)| *e)
    }

    /// Whether this replica reported `uid` as expunged (an expunged message,
    /// or the old UID of a re-announced one). For checks; linear in the
    /// number of expunges.
    pub fn has_vanished(&self, uid: u32) -> bool {
        self.vanished.values().any(|v| v.contains(&uid))
    }

    /// Whether `op` is a flag change or expunge shown here whose entries
    /// were dropped when it settled: before it gets new values, the caller
    /// gives them back ([`MailboxView::set_targets`]) from its payload.
    /// (Only when `assign` would change its values.)
    pub(crate) fn lacks_targets(&self, op: &OpId, assign: &Assign) -> bool {
        self.shown
            .get(op)
            .is_some_and(|s| s.added.is_none() && s.assign != *assign)
            && !self.targets.contains_key(op)
    }

    /// The entries a shown op names, read again from its payload.
    pub(crate) fn set_targets(&mut self, op: OpId, entries: Vec<EntryId>) {
        self.targets.insert(op, entries);
    }

    /// Drops the entries of every op that is settled (shown at its final
    /// value, nothing left to show of it): after the decisions were fed
    /// again (an unlock's replay), and for checkpoints that kept them all.
    pub(crate) fn forget_settled_targets(&mut self) {
        self.targets
            .retain(|op, _| self.unsettled.contains(op) || self.todo.contains_key(op));
    }

    /// How many ops' entries the view keeps (for tests).
    pub fn kept_targets(&self) -> usize {
        self.targets.len()
    }

    /// Ops shown (for tests and the simulator's checks).
    pub fn shown_ops(&self) -> impl Iterator<Item = (&OpId, &Assign)> + '_ {
        self.shown.iter().map(|(op, s)| (op, &s.assign))
    }

    /// Whether an op is shown.
    pub fn is_shown(&self, op: &OpId) -> bool {
        self.shown.contains_key(op)
    }

    /// Entries that have a UID, mapped to it (for checks).
    pub fn uid_map(&self) -> BTreeMap<u32, EntryId> {
        self.index.rows().iter().map(|r| (r.uid, r.entry)).collect()
    }

    /// Ops currently held (for diagnostics).
    pub fn held_ops(&self) -> HashSet<OpId> {
        self.held.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BlobId, ReplicaId};
    use crate::seq::{Reservation, Span};

    fn add(n: u8) -> (OpId, MailboxOp) {
        let op = OpId {
            origin: ReplicaId(n as u64 % 2 + 1),
            seq: n as u64,
        };
        let m = MailboxOp::Add {
            entry: EntryId([n; 16]),
            blob: BlobId([n; 16]),
            flags: Vec::new(),
            internal_date_ms: 0,
            size: 1,
        };
        (op, m)
    }

    fn fin(modseq: u64, uid: u32) -> Option<(Assign, Fate)> {
        Some((
            Assign {
                modseq,
                uids: smallvec::smallvec![uid],
            },
            Fate::Final,
        ))
    }

    /// A final decision for a change that takes no UID (flags, expunge).
    fn fin_change(modseq: u64) -> Option<(Assign, Fate)> {
        Some((
            Assign {
                modseq,
                uids: Default::default(),
            },
            Fate::Final,
        ))
    }

    /// Finding 5 of the simulator: a replica cut off shows provisional
    /// MODSEQs from its reservation although it has not shown every final
    /// change below the reservation's floor (here an op whose payload had not
    /// arrived, and an expunge). A client that synced there and asks another
    /// replica for CHANGEDSINCE must still get those changes.
    #[test]
    fn changedsince_from_a_reservation_value_misses_nothing_shown_elsewhere() {
        let r = ReplicaId(1);
        let mut spaces = Spaces::new();
        spaces.note_final(&[3], 7);
        spaces.reserve(Reservation {
            replica: r,
            uids: Span { lo: 100, hi: 200 },
            modseqs: Span { lo: 1000, hi: 2000 },
            floor_modseq: 7,
        });
        let (a, pa) = add(1); // final (UID 2, MODSEQ 5): not arrived on the cut-off replica
        let (b, pb) = add(2); // final (UID 3, MODSEQ 6), expunged at MODSEQ 7
        let (c, pc) = add(3); // final (UID 1, MODSEQ 4): shown by both
        let (d, pd) = add(4); // the cut-off replica's own, provisional (100, 1000)
        let x_op = OpId {
            origin: ReplicaId(2),
            seq: 99,
        };
        let expunge = MailboxOp::Expunge {
            entries: vec![EntryId([2; 16])],
        };

        // The cut-off replica: it shows C, then its own D from its
        // reservation; A and B (and B's expunge) have not reached it.
        let mut cut = MailboxView::new(1);
        cut.on_op(c, pc.clone(), fin(4, 1));
        cut.on_op(d, pd.clone(), None);
        cut.on_decided(
            d,
            Assign {
                modseq: 1000,
                uids: smallvec::smallvec![100],
            },
            Fate::Provisional,
        );
        let client_hms = cut.highest_modseq();
        assert_eq!(client_hms, 1000);
        let client_uids: Vec<u32> = cut.uids().collect();
        assert_eq!(client_uids, vec![1, 100]);

        // Another replica shows the whole ledger, D confirmed.
        let mut other = MailboxView::new(1);
        other.on_op(c, pc, fin(4, 1));
        other.on_op(a, pa, fin(5, 2));
        other.on_op(b, pb, fin(6, 3));
        other.on_op(x_op, expunge, fin_change(7));
        other.on_op(d, pd, fin(1000, 100));
        let (changed, vanished) = other.changed_since(client_hms, &spaces);
        assert!(
            changed.contains(&2),
            "the new message A is reported: {changed:?}"
        );
        assert!(
            vanished.contains(&3),
            "B's expunge is reported: {vanished:?}"
        );
        // A value of the owner's counter is exact.
        let (changed, _) = other.changed_since(5, &spaces);
        assert!(!changed.contains(&1) && !changed.contains(&2));
    }

    fn prov(modseq: u64, uid: u32) -> Assign {
        Assign {
            modseq,
            uids: smallvec::smallvec![uid],
        }
    }

    fn shown_uids(fx: &[Effect]) -> Vec<u32> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Event(Event::Exists { uid }) => Some(*uid),
                _ => None,
            })
            .collect()
    }

    /// Finding 8 of the simulator: a replica that showed provisional values
    /// learns a final value below its marks (it asks for new ones) and then
    /// a later final value above them. Showing the later one would announce
    /// a final HIGHESTMODSEQ above a change it does not show; a client
    /// syncing there would miss that change on a replica showing it. The
    /// later value waits; when the new values come, both are shown in
    /// ledger order, and the later one is not re-announced.
    #[test]
    fn a_final_value_below_the_marks_holds_later_ones_until_it_is_shown() {
        let (a, pa) = add(1); // final 5 on the majority side
        let (d, pd) = add(2); // this replica's own, provisional 1000
        let (z, pz) = add(3); // final 1001, after the confirmation of d
        let mut v = MailboxView::new(1);
        v.on_op(d, pd, None);
        v.on_decided(d, prov(1000, 100), Fate::Provisional);
        let fx = v.on_op(a, pa, fin(5, 2));
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Resequence { op, .. } if *op == a)),
            "new values are asked for a: {fx:?}"
        );
        v.on_decided(d, prov(1000, 100), Fate::Final); // confirmed
        let fx = v.on_op(z, pz, fin(1001, 101));
        assert!(shown_uids(&fx).is_empty(), "z waits behind a: {fx:?}");
        assert_eq!(v.highest_modseq(), 1000, "a reservation value");
        let fx = v.on_decided(a, prov(1002, 102), Fate::Final);
        assert_eq!(shown_uids(&fx), vec![101, 102], "ledger order: {fx:?}");
        assert!(!fx.iter().any(|e| matches!(e, Effect::Resequence { .. })));
        assert_eq!(v.highest_modseq(), 1002);
    }

    /// Finding 7 of the simulator: an own op whose final value waits behind
    /// an op that has not arrived (its origin is cut off) is shown from the
    /// reservation; the op it waits behind still holds every later final
    /// value, and CHANGEDSINCE from what this replica announces then reports
    /// everything on any replica.
    #[test]
    fn an_own_op_held_behind_a_missing_one_is_shown_from_the_reservation() {
        let r = ReplicaId(1);
        let mut spaces = Spaces::new();
        spaces.note_final(&[3], 7);
        spaces.reserve(Reservation {
            replica: r,
            uids: Span { lo: 100, hi: 200 },
            modseqs: Span { lo: 1000, hi: 2000 },
            floor_modseq: 7,
        });
        let (m, pm) = add(1); // final 5, payload not here yet
        let (x, px) = add(2); // own, final 6
        let (y, py) = add(3); // another's, final 7
        let mut v = MailboxView::new(1);
        v.on_decided(m, prov(5, 2), Fate::Final);
        let fx = v.on_op(x, px, fin(6, 3));
        assert!(shown_uids(&fx).is_empty());
        assert_eq!(v.unshown_finals().count(), 2);
        // The sequencer gives it provisional values (L1).
        let fx = v.on_decided(x, prov(1000, 100), Fate::Provisional);
        assert_eq!(shown_uids(&fx), vec![100]);
        assert!(spaces.modseq_owner(v.highest_modseq()).is_some());
        // m's final value now lies below the marks: new values are asked.
        assert!(fx
            .iter()
            .any(|e| matches!(e, Effect::Resequence { op, .. } if *op == m)));
        // y still waits behind m.
        let fx = v.on_op(y, py, fin(7, 4));
        assert!(shown_uids(&fx).is_empty());
        // A replica that shows the ledger: everything is reported from 1000.
        let mut other = MailboxView::new(1);
        let (_, pm2) = add(1);
        let (_, px2) = add(2);
        other.on_op(m, pm2, fin(5, 2));
        other.on_op(x, px2, fin(6, 3));
        let (changed, _) = other.changed_since(v.highest_modseq(), &spaces);
        assert_eq!(changed, vec![2, 3]);
        // This replica, asked from a final value, reports x (shown at a
        // value that is not its final one) as well.
        let (changed, _) = v.changed_since(1, &spaces);
        assert!(changed.contains(&100), "{changed:?}");
        // m arrives with new values: m, y (then re-asked: below the marks)
        // and x converge through the ledger.
        let fx = v.on_op(m, pm, None);
        assert!(
            shown_uids(&fx).is_empty(),
            "m's old value is below the marks"
        );
        // x keeps its place until the ledger settles it (its provisional
        // values confirmed), and y (asked for new values) keeps its own:
        // m's new values are shown with y's, in ledger order.
        let fx = v.on_decided(m, prov(1001, 101), Fate::Final);
        assert!(shown_uids(&fx).is_empty());
        let fx = v.on_decided(x, prov(1000, 100), Fate::Final);
        assert!(shown_uids(&fx).is_empty());
        let fx = v.on_decided(y, prov(1002, 102), Fate::Final);
        assert_eq!(shown_uids(&fx), vec![101, 102]);
        assert_eq!(v.unshown_finals().count(), 0);
    }

    /// A flag change over several entries is one op: each entry it changes
    /// gets its MODSEQ (and a FETCH event), entries it names without a
    /// visible change get the MODSEQ too (as a one-entry op would), new
    /// values for the op raise every entry, and CHANGEDSINCE reports them.
    #[test]
    fn a_flag_batch_gives_its_modseq_to_every_entry() {
        let mut v = MailboxView::new(1);
        for n in 1..=3u8 {
            let (o, p) = add(n);
            v.on_op(o, p, fin(n as u64, n as u32));
        }
        let e = |n: u8| EntryId([n; 16]);
        let b = OpId {
            origin: ReplicaId(1),
            seq: 100,
        };
        let changes = (1..=3u8)
            .map(|n| crate::mailbox::FlagChange {
                entry: e(n),
                // Entry 3: a remove of a tag that is not there (no visible change).
                add: if n < 3 {
                    vec![crate::mailbox::Flag::Seen]
                } else {
                    Vec::new()
                },
                remove: if n < 3 {
                    Vec::new()
                } else {
                    vec![(crate::mailbox::Flag::Flagged, vec![b])]
                },
            })
            .collect();
        let batch = MailboxOp::FlagsBatch { changes };
        let fx = v.on_op(
            b,
            batch.clone(),
            fin(10, 0).map(|(mut a, f)| {
                a.uids.clear();
                (a, f)
            }),
        );
        // One event for the op, naming both shown messages.
        let events: Vec<&Event> = fx
            .iter()
            .filter_map(|x| match x {
                Effect::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].flag_changes(), [(1, 10), (2, 10)]);
        for uid in 1..=3 {
            assert_eq!(v.message(uid).unwrap().modseq, 10, "uid {uid}");
        }
        assert_eq!(v.highest_modseq(), 10);
        let mut spaces = Spaces::new();
        spaces.note_final(&[3], 12);
        assert_eq!(v.changed_since(3, &spaces).0, vec![1, 2, 3]);
        assert!(v.changed_since(10, &spaces).0.is_empty());
        // Shown at its final value: settled, its entries are not kept.
        assert_eq!(v.kept_targets(), 0);
        // New values for the op (re-sequenced): the replica gives the
        // entries back from the op's payload, and every entry follows.
        let again = Assign {
            modseq: 12,
            uids: smallvec::SmallVec::new(),
        };
        assert!(v.lacks_targets(&b, &again));
        v.set_targets(b, batch.targets());
        v.on_decided(b, again, Fate::Final);
        assert_eq!(v.kept_targets(), 0);
        for uid in 1..=3 {
            assert_eq!(v.message(uid).unwrap().modseq, 12, "uid {uid}");
        }
        assert_eq!(v.changed_since(10, &spaces).0, vec![1, 2, 3]);
        assert!(v.index_is_consistent());
    }

    /// The dense rows follow every change: new messages, flag changes (with
    /// `\Seen` for the first unseen), expunges, a re-announced message, a
    /// reload; a message with more flags than the bit set holds reads them
    /// from the state.
    #[test]
    fn rows_follow_the_view() {
        use crate::mailbox::{Flag, FlagChange, Keyword};
        let uids = |v: &MailboxView| v.rows().iter().map(|r| r.uid).collect::<Vec<_>>();
        let mut v = MailboxView::new(1);
        let mut ops = Vec::new();
        for n in 1..=4u8 {
            let (o, p) = add(n);
            v.on_op(o, p, fin(n as u64, n as u32));
            ops.push(o);
        }
        assert_eq!(uids(&v), [1, 2, 3, 4]);
        assert_eq!(v.first_unseen(), Some(1));
        let e = |n: u8| EntryId([n; 16]);
        let op = |seq| OpId {
            origin: ReplicaId(3),
            seq,
        };
        let seen = MailboxOp::FlagsBatch {
            changes: (1..=2)
                .map(|n| FlagChange {
                    entry: e(n),
                    add: vec![Flag::Seen],
                    remove: Vec::new(),
                })
                .collect(),
        };
        v.on_op(op(10), seen, fin_change(10));
        assert_eq!(v.first_unseen(), Some(3));
        assert_eq!(v.rows()[0].modseq, 10);
        assert_eq!(v.flags_of(&v.rows()[1]), vec![Flag::Seen]);
        assert_eq!(v.rows()[2].modseq, 3);
        let gone = MailboxOp::Expunge {
            entries: vec![e(2)],
        };
        v.on_op(op(11), gone, fin_change(11));
        assert_eq!(uids(&v), [1, 3, 4]);
        // Message 3 is shown again under a new UID (S4).
        v.on_decided(ops[2], prov(12, 7), Fate::Final);
        assert_eq!(uids(&v), [1, 4, 7]);
        assert_eq!(v.rows()[2].modseq, 12);
        assert!(v.index_is_consistent());
        // Seventy keywords on message 1: beyond the bit set.
        let many: Vec<Flag> = (0..70)
            .map(|i| Flag::Keyword(Keyword::new(format!("k{i}")).unwrap()))
            .collect();
        let kw = MailboxOp::Flags {
            entry: e(1),
            add: many.clone(),
            remove: Vec::new(),
        };
        v.on_op(op(12), kw, fin_change(13));
        let mut want = many;
        want.push(Flag::Seen);
        want.sort_unstable();
        assert!(!v.rows()[0].flags.is_complete());
        assert_eq!(v.flags_of(&v.rows()[0]), want);
        assert!(v.index_is_consistent());
        // A reload rebuilds the same rows.
        let bytes = postcard::to_allocvec(&v).unwrap();
        let mut back: MailboxView = postcard::from_bytes(&bytes).unwrap();
        assert!(back.rows().is_empty());
        back.rebuild_index();
        assert_eq!(back.rows(), v.rows());
    }
}
