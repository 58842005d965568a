//! Listeners: TCP and unix-domain sockets, one task per session, a
//! connection limit and a graceful shutdown.

use super::backend::Backend;
use super::session::run_session;
use super::LmtpConfig;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The LMTP server: a configuration and a backend, served on any number
/// of listeners.
pub struct LmtpServer<B: Backend> {
    cfg: Arc<LmtpConfig>,
    backend: Arc<B>,
}

impl<B: Backend> Clone for LmtpServer<B> {
    fn clone(&self) -> Self {
        LmtpServer {
            cfg: self.cfg.clone(),
            backend: self.backend.clone(),
        }
    }
}

/// Something that accepts streams.
trait Listen {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_stream(&self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
}

impl Listen for TcpListener {
    type Stream = TcpStream;
    async fn accept_stream(&self) -> io::Result<(TcpStream, String)> {
        let (s, peer) = self.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((s, peer.to_string()))
    }
}

impl Listen for UnixListener {
    type Stream = UnixStream;
    async fn accept_stream(&self) -> io::Result<(UnixStream, String)> {
        let (s, _) = self.accept().await?;
        Ok((s, "unix".to_string()))
    }
}

impl<B: Backend> LmtpServer<B> {
    /// A server for this configuration and backend.
    pub fn new(cfg: LmtpConfig, backend: Arc<B>) -> Self {
        LmtpServer {
            cfg: Arc::new(cfg),
            backend,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LmtpConfig {
        &self.cfg
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Serves a TCP listener until `shutdown` completes, then tells every
    /// session to end (`421` when it next waits for a command; transfers
    /// and deliveries in progress finish) and returns once all have ended.
    pub async fn serve_tcp(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        self.serve(listener, shutdown).await
    }

    /// Same as [`Self::serve_tcp`] on a unix-domain socket.
    pub async fn serve_unix(
        &self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        self.serve(listener, shutdown).await
    }

    /// Runs one session on an already connected stream (no connection
    /// limit, no shutdown signal). Used by tests over in-memory streams.
    pub async fn serve_stream<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        run_session(
            stream,
            self.backend.clone(),
            self.cfg.clone(),
            None,
            "stream".into(),
        )
        .await
    }

    async fn serve<L: Listen>(
        &self,
        listener: L,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(self.cfg.max_connections.max(1)));
        let mut sessions = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                r = listener.accept_stream() => r,
            };
            while sessions.try_join_next().is_some() {}
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off.
                    tracing::warn!(error = %e, "LMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (backend, cfg, rx) =
                        (self.backend.clone(), self.cfg.clone(), stop_rx.clone());
                    sessions.spawn(async move {
                        run_session(stream, backend, cfg, Some(rx), peer).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    tracing::warn!(%peer, "LMTP connection refused: too many sessions");
                    let host = self.cfg.hostname.clone();
                    sessions.spawn(refuse(stream, host));
                }
            }
        }
        let _ = stop_tx.send(true);
        while sessions.join_next().await.is_some() {}
        Ok(())
    }
}

async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, host: String) {
    let msg = format!("421 4.3.2 {host} Too many connections, try again later\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(msg.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Binds a unix-domain socket at `path`, replacing a stale socket file
/// left by an earlier run (any other kind of file is an error).
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    UnixListener::bind(path)
}
