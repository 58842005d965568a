//! IMAP against a real node: a full session, restart, delivery seen by IDLE,
//! two sessions, curl, and what reaches the disk.

use aerogramme_tests::Node;

fn e2e(node: &Node, phase: &str, state: &std::path::Path) -> String {
    node.python(
        "imap_e2e.py",
        &[
            phase,
            &node.imap.port().to_string(),
            &node.lmtp.port().to_string(),
            "alice",
            "alice-pw",
            state.to_str().expect("utf-8 path"),
        ],
    )
}

/// Runs one phase that keeps no state, on a node of its own.
fn phase_alone(phase: &str) {
    let node = Node::start();
    node.add_user("alice", "alice-pw");
    let state = node.dir.path().join("unused.json");
    e2e(&node, phase, &state);
}

#[test]
fn session_survives_restart_with_same_uids_and_flags() {
    let mut node = Node::start();
    node.add_user("alice", "alice-pw");
    let state = node.dir.path().join("state.json");
    e2e(&node, "write", &state);
    node.restart();
    e2e(&node, "verify", &state);
    node.stop();
    // Nothing the session wrote is readable on disk.
    let needles = [
        "Secret-m4rk3r-box",
        "m4rk3r-kw",
        "e2e message 1",
        "writer@example.org",
        "Body number 3",
    ];
    node.assert_nothing_in_clear(&needles, &["state.json"]);
    // The scan does see what is in clear: the login directory holds the name.
    assert!(node
        .files()
        .iter()
        .any(|(_, b)| aerogramme_tests::contains(b, b"node/directory/alice")));
}

#[test]
fn lmtp_delivery_reaches_an_idle_session_byte_for_byte() {
    phase_alone("deliver");
}

#[test]
fn two_sessions_see_each_other() {
    phase_alone("two");
}

#[test]
fn repeated_select_sees_every_change() {
    phase_alone("reselect");
}

#[test]
fn curl_reads_a_message_by_imap_url() {
    let node = Node::start();
    node.add_user("alice", "alice-pw");
    let state = node.dir.path().join("s.json");
    e2e(&node, "write", &state);
    let url = format!("imap://127.0.0.1:{}/INBOX;UID=1", node.imap.port());
    let out = std::process::Command::new("curl")
        .args(["-s", "-u", "alice:alice-pw", &url])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("Subject: e2e message 0"), "{body}");
}

#[test]
fn summaries_from_memory_stay_right_across_flags_expunge_and_copy() {
    phase_alone("summaries");
}
