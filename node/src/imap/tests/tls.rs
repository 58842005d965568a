//! STARTTLS and implicit TLS with a self-signed certificate (from PEM files,
//! as an operator configures it).

use super::*;
use crate::imap::server::tls_acceptor;
use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
use tokio_rustls::TlsConnector;

struct Pki {
    _dir: tempfile::TempDir,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: TlsConnector,
}

fn pki() -> Pki {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let acceptor = tls_acceptor(&cert, &key).unwrap();
    assert!(
        tls_acceptor(&key, &key).is_err(),
        "a key is not a certificate"
    );
    let mut roots = RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Pki {
        _dir: dir,
        acceptor,
        connector: TlsConnector::from(Arc::new(cfg)),
    }
}

async fn serve(pki: &Pki, implicit: bool) -> SocketAddr {
    let backend = MemoryBackend::new();
    backend.add_user("alice", "pw");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ImapConfig {
        loopback_is_secure: false,
        ..test_config()
    };
    ImapServer::new(Arc::new(backend), config, Some(pki.acceptor.clone()))
        .spawn(listener, implicit);
    addr
}

#[tokio::test]
async fn starttls_then_login() {
    let pki = pki();
    let addr = serve(&pki, false).await;
    let mut c = Client::connect(addr).await;
    assert!(c.greeting.contains("STARTTLS") && c.greeting.contains("LOGINDISABLED"));
    assert!(c.status("LOGIN alice pw").await.contains("NO"));
    // A command pipelined after STARTTLS is not executed.
    c.send(b"s STARTTLS\r\nx NOOP\r\n").await;
    assert!(c.line().await.starts_with("s OK"));
    let tcp = c.into_inner();
    let tls = pki
        .connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut c = Client {
        io: BufReader::new(tls),
        n: 100,
        greeting: String::new(),
    };
    let caps = c.ok("CAPABILITY").await;
    assert!(
        caps[0].contains("AUTH=PLAIN") && !caps[0].contains("STARTTLS"),
        "{caps:?}"
    );
    assert!(c.status("STARTTLS").await.contains("BAD"));
    c.ok("LOGIN alice pw").await;
    c.ok("SELECT INBOX").await;
}

#[tokio::test]
async fn implicit_tls() {
    let pki = pki();
    let addr = serve(&pki, true).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = pki
        .connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut c = Client::over(tls).await;
    assert!(c.greeting.contains("AUTH=PLAIN") && !c.greeting.contains("STARTTLS"));
    c.ok("LOGIN alice pw").await;
}
