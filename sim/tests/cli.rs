//! The real binary: `--list`, `--json` keys (DESIGN §8), byte-identical
//! output for a seed, the sweep and the trace file.

use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aerogramme-sim"))
        .args(args)
        .output()
        .expect("binary runs")
}

#[test]
fn list_names_every_scenario() {
    let out = sim(&["--list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for name in [
        "steady",
        "multi-writer",
        "partition-heal",
        "failover",
        "crash-restart",
        "geo",
        "chaos",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} listed"));
        assert!(line.contains("E:"), "{name} states its E expectation");
    }
}

#[test]
fn json_report_has_the_keys_and_the_same_seed_prints_the_same_bytes() {
    let args = [
        "--scenario",
        "multi-writer",
        "--nodes",
        "3",
        "--seed",
        "7",
        "--ops",
        "150",
        "--json",
        "--no-shrink",
    ];
    let a = sim(&args);
    let b = sim(&args);
    assert_eq!(a.stdout, b.stdout, "same seed, same bytes");
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).expect("one JSON object");
    for key in [
        "scenario",
        "seed",
        "nodes",
        "ops",
        "invariants",
        "uidvalidity_changes",
        "reannounced_messages",
        "acked_messages",
        "lost_acked_messages",
        "converged",
        "convergence_sim_ms",
    ] {
        assert!(v.get(key).is_some(), "key {key}");
    }
    assert_eq!(v["scenario"], "multi-writer");
    assert_eq!(v["seed"], 7);
    assert_eq!(v["nodes"], 3);
    assert!(v["ops"].as_u64().unwrap() >= 150);
    let inv = v["invariants"].as_object().unwrap();
    for name in [
        "S1_unique",
        "S2_ascending",
        "S3_uidvalidity_grows",
        "S4_stable",
        "L2_convergent",
        "E_cheap",
    ] {
        assert!(inv[name].is_boolean(), "{name}");
    }
    // Exit status follows the invariants.
    let ok = inv.values().all(|x| x.as_bool() == Some(true));
    assert_eq!(a.status.success(), ok);
    // The text report is deterministic too.
    let t1 = sim(&args[..args.len() - 2]);
    let t2 = sim(&args[..args.len() - 2]);
    assert_eq!(t1.stdout, t2.stdout);
}

#[test]
fn broken_rule_fails_with_the_seed_and_a_shortest_trace() {
    let out = sim(&[
        "--scenario",
        "partition-heal",
        "--nodes",
        "3",
        "--seed",
        "0",
        "--ops",
        "80",
        "--break",
        "ownership",
        "--shrink-runs",
        "25",
    ]);
    assert!(!out.status.success(), "a violated invariant exits non-zero");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("S1_unique"));
    assert!(text.contains("seed 0 fails"), "names the seed: {text}");
    assert!(text.contains("shortest schedule"));
    assert!(text.contains("reproduce: aerogramme-sim"));
}

#[test]
fn sweep_prints_failing_seeds() {
    let out = sim(&[
        "--scenario",
        "partition-heal",
        "--nodes",
        "3",
        "--seeds",
        "0..2",
        "--ops",
        "60",
        "--break",
        "ownership",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("failing seeds:"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("seed ")).count(), 2);
}

#[test]
fn trace_is_written_as_csv() {
    let dir = std::env::temp_dir().join(format!("aerogramme-sim-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.csv");
    let p = path.to_str().unwrap();
    let out = sim(&[
        "--scenario",
        "steady",
        "--nodes",
        "3",
        "--seed",
        "1",
        "--ops",
        "40",
        "--trace",
        p,
        "--no-shrink",
    ]);
    assert!(out.status.code().is_some());
    let csv = std::fs::read_to_string(&path).unwrap();
    assert!(csv.starts_with("sim_ms,node,kind,detail\n"));
    assert!(csv.lines().count() > 40);
    assert!(csv.lines().any(|l| l.contains(",event,")));
    std::fs::remove_dir_all(&dir).ok();
}
