//! `aerogramme-sim`: command line (DESIGN §8).
//!
//! ```text
//! aerogramme-sim --list
//! aerogramme-sim --scenario NAME --nodes N --seed S [--ops K] [--json] [--trace FILE.csv]
//! aerogramme-sim --scenario NAME --nodes N --seeds A..B      (sweep; prints failing seeds)
//! ```

use aerogramme_sim::scenario::SCENARIOS;
use aerogramme_sim::shrink::{excerpt, shrink, to_csv};
use aerogramme_sim::{run, RunSpec};
use clap::Parser;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// mimalloc, as the node uses: a run allocates and frees many small objects
/// (messages, log and ledger entries) across many replicas' tables.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Deterministic simulator of Aerogramme's replication and UID protocols.
#[derive(Parser, Debug)]
#[command(name = "aerogramme-sim", version)]
struct Cli {
    /// List the scenarios and what each expects of E.
    #[arg(long)]
    list: bool,
    /// Scenario to run.
    #[arg(long)]
    scenario: Option<String>,
    /// Number of replicas.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seed of the run.
    #[arg(long)]
    seed: Option<u64>,
    /// Sweep seeds: `A..B` (B excluded) or `A..=B`.
    #[arg(long)]
    seeds: Option<String>,
    /// Client operations (default 300).
    #[arg(long)]
    ops: Option<usize>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the per-event trace as CSV (sim_ms,node,kind,detail).
    #[arg(long, value_name = "FILE.csv")]
    trace: Option<PathBuf>,
    /// Test only: break a protocol rule to prove the checker catches it
    /// (`ownership`: the owner commits without a majority).
    #[arg(long = "break", value_name = "RULE")]
    break_rule: Option<String>,
    /// Run only these schedule items (comma-separated indices, or `none`),
    /// e.g. to replay a shrunk trace.
    #[arg(long, value_name = "I,J,...")]
    keep: Option<String>,
    /// Do not shrink a failing run.
    #[arg(long)]
    no_shrink: bool,
    /// Most re-runs while shrinking.
    #[arg(long, default_value_t = 150)]
    shrink_runs: usize,
    /// Unlock a user's keys only on the replicas where it has sessions (node
    /// 0, its clients' nodes, nodes its clients fail over to), as a node
    /// does, instead of on every replica; the others' op logs and ledgers
    /// are checked instead of their views (the bench does this).
    #[arg(long)]
    unlock_sessions: bool,
    /// Number of users (default 1).
    #[arg(long)]
    users: Option<usize>,
    /// Number of IMAP clients (default: the scenario's), client `c` of user
    /// `c mod users`, starting on node `c mod nodes`.
    #[arg(long)]
    clients: Option<usize>,
    /// The sequencer's `batch_ms`: least time between two ledger slots the
    /// owner proposes (0: a slot per arrival). Default: the protocol's.
    #[arg(long, value_name = "MS")]
    batch_ms: Option<u64>,
}

fn parse_seeds(s: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("--seeds {s:?}: expected A..B or A..=B");
    if let Some((a, b)) = s.split_once("..=") {
        let a: u64 = a.trim().parse().map_err(|_| bad())?;
        let b: u64 = b.trim().parse().map_err(|_| bad())?;
        return Ok((a..=b).collect());
    }
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    Ok((a..b).collect())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for (name, what) in SCENARIOS {
            println!("{name:<16} {what}");
        }
        return ExitCode::SUCCESS;
    }
    let Some(scenario) = cli.scenario.clone() else {
        eprintln!("aerogramme-sim: --scenario NAME is required (see --list)");
        return ExitCode::from(2);
    };
    let break_ownership = match cli.break_rule.as_deref() {
        None => false,
        Some("ownership") => true,
        Some(r) => {
            eprintln!("aerogramme-sim: unknown rule {r:?} for --break (known: ownership)");
            return ExitCode::from(2);
        }
    };
    let mut spec = RunSpec::new(&scenario, cli.nodes, cli.seed.unwrap_or(0));
    spec.ops = cli.ops;
    spec.break_ownership = break_ownership;
    spec.overrides.unlock_sessions = cli.unlock_sessions;
    spec.overrides.users = cli.users;
    spec.overrides.clients = cli.clients;
    spec.overrides.batch_ms = cli.batch_ms;
    if let Some(k) = &cli.keep {
        let mut set = BTreeSet::new();
        for x in k
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty() && *x != "none")
        {
            match x.parse::<usize>() {
                Ok(i) => {
                    set.insert(i);
                }
                Err(_) => {
                    eprintln!("aerogramme-sim: --keep {k:?}: expected indices like 3,17,42");
                    return ExitCode::from(2);
                }
            }
        }
        spec.keep = Some(set);
    }
    match (&cli.seeds, cli.seed) {
        (Some(r), _) => match parse_seeds(r) {
            Ok(seeds) => sweep(&cli, spec, &seeds),
            Err(e) => {
                eprintln!("aerogramme-sim: {e}");
                ExitCode::from(2)
            }
        },
        (None, Some(_)) => single(&cli, spec),
        (None, None) => {
            eprintln!("aerogramme-sim: give --seed S or --seeds A..B");
            ExitCode::from(2)
        }
    }
}

fn single(cli: &Cli, mut spec: RunSpec) -> ExitCode {
    spec.trace = cli.trace.is_some();
    let t0 = Instant::now();
    let res = match run(&spec) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("aerogramme-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    eprintln!(
        "wall clock: {wall:.3} s, {:.0} simulated ops per wall second, {} replica steps",
        res.report.ops as f64 / wall.max(1e-9),
        res.report.counts.get("replica_steps").copied().unwrap_or(0)
    );
    if let Some(path) = &cli.trace {
        if let Err(e) = std::fs::write(path, to_csv(&res.trace)) {
            eprintln!("aerogramme-sim: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let mut report = res.report.clone();
    let mut shrunk_text = String::new();
    if !report.ok && !cli.no_shrink {
        let inv = res
            .violations
            .first()
            .map(|v| v.invariant)
            .unwrap_or("L2_convergent");
        if let Some(s) = shrink(&spec, inv, cli.shrink_runs) {
            let keep: Vec<String> = s.kept.iter().map(|i| i.to_string()).collect();
            let mut cmd = format!(
                "aerogramme-sim --scenario {} --nodes {} --seed {}",
                spec.scenario, spec.nodes, spec.seed
            );
            if let Some(ops) = s.spec.ops {
                cmd.push_str(&format!(" --ops {ops}"));
            }
            if spec.break_ownership {
                cmd.push_str(" --break ownership");
            }
            if spec.overrides.unlock_sessions {
                cmd.push_str(" --unlock-sessions");
            }
            if let Some(u) = spec.overrides.users {
                cmd.push_str(&format!(" --users {u}"));
            }
            if let Some(c) = spec.overrides.clients {
                cmd.push_str(&format!(" --clients {c}"));
            }
            if let Some(b) = spec.overrides.batch_ms {
                cmd.push_str(&format!(" --batch-ms {b}"));
            }
            let keep = if keep.is_empty() {
                "none".to_string()
            } else {
                keep.join(",")
            };
            cmd.push_str(&format!(" --keep {keep}"));
            let sched: Vec<String> = s
                .result
                .schedule
                .iter()
                .map(|(i, x)| format!("#{i:<5} {x}"))
                .collect();
            let cause = s
                .result
                .violations
                .iter()
                .find(|v| v.invariant == inv)
                .and_then(|v| v.since_ms);
            let rows: Vec<String> = excerpt(&s.result.trace, cause, 150)
                .iter()
                .map(|r| {
                    format!(
                        "{:>10}.{:03} ms  {:<6} {:<10} {}",
                        r.at_us / 1_000,
                        r.at_us % 1_000,
                        r.node.map_or("-".to_string(), |n| format!("n{n}")),
                        r.kind,
                        r.detail
                    )
                })
                .collect();
            shrunk_text = format!(
                "\nseed {} fails {inv}; shortest schedule found: {} item(s) of {} ({} re-runs):\n{}\nreproduce: {cmd}\n\ntrace of the shortest run up to the violation:\n{}\n",
                spec.seed,
                s.kept.len(),
                res.schedule.len(),
                s.runs,
                sched.join("\n"),
                rows.join("\n")
            );
            report
                .violations
                .insert(0, format!("shortest schedule: {cmd}"));
        }
    }
    if cli.json {
        println!("{}", report.to_json());
        if !shrunk_text.is_empty() {
            eprint!("{shrunk_text}");
        }
    } else {
        print!("{}", report.to_text());
        print!("{shrunk_text}");
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn sweep(cli: &Cli, spec: RunSpec, seeds: &[u64]) -> ExitCode {
    let t0 = Instant::now();
    let mut failing = Vec::new();
    let mut reports = Vec::new();
    let mut ops = 0u64;
    for &seed in seeds {
        let mut s = spec.clone();
        s.seed = seed;
        let r = match run(&s) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("aerogramme-sim: {e}");
                return ExitCode::from(2);
            }
        };
        let rep = r.report;
        ops += rep.ops;
        if !rep.ok {
            failing.push(seed);
        }
        if !cli.json {
            let failed: Vec<&str> = rep.violation_counts.keys().map(|k| k.as_str()).collect();
            println!(
                "seed {seed:<6} {}  ops {} acked {} reannounced {} uidvalidity_changes {} stale {} converged {}",
                if rep.ok { "PASS".to_string() } else { format!("FAIL {}", failed.join(",")) },
                rep.ops,
                rep.acked_messages,
                rep.reannounced_messages,
                rep.uidvalidity_changes,
                rep.stale_reads,
                rep.convergence_sim_ms.map_or("no".to_string(), |m| format!("{m}ms")),
            );
        }
        reports.push(rep);
    }
    let wall = t0.elapsed().as_secs_f64();
    eprintln!(
        "wall clock: {wall:.3} s for {} runs, {:.0} simulated ops per wall second",
        seeds.len(),
        ops as f64 / wall.max(1e-9)
    );
    if cli.json {
        let v = serde_json::json!({
            "scenario": spec.scenario,
            "nodes": spec.nodes,
            "seeds": seeds,
            "failing_seeds": failing,
            "runs": reports,
        });
        println!("{v}");
    } else {
        let f: Vec<String> = failing.iter().map(|s| s.to_string()).collect();
        println!(
            "failing seeds: {}",
            if f.is_empty() {
                "none".to_string()
            } else {
                f.join(" ")
            }
        );
    }
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
