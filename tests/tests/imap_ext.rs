//! IMAP extensions end to end: ESEARCH, LIST-EXTENDED's CHILDINFO and
//! UTF8=ACCEPT, with Python's imaplib against a real node.

use aerogramme_tests::Node;

#[test]
fn esearch_childinfo_and_utf8_accept() {
    let node = Node::start();
    node.add_user("alice", "alice-pw");
    let out = node.python(
        "imap_ext.py",
        &[&node.imap.port().to_string(), "alice", "alice-pw"],
    );
    assert!(out.contains("extensions ok"), "{out}");
}
