//! An in-memory [`Backend`] for tests and benchmarks: users with optional
//! quotas, every delivered copy kept in a list, and switches to make
//! deliveries fail.

use super::backend::{AddressMap, Backend, DeliverError, RcptError, Recipient};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// One delivered copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Login name.
    pub user: String,
    /// Target mailbox from the address's detail.
    pub mailbox: Option<String>,
    /// Reverse-path (`""` for the null sender).
    pub from: String,
    /// The stored bytes (trace headers included).
    pub message: Vec<u8>,
}

#[derive(Debug, Default)]
struct User {
    quota: Option<u64>,
    used: u64,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<String, User>,
    delivered: Vec<Delivered>,
}

/// In-memory backend.
#[derive(Debug)]
pub struct MemoryBackend {
    map: AddressMap,
    inner: Mutex<Inner>,
    fail_next: AtomicUsize,
    delay: Mutex<Duration>,
}

impl MemoryBackend {
    /// A backend with no users, mapping addresses with `map`.
    pub fn new(map: AddressMap) -> Self {
        MemoryBackend {
            map,
            inner: Mutex::new(Inner::default()),
            fail_next: AtomicUsize::new(0),
            delay: Mutex::new(Duration::ZERO),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a user without quota.
    pub fn add_user(&self, name: &str) {
        self.lock().users.entry(name.to_string()).or_default();
    }

    /// Adds a user (if needed) and sets its quota in octets.
    pub fn set_quota(&self, name: &str, quota: u64) {
        self.lock().users.entry(name.to_string()).or_default().quota = Some(quota);
    }

    /// Makes the next `n` deliveries fail with a temporary error (as a
    /// failed flush would).
    pub fn fail_next_deliveries(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Makes every delivery take this long (simulates an fsync).
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// Every copy delivered so far, in delivery order.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.lock().delivered.clone()
    }

    /// Number of copies delivered so far.
    pub fn count(&self) -> usize {
        self.lock().delivered.len()
    }

    /// Copies delivered to `user`.
    pub fn messages_of(&self, user: &str) -> Vec<Delivered> {
        self.lock()
            .delivered
            .iter()
            .filter(|d| d.user == user)
            .cloned()
            .collect()
    }
}

impl Backend for MemoryBackend {
    type Recipient = Recipient;

    async fn resolve(
        &self,
        address: &str,
        declared_size: Option<u64>,
    ) -> Result<Recipient, RcptError> {
        let mapped = self.map.map(address)?;
        let inner = self.lock();
        let user = inner
            .users
            .get(&mapped.user)
            .ok_or(RcptError::UnknownUser)?;
        if let Some(q) = user.quota {
            if user.used.saturating_add(declared_size.unwrap_or(0)) > q {
                return Err(RcptError::OverQuota);
            }
        }
        Ok(Recipient {
            address: address.to_string(),
            user: mapped.user,
            mailbox: mapped.detail,
        })
    }

    async fn deliver(
        &self,
        recipient: &Recipient,
        envelope_from: &str,
        message: &[u8],
    ) -> Result<(), DeliverError> {
        let delay = *self.delay.lock().unwrap_or_else(|e| e.into_inner());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(DeliverError::Temporary("simulated storage failure".into()));
        }
        let mut inner = self.lock();
        let user = inner
            .users
            .get_mut(&recipient.user)
            .ok_or_else(|| DeliverError::Permanent("user removed".into()))?;
        let len = message.len() as u64;
        if user.quota.is_some_and(|q| user.used + len > q) {
            return Err(DeliverError::OverQuota);
        }
        user.used += len;
        inner.delivered.push(Delivered {
            user: recipient.user.clone(),
            mailbox: recipient.mailbox.clone(),
            from: envelope_from.to_string(),
            message: message.to_vec(),
        });
        Ok(())
    }
}
