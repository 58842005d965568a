//! Live traffic on one long-lived stream per peer.
//!
//! The sequencing protocol's messages and new mail's chunks are small and
//! many (a delivery costs a dozen of them across the community). Sent as
//! requests, each would open a substream and negotiate its protocol, which
//! costs several times the message itself. Instead each node keeps one
//! outbound stream of [`PROTOCOL`] to each peer and writes them there,
//! length-framed as in [`wire`], coalescing what is queued into one write.
//!
//! A message queued while the stream is being (re)opened waits; one lost
//! with a broken stream is recovered by the protocol (the sequencing
//! protocol's timeouts, anti-entropy), as any message lost with a
//! connection. Reading: one task per inbound stream, at most
//! [`MAX_INBOUND_PER_PEER`] per peer; a frame over [`wire::MAX_FRAME`] ends
//! the stream and the peer is reported as misbehaving.
//!
//! **Repeated prefixes.** A sequencing message starts with its user and
//! mailbox (32 bytes after the tag), and a delivery sends several about one
//! mailbox over each link. Each direction of a stream keeps a table of the
//! last [`TABLE`] such prefixes, alike on both ends (a prefix is added when
//! a message carrying it in full is written or read, in the same order); a
//! message whose prefix is in the table travels as [`REF_TAG`], the index,
//! then the rest. A reference to no entry ends the stream and the peer is
//! reported. A new stream starts with an empty table.

use super::wire;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// The protocol name (its version is part of it).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/aerogramme/live/2");

/// Messages queued per peer before the oldest are dropped.
pub const MAX_QUEUE: usize = 8192;
/// Inbound live streams one peer may hold open at once (one is normal: a
/// new one replaces a broken one).
pub const MAX_INBOUND_PER_PEER: usize = 4;
/// Largest write: what is queued is coalesced up to this size.
const MAX_WRITE: usize = 256 * 1024;
/// Wait before opening a stream again after a failure.
const REOPEN_DELAY: Duration = Duration::from_millis(500);
/// The tag of an encoded sequencing message (`PeerMsg::Seq`).
const SEQ_TAG: u8 = 1;
/// The tag of a frame that names its prefix by index (no `PeerMsg` has it).
pub const REF_TAG: u8 = 0xfe;
/// Bytes after [`SEQ_TAG`] that a table entry holds (user and mailbox).
const PREFIX: usize = 32;
/// Prefixes each direction of a stream remembers.
pub const TABLE: usize = 64;

/// The prefixes one direction of a stream remembers; the writer and the
/// reader keep theirs alike.
#[derive(Default)]
pub struct Prefixes {
    seen: Vec<[u8; PREFIX]>,
    next: usize,
}

impl Prefixes {
    fn find(&self, p: &[u8]) -> Option<usize> {
        self.seen.iter().position(|s| s[..] == *p)
    }

    /// Adds `p` unless it is there, replacing the oldest entry when full.
    fn learn(&mut self, p: &[u8]) {
        let Ok(p) = <[u8; PREFIX]>::try_from(p) else {
            return;
        };
        if self.find(&p).is_some() {
            return;
        }
        if self.seen.len() < TABLE {
            self.seen.push(p);
        } else {
            self.seen[self.next] = p;
            self.next = (self.next + 1) % TABLE;
        }
    }

    /// Appends `m`'s frame to `buf`: a reference when its prefix is known.
    pub fn put(&mut self, buf: &mut Vec<u8>, m: &[u8]) {
        if m.first() == Some(&SEQ_TAG) && m.len() > PREFIX {
            let (head, rest) = m[1..].split_at(PREFIX);
            if let Some(i) = self.find(head) {
                let mut body = Vec::with_capacity(2 + rest.len());
                body.extend_from_slice(&[REF_TAG, i as u8]);
                body.extend_from_slice(rest);
                // Messages are far below 4 GiB (the core encodes bounded ones).
                let _ = wire::put_frame(buf, &body);
                return;
            }
            self.learn(head);
        }
        let _ = wire::put_frame(buf, m);
    }

    /// The message a frame's body stands for; `None` for a reference to
    /// no entry.
    pub fn expand(&mut self, body: Vec<u8>) -> Option<Vec<u8>> {
        match body.first() {
            Some(&REF_TAG) => {
                let p = self.seen.get(usize::from(*body.get(1)?))?;
                let mut m = Vec::with_capacity(1 + PREFIX + body.len() - 2);
                m.push(SEQ_TAG);
                m.extend_from_slice(p);
                m.extend_from_slice(&body[2..]);
                Some(m)
            }
            Some(&SEQ_TAG) if body.len() > PREFIX => {
                self.learn(&body[1..=PREFIX]);
                Some(body)
            }
            _ => Some(body),
        }
    }
}

/// What the reading tasks hand to the swarm task.
pub enum Inbound {
    /// A message from `peer`.
    Message(PeerId, Vec<u8>),
    /// `peer` sent an oversized frame or a reference to no prefix.
    Invalid(PeerId, String),
}

type Queue = VecDeque<Vec<u8>>;

/// The outbound side to one peer: a queue and the task that writes it.
pub struct Link {
    queue: Arc<Mutex<Queue>>,
    ready: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Starts writing to `peer` (the stream opens on the first message).
    pub fn open(control: libp2p_stream::Control, peer: PeerId) -> Link {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let ready = Arc::new(Notify::new());
        let task = tokio::spawn(write_loop(control, peer, queue.clone(), ready.clone()));
        Link { queue, ready, task }
    }

    /// Queues one encoded message; the oldest goes when the queue is full.
    pub fn send(&self, bytes: Vec<u8>) {
        if let Ok(mut q) = self.queue.lock() {
            if q.len() >= MAX_QUEUE {
                q.pop_front();
            }
            q.push_back(bytes);
        }
        self.ready.notify_one();
    }

    /// Messages waiting to be written.
    pub fn queued(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.len())
    }
}

impl Drop for Link {
    /// Stops the writer; dropping its stream resets it.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes what is queued, up to [`MAX_WRITE`] bytes, as one buffer of frames.
fn take_frames(queue: &Mutex<Queue>, prefixes: &mut Prefixes) -> Option<Vec<u8>> {
    let mut q = queue.lock().ok()?;
    let mut buf = Vec::new();
    while let Some(m) = q.front() {
        if !buf.is_empty() && buf.len() + 4 + m.len() > MAX_WRITE {
            break;
        }
        let m = q.pop_front()?;
        prefixes.put(&mut buf, &m);
    }
    (!buf.is_empty()).then_some(buf)
}

async fn write_loop(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    queue: Arc<Mutex<Queue>>,
    ready: Arc<Notify>,
) {
    loop {
        // Open the stream when there is something to send.
        while queue.lock().is_ok_and(|q| q.is_empty()) {
            ready.notified().await;
        }
        let mut stream = match control.open_stream(peer, PROTOCOL).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, "opening the live stream: {e}");
                tokio::time::sleep(REOPEN_DELAY).await;
                continue;
            }
        };
        let mut prefixes = Prefixes::default();
        loop {
            let Some(buf) = take_frames(&queue, &mut prefixes) else {
                ready.notified().await;
                continue;
            };
            if let Err(e) = stream.write_all(&buf).await {
                tracing::debug!(%peer, "live stream broken: {e}");
                break;
            }
            if let Err(e) = stream.flush().await {
                tracing::debug!(%peer, "live stream broken: {e}");
                break;
            }
        }
    }
}

/// Accepts inbound live streams and reads them, handing what arrives to
/// `to`. Runs until the swarm task drops its receiver.
pub fn accept(mut control: libp2p_stream::Control, to: mpsc::Sender<Inbound>) {
    let Ok(mut incoming) = control.accept(PROTOCOL) else {
        tracing::error!("the live protocol is registered twice");
        return;
    };
    tokio::spawn(async move {
        let mut readers: HashMap<PeerId, Vec<tokio::task::JoinHandle<()>>> = HashMap::new();
        while let Some((peer, stream)) = incoming.next().await {
            if to.is_closed() {
                break;
            }
            let mine = readers.entry(peer).or_default();
            mine.retain(|h| !h.is_finished());
            if mine.len() >= MAX_INBOUND_PER_PEER {
                tracing::debug!(%peer, "too many live streams: one refused");
                continue;
            }
            mine.push(tokio::spawn(read_loop(peer, stream, to.clone())));
            readers.retain(|_, v| !v.is_empty());
        }
    });
}

async fn read_loop(peer: PeerId, mut stream: libp2p::Stream, to: mpsc::Sender<Inbound>) {
    let mut prefixes = Prefixes::default();
    loop {
        match wire::read_frame(&mut stream, wire::MAX_FRAME).await {
            Ok(body) => {
                let Some(bytes) = prefixes.expand(body) else {
                    let why = "live stream: a reference to no prefix".to_string();
                    let _ = to.send(Inbound::Invalid(peer, why)).await;
                    return;
                };
                if to.send(Inbound::Message(peer, bytes)).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let _ = to.send(Inbound::Invalid(peer, e.to_string())).await;
                return;
            }
            // The stream ended or broke: the peer opens another.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_messages_leave_in_order_in_bounded_writes() {
        let q = Mutex::new(Queue::default());
        for i in 0..3u8 {
            q.lock().unwrap().push_back(vec![i; 10]);
        }
        let mut p = Prefixes::default();
        let buf = take_frames(&q, &mut p).unwrap();
        let got = wire::unpack(&buf).unwrap();
        assert_eq!(got, vec![&[0u8; 10][..], &[1; 10], &[2; 10]]);
        assert!(take_frames(&q, &mut p).is_none());
        // Large messages: one per write beyond MAX_WRITE.
        for _ in 0..3 {
            q.lock().unwrap().push_back(vec![9; MAX_WRITE / 2]);
        }
        let buf = take_frames(&q, &mut p).unwrap();
        assert_eq!(wire::unpack(&buf).unwrap().len(), 1);
        assert_eq!(q.lock().unwrap().len(), 2);
    }

    /// A sequencing message for mailbox `mb` (tag, user, mailbox, body).
    fn seq(mb: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![SEQ_TAG];
        m.extend_from_slice(&[7; 16]);
        m.extend_from_slice(&[mb; 16]);
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn repeated_prefixes_travel_as_references_and_read_back_alike() {
        let mut msgs = vec![seq(1, b"a"), seq(1, b"bb"), vec![0, 1, 2], seq(2, b"c")];
        // More mailboxes than the table holds, then the first ones again.
        msgs.extend((0..=TABLE as u8 + 2).map(|i| seq(i, b"d")));
        msgs.extend([seq(1, b"e"), seq(200, b"f"), seq(200, b"")]);
        let (mut w, mut r) = (Prefixes::default(), Prefixes::default());
        let mut buf = Vec::new();
        for m in &msgs {
            w.put(&mut buf, m);
        }
        let frames = wire::unpack(&buf).unwrap();
        assert_eq!(frames.len(), msgs.len());
        assert!(buf.len() < msgs.iter().map(|m| 4 + m.len()).sum::<usize>());
        assert_eq!(frames[1], [&[REF_TAG, 0][..], b"bb"].concat());
        for (f, m) in frames.into_iter().zip(&msgs) {
            assert_eq!(r.expand(f.to_vec()).as_ref(), Some(m));
        }
        // A reference to an entry the writer never sent ends the stream.
        assert_eq!(Prefixes::default().expand(vec![REF_TAG, 0, 1]), None);
        assert_eq!(Prefixes::default().expand(vec![REF_TAG]), None);
    }
}
