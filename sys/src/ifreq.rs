//! Interfaces by name: index, MTU and rx channels (the SIOC* ioctls and
//! ethtool), each answering in the caller's network namespace.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;

/// The index of interface `ifname` (in the caller's network namespace).
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    let c = CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(idx)
}

/// Whether an interface with this index still exists.
pub fn ifindex_exists(ifindex: u32) -> bool {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    !p.is_null()
}

/// An ifreq naming `ifname`, for the SIOC* ioctls (and TUNSETIFF).
pub(crate) fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    if ifname.len() >= libc::IFNAMSIZ || ifname.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let mut ifr: libc::ifreq = crate::sockopt::zeroed();
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// `ioctl(req, ifr)` on a throwaway datagram socket.
///
/// # Safety
/// `req` must be an ioctl that reads and writes a `struct ifreq` only, and
/// any pointer in `ifr` must be valid for what `req` does with it.
unsafe fn ifreq_ioctl(req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    let fd = crate::socket::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    // SAFETY: `ifr` is a valid ifreq; what `req` does with it is the
    // caller's promise.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, ifr as *mut libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The MTU of interface `ifname` (SIOCGIFMTU; answers in the caller's
/// network namespace, unlike sysfs).
pub fn mtu(ifname: &str) -> io::Result<u32> {
    let mut ifr = ifreq(ifname)?;
    // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into `ifr`.
    unsafe { ifreq_ioctl(libc::SIOCGIFMTU, &mut ifr) }?;
    // SAFETY: SIOCGIFMTU filled the ifru_mtu member.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu } as u32)
}

/// Sets IFF_UP on interface `ifname` (SIOCGIFFLAGS, then SIOCSIFFLAGS;
/// needs CAP_NET_ADMIN in the caller's network namespace).
pub fn set_up(ifname: &str) -> io::Result<()> {
    set_flags(ifname, libc::IFF_UP)
}

/// Adds `add` (IFF_* bits) to the flags of interface `ifname`
/// (SIOCGIFFLAGS, then SIOCSIFFLAGS; needs CAP_NET_ADMIN).
pub fn set_flags(ifname: &str, add: libc::c_int) -> io::Result<()> {
    let mut ifr = ifreq(ifname)?;
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `ifr`.
    unsafe { ifreq_ioctl(libc::SIOCGIFFLAGS, &mut ifr) }?;
    // SAFETY: SIOCGIFFLAGS filled the ifru_flags member.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | add as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the name and flags of `ifr`.
    unsafe { ifreq_ioctl(libc::SIOCSIFFLAGS, &mut ifr) }
}

/// ETHTOOL_GCHANNELS of `ifname`: its rx + combined channels, if the
/// driver reports them (answers in the caller's network namespace).
pub fn ethtool_rx_channels(ifname: &str) -> Option<u32> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    // struct ethtool_channels: cmd, max_{rx,tx,other,combined}, {rx,tx,other,combined}_count.
    let mut ch = [0u32; 9];
    ch[0] = ETHTOOL_GCHANNELS;
    let mut ifr = ifreq(ifname).ok()?;
    ifr.ifr_ifru.ifru_data = ch.as_mut_ptr().cast();
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at `ch`, a live
    // ethtool_channels-sized buffer, for the duration of the call.
    unsafe { ifreq_ioctl(SIOCETHTOOL, &mut ifr) }.ok()?;
    Some(ch[5].max(ch[8]))
}

/// ETHTOOL_GLINK of `ifname`: whether the driver reports link (carrier).
/// Errors as the ioctl gives them: EOPNOTSUPP / EINVAL when the driver has
/// no link to report, ENODEV when the interface is gone.
pub fn ethtool_link(ifname: &str) -> io::Result<bool> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GLINK: u32 = 0x0a;
    // struct ethtool_value: cmd, data.
    let mut v = [ETHTOOL_GLINK, 0u32];
    let mut ifr = ifreq(ifname)?;
    ifr.ifr_ifru.ifru_data = v.as_mut_ptr().cast();
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at `v`, a live
    // ethtool_value-sized buffer, for the duration of the call.
    unsafe { ifreq_ioctl(SIOCETHTOOL, &mut ifr) }?;
    Ok(v[1] != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_index_and_an_mtu() {
        let lo = ifindex("lo").unwrap();
        assert!(ifindex_exists(lo));
        assert!(mtu("lo").unwrap() >= 1280);
        assert!(ifindex("no-such-if0").is_err());
        assert!(ifindex("bad\0name").is_err());
        assert!(mtu("a-name-longer-than-ifnamsiz").is_err());
        // A missing interface is an error, not "no link".
        assert!(ethtool_link("no-such-if0").is_err());
    }
}
