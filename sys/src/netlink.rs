//! One rtnetlink request and its reply (the XDP attach-mode query).

use std::io;

/// Sends one rtnetlink request `msg` (a complete nlmsghdr + body) to the
/// kernel on a fresh NETLINK_ROUTE socket and returns the reply's bytes
/// (one read of up to 32 KiB).
pub fn route_request(msg: &[u8]) -> io::Result<Vec<u8>> {
    let fd = crate::socket::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    // The kernel is the default destination of an unbound netlink socket.
    crate::socket::send(&fd, msg, 0)?;
    let mut buf = vec![0u8; 32 * 1024];
    let n = crate::socket::recv(&fd, &mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_dump_of_loopback_is_answered() {
        // RTM_GETLINK for ifindex 1 (lo): nlmsghdr (16) + ifinfomsg (16).
        let mut msg = vec![0u8; 32];
        msg[0..4].copy_from_slice(&32u32.to_ne_bytes());
        msg[4..6].copy_from_slice(&(libc::RTM_GETLINK).to_ne_bytes());
        msg[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg[20..24].copy_from_slice(&1i32.to_ne_bytes());
        let reply = route_request(&msg).unwrap();
        assert!(reply.len() >= 16);
        let ty = u16::from_ne_bytes([reply[4], reply[5]]);
        assert_eq!(ty, libc::RTM_NEWLINK);
    }
}
