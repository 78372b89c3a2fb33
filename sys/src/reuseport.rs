//! `SO_REUSEPORT` groups steered by source address: N sockets bound to one
//! address, and a classic-BPF program (`SO_ATTACH_REUSEPORT_CBPF`) that
//! picks socket `(source IP's low 32 bits) mod N` for each packet (a TCP
//! SYN, a UDP datagram). Every packet of one peer address then reaches the
//! same socket of the group, so a TCP group and a UDP group built in the
//! same order send one peer's control connection and its datagrams to the
//! same receive thread (the sensor's `--receive-threads`).
//!
//! The kernel numbers a group's sockets in the order they joined it: at
//! `bind` for UDP, at `listen` for TCP. A closed socket's slot is taken by
//! the group's last one, so the mapping holds only while every socket of
//! the group lives (the sensor keeps them all until it exits). Until the
//! program is attached (the sensor attaches it once every member is
//! bound) the kernel's hash picks, and so it does for an index past the
//! group's size.
//!
//! No `unsafe` here: [`crate::sockopt::setsockopt`] passes the program.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// `BPF_LD|BPF_B|BPF_ABS`, `BPF_LD|BPF_W|BPF_ABS`.
const LDB_ABS: u16 = 0x30;
const LD_ABS: u16 = 0x20;
/// `BPF_ALU|BPF_RSH|BPF_K`, `BPF_ALU|BPF_MOD|BPF_K`.
const RSH_K: u16 = 0x74;
const MOD_K: u16 = 0x94;
/// `BPF_JMP|BPF_JEQ|BPF_K`, `BPF_JMP|BPF_JA`.
const JEQ_K: u16 = 0x15;
const JA: u16 = 0x05;
/// `BPF_RET|BPF_A`.
const RET_A: u16 = 0x16;

/// The network header's ancillary offset: the program runs with the
/// packet's data at its transport payload, so the IP header is reached
/// through `SKF_NET_OFF`.
const NET: u32 = libc::SKF_NET_OFF as u32;
/// Offsets in the IP header of the source address's low 32 bits.
const V4_SRC: u32 = 12;
const V6_SRC_LOW: u32 = 20;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program: A = version nibble; A = low 32 bits of the source (IPv6
/// at net+20, else IPv4 at net+12); return A mod `n`. `n` ≥ 1. A load past
/// the packet's end makes classic BPF return 0 (socket 0).
pub fn program(n: u32) -> Vec<libc::sock_filter> {
    vec![
        op(LDB_ABS, 0, 0, NET),
        op(RSH_K, 0, 0, 4),
        op(JEQ_K, 0, 2, 6),
        op(LD_ABS, 0, 0, NET.wrapping_add(V6_SRC_LOW)),
        op(JA, 0, 0, 1),
        op(LD_ABS, 0, 0, NET.wrapping_add(V4_SRC)),
        op(MOD_K, 0, 0, n.max(1)),
        op(RET_A, 0, 0, 0),
    ]
}

/// The member of a group of `n` that [`program`] picks for packets from
/// `ip` (an IPv4-mapped IPv6 address arrives as IPv4: pass it as IPv4).
pub fn member_for(ip: std::net::IpAddr, n: usize) -> usize {
    let low = match ip {
        std::net::IpAddr::V4(v4) => u32::from(v4),
        std::net::IpAddr::V6(v6) => {
            let o = v6.octets();
            u32::from_be_bytes([o[12], o[13], o[14], o[15]])
        }
    };
    low as usize % n.max(1)
}

/// `SO_REUSEPORT` on a socket not yet bound.
pub fn enable(fd: &impl AsRawFd) -> io::Result<()> {
    crate::sockopt::set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)
}

/// Steers the reuseport group of `fd` (any bound member) by source
/// address over `n` sockets: see [`program`].
pub fn steer_by_source(fd: &impl AsRawFd, n: u32) -> io::Result<()> {
    let mut prog = program(n);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // The kernel copies the program during the call.
    crate::sockopt::setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_REUSEPORT_CBPF, &fprog)
}

/// `n` TCP listeners on `addr` (port 0: one chosen by the kernel) in one
/// reuseport group, in joining order; each as [`crate::tcp::listener`]
/// makes it (non-blocking, close-on-exec, `SO_REUSEADDR`, the system's
/// `IPV6_V6ONLY`). Not steered yet: see [`steer_by_source`].
pub fn tcp_listeners(
    addr: SocketAddr,
    backlog: i32,
    n: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    let mut group = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        enable(&s)?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.bind(&addr.into())?;
        s.listen(backlog)?;
        let l: std::net::TcpListener = s.into();
        addr.set_port(l.local_addr()?.port());
        group.push(l);
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// `n` UDP sockets in one group on `ip`, steered; their port.
    fn group(ip: &str, n: u32) -> (Vec<UdpSocket>, u16) {
        let mut port = 0;
        let mut socks = Vec::new();
        for _ in 0..n {
            let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None).unwrap();
            enable(&s).unwrap();
            s.bind(&addr.into()).unwrap();
            let s: UdpSocket = s.into();
            port = s.local_addr().unwrap().port();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            socks.push(s);
        }
        steer_by_source(&socks[0], n).unwrap();
        (socks, port)
    }

    /// Which socket of the group received a datagram sent from `from`.
    fn lands(socks: &[UdpSocket], dst: SocketAddr, from: &str) -> usize {
        let tx = UdpSocket::bind(format!("{from}:0").parse::<SocketAddr>().unwrap()).unwrap();
        tx.send_to(b"x", dst).unwrap();
        let mut buf = [0u8; 8];
        for _ in 0..50 {
            for (i, s) in socks.iter().enumerate() {
                if s.recv_from(&mut buf).is_ok() {
                    return i;
                }
            }
        }
        panic!("datagram from {from} not received");
    }

    #[test]
    fn ipv4_sources_land_on_their_low_bits_mod_n() {
        let (socks, port) = group("127.0.0.1", 3);
        let dst: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Several source ports each: the choice is by address only.
        for _ in 0..4 {
            for last in 1u32..=6 {
                let ip = 0x7f00_0000 + last;
                let want = (ip % 3) as usize;
                let from = format!("127.0.0.{last}");
                assert_eq!(member_for(from.parse().unwrap(), 3), want);
                assert_eq!(lands(&socks, dst, &from), want);
            }
        }
    }

    #[test]
    fn ipv6_sources_use_the_low_32_bits() {
        let (socks, port) = group("[::1]", 4);
        let dst: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        // ::1 has low bits 1: socket 1 of 4, every time (the kernel's hash
        // would spread the source ports).
        for _ in 0..8 {
            assert_eq!(lands(&socks, dst, "[::1]"), 1);
        }
        assert_eq!(member_for("::1".parse().unwrap(), 4), 1);
        assert_eq!(member_for("fd00::1:0:7".parse().unwrap(), 4), 3);
    }

    #[test]
    fn tcp_listeners_are_steered_alike() {
        use std::net::{TcpListener, TcpStream};
        let ls: Vec<TcpListener> = tcp_listeners("127.0.0.1:0".parse().unwrap(), 16, 2).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        steer_by_source(&ls[0], 2).unwrap();
        for (from, want) in [("127.0.0.2", 0), ("127.0.0.3", 1), ("127.0.0.4", 0)] {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into())
                .unwrap();
            s.connect(
                &format!("127.0.0.1:{port}")
                    .parse::<SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
            let _c: TcpStream = s.into();
            std::thread::sleep(Duration::from_millis(20));
            let got: Vec<bool> = ls.iter().map(|l| l.accept().is_ok()).collect();
            assert_eq!(got.iter().position(|&g| g), Some(want), "{from}: {got:?}");
        }
    }
}
