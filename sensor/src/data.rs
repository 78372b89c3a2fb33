//! Data-channel sockets: UDP ports bound from the configured range with a
//! large receive buffer and overflow reporting, and a batch receiver that
//! reads many datagrams per system call (recvmmsg) into buffers allocated once.

use std::collections::HashSet;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer asked for on every data socket.
pub const RCVBUF: usize = 16 << 20;
/// Room for the largest UDP payload.
const SLOT: usize = 65536;
/// Control-message room per datagram (one u32 SO_RXQ_OVFL message).
const CTRL: usize = 64;

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
        if let Ok(sock) = udp_socket(SocketAddr::new(ip, port)) {
            return Ok(UdpPort {
                sock: mio::net::UdpSocket::from_std(sock),
                port,
                overflow: 0,
            });
        }
    }
    Err(RangeFull { ip, first, last })
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    // SO_RCVBUFFORCE passes rmem_max when we have CAP_NET_ADMIN; otherwise
    // the ordinary option gives what the system allows.
    if setsockopt_int(
        s.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        RCVBUF as i32,
    )
    .is_err()
    {
        let _ = s.set_recv_buffer_size(RCVBUF);
    }
    if let Err(e) = setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1) {
        log::debug!("SO_RXQ_OVFL unavailable: {e}");
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, val: i32) -> io::Result<()> {
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a
    // live c_int whose size is passed alongside it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&val as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What one received datagram carried besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub len: usize,
    pub from: Option<SocketAddr>,
    /// The socket's cumulative drop counter, if the kernel attached it.
    pub overflow: Option<u32>,
    /// The datagram was longer than the buffer (cut).
    pub truncated: bool,
}

/// Buffers and headers for one recvmmsg call, allocated once and reused for
/// every socket (the receive path runs on one thread).
pub struct RecvBatch {
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u8; CTRL]>,
    hdrs: Vec<libc::mmsghdr>,
    meta: Vec<Meta>,
}

impl RecvBatch {
    pub fn new(n: usize) -> RecvBatch {
        let mut b = RecvBatch {
            bufs: vec![0u8; n * SLOT],
            // SAFETY: iovec, sockaddr_storage and mmsghdr are plain C structs
            // for which all-zero bytes are a valid value.
            iovs: vec![unsafe { mem::zeroed() }; n],
            // SAFETY: as above.
            addrs: vec![unsafe { mem::zeroed() }; n],
            ctrl: vec![[0u8; CTRL]; n],
            // SAFETY: as above.
            hdrs: vec![unsafe { mem::zeroed() }; n],
            meta: Vec::with_capacity(n),
        };
        for i in 0..n {
            b.iovs[i].iov_base = b.bufs[i * SLOT..].as_mut_ptr().cast();
            b.iovs[i].iov_len = SLOT;
        }
        b
    }

    /// Receives up to a batch of datagrams from `fd` without blocking; returns
    /// how many arrived (0 when none were waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.hdrs.len();
        for i in 0..n {
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_controllen = CTRL as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` (data slot,
        // address, control area) with their true sizes; the vectors are never
        // resized, so the pointers stay valid for the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(e),
            };
        }
        let got = r as usize;
        self.meta.clear();
        for i in 0..got {
            let h = &self.hdrs[i].msg_hdr;
            self.meta.push(Meta {
                len: (self.hdrs[i].msg_len as usize).min(SLOT),
                from: sockaddr_to_std(&self.addrs[i], h.msg_namelen),
                overflow: overflow_of(h),
                truncated: h.msg_flags & libc::MSG_TRUNC != 0,
            });
        }
        Ok(got)
    }

    /// Datagram `i` of the last `recv`.
    pub fn get(&self, i: usize) -> (&[u8], Meta) {
        let m = self.meta[i];
        (&self.bufs[i * SLOT..i * SLOT + m.len], m)
    }
}

fn overflow_of(h: &libc::msghdr) -> Option<u32> {
    let mut found = None;
    // SAFETY: `h` was filled by recvmmsg; CMSG_FIRSTHDR/NXTHDR stay within
    // msg_control..msg_controllen, and CMSG_DATA of an SO_RXQ_OVFL message
    // holds a u32 (read unaligned).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                found = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    found
}

fn sockaddr_to_std(a: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(a.ss_family) {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let s = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(s.sin_port)))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let s = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(s.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(s.sin6_port)))
        }
        _ => None,
    }
}

/// The same address for comparisons, with IPv4-mapped IPv6 folded to IPv4.
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
            let n = b.recv(p.sock.as_raw_fd()).unwrap();
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
        assert_eq!(b.recv(p.sock.as_raw_fd()).unwrap(), 0);
    }
}
