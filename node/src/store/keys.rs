//! Byte layout of the sled keys and values. Every key starts with the user
//! id, so one user's records are contiguous, and the integer parts are big
//! endian, so sled's lexicographic order is the numeric order.
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `ops` | user 16 ‖ log ‖ origin u64 ‖ seq u64 | postcard [`OpValue`] (hlc, uids, payload) |
//! | `chunks` | user 16 ‖ blob 16 ‖ index u32 | the chunk's bytes |
//! | `checkpoints` | user 16 ‖ log | upto u64 ‖ bytes |
//! | `accounts` | user 16 | version u64 ‖ record |
//! | `meta` | caller's key | caller's value |
//!
//! `log` is `0x00` for [`LogId::Mailboxes`], `0x01` for [`LogId::Blobs`] and
//! `0x02 ‖ mailbox 16` for [`LogId::Mailbox`]: prefix-free, and ordered like
//! [`LogId`]'s `Ord`.

use aerogramme_proto::hlc::Timestamp;
use aerogramme_proto::ids::{BlobId, LogId, MailboxId, OpId, ReplicaId, UserId};
use aerogramme_proto::oplog::Op;
use aerogramme_proto::store::StoreError;
use serde::{Deserialize, Serialize};

const LOG_MAILBOXES: u8 = 0;
const LOG_BLOBS: u8 = 1;
const LOG_MAILBOX: u8 = 2;

/// Length of a user id prefix.
pub const USER_LEN: usize = 16;

fn corrupt(what: &str, key: &[u8]) -> StoreError {
    StoreError::Corrupt(format!("{what} (key of {} bytes)", key.len()))
}

/// Appends the encoding of `log`.
pub fn put_log(out: &mut Vec<u8>, log: &LogId) {
    match log {
        LogId::Mailboxes => out.push(LOG_MAILBOXES),
        LogId::Blobs => out.push(LOG_BLOBS),
        LogId::Mailbox(m) => {
            out.push(LOG_MAILBOX);
            out.extend_from_slice(m.as_bytes());
        }
    }
}

/// Decodes a log at the start of `bytes`; returns it and the rest.
pub fn take_log(bytes: &[u8]) -> Option<(LogId, &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    match tag {
        LOG_MAILBOXES => Some((LogId::Mailboxes, rest)),
        LOG_BLOBS => Some((LogId::Blobs, rest)),
        LOG_MAILBOX => {
            let (id, rest) = rest.split_first_chunk::<16>()?;
            Some((LogId::Mailbox(MailboxId(*id)), rest))
        }
        _ => None,
    }
}

/// `user ‖ log`: the prefix of every op of a log, and a checkpoint's key.
pub fn log_key(user: &UserId, log: &LogId) -> Vec<u8> {
    let mut k = Vec::with_capacity(USER_LEN + 17 + 16);
    k.extend_from_slice(user.as_bytes());
    put_log(&mut k, log);
    k
}

/// Key of an op.
pub fn op_key(user: &UserId, log: &LogId, id: &OpId) -> Vec<u8> {
    let mut k = log_key(user, log);
    k.extend_from_slice(&id.origin.0.to_be_bytes());
    k.extend_from_slice(&id.seq.to_be_bytes());
    k
}

/// What an op's key does not hold.
#[derive(Serialize, Deserialize)]
pub struct OpValue<'a> {
    hlc: u64,
    uids: u32,
    /// Written as bytes: serde sees a slice as a sequence, which postcard
    /// wrote one byte at a time through the serializer; as bytes it writes
    /// the same thing (a varint length, then the raw bytes) in one copy.
    #[serde(borrow, serialize_with = "as_bytes")]
    payload: &'a [u8],
}

fn as_bytes<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

/// Value stored for an op.
pub fn op_value(op: &Op) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(&OpValue {
        hlc: op.hlc.0,
        uids: op.uids,
        payload: &op.payload,
    })
    .map_err(|e| StoreError::Io(format!("encoding an op: {e}")))
}

/// Rebuilds an op from its key and value.
pub fn decode_op(key: &[u8], value: &[u8]) -> Result<Op, StoreError> {
    let (user, rest) = key
        .split_first_chunk::<USER_LEN>()
        .ok_or_else(|| corrupt("op key without user", key))?;
    let (log, rest) = take_log(rest).ok_or_else(|| corrupt("op key with a bad log id", key))?;
    let (origin, rest) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("op key without origin", key))?;
    let seq = <[u8; 8]>::try_from(rest).map_err(|_| corrupt("op key with a bad seq", key))?;
    let v: OpValue = match postcard::take_from_bytes(value) {
        Ok((v, [])) => v,
        _ => return Err(corrupt("undecodable op value", key)),
    };
    Ok(Op {
        user: UserId(*user),
        log,
        id: OpId {
            origin: ReplicaId(u64::from_be_bytes(*origin)),
            seq: u64::from_be_bytes(seq),
        },
        hlc: Timestamp(v.hlc),
        uids: v.uids,
        payload: v.payload.into(),
    })
}

/// The log of an op key (after the user).
pub fn op_key_log(key: &[u8]) -> Result<LogId, StoreError> {
    key.get(USER_LEN..)
        .and_then(take_log)
        .map(|(log, _)| log)
        .ok_or_else(|| corrupt("op key with a bad log id", key))
}

/// Key of a blob chunk.
pub fn chunk_key(user: &UserId, blob: &BlobId, index: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(USER_LEN + 16 + 4);
    k.extend_from_slice(user.as_bytes());
    k.extend_from_slice(blob.as_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// `u64 (big endian) ‖ bytes`, the value of checkpoints and accounts.
pub fn versioned(version: u64, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + bytes.len());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(bytes);
    v
}

/// Splits a [`versioned`] value.
pub fn split_versioned(value: &[u8]) -> Result<(u64, Vec<u8>), StoreError> {
    let (version, rest) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt(format!("record of {} bytes", value.len())))?;
    Ok((u64::from_be_bytes(*version), rest.to_vec()))
}

/// The user at the start of a key.
pub fn key_user(key: &[u8]) -> Result<UserId, StoreError> {
    key.first_chunk::<USER_LEN>()
        .map(|u| UserId(*u))
        .ok_or_else(|| corrupt("key shorter than a user id", key))
}

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` when there is none (the prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The op value as written before its payload was written as bytes.
    #[derive(Serialize)]
    struct SeqOpValue<'a> {
        hlc: u64,
        uids: u32,
        payload: &'a [u8],
    }

    #[test]
    fn op_value_encoding_is_unchanged() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let op = Op {
            user: UserId([1; 16]),
            log: LogId::Blobs,
            id: OpId {
                origin: ReplicaId(9),
                seq: 4,
            },
            hlc: Timestamp(123_456_789),
            uids: 2,
            payload: payload.clone().into(),
        };
        let old = postcard::to_allocvec(&SeqOpValue {
            hlc: op.hlc.0,
            uids: op.uids,
            payload: &payload,
        })
        .unwrap();
        let new = op_value(&op).unwrap();
        assert_eq!(new, old);
        let key = op_key(&op.user, &op.log, &op.id);
        assert_eq!(decode_op(&key, &new).unwrap(), op);
    }

    #[test]
    fn log_encoding_orders_like_log_id() {
        let logs = [
            LogId::Mailboxes,
            LogId::Blobs,
            LogId::Mailbox(MailboxId([0; 16])),
            LogId::Mailbox(MailboxId([1; 16])),
            LogId::Mailbox(MailboxId([0xff; 16])),
        ];
        let user = UserId([3; 16]);
        for w in logs.windows(2) {
            assert!(w[0] < w[1]);
            assert!(log_key(&user, &w[0]) < log_key(&user, &w[1]));
        }
        for log in logs {
            let k = log_key(&user, &log);
            assert_eq!(take_log(&k[16..]), Some((log, &[][..])));
        }
    }

    #[test]
    fn op_round_trip_and_garbage() {
        let op = Op {
            user: UserId([1; 16]),
            log: LogId::Mailbox(MailboxId([2; 16])),
            id: OpId {
                origin: ReplicaId(u64::MAX),
                seq: 7,
            },
            hlc: Timestamp(99),
            uids: 3,
            payload: vec![5; 40].into(),
        };
        let k = op_key(&op.user, &op.log, &op.id);
        let v = op_value(&op).unwrap();
        assert_eq!(decode_op(&k, &v).unwrap(), op);
        assert_eq!(op_key_log(&k).unwrap(), op.log);
        for cut in 0..k.len() {
            assert!(decode_op(&k[..cut], &v).is_err());
        }
        for cut in 0..v.len() {
            assert!(decode_op(&k, &v[..cut]).is_err());
        }
        let mut long = v.clone();
        long.push(0);
        assert!(decode_op(&k, &long).is_err());
        assert!(split_versioned(&[1, 2, 3]).is_err());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
