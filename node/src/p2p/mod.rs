//! Replication between the nodes of a community, over libp2p.
//!
//! The swarm runs in one tokio task. It carries the replica's outputs:
//!
//! * `Output::Broadcast` of new ops goes to each member on its live stream
//!   when every member is connected; otherwise it is published on the
//!   user's gossipsub topic (an opaque name derived from the user id,
//!   messages unsigned); when no peer has subscribed yet it goes to every
//!   connected peer directly instead.
//! * `Output::Send` of anti-entropy's answers goes to one peer on the
//!   request-response protocol of [`wire`]; of the sequencing protocol
//!   (forwards to a ledger owner, votes, heartbeats) and `Have`, on the
//!   peer's live stream ([`live`]: one long-lived stream per peer, since a
//!   request per small message costs a substream and a protocol negotiation
//!   each).
//! * Message chunks and sequencing broadcasts go to each connected member
//!   on its live stream (gossipsub would also forward them between the
//!   receivers).
//!
//! and hands what peers send to the core, which feeds the replica. A peer
//! that sends a malformed or oversized message is disconnected.
//!
//! **Membership.** A peer that completes the handshake holds the network
//! key (and, when one is configured, is on the allow-list); once identify
//! shows it runs this protocol, the core adds it to the replica's members
//! and remembers it (with its addresses, so a restarted node dials it
//! again).
//!
//! **Flow control.** Live traffic has its own stream per peer, so a peer
//! catching up on gigabytes does not delay new mail. Requests have two
//! queues per peer, *live* (`Have`) and *bulk* (op pages and blob chunks of
//! a catch-up), and at most [`MAX_IN_FLIGHT`] requests without a receipt;
//! `Have` goes first; the bulk queue is bounded, and what it drops
//! anti-entropy asks for again.

pub mod behaviour;
pub mod detour;
pub mod live;
pub mod transport;
pub mod wire;

use crate::core::CoreHandle;
use crate::identity::replica_of;
use aerogramme_proto::ids::LogId;
use aerogramme_proto::ids::{ReplicaId, UserId};
use aerogramme_proto::oplog::LogVersion;
use aerogramme_proto::replica::PeerMsg;
use aerogramme_proto::sync::SyncMsg;
use behaviour::{Behaviour, BehaviourEvent, Options};
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, mdns, ping, request_response, Multiaddr, PeerId, Swarm};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

/// Requests to one peer without a receipt yet.
pub const MAX_IN_FLIGHT: usize = 32;
/// Bulk messages queued per peer before the oldest are dropped.
const MAX_BULK_QUEUE: usize = 1024;
/// Live messages queued per peer before the oldest are dropped.
const MAX_LIVE_QUEUE: usize = 8192;
/// First and longest delay between two dials of a bootstrap address.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often Kademlia looks for more peers (and shortly after a new
/// connection, which is how a node that joined one peer meets the others).
const KAD_BOOTSTRAP: Duration = Duration::from_secs(60);
const KAD_AFTER_CONNECT: Duration = Duration::from_millis(200);
/// How long a node holds valid gossip before gossipsub forwards it to its
/// mesh peers. Meanwhile those that received it from the publisher too say
/// so (IDONTWANT) and get no copy: in a community whose nodes all connect
/// to each other, an op batch crosses each link once instead of once per
/// direction. Only members not connected to the publisher wait for it.
const RELAY_DELAY: Duration = Duration::from_millis(25);

/// What the core hands to the network (encoded messages).
#[derive(Debug)]
pub enum NetOut {
    /// To one replica, as a request with a receipt (anti-entropy).
    Send {
        /// Destination.
        to: ReplicaId,
        /// The encoded [`PeerMsg`].
        bytes: Vec<u8>,
        /// Catch-up traffic (yields to live traffic).
        bulk: bool,
    },
    /// To one replica, on the live stream (sequencing messages).
    Live {
        /// Destination.
        to: ReplicaId,
        /// The encoded [`PeerMsg`].
        bytes: Vec<u8>,
        /// A sequencing message: it takes a detour through other members
        /// when `to` is not connected ([`detour`]).
        detour: bool,
    },
    /// To every replica serving the user.
    Broadcast {
        /// User.
        user: UserId,
        /// The encoded [`PeerMsg`]s, in order (sent in as few gossip
        /// messages as their size allows).
        msgs: Vec<Vec<u8>>,
    },
    /// Directly to every connected member on the live streams, not by
    /// gossip: for message chunks and sequencing broadcasts, which
    /// gossipsub would also forward between the receivers (each crossing
    /// every link of the mesh instead of reaching each node once). A member
    /// not connected now gets them by anti-entropy or the sequencing
    /// protocol's retries.
    ToEach {
        /// The encoded [`PeerMsg`].
        bytes: Vec<u8>,
        /// A sequencing message: members not connected get it through
        /// others ([`detour`]).
        detour: bool,
    },
    /// This node serves `user`: listen on its topic.
    Subscribe(UserId),
}

impl NetOut {
    /// The network form of a replica output addressed to one peer:
    /// sequencing messages on the live stream, anti-entropy as requests.
    pub fn send(to: ReplicaId, msg: &PeerMsg) -> NetOut {
        // A `Have` is small and periodic: as a request it cost a substream,
        // a protocol negotiation and a receipt, several times its size.
        if let PeerMsg::Seq { .. } | PeerMsg::Sync(SyncMsg::Have { .. }) = msg {
            return NetOut::Live {
                to,
                bytes: msg.encode(),
                detour: matches!(msg, PeerMsg::Seq { .. }),
            };
        }
        let bulk = matches!(
            msg,
            PeerMsg::Sync(SyncMsg::Ops { .. } | SyncMsg::Chunk(_) | SyncMsg::WantChunks { .. })
        );
        NetOut::Send {
            to,
            bytes: msg.encode(),
            bulk,
        }
    }
}

/// Where the core sends [`NetOut`]s.
pub type NetSink = mpsc::UnboundedSender<NetOut>;

/// Configuration of the peer-to-peer layer.
pub struct P2pConfig {
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Bootstrap addresses (dialled with backoff until connected).
    pub join: Vec<Multiaddr>,
    /// Peers remembered from earlier runs, with their addresses.
    pub known: Vec<(PeerId, Vec<Multiaddr>)>,
    /// The community's pre-shared key.
    pub network_key: Zeroizing<[u8; 32]>,
    /// Allowed peer ids (empty: every holder of the network key).
    pub allow: Vec<PeerId>,
    /// QUIC (only with an allow-list).
    pub quic: bool,
    /// mDNS discovery.
    pub mdns: bool,
    /// Kademlia discovery.
    pub kademlia: bool,
}

/// One peer as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Peer id.
    pub peer_id: String,
    /// Replica id.
    pub replica_id: String,
    /// Whether a connection is open.
    pub connected: bool,
    /// Addresses it listens on (as it says) or was reached at.
    pub addresses: Vec<String>,
    /// Last round-trip time measured by ping, in microseconds.
    pub rtt_us: Option<u64>,
    /// Messages waiting to be sent to it.
    pub queued: usize,
}

#[derive(Default)]
struct Shared {
    listen: Vec<Multiaddr>,
    peers: BTreeMap<PeerId, PeerStatus>,
    /// The last `Have` each peer sent for each user.
    haves: HashMap<(PeerId, UserId), Vec<(LogId, LogVersion)>>,
}

/// A peer's last anti-entropy summary for a user: (peer id, user, logs).
pub type PeerHave = (String, UserId, Vec<(LogId, LogVersion)>);

/// A handle on the running peer-to-peer layer.
#[derive(Clone)]
pub struct P2pHandle {
    shared: Arc<Mutex<Shared>>,
}

impl P2pHandle {
    /// The addresses the node listens on.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared
            .lock()
            .map(|s| s.listen.clone())
            .unwrap_or_default()
    }

    /// The peers, as last seen.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared
            .lock()
            .map(|s| s.peers.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The last `Have` of every (peer, user).
    pub fn haves(&self) -> Vec<PeerHave> {
        self.shared
            .lock()
            .map(|s| {
                s.haves
                    .iter()
                    .map(|((p, u), v)| (p.to_string(), *u, v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Logs what `out` sends: kind and encoded size of each message (target
/// `aerogramme::wire`, level trace), to see where the bytes on the wire go.
fn trace_out(out: &NetOut) {
    let kind = |bytes: &[u8]| PeerMsg::decode(bytes).map_or("malformed", |m| m.kind());
    match out {
        NetOut::Send { to, bytes, .. } | NetOut::Live { to, bytes, .. } => {
            tracing::trace!(target: "aerogramme::wire", %to, kind = kind(bytes), len = bytes.len(), "send");
        }
        NetOut::Broadcast { msgs, .. } => {
            for m in msgs {
                tracing::trace!(target: "aerogramme::wire", kind = kind(m), len = m.len(), "gossip");
            }
        }
        NetOut::ToEach { bytes, .. } => {
            tracing::trace!(target: "aerogramme::wire", kind = kind(bytes), len = bytes.len(), "to each");
        }
        NetOut::Subscribe(_) => {}
    }
}

/// The gossipsub topic of a user: opaque (derived from the random user id).
pub fn topic(user: &UserId) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!(
        "aerogramme/u/{}",
        crate::identity::hex(user.as_bytes())
    ))
}

#[derive(Default)]
struct Queue {
    live: VecDeque<Vec<u8>>,
    bulk: VecDeque<Vec<u8>>,
    in_flight: usize,
}

struct JoinTarget {
    addr: Multiaddr,
    peer: Option<PeerId>,
    next: Instant,
    delay: Duration,
}

/// The running swarm task.
pub struct P2p {
    handle: P2pHandle,
    task: tokio::task::JoinHandle<()>,
}

impl P2p {
    /// Starts listening and dialling; returns once the listeners are bound.
    pub async fn start(
        keypair: Keypair,
        config: P2pConfig,
        core: CoreHandle,
        users: Vec<UserId>,
        net: mpsc::UnboundedReceiver<NetOut>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<P2p> {
        use anyhow::Context;
        let opts = Options {
            allow: config.allow.clone(),
            mdns: config.mdns,
            kademlia: config.kademlia,
        };
        let network_key = *config.network_key;
        let quic = config.quic;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|kp| {
                transport::build(kp, network_key, quic)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
            .context("building the transport")?
            .with_behaviour(|kp| Behaviour::new(kp, &opts).map_err(|e| e.into()))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        let mut pending = 0;
        for addr in &config.listen {
            if !quic && addr.iter().any(|p| matches!(p, Protocol::QuicV1)) {
                anyhow::bail!("{addr}: QUIC needs p2p.quic = true (and an allow-list)");
            }
            swarm
                .listen_on(addr.clone())
                .with_context(|| format!("peer-to-peer: cannot listen on {addr}"))?;
            pending += 1;
        }
        // Wait until every listener has its address (port 0 resolved).
        let shared = Arc::new(Mutex::new(Shared::default()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut early = Vec::new();
        while pending > 0 {
            let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .context("peer-to-peer: listeners did not start")?;
            match ev {
                SwarmEvent::NewListenAddr { address, .. } => {
                    if let Ok(mut s) = shared.lock() {
                        s.listen.push(address);
                    }
                    pending -= 1;
                }
                SwarmEvent::ListenerError { error, .. } => {
                    anyhow::bail!("peer-to-peer listener: {error}")
                }
                other => early.push(other),
            }
        }
        let handle = P2pHandle { shared };
        let now = Instant::now();
        let mut joins: Vec<JoinTarget> = config
            .join
            .iter()
            .map(|a| JoinTarget {
                addr: a.clone(),
                peer: peer_of(a),
                next: now,
                delay: BACKOFF_MIN,
            })
            .collect();
        for (peer, addrs) in &config.known {
            for a in addrs {
                if joins.iter().any(|j| j.peer == Some(*peer) && j.addr == *a) {
                    continue;
                }
                joins.push(JoinTarget {
                    addr: a.clone().with_p2p(*peer).unwrap_or_else(|a| a),
                    peer: Some(*peer),
                    next: now,
                    delay: BACKOFF_MIN,
                });
            }
        }
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            for j in &joins {
                if let Some(p) = j.peer {
                    kad.add_address(&p, j.addr.clone());
                }
            }
        }
        let control = swarm.behaviour().live.new_control();
        let me = replica_of(swarm.local_peer_id());
        let (inbound_tx, inbound) = mpsc::channel(1024);
        live::accept(control.clone(), inbound_tx);
        let mut task = Task {
            control,
            links: HashMap::new(),
            swarm,
            core,
            shared: handle.shared.clone(),
            by_replica: HashMap::new(),
            queues: HashMap::new(),
            topics: HashSet::new(),
            members: config.known.iter().map(|(p, _)| *p).collect(),
            joins,
            kad_due: None,
            relay: VecDeque::new(),
            me,
            reach: detour::Reach::default(),
            nonce: 0,
        };
        if let Err(e) = task
            .swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&detour::topic())
        {
            tracing::warn!("gossipsub subscribe to the detour topic: {e}");
        }
        for u in users {
            task.subscribe(u);
        }
        for ev in early {
            task.on_event(ev);
        }
        let join = tokio::spawn(task.run(net, inbound, stop));
        Ok(P2p { handle, task: join })
    }

    /// A handle for status queries.
    pub fn handle(&self) -> P2pHandle {
        self.handle.clone()
    }

    /// Waits for the task to end (after the stop signal).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// The peer id at the end of a multiaddress, if any.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

struct Task {
    swarm: Swarm<Behaviour>,
    /// Opens live streams.
    control: libp2p_stream::Control,
    /// The live stream to each member.
    links: HashMap<PeerId, live::Link>,
    core: CoreHandle,
    shared: Arc<Mutex<Shared>>,
    by_replica: HashMap<ReplicaId, PeerId>,
    queues: HashMap<PeerId, Queue>,
    topics: HashSet<UserId>,
    /// The members this node knows (the replica's members): remembered
    /// from earlier runs or identified in this one.
    members: HashSet<PeerId>,
    joins: Vec<JoinTarget>,
    kad_due: Option<Instant>,
    /// Valid gossip not yet reported to gossipsub (which forwards it then),
    /// oldest first: when to report, and what.
    relay: VecDeque<(Instant, gossipsub::MessageId, PeerId)>,
    /// This node's replica.
    me: ReplicaId,
    /// The members heard through a detour lately.
    reach: detour::Reach,
    /// The last detour's nonce.
    nonce: u64,
}

impl Task {
    async fn run(
        mut self,
        mut net: mpsc::UnboundedReceiver<NetOut>,
        mut inbound: mpsc::Receiver<live::Inbound>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut redial = tokio::time::interval(Duration::from_millis(250));
        let mut kad_bootstrap = tokio::time::interval(KAD_BOOTSTRAP);
        let mut beacon = tokio::time::interval(detour::BEACON_EVERY);
        loop {
            let relay_at = self.relay.front().map(|(at, ..)| *at);
            tokio::select! {
                _ = tokio::time::sleep_until(relay_at.unwrap_or_else(Instant::now).into()),
                    if relay_at.is_some() => self.relay_due(),
                out = net.recv() => match out {
                    Some(out) => self.on_net_out(out),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.on_event(ev),
                Some(msg) = inbound.recv() => match msg {
                    live::Inbound::Message(peer, bytes) => {
                        if !self.deliver(peer, &bytes) {
                            self.misbehaved(peer, "malformed message");
                        }
                    }
                    live::Inbound::Invalid(peer, e) => self.misbehaved(peer, &e),
                },
                _ = redial.tick() => {
                    self.redial();
                    if self.kad_due.is_some_and(|t| Instant::now() >= t) {
                        self.kad_due = None;
                        self.kad_bootstrap();
                    }
                }
                _ = kad_bootstrap.tick() => self.kad_bootstrap(),
                _ = beacon.tick() => {
                    if self.some_member_unconnected() {
                        self.publish_detour(None, &[]);
                    }
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        tracing::debug!("peer-to-peer layer stopped");
    }

    /// Lets gossipsub forward the valid gossip whose delay has passed.
    fn relay_due(&mut self) {
        let now = Instant::now();
        while self.relay.front().is_some_and(|(at, ..)| *at <= now) {
            let Some((_, id, from)) = self.relay.pop_front() else {
                break;
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &from, gossipsub::MessageAcceptance::Accept);
        }
    }

    fn kad_bootstrap(&mut self) {
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            let _ = kad.bootstrap();
        }
    }

    fn subscribe(&mut self, user: UserId) {
        if self.topics.insert(user) {
            if let Err(e) = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&topic(&user))
            {
                tracing::warn!(%user, "gossipsub subscribe: {e}");
            }
        }
    }

    fn on_net_out(&mut self, out: NetOut) {
        if tracing::enabled!(target: "aerogramme::wire", tracing::Level::TRACE) {
            trace_out(&out);
        }
        match out {
            NetOut::Send { to, bytes, bulk } => {
                if let Some(peer) = self.by_replica.get(&to).copied() {
                    self.enqueue(peer, bytes, bulk);
                }
            }
            NetOut::Live { to, bytes, detour } => {
                if let Some(peer) = self.by_replica.get(&to).copied() {
                    self.send_live(peer, bytes);
                } else if detour && self.reach.reachable(to, Instant::now()) {
                    self.publish_detour(Some(to), &bytes);
                }
            }
            NetOut::Broadcast { user, msgs } => {
                self.subscribe(user);
                if self.alone() {
                    // Nothing would carry it (gossipsub would hash and
                    // refuse it): a member that connects later pulls it by
                    // anti-entropy, as it would after a failed publish.
                    return;
                }
                if let Some(peers) = self.all_members_connected(&user) {
                    // Every member hears it from this node: directly, on
                    // the live streams (no gossip envelope, no IDONTWANT,
                    // and in the same write as the chunks that follow).
                    for m in msgs {
                        for p in &peers {
                            self.send_live(*p, m.clone());
                        }
                    }
                    return;
                }
                for payload in wire::pack(msgs) {
                    match self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic(&user), payload.clone())
                    {
                        Ok(_) => {}
                        Err(
                            gossipsub::PublishError::NoPeersSubscribedToTopic
                            | gossipsub::PublishError::AllQueuesFull(_),
                        ) => {
                            // No one listens on the topic yet: send directly.
                            let peers: Vec<PeerId> = self.by_replica.values().copied().collect();
                            for m in wire::unpack(&payload).unwrap_or_default() {
                                for p in &peers {
                                    self.send_live(*p, m.to_vec());
                                }
                            }
                        }
                        Err(e) => tracing::warn!(%user, "gossipsub publish: {e}"),
                    }
                }
            }
            NetOut::ToEach { bytes, detour } => {
                if detour && self.reach.any_reachable(self.unconnected(), Instant::now()) {
                    self.publish_detour(None, &bytes);
                }
                let peers: Vec<PeerId> = self.by_replica.values().copied().collect();
                for p in peers {
                    self.send_live(p, bytes.clone());
                }
            }
            NetOut::Subscribe(user) => self.subscribe(user),
        }
    }

    /// The connected members when every member this node knows is
    /// connected and no other peer listens on `user`'s topic: then a
    /// broadcast reaches each of them directly, and gossipsub (which
    /// exists to reach members through others) would only add its
    /// envelope and its duplicate suppression. `None` otherwise (or when no
    /// member is connected).
    fn all_members_connected(&self, user: &UserId) -> Option<Vec<PeerId>> {
        let peers: Vec<PeerId> = self.by_replica.values().copied().collect();
        if peers.is_empty() || self.some_member_unconnected() {
            return None;
        }
        let hash = topic(user).hash();
        let others = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .any(|(p, topics)| topics.contains(&&hash) && !peers.contains(p));
        (!others).then_some(peers)
    }

    /// Whether no member and no other gossipsub peer is connected (a node
    /// on its own, or cut off from every other).
    fn alone(&self) -> bool {
        self.by_replica.is_empty()
            && self
                .swarm
                .behaviour()
                .gossipsub
                .all_peers()
                .next()
                .is_none()
    }

    /// The members this node knows that are not connected to it.
    fn unconnected(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.members.iter().filter_map(|m| {
            let r = replica_of(m);
            (self.by_replica.get(&r) != Some(m)).then_some(r)
        })
    }

    /// Whether some member this node knows is not connected to it.
    fn some_member_unconnected(&self) -> bool {
        self.unconnected().next().is_some()
    }

    /// Publishes `msg` on the detour topic for `to` (`None`: every member
    /// not connected to this node; with an empty `msg`, a beacon).
    fn publish_detour(&mut self, to: Option<ReplicaId>, msg: &[u8]) {
        self.nonce += 1;
        tracing::trace!(target: "aerogramme::wire", ?to, len = msg.len(), "detour");
        let env = detour::Envelope {
            to,
            from: self.me,
            nonce: self.nonce,
            msg,
        };
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(detour::topic(), env.encode())
        {
            Ok(_) | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(e) => tracing::debug!("detour: {e}"),
        }
    }

    /// A message on the detour topic, passed on by `source`: handed to the
    /// core when it is for this node, and passed on (or not) by gossipsub.
    fn on_detour(&mut self, source: PeerId, id: gossipsub::MessageId, data: &[u8]) {
        let verdict = match detour::Envelope::decode(data) {
            None => gossipsub::MessageAcceptance::Reject,
            Some(env) if env.from == self.me => gossipsub::MessageAcceptance::Ignore,
            Some(env) => {
                let direct = self.by_replica.contains_key(&env.from);
                if !direct {
                    self.reach.heard(env.from, Instant::now());
                }
                let for_me = match env.to {
                    Some(to) => to == self.me,
                    // A member connected to the origin got it directly.
                    None => !direct && !env.msg.is_empty(),
                };
                // Only sequencing messages take detours (and beacons).
                let msg = match env.msg {
                    [] => Ok(None),
                    bytes => match PeerMsg::decode(bytes) {
                        Ok(m @ PeerMsg::Seq { .. }) => Ok(Some(m)),
                        _ => Err(()),
                    },
                };
                match msg {
                    Err(()) => gossipsub::MessageAcceptance::Reject,
                    Ok(msg) => {
                        let known = self.members.iter().any(|m| replica_of(m) == env.from);
                        if let (true, true, Some(m)) = (for_me, known, msg) {
                            self.hand_over(source, env.from, m);
                        }
                        if env.to == Some(self.me) {
                            gossipsub::MessageAcceptance::Ignore
                        } else {
                            gossipsub::MessageAcceptance::Accept
                        }
                    }
                }
            }
        };
        let reject = matches!(verdict, gossipsub::MessageAcceptance::Reject);
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, verdict);
        if reject {
            self.misbehaved(source, "malformed detour");
        }
    }

    /// Queues a message on the live stream to `peer`.
    fn send_live(&mut self, peer: PeerId, bytes: Vec<u8>) {
        let control = &self.control;
        self.links
            .entry(peer)
            .or_insert_with(|| live::Link::open(control.clone(), peer))
            .send(bytes);
    }

    fn enqueue(&mut self, peer: PeerId, bytes: Vec<u8>, bulk: bool) {
        let q = self.queues.entry(peer).or_default();
        let (queue, cap) = if bulk {
            (&mut q.bulk, MAX_BULK_QUEUE)
        } else {
            (&mut q.live, MAX_LIVE_QUEUE)
        };
        if queue.len() >= cap {
            queue.pop_front();
        }
        queue.push_back(bytes);
        self.pump(peer);
    }

    fn pump(&mut self, peer: PeerId) {
        let Some(q) = self.queues.get_mut(&peer) else {
            return;
        };
        while q.in_flight < MAX_IN_FLIGHT {
            let Some(bytes) = q.live.pop_front().or_else(|| q.bulk.pop_front()) else {
                break;
            };
            q.in_flight += 1;
            self.swarm
                .behaviour_mut()
                .replication
                .send_request(&peer, bytes);
        }
    }

    fn redial(&mut self) {
        let now = Instant::now();
        for j in &mut self.joins {
            let connected = j.peer.is_some_and(|p| self.swarm.is_connected(&p));
            if connected || now < j.next {
                continue;
            }
            j.next = now + j.delay;
            j.delay = (j.delay * 2).min(BACKOFF_MAX);
            if let Err(e) = self.swarm.dial(j.addr.clone()) {
                tracing::debug!(addr = %j.addr, "dial: {e}");
            }
        }
    }

    /// Hands a message from `source` to the core; `false` when it is
    /// malformed.
    fn deliver(&mut self, source: PeerId, bytes: &[u8]) -> bool {
        match PeerMsg::decode(bytes) {
            Ok(msg) => {
                self.hand_over(source, replica_of(&source), msg);
                true
            }
            Err(e) => {
                tracing::warn!(peer = %source, "malformed message: {e}");
                false
            }
        }
    }

    /// Hands a message written by replica `from` (`source`'s own, or one
    /// that `source` passed on in a detour) to the core.
    fn hand_over(&mut self, source: PeerId, from: ReplicaId, msg: PeerMsg) {
        let user = match &msg {
            PeerMsg::Seq { user, .. } => Some(*user),
            PeerMsg::Sync(m) => m.user(),
        };
        if let Some(u) = user {
            self.subscribe(u);
        }
        if let PeerMsg::Sync(SyncMsg::Have { user, logs, .. }) = &msg {
            if let Ok(mut s) = self.shared.lock() {
                s.haves.insert((source, *user), logs.clone());
            }
        }
        if let PeerMsg::Seq { .. } = &msg {
            tracing::trace!(target: "aerogramme::seq", %from, ?msg, "received");
        }
        let _ = self
            .core
            .run(move |st| st.replica.handle(crate::core::CoreState::now(), from, msg));
    }

    fn misbehaved(&mut self, peer: PeerId, why: &str) {
        tracing::warn!(%peer, "disconnecting a peer: {why}");
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn status(&self, peer: PeerId, f: impl FnOnce(&mut PeerStatus)) {
        if let Ok(mut s) = self.shared.lock() {
            let e = s.peers.entry(peer).or_insert_with(|| PeerStatus {
                peer_id: peer.to_string(),
                replica_id: replica_of(&peer).to_string(),
                ..PeerStatus::default()
            });
            f(e);
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening for peers");
                if let Ok(mut s) = self.shared.lock() {
                    s.listen.push(address);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => Some(address.clone()),
                    ConnectedPoint::Listener { .. } => None,
                };
                if let Some(a) = &addr {
                    for j in &mut self.joins {
                        if j.addr == *a || j.peer == Some(peer_id) {
                            j.peer = Some(peer_id);
                            j.delay = BACKOFF_MIN;
                        }
                    }
                }
                self.status(peer_id, |p| {
                    p.connected = true;
                    if let Some(a) = &addr {
                        let a = a.to_string();
                        if !p.addresses.contains(&a) {
                            p.addresses.push(a);
                        }
                    }
                });
                if num_established.get() == 1 {
                    // A member once identify shows it runs this protocol
                    // (a bare key holder, such as a tool, is not one).
                    tracing::info!(peer = %peer_id, "peer connected");
                    self.kad_due
                        .get_or_insert_with(|| Instant::now() + KAD_AFTER_CONNECT);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                tracing::info!(peer = %peer_id, "peer disconnected");
                self.by_replica.remove(&replica_of(&peer_id));
                self.queues.remove(&peer_id);
                self.links.remove(&peer_id);
                self.status(peer_id, |p| {
                    p.connected = false;
                    p.queued = 0;
                });
                for j in &mut self.joins {
                    if j.peer == Some(peer_id) {
                        j.next = Instant::now() + j.delay;
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                // Failing to reach a configured peer is worth an operator's
                // attention; other failures (stale addresses) are routine.
                let now = Instant::now();
                match self
                    .joins
                    .iter()
                    .find(|j| j.peer.is_some() && j.peer == peer_id)
                {
                    Some(j) => tracing::info!(
                        addr = %j.addr,
                        retry_in_ms = j.next.saturating_duration_since(now).as_millis() as u64,
                        "cannot reach a peer to join: {error}"
                    ),
                    None => tracing::debug!(?peer_id, "connection failed: {error}"),
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!("incoming connection failed: {error}");
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Replication(ev) => self.on_replication(ev),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) if message.topic == detour::topic().hash() => {
                self.on_detour(propagation_source, message_id, &message.data)
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                // Gossip is not signed (behaviour.rs): the messages come
                // from the peer that passed them on, which the connection
                // authenticated, and which holds what they announce.
                let ok = match wire::unpack(&message.data) {
                    Some(msgs) => {
                        // Every message is handed over even if one is bad.
                        let bad = msgs
                            .into_iter()
                            .filter(|m| !self.deliver(propagation_source, m))
                            .count();
                        bad == 0
                    }
                    None => false,
                };
                if ok {
                    // Forwarded later, so that the IDONTWANT of a peer that
                    // got it from the publisher as well arrives first.
                    self.relay.push_back((
                        Instant::now() + RELAY_DELAY,
                        message_id,
                        propagation_source,
                    ));
                    return;
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Reject,
                    );
                // Nodes pass on only gossip they found valid: the peer that
                // sent this one is at fault.
                self.misbehaved(propagation_source, "malformed gossip");
            }
            BehaviourEvent::Gossipsub(_) => {}
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != behaviour::IDENTIFY_VERSION {
                    self.misbehaved(peer_id, "another protocol version");
                    return;
                }
                let addrs: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(|a| {
                        !a.iter()
                            .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified()))
                    })
                    .collect();
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    for a in &addrs {
                        kad.add_address(&peer_id, a.clone());
                    }
                }
                let text: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                self.status(peer_id, |p| {
                    for a in &text {
                        if !p.addresses.contains(a) {
                            p.addresses.push(a.clone());
                        }
                    }
                });
                let replica = replica_of(&peer_id);
                self.members.insert(peer_id);
                if self.by_replica.insert(replica, peer_id).is_none() {
                    tracing::info!(peer = %peer_id, %replica, "peer identified");
                }
                let _ = self
                    .core
                    .run(move |st| st.peer_connected(peer_id, replica, text));
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => self.status(peer, |p| p.rtt_us = Some(rtt.as_micros() as u64)),
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(e),
            }) => {
                if !matches!(e, ping::Failure::Unsupported) {
                    tracing::info!(%peer, "closing a connection whose ping failed: {e}");
                    self.swarm.close_connection(connection);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if !self.swarm.is_connected(&peer) {
                        tracing::debug!(%peer, %addr, "found on the local network");
                        let _ = self.swarm.dial(addr.with_p2p(peer).unwrap_or_else(|a| a));
                    }
                }
            }
            BehaviourEvent::Mdns(_) => {}
            BehaviourEvent::Kad(_) | BehaviourEvent::Live(_) => {}
            BehaviourEvent::Allow(v) => match v {},
        }
    }

    fn on_replication(&mut self, ev: request_response::Event<Vec<u8>, ()>) {
        use request_response::{Event, InboundFailure, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .replication
                    .send_response(channel, ());
                if !self.deliver(peer, &request) {
                    self.misbehaved(peer, "malformed message");
                }
            }
            Event::Message {
                peer,
                message: Message::Response { .. },
                ..
            }
            | Event::OutboundFailure { peer, .. } => {
                if let Some(q) = self.queues.get_mut(&peer) {
                    q.in_flight = q.in_flight.saturating_sub(1);
                    let queued = q.live.len()
                        + q.bulk.len()
                        + self.links.get(&peer).map_or(0, live::Link::queued);
                    self.status(peer, |p| p.queued = queued);
                }
                self.pump(peer);
            }
            Event::InboundFailure {
                peer,
                error: InboundFailure::Io(e),
                ..
            } if e.kind() == std::io::ErrorKind::InvalidData => {
                self.misbehaved(peer, &format!("bad request: {e}"))
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }
}
