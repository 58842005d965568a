"""Delivers N messages over LMTP from C concurrent clients, while no IMAP
session is open, then logs in and checks that INBOX holds each exactly once.
Usage: lmtp_flood.py IMAP_PORT LMTP_PORT USER PASSWORD N C"""
import imaplib
import re
import smtplib
import sys
import threading

iport, lport, user, password, n, c = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
errors = []


def client(k):
    try:
        lmtp = smtplib.LMTP("127.0.0.1", lport)
        lmtp.ehlo("flood.example.org")
        for i in range(k, n, c):
            msg = "From: f@example.org\r\nTo: %s@example.org\r\nMessage-ID: <flood-%d@example.org>\r\nSubject: flood %d\r\n\r\nbody %d\r\n" % (user, i, i, i)
            lmtp.sendmail("f@example.org", ["%s@example.org" % user], msg.encode())
        lmtp.quit()
    except Exception as e:  # reported below
        errors.append(repr(e))


threads = [threading.Thread(target=client, args=(k,)) for k in range(c)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors

m = imaplib.IMAP4("127.0.0.1", iport)
m.login(user, password)
typ, data = m.select("INBOX")
count = int(data[0])
typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
ids = [re.search(rb"<flood-(\d+)@", part[1]).group(1) for part in data if isinstance(part, tuple)]
assert count == n, (count, n)
assert len(ids) == n and len(set(ids)) == n, (len(ids), len(set(ids)))
m.logout()
print("all %d delivered exactly once, read after login" % n)
