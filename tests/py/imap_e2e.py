"""End-to-end checks against a real node. Usage:
  imap_e2e.py PHASE IMAP_PORT LMTP_PORT USER PASSWORD STATE_FILE
PHASE "write": a session that creates, appends, flags, copies, expunges, and
records what it saw in STATE_FILE; "verify": after a restart, the same
UIDVALIDITY, UIDs and flags; "deliver": LMTP delivery seen by an IDLE session
and read back byte-identical (plus trace headers); "two": two connections
see each other's changes (NOOP and IDLE); "summaries": ENVELOPE and
BODYSTRUCTURE read from the node's memory cache stay right across flag
changes, an expunge, a copy and a message delivered by LMTP; "reselect":
SELECT repeated on an unchanged mailbox (answered from what the core
published, without a round trip to it) gives the same answer, and sees
every change, rename and deletion made in between by another session."""
import imaplib
import json
import re
import smtplib
import socket
import sys
import time

phase, iport, lport, user, password, state_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]


def connect():
    m = imaplib.IMAP4("127.0.0.1", iport)
    typ, _ = m.login(user, password)
    assert typ == "OK"
    return m


def ok(r):
    typ, data = r
    assert typ == "OK", (typ, data)
    return data


def uidvalidity(m, box):
    data = ok(m.status(box, "(UIDVALIDITY UIDNEXT MESSAGES)"))
    return int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))


def uid_flags(m):
    data = ok(m.uid("FETCH", "1:*", "(FLAGS)"))
    out = {}
    for line in data:
        if not line:
            continue
        if isinstance(line, tuple):
            line = line[0]
        mm = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", line) or re.search(rb"FLAGS \(([^)]*)\) UID (\d+)", line)
        if mm and mm.re.pattern.startswith(b"UID"):
            out[int(mm.group(1))] = sorted(mm.group(2).decode().split())
        elif mm:
            out[int(mm.group(2))] = sorted(mm.group(1).decode().split())
    return out


MSG = (
    "From: Writer <writer@example.org>\r\n"
    "To: %s@example.org\r\n"
    "Subject: e2e message %d\r\n"
    "Message-ID: <e2e-%d@example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Body number %d.\r\n"
)

if phase == "write":
    m = connect()
    ok(m.create("Projects/Secret-m4rk3r-box"))
    ok(m.select("INBOX"))
    uids = []
    for i in range(5):
        data = ok(m.append("INBOX", "", None, (MSG % (user, i, i, i)).encode()))
        uids.append(int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1)))
    assert uids == sorted(uids) and len(set(uids)) == 5, uids
    ok(m.uid("STORE", "%d" % uids[0], "+FLAGS", "(\\Seen $m4rk3r-kw)"))
    ok(m.uid("STORE", "%d" % uids[1], "+FLAGS", "(\\Flagged)"))
    ok(m.uid("STORE", "%d" % uids[2], "+FLAGS", "(\\Deleted)"))
    data = ok(m.uid("COPY", "%d" % uids[3], "Projects/Secret-m4rk3r-box"))
    ok(m.expunge())
    flags = uid_flags(m)
    assert uids[2] not in flags and len(flags) == 4, flags
    assert "$m4rk3r-kw" in flags[uids[0]], flags
    state = {"uidvalidity": uidvalidity(m, "INBOX"), "flags": {str(k): v for k, v in flags.items()}}
    ok(m.select("Projects/Secret-m4rk3r-box"))
    state["copy"] = {str(k): v for k, v in uid_flags(m).items()}
    state["copy_validity"] = uidvalidity(m, "Projects/Secret-m4rk3r-box")
    m.logout()
    json.dump(state, open(state_file, "w"))
    print("written", state)

elif phase == "verify":
    state = json.load(open(state_file))
    m = connect()
    ok(m.select("INBOX"))
    assert uidvalidity(m, "INBOX") == state["uidvalidity"]
    flags = {str(k): v for k, v in uid_flags(m).items()}
    assert flags == state["flags"], (flags, state["flags"])
    ok(m.select("Projects/Secret-m4rk3r-box"))
    assert uidvalidity(m, "Projects/Secret-m4rk3r-box") == state["copy_validity"]
    assert {str(k): v for k, v in uid_flags(m).items()} == state["copy"]
    # New messages keep ascending after the restart.
    data = ok(m.append("INBOX", "", None, (MSG % (user, 99, 99, 99)).encode()))
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
    assert uid > max(int(u) for u in state["flags"]), uid
    m.logout()
    print("verified")

elif phase == "deliver":
    watcher = connect()
    ok(watcher.select("INBOX"))
    before = int(ok(watcher.select("INBOX"))[0])
    tag = watcher._new_tag().decode()
    watcher.send(("%s IDLE\r\n" % tag).encode())
    assert watcher.readline().startswith(b"+")
    body = (
        "From: Remote <remote@example.net>\r\n"
        "To: %s@example.org\r\n"
        "Subject: delivered\r\n"
        "\r\n"
        "Delivered body, line one.\r\n"
        ".leading dot line\r\n" % user
    )
    lmtp = smtplib.LMTP("127.0.0.1", lport)
    lmtp.ehlo("tests.example.org")
    ok_code, _ = lmtp.mail("remote@example.net")
    assert ok_code == 250
    code, _ = lmtp.rcpt("%s@example.org" % user)
    assert code == 250
    code, resp = lmtp.data(body.encode())
    assert code == 250, (code, resp)
    lmtp.quit()
    watcher.sock.settimeout(10)
    line = watcher.readline()
    assert re.match(rb"\* (\d+) EXISTS", line), line
    assert int(re.match(rb"\* (\d+) EXISTS", line).group(1)) == before + 1
    watcher.send(b"DONE\r\n")
    while not watcher.readline().startswith(tag.encode()):
        pass
    data = ok(watcher.fetch(str(before + 1), "(BODY.PEEK[])"))
    raw = data[0][1]
    expected_tail = body.encode()
    assert raw.endswith(expected_tail), raw
    head = raw[: len(raw) - len(expected_tail)]
    assert head.startswith(b"Return-Path: <remote@example.net>\r\n"), head
    assert b"Delivered-To: " in head, head
    watcher.logout()
    print("delivered and seen by IDLE")

elif phase == "two":
    a, b = connect(), connect()
    ok(a.select("INBOX"))
    n = int(ok(b.select("INBOX"))[0])
    ok(a.append("INBOX", "", None, (MSG % (user, 7, 7, 7)).encode()))
    typ, _ = b.noop()
    assert any(re.match(rb"%d" % (n + 1), x or b"") for x in b.untagged_responses.get("EXISTS", [])), b.untagged_responses
    ok(a.store(str(n + 1), "+FLAGS", "(\\Answered)"))
    b.noop()
    fetches = b.untagged_responses.get("FETCH", [])
    assert any(b"Answered" in (x if isinstance(x, bytes) else x[0]) for x in fetches), fetches
    a.logout()
    b.logout()

    # A STORE over many messages (one replica op and one event for the
    # batch) reaches the other session whole, with the MODSEQs the storing
    # session answered; .SILENT quiets only the storing session; a failed
    # UNCHANGEDSINCE changes nothing anywhere.
    def raw_session():
        s = socket.create_connection(("127.0.0.1", iport))
        f = s.makefile("rb")
        f.readline()
        n = [0]

        def cmd(c):
            n[0] += 1
            tag = b"r%d" % n[0]
            s.sendall(tag + b" " + c.encode() + b"\r\n")
            lines = []
            while True:
                line = f.readline()
                assert line, "connection closed"
                if line.startswith(tag + b" "):
                    assert b" OK" in line, (c, line)
                    return lines, line
                lines.append(line)

        cmd("LOGIN %s %s" % (user, password))
        return cmd

    def fetched(lines):
        out = {}
        for line in lines:
            m = re.match(rb"\* (\d+) FETCH \((.*)\)\r\n$", line)
            if m:
                flags = re.search(rb"FLAGS \(([^)]*)\)", m.group(2)).group(1).split()
                modseq = int(re.search(rb"MODSEQ \((\d+)\)", m.group(2)).group(1))
                assert int(m.group(1)) not in out, lines
                out[int(m.group(1))] = (sorted(flags), modseq)
        return out

    m = connect()
    ok(m.create("Many"))
    for i in range(30):
        ok(m.append("Many", "", None, (MSG % (user, i, i, i)).encode()))
    m.logout()
    ra, rb = raw_session(), raw_session()
    ra("SELECT Many (CONDSTORE)")
    rb("SELECT Many (CONDSTORE)")
    mine = fetched(ra("UID STORE 1:* +FLAGS (\\Seen)")[0])
    assert sorted(mine) == list(range(1, 31)), mine
    assert all(f == [b"\\Seen"] for f, _ in mine.values()), mine
    theirs = fetched(rb("NOOP")[0])
    assert theirs == mine, (theirs, mine)
    lines, _ = ra("STORE 1:* -FLAGS.SILENT (\\Seen)")
    assert fetched(lines) == {}, lines
    theirs = fetched(rb("NOOP")[0])
    assert sorted(theirs) == list(range(1, 31)), theirs
    assert all(f == [] and s > mine[k][1] for k, (f, s) in theirs.items()), theirs
    assert fetched(ra("FETCH 1:* (FLAGS MODSEQ)")[0]) == theirs
    low = min(s for _, s in theirs.values())
    lines, tagged = ra("STORE 1:* (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)" % (low - 1))
    assert b"MODIFIED 1:30" in tagged, tagged
    assert fetched(rb("NOOP")[0]) == {}
    print("two sessions see each other")

elif phase == "summaries":
    m = connect()
    ok(m.create("Cached"))
    ok(m.create("Copies"))
    for i in (1, 2, 3):
        ok(m.append("Cached", "", None, (MSG % (user, i, i, i)).encode()))
    ok(m.select("Cached"))

    def envelopes():
        out = {}
        for line in ok(m.uid("FETCH", "1:*", "(FLAGS ENVELOPE BODYSTRUCTURE)")):
            line = line[0] if isinstance(line, tuple) else line
            if not line:
                continue
            uid = int(re.search(rb"UID (\d+)", line).group(1))
            subject = re.search(rb'ENVELOPE \("?[^"]*"? "([^"]*)"', line).group(1).decode()
            flags = sorted(re.search(rb"FLAGS \(([^)]*)\)", line).group(1).decode().split())
            assert b'BODYSTRUCTURE ("TEXT" "plain" ("charset" "utf-8")' in line, line
            out[uid] = (subject, flags)
        return out

    first = envelopes()
    assert [s for s, _ in first.values()] == ["e2e message %d" % i for i in (1, 2, 3)], first
    # Read again (from memory now), after flag changes and an expunge.
    assert envelopes() == first
    uids = sorted(first)
    ok(m.uid("STORE", str(uids[0]), "+FLAGS", "(\\Flagged)"))
    ok(m.uid("STORE", str(uids[1]), "+FLAGS", "(\\Deleted)"))
    ok(m.expunge())
    after = envelopes()
    assert after == {
        uids[0]: ("e2e message 1", ["\\Flagged"]),
        uids[2]: ("e2e message 3", []),
    }, after
    # A copy shares the blob: the same envelope under another UID.
    ok(m.uid("COPY", str(uids[2]), "Copies"))
    ok(m.select("Copies"))
    assert [s for s, _ in envelopes().values()] == ["e2e message 3"]
    # Delivered sealed, summarized at its first read.
    lmtp = smtplib.LMTP("127.0.0.1", lport)
    lmtp.ehlo("tests.example.org")
    assert lmtp.mail("w@example.org")[0] == 250
    assert lmtp.rcpt("%s@example.org" % user)[0] == 250
    assert lmtp.data((MSG % (user, 4, 4, 4)).encode())[0] == 250
    lmtp.quit()
    # The delivery shows once the node has applied it (not a timing check:
    # a bound on the wait).
    for _ in range(100):
        if int(ok(m.select("INBOX"))[0]) > 0:
            break
        time.sleep(0.1)
    delivered = envelopes()
    assert "e2e message 4" in [s for s, _ in delivered.values()], delivered
    assert envelopes() == delivered
    m.logout()
    print("summaries stay right")

elif phase == "reselect":
    a, b = connect(), connect()

    def select(m, box):
        """SELECT's answer: EXISTS and the response codes, as text."""
        n = int(ok(m.select(box))[0])
        codes = {k: m.untagged_responses.get(k, [None])[-1]
                 for k in ("FLAGS", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")}
        return n, codes

    for i in (1, 2):
        ok(b.append("INBOX", "", None, (MSG % (user, i, i, i)).encode()))
    first = select(a, "INBOX")
    assert first[0] == 2 and first[1]["UNSEEN"] == b"1", first
    # Unchanged: the same answer, again and to another session.
    assert select(a, "INBOX") == first
    assert select(b, "INBOX") == first
    # A session selected from a published answer gets the events after it.
    ok(b.append("INBOX", "", None, (MSG % (user, 3, 3, 3)).encode()))
    a.noop()
    assert a.untagged_responses["EXISTS"][-1] == b"3", a.untagged_responses
    third = select(a, "INBOX")
    assert third[0] == 3 and third[1]["UIDNEXT"] == b"4", third
    # A flag change: first unseen, HIGHESTMODSEQ, a new keyword.
    ok(b.store("1", "+FLAGS", "(\\Seen m4rk3r-kw)"))
    flagged = select(a, "INBOX")
    assert flagged[1]["UNSEEN"] == b"2", flagged
    assert b"m4rk3r-kw" in flagged[1]["FLAGS"], flagged
    assert int(flagged[1]["HIGHESTMODSEQ"]) > int(third[1]["HIGHESTMODSEQ"]), (flagged, third)
    assert select(a, "INBOX") == flagged
    # An expunge.
    ok(b.store("2", "+FLAGS", "(\\Deleted)"))
    ok(b.expunge())
    assert select(a, "INBOX")[0] == 2
    # A name that comes to mean another mailbox, then none.
    ok(b.create("X"))
    ok(b.append("X", "", None, (MSG % (user, 4, 4, 4)).encode()))
    assert select(a, "X")[0] == 1
    assert select(a, "X")[0] == 1
    ok(b.rename("X", "Y"))
    ok(b.create("X"))
    assert select(a, "X")[0] == 0
    assert select(a, "Y")[0] == 1
    ok(b.select("INBOX"))
    ok(b.delete("Y"))
    typ, _ = a.select("Y")
    assert typ == "NO", typ
    a.logout()
    b.logout()
    print("reselect sees every change")
