//! The user's symmetric master key and its place-bound ciphertexts.

use super::{
    aead_open_into, aead_seal, hkdf32, take_array, CryptoError, Place, FINGERPRINT_LEN,
    FORMAT_VERSION, KEY_LEN, KIND_DATA, NONCE_LEN, TAG_LEN,
};
use crate::{CryptoRng, RngCore};
use orion::hazardous::mac::blake2b::{self, Blake2b};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// `[version][kind][fingerprint]`
const HEADER_LEN: usize = 2 + FINGERPRINT_LEN;
/// Shortest valid ciphertext (empty plaintext).
const MIN_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
const HKDF_SALT: &[u8] = b"aerogramme/v1/master-key";
const INFO_DATA: &[u8] = b"data encryption";
const INFO_FINGERPRINT: &[u8] = b"place fingerprint";

/// A user's 32-byte symmetric key for all of their mailbox data.
///
/// Two subkeys are derived from it with HKDF-SHA256: one encrypts
/// (XChaCha20-Poly1305), one keys the place fingerprint (BLAKE2b-MAC).
/// Zeroized on drop; `Debug` does not print it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    key: [u8; KEY_LEN],
    /// Derived once, at construction: deriving per message costs more than
    /// the encryption of a small op.
    data_key: [u8; KEY_LEN],
    fp_key: [u8; KEY_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl PartialEq for MasterKey {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        orion::util::secure_cmp(&self.key, &other.key).is_ok()
    }
}

impl Eq for MasterKey {}

impl MasterKey {
    /// Length of the key in bytes.
    pub const LEN: usize = KEY_LEN;

    /// A fresh key from the caller's randomness.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(&mut key[..]);
        Self::with_subkeys(*key)
    }

    fn with_subkeys(key: [u8; KEY_LEN]) -> Self {
        let mut k = Self {
            key,
            data_key: [0; KEY_LEN],
            fp_key: [0; KEY_LEN],
        };
        // HKDF over a 32-byte key and short constant labels cannot fail; the
        // fallback keeps the all-zero subkeys unreachable in practice and is
        // not a panic.
        if let (Ok(d), Ok(f)) = (
            hkdf32(HKDF_SALT, &k.key, INFO_DATA),
            hkdf32(HKDF_SALT, &k.key, INFO_FINGERPRINT),
        ) {
            k.data_key.copy_from_slice(&d[..]);
            k.fp_key.copy_from_slice(&f[..]);
        }
        k
    }

    /// A key from its 32 raw bytes; [`CryptoError::InvalidKey`] on any other length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let key =
            Zeroizing::new(<[u8; KEY_LEN]>::try_from(bytes).map_err(|_| CryptoError::InvalidKey)?);
        Ok(Self::with_subkeys(*key))
    }

    /// The raw key bytes (zeroized when the returned value is dropped).
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.key)
    }

    /// Encrypts `plaintext` for `place` with a fresh random nonce.
    ///
    /// Output: `[version=1][kind=1][fingerprint 8][nonce 24][ciphertext+tag 16]`,
    /// authenticated with associated data `header || place.associated_data()`.
    /// Fails only with [`CryptoError::TooLarge`] (plaintext over 256 GiB).
    pub fn encrypt<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        place: &Place,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let (data_key, fp_key) = self.subkeys()?;
        let place_ad = place.associated_data()?;
        let fingerprint = fingerprint(fp_key, &place_ad)?;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);

        let mut out = Vec::with_capacity(plaintext.len().saturating_add(MIN_LEN));
        out.push(FORMAT_VERSION);
        out.push(KIND_DATA);
        out.extend_from_slice(&fingerprint);
        let ad = associated_data(&out, &place_ad);
        out.extend_from_slice(&nonce);
        aead_seal(data_key, &nonce, &ad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Authenticates and decrypts a ciphertext made by [`MasterKey::encrypt`] for `place`.
    ///
    /// Errors: [`CryptoError::UnsupportedVersion`] for an unknown first byte,
    /// [`CryptoError::Malformed`] if too short or not a master-key ciphertext,
    /// and on authentication failure [`CryptoError::WrongPlace`] when the
    /// fingerprint is not `place`'s (moved ciphertext — or another master
    /// key, whose fingerprints differ too), else [`CryptoError::Tampered`].
    pub fn decrypt(&self, place: &Place, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        self.decrypt_into(place, ciphertext, &mut out)?;
        Ok(out)
    }

    /// [`MasterKey::decrypt`] appending the plaintext to `out` (unchanged on
    /// error), so that the chunks of a message are decrypted into one buffer.
    pub fn decrypt_into(
        &self,
        place: &Place,
        ciphertext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let (&version, _) = ciphertext.split_first().ok_or(CryptoError::Malformed)?;
        if version != FORMAT_VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        if ciphertext.len() < MIN_LEN {
            return Err(CryptoError::Malformed);
        }
        let (header, body) = take_array::<HEADER_LEN>(ciphertext)?;
        let [_, kind, stored_fp @ ..] = header;
        if *kind != KIND_DATA {
            return Err(CryptoError::Malformed);
        }
        let (nonce, sealed) = take_array::<NONCE_LEN>(body)?;

        let (data_key, fp_key) = self.subkeys()?;
        let place_ad = place.associated_data()?;
        let ad = associated_data(header, &place_ad);
        match aead_open_into(data_key, nonce, &ad, sealed, out) {
            Some(()) => Ok(()),
            None => {
                let expected = fingerprint(fp_key, &place_ad)?;
                if orion::util::secure_cmp(&expected, stored_fp).is_ok() {
                    Err(CryptoError::Tampered)
                } else {
                    Err(CryptoError::WrongPlace)
                }
            }
        }
    }

    /// (data-encryption key, fingerprint key).
    fn subkeys(&self) -> Result<(&[u8; KEY_LEN], &[u8; KEY_LEN]), CryptoError> {
        Ok((&self.data_key, &self.fp_key))
    }
}

fn associated_data(header: &[u8], place_ad: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(header.len() + place_ad.len());
    ad.extend_from_slice(header);
    ad.extend_from_slice(place_ad);
    ad
}

/// First 8 bytes of BLAKE2b-MAC(fingerprint key, place encoding): reveals
/// nothing about the place to whoever lacks the master key.
fn fingerprint(
    fp_key: &[u8; KEY_LEN],
    place_ad: &[u8],
) -> Result<[u8; FINGERPRINT_LEN], CryptoError> {
    let key = blake2b::SecretKey::try_from(&fp_key[..]).map_err(|_| CryptoError::Internal)?;
    let mut mac = Blake2b::new(&key, FINGERPRINT_LEN).map_err(|_| CryptoError::Internal)?;
    mac.update(place_ad).map_err(|_| CryptoError::Internal)?;
    let tag = mac.finalize().map_err(|_| CryptoError::Internal)?;
    let tag: &[u8] = tag.unprotected_as_ref();
    <[u8; FINGERPRINT_LEN]>::try_from(tag).map_err(|_| CryptoError::Internal)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{any_place, op_place, rng};
    use super::*;
    use crate::ids::{BlobId, UserId};
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_fresh_nonce() {
        let mut rng = rng(1);
        let key = MasterKey::generate(&mut rng);
        let place = op_place([1; 16], 1);
        for msg in [&b""[..], b"hello", &[0xaa; 1000][..]] {
            let a = key.encrypt(&mut rng, &place, msg).unwrap();
            let b = key.encrypt(&mut rng, &place, msg).unwrap();
            assert_ne!(a, b);
            assert_eq!(a.len(), MIN_LEN + msg.len());
            assert_eq!(a[..2], [1, KIND_DATA]);
            assert_eq!(key.decrypt(&place, &a).unwrap(), msg);
            assert_eq!(key.decrypt(&place, &b).unwrap(), msg);
        }
    }

    #[test]
    fn key_bytes_round_trip_and_debug_hides_key() {
        let key = MasterKey::generate(&mut rng(2));
        let again = MasterKey::from_bytes(&key.to_bytes()[..]).unwrap();
        assert_eq!(key, again);
        assert_ne!(key, MasterKey::generate(&mut rng(3)));
        assert_eq!(
            MasterKey::from_bytes(&[0; 31]),
            Err(CryptoError::InvalidKey)
        );
        assert_eq!(
            MasterKey::from_bytes(&[0; 33]),
            Err(CryptoError::InvalidKey)
        );
        assert_eq!(format!("{key:?}"), "MasterKey(***)");
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut rng = rng(4);
        let key = MasterKey::generate(&mut rng);
        let place = op_place([1; 16], 1);
        let ct = key.encrypt(&mut rng, &place, b"some mailbox op").unwrap();
        for i in 0..ct.len() {
            for bit in 0..8 {
                let mut bad = ct.clone();
                bad[i] ^= 1 << bit;
                let expected = match i {
                    0 => CryptoError::UnsupportedVersion(bad[0]),
                    1 => CryptoError::Malformed,
                    2..HEADER_LEN => CryptoError::WrongPlace,
                    _ => CryptoError::Tampered,
                };
                assert_eq!(
                    key.decrypt(&place, &bad),
                    Err(expected),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn moved_ciphertext_is_wrong_place() {
        let mut rng = rng(5);
        let key = MasterKey::generate(&mut rng);
        let (user, other_user) = (UserId([1; 16]), UserId([2; 16]));
        let (blob, other_blob) = (BlobId([3; 16]), BlobId([4; 16]));
        let pairs = [
            (op_place([1; 16], 1), op_place([1; 16], 2)),
            (op_place([1; 16], 1), op_place([2; 16], 1)),
            (
                Place::Summary { user, blob },
                Place::Summary {
                    user,
                    blob: other_blob,
                },
            ),
            (
                Place::Summary { user, blob },
                Place::Summary {
                    user: other_user,
                    blob,
                },
            ),
            (Place::Summary { user, blob }, Place::Sealed { user, blob }),
            (
                Place::Blob {
                    user,
                    blob,
                    chunk: 0,
                },
                Place::Blob {
                    user,
                    blob,
                    chunk: 1,
                },
            ),
            (
                Place::Blob {
                    user,
                    blob,
                    chunk: 0,
                },
                Place::Blob {
                    user,
                    blob: other_blob,
                    chunk: 0,
                },
            ),
        ];
        for (a, b) in pairs {
            let ct = key.encrypt(&mut rng, &a, b"x").unwrap();
            assert_eq!(
                key.decrypt(&b, &ct),
                Err(CryptoError::WrongPlace),
                "{a:?} -> {b:?}"
            );
            let ct = key.encrypt(&mut rng, &b, b"x").unwrap();
            assert_eq!(
                key.decrypt(&a, &ct),
                Err(CryptoError::WrongPlace),
                "{b:?} -> {a:?}"
            );
        }
    }

    #[test]
    fn other_key_fails() {
        let mut rng = rng(6);
        let key = MasterKey::generate(&mut rng);
        let other = MasterKey::generate(&mut rng);
        let place = op_place([1; 16], 1);
        let ct = key.encrypt(&mut rng, &place, b"x").unwrap();
        assert!(other.decrypt(&place, &ct).is_err());
    }

    #[test]
    fn every_truncation_fails() {
        let mut rng = rng(7);
        let key = MasterKey::generate(&mut rng);
        let place = op_place([1; 16], 1);
        let ct = key.encrypt(&mut rng, &place, b"truncate me").unwrap();
        assert_eq!(key.decrypt(&place, &[]), Err(CryptoError::Malformed));
        for len in 1..ct.len() {
            let expected = if len < MIN_LEN {
                CryptoError::Malformed
            } else {
                CryptoError::Tampered
            };
            assert_eq!(key.decrypt(&place, &ct[..len]), Err(expected), "len {len}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_round_trip(
            seed in any::<u64>(),
            place in any_place(),
            msg in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let mut rng = rng(seed);
            let key = MasterKey::generate(&mut rng);
            let ct = key.encrypt(&mut rng, &place, &msg).unwrap();
            prop_assert_eq!(key.decrypt(&place, &ct).unwrap(), msg);
        }

        #[test]
        fn prop_garbage_never_panics(
            place in any_place(),
            mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
            set_header in any::<bool>(),
        ) {
            if set_header && bytes.len() >= 2 {
                bytes[0] = FORMAT_VERSION;
                bytes[1] = KIND_DATA;
            }
            let key = MasterKey::generate(&mut rng(8));
            prop_assert!(key.decrypt(&place, &bytes).is_err());
            let _ = MasterKey::from_bytes(&bytes);
        }
    }
}
