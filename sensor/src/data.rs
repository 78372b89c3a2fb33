//! Data-channel sockets: UDP ports bound from the configured range with a
//! large receive buffer, overflow reporting (SO_RXQ_OVFL) and UDP GRO. The batch
//! receiver that reads them (recvmmsg) is `sys::mmsg::RecvBatch`.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer asked for on every data socket.
pub const RCVBUF: usize = 16 << 20;
/// Receive buffer of `--udp-shared-port`: one socket takes the bursts of
/// every capture (memory is only used while datagrams wait).
pub const SHARED_RCVBUF: usize = 64 << 20;

/// A bound UDP data port.
pub struct UdpPort {
    pub sock: mio::net::UdpSocket,
    pub port: u16,
    /// The socket's cumulative drop counter, last seen.
    pub overflow: u32,
}

impl UdpPort {
    /// Datagrams the socket dropped since the last call, from the cumulative
    /// counter a datagram carried (SO_RXQ_OVFL), if it carried one.
    pub fn drops(&mut self, overflow: Option<u32>) -> u64 {
        let Some(o) = overflow else { return 0 };
        let n = o.wrapping_sub(self.overflow);
        self.overflow = o;
        u64::from(n)
    }
}

/// No port of the range could be bound.
#[derive(Debug, thiserror::Error)]
#[error("no free UDP port in {first}-{last} on {ip}")]
pub struct RangeFull {
    pub ip: IpAddr,
    pub first: u16,
    pub last: u16,
}

/// Binds the first port of `first..=last` on `ip` that is neither in `used`
/// nor taken by another program.
pub fn bind_udp(
    ip: IpAddr,
    first: u16,
    last: u16,
    used: &HashSet<u16>,
) -> Result<UdpPort, RangeFull> {
    for port in first..=last {
        if used.contains(&port) {
            continue;
        }
        if let Ok(sock) = udp_socket(SocketAddr::new(ip, port), RCVBUF, false) {
            return Ok(UdpPort {
                sock: mio::net::UdpSocket::from_std(sock),
                port,
                overflow: 0,
            });
        }
    }
    Err(RangeFull { ip, first, last })
}

/// Binds `--udp-shared-port` on `addr` (a wildcard address: every agent
/// sends to it, whichever local address it reached).
pub fn bind_shared(addr: SocketAddr) -> io::Result<UdpPort> {
    Ok(bind_shared_group(addr, 1)?.remove(0))
}

/// `--udp-shared-port` for `n` receive threads: `n` sockets on `addr`, one
/// per shard in shard order, in a reuseport group steered by source address
/// ([`sys::reuseport`]) the way the listener's group is, so an agent's
/// datagrams reach the shard that holds its control connection. `n` = 1:
/// one ordinary socket.
pub fn bind_shared_group(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpPort>> {
    let mut ports = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let sock = udp_socket(addr, SHARED_RCVBUF, n > 1)?;
        // Port 0 asks for any: the others join the first one's.
        addr.set_port(sock.local_addr()?.port());
        ports.push(UdpPort {
            sock: mio::net::UdpSocket::from_std(sock),
            port: addr.port(),
            overflow: 0,
        });
    }
    // Before any capture starts, so no agent's datagram is misrouted.
    if n > 1 {
        sys::reuseport::steer_by_source(&ports[0].sock, n as u32)?;
    }
    Ok(ports)
}

/// A non-blocking UDP socket bound to `addr`; `reuse_port`: a member of
/// a reuseport group. Per-capture ports are never in one: a port another
/// shard holds fails to bind, and [`bind_udp`] tries the next.
fn udp_socket(addr: SocketAddr, rcvbuf: usize, reuse_port: bool) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        sys::reuseport::enable(&s)?;
    }
    s.set_nonblocking(true)?;
    // SO_RCVBUFFORCE passes rmem_max when we have CAP_NET_ADMIN; otherwise
    // the ordinary option gives what the system allows.
    let _ = sys::sockopt::force_rcvbuf(&s, rcvbuf);
    if let Err(e) = sys::sockopt::set_int(&s, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1) {
        log::debug!("SO_RXQ_OVFL unavailable: {e}");
    }
    // UDP GRO: an agent's GSO send (up to 44 udpstr datagrams) arrives as
    // one buffer instead of being cut into datagrams on the way in, and a
    // NIC's GRO merges a sender's datagrams likewise: one socket wake-up,
    // skb and recvmmsg entry for many datagrams (`Meta::datagrams`
    // splits them again). Linux ≥ 5.0; without it, one datagram each.
    if let Err(e) = sys::sockopt::set_int(&s, libc::SOL_UDP, libc::UDP_GRO, 1) {
        log::debug!("UDP_GRO unavailable: {e}");
    }
    // The kernel's receive time of each datagram: the capture-to-sensor
    // delay (`delay_max_us`) is then the agent's latency bound and the
    // network, not also this thread's scheduling.
    if let Err(e) = sys::sockopt::set_int(&s, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1) {
        log::debug!("SO_TIMESTAMPNS unavailable: {e}");
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::mmsg::RecvBatch;

    #[test]
    fn binds_in_range_skipping_used_and_taken() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = bind_udp(ip, 23701, 23703, &HashSet::new()).unwrap();
        assert_eq!(a.port, 23701);
        // 23701 is taken by `a` (the kernel refuses it), 23702 is marked used.
        let used: HashSet<u16> = [23702].into();
        let b = bind_udp(ip, 23701, 23703, &used).unwrap();
        assert_eq!(b.port, 23703);
        let e = bind_udp(ip, 23701, 23703, &used).err().unwrap();
        assert_eq!(
            e.to_string(),
            "no free UDP port in 23701-23703 on 127.0.0.1"
        );
    }

    #[test]
    fn batch_receives_several_with_sources() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let p = bind_udp(ip, 23711, 23719, &HashSet::new()).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&vec![i; 100 + i as usize], ("127.0.0.1", p.port))
                .unwrap();
        }
        let mut b = RecvBatch::new(8);
        let mut seen = Vec::new();
        for _ in 0..100 {
            let n = b.recv(&p.sock).unwrap();
            for i in 0..n {
                let (d, m) = b.get(i);
                assert_eq!(m.from, Some(tx.local_addr().unwrap()));
                assert!(!m.truncated);
                seen.push(d.to_vec());
            }
            if seen.len() == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(seen.len(), 5);
        for (i, d) in seen.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 100 + i]);
        }
        assert_eq!(b.recv(&p.sock).unwrap(), 0);
    }
}
