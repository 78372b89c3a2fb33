//! Capabilities of the calling thread, for tests that check how code
//! behaves without a privilege. Capabilities are per thread: a test drops
//! one in a thread of its own.

use std::io;

/// CAP_NET_ADMIN (busy-poll socket options).
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_IPC_LOCK (pinned memory beyond RLIMIT_MEMLOCK).
pub const CAP_IPC_LOCK: u32 = 14;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit data words.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Clears `cap` (< 32) from this thread's effective set; it stays permitted.
pub fn drop_effective(cap: u32) -> io::Result<()> {
    if cap >= 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "capability not in the first word",
        ));
    }
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget with a valid header and the two data structs version 3
    // writes; it acts on the calling thread only.
    crate::check(unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) })?;
    d[0].effective &= !(1 << cap);
    // SAFETY: capset with a valid header and two data structs it reads.
    crate::check(unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) })?;
    Ok(())
}

/// Whether `cap` (< 32) is in this thread's effective set.
pub fn has_effective(cap: u32) -> io::Result<bool> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: as in `drop_effective`.
    crate::check(unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) })?;
    Ok(cap < 32 && d[0].effective & (1 << cap) != 0)
}

/// The calling process's RLIMIT_MEMLOCK soft limit (`None`: unlimited).
pub fn memlock_limit() -> io::Result<Option<u64>> {
    let mut lim: libc::rlimit = crate::sockopt::zeroed();
    // SAFETY: getrlimit writes one rlimit into `lim`.
    crate::check(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) })?;
    Ok((lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_capability_is_gone_from_this_thread_only() {
        let had = has_effective(CAP_NET_ADMIN).unwrap();
        std::thread::spawn(|| {
            drop_effective(CAP_NET_ADMIN).unwrap();
            assert!(!has_effective(CAP_NET_ADMIN).unwrap());
        })
        .join()
        .unwrap();
        assert_eq!(has_effective(CAP_NET_ADMIN).unwrap(), had);
        assert!(drop_effective(40).is_err());
        memlock_limit().unwrap();
    }
}
