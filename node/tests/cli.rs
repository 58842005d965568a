//! The real `aerogramme` binary: `init`, `serve` with user commands going
//! through the admin socket, direct store access when no node runs, `dev`.

use aerogramme::admin::{self, Request, Response};
use aerogramme::config::ConfigFile;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_aerogramme");

/// Runs the binary with `stdin` as standard input.
fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: &str) -> String {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], stdin: &str) -> String {
    let out = run(args, stdin);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} did not fail with status 1"
    );
    String::from_utf8(out.stderr).unwrap()
}

/// `init` a data directory, then make its Argon2 cheap so tests stay fast.
fn init_cheap(dir: &Path, name: &str) -> String {
    let d = dir.to_str().unwrap();
    let out = ok(&["init", "--data", d, "--name", name], "");
    let path = dir.join("aerogramme.toml");
    let mut file = ConfigFile::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file.accounts.argon2.iterations = 1;
    file.accounts.argon2.memory_kib = 8;
    // A free loopback port, alone: tests run side by side.
    file.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    file.p2p.mdns = Some(false);
    std::fs::write(&path, file.to_toml()).unwrap();
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_the_files_and_prints_a_peer_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n1");
    let d = dir.to_str().unwrap();
    let out = ok(
        &[
            "init",
            "--data",
            d,
            "--name",
            "n1",
            "--join",
            "/ip4/192.0.2.1/tcp/4001",
            "--imap",
            "127.0.0.1:2143",
        ],
        "",
    );
    let peer = out
        .lines()
        .find_map(|l| l.strip_prefix("peer id     : "))
        .expect("peer id line");
    assert!(peer.parse::<libp2p::PeerId>().is_ok(), "{peer}");
    assert!(out.contains("created"));
    assert_eq!(std::fs::read(dir.join("node.key")).unwrap().len(), 32);
    assert_eq!(mode(&dir.join("node.key")), 0o600);
    assert_eq!(mode(&dir.join("network.key")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert!(dir.join("db").is_dir());
    let config = aerogramme::config::Config::load(&dir).unwrap();
    assert_eq!(config.name, "n1");
    assert_eq!(config.imap.to_string(), "127.0.0.1:2143");
    assert_eq!(config.join[0].to_string(), "/ip4/192.0.2.1/tcp/4001");

    // Never over an initialised directory.
    assert!(fails(&["init", "--data", d], "").contains("already"));

    // A second node shares the first one's network key file.
    let key = dir.join("network.key");
    let dir2 = tmp.path().join("n2");
    let out2 = ok(
        &[
            "init",
            "--data",
            dir2.to_str().unwrap(),
            "--network-key",
            key.to_str().unwrap(),
        ],
        "",
    );
    assert!(out2.contains("reused"), "{out2}");
    let peer2 = out2
        .lines()
        .find_map(|l| l.strip_prefix("peer id     : "))
        .unwrap();
    assert_ne!(peer, peer2);
    let config2 = aerogramme::config::Config::load(&dir2).unwrap();
    assert_eq!(config2.network_key, key);

    // Bad addresses are refused before anything is written.
    let out = run(
        &[
            "init",
            "--data",
            tmp.path().join("n3").to_str().unwrap(),
            "--p2p",
            "/ip4/1.2.3.4/tcp/x",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a multiaddress"));
    assert!(!tmp.path().join("n3").exists());
}

/// A `serve` process, killed when dropped.
struct Serve {
    child: Child,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_serve(dir: &Path, log: &Path) -> Serve {
    let child = Command::new(BIN)
        .args(["serve", "--data", dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let serve = Serve { child };
    let socket = dir.join("admin.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(mut c)) = admin::connect(&socket, Duration::from_secs(5)) {
            if let Ok(Response::Pong { .. }) = c.request(&Request::Ping) {
                return serve;
            }
        }
        assert!(
            Instant::now() < deadline,
            "serve did not answer on its admin socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn user_commands_work_while_serve_runs_and_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let d = dir.to_str().unwrap();
    init_cheap(&dir, "n1");
    let log = tmp.path().join("serve.log");
    let mut serve = start_serve(&dir, &log);
    assert_eq!(mode(&dir.join("admin.sock")), 0o600);

    assert!(ok(&["user", "add", "alice", "--data", d], "pw1\n").contains("user alice added"));
    assert!(fails(&["user", "add", "alice", "--data", d], "other\n").contains("already exists"));
    let list = ok(&["user", "list", "--data", d], "");
    assert!(list.starts_with("alice\t"), "{list}");
    let status = ok(&["status", "--data", d], "");
    assert!(status.contains("running     : yes"), "{status}");
    assert!(status.contains("users       : 1"), "{status}");
    assert!(status.contains("peers       : none"), "{status}");

    ok(&["user", "check", "alice", "--data", d], "pw1\n");
    assert!(fails(&["user", "check", "alice", "--data", d], "wrong\n")
        .contains("authentication failed"));
    assert!(
        fails(&["user", "passwd", "alice", "--data", d], "wrong\nnew\n").contains("wrong password")
    );
    ok(&["user", "passwd", "alice", "--data", d], "pw1\npw2\n");
    assert!(
        fails(&["user", "check", "alice", "--data", d], "pw1\n").contains("authentication failed")
    );
    ok(&["user", "check", "alice", "--data", d], "pw2\n");
    // Missing password on standard input.
    assert!(fails(&["user", "add", "bob", "--data", d], "").contains("standard input ended"));

    // Stop with SIGTERM: clean exit, socket removed.
    unsafe { libc::kill(serve.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = serve.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert!(!dir.join("admin.sock").exists());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("serving"), "{log}");
    assert!(log.contains("serving IMAP, LMTP and peers"), "{log}");

    // Without a node, the CLI opens the store itself.
    let status = ok(&["status", "--data", d], "");
    assert!(status.contains("running     : no"), "{status}");
    ok(&["user", "check", "alice", "--data", d], "pw2\n");
    ok(&["user", "add", "bob", "--data", d], "bobpw\n");
    ok(&["user", "remove", "alice", "--data", d], "");
    let list = ok(&["user", "list", "--data", d], "");
    assert!(
        list.starts_with("bob\t") && !list.contains("alice"),
        "{list}"
    );

    // And a node started again sees the changes.
    let _serve = start_serve(&dir, &tmp.path().join("serve2.log"));
    assert!(ok(&["status", "--data", d], "").contains("users       : 1"));
    ok(&["user", "check", "bob", "--data", d], "bobpw\n");
    // A second serve on the same directory is refused.
    let out = run(&["serve", "--data", d], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
}

#[test]
fn commands_on_a_missing_directory_say_to_init() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("nothing");
    let err = fails(&["user", "list", "--data", d.to_str().unwrap()], "");
    assert!(err.contains("aerogramme init"), "{err}");
    let help = ok(&["user", "--help"], "");
    assert!(help.contains("check") && help.contains("passwd"), "{help}");
}

#[test]
fn dev_sets_up_its_directory_and_serves_imap() {
    use std::io::{BufRead, BufReader, Write as _};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let d = dir.to_str().unwrap();
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    // The second run reuses the directory, whose configuration keeps the
    // addresses of the first.
    let (imap, lmtp) = (
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
    );
    for _ in 0..2 {
        let mut child = Command::new(BIN)
            .args([
                "dev",
                "--data",
                d,
                "--user",
                "demo",
                "--password",
                "pw",
                "--imap",
                &imap,
                "--lmtp",
                &lmtp,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The banner says how to connect, once the listeners are up.
        let mut banner = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        while !banner.contains("Stop with Ctrl-C") {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "dev exited early: {banner}"
            );
            banner.push_str(&line);
        }
        assert!(
            banner.contains(&imap)
                && banner.contains("user     : demo")
                && banner.contains("password : pw"),
            "{banner}"
        );
        // A real IMAP login with the demo user.
        let s = std::net::TcpStream::connect(&imap).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut greeting = String::new();
        r.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        (&s).write_all(b"a LOGIN demo pw\r\n").unwrap();
        let mut answer = String::new();
        while !answer.starts_with("a ") {
            answer.clear();
            r.read_line(&mut answer).unwrap();
        }
        assert!(answer.starts_with("a OK"), "{answer}");
        drop(s);
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(child.wait().unwrap().success());
    }
    let config = aerogramme::config::Config::load(&dir).unwrap();
    assert_eq!(config.p2p_listen[0].to_string(), "/ip4/127.0.0.1/tcp/0");
    assert!(ok(&["user", "list", "--data", d], "").starts_with("demo\t"));
    ok(&["user", "check", "demo", "--data", d], "pw\n");
}
