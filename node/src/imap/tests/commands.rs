//! Connection, authentication and mailbox commands.

use super::*;

#[tokio::test]
async fn capability_login_logout() {
    let (addr, _) = start(test_config()).await;
    let mut c = Client::connect(addr).await;
    assert!(
        c.greeting
            .starts_with("* OK [CAPABILITY IMAP4REV1 IMAP4rev2 AUTH=PLAIN"),
        "{}",
        c.greeting
    );
    let caps = c.ok("CAPABILITY").await;
    assert!(caps[0].contains("SASL-IR") && caps[0].contains("LITERAL+"));
    assert!(!caps[0].contains("STARTTLS"), "no TLS configured");
    assert!(c.status("SELECT INBOX").await.contains("BAD"));
    assert!(c
        .status("LOGIN alice wrong")
        .await
        .contains("NO [AUTHENTICATIONFAILED]"));
    let ok = c.status("LOGIN alice pw").await;
    assert!(ok.contains("OK [CAPABILITY IMAP4REV1"), "{ok}");
    for cap in [
        "IDLE",
        "NAMESPACE",
        "UNSELECT",
        "UIDPLUS",
        "MOVE",
        "CONDSTORE",
        "QRESYNC",
        "LIST-EXTENDED",
        "STATUS=SIZE",
        "SPECIAL-USE",
        "CREATE-SPECIAL-USE",
        "LIST-STATUS",
        "CHILDREN",
        "WITHIN",
        "APPENDLIMIT=",
    ] {
        assert!(ok.contains(cap), "{cap} missing in {ok}");
    }
    assert!(!ok.contains("IMAP4REV2") && !ok.contains("AUTH=PLAIN"));
    assert!(c.status("LOGIN alice pw").await.contains("BAD"));
    let bye = c.cmd("LOGOUT").await;
    assert!(bye[0].starts_with("* BYE"));
    assert!(bye[1].contains("OK"));
}

#[tokio::test]
async fn authenticate_plain() {
    let (addr, _) = start(test_config()).await;
    // SASL-IR: "\0alice\0pw"
    let mut c = Client::connect(addr).await;
    assert!(c
        .status("AUTHENTICATE PLAIN AGFsaWNlAHB3")
        .await
        .contains("OK"));
    // With a continuation.
    let mut c = Client::connect(addr).await;
    c.send(b"a AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await, "+ \r\n");
    c.send(b"AGFsaWNlAHB3\r\n").await;
    assert!(c.line().await.starts_with("a OK"));
    // Wrong password, cancel, garbage.
    let mut c = Client::connect(addr).await;
    assert!(c
        .status("AUTHENTICATE PLAIN AGFsaWNlAHh4")
        .await
        .contains("NO"));
    c.send(b"b AUTHENTICATE PLAIN\r\n").await;
    c.line().await;
    c.send(b"*\r\n").await;
    assert!(c.line().await.starts_with("b BAD"));
    c.send(b"c AUTHENTICATE PLAIN\r\n").await;
    c.line().await;
    c.send(b"!!!\r\n").await;
    assert!(c.line().await.starts_with("c BAD"));
    assert!(c.status("AUTHENTICATE CRAM-MD5").await.contains("NO"));
    assert!(c.status("NOOP").await.contains("OK"));
}

#[tokio::test]
async fn logindisabled_without_tls() {
    let (addr, _) = start(ImapConfig {
        loopback_is_secure: false,
        ..test_config()
    })
    .await;
    let mut c = Client::connect(addr).await;
    assert!(c.greeting.contains("LOGINDISABLED") && !c.greeting.contains("AUTH=PLAIN"));
    assert!(c
        .status("LOGIN alice pw")
        .await
        .contains("NO [PRIVACYREQUIRED]"));
    assert!(c
        .status("AUTHENTICATE PLAIN AGFsaWNlAHB3")
        .await
        .contains("NO"));
    let (addr, _) = start(ImapConfig {
        loopback_is_secure: false,
        allow_plaintext_auth: true,
        ..test_config()
    })
    .await;
    let mut c = Client::connect(addr).await;
    assert!(c.status("LOGIN alice pw").await.contains("OK"));
}

#[tokio::test]
async fn mailbox_management() {
    let (addr, _) = start(test_config()).await;
    let mut c = Client::login(addr).await;
    c.ok("CREATE Work").await;
    c.ok("CREATE Work/Projects/").await;
    c.ok("CREATE Deep/a/b").await;
    assert!(c.status("CREATE Work").await.contains("NO [ALREADYEXISTS]"));
    assert!(c
        .status("CREATE inbox")
        .await
        .contains("NO [ALREADYEXISTS]"));
    c.ok("CREATE \"Sent Items\" (USE (\\Sent))").await;
    assert!(c
        .status("CREATE Junk (USE (\\Bogus))")
        .await
        .contains("NO [USEATTR]"));
    c.ok("CREATE &AOk-t&AOk-").await;

    let l = c.ok("LIST \"\" *").await;
    assert_eq!(
        l,
        vec![
            "* LIST (\\HasNoChildren) \"/\" INBOX\r\n",
            "* LIST (\\Noselect \\HasChildren) \"/\" Deep\r\n",
            "* LIST (\\Noselect \\HasChildren) \"/\" Deep/a\r\n",
            "* LIST (\\HasNoChildren) \"/\" Deep/a/b\r\n",
            "* LIST (\\Sent \\HasNoChildren) \"/\" \"Sent Items\"\r\n",
            "* LIST (\\HasChildren) \"/\" Work\r\n",
            "* LIST (\\HasNoChildren) \"/\" Work/Projects\r\n",
            "* LIST (\\HasNoChildren) \"/\" &AOk-t&AOk-\r\n",
        ]
    );
    assert_eq!(c.ok("LIST \"\" %").await.len(), 5);
    assert_eq!(
        c.ok("LIST Work/ %").await,
        vec!["* LIST (\\HasNoChildren) \"/\" Work/Projects\r\n"]
    );
    assert_eq!(
        c.ok("LIST \"\" \"\"").await,
        vec!["* LIST (\\Noselect) \"/\" \"\"\r\n"]
    );
    assert_eq!(c.ok("LIST \"\" inBox").await.len(), 1);

    c.ok("SUBSCRIBE Work").await;
    c.ok("SUBSCRIBE Deep/a/b").await;
    assert!(c.status("SUBSCRIBE Nope").await.contains("NO"));
    assert_eq!(
        c.ok("LSUB \"\" %").await,
        vec![
            "* LSUB (\\Noselect) \"/\" Deep\r\n",
            "* LSUB () \"/\" Work\r\n"
        ]
    );
    // LIST-EXTENDED.
    assert_eq!(
        c.ok("LIST (SUBSCRIBED) \"\" * RETURN (CHILDREN)").await,
        vec![
            "* LIST (\\Subscribed \\HasNoChildren) \"/\" Deep/a/b\r\n",
            "* LIST (\\Subscribed \\HasChildren) \"/\" Work\r\n",
        ]
    );
    assert_eq!(
        c.ok("LIST (SPECIAL-USE) \"\" *").await,
        vec!["* LIST (\\Sent \\HasNoChildren) \"/\" \"Sent Items\"\r\n"]
    );
    let ls = c
        .ok("LIST \"\" (INBOX Work) RETURN (SUBSCRIBED STATUS (MESSAGES UIDNEXT SIZE))")
        .await;
    assert_eq!(ls.len(), 4, "{ls:?}");
    assert!(ls[1].starts_with("* STATUS INBOX (MESSAGES 0 UIDNEXT 1 SIZE 0)"));
    assert!(ls[2].contains("\\Subscribed"));
    assert!(c
        .status("LIST (RECURSIVEMATCH) \"\" *")
        .await
        .contains("BAD"));
    c.ok("UNSUBSCRIBE Work").await;
    assert_eq!(
        c.ok("LSUB \"\" *").await,
        vec!["* LSUB () \"/\" Deep/a/b\r\n"]
    );

    // RENAME with children, INBOX rename, DELETE.
    c.ok("RENAME Work Job").await;
    let names = c.ok("LIST \"\" Job*").await;
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(c.status("RENAME Nope X").await.contains("NO [NONEXISTENT]"));
    assert!(c.status("RENAME Job INBOX").await.contains("NO"));
    assert!(c.status("RENAME Job Job/x").await.contains("NO [CANNOT]"));
    assert!(c
        .append("INBOX", "\\Seen", b"Subject: a\r\n\r\nx\r\n")
        .await
        .contains("OK"));
    c.ok("RENAME INBOX Old").await;
    let st = c.ok("STATUS Old (MESSAGES)").await;
    assert_eq!(st, vec!["* STATUS Old (MESSAGES 1)\r\n"]);
    assert_eq!(
        c.ok("STATUS INBOX (MESSAGES)").await,
        vec!["* STATUS INBOX (MESSAGES 0)\r\n"]
    );
    assert!(c.status("DELETE INBOX").await.contains("NO"));
    assert!(c.status("DELETE Deep").await.contains("NO [NONEXISTENT]"));
    c.ok("DELETE Job/Projects").await;
    assert!(c
        .status("DELETE Job/Projects")
        .await
        .contains("NO [NONEXISTENT]"));
    c.ok("NAMESPACE")
        .await
        .iter()
        .for_each(|l| assert_eq!(l, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"));
    let id = c.ok("ID NIL").await;
    assert!(id[0].starts_with("* ID (\"name\" \"Aerogramme\""));
    assert_eq!(
        c.ok("ENABLE CONDSTORE QRESYNC UTF8=ACCEPT").await,
        vec!["* ENABLED CONDSTORE QRESYNC UTF8=ACCEPT\r\n"]
    );
    assert_eq!(c.ok("ENABLE CONDSTORE").await, vec!["* ENABLED\r\n"]);
}

#[tokio::test]
async fn status_items() {
    let (addr, _) = start(test_config()).await;
    let mut c = Client::login(addr).await;
    c.append("INBOX", "\\Seen", b"Subject: 1\r\n\r\none\r\n")
        .await;
    c.append("INBOX", "\\Deleted", b"Subject: 2\r\n\r\ntwo\r\n")
        .await;
    let st = c
        .ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ)")
        .await;
    assert!(
        st[0].starts_with("* STATUS INBOX (MESSAGES 2 RECENT 0 UIDNEXT 3 UIDVALIDITY ")
            && st[0].ends_with("UNSEEN 1 DELETED 1 SIZE 38 HIGHESTMODSEQ 3)\r\n"),
        "{st:?}"
    );
    assert!(c
        .status("STATUS Nope (MESSAGES)")
        .await
        .contains("NO [NONEXISTENT]"));
}
