//! Waiting on descriptors: `ppoll` over a set, or one descriptor.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

pub use libc::pollfd as PollFd;
pub use libc::{POLLERR, POLLHUP, POLLIN, POLLOUT};

/// A pollfd for `fd` (a negative fd is skipped by [`poll`]).
pub fn pollfd(fd: libc::c_int, events: libc::c_short) -> PollFd {
    PollFd {
        fd,
        events,
        revents: 0,
    }
}

/// `ppoll` on `fds` for at most `timeout` (ns resolution; a negative fd is
/// skipped). An interrupted wait counts as a wake-up with nothing ready.
pub fn poll(fds: &mut [PollFd], timeout: Duration) -> io::Result<usize> {
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
    match crate::check(rc) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// Waits up to `timeout` for `events` on one descriptor; returns the events
/// seen (0 on timeout, interruption or error: the caller retries or gives up
/// on its own clock).
pub fn wait(fd: &impl AsRawFd, events: libc::c_short, timeout: Duration) -> libc::c_short {
    let mut pfd = [pollfd(fd.as_raw_fd(), events)];
    match poll(&mut pfd, timeout) {
        Ok(n) if n > 0 => pfd[0].revents,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_readable_and_times_out() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(wait(&a, POLLIN, Duration::from_millis(1)), 0);
        assert_ne!(wait(&a, POLLOUT, Duration::from_millis(1)) & POLLOUT, 0);
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        let mut fds = [pollfd(a.as_raw_fd(), POLLIN), pollfd(-1, POLLIN)];
        assert_eq!(poll(&mut fds, Duration::from_secs(5)).unwrap(), 1);
        assert_ne!(fds[0].revents & POLLIN, 0);
        assert_eq!(fds[1].revents, 0);
    }
}
