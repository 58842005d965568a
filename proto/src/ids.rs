//! Identifiers. All are opaque: none carries a user name, a mailbox name or a
//! message's content, so they may travel and be stored in clear.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One replica (one node) of a community. Derived by the node from its
/// network identity; chosen by the simulator.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId(pub u64);

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{:x}", self.0)
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh identifier from the caller's randomness.
            pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
                let mut b = [0u8; 16];
                rng.fill_bytes(&mut b);
                Self(b)
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, $prefix)?;
                for b in &self.0[..6] {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    };
}

random_id!(
    /// An account. Random, never derived from the login name.
    UserId, "u:"
);
random_id!(
    /// A mailbox. Stable across renames: the name is encrypted metadata.
    MailboxId, "mb:"
);
random_id!(
    /// An immutable message blob (the full RFC 5322 bytes), stored once per user.
    BlobId, "b:"
);
random_id!(
    /// One placement of a blob in a mailbox (what gets a UID). A COPY makes a
    /// new entry that references the same blob.
    EntryId, "e:"
);

impl MailboxId {
    /// The user's INBOX: one id every replica derives alike, so that a node
    /// can deliver to it without the user's keys (it cannot read the
    /// mailbox list), and two nodes creating it at once create one mailbox.
    pub fn inbox_of(user: &UserId) -> MailboxId {
        let mut b = user.0;
        for (i, x) in b.iter_mut().enumerate() {
            *x ^= 0x49 ^ (i as u8).wrapping_mul(0x3b);
        }
        MailboxId(b)
    }
}

/// Identifies one operation of one log: the replica that made it and that
/// replica's sequence number in the log (1, 2, 3, …, gap-free per origin).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId {
    /// The replica that issued the op.
    pub origin: ReplicaId,
    /// Its sequence number at that origin, starting at 1.
    pub seq: u64,
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}#{}", self.origin, self.seq)
    }
}

/// Which log of a user an op belongs to. In clear: it routes and deduplicates.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum LogId {
    /// The account's mailbox tree and settings.
    Mailboxes,
    /// Announcements of the user's blobs (which blob ids exist, their sizes),
    /// so that blobs replicate by version vector like any other log.
    Blobs,
    /// One mailbox's entries, flags and expunges.
    Mailbox(MailboxId),
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn random_ids_differ_and_print_compactly() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let a = UserId::random(&mut rng);
        let b = UserId::random(&mut rng);
        assert_ne!(a, b);
        assert_eq!(format!("{a}").len(), 32);
        assert!(format!("{a:?}").starts_with("u:"));
        let op = OpId {
            origin: ReplicaId(0xab),
            seq: 3,
        };
        assert_eq!(format!("{op:?}"), "rab#3");
    }
}
