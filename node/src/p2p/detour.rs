//! Detours: sequencing messages for a member this node is not connected to
//! travel through the members that are.
//!
//! Two members may be unable to reach each other (a firewall, a route that
//! is down) while both reach a third. Ops and chunks already go around by
//! gossip and anti-entropy, but the sequencing protocol addresses one
//! member (a Forward to the ledger owner, an Accept, a Heartbeat): without
//! a detour, a member that cannot reach the owner falls back on its
//! reservation although a majority is reachable through others, and its
//! clients' UIDs may have to be re-announced.
//!
//! A detour is a message on the community's detour topic (gossipsub), in an
//! [`Envelope`] naming its origin and its addressee: every member passes it
//! on, the addressee hands it to its replica as coming from the origin (the
//! trust is the gossip's: members are authenticated holders of the network
//! key, and the sequencing protocol trusts members to follow it). A node
//! detours only to members it has heard through a detour lately
//! ([`Reach`]); each node with a member it is not connected to says it is
//! alive on the topic every [`BEACON_EVERY`], so that a member that is down
//! costs one small message every few seconds, not a detour of every
//! sequencing message.

use aerogramme_proto::ids::ReplicaId;
use libp2p::gossipsub;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often a node that is not connected to every member it knows says
/// on the detour topic that it is alive.
pub const BEACON_EVERY: Duration = Duration::from_secs(2);

/// How long a member heard through a detour counts as reachable that way.
pub const HEARD_FOR: Duration = Duration::from_secs(3 * BEACON_EVERY.as_secs());

/// The community's detour topic.
pub fn topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new("aerogramme/detour/1")
}

/// A message on the detour topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The addressee; `None`: every member not connected to the origin (a
    /// sequencing broadcast, or with an empty `msg`, a beacon).
    pub to: Option<ReplicaId>,
    /// The member that wrote it.
    pub from: ReplicaId,
    /// Distinct per message of an origin, so that two equal messages (two
    /// idle Heartbeats) are not taken by gossipsub for one.
    pub nonce: u64,
    /// The encoded `PeerMsg`; empty for a beacon.
    pub msg: &'a [u8],
}

const TO_ONE: u8 = 1;
const TO_OTHERS: u8 = 0;

impl<'a> Envelope<'a> {
    /// The bytes on the wire: a tag, the addressee if any, the origin, the
    /// nonce (8-byte big-endian each), the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25 + self.msg.len());
        match self.to {
            Some(to) => {
                out.push(TO_ONE);
                out.extend_from_slice(&to.0.to_be_bytes());
            }
            None => out.push(TO_OTHERS),
        }
        out.extend_from_slice(&self.from.0.to_be_bytes());
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(self.msg);
        out
    }

    /// The envelope in `bytes`; `None` when they are not one.
    pub fn decode(bytes: &'a [u8]) -> Option<Envelope<'a>> {
        let (tag, rest) = bytes.split_first()?;
        let (to, rest) = match *tag {
            TO_ONE => {
                let (to, rest) = rest.split_first_chunk::<8>()?;
                (Some(ReplicaId(u64::from_be_bytes(*to))), rest)
            }
            TO_OTHERS => (None, rest),
            _ => return None,
        };
        let (from, rest) = rest.split_first_chunk::<8>()?;
        let (nonce, msg) = rest.split_first_chunk::<8>()?;
        Some(Envelope {
            to,
            from: ReplicaId(u64::from_be_bytes(*from)),
            nonce: u64::from_be_bytes(*nonce),
            msg,
        })
    }
}

/// The members heard through a detour, and when last.
#[derive(Debug, Default)]
pub struct Reach {
    heard: HashMap<ReplicaId, Instant>,
}

impl Reach {
    /// `from` was heard through a detour at `now`.
    pub fn heard(&mut self, from: ReplicaId, now: Instant) {
        self.heard.insert(from, now);
    }

    /// Whether a detour to `to` may reach it: heard within [`HEARD_FOR`].
    pub fn reachable(&self, to: ReplicaId, now: Instant) -> bool {
        self.heard
            .get(&to)
            .is_some_and(|at| now.saturating_duration_since(*at) < HEARD_FOR)
    }

    /// Whether any of `members` may be reached through a detour.
    pub fn any_reachable(
        &self,
        mut members: impl Iterator<Item = ReplicaId>,
        now: Instant,
    ) -> bool {
        members.any(|m| self.reachable(m, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        for to in [None, Some(ReplicaId(7))] {
            let e = Envelope {
                to,
                from: ReplicaId(u64::MAX),
                nonce: 42,
                msg: b"seq",
            };
            assert_eq!(Envelope::decode(&e.encode()), Some(e.clone()));
            let beacon = Envelope { msg: b"", ..e };
            assert_eq!(Envelope::decode(&beacon.encode()), Some(beacon));
        }
        assert_eq!(Envelope::decode(b""), None);
        assert_eq!(Envelope::decode(&[2; 40]), None, "unknown tag");
        assert_eq!(Envelope::decode(&[TO_ONE; 20]), None, "too short");
        assert_eq!(Envelope::decode(&[TO_OTHERS; 16]), None, "too short");
    }

    #[test]
    fn a_member_is_reachable_for_a_while_after_it_was_heard() {
        let mut r = Reach::default();
        let t = Instant::now();
        assert!(!r.reachable(ReplicaId(1), t));
        r.heard(ReplicaId(1), t);
        assert!(r.reachable(ReplicaId(1), t + HEARD_FOR / 2));
        assert!(!r.reachable(ReplicaId(1), t + HEARD_FOR));
        assert!(r.any_reachable([ReplicaId(2), ReplicaId(1)].into_iter(), t));
        assert!(!r.any_reachable([ReplicaId(2)].into_iter(), t));
    }
}
