//! The replica's writes, made on a thread of their own.
//!
//! The core hands the ops it logs ([`Store::put_shared_op`]) and the
//! replica's safety records ([`Store::put_meta`]) to the store; encoding an
//! op's record and sled's inserts (a STORE over 100k messages writes ~100
//! ops of 20–30 KB, whose sled leaves are rewritten whole as they fill, and
//! a few records per op) then run here, in order, beside the core's next
//! op, instead of on the core's thread. Nothing is promised before a flush,
//! so the store's [`Writer::drain`] before each flush, and
//! [`Writer::wait`] before each read of the ops or meta tree, keep every
//! contract of the store: a flush covers every write handed over before
//! it, a read sees them, and a failed write fails the flush.
//!
//! [`Store::put_shared_op`]: aerogramme_proto::store::Store::put_shared_op
//! [`Store::put_meta`]: aerogramme_proto::store::Store::put_meta

use super::{insert_op, store_err};
use aerogramme_proto::oplog::Op;
use aerogramme_proto::store::StoreError;
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// One write handed over.
#[derive(Debug)]
pub(super) enum Write {
    /// An op, into the ops tree.
    Op(Arc<Op>),
    /// A record (key, value), into the meta tree.
    Meta(Vec<u8>, Vec<u8>),
}

/// The writer: a queue of writes and the thread that makes them, in order.
/// Joined when dropped (with the store's last handle).
#[derive(Debug)]
pub(super) struct Writer {
    tx: Option<mpsc::Sender<Write>>,
    done: Arc<Done>,
    thread: Option<JoinHandle<()>>,
}

/// What the thread reports: writes handed over and not yet made, and the
/// first failed write not yet reported.
#[derive(Debug, Default)]
struct Done {
    state: Mutex<(u64, Option<StoreError>)>,
    changed: Condvar,
}

impl Writer {
    /// Starts the thread that writes into `ops` and `meta`.
    pub(super) fn start(ops: sled::Tree, meta: sled::Tree) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Write>();
        let done = Arc::new(Done::default());
        let report = done.clone();
        let thread = std::thread::Builder::new()
            .name("aerogramme-writer".into())
            .spawn(move || {
                for w in rx {
                    let r = match w {
                        Write::Op(op) => insert_op(&ops, &op),
                        Write::Meta(k, v) => meta.insert(k, v).map(|_| ()).map_err(store_err),
                    };
                    let mut st = report.state.lock().unwrap_or_else(PoisonError::into_inner);
                    st.0 -= 1;
                    if let Err(e) = r {
                        st.1.get_or_insert(e);
                    }
                    report.changed.notify_all();
                }
            })?;
        Ok(Writer {
            tx: Some(tx),
            done,
            thread: Some(thread),
        })
    }

    /// Hands `w` over to be made.
    pub(super) fn put(&self, w: Write) -> Result<(), StoreError> {
        let mut st = self
            .done
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(w).is_ok());
        if !sent {
            return Err(StoreError::Io("the store's writer stopped".into()));
        }
        st.0 += 1;
        Ok(())
    }

    /// Waits until every write handed over is made (before a read of the
    /// ops or meta tree). Fails only if the thread stopped.
    pub(super) fn wait(&self) -> Result<(), StoreError> {
        self.wait_then(|_| Ok(()))
    }

    /// [`Writer::wait`], then the first write that failed since the last
    /// drain, if any (before a flush, which must then fail).
    pub(super) fn drain(&self) -> Result<(), StoreError> {
        self.wait_then(|failed| failed.take().map_or(Ok(()), Err))
    }

    fn wait_then(
        &self,
        then: impl FnOnce(&mut Option<StoreError>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut st = self
            .done
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while st.0 > 0 {
            // (A thread that panicked notifies no one: look now and then.)
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(StoreError::Io("the store's writer stopped".into()));
            }
            st = self
                .done
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        then(&mut st.1)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The thread ends with the queue: what was handed over is written
        // first (the store's files stay open until then).
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
