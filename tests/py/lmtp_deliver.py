"""Delivers one message with several recipients over LMTP and checks the
per-recipient replies. Usage: lmtp_deliver.py HOST PORT KNOWN UNKNOWN MARKER"""
import smtplib
import sys

host, port, known, unknown, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
msg = (
    "From: Sender <sender-%s@example.org>\r\n"
    "To: %s\r\n"
    "Subject: subject-%s\r\n"
    "Message-ID: <%s@example.org>\r\n"
    "\r\n"
    "body-%s\r\n" % (marker, known, marker, marker, marker)
)
lmtp = smtplib.LMTP(host, port)
lmtp.ehlo("tests.example.org")  # sends LHLO for LMTP
code, _ = lmtp.mail("sender-%s@example.org" % marker)
assert code == 250, code
code, resp = lmtp.rcpt(known)
assert code == 250, (code, resp)
code, resp = lmtp.rcpt(unknown)
assert code == 550 and b"5.1.1" in resp, (code, resp)
code, resp = lmtp.data(msg.encode())
# smtplib returns the first reply; LMTP sends one per accepted recipient.
assert code == 250, (code, resp)
lmtp.quit()
print("delivered")
