//! The capture filter a worker runs: (own-traffic exclusion) AND (local
//! filter) AND (the sensor's filter).
//!
//! The first two are one tcpdump expression compiled by libpcap for the
//! interface's link type; the sensor's validated cBPF program is chained
//! after it with `and_then`, so the sensor's program decides the snap length.

use std::net::SocketAddr;

pub use rpcap::addr::canonical;
use rpcap::bpf::libpcap::CompileError;
use rpcap::bpf::{Insn, Program};

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
    #[error("libpcap cannot compile `{}` for link type {}: {}", .0.expr, .0.linktype, .0.reason)]
    Compile(#[from] CompileError),
    #[error("combined filter: {0}")]
    Combine(#[from] rpcap::bpf::ValidateError),
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
pub fn compile(linktype: i32, expr: &str) -> Result<Program, FilterError> {
    Ok(rpcap::bpf::libpcap::compile(expr, linktype, true)?)
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
) -> Result<Program, FilterError> {
    compile(linktype, &prefix_expression(own, local))
}

/// The program a decapsulating capture's source runs: own-traffic
/// exclusion AND the outer packets of every tunnel `decap` knows (the
/// local filter and the sensor's run on the inner frames, in user space).
pub fn decap_outer(linktype: i32, own: &OwnTraffic) -> Result<Program, FilterError> {
    let tunnels = crate::tunnel::decap::outer_expression(linktype == crate::iface::DLT_EN10MB);
    compile(linktype, &prefix_expression(own, Some(&tunnels)))
}

/// The local filter of a decapsulating capture, for the inner Ethernet
/// frames (accept-all without one).
pub fn decap_inner_prefix(local: Option<&str>) -> Result<Program, FilterError> {
    match local {
        Some(l) => compile(crate::iface::DLT_EN10MB, l),
        None => Ok(Program::accept_all()),
    }
}

/// `prefix` AND `sensor`: the sensor's program runs on what the prefix keeps.
/// The capture's one program, validated here once.
pub fn combine(prefix: &Program, sensor: &[Insn]) -> Result<Program, FilterError> {
    Ok(rpcap::bpf::and_then(prefix.insns(), sensor)?)
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
        assert!(p.insns().len() > 10);
    }

    #[test]
    fn compiles_for_ethernet_and_raw() {
        for lt in [crate::iface::DLT_EN10MB, crate::iface::DLT_RAW] {
            let p = prefix(lt, &own(), None).unwrap();
            rpcap::bpf::validate(p.insns()).unwrap();
        }
    }

    #[test]
    fn bad_local_filter_is_an_error_naming_the_expression() {
        let e = check_local("port nonsense and").unwrap_err().to_string();
        assert!(e.contains("port nonsense and"), "{e}");
        assert!(check_local("not port 22").is_ok());
    }

    #[test]
    fn combine_is_the_conjunction_with_the_sensors_snaplen() {
        let arp = compile(crate::iface::DLT_EN10MB, "arp").unwrap();
        let sensor = vec![Insn::new(0x06, 0, 0, 96)];
        let prog = combine(&arp, &sensor).unwrap();
        let mut frame = vec![0u8; 60];
        frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(prog.run(&frame, 60), 96);
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(prog.run(&frame, 60), 0);
    }
}
