//! Bad input: garbage, literals in the wrong place, oversized literals and
//! lines, commands in the wrong state, invalid sequence sets, timeouts. The
//! connection answers BAD/NO and stays usable.

use super::*;

#[tokio::test]
async fn garbage_and_wrong_state() {
    let (addr, _) = start(test_config()).await;
    let mut c = Client::connect(addr).await;
    c.send(b"\x01\x02\x00\xff\r\n").await;
    assert!(c.line().await.starts_with("* BAD"));
    c.send(b"\r\n").await;
    assert!(c.line().await.starts_with("* BAD"));
    assert!(c.status("BOGUS").await.contains("BAD"));
    assert!(c.status("FETCH 1 FLAGS").await.contains("BAD"));
    assert!(c.status("SELECT INBOX").await.contains("BAD"));
    assert!(c.status("LOGIN \"unterminated").await.contains("BAD"));
    assert!(c.status("COMPRESS DEFLATE").await.contains("BAD"));
    // Literals: synchronizing, as a careful client sends them.
    c.send(b"a LOGIN {5}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(b"alice {2}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(b"pw\r\n").await;
    assert!(c.line().await.starts_with("a OK"));
    assert!(c.status("FETCH 1 FLAGS").await.contains("BAD"));
    c.ok("SELECT INBOX").await;
    // Invalid sequence sets.
    assert!(
        c.status("FETCH 1:* FLAGS").await.contains("BAD"),
        "empty mailbox"
    );
    c.append("INBOX", "", b"Subject: x\r\n\r\ny\r\n").await;
    c.ok("NOOP").await;
    for bad in [
        "FETCH 0 FLAGS",
        "FETCH 2 FLAGS",
        "FETCH 1:5 FLAGS",
        "FETCH a:b FLAGS",
        "FETCH 99999999999 FLAGS",
        "STORE 3 +FLAGS (\\Seen)",
        "COPY 2 INBOX",
        "FETCH 1 (FLAGS",
        "FETCH 1 BODY[1.0]",
        "UID FETCH 0:1 FLAGS",
    ] {
        assert!(c.status(bad).await.contains("BAD"), "{bad}");
    }
    assert_eq!(
        c.ok("UID FETCH 5:* FLAGS").await,
        vec!["* 1 FETCH (UID 1 FLAGS ())\r\n"]
    );
    assert_eq!(c.ok("UID FETCH 5:9 FLAGS").await, Vec::<String>::new());
    assert_eq!(c.ok("UID FETCH 7 FLAGS").await, Vec::<String>::new());
    assert!(c.status("NOOP").await.contains("OK"));
}

#[tokio::test]
async fn literals_and_limits() {
    let (addr, _) = start(ImapConfig {
        max_literal: 1000,
        ..test_config()
    })
    .await;
    let mut c = Client::login(addr).await;
    // A literal where the command takes none: refused before the data.
    c.send(b"a NOOP {3}\r\n").await;
    assert!(c.line().await.starts_with("a BAD"));
    // Non-synchronizing: the data is skipped, not executed.
    c.send(b"b NOOP {14+}\r\nc LOGOUT\r\nxx\r\n\r\n").await;
    assert!(c.line().await.starts_with("b BAD"));
    // Too large (synchronizing): no continuation, NO/BAD [TOOBIG].
    c.send(b"d APPEND INBOX {5000}\r\n").await;
    let r = c.line().await;
    assert!(r.starts_with("d BAD [TOOBIG]"), "{r}");
    // Too large (LITERAL+): read and dropped.
    c.send(b"e APPEND INBOX {2000+}\r\n").await;
    c.send(&[b'z'; 2000]).await;
    c.send(b"\r\n").await;
    assert!(c.line().await.starts_with("e BAD [TOOBIG]"));
    // A 1 MB line.
    let mut big = b"f SEARCH SUBJECT ".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1 << 20));
    big.extend_from_slice(b"\r\n");
    c.send(&big).await;
    let r = c.line().await;
    assert!(r.starts_with("f BAD") && r.contains("Line too long"), "{r}");
    // Still healthy, and APPEND within the limit works.
    assert!(c.status("NOOP").await.contains("OK"));
    assert!(c
        .append("INBOX", "", b"Subject: ok\r\n\r\nfits\r\n")
        .await
        .contains("OK"));
}

#[tokio::test]
async fn idle_timeout_logs_out() {
    let (addr, _) = start(ImapConfig {
        idle_timeout: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    let mut c = Client::login(addr).await;
    let bye = c.line().await;
    assert!(bye.starts_with("* BYE"), "{bye}");
    let mut rest = Vec::new();
    let n = c.into_inner().read_to_end(&mut rest).await.unwrap();
    assert_eq!(n, 0, "closed after BYE");
}

#[tokio::test]
async fn mutated_commands_never_break_the_session() {
    let (addr, _) = start(test_config()).await;
    let mut c = Client::login(addr).await;
    c.append("INBOX", "\\Seen", super::messages::NESTED).await;
    c.ok("SELECT INBOX").await;
    let templates: &[&[u8]] = &[
        b"a FETCH 1:* (FLAGS BODY.PEEK[1.2.MIME] BODY[HEADER.FIELDS (A B)]<0.10> ENVELOPE)",
        b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)",
        b"a SEARCH OR (FROM x SUBJECT y) NOT UID 1:* SENTBEFORE 1-Jan-2000",
        b"a STORE 1 +FLAGS.SILENT (\\Seen $x) ",
        b"a LIST (SUBSCRIBED) \"\" (\"*\" %) RETURN (STATUS (MESSAGES SIZE))",
        b"a CREATE \"x y\" (USE (\\Sent))",
        b"a STATUS INBOX (MESSAGES UIDNEXT HIGHESTMODSEQ)",
        b"a SELECT INBOX (QRESYNC (1 1 1:5))",
        b"a COPY 1 INBOX",
        b"a ENABLE QRESYNC",
        b"a UID EXPUNGE 5:7",
        b"a RENAME \"a b\" c",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut batch = Vec::new();
    for _ in 0..400 {
        let t = templates[(rand() % templates.len() as u64) as usize];
        let mut cmd = t.to_vec();
        for _ in 0..1 + rand() % 3 {
            let i = (rand() % cmd.len() as u64) as usize;
            cmd[i] = match rand() % 4 {
                0 => b'{',
                1 => b' ',
                2 => b'(',
                _ => (rand() % 256) as u8,
            };
        }
        cmd.retain(|&b| b != b'\n');
        batch.extend_from_slice(&cmd);
        batch.extend_from_slice(b"\r\n");
    }
    c.send(&batch).await;
    c.send(b"zz NOOP\r\n").await;
    loop {
        let l = c.line().await;
        if l.starts_with("zz ") {
            assert!(l.starts_with("zz OK"), "{l}");
            break;
        }
    }
}
