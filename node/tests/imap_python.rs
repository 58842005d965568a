//! Python's imaplib against the IMAP server with the in-memory backend:
//! `tests/imap_client.py` exercises every command over a real socket.

use aerogramme::imap::{ImapConfig, ImapServer, MemoryBackend};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_python_imaplib_client() {
    let backend = MemoryBackend::new();
    backend.add_user("alice", "pw");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = ImapConfig {
        auth_failure_delay: Duration::ZERO,
        ..Default::default()
    };
    ImapServer::new(Arc::new(backend), config, None).spawn(listener, false);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/imap_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .output(),
    )
    .await
    .expect("imap_client.py took more than 60 s")
    .expect("python3 must be installed to run imap_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "imap_client.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
}
