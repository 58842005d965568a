//! The LMTP server (RFC 2033): how an MTA (Postfix, OpenSMTPD…) hands
//! mail to Aerogramme.
//!
//! Supported: LHLO, MAIL FROM, RCPT TO, DATA, BDAT, RSET, NOOP, QUIT, VRFY
//! (answered 252 without revealing users), with the extensions PIPELINING
//! (RFC 2920), ENHANCEDSTATUSCODES (RFC 2034), SIZE (RFC 1870), 8BITMIME
//! (RFC 6152) and CHUNKING (RFC 3030). HELO and EHLO are refused: LMTP
//! requires LHLO.
//!
//! The layer knows nothing about storage. It talks to a [`Backend`]: one
//! call maps a recipient address to a recipient (or refuses it), one call
//! delivers a message to a recipient and returns only once the message is
//! durable. A `250` is never sent for a recipient before its `deliver`
//! returned `Ok`. After DATA (or BDAT LAST) there is **one reply per
//! accepted recipient**, in RCPT order.
//!
//! Each delivered copy starts with two trace headers, as an MDA adds them:
//! `Return-Path: <reverse-path>` (`<>` for the null sender) and
//! `Delivered-To: address` (the RCPT address as the client wrote it, source
//! route removed), followed by the message exactly as received.
//!
//! **Line endings.** In DATA a bare LF is taken as a line end (as many
//! MTAs and scripts send them) and every line end is stored as CRLF; a
//! bare CR is kept as it is. `.` on a line of its own (`CRLF . CRLF`, or
//! with bare LFs) ends the data; the leading dot of every other line that
//! starts with one is removed (RFC 5321 §4.5.2). BDAT chunks are stored
//! byte for byte (RFC 3030: no dot-stuffing, no conversion). Lines of the
//! message body have no length limit (real mail has long lines); only the
//! total size is limited.
//!
//! **Limits.** Command lines: [`LmtpConfig::max_line_length`] octets (1000
//! by default, CRLF included); a longer one is discarded up to its end and
//! answered `500 5.5.2`, and the session goes on. Message size:
//! [`LmtpConfig::max_message_size`]: over it, the rest of the data is read
//! and discarded and every recipient gets `552 5.3.4`; memory per session
//! stays below that size plus a few kilobytes. Recipients per transaction:
//! [`LmtpConfig::max_recipients`] (`452 4.5.3` beyond). Connections:
//! [`LmtpConfig::max_connections`] (`421 4.3.2` beyond). Idle time:
//! [`LmtpConfig::idle_timeout`] for each read (`421 4.4.2`, then close).
//!
//! The same session code runs over TCP, a unix-domain socket or any
//! `AsyncRead + AsyncWrite` stream (the tests use an in-memory duplex).

pub mod backend;
pub mod data;
pub mod memory;
pub mod parser;
pub mod reply;
pub mod server;
pub mod session;

pub use backend::{AddressMap, Backend, DeliverError, Mapped, RcptError, Recipient};
pub use memory::MemoryBackend;
pub use reply::Reply;
pub use server::LmtpServer;

use std::time::Duration;

/// Largest message accepted by default: what the replica stores
/// (`aerogramme_proto::replica::MAX_MESSAGE_SIZE`) less room for the
/// trace headers.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = aerogramme_proto::replica::MAX_MESSAGE_SIZE - 4096;

/// Settings of the LMTP server.
#[derive(Clone, Debug)]
pub struct LmtpConfig {
    /// Name in the greeting and in the LHLO reply.
    pub hostname: String,
    /// Largest message accepted, in octets (advertised as `SIZE`).
    pub max_message_size: usize,
    /// Recipients accepted in one transaction (RFC 5321 asks for at least
    /// 100).
    pub max_recipients: usize,
    /// Longest command line, CRLF included (RFC 5321: 512 for commands;
    /// 1000 leaves room for parameters). At least 64.
    pub max_line_length: usize,
    /// A read that waits longer ends the session with `421 4.4.2`.
    pub idle_timeout: Duration,
    /// Sessions served at once; more are answered `421 4.3.2` and closed.
    pub max_connections: usize,
}

impl LmtpConfig {
    /// Defaults, with this host name.
    pub fn new(hostname: impl Into<String>) -> Self {
        LmtpConfig {
            hostname: hostname.into(),
            ..LmtpConfig::default()
        }
    }

    /// The line length actually enforced (never below 64).
    pub(crate) fn line_limit(&self) -> usize {
        self.max_line_length.max(64)
    }
}

impl Default for LmtpConfig {
    fn default() -> Self {
        LmtpConfig {
            hostname: "localhost".into(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: 100,
            max_line_length: 1000,
            idle_timeout: Duration::from_secs(300),
            max_connections: 512,
        }
    }
}
