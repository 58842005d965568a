//! Runs admin commands against a [`Node`].

use super::protocol::{ErrorKind, LagEntry, Request, Response, StatusInfo, UserEntry};
use crate::accounts::AccountError;
use crate::node::Node;
use crate::unlock::UnlockError;

fn account_error(e: AccountError) -> Response {
    let kind = match &e {
        AccountError::InvalidName(_) | AccountError::InvalidPassword(_) => ErrorKind::Invalid,
        AccountError::Exists(_) => ErrorKind::Exists,
        AccountError::NoSuchUser(_) => ErrorKind::NoSuchUser,
        AccountError::WrongPassword => ErrorKind::Denied,
        AccountError::Corrupt(_) | AccountError::Crypto(_) | AccountError::Store(_) => {
            tracing::error!("admin command failed: {e}");
            ErrorKind::Internal
        }
    };
    Response::Error {
        kind,
        message: e.to_string(),
    }
}

/// Runs one command; `running` says whether this is the serving node
/// (reported by `status`). Logs changes, never passwords.
pub fn handle(node: &Node, request: Request, running: bool) -> Response {
    match request {
        Request::Ping => Response::Pong {
            name: node.config.name.clone(),
        },
        Request::UserAdd { name, password } => {
            match node
                .accounts
                .add(&name, password.as_bytes(), node.config.argon2)
            {
                Ok(id) => {
                    tracing::info!(user = %name, "user added");
                    announce(node, id);
                    Response::Done {
                        message: format!("user {name} added (id {id})"),
                    }
                }
                Err(e) => account_error(e),
            }
        }
        Request::UserPasswd {
            name,
            old_password,
            new_password,
        } => match node.accounts.passwd(
            &name,
            old_password.as_bytes(),
            new_password.as_bytes(),
            node.config.argon2,
        ) {
            Ok(id) => {
                node.unlocker.forget(&id);
                announce(node, id);
                tracing::info!(user = %name, "password changed");
                Response::Done {
                    message: format!("password of {name} changed"),
                }
            }
            Err(e) => account_error(e),
        },
        Request::UserRemove { name } => match node.accounts.remove(&name) {
            Ok((id, version)) => {
                node.unlocker.forget(&id);
                if let Some(r) = node.running.get() {
                    let _ = r.core.run(move |st| st.remove_account(id, version));
                }
                tracing::info!(user = %name, "user removed");
                Response::Done {
                    message: format!("user {name} removed"),
                }
            }
            Err(e) => account_error(e),
        },
        Request::UserList => match node.accounts.list() {
            Ok(list) => Response::Users {
                users: list
                    .into_iter()
                    .map(|(name, id)| UserEntry {
                        name,
                        id: id.to_string(),
                    })
                    .collect(),
            },
            Err(e) => account_error(e),
        },
        Request::CheckPassword { name, password } => {
            match node.unlocker.unlock(&name, password.as_bytes(), "local") {
                Ok(_) => Response::Done {
                    message: format!("password of {name} accepted"),
                },
                Err(e @ UnlockError::Denied) => Response::Error {
                    kind: ErrorKind::Denied,
                    message: e.to_string(),
                },
                Err(e @ UnlockError::RateLimited { .. }) => Response::Error {
                    kind: ErrorKind::RateLimited,
                    message: e.to_string(),
                },
                Err(UnlockError::Account(e)) => account_error(e),
            }
        }
        Request::Status => match node.accounts.list() {
            Ok(list) => {
                let (listen, peers, lag, ledgers_owned) = network_status(node, &list);
                Response::Status(StatusInfo {
                    name: node.config.name.clone(),
                    peer_id: node.peer_id.clone(),
                    replica_id: node.replica.to_string(),
                    running,
                    users: list.len(),
                    listen,
                    peers,
                    lag,
                    ledgers_owned,
                })
            }
            Err(e) => account_error(e),
        },
    }
}

/// Sends a user's new account record to the community (when serving).
fn announce(node: &Node, user: aerogramme_proto::ids::UserId) {
    if let Some(r) = node.running.get() {
        let _ = r.core.run(move |st| st.announce_account(user));
    }
}

/// Listen addresses, peers, per (peer, user) how far behind the peer is
/// (from the last `Have` it sent), and the ledgers this node owns (empty
/// when the node is not serving).
fn network_status(
    node: &Node,
    users: &[(String, aerogramme_proto::ids::UserId)],
) -> (
    Vec<String>,
    Vec<crate::p2p::PeerStatus>,
    Vec<LagEntry>,
    usize,
) {
    let Some(r) = node.running.get() else {
        return (Vec::new(), Vec::new(), Vec::new(), 0);
    };
    let listen = r.p2p.listen_addrs().iter().map(|a| a.to_string()).collect();
    let peers = r.p2p.peers();
    let names: std::collections::HashMap<_, _> =
        users.iter().map(|(n, u)| (*u, n.clone())).collect();
    let haves = r.p2p.haves();
    let (lag, owned) = r
        .core
        .call_blocking(
            move |st| {
                let lag = haves
                    .into_iter()
                    .map(|(peer, user, logs)| {
                        let (ops, bytes) = st.replica.behind(&user, &logs);
                        LagEntry {
                            peer_id: peer,
                            user: names
                                .get(&user)
                                .cloned()
                                .unwrap_or_else(|| user.to_string()),
                            ops_behind: ops,
                            bytes_behind: bytes,
                        }
                    })
                    .collect::<Vec<_>>();
                (lag, st.replica.ledgers_owned())
            },
            std::time::Duration::from_secs(5),
        )
        .unwrap_or_default();
    (listen, peers, lag, owned)
}
