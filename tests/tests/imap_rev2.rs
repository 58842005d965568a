//! IMAP4rev2 (RFC 9051), SEARCHRES, BINARY and MULTIAPPEND end to end, with
//! Python's imaplib against a real node (`tests/py/imap_rev2.py`).

use aerogramme_tests::Node;

#[test]
fn imap4rev2_searchres_binary_multiappend() {
    let node = Node::start();
    node.add_user("alice", "alice-pw");
    let out = node.python(
        "imap_rev2.py",
        &[&node.imap.port().to_string(), "alice", "alice-pw"],
    );
    assert!(out.contains("imap4rev2 ok"), "{out}");
}
