//! Group commit: many writers, one fsync.
//!
//! # Contract
//!
//! A writer makes its writes (any `put_*` of [`SledStore`]), then calls
//! [`Committer::wait_durable`]. When that returns `Ok`, every write the
//! caller made *before the call* is durable, and the caller may acknowledge
//! it (APPEND OK, LMTP 250, a gossiped op). When it returns `Err`, the flush
//! that was to cover the writes failed: they may or may not survive a crash,
//! and must not be acknowledged.
//!
//! Writers share flushes (leader/follower): a caller that finds no flush in
//! progress becomes the leader and runs one; callers that arrive while a
//! flush runs wait for it to end, then one of them leads a single flush for
//! all of them. A flush covers every write made before it *started*, so a
//! caller never relies on a flush that began before its writes, and at most
//! two flushes pass before any caller returns. Under load, `n` concurrent
//! writers pay about two fsyncs per round instead of `n`.
//!
//! `wait_durable` blocks the calling thread; from async code, call it on a
//! blocking thread (`spawn_blocking`). A committer is a cheap handle
//! (`Clone`): clones share the same flushes.

use super::SledStore;
use aerogramme_proto::store::StoreError;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

impl Committer<SledStore> {
    /// The store, to write to.
    pub fn store(&self) -> &SledStore {
        self.flusher()
    }
}

/// Something that can make all writes so far durable.
pub trait Flusher: Send + Sync + 'static {
    /// One flush of everything written so far.
    fn flush(&self) -> Result<(), StoreError>;
}

impl Flusher for SledStore {
    fn flush(&self) -> Result<(), StoreError> {
        SledStore::flush(self)
    }
}

/// Counters of a [`Committer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Calls to [`Committer::wait_durable`].
    pub waits: u64,
    /// Flushes run.
    pub flushes: u64,
}

#[derive(Default)]
struct State {
    /// Number of the last flush started (flushes are numbered from 1).
    started: u64,
    /// Number of the last flush finished.
    finished: u64,
    /// Number of the last flush that succeeded.
    succeeded: u64,
    /// The error of the last failed flush.
    error: Option<StoreError>,
    /// A flush is running.
    flushing: bool,
    stats: CommitStats,
}

struct Inner<F> {
    flusher: F,
    state: Mutex<State>,
    done: Condvar,
}

/// Group commit over a [`Flusher`] (a [`SledStore`] by default). See the
/// module documentation for the contract.
pub struct Committer<F: Flusher = SledStore> {
    inner: Arc<Inner<F>>,
}

impl<F: Flusher> Clone for Committer<F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<F: Flusher> Committer<F> {
    /// A committer flushing `flusher`.
    pub fn new(flusher: F) -> Self {
        Self {
            inner: Arc::new(Inner {
                flusher,
                state: Mutex::new(State::default()),
                done: Condvar::new(),
            }),
        }
    }

    /// What this committer flushes (the store, to write to).
    pub fn flusher(&self) -> &F {
        &self.inner.flusher
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking writer cannot leave the state inconsistent: every
        // update is a few plain assignments. Keep going after a poison.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once every write made before this call is durable; see the
    /// module documentation.
    pub fn wait_durable(&self) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.stats.waits += 1;
        // The first flush to start from now on covers our writes.
        let target = state.started + 1;
        loop {
            if state.finished >= target {
                return if state.succeeded >= target {
                    Ok(())
                } else {
                    Err(state
                        .error
                        .clone()
                        .unwrap_or_else(|| StoreError::Io("flush failed".into())))
                };
            }
            if state.flushing {
                state = self
                    .inner
                    .done
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead one flush for everyone waiting.
            state.flushing = true;
            state.started += 1;
            state.stats.flushes += 1;
            let number = state.started;
            drop(state);
            let guard = FinishGuard {
                committer: self,
                number,
                result: None,
            };
            let result = self.inner.flusher.flush();
            guard.finish(result);
            state = self.lock();
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CommitStats {
        self.lock().stats
    }
}

/// Records the end of a flush and wakes the waiters, even if the flusher
/// panicked (then as a failure).
struct FinishGuard<'a, F: Flusher> {
    committer: &'a Committer<F>,
    number: u64,
    result: Option<Result<(), StoreError>>,
}

impl<F: Flusher> FinishGuard<'_, F> {
    fn finish(mut self, result: Result<(), StoreError>) {
        self.result = Some(result);
    }
}

impl<F: Flusher> Drop for FinishGuard<'_, F> {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(StoreError::Io("flush panicked".into())));
        let mut state = self.committer.lock();
        state.flushing = false;
        state.finished = self.number;
        match result {
            Ok(()) => state.succeeded = self.number,
            Err(e) => state.error = Some(e),
        }
        drop(state);
        self.committer.inner.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Barrier;
    use std::time::Duration;

    /// A flusher that takes a while and can be told to fail. `written` is
    /// what writers "wrote", `durable` what the last flush made durable.
    #[derive(Default)]
    struct Slow {
        written: AtomicU64,
        durable: AtomicU64,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Flusher for Arc<Slow> {
        fn flush(&self) -> Result<(), StoreError> {
            let upto = self.written.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Io("disk on fire".into()));
            }
            self.durable.fetch_max(upto, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn concurrent_writers_share_flushes_and_every_ack_is_durable() {
        let slow = Arc::new(Slow::default());
        let c = Committer::new(slow.clone());
        let threads = 10;
        let rounds = 20;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (c, slow, barrier) = (c.clone(), slow.clone(), barrier.clone());
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        barrier.wait();
                        let mine = slow.written.fetch_add(1, Ordering::SeqCst) + 1;
                        c.wait_durable().unwrap();
                        assert!(slow.durable.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let stats = c.stats();
        assert_eq!(stats.waits, (threads * rounds) as u64);
        // At most two flushes per round of 10 simultaneous writers.
        assert!(stats.flushes <= 2 * rounds as u64, "{stats:?}");
    }

    #[test]
    fn a_failed_flush_is_reported_and_the_next_one_recovers() {
        let slow = Arc::new(Slow::default());
        let c = Committer::new(slow.clone());
        slow.fail.store(true, Ordering::SeqCst);
        assert_eq!(c.wait_durable(), Err(StoreError::Io("disk on fire".into())));
        slow.fail.store(false, Ordering::SeqCst);
        assert_eq!(c.wait_durable(), Ok(()));
        assert_eq!(c.stats().flushes, 2);
    }
}
