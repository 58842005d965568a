//! A misbehaving community member for the replication tests: it holds the
//! network key, connects to a node and sends it, on the replication
//! protocol, either garbage (`garbage`) or a frame larger than allowed
//! (`oversized`). It prints `disconnected` when the node hangs up on it.
//!
//! Usage: rogue_peer NETWORK_KEY_FILE MULTIADDR garbage|oversized

use aerogramme::p2p::{transport, wire};
use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::Multiaddr;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, key, addr, mode] = &args[..] else {
        eprintln!("usage: rogue_peer NETWORK_KEY_FILE MULTIADDR garbage|oversized");
        std::process::exit(2);
    };
    let key = aerogramme::identity::load_network_key(key.as_ref()).expect("network key");
    let addr: Multiaddr = addr.parse().expect("multiaddress");
    let payload = match mode.as_str() {
        "garbage" => b"\x07this is not a replication message".to_vec(),
        "oversized" => vec![0u8; wire::MAX_FRAME + 1],
        _ => panic!("unknown mode {mode}"),
    };
    let network_key = *key;
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|kp| {
            transport::build(kp, network_key, false)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .expect("transport")
        .with_behaviour(|_| {
            request_response::Behaviour::<wire::Codec>::new(
                [(wire::PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.dial(addr).expect("dial");
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    println!("connected");
                    swarm.behaviour_mut().send_request(&peer_id, payload.clone());
                }
                SwarmEvent::ConnectionClosed { num_established: 0, .. } => {
                    println!("disconnected");
                    return;
                }
                _ => {}
            },
            _ = &mut deadline => {
                println!("still connected");
                return;
            }
        }
    }
}
