//! Aerogramme's protocol core, sans-IO.
//!
//! Everything here is a pure state machine: it is fed inputs (a local action,
//! a message from a peer, the current time, randomness) and returns outputs.
//! Nothing in this crate reads a clock, a socket, a file or an OS random
//! number generator; the node (tokio, sled, libp2p) and the simulator are two
//! drivers of the same code.

mod bytes;
pub mod codec;
pub mod crypto;
pub mod hlc;
pub mod ids;
pub mod mailbox;
pub mod oplog;
pub mod replica;
pub mod seq;
pub mod store;
pub mod sync;

pub use rand_core::{CryptoRng, RngCore};

/// Hash maps and sets of the hot paths (sequencers, views, waiting
/// actions), keyed by op, entry and replica ids: foldhash, seeded at random
/// per map like std's, several times cheaper than SipHash on these short
/// keys (SipHash was 6 % of the simulator's instructions). Peers are
/// authenticated members of the community.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// See [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
