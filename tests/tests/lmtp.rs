//! LMTP delivery into a real node, and what it leaves on disk.

use aerogramme_tests::Node;

#[test]
fn lmtp_delivery_is_accepted_and_nothing_readable_reaches_the_disk() {
    let node = Node::start();
    node.add_user("alice", "alice-password");
    let marker = "m4rk3r-lmtp-q7";
    node.python(
        "lmtp_deliver.py",
        &[
            "127.0.0.1",
            &node.lmtp.port().to_string(),
            "alice@example.org",
            "nobody@example.org",
            marker,
        ],
    );
    // The same over the unix socket, with swaks (installed by .ci/run).
    {
        let sock = node.dir.path().join("lmtp.sock");
        let out = std::process::Command::new("swaks")
            .args([
                "--to",
                "alice@example.org",
                "--from",
                "x@example.org",
                "--protocol",
                "LMTP",
                "--socket",
            ])
            .arg(&sock)
            .args(["--header", &format!("Subject: swaks-{marker}")])
            .output()
            .expect("swaks is not installed: this test needs the Debian package `swaks`");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("250 2.0.0"), "{text}");
    }
    let mut node = node;
    node.stop();
    let needles = [
        format!("subject-{marker}"),
        format!("body-{marker}"),
        format!("sender-{marker}@example.org"),
        format!("swaks-{marker}"),
    ];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    node.assert_nothing_in_clear(&needles, &[]);
}

#[test]
fn thousand_messages_from_ten_clients_arrive_exactly_once_while_logged_out() {
    let node = Node::start();
    node.add_user("bob", "bob-pw");
    let out = node.python(
        "lmtp_flood.py",
        &[
            &node.imap.port().to_string(),
            &node.lmtp.port().to_string(),
            "bob",
            "bob-pw",
            "1000",
            "10",
        ],
    );
    assert!(out.contains("exactly once"), "{out}");
}
