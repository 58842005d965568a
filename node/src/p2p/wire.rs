//! The replication protocol on a libp2p stream: one request is one
//! [`PeerMsg`](aerogramme_proto::replica::PeerMsg) in its wire encoding,
//! framed by a 4-byte big-endian length; the response is an empty frame
//! (the receipt that frees a slot of the sender's flow control).
//!
//! A frame longer than [`MAX_FRAME`] is refused before anything is
//! allocated for it; the peer is disconnected.
//!
//! A gossipsub message carries a *batch*: the messages one core batch
//! broadcast for one user, each framed the same way ([`pack`], [`unpack`]),
//! so that a delivery's chunk, blob announcement and entry cost one
//! gossipsub envelope (signature, sender, topic) instead of three.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use std::io;

/// The protocol name (its version is part of it).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/aerogramme/replication/1");

/// Largest frame: the largest sync message plus the message tag.
pub const MAX_FRAME: usize = aerogramme_proto::sync::MAX_MESSAGE_BYTES + 64;

/// Largest gossip batch: [`pack`] starts a new one beyond this size.
pub const MAX_BATCH: usize = 1 << 20;

/// Packs encoded messages into gossip payloads of length-framed messages,
/// each at most [`MAX_BATCH`] bytes unless one message alone is larger.
pub fn pack(msgs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for m in msgs {
        let fits = out
            .last()
            .is_some_and(|b| b.len() + 4 + m.len() <= MAX_BATCH);
        if !fits {
            out.push(Vec::with_capacity((4 + m.len()).min(MAX_BATCH)));
        }
        let b = out.last_mut().expect("a batch was just pushed");
        b.extend_from_slice(&(m.len() as u32).to_be_bytes());
        b.extend_from_slice(&m);
    }
    out
}

/// The messages of a gossip payload made by [`pack`]; `None` when it is
/// malformed (a length running past the end, or an empty payload).
pub fn unpack(mut payload: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !payload.is_empty() {
        let (len, rest) = payload.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return None;
        }
        let (m, rest) = rest.split_at(len);
        out.push(m);
        payload = rest;
    }
    (!out.is_empty()).then_some(out)
}

/// Reads one frame of at most `max` bytes.
pub async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes one frame.
pub async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    // One write: the length and the body travel in one encrypted frame.
    let mut frame = Vec::with_capacity(4 + bytes.len());
    put_frame(&mut frame, bytes)?;
    io.write_all(&frame).await?;
    io.close().await
}

/// Appends one frame (length, then body) to `buf`.
pub fn put_frame(buf: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes);
    Ok(())
}

/// The request-response codec of [`PROTOCOL`].
#[derive(Clone, Default)]
pub struct Codec;

#[async_trait::async_trait]
impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, MAX_FRAME).await {
            // A frame over the limit (not read) becomes an empty request:
            // libp2p does not report failed reads with the peer, an
            // invalid request is, and the peer is disconnected for it.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Vec::new()),
            r => r,
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, 0).await.map(drop)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_malformed_ones_are_refused() {
        let msgs = vec![b"a".to_vec(), Vec::new(), vec![7; 300]];
        let packed = pack(msgs.clone());
        assert_eq!(packed.len(), 1);
        let got: Vec<Vec<u8>> = unpack(&packed[0])
            .unwrap()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(got, msgs);
        // Large messages start new batches.
        let big = vec![vec![1; MAX_BATCH / 2]; 3];
        let packed = pack(big);
        assert_eq!(packed.len(), 3);
        assert!(packed.iter().all(|b| unpack(b).unwrap().len() == 1));
        // Truncated, over-long or empty payloads are refused.
        let p = &pack(vec![b"hello".to_vec()])[0];
        for cut in 0..p.len() {
            assert_eq!(unpack(&p[..cut]), None, "cut at {cut}");
        }
        assert_eq!(unpack(&[0xff, 0xff, 0xff, 0xff, 1]), None);
    }

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused_before_allocating() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            write_frame(&mut futures::io::Cursor::new(&mut buf), b"hello")
                .await
                .unwrap();
            let got = read_frame(&mut futures::io::Cursor::new(&buf), 16)
                .await
                .unwrap();
            assert_eq!(got, b"hello");
            let err = read_frame(&mut futures::io::Cursor::new(&buf), 4)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            // A length that claims 4 GiB fails without allocating it.
            let huge = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
            assert!(
                read_frame(&mut futures::io::Cursor::new(&huge[..]), MAX_FRAME)
                    .await
                    .is_err()
            );
            // A truncated frame is an error, not a hang.
            let short = [0, 0, 0, 9, 1, 2];
            assert!(
                read_frame(&mut futures::io::Cursor::new(&short[..]), MAX_FRAME)
                    .await
                    .is_err()
            );
        });
    }
}
