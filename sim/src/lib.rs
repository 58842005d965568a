//! `aerogramme-sim`: a deterministic simulator driving many replicas of
//! Aerogramme's protocol core (`aerogramme-proto`) over a simulated network,
//! with simulated IMAP clients and an invariant checker (DESIGN §5, §8;
//! ARCHITECTURE §4). Everything random comes from one seeded ChaCha RNG and
//! time is simulated, so a seed reproduces a run exactly.
//!
//! Layout: [`scenario`] builds a [`scenario::Plan`] (network, clients, a
//! schedule of operations and faults); [`world`] runs it; [`check`] and
//! [`client`] hold the invariants; [`report`] prints the result;
//! [`shrink`] cuts a failing schedule down to a short one that still fails.

pub mod check;
pub mod client;
pub mod net;
pub mod report;
pub mod scenario;
pub mod shrink;
pub mod world;

pub use report::Report;
pub use world::{run, RunResult, RunSpec};

/// Small helpers over the one RNG.
pub(crate) mod rng {
    use rand_core::RngCore;

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below<R: RngCore + ?Sized>(rng: &mut R, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            rng.next_u64() % n
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn between<R: RngCore + ?Sized>(rng: &mut R, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + below(rng, hi - lo + 1)
        }
    }

    /// True with probability `ppm` / 1 000 000.
    pub fn chance_ppm<R: RngCore + ?Sized>(rng: &mut R, ppm: u32) -> bool {
        ppm > 0 && rng.next_u32() % 1_000_000 < ppm
    }
}
