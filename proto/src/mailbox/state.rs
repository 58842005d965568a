//! The state of one mailbox: entries, their flags, expunges.
//!
//! An op-based CRDT fed the decrypted [`MailboxOp`]s of the mailbox's log.
//! The log layer deduplicates by [`OpId`] first, so [`MailboxState::apply`]
//! sees each op at most once, but in any order; the result depends only on
//! the set of ops applied.
//!
//! - **Entries** are a grow-only map `EntryId → (blob, date, size)`. Two
//!   `Add`s of one entry (never made by a correct replica) keep the greatest
//!   `(blob, date, size)`, so even that converges.
//! - **Flags** of an entry are an observed-remove set: the op that adds flag
//!   `f` tags it with its own [`OpId`]; a remove names the tags it observed.
//!   A tag added concurrently with a remove was not observed and survives
//!   (add wins). A remove that arrives before the add of a tag it names
//!   leaves a *pending* tag that cancels the add when it arrives, and is then
//!   dropped.
//! - **Expunge** is a tombstone: once expunged, an entry stays expunged, its
//!   flags (and pending tags) are dropped, and later flag ops on it are
//!   ignored. An `Expunge` that arrives before the `Add` makes the `Add`
//!   land expunged.
//!
//! A pending tag whose add had already arrived and been removed (two
//! replicas removing the same tag concurrently) would wait for an add that
//! never comes again; it costs 24 bytes, is dropped when the entry is
//! expunged, and [`MailboxState::gc_pending`] drops it earlier given the
//! log's knowledge of which ops were applied.
//!
//! # Memory
//!
//! Entries live in a `BTreeMap<EntryId, Entry>`: sorted, so iteration is
//! deterministic and the same on every replica (the simulator needs equal
//! runs for equal seeds), and it uses about as much memory as a `HashMap`
//! with a fixed hasher (measured with a counting allocator at 100k entries
//! with 2 flags each: `BTreeMap` 145 B/entry, `HashMap` 133 B/entry just
//! before a resize, ~215 B/entry just after). An entry is 48 bytes (blob,
//! date, size, a status byte, a boxed slice of tags); a tag is 24 bytes
//! (`OpId` + interned flag index); keywords are interned per mailbox. In
//! total about 145 bytes per live message with two flags, of which 44 are
//! the entry id, blob id, date and size themselves: ~100 bytes of overhead
//! (plus the allocator's own ~8-16 bytes for the tag slice); test
//! `memory_per_entry_100k` prints the estimate (144 B/entry).
//! An expunged entry keeps ~97 bytes (a tombstone must stay so that a late
//! `Add` does not resurrect it).

use super::flag::{Flag, FlagMode};
use super::intern::Interner;
use crate::ids::{BlobId, EntryId, OpId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The decrypted payload of one mailbox op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxOp {
    /// A message placed in the mailbox: APPEND, LMTP delivery, the
    /// destination side of COPY and MOVE (same blob, new entry id). The
    /// initial flags are tagged with this op's id.
    Add {
        /// The new entry, random.
        entry: EntryId,
        /// The message bytes it references.
        blob: BlobId,
        /// Initial flags.
        flags: Vec<Flag>,
        /// IMAP INTERNALDATE, ms since the Unix epoch.
        internal_date_ms: i64,
        /// RFC822.SIZE.
        size: u32,
    },
    /// A flag change of one entry: `add` is tagged with this op's id;
    /// `remove` lists, per flag, the tags observed by the op's origin.
    Flags {
        /// The entry.
        entry: EntryId,
        /// Flags added.
        add: Vec<Flag>,
        /// Flags removed, each with the tags (op ids) that were observed.
        remove: Vec<(Flag, Vec<OpId>)>,
    },
    /// Entries expunged (EXPUNGE, UID EXPUNGE, the source side of MOVE).
    Expunge {
        /// The entries.
        entries: Vec<EntryId>,
    },
    /// Flag changes of several entries made by one command (STORE over a
    /// UID set), each exactly as a [`MailboxOp::Flags`] of its entry would
    /// be: adds tagged with this op's id, removes naming the tags observed
    /// on that entry. One op, so one MODSEQ for every entry it changes
    /// (RFC 7162 §3.1.3 lets messages changed by one command share it).
    /// At most [`MAX_FLAG_BATCH`] entries, one change per entry (see
    /// [`batch_flags`]). Last variant, so that ops stored before it existed
    /// decode unchanged (postcard numbers variants in order).
    FlagsBatch {
        /// The changes, by entry, each entry once.
        changes: Vec<FlagChange>,
    },
    /// Flag changes of several entries made by one STORE that adds or
    /// removes the same flags on each (`+FLAGS`, `-FLAGS`): every entry gets
    /// `add` (tagged with this op's id) and loses the tags `observed` names
    /// for it, exactly as a [`MailboxOp::Flags`] of that entry with those
    /// lists would. The flag lists are written once for the op instead of
    /// once per entry: a `+FLAGS (\Seen)` is its entries' ids and little
    /// more, and building, encoding and applying it allocates nothing per
    /// entry. At most [`MAX_FLAG_BATCH`] entries (see [`SharedFlags`]).
    /// Last variant, as [`MailboxOp::FlagsBatch`] was.
    FlagsShared {
        /// Flags added to every entry.
        add: Vec<Flag>,
        /// The flags whose tags `observed` removes, named by position.
        remove: Vec<Flag>,
        /// The entries, ascending, each once.
        entries: Vec<EntryId>,
        /// The tags removed, by entry position.
        observed: Vec<ObservedTag>,
    },
}

/// One tag a [`MailboxOp::FlagsShared`] removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedTag {
    /// The entry, by its position in the op's `entries`.
    pub entry: u32,
    /// The flag, by its position in the op's `remove`.
    pub flag: u32,
    /// The tag (the op that added the flag).
    pub tag: OpId,
}

/// One entry's flag change inside a [`MailboxOp::FlagsBatch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagChange {
    /// The entry.
    pub entry: EntryId,
    /// Flags added (tagged with the op's id).
    pub add: Vec<Flag>,
    /// Flags removed, each with the tags (op ids) observed on this entry.
    pub remove: Vec<(Flag, Vec<OpId>)>,
}

/// Most entries one [`MailboxOp::FlagsBatch`] carries. An op is one
/// encrypted payload of at most `MAX_OP_PAYLOAD` (1 MiB), sent whole in a
/// gossip message and in a sync page (1 MiB, 4 MiB per message), and
/// decrypted and applied in one go: 4,000 entries are ~100 KB (estimated) for a typical
/// `+FLAGS (\Seen)` (entry id, flag, an observed tag or two), so an op stays
/// below those bounds while a STORE over 100k messages is ~26 ops instead
/// of 100k. With 1,000 entries (~100 ops) a `STORE 1:* +FLAGS` cost the
/// node a quarter more CPU: each op is encrypted, logged, inserted into
/// sled (a leaf split per few ops) and applied on its own, and 250 or 100
/// cost more still. [`MAX_FLAG_BATCH_BYTES`] bounds unusual changes (many
/// long keywords, many observed tags).
pub const MAX_FLAG_BATCH: usize = 4_000;

/// Estimated encoded bytes after which a batch is cut even below
/// [`MAX_FLAG_BATCH`] entries: a quarter of the op payload bound.
pub const MAX_FLAG_BATCH_BYTES: usize = 256 * 1024;

/// Groups per-entry flag ops ([`MailboxOp::Flags`], as the builders
/// [`MailboxState::add_flags`], [`MailboxState::remove_flags`] and
/// [`MailboxState::replace_flags`] make them) into ops of at most `max`
/// entries (and about [`MAX_FLAG_BATCH_BYTES`]), in order. No-op changes are
/// dropped, an entry named twice keeps its first change, and a group of one
/// stays a [`MailboxOp::Flags`]. Other ops pass through alone.
pub fn batch_flags(ops: impl IntoIterator<Item = MailboxOp>, max: usize) -> Vec<MailboxOp> {
    let max = max.max(1);
    let mut ops = ops.into_iter();
    // Room for a whole batch at once (or what is left of the input, when
    // it says): no regrowth of the batch being filled.
    let room = |left: usize| max.min(left.max(1));
    let mut out = Vec::new();
    // Entries seen, once they stop ascending (ascending ones, what
    // `store_flags` gives, are distinct without a set).
    let mut seen = crate::FastSet::default();
    let mut last: Option<EntryId> = None;
    let mut ascending = true;
    let mut cur: Vec<FlagChange> = Vec::with_capacity(room(ops.size_hint().0));
    let mut bytes = 0usize;
    let flush = |cur: &mut Vec<FlagChange>, out: &mut Vec<MailboxOp>, next: usize| match cur.len() {
        0 => {}
        1 => {
            let c = cur.pop().expect("one change");
            out.push(MailboxOp::Flags {
                entry: c.entry,
                add: c.add,
                remove: c.remove,
            });
        }
        _ => out.push(MailboxOp::FlagsBatch {
            changes: std::mem::replace(cur, Vec::with_capacity(next)),
        }),
    };
    while let Some(op) = ops.next() {
        if op.is_noop() {
            continue;
        }
        let MailboxOp::Flags { entry, add, remove } = op else {
            out.push(op);
            continue;
        };
        if ascending && last.is_some_and(|l| l >= entry) {
            ascending = false;
            seen.extend(out.iter().flat_map(MailboxOp::targets));
            seen.extend(cur.iter().map(|c| c.entry));
        }
        if ascending {
            last = Some(entry);
        } else if !seen.insert(entry) {
            continue;
        }
        let c = FlagChange { entry, add, remove };
        let size = c.approx_bytes();
        if !cur.is_empty() && (cur.len() >= max || bytes + size > MAX_FLAG_BATCH_BYTES) {
            flush(&mut cur, &mut out, room(ops.size_hint().0 + 1));
            bytes = 0;
        }
        bytes += size;
        cur.push(c);
    }
    flush(&mut cur, &mut out, 0);
    out
}

impl FlagChange {
    /// An upper estimate of its postcard size.
    fn approx_bytes(&self) -> usize {
        change_bytes(&self.add, &self.remove)
    }
}

/// An upper estimate of the postcard size of one entry's flag change.
fn change_bytes(add: &[Flag], remove: &[(Flag, Vec<OpId>)]) -> usize {
    let flag = |f: &Flag| match f {
        Flag::Keyword(k) => 3 + k.as_str().len(),
        _ => 1,
    };
    16 + 2
        + add.iter().map(flag).sum::<usize>()
        + remove
            .iter()
            .map(|(f, t)| flag(f) + 2 + 20 * t.len())
            .sum::<usize>()
}

impl MailboxOp {
    /// An upper estimate of its postcard size, to size the buffer it is
    /// encoded into.
    pub fn approx_bytes(&self) -> usize {
        match self {
            MailboxOp::FlagsBatch { changes } => {
                8 + changes.iter().map(FlagChange::approx_bytes).sum::<usize>()
            }
            MailboxOp::Flags { add, remove, .. } => change_bytes(add, remove),
            MailboxOp::Expunge { entries } => 8 + 16 * entries.len(),
            MailboxOp::Add { flags, .. } => 64 + 24 * flags.len(),
            MailboxOp::FlagsShared {
                add,
                remove,
                entries,
                observed,
            } => {
                change_bytes(add, &[])
                    + change_bytes(remove, &[])
                    + 16 * entries.len()
                    + OBSERVED_BYTES * observed.len()
            }
        }
    }

    /// True for an op that cannot change any state (a flag op with nothing
    /// to add or remove, an empty expunge); the caller need not log it.
    pub fn is_noop(&self) -> bool {
        match self {
            MailboxOp::Add { .. } => false,
            MailboxOp::Flags { add, remove, .. } => {
                add.is_empty() && remove.iter().all(|(_, t)| t.is_empty())
            }
            MailboxOp::Expunge { entries } => entries.is_empty(),
            MailboxOp::FlagsBatch { changes } => changes
                .iter()
                .all(|c| c.add.is_empty() && c.remove.iter().all(|(_, t)| t.is_empty())),
            MailboxOp::FlagsShared {
                add,
                entries,
                observed,
                ..
            } => entries.is_empty() || (add.is_empty() && observed.is_empty()),
        }
    }

    /// The entries a flag change or an expunge names (MODSEQ targets); an
    /// `Add` names none.
    pub fn targets(&self) -> Vec<EntryId> {
        match self {
            MailboxOp::Add { .. } => Vec::new(),
            MailboxOp::Flags { entry, .. } => vec![*entry],
            MailboxOp::Expunge { entries } => entries.clone(),
            MailboxOp::FlagsBatch { changes } => changes.iter().map(|c| c.entry).collect(),
            MailboxOp::FlagsShared { entries, .. } => entries.clone(),
        }
    }
}

/// An upper estimate of the postcard size of one [`ObservedTag`] (two
/// varint positions and an op id).
const OBSERVED_BYTES: usize = 2 * 5 + 20;

/// Builds the [`MailboxOp::FlagsShared`] ops of one STORE `+FLAGS` or
/// `-FLAGS` ([`MailboxState::shared_flags`]): entries are pushed in
/// ascending order with the flags their row shows, looked up in the state
/// along one walk only when the change must name tags they hold, and cut
/// into ops of at most `max` entries (and about [`MAX_FLAG_BATCH_BYTES`]).
/// The changes are those of [`MailboxState::add_flags`] and
/// [`MailboxState::remove_flags`]; an entry they would not change is left
/// out.
pub struct SharedFlags<'a> {
    walk: EntryWalk<'a>,
    /// Whether the flags are added (else removed).
    adds: bool,
    /// The flags, sorted, without duplicates.
    flags: Vec<Flag>,
    /// Their indices in the state (`None`: never set in this mailbox).
    indices: Vec<Option<u32>>,
    max: usize,
    entries: Vec<EntryId>,
    observed: Vec<ObservedTag>,
    /// One entry's tags, before they join `observed`: (flag position, tag).
    found: Vec<(u32, OpId)>,
    bytes: usize,
    out: Vec<MailboxOp>,
}

impl SharedFlags<'_> {
    /// Adds `entry`'s change; `bits` are its flags as its row shows them.
    pub fn push(&mut self, entry: EntryId, bits: FlagBits) {
        self.found.clear();
        let holds_none =
            bits.is_complete() && !self.indices.iter().flatten().any(|&i| bits.contains(i));
        if !holds_none {
            if let Some(e) = self.walk.get(&entry).filter(|e| e.live()) {
                for (j, i) in self.indices.iter().enumerate() {
                    let Some(i) = *i else { continue };
                    let from = self.found.len();
                    self.found.extend(e.live_tags(i).map(|op| (j as u32, op)));
                    self.found[from..].sort_unstable();
                }
            }
        }
        if !self.adds && self.found.is_empty() {
            return;
        }
        let size = 17 + OBSERVED_BYTES * self.found.len();
        if !self.entries.is_empty()
            && (self.entries.len() >= self.max || self.bytes + size > MAX_FLAG_BATCH_BYTES)
        {
            self.cut();
        }
        self.bytes += size;
        let at = self.entries.len() as u32;
        self.entries.push(entry);
        self.observed
            .extend(self.found.iter().map(|&(flag, tag)| ObservedTag {
                entry: at,
                flag,
                tag,
            }));
    }

    /// The ops, in order.
    pub fn finish(mut self) -> Vec<MailboxOp> {
        self.cut();
        self.out
    }

    /// Makes an op of the entries pushed since the last one. Its `remove`
    /// names only the flags some entry loses a tag of (so that a `-FLAGS`
    /// of a keyword no message has does not enter the keyword table).
    fn cut(&mut self) {
        if self.entries.is_empty() {
            return;
        }
        let mut used = vec![None; self.flags.len()];
        let mut remove = Vec::new();
        for o in &mut self.observed {
            let slot = &mut used[o.flag as usize];
            let p = *slot.get_or_insert_with(|| {
                remove.push(self.flags[o.flag as usize].clone());
                remove.len() as u32 - 1
            });
            o.flag = p;
        }
        self.out.push(MailboxOp::FlagsShared {
            add: if self.adds {
                self.flags.clone()
            } else {
                Vec::new()
            },
            remove,
            entries: std::mem::replace(&mut self.entries, Vec::with_capacity(self.max)),
            observed: std::mem::take(&mut self.observed),
        });
        self.bytes = 0;
    }
}

/// The flags of an entry as a set of interned flag indices, for indices
/// below 63; a flag of a higher index (the 59th keyword of a mailbox and
/// later) only marks the set incomplete, and the reader asks
/// [`MailboxState::entry`] instead. `\Seen` is index 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlagBits(u64);

impl FlagBits {
    /// No flag.
    pub const EMPTY: FlagBits = FlagBits(0);
    const INCOMPLETE: u64 = 1 << 63;

    /// The set with index `i` added.
    pub(crate) fn with(self, i: u32) -> FlagBits {
        match i {
            0..63 => FlagBits(self.0 | 1 << i),
            _ => FlagBits(self.0 | Self::INCOMPLETE),
        }
    }

    /// Whether every flag of the entry is in the set.
    pub fn is_complete(self) -> bool {
        self.0 & Self::INCOMPLETE == 0
    }

    /// Whether the flag of index `i` is in the set (false for an index the
    /// set cannot hold: see [`FlagBits::is_complete`]).
    pub fn contains(self, i: u32) -> bool {
        i < 63 && self.0 & 1 << i != 0
    }

    /// Whether `\Seen` is set.
    pub fn seen(self) -> bool {
        self.0 & 1 != 0
    }

    /// Whether `\Deleted` is set.
    pub fn deleted(self) -> bool {
        self.0 & 1 << 3 != 0
    }

    /// The indices in the set, ascending.
    fn indices(self) -> impl Iterator<Item = u32> {
        let mut bits = self.0 & !Self::INCOMPLETE;
        std::iter::from_fn(move || {
            let i = bits.trailing_zeros();
            bits &= bits.wrapping_sub(1);
            (i < 64).then_some(i)
        })
    }
}

/// What a reader sees of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryView {
    /// The message bytes.
    pub blob: BlobId,
    /// Current flags, sorted, without duplicates; empty once expunged.
    pub flags: Vec<Flag>,
    /// IMAP INTERNALDATE, ms since the Unix epoch.
    pub internal_date_ms: i64,
    /// RFC822.SIZE.
    pub size: u32,
    /// Whether the entry is expunged.
    pub expunged: bool,
}

/// One tag of an entry's observed-remove flag set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Tag {
    /// The op that added the flag.
    op: OpId,
    /// Interned flag index.
    flag: u32,
    /// A pending removal: a remove named this tag before its add arrived.
    removed: bool,
}

/// `Entry::status` bit: the `Add` arrived (blob, date and size are known).
const ADDED: u8 = 1;
/// `Entry::status` bit: expunged, forever.
const EXPUNGED: u8 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    blob: BlobId,
    internal_date_ms: i64,
    size: u32,
    status: u8,
    /// Live tags and pending removals, in no particular order; a flag is set
    /// when one live tag names it. Empty once expunged.
    tags: Box<[Tag]>,
}

impl Entry {
    /// An entry known from a flag op or an expunge before its `Add`.
    fn placeholder() -> Self {
        Entry {
            blob: BlobId([0; 16]),
            internal_date_ms: 0,
            size: 0,
            status: 0,
            tags: Box::new([]),
        }
    }

    fn added(&self) -> bool {
        self.status & ADDED != 0
    }

    fn expunged(&self) -> bool {
        self.status & EXPUNGED != 0
    }

    fn live(&self) -> bool {
        self.status == ADDED
    }

    /// Sorted, deduplicated indices of the flags set.
    fn flag_indices(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .tags
            .iter()
            .filter(|t| !t.removed)
            .map(|t| t.flag)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The live tags of flag `i`, sorted.
    fn observed(&self, i: u32) -> Vec<OpId> {
        let mut v: Vec<OpId> = self.live_tags(i).collect();
        v.sort_unstable();
        v
    }

    /// The live tags of flag `i`, in no particular order.
    fn live_tags(&self, i: u32) -> impl Iterator<Item = OpId> + '_ {
        self.tags
            .iter()
            .filter(move |t| !t.removed && t.flag == i)
            .map(|t| t.op)
    }
}

/// The CRDT state of one mailbox. See the [module documentation](self).
///
/// Serializable (postcard) as a checkpoint that bounds replay: restore it
/// and apply only the ops that came after.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StateRepr")]
pub struct MailboxState {
    keywords: Interner,
    entries: BTreeMap<EntryId, Entry>,
    /// Number of live entries (added, not expunged). Recomputed on load.
    #[serde(skip_serializing)]
    live: usize,
}

#[derive(Deserialize)]
struct StateRepr {
    keywords: Interner,
    entries: BTreeMap<EntryId, Entry>,
}

impl From<StateRepr> for MailboxState {
    fn from(r: StateRepr) -> Self {
        let live = r.entries.values().filter(|e| e.live()).count();
        MailboxState {
            keywords: r.keywords,
            entries: r.entries,
            live,
        }
    }
}

impl MailboxState {
    /// An empty mailbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies op `id` and returns the entries whose visible state changed
    /// (appeared, flags changed, expunged), sorted. Must be called at most
    /// once per op id; any order of ops gives the same state.
    pub fn apply(&mut self, id: OpId, op: &MailboxOp) -> Vec<EntryId> {
        self.apply_with_bits(id, op)
            .into_iter()
            .map(|(e, _)| e)
            .collect()
    }

    /// [`MailboxState::apply`], each changed entry with its flags after the
    /// op (what [`MailboxState::flag_bits`] would read; empty for an
    /// expunged one), so that the caller need not look each entry up again.
    pub(crate) fn apply_with_bits(&mut self, id: OpId, op: &MailboxOp) -> Vec<(EntryId, FlagBits)> {
        match op {
            MailboxOp::Add {
                entry,
                blob,
                flags,
                internal_date_ms,
                size,
            } => {
                let e = self
                    .entries
                    .entry(*entry)
                    .or_insert_with(Entry::placeholder);
                let meta = (*blob, *internal_date_ms, *size);
                let was_added = e.added();
                if !was_added || meta > (e.blob, e.internal_date_ms, e.size) {
                    (e.blob, e.internal_date_ms, e.size) = meta;
                }
                e.status |= ADDED;
                if e.expunged() {
                    return Vec::new();
                }
                if !was_added {
                    self.live += 1;
                }
                let idx: Vec<u32> = flags.iter().map(|f| self.keywords.intern(f)).collect();
                let e = self.entries.get_mut(entry).expect("inserted above");
                add_tags(e, id, &idx);
                vec![(*entry, bits_of(&e.tags))]
            }
            MailboxOp::Flags { entry, add, remove } => self
                .apply_flags(id, entry, add, remove)
                .map(|b| (*entry, b))
                .into_iter()
                .collect(),
            MailboxOp::FlagsBatch { changes } => {
                let (keywords, map) = (&mut self.keywords, &mut self.entries);
                apply_each(
                    map,
                    changes.len(),
                    |i| changes[i].entry,
                    |e, i| change_flags(keywords, e, id, &changes[i].add, &changes[i].remove),
                )
            }
            MailboxOp::FlagsShared {
                add,
                remove,
                entries,
                observed,
            } => self.apply_shared(id, add, remove, entries, observed),
            MailboxOp::Expunge { entries } => {
                let mut changed = Vec::new();
                for id in entries {
                    let e = self.entries.entry(*id).or_insert_with(Entry::placeholder);
                    if e.expunged() {
                        continue;
                    }
                    if e.added() {
                        self.live -= 1;
                        changed.push((*id, FlagBits::EMPTY));
                    }
                    e.status |= EXPUNGED;
                    e.tags = Box::new([]);
                }
                changed.sort_unstable_by_key(|c| c.0);
                changed.dedup_by_key(|c| c.0);
                changed
            }
        }
    }

    /// Applies one entry's flag change tagged `id`; the entry's flags after
    /// it when its visible flags changed.
    fn apply_flags(
        &mut self,
        id: OpId,
        entry: &EntryId,
        add: &[Flag],
        remove: &[(Flag, Vec<OpId>)],
    ) -> Option<FlagBits> {
        // One lookup: a flag change that arrives before its entry's `Add`
        // leaves a placeholder (as it always did); an expunged entry has one.
        let e = self
            .entries
            .entry(*entry)
            .or_insert_with(Entry::placeholder);
        change_flags(&mut self.keywords, e, id, add, remove)
    }

    /// A [`MailboxOp::FlagsShared`]: its flags interned once for all its
    /// entries, each entry's removed tags read from its run of `observed`
    /// (sorted by entry position first if a peer did not).
    fn apply_shared(
        &mut self,
        id: OpId,
        add: &[Flag],
        remove: &[Flag],
        entries: &[EntryId],
        observed: &[ObservedTag],
    ) -> Vec<(EntryId, FlagBits)> {
        let sorted_observed;
        let observed = if observed.is_sorted_by_key(|o| o.entry) {
            observed
        } else {
            let mut v = observed.to_vec();
            v.sort_by_key(|o| o.entry);
            sorted_observed = v;
            &sorted_observed[..]
        };
        let (keywords, map) = (&mut self.keywords, &mut self.entries);
        // Removed flags are interned when a tag of theirs is met, before the
        // added ones, in the order a per-entry change interns them.
        let mut removed: Vec<Option<u32>> = vec![None; remove.len()];
        let mut added: Option<Vec<u32>> = None;
        let mut next = 0;
        let mut tags: Vec<(u32, OpId)> = Vec::new();
        apply_each(
            map,
            entries.len(),
            |i| entries[i],
            |e, i| {
                if e.expunged() {
                    return None;
                }
                let i = i as u32;
                while observed.get(next).is_some_and(|o| o.entry < i) {
                    next += 1;
                }
                tags.clear();
                while let Some(o) = observed.get(next).filter(|o| o.entry == i) {
                    next += 1;
                    // A position past `remove` names no flag: skipped.
                    if let Some(f) = remove.get(o.flag as usize) {
                        let flag =
                            *removed[o.flag as usize].get_or_insert_with(|| keywords.intern(f));
                        tags.push((flag, o.tag));
                    }
                }
                let add =
                    added.get_or_insert_with(|| add.iter().map(|f| keywords.intern(f)).collect());
                change_tags(e, id, add, &tags)
            },
        )
    }

    pub fn entry(&self, id: &EntryId) -> Option<EntryView> {
        let e = self.entries.get(id).filter(|e| e.added())?;
        Some(EntryView {
            blob: e.blob,
            flags: self.flags_of(e),
            internal_date_ms: e.internal_date_ms,
            size: e.size,
            expunged: e.expunged(),
        })
    }

    /// INTERNALDATE (ms) and size of an entry once its `Add` arrived,
    /// without decoding its flags.
    pub fn date_and_size(&self, id: &EntryId) -> Option<(i64, u32)> {
        let e = self.entries.get(id).filter(|e| e.added())?;
        Some((e.internal_date_ms, e.size))
    }

    /// The blob of the entry, once its `Add` arrived (also when expunged),
    /// without decoding its flags (what [`MailboxState::entry`] does).
    pub fn blob_of(&self, id: &EntryId) -> Option<BlobId> {
        self.entries.get(id).filter(|e| e.added()).map(|e| e.blob)
    }

    /// Whether the entry is live: added and not expunged.
    pub fn contains(&self, id: &EntryId) -> bool {
        self.entries.get(id).is_some_and(Entry::live)
    }

    /// Whether an expunge of the entry was applied (its `Add` may not have
    /// arrived yet).
    pub fn is_expunged(&self, id: &EntryId) -> bool {
        self.entries.get(id).is_some_and(Entry::expunged)
    }

    /// The index of a flag in [`FlagBits`], if it was ever set here.
    pub fn flag_index(&self, flag: &Flag) -> Option<u32> {
        self.keywords.get(flag)
    }

    /// Every keyword ever set in this mailbox (interned), in first-seen
    /// order: a superset of the keywords in use, without scanning messages.
    pub fn known_keywords(&self) -> Vec<Flag> {
        self.keywords.keywords()
    }

    /// How many keywords [`Self::known_keywords`] lists, without listing
    /// them: the table only grows, so an equal count is an equal list.
    pub fn known_keyword_count(&self) -> usize {
        self.keywords.len()
    }

    /// The flags of a live entry as a bit set of their interned indices
    /// (empty for an entry not live): what a dense listing keeps per message.
    pub fn flag_bits(&self, id: &EntryId) -> FlagBits {
        match self.entries.get(id) {
            Some(e) if e.live() => bits_of(&e.tags),
            _ => FlagBits::EMPTY,
        }
    }

    /// The flags a complete bit set names, sorted (as [`EntryView::flags`]);
    /// `None` for a set with [`FlagBits::is_complete`] false.
    pub fn flags_in(&self, bits: FlagBits) -> Option<Vec<Flag>> {
        if !bits.is_complete() {
            return None;
        }
        let mut v: Vec<Flag> = bits
            .indices()
            .filter_map(|i| self.keywords.flag(i))
            .collect();
        v.sort_unstable();
        Some(v)
    }

    /// The live entries, sorted by id.
    pub fn live_entries(&self) -> impl Iterator<Item = &EntryId> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.live())
            .map(|(id, _)| id)
    }

    /// The blobs referenced by live entries. An account-level collector
    /// keeps a blob while any mailbox's `live_blobs` holds it.
    pub fn live_blobs(&self) -> BTreeSet<BlobId> {
        self.entries
            .values()
            .filter(|e| e.live())
            .map(|e| e.blob)
            .collect()
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there is no live entry.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Builds the op for STORE +FLAGS: adds `flags` under a new tag and
    /// removes the tags observed for them (so that one tag per flag remains
    /// without concurrency; a concurrent remove of the old tags does not
    /// remove the new one: add wins).
    pub fn add_flags(&self, entry: EntryId, flags: &[Flag]) -> MailboxOp {
        self.add_flags_of(entry, self.entries.get(&entry), flags)
    }

    /// Builds the op for STORE -FLAGS: removes the observed tags of `flags`.
    pub fn remove_flags(&self, entry: EntryId, flags: &[Flag]) -> MailboxOp {
        self.remove_flags_of(entry, self.entries.get(&entry), flags)
    }

    /// Builds the op for STORE FLAGS: removes the observed tags of every
    /// flag not in `flags`, adds the flags of `flags` not already set (a
    /// flag kept is not re-tagged, so a concurrent removal of it wins).
    pub fn replace_flags(&self, entry: EntryId, flags: &[Flag]) -> MailboxOp {
        self.replace_flags_of(entry, self.entries.get(&entry), flags)
    }

    /// A walk for looking entries up by ascending id (see [`EntryWalk`]).
    pub fn walk(&self) -> EntryWalk<'_> {
        EntryWalk {
            entries: &self.entries,
            at: None,
        }
    }

    /// A builder of the ops of a STORE that adds (`adds`) or removes
    /// `flags` on many entries (see [`SharedFlags`]), at most `max` entries
    /// an op.
    pub fn shared_flags(&self, adds: bool, flags: &[Flag], max: usize) -> SharedFlags<'_> {
        let flags = sorted(flags);
        let indices = flags.iter().map(|f| self.keywords.get(f)).collect();
        let max = max.clamp(1, MAX_FLAG_BATCH);
        SharedFlags {
            walk: self.walk(),
            adds,
            flags,
            indices,
            max,
            entries: Vec::with_capacity(max),
            observed: Vec::new(),
            found: Vec::new(),
            bytes: 0,
            out: Vec::new(),
        }
    }

    /// The op of a STORE of `mode` on `entry` ([`MailboxState::add_flags`],
    /// [`MailboxState::remove_flags`] or [`MailboxState::replace_flags`]),
    /// the entry looked up along `walk` (entries asked in ascending order:
    /// most lookups are a step).
    pub fn store_op_in(
        &self,
        walk: &mut EntryWalk<'_>,
        mode: FlagMode,
        entry: EntryId,
        flags: &[Flag],
    ) -> MailboxOp {
        let e = walk.get(&entry);
        match mode {
            FlagMode::Add => self.add_flags_of(entry, e, flags),
            FlagMode::Remove => self.remove_flags_of(entry, e, flags),
            FlagMode::Replace => self.replace_flags_of(entry, e, flags),
        }
    }

    fn add_flags_of(&self, entry: EntryId, e: Option<&Entry>, flags: &[Flag]) -> MailboxOp {
        let add = sorted(flags);
        let remove = self.observed_in(e, add.iter());
        MailboxOp::Flags { entry, add, remove }
    }

    fn remove_flags_of(&self, entry: EntryId, e: Option<&Entry>, flags: &[Flag]) -> MailboxOp {
        let remove = self.observed_in(e, sorted(flags).iter());
        MailboxOp::Flags {
            entry,
            add: Vec::new(),
            remove,
        }
    }

    fn replace_flags_of(&self, entry: EntryId, e: Option<&Entry>, flags: &[Flag]) -> MailboxOp {
        let new = sorted(flags);
        let current = e
            .filter(|e| e.added())
            .map(|e| self.flags_of(e))
            .unwrap_or_default();
        let gone: Vec<Flag> = current
            .iter()
            .filter(|f| !new.contains(f))
            .cloned()
            .collect();
        let remove = self.observed_in(e, gone.iter());
        let add = new.into_iter().filter(|f| !current.contains(f)).collect();
        MailboxOp::Flags { entry, add, remove }
    }

    /// Builds the op for EXPUNGE of `entries`.
    pub fn expunge(&self, entries: &[EntryId]) -> MailboxOp {
        let mut entries = entries.to_vec();
        entries.sort_unstable();
        entries.dedup();
        MailboxOp::Expunge { entries }
    }

    /// Drops pending removals whose add op has been applied (they can never
    /// match again) and placeholders left empty. `applied` must answer true
    /// only for ops already applied to this state (e.g. the log's version
    /// vector). Returns the number of tags dropped. O(entries): run it
    /// rarely (at checkpoint time).
    pub fn gc_pending(&mut self, applied: impl Fn(&OpId) -> bool) -> usize {
        let mut dropped = 0;
        self.entries.retain(|_, e| {
            if e.tags.iter().any(|t| t.removed && applied(&t.op)) {
                let mut tags = std::mem::take(&mut e.tags).into_vec();
                let n = tags.len();
                tags.retain(|t| !(t.removed && applied(&t.op)));
                dropped += n - tags.len();
                e.tags = tags.into_boxed_slice();
            }
            e.status != 0 || !e.tags.is_empty()
        });
        dropped
    }

    /// Approximate heap bytes held, from sizes and capacities. The B-tree
    /// part uses the fill measured for random keys (~2/3 of the 11 slots of
    /// a node, plus node headers), as `BTreeMap` does not tell its node
    /// count.
    pub fn approx_heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<EntryId>() + std::mem::size_of::<Entry>();
        let map = self.entries.len() * slot * 3 / 2;
        let tags: usize = self
            .entries
            .values()
            .map(|e| e.tags.len() * std::mem::size_of::<Tag>())
            .sum();
        map + tags + self.keywords.heap_bytes()
    }

    fn flags_of(&self, e: &Entry) -> Vec<Flag> {
        let mut v: Vec<Flag> = e
            .flag_indices()
            .into_iter()
            .filter_map(|i| self.keywords.flag(i))
            .collect();
        v.sort_unstable();
        v
    }

    /// For each flag with live tags on `entry`, the tags.
    fn observed_in<'a>(
        &self,
        e: Option<&Entry>,
        flags: impl Iterator<Item = &'a Flag>,
    ) -> Vec<(Flag, Vec<OpId>)> {
        let Some(e) = e.filter(|e| e.live()) else {
            return Vec::new();
        };
        flags
            .filter_map(|f| {
                let tags = e.observed(self.keywords.get(f)?);
                (!tags.is_empty()).then(|| (f.clone(), tags))
            })
            .collect()
    }
}

/// Looks entries up by ascending id: each lookup steps on from the last one
/// found (a few steps, then a new search), so that the entries of a STORE
/// over many messages, taken in id order, cost a walk of the map rather
/// than a search from the root each (a cache miss per level at 100k
/// entries). Asked out of order, it searches: the answers are the same.
pub struct EntryWalk<'a> {
    entries: &'a BTreeMap<EntryId, Entry>,
    at: Option<std::collections::btree_map::Range<'a, EntryId, Entry>>,
}

impl<'a> EntryWalk<'a> {
    /// Entries stepped over before a new search is cheaper.
    const MAX_SKIP: usize = 8;

    fn get(&mut self, id: &EntryId) -> Option<&'a Entry> {
        if let Some(at) = self.at.as_mut() {
            for _ in 0..=Self::MAX_SKIP {
                match at.next() {
                    Some((k, e)) if k == id => return Some(e),
                    Some((k, _)) if k < id => {}
                    _ => break,
                }
            }
        }
        let mut at = self.entries.range(id..);
        let found = match at.next() {
            Some((k, e)) if k == id => Some(e),
            _ => None,
        };
        self.at = Some(at);
        found
    }
}

/// One entry's flag change tagged `id` (see [`MailboxState::apply_flags`]).
fn change_flags(
    keywords: &mut Interner,
    e: &mut Entry,
    id: OpId,
    add: &[Flag],
    remove: &[(Flag, Vec<OpId>)],
) -> Option<FlagBits> {
    if e.expunged() {
        return None;
    }
    let mut removed: smallvec::SmallVec<[(u32, OpId); 4]> = smallvec::SmallVec::new();
    for (f, ops) in remove {
        let flag = keywords.intern(f);
        removed.extend(ops.iter().map(|&op| (flag, op)));
    }
    let added: smallvec::SmallVec<[u32; 4]> = add.iter().map(|f| keywords.intern(f)).collect();
    change_tags(e, id, &added, &removed)
}

/// One entry's flag change tagged `id`, its flags interned: the tags
/// `remove` names are removed (or left pending), then `add`'s flags are
/// tagged `id`. The entry's flags after it when its visible flags changed.
fn change_tags(e: &mut Entry, id: OpId, add: &[u32], remove: &[(u32, OpId)]) -> Option<FlagBits> {
    if e.expunged() {
        return None;
    }
    let before = bits_of(&e.tags);
    let before_all = (!before.is_complete()).then(|| e.flag_indices());
    let mut tags = std::mem::take(&mut e.tags).into_vec();
    // Room for the adds at once: one allocation, none to shrink after.
    tags.reserve_exact(add.len());
    for &(flag, op) in remove {
        put_tag(&mut tags, flag, op, true);
    }
    for &flag in add {
        put_tag(&mut tags, flag, id, false);
    }
    e.tags = tags.into_boxed_slice();
    let after = bits_of(&e.tags);
    let changed = match before_all {
        None if after.is_complete() => after != before,
        // A set beyond the bits on either side: compare the indices.
        _ => before_all.unwrap_or_else(|| before.indices().collect()) != e.flag_indices(),
    };
    (e.added() && changed).then_some(after)
}

/// Applies a flag change to each of `entries` (by position) with `change`,
/// as [`MailboxState::apply_flags`] would: an entry the map lacks gets a
/// placeholder first. Entries in strictly ascending order (what
/// `store_flags` makes: its ops are runs of the entries in id order) are
/// found by walking the map instead of one search from the root each, so
/// that consecutive entries are read from the same or neighbouring nodes; a
/// gap of more than a few entries starts a new search. Entries in another
/// order are searched one by one, and one named twice (no correct replica
/// does that) keeps the flags of its last change. The changed entries with
/// their flags, sorted.
fn apply_each(
    map: &mut BTreeMap<EntryId, Entry>,
    n: usize,
    entry_at: impl Fn(usize) -> EntryId,
    mut change: impl FnMut(&mut Entry, usize) -> Option<FlagBits>,
) -> Vec<(EntryId, FlagBits)> {
    /// Entries stepped over before a new search is cheaper.
    const MAX_SKIP: usize = 8;
    let mut out = Vec::with_capacity(n);
    if !(1..n).all(|i| entry_at(i - 1) < entry_at(i)) {
        for i in 0..n {
            let entry = entry_at(i);
            let e = map.entry(entry).or_insert_with(Entry::placeholder);
            if let Some(b) = change(e, i) {
                out.push((entry, b));
            }
        }
        out.sort_by_key(|c| c.0);
        let mut kept: Vec<(EntryId, FlagBits)> = Vec::with_capacity(out.len());
        for c in out {
            match kept.last_mut() {
                Some(l) if l.0 == c.0 => *l = c,
                _ => kept.push(c),
            }
        }
        return kept;
    }
    let mut i = 0;
    while i < n {
        let mut walk = map.range_mut(entry_at(i)..);
        let mut skipped = 0;
        while i < n {
            let want = entry_at(i);
            match walk.next() {
                Some((k, e)) if *k == want => {
                    if let Some(b) = change(e, i) {
                        out.push((want, b));
                    }
                    i += 1;
                    skipped = 0;
                }
                Some((k, _)) if *k < want && skipped < MAX_SKIP => skipped += 1,
                Some((k, _)) if *k < want => break,
                // Past it, or at the end: the entry is not in the map.
                _ => {
                    drop(walk);
                    let e = map.entry(want).or_insert_with(Entry::placeholder);
                    if let Some(b) = change(e, i) {
                        out.push((want, b));
                    }
                    i += 1;
                    break;
                }
            }
        }
    }
    out
}

/// The flags the tags hold (those not removed).
fn bits_of(tags: &[Tag]) -> FlagBits {
    tags.iter()
        .filter(|t| !t.removed)
        .fold(FlagBits::EMPTY, |b, t| b.with(t.flag))
}

/// Adds the tags `(flag, op)` for `flags`; one that a pending removal names
/// cancels it instead.
fn add_tags(e: &mut Entry, op: OpId, flags: &[u32]) {
    if flags.is_empty() {
        return;
    }
    let mut tags = std::mem::take(&mut e.tags).into_vec();
    for &flag in flags {
        put_tag(&mut tags, flag, op, false);
    }
    e.tags = tags.into_boxed_slice();
}

/// Records the tag `(flag, op)` as live or as a pending removal; the
/// opposite record of the same tag cancels it instead (an add and its
/// removal may arrive in either order), and a second one changes nothing.
fn put_tag(tags: &mut Vec<Tag>, flag: u32, op: OpId, removed: bool) {
    match tags.iter().position(|t| t.flag == flag && t.op == op) {
        Some(p) if tags[p].removed != removed => {
            tags.swap_remove(p);
        }
        Some(_) => {}
        None => tags.push(Tag { op, flag, removed }),
    }
}

fn sorted(flags: &[Flag]) -> Vec<Flag> {
    let mut v = flags.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ReplicaId;
    use proptest::prelude::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashSet;

    fn eid(n: u8) -> EntryId {
        EntryId([n; 16])
    }
    fn bid(n: u8) -> BlobId {
        BlobId([n; 16])
    }
    fn op(r: u64, seq: u64) -> OpId {
        OpId {
            origin: ReplicaId(r),
            seq,
        }
    }
    fn kw(s: &str) -> Flag {
        Flag::keyword(s).unwrap()
    }
    fn add(entry: EntryId, blob: BlobId, flags: &[Flag]) -> MailboxOp {
        MailboxOp::Add {
            entry,
            blob,
            flags: flags.to_vec(),
            internal_date_ms: 1_700_000_000_000,
            size: 1234,
        }
    }

    /// The bit set of an entry's flags names the system flags at their
    /// fixed indices and gives back the same flags as the entry's view.
    #[test]
    fn flag_bits_name_the_flags() {
        let mut s = MailboxState::new();
        s.apply(
            op(1, 1),
            &add(eid(1), bid(1), &[Flag::Seen, Flag::Deleted, kw("a")]),
        );
        s.apply(op(1, 2), &add(eid(2), bid(2), &[Flag::Draft]));
        let (one, two) = (s.flag_bits(&eid(1)), s.flag_bits(&eid(2)));
        assert!(one.seen() && one.deleted());
        assert!(!two.seen() && !two.deleted());
        assert_eq!(s.flags_in(one), Some(s.entry(&eid(1)).unwrap().flags));
        assert_eq!(s.flags_in(two), Some(vec![Flag::Draft]));
        assert_eq!(s.flag_bits(&eid(3)), FlagBits::EMPTY);
    }

    /// One simulated replica: builds ops from its own state.
    struct Replica {
        id: ReplicaId,
        seq: u64,
        state: MailboxState,
        applied: HashSet<OpId>,
        log: Vec<(OpId, MailboxOp)>,
        known: Vec<EntryId>,
    }

    impl Replica {
        fn new(r: u64) -> Self {
            Replica {
                id: ReplicaId(r),
                seq: 0,
                state: MailboxState::new(),
                applied: HashSet::new(),
                log: Vec::new(),
                known: Vec::new(),
            }
        }
        fn local(&mut self, o: MailboxOp) -> OpId {
            self.seq += 1;
            let id = OpId {
                origin: self.id,
                seq: self.seq,
            };
            self.receive(id, &o);
            self.log.push((id, o));
            id
        }
        fn receive(&mut self, id: OpId, o: &MailboxOp) {
            if self.applied.insert(id) {
                if let MailboxOp::Add { entry, .. } = o {
                    self.known.push(*entry);
                }
                self.state.apply(id, o);
            }
        }
        fn pull(&mut self, other: &Replica) {
            for (id, o) in &other.log {
                self.receive(*id, o);
            }
        }
    }

    fn apply_all<'a>(ops: impl IntoIterator<Item = &'a (OpId, MailboxOp)>) -> MailboxState {
        let mut s = MailboxState::new();
        for (id, o) in ops {
            s.apply(*id, o);
        }
        s
    }

    type Snapshot = (
        Vec<(EntryId, Option<EntryView>, bool)>,
        BTreeSet<BlobId>,
        usize,
        Vec<EntryId>,
    );

    /// Everything a reader can see, for every entry any op names.
    fn snapshot(s: &MailboxState, ops: &[(OpId, MailboxOp)]) -> Snapshot {
        let mut ids = BTreeSet::new();
        for (_, o) in ops {
            match o {
                MailboxOp::Add { entry, .. } | MailboxOp::Flags { entry, .. } => {
                    ids.insert(*entry);
                }
                MailboxOp::Expunge { entries } => ids.extend(entries.iter().copied()),
                MailboxOp::FlagsBatch { changes } => ids.extend(changes.iter().map(|c| c.entry)),
                MailboxOp::FlagsShared { entries, .. } => ids.extend(entries.iter().copied()),
            }
        }
        let entries = ids
            .into_iter()
            .map(|id| (id, s.entry(&id), s.is_expunged(&id)))
            .collect();
        (
            entries,
            s.live_blobs(),
            s.len(),
            s.live_entries().copied().collect(),
        )
    }

    /// Both orders of two op lists give the same state.
    fn both_orders(a: &[(OpId, MailboxOp)], b: &[(OpId, MailboxOp)]) -> MailboxState {
        let ab = apply_all(a.iter().chain(b));
        let ba = apply_all(b.iter().chain(a));
        let all: Vec<_> = a.iter().chain(b).cloned().collect();
        assert_eq!(snapshot(&ab, &all), snapshot(&ba, &all));
        ab
    }

    // ---- One test per row of DESIGN §4's concurrency table (mailbox rows;
    // the tree rows are in tree.rs). ----

    #[test]
    fn add_flag_vs_remove_same_flag_add_wins() {
        let mut a = Replica::new(1);
        let mut b = Replica::new(2);
        a.local(add(eid(1), bid(1), &[Flag::Seen]));
        b.pull(&a);
        // Concurrently: A adds \Seen again (+FLAGS), B removes it (-FLAGS).
        a.local(a.state.add_flags(eid(1), &[Flag::Seen]));
        b.local(b.state.remove_flags(eid(1), &[Flag::Seen]));
        let s = both_orders(&a.log, &b.log);
        assert_eq!(s.entry(&eid(1)).unwrap().flags, vec![Flag::Seen]);
        // Without the concurrent add, the remove removes.
        let s = both_orders(&a.log[..1], &b.log);
        assert_eq!(s.entry(&eid(1)).unwrap().flags, vec![]);
    }

    #[test]
    fn store_flags_replace_vs_replace_union_minus_observed_removed() {
        let (x, y) = (kw("$X"), kw("$Y"));
        let mut a = Replica::new(1);
        let mut b = Replica::new(2);
        a.local(add(eid(1), bid(1), &[Flag::Seen, Flag::Flagged]));
        b.pull(&a);
        // A: FLAGS (\Flagged $X) — removes \Seen. B: FLAGS (\Seen $Y) — removes \Flagged.
        a.local(a.state.replace_flags(eid(1), &[Flag::Flagged, x.clone()]));
        b.local(b.state.replace_flags(eid(1), &[Flag::Seen, y.clone()]));
        assert_eq!(
            a.state.entry(&eid(1)).unwrap().flags,
            vec![Flag::Flagged, x.clone()]
        );
        let s = both_orders(&a.log, &b.log);
        // Union {\Seen \Flagged $X $Y} minus what each removed {\Seen, \Flagged}.
        assert_eq!(s.entry(&eid(1)).unwrap().flags, vec![x, y]);
    }

    #[test]
    fn expunge_vs_flag_change_expunge_wins() {
        let mut a = Replica::new(1);
        let mut b = Replica::new(2);
        a.local(add(eid(1), bid(1), &[Flag::Seen]));
        b.pull(&a);
        a.local(a.state.expunge(&[eid(1)]));
        b.local(b.state.add_flags(eid(1), &[Flag::Flagged, kw("$Z")]));
        b.local(b.state.remove_flags(eid(1), &[Flag::Seen]));
        let s = both_orders(&a.log, &b.log);
        let v = s.entry(&eid(1)).unwrap();
        assert!(v.expunged && v.flags.is_empty());
        assert!(!s.contains(&eid(1)) && s.is_empty());
    }

    #[test]
    fn expunge_vs_copy_elsewhere_copy_survives() {
        // Mailbox A holds entry 1 (blob 9). Node 1 expunges it in A while
        // node 2 copies it to mailbox B: an Add in B with the same blob.
        let mut mbox_a = Replica::new(1);
        mbox_a.local(add(eid(1), bid(9), &[Flag::Seen]));
        let copy = mbox_a.state.entry(&eid(1)).unwrap();
        let mut mbox_b = Replica::new(2);
        mbox_b.local(MailboxOp::Add {
            entry: eid(2),
            blob: copy.blob,
            flags: copy.flags,
            internal_date_ms: copy.internal_date_ms,
            size: copy.size,
        });
        mbox_a.local(mbox_a.state.expunge(&[eid(1)]));
        assert!(mbox_a.state.live_blobs().is_empty());
        // The account-level GC keeps blob 9: mailbox B references it.
        assert!(mbox_b.state.live_blobs().contains(&bid(9)));
        assert_eq!(mbox_b.state.entry(&eid(2)).unwrap().flags, vec![Flag::Seen]);
    }

    // ---- Order edge cases ----

    #[test]
    fn remove_before_add_cancels_tag() {
        let mut a = Replica::new(1);
        let mut b = Replica::new(2);
        a.local(add(eid(1), bid(1), &[]));
        b.pull(&a);
        a.local(a.state.add_flags(eid(1), &[Flag::Seen, kw("$K")]));
        b.pull(&a);
        b.local(b.state.remove_flags(eid(1), &[Flag::Seen, kw("$K")]));
        // A third replica gets the remove first, then the adds.
        let mut s = MailboxState::new();
        let (rid, rop) = &b.log[0];
        assert!(s.apply(*rid, rop).is_empty());
        assert_eq!(s.entries[&eid(1)].tags.len(), 2, "two pending removals");
        assert_eq!(s.apply(a.log[0].0, &a.log[0].1), vec![eid(1)]);
        s.apply(a.log[1].0, &a.log[1].1);
        let v = s.entry(&eid(1)).unwrap();
        assert!(v.flags.is_empty());
        assert!(
            s.entries[&eid(1)].tags.is_empty(),
            "pending tags dropped once cancelled"
        );
    }

    #[test]
    fn expunge_before_add_stays_expunged() {
        let mut s = MailboxState::new();
        assert!(s
            .apply(
                op(2, 1),
                &MailboxOp::Expunge {
                    entries: vec![eid(1)]
                }
            )
            .is_empty());
        assert!(s.is_expunged(&eid(1)));
        assert!(s.entry(&eid(1)).is_none());
        assert!(s
            .apply(op(1, 1), &add(eid(1), bid(1), &[Flag::Seen]))
            .is_empty());
        let v = s.entry(&eid(1)).unwrap();
        assert!(v.expunged && v.flags.is_empty() && v.blob == bid(1));
        assert_eq!(s.len(), 0);
        assert!(s.live_blobs().is_empty());
        assert_eq!(s.live_entries().count(), 0);
    }

    #[test]
    fn flag_ops_on_expunged_entry_ignored() {
        let mut s = MailboxState::new();
        s.apply(op(1, 1), &add(eid(1), bid(1), &[Flag::Seen]));
        let rm = s.remove_flags(eid(1), &[Flag::Seen]);
        assert_eq!(s.apply(op(1, 2), &s.expunge(&[eid(1)])), vec![eid(1)]);
        assert!(s
            .apply(
                op(1, 3),
                &MailboxOp::Flags {
                    entry: eid(1),
                    add: vec![Flag::Draft],
                    remove: vec![]
                }
            )
            .is_empty());
        assert!(s.apply(op(2, 1), &rm).is_empty());
        assert!(s.entries[&eid(1)].tags.is_empty());
        assert!(s.entry(&eid(1)).unwrap().flags.is_empty());
        assert_eq!(s.flag_bits(&eid(1)), FlagBits::EMPTY);
        // Expunging again changes nothing.
        assert!(s.apply(op(1, 4), &s.expunge(&[eid(1)])).is_empty());
    }

    #[test]
    fn flag_op_before_add_applies_when_add_arrives() {
        let mut a = Replica::new(1);
        a.local(add(eid(1), bid(1), &[]));
        a.local(a.state.add_flags(eid(1), &[Flag::Answered]));
        let mut s = MailboxState::new();
        assert!(s.apply(a.log[1].0, &a.log[1].1).is_empty());
        assert!(s.entry(&eid(1)).is_none() && s.is_empty());
        assert_eq!(s.apply(a.log[0].0, &a.log[0].1), vec![eid(1)]);
        assert_eq!(s.entry(&eid(1)).unwrap().flags, vec![Flag::Answered]);
    }

    #[test]
    fn concurrent_double_remove_leaves_pending_that_gc_drops() {
        let mut a = Replica::new(1);
        a.local(add(eid(1), bid(1), &[Flag::Seen]));
        let mut b = Replica::new(2);
        let mut c = Replica::new(3);
        b.pull(&a);
        c.pull(&a);
        b.local(b.state.remove_flags(eid(1), &[Flag::Seen]));
        c.local(c.state.remove_flags(eid(1), &[Flag::Seen]));
        let mut s = apply_all(a.log.iter().chain(&b.log).chain(&c.log));
        assert!(s.entry(&eid(1)).unwrap().flags.is_empty());
        let applied: HashSet<OpId> = [a.log[0].0, b.log[0].0, c.log[0].0].into();
        assert_eq!(s.gc_pending(|o| applied.contains(o)), 1);
        assert_eq!(s, apply_all(a.log.iter().chain(&b.log)));
        // A placeholder holding only such a tag disappears.
        let mut p = MailboxState::new();
        p.apply(op(4, 1), &b.log[0].1);
        assert_eq!(p.gc_pending(|_| true), 1);
        assert_eq!(p, MailboxState::new());
    }

    #[test]
    fn checkpoint_round_trip() {
        let mut a = Replica::new(1);
        for i in 0..20 {
            a.local(add(
                eid(i),
                bid(i / 2),
                &[Flag::Seen, kw(&format!("$K{}", i % 3))],
            ));
        }
        a.local(a.state.expunge(&[eid(3), eid(4), eid(99)]));
        a.local(a.state.replace_flags(eid(5), &[Flag::Draft]));
        a.state.apply(
            op(7, 1),
            &MailboxOp::Flags {
                entry: eid(6),
                add: vec![],
                remove: vec![(Flag::Seen, vec![op(8, 1)])],
            },
        );
        let bytes = postcard::to_allocvec(&a.state).unwrap();
        let back: MailboxState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, a.state);
        assert_eq!(back.len(), 18);
        // The restored state keeps going like the original.
        let mut x = a.state.clone();
        let mut y = back;
        let o = x.add_flags(eid(7), &[kw("$K2"), kw("$New")]);
        assert_eq!(o, y.add_flags(eid(7), &[kw("$K2"), kw("$New")]));
        x.apply(op(1, 100), &o);
        y.apply(op(1, 100), &o);
        assert_eq!(x, y);
    }

    #[test]
    fn builders_compute_observed_tags() {
        let mut s = MailboxState::new();
        s.apply(op(1, 1), &add(eid(1), bid(1), &[Flag::Seen]));
        s.apply(
            op(2, 1),
            &MailboxOp::Flags {
                entry: eid(1),
                add: vec![Flag::Seen],
                remove: vec![],
            },
        );
        assert_eq!(
            s.remove_flags(eid(1), &[Flag::Seen, Flag::Draft]),
            MailboxOp::Flags {
                entry: eid(1),
                add: vec![],
                remove: vec![(Flag::Seen, vec![op(1, 1), op(2, 1)])]
            }
        );
        assert_eq!(
            s.replace_flags(eid(1), &[Flag::Seen]),
            MailboxOp::Flags {
                entry: eid(1),
                add: vec![],
                remove: vec![]
            }
        );
        assert!(s.replace_flags(eid(1), &[Flag::Seen]).is_noop());
        // +FLAGS re-tags: one tag per flag afterwards.
        let o = s.add_flags(eid(1), &[Flag::Seen]);
        s.apply(op(1, 2), &o);
        assert_eq!(s.entries[&eid(1)].tags.len(), 1);
        assert_eq!(
            s.expunge(&[eid(2), eid(1), eid(2)]),
            MailboxOp::Expunge {
                entries: vec![eid(1), eid(2)]
            }
        );
    }

    /// Bytes per live entry with two flags, estimated from sizes and
    /// capacities. Prints ~145 B/entry (~100 B beyond the 44 B of entry id,
    /// blob id, date and size); a counting allocator measured 145.
    #[test]
    fn memory_per_entry_100k() {
        let mut s = MailboxState::new();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let flags = [Flag::Seen, kw("$Forwarded")];
        for i in 0..100_000u64 {
            let mut e = [0u8; 16];
            rng.fill_bytes(&mut e);
            let o = MailboxOp::Add {
                entry: EntryId(e),
                blob: BlobId(e),
                flags: flags.to_vec(),
                internal_date_ms: 0,
                size: 0,
            };
            s.apply(op(1, i + 1), &o);
        }
        assert_eq!(s.len(), 100_000);
        let per = s.approx_heap_bytes() as f64 / s.len() as f64;
        eprintln!(
            "MailboxState: ~{per:.0} bytes/entry with 2 flags (entry {} B, tag {} B)",
            std::mem::size_of::<Entry>(),
            std::mem::size_of::<Tag>()
        );
        assert!(per - 44.0 < 300.0);
    }

    // ---- Flag changes over many entries as one op ----

    /// One batch per replica over `entries`, built like `store_flags` does.
    fn batch(
        s: &MailboxState,
        entries: &[EntryId],
        f: impl Fn(&MailboxState, EntryId) -> MailboxOp,
    ) -> MailboxOp {
        let mut ops = batch_flags(entries.iter().map(|e| f(s, *e)), MAX_FLAG_BATCH);
        assert_eq!(ops.len(), 1, "{ops:?}");
        ops.pop().unwrap()
    }

    #[test]
    fn batch_flags_groups_caps_and_skips_noops() {
        let mut s = MailboxState::new();
        for n in 1..=7 {
            s.apply(op(1, n as u64), &add(eid(n), bid(n), &[Flag::Seen]));
        }
        let entries: Vec<EntryId> = (1..=7).map(eid).collect();
        // -FLAGS (\Flagged) observes nothing: every change is a no-op.
        assert!(batch_flags(
            entries.iter().map(|e| s.remove_flags(*e, &[Flag::Flagged])),
            3
        )
        .is_empty());
        // +FLAGS (\Seen) on 7 entries, 3 a batch (an entry named twice once).
        let mut named = entries.clone();
        named.push(eid(2));
        let ops = batch_flags(named.iter().map(|e| s.add_flags(*e, &[Flag::Seen])), 3);
        let sizes: Vec<usize> = ops
            .iter()
            .map(|o| match o {
                MailboxOp::FlagsBatch { changes } => changes.len(),
                MailboxOp::Flags { .. } => 1,
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![3, 3, 1]);
        assert!(
            matches!(ops[2], MailboxOp::Flags { .. }),
            "a group of one keeps the old shape"
        );
        let mut all: Vec<EntryId> = ops.iter().flat_map(MailboxOp::targets).collect();
        all.sort_unstable();
        assert_eq!(all, entries);
        // The byte bound cuts a batch of large changes below the entry cap.
        let long: Vec<Flag> = (0..40).map(|i| kw(&format!("$K{i:0>110}"))).collect();
        let ops = batch_flags(
            (0..100u8).map(|n| s.add_flags(eid(n), &long)),
            MAX_FLAG_BATCH,
        );
        assert!(ops.len() > 1);
        for o in &ops {
            let b = postcard::to_allocvec(o).unwrap();
            assert!(b.len() <= MAX_FLAG_BATCH_BYTES, "{}", b.len());
        }
    }

    /// A batch gives each entry exactly what the per-entry op tagged with the
    /// same op id would.
    #[test]
    fn batch_applies_like_the_per_entry_ops() {
        let mut s = MailboxState::new();
        for n in 1..=4 {
            s.apply(
                op(1, n as u64),
                &add(eid(n), bid(n), &[Flag::Seen, kw("$A")]),
            );
        }
        let entries: Vec<EntryId> = (1..=5).map(eid).collect(); // 5: not added yet
        let singles: Vec<MailboxOp> = entries
            .iter()
            .map(|e| s.replace_flags(*e, &[Flag::Flagged, kw("$A")]))
            .collect();
        let b = batch(&s, &entries, |s, e| {
            s.replace_flags(e, &[Flag::Flagged, kw("$A")])
        });
        let mut x = s.clone();
        let changed = x.apply(op(2, 1), &b);
        assert_eq!(changed, (1..=4).map(eid).collect::<Vec<_>>());
        let mut y = s.clone();
        for o in &singles {
            y.apply(op(2, 1), o);
        }
        assert_eq!(x, y);
        assert_eq!(
            x.entry(&eid(3)).unwrap().flags,
            vec![Flag::Flagged, kw("$A")]
        );
        // Entry 5 arrives later with \Seen: the batch's adds (it observed
        // nothing there) wait as tags of the placeholder and apply with it.
        x.apply(op(1, 9), &add(eid(5), bid(5), &[Flag::Seen]));
        assert_eq!(
            x.entry(&eid(5)).unwrap().flags,
            vec![Flag::Seen, Flag::Flagged, kw("$A")]
        );
    }

    /// A shared-flags op changes each entry as the per-entry op of its
    /// builder would (observed tags, an entry not added yet, an expunged
    /// one), leaves out the entries a removal does not change, and names in
    /// `remove` only the flags it takes a tag of.
    #[test]
    fn shared_flags_apply_like_the_per_entry_ops() {
        let mut s = MailboxState::new();
        for n in 1..=6 {
            let flags = if n % 2 == 0 {
                vec![Flag::Seen, kw("$A")]
            } else {
                vec![]
            };
            s.apply(op(1, n as u64), &add(eid(n), bid(n), &flags));
        }
        s.apply(op(1, 7), &s.expunge(&[eid(6)]));
        // 7: not added yet.
        let entries: Vec<EntryId> = (1..=7).map(eid).collect();
        for (adds, flags) in [
            (true, vec![Flag::Seen]),
            (false, vec![Flag::Seen, kw("$A"), kw("$Never")]),
            (true, vec![Flag::Flagged, kw("$B")]),
        ] {
            let mut b = s.shared_flags(adds, &flags, 4);
            entries.iter().for_each(|e| b.push(*e, s.flag_bits(e)));
            let ops = b.finish();
            let mut x = s.clone();
            let mut changed = Vec::new();
            for (k, o) in ops.iter().enumerate() {
                let MailboxOp::FlagsShared {
                    entries, remove, ..
                } = o
                else {
                    panic!("{o:?}")
                };
                assert!(entries.len() <= 4 && !remove.contains(&kw("$Never")));
                changed.extend(x.apply(op(2, k as u64 + 1), o));
            }
            let mut y = s.clone();
            let mut want = Vec::new();
            for (k, o) in ops.iter().enumerate() {
                for e in o.targets() {
                    let single = if adds {
                        s.add_flags(e, &flags)
                    } else {
                        s.remove_flags(e, &flags)
                    };
                    // Tagged with the id of the op that holds the entry.
                    want.extend(y.apply(op(2, k as u64 + 1), &single));
                }
            }
            assert_eq!(x, y, "{flags:?}");
            assert_eq!(changed, want);
            let named: Vec<EntryId> = ops.iter().flat_map(|o| o.targets()).collect();
            if adds {
                assert_eq!(named, entries);
            } else {
                // Only the entries holding a tag of the flags (not 6: expunged).
                assert_eq!(named, vec![eid(2), eid(4)]);
                assert!(!x.known_keywords().contains(&kw("$Never")));
            }
        }
    }

    /// A shared-flags op from a peer that breaks the builder's rules (entries
    /// out of order or twice, tags unsorted, a flag position past `remove`)
    /// applies without panicking, as the same changes one by one would.
    #[test]
    fn shared_flags_from_a_careless_peer() {
        let mut s = MailboxState::new();
        for n in 1..=3 {
            s.apply(op(1, n as u64), &add(eid(n), bid(n), &[Flag::Seen]));
        }
        let o = MailboxOp::FlagsShared {
            add: vec![Flag::Flagged],
            remove: vec![Flag::Seen],
            entries: vec![eid(3), eid(1), eid(3)],
            observed: vec![
                ObservedTag {
                    entry: 1,
                    flag: 0,
                    tag: op(1, 1),
                },
                ObservedTag {
                    entry: 0,
                    flag: 0,
                    tag: op(1, 3),
                },
                ObservedTag {
                    entry: 0,
                    flag: 9,
                    tag: op(1, 2),
                },
                ObservedTag {
                    entry: 7,
                    flag: 0,
                    tag: op(1, 2),
                },
            ],
        };
        let changed = s.apply(op(2, 1), &o);
        assert_eq!(changed, vec![eid(1), eid(3)]);
        for (n, want) in [
            (1, vec![Flag::Flagged]),
            (2, vec![Flag::Seen]),
            (3, vec![Flag::Flagged]),
        ] {
            assert_eq!(s.entry(&eid(n)).unwrap().flags, want, "{n}");
        }
    }

    /// A batch in entry order (applied by walking the map) gives what the
    /// same changes in another order (one search each) give, whatever the
    /// gaps between its entries, and with entries not added yet or expunged.
    #[test]
    fn sorted_batch_walk_matches_per_entry_search() {
        let mut s = MailboxState::new();
        for n in 0..=250u8 {
            if n % 7 != 3 {
                s.apply(op(1, n as u64 + 1), &add(eid(n), bid(n), &[kw("$A")]));
            }
        }
        s.apply(
            op(1, 999),
            &MailboxOp::Expunge {
                entries: vec![eid(10), eid(11)],
            },
        );
        let named: Vec<EntryId> = (0..=30u8)
            .chain(71..=90)
            .chain((100..=250).step_by(13))
            .map(eid)
            .collect();
        let changes: Vec<FlagChange> = named
            .iter()
            .map(|e| match s.add_flags(*e, &[Flag::Seen, kw("$A")]) {
                MailboxOp::Flags { entry, add, remove } => FlagChange { entry, add, remove },
                o => panic!("{o:?}"),
            })
            .collect();
        let mut x = s.clone();
        let cx = x.apply(
            op(2, 1),
            &MailboxOp::FlagsBatch {
                changes: changes.clone(),
            },
        );
        let mut reversed = changes;
        reversed.reverse();
        let mut y = s.clone();
        let cy = y.apply(op(2, 1), &MailboxOp::FlagsBatch { changes: reversed });
        assert_eq!(x, y);
        assert_eq!(cx, cy);
        assert!(cx.contains(&eid(0)) && !cx.contains(&eid(10)) && !cx.contains(&eid(3)));
        assert!(x.entry(&eid(3)).is_none(), "a placeholder, not an entry");
    }

    /// Concurrency: a batch +FLAGS over several entries vs a concurrent
    /// -FLAGS of the same flag on one of them: on that entry the add wins
    /// (the remove did not observe the batch's tag), the others are not
    /// touched by the remove; in both orders.
    #[test]
    fn batch_add_vs_concurrent_remove_on_one_entry_add_wins() {
        let mut a = Replica::new(1);
        let mut b = Replica::new(2);
        for n in 1..=3 {
            a.local(add(eid(n), bid(n), &[Flag::Seen]));
        }
        b.pull(&a);
        let entries: Vec<EntryId> = (1..=3).map(eid).collect();
        let ba = batch(&a.state, &entries, |s, e| {
            s.add_flags(e, &[Flag::Seen, Flag::Flagged])
        });
        a.local(ba);
        b.local(b.state.remove_flags(eid(2), &[Flag::Seen]));
        let s = both_orders(&a.log, &b.log);
        for n in 1..=3 {
            assert_eq!(
                s.entry(&eid(n)).unwrap().flags,
                vec![Flag::Seen, Flag::Flagged],
                "entry {n}"
            );
        }
        // A remove that observed the batch's tag removes it, on that entry only.
        b.pull(&a);
        a.pull(&b);
        let r = a.state.remove_flags(eid(2), &[Flag::Seen]);
        a.local(r);
        b.pull(&a);
        assert_eq!(b.state.entry(&eid(2)).unwrap().flags, vec![Flag::Flagged]);
        assert_eq!(
            b.state.entry(&eid(1)).unwrap().flags,
            vec![Flag::Seen, Flag::Flagged]
        );
        // A batch vs a concurrent expunge of one of its entries: expunge wins
        // there, the rest of the batch applies.
        let mut c = Replica::new(3);
        c.pull(&a);
        let mut d = Replica::new(4);
        d.pull(&a);
        c.local(batch(&c.state, &entries, |s, e| {
            s.add_flags(e, &[kw("$B")])
        }));
        d.local(d.state.expunge(&[eid(3)]));

        c.pull(&d);
        d.pull(&c);
        assert_eq!(c.state, d.state);
        assert!(c.state.entry(&eid(3)).unwrap().expunged);
        assert!(c.state.entry(&eid(1)).unwrap().flags.contains(&kw("$B")));
    }

    /// Reorder: a batch whose entries' adds have not all arrived, a remove
    /// naming the batch's tags before the batch itself: every order of the
    /// ops ends in the same state.
    #[test]
    fn batch_reordered_with_adds_and_removes_converges() {
        let mut a = Replica::new(1);
        for n in 1..=4 {
            a.local(add(eid(n), bid(n), &[]));
        }
        let entries: Vec<EntryId> = (1..=4).map(eid).collect();
        let b1 = batch(&a.state, &entries, |s, e| s.add_flags(e, &[Flag::Seen]));
        a.local(b1);
        let b2 = batch(&a.state, &entries[1..3], |s, e| {
            s.remove_flags(e, &[Flag::Seen])
        });
        a.local(b2);
        let reference = snapshot(&apply_all(&a.log), &a.log);
        assert_eq!(reference.0[0].1.as_ref().unwrap().flags, vec![Flag::Seen]);
        assert_eq!(reference.0[1].1.as_ref().unwrap().flags, vec![]);
        for seed in 0..50 {
            let mut perm = a.log.clone();
            shuffle(&mut perm, seed);
            assert_eq!(
                snapshot(&apply_all(&perm), &a.log),
                reference,
                "seed {seed}"
            );
        }
    }

    // ---- Order independence ----

    fn shuffle<T>(v: &mut [T], seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for i in (1..v.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }

    fn pool() -> Vec<Flag> {
        vec![
            Flag::Seen,
            Flag::Answered,
            Flag::Flagged,
            Flag::Deleted,
            Flag::Draft,
            kw("$A"),
            kw("$B"),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Three replicas act on their own state (builders compute the tags
        /// they observed) and sometimes pull each other's ops. Every
        /// permutation of the whole op set gives the same state, and so does
        /// each replica once it has everything.
        #[test]
        fn order_independence(
            actions in prop::collection::vec((0u8..8, 0usize..3, 0usize..3, any::<u16>(), any::<u8>()), 1..80),
            seeds in prop::collection::vec(any::<u64>(), 4),
        ) {
            let pool = pool();
            let mut reps: Vec<Replica> = (1..=3).map(Replica::new).collect();
            let mut next = 0u8;
            for (kind, r, other, pick, mask) in actions {
                let flags: Vec<Flag> = pool.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, f)| f.clone()).collect();
                let known = reps[r].known.clone();
                let target = (!known.is_empty()).then(|| known[pick as usize % known.len()]);
                let o = match (kind, target) {
                    (0, _) | (_, None) => {
                        next += 1;
                        // Every third add copies a blob already in the mailbox.
                        let blob = match target { Some(t) if next.is_multiple_of(3) => reps[r].state.entry(&t).unwrap().blob, _ => bid(next) };
                        Some(add(eid(next), blob, &flags))
                    }
                    (1, Some(t)) => Some(reps[r].state.add_flags(t, &flags)),
                    (2, Some(t)) => Some(reps[r].state.remove_flags(t, &flags)),
                    (3, Some(t)) => Some(reps[r].state.replace_flags(t, &flags)),
                    (4, Some(t)) => Some(reps[r].state.expunge(&[t])),
                    // A STORE over several entries as one op (mode by `pick`).
                    (5, Some(_)) => {
                        let st = &reps[r].state;
                        let some: Vec<EntryId> = known.iter().copied().filter(|e| (u32::from(e.0[0]) + u32::from(pick)).is_multiple_of(2)).collect();
                        let ops = batch_flags(some.iter().map(|e| match pick % 3 {
                            0 => st.add_flags(*e, &flags),
                            1 => st.remove_flags(*e, &flags),
                            _ => st.replace_flags(*e, &flags),
                        }), 3);
                        ops.into_iter().next()
                    }
                    // A STORE +FLAGS or -FLAGS over several entries as one
                    // op with its flag lists shared.
                    (6, Some(_)) => {
                        let st = &reps[r].state;
                        let mut some: Vec<EntryId> = known.iter().copied().filter(|e| (u32::from(e.0[0]) + u32::from(pick)).is_multiple_of(2)).collect();
                        some.sort_unstable();
                        let mut b = st.shared_flags(pick % 2 == 0, &flags, 3);
                        some.iter().for_each(|e| b.push(*e, st.flag_bits(e)));
                        b.finish().into_iter().next()
                    }
                    _ => None,
                };
                match o {
                    Some(o) => { reps[r].local(o); }
                    None if r != other => {
                        let src = std::mem::replace(&mut reps[other], Replica::new(0));
                        reps[r].pull(&src);
                        reps[other] = src;
                    }
                    None => {}
                }
            }
            let all: Vec<(OpId, MailboxOp)> = reps.iter().flat_map(|r| r.log.iter().cloned()).collect();
            let reference = snapshot(&apply_all(&all), &all);
            for seed in seeds {
                let mut perm = all.clone();
                shuffle(&mut perm, seed);
                prop_assert_eq!(&snapshot(&apply_all(&perm), &all), &reference);
            }
            for i in 0..3 {
                for j in 0..3 {
                    let src = std::mem::replace(&mut reps[j], Replica::new(0));
                    reps[i].pull(&src);
                    reps[j] = src;
                }
                prop_assert_eq!(&snapshot(&reps[i].state, &all), &reference);
            }
        }
    }

    /// The builders along a walk give what they give alone, whatever the
    /// order the entries are asked in (ascending, sparse, descending, with
    /// entries the state lacks).
    #[test]
    fn builders_along_a_walk_match_the_lookups() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut s = MailboxState::new();
        let mut ids = Vec::new();
        for n in 0..300u64 {
            let mut e = [0u8; 16];
            rng.fill_bytes(&mut e);
            let flags = match n % 4 {
                0 => vec![],
                1 => vec![Flag::Seen],
                2 => vec![Flag::Seen, kw("$A")],
                _ => vec![Flag::Flagged],
            };
            s.apply(op(1, n + 1), &add(EntryId(e), bid(n as u8), &flags));
            if n % 3 == 0 {
                s.apply(op(2, n + 1), &s.add_flags(EntryId(e), &[Flag::Seen]));
            }
            ids.push(EntryId(e));
        }
        for _ in 0..20 {
            let mut e = [0u8; 16];
            rng.fill_bytes(&mut e);
            ids.push(EntryId(e)); // not in the state
        }
        ids.sort_unstable();
        let sparse: Vec<EntryId> = ids.iter().step_by(13).copied().collect();
        let every_other: Vec<EntryId> = ids.iter().step_by(2).copied().collect();
        let backwards: Vec<EntryId> = ids.iter().rev().copied().collect();
        let flags = [Flag::Seen, kw("$A")];
        for asked in [&ids, &sparse, &every_other, &backwards] {
            for mode in [FlagMode::Add, FlagMode::Remove, FlagMode::Replace] {
                let mut w = s.walk();
                for &e in asked.iter() {
                    let plain = match mode {
                        FlagMode::Add => s.add_flags(e, &flags),
                        FlagMode::Remove => s.remove_flags(e, &flags),
                        FlagMode::Replace => s.replace_flags(e, &flags),
                    };
                    assert_eq!(s.store_op_in(&mut w, mode, e, &flags), plain);
                }
            }
        }
    }
}
