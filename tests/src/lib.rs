//! Harness for end-to-end tests: starts the real `aerogramme` binary on
//! loopback ports in a temporary data directory, and runs real clients
//! (Python's imaplib and smtplib, swaks, curl) against it.

use base64::Engine;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `aerogramme` binary built alongside the tests, or the one named by
/// `AEROGRAMME_BIN` (to benchmark another build with the same harness).
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("AEROGRAMME_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/aerogramme
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("aerogramme");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (`cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

/// A port on 127.0.0.1 that is free for both TCP and UDP.
///
/// Ports come from below the kernel's ephemeral range (so no outgoing
/// connection can take one before the node binds it) and are never handed
/// out twice by one test process (so tests running in parallel threads
/// cannot collide); each process starts at an offset of its own.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000; // up to 31999, below 32768
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN)
}

/// A running node in a temporary data directory.
pub struct Node {
    /// The data directory.
    pub dir: tempfile::TempDir,
    /// IMAP address.
    pub imap: SocketAddr,
    /// LMTP address.
    pub lmtp: SocketAddr,
    /// Peer-to-peer TCP port (loopback).
    pub p2p: u16,
    /// libp2p peer id.
    pub peer_id: String,
    p2p_ip: String,
    netns: Option<String>,
    quic: bool,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    /// `aerogramme init` in a fresh directory, cheap Argon2 for tests, and
    /// `serve` started.
    pub fn start() -> Node {
        Self::start_with(&[], None)
    }

    /// `start`, joining the peers at `join` (multiaddresses), with the
    /// network key file `network_key` (default: a new one in the data
    /// directory).
    pub fn start_with(join: &[String], network_key: Option<&Path>) -> Node {
        let (imap, lmtp, p2p) = (free_port(), free_port(), free_port());
        Self::start_at("127.0.0.1", (imap, lmtp, p2p), join, network_key, None)
    }

    /// `start_with` on the address `ip` and these ports (IMAP, LMTP,
    /// peer-to-peer), in the network namespace `netns` when given.
    pub fn start_at(
        ip: &str,
        ports: (u16, u16, u16),
        join: &[String],
        network_key: Option<&Path>,
        netns: Option<String>,
    ) -> Node {
        let mut node = Self::init_at(ip, ports, join, network_key, netns, false);
        node.spawn();
        node
    }

    /// `aerogramme init` only (start it with `start_again`); peers on QUIC
    /// (UDP) instead of TCP when `quic`.
    pub fn init_at(
        ip: &str,
        (imap, lmtp, p2p): (u16, u16, u16),
        join: &[String],
        network_key: Option<&Path>,
        netns: Option<String>,
        quic: bool,
    ) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(binary());
        cmd.args(["init", "--data"]).arg(dir.path()).args([
            "--imap",
            &format!("{ip}:{imap}"),
            "--lmtp",
            &format!("{ip}:{lmtp}"),
            "--p2p",
            &if quic {
                format!("/ip4/{ip}/udp/{p2p}/quic-v1")
            } else {
                format!("/ip4/{ip}/tcp/{p2p}")
            },
        ]);
        for j in join {
            cmd.args(["--join", j]);
        }
        if let Some(k) = network_key {
            cmd.arg("--network-key").arg(k);
        }
        let out = cmd.output().expect("run init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let peer_id = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("peer id")
                    .map(|r| r.trim_start_matches([' ', ':']).to_string())
            })
            .expect("init prints the peer id");
        // Cheap Argon2 keeps tests fast; the format is the same.
        let cfg = dir.path().join("aerogramme.toml");
        let text = std::fs::read_to_string(&cfg).expect("config");
        let text = text
            .replace("iterations = 3", "iterations = 1")
            .replace("memory_kib = 65536", "memory_kib = 64")
            // Peers are found through --join and Kademlia only, so that
            // concurrent tests' nodes never meet.
            .replace("[p2p]\n", "[p2p]\nmdns = false\n")
            // Tests log in without TLS on the namespaces' private addresses.
            .replace(
                "allow_plaintext_auth = false",
                "allow_plaintext_auth = true",
            );
        std::fs::write(&cfg, text).expect("write config");
        // NODE_LOG_DIR keeps the nodes' logs there (named by peer id).
        let log = match std::env::var_os("NODE_LOG_DIR") {
            Some(d) => Path::new(&d).join(format!("{peer_id}.log")),
            None => dir.path().join("node.log"),
        };
        let node = Node {
            imap: format!("{ip}:{imap}").parse().expect("addr"),
            lmtp: format!("{ip}:{lmtp}").parse().expect("addr"),
            p2p,
            p2p_ip: ip.to_string(),
            netns,
            peer_id,
            dir,
            child: None,
            log,
            quic,
        };
        node
    }

    /// Rewrites the node's configuration file with `edit` (before a start).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let cfg = self.dir.path().join("aerogramme.toml");
        let text = std::fs::read_to_string(&cfg).expect("config");
        std::fs::write(&cfg, edit(text)).expect("write config");
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let child = cmd
            .args(["serve", "--data"])
            .arg(self.dir.path())
            // NODE_LOG sets the nodes' log filter (default: info).
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run serve");
        self.child = Some(child);
        wait_for(self.lmtp);
        // Something answers on the port: make sure it is this node.
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            self.child = None;
            panic!("the node exited ({status}):\n{}", self.log());
        }
    }

    /// A community of `n` nodes sharing one network key, each joining the
    /// first.
    pub fn community(n: usize) -> Vec<Node> {
        let first = Node::start();
        let key = first.dir.path().join("network.key");
        let join = vec![first.p2p_addr()];
        let mut nodes = vec![first];
        for _ in 1..n {
            nodes.push(Node::start_with(&join, Some(&key)));
        }
        nodes
    }

    /// The node's peer-to-peer address with its peer id.
    pub fn p2p_addr(&self) -> String {
        let transport = if self.quic { "udp" } else { "tcp" };
        let quic = if self.quic { "/quic-v1" } else { "" };
        format!(
            "/ip4/{}/{transport}/{}{quic}/p2p/{}",
            self.p2p_ip, self.p2p, self.peer_id
        )
    }

    /// Kills the node with SIGKILL (no shutdown at all).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts `serve` again after `stop` or `kill`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the node is running");
        self.spawn();
    }

    /// `aerogramme status` of the running node.
    pub fn status(&self) -> String {
        let out = Command::new(binary())
            .args(["status", "--data"])
            .arg(self.dir.path())
            .output()
            .expect("run status");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits until `status` lists `n` connected peers.
    pub fn wait_for_peers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status();
            if s.matches("(connected)").count() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {n} peers after 60 s:\n{s}\n--- log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the node (SIGTERM) and starts it again on the same directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops the node with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Adds a user through the CLI (the admin socket of the running node).
    pub fn add_user(&self, name: &str, password: &str) {
        let mut child = Command::new(binary())
            .args(["user", "add", name, "--data"])
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run user add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("password");
        let out = child.wait_with_output().expect("user add");
        assert!(
            out.status.success(),
            "user add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `tests/py/NAME` with Python 3 and these arguments; panics with
    /// its output unless it exits 0.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("py")
            .join(script);
        let out = Command::new("python3")
            .arg(&path)
            .args(args)
            .output()
            .expect("python3");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{script} failed:\n{text}\n--- node log ---\n{}",
            self.log()
        );
        text
    }

    /// Asserts that no file of the data directory (but the test's own files,
    /// `skip`, and the node's log) holds any of `needles`, raw, as UTF-16 or
    /// as base64. Stop the node first, so that everything is on disk.
    pub fn assert_nothing_in_clear(&self, needles: &[&str], skip: &[&str]) {
        for (path, bytes) in self.files() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if name == "node.log" || skip.contains(&name.as_str()) {
                continue;
            }
            for n in needles {
                for enc in encodings(n) {
                    assert!(
                        !contains(&bytes, &enc),
                        "{} holds {n:?} in clear",
                        path.display()
                    );
                }
            }
        }
    }

    /// Every file under the data directory, with its bytes.
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(mut f) = std::fs::File::open(&p) {
                    let mut b = Vec::new();
                    if f.read_to_end(&mut b).is_ok() {
                        out.push((p, b));
                    }
                }
            }
        }
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            // Every node's log, not only the one a failed check names.
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- log of node {} (last lines) ---", self.peer_id);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Waits until something listens on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `addr` accepts connections (the node is up).
pub fn wait_for(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let mut line = String::new();
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = BufReader::new(s).read_line(&mut line);
            if !line.is_empty() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing answers on {addr}");
}

/// `needle` as it could appear in a file: raw, UTF-16 (LE and BE), base64.
pub fn encodings(needle: &str) -> Vec<Vec<u8>> {
    let utf16le: Vec<u8> = needle
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let utf16be: Vec<u8> = needle
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    // Base64 at the three alignments; the middle part is stable.
    let b64: Vec<Vec<u8>> = (0..3)
        .map(|pad| {
            let mut s = vec![b'x'; pad];
            s.extend(needle.as_bytes());
            let enc = base64::engine::general_purpose::STANDARD.encode(&s);
            let skip = (pad * 4).div_ceil(3) + 2;
            enc.as_bytes()[skip.min(enc.len())..enc.len().saturating_sub(4)].to_vec()
        })
        .filter(|v| v.len() >= 8)
        .collect();
    let mut v = vec![needle.as_bytes().to_vec(), utf16le, utf16be];
    v.extend(b64);
    v
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Network namespaces joined by a bridge: real hosts for partition tests.
/// Host `i` (from 1) has the address `10.231.S.i`; the test itself reaches
/// every host through the bridge (`10.231.S.254`). Needs root and `ip`.
pub struct Netns {
    tag: String,
    subnet: u8,
    hosts: usize,
}

impl Netns {
    /// Creates `hosts` namespaces on one bridge; panics with the reason if
    /// the machine does not allow it (not root, no `ip`).
    pub fn new(hosts: usize) -> Netns {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let subnet = ((std::process::id() * 7 + k) % 200 + 20) as u8;
        let net = Netns {
            tag: format!("ag{subnet}"),
            subnet,
            hosts,
        };
        net.teardown();
        let br = format!("{}br", net.tag);
        net.ip(&["link", "add", &br, "type", "bridge"]);
        net.ip(&[
            "addr",
            "add",
            &format!("10.231.{subnet}.254/24"),
            "dev",
            &br,
        ]);
        net.ip(&["link", "set", &br, "up"]);
        for i in 1..=hosts {
            let ns = net.ns(i);
            let (outer, inner) = (format!("{}v{i}", net.tag), format!("{}i{i}", net.tag));
            net.ip(&["netns", "add", &ns]);
            net.ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            net.ip(&["link", "set", &inner, "netns", &ns]);
            net.ip(&["link", "set", &outer, "master", &br]);
            net.ip(&["link", "set", &outer, "up"]);
            net.ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(i)),
                "dev",
                &inner,
            ]);
            net.ip(&["-n", &ns, "link", "set", &inner, "up"]);
            net.ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("the `ip` command (iproute2) is needed for partition tests");
        assert!(
            out.status.success(),
            "ip {}: {} (partition tests need root)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The namespace of host `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// The address of host `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("10.231.{}.{i}", self.subnet)
    }

    /// Drops every packet between host `a` and host `b`, both ways (the
    /// kernel discards them: a real cut, not a mock).
    pub fn cut(&self, a: usize, b: usize) {
        self.blackhole("add", a, b);
    }

    /// Undoes `cut`.
    pub fn heal(&self, a: usize, b: usize) {
        self.blackhole("del", a, b);
    }

    /// Adds or deletes the blackhole routes between `a` and `b`.
    fn blackhole(&self, action: &str, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let dest = format!("{}/32", self.addr(to));
            self.ip(&["-n", &self.ns(from), "route", action, "blackhole", &dest]);
        }
    }

    /// A node on host `i`, joining `join`, with the network key `key`.
    pub fn node(&self, i: usize, join: &[String], key: Option<&Path>) -> Node {
        Node::start_at(
            &self.addr(i),
            (1143, 1024, 4001),
            join,
            key,
            Some(self.ns(i)),
        )
    }

    fn teardown(&self) {
        for i in 1..=self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{}v{i}", self.tag)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}br", self.tag)])
            .output();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}
