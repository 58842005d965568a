//! The mailbox CRDTs of one account, pure state (no UIDs, no MODSEQs: the
//! UID protocol assigns those on top).
//!
//! - [`flag`]: [`Flag`] and validated [`Keyword`]s.
//! - [`state`]: [`MailboxState`], one mailbox's entries, flags and expunges,
//!   fed the decrypted [`MailboxOp`]s of its log in any order.
//! - [`tree`]: [`MailboxTree`], the account's mailbox list, fed [`TreeOp`]s
//!   with their `(Timestamp, OpId)` stamps.
//!
//! Both are op-based CRDTs whose state depends only on the set of ops
//! applied; deduplication by op id happens before, in the op log. Both
//! serialize (postcard) as checkpoints.

pub mod flag;
mod intern;
pub mod state;
pub mod tree;

pub use flag::{Flag, FlagError, FlagMode, Keyword};
pub use state::{
    batch_flags, EntryView, EntryWalk, FlagBits, FlagChange, MailboxOp, MailboxState, ObservedTag,
    SharedFlags, MAX_FLAG_BATCH, MAX_FLAG_BATCH_BYTES,
};
pub use tree::{MailboxTree, MailboxView, NameError, SpecialUse, Stamp, TreeOp};
