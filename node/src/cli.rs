//! Command-line interface (clap).

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
