//! Benchmarks of the protocol core (run with `cargo bench -p aerogramme-proto`).
//!
//! - `crdt apply`: flag changes applied to a 100k-message mailbox's CRDT;
//! - `decrypt op`: opening one encrypted op payload;
//! - `local STORE`: the whole local write path of a one-node replica (build
//!   the op, encrypt, log, sequence and commit, show, persist records), for
//!   one message at a time and for `STORE 1:*` over the whole mailbox;
//! - `materialize`: unlock of a 100k-message mailbox from its checkpoint plus
//!   10k later ops;
//! - `memory`: heap bytes per message of the materialized mailbox view.

use aerogramme_proto::crypto::{MasterKey, Place, UserSecrets};
use aerogramme_proto::ids::{BlobId, EntryId, LogId, MailboxId, OpId, ReplicaId, UserId};
use aerogramme_proto::mailbox::{Flag, MailboxOp, MailboxState};
use aerogramme_proto::replica::{Config, FlagMode, NewMessage, Replica};
use aerogramme_proto::store::{MemStore, Store};
use mimalloc::MiMalloc;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Counts live heap bytes (for `memory`) over mimalloc, the node's allocator,
/// so that the timings see the node's allocation costs.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { MiMalloc.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const N: usize = 100_000;

fn main() {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    if want("crdt") {
        crdt_apply(&mut rng);
    }
    if want("decrypt") {
        decrypt_op(&mut rng);
    }
    // `bulk` alone: only what `STORE 1:*` needs (for a profiler).
    let bulk_only = filter.as_deref() == Some("bulk");
    if want("replica") || bulk_only {
        replica(&mut rng, bulk_only);
    }
}

fn report(name: &str, n: usize, secs: f64) {
    println!(
        "{name:<40} {n:>9} ops in {secs:>7.3} s = {:>10.0} ops/s",
        n as f64 / secs
    );
}

fn crdt_apply(rng: &mut ChaCha20Rng) {
    let mut st = MailboxState::new();
    let origin = ReplicaId(1);
    let mut seq = 0;
    let mut entries = Vec::with_capacity(N);
    for _ in 0..N {
        seq += 1;
        let entry = EntryId::random(rng);
        entries.push(entry);
        let add = MailboxOp::Add {
            entry,
            blob: BlobId::random(rng),
            flags: vec![],
            internal_date_ms: 0,
            size: 1000,
        };
        st.apply(OpId { origin, seq }, &add);
    }
    let ops: Vec<MailboxOp> = (0..2 * N)
        .map(|i| {
            let e = entries[rng.next_u32() as usize % N];
            if i % 2 == 0 {
                st.add_flags(e, &[Flag::Seen])
            } else {
                st.remove_flags(e, &[Flag::Flagged])
            }
        })
        .collect();
    let t = Instant::now();
    for op in &ops {
        seq += 1;
        st.apply(OpId { origin, seq }, op);
    }
    report(
        "crdt apply (flags, 100k-message mailbox)",
        ops.len(),
        t.elapsed().as_secs_f64(),
    );
}

fn decrypt_op(rng: &mut ChaCha20Rng) {
    let key = MasterKey::generate(rng);
    let user = UserId::random(rng);
    let log = LogId::Mailbox(MailboxId::random(rng));
    let payload = postcard::to_allocvec(&MailboxOp::Flags {
        entry: EntryId::random(rng),
        add: vec![Flag::Seen],
        remove: vec![],
    })
    .unwrap();
    let n = 100_000;
    let cts: Vec<(Place, Vec<u8>)> = (1..=n)
        .map(|seq| {
            let place = Place::Op {
                user,
                log,
                op: OpId {
                    origin: ReplicaId(1),
                    seq,
                },
            };
            let ct = key.encrypt(rng, &place, &payload).unwrap();
            (place, ct)
        })
        .collect();
    let t = Instant::now();
    for (place, ct) in &cts {
        std::hint::black_box(key.decrypt(place, ct).unwrap());
    }
    report(
        "decrypt op (flag change payload)",
        n as usize,
        t.elapsed().as_secs_f64(),
    );
}

fn replica(rng: &mut ChaCha20Rng, bulk_only: bool) {
    let me = ReplicaId(1);
    let mut cfg = Config::new(me, vec![me]);
    cfg.checkpoint_every = u64::MAX;
    let mut r = Replica::new(cfg.clone(), MemStore::new());
    let user = UserId::random(rng);
    let seed = rng.next_u64();
    let inbox = r
        .create_account(
            0,
            rng,
            user,
            b"record".to_vec(),
            UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(seed)),
        )
        .unwrap();
    let body = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\n\r\nbody of the message\r\n";
    let msg = || NewMessage {
        raw: body,
        flags: vec![],
        internal_date_ms: 0,
    };
    // The first message, untimed: ticks elect this one-node community's
    // owner of INBOX, which then sequences it.
    r.append(0, rng, user, inbox, msg()).unwrap();
    let mut now = 0;
    while r.mailbox(&user, &inbox).unwrap().exists() == 0 {
        assert!(now < 60_000, "no owner elected");
        now += 5;
        r.tick(now);
        r.drain();
    }
    let t = Instant::now();
    for k in 1..N {
        r.append(now + k as u64, rng, user, inbox, msg()).unwrap();
        r.drain();
    }
    r.store_mut().flush().unwrap();
    report(
        "local APPEND (one-node replica)",
        N,
        t.elapsed().as_secs_f64(),
    );
    assert_eq!(r.mailbox(&user, &inbox).unwrap().exists(), N);

    // Memory of the materialized view.
    let before = LIVE.load(Ordering::Relaxed);
    let copy = r.mailbox(&user, &inbox).unwrap().clone();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "{:<40} {:>9} bytes per message (whole view, incl. ids, date, size)",
        "memory (materialized view)",
        bytes / N
    );
    drop(copy);

    let uids: Vec<u32> = r.mailbox(&user, &inbox).unwrap().uids().collect();
    if !bulk_only {
        let t = Instant::now();
        let flags = 100_000;
        for i in 0..flags {
            let uid = uids[rng.next_u32() as usize % uids.len()];
            let mode = if i % 2 == 0 {
                FlagMode::Add
            } else {
                FlagMode::Remove
            };
            r.store_flags(
                N as u64 + i as u64,
                rng,
                user,
                inbox,
                &[uid],
                mode,
                &[Flag::Seen],
            )
            .unwrap();
            r.drain();
        }
        r.store_mut().flush().unwrap();
        report(
            "local STORE (full write path)",
            flags,
            t.elapsed().as_secs_f64(),
        );
    }

    // STORE 1:* over the whole mailbox, as an IMAP client's "mark all
    // read": the median of five +FLAGS, each undone by a -FLAGS (fifteen
    // of each for `bulk` alone, for a profiler's samples).
    let runs = if bulk_only { 15 } else { 5 };
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..runs {
        for (k, mode) in [FlagMode::Add, FlagMode::Remove].into_iter().enumerate() {
            let t = Instant::now();
            r.store_flags(
                2 * N as u64 + i,
                rng,
                user,
                inbox,
                &uids,
                mode,
                &[Flag::Seen],
            )
            .unwrap();
            r.drain();
            times[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    for (k, name) in ["+FLAGS", "-FLAGS"].into_iter().enumerate() {
        times[k].sort_by(f64::total_cmp);
        println!(
            "{:<40} {:>9.1} ms (median of {runs}, 100k messages)",
            format!("local STORE 1:* {name} (\\Seen)"),
            times[k][runs as usize / 2]
        );
    }

    if bulk_only {
        return;
    }
    // Checkpoint, 10k more ops, restart, unlock.
    r.checkpoint_all(rng).unwrap();
    for i in 0..10_000 {
        let uid = uids[i % uids.len()];
        r.store_flags(
            1_000_000 + i as u64,
            rng,
            user,
            inbox,
            &[uid],
            FlagMode::Add,
            &[Flag::Flagged],
        )
        .unwrap();
        r.drain();
    }
    r.store_mut().flush().unwrap();
    let store = r.into_store();
    let t = Instant::now();
    let mut r = Replica::restore(cfg, store).unwrap();
    let restored = t.elapsed().as_secs_f64();
    let t = Instant::now();
    r.unlock(
        2_000_000,
        user,
        UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(seed)),
    )
    .unwrap();
    let unlocked = t.elapsed().as_secs_f64();
    assert_eq!(r.mailbox(&user, &inbox).unwrap().exists(), N);
    println!(
        "{:<40} restore {restored:.3} s + unlock {unlocked:.3} s (100k messages from a checkpoint + 10k ops)",
        "materialize"
    );
    let _ = r.store().users();
}
