//! mbsync (isync) keeps a Maildir and the server in step, both ways, twice.

use aerogramme_tests::Node;
use std::path::Path;
use std::process::Command;

fn mbsync(config: &Path) -> String {
    let out = Command::new("mbsync")
        .arg("-c")
        .arg(config)
        .arg("-a")
        .output()
        .expect("mbsync");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mbsync failed:\n{text}");
    text
}

fn maildir_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for sub in ["cur", "new"] {
        for e in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            v.push(e.path());
        }
    }
    v.sort();
    v
}

#[test]
fn mbsync_syncs_both_ways_without_duplicates() {
    if Command::new("mbsync").arg("--version").output().is_err() {
        panic!("mbsync is not installed: this test needs the Debian package `isync` (as .ci/run installs)");
    }
    let node = Node::start();
    node.add_user("alice", "alice-pw");
    let state = node.dir.path().join("s.json");
    node.python(
        "imap_e2e.py",
        &[
            "write",
            &node.imap.port().to_string(),
            &node.lmtp.port().to_string(),
            "alice",
            "alice-pw",
            state.to_str().unwrap(),
        ],
    );
    let local = node.dir.path().join("maildir");
    std::fs::create_dir_all(&local).unwrap();
    let config = node.dir.path().join("mbsyncrc");
    std::fs::write(
        &config,
        format!(
            "IMAPAccount t\nHost 127.0.0.1\nPort {port}\nUser alice\nPass alice-pw\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount t\n\n\
             MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n\
             Channel c\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Both\nExpunge Both\nSyncState *\nSync All\n",
            port = node.imap.port(),
            local = local.display()
        ),
    )
    .unwrap();
    let inbox = local.join("INBOX");
    // Pull.
    mbsync(&config);
    let pulled = maildir_files(&inbox);
    assert_eq!(pulled.len(), 4, "{pulled:?}");
    // Local changes: flag one message seen+flagged, add a new one.
    // One that the server has not flagged yet (the writer flagged one).
    let first = pulled
        .iter()
        .find(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .split(":2,")
                .nth(1)
                .unwrap_or("")
                .contains('F')
        })
        .expect("an unflagged message");
    let name = first.file_name().unwrap().to_string_lossy().to_string();
    let base = name.split(":2,").next().unwrap().to_string();
    std::fs::rename(first, inbox.join("cur").join(format!("{base}:2,FS"))).unwrap();
    std::fs::write(
        inbox.join("new").join("1700000000.local.host"),
        "From: me@example.org\r\nSubject: written locally\r\n\r\nnew here\r\n",
    )
    .unwrap();
    // Push, and again: nothing doubles.
    mbsync(&config);
    mbsync(&config);
    assert_eq!(maildir_files(&inbox).len(), 5);
    let check = node.python(
        "imap_count.py",
        &[&node.imap.port().to_string(), "alice", "alice-pw"],
    );
    assert!(check.contains("messages=5"), "{check}");
    assert!(
        check.contains("flagged=2"),
        "the local flag reached the server: {check}"
    );
    // Remote expunge reaches the Maildir.
    node.python(
        "imap_expunge_first.py",
        &[&node.imap.port().to_string(), "alice", "alice-pw"],
    );
    mbsync(&config);
    mbsync(&config);
    assert_eq!(maildir_files(&inbox).len(), 4);
}
