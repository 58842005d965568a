//! The node's core: one thread owns the [`Replica`] and its sled store and
//! runs every change to them, in batches. A batch is run, the store is
//! flushed **once**, and only then are the batch's answers released: this is
//! the group commit that makes an APPEND OK or an LMTP 250 durable without
//! one fsync per message. IMAP sessions, LMTP sessions and the
//! network talk to the core through a cloneable [`CoreHandle`].

mod imap_backend;
mod lmtp_backend;
mod record_cache;
mod select_cache;

pub use imap_backend::{ImapBackend, UserMailboxes};
pub use lmtp_backend::{LmtpBackend, LmtpRecipient};
pub use select_cache::SelectCache;

use crate::accounts::Accounts;
use crate::imap::backend::Events;
use crate::p2p::{NetOut, NetSink};
use crate::store::SledStore;
use aerogramme_proto::ids::{MailboxId, ReplicaId, UserId};
use aerogramme_proto::replica::{
    Config as ReplicaConfig, Event, Outcome, Output, PeerMsg, Replica, Ticket,
};
use aerogramme_proto::store::Store;
use aerogramme_proto::sync::SyncMsg;
use rand_chacha::rand_core::{OsRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// How often the replica's timers run.
const TICK: Duration = Duration::from_millis(20);
/// Most jobs run in one batch (between two flushes).
const MAX_BATCH: usize = 512;
/// How long a user's keys stay unlocked after their last session ended.
const LOCK_GRACE: Duration = Duration::from_secs(60);
/// Event batches (one per core step that changed the mailbox) buffered per
/// selected mailbox before a slow session must resync.
const EVENT_BUFFER: usize = 4096;

/// A unit of work run on the core thread.
type Job = Box<dyn FnOnce(&mut CoreState) + Send>;

/// What a job leaves to run once the batch is durable.
type AfterFlush = Box<dyn FnOnce(Result<(), String>) + Send>;

/// What waits for a local action's outcome.
type OnDone = Box<dyn FnOnce(&mut CoreState, Result<Outcome, String>) + Send>;

/// The state the core thread owns.
pub struct CoreState {
    /// The replica.
    pub replica: Replica<SledStore>,
    /// Randomness for the replica (seeded from the OS at start).
    pub rng: ChaCha20Rng,
    after_flush: Vec<AfterFlush>,
    on_done: HashMap<Ticket, OnDone>,
    events: HashMap<(UserId, MailboxId), broadcast::Sender<Events>>,
    sessions: HashMap<UserId, usize>,
    idle_since: HashMap<UserId, Instant>,
    stopping: bool,
    net: Option<NetSink>,
    accounts: Option<Accounts>,
    /// Unlocked users' common search fields, in memory (dropped at lock).
    fields_cache: imap_backend::FieldsCache,
    /// Unlocked users' summaries, in memory (dropped at lock).
    summary_cache: imap_backend::SummaryCache,
    /// SELECT answers published for sessions (see [`select_cache`]).
    selects: Arc<SelectCache>,
    /// SELECT answers of this batch, published once it is durable.
    staged_selects: Vec<select_cache::Staged>,
}

/// Prefix of the meta keys remembering the community's members:
/// `node/members/` ‖ replica id (8 bytes, big-endian) → postcard of
/// [`Member`].
pub const MEMBERS_PREFIX: &[u8] = b"node/members/";

/// A member of the community as remembered.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its libp2p peer id (bytes).
    pub peer_id: Vec<u8>,
    /// Addresses it was reached at or listens on.
    pub addresses: Vec<String>,
}

/// The members remembered in `store` (not this node).
pub fn load_members(store: &SledStore) -> Vec<(ReplicaId, Member)> {
    let Ok(records) = store.scan_meta(MEMBERS_PREFIX) else {
        return Vec::new();
    };
    records
        .into_iter()
        .filter_map(|(k, v)| {
            let id = <[u8; 8]>::try_from(k.get(MEMBERS_PREFIX.len()..)?).ok()?;
            let m = postcard::from_bytes::<Member>(&v).ok()?;
            Some((ReplicaId(u64::from_be_bytes(id)), m))
        })
        .collect()
}

/// Most addresses remembered per member.
const MAX_MEMBER_ADDRESSES: usize = 8;

impl CoreState {
    /// Milliseconds since the Unix epoch (the replica's `now`).
    pub fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Runs `f` once the current batch is durable (with the flush's result).
    pub fn after_flush(&mut self, f: impl FnOnce(Result<(), String>) + Send + 'static) {
        self.after_flush.push(Box::new(f));
    }

    /// Runs `f` when the action `ticket` is done (after the flush that made
    /// it durable), or failed.
    pub fn on_done(
        &mut self,
        ticket: Ticket,
        f: impl FnOnce(&mut CoreState, Result<Outcome, String>) + Send + 'static,
    ) {
        self.on_done.insert(ticket, Box::new(f));
    }

    /// Keeps a SELECT's answer, to publish once this batch is durable.
    pub fn stage_select(
        &mut self,
        user: UserId,
        name: String,
        id: MailboxId,
        snapshot: crate::imap::backend::Snapshot,
    ) {
        self.staged_selects.push(select_cache::Staged {
            user,
            name,
            id,
            snapshot,
        });
    }

    /// A receiver of a mailbox's events (subscribe before reading a snapshot).
    pub fn subscribe(&mut self, user: UserId, mailbox: MailboxId) -> broadcast::Receiver<Events> {
        self.events
            .entry((user, mailbox))
            .or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
            .subscribe()
    }

    /// A session of `user` began.
    pub fn session_opened(&mut self, user: UserId) {
        *self.sessions.entry(user).or_insert(0) += 1;
        self.idle_since.remove(&user);
    }

    /// A session of `user` ended; its keys are dropped after a grace period
    /// once no session is left.
    pub fn session_closed(&mut self, user: UserId) {
        let n = self.sessions.entry(user).or_insert(1);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.sessions.remove(&user);
            self.idle_since.insert(user, Instant::now());
        }
    }

    /// A peer completed the handshake (it holds the network key): it is a
    /// member of the community from now on, remembered with its addresses;
    /// an anti-entropy round with it starts at once.
    pub fn peer_connected(&mut self, peer: libp2p::PeerId, replica: ReplicaId, addrs: Vec<String>) {
        let key = [MEMBERS_PREFIX, &replica.0.to_be_bytes()].concat();
        let mut member = self
            .replica
            .store()
            .get_meta(&key)
            .ok()
            .flatten()
            .and_then(|v| postcard::from_bytes::<Member>(&v).ok())
            .unwrap_or(Member {
                peer_id: peer.to_bytes(),
                addresses: Vec::new(),
            });
        let before = member.clone();
        for a in addrs {
            if !member.addresses.contains(&a) {
                member.addresses.push(a);
            }
        }
        let n = member.addresses.len();
        if n > MAX_MEMBER_ADDRESSES {
            member.addresses.drain(..n - MAX_MEMBER_ADDRESSES);
        }
        let added = self.replica.add_member(replica);
        if added || member != before {
            if let Ok(v) = postcard::to_allocvec(&member) {
                if let Err(e) = self.replica.store().put_meta(&key, &v) {
                    tracing::warn!("remembering a member: {e}");
                }
            }
        }
        if added {
            tracing::info!(%replica, "new member of the community");
            self.replica.sync_with(replica);
        }
    }

    /// A newer account record arrived from a peer: the login name it
    /// carries is entered in this node's directory, so the user can log in
    /// here too.
    fn account_arrived(&mut self, user: UserId) {
        let Some(accounts) = &self.accounts else {
            return;
        };
        if let Err(e) = accounts.adopt(&user) {
            tracing::warn!(%user, "replicated account: {e}");
        }
        if self.replica.is_removed(&user) {
            self.forget_user(&user);
            return;
        }
        if let Some(net) = &self.net {
            let _ = net.send(NetOut::Subscribe(user));
        }
    }

    /// Removes `user` (removed from the directory here, tombstone of
    /// `version` stored): the replica forgets the user and sends the
    /// tombstone to the community; the user's records go from the store.
    pub fn remove_account(&mut self, user: UserId, version: u64) {
        if let Err(e) = self.replica.remove_account(user, version) {
            tracing::warn!(%user, "removing a user: {e}");
        }
        if let Some(accounts) = &self.accounts {
            // Ops the replica stored since the directory entry went.
            if let Err(e) = accounts.forget(&user) {
                tracing::warn!(%user, "removing a user: {e}");
            }
        }
        self.forget_user(&user);
    }

    /// Drops what the core keeps of a removed user. Its sessions end with
    /// `BYE`: at their next command (the replica answers that the user is
    /// gone), or at once when a mailbox is selected (its event stream
    /// closes, which wakes IDLE).
    fn forget_user(&mut self, user: &UserId) {
        self.selects.forget(user);
        self.events.retain(|(u, _), _| u != user);
        self.idle_since.remove(user);
        self.fields_cache.forget(user);
        self.summary_cache.forget(user);
    }

    /// Sends this node's account record of `user` to the community (a user
    /// added or a password changed here).
    pub fn announce_account(&mut self, user: UserId) {
        match self.replica.store().get_account(&user) {
            Ok(Some((version, record))) => {
                if let Err(e) = self.replica.set_account(user, version, record) {
                    tracing::warn!(%user, "announcing an account: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%user, "announcing an account: {e}"),
        }
    }

    fn lock_idle_users(&mut self) {
        let now = Instant::now();
        let idle: Vec<UserId> = self
            .idle_since
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= LOCK_GRACE)
            .map(|(u, _)| *u)
            .collect();
        for user in idle {
            self.idle_since.remove(&user);
            // Checkpoint first, so that the next login replays little.
            if let Err(e) = self.replica.checkpoint_all(&mut self.rng) {
                tracing::warn!("checkpoint before lock: {e}");
            }
            self.replica.lock(&user);
            self.fields_cache.forget(&user);
            self.summary_cache.forget(&user);
            self.selects.forget(&user);
            self.events
                .retain(|(u, _), tx| *u != user || tx.receiver_count() > 0);
            tracing::debug!(%user, "keys dropped");
        }
    }
}

/// A cloneable handle to the core.
#[derive(Clone)]
pub struct CoreHandle {
    tx: mpsc::Sender<Job>,
    selects: Arc<SelectCache>,
}

/// The core is gone (the node is stopping).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the node is shutting down")]
pub struct CoreGone;

impl CoreHandle {
    /// The SELECT answers the core publishes.
    pub fn selects(&self) -> &SelectCache {
        &self.selects
    }

    /// Runs `job` on the core thread.
    pub fn run(&self, job: impl FnOnce(&mut CoreState) + Send + 'static) -> Result<(), CoreGone> {
        self.tx.send(Box::new(job)).map_err(|_| CoreGone)
    }

    /// Runs `f` on the core thread and returns its answer once the batch it
    /// ran in is durable.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut CoreState) -> T + Send + 'static,
    ) -> Result<T, CoreGone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.run(move |st| {
            let v = f(st);
            st.after_flush(move |flushed| {
                let _ = tx.send(flushed.map(|()| v));
            });
        })?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            _ => Err(CoreGone),
        }
    }
}

impl CoreHandle {
    /// Runs `f` on the core thread and waits (blocking, at most `timeout`)
    /// for its answer, for callers outside the async runtime.
    pub fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut CoreState) -> T + Send + 'static,
        timeout: Duration,
    ) -> Result<T, CoreGone> {
        let (tx, rx) = mpsc::channel();
        self.run(move |st| {
            let _ = tx.send(f(st));
        })?;
        rx.recv_timeout(timeout).map_err(|_| CoreGone)
    }
}

/// The running core.
pub struct Core {
    handle: CoreHandle,
    thread: Option<JoinHandle<()>>,
}

impl Core {
    /// Starts the core thread over `store` (every user locked), alone.
    pub fn start(
        me: ReplicaId,
        store: SledStore,
    ) -> Result<Core, aerogramme_proto::replica::ReplicaError> {
        Self::start_with_network(me, store, None, None)
    }

    /// Starts the core thread over `store`, among the members it remembers;
    /// what goes to peers is sent to `net`, and account records from peers
    /// enter `accounts`' directory.
    pub fn start_with_network(
        me: ReplicaId,
        store: SledStore,
        net: Option<NetSink>,
        accounts: Option<Accounts>,
    ) -> Result<Core, aerogramme_proto::replica::ReplicaError> {
        let mut members = vec![me];
        members.extend(load_members(&store).into_iter().map(|(r, _)| r));
        let cfg = ReplicaConfig::new(me, members);
        let replica = Replica::restore(cfg, store)?;
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let state = CoreState {
            replica,
            rng: ChaCha20Rng::from_seed(seed),
            after_flush: Vec::new(),
            on_done: HashMap::new(),
            events: HashMap::new(),
            sessions: HashMap::new(),
            idle_since: HashMap::new(),
            stopping: false,
            net,
            accounts,
            fields_cache: imap_backend::FieldsCache::new(imap_backend::FIELDS_CACHE_BYTES),
            summary_cache: imap_backend::SummaryCache::new(imap_backend::SUMMARY_CACHE_BYTES),
            selects: Arc::new(SelectCache::default()),
            staged_selects: Vec::new(),
        };
        let selects = state.selects.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("aerogramme-core".into())
            .spawn(move || run(state, rx))
            .map_err(|e| aerogramme_proto::replica::ReplicaError::Malformed(e.to_string()))?;
        Ok(Core {
            handle: CoreHandle { tx, selects },
            thread: Some(thread),
        })
    }

    /// A handle for sessions.
    pub fn handle(&self) -> CoreHandle {
        self.handle.clone()
    }

    /// Stops the core after the jobs already queued, with a last
    /// checkpoint and flush.
    pub fn stop(mut self) {
        let _ = self.handle.run(|st| st.stopping = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut st: CoreState, rx: mpsc::Receiver<Job>) {
    let mut last_tick = Instant::now() - TICK;
    let mut batch: Vec<Job> = Vec::new();
    loop {
        match rx.recv_timeout(TICK) {
            Ok(job) => batch.push(job),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        for job in batch.drain(..) {
            job(&mut st);
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            st.replica.tick(CoreState::now());
            if let Err(e) = st.replica.checkpoint(&mut st.rng) {
                tracing::warn!("checkpoint: {e}");
            }
            st.lock_idle_users();
        }
        finish_batch(&mut st);
        if st.stopping {
            break;
        }
    }
    let _ = st.replica.checkpoint_all(&mut st.rng);
    finish_batch(&mut st);
    tracing::debug!("core stopped");
}

/// The events of one core step, by mailbox, in order: each mailbox's go
/// to its sessions as one channel message, so that a STORE over 100k
/// messages does not overrun the channel (a lagging session resyncs from
/// a snapshot) nor lock it once per message.
#[derive(Default)]
struct EventBatches(Vec<((UserId, MailboxId), Vec<Event>)>);

impl EventBatches {
    fn push(&mut self, key: (UserId, MailboxId), event: Event) {
        // Few mailboxes change in one step: a scan beats hashing.
        match self.0.iter_mut().rev().find(|(k, _)| *k == key) {
            Some((_, evs)) => evs.push(event),
            None => self.0.push((key, vec![event])),
        }
    }

    /// Sends each mailbox's batch to its sessions, if any.
    fn send(self, senders: &HashMap<(UserId, MailboxId), broadcast::Sender<Events>>) {
        for (key, evs) in self.0 {
            if let Some(tx) = senders.get(&key) {
                let _ = tx.send(Events::from(evs));
            }
        }
    }
}

/// Flushes once, then releases the batch's outputs: events first (so a
/// session sees its own change before its command completes), then the
/// answers.
fn finish_batch(st: &mut CoreState) {
    let flushed = st.replica.store_mut().flush().map_err(|e| e.to_string());
    if let Err(e) = &flushed {
        tracing::error!("flush failed, answers of this batch are errors: {e}");
    }
    let outputs = st.replica.drain();
    let mut done = Vec::new();
    // Broadcasts go out together, per user, in order, and before the
    // messages to single replicas (which often refer to what they carry).
    let mut broadcasts: Vec<(UserId, Vec<Vec<u8>>)> = Vec::new();
    let mut sends = Vec::new();
    let mut events = EventBatches::default();
    for o in outputs {
        match o {
            Output::Event {
                user,
                mailbox,
                event,
            } => events.push((user, mailbox), event),
            Output::Done { ticket, outcome } => done.push((ticket, outcome)),
            Output::Send { to, msg } => {
                if let PeerMsg::Seq { .. } = &msg {
                    tracing::trace!(target: "aerogramme::seq", %to, ?msg, "sent");
                }
                sends.push(NetOut::send(to, &msg))
            }
            // Message chunks, and the sequencing protocol's messages to
            // every member, go directly to each connected member: gossipsub
            // would also forward them between the receivers.
            Output::Broadcast {
                msg: msg @ (PeerMsg::Sync(SyncMsg::Chunk(_)) | PeerMsg::Seq { .. }),
                ..
            } => {
                if let PeerMsg::Seq { .. } = &msg {
                    tracing::trace!(target: "aerogramme::seq", ?msg, "sent to each");
                }
                sends.push(NetOut::ToEach {
                    bytes: msg.encode(),
                    detour: matches!(msg, PeerMsg::Seq { .. }),
                })
            }
            Output::Broadcast { user, msg } => {
                match broadcasts.iter_mut().find(|(u, _)| *u == user) {
                    Some((_, msgs)) => msgs.push(msg.encode()),
                    None => broadcasts.push((user, vec![msg.encode()])),
                }
            }
            Output::AccountChanged { user } => st.account_arrived(user),
            Output::MailboxesChanged { .. } => {}
        }
    }
    // Entries of mailboxes this batch changed go before its events do.
    st.selects.retain_current(&st.replica);
    events.send(&st.events);
    let staged = std::mem::take(&mut st.staged_selects);
    if flushed.is_ok() {
        st.selects.publish(&st.replica, staged, &st.events);
    }
    if let Some(net) = &st.net {
        for (user, msgs) in broadcasts {
            let _ = net.send(NetOut::Broadcast { user, msgs });
        }
        for m in sends {
            let _ = net.send(m);
        }
    }
    for (ticket, outcome) in done {
        if let Some(f) = st.on_done.remove(&ticket) {
            let r = flushed.clone().map(|()| outcome);
            f(st, r);
        }
    }
    for f in std::mem::take(&mut st.after_flush) {
        f(flushed.clone());
    }
}
