//! Simulated IMAP clients. Each keeps what a real CONDSTORE/QRESYNC client
//! keeps: per mailbox the UIDVALIDITY, the HIGHESTMODSEQ of its last sync
//! and a cache (UID → entry, flags, MODSEQ), kept fresh by the untagged
//! responses (the replica's `Event`s) while it is connected. A resync is
//! `SELECT … (QRESYNC (uidvalidity modseq))`: the node answers with
//! `changed_since(modseq)` (changed UIDs and VANISHED), the client applies
//! it and the simulator checks the result from the client's side.

use aerogramme_proto::ids::{EntryId, MailboxId};
use aerogramme_proto::mailbox::Flag;
use aerogramme_proto::replica::MailboxView;
use aerogramme_proto::seq::Spaces;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One cached message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CMsg {
    /// Entry (what the client would see as the message's identity, e.g.
    /// its Message-ID and body).
    pub entry: EntryId,
    /// Flags.
    pub flags: Vec<Flag>,
    /// MODSEQ.
    pub modseq: u64,
}

/// A client's cache of one mailbox.
#[derive(Clone, Debug, Default)]
pub struct CBox {
    /// UIDVALIDITY (0: never synced).
    pub uv: u32,
    /// HIGHESTMODSEQ of the last sync.
    pub hms: u64,
    /// Cached messages.
    pub msgs: BTreeMap<u32, CMsg>,
    /// Every UID → entry this client ever saw in `uv` (lookups only).
    pub ever: HashMap<u32, EntryId>,
    /// Highest UID seen from each node.
    pub max_seen: BTreeMap<usize, u32>,
    /// UIDs the client knows are expunged: VANISHED in its syncs (the first
    /// SELECT counts every UID its node had expunged), EXPUNGE events. A
    /// node that still shows one of them is behind (a stale read).
    pub gone: HashSet<u32>,
}

/// A simulated client.
#[derive(Clone, Debug)]
pub struct Client {
    /// User index.
    pub user: usize,
    /// Node it is connected to.
    pub node: usize,
    /// Caches, per mailbox.
    pub boxes: BTreeMap<MailboxId, CBox>,
    /// Selected mailbox.
    pub selected: Option<MailboxId>,
}

/// What a resync found, besides the violations.
#[derive(Clone, Debug, Default)]
pub struct SyncFindings {
    /// Violations: (invariant, detail).
    pub violations: Vec<(&'static str, String)>,
    /// UIDs the client knows that the node lacks or has older data for
    /// (the node is behind: not a violation).
    pub stale: u64,
    /// Whether the client saw a UIDVALIDITY change.
    pub uidvalidity_changed: bool,
}

impl Client {
    /// A client of `user` on `node`.
    pub fn new(user: usize, node: usize) -> Self {
        Client {
            user,
            node,
            boxes: BTreeMap::new(),
            selected: None,
        }
    }

    /// An untagged EXISTS / FETCH for `uid` (the message as the view shows
    /// it after the batch), from the connected node.
    pub fn on_message(
        &mut self,
        node: usize,
        mb: MailboxId,
        uv: u32,
        m: Option<CMsgAt>,
    ) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        let Some(b) = self.boxes.get_mut(&mb) else {
            return errs;
        };
        if b.uv != uv {
            return errs; // noticed at the next resync
        }
        let Some(m) = m else { return errs };
        learn(b, node, mb, m.uid, &m.msg, &mut errs);
        b.msgs.insert(m.uid, m.msg);
        errs
    }

    /// An untagged EXPUNGE.
    pub fn on_expunged(&mut self, mb: MailboxId, uv: u32, uid: u32) {
        if let Some(b) = self.boxes.get_mut(&mb) {
            if b.uv == uv {
                b.msgs.remove(&uid);
                b.gone.insert(uid);
            }
        }
    }
}

/// A message with its UID.
#[derive(Clone, Debug)]
pub struct CMsgAt {
    /// UID.
    pub uid: u32,
    /// Message.
    pub msg: CMsg,
}

/// The client learns `uid → msg` from `node`: the client-side S1 (a UID
/// never changes meaning) and S2 (a new UID at or below one already seen on
/// that node, for a message never seen) checks.
fn learn(
    b: &mut CBox,
    node: usize,
    mb: MailboxId,
    uid: u32,
    msg: &CMsg,
    errs: &mut Vec<(&'static str, String)>,
) {
    match b.ever.get(&uid) {
        Some(e) if *e != msg.entry => errs.push((
            "client_uid_meaning",
            format!(
                "mailbox {mb:?} UIDVALIDITY {} UID {uid}: was {e:?}, node {node} says {:?}",
                b.uv, msg.entry
            ),
        )),
        Some(_) => {}
        // A UID the client was told is expunged (VANISHED or EXPUNGE from
        // another node) was exposed before: a node still showing it is
        // behind, it does not show a new UID.
        None if b.gone.contains(&uid) => {}
        None => {
            let seen = b.max_seen.get(&node).copied().unwrap_or(0);
            if uid <= seen {
                errs.push((
                    "client_uid_ascending",
                    format!(
                        "mailbox {mb:?}: node {node} shows new UID {uid} ({:?}) at or below UID {seen} it showed before",
                        msg.entry
                    ),
                ));
            }
            b.ever.insert(uid, msg.entry);
        }
    }
    let s = b.max_seen.entry(node).or_insert(0);
    *s = (*s).max(uid);
}

fn cmsg(view: &MailboxView, uid: u32) -> Option<CMsg> {
    view.message(uid).map(|m| CMsg {
        entry: m.entry,
        flags: m.view.flags,
        modseq: m.modseq,
    })
}

/// SELECT with QRESYNC on `node`: applies `changed_since` and checks that
/// the cache then equals the node's view for every UID the client knows,
/// telling a node that is behind (stale read) from one that missed
/// reporting a change (violation). `exposed(uid)` says whether the node
/// ever exposed that UID (in the current UIDVALIDITY); `behind(entry)`
/// whether another replica showed a change of that entry the node has not.
pub fn resync(
    b: &mut CBox,
    node: usize,
    mb: MailboxId,
    view: &MailboxView,
    spaces: &Spaces,
    exposed: impl Fn(u32) -> bool,
    behind: impl Fn(&EntryId) -> bool,
) -> SyncFindings {
    let mut f = SyncFindings::default();
    let uv = view.uidvalidity();
    if b.uv != 0 && b.uv != uv {
        // A placeholder view (the mailbox's Create has not arrived on this
        // node yet) has nothing to show: the node is behind.
        if view.highest_modseq() == 0 && view.exists() == 0 {
            f.stale += 1;
            return f;
        }
        f.uidvalidity_changed = true;
        f.violations.push((
            "client_uidvalidity",
            format!(
                "mailbox {mb:?}: UIDVALIDITY {} -> {uv} on node {node}",
                b.uv
            ),
        ));
        *b = CBox::default();
    }
    if b.uv == 0 {
        // First SELECT: fetch everything.
        b.uv = uv;
        for uid in view.uids() {
            if let Some(m) = cmsg(view, uid) {
                learn(b, node, mb, uid, &m, &mut f.violations);
                b.msgs.insert(uid, m);
            }
        }
        b.hms = view.highest_modseq();
        b.gone.extend(view.changed_since(0, spaces).1);
        return f;
    }
    let (changed, vanished) = view.changed_since(b.hms, spaces);
    for uid in &vanished {
        b.msgs.remove(uid);
        b.gone.insert(*uid);
    }
    let mut reported: Vec<u32> = Vec::with_capacity(changed.len());
    for uid in changed {
        if let Some(m) = cmsg(view, uid) {
            learn(b, node, mb, uid, &m, &mut f.violations);
            b.msgs.insert(uid, m);
            reported.push(uid);
        }
    }
    // Every UID the client knows must now equal the node's view of it.
    let mut gone = Vec::new();
    let mut present = 0usize;
    for (uid, c) in b.msgs.iter_mut() {
        match cmsg(view, *uid) {
            Some(m) => {
                present += 1;
                if m == *c {
                    continue;
                }
                if m.entry != c.entry {
                    f.violations.push((
                        "client_uid_meaning",
                        format!(
                            "mailbox {mb:?} UID {uid}: cached {:?}, node {node} shows {:?}",
                            c.entry, m.entry
                        ),
                    ));
                } else if m.modseq < c.modseq || (m.modseq == c.modseq && behind(&m.entry)) {
                    // The node has not applied a change the client saw. With
                    // an equal MODSEQ: the node showed a value of a
                    // partition (a reservation's, kept as final) that
                    // elsewhere came after a lower final change it has not
                    // shown yet; it shows that change above its marks later.
                    f.stale += 1;
                } else {
                    f.violations.push((
                        "client_changedsince",
                        format!(
                            "mailbox {mb:?} UID {uid}: node {node} has MODSEQ {} flags {:?}, client has MODSEQ {} flags {:?}, HIGHESTMODSEQ {}: CHANGEDSINCE did not report it",
                            m.modseq, m.flags, c.modseq, c.flags, b.hms
                        ),
                    ));
                    *c = m;
                }
            }
            None => {
                if exposed(*uid) {
                    f.violations.push((
                        "client_changedsince",
                        format!(
                            "mailbox {mb:?} UID {uid}: expunged on node {node} but not in VANISHED since MODSEQ {}",
                            b.hms
                        ),
                    ));
                } else {
                    f.stale += 1; // the node never showed it: it is behind
                }
                // The client's FETCH of it comes back empty: it drops it.
                gone.push(*uid);
            }
        }
    }
    for uid in gone {
        b.msgs.remove(&uid);
    }
    if present != view.exists() {
        // The node shows messages the answer did not report.
        for uid in view.uids() {
            if !b.msgs.contains_key(&uid) {
                if let Some(m) = cmsg(view, uid) {
                    if b.ever.get(&uid) == Some(&m.entry) || b.gone.contains(&uid) {
                        // The client saw it go (an expunge shown by another
                        // node, or VANISHED when it synced there): this node
                        // has not applied that expunge yet.
                        f.stale += 1;
                        continue;
                    }
                    f.violations.push((
                        "client_changedsince",
                        format!(
                            "mailbox {mb:?} UID {uid} (MODSEQ {}) on node {node} not reported since MODSEQ {}",
                            m.modseq, b.hms
                        ),
                    ));
                    learn(b, node, mb, uid, &m, &mut f.violations);
                    b.msgs.insert(uid, m);
                }
            }
        }
    }
    b.hms = view.highest_modseq();
    f
}
