//! One LMTP session over any `AsyncRead + AsyncWrite` stream.
//!
//! Input is read into a fixed buffer; commands are taken from it one line
//! at a time and their replies collected, and the replies are written out
//! only when the session needs more input: a pipelined batch (RFC 2920) is
//! answered with one write, in order.

use super::backend::Backend;
use super::data::DotDecoder;
use super::parser::{parse_command, Command};
use super::reply::{write_multiline, Reply};
use super::LmtpConfig;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Size of a session's input buffer (at least twice the line limit).
const INPUT_BUFFER: usize = 32 * 1024;

const TOO_BIG: Reply = Reply::new(
    552,
    "5.3.4",
    "Message size exceeds fixed maximum message size",
);
/// Largest buffer allocated for a message before its octets arrive.
const FIRST_ALLOCATION: u64 = 1 << 20;
const OK: Reply = Reply::new(250, "2.0.0", "OK");

/// Runs one session to its end (QUIT, end of input, idle timeout, I/O
/// error or server shutdown). `shutdown` turning `true` ends the session
/// with `421 4.3.2` the next time it waits for a command (a transfer in
/// progress is finished first). Never panics on any input.
pub async fn run_session<S, B>(
    io: S,
    backend: Arc<B>,
    cfg: Arc<LmtpConfig>,
    shutdown: Option<watch::Receiver<bool>>,
    peer: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: Backend,
{
    let cap = INPUT_BUFFER.max(cfg.line_limit() * 2);
    let mut s = Session {
        io,
        backend,
        cfg,
        buf: vec![0; cap],
        start: 0,
        end: 0,
        out: Vec::with_capacity(512),
        greeted: false,
        tx: None,
        shutdown,
    };
    tracing::debug!(%peer, "LMTP session opened");
    match s.run().await {
        Ok(()) => tracing::debug!(%peer, "LMTP session closed"),
        Err(e) => tracing::debug!(%peer, error = %e, "LMTP session ended"),
    }
}

/// Why the input stopped.
enum Input {
    Ready,
    Eof,
    Timeout,
    Shutdown,
}

/// A command line, or why there is none.
enum Line {
    Cmd(Vec<u8>),
    TooLong,
    Closed(Input),
}

/// What to do after a command.
enum Flow {
    Continue,
    Close(Input),
}

/// The mail transaction in progress.
struct Transaction<R> {
    from: String,
    size: Option<u64>,
    /// Accepted recipients in RCPT order; `None` for a repeated address
    /// (delivered once, answered like the first).
    rcpts: Vec<(String, Option<R>)>,
    /// Set by the first BDAT.
    chunking: Option<Chunking>,
}

struct Chunking {
    message: Vec<u8>,
    failed: Option<Reply>,
}

struct Session<S, B: Backend> {
    io: S,
    backend: Arc<B>,
    cfg: Arc<LmtpConfig>,
    /// Input octets are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Replies not written yet.
    out: Vec<u8>,
    greeted: bool,
    tx: Option<Transaction<B::Recipient>>,
    shutdown: Option<watch::Receiver<bool>>,
}

async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Grows `v` so that `extra` more octets fit, doubling but never past
/// `cap_limit` (so a message never costs more than its limit).
fn reserve_bounded(v: &mut Vec<u8>, extra: usize, cap_limit: usize) {
    let need = v.len().saturating_add(extra).min(cap_limit);
    if need > v.capacity() {
        let target = v.capacity().saturating_mul(2).max(need).min(cap_limit);
        v.reserve_exact(target - v.len());
    }
}

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: Backend,
{
    fn reply(&mut self, r: &Reply) {
        r.write_to(&mut self.out);
    }

    /// Room reserved in front of a message for the trace headers: each
    /// address came on a command line, so it is shorter than the limit.
    fn headroom(&self) -> usize {
        2 * self.cfg.line_limit() + 64
    }

    async fn run(&mut self) -> io::Result<()> {
        let greeting = format!("{} LMTP Aerogramme ready", self.cfg.hostname);
        self.reply(&Reply::plain(220, greeting));
        let end = loop {
            let line = match self.next_line().await? {
                Line::Cmd(l) => l,
                Line::TooLong => {
                    self.reply(&Reply::new(500, "5.5.2", "Line too long"));
                    continue;
                }
                Line::Closed(why) => break why,
            };
            let flow = match parse_command(&line) {
                Ok(cmd) => self.handle(cmd).await?,
                Err(r) => {
                    self.reply(&r);
                    Flow::Continue
                }
            };
            if let Flow::Close(why) = flow {
                break why;
            }
        };
        let host = self.cfg.hostname.clone();
        match end {
            Input::Timeout => self.reply(&Reply::with_text(
                421,
                "4.4.2",
                format!("{host} Idle timeout, closing connection"),
            )),
            Input::Shutdown => self.reply(&Reply::with_text(
                421,
                "4.3.2",
                format!("{host} Service shutting down, closing connection"),
            )),
            Input::Eof | Input::Ready => {}
        }
        self.write_out().await?;
        let _ = tokio::time::timeout(self.cfg.idle_timeout, self.io.shutdown()).await;
        Ok(())
    }

    /// Writes the pending replies (bounded by the idle timeout, so a
    /// client that never reads cannot hold the session forever).
    async fn write_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.cfg.idle_timeout, write).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timeout")),
        }
        self.out.clear();
        if self.out.capacity() > 64 * 1024 {
            self.out.shrink_to(4096);
        }
        Ok(())
    }

    /// Flushes the replies, then reads more input into the buffer.
    async fn fill(&mut self, watch_shutdown: bool) -> io::Result<Input> {
        self.write_out().await?;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Callers never ask with a full buffer; refuse rather than spin.
            return Err(io::Error::other("input buffer full"));
        }
        let Session {
            io,
            buf,
            end,
            shutdown,
            cfg,
            ..
        } = self;
        let read = tokio::time::timeout(cfg.idle_timeout, io.read(&mut buf[*end..]));
        let r = match shutdown {
            Some(rx) if watch_shutdown => tokio::select! {
                biased;
                r = read => r,
                () = wait_shutdown(rx) => return Ok(Input::Shutdown),
            },
            _ => read.await,
        };
        match r {
            Err(_) => Ok(Input::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok(0)) => Ok(Input::Eof),
            Ok(Ok(n)) => {
                *end += n;
                Ok(Input::Ready)
            }
        }
    }

    /// The next command line (LF or CRLF ended, line end removed).
    async fn next_line(&mut self) -> io::Result<Line> {
        let limit = self.cfg.line_limit();
        let mut scanned = 0;
        loop {
            let from = self.start + scanned;
            if let Some(p) = self.buf[from..self.end].iter().position(|&b| b == b'\n') {
                let lf = from + p;
                let too_long = lf + 1 - self.start > limit;
                let mut stop = lf;
                if stop > self.start && self.buf[stop - 1] == b'\r' {
                    stop -= 1;
                }
                let line = self.buf[self.start..stop].to_vec();
                self.start = lf + 1;
                return Ok(if too_long {
                    Line::TooLong
                } else {
                    Line::Cmd(line)
                });
            }
            scanned = self.end - self.start;
            if scanned >= limit {
                return self.skip_line().await;
            }
            match self.fill(true).await? {
                Input::Ready => {}
                other => return Ok(Line::Closed(other)),
            }
        }
    }

    /// Discards input up to and including the next LF.
    async fn skip_line(&mut self) -> io::Result<Line> {
        loop {
            if let Some(p) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                self.start += p + 1;
                return Ok(Line::TooLong);
            }
            self.start = self.end;
            match self.fill(true).await? {
                Input::Ready => {}
                other => return Ok(Line::Closed(other)),
            }
        }
    }

    async fn handle(&mut self, cmd: Command) -> io::Result<Flow> {
        match cmd {
            Command::Lhlo(_) => {
                self.greeted = true;
                self.tx = None;
                let lines = [
                    self.cfg.hostname.clone(),
                    "PIPELINING".into(),
                    "ENHANCEDSTATUSCODES".into(),
                    format!("SIZE {}", self.cfg.max_message_size),
                    "8BITMIME".into(),
                    "CHUNKING".into(),
                ];
                write_multiline(&mut self.out, 250, &lines);
            }
            Command::Mail { from, size, .. } => {
                let r = if !self.greeted {
                    Reply::new(503, "5.5.1", "Send LHLO first")
                } else if self.tx.is_some() {
                    Reply::new(503, "5.5.1", "Nested MAIL command")
                } else if size.is_some_and(|s| s > self.cfg.max_message_size as u64) {
                    TOO_BIG
                } else {
                    self.tx = Some(Transaction {
                        from,
                        size,
                        rcpts: Vec::new(),
                        chunking: None,
                    });
                    Reply::new(250, "2.1.0", "Sender OK")
                };
                self.reply(&r);
            }
            Command::Rcpt { to } => {
                let r = self.rcpt(to).await;
                self.reply(&r);
            }
            Command::Data => return self.data().await,
            Command::Bdat { size, last } => return self.bdat(size, last).await,
            Command::Rset => {
                self.tx = None;
                self.reply(&OK);
            }
            Command::Noop => self.reply(&OK),
            Command::Quit => {
                let bye = format!("{} closing connection", self.cfg.hostname);
                self.reply(&Reply::with_text(221, "2.0.0", bye));
                return Ok(Flow::Close(Input::Eof));
            }
            Command::Vrfy => self.reply(&Reply::new(
                252,
                "2.1.5",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help => self.reply(&Reply::new(
                214,
                "2.0.0",
                "Commands: LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY",
            )),
        }
        Ok(Flow::Continue)
    }

    async fn rcpt(&mut self, to: String) -> Reply {
        let max = self.cfg.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return Reply::new(503, "5.5.1", "Need MAIL command first");
        };
        if tx.chunking.is_some() {
            return Reply::new(503, "5.5.1", "RCPT not allowed during BDAT");
        }
        if tx.rcpts.len() >= max {
            return Reply::new(452, "4.5.3", "Too many recipients");
        }
        if tx.rcpts.iter().any(|(a, _)| *a == to) {
            tx.rcpts.push((to, None));
            return Reply::new(250, "2.1.5", "Recipient OK");
        }
        match self.backend.resolve(&to, tx.size).await {
            Ok(r) => {
                tx.rcpts.push((to, Some(r)));
                Reply::new(250, "2.1.5", "Recipient OK")
            }
            Err(e) => {
                tracing::debug!(rcpt = %to, error = %e, "LMTP recipient refused");
                e.reply()
            }
        }
    }

    /// A fresh message buffer: trace-header room, then the message. The
    /// declared size is only a hint, trusted up to [`FIRST_ALLOCATION`]
    /// (a client may declare the maximum and send nothing).
    fn new_message(&self, hint: Option<u64>) -> Vec<u8> {
        let headroom = self.headroom();
        let limit = self.cfg.max_message_size;
        let first = hint.map_or(64 * 1024, |h| {
            h.saturating_add(16).min(FIRST_ALLOCATION) as usize
        });
        let mut v = Vec::with_capacity(headroom + first.min(limit));
        v.resize(headroom, 0);
        v
    }

    async fn data(&mut self) -> io::Result<Flow> {
        let refusal = match &self.tx {
            None => Some("Need MAIL command first"),
            Some(tx) if tx.chunking.is_some() => Some("DATA not allowed during BDAT"),
            Some(tx) if tx.rcpts.is_empty() => Some("No valid recipients"),
            Some(_) => None,
        };
        if let Some(text) = refusal {
            self.reply(&Reply::new(503, "5.5.1", text));
            return Ok(Flow::Continue);
        }
        self.reply(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        let limit = self.cfg.max_message_size;
        let cap_limit = self.headroom() + limit;
        let mut message = self.new_message(self.tx.as_ref().and_then(|t| t.size));
        let mut dec = DotDecoder::new(limit);
        loop {
            let input = &self.buf[self.start..self.end];
            if !dec.overflowed() {
                reserve_bounded(&mut message, input.len().saturating_mul(2), cap_limit);
            }
            let (n, done) = dec.decode(input, &mut message);
            self.start += n;
            if dec.overflowed() && message.capacity() > 0 {
                message = Vec::new();
            }
            if done {
                break;
            }
            match self.fill(false).await? {
                Input::Ready => {}
                other => return Ok(Flow::Close(other)),
            }
        }
        let Some(tx) = self.tx.take() else {
            return Ok(Flow::Continue);
        };
        let failure = dec.overflowed().then_some(TOO_BIG);
        self.deliver_all(tx, message, failure).await;
        Ok(Flow::Continue)
    }

    /// Reads `size` octets of a chunk: into `sink` when given, else
    /// thrown away.
    async fn read_chunk(&mut self, size: u64, mut sink: Option<&mut Vec<u8>>) -> io::Result<Input> {
        let mut remaining = size;
        loop {
            let avail = ((self.end - self.start) as u64).min(remaining) as usize;
            if let Some(v) = sink.as_deref_mut() {
                v.extend_from_slice(&self.buf[self.start..self.start + avail]);
            }
            self.start += avail;
            remaining -= avail as u64;
            if remaining == 0 {
                return Ok(Input::Ready);
            }
            match self.fill(false).await? {
                Input::Ready => {}
                other => return Ok(other),
            }
        }
    }

    async fn bdat(&mut self, size: u64, last: bool) -> io::Result<Flow> {
        let refusal = match &self.tx {
            None => Some("Need MAIL command first"),
            Some(tx) if tx.rcpts.is_empty() => Some("No valid recipients"),
            Some(_) => None,
        };
        if let Some(text) = refusal {
            // The chunk follows the command whatever we think of it.
            match self.read_chunk(size, None).await? {
                Input::Ready => {}
                other => return Ok(Flow::Close(other)),
            }
            self.reply(&Reply::new(503, "5.5.1", text));
            return Ok(Flow::Continue);
        }
        let limit = self.cfg.max_message_size;
        let cap_limit = self.headroom() + limit;
        let headroom = self.headroom();
        let Some(mut tx) = self.tx.take() else {
            return Ok(Flow::Continue);
        };
        let mut chunking = match tx.chunking.take() {
            Some(c) => c,
            None => Chunking {
                message: self.new_message(tx.size.max(Some(size))),
                failed: None,
            },
        };
        let stored = chunking.message.len().saturating_sub(headroom) as u64;
        if chunking.failed.is_none() && stored.saturating_add(size) > limit as u64 {
            chunking.failed = Some(TOO_BIG);
            chunking.message = Vec::new();
        }
        let sink = if chunking.failed.is_none() {
            reserve_bounded(&mut chunking.message, size as usize, cap_limit);
            Some(&mut chunking.message)
        } else {
            None
        };
        match self.read_chunk(size, sink).await? {
            Input::Ready => {}
            other => return Ok(Flow::Close(other)),
        }
        if !last {
            let r = match &chunking.failed {
                Some(f) => f.clone(),
                None => Reply::with_text(250, "2.0.0", format!("{size} octets received")),
            };
            self.reply(&r);
            tx.chunking = Some(chunking);
            self.tx = Some(tx);
            return Ok(Flow::Continue);
        }
        self.deliver_all(tx, chunking.message, chunking.failed)
            .await;
        Ok(Flow::Continue)
    }

    /// Delivers the message to every recipient in order and queues one
    /// reply per recipient. `message` starts with [`Self::headroom`]
    /// spare octets, where each copy's trace headers are written.
    async fn deliver_all(
        &mut self,
        tx: Transaction<B::Recipient>,
        mut message: Vec<u8>,
        failure: Option<Reply>,
    ) {
        let headroom = self.headroom();
        let mut replies: Vec<Reply> = Vec::with_capacity(tx.rcpts.len());
        for (address, rcpt) in &tx.rcpts {
            let reply = match (&failure, rcpt) {
                (Some(f), _) => f.clone(),
                (None, None) => tx
                    .rcpts
                    .iter()
                    .position(|(a, _)| a == address)
                    .and_then(|j| replies.get(j).cloned())
                    .unwrap_or(OK),
                (None, Some(r)) => {
                    let trace = format!(
                        "Return-Path: <{}>\r\nDelivered-To: {}\r\n",
                        tx.from, address
                    );
                    let result = if trace.len() <= headroom {
                        let at = headroom - trace.len();
                        message[at..headroom].copy_from_slice(trace.as_bytes());
                        self.backend.deliver(r, &tx.from, &message[at..]).await
                    } else {
                        let mut copy = trace.into_bytes();
                        copy.extend_from_slice(&message[headroom..]);
                        self.backend.deliver(r, &tx.from, &copy).await
                    };
                    match result {
                        Ok(()) => {
                            tracing::debug!(rcpt = %address, "LMTP delivered");
                            Reply::with_text(250, "2.0.0", format!("<{address}> delivered"))
                        }
                        Err(e) => {
                            tracing::warn!(rcpt = %address, error = %e, "LMTP delivery failed");
                            e.reply()
                        }
                    }
                }
            };
            reply.write_to(&mut self.out);
            replies.push(reply);
        }
    }
}
