//! Messages of the admin socket (JSON, one per line).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A command for the node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Is the node there?
    Ping,
    /// Create a user.
    UserAdd {
        /// Login name.
        name: String,
        /// Password.
        password: Zeroizing<String>,
    },
    /// Change a user's password.
    UserPasswd {
        /// Login name.
        name: String,
        /// Current password.
        old_password: Zeroizing<String>,
        /// New password.
        new_password: Zeroizing<String>,
    },
    /// Remove a user from this node.
    UserRemove {
        /// Login name.
        name: String,
    },
    /// List the users.
    UserList,
    /// Check a password (through the key cache and rate limits).
    CheckPassword {
        /// Login name.
        name: String,
        /// Password.
        password: Zeroizing<String>,
    },
    /// The node's status.
    Status,
}

/// What went wrong, for scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Unparsable request.
    BadRequest,
    /// Bad name or password.
    Invalid,
    /// The user exists.
    Exists,
    /// No such user.
    NoSuchUser,
    /// Wrong password (or unknown user, for `check-password`).
    Denied,
    /// Too many failures.
    RateLimited,
    /// The node failed.
    Internal,
}

/// One user of the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// Login name.
    pub name: String,
    /// User id (hex).
    pub id: String,
}

/// The node's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Node name.
    pub name: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// Replica id.
    pub replica_id: String,
    /// Whether a `serve` process answered (false: read from the store).
    pub running: bool,
    /// Number of users.
    pub users: usize,
    /// Peer-to-peer listen addresses.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Peers: addresses, connection, round-trip time.
    pub peers: Vec<crate::p2p::PeerStatus>,
    /// Per peer and user: how far behind this node the peer is.
    #[serde(default)]
    pub lag: Vec<LagEntry>,
    /// Mailbox ledgers this node owns (sequences UIDs for) now; 0 when
    /// not serving.
    #[serde(default)]
    pub ledgers_owned: usize,
}

/// How far behind this node a peer is for one user (from the peer's last
/// anti-entropy summary).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagEntry {
    /// Peer id.
    pub peer_id: String,
    /// Login name (or user id when not in the directory).
    pub user: String,
    /// Ops this node holds that the peer lacks.
    pub ops_behind: u64,
    /// Their encoded size in bytes.
    pub bytes_behind: u64,
}

/// The node's answer.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Response {
    /// Answer to `ping`.
    Pong {
        /// Node name.
        name: String,
    },
    /// Done; `user_id` for `user-add`.
    Done {
        /// What was done.
        message: String,
    },
    /// Answer to `user-list`.
    Users {
        /// The users, by name.
        users: Vec<UserEntry>,
    },
    /// Answer to `status`.
    Status(StatusInfo),
    /// The command failed.
    Error {
        /// Kind of failure.
        kind: ErrorKind,
        /// Human-readable reason.
        message: String,
    },
}
