"""IMAP extensions against a real node: ESEARCH (RFC 4731), LIST-EXTENDED's
CHILDINFO (RFC 5258) and UTF8=ACCEPT (RFC 6855).
Usage: imap_ext.py IMAP_PORT USER PASSWORD"""
import imaplib
import re
import socket
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def connect():
    m = imaplib.IMAP4("127.0.0.1", port)
    assert m.login(user, password)[0] == "OK"
    return m


def ok(r):
    typ, data = r
    assert typ == "OK", (typ, data)
    return data


def cmd(m, name, *args):
    """Runs a command; returns (status, untagged lines as bytes, tag)."""
    tag = m._new_tag()
    line = b" ".join([tag, name.encode()] + [a if isinstance(a, bytes) else a.encode() for a in args])
    m.send(line + b"\r\n")
    lines = []
    while True:
        l = m._get_line()
        if l.startswith(tag + b" "):
            return l[len(tag) + 1:].split(b" ")[0].decode(), lines, tag.decode()
        lines.append(l)


def esearch(m, *args):
    st, lines, tag = cmd(m, *args)
    assert st == "OK", (args, st, lines)
    es = [l for l in lines if l.startswith(b"* ESEARCH")]
    assert len(es) == 1, (args, lines)
    assert not any(l.startswith(b"* SEARCH") for l in lines), lines
    prefix = '* ESEARCH (TAG "%s")' % tag
    text = es[0].decode()
    assert text.startswith(prefix), (text, tag)
    return text[len(prefix):].strip()


m = connect()
caps = ok(m.capability())[0].decode().upper().split()
for c in ["ESEARCH", "UTF8=ACCEPT", "LIST-EXTENDED"]:
    assert c in caps, (c, caps)

# ---- ESEARCH
ok(m.create("es"))
for i in range(1, 6):
    msg = "From: a@example.org\r\nSubject: es %d\r\n\r\nbody %d\r\n" % (i, i)
    ok(m.append("es", "(\\Seen)" if i in (2, 4) else None, None, msg.encode()))
ok(m.select("es"))
assert esearch(m, "UID", "SEARCH", "RETURN", "(MIN MAX COUNT ALL)", "ALL") == "UID MIN 1 MAX 5 COUNT 5 ALL 1:5"
assert esearch(m, "SEARCH", "RETURN", "(MIN)", "SEEN") == "MIN 2"
assert esearch(m, "SEARCH", "RETURN", "(MAX COUNT)", "UNSEEN") == "MAX 5 COUNT 3"
assert esearch(m, "SEARCH", "RETURN", "()", "SEEN") == "ALL 2,4"
assert esearch(m, "SEARCH", "RETURN", "(COUNT MIN MAX ALL)", "SUBJECT", '"no such"') == "COUNT 0"
# After an expunge, sequence numbers and UIDs differ.
ok(m.store("3", "+FLAGS", "(\\Deleted)"))
ok(m.expunge())
assert esearch(m, "SEARCH", "RETURN", "(ALL)", "ALL") == "ALL 1:4"
assert esearch(m, "UID", "SEARCH", "RETURN", "(ALL COUNT)", "ALL") == "UID COUNT 4 ALL 1:2,4:5"
# Lowercase keywords; the plain SEARCH is unchanged.
assert esearch(m, "uid", "search", "return", "(min)", "unseen") == "UID MIN 1"
st, lines, _ = cmd(m, "SEARCH", "SEEN")
assert st == "OK" and b"* SEARCH 2 3" in lines, lines
# A bad option or missing criteria are BAD (SAVE is SEARCHRES: imap_rev2.py).
for args in [("SEARCH", "RETURN", "(FIRST)", "ALL"), ("SEARCH", "RETURN", "(MIN)")]:
    st, lines, _ = cmd(m, *args)
    assert st == "BAD", (args, st, lines)
# ESEARCH outside the selected state is refused like SEARCH.
ok(m.close())
st, _, _ = cmd(m, "SEARCH", "RETURN", "(MIN)", "ALL")
assert st == "BAD", st

# ---- LIST-EXTENDED: CHILDINFO with RECURSIVEMATCH
for name in ["Lists", "Lists/rust", "Lists/py", "Solo"]:
    ok(m.create(name))
for name in ["Lists", "Lists/rust", "Lists/py", "Solo"]:
    cmd(m, "UNSUBSCRIBE", name)
ok(m.subscribe("Lists/rust"))
ok(m.subscribe("Solo"))


def listing(*args):
    st, lines, _ = cmd(m, "LIST", *args)
    assert st == "OK", (args, st, lines)
    return [l.decode() for l in lines if l.startswith(b"* LIST")]


got = listing("(SUBSCRIBED RECURSIVEMATCH)", '""', '"%"')
lists = [l for l in got if '"Lists"' in l or " Lists " in l]
assert len(lists) == 1, got
assert lists[0].endswith('("CHILDINFO" ("SUBSCRIBED"))'), lists
assert "\\Subscribed" not in lists[0], lists
solo = [l for l in got if "Solo" in l]
assert len(solo) == 1 and "\\Subscribed" in solo[0] and "CHILDINFO" not in solo[0], got
assert not any("CHILDINFO" in l for l in got if "Lists" not in l), got
# Without RECURSIVEMATCH: no parent, no CHILDINFO.
got = listing("(SUBSCRIBED)", '""', '"%"')
assert not any("Lists" in l for l in got) and not any("CHILDINFO" in l for l in got), got
# With "*": the subscribed child itself, and the parent with CHILDINFO.
got = listing("(SUBSCRIBED RECURSIVEMATCH)", '""', '"*"')
assert any("Lists/rust" in l and "\\Subscribed" in l for l in got), got
assert not any("Lists/py" in l for l in got), got
assert any(l.endswith('("CHILDINFO" ("SUBSCRIBED"))') and "rust" not in l for l in got), got
# RECURSIVEMATCH alone is invalid (RFC 5258 §3).
st, _, _ = cmd(m, "LIST", "(RECURSIVEMATCH)", '""', '"%"')
assert st == "BAD", st
m.logout()

# ---- UTF8=ACCEPT
# Before ENABLE: modified UTF-7 names, as in IMAP4rev1.
m = connect()
ok(m.create("Caf&AOk-"))
names = b" ".join(ok(m.list()))
assert b"Caf&AOk-" in names and "Café".encode() not in names, names
# APPEND's UTF8 data item needs ENABLE first.
st, _, _ = cmd(m, "APPEND", "INBOX", "UTF8", "(~{3+}\r\nabc)")
assert st == "BAD", st
st, lines, _ = cmd(m, "ENABLE", "UTF8=ACCEPT")
assert st == "OK" and b"* ENABLED UTF8=ACCEPT" in lines, lines
m._mode_utf8()  # what imaplib's enable() does after this answer
# After ENABLE: names are UTF-8 both ways.
names = b" ".join(ok(m.list()))
assert '"Café"'.encode() in names and b"&AOk-" not in names, names
ok(m._simple_command("CREATE", '"Ünïcödé/Straße"'))
names = b" ".join(ok(m.list('""', '"Ünïcödé*"')))
assert '"Ünïcödé/Straße"'.encode() in names, names
ok(m.select('"Café"'))
# APPEND with the UTF8 data item and a literal8, synchronizing: the server
# asks for the literal, takes it, and stores the UTF-8 header unchanged.
body = ("From: Zoë <zoe@example.org>\r\nSubject: Grüße aus Köln\r\n\r\nÇa va?\r\n").encode()
tag = m._new_tag()
m.send(tag + (' APPEND "Café" UTF8 (~{%d}\r\n' % len(body)).encode("utf-8"))
cont = m._get_line()
assert cont.startswith(b"+"), cont
m.send(body + b")\r\n")
while True:
    l = m._get_line()
    if l.startswith(tag):
        break
assert l.startswith(tag + b" OK") and b"APPENDUID" in l, l
ok(m.select('"Café"'))
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
assert typ == "OK" and "Grüße aus Köln".encode() in data[0][1], data
typ, data = m.search(None, "SUBJECT", '"Köln"'.encode())
assert typ == "OK" and data[0].split() == [b"1"], data
m.logout()
# A session that did not enable it still sees modified UTF-7.
m = connect()
names = b" ".join(ok(m.list()))
assert b"&ANw-n&AO8-c&APY-d&AOk-/Stra&AN8-e" in names and b"Caf&AOk-" in names, names
m.logout()
print("extensions ok")
