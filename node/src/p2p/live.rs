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

use super::wire;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// The protocol name (its version is part of it).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/aerogramme/live/1");

/// Messages queued per peer before the oldest are dropped.
pub const MAX_QUEUE: usize = 8192;
/// Inbound live streams one peer may hold open at once (one is normal: a
/// new one replaces a broken one).
pub const MAX_INBOUND_PER_PEER: usize = 4;
/// Largest write: what is queued is coalesced up to this size.
const MAX_WRITE: usize = 256 * 1024;
/// Wait before opening a stream again after a failure.
const REOPEN_DELAY: Duration = Duration::from_millis(500);

/// What the reading tasks hand to the swarm task.
pub enum Inbound {
    /// A message from `peer`.
    Message(PeerId, Vec<u8>),
    /// `peer` sent an oversized frame.
    Oversized(PeerId, String),
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
fn take_frames(queue: &Mutex<Queue>) -> Option<Vec<u8>> {
    let mut q = queue.lock().ok()?;
    let mut buf = Vec::new();
    while let Some(m) = q.front() {
        if !buf.is_empty() && buf.len() + 4 + m.len() > MAX_WRITE {
            break;
        }
        let m = q.pop_front()?;
        // Messages are far below 4 GiB (the core encodes bounded ones).
        let _ = wire::put_frame(&mut buf, &m);
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
        loop {
            let Some(buf) = take_frames(&queue) else {
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
    loop {
        match wire::read_frame(&mut stream, wire::MAX_FRAME).await {
            Ok(bytes) => {
                if to.send(Inbound::Message(peer, bytes)).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let _ = to.send(Inbound::Oversized(peer, e.to_string())).await;
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
        let buf = take_frames(&q).unwrap();
        let got = wire::unpack(&buf).unwrap();
        assert_eq!(got, vec![&[0u8; 10][..], &[1; 10], &[2; 10]]);
        assert!(take_frames(&q).is_none());
        // Large messages: one per write beyond MAX_WRITE.
        for _ in 0..3 {
            q.lock().unwrap().push_back(vec![9; MAX_WRITE / 2]);
        }
        assert_eq!(wire::unpack(&take_frames(&q).unwrap()).unwrap().len(), 1);
        assert_eq!(q.lock().unwrap().len(), 2);
    }
}
