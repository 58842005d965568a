//! Accounts on this node: the login-name directory and the account records.
//!
//! * The **directory** maps a login name to its random [`UserId`]: meta key
//!   `node/directory/` ‖ name (UTF-8) → the 16 id bytes. The login name is
//!   the one thing in clear here; nothing else about the user is.
//! * The **account record** (`Store::put_account`) is
//!   `[ACCOUNT_FORMAT] ‖ postcard(login name, AccountKeys)`: the name, the
//!   public key and the secrets wrapped under the password (Argon2id). Its
//!   version starts at 1 and grows by one at each password change. It is
//!   replicated to every node of the community, which enters the name in its
//!   own directory ([`Accounts::adopt`]), so a user added on one node logs
//!   in on all of them. (Format 1, without the name, is still read.)
//!
//! Every change is durable (group commit) before the call returns.

use crate::store::{Committer, SledStore};
use aerogramme_proto::crypto::{AccountKeys, Argon2Params, CryptoError, UserSecrets};
use aerogramme_proto::ids::UserId;
use aerogramme_proto::store::StoreError;
use rand_core::OsRng;

/// Prefix of the directory's meta keys.
pub const DIRECTORY_PREFIX: &[u8] = b"node/directory/";
/// First byte of an account record.
pub const ACCOUNT_FORMAT: u8 = 2;
/// First byte of an account record without the login name.
const ACCOUNT_FORMAT_NO_NAME: u8 = 1;
/// Longest login name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The login name is not acceptable.
    #[error("invalid user name: {0}")]
    InvalidName(String),
    /// The password is not acceptable.
    #[error("invalid password: {0}")]
    InvalidPassword(String),
    /// A user of this name exists.
    #[error("user `{0}` already exists")]
    Exists(String),
    /// No user of this name.
    #[error("no user `{0}`")]
    NoSuchUser(String),
    /// The password does not unlock the account.
    #[error("wrong password")]
    WrongPassword,
    /// A stored record cannot be read.
    #[error("corrupt account data: {0}")]
    Corrupt(String),
    /// Cryptography refused (bad parameters…).
    #[error("cryptography: {0}")]
    Crypto(CryptoError),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl From<CryptoError> for AccountError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::WrongPassword => AccountError::WrongPassword,
            e => AccountError::Crypto(e),
        }
    }
}

/// Checks a login name: 1 to 128 bytes, no white space, no control
/// characters, no `"` or `\`.
pub fn validate_name(name: &str) -> Result<(), AccountError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(AccountError::InvalidName(format!(
            "must be 1 to {MAX_NAME_BYTES} bytes long"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\'))
    {
        return Err(AccountError::InvalidName(format!(
            "character {c:?} is not allowed"
        )));
    }
    Ok(())
}

fn validate_password(password: &[u8]) -> Result<(), AccountError> {
    if password.is_empty() {
        return Err(AccountError::InvalidPassword("must not be empty".into()));
    }
    Ok(())
}

fn directory_key(name: &str) -> Vec<u8> {
    let mut k = DIRECTORY_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Encodes an account record.
pub fn encode_record(name: &str, keys: &AccountKeys) -> Result<Vec<u8>, AccountError> {
    let mut out = vec![ACCOUNT_FORMAT];
    out.extend(
        postcard::to_allocvec(&(name, keys)).map_err(|e| AccountError::Corrupt(e.to_string()))?,
    );
    Ok(out)
}

/// Decodes an account record: the login name (format 2) and the keys.
pub fn decode_named_record(bytes: &[u8]) -> Result<(Option<String>, AccountKeys), AccountError> {
    let corrupt = || AccountError::Corrupt("undecodable account record".into());
    match bytes.split_first() {
        Some((&ACCOUNT_FORMAT, rest)) => {
            match postcard::take_from_bytes::<(String, AccountKeys)>(rest) {
                Ok(((name, keys), [])) => Ok((Some(name), keys)),
                _ => Err(corrupt()),
            }
        }
        Some((&ACCOUNT_FORMAT_NO_NAME, rest)) => {
            match postcard::take_from_bytes::<AccountKeys>(rest) {
                Ok((keys, [])) => Ok((None, keys)),
                _ => Err(corrupt()),
            }
        }
        Some((v, _)) => Err(AccountError::Corrupt(format!(
            "account record format {v} is not supported"
        ))),
        None => Err(AccountError::Corrupt("empty account record".into())),
    }
}

/// Decodes an account record's keys.
pub fn decode_record(bytes: &[u8]) -> Result<AccountKeys, AccountError> {
    decode_named_record(bytes).map(|(_, keys)| keys)
}

/// The accounts of one node's store.
#[derive(Clone)]
pub struct Accounts {
    committer: Committer,
}

impl Accounts {
    /// Accounts kept in the committer's store.
    pub fn new(committer: Committer) -> Self {
        Self { committer }
    }

    fn store(&self) -> &SledStore {
        self.committer.store()
    }

    /// The user of a login name.
    pub fn lookup(&self, name: &str) -> Result<Option<UserId>, AccountError> {
        match self.store().get_meta(&directory_key(name))? {
            None => Ok(None),
            Some(v) => <[u8; 16]>::try_from(v.as_slice())
                .map(|b| Some(UserId(b)))
                .map_err(|_| AccountError::Corrupt(format!("directory entry of `{name}`"))),
        }
    }

    fn require(&self, name: &str) -> Result<UserId, AccountError> {
        self.lookup(name)?
            .ok_or_else(|| AccountError::NoSuchUser(name.to_string()))
    }

    /// The account record of `user`: its version and keys.
    pub fn keys(&self, user: &UserId) -> Result<Option<(u64, AccountKeys)>, AccountError> {
        match self.store().get_account(user)? {
            None => Ok(None),
            Some((version, bytes)) => Ok(Some((version, decode_record(&bytes)?))),
        }
    }

    /// The user and account record of a login name.
    pub fn find(&self, name: &str) -> Result<Option<(UserId, u64, AccountKeys)>, AccountError> {
        let Some(user) = self.lookup(name)? else {
            return Ok(None);
        };
        Ok(self.keys(&user)?.map(|(v, k)| (user, v, k)))
    }

    /// Creates a user: random id, fresh secrets wrapped under `password`
    /// with `params`, the account record, then the directory entry.
    pub fn add(
        &self,
        name: &str,
        password: &[u8],
        params: Argon2Params,
    ) -> Result<UserId, AccountError> {
        validate_name(name)?;
        validate_password(password)?;
        if self.lookup(name)?.is_some() {
            return Err(AccountError::Exists(name.to_string()));
        }
        let user = UserId::random(&mut OsRng);
        let secrets = UserSecrets::generate(&mut OsRng);
        let keys = AccountKeys::new(&mut OsRng, &secrets, password, params, &user)?;
        self.store()
            .put_account(&user, 1, &encode_record(name, &keys)?)?;
        let claimed = self.store().compare_and_swap_meta(
            &directory_key(name),
            None,
            Some(user.as_bytes()),
        )?;
        if !claimed {
            // Another writer took the name meanwhile.
            self.store().purge_user(&user, false)?;
            return Err(AccountError::Exists(name.to_string()));
        }
        self.committer.wait_durable()?;
        Ok(user)
    }

    /// Changes a password: unwraps with `old`, wraps again with `new` and
    /// `params` ([`aerogramme_proto::crypto::WrappedSecrets::rewrap`]); mail
    /// is untouched.
    pub fn passwd(
        &self,
        name: &str,
        old: &[u8],
        new: &[u8],
        params: Argon2Params,
    ) -> Result<UserId, AccountError> {
        validate_password(new)?;
        let (user, version, keys) = self
            .find(name)?
            .ok_or_else(|| AccountError::NoSuchUser(name.to_string()))?;
        let wrapped = keys.wrapped.rewrap(&mut OsRng, old, new, params, &user)?;
        let keys = AccountKeys {
            public: keys.public,
            wrapped,
        };
        self.store()
            .put_account(&user, version + 1, &encode_record(name, &keys)?)?;
        self.committer.wait_durable()?;
        Ok(user)
    }

    /// Removes a user: the directory entry, every record of the user here
    /// (ops, blobs, checkpoints), and the account record becomes a
    /// tombstone (an empty record one version up), which the running node
    /// replicates so that every node of the community removes the user too
    /// ([`Accounts::adopt`]). Returns the user and the tombstone's version.
    pub fn remove(&self, name: &str) -> Result<(UserId, u64), AccountError> {
        let user = self.require(name)?;
        let version = self.store().get_account(&user)?.map_or(0, |(v, _)| v) + 1;
        let removed = self.store().compare_and_swap_meta(
            &directory_key(name),
            Some(user.as_bytes()),
            None,
        )?;
        if !removed {
            return Err(AccountError::NoSuchUser(name.to_string()));
        }
        self.store().put_account(&user, version, &[])?;
        self.store().purge_user(&user, true)?;
        self.committer.wait_durable()?;
        Ok((user, version))
    }

    /// A removed user's tombstone arrived from a peer (or the removal was
    /// made here): every directory entry naming `user` goes, and every
    /// record of the user but the tombstone.
    pub fn forget(&self, user: &UserId) -> Result<(), AccountError> {
        for (key, value) in self.store().scan_meta(DIRECTORY_PREFIX)? {
            if value == user.as_bytes() {
                self.store()
                    .compare_and_swap_meta(&key, Some(&value), None)?;
            }
        }
        self.store().purge_user(user, true)?;
        Ok(())
    }

    /// Enters the login name of `user`'s account record (replicated from a
    /// peer) in this node's directory. When two nodes gave one name to two
    /// users at the same time, every node keeps the same one: the smaller
    /// user id.
    pub fn adopt(&self, user: &UserId) -> Result<(), AccountError> {
        let Some((_, bytes)) = self.store().get_account(user)? else {
            return Ok(());
        };
        if bytes.is_empty() {
            tracing::info!(%user, "user removed on a peer");
            return self.forget(user);
        }
        let (Some(name), _) = decode_named_record(&bytes)? else {
            return Ok(());
        };
        validate_name(&name)?;
        let key = directory_key(&name);
        loop {
            let current = self.lookup(&name)?;
            match current {
                Some(u) if u == *user => return Ok(()),
                Some(u) if u < *user => {
                    tracing::warn!(%name, "two users were given one login name; the other one keeps it");
                    return Ok(());
                }
                _ => {}
            }
            let old = current.map(|u| u.as_bytes().to_vec());
            if self
                .store()
                .compare_and_swap_meta(&key, old.as_deref(), Some(user.as_bytes()))?
            {
                tracing::info!(%name, "account replicated from a peer");
                return Ok(());
            }
        }
    }

    /// Every user of the directory, by name.
    pub fn list(&self) -> Result<Vec<(String, UserId)>, AccountError> {
        self.store()
            .scan_meta(DIRECTORY_PREFIX)?
            .into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8(k[DIRECTORY_PREFIX.len()..].to_vec())
                    .map_err(|_| AccountError::Corrupt("directory name not UTF-8".into()))?;
                let id = <[u8; 16]>::try_from(v.as_slice())
                    .map_err(|_| AccountError::Corrupt(format!("directory entry of `{name}`")))?;
                Ok((name, UserId(id)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path().join("db")).unwrap();
        (dir, Accounts::new(Committer::new(store)))
    }

    #[test]
    fn add_passwd_remove() {
        let (_d, a) = accounts();
        let t = Argon2Params::testing();
        let id = a.add("alice@example.org", b"pw1", t).unwrap();
        assert!(matches!(
            a.add("alice@example.org", b"x", t),
            Err(AccountError::Exists(_))
        ));
        assert_eq!(a.lookup("alice@example.org").unwrap(), Some(id));
        let (user, version, keys) = a.find("alice@example.org").unwrap().unwrap();
        assert_eq!((user, version), (id, 1));
        keys.unwrap(b"pw1", &id).unwrap();
        assert!(matches!(
            a.passwd("alice@example.org", b"nope", b"pw2", t),
            Err(AccountError::WrongPassword)
        ));
        a.passwd("alice@example.org", b"pw1", b"pw2", t).unwrap();
        let (_, version, keys) = a.find("alice@example.org").unwrap().unwrap();
        assert_eq!(version, 2);
        keys.unwrap(b"pw2", &id).unwrap();
        assert_eq!(
            a.list().unwrap(),
            vec![("alice@example.org".to_string(), id)]
        );
        assert_eq!(a.remove("alice@example.org").unwrap(), (id, 3));
        assert!(a.list().unwrap().is_empty());
        // The record is a tombstone, one version up, for the community.
        assert_eq!(a.store().get_account(&id).unwrap(), Some((3, Vec::new())));
        assert!(matches!(
            a.remove("alice@example.org"),
            Err(AccountError::NoSuchUser(_))
        ));
    }

    #[test]
    fn names_and_passwords_are_checked() {
        let (_d, a) = accounts();
        let t = Argon2Params::testing();
        for bad in ["", "a b", "tab\t", "q\"", "back\\slash", &"x".repeat(129)] {
            assert!(
                matches!(a.add(bad, b"pw", t), Err(AccountError::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            a.add("bob", b"", t),
            Err(AccountError::InvalidPassword(_))
        ));
        assert!(decode_record(&[]).is_err());
        assert!(decode_record(&[1, 2, 3]).is_err());
        assert!(decode_record(&[9]).is_err());
    }
}
