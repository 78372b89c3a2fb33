//! Dropping a capability from the calling thread's effective set, so a test
//! can see how code behaves without a privilege. Capabilities are per
//! thread: run it in a thread of its own. The capability stays permitted.
//! The raw capget/capset calls belong in the syscall layer once there is one.

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

/// Panics unless the process runs as root (effective uid 0).
///
/// Tests that need root are marked `#[ignore = "needs root"]`; this check
/// turns running them anyway (`--include-ignored`) without root into one
/// clear failure instead of a confusing one deep in `ip netns add`.
pub fn require_root() {
    let euid = effective_uid();
    assert!(
        euid == Some(0),
        "this test needs root (network namespaces, packet capture); \
         effective uid is {euid:?}. Run it as root, e.g. `sudo -E cargo test -- --include-ignored` \
         or `scripts/test.sh` as root."
    );
}

/// The effective uid, read from /proc/self/status (no unsafe call needed).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // "Uid:\treal\teffective\tsaved\tfs"
    line.split_whitespace().nth(2)?.parse().ok()
}
