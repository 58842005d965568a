//! The node's identity (`DIR/node.key`) and the community's network key.
//!
//! The node secret is 32 random bytes: the Ed25519 secret key of the node's
//! libp2p identity. Its peer id names the node to its peers; the
//! [`ReplicaId`] is derived from the peer id ([`replica_of`]), so every node
//! computes the same replica id for a peer and both are stable for the life
//! of the data directory.

use aerogramme_proto::ids::ReplicaId;
use rand_core::{OsRng, RngCore};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Name of the node secret file in the data directory.
pub const NODE_KEY_FILE: &str = "node.key";
/// Length of the node secret and of the network key.
pub const KEY_LEN: usize = 32;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file does not hold a key of the expected form.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file does not exist.
    #[error("{}: missing (run `aerogramme init`)", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
}

/// The node's secret and what is derived from it.
pub struct NodeIdentity {
    secret: Zeroizing<[u8; KEY_LEN]>,
}

impl NodeIdentity {
    /// Loads `DIR/node.key`, or creates it (random, mode 0600) when missing.
    /// Returns whether it was created.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), KeyFileError> {
        let path = dir.join(NODE_KEY_FILE);
        match Self::load(dir) {
            Ok(id) => Ok((id, false)),
            Err(KeyFileError::Missing { .. }) => {
                let mut secret = Zeroizing::new([0u8; KEY_LEN]);
                OsRng.fill_bytes(&mut secret[..]);
                write_private(&path, &secret[..])?;
                Ok((Self { secret }, true))
            }
            Err(e) => Err(e),
        }
    }

    /// Loads `DIR/node.key`.
    pub fn load(dir: &Path) -> Result<Self, KeyFileError> {
        let path = dir.join(NODE_KEY_FILE);
        let bytes = Zeroizing::new(read_private(&path)?);
        let secret =
            <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyFileError::Malformed {
                path: path.clone(),
                reason: format!("{} bytes, expected a {KEY_LEN}-byte node key", bytes.len()),
            })?;
        Ok(Self {
            secret: Zeroizing::new(secret),
        })
    }

    /// The node's libp2p key pair (Ed25519, from the node secret).
    pub fn keypair(&self) -> libp2p::identity::Keypair {
        let mut secret = Zeroizing::new(*self.secret);
        libp2p::identity::Keypair::ed25519_from_bytes(&mut secret[..])
            .expect("a 32-byte secret is a valid Ed25519 secret key")
    }

    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.keypair().public().to_peer_id()
    }

    /// The replica id of this node (derived from its peer id).
    pub fn replica_id(&self) -> ReplicaId {
        replica_of(&self.peer_id())
    }
}

/// The replica id of a peer: the first 8 bytes of a BLAKE2b digest of its
/// peer id, so every node derives the same id for a peer.
pub fn replica_of(peer: &libp2p::PeerId) -> ReplicaId {
    let mut input = b"aerogramme/v1/replica/".to_vec();
    input.extend_from_slice(&peer.to_bytes());
    let mut first = [0u8; 8];
    if let Ok(d) = orion::hash::digest(&input) {
        first.copy_from_slice(&d.as_ref()[..8]);
    }
    ReplicaId(u64::from_be_bytes(first))
}

/// Loads the network key at `path`, or creates it (32 random bytes, hex,
/// mode 0600) when missing. Returns whether it was created.
pub fn load_or_create_network_key(
    path: &Path,
) -> Result<(Zeroizing<[u8; KEY_LEN]>, bool), KeyFileError> {
    match load_network_key(path) {
        Ok(k) => Ok((k, false)),
        Err(KeyFileError::Missing { .. }) => {
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            OsRng.fill_bytes(&mut key[..]);
            let text = Zeroizing::new(format!("{}\n", hex(&key[..])));
            write_private(path, text.as_bytes())?;
            Ok((key, true))
        }
        Err(e) => Err(e),
    }
}

/// Loads a network key file: 64 hexadecimal digits (surrounding white
/// space ignored).
pub fn load_network_key(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyFileError> {
    let bytes = Zeroizing::new(read_private(path)?);
    let malformed = || KeyFileError::Malformed {
        path: path.to_path_buf(),
        reason: format!("expected {} hexadecimal digits", 2 * KEY_LEN),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?.trim();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if text.len() != 2 * KEY_LEN {
        return Err(malformed());
    }
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| malformed())?;
        key[i] = u8::from_str_radix(s, 16).map_err(|_| malformed())?;
    }
    Ok(key)
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_private(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    match fs::read(path) {
        Ok(b) => {
            if let Ok(m) = fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        "{}: readable by other users; should be mode 0600",
                        path.display()
                    );
                }
            }
            Ok(b)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(KeyFileError::Missing {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates `path` (which must not exist) with mode 0600 and `bytes`, synced.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err)?;
    f.write_all(bytes).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = NodeIdentity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (b, created) = NodeIdentity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(a.replica_id(), b.replica_id());
        let mode = fs::metadata(dir.path().join(NODE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::write(dir.path().join(NODE_KEY_FILE), b"short").unwrap();
        assert!(matches!(
            NodeIdentity::load(dir.path()),
            Err(KeyFileError::Malformed { .. })
        ));
    }

    #[test]
    fn network_key_is_reused_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.key");
        let (k1, created) = load_or_create_network_key(&path).unwrap();
        assert!(created);
        let (k2, created) = load_or_create_network_key(&path).unwrap();
        assert!(!created);
        assert_eq!(*k1, *k2);
        assert_eq!(fs::read_to_string(&path).unwrap().trim(), hex(&k1[..]));
        for bad in ["", "zz", &"g".repeat(64), &"ab".repeat(33), "é"] {
            fs::write(&path, bad).unwrap();
            assert!(
                matches!(load_network_key(&path), Err(KeyFileError::Malformed { .. })),
                "{bad}"
            );
        }
    }
}
