//! Aerogramme's protocol core, sans-IO.
//!
//! Everything here is a pure state machine: it is fed inputs (a local action,
//! a message from a peer, the current time, randomness) and returns outputs.
//! Nothing in this crate reads a clock, a socket, a file or an OS random
//! number generator; the node (tokio, sled, libp2p) and the simulator are two
//! drivers of the same code.

mod bytes;
pub mod codec;
pub mod crypto;
pub mod hlc;
pub mod ids;
pub mod mailbox;
pub mod oplog;
pub mod replica;
pub mod seq;
pub mod store;
pub mod sync;

pub use rand_core::{CryptoRng, RngCore};

/// Hash maps and sets of the hot paths (sequencers, views, waiting
/// actions), keyed by op, entry and replica ids: foldhash, seeded at random
/// per map like std's, several times cheaper than SipHash on these short
/// keys (SipHash was 6 % of the simulator's instructions). Peers are
/// authenticated members of the community.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// See [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Calls `f` with the value of each of `keys` (strictly ascending) that
/// `map` holds, walking the map in order rather than searching it from the
/// root per key: neighbouring keys are read from the same or neighbouring
/// nodes. A gap of more than a few keys starts a new search.
pub(crate) fn walk_sorted<K: Ord, V>(
    map: &mut std::collections::BTreeMap<K, V>,
    keys: &[K],
    mut f: impl FnMut(&K, &mut V),
) {
    /// Keys stepped over before a new search is cheaper.
    const MAX_SKIP: usize = 8;
    debug_assert!(keys.windows(2).all(|w| w[0] < w[1]));
    let mut i = 0;
    while i < keys.len() {
        let mut walk = map.range_mut(&keys[i]..);
        let mut skipped = 0;
        while let Some(key) = keys.get(i) {
            match walk.next() {
                Some((k, v)) if k == key => {
                    f(k, v);
                    i += 1;
                    skipped = 0;
                }
                Some((k, _)) if k < key && skipped < MAX_SKIP => skipped += 1,
                Some((k, _)) if k < key => break,
                // Past it, or at the end: the map does not hold it.
                _ => {
                    i += 1;
                    break;
                }
            }
        }
    }
}
