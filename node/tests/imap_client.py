#!/usr/bin/env python3
"""Drives Aerogramme's IMAP server with Python's imaplib, a real client.

Run by node/tests/imap_python.rs against a server with the in-memory
backend (users alice/pw and bob/pw), or by hand:

    python3 node/tests/imap_client.py PORT

Exits non-zero with a message at the first failed check.
"""

import base64
import imaplib
import re
import socket
import sys

HOST = "127.0.0.1"
PORT = int(sys.argv[1])
TIMEOUT = 10

# Commands imaplib 3.11 does not know.
imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))
imaplib.Commands.setdefault("IDLE", ("AUTH", "SELECTED"))

CHECKS = 0


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def ok(res, what):
    typ, data = res
    check(typ == "OK", f"{what}: {typ} {data}")
    return data


def connect(login=True, user="alice", pw="pw"):
    m = imaplib.IMAP4(HOST, PORT, timeout=TIMEOUT)
    if login:
        ok(m.login(user, pw), "login")
    return m


NESTED = (
    b"From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <jorg@example.org>\r\n"
    b"To: \"Bob, Jr.\" <bob@example.com>, carol@example.com\r\n"
    b"Cc: Team: dave@example.net;\r\n"
    b"Subject: =?UTF-8?B?UmFwcG9ydCDDqXTDqQ==?=\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <msg1@example.org>\r\n"
    b"In-Reply-To: <prev@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    b"\r\n"
    b"This is a multi-part message in MIME format.\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Bonjour, voil\xc3\xa0 l'\xc3\xa9t\xc3\xa9.\r\n"
    b"Ligne deux.\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>Bonjour, voil=C3=A0</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/pdf; name=\"report.pdf\"\r\n"
    b"Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-ID: <pdf1@example.org>\r\n"
    b"Content-Description: The report\r\n"
    b"Content-Language: fr\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@example.org\r\n"
    b"Subject: forwarded\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"inner text\r\n"
    b"--outer--\r\n"
)

ENVELOPE = (
    b'ENVELOPE ("Mon, 7 Feb 1994 21:52:25 -0800" "=?UTF-8?B?UmFwcG9ydCDDqXTDqQ==?=" '
    b'(("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "jorg" "example.org")) '
    b'(("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "jorg" "example.org")) '
    b'(("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "jorg" "example.org")) '
    b'(("Bob, Jr." NIL "bob" "example.com")(NIL NIL "carol" "example.com")) '
    b'((NIL NIL "Team" NIL)(NIL NIL "dave" "example.net")(NIL NIL NIL NIL)) NIL '
    b'"<prev@example.org>" "<msg1@example.org>")'
)

BODYSTRUCTURE = (
    b'BODYSTRUCTURE ((("TEXT" "plain" ("charset" "utf-8") NIL NIL "8bit" 37 2 NIL NIL NIL NIL)'
    b'("TEXT" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 26 1 NIL NIL NIL NIL) '
    b'"alternative" ("boundary" "inner") NIL NIL NIL)'
    b'("application" "pdf" ("name" "report.pdf") "<pdf1@example.org>" "The report" "base64" 12 '
    b'NIL ("attachment" ("filename" "report.pdf")) ("fr") NIL)'
    b'("MESSAGE" "RFC822" NIL NIL NIL "7bit" 83 (NIL "forwarded" '
    b'((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) '
    b'((NIL NIL "inner" "example.org")) NIL NIL NIL NIL NIL) '
    b'("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1 NIL NIL NIL NIL) 5 NIL NIL NIL NIL) '
    b'"mixed" ("boundary" "outer") NIL NIL NIL)'
)

BODY = (
    b'BODY ((("TEXT" "plain" ("charset" "utf-8") NIL NIL "8bit" 37 2)'
    b'("TEXT" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 26 1) "alternative")'
    b'("application" "pdf" ("name" "report.pdf") "<pdf1@example.org>" "The report" "base64" 12)'
    b'("MESSAGE" "RFC822" NIL NIL NIL "7bit" 83 (NIL "forwarded" '
    b'((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) '
    b'((NIL NIL "inner" "example.org")) NIL NIL NIL NIL NIL) '
    b'("TEXT" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1) 5) "mixed")'
)

SIMPLE = (
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hello world\r\n"
    b"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\nJust a line.\r\n"
)

SPAM = (
    b"From: x@example.net\r\nTo: t@example.com\r\nCc: cc@example.com\r\n"
    b"Bcc: hidden@example.com\r\nSubject: spam\r\nDate: Wed, 2 Jan 2019 00:00:00 +0000\r\n"
    b"\r\nBuy now\r\n"
)


def literal_of(data):
    """The bytes of the first literal in a FETCH response."""
    for part in data:
        if isinstance(part, tuple):
            return part[1]
    raise SystemExit(f"FAILED: no literal in {data}")


def meta(data):
    """The FETCH response's non-literal text."""
    out = b""
    for part in data:
        out += part[0] if isinstance(part, tuple) else part
    return out


def test_connection_and_auth():
    m = connect(login=False)
    caps = m.capabilities
    for c in ("IMAP4REV1", "AUTH=PLAIN", "SASL-IR", "LITERAL+", "IDLE", "ID", "ENABLE"):
        check(c in caps, f"pre-auth capability {c} in {caps}")
    check("IMAP4REV2" in caps, "IMAP4rev2 advertised beside IMAP4rev1")
    ok(m.noop(), "noop")
    typ, _ = m._simple_command("ID", '("name" "imaplib")')
    check(typ == "OK", "ID")
    check(m.untagged_responses.pop("ID")[0].startswith(b'("name" "Aerogramme"'), "ID response")
    try:
        m.login("alice", "wrong")
        check(False, "wrong password accepted")
    except imaplib.IMAP4.error as e:
        check("AUTHENTICATIONFAILED" in str(e), f"AUTHENTICATIONFAILED in {e}")
    ok(m.authenticate("PLAIN", lambda _: b"\0alice\0pw"), "AUTHENTICATE PLAIN")
    typ, data = m.capability()
    for c in ("NAMESPACE", "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "SPECIAL-USE",
              "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE", "UNSELECT", "CREATE-SPECIAL-USE"):
        check(c.encode() in data[0], f"capability {c}")
    check(m.logout()[0] == "BYE", "logout")
    # SASL-IR.
    m = connect(login=False)
    ir = base64.b64encode(b"\0alice\0pw").decode()
    ok(m._simple_command("AUTHENTICATE", "PLAIN", ir), "AUTHENTICATE with SASL-IR")
    m.state = "AUTH"
    data = ok(m.namespace(), "NAMESPACE")
    check(data == [b'(("" "/")) NIL NIL'], f"NAMESPACE value: {data}")
    m.logout()


def test_mailboxes():
    m = connect()
    ok(m.create("Archive"), "create")
    ok(m.create("Work/Projects"), "create nested")
    ok(m._simple_command("CREATE", "Trash", "(USE (\\Trash))"), "CREATE USE")
    check(m.create("Archive")[0] == "NO", "create existing")
    ok(m.create("&AOk-t&AOk-"), "create modified UTF-7")
    typ, data = m.list()
    ok((typ, data), "list")
    check(b'(\\HasNoChildren) "/" INBOX' in data, f"INBOX listed: {data}")
    check(b'(\\Noselect \\HasChildren) "/" Work' in data, "virtual parent")
    check(b'(\\Trash \\HasNoChildren) "/" Trash' in data, "special-use")
    check(b'(\\HasNoChildren) "/" &AOk-t&AOk-' in data, "UTF-7 name")
    typ, data = m.list('""', "%")
    check(len(data) == 5, f"LIST % gives 5: {data}")
    ok(m.subscribe("Archive"), "subscribe")
    ok(m.subscribe("Work/Projects"), "subscribe nested")
    typ, data = m.lsub()
    check(data == [b'() "/" Archive', b'() "/" Work/Projects'], f"lsub: {data}")
    ok(m.unsubscribe("Work/Projects"), "unsubscribe")
    typ, data = m._simple_command("LIST", "(SUBSCRIBED)", '""', "*", "RETURN", "(CHILDREN STATUS (MESSAGES UIDNEXT))")
    check(typ == "OK", "LIST-EXTENDED")
    lists = m.untagged_responses.pop("LIST")
    statuses = m.untagged_responses.pop("STATUS")
    check(lists == [b'(\\Subscribed \\HasNoChildren) "/" Archive'], f"LIST (SUBSCRIBED): {lists}")
    check(statuses == [b"Archive (MESSAGES 0 UIDNEXT 1)"], f"LIST-STATUS: {statuses}")
    typ, _ = m._simple_command("LIST", "(SPECIAL-USE)", '""', "*")
    check(m.untagged_responses.pop("LIST") == [b'(\\Trash \\HasNoChildren) "/" Trash'], "LIST (SPECIAL-USE)")
    ok(m.rename("Work", "Job"), "rename with children")
    typ, data = m.list('""', "Job/*")
    check(data == [b'(\\HasNoChildren) "/" Job/Projects'], f"children renamed: {data}")
    ok(m.delete("&AOk-t&AOk-"), "delete")
    check(m.delete("INBOX")[0] == "NO", "delete INBOX refused")
    check(m.delete("Nope")[0] == "NO", "delete missing")
    m.logout()


def test_messages():
    m = connect()
    typ, data = m.append("INBOX", "(\\Flagged $Work)", '"17-May-2020 10:00:00 +0000"', NESTED)
    check(typ == "OK" and b"APPENDUID" in data[0], f"APPEND: {data}")
    ok(m.append("INBOX", "(\\Seen)", '"01-Jul-2003 10:52:37 +0200"', SIMPLE), "append 2")
    ok(m.append("INBOX", "(\\Deleted \\Answered \\Draft $Junk)", '"02-Jan-2019 00:00:00 +0000"', SPAM), "append 3")
    typ, data = m.select("INBOX")
    check(data == [b"3"], f"SELECT EXISTS: {data}")
    check(m.untagged_responses.get("FLAGS") == [b"(\\Seen \\Answered \\Flagged \\Deleted \\Draft $Junk $Work)"],
          f"FLAGS: {m.untagged_responses.get('FLAGS')}")
    check(m.untagged_responses.get("UIDNEXT") == [b"4"], "UIDNEXT")

    data = ok(m.fetch("1", "(ENVELOPE)"), "fetch envelope")
    check(data == [b"1 (" + ENVELOPE + b")"], f"ENVELOPE: {data}")
    data = ok(m.fetch("1", "(BODYSTRUCTURE)"), "fetch bodystructure")
    check(data == [b"1 (" + BODYSTRUCTURE + b")"], f"BODYSTRUCTURE: {data}")
    data = ok(m.fetch("1", "(BODY)"), "fetch body")
    check(data == [b"1 (" + BODY + b")"], f"BODY: {data}")
    data = ok(m.fetch("1", "(UID FLAGS INTERNALDATE RFC822.SIZE)"), "fetch meta")
    check(data == [b'1 (UID 1 FLAGS (\\Flagged $Work) INTERNALDATE "17-May-2020 10:00:00 +0000" RFC822.SIZE %d)' % len(NESTED)],
          f"meta: {data}")
    sections = {
        "BODY.PEEK[]": NESTED,
        "BODY.PEEK[1.1]": "Bonjour, voilà l'été.\r\nLigne deux.".encode(),
        "BODY.PEEK[1.2]": b"<p>Bonjour, voil=C3=A0</p>",
        "BODY.PEEK[1.2.MIME]": b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
        "BODY.PEEK[2]": b"JVBERi0xLjQK",
        "BODY.PEEK[3]": b"From: inner@example.org\r\nSubject: forwarded\r\nContent-Type: text/plain\r\n\r\ninner text",
        "BODY.PEEK[3.HEADER]": b"From: inner@example.org\r\nSubject: forwarded\r\nContent-Type: text/plain\r\n\r\n",
        "BODY.PEEK[3.TEXT]": b"inner text",
        "BODY.PEEK[3.1]": b"inner text",
        "BODY.PEEK[3.HEADER.FIELDS (Subject)]": b"Subject: forwarded\r\n\r\n",
        "BODY.PEEK[HEADER.FIELDS (Message-ID In-Reply-To)]": b"Message-ID: <msg1@example.org>\r\nIn-Reply-To: <prev@example.org>\r\n\r\n",
        "BODY.PEEK[HEADER]": NESTED[: NESTED.index(b"\r\n\r\n") + 4],
        "BODY.PEEK[TEXT]<0.10>": b"This is a ",
        "BODY.PEEK[9]": b"",
    }
    for item, want in sections.items():
        data = ok(m.fetch("1", f"({item})"), item)
        check(literal_of(data) == want, f"{item}: {literal_of(data)!r}")
    data = ok(m.fetch("2", "(BODY.PEEK[HEADER.FIELDS.NOT (From To Date)])"), "HEADER.FIELDS.NOT")
    check(literal_of(data) == b"Subject: hello world\r\n\r\n", f"HEADER.FIELDS.NOT: {data}")
    data = ok(m.fetch("2", "(RFC822.HEADER)"), "RFC822.HEADER")
    check(literal_of(data) == SIMPLE[: SIMPLE.index(b"\r\n\r\n") + 4], "RFC822.HEADER value")
    data = ok(m.fetch("2", "(RFC822.TEXT)"), "RFC822.TEXT")
    check(literal_of(data) == b"Just a line.\r\n", "RFC822.TEXT value")
    data = ok(m.fetch("3", "(RFC822)"), "RFC822")
    check(literal_of(data) == SPAM, "RFC822 value")
    check(b"FLAGS (\\Seen" in meta(data), f"RFC822 sets \\Seen: {meta(data)}")
    data = ok(m.fetch("1", "(FLAGS)"), "flags")
    check(b"\\Seen" not in data[0], "BODY.PEEK did not set \\Seen")
    data = ok(m.fetch("1", "(BODY[1.1])"), "BODY[1.1]")
    check(b"\\Seen" in meta(data), f"BODY[] sets \\Seen: {meta(data)}")
    ok(m.store("1,3", "-FLAGS.SILENT", "(\\Seen)"), "unseen again")
    data = ok(m.uid("FETCH", "1:*", "(FLAGS)"), "UID FETCH")
    check(data == [b"1 (UID 1 FLAGS (\\Flagged $Work))", b"2 (UID 2 FLAGS (\\Seen))",
                   b"3 (UID 3 FLAGS (\\Answered \\Deleted \\Draft $Junk))"], f"UID FETCH: {data}")
    data = ok(m.fetch("2", "FAST"), "FAST")
    check(data[0].startswith(b"2 (FLAGS (\\Seen) INTERNALDATE"), f"FAST: {data}")

    # SEARCH with every RFC 3501 key.
    small = len(NESTED)
    searches = [
        ("ALL", b"1 2 3"), ("ANSWERED", b"3"), ("BCC hidden", b"3"),
        ("BEFORE 1-Jan-2010", b"2"), ('BODY "just a line"', b"2"), ("CC cc@example", b"3"),
        ("DELETED", b"3"), ("DRAFT", b"3"), ("FLAGGED", b"1"), ("FROM jorg", b"1"),
        ("HEADER Message-ID msg1", b"1"), ("KEYWORD $Junk", b"3"), (f"LARGER {small - 1}", b"1"),
        ("NEW", b""), ("NOT DELETED", b"1 2"), ("OLD", b"1 2 3"), ("ON 17-May-2020", b"1"),
        ("OR FLAGGED DRAFT", b"1 3"), ("RECENT", b""), ("SEEN", b"2"),
        ("SENTBEFORE 1-Jan-2000", b"1"), ("SENTON 1-Jul-2003", b"2"), ("SENTSINCE 1-Jan-2019", b"3"),
        ("SINCE 1-Jan-2019", b"1 3"), (f"SMALLER {small}", b"2 3"), ("SUBJECT SPAM", b"3"),
        ('TEXT "buy now"', b"3"), ("TO t@example", b"3"), ("UID 2:3", b"2 3"),
        ("UNANSWERED", b"1 2"), ("UNDELETED", b"1 2"), ("UNDRAFT", b"1 2"), ("UNFLAGGED", b"2 3"),
        ("UNKEYWORD $Junk", b"1 2"), ("UNSEEN", b"1 3"), ("2:*", b"2 3"), ("(SEEN UNDELETED)", b"2"),
        ("1,3 NOT (OR SEEN FLAGGED)", b"3"),
    ]
    for crit, want in searches:
        data = ok(m.search(None, crit), f"SEARCH {crit}")
        check(data == [want], f"SEARCH {crit}: {data} (want {want})")
    data = ok(m.search("UTF-8", "SUBJECT", "SPAM"), "SEARCH CHARSET UTF-8")
    check(data == [b"3"], "charset search")
    m.literal = "jörg".encode()
    data = ok(m.search("UTF-8", "FROM"), "SEARCH literal UTF-8")
    check(data == [b"1"], f"UTF-8 literal search: {data}")
    check(m.search("KOI8-R", "ALL")[0] == "NO", "unknown charset")
    data = ok(m.uid("SEARCH", None, "UNSEEN"), "UID SEARCH")
    check(data == [b"1 3"], f"UID SEARCH: {data}")
    data = ok(m.search(None, "MODSEQ", "1"), "SEARCH MODSEQ")
    check(re.fullmatch(rb"1 2 3 \(MODSEQ \d+\)", data[0]) is not None, f"SEARCH MODSEQ: {data}")

    # STORE.
    data = ok(m.store("2", "+FLAGS", "(\\Answered)"), "STORE +FLAGS")
    check(re.fullmatch(rb"2 \(FLAGS \(\\Seen \\Answered\) MODSEQ \(\d+\)\)", data[0]) is not None, f"STORE: {data}")
    data = ok(m.store("2", "-FLAGS", "(\\Answered)"), "STORE -FLAGS")
    data = ok(m.uid("STORE", "2", "FLAGS", "(\\Seen $Label1)"), "UID STORE FLAGS")
    check(b"UID 2" in data[0] and b"$Label1" in data[0], f"UID STORE: {data}")
    typ, data = m._simple_command("STORE", "2", "(UNCHANGEDSINCE 1)", "+FLAGS", "(\\Flagged)")
    check(typ == "OK" and m.untagged_responses.pop("MODIFIED", None) == [b"2"], "UNCHANGEDSINCE fails")

    # COPY, MOVE, EXPUNGE.
    typ, data = m.copy("1:2", "Archive")
    check(typ == "OK" and re.search(rb"COPYUID \d+ 1:2 1:2", data[0]) is not None, f"COPYUID: {data}")
    check(m.copy("1", "Nope")[0] == "NO", "COPY to missing mailbox")
    typ, data = m.uid("MOVE", "2", "Archive")
    check(typ == "OK", f"UID MOVE: {data}")
    check(m.untagged_responses.pop("EXPUNGE", None) == [b"2"], "MOVE expunged message 2")
    ok(m.store("1", "+FLAGS.SILENT", "(\\Deleted)"), "delete 1")
    typ, data = m.uid("EXPUNGE", "3")
    check(typ == "OK" and m.untagged_responses.pop("EXPUNGE", None) == [b"2"], f"UID EXPUNGE: {data}")
    typ, data = m.expunge()
    check(data == [b"1"], f"EXPUNGE: {data}")
    ok(m.check(), "CHECK")
    ok(m.unselect(), "UNSELECT")
    typ, data = m.status("Archive", "(MESSAGES UIDNEXT UNSEEN SIZE HIGHESTMODSEQ)")
    check(re.fullmatch(rb'Archive \(MESSAGES 3 UIDNEXT 4 UNSEEN 1 SIZE \d+ HIGHESTMODSEQ \d+\)', data[0]) is not None,
          f"STATUS: {data}")
    typ, data = m.select("Archive", readonly=True)
    check(data == [b"3"], "EXAMINE")
    check(m.store("1", "+FLAGS", "(\\Seen)")[0] == "NO", "read-only STORE")
    ok(m.close(), "CLOSE")
    m.logout()


def read_line(m):
    return m.readline().decode(errors="replace")


def test_two_sessions_and_idle():
    a, b = connect(), connect(user="alice")
    ok(a.select("Archive"), "A select")
    ok(b.select("Archive"), "B select")
    ok(b.append("Archive", "", None, b"Subject: from B\r\n\r\nhi\r\n"), "B append")
    ok(b.store("1", "+FLAGS", "(\\Answered)"), "B store")
    a.untagged_responses.clear()
    ok(a.noop(), "A noop")
    check(a.untagged_responses.get("EXISTS") == [b"4"], f"A sees EXISTS: {a.untagged_responses}")
    check(any(b"\\Answered" in f for f in a.untagged_responses.get("FETCH", [])), "A sees FLAGS")
    # IDLE.
    tag = a._new_tag()
    a.send(tag + b" IDLE\r\n")
    check(read_line(a).startswith("+"), "IDLE continuation")
    ok(b.store("4", "+FLAGS", "(\\Deleted)"), "B delete")
    check(read_line(a) == "* 4 FETCH (FLAGS (\\Deleted))\r\n", "IDLE flags")
    ok(b.expunge(), "B expunge")
    check(read_line(a) == "* 4 EXPUNGE\r\n", "IDLE expunge")
    ok(b.append("Archive", "", None, b"Subject: again\r\n\r\nhi\r\n"), "B append 2")
    check(read_line(a) == "* 4 EXISTS\r\n", "IDLE exists")
    a.send(b"DONE\r\n")
    check(read_line(a).startswith(tag.decode() + " OK"), "IDLE done")
    # QRESYNC.
    ok(a.unselect(), "A unselect")
    ok(a.enable("QRESYNC"), "ENABLE QRESYNC")
    ok(a.select("Archive"), "A select again")
    ok(b.store("1", "-FLAGS", "(\\Answered)"), "B store 2")
    a.untagged_responses.clear()
    ok(a.noop(), "A noop 2")
    fetches = a.untagged_responses.get("FETCH", [])
    check(any(re.match(rb"1 \(UID 1 FLAGS \(.*\) MODSEQ \(\d+\)\)", f) for f in fetches), f"QRESYNC FETCH: {fetches}")
    typ, data = a.uid("FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE 1 VANISHED)")
    check(typ == "OK" and len(data) >= 3, f"CHANGEDSINCE VANISHED: {data}")
    check(a.untagged_responses.pop("VANISHED", None) is not None, "VANISHED (EARLIER)")
    a.logout()
    b.logout()


def test_bad_input():
    s = socket.create_connection((HOST, PORT), timeout=TIMEOUT)
    f = s.makefile("rb")
    check(f.readline().startswith(b"* OK"), "greeting")

    def send(data):
        s.sendall(data)
        return f.readline()

    check(send(b"garbage\r\n").startswith(b"* BAD"), "garbage")
    check(send(b"\x00\x01\xff\r\n").startswith(b"* BAD"), "binary garbage")
    check(send(b"a1 SELECT INBOX\r\n").startswith(b"a1 BAD"), "SELECT before login")
    check(send(b"a2 NOOP {5}\r\n").startswith(b"a2 BAD"), "literal where none is expected")
    check(send(b"a3 LOGIN alice pw\r\n").startswith(b"a3 OK"), "login after bad input")
    check(send(b"a4 FETCH 1 FLAGS\r\n").startswith(b"a4 BAD"), "FETCH without SELECT")
    s.sendall(b"a5 SELECT INBOX\r\n")
    while not (line := f.readline()).startswith(b"a5 "):
        pass
    check(line.startswith(b"a5 OK"), "select")
    check(send(b"a6 FETCH 0 FLAGS\r\n").startswith(b"a6 BAD"), "sequence number 0")
    check(send(b"a7 FETCH 99 FLAGS\r\n").startswith(b"a7 BAD"), "sequence number beyond EXISTS")
    check(send(b"a8 FETCH 1:x FLAGS\r\n").startswith(b"a8 BAD"), "invalid sequence set")
    check(send(b"a9 APPEND INBOX {999999999}\r\n").startswith(b"a9 BAD [TOOBIG]"), "oversized literal")
    big = b"b1 SEARCH SUBJECT " + b"x" * (1 << 20) + b"\r\n"
    check(send(big).startswith(b"b1 BAD"), "1 MB line")
    check(send(b"b2 NOOP\r\n").startswith(b"b2 OK"), "healthy after bad input")
    check(send(b"b3 LOGOUT\r\n").startswith(b"* BYE"), "logout")
    s.close()


def main():
    test_connection_and_auth()
    test_mailboxes()
    test_messages()
    test_two_sessions_and_idle()
    test_bad_input()
    print(f"imaplib: all {CHECKS} checks passed")


if __name__ == "__main__":
    main()
