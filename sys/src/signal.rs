//! One self-pipe for signals, used by the agent's and the sensor's event
//! loops alike: the handler writes the signal's number into a non-blocking
//! pipe whose read end the loop polls (mio or poll), so a signal wakes the
//! loop at once and is handled there, outside the handler.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};

pub use libc::{SIGHUP, SIGINT, SIGTERM};

/// The write end the handler writes to (-1: none yet). One per process:
/// signal dispositions are process-wide.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work: one atomic load and one write(2), with
    // errno saved around it. A full pipe already holds a wake-up.
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let byte = sig as u8;
    // SAFETY: __errno_location is the calling thread's errno; write(2)
    // reads one byte from a live local.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// The read end of the process's signal pipe.
#[derive(Debug)]
pub struct SignalPipe {
    read: UnixStream,
}

/// Which signals arrived since the last [`SignalPipe::drain`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Caught(u64);

impl Caught {
    pub fn contains(self, sig: libc::c_int) -> bool {
        (0..64).contains(&sig) && self.0 & (1 << sig) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl SignalPipe {
    /// Routes `signals` into a new pipe (with SA_RESTART, so other threads'
    /// blocking calls are not cut short; poll and epoll return on a signal
    /// regardless). Installing again moves every routed signal to the new
    /// pipe; the old one stops receiving.
    pub fn install(signals: &[libc::c_int]) -> io::Result<SignalPipe> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let old = WRITE_FD.swap(write.into_raw_fd(), Ordering::SeqCst);
        if old >= 0 {
            // SAFETY: `old` is the write end an earlier `install` leaked
            // into WRITE_FD, owned by nothing else; the handler no longer
            // sees it (swapped out above).
            unsafe { libc::close(old) };
        }
        for &sig in signals {
            // SAFETY: all-zero is a valid sigaction (no handler, empty
            // mask, no flags, no restorer); the fields we need are set next.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            // SAFETY: `sa` is a valid sigaction whose handler only does
            // async-signal-safe work; sigemptyset initialises its mask.
            let rc = unsafe {
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut())
            };
            crate::check(rc)?;
        }
        Ok(SignalPipe { read })
    }

    /// Empties the pipe and returns the signals it carried.
    pub fn drain(&mut self) -> Caught {
        let mut caught = Caught::default();
        let mut buf = [0u8; 64];
        while let Ok(n) = self.read.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b < 64 {
                    caught.0 |= 1 << b;
                }
            }
        }
        caught
    }
}

impl AsFd for SignalPipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl AsRawFd for SignalPipe {
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// Sends `sig` to the calling thread (tests of signal handling).
pub fn raise(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: raise(3) has no memory preconditions; what the signal does is
    // its disposition's business.
    crate::check(unsafe { libc::raise(sig) }).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_signal_comes_out_of_the_pipe() {
        let mut p = SignalPipe::install(&[libc::SIGUSR1, libc::SIGUSR2]).unwrap();
        assert!(p.drain().is_empty());
        raise(libc::SIGUSR2).unwrap();
        let c = p.drain();
        assert!(c.contains(libc::SIGUSR2));
        assert!(!c.contains(libc::SIGUSR1));
        assert!(p.drain().is_empty());
    }
}
