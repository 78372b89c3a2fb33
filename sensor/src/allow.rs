//! `--allow`: which addresses may connect as active agents. An agent from
//! elsewhere is closed right after accept, before the sensor sends any
//! RPCAP message or allocates a session; each such address is logged once
//! (WARN) and every refusal is counted (metrics, the sensor's last line).
//!
//! Data channels need no list of their own: a TCP data connection is taken
//! only from the agent's own address and UDP datagrams only from the
//! agent's pinned source (others count as `foreign`), and the agent's
//! address passed this check.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rpcap::addr::canonical;
use rpcap::log_limit::LogLimit;

/// Addresses remembered as "already logged": a scan from many addresses
/// must not grow the sensor without bound. Past this, refusals are logged
/// at most [`LogLimit`]'s rate with the number suppressed.
const REMEMBERED: usize = 1024;

pub struct Allow {
    /// Empty: every address is allowed.
    nets: Vec<IpNet>,
    refused: u64,
    logged: HashSet<IpAddr>,
    more: LogLimit,
}

impl Allow {
    pub fn new(nets: Vec<IpNet>) -> Allow {
        Allow {
            nets,
            refused: 0,
            logged: HashSet::new(),
            more: LogLimit::new(5, Duration::from_secs(10)),
        }
    }

    /// Whether every address is allowed (no `--allow`).
    pub fn is_open(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` may connect (IPv4-mapped IPv6 addresses as IPv4); a
    /// refusal is counted and logged once per address.
    pub fn admits(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = canonical(ip);
        if self.nets.is_empty() || self.nets.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        self.refused += 1;
        if self.logged.contains(&ip) {
            return false;
        }
        if self.logged.len() < REMEMBERED {
            self.logged.insert(ip);
            log::warn!("agent {ip} refused: not in --allow (further refusals of it are counted, not logged)");
        } else if let Some(held_back) = self.more.admit(now) {
            log::warn!("agent {ip} refused: not in --allow{held_back}");
        }
        false
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_list_allows_all() {
        let mut a = Allow::new(vec![]);
        assert!(a.is_open());
        assert!(a.admits(ip("203.0.113.9"), Instant::now()));
        assert_eq!(a.refused(), 0);
    }

    #[test]
    fn only_the_ranges_are_allowed_and_refusals_are_counted() {
        let mut a = Allow::new(vec![
            "10.1.0.0/16".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        let now = Instant::now();
        assert!(a.admits(ip("10.1.2.3"), now));
        assert!(a.admits(ip("::ffff:10.1.2.3"), now), "v4-mapped as v4");
        assert!(a.admits(ip("fd12::1"), now));
        assert!(!a.admits(ip("10.2.0.1"), now));
        assert!(!a.admits(ip("10.2.0.1"), now));
        assert!(!a.admits(ip("2001:db8::1"), now));
        assert_eq!(a.refused(), 3);
        assert_eq!(a.logged.len(), 2, "one line per address");
    }

    #[test]
    fn the_memory_of_logged_addresses_is_bounded() {
        let mut a = Allow::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let now = Instant::now();
        for i in 0..(REMEMBERED as u32 + 500) {
            assert!(!a.admits(IpAddr::from((0xC000_0000u32 + i).to_be_bytes()), now));
        }
        assert_eq!(a.logged.len(), REMEMBERED);
        assert_eq!(a.refused(), REMEMBERED as u64 + 500);
    }
}
