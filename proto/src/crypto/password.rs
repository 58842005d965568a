//! A user's secrets wrapped under a password-derived key (Argon2id).

use super::{
    aead_open, aead_seal, put_varint, take_array, CryptoError, KeyPair, MasterKey, Place,
    PublicKey, SecretKey, KEY_LEN, NONCE_LEN, TAG_LEN,
};
use crate::ids::UserId;
use crate::{CryptoRng, RngCore};
use orion::hazardous::kdf::argon2::{Argon2, CostParams, Sequential, ID};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Domain string that starts the associated data of wrapped secrets.
const WRAP_DOMAIN: &[u8] = b"aerogramme/v1/wrapped-secrets";
/// Version of the plaintext layout `[1][master key 32][x25519 secret 32]`.
const SECRETS_VERSION: u8 = 1;
const SECRETS_LEN: usize = 1 + 2 * KEY_LEN;
/// Length of the Argon2 salt.
const SALT_LEN: usize = 32;

/// Argon2id cost parameters. Checked against fixed bounds before any key
/// derivation, so an untrusted record cannot make us allocate or spin
/// without limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Argon2Params {
    /// Number of passes (t), `1..=MAX_ITERATIONS`.
    pub iterations: u32,
    /// Memory in KiB (m), `8 * parallelism..=MAX_MEMORY_KIB`.
    pub memory_kib: u32,
    /// Degree of parallelism (p), `1..=MAX_PARALLELISM` (orion runs lanes sequentially).
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// Interactive cost: t = 3, m = 64 MiB, p = 1.
    fn default() -> Self {
        Self {
            iterations: 3,
            memory_kib: 64 * 1024,
            parallelism: 1,
        }
    }
}

impl Argon2Params {
    /// Largest accepted number of passes.
    pub const MAX_ITERATIONS: u32 = 32;
    /// Largest accepted memory: 1 GiB.
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
    /// Largest accepted parallelism.
    pub const MAX_PARALLELISM: u32 = 16;

    /// The cheapest parameters orion accepts (t = 1, m = 8 KiB, p = 1).
    /// For tests and simulations only: offers no protection to a password.
    pub const fn testing() -> Self {
        Self {
            iterations: 1,
            memory_kib: 8,
            parallelism: 1,
        }
    }

    /// Checks the bounds; [`CryptoError::InvalidParams`] if out of them.
    pub fn validate(&self) -> Result<(), CryptoError> {
        self.cost().map(|_| ())
    }

    fn cost(&self) -> Result<CostParams, CryptoError> {
        let ok = (1..=Self::MAX_ITERATIONS).contains(&self.iterations)
            && (1..=Self::MAX_PARALLELISM).contains(&self.parallelism)
            && self.memory_kib <= Self::MAX_MEMORY_KIB
            && self.memory_kib >= 8 * self.parallelism;
        if !ok {
            return Err(CryptoError::InvalidParams);
        }
        CostParams::new(self.iterations, self.memory_kib, self.parallelism)
            .map_err(|_| CryptoError::InvalidParams)
    }
}

/// Everything secret about an account: the mailbox master key and the
/// key pair that sealed boxes are addressed to. Zeroized on drop (by its
/// fields); `Debug` shows only the public key.
#[derive(Clone, Debug)]
pub struct UserSecrets {
    /// Symmetric key of all the user's data.
    pub master: MasterKey,
    /// Key pair for sealed boxes (delivery without the password).
    pub keypair: KeyPair,
}

impl UserSecrets {
    /// Fresh secrets from the caller's randomness.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            master: MasterKey::generate(rng),
            keypair: KeyPair::generate(rng),
        }
    }

    /// Wraps these secrets under `password` for `user`: a fresh 32-byte salt
    /// and Argon2id(`params`) give a 32-byte key that XChaCha20-Poly1305-
    /// encrypts the secrets, with associated data binding the format
    /// version, `params` and `Place::Account { user }`.
    ///
    /// Costs one Argon2id run. [`CryptoError::InvalidParams`] if `params`
    /// are out of bounds.
    pub fn wrap<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        password: &[u8],
        params: Argon2Params,
        user: &UserId,
    ) -> Result<WrappedSecrets, CryptoError> {
        params.validate()?;
        let mut wrapped = WrappedSecrets {
            version: WrappedSecrets::VERSION,
            params,
            salt: [0; SALT_LEN],
            nonce: [0; NONCE_LEN],
            ciphertext: Vec::with_capacity(SECRETS_LEN + TAG_LEN),
        };
        rng.fill_bytes(&mut wrapped.salt);
        rng.fill_bytes(&mut wrapped.nonce);
        let kek = wrapped.kek(password)?;
        let ad = wrapped.associated_data(user)?;
        aead_seal(
            &kek,
            &wrapped.nonce,
            &ad,
            &self.encode(),
            &mut wrapped.ciphertext,
        )?;
        Ok(wrapped)
    }

    /// `[SECRETS_VERSION][master key][x25519 secret key]`
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(SECRETS_LEN));
        out.push(SECRETS_VERSION);
        out.extend_from_slice(&self.master.to_bytes()[..]);
        out.extend_from_slice(&self.keypair.secret().to_bytes()[..]);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (&version, rest) = bytes.split_first().ok_or(CryptoError::Malformed)?;
        if version != SECRETS_VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let (master, rest) = take_array::<KEY_LEN>(rest)?;
        let (secret, rest) = take_array::<KEY_LEN>(rest)?;
        if !rest.is_empty() {
            return Err(CryptoError::Malformed);
        }
        Ok(Self {
            master: MasterKey::from_bytes(master)?,
            keypair: KeyPair::from_secret(SecretKey::from_bytes(secret)?)?,
        })
    }
}

/// [`UserSecrets`] encrypted under a password. Contains nothing secret;
/// store it anywhere. Its postcard encoding ([`WrappedSecrets::to_bytes`])
/// starts with the version byte.
///
/// The public key cannot be read from it; keep it beside (see [`AccountKeys`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedSecrets {
    /// Format version ([`WrappedSecrets::VERSION`]).
    pub version: u8,
    /// Argon2id cost used to derive the wrapping key.
    pub params: Argon2Params,
    /// Argon2id salt (random).
    pub salt: [u8; SALT_LEN],
    /// XChaCha20-Poly1305 nonce (random).
    pub nonce: [u8; NONCE_LEN],
    /// Encrypted secrets with their tag.
    pub ciphertext: Vec<u8>,
}

impl WrappedSecrets {
    /// The format version this code writes and reads.
    pub const VERSION: u8 = 1;

    /// Recovers the secrets with `password` (costs one Argon2id run).
    ///
    /// Errors: [`CryptoError::UnsupportedVersion`], [`CryptoError::InvalidParams`]
    /// (checked before deriving anything), [`CryptoError::Malformed`] (bad
    /// ciphertext length), and [`CryptoError::WrongPassword`] for any
    /// authentication failure — a wrong password, a wrong `user`, or an
    /// altered record cannot be told apart.
    pub fn unwrap(&self, password: &[u8], user: &UserId) -> Result<UserSecrets, CryptoError> {
        if self.version != Self::VERSION {
            return Err(CryptoError::UnsupportedVersion(self.version));
        }
        self.params.validate()?;
        if self.ciphertext.len() != SECRETS_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let kek = self.kek(password)?;
        let ad = self.associated_data(user)?;
        let plaintext = aead_open(&kek, &self.nonce, &ad, &self.ciphertext)
            .map(Zeroizing::new)
            .ok_or(CryptoError::WrongPassword)?;
        UserSecrets::decode(&plaintext)
    }

    /// Password change: unwraps with `old_password`, wraps again with
    /// `new_password`, `new_params` and a fresh salt and nonce.
    pub fn rewrap<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        old_password: &[u8],
        new_password: &[u8],
        new_params: Argon2Params,
        user: &UserId,
    ) -> Result<WrappedSecrets, CryptoError> {
        self.unwrap(old_password, user)?
            .wrap(rng, new_password, new_params, user)
    }

    /// Postcard encoding (written by hand, so infallible; identical to
    /// `postcard::to_allocvec`): `[version][t varint][m varint][p varint]
    /// [salt 32][nonce 24][ciphertext length varint][ciphertext]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 15 + SALT_LEN + NONCE_LEN + 2 + self.ciphertext.len());
        out.push(self.version);
        put_varint(&mut out, u64::from(self.params.iterations));
        put_varint(&mut out, u64::from(self.params.memory_kib));
        put_varint(&mut out, u64::from(self.params.parallelism));
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce);
        put_varint(&mut out, self.ciphertext.len() as u64);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses [`WrappedSecrets::to_bytes`]: [`CryptoError::UnsupportedVersion`]
    /// for an unknown first byte, [`CryptoError::Malformed`] if undecodable or
    /// followed by trailing bytes. Parameters are checked by
    /// [`WrappedSecrets::unwrap`], not here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (&version, _) = bytes.split_first().ok_or(CryptoError::Malformed)?;
        if version != Self::VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let (wrapped, rest) =
            postcard::take_from_bytes::<Self>(bytes).map_err(|_| CryptoError::Malformed)?;
        if !rest.is_empty() {
            return Err(CryptoError::Malformed);
        }
        Ok(wrapped)
    }

    /// Argon2id(password, salt, params) → 32-byte key-encryption key.
    fn kek(&self, password: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let cost = self.params.cost()?;
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        Argon2::<ID, Sequential>::derive_key(password, &self.salt, &cost, None, None, &mut kek[..])
            .map_err(|_| CryptoError::InvalidParams)?;
        Ok(kek)
    }

    /// `WRAP_DOMAIN || version || t || m || p (u32 LE) || Place::Account{user}`.
    fn associated_data(&self, user: &UserId) -> Result<Vec<u8>, CryptoError> {
        let mut ad = WRAP_DOMAIN.to_vec();
        ad.push(self.version);
        ad.extend_from_slice(&self.params.iterations.to_le_bytes());
        ad.extend_from_slice(&self.params.memory_kib.to_le_bytes());
        ad.extend_from_slice(&self.params.parallelism.to_le_bytes());
        ad.extend(Place::Account { user: *user }.associated_data()?);
        Ok(ad)
    }
}

/// Convenience record of an account's keys: the public key in clear (so
/// mail can be sealed for the user) beside the password-wrapped secrets.
/// Callers may equally store the two parts separately.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountKeys {
    /// The sealed-box public key of the account.
    pub public: PublicKey,
    /// The account's secrets, wrapped under its password.
    pub wrapped: WrappedSecrets,
}

impl AccountKeys {
    /// Wraps `secrets` (see [`UserSecrets::wrap`]) and records their public key.
    pub fn new<R: RngCore + CryptoRng + ?Sized>(
        rng: &mut R,
        secrets: &UserSecrets,
        password: &[u8],
        params: Argon2Params,
        user: &UserId,
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            public: *secrets.keypair.public(),
            wrapped: secrets.wrap(rng, password, params, user)?,
        })
    }

    /// Unwraps the secrets (see [`WrappedSecrets::unwrap`]) and checks that
    /// their public key is [`AccountKeys::public`] ([`CryptoError::Tampered`]
    /// otherwise: the clear public key was replaced).
    pub fn unwrap(&self, password: &[u8], user: &UserId) -> Result<UserSecrets, CryptoError> {
        let secrets = self.wrapped.unwrap(password, user)?;
        if secrets.keypair.public() != &self.public {
            return Err(CryptoError::Tampered);
        }
        Ok(secrets)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::rng;
    use super::*;
    use proptest::prelude::*;

    const USER: UserId = UserId([9; 16]);

    fn same(a: &UserSecrets, b: &UserSecrets) -> bool {
        a.master == b.master
            && a.keypair.public() == b.keypair.public()
            && a.keypair.secret().to_bytes() == b.keypair.secret().to_bytes()
    }

    fn wrapped(seed: u64) -> (UserSecrets, WrappedSecrets) {
        let mut rng = rng(seed);
        let secrets = UserSecrets::generate(&mut rng);
        let w = secrets
            .wrap(&mut rng, b"hunter2", Argon2Params::testing(), &USER)
            .unwrap();
        (secrets, w)
    }

    #[test]
    fn wrap_unwrap_round_trip() {
        let (secrets, w) = wrapped(20);
        assert_eq!(w.version, WrappedSecrets::VERSION);
        assert!(same(&w.unwrap(b"hunter2", &USER).unwrap(), &secrets));
        let bytes = w.to_bytes();
        assert_eq!(bytes[0], WrappedSecrets::VERSION);
        assert_eq!(bytes, postcard::to_allocvec(&w).unwrap());
        let parsed = WrappedSecrets::from_bytes(&bytes).unwrap();
        assert_eq!(parsed, w);
        assert!(same(&parsed.unwrap(b"hunter2", &USER).unwrap(), &secrets));
        assert!(!format!("{secrets:?}").contains(&format!("{:?}", secrets.master.to_bytes())));
    }

    #[test]
    fn wrong_password_or_user() {
        let (_, w) = wrapped(21);
        assert_eq!(
            w.unwrap(b"hunter3", &USER).err(),
            Some(CryptoError::WrongPassword)
        );
        assert_eq!(w.unwrap(b"", &USER).err(), Some(CryptoError::WrongPassword));
        let other = UserId([8; 16]);
        assert_eq!(
            w.unwrap(b"hunter2", &other).err(),
            Some(CryptoError::WrongPassword)
        );
    }

    #[test]
    fn params_cannot_be_swapped() {
        let (_, mut w) = wrapped(22);
        w.params.iterations = 2;
        assert_eq!(
            w.unwrap(b"hunter2", &USER).err(),
            Some(CryptoError::WrongPassword)
        );
    }

    #[test]
    fn params_bounds() {
        assert_eq!(Argon2Params::testing().validate(), Ok(()));
        assert_eq!(Argon2Params::default().validate(), Ok(()));
        let t = Argon2Params::testing();
        let bad = [
            Argon2Params { iterations: 0, ..t },
            Argon2Params {
                iterations: Argon2Params::MAX_ITERATIONS + 1,
                ..t
            },
            Argon2Params { memory_kib: 7, ..t },
            Argon2Params {
                memory_kib: Argon2Params::MAX_MEMORY_KIB + 1,
                ..t
            },
            Argon2Params {
                memory_kib: u32::MAX,
                ..t
            },
            Argon2Params {
                parallelism: 0,
                ..t
            },
            Argon2Params {
                parallelism: 2,
                memory_kib: 15,
                ..t
            },
            Argon2Params {
                parallelism: u32::MAX,
                memory_kib: u32::MAX,
                ..t
            },
        ];
        let (secrets, w) = wrapped(23);
        for params in bad {
            assert_eq!(
                params.validate(),
                Err(CryptoError::InvalidParams),
                "{params:?}"
            );
            let mut rng = rng(0);
            assert_eq!(
                secrets.wrap(&mut rng, b"pw", params, &USER).err(),
                Some(CryptoError::InvalidParams)
            );
            let hostile = WrappedSecrets {
                params,
                ..w.clone()
            };
            assert_eq!(
                hostile.unwrap(b"hunter2", &USER).err(),
                Some(CryptoError::InvalidParams)
            );
        }
    }

    #[test]
    fn rewrap_changes_password() {
        let (secrets, w) = wrapped(24);
        let mut rng = rng(25);
        let params = Argon2Params {
            iterations: 2,
            memory_kib: 16,
            parallelism: 2,
        };
        assert_eq!(
            w.rewrap(&mut rng, b"nope", b"new", params, &USER).err(),
            Some(CryptoError::WrongPassword)
        );
        let w2 = w
            .rewrap(&mut rng, b"hunter2", b"new", params, &USER)
            .unwrap();
        assert_eq!(w2.params, params);
        assert_ne!(w2.salt, w.salt);
        assert!(same(&w2.unwrap(b"new", &USER).unwrap(), &secrets));
        assert_eq!(
            w2.unwrap(b"hunter2", &USER).err(),
            Some(CryptoError::WrongPassword)
        );
    }

    #[test]
    fn account_keys() {
        let mut rng = rng(26);
        let secrets = UserSecrets::generate(&mut rng);
        let keys =
            AccountKeys::new(&mut rng, &secrets, b"pw", Argon2Params::testing(), &USER).unwrap();
        assert_eq!(&keys.public, secrets.keypair.public());
        let bytes = postcard::to_allocvec(&keys).unwrap();
        let keys: AccountKeys = postcard::from_bytes(&bytes).unwrap();
        assert!(same(&keys.unwrap(b"pw", &USER).unwrap(), &secrets));
        let swapped = AccountKeys {
            public: *KeyPair::generate(&mut rng).public(),
            ..keys
        };
        assert_eq!(
            swapped.unwrap(b"pw", &USER).err(),
            Some(CryptoError::Tampered)
        );
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let (_, w) = wrapped(27);
        let bytes = w.to_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let result =
                    WrappedSecrets::from_bytes(&bad).and_then(|w| w.unwrap(b"hunter2", &USER));
                match result {
                    Ok(_) => panic!("byte {i} bit {bit} accepted"),
                    Err(e) if i == 0 => assert_eq!(e, CryptoError::UnsupportedVersion(bad[0])),
                    Err(_) => {}
                }
            }
        }
        // Flips inside the ciphertext are authentication failures.
        let start = bytes.len() - w.ciphertext.len();
        for i in start..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            let w = WrappedSecrets::from_bytes(&bad).unwrap();
            assert_eq!(
                w.unwrap(b"hunter2", &USER).err(),
                Some(CryptoError::WrongPassword)
            );
        }
    }

    #[test]
    fn every_truncation_fails() {
        let (_, w) = wrapped(28);
        let bytes = w.to_bytes();
        assert_eq!(WrappedSecrets::from_bytes(&[]), Err(CryptoError::Malformed));
        for len in 1..bytes.len() {
            assert_eq!(
                WrappedSecrets::from_bytes(&bytes[..len]),
                Err(CryptoError::Malformed)
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            WrappedSecrets::from_bytes(&longer),
            Err(CryptoError::Malformed)
        );
        let short = WrappedSecrets {
            ciphertext: w.ciphertext[..10].to_vec(),
            ..w
        };
        assert_eq!(
            short.unwrap(b"hunter2", &USER).err(),
            Some(CryptoError::Malformed)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn prop_wrap_round_trip(
            seed in any::<u64>(),
            user in any::<[u8; 16]>().prop_map(UserId),
            password in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut rng = rng(seed);
            let secrets = UserSecrets::generate(&mut rng);
            let w = secrets.wrap(&mut rng, &password, Argon2Params::testing(), &user).unwrap();
            let w = WrappedSecrets::from_bytes(&w.to_bytes()).unwrap();
            prop_assert!(same(&w.unwrap(&password, &user).unwrap(), &secrets));
        }

        #[test]
        fn prop_garbage_never_panics(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
            set_version in any::<bool>(),
        ) {
            if set_version && !bytes.is_empty() {
                bytes[0] = WrappedSecrets::VERSION;
            }
            if let Ok(w) = WrappedSecrets::from_bytes(&bytes) {
                // Bounded params: at worst 1 GiB, so only try cheap ones.
                if w.params.validate().is_ok() && w.params.memory_kib <= 1024
                    && w.params.iterations <= 4
                {
                    prop_assert!(w.unwrap(b"pw", &USER).is_err());
                }
            }
            let _ = postcard::from_bytes::<AccountKeys>(&bytes);
        }
    }
}
