//! End-to-end tests of the IMAP server with the in-memory backend, over real
//! loopback TCP connections.

mod bad_input;
mod commands;
mod concurrent;
mod messages;
mod tls;

use super::memory::MemoryBackend;
use super::server::{ImapConfig, ImapServer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A server with user `alice` / `pw` on 127.0.0.1.
pub(crate) async fn start(config: ImapConfig) -> (SocketAddr, MemoryBackend) {
    let backend = MemoryBackend::new();
    backend.add_user("alice", "pw");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    ImapServer::new(Arc::new(backend.clone()), config, None).spawn(listener, false);
    (addr, backend)
}

pub(crate) fn test_config() -> ImapConfig {
    ImapConfig {
        auth_failure_delay: Duration::ZERO,
        ..Default::default()
    }
}

/// A line-oriented test client that collects literals into the line.
pub(crate) struct Client<S> {
    io: BufReader<S>,
    n: u32,
    pub greeting: String,
}

const T: Duration = Duration::from_secs(10);

impl Client<TcpStream> {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        Client::over(s).await
    }

    /// Connected and logged in.
    pub(crate) async fn login(addr: SocketAddr) -> Self {
        let mut c = Client::connect(addr).await;
        c.ok("LOGIN alice pw").await;
        c
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Client<S> {
    pub(crate) async fn over(s: S) -> Self {
        let mut c = Client {
            io: BufReader::new(s),
            n: 0,
            greeting: String::new(),
        };
        c.greeting = c.line().await;
        c
    }

    pub(crate) fn into_inner(self) -> S {
        self.io.into_inner()
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// One response line with its literals inlined (lossy UTF-8).
    pub(crate) async fn line(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let mut l = Vec::new();
            let n = tokio::time::timeout(T, self.io.read_until(b'\n', &mut l))
                .await
                .expect("timeout waiting for the server")
                .unwrap();
            assert!(
                n > 0,
                "connection closed; got so far: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&l);
            let lit = l
                .strip_suffix(b"}\r\n")
                .and_then(|x| x.iter().rposition(|&b| b == b'{').map(|p| &x[p + 1..]))
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<usize>().ok());
            match lit {
                Some(len) => {
                    let mut buf = vec![0; len];
                    tokio::time::timeout(T, self.io.read_exact(&mut buf))
                        .await
                        .unwrap()
                        .unwrap();
                    out.extend_from_slice(&buf);
                }
                None => return String::from_utf8_lossy(&out).into_owned(),
            }
        }
    }

    /// Sends `tag command` and returns every line up to the tagged one.
    pub(crate) async fn cmd(&mut self, cmd: &str) -> Vec<String> {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.send(format!("{tag} {cmd}\r\n").as_bytes()).await;
        self.until(&tag).await
    }

    /// Reads lines until the one tagged `tag`.
    pub(crate) async fn until(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await;
            let done = l.starts_with(&format!("{tag} "));
            lines.push(l);
            if done {
                return lines;
            }
        }
    }

    /// Runs a command that must succeed; returns its untagged lines.
    pub(crate) async fn ok(&mut self, cmd: &str) -> Vec<String> {
        let mut lines = self.cmd(cmd).await;
        let last = lines.pop().unwrap();
        assert!(last.contains(" OK"), "{cmd} -> {last} (after {lines:?})");
        lines
    }

    /// Runs a command and returns its tagged line.
    pub(crate) async fn status(&mut self, cmd: &str) -> String {
        self.cmd(cmd).await.pop().unwrap()
    }

    /// APPEND with a synchronizing literal.
    pub(crate) async fn append(&mut self, mailbox: &str, flags: &str, msg: &[u8]) -> String {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.send(format!("{tag} APPEND {mailbox} ({flags}) {{{}}}\r\n", msg.len()).as_bytes())
            .await;
        let cont = self.line().await;
        assert!(cont.starts_with('+'), "{cont}");
        self.send(msg).await;
        self.send(b"\r\n").await;
        self.until(&tag).await.pop().unwrap()
    }
}

/// Whether some line contains `needle`.
pub(crate) fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}
