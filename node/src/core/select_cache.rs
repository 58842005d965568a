//! SELECT's answers, published by the core so that sessions read them
//! without a round trip to the core thread (two thread wake-ups, most of a
//! SELECT's time).
//!
//! A SELECT that goes through the core stages what it answered (the name,
//! the mailbox id, the snapshot and the mailbox's event sender). Once the
//! batch it ran in is durable and its events are sent, the entry is
//! published if the mailbox did not change after the snapshot. Each later
//! batch drops the entries whose mailbox changed, or whose name now names
//! another mailbox, **before** it sends its events. A session that finds an
//! entry subscribes under the cache's lock: it sees the state at the end of
//! an earlier batch and every event after it, as through the core.
//!
//! Whether an entry is current is read from the view without a copy: its
//! UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and number of keywords (the table
//! only grows) are equal, and its
//! shared arrays of UIDs and MODSEQs are the snapshot's
//! ([`MailboxView::shares_columns`]: any shown, removed or changed message
//! makes new ones).

use crate::imap::backend::{Events, Selected, Snapshot};
use crate::store::SledStore;
use aerogramme_proto::ids::{MailboxId, UserId};
use aerogramme_proto::replica::{MailboxView, Replica};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use tokio::sync::broadcast;

/// What a SELECT through the core answered, until its batch is durable.
pub(super) struct Staged {
    pub(super) user: UserId,
    pub(super) name: String,
    pub(super) id: MailboxId,
    pub(super) snapshot: Snapshot,
}

/// A published SELECT answer.
struct Entry {
    id: MailboxId,
    snapshot: Snapshot,
    events: broadcast::Sender<Events>,
}

/// The published answers, by user and mailbox name.
#[derive(Default)]
pub struct SelectCache {
    users: Mutex<HashMap<UserId, HashMap<String, Entry>>>,
}

impl SelectCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, HashMap<String, Entry>>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current answer for `user`'s mailbox `name`, subscribed to its
    /// events; `None` when the core must be asked.
    pub fn select(&self, user: UserId, name: &str) -> Option<Selected> {
        let users = self.lock();
        let e = users.get(&user)?.get(name)?;
        Some(Selected {
            id: e.id,
            snapshot: e.snapshot.clone(),
            events: e.events.subscribe(),
        })
    }

    /// Drops the entries the replica's state no longer matches. Run after
    /// each batch, before its events are sent.
    pub(super) fn retain_current(&self, replica: &Replica<SledStore>) {
        let mut users = self.lock();
        users.retain(|user, boxes| {
            boxes.retain(|name, e| current(replica, user, name, e.id, &e.snapshot));
            !boxes.is_empty()
        });
    }

    /// Publishes the staged answers still current, with their mailboxes'
    /// event senders. Run after a batch's events are sent.
    pub(super) fn publish(
        &self,
        replica: &Replica<SledStore>,
        staged: Vec<Staged>,
        senders: &HashMap<(UserId, MailboxId), broadcast::Sender<Events>>,
    ) {
        if staged.is_empty() {
            return;
        }
        let mut users = self.lock();
        for s in staged {
            let Some(events) = senders.get(&(s.user, s.id)) else {
                continue;
            };
            if !current(replica, &s.user, &s.name, s.id, &s.snapshot) {
                continue;
            }
            users.entry(s.user).or_default().insert(
                s.name,
                Entry {
                    id: s.id,
                    snapshot: s.snapshot,
                    events: events.clone(),
                },
            );
        }
    }

    /// Drops `user`'s entries (keys dropped, user removed).
    pub(super) fn forget(&self, user: &UserId) {
        self.lock().remove(user);
    }
}

/// Whether `snapshot`, taken of mailbox `id` named `name`, is what a SELECT
/// of `name` would answer now.
fn current(
    replica: &Replica<SledStore>,
    user: &UserId,
    name: &str,
    id: MailboxId,
    snapshot: &Snapshot,
) -> bool {
    // The view's checks first: they copy nothing, the name's lookup lists
    // the user's mailboxes.
    replica
        .mailbox(user, &id)
        .is_ok_and(|v| unchanged(v, snapshot))
        && replica.lookup(user, name).ok() == Some(id)
}

fn unchanged(v: &MailboxView, s: &Snapshot) -> bool {
    v.uidvalidity() == s.uidvalidity
        && v.uidnext() == s.uidnext
        && v.highest_modseq() == s.highest_modseq
        && v.shares_columns(&s.uids, &s.modseqs)
        && v.state().known_keyword_count() == s.keywords.len()
}
