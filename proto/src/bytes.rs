//! Serde helpers for byte strings (`#[serde(with = "crate::bytes")]` on a
//! `Vec<u8>`, `crate::bytes::shared` on an `Arc<[u8]>`).
//!
//! Serde sees a `Vec<u8>` as a sequence, so postcard encoded and decoded it
//! one byte at a time through the visitor (op payloads and blob chunks:
//! a visible share of the simulator's time). As bytes, postcard writes the
//! same thing — a varint length, then the raw bytes — in one copy: the
//! encoding is unchanged. Sequences of numbers (what self-describing
//! formats such as JSON produce for them) are still accepted.

use serde::de::{Deserializer, Error, SeqAccess, Visitor};
use serde::Serializer;
use std::fmt;
use std::sync::Arc;

/// Serializes a byte string as bytes.
pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

/// Deserializes a byte string written as bytes or as a sequence of `u8`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(ByteBuf)
}

struct ByteBuf;

impl<'de> Visitor<'de> for ByteBuf {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Bounded by what the input holds, like serde's own `Vec` visitor.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// The same for a shared `Arc<[u8]>`.
pub mod shared {
    use super::*;

    /// Serializes a shared byte string as bytes.
    pub fn serialize<S: Serializer>(v: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Deserializes a shared byte string written as bytes or as a sequence.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        super::deserialize(d).map(Arc::from)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use std::sync::Arc;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        a: Vec<u8>,
        b: u32,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsBytes {
        #[serde(with = "crate::bytes")]
        a: Vec<u8>,
        b: u32,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Shared {
        #[serde(with = "crate::bytes::shared")]
        a: Arc<[u8]>,
        b: u32,
    }

    #[test]
    fn postcard_encoding_is_unchanged() {
        for n in [0usize, 1, 127, 128, 300, 70_000] {
            let a: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let plain = postcard::to_allocvec(&Plain { a: a.clone(), b: 9 }).unwrap();
            let bytes = postcard::to_allocvec(&AsBytes { a: a.clone(), b: 9 }).unwrap();
            let shared = postcard::to_allocvec(&Shared {
                a: a.clone().into(),
                b: 9,
            })
            .unwrap();
            assert_eq!(plain, bytes);
            assert_eq!(plain, shared);
            let back: AsBytes = postcard::from_bytes(&plain).unwrap();
            assert_eq!(back.a, a);
            let back: Shared = postcard::from_bytes(&plain).unwrap();
            assert_eq!(&back.a[..], &a[..]);
            let back: Plain = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back.a, a);
        }
        // A length beyond the input fails instead of allocating.
        assert!(postcard::from_bytes::<AsBytes>(&[0xff, 0xff, 0xff, 0x0f, 1]).is_err());
    }
}
