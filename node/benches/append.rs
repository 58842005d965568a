//! Durable APPEND throughput through the node's core (encryption, op log,
//! sequencing, view, one sled flush per batch before acknowledging), with
//! 10 concurrent writers of 10 kB messages, beside raw sled inserts of the
//! same bytes with one flush per batch. Run: `cargo bench -p aerogramme --bench append`.

use aerogramme::core::{Core, CoreState};
use aerogramme::store::SledStore;
use aerogramme_proto::crypto::UserSecrets;
use aerogramme_proto::ids::{ReplicaId, UserId};
use aerogramme_proto::replica::{NewMessage, Outcome};
use rand_chacha::rand_core::{OsRng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;
use std::time::Instant;

const WRITERS: usize = 10;
const PER_WRITER: usize = 300;
const SIZE: usize = 10 * 1024;

fn main() {
    let body: Vec<u8> = {
        let mut b = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: bench\r\n\r\n".to_vec();
        while b.len() < SIZE {
            b.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n");
        }
        b.truncate(SIZE);
        b
    };
    let n = WRITERS * PER_WRITER;

    // Through the core.
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("db")).unwrap();
    let me = ReplicaId(1);
    let core = Core::start(me, store).unwrap();
    let handle = core.handle();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let user = UserId::random(&mut OsRng);
    let inbox = rt
        .block_on(handle.call(move |st: &mut CoreState| {
            let secrets = UserSecrets::generate(&mut ChaCha20Rng::from_rng(OsRng).unwrap());
            st.replica
                .create_account(
                    CoreState::now(),
                    &mut st.rng,
                    user,
                    b"bench".to_vec(),
                    secrets,
                )
                .unwrap()
        }))
        .unwrap();
    // Let the one-node community elect its owner of INBOX.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let body = Arc::new(body);
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let (h, body) = (handle.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..PER_WRITER {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let b = body.clone();
                    h.run(move |st| {
                        let msg = NewMessage {
                            raw: &b,
                            flags: vec![],
                            internal_date_ms: 0,
                        };
                        let ticket = st
                            .replica
                            .append(CoreState::now(), &mut st.rng, user, inbox, msg)
                            .unwrap();
                        st.on_done(ticket, move |_, r| {
                            let _ = tx.send(r);
                        });
                    })
                    .unwrap();
                    match rx.await.unwrap() {
                        Ok(Outcome::Appended { .. }) => {}
                        other => panic!("append failed: {other:?}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let core_secs = t.elapsed().as_secs_f64();
    core.stop();

    // Raw sled: the same bytes, one flush per batch of WRITERS.
    let dir2 = tempfile::tempdir().unwrap();
    let db = sled::open(dir2.path()).unwrap();
    let t = Instant::now();
    for batch in 0..PER_WRITER {
        for w in 0..WRITERS {
            db.insert(
                ((batch * WRITERS + w) as u64).to_be_bytes(),
                body.as_slice(),
            )
            .unwrap();
        }
        db.flush().unwrap();
    }
    let raw_secs = t.elapsed().as_secs_f64();

    let core_rate = n as f64 / core_secs;
    let raw_rate = n as f64 / raw_secs;
    println!("durable APPEND via the core, {WRITERS} writers, 10 kB: {n} in {core_secs:.2} s = {core_rate:.0} msg/s");
    println!("raw sled insert + flush per batch of {WRITERS}:      {n} in {raw_secs:.2} s = {raw_rate:.0} msg/s");
    println!("ratio core / raw sled: {:.2}", core_rate / raw_rate);
}
