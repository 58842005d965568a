//! Unlocking an account (login name + password → [`UserSecrets`]), with a
//! key cache and failed-unlock rate limits.
//!
//! * **Key cache.** A successful unlock keeps the secrets in memory for
//!   `key_cache` (from that unlock), with a keyed BLAKE2b tag of the password
//!   (under a random per-process key) and the account record's version. An
//!   unlock with the same password before expiry, while the record is
//!   unchanged, is served from the cache: Argon2 is paid once per cache
//!   period, not per connection. Expired entries are dropped (the secrets
//!   zeroize on drop); [`Unlocker::forget`] drops a user's entry at once
//!   (password change, removal).
//! * **Rate limits.** Failures are counted per login name and per source
//!   address in fixed windows (`login.failure_window_secs`). Once a name or
//!   an address has `max_failures_per_*` failures in its window, every
//!   attempt for it is refused, without any password check, until the
//!   window ends. A success resets the name's count (not the address's).
//! * An unknown name costs the same Argon2 run as a wrong password and
//!   gives the same [`UnlockError::Denied`].

use crate::accounts::{AccountError, Accounts};
use crate::config::LoginLimits;
use aerogramme_proto::crypto::{Argon2Params, UserSecrets, WrappedSecrets};
use aerogramme_proto::ids::UserId;
use rand_core::{OsRng, RngCore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Why an unlock was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    /// Unknown name or wrong password (not told apart).
    #[error("authentication failed")]
    Denied,
    /// Too many recent failures for this name or source.
    #[error("too many failed attempts; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        /// When the window ends.
        retry_after: Duration,
    },
    /// The store failed or holds a damaged record.
    #[error(transparent)]
    Account(AccountError),
}

struct CacheEntry {
    version: u64,
    tag: orion::auth::Tag,
    secrets: Arc<UserSecrets>,
    expires: Instant,
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl Window {
    fn current(w: Option<&Window>, now: Instant, len: Duration) -> Window {
        match w {
            Some(w) if now < w.start + len => *w,
            _ => Window {
                start: now,
                failures: 0,
            },
        }
    }
}

#[derive(Default)]
struct State {
    cache: HashMap<UserId, CacheEntry>,
    by_name: HashMap<String, Window>,
    by_source: HashMap<String, Window>,
    argon2_runs: u64,
}

/// Rate-limit windows kept before stale ones are pruned.
const PRUNE_ABOVE: usize = 4096;

/// Unlocks accounts; see the module documentation. Shared by every
/// session of the node (`Send + Sync`).
pub struct Unlocker {
    accounts: Accounts,
    key_cache: Duration,
    limits: LoginLimits,
    params: Argon2Params,
    mac_key: orion::auth::SecretKey,
    dummy: OnceLock<Option<WrappedSecrets>>,
    state: Mutex<State>,
}

impl Unlocker {
    /// An unlocker over `accounts`; `params` are those of new passwords
    /// (used for the decoy check of unknown names).
    pub fn new(
        accounts: Accounts,
        key_cache: Duration,
        limits: LoginLimits,
        params: Argon2Params,
    ) -> Self {
        // 32 bytes from the OS; `generate` fails only for a bad length.
        let mut raw = zeroize::Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut raw[..]);
        let mac_key = orion::auth::SecretKey::try_from(&raw[..])
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid BLAKE2b key"));
        Self {
            accounts,
            key_cache,
            limits,
            params,
            mac_key,
            dummy: OnceLock::new(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Unlocker::unlock_at`] now.
    pub fn unlock(
        &self,
        name: &str,
        password: &[u8],
        source: &str,
    ) -> Result<Arc<UserSecrets>, UnlockError> {
        self.unlock_at(Instant::now(), name, password, source)
    }

    /// Unlocks `name` with `password` for a client at `source` (an address,
    /// or `local` for the admin socket), at time `now`.
    pub fn unlock_at(
        &self,
        now: Instant,
        name: &str,
        password: &[u8],
        source: &str,
    ) -> Result<Arc<UserSecrets>, UnlockError> {
        let window = self.limits.window;
        {
            let mut st = self.lock();
            st.cache.retain(|_, e| e.expires > now);
            for (map, key, max) in [
                (&st.by_name, name, self.limits.per_user),
                (&st.by_source, source, self.limits.per_address),
            ] {
                let w = Window::current(map.get(key), now, window);
                if w.failures >= max {
                    return Err(UnlockError::RateLimited {
                        retry_after: (w.start + window).saturating_duration_since(now),
                    });
                }
            }
        }
        let tag =
            orion::auth::authenticate(&self.mac_key, password).map_err(|_| UnlockError::Denied)?;
        let found = self.accounts.find(name).map_err(UnlockError::Account)?;
        let Some((user, version, keys)) = found else {
            self.decoy(password);
            return Err(self.failed(now, name, source));
        };
        {
            let st = self.lock();
            if let Some(e) = st.cache.get(&user) {
                if e.version == version && e.tag == tag {
                    return Ok(e.secrets.clone());
                }
            }
        }
        self.lock().argon2_runs += 1;
        match keys.unwrap(password, &user) {
            Ok(secrets) => {
                let secrets = Arc::new(secrets);
                let mut st = self.lock();
                st.by_name.remove(name);
                if !self.key_cache.is_zero() {
                    st.cache.insert(
                        user,
                        CacheEntry {
                            version,
                            tag,
                            secrets: secrets.clone(),
                            expires: now + self.key_cache,
                        },
                    );
                }
                Ok(secrets)
            }
            Err(_) => Err(self.failed(now, name, source)),
        }
    }

    /// Counts a failure for `name` and `source`.
    fn failed(&self, now: Instant, name: &str, source: &str) -> UnlockError {
        let window = self.limits.window;
        let mut guard = self.lock();
        let st = &mut *guard;
        for map in [&mut st.by_name, &mut st.by_source] {
            if map.len() > PRUNE_ABOVE {
                map.retain(|_, w| now < w.start + window);
            }
        }
        let mut w = Window::current(st.by_name.get(name), now, window);
        w.failures += 1;
        st.by_name.insert(name.to_string(), w);
        let mut w = Window::current(st.by_source.get(source), now, window);
        w.failures += 1;
        st.by_source.insert(source.to_string(), w);
        UnlockError::Denied
    }

    /// Runs Argon2 as for a real account, so an unknown name takes as long
    /// as a wrong password.
    fn decoy(&self, password: &[u8]) {
        let dummy = self.dummy.get_or_init(|| {
            let user = UserId([0; 16]);
            UserSecrets::generate(&mut OsRng)
                .wrap(&mut OsRng, b"decoy", self.params, &user)
                .ok()
        });
        if let Some(d) = dummy {
            self.lock().argon2_runs += 1;
            let _ = d.unwrap(password, &UserId([0; 16]));
        }
    }

    /// Drops `user`'s cached secrets (after a password change or removal).
    pub fn forget(&self, user: &UserId) {
        self.lock().cache.remove(user);
    }

    /// How many Argon2 runs unlocks have cost so far.
    pub fn argon2_runs(&self) -> u64 {
        self.lock().argon2_runs
    }

    /// How many users have cached secrets.
    pub fn cached(&self) -> usize {
        self.lock().cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Committer, SledStore};

    const LIMITS: LoginLimits = LoginLimits {
        per_user: 3,
        per_address: 5,
        window: Duration::from_secs(60),
    };

    fn setup(cache: Duration) -> (tempfile::TempDir, Accounts, Unlocker) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path().join("db")).unwrap();
        let accounts = Accounts::new(Committer::new(store));
        accounts
            .add("alice", b"pw", Argon2Params::testing())
            .unwrap();
        let u = Unlocker::new(accounts.clone(), cache, LIMITS, Argon2Params::testing());
        (dir, accounts, u)
    }

    #[test]
    fn argon2_is_paid_once_per_cache_period() {
        let (_d, accounts, u) = setup(Duration::from_secs(600));
        let t0 = Instant::now();
        let a = u.unlock_at(t0, "alice", b"pw", "10.0.0.1").unwrap();
        let b = u
            .unlock_at(t0 + Duration::from_secs(10), "alice", b"pw", "10.0.0.2")
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(u.argon2_runs(), 1);
        // A wrong password is never served from the cache.
        assert!(matches!(
            u.unlock_at(t0 + Duration::from_secs(11), "alice", b"bad", "x"),
            Err(UnlockError::Denied)
        ));
        assert_eq!(u.argon2_runs(), 2);
        // After expiry, Argon2 is paid again and the old entry is gone.
        drop((a, b));
        let c = u
            .unlock_at(t0 + Duration::from_secs(601), "alice", b"pw", "x")
            .unwrap();
        assert_eq!(u.argon2_runs(), 3);
        assert_eq!(u.cached(), 1);
        // A password change invalidates the entry (the record's version moved).
        accounts
            .passwd("alice", b"pw", b"new", Argon2Params::testing())
            .unwrap();
        let t1 = t0 + Duration::from_secs(602);
        assert!(matches!(
            u.unlock_at(t1, "alice", b"pw", "x"),
            Err(UnlockError::Denied)
        ));
        let d = u.unlock_at(t1, "alice", b"new", "x").unwrap();
        assert_eq!(c.keypair.public(), d.keypair.public());
        u.forget(&accounts.lookup("alice").unwrap().unwrap());
        assert_eq!(u.cached(), 0);
    }

    #[test]
    fn zero_cache_means_argon2_every_time() {
        let (_d, _a, u) = setup(Duration::ZERO);
        let t0 = Instant::now();
        u.unlock_at(t0, "alice", b"pw", "x").unwrap();
        u.unlock_at(t0, "alice", b"pw", "x").unwrap();
        assert_eq!(u.argon2_runs(), 2);
        assert_eq!(u.cached(), 0);
    }

    #[test]
    fn failures_are_limited_per_user_and_per_source() {
        let (_d, accounts, u) = setup(Duration::from_secs(600));
        accounts.add("bob", b"pw", Argon2Params::testing()).unwrap();
        let t0 = Instant::now();
        for i in 0..3 {
            let src = format!("192.0.2.{i}");
            assert!(matches!(
                u.unlock_at(t0, "alice", b"bad", &src),
                Err(UnlockError::Denied)
            ));
        }
        // Alice is locked, even with the right password and from a new address.
        let e = u.unlock_at(t0 + Duration::from_secs(1), "alice", b"pw", "198.51.100.1");
        match e {
            Err(UnlockError::RateLimited { retry_after }) => {
                assert_eq!(retry_after, Duration::from_secs(59))
            }
            other => panic!("{other:?}"),
        }
        // Bob is not.
        u.unlock_at(t0, "bob", b"pw", "198.51.100.1").unwrap();
        // After the window, alice may try again.
        u.unlock_at(t0 + Duration::from_secs(60), "alice", b"pw", "198.51.100.1")
            .unwrap();

        // One address failing on many names is limited too (5 per window),
        // unknown names included.
        let t1 = t0 + Duration::from_secs(120);
        for name in ["n1", "n2", "n3", "n4", "n5"] {
            assert!(matches!(
                u.unlock_at(t1, name, b"x", "203.0.113.9"),
                Err(UnlockError::Denied)
            ));
        }
        assert!(matches!(
            u.unlock_at(t1, "bob", b"pw", "203.0.113.9"),
            Err(UnlockError::RateLimited { .. })
        ));
        u.unlock_at(t1, "bob", b"pw", "203.0.113.10").unwrap();
    }

    #[test]
    fn success_resets_the_name_count() {
        let (_d, _a, u) = setup(Duration::from_secs(600));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(u.unlock_at(t0, "alice", b"bad", "a").is_err());
        }
        u.unlock_at(t0, "alice", b"pw", "a").unwrap();
        for _ in 0..2 {
            assert!(u.unlock_at(t0, "alice", b"bad", "b").is_err());
        }
        u.unlock_at(t0, "alice", b"pw", "c").unwrap();
    }
}
