//! Shrinking a failing run: delta debugging (ddmin) over the schedule
//! items, re-running the same seed with subsets of them and keeping a
//! subset whenever the same invariant still fails. The result is a short
//! list of items (client operations, deliveries, faults) that still shows
//! the violation; `--keep` with their indices replays it.

use crate::world::{run, RunResult, RunSpec, TraceRow};
use std::collections::BTreeSet;

/// A shrunk failing run.
pub struct Shrunk {
    /// The spec that fails (`ops` may be lower than asked for).
    pub spec: RunSpec,
    /// Indices (in the full schedule of `spec`) of the items kept.
    pub kept: BTreeSet<usize>,
    /// The run of those items, with its trace.
    pub result: RunResult,
    /// Runs made while shrinking.
    pub runs: usize,
}

fn fails(r: &RunResult, invariant: &str) -> bool {
    r.report.violation_counts.contains_key(invariant)
}

/// The earliest time the first violation of `invariant` dates from.
fn cause_ms(r: &RunResult, invariant: &str) -> Option<u64> {
    r.violations
        .iter()
        .filter(|v| v.invariant == invariant)
        .map(|v| v.since_ms)
        .next()
        .flatten()
}

/// Shrinks `spec` (whose run fails `invariant`) with at most `max_runs`
/// re-runs: first with fewer client operations (the same seed, a smaller
/// `--ops`), then by dropping every schedule item after the violation's
/// cause (the run up to it is unchanged), then by delta debugging over the
/// remaining items. `None` if the run does not fail `invariant`.
pub fn shrink(spec: &RunSpec, invariant: &str, max_runs: usize) -> Option<Shrunk> {
    let mut spec = spec.clone();
    spec.trace = false;
    spec.keep = None;
    let mut runs = 0;
    let try_run = |s: &RunSpec, runs: &mut usize| -> Option<RunResult> {
        *runs += 1;
        run(s).ok()
    };
    let mut best = try_run(&spec, &mut runs)?;
    if !fails(&best, invariant) {
        return None;
    }
    // 1. Fewer client operations.
    let ops = spec.ops.unwrap_or(crate::scenario::DEFAULT_OPS);
    for div in [16, 8, 4, 2] {
        let k = ops / div;
        if k < 8 || runs >= max_runs {
            continue;
        }
        let mut s = spec.clone();
        s.ops = Some(k);
        if let Some(r) = try_run(&s, &mut runs) {
            if fails(&r, invariant) {
                spec = s;
                best = r;
                break;
            }
        }
    }
    let mut kept: Vec<usize> = best.schedule.iter().map(|(i, _)| *i).collect();
    let with = |keep: &[usize]| {
        let mut s = spec.clone();
        s.keep = Some(keep.iter().copied().collect());
        s
    };
    // 2. Nothing after the cause matters.
    if let Some(t) = cause_ms(&best, invariant) {
        let cand: Vec<usize> = best
            .schedule
            .iter()
            .filter(|(_, s)| s.at_ms <= t)
            .map(|(i, _)| *i)
            .collect();
        if cand.len() < kept.len() {
            if let Some(r) = try_run(&with(&cand), &mut runs) {
                if fails(&r, invariant) {
                    kept = cand;
                }
            }
        }
    }
    // 3. Delta debugging.
    if !kept.is_empty() && runs < max_runs {
        if let Some(r) = try_run(&with(&[]), &mut runs) {
            if fails(&r, invariant) {
                kept.clear();
            }
        }
    }
    let mut n = 2usize;
    while kept.len() > 1 && runs < max_runs {
        let chunk = kept.len().div_ceil(n);
        let mut reduced = false;
        let mut start = 0;
        while start < kept.len() && runs < max_runs {
            let cand: Vec<usize> = kept[..start]
                .iter()
                .chain(kept[(start + chunk).min(kept.len())..].iter())
                .copied()
                .collect();
            if try_run(&with(&cand), &mut runs).is_some_and(|r| fails(&r, invariant)) {
                kept = cand;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
            start += chunk;
        }
        if !reduced {
            if n >= kept.len() {
                break;
            }
            n = (n * 2).min(kept.len());
        }
    }
    let mut s = with(&kept);
    s.trace = true;
    let result = run(&s).ok()?;
    s.trace = false;
    Some(Shrunk {
        spec: s,
        kept: kept.into_iter().collect(),
        result,
        runs,
    })
}

/// The rows of a trace worth printing to show a violation: every row but
/// the per-replica events up to the first violation, the events of the two
/// simulated seconds before it and around `cause_ms` (at most `max` rows,
/// the last ones).
pub fn excerpt(trace: &[TraceRow], cause_ms: Option<u64>, max: usize) -> Vec<&TraceRow> {
    let end = trace
        .iter()
        .position(|r| r.kind == "violation")
        .map_or(trace.len(), |p| {
            // Include the violations reported at the same instant.
            let at = trace[p].at_us;
            trace[p..]
                .iter()
                .position(|r| r.at_us != at)
                .map_or(trace.len(), |q| p + q)
        });
    let last = trace[..end].last().map_or(0, |r| r.at_us);
    let near = |at_us: u64| {
        cause_ms.is_some_and(|c| at_us + 500_000 >= c * 1_000 && at_us <= c * 1_000 + 500_000)
    };
    let rows: Vec<&TraceRow> = trace[..end]
        .iter()
        .filter(|r| r.kind != "event" || r.at_us + 2_000_000 >= last || near(r.at_us))
        .collect();
    let skip = rows.len().saturating_sub(max);
    rows[skip..].to_vec()
}

/// `sim_ms,node,kind,detail` CSV of a trace.
pub fn to_csv(trace: &[TraceRow]) -> String {
    let mut s = String::from("sim_ms,node,kind,detail\n");
    for r in trace {
        let node = r.node.map_or(String::new(), |n| n.to_string());
        let detail = r.detail.replace('"', "\"\"");
        s.push_str(&format!(
            "{}.{:03},{},{},\"{}\"\n",
            r.at_us / 1_000,
            r.at_us % 1_000,
            node,
            r.kind,
            detail
        ));
    }
    s
}
