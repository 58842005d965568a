"""Clients for the replication tests (several nodes, one user).

Usage:
  repl.py login IMAP_PORT USER PASSWORD SECONDS
      waits until USER can log in (its account has replicated here)
  repl.py deliver LMTP_PORT USER N CLIENTS PREFIX [SIZE]
      delivers N messages (with SIZE more bytes of text each) over LMTP from
      CLIENTS concurrent clients
  repl.py snapshot IMAP_PORT USER PASSWORD COUNT SECONDS
      waits until INBOX holds COUNT messages, then prints UIDVALIDITY and
      one line "UID MESSAGE-ID" per message, in UID order
  repl.py append IMAP_PORT_A IMAP_PORT_B USER PASSWORD N
      two clients, one per node, APPEND N messages each at the same time;
      prints one line "UID MESSAGE-ID" per APPENDUID answer and the
      UIDVALIDITY each client saw
  repl.py append1 IMAP_PORT USER PASSWORD N TAG
      one client APPENDs N messages; prints UIDVALIDITY, then "UID MESSAGE-ID"
      per APPENDUID answer in order
  repl.py body IMAP_PORT USER PASSWORD UID
      prints the message of UID (BODY.PEEK[]) as hex
  repl.py evicted IMAP_PORT USER PASSWORD SECONDS COMMAND...
      opens three sessions (one idling on INBOX, one with INBOX selected,
      one with none), runs COMMAND (which removes USER), then checks that
      each session ends with "BYE Account removed": the idling one
      unprompted, the others at their next command
  repl.py refused IMAP_PORT USER PASSWORD SECONDS
      waits until the server refuses the login (the user was removed)
  (IMAP_PORT and LMTP_PORT may be HOST:PORT)
"""
import imaplib
import re
import smtplib
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"


def hostport(arg):
    """PORT or HOST:PORT."""
    if ":" in arg:
        host, port = arg.rsplit(":", 1)
        return host, int(port)
    return HOST, int(arg)


def login(port, user, password, seconds):
    deadline = time.time() + seconds
    while True:
        try:
            m = imaplib.IMAP4(*hostport(port))
            m.login(user, password)
            return m
        except (imaplib.IMAP4.error, OSError) as e:
            if time.time() > deadline:
                raise SystemExit("cannot log in on %s after %ss: %r" % (port, seconds, e))
            time.sleep(0.2)


def deliver(port, user, n, clients, prefix, size=0):
    errors = []
    filler = ("lorem ipsum dolor sit amet consectetur adipiscing elit\r\n" * (size // 56 + 1))[:size]

    def client(k):
        try:
            lmtp = smtplib.LMTP(*hostport(port))
            for i in range(k, n, clients):
                msg = (
                    "From: r@example.org\r\nTo: %s@example.org\r\n"
                    "Message-ID: <%s-%d@example.org>\r\nSubject: %s %d\r\n\r\nbody %d\r\n%s"
                    % (user, prefix, i, prefix, i, i, filler)
                )
                lmtp.sendmail("r@example.org", ["%s@example.org" % user], msg.encode())
            lmtp.quit()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("delivery failed: %s" % errors[:3])
    print("delivered %d" % n)


def message_ids(m):
    typ, data = m.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    if typ != "OK":
        return None
    out = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
        mid = item[1].decode().strip().split(":", 1)[1].strip()
        out.append((uid, mid))
    return sorted(out)


def snapshot(port, user, password, count, seconds):
    deadline = time.time() + seconds
    m = login(port, user, password, seconds)
    while True:
        typ, data = m.select("INBOX")
        n = int(data[0])
        # Every message counted, and every body replicated here.
        ids = message_ids(m) if n >= count else None
        if ids is not None and len(ids) == n:
            break
        if time.time() > deadline:
            raise SystemExit("INBOX on %s holds %d of %d after %ss" % (port, n, count, seconds))
        m.close()
        time.sleep(0.3)
    uidvalidity = m.response("UIDVALIDITY")[1][0].decode()
    m.logout()
    print("UIDVALIDITY %s" % uidvalidity)
    for uid, mid in ids:
        print("%d %s" % (uid, mid))


def append(port_a, port_b, user, password, n):
    results = {}
    errors = []
    start = threading.Barrier(2)

    def client(port, tag):
        try:
            m = login(port, user, password, 60)
            typ, data = m.select("INBOX")
            validity = m.response("UIDVALIDITY")[1][0].decode()
            got = []
            start.wait()
            for i in range(n):
                mid = "<%s-%d@example.org>" % (tag, i)
                msg = "From: %s@example.org\r\nMessage-ID: %s\r\nSubject: %s %d\r\n\r\nbody\r\n" % (tag, mid, tag, i)
                typ, data = m.append("INBOX", None, None, msg.encode())
                code = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
                if typ != "OK" or not code:
                    raise RuntimeError("APPEND: %s %r" % (typ, data))
                if code.group(1).decode() != validity:
                    raise RuntimeError("UIDVALIDITY changed: %s" % data)
                got.append((int(code.group(2)), mid))
            m.logout()
            results[tag] = (validity, got)
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(p, t)) for p, t in ((port_a, "a"), (port_b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("append failed: %s" % errors)
    for tag in sorted(results):
        print("UIDVALIDITY %s" % results[tag][0])
    for uid, mid in sorted(results["a"][1] + results["b"][1]):
        print("%d %s" % (uid, mid))


def append_one(port, user, password, n, tag):
    """One client APPENDs N messages; prints UIDVALIDITY then "UID MESSAGE-ID"
    per APPENDUID answer, in the order given."""
    m = login(port, user, password, 60)
    m.select("INBOX")
    validity = m.response("UIDVALIDITY")[1][0].decode()
    print("UIDVALIDITY %s" % validity)
    for i in range(n):
        mid = "<%s-%d@example.org>" % (tag, i)
        msg = "From: %s@example.org\r\nMessage-ID: %s\r\nSubject: %s %d\r\n\r\nbody\r\n" % (tag, mid, tag, i)
        typ, data = m.append("INBOX", None, None, msg.encode())
        code = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
        if typ != "OK" or not code:
            raise SystemExit("APPEND: %s %r" % (typ, data))
        if code.group(1).decode() != validity:
            raise SystemExit("UIDVALIDITY changed: %r" % data)
        print("%s %s" % (code.group(2).decode(), mid))
    m.logout()


def body(port, user, password, uid):
    m = login(port, user, password, 30)
    m.select("INBOX")
    typ, data = m.uid("FETCH", uid, "(BODY.PEEK[])")
    print(data[0][1].hex())
    m.logout()


def refused(port, user, password, seconds):
    """Waits until the server refuses the login (the user was removed)."""
    deadline = time.time() + seconds
    while True:
        m = imaplib.IMAP4(*hostport(port))
        try:
            m.login(user, password)
            m.logout()
        except imaplib.IMAP4.error:
            print("refused")
            return
        if time.time() > deadline:
            raise SystemExit("%s still logs in on %s after %ss" % (user, port, seconds))
        time.sleep(0.2)


def evicted(port, user, password, seconds, command):
    """A removed user's open sessions end with BYE."""
    idler = login(port, user, password, 30)
    idler.select("INBOX")
    selected = login(port, user, password, 30)
    selected.select("INBOX")
    bare = login(port, user, password, 30)
    tag = idler._new_tag()
    idler.send(tag + b" IDLE\r\n")
    line = idler.readline()
    if not line.startswith(b"+"):
        raise SystemExit("IDLE: %r" % line)
    removed = subprocess.run(command, capture_output=True)
    if removed.returncode != 0:
        raise SystemExit("%s: %r" % (command, removed.stderr))
    # The idling session is told without asking.
    idler.sock.settimeout(seconds)
    while True:
        line = idler.readline()
        if not line:
            raise SystemExit("IDLE: connection closed without BYE")
        if line.startswith(b"* BYE"):
            if b"Account removed" not in line:
                raise SystemExit("IDLE: %r" % line)
            break
    if idler.readline() != b"":
        raise SystemExit("IDLE: the connection stayed open after BYE")
    # The others at their next command (NOOP may come before the removal
    # reached this node when COMMAND ran on another one: poll).
    deadline = time.time() + seconds
    for name, m, ask in [("selected", selected, m_noop), ("bare", bare, m_list)]:
        while True:
            try:
                typ, data = ask(m)
            except imaplib.IMAP4.abort as e:
                if "Account removed" not in str(e):
                    raise SystemExit("%s: %r" % (name, e))
                break
            if time.time() > deadline:
                raise SystemExit("%s: still served after %ss: %s %r" % (name, seconds, typ, data))
            time.sleep(0.2)
    print("evicted")


def m_noop(m):
    return m.noop()


def m_list(m):
    return m.list()


cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "login":
    login(args[0], args[1], args[2], float(args[3])).logout()
elif cmd == "deliver":
    deliver(args[0], args[1], int(args[2]), int(args[3]), args[4], int(args[5]) if len(args) > 5 else 0)
elif cmd == "snapshot":
    snapshot(args[0], args[1], args[2], int(args[3]), float(args[4]))
elif cmd == "append":
    append(args[0], args[1], args[2], args[3], int(args[4]))
elif cmd == "append1":
    append_one(args[0], args[1], args[2], int(args[3]), args[4])
elif cmd == "body":
    body(args[0], args[1], args[2], args[3])
elif cmd == "evicted":
    evicted(args[0], args[1], args[2], float(args[3]), args[4:])
elif cmd == "refused":
    refused(args[0], args[1], args[2], float(args[3]))
else:
    raise SystemExit("unknown command %s" % cmd)
