//! Network namespaces of the calling thread (tests and their harnesses).

use std::io;
use std::os::fd::AsRawFd;

/// Moves the calling thread into the network namespace `ns` refers to (a
/// /var/run/netns/NAME or /proc/PID/ns/net file); sockets it creates live
/// there, and threads it spawns start there.
pub fn setns_net(ns: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: setns(2) on a descriptor; it affects the calling thread only.
    crate::check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(|_| ())
}

/// Moves the calling thread into a new network namespace (with only `lo`,
/// down).
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: unshare(2) with a flag only; it affects the calling thread.
    crate::check(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_namespace_has_only_loopback_and_can_be_left() {
        std::thread::spawn(|| {
            let home = std::fs::File::open("/proc/self/ns/net").unwrap();
            if let Err(e) = unshare_net() {
                // Without CAP_SYS_ADMIN there is nothing to check.
                assert_eq!(e.raw_os_error(), Some(libc::EPERM));
                return;
            }
            assert!(crate::ifreq::ifindex("lo").is_ok());
            setns_net(&home).unwrap();
        })
        .join()
        .unwrap();
    }
}
