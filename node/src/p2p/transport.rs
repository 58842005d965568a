//! The node's libp2p transports.
//!
//! * **TCP**: the community's pre-shared key first (libp2p private network:
//!   XSalsa20 under the network key, before any libp2p byte), then Noise,
//!   then Yamux. A node without the key cannot complete the Noise
//!   handshake, so it cannot open a stream nor learn a peer id.
//! * **QUIC** has its own TLS handshake and bypasses the pre-shared key: it
//!   is only enabled together with an allow-list of peer ids, which is
//!   checked when a connection is established (see `p2p.quic` in CONFIG.md).

use futures::future::Either;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{noise, tcp, yamux, PeerId};
use std::io;
use std::time::Duration;

/// How long a connection may take to be established and upgraded.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

/// TCP (+ pre-shared key, Noise, Yamux), and QUIC when `quic` is set.
pub fn build(
    keypair: &Keypair,
    network_key: [u8; 32],
    quic: bool,
) -> io::Result<Boxed<(PeerId, StreamMuxerBox)>> {
    let noise = noise::Config::new(keypair).map_err(io::Error::other)?;
    let psk = PreSharedKey::new(network_key);
    let tcp = tcp::tokio::Transport::new(tcp::Config::new().nodelay(true))
        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(UPGRADE_TIMEOUT);
    if !quic {
        return Ok(tcp
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed());
    }
    let quic = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(keypair));
    Ok(tcp
        .or_transport(quic)
        .map(|either, _| match either {
            Either::Left((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
            Either::Right((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
        })
        .boxed())
}
