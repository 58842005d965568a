//! X25519 key pairs and sealed boxes (delivery without the user's password).

use super::{
    aead_open, aead_seal, hkdf32, take_array, CryptoError, Place, FORMAT_VERSION, KEY_LEN,
    KIND_SEALED, NONCE_LEN, TAG_LEN,
};
use crate::{CryptoRng, RngCore};
use orion::hazardous::ecc::x25519;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// `[version][kind][ephemeral public key]`
const HEADER_LEN: usize = 2 + KEY_LEN;
/// Shortest valid sealed box (empty plaintext).
const MIN_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// HKDF salt of the sealed-box key; the info is `ephemeral pk || recipient pk`.
const SEALED_SALT: &[u8] = b"aerogramme/v1/sealed-box";

/// An X25519 public key (32 bytes). Serialized as its 32 raw bytes.
///
/// Construction from bytes rejects the low-order points (which would give
/// an all-zero shared secret) and encodings with the top bit set.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "[u8; 32]", into = "[u8; 32]")]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Length in bytes.
    pub const LEN: usize = KEY_LEN;

    /// Parses and validates 32 bytes ([`CryptoError::InvalidKey`] otherwise).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes = <[u8; KEY_LEN]>::try_from(bytes).map_err(|_| CryptoError::InvalidKey)?;
        Self::try_from(bytes)
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.0
    }

    /// The 32 raw bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn to_orion(self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl TryFrom<[u8; KEY_LEN]> for PublicKey {
    type Error = CryptoError;

    /// Validates like [`PublicKey::from_bytes`].
    fn try_from(bytes: [u8; KEY_LEN]) -> Result<Self, CryptoError> {
        if bytes[KEY_LEN - 1] & 0x80 != 0 {
            return Err(CryptoError::InvalidKey);
        }
        // A clamped scalar sends exactly the low-order points to zero, which
        // `key_agreement` reports as an error; any fixed scalar detects them.
        let probe = x25519::PrivateKey::from([0x5a; KEY_LEN]);
        x25519::key_agreement(&probe, &x25519::PublicKey::from(bytes))
            .map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self(bytes))
    }
}

impl From<PublicKey> for [u8; KEY_LEN] {
    fn from(pk: PublicKey) -> Self {
        pk.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pk:")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An X25519 private key (32 bytes). Zeroized on drop; `Debug` hides it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Length in bytes.
    pub const LEN: usize = KEY_LEN;

    /// A private key from its 32 raw bytes ([`CryptoError::InvalidKey`] otherwise).
    /// Any 32 bytes are a valid X25519 scalar (it is clamped when used).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        <[u8; KEY_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| CryptoError::InvalidKey)
    }

    /// The raw bytes (zeroized when the returned value is dropped).
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.0)
    }

    fn to_orion(&self) -> Result<x25519::PrivateKey, CryptoError> {
        x25519::PrivateKey::try_from(&self.0).map_err(|_| CryptoError::InvalidKey)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// An X25519 key pair: a user's (or an ephemeral) key for sealed boxes.
/// `Debug` shows the public half only.
#[derive(Clone)]
pub struct KeyPair {
    secret: SecretKey,
    public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair from the caller's randomness.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        loop {
            let mut secret = SecretKey([0; KEY_LEN]);
            rng.fill_bytes(&mut secret.0);
            // Deriving a public key never fails for a clamped scalar; should
            // orion ever refuse one, draw again rather than panic.
            if let Ok(pair) = Self::from_secret(secret) {
                return pair;
            }
        }
    }

    /// The key pair of a private key.
    pub fn from_secret(secret: SecretKey) -> Result<Self, CryptoError> {
        let public = x25519::PublicKey::try_from(&secret.to_orion()?)
            .map_err(|_| CryptoError::InvalidKey)?;
        // A multiple of the base point by a clamped scalar lies in the prime
        // order subgroup and is never a low-order point: it needs none of the
        // checks `PublicKey::try_from` makes on untrusted bytes (its probe
        // key agreement doubled the cost of every key pair, and each sealed
        // delivery makes one).
        let public = <[u8; KEY_LEN]>::try_from(public.as_ref())
            .map(PublicKey)
            .map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self { secret, public })
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The private half.
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// Opens a sealed box made by [`seal`] for this key pair's public key and `place`.
    ///
    /// Errors: [`CryptoError::UnsupportedVersion`], [`CryptoError::Malformed`]
    /// (too short, not a sealed box), else [`CryptoError::Tampered`] for any
    /// authentication failure: a corrupted box, a box sealed for another
    /// key, and a box moved from another place are indistinguishable
    /// (a sealed box carries no place fingerprint).
    pub fn open_sealed(&self, place: &Place, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (&version, _) = sealed.split_first().ok_or(CryptoError::Malformed)?;
        if version != FORMAT_VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        if sealed.len() < MIN_LEN {
            return Err(CryptoError::Malformed);
        }
        let (header, body) = take_array::<HEADER_LEN>(sealed)?;
        let [_, kind, ephemeral @ ..] = header;
        if *kind != KIND_SEALED {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ciphertext) = take_array::<NONCE_LEN>(body)?;

        let shared = x25519::key_agreement(
            &self.secret.to_orion()?,
            &x25519::PublicKey::from(*ephemeral),
        )
        .map_err(|_| CryptoError::Tampered)?;
        let key = sealed_key(shared.unprotected_as_ref(), ephemeral, &self.public.0)?;
        let ad = associated_data(header, place)?;
        aead_open(&key, nonce, &ad, ciphertext).ok_or(CryptoError::Tampered)
    }
}

/// Seals `plaintext` for `recipient` at `place`, without any secret of the
/// recipient: ephemeral X25519 key pair from `rng`, shared secret →
/// HKDF-SHA256 (salt: domain string; info: ephemeral pk ‖ recipient pk) →
/// XChaCha20-Poly1305 with associated data `header || place.associated_data()`.
///
/// Output: `[version=1][kind=2][ephemeral pk 32][nonce 24][ciphertext+tag 16]`.
/// Fails only with [`CryptoError::TooLarge`] (plaintext over 256 GiB).
pub fn seal<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    recipient: &PublicKey,
    place: &Place,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    Sealer::new(rng, recipient)?.seal(rng, place, plaintext)
}

/// Seals several boxes for one recipient under one ephemeral key pair: the
/// boxes of one delivery (the message, its metadata, its entry), so that
/// the X25519 work is done once per delivery instead of once per box. Each
/// box has its own random nonce and its own place, and opens with
/// [`KeyPair::open_sealed`] exactly like one made by [`seal`] (same format;
/// the boxes carry the same ephemeral public key, so they can be told to
/// belong together).
pub struct Sealer {
    ephemeral: [u8; KEY_LEN],
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A fresh ephemeral key pair from `rng`, agreed with `recipient`.
    pub fn new<R: RngCore + CryptoRng + ?Sized>(
        rng: &mut R,
        recipient: &PublicKey,
    ) -> Result<Self, CryptoError> {
        let ephemeral = KeyPair::generate(rng);
        let shared = x25519::key_agreement(&ephemeral.secret.to_orion()?, &recipient.to_orion())
            .map_err(|_| CryptoError::InvalidKey)?;
        let key = sealed_key(
            shared.unprotected_as_ref(),
            &ephemeral.public.0,
            &recipient.0,
        )?;
        Ok(Sealer {
            ephemeral: ephemeral.public.0,
            key,
        })
    }

    /// Seals `plaintext` at `place` (see [`seal`]).
    pub fn seal<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        place: &Place,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(plaintext.len().saturating_add(MIN_LEN));
        out.push(FORMAT_VERSION);
        out.push(KIND_SEALED);
        out.extend_from_slice(&self.ephemeral);
        let ad = associated_data(&out, place)?;
        out.extend_from_slice(&nonce);
        aead_seal(&self.key, &nonce, &ad, plaintext, &mut out)?;
        Ok(out)
    }
}

fn sealed_key(
    shared: &[u8],
    ephemeral: &[u8; KEY_LEN],
    recipient: &[u8; KEY_LEN],
) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut info = [0u8; 2 * KEY_LEN];
    let (e, r) = info.split_at_mut(KEY_LEN);
    e.copy_from_slice(ephemeral);
    r.copy_from_slice(recipient);
    hkdf32(SEALED_SALT, shared, &info)
}

fn associated_data(header: &[u8], place: &Place) -> Result<Vec<u8>, CryptoError> {
    let mut ad = header.to_vec();
    ad.extend(place.associated_data()?);
    Ok(ad)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{any_place, op_place, rng};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_sealer_many_boxes() {
        let mut r = rng(11);
        let pair = KeyPair::generate(&mut r);
        let sealer = Sealer::new(&mut r, pair.public()).unwrap();
        let a = op_place([1; 16], 1);
        let b = op_place([1; 16], 2);
        let x = sealer.seal(&mut r, &a, b"first").unwrap();
        let y = sealer.seal(&mut r, &b, b"second").unwrap();
        let z = sealer.seal(&mut r, &a, b"first").unwrap();
        assert_ne!(x, z, "fresh nonce per box");
        assert_eq!(pair.open_sealed(&a, &x).unwrap(), b"first");
        assert_eq!(pair.open_sealed(&b, &y).unwrap(), b"second");
        assert_eq!(pair.open_sealed(&b, &x), Err(CryptoError::Tampered));
        let other = KeyPair::generate(&mut r);
        assert_eq!(other.open_sealed(&a, &x), Err(CryptoError::Tampered));
    }

    #[test]
    fn sealed_round_trip() {
        let mut rng = rng(10);
        let pair = KeyPair::generate(&mut rng);
        let place = op_place([1; 16], 1);
        for msg in [&b""[..], b"incoming mail", &[7; 3000][..]] {
            let a = seal(&mut rng, pair.public(), &place, msg).unwrap();
            let b = seal(&mut rng, pair.public(), &place, msg).unwrap();
            assert_ne!(a, b);
            assert_eq!(a.len(), MIN_LEN + msg.len());
            assert_eq!(a[..2], [FORMAT_VERSION, KIND_SEALED]);
            assert_eq!(pair.open_sealed(&place, &a).unwrap(), msg);
            assert_eq!(pair.open_sealed(&place, &b).unwrap(), msg);
        }
    }

    #[test]
    fn only_the_matching_key_opens() {
        let mut rng = rng(11);
        let alice = KeyPair::generate(&mut rng);
        let bob = KeyPair::generate(&mut rng);
        let place = op_place([1; 16], 1);
        let sealed = seal(&mut rng, alice.public(), &place, b"for alice").unwrap();
        assert_eq!(bob.open_sealed(&place, &sealed), Err(CryptoError::Tampered));
        assert_eq!(alice.open_sealed(&place, &sealed).unwrap(), b"for alice");
        // A moved box cannot be told from a tampered one.
        let other = op_place([1; 16], 2);
        assert_eq!(
            alice.open_sealed(&other, &sealed),
            Err(CryptoError::Tampered)
        );
    }

    #[test]
    fn key_bytes_round_trip() {
        let mut rng = rng(12);
        let pair = KeyPair::generate(&mut rng);
        let pk = *pair.public();
        assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).unwrap(), pk);
        assert_eq!(PublicKey::from_bytes(pk.as_bytes()).unwrap(), pk);
        let encoded = postcard::to_allocvec(&pk).unwrap();
        assert_eq!(encoded, pk.to_bytes());
        assert_eq!(postcard::from_bytes::<PublicKey>(&encoded).unwrap(), pk);
        let again =
            KeyPair::from_secret(SecretKey::from_bytes(&pair.secret().to_bytes()[..]).unwrap());
        assert_eq!(again.unwrap().public(), &pk);
        assert!(format!("{pk:?}").starts_with("pk:"));
        assert_eq!(format!("{pk}").len(), 64);
        assert_eq!(format!("{:?}", pair.secret()), "SecretKey(***)");
        assert!(!format!("{pair:?}").contains("SecretKey"));
    }

    #[test]
    fn bad_public_keys_are_rejected() {
        assert_eq!(
            PublicKey::from_bytes(&[1; 31]),
            Err(CryptoError::InvalidKey)
        );
        assert_eq!(
            PublicKey::from_bytes(&[1; 33]),
            Err(CryptoError::InvalidKey)
        );
        assert_eq!(
            SecretKey::from_bytes(&[1; 31]).err(),
            Some(CryptoError::InvalidKey)
        );
        // Low-order points (RFC 7748 §6.1 / libsodium's blocklist).
        let mut p = [0u8; 32];
        assert_eq!(PublicKey::from_bytes(&p), Err(CryptoError::InvalidKey));
        p[0] = 1;
        assert_eq!(PublicKey::from_bytes(&p), Err(CryptoError::InvalidKey));
        let order8: [u8; 32] = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ];
        assert_eq!(PublicKey::from_bytes(&order8), Err(CryptoError::InvalidKey));
        // Top bit set.
        let mut high = KeyPair::generate(&mut rng(13)).public().to_bytes();
        high[31] |= 0x80;
        assert_eq!(PublicKey::from_bytes(&high), Err(CryptoError::InvalidKey));
        assert!(postcard::from_bytes::<PublicKey>(&[0; 32]).is_err());
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut rng = rng(14);
        let pair = KeyPair::generate(&mut rng);
        let place = op_place([1; 16], 1);
        let sealed = seal(&mut rng, pair.public(), &place, b"sealed mail").unwrap();
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                let expected = match i {
                    0 => CryptoError::UnsupportedVersion(bad[0]),
                    1 => CryptoError::Malformed,
                    _ => CryptoError::Tampered,
                };
                assert_eq!(
                    pair.open_sealed(&place, &bad),
                    Err(expected),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_fails() {
        let mut rng = rng(15);
        let pair = KeyPair::generate(&mut rng);
        let place = op_place([1; 16], 1);
        let sealed = seal(&mut rng, pair.public(), &place, b"truncate me").unwrap();
        assert_eq!(pair.open_sealed(&place, &[]), Err(CryptoError::Malformed));
        for len in 1..sealed.len() {
            let expected = if len < MIN_LEN {
                CryptoError::Malformed
            } else {
                CryptoError::Tampered
            };
            assert_eq!(
                pair.open_sealed(&place, &sealed[..len]),
                Err(expected),
                "len {len}"
            );
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
            let pair = KeyPair::generate(&mut rng);
            let sealed = seal(&mut rng, pair.public(), &place, &msg).unwrap();
            prop_assert_eq!(pair.open_sealed(&place, &sealed).unwrap(), msg);
        }

        #[test]
        fn prop_garbage_never_panics(
            place in any_place(),
            mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
            set_header in any::<bool>(),
        ) {
            if set_header && bytes.len() >= 2 {
                bytes[0] = FORMAT_VERSION;
                bytes[1] = KIND_SEALED;
            }
            let pair = KeyPair::generate(&mut rng(16));
            prop_assert!(pair.open_sealed(&place, &bytes).is_err());
            let _ = PublicKey::from_bytes(&bytes);
            let _ = SecretKey::from_bytes(&bytes);
            let _ = postcard::from_bytes::<PublicKey>(&bytes);
        }
    }
}
