//! Scenarios: each turns (nodes, seed, ops) into a [`Plan`]: the network,
//! the clients and a **schedule** of timed [`Sched`] items (client
//! operations, deliveries, faults). The schedule is what the shrinker cuts
//! down when a run finds a violation, so every item is self-contained: an
//! item whose precondition no longer holds (restarting a node that is up,
//! healing what is not cut) does nothing.
//!
//! To add a scenario: add a line to [`SCENARIOS`] and a branch in [`plan`]
//! that fills a [`Plan`] (see `README.md`).

use crate::net::NetModel;
use crate::rng::{below, between};
use aerogramme_proto::seq::SeqParams;
use rand_core::RngCore;
use std::fmt;

/// Name, what it does, and what it expects of E (DESIGN §5).
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "steady",
        "one writing node (all clients and deliveries on node 0), healthy LAN. E: no UIDVALIDITY change, no re-announced message",
    ),
    (
        "multi-writer",
        "clients and deliveries on every node, healthy LAN. E: no UIDVALIDITY change, no re-announced message",
    ),
    (
        "partition-heal",
        "the INBOX owner or, on half the seeds, a replica that does not own it (plus, for 5+ nodes on some seeds, more replicas) is cut off while both sides write, then the network heals (at the end of the run or mid-run); on half the seeds the cut links hold what is sent and deliver it at the heal, as a TCP connection does. E: no UIDVALIDITY change; re-announced <= messages written on one side (single cut-off replica) or on both sides (several cut off together)",
    ),
    (
        "failover",
        "the node of client 0 (or the INBOX owner) crashes while a majority stays up; its clients fail over to other nodes; it restarts later. E: no UIDVALIDITY change, no re-announced message",
    ),
    (
        "crash-restart",
        "replicas crash one at a time (some mid-batch, losing unflushed writes) and restart, clients fail over. E: no UIDVALIDITY change, no re-announced message",
    ),
    (
        "geo",
        "three regions (~1 ms inside, 30-150 ms between, clock skew up to 100 ms), writers in every region, no partition. E: no UIDVALIDITY change, no re-announced message",
    ),
    (
        "chaos",
        "random mix: loss, duplication, jitter, clock skew, symmetric (dropping or holding messages)/asymmetric/flapping partitions, crashes (some mid-batch), random client failovers. E: no UIDVALIDITY change (re-announcements are counted, not bounded)",
    ),
];

/// What a client does at a scheduled time (the details, such as which
/// UIDs, are chosen when it happens, from the client's cache).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// APPEND a message.
    Append,
    /// STORE flags (add, remove or replace).
    Flags,
    /// UID EXPUNGE some messages.
    Expunge,
    /// UID COPY to another mailbox.
    Copy,
    /// UID MOVE to another mailbox.
    Move,
    /// CREATE a mailbox.
    Create,
    /// RENAME a mailbox.
    Rename,
    /// DELETE a mailbox.
    Delete,
    /// SELECT another mailbox (QRESYNC).
    Select,
    /// Re-SELECT the current mailbox (QRESYNC resync).
    Resync,
    /// Move to another node and resync.
    Failover,
}

impl OpKind {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Append => "append",
            OpKind::Flags => "store",
            OpKind::Expunge => "expunge",
            OpKind::Copy => "copy",
            OpKind::Move => "move",
            OpKind::Create => "create",
            OpKind::Rename => "rename",
            OpKind::Delete => "delete",
            OpKind::Select => "select",
            OpKind::Resync => "resync",
            OpKind::Failover => "failover",
        }
    }
}

/// A node chosen when the item runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeSel {
    /// This node.
    Node(usize),
    /// The node client `c` is attached to.
    ClientNode(usize),
    /// The owner of user 0's INBOX ledger, plus `extra` other replicas.
    InboxOwner {
        /// More replicas cut off with the owner.
        extra: usize,
    },
    /// A replica that does not own user 0's INBOX ledger, plus `extra`
    /// others (the owner stays out).
    InboxFollower {
        /// More replicas cut off with it.
        extra: usize,
    },
    /// These nodes.
    Set(Vec<usize>),
}

impl fmt::Display for NodeSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeSel::Node(n) => write!(f, "node {n}"),
            NodeSel::ClientNode(c) => write!(f, "the node of client {c}"),
            NodeSel::InboxOwner { extra: 0 } => write!(f, "the INBOX owner"),
            NodeSel::InboxOwner { extra } => write!(f, "the INBOX owner and {extra} more"),
            NodeSel::InboxFollower { extra: 0 } => write!(f, "a replica not owning the INBOX"),
            NodeSel::InboxFollower { extra } => {
                write!(f, "{} replicas not owning the INBOX", extra + 1)
            }
            NodeSel::Set(v) => write!(f, "nodes {v:?}"),
        }
    }
}

/// One scheduled item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A client operation.
    Op {
        /// Client.
        client: usize,
        /// What.
        kind: OpKind,
    },
    /// An LMTP delivery to a user's INBOX, from a node.
    Deliver {
        /// User.
        user: usize,
        /// Node.
        node: usize,
    },
    /// A node crashes for `down_ms` (restarting at the heal at the latest).
    /// `mid_batch`: it crashes right after its next input, before the
    /// flush (its unflushed writes are lost, its outputs never leave).
    Crash {
        /// Which.
        node: NodeSel,
        /// Down for.
        down_ms: u64,
        /// Crash before flushing a batch.
        mid_batch: bool,
    },
    /// A symmetric partition: `minority` against the rest.
    Partition {
        /// One side.
        minority: NodeSel,
        /// Duration.
        dur_ms: u64,
        /// The cut links hold messages and deliver them at the heal, as a
        /// TCP connection whose packets are dropped does; otherwise they
        /// are lost.
        hold: bool,
    },
    /// An asymmetric cut: messages from `from` to `to` are lost, the other
    /// direction works.
    OneWay {
        /// Senders cut.
        from: Vec<usize>,
        /// Receivers cut.
        to: Vec<usize>,
        /// Duration.
        dur_ms: u64,
    },
    /// A flapping partition of `side` against the rest: cut and healed every
    /// `period_ms`.
    Flap {
        /// One side.
        side: Vec<usize>,
        /// Duration.
        dur_ms: u64,
        /// Period.
        period_ms: u64,
    },
}

/// An item of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sched {
    /// Simulated time, ms.
    pub at_ms: u64,
    /// What.
    pub action: Action,
}

impl Sched {
    /// Whether the item is a fault (not a client operation or delivery).
    pub fn is_fault(&self) -> bool {
        !matches!(self.action, Action::Op { .. } | Action::Deliver { .. })
    }
}

impl fmt::Display for Sched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={:>8}ms  ", self.at_ms)?;
        match &self.action {
            Action::Op { client, kind } => write!(f, "client {client}: {}", kind.name()),
            Action::Deliver { user, node } => {
                write!(f, "LMTP delivery to user {user} on node {node}")
            }
            Action::Crash {
                node,
                down_ms,
                mid_batch,
            } => write!(
                f,
                "crash {node}{} for {down_ms} ms",
                if *mid_batch { " mid-batch" } else { "" }
            ),
            Action::Partition {
                minority,
                dur_ms,
                hold,
            } => write!(
                f,
                "partition {minority} from the rest for {dur_ms} ms{}",
                if *hold {
                    " (links hold messages until the heal)"
                } else {
                    ""
                }
            ),
            Action::OneWay { from, to, dur_ms } => {
                write!(f, "cut links {from:?} -> {to:?} (one way) for {dur_ms} ms")
            }
            Action::Flap {
                side,
                dur_ms,
                period_ms,
            } => write!(
                f,
                "flap partition {side:?} | rest every {period_ms} ms for {dur_ms} ms"
            ),
        }
    }
}

/// What the scenario expects of E (DESIGN §5).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No UIDVALIDITY change and no re-announced message.
    Zero,
    /// No UIDVALIDITY change; re-announced messages at most those written
    /// on one side of the partition (or both sides when several replicas
    /// are cut off together, ARCHITECTURE §4.3).
    PartitionBound,
    /// No UIDVALIDITY change; re-announcements only counted.
    UidValidityOnly,
}

/// Everything a run needs besides the seed.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Network.
    pub net: NetModel,
    /// Number of users.
    pub users: usize,
    /// Clients: (user, initial node).
    pub clients: Vec<(usize, usize)>,
    /// The schedule, sorted by time.
    pub schedule: Vec<Sched>,
    /// End of client activity and faults: the heal.
    pub active_end_ms: u64,
    /// Clock offset of each node, ms.
    pub skew_ms: Vec<i64>,
    /// Period of each node's timer.
    pub tick_ms: u64,
    /// Sequencer parameters (production defaults).
    pub seq: SeqParams,
    /// Anti-entropy period.
    pub anti_entropy_ms: u64,
    /// E expectation.
    pub expect: Expect,
    /// Messages a client keeps in a mailbox before it prefers expunging.
    pub mailbox_cap: usize,
    /// How long the quiet period may last before L2 is declared failed.
    pub max_quiet_ms: u64,
    /// Where users' keys are unlocked. `false` (the scenarios' default):
    /// on every replica, so that every replica materialises and checks
    /// every user's mailboxes. `true`: as a node does (DESIGN §3), only
    /// where the user has sessions: on node 0, where the accounts are
    /// created, on the nodes its clients start on, and on a node a client
    /// fails over to (kept unlocked afterwards, and again after a restart:
    /// its sessions come back). The other replicas store, forward and
    /// sequence the user's ops without reading them, and the checker
    /// compares their op logs and ledgers instead of their views.
    pub unlock_sessions: bool,
}

/// When the clients start (after accounts, mailboxes and owners are set up).
pub const START_MS: u64 = 4_000;

/// Default number of client operations.
pub const DEFAULT_OPS: usize = 300;

fn op_kind<R: RngCore>(rng: &mut R, failover: bool) -> Option<OpKind> {
    // Weights out of 100; `None` is an LMTP delivery.
    let table: &[(u64, Option<OpKind>)] = &[
        (28, Some(OpKind::Append)),
        (10, None),
        (22, Some(OpKind::Flags)),
        (9, Some(OpKind::Expunge)),
        (6, Some(OpKind::Copy)),
        (5, Some(OpKind::Move)),
        (2, Some(OpKind::Create)),
        (1, Some(OpKind::Rename)),
        (1, Some(OpKind::Delete)),
        (6, Some(OpKind::Select)),
        (6, Some(OpKind::Resync)),
        (4, Some(OpKind::Failover)),
    ];
    loop {
        let total: u64 = table.iter().map(|(w, _)| w).sum();
        let mut x = below(rng, total);
        for (w, k) in table {
            if x < *w {
                if *k == Some(OpKind::Failover) && !failover {
                    break; // draw again
                }
                return *k;
            }
            x -= w;
        }
    }
}

/// Client operations spread over `[START_MS, START_MS + window)`.
fn ops_schedule<R: RngCore>(
    rng: &mut R,
    ops: usize,
    window_ms: u64,
    clients: &[(usize, usize)],
    delivery_nodes: &[usize],
    failover: bool,
) -> Vec<Sched> {
    let mut v = Vec::with_capacity(ops);
    for _ in 0..ops {
        let at_ms = START_MS + below(rng, window_ms);
        let action = match op_kind(rng, failover) {
            Some(kind) => Action::Op {
                client: below(rng, clients.len() as u64) as usize,
                kind,
            },
            None => Action::Deliver {
                user: below(
                    rng,
                    clients.iter().map(|c| c.0).max().unwrap_or(0) as u64 + 1,
                ) as usize,
                node: delivery_nodes[below(rng, delivery_nodes.len() as u64) as usize],
            },
        };
        v.push(Sched { at_ms, action });
    }
    v
}

/// Parameters a caller may override (the bench).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Users.
    pub users: Option<usize>,
    /// Clients.
    pub clients: Option<usize>,
    /// Ops per second of simulated time (sets the window).
    pub ops_per_sec: Option<u64>,
    /// Node timer period.
    pub tick_ms: Option<u64>,
    /// Do not free the world at the end (a process about to exit).
    pub leak_world: bool,
    /// Longest quiet period after the heal.
    pub max_quiet_ms: Option<u64>,
    /// Unlock a user only where it has sessions (see [`Plan::unlock_sessions`]).
    pub unlock_sessions: bool,
    /// The sequencer's `batch_ms` (default: `SeqParams`'s).
    pub batch_ms: Option<u64>,
    /// The sequencer's `thrifty_accept` (default: `SeqParams`'s).
    pub thrifty_accept: Option<bool>,
}

/// Builds the plan of a scenario.
pub fn plan<R: RngCore>(
    name: &str,
    nodes: usize,
    ops: usize,
    ov: &Overrides,
    rng: &mut R,
) -> Result<Plan, String> {
    if !SCENARIOS.iter().any(|(n, _)| *n == name) {
        return Err(format!("unknown scenario {name:?} (see --list)"));
    }
    if nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let needs_majority = matches!(name, "partition-heal" | "failover" | "crash-restart");
    if needs_majority && nodes < 3 {
        return Err(format!("scenario {name} needs at least 3 nodes"));
    }
    let users = ov.users.unwrap_or(1).max(1);
    let n_clients = ov.clients.unwrap_or(match name {
        "steady" => 3,
        _ => nodes.clamp(3, 12),
    });
    let rate = ov.ops_per_sec.unwrap_or(25).max(1);
    let min_window = match name {
        "steady" | "multi-writer" => 6_000,
        _ => 20_000,
    };
    let window = (ops as u64 * 1_000 / rate).max(min_window);
    let active_end_ms = START_MS + window;
    let all: Vec<usize> = (0..nodes).collect();
    let mut net = NetModel::lan(nodes);
    let mut skew_ms = vec![0i64; nodes];
    let mut expect = Expect::Zero;
    let mut faults = Vec::new();
    let clients: Vec<(usize, usize)> = (0..n_clients)
        .map(|c| {
            let node = if name == "steady" { 0 } else { c % nodes };
            (c % users, node)
        })
        .collect();
    let mut delivery_nodes = all.clone();
    let mut failover_ops = false;
    match name {
        "steady" => delivery_nodes = vec![0],
        "multi-writer" => {}
        "geo" => {
            net = NetModel::geo(nodes, rng);
            for s in skew_ms.iter_mut() {
                *s = between(rng, 0, 200) as i64 - 100;
            }
        }
        "partition-heal" => {
            expect = Expect::PartitionBound;
            let max_minority = (nodes - 1) / 2;
            let extra = if max_minority >= 2 && rng.next_u32() % 2 == 1 {
                between(rng, 1, max_minority as u64 - 1) as usize
            } else {
                0
            };
            let at = START_MS + window / 5 + below(rng, window / 10);
            // Half the seeds heal with the end of the run (convergence then
            // measures the heal), half mid-run (writes go on across it).
            let dur = if rng.next_u32().is_multiple_of(2) {
                window
            } else {
                window / 2 + below(rng, window / 10)
            };
            faults.push(Sched {
                at_ms: at,
                action: Action::Partition {
                    minority: if rng.next_u32().is_multiple_of(2) {
                        NodeSel::InboxOwner { extra }
                    } else {
                        NodeSel::InboxFollower { extra }
                    },
                    dur_ms: dur,
                    hold: rng.next_u32().is_multiple_of(2),
                },
            });
        }
        "failover" => {
            let at = START_MS + window / 3 + below(rng, window / 10);
            let node = if rng.next_u32().is_multiple_of(2) {
                NodeSel::InboxOwner { extra: 0 }
            } else {
                NodeSel::ClientNode(0)
            };
            faults.push(Sched {
                at_ms: at,
                action: Action::Crash {
                    node,
                    down_ms: window / 3 + below(rng, window / 6),
                    mid_batch: false,
                },
            });
        }
        "crash-restart" => {
            failover_ops = true;
            let k = between(rng, 2, 4);
            let slot = window / k;
            for i in 0..k {
                let at = START_MS + i * slot + below(rng, slot / 4);
                faults.push(Sched {
                    at_ms: at,
                    action: Action::Crash {
                        node: NodeSel::Node(below(rng, nodes as u64) as usize),
                        down_ms: between(rng, slot / 4, slot / 2),
                        mid_batch: rng.next_u32().is_multiple_of(2),
                    },
                });
            }
        }
        "chaos" => {
            expect = Expect::UidValidityOnly;
            failover_ops = true;
            if rng.next_u32().is_multiple_of(3) {
                net = NetModel::geo(nodes, rng);
            }
            net.loss_ppm = between(rng, 5_000, 30_000) as u32;
            net.dup_ppm = between(rng, 5_000, 20_000) as u32;
            for s in skew_ms.iter_mut() {
                *s = between(rng, 0, 600) as i64 - 300;
            }
            let k = between(rng, 3, 8);
            for _ in 0..k {
                let at = START_MS + below(rng, window * 3 / 4);
                let dur = between(rng, 1_000, window / 3).min(START_MS + window - at);
                let side: Vec<usize> = {
                    let size = between(rng, 1, (nodes as u64).max(2) - 1) as usize;
                    let mut pool = all.clone();
                    let mut s = Vec::new();
                    for _ in 0..size.min(nodes) {
                        let i = below(rng, pool.len() as u64) as usize;
                        s.push(pool.remove(i));
                    }
                    s.sort();
                    s
                };
                let rest: Vec<usize> = all.iter().copied().filter(|n| !side.contains(n)).collect();
                let action = match below(rng, 5) {
                    k @ (0 | 1) => Action::Partition {
                        minority: NodeSel::Set(side),
                        dur_ms: dur,
                        hold: k == 1,
                    },
                    2 => Action::OneWay {
                        from: side,
                        to: rest,
                        dur_ms: dur,
                    },
                    3 => Action::Flap {
                        side,
                        dur_ms: dur,
                        period_ms: between(rng, 200, 3_000),
                    },
                    _ => Action::Crash {
                        node: NodeSel::Node(below(rng, nodes as u64) as usize),
                        down_ms: dur,
                        mid_batch: rng.next_u32().is_multiple_of(2),
                    },
                };
                faults.push(Sched { at_ms: at, action });
            }
        }
        _ => unreachable!(),
    }
    let mut schedule = ops_schedule(rng, ops, window, &clients, &delivery_nodes, failover_ops);
    schedule.extend(faults);
    // Stable sort: equal times keep their generation order.
    schedule.sort_by_key(|s| s.at_ms);
    Ok(Plan {
        net,
        users,
        clients,
        schedule,
        active_end_ms,
        skew_ms,
        tick_ms: ov.tick_ms.unwrap_or(10),
        seq: SeqParams {
            batch_ms: ov.batch_ms.unwrap_or(SeqParams::default().batch_ms),
            thrifty_accept: ov
                .thrifty_accept
                .unwrap_or(SeqParams::default().thrifty_accept),
            ..SeqParams::default()
        },
        anti_entropy_ms: 1_000,
        expect,
        mailbox_cap: 120,
        max_quiet_ms: ov.max_quiet_ms.unwrap_or(30_000),
        unlock_sessions: ov.unlock_sessions,
    })
}
