//! Replicas on a small in-memory network (FIFO links, cuttable): the
//! concurrency table end to end, keys, restarts. The simulator (`sim/`)
//! runs the same replicas at scale under every fault.

use super::*;
use crate::crypto::UserSecrets;
use crate::mailbox::Flag;
use crate::store::MemStore;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

struct World {
    nodes: Vec<Option<Replica<MemStore>>>,
    ids: Vec<ReplicaId>,
    queue: VecDeque<(ReplicaId, ReplicaId, PeerMsg)>,
    cut: HashSet<(ReplicaId, ReplicaId)>,
    now: u64,
    rng: ChaCha20Rng,
    done: Vec<(ReplicaId, Ticket, Outcome)>,
}

fn params() -> SeqParams {
    SeqParams {
        heartbeat_ms: 20,
        idle_heartbeat_ms: 75,
        election_timeout_ms: 100,
        forward_timeout_ms: 200,
        batch_ms: 2,
        ..SeqParams::default()
    }
}

impl World {
    fn new(n: u64) -> World {
        let ids: Vec<ReplicaId> = (1..=n).map(ReplicaId).collect();
        let nodes = ids
            .iter()
            .map(|id| {
                let mut cfg = Config::new(*id, ids.clone());
                cfg.seq = params();
                cfg.anti_entropy_ms = 100;
                // Small batches, so that STOREs over a few UIDs split.
                cfg.flag_batch = 3;
                Some(Replica::new(cfg, MemStore::new()))
            })
            .collect();
        World {
            nodes,
            ids,
            queue: VecDeque::new(),
            cut: HashSet::new(),
            now: 1_000_000,
            rng: ChaCha20Rng::seed_from_u64(5),
            done: Vec::new(),
        }
    }

    fn node(&mut self, i: usize) -> &mut Replica<MemStore> {
        self.nodes[i].as_mut().expect("node is up")
    }

    fn flush(&mut self, i: usize) {
        let Some(r) = self.nodes[i].as_mut() else {
            return;
        };
        r.store_mut().flush().expect("flush");
        let me = r.id();
        for o in r.drain() {
            match o {
                Output::Send { to, msg } => self.queue.push_back((me, to, msg)),
                Output::Broadcast { msg, .. } => {
                    for to in &self.ids {
                        if *to != me {
                            self.queue.push_back((me, *to, msg.clone()));
                        }
                    }
                }
                Output::Done { ticket, outcome } => self.done.push((me, ticket, outcome)),
                Output::Event { .. }
                | Output::MailboxesChanged { .. }
                | Output::AccountChanged { .. } => {}
            }
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += 1;
            let n = self.queue.len();
            for _ in 0..n {
                let Some((from, to, msg)) = self.queue.pop_front() else {
                    break;
                };
                let t = (to.0 - 1) as usize;
                if self.cut.contains(&(from, to)) || self.nodes[t].is_none() {
                    continue;
                }
                // Every message crosses the wire encoding.
                let msg = PeerMsg::decode(&msg.encode()).expect("own messages decode");
                let now = self.now;
                self.node(t).handle(now, from, msg);
                self.flush(t);
            }
            if self.now.is_multiple_of(5) {
                for i in 0..self.nodes.len() {
                    let now = self.now;
                    if let Some(r) = self.nodes[i].as_mut() {
                        r.tick(now);
                    }
                    self.flush(i);
                }
            }
        }
    }

    fn partition(&mut self, side: &[usize]) {
        for a in 0..self.ids.len() {
            for b in 0..self.ids.len() {
                if side.contains(&a) != side.contains(&b) {
                    self.cut.insert((self.ids[a], self.ids[b]));
                }
            }
        }
    }

    /// One user, unlocked everywhere (its secrets reach the other nodes the
    /// way a login does: the node unwraps the replicated account record).
    fn user(&mut self) -> (UserId, MailboxId) {
        let user = UserId::random(&mut self.rng);
        let seed = 77;
        let secrets = UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(seed));
        let now = self.now;
        let mut rng = self.rng.clone();
        let inbox = self
            .node(0)
            .create_account(now, &mut rng, user, b"record".to_vec(), secrets)
            .unwrap();
        self.flush(0);
        for i in 1..self.nodes.len() {
            let s = UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(seed));
            self.node(i).unlock(now, user, s).unwrap();
            self.flush(i);
        }
        self.run(300);
        (user, inbox)
    }

    fn append(&mut self, i: usize, user: UserId, mb: MailboxId, body: &str) -> Ticket {
        let now = self.now;
        let mut rng = ChaCha20Rng::seed_from_u64(self.rng.next_u64() ^ i as u64);
        let raw = format!("Subject: {body}\r\n\r\n{body}\r\n");
        let t = self
            .node(i)
            .append(
                now,
                &mut rng,
                user,
                mb,
                NewMessage {
                    raw: raw.as_bytes(),
                    flags: vec![],
                    internal_date_ms: 0,
                },
            )
            .unwrap();
        self.flush(i);
        t
    }

    fn uid_maps(&self, user: UserId, mb: MailboxId) -> Vec<BTreeMap<u32, EntryId>> {
        self.nodes
            .iter()
            .flatten()
            .map(|r| {
                r.mailbox(&user, &mb)
                    .map(|v| v.uid_map())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn assert_converged(&self, user: UserId, mb: MailboxId) {
        let maps = self.uid_maps(user, mb);
        for m in &maps[1..] {
            assert_eq!(m, &maps[0], "replicas show different UID maps");
        }
        let views: Vec<_> = self
            .nodes
            .iter()
            .flatten()
            .map(|r| r.mailbox(&user, &mb).unwrap())
            .collect();
        for v in &views[1..] {
            assert_eq!(v.uidvalidity(), views[0].uidvalidity());
            assert_eq!(
                v.highest_modseq(),
                views[0].highest_modseq(),
                "MODSEQs differ"
            );
            for uid in views[0].uids() {
                assert_eq!(
                    v.message(uid).map(|m| (m.view, m.modseq)),
                    views[0].message(uid).map(|m| (m.view, m.modseq))
                );
            }
        }
    }

    fn appended_uid(&self, node: usize, t: Ticket) -> u32 {
        let id = self.ids[node];
        self.done
            .iter()
            .find_map(|(r, tt, o)| match o {
                Outcome::Appended { uid, .. } if *r == id && *tt == t => Some(*uid),
                _ => None,
            })
            .expect("append acknowledged")
    }
}

#[test]
fn append_is_acknowledged_with_a_uid_and_replicates() {
    let mut w = World::new(3);
    let (user, inbox) = w.user();
    let mut last = 0;
    for k in 0..10 {
        let t = w.append(k % 3, user, inbox, &format!("m{k}"));
        w.run(100);
        let uid = w.appended_uid(k % 3, t);
        assert!(uid > last, "UIDs ascend across writers");
        last = uid;
    }
    w.run(500);
    w.assert_converged(user, inbox);
    let v = w.nodes[2].as_ref().unwrap().mailbox(&user, &inbox).unwrap();
    assert_eq!(v.exists(), 10);
    let m = v.message(last).unwrap();
    let body = w.nodes[2]
        .as_ref()
        .unwrap()
        .read_blob(&user, &m.view.blob)
        .unwrap();
    assert_eq!(body, b"Subject: m9\r\n\r\nm9\r\n");
}

/// Mail text is stored (and replicated) compressed, and reads back whole on
/// every replica; a short message is stored as it is.
#[test]
fn compressible_mail_is_stored_compressed_and_reads_back_whole() {
    let mut w = World::new(3);
    let (user, inbox) = w.user();
    let text = "lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(200);
    let t = w.append(0, user, inbox, &text);
    let short = w.append(0, user, inbox, "hi");
    w.run(500);
    let uid = w.appended_uid(0, t);
    let short = w.appended_uid(0, short);
    for n in 0..3 {
        let r = w.nodes[n].as_ref().unwrap();
        let v = r.mailbox(&user, &inbox).unwrap();
        let blob = v.message(uid).unwrap().view.blob;
        let info = r.users[&user].logs.blobs()[&blob];
        assert_eq!(info.codec, Codec::Lz4);
        assert!(info.len < text.len() as u64 / 4, "{info:?}");
        let body = r.read_blob(&user, &blob).unwrap();
        assert_eq!(
            body,
            format!("Subject: {text}\r\n\r\n{text}\r\n").as_bytes()
        );
        let blob = v.message(short).unwrap().view.blob;
        assert_eq!(r.users[&user].logs.blobs()[&blob].codec, Codec::Raw);
        assert_eq!(
            r.read_blob(&user, &blob).unwrap(),
            b"Subject: hi\r\n\r\nhi\r\n"
        );
    }
}

/// A user whose INBOX holds seven messages appended on node 0, and their UIDs.
fn seven_messages(w: &mut World) -> (UserId, MailboxId, Vec<u32>) {
    let (user, inbox) = w.user();
    let tickets: Vec<Ticket> = (0..7)
        .map(|i| w.append(0, user, inbox, &format!("m{i}")))
        .collect();
    w.run(300);
    let uids = tickets.iter().map(|t| w.appended_uid(0, *t)).collect();
    (user, inbox, uids)
}

/// A STORE over several UIDs is one op per `flag_batch` entries: every entry
/// of a batch gets that op's MODSEQ; a concurrent -FLAGS of one entry on
/// another replica loses to the batch's add there (add wins); duplicated
/// delivery of every message changes nothing; replicas converge.
#[test]
fn store_over_many_uids_is_a_few_ops_sharing_modseqs() {
    let mut w = World::new(3);
    let (user, inbox, uids) = seven_messages(&mut w);
    let now = w.now;
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    w.node(0)
        .store_flags(
            now,
            &mut rng,
            user,
            inbox,
            &[uids[0]],
            FlagMode::Add,
            &[Flag::Seen],
        )
        .unwrap();
    w.flush(0);
    w.run(300);
    let before = w.nodes[0]
        .as_ref()
        .unwrap()
        .mailbox(&user, &inbox)
        .unwrap()
        .highest_modseq();
    let ops_before: usize = w.nodes[0]
        .as_ref()
        .unwrap()
        .mailbox(&user, &inbox)
        .unwrap()
        .shown_ops()
        .count();
    // Concurrently: node 0 STOREs +FLAGS (\Seen \Flagged) on all 7, node 1
    // -FLAGS (\Seen) on uids[0] (removing the tag both observed).
    w.partition(&[1]);
    let now = w.now;
    w.node(0)
        .store_flags(
            now,
            &mut rng,
            user,
            inbox,
            &uids,
            FlagMode::Add,
            &[Flag::Seen, Flag::Flagged],
        )
        .unwrap();
    w.flush(0);
    w.node(1)
        .store_flags(
            now,
            &mut rng,
            user,
            inbox,
            &[uids[0]],
            FlagMode::Remove,
            &[Flag::Seen],
        )
        .unwrap();
    w.flush(1);
    // Every message is delivered twice.
    let dup: Vec<_> = w.queue.iter().cloned().collect();
    w.queue.extend(dup);
    w.run(500);
    {
        let v = w.nodes[0].as_ref().unwrap().mailbox(&user, &inbox).unwrap();
        // 7 changes in batches of 3: 3 ops, 3 MODSEQs.
        assert_eq!(v.shown_ops().count(), ops_before + 3);
        let mut ms: Vec<u64> = uids.iter().map(|u| v.message(*u).unwrap().modseq).collect();
        assert!(ms.iter().all(|m| *m > before));
        ms.sort_unstable();
        ms.dedup();
        assert_eq!(ms.len(), 3, "{ms:?}");
        let (changed, vanished) = v.changed_since(
            before,
            w.nodes[0].as_ref().unwrap().spaces(&user, &inbox).unwrap(),
        );
        let mut all = uids.clone();
        all.sort_unstable();
        assert_eq!(changed, all);
        assert!(vanished.is_empty());
    }
    w.cut.clear();
    w.run(2_000);
    w.assert_converged(user, inbox);
    for n in 0..3 {
        let v = w.nodes[n].as_ref().unwrap().mailbox(&user, &inbox).unwrap();
        for u in &uids {
            assert_eq!(
                v.message(*u).unwrap().view.flags,
                vec![Flag::Seen, Flag::Flagged],
                "node {n} uid {u}"
            );
        }
        // Every flag op is shown at its final value: no entry lists kept.
        assert_eq!(v.kept_targets(), 0, "node {n}");
    }
}

/// `store_flags_with` tells each named UID once: each op's UIDs (ascending)
/// as the op is written, with the view showing that op's change, then
/// those no op changes.
#[test]
fn store_flags_with_tells_each_op_its_uids() {
    let mut w = World::new(1);
    let (user, inbox, uids) = seven_messages(&mut w);
    let now = w.now;
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    // Two of the seven get \Seen first: removing it changes only those.
    w.node(0)
        .store_flags(
            now,
            &mut rng,
            user,
            inbox,
            &uids[2..4],
            FlagMode::Add,
            &[Flag::Seen],
        )
        .unwrap();
    w.flush(0);
    w.run(300);
    let mut told: Vec<(Vec<u32>, Vec<Vec<Flag>>)> = Vec::new();
    w.node(0)
        .store_flags_with(
            now,
            &mut rng,
            user,
            inbox,
            &uids,
            FlagMode::Remove,
            &[Flag::Seen],
            |v, us| {
                told.push((
                    us.to_vec(),
                    us.iter()
                        .map(|u| v.message(*u).unwrap().view.flags.clone())
                        .collect(),
                ));
            },
        )
        .unwrap();
    // One op over the two (batches of 3), then the five unchanged.
    assert_eq!(told.len(), 2, "{told:?}");
    let mut changed = uids[2..4].to_vec();
    changed.sort_unstable();
    assert_eq!(told[0].0, changed);
    assert!(told[0].1.iter().all(|f| f.is_empty()));
    let mut rest: Vec<u32> = uids
        .iter()
        .filter(|u| !changed.contains(u))
        .copied()
        .collect();
    rest.sort_unstable();
    assert_eq!(told[1].0, rest);
    // Over all seven, adding: three ops of 3, 3 and 1 UIDs, ascending each.
    told.clear();
    w.node(0)
        .store_flags_with(
            now,
            &mut rng,
            user,
            inbox,
            &uids,
            FlagMode::Add,
            &[Flag::Flagged],
            |v, us| {
                assert!(us
                    .iter()
                    .all(|u| v.message(*u).unwrap().view.flags == [Flag::Flagged]));
                told.push((us.to_vec(), Vec::new()));
            },
        )
        .unwrap();
    assert_eq!(
        told.iter().map(|t| t.0.len()).collect::<Vec<_>>(),
        [3, 3, 1]
    );
    assert!(told.iter().all(|t| t.0.windows(2).all(|p| p[0] < p[1])));
    let mut all: Vec<u32> = told.iter().flat_map(|t| t.0.clone()).collect();
    all.sort_unstable();
    let mut want = uids.clone();
    want.sort_unstable();
    assert_eq!(all, want);
}

#[test]
fn add_flag_vs_remove_flag_add_wins_across_replicas() {
    let mut w = World::new(3);
    let (user, inbox) = w.user();
    let t = w.append(0, user, inbox, "x");
    w.run(200);
    let uid = w.appended_uid(0, t);
    let now = w.now;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    w.node(0)
        .store_flags(
            now,
            &mut rng,
            user,
            inbox,
            &[uid],
            FlagMode::Add,
            &[Flag::Seen],
        )
        .unwrap();
    w.flush(0);
    w.run(200);
    // Concurrently: node 0 removes \Seen, node 1 adds it again.
    w.partition(&[0]);
    let now = w.now;
    w.node(0)
        .store_flags(
            now,
            &mut rng,
            user,
            inbox,
            &[uid],
            FlagMode::Remove,
            &[Flag::Seen],
        )
        .unwrap();
    w.flush(0);
    w.node(1)
        .store_flags(
            now,
            &mut rng,
            user,
            inbox,
            &[uid],
            FlagMode::Add,
            &[Flag::Seen],
        )
        .unwrap();
    w.flush(1);
    w.run(500);
    w.cut.clear();
    w.run(2_000);
    w.assert_converged(user, inbox);
    let v = w.nodes[0].as_ref().unwrap().mailbox(&user, &inbox).unwrap();
    assert_eq!(v.message(uid).unwrap().view.flags, vec![Flag::Seen]);
}

#[test]
fn expunge_vs_flag_change_expunge_wins_and_copy_survives() {
    let mut w = World::new(3);
    let (user, inbox) = w.user();
    let now = w.now;
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let archive = w
        .node(0)
        .create_mailbox(now, &mut rng, user, "Archive", None)
        .unwrap();
    w.flush(0);
    let t = w.append(0, user, inbox, "x");
    w.run(300);
    let uid = w.appended_uid(0, t);
    w.partition(&[0]);
    let now = w.now;
    w.node(0)
        .expunge(now, &mut rng, user, inbox, &[uid])
        .unwrap();
    w.flush(0);
    w.node(1)
        .store_flags(
            now,
            &mut rng,
            user,
            inbox,
            &[uid],
            FlagMode::Add,
            &[Flag::Flagged],
        )
        .unwrap();
    w.flush(1);
    w.node(2)
        .copy(now, &mut rng, user, inbox, &[uid], archive)
        .unwrap();
    w.flush(2);
    w.run(500);
    w.cut.clear();
    w.run(2_000);
    w.assert_converged(user, inbox);
    w.assert_converged(user, archive);
    let r = w.nodes[1].as_ref().unwrap();
    assert_eq!(
        r.mailbox(&user, &inbox).unwrap().exists(),
        0,
        "expunge wins"
    );
    let a = r.mailbox(&user, &archive).unwrap();
    assert_eq!(a.exists(), 1, "the copy survives");
    let m = a.message(a.uids().next().unwrap()).unwrap();
    assert!(
        r.read_blob(&user, &m.view.blob).is_ok(),
        "its blob is still there"
    );
}

#[test]
fn delete_vs_append_loses_nothing_and_renames_agree() {
    let mut w = World::new(3);
    let (user, _) = w.user();
    let now = w.now;
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let work = w
        .node(0)
        .create_mailbox(now, &mut rng, user, "Work", None)
        .unwrap();
    w.flush(0);
    w.run(300);
    w.partition(&[0]);
    let now = w.now;
    w.node(0).delete_mailbox(now, &mut rng, user, work).unwrap();
    w.flush(0);
    w.append(1, user, work, "late");
    w.node(2)
        .rename_mailbox(now, &mut rng, user, work, "Job")
        .unwrap();
    w.flush(2);
    w.run(500);
    w.cut.clear();
    w.run(2_000);
    let lists: Vec<Vec<String>> = w
        .nodes
        .iter()
        .flatten()
        .map(|r| {
            r.mailboxes(&user)
                .unwrap()
                .into_iter()
                .map(|m| m.name)
                .collect()
        })
        .collect();
    assert!(lists.iter().all(|l| l == &lists[0]), "{lists:?}");
    let r = w.nodes[0].as_ref().unwrap();
    let listed = r.mailboxes(&user).unwrap();
    let back = listed
        .iter()
        .find(|m| m.id == work)
        .expect("the mailbox survives with the appended message");
    assert!(back.resurrected);
    assert_eq!(r.mailbox(&user, &work).unwrap().exists(), 1);
}

#[test]
fn same_name_created_on_two_replicas_both_survive() {
    let mut w = World::new(3);
    let (user, _) = w.user();
    w.partition(&[0]);
    let now = w.now;
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let a = w
        .node(0)
        .create_mailbox(now, &mut rng, user, "Projects", None)
        .unwrap();
    w.flush(0);
    let b = w
        .node(1)
        .create_mailbox(now + 1, &mut rng, user, "Projects", None)
        .unwrap();
    w.flush(1);
    w.run(300);
    w.cut.clear();
    w.run(1_000);
    for r in w.nodes.iter().flatten() {
        let l = r.mailboxes(&user).unwrap();
        let names: Vec<&str> = l
            .iter()
            .filter(|m| m.id == a || m.id == b)
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"Projects"));
        assert_ne!(names[0], names[1]);
    }
}

#[test]
fn partition_keeps_appending_on_both_sides_and_converges() {
    let mut w = World::new(3);
    let (user, inbox) = w.user();
    w.append(0, user, inbox, "before");
    w.run(300);
    w.partition(&[0]);
    let mut tickets = Vec::new();
    for k in 0..4 {
        tickets.push((0, w.append(0, user, inbox, &format!("a{k}"))));
        tickets.push((1, w.append(1, user, inbox, &format!("b{k}"))));
        w.run(50);
    }
    w.run(1_000);
    // L1: both sides acknowledged their appends with UIDs.
    for (node, t) in &tickets {
        w.appended_uid(*node, *t);
    }
    w.cut.clear();
    w.run(5_000);
    w.assert_converged(user, inbox);
    assert_eq!(
        w.nodes[0]
            .as_ref()
            .unwrap()
            .mailbox(&user, &inbox)
            .unwrap()
            .exists(),
        9
    );
}

#[test]
fn restart_keeps_uids_and_marks() {
    let mut w = World::new(3);
    let (user, inbox) = w.user();
    for k in 0..5 {
        w.append(k % 3, user, inbox, &format!("m{k}"));
        w.run(100);
    }
    w.run(500);
    let before = w.uid_maps(user, inbox)[1].clone();
    let uidnext = w.nodes[1]
        .as_ref()
        .unwrap()
        .mailbox(&user, &inbox)
        .unwrap()
        .uidnext();
    // Crash node 1: unflushed writes are lost, flushed ones kept.
    let mut store = w.nodes[1].take().unwrap().into_store();
    let id1 = w.ids[1];
    w.done.retain(|(r, _, _)| *r != id1);
    store.crash();
    let mut cfg = Config::new(w.ids[1], w.ids.clone());
    cfg.seq = params();
    let mut r = Replica::restore(cfg, store).unwrap();
    let now = w.now;
    r.unlock(
        now,
        user,
        UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(77)),
    )
    .unwrap();
    w.nodes[1] = Some(r);
    w.flush(1);
    let v = w.nodes[1].as_ref().unwrap().mailbox(&user, &inbox).unwrap();
    assert_eq!(v.uid_map(), before, "same UIDs after restart");
    assert_eq!(v.uidnext(), uidnext, "S2 across restart");
    let t = w.append(1, user, inbox, "after");
    w.run(500);
    assert!(w.appended_uid(1, t) >= uidnext);
    w.assert_converged(user, inbox);
}

#[test]
fn replica_without_the_key_stores_and_forwards_but_cannot_read() {
    let mut w = World::new(3);
    let user = UserId::random(&mut w.rng);
    let now = w.now;
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let secrets = UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(10));
    let inbox = w
        .node(0)
        .create_account(now, &mut rng, user, b"rec".to_vec(), secrets)
        .unwrap();
    w.flush(0);
    // Node 1 holds the key too; node 2 never does.
    w.node(1)
        .unlock(
            now,
            user,
            UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(10)),
        )
        .unwrap();
    w.flush(1);
    w.run(300);
    // Node 0 can only reach node 2: node 2 must carry the op to node 1.
    w.cut.insert((w.ids[0], w.ids[1]));
    w.cut.insert((w.ids[1], w.ids[0]));
    let t = w.append(0, user, inbox, "relayed");
    w.run(3_000);
    let uid = w.appended_uid(0, t);
    let r1 = w.nodes[1].as_ref().unwrap();
    assert!(
        r1.mailbox(&user, &inbox).unwrap().message(uid).is_some(),
        "relayed through the keyless node"
    );
    let r2 = w.nodes[2].as_ref().unwrap();
    assert!(matches!(
        r2.mailbox(&user, &inbox),
        Err(ReplicaError::Locked)
    ));
    let log = r2.users[&user]
        .logs
        .log(&LogId::Mailbox(inbox))
        .expect("node 2 stores the log");
    let op = log.iter().next().unwrap();
    let wrong = UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(11));
    assert!(matches!(
        decrypt_mailbox_op(&wrong, op),
        Err(ReplicaError::Crypto(_))
    ));
}

#[test]
fn garbage_from_a_peer_is_dropped() {
    let mut w = World::new(2);
    assert!(PeerMsg::decode(&[]).is_err());
    assert!(PeerMsg::decode(&[7, 1, 2]).is_err());
    assert!(PeerMsg::decode(&[1, 0xff, 0xff, 0xff]).is_err());
    let now = w.now;
    w.node(0).handle(
        now,
        ReplicaId(99),
        PeerMsg::Sync(SyncMsg::WantChunks {
            user: UserId([0; 16]),
            chunks: vec![],
        }),
    );
    assert_eq!(w.node(0).dropped(), 1, "a stranger's message is dropped");
}

#[test]
fn checkpoint_then_restart_shows_the_same_mailbox() {
    let mut w = World::new(3);
    for n in w.nodes.iter_mut().flatten() {
        n.cfg.checkpoint_every = 4;
    }
    let (user, inbox) = w.user();
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    for k in 0..10 {
        w.append(k % 2, user, inbox, &format!("m{k}"));
        w.run(100);
        w.node(1).checkpoint(&mut rng).unwrap();
        w.flush(1);
    }
    let now = w.now;
    let uid = w.nodes[1]
        .as_ref()
        .unwrap()
        .mailbox(&user, &inbox)
        .unwrap()
        .uids()
        .next()
        .unwrap();
    w.node(1)
        .store_flags(
            now,
            &mut rng,
            user,
            inbox,
            &[uid],
            FlagMode::Add,
            &[Flag::Answered],
        )
        .unwrap();
    w.flush(1);
    w.run(500);
    let before = w.nodes[1]
        .as_ref()
        .unwrap()
        .mailbox(&user, &inbox)
        .unwrap()
        .clone();
    let store = w.nodes[1].take().unwrap().into_store();
    let log = LogId::Mailbox(inbox);
    let (upto, _) = store.latest_checkpoint(&user, &log).unwrap().unwrap();
    let restart = |store: MemStore| {
        let mut cfg = Config::new(w.ids[1], w.ids.clone());
        cfg.seq = params();
        let mut r = Replica::restore(cfg, store).unwrap();
        r.unlock(
            now,
            user,
            UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(77)),
        )
        .unwrap();
        let after = r.mailbox(&user, &inbox).unwrap();
        assert_eq!(after.uid_map(), before.uid_map());
        assert_eq!(after.highest_modseq(), before.highest_modseq());
        for u in before.uids() {
            assert_eq!(after.message(u), before.message(u));
        }
        assert_eq!(after.kept_targets(), 0);
    };
    restart(store.clone());
    // A checkpoint in a format this version cannot read (an older one) is
    // skipped: the log is replayed from its start, to the same state.
    let mut store = store;
    let secrets = UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(77));
    let place = Place::Checkpoint {
        user,
        log,
        upto: upto + 1,
    };
    let unreadable = secrets
        .master
        .encrypt(&mut rng, &place, b"\xff\xff\xff not a checkpoint")
        .unwrap();
    store
        .put_checkpoint(&user, &log, upto + 1, &unreadable)
        .unwrap();
    restart(store);
}

/// One replica's last UID map, highest UID ever shown, and UIDs expunged.
type Seen = (BTreeMap<u32, EntryId>, u32, HashSet<u32>);

/// What the checker remembers of what replicas showed.
#[derive(Default)]
struct Checker {
    /// S1: every UID ever shown, by any replica, and the entry it named.
    named: BTreeMap<u32, EntryId>,
    /// Per replica: the last UID map seen, the highest UID ever shown, and
    /// UIDs that were expunged there.
    last: BTreeMap<usize, Seen>,
    uidvalidity: BTreeMap<usize, u32>,
}

impl Checker {
    fn check(&mut self, w: &World, user: UserId, mb: MailboxId) {
        for (i, r) in w.nodes.iter().enumerate() {
            let Some(r) = r else { continue };
            let Ok(v) = r.mailbox(&user, &mb) else {
                continue;
            };
            let uv = *self.uidvalidity.entry(i).or_insert(v.uidvalidity());
            assert_eq!(
                uv,
                v.uidvalidity(),
                "S3: UIDVALIDITY changed on replica {i}"
            );
            let now = v.uid_map();
            let (prev, max, gone) = self.last.entry(i).or_default();
            for (uid, e) in &now {
                let named = self.named.entry(*uid).or_insert(*e);
                assert_eq!(named, e, "S1: UID {uid} names two messages");
                match prev.get(uid) {
                    Some(p) => assert_eq!(p, e, "S4: UID {uid} changed meaning on replica {i}"),
                    None => {
                        assert!(
                            !gone.contains(uid),
                            "S4: expunged UID {uid} came back on replica {i}"
                        );
                        assert!(
                            *uid > *max,
                            "S2: new UID {uid} not above {max} on replica {i}"
                        );
                    }
                }
            }
            for uid in prev.keys() {
                if !now.contains_key(uid) {
                    gone.insert(*uid);
                }
            }
            *max = (*max).max(now.keys().next_back().copied().unwrap_or(0));
            *prev = now;
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Append(usize),
    AddFlag(usize, usize),
    RemoveFlag(usize, usize),
    Expunge(usize, usize),
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Tick(u64),
    /// A calm moment: everything queued is delivered in order.
    Settle,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (0..3usize).prop_map(Step::Append),
        3 => (0..3usize, any::<usize>()).prop_map(|(n, k)| Step::AddFlag(n, k)),
        2 => (0..3usize, any::<usize>()).prop_map(|(n, k)| Step::RemoveFlag(n, k)),
        1 => (0..3usize, any::<usize>()).prop_map(|(n, k)| Step::Expunge(n, k)),
        12 => any::<usize>().prop_map(Step::Deliver),
        1 => any::<usize>().prop_map(Step::Duplicate),
        1 => any::<usize>().prop_map(Step::Drop),
        2 => (1..300u64).prop_map(Step::Tick),
        2 => Just(Step::Settle),
    ]
}

impl World {
    fn take(&mut self, k: usize, keep: bool) -> Option<(ReplicaId, ReplicaId, PeerMsg)> {
        if self.queue.is_empty() {
            return None;
        }
        let k = k % self.queue.len();
        if keep {
            self.queue.get(k).cloned()
        } else {
            self.queue.remove(k)
        }
    }

    fn deliver(&mut self, (from, to, msg): (ReplicaId, ReplicaId, PeerMsg)) {
        let t = (to.0 - 1) as usize;
        let now = self.now;
        self.node(t).handle(now, from, msg);
        self.flush(t);
    }

    fn tick_all(&mut self, ms: u64) {
        self.now += ms;
        for i in 0..self.nodes.len() {
            let now = self.now;
            self.node(i).tick(now);
            self.flush(i);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]
    /// Random actions on three replicas, messages delivered in random order,
    /// duplicated or dropped (anti-entropy and re-sends repair drops): S1–S4
    /// hold at every step on every replica, and all converge at the end.
    #[test]
    fn random_schedules_keep_uid_properties_and_converge(steps in proptest::collection::vec(step(), 1..120)) {
        let mut w = World::new(3);
        let (user, inbox) = w.user();
        let mut checker = Checker::default();
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let pick = |w: &World, n: usize, k: usize| -> Option<u32> {
            let v = w.nodes[n].as_ref()?.mailbox(&user, &inbox).ok()?;
            let uids: Vec<u32> = v.uids().collect();
            (!uids.is_empty()).then(|| uids[k % uids.len()])
        };
        for s in steps {
            let now = w.now;
            match s {
                Step::Append(n) => { w.append(n, user, inbox, "p"); }
                Step::AddFlag(n, k) | Step::RemoveFlag(n, k) => {
                    if let Some(uid) = pick(&w, n, k) {
                        let mode = if matches!(s, Step::AddFlag(..)) { FlagMode::Add } else { FlagMode::Remove };
                        w.node(n).store_flags(now, &mut rng, user, inbox, &[uid], mode, &[Flag::Seen]).unwrap();
                        w.flush(n);
                    }
                }
                Step::Expunge(n, k) => {
                    if let Some(uid) = pick(&w, n, k) {
                        w.node(n).expunge(now, &mut rng, user, inbox, &[uid]).unwrap();
                        w.flush(n);
                    }
                }
                Step::Deliver(k) => { if let Some(m) = w.take(k, false) { w.deliver(m); } }
                Step::Duplicate(k) => { if let Some(m) = w.take(k, true) { w.deliver(m); } }
                Step::Drop(k) => { w.take(k, false); }
                Step::Tick(ms) => w.tick_all(ms),
                Step::Settle => {
                    for _ in 0..4 {
                        while let Some(m) = w.queue.pop_front() {
                            w.deliver(m);
                        }
                        w.tick_all(5);
                    }
                }
            }
            checker.check(&w, user, inbox);
        }
        // Quiet network: everything is delivered, timers fire, anti-entropy runs.
        for _ in 0..40 {
            while let Some(m) = w.queue.pop_front() {
                w.deliver(m);
                checker.check(&w, user, inbox);
            }
            w.tick_all(60);
        }
        checker.check(&w, user, inbox);
        w.assert_converged(user, inbox);
        if std::env::var("AG_STATS").is_ok() {
            let v = w.nodes[0].as_ref().unwrap().mailbox(&user, &inbox).unwrap();
            eprintln!("stats: exists {} uids named {} highest {}", v.exists(), checker.named.len(), v.highest_modseq());
        }
        for r in w.nodes.iter().flatten() {
            proptest::prop_assert_eq!(r.sequencer(&user, &inbox).map_or(0, |s| s.undecided()), 0);
        }
    }
}

#[test]
fn a_replica_away_for_long_catches_up_without_resends() {
    let mut w = World::new(3);
    let (user, inbox) = w.user();
    w.append(0, user, inbox, "first");
    w.run(300);
    // Node 2 goes away (its store survives) while 300 messages arrive.
    let away = w.nodes[2].take().unwrap().into_store();
    for k in 0..300 {
        w.append(k % 2, user, inbox, &format!("m{k}"));
        if k % 20 == 0 {
            w.run(50);
        }
    }
    w.run(2_000);
    let mut cfg = Config::new(w.ids[2], w.ids.clone());
    cfg.seq = params();
    cfg.anti_entropy_ms = 100;
    let mut r = Replica::restore(cfg, away).unwrap();
    let now = w.now;
    r.unlock(
        now,
        user,
        UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(77)),
    )
    .unwrap();
    w.nodes[2] = Some(r);
    w.flush(2);
    // Count the ops sent to node 2 that it already held.
    let (mut sent, mut resent) = (0usize, 0usize);
    for _ in 0..3_000 {
        w.now += 1;
        let n = w.queue.len();
        for _ in 0..n {
            let Some((from, to, msg)) = w.queue.pop_front() else {
                break;
            };
            if to == w.ids[2] {
                if let PeerMsg::Sync(SyncMsg::Ops { ops, .. } | SyncMsg::Gossip { ops }) = &msg {
                    let logs = &w.nodes[2].as_ref().unwrap().users[&user].logs;
                    for op in ops {
                        sent += 1;
                        if logs.log(&op.log).is_some_and(|l| l.contains(&op.id)) {
                            resent += 1;
                        }
                    }
                }
            }
            w.deliver((from, to, msg));
        }
        if w.now.is_multiple_of(5) {
            w.tick_all(0);
        }
    }
    w.assert_converged(user, inbox);
    assert_eq!(
        w.nodes[2]
            .as_ref()
            .unwrap()
            .mailbox(&user, &inbox)
            .unwrap()
            .exists(),
        301
    );
    assert!(
        sent >= 600,
        "the missing ops (blob announces and adds) were sent: {sent}"
    );
    // Anti-entropy runs against one peer at a time: at most a page in flight
    // from a second peer may overlap.
    assert!(resent * 10 <= sent, "{resent} of {sent} ops were re-sent");
}

#[test]
fn sealed_delivery_by_a_node_without_the_keys() {
    let mut w = World::new(3);
    let user = UserId::random(&mut w.rng);
    let now = w.now;
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let secrets = UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(22));
    let public = *secrets.keypair.public();
    let inbox = w
        .node(0)
        .create_account(now, &mut rng, user, b"rec".to_vec(), secrets)
        .unwrap();
    assert_eq!(inbox, MailboxId::inbox_of(&user));
    w.flush(0);
    w.node(1)
        .unlock(
            now,
            user,
            UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(22)),
        )
        .unwrap();
    w.flush(1);
    w.run(300);
    // Node 2 never holds the keys: it delivers sealed mail.
    // Long enough to be stored compressed inside the sealed box.
    let raw = [
        &b"From: a@example.org\r\nSubject: sealed\r\n\r\n"[..],
        &b"for your eyes only\r\n".repeat(40),
    ]
    .concat();
    let raw = &raw[..];
    let now = w.now;
    let t = w
        .node(2)
        .deliver(
            now,
            &mut rng,
            user,
            &public,
            inbox,
            NewMessage {
                raw,
                flags: vec![],
                internal_date_ms: 5,
            },
        )
        .unwrap();
    w.flush(2);
    w.run(500);
    let uid = w.appended_uid(2, t);
    for n in [0, 1] {
        let r = w.nodes[n].as_ref().unwrap();
        let m = r
            .mailbox(&user, &inbox)
            .unwrap()
            .message(uid)
            .expect("shown where the keys are");
        assert_eq!(r.read_blob(&user, &m.view.blob).unwrap(), raw);
    }
    let r2 = w.nodes[2].as_ref().unwrap();
    assert!(matches!(
        r2.mailbox(&user, &inbox),
        Err(ReplicaError::Locked)
    ));
    // A node that unlocks later (a login) shows it too.
    let now = w.now;
    w.node(2)
        .unlock(
            now,
            user,
            UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(22)),
        )
        .unwrap();
    w.flush(2);
    w.run(300);
    w.assert_converged(user, inbox);
}

#[test]
fn a_node_that_joins_later_learns_the_ledger_and_shares_it() {
    let mut w = World::new(3);
    // Node 1 starts alone; nodes 2 and 3 do not know the community yet.
    for i in 0..3 {
        let mut cfg = Config::new(w.ids[i], vec![w.ids[i]]);
        cfg.seq = params();
        cfg.anti_entropy_ms = 100;
        w.nodes[i] = Some(Replica::new(cfg, MemStore::new()));
    }
    let user = UserId::random(&mut w.rng);
    let seed = 78;
    let now = w.now;
    let mut rng = w.rng.clone();
    let inbox = w
        .node(0)
        .create_account(
            now,
            &mut rng,
            user,
            b"record".to_vec(),
            UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(seed)),
        )
        .unwrap();
    w.flush(0);
    let alone: Vec<Ticket> = (0..5)
        .map(|k| w.append(0, user, inbox, &format!("alone {k}")))
        .collect();
    w.run(300);
    let before: Vec<u32> = alone.iter().map(|t| w.appended_uid(0, *t)).collect();
    // Node 2 joins, then node 3: one member at a time.
    for joining in 1..3 {
        for i in 0..=joining {
            for j in 0..=joining {
                let id = w.ids[j];
                let added = w.node(i).add_member(id);
                assert_eq!(added, i != j && (i == joining || j == joining));
            }
        }
        w.run(500);
    }
    for i in 1..3 {
        let now = w.now;
        let s = UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(seed));
        w.node(i).unlock(now, user, s).unwrap();
        w.flush(i);
    }
    w.run(500);
    let mut last = *before.last().unwrap();
    for k in 0..6 {
        let t = w.append(k % 3, user, inbox, &format!("together {k}"));
        w.run(200);
        let uid = w.appended_uid(k % 3, t);
        assert!(uid > last, "UIDs ascend after the joins");
        last = uid;
    }
    w.run(1000);
    w.assert_converged(user, inbox);
    let v = w.node(2).mailbox(&user, &inbox).unwrap();
    assert_eq!(v.exists(), 11);
    for uid in before {
        assert!(v.message(uid).is_some(), "UID {uid} kept its message");
    }
    let ids = w.ids.clone();
    assert_eq!(w.node(0).members(), &ids[..]);
}

/// A replica that crashes after an op was durable but before it was
/// forwarded or given provisional values (its sequencer records hold nothing
/// about it) resumes the op at restart. Before, only ops with a provisional
/// record came back: when the restarted replica owned the mailbox, nobody
/// ever sequenced the op and every replica held it back forever (L2; the
/// simulator's chaos seeds 7, 34, 40, 41, 48, 56).
#[test]
fn restart_resumes_ops_that_had_no_decision() {
    for writer in 0..3 {
        let mut w = World::new(3);
        let (user, inbox) = w.user();
        w.run(500);
        w.partition(&[writer]);
        w.append(writer, user, inbox, "before the crash");
        w.run(50);
        let mut store = w.nodes[writer].take().unwrap().into_store();
        let id = w.ids[writer];
        w.done.retain(|(r, _, _)| *r != id);
        store.crash();
        let mut cfg = Config::new(id, w.ids.clone());
        cfg.seq = params();
        cfg.anti_entropy_ms = 100;
        let mut r = Replica::restore(cfg, store).unwrap();
        let now = w.now;
        r.unlock(
            now,
            user,
            UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(77)),
        )
        .unwrap();
        w.nodes[writer] = Some(r);
        w.flush(writer);
        w.cut.clear();
        w.run(5_000);
        w.assert_converged(user, inbox);
        for n in w.nodes.iter().flatten() {
            let v = n.mailbox(&user, &inbox).unwrap();
            assert_eq!(v.held(), 0, "writer {writer}: an op is held back");
            assert_eq!(v.exists(), 1, "writer {writer}");
        }
    }
}

/// A user removed on one replica is removed on every replica, also on one
/// that was cut off at the time (it learns the tombstone by anti-entropy at
/// the heal), and no replica takes the user's ops back from another.
#[test]
fn a_removed_user_is_removed_everywhere_and_stays_removed() {
    let mut w = World::new(3);
    let (user, inbox) = w.user();
    for k in 0..3 {
        w.append(k, user, inbox, &format!("m{k}"));
    }
    w.run(500);
    w.assert_converged(user, inbox);
    w.partition(&[2]);
    let version = w.nodes[0].as_ref().unwrap().account(&user).unwrap().0 + 1;
    w.node(0).remove_account(user, version).unwrap();
    w.flush(0);
    w.run(500);
    for i in 0..2 {
        let r = w.nodes[i].as_ref().unwrap();
        assert!(r.is_removed(&user), "replica {i} removed the user");
        assert!(
            r.log_versions(&user).is_empty(),
            "replica {i} dropped the ops"
        );
        // Its sessions are told the user is gone, not to try again later.
        assert!(matches!(
            r.mailbox(&user, &inbox),
            Err(ReplicaError::NoSuchUser)
        ));
    }
    // The cut-off replica still has the user, and writes.
    assert!(!w.nodes[2].as_ref().unwrap().is_removed(&user));
    w.append(2, user, inbox, "cut off");
    w.run(100);
    w.cut.clear();
    w.run(2_000);
    for i in 0..3 {
        let r = w.nodes[i].as_ref().unwrap();
        assert!(r.is_removed(&user), "replica {i} removed the user");
        assert_eq!(r.account(&user), Some((version, &[][..])));
        assert!(r.log_versions(&user).is_empty(), "replica {i} holds ops");
    }
    let secrets = UserSecrets::generate(&mut ChaCha20Rng::seed_from_u64(77));
    let now = w.now;
    assert!(matches!(
        w.node(2).unlock(now, user, secrets),
        Err(ReplicaError::NoSuchUser)
    ));
}

/// Node 1 cannot reach node 0 and hears node 0's new op from node 2 as
/// gossip (a member passing it on, as gossipsub does), so it waits for
/// pushed chunks that node 0 could not push to it; its anti-entropy rounds
/// take node 0 and node 2 in turn, and must end up asking node 2, which
/// holds the chunks, instead of asking node 0 again and again.
#[test]
fn chunks_are_asked_of_another_member_when_the_one_asked_stays_silent() {
    let mut w = World::new(3);
    let (user, inbox) = w.user();
    w.cut.insert((w.ids[0], w.ids[1]));
    w.cut.insert((w.ids[1], w.ids[0]));
    // Node 2 only, for now: node 1 hears of it below.
    w.cut.insert((w.ids[2], w.ids[1]));
    let t = w.append(0, user, inbox, "around");
    w.run(500);
    let uid = w.appended_uid(0, t);
    let logs = &w.nodes[2].as_ref().unwrap().users[&user].logs;
    let ops: Vec<_> = [LogId::Blobs, LogId::Mailbox(inbox)]
        .iter()
        .flat_map(|l| {
            logs.log(l)
                .expect("node 2 holds the log")
                .iter()
                .map(|o| Arc::new(o.clone()))
        })
        .collect();
    w.cut.remove(&(w.ids[2], w.ids[1]));
    // Node 1's next anti-entropy round is with node 0.
    let (me, first) = (w.ids[1], w.ids[0]);
    let r1 = w.node(1);
    let peers: Vec<ReplicaId> = r1
        .cfg
        .members
        .iter()
        .copied()
        .filter(|m| *m != me)
        .collect();
    r1.peer_turn = peers.iter().position(|p| *p == first).unwrap();
    let now = w.now;
    let from = w.ids[2];
    w.node(1)
        .handle(now, from, PeerMsg::Sync(SyncMsg::Gossip { ops }));
    w.flush(1);
    w.run(6_000);
    let r1 = w.nodes[1].as_ref().unwrap();
    let m = r1.mailbox(&user, &inbox).unwrap().message(uid).unwrap();
    assert_eq!(
        r1.read_blob(&user, &m.view.blob)
            .expect("the chunks reached node 1"),
        b"Subject: around\r\n\r\naround\r\n"
    );
}
