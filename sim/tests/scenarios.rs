//! Every scenario over a range of seeds.
//!
//! Each scenario has two tests (the protocol bugs the simulator found are in
//! `sim/README.md`, "Findings"):
//! - `<scenario>`: the invariants that held while bugs were open (at least
//!   S1–S4 and the client-side UID checks everywhere), with the bugs then
//!   known — kept as they are;
//! - `<scenario>_all_invariants`: every invariant, including E, L1, L2 and
//!   "no acknowledged message lost".
//!
//! Sized for `cargo test --release` on 2 cores; debug builds run fewer seeds.

use aerogramme_sim::check::INVARIANTS;
use aerogramme_sim::{run, RunSpec};

/// Proto bug 1: `Replica::waiting` is keyed by `OpId`, which is only unique
/// per log: two pending local actions in different mailboxes with the same
/// op sequence number overwrite each other (an acknowledgement never comes,
/// or acknowledges the wrong action with another mailbox's UID).
const BUG1: &str = "L1_available";
const BUG1B: &str = "no_acked_message_lost";
/// Proto bug 2: a view that shows ops before its mailbox's `Create` arrived
/// keeps UIDVALIDITY 1 forever (L2, client UIDVALIDITY changes).
const BUG2: &[&str] = &["L2_convergent", "client_uidvalidity"];
/// Proto bug 3: a replica shows final values out of ledger order when op
/// payloads arrive after later ones (re-announcements, i.e. E, and
/// CHANGEDSINCE misses through another node).
const BUG3: &[&str] = &["E_cheap", "client_changedsince", "client_uid_ascending"];

fn seeds(n: u64) -> std::ops::Range<u64> {
    if cfg!(debug_assertions) {
        0..n.div_ceil(4)
    } else {
        0..n
    }
}

/// Runs `scenario` on `nodes` for `seeds`, asserting every invariant except
/// those in `known_broken`.
fn sweep(
    scenario: &str,
    nodes: usize,
    seeds: std::ops::Range<u64>,
    ops: usize,
    known_broken: &[&str],
) {
    let mut failures = Vec::new();
    for seed in seeds {
        let mut spec = RunSpec::new(scenario, nodes, seed);
        spec.ops = Some(ops);
        let r = run(&spec).expect("known scenario");
        let bad: Vec<&String> = r
            .report
            .invariants
            .iter()
            .filter(|(k, ok)| !**ok && !known_broken.contains(&k.as_str()))
            .map(|(k, _)| k)
            .collect();
        if !bad.is_empty() {
            failures.push(format!(
                "seed {seed}: {bad:?}; first violations: {:#?}",
                r.report.violations
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{scenario} on {nodes} nodes (reproduce: aerogramme-sim --scenario {scenario} --nodes {nodes} --ops {ops} --seed S):\n{}",
        failures.join("\n")
    );
}

fn known(lists: &[&[&str]]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for l in lists {
        for x in *l {
            if let Some(name) = INVARIANTS.iter().find(|n| *n == x) {
                v.push(name);
            }
        }
    }
    v
}

#[test]
fn steady() {
    let k = known(&[&[BUG1, BUG1B], BUG3]);
    sweep("steady", 3, seeds(48), 250, &k);
    sweep("steady", 5, seeds(16), 250, &k);
}

#[test]
fn multi_writer() {
    let k = known(&[&[BUG1, BUG1B], BUG3]);
    sweep("multi-writer", 3, seeds(48), 250, &k);
    sweep("multi-writer", 5, seeds(16), 250, &k);
}

#[test]
fn partition_heal() {
    let k = known(&[&[BUG1, BUG1B], BUG2, BUG3]);
    sweep("partition-heal", 3, seeds(48), 250, &k);
    sweep("partition-heal", 5, seeds(16), 250, &k);
}

#[test]
fn failover() {
    let k = known(&[&[BUG1, BUG1B], BUG2, BUG3]);
    sweep("failover", 3, seeds(48), 250, &k);
    sweep("failover", 5, seeds(16), 250, &k);
}

#[test]
fn crash_restart() {
    let k = known(&[&[BUG1, BUG1B], BUG2, BUG3]);
    sweep("crash-restart", 3, seeds(48), 250, &k);
    sweep("crash-restart", 5, seeds(16), 250, &k);
}

#[test]
fn geo() {
    let k = known(&[&[BUG1, BUG1B], BUG3]);
    sweep("geo", 3, seeds(48), 250, &k);
    sweep("geo", 6, seeds(8), 250, &k);
}

#[test]
fn chaos() {
    let k = known(&[&[BUG1, BUG1B], BUG2, BUG3]);
    sweep("chaos", 3, seeds(48), 250, &k);
    sweep("chaos", 5, seeds(16), 250, &k);
}

#[test]
fn steady_all_invariants() {
    sweep("steady", 3, seeds(32), 300, &[]);
    sweep("steady", 5, seeds(16), 300, &[]);
}

#[test]
fn multi_writer_all_invariants() {
    sweep("multi-writer", 3, seeds(32), 300, &[]);
    sweep("multi-writer", 5, seeds(16), 300, &[]);
}

#[test]
fn partition_heal_all_invariants() {
    sweep("partition-heal", 3, seeds(64), 300, &[]);
    sweep("partition-heal", 5, seeds(64), 300, &[]);
}

#[test]
fn failover_all_invariants() {
    sweep("failover", 3, seeds(64), 300, &[]);
    sweep("failover", 5, seeds(64), 300, &[]);
}

#[test]
fn crash_restart_all_invariants() {
    sweep("crash-restart", 3, seeds(32), 300, &[]);
    sweep("crash-restart", 5, seeds(16), 300, &[]);
}

#[test]
fn geo_all_invariants() {
    sweep("geo", 3, seeds(64), 300, &[]);
    sweep("geo", 6, seeds(16), 300, &[]);
}

/// Findings 7-9 (sim/README.md) are fixed: chaos holds every invariant.
#[test]
fn chaos_all_invariants() {
    sweep("chaos", 3, seeds(64), 300, &[]);
    sweep("chaos", 5, seeds(32), 300, &[]);
}

/// Keys unlocked only where users have sessions (`--unlock-sessions`, the
/// bench's setting): 3 users and 5 clients on 7 nodes leave replicas without
/// some users' keys, checked by their op logs and ledgers; every invariant.
#[test]
fn unlocked_where_sessions_all_invariants() {
    for scenario in ["chaos", "partition-heal", "failover", "crash-restart"] {
        let mut failures = Vec::new();
        for seed in seeds(12) {
            let mut spec = RunSpec::new(scenario, 7, seed);
            spec.ops = Some(300);
            spec.overrides.unlock_sessions = true;
            spec.overrides.users = Some(3);
            spec.overrides.clients = Some(5);
            let r = run(&spec).expect("known scenario");
            if !r.report.ok {
                failures.push(format!("seed {seed}: {:#?}", r.report.violations));
            }
        }
        assert!(
            failures.is_empty(),
            "{scenario} (reproduce: aerogramme-sim --scenario {scenario} --nodes 7 --unlock-sessions --users 3 --clients 5 --seed S):\n{}",
            failures.join("\n")
        );
    }
}

/// The checker is not blind: with the ownership rule broken (the owner
/// commits without a majority), an owner cut off while writing and a
/// majority electing a new owner give one UID to two messages (S1).
#[test]
fn broken_ownership_is_caught() {
    let mut caught = Vec::new();
    for seed in 0..4 {
        let mut spec = RunSpec::new("partition-heal", 3, seed);
        spec.ops = Some(200);
        spec.break_ownership = true;
        let r = run(&spec).expect("scenario");
        if !r.report.invariants["S1_unique"] {
            caught.push(seed);
        }
        // The same seeds with the rule intact keep S1.
        spec.break_ownership = false;
        assert!(run(&spec).expect("scenario").report.invariants["S1_unique"]);
    }
    assert!(
        !caught.is_empty(),
        "S1 must catch the broken ownership rule"
    );
}

/// Same seed, same bytes; another seed, another run.
#[test]
fn deterministic() {
    for scenario in ["chaos", "partition-heal", "crash-restart"] {
        let mut spec = RunSpec::new(scenario, 4, 11);
        spec.ops = Some(200);
        spec.trace = true;
        let a = run(&spec).expect("scenario");
        let b = run(&spec).expect("scenario");
        assert_eq!(a.report.to_json(), b.report.to_json(), "{scenario}");
        assert_eq!(a.report.to_text(), b.report.to_text(), "{scenario}");
        assert_eq!(a.trace, b.trace, "{scenario}: traces differ");
        spec.seed = 12;
        let c = run(&spec).expect("scenario");
        assert_ne!(a.trace, c.trace, "{scenario}: the seed must matter");
    }
}

/// Shrinking keeps a failure and removes most of the schedule.
#[test]
fn shrinking_keeps_the_violation() {
    let mut spec = RunSpec::new("partition-heal", 3, 0);
    spec.ops = Some(120);
    spec.break_ownership = true;
    let full = run(&spec).expect("scenario");
    assert!(!full.report.invariants["S1_unique"]);
    let s = aerogramme_sim::shrink::shrink(&spec, "S1_unique", 60).expect("fails");
    assert!(
        s.kept.len() < full.schedule.len() / 2,
        "{} of {}",
        s.kept.len(),
        full.schedule.len()
    );
    assert!(!s.result.report.invariants["S1_unique"]);
    assert!(s.result.trace.iter().any(|r| r.kind == "violation"));
}
