//! Command-line interface (clap).

use aerogramme::multiaddr::Multiaddr;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Aerogramme: an encrypted, replicated IMAP and LMTP mail server.
#[derive(Parser, Debug)]
#[command(name = "aerogramme", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node with a demo user, ready for a mail client; prints how to connect.
    Dev(DevArgs),
    /// Create a data directory: configuration, node identity, network key, store.
    Init(InitArgs),
    /// Run the node described by DIR/aerogramme.toml (until SIGINT or SIGTERM).
    Serve(DataArgs),
    /// Manage users (through the running node's admin socket when it runs).
    User(UserArgs),
    /// Show the node's identity, users, peers (addresses, round-trip times), replication lag and the mailbox ledgers it owns.
    Status(DataArgs),
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Data directory (created if missing).
    #[arg(long, default_value = "aerogramme-dev")]
    pub data: PathBuf,
    /// IMAP listen address.
    #[arg(long, default_value = "127.0.0.1:1143")]
    pub imap: SocketAddr,
    /// LMTP listen address.
    #[arg(long, default_value = "127.0.0.1:1024")]
    pub lmtp: SocketAddr,
    /// Demo user's login name.
    #[arg(long, default_value = "alice")]
    pub user: String,
    /// Demo user's password.
    #[arg(long, default_value = "hunter2")]
    pub password: String,
}

#[derive(Args, Debug)]
pub struct DataArgs {
    /// Data directory.
    #[arg(long)]
    pub data: PathBuf,
}

fn parse_multiaddr(s: &str) -> Result<Multiaddr, String> {
    aerogramme::multiaddr::parse(s)
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Data directory (created if missing; must not hold a configuration yet).
    #[arg(long)]
    pub data: PathBuf,
    /// Node name (letters, digits, `.`, `_`, `-`).
    #[arg(long, default_value = "aerogramme")]
    pub name: String,
    /// IMAP listen address.
    #[arg(long, default_value = "127.0.0.1:1143")]
    pub imap: SocketAddr,
    /// LMTP listen address.
    #[arg(long, default_value = "127.0.0.1:1024")]
    pub lmtp: SocketAddr,
    /// Peer-to-peer listen multiaddress (repeatable).
    #[arg(long, value_parser = parse_multiaddr, default_value = "/ip4/0.0.0.0/tcp/4001")]
    pub p2p: Vec<Multiaddr>,
    /// Multiaddress of a peer to join (repeatable).
    #[arg(long, value_parser = parse_multiaddr)]
    pub join: Vec<Multiaddr>,
    /// The community's network key file: created if missing, reused if
    /// present (copy it to every node). Default: DIR/network.key.
    #[arg(long)]
    pub network_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
}

/// Passwords are read from standard input when it is not a terminal (one
/// per line), else prompted for without echo.
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user. Standard input: the password.
    Add(UserNameArgs),
    /// Change a user's password (mail is untouched). Standard input: the
    /// current password, then the new one.
    Passwd(UserNameArgs),
    /// Remove a user and all its data, from this node and, through the
    /// running node, from every node of the community (a node away at the
    /// time removes it when it is back).
    Remove(UserNameArgs),
    /// List the users.
    List(DataArgs),
    /// Check a password (exit status 0 when accepted, 1 when refused), through
    /// the running node's key cache and rate limits. Standard input: the password.
    Check(UserNameArgs),
}

#[derive(Args, Debug)]
pub struct UserNameArgs {
    /// Login name.
    pub name: String,
    /// Data directory.
    #[arg(long)]
    pub data: PathBuf,
}
