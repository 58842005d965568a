#!/usr/bin/env python3
"""LMTP conversation with Python's smtplib.LMTP, run by node/tests/lmtp.rs.

Usage: lmtp_client.py --host 127.0.0.1 --port N
       lmtp_client.py --socket /path/to/lmtp.sock

Prints one JSON object with every reply seen and the message sent (hex),
so the Rust side can check the replies and what the backend stored.

smtplib.LMTP.data() reads only the first reply after the data; RFC 2033
sends one per accepted recipient, so the others are read with getreply().
"""

import argparse
import json
import smtplib
import sys

MESSAGE = (
    "From: Sender <sender@remote.test>\r\n"
    "To: alice@example.org, bob+lists@example.org\r\n"
    "Subject: =?utf-8?q?caf=C3=A9?= over LMTP\r\n"
    "Message-ID: <smtplib-1@remote.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Caf\u00e9 cr\u00e8me, 8-bit body.\r\n"
    ".\r\n"
    "..two dots\r\n"
    ".leading dot\r\n"
    "trailing dot.\r\n"
    "\r\n"
    "-- \r\n"
    "end\r\n"
).encode("utf-8")


def reply(pair):
    code, msg = pair
    return [code, msg.decode("utf-8", "replace")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--socket")
    ap.add_argument("--max-size", type=int, required=True)
    args = ap.parse_args()

    if args.socket:
        c = smtplib.LMTP(args.socket, timeout=20)
    else:
        c = smtplib.LMTP(args.host, args.port, timeout=20)
    out = {"message_hex": MESSAGE.hex()}

    code, _ = c.ehlo("client.test")  # LMTP: sends LHLO
    out["lhlo"] = code
    out["features"] = sorted(c.esmtp_features.keys())
    out["size"] = c.esmtp_features.get("size", "")

    # One transaction, several recipients: known, unknown (550), over
    # quota for the declared SIZE (552), known with a +detail.
    out["mail"] = reply(c.mail("sender@remote.test", ["BODY=8BITMIME", "SIZE=%d" % len(MESSAGE)]))
    rcpts = ["alice@example.org", "nobody@example.org", "carol@example.org", "bob+lists@example.org"]
    out["rcpt"] = [reply(c.rcpt(r)) for r in rcpts]
    accepted = sum(1 for r in out["rcpt"] if r[0] == 250)
    first = c.data(MESSAGE)
    out["data"] = [reply(first)] + [reply(c.getreply()) for _ in range(accepted - 1)]

    # Declared size over the limit: refused at MAIL.
    out["mail_too_big"] = reply(c.mail("sender@remote.test", ["SIZE=%d" % (args.max_size + 1)]))
    c.rset()

    # Undeclared size over the limit: one 552 per recipient after DATA.
    c.mail("sender@remote.test")
    c.rcpt("alice@example.org")
    c.rcpt("bob@example.org")
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (args.max_size // 1000 + 2)
    first = c.data(big)
    out["data_too_big"] = [reply(first), reply(c.getreply())]

    # The connection is still healthy.
    out["noop"] = reply(c.noop())
    out["vrfy"] = reply(c.verify("alice@example.org"))
    out["quit"] = reply(c.quit())
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
