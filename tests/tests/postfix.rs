//! A real Postfix, with a private configuration started by the test, relays
//! mail to the node over LMTP: a message submitted with `sendmail` (and one
//! over SMTP) arrives in the user's INBOX, read back over IMAP.
//!
//! Needs the Debian package `postfix` (installed by `.ci/run`) and root, as
//! Postfix's master runs as root and drops privileges to the `postfix` user.
//! Without either the test fails and says why.

use aerogramme_tests::{free_port, Node};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Postfix instance in its own directories: configuration, queue and data
/// under one temporary directory; stopped on drop.
struct Postfix {
    dir: tempfile::TempDir,
    smtp_port: u16,
    running: bool,
}

/// `postfix` from the usual places, or a panic that says what to install.
fn postfix_bin() -> PathBuf {
    let found = ["/usr/sbin/postfix", "/usr/local/sbin/postfix"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(bin) = found else {
        panic!(
            "Postfix is not installed: this test needs the Debian package `postfix` \
             (`apt-get install postfix`, as .ci/run does)"
        );
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the Postfix test needs root: Postfix's master process starts as root \
         (run the tests as root, as CI does)"
    );
    bin
}

impl Postfix {
    /// Writes `main.cf` and `master.cf` for an instance that listens on
    /// loopback only (smtpd on an unprivileged port) and hands every message
    /// for `example.org` to `lmtp` over LMTP; creates its queue and starts it.
    fn start(lmtp: std::net::SocketAddr) -> Postfix {
        let bin = postfix_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        // Postfix's daemons run as the `postfix` user and must reach the queue.
        set_mode(root, 0o755);
        let (etc, spool, data) = (root.join("etc"), root.join("spool"), root.join("data"));
        for d in [&etc, &spool, &data] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let st = Command::new("chown")
            .args(["postfix"])
            .arg(&data)
            .status()
            .expect("chown");
        assert!(st.success(), "chown postfix {}", data.display());
        let smtp_port = free_port();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             config_directory = {etc}\n\
             queue_directory = {spool}\n\
             data_directory = {data}\n\
             meta_directory = /etc/postfix\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             myhostname = mta.example.test\n\
             mydomain = example.test\n\
             myorigin = example.test\n\
             mydestination =\n\
             mynetworks = 127.0.0.0/8\n\
             relayhost =\n\
             relay_domains =\n\
             alias_maps =\n\
             alias_database =\n\
             local_recipient_maps =\n\
             virtual_mailbox_domains = example.org\n\
             virtual_transport = lmtp:inet:{lmtp}\n\
             smtputf8_enable = no\n\
             biff = no\n\
             maillog_file = {log}\n\
             maillog_file_prefixes = {root}\n",
            etc = etc.display(),
            spool = spool.display(),
            data = data.display(),
            log = root.join("postfix.log").display(),
            root = root.display(),
        );
        std::fs::write(etc.join("main.cf"), main_cf).expect("main.cf");
        // No chroot (the private queue has no chroot files); only the
        // services this instance needs.
        let master_cf = format!(
            "127.0.0.1:{smtp_port} inet n - n - - smtpd\n\
             pickup    unix  n - n 60    1 pickup\n\
             cleanup   unix  n - n -     0 cleanup\n\
             qmgr      unix  n - n 300   1 qmgr\n\
             rewrite   unix  - - n -     - trivial-rewrite\n\
             bounce    unix  - - n -     0 bounce\n\
             defer     unix  - - n -     0 bounce\n\
             trace     unix  - - n -     0 bounce\n\
             verify    unix  - - n -     1 verify\n\
             flush     unix  n - n 1000? 0 flush\n\
             proxymap  unix  - - n -     - proxymap\n\
             showq     unix  n - n -     - showq\n\
             error     unix  - - n -     - error\n\
             retry     unix  - - n -     - error\n\
             discard   unix  - - n -     - discard\n\
             lmtp      unix  - - n -     - lmtp\n\
             anvil     unix  - - n -     1 anvil\n\
             scache    unix  - - n -     1 scache\n\
             postlog   unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(etc.join("master.cf"), master_cf).expect("master.cf");
        let mut pf = Postfix {
            dir,
            smtp_port,
            running: false,
        };
        // `check` creates the queue directories with their owners.
        pf.postfix(&bin, "check");
        pf.postfix(&bin, "start");
        pf.running = true;
        aerogramme_tests::wait_for(format!("127.0.0.1:{smtp_port}").parse().expect("addr"));
        pf
    }

    fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postfix.log")).unwrap_or_default()
    }

    fn postfix(&self, bin: &Path, what: &str) {
        let out = Command::new(bin)
            .arg("-c")
            .arg(self.etc())
            .arg(what)
            .output()
            .expect("run postfix");
        assert!(
            out.status.success(),
            "postfix {what} failed: {}{}\n--- postfix log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Submits `message` with Postfix's `sendmail -C`, as a local program would.
    fn sendmail(&self, from: &str, to: &str, message: &str) {
        let mut child = Command::new("/usr/sbin/sendmail")
            .arg("-C")
            .arg(self.etc())
            .args(["-f", from, "--", to])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sendmail");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(message.as_bytes())
            .expect("write message");
        let out = child.wait_with_output().expect("sendmail");
        assert!(
            out.status.success(),
            "sendmail failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let _ = Command::new(postfix_bin())
            .arg("-c")
            .arg(self.etc())
            .arg("stop")
            .output();
        // The master exits once its children have: wait for its process to go.
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.master_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the master process named in the queue's pid file still runs.
    fn master_alive(&self) -> bool {
        let pid = std::fs::read_to_string(self.dir.path().join("spool/pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn postfix_relays_sendmail_and_smtp_mail_into_inbox() {
    let node = Node::start();
    node.add_user("alice", "alice-pw");
    let mut pf = Postfix::start(node.lmtp);
    let marker = "pf-m4rk3r-81";
    // LF line ends, no Message-ID, no Date: sendmail and cleanup add them.
    pf.sendmail(
        "sender@example.net",
        "alice@example.org",
        &format!(
            "From: Sender <sender@example.net>\nTo: alice@example.org\n\
             Subject: {marker}\n\nA body relayed by Postfix: {marker}\n"
        ),
    );
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("py/postfix_inbox.py"))
        .args([
            &node.imap.port().to_string(),
            "alice",
            "alice-pw",
            &pf.smtp_port.to_string(),
            marker,
        ])
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{text}\n--- postfix log ---\n{}\n--- node log ---\n{}",
        pf.log(),
        node.log()
    );
    let log = pf.log();
    assert!(
        log.contains("status=sent (250 2.0.0"),
        "Postfix reports no LMTP delivery:\n{log}"
    );
    pf.stop();
    assert!(!pf.master_alive(), "Postfix did not stop:\n{}", pf.log());
}
