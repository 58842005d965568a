//! A small validator for libp2p multiaddresses in their text form
//! (`/ip4/192.0.2.1/tcp/4001`), so a bad address in the configuration or on
//! the command line is reported at once. Addresses stay strings until the
//! libp2p layer parses them.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A syntactically valid multiaddress (text form).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Multiaddr(String);

impl Multiaddr {
    /// Checks `s`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix('/')
            .ok_or_else(|| format!("`{s}` does not start with `/`"))?;
        let mut parts = rest.split('/');
        let mut count = 0;
        while let Some(proto) = parts.next() {
            let mut value = || {
                parts
                    .next()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("`{s}`: /{proto} needs a value"))
            };
            match proto {
                "ip4" => {
                    let v = value()?;
                    v.parse::<Ipv4Addr>()
                        .map_err(|_| format!("`{s}`: `{v}` is not an IPv4 address"))?;
                }
                "ip6" => {
                    let v = value()?;
                    v.parse::<Ipv6Addr>()
                        .map_err(|_| format!("`{s}`: `{v}` is not an IPv6 address"))?;
                }
                "dns" | "dns4" | "dns6" | "dnsaddr" => {
                    let v = value()?;
                    if !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                    {
                        return Err(format!("`{s}`: `{v}` is not a host name"));
                    }
                }
                "tcp" | "udp" => {
                    let v = value()?;
                    v.parse::<u16>()
                        .map_err(|_| format!("`{s}`: `{v}` is not a port number"))?;
                }
                "p2p" => {
                    let v = value()?;
                    const BASE58: &str =
                        "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
                    if !v.chars().all(|c| BASE58.contains(c)) {
                        return Err(format!("`{s}`: `{v}` is not a peer id"));
                    }
                }
                "quic" | "quic-v1" | "tls" | "noise" | "ws" | "wss" | "webtransport" => {}
                "" => return Err(format!("`{s}` has an empty component")),
                other => return Err(format!("`{s}`: unknown protocol `{other}`")),
            }
            count += 1;
        }
        if count == 0 {
            return Err("empty multiaddress".into());
        }
        Ok(Self(s.to_string()))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Multiaddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_forms() {
        for ok in [
            "/ip4/0.0.0.0/tcp/4001",
            "/ip6/::1/udp/4001/quic-v1",
            "/dns4/mail.example.org/tcp/4001/p2p/12D3KooWAbc",
            "/ip4/127.0.0.1/tcp/0",
        ] {
            assert_eq!(Multiaddr::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        for (bad, why) in [
            ("ip4/1.2.3.4", "start with"),
            ("/ip4/1.2.3", "not an IPv4"),
            ("/ip4/1.2.3.4/tcp/99999", "not a port"),
            ("/ip4/1.2.3.4/tcp", "needs a value"),
            ("/ip4/1.2.3.4/sctp/1", "unknown protocol `sctp`"),
            ("/ip4/1.2.3.4//tcp/1", "empty component"),
            ("/", "empty component"),
            ("/p2p/0OIl", "not a peer id"),
        ] {
            let e = Multiaddr::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
