//! The process itself: becoming a daemon (`-d`), standard streams onto
//! /dev/null (`-d`, inetd mode), the nice value (`-e`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

/// Where [`daemonize`] returns.
pub enum Forked {
    /// The process that called [`daemonize`]: it waited for the daemon to
    /// say it is up (or why it is not), and should exit with `code`,
    /// printing `message` when there is one.
    Parent { code: u8, message: String },
    /// The daemon: detached, in its own session, in `/`, its standard
    /// streams on /dev/null. It answers the parent with [`Readiness`].
    Daemon(Readiness),
}

/// The daemon's end of the pipe its original process waits on. Dropped
/// without an answer, the parent exits 1 ("exited before it was ready").
pub struct Readiness {
    pipe: io::PipeWriter,
}

impl Readiness {
    /// The daemon is serving: the parent exits 0.
    pub fn ready(self) {
        self.answer(0, "");
    }

    /// The daemon cannot start: the parent prints `message` and exits `code`.
    pub fn failed(self, code: u8, message: &str) {
        self.answer(code.max(1), message);
    }

    fn answer(mut self, code: u8, message: &str) {
        let mut bytes = vec![code];
        bytes.extend_from_slice(message.as_bytes());
        // The parent gone (killed meanwhile) is no reason to stop serving.
        let _ = self.pipe.write_all(&bytes);
    }
}

/// Threads of this process, from /proc/self/task.
fn threads() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Becomes a daemon as rpcapd does (fork, setsid, fork again: the daemon
/// is no session leader and can never get a controlling terminal), then
/// `chdir /` and standard streams onto /dev/null. Unlike rpcapd the
/// original process waits for the daemon's [`Readiness`], so that an init
/// script sees a start that failed, and a pid file written by the daemon
/// exists when it returns.
///
/// Refuses to fork a process that runs more than one thread: only the
/// calling thread would live on in the children.
pub fn daemonize() -> io::Result<Forked> {
    let n = threads()?;
    if n != 1 {
        return Err(io::Error::other(format!(
            "cannot become a daemon with {n} threads running (fork keeps only one)"
        )));
    }
    let (mut reader, writer) = io::pipe()?;
    // SAFETY: the process is single-threaded (checked above), so the child
    // is a full copy with no lock held by a vanished thread; fork has no
    // memory-safety preconditions otherwise.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        drop(writer);
        let mut answer = Vec::new();
        let read = reader.read_to_end(&mut answer);
        // The first child exits as soon as it has forked the daemon.
        let mut status = 0;
        // SAFETY: waits for our own child `pid`; `status` is a valid
        // out-pointer for the call.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Ok(match (read, answer.split_first()) {
            (Ok(_), Some((&code, text))) => Forked::Parent {
                code,
                message: String::from_utf8_lossy(text).into_owned(),
            },
            _ => Forked::Parent {
                code: 1,
                message: "the daemon exited before it was ready".into(),
            },
        });
    }
    drop(reader);
    // First child. SAFETY: setsid has no preconditions; it fails only if we
    // lead a process group, which a just-forked child does not.
    if unsafe { libc::setsid() } < 0 {
        // SAFETY: _exit ends this child without running the parent's
        // atexit handlers or flushing its copied stdio buffers.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: still single-threaded (a copy of the checked process).
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        // The first child (or a failed fork: the parent then reads EOF
        // and reports that the daemon never started). SAFETY: as above.
        unsafe { libc::_exit(if pid > 0 { 0 } else { 1 }) };
    }
    // The daemon.
    std::env::set_current_dir("/")?;
    stdio_to_dev_null()?;
    Ok(Forked::Daemon(Readiness { pipe: writer }))
}

/// Points standard input, output and error at /dev/null (a daemon's, or
/// inetd mode's once the socket on standard input is duplicated: nothing
/// may write into the client's connection but the protocol).
pub fn stdio_to_dev_null() -> io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    for fd in 0..=2 {
        // SAFETY: `null` is an open descriptor for the whole call; dup2
        // atomically replaces descriptor 0, 1 or 2, which std's handles
        // keep using by number (now /dev/null) — no Rust object owns them.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets the nice value of the calling thread; threads it starts afterwards
/// inherit it (call it before any thread starts to cover the process).
pub fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: plain syscall on the calling thread (who 0 = caller), no
    // pointers.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    crate::check(rc).map(|_| ())
}

/// The calling thread's nice value.
pub fn nice() -> io::Result<i32> {
    // getpriority may return -1 legitimately: errno tells.
    // SAFETY: errno is this thread's; resetting it has no other effect.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain syscall, no pointers.
    let rc = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if rc == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(0) {
            return Err(e);
        }
    }
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_can_be_raised_on_a_thread() {
        std::thread::spawn(|| {
            let before = nice().unwrap();
            let want = (before + 3).min(19);
            set_nice(want).unwrap();
            assert_eq!(nice().unwrap(), want);
            // Children inherit it.
            let child = std::thread::spawn(|| nice().unwrap()).join().unwrap();
            assert_eq!(child, want);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn daemonize_refuses_a_threaded_process() {
        // The test harness runs threads: refusing is the only safe answer.
        let _t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        match daemonize() {
            Err(e) => assert!(e.to_string().contains("threads running"), "{e}"),
            Ok(_) => panic!("forked a threaded process"),
        }
    }
}
