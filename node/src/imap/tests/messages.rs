//! APPEND, SELECT, FETCH (every item), SEARCH, STORE, COPY, MOVE, EXPUNGE.

use super::*;

/// Nested multipart: alternative (8-bit text, quoted-printable HTML), a PDF
/// attachment, a forwarded message; RFC 2047 headers; a group in Cc.
pub(crate) const NESTED: &[u8] = b"From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <jorg@example.org>\r\n\
To: \"Bob, Jr.\" <bob@example.com>, carol@example.com\r\n\
Cc: Team: dave@example.net;\r\n\
Subject: =?UTF-8?B?UmFwcG9ydCDDqXTDqQ==?=\r\n\
Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\
Message-ID: <msg1@example.org>\r\n\
In-Reply-To: <prev@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
This is a multi-part message in MIME format.\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"inner\"\r\n\
\r\n\
--inner\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Bonjour, voil\xc3\xa0 l'\xc3\xa9t\xc3\xa9.\r\n\
Ligne deux.\r\n\
--inner\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
<p>Bonjour, voil=C3=A0</p>\r\n\
--inner--\r\n\
--outer\r\n\
Content-Type: application/pdf; name=\"report.pdf\"\r\n\
Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-ID: <pdf1@example.org>\r\n\
Content-Description: The report\r\n\
Content-Language: fr\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--outer\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: inner@example.org\r\n\
Subject: forwarded\r\n\
Content-Type: text/plain\r\n\
\r\n\
inner text\r\n\
--outer--\r\n";

pub(crate) const ENVELOPE: &str = "ENVELOPE (\"Mon, 7 Feb 1994 21:52:25 -0800\" \"=?UTF-8?B?UmFwcG9ydCDDqXTDqQ==?=\" ((\"=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=\" NIL \"jorg\" \"example.org\")) ((\"=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=\" NIL \"jorg\" \"example.org\")) ((\"=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=\" NIL \"jorg\" \"example.org\")) ((\"Bob, Jr.\" NIL \"bob\" \"example.com\")(NIL NIL \"carol\" \"example.com\")) ((NIL NIL \"Team\" NIL)(NIL NIL \"dave\" \"example.net\")(NIL NIL NIL NIL)) NIL \"<prev@example.org>\" \"<msg1@example.org>\")";

pub(crate) const BODYSTRUCTURE: &str = "BODYSTRUCTURE (((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 37 2 NIL NIL NIL NIL)(\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 26 1 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"inner\") NIL NIL NIL)(\"application\" \"pdf\" (\"name\" \"report.pdf\") \"<pdf1@example.org>\" \"The report\" \"base64\" 12 NIL (\"attachment\" (\"filename\" \"report.pdf\")) (\"fr\") NIL)(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7bit\" 83 (NIL \"forwarded\" ((NIL NIL \"inner\" \"example.org\")) ((NIL NIL \"inner\" \"example.org\")) ((NIL NIL \"inner\" \"example.org\")) NIL NIL NIL NIL NIL) (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 1 NIL NIL NIL NIL) 5 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"outer\") NIL NIL NIL)";

const SIMPLE: &[u8] = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hello world\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\nJust a line.\r\n";

#[tokio::test]
async fn append_select_fetch() {
    let (addr, _) = start(test_config()).await;
    let mut c = Client::login(addr).await;
    let ok = c.append("INBOX", "\\Flagged $Work", NESTED).await;
    assert!(ok.contains("OK [APPENDUID "), "{ok}");
    assert!(ok.contains(" 1] "), "{ok}");
    c.send(
        format!(
            "x APPEND INBOX (\\Seen) \"01-Jul-2003 10:52:37 +0200\" {{{}+}}\r\n",
            SIMPLE.len()
        )
        .as_bytes(),
    )
    .await;
    c.send(SIMPLE).await;
    c.send(b"\r\n").await;
    assert!(c.until("x").await.pop().unwrap().contains("OK [APPENDUID"));
    assert!(c
        .append("Nope", "", SIMPLE)
        .await
        .contains("NO [TRYCREATE]"));

    let sel = c.ok("SELECT INBOX").await;
    assert_eq!(
        sel[0],
        "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Work)\r\n"
    );
    assert!(has(
        &sel,
        "* OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Work \\*)]"
    ));
    assert!(has(&sel, "* 2 EXISTS") && has(&sel, "* 0 RECENT") && has(&sel, "[UNSEEN 1]"));
    assert!(
        has(&sel, "[UIDVALIDITY ") && has(&sel, "[UIDNEXT 3]") && has(&sel, "[HIGHESTMODSEQ 3]")
    );

    let f = c.ok("FETCH 1 (UID FLAGS RFC822.SIZE INTERNALDATE)").await;
    assert!(
        f[0].starts_with(&format!(
            "* 1 FETCH (UID 1 FLAGS (\\Flagged $Work) RFC822.SIZE {} INTERNALDATE \"",
            NESTED.len()
        )),
        "{f:?}"
    );
    let f = c.ok("FETCH 2 INTERNALDATE").await;
    assert_eq!(
        f[0],
        "* 2 FETCH (INTERNALDATE \"01-Jul-2003 08:52:37 +0000\")\r\n"
    );
    let f = c.ok("FETCH 1 (ENVELOPE)").await;
    assert_eq!(f[0], format!("* 1 FETCH ({ENVELOPE})\r\n"));
    let f = c.ok("FETCH 1 BODYSTRUCTURE").await;
    assert_eq!(f[0], format!("* 1 FETCH ({BODYSTRUCTURE})\r\n"));
    let f = c.ok("FETCH 1 BODY").await;
    assert!(f[0].starts_with(
        "* 1 FETCH (BODY (((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 37 2)("
    ));
    let f = c.ok("FETCH 2 FAST").await;
    assert!(f[0].starts_with("* 2 FETCH (FLAGS (\\Seen) INTERNALDATE"));
    let f = c.ok("FETCH 2 FULL").await;
    assert!(f[0].contains("ENVELOPE") && f[0].contains(" BODY ("));

    // Sections.
    let body = |s: &str| -> String {
        let v = s.split_once("}\r\n").map(|x| x.1).unwrap_or("");
        v.strip_suffix(")\r\n").unwrap_or(v).to_string()
    };
    let f = c.ok("FETCH 1 BODY.PEEK[1.1]").await;
    assert_eq!(body(&f[0]), "Bonjour, voilà l'été.\r\nLigne deux.");
    assert!(f[0].starts_with("* 1 FETCH (BODY[1.1] {37}"));
    let f = c.ok("FETCH 1 BODY.PEEK[1.2.MIME]").await;
    assert_eq!(body(&f[0]), "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    let f = c.ok("FETCH 1 BODY.PEEK[2]").await;
    assert_eq!(body(&f[0]), "JVBERi0xLjQK");
    let f = c.ok("FETCH 1 BODY.PEEK[3.HEADER]").await;
    assert_eq!(
        body(&f[0]),
        "From: inner@example.org\r\nSubject: forwarded\r\nContent-Type: text/plain\r\n\r\n"
    );
    let f = c.ok("FETCH 1 BODY.PEEK[3.TEXT]").await;
    assert_eq!(body(&f[0]), "inner text");
    let f = c.ok("FETCH 1 BODY.PEEK[3.1]").await;
    assert_eq!(body(&f[0]), "inner text");
    let f = c.ok("FETCH 1 BODY.PEEK[3.HEADER.FIELDS (SUBJECT)]").await;
    assert_eq!(body(&f[0]), "Subject: forwarded\r\n\r\n");
    assert!(
        f[0].starts_with("* 1 FETCH (BODY[3.HEADER.FIELDS (SUBJECT)] {"),
        "{}",
        f[0]
    );
    let f = c
        .ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (Message-ID In-Reply-To)]")
        .await;
    assert_eq!(
        body(&f[0]),
        "Message-ID: <msg1@example.org>\r\nIn-Reply-To: <prev@example.org>\r\n\r\n"
    );
    let f = c
        .ok("FETCH 2 BODY.PEEK[HEADER.FIELDS.NOT (From To Date)]")
        .await;
    assert_eq!(body(&f[0]), "Subject: hello world\r\n\r\n");
    let f = c.ok("FETCH 2 BODY.PEEK[TEXT]<5.4>").await;
    assert_eq!(f[0], "* 2 FETCH (BODY[TEXT]<5> {4}\r\na li)\r\n");
    let f = c.ok("FETCH 2 BODY.PEEK[]<1000.5>").await;
    assert_eq!(f[0], "* 2 FETCH (BODY[]<1000> {0}\r\n)\r\n");
    let f = c.ok("FETCH 1 BODY.PEEK[9]").await;
    assert_eq!(f[0], "* 1 FETCH (BODY[9] {0}\r\n)\r\n");
    let f = c.ok("FETCH 2 (RFC822.HEADER RFC822.TEXT)").await;
    assert!(
        f[0].contains("RFC822.HEADER {") && f[0].contains("RFC822.TEXT {14}\r\nJust a line.\r\n")
    );
    // Not peeking sets \Seen and reports FLAGS.
    let f = c.ok("FETCH 1 BODY[1.1]").await;
    assert!(f[0].contains("FLAGS (\\Seen \\Flagged $Work)"), "{f:?}");
    let f = c.ok("FETCH 1 RFC822").await;
    assert!(f[0].contains(&format!("RFC822 {{{}}}", NESTED.len())));
    let f = c.ok("UID FETCH 2 (FLAGS)").await;
    assert_eq!(f[0], "* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n");
    let f = c.ok("UID FETCH 1:* (UID)").await;
    assert_eq!(f.len(), 2);
    let f = c.ok("FETCH 1 BINARY.SIZE[1]").await;
    assert!(f[0].starts_with("* 1 FETCH (BINARY.SIZE[1] "), "{f:?}");
    let f = c.ok("FETCH 1:2 (MODSEQ)").await;
    assert!(f[0].starts_with("* 1 FETCH (MODSEQ ("), "{f:?}");
}

#[tokio::test]
async fn search_store_copy_move_expunge() {
    let (addr, _) = start(test_config()).await;
    let mut c = Client::login(addr).await;
    c.ok("CREATE Archive").await;
    c.append("INBOX", "", NESTED).await;
    c.append("INBOX", "\\Seen", SIMPLE).await;
    c.append(
        "INBOX",
        "\\Deleted $Junk",
        b"From: x@y\r\nSubject: spam\r\n\r\nBuy now\r\n",
    )
    .await;
    c.ok("SELECT INBOX").await;
    let s = |v: Vec<String>| v[0].trim_end().to_string();
    assert_eq!(s(c.ok("SEARCH ALL").await), "* SEARCH 1 2 3");
    assert_eq!(s(c.ok("SEARCH SEEN").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH UNSEEN UNDELETED").await), "* SEARCH 1");
    assert_eq!(s(c.ok("SEARCH KEYWORD $Junk").await), "* SEARCH 3");
    assert_eq!(
        s(c.ok("SEARCH CHARSET UTF-8 FROM {5+}\r\njörg").await),
        "* SEARCH 1"
    );
    assert_eq!(
        s(c.ok("SEARCH CHARSET UTF-8 SUBJECT {7+}\r\nrapport").await),
        "* SEARCH 1"
    );
    assert_eq!(
        s(c.ok("SEARCH CHARSET UTF-8 BODY {6+}\r\nvoilà").await),
        "* SEARCH 1"
    );
    assert_eq!(s(c.ok("SEARCH TEXT \"buy now\"").await), "* SEARCH 3");
    assert_eq!(s(c.ok("SEARCH HEADER Message-ID msg1").await), "* SEARCH 1");
    assert_eq!(s(c.ok("SEARCH OR SEEN DELETED").await), "* SEARCH 2 3");
    assert_eq!(s(c.ok("SEARCH NOT (SEEN)").await), "* SEARCH 1 3");
    assert_eq!(s(c.ok("SEARCH SENTON 7-Feb-1994").await), "* SEARCH 1");
    assert_eq!(
        s(c.ok("SEARCH SENTBEFORE 1-Jan-2000 SENTSINCE 1-Jan-1990")
            .await),
        "* SEARCH 1"
    );
    assert_eq!(s(c.ok("SEARCH LARGER 100 SMALLER 200").await), "* SEARCH 2");
    assert_eq!(s(c.ok("SEARCH 2:*").await), "* SEARCH 2 3");
    assert_eq!(s(c.ok("UID SEARCH UID 2:3 NEW").await), "* SEARCH");
    assert_eq!(s(c.ok("SEARCH OLD 1,3").await), "* SEARCH 1 3");
    assert_eq!(
        s(c.ok("SEARCH SINCE 1-Jan-2020 YOUNGER 3600").await),
        "* SEARCH 1 2 3"
    );
    assert!(c
        .status("SEARCH CHARSET KOI8-R ALL")
        .await
        .contains("NO [BADCHARSET (UTF-8 US-ASCII)]"));
    assert!(c.status("SEARCH FOO").await.contains("BAD"));

    // STORE.
    assert_eq!(
        c.ok("STORE 1 +FLAGS (\\Answered)").await,
        vec!["* 1 FETCH (FLAGS (\\Answered))\r\n"]
    );
    assert_eq!(
        c.ok("STORE 1 +FLAGS.SILENT (\\Flagged)").await,
        Vec::<String>::new()
    );
    assert_eq!(
        c.ok("UID STORE 1 -FLAGS (\\Answered)").await,
        vec!["* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n"]
    );
    assert_eq!(
        c.ok("STORE 1 FLAGS (foo)").await,
        vec!["* 1 FETCH (FLAGS (foo))\r\n"]
    );
    assert!(c.status("STORE 1 FLAGS (\\Bogus)").await.contains("BAD"));
    // CONDSTORE (SEARCH MODSEQ enables it: FETCH responses carry MODSEQ).
    assert_eq!(
        s(c.ok("SEARCH MODSEQ 3").await),
        "* SEARCH 1 2 3 (MODSEQ 8)"
    );
    let r = c.cmd("STORE 1,2 (UNCHANGEDSINCE 5) +FLAGS (\\Draft)").await;
    assert!(r.last().unwrap().contains("OK [MODIFIED 1]"), "{r:?}");
    assert_eq!(r[0], "* 2 FETCH (FLAGS (\\Seen \\Draft) MODSEQ (9))\r\n");

    // COPY / MOVE.
    let r = c.status("COPY 1:2 Archive").await;
    assert!(r.contains("OK [COPYUID ") && r.contains(" 1:2 1:2]"), "{r}");
    assert!(c.status("COPY 1 Nope").await.contains("NO [TRYCREATE]"));
    assert!(c.status("COPY 9 Archive").await.contains("BAD"));
    let r = c.cmd("UID MOVE 2 Archive").await;
    assert!(
        r[0].starts_with("* OK [COPYUID ") && r[0].contains(" 2 3]"),
        "{r:?}"
    );
    assert_eq!(r[1], "* 2 EXPUNGE\r\n");
    assert!(r[2].contains("OK"));
    assert_eq!(s(c.ok("UID SEARCH ALL").await), "* SEARCH 1 3");

    // EXPUNGE variants.
    c.ok("STORE 1 +FLAGS (\\Deleted)").await;
    assert_eq!(c.ok("UID EXPUNGE 3").await, vec!["* 2 EXPUNGE\r\n"]);
    assert_eq!(c.ok("EXPUNGE").await, vec!["* 1 EXPUNGE\r\n"]);
    assert_eq!(c.ok("SEARCH ALL").await[0].trim_end(), "* SEARCH");

    // CLOSE expunges silently; EXAMINE is read-only.
    c.ok("SELECT Archive").await;
    c.ok("STORE 1 +FLAGS (\\Deleted)").await;
    c.ok("UNSELECT").await;
    c.ok("EXAMINE Archive").await;
    assert!(c.status("STORE 1 +FLAGS (\\Seen)").await.contains("NO"));
    let f = c.ok("FETCH 1 BODY[TEXT]").await;
    assert!(!f[0].contains("FLAGS"), "EXAMINE does not set \\Seen");
    assert_eq!(c.ok("CLOSE").await, Vec::<String>::new());
    c.ok("SELECT Archive").await;
    assert_eq!(c.ok("CLOSE").await, Vec::<String>::new());
    assert_eq!(
        c.ok("STATUS Archive (MESSAGES)").await,
        vec!["* STATUS Archive (MESSAGES 2)\r\n"]
    );
    assert!(c.status("CLOSE").await.contains("BAD"));
}

/// SEARCH over more messages than one window holds (32 messages for body
/// keys, the fields of 1,024 for header keys): each window's matches are
/// its own, while the next window is read during the matching.
#[tokio::test]
async fn search_spans_many_windows() {
    let (addr, _) = start(test_config()).await;
    let mut c = Client::login(addr).await;
    let n = 1_100;
    // The APPENDs in one write, with LITERAL+ (one round trip, not 1,100).
    let mut appends = String::new();
    for i in 1..=n {
        let subject = if i % 5 == 0 { "tagged" } else { "plain" };
        let body = if i % 7 == 0 {
            "a needle inside"
        } else {
            "hay only"
        };
        let msg = format!("From: a@example.org\r\nSubject: {subject} {i}\r\n\r\n{body}\r\n");
        appends += &format!("p{i} APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len());
    }
    c.send(appends.as_bytes()).await;
    let done = c.until(&format!("p{n}")).await;
    let ok = done.iter().filter(|l| l.contains(" OK [APPENDUID")).count();
    assert_eq!(ok, n as usize, "{:?}", done.last());
    c.ok("SELECT INBOX").await;
    let want = |every: u32| {
        let nums: Vec<String> = (1..=n)
            .filter(|i| i % every == 0)
            .map(|i| i.to_string())
            .collect();
        format!("* SEARCH {}", nums.join(" "))
    };
    let found = c.ok("SEARCH BODY needle").await;
    assert_eq!(found[0].trim_end(), want(7));
    let found = c.ok("UID SEARCH SUBJECT tagged").await;
    assert_eq!(found[0].trim_end(), want(5));
    let found = c.ok("SEARCH TEXT needle SUBJECT plain").await;
    let both: Vec<String> = (1..=n)
        .filter(|i| i % 7 == 0 && i % 5 != 0)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(found[0].trim_end(), format!("* SEARCH {}", both.join(" ")));
}
