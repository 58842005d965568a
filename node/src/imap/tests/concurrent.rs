//! Two sessions on one mailbox: NOOP and IDLE updates, sequence numbers,
//! no EXPUNGE during FETCH/STORE/SEARCH, CONDSTORE/QRESYNC resync.

use super::*;

#[tokio::test]
async fn noop_sees_other_session() {
    let (addr, _) = start(test_config()).await;
    let mut a = Client::login(addr).await;
    let mut b = Client::login(addr).await;
    for i in 0..3 {
        b.append(
            "INBOX",
            "",
            format!("Subject: {i}\r\n\r\nbody\r\n").as_bytes(),
        )
        .await;
    }
    a.ok("SELECT INBOX").await;
    b.ok("SELECT INBOX").await;
    b.append("INBOX", "", b"Subject: new\r\n\r\nx\r\n").await;
    b.ok("STORE 2 +FLAGS (\\Seen)").await;
    assert_eq!(
        a.ok("NOOP").await,
        vec!["* 4 EXISTS\r\n", "* 2 FETCH (FLAGS (\\Seen))\r\n"]
    );
    // B's own APPEND was announced to B at once, its STORE echo is not repeated.
    assert_eq!(b.ok("NOOP").await, Vec::<String>::new());
    b.ok("STORE 1 +FLAGS (\\Deleted)").await;
    b.ok("EXPUNGE").await;
    // No EXPUNGE while A fetches by sequence number: message 1 keeps its
    // number (its data is gone, so it is left out, RFC 2180 §4.1.1).
    let f = a.ok("FETCH 1:* (UID)").await;
    assert_eq!(
        f,
        vec![
            "* 2 FETCH (UID 2)\r\n",
            "* 3 FETCH (UID 3)\r\n",
            "* 4 FETCH (UID 4)\r\n"
        ]
    );
    assert_eq!(a.ok("SEARCH ALL").await, vec!["* SEARCH 2 3 4\r\n"]);
    assert!(a.status("STORE 1 +FLAGS (\\Seen)").await.contains("OK"));
    // UID FETCH may carry it.
    let f = a.ok("UID FETCH 2 (UID)").await;
    assert_eq!(f, vec!["* 2 FETCH (UID 2)\r\n", "* 1 EXPUNGE\r\n"]);
    assert_eq!(a.ok("FETCH 1 (UID)").await, vec!["* 1 FETCH (UID 2)\r\n"]);
}

#[tokio::test]
async fn idle_pushes_changes() {
    let (addr, _) = start(test_config()).await;
    let mut a = Client::login(addr).await;
    let mut b = Client::login(addr).await;
    b.append("INBOX", "", b"Subject: 1\r\n\r\none\r\n").await;
    a.ok("SELECT INBOX").await;
    a.send(b"i1 IDLE\r\n").await;
    assert_eq!(a.line().await, "+ idling\r\n");
    b.append("INBOX", "", b"Subject: 2\r\n\r\ntwo\r\n").await;
    assert_eq!(a.line().await, "* 2 EXISTS\r\n");
    b.ok("SELECT INBOX").await;
    b.ok("STORE 1 +FLAGS (\\Flagged)").await;
    assert_eq!(a.line().await, "* 1 FETCH (FLAGS (\\Flagged))\r\n");
    b.ok("STORE 1 +FLAGS (\\Deleted)").await;
    assert_eq!(
        a.line().await,
        "* 1 FETCH (FLAGS (\\Flagged \\Deleted))\r\n"
    );
    b.ok("EXPUNGE").await;
    assert_eq!(a.line().await, "* 1 EXPUNGE\r\n");
    a.send(b"DONE\r\n").await;
    assert!(a.line().await.starts_with("i1 OK"));
    // Not DONE: BAD, connection fine.
    a.send(b"i2 IDLE\r\n").await;
    a.line().await;
    a.send(b"NOPE\r\n").await;
    assert!(a.line().await.starts_with("i2 BAD"));
    assert!(a.status("NOOP").await.contains("OK"));
}

#[tokio::test]
async fn condstore_and_qresync() {
    let (addr, _) = start(test_config()).await;
    let mut a = Client::login(addr).await;
    for i in 0..4 {
        a.append("INBOX", "", format!("Subject: {i}\r\n\r\nx\r\n").as_bytes())
            .await;
    }
    assert_eq!(a.ok("ENABLE QRESYNC").await, vec!["* ENABLED QRESYNC\r\n"]);
    let sel = a.ok("SELECT INBOX (CONDSTORE)").await;
    let uv: String = sel
        .iter()
        .find_map(|l| {
            l.split_once("[UIDVALIDITY ")
                .map(|x| x.1.split(']').next().unwrap().to_string())
        })
        .unwrap();
    assert!(has(&sel, "[HIGHESTMODSEQ 5]"));
    a.ok("STORE 2 +FLAGS (\\Seen)").await;
    a.ok("STORE 3 +FLAGS (\\Deleted)").await;
    let e = a.ok("EXPUNGE").await;
    assert_eq!(e, vec!["* VANISHED 3\r\n"]);
    let f = a.ok("FETCH 1:* (FLAGS) (CHANGEDSINCE 5)").await;
    assert_eq!(f, vec!["* 2 FETCH (FLAGS (\\Seen) MODSEQ (6))\r\n"]);
    let f = a
        .ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5 VANISHED)")
        .await;
    assert_eq!(
        f,
        vec![
            "* VANISHED (EARLIER) 3\r\n",
            "* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (6))\r\n"
        ]
    );
    assert!(a.status("FETCH 1 (FLAGS) (VANISHED)").await.contains("BAD"));
    // Re-select with QRESYNC: CLOSED for the previous mailbox, then the
    // changes since MODSEQ 5.
    let sel = a.ok(&format!("SELECT INBOX (QRESYNC ({uv} 5 1:4))")).await;
    assert_eq!(sel[0], "* OK [CLOSED] Previous mailbox closed\r\n");
    assert!(has(&sel, "* VANISHED (EARLIER) 3"), "{sel:?}");
    assert!(
        has(&sel, "* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (6))"),
        "{sel:?}"
    );
    // Another session's change is reported with UID and MODSEQ.
    let mut b = Client::login(addr).await;
    b.ok("SELECT INBOX").await;
    b.ok("STORE 1 +FLAGS (\\Flagged)").await;
    assert_eq!(
        a.ok("NOOP").await,
        vec!["* 1 FETCH (UID 1 FLAGS (\\Flagged) MODSEQ (9))\r\n"]
    );
}
