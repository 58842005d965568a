//! A small deterministic network for the sequencer alone: the simulator
//! (`sim/`) exercises the whole replica; these tests pin the ledger's rules.

use super::*;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};

struct Node {
    seq: Sequencer,
    records: Vec<SeqRecord>,
    up: bool,
    /// What this replica exposed: op → UIDs, and its high-water marks.
    view: HashMap<OpId, Assign>,
    exposed: (u64, u64),
    next_seq: u64,
}

struct Net {
    nodes: Vec<Node>,
    ids: Vec<ReplicaId>,
    queue: Vec<(u64, ReplicaId, ReplicaId, SeqMsg)>,
    now: u64,
    rng: ChaCha8Rng,
    loss_pct: u64,
    cut: HashSet<(ReplicaId, ReplicaId)>,
    /// Cut links hold messages and deliver them at the heal (as a TCP
    /// connection whose packets are dropped does) instead of losing them.
    hold: bool,
    held: Vec<(ReplicaId, ReplicaId, SeqMsg)>,
    /// Every (UID → op) any replica ever exposed: S1 across all replicas.
    uid_owner: HashMap<u32, OpId>,
    reannounced: HashSet<OpId>,
    params: SeqParams,
    /// Heartbeats sent (each copy counts).
    heartbeats: usize,
}

impl Net {
    fn new(n: u64, seed: u64, params: SeqParams) -> Net {
        let ids: Vec<ReplicaId> = (1..=n).map(ReplicaId).collect();
        let nodes = ids
            .iter()
            .map(|id| Node {
                seq: Sequencer::new(*id, &ids, 42, params.clone()),
                records: Vec::new(),
                up: true,
                view: HashMap::new(),
                exposed: (0, 0),
                next_seq: 0,
            })
            .collect();
        Net {
            nodes,
            ids,
            queue: Vec::new(),
            now: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss_pct: 0,
            cut: HashSet::new(),
            hold: false,
            held: Vec::new(),
            uid_owner: HashMap::new(),
            reannounced: HashSet::new(),
            params,
            heartbeats: 0,
        }
    }

    fn idx(&self, r: ReplicaId) -> usize {
        (r.0 - 1) as usize
    }

    fn partition(&mut self, side: &[u64]) {
        self.cut.clear();
        for a in &self.ids {
            for b in &self.ids {
                if side.contains(&a.0) != side.contains(&b.0) {
                    self.cut.insert((*a, *b));
                }
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
        // What the links held arrives in one burst, in the order sent.
        for (k, (from, to, msg)) in std::mem::take(&mut self.held).into_iter().enumerate() {
            self.queue
                .push((self.now + 1 + k as u64 / 64, from, to, msg));
        }
    }

    fn submit(&mut self, node: usize, uids: u32) -> OpId {
        let n = &mut self.nodes[node];
        n.next_seq += 1;
        let op = OpId {
            origin: n.seq.me(),
            seq: n.next_seq,
        };
        n.seq.submit(self.now, op, uids);
        self.flush(node);
        op
    }

    fn flush(&mut self, i: usize) {
        let outs = self.nodes[i].seq.drain();
        let me = self.ids[i];
        for o in outs {
            match o {
                SeqOutput::Persist(r) => self.nodes[i].records.push(r),
                SeqOutput::Send { to, msg } => self.enqueue(me, to, msg),
                SeqOutput::Broadcast(msg) => {
                    for to in self.ids.clone() {
                        if to != me {
                            self.enqueue(me, to, msg.clone());
                        }
                    }
                }
                SeqOutput::Decided { op, assign, fate } => self.expose(i, op, assign, fate),
            }
        }
    }

    fn expose(&mut self, i: usize, op: OpId, assign: Assign, fate: Fate) {
        let n = &mut self.nodes[i];
        if n.view.get(&op) == Some(&assign) {
            return;
        }
        let exposable =
            assign.modseq > n.exposed.1 && assign.uids.iter().all(|&u| u as u64 > n.exposed.0);
        if !exposable {
            if fate == Fate::Final {
                let (u, m) = n.exposed;
                n.seq.request_resequence(self.now, op, u, m);
            }
            return;
        }
        if let Some(old) = n.view.get(&op) {
            if old.uids != assign.uids {
                self.reannounced.insert(op);
            }
        }
        for &u in &assign.uids {
            n.exposed.0 = n.exposed.0.max(u as u64);
            let prev = self.uid_owner.insert(u, op);
            assert!(
                prev.is_none() || prev == Some(op),
                "S1: UID {u} names {prev:?} and {op:?}"
            );
        }
        n.exposed.1 = n.exposed.1.max(assign.modseq);
        n.view.insert(op, assign);
    }

    fn enqueue(&mut self, from: ReplicaId, to: ReplicaId, msg: SeqMsg) {
        if matches!(msg, SeqMsg::Heartbeat { .. }) {
            self.heartbeats += 1;
        }
        if self.cut.contains(&(from, to)) && self.hold {
            self.held.push((from, to, msg));
            return;
        }
        if self.cut.contains(&(from, to)) || self.rng.next_u64() % 100 < self.loss_pct {
            return;
        }
        let at = self.now + 1 + self.rng.next_u64() % 20;
        self.queue.push((at, from, to, msg));
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.queue.retain(|(_, _, to, _)| *to != self.ids[i]);
    }

    fn restart(&mut self, i: usize) {
        let records = self.nodes[i].records.clone();
        let seq = Sequencer::restore(self.ids[i], &self.ids, 42, self.params.clone(), records);
        let n = &mut self.nodes[i];
        n.seq = seq;
        n.up = true;
        // The view is rebuilt from the replayed decisions (the exposure
        // marks are persisted by the replica in the real system).
        self.flush(i);
    }

    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 1;
            let now = self.now;
            let mut due = Vec::new();
            let mut i = 0;
            while i < self.queue.len() {
                if self.queue[i].0 <= now {
                    due.push(self.queue.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            due.sort_by_key(|(at, from, to, _)| (*at, *from, *to));
            for (_, from, to, msg) in due {
                let t = self.idx(to);
                if self.nodes[t].up && !self.cut.contains(&(from, to)) {
                    self.nodes[t].seq.handle(now, from, msg);
                    self.flush(t);
                }
            }
            if now.is_multiple_of(10) {
                for i in 0..self.nodes.len() {
                    if self.nodes[i].up {
                        let exposed = self.nodes[i].exposed;
                        self.nodes[i].seq.tick(now, exposed);
                        self.flush(i);
                    }
                }
            }
        }
    }

    fn assert_converged(&self) {
        let up: Vec<&Node> = self.nodes.iter().filter(|n| n.up).collect();
        let first = &up[0];
        for n in &up[1..] {
            assert_eq!(
                n.seq.commit_index(),
                first.seq.commit_index(),
                "ledgers differ in length"
            );
            assert_eq!(n.seq.committed, first.seq.committed, "ledgers differ");
            if n.view != first.view {
                for (op, a) in &n.view {
                    if first.view.get(op) != Some(a) {
                        eprintln!(
                            "{:?}: {op:?} {a:?} vs {:?} final {:?}",
                            n.seq.me(),
                            first.view.get(op),
                            n.seq.final_of(op)
                        );
                    }
                }
                for (op, a) in &first.view {
                    if !n.view.contains_key(op) {
                        eprintln!(
                            "{:?} lacks {op:?} {a:?}; exposed {:?}",
                            n.seq.me(),
                            n.exposed
                        );
                    }
                }
            }
            if n.view != first.view {
                for m in &up {
                    eprintln!("{:?} owner {:?} is_owner {} commit {} pending {} mine {} promised {:?} role {:?}", m.seq.me(), m.seq.owner(), m.seq.is_owner(), m.seq.commit_index(), m.seq.pending.len(), m.seq.mine.len(), m.seq.promised, m.seq.role);
                }
            }
            assert_eq!(n.view, first.view, "views differ");
        }
        for n in &up {
            assert_eq!(n.seq.undecided(), 0, "{:?} has undecided ops", n.seq.me());
        }
    }
}

fn fast() -> SeqParams {
    SeqParams {
        space: SpaceParams {
            uid_gap: 64,
            uid_range: 16,
            modseq_gap: 64,
            modseq_range: 64,
        },
        heartbeat_ms: 20,
        idle_heartbeat_ms: 75,
        election_timeout_ms: 100,
        forward_timeout_ms: 200,
        batch_ms: 0,
        ..SeqParams::default()
    }
}

#[test]
fn single_writer_gets_ascending_uids_without_reannouncement() {
    let mut net = Net::new(3, 1, fast());
    net.run(500);
    let owner = net.nodes[0].seq.owner().expect("an owner is elected");
    let writer = net.idx(owner);
    let mut last = 0;
    for _ in 0..50 {
        let op = net.submit(writer, 1);
        net.run(60);
        let a = net.nodes[writer]
            .view
            .get(&op)
            .expect("exposed on its origin")
            .clone();
        assert!(a.uids[0] > last);
        last = a.uids[0];
    }
    net.run(500);
    net.assert_converged();
    assert_eq!(net.reannounced.len(), 0);
}

#[test]
fn writers_on_every_node_agree_without_reannouncement() {
    for seed in 0..5 {
        let mut net = Net::new(3, seed, fast());
        net.run(500);
        for round in 0..40 {
            net.submit(round % 3, 1 + (round as u32 % 3));
            net.run(7);
        }
        net.run(2_000);
        net.assert_converged();
        assert_eq!(net.reannounced.len(), 0, "seed {seed}");
        assert_eq!(net.nodes[0].view.len(), 40);
    }
}

#[test]
fn lossy_network_still_converges_and_keeps_s1() {
    for seed in 0..5 {
        let mut net = Net::new(5, seed, fast());
        net.loss_pct = 20;
        net.run(1_000);
        for round in 0..60 {
            net.submit(round % 5, 1);
            net.run(5);
        }
        net.loss_pct = 0;
        net.run(5_000);
        net.assert_converged();
        assert_eq!(net.nodes[0].view.len(), 60);
    }
}

/// Writes on both sides of a partition cutting `minority` off, then heal.
/// Returns (re-announced, written on the minority side, on the majority side).
fn partition_run(seed: u64, minority_side: &[u64]) -> (usize, usize, usize) {
    let mut net = Net::new(5, seed, fast());
    net.run(500);
    let before = net.submit(0, 1);
    net.run(300);
    net.partition(minority_side);
    let (mut minority, mut majority) = (0, 0);
    let m: Vec<usize> = (0..5)
        .filter(|i| minority_side.contains(&(*i as u64 + 1)))
        .collect();
    let big: Vec<usize> = (0..5)
        .filter(|i| !minority_side.contains(&(*i as u64 + 1)))
        .collect();
    let mut own = [0usize; 5];
    for round in 0..10 {
        let a = m[round % m.len()];
        net.submit(a, 1);
        own[a] += 1;
        minority += 1;
        net.submit(big[round % big.len()], 1);
        majority += 1;
        net.run(50);
    }
    net.run(1_000);
    // L1: every cut-off replica shows the messages written on it.
    for &i in &m {
        let shown = net.nodes[i]
            .view
            .keys()
            .filter(|op| op.origin == net.ids[i] && **op != before)
            .count();
        if shown != own[i] {
            let n = &net.nodes[i];
            eprintln!(
                "exposed {:?} cursor {:?} res {:?} spaces next {} {} max {} {} view {:?}",
                n.exposed,
                n.seq.cursor,
                n.seq.spaces.reservation_of(n.seq.me()),
                n.seq.spaces.next_uid,
                n.seq.spaces.next_modseq,
                n.seq.spaces.max_uid,
                n.seq.spaces.max_modseq,
                n.view
            );
        }
        assert_eq!(
            shown, own[i],
            "seed {seed}: node {i} shows its partition-time messages"
        );
    }
    net.heal();
    net.run(5_000);
    net.assert_converged();
    assert_eq!(net.nodes[0].view.len(), 1 + minority + majority);
    (net.reannounced.len(), minority, majority)
}

#[test]
fn partition_with_writes_on_both_sides_heals_within_the_bound() {
    for seed in 0..8 {
        let (re, minority, majority) = partition_run(seed, &[1]);
        // E: at most the messages written on one side are re-announced.
        assert!(
            re <= minority.max(majority),
            "seed {seed}: {re} re-announced of {minority}+{majority}"
        );
    }
}

#[test]
fn partition_with_a_two_replica_minority_converges() {
    for seed in 0..8 {
        let (re, minority, majority) = partition_run(seed, &[1, 2]);
        // Two cut-off replicas do not show each other's provisional
        // messages, so one of them re-announces the other's as well.
        assert!(re <= minority + majority, "seed {seed}: {re} re-announced");
    }
}

#[test]
fn owner_crash_fails_over_without_client_cost() {
    for seed in 0..5 {
        let mut net = Net::new(3, seed, fast());
        net.run(500);
        for i in 0..10 {
            net.submit(i % 3, 1);
            net.run(20);
        }
        net.run(300);
        let owner = net.nodes[0].seq.owner().unwrap();
        let o = net.idx(owner);
        net.crash(o);
        let others: Vec<usize> = (0..3).filter(|i| *i != o).collect();
        for i in 0..10 {
            net.submit(others[i % 2], 1);
            net.run(30);
        }
        net.run(3_000);
        assert_ne!(net.nodes[others[0]].seq.owner(), Some(owner));
        net.restart(o);
        net.run(3_000);
        net.assert_converged();
        assert_eq!(net.reannounced.len(), 0, "seed {seed}");
        assert_eq!(net.nodes[o].view.len(), 20);
    }
}

#[test]
fn restart_keeps_ledger_and_provisional_assignments() {
    let mut net = Net::new(3, 9, fast());
    net.run(500);
    net.partition(&[1]);
    let op = net.submit(0, 1);
    net.run(400);
    let provisional = net.nodes[0]
        .view
        .get(&op)
        .cloned()
        .expect("provisional UID shown");
    net.crash(0);
    net.restart(0);
    assert_eq!(
        net.nodes[0].view.get(&op),
        Some(&provisional),
        "S2 across restart"
    );
    // The cursor survived: the next provisional UID is above the first.
    let op2 = net.submit(0, 1);
    net.run(400);
    assert!(net.nodes[0].view[&op2].uids[0] > provisional.uids[0]);
    net.heal();
    net.run(3_000);
    net.assert_converged();
}

/// An owner cut off from the others keeps writing, then the others write.
fn isolated_owner_scenario(params: SeqParams) {
    for seed in 0..20 {
        let mut net = Net::new(3, seed, params.clone());
        net.run(500);
        let owner = net.idx(net.nodes[0].seq.owner().unwrap());
        let others: Vec<u64> = (1..=3).filter(|r| *r != owner as u64 + 1).collect();
        net.partition(&others);
        for _ in 0..5 {
            net.submit(owner, 1);
            net.run(10);
        }
        net.run(1_000);
        for i in 0..5 {
            net.submit((owner + 1 + i % 2) % 3, 1);
            net.run(20);
        }
        net.heal();
        net.run(3_000);
        net.assert_converged();
    }
}

#[test]
fn isolated_owner_is_safe() {
    isolated_owner_scenario(fast());
}

#[test]
fn broken_rule_is_caught() {
    // Committing without a majority lets a new owner reuse UIDs the old one
    // exposed: the S1 check must fire on the same scenario that passes above.
    let mut params = fast();
    params.unsafe_commit_without_majority = true;
    let caught = std::panic::catch_unwind(move || isolated_owner_scenario(params));
    assert!(caught.is_err(), "the S1 check must catch a broken rule");
}

/// Finding 4 of the simulator: a cut-off replica whose ops were written at
/// different moments re-forwarded each one on its own timer, so at the heal
/// the owner learned their provisional values piecemeal and out of order;
/// once it confirmed a higher one (or assigned above it), the lower ones
/// were no longer above every final value and were re-announced, beyond the
/// one-side bound of E. The cut-off replica's own messages must all keep
/// their provisional values, whatever the phases of its writes.
#[test]
fn heal_confirms_every_provisional_value_of_the_cut_off_replica() {
    for seed in 0..8 {
        let mut net = Net::new(3, seed, fast());
        net.run(500);
        cut_off_writes_are_confirmed_at_the_heal(&mut net, 0, seed);
    }
}

/// Cuts replica `cut` off while it and the others write 12 messages each
/// at irregular moments, heals, and checks that none of the cut-off
/// replica's messages is re-announced (E: one side only).
fn cut_off_writes_are_confirmed_at_the_heal(net: &mut Net, cut: usize, seed: u64) {
    let others: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
    net.partition(&[net.ids[cut].0]);
    let mut mine = Vec::new();
    for i in 0..12u64 {
        mine.push(net.submit(cut, 1));
        net.submit(others[i as usize % 2], 1);
        // Irregular gaps: the ops' re-forward timers get other phases.
        let gap = 7 + net.rng.next_u64() % 90;
        net.run(gap);
    }
    net.run(700);
    for op in &mine {
        assert!(net.nodes[cut].view.contains_key(op), "seed {seed}: L1");
    }
    net.heal();
    net.run(3_000);
    net.assert_converged();
    let theirs = mine
        .iter()
        .filter(|op| net.reannounced.contains(op))
        .count();
    assert_eq!(
        theirs, 0,
        "seed {seed}: the cut-off replica's messages are confirmed, not re-announced"
    );
    assert!(net.reannounced.len() <= 12, "seed {seed}: E one-side bound");
}

/// Finding 13 of the simulator (and of the real partition test): a cut link
/// that holds messages (TCP over a blackhole route) delivers the cut-off
/// replica's old Forwards at the heal, naming its ops without the
/// provisional values it showed them with since. The owner gave them values
/// of its own at once, and values above the ones it then confirmed: the
/// cut-off replica's messages were re-announced, beyond the one-side bound.
#[test]
fn forwards_held_by_a_cut_link_do_not_undo_the_cut_off_replicas_values() {
    for seed in 0..8 {
        let mut net = Net::new(3, seed, fast());
        net.hold = true;
        net.run(500);
        let owner = net.nodes[0].seq.owner().expect("an owner is elected");
        let cut = (net.idx(owner) + 1) % 3;
        cut_off_writes_are_confirmed_at_the_heal(&mut net, cut, seed);
    }
}

/// A `Resequence` that arrives again (duplicated, or held by a cut link)
/// after the ledger met it does not re-announce the message once more.
#[test]
fn a_resequence_the_ledger_already_met_changes_nothing() {
    let mut net = Net::new(3, 3, fast());
    net.run(500);
    let owner = net.nodes[0].seq.owner().expect("an owner is elected");
    let o = net.idx(owner);
    let other = net.ids[(o + 1) % 3];
    let op = net.submit(o, 1);
    net.run(300);
    let first = net.nodes[o].seq.final_of(&op).expect("decided").clone();
    let ask = SeqMsg::Resequence {
        ops: vec![op],
        above_uid: first.uids[0] as u64,
        above_modseq: first.modseq,
        provisional: Vec::new(),
    };
    net.nodes[o].seq.handle(net.now, other, ask.clone());
    net.flush(o);
    net.run(300);
    let second = net.nodes[o].seq.final_of(&op).expect("decided").clone();
    assert!(
        second.uids[0] > first.uids[0],
        "re-announced above the marks"
    );
    // The same request again: already met.
    net.nodes[o].seq.handle(net.now, other, ask);
    net.flush(o);
    net.run(300);
    assert_eq!(net.nodes[o].seq.final_of(&op), Some(&second));
    net.assert_converged();
}

/// A real partition's heal (three node processes): the cut-off replica asked
/// every member to re-announce the majority's ops above what it had shown,
/// with its own provisional values in the request. A member that is not the
/// owner kept the request and sent it on to the owner as its own, without
/// those values; it arrived first, and the owner answered above the cut-off
/// replica's values, so both sides were re-announced. Only the replica that
/// exposed the marks may ask for them.
#[test]
fn a_member_does_not_pass_on_another_replicas_resequence_request() {
    let mut net = Net::new(3, 4, fast());
    net.run(500);
    let owner = net.nodes[0].seq.owner().expect("an owner is elected");
    let o = net.idx(owner);
    let (b, c) = ((o + 1) % 3, (o + 2) % 3);
    let op = net.submit(o, 1);
    net.run(300);
    let first = net.nodes[o].seq.final_of(&op).expect("decided").clone();
    let ask = SeqMsg::Resequence {
        ops: vec![op],
        above_uid: first.uids[0] as u64 + 100,
        above_modseq: first.modseq + 100,
        provisional: Vec::new(),
    };
    let from = net.ids[c];
    net.nodes[b].seq.handle(net.now, from, ask);
    let mut now = net.now;
    for _ in 0..20 {
        now += fast().forward_timeout_ms;
        net.nodes[b].seq.tick(now, (0, 0));
        let relayed = net.nodes[b].seq.drain().into_iter().any(|out| {
            matches!(
                out,
                SeqOutput::Send {
                    msg: SeqMsg::Resequence { .. },
                    ..
                } | SeqOutput::Broadcast(SeqMsg::Resequence { .. })
            )
        });
        assert!(!relayed, "a member passed on another replica's request");
    }
}

/// Finding 7 of the simulator: an own op whose final value its view cannot
/// show (held in ledger order behind an op that has not arrived) gets
/// provisional values `forward_timeout` after it was submitted, as an
/// undecided one would (L1); when the view then asks for new values, the
/// owner keeps those provisional values, which are above every final value,
/// so the origin does not re-announce the op.
#[test]
fn an_own_op_held_by_its_view_gets_provisional_values_the_owner_keeps() {
    let me = ReplicaId(1);
    let params = fast();
    let timeout = params.forward_timeout_ms;
    let mut s = Sequencer::new(me, &[me], 42, params);
    let mut now = 1;
    while !s.is_owner() || s.spaces().reservation_of(me).is_none() {
        now += 10; // alone: it owns the ledger and reserves for itself
        s.tick(now, (0, 0));
        assert!(now < 10 * timeout, "no owner");
    }
    let op = OpId { origin: me, seq: 1 };
    s.submit(now, op, 1);
    s.settle(|o| *o == op);
    s.tick(now, (0, 0));
    let first = s.final_of(&op).cloned().expect("decided at once");
    s.drain();
    // The view holds it: nothing happens before the timeout...
    now += timeout / 2;
    s.settle(|o| *o == op);
    s.tick(now, (0, 0));
    assert!(!s.drain().iter().any(|o| matches!(
        o,
        SeqOutput::Decided {
            fate: Fate::Provisional,
            ..
        }
    )));
    // ...then it gets provisional values from its reservation.
    now += timeout;
    s.settle(|o| *o == op);
    s.tick(now, (first.uids[0] as u64, first.modseq));
    let prov = s
        .drain()
        .into_iter()
        .find_map(|o| match o {
            SeqOutput::Decided {
                assign,
                fate: Fate::Provisional,
                ..
            } => Some(assign),
            _ => None,
        })
        .expect("provisional values after forward_timeout");
    assert!(s.spaces().modseq_owner(prov.modseq).is_some());
    // The view showed them and asks for values above its marks: the owner
    // keeps the provisional ones.
    s.request_resequence(now, op, prov.uids[0] as u64, prov.modseq);
    s.tick(now, (prov.uids[0] as u64, prov.modseq));
    assert_eq!(s.final_of(&op), Some(&prov));
    // A view that shows its final value settles it: no more provisional values.
    s.settle(|_| false);
    now += 2 * timeout;
    s.tick(now, (prov.uids[0] as u64, prov.modseq));
    assert_eq!(s.final_of(&op), Some(&prov));
}

/// Simulator finding 10: an own op with a final value its view holds, whose
/// reservation is unusable when its timeout comes (overtaken by what the
/// replica exposed), keeps trying and gets provisional values as soon as a
/// new reservation is there — not only when the view shows it.
#[test]
fn a_held_op_whose_reservation_is_overtaken_takes_the_next_one() {
    let me = ReplicaId(1);
    let params = fast();
    let timeout = params.forward_timeout_ms;
    let gap = params.space.modseq_gap;
    let mut s = Sequencer::new(me, &[me], 42, params);
    let mut now = 1;
    while !s.is_owner() || s.spaces().reservation_of(me).is_none() {
        now += 10;
        s.tick(now, (0, 0));
        assert!(now < 10 * timeout, "no owner");
    }
    let first = s.spaces().reservation_of(me).cloned().unwrap();
    let held = OpId { origin: me, seq: 1 };
    s.submit(now, held, 1);
    s.settle(|o| *o == held);
    s.tick(now, (0, 0));
    assert!(s.final_of(&held).is_some());
    s.drain();
    let provisional = |out: Vec<SeqOutput>| {
        out.into_iter().find_map(|o| match o {
            SeqOutput::Decided {
                op,
                assign,
                fate: Fate::Provisional,
            } if op == held => Some(assign),
            _ => None,
        })
    };
    // At the timeout the replica has exposed values up to the top of its
    // reservation: nothing usable.
    let exposed = (first.uids.hi, first.modseqs.hi);
    now += timeout;
    s.settle(|o| *o == held);
    s.tick(now, exposed);
    assert_eq!(provisional(s.drain()), None);
    // Other ops move the counters past the reservation: the owner reserves
    // anew, and the held op takes it at the next tick.
    for seq in 2..2 + 2 * gap {
        s.submit(now, OpId { origin: me, seq }, 0);
    }
    let mut got = None;
    for _ in 0..10 {
        now += 10;
        s.settle(|o| *o == held);
        s.tick(now, exposed);
        got = provisional(s.drain());
        if got.is_some() {
            break;
        }
    }
    let got = got.expect("provisional values from the new reservation");
    assert!(got.modseq > exposed.1 && got.uids[0] as u64 > exposed.0);
    let now_res = s.spaces().reservation_of(me).unwrap();
    assert!(now_res.modseqs.contains(got.modseq));
}

/// Every committed value leaves every member a reservation ahead of the
/// counters: values that overtake a reservation come with its renewal, so a
/// replica cut off right after learning them still has one to use (L1;
/// chaos seed 151 on 5 nodes waited 6 s for a MOVE without it).
#[test]
fn every_commit_leaves_every_member_a_reservation_ahead() {
    // One slot in flight: a renewal left to a later value would be seen
    // missing between the two commits.
    let params = SeqParams {
        max_inflight: 1,
        ..fast()
    };
    let mut net = Net::new(3, 7, params);
    net.run(300);
    let mut checked = 0;
    for round in 0..200u64 {
        let node = (round % 3) as usize;
        net.submit(node, (round % 3) as u32);
        for _ in 0..5 {
            net.run(1);
            for n in &net.nodes {
                let sp = n.seq.spaces();
                if sp.reservations.is_empty() {
                    continue;
                }
                if n.seq.me() == ReplicaId(1) {
                    eprintln!(
                        "DBGS {} commit {} next {:?} r1 {:?}",
                        net.now,
                        n.seq.commit_index(),
                        (sp.next_uid, sp.next_modseq),
                        sp.reservation_of(ReplicaId(1))
                            .map(|r| (r.uids.lo, r.modseqs.lo))
                    );
                }
                for m in &net.ids {
                    assert!(
                        sp.reservation_is_ahead(*m),
                        "{:?} at commit {}: {m:?} has no reservation ahead of {:?}",
                        n.seq.me(),
                        n.seq.commit_index(),
                        (sp.next_uid, sp.next_modseq)
                    );
                    checked += 1;
                }
            }
        }
    }
    net.run(1_000);
    net.assert_converged();
    assert!(checked > 1_000);
    assert!(
        net.nodes[0].seq.spaces().reservations.len() > 3 * 3,
        "renewed"
    );
}

/// An owner that learns from a peer the commit of slots it has in flight (the
/// answer to a `Pull` it sent before it was elected) takes them out of its
/// window; a full window of such slots stopped it for good (L2, chaos seed
/// 249 on 5 nodes).
#[test]
fn an_owner_that_learns_its_inflight_slots_committed_goes_on() {
    let params = fast();
    let window = params.max_inflight;
    let mut net = Net::new(3, 3, params);
    net.run(500);
    let o = (0..3)
        .find(|&i| net.nodes[i].seq.is_owner())
        .expect("owner");
    let peer = net.ids[(o + 1) % 3];
    // Cut off, the owner fills its window with slots nobody acknowledges.
    net.partition(&[net.ids[o].0]);
    for _ in 0..window + 2 {
        net.submit(o, 1);
    }
    let slots: Vec<(Slot, Value)> = match &net.nodes[o].seq.role {
        Role::Leader { inflight, .. } => inflight
            .iter()
            .map(|(s, i)| (*s, i.value.clone()))
            .collect(),
        _ => panic!("not leading"),
    };
    assert_eq!(slots.len(), window, "window full");
    // A majority accepted them after all; the owner hears it as Entries.
    let from = slots[0].0;
    assert_eq!(from, net.nodes[o].seq.commit_index() + 1);
    let values = slots.into_iter().map(|(_, v)| v).collect();
    let now = net.now;
    net.nodes[o]
        .seq
        .handle(now, peer, SeqMsg::Entries { from, values });
    net.flush(o);
    let commit = net.nodes[o].seq.commit_index();
    match &net.nodes[o].seq.role {
        // Only slots above the commit index are in flight (the ops the
        // window had left waiting are proposed at once).
        Role::Leader { inflight, .. } => {
            assert!(inflight.keys().all(|s| *s > commit), "{inflight:?}")
        }
        _ => panic!("not leading"),
    }
    // It goes on sequencing: after the heal, every op gets a final value.
    net.heal();
    net.submit(o, 1);
    net.run(3_000);
    net.assert_converged();
}

#[test]
fn members_without_readers_get_no_commit_notice_and_still_learn_commits() {
    let params = SeqParams {
        heartbeat_ms: 1_000,
        idle_heartbeat_ms: 1_000,
        election_timeout_ms: 3_000,
        // Every member accepts each slot here (the rule under test is the
        // notice, not who hears the Accept).
        thrifty_accept: false,
        ..fast()
    };
    let mut net = Net::new(5, 3, params);
    net.run(8_000);
    let owner = net.nodes[0].seq.owner().expect("an owner is elected");
    let o = net.idx(owner);
    let quiet: Vec<usize> = (0..5).filter(|i| *i != o).take(2).collect();
    for &i in &quiet {
        net.nodes[i].seq.set_watching(false);
    }
    // The owner learns who has no readers from their Accepteds.
    net.submit(o, 1);
    net.run(100);
    assert_eq!(net.nodes[o].seq.unwatched.len(), 2);
    let before = net.nodes[o].seq.commit_index();
    net.submit(o, 1);
    while net.nodes[o].seq.commit_index() == before {
        net.run(1);
    }
    net.run(45);
    let commit = net.nodes[o].seq.commit_index();
    for i in 0..5 {
        let c = net.nodes[i].seq.commit_index();
        if quiet.contains(&i) {
            // Accepted, not yet known committed: no notice came.
            assert!(c < commit, "node {i} heard of the commit at once");
            assert!(net.nodes[i].seq.accepted.contains_key(&commit));
        } else {
            assert_eq!(c, commit, "node {i} (readers) was not notified");
        }
    }
    // The periodic Heartbeat brings them the commit.
    net.run(1_100);
    net.assert_converged();
    assert_eq!(net.reannounced.len(), 0);
}

/// The decision that `op` gets UID `uid` and MODSEQ `modseq`.
fn seq_of(op: OpId, uid: u32, modseq: u64) -> Decision {
    Decision::Sequence {
        op,
        assign: Assign {
            modseq,
            uids: [uid].into_iter().collect(),
        },
    }
}

/// A ledger value re-proposed from an old ballot after other owners filled
/// the slots before it (chaos, 7 nodes, sessions test, seed 5: UID 7 given
/// twice) lies below what those slots decided: every replica skips it alike,
/// and the op it names keeps (or still waits for) a value of its own.
#[test]
fn a_stale_decision_below_the_ledger_is_skipped() {
    let ids = [ReplicaId(1), ReplicaId(2), ReplicaId(3)];
    let op = |seq| OpId {
        origin: ReplicaId(1),
        seq,
    };
    let records = vec![
        SeqRecord::Committed(1, vec![seq_of(op(1), 5, 5), seq_of(op(2), 6, 6)].into()),
        // Computed by an old owner that had op 1 at UID 5 in an earlier slot
        // of its own: UID 6 is op 2's.
        SeqRecord::Committed(2, vec![seq_of(op(1), 6, 6), seq_of(op(3), 7, 7)].into()),
    ];
    let s = Sequencer::restore(ids[0], &ids, 42, fast(), records);
    assert_eq!(s.final_of(&op(1)).map(|a| a.uids[0]), Some(5));
    assert_eq!(s.final_of(&op(2)).map(|a| a.uids[0]), Some(6));
    assert_eq!(s.final_of(&op(3)).map(|a| a.uids[0]), Some(7));
    assert_eq!(s.commit_index(), 2);
}

/// A commit of a value the replica accepted is persisted as `Chosen`, which
/// names the acceptance instead of repeating the value: a restart commits
/// that acceptance, and only if it was in the same ballot.
#[test]
fn a_chosen_record_commits_the_acceptance_it_names() {
    let ids = [ReplicaId(1), ReplicaId(2), ReplicaId(3)];
    let op = |seq| OpId {
        origin: ReplicaId(2),
        seq,
    };
    let b = |round| Ballot {
        round,
        leader: ReplicaId(2),
    };
    let records = vec![
        SeqRecord::Accepted(1, b(1), vec![seq_of(op(1), 5, 5)].into()),
        SeqRecord::Chosen(1, b(1)),
        SeqRecord::Accepted(2, b(1), vec![seq_of(op(2), 6, 6)].into()),
        SeqRecord::Accepted(2, b(2), vec![seq_of(op(3), 6, 6)].into()),
        // Names the acceptance that the later one replaced: not applied.
        SeqRecord::Chosen(2, b(1)),
    ];
    let s = Sequencer::restore(ids[0], &ids, 42, fast(), records);
    assert_eq!(s.commit_index(), 1);
    assert_eq!(s.final_of(&op(1)).map(|a| a.uids[0]), Some(5));
    assert!(s.final_of(&op(2)).is_none() && s.final_of(&op(3)).is_none());
    assert_eq!(s.accepted.get(&2).map(|(b, _)| b.round), Some(2));
}

/// An idle owner beats every `idle_heartbeat_ms` instead of `heartbeat_ms`;
/// its followers wait for it without electing another, and an op wakes it.
#[test]
fn an_idle_owner_beats_slower_and_keeps_its_ledger() {
    let params = fast();
    let mut net = Net::new(3, 5, params.clone());
    net.run(500);
    let owner = net.nodes[0].seq.owner().expect("an owner is elected");
    net.submit(net.idx(owner), 1);
    net.run(300);
    net.heartbeats = 0;
    let quiet = 3_000;
    net.run(quiet);
    // Two copies per beat (3 members), one beat per idle period.
    let beats = net.heartbeats / 2;
    let idle = (quiet / params.idle_heartbeat_ms) as usize;
    assert!(beats <= idle + 1, "{beats} beats in {quiet} ms");
    for n in &net.nodes {
        assert_eq!(n.seq.owner(), Some(owner), "no election while idle");
    }
    // An op from a follower is decided before any provisional value.
    let f = (net.idx(owner) + 1) % 3;
    let op = net.submit(f, 1);
    net.run(params.forward_timeout_ms / 2);
    assert!(
        net.nodes[f].seq.final_of(&op).is_some(),
        "woken owner decides"
    );
    assert_eq!(net.nodes[f].seq.owner(), Some(owner));
    net.run(1_000);
    net.assert_converged();
    assert_eq!(net.reannounced.len(), 0);
}

/// Ops that reach the owner within `batch_ms` of its last proposal share
/// the next slot: one `Accept` round for the batch, not one per op.
#[test]
fn ops_close_together_share_a_slot() {
    let params = SeqParams {
        batch_ms: 20,
        ..fast()
    };
    let mut net = Net::new(3, 2, params);
    net.run(500);
    let owner = net.nodes[0].seq.owner().expect("an owner is elected");
    let o = net.idx(owner);
    let before = net.nodes[o].seq.commit_index();
    // The first is proposed at once, the other five wait for the next slot.
    let ops: Vec<OpId> = (0..6).map(|_| net.submit(o, 1)).collect();
    net.run(300);
    for op in &ops {
        assert!(net.nodes[o].seq.final_of(op).is_some(), "decided");
    }
    assert_eq!(net.nodes[o].seq.commit_index(), before + 2, "two slots");
    net.assert_converged();
    assert_eq!(net.reannounced.len(), 0);
}

/// Runs one commit with the owner's messages to replica `b` cut after its
/// `Accept`: `b` hears no commit notice and no Heartbeat, only the third
/// replica's `Accepted` when it is a listed learner. Returns whether `b`
/// committed the slot and showed the op within 50 ms.
fn learner_run(learner_budget: usize) -> bool {
    let params = SeqParams {
        heartbeat_ms: 1_000,
        idle_heartbeat_ms: 1_000,
        election_timeout_ms: 3_000,
        learner_budget,
        ..fast()
    };
    let mut net = Net::new(3, 7, params);
    net.run(8_000);
    let owner = net.nodes[0].seq.owner().expect("an owner is elected");
    let o = net.idx(owner);
    let b = (o + 1) % 3;
    let (ob, bb) = (net.ids[o], net.ids[b]);
    let op = net.submit(o, 1);
    let slot = net.nodes[o].seq.committed.len() as Slot + 1;
    // Hand `b` its Accept now, then cut the owner off from it.
    let k = net
        .queue
        .iter()
        .position(|(_, from, to, m)| *from == ob && *to == bb && matches!(m, SeqMsg::Accept { .. }))
        .expect("the owner sent b an Accept");
    let (_, _, _, accept) = net.queue.swap_remove(k);
    let SeqMsg::Accept { learners, .. } = &accept else {
        unreachable!()
    };
    assert_eq!(learners.contains(&bb), learner_budget > 0);
    net.nodes[b].seq.handle(net.now, ob, accept);
    net.flush(b);
    net.cut.insert((ob, bb));
    net.run(50);
    assert_eq!(net.nodes[o].seq.commit_index(), slot, "the owner committed");
    net.nodes[b].seq.commit_index() == slot && net.nodes[b].view.contains_key(&op)
}

#[test]
fn a_listed_learner_commits_from_its_neighbours_accepted() {
    assert!(learner_run(SeqParams::default().learner_budget));
    // Without learners it waits for the owner's notice (cut off here).
    assert!(!learner_run(0));
}

#[test]
fn learners_are_listed_only_within_the_budget() {
    let ids: Vec<ReplicaId> = (1..=5).map(ReplicaId).collect();
    let none = BTreeSet::new();
    // 4 learners × 4 acceptors = 16.
    assert_eq!(learners_of(ids[0], &ids, &none, 16).len(), 4);
    assert!(learners_of(ids[0], &ids, &none, 15).is_empty());
    let quiet: BTreeSet<ReplicaId> = ids[1..3].iter().copied().collect();
    assert_eq!(learners_of(ids[0], &ids, &quiet, 8), vec![ids[3], ids[4]]);
    assert!(learners_of(ids[0], &ids, &none, 0).is_empty());
}

/// The op's log entry crosses the cut, its decision does not: the owner is
/// cut off right after it logged (and gossiped) an op of its own, before
/// its `Accept` left (with batching, that is up to `batch_ms`; the
/// simulator's `partition-heal`, 5 nodes, seed 215, with 20 ms). The
/// majority knows the op from the log only, and its new owner must not
/// sequence it while the origin is unheard: the origin shows it from its
/// reservation after `forward_timeout`, and a final value given meanwhile
/// re-announced it at the heal (E).
#[test]
fn an_op_known_from_the_log_waits_for_its_cut_off_origin() {
    for seed in 0..4 {
        let mut net = Net::new(5, seed, fast());
        net.run(500);
        let owner = net.nodes[0].seq.owner().expect("an owner is elected");
        let o = net.idx(owner);
        net.submit(o, 1);
        net.run(100);
        let op = net.submit(o, 1);
        // Its log entry reaches the others; its Accept is lost to the cut.
        let now = net.now;
        for i in (0..5).filter(|i| *i != o) {
            net.nodes[i].seq.note_op(now, op, 1);
            net.flush(i);
        }
        net.partition(&[owner.0]);
        net.run(1_500);
        let shown = net.nodes[o].view.get(&op).cloned();
        assert!(
            shown.is_some(),
            "seed {seed}: L1, shown from the reservation"
        );
        let others: Vec<usize> = (0..5).filter(|i| *i != o).collect();
        assert!(
            others.iter().any(|i| net.nodes[*i].seq.is_owner()),
            "seed {seed}: the majority has an owner"
        );
        net.heal();
        net.run(3_000);
        net.assert_converged();
        assert_eq!(
            net.nodes[o].seq.final_of(&op),
            shown.as_ref(),
            "seed {seed}"
        );
        assert!(!net.reannounced.contains(&op), "seed {seed}: re-announced");
    }
}

/// The members an owner's Accepts for `slot` went to, from the queue.
fn accept_receivers(net: &Net, owner: ReplicaId, slot: Slot) -> Vec<ReplicaId> {
    let mut v: Vec<ReplicaId> = net
        .queue
        .iter()
        .filter(|(_, from, _, m)| {
            *from == owner && matches!(m, SeqMsg::Accept { slot: s, .. } if *s == slot)
        })
        .map(|(_, _, to, _)| *to)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Seven members, none with readers but `watchers`: the owner, elected, has
/// learned who has readers and who answers fast from a first slot.
fn thrifty_net(seed: u64, watchers: &[usize]) -> (Net, usize) {
    let params = SeqParams {
        heartbeat_ms: 100,
        idle_heartbeat_ms: 300,
        election_timeout_ms: 400,
        forward_timeout_ms: 800,
        ..fast()
    };
    let mut net = Net::new(7, seed, params);
    net.run(3_000);
    let owner = net.nodes[0].seq.owner().expect("an owner is elected");
    let o = net.idx(owner);
    for i in 0..7 {
        if i != o && !watchers.contains(&i) {
            net.nodes[i].seq.set_watching(false);
        }
    }
    net.submit(o, 1);
    net.run(200);
    net.submit(o, 1);
    net.run(200);
    (net, o)
}

#[test]
fn a_thrifty_accept_goes_to_a_majority_and_commits() {
    let (mut net, o) = thrifty_net(11, &[]);
    let owner = net.ids[o];
    let slot = net.nodes[o].seq.commit_index() + 1;
    net.submit(o, 1);
    let to = accept_receivers(&net, owner, slot);
    // A majority of 7 is 4: 3 acceptors besides the owner, and one spare.
    assert_eq!(to.len(), 4, "Accept went to {to:?}");
    net.run(60);
    assert_eq!(net.nodes[o].seq.commit_index(), slot, "the slot committed");
    // A member the Accept did not reach learns the commit from the next
    // Heartbeat and a Pull.
    let out = (0..7)
        .find(|i| *i != o && !to.contains(&net.ids[*i]))
        .expect("a member outside the quorum");
    assert!(net.nodes[out].seq.commit_index() < slot);
    net.run(250);
    assert_eq!(net.nodes[out].seq.commit_index(), slot, "it caught up");
    net.run(500);
    net.assert_converged();
    assert_eq!(net.reannounced.len(), 0);
}

#[test]
fn a_thrifty_accept_reaches_the_watchers_and_the_origin() {
    let (mut net, o) = thrifty_net(12, &[]);
    let owner = net.ids[o];
    let others: Vec<usize> = (0..7).filter(|i| *i != o).collect();
    // One member gets readers: it tells the owner at once.
    let w = others[0];
    net.nodes[w].seq.set_watching(true);
    net.flush(w);
    net.run(40);
    assert!(!net.nodes[o].seq.unwatched.contains(&net.ids[w]));
    // Another member's op: its origin hears the Accept too.
    let origin = others[5];
    net.submit(origin, 1);
    let slot = net.nodes[o].seq.commit_index() + 1;
    while accept_receivers(&net, owner, slot).is_empty() {
        net.run(1);
    }
    let to = accept_receivers(&net, owner, slot);
    assert!(to.contains(&net.ids[w]), "the watcher: {to:?}");
    assert!(to.contains(&net.ids[origin]), "the origin: {to:?}");
    assert!(to.len() < 6, "not every member: {to:?}");
    // Both learn the commit at once (the Accept, then the commit notice).
    net.run(60);
    assert_eq!(net.nodes[w].seq.commit_index(), slot);
    assert_eq!(net.nodes[origin].seq.commit_index(), slot);
    net.run(500);
    net.assert_converged();
}

#[test]
fn a_thrifty_accept_widens_when_its_quorum_crashed() {
    let (mut net, o) = thrifty_net(13, &[]);
    let owner = net.ids[o];
    let slot = net.nodes[o].seq.commit_index() + 1;
    let op = net.submit(o, 1);
    let to = accept_receivers(&net, owner, slot);
    assert_eq!(to.len(), 4);
    // Two of the four crash before they answer: two acceptances and the
    // owner's are not a majority of 7.
    for r in &to[..2] {
        let i = net.idx(*r);
        net.crash(i);
    }
    net.run(60);
    assert!(net.nodes[o].seq.commit_index() < slot, "no majority yet");
    // A heartbeat later the Accept goes to every member, and commits.
    net.run(300);
    assert_eq!(
        net.nodes[o].seq.commit_index(),
        slot,
        "widened and committed"
    );
    assert!(net.nodes[o].view.contains_key(&op));
    // The next slots avoid the crashed members.
    let next = net.nodes[o].seq.commit_index() + 1;
    net.submit(o, 1);
    let to = accept_receivers(&net, owner, next);
    assert_eq!(to.len(), 4);
    for r in &to {
        assert!(net.nodes[net.idx(*r)].up, "{r:?} is down");
    }
    net.run(60);
    assert_eq!(net.nodes[o].seq.commit_index(), next);
    net.run(500);
    net.assert_converged();
    assert_eq!(net.reannounced.len(), 0);
}

/// Changes that take no UID (flag changes, expunges) move the MODSEQ
/// counter only, and with the default spaces they do not renew the
/// reservations: each renewal stacks a fresh UID range that the UID counter
/// later jumps whole (ARCHITECTURE.md §4.5: with a MODSEQ gap of 1,024 a
/// 100k-message mailbox stacked 64 ranges, UID 65,536 followed by 327,681).
#[test]
fn modseq_only_changes_do_not_pile_up_uid_ranges() {
    let me = ReplicaId(1);
    let params = SeqParams {
        space: SpaceParams::default(),
        ..fast()
    };
    let mut s = Sequencer::new(me, &[me], 42, params);
    let mut now = 1;
    while !s.is_owner() || s.spaces().reservation_of(me).is_none() {
        now += 10;
        s.tick(now, (0, 0));
        assert!(now < 10_000, "no owner");
    }
    let granted = s.spaces().reservations.len();
    for seq in 1..=5_000u64 {
        s.submit(now, OpId { origin: me, seq }, 0);
        now += 1;
        s.tick(now, (0, 0));
        s.drain();
    }
    assert!(
        s.spaces().next_modseq > 5_000,
        "{:?}",
        s.spaces().next_modseq
    );
    assert_eq!(s.spaces().reservations.len(), granted);
}
