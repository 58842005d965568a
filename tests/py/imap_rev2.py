"""IMAP4rev2 (RFC 9051) and what it brings beside IMAP4rev1, against a real
node: ENABLE IMAP4rev2 (no RECENT, ESEARCH answers, LIST and CLOSED at
SELECT, UTF-8 names), SEARCHRES (RFC 5182), BINARY (RFC 3516), and
MULTIAPPEND (RFC 3502). Exact checks of what the server sends.
Usage: imap_rev2.py IMAP_PORT USER PASSWORD"""
import imaplib
import re
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
LIT = re.compile(rb"~?\{(\d+)\}$")


def connect():
    m = imaplib.IMAP4("127.0.0.1", port)
    assert m.login(user, password)[0] == "OK"
    return m


def read_response(m, tag):
    """Untagged lines (literals inlined) up to the tagged one."""
    lines = []
    while True:
        l = m._get_line()
        while True:
            g = LIT.search(l)
            if not g:
                break
            l = l + b"\r\n" + m.read(int(g.group(1)))
            l = l + m._get_line()
        if l.startswith(tag + b" "):
            return l[len(tag) + 1:], lines
        lines.append(l)


def cmd(m, *args):
    """Runs a one-line command: (status, tagged text, untagged lines)."""
    tag = m._new_tag()
    line = b" ".join([tag] + [a if isinstance(a, bytes) else a.encode() for a in args])
    m.send(line + b"\r\n")
    text, lines = read_response(m, tag)
    return text.split(b" ")[0].decode(), text, lines


def literal_cmd(m, pieces):
    """A command with synchronizing literals: pieces alternate between text
    (ending in a literal announcement) and literal data; the last is text."""
    tag = m._new_tag()
    first = True
    for i, p in enumerate(pieces):
        if i % 2 == 0:
            m.send((tag + b" " if first else b"") + p)
            first = False
            if i + 1 < len(pieces):
                cont = m._get_line()
                if not cont.startswith(b"+"):
                    # refused: this is the tagged answer
                    assert cont.startswith(tag + b" "), cont
                    return cont[len(tag) + 1:].split(b" ")[0].decode(), cont, []
        else:
            m.send(p)
    text, lines = read_response(m, tag)
    return text.split(b" ")[0].decode(), text, lines


def ok(r):
    st, text, lines = r
    assert st == "OK", (st, text, lines)
    return lines


def esearch(lines, tag_text=None):
    es = [l for l in lines if l.startswith(b"* ESEARCH")]
    assert len(es) == 1 and not any(l.startswith(b"* SEARCH") for l in lines), lines
    return re.sub(rb'^\* ESEARCH \(TAG "[^"]*"\) ?', b"", es[0]).decode()


def status(m, box, items):
    lines = ok(cmd(m, "STATUS", box, "(%s)" % items))
    return lines[0].decode().split("(", 1)[1].rstrip(")")


# ---- capabilities
m = imaplib.IMAP4("127.0.0.1", port)
pre = m.capabilities
assert "IMAP4REV1" in pre and "IMAP4REV2" in pre, pre
assert m.login(user, password)[0] == "OK"
caps = ok(cmd(m, "CAPABILITY"))[0].decode().upper().split()
for c in ["IMAP4REV1", "IMAP4REV2", "SEARCHRES", "BINARY", "MULTIAPPEND", "ESEARCH",
          "LITERAL+", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT",
          "SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE", "CHILDREN", "SASL-IR"]:
    assert c in caps, (c, caps)
limit = int([c for c in caps if c.startswith("APPENDLIMIT=")][0].split("=")[1])

# ---- MULTIAPPEND (RFC 3502)
ok(cmd(m, "CREATE", "multi"))
msgs = [b"From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n",
        b"From: b@example.org\r\nSubject: two\r\n\r\nsecond\r\n",
        b"From: c@example.org\r\nSubject: three\r\n\r\nthird\r\n"]
st, text, _ = literal_cmd(m, [
    b"APPEND multi (\\Seen) {%d}\r\n" % len(msgs[0]), msgs[0],
    b' "02-Jan-2020 10:00:00 +0000" {%d}\r\n' % len(msgs[1]), msgs[1],
    b" (\\Flagged $Work) {%d}\r\n" % len(msgs[2]), msgs[2],
    b"\r\n"])
assert st == "OK", text
g = re.search(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", text)
assert g and g.group(2) == b"1:3", text
uidvalidity = int(g.group(1))
assert status(m, "multi", "MESSAGES UIDNEXT") == "MESSAGES 3 UIDNEXT 4"
# A second literal over APPENDLIMIT: BAD [TOOBIG], the first is not kept.
st, text, _ = literal_cmd(m, [
    b"APPEND multi {%d}\r\n" % len(msgs[0]), msgs[0],
    b" {%d}\r\n" % (limit + 1), b"never sent"])
assert st == "BAD" and b"TOOBIG" in text, text
# A bad flag in the second message: BAD, nothing kept.
st, text, _ = literal_cmd(m, [
    b"APPEND multi {%d}\r\n" % len(msgs[0]), msgs[0],
    b" (\\Bogus) {%d}\r\n" % len(msgs[1]), msgs[1], b"\r\n"])
assert st == "BAD", text
# A mailbox that does not exist: NO [TRYCREATE], nothing kept anywhere.
st, text, _ = literal_cmd(m, [
    b"APPEND nosuch {%d}\r\n" % len(msgs[0]), msgs[0],
    b" {%d}\r\n" % len(msgs[1]), msgs[1], b"\r\n"])
assert st == "NO" and b"TRYCREATE" in text, text
assert status(m, "multi", "MESSAGES") == "MESSAGES 3"
# Non-synchronizing literals (LITERAL+) in one send.
raw = b"APPEND multi {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(msgs[0]), msgs[0], len(msgs[1]), msgs[1])
tag = m._new_tag()
m.send(tag + b" " + raw)
text, _ = read_response(m, tag)
assert text.startswith(b"OK [APPENDUID %d 4:5]" % uidvalidity), text
ok(cmd(m, "SELECT", "multi"))
lines = ok(cmd(m, "FETCH", "1:5", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
assert len(lines) == 5, lines
assert b"FLAGS (\\Seen)" in lines[0] and b"Subject: one" in lines[0], lines[0]
assert b'"02-Jan-2020 10:00:00 +0000"' in lines[1] and b"Subject: two" in lines[1], lines[1]
assert b"FLAGS (\\Flagged $Work)" in lines[2] and b"Subject: three" in lines[2], lines[2]
assert b"Subject: one" in lines[3] and b"Subject: two" in lines[4], lines
# IMAP4rev1 SELECT still has RECENT (0) and the first unseen.
lines = ok(cmd(m, "SELECT", "multi"))
assert b"* 0 RECENT" in lines and any(b"[UNSEEN 2]" in l for l in lines), lines
ok(cmd(m, "STORE", "5", "+FLAGS.SILENT", "(\\Deleted)"))
ok(cmd(m, "EXPUNGE"))
ok(cmd(m, "STORE", "4", "+FLAGS.SILENT", "(\\Deleted)"))

# ---- ENABLE IMAP4rev2
lines = ok(cmd(m, "ENABLE", "IMAP4rev2"))
assert lines == [b"* ENABLED IMAP4rev2"], lines
lines = ok(cmd(m, "ENABLE", "IMAP4rev2"))
assert lines == [b"* ENABLED"], lines
st, text, lines = cmd(m, "SELECT", "multi")
assert st == "OK" and text.startswith(b"OK [READ-WRITE]"), text
assert lines[0] == b"* OK [CLOSED] Previous mailbox closed", lines
assert not any(b"RECENT" in l or b"UNSEEN" in l for l in lines), lines
assert b"* 4 EXISTS" in lines, lines
assert any(l.startswith(b"* LIST (") and l.endswith(b' "/" multi') for l in lines), lines
assert any(b"[UIDVALIDITY %d]" % uidvalidity in l for l in lines), lines
assert any(b"[UIDNEXT 6]" in l for l in lines), lines
assert any(b"[PERMANENTFLAGS" in l for l in lines), lines
# STATUS: DELETED and SIZE.
size = len(msgs[0]) * 2 + len(msgs[1]) + len(msgs[2])
assert status(m, "multi", "MESSAGES DELETED SIZE UNSEEN") == \
    "MESSAGES 4 DELETED 1 SIZE %d UNSEEN 3" % size
# SEARCH answers ESEARCH, with ALL, and nothing else when nothing matches.
assert esearch(ok(cmd(m, "SEARCH", "UNSEEN"))) == "ALL 2:4"
assert esearch(ok(cmd(m, "UID", "SEARCH", "UNSEEN"))) == "UID ALL 2:4"
assert esearch(ok(cmd(m, "SEARCH", "SUBJECT", "nothing-like-this"))) == ""
assert esearch(ok(cmd(m, "SEARCH", "RETURN", "(COUNT)", "ALL"))) == "COUNT 4"

# ---- SEARCHRES (RFC 5182)
# Nothing saved yet: `$` is a valid empty set.
assert ok(cmd(m, "FETCH", "$", "(FLAGS)")) == []
assert esearch(ok(cmd(m, "SEARCH", "$"))) == ""
assert esearch(ok(cmd(m, "SEARCH", "NOT", "$"))) == "ALL 1:4"
# SAVE alone: no ESEARCH.
assert ok(cmd(m, "SEARCH", "RETURN", "(SAVE)", "UNSEEN")) == []
lines = ok(cmd(m, "FETCH", "$", "(UID)"))
assert lines == [b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)", b"* 4 FETCH (UID 4)"], lines
lines = ok(cmd(m, "UID", "STORE", "$", "+FLAGS.SILENT", "(\\Answered)"))
assert lines == [], lines
assert esearch(ok(cmd(m, "SEARCH", "ANSWERED"))) == "ALL 2:4"
assert esearch(ok(cmd(m, "UID", "SEARCH", "$", "SUBJECT", "three"))) == "UID ALL 3"
assert esearch(ok(cmd(m, "SEARCH", "OR", "$", "SEEN"))) == "ALL 1:4"
# `$` in a quoted string is a string.
assert esearch(ok(cmd(m, "SEARCH", "SUBJECT", '"$"'))) == ""
# SAVE with MIN keeps only the first match; with an answer too.
assert esearch(ok(cmd(m, "SEARCH", "RETURN", "(SAVE MIN)", "UNSEEN"))) == "MIN 2"
assert ok(cmd(m, "FETCH", "$", "(UID)")) == [b"* 2 FETCH (UID 2)"]
# SAVE and `$` together: `$` is the previous result.
assert esearch(ok(cmd(m, "SEARCH", "RETURN", "(SAVE COUNT)", "NOT", "$"))) == "COUNT 3"
assert ok(cmd(m, "FETCH", "$", "(UID)")) == [
    b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)", b"* 4 FETCH (UID 4)"]
# COPY $ and MOVE $.
ok(cmd(m, "CREATE", "saved"))
st, text, _ = cmd(m, "UID", "COPY", "$", "saved")
assert st == "OK" and b"COPYUID" in text and b" 1,3:4 1,2:3]" in text, text
# Expunged messages leave the saved result.
ok(cmd(m, "STORE", "1", "+FLAGS.SILENT", "(\\Deleted)"))
lines = ok(cmd(m, "EXPUNGE"))
assert lines in ([b"* 4 EXPUNGE", b"* 1 EXPUNGE"], [b"* 1 EXPUNGE", b"* 3 EXPUNGE"]), lines
assert ok(cmd(m, "FETCH", "$", "(UID)")) == [b"* 2 FETCH (UID 3)"]
# A failed SEARCH with SAVE empties it.
st, text, _ = cmd(m, "SEARCH", "RETURN", "(SAVE)", "CHARSET", "KOI8-R", "ALL")
assert st == "NO" and b"BADCHARSET" in text, text
assert ok(cmd(m, "FETCH", "$", "(UID)")) == []
ok(cmd(m, "SEARCH", "RETURN", "(SAVE)", "ALL"))
st, text, _ = cmd(m, "SEARCH", "RETURN", "(SAVE)", "BOGUSKEY")
assert st == "BAD", text
assert ok(cmd(m, "FETCH", "$", "(UID)")) == []
# UNSELECT empties it; `$` outside the selected state is BAD.
ok(cmd(m, "SEARCH", "RETURN", "(SAVE)", "ALL"))
ok(cmd(m, "UNSELECT"))
st, _, _ = cmd(m, "FETCH", "$", "(UID)")
assert st == "BAD", st
st, _, _ = cmd(m, "SEARCH", "RETURN", "(SAVE)", "ALL")
assert st == "BAD", st
ok(cmd(m, "SELECT", "multi"))
assert ok(cmd(m, "FETCH", "$", "(UID)")) == []

# ---- BINARY (RFC 3516)
ok(cmd(m, "CREATE", "bin"))
mime = (b"From: z@example.org\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"caf=C3=A9 =\r\nau lait\r\n"
        b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"AAECA/8=\r\n"
        b"--XX\r\nContent-Type: application/x-thing\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
        b"begin 644 x\r\n"
        b"--XX--\r\n")
ok(literal_cmd(m, [b"APPEND bin {%d}\r\n" % len(mime), mime, b"\r\n"]))
# literal8 in APPEND: a message with NUL bytes, kept exactly.
nul = b"From: n@example.org\r\nSubject: nul\r\nContent-Transfer-Encoding: binary\r\n\r\na\x00b\x00c\r\n"
st, text, _ = literal_cmd(m, [b"APPEND bin ~{%d}\r\n" % len(nul), nul, b"\r\n"])
assert st == "OK" and b"APPENDUID" in text, text
ok(cmd(m, "SELECT", "bin"))
lines = ok(cmd(m, "FETCH", "1", "(BINARY.SIZE[1] BINARY.PEEK[1] BINARY.SIZE[2] BINARY.PEEK[2])"))
assert lines == [b"* 1 FETCH (BINARY.SIZE[1] 13 BINARY[1] ~{13}\r\n" + "café au lait".encode()
                 + b" BINARY.SIZE[2] 5 BINARY[2] ~{5}\r\n\x00\x01\x02\x03\xff)"], lines
lines = ok(cmd(m, "FETCH", "1", "(BINARY.PEEK[2]<1.3>)"))
assert lines == [b"* 1 FETCH (BINARY[2]<1> ~{3}\r\n\x01\x02\x03)"], lines
st, text, _ = cmd(m, "FETCH", "1", "(BINARY.PEEK[3])")
assert st == "NO" and b"[UNKNOWN-CTE]" in text, text
lines = ok(cmd(m, "FETCH", "2", "(BINARY.PEEK[] RFC822.SIZE)"))
assert lines == [b"* 2 FETCH (BINARY[] ~{%d}\r\n%s RFC822.SIZE %d)" % (len(nul), nul, len(nul))], lines
assert ok(cmd(m, "FETCH", "1", "(FLAGS)")) == [b"* 1 FETCH (FLAGS ())"]
lines = ok(cmd(m, "FETCH", "1", "(BINARY[1])"))
assert b"FLAGS (\\Seen)" in lines[0], lines

# ---- UTF-8 names once IMAP4rev2 is enabled
ok(cmd(m, "CREATE", '"Café rev2"'))
lines = ok(cmd(m, "LIST", '""', '"Caf*"'))
assert any('"Café rev2"'.encode() in l for l in lines), lines
assert not any(b"&AOk-" in l for l in lines), lines
m.logout()
# Another session, without IMAP4rev2: IMAP4rev1 behaviour and names.
m = connect()
lines = ok(cmd(m, "LIST", '""', '"Caf*"'))
assert any(b"Caf&AOk- rev2" in l for l in lines), lines
lines = ok(cmd(m, "SELECT", "multi"))
assert b"* 0 RECENT" in lines, lines
assert ok(cmd(m, "SEARCH", "ALL")) == [b"* SEARCH 1 2"]
m.logout()
print("imap4rev2 ok")
