"""Waits for messages relayed by Postfix to reach INBOX and checks them.
Usage: postfix_inbox.py IMAP_PORT USER PASSWORD SMTP_PORT MARKER...
If SMTP_PORT is not 0, first submits one more message to Postfix's smtpd
(subject "smtp_MARKER", dashes as underscores, for the first marker). Then waits (30 s at most) until
a message whose subject holds each marker is in INBOX, and checks that Postfix
relayed it: its Received header, the Return-Path and Delivered-To added at
delivery, and the body."""
import imaplib
import smtplib
import sys
import time

iport, user, password, sport = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
markers = sys.argv[5:]
rcpt = "%s@example.org" % user

if sport:
    # A marker that does not contain the others (SEARCH SUBJECT is a substring match).
    smtp_marker = "smtp_" + markers[0].replace("-", "_")
    s = smtplib.SMTP("127.0.0.1", sport)
    s.ehlo("client.example.net")
    body = (
        "From: Remote <remote@example.net>\r\nTo: %s\r\nSubject: %s\r\n\r\n"
        "smtp body %s\r\n" % (rcpt, smtp_marker, smtp_marker)
    )
    refused = s.sendmail("remote@example.net", [rcpt], body)
    assert not refused, refused
    s.quit()
    markers = markers + [smtp_marker]

m = imaplib.IMAP4("127.0.0.1", iport)
assert m.login(user, password)[0] == "OK"
deadline = time.time() + 30
found = {}
while True:
    typ, data = m.select("INBOX")
    assert typ == "OK", data
    for mk in markers:
        if mk in found:
            continue
        typ, data = m.uid("SEARCH", None, "SUBJECT", '"%s"' % mk)
        assert typ == "OK", data
        uids = data[0].split()
        if uids:
            found[mk] = uids
    if len(found) == len(markers) or time.time() > deadline:
        break
    time.sleep(0.2)
missing = [mk for mk in markers if mk not in found]
assert not missing, "not in INBOX after 30 s: %s" % missing
for mk, uids in found.items():
    assert len(uids) == 1, (mk, uids)
    typ, data = m.uid("FETCH", uids[0], "(BODY.PEEK[])")
    assert typ == "OK", data
    raw = data[0][1].decode("utf-8", "replace")
    head, _, body = raw.partition("\r\n\r\n")
    assert "Received: " in head and "mta.example.test (Postfix" in head, head
    assert "Delivered-To: %s" % rcpt in head, head
    assert "Return-Path: <" in head, head
    # Postfix added the Message-ID the sendmail copy did not carry.
    assert "Message-ID: <" in head or "Message-Id: <" in head, head
    assert mk in body, body
m.logout()
print("in INBOX exactly once: %s" % ", ".join(sorted(found)))
