//! The node's configuration, `DIR/aerogramme.toml` (reference: `CONFIG.md`).
//!
//! [`ConfigFile`] is the file as written (serde, unknown keys rejected,
//! every key has a default); [`ConfigFile::validate`] turns it into a
//! [`Config`] with typed values and paths resolved against the data
//! directory, or an error naming the key at fault.

use crate::multiaddr::Multiaddr;
use aerogramme_proto::crypto::Argon2Params;
use serde::{Deserialize, Serialize};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the configuration file in the data directory.
pub const CONFIG_FILE: &str = "aerogramme.toml";

/// Longest path of a unix socket (`sun_path` less the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist.
    #[error("{}: no configuration file (run `aerogramme init --data DIR` first)", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the
    /// wrong type (the message names the key and the line).
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key has a value that is not allowed.
    #[error("configuration key `{key}`: {reason}")]
    Invalid {
        /// The key, dotted (`imap.listen`).
        key: String,
        /// Why the value is refused.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `aerogramme.toml` as written. See `CONFIG.md` for each key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// Name of this node, shown to peers and in logs.
    pub name: String,
    /// IMAP server.
    pub imap: ImapSection,
    /// LMTP server.
    pub lmtp: LmtpSection,
    /// TLS certificate for IMAP.
    pub tls: TlsSection,
    /// Peer-to-peer replication.
    pub p2p: P2pSection,
    /// The local admin socket.
    pub admin: AdminSection,
    /// Accounts and their keys.
    pub accounts: AccountsSection,
    /// Failed-login rate limits.
    pub login: LoginSection,
}

/// `[imap]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapSection {
    /// Listen address, `IP:PORT` (plain, with STARTTLS when TLS is set).
    pub listen: String,
    /// Implicit-TLS listen address, `IP:PORT` (needs `[tls]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<String>,
    /// Allow passwords without TLS on a non-loopback address.
    pub allow_plaintext_auth: bool,
}

/// `[lmtp]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmtpSection {
    /// Listen address, `IP:PORT`.
    pub listen: String,
    /// Domains served (empty: every domain).
    pub domains: Vec<String>,
}

/// `[tls]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `[p2p]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pSection {
    /// Multiaddresses to listen on for peers.
    pub listen: Vec<String>,
    /// Multiaddresses of peers to contact at start.
    pub join: Vec<String>,
    /// The community's pre-shared network key file.
    pub network_key: PathBuf,
    /// Peer ids allowed to connect (empty: every holder of the network key).
    pub allow: Vec<String>,
    /// QUIC beside TCP (needs `allow`: QUIC bypasses the network key).
    pub quic: bool,
    /// mDNS discovery on the local network (unset: on when every listen
    /// address is a loopback or private one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mdns: Option<bool>,
    /// Kademlia discovery.
    pub kademlia: bool,
}

/// `[admin]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Path of the admin socket.
    pub socket: PathBuf,
}

/// `[accounts]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsSection {
    /// Seconds an unlocked key stays cached after a successful login.
    pub key_cache_secs: u64,
    /// Argon2id cost for passwords set from now on.
    pub argon2: Argon2Section,
}

/// `[accounts.argon2]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Section {
    /// Passes (t).
    pub iterations: u32,
    /// Memory in KiB (m).
    pub memory_kib: u32,
    /// Lanes (p).
    pub parallelism: u32,
}

/// `[login]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginSection {
    /// Failed unlocks allowed per user within a window.
    pub max_failures_per_user: u32,
    /// Failed unlocks allowed per source address within a window.
    pub max_failures_per_address: u32,
    /// Length of the window, in seconds.
    pub failure_window_secs: u64,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            name: "aerogramme".into(),
            imap: ImapSection::default(),
            lmtp: LmtpSection::default(),
            tls: TlsSection::default(),
            p2p: P2pSection::default(),
            admin: AdminSection::default(),
            accounts: AccountsSection::default(),
            login: LoginSection::default(),
        }
    }
}

impl Default for ImapSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:1143".into(),
            tls_listen: None,
            allow_plaintext_auth: false,
        }
    }
}

impl Default for LmtpSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:1024".into(),
            domains: Vec::new(),
        }
    }
}

impl Default for P2pSection {
    fn default() -> Self {
        Self {
            listen: vec!["/ip4/0.0.0.0/tcp/4001".into()],
            join: Vec::new(),
            network_key: "network.key".into(),
            allow: Vec::new(),
            quic: false,
            mdns: None,
            kademlia: true,
        }
    }
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            socket: "admin.sock".into(),
        }
    }
}

impl Default for AccountsSection {
    fn default() -> Self {
        Self {
            key_cache_secs: 600,
            argon2: Argon2Section::default(),
        }
    }
}

impl Default for Argon2Section {
    fn default() -> Self {
        let p = Argon2Params::default();
        Self {
            iterations: p.iterations,
            memory_kib: p.memory_kib,
            parallelism: p.parallelism,
        }
    }
}

impl Default for LoginSection {
    fn default() -> Self {
        Self {
            max_failures_per_user: 5,
            max_failures_per_address: 20,
            failure_window_secs: 60,
        }
    }
}

/// Where the TLS certificate and key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Failed-unlock limits: at most `per_user` failures for one user and
/// `per_address` from one source within `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures allowed per user within a window.
    pub per_user: u32,
    /// Failures allowed per source address within a window.
    pub per_address: u32,
    /// The window.
    pub window: Duration,
}

/// The validated configuration, paths absolute (resolved against the data
/// directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The data directory.
    pub dir: PathBuf,
    /// Node name.
    pub name: String,
    /// IMAP listen address.
    pub imap: SocketAddr,
    /// IMAP implicit-TLS listen address.
    pub imap_tls: Option<SocketAddr>,
    /// Passwords allowed without TLS on non-loopback addresses.
    pub allow_plaintext_auth: bool,
    /// LMTP domains served (empty: every domain).
    pub lmtp_domains: Vec<String>,
    /// LMTP listen address.
    pub lmtp: SocketAddr,
    /// TLS for IMAP, when configured.
    pub tls: Option<TlsConfig>,
    /// Peer-to-peer listen addresses.
    pub p2p_listen: Vec<Multiaddr>,
    /// Peers to contact at start.
    pub join: Vec<Multiaddr>,
    /// The network key file.
    pub network_key: PathBuf,
    /// Allowed peers (empty: every holder of the network key).
    pub allow: Vec<libp2p::PeerId>,
    /// QUIC beside TCP.
    pub quic: bool,
    /// mDNS discovery.
    pub mdns: bool,
    /// Kademlia discovery.
    pub kademlia: bool,
    /// The admin socket.
    pub admin_socket: PathBuf,
    /// Argon2id cost of new passwords.
    pub argon2: Argon2Params,
    /// How long unlocked keys stay cached (zero: not cached).
    pub key_cache: Duration,
    /// Failed-unlock limits.
    pub login: LoginLimits,
}

impl Config {
    /// Path of the configuration file of data directory `dir`.
    pub fn file_path(dir: &Path) -> PathBuf {
        dir.join(CONFIG_FILE)
    }

    /// Reads and validates `DIR/aerogramme.toml`.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let path = Self::file_path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing { path })
            }
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        ConfigFile::parse(&text)
            .map_err(|message| ConfigError::Parse { path, message })?
            .validate(dir)
    }
}

/// Whether a listen address only reaches this host or a private network
/// (where mDNS is on by default).
fn is_local_address(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    addr.iter().all(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Protocol::Ip6(ip) => {
            ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00 || ip.is_unicast_link_local()
        }
        Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_) => false,
        _ => true,
    })
}

/// Longest node name.
const MAX_NAME: usize = 64;
/// Longest accepted duration in the file: one day.
const MAX_SECS: u64 = 24 * 3600;

impl ConfigFile {
    /// Parses TOML; the error names the unknown or mistyped key and its line.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// The file's text: a header and every key.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!("# Aerogramme node configuration. Every key is optional; see CONFIG.md.\n\n{body}")
    }

    /// Checks every value and resolves paths against `dir`.
    pub fn validate(&self, dir: &Path) -> Result<Config, ConfigError> {
        validate_name(&self.name).map_err(|r| invalid("name", r))?;
        let addr = |key: &str, v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|_| invalid(key, format!("`{v}` is not an address of the form IP:PORT")))
        };
        let imap = addr("imap.listen", &self.imap.listen)?;
        let lmtp = addr("lmtp.listen", &self.lmtp.listen)?;
        let tls = match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert: dir.join(cert),
                key: dir.join(key),
            }),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls.key", "required when tls.cert is set")),
            (None, Some(_)) => return Err(invalid("tls.cert", "required when tls.key is set")),
        };
        let imap_tls = match &self.imap.tls_listen {
            Some(v) => {
                if tls.is_none() {
                    return Err(invalid("imap.tls_listen", "needs tls.cert and tls.key"));
                }
                Some(addr("imap.tls_listen", v)?)
            }
            None => None,
        };
        for d in &self.lmtp.domains {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !ok {
                return Err(invalid(
                    "lmtp.domains",
                    format!("`{d}` is not a domain name"),
                ));
            }
        }
        let addrs = |key: &str, list: &[String]| {
            list.iter()
                .map(|a| crate::multiaddr::parse(a).map_err(|r| invalid(key, r)))
                .collect::<Result<Vec<_>, _>>()
        };
        let p2p_listen = addrs("p2p.listen", &self.p2p.listen)?;
        let join = addrs("p2p.join", &self.p2p.join)?;
        if self.p2p.network_key.as_os_str().is_empty() {
            return Err(invalid("p2p.network_key", "must not be empty"));
        }
        let allow = self
            .p2p
            .allow
            .iter()
            .map(|p| {
                p.parse::<libp2p::PeerId>()
                    .map_err(|_| invalid("p2p.allow", format!("`{p}` is not a peer id")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.p2p.quic && allow.is_empty() {
            return Err(invalid(
                "p2p.quic",
                "QUIC bypasses the network key: it needs p2p.allow (the community's peer ids)",
            ));
        }
        let mdns = self
            .p2p
            .mdns
            .unwrap_or_else(|| p2p_listen.iter().all(is_local_address));
        if self.admin.socket.as_os_str().is_empty() {
            return Err(invalid("admin.socket", "must not be empty"));
        }
        let admin_socket = dir.join(&self.admin.socket);
        if admin_socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(invalid(
                "admin.socket",
                format!(
                    "`{}` is longer than the {MAX_SOCKET_PATH} bytes a unix socket path may have",
                    admin_socket.display()
                ),
            ));
        }
        let a = &self.accounts.argon2;
        if !(1..=Argon2Params::MAX_ITERATIONS).contains(&a.iterations) {
            return Err(invalid(
                "accounts.argon2.iterations",
                format!("must be from 1 to {}", Argon2Params::MAX_ITERATIONS),
            ));
        }
        if !(1..=Argon2Params::MAX_PARALLELISM).contains(&a.parallelism) {
            return Err(invalid(
                "accounts.argon2.parallelism",
                format!("must be from 1 to {}", Argon2Params::MAX_PARALLELISM),
            ));
        }
        let min_memory = 8 * a.parallelism;
        if !(min_memory..=Argon2Params::MAX_MEMORY_KIB).contains(&a.memory_kib) {
            return Err(invalid(
                "accounts.argon2.memory_kib",
                format!(
                    "must be from {min_memory} (8 × parallelism) to {}",
                    Argon2Params::MAX_MEMORY_KIB
                ),
            ));
        }
        let argon2 = Argon2Params {
            iterations: a.iterations,
            memory_kib: a.memory_kib,
            parallelism: a.parallelism,
        };
        argon2
            .validate()
            .map_err(|e| invalid("accounts.argon2", e.to_string()))?;
        if self.accounts.key_cache_secs > MAX_SECS {
            return Err(invalid(
                "accounts.key_cache_secs",
                format!("must be at most {MAX_SECS} (one day)"),
            ));
        }
        let l = &self.login;
        if l.max_failures_per_user == 0 {
            return Err(invalid("login.max_failures_per_user", "must be at least 1"));
        }
        if l.max_failures_per_address == 0 {
            return Err(invalid(
                "login.max_failures_per_address",
                "must be at least 1",
            ));
        }
        if !(1..=MAX_SECS).contains(&l.failure_window_secs) {
            return Err(invalid(
                "login.failure_window_secs",
                format!("must be from 1 to {MAX_SECS}"),
            ));
        }
        Ok(Config {
            dir: dir.to_path_buf(),
            name: self.name.clone(),
            imap,
            imap_tls,
            allow_plaintext_auth: self.imap.allow_plaintext_auth,
            lmtp_domains: self.lmtp.domains.clone(),
            lmtp,
            tls,
            p2p_listen,
            join,
            network_key: dir.join(&self.p2p.network_key),
            allow,
            quic: self.p2p.quic,
            mdns,
            kademlia: self.p2p.kademlia,
            admin_socket,
            argon2,
            key_cache: Duration::from_secs(self.accounts.key_cache_secs),
            login: LoginLimits {
                per_user: l.max_failures_per_user,
                per_address: l.max_failures_per_address,
                window: Duration::from_secs(l.failure_window_secs),
            },
        })
    }
}

/// A node name: 1 to 64 characters among letters, digits, `.`, `_`, `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("must be 1 to {MAX_NAME} characters long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{c}` is not allowed (letters, digits, `.`, `_` and `-` are)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = ConfigFile::parse("")
            .unwrap()
            .validate(Path::new("/d"))
            .unwrap();
        assert_eq!(c.imap, "127.0.0.1:1143".parse().unwrap());
        assert_eq!(c.lmtp, "127.0.0.1:1024".parse().unwrap());
        assert_eq!(c.p2p_listen[0].to_string(), "/ip4/0.0.0.0/tcp/4001");
        assert_eq!(c.admin_socket, Path::new("/d/admin.sock"));
        assert_eq!(c.network_key, Path::new("/d/network.key"));
        assert_eq!(c.key_cache, Duration::from_secs(600));
        assert_eq!(c.argon2, Argon2Params::default());
        assert_eq!(c.tls, None);
    }

    #[test]
    fn written_file_parses_back() {
        let mut f = ConfigFile::default();
        f.p2p.join.push("/ip4/192.0.2.1/tcp/4001".into());
        f.tls.cert = Some("cert.pem".into());
        f.tls.key = Some("key.pem".into());
        assert_eq!(ConfigFile::parse(&f.to_toml()).unwrap(), f);
    }

    #[test]
    fn p2p_options_are_checked_and_mdns_follows_the_listen_addresses() {
        let load = |text: &str| ConfigFile::parse(text).unwrap().validate(Path::new("/d"));
        // Default: every interface, so no mDNS; Kademlia on; no QUIC.
        let c = load("").unwrap();
        assert!(!c.mdns && c.kademlia && !c.quic && c.allow.is_empty());
        // Loopback and private addresses only: mDNS on unless told otherwise.
        let local = "[p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/1\", \"/ip4/10.1.2.3/tcp/1\"]\n";
        assert!(load(local).unwrap().mdns);
        assert!(!load(&format!("{local}mdns = false\n")).unwrap().mdns);
        let public = "[p2p]\nlisten = [\"/ip4/192.0.2.1/tcp/1\"]\nmdns = true\n";
        assert!(load(public).unwrap().mdns);
        // QUIC bypasses the network key: it needs an allow-list.
        let e = load("[p2p]\nquic = true\n").unwrap_err().to_string();
        assert!(e.contains("p2p.quic"), "{e}");
        let peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        let c = load(&format!("[p2p]\nquic = true\nallow = [\"{peer}\"]\n")).unwrap();
        assert!(c.quic);
        assert_eq!(c.allow[0].to_string(), peer);
        let e = load("[p2p]\nallow = [\"nope\"]\n").unwrap_err().to_string();
        assert!(
            e.contains("p2p.allow") && e.contains("not a peer id"),
            "{e}"
        );
    }
}
