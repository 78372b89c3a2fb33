//! Busy polling of the AF_XDP sockets (`XdpBusyPoll`): the worker drives its
//! RX queues' NAPI processing itself instead of waiting for the interrupt
//! and softirq.
//!
//! With it on, each socket carries SO_PREFER_BUSY_POLL (the kernel leaves
//! the queue to the application's busy polling while it keeps polling),
//! SO_BUSY_POLL (how long one syscall may poll, µs) and SO_BUSY_POLL_BUDGET
//! (frames per NAPI poll), and the worker kicks a socket (a non-blocking
//! recvfrom) whenever its RX ring is empty (`Xsk::kick`).
//!
//! Off by default: on veth (the test bed) a kick runs the link's NAPI poll -
//! the XDP program and the copy of every frame into the UMEM - on the
//! worker's CPU instead of the sender's softirq, which made the worker
//! dearer per frame (benches/README.md "AF_XDP"). On a NIC with cores to
//! spare it is the setting to try (Suricata's af-xdp busy-poll), together
//! with the interface's `napi_defer_hard_irqs` and `gro_flush_timeout`.

use std::io;
use std::os::fd::AsRawFd;

use crate::capture::sys::{getsockopt_int, setsockopt};

/// SOL_SOCKET options (asm-generic/socket.h; libc lacks the two newer ones).
const SO_BUSY_POLL: libc::c_int = 46;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// Busy-poll time per syscall (µs).
pub const USECS: u32 = 20;

/// What a socket carries, read back with getsockopt. The budget is not
/// among it: the kernel has no getter for SO_BUSY_POLL_BUDGET (ENOPROTOOPT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub prefer: bool,
    pub usecs: u32,
}

/// Sets SO_PREFER_BUSY_POLL, SO_BUSY_POLL ([`USECS`]) and
/// SO_BUSY_POLL_BUDGET on `fd`. Fails where the kernel lacks them
/// (ENOPROTOOPT before 5.11) or refuses them (EPERM without CAP_NET_ADMIN).
pub fn enable(fd: &impl AsRawFd, budget: u16) -> io::Result<()> {
    let int = |v: u32| v as libc::c_int;
    setsockopt(fd, libc::SOL_SOCKET, SO_PREFER_BUSY_POLL, &int(1))?;
    setsockopt(fd, libc::SOL_SOCKET, SO_BUSY_POLL, &int(USECS))?;
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        SO_BUSY_POLL_BUDGET,
        &int(u32::from(budget)),
    )
}

/// The busy-poll options `fd` carries now.
pub fn read(fd: &impl AsRawFd) -> io::Result<Settings> {
    let get = |name| getsockopt_int(fd, libc::SOL_SOCKET, name);
    Ok(Settings {
        prefer: get(SO_PREFER_BUSY_POLL)? != 0,
        usecs: get(SO_BUSY_POLL)?.max(0) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_carries_the_options_or_says_why_not() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        match enable(&s, 32) {
            Ok(()) => assert_eq!(
                read(&s).unwrap(),
                Settings {
                    prefer: true,
                    usecs: USECS,
                }
            ),
            // Old kernel or no CAP_NET_ADMIN: a typed error, no panic.
            Err(e) => assert!(
                matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EPERM)),
                "{e}"
            ),
        }
    }
}
