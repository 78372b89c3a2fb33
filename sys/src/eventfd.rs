//! A non-blocking eventfd: one thread wakes another that sleeps in `poll`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// An eventfd (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain eventfd(2) call; the result is checked before use.
        let fd = crate::check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Another descriptor of the same eventfd (for the side that polls).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.0.try_clone()
    }

    /// Adds one to the counter: the descriptor polls readable. A full
    /// counter (EAGAIN) means a wake-up is already pending, which is all a
    /// wake needs, so errors are ignored.
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from `one`, a live 8-byte buffer.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Resets a non-blocking eventfd that polled readable (any descriptor of it).
pub fn drain(fd: &impl AsRawFd) {
    let mut v = [0u8; 8];
    // SAFETY: reads at most 8 bytes into `v`; the eventfd is non-blocking,
    // and a failed read only means another wake-up.
    unsafe { libc::read(fd.as_raw_fd(), v.as_mut_ptr().cast(), 8) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::{wait, POLLIN};
    use std::time::Duration;

    #[test]
    fn wake_makes_the_clone_readable_until_drained() {
        let e = EventFd::new().unwrap();
        let other = e.try_clone_fd().unwrap();
        assert_eq!(wait(&other, POLLIN, Duration::ZERO), 0);
        e.wake();
        e.wake();
        assert_ne!(wait(&other, POLLIN, Duration::ZERO) & POLLIN, 0);
        drain(&other);
        assert_eq!(wait(&other, POLLIN, Duration::ZERO), 0);
    }
}
