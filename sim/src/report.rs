//! The report of a run: a table for people, one JSON object for scripts
//! (`--json`, keys of DESIGN §8). No wall-clock figure is in it, and every
//! map is ordered, so the same seed prints the same bytes.

use crate::check::INVARIANTS;
use crate::world::{RunSpec, World};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Scenario.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Client operations and LMTP deliveries executed.
    pub ops: u64,
    /// Invariant → held.
    pub invariants: BTreeMap<String, bool>,
    /// Whether every invariant held.
    pub ok: bool,
    /// UIDVALIDITY changes seen on any replica.
    pub uidvalidity_changes: u64,
    /// Distinct messages shown under more than one UID.
    pub reannounced_messages: u64,
    /// Messages acknowledged (APPENDUID, COPYUID, LMTP).
    pub acked_messages: u64,
    /// Of which missing somewhere at the end (and not expunged by a client).
    pub lost_acked_messages: u64,
    /// Whether all replicas agreed after the heal.
    pub converged: bool,
    /// Simulated ms from the heal until all replicas agreed.
    pub convergence_sim_ms: Option<u64>,
    /// What the scenario expects of E.
    pub e_expected: String,
    /// The bound on re-announced messages that applied, if any.
    pub e_reannounce_bound: Option<u64>,
    /// Whether E held.
    pub e_held: bool,
    /// Stale reads seen by clients (a node behind them; not a violation).
    pub stale_reads: u64,
    /// Other counters.
    pub counts: BTreeMap<String, u64>,
    /// Test-only rule break in effect (`--break ownership`).
    pub broken_rule: Option<String>,
    /// Network description.
    pub network: String,
    /// Number of schedule items run.
    pub schedule_items: usize,
    /// Simulated duration, ms.
    pub sim_ms: u64,
    /// Violations per invariant.
    pub violation_counts: BTreeMap<String, u64>,
    /// The first violations.
    pub violations: Vec<String>,
}

pub(crate) fn build(spec: &RunSpec, w: &World, items: usize) -> Report {
    let o = w.outcomes();
    let mut invariants = BTreeMap::new();
    for name in INVARIANTS {
        invariants.insert(name.to_string(), !o.check.failed.contains_key(name));
    }
    let s = o.stats;
    let mut counts = BTreeMap::new();
    let mut c = |k: &str, v: u64| {
        counts.insert(k.to_string(), v);
    };
    c("ops_refused", s.ops_refused);
    c("lmtp_deliveries", s.deliveries);
    c("client_resyncs", s.resyncs);
    c("client_failovers", s.failovers);
    c("crashes", s.crashes);
    c("restarts", s.restarts);
    c("replica_steps", s.steps);
    c("net_sent", s.net_sent);
    c("net_delivered", s.net_delivered);
    c("net_lost", s.net_lost);
    c("net_dropped", s.net_dropped);
    c("net_held", s.net_held);
    c("net_duplicated", s.net_duplicated);
    c("l1_exempt_actions", s.l1_exempt);
    c("max_ack_sim_ms", s.max_ack_us / 1_000);
    c("transient_uids", o.check.transient);
    c("acked_expunged_at_once", s.acked_expunged_at_once);
    let e_held = !o.check.failed.contains_key("E_cheap");
    Report {
        scenario: spec.scenario.clone(),
        seed: spec.seed,
        nodes: spec.nodes,
        ops: s.ops,
        ok: o.check.failed.is_empty(),
        invariants,
        uidvalidity_changes: o.check.uidvalidity_changes,
        reannounced_messages: o.check.reannounced.len() as u64,
        acked_messages: s.acked_messages,
        lost_acked_messages: o.lost,
        converged: o.converged_ms.is_some() && !o.check.failed.contains_key("L2_convergent"),
        convergence_sim_ms: o.converged_ms,
        e_expected: o.e_desc.to_string(),
        e_reannounce_bound: o.e_bound,
        e_held,
        stale_reads: s.stale_reads,
        counts,
        broken_rule: spec
            .break_ownership
            .then(|| "ownership: commit without a majority".to_string()),
        network: o.net.describe(),
        schedule_items: items,
        sim_ms: o.sim_ms,
        violation_counts: o
            .check
            .failed
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        violations: o
            .check
            .violations
            .iter()
            .take(10)
            .map(|v| {
                format!(
                    "t={}ms {}{}: {}",
                    v.at_ms,
                    v.invariant,
                    v.node.map_or(String::new(), |n| format!(" node {n}")),
                    v.detail
                )
            })
            .collect(),
    }
}

impl Report {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human-readable table.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "aerogramme-sim  scenario {}  nodes {}  seed {}  ({} schedule items)",
            self.scenario, self.nodes, self.seed, self.schedule_items
        );
        if let Some(b) = &self.broken_rule {
            let _ = writeln!(t, "BROKEN RULE (test only): {b}");
        }
        let _ = writeln!(t, "network   {}", self.network);
        let _ = writeln!(t, "simulated {:.3} s", self.sim_ms as f64 / 1_000.0);
        let _ = writeln!(t);
        let _ = writeln!(t, "{:<28} result", "invariant");
        for name in INVARIANTS {
            let ok = self.invariants.get(*name).copied().unwrap_or(false);
            let n = self.violation_counts.get(*name).copied().unwrap_or(0);
            let r = if ok {
                "ok".to_string()
            } else {
                format!("FAILED ({n} violation{})", if n == 1 { "" } else { "s" })
            };
            let _ = writeln!(t, "{name:<28} {r}");
        }
        let _ = writeln!(t);
        let _ = writeln!(t, "{:<28} value", "count");
        let rows: Vec<(&str, String)> = vec![
            ("ops", self.ops.to_string()),
            ("acked_messages", self.acked_messages.to_string()),
            ("lost_acked_messages", self.lost_acked_messages.to_string()),
            ("uidvalidity_changes", self.uidvalidity_changes.to_string()),
            (
                "reannounced_messages",
                self.reannounced_messages.to_string(),
            ),
            ("stale_reads", self.stale_reads.to_string()),
            (
                "convergence_sim_ms",
                match (self.converged, self.convergence_sim_ms) {
                    (true, Some(ms)) => format!("{ms} (converged)"),
                    _ => "not converged".to_string(),
                },
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(t, "{k:<28} {v}");
        }
        for (k, v) in &self.counts {
            let _ = writeln!(t, "{k:<28} {v}");
        }
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "E expected: {}\nE {}: {} UIDVALIDITY change(s), {} re-announced message(s)",
            self.e_expected,
            if self.e_held { "held" } else { "DID NOT HOLD" },
            self.uidvalidity_changes,
            self.reannounced_messages
        );
        if !self.violations.is_empty() {
            let _ = writeln!(t);
            let _ = writeln!(t, "first violations:");
            for v in &self.violations {
                let _ = writeln!(t, "  {v}");
            }
        }
        let _ = writeln!(t, "result: {}", if self.ok { "PASS" } else { "FAIL" });
        t
    }
}
