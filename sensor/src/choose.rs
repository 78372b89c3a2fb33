//! Which of the agent's interfaces to capture: by name, by address (the first
//! interface holding an address inside a CIDR, as ExtraHop's sensor chooses),
//! or by default the agent's preselected interface, else the first
//! non-loopback interface that is up (never the `any` pseudo-device).

use ipnet::IpNet;
use rpcap::msg::{if_flags, Interface};

/// Suffix ExtraHop's agent appends to the description of its preselected
/// interface (";preselected", no space). xrpcapd before 0.2 sent
/// " ;preselected"; `ends_with` matches both.
pub const PRESELECTED_SUFFIX: &str = ";preselected";

/// The operator's choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    pub ifname: Option<String>,
    pub ifaddr: Option<IpNet>,
}

impl Choice {
    /// The chosen interface, or a message saying why none fits.
    pub fn pick<'a>(&self, ifaces: &'a [Interface]) -> Result<&'a Interface, String> {
        if self.ifname.is_some() || self.ifaddr.is_some() {
            return ifaces
                .iter()
                .find(|i| self.matches(i))
                .ok_or_else(|| format!("no interface of the agent matches {}", self.describe()));
        }
        ifaces
            .iter()
            .find(|i| i.description.ends_with(PRESELECTED_SUFFIX))
            .or_else(|| {
                ifaces
                    .iter()
                    // Not libpcap's `any` pseudo-device: a real interface.
                    .find(|i| {
                        i.flags & if_flags::LOOPBACK == 0
                            && i.flags & if_flags::UP != 0
                            && i.name != "any"
                    })
            })
            .ok_or_else(|| {
                "the agent has no preselected interface and no non-loopback interface that is up"
                    .to_string()
            })
    }

    fn matches(&self, iface: &Interface) -> bool {
        let name_ok = self.ifname.as_ref().is_none_or(|n| *n == iface.name);
        let addr_ok = self
            .ifaddr
            .is_none_or(|net| iface.addrs.iter().any(|a| net.contains(&a.addr)));
        name_ok && addr_ok
    }

    fn describe(&self) -> String {
        match (&self.ifname, &self.ifaddr) {
            (Some(n), Some(a)) => format!("name {n} with an address in {a}"),
            (Some(n), None) => format!("name {n}"),
            (None, Some(a)) => format!("an address in {a}"),
            (None, None) => "anything".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcap::msg::IfAddr;
    use std::net::IpAddr;

    fn iface(name: &str, desc: &str, flags: u32, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            description: desc.into(),
            flags,
            addrs: addrs
                .iter()
                .map(|a| IfAddr::from(a.parse::<IpAddr>().unwrap()))
                .collect(),
        }
    }

    fn list() -> Vec<Interface> {
        let up = if_flags::UP | if_flags::RUNNING;
        vec![
            iface("lo", "", if_flags::LOOPBACK | up, &["127.0.0.1", "::1"]),
            iface("down0", "", 0, &["10.9.0.1"]),
            iface("eth0", "", up, &["10.1.0.5", "fe80::1"]),
            iface("eth1", "mirror ;preselected", up, &["10.2.0.5"]),
            iface("eth2", "", up, &["10.2.0.9", "2001:db8::7"]),
        ]
    }

    #[test]
    fn default_prefers_preselected() {
        let l = list();
        assert_eq!(Choice::default().pick(&l).unwrap().name, "eth1");
    }

    /// ExtraHop's spelling (no space) and the spaced one older xrpcapd sent.
    #[test]
    fn preselection_is_recognised_with_and_without_a_space() {
        for desc in [";preselected", "mirror;preselected", "mirror ;preselected"] {
            let mut l = list();
            l[3].description = desc.into();
            assert_eq!(Choice::default().pick(&l).unwrap().name, "eth1", "{desc:?}");
        }
        let mut l = list();
        l[3].description = "preselected; not really".into();
        assert_eq!(Choice::default().pick(&l).unwrap().name, "eth0");
    }

    #[test]
    fn default_without_preselection_is_first_up_non_loopback() {
        let mut l = list();
        l.remove(3);
        assert_eq!(Choice::default().pick(&l).unwrap().name, "eth0");
        let only_lo = vec![l[0].clone(), l[1].clone()];
        assert!(Choice::default().pick(&only_lo).is_err());
        // An agent lists `any` (up, not loopback) before an interface that
        // is not running yet: the default is still the real interface.
        let mut any = l[2].clone();
        any.name = "any".into();
        any.addrs.clear();
        l.insert(0, any);
        assert_eq!(Choice::default().pick(&l).unwrap().name, "eth0");
        // Asked for by name, `any` is chosen.
        let by_name = Choice {
            ifname: Some("any".into()),
            ifaddr: None,
        };
        assert_eq!(by_name.pick(&l).unwrap().name, "any");
    }

    #[test]
    fn by_name_and_by_address() {
        let l = list();
        let by_name = Choice {
            ifname: Some("eth2".into()),
            ifaddr: None,
        };
        assert_eq!(by_name.pick(&l).unwrap().name, "eth2");
        let by_addr = |cidr: &str| Choice {
            ifname: None,
            ifaddr: Some(cidr.parse().unwrap()),
        };
        // First interface holding an address inside the prefix.
        assert_eq!(by_addr("10.2.0.0/16").pick(&l).unwrap().name, "eth1");
        assert_eq!(by_addr("10.2.0.9/32").pick(&l).unwrap().name, "eth2");
        assert_eq!(by_addr("2001:db8::/32").pick(&l).unwrap().name, "eth2");
        assert_eq!(by_addr("10.9.0.0/24").pick(&l).unwrap().name, "down0");
        let err = by_addr("192.168.0.0/16").pick(&l).unwrap_err();
        assert!(err.contains("192.168.0.0/16"), "{err}");
        let both = Choice {
            ifname: Some("eth1".into()),
            ifaddr: Some("10.2.0.9/32".parse().unwrap()),
        };
        assert!(both.pick(&l).is_err());
    }
}
