"""Latency from LMTP 250 on one node to the IDLE notification on another.
Usage: idle_latency.py LMTP_ADDR IMAP_ADDR USER PASSWORD N BODIES
Delivers N messages one at a time; for each, the time from the 250 reply to
the "* K EXISTS" line of an IDLE session. BODIES is SIZE (text of about SIZE
bytes, the same words repeated), random:SIZE (SIZE bytes of base64 of random
bytes, as an attachment: nothing to compress) or files:DIR (the files of DIR
in name order, e.g. real mail, taken in turn). Prints
"p50_ms P99_MS MEAN_MS BYTES_DELIVERED"."""
import base64
import os
import re
import smtplib
import socket
import sys
import time

lmtp_addr, imap_addr, user, password, n, bodies = sys.argv[1:7]
n = int(n)


def hp(a):
    h, p = a.rsplit(":", 1)
    return h, int(p)


s = socket.create_connection(hp(imap_addr))
f = s.makefile("rb")
f.readline()


def cmd(tag, line):
    s.sendall(("%s %s\r\n" % (tag, line)).encode())
    while True:
        l = f.readline()
        if not l:
            raise SystemExit("IMAP connection closed")
        if l.startswith(tag.encode() + b" "):
            if b" OK" not in l:
                raise SystemExit("IMAP: %r" % l)
            return


cmd("a1", 'LOGIN "%s" "%s"' % (user, password))
cmd("a2", "SELECT INBOX")
s.sendall(b"a3 IDLE\r\n")
if not f.readline().startswith(b"+"):
    raise SystemExit("no IDLE continuation")

def header(i):
    return "From: b@example.org\r\nTo: %s@example.org\r\nMessage-ID: <lat-%d@example.org>\r\nSubject: latency %d\r\n\r\n" % (user, i, i)


if bodies.startswith("files:"):
    d = bodies[len("files:"):]
    files = [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))]

    def message(i):
        return files[i % len(files)]
elif bodies.startswith("random:"):
    size = int(bodies[len("random:"):])

    def message(i):
        b64 = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
        return header(i).encode() + b64
else:
    size = int(bodies)
    filler = ("lorem ipsum dolor sit amet consectetur adipiscing elit " * (size // 55 + 1))[:size]

    def message(i):
        return (header(i) + filler + "\r\n").encode()


lmtp = smtplib.LMTP(*hp(lmtp_addr))
lat = []
total = 0
for i in range(n):
    body = message(i)
    total += len(body)
    lmtp.sendmail("b@example.org", ["%s@example.org" % user], body)
    t0 = time.perf_counter()
    while True:
        l = f.readline()
        if not l:
            raise SystemExit("IMAP connection closed")
        if re.match(rb"\* \d+ EXISTS", l):
            break
    lat.append((time.perf_counter() - t0) * 1000)
lmtp.quit()
lat.sort()
print("%.2f %.2f %.2f %d" % (lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))], sum(lat) / len(lat), total))
