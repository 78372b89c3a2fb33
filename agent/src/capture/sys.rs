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

// --- bpf(2): the translated XDP filter (`xdpc::translate`, loaded by `afxdp::program`). ---

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` of enum bpf_attach_type: what aya loads `xrpcapd_xdp` with.
/// Caller and callee of a tail call must agree on it (kernel 6.18 refuses
/// the prog-array update otherwise).
const BPF_XDP: u32 = 37;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD (the kernel
/// takes a shorter attr and treats the rest as zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for the map element commands.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// `attr` must be the attr struct of `cmd`, and every pointer in it must be
/// valid for what the kernel does with it during the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller's promise; the size passed is the struct's.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A program the verifier refused (or a load that failed otherwise).
#[derive(Debug)]
pub(crate) struct LoadError {
    pub(crate) error: io::Error,
    /// The end of the verifier's log (empty if it wrote none).
    pub(crate) log: String,
}

/// Loads an XDP program: `insns` are eBPF instructions (8 bytes each),
/// licensed GPL (the helpers it calls require it), `flags` the prog_flags
/// (BPF_F_XDP_HAS_FRAGS or 0), for attach type BPF_XDP. On failure, loads again with the verifier's
/// log on and returns its last lines.
pub(crate) fn bpf_prog_load_xdp(
    insns: &[u8],
    name: &str,
    flags: u32,
) -> Result<std::os::fd::OwnedFd, LoadError> {
    const LICENSE: &[u8] = b"GPL\0";
    const LOAD_TRIES: u32 = 5;
    const LOG_SIZE: usize = 1 << 20;
    let load = |log: Option<&mut Vec<u8>>| -> io::Result<std::os::fd::OwnedFd> {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: (insns.len() / 8) as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            prog_flags: flags,
            expected_attach_type: BPF_XDP,
            ..ProgLoadAttr::default()
        };
        for (d, s) in attr.prog_name.iter_mut().take(15).zip(name.bytes()) {
            *d = s;
        }
        if let Some(log) = log {
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
        }
        // The verifier gives up with EAGAIN when a signal is pending for
        // the thread: retry a few times, as libbpf does.
        let mut tries = 1;
        let fd = loop {
            // SAFETY: the attr of BPF_PROG_LOAD; `insns`, LICENSE (NUL-ended)
            // and the log buffer (log_size bytes, writable) outlive the call.
            match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < LOAD_TRIES => {
                    tries += 1
                }
                r => break r?,
            }
        };
        // SAFETY: a fresh program fd, owned from here on.
        Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
    };
    match load(None) {
        Ok(fd) => Ok(fd),
        Err(error) => {
            let mut buf = vec![0u8; LOG_SIZE];
            let retry = load(Some(&mut buf));
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let text = String::from_utf8_lossy(&buf[..end]);
            let lines: Vec<&str> = text.lines().collect();
            let log = lines[lines.len().saturating_sub(6)..].join("\n");
            match retry {
                // Loaded with the log on: a transient failure before.
                Ok(fd) => Ok(fd),
                Err(_) => Err(LoadError { error, log }),
            }
        }
    }
}

/// Puts program `prog_fd` into slot `key` of a BPF_MAP_TYPE_PROG_ARRAY
/// (an atomic replacement of what was there).
pub(crate) fn bpf_prog_array_set(map: &impl AsRawFd, key: u32, prog_fd: RawFd) -> io::Result<()> {
    let value = prog_fd as u32;
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..MapElemAttr::default()
    };
    // SAFETY: the attr of BPF_MAP_UPDATE_ELEM; key and value are live u32s,
    // the sizes the prog array has.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(|_| ())
}

/// Empties slot `key` of a prog array (a tail call into it falls through).
pub(crate) fn bpf_prog_array_clear(map: &impl AsRawFd, key: u32) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        ..MapElemAttr::default()
    };
    // SAFETY: the attr of BPF_MAP_DELETE_ELEM; `key` is a live u32.
    match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs XDP program `prog_fd` once on `frame` (BPF_PROG_TEST_RUN; frames
/// beyond a page become multi-buffer input if the program has frags) and
/// returns its XDP action.
pub(crate) fn bpf_prog_test_run_xdp(prog_fd: &impl AsRawFd, frame: &[u8]) -> io::Result<u32> {
    bpf_prog_test_run_xdp_out(prog_fd, frame, &mut []).map(|(act, _)| act)
}

/// As [`bpf_prog_test_run_xdp`], with the buffer the program left (from
/// its XDP metadata on) copied into `out` when `out` is not empty: returns
/// the action and that buffer's length. An `out` too short is an error
/// (ENOSPC).
pub(crate) fn bpf_prog_test_run_xdp_out(
    prog_fd: &impl AsRawFd,
    frame: &[u8],
    out: &mut [u8],
) -> io::Result<(u32, usize)> {
    let mut attr = TestRunAttr {
        prog_fd: prog_fd.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: if out.is_empty() {
            0
        } else {
            out.as_mut_ptr() as u64
        },
        repeat: 1,
        ..TestRunAttr::default()
    };
    // SAFETY: the attr of BPF_PROG_TEST_RUN; data_in is `frame`, read only;
    // data_out is null or `out`, writable for data_size_out bytes (the
    // kernel copies at most that much); no context buffers.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok((attr.retval, attr.data_size_out as usize))
}

/// An ifreq naming `ifname`, for the SIOC* ioctls.
fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
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
    Ok(ifr)
}

/// `ioctl(req, ifr)` on a throwaway datagram socket.
///
/// # Safety
/// `req` must be an ioctl that reads and writes a `struct ifreq` only, and
/// any pointer in `ifr` must be valid for what `req` does with it.
unsafe fn ifreq_ioctl(req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: plain socket(2), result checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
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
pub(crate) fn mtu(ifname: &str) -> io::Result<u32> {
    let mut ifr = ifreq(ifname)?;
    // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into `ifr`.
    unsafe { ifreq_ioctl(libc::SIOCGIFMTU, &mut ifr) }?;
    // SAFETY: SIOCGIFMTU filled the ifru_mtu member.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu } as u32)
}

/// ETHTOOL_GCHANNELS of `ifname`: its rx + combined channels, if the
/// driver reports them (answers in the caller's network namespace).
pub(crate) fn ethtool_rx_channels(ifname: &str) -> Option<u32> {
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

/// An int socket option.
pub(crate) fn getsockopt_int(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    // SAFETY: a c_int is valid for every bit pattern.
    unsafe { getsockopt::<libc::c_int>(fd, level, name) }
}

/// `clock` now, in ns (0 if it cannot be read).
pub(crate) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`; the clocks we
    // read exist on every Linux, so it cannot fail (0 is returned if it did).
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Sends one rtnetlink request `msg` (a complete nlmsghdr + body) to the
/// kernel on a fresh NETLINK_ROUTE socket and returns the reply's bytes
/// (one read of up to 32 KiB).
pub(crate) fn netlink_route_request(msg: &[u8]) -> io::Result<Vec<u8>> {
    // SAFETY: plain socket(2); result checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor, owned from here on.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: `msg` is a valid buffer of the length given; the kernel is
    // the default destination of an unbound netlink socket.
    let rc = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}
