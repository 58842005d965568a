//! The invariant checker, run incrementally after every replica call from
//! the `Event` outputs and the views (ARCHITECTURE.md §4.3):
//!
//! - **S1 unique**: a (user, mailbox, UIDVALIDITY, UID) names at most one
//!   entry across all replicas, forever (a global map).
//! - **S2 ascending**: per replica, a newly visible UID is above every UID
//!   that replica exposed before (across its restarts: this state is the
//!   checker's, it survives crashes) and at least every UIDNEXT it announced.
//! - **S3 validity only grows**: a replica's UIDVALIDITY for a mailbox never
//!   decreases (every change is counted: E wants none).
//! - **S4 stable**: a UID a replica exposed names the same entry there until
//!   an `Expunged` event for it (a shadow of each view, compared with the
//!   replica's own map after restarts and at the end).
//!
//! The end-of-run checks (L2, no acknowledged message lost) and the client
//! checks live in `world.rs`; they record violations here.

use aerogramme_proto::ids::{EntryId, MailboxId};
use aerogramme_proto::replica::{Event, MailboxView};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Names of the invariants, in report order.
pub const INVARIANTS: &[&str] = &[
    "S1_unique",
    "S2_ascending",
    "S3_uidvalidity_grows",
    "S4_stable",
    "view_rows",
    "L1_available",
    "L2_convergent",
    "no_acked_message_lost",
    "client_uid_meaning",
    "client_uid_ascending",
    "client_uidvalidity",
    "client_changedsince",
    "wire_roundtrip",
    "E_cheap",
];

/// One violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Simulated time, ms.
    pub at_ms: u64,
    /// Which invariant.
    pub invariant: &'static str,
    /// Node, if one.
    pub node: Option<usize>,
    /// When what led to it happened, if known (the shrinker drops every
    /// schedule item after it): the time of the violation itself, or of the
    /// action that was never acknowledged; `None` for end-of-run verdicts.
    pub since_ms: Option<u64>,
    /// What happened.
    pub detail: String,
}

/// What the checker remembers of one mailbox on one replica.
#[derive(Clone, Debug, Default)]
pub struct NodeBox {
    /// UIDVALIDITY last seen (0: none yet).
    pub uv: u32,
    /// Highest UID this replica exposed in `uv`.
    pub max_uid: u32,
    /// Highest UIDNEXT it announced.
    pub uidnext: u32,
    /// Shadow of the live UIDs.
    pub live: HashMap<u32, EntryId>,
    /// Every UID it ever exposed in `uv`.
    pub ever: HashSet<u32>,
}

/// Key of a mailbox: (user index, mailbox).
pub type BoxKey = (usize, MailboxId);

/// The incremental checker.
#[derive(Default)]
pub struct Checker {
    /// S1: (user, mailbox, UIDVALIDITY, UID) → entry, over all replicas.
    pub global: HashMap<(usize, MailboxId, u32, u32), EntryId>,
    /// First UID each entry was shown under.
    /// (UIDVALIDITY, UID) each message was first shown with, anywhere.
    pub first_uid: HashMap<(usize, MailboxId, EntryId), (u32, u32)>,
    /// Entries shown under more than one UID.
    pub reannounced: HashSet<(usize, MailboxId, EntryId)>,
    /// Per node.
    pub boxes: Vec<HashMap<BoxKey, NodeBox>>,
    /// Violations, in order (the first few in full).
    pub violations: Vec<Violation>,
    /// Number of violations per invariant.
    pub failed: BTreeMap<&'static str, u64>,
    /// UIDVALIDITY changes seen on replicas.
    pub uidvalidity_changes: u64,
    /// UIDs shown and gone again within one batch (entry unknown).
    pub transient: u64,
    /// Violations not yet copied into the trace (when tracing).
    pub unlogged: Option<Vec<Violation>>,
}

/// Violations kept in full.
const KEEP: usize = 50;

impl Checker {
    /// A checker for `n` nodes; `log`: keep violations for the trace.
    pub fn new(n: usize, log: bool) -> Self {
        Checker {
            boxes: vec![HashMap::new(); n],
            unlogged: log.then(Vec::new),
            ..Default::default()
        }
    }

    /// Records a violation.
    pub fn fail(
        &mut self,
        at_ms: u64,
        invariant: &'static str,
        node: Option<usize>,
        detail: String,
    ) {
        self.fail_since(at_ms, Some(at_ms), invariant, node, detail);
    }

    /// Records a violation whose cause dates from `since_ms`.
    pub fn fail_since(
        &mut self,
        at_ms: u64,
        since_ms: Option<u64>,
        invariant: &'static str,
        node: Option<usize>,
        detail: String,
    ) {
        *self.failed.entry(invariant).or_insert(0) += 1;
        let v = Violation {
            at_ms,
            invariant,
            node,
            since_ms,
            detail,
        };
        if let Some(l) = self.unlogged.as_mut() {
            l.push(v.clone());
        }
        if self.violations.len() < KEEP {
            self.violations.push(v);
        }
    }

    /// Whether any invariant failed.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Notes the UIDVALIDITY a replica shows for a mailbox (S3; counts changes).
    /// Returns whether the replica's UIDVALIDITY changed (its UID space
    /// starts again).
    fn note_uv(&mut self, at_ms: u64, node: usize, key: BoxKey, uv: u32) -> bool {
        let nb = self.boxes[node].entry(key).or_default();
        if nb.uv == uv {
            return false;
        }
        let old = nb.uv;
        if old != 0 {
            // A new UIDVALIDITY: the UID space starts again.
            nb.max_uid = 0;
            nb.uidnext = 0;
            nb.live.clear();
            nb.ever.clear();
        }
        nb.uv = uv;
        if old != 0 {
            self.uidvalidity_changes += 1;
            if uv < old {
                self.fail(
                    at_ms,
                    "S3_uidvalidity_grows",
                    Some(node),
                    format!("mailbox {:?}: UIDVALIDITY {old} -> {uv}", key.1),
                );
            }
        }
        old != 0
    }

    /// One `Event` output of `node`, with the mailbox's view after the batch.
    pub fn on_event(
        &mut self,
        at_ms: u64,
        node: usize,
        key: BoxKey,
        view: &MailboxView,
        event: &Event,
    ) {
        let uv = view.uidvalidity();
        self.note_uv(at_ms, node, key, uv);
        match *event {
            Event::Exists { uid } => {
                let entry = view.message(uid).map(|m| m.entry);
                let nb = self.boxes[node].get_mut(&key).expect("noted");
                let mut errs: Vec<(&'static str, String)> = Vec::new();
                if uid <= nb.max_uid || uid < nb.uidnext {
                    errs.push((
                        "S2_ascending",
                        format!(
                            "mailbox {:?}: new UID {uid} not above exposed UID {} / UIDNEXT {}",
                            key.1, nb.max_uid, nb.uidnext
                        ),
                    ));
                }
                nb.max_uid = nb.max_uid.max(uid);
                nb.ever.insert(uid);
                match entry {
                    Some(e) => {
                        if let Some(old) = nb.live.insert(uid, e) {
                            if old != e {
                                errs.push((
                                    "S4_stable",
                                    format!(
                                        "mailbox {:?}: UID {uid} shown again for {e:?}, named {old:?}",
                                        key.1
                                    ),
                                ));
                            }
                        }
                        match self.global.get(&(key.0, key.1, uv, uid)) {
                            Some(prev) if *prev != e => errs.push((
                                "S1_unique",
                                format!(
                                    "mailbox {:?} UIDVALIDITY {uv} UID {uid} names {e:?} here, {prev:?} elsewhere",
                                    key.1
                                ),
                            )),
                            Some(_) => {}
                            None => {
                                self.global.insert((key.0, key.1, uv, uid), e);
                            }
                        }
                        let k = (key.0, key.1, e);
                        match self.first_uid.get(&k) {
                            Some(&(fuv, fuid)) if (fuv, fuid) != (uv, uid) => {
                                self.reannounced.insert(k);
                            }
                            Some(_) => {}
                            None => {
                                self.first_uid.insert(k, (uv, uid));
                            }
                        }
                    }
                    None => {
                        // Shown and expunged in the same batch: the Expunged
                        // event follows; the entry is not observable.
                        nb.live.insert(uid, EntryId([0; 16]));
                        self.transient += 1;
                    }
                }
                for (inv, d) in errs {
                    self.fail(at_ms, inv, Some(node), d);
                }
            }
            Event::Expunged { uid } => {
                let nb = self.boxes[node].get_mut(&key).expect("noted");
                if nb.live.remove(&uid).is_none() {
                    let d = format!("mailbox {:?}: expunged UID {uid} it did not show", key.1);
                    self.fail(at_ms, "S4_stable", Some(node), d);
                }
            }
            Event::Flags { uid, modseq } => {
                let nb = self.boxes[node].get_mut(&key).expect("noted");
                let mut err = None;
                if !nb.live.contains_key(&uid) {
                    err = Some(format!(
                        "mailbox {:?}: flags of UID {uid} it does not show",
                        key.1
                    ));
                } else if modseq > view.highest_modseq() {
                    err = Some(format!(
                        "mailbox {:?}: UID {uid} MODSEQ {modseq} above HIGHESTMODSEQ {}",
                        key.1,
                        view.highest_modseq()
                    ));
                }
                if let Some(d) = err {
                    self.fail(at_ms, "S4_stable", Some(node), d);
                }
            }
            Event::FlagsMany(_) => {} // given one by one (`World`)
        }
    }

    /// After a batch: UIDNEXT never goes down (S2's "≥ every UIDNEXT it
    /// announced").
    pub fn after_batch(&mut self, at_ms: u64, node: usize, key: BoxKey, view: &MailboxView) {
        self.note_uv(at_ms, node, key, view.uidvalidity());
        let nb = self.boxes[node].get_mut(&key).expect("noted");
        let next = view.uidnext();
        let prev = nb.uidnext;
        nb.uidnext = nb.uidnext.max(next);
        if next < prev {
            let d = format!("mailbox {:?}: UIDNEXT {prev} -> {next}", key.1);
            self.fail(at_ms, "S2_ascending", Some(node), d);
        }
    }

    /// Compares the shadow of a replica's mailbox with its map (after a
    /// restart, at the end): S4 across restarts.
    pub fn compare_shadow(
        &mut self,
        at_ms: u64,
        node: usize,
        key: BoxKey,
        view: &MailboxView,
        why: &str,
    ) {
        if !view.index_is_consistent() {
            let d = format!(
                "{why}: mailbox {:?}: rows differ from the view's maps",
                key.1
            );
            self.fail(at_ms, "view_rows", Some(node), d);
        }
        let uv = view.uidvalidity();
        let map = view.uid_map();
        if self.note_uv(at_ms, node, key, uv) {
            // A new UIDVALIDITY (counted; S3 checked): clients resync from
            // scratch, so what is shown now is this replica's new exposure.
            for (uid, e) in &map {
                self.expose(at_ms, node, key, uv, *uid, *e);
            }
            return;
        }
        let Some(nb) = self.boxes[node].get(&key) else {
            return;
        };
        let mut errs = Vec::new();
        for (uid, e) in &nb.live {
            match map.get(uid) {
                Some(x) if x == e => {}
                Some(x) => errs.push(format!(
                    "{why}: mailbox {:?} UID {uid} names {x:?}, was {e:?}",
                    key.1
                )),
                None => errs.push(format!(
                    "{why}: mailbox {:?} UID {uid} ({e:?}) vanished without an Expunged event",
                    key.1
                )),
            }
        }
        for uid in map.keys() {
            if !nb.live.contains_key(uid) {
                errs.push(format!(
                    "{why}: mailbox {:?} UID {uid} visible without an Exists event",
                    key.1
                ));
            }
        }
        errs.sort();
        for d in errs {
            self.fail(at_ms, "S4_stable", Some(node), d);
        }
    }

    /// Records an exposure made without an event (after a UIDVALIDITY
    /// change): S1 and the shadows.
    fn expose(&mut self, at_ms: u64, node: usize, key: BoxKey, uv: u32, uid: u32, e: EntryId) {
        let nb = self.boxes[node].entry(key).or_default();
        nb.max_uid = nb.max_uid.max(uid);
        nb.ever.insert(uid);
        nb.live.insert(uid, e);
        match self.global.get(&(key.0, key.1, uv, uid)) {
            Some(prev) if *prev != e => {
                let d = format!(
                    "mailbox {:?} UIDVALIDITY {uv} UID {uid} names {e:?} here, {prev:?} elsewhere",
                    key.1
                );
                self.fail(at_ms, "S1_unique", Some(node), d);
            }
            Some(_) => {}
            None => {
                self.global.insert((key.0, key.1, uv, uid), e);
            }
        }
    }

    /// Whether `node` ever exposed `uid` in this mailbox and UIDVALIDITY.
    pub fn exposed(&self, node: usize, key: &BoxKey, uv: u32, uid: u32) -> bool {
        self.boxes[node]
            .get(key)
            .is_some_and(|nb| nb.uv == uv && nb.ever.contains(&uid))
    }
}
