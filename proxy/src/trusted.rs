//! Trusted proxies: which peers may tell the proxy who the client is.
//!
//! A request's `X-Forwarded-For`, `-Proto` and `-Host` are believed only when the peer that
//! sent it is in `trusted_proxies` (a load balancer in front of this proxy); from anyone else
//! they are replaced, so a client cannot make itself look like another address.

use std::net::IpAddr;

use ipnet::IpNet;

/// Whether `peer` is in one of the `trusted` ranges. An IPv4 peer seen on an IPv6 socket
/// (`::ffff:10.0.0.1`) is matched as the IPv4 address it is.
pub fn is_trusted(trusted: &[IpNet], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn ranges_and_single_addresses() {
        let trusted = nets(&["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]);
        assert!(is_trusted(&trusted, "10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&trusted, "192.0.2.7".parse().unwrap()));
        assert!(!is_trusted(&trusted, "192.0.2.8".parse().unwrap()));
        assert!(is_trusted(&trusted, "fd00::2".parse().unwrap()));
        assert!(!is_trusted(&trusted, "127.0.0.1".parse().unwrap()));
        assert!(!is_trusted(&[], "10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_its_ipv4_range() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert!(is_trusted(&trusted, "::ffff:10.0.0.1".parse().unwrap()));
    }
}
