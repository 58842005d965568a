//! `SledStore` against the `Store` contract: every method, reopening,
//! refusing what is not an Aerogramme store, and group commit on sled.

use aerogramme::store::{set_schema_version, Committer, OpenError, SledStore, SCHEMA_VERSION};
use aerogramme_proto::hlc::Timestamp;
use aerogramme_proto::ids::{BlobId, LogId, MailboxId, OpId, ReplicaId, UserId};
use aerogramme_proto::oplog::{BlobChunk, Op, CHUNK_BYTES};
use aerogramme_proto::store::Store;
use std::sync::{Arc, Barrier};
use std::time::Instant;

const ALICE: UserId = UserId([0xa1; 16]);
const BOB: UserId = UserId([0xb0; 16]);
const MB: LogId = LogId::Mailbox(MailboxId([4; 16]));

fn op(user: UserId, log: LogId, origin: u64, seq: u64) -> Op {
    Op {
        user,
        log,
        id: OpId {
            origin: ReplicaId(origin),
            seq,
        },
        hlc: Timestamp(origin.wrapping_mul(1000).wrapping_add(seq)),
        uids: (seq % 3) as u32,
        payload: vec![seq as u8; (seq as usize * 7) % 50].into(),
    }
}

fn chunk(user: UserId, blob: u8, index: u32, len: usize) -> BlobChunk {
    BlobChunk {
        user,
        blob: BlobId([blob; 16]),
        index,
        bytes: (0..len).map(|i| (i as u32 ^ index) as u8).collect(),
    }
}

/// Writes one of everything through `&mut dyn Store`.
fn fill(s: &mut dyn Store) {
    // Out of order on purpose; the store sorts by (origin, seq).
    for (origin, seq) in [(2, 1), (1, 2), (1, 1), (u64::MAX, 3), (1, 10)] {
        s.put_op(&op(ALICE, MB, origin, seq)).unwrap();
    }
    s.put_op(&op(ALICE, LogId::Blobs, 1, 1)).unwrap();
    s.put_op(&op(ALICE, LogId::Mailboxes, 1, 1)).unwrap();
    s.put_op(&op(BOB, LogId::Blobs, 7, 1)).unwrap();
    s.put_chunk(&chunk(ALICE, 9, 0, 100)).unwrap();
    s.put_chunk(&chunk(ALICE, 9, 1, 0)).unwrap();
    s.put_checkpoint(&ALICE, &MB, 5, b"five").unwrap();
    s.put_checkpoint(&ALICE, &MB, 3, b"three").unwrap();
    s.put_checkpoint(&ALICE, &MB, 5, b"five again").unwrap();
    s.put_meta(b"hw/x", b"1").unwrap();
    s.put_meta(b"hw/y", b"2").unwrap();
    s.put_meta(b"other", b"3").unwrap();
    s.put_account(&UserId([0xcc; 16]), 2, b"acct").unwrap();
}

fn check(s: &dyn Store) {
    let ids: Vec<_> = s
        .ops(&ALICE, &MB)
        .unwrap()
        .iter()
        .map(|o| (o.id.origin.0, o.id.seq))
        .collect();
    assert_eq!(ids, vec![(1, 1), (1, 2), (1, 10), (2, 1), (u64::MAX, 3)]);
    assert_eq!(s.ops(&ALICE, &MB).unwrap()[1], op(ALICE, MB, 1, 2));
    assert_eq!(s.ops(&BOB, &MB).unwrap(), vec![]);
    assert_eq!(
        s.logs(&ALICE).unwrap(),
        vec![LogId::Mailboxes, LogId::Blobs, MB]
    );
    assert_eq!(s.logs(&BOB).unwrap(), vec![LogId::Blobs]);
    assert_eq!(s.logs(&UserId([0; 16])).unwrap(), vec![]);
    assert_eq!(
        s.get_chunk(&ALICE, &BlobId([9; 16]), 0).unwrap(),
        Some(chunk(ALICE, 9, 0, 100))
    );
    assert_eq!(
        s.get_chunk(&ALICE, &BlobId([9; 16]), 1).unwrap(),
        Some(chunk(ALICE, 9, 1, 0))
    );
    assert_eq!(s.get_chunk(&ALICE, &BlobId([9; 16]), 2).unwrap(), None);
    assert_eq!(s.get_chunk(&BOB, &BlobId([9; 16]), 0).unwrap(), None);
    assert!(s.has_chunk(&ALICE, &BlobId([9; 16]), 1).unwrap());
    assert!(!s.has_chunk(&ALICE, &BlobId([8; 16]), 0).unwrap());
    assert_eq!(
        s.latest_checkpoint(&ALICE, &MB).unwrap(),
        Some((5, b"five again".to_vec()))
    );
    assert_eq!(s.latest_checkpoint(&ALICE, &LogId::Blobs).unwrap(), None);
    assert_eq!(s.get_meta(b"hw/x").unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.get_meta(b"hw").unwrap(), None);
    assert_eq!(
        s.scan_meta(b"hw/").unwrap(),
        vec![
            (b"hw/x".to_vec(), b"1".to_vec()),
            (b"hw/y".to_vec(), b"2".to_vec())
        ]
    );
    assert_eq!(
        s.get_account(&UserId([0xcc; 16])).unwrap(),
        Some((2, b"acct".to_vec()))
    );
    assert_eq!(s.get_account(&ALICE).unwrap(), None);
    assert_eq!(s.users().unwrap(), vec![ALICE, BOB, UserId([0xcc; 16])]);
}

#[test]
fn every_method_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let mut s = SledStore::open(&path).unwrap();
        fill(&mut s);
        check(&s);
        Store::flush(&mut s).unwrap();
        // Overwrites replace.
        s.put_account(&UserId([0xcc; 16]), 3, b"acct3").unwrap();
        s.flush().unwrap();
    }
    let s = SledStore::open(&path).unwrap();
    assert_eq!(
        s.get_account(&UserId([0xcc; 16])).unwrap(),
        Some((3, b"acct3".to_vec()))
    );
    s.put_account(&UserId([0xcc; 16]), 2, b"acct").unwrap();
    check(&s);
    assert_eq!(s.purge_user(&ALICE, false).unwrap(), 10);
    assert_eq!(s.logs(&ALICE).unwrap(), vec![]);
    assert_eq!(s.users().unwrap(), vec![BOB, UserId([0xcc; 16])]);
}

#[test]
fn same_results_as_mem_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut sled = SledStore::open(dir.path().join("db")).unwrap();
    let mut mem = aerogramme_proto::store::MemStore::new();
    fill(&mut sled);
    fill(&mut mem);
    check(&mem);
    for user in [ALICE, BOB] {
        assert_eq!(Store::logs(&sled, &user).unwrap(), mem.logs(&user).unwrap());
        for log in mem.logs(&user).unwrap() {
            assert_eq!(
                Store::ops(&sled, &user, &log).unwrap(),
                mem.ops(&user, &log).unwrap()
            );
        }
    }
    assert_eq!(Store::users(&sled).unwrap(), mem.users().unwrap());
}

#[test]
fn a_large_message_is_many_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path().join("db")).unwrap();
    let total: usize = 12 * 1024 * 1024 + 5;
    let n = total.div_ceil(CHUNK_BYTES);
    for i in 0..n {
        let len = CHUNK_BYTES.min(total - i * CHUNK_BYTES);
        s.put_chunk(&chunk(ALICE, 1, i as u32, len)).unwrap();
    }
    s.flush().unwrap();
    drop(s);
    let s = SledStore::open(dir.path().join("db")).unwrap();
    let mut read = 0;
    for i in 0..n {
        let c = s
            .get_chunk(&ALICE, &BlobId([1; 16]), i as u32)
            .unwrap()
            .unwrap();
        assert_eq!(c, chunk(ALICE, 1, i as u32, c.bytes.len()));
        read += c.bytes.len();
    }
    assert_eq!(read, total);
}

#[test]
fn another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(SledStore::open(&path).unwrap());
    set_schema_version(&path, SCHEMA_VERSION + 1).unwrap();
    match SledStore::open(&path) {
        Err(OpenError::SchemaVersion {
            found, expected, ..
        }) => {
            assert_eq!((found, expected), (SCHEMA_VERSION + 1, SCHEMA_VERSION))
        }
        other => panic!("{other:?}"),
    }
    let msg = SledStore::open(&path).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{msg}"
    );
}

#[test]
fn a_version_1_store_is_read_and_marked_current() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = SledStore::open(&path).unwrap();
        s.put_meta(b"k", b"v").unwrap();
        s.flush().unwrap();
    }
    set_schema_version(&path, 1).unwrap();
    {
        let s = SledStore::open(&path).unwrap();
        assert_eq!(s.get_meta(b"k").unwrap(), Some(b"v".to_vec()));
    }
    // And again, now as the current version.
    let s = SledStore::open(&path).unwrap();
    assert_eq!(s.get_meta(b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn garbage_where_the_store_should_be_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    // A file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"garbage").unwrap();
    assert!(matches!(
        SledStore::open(&file),
        Err(OpenError::NotADirectory { .. })
    ));
    // A directory of someone else's files.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"hello").unwrap();
    assert!(matches!(
        SledStore::open(&foreign),
        Err(OpenError::Foreign { .. })
    ));
    // A sled database of another application.
    let other = dir.path().join("other");
    {
        let db = sled::open(&other).unwrap();
        db.insert(b"k", b"v").unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        SledStore::open(&other),
        Err(OpenError::Foreign { .. })
    ));
    // sled's own files full of garbage, in several shapes: a typed error,
    // never a panic, never an empty store taken for ours.
    for (i, (conf, db)) in [
        (&b"garbage"[..], &b"garbage"[..]),
        (&[0xffu8; 4096][..], &[0u8; 0][..]),
        (&[0u8; 64][..], &[0x5au8; 100_000][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let p = dir.path().join(format!("garbled{i}"));
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("conf"), conf).unwrap();
        std::fs::write(p.join("db"), db).unwrap();
        match SledStore::open(&p) {
            Err(OpenError::Corrupt { detail, .. }) => assert!(!detail.is_empty()),
            other => panic!("garbled{i}: {other:?}"),
        }
    }
    // Garbage in the data file of a real store.
    let real = dir.path().join("real");
    {
        let mut s = SledStore::open(&real).unwrap();
        fill(&mut s);
        s.flush().unwrap();
    }
    let len = std::fs::metadata(real.join("db")).unwrap().len() as usize;
    std::fs::write(real.join("db"), vec![0xa5u8; len]).unwrap();
    let e = SledStore::open(&real).unwrap_err();
    assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("corrupt store"), "{e}");
    // An empty directory is a new store; a leftover of an interrupted
    // creation is cleared.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::create_dir(dir.path().join("empty.creating")).unwrap();
    std::fs::write(dir.path().join("empty.creating/conf"), b"half").unwrap();
    assert_eq!(SledStore::open(&empty).unwrap().users().unwrap(), vec![]);
    assert!(!dir.path().join("empty.creating").exists());
}

#[test]
fn a_second_open_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let s = SledStore::open(&path).unwrap();
    assert!(matches!(
        SledStore::open(&path),
        Err(OpenError::Locked { .. })
    ));
    drop(s);
    SledStore::open(&path).unwrap();
}

#[test]
fn group_commit_shares_flushes_between_ten_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("db")).unwrap();
    let committer = Committer::new(store);
    let writers = 10;
    let per_writer = 30;
    let barrier = Arc::new(Barrier::new(writers));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers as u64)
        .map(|w| {
            let (c, barrier) = (committer.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for seq in 1..=per_writer {
                    c.store().put_op(&op(ALICE, MB, w, seq)).unwrap();
                    c.wait_durable().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    let stats = committer.stats();
    let writes = writers as u64 * per_writer;
    eprintln!(
        "group commit: {writes} acknowledged writes, {} flushes, {:?}",
        stats.flushes, elapsed
    );
    assert_eq!(stats.waits, writes);
    assert!(stats.flushes < writes, "no sharing: {stats:?}");
    assert_eq!(
        committer.store().ops(&ALICE, &MB).unwrap().len() as u64,
        writes
    );
}
