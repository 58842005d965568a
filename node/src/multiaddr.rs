//! Multiaddresses (`/ip4/192.0.2.1/tcp/4001/p2p/12D3…`) in the
//! configuration and on the command line, parsed with libp2p's parser so a
//! bad address is reported at once, with the reason.

pub use libp2p::Multiaddr;

/// Parses `s`; the error names the address and what is wrong.
pub fn parse(s: &str) -> Result<Multiaddr, String> {
    if s.is_empty() {
        return Err("empty multiaddress".into());
    }
    s.parse::<Multiaddr>()
        .map_err(|e| format!("`{s}` is not a multiaddress: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_forms() {
        for ok in [
            "/ip4/0.0.0.0/tcp/4001",
            "/ip6/::1/udp/4001/quic-v1",
            "/dns4/mail.example.org/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
            "/ip4/127.0.0.1/tcp/0",
        ] {
            assert_eq!(parse(ok).unwrap().to_string(), ok);
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        for bad in [
            "",
            "ip4/1.2.3.4",
            "/ip4/1.2.3",
            "/ip4/1.2.3.4/tcp/99999",
            "/ip4/1.2.3.4/tcp",
            "/ip4/1.2.3.4/sctpx/1",
            "/p2p/0OIl",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains(&format!("`{bad}`")) || bad.is_empty(),
                "{bad}: {e}"
            );
        }
    }
}
