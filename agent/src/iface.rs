//! The host's interfaces as a sensor sees them in FINDALLIF, their link
//! types, and ExtraHop's interface preselection (`ifname=` / `ifaddr=`).

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::SockaddrStorage;
use rpcap::msg::{if_flags, IfAddr, Interface};

use crate::settings::{ActiveClient, Preselect};

/// Suffix ExtraHop's fork appends to the preselected interface's
/// description, as seen on the wire: no space before the semicolon.
pub const PRESELECTED_SUFFIX: &str = ";preselected";

/// The preselected interface's description as ExtraHop's fork writes it
/// (`daemon_findalldevs`): `;preselected` alone when the interface has no
/// description (every Linux interface but `any` to libpcap), else the
/// description, a space and `;preselected`, the description cut at 240
/// bytes.
pub fn preselected_description(description: &str) -> String {
    if description.is_empty() {
        return PRESELECTED_SUFFIX.to_string();
    }
    let mut end = description.len().min(240);
    while !description.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} {PRESELECTED_SUFFIX}", &description[..end])
}

/// DLT values sent in the OPEN reply.
pub const DLT_EN10MB: i32 = 1;
/// Raw IP (Linux's value of DLT_RAW, as libpcap uses it for ARPHRD_NONE, tunnels).
pub const DLT_RAW: i32 = 12;
pub const DLT_IEEE802_11: i32 = 105;
pub const DLT_IEEE802_11_RADIO: i32 = 127;
/// Linux "cooked" capture, v1: the link type libpcap 1.10 gives the `any`
/// device (16-byte header, see `capture::afpacket::cooked`).
pub const DLT_LINUX_SLL: i32 = 113;

/// libpcap's pseudo-device that captures on every interface.
pub const ANY: &str = "any";
/// Its description, as libpcap 1.10 lists it.
pub const ANY_DESCRIPTION: &str = "Pseudo-device that captures on all interfaces";

/// Every interface with its IPv4/IPv6 addresses and libpcap's flags
/// (connection status and wireless included), then the `any` device, in
/// libpcap's order ([`sort_as_libpcap`]).
pub fn list() -> io::Result<Vec<Interface>> {
    let mut order: Vec<String> = Vec::new();
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for ifa in getifaddrs().map_err(io::Error::from)? {
        let entry = by_name
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| {
                order.push(ifa.interface_name.clone());
                let flags = pcap_flags(ifa.flags);
                Interface {
                    name: ifa.interface_name.clone(),
                    description: description(&ifa.interface_name),
                    flags: flags | status_flags(&ifa.interface_name, flags),
                    addrs: Vec::new(),
                }
            });
        let Some((addr, scope_id)) = ifa.address.as_ref().and_then(ip_of) else {
            continue; // AF_PACKET and other families are not listed
        };
        entry.addrs.push(IfAddr {
            addr,
            netmask: ifa.netmask.as_ref().and_then(ip_of).map(|a| a.0),
            broadaddr: ifa.broadcast.as_ref().and_then(ip_of).map(|a| a.0),
            dstaddr: ifa.destination.as_ref().and_then(ip_of).map(|a| a.0),
            scope_id,
        });
    }
    let mut ifaces: Vec<Interface> = order
        .into_iter()
        .filter_map(|n| by_name.remove(&n))
        .collect();
    ifaces.push(any_device());
    sort_as_libpcap(&mut ifaces);
    Ok(ifaces)
}

/// Why `any` cannot be opened when AF_XDP captures it: an XDP program
/// sees one interface's ingress only.
pub fn any_with_afxdp() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the \"any\" device cannot be captured with AF_XDP (Capture = afxdp): \
         use Capture = afpacket, or name AF_XDP's interfaces (Capture = afxdp:IF,...)",
    )
}

/// libpcap's `any` entry: up, running, connection status not applicable.
pub fn any_device() -> Interface {
    Interface {
        name: ANY.into(),
        description: ANY_DESCRIPTION.into(),
        flags: if_flags::UP | if_flags::RUNNING | if_flags::CONNECTION_STATUS_NOT_APPLICABLE,
        addrs: Vec::new(),
    }
}

/// libpcap's `get_figure_of_merit` (pcap.c): lower sorts first.
fn figure_of_merit(i: &Interface) -> u32 {
    let mut n = 0;
    if i.flags & if_flags::RUNNING == 0 {
        n |= 0x8000_0000;
    }
    if i.flags & if_flags::UP == 0 {
        n |= 0x4000_0000;
    }
    if i.flags & if_flags::WIRELESS == 0
        && i.flags & if_flags::CONNECTION_STATUS == if_flags::CONNECTION_STATUS_DISCONNECTED
    {
        n |= 0x2000_0000;
    }
    if i.flags & if_flags::LOOPBACK != 0 {
        n |= 0x1000_0000;
    }
    if i.name == ANY {
        n |= 0x0800_0000;
    }
    n
}

/// The order libpcap's findalldevs gives (its `add_dev` inserts each device
/// after every one with a figure of merit at most as good): running and up
/// first, disconnected wired ones and loopback late, `any` before loopback.
/// A stable sort of the kernel's order by that figure.
pub fn sort_as_libpcap(ifaces: &mut [Interface]) {
    ifaces.sort_by_key(figure_of_merit);
}

/// libpcap's `get_if_flags` for Linux: the wireless bit and the connection
/// status (ETHTOOL_GLINK; not applicable to loopback and to drivers that
/// report no link).
fn status_flags(name: &str, flags: u32) -> u32 {
    if flags & if_flags::LOOPBACK != 0 {
        return if_flags::CONNECTION_STATUS_NOT_APPLICABLE;
    }
    if !valid_name(name) {
        return 0;
    }
    let mut out = 0;
    if std::path::Path::new(&format!("/sys/class/net/{name}/wireless")).exists() {
        out |= if_flags::WIRELESS;
    } else {
        let arphrd = std::fs::read_to_string(format!("/sys/class/net/{name}/type"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        match arphrd {
            // ARPHRD_LOOPBACK: libpcap asks nothing more.
            Some(772) => return out,
            // IRDA, IEEE80211, IEEE80211_PRISM, IEEE80211_RADIOTAP,
            // IEEE802154, IEEE802154_MONITOR, 6LOWPAN.
            Some(783 | 801 | 802 | 803 | 804 | 805 | 825) => out |= if_flags::WIRELESS,
            _ => {}
        }
    }
    out | link_status(sys::ifreq::ethtool_link(name))
}

/// The connection-status bits for an ETHTOOL_GLINK answer, as libpcap maps it.
fn link_status(link: io::Result<bool>) -> u32 {
    match link {
        Ok(true) => if_flags::CONNECTION_STATUS_CONNECTED,
        Ok(false) => if_flags::CONNECTION_STATUS_DISCONNECTED,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
            if_flags::CONNECTION_STATUS_NOT_APPLICABLE
        }
        // ENODEV and other errors: unknown (libpcap sets nothing).
        Err(_) => if_flags::CONNECTION_STATUS_UNKNOWN,
    }
}

/// The interface's alias (`ip link set NAME alias TEXT`), or nothing.
fn description(name: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifalias"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn pcap_flags(f: InterfaceFlags) -> u32 {
    let mut flags = 0;
    if f.contains(InterfaceFlags::IFF_LOOPBACK) {
        flags |= if_flags::LOOPBACK;
    }
    if f.contains(InterfaceFlags::IFF_UP) {
        flags |= if_flags::UP;
    }
    if f.contains(InterfaceFlags::IFF_RUNNING) {
        flags |= if_flags::RUNNING;
    }
    flags
}

fn ip_of(sa: &SockaddrStorage) -> Option<(IpAddr, u32)> {
    if let Some(v4) = sa.as_sockaddr_in() {
        return Some((IpAddr::V4(v4.ip()), 0));
    }
    sa.as_sockaddr_in6()
        .map(|v6| (IpAddr::V6(v6.ip()), v6.scope_id()))
}

/// Whether `name` can be a Linux interface name (and safely a /sys path part).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0', ' ', ':'])
}

/// The DLT of a live interface, from its ARPHRD type in /sys; for `any`,
/// libpcap 1.10's DLT_LINUX_SLL.
pub fn linktype(name: &str) -> io::Result<i32> {
    if name == ANY {
        return Ok(DLT_LINUX_SLL);
    }
    if !valid_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }
    let path = format!("/sys/class/net/{name}/type");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(io::ErrorKind::NotFound, "no such interface")
        } else {
            e
        }
    })?;
    let arphrd: u32 = text
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: not a number")))?;
    dlt_of_arphrd(arphrd).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("link type ARPHRD {arphrd} is not supported"),
        )
    })
}

/// AF_PACKET's framing per ARPHRD type, as a DLT. Linux loopback frames carry
/// an (all-zero) Ethernet header, so loopback is Ethernet too.
pub fn dlt_of_arphrd(arphrd: u32) -> Option<i32> {
    Some(match arphrd {
        1 | 772 => DLT_EN10MB,                                // ETHER, LOOPBACK
        801 => DLT_IEEE802_11,                                // IEEE80211
        803 => DLT_IEEE802_11_RADIO,                          // IEEE80211_RADIOTAP
        65534 | 768 | 769 | 776 | 778 | 823 | 512 => DLT_RAW, // NONE (tun), TUNNEL, TUNNEL6, SIT, IPGRE, IP6GRE, PPP
        _ => return None,
    })
}

/// The first interface matching the preselection: its name (when given)
/// and an address inside the prefix (when given).
pub fn preselected<'a>(ifaces: &'a [Interface], p: &Preselect) -> Option<&'a Interface> {
    if !p.is_set() {
        return None;
    }
    ifaces.iter().find(|i| {
        p.ifname.as_ref().is_none_or(|n| *n == i.name)
            && p.ifaddr
                .as_ref()
                .is_none_or(|net| i.addrs.iter().any(|a| net.contains(&a.addr)))
    })
}

/// Why preselection `p` matches none of `ifaces`, naming what is missing;
/// `None` when it matches one (or is not set).
pub fn unmatched(ifaces: &[Interface], p: &Preselect) -> Option<String> {
    if !p.is_set() || preselected(ifaces, p).is_some() {
        return None;
    }
    let named = p
        .ifname
        .as_ref()
        .map(|n| (n, ifaces.iter().find(|i| i.name == *n)));
    Some(match (named, &p.ifaddr) {
        (Some((n, None)), _) => format!("no interface {n}"),
        (Some((n, Some(_))), Some(net)) => format!("{n} has no address in {net}"),
        (None, Some(net)) => format!("no interface has an address in {net}"),
        // Not set, or named and found: matched above.
        _ => return None,
    })
}

/// A warning for each ActiveClient whose preselection matches none of
/// `ifaces`: its sensor's OPEN requests are refused until one does
/// (ExtraHop's rpcapd warns and serves every interface instead).
pub fn unmatched_preselections(clients: &[ActiveClient], ifaces: &[Interface]) -> Vec<String> {
    let names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
    clients
        .iter()
        .filter_map(|c| {
            let why = unmatched(ifaces, &c.preselect)?;
            Some(format!(
                "ActiveClient = {c}: {why}; that sensor's OPEN requests are refused until the \
                 interface appears (interfaces: {})",
                names.join(", ")
            ))
        })
        .collect()
}

/// The FINDALLIF list for a session with preselection `p`: the preselected
/// interface first, its description suffixed as [`preselected_description`]
/// says.
pub fn arrange(mut ifaces: Vec<Interface>, p: &Preselect) -> Vec<Interface> {
    let Some(name) = preselected(&ifaces, p).map(|i| i.name.clone()) else {
        return ifaces;
    };
    let pos = ifaces
        .iter()
        .position(|i| i.name == name)
        .expect("found above");
    let mut chosen = ifaces.remove(pos);
    chosen.description = preselected_description(&chosen.description);
    ifaces.insert(0, chosen);
    ifaces
}

/// A human-readable listing (`--list-interfaces`).
pub fn render(ifaces: &[Interface]) -> String {
    let mut s = String::new();
    for i in ifaces {
        let mut flags = Vec::new();
        if i.flags & if_flags::UP != 0 {
            flags.push("UP");
        }
        if i.flags & if_flags::RUNNING != 0 {
            flags.push("RUNNING");
        }
        if i.flags & if_flags::LOOPBACK != 0 {
            flags.push("LOOPBACK");
        }
        if i.flags & if_flags::WIRELESS != 0 {
            flags.push("WIRELESS");
        }
        match i.flags & if_flags::CONNECTION_STATUS {
            if_flags::CONNECTION_STATUS_CONNECTED => flags.push("CONNECTED"),
            if_flags::CONNECTION_STATUS_DISCONNECTED => flags.push("DISCONNECTED"),
            _ => {}
        }
        let lt = match linktype(&i.name) {
            Ok(dlt) => format!("DLT {dlt}"),
            Err(e) => e.to_string(),
        };
        s.push_str(&format!("{} <{}> {}", i.name, flags.join(","), lt));
        if !i.description.is_empty() {
            s.push_str(&format!(" \"{}\"", i.description));
        }
        s.push('\n');
        for a in &i.addrs {
            s.push_str(&format!("    {}", a.addr));
            if let Some(m) = a.netmask {
                s.push_str(&format!(" netmask {m}"));
            }
            if let Some(b) = a.broadaddr {
                s.push_str(&format!(" broadcast {b}"));
            }
            if let Some(d) = a.dstaddr {
                s.push_str(&format!(" peer {d}"));
            }
            if a.scope_id != 0 {
                s.push_str(&format!(" scope {}", a.scope_id));
            }
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            description: String::new(),
            flags: if_flags::UP,
            addrs: addrs
                .iter()
                .map(|a| IfAddr::from(a.parse::<IpAddr>().unwrap()))
                .collect(),
        }
    }

    fn sample() -> Vec<Interface> {
        vec![
            iface("lo", &["127.0.0.1", "::1"]),
            iface("eth0", &["10.0.0.5", "fd00::5"]),
            iface("eth1", &["192.168.7.1"]),
            iface("eth2", &["192.168.7.2"]),
        ]
    }

    fn pre(name: Option<&str>, addr: Option<&str>) -> Preselect {
        Preselect {
            ifname: name.map(String::from),
            ifaddr: addr.map(|a| crate::settings::values::parse_ifaddr(a).unwrap()),
        }
    }

    #[test]
    fn loopback_is_listed_with_flags_and_addresses() {
        let l = list().unwrap();
        let lo = l.iter().find(|i| i.name == "lo").expect("lo exists");
        assert_ne!(lo.flags & if_flags::LOOPBACK, 0);
        assert_ne!(lo.flags & if_flags::UP, 0);
        assert!(lo
            .addrs
            .iter()
            .any(|a| a.addr == "127.0.0.1".parse::<IpAddr>().unwrap()));
        assert_eq!(linktype("lo").unwrap(), DLT_EN10MB);
    }

    #[test]
    fn any_is_listed_as_libpcap_lists_it_before_loopback() {
        let l = list().unwrap();
        let any = l.iter().find(|i| i.name == "any").expect("any listed");
        assert_eq!(
            any.description,
            "Pseudo-device that captures on all interfaces"
        );
        // PCAP_IF_UP | PCAP_IF_RUNNING | PCAP_IF_CONNECTION_STATUS_NOT_APPLICABLE
        assert_eq!(any.flags, 0x2 | 0x4 | 0x30);
        assert!(any.addrs.is_empty());
        let lo = l.iter().position(|i| i.name == "lo").unwrap();
        let any = l.iter().position(|i| i.name == "any").unwrap();
        assert!(any < lo, "{l:?}");
        assert_eq!(
            l[lo].flags & if_flags::CONNECTION_STATUS,
            if_flags::CONNECTION_STATUS_NOT_APPLICABLE
        );
        assert_eq!(linktype("any").unwrap(), DLT_LINUX_SLL);
        assert_eq!(DLT_LINUX_SLL, 113);
    }

    #[test]
    fn connection_status_from_ethtool_as_libpcap_maps_it() {
        use if_flags::*;
        assert_eq!(link_status(Ok(true)), CONNECTION_STATUS_CONNECTED);
        assert_eq!(link_status(Ok(false)), CONNECTION_STATUS_DISCONNECTED);
        let err = |e| Err(io::Error::from_raw_os_error(e));
        assert_eq!(
            link_status(err(libc::EOPNOTSUPP)),
            CONNECTION_STATUS_NOT_APPLICABLE
        );
        assert_eq!(
            link_status(err(libc::EINVAL)),
            CONNECTION_STATUS_NOT_APPLICABLE
        );
        assert_eq!(link_status(err(libc::ENODEV)), CONNECTION_STATUS_UNKNOWN);
    }

    #[test]
    fn sorted_by_libpcaps_figure_of_merit_keeping_kernel_order() {
        use if_flags::*;
        let mk = |name: &str, flags| Interface {
            name: name.into(),
            description: String::new(),
            flags,
            addrs: Vec::new(),
        };
        let mut l = vec![
            mk(
                "lo",
                LOOPBACK | UP | RUNNING | CONNECTION_STATUS_NOT_APPLICABLE,
            ),
            mk("down0", CONNECTION_STATUS_DISCONNECTED),
            mk("eth0", UP | RUNNING | CONNECTION_STATUS_CONNECTED),
            mk("nocarrier0", UP | RUNNING | CONNECTION_STATUS_DISCONNECTED),
            mk(
                "wlan0",
                UP | RUNNING | WIRELESS | CONNECTION_STATUS_DISCONNECTED,
            ),
            mk("eth1", UP | RUNNING | CONNECTION_STATUS_CONNECTED),
            mk("up0", UP | CONNECTION_STATUS_CONNECTED),
            any_device(),
        ];
        sort_as_libpcap(&mut l);
        let names: Vec<&str> = l.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "eth0",
                "wlan0",
                "eth1",
                "any",
                "lo",
                "nocarrier0",
                "up0",
                "down0"
            ]
        );
    }

    #[test]
    fn linktype_refuses_bad_names() {
        assert!(linktype("../../etc").is_err());
        assert!(linktype("nosuchif0").is_err());
        assert!(linktype("").is_err());
    }

    #[test]
    fn arphrd_mapping() {
        assert_eq!(dlt_of_arphrd(1), Some(DLT_EN10MB));
        assert_eq!(dlt_of_arphrd(772), Some(DLT_EN10MB));
        assert_eq!(dlt_of_arphrd(65534), Some(DLT_RAW));
        assert_eq!(dlt_of_arphrd(32), None); // infiniband
    }

    #[test]
    fn preselect_by_name_address_prefix_and_both() {
        let l = sample();
        assert_eq!(
            preselected(&l, &pre(Some("eth1"), None)).unwrap().name,
            "eth1"
        );
        assert_eq!(
            preselected(&l, &pre(None, Some("192.168.7.0/24")))
                .unwrap()
                .name,
            "eth1"
        );
        assert_eq!(
            preselected(&l, &pre(None, Some("192.168.7.2")))
                .unwrap()
                .name,
            "eth2"
        );
        assert_eq!(
            preselected(&l, &pre(None, Some("fd00::/64"))).unwrap().name,
            "eth0"
        );
        assert_eq!(
            preselected(&l, &pre(Some("eth2"), Some("192.168.7.0/24")))
                .unwrap()
                .name,
            "eth2"
        );
        assert!(preselected(&l, &pre(Some("eth0"), Some("192.168.7.0/24"))).is_none());
        assert!(preselected(&l, &pre(None, None)).is_none());
    }

    #[test]
    fn unmatched_preselections_name_what_is_missing() {
        let l = sample();
        let client = |n: Option<&str>, a: Option<&str>| ActiveClient {
            host: "10.0.0.1".into(),
            port: 2003,
            preselect: pre(n, a),
            capture: None,
            decap: None,
        };
        let clients = [
            client(Some("eth1"), None),
            client(Some("eth9"), None),
            client(None, Some("10.9.0.0/16")),
            client(Some("eth1"), Some("fd00:9::/64")),
            client(None, None),
        ];
        let names: Vec<&str> = l.iter().map(|i| i.name.as_str()).collect();
        let tail = format!(
            "; that sensor's OPEN requests are refused until the interface appears (interfaces: {})",
            names.join(", ")
        );
        assert_eq!(
            unmatched_preselections(&clients, &l),
            [
                format!("ActiveClient = 10.0.0.1, 2003, ifname=eth9: no interface eth9{tail}"),
                format!(
                    "ActiveClient = 10.0.0.1, 2003, ifaddr=10.9.0.0/16: no interface has an \
                     address in 10.9.0.0/16{tail}"
                ),
                format!(
                    "ActiveClient = 10.0.0.1, 2003, ifname=eth1, ifaddr=fd00:9::/64: eth1 has no \
                     address in fd00:9::/64{tail}"
                ),
            ]
        );
    }

    #[test]
    fn arrange_puts_preselected_first_with_suffix() {
        let a = arrange(sample(), &pre(None, Some("192.168.7.2/32")));
        assert_eq!(a[0].name, "eth2");
        assert_eq!(a[0].description, ";preselected");
        assert_eq!(a.len(), 4);
        assert!(a[1..]
            .iter()
            .all(|i| !i.description.contains("preselected")));
        let b = arrange(sample(), &Preselect::default());
        assert_eq!(b, sample());
    }

    #[test]
    fn preselected_description_as_extrahop_writes_it() {
        // No description (Linux interfaces to libpcap): the suffix alone,
        // no space (ExtraHop's fork on the wire).
        assert_eq!(preselected_description(""), ";preselected");
        // A description (an ifalias here; `any` to libpcap): a space first,
        // as ExtraHop's `"%.*s ;preselected"`.
        assert_eq!(preselected_description("mirror"), "mirror ;preselected");
        let long = "é".repeat(200);
        let d = preselected_description(&long);
        assert_eq!(d.len(), 240 + " ;preselected".len());
        assert!(d.ends_with(" ;preselected"));
        let mut l = sample();
        l[2].description = "span port".into();
        let a = arrange(l, &pre(Some("eth1"), None));
        assert_eq!(a[0].description, "span port ;preselected");
    }
}
