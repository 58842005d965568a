//! The simulated network: per-link latency distributions, loss,
//! duplication, and cuts (partitions, asymmetric and flapping links).
//!
//! Messages themselves live in the world's event queue (a binary heap
//! ordered by delivery time, then by a sequence number, so the order is
//! deterministic); this module decides whether and when each one arrives.

use crate::rng::{below, between, chance_ppm};
use rand_core::RngCore;

/// Latency preset.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Preset {
    /// One data centre: 0.1–1 ms per message.
    Lan,
    /// Three regions: ~1 ms inside a region, 30–150 ms between regions.
    Geo,
}

/// The network between `n` nodes.
#[derive(Clone, Debug)]
pub struct NetModel {
    /// Latency preset.
    pub preset: Preset,
    /// Number of nodes.
    pub n: usize,
    /// Region of each node (all 0 on a LAN).
    pub region: Vec<usize>,
    /// Base latency between regions, ms (symmetric).
    pub between_ms: [[u64; 3]; 3],
    /// Probability that a message is lost, parts per million.
    pub loss_ppm: u32,
    /// Probability that a message is delivered twice, parts per million.
    pub dup_ppm: u32,
    /// Number of active faults cutting each directed link `from * n + to`.
    cut: Vec<u16>,
    /// Of those, the faults that hold the link's messages instead of
    /// dropping them (see [`NetModel::holds`]).
    hold: Vec<u16>,
}

impl NetModel {
    /// A LAN of `n` nodes, no loss.
    pub fn lan(n: usize) -> Self {
        NetModel {
            preset: Preset::Lan,
            n,
            region: vec![0; n],
            between_ms: [[0; 3]; 3],
            loss_ppm: 0,
            dup_ppm: 0,
            cut: vec![0; n * n],
            hold: vec![0; n * n],
        }
    }

    /// Three regions (nodes assigned round-robin); the base latency of each
    /// pair of regions is drawn in 30–150 ms.
    pub fn geo<R: RngCore>(n: usize, rng: &mut R) -> Self {
        let mut m = NetModel::lan(n);
        m.preset = Preset::Geo;
        m.region = (0..n).map(|i| i % 3).collect();
        for a in 0..3 {
            for b in a + 1..3 {
                let base = between(rng, 30, 150);
                m.between_ms[a][b] = base;
                m.between_ms[b][a] = base;
            }
        }
        m
    }

    /// One message's latency in microseconds (jitter reorders messages).
    pub fn latency_us<R: RngCore>(&self, rng: &mut R, from: usize, to: usize) -> u64 {
        match self.preset {
            Preset::Lan => between(rng, 100, 1_000),
            Preset::Geo => {
                let (a, b) = (self.region[from], self.region[to]);
                if a == b {
                    between(rng, 500, 1_500)
                } else {
                    let base = self.between_ms[a][b] * 1_000;
                    base + below(rng, base / 5 + 1)
                }
            }
        }
    }

    /// Whether this message is lost.
    pub fn lose<R: RngCore>(&self, rng: &mut R) -> bool {
        chance_ppm(rng, self.loss_ppm)
    }

    /// Whether this message is duplicated.
    pub fn duplicate<R: RngCore>(&self, rng: &mut R) -> bool {
        chance_ppm(rng, self.dup_ppm)
    }

    /// Whether the directed link is cut.
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut[from * self.n + to] > 0
    }

    /// Whether a cut link holds what is sent over it, to deliver it when the
    /// link works again: a TCP connection whose packets are dropped (a
    /// blackhole route, a dead switch) keeps its data and retransmits it
    /// after the heal, so a burst of old messages arrives at once.
    pub fn holds(&self, from: usize, to: usize) -> bool {
        self.hold[from * self.n + to] > 0
    }

    /// Adds (`true`) or removes (`false`) one fault's cut of a directed link;
    /// `hold` as the fault was added with.
    pub fn set_cut(&mut self, from: usize, to: usize, on: bool, hold: bool) {
        let i = from * self.n + to;
        for (c, counts) in [(&mut self.cut[i], true), (&mut self.hold[i], hold)] {
            if !counts {
                continue;
            }
            if on {
                *c += 1;
            } else {
                *c = c.saturating_sub(1);
            }
        }
    }

    /// Whether any link is cut.
    pub fn any_cut(&self) -> bool {
        self.cut.iter().any(|c| *c > 0)
    }

    /// One line describing the network.
    pub fn describe(&self) -> String {
        let lat = match self.preset {
            Preset::Lan => "lan (0.1-1 ms)".to_string(),
            Preset::Geo => format!(
                "geo (3 regions, ~1 ms inside; between regions {}/{}/{} ms +0-20%)",
                self.between_ms[0][1], self.between_ms[0][2], self.between_ms[1][2]
            ),
        };
        format!(
            "{lat}, loss {:.2}%, duplication {:.2}%",
            self.loss_ppm as f64 / 10_000.0,
            self.dup_ppm as f64 / 10_000.0
        )
    }
}
