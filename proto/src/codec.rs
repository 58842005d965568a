//! Compression of a message before it is encrypted.
//!
//! Mail text compresses two to three times; its encryption does not
//! compress at all. A blob is therefore compressed (LZ4, a block format
//! fast enough that reading it back costs less than decrypting the bytes
//! it saves) before its chunks are encrypted, when that saves at least
//! [`MIN_SAVING`] of it: already-compressed attachments are stored as
//! they are. The blob's announcement says which ([`Codec`]), so the
//! reader knows without trying. Stored form: the message length (u32,
//! little-endian), then the LZ4 block.
//!
//! The stored lengths then depend on how the text compresses, which the
//! lengths of encrypted messages already hinted at; nothing else of the
//! plaintext shows.

/// How a blob's plaintext holds its message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Codec {
    /// The message as it is.
    #[default]
    Raw,
    /// Length-prefixed LZ4 block (see the module's documentation).
    Lz4,
}

/// A blob is stored compressed when that saves at least this share of it
/// (1/16).
pub const MIN_SAVING: usize = 16;

/// Why a stored blob could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The stated length is over the limit the reader gave.
    #[error("decompressed length {0} exceeds {1}")]
    TooLarge(usize, usize),
    /// The block is not what its header says.
    #[error("malformed compressed blob")]
    Malformed,
}

/// The stored form of `raw`: compressed when that pays, else `None`.
pub fn compress(raw: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(raw.len()).ok()?;
    let block = lz4_flex::compress(raw);
    let stored = 4 + block.len();
    if stored + raw.len() / MIN_SAVING > raw.len() {
        return None;
    }
    let mut out = Vec::with_capacity(stored);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&block);
    Some(out)
}

/// The message a [`Codec::Lz4`] blob holds, at most `max` bytes long
/// (checked before anything is allocated for it).
pub fn decompress(stored: &[u8], max: usize) -> Result<Vec<u8>, CodecError> {
    let (len, block) = stored
        .split_first_chunk::<4>()
        .ok_or(CodecError::Malformed)?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > max {
        return Err(CodecError::TooLarge(len, max));
    }
    let mut out = vec![0; len];
    match lz4_flex::decompress_into(block, &mut out) {
        Ok(n) if n == len => Ok(out),
        _ => Err(CodecError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mail_text_is_stored_compressed_and_comes_back_whole() {
        let raw = b"Subject: hello\r\n\r\nlorem ipsum dolor sit amet ".repeat(100);
        let stored = compress(&raw).expect("text compresses");
        assert!(stored.len() < raw.len() / 4);
        assert_eq!(decompress(&stored, raw.len()).unwrap(), raw);
    }

    #[test]
    fn what_does_not_compress_is_stored_as_it_is() {
        // Bytes of a keyed stream: no repetition for LZ4 to find.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let raw: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(compress(&raw), None);
        assert_eq!(compress(b""), None);
    }

    #[test]
    fn lengths_over_the_limit_and_bad_blocks_are_refused() {
        let stored = compress(&[b'a'; 1000]).unwrap();
        assert_eq!(
            decompress(&stored, 999),
            Err(CodecError::TooLarge(1000, 999))
        );
        assert_eq!(decompress(&stored[..2], 1000), Err(CodecError::Malformed));
        let mut short = stored.clone();
        short[0] = 200; // says 1224 bytes; the block holds 1000
        assert_eq!(decompress(&short, 2000), Err(CodecError::Malformed));
    }

    proptest! {
        #[test]
        fn decompressing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decompress(&bytes, 1 << 16);
        }

        #[test]
        fn round_trip(raw in proptest::collection::vec(0u8..4, 0..2000)) {
            if let Some(stored) = compress(&raw) {
                prop_assert_eq!(decompress(&stored, raw.len()).unwrap(), raw);
            }
        }
    }
}
