//! A replica: one node's state machine for all the users it serves. It joins
//! the op logs (replication), the sequencers (UIDs and MODSEQs), the mailbox
//! CRDTs and the crypto layer, and is driven by the node (tokio, sled,
//! libp2p) or by the simulator with the same calls:
//!
//! - local actions of client sessions (`append`, `store_flags`, `expunge`,
//!   `copy`, `move_messages`, mailbox `create`/`rename`/`delete`/`subscribe`);
//! - `handle` for a message from a peer, `tick` as time passes;
//! - `drain` returns the outputs.
//!
//! **Driver contract.** Every call writes what must be durable to the store
//! before it returns. The driver flushes the store once per batch of calls,
//! and only then sends the outputs (messages, acknowledgements, events): a
//! promise, an acceptance, an exposed UID or an acknowledged APPEND is never
//! seen by anyone before it is durable (group commit falls out of this).

mod index;
mod view;

pub use crate::mailbox::FlagMode;
pub use index::Row;
pub use view::{Event, MailboxView, Message};

use crate::codec::{self, Codec};
use crate::crypto::{
    CryptoError, Place, PublicKey, Sealer, UserSecrets, FINGERPRINT_LEN, KIND_SEALED, NONCE_LEN,
    TAG_LEN,
};
use crate::hlc::{Hlc, Timestamp};
use crate::ids::{BlobId, EntryId, LogId, MailboxId, OpId, ReplicaId, UserId};
use crate::mailbox::{
    batch_flags, EntryWalk, Flag, FlagBits, MailboxOp, MailboxState, MailboxTree, NameError,
    SpecialUse, TreeOp, MAX_FLAG_BATCH,
};
use crate::oplog::{BlobAnnounce, BlobChunk, Op, OpLogError, CHUNK_BYTES};
use crate::seq::{Assign, Fate, SeqMsg, SeqOutput, SeqParams, SeqRecord, Sequencer};
use crate::store::{Store, StoreError};
use crate::sync::{
    answer_want_chunks, BlobInfo, SyncError, SyncMsg, UserLogs, MAX_MESSAGE_BYTES, MAX_WANT_CHUNKS,
    PAGE_BYTES,
};
use crate::{CryptoRng, FastMap, FastSet, RngCore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use view::{Effect, Persisted};

/// Plaintext bytes per blob chunk, so that every stored chunk but the last
/// is exactly [`CHUNK_BYTES`] long.
pub const CHUNK_PLAINTEXT: usize = CHUNK_BYTES - (2 + FINGERPRINT_LEN + NONCE_LEN + TAG_LEN);

/// A chunk request without an answer for this long is sent again (to
/// another peer).
const CHUNK_REQUEST_STALE_MS: u64 = 2_000;

/// Largest message accepted (APPENDLIMIT).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// A replica's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica.
    pub me: ReplicaId,
    /// Every replica of the community (including this one): each replicates
    /// every user in this version.
    pub members: Vec<ReplicaId>,
    /// Sequencer timing and sizes.
    pub seq: SeqParams,
    /// Largest clock skew accepted from a peer.
    pub max_skew_ms: u64,
    /// Period of anti-entropy rounds (one peer per round, in turn).
    pub anti_entropy_ms: u64,
    /// A mailbox gets a new checkpoint after this many newly shown ops.
    pub checkpoint_every: u64,
    /// Most entries one STORE op changes (`MailboxOp::FlagsBatch`); a
    /// larger STORE is several ops. Default [`MAX_FLAG_BATCH`]; the
    /// simulator lowers it so that its small mailboxes split batches too.
    pub flag_batch: usize,
}

impl Config {
    /// Defaults for a community of `members`.
    pub fn new(me: ReplicaId, members: Vec<ReplicaId>) -> Self {
        Config {
            me,
            members,
            seq: SeqParams::default(),
            max_skew_ms: 60_000,
            anti_entropy_ms: 1_000,
            checkpoint_every: 10_000,
            flag_batch: MAX_FLAG_BATCH,
        }
    }
}

/// Errors of local actions. Peer input never returns errors: what is wrong
/// in it is dropped and counted.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// No such user on this replica (never heard of, or removed).
    #[error("unknown user")]
    NoSuchUser,
    /// The user's keys are not unlocked here.
    #[error("user is locked on this replica")]
    Locked,
    /// No such mailbox.
    #[error("no such mailbox")]
    NoSuchMailbox,
    /// A mailbox with that name exists.
    #[error("mailbox already exists")]
    AlreadyExists,
    /// No message with that UID.
    #[error("no message with UID {0}")]
    NoSuchMessage(u32),
    /// A message over the size limit.
    #[error("message too large")]
    TooLarge,
    /// A blob whose chunks have not arrived yet.
    #[error("message body not replicated yet")]
    BlobMissing,
    /// Invalid mailbox name.
    #[error("invalid mailbox name: {0}")]
    Name(#[from] NameError),
    /// Crypto failure (wrong key, tampered data).
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// Storage failure: the action is not durable and must not be acknowledged.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// Op log refused an op.
    #[error("op log: {0}")]
    Log(#[from] OpLogError),
    /// A malformed peer message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Messages between replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMsg {
    /// Replication of ops, blobs and account records.
    Sync(SyncMsg),
    /// The sequencing protocol of one mailbox.
    Seq {
        /// User.
        user: UserId,
        /// Mailbox.
        mailbox: MailboxId,
        /// Message.
        msg: SeqMsg,
    },
}

impl PeerMsg {
    /// Wire encoding: a tag byte, then the message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            PeerMsg::Sync(m) => m.encode_after(vec![0u8]),
            PeerMsg::Seq { user, mailbox, msg } => {
                // Room for most sequencing messages: postcard writes byte by
                // byte, and growing from empty cost several reallocations.
                let mut v = Vec::with_capacity(128);
                v.push(1u8);
                postcard::to_extend(&(user, mailbox, msg), v).unwrap_or_default()
            }
        }
    }

    /// The message's kind, for logs and counters (e.g. `"sync_chunk"`, `"seq_accept"`).
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMsg::Sync(m) => match m {
                SyncMsg::Gossip { .. } => "sync_gossip",
                SyncMsg::Have { .. } => "sync_have",
                SyncMsg::Ops { .. } => "sync_ops",
                SyncMsg::WantChunks { .. } => "sync_want_chunks",
                SyncMsg::Chunk(_) => "sync_chunk",
                SyncMsg::Account { .. } => "sync_account",
            },
            PeerMsg::Seq { msg, .. } => match msg {
                SeqMsg::Forward { .. } => "seq_forward",
                SeqMsg::Resequence { .. } => "seq_resequence",
                SeqMsg::Prepare { .. } => "seq_prepare",
                SeqMsg::Promise { .. } => "seq_promise",
                SeqMsg::Accept { .. } => "seq_accept",
                SeqMsg::Accepted { .. } => "seq_accepted",
                SeqMsg::Nack { .. } => "seq_nack",
                SeqMsg::Heartbeat { .. } => "seq_heartbeat",
                SeqMsg::Alive { .. } => "seq_alive",
                SeqMsg::Pull { .. } => "seq_pull",
                SeqMsg::Entries { .. } => "seq_entries",
            },
        }
    }

    /// Decodes untrusted bytes; never panics, bounded by [`MAX_MESSAGE_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<PeerMsg, ReplicaError> {
        if bytes.len() > MAX_MESSAGE_BYTES + 1 {
            return Err(ReplicaError::Malformed("too large".into()));
        }
        match bytes.split_first() {
            Some((0, rest)) => SyncMsg::decode(rest)
                .map(PeerMsg::Sync)
                .map_err(|e: SyncError| ReplicaError::Malformed(e.to_string())),
            Some((1, rest)) => match postcard::take_from_bytes::<(UserId, MailboxId, SeqMsg)>(rest)
            {
                Ok(((user, mailbox, msg), [])) => Ok(PeerMsg::Seq { user, mailbox, msg }),
                Ok(_) => Err(ReplicaError::Malformed("trailing bytes".into())),
                Err(e) => Err(ReplicaError::Malformed(e.to_string())),
            },
            _ => Err(ReplicaError::Malformed("unknown message kind".into())),
        }
    }
}

/// Names a local action; its outcome arrives as [`Output::Done`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// How a local action ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// APPEND: the message's UID (APPENDUID).
    Appended {
        /// UIDVALIDITY of the mailbox.
        uidvalidity: u32,
        /// UID.
        uid: u32,
    },
    /// COPY or MOVE: source UID → new UID (COPYUID).
    Copied {
        /// UIDVALIDITY of the destination.
        uidvalidity: u32,
        /// Pairs.
        uids: Vec<(u32, u32)>,
    },
    /// STORE or EXPUNGE done: the changes are visible with MODSEQs.
    Done,
}

/// Output of a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send to one replica.
    Send {
        /// Destination.
        to: ReplicaId,
        /// Message.
        msg: PeerMsg,
    },
    /// Send to every other replica serving the user (the user's topic).
    Broadcast {
        /// User.
        user: UserId,
        /// Message.
        msg: PeerMsg,
    },
    /// A local action completed (acknowledge it once the store is flushed).
    Done {
        /// The action.
        ticket: Ticket,
        /// Its outcome.
        outcome: Outcome,
    },
    /// Something changed in a mailbox sessions may have selected.
    Event {
        /// User.
        user: UserId,
        /// Mailbox.
        mailbox: MailboxId,
        /// What.
        event: Event,
    },
    /// The user's mailbox list changed.
    MailboxesChanged {
        /// User.
        user: UserId,
    },
    /// A newer account record of the user arrived from a peer (a user
    /// added, a password changed or the user removed on another node: see
    /// [`Replica::is_removed`]; the user's stored data is the driver's to
    /// delete then).
    AccountChanged {
        /// User.
        user: UserId,
    },
}

/// A mailbox view as of a view record number, and the ops it covers.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    record_no: u64,
    prefix: crdts::VClock<ReplicaId>,
    beyond: Vec<OpId>,
    view: MailboxView,
}

/// The plaintext a message is stored as, and how it holds it
/// ([`crate::codec`]).
fn stored_form(raw: &[u8]) -> (Codec, std::borrow::Cow<'_, [u8]>) {
    match codec::compress(raw) {
        Some(z) => (Codec::Lz4, z.into()),
        None => (Codec::Raw, raw.into()),
    }
}

/// Encrypted metadata of a blob.
#[derive(Serialize, Deserialize)]
struct BlobMeta {
    size: u64,
}

struct Unlocked {
    user: UserId,
    /// Ops shown per mailbox since its last checkpoint.
    since_checkpoint: HashMap<MailboxId, u64>,
    secrets: UserSecrets,
    tree: MailboxTree,
    created: HashMap<MailboxId, Timestamp>,
    boxes: BTreeMap<MailboxId, MailboxView>,
}

impl User {
    fn new(user: UserId) -> Self {
        User {
            logs: UserLogs::new(user),
            seqs: BTreeMap::new(),
            marks: FastMap::default(),
            unlocked: None,
        }
    }

    /// Why the user's keys are not here: removed (no such user any more)
    /// or only locked.
    fn not_unlocked(&self) -> ReplicaError {
        if self.logs.is_removed() {
            ReplicaError::NoSuchUser
        } else {
            ReplicaError::Locked
        }
    }
}

struct User {
    logs: UserLogs,
    seqs: BTreeMap<MailboxId, Sequencer>,
    /// What each mailbox's view has shown (kept while locked too).
    marks: FastMap<MailboxId, (u64, u64)>,
    unlocked: Option<Unlocked>,
}

enum Pending {
    Append { ticket: Ticket },
    Copy { ticket: Ticket, src_uid: u32 },
    Change { ticket: Ticket },
}

impl Pending {
    fn ticket(&self) -> Ticket {
        match self {
            Pending::Append { ticket, .. }
            | Pending::Copy { ticket, .. }
            | Pending::Change { ticket } => *ticket,
        }
    }
}

#[derive(Default)]
struct TicketState {
    remaining: usize,
    copied: Vec<(u32, u32)>,
    uidvalidity: u32,
    appended: Option<u32>,
}

/// One node's replica of every user it serves.
pub struct Replica<S: Store> {
    cfg: Config,
    store: S,
    hlc: Hlc,
    users: BTreeMap<UserId, User>,
    /// Local actions waiting for their ops to be shown, by (user, mailbox,
    /// op): op ids are per log, so the mailbox is part of the key.
    waiting: FastMap<(UserId, MailboxId, OpId), Pending>,
    /// Deliveries made while the user is locked here: done when sequenced.
    sealed_waiting: FastSet<(UserId, MailboxId, OpId)>,
    tickets: BTreeMap<Ticket, TicketState>,
    next_ticket: u64,
    record_no: u64,
    /// What `put_record` encodes a record into (the store copies it).
    record_buf: Vec<u8>,
    last_sync: u64,
    peer_turn: usize,
    /// Per user, the chunk request in progress: (peer, chunks still
    /// expected, when it was sent or last answered).
    chunk_wants: HashMap<UserId, (ReplicaId, usize, u64)>,
    dropped: u64,
    /// Pushed chunks that arrived before their blob's announce (gossip
    /// reorders them), kept until it comes: asking for them again would
    /// cost a round trip. Bounded by `EARLY_CHUNK_BYTES`.
    early_chunks: BTreeMap<(UserId, BlobId, u32), BlobChunk>,
    early_bytes: usize,
    /// A STORE's changes in entry order, kept between STOREs: over 100k
    /// messages it is 3.2 MB, which a fresh allocation would fault in
    /// (zeroed by the kernel) each time.
    store_keys: Vec<(u128, FlagBits, u32)>,
    out: Vec<Output>,
}

/// Most bytes of early chunks kept (beyond, anti-entropy fetches them).
const EARLY_CHUNK_BYTES: usize = 16 << 20;

/// A STORE FLAGS's flags, sorted, without duplicates, once for all the
/// messages it changes (`+FLAGS` and `-FLAGS` are built by
/// [`MailboxState::shared_flags`]).
struct StoreFlags {
    flags: Vec<Flag>,
}

impl StoreFlags {
    fn new(flags: &[Flag]) -> Self {
        let mut flags = flags.to_vec();
        flags.sort_unstable();
        flags.dedup();
        StoreFlags { flags }
    }

    /// The change to one shown message: what
    /// [`MailboxState::replace_flags`] gives, read from the message's row
    /// when its flag set is complete and the replacement removes nothing,
    /// so that the entry is not looked up.
    fn change(
        &self,
        st: &MailboxState,
        walk: &mut EntryWalk<'_>,
        entry: EntryId,
        bits: FlagBits,
    ) -> MailboxOp {
        if bits.is_complete() {
            let flags = &self.flags;
            let quick = st.flags_in(bits).and_then(|current| {
                current.iter().all(|f| flags.contains(f)).then(|| {
                    flags
                        .iter()
                        .filter(|f| !current.contains(f))
                        .cloned()
                        .collect()
                })
            });
            if let Some(add) = quick {
                return MailboxOp::Flags {
                    entry,
                    add,
                    remove: Vec::new(),
                };
            }
        }
        st.store_op_in(walk, FlagMode::Replace, entry, &self.flags)
    }
}

/// The rows of these UIDs, in their order; an error names the first UID
/// not shown. Ascending UIDs (what a session sends) are one merge over the
/// index, others one search each.
fn rows_named<'a>(v: &'a MailboxView, uids: &'a [u32]) -> Result<Vec<&'a Row>, ReplicaError> {
    if uids.windows(2).all(|w| w[0] < w[1]) {
        let rows: Vec<&Row> = v.rows_of(uids).collect();
        if rows.len() == uids.len() {
            return Ok(rows);
        }
    }
    uids.iter()
        .map(|&u| v.row_of(u).ok_or(ReplicaError::NoSuchMessage(u)))
        .collect()
}

fn seq_key(user: &UserId, mailbox: &MailboxId) -> u64 {
    let mut k = [0u8; 8];
    for (i, b) in user.0.iter().chain(mailbox.0.iter()).enumerate() {
        k[i % 8] ^= b.rotate_left(i as u32 % 8);
    }
    u64::from_le_bytes(k)
}

fn prefix(tag: u8, user: &UserId, mailbox: Option<&MailboxId>) -> Vec<u8> {
    // Room for a record number after it (`put_record`).
    let mut k = Vec::with_capacity(1 + 16 + 16 + 8);
    k.push(tag);
    k.extend_from_slice(&user.0);
    if let Some(m) = mailbox {
        k.extend_from_slice(&m.0);
    }
    k
}

const TAG_SEQ: u8 = b's';
const TAG_VIEW: u8 = b'v';

impl<S: Store> Replica<S> {
    /// A fresh replica on an empty store.
    pub fn new(cfg: Config, store: S) -> Self {
        let hlc = Hlc::new(cfg.max_skew_ms);
        Replica {
            cfg,
            store,
            hlc,
            users: BTreeMap::new(),
            waiting: FastMap::default(),
            sealed_waiting: FastSet::default(),
            early_chunks: BTreeMap::new(),
            early_bytes: 0,
            store_keys: Vec::new(),
            tickets: BTreeMap::new(),
            next_ticket: 1,
            record_no: 0,
            record_buf: Vec::new(),
            last_sync: 0,
            peer_turn: 0,
            chunk_wants: HashMap::new(),
            dropped: 0,
            out: Vec::new(),
        }
    }

    /// A replica restarted from its store (every user locked).
    pub fn restore(cfg: Config, store: S) -> Result<Self, ReplicaError> {
        let mut r = Replica::new(cfg, store);
        let users = r.store.users()?;
        for user in users {
            let logs = UserLogs::load(&r.store, user)?;
            let mut u = User {
                logs,
                seqs: BTreeMap::new(),
                marks: FastMap::default(),
                unlocked: None,
            };
            let mut per_box: BTreeMap<MailboxId, Vec<SeqRecord>> = BTreeMap::new();
            for (k, v) in r.store.scan_meta(&prefix(TAG_SEQ, &user, None))? {
                r.record_no = r.record_no.max(record_no(&k) + 1);
                let (Some(mb), Ok(rec)) = (key_mailbox(&k), postcard::from_bytes::<SeqRecord>(&v))
                else {
                    return Err(StoreError::Corrupt("sequencer record".into()).into());
                };
                per_box.entry(mb).or_default().push(rec);
            }
            for (mb, recs) in per_box {
                let mut s = Sequencer::restore(
                    r.cfg.me,
                    &r.cfg.members,
                    seq_key(&user, &mb),
                    r.cfg.seq.clone(),
                    recs,
                );
                s.drain();
                u.seqs.insert(mb, s);
            }
            // Ops without a final decision go back to their sequencers: a
            // crash may have lost them from its records (an op submitted but
            // not yet provisional), and no peer would ever send them again.
            let logs: Vec<(MailboxId, OpId, u32)> = u
                .logs
                .logs()
                .filter_map(|l| match l.log() {
                    LogId::Mailbox(mb) => Some((*mb, l)),
                    _ => None,
                })
                .flat_map(|(mb, l)| l.iter().map(move |op| (mb, op.id, op.uids)))
                .collect();
            for (mb, op, uids) in logs {
                let s = u.seqs.entry(mb).or_insert_with(|| {
                    Sequencer::new(
                        r.cfg.me,
                        &r.cfg.members,
                        seq_key(&user, &mb),
                        r.cfg.seq.clone(),
                    )
                });
                s.resume(op, uids);
            }
            // Locked after a restart: no readers here until an unlock.
            for s in u.seqs.values_mut() {
                s.set_watching(false);
            }
            for (k, v) in r.store.scan_meta(&prefix(TAG_VIEW, &user, None))? {
                r.record_no = r.record_no.max(record_no(&k) + 1);
                if let (Some(mb), Ok(Persisted::Marks(a, b))) =
                    (key_mailbox(&k), postcard::from_bytes(&v))
                {
                    let m = u.marks.entry(mb).or_insert((0, 0));
                    *m = (m.0.max(a), m.1.max(b));
                }
            }
            r.users.insert(user, u);
        }
        Ok(r)
    }

    /// How many ops (and encoded bytes) a peer whose `Have` for `user` said
    /// `logs` lacks of what this replica holds.
    pub fn behind(&self, user: &UserId, logs: &[(LogId, crate::oplog::LogVersion)]) -> (u64, u64) {
        self.users.get(user).map_or((0, 0), |u| u.logs.behind(logs))
    }

    /// What this replica holds of each of `user`'s logs (what its `Have`
    /// says), in log order.
    pub fn log_versions(&self, user: &UserId) -> Vec<(LogId, crate::oplog::LogVersion)> {
        self.users.get(user).map_or_else(Vec::new, |u| {
            u.logs.logs().map(|l| (*l.log(), l.summary())).collect()
        })
    }

    /// Starts an anti-entropy round with `peer` now (a peer just connected):
    /// a `Have` for every user.
    pub fn sync_with(&mut self, peer: ReplicaId) {
        if peer == self.cfg.me || !self.cfg.members.contains(&peer) {
            return;
        }
        let haves: Vec<SyncMsg> = self.users.values().map(|u| u.logs.have()).collect();
        for have in haves {
            self.out.push(Output::Send {
                to: peer,
                msg: PeerMsg::Sync(have),
            });
        }
    }

    /// Stores a chunk of a new blob and pushes it to the user's replicas.
    fn push_chunk(&mut self, c: BlobChunk) -> Result<(), ReplicaError> {
        self.store.put_chunk(&c)?;
        self.out.push(Output::Broadcast {
            user: c.user,
            msg: PeerMsg::Sync(SyncMsg::Chunk(c)),
        });
        Ok(())
    }

    /// Asks `peer` for chunks of `user`'s blobs this replica lacks, unless a
    /// request is in progress or `force`. A request whose peer has sent
    /// nothing for `CHUNK_REQUEST_STALE_MS` is stale; so is one to another
    /// member that has sent nothing for an anti-entropy interval: that
    /// member may be one this replica cannot reach (its messages lost on
    /// the way), and the anti-entropy rounds, which take the members in
    /// turn, would otherwise keep asking it again and never ask another.
    fn want_chunks(&mut self, now: u64, user: UserId, peer: ReplicaId, force: bool) {
        if let Some((asked, left, at)) = self.chunk_wants.get(&user) {
            let quiet = now.saturating_sub(*at);
            let stale = quiet >= CHUNK_REQUEST_STALE_MS
                || (*asked != peer && quiet >= self.cfg.anti_entropy_ms);
            if !force && *left > 0 && !stale {
                return;
            }
        }
        let Some(u) = self.users.get(&user) else {
            return;
        };
        let store = &self.store;
        let wanted = u.logs.wanted_chunks(
            |b, i| store.has_chunk(&user, b, i).unwrap_or(false),
            MAX_WANT_CHUNKS,
        );
        if wanted.is_empty() {
            self.chunk_wants.remove(&user);
            return;
        }
        self.chunk_wants.insert(user, (peer, wanted.len(), now));
        self.out.push(Output::Send {
            to: peer,
            msg: PeerMsg::Sync(SyncMsg::WantChunks {
                user,
                chunks: wanted,
            }),
        });
    }

    /// How many mailbox ledgers this replica owns (leads) now.
    pub fn ledgers_owned(&self) -> usize {
        self.users
            .values()
            .map(|u| u.seqs.values().filter(|s| s.is_owner()).count())
            .sum()
    }

    /// Every replica of the community, as this one knows it.
    pub fn members(&self) -> &[ReplicaId] {
        &self.cfg.members
    }

    /// Adds a replica to the community (a node that proved it holds the
    /// network key). Membership only grows, one node at a time: a majority
    /// of the new member list intersects every majority of the old one, so
    /// decisions taken before stay safe (ARCHITECTURE.md, "Membership").
    /// Returns whether it was new.
    pub fn add_member(&mut self, member: ReplicaId) -> bool {
        if self.cfg.members.contains(&member) {
            return false;
        }
        self.cfg.members.push(member);
        self.cfg.members.sort();
        let members = std::sync::Arc::new(self.cfg.members.clone());
        for u in self.users.values_mut() {
            for s in u.seqs.values_mut() {
                s.set_members(members.clone());
            }
        }
        true
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.cfg.me
    }

    /// The store (the driver flushes it).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The store, read-only.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Consumes the replica, returning its store (the simulator's crash).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Takes the outputs produced so far. The ops a batch gossips for one
    /// user leave together, in as few `Gossip` messages as fit a page (a
    /// STORE or EXPUNGE over several messages makes an op per message):
    /// one message instead of one per op, and a receiver never sees them
    /// out of order, which it would take for a gap and ask about with a
    /// `Have`.
    pub fn drain(&mut self) -> Vec<Output> {
        let out = std::mem::take(&mut self.out);
        let gossips = out
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Broadcast {
                        msg: PeerMsg::Sync(SyncMsg::Gossip { .. }),
                        ..
                    }
                )
            })
            .count();
        if gossips < 2 {
            return out;
        }
        // Each user's gossiped ops, in output order, go where that user's
        // first Gossip was (one pass: the outputs are moved once, and a
        // STORE over many messages has one event each).
        let mut ops: BTreeMap<UserId, Vec<Arc<Op>>> = BTreeMap::new();
        let mut merged = Vec::with_capacity(out.len());
        let mut firsts: Vec<(usize, UserId)> = Vec::new();
        for o in out {
            match o {
                Output::Broadcast {
                    user,
                    msg: PeerMsg::Sync(SyncMsg::Gossip { ops: more }),
                } => {
                    let first = !ops.contains_key(&user);
                    ops.entry(user).or_default().extend(more);
                    if first {
                        firsts.push((merged.len(), user));
                        merged.push(Output::Broadcast {
                            user,
                            msg: PeerMsg::Sync(SyncMsg::Gossip { ops: Vec::new() }),
                        });
                    }
                }
                o => merged.push(o),
            }
        }
        // Last first, so that pages inserted do not move the places before.
        for (at, user) in firsts.into_iter().rev() {
            let mine = ops.remove(&user).unwrap_or_default();
            let mut pages = SyncMsg::gossip(mine)
                .into_iter()
                .map(|msg| Output::Broadcast {
                    user,
                    msg: PeerMsg::Sync(msg),
                });
            match pages.next() {
                Some(first) => {
                    merged[at] = first;
                    let rest: Vec<Output> = pages.collect();
                    if !rest.is_empty() {
                        merged.splice(at + 1..at + 1, rest);
                    }
                }
                None => {
                    merged.remove(at);
                }
            }
        }
        merged
    }

    /// Peer input dropped as malformed or unauthentic, so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Users known here.
    pub fn users(&self) -> impl Iterator<Item = &UserId> + '_ {
        self.users.keys()
    }

    /// A user's account record (opaque bytes: the node's `AccountKeys`).
    pub fn account(&self, user: &UserId) -> Option<(u64, &[u8])> {
        self.users.get(user)?.logs.account()
    }

    /// Whether the user's keys are unlocked here.
    pub fn is_unlocked(&self, user: &UserId) -> bool {
        self.users.get(user).is_some_and(|u| u.unlocked.is_some())
    }

    fn user_mut(&mut self, user: &UserId) -> &mut User {
        self.users.entry(*user).or_insert_with(|| User::new(*user))
    }

    // ----- accounts --------------------------------------------------------

    /// Creates an account: stores its record (replicated to every replica),
    /// unlocks it here and creates INBOX.
    pub fn create_account<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        record: Vec<u8>,
        secrets: UserSecrets,
    ) -> Result<MailboxId, ReplicaError> {
        let version = self.account(&user).map_or(1, |(v, _)| v + 1);
        self.set_account(user, version, record)?;
        self.unlock(now, user, secrets)?;
        self.ensure_inbox(now, rng, user)
    }

    /// Creates the user's INBOX (with its well-known id) if this replica
    /// does not know it yet; a creation elsewhere merges with it.
    pub fn ensure_inbox<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
    ) -> Result<MailboxId, ReplicaError> {
        let id = MailboxId::inbox_of(&user);
        if !self.unlocked(&user)?.tree.exists(&id) {
            self.write_tree_op(
                now,
                rng,
                user,
                TreeOp::Create {
                    id,
                    name: "INBOX".into(),
                    special_use: None,
                },
            )?;
        }
        Ok(id)
    }

    /// Creates the special-use mailboxes a mail client expects (Sent,
    /// Drafts, Trash, Junk, Archive) where none has that use or name yet.
    pub fn ensure_special_use<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
    ) -> Result<(), ReplicaError> {
        let defaults = [
            ("Sent", SpecialUse::Sent),
            ("Drafts", SpecialUse::Drafts),
            ("Trash", SpecialUse::Trash),
            ("Junk", SpecialUse::Junk),
            ("Archive", SpecialUse::Archive),
        ];
        for (name, use_) in defaults {
            let present = self
                .mailboxes(&user)?
                .iter()
                .any(|m| m.special_use == Some(use_) || m.name == name);
            if !present {
                self.create_mailbox(now, rng, user, name, Some(use_))?;
            }
        }
        Ok(())
    }

    /// Delivers a message without the user's keys (LMTP): the message and
    /// its entry are sealed to the user's public key, so this node cannot
    /// read them back. The entry is an op of the mailbox's log like any
    /// other: it gets its UID from the mailbox's ledger, exactly once, and
    /// every replica holding the keys shows it (ARCHITECTURE.md §7). Done
    /// when it is durable and sequenced here.
    pub fn deliver<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        public: &PublicKey,
        mailbox: MailboxId,
        message: NewMessage<'_>,
    ) -> Result<Ticket, ReplicaError> {
        let NewMessage {
            raw,
            flags,
            internal_date_ms,
        } = message;
        if raw.len() > MAX_MESSAGE_SIZE {
            return Err(ReplicaError::TooLarge);
        }
        // The blob: one sealed box, stored in chunks. The message's three
        // boxes share one ephemeral key (one X25519 agreement, not three).
        let blob = BlobId::random(rng);
        let sealer = Sealer::new(rng, public)?;
        let (codec, body) = stored_form(raw);
        let sealed = sealer.seal(rng, &Place::Sealed { user, blob }, &body)?;
        let meta = sealer.seal(
            rng,
            &Place::Summary { user, blob },
            &postcard::to_allocvec(&BlobMeta {
                size: raw.len() as u64,
            })
            .unwrap_or_default(),
        )?;
        for (i, piece) in sealed.chunks(CHUNK_BYTES).enumerate() {
            let c = BlobChunk {
                user,
                blob,
                index: i as u32,
                bytes: piece.into(),
            };
            self.push_chunk(c)?;
        }
        self.announce_blob(now, user, blob, sealed.len() as u64, codec, meta)?;
        // The entry, sealed too.
        let entry = EntryId::random(rng);
        let add = MailboxOp::Add {
            entry,
            blob,
            flags,
            internal_date_ms,
            size: raw.len() as u32,
        };
        let bytes =
            postcard::to_allocvec(&add).map_err(|e| ReplicaError::Malformed(e.to_string()))?;
        let log = LogId::Mailbox(mailbox);
        let op = self.log_op(now, user, log, 1, |place| {
            Ok(sealer.seal(rng, place, &bytes)?)
        })?;
        let id = op.id;
        let ticket = self.new_ticket(1);
        self.waiting
            .insert((user, mailbox, id), Pending::Append { ticket });
        match self.view_mut(&user, &mailbox) {
            Some(v) => {
                v.on_op(id, add, None);
            }
            None => {
                // No view here (locked): done once the ledger gives the UID.
                self.sealed_waiting.insert((user, mailbox, id));
            }
        }
        self.seq_mut(&user, mailbox).submit(now, id, 1);
        self.pump(now, user, mailbox);
        Ok(ticket)
    }

    /// Replaces the account record (a password change re-wraps the keys).
    pub fn set_account(
        &mut self,
        user: UserId,
        version: u64,
        record: Vec<u8>,
    ) -> Result<(), ReplicaError> {
        self.store.put_account(&user, version, &record)?;
        let u = self.user_mut(&user);
        u.logs.set_account(version, record.clone());
        self.out.push(Output::Broadcast {
            user,
            msg: PeerMsg::Sync(SyncMsg::Account {
                user,
                version,
                record,
            }),
        });
        Ok(())
    }

    /// Removes a user from the community: stores the tombstone (an empty
    /// account record of version `version`, above the current record's),
    /// forgets the user's ops, ledgers and views here, and sends the
    /// tombstone to every replica, which do the same when it reaches them
    /// (directly or by anti-entropy). The driver removes the user's stored
    /// data ([`Output::AccountChanged`] tells it on the other replicas).
    pub fn remove_account(&mut self, user: UserId, version: u64) -> Result<(), ReplicaError> {
        self.store.put_account(&user, version, &[])?;
        self.user_mut(&user).logs.set_account(version, Vec::new());
        self.forget_user(&user);
        self.out.push(Output::Broadcast {
            user,
            msg: PeerMsg::Sync(SyncMsg::Account {
                user,
                version,
                record: Vec::new(),
            }),
        });
        Ok(())
    }

    /// Whether `user` was removed (its account record is a tombstone).
    pub fn is_removed(&self, user: &UserId) -> bool {
        self.users.get(user).is_some_and(|u| u.logs.is_removed())
    }

    /// Drops a removed user's state: keys, ledgers, views, waiting actions
    /// and chunks. Its logs were emptied with the tombstone.
    fn forget_user(&mut self, user: &UserId) {
        if let Some(u) = self.users.get_mut(user) {
            u.unlocked = None;
            u.seqs.clear();
            u.marks.clear();
        }
        self.waiting.retain(|(u, _, _), _| u != user);
        self.sealed_waiting.retain(|(u, _, _)| u != user);
        self.chunk_wants.remove(user);
        let mut freed = 0;
        self.early_chunks.retain(|(u, _, _), c| {
            let keep = u != user;
            if !keep {
                freed += c.bytes.len();
            }
            keep
        });
        self.early_bytes -= freed;
    }

    /// Gives the user's keys to this replica (a session logged in): the
    /// mailboxes are materialized from the logs and the persisted views.
    pub fn unlock(
        &mut self,
        now: u64,
        user: UserId,
        secrets: UserSecrets,
    ) -> Result<(), ReplicaError> {
        if self.is_removed(&user) {
            return Err(ReplicaError::NoSuchUser);
        }
        if self.is_unlocked(&user) {
            return Ok(());
        }
        // Checkpoints first: they bound what must be replayed.
        let logs: Vec<LogId> = self.user_mut(&user).logs.logs().map(|l| *l.log()).collect();
        let mut checkpoints: HashMap<MailboxId, Checkpoint> = HashMap::new();
        for log in &logs {
            let LogId::Mailbox(mb) = log else { continue };
            if let Some((upto, bytes)) = self.store.latest_checkpoint(&user, log)? {
                let place = Place::Checkpoint {
                    user,
                    log: *log,
                    upto,
                };
                let plain = secrets.master.decrypt(&place, &bytes)?;
                // A checkpoint this version cannot read (an older format)
                // is skipped: every op is kept, so replaying the log from
                // its start gives the same state, only slower.
                if let Ok(mut cp) = postcard::from_bytes::<Checkpoint>(&plain) {
                    cp.view.rebuild_index();
                    checkpoints.insert(*mb, cp);
                }
            }
        }
        let u = self.user_mut(&user);
        let mut un = Unlocked {
            user,
            since_checkpoint: HashMap::new(),
            secrets,
            tree: MailboxTree::new(),
            created: HashMap::new(),
            boxes: BTreeMap::new(),
        };
        // The mailbox tree.
        if let Some(log) = u.logs.log(&LogId::Mailboxes) {
            for op in log.iter() {
                if let Ok(t) = decrypt_tree_op(&un.secrets, op) {
                    apply_tree(&mut un, op, &t);
                }
            }
        }
        // Each mailbox: its checkpoint, then the ops it does not cover, held
        // until their values are known.
        let mut replay_after: HashMap<MailboxId, u64> = HashMap::new();
        for log in logs {
            let LogId::Mailbox(mb) = log else { continue };
            let cp = checkpoints.remove(&mb);
            let ops: Vec<(OpId, MailboxOp)> = u
                .logs
                .log(&log)
                .map(|l| {
                    l.iter()
                        .filter(|op| {
                            cp.as_ref().is_none_or(|c| {
                                op.id.seq > c.prefix.get(&op.id.origin)
                                    && !c.beyond.contains(&op.id)
                            })
                        })
                        .filter_map(|op| {
                            decrypt_mailbox_op(&un.secrets, op).ok().map(|p| (op.id, p))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Some(c) = cp {
                replay_after.insert(mb, c.record_no);
                let uv = uidvalidity_for(&un, mb);
                un.boxes.insert(mb, c.view.with_uidvalidity(uv));
            }
            let view = view_for(&mut un, mb);
            for (id, payload) in ops {
                view.on_op(id, payload, None);
            }
        }
        u.unlocked = Some(un);
        for s in u.seqs.values_mut() {
            s.set_watching(true);
        }
        // What was shown since the checkpoint, exactly as it was shown.
        let boxes: Vec<MailboxId> = self.users[&user]
            .unlocked
            .as_ref()
            .map(|un| un.boxes.keys().copied().collect())
            .unwrap_or_default();
        for mb in &boxes {
            let after = replay_after.get(mb).copied();
            let mut recs = Vec::new();
            for (k, v) in self.store.scan_meta(&prefix(TAG_VIEW, &user, Some(mb)))? {
                if after.is_some_and(|a| record_no(&k) <= a) {
                    continue;
                }
                if let Ok(p) = postcard::from_bytes::<Persisted>(&v) {
                    recs.push(p);
                }
            }
            let u = self.user_mut(&user);
            let Some(un) = u.unlocked.as_mut() else {
                continue;
            };
            view_for(un, *mb);
            let Some(view) = un.boxes.get_mut(mb) else {
                continue;
            };
            let shown = view.restore(recs);
            for (op, a) in shown {
                if view.lacks_targets(&op, &a) {
                    give_targets(&u.logs, &un.secrets, view, *mb, op);
                }
                view.reshow(op, a);
            }
        }
        // Then everything the sequencers decided since.
        for mb in boxes {
            self.replay(now, user, mb);
        }
        self.out.push(Output::MailboxesChanged { user });
        Ok(())
    }

    /// Writes an encrypted checkpoint of every unlocked mailbox that showed
    /// `checkpoint_every` ops since its last one (the driver calls this as
    /// time passes; it needs randomness for nonces). Returns how many.
    pub fn checkpoint<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
    ) -> Result<usize, ReplicaError> {
        self.checkpoint_above(rng, self.cfg.checkpoint_every)
    }

    /// Checkpoints every unlocked mailbox that changed (before a shutdown or
    /// a lock, so that the next unlock replays little).
    pub fn checkpoint_all<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
    ) -> Result<usize, ReplicaError> {
        self.checkpoint_above(rng, 1)
    }

    fn checkpoint_above<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        every: u64,
    ) -> Result<usize, ReplicaError> {
        let due: Vec<(UserId, MailboxId)> = self
            .users
            .iter()
            .filter_map(|(u, us)| us.unlocked.as_ref().map(|un| (u, un)))
            .flat_map(|(u, un)| {
                un.since_checkpoint
                    .iter()
                    .filter(|(_, n)| **n >= every)
                    .map(move |(m, _)| (*u, *m))
            })
            .collect();
        for (user, mb) in &due {
            self.write_checkpoint(rng, *user, *mb)?;
        }
        Ok(due.len())
    }

    fn write_checkpoint<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        user: UserId,
        mb: MailboxId,
    ) -> Result<(), ReplicaError> {
        let log = LogId::Mailbox(mb);
        let upto = self.record_no;
        self.record_no += 1;
        let u = self.users.get_mut(&user).ok_or(ReplicaError::NoSuchUser)?;
        let (prefix, beyond) = match u.logs.log(&log) {
            Some(l) => (l.version().clone(), l.beyond().collect()),
            None => (crdts::VClock::new(), Vec::new()),
        };
        let gone = u.not_unlocked();
        let un = u.unlocked.as_mut().ok_or(gone)?;
        let view = un
            .boxes
            .get(&mb)
            .cloned()
            .ok_or(ReplicaError::NoSuchMailbox)?;
        let cp = Checkpoint {
            record_no: upto,
            prefix,
            beyond,
            view,
        };
        let plain =
            postcard::to_allocvec(&cp).map_err(|e| ReplicaError::Malformed(e.to_string()))?;
        let bytes =
            un.secrets
                .master
                .encrypt(rng, &Place::Checkpoint { user, log, upto }, &plain)?;
        un.since_checkpoint.insert(mb, 0);
        // The copy becomes the live view: cloning a B-tree allocates its
        // nodes one after another in key order, where the view's own were
        // scattered by inserts in random entry order (a mailbox filled by
        // deliveries). Walks in entry order (applying a STORE over every
        // message) then read neighbouring memory: a `STORE 1:*` over 100k
        // messages just appended took a fifth more CPU than after a restart,
        // which builds the maps from a checkpoint in order.
        if let Some(live) = un.boxes.get_mut(&mb) {
            *live = cp.view;
        }
        self.store.put_checkpoint(&user, &log, upto, &bytes)?;
        Ok(())
    }

    /// Forgets the user's keys and materialized mailboxes (the last session
    /// ended); the keys zeroize as they drop.
    pub fn lock(&mut self, user: &UserId) {
        if let Some(u) = self.users.get_mut(user) {
            u.unlocked = None;
            for s in u.seqs.values_mut() {
                s.set_watching(false);
            }
        }
    }

    // ----- reading ---------------------------------------------------------

    /// The user's mailboxes as listed (names unique, deleted-but-not-empty
    /// mailboxes shown again).
    pub fn mailboxes(
        &self,
        user: &UserId,
    ) -> Result<Vec<crate::mailbox::MailboxView>, ReplicaError> {
        let un = self.unlocked(user)?;
        let live = |id: &MailboxId| {
            un.boxes
                .get(id)
                .is_some_and(|v| v.exists() > 0 || v.held() > 0)
        };
        Ok(un.tree.visible(live))
    }

    /// Looks a mailbox up by name.
    pub fn lookup(&self, user: &UserId, name: &str) -> Result<MailboxId, ReplicaError> {
        let un = self.unlocked(user)?;
        let live = |id: &MailboxId| {
            un.boxes
                .get(id)
                .is_some_and(|v| v.exists() > 0 || v.held() > 0)
        };
        un.tree
            .lookup(name, live)
            .ok_or(ReplicaError::NoSuchMailbox)
    }

    /// A mailbox's view.
    pub fn mailbox(
        &self,
        user: &UserId,
        mailbox: &MailboxId,
    ) -> Result<&MailboxView, ReplicaError> {
        self.unlocked(user)?
            .boxes
            .get(mailbox)
            .ok_or(ReplicaError::NoSuchMailbox)
    }

    /// The number spaces of a mailbox's ledger (for CHANGEDSINCE floors).
    pub fn spaces(&self, user: &UserId, mailbox: &MailboxId) -> Option<&crate::seq::Spaces> {
        self.users.get(user)?.seqs.get(mailbox).map(|s| s.spaces())
    }

    /// A mailbox's sequencer, if it exists (diagnostics, simulator checks).
    pub fn sequencer(&self, user: &UserId, mailbox: &MailboxId) -> Option<&Sequencer> {
        self.users.get(user)?.seqs.get(mailbox)
    }

    /// Encrypts a driver's summary of a message blob (e.g. the IMAP
    /// layer's envelope, structure and header) with the user's master key,
    /// bound to [`Place::Summary`]; the driver stores it where it likes and
    /// reads it back with [`Replica::open_summary`]. The driver's bytes
    /// should carry their own format tag: the blob announcement's sealed
    /// metadata uses the same place.
    pub fn seal_summary<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        user: &UserId,
        blob: &BlobId,
        summary: &[u8],
    ) -> Result<Vec<u8>, ReplicaError> {
        let place = Place::Summary {
            user: *user,
            blob: *blob,
        };
        Ok(self
            .unlocked(user)?
            .secrets
            .master
            .encrypt(rng, &place, summary)?)
    }

    /// Decrypts what [`Replica::seal_summary`] produced for this blob.
    pub fn open_summary(
        &self,
        user: &UserId,
        blob: &BlobId,
        sealed: &[u8],
    ) -> Result<Vec<u8>, ReplicaError> {
        let place = Place::Summary {
            user: *user,
            blob: *blob,
        };
        Ok(self
            .unlocked(user)?
            .secrets
            .master
            .decrypt(&place, sealed)?)
    }

    /// The full bytes of a message.
    pub fn read_blob(&self, user: &UserId, blob: &BlobId) -> Result<Vec<u8>, ReplicaError> {
        let un = self.unlocked(user)?;
        let BlobInfo { len, codec } = *self.users[user]
            .logs
            .blobs()
            .get(blob)
            .ok_or(ReplicaError::BlobMissing)?;
        let n = crate::oplog::chunk_count(len);
        // Each chunk is decrypted from the store's bytes straight into the
        // message (no copy of the chunk, none of its plaintext). A missing
        // chunk is reported before a chunk that fails to open, as when
        // every chunk was read first.
        let cap = usize::try_from(len)
            .unwrap_or(0)
            .min(crate::oplog::CHUNK_BYTES * 4);
        let mut out = Vec::with_capacity(cap);
        let mut sealed: Option<Vec<u8>> = None;
        let mut failed = None;
        for i in 0..n.min(u32::MAX as u64) as u32 {
            let found = self.store.read_chunk(user, blob, i, &mut |bytes| {
                if i == 0 && bytes.get(1) == Some(&KIND_SEALED) {
                    // Delivered sealed: the chunks are pieces of one box.
                    sealed = Some(Vec::with_capacity(cap));
                }
                if let Some(s) = sealed.as_mut() {
                    s.extend_from_slice(bytes);
                } else if failed.is_none() {
                    let place = Place::Blob {
                        user: *user,
                        blob: *blob,
                        chunk: i,
                    };
                    failed = un
                        .secrets
                        .master
                        .decrypt_into(&place, bytes, &mut out)
                        .err();
                }
            })?;
            if !found {
                return Err(ReplicaError::BlobMissing);
            }
        }
        let stored = match (sealed, failed) {
            (Some(sealed), _) => un.secrets.keypair.open_sealed(
                &Place::Sealed {
                    user: *user,
                    blob: *blob,
                },
                &sealed,
            )?,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => out,
        };
        match codec {
            Codec::Raw => Ok(stored),
            Codec::Lz4 => codec::decompress(&stored, MAX_MESSAGE_SIZE)
                .map_err(|e| ReplicaError::Malformed(e.to_string())),
        }
    }

    fn unlocked(&self, user: &UserId) -> Result<&Unlocked, ReplicaError> {
        let u = self.users.get(user).ok_or(ReplicaError::NoSuchUser)?;
        u.unlocked.as_ref().ok_or_else(|| u.not_unlocked())
    }

    /// A mailbox's view about to be fed a decision of `op`: if the op is a
    /// settled flag change or expunge that `assign` would give new values
    /// (a re-decision), its entries are given back from its log first.
    fn view_deciding(
        &mut self,
        user: &UserId,
        mb: &MailboxId,
        op: &OpId,
        assign: &Assign,
    ) -> Option<&mut MailboxView> {
        let u = self.users.get_mut(user)?;
        let un = u.unlocked.as_mut()?;
        let view = un.boxes.get_mut(mb)?;
        if view.lacks_targets(op, assign) {
            give_targets(&u.logs, &un.secrets, view, *mb, *op);
        }
        Some(view)
    }

    /// Whether `op`, in this replica's log of the mailbox, adds `entry`,
    /// changes its flags or expunges it (for the simulator's checks: it
    /// decrypts the op).
    pub fn op_touches(
        &self,
        user: &UserId,
        mailbox: &MailboxId,
        op: &OpId,
        entry: &EntryId,
    ) -> bool {
        let (Some(u), Ok(un)) = (self.users.get(user), self.unlocked(user)) else {
            return false;
        };
        match logged_payload(&u.logs, &un.secrets, *mailbox, op) {
            Some(MailboxOp::Add { entry: added, .. }) => added == *entry,
            Some(p) => p.targets().contains(entry),
            None => false,
        }
    }

    fn view_mut(&mut self, user: &UserId, mb: &MailboxId) -> Option<&mut MailboxView> {
        self.users
            .get_mut(user)?
            .unlocked
            .as_mut()?
            .boxes
            .get_mut(mb)
    }

    // ----- local actions ---------------------------------------------------

    fn new_ticket(&mut self, remaining: usize) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.tickets.insert(
            t,
            TicketState {
                remaining,
                ..Default::default()
            },
        );
        if remaining == 0 {
            self.finish(t);
        }
        t
    }

    fn finish(&mut self, t: Ticket) {
        if let Some(st) = self.tickets.remove(&t) {
            let outcome = if let Some(uid) = st.appended {
                Outcome::Appended {
                    uidvalidity: st.uidvalidity,
                    uid,
                }
            } else if !st.copied.is_empty() {
                Outcome::Copied {
                    uidvalidity: st.uidvalidity,
                    uids: st.copied,
                }
            } else {
                Outcome::Done
            };
            self.out.push(Output::Done { ticket: t, outcome });
        }
    }

    /// Writes an op of this replica: encrypts it, logs it, persists it and
    /// gossips it.
    fn write_op<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        log: LogId,
        uids: u32,
        plaintext: &[u8],
    ) -> Result<Arc<Op>, ReplicaError> {
        let master = self.unlocked(&user)?.secrets.master.clone();
        self.log_op(now, user, log, uids, |place| {
            Ok(master.encrypt(rng, place, plaintext)?)
        })
    }

    /// Appends an op of this replica to a log: its next sequence number, a
    /// payload made for its place by `payload`, persisted, logged, gossiped.
    fn log_op(
        &mut self,
        now: u64,
        user: UserId,
        log: LogId,
        uids: u32,
        payload: impl FnOnce(&Place) -> Result<Vec<u8>, ReplicaError>,
    ) -> Result<Arc<Op>, ReplicaError> {
        let me = self.cfg.me;
        let hlc = self.hlc.now(now);
        let seq = self
            .user_mut(&user)
            .logs
            .log(&log)
            .map_or(0, |l| l.version().get(&me))
            + 1;
        let id = OpId { origin: me, seq };
        let payload = payload(&Place::Op { user, log, op: id })?;
        let op = Arc::new(Op {
            user,
            log,
            id,
            hlc,
            uids,
            payload: payload.into(),
        });
        self.store.put_shared_op(&op)?;
        self.user_mut(&user).logs.insert(op.clone())?;
        for msg in SyncMsg::gossip(vec![op.clone()]) {
            self.out.push(Output::Broadcast {
                user,
                msg: PeerMsg::Sync(msg),
            });
        }
        Ok(op)
    }

    fn write_tree_op<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        t: TreeOp,
    ) -> Result<(), ReplicaError> {
        let bytes =
            postcard::to_allocvec(&t).map_err(|e| ReplicaError::Malformed(e.to_string()))?;
        let op = self.write_op(now, rng, user, LogId::Mailboxes, 0, &bytes)?;
        let u = self.users.get_mut(&user).ok_or(ReplicaError::NoSuchUser)?;
        let gone = u.not_unlocked();
        let un = u.unlocked.as_mut().ok_or(gone)?;
        apply_tree(un, &op, &t);
        self.out.push(Output::MailboxesChanged { user });
        Ok(())
    }

    /// Writes a mailbox op and submits it for sequencing.
    fn write_mailbox_op<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        mb: MailboxId,
        m: MailboxOp,
        pending: Option<Pending>,
    ) -> Result<OpId, ReplicaError> {
        let uids = matches!(m, MailboxOp::Add { .. }) as u32;
        let bytes = postcard::to_extend(&m, Vec::with_capacity(m.approx_bytes()))
            .map_err(|e| ReplicaError::Malformed(e.to_string()))?;
        let op = self.write_op(now, rng, user, LogId::Mailbox(mb), uids, &bytes)?;
        if let Some(p) = pending {
            self.waiting.insert((user, mb, op.id), p);
        }
        if let Some(v) = self.view_mut(&user, &mb) {
            v.on_op(op.id, m, None);
        }
        self.seq_mut(&user, mb).submit(now, op.id, uids);
        self.pump(now, user, mb);
        Ok(op.id)
    }

    fn seq_mut(&mut self, user: &UserId, mb: MailboxId) -> &mut Sequencer {
        let cfg = &self.cfg;
        let u = self.users.entry(*user).or_insert_with(|| User::new(*user));
        // Readers here (commit notices at once) only where the keys are.
        let watching = u.unlocked.is_some();
        u.seqs.entry(mb).or_insert_with(|| {
            let mut s = Sequencer::new(cfg.me, &cfg.members, seq_key(user, &mb), cfg.seq.clone());
            s.set_watching(watching);
            s
        })
    }

    fn existing_mailbox(&self, user: &UserId, mb: &MailboxId) -> Result<(), ReplicaError> {
        let un = self.unlocked(user)?;
        if un.tree.exists(mb) && un.boxes.contains_key(mb) {
            Ok(())
        } else {
            Err(ReplicaError::NoSuchMailbox)
        }
    }

    /// CREATE.
    pub fn create_mailbox<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<MailboxId, ReplicaError> {
        crate::mailbox::tree::validate_name(name)?;
        if self.lookup(&user, name).is_ok() {
            return Err(ReplicaError::AlreadyExists);
        }
        let id = MailboxId::random(rng);
        self.write_tree_op(
            now,
            rng,
            user,
            TreeOp::Create {
                id,
                name: name.to_owned(),
                special_use,
            },
        )?;
        Ok(id)
    }

    /// RENAME.
    pub fn rename_mailbox<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        id: MailboxId,
        name: &str,
    ) -> Result<(), ReplicaError> {
        crate::mailbox::tree::validate_name(name)?;
        self.existing_mailbox(&user, &id)?;
        if self.lookup(&user, name).is_ok() {
            return Err(ReplicaError::AlreadyExists);
        }
        self.write_tree_op(
            now,
            rng,
            user,
            TreeOp::Rename {
                id,
                name: name.to_owned(),
            },
        )
    }

    /// SUBSCRIBE / UNSUBSCRIBE.
    pub fn subscribe<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        id: MailboxId,
        subscribed: bool,
    ) -> Result<(), ReplicaError> {
        self.existing_mailbox(&user, &id)?;
        self.write_tree_op(now, rng, user, TreeOp::Subscribe { id, subscribed })
    }

    /// DELETE: expunges the messages this replica sees, then deletes the
    /// mailbox. A message appended concurrently elsewhere was not seen, so
    /// the mailbox comes back holding it (nothing acknowledged is lost).
    pub fn delete_mailbox<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        id: MailboxId,
    ) -> Result<(), ReplicaError> {
        self.existing_mailbox(&user, &id)?;
        let entries: Vec<EntryId> = self
            .mailbox(&user, &id)?
            .state()
            .live_entries()
            .copied()
            .collect();
        if !entries.is_empty() {
            let m = self.mailbox(&user, &id)?.state().expunge(&entries);
            self.write_mailbox_op(now, rng, user, id, m, None)?;
        }
        self.write_tree_op(now, rng, user, TreeOp::Delete { id })
    }

    /// APPEND (and local delivery): stores the blob in encrypted chunks,
    /// announces it, adds an entry. Done when the message has a UID here.
    pub fn append<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        mailbox: MailboxId,
        message: NewMessage<'_>,
    ) -> Result<Ticket, ReplicaError> {
        let NewMessage {
            raw,
            flags,
            internal_date_ms,
        } = message;
        if raw.len() > MAX_MESSAGE_SIZE {
            return Err(ReplicaError::TooLarge);
        }
        self.existing_mailbox(&user, &mailbox)?;
        let blob = self.write_blob(now, rng, user, raw)?;
        let entry = EntryId::random(rng);
        let add = MailboxOp::Add {
            entry,
            blob,
            flags,
            internal_date_ms,
            size: raw.len() as u32,
        };
        let ticket = self.new_ticket(1);
        self.write_mailbox_op(
            now,
            rng,
            user,
            mailbox,
            add,
            Some(Pending::Append { ticket }),
        )?;
        Ok(ticket)
    }

    fn write_blob<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        raw: &[u8],
    ) -> Result<BlobId, ReplicaError> {
        let blob = BlobId::random(rng);
        let mut len = 0u64;
        let master = &self.unlocked(&user)?.secrets.master;
        let mut chunks = Vec::new();
        let (codec, body) = stored_form(raw);
        for (i, piece) in body.chunks(CHUNK_PLAINTEXT).enumerate() {
            let place = Place::Blob {
                user,
                blob,
                chunk: i as u32,
            };
            let bytes = master.encrypt(rng, &place, piece)?;
            len += bytes.len() as u64;
            chunks.push(BlobChunk {
                user,
                blob,
                index: i as u32,
                bytes: bytes.into(),
            });
        }
        let sealed = master.encrypt(
            rng,
            &Place::Summary { user, blob },
            &postcard::to_allocvec(&BlobMeta {
                size: raw.len() as u64,
            })
            .unwrap_or_default(),
        )?;
        for c in chunks {
            self.push_chunk(c)?;
        }
        self.announce_blob(now, user, blob, len, codec, sealed)?;
        Ok(blob)
    }

    /// Announces a blob in the user's `Blobs` log (id and stored length in
    /// clear, metadata sealed), so that replicas fetch its chunks.
    fn announce_blob(
        &mut self,
        now: u64,
        user: UserId,
        blob: BlobId,
        len: u64,
        codec: Codec,
        meta: Vec<u8>,
    ) -> Result<(), ReplicaError> {
        let announce = BlobAnnounce {
            blob,
            len,
            sealed: meta,
            codec,
        }
        .encode();
        // The announcement itself is not encrypted: replicas without the key
        // need the blob id and length to fetch the chunks.
        self.log_op(now, user, LogId::Blobs, 0, |_| Ok(announce))?;
        Ok(())
    }

    fn entries_of(
        &self,
        user: &UserId,
        mb: &MailboxId,
        uids: &[u32],
    ) -> Result<Vec<(u32, EntryId)>, ReplicaError> {
        let v = self.mailbox(user, mb)?;
        uids.iter()
            .map(|u| {
                v.entry_of(*u)
                    .map(|e| (*u, e))
                    .ok_or(ReplicaError::NoSuchMessage(*u))
            })
            .collect()
    }

    /// STORE: `mode` adds, removes or replaces `flags` on each UID. The
    /// changes (no-ops skipped) go out as ops of up to `flag_batch` entries
    /// each, so that a STORE over many messages costs one encryption, log
    /// append, MODSEQ and gossip per batch instead of per message.
    #[allow(clippy::too_many_arguments)]
    pub fn store_flags<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        mailbox: MailboxId,
        uids: &[u32],
        mode: FlagMode,
        flags: &[Flag],
    ) -> Result<Ticket, ReplicaError> {
        self.store_flags_with(now, rng, user, mailbox, uids, mode, flags, |_, _| {})
    }

    /// [`Replica::store_flags`], telling `written` each op's UIDs (ascending)
    /// with the view just after that op was written and applied, then the
    /// named UIDs that no op changes: a driver can answer a STORE over many
    /// messages op by op while the next ops are made (IMAP lets a server
    /// send its untagged FETCH answers in any order). Every named UID is
    /// told once.
    #[allow(clippy::too_many_arguments)]
    pub fn store_flags_with<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        mailbox: MailboxId,
        uids: &[u32],
        mode: FlagMode,
        flags: &[Flag],
        mut written: impl FnMut(&MailboxView, &[u32]),
    ) -> Result<Ticket, ReplicaError> {
        let mut keys = std::mem::take(&mut self.store_keys);
        let (ops, keys) = {
            let v = self.mailbox(&user, &mailbox)?;
            // In entry order, so that each op's entries are one run of the
            // CRDT's map, which applying it walks instead of searching it
            // per entry (`MailboxState::apply`); which messages share an op
            // (and its MODSEQ) does not matter: all are this command's. What
            // a change needs of a row is copied out in UID order (one pass
            // over the rows) and sorted, instead of reading the rows in
            // entry order (a cache miss each).
            keys.clear();
            keys.extend(
                rows_named(v, uids)?
                    .into_iter()
                    .map(|r| (u128::from_be_bytes(r.entry.0), r.flags, r.uid)),
            );
            keys.sort_unstable_by_key(|k| k.0);
            // Built as they are batched (no list of 100k changes between),
            // the entries that need the state looked up along one walk.
            let ops = match mode {
                FlagMode::Add | FlagMode::Remove => {
                    let adds = mode == FlagMode::Add;
                    let mut ops = v.state().shared_flags(adds, flags, self.cfg.flag_batch);
                    for &(e, bits, _) in keys.iter() {
                        ops.push(EntryId(e.to_be_bytes()), bits);
                    }
                    ops.finish()
                }
                FlagMode::Replace => {
                    let plan = StoreFlags::new(flags);
                    let mut walk = v.state().walk();
                    let changes = keys.iter().map(|&(e, bits, _)| {
                        plan.change(v.state(), &mut walk, EntryId(e.to_be_bytes()), bits)
                    });
                    batch_flags(changes, self.cfg.flag_batch)
                }
            };
            (ops, keys)
        };
        let ticket = self.new_ticket(ops.len());
        // The ops' entries ascend like `keys` (batching keeps the order):
        // one merge gives each op's UIDs and those no op changes.
        let (mut next, mut unchanged, mut op_uids) = (0usize, Vec::new(), Vec::new());
        for m in ops {
            op_uids.clear();
            for e in m.targets() {
                let e = u128::from_be_bytes(e.0);
                while let Some(&(k, _, uid)) = keys.get(next) {
                    next += 1;
                    if k == e {
                        op_uids.push(uid);
                        break;
                    }
                    unchanged.push(uid);
                }
            }
            self.write_mailbox_op(now, rng, user, mailbox, m, Some(Pending::Change { ticket }))?;
            op_uids.sort_unstable();
            written(self.mailbox(&user, &mailbox)?, &op_uids);
        }
        unchanged.extend(keys.get(next..).unwrap_or_default().iter().map(|k| k.2));
        self.store_keys = keys;
        if !unchanged.is_empty() {
            unchanged.sort_unstable();
            written(self.mailbox(&user, &mailbox)?, &unchanged);
        }
        Ok(ticket)
    }

    /// EXPUNGE / UID EXPUNGE of these UIDs.
    pub fn expunge<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        mailbox: MailboxId,
        uids: &[u32],
    ) -> Result<Ticket, ReplicaError> {
        let entries: Vec<EntryId> = self
            .entries_of(&user, &mailbox, uids)?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        if entries.is_empty() {
            return Ok(self.new_ticket(0));
        }
        let m = self.mailbox(&user, &mailbox)?.state().expunge(&entries);
        let ticket = self.new_ticket(1);
        self.write_mailbox_op(now, rng, user, mailbox, m, Some(Pending::Change { ticket }))?;
        Ok(ticket)
    }

    /// COPY: new entries in `to` referencing the same blobs.
    pub fn copy<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<Ticket, ReplicaError> {
        self.copy_inner(now, rng, user, from, uids, to, false)
    }

    /// MOVE: COPY, then expunge the sources; done when both are.
    pub fn move_messages<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<Ticket, ReplicaError> {
        self.copy_inner(now, rng, user, from, uids, to, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_inner<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        user: UserId,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
        expunge: bool,
    ) -> Result<Ticket, ReplicaError> {
        self.existing_mailbox(&user, &to)?;
        let entries = self.entries_of(&user, &from, uids)?;
        let mut adds = Vec::new();
        {
            let v = self.mailbox(&user, &from)?;
            for (uid, e) in &entries {
                let Some(m) = v.message(*uid) else { continue };
                adds.push((
                    *uid,
                    MailboxOp::Add {
                        entry: EntryId::random(rng),
                        blob: m.view.blob,
                        flags: m.view.flags.clone(),
                        internal_date_ms: m.view.internal_date_ms,
                        size: m.view.size,
                    },
                    *e,
                ));
            }
        }
        let ticket = self.new_ticket(adds.len() + (expunge && !adds.is_empty()) as usize);
        let uidvalidity = self.mailbox(&user, &to)?.uidvalidity();
        if let Some(st) = self.tickets.get_mut(&ticket) {
            st.uidvalidity = uidvalidity;
        }
        let sources: Vec<EntryId> = adds.iter().map(|(_, _, e)| *e).collect();
        for (uid, add, _) in adds {
            self.write_mailbox_op(
                now,
                rng,
                user,
                to,
                add,
                Some(Pending::Copy {
                    ticket,
                    src_uid: uid,
                }),
            )?;
        }
        if expunge && !sources.is_empty() {
            let m = self.mailbox(&user, &from)?.state().expunge(&sources);
            self.write_mailbox_op(now, rng, user, from, m, Some(Pending::Change { ticket }))?;
        }
        Ok(ticket)
    }

    // ----- peers and time --------------------------------------------------

    /// A message from replica `from`.
    pub fn handle(&mut self, now: u64, from: ReplicaId, msg: PeerMsg) {
        if from == self.cfg.me || !self.cfg.members.contains(&from) {
            self.dropped += 1;
            return;
        }
        match msg {
            PeerMsg::Seq { user, .. } if self.is_removed(&user) => {}
            PeerMsg::Seq { user, mailbox, msg } => {
                self.seq_mut(&user, mailbox).handle(now, from, msg);
                self.pump(now, user, mailbox);
            }
            PeerMsg::Sync(m) => {
                // Peer input is untrusted: what fails is dropped and counted.
                if self.on_sync(now, from, m).is_err() {
                    self.dropped += 1;
                }
            }
        }
    }

    fn on_sync(&mut self, now: u64, from: ReplicaId, m: SyncMsg) -> Result<(), ReplicaError> {
        m.validate()
            .map_err(|e| ReplicaError::Malformed(e.to_string()))?;
        match m {
            SyncMsg::Have {
                user,
                logs,
                account_version,
            } => {
                let u = self.user_mut(&user);
                let answer = u.logs.answer(&logs, account_version, PAGE_BYTES);
                let have = u.logs.needs(&logs, account_version).then(|| u.logs.have());
                for msg in answer {
                    self.out.push(Output::Send {
                        to: from,
                        msg: PeerMsg::Sync(msg),
                    });
                }
                if let Some(have) = have {
                    self.out.push(Output::Send {
                        to: from,
                        msg: PeerMsg::Sync(have),
                    });
                }
            }
            SyncMsg::WantChunks { user, chunks } => {
                for msg in answer_want_chunks(&self.store, &user, &chunks)? {
                    self.out.push(Output::Send {
                        to: from,
                        msg: PeerMsg::Sync(msg),
                    });
                }
            }
            SyncMsg::Chunk(c) if self.is_removed(&c.user) => {}
            SyncMsg::Chunk(c) => {
                let user = c.user;
                let u = self.user_mut(&user);
                if u.logs.chunk_fits(&c) {
                    if !self.store.has_chunk(&c.user, &c.blob, c.index)? {
                        self.store.put_chunk(&c)?;
                    }
                } else if !u.logs.blobs().contains_key(&c.blob)
                    && self.early_bytes + c.bytes.len() <= EARLY_CHUNK_BYTES
                {
                    self.early_bytes += c.bytes.len();
                    if let Some(old) = self.early_chunks.insert((user, c.blob, c.index), c) {
                        self.early_bytes -= old.bytes.len();
                    }
                }
                // The next request once the last one is answered: chunks
                // flow at one request's worth per round trip.
                if let Some(w) = self.chunk_wants.get_mut(&user) {
                    if w.0 == from {
                        w.1 = w.1.saturating_sub(1);
                        w.2 = now;
                        if w.1 == 0 {
                            self.want_chunks(now, user, from, true);
                        }
                    }
                }
            }
            other => {
                let Some(user) = other.user() else {
                    return Ok(());
                };
                // Gossip comes from the op's origin, which pushed the blob's
                // chunks with it: they are on their way (or arrived early).
                let pushed = matches!(other, SyncMsg::Gossip { .. });
                let received = self
                    .user_mut(&user)
                    .logs
                    .receive(other)
                    .map_err(|e| ReplicaError::Malformed(e.to_string()))?;
                self.dropped += received.rejected.len() as u64;
                if let Some((version, record)) = &received.account {
                    self.store.put_account(&user, *version, record)?;
                    if record.is_empty() {
                        self.forget_user(&user);
                    }
                    self.out.push(Output::AccountChanged { user });
                }
                let mut blobs = false;
                for op in received.new_ops {
                    self.store.put_shared_op(&op)?;
                    if let Err(_e) = self.hlc.observe(op.hlc, now) {
                        // A peer clock far ahead: the op is kept (it is data),
                        // our clock is not dragged forward.
                    }
                    match op.log {
                        LogId::Blobs => blobs = true,
                        LogId::Mailboxes => self.feed_tree_op(now, user, &op),
                        LogId::Mailbox(mb) => {
                            self.seq_mut(&user, mb).note_op(now, op.id, op.uids);
                            self.feed_mailbox_op(now, user, mb, &op);
                        }
                    }
                }
                if blobs {
                    self.take_early_chunks(&user)?;
                    if !pushed {
                        self.want_chunks(now, user, from, false);
                    }
                }
                if received.send_have {
                    let have = self.users[&user].logs.have();
                    self.out.push(Output::Send {
                        to: from,
                        msg: PeerMsg::Sync(have),
                    });
                }
            }
        }
        Ok(())
    }

    /// Stores the early chunks of `user` whose blob is now announced.
    fn take_early_chunks(&mut self, user: &UserId) -> Result<(), ReplicaError> {
        let lo = (*user, BlobId([0; 16]), 0);
        let hi = (*user, BlobId([0xff; 16]), u32::MAX);
        let keys: Vec<(UserId, BlobId, u32)> = self
            .early_chunks
            .range(lo..=hi)
            .filter(|(k, _)| self.users[user].logs.blobs().contains_key(&k.1))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let Some(c) = self.early_chunks.remove(&k) else {
                continue;
            };
            self.early_bytes -= c.bytes.len();
            if self.users[user].logs.chunk_fits(&c)
                && !self.store.has_chunk(user, &c.blob, c.index)?
            {
                self.store.put_chunk(&c)?;
            }
        }
        Ok(())
    }

    fn feed_tree_op(&mut self, now: u64, user: UserId, op: &Op) {
        let Some(un) = self.users.get_mut(&user).and_then(|u| u.unlocked.as_mut()) else {
            return;
        };
        match decrypt_tree_op(&un.secrets, op) {
            Ok(t) => {
                apply_tree(un, op, &t);
                if let TreeOp::Create { id, .. } = t {
                    self.replay(now, user, id);
                }
                self.out.push(Output::MailboxesChanged { user });
            }
            Err(_) => self.dropped += 1,
        }
    }

    /// Feeds a mailbox's view every decision its sequencer holds (after
    /// its Create arrived: its ops waited until then).
    /// A final decision the view already shows at exactly that value, with
    /// nothing left to settle, is skipped (after an unlock, that is every
    /// decision the checkpoint covers).
    fn replay(&mut self, now: u64, user: UserId, mb: MailboxId) {
        let Some(assigns) = self.users.get(&user).and_then(|u| {
            let view = u.unlocked.as_ref().and_then(|un| un.boxes.get(&mb));
            u.seqs.get(&mb).map(|s| {
                s.assignments(|op, a, fate| {
                    fate != Fate::Final || !view.is_some_and(|v| v.is_settled_at(op, a))
                })
            })
        }) else {
            return;
        };
        for (op, a, fate) in assigns {
            let fx = match self.view_deciding(&user, &mb, &op, &a) {
                Some(v) => v.on_decided(op, a, fate),
                None => return,
            };
            self.effects(now, user, mb, fx);
        }
        // Every decision is fed again: what is settled now keeps no entries.
        if let Some(v) = self.view_mut(&user, &mb) {
            v.forget_settled_targets();
        }
        self.pump(now, user, mb);
    }

    fn feed_mailbox_op(&mut self, now: u64, user: UserId, mb: MailboxId, op: &Op) {
        // Most replicas do not hold the user's keys: nothing to look up.
        let Some(u) = self.users.get_mut(&user).filter(|u| u.unlocked.is_some()) else {
            return;
        };
        let decision = u.seqs.get(&mb).and_then(|s| s.final_of(&op.id).cloned());
        let Some(un) = u.unlocked.as_mut() else {
            return;
        };
        let payload = match decrypt_mailbox_op(&un.secrets, op) {
            Ok(p) => p,
            Err(_) => {
                self.dropped += 1;
                return;
            }
        };
        let view = view_for(un, mb);
        let fx = view.on_op(op.id, payload, decision.map(|a| (a, Fate::Final)));
        self.effects(now, user, mb, fx);
        self.pump(now, user, mb);
    }

    /// Time passes: sequencer timers, anti-entropy.
    pub fn tick(&mut self, now: u64) {
        let me = self.cfg.me;
        // Every sequencer ticks; only those with outputs are pumped (one
        // look-up of the user and the mailbox each, not six: this runs for
        // every mailbox of every user at every tick).
        let mut busy: Vec<(UserId, MailboxId)> = Vec::new();
        for (user, us) in self.users.iter_mut() {
            let User {
                seqs,
                marks,
                unlocked,
                ..
            } = us;
            for (mb, seq) in seqs.iter_mut() {
                let exposed = marks.get(mb).copied().unwrap_or((0, 0));
                // Own ops with a final value the view does not show yet may
                // get provisional values (L1); the others are settled.
                // (The view's list is built only when the sequencer keeps
                // such ops: most ticks it has none, and the list can be
                // long.)
                if seq.is_settling() {
                    let view = unlocked.as_ref().and_then(|un| un.boxes.get(mb));
                    let unshown: HashSet<OpId> = view
                        .map(|v| {
                            v.unshown_finals()
                                .filter(|op| op.origin == me)
                                .copied()
                                .collect()
                        })
                        .unwrap_or_default();
                    seq.settle(|op| unshown.contains(op));
                } else {
                    seq.settle(|_| false);
                }
                seq.tick(now, exposed);
                if seq.has_output() {
                    busy.push((*user, *mb));
                }
            }
        }
        for (user, mb) in busy {
            self.pump(now, user, mb);
        }
        if now.saturating_sub(self.last_sync) >= self.cfg.anti_entropy_ms {
            self.last_sync = now;
            let peers: Vec<ReplicaId> = self
                .cfg
                .members
                .iter()
                .copied()
                .filter(|m| *m != self.cfg.me)
                .collect();
            if !peers.is_empty() {
                let to = peers[self.peer_turn % peers.len()];
                self.peer_turn += 1;
                // Chunks still missing (a push lost or dropped before its
                // announce, a request unanswered) are asked of this round's
                // peer, unless a request is in progress.
                let users: Vec<UserId> = self.users.keys().copied().collect();
                for user in users {
                    self.want_chunks(now, user, to, false);
                }
                self.sync_with(to);
            }
        }
    }

    /// Runs a mailbox's sequencer outputs to completion.
    fn pump(&mut self, now: u64, user: UserId, mb: MailboxId) {
        loop {
            let outs = match self.users.get_mut(&user).and_then(|u| u.seqs.get_mut(&mb)) {
                Some(s) => s.drain(),
                None => return,
            };
            if outs.is_empty() {
                return;
            }
            for o in outs {
                match o {
                    SeqOutput::Persist(r) => self.put_record(TAG_SEQ, user, mb, &r),
                    SeqOutput::Send { to, msg } => self.out.push(Output::Send {
                        to,
                        msg: PeerMsg::Seq {
                            user,
                            mailbox: mb,
                            msg,
                        },
                    }),
                    SeqOutput::Broadcast(msg) => self.out.push(Output::Broadcast {
                        user,
                        msg: PeerMsg::Seq {
                            user,
                            mailbox: mb,
                            msg,
                        },
                    }),
                    SeqOutput::Decided { op, assign, fate } => {
                        let fx = match self.view_deciding(&user, &mb, &op, &assign) {
                            Some(v) => v.on_decided(op, assign, fate),
                            None => match self.sealed_waiting.remove(&(user, mb, op)) {
                                true => vec![Effect::Shown { op, assign }],
                                false => Vec::new(),
                            },
                        };
                        self.effects(now, user, mb, fx);
                    }
                }
            }
        }
    }

    /// Encodes a sequencer or view record into the reusable buffer and
    /// writes it under the next record number.
    fn put_record(&mut self, tag: u8, user: UserId, mb: MailboxId, record: &impl Serialize) {
        let mut bytes = std::mem::take(&mut self.record_buf);
        bytes.clear();
        let bytes = postcard::to_extend(record, bytes).unwrap_or_default();
        // `prefix(tag, user, mailbox)` and the number, on the stack.
        let mut k = [0u8; 1 + 16 + 16 + 8];
        k[0] = tag;
        k[1..17].copy_from_slice(&user.0);
        k[17..33].copy_from_slice(&mb.0);
        k[33..].copy_from_slice(&self.record_no.to_be_bytes());
        self.record_no += 1;
        // A failed write surfaces at the driver's flush, which then does not
        // release this batch's outputs.
        let _ = self.store.put_meta(&k, &bytes);
        self.record_buf = bytes;
    }

    fn effects(&mut self, now: u64, user: UserId, mb: MailboxId, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::Event(event) => self.out.push(Output::Event {
                    user,
                    mailbox: mb,
                    event,
                }),
                Effect::Resequence { op, above } => {
                    self.seq_mut(&user, mb)
                        .request_resequence(now, op, above.0, above.1);
                }
                Effect::Persist(p) => {
                    match p {
                        Persisted::Marks(a, b) => {
                            self.user_mut(&user).marks.insert(mb, (a, b));
                        }
                        Persisted::Shown(..) => {
                            if let Some(un) = self.user_mut(&user).unlocked.as_mut() {
                                *un.since_checkpoint.entry(mb).or_insert(0) += 1;
                            }
                        }
                    }
                    self.put_record(TAG_VIEW, user, mb, &p);
                }
                Effect::Shown { op, assign } => {
                    let Some(p) = self.waiting.remove(&(user, mb, op)) else {
                        continue;
                    };
                    let t = p.ticket();
                    let uidvalidity = self
                        .mailbox(&user, &mb)
                        .map(|v| v.uidvalidity())
                        .unwrap_or(1);
                    if let Some(st) = self.tickets.get_mut(&t) {
                        match p {
                            Pending::Append { .. } => {
                                st.uidvalidity = uidvalidity;
                                st.appended = assign.uids.first().copied();
                            }
                            Pending::Copy { src_uid, .. } => {
                                if let Some(&u) = assign.uids.first() {
                                    st.copied.push((src_uid, u));
                                }
                            }
                            Pending::Change { .. } => {}
                        }
                        st.remaining = st.remaining.saturating_sub(1);
                        if st.remaining == 0 {
                            self.finish(t);
                        }
                    }
                }
            }
        }
    }
}

/// A message to append.
#[derive(Clone, Debug)]
pub struct NewMessage<'a> {
    /// The full RFC 5322 bytes.
    pub raw: &'a [u8],
    /// Initial flags.
    pub flags: Vec<Flag>,
    /// INTERNALDATE, ms since the Unix epoch.
    pub internal_date_ms: i64,
}

fn record_no(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|i| key.get(i..))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

fn key_mailbox(key: &[u8]) -> Option<MailboxId> {
    key.get(17..33)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(MailboxId)
}

fn decrypt_tree_op(secrets: &UserSecrets, op: &Op) -> Result<TreeOp, ReplicaError> {
    let plain = secrets.master.decrypt(
        &Place::Op {
            user: op.user,
            log: op.log,
            op: op.id,
        },
        &op.payload,
    )?;
    postcard::from_bytes(&plain).map_err(|e| ReplicaError::Malformed(e.to_string()))
}

fn decrypt_mailbox_op(secrets: &UserSecrets, op: &Op) -> Result<MailboxOp, ReplicaError> {
    let place = Place::Op {
        user: op.user,
        log: op.log,
        op: op.id,
    };
    let plain = if op.payload.get(1) == Some(&KIND_SEALED) {
        // A delivery made without the user's keys: only an Add may be sealed.
        let plain = secrets.keypair.open_sealed(&place, &op.payload)?;
        return match postcard::from_bytes(&plain) {
            Ok(m @ MailboxOp::Add { .. }) => Ok(m),
            _ => Err(ReplicaError::Malformed(
                "sealed op is not a delivery".into(),
            )),
        };
    } else {
        secrets.master.decrypt(&place, &op.payload)?
    };
    postcard::from_bytes(&plain).map_err(|e| ReplicaError::Malformed(e.to_string()))
}

/// UIDVALIDITY of a mailbox: the second it was created (RFC 3501's advice),
/// so a mailbox deleted and created again under the same name gets a new one.
fn uidvalidity_of(created: Timestamp) -> u32 {
    ((created.wall_ms() / 1000).min(u32::MAX as u64) as u32).max(1)
}

/// UIDVALIDITY of a mailbox on this replica: INBOX's is derived from the
/// user id (two replicas may create INBOX at once, and INBOX is never
/// deleted); another mailbox's is the second of its creation; 0 while its
/// Create has not arrived (nothing is shown until it has).
fn uidvalidity_for(un: &Unlocked, mb: MailboxId) -> u32 {
    if mb == MailboxId::inbox_of(&un.user) {
        let b = un.user.0;
        return (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff) | 1;
    }
    un.created.get(&mb).map_or(0, |t| uidvalidity_of(*t))
}

/// Gives a view back the entries of a shown op it dropped when the op
/// settled, from the op's payload in its log.
fn give_targets(
    logs: &UserLogs,
    secrets: &UserSecrets,
    view: &mut MailboxView,
    mb: MailboxId,
    op: OpId,
) {
    if let Some(p) = logged_payload(logs, secrets, mb, &op) {
        view.set_targets(op, p.targets());
    }
}

/// The payload of a mailbox op this replica holds, decrypted.
fn logged_payload(
    logs: &UserLogs,
    secrets: &UserSecrets,
    mb: MailboxId,
    op: &OpId,
) -> Option<MailboxOp> {
    let op = logs.log(&LogId::Mailbox(mb))?.get(op)?;
    decrypt_mailbox_op(secrets, op).ok()
}

fn view_for(un: &mut Unlocked, mb: MailboxId) -> &mut MailboxView {
    let uv = uidvalidity_for(un, mb);
    un.boxes.entry(mb).or_insert_with(|| MailboxView::new(uv))
}

fn apply_tree(un: &mut Unlocked, op: &Op, t: &TreeOp) {
    if un.tree.apply((op.hlc, op.id), t).is_err() {
        return;
    }
    if let TreeOp::Create { id, .. } = t {
        let first = un.created.get(id).is_none_or(|c| op.hlc < *c);
        if first {
            un.created.insert(*id, op.hlc);
        }
        let fresh = un
            .boxes
            .get(id)
            .is_none_or(|v| v.exists() == 0 && v.highest_modseq() == 0);
        if fresh {
            let uv = uidvalidity_for(un, *id);
            let v = un.boxes.remove(id).unwrap_or_default().with_uidvalidity(uv);
            un.boxes.insert(*id, v);
        }
    }
}

#[cfg(test)]
mod tests;
