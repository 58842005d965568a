//! The node's storage: [`SledStore`], the sled implementation of
//! [`aerogramme_proto::store::Store`], and [`Committer`], group commit on top
//! of it.
//!
//! One sled database per node, in `DIR/db`, with one tree per kind of record
//! (see [`keys`] for the byte layout): `ops`, `chunks`, `checkpoints`,
//! `accounts`, `meta`. The default tree holds only the schema version
//! ([`SCHEMA_VERSION`]), written when the database is created and checked at
//! every open. Everything stored about a user is what the [`Store`] trait is
//! given: ciphertext, opaque ids, sizes and versions.
//!
//! [`SledStore`] is a cheap handle (`Clone`, `Send`, `Sync`): every clone
//! shares the same database, and every method takes `&self`, so concurrent
//! writers need no lock of their own. Writes are visible at once and durable
//! after [`SledStore::flush`] (one fsync of everything written so far), or
//! after [`Committer::wait_durable`], which shares one flush between
//! concurrent writers.

mod blob_sync;
mod commit;
pub mod keys;
mod writer;

pub use commit::{CommitStats, Committer};

use aerogramme_proto::ids::{BlobId, LogId, UserId};
use aerogramme_proto::oplog::{BlobChunk, Op};
use aerogramme_proto::store::{MetaRecords, Store, StoreError};
use blob_sync::BlobSync;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use writer::{Write, Writer};

/// Version of the on-disk layout this build reads and writes. Version 2
/// added a sequencer record (`Chosen`, a commit of a value already
/// accepted) that a version 1 build cannot read; a version 1 store is read
/// as it is (it holds no such record) and marked 2 when it is opened, so
/// that a version 1 build then refuses it with a clear error.
pub const SCHEMA_VERSION: u32 = 2;

/// Older versions this build reads (and upgrades by rewriting the version).
const READS_OLDER: [u32; 1] = [1];

/// Key of the schema version in the default tree.
const SCHEMA_KEY: &[u8] = b"aerogramme/schema-version";

/// Names of the trees.
const TREES: [&str; 5] = ["ops", "chunks", "checkpoints", "accounts", "meta"];

/// sled's page cache size.
const CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Something other than a directory is where the store should be.
    #[error("{}: not a directory, so not an Aerogramme store", path.display())]
    NotADirectory {
        /// The store's path.
        path: PathBuf,
    },
    /// The directory holds something that is not an Aerogramme store.
    #[error("{}: not an Aerogramme store ({detail})", path.display())]
    Foreign {
        /// The store's path.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// An Aerogramme store of another schema version.
    #[error(
        "{}: store schema version {found}, but this build reads version {expected}",
        path.display()
    )]
    SchemaVersion {
        /// The store's path.
        path: PathBuf,
        /// Version found on disk.
        found: u32,
        /// Version this build reads ([`SCHEMA_VERSION`]).
        expected: u32,
    },
    /// Another process (a running `aerogramme serve`?) has the store open.
    #[error("{}: the store is in use by another process", path.display())]
    Locked {
        /// The store's path.
        path: PathBuf,
    },
    /// The store's files are damaged.
    #[error("{}: corrupt store: {detail}", path.display())]
    Corrupt {
        /// The store's path.
        path: PathBuf,
        /// What sled or the schema check reported.
        detail: String,
    },
    /// The file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The store's path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Writes an op's record into the ops tree (see [`keys`]).
fn insert_op(ops: &sled::Tree, op: &Op) -> Result<(), StoreError> {
    let key = keys::op_key(&op.user, &op.log, &op.id);
    ops.insert(key, keys::op_value(op)?)
        .map(|_| ())
        .map_err(store_err)
}

/// An I/O error (of sled's or of the store's own files) as a [`StoreError`].
fn io_store_err(e: io::Error) -> StoreError {
    match e.raw_os_error() {
        Some(28) => StoreError::Full, // ENOSPC
        _ => StoreError::Io(e.to_string()),
    }
}

/// Maps a sled error to the proto's storage error.
pub(crate) fn store_err(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => io_store_err(io),
        sled::Error::Corruption { at, .. } => {
            StoreError::Corrupt(format!("sled corruption at {at:?}"))
        }
        other => StoreError::Io(other.to_string()),
    }
}

/// Prefix of the meta keys holding the IMAP layer's sealed message
/// summaries: `node/summary/` ‖ user ‖ blob (a cache, never replicated).
pub const SUMMARY_PREFIX: &[u8] = b"node/summary/";

/// Prefix of the meta keys holding the IMAP layer's sealed search fields
/// of a message (every header field): `node/fields/` ‖ user ‖ blob (a
/// cache, never replicated).
pub const FIELDS_PREFIX: &[u8] = b"node/fields/";

/// Prefix of the meta keys holding the IMAP layer's sealed common search
/// fields of a message (From, To, Cc, Bcc, Subject, the `Date:` day), small
/// records kept together: `node/common/` ‖ user ‖ blob (a cache, never
/// replicated).
pub const COMMON_PREFIX: &[u8] = b"node/common/";

/// The sled implementation of [`Store`]. See the module documentation.
#[derive(Clone, Debug)]
pub struct SledStore {
    /// Makes the replica's writes beside the core (see [`writer`]).
    writer: Arc<Writer>,
    /// Fsyncs sled's blob files before each flush (see [`blob_sync`]).
    blobs: Arc<BlobSync>,
    db: sled::Db,
    ops: sled::Tree,
    chunks: sled::Tree,
    checkpoints: sled::Tree,
    accounts: sled::Tree,
    meta: sled::Tree,
    /// Last, so that it drops after sled's handles (see [`OPENED_HERE`]).
    open_here: Arc<OpenHere>,
}

impl SledStore {
    /// Opens the store at `path` (a directory), creating it if it does not
    /// exist. Never panics on what it finds there: a file, a foreign
    /// directory, another schema version, a locked or damaged database are
    /// each a typed [`OpenError`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        match fs::metadata(&path) {
            Ok(m) if !m.is_dir() => return Err(OpenError::NotADirectory { path }),
            Ok(_) => {
                let empty = is_empty_dir(&path).map_err(io_err)?;
                if empty {
                    create(&path)?;
                } else {
                    check_looks_like_sled(&path)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(&path)?,
            Err(e) => return Err(io_err(e)),
        };
        let db = open_waiting(&path)?;
        check_schema(&path, &db)?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_err(&path, e));
        let (ops, meta) = (tree(TREES[0])?, tree(TREES[4])?);
        let writer = Arc::new(Writer::start(ops.clone(), meta.clone()).map_err(io_err)?);
        Ok(Self {
            writer,
            blobs: Arc::new(BlobSync::new(path.clone())),
            ops,
            chunks: tree(TREES[1])?,
            checkpoints: tree(TREES[2])?,
            accounts: tree(TREES[3])?,
            meta,
            db,
            open_here: Arc::new(OpenHere::new(path)),
        })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.open_here.0
    }

    /// Makes every write made so far durable (`sled::Db::flush`: one fsync,
    /// after one per blob file sled wrote since the last flush), those
    /// handed to the writer included; fails if one of those failed.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.writer.drain()?;
        self.blobs.sync_new().map_err(io_store_err)?;
        self.db.flush().map(|_| ()).map_err(store_err)
    }

    /// [`SledStore::put_op`] on the writer's thread: returns at once; the
    /// op is read back, and made durable, like any write (see [`writer`]).
    pub fn put_shared_op(&self, op: &Arc<Op>) -> Result<(), StoreError> {
        self.writer.put(Write::Op(op.clone()))
    }

    /// [`SledStore::put_meta`] on the writer's thread, like
    /// [`SledStore::put_shared_op`]: the replica's records.
    pub fn put_meta_behind(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.writer.put(Write::Meta(key.to_vec(), value.to_vec()))
    }

    /// See [`Store::put_op`].
    pub fn put_op(&self, op: &Op) -> Result<(), StoreError> {
        insert_op(&self.ops, op)
    }

    /// See [`Store::ops`].
    pub fn ops(&self, user: &UserId, log: &LogId) -> Result<Vec<Op>, StoreError> {
        self.writer.wait()?;
        self.ops
            .scan_prefix(keys::log_key(user, log))
            .map(|kv| {
                let (k, v) = kv.map_err(store_err)?;
                keys::decode_op(&k, &v)
            })
            .collect()
    }

    /// See [`Store::logs`]. Seeks from one log to the next, so it costs one
    /// lookup per log, not one per op.
    pub fn logs(&self, user: &UserId) -> Result<Vec<LogId>, StoreError> {
        self.writer.wait()?;
        let mut logs = Vec::new();
        let mut from = user.as_bytes().to_vec();
        while let Some(kv) = self.ops.range(from..).next() {
            let (k, _) = kv.map_err(store_err)?;
            if !k.starts_with(user.as_bytes()) {
                break;
            }
            let log = keys::op_key_log(&k)?;
            logs.push(log);
            match keys::prefix_end(&keys::log_key(user, &log)) {
                Some(next) => from = next,
                None => break,
            }
        }
        Ok(logs)
    }

    /// See [`Store::put_chunk`].
    pub fn put_chunk(&self, chunk: &BlobChunk) -> Result<(), StoreError> {
        let key = keys::chunk_key(&chunk.user, &chunk.blob, chunk.index);
        self.chunks
            .insert(key, &chunk.bytes[..])
            .map(|_| ())
            .map_err(store_err)
    }

    /// See [`Store::get_chunk`].
    pub fn get_chunk(
        &self,
        user: &UserId,
        blob: &BlobId,
        index: u32,
    ) -> Result<Option<BlobChunk>, StoreError> {
        let key = keys::chunk_key(user, blob, index);
        Ok(self.chunks.get(key).map_err(store_err)?.map(|v| BlobChunk {
            user: *user,
            blob: *blob,
            index,
            bytes: v.as_ref().into(),
        }))
    }

    /// See [`Store::has_chunk`].
    pub fn has_chunk(&self, user: &UserId, blob: &BlobId, index: u32) -> Result<bool, StoreError> {
        self.chunks
            .contains_key(keys::chunk_key(user, blob, index))
            .map_err(store_err)
    }

    /// See [`Store::put_checkpoint`]. Atomic against concurrent writers of
    /// the same log: the highest `upto` wins.
    pub fn put_checkpoint(
        &self,
        user: &UserId,
        log: &LogId,
        upto: u64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let new = keys::versioned(upto, bytes);
        self.checkpoints
            .fetch_and_update(keys::log_key(user, log), |old| match old {
                Some(old) if keys::split_versioned(old).is_ok_and(|(v, _)| v > upto) => {
                    Some(old.to_vec())
                }
                _ => Some(new.clone()),
            })
            .map(|_| ())
            .map_err(store_err)
    }

    /// See [`Store::latest_checkpoint`].
    pub fn latest_checkpoint(
        &self,
        user: &UserId,
        log: &LogId,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.checkpoints
            .get(keys::log_key(user, log))
            .map_err(store_err)?
            .map(|v| keys::split_versioned(&v))
            .transpose()
    }

    /// See [`Store::put_meta`].
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key, value).map(|_| ()).map_err(store_err)
    }

    /// See [`Store::get_meta`].
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.writer.wait()?;
        Ok(self.meta.get(key).map_err(store_err)?.map(|v| v.to_vec()))
    }

    /// Stores `value` under `key` only if `key` holds `expected` now
    /// (`None`: absent; a `None` value removes the key). Returns whether it
    /// was stored.
    pub fn compare_and_swap_meta(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        self.writer.wait()?;
        self.meta
            .compare_and_swap(key, expected, value)
            .map(|r| r.is_ok())
            .map_err(store_err)
    }

    /// See [`Store::scan_meta`].
    pub fn scan_meta(&self, prefix: &[u8]) -> Result<MetaRecords, StoreError> {
        self.writer.wait()?;
        self.meta
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(store_err)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// See [`Store::put_account`].
    pub fn put_account(
        &self,
        user: &UserId,
        version: u64,
        record: &[u8],
    ) -> Result<(), StoreError> {
        self.accounts
            .insert(user.as_bytes(), keys::versioned(version, record))
            .map(|_| ())
            .map_err(store_err)
    }

    /// See [`Store::get_account`].
    pub fn get_account(&self, user: &UserId) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.accounts
            .get(user.as_bytes())
            .map_err(store_err)?
            .map(|v| keys::split_versioned(&v))
            .transpose()
    }

    /// See [`Store::users`]. Seeks from one user to the next in each tree.
    pub fn users(&self) -> Result<Vec<UserId>, StoreError> {
        self.writer.wait()?;
        let mut users = std::collections::BTreeSet::new();
        for tree in [&self.ops, &self.chunks, &self.checkpoints, &self.accounts] {
            let mut from = Vec::new();
            while let Some(kv) = tree.range(from..).next() {
                let (k, _) = kv.map_err(store_err)?;
                let user = keys::key_user(&k)?;
                users.insert(user);
                match keys::prefix_end(user.as_bytes()) {
                    Some(next) => from = next,
                    None => break,
                }
            }
        }
        Ok(users.into_iter().collect())
    }

    /// Removes every record of `user` on this node: ops, chunks,
    /// checkpoints, kept summaries and, unless `keep_account` (a removal
    /// keeps its tombstone), the account record. Returns how many were
    /// removed.
    pub fn purge_user(&self, user: &UserId, keep_account: bool) -> Result<u64, StoreError> {
        self.writer.wait()?;
        let mut removed = 0;
        // The IMAP layer's kept summaries and search fields of the user's
        // messages.
        for kept in [SUMMARY_PREFIX, FIELDS_PREFIX, COMMON_PREFIX] {
            let mut prefix = kept.to_vec();
            prefix.extend_from_slice(user.as_bytes());
            let mut batch = sled::Batch::default();
            for kv in self.meta.scan_prefix(&prefix) {
                let (k, _) = kv.map_err(store_err)?;
                batch.remove(k);
                removed += 1;
            }
            self.meta.apply_batch(batch).map_err(store_err)?;
        }
        let trees = [&self.ops, &self.chunks, &self.checkpoints, &self.accounts];
        let trees = if keep_account {
            &trees[..3]
        } else {
            &trees[..]
        };
        for tree in trees {
            let mut batch = sled::Batch::default();
            for kv in tree.scan_prefix(user.as_bytes()) {
                let (k, _) = kv.map_err(store_err)?;
                batch.remove(k);
                removed += 1;
            }
            tree.apply_batch(batch).map_err(store_err)?;
        }
        Ok(removed)
    }
}

impl Store for SledStore {
    fn put_op(&mut self, op: &Op) -> Result<(), StoreError> {
        SledStore::put_op(self, op)
    }

    fn put_shared_op(&mut self, op: &Arc<Op>) -> Result<(), StoreError> {
        SledStore::put_shared_op(self, op)
    }

    fn ops(&self, user: &UserId, log: &LogId) -> Result<Vec<Op>, StoreError> {
        SledStore::ops(self, user, log)
    }

    fn logs(&self, user: &UserId) -> Result<Vec<LogId>, StoreError> {
        SledStore::logs(self, user)
    }

    fn put_chunk(&mut self, chunk: &BlobChunk) -> Result<(), StoreError> {
        SledStore::put_chunk(self, chunk)
    }

    fn get_chunk(
        &self,
        user: &UserId,
        blob: &BlobId,
        index: u32,
    ) -> Result<Option<BlobChunk>, StoreError> {
        SledStore::get_chunk(self, user, blob, index)
    }

    fn read_chunk(
        &self,
        user: &UserId,
        blob: &BlobId,
        index: u32,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, StoreError> {
        let key = keys::chunk_key(user, blob, index);
        Ok(self
            .chunks
            .get(key)
            .map_err(store_err)?
            .map(|v| f(&v))
            .is_some())
    }

    fn has_chunk(&self, user: &UserId, blob: &BlobId, index: u32) -> Result<bool, StoreError> {
        SledStore::has_chunk(self, user, blob, index)
    }

    fn put_checkpoint(
        &mut self,
        user: &UserId,
        log: &LogId,
        upto: u64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        SledStore::put_checkpoint(self, user, log, upto, bytes)
    }

    fn latest_checkpoint(
        &self,
        user: &UserId,
        log: &LogId,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        SledStore::latest_checkpoint(self, user, log)
    }

    fn put_meta(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        SledStore::put_meta_behind(self, key, value)
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        SledStore::get_meta(self, key)
    }

    fn scan_meta(&self, prefix: &[u8]) -> Result<MetaRecords, StoreError> {
        SledStore::scan_meta(self, prefix)
    }

    fn put_account(
        &mut self,
        user: &UserId,
        version: u64,
        record: &[u8],
    ) -> Result<(), StoreError> {
        SledStore::put_account(self, user, version, record)
    }

    fn get_account(&self, user: &UserId) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        SledStore::get_account(self, user)
    }

    fn users(&self) -> Result<Vec<UserId>, StoreError> {
        SledStore::users(self)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        SledStore::flush(self)
    }
}

/// The stores this process has opened: open now (`true`) or closed. sled
/// lets go of its lock file a moment after its last handle drops (its
/// background threads hold the files a little longer), so reopening a
/// closed one in the same process waits a little for that lock instead of
/// calling it taken.
static OPENED_HERE: Mutex<BTreeMap<PathBuf, bool>> = Mutex::new(BTreeMap::new());

/// Marks its store open here while it lives, closed when the store's last
/// handle drops.
#[derive(Debug)]
struct OpenHere(PathBuf);

impl OpenHere {
    fn new(path: PathBuf) -> Self {
        mark_here(&path, true);
        Self(path)
    }
}

impl Drop for OpenHere {
    fn drop(&mut self) {
        mark_here(&self.0, false);
    }
}

fn mark_here(path: &Path, open: bool) {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    OPENED_HERE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(path, open);
}

fn closed_here(path: &Path) -> bool {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    OPENED_HERE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&path)
        == Some(&false)
}

/// Opens sled at `path`; when this process has closed a store there before
/// (or just created it), waits up to a second for the lock that closed
/// instance still holds. Another process's lock is reported at once.
fn open_waiting(path: &Path) -> Result<sled::Db, OpenError> {
    let mut tries = 50;
    loop {
        match open_sled(path) {
            Err(OpenError::Locked { .. }) if tries > 0 && closed_here(path) => {
                tries -= 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Opens sled at `path`, turning its errors and panics into [`OpenError`].
fn open_sled(path: &Path) -> Result<sled::Db, OpenError> {
    let config = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
    // sled may panic on some damaged files instead of returning an error.
    match catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(open_err(path, e)),
        Err(panic) => Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("sled failed while opening: {}", panic_message(&panic)),
        }),
    }
}

fn is_empty_dir(path: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(path)?.next().is_none())
}

/// Creates a store at `path` (absent or an empty directory) atomically: the
/// database is made beside it, in `PATH.creating`, with its schema version
/// flushed, then renamed into place. A crash leaves either no store or a
/// complete one, so a store without a schema version is never ours.
fn create(path: &Path) -> Result<(), OpenError> {
    let io_err = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".creating");
    let tmp = PathBuf::from(tmp);
    match fs::remove_dir_all(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    {
        let db = open_sled(&tmp)?;
        db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
            .map_err(|e| open_err(&tmp, e))?;
        db.flush().map_err(|e| open_err(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(io_err)?;
    // The instance that wrote the schema version may hold the lock a moment.
    mark_here(path, false);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err)?;
    }
    Ok(())
}

/// Files sled 0.34 keeps in its directory.
const SLED_FILES: [&str; 4] = ["conf", "db", "blobs", "snap."];

/// Refuses an existing, non-empty directory that holds none of sled's files
/// (sled would otherwise make a database among someone else's files).
fn check_looks_like_sled(path: &Path) -> Result<(), OpenError> {
    let io_err = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(path).map_err(io_err)? {
        names.push(
            entry
                .map_err(io_err)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    if names.is_empty() {
        return Ok(());
    }
    let is_sled = |n: &String| {
        SLED_FILES
            .iter()
            .any(|s| n == s || (s.ends_with('.') && n.starts_with(s)))
    };
    if !names.iter().any(|n| n == "conf" || n == "db") {
        names.sort();
        names.truncate(3);
        return Err(OpenError::Foreign {
            path: path.to_path_buf(),
            detail: format!("found {} and no database files", names.join(", ")),
        });
    }
    if let Some(odd) = names.iter().find(|n| !is_sled(n)) {
        return Err(OpenError::Foreign {
            path: path.to_path_buf(),
            detail: format!("unexpected file {odd}"),
        });
    }
    Ok(())
}

fn open_err(path: &Path, e: sled::Error) -> OpenError {
    let path = path.to_path_buf();
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            OpenError::Locked { path }
        }
        sled::Error::Io(source) => OpenError::Io { path, source },
        other => OpenError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Writes the schema version into a new database, checks it in an old one.
fn check_schema(path: &Path, db: &sled::Db) -> Result<(), OpenError> {
    let stored = db.get(SCHEMA_KEY).map_err(|e| open_err(path, e))?;
    match stored {
        Some(v) => {
            let bytes = <[u8; 4]>::try_from(v.as_ref()).map_err(|_| OpenError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("schema version record of {} bytes", v.len()),
            })?;
            let found = u32::from_be_bytes(bytes);
            if READS_OLDER.contains(&found) {
                db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .and_then(|_| db.flush())
                    .map_err(|e| open_err(path, e))?;
                tracing::info!(
                    "{}: store schema version {found} upgraded to {SCHEMA_VERSION}",
                    path.display()
                );
                return Ok(());
            }
            if found != SCHEMA_VERSION {
                return Err(OpenError::SchemaVersion {
                    path: path.to_path_buf(),
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
            Ok(())
        }
        None => {
            // Stores are created with their version (see `create`): a
            // database without one is another program's, or damaged.
            let foreign = !db.is_empty()
                || db.tree_names().iter().any(|name| {
                    name.as_ref() != b"__sled__default"
                        && db.open_tree(name).map(|t| !t.is_empty()).unwrap_or(true)
                });
            Err(if foreign {
                OpenError::Foreign {
                    path: path.to_path_buf(),
                    detail: "a sled database without an Aerogramme schema version".into(),
                }
            } else {
                OpenError::Corrupt {
                    path: path.to_path_buf(),
                    detail: "no schema version: the database files hold no valid data".into(),
                }
            })
        }
    }
}

/// Overwrites the schema version of the store at `path` (tests and future
/// migrations only).
#[doc(hidden)]
pub fn set_schema_version(path: &Path, version: u32) -> Result<(), OpenError> {
    let store = SledStore::open(path)?;
    store
        .db
        .insert(SCHEMA_KEY, &version.to_be_bytes())
        .map_err(|e| open_err(path, e))?;
    store.db.flush().map_err(|e| open_err(path, e))?;
    Ok(())
}
