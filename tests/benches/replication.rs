//! Replication between real node processes on loopback:
//!
//! 1. latency from LMTP 250 on node 1 to the IDLE notification on node 2
//!    (p50, p99), three nodes on loopback;
//! 2. the same with 50 ms added (one way) between node 1 and the two
//!    others, by a delaying TCP relay (the kernel here has no netem), and
//!    the bytes on every link (each through a counting relay) per
//!    delivered message byte and receiving node, for three kinds of mail:
//!    the 4 kB text of (1), real mail (a sample of the SpamAssassin corpus,
//!    as the IMAP benchmark uses; skipped when it cannot be installed) and
//!    4 kB that does not compress (base64 of random bytes);
//! 3. catch-up: a node stopped while messages arrive, then started: how
//!    fast it has them all (MB/s of message data).
//!
//! `cargo bench -p aerogramme-tests --bench replication`
//! (`REPL_BENCH_N` deliveries per latency run, default 200;
//! `REPL_BENCH_CATCHUP` messages of 10 kB for the catch-up, default 1000).

#[path = "../../node/benches/common/corpus.rs"]
#[allow(dead_code)]
mod corpus;

use aerogramme_tests::{free_port, Node};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const USER: &str = "bench";
const PW: &str = "bench password";
const SIZE: usize = 4096;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn py(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(name)
        .display()
        .to_string()
}

struct Relay {
    child: Child,
    port: u16,
    counts: tempfile::NamedTempFile,
}

impl Relay {
    fn start(target: u16, delay_ms: u64) -> Relay {
        let port = free_port();
        let counts = tempfile::NamedTempFile::new().expect("temp file");
        let child = Command::new("python3")
            .arg(py("delay_relay.py"))
            .arg(port.to_string())
            .arg(format!("127.0.0.1:{target}"))
            .arg(delay_ms.to_string())
            .arg(counts.path())
            .spawn()
            .expect("python3");
        aerogramme_tests::wait_for_port(port);
        Relay {
            child,
            port,
            counts,
        }
    }

    fn bytes(&self) -> u64 {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::read_to_string(self.counts.path())
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|w| w.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(nodes: &[Node]) {
    for n in nodes {
        n.wait_for_peers(nodes.len() - 1);
    }
    nodes[0].add_user(USER, PW);
    for n in nodes {
        n.python("repl.py", &["login", &n.imap.to_string(), USER, PW, "60"]);
    }
}

/// (p50, p99, mean) in ms and the message bytes delivered; `bodies` as
/// `idle_latency.py` takes it.
fn latency(from: &Node, to: &Node, n: usize, bodies: &str) -> (f64, f64, f64, u64) {
    let out = from.python(
        "idle_latency.py",
        &[
            &from.lmtp.to_string(),
            &to.imap.to_string(),
            USER,
            PW,
            &n.to_string(),
            bodies,
        ],
    );
    let v: Vec<f64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v[0], v[1], v[2], v[3] as u64)
}

fn main() {
    let n = env("REPL_BENCH_N", 200);
    let catchup = env("REPL_BENCH_CATCHUP", 1000);

    // 1. Loopback.
    let mut nodes = Node::community(3);
    ready(&nodes);
    let (p50, p99, mean, _) = latency(&nodes[0], &nodes[1], n, &SIZE.to_string());
    println!("LMTP 250 on node 1 -> IDLE on node 2, loopback, {n} messages of {SIZE} B: p50 {p50:.1} ms, p99 {p99:.1} ms, mean {mean:.1} ms");

    // 3. Catch-up (same community).
    nodes[2].stop();
    nodes[0].python(
        "repl.py",
        &[
            "deliver",
            &nodes[0].lmtp.to_string(),
            USER,
            &catchup.to_string(),
            "10",
            "catchup",
            "10240",
        ],
    );
    let count = (n + catchup).to_string();
    nodes[1].python(
        "repl.py",
        &[
            "snapshot",
            &nodes[1].imap.to_string(),
            USER,
            PW,
            &count,
            "600",
        ],
    );
    let t = Instant::now();
    nodes[2].start_again();
    nodes[2].python(
        "repl.py",
        &[
            "snapshot",
            &nodes[2].imap.to_string(),
            USER,
            PW,
            &count,
            "600",
        ],
    );
    let secs = t.elapsed().as_secs_f64();
    let mb = (catchup * 10_300) as f64 / 1e6;
    println!("catch-up of {catchup} messages ({mb:.1} MB) by a restarted node, start to all readable over IMAP: {secs:.1} s, {:.1} MB/s", mb / secs);
    drop(nodes);

    // 2. 50 ms between node 1 and the others; every link goes through a
    //    relay so that every byte between the nodes is counted (and only
    //    through it: without Kademlia, which would dial the addresses a
    //    peer announces, a node connects only to the relays it joins). The
    //    nodes log what they send, so that the run can say which node owned
    //    the mailbox's ledger (the one that sent the Accepts): the placement
    //    is random per mailbox, and the far owner costs the most.
    if std::env::var_os("NODE_LOG").is_none() {
        // Single-threaded here: no other thread reads the environment.
        std::env::set_var("NODE_LOG", "info,aerogramme::wire=trace");
    }
    let first = relayed(&[], None);
    let key = first.dir.path().join("network.key");
    let r12 = Relay::start(first.p2p, 50);
    let r13 = Relay::start(first.p2p, 50);
    let via = |r: &Relay, n: &Node| format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", r.port, n.peer_id);
    let second = relayed(&[via(&r12, &first)], Some(&key));
    let r23 = Relay::start(second.p2p, 0);
    let third = relayed(&[via(&r13, &first), via(&r23, &second)], Some(&key));
    let nodes = vec![first, second, third];
    ready(&nodes);
    let relays = [&r12, &r13, &r23];
    let sample = corpus_sample(n);
    let mut kinds = vec![(format!("{SIZE} B of text"), SIZE.to_string())];
    if let Some(dir) = &sample {
        kinds.push((
            "real mail".into(),
            format!("files:{}", dir.path().display()),
        ));
    }
    kinds.push((
        format!("{SIZE} B of base64 (incompressible)"),
        format!("random:{SIZE}"),
    ));
    for (label, bodies) in kinds {
        let before: Vec<u64> = relays.iter().map(|r| r.bytes()).collect();
        let accepts_before: Vec<usize> = nodes.iter().map(accepts_sent).collect();
        let (p50, p99, mean, bytes) = latency(&nodes[0], &nodes[1], n, &bodies);
        let accepts: Vec<usize> = nodes
            .iter()
            .zip(&accepts_before)
            .map(|(node, b)| accepts_sent(node) - b)
            .collect();
        let owner = match accepts.iter().enumerate().max_by_key(|(_, a)| **a) {
            Some((0, a)) if *a > 0 => "node 1 (far from the reader)".to_string(),
            Some((i, a)) if *a > 0 => format!("node {} (near the reader)", i + 1),
            _ => "unknown (NODE_LOG without aerogramme::wire=trace)".to_string(),
        };
        let wire: Vec<u64> = relays
            .iter()
            .zip(&before)
            .map(|(r, b)| r.bytes() - b)
            .collect();
        println!("LMTP 250 on node 1 -> IDLE on node 2, 50 ms added between node 1 and nodes 2, 3 (delaying relay), {n} messages, {label}: p50 {p50:.1} ms, p99 {p99:.1} ms, mean {mean:.1} ms; ledger owner {owner}");
        let all: u64 = wire.iter().sum();
        println!(
            "  bytes on the wire per message byte and receiving node: {:.2} ({all} B on the three links for {bytes} B of messages, each received by 2 nodes)",
            all as f64 / (2 * bytes) as f64
        );
        println!(
            "  link 1-2: {:.2}, link 1-3: {:.2}, link 2-3: {:.2} (per message byte)",
            wire[0] as f64 / bytes as f64,
            wire[1] as f64 / bytes as f64,
            wire[2] as f64 / bytes as f64
        );
    }
}

/// How many Accepts (Paxos phase 2, sent by the ledger owner) the node
/// logged sending so far.
fn accepts_sent(node: &Node) -> usize {
    let log = node.log();
    log.matches("seq_accept").count() - log.matches("seq_accepted").count()
}

/// A node on loopback joining `join`, with Kademlia off: it connects only
/// to the addresses it joins (here relays), never to the addresses its
/// peers announce, so that the relays see every byte between the nodes.
fn relayed(join: &[String], network_key: Option<&Path>) -> Node {
    let ports = (free_port(), free_port(), free_port());
    let mut node = Node::init_at("127.0.0.1", ports, join, network_key, None, false);
    node.edit_config(|text| {
        if text.contains("kademlia = true") {
            text.replacen("kademlia = true", "kademlia = false", 1)
        } else {
            text.replacen("[p2p]\n", "[p2p]\nkademlia = false\n", 1)
        }
    });
    node.start_again();
    node
}

/// `n` messages of the SpamAssassin corpus, evenly spread over it, one file
/// each in a temporary folder; `None` when the corpus is not available.
fn corpus_sample(n: usize) -> Option<tempfile::TempDir> {
    let all = corpus::load(&corpus::corpus_dir(None)?);
    if all.is_empty() {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let step = (all.len() / n.max(1)).max(1);
    for (i, m) in all.iter().step_by(step).take(n).enumerate() {
        std::fs::write(dir.path().join(format!("{i:06}.eml")), m).ok()?;
    }
    Some(dir)
}
