//! The IMAP server (RFC 3501 IMAP4rev1 with the extensions listed in
//! [`capabilities`]), decoupled from storage by [`backend::Backend`].

pub mod address;
pub mod backend;
mod cmd_mailbox;
mod cmd_message;
pub mod conn;
pub mod convert;
pub mod fetch;
pub mod framing;
pub mod header;
pub mod list;
pub mod listext;
pub mod memory;
pub mod mutf7;
pub mod search;
pub mod selected;
pub mod server;
mod session;
pub mod summary;

pub use backend::{Backend, Mailboxes};
pub use memory::MemoryBackend;
pub use server::{tls_acceptor, tls_acceptor_from, ImapConfig, ImapServer, TlsError};
