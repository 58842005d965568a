//! Runs admin commands against a [`Node`].

use super::protocol::{ErrorKind, Request, Response, StatusInfo, UserEntry};
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
                tracing::info!(user = %name, "password changed");
                Response::Done {
                    message: format!("password of {name} changed"),
                }
            }
            Err(e) => account_error(e),
        },
        Request::UserRemove { name } => match node.accounts.remove(&name) {
            Ok(id) => {
                node.unlocker.forget(&id);
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
            Ok(list) => Response::Status(StatusInfo {
                name: node.config.name.clone(),
                peer_id: node.peer_id.clone(),
                replica_id: node.replica.to_string(),
                running,
                users: list.len(),
                peers: Vec::new(),
            }),
            Err(e) => account_error(e),
        },
    }
}
