//! The admin socket server: a plain std unix listener on its own thread,
//! one thread per connection (at most [`MAX_CONNECTIONS`] at once), each
//! line read with a size limit and a timeout. Besides the socket's mode
//! (0600), every connection's peer credentials are checked (Linux): only
//! the node's own user and root are served.

use super::protocol::{ErrorKind, Request, Response};
use super::{handle, MAX_LINE};
use crate::node::Node;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use zeroize::Zeroize;

/// Connections served at once; more are answered "busy" and closed.
pub const MAX_CONNECTIONS: usize = 8;
/// A client silent for this long is disconnected.
const IDLE: Duration = Duration::from_secs(30);

/// A running admin server. Stop it with [`AdminServer::stop`] (or by
/// dropping it), which also removes the socket file.
pub struct AdminServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `path` (replacing a stale socket file, refusing anything else),
    /// makes it mode 0600 and serves `node` on a background thread.
    pub fn start(path: &Path, node: Arc<Node>) -> io::Result<AdminServer> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket_like() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{}: another node answers on this socket", path.display()),
                    ));
                }
                fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists and is not a socket", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("admin".into())
                .spawn(move || accept_loop(listener, node, stop))?
        };
        Ok(AdminServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, waits for the accept thread, removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept.
            let _ = UnixStream::connect(&self.path);
            let _ = thread.join();
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

trait SocketLike {
    fn is_socket_like(&self) -> bool;
}

impl SocketLike for fs::FileType {
    fn is_socket_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_socket()
    }
}

fn accept_loop(listener: UnixListener, node: Arc<Node>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("admin socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = write_response(
                &mut stream,
                &Response::Error {
                    kind: ErrorKind::Internal,
                    message: "busy: too many admin connections".into(),
                },
            );
            continue;
        }
        let (node, active) = (node.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("admin-conn".into())
            .spawn(move || {
                if let Err(e) = serve_connection(stream, &node) {
                    tracing::debug!("admin connection ended: {e}");
                }
                active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            tracing::warn!("admin socket: cannot spawn a thread: {e}");
        }
    }
}

/// The user id of the process at the other end of `stream`.
#[cfg(target_os = "linux")]
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // the descriptor is open for the lifetime of `stream`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Only our own user (and root) may give admin commands.
fn peer_allowed(stream: &UnixStream) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        let uid = peer_uid(stream)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let ours = unsafe { libc::geteuid() };
        Ok(uid == ours || uid == 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        Ok(true)
    }
}

fn serve_connection(stream: UnixStream, node: &Node) -> io::Result<()> {
    if !peer_allowed(&stream)? {
        tracing::warn!("admin socket: refused a connection from another user");
        return Ok(());
    }
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.zeroize();
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            let too_long = n as u64 > MAX_LINE;
            let message = if too_long {
                format!("request longer than {MAX_LINE} bytes")
            } else {
                "request not terminated by a newline".into()
            };
            write_response(
                &mut writer,
                &Response::Error {
                    kind: ErrorKind::BadRequest,
                    message,
                },
            )?;
            line.zeroize();
            return Ok(());
        }
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(request) => handle(node, request, true),
            Err(e) => Response::Error {
                kind: ErrorKind::BadRequest,
                message: format!("bad request: {e}"),
            },
        };
        write_response(&mut writer, &response)?;
    }
}

fn write_response(w: &mut impl Write, response: &Response) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    w.write_all(&bytes)?;
    w.flush()
}
