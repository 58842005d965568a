"""Deletes and expunges the first message of INBOX."""
import imaplib
import sys

m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login(sys.argv[2], sys.argv[3])
m.select("INBOX")
assert m.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
assert m.expunge()[0] == "OK"
m.logout()
