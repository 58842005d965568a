//! The UID and MODSEQ sequencer of one mailbox: who may give a message its
//! UID, and every change its MODSEQ, so that IMAP's rules hold on every
//! replica (DESIGN §5; the protocol and its arguments are in ARCHITECTURE.md).
//!
//! In short: one replica at a time owns the mailbox's ledger (a Multi-Paxos
//! leader, chosen deterministically, replaced through ballots). Every op that
//! needs a UID or a MODSEQ is broadcast by its origin; the owner assigns
//! values from its counters and commits them in the ledger once a majority
//! stored them; replicas apply committed slots in order. The owner also
//! commits, for every replica, a range of UIDs and MODSEQs reserved ahead of
//! the counters, which that replica alone may use when it cannot get a
//! decision in time (a partition): its provisional values can never collide
//! with anyone's. The owner later confirms a provisional assignment when it is
//! still above everything final, or re-announces the op with fresh values.
//!
//! The sequencer works on op ids and counts only: it never needs the user's
//! key, so any replica can own any mailbox.

mod msg;
mod space;

pub use msg::{
    Assign, Ballot, Decision, Fate, Pending, SeqMsg, SeqOutput, SeqRecord, Slot, Uids, Value,
};
pub use space::{Reservation, SpaceParams, Spaces, Span, MAX_MODSEQ, MAX_UID};

use crate::ids::{OpId, ReplicaId};
use crate::FastMap;
use std::collections::{BTreeMap, BTreeSet};

/// Timing and sizing of the sequencer. Times are in the driver's
/// milliseconds (real or simulated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqParams {
    /// Sizes of reservations.
    pub space: SpaceParams,
    /// How often the owner says it is alive.
    pub heartbeat_ms: u64,
    /// How often an idle owner (nothing in flight, nothing to sequence) says
    /// it is alive. Its Heartbeat says so, and its followers without work
    /// wait that much longer before they take it as lost. Below
    /// `election_timeout_ms`: a replica with work keeps the usual timeout.
    pub idle_heartbeat_ms: u64,
    /// How soon after a commit every member hears of it (the next Heartbeat
    /// is brought forward; the ops' origins hear at once).
    pub commit_notice_ms: u64,
    /// Silence from the owner after which a replica may start an election.
    pub election_timeout_ms: u64,
    /// How long an origin waits for a final decision before it uses its own
    /// reservation (the bound of L1), and the period of its re-broadcasts.
    pub forward_timeout_ms: u64,
    /// Most ledger slots the owner has in flight at once.
    pub max_inflight: usize,
    /// Least time between two slots the owner proposes while one is in
    /// flight: ops that arrive sooner wait for a tick (or for the slots in
    /// flight to commit) and share the next slot, so that a busy mailbox
    /// costs one `Accept` round per batch, not per op. With nothing in
    /// flight a new op is proposed at once: one client's APPENDs, each
    /// waiting for the last, wait for no tick. 0: a slot per arrival.
    pub batch_ms: u64,
    /// Most extra `Accepted` messages per slot for distinguished learners:
    /// the members with readers are listed in each `Accept` (and every
    /// acceptor sends them its `Accepted`) when their number times the
    /// number of acceptors is at most this; otherwise they wait for the
    /// owner's commit notice. 0 turns learners off.
    pub learner_budget: usize,
    /// Thrifty phase 2: the owner sends a slot's `Accept` only to the
    /// members with readers, the replicas the slot's decisions are for, and
    /// enough of the acceptors that made the last slot's majority (plus
    /// `accept_spare`) to make a majority; it widens to every member when
    /// the slot is not accepted by the next Heartbeat `heartbeat_ms` after
    /// it was proposed. The others learn commits from the Heartbeat's commit
    /// index and a `Pull`. Off: every `Accept` goes to every member.
    pub thrifty_accept: bool,
    /// Acceptors beyond a majority that a thrifty `Accept` goes to, so that
    /// one slow or lost answer does not hold the slot until it widens.
    pub accept_spare: usize,
    /// Longest an op known only from the log waits for its unheard origin
    /// (see `Sequencer::lead`): beyond, the origin is taken as gone for good
    /// and the op is sequenced `forward_timeout` later.
    pub gone_origin_ms: u64,
    /// Most decisions in one slot.
    pub max_batch: usize,
    /// Most slots in one Promise or Entries message.
    pub max_slots_per_message: usize,
    /// Test-only fault: the owner treats a slot as committed as soon as it
    /// proposes it, without waiting for a majority. Breaks S1 across
    /// failovers; exists so the simulator can prove its checker catches it.
    pub unsafe_commit_without_majority: bool,
}

impl Default for SeqParams {
    fn default() -> Self {
        SeqParams {
            space: SpaceParams::default(),
            heartbeat_ms: 250,
            idle_heartbeat_ms: 750,
            commit_notice_ms: 0,
            election_timeout_ms: 1_000,
            forward_timeout_ms: 2_000,
            max_inflight: 8,
            batch_ms: 20,
            learner_budget: 16,
            thrifty_accept: true,
            accept_spare: 1,
            gone_origin_ms: 60_000,
            max_batch: 1_024,
            max_slots_per_message: 512,
            unsafe_commit_without_majority: false,
        }
    }
}

/// How many best-ranked members an `Alive` goes to, at first.
const ALIVE_TARGETS: usize = 3;

/// Clock of an op resumed after a restart, until the next tick.
const RESUMED: u64 = u64::MAX;

/// What each promiser answered: committed values after the candidate's
/// commit index, and accepted values.
type Promises = BTreeMap<ReplicaId, (Vec<Value>, Vec<(Slot, Ballot, Value)>)>;

/// Where a decision is in the committed ledger: `committed[slot][pos]`.
#[derive(Copy, Clone, Debug)]
struct At {
    slot: u64,
    pos: u32,
}

/// The final values `finals` places in `committed`.
fn final_in<'a>(
    finals: &FastMap<OpId, At>,
    committed: &'a [Value],
    op: &OpId,
) -> Option<&'a Assign> {
    let at = finals.get(op)?;
    match committed.get(at.slot as usize)?.get(at.pos as usize)? {
        Decision::Sequence { assign, .. } => Some(assign),
        Decision::Reserve(_) => None,
    }
}

#[derive(Debug)]
struct Inflight {
    value: Value,
    acks: BTreeSet<ReplicaId>,
    /// The learners its `Accept` listed: they learn the commit themselves.
    learners: Vec<ReplicaId>,
    /// When it was proposed.
    since: u64,
    /// The members its `Accept` went to (thrifty phase 2), or `None` when
    /// it went (or has widened) to every member.
    targets: Option<Vec<ReplicaId>>,
}

#[derive(Debug)]
enum Role {
    Follower,
    Candidate {
        ballot: Ballot,
        since: u64,
        /// Commit index sent with the Prepare: promises answer relative to it.
        base: Slot,
        promises: Promises,
    },
    Leader {
        ballot: Ballot,
        next_slot: Slot,
        inflight: BTreeMap<Slot, Inflight>,
        /// Spaces including what is in flight.
        tentative: Spaces,
        /// Ops in flight (not to be sequenced twice).
        proposed: BTreeSet<OpId>,
        last_beat: u64,
        /// The last Heartbeat said the owner was idle: the next one is due
        /// `idle_heartbeat_ms` after it.
        beat_idle: bool,
        /// When it last proposed a new slot (`batch_ms`).
        last_proposed: Option<u64>,
        /// `tentative`'s counters, its number of reservations and the
        /// number of members when every member's reservation was last found
        /// ahead: while they are unchanged, so is the answer (`lead` runs
        /// after every message; checking 50 members each time was a hot
        /// spot at scale).
        ahead_at: Option<(u64, u64, usize, usize)>,
    },
}

/// One of this replica's own ops waiting for a final decision.
#[derive(Clone, Debug)]
struct MyOp {
    uids: u32,
    /// When it was submitted: the L1 clock (provisional values after
    /// `forward_timeout`).
    since: u64,
    /// When it was last forwarded.
    last_sent: u64,
    provisional: Option<Assign>,
}

/// The sequencer of one mailbox ledger on one replica.
#[derive(Debug)]
pub struct Sequencer {
    me: ReplicaId,
    /// Shared, so that the owner's work can hold them while it changes the
    /// sequencer (cloning a member list per call was a hot spot at scale).
    members: std::sync::Arc<Vec<ReplicaId>>,
    key: u64,
    params: std::sync::Arc<SeqParams>,
    // Durable acceptor state.
    promised: Ballot,
    accepted: BTreeMap<Slot, (Ballot, Value)>,
    // Durable learner state: committed values, slot i + 1 at index i.
    committed: Vec<Value>,
    spaces: Spaces,
    /// Each op's last final decision, as its place in `committed` (the
    /// ledger holds the values: a copy here cost every replica a
    /// 48-byte entry per op).
    finals: FastMap<OpId, At>,
    cursor: (u64, u64),
    // Ops known to need sequencing.
    pending: BTreeMap<OpId, Pending>,
    /// Ops seen in the log without their origin's Forward: (uids, since,
    /// first noted).
    noted: BTreeMap<OpId, (u32, u64, u64)>,
    /// Of the noted ops, those named by a late Forward without provisional
    /// values (`on_forward`): while there are any, the owner only confirms.
    doubtful: BTreeSet<OpId>,
    resequence: BTreeMap<OpId, (u64, u64)>,
    /// Of those, the ones this replica asked for itself (it exposed
    /// something above their final values): only these does it send to the
    /// owner again. Another replica's request names marks from that
    /// replica's exposure, and only that replica can send its provisional
    /// values with it; relayed without them, the owner could answer above
    /// them and undo them (the re-announcement of both sides that a real
    /// partition once showed at the heal).
    asked: BTreeSet<OpId>,
    /// Owner side: provisional values an op's origin showed after the op got
    /// a final value it could not show; a `Resequence` keeps them when they
    /// are still above every final value (ARCHITECTURE.md §4.1).
    claims: BTreeMap<OpId, Assign>,
    mine: BTreeMap<OpId, MyOp>,
    /// This replica's own ops that got a final value its view may not show
    /// yet (held in ledger order behind an op that has not arrived, or below
    /// its marks). The replica keeps only those its view still holds
    /// (`settle`, before each `tick`); one still held `forward_timeout`
    /// after it was submitted gets provisional values, as an undecided one
    /// would (L1).
    settling: BTreeMap<OpId, MyOp>,
    /// `settle` was called since the last tick. Without it, a final value is
    /// taken as shown and `settling` is emptied.
    settled: bool,
    // Failure detection.
    last_heard: FastMap<ReplicaId, u64>,
    /// Since when this replica has heard from less than a majority.
    quorum_lost: Option<u64>,
    /// When it heard a majority again after hearing less for a whole
    /// election timeout (it was cut off): it does not stand for election for
    /// one more timeout, so that an owner the others follow is heard first
    /// and not deposed (an election at a heal can replace the owner's
    /// confirmations of provisional values still in flight by fresh values,
    /// re-announcing the cut-off side's messages: E).
    rejoined_at: u64,
    /// Ops resumed after a restart wait for their clocks to start at the
    /// next tick (`RESUMED`).
    resumed: bool,
    /// Since when no owner is heard (while following).
    leaderless_since: Option<u64>,
    leader_seen: Option<(Ballot, u64)>,
    /// The owner's last Heartbeat said it was idle: it may stay silent
    /// `idle_heartbeat_ms` instead of `heartbeat_ms` (`owner_timeout`).
    owner_idle: bool,
    next_election: u64,
    last_resend: u64,
    last_alive: u64,
    /// This replica has readers of the mailbox (sessions of its user): it
    /// asks the owner, in its `Accepted`s, for each commit at once.
    watching: bool,
    /// Learner side: for slots above the commit index, the ballot and the
    /// acceptors known to have accepted it in that ballot (the owner's
    /// `Accept` and the `Accepted`s sent to this replica as a learner). A
    /// slot accepted by a majority in the ballot of the value this replica
    /// accepted is chosen; it commits once the slots below it are.
    votes: BTreeMap<Slot, (Ballot, BTreeSet<ReplicaId>)>,
    /// Owner side: members whose last `Accepted` said they have no readers.
    /// They are not sent a commit notice; they learn commits from the next
    /// `Accept` or periodic `Heartbeat` (`heartbeat_ms`).
    unwatched: BTreeSet<ReplicaId>,
    /// Owner side: the acceptors (other than this replica) whose `Accepted`s
    /// made the majority of the last slot committed in this ballot: the
    /// ones a thrifty `Accept` prefers (`SeqParams::thrifty_accept`).
    fast: Vec<ReplicaId>,
    /// A leader was newly seen (another ballot, or after its silence): this
    /// replica's undecided ops are forwarded again at once, so that a new or
    /// reachable-again owner gets their provisional values before it could
    /// sequence them from the log alone (ARCHITECTURE.md §4.3, E).
    reforward: bool,
    role: Role,
    out: Vec<SeqOutput>,
}

/// Deterministic preference of `replica` to own the ledger `key`
/// (rendezvous hashing), so that ownership spreads over the community.
fn rank_score(key: u64, replica: ReplicaId) -> u64 {
    // splitmix64 finaliser over the pair.
    let mut z = key ^ replica.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The distinguished learners an owner lists in its `Accept`s: the other
/// members with readers (those whose last `Accepted` did not say they have
/// none), if each acceptor's extra `Accepted`s to them fit in `budget`.
fn learners_of(
    me: ReplicaId,
    members: &[ReplicaId],
    unwatched: &BTreeSet<ReplicaId>,
    budget: usize,
) -> Vec<ReplicaId> {
    let acceptors = members.len().saturating_sub(1);
    let watched = members.len() - unwatched.len().min(members.len());
    // A cheap bound first: at 50 members this is the usual answer.
    if acceptors == 0 || watched.saturating_sub(1) * acceptors > budget {
        return Vec::new();
    }
    let v: Vec<ReplicaId> = members
        .iter()
        .filter(|m| **m != me && !unwatched.contains(m))
        .copied()
        .collect();
    if v.len() * acceptors > budget {
        return Vec::new();
    }
    v
}

impl Sequencer {
    /// A sequencer for the ledger `key` (any stable number naming the
    /// mailbox) among `members` (which include `me`).
    pub fn new(me: ReplicaId, members: &[ReplicaId], key: u64, params: SeqParams) -> Self {
        let mut members = members.to_vec();
        if !members.contains(&me) {
            members.push(me);
        }
        members.sort();
        members.dedup();
        Sequencer {
            me,
            members: std::sync::Arc::new(members),
            key,
            params: std::sync::Arc::new(params),
            promised: Ballot::default(),
            accepted: BTreeMap::new(),
            committed: Vec::new(),
            spaces: Spaces::new(),
            finals: FastMap::default(),
            cursor: (0, 0),
            pending: BTreeMap::new(),
            noted: BTreeMap::new(),
            doubtful: BTreeSet::new(),
            resequence: BTreeMap::new(),
            asked: BTreeSet::new(),
            claims: BTreeMap::new(),
            mine: BTreeMap::new(),
            settling: BTreeMap::new(),
            settled: false,
            last_heard: FastMap::default(),
            quorum_lost: None,
            rejoined_at: 0,
            resumed: false,
            leaderless_since: None,
            leader_seen: None,
            owner_idle: false,
            next_election: 0,
            last_resend: 0,
            last_alive: 0,
            watching: true,
            votes: BTreeMap::new(),
            unwatched: BTreeSet::new(),
            fast: Vec::new(),
            reforward: false,
            role: Role::Follower,
            out: Vec::new(),
        }
    }

    /// Rebuilds a sequencer from the records it asked to persist (in the
    /// order they were written). Decisions replayed here are reported again
    /// as outputs, so the driver can rebuild its views.
    pub fn restore(
        me: ReplicaId,
        members: &[ReplicaId],
        key: u64,
        params: SeqParams,
        records: impl IntoIterator<Item = SeqRecord>,
    ) -> Self {
        let mut s = Sequencer::new(me, members, key, params);
        for r in records {
            match r {
                SeqRecord::Promised(b) => s.promised = s.promised.max(b),
                SeqRecord::Accepted(slot, b, v) => {
                    if slot > s.commit_index() {
                        s.accepted.insert(slot, (b, v));
                    }
                }
                SeqRecord::Committed(slot, v) => {
                    if slot == s.commit_index() + 1 {
                        s.apply_committed(v);
                    }
                }
                SeqRecord::Provisional(op, uids, a) => {
                    if !s.finals.contains_key(&op) {
                        s.mine.insert(
                            op,
                            MyOp {
                                uids,
                                since: 0,
                                last_sent: 0,
                                provisional: Some(a.clone()),
                            },
                        );
                        s.pending.insert(
                            op,
                            Pending {
                                op,
                                uids,
                                provisional: Some(a.clone()),
                                waited_ms: 0,
                            },
                        );
                        s.out.push(SeqOutput::Decided {
                            op,
                            assign: a,
                            fate: Fate::Provisional,
                        });
                    }
                }
                SeqRecord::Cursor(u, m) => s.cursor = (s.cursor.0.max(u), s.cursor.1.max(m)),
                SeqRecord::Chosen(slot, b) => {
                    // Without the acceptance it names (not written, or
                    // superseded), the commit is learned again from peers.
                    let v = match s.accepted.get(&slot) {
                        Some((ab, v)) if *ab == b && slot == s.commit_index() + 1 => v.clone(),
                        _ => continue,
                    };
                    s.apply_committed(v);
                }
            }
        }
        s.accepted
            .retain(|slot, _| *slot > s.committed.len() as u64);
        s
    }

    /// Replaces the member list (sorted, including this replica): see
    /// [`crate::replica::Replica::add_member`] for when that is safe.
    pub fn set_members(&mut self, members: std::sync::Arc<Vec<ReplicaId>>) {
        debug_assert!(members.contains(&self.me));
        self.members = members;
    }

    /// Whether `r` is a member (the list is sorted: a look-up per
    /// message).
    fn is_member(&self, r: &ReplicaId) -> bool {
        self.members.binary_search(r).is_ok()
    }

    /// Whether this replica has readers of the mailbox (its user has
    /// sessions here: the replica holds the keys), so that the owner
    /// notifies it of each commit at once. Default: yes.
    pub fn set_watching(&mut self, watching: bool) {
        let became = watching && !self.watching;
        self.watching = watching;
        if became {
            self.notify_watching();
        }
    }

    /// Tells the owner this replica follows that it has readers, so that
    /// its `Accept`s (thrifty phase 2) and commit notices come to it at once:
    /// an `Accepted` for slot 0, which names no slot.
    fn notify_watching(&mut self) {
        if let Some((ballot, _)) = self.leader_seen {
            if ballot.leader != self.me && !self.is_owner() {
                self.send(
                    ballot.leader,
                    SeqMsg::Accepted {
                        ballot,
                        slot: 0,
                        watching: true,
                    },
                );
            }
        }
    }

    /// This replica.
    pub fn me(&self) -> ReplicaId {
        self.me
    }

    /// Number of committed ledger slots.
    pub fn commit_index(&self) -> Slot {
        self.committed.len() as Slot
    }

    /// The committed state of the number spaces.
    pub fn spaces(&self) -> &Spaces {
        &self.spaces
    }

    /// The final assignment of an op, if the ledger has one.
    pub fn final_of(&self, op: &OpId) -> Option<&Assign> {
        final_in(&self.finals, &self.committed, op)
    }

    /// Every op's current values that `keep` wants, by ascending MODSEQ:
    /// final ones from the ledger, and this replica's own provisional ones
    /// for ops not final yet.
    pub fn assignments(
        &self,
        keep: impl Fn(&OpId, &Assign, Fate) -> bool,
    ) -> Vec<(OpId, Assign, Fate)> {
        let finals = self
            .finals
            .keys()
            .filter_map(|op| self.final_of(op).map(|a| (op, a, Fate::Final)));
        let provisional = self
            .mine
            .iter()
            .filter_map(|(op, m)| m.provisional.as_ref().map(|a| (op, a, Fate::Provisional)));
        let mut v: Vec<(OpId, Assign, Fate)> = finals
            .chain(provisional)
            .filter(|(op, a, f)| keep(op, a, *f))
            .map(|(op, a, f)| (*op, a.clone(), f))
            .collect();
        v.sort_by_key(|(op, a, _)| (a.modseq, *op));
        v
    }

    /// Whether this replica currently leads (owns) the ledger.
    pub fn is_owner(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    /// The owner this replica currently follows, if any.
    pub fn owner(&self) -> Option<ReplicaId> {
        match &self.role {
            Role::Leader { .. } => Some(self.me),
            // A ballot of its own that it no longer leads is nobody's.
            _ => self
                .leader_seen
                .map(|(b, _)| b.leader)
                .filter(|l| *l != self.me),
        }
    }

    /// Ops this replica originated that have no final decision yet.
    pub fn undecided(&self) -> usize {
        self.mine.len()
    }

    /// Whether outputs wait to be taken.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Takes the outputs produced so far.
    pub fn drain(&mut self) -> Vec<SeqOutput> {
        std::mem::take(&mut self.out)
    }

    fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    fn broadcast(&mut self, msg: SeqMsg) {
        self.out.push(SeqOutput::Broadcast(msg));
    }

    fn send(&mut self, to: ReplicaId, msg: SeqMsg) {
        if to == self.me {
            return;
        }
        self.out.push(SeqOutput::Send { to, msg });
    }

    fn persist(&mut self, r: SeqRecord) {
        self.out.push(SeqOutput::Persist(r));
    }

    // ----- local inputs -------------------------------------------------

    /// A local op that needs `uids` UIDs (0 for a change that only needs a
    /// MODSEQ). It is broadcast so that whoever owns the ledger (now or
    /// after a failover) sequences it.
    pub fn submit(&mut self, now: u64, op: OpId, uids: u32) {
        if self.finals.contains_key(&op) || self.mine.contains_key(&op) {
            return;
        }
        self.mine.insert(
            op,
            MyOp {
                uids,
                since: now,
                last_sent: now,
                provisional: None,
            },
        );
        let p = Pending {
            op,
            uids,
            provisional: None,
            waited_ms: 0,
        };
        self.pending.insert(op, p.clone());
        self.forward(now, vec![p]);
        self.lead(now);
    }

    /// An op of this ledger's log arrived (by any path): if it needs values
    /// and has none final, it is pending, so that an owner that never got its
    /// origin's `Forward` still sequences it.
    pub fn note_op(&mut self, now: u64, op: OpId, uids: u32) {
        if self.finals.contains_key(&op) || self.pending.contains_key(&op) {
            return;
        }
        // Its origin's Forward (with its provisional values, if it made any)
        // may be on its way: sequence it only if that does not come in time.
        self.noted.entry(op).or_insert((uids, now, now));
    }

    /// After a restart: an op of this ledger's log, found in the store, that
    /// has no final decision. This replica's own ops wait again (they were
    /// submitted before the crash, maybe never forwarded); others' are noted
    /// (their origin may be gone). Their clocks start at the next tick.
    pub fn resume(&mut self, op: OpId, uids: u32) {
        if self.finals.contains_key(&op)
            || self.mine.contains_key(&op)
            || self.pending.contains_key(&op)
        {
            return;
        }
        self.resumed = true;
        if op.origin == self.me {
            self.mine.insert(
                op,
                MyOp {
                    uids,
                    since: RESUMED,
                    last_sent: 0,
                    provisional: None,
                },
            );
            self.pending.insert(
                op,
                Pending {
                    op,
                    uids,
                    provisional: None,
                    waited_ms: 0,
                },
            );
        } else {
            self.noted.entry(op).or_insert((uids, RESUMED, RESUMED));
        }
    }

    /// Keeps, of this replica's own ops that got a final value, those its
    /// view still holds (`unshown`): they may get provisional values (L1).
    /// A driver with views calls it before each [`Sequencer::tick`].
    pub fn settle(&mut self, unshown: impl Fn(&OpId) -> bool) {
        self.settled = true;
        if !self.settling.is_empty() {
            self.settling.retain(|op, _| unshown(op));
        }
    }

    /// Whether some of this replica's own ops got a final value that its
    /// view may not show yet (what [`Sequencer::settle`] sorts out).
    pub fn is_settling(&self) -> bool {
        !self.settling.is_empty()
    }

    /// A known op whose final values this replica cannot expose (they are not
    /// above what it already exposed): ask the owner for new ones.
    pub fn request_resequence(&mut self, now: u64, op: OpId, above_uid: u64, above_modseq: u64) {
        let e = self.resequence.entry(op).or_insert((0, 0));
        e.0 = e.0.max(above_uid);
        e.1 = e.1.max(above_modseq);
        let (above_uid, above_modseq) = *e;
        self.asked.insert(op);
        if self.is_owner() {
            if let Some(a) = self.settling.get(&op).and_then(|m| m.provisional.clone()) {
                self.claims.insert(op, a);
            }
        }
        let msg = SeqMsg::Resequence {
            ops: vec![op],
            above_uid,
            above_modseq,
            provisional: self.my_provisional(),
        };
        match self.owner() {
            Some(o) if o == self.me => self.lead(now),
            Some(o) => self.send(o, msg),
            None => self.broadcast(msg),
        }
    }

    /// Time passes. `exposed` is what this replica has exposed to clients
    /// (highest UID, highest MODSEQ): provisional values must exceed it.
    pub fn tick(&mut self, now: u64, exposed: (u64, u64)) {
        if std::mem::take(&mut self.resumed) {
            for m in self.mine.values_mut().filter(|m| m.since == RESUMED) {
                m.since = now;
            }
            for (_, since, first) in self.noted.values_mut().filter(|(_, t, _)| *t == RESUMED) {
                *since = now;
                *first = now;
            }
        }
        self.maybe_elect(now);
        self.retry_mine(now, exposed);
        self.lead(now);
    }

    // ----- origin side --------------------------------------------------

    /// This replica's own ops that carry a provisional assignment.
    /// Lowest values first: the owner confirms provisional values in
    /// ascending order, so it must learn them from the lowest up.
    fn my_provisional(&self) -> Vec<Pending> {
        let mut v: Vec<Pending> = self
            .mine
            .iter()
            .chain(self.settling.iter())
            .filter_map(|(op, m)| {
                m.provisional.clone().map(|a| Pending {
                    op: *op,
                    uids: m.uids,
                    provisional: Some(a),
                    waited_ms: 0,
                })
            })
            .collect();
        v.sort_by_key(|p| p.provisional.as_ref().map(|a| a.modseq));
        v.truncate(self.params.max_batch);
        v
    }

    /// Every op of this replica still waiting for a final decision, as it
    /// forwards them: provisional ones first, by ascending values, so that
    /// an owner never confirms one of them before a lower one (which it
    /// could then no longer confirm).
    fn all_mine(&self, now: u64) -> Vec<Pending> {
        let mut v: Vec<Pending> = self
            .mine
            .iter()
            .map(|(op, m)| Pending {
                op: *op,
                uids: m.uids,
                provisional: m.provisional.clone(),
                waited_ms: now.saturating_sub(m.since),
            })
            .collect();
        v.sort_by_key(|p| match &p.provisional {
            Some(a) => (0, a.modseq),
            None => (1, 0),
        });
        v
    }

    fn forward_all_mine(&mut self, now: u64) {
        for m in self.mine.values_mut() {
            m.last_sent = now;
        }
        let all = self.all_mine(now);
        for chunk in all.chunks(self.params.max_batch.max(1)) {
            self.forward(now, chunk.to_vec());
        }
    }

    /// Sends ops to the owner, when one was heard lately; to every member
    /// otherwise. Only the owner uses a Forward (the others learn the op from
    /// its log and note it); a new owner gets them again when this replica
    /// first hears it (`reforward`).
    fn forward(&mut self, now: u64, ops: Vec<Pending>) {
        let msg = SeqMsg::Forward { ops, sent_ms: now };
        match self.leader_seen {
            _ if self.is_owner() => {}
            Some((b, seen))
                if b.leader != self.me && now.saturating_sub(seen) < self.owner_timeout() =>
            {
                self.send(b.leader, msg)
            }
            _ => self.broadcast(msg),
        }
    }

    fn retry_mine(&mut self, now: u64, exposed: (u64, u64)) {
        let timeout = self.params.forward_timeout_ms;
        let late: Vec<OpId> = self
            .mine
            .iter()
            .filter(|(_, m)| m.provisional.is_none() && now.saturating_sub(m.since) >= timeout)
            .map(|(op, _)| *op)
            .collect();
        if !std::mem::take(&mut self.settled) {
            self.settling.clear();
        }
        let held: Vec<OpId> = self
            .settling
            .iter()
            .filter(|(_, m)| m.provisional.is_none() && now.saturating_sub(m.since) >= timeout)
            .map(|(op, _)| *op)
            .collect();
        for op in held {
            // Its final value exists: the owner need not decide, only a
            // usable reservation is missing (used up, or overtaken by the
            // values this replica learned). Try again at every tick until one
            // is there or the view shows the op (`settle`): a new reservation
            // comes with the owner's next commit, not a timeout later.
            self.try_provisional(op, exposed);
        }
        let mut made = false;
        for op in late {
            if self.try_provisional(op, exposed) {
                made = true;
            } else {
                // No usable reservation: try again a full timeout later (a
                // reservation that appears now comes from an owner that is
                // working again, and has this op; give it the time to decide).
                if let Some(m) = self.mine.get_mut(&op) {
                    m.since = now;
                }
            }
        }
        let any_due = self
            .mine
            .values()
            .any(|m| now.saturating_sub(m.last_sent) >= timeout);
        // An op just shown with provisional values goes to a live owner at
        // once, for it to confirm them before it gives values above them.
        let owner_heard = self.leader_seen.is_some_and(|(b, seen)| {
            b.leader != self.me && now.saturating_sub(seen) < self.owner_timeout()
        });
        // All of them, not only those due: the owner must see every
        // provisional value of this replica together (see `all_mine`).
        if any_due || (made && owner_heard) {
            self.forward_all_mine(now);
        }
        if self.asked.is_empty() || now.saturating_sub(self.last_resend) < timeout {
            return;
        }
        self.last_resend = now;
        let wanted: Vec<(OpId, (u64, u64))> = self
            .asked
            .iter()
            .filter_map(|op| self.resequence.get(op).map(|v| (*op, *v)))
            .collect();
        for (op, (u, m)) in wanted {
            let msg = SeqMsg::Resequence {
                ops: vec![op],
                above_uid: u,
                above_modseq: m,
                provisional: self.my_provisional(),
            };
            match self.owner() {
                Some(o) if o == self.me => {}
                Some(o) => self.send(o, msg),
                None => self.broadcast(msg),
            }
        }
    }

    /// Assigns an op from this replica's own reservation, if it has room
    /// above what it exposed. Persisted before it is reported.
    fn try_provisional(&mut self, op: OpId, exposed: (u64, u64)) -> bool {
        let Some(r) = self.spaces.reservation_of(self.me).cloned() else {
            return false;
        };
        let Some(n) = self
            .mine
            .get(&op)
            .or_else(|| self.settling.get(&op))
            .map(|m| m.uids)
        else {
            return false;
        };
        let ustart = self
            .cursor
            .0
            .max(r.uids.lo)
            .max(exposed.0 + 1)
            .max(self.spaces.max_uid + 1);
        let mstart = self
            .cursor
            .1
            .max(r.modseqs.lo)
            .max(exposed.1 + 1)
            .max(self.spaces.max_modseq + 1);
        if ustart + n as u64 > r.uids.hi || mstart >= r.modseqs.hi {
            return false; // reservation used up or overtaken: wait for the owner
        }
        let assign = Assign {
            modseq: mstart,
            uids: (ustart..ustart + n as u64).map(|u| u as u32).collect(),
        };
        self.cursor = (ustart + n as u64, mstart + 1);
        self.persist(SeqRecord::Cursor(self.cursor.0, self.cursor.1));
        self.persist(SeqRecord::Provisional(op, n, assign.clone()));
        if let Some(m) = self.mine.get_mut(&op) {
            m.provisional = Some(assign.clone());
        }
        if let Some(m) = self.settling.get_mut(&op) {
            m.provisional = Some(assign.clone());
        }
        if let Some(p) = self.pending.get_mut(&op) {
            p.provisional = Some(assign.clone());
        }
        self.out.push(SeqOutput::Decided {
            op,
            assign,
            fate: Fate::Provisional,
        });
        true
    }

    // ----- peer input ---------------------------------------------------

    /// A message from member `from`.
    pub fn handle(&mut self, now: u64, from: ReplicaId, msg: SeqMsg) {
        if from == self.me || !self.is_member(&from) {
            return;
        }
        self.last_heard.insert(from, now);
        match msg {
            SeqMsg::Forward { ops, sent_ms } => {
                self.on_forward(now, from, ops, now.saturating_sub(sent_ms))
            }
            SeqMsg::Resequence {
                ops,
                above_uid,
                above_modseq,
                provisional,
            } => {
                for p in &provisional {
                    let claim = p.provisional.as_ref().filter(|a| {
                        p.op.origin == from
                            && self.finals.contains_key(&p.op)
                            && self.provisional_is_valid(from, p.uids, a)
                    });
                    if let Some(a) = claim {
                        self.claims.insert(p.op, a.clone());
                    }
                }
                self.on_forward(now, from, provisional, 0);
                for op in ops.into_iter().take(self.params.max_batch.max(1)) {
                    // A late or repeated request that the ledger already met
                    // (the op's final values are above those marks) would
                    // re-announce the message once more.
                    let met = self.final_of(&op).is_some_and(|a| {
                        a.modseq > above_modseq && a.uids.iter().all(|&u| u as u64 > above_uid)
                    });
                    if met {
                        continue;
                    }
                    let e = self.resequence.entry(op).or_insert((0, 0));
                    e.0 = e.0.max(above_uid);
                    e.1 = e.1.max(above_modseq);
                }
            }
            SeqMsg::Prepare { ballot, commit } => self.on_prepare(from, ballot, commit),
            SeqMsg::Promise {
                ballot,
                committed,
                accepted,
                truncated,
            } => self.on_promise(now, from, ballot, committed, accepted, truncated),
            SeqMsg::Accept {
                ballot,
                slot,
                value,
                commit,
                learners,
            } => self.on_accept(now, from, ballot, slot, value, commit, &learners),
            SeqMsg::Accepted {
                ballot,
                slot,
                watching,
            } => {
                if watching {
                    self.unwatched.remove(&from);
                } else {
                    self.unwatched.insert(from);
                }
                self.on_accepted(now, from, ballot, slot)
            }
            SeqMsg::Nack { promised } => self.on_nack(now, promised),
            SeqMsg::Heartbeat {
                ballot,
                commit,
                idle,
            } => {
                if ballot >= self.promised {
                    self.follow(now, ballot);
                    if self.leader_seen.is_some_and(|(b, _)| b == ballot) {
                        self.owner_idle = idle;
                    }
                    // A member with readers that missed the slots' `Accept`s
                    // may be one the owner takes as without readers (the
                    // notice of `set_watching` was lost): it says so again.
                    if self.learn_commit(from, ballot, commit) && self.watching {
                        self.notify_watching();
                    }
                } else if ballot.leader == from {
                    // A deposed owner that proposes nothing (it waits for
                    // ops it may not sequence yet) and cannot hear its
                    // successor would otherwise never learn it was deposed.
                    let promised = self.promised;
                    self.send(from, SeqMsg::Nack { promised });
                }
            }
            SeqMsg::Alive { commit } => {
                // A member lost the owner: the idle owner's longer silence is
                // no longer waited for (an origin with work starts the
                // failover, see `maybe_elect`).
                self.owner_idle = false;
                if commit < self.commit_index() {
                    self.on_pull(from, commit + 1);
                }
            }
            SeqMsg::Pull { from: slot } => self.on_pull(from, slot),
            SeqMsg::Entries { from: slot, values } => self.on_entries(slot, values),
        }
        if std::mem::take(&mut self.reforward) && !self.mine.is_empty() && !self.is_owner() {
            self.forward_all_mine(now);
        }
        self.lead(now);
    }

    /// Ops from their origin, in a message `age_ms` old (by the origin's
    /// clock against this one's). An op without provisional values that has
    /// them by now, unless its origin had no usable reservation — its wait
    /// at the origin plus the message's age reach `forward_timeout`, as when
    /// a cut link held the message until the heal, before the origin's
    /// fresh Forward — is *doubtful*: it is only noted, as one known
    /// from the log, until a newer Forward says more or the noted op's
    /// timeout passes. Meanwhile the owner takes no values from its counters
    /// that would pass the origin's reservation (`lead`), which would leave
    /// the op's provisional values unconfirmable (E).
    fn on_forward(&mut self, now: u64, from: ReplicaId, ops: Vec<Pending>, age_ms: u64) {
        let timeout = self.params.forward_timeout_ms;
        for p in ops.into_iter().take(self.params.max_batch.max(1)) {
            if p.op.origin != from {
                continue; // only an op's origin may announce it
            }
            if self.finals.contains_key(&p.op) {
                continue;
            }
            let waited = p.waited_ms.saturating_add(age_ms);
            if p.provisional.is_none() && waited >= timeout {
                if !self.pending.contains_key(&p.op) {
                    self.noted.entry(p.op).or_insert((p.uids, now, now));
                    self.doubtful.insert(p.op);
                }
                continue;
            }
            self.doubtful.remove(&p.op);
            // Another replica's provisional values are not exposed here (they
            // would overtake this replica's own reservation); they matter to
            // the owner, which may confirm them.
            let mut p = p;
            if p.provisional
                .as_ref()
                .is_some_and(|a| !self.provisional_is_valid(p.op.origin, p.uids, a))
            {
                p.provisional = None;
            }
            self.noted.remove(&p.op);
            match self.pending.get_mut(&p.op) {
                Some(q) => {
                    if p.provisional.is_some() {
                        q.provisional = p.provisional;
                    }
                }
                None => {
                    self.pending.insert(p.op, p);
                }
            }
        }
    }

    /// A provisional claim is only believed when its values lie in a
    /// reservation of the claiming replica that this replica knows.
    fn provisional_is_valid(&self, origin: ReplicaId, uids: u32, a: &Assign) -> bool {
        if a.uids.len() != uids as usize {
            return false;
        }
        let Some(m) = self.spaces.modseq_owner(a.modseq) else {
            return false;
        };
        if m.replica != origin {
            return false;
        }
        a.uids.iter().all(|&u| {
            self.spaces
                .uid_owner(u as u64)
                .is_some_and(|r| r.replica == origin)
        })
    }

    fn on_prepare(&mut self, from: ReplicaId, ballot: Ballot, commit: Slot) {
        if ballot.leader != from || ballot <= self.promised {
            let promised = self.promised;
            self.send(from, SeqMsg::Nack { promised });
            return;
        }
        self.promised = ballot;
        self.persist(SeqRecord::Promised(ballot));
        if !matches!(self.role, Role::Follower) {
            self.role = Role::Follower;
        }
        let cap = self.params.max_slots_per_message;
        let mine = self.commit_index();
        let committed: Vec<Value> = self
            .committed
            .iter()
            .skip(commit as usize)
            .take(cap)
            .cloned()
            .collect();
        let truncated = mine.saturating_sub(commit) as usize > cap;
        let accepted: Vec<(Slot, Ballot, Value)> = if truncated {
            Vec::new()
        } else {
            self.accepted
                .iter()
                .take(cap)
                .map(|(s, (b, v))| (*s, *b, v.clone()))
                .collect()
        };
        self.send(
            from,
            SeqMsg::Promise {
                ballot,
                committed,
                accepted,
                truncated,
            },
        );
    }

    fn on_promise(
        &mut self,
        now: u64,
        from: ReplicaId,
        ballot: Ballot,
        committed: Vec<Value>,
        accepted: Vec<(Slot, Ballot, Value)>,
        truncated: bool,
    ) {
        let Role::Candidate {
            ballot: mine,
            promises,
            ..
        } = &mut self.role
        else {
            return;
        };
        if ballot != *mine {
            return;
        }
        if truncated {
            // Too far behind to lead: catch up first.
            self.role = Role::Follower;
            let from_slot = self.commit_index() + 1;
            self.send(from, SeqMsg::Pull { from: from_slot });
            return;
        }
        promises.insert(from, (committed, accepted));
        if promises.len() + 1 >= self.majority() {
            let Role::Candidate { promises, base, .. } =
                std::mem::replace(&mut self.role, Role::Follower)
            else {
                return;
            };
            self.become_leader(now, ballot, base, promises);
        }
    }

    fn become_leader(&mut self, now: u64, ballot: Ballot, base: Slot, promises: Promises) {
        // Values some promiser knows committed are chosen: adopt them in order.
        let mut longest: Vec<Value> = Vec::new();
        for (c, _) in promises.values() {
            if c.len() > longest.len() {
                longest = c.clone();
            }
        }
        // Promisers answered relative to the commit index we sent; we may
        // have learned more since. Skip what we already have.
        let already = self.commit_index().saturating_sub(base) as usize;
        for v in longest.into_iter().skip(already) {
            let slot = self.commit_index() + 1;
            self.persist(SeqRecord::Committed(slot, v.clone()));
            self.apply_committed(v);
        }
        // For every later slot, the value accepted with the highest ballot.
        let mut chosen: BTreeMap<Slot, (Ballot, Value)> = BTreeMap::new();
        let own: Vec<(Slot, Ballot, Value)> = self
            .accepted
            .iter()
            .map(|(s, (b, v))| (*s, *b, v.clone()))
            .collect();
        for (s, b, v) in promises
            .values()
            .flat_map(|(_, a)| a.iter().cloned())
            .chain(own)
        {
            if s <= self.commit_index() {
                continue;
            }
            match chosen.get(&s) {
                Some((cb, _)) if *cb >= b => {}
                _ => {
                    chosen.insert(s, (b, v));
                }
            }
        }
        let last = chosen
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.commit_index());
        let mut tentative = self.spaces.clone();
        let mut proposed = BTreeSet::new();
        let mut inflight = BTreeMap::new();
        for slot in self.commit_index() + 1..=last {
            let value = chosen.remove(&slot).map(|(_, v)| v).unwrap_or_default();
            apply_to_spaces(&mut tentative, &value);
            for d in value.iter() {
                if let Decision::Sequence { op, .. } = d {
                    proposed.insert(*op);
                }
            }
            inflight.insert(
                slot,
                Inflight {
                    value,
                    acks: BTreeSet::new(),
                    learners: Vec::new(),
                    since: now,
                    targets: None,
                },
            );
        }
        // Who answered fast under another ballot says nothing here: the
        // first slots go to every member.
        self.fast.clear();
        self.role = Role::Leader {
            ballot,
            next_slot: last + 1,
            inflight,
            tentative,
            proposed,
            last_beat: now,
            beat_idle: false,
            last_proposed: None,
            ahead_at: None,
        };
        self.leader_seen = Some((ballot, now));
        let slots: Vec<(Slot, Value)> = match &self.role {
            Role::Leader { inflight, .. } => inflight
                .iter()
                .map(|(s, i)| (*s, i.value.clone()))
                .collect(),
            _ => Vec::new(),
        };
        for (slot, value) in slots {
            self.propose(now, ballot, slot, value);
        }
        let commit = self.commit_index();
        self.broadcast(SeqMsg::Heartbeat {
            ballot,
            commit,
            idle: false,
        });
    }

    /// Sends a slot's value to every member and accepts it locally.
    fn propose(&mut self, now: u64, ballot: Ballot, slot: Slot, value: Value) {
        self.accepted.insert(slot, (ballot, value.clone()));
        self.persist(SeqRecord::Accepted(slot, ballot, value.clone()));
        let commit = self.commit_index();
        let learners = learners_of(
            self.me,
            &self.members,
            &self.unwatched,
            self.params.learner_budget,
        );
        let targets = self.accept_targets(now, &value);
        let msg = SeqMsg::Accept {
            ballot,
            slot,
            value,
            commit,
            learners: learners.clone(),
        };
        match &targets {
            None => self.broadcast(msg),
            Some(t) => {
                for to in t {
                    self.send(*to, msg.clone());
                }
            }
        }
        let me = self.me;
        if let Role::Leader { inflight, .. } = &mut self.role {
            if let Some(i) = inflight.get_mut(&slot) {
                i.acks.insert(me);
                i.learners = learners;
                i.targets = targets;
            }
        }
        if self.params.unsafe_commit_without_majority {
            self.on_accepted_inner(now, me, ballot, slot, true);
        } else {
            self.on_accepted_inner(now, me, ballot, slot, false);
        }
    }

    /// The members a slot's `Accept` goes to (thrifty phase 2), or `None`
    /// for every member: the members with readers (they want the commit at
    /// once; the listed learners are among them), the replicas the value's
    /// decisions are for (the origins waiting for their ops, the holders of
    /// new reservations), then the acceptors that made the last slot's
    /// majority and the members heard lately, until a majority and `accept_spare` more are reached. Any
    /// majority of acceptances chooses a value (Paxos): the set only decides
    /// who hears first. Without a last majority to go by (a new ballot), or
    /// when the set would be nearly everyone, every member.
    fn accept_targets(&self, now: u64, value: &[Decision]) -> Option<Vec<ReplicaId>> {
        if !self.params.thrifty_accept {
            return None;
        }
        let others = self.members.len().saturating_sub(1);
        let needed = (self.majority() - 1).saturating_add(self.params.accept_spare);
        if needed >= others || self.fast.len() + 1 < self.majority() {
            return None;
        }
        let me = self.me;
        let mut t: Vec<ReplicaId> = self
            .members
            .iter()
            .filter(|m| **m != me && !self.unwatched.contains(m))
            .copied()
            .collect();
        for d in value {
            let r = match d {
                Decision::Sequence { op, .. } => op.origin,
                Decision::Reserve(r) => r.replica,
            };
            if r != me && !t.contains(&r) && self.is_member(&r) {
                t.push(r);
            }
        }
        // Then the members heard lately (the spare that answered after
        // the majority, say), then any.
        let timeout = self.params.election_timeout_ms;
        let heard = |m: &&ReplicaId| {
            self.last_heard
                .get(*m)
                .is_some_and(|t| now.saturating_sub(*t) < timeout)
        };
        let fill = self
            .fast
            .iter()
            .chain(self.members.iter().filter(heard))
            .chain(self.members.iter());
        for f in fill {
            if t.len() >= needed {
                break;
            }
            if *f != me && !t.contains(f) && self.is_member(f) {
                t.push(*f);
            }
        }
        if t.len() >= others {
            return None;
        }
        t.sort();
        Some(t)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_accept(
        &mut self,
        now: u64,
        from: ReplicaId,
        ballot: Ballot,
        slot: Slot,
        value: Value,
        commit: Slot,
        learners: &[ReplicaId],
    ) {
        if ballot.leader != from || ballot < self.promised {
            let promised = self.promised;
            self.send(from, SeqMsg::Nack { promised });
            return;
        }
        if ballot > self.promised {
            self.promised = ballot;
            self.persist(SeqRecord::Promised(ballot));
        }
        self.follow(now, ballot);
        if slot > self.commit_index() {
            self.accepted.insert(slot, (ballot, value.clone()));
            self.persist(SeqRecord::Accepted(slot, ballot, value));
        }
        let watching = self.watching;
        let msg = SeqMsg::Accepted {
            ballot,
            slot,
            watching,
        };
        // At most one learner per member: the list comes from the network.
        for l in learners.iter().take(self.members.len()) {
            if *l != from && *l != self.me && self.is_member(l) {
                self.send(*l, msg.clone());
            }
        }
        self.send(from, msg);
        self.learn_commit(from, ballot, commit);
        if learners.contains(&self.me) {
            // The owner accepted its own value, and so did this replica.
            self.vote(from, ballot, slot);
            let me = self.me;
            self.vote(me, ballot, slot);
        }
    }

    fn on_accepted(&mut self, now: u64, from: ReplicaId, ballot: Ballot, slot: Slot) {
        match &self.role {
            Role::Leader { ballot: mine, .. } if *mine == ballot => {
                self.on_accepted_inner(now, from, ballot, slot, false)
            }
            _ => self.vote(from, ballot, slot),
        }
    }

    /// Learner side: `from` accepted `slot` in `ballot`. Commits the slots
    /// above the commit index, in order, that a majority accepted in the
    /// ballot of the value this replica accepted for them: Paxos's chosen
    /// values, which every later owner re-proposes.
    fn vote(&mut self, from: ReplicaId, ballot: Ballot, slot: Slot) {
        let commit = self.commit_index();
        // Only slots an owner can have in flight now; the rest comes with
        // the commit notice or a `Pull`.
        let window = 4 * self.params.max_inflight.max(1) as Slot;
        if slot <= commit || slot > commit + window {
            return;
        }
        let e = self
            .votes
            .entry(slot)
            .or_insert_with(|| (ballot, BTreeSet::new()));
        if ballot > e.0 {
            *e = (ballot, BTreeSet::new());
        }
        if ballot == e.0 {
            e.1.insert(from);
        }
        let majority = self.majority();
        loop {
            let slot = self.commit_index() + 1;
            let (ballot, chosen) = match (self.votes.get(&slot), self.accepted.get(&slot)) {
                (Some((b, acks)), Some((ab, v))) if acks.len() >= majority && ab == b => {
                    (*ab, v.clone())
                }
                _ => break,
            };
            self.persist(SeqRecord::Chosen(slot, ballot));
            self.apply_committed(chosen);
        }
    }

    fn on_accepted_inner(
        &mut self,
        now: u64,
        from: ReplicaId,
        ballot: Ballot,
        slot: Slot,
        force: bool,
    ) {
        let majority = self.majority();
        let Role::Leader {
            ballot: mine,
            inflight,
            ..
        } = &mut self.role
        else {
            return;
        };
        if ballot != *mine {
            return;
        }
        if let Some(i) = inflight.get_mut(&slot) {
            i.acks.insert(from);
        }
        // Commit the contiguous prefix of slots acknowledged by a majority.
        let mut newly = Vec::new();
        let mut next = self.committed.len() as Slot + 1;
        let mut fast = None;
        while let Some(i) = inflight.get(&next) {
            if i.acks.len() < majority && !force {
                break;
            }
            if let Some(i) = inflight.remove(&next) {
                fast = Some(i.acks);
                newly.push((next, i.value, i.learners));
            }
            next += 1;
        }
        if newly.is_empty() {
            return;
        }
        if let Some(acks) = fast {
            let me = self.me;
            self.fast = acks.into_iter().filter(|a| *a != me).collect();
        }
        // The learners listed for every one of these slots learn the commit
        // from the acceptors (one hop, where the notice takes two): they
        // get no notice; the next Accept or Heartbeat still carries it.
        let mut learned: BTreeSet<ReplicaId> = newly[0].2.iter().copied().collect();
        for (_, _, l) in &newly[1..] {
            learned.retain(|m| l.contains(m));
        }
        // Who waits for these slots: the origins of their ops (a local action
        // is acknowledged when its op is shown) and the replicas they reserve
        // for. They hear of the commit at once; every other member learns it
        // from the next Accept or the periodic Heartbeat (at most
        // `heartbeat_ms` later), which saves a broadcast per commit.
        let mut waiting = BTreeSet::new();
        for (slot, v, _) in newly {
            for d in v.iter() {
                waiting.insert(match d {
                    Decision::Sequence { op, .. } => op.origin,
                    Decision::Reserve(r) => r.replica,
                });
            }
            // The owner accepted each of them in this ballot (`propose`).
            self.persist(SeqRecord::Chosen(slot, ballot));
            self.apply_committed(v);
        }
        let commit = self.commit_index();
        let notice = self.params.commit_notice_ms;
        // What the last periodic Heartbeat promised still holds.
        let idle = matches!(
            self.role,
            Role::Leader {
                beat_idle: true,
                ..
            }
        );
        if notice == 0 {
            // The notice goes to the members with readers of this mailbox
            // and to the waiting ones, once each; the others learn the
            // commit from the next Accept or periodic Heartbeat. When that
            // is every member, it is the periodic Heartbeat.
            let members = self.members.clone();
            for to in members.iter() {
                if (waiting.contains(to) || !self.unwatched.contains(to)) && !learned.contains(to) {
                    self.send(
                        *to,
                        SeqMsg::Heartbeat {
                            ballot,
                            commit,
                            idle,
                        },
                    );
                }
            }
            if self.unwatched.is_empty() && learned.is_empty() {
                if let Role::Leader { last_beat, .. } = &mut self.role {
                    *last_beat = now;
                }
            }
            return;
        }
        for to in waiting.into_iter().filter(|w| !learned.contains(w)) {
            self.send(
                to,
                SeqMsg::Heartbeat {
                    ballot,
                    commit,
                    idle,
                },
            );
        }
        // The others hear of it with the next Heartbeat, brought forward to
        // `commit_notice_ms` from now: a session on another node shows new
        // mail within that delay, and the commits of that interval share one
        // broadcast.
        let heartbeat = self.params.heartbeat_ms;
        if let Role::Leader {
            last_beat,
            beat_idle,
            ..
        } = &mut self.role
        {
            let due = (now + notice).saturating_sub(heartbeat);
            *last_beat = (*last_beat).min(due);
            *beat_idle = false;
        }
    }

    fn on_nack(&mut self, now: u64, promised: Ballot) {
        if promised > self.promised {
            self.promised = promised;
            self.persist(SeqRecord::Promised(promised));
        }
        let stale = match &self.role {
            Role::Leader { ballot, .. } | Role::Candidate { ballot, .. } => *ballot < promised,
            Role::Follower => false,
        };
        if stale {
            self.role = Role::Follower;
            self.next_election = now + self.backoff();
        }
    }

    fn on_pull(&mut self, from: ReplicaId, slot: Slot) {
        let start = slot.max(1) as usize - 1;
        let values: Vec<Value> = self
            .committed
            .iter()
            .skip(start)
            .take(self.params.max_slots_per_message)
            .cloned()
            .collect();
        if !values.is_empty() {
            self.send(
                from,
                SeqMsg::Entries {
                    from: start as Slot + 1,
                    values,
                },
            );
        }
    }

    fn on_entries(&mut self, from: Slot, values: Vec<Value>) {
        for (i, v) in values.into_iter().enumerate() {
            let slot = from + i as Slot;
            if slot == self.commit_index() + 1 {
                self.persist(SeqRecord::Committed(slot, v.clone()));
                self.apply_committed(v);
            }
        }
        self.accepted
            .retain(|s, _| *s > self.committed.len() as Slot);
    }

    /// Learns the leader's commit index: commits the slots this replica
    /// accepted under the same ballot, and pulls the others (then says
    /// whether it had to).
    fn learn_commit(&mut self, from: ReplicaId, ballot: Ballot, commit: Slot) -> bool {
        while self.commit_index() < commit {
            let slot = self.commit_index() + 1;
            match self.accepted.get(&slot) {
                Some((b, v)) if *b == ballot => {
                    let v = v.clone();
                    self.persist(SeqRecord::Chosen(slot, ballot));
                    self.apply_committed(v);
                }
                _ => {
                    self.send(from, SeqMsg::Pull { from: slot });
                    return true;
                }
            }
        }
        false
    }

    fn follow(&mut self, now: u64, ballot: Ballot) {
        match &self.role {
            Role::Leader { ballot: b, .. } | Role::Candidate { ballot: b, .. } if *b < ballot => {
                self.role = Role::Follower;
            }
            _ => {}
        }
        if self.leader_seen.is_none_or(|(b, _)| b <= ballot) {
            let silent = self.owner_timeout();
            let new = self.leader_seen.is_none_or(|(b, _)| b != ballot);
            if new
                || self
                    .leader_seen
                    .is_some_and(|(_, seen)| now.saturating_sub(seen) >= silent)
            {
                self.reforward = true;
            }
            if new {
                self.owner_idle = false;
            }
            self.leader_seen = Some((ballot, now));
        }
    }

    /// Applies a committed value: the ledger's word on every replica.
    fn apply_committed(&mut self, value: Value) {
        let slot = self.committed.len() as Slot + 1;
        self.accepted.remove(&slot);
        self.votes.remove(&slot);
        // A leader can learn a commit from a peer (the answer to a `Pull` it
        // sent before it was elected): the slot it re-proposed holds the same
        // value (Paxos), and must leave its in-flight window, or a full
        // window of such slots stops it for good (L2, chaos seed 249).
        if let Role::Leader {
            inflight,
            next_slot,
            ..
        } = &mut self.role
        {
            inflight.remove(&slot);
            *next_slot = (*next_slot).max(slot + 1);
        }
        let at = self.committed.len() as u64;
        for (pos, d) in value.iter().enumerate() {
            if !apply_decision(&mut self.spaces, d) {
                // A stale proposal re-proposed after a leader change (see
                // `apply_decision`): the op, if it has no final value yet,
                // stays pending and is sequenced again.
                if let (Decision::Sequence { op, .. }, Role::Leader { proposed, .. }) =
                    (d, &mut self.role)
                {
                    proposed.remove(op);
                }
                continue;
            }
            match d {
                Decision::Sequence { op, assign } => {
                    let pos = pos as u32;
                    self.finals.insert(*op, At { slot: at, pos });
                    if let Role::Leader { proposed, .. } = &mut self.role {
                        proposed.remove(op);
                    }
                    self.pending.remove(op);
                    self.noted.remove(op);
                    self.doubtful.remove(op);
                    if let Some(m) = self.mine.remove(op) {
                        self.settling.insert(*op, m);
                    }
                    // A claim kept is what its origin shows: its request is met.
                    let claimed = self.claims.remove(op).as_ref() == Some(assign);
                    if let Some((u, m)) = self.resequence.get(op) {
                        let above =
                            assign.modseq > *m && assign.uids.iter().all(|&x| x as u64 > *u);
                        if above || claimed {
                            self.resequence.remove(op);
                            self.asked.remove(op);
                        }
                    }
                    self.out.push(SeqOutput::Decided {
                        op: *op,
                        assign: assign.clone(),
                        fate: Fate::Final,
                    });
                }
                Decision::Reserve(r) => {
                    if r.replica == self.me {
                        self.cursor = (r.uids.lo, r.modseqs.lo);
                    }
                }
            }
        }
        self.committed.push(value);
    }

    // ----- ownership ----------------------------------------------------

    /// This replica waits for the owner: own ops without a final value, or
    /// values to re-announce.
    fn has_work(&self) -> bool {
        !self.mine.is_empty() || !self.resequence.is_empty()
    }

    /// How long the followed owner may stay silent before this replica
    /// takes it as lost: `election_timeout`, plus, while this replica has no
    /// work, the longer period an idle owner announced (its next Heartbeat
    /// may come that much later). `idle_heartbeat_ms` stays below
    /// `election_timeout`, so an idle owner is never taken as lost by a
    /// replica that waits for it.
    fn owner_timeout(&self) -> u64 {
        let p = &self.params;
        let extra = if self.owner_idle && !self.has_work() {
            p.idle_heartbeat_ms.saturating_sub(p.heartbeat_ms)
        } else {
            0
        };
        p.election_timeout_ms + extra
    }

    fn backoff(&self) -> u64 {
        let alive = self.alive_ranked();
        let pos = alive
            .iter()
            .position(|r| *r == self.me)
            .unwrap_or(alive.len()) as u64;
        self.params.election_timeout_ms * (1 + pos)
    }

    /// Members heard from recently (and this replica), best candidate first.
    fn alive_ranked(&self) -> Vec<ReplicaId> {
        let mut v: Vec<ReplicaId> = self
            .members
            .iter()
            .copied()
            .filter(|r| *r == self.me || self.last_heard.contains_key(r))
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(rank_score(self.key, *r)));
        v
    }

    fn maybe_elect(&mut self, now: u64) {
        let timeout = self.params.election_timeout_ms;
        match &self.role {
            Role::Leader { .. } => return,
            Role::Candidate { since, .. } => {
                if now.saturating_sub(*since) < timeout {
                    return;
                }
                self.role = Role::Follower;
                self.next_election = now + self.backoff();
                return;
            }
            Role::Follower => {}
        }
        if let Some((_, seen)) = self.leader_seen {
            if now.saturating_sub(seen) < self.owner_timeout() {
                self.quorum_lost = None; // an owner is heard: not cut off
                self.leaderless_since = None;
                return;
            }
        }
        // (Tracked only while no owner is heard: that is when it matters.)
        let heard = self
            .members
            .iter()
            .filter(|r| {
                **r == self.me
                    || self
                        .last_heard
                        .get(r)
                        .is_some_and(|t| now.saturating_sub(*t) < timeout)
            })
            .count();
        if heard < self.majority() {
            self.quorum_lost.get_or_insert(now);
        } else if let Some(since) = self.quorum_lost.take() {
            if now.saturating_sub(since) >= timeout {
                self.rejoined_at = now;
            }
        }
        if now.saturating_sub(self.last_alive) >= self.params.heartbeat_ms {
            self.last_alive = now;
            let commit = self.commit_index();
            // Only candidates need to hear it: the best-ranked members stand
            // first. After three election timeouts without an owner (they
            // may all be down), everyone hears it, so that the best live
            // replica learns it can win.
            let since = *self.leaderless_since.get_or_insert(now);
            // An origin with work that had an owner tells everyone: the
            // others may still be waiting out an idle owner's longer silence
            // (`owner_timeout`).
            if now.saturating_sub(since) >= 3 * timeout
                || self.members.len() <= ALIVE_TARGETS + 1
                || (self.has_work() && self.leader_seen.is_some())
            {
                self.broadcast(SeqMsg::Alive { commit });
            } else {
                let mut top: Vec<ReplicaId> = self.members.iter().copied().collect();
                top.sort_by_key(|r| std::cmp::Reverse(rank_score(self.key, *r)));
                for to in top.into_iter().take(ALIVE_TARGETS) {
                    self.send(to, SeqMsg::Alive { commit });
                }
            }
        }
        if now < self.next_election || now.saturating_sub(self.rejoined_at) < timeout {
            return;
        }
        // Only the best-ranked replica among those recently heard from stands.
        let alive: Vec<ReplicaId> = {
            let mut v = self.alive_ranked();
            v.retain(|r| {
                *r == self.me
                    || self
                        .last_heard
                        .get(r)
                        .is_some_and(|t| now.saturating_sub(*t) < timeout)
            });
            v
        };
        if alive.len() < self.majority() {
            return; // cannot win: do not disturb the others
        }
        if alive.first() != Some(&self.me)
            && self
                .leader_seen
                .is_none_or(|(_, seen)| now.saturating_sub(seen) < 3 * timeout)
        {
            return;
        }
        let round = self
            .promised
            .round
            .max(self.leader_seen.map_or(0, |(b, _)| b.round))
            + 1;
        let ballot = Ballot {
            round,
            leader: self.me,
        };
        self.promised = ballot;
        self.persist(SeqRecord::Promised(ballot));
        let commit = self.commit_index();
        self.role = Role::Candidate {
            ballot,
            since: now,
            base: commit,
            promises: BTreeMap::new(),
        };
        self.next_election = now + self.backoff();
        self.broadcast(SeqMsg::Prepare { ballot, commit });
        if self.majority() == 1 {
            self.role = Role::Follower;
            self.become_leader(now, ballot, commit, BTreeMap::new());
        }
    }

    /// The owner's work: sequence pending ops, keep reservations ahead,
    /// say it is alive.
    fn lead(&mut self, now: u64) {
        // It runs after every message: a follower leaves at once.
        if !matches!(self.role, Role::Leader { .. }) {
            return;
        }
        if !self.noted.is_empty() {
            let wait = self.params.forward_timeout_ms;
            // The wait counts only while the op's origin is heard: an origin
            // silent for a whole election timeout is cut off or down, and
            // shows its op from its reservation after `forward_timeout`; a
            // final value given here meanwhile would re-announce it at the
            // heal (E). Once heard again, it forwards the op itself, with
            // those values, as soon as it hears this owner.
            // An origin unheard for `gone_origin_ms` since the op was noted
            // is taken as gone for good: its op is sequenced, or a message
            // its node acknowledged before it died would never be shown
            // elsewhere. Had it only been cut off that long, it re-announces
            // what it showed of it: within E's bound for one cut-off side.
            let timeout = self.params.election_timeout_ms;
            let gone = self.params.gone_origin_ms;
            let (me, last_heard) = (self.me, &self.last_heard);
            for (op, (_, since, first)) in self.noted.iter_mut() {
                let heard = op.origin == me
                    || last_heard
                        .get(&op.origin)
                        .is_some_and(|t| now.saturating_sub(*t) < timeout);
                if !heard && now.saturating_sub(*first) < gone {
                    *since = now;
                }
            }
            let due: Vec<(OpId, u32)> = self
                .noted
                .iter()
                .filter(|(_, (_, since, _))| now.saturating_sub(*since) >= wait)
                .map(|(op, (n, _, _))| (*op, *n))
                .collect();
            for (op, uids) in due {
                self.noted.remove(&op);
                self.doubtful.remove(&op);
                if !self.finals.contains_key(&op) {
                    self.pending.entry(op).or_insert(Pending {
                        op,
                        uids,
                        provisional: None,
                        waited_ms: 0,
                    });
                }
            }
        }
        let members = self.members.clone();
        let params = self.params.clone();
        let nothing_to_do =
            self.pending.is_empty() && self.noted.is_empty() && self.resequence.is_empty();
        let (ballot, value) = {
            let Role::Leader {
                ballot,
                inflight,
                tentative,
                proposed,
                last_beat,
                beat_idle,
                last_proposed,
                ahead_at,
                ..
            } = &mut self.role
            else {
                return;
            };
            let ballot = *ballot;
            let idle = nothing_to_do && inflight.is_empty();
            // Each Heartbeat says when the next one is due at the latest.
            let period = if *beat_idle {
                params.idle_heartbeat_ms
            } else {
                params.heartbeat_ms
            };
            if now.saturating_sub(*last_beat) >= period {
                *last_beat = now;
                *beat_idle = idle;
                let commit = self.committed.len() as Slot;
                self.out.push(SeqOutput::Broadcast(SeqMsg::Heartbeat {
                    ballot,
                    commit,
                    idle,
                }));
                // Messages get lost: ask again for what lacks a majority.
                let learners = if inflight.is_empty() {
                    Vec::new()
                } else {
                    learners_of(self.me, &members, &self.unwatched, params.learner_budget)
                };
                // A slot whose thrifty `Accept` is not accepted a heartbeat
                // after it was proposed (an acceptor crashed, is cut off or
                // slow) widens to every member.
                for (slot, i) in inflight.iter_mut() {
                    if now.saturating_sub(i.since) >= params.heartbeat_ms {
                        i.targets = None;
                    }
                    let to = |m: &&ReplicaId| {
                        !i.acks.contains(m) && i.targets.as_ref().is_none_or(|t| t.contains(m))
                    };
                    for m in members.iter().filter(to) {
                        let msg = SeqMsg::Accept {
                            ballot,
                            slot: *slot,
                            value: i.value.clone(),
                            commit,
                            learners: learners.clone(),
                        };
                        self.out.push(SeqOutput::Send { to: *m, msg });
                    }
                }
            }
            if inflight.len() >= params.max_inflight
                || (!inflight.is_empty()
                    && last_proposed.is_some_and(|t| now.saturating_sub(t) < params.batch_ms))
            {
                return;
            }
            let mut value = Vec::new();
            // Reservations first: every member keeps one ahead of the counters.
            renew_reservations(tentative, &members, &params.space, ahead_at, &mut value);
            // New ops: confirm a provisional assignment still above everything
            // final, otherwise assign from the counters.
            // Provisional values first, lowest first: each is confirmed only
            // if above everything final, so confirming them out of order (or
            // after assigning counter values above them) would re-announce
            // them needlessly; ops without values then get values above them.
            // Origins of doubtful ops (see `on_forward`): no counter value may
            // pass their reservations until those ops are known.
            let mut doubtful: Vec<ReplicaId> = self.doubtful.iter().map(|o| o.origin).collect();
            doubtful.dedup();
            let hold = |t: &Spaces| doubtful.iter().any(|r| t.frontier_in_reservation_of(*r));
            let mut todo: Vec<Pending> = self
                .pending
                .values()
                .filter(|p| !proposed.contains(&p.op) && !self.finals.contains_key(&p.op))
                .cloned()
                .collect();
            todo.sort_by_key(|p| match &p.provisional {
                Some(a) => (0, a.modseq),
                None => (1, 0),
            });
            todo.truncate(params.max_batch.saturating_sub(value.len()));
            for p in todo {
                let keep = p.provisional.as_ref().filter(|a| {
                    a.modseq > tentative.max_modseq
                        && a.uids.iter().all(|&u| u as u64 > tentative.max_uid)
                });
                let assign = match keep {
                    Some(a) => a.clone(),
                    None if hold(tentative) => continue,
                    None => {
                        let (Some(uids), Some(modseq)) =
                            (tentative.take_uids(p.uids), tentative.take_modseq())
                        else {
                            break; // space exhausted: the mailbox needs a new UIDVALIDITY
                        };
                        Assign { modseq, uids }
                    }
                };
                tentative.note_final(&assign.uids, assign.modseq);
                proposed.insert(p.op);
                value.push(Decision::Sequence { op: p.op, assign });
            }
            // Re-announcements asked for by replicas that cannot expose a value.
            let wanted: Vec<(OpId, (u64, u64))> = self
                .resequence
                .iter()
                .filter(|_| doubtful.is_empty())
                .filter(|(op, _)| !proposed.contains(op))
                .map(|(k, v)| (*k, *v))
                .take(params.max_batch)
                .collect();
            for (op, (au, am)) in wanted {
                let Some(prev) = final_in(&self.finals, &self.committed, &op) else {
                    continue;
                };
                let n = prev.uids.len() as u32;
                // The origin's own provisional values, when it showed the op
                // with them and they are still above everything final: the
                // origin then keeps showing it as it does.
                let claim = self.claims.get(&op).filter(|a| {
                    a.uids.len() == n as usize
                        && a.modseq > tentative.max_modseq
                        && a.uids.iter().all(|&u| u as u64 > tentative.max_uid)
                });
                let assign = match claim {
                    Some(a) => a.clone(),
                    None => {
                        tentative.raise(au + 1, am + 1);
                        let (Some(uids), Some(modseq)) =
                            (tentative.take_uids(n), tentative.take_modseq())
                        else {
                            break;
                        };
                        Assign { modseq, uids }
                    }
                };
                tentative.note_final(&assign.uids, assign.modseq);
                proposed.insert(op);
                value.push(Decision::Sequence { op, assign });
            }
            if value.is_empty() {
                return;
            }
            // And last, in the same value: a replica that learns the values
            // that overtook its reservation learns its next one with them,
            // so that a cut right after that commit does not leave it without
            // a usable reservation (L1).
            renew_reservations(tentative, &members, &params.space, ahead_at, &mut value);
            *last_proposed = Some(now);
            (ballot, Value::from(value))
        };
        let slot = match &mut self.role {
            Role::Leader {
                next_slot,
                inflight,
                ..
            } => {
                let s = *next_slot;
                *next_slot += 1;
                inflight.insert(
                    s,
                    Inflight {
                        value: value.clone(),
                        acks: BTreeSet::new(),
                        learners: Vec::new(),
                        since: now,
                        targets: None,
                    },
                );
                s
            }
            _ => return,
        };
        self.propose(now, ballot, slot, value);
    }
}

/// Plans a new reservation for every member whose newest one is no longer
/// ahead of `tentative`'s counters, reserving it there and adding it to
/// `value`. `ahead_at` remembers the state (counters, number of reservations
/// and of members) at which every member was found ahead: while it is
/// unchanged there is nothing to check (`lead` runs after every message).
fn renew_reservations(
    tentative: &mut Spaces,
    members: &[ReplicaId],
    space: &SpaceParams,
    ahead_at: &mut Option<(u64, u64, usize, usize)>,
    value: &mut Vec<Decision>,
) {
    let state = |t: &Spaces| {
        (
            t.next_uid,
            t.next_modseq,
            t.reservations.len(),
            members.len(),
        )
    };
    if *ahead_at == Some(state(tentative)) {
        return;
    }
    let mut all_ahead = true;
    for m in members {
        if !tentative.reservation_is_ahead(*m) {
            match tentative.plan_reservation(*m, space) {
                Some(r) => {
                    tentative.reserve(r.clone());
                    value.push(Decision::Reserve(r));
                }
                None => all_ahead = false,
            }
        }
    }
    *ahead_at = all_ahead.then(|| state(tentative));
}

/// Applies a ledger value to number spaces (the counters move past every
/// final value; reservations are recorded).
/// Applies a ledger value's decisions, in order, to `spaces`.
fn apply_to_spaces(spaces: &mut Spaces, value: &[Decision]) {
    for d in value {
        apply_decision(spaces, d);
    }
}

/// Applies one ledger decision to `spaces` if they admit it; says whether.
/// An owner computes each decision above everything before it in the
/// ledger (counters only grow, confirmations and new values lie above every
/// final value, reservations above every other), so a decision that is not
/// is stale: an owner proposed it in a slot after slots that a later owner
/// then filled with other values, and a third one adopted it from an
/// acceptor (Paxos may choose it for its slot). Applying it would give its
/// UIDs twice (S1: chaos, 7 nodes, seed 5 of the sessions test); every
/// replica skips it alike, as the ledger is the same everywhere.
fn apply_decision(spaces: &mut Spaces, d: &Decision) -> bool {
    if !spaces.admits(d) {
        return false;
    }
    match d {
        Decision::Sequence { assign, .. } => spaces.note_final(&assign.uids, assign.modseq),
        Decision::Reserve(r) => spaces.reserve(r.clone()),
    }
    true
}

#[cfg(test)]
mod tests;
