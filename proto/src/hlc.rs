//! Hybrid logical clock. The driver feeds it the wall clock ("now", in
//! milliseconds since the Unix epoch); proto never reads a clock itself.
//!
//! A timestamp packs 48 bits of milliseconds and a 16-bit logical counter in
//! one `u64`, so timestamps order as integers and fit a MODSEQ-sized field.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A hybrid timestamp: `(wall_ms << 16) | logical`.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    const LOGICAL_BITS: u32 = 16;
    const MAX_WALL: u64 = (1 << 48) - 1;

    /// Builds a timestamp from its parts; the wall part is cut to 48 bits.
    pub fn new(wall_ms: u64, logical: u16) -> Self {
        Timestamp(((wall_ms & Self::MAX_WALL) << Self::LOGICAL_BITS) | logical as u64)
    }

    /// Milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    /// The logical counter within one millisecond.
    pub fn logical(self) -> u16 {
        self.0 as u16
    }

    /// The next timestamp after this one.
    fn tick(self) -> Self {
        // Overflowing the logical counter carries into the wall part, which
        // keeps timestamps strictly increasing.
        Timestamp(self.0 + 1)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms(), self.logical())
    }
}

/// A remote timestamp further in the future than the clock accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remote clock is {ahead_ms} ms ahead of ours (limit {limit_ms} ms)")]
pub struct ClockSkew {
    /// How far ahead the remote timestamp was.
    pub ahead_ms: u64,
    /// The configured limit.
    pub limit_ms: u64,
}

/// Hybrid logical clock (Kulkarni et al.): never goes backwards, stays close
/// to the wall clock, and orders every event after those it has observed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hlc {
    last: Timestamp,
    max_skew_ms: u64,
}

impl Hlc {
    /// A clock that rejects remote timestamps more than `max_skew_ms` ahead.
    pub fn new(max_skew_ms: u64) -> Self {
        Hlc {
            last: Timestamp::default(),
            max_skew_ms,
        }
    }

    /// Restores a clock that last issued `last` (e.g. after a restart).
    pub fn resume(last: Timestamp, max_skew_ms: u64) -> Self {
        Hlc { last, max_skew_ms }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A timestamp for a local event, strictly greater than every earlier one.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        let wall = Timestamp::new(wall_ms, 0);
        self.last = if wall > self.last {
            wall
        } else {
            self.last.tick()
        };
        self.last
    }

    /// Merges a timestamp received from a peer and returns a timestamp for
    /// the receive event, greater than both the remote one and every earlier
    /// local one. A remote timestamp too far ahead is refused and leaves the
    /// clock unchanged.
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) -> Result<Timestamp, ClockSkew> {
        let ahead_ms = remote.wall_ms().saturating_sub(wall_ms);
        if ahead_ms > self.max_skew_ms {
            return Err(ClockSkew {
                ahead_ms,
                limit_ms: self.max_skew_ms,
            });
        }
        let wall = Timestamp::new(wall_ms, 0);
        let top = self.last.max(remote);
        self.last = if wall > top { wall } else { top.tick() };
        Ok(self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn follows_wall_clock_and_orders_within_a_millisecond() {
        let mut c = Hlc::new(1000);
        let a = c.now(100);
        let b = c.now(100);
        let d = c.now(200);
        assert_eq!(a, Timestamp::new(100, 0));
        assert_eq!(b, Timestamp::new(100, 1));
        assert_eq!(d, Timestamp::new(200, 0));
    }

    #[test]
    fn backwards_jump_keeps_monotonic() {
        let mut c = Hlc::new(1000);
        let a = c.now(10_000);
        let b = c.now(5_000);
        assert!(b > a);
        assert_eq!(b.wall_ms(), 10_000);
    }

    #[test]
    fn logical_overflow_carries() {
        let mut c = Hlc::resume(Timestamp::new(7, u16::MAX), 1000);
        let t = c.now(7);
        assert_eq!(t, Timestamp::new(8, 0));
    }

    #[test]
    fn far_future_remote_refused_and_clock_unchanged() {
        let mut c = Hlc::new(500);
        let a = c.now(1_000);
        let err = c.observe(Timestamp::new(10_000, 0), 1_000).unwrap_err();
        assert_eq!(err.ahead_ms, 9_000);
        assert_eq!(c.last(), a);
        // Within the limit it is accepted and passed.
        let t = c.observe(Timestamp::new(1_400, 3), 1_000).unwrap();
        assert!(t > Timestamp::new(1_400, 3));
    }

    proptest! {
        /// Whatever the wall clock does (skew, jumps back) and whatever peers
        /// send, every event's timestamp exceeds all earlier ones and every
        /// remote timestamp accepted.
        #[test]
        fn monotonic_under_skew(events in prop::collection::vec((0u64..1_000_000, any::<bool>(), 0u64..1_000_000, any::<u16>()), 1..200)) {
            let mut c = Hlc::new(60_000);
            let mut prev = Timestamp::default();
            for (wall, remote, rwall, rlog) in events {
                let t = if remote {
                    let r = Timestamp::new(rwall, rlog);
                    match c.observe(r, wall) {
                        Ok(t) => { prop_assert!(t > r); t }
                        Err(_) => { prop_assert_eq!(c.last(), prev); continue; }
                    }
                } else {
                    c.now(wall)
                };
                prop_assert!(t > prev);
                prop_assert!(t.wall_ms() >= wall.min(t.wall_ms()));
                prev = t;
            }
        }
    }
}
