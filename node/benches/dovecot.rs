//! Aerogramme beside Dovecot, in the same run, on the same machine, with the
//! same real mail (the SpamAssassin corpus, see `common/corpus.rs`):
//!
//! - `lmtp`: deliveries per second from concurrent LMTP clients (issue 7);
//! - `idle`: latency from LMTP 250 (and from an APPEND's OK) to the `EXISTS`
//!   an IMAP client in IDLE on that mailbox receives, p50 and p99;
//! - `imap`: APPEND throughput with 1 and with N clients, then on the
//!   mailbox the N clients filled: SELECT (the first after the APPENDs,
//!   then the median of 50), `UID FETCH 1:* (FLAGS)`, FETCH ENVELOPE of the
//!   last 1,000, `UID FETCH 1:* (BODY.PEEK[])`, `UID SEARCH HEADER Subject`,
//!   `SEARCH BODY`, `STORE 1:* +FLAGS (\Seen)` (the median of 5, each undone
//!   untimed) (issue 6).
//!
//! Aerogramme is the real `aerogramme` binary (`serve`, through the core:
//! every LMTP 250 and APPEND OK after the flush that made it durable).
//! Dovecot (Debian's `dovecot-imapd` and `dovecot-lmtpd`) is started by the
//! benchmark with a private configuration: loopback only, its own base_dir,
//! state_dir and Maildir under a temporary directory, a static passdb and
//! userdb, default fsync behaviour (`mail_fsync = optimized`). Needs root
//! (Dovecot's master drops privileges; mail is stored as `nobody`).
//!
//! ```text
//! cargo bench -p aerogramme --bench dovecot -- [lmtp] [idle] [imap]
//!     [--corpus DIR] [--clients N] [--messages N] [--rounds N] [--scale K]
//!     [--dovecot-format maildir|sdbox|mdbox] [--only aerogramme|dovecot]
//! ```
//!
//! Without a section name, all three run. `--messages` bounds the corpus,
//! `--rounds` is the number of IDLE notifications measured (default 200),
//! `--scale K` appends the corpus K times for the read/search part.
//! `--only aerogramme` measures Aerogramme alone (Dovecot's APPEND of
//! 100k messages takes very long; compare with figures of an earlier full
//! run), `--only dovecot` Dovecot alone; the tables then show the other
//! side as NaN.

#[path = "common/corpus.rs"]
mod corpus;

use aerogramme_tests::{free_port, wait_for, Node};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "bench-pw";
const RCPT: &str = "alice@example.org";

struct Args {
    corpus: Option<PathBuf>,
    clients: usize,
    messages: Option<usize>,
    rounds: usize,
    scale: usize,
    sections: Vec<String>,
    /// Dovecot's mailbox format: maildir (default), sdbox or mdbox.
    format: String,
    /// Measure only this server (`aerogramme` or `dovecot`); both when None.
    only: Option<String>,
}

/// Dovecot's mailbox format for this run.
static FORMAT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn args() -> Args {
    let mut a = Args {
        corpus: None,
        clients: 10,
        messages: None,
        rounds: 200,
        scale: 1,
        sections: Vec::new(),
        format: "maildir".into(),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = |d: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(d);
        match x.as_str() {
            "--corpus" => a.corpus = it.next().map(PathBuf::from),
            "--clients" => a.clients = num(10).max(1),
            "--messages" => a.messages = Some(num(usize::MAX)),
            "--rounds" => a.rounds = num(200).max(1),
            "--scale" => a.scale = num(1).max(1),
            "--dovecot-format" => a.format = it.next().unwrap_or_else(|| "maildir".into()),
            "--only" => a.only = it.next(),
            "lmtp" | "idle" | "imap" => a.sections.push(x),
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    if a.sections.is_empty() {
        a.sections = vec!["lmtp".into(), "idle".into(), "imap".into()];
    }
    a
}

// ---------------------------------------------------------------- servers

/// A server under test: where to speak IMAP and LMTP to it.
struct Server {
    name: &'static str,
    imap: SocketAddr,
    lmtp: SocketAddr,
    _node: Option<Node>,
    _dovecot: Option<Dovecot>,
}

fn aerogramme() -> Server {
    let node = Node::start();
    node.add_user(USER, PASSWORD);
    Server {
        name: "aerogramme",
        imap: node.imap,
        lmtp: node.lmtp,
        _node: Some(node),
        _dovecot: None,
    }
}

/// Dovecot with a private configuration, run in the foreground as our child.
struct Dovecot {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dovecot() -> Server {
    let bin = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            eprintln!(
                "Dovecot is not installed: `apt-get install dovecot-imapd dovecot-lmtpd` \
                 (this benchmark runs it beside Aerogramme)"
            );
            std::process::exit(2)
        });
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let chmod = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    chmod(root);
    for d in ["run", "state", "mail"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let st = Command::new("chown")
        .arg("nobody:nogroup")
        .arg(root.join("mail"))
        .status()
        .expect("chown");
    assert!(st.success(), "chown nobody:nogroup");
    let (imap, lmtp) = (free_port(), free_port());
    let r = root.display();
    let fmt = FORMAT.get().map_or("maildir", String::as_str);
    let conf = format!(
        "base_dir = {r}/run\n\
         state_dir = {r}/state\n\
         instance_name = dovecot-bench-{imap}\n\
         protocols = imap lmtp\n\
         listen = 127.0.0.1\n\
         ssl = no\n\
         disable_plaintext_auth = no\n\
         auth_mechanisms = plain login\n\
         auth_username_format = %Ln\n\
         log_path = {r}/dovecot.log\n\
         mail_location = {fmt}:{r}/mail/%u\n\
         first_valid_uid = 1\n\
         mail_uid = nobody\n\
         mail_gid = nogroup\n\
         mail_max_userip_connections = 1000\n\
         default_login_user = dovenull\n\
         default_internal_user = dovecot\n\
         passdb {{\n  driver = static\n  args = password={PASSWORD}\n}}\n\
         userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={r}/mail/%u\n}}\n\
         service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
         service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {lmtp}\n  }}\n}}\n"
    );
    let path = root.join("dovecot.conf");
    std::fs::write(&path, conf).expect("dovecot.conf");
    let child = Command::new(bin)
        .arg("-F")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run dovecot");
    let (imap, lmtp): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{imap}").parse().expect("addr"),
        format!("127.0.0.1:{lmtp}").parse().expect("addr"),
    );
    let dc = Dovecot { child, _dir: dir };
    wait_for(imap);
    wait_for(lmtp);
    Server {
        name: "dovecot",
        imap,
        lmtp,
        _node: None,
        _dovecot: Some(dc),
    }
}

// ---------------------------------------------------------------- clients

/// A minimal blocking IMAP client: tagged commands, literals in responses.
struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    n: u32,
}

/// What a command got back.
struct Resp {
    /// Untagged lines (literal contents left out).
    lines: Vec<String>,
    /// Bytes received in literals.
    literal_bytes: usize,
}

impl Imap {
    fn connect(addr: SocketAddr) -> Imap {
        let s = TcpStream::connect(addr).expect("connect IMAP");
        s.set_nodelay(true).ok();
        let mut c = Imap {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
            n: 0,
        };
        let mut greeting = String::new();
        c.r.read_line(&mut greeting).expect("greeting");
        c.ok(&format!("LOGIN {USER} {PASSWORD}"));
        c
    }

    /// One response line, literals read (and counted) in place.
    fn line(&mut self, literal_bytes: &mut usize) -> String {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = self.r.read_until(b'\n', &mut buf).expect("read");
            assert!(n > 0, "connection closed");
            let lit = buf.strip_suffix(b"}\r\n").and_then(|b| {
                let open = b.iter().rposition(|&c| c == b'{')?;
                std::str::from_utf8(&b[open + 1..])
                    .ok()?
                    .parse::<usize>()
                    .ok()
            });
            out.extend_from_slice(&buf);
            match lit {
                Some(len) => {
                    let mut data = vec![0; len];
                    self.r.read_exact(&mut data).expect("literal");
                    *literal_bytes += len;
                }
                None => return String::from_utf8_lossy(&out).into_owned(),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> String {
        self.n += 1;
        let tag = format!("a{}", self.n);
        let mut v = format!("{tag} ").into_bytes();
        v.extend_from_slice(bytes);
        self.w.write_all(&v).expect("write");
        tag
    }

    fn wait(&mut self, tag: &str) -> Result<Resp, String> {
        let mut lines = Vec::new();
        let mut literal_bytes = 0;
        loop {
            let l = self.line(&mut literal_bytes);
            if let Some(rest) = l.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                return if rest.starts_with("OK") {
                    Ok(Resp {
                        lines,
                        literal_bytes,
                    })
                } else {
                    Err(l)
                };
            }
            lines.push(l);
        }
    }

    fn ok(&mut self, cmd: &str) -> Resp {
        let tag = self.send(format!("{cmd}\r\n").as_bytes());
        self.wait(&tag)
            .unwrap_or_else(|e| panic!("{cmd:.60}: {}", e.trim_end()))
    }

    /// APPEND with a non-synchronizing literal (both servers offer LITERAL+).
    fn append(&mut self, mailbox: &str, msg: &[u8]) {
        let mut v = format!("APPEND {mailbox} {{{}+}}\r\n", msg.len()).into_bytes();
        v.extend_from_slice(msg);
        v.extend_from_slice(b"\r\n");
        let tag = self.send(&v);
        self.wait(&tag)
            .unwrap_or_else(|e| panic!("APPEND: {}", e.trim_end()));
    }

    fn exists(r: &Resp) -> u32 {
        r.lines
            .iter()
            .find_map(|l| {
                l.strip_prefix("* ")?
                    .strip_suffix(" EXISTS\r\n")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }
}

/// A minimal blocking LMTP client (PIPELINING: MAIL, RCPT and DATA in one write).
struct Lmtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Lmtp {
    fn connect(addr: SocketAddr) -> Lmtp {
        let s = TcpStream::connect(addr).expect("connect LMTP");
        s.set_nodelay(true).ok();
        let mut c = Lmtp {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        };
        c.reply(220);
        c.w.write_all(b"LHLO bench.example.net\r\n").expect("LHLO");
        c.reply(250);
        c
    }

    fn reply(&mut self, want: u16) {
        loop {
            let mut l = String::new();
            let n = self.r.read_line(&mut l).expect("read LMTP");
            assert!(n > 0, "LMTP connection closed");
            let code: u16 = l.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            assert_eq!(code, want, "LMTP: {}", l.trim_end());
            if l.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }

    /// Delivers `msg` (CRLF lines) to RCPT; returns when the 250 is read.
    fn deliver(&mut self, msg: &[u8]) {
        let mut v =
            format!("MAIL FROM:<bench@example.net>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n").into_bytes();
        self.w.write_all(&v).expect("write");
        self.reply(250);
        self.reply(250);
        self.reply(354);
        v.clear();
        let mut start = true;
        for &b in msg {
            if start && b == b'.' {
                v.push(b'.');
            }
            v.push(b);
            start = b == b'\n';
        }
        if !v.ends_with(b"\r\n") {
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b".\r\n");
        self.w.write_all(&v).expect("write");
        self.reply(250);
    }
}

// ---------------------------------------------------------------- measures

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    pct(&v, 0.5)
}

/// Runs `f` on `clients` threads, client `c` getting messages `c, c+N, ...`;
/// returns seconds.
fn concurrently(
    msgs: &Arc<Vec<Vec<u8>>>,
    clients: usize,
    f: impl Fn(usize, &[&[u8]]) + Send + Sync + 'static,
) -> f64 {
    let f = Arc::new(f);
    let barrier = Arc::new(std::sync::Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (msgs, f, barrier) = (msgs.clone(), f.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mine: Vec<&[u8]> = msgs
                    .iter()
                    .skip(c)
                    .step_by(clients)
                    .map(Vec::as_slice)
                    .collect();
                barrier.wait();
                f(c, &mine);
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    for h in handles {
        h.join().expect("client thread");
    }
    t.elapsed().as_secs_f64()
}

/// LMTP throughput: every message once, `clients` connections.
fn lmtp_throughput(s: &Server, msgs: &Arc<Vec<Vec<u8>>>, clients: usize) -> f64 {
    let addr = s.lmtp;
    // Connections are opened before the clock starts.
    let conns: Arc<Vec<std::sync::Mutex<Option<Lmtp>>>> = Arc::new(
        (0..clients)
            .map(|_| std::sync::Mutex::new(Some(Lmtp::connect(addr))))
            .collect(),
    );
    let c2 = conns.clone();
    let secs = concurrently(msgs, clients, move |c, mine| {
        let mut l = c2[c].lock().unwrap().take().expect("connection");
        for m in mine {
            l.deliver(m);
        }
    });
    let mut imap = Imap::connect(s.imap);
    let st = imap.ok("STATUS INBOX (MESSAGES)");
    let want = format!("(MESSAGES {})", msgs.len());
    assert!(
        st.lines.iter().any(|l| l.contains(&want)),
        "{}: INBOX should hold {} messages: {:?}",
        s.name,
        msgs.len(),
        st.lines
    );
    msgs.len() as f64 / secs
}

/// Latency to an IDLE notification: an IMAP client idles on `mailbox`;
/// `rounds` times, `trigger` adds one message and returns when it is
/// acknowledged; we wait for the matching EXISTS before the next one.
/// Returns (ms from acknowledgement, ms from the start of the trigger),
/// sorted, and how many notifications came before the acknowledgement.
fn idle_latency(
    s: &Server,
    mailbox: &str,
    rounds: usize,
    mut trigger: impl FnMut(usize),
) -> (Vec<f64>, Vec<f64>, usize) {
    let mut idler = Imap::connect(s.imap);
    let sel = idler.ok(&format!("SELECT {mailbox}"));
    let base = Imap::exists(&sel);
    let (tx, rx) = mpsc::channel::<(u32, Instant)>();
    idler.send(b"IDLE\r\n");
    let mut lb = 0;
    let cont = idler.line(&mut lb);
    assert!(cont.starts_with('+'), "IDLE: {cont}");
    let mut reader = idler.r;
    let reader_thread = std::thread::spawn(move || {
        let mut l = String::new();
        loop {
            l.clear();
            match reader.read_line(&mut l) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let now = Instant::now();
            if let Some(n) = l
                .strip_prefix("* ")
                .and_then(|r| r.strip_suffix(" EXISTS\r\n"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                if tx.send((n, now)).is_err() {
                    return;
                }
            }
            if l.starts_with("a") {
                return; // the IDLE's tagged OK after DONE
            }
        }
    });
    let (mut from_ack, mut from_start, mut early) = (Vec::new(), Vec::new(), 0);
    for i in 0..rounds {
        let t0 = Instant::now();
        trigger(i);
        let ack = Instant::now();
        let want = base + i as u32 + 1;
        let note = loop {
            let (n, at) = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{}: no EXISTS {want} within 30 s", s.name));
            if n >= want {
                break at;
            }
        };
        if note < ack {
            early += 1;
        }
        from_ack.push(note.saturating_duration_since(ack).as_secs_f64() * 1e3);
        from_start.push(note.saturating_duration_since(t0).as_secs_f64() * 1e3);
    }
    idler.w.write_all(b"DONE\r\n").expect("DONE");
    let _ = reader_thread.join();
    from_ack.sort_by(|a, b| a.total_cmp(b));
    from_start.sort_by(|a, b| a.total_cmp(b));
    (from_ack, from_start, early)
}

struct Sample {
    what: String,
    aero: f64,
    dove: f64,
    unit: &'static str,
    /// Whether more is better (rates) or less (times).
    higher_better: bool,
}

fn print_table(title: &str, rows: &[Sample]) {
    println!("\n{title}");
    println!(
        "{:<48} {:>14} {:>14} {:>10}",
        "", "aerogramme", "dovecot", "ratio"
    );
    for r in rows {
        // The ratio reads "how many times better Aerogramme is".
        let ratio = if r.higher_better {
            r.aero / r.dove
        } else {
            r.dove / r.aero
        };
        println!(
            "{:<48} {:>10.2} {:<3} {:>10.2} {:<3} {:>9.2}x",
            r.what, r.aero, r.unit, r.dove, r.unit, ratio
        );
    }
    println!(
        "(ratio > 1: Aerogramme better; rates are aerogramme/dovecot, times dovecot/aerogramme)"
    );
}

fn main() {
    let a = args();
    assert!(
        ["maildir", "sdbox", "mdbox"].contains(&a.format.as_str()),
        "--dovecot-format: maildir, sdbox or mdbox"
    );
    assert!(
        a.only
            .as_deref()
            .is_none_or(|o| ["aerogramme", "dovecot"].contains(&o)),
        "--only: aerogramme or dovecot"
    );
    FORMAT.set(a.format.clone()).expect("set once");
    let (source, mut msgs) = match corpus::corpus_dir(a.corpus.clone()) {
        Some(dir) => (
            format!("SpamAssassin corpus ({})", dir.display()),
            corpus::load(&dir),
        ),
        None => {
            eprintln!("the corpus is unavailable (npm failed?); give it with --corpus DIR");
            std::process::exit(2)
        }
    };
    if let Some(n) = a.messages {
        msgs.truncate(n);
    }
    assert!(!msgs.is_empty(), "no messages in the corpus");
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    println!(
        "{} messages, {:.1} MB, from {source}; {} clients; loopback TCP; {} cores; Dovecot {}",
        msgs.len(),
        bytes as f64 / 1e6,
        a.clients,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.format,
    );
    println!("load average at start: {}", loadavg());
    let msgs = Arc::new(msgs);
    let has = |s: &str| a.sections.iter().any(|x| x == s);
    // The servers measured: both, or the one `--only` names.
    let servers: Vec<(usize, fn() -> Server)> = [aerogramme as fn() -> Server, dovecot]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| {
            a.only
                .as_deref()
                .is_none_or(|o| o == ["aerogramme", "dovecot"][*i])
        })
        .collect();

    if has("lmtp") || has("idle") {
        let mut rows = Vec::new();
        // Per server; one not measured (`--only`) keeps no samples (NaN).
        let mut lat: [_; 2] = Default::default();
        let mut rates = [0.0; 2];
        for &(i, mk) in &servers {
            let s = mk();
            if has("lmtp") {
                rates[i] = lmtp_throughput(&s, &msgs, a.clients);
                println!("{}: LMTP {:.0} deliveries/s", s.name, rates[i]);
            }
            if has("idle") {
                let addr = s.lmtp;
                let mut l = Lmtp::connect(addr);
                let m = msgs.clone();
                let lm = idle_latency(&s, "INBOX", a.rounds, |i| l.deliver(&m[i % m.len()]));
                let mut ap = Imap::connect(s.imap);
                ap.ok("CREATE idlebox");
                let m = msgs.clone();
                let am = idle_latency(&s, "idlebox", a.rounds, |i| {
                    ap.append("idlebox", &m[i % m.len()])
                });
                println!(
                    "{}: IDLE after LMTP 250 p50 {:.2} ms p99 {:.2} ms; after APPEND OK p50 {:.2} ms p99 {:.2} ms",
                    s.name,
                    pct(&lm.0, 0.5),
                    pct(&lm.0, 0.99),
                    pct(&am.0, 0.5),
                    pct(&am.0, 0.99)
                );
                lat[i] = (lm, am);
            }
        }
        if has("lmtp") {
            rows.push(Sample {
                what: format!("LMTP deliveries/s, {} clients", a.clients),
                aero: rates[0],
                dove: rates[1],
                unit: "/s",
                higher_better: true,
            });
        }
        if has("idle") {
            for (k, label) in [(0usize, "LMTP 250"), (1, "APPEND OK")] {
                let get = |i: usize| if k == 0 { &lat[i].0 } else { &lat[i].1 };
                for (p, pn) in [(0.5, "p50"), (0.99, "p99")] {
                    rows.push(Sample {
                        what: format!("{label} -> IDLE EXISTS {pn} ({} rounds)", a.rounds),
                        aero: pct(&get(0).0, p),
                        dove: pct(&get(1).0, p),
                        unit: "ms",
                        higher_better: false,
                    });
                }
                rows.push(Sample {
                    what: format!("{label}: send start -> IDLE EXISTS p50"),
                    aero: pct(&get(0).1, 0.5),
                    dove: pct(&get(1).1, 0.5),
                    unit: "ms",
                    higher_better: false,
                });
                println!(
                    "{label}: EXISTS before the acknowledgement: aerogramme {} / dovecot {} of {}",
                    get(0).2,
                    get(1).2,
                    a.rounds
                );
            }
        }
        print_table("LMTP delivery and IDLE notification (issue 7)", &rows);
    }

    if has("imap") {
        let mut res: [Vec<(String, f64, &'static str, bool)>; 2] = Default::default();
        for &(i, mk) in &servers {
            let s = mk();
            res[i] = imap_suite(&s, &msgs, a.clients, a.scale);
        }
        // A server not measured (`--only`) shows as NaN.
        let len = res[0].len().max(res[1].len());
        let nan = |r: &Vec<(String, f64, &'static str, bool)>, k: usize| {
            r.get(k).map_or(f64::NAN, |x| x.1)
        };
        let rows: Vec<Sample> = (0..len)
            .map(|k| (res[0].get(k).or(res[1].get(k)).expect("a row"), k))
            .map(|(x, k)| Sample {
                what: x.0.clone(),
                aero: nan(&res[0], k),
                dove: nan(&res[1], k),
                unit: x.2,
                higher_better: x.3,
            })
            .collect();
        print_table("IMAP (issue 6)", &rows);
    }
    println!("load average at end: {}", loadavg());
}

/// The machine's load (other work running beside the benchmark skews it).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The IMAP workload on one server; returns (label, value, unit, higher is better).
fn imap_suite(
    s: &Server,
    msgs: &Arc<Vec<Vec<u8>>>,
    clients: usize,
    scale: usize,
) -> Vec<(String, f64, &'static str, bool)> {
    let mut out = Vec::new();
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    let mut c = Imap::connect(s.imap);
    c.ok("CREATE one");
    c.ok("CREATE bench");
    // 1 client, up to 1,000 messages.
    let few: Vec<&Vec<u8>> = msgs.iter().take(1000).collect();
    let t = Instant::now();
    for m in &few {
        c.append("one", m);
    }
    let r = few.len() as f64 / t.elapsed().as_secs_f64();
    println!("{}: APPEND 1 client {r:.0} msg/s", s.name);
    out.push(("APPEND, 1 client".to_string(), r, "/s", true));
    // N clients, the whole corpus `scale` times into `bench`.
    let conns: Arc<Vec<std::sync::Mutex<Option<Imap>>>> = Arc::new(
        (0..clients)
            .map(|_| std::sync::Mutex::new(Some(Imap::connect(s.imap))))
            .collect(),
    );
    let mut secs = 0.0;
    for _ in 0..scale {
        let c2 = conns.clone();
        secs += concurrently(msgs, clients, move |c, mine| {
            let mut conn = c2[c].lock().unwrap().take().expect("connection");
            for m in mine {
                conn.append("bench", m);
            }
            *c2[c].lock().unwrap() = Some(conn);
        });
    }
    let n = msgs.len() * scale;
    let r = n as f64 / secs;
    println!(
        "{}: APPEND {clients} clients {r:.0} msg/s ({:.1} MB/s)",
        s.name,
        (bytes * scale) as f64 / 1e6 / secs
    );
    out.push((format!("APPEND, {clients} clients"), r, "/s", true));
    drop(conns);

    // Commands on the `bench` mailbox, one client, each timed `reps` times
    // (median); `between`, when given, runs untimed after each timed run.
    let mut ms = |label: String, cmd: &str, c: &mut Imap, reps: usize, between: Option<&str>| {
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..reps {
            let t = Instant::now();
            let r = c.ok(cmd);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            last = Some(r);
            if let Some(b) = between {
                c.ok(b);
            }
        }
        let v = median(times);
        println!("{}: {label}: {v:.2} ms", s.name);
        out.push((label, v, "ms", false));
        last.expect("one run")
    };
    let mut c = Imap::connect(s.imap);
    // The first SELECT after the APPENDs, then the same SELECT repeated
    // (sub-millisecond: 50 runs for a stable median).
    ms("SELECT, first".into(), "SELECT bench", &mut c, 1, None);
    let sel = ms(
        format!("SELECT ({n} messages)"),
        "SELECT bench",
        &mut c,
        50,
        None,
    );
    let exists = Imap::exists(&sel);
    assert_eq!(exists as usize, n, "{}: EXISTS after the APPENDs", s.name);
    ms(
        "UID FETCH 1:* (FLAGS)".into(),
        "UID FETCH 1:* (FLAGS)",
        &mut c,
        3,
        None,
    );
    let lo = exists.saturating_sub(999).max(1);
    ms(
        "FETCH ENVELOPE of the last 1,000".into(),
        &format!("FETCH {lo}:* (ENVELOPE)"),
        &mut c,
        3,
        None,
    );
    let r = ms(
        "UID FETCH 1:* (BODY.PEEK[])".into(),
        "UID FETCH 1:* (BODY.PEEK[])",
        &mut c,
        1,
        None,
    );
    // Dovecot rewrites a few malformed line ends: allow a handful of bytes.
    let sent = bytes * scale;
    assert!(
        r.literal_bytes as f64 >= sent as f64 * 0.999,
        "{}: fetched {} bytes of {sent}",
        s.name,
        r.literal_bytes,
    );
    if r.literal_bytes != sent {
        println!(
            "{}:   fetched {} bytes, appended {sent}",
            s.name, r.literal_bytes
        );
    }
    let hits = |r: &Resp| {
        r.lines
            .iter()
            .filter_map(|l| l.strip_prefix("* SEARCH"))
            .map(|l| l.split_whitespace().count())
            .sum::<usize>()
    };
    let r = ms(
        "UID SEARCH HEADER Subject \"free\"".into(),
        "UID SEARCH HEADER Subject \"free\"",
        &mut c,
        3,
        None,
    );
    println!("{}:   {} hits", s.name, hits(&r));
    let r = ms(
        "SEARCH BODY \"unsubscribe\"".into(),
        "SEARCH BODY \"unsubscribe\"",
        &mut c,
        1,
        None,
    );
    println!("{}:   {} hits", s.name, hits(&r));
    // Five times, each undone untimed (so that each run changes every
    // message).
    ms(
        "STORE 1:* +FLAGS (\\Seen)".into(),
        "STORE 1:* +FLAGS (\\Seen)",
        &mut c,
        5,
        Some("STORE 1:* -FLAGS.SILENT (\\Seen)"),
    );
    c.ok("LOGOUT");
    out
}
