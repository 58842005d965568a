//! What the IMAP layer asks of the storage: the [`Backend`] (authentication)
//! and the per-user [`Mailboxes`] handle it returns. The node implements
//! them over its core (the task owning the `Replica`); [`super::memory`] is
//! an in-memory reference implementation used by the tests.
//!
//! Contract, besides each method's documentation:
//! - Mailbox names are UTF-8 with `/` as the hierarchy delimiter, `INBOX`
//!   in upper case (the IMAP layer normalizes and decodes modified UTF-7).
//! - Flags are the storable ones (`\Recent` never reaches the backend).
//! - Every message change in a mailbox (also those this session made) is
//!   sent as an [`Event`] to every receiver of that mailbox, **before** the
//!   future of the action that caused it completes, so a session sees its
//!   own APPEND's EXISTS when it answers. Duplicates are harmless. Events
//!   travel in [`Events`] batches (one per mailbox and core step, in
//!   order), so a STORE over 100k messages is a few channel messages.
//! - Futures are `Send`: sessions run on tokio's multi-threaded runtime.

use super::summary::{SearchFields, Summary};
use aerogramme_proto::ids::MailboxId;
use aerogramme_proto::mailbox::{Flag, SpecialUse};
pub use aerogramme_proto::replica::{Event, FlagMode};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events of one mailbox, in order, sent as one channel message.
pub type Events = Arc<[Event]>;

/// Why an operation failed; mapped to IMAP response codes by the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No mailbox of that name (`NONEXISTENT`, `TRYCREATE` for APPEND/COPY).
    #[error("no such mailbox")]
    NoSuchMailbox,
    /// A mailbox of that name exists (`ALREADYEXISTS`).
    #[error("mailbox already exists")]
    AlreadyExists,
    /// The name is not acceptable (`CANNOT`).
    #[error("invalid mailbox name: {0}")]
    InvalidName(String),
    /// The operation is not allowed on this mailbox, e.g. DELETE INBOX
    /// (`CANNOT`).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The message is larger than the store accepts (`TOOBIG`).
    #[error("message too large")]
    TooLarge,
    /// A special-use attribute the store does not take (`USEATTR`).
    #[error("special-use attribute not supported")]
    UseAttr,
    /// The user's account was removed: the session ends with `BYE`.
    #[error("account removed")]
    AccountGone,
    /// The store cannot answer now (`UNAVAILABLE`); the session goes on.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupted data (`SERVERBUG`).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of backend operations.
pub type BackendResult<T> = Result<T, BackendError>;

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong user name or password (`AUTHENTICATIONFAILED`).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Try again later (`UNAVAILABLE`).
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

/// One mailbox as listed. Has-children and non-existent parents are computed
/// by the IMAP layer from the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// Full name, `/`-delimited.
    pub name: String,
    /// RFC 6154 attribute.
    pub special_use: Option<SpecialUse>,
    /// Whether it is subscribed.
    pub subscribed: bool,
}

/// STATUS values of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxStatus {
    /// Number of messages.
    pub messages: u32,
    /// Messages without `\Seen`.
    pub unseen: u32,
    /// Messages with `\Deleted`.
    pub deleted: u32,
    /// Sum of RFC822.SIZE (STATUS=SIZE).
    pub size: u64,
    /// UIDNEXT.
    pub uidnext: u32,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// HIGHESTMODSEQ.
    pub highest_modseq: u64,
}

/// A message's flags and MODSEQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    /// UID.
    pub uid: u32,
    /// Flags, sorted (shared: most messages of a STORE share a few sets).
    pub flags: Arc<[Flag]>,
    /// MODSEQ of its last change.
    pub modseq: u64,
}

/// A mailbox at the moment it was selected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// UIDNEXT.
    pub uidnext: u32,
    /// HIGHESTMODSEQ.
    pub highest_modseq: u64,
    /// Messages' UIDs, ascending (sequence number = position + 1); shared
    /// with the store's view until the session changes its copy.
    pub uids: Arc<Vec<u32>>,
    /// The MODSEQ of each message of `uids` (same position; shared too).
    pub modseqs: Arc<Vec<u64>>,
    /// Sequence number of the first message without `\Seen`.
    pub first_unseen: Option<u32>,
    /// Keywords of the mailbox (for FLAGS and PERMANENTFLAGS): those in
    /// use, or a superset (keywords once set).
    pub keywords: Vec<Flag>,
}

/// A selected mailbox: its id (stable across renames), what it held when
/// selected, and the events after that.
#[derive(Debug)]
pub struct Selected {
    /// Mailbox id; later calls name the mailbox by it.
    pub id: MailboxId,
    /// State at selection.
    pub snapshot: Snapshot,
    /// Changes. Subscribe **before** taking the snapshot: a change may then
    /// be both in the snapshot and in the stream, which the session
    /// tolerates; a change in neither would be lost. When the receiver
    /// lags, the session resynchronizes from [`Mailboxes::snapshot`].
    pub events: broadcast::Receiver<Events>,
}

/// Per-message metadata for FETCH and SEARCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// UID.
    pub uid: u32,
    /// Flags, sorted.
    pub flags: Vec<Flag>,
    /// INTERNALDATE, ms since the Unix epoch.
    pub internal_date_ms: i64,
    /// RFC822.SIZE.
    pub size: u32,
    /// MODSEQ.
    pub modseq: u64,
}

/// Outcome of STORE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreOutcome {
    /// Every targeted message that still exists and passed UNCHANGEDSINCE,
    /// with its flags and MODSEQ after the change (changed or not).
    pub updated: Vec<MessageState>,
    /// UIDs that failed the UNCHANGEDSINCE test (`MODIFIED`).
    pub modified: Vec<u32>,
}

/// The rest of a STORE's answers, in parts, as the backend applies the
/// change (each part's UIDs ascending, the parts in no order: IMAP lets
/// untagged FETCH answers come in any order), so that a session formats
/// and sends them while the next parts are made.
#[derive(Debug, Default)]
pub struct StoreParts(Option<tokio::sync::mpsc::UnboundedReceiver<Vec<MessageState>>>);

impl StoreParts {
    /// No further parts.
    pub fn none() -> Self {
        StoreParts(None)
    }

    /// The parts `rx` gives until its sender is dropped.
    pub fn from(rx: tokio::sync::mpsc::UnboundedReceiver<Vec<MessageState>>) -> Self {
        StoreParts(Some(rx))
    }

    /// The next part, or `None` once all were given.
    pub async fn next(&mut self) -> Option<Vec<MessageState>> {
        self.0.as_mut()?.recv().await
    }
}

/// A change answered before it is durable (STORE: its answers may go out
/// while the store flushes): [`Durable::wait`] ends once it is durable,
/// with the flush's result. The tagged OK waits for it.
#[derive(Debug, Default)]
pub struct Durable(Option<tokio::sync::oneshot::Receiver<BackendResult<()>>>);

impl Durable {
    /// Already durable (or nothing to make durable).
    pub fn now() -> Self {
        Durable(None)
    }

    /// Durable once `rx` says so.
    pub fn after(rx: tokio::sync::oneshot::Receiver<BackendResult<()>>) -> Self {
        Durable(Some(rx))
    }

    /// Waits until the change is durable.
    pub async fn wait(self) -> BackendResult<()> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err(BackendError::Unavailable("store gone".into()))),
        }
    }
}

/// Outcome of COPY and MOVE (COPYUID).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyOutcome {
    /// UIDVALIDITY of the destination.
    pub uidvalidity: u32,
    /// Source UID → destination UID, in source UID order.
    pub pairs: Vec<(u32, u32)>,
}

/// One message of an APPEND (MULTIAPPEND: several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    /// Flags to set.
    pub flags: Vec<Flag>,
    /// INTERNALDATE, ms since the Unix epoch.
    pub internal_date_ms: i64,
    /// The message.
    pub raw: Vec<u8>,
}

/// Authentication: the entry point of the storage for the IMAP server.
pub trait Backend: Send + Sync + 'static {
    /// A logged-in user's handle.
    type Mailboxes: Mailboxes;

    /// Checks credentials (LOGIN, AUTHENTICATE PLAIN). `peer` is the
    /// client's address (for rate limiting and logs).
    fn authenticate(
        &self,
        user: &str,
        password: &[u8],
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Self::Mailboxes, AuthError>> + Send;
}

/// A logged-in user's mailboxes. Dropped when the connection ends (the core
/// may lock the user's keys when the last handle is gone).
pub trait Mailboxes: Send + Sync + 'static {
    /// Every mailbox (parents that do not exist are not listed).
    fn list(&self) -> impl Future<Output = BackendResult<Vec<MailboxInfo>>> + Send;

    /// CREATE.
    fn create(
        &self,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// DELETE (never INBOX: the IMAP layer refuses it first).
    fn delete(&self, name: &str) -> impl Future<Output = BackendResult<()>> + Send;

    /// RENAME of one mailbox (the IMAP layer renames children one by one and
    /// turns RENAME INBOX into CREATE + MOVE).
    fn rename(&self, from: &str, to: &str) -> impl Future<Output = BackendResult<()>> + Send;

    /// SUBSCRIBE / UNSUBSCRIBE.
    fn subscribe(
        &self,
        name: &str,
        subscribed: bool,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// STATUS.
    fn status(&self, name: &str) -> impl Future<Output = BackendResult<MailboxStatus>> + Send;

    /// SELECT / EXAMINE: snapshot and event stream.
    fn select(&self, name: &str) -> impl Future<Output = BackendResult<Selected>> + Send;

    /// A fresh snapshot of a selected mailbox (after the event stream lagged).
    fn snapshot(&self, mailbox: &MailboxId)
        -> impl Future<Output = BackendResult<Snapshot>> + Send;

    /// Metadata of these UIDs; UIDs that do not exist are left out.
    fn fetch_meta(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
    ) -> impl Future<Output = BackendResult<Vec<MessageMeta>>> + Send;

    /// The full bytes of a message, `None` if the UID does not exist.
    fn fetch_raw(
        &self,
        mailbox: &MailboxId,
        uid: u32,
    ) -> impl Future<Output = BackendResult<Option<Vec<u8>>>> + Send;

    /// The summary of a message, `None` if the UID does not exist. The
    /// default computes it from [`Mailboxes::fetch_raw`]; a backend that
    /// keeps summaries (e.g. encrypted beside the blob, or in memory, hence
    /// shared) overrides it.
    fn fetch_summary(
        &self,
        mailbox: &MailboxId,
        uid: u32,
    ) -> impl Future<Output = BackendResult<Option<Arc<Summary>>>> + Send {
        async move {
            Ok(self
                .fetch_raw(mailbox, uid)
                .await?
                .map(|raw| Arc::new(Summary::parse(&raw))))
        }
    }

    /// The summaries of these UIDs, in order (`None` for a UID that does
    /// not exist). The default asks [`Mailboxes::fetch_summary`] for each;
    /// a backend that keeps summaries answers them together.
    fn fetch_summaries(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
    ) -> impl Future<Output = BackendResult<Vec<Option<Arc<Summary>>>>> + Send {
        async move {
            let mut out = Vec::with_capacity(uids.len());
            for &u in uids {
                out.push(self.fetch_summary(mailbox, u).await?);
            }
            Ok(out)
        }
    }

    /// The search fields of these UIDs, in order (`None` for a UID that
    /// does not exist). With `all` false only [`COMMON_FIELDS`] need be
    /// there (a backend may keep those in memory). The default computes
    /// them from [`Mailboxes::fetch_raw`].
    ///
    /// [`COMMON_FIELDS`]: super::summary::COMMON_FIELDS
    fn fetch_search_fields(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        all: bool,
    ) -> impl Future<Output = BackendResult<Vec<Option<Arc<SearchFields>>>>> + Send {
        let _ = all;
        async move {
            let mut out = Vec::with_capacity(uids.len());
            for &u in uids {
                let raw = self.fetch_raw(mailbox, u).await?;
                out.push(raw.map(|r| Arc::new(SearchFields::parse(&r))));
            }
            Ok(out)
        }
    }

    /// APPEND: returns (UIDVALIDITY, UID) once the message is durable.
    fn append(
        &self,
        name: &str,
        flags: Vec<Flag>,
        internal_date_ms: i64,
        raw: Vec<u8>,
    ) -> impl Future<Output = BackendResult<(u32, u32)>> + Send;

    /// MULTIAPPEND (RFC 3502): appends every message or none (each is
    /// checked before any is written, and all are made durable together);
    /// returns UIDVALIDITY and the UIDs in the messages' order.
    fn append_many(
        &self,
        name: &str,
        msgs: Vec<NewMail>,
    ) -> impl Future<Output = BackendResult<(u32, Vec<u32>)>> + Send;

    /// STORE: changes the flags of the UIDs that exist, except those whose
    /// MODSEQ is above `unchanged_since` (CONDSTORE), which are reported.
    /// The outcome comes as soon as the change is started, before it is
    /// durable: the second value gives further answers as the change is
    /// applied, the third says when it is durable.
    fn store(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        mode: FlagMode,
        flags: &[Flag],
        unchanged_since: Option<u64>,
    ) -> impl Future<Output = BackendResult<(StoreOutcome, StoreParts, Durable)>> + Send;

    /// Expunges exactly these UIDs (the IMAP layer picks the `\Deleted`
    /// ones); returns those that were expunged.
    fn expunge(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
    ) -> impl Future<Output = BackendResult<Vec<u32>>> + Send;

    /// COPY into the mailbox named `dest`.
    fn copy(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        dest: &str,
    ) -> impl Future<Output = BackendResult<CopyOutcome>> + Send;

    /// MOVE into the mailbox named `dest` (the sources are expunged).
    fn move_messages(
        &self,
        mailbox: &MailboxId,
        uids: &[u32],
        dest: &str,
    ) -> impl Future<Output = BackendResult<CopyOutcome>> + Send;

    /// CONDSTORE/QRESYNC: UIDs changed and UIDs expunged since `modseq`
    /// (may over-report, never miss).
    fn changed_since(
        &self,
        mailbox: &MailboxId,
        modseq: u64,
    ) -> impl Future<Output = BackendResult<(Vec<u32>, Vec<u32>)>> + Send;
}
