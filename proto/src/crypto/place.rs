//! Where a ciphertext belongs: the associated data of every encryption.

use super::{CryptoError, FORMAT_VERSION};
use crate::ids::{BlobId, LogId, OpId, UserId};
use serde::{Deserialize, Serialize};

/// Where a ciphertext belongs. Authenticated (never encrypted) with the
/// ciphertext, so a ciphertext moved to another place fails to decrypt.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Place {
    /// The payload of one operation of one log.
    Op {
        /// Owner of the log.
        user: UserId,
        /// The log.
        log: LogId,
        /// The operation.
        op: OpId,
    },
    /// One chunk of a message blob.
    Blob {
        /// Owner of the blob.
        user: UserId,
        /// The blob.
        blob: BlobId,
        /// Index of the chunk in the blob.
        chunk: u32,
    },
    /// The summary (envelope, structure) of a message blob.
    Summary {
        /// Owner of the blob.
        user: UserId,
        /// The blob.
        blob: BlobId,
    },
    /// A checkpoint of a log, covering its ops up to `upto`.
    Checkpoint {
        /// Owner of the log.
        user: UserId,
        /// The log.
        log: LogId,
        /// What the checkpoint covers (meaning defined by the log layer).
        upto: u64,
    },
    /// The account's wrapped secrets.
    Account {
        /// The account.
        user: UserId,
    },
    /// A message delivered as a sealed box (without the user's password).
    Sealed {
        /// The recipient.
        user: UserId,
        /// The blob being delivered.
        blob: BlobId,
    },
}

impl Place {
    /// Domain tag that starts [`Place::associated_data`].
    pub const AD_DOMAIN: &'static [u8] = b"aerogramme/v1/ad";

    /// The user this place belongs to.
    pub fn user(&self) -> &UserId {
        match self {
            Place::Op { user, .. }
            | Place::Blob { user, .. }
            | Place::Summary { user, .. }
            | Place::Checkpoint { user, .. }
            | Place::Account { user }
            | Place::Sealed { user, .. } => user,
        }
    }

    /// Associated-data encoding: [`Place::AD_DOMAIN`], the format version
    /// byte, then the postcard encoding of `self`.
    ///
    /// Postcard cannot fail on these fixed-shape types; should it ever, the
    /// error is [`CryptoError::Internal`] rather than a panic.
    pub fn associated_data(&self) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(Self::AD_DOMAIN.len() + 1 + 64);
        out.extend_from_slice(Self::AD_DOMAIN);
        out.push(FORMAT_VERSION);
        postcard::to_extend(self, out).map_err(|_| CryptoError::Internal)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{any_place, op_place};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ad_starts_with_domain_and_version() {
        let ad = op_place([1; 16], 1).associated_data().unwrap();
        assert!(ad.starts_with(b"aerogramme/v1/ad\x01"));
    }

    #[test]
    fn distinct_places_distinct_ad() {
        assert_ne!(
            op_place([1; 16], 1).associated_data(),
            op_place([1; 16], 2).associated_data()
        );
        assert_ne!(
            op_place([1; 16], 1).associated_data(),
            op_place([2; 16], 1).associated_data()
        );
        let user = UserId([1; 16]);
        let blob = BlobId([2; 16]);
        assert_ne!(
            Place::Summary { user, blob }.associated_data(),
            Place::Sealed { user, blob }.associated_data()
        );
        assert_eq!(op_place([1; 16], 1).user(), &UserId([1; 16]));
    }

    proptest! {
        #[test]
        fn ad_is_postcard(place in any_place()) {
            let ad = place.associated_data().unwrap();
            let encoded = ad.strip_prefix(b"aerogramme/v1/ad\x01").unwrap();
            prop_assert_eq!(postcard::from_bytes::<Place>(encoded).unwrap(), place);
        }

        #[test]
        fn ad_is_injective(a in any_place(), b in any_place()) {
            prop_assert_eq!(a == b, a.associated_data().unwrap() == b.associated_data().unwrap());
        }
    }
}
