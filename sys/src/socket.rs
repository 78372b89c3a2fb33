//! Sockets the standard library and socket2 do not make (AF_PACKET, AF_XDP,
//! netlink), and the few socket calls they do not offer.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::Pod;

/// `socket(domain, ty | SOCK_CLOEXEC, protocol)`.
pub fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = crate::check(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `bind(fd, addr, sizeof addr)`: `A` is the address struct of the socket's
/// family (sockaddr_ll, sockaddr_xdp…); the kernel checks its family field.
pub fn bind<A: Pod>(fd: &impl AsRawFd, addr: &A) -> io::Result<()> {
    // SAFETY: `addr` is a live A and the length passed is its size; the
    // kernel only reads it.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (addr as *const A).cast(),
            mem::size_of::<A>() as libc::socklen_t,
        )
    };
    crate::check(rc).map(|_| ())
}

/// `sendto(fd, buf, flags, addr)`: returns the bytes sent.
pub fn send_to<A: Pod>(
    fd: &impl AsRawFd,
    buf: &[u8],
    flags: libc::c_int,
    addr: &A,
) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length, `addr` a live A of the
    // size passed; the kernel only reads both.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            flags,
            (addr as *const A).cast(),
            mem::size_of::<A>() as libc::socklen_t,
        )
    };
    crate::check(rc).map(|n| n as usize)
}

/// `send(fd, buf, flags)`: returns the bytes sent.
pub fn send(fd: &impl AsRawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    let rc = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
    crate::check(rc).map(|n| n as usize)
}

/// `recv(fd, buf, flags)`: returns the bytes received (0: the peer closed).
pub fn recv(fd: &impl AsRawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let rc = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    crate::check(rc).map(|n| n as usize)
}

/// A zero-length non-blocking receive: makes the kernel run the socket's
/// receive processing (AF_XDP need_wakeup, busy polling) and nothing else.
pub fn kick(fd: &impl AsRawFd) {
    // SAFETY: zero-length receive with a null buffer and no address: the
    // kernel writes nothing.
    unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
}

/// A `sockaddr_ll` for `ifindex` and `protocol` (host order; ETH_P_ALL
/// binds for every protocol, 0 sends frames as they are).
pub fn sockaddr_ll(ifindex: u32, protocol: u16) -> libc::sockaddr_ll {
    let mut sll: libc::sockaddr_ll = crate::sockopt::zeroed();
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as libc::c_int;
    sll
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_and_recv_on_a_socket_pair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(send(&a, b"hi", libc::MSG_NOSIGNAL).unwrap(), 2);
        let mut buf = [0u8; 4];
        assert_eq!(recv(&b, &mut buf, libc::MSG_PEEK).unwrap(), 2);
        assert_eq!(recv(&b, &mut buf, 0).unwrap(), 2);
        assert_eq!(&buf[..2], b"hi");
        let e = recv(&b, &mut buf, libc::MSG_DONTWAIT).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        kick(&b);
        drop(a);
        assert_eq!(recv(&b, &mut buf, 0).unwrap(), 0);
        let s = socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE).unwrap();
        let mut nl: libc::sockaddr_nl = crate::sockopt::zeroed();
        nl.nl_family = libc::AF_NETLINK as u16;
        bind(&s, &nl).unwrap();
    }
}
