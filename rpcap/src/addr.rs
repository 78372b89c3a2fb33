//! Peer addresses as the protocol compares them.
//!
//! A dual-stack socket reports an IPv4 peer as `::ffff:a.b.c.d`, while the
//! packets on the wire, the `host` of a filter and the peer of a second
//! connection (the data channel) carry plain IPv4. Both ends fold the mapped
//! form before comparing or printing an address, so that one peer is one
//! address whichever socket saw it.

use std::net::IpAddr;

/// `ip` with an IPv4-mapped IPv6 address folded to IPv4; any other address
/// as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_mapped_ipv6_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(canonical(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(canonical(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
        // IPv4-compatible (deprecated) addresses are not mapped ones.
        assert_eq!(canonical(ip("::192.0.2.1")), ip("::192.0.2.1"));
    }
}
