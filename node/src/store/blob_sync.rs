//! Durability of sled's blob files.
//!
//! sled writes any log item over a quarter of its 512 KB segments (a
//! message chunk of 256 KB, a leaf of the ops tree rewritten whole with a
//! dozen STORE ops in it) to a file of its own, `blobs/<lsn>`, and keeps a
//! pointer in its log.
//! sled 0.34 fsyncs its log but never those files, so a power loss after a
//! flush could leave the log pointing at a blob the disk never received:
//! an acknowledged message, or every op of a leaf, lost. Before each flush
//! of the log, [`BlobSync::sync_new`] fsyncs the blob files written since
//! the previous one, then their directory, so that what a flush covers is
//! on disk with it.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// How far the directory's timestamp may lag behind the clock that stamps
/// it (file systems stamp with a coarse, tick-based clock): a listing is
/// trusted to have seen every file only when the directory last changed
/// at least this long before the listing began.
const STAMP_SLACK: Duration = Duration::from_millis(50);

/// Which of a store's blob files are known to be on disk.
#[derive(Debug)]
pub(super) struct BlobSync {
    dir: PathBuf,
    state: Mutex<Synced>,
}

#[derive(Debug, Default)]
struct Synced {
    /// The blob files (named by sled's log sequence numbers) fsynced and
    /// still there at the last listing. A set rather than the highest name:
    /// two threads may write blobs whose names land out of order.
    done: BTreeSet<u64>,
    /// The directory's modification time at a listing that saw every file
    /// in it: while it stays the same, no blob was created since.
    quiet_since: Option<SystemTime>,
    /// Blob files fsynced so far (for tests).
    files: u64,
}

impl BlobSync {
    /// For the store whose sled directory is `db`.
    pub(super) fn new(db: PathBuf) -> Self {
        BlobSync {
            dir: db.join("blobs"),
            state: Mutex::new(Synced::default()),
        }
    }

    /// Fsyncs every blob file written since the last call, then the
    /// directory that names them. A file sled removed meanwhile (its pages
    /// were rewritten) is passed over.
    pub(super) fn sync_new(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = match fs::metadata(&self.dir) {
            Ok(m) => m.modified()?,
            // No blob written yet (sled makes the directory at creation).
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if st.quiet_since == Some(stamp) {
            return Ok(());
        }
        let listed_at = SystemTime::now();
        let mut present = BTreeSet::new();
        let mut synced = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if !st.done.contains(&lsn) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_data()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                synced += 1;
            }
            present.insert(lsn);
        }
        if synced > 0 {
            File::open(&self.dir)?.sync_all()?;
        }
        st.done = present;
        st.files += synced;
        // Trusted next time only if no file can have been created in the
        // same clock tick as the listing began.
        let settled = stamp + STAMP_SLACK <= listed_at;
        st.quiet_since = settled.then_some(stamp);
        Ok(())
    }

    /// Blob files fsynced so far.
    #[cfg(test)]
    pub(super) fn files_synced(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .files
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use aerogramme_proto::ids::{BlobId, UserId};
    use aerogramme_proto::oplog::{BlobChunk, CHUNK_BYTES};

    fn touch(dir: &std::path::Path, name: &str) {
        fs::write(dir.join(name), b"blob").unwrap();
    }

    /// Each new file is synced once, whatever the order of the names, and
    /// a removed or foreign one is no trouble.
    #[test]
    fn new_files_are_synced_once() {
        let db = tempfile::tempdir().unwrap();
        let s = BlobSync::new(db.path().to_path_buf());
        s.sync_new().unwrap(); // no directory yet
        let blobs = db.path().join("blobs");
        fs::create_dir(&blobs).unwrap();
        touch(&blobs, "100");
        touch(&blobs, "200");
        touch(&blobs, "not-a-blob");
        s.sync_new().unwrap();
        assert_eq!(s.files_synced(), 2);
        s.sync_new().unwrap();
        assert_eq!(s.files_synced(), 2);
        // A name below the highest one synced (another thread's blob).
        touch(&blobs, "150");
        fs::remove_file(blobs.join("100")).unwrap();
        s.sync_new().unwrap();
        assert_eq!(s.files_synced(), 3);
        s.sync_new().unwrap();
        assert_eq!(s.files_synced(), 3);
    }

    /// A message chunk over sled's blob threshold lands in a blob file,
    /// which the store's flush syncs.
    #[test]
    fn a_flush_syncs_the_blob_of_a_large_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.flush().unwrap();
        let before = store.blobs.files_synced();
        let chunk = BlobChunk {
            user: UserId([1; 16]),
            blob: BlobId([2; 16]),
            index: 0,
            bytes: vec![7u8; CHUNK_BYTES].into(),
        };
        store.put_chunk(&chunk).unwrap();
        store.flush().unwrap();
        assert!(store.blobs.files_synced() > before);
        let read = store.get_chunk(&chunk.user, &chunk.blob, 0).unwrap();
        assert_eq!(read.map(|c| c.bytes), Some(chunk.bytes));
    }
}
