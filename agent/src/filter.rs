//! The capture filter a worker runs: (own-traffic exclusion) AND (local
//! filter) AND (the sensor's filter).
//!
//! The first two are one tcpdump expression compiled by libpcap for the
//! interface's link type; the sensor's validated cBPF program is chained
//! after it with `and_then`, so the sensor's program decides the snap length.

use std::net::{IpAddr, SocketAddr};

use rpcap::bpf::Insn;

/// What a capture must never see: our own connections to the sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnTraffic {
    /// The control connection: our end and the sensor's end.
    pub control_local: SocketAddr,
    pub control_peer: SocketAddr,
    /// Where the data goes.
    pub data: DataDest,
}

/// The sensor's end of the data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDest {
    /// Datagrams to this address (the worker's source port is ephemeral, so
    /// the destination identifies them).
    Udp(SocketAddr),
    /// A TCP data connection to this address.
    Tcp(SocketAddr),
}

/// A filter that could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("libpcap cannot compile `{expr}` for link type {linktype}: {reason}")]
    Compile {
        expr: String,
        linktype: i32,
        reason: String,
    },
    #[error("combined filter: {0}")]
    Combine(#[from] rpcap::bpf::ValidateError),
}

/// IPv4-mapped IPv6 addresses (from dual-stack sockets) as plain IPv4, the
/// form the packets on the wire carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// `src/dst host A port a → host B port b` in one direction.
fn tcp_direction(from: SocketAddr, to: SocketAddr) -> String {
    format!(
        "(src host {} and src port {} and dst host {} and dst port {})",
        canonical(from.ip()),
        from.port(),
        canonical(to.ip()),
        to.port()
    )
}

impl OwnTraffic {
    /// The tcpdump expression matching our own traffic.
    pub fn expression(&self) -> String {
        let control = format!(
            "(tcp and ({} or {}))",
            tcp_direction(self.control_local, self.control_peer),
            tcp_direction(self.control_peer, self.control_local)
        );
        let data = match self.data {
            DataDest::Udp(dest) => {
                let ip = canonical(dest.ip());
                let mut s = format!("(udp and dst host {ip} and dst port {})", dest.port());
                // Datagrams larger than the MTU leave as IP fragments; only the
                // first carries the UDP header, so the others are excluded by
                // destination and fragment offset.
                if ip.is_ipv4() {
                    s.push_str(&format!(
                        " or (ip and dst host {ip} and ip[6:2] & 0x1fff != 0)"
                    ));
                }
                s
            }
            DataDest::Tcp(dest) => format!(
                "(tcp and host {} and port {})",
                canonical(dest.ip()),
                dest.port()
            ),
        };
        format!("{control} or {data}")
    }
}

/// Compiles a tcpdump expression with libpcap for `linktype` (optimised).
pub fn compile(linktype: i32, expr: &str) -> Result<Vec<Insn>, FilterError> {
    let err = |reason: String| FilterError::Compile {
        expr: expr.to_string(),
        linktype,
        reason,
    };
    let dead = pcap::Capture::dead(pcap::Linktype(linktype)).map_err(|e| err(e.to_string()))?;
    let prog = dead.compile(expr, true).map_err(|e| err(e.to_string()))?;
    // The pcap crate exposes instructions only through Display: "code jt jf k".
    prog.get_instructions()
        .iter()
        .map(|i| {
            let text = i.to_string();
            let f: Vec<u32> = text
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            match f[..] {
                [code, jt, jf, k] => Ok(Insn::new(code as u16, jt as u8, jf as u8, k)),
                _ => Err(err(format!("unexpected instruction text `{text}`"))),
            }
        })
        .collect()
}

/// The expression every capture runs before the sensor's program.
pub fn prefix_expression(own: &OwnTraffic, local: Option<&str>) -> String {
    match local {
        Some(l) => format!("not ({}) and ({l})", own.expression()),
        None => format!("not ({})", own.expression()),
    }
}

/// Checks that a local filter compiles (at start-up and on reload).
pub fn check_local(expr: &str) -> Result<(), FilterError> {
    compile(crate::iface::DLT_EN10MB, expr).map(|_| ())
}

/// The compiled exclusion-and-local prefix for one capture.
pub fn prefix(
    linktype: i32,
    own: &OwnTraffic,
    local: Option<&str>,
) -> Result<Vec<Insn>, FilterError> {
    compile(linktype, &prefix_expression(own, local))
}

/// `prefix` AND `sensor`: the sensor's program runs on what the prefix keeps.
pub fn combine(prefix: &[Insn], sensor: &[Insn]) -> Result<Vec<Insn>, FilterError> {
    Ok(and_then(prefix, sensor)?)
}

// TEMPORARY until rpcap::bpf::and_then lands on main: handles `ret #k` only
// (all libpcap emits), turning accepting returns into jumps to `second`.
fn and_then(first: &[Insn], second: &[Insn]) -> Result<Vec<Insn>, rpcap::bpf::ValidateError> {
    const RET_K: u16 = 0x06;
    const JA: u16 = 0x05;
    let n = first.len();
    let mut out = Vec::with_capacity(n + second.len());
    for (pc, i) in first.iter().enumerate() {
        if i.code == RET_K && i.k != 0 {
            out.push(Insn::new(JA, 0, 0, (n - pc - 1) as u32));
        } else if i.code & 0x07 == RET_K && i.code != RET_K {
            return Err(rpcap::bpf::ValidateError::BadOpcode { pc, code: i.code });
        } else {
            out.push(*i);
        }
    }
    out.extend_from_slice(second);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> OwnTraffic {
        OwnTraffic {
            control_local: "10.0.0.5:40000".parse().unwrap(),
            control_peer: "10.0.0.9:2003".parse().unwrap(),
            data: DataDest::Udp("10.0.0.9:5000".parse().unwrap()),
        }
    }

    #[test]
    fn expression_names_both_directions_and_data() {
        let e = own().expression();
        assert!(e.contains(
            "src host 10.0.0.5 and src port 40000 and dst host 10.0.0.9 and dst port 2003"
        ));
        assert!(e.contains(
            "src host 10.0.0.9 and src port 2003 and dst host 10.0.0.5 and dst port 40000"
        ));
        assert!(e.contains("udp and dst host 10.0.0.9 and dst port 5000"));
    }

    #[test]
    fn mapped_ipv6_is_written_as_ipv4_and_ipv6_compiles() {
        let mut o = own();
        o.control_local = "[::ffff:10.0.0.5]:40000".parse().unwrap();
        assert!(o.expression().contains("src host 10.0.0.5 "));
        o.control_peer = "[fd00::9]:2003".parse().unwrap();
        o.control_local = "[fd00::5]:40000".parse().unwrap();
        o.data = DataDest::Tcp("[fd00::9]:6000".parse().unwrap());
        let p = prefix(crate::iface::DLT_EN10MB, &o, Some("not port 22")).unwrap();
        assert!(p.len() > 10);
    }

    #[test]
    fn compiles_for_ethernet_and_raw() {
        for lt in [crate::iface::DLT_EN10MB, crate::iface::DLT_RAW] {
            let p = prefix(lt, &own(), None).unwrap();
            assert_eq!(p.last().unwrap().code, 0x06);
            rpcap_validate(&p);
        }
    }

    fn rpcap_validate(p: &[Insn]) {
        // Every libpcap program ends with a return and has no backward jumps.
        assert!(p.iter().any(|i| i.code == 0x06 && i.k == 0));
    }

    #[test]
    fn bad_local_filter_is_an_error_naming_the_expression() {
        let e = check_local("port nonsense and").unwrap_err().to_string();
        assert!(e.contains("port nonsense and"), "{e}");
        assert!(check_local("not port 22").is_ok());
    }

    #[test]
    fn combine_turns_accepting_returns_into_jumps() {
        let first = vec![
            Insn::new(0x28, 0, 0, 12),
            Insn::new(0x15, 0, 1, 0x800),
            Insn::new(0x06, 0, 0, 65535),
            Insn::new(0x06, 0, 0, 0),
        ];
        let second = vec![Insn::new(0x06, 0, 0, 96)];
        let c = combine(&first, &second).unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!(c[2], Insn::new(0x05, 0, 0, 1));
        assert_eq!(c[3], Insn::new(0x06, 0, 0, 0));
        assert_eq!(c[4], second[0]);
    }
}
