//! The composed libp2p behaviour of a node.

use super::wire;
use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, gossipsub, identify, kad, mdns, ping, request_response, PeerId,
    StreamProtocol,
};
use std::time::Duration;

/// Identify's protocol version: peers of another protocol are ignored.
pub const IDENTIFY_VERSION: &str = "/aerogramme/1";
/// Kademlia's protocol name (a private DHT, not the public one).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/aerogramme/kad/1");
/// How long a replication request may wait for its receipt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
