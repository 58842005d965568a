//! The simulated world: N replicas on `MemStore`s, a network of timed
//! messages, simulated clients, faults, and the checks. One event queue (a
//! binary heap ordered by simulated time, then by a sequence number) holds
//! everything that will happen, so a run is a pure function of the seed and
//! the schedule.
//!
//! The driver contract of `proto/src/replica/mod.rs` is followed exactly:
//! after every replica call the store is flushed, and only then are the
//! outputs released (messages into the network, acknowledgements and
//! events to the clients and the checker). Every message crosses
//! `PeerMsg::encode` / `decode`.

use crate::check::{BoxKey, Checker, Violation};
use crate::client::{resync, CMsg, CMsgAt, Client};
use crate::net::NetModel;
use crate::rng::{below, between};
use crate::scenario::{self, Action, Expect, NodeSel, OpKind, Overrides, Plan, Sched};
use aerogramme_proto::crypto::UserSecrets;
use aerogramme_proto::ids::{EntryId, MailboxId, OpId, ReplicaId, UserId};
use aerogramme_proto::mailbox::{Flag, Keyword};
use aerogramme_proto::replica::{
    Config, Event, FlagMode, NewMessage, Outcome, Output, PeerMsg, Replica, ReplicaError, Ticket,
};
use aerogramme_proto::seq::Spaces;
use aerogramme_proto::store::{MemStore, Store};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::cell::OnceCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet, VecDeque};
use std::rc::Rc;

/// Wall-clock origin of the simulated clocks (ms since the Unix epoch):
/// UIDVALIDITY is the creation second, so it looks like a real one.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// Period of the convergence check in the quiet period.
const CHECK_MS: u64 = 10;
/// Messages a holding cut keeps per directed link (a connection's send
/// buffer); beyond that they are dropped.
const MAX_HELD: usize = 4_096;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Scenario name.
    pub scenario: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of the one RNG.
    pub seed: u64,
    /// Client operations (scenario default when `None`).
    pub ops: Option<usize>,
    /// Test-only: commit without a majority (`--break ownership`).
    pub break_ownership: bool,
    /// Keep only these schedule items (shrinking, replay).
    pub keep: Option<BTreeSet<usize>>,
    /// Record the per-event trace.
    pub trace: bool,
    /// Overrides (bench).
    pub overrides: Overrides,
}

impl RunSpec {
    /// A spec with defaults.
    pub fn new(scenario: &str, nodes: usize, seed: u64) -> Self {
        RunSpec {
            scenario: scenario.to_string(),
            nodes,
            seed,
            ops: None,
            break_ownership: false,
            keep: None,
            trace: false,
            overrides: Overrides::default(),
        }
    }
}

/// One row of the trace (`--trace FILE.csv`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRow {
    /// Simulated time, µs.
    pub at_us: u64,
    /// Node (`None`: the world).
    pub node: Option<usize>,
    /// Kind.
    pub kind: &'static str,
    /// Detail.
    pub detail: String,
}

/// Counters of a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Client operations and deliveries executed.
    pub ops: u64,
    /// Of which refused by the node (NO), e.g. a UID the node lacks.
    pub ops_refused: u64,
    /// LMTP deliveries.
    pub deliveries: u64,
    /// Messages acknowledged (APPENDUID, COPYUID pairs, LMTP 250).
    pub acked_messages: u64,
    /// Client resyncs (QRESYNC).
    pub resyncs: u64,
    /// Client failovers.
    pub failovers: u64,
    /// Stale reads seen by clients (a node behind them).
    pub stale_reads: u64,
    /// Crashes.
    pub crashes: u64,
    /// Restarts.
    pub restarts: u64,
    /// Messages sent on the network.
    pub net_sent: u64,
    /// Messages sent, by kind.
    pub net_by_kind: BTreeMap<&'static str, u64>,
    /// Delivered.
    pub net_delivered: u64,
    /// Lost (random loss).
    pub net_lost: u64,
    /// Dropped by cut links or down receivers.
    pub net_dropped: u64,
    /// Held by a cut link and delivered at its heal.
    pub net_held: u64,
    /// Duplicated.
    pub net_duplicated: u64,
    /// Local actions that waited for a mailbox without a reservation (L1
    /// does not promise anything there).
    pub l1_exempt: u64,
    /// Acknowledged messages shown and expunged in the same batch.
    pub acked_expunged_at_once: u64,
    /// Slowest acknowledgement, µs.
    pub max_ack_us: u64,
    /// Replica calls.
    pub steps: u64,
    /// Messages written on each side of each partition, and whether several
    /// replicas were cut off together.
    pub partitions: Vec<([u64; 2], bool)>,
}

/// The result of a run.
pub struct RunResult {
    /// The report.
    pub report: crate::Report,
    /// Messages sent by kind.
    pub net_by_kind: BTreeMap<&'static str, u64>,
    /// The trace, if asked for.
    pub trace: Vec<TraceRow>,
    /// The schedule that ran, with each item's index in the full schedule.
    pub schedule: Vec<(usize, Sched)>,
    /// Violations (the first ones in full).
    pub violations: Vec<Violation>,
}

struct SimUser {
    id: UserId,
    secret_seed: u64,
    inbox: MailboxId,
    public: aerogramme_proto::crypto::PublicKey,
}

struct SimNode {
    replica: Option<Replica<MemStore>>,
    down_store: Option<MemStore>,
    cfg: Config,
    offset_ms: i64,
    last_now: u64,
    incarnation: u32,
    crash_next: bool,
    /// Users whose keys this node holds (unlocked again after a restart).
    unlocked: BTreeSet<usize>,
}

struct PendingAction {
    client: Option<usize>,
    user: usize,
    mailbox: MailboxId,
    kind: &'static str,
    issued_us: u64,
    l1: bool,
}

struct Fault {
    links: Vec<(usize, usize)>,
    /// Its cut links hold messages until the heal (see `NetModel::holds`).
    hold: bool,
    on: bool,
    ended: bool,
    period_ms: u64,
    partition: Option<usize>,
}

struct PartitionRec {
    minority: Vec<bool>,
    open: bool,
}

/// One encoded message on the wire, shared by every delivery of it (a
/// broadcast, a duplicate, a held link's queue). It is decoded at its first
/// delivery to a running node and each receiver gets a clone of that
/// decoding: the same message as decoding the bytes again, whose shared
/// parts (op payloads, ops, chunk bytes) every receiver then holds once
/// instead of a copy each.
struct Wire {
    bytes: Vec<u8>,
    decoded: OnceCell<Result<PeerMsg, String>>,
}

impl Wire {
    fn new(bytes: Vec<u8>) -> Rc<Wire> {
        Rc::new(Wire {
            bytes,
            decoded: OnceCell::new(),
        })
    }

    fn decode(&self) -> &Result<PeerMsg, String> {
        self.decoded
            .get_or_init(|| PeerMsg::decode(&self.bytes).map_err(|e| e.to_string()))
    }
}

enum Ev {
    Deliver {
        from: usize,
        to: usize,
        wire: Rc<Wire>,
    },
    Tick(usize),
    Sched(usize),
    FaultOff(usize),
    Flap(usize),
    Restart(usize),
    Heal,
    Check,
    Warmup(usize, &'static str),
    L1Probe(usize, u32, Ticket),
}

struct Item {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: the heap pops the earliest.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

fn flag_pool() -> Vec<Flag> {
    let mut v = Flag::SYSTEM.to_vec();
    for k in ["$Forwarded", "$Label1", "$Junk"] {
        if let Ok(k) = Keyword::new(k) {
            v.push(Flag::Keyword(k));
        }
    }
    v
}

const NAMES: &[&str] = &[
    "Archive",
    "Sent",
    "Drafts",
    "Work",
    "Lists",
    "Lists/rust",
    "Travel",
    "Receipts",
];

/// The world.
pub struct World {
    now_us: u64,
    heap: BinaryHeap<Item>,
    seq: u64,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    ids: Vec<ReplicaId>,
    net: NetModel,
    plan: Plan,
    users: Vec<SimUser>,
    clients: Vec<Client>,
    by_node: Vec<Vec<usize>>,
    check: Checker,
    trace: Option<Vec<TraceRow>>,
    pending: BTreeMap<(usize, u32, Ticket), PendingAction>,
    acked: BTreeMap<(usize, MailboxId, EntryId), (usize, u32)>,
    /// Messages a replica cut off alone acknowledged during the partition:
    /// E wants their provisional values confirmed at the heal, never
    /// re-announced (the other side's are).
    cut_off_acked: HashSet<(usize, MailboxId, EntryId)>,
    /// Deliveries acknowledged by a node without the user's keys, by op
    /// (it cannot name the entry): (user, mailbox, op, node, UID). Their
    /// entries are found at the end from an unlocked replica's view.
    acked_ops: Vec<(usize, MailboxId, OpId, usize, u32)>,
    /// Deliveries in progress on a node without the user's keys: their ops.
    locked_deliveries: BTreeMap<(usize, u32, Ticket), OpId>,
    expunged: HashSet<EntryId>,
    faults: Vec<Fault>,
    /// Messages held by cut links, per directed link `from * n + to`.
    held: Vec<VecDeque<Rc<Wire>>>,
    partitions: Vec<PartitionRec>,
    stats: Stats,
    flags: Vec<Flag>,
    quiet: bool,
    done: bool,
    converged_ms: Option<u64>,
    agree_since: Option<u64>,
    l2_detail: Option<String>,
    msg_no: u64,
    l1_bound_us: u64,
    lost: u64,
    /// UIDs shown and expunged again within the current batch.
    batch_transient: Vec<(BoxKey, u32)>,
    e_bound: Option<u64>,
    e_desc: String,
}

fn secrets(seed: u64) -> UserSecrets {
    UserSecrets::generate(&mut ChaCha8Rng::seed_from_u64(seed))
}

impl World {
    fn new(plan: Plan, rng: ChaCha8Rng, nodes: usize, break_ownership: bool, trace: bool) -> Self {
        let ids: Vec<ReplicaId> = (1..=nodes as u64).map(ReplicaId).collect();
        let mut seq = plan.seq.clone();
        seq.unsafe_commit_without_majority = break_ownership;
        let sim_nodes = (0..nodes)
            .map(|i| {
                let mut cfg = Config::new(ids[i], ids.clone());
                cfg.seq = seq.clone();
                cfg.anti_entropy_ms = plan.anti_entropy_ms;
                // STOREs over more than 4 UIDs split into several
                // multi-entry ops even in the simulator's small mailboxes.
                cfg.flag_batch = 4;
                SimNode {
                    replica: Some(Replica::new(cfg.clone(), MemStore::new())),
                    down_store: None,
                    cfg,
                    offset_ms: plan.skew_ms[i],
                    last_now: 0,
                    incarnation: 0,
                    crash_next: false,
                    unlocked: BTreeSet::new(),
                }
            })
            .collect();
        let clients: Vec<Client> = plan
            .clients
            .iter()
            .map(|(u, n)| Client::new(*u, *n))
            .collect();
        let mut by_node = vec![Vec::new(); nodes];
        for (c, cl) in clients.iter().enumerate() {
            by_node[cl.node].push(c);
        }
        // A final decision within the forward timeout that the origin cannot
        // expose (below its marks) costs one more round (Resequence).
        let l1_bound_us = (2 * seq.forward_timeout_ms + 2 * plan.tick_ms) * 1_000;
        World {
            now_us: 0,
            heap: BinaryHeap::new(),
            seq: 0,
            rng,
            nodes: sim_nodes,
            ids,
            net: plan.net.clone(),
            users: Vec::new(),
            clients,
            by_node,
            check: Checker::new(nodes, trace),
            trace: trace.then(Vec::new),
            pending: BTreeMap::new(),
            acked: BTreeMap::new(),
            cut_off_acked: HashSet::new(),
            acked_ops: Vec::new(),
            locked_deliveries: BTreeMap::new(),
            expunged: HashSet::new(),
            faults: Vec::new(),
            held: vec![VecDeque::new(); nodes * nodes],
            partitions: Vec::new(),
            stats: Stats::default(),
            flags: flag_pool(),
            quiet: false,
            done: false,
            converged_ms: None,
            agree_since: None,
            l2_detail: None,
            msg_no: 0,
            l1_bound_us,
            lost: 0,
            batch_transient: Vec::new(),
            e_bound: None,
            e_desc: String::new(),
            plan,
        }
    }

    fn ms(&self) -> u64 {
        self.now_us / 1_000
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Item {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn tr(&mut self, node: Option<usize>, kind: &'static str, detail: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(TraceRow {
                at_us: self.now_us,
                node,
                kind,
                detail: detail(),
            });
        }
    }

    fn fail(&mut self, inv: &'static str, node: Option<usize>, detail: String) {
        let at = self.ms();
        self.fail_since(Some(at), inv, node, detail);
    }

    /// A violation whose cause dates from `since` (`None`: an end-of-run
    /// verdict).
    fn fail_since(
        &mut self,
        since: Option<u64>,
        inv: &'static str,
        node: Option<usize>,
        detail: String,
    ) {
        let at = self.ms();
        self.check.fail_since(at, since, inv, node, detail);
        self.log_violations();
    }

    /// Copies the violations the checker found into the trace.
    fn log_violations(&mut self) {
        let Some(vs) = self.check.unlogged.as_mut().map(std::mem::take) else {
            return;
        };
        for v in vs {
            let d = format!("{}: {}", v.invariant, v.detail);
            self.tr(v.node, "violation", || d);
        }
    }

    /// The node's clock: simulated time plus its offset, never going back.
    fn node_now(&mut self, i: usize) -> u64 {
        let n = &mut self.nodes[i];
        let t = (EPOCH_MS as i64 + (self.now_us / 1_000) as i64 + n.offset_ms).max(0) as u64;
        n.last_now = n.last_now.max(t);
        n.last_now
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

    fn up_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.replica.is_some()).count()
    }

    fn user_index(&self, id: &UserId) -> Option<usize> {
        self.users.iter().position(|u| u.id == *id)
    }

    fn node_index(&self, id: ReplicaId) -> Option<usize> {
        let i = id.0.checked_sub(1)? as usize;
        (i < self.ids.len()).then_some(i)
    }

    // ----- network ---------------------------------------------------------

    fn send(&mut self, from: usize, to: usize, wire: Rc<Wire>) {
        self.stats.net_sent += 1;
        if self.net.is_cut(from, to) {
            let q = &mut self.held[from * self.nodes.len() + to];
            if self.net.holds(from, to) && q.len() < MAX_HELD {
                q.push_back(wire);
            } else {
                self.stats.net_dropped += 1;
            }
            return;
        }
        if self.net.lose(&mut self.rng) {
            self.stats.net_lost += 1;
            return;
        }
        let copies = if self.net.duplicate(&mut self.rng) {
            self.stats.net_duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now_us + self.net.latency_us(&mut self.rng, from, to);
            self.push(
                at,
                Ev::Deliver {
                    from,
                    to,
                    wire: wire.clone(),
                },
            );
        }
    }

    fn deliver(&mut self, from: usize, to: usize, wire: &Wire) {
        if !self.up(to) {
            self.stats.net_dropped += 1;
            return;
        }
        let msg = match wire.decode() {
            Ok(m) => m.clone(),
            Err(e) => {
                self.fail(
                    "wire_roundtrip",
                    Some(to),
                    format!("a message from node {from} does not decode: {e}"),
                );
                return;
            }
        };
        self.stats.net_delivered += 1;
        let now = self.node_now(to);
        let from_id = self.ids[from];
        if let Some(r) = self.nodes[to].replica.as_mut() {
            r.handle(now, from_id, msg);
        }
        self.release(to);
    }

    // ----- the driver contract ---------------------------------------------

    /// Flushes node `i`'s store, then releases its outputs.
    fn release(&mut self, i: usize) {
        self.stats.steps += 1;
        if self.nodes[i].crash_next {
            self.crash_now(i, "mid-batch: this batch's writes were not flushed");
            return;
        }
        let outs = {
            let Some(r) = self.nodes[i].replica.as_mut() else {
                return;
            };
            if let Err(e) = r.store_mut().flush() {
                let d = format!("flush failed: {e}");
                self.fail("L2_convergent", Some(i), d);
                return;
            }
            r.drain()
        };
        if outs.is_empty() {
            return;
        }
        self.batch_transient.clear();
        let mut touched: Vec<BoxKey> = Vec::new();
        for o in outs {
            match o {
                Output::Send { to, msg } => {
                    let Some(to) = self.node_index(to) else {
                        continue;
                    };
                    *self.stats.net_by_kind.entry(msg.kind()).or_insert(0) += 1;
                    let wire = Wire::new(msg.encode());
                    self.send(i, to, wire);
                }
                Output::Broadcast { msg, .. } => {
                    *self.stats.net_by_kind.entry(msg.kind()).or_insert(0) +=
                        self.nodes.len() as u64 - 1;
                    let wire = Wire::new(msg.encode());
                    for to in 0..self.nodes.len() {
                        if to != i {
                            self.send(i, to, wire.clone());
                        }
                    }
                }
                Output::Done { ticket, outcome } => self.on_done(i, ticket, outcome),
                Output::Event {
                    user,
                    mailbox,
                    event,
                } => {
                    let Some(u) = self.user_index(&user) else {
                        continue;
                    };
                    let key = (u, mailbox);
                    if !touched.contains(&key) {
                        touched.push(key);
                    }
                    // A batch's flag changes are checked one by one.
                    for ev in event.each() {
                        self.on_event(i, key, &ev);
                    }
                }
                Output::MailboxesChanged { .. } | Output::AccountChanged { .. } => {}
            }
        }
        let at = self.ms();
        for key in touched {
            let Some(r) = self.nodes[i].replica.as_ref() else {
                return;
            };
            if let Ok(v) = r.mailbox(&self.users[key.0].id, &key.1) {
                self.check.after_batch(at, i, key, v);
            }
        }
    }

    fn on_event(&mut self, i: usize, key: BoxKey, event: &Event) {
        let at = self.ms();
        let uid_user = self.users[key.0].id;
        let Some(r) = self.nodes[i].replica.as_ref() else {
            return;
        };
        let Ok(view) = r.mailbox(&uid_user, &key.1) else {
            return;
        };
        self.check.on_event(at, i, key, view, event);
        if let Event::Exists { uid } = *event {
            if view.message(uid).is_none() {
                self.batch_transient.push((key, uid));
            }
        }
        let uv = view.uidvalidity();
        let mut errs = Vec::new();
        for &c in &self.by_node[i] {
            let cl = &mut self.clients[c];
            if cl.user != key.0 {
                continue;
            }
            match *event {
                Event::Exists { uid } | Event::Flags { uid, .. } => {
                    let m = view.message(uid).map(|m| CMsgAt {
                        uid,
                        msg: CMsg {
                            entry: m.entry,
                            flags: m.view.flags,
                            modseq: m.modseq,
                        },
                    });
                    errs.extend(cl.on_message(i, key.1, uv, m));
                }
                Event::Expunged { uid } => cl.on_expunged(key.1, uv, uid),
                Event::FlagsMany(_) => {} // given one by one
            }
        }
        if self.trace.is_some() {
            let d = match *event {
                Event::Exists { uid } => format!(
                    "mailbox {:?} EXISTS UID {uid} {:?}",
                    key.1,
                    view.message(uid).map(|m| m.entry)
                ),
                Event::Expunged { uid } => format!("mailbox {:?} EXPUNGE UID {uid}", key.1),
                Event::Flags { uid, modseq } => {
                    format!("mailbox {:?} FETCH UID {uid} MODSEQ {modseq}", key.1)
                }
                Event::FlagsMany(_) => return, // given one by one
            };
            self.tr(Some(i), "event", || d);
        }
        for (inv, d) in errs {
            self.fail(inv, Some(i), d);
        }
    }

    fn on_done(&mut self, i: usize, ticket: Ticket, outcome: Outcome) {
        let inc = self.nodes[i].incarnation;
        let Some(p) = self.pending.remove(&(i, inc, ticket)) else {
            return;
        };
        let lat = self.now_us - p.issued_us;
        self.stats.max_ack_us = self.stats.max_ack_us.max(lat);
        if p.l1 && lat > self.l1_bound_us {
            let d = format!(
                "{} on mailbox {:?} acknowledged after {} ms (bound {} ms)",
                p.kind,
                p.mailbox,
                lat / 1_000,
                self.l1_bound_us / 1_000
            );
            self.fail("L1_available", Some(i), d);
        }
        let uids: Vec<u32> = match &outcome {
            Outcome::Appended { uid, .. } => vec![*uid],
            Outcome::Copied { uids, .. } => uids.iter().map(|(_, n)| *n).collect(),
            Outcome::Done => Vec::new(),
        };
        let uv = match &outcome {
            Outcome::Appended { uidvalidity, .. } | Outcome::Copied { uidvalidity, .. } => {
                *uidvalidity
            }
            Outcome::Done => 0,
        };
        let user = self.users[p.user].id;
        // A delivery on a node without the keys: it knows its op and the
        // UID the ledger (or its reservation) gave it, not the entry.
        let locked_op = self.locked_deliveries.remove(&(i, inc, ticket));
        if let Some(op) = locked_op {
            for uid in &uids {
                self.acked_ops.push((p.user, p.mailbox, op, i, *uid));
                self.stats.acked_messages += 1;
            }
        }
        for uid in uids.iter().filter(|_| locked_op.is_none()) {
            let view = self.nodes[i]
                .replica
                .as_ref()
                .and_then(|r| r.mailbox(&user, &p.mailbox).ok());
            let from_view = view.and_then(|v| v.message(*uid)).map(|m| m.entry);
            // The node gave the UID to an entry a client had already
            // expunged (it saw the message elsewhere, under the UID another
            // node showed it with): no EXISTS, the message is gone (finding
            // 9). Such an entry may get new values in the same batch (its
            // final value lay below the marks): the acknowledged UID is then
            // among those the node reported expunged, and names nothing else
            // (S1 is checked on its own).
            let expunged_here = view.is_some_and(|v| {
                v.expunged_entry(*uid).is_some()
                    || (v.message(*uid).is_none() && v.has_vanished(*uid))
            });
            let entry = from_view.or_else(|| {
                self.check
                    .global
                    .get(&(p.user, p.mailbox, uv, *uid))
                    .copied()
            });
            match entry {
                Some(e) => {
                    self.acked.insert((p.user, p.mailbox, e), (i, *uid));
                    self.stats.acked_messages += 1;
                    let alone =
                        self.partitions.iter().enumerate().any(|(k, rec)| {
                            rec.open && rec.minority[i] && !self.stats.partitions[k].1
                        });
                    // Not one the other side showed first with its final
                    // value (committed just before the cut): it has two
                    // values, one side re-announces it whatever happens.
                    let first = self.check.first_uid.get(&(p.user, p.mailbox, e));
                    if alone && first.is_none_or(|f| *f == (uv, *uid)) {
                        self.cut_off_acked.insert((p.user, p.mailbox, e));
                    }
                }
                None if expunged_here
                    || self.batch_transient.contains(&((p.user, p.mailbox), *uid)) =>
                {
                    // Shown and expunged in the same batch, or given to an
                    // entry already expunged (a client on another node
                    // expunged it): nothing to keep.
                    self.stats.acked_messages += 1;
                    self.stats.acked_expunged_at_once += 1;
                }
                None => {
                    let d = format!(
                        "{} acknowledged UID {uid} in {:?}, which names no message",
                        p.kind, p.mailbox
                    );
                    self.fail("no_acked_message_lost", Some(i), d);
                }
            }
        }
        if self.trace.is_some() {
            let d = format!(
                "{} {} ticket {} -> {:?} after {}.{:03} ms",
                p.kind,
                p.client
                    .map_or("lmtp".to_string(), |c| format!("client {c}")),
                ticket.0,
                outcome,
                lat / 1_000,
                lat % 1_000
            );
            self.tr(Some(i), "ack", || d);
        }
    }

    // ----- setup -------------------------------------------------------------

    fn setup(&mut self) {
        let n = self.nodes.len();
        for u in 0..self.plan.users {
            let id = UserId::random(&mut self.rng);
            let secret_seed = self.rng.next_u64();
            let now = self.node_now(0);
            let r = self.nodes[0].replica.as_mut().expect("up");
            let inbox = r
                .create_account(
                    now,
                    &mut self.rng,
                    id,
                    format!("account record of user {u}").into_bytes(),
                    secrets(secret_seed),
                )
                .expect("account");
            for name in ["Archive", "Sent"] {
                r.create_mailbox(now, &mut self.rng, id, name, None)
                    .expect("mailbox");
            }
            self.users.push(SimUser {
                id,
                secret_seed,
                inbox,
                public: *secrets(secret_seed).keypair.public(),
            });
            self.nodes[0].unlocked.insert(u);
            self.release(0);
            for i in 1..n {
                let session = self.by_node[i].iter().any(|c| self.clients[*c].user == u);
                if self.plan.unlock_sessions && !session {
                    continue;
                }
                let now = self.node_now(i);
                if let Some(r) = self.nodes[i].replica.as_mut() {
                    r.unlock(now, id, secrets(secret_seed)).expect("unlock");
                }
                self.nodes[i].unlocked.insert(u);
                self.release(i);
            }
        }
        for i in 0..n {
            let phase = below(&mut self.rng, self.plan.tick_ms * 1_000);
            self.push(phase, Ev::Tick(i));
        }
        // First messages (LMTP) so that the ledgers get owners and
        // reservations before the clients start.
        for u in 0..self.users.len() {
            let at = 500_000 + below(&mut self.rng, 500_000);
            self.push(at, Ev::Warmup(u, "INBOX"));
            self.push(at + 300_000, Ev::Warmup(u, "Archive"));
        }
    }

    // ----- the loop ----------------------------------------------------------

    fn run_loop(&mut self, kept: &[(usize, Sched)]) {
        for (k, (_, s)) in kept.iter().enumerate() {
            self.push(s.at_ms * 1_000, Ev::Sched(k));
        }
        self.push(self.plan.active_end_ms * 1_000, Ev::Heal);
        while let Some(item) = self.heap.pop() {
            self.now_us = item.at;
            match item.ev {
                Ev::Deliver { from, to, wire } => self.deliver(from, to, &wire),
                Ev::Tick(i) => {
                    if self.up(i) {
                        let now = self.node_now(i);
                        if let Some(r) = self.nodes[i].replica.as_mut() {
                            r.tick(now);
                        }
                        self.release(i);
                    }
                    self.push(self.now_us + self.plan.tick_ms * 1_000, Ev::Tick(i));
                }
                Ev::Warmup(u, name) => self.deliver_to(u, 0, name),
                Ev::Sched(k) => {
                    let s = kept[k].1.clone();
                    self.run_sched(kept[k].0, &s);
                }
                Ev::FaultOff(f) => self.fault_off(f),
                Ev::Flap(f) => self.flap(f),
                Ev::Restart(i) => self.restart(i),
                Ev::Heal => self.heal(),
                Ev::Check => self.quiet_check(),
                Ev::L1Probe(n, inc, t) => self.l1_probe(n, inc, t),
            }
            self.log_violations();
            if self.done {
                break;
            }
        }
    }

    fn run_sched(&mut self, idx: usize, s: &Sched) {
        if self.trace.is_some() {
            let d = format!("#{idx} {s}");
            self.tr(None, "schedule", || d);
        }
        match &s.action {
            Action::Op { client, kind } => {
                if *client < self.clients.len() {
                    self.client_op(*client, *kind);
                }
            }
            Action::Deliver { user, node } => {
                if *user < self.users.len() && *node < self.nodes.len() {
                    self.deliver_to(*user, *node, "INBOX");
                }
            }
            Action::Crash {
                node,
                down_ms,
                mid_batch,
            } => {
                let Some(i) = self.resolve(node).first().copied() else {
                    return;
                };
                if !self.up(i) || self.nodes[i].crash_next {
                    return;
                }
                let majority = self.nodes.len() / 2 + 1;
                if self.up_count() <= majority {
                    self.tr(Some(i), "fault", || {
                        "crash skipped: a majority must stay up".into()
                    });
                    return;
                }
                let back = (self.now_us + down_ms * 1_000).min(self.plan.active_end_ms * 1_000);
                self.push(back, Ev::Restart(i));
                if *mid_batch {
                    self.nodes[i].crash_next = true;
                    self.tr(Some(i), "fault", || {
                        "crash at the next batch, before its flush".into()
                    });
                } else {
                    self.crash_now(i, "between batches");
                }
            }
            Action::Partition {
                minority,
                dur_ms,
                hold,
            } => {
                let side = self.resolve(minority);
                if side.is_empty() || side.len() >= self.nodes.len() {
                    return;
                }
                let mut minority = vec![false; self.nodes.len()];
                for &x in &side {
                    minority[x] = true;
                }
                let links = self.split_links(&minority);
                self.partitions.push(PartitionRec {
                    minority,
                    open: true,
                });
                self.stats.partitions.push(([0, 0], side.len() > 1));
                let p = self.partitions.len() - 1;
                let f = self.add_fault(links, *hold, 0, Some(p));
                self.tr(None, "fault", || {
                    let how = if *hold { ", links hold messages" } else { "" };
                    format!("partition {side:?} | rest (fault {f}{how})")
                });
                let end = (self.now_us + dur_ms * 1_000).min(self.plan.active_end_ms * 1_000);
                self.push(end, Ev::FaultOff(f));
            }
            Action::OneWay { from, to, dur_ms } => {
                let links: Vec<(usize, usize)> = from
                    .iter()
                    .flat_map(|a| to.iter().map(move |b| (*a, *b)))
                    .filter(|(a, b)| a != b && *a < self.nodes.len() && *b < self.nodes.len())
                    .collect();
                let f = self.add_fault(links, false, 0, None);
                self.tr(None, "fault", || {
                    format!("one-way cut {from:?} -> {to:?} (fault {f})")
                });
                let end = (self.now_us + dur_ms * 1_000).min(self.plan.active_end_ms * 1_000);
                self.push(end, Ev::FaultOff(f));
            }
            Action::Flap {
                side,
                dur_ms,
                period_ms,
            } => {
                let mut minority = vec![false; self.nodes.len()];
                for &x in side.iter().filter(|x| **x < self.nodes.len()) {
                    minority[x] = true;
                }
                let links = self.split_links(&minority);
                let f = self.add_fault(links, false, *period_ms, None);
                self.tr(None, "fault", || {
                    format!("flapping partition {side:?} | rest (fault {f})")
                });
                let end = (self.now_us + dur_ms * 1_000).min(self.plan.active_end_ms * 1_000);
                self.push(end, Ev::FaultOff(f));
                self.push(self.now_us + period_ms * 1_000, Ev::Flap(f));
            }
        }
    }

    fn resolve(&mut self, sel: &NodeSel) -> Vec<usize> {
        let n = self.nodes.len();
        match sel {
            NodeSel::Node(i) => (*i < n).then_some(*i).into_iter().collect(),
            NodeSel::ClientNode(c) => self.clients.get(*c).map(|c| c.node).into_iter().collect(),
            NodeSel::Set(v) => v.iter().copied().filter(|i| *i < n).collect(),
            NodeSel::InboxOwner { extra } | NodeSel::InboxFollower { extra } => {
                let user = self.users[0].id;
                let inbox = self.users[0].inbox;
                let owner = self
                    .nodes
                    .iter()
                    .filter_map(|nd| nd.replica.as_ref())
                    .find_map(|r| r.sequencer(&user, &inbox).and_then(|s| s.owner()))
                    .and_then(|o| self.node_index(o))
                    .unwrap_or(0);
                let mut pool: Vec<usize> = (0..n).filter(|i| *i != owner).collect();
                let mut side = Vec::new();
                let mut count = *extra;
                if matches!(sel, NodeSel::InboxOwner { .. }) {
                    side.push(owner);
                } else {
                    count += 1; // the owner stays with the majority
                }
                for _ in 0..count.min(pool.len()) {
                    let k = below(&mut self.rng, pool.len() as u64) as usize;
                    side.push(pool.remove(k));
                }
                side.sort();
                side
            }
        }
    }

    fn split_links(&self, minority: &[bool]) -> Vec<(usize, usize)> {
        let n = self.nodes.len();
        let mut v = Vec::new();
        for a in 0..n {
            for b in 0..n {
                if minority[a] != minority[b] {
                    v.push((a, b));
                }
            }
        }
        v
    }

    fn add_fault(
        &mut self,
        links: Vec<(usize, usize)>,
        hold: bool,
        period_ms: u64,
        partition: Option<usize>,
    ) -> usize {
        for &(a, b) in &links {
            self.net.set_cut(a, b, true, hold);
        }
        self.faults.push(Fault {
            links,
            hold,
            on: true,
            ended: false,
            period_ms,
            partition,
        });
        self.faults.len() - 1
    }

    fn fault_off(&mut self, f: usize) {
        if self.faults[f].ended {
            return;
        }
        self.faults[f].ended = true;
        if self.faults[f].on {
            self.faults[f].on = false;
            let hold = self.faults[f].hold;
            let links = std::mem::take(&mut self.faults[f].links);
            for &(a, b) in &links {
                self.net.set_cut(a, b, false, hold);
                self.release_held(a, b);
            }
            self.faults[f].links = links;
        }
        if let Some(p) = self.faults[f].partition {
            self.partitions[p].open = false;
        }
        self.tr(None, "fault", || format!("fault {f} healed"));
    }

    fn flap(&mut self, f: usize) {
        let fl = &mut self.faults[f];
        if fl.ended {
            return;
        }
        fl.on = !fl.on;
        let on = fl.on;
        for &(a, b) in &fl.links {
            self.net.set_cut(a, b, on, false);
        }
        let p = fl.period_ms;
        self.tr(None, "fault", || {
            format!("fault {f} {}", if on { "cut" } else { "open" })
        });
        self.push(self.now_us + p * 1_000, Ev::Flap(f));
    }

    /// A link that works again delivers what it held, in order (a link
    /// still cut by a fault that drops loses it: the connection broke).
    fn release_held(&mut self, from: usize, to: usize) {
        if self.net.holds(from, to) {
            return;
        }
        let q = std::mem::take(&mut self.held[from * self.nodes.len() + to]);
        if self.net.is_cut(from, to) {
            self.stats.net_dropped += q.len() as u64;
            return;
        }
        let mut at = self.now_us;
        for wire in q {
            self.stats.net_held += 1;
            at = at.max(self.now_us + self.net.latency_us(&mut self.rng, from, to));
            self.push(at, Ev::Deliver { from, to, wire });
        }
    }

    fn crash_now(&mut self, i: usize, how: &str) {
        let Some(r) = self.nodes[i].replica.take() else {
            return;
        };
        // Its connections reset: what its cut links held is gone.
        let n = self.nodes.len();
        for j in 0..n {
            for k in [i * n + j, j * n + i] {
                self.stats.net_dropped += self.held[k].len() as u64;
                self.held[k].clear();
            }
        }
        let mut store = r.into_store();
        store.crash();
        let n = &mut self.nodes[i];
        n.down_store = Some(store);
        n.crash_next = false;
        self.stats.crashes += 1;
        self.pending.retain(|(node, _, _), _| *node != i);
        self.locked_deliveries.retain(|(node, _, _), _| *node != i);
        let how = how.to_string();
        self.tr(Some(i), "crash", || how);
        // Its clients notice the dropped connection and fail over.
        let cs = self.by_node[i].clone();
        for c in cs {
            self.failover(c, "node crashed");
        }
    }

    fn restart(&mut self, i: usize) {
        let Some(store) = self.nodes[i].down_store.take() else {
            return;
        };
        let cfg = self.nodes[i].cfg.clone();
        let mut r = match Replica::restore(cfg, store) {
            Ok(r) => r,
            Err(e) => {
                self.fail("L2_convergent", Some(i), format!("restore failed: {e}"));
                return;
            }
        };
        let now = self.node_now(i);
        for (k, u) in self.users.iter().enumerate() {
            if !self.nodes[i].unlocked.contains(&k) {
                continue;
            }
            if let Err(e) = r.unlock(now, u.id, secrets(u.secret_seed)) {
                let d = format!("unlock after restart failed: {e}");
                self.check
                    .fail(self.now_us / 1_000, "L2_convergent", Some(i), d);
            }
        }
        self.nodes[i].replica = Some(r);
        self.nodes[i].incarnation += 1;
        self.stats.restarts += 1;
        self.tr(Some(i), "restart", String::new);
        self.release(i);
        // S4 across the restart: what it showed, it still shows.
        let keys: Vec<BoxKey> = {
            let mut k: Vec<BoxKey> = self.check.boxes[i].keys().copied().collect();
            k.sort();
            k
        };
        let at = self.ms();
        for key in keys {
            let r = self.nodes[i].replica.as_ref().expect("up");
            match r.mailbox(&self.users[key.0].id, &key.1) {
                Ok(v) => self.check.compare_shadow(at, i, key, v, "after restart"),
                Err(_) => {
                    if self.check.boxes[i]
                        .get(&key)
                        .is_some_and(|b| !b.live.is_empty())
                    {
                        let d = format!("mailbox {:?} gone after restart", key.1);
                        self.check.fail(at, "S4_stable", Some(i), d);
                    }
                }
            }
        }
    }

    fn heal(&mut self) {
        self.tr(None, "heal", || "end of client activity and faults".into());
        for f in 0..self.faults.len() {
            self.fault_off(f);
        }
        for i in 0..self.nodes.len() {
            self.nodes[i].crash_next = false;
            self.restart(i);
        }
        self.quiet = true;
        self.push(self.now_us + CHECK_MS * 1_000, Ev::Check);
    }

    // ----- clients -------------------------------------------------------

    fn failover(&mut self, c: usize, why: &str) {
        let old = self.clients[c].node;
        let cands: Vec<usize> = (0..self.nodes.len())
            .filter(|i| *i != old && self.up(*i))
            .collect();
        if cands.is_empty() {
            return;
        }
        let to = cands[below(&mut self.rng, cands.len() as u64) as usize];
        self.by_node[old].retain(|x| *x != c);
        self.by_node[to].push(c);
        self.clients[c].node = to;
        self.stats.failovers += 1;
        let why = format!("client {c} fails over from node {old} to node {to}: {why}");
        self.tr(Some(to), "failover", || why);
        // The client logs in there: the node unlocks the user's keys.
        let u = self.clients[c].user;
        if !self.nodes[to].unlocked.contains(&u) {
            let now = self.node_now(to);
            let (id, seed) = (self.users[u].id, self.users[u].secret_seed);
            if let Some(r) = self.nodes[to].replica.as_mut() {
                if let Err(e) = r.unlock(now, id, secrets(seed)) {
                    let d = format!("unlock at failover failed: {e}");
                    self.check
                        .fail(self.now_us / 1_000, "L2_convergent", Some(to), d);
                }
            }
            self.nodes[to].unlocked.insert(u);
            self.release(to);
        }
        let boxes: Vec<MailboxId> = self.clients[c].boxes.keys().copied().collect();
        for mb in boxes {
            self.resync_box(c, mb);
        }
    }

    /// SELECT (QRESYNC) of `mb` by client `c` on its node.
    fn resync_box(&mut self, c: usize, mb: MailboxId) {
        let node = self.clients[c].node;
        let u = self.clients[c].user;
        let user = self.users[u].id;
        let at = self.ms();
        let Some(r) = self.nodes[node].replica.as_ref() else {
            return;
        };
        let listed = r
            .mailboxes(&user)
            .map(|l| l.iter().any(|m| m.id == mb))
            .unwrap_or(false);
        if !listed {
            return;
        }
        let Ok(view) = r.mailbox(&user, &mb) else {
            return;
        };
        let fresh;
        let spaces = match r.spaces(&user, &mb) {
            Some(s) => s,
            None => {
                fresh = Spaces::new();
                &fresh
            }
        };
        self.stats.resyncs += 1;
        let key = (u, mb);
        let uv = view.uidvalidity();
        let check = &self.check;
        let nodes = &self.nodes;
        let behind = |e: &EntryId| {
            nodes.iter().enumerate().any(|(j, n)| {
                j != node
                    && n.replica.as_ref().is_some_and(|r| {
                        r.mailbox(&user, &mb).is_ok_and(|v| {
                            v.shown_ops().any(|(op, _)| {
                                !view.is_shown(op) && r.op_touches(&user, &mb, op, e)
                            })
                        })
                    })
            })
        };
        let b = self.clients[c].boxes.entry(mb).or_default();
        let f = resync(
            b,
            node,
            mb,
            view,
            spaces,
            |uid| check.exposed(node, &key, uv, uid),
            behind,
        );
        self.stats.stale_reads += f.stale;
        for (inv, d) in f.violations {
            let d = format!("client {c}: {d}");
            self.check.fail(at, inv, Some(node), d);
        }
        if self.trace.is_some() {
            let s = f.stale;
            self.tr(Some(node), "resync", || {
                format!("client {c} mailbox {mb:?} (stale UIDs {s})")
            });
        }
    }

    fn deliver_to(&mut self, u: usize, node: usize, name: &str) {
        if !self.up(node) {
            return;
        }
        let user = self.users[u].id;
        let mb = if name == "INBOX" {
            self.users[u].inbox
        } else {
            match self.nodes[node]
                .replica
                .as_ref()
                .map(|r| r.lookup(&user, name))
            {
                Some(Ok(m)) => m,
                _ => return,
            }
        };
        self.stats.ops += 1;
        self.stats.deliveries += 1;
        if name != "INBOX" {
            self.append_to(None, u, node, mb);
            return;
        }
        // LMTP: sealed to the user's public key, as a node without the
        // user's keys delivers (ARCHITECTURE §7).
        let raw = self.body();
        let public = self.users[u].public;
        let l1 = self.l1_applies(node, u, &mb);
        let now = self.node_now(node);
        let Some(r) = self.nodes[node].replica.as_mut() else {
            return;
        };
        let res = r.deliver(
            now,
            &mut self.rng,
            self.users[u].id,
            &public,
            mb,
            NewMessage {
                raw: &raw,
                flags: Vec::new(),
                internal_date_ms: now as i64,
            },
        );
        if let (Ok(t), Some(r)) = (&res, self.nodes[node].replica.as_ref()) {
            if !r.is_unlocked(&self.users[u].id) {
                // Without the keys the node cannot name the entry; the op it
                // just logged (its newest in the mailbox's log) names it.
                let me = self.ids[node];
                let seq = r
                    .log_versions(&self.users[u].id)
                    .into_iter()
                    .find(|(l, _)| *l == aerogramme_proto::ids::LogId::Mailbox(mb))
                    .map_or(0, |(_, v)| v.prefix.get(&me));
                let inc = self.nodes[node].incarnation;
                let op = OpId { origin: me, seq };
                self.locked_deliveries.insert((node, inc, *t), op);
            }
        }
        self.after_action(None, u, node, mb, "deliver", l1, res, 1);
    }

    fn body(&mut self) -> Vec<u8> {
        self.msg_no += 1;
        let n = self.msg_no;
        let pad = below(&mut self.rng, 200) as usize;
        format!(
            "From: sim@example.org\r\nTo: user@example.org\r\nSubject: message {n}\r\nMessage-ID: <{n}@sim>\r\n\r\nbody {n} {}\r\n",
            "x".repeat(pad)
        )
        .into_bytes()
    }

    /// Whether L1 promises an acknowledgement in bounded time for an action
    /// on `mb` at `node`: the node holds a reservation for the mailbox with
    /// room above what it exposed and above every final value it knows
    /// (ARCHITECTURE §4.3: otherwise it waits for the owner).
    fn l1_applies(&self, node: usize, u: usize, mb: &MailboxId) -> bool {
        let Some(r) = self.nodes[node].replica.as_ref() else {
            return false;
        };
        let user = &self.users[u].id;
        let Some(s) = r.sequencer(user, mb) else {
            return false;
        };
        let sp = s.spaces();
        let Some(res) = sp.reservation_of(r.id()) else {
            return false;
        };
        let (eu, em) = r
            .mailbox(user, mb)
            .map(|v| (v.uidnext() as u64 - 1, v.highest_modseq()))
            .unwrap_or((0, 0));
        let ustart = res.uids.lo.max(eu + 1).max(sp.max_uid + 1);
        let mstart = res.modseqs.lo.max(em + 1).max(sp.max_modseq + 1);
        ustart + 2 < res.uids.hi && mstart < res.modseqs.hi
    }

    /// When the forward timeout of an action has passed: if the node's
    /// reservation is not usable then, L1 promises nothing for it.
    fn l1_probe(&mut self, node: usize, inc: u32, t: Ticket) {
        let Some(p) = self.pending.get(&(node, inc, t)) else {
            return;
        };
        if !p.l1 {
            return;
        }
        let (u, mb) = (p.user, p.mailbox);
        if !self.l1_applies(node, u, &mb) {
            if let Some(p) = self.pending.get_mut(&(node, inc, t)) {
                p.l1 = false;
            }
            self.stats.l1_exempt += 1;
        }
    }

    fn register(&mut self, node: usize, ticket: Ticket, p: PendingAction) {
        if !p.l1 {
            self.stats.l1_exempt += 1;
        }
        let inc = self.nodes[node].incarnation;
        if p.l1 {
            let at = self.now_us + (self.plan.seq.forward_timeout_ms + self.plan.tick_ms) * 1_000;
            self.push(at, Ev::L1Probe(node, inc, ticket));
        }
        self.pending.insert((node, inc, ticket), p);
    }

    fn count_written(&mut self, node: usize, n: u64) {
        for (p, rec) in self.partitions.iter().enumerate() {
            if rec.open {
                let side = rec.minority[node] as usize;
                self.stats.partitions[p].0[side] += n;
            }
        }
    }

    fn append_to(&mut self, client: Option<usize>, u: usize, node: usize, mb: MailboxId) {
        let raw = self.body();
        let flags = if below(&mut self.rng, 4) == 0 {
            vec![Flag::Seen]
        } else {
            Vec::new()
        };
        let user = self.users[u].id;
        let l1 = self.l1_applies(node, u, &mb);
        let now = self.node_now(node);
        let date = now as i64;
        let Some(r) = self.nodes[node].replica.as_mut() else {
            return;
        };
        let res = r.append(
            now,
            &mut self.rng,
            user,
            mb,
            NewMessage {
                raw: &raw,
                flags,
                internal_date_ms: date,
            },
        );
        self.after_action(client, u, node, mb, "append", l1, res, 1);
    }

    #[allow(clippy::too_many_arguments)]
    fn after_action(
        &mut self,
        client: Option<usize>,
        u: usize,
        node: usize,
        mb: MailboxId,
        kind: &'static str,
        l1: bool,
        res: Result<Ticket, ReplicaError>,
        adds: u64,
    ) {
        match res {
            Ok(t) => {
                if adds > 0 {
                    self.count_written(node, adds);
                }
                let p = PendingAction {
                    client,
                    user: u,
                    mailbox: mb,
                    kind,
                    issued_us: self.now_us,
                    l1,
                };
                self.register(node, t, p);
                if self.trace.is_some() {
                    let who = client.map_or("lmtp".to_string(), |c| format!("client {c}"));
                    self.tr(Some(node), "op", || {
                        format!("{who} {kind} {mb:?} -> ticket {}", t.0)
                    });
                }
            }
            Err(e) => self.refused(client, node, kind, e),
        }
        self.release(node);
    }

    fn refused(&mut self, client: Option<usize>, node: usize, kind: &'static str, e: ReplicaError) {
        self.stats.ops_refused += 1;
        if let (Some(c), ReplicaError::NoSuchMailbox) = (client, &e) {
            self.clients[c].selected = None;
        }
        if self.trace.is_some() {
            let who = client.map_or("lmtp".to_string(), |c| format!("client {c}"));
            self.tr(Some(node), "op", || format!("{who} {kind}: NO {e}"));
        }
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        if v.is_empty() {
            None
        } else {
            Some(v[below(&mut self.rng, v.len() as u64) as usize].clone())
        }
    }

    /// Some UIDs of the client's cache of `mb` (a few, at random).
    fn pick_uids(&mut self, c: usize, mb: &MailboxId, max: usize) -> Vec<u32> {
        let uids: Vec<u32> = self.clients[c]
            .boxes
            .get(mb)
            .map(|b| b.msgs.keys().copied().collect())
            .unwrap_or_default();
        if uids.is_empty() {
            return Vec::new();
        }
        let k = between(&mut self.rng, 1, max as u64) as usize;
        let mut out: Vec<u32> = (0..k).filter_map(|_| self.pick(&uids)).collect();
        out.sort();
        out.dedup();
        out
    }

    fn listed(&self, node: usize, u: usize) -> Vec<(MailboxId, String)> {
        self.nodes[node]
            .replica
            .as_ref()
            .and_then(|r| r.mailboxes(&self.users[u].id).ok())
            .map(|l| l.into_iter().map(|m| (m.id, m.name)).collect())
            .unwrap_or_default()
    }

    fn client_op(&mut self, c: usize, mut kind: OpKind) {
        if !self.up(self.clients[c].node) {
            self.failover(c, "node down");
        }
        let node = self.clients[c].node;
        if !self.up(node) {
            return;
        }
        let u = self.clients[c].user;
        let user = self.users[u].id;
        self.stats.ops += 1;
        let selected = match self.clients[c].selected {
            Some(mb) => mb,
            None => {
                let inbox = self.users[u].inbox;
                self.clients[c].selected = Some(inbox);
                self.resync_box(c, inbox);
                inbox
            }
        };
        let cached = self.clients[c]
            .boxes
            .get(&selected)
            .map_or(0, |b| b.msgs.len());
        if matches!(kind, OpKind::Append | OpKind::Copy) && cached > self.plan.mailbox_cap {
            kind = OpKind::Expunge;
        }
        match kind {
            OpKind::Append => {
                let mb = if below(&mut self.rng, 5) == 0 {
                    let l = self.listed(node, u);
                    self.pick(&l).map_or(selected, |x| x.0)
                } else {
                    selected
                };
                self.append_to(Some(c), u, node, mb);
            }
            OpKind::Flags => {
                // Mostly a few UIDs (one op, several entries), sometimes
                // every UID the client knows, like `STORE 1:*` (several ops).
                let uids = if below(&mut self.rng, 8) == 0 {
                    let mut all: Vec<u32> = self.clients[c]
                        .boxes
                        .get(&selected)
                        .map(|b| b.msgs.keys().copied().collect())
                        .unwrap_or_default();
                    all.sort_unstable();
                    all
                } else {
                    self.pick_uids(c, &selected, 3)
                };
                let mode = match below(&mut self.rng, 10) {
                    0..=4 => FlagMode::Add,
                    5..=7 => FlagMode::Remove,
                    _ => FlagMode::Replace,
                };
                let pool = self.flags.clone();
                let nf = between(&mut self.rng, 1, 2);
                let mut flags: Vec<Flag> = (0..nf).filter_map(|_| self.pick(&pool)).collect();
                flags.sort();
                flags.dedup();
                let l1 = self.l1_applies(node, u, &selected);
                let now = self.node_now(node);
                let Some(r) = self.nodes[node].replica.as_mut() else {
                    return;
                };
                let res = r.store_flags(now, &mut self.rng, user, selected, &uids, mode, &flags);
                self.after_action(Some(c), u, node, selected, "store", l1, res, 0);
            }
            OpKind::Expunge => {
                let k = 1 + cached / 30;
                let uids = self.pick_uids(c, &selected, k);
                self.note_expunged(node, u, &selected, &uids);
                let l1 = self.l1_applies(node, u, &selected);
                let now = self.node_now(node);
                let Some(r) = self.nodes[node].replica.as_mut() else {
                    return;
                };
                let res = r.expunge(now, &mut self.rng, user, selected, &uids);
                self.after_action(Some(c), u, node, selected, "expunge", l1, res, 0);
            }
            OpKind::Copy | OpKind::Move => {
                let l: Vec<(MailboxId, String)> = self
                    .listed(node, u)
                    .into_iter()
                    .filter(|(id, _)| *id != selected)
                    .collect();
                let Some((dest, _)) = self.pick(&l) else {
                    self.stats.ops_refused += 1;
                    return;
                };
                let uids = self.pick_uids(c, &selected, 2);
                let is_move = kind == OpKind::Move;
                if is_move {
                    self.note_expunged(node, u, &selected, &uids);
                }
                let l1 = self.l1_applies(node, u, &selected) && self.l1_applies(node, u, &dest);
                let now = self.node_now(node);
                let Some(r) = self.nodes[node].replica.as_mut() else {
                    return;
                };
                let present = r
                    .mailbox(&user, &selected)
                    .map(|v| uids.iter().filter(|x| v.message(**x).is_some()).count())
                    .unwrap_or(0) as u64;
                let res = if is_move {
                    r.move_messages(now, &mut self.rng, user, selected, &uids, dest)
                } else {
                    r.copy(now, &mut self.rng, user, selected, &uids, dest)
                };
                let name = if is_move { "move" } else { "copy" };
                self.after_action(Some(c), u, node, dest, name, l1, res, present);
            }
            OpKind::Create => {
                let name = self.pick(NAMES).unwrap_or("Work");
                let now = self.node_now(node);
                let Some(r) = self.nodes[node].replica.as_mut() else {
                    return;
                };
                match r.create_mailbox(now, &mut self.rng, user, name, None) {
                    Ok(id) => self.tr(Some(node), "op", || {
                        format!("client {c} create {name} {id:?}")
                    }),
                    Err(e) => self.refused(Some(c), node, "create", e),
                }
                self.release(node);
            }
            OpKind::Rename | OpKind::Delete => {
                let inbox = self.users[u].inbox;
                let l: Vec<(MailboxId, String)> = self
                    .listed(node, u)
                    .into_iter()
                    .filter(|(id, _)| *id != inbox)
                    .collect();
                let Some((id, old)) = self.pick(&l) else {
                    self.stats.ops_refused += 1;
                    return;
                };
                let now = self.node_now(node);
                let res = if kind == OpKind::Rename {
                    let name = self.pick(NAMES).unwrap_or("Work");
                    let Some(r) = self.nodes[node].replica.as_mut() else {
                        return;
                    };
                    r.rename_mailbox(now, &mut self.rng, user, id, name)
                        .map(|_| format!("rename {old} -> {name}"))
                } else {
                    let entries: Vec<EntryId> = self.nodes[node]
                        .replica
                        .as_ref()
                        .and_then(|r| r.mailbox(&user, &id).ok())
                        .map(|v| v.state().live_entries().copied().collect())
                        .unwrap_or_default();
                    let Some(r) = self.nodes[node].replica.as_mut() else {
                        return;
                    };
                    let res = r.delete_mailbox(now, &mut self.rng, user, id);
                    if res.is_ok() {
                        self.expunged.extend(entries);
                    }
                    res.map(|_| format!("delete {old}"))
                };
                match res {
                    Ok(d) => self.tr(Some(node), "op", || format!("client {c} {d}")),
                    Err(e) => self.refused(Some(c), node, kind.name(), e),
                }
                self.release(node);
            }
            OpKind::Select => {
                let l = self.listed(node, u);
                if let Some((mb, _)) = self.pick(&l) {
                    self.clients[c].selected = Some(mb);
                    self.resync_box(c, mb);
                }
            }
            OpKind::Resync => self.resync_box(c, selected),
            OpKind::Failover => self.failover(c, "client's choice"),
        }
    }

    /// Entries a client expunges (EXPUNGE, MOVE): their loss is no violation.
    fn note_expunged(&mut self, node: usize, u: usize, mb: &MailboxId, uids: &[u32]) {
        let user = self.users[u].id;
        if let Some(v) = self.nodes[node]
            .replica
            .as_ref()
            .and_then(|r| r.mailbox(&user, mb).ok())
        {
            for uid in uids {
                if let Some(m) = v.message(*uid) {
                    self.expunged.insert(m.entry);
                }
            }
        }
    }

    // ----- convergence (L2) ------------------------------------------------

    /// `Ok` when every replica shows the same mailboxes, UIDVALIDITYs, UID
    /// maps, flags, MODSEQs and HIGHESTMODSEQs, and holds no op back.
    fn agreement(&self) -> Result<(), String> {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|i| self.up(*i)).collect();
        if up.is_empty() {
            return Ok(());
        }
        let replica = |i: usize| self.nodes[i].replica.as_ref().expect("up");
        for (u, su) in self.users.iter().enumerate() {
            // Views where the user is unlocked; op logs and ledgers where
            // it is not (`Plan::unlock_sessions`).
            let (unlocked, locked): (Vec<usize>, Vec<usize>) =
                up.iter().partition(|i| replica(**i).is_unlocked(&su.id));
            if let Some(&first) = unlocked.first() {
                self.views_agree(u, &unlocked, first)?;
            }
            if let Some(&reference) = unlocked.first().or(up.first()) {
                self.ledgers_agree(u, &locked, reference)?;
            }
        }
        Ok(())
    }

    /// L2 between replicas that hold the user's keys: mailbox lists, views.
    fn views_agree(&self, u: usize, up: &[usize], first: usize) -> Result<(), String> {
        let su = &self.users[u];
        {
            let r0 = self.nodes[first].replica.as_ref().expect("up");
            let list0 = r0.mailboxes(&su.id).map_err(|e| e.to_string())?;
            for &i in &up[1..] {
                let r = self.nodes[i].replica.as_ref().expect("up");
                let l = r.mailboxes(&su.id).map_err(|e| e.to_string())?;
                if l != list0 {
                    let names = |l: &[aerogramme_proto::mailbox::MailboxView]| {
                        l.iter().map(|m| m.name.clone()).collect::<Vec<_>>()
                    };
                    return Err(format!(
                        "user {u}: mailbox lists differ: node {first} {:?}, node {i} {:?}",
                        names(&list0),
                        names(&l)
                    ));
                }
            }
            for m in &list0 {
                let v0 = r0.mailbox(&su.id, &m.id).map_err(|e| e.to_string())?;
                for &i in up {
                    let r = self.nodes[i].replica.as_ref().expect("up");
                    let v = r.mailbox(&su.id, &m.id).map_err(|e| e.to_string())?;
                    if v.held() > 0 {
                        return Err(format!(
                            "user {u} mailbox {} ({:?}): node {i} holds {} ops back",
                            m.name,
                            m.id,
                            v.held()
                        ));
                    }
                    let a = (v0.uidvalidity(), v0.highest_modseq(), v0.exists());
                    let b = (v.uidvalidity(), v.highest_modseq(), v.exists());
                    if a != b {
                        return Err(format!(
                            "user {u} mailbox {}: (UIDVALIDITY, HIGHESTMODSEQ, EXISTS) node {first} {a:?}, node {i} {b:?}",
                            m.name
                        ));
                    }
                }
            }
            // Full comparison only once the cheap one agrees.
            for m in &list0 {
                let v0 = r0.mailbox(&su.id, &m.id).map_err(|e| e.to_string())?;
                let map0 = v0.uid_map();
                for &i in &up[1..] {
                    let r = self.nodes[i].replica.as_ref().expect("up");
                    let v = r.mailbox(&su.id, &m.id).map_err(|e| e.to_string())?;
                    if v.uid_map() != map0 {
                        return Err(format!(
                            "user {u} mailbox {}: UID maps differ between node {first} and node {i}",
                            m.name
                        ));
                    }
                    for uid in map0.keys() {
                        let a = v0.message(*uid).map(|x| (x.view, x.modseq));
                        let b = v.message(*uid).map(|x| (x.view, x.modseq));
                        if a != b {
                            return Err(format!(
                                "user {u} mailbox {} UID {uid}: node {first} {a:?}, node {i} {b:?}",
                                m.name
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// L2 for replicas without the user's keys: they hold exactly the op
    /// logs of `reference` (every op, so every acknowledged message, is
    /// there) and the same ledger of every mailbox (commit index, then
    /// every op's final values), so that unlocking the user there would
    /// show the reference's views.
    fn ledgers_agree(&self, u: usize, locked: &[usize], reference: usize) -> Result<(), String> {
        if locked.is_empty() {
            return Ok(());
        }
        let id = &self.users[u].id;
        let r0 = self.nodes[reference].replica.as_ref().expect("up");
        let logs0 = r0.log_versions(id);
        let boxes: Vec<MailboxId> = logs0
            .iter()
            .filter_map(|(l, _)| match l {
                aerogramme_proto::ids::LogId::Mailbox(mb) => Some(*mb),
                _ => None,
            })
            .collect();
        let ledger = |i: usize, mb: &MailboxId| {
            self.nodes[i]
                .replica
                .as_ref()
                .and_then(|r| r.sequencer(id, mb))
                .map(|s| s.commit_index())
        };
        for &i in locked {
            let r = self.nodes[i].replica.as_ref().expect("up");
            if r.log_versions(id) != logs0 {
                return Err(format!(
                    "user {u}: op logs differ between node {reference} and node {i} (locked)"
                ));
            }
            for mb in &boxes {
                let (a, b) = (ledger(reference, mb), ledger(i, mb));
                if a != b {
                    return Err(format!(
                        "user {u} mailbox {mb:?}: commit index node {reference} {a:?}, node {i} {b:?} (locked)"
                    ));
                }
                let undecided = r.sequencer(id, mb).map_or(0, |s| s.undecided());
                if undecided > 0 {
                    return Err(format!(
                        "user {u} mailbox {mb:?}: node {i} (locked) has {undecided} own ops without a final value"
                    ));
                }
            }
        }
        // Full comparison only once the cheap one agrees.
        for mb in &boxes {
            let finals = |i: usize| {
                self.nodes[i]
                    .replica
                    .as_ref()
                    .and_then(|r| r.sequencer(id, mb))
                    .map(|s| s.assignments(|_, _, f| f == aerogramme_proto::seq::Fate::Final))
            };
            let f0 = finals(reference);
            for &i in locked {
                if finals(i) != f0 {
                    return Err(format!(
                        "user {u} mailbox {mb:?}: final values differ between node {reference} and node {i} (locked)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The quiet period: every replica must come to agree (L2) and every
    /// pending action must be acknowledged. Convergence time is measured
    /// from the heal to the start of the agreement that lasts.
    fn quiet_check(&mut self) {
        let waited = self.now_us - self.plan.active_end_ms * 1_000;
        let res = self.agreement();
        match &res {
            Ok(()) => {
                if self.agree_since.is_none() {
                    self.agree_since = Some(waited / 1_000);
                }
            }
            Err(_) => self.agree_since = None,
        }
        let timeout = waited > self.plan.max_quiet_ms * 1_000;
        if (res.is_ok() && self.pending.is_empty()) || timeout {
            self.converged_ms = self.agree_since;
            if let Err(e) = res {
                self.l2_detail = Some(e);
            }
            let c = self.converged_ms;
            self.tr(None, "converged", || match c {
                Some(ms) => format!("replicas agree since {ms} ms after the heal"),
                None => "replicas do not agree".to_string(),
            });
            self.done = true;
        } else {
            // Every 10 ms for the first second, then less and less often
            // (a full comparison of every replica is not free).
            let next = (CHECK_MS * 1_000).max(waited / 10).min(1_000_000);
            self.push(self.now_us + next, Ev::Check);
        }
    }

    // ----- the end ---------------------------------------------------------

    fn finish(&mut self) {
        if !self.done {
            // The queue ran dry (cannot happen while nodes tick).
            self.l2_detail = Some("the simulation stopped early".into());
        }
        if let Some(d) = self.l2_detail.clone() {
            let d = format!(
                "not converged {} ms after the heal: {d}",
                self.plan.max_quiet_ms
            );
            self.fail_since(None, "L2_convergent", None, d);
        }
        let at = self.ms();
        // S4 at the end: every shadow equals its replica's map.
        for i in 0..self.nodes.len() {
            let mut keys: Vec<BoxKey> = self.check.boxes[i].keys().copied().collect();
            keys.sort();
            for key in keys {
                let Some(r) = self.nodes[i].replica.as_ref() else {
                    continue;
                };
                if let Ok(v) = r.mailbox(&self.users[key.0].id, &key.1) {
                    self.check.compare_shadow(at, i, key, v, "at the end");
                }
            }
        }
        // No acknowledged message lost.
        let mut lost = Vec::new();
        // Deliveries acknowledged where the user was locked: their entries,
        // from the view of a replica holding the keys.
        for (u, mb, op, node, uid) in std::mem::take(&mut self.acked_ops) {
            let id = self.users[u].id;
            let reference = self
                .nodes
                .iter()
                .find_map(|n| n.replica.as_ref().filter(|r| r.is_unlocked(&id)));
            let Some(r) = reference else {
                continue; // no replica holds the keys: nothing to compare
            };
            let fin = r.sequencer(&id, &mb).and_then(|s| s.final_of(&op));
            let entry = fin.and_then(|a| a.uids.first()).and_then(|x| {
                r.mailbox(&id, &mb)
                    .ok()
                    .and_then(|v| v.entry_of(*x).or_else(|| v.expunged_entry(*x)))
            });
            match entry {
                Some(e) => {
                    self.acked.entry((u, mb, e)).or_insert((node, uid));
                }
                None => lost.push(format!(
                    "delivery {op:?} acknowledged as UID {uid} in {mb:?} by node {node} (without the keys) names no message (final values {fin:?})"
                )),
            }
        }
        for ((u, mb, e), (node, uid)) in &self.acked {
            if self.expunged.contains(e) {
                continue;
            }
            for (i, n) in self.nodes.iter().enumerate() {
                let Some(r) = n.replica.as_ref() else {
                    continue;
                };
                // A replica without the user's keys has no view: L2 compared
                // its op logs and ledgers with an unlocked replica's.
                if !r.is_unlocked(&self.users[*u].id) {
                    continue;
                }
                let ok = r
                    .mailbox(&self.users[*u].id, mb)
                    .map(|v| v.uid_of(e).is_some())
                    .unwrap_or(false);
                if !ok {
                    lost.push(format!(
                        "message {e:?} acknowledged as UID {uid} in {mb:?} by node {node} is missing on node {i}"
                    ));
                    break;
                }
            }
        }
        self.lost = lost.len() as u64;
        for d in lost {
            self.fail_since(None, "no_acked_message_lost", None, d);
        }
        // L1: nothing still waiting long after it was issued.
        // L1, and liveness after the heal: nothing still waiting long after
        // it was issued (an action L1 did not cover while its node had no
        // usable reservation must still complete once the network healed).
        let late: Vec<(u64, String)> = self
            .pending
            .iter()
            .filter(|(_, p)| self.now_us - p.issued_us > self.l1_bound_us)
            .map(|((n, _, t), p)| {
                let d = format!(
                    "node {n}: {} (ticket {}) on {:?} issued at {} ms never acknowledged",
                    p.kind,
                    t.0,
                    p.mailbox,
                    p.issued_us / 1_000
                );
                (p.issued_us / 1_000, d)
            })
            .collect();
        for (since, d) in late {
            self.fail_since(Some(since), "L1_available", None, d);
        }
        // Every client resyncs a last time.
        for c in 0..self.clients.len() {
            let boxes: Vec<MailboxId> = self.clients[c].boxes.keys().copied().collect();
            for mb in boxes {
                self.resync_box(c, mb);
            }
        }
        self.judge_e();
        self.log_violations();
    }

    /// E (DESIGN §5): what clients paid, against the scenario's expectation.
    fn judge_e(&mut self) {
        let uv = self.check.uidvalidity_changes;
        let re = self.check.reannounced.len() as u64;
        let (bound, desc) = match self.plan.expect {
            Expect::Zero => (
                Some(0),
                "no UIDVALIDITY change, no re-announced message".to_string(),
            ),
            Expect::UidValidityOnly => (None, "no UIDVALIDITY change".to_string()),
            Expect::PartitionBound => {
                let mut b = 0;
                let mut kinds = Vec::new();
                for (w, several) in &self.stats.partitions {
                    if *several {
                        b += w[0] + w[1];
                        kinds.push(format!("both sides ({}+{})", w[1], w[0]));
                    } else {
                        b += w[0].max(w[1]);
                        kinds.push(format!("one side (max of {}, {})", w[1], w[0]));
                    }
                }
                let k = if kinds.is_empty() {
                    "no partition happened".to_string()
                } else {
                    kinds.join(", ")
                };
                (
                    Some(b),
                    format!("no UIDVALIDITY change, re-announced <= messages written on {k} = {b}"),
                )
            }
        };
        self.e_bound = bound;
        self.e_desc = desc;
        if uv > 0 {
            let d = format!("{uv} UIDVALIDITY change(s)");
            self.fail_since(None, "E_cheap", None, d);
        }
        if let Some(b) = bound {
            if re > b {
                let d = format!("{re} re-announced message(s), expected at most {b}");
                self.fail_since(None, "E_cheap", None, d);
            }
        }
        if self.plan.expect == Expect::PartitionBound {
            // One side only: a replica cut off alone shows its messages from
            // its reservation, above everything the others assign, and the
            // owner confirms them (ARCHITECTURE §4.3).
            let mut mine: Vec<String> = self
                .check
                .reannounced
                .iter()
                .filter(|k| self.cut_off_acked.contains(k))
                .map(|(_, mb, e)| format!("{e} in {mb}"))
                .collect();
            if !mine.is_empty() {
                mine.sort();
                let d = format!(
                    "{} message(s) acknowledged by a replica cut off alone were re-announced at the heal (its values should have been confirmed): {}",
                    mine.len(),
                    mine.join(", ")
                );
                self.fail_since(None, "E_cheap", None, d);
            }
        }
    }
}

/// Runs a scenario.
pub fn run(spec: &RunSpec) -> Result<RunResult, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let ops = spec.ops.unwrap_or(scenario::DEFAULT_OPS);
    let plan = scenario::plan(&spec.scenario, spec.nodes, ops, &spec.overrides, &mut rng)?;
    let kept: Vec<(usize, Sched)> = plan
        .schedule
        .iter()
        .cloned()
        .enumerate()
        .filter(|(i, _)| spec.keep.as_ref().is_none_or(|k| k.contains(i)))
        .collect();
    let mut w = World::new(plan, rng, spec.nodes, spec.break_ownership, spec.trace);
    w.setup();
    w.run_loop(&kept);
    w.finish();
    let report = crate::report::build(spec, &w, kept.len());
    let res = RunResult {
        report,
        net_by_kind: w.stats.net_by_kind.clone(),
        trace: w.trace.take().unwrap_or_default(),
        schedule: kept,
        violations: w.check.violations.clone(),
    };
    if spec.overrides.leak_world {
        // A process that exits right after (the bench) need not spend
        // seconds freeing millions of records.
        std::mem::forget(w);
    }
    Ok(res)
}

/// What the report needs from a finished world.
pub(crate) struct Outcomes<'a> {
    pub stats: &'a Stats,
    pub check: &'a Checker,

    pub converged_ms: Option<u64>,
    pub lost: u64,
    pub sim_ms: u64,
    pub net: &'a NetModel,
    pub e_bound: Option<u64>,
    pub e_desc: &'a str,
}

impl World {
    pub(crate) fn outcomes(&self) -> Outcomes<'_> {
        Outcomes {
            stats: &self.stats,
            check: &self.check,

            converged_ms: self.converged_ms,
            lost: self.lost,
            sim_ms: self.ms(),
            net: &self.net,
            e_bound: self.e_bound,
            e_desc: &self.e_desc,
        }
    }
}
