//! Dropping a capability from the calling thread's effective set, so a test
//! can see how code behaves without a privilege. Capabilities are per
//! thread: run it in a thread of its own. The capability stays permitted.
//! The raw capget/capset calls are `sys::caps`'.

pub use sys::caps::{CAP_IPC_LOCK, CAP_NET_ADMIN};

/// Clears `cap` (< 32) from this thread's effective capabilities.
pub fn drop_effective(cap: u32) {
    sys::caps::drop_effective(cap).unwrap_or_else(|e| panic!("dropping capability {cap}: {e}"));
}

/// Moves this thread into a new network namespace (with only `lo`, down).
pub fn unshare_net() {
    sys::ns::unshare_net().unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e}"));
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

/// Whether the process runs as root (effective uid 0): for tests that do
/// more when they can, not for those that need it ([`require_root`]).
pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// The effective uid, read from /proc/self/status (no unsafe call needed).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // "Uid:\treal\teffective\tsaved\tfs"
    line.split_whitespace().nth(2)?.parse().ok()
}
