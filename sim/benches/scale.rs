//! Scale benchmark: 50 nodes, 100 000 client operations, one thread.
//! `cargo bench -p aerogramme-sim` (or set SIM_BENCH_NODES / SIM_BENCH_OPS).
//! Prints wall time and simulated operations per wall second.

use aerogramme_sim::scenario::Overrides;
use aerogramme_sim::{run, RunSpec};
use std::time::Instant;

/// mimalloc, as the node uses: the run allocates and frees many small
/// objects (messages, log and ledger entries) across 50 replicas' tables.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this
    // runs a small smoke test instead of the full size.
    let full = std::env::args().any(|a| a == "--bench");
    let nodes = env("SIM_BENCH_NODES", if full { 50 } else { 5 }) as usize;
    let ops = env("SIM_BENCH_OPS", if full { 100_000 } else { 300 }) as usize;
    let mut spec = RunSpec::new("multi-writer", nodes, env("SIM_BENCH_SEED", 1));
    spec.ops = Some(ops);
    spec.overrides = Overrides {
        users: Some(env("SIM_BENCH_USERS", 10) as usize),
        clients: Some(env("SIM_BENCH_CLIENTS", 100) as usize),
        ops_per_sec: Some(env("SIM_BENCH_RATE", 2_000)),
        tick_ms: Some(env("SIM_BENCH_TICK_MS", 50)),
        leak_world: true,
        max_quiet_ms: Some(env("SIM_BENCH_QUIET_MS", 5_000)),
        // As a node does: a user's keys only where it has sessions
        // (SIM_BENCH_UNLOCK_ALL=1: on every replica, as before).
        unlock_sessions: env("SIM_BENCH_UNLOCK_ALL", 0) == 0,
        batch_ms: std::env::var("SIM_BENCH_BATCH_MS")
            .ok()
            .and_then(|v| v.parse().ok()),
        // SIM_BENCH_THRIFTY=0: every `Accept` to every member, as before.
        thrifty_accept: std::env::var("SIM_BENCH_THRIFTY").ok().map(|v| v != "0"),
    };
    let t0 = Instant::now();
    let r = run(&spec).expect("scenario");
    let wall = t0.elapsed().as_secs_f64();
    let rep = &r.report;
    println!(
        "bench: {} nodes, {} ops ({} acked messages), {:.1} s simulated, {} replica steps, {} messages",
        nodes,
        rep.ops,
        rep.acked_messages,
        rep.sim_ms as f64 / 1e3,
        rep.counts["replica_steps"],
        rep.counts["net_delivered"],
    );
    println!(
        "bench: wall {wall:.2} s, {:.0} simulated ops per wall second, invariants {}",
        rep.ops as f64 / wall,
        if rep.ok { "all held" } else { "FAILED" }
    );
    println!("bench: messages sent by kind: {:?}", r.net_by_kind);
    if !rep.ok {
        for v in &rep.violations {
            println!("  {v}");
        }
    }
}
