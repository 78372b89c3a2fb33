//! Test traffic that goes both ways (a UDP echo and ping-pong sender), views
//! of the frames in a capture (Ethernet / IPv4 / UDP), and the IP counters of
//! a namespace (/proc/net/snmp) to count fragments; numbered and sized UDP
//! payloads, raw frames sent out of an interface, a socket towards a sensor.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::pcap::Packet;

/// A UDP socket in a namespace that sends every datagram back to its sender,
/// on a thread, until dropped.
#[derive(Debug)]
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl UdpEcho {
    /// Binds `addr` inside `ns` and starts echoing.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Result<UdpEcho> {
        let socket = ns.udp_socket(addr)?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut echoed = 0u64;
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if socket.send_to(&buf[..n], from).is_ok() {
                        echoed += 1;
                    }
                }
            }
            echoed
        });
        Ok(UdpEcho {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the echo; returns how many datagrams it sent back.
    pub fn stop(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().unwrap_or_default())
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Sends each payload from `from` (bound in `ns`) to `to` and waits up to
/// `timeout` for it to come back unchanged before sending the next, so both
/// directions carry exactly one datagram per payload, in order.
pub fn ping_pong(
    ns: &Netns,
    from: SocketAddr,
    to: SocketAddr,
    payloads: &[Vec<u8>],
    timeout: Duration,
) -> Result<()> {
    let socket: UdpSocket = ns.udp_socket(from)?;
    socket.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 65536];
    for (i, p) in payloads.iter().enumerate() {
        socket
            .send_to(p, to)
            .with_context(|| format!("sending datagram {i} to {to}"))?;
        let (n, peer) = socket
            .recv_from(&mut buf)
            .with_context(|| format!("no echo of datagram {i} from {to} within {timeout:?}"))?;
        if peer != to || buf[..n] != p[..] {
            bail!("echo of datagram {i}: {n} bytes from {peer}, not what was sent");
        }
    }
    Ok(())
}

/// The IPv4 and UDP headers of an Ethernet frame, when it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Udp<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: &'a [u8],
}

const ETH: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

/// The IPv4 header of an Ethernet frame: (header bytes, rest).
fn ipv4(frame: &[u8]) -> Option<(&[u8], &[u8])> {
    if frame.len() < ETH + 20 || frame[12..14] != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    Some((&ip[..ihl], &ip[ihl..]))
}

/// The IP protocol number of an IPv4 frame.
pub fn ip_proto(p: &Packet) -> Option<u8> {
    ipv4(&p.data).map(|(h, _)| h[9])
}

/// Whether the frame is an IPv4 fragment (MF set or a fragment offset).
pub fn is_fragment(p: &Packet) -> bool {
    ipv4(&p.data).is_some_and(|(h, _)| u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0)
}

/// The UDP view of an unfragmented IPv4/UDP frame.
pub fn udp(p: &Packet) -> Option<Udp<'_>> {
    let (h, rest) = ipv4(&p.data)?;
    if h[9] != 17 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 || rest.len() < 8 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([rest[4], rest[5]]));
    if len < 8 || len > rest.len() {
        return None;
    }
    Some(Udp {
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        sport: u16::from_be_bytes([rest[0], rest[1]]),
        dport: u16::from_be_bytes([rest[2], rest[3]]),
        payload: &rest[8..len],
    })
}

/// The sequence number that [`crate::numbered_payloads`] put at the start of
/// a payload.
pub fn seq_of(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.get(..4)?.try_into().ok()?))
}

/// A counter of the `Ip:` lines of /proc/net/snmp inside `ns` (e.g.
/// `ReasmReqds`: IP fragments received for reassembly; `FragCreates`:
/// fragments sent).
pub fn ip_counter(ns: &Netns, name: &str) -> Result<u64> {
    let snmp = ns.run("cat", ["/proc/net/snmp"])?;
    let mut ip_lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (Some(names), Some(values)) = (ip_lines.next(), ip_lines.next()) else {
        bail!("no Ip: lines in /proc/net/snmp of {}", ns.name());
    };
    let at = names
        .split_whitespace()
        .position(|n| n == name)
        .with_context(|| format!("no Ip counter {name}"))?;
    values
        .split_whitespace()
        .nth(at)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("Ip counter {name} unreadable"))
}

/// An IPv6 counter of a namespace (`Ip6ReasmReqds`, …: /proc/net/snmp6).
pub fn ip6_counter(ns: &Netns, name: &str) -> Result<u64> {
    let snmp6 = ns.run("cat", ["/proc/net/snmp6"])?;
    snmp6
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(name)).then(|| f.next()?.parse().ok())?
        })
        .with_context(|| format!("no IPv6 counter {name} in netns {}", ns.name()))
}

/// `count` UDP payloads of `size` bytes (at least 4): a big-endian sequence
/// number, then a byte pattern derived from it, so order and content can be
/// checked after the trip.
pub fn numbered_payloads(count: u32, size: usize) -> Vec<Vec<u8>> {
    assert!(
        size >= 4,
        "payload size {size} < 4 cannot hold the sequence number"
    );
    (0..count)
        .map(|seq| {
            let mut p = seq.to_be_bytes().to_vec();
            p.extend((4..size).map(|i| (i as u32).wrapping_add(seq) as u8));
            p
        })
        .collect()
}

/// Sends each payload as one UDP datagram from `from` (bound inside `ns`) to
/// `to`. Returns the number sent; stops at the first send error.
pub fn send_udp(
    ns: &Netns,
    from: SocketAddr,
    to: SocketAddr,
    payloads: &[Vec<u8>],
) -> Result<usize> {
    let socket = ns.udp_socket(from)?;
    for (i, p) in payloads.iter().enumerate() {
        socket
            .send_to(p, to)
            .with_context(|| format!("sending datagram {i} from {from} to {to}"))?;
    }
    Ok(payloads.len())
}

/// UDP payload that makes an Ethernet frame of `frame_len` bytes, unique per `i`.
pub fn payload(frame_len: usize, i: usize) -> Vec<u8> {
    let n = frame_len - 14 - 20 - 8;
    (0..n)
        .map(|k| (k as u32).wrapping_mul(31).wrapping_add(i as u32 * 7) as u8)
        .collect()
}

/// Sends `frames` as they are out of `ifname` of namespace `ns` (AF_PACKET).
pub fn send_raw(ns: &Netns, ifname: &str, frames: Vec<Vec<u8>>) {
    ns.enter(move || {
        let fd = sys::socket::socket(libc::AF_PACKET, libc::SOCK_RAW, 0).expect("AF_PACKET socket");
        let ifindex = sys::ifreq::ifindex(ifname).expect("interface");
        let mut sll = sys::socket::sockaddr_ll(ifindex, 0);
        sll.sll_halen = 6;
        for f in &frames {
            let n = sys::socket::send_to(&fd, f, 0, &sll).expect("sendto");
            assert_eq!(n, f.len());
        }
    })
    .expect("entering the namespace");
}

/// A UDP socket on 127.0.0.1 sending to the sensor's data port.
pub fn data_socket(port: u16) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect((IpAddr::V4(Ipv4Addr::LOCALHOST), port)).unwrap();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flags_frag: u16, proto: u8, payload: &[u8]) -> Packet {
        let mut d = vec![0u8; 12];
        d.extend(ETHERTYPE_IPV4);
        let total = 20 + 8 + payload.len();
        let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0];
        ip.extend(flags_frag.to_be_bytes());
        ip.extend([64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        d.extend(ip);
        let ulen = (8 + payload.len()) as u16;
        d.extend(1234u16.to_be_bytes());
        d.extend(5000u16.to_be_bytes());
        d.extend(ulen.to_be_bytes());
        d.extend([0, 0]);
        d.extend(payload);
        Packet {
            ts: Duration::ZERO,
            caplen: d.len() as u32,
            len: d.len() as u32,
            data: d,
        }
    }

    #[test]
    fn udp_view_and_fragments() {
        let p = frame(0x4000, 17, &[0, 0, 0, 7, 9]); // DF only
        let u = udp(&p).unwrap();
        assert_eq!((u.sport, u.dport), (1234, 5000));
        assert_eq!(u.dst, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(seq_of(u.payload), Some(7));
        assert!(!is_fragment(&p));
        let f = frame(0x2000, 17, &[1, 2, 3, 4]); // MF
        assert!(is_fragment(&f));
        assert!(udp(&f).is_none());
        assert!(is_fragment(&frame(0x0010, 17, &[]))); // offset
        assert_eq!(ip_proto(&frame(0, 1, &[])), Some(1));
        assert!(udp(&frame(0, 6, &[])).is_none());
    }

    #[test]
    fn payloads_are_numbered_and_distinct() {
        let p = numbered_payloads(3, 10);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|x| x.len() == 10));
        assert_eq!(&p[2][..4], &[0, 0, 0, 2]);
        assert_ne!(p[1][4..], p[2][4..]);
    }
}
