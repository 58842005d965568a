//! The Aerogramme node: storage (sled), configuration, identity, accounts,
//! unlocking and the admin socket. The binary `aerogramme` is the command
//! line on top of this library.

pub mod accounts;
pub mod admin;
pub mod config;
pub mod core;
pub mod identity;
pub mod imap;
pub mod lmtp;
pub mod multiaddr;
pub mod node;
pub mod p2p;
pub mod serve;
pub mod store;
pub mod unlock;
