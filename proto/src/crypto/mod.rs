//! Cryptography of Aerogramme, sans-IO.
//!
//! Every primitive comes from [`orion`]; this module only chooses them,
//! binds every ciphertext to the [`Place`] it belongs to, and defines the
//! byte formats. No function here touches the OS random number generator:
//! all randomness is drawn from the caller's `rng`
//! ([`crate::RngCore`] + [`crate::CryptoRng`]).
//!
//! * [`MasterKey`]: a user's 32-byte symmetric key for mailbox data
//!   (XChaCha20-Poly1305, place-bound).
//! * [`KeyPair`], [`PublicKey`], [`SecretKey`], [`seal`]: X25519 sealed boxes,
//!   so a message can be delivered to a user whose password is unknown.
//! * [`UserSecrets`], [`WrappedSecrets`], [`AccountKeys`], [`Argon2Params`]:
//!   a user's secrets wrapped under a password-derived key (Argon2id).
//!
//! Byte formats (all integers are single bytes unless stated):
//!
//! * master-key ciphertext: `[version=1][kind=1][fingerprint 8][nonce 24][ct+tag]`
//! * sealed box: `[version=1][kind=2][ephemeral public key 32][nonce 24][ct+tag]`
//! * wrapped secrets: postcard of [`WrappedSecrets`], whose first byte is its version.

mod keys;
mod master;
mod password;
mod place;

pub use keys::{seal, KeyPair, PublicKey, Sealer, SecretKey};
pub use master::MasterKey;
pub use password::{AccountKeys, Argon2Params, UserSecrets, WrappedSecrets};
pub use place::Place;

use orion::hazardous::aead::chacha20poly1305::P_MAX;
use orion::hazardous::aead::xchacha20poly1305::{self as xchacha, XChaCha20Poly1305};
use orion::hazardous::kdf::hkdf::{Hkdf, SHA256};
use zeroize::Zeroizing;

/// The version byte that starts every ciphertext this module writes.
pub const FORMAT_VERSION: u8 = 1;
/// `kind` byte of a [`MasterKey`] ciphertext.
pub const KIND_DATA: u8 = 1;
/// `kind` byte of a sealed box (see [`seal`]).
pub const KIND_SEALED: u8 = 2;
/// Length of every symmetric key and of X25519 keys.
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of a Poly1305 authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of the keyed place fingerprint in a [`MasterKey`] ciphertext.
pub const FINGERPRINT_LEN: usize = 8;

/// Raw key bytes, zeroized on drop.
type KeyBytes = Zeroizing<[u8; KEY_LEN]>;

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Wrapped secrets failed authentication: the password (or the user id)
    /// is wrong, or the record was altered — the two cannot be told apart.
    #[error("wrong password")]
    WrongPassword,
    /// The ciphertext failed authentication: corrupted, altered, or sealed
    /// for another key.
    #[error("ciphertext failed authentication")]
    Tampered,
    /// The ciphertext failed authentication and its place fingerprint is not
    /// the expected place's: it was most likely moved from another place (or
    /// encrypted under another master key).
    #[error("ciphertext belongs to another place")]
    WrongPlace,
    /// The format version byte is not one this code reads.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// Too short, bad header, or undecodable.
    #[error("malformed input")]
    Malformed,
    /// Argon2 parameters are out of the accepted bounds.
    #[error("invalid Argon2 parameters")]
    InvalidParams,
    /// A key has the wrong length or is unusable (e.g. a low-order X25519 point).
    #[error("invalid key")]
    InvalidKey,
    /// The plaintext exceeds what XChaCha20-Poly1305 can encrypt (256 GiB).
    #[error("plaintext too large")]
    TooLarge,
    /// A primitive refused inputs it always accepts; should never happen.
    #[error("internal cryptographic failure")]
    Internal,
}

/// Appends `XChaCha20-Poly1305(key, nonce, ad, plaintext)` (ciphertext + tag) to `out`.
fn aead_seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    if u64::try_from(plaintext.len()).map_or(true, |n| n > P_MAX) {
        return Err(CryptoError::TooLarge);
    }
    let sk = xchacha::SecretKey::try_from(&key[..]).map_err(|_| CryptoError::Internal)?;
    let n = xchacha::Nonce::try_from(&nonce[..]).map_err(|_| CryptoError::Internal)?;
    let start = out.len();
    let end = start
        .checked_add(plaintext.len())
        .and_then(|e| e.checked_add(TAG_LEN))
        .ok_or(CryptoError::TooLarge)?;
    out.resize(end, 0);
    let dst = out.get_mut(start..).ok_or(CryptoError::Internal)?;
    XChaCha20Poly1305::seal(&sk, &n, plaintext, Some(ad), dst).map_err(|_| CryptoError::Internal)
}

/// Authenticates and decrypts `ct_and_tag`; `None` if authentication fails.
fn aead_open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    ct_and_tag: &[u8],
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    aead_open_into(key, nonce, ad, ct_and_tag, &mut out)?;
    Some(out)
}

/// [`aead_open`] appending the plaintext to `out` (left as it was on
/// failure): no buffer of its own to copy from.
fn aead_open_into(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    ct_and_tag: &[u8],
    out: &mut Vec<u8>,
) -> Option<()> {
    let len = ct_and_tag.len().checked_sub(TAG_LEN)?;
    let sk = xchacha::SecretKey::try_from(&key[..]).ok()?;
    let n = xchacha::Nonce::try_from(&nonce[..]).ok()?;
    let start = out.len();
    out.resize(start + len, 0);
    if XChaCha20Poly1305::open(&sk, &n, ct_and_tag, Some(ad), &mut out[start..]).is_err() {
        out.truncate(start);
        return None;
    }
    Some(())
}

/// HKDF-SHA256 to a 32-byte key.
fn hkdf32(salt: &[u8], ikm: &[u8], info: &[u8]) -> Result<KeyBytes, CryptoError> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    Hkdf::<SHA256>::derive_key(salt, ikm, Some(info), &mut out[..])
        .map_err(|_| CryptoError::Internal)?;
    Ok(out)
}

/// Appends `v` as an unsigned LEB128 varint, as postcard encodes integers.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Splits `bytes` into a fixed-size array and the rest.
fn take_array<const N: usize>(bytes: &[u8]) -> Result<(&[u8; N], &[u8]), CryptoError> {
    let (head, rest) = bytes.split_at_checked(N).ok_or(CryptoError::Malformed)?;
    let head = <&[u8; N]>::try_from(head).map_err(|_| CryptoError::Malformed)?;
    Ok((head, rest))
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::Place;
    use crate::ids::{BlobId, LogId, MailboxId, OpId, ReplicaId, UserId};
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    pub fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    pub fn op_place(user: [u8; 16], seq: u64) -> Place {
        Place::Op {
            user: UserId(user),
            log: LogId::Mailbox(MailboxId([7; 16])),
            op: OpId {
                origin: ReplicaId(3),
                seq,
            },
        }
    }

    /// Every variant of [`Place`] with arbitrary ids.
    pub fn any_place() -> impl Strategy<Value = Place> {
        let user = any::<[u8; 16]>().prop_map(UserId);
        let blob = any::<[u8; 16]>().prop_map(BlobId);
        let log = prop_oneof![
            Just(LogId::Mailboxes),
            Just(LogId::Blobs),
            any::<[u8; 16]>().prop_map(|m| LogId::Mailbox(MailboxId(m))),
        ];
        let op = (any::<u64>(), any::<u64>()).prop_map(|(o, seq)| OpId {
            origin: ReplicaId(o),
            seq,
        });
        prop_oneof![
            (user.clone(), log.clone(), op).prop_map(|(user, log, op)| Place::Op { user, log, op }),
            (user.clone(), blob.clone(), any::<u32>())
                .prop_map(|(user, blob, chunk)| Place::Blob { user, blob, chunk }),
            (user.clone(), blob.clone()).prop_map(|(user, blob)| Place::Summary { user, blob }),
            (user.clone(), log, any::<u64>()).prop_map(|(user, log, upto)| Place::Checkpoint {
                user,
                log,
                upto
            }),
            user.clone().prop_map(|user| Place::Account { user }),
            (user, blob).prop_map(|(user, blob)| Place::Sealed { user, blob }),
        ]
    }
}
