//! The mailbox list of one account, as an op-based CRDT.
//!
//! Each mailbox has a stable random [`MailboxId`]; its name, subscription
//! and special-use are metadata fields changed by [`TreeOp`]s. Every op is
//! applied with a [`Stamp`] `(Timestamp, OpId)`: the hybrid clock orders it
//! after what its origin had seen, the op id makes it unique, so stamps
//! order all writes totally and identically on every replica.
//!
//! # Which primitives hold what
//!
//! - name, subscription and special-use: one [`crdts::LWWReg`] each, with the
//!   stamp as marker (`Option<Stamp>`, `None` before the first write). Every
//!   write to these fields is an overwrite of the whole value, concurrent
//!   writes are rare (two devices renaming the same folder), and the user
//!   expects one winner: a last-writer-wins register is exactly that, and it
//!   commutes, so ops may arrive in any order (a `Rename` before its
//!   `Create` simply waits in the register).
//! - creation: the smallest create stamp seen (a min register); deletion: a
//!   tombstone (the greatest delete stamp seen). A mailbox id is never
//!   reused, so a tombstone is final; [`MailboxTree::visible`] still shows a
//!   deleted mailbox that holds live entries (DELETE ∥ APPEND loses
//!   nothing).
//! - name clashes are not prevented (they cannot be, without coordination)
//!   but resolved when reading, deterministically, see
//!   [`MailboxTree::visible`].
//!
//! Not automerge: the tree is a small map of independent LWW fields, with no
//! text, list or nested-document editing. Automerge would bring a document
//! format, a change graph and a large dependency to get the same
//! last-writer-wins maps, and would make the clash resolution (which is a
//! read-time rule) no simpler. `MVReg` was not used either: surfacing
//! concurrent names to IMAP clients has no meaning, one name must win.

use crate::hlc::Timestamp;
use crate::ids::{MailboxId, OpId};
use crdts::LWWReg;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Total order of tree writes: hybrid timestamp, then op id.
pub type Stamp = (Timestamp, OpId);

/// Hierarchy delimiter of mailbox names.
pub const DELIMITER: char = '/';

/// Longest mailbox name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// RFC 6154 special-use attributes.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum SpecialUse {
    /// `\All`
    All,
    /// `\Archive`
    Archive,
    /// `\Drafts`
    Drafts,
    /// `\Flagged`
    Flagged,
    /// `\Junk`
    Junk,
    /// `\Sent`
    Sent,
    /// `\Trash`
    Trash,
}

impl SpecialUse {
    /// All attributes.
    pub const ALL: [SpecialUse; 7] = [
        SpecialUse::All,
        SpecialUse::Archive,
        SpecialUse::Drafts,
        SpecialUse::Flagged,
        SpecialUse::Junk,
        SpecialUse::Sent,
        SpecialUse::Trash,
    ];

    /// The IMAP attribute, e.g. `\Sent`.
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::All => "\\All",
            SpecialUse::Archive => "\\Archive",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Flagged => "\\Flagged",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
        }
    }

    /// Parses an attribute (case-insensitive), e.g. `\sent`.
    pub fn parse(s: &str) -> Option<SpecialUse> {
        SpecialUse::ALL
            .into_iter()
            .find(|u| u.attribute().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for SpecialUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute())
    }
}

/// Why a mailbox name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("empty mailbox name")]
    Empty,
    /// A hierarchy level is empty (leading, trailing or doubled `/`).
    #[error("empty hierarchy level in mailbox name")]
    EmptyComponent,
    /// The name holds a control character.
    #[error("control character in mailbox name")]
    ControlChar,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("mailbox name longer than {MAX_NAME_LEN} bytes")]
    TooLong,
}

/// Checks a full hierarchical mailbox name.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlChar);
    }
    if name.split(DELIMITER).any(str::is_empty) {
        return Err(NameError::EmptyComponent);
    }
    Ok(())
}

/// The name as shown and compared: a leading `INBOX` level, in any case,
/// is written `INBOX` (RFC 9051: INBOX is case-insensitive).
pub fn normalize_name(name: &str) -> String {
    let (first, rest) = match name.split_once(DELIMITER) {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    if !first.eq_ignore_ascii_case("INBOX") {
        return name.to_owned();
    }
    match rest {
        Some(r) => format!("INBOX{DELIMITER}{r}"),
        None => "INBOX".to_owned(),
    }
}

/// The payload of one op of the account's mailbox-list log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeOp {
    /// A new mailbox (CREATE; INBOX at account creation).
    Create {
        /// Its id, random.
        id: MailboxId,
        /// Full hierarchical name.
        name: String,
        /// RFC 6154 attribute (CREATE … USE).
        special_use: Option<SpecialUse>,
    },
    /// RENAME.
    Rename {
        /// The mailbox.
        id: MailboxId,
        /// New full name.
        name: String,
    },
    /// DELETE.
    Delete {
        /// The mailbox.
        id: MailboxId,
    },
    /// SUBSCRIBE / UNSUBSCRIBE.
    Subscribe {
        /// The mailbox.
        id: MailboxId,
        /// Subscribed or not.
        subscribed: bool,
    },
    /// SETMETADATA-style change of the special-use attribute.
    SetSpecialUse {
        /// The mailbox.
        id: MailboxId,
        /// The attribute, or none.
        special_use: Option<SpecialUse>,
    },
}

/// One mailbox as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxView {
    /// Stable id.
    pub id: MailboxId,
    /// Visible name, unique in the account (disambiguated on a clash).
    pub name: String,
    /// Subscribed.
    pub subscribed: bool,
    /// RFC 6154 attribute.
    pub special_use: Option<SpecialUse>,
    /// Deleted, but shown because it still holds live entries (an APPEND
    /// concurrent with the DELETE).
    pub resurrected: bool,
}

type Reg<V> = LWWReg<V, Option<Stamp>>;

fn reg<V>(val: V) -> Reg<V> {
    LWWReg { val, marker: None }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Node {
    /// Smallest create stamp; `None` until a `Create` arrived.
    created: Option<Stamp>,
    name: Reg<String>,
    subscribed: Reg<bool>,
    special_use: Reg<Option<SpecialUse>>,
    /// Greatest delete stamp: a tombstone.
    deleted: Option<Stamp>,
}

impl Node {
    fn new() -> Self {
        Node {
            created: None,
            name: reg(String::new()),
            subscribed: reg(false),
            special_use: reg(None),
            deleted: None,
        }
    }
}

/// The mailbox list of one account. See the [module documentation](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxTree {
    nodes: BTreeMap<MailboxId, Node>,
}

impl MailboxTree {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one op with its stamp. Any order of ops gives the same
    /// state; each stamp is used once. An op with an invalid name is
    /// refused and changes nothing (on every replica alike).
    pub fn apply(&mut self, stamp: Stamp, op: &TreeOp) -> Result<(), NameError> {
        let m = Some(stamp);
        match op {
            TreeOp::Create {
                id,
                name,
                special_use,
            } => {
                validate_name(name)?;
                let n = self.nodes.entry(*id).or_insert_with(Node::new);
                n.created = Some(n.created.map_or(stamp, |c| c.min(stamp)));
                n.name.update(name.clone(), m);
                n.special_use.update(*special_use, m);
            }
            TreeOp::Rename { id, name } => {
                validate_name(name)?;
                self.node(id).name.update(name.clone(), m);
            }
            TreeOp::Delete { id } => {
                let n = self.node(id);
                n.deleted = n.deleted.max(m);
            }
            TreeOp::Subscribe { id, subscribed } => self.node(id).subscribed.update(*subscribed, m),
            TreeOp::SetSpecialUse { id, special_use } => {
                self.node(id).special_use.update(*special_use, m)
            }
        }
        Ok(())
    }

    fn node(&mut self, id: &MailboxId) -> &mut Node {
        self.nodes.entry(*id).or_insert_with(Node::new)
    }

    /// The mailboxes to list, sorted by name, each name unique.
    ///
    /// Shown: created and not deleted, plus deleted ones for which
    /// `has_live_entries` is true (`resurrected`). On a name clash (two
    /// concurrent CREATEs, a rename onto a name another mailbox took
    /// concurrently, a resurrected mailbox whose name was reused) every
    /// mailbox survives. Who keeps the name: non-resurrected before
    /// resurrected, then the one that has held its name longest (smallest
    /// stamp of its current name, i.e. its create stamp when never renamed),
    /// then the smaller id. The others get `NAME (2)`, `NAME (3)`, … in that
    /// order, skipping any name another mailbox shows.
    pub fn visible(&self, has_live_entries: impl Fn(&MailboxId) -> bool) -> Vec<MailboxView> {
        struct Cand<'a> {
            id: MailboxId,
            node: &'a Node,
            name: String,
            resurrected: bool,
        }
        let mut cands: Vec<Cand<'_>> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.created.is_some())
            .filter_map(|(id, n)| {
                let resurrected = n.deleted.is_some();
                (!resurrected || has_live_entries(id)).then(|| Cand {
                    id: *id,
                    node: n,
                    name: normalize_name(&n.name.val),
                    resurrected,
                })
            })
            .collect();
        cands.sort_by_key(|c| (c.resurrected, c.node.name.marker, c.id));
        // Pass 1: each name goes to its first claimant.
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut losers = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            if !taken.insert(c.name.clone()) {
                losers.push(i);
            }
        }
        // Pass 2: the others get the first free `NAME (k)`.
        for i in losers {
            let base = &cands[i].name;
            let mut k = 2u64;
            let name = loop {
                let candidate = format!("{base} ({k})");
                if !taken.contains(&candidate) {
                    break candidate;
                }
                k += 1;
            };
            taken.insert(name.clone());
            cands[i].name = name;
        }
        let mut out: Vec<MailboxView> = cands
            .into_iter()
            .map(|c| MailboxView {
                id: c.id,
                name: c.name,
                subscribed: c.node.subscribed.val,
                special_use: c.node.special_use.val,
                resurrected: c.resurrected,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The mailbox that [`visible`](Self::visible) shows under `name`
    /// (`INBOX` in any case).
    pub fn lookup(
        &self,
        name: &str,
        has_live_entries: impl Fn(&MailboxId) -> bool,
    ) -> Option<MailboxId> {
        let name = normalize_name(name);
        self.visible(has_live_entries)
            .into_iter()
            .find(|v| v.name == name)
            .map(|v| v.id)
    }

    /// Whether a `Create` of the mailbox was applied (deleted or not).
    pub fn exists(&self, id: &MailboxId) -> bool {
        self.nodes.get(id).is_some_and(|n| n.created.is_some())
    }

    /// Whether a `Delete` of the mailbox was applied.
    pub fn is_deleted(&self, id: &MailboxId) -> bool {
        self.nodes.get(id).is_some_and(|n| n.deleted.is_some())
    }

    /// The mailboxes created, deleted or not, with live entries or not: the
    /// logs a replica keeps.
    pub fn all_ids(&self) -> impl Iterator<Item = &MailboxId> + '_ {
        self.nodes
            .iter()
            .filter(|(_, n)| n.created.is_some())
            .map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ReplicaId;
    use proptest::prelude::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashSet;

    fn mb(n: u8) -> MailboxId {
        MailboxId([n; 16])
    }
    fn st(ms: u64, r: u64, seq: u64) -> Stamp {
        (
            Timestamp::new(ms, 0),
            OpId {
                origin: ReplicaId(r),
                seq,
            },
        )
    }
    fn create(id: MailboxId, name: &str) -> TreeOp {
        TreeOp::Create {
            id,
            name: name.into(),
            special_use: None,
        }
    }
    fn none(_: &MailboxId) -> bool {
        false
    }
    fn names(t: &MailboxTree) -> Vec<(String, MailboxId)> {
        t.visible(none)
            .into_iter()
            .map(|v| (v.name, v.id))
            .collect()
    }
    fn apply_all(ops: &[(Stamp, TreeOp)]) -> MailboxTree {
        let mut t = MailboxTree::new();
        for (s, o) in ops {
            t.apply(*s, o).unwrap();
        }
        t
    }
    /// Forward and backward application agree; returns the tree.
    fn both_orders(ops: &[(Stamp, TreeOp)]) -> MailboxTree {
        let f = apply_all(ops);
        let rev: Vec<_> = ops.iter().rev().cloned().collect();
        let b = apply_all(&rev);
        assert_eq!(f, b);
        f
    }

    // ---- DESIGN §4 rows about the mailbox list ----

    #[test]
    fn delete_mailbox_vs_append_message_not_lost() {
        let ops = vec![
            (st(1, 1, 1), create(mb(1), "Work")),
            (st(5, 1, 2), TreeOp::Delete { id: mb(1) }),
        ];
        let t = both_orders(&ops);
        // The DELETE expunged what it observed; the concurrent APPEND's
        // entry is live, so the mailbox stays listed.
        let v = t.visible(|id| *id == mb(1));
        assert_eq!(v.len(), 1);
        assert!(v[0].resurrected && v[0].name == "Work");
        assert_eq!(t.lookup("Work", |id| *id == mb(1)), Some(mb(1)));
        // Nothing live: gone.
        assert!(t.visible(none).is_empty());
        assert_eq!(t.lookup("Work", none), None);
        assert!(t.is_deleted(&mb(1)) && t.exists(&mb(1)));
    }

    #[test]
    fn rename_vs_rename_same_mailbox_one_wins() {
        let ops = vec![
            (st(1, 1, 1), create(mb(1), "Old")),
            (
                st(10, 1, 2),
                TreeOp::Rename {
                    id: mb(1),
                    name: "FromNode1".into(),
                },
            ),
            (
                st(10, 2, 1),
                TreeOp::Rename {
                    id: mb(1),
                    name: "FromNode2".into(),
                },
            ),
        ];
        let t = both_orders(&ops);
        // Same wall time: the op id breaks the tie, on every replica.
        assert_eq!(names(&t), vec![("FromNode2".into(), mb(1))]);
        let mut swapped = ops.clone();
        swapped.swap(1, 2);
        assert_eq!(
            names(&apply_all(&swapped)),
            vec![("FromNode2".into(), mb(1))]
        );
    }

    #[test]
    fn two_mailboxes_same_name_both_survive() {
        // Concurrent CREATE "X" on two nodes.
        let ops = vec![
            (st(7, 2, 1), create(mb(2), "X")),
            (st(5, 1, 1), create(mb(1), "X")),
        ];
        let t = both_orders(&ops);
        assert_eq!(
            names(&t),
            vec![("X".into(), mb(1)), ("X (2)".into(), mb(2))]
        );
        assert_eq!(t.lookup("X", none), Some(mb(1)));
        assert_eq!(t.lookup("X (2)", none), Some(mb(2)));
        // A rename onto a name taken concurrently: the older holder keeps it.
        let ops = vec![
            (st(1, 1, 1), create(mb(1), "A")),
            (st(2, 2, 1), create(mb(2), "B")),
            (
                st(9, 1, 2),
                TreeOp::Rename {
                    id: mb(1),
                    name: "B".into(),
                },
            ),
        ];
        let t = both_orders(&ops);
        assert_eq!(
            names(&t),
            vec![("B".into(), mb(2)), ("B (2)".into(), mb(1))]
        );
    }

    // ---- More ----

    #[test]
    fn disambiguated_name_never_clashes() {
        let ops = vec![
            (st(1, 1, 1), create(mb(1), "X")),
            (st(2, 2, 1), create(mb(2), "X")),
            (st(3, 3, 1), create(mb(3), "X (2)")),
            (st(4, 3, 2), create(mb(4), "X")),
        ];
        let t = both_orders(&ops);
        assert_eq!(
            names(&t),
            vec![
                ("X".into(), mb(1)),
                ("X (2)".into(), mb(3)),
                ("X (3)".into(), mb(2)),
                ("X (4)".into(), mb(4))
            ]
        );
    }

    #[test]
    fn inbox_is_case_insensitive_and_unique() {
        let ops = vec![
            (st(1, 1, 1), create(mb(1), "INBOX")),
            (st(2, 2, 1), create(mb(2), "inbox")),
            (st(3, 2, 2), create(mb(3), "Inbox/Sub")),
        ];
        let t = both_orders(&ops);
        assert_eq!(
            names(&t),
            vec![
                ("INBOX".into(), mb(1)),
                ("INBOX (2)".into(), mb(2)),
                ("INBOX/Sub".into(), mb(3))
            ]
        );
        assert_eq!(t.lookup("iNbOx", none), Some(mb(1)));
        assert_eq!(t.lookup("inbox/Sub", none), Some(mb(3)));
    }

    #[test]
    fn resurrected_mailbox_yields_its_reused_name() {
        let ops = vec![
            (st(1, 1, 1), create(mb(1), "X")),
            (st(5, 1, 2), TreeOp::Delete { id: mb(1) }),
            (st(6, 1, 3), create(mb(2), "X")),
        ];
        let t = both_orders(&ops);
        let v = t.visible(|id| *id == mb(1));
        let got: Vec<_> = v
            .iter()
            .map(|v| (v.name.as_str(), v.id, v.resurrected))
            .collect();
        assert_eq!(got, vec![("X", mb(2), false), ("X (2)", mb(1), true)]);
    }

    #[test]
    fn ops_before_create_take_effect() {
        let ops = vec![
            (
                st(1, 1, 1),
                TreeOp::Create {
                    id: mb(1),
                    name: "A".into(),
                    special_use: Some(SpecialUse::Trash),
                },
            ),
            (
                st(2, 1, 2),
                TreeOp::Rename {
                    id: mb(1),
                    name: "B".into(),
                },
            ),
            (
                st(3, 1, 3),
                TreeOp::Subscribe {
                    id: mb(1),
                    subscribed: true,
                },
            ),
            (
                st(4, 1, 4),
                TreeOp::SetSpecialUse {
                    id: mb(1),
                    special_use: Some(SpecialUse::Junk),
                },
            ),
        ];
        let mut t = MailboxTree::new();
        for (s, o) in ops.iter().skip(1) {
            t.apply(*s, o).unwrap();
        }
        assert!(t.visible(none).is_empty() && !t.exists(&mb(1)));
        t.apply(ops[0].0, &ops[0].1).unwrap();
        assert_eq!(
            t.visible(none),
            vec![MailboxView {
                id: mb(1),
                name: "B".into(),
                subscribed: true,
                special_use: Some(SpecialUse::Junk),
                resurrected: false
            }]
        );
        assert_eq!(t, apply_all(&ops));
    }

    #[test]
    fn name_validation() {
        assert!(validate_name("INBOX").is_ok());
        assert!(validate_name("a/b c/é").is_ok());
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name("/a"), Err(NameError::EmptyComponent));
        assert_eq!(validate_name("a//b"), Err(NameError::EmptyComponent));
        assert_eq!(validate_name("a/"), Err(NameError::EmptyComponent));
        assert_eq!(validate_name("a\nb"), Err(NameError::ControlChar));
        assert_eq!(
            validate_name(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong)
        );
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        let mut t = MailboxTree::new();
        assert!(t.apply(st(1, 1, 1), &create(mb(1), "a//b")).is_err());
        assert!(t
            .apply(
                st(2, 1, 2),
                &TreeOp::Rename {
                    id: mb(1),
                    name: "".into()
                }
            )
            .is_err());
        assert_eq!(t, MailboxTree::new());
        assert_eq!(SpecialUse::parse("\\sent"), Some(SpecialUse::Sent));
        assert_eq!(SpecialUse::Trash.to_string(), "\\Trash");
    }

    #[test]
    fn tree_checkpoint_round_trip() {
        let ops = vec![
            (st(1, 1, 1), create(mb(1), "INBOX")),
            (
                st(2, 1, 2),
                TreeOp::Create {
                    id: mb(2),
                    name: "Sent".into(),
                    special_use: Some(SpecialUse::Sent),
                },
            ),
            (st(3, 2, 1), TreeOp::Delete { id: mb(2) }),
            (
                st(4, 2, 2),
                TreeOp::Rename {
                    id: mb(3),
                    name: "Later".into(),
                },
            ),
        ];
        let t = apply_all(&ops);
        let back: MailboxTree = postcard::from_bytes(&postcard::to_allocvec(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    fn shuffle<T>(v: &mut [T], seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for i in (1..v.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Three replicas with hybrid clocks create, rename, delete,
        /// (un)subscribe and tag mailboxes from a small name pool (so names
        /// clash), sometimes pulling each other's ops. Every permutation of
        /// the op set lists the same mailboxes under the same unique names.
        #[test]
        fn tree_order_independence(
            actions in prop::collection::vec((0u8..6, 0usize..3, 0usize..3, any::<u8>(), any::<u8>()), 1..60),
            seeds in prop::collection::vec(any::<u64>(), 4),
        ) {
            const NAMES: [&str; 6] = ["A", "B", "A/x", "inbox", "A (2)", "B/y/z"];
            let mut clock = [0u64; 3];
            let mut seq = [0u64; 3];
            let mut seen: Vec<HashSet<usize>> = vec![HashSet::new(); 3]; // indices into `all` each replica has
            let mut all: Vec<(Stamp, TreeOp)> = Vec::new();
            let mut next = 0u8;
            for (kind, r, other, a, b) in actions {
                let mut known: Vec<MailboxId> = seen[r].iter().filter_map(|&i| match &all[i].1 {
                    TreeOp::Create { id, .. } => Some(*id),
                    _ => None,
                }).collect();
                known.sort();
                let target = (!known.is_empty()).then(|| known[a as usize % known.len()]);
                let name = NAMES[b as usize % NAMES.len()].to_string();
                let op = match (kind, target) {
                    (0, _) | (_, None) => { next += 1; Some(TreeOp::Create { id: mb(next), name, special_use: None }) }
                    (1, Some(id)) => Some(TreeOp::Rename { id, name }),
                    (2, Some(id)) => Some(TreeOp::Delete { id }),
                    (3, Some(id)) => Some(TreeOp::Subscribe { id, subscribed: b.is_multiple_of(2) }),
                    (4, Some(id)) => Some(TreeOp::SetSpecialUse { id, special_use: SpecialUse::ALL.get(b as usize % 9).copied() }),
                    _ => None,
                };
                match op {
                    Some(op) => {
                        // A hybrid clock: after everything seen, wall time may tie.
                        clock[r] += (b % 3) as u64;
                        seq[r] += 1;
                        let stamp = (Timestamp::new(clock[r], 0), OpId { origin: ReplicaId(r as u64 + 1), seq: seq[r] });
                        seen[r].insert(all.len());
                        all.push((stamp, op));
                    }
                    None => {
                        let theirs: Vec<usize> = seen[other].iter().copied().collect();
                        for i in theirs {
                            seen[r].insert(i);
                            clock[r] = clock[r].max(all[i].0 .0.wall_ms());
                        }
                    }
                }
            }
            let live = |id: &MailboxId| id.0[0].is_multiple_of(2);
            let reference = apply_all(&all);
            let expected = reference.visible(live);
            let unique: BTreeSet<&String> = expected.iter().map(|v| &v.name).collect();
            prop_assert_eq!(unique.len(), expected.len());
            for v in &expected {
                prop_assert_eq!(reference.lookup(&v.name, live), Some(v.id));
            }
            for seed in seeds {
                let mut perm = all.clone();
                shuffle(&mut perm, seed);
                let t = apply_all(&perm);
                prop_assert_eq!(&t, &reference);
                prop_assert_eq!(t.visible(live), expected.clone());
            }
        }
    }
}
