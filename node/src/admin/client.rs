//! The CLI's side of the admin socket.

use super::protocol::{Request, Response};
use super::MAX_LINE;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why talking to the node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("admin socket {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The node's answer is not a response.
    #[error("admin socket {}: unreadable answer: {reason}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A connection to a running node.
pub struct AdminClient {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Connects to the node on `path`. `Ok(None)` when no node listens there
/// (no socket file, or a stale one); an error for anything else.
pub fn connect(path: &Path, timeout: Duration) -> Result<Option<AdminClient>, ClientError> {
    let io_err = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(io_err(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let writer = stream.try_clone().map_err(io_err)?;
    Ok(Some(AdminClient {
        path: path.to_path_buf(),
        reader: BufReader::new(stream),
        writer,
    }))
}

impl AdminClient {
    /// Sends one request and reads its response.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let io_err = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = zeroize::Zeroizing::new(serde_json::to_vec(request).map_err(|e| {
            ClientError::Protocol {
                path: self.path.clone(),
                reason: e.to_string(),
            }
        })?);
        line.push(b'\n');
        self.writer.write_all(&line).map_err(io_err)?;
        self.writer.flush().map_err(io_err)?;
        let mut answer = Vec::new();
        (&mut self.reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut answer)
            .map_err(io_err)?;
        serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol {
            path: self.path.clone(),
            reason: if answer.is_empty() {
                "connection closed".into()
            } else {
                e.to_string()
            },
        })
    }
}
