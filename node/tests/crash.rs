//! Crash test: a child process (this test binary, re-executed with an
//! environment variable) writes through the group committer and prints each
//! item only once it is durable; the parent kills it with SIGKILL at several
//! moments and checks, after reopening the store, that every acknowledged
//! item is there.

use aerogramme::store::{Committer, SledStore};
use aerogramme_proto::hlc::Timestamp;
use aerogramme_proto::ids::{BlobId, LogId, MailboxId, OpId, ReplicaId, UserId};
use aerogramme_proto::oplog::{BlobChunk, Op};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "AEROGRAMME_CRASH_CHILD_DIR";
const CHILD_RUN: &str = "AEROGRAMME_CRASH_CHILD_RUN";
const WRITERS: u64 = 4;
const LOG: LogId = LogId::Mailbox(MailboxId([7; 16]));

fn user(run: u64) -> UserId {
    UserId([run as u8 + 1; 16])
}

fn item(run: u64, writer: u64, seq: u64) -> Op {
    let len = ((run * 31 + writer * 17 + seq * 13) % 3000) as usize;
    Op {
        user: user(run),
        log: LOG,
        id: OpId {
            origin: ReplicaId(writer),
            seq,
        },
        hlc: Timestamp(seq),
        uids: 1,
        payload: (0..len).map(|i| (i as u64 ^ seq ^ writer) as u8).collect(),
    }
}

/// Every fourth item also stores a 64 KiB blob chunk.
fn item_chunk(run: u64, writer: u64, seq: u64) -> Option<BlobChunk> {
    seq.is_multiple_of(4).then(|| BlobChunk {
        user: user(run),
        blob: BlobId([writer as u8; 16]),
        index: seq as u32,
        bytes: vec![(seq ^ writer) as u8; 64 * 1024].into(),
    })
}

/// The child: runs only when re-executed by the parent.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let run: u64 = std::env::var(CHILD_RUN).unwrap().parse().unwrap();
    let committer = Committer::new(SledStore::open(dir).unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let c = committer.clone();
            std::thread::spawn(move || {
                for seq in 1.. {
                    if Instant::now() > deadline {
                        return; // the parent is gone
                    }
                    c.store().put_op(&item(run, w, seq)).unwrap();
                    if let Some(chunk) = item_chunk(run, w, seq) {
                        c.store().put_chunk(&chunk).unwrap();
                    }
                    c.wait_durable().unwrap();
                    // Acknowledge: one whole line per item, written at once.
                    let line = format!("ACK {w} {seq}\n");
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
}

/// Runs one child, kills it `delay` after its first acknowledgement, and
/// returns the acknowledged (writer, seq) pairs.
fn run_child(dir: &std::path::Path, run: u64, delay: Duration) -> Vec<(u64, u64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_RUN, run.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut acks = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A line cut by the kill was not acknowledged.
            let Some(text) = line.strip_suffix(b"\n") else {
                break;
            };
            let text = String::from_utf8_lossy(text);
            if let Some(rest) = text.strip_prefix("ACK ") {
                let mut parts = rest.split(' ').map(|p| p.parse::<u64>().unwrap());
                let ack = (parts.next().unwrap(), parts.next().unwrap());
                if acks.is_empty() {
                    let _ = tx.send(());
                }
                acks.push(ack);
            }
        }
        acks
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the child acknowledged nothing");
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(SledStore::open(&path).unwrap());
    let delays = [0u64, 7, 25, 60, 120];
    let mut total = 0;
    for (run, delay) in delays.into_iter().enumerate() {
        let run = run as u64;
        let acks = run_child(&path, run, Duration::from_millis(delay));
        assert!(!acks.is_empty());
        // Reopens cleanly, with every acknowledged item.
        let store = SledStore::open(&path).unwrap();
        for &(w, seq) in &acks {
            let ops = store.ops(&user(run), &LOG).unwrap();
            let expected = item(run, w, seq);
            assert!(
                ops.contains(&expected),
                "run {run}: lost acknowledged op {w}/{seq}"
            );
            if let Some(chunk) = item_chunk(run, w, seq) {
                let got = store
                    .get_chunk(&chunk.user, &chunk.blob, chunk.index)
                    .unwrap();
                assert_eq!(
                    got.as_ref(),
                    Some(&chunk),
                    "run {run}: lost chunk {w}/{seq}"
                );
            }
        }
        // Earlier runs are intact too.
        for earlier in 0..run {
            assert!(!store.ops(&user(earlier), &LOG).unwrap().is_empty());
        }
        eprintln!(
            "run {run}: killed {delay} ms after the first ack, {} acks, all present",
            acks.len()
        );
        total += acks.len();
    }
    assert!(total >= delays.len());
}
