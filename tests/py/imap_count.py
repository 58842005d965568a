"""Prints the INBOX message count and how many are \\Flagged."""
import imaplib
import sys

m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login(sys.argv[2], sys.argv[3])
typ, data = m.select("INBOX")
n = int(data[0])
typ, flagged = m.search(None, "FLAGGED")
print("messages=%d flagged=%d" % (n, len(flagged[0].split())))
m.logout()
