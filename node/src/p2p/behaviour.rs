//! The composed libp2p behaviour of a node.

use super::wire;
use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, gossipsub, identify, kad, mdns, ping, request_response, PeerId,
    StreamProtocol,
};
use orion::hazardous::hash::blake2::blake2b::Blake2b;
use std::time::Duration;

/// Identify's protocol version: peers of another protocol are ignored.
pub const IDENTIFY_VERSION: &str = "/aerogramme/1";
/// Kademlia's protocol name (a private DHT, not the public one).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/aerogramme/kad/1");
/// How long a replication request may wait for its receipt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often each connection is pinged, and how long an answer may take:
/// a connection whose ping fails is closed (mod.rs), so that a route that
/// died (packets dropped, no reset) is noticed within 30 s instead of
/// TCP's retransmission timeout (minutes), and what was sent on it takes
/// another way (a detour, anti-entropy through other members).
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// See [`PING_EVERY`].
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Gossip messages at least this large (protobuf bytes) are announced with
/// IDONTWANT to the receiver's other mesh peers: an op batch is ~500 bytes,
/// an IDONTWANT with a [`message_id`] ~30.
const IDONTWANT_THRESHOLD: usize = 128;

/// A gossip message's id: 16 bytes of BLAKE2b over its topic and data
/// (messages are anonymous: no author, no sequence number; the id is what
/// IDONTWANT and IHAVE carry). Two messages with the same bytes on one topic
/// are one message, which costs nothing: ops and account records are
/// idempotent, and every op batch names ops of its own.
fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let topic = m.topic.as_str().as_bytes();
    let digest = Blake2b::new(16).and_then(|mut h| {
        h.update(&(topic.len() as u64).to_be_bytes())?;
        h.update(topic)?;
        h.update(&m.data)?;
        h.finalize()
    });
    match digest {
        Ok(d) => gossipsub::MessageId::new(d.as_ref()),
        // BLAKE2b-128 cannot fail; the data itself is a valid id anyway.
        Err(_) => gossipsub::MessageId::new(&m.data),
    }
}

/// What a node runs on each connection.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// The allow-list of peer ids, when one is configured.
    pub allow: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    /// Peer information (listen addresses, protocols).
    pub identify: identify::Behaviour,
    /// Liveness and round-trip times.
    pub ping: ping::Behaviour,
    /// Push of new ops and sequencing messages, a topic per user.
    pub gossipsub: gossipsub::Behaviour,
    /// Anti-entropy messages to one peer, each a request with a receipt.
    pub replication: request_response::Behaviour<wire::Codec>,
    /// Live messages (sequencing, new chunks) on one stream per peer.
    pub live: libp2p_stream::Behaviour,
    /// Discovery on the local network.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Discovery in larger communities.
    pub kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
}

/// Options of [`Behaviour::new`].
pub struct Options {
    /// Peers allowed (empty: every holder of the network key).
    pub allow: Vec<PeerId>,
    /// Whether mDNS runs.
    pub mdns: bool,
    /// Whether Kademlia runs.
    pub kademlia: bool,
}

impl Behaviour {
    /// The behaviour of the node with `keypair`.
    pub fn new(keypair: &Keypair, opts: &Options) -> Result<Self, String> {
        let me = keypair.public().to_peer_id();
        let allow = (!opts.allow.is_empty()).then(|| {
            let mut b = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
            b.allow_peer(me);
            for p in &opts.allow {
                b.allow_peer(*p);
            }
            b
        });
        let gossip_config = gossipsub::ConfigBuilder::default()
            .max_transmit_size(wire::MAX_FRAME)
            // Not signed: only holders of the network key connect, every
            // connection is authenticated (Noise), and what gossip carries
            // (ops, account records) is sealed and authenticated by the
            // user's keys and checked by the replica, exactly as when it
            // arrives by anti-entropy, which was never signed. A signature
            // (with author and sequence number, ~120 bytes a message) would
            // prove which node wrote a batch, which nothing relies on: the
            // replica takes gossip as coming from the peer that passed it on
            // (ARCHITECTURE §12).
            .validation_mode(gossipsub::ValidationMode::Anonymous)
            .validate_messages()
            .heartbeat_interval(Duration::from_millis(500))
            // Every received op batch makes its receiver tell its other
            // mesh peers it has it (IDONTWANT, gossipsub 1.2): the node
            // forwards a batch only after `RELAY_DELAY`, so a peer that got
            // it from the publisher too is not sent a second copy.
            .idontwant_message_size_threshold(IDONTWANT_THRESHOLD)
            .message_id_fn(message_id)
            .build()
            .map_err(|e| e.to_string())?;
        let gossipsub =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)?;
        let replication = request_response::Behaviour::new(
            [(wire::PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(REQUEST_TIMEOUT)
                .with_max_concurrent_streams(256),
        );
        let mdns = if opts.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), me)
                    .map_err(|e| format!("mDNS: {e}"))?,
            )
        } else {
            None
        };
        let kad = opts.kademlia.then(|| {
            let mut k = kad::Behaviour::with_config(
                me,
                kad::store::MemoryStore::new(me),
                kad::Config::new(KAD_PROTOCOL),
            );
            k.set_mode(Some(kad::Mode::Server));
            k
        });
        Ok(Behaviour {
            allow: allow.into(),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_VERSION.into(), keypair.public())
                    .with_agent_version(format!("aerogramme/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_EVERY)
                    .with_timeout(PING_TIMEOUT),
            ),
            gossipsub,
            replication,
            live: libp2p_stream::Behaviour::new(),
            mdns: mdns.into(),
            kad: kad.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, data: &[u8]) -> gossipsub::Message {
        gossipsub::Message {
            source: None,
            data: data.to_vec(),
            sequence_number: None,
            topic: gossipsub::TopicHash::from_raw(topic),
        }
    }

    #[test]
    fn message_ids_are_short_and_name_topic_and_data() {
        let id = message_id(&msg("t", b"ops"));
        assert_eq!(id.0.len(), 16);
        assert_eq!(id, message_id(&msg("t", b"ops")));
        assert_ne!(id, message_id(&msg("t", b"ops2")));
        assert_ne!(id, message_id(&msg("u", b"ops")));
        // The topic's length is hashed: no shift between topic and data.
        assert_ne!(message_id(&msg("ta", b"b")), message_id(&msg("t", b"ab")));
    }
}
