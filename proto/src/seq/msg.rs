//! Messages of the UID/MODSEQ sequencing protocol, and the records a
//! sequencer asks its driver to persist.

use super::space::Reservation;
use crate::ids::{OpId, ReplicaId};
use serde::{Deserialize, Serialize};

/// Position in a mailbox's ledger (1, 2, 3, …).
pub type Slot = u64;

/// A Paxos ballot: who leads, in which round. Ordered by round, then replica.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// Election round.
    pub round: u64,
    /// The replica leading (owning) in this round.
    pub leader: ReplicaId,
}

/// The UIDs of one op: none for a flag change or an expunge, one for an
/// APPEND, one per message for a COPY. Up to four are held inline: the ledger,
/// the views and the sequencers keep one per op, and a heap allocation each
/// cost memory per message and most of the time of a restart. Encoded as a
/// sequence, like a `Vec`.
pub type Uids = smallvec::SmallVec<[u32; 4]>;

/// UIDs and a MODSEQ given to one op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assign {
    /// The op's MODSEQ.
    pub modseq: u64,
    /// One UID per message the op adds (empty for flag changes, expunges).
    pub uids: Uids,
}

/// Whether an assignment is the ledger's (final) or a cut-off replica's own,
/// from its reservation (provisional, to be confirmed or replaced).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fate {
    /// Committed by a majority; the ledger's word. A later final decision for
    /// the same op (a re-announcement) replaces it.
    Final,
    /// Assigned from a reservation by a replica that could not reach the
    /// owner in time.
    Provisional,
}

/// One ledger entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// An op's final UIDs and MODSEQ.
    Sequence {
        /// The op.
        op: OpId,
        /// What it gets.
        assign: Assign,
    },
    /// A range reserved for a replica.
    Reserve(Reservation),
}

/// A ledger slot's value: its decisions, in order. Shared (not copied)
/// between the `Accept` that carries it, the acceptor's and learner's
/// tables and the records persisted; encoded as a sequence, like a `Vec`.
pub type Value = std::sync::Arc<[Decision]>;

/// An op that needs sequencing, as its origin announces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The op.
    pub op: OpId,
    /// How many UIDs it needs.
    pub uids: u32,
    /// The origin's provisional assignment, if it made one.
    pub provisional: Option<Assign>,
    /// How long the op had waited at its origin when this was sent, ms: one
    /// without provisional values gets them `forward_timeout` after it was
    /// submitted, so a late message may name it without them (§4.1).
    pub waited_ms: u64,
}

/// Sequencing protocol messages (one mailbox ledger).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeqMsg {
    /// Origin → every member: these ops need final UIDs/MODSEQs.
    Forward {
        /// The ops.
        ops: Vec<Pending>,
        /// The origin's clock when it sent this. With each op's
        /// `waited_ms`, it tells the owner whether the origin may have shown
        /// an op with provisional values since (a cut link held the message
        /// until the heal): the owner then waits for a newer Forward before
        /// it gives values of its own (ARCHITECTURE §4.1).
        sent_ms: u64,
    },
    /// A replica → the owner: these ops' final values are not above what I
    /// exposed; give them new ones above these marks.
    Resequence {
        /// The ops.
        ops: Vec<OpId>,
        /// New UIDs must be greater than this.
        above_uid: u64,
        /// New MODSEQs must be greater than this.
        above_modseq: u64,
        /// The requester's own provisional ops, so that the owner can confirm
        /// them before it assigns above them.
        provisional: Vec<Pending>,
    },
    /// Phase 1a: a candidate asks for promises.
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// The candidate's commit index.
        commit: Slot,
    },
    /// Phase 1b.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// Committed values after the candidate's commit index, in order.
        committed: Vec<Value>,
        /// Accepted but not known committed: (slot, ballot, value).
        accepted: Vec<(Slot, Ballot, Value)>,
        /// The promiser had more than fits: the candidate should catch up first.
        truncated: bool,
    },
    /// Phase 2a, with the leader's commit index piggybacked. Sent to a
    /// majority and the members that want the slot at once
    /// (`SeqParams::thrifty_accept`), to every member when it is not
    /// accepted a heartbeat later.
    Accept {
        /// Leader's ballot.
        ballot: Ballot,
        /// Slot.
        slot: Slot,
        /// Value.
        value: Value,
        /// Leader's commit index.
        commit: Slot,
        /// The members with readers of this mailbox (distinguished
        /// learners): every acceptor sends them its `Accepted` too, so that
        /// one near a majority learns the commit one delay after the Accept,
        /// without the round trip through a far owner. Empty when there are
        /// too many for the owner's budget (`SeqParams::learner_budget`).
        learners: Vec<ReplicaId>,
    },
    /// Phase 2b, to the owner and to the slot's learners. For slot 0 (no
    /// slot), only the `watching` notice: the replica got readers and wants
    /// the owner's `Accept`s and commit notices at once.
    Accepted {
        /// Ballot accepted.
        ballot: Ballot,
        /// Slot (0: none, a notice of `watching` only).
        slot: Slot,
        /// The acceptor has readers of this mailbox (its user's keys are
        /// unlocked there): it wants each commit at once. One without them
        /// learns commits from the next `Accept` or periodic `Heartbeat`.
        watching: bool,
    },
    /// Refusal: a higher ballot was promised.
    Nack {
        /// The promised ballot.
        promised: Ballot,
    },
    /// The leader is alive; its commit index.
    Heartbeat {
        /// Leader's ballot.
        ballot: Ballot,
        /// Leader's commit index.
        commit: Slot,
        /// The owner is idle (nothing in flight, nothing to sequence): its
        /// next Heartbeat may come `idle_heartbeat_ms` later instead of
        /// `heartbeat_ms`.
        idle: bool,
    },
    /// A replica without a live owner says it is alive (so that the best
    /// candidate knows it can win an election).
    Alive {
        /// The sender's commit index.
        commit: Slot,
    },
    /// Ask for committed values from `from` on.
    Pull {
        /// First slot wanted.
        from: Slot,
    },
    /// Committed values `from`, `from + 1`, ….
    Entries {
        /// Slot of the first value.
        from: Slot,
        /// Values.
        values: Vec<Value>,
    },
}

/// What a sequencer needs durable before its messages leave the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeqRecord {
    /// Highest ballot promised.
    Promised(Ballot),
    /// A value accepted in a slot.
    Accepted(Slot, Ballot, Value),
    /// A committed value.
    Committed(Slot, Value),
    /// This replica's own provisional assignment (it may be exposed next).
    Provisional(OpId, u32, Assign),
    /// Cursor in this replica's reservation: next UID and MODSEQ it may use.
    Cursor(u64, u64),
    /// The value this replica accepted for a slot in a ballot (written
    /// before, as `Accepted`) is committed: a `Committed` that does not
    /// repeat the value. Last, so that records written before it decode.
    Chosen(Slot, Ballot),
}

/// Output of a sequencer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeqOutput {
    /// Send to one member.
    Send {
        /// Destination.
        to: ReplicaId,
        /// Message.
        msg: SeqMsg,
    },
    /// Send to every other member.
    Broadcast(SeqMsg),
    /// Persist before any message of this batch leaves the node.
    Persist(SeqRecord),
    /// An op got UIDs and a MODSEQ.
    Decided {
        /// The op.
        op: OpId,
        /// Its values.
        assign: Assign,
        /// Final or provisional.
        fate: Fate,
    },
}
