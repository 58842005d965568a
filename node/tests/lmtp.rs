//! LMTP server tests: sessions over in-memory streams, TCP and unix
//! sockets, Python's smtplib.LMTP and (when installed) swaks.

mod lmtp_support;

use aerogramme::lmtp::server::bind_unix;
use aerogramme::lmtp::{AddressMap, LmtpConfig, LmtpServer, MemoryBackend};
use lmtp_support::Client;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const MAX: usize = 64 * 1024;

fn backend() -> Arc<MemoryBackend> {
    let b = MemoryBackend::new(AddressMap::new(vec!["example.org".into()]));
    b.add_user("alice");
    b.add_user("bob");
    b.set_quota("carol", 10);
    Arc::new(b)
}

fn cfg() -> LmtpConfig {
    LmtpConfig {
        hostname: "mx.test".into(),
        max_message_size: MAX,
        idle_timeout: Duration::from_secs(20),
        ..LmtpConfig::default()
    }
}

fn duplex_with(b: Arc<MemoryBackend>, cfg: LmtpConfig) -> Client<DuplexStream> {
    let server = LmtpServer::new(cfg, b);
    let (a, s) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { server.serve_stream(s).await });
    Client::new(a)
}

async fn session(b: &Arc<MemoryBackend>) -> Client<DuplexStream> {
    let mut c = duplex_with(b.clone(), cfg());
    c.hello().await;
    c
}

/// What the backend must hold for one recipient.
fn stored(from: &str, to: &str, msg: &[u8]) -> Vec<u8> {
    let mut v = format!("Return-Path: <{from}>\r\nDelivered-To: {to}\r\n").into_bytes();
    v.extend_from_slice(msg);
    v
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn tcp_server(b: Arc<MemoryBackend>, cfg: LmtpConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = LmtpServer::new(cfg, b);
    let task = tokio::spawn(async move {
        server
            .serve_tcp(listener, async {
                let _ = rx.await;
            })
            .await
    });
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

const MSG: &[u8] = b"From: s@remote.test\r\nSubject: hi\r\nMessage-ID: <1@remote.test>\r\n\r\nline\r\n.\r\n..\r\n.x\r\nend\r\n";

#[tokio::test]
async fn lmtp_greeting_and_lhlo() {
    let b = backend();
    let mut c = duplex_with(b, cfg());
    let g = c.reply().await;
    assert_eq!(g.lines, ["220 mx.test LMTP Aerogramme ready"]);
    let r = c.cmd("LHLO client.test").await;
    assert_eq!(
        r.lines,
        [
            "250-mx.test",
            "250-PIPELINING",
            "250-ENHANCEDSTATUSCODES",
            &format!("250-SIZE {MAX}"),
            "250-8BITMIME",
            "250 CHUNKING"
        ]
    );
    assert_eq!(c.cmd("QUIT").await.cs(), (221, "2.0.0"));
    assert!(c.try_reply().await.is_none(), "closed after QUIT");
}

#[tokio::test]
async fn lmtp_helo_ehlo_refused_then_lhlo() {
    let b = backend();
    let mut c = duplex_with(b, cfg());
    c.reply().await;
    assert_eq!(c.cmd("HELO client.test").await.cs(), (500, "5.5.1"));
    assert_eq!(c.cmd("EHLO client.test").await.cs(), (500, "5.5.1"));
    assert_eq!(c.cmd("MAIL FROM:<a@b.c>").await.cs(), (503, "5.5.1"));
    assert_eq!(c.cmd("LHLO client.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@b.c>").await.cs(), (250, "2.1.0"));
}

#[tokio::test]
async fn lmtp_transaction_per_recipient_replies() {
    let b = backend();
    let mut c = session(&b).await;
    let (rr, per) = c
        .transaction(
            "s@remote.test",
            &[
                "alice@example.org",
                "nobody@example.org",
                "carol@example.org",
                "bob+lists@example.org",
                "x@elsewhere.test",
            ],
            MSG,
        )
        .await;
    let codes: Vec<_> = rr.iter().map(|r| r.cs()).collect();
    assert_eq!(
        codes,
        [
            (250, "2.1.5"),
            (550, "5.1.1"),
            (250, "2.1.5"),
            (250, "2.1.5"),
            (550, "5.1.2")
        ]
    );
    // carol's quota (10 octets) is hit at delivery: 552 5.2.2, in order.
    let codes: Vec<_> = per.iter().map(|r| r.cs()).collect();
    assert_eq!(codes, [(250, "2.0.0"), (552, "5.2.2"), (250, "2.0.0")]);
    assert!(per[0].lines[0].contains("<alice@example.org>"));
    assert!(per[2].lines[0].contains("<bob+lists@example.org>"));
    let d = b.delivered();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].user, "alice");
    assert_eq!(d[0].mailbox, None);
    assert_eq!(d[0].from, "s@remote.test");
    assert_eq!(
        d[0].message,
        stored("s@remote.test", "alice@example.org", MSG)
    );
    assert_eq!(d[1].user, "bob");
    assert_eq!(d[1].mailbox.as_deref(), Some("lists"));
    assert_eq!(
        d[1].message,
        stored("s@remote.test", "bob+lists@example.org", MSG)
    );
    // The session goes on with a new transaction.
    let (_, per) = c.transaction("", &["alice@example.org"], b"x\r\n").await;
    assert_eq!(per[0].code, 250);
    assert_eq!(
        b.delivered()[2].message,
        stored("", "alice@example.org", b"x\r\n")
    );
}

#[tokio::test]
async fn lmtp_quota_refused_at_rcpt_with_declared_size() {
    let b = backend();
    let mut c = session(&b).await;
    assert_eq!(c.cmd("MAIL FROM:<s@r.test> SIZE=100").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<carol@example.org>").await.cs(),
        (552, "5.2.2")
    );
}

#[tokio::test]
async fn lmtp_bad_sequence() {
    let b = backend();
    let mut c = session(&b).await;
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.org>").await.cs(),
        (503, "5.5.1")
    );
    assert_eq!(c.cmd("DATA").await.cs(), (503, "5.5.1"));
    assert_eq!(c.cmd("MAIL FROM:<s@r.test>").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<s@r.test>").await.cs(), (503, "5.5.1"));
    assert_eq!(c.cmd("DATA").await.cs(), (503, "5.5.1"), "no recipient");
    assert_eq!(c.cmd("RCPT TO:<nobody@example.org>").await.code, 550);
    assert_eq!(
        c.cmd("DATA").await.cs(),
        (503, "5.5.1"),
        "no valid recipient"
    );
    assert_eq!(c.cmd("RCPT TO:<alice@example.org>").await.code, 250);
    assert_eq!(c.cmd("RSET").await.cs(), (250, "2.0.0"));
    assert_eq!(c.cmd("DATA").await.cs(), (503, "5.5.1"), "RSET cleared it");
    assert_eq!(c.cmd("NOOP").await.cs(), (250, "2.0.0"));
    assert_eq!(c.cmd("VRFY alice").await.cs(), (252, "2.1.5"));
    assert_eq!(c.cmd("VRFY nobody").await.cs(), (252, "2.1.5"));
    assert_eq!(c.cmd("EXPN list").await.cs(), (502, "5.5.1"));
    assert_eq!(c.cmd("HELP").await.code, 214);
    assert_eq!(b.count(), 0);
}

#[tokio::test]
async fn lmtp_pipelining_replies_in_order() {
    let b = backend();
    let mut c = duplex_with(b.clone(), cfg());
    c.send(
        b"LHLO x\r\nNOOP\r\nMAIL FROM:<s@r.test> BODY=8BITMIME\r\nRCPT TO:<alice@example.org>\r\n\
          RCPT TO:<nobody@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n",
    )
    .await;
    let r = c.replies(8).await;
    let codes: Vec<u16> = r.iter().map(|r| r.code).collect();
    assert_eq!(codes, [220, 250, 250, 250, 250, 550, 250, 354]);
    assert_eq!(r[1].lines.len(), 6, "LHLO is multi-line");
    // Data, terminator and the next commands in one write.
    c.send(b"one\r\n.\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        .await;
    let r = c.replies(5).await;
    let codes: Vec<u16> = r.iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 250, 250, 250, 354]);
    c.send(b"two\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 221);
    let d = b.delivered();
    assert_eq!(d.len(), 3);
    assert!(d[2]
        .message
        .ends_with(b"Delivered-To: bob@example.org\r\ntwo\r\n"));
}

#[tokio::test]
async fn lmtp_data_terminator_split_across_writes() {
    let b = backend();
    let mut c = session(&b).await;
    c.send(b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        .await;
    assert_eq!(
        c.replies(3)
            .await
            .iter()
            .map(|r| r.code)
            .collect::<Vec<_>>(),
        [250, 250, 354]
    );
    for piece in [
        &b"Subject: s\r\n\r\nbody\r"[..],
        b"\n.",
        b".x\r\n",
        b"\r",
        b"\n",
        b".",
        b"\r",
        b"\n",
    ] {
        c.send(piece).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(
        b.delivered()[0].message,
        stored(
            "s@r.test",
            "alice@example.org",
            b"Subject: s\r\n\r\nbody\r\n.x\r\n\r\n"
        )
    );
}

#[tokio::test]
async fn lmtp_bare_lf_normalised() {
    let b = backend();
    let mut c = session(&b).await;
    c.send(b"MAIL FROM:<s@r.test>\nRCPT TO:<alice@example.org>\nDATA\n")
        .await;
    c.replies(3).await;
    c.send(b"Subject: lf\n\n..dot\nbare\rcr\n.\n").await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(
        b.delivered()[0].message,
        stored(
            "s@r.test",
            "alice@example.org",
            b"Subject: lf\r\n\r\n.dot\r\nbare\rcr\r\n"
        )
    );
}

#[tokio::test]
async fn lmtp_duplicate_recipient_delivered_once() {
    let b = backend();
    let mut c = session(&b).await;
    let (rr, per) = c
        .transaction("s@r.test", &["alice@example.org", "alice@example.org"], MSG)
        .await;
    assert!(rr.iter().all(|r| r.code == 250));
    assert_eq!(per.len(), 2);
    assert!(per.iter().all(|r| r.code == 250));
    assert_eq!(b.count(), 1);
}

#[tokio::test]
async fn lmtp_durability_failure_is_451_and_not_stored() {
    let b = backend();
    let mut c = session(&b).await;
    b.fail_next_deliveries(1);
    let (_, per) = c
        .transaction("s@r.test", &["alice@example.org", "bob@example.org"], MSG)
        .await;
    assert_eq!(per[0].cs(), (451, "4.3.0"));
    assert_eq!(per[1].cs(), (250, "2.0.0"));
    let d = b.delivered();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].user, "bob");
}

#[tokio::test]
async fn lmtp_size_limits() {
    let b = backend();
    let mut c = session(&b).await;
    let r = c
        .cmd(&format!("MAIL FROM:<s@r.test> SIZE={}", MAX + 1))
        .await;
    assert_eq!(r.cs(), (552, "5.3.4"));
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<s@r.test> SIZE={MAX}"))
            .await
            .code,
        250
    );
    assert_eq!(c.cmd("RSET").await.code, 250);
    // Exactly the limit is accepted, one more octet is not.
    let exact = vec![b'a'; MAX - 2]
        .into_iter()
        .chain(*b"\r\n")
        .collect::<Vec<u8>>();
    let (_, per) = c
        .transaction("s@r.test", &["alice@example.org"], &exact)
        .await;
    assert_eq!(per[0].code, 250);
    let mut over = exact.clone();
    over.insert(0, b'b');
    let (_, per) = c
        .transaction("s@r.test", &["alice@example.org", "bob@example.org"], &over)
        .await;
    assert_eq!(
        per.iter().map(|r| r.cs()).collect::<Vec<_>>(),
        [(552, "5.3.4"), (552, "5.3.4")]
    );
    assert_eq!(c.cmd("NOOP").await.code, 250);
    assert_eq!(b.count(), 1);
}

#[tokio::test]
async fn lmtp_too_many_recipients() {
    let b = backend();
    for i in 0..101 {
        b.add_user(&format!("u{i}"));
    }
    let mut c = session(&b).await;
    assert_eq!(c.cmd("MAIL FROM:<s@r.test>").await.code, 250);
    let mut cmds = String::new();
    for i in 0..101 {
        cmds.push_str(&format!("RCPT TO:<u{i}@example.org>\r\n"));
    }
    c.send(cmds.as_bytes()).await;
    let r = c.replies(101).await;
    assert!(r[..100].iter().all(|r| r.code == 250));
    assert_eq!(r[100].cs(), (452, "4.5.3"));
    c.send(b"DATA\r\n").await;
    assert_eq!(c.reply().await.code, 354);
    c.send(b"hi\r\n.\r\n").await;
    assert_eq!(
        c.replies(100)
            .await
            .iter()
            .filter(|r| r.code == 250)
            .count(),
        100
    );
    assert_eq!(b.count(), 100);
}

#[tokio::test]
async fn lmtp_bdat() {
    let b = backend();
    let mut c = session(&b).await;
    // Binary-safe: CRLF.CRLF, bare LF and NUL inside chunks are data.
    let part1 = b"Subject: chunks\r\n\r\nfirst\r\n.\r\n";
    let part2 = b"second\nthird\0\r\n";
    let mut cmds =
        b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
            .to_vec();
    cmds.extend_from_slice(format!("BDAT {}\r\n", part1.len()).as_bytes());
    cmds.extend_from_slice(part1);
    cmds.extend_from_slice(format!("BDAT {} LAST\r\n", part2.len()).as_bytes());
    cmds.extend_from_slice(part2);
    cmds.extend_from_slice(b"NOOP\r\n");
    c.send(&cmds).await;
    let r = c.replies(7).await;
    let codes: Vec<_> = r.iter().map(|r| r.cs()).collect();
    assert_eq!(
        codes,
        [
            (250, "2.1.0"),
            (250, "2.1.5"),
            (250, "2.1.5"),
            (250, "2.0.0"),
            (250, "2.0.0"),
            (250, "2.0.0"),
            (250, "2.0.0")
        ]
    );
    let mut whole = part1.to_vec();
    whole.extend_from_slice(part2);
    let d = b.delivered();
    assert_eq!(d.len(), 2);
    assert_eq!(
        d[0].message,
        stored("s@r.test", "alice@example.org", &whole)
    );
    assert_eq!(d[1].message, stored("s@r.test", "bob@example.org", &whole));

    // BDAT 0 LAST after chunks; DATA not allowed once BDAT started.
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nBDAT 3\r\nabcDATA\r\nBDAT 0 LAST\r\n")
        .await;
    let codes: Vec<_> = c.replies(5).await.iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 250, 250, 503, 250]);
    assert_eq!(
        b.delivered()[2].message,
        stored("", "alice@example.org", b"abc")
    );
}

#[tokio::test]
async fn lmtp_bdat_refused_chunks_are_consumed() {
    let b = backend();
    let mut c = session(&b).await;
    // Without a transaction: the chunk is read and thrown away.
    c.send(b"BDAT 12 LAST\r\nNOOP\r\nNOOP\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await.cs(), (503, "5.5.1"));
    assert_eq!(c.reply().await.code, 250, "one NOOP after the 12 octets");
    // Too large: 552 on the chunk, later chunks discarded, one 552 per
    // recipient for LAST.
    let big = MAX + 10;
    let mut cmds = b"MAIL FROM:<s@r.test>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nBDAT 5\r\nhello".to_vec();
    cmds.extend_from_slice(format!("BDAT {big}\r\n").as_bytes());
    cmds.extend(std::iter::repeat_n(b'z', big));
    cmds.extend_from_slice(b"BDAT 3 LAST\r\nend");
    c.send(&cmds).await;
    let r = c.replies(7).await;
    let codes: Vec<_> = r.iter().map(|r| r.cs()).collect();
    assert_eq!(
        codes,
        [
            (250, "2.1.0"),
            (250, "2.1.5"),
            (250, "2.1.5"),
            (250, "2.0.0"),
            (552, "5.3.4"),
            (552, "5.3.4"),
            (552, "5.3.4")
        ]
    );
    assert_eq!(c.cmd("BDAT x").await.cs(), (501, "5.5.4"));
    assert_eq!(c.cmd("NOOP").await.code, 250);
    assert_eq!(b.count(), 0);
}

#[tokio::test]
async fn lmtp_long_lines_and_garbage_keep_session_usable() {
    let b = backend();
    let mut c = session(&b).await;
    // A command line of exactly 1000 octets (CRLF included) is fine.
    let ok = format!("NOOP {}\r\n", "x".repeat(993));
    assert_eq!(ok.len(), 1000);
    c.send(ok.as_bytes()).await;
    assert_eq!(c.reply().await.code, 250);
    let long = format!("NOOP {}\r\n", "x".repeat(994));
    c.send(long.as_bytes()).await;
    assert_eq!(c.reply().await.cs(), (500, "5.5.2"));
    // A 1 MB line, sent in pieces.
    let mb = vec![b'A'; 1 << 20];
    for chunk in mb.chunks(64 * 1024) {
        c.send(chunk).await;
    }
    c.send(b"\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await.cs(), (500, "5.5.2"));
    assert_eq!(c.reply().await.code, 250);
    // Garbage: every line gets one reply, none is fatal.
    let garbage: &[&[u8]] = &[
        b"\x00\x01\x02",
        b"\xff\xfe\xfd garbage",
        b"MAIL",
        b"MAIL FROM:",
        b"MAIL FROM:<<<>>>",
        b"RCPT TO:<@@@>",
        b"BDAT",
        b"BDAT -5",
        b"DATA DATA",
        b"LHLO",
        b"\t",
        b"",
        b"QUIT now",
        "RCPT TO:<ü@x>".as_bytes(),
    ];
    for g in garbage {
        let mut l = g.to_vec();
        l.extend_from_slice(b"\r\n");
        c.send(&l).await;
        let r = c.reply().await;
        assert!(
            (500..=555).contains(&r.code),
            "{:?} -> {:?}",
            String::from_utf8_lossy(g),
            r.lines
        );
    }
    let (_, per) = c.transaction("s@r.test", &["alice@example.org"], MSG).await;
    assert_eq!(per[0].code, 250);
}

#[tokio::test]
async fn lmtp_random_input_never_kills_the_server() {
    let b = backend();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..20 {
        let mut c = session(&b).await;
        let mut bytes = Vec::new();
        for _ in 0..1000 {
            let r = next();
            let tokens: &[&[u8]] = &[
                b"\r\n",
                b"\n",
                b"MAIL FROM:<a@b> ",
                b"RCPT TO:<alice@example.org>",
                b"DATA",
                b".",
                b"BDAT 3",
                b" LAST",
                b"LHLO x",
                b"RSET",
                b"\x00",
                b"\xff",
                b"SIZE=9",
            ];
            if r % 3 == 0 {
                bytes.push((r >> 8) as u8);
            } else {
                bytes.extend_from_slice(tokens[(r >> 16) as usize % tokens.len()]);
            }
        }
        c.send(&bytes).await;
        // End the input: every reply must be well-formed and the session
        // must end (no hang, no panic), whatever state the bytes left.
        c.finish().await;
        let drain = async {
            let mut n = 0;
            while let Some(r) = c.try_reply().await {
                assert!((200..=555).contains(&r.code), "{:?}", r.lines);
                n += 1;
            }
            n
        };
        let n = tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .unwrap_or_else(|_| panic!("round {round}: session stuck"));
        assert!(n > 0);
    }
    // The server is fine.
    let mut c = session(&b).await;
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

#[tokio::test]
async fn lmtp_idle_timeout() {
    let b = backend();
    let cfg = LmtpConfig {
        idle_timeout: Duration::from_millis(200),
        ..cfg()
    };
    let mut c = duplex_with(b, cfg);
    c.reply().await;
    let r = tokio::time::timeout(Duration::from_secs(5), c.reply())
        .await
        .unwrap();
    assert_eq!(r.cs(), (421, "4.4.2"));
    assert!(c.try_reply().await.is_none());
}

#[tokio::test]
async fn lmtp_tcp_shutdown_and_connection_limit() {
    let b = backend();
    let cfg = LmtpConfig {
        max_connections: 1,
        ..cfg()
    };
    let srv = tcp_server(b, cfg).await;
    let mut c1 = Client::new(TcpStream::connect(srv.addr).await.unwrap());
    c1.hello().await;
    let mut c2 = Client::new(TcpStream::connect(srv.addr).await.unwrap());
    assert_eq!(c2.reply().await.cs(), (421, "4.3.2"));
    assert!(c2.try_reply().await.is_none());
    let stop = tokio::spawn(srv.stop());
    assert_eq!(c1.reply().await.cs(), (421, "4.3.2"));
    stop.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lmtp_thousand_messages_ten_connections() {
    let b = backend();
    let srv = tcp_server(b.clone(), cfg()).await;
    let mut tasks = Vec::new();
    for conn in 0..10 {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::new(TcpStream::connect(addr).await.unwrap());
            c.hello().await;
            for i in 0..100 {
                let msg = format!(
                    "Message-ID: <{conn}-{i}@load.test>\r\nSubject: load\r\n\r\n.{i}\r\nbody\r\n"
                );
                let (_, per) = c
                    .transaction("s@r.test", &["alice@example.org"], msg.as_bytes())
                    .await;
                assert_eq!(per.len(), 1);
                assert_eq!(per[0].code, 250);
            }
            assert_eq!(c.cmd("QUIT").await.code, 221);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let d = b.delivered();
    assert_eq!(d.len(), 1000);
    let ids: HashSet<Vec<u8>> = d
        .iter()
        .map(|m| {
            let s = String::from_utf8(m.message.clone()).unwrap();
            let id = s.lines().find(|l| l.starts_with("Message-ID")).unwrap();
            id.as_bytes().to_vec()
        })
        .collect();
    assert_eq!(ids.len(), 1000, "each message exactly once");
    srv.stop().await;
}

/// Runs `node/tests/lmtp_client.py` (smtplib.LMTP) against `target`.
async fn smtplib(target: &[&str]) -> Option<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lmtp_client.py");
    let out = match tokio::process::Command::new("python3")
        .arg(script)
        .args(target)
        .args(["--max-size", &MAX.to_string()])
        .output()
        .await
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED: python3 not available ({e})");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "lmtp_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("JSON from lmtp_client.py"))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn check_smtplib(v: &serde_json::Value, b: &MemoryBackend) {
    let codes = |k: &str| -> Vec<(u64, String)> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let text = r[1].as_str().unwrap();
                (
                    r[0].as_u64().unwrap(),
                    text.split(' ').next().unwrap().to_string(),
                )
            })
            .collect()
    };
    let pair = |c: u64, s: &str| (c, s.to_string());
    assert_eq!(v["lhlo"], 250);
    for f in [
        "8bitmime",
        "chunking",
        "enhancedstatuscodes",
        "pipelining",
        "size",
    ] {
        assert!(
            v["features"].as_array().unwrap().iter().any(|x| x == f),
            "feature {f}"
        );
    }
    assert_eq!(v["size"], MAX.to_string());
    assert_eq!(v["mail"][0], 250);
    assert_eq!(
        codes("rcpt"),
        [
            pair(250, "2.1.5"),
            pair(550, "5.1.1"),
            pair(552, "5.2.2"),
            pair(250, "2.1.5")
        ]
    );
    // One reply per accepted recipient, in RCPT order: alice, bob.
    assert_eq!(codes("data"), [pair(250, "2.0.0"), pair(250, "2.0.0")]);
    assert!(v["data"][1][1]
        .as_str()
        .unwrap()
        .contains("<bob+lists@example.org>"));
    assert_eq!(v["mail_too_big"][0], 552);
    assert!(v["mail_too_big"][1].as_str().unwrap().starts_with("5.3.4"));
    assert_eq!(
        codes("data_too_big"),
        [pair(552, "5.3.4"), pair(552, "5.3.4")]
    );
    assert_eq!(v["noop"][0], 250);
    assert_eq!(v["vrfy"][0], 252);
    assert_eq!(v["quit"][0], 221);
    let msg = hex(v["message_hex"].as_str().unwrap());
    let d = b.delivered();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].user, "alice");
    assert_eq!(
        d[0].message,
        stored("sender@remote.test", "alice@example.org", &msg)
    );
    assert_eq!(
        (d[1].user.as_str(), d[1].mailbox.as_deref()),
        ("bob", Some("lists"))
    );
    assert_eq!(
        d[1].message,
        stored("sender@remote.test", "bob+lists@example.org", &msg)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_smtplib_over_tcp() {
    let b = backend();
    let srv = tcp_server(b.clone(), cfg()).await;
    let port = srv.addr.port().to_string();
    if let Some(v) = smtplib(&["--host", "127.0.0.1", "--port", &port]).await {
        check_smtplib(&v, &b);
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_smtplib_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp.sock");
    let b = backend();
    // A stale socket file is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let listener = bind_unix(&path).unwrap();
    let server = LmtpServer::new(cfg(), b.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve_unix(listener, async {
                let _ = rx.await;
            })
            .await
    });
    // Direct check over the socket first.
    let mut c = Client::new(UnixStream::connect(&path).await.unwrap());
    c.hello().await;
    assert_eq!(c.cmd("QUIT").await.code, 221);
    if let Some(v) = smtplib(&["--socket", path.to_str().unwrap()]).await {
        check_smtplib(&v, &b);
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    // A regular file is not replaced.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(bind_unix(&file).is_err());
}

/// swaks, when installed (Debian package `swaks`; CI installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_swaks() {
    if std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("swaks is not installed: this test needs the Debian package `swaks` (as .ci/run installs)");
    }
    let b = backend();
    let srv = tcp_server(b.clone(), cfg()).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lmtp.sock");
    let server = LmtpServer::new(cfg(), b.clone());
    let listener = bind_unix(&sock).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let unix = tokio::spawn(async move {
        server
            .serve_unix(listener, async {
                let _ = rx.await;
            })
            .await
    });
    let port = srv.addr.port().to_string();
    let runs: [(&[&str], &str); 3] = [
        (&["--server", "127.0.0.1", "--port", &port], "tcp"),
        (
            &["--server", "127.0.0.1", "--port", &port, "--pipeline"],
            "pipelined",
        ),
        (&["--socket", sock.to_str().unwrap()], "unix"),
    ];
    for (target, name) in runs {
        let out = tokio::process::Command::new("swaks")
            .args(["--protocol", "LMTP", "--from", "s@remote.test"])
            .args(["--to", "alice@example.org,bob@example.org"])
            .args(["--header", &format!("Subject: swaks {name}")])
            .args(["--body", ".dotted line\nsecond line"])
            .args(target)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "swaks {name}: {text}");
        assert!(
            text.contains("250 2.0.0 <bob@example.org> delivered"),
            "{text}"
        );
    }
    let d = b.delivered();
    assert_eq!(d.len(), 6);
    for m in &d {
        let s = String::from_utf8_lossy(&m.message);
        assert!(
            s.starts_with("Return-Path: <s@remote.test>\r\nDelivered-To: "),
            "{s}"
        );
        assert!(s.contains("\r\n.dotted line\r\nsecond line\r\n"), "{s}");
    }
    let _ = tx.send(());
    unix.await.unwrap().unwrap();
    srv.stop().await;
}
