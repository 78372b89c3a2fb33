//! `setsockopt`/`getsockopt` for option values that are plain C data.

use std::io;
use std::mem;
use std::os::fd::AsRawFd;

/// A plain C value the kernel may read or write as raw bytes: a `repr(C)`
/// struct of integers (or raw pointers), or an integer.
///
/// # Safety
/// Every bit pattern, all-zero included, must be a valid value of the type,
/// and it must own nothing (no references, no `Drop`): the kernel writes
/// arbitrary bytes into it and [`zeroed`] makes one from zeros.
pub unsafe trait Pod: Copy + 'static {}

macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        // SAFETY: integers, and libc's mirrors of kernel structs made of
        // integers, fixed-size integer arrays and raw pointers: any bit
        // pattern is a valid value and none of them owns anything.
        $(unsafe impl Pod for $t {})*
    };
}

pod!(
    i32,
    u32,
    u64,
    libc::linger,
    libc::timeval,
    libc::iovec,
    libc::msghdr,
    libc::mmsghdr,
    libc::pollfd,
    libc::sockaddr_storage,
    libc::sockaddr_in,
    libc::sockaddr_in6,
    libc::sockaddr_ll,
    libc::sockaddr_xdp,
    libc::sockaddr_nl,
    libc::sock_fprog,
    libc::packet_mreq,
    libc::tpacket_req3,
    libc::tpacket_stats_v3,
    libc::xdp_umem_reg,
    libc::xdp_mmap_offsets,
    libc::xdp_statistics,
    libc::ifreq,
    libc::cpu_set_t,
    libc::rlimit,
    libc::timespec,
);

/// An all-zero `T`.
pub fn zeroed<T: Pod>() -> T {
    // SAFETY: all-zero is a valid `T` (the `Pod` contract).
    unsafe { mem::zeroed() }
}

/// `setsockopt(fd, level, name, val, sizeof val)`.
pub fn setsockopt<T: Pod>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live T and the length passed is its size;
    // the kernel only reads it (pointers inside, as in sock_fprog, are
    // read during the call, while `val` and what it points to are alive).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    crate::check(rc).map(|_| ())
}

/// An int socket option set to `v`.
pub fn set_int(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    setsockopt(fd, level, name, &v)
}

/// A socket option read into a `T` that starts all-zero (the kernel may
/// write fewer bytes than its size).
pub fn getsockopt<T: Pod>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<T> {
    let mut val: T = zeroed();
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` and `len` are valid for writes of the sizes given; the
    // kernel writes at most `len` bytes, and any bytes are a valid T (Pod).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut val as *mut T).cast(),
            &mut len,
        )
    };
    crate::check(rc)?;
    Ok(val)
}

/// An int socket option.
pub fn get_int(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    getsockopt(fd, level, name)
}

/// SO_SNDBUFFORCE (root may exceed wmem_max); without the privilege, the
/// ordinary SO_SNDBUF (the kernel caps it at wmem_max).
pub fn force_sndbuf(fd: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v)
        .or_else(|_| set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, v))
}

/// SO_RCVBUFFORCE, else SO_RCVBUF, as [`force_sndbuf`].
pub fn force_rcvbuf(fd: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v)
        .or_else(|_| set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v))
}

/// The MTU of the path a connected socket sends on (IP_MTU / IPV6_MTU): the
/// route's MTU, lowered by any ICMP "fragmentation needed" / "packet too
/// big" the kernel has learnt for the destination. Only defined once the
/// socket is connected (ENOTCONN before).
pub fn path_mtu(fd: &impl AsRawFd, ipv6: bool) -> io::Result<usize> {
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU)
    };
    get_int(fd, level, name).map(|m| m.max(0) as usize)
}

/// Never fragment what this socket sends (IP_PMTUDISC_DO /
/// IPV6_PMTUDISC_DO): a datagram larger than the path MTU fails with
/// EMSGSIZE instead of leaving as IP fragments, so the sender learns the
/// MTU and can size its datagrams to it.
pub fn set_dont_fragment(fd: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        set_int(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_options_round_trip() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_int(&s, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1).unwrap();
        assert_eq!(get_int(&s, libc::SOL_SOCKET, libc::SO_RXQ_OVFL).unwrap(), 1);
        let l: libc::linger = getsockopt(&s, libc::SOL_SOCKET, libc::SO_LINGER).unwrap();
        assert_eq!(l.l_onoff, 0);
        let e = get_int(&-1, libc::SOL_SOCKET, libc::SO_ERROR).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn path_mtu_of_connected_loopback_sockets() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(path_mtu(&s, false).is_err(), "not connected yet");
        s.connect("127.0.0.1:9").unwrap();
        set_dont_fragment(&s, false).unwrap();
        // Loopback's MTU is 65536 (older kernels: 16436).
        assert!(path_mtu(&s, false).unwrap() >= 16436);
        let Ok(s6) = std::net::UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 here
        };
        s6.connect("[::1]:9").unwrap();
        set_dont_fragment(&s6, true).unwrap();
        assert!(path_mtu(&s6, true).unwrap() >= 1280);
    }
}
