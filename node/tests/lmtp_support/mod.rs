//! A small LMTP client for the tests (`node/tests/lmtp.rs`) and the
//! benchmark (`node/benches/lmtp.rs`).
#![allow(dead_code)]

use aerogramme::lmtp::data::dot_stuff;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};

/// A reply: its code and its lines (without CRLF).
#[derive(Clone, Debug)]
pub struct Resp {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Resp {
    /// The enhanced status code of the last line, if any.
    pub fn status(&self) -> Option<&str> {
        let l = self.lines.last()?;
        let s = l.get(4..)?.split(' ').next()?;
        (s.len() >= 5 && s.as_bytes()[1] == b'.').then_some(s)
    }

    /// Code and enhanced status.
    pub fn cs(&self) -> (u16, &str) {
        (self.code, self.status().unwrap_or(""))
    }
}

pub struct Client<S> {
    rd: BufReader<ReadHalf<S>>,
    wr: WriteHalf<S>,
}

impl<S: AsyncRead + AsyncWrite> Client<S> {
    pub fn new(s: S) -> Self {
        let (r, w) = tokio::io::split(s);
        Client {
            rd: BufReader::new(r),
            wr: w,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("send");
        self.wr.flush().await.expect("flush");
    }

    /// Closes the sending side (the server sees the end of input).
    pub async fn finish(&mut self) {
        let _ = self.wr.shutdown().await;
    }

    /// Reads one (possibly multi-line) reply; `None` at end of stream.
    pub async fn try_reply(&mut self) -> Option<Resp> {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            let n = self.rd.read_line(&mut l).await.ok()?;
            if n == 0 {
                return None;
            }
            let l = l.trim_end_matches(['\r', '\n']).to_string();
            let code: u16 = l.get(..3).and_then(|c| c.parse().ok()).expect("reply code");
            let last = l.as_bytes().get(3) != Some(&b'-');
            lines.push(l);
            if last {
                return Some(Resp { code, lines });
            }
        }
    }

    pub async fn reply(&mut self) -> Resp {
        self.try_reply().await.expect("reply")
    }

    pub async fn cmd(&mut self, line: &str) -> Resp {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Reads `n` replies.
    pub async fn replies(&mut self, n: usize) -> Vec<Resp> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.reply().await);
        }
        v
    }

    /// Greeting and LHLO.
    pub async fn hello(&mut self) {
        assert_eq!(self.reply().await.code, 220);
        assert_eq!(self.cmd("LHLO client.test").await.code, 250);
    }

    /// One pipelined transaction: MAIL, RCPTs and DATA in one write, then
    /// the data. Returns the RCPT replies and the per-recipient replies.
    pub async fn transaction(
        &mut self,
        from: &str,
        rcpts: &[&str],
        message: &[u8],
    ) -> (Vec<Resp>, Vec<Resp>) {
        let mut cmds = format!("MAIL FROM:<{from}>\r\n");
        for r in rcpts {
            cmds.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        cmds.push_str("DATA\r\n");
        self.send(cmds.as_bytes()).await;
        assert_eq!(self.reply().await.code, 250, "MAIL");
        let rr = self.replies(rcpts.len()).await;
        let accepted = rr.iter().filter(|r| r.code == 250).count();
        let data = self.reply().await;
        if data.code != 354 {
            return (rr, vec![data]);
        }
        self.send(&dot_stuff(message)).await;
        let per = self.replies(accepted).await;
        (rr, per)
    }
}
