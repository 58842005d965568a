//! The IMAP listener: one tokio task per connection, optional implicit TLS
//! and STARTTLS with rustls.

use super::backend::Backend;
use super::conn::Conn;
use super::session::Session;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// Largest literal, i.e. message (APPENDLIMIT).
    pub max_literal: u32,
    /// Longest command line (without literals).
    pub max_line: usize,
    /// Inactivity before the server logs a client out (RFC 3501: ≥ 30 min).
    pub idle_timeout: Duration,
    /// Inactivity allowed during IDLE.
    pub idle_command_timeout: Duration,
    /// Allow LOGIN / AUTHENTICATE PLAIN without TLS on a non-loopback
    /// listener.
    pub allow_plaintext_auth: bool,
    /// Treat a loopback listener as private (plaintext authentication
    /// allowed there); tests turn it off to see LOGINDISABLED.
    pub loopback_is_secure: bool,
    /// Delay before answering a failed authentication.
    pub auth_failure_delay: Duration,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            max_literal: 64 * 1024 * 1024,
            max_line: 64 * 1024,
            idle_timeout: Duration::from_secs(30 * 60),
            idle_command_timeout: Duration::from_secs(60 * 60),
            allow_plaintext_auth: false,
            loopback_is_secure: true,
            auth_failure_delay: Duration::from_millis(500),
        }
    }
}

/// What every session of a server shares.
pub(crate) struct Shared<B: Backend> {
    pub(crate) backend: Arc<B>,
    pub(crate) config: ImapConfig,
    pub(crate) tls: Option<TlsAcceptor>,
}

/// An IMAP server over a backend.
pub struct ImapServer<B: Backend> {
    shared: Arc<Shared<B>>,
}

impl<B: Backend> Clone for ImapServer<B> {
    fn clone(&self) -> Self {
        ImapServer {
            shared: self.shared.clone(),
        }
    }
}

impl<B: Backend> ImapServer<B> {
    /// A server; `tls` enables STARTTLS (and is needed for implicit TLS).
    pub fn new(backend: Arc<B>, config: ImapConfig, tls: Option<TlsAcceptor>) -> Self {
        ImapServer {
            shared: Arc::new(Shared {
                backend,
                config,
                tls,
            }),
        }
    }

    /// Accepts connections forever (abort the task to stop listening;
    /// sessions already running go on until their clients leave).
    /// `implicit_tls`: the TLS handshake starts at once (port 993 style).
    pub async fn serve(self, listener: TcpListener, implicit_tls: bool) -> io::Result<()> {
        let local = listener.local_addr()?;
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    // e.g. too many open files: wait instead of spinning.
                    tracing::warn!("imap accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let conn = if implicit_tls {
                    let Some(acceptor) = shared.tls.clone() else {
                        return;
                    };
                    match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(s)) => Conn::Tls(Box::new(s)),
                        _ => return,
                    }
                } else {
                    Conn::Plain(tcp)
                };
                Session::new(shared, conn, peer, local).run().await;
            });
        }
    }

    /// Spawns [`ImapServer::serve`] on the current runtime.
    pub fn spawn(self, listener: TcpListener, implicit_tls: bool) -> JoinHandle<io::Result<()>> {
        tokio::spawn(self.serve(listener, implicit_tls))
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        msg: String,
    },
    /// rustls refused the certificate or key.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// A TLS acceptor from PEM files (certificate chain, private key). Uses the
/// ring provider explicitly: with two crypto providers compiled in (libp2p's
/// QUIC brings another), `ServerConfig::builder()` would panic.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |p: &Path, e: &dyn std::fmt::Display| TlsError::File {
        path: p.display().to_string(),
        msg: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, &e))?;
    if certs.is_empty() {
        return Err(err(cert, &"no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, &e))?;
    tls_acceptor_from(certs, key)
}

/// A TLS acceptor from DER values (e.g. rcgen's self-signed certificate).
pub fn tls_acceptor_from(
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
