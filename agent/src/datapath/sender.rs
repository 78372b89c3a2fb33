//! Batched sends to the sensor: a connected non-blocking UDP socket that
//! sends a batch of datagrams with one `sendmmsg` (grouped into UDP GSO
//! super-datagrams where the kernel takes them), and a non-blocking TCP
//! stream written once per batch from a bounded buffer.
//!
//! The datapath never blocks on the sensor while capturing live: a full
//! socket buffer drops the datagrams (the caller counts them), so the capture
//! ring keeps draining. A file replay instead waits for room, bounded in time.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rpcap::plain;
use rpcap::PktHdr;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Most segments the kernel accepts in one UDP GSO send (UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO send (IPv4 total length limit).
const GSO_MAX_BYTES: usize = 65507;
/// Longest a "wait for room" sender waits on a full socket before dropping.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(2);

/// What happens when the socket buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Drop and count (live capture: the ring must keep moving).
    Drop,
    /// Wait for room, at most a bounded time (file replay).
    Wait,
}

/// What one batch send did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    pub sent: usize,
    pub dropped: usize,
    /// ECONNREFUSED seen (the sensor's port was closed for an earlier datagram).
    pub refused: usize,
}

/// A connected UDP socket sending batches of datagrams.
#[derive(Debug)]
pub struct UdpSender {
    sock: Socket,
    backpressure: Backpressure,
    /// GSO segment size in use (`None`: plain sendmmsg).
    gso: Option<usize>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// First datagram index of each message of the current send.
    starts: Vec<usize>,
}

// SAFETY: the iovec/mmsghdr scratch arrays hold raw pointers only while a
// `send` call runs (they are refilled from the caller's slices every time), so
// the sender can move between threads like the socket it owns.
unsafe impl Send for UdpSender {}

impl UdpSender {
    /// A non-blocking UDP socket connected to `dest` with send buffer `sndbuf`
    /// (0: system default), for batches of at most `max_batch` datagrams.
    /// `gso_size`: try UDP GSO with segments of this size (udpstr datagrams).
    pub fn connect(
        dest: SocketAddr,
        sndbuf: usize,
        max_batch: usize,
        backpressure: Backpressure,
        gso_size: Option<usize>,
    ) -> io::Result<UdpSender> {
        let sock = Socket::new(Domain::for_address(dest), Type::DGRAM, Some(Protocol::UDP))?;
        if sndbuf > 0 {
            set_sndbuf(&sock, sndbuf);
        }
        sock.connect(&SockAddr::from(dest))?;
        sock.set_nonblocking(true)?;
        let gso = gso_size.filter(|&s| GSO_MAX_BYTES / s >= 2 && enable_gso(&sock, s));
        let max_batch = max_batch.max(1);
        // SAFETY: all-zero iovec/mmsghdr are valid (null pointers, zero lengths).
        let zero_iov: libc::iovec = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let zero_msg: libc::mmsghdr = unsafe { mem::zeroed() };
        Ok(UdpSender {
            sock,
            backpressure,
            gso,
            iovs: vec![zero_iov; max_batch],
            msgs: vec![zero_msg; max_batch],
            starts: vec![0; max_batch + 1],
        })
    }

    /// Segment size when UDP GSO is in use.
    pub fn gso(&self) -> Option<usize> {
        self.gso
    }

    /// Sends datagrams `dgram(0..n)` in as few syscalls as possible; calls
    /// `on_drop(i)` for every datagram that was not sent.
    pub fn send<'a>(
        &mut self,
        n: usize,
        dgram: impl Fn(usize) -> &'a [u8],
        mut on_drop: impl FnMut(usize),
    ) -> SendReport {
        let mut report = SendReport::default();
        let mut base = 0;
        while base < n {
            let chunk = (n - base).min(self.iovs.len());
            let r = self.send_chunk(base, chunk, &dgram, &mut on_drop);
            report.sent += r.sent;
            report.dropped += r.dropped;
            report.refused += r.refused;
            base += chunk;
        }
        report
    }

    fn send_chunk<'a>(
        &mut self,
        base: usize,
        n: usize,
        dgram: &impl Fn(usize) -> &'a [u8],
        on_drop: &mut impl FnMut(usize),
    ) -> SendReport {
        // One iovec per datagram; messages group datagrams (GSO) or hold one.
        for i in 0..n {
            let d = dgram(base + i);
            self.iovs[i] = libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            };
        }
        let nmsg = self.group(n);
        for m in 0..nmsg {
            let (s, e) = (self.starts[m], self.starts[m + 1]);
            // SAFETY: all-zero is a valid msghdr; the iovec pointer set next
            // stays valid for this call (self.iovs is not resized).
            let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
            hdr.msg_iov = self.iovs[s..e].as_mut_ptr();
            hdr.msg_iovlen = e - s;
            self.msgs[m] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
        }
        let mut report = SendReport::default();
        let mut m = 0;
        let mut retried_refused = usize::MAX;
        let mut waited_since: Option<Instant> = None;
        while m < nmsg {
            // SAFETY: msgs[m..nmsg] are initialised above and point to iovecs
            // that point into the caller's datagrams, all alive for this call.
            let rc = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    self.msgs[m..nmsg].as_mut_ptr(),
                    (nmsg - m) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                let done = rc as usize;
                report.sent += self.starts[m + done] - self.starts[m];
                m += done;
                waited_since = None;
                continue;
            }
            let err = io::Error::last_os_error();
            let (s, e) = (self.starts[m], self.starts[m + 1]);
            match err.raw_os_error().unwrap_or(0) {
                libc::EINTR => continue,
                libc::ECONNREFUSED if retried_refused != m => {
                    // The error belongs to an earlier datagram (ICMP port
                    // unreachable); this one was not sent: try it once more.
                    report.refused += 1;
                    retried_refused = m;
                    continue;
                }
                libc::EAGAIN | libc::ENOBUFS if self.backpressure == Backpressure::Wait => {
                    let t0 = *waited_since.get_or_insert_with(Instant::now);
                    if t0.elapsed() < WAIT_FOR_ROOM {
                        self.wait_writable(Duration::from_millis(10));
                        continue;
                    }
                    drop_range(s, self.starts[nmsg], base, on_drop, &mut report);
                    m = nmsg;
                }
                libc::EAGAIN | libc::ENOBUFS => {
                    // No room now, and the rest of the batch would not fit
                    // either: drop all of it rather than spin.
                    drop_range(s, self.starts[nmsg], base, on_drop, &mut report);
                    m = nmsg;
                }
                libc::EINVAL | libc::EIO if self.gso.is_some() && e - s > 1 => {
                    // The path cannot take GSO (segment over the MTU, no
                    // checksum offload): fall back for good and resend.
                    log::info!("UDP GSO refused ({err}); using sendmmsg only");
                    self.disable_gso();
                    let rest = self.send_chunk_plain(base + s, n - s, dgram, on_drop);
                    report.sent += rest.sent;
                    report.dropped += rest.dropped;
                    report.refused += rest.refused;
                    return report;
                }
                _ => {
                    log::debug!("UDP send: {err}");
                    drop_range(s, e, base, on_drop, &mut report);
                    m += 1;
                }
            }
        }
        report
    }

    fn send_chunk_plain<'a>(
        &mut self,
        base: usize,
        n: usize,
        dgram: &impl Fn(usize) -> &'a [u8],
        on_drop: &mut impl FnMut(usize),
    ) -> SendReport {
        debug_assert!(self.gso.is_none());
        self.send_chunk(base, n, dgram, on_drop)
    }

    /// Fills `starts` with message boundaries over iovs[0..n]: with GSO, runs
    /// of datagrams all of the segment size (the last of a run may be
    /// shorter); without, one datagram per message. Returns the message count.
    fn group(&mut self, n: usize) -> usize {
        let Some(seg) = self.gso else {
            for i in 0..=n {
                self.starts[i] = i;
            }
            return n;
        };
        let max = (GSO_MAX_BYTES / seg).min(GSO_MAX_SEGMENTS);
        let mut m = 0;
        let mut i = 0;
        while i < n {
            self.starts[m] = i;
            m += 1;
            let mut k = 0;
            while i < n && k < max {
                let len = self.iovs[i].iov_len;
                i += 1;
                k += 1;
                if len != seg {
                    break;
                }
            }
        }
        self.starts[m] = n;
        m
    }

    fn disable_gso(&mut self) {
        self.gso = None;
        let zero: libc::c_int = 0;
        // SAFETY: setsockopt with a valid int.
        unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                &zero as *const libc::c_int as *const libc::c_void,
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    fn wait_writable(&self, timeout: Duration) {
        wait_fd(self.sock.as_raw_fd(), libc::POLLOUT, timeout);
    }
}

fn drop_range(
    s: usize,
    e: usize,
    base: usize,
    on_drop: &mut impl FnMut(usize),
    report: &mut SendReport,
) {
    for i in s..e {
        on_drop(base + i);
    }
    report.dropped += e - s;
}

/// Sets UDP_SEGMENT on the socket; false if the kernel does not have it.
fn enable_gso(sock: &Socket, seg: usize) -> bool {
    let v = seg as libc::c_int;
    // SAFETY: setsockopt with a valid int.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &v as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// SO_SNDBUFFORCE (root may exceed wmem_max), else SO_SNDBUF.
fn set_sndbuf(sock: &Socket, bytes: usize) {
    let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    // SAFETY: setsockopt with a valid int.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &v as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        if let Err(e) = sock.set_send_buffer_size(bytes) {
            log::warn!("SO_SNDBUF {bytes}: {e}");
        }
    }
}

fn wait_fd(fd: libc::c_int, events: libc::c_short, timeout: Duration) -> libc::c_short {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let rc = unsafe {
        libc::poll(
            &mut pfd,
            1,
            timeout.as_millis().min(i32::MAX as u128) as i32,
        )
    };
    if rc > 0 {
        pfd.revents
    } else {
        0
    }
}

/// Whole PACKET messages back to back in one bounded buffer: one plain UDP
/// datagram each, or a chunk of the TCP stream.
#[derive(Debug)]
pub struct MsgArena {
    buf: Box<[u8]>,
    /// Bytes of the buffer in use.
    len: usize,
    /// End offset of every message, in order.
    ends: Vec<usize>,
    max_msgs: usize,
}

/// The arena has no room for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaFull;

impl MsgArena {
    /// Room for `bytes` bytes and at most `max_msgs` messages.
    pub fn new(bytes: usize, max_msgs: usize) -> MsgArena {
        MsgArena {
            buf: vec![0; bytes].into_boxed_slice(),
            len: 0,
            ends: Vec::with_capacity(max_msgs),
            max_msgs,
        }
    }

    /// Appends one PACKET message (prefix + packet bytes, gathered from
    /// `parts`).
    pub fn push(&mut self, hdr: &PktHdr, parts: &[&[u8]]) -> Result<(), ArenaFull> {
        let need = plain::PREFIX_LEN + parts.iter().map(|p| p.len()).sum::<usize>();
        if self.ends.len() == self.max_msgs || self.buf.len() - self.len < need {
            return Err(ArenaFull);
        }
        let n = plain::encode_parts(hdr, parts, &mut self.buf[self.len..self.len + need]);
        self.len += n;
        self.ends.push(self.len);
        Ok(())
    }

    pub fn count(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Message `i`.
    pub fn msg(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    /// All bytes of all messages.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.ends.clear();
    }

    /// Forgets the first `n` bytes (written to a stream) and moves what is
    /// left to the front. Returns how many whole messages were completed.
    pub fn consume_bytes(&mut self, n: usize) -> usize {
        let n = n.min(self.len);
        let done = self.ends.partition_point(|&e| e <= n);
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
        self.ends.drain(..done);
        for e in &mut self.ends {
            *e -= n;
        }
        done
    }
}

/// Why the TCP data connection cannot be used any more.
#[derive(Debug, thiserror::Error)]
#[error("data connection closed: {0}")]
pub struct TcpClosed(pub io::Error);

/// The stream a TCP data channel is written to: the connection to the
/// sensor, or (TLS) the worker's end of a socket pair whose bytes a relay
/// thread encrypts onto the connection.
#[derive(Debug)]
pub enum DataStream {
    Tcp(TcpStream),
    Relay(UnixStream),
}

impl DataStream {
    pub fn try_clone(&self) -> io::Result<DataStream> {
        Ok(match self {
            DataStream::Tcp(s) => DataStream::Tcp(s.try_clone()?),
            DataStream::Relay(s) => DataStream::Relay(s.try_clone()?),
        })
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            DataStream::Tcp(s) => s.set_nonblocking(on),
            DataStream::Relay(s) => s.set_nonblocking(on),
        }
    }
}

impl From<TcpStream> for DataStream {
    fn from(s: TcpStream) -> DataStream {
        DataStream::Tcp(s)
    }
}

impl AsFd for DataStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DataStream::Tcp(s) => s.as_fd(),
            DataStream::Relay(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for DataStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A non-blocking TCP data connection fed from a [`MsgArena`].
#[derive(Debug)]
pub struct TcpSender {
    stream: DataStream,
    backpressure: Backpressure,
}

impl TcpSender {
    pub fn new(stream: DataStream, sndbuf: usize, backpressure: Backpressure) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        if let DataStream::Tcp(s) = &stream {
            let _ = s.set_nodelay(true);
        }
        if sndbuf > 0 {
            set_sndbuf(&socket2::SockRef::from(&stream), sndbuf);
        }
        Ok(TcpSender {
            stream,
            backpressure,
        })
    }

    /// Writes as much of the arena as the socket takes (one `send` normally),
    /// keeping any unwritten tail (whole messages are never cut: the stream
    /// stays in sync). Returns how many messages were completely written.
    pub fn write(&mut self, arena: &mut MsgArena) -> Result<usize, TcpClosed> {
        let mut done = 0;
        let t0 = Instant::now();
        while !arena.bytes().is_empty() {
            let b = arena.bytes();
            // SAFETY: sends from a valid slice; MSG_NOSIGNAL avoids SIGPIPE.
            let rc = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    b.as_ptr() as *const libc::c_void,
                    b.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if rc > 0 {
                done += arena.consume_bytes(rc as usize);
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error().unwrap_or(0) {
                libc::EINTR => continue,
                libc::EAGAIN | libc::ENOBUFS => {
                    if self.backpressure == Backpressure::Wait && t0.elapsed() < WAIT_FOR_ROOM {
                        wait_fd(
                            self.stream.as_raw_fd(),
                            libc::POLLOUT,
                            Duration::from_millis(10),
                        );
                        continue;
                    }
                    break;
                }
                _ => return Err(TcpClosed(err)),
            }
        }
        Ok(done)
    }

    /// Waits up to `timeout` until the arena is written (end of capture).
    pub fn drain(&mut self, arena: &mut MsgArena, timeout: Duration) -> Result<usize, TcpClosed> {
        let t0 = Instant::now();
        let mut done = self.write(arena)?;
        while !arena.is_empty() && t0.elapsed() < timeout {
            wait_fd(
                self.stream.as_raw_fd(),
                libc::POLLOUT,
                Duration::from_millis(10),
            );
            done += self.write(arena)?;
        }
        Ok(done)
    }

    /// Whether the peer closed the connection (checked without blocking;
    /// the sensor never sends on the data connection).
    pub fn peer_closed(&self) -> Option<io::Error> {
        let mut b = [0u8; 1];
        // SAFETY: peeks at most one byte into a valid buffer.
        let rc = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                b.as_mut_ptr() as *mut libc::c_void,
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if rc == 0 {
            return Some(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed"));
        }
        if rc < 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                return Some(e);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(caplen: usize, npkt: u32) -> PktHdr {
        PktHdr {
            ts_sec: 1,
            ts_usec: 2,
            caplen: caplen as u32,
            len: caplen as u32,
            npkt,
        }
    }

    #[test]
    fn arena_is_bounded_and_consumes_whole_messages() {
        let mut a = MsgArena::new(200, 3);
        assert!(a.push(&hdr(50, 1), &[&[1; 50]]).is_ok()); // 78 bytes
        assert!(a.push(&hdr(50, 2), &[&[2; 50]]).is_ok()); // 156
        assert_eq!(a.push(&hdr(50, 3), &[&[3; 50]]), Err(ArenaFull));
        assert!(a.push(&hdr(10, 3), &[&[3; 10]]).is_ok()); // 194
        assert_eq!(a.push(&hdr(0, 4), &[]), Err(ArenaFull)); // max_msgs
        assert_eq!(a.count(), 3);
        assert_eq!(a.msg(1).len(), 78);
        // A partial write of 100 bytes completes one message.
        assert_eq!(a.consume_bytes(100), 1);
        assert_eq!(a.bytes().len(), 94);
        assert_eq!(a.count(), 2);
        assert_eq!(a.consume_bytes(94), 2);
        assert!(a.is_empty());
    }
}
