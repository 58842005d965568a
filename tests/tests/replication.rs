//! Several `aerogramme` processes on loopback forming a community: accounts
//! and mail replicate, concurrent writers agree on UIDs, a killed node
//! catches up, an outsider without the network key learns nothing.

use aerogramme_tests::Node;

const USER: &str = "alice";
const PW: &str = "correct horse";

fn port(a: std::net::SocketAddr) -> String {
    a.to_string()
}

/// What IMAP shows of INBOX on `node` once it holds `count` messages.
fn snapshot(node: &Node, count: usize) -> String {
    node.python(
        "repl.py",
        &[
            "snapshot",
            &port(node.imap),
            USER,
            PW,
            &count.to_string(),
            "120",
        ],
    )
}

fn wait_login(node: &Node) {
    node.python("repl.py", &["login", &port(node.imap), USER, PW, "60"]);
}

/// Three nodes of one community, a user added on node 1 who can log in on
/// node 3.
fn community_with_user() -> Vec<Node> {
    let nodes = Node::community(3);
    for n in &nodes {
        n.wait_for_peers(2);
    }
    nodes[0].add_user(USER, PW);
    wait_login(&nodes[2]);
    nodes
}

fn deliver(node: &Node, n: usize, clients: usize, prefix: &str) {
    node.python(
        "repl.py",
        &[
            "deliver",
            &port(node.lmtp),
            USER,
            &n.to_string(),
            &clients.to_string(),
            prefix,
        ],
    );
}

#[test]
fn a_user_added_on_one_node_reads_mail_on_every_node_with_the_same_uids() {
    let nodes = community_with_user();
    deliver(&nodes[0], 3, 1, "hello");
    let first = snapshot(&nodes[0], 3);
    assert_eq!(first.lines().count(), 4, "{first}");
    for n in &nodes[1..] {
        assert_eq!(
            snapshot(n, 3),
            first,
            "same UIDVALIDITY and UIDs everywhere"
        );
    }
    // Byte for byte the same message on every node.
    let uid = first.lines().nth(1).unwrap().split(' ').next().unwrap();
    let bodies: Vec<String> = nodes
        .iter()
        .map(|n| n.python("repl.py", &["body", &port(n.imap), USER, PW, uid]))
        .collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    // Status shows the peers with round-trip times, and no lag at rest.
    let status = nodes[0].status();
    assert!(status.contains(&nodes[1].peer_id), "{status}");
    assert!(status.contains(" ms"), "{status}");
}

/// `user list` of a node, one name per line.
fn users(node: &Node) -> String {
    let out = std::process::Command::new(aerogramme_tests::binary())
        .args(["user", "list", "--data"])
        .arg(node.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_user_removed_on_one_node_is_removed_on_every_node() {
    let mut nodes = community_with_user();
    deliver(&nodes[0], 3, 1, "farewell");
    snapshot(&nodes[2], 3);
    // Node 3 is away when the user is removed on node 2; the user's open
    // sessions on node 1, where the removal arrives from node 2, end with
    // BYE.
    nodes[2].stop();
    let binary = aerogramme_tests::binary();
    let data = nodes[1].dir.path().to_str().expect("utf-8 path").to_owned();
    nodes[0].python(
        "repl.py",
        &[
            "evicted",
            &port(nodes[0].imap),
            USER,
            PW,
            "30",
            binary.to_str().expect("utf-8 path"),
            "user",
            "remove",
            USER,
            "--data",
            &data,
        ],
    );
    for n in &nodes[..2] {
        n.python("repl.py", &["refused", &port(n.imap), USER, PW, "60"]);
        assert!(!users(n).contains(USER), "{}", users(n));
    }
    // Back, it learns the removal from the others and does not give the
    // user's mail back to them.
    nodes[2].start_again();
    nodes[2].python(
        "repl.py",
        &["refused", &port(nodes[2].imap), USER, PW, "60"],
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    for n in &nodes {
        assert!(!users(n).contains(USER), "{}", users(n));
        let status = n.status();
        assert!(!status.contains(USER), "{status}");
    }
    // A new user of the same name starts empty.
    nodes[0].add_user(USER, PW);
    wait_login(&nodes[2]);
    let fresh = snapshot(&nodes[2], 0);
    assert_eq!(fresh.lines().count(), 1, "{fresh}");
}

#[test]
fn two_clients_on_two_nodes_append_at_once_and_every_node_agrees() {
    let nodes = Node::community(3);
    for n in &nodes {
        n.wait_for_peers(2);
    }
    nodes[0].add_user(USER, PW);
    wait_login(&nodes[1]);
    let answers = nodes[0].python(
        "repl.py",
        &[
            "append",
            &port(nodes[0].imap),
            &port(nodes[1].imap),
            USER,
            PW,
            "200",
        ],
    );
    let mut lines = answers.lines();
    let (va, vb) = (lines.next().unwrap(), lines.next().unwrap());
    assert_eq!(va, vb, "both clients saw one UIDVALIDITY");
    let acked: Vec<&str> = lines.collect();
    assert_eq!(acked.len(), 400);
    let uids: std::collections::BTreeSet<&str> =
        acked.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(uids.len(), 400, "no UID given to two messages");
    // Every node shows exactly what the clients were told: same
    // UIDVALIDITY, each message at the UID its APPENDUID announced (none
    // re-announced under another UID).
    let expected = format!("{va}\n{}\n", acked.join("\n"));
    for n in &nodes {
        assert_eq!(snapshot(n, 400), expected);
    }
}

#[test]
fn a_killed_node_misses_2000_deliveries_restarts_and_catches_up() {
    let mut nodes = community_with_user();
    deliver(&nodes[0], 10, 1, "before");
    snapshot(&nodes[2], 10);
    nodes[2].kill();
    deliver(&nodes[0], 2000, 10, "away");
    let reference = snapshot(&nodes[1], 2010);
    nodes[2].start_again();
    assert_eq!(snapshot(&nodes[2], 2010), reference);
    assert_eq!(snapshot(&nodes[0], 2010), reference);
}

#[test]
fn a_node_with_another_network_key_cannot_connect_and_learns_nothing() {
    let nodes = Node::community(2);
    nodes[0].wait_for_peers(1);
    nodes[0].add_user(USER, PW);
    deliver(&nodes[0], 1, 1, "secret");
    // Its own key (a new one), but it knows where the community is.
    let outsider = Node::start_with(&[nodes[0].p2p_addr(), nodes[1].p2p_addr()], None);
    std::thread::sleep(std::time::Duration::from_secs(5));
    let status = outsider.status();
    assert!(status.contains("peers       : none"), "{status}");
    let status = nodes[0].status();
    assert!(!status.contains(&outsider.peer_id), "{status}");
    assert!(users(&outsider).is_empty(), "the outsider learnt a user");
    // The community goes on.
    snapshot(&nodes[1], 1);
}

#[test]
fn a_peer_sending_malformed_or_oversized_messages_is_disconnected() {
    let nodes = Node::community(2);
    nodes[0].wait_for_peers(1);
    nodes[0].add_user(USER, PW);
    let key = nodes[0].dir.path().join("network.key");
    let rogue = std::path::Path::new(&aerogramme_tests::binary()).with_file_name("rogue_peer");
    for mode in ["garbage", "oversized"] {
        let out = std::process::Command::new(&rogue)
            .arg(&key)
            .arg(nodes[0].p2p_addr())
            .arg(mode)
            .output()
            .expect("run rogue_peer");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("connected\n") && text.contains("disconnected"),
            "{mode}: {text}{}\n--- node log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            nodes[0].log()
        );
    }
    assert!(nodes[0].log().contains("disconnecting a peer"));
    // The others are unaffected.
    deliver(&nodes[0], 2, 1, "after");
    assert_eq!(snapshot(&nodes[1], 2), snapshot(&nodes[0], 2));
}

#[test]
fn over_quic_an_allow_list_admits_members_only() {
    use aerogramme_tests::free_port;
    let ports = || (free_port(), free_port(), free_port());
    let first = Node::init_at("127.0.0.1", ports(), &[], None, None, true);
    let key = first.dir.path().join("network.key");
    let join = [first.p2p_addr()];
    let second = Node::init_at("127.0.0.1", ports(), &join, Some(&key), None, true);
    // Holds the key, but is not on the allow-list.
    let stranger = Node::init_at("127.0.0.1", ports(), &join, Some(&key), None, true);
    let allow = format!(
        "[p2p]\nquic = true\nallow = [\"{}\", \"{}\"]\n",
        first.peer_id, second.peer_id
    );
    let mut nodes = vec![first, second, stranger];
    for n in &mut nodes {
        let allow = allow.clone();
        n.edit_config(|t| {
            t.replace("quic = false\n", "")
                .replace("allow = []\n", "")
                .replace("[p2p]\n", &allow)
        });
        n.start_again();
    }
    nodes[0].wait_for_peers(1);
    nodes[0].add_user(USER, PW);
    wait_login(&nodes[1]);
    deliver(&nodes[0], 1, 1, "quic");
    assert_eq!(snapshot(&nodes[1], 1), snapshot(&nodes[0], 1));
    // The stranger's connections are refused once its peer id is known.
    let status = nodes[2].status();
    assert!(!status.contains("(connected)"), "{status}");
    assert!(status.contains("users       : 0"), "{status}");
    assert!(!nodes[0].status().contains(&nodes[2].peer_id));
}
