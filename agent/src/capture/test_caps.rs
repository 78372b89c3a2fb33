//! Test helper, shared by the unit tests and `agent/tests` (via `#[path]`):
//! drops a capability from the calling thread's effective set, so a test
//! can see how capture code behaves without a privilege. Capabilities are
//! per thread: run it in a thread of its own. The capability stays
//! permitted.
// Each user takes the constants it needs.
#![allow(dead_code)]

/// CAP_NET_ADMIN (busy-poll socket options).
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_IPC_LOCK (pinned memory beyond RLIMIT_MEMLOCK).
pub const CAP_IPC_LOCK: u32 = 14;

/// Clears `cap` (< 32) from this thread's effective capabilities.
pub fn drop_effective(cap: u32) {
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
    assert!(cap < 32, "capability {cap} is not in the first word");
    let mut h = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget/capset with a valid header and two data structs, as
    // version 3 requires; they act on the calling thread only.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()), 0);
        d[0].effective &= !(1 << cap);
        assert_eq!(libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()), 0);
    }
}

/// Moves this thread into a new network namespace (with only `lo`, down).
pub fn unshare_net() {
    // SAFETY: unshare(2) with a flag only; it affects the calling thread.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
}
