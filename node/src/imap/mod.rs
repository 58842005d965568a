//! The IMAP server, decoupled from storage by [`backend::Backend`] (the node
//! implements it over its core; [`memory::MemoryBackend`] is the in-memory
//! reference used by the tests).
//!
//! All parsing and serialization goes through imap-codec `2.0.0-alpha.10`,
//! except what it cannot express: the command forms of [`listext`]
//! (LIST-EXTENDED options and `CREATE ... (USE (...))`), parsed by a small
//! parser, and those of [`rewrite`] (`SEARCH RETURN (...)` of ESEARCH and
//! SEARCHRES, the `$` sequence set, APPEND's `UTF8 (~{n})` of UTF8=ACCEPT
//! and MULTIAPPEND's several messages), reduced to forms imap-codec
//! parses; and responses it cannot encode, written by hand: `ESEARCH`,
//! LIST's `CHILDINFO` extended data item (appended to imap-codec's LIST
//! line), APPENDUID with a UID set, and the origin of a partial BINARY.
//!
//! Advertised: IMAP4rev1, IMAP4rev2, STARTTLS (when TLS is configured),
//! AUTH=PLAIN or LOGINDISABLED, SASL-IR, LITERAL+ (which covers IMAP4rev2's
//! LITERAL-), ID, ENABLE, IDLE, NAMESPACE, UNSELECT, UIDPLUS, MOVE,
//! CONDSTORE, QRESYNC, LIST-EXTENDED (with CHILDINFO), LIST-STATUS,
//! SPECIAL-USE, CREATE-SPECIAL-USE, CHILDREN, STATUS=SIZE, WITHIN,
//! APPENDLIMIT, BINARY, ESEARCH, SEARCHRES, MULTIAPPEND, UTF8=ACCEPT.
//! `ENABLE IMAP4rev2` switches a session to RFC 9051's behaviour: no
//! `RECENT` and no `[UNSEEN]` at SELECT but the mailbox's LIST line,
//! `[CLOSED]` whenever a selected mailbox is left by SELECT/EXAMINE,
//! ESEARCH answers to every SEARCH, UTF-8 mailbox names. `\Recent` is never
//! set.
//!
//! Modules: [`server`] (listener, TLS), `session` (connection loop,
//! authentication, dispatch), `cmd_mailbox` and `cmd_message` (commands),
//! [`framing`] (lines and literals with limits), [`selected`] (sequence
//! numbers and pending updates), [`fetch`], [`search`], [`list`],
//! [`summary`] (ENVELOPE/BODYSTRUCTURE and part ranges, cacheable),
//! [`address`], [`header`], [`mutf7`], [`convert`] (to imap-types), [`conn`].

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
pub mod rewrite;
pub mod search;
pub mod selected;
pub mod server;
mod session;
pub mod summary;

pub use backend::{Backend, Mailboxes};
pub use memory::MemoryBackend;
pub use server::{tls_acceptor, tls_acceptor_from, ImapConfig, ImapServer, TlsError};

#[cfg(test)]
mod tests;
