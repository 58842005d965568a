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

/// Gossip messages at least this large (protobuf bytes) are announced with
/// IDONTWANT to the receiver's other mesh peers: an op batch is ~500 bytes,
/// an IDONTWANT with a [`message_id`] ~30.
const IDONTWANT_THRESHOLD: usize = 128;

/// A gossip message's id: 16 bytes of BLAKE2b over its author and sequence
/// number (gossipsub's default is their text, ~70 bytes, and the id is
/// what IDONTWANT and IHAVE carry).
fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut input = m.source.map(|p| p.to_bytes()).unwrap_or_default();
    input.extend_from_slice(&m.sequence_number.unwrap_or_default().to_be_bytes());
    let digest = Blake2b::new(16).and_then(|mut h| {
        h.update(&input)?;
        h.finalize()
    });
    match digest {
        Ok(d) => gossipsub::MessageId::new(d.as_ref()),
        Err(_) => gossipsub::MessageId::new(&input),
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
            .validation_mode(gossipsub::ValidationMode::Strict)
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
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(keypair.clone()),
            gossip_config,
        )?;
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
            ping: ping::Behaviour::new(ping::Config::new()),
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

    fn msg(source: Option<PeerId>, seq: u64) -> gossipsub::Message {
        gossipsub::Message {
            source,
            data: b"ops".to_vec(),
            sequence_number: Some(seq),
            topic: gossipsub::TopicHash::from_raw("t"),
        }
    }

    #[test]
    fn message_ids_are_short_and_name_author_and_sequence_number() {
        let a = PeerId::random();
        let b = PeerId::random();
        let id = message_id(&msg(Some(a), 1));
        assert_eq!(id.0.len(), 16);
        assert_eq!(id, message_id(&msg(Some(a), 1)));
        assert_ne!(id, message_id(&msg(Some(a), 2)));
        assert_ne!(id, message_id(&msg(Some(b), 1)));
    }
}
