//! Aerogramme's protocol core, sans-IO.
//!
//! Everything here is a pure state machine: it is fed inputs (a local action,
//! a message from a peer, the current time, randomness) and returns outputs.
//! Nothing in this crate reads a clock, a socket, a file or an OS random
//! number generator; the node (tokio, sled, libp2p) and the simulator are two
//! drivers of the same code.

mod bytes;
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
