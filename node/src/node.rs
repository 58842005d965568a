//! A node's state as the admin commands see it: configuration, identity,
//! store, accounts and the unlocker. Opened by `serve` (and kept for its
//! whole life) or, when no node runs, by a single CLI command.

use crate::accounts::Accounts;
use crate::config::{Config, ConfigError};
use crate::identity::{KeyFileError, NodeIdentity};
use crate::store::{Committer, OpenError, SledStore};
use crate::unlock::Unlocker;
use aerogramme_proto::ids::ReplicaId;
use std::path::{Path, PathBuf};

/// Name of the store directory inside the data directory.
pub const STORE_DIR: &str = "db";

/// Why a node could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key file is missing or invalid.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] OpenError),
}

/// An open node.
pub struct Node {
    /// Its configuration.
    pub config: Config,
    /// Its libp2p peer id (text form).
    pub peer_id: String,
    /// Its replica id.
    pub replica: ReplicaId,
    /// Group commit over its store.
    pub committer: Committer,
    /// Its accounts.
    pub accounts: Accounts,
    /// Login checks, key cache and rate limits.
    pub unlocker: Unlocker,
    /// Its identity (libp2p key pair).
    pub identity: NodeIdentity,
    /// The core and the network, once `serve` runs them.
    pub running: std::sync::OnceLock<Running>,
}

/// What a serving node runs, for the admin commands.
#[derive(Clone)]
pub struct Running {
    /// The core.
    pub core: crate::core::CoreHandle,
    /// The peer-to-peer layer.
    pub p2p: crate::p2p::P2pHandle,
}

impl Node {
    /// The store directory of data directory `dir`.
    pub fn store_path(dir: &Path) -> PathBuf {
        dir.join(STORE_DIR)
    }

    /// Opens the node of data directory `dir`: configuration, identity and
    /// store (which fails with [`OpenError::Locked`] while another process
    /// has it open).
    pub fn open(dir: &Path) -> Result<Node, NodeError> {
        let config = Config::load(dir)?;
        let identity = NodeIdentity::load(dir)?;
        let store = SledStore::open(Self::store_path(dir))?;
        let committer = Committer::new(store);
        let accounts = Accounts::new(committer.clone());
        let unlocker = Unlocker::new(
            accounts.clone(),
            config.key_cache,
            config.login,
            config.argon2,
        );
        Ok(Node {
            peer_id: identity.peer_id().to_string(),
            replica: identity.replica_id(),
            config,
            committer,
            accounts,
            unlocker,
            identity,
            running: std::sync::OnceLock::new(),
        })
    }

    /// The store.
    pub fn store(&self) -> &SledStore {
        self.committer.store()
    }
}
