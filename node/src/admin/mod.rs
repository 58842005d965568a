//! The admin socket: how the CLI talks to a running node.
//!
//! `serve` listens on a unix socket (default `DIR/admin.sock`, mode 0600 in
//! a 0700 data directory: only the node's owner can connect). The protocol
//! is one JSON object per line: the client writes a [`Request`], the server
//! answers one [`Response`] line, and so on until the client closes. A line
//! is at most [`MAX_LINE`] bytes. When no node answers on the socket, the
//! CLI opens the store itself and runs the same [`handle`] function.

mod client;
mod handler;
mod protocol;
mod server;

pub use client::{connect, AdminClient, ClientError};
pub use handler::handle;
pub use protocol::{ErrorKind, LagEntry, Request, Response, StatusInfo, UserEntry};
pub use server::AdminServer;

/// Longest request or response line.
pub const MAX_LINE: u64 = 64 * 1024;
