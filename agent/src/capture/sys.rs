//! The few raw syscalls the capture sources share (AF_PACKET, AF_XDP, the
//! XDP loader), each wrapped once with its safety argument, so the sources
//! themselves read as ring logic.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// `setsockopt(fd, level, name, val, sizeof val)`.
pub(crate) fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live T and the length passed is its size;
    // the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            val as *const T as *const libc::c_void,
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A socket option read into a `T` that starts all-zero.
///
/// # Safety
/// `T` must be a plain C struct or integer for which every bit pattern
/// (all-zero included) is a valid value: the kernel writes raw bytes into it.
pub(crate) unsafe fn getsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<T> {
    // SAFETY: all-zero is a valid T (the caller's promise).
    let mut val: T = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` and `len` are valid for writes of the sizes given; the
    // kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &mut val as *mut T as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(val)
}

/// The index of interface `ifname` (in the caller's network namespace).
pub(crate) fn ifindex(ifname: &str) -> io::Result<u32> {
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
pub(crate) fn ifindex_exists(ifindex: u32) -> bool {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    !p.is_null()
}

/// `ppoll` on `fds` for at most `timeout` (µs resolution; a negative fd is
/// skipped). An interrupted wait counts as a wake-up with nothing ready.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid array of `fds.len()` pollfds, `ts` a valid
    // timespec, and a null sigmask leaves the signal mask alone.
    let rc = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(rc as usize)
}

/// Resets a non-blocking eventfd that polled readable.
pub(crate) fn drain_eventfd(fd: RawFd) {
    let mut v = [0u8; 8];
    // SAFETY: reads at most 8 bytes into `v`; the eventfd is non-blocking,
    // and a failed read only means another wake-up.
    unsafe { libc::read(fd, v.as_mut_ptr() as *mut libc::c_void, 8) };
}

/// The MTU of interface `ifname` (SIOCGIFMTU; answers in the caller's
/// network namespace, unlike sysfs).
pub(crate) fn mtu(ifname: &str) -> io::Result<u32> {
    if ifname.len() >= libc::IFNAMSIZ || ifname.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain socket(2), result checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into `ifr`,
    // a valid ifreq.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU filled the ifru_mtu member.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu } as u32)
}
