//! Batched sends to the sensor: a connected non-blocking UDP socket that
//! sends a batch of datagrams with one `sendmmsg` (grouped into UDP GSO
//! super-datagrams where the kernel takes them), and a non-blocking TCP
//! stream written once per batch from a bounded buffer.
//!
//! The datapath never blocks on the sensor while capturing live: a full
//! socket buffer drops the datagrams (the caller counts them), so the capture
//! ring keeps draining. A file replay instead waits for room, bounded in time.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rpcap::plain;
use rpcap::PktHdr;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use sys::mmsg::SendBatch;

/// Most segments the kernel accepts in one UDP GSO send (UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO send (IPv4 total length limit).
const GSO_MAX_BYTES: usize = 65507;
/// Longest a "wait for room" sender waits on a full socket before dropping.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(2);
/// UDP header bytes.
const UDP_HEADER: usize = 8;
/// IPv4 header bytes (xrpcapd sends no IP options).
const IPV4_HEADER: usize = 20;
/// IPv6 header bytes (no extension headers).
const IPV6_HEADER: usize = 40;

/// Whether the kernel may cut a datagram larger than the path MTU into IP
/// fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragments {
    /// Yes (plain UDP: one datagram per packet, as the references send it).
    Allow,
    /// No (udpstr): an oversized send fails with EMSGSIZE, which
    /// [`SendReport::path_payload`] reports so the datagrams are resized.
    Never,
}

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
    /// UDP payload bytes of the datagrams sent.
    pub bytes: usize,
    pub dropped: usize,
    /// ECONNREFUSED seen (the sensor's port was closed for an earlier datagram).
    pub refused: usize,
    /// Some datagrams were larger than the path MTU (EMSGSIZE, or a GSO
    /// segment the path no longer takes): the largest UDP payload the path
    /// takes now. Those datagrams, and the rest of their batch, are dropped.
    pub path_payload: Option<usize>,
}

impl SendReport {
    fn add(&mut self, other: SendReport) {
        self.sent += other.sent;
        self.bytes += other.bytes;
        self.dropped += other.dropped;
        self.refused += other.refused;
        self.path_payload = match (self.path_payload, other.path_payload) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A connected UDP socket sending batches of datagrams.
#[derive(Debug)]
pub struct UdpSender {
    sock: Socket,
    /// The socket's family: which IP header the path MTU must also carry.
    ipv6: bool,
    /// Header bytes between IP and the payload: UDP's 8, none on a raw socket.
    l4_header: usize,
    fragments: Fragments,
    backpressure: Backpressure,
    /// GSO segment size in use (`None`: plain sendmmsg).
    gso: Option<usize>,
    batch: SendBatch,
    /// First datagram index of each message of the current send.
    starts: Vec<usize>,
}

impl UdpSender {
    /// A non-blocking UDP socket connected to `dest` with send buffer `sndbuf`
    /// (0: system default), for batches of at most `max_batch` datagrams.
    pub fn connect(
        dest: SocketAddr,
        sndbuf: usize,
        max_batch: usize,
        backpressure: Backpressure,
        fragments: Fragments,
    ) -> io::Result<UdpSender> {
        let sock = Socket::new(Domain::for_address(dest), Type::DGRAM, Some(Protocol::UDP))?;
        Self::with_socket(
            sock,
            UDP_HEADER,
            dest,
            sndbuf,
            max_batch,
            backpressure,
            fragments,
        )
    }

    /// [`UdpSender::connect`] for a raw IP socket of IP protocol `proto`
    /// (GRE: 47): the kernel adds the IP header, the datagrams are the IP
    /// payloads. Never fragments; no GSO.
    pub fn connect_raw(
        dest: SocketAddr,
        proto: i32,
        sndbuf: usize,
        max_batch: usize,
        backpressure: Backpressure,
    ) -> io::Result<UdpSender> {
        let sock = Socket::new(
            Domain::for_address(dest),
            Type::RAW,
            Some(Protocol::from(proto)),
        )?;
        // Never read: a small receive buffer for what the peer sends back.
        let _ = sock.set_recv_buffer_size(4096);
        let dest = SocketAddr::new(dest.ip(), 0);
        Self::with_socket(
            sock,
            0,
            dest,
            sndbuf,
            max_batch,
            backpressure,
            Fragments::Never,
        )
    }

    fn with_socket(
        sock: Socket,
        l4_header: usize,
        dest: SocketAddr,
        sndbuf: usize,
        max_batch: usize,
        backpressure: Backpressure,
        fragments: Fragments,
    ) -> io::Result<UdpSender> {
        let ipv6 = dest.is_ipv6();
        if sndbuf > 0 {
            set_sndbuf(&sock, sndbuf);
        }
        if fragments == Fragments::Never {
            sys::sockopt::set_dont_fragment(&sock, ipv6)?;
        }
        sock.connect(&SockAddr::from(dest))?;
        sock.set_nonblocking(true)?;
        let max_batch = max_batch.max(1);
        Ok(UdpSender {
            sock,
            ipv6,
            l4_header,
            fragments,
            backpressure,
            gso: None,
            batch: SendBatch::new(max_batch),
            starts: vec![0; max_batch + 1],
        })
    }

    /// The largest UDP payload the path to the destination takes unfragmented:
    /// its MTU (the route's, or less once ICMP said so) minus the IP header of
    /// the socket's family and the UDP header. A syscall: call it at start
    /// and after [`SendReport::path_payload`], not per datagram.
    pub fn path_payload(&self) -> io::Result<usize> {
        path_payload(&self.sock, self.ipv6, self.l4_header)
    }

    /// Groups datagrams of `seg` bytes into UDP GSO sends where the kernel
    /// takes them (`None`: one datagram per message). Returns whether GSO is
    /// now in use.
    pub fn set_gso(&mut self, seg: Option<usize>) -> bool {
        match seg.filter(|&s| s > 0 && GSO_MAX_BYTES / s >= 2) {
            Some(s) if enable_gso(&self.sock, s) => self.gso = Some(s),
            _ => self.disable_gso(),
        }
        self.gso.is_some()
    }

    /// Room for batches of `max_batch` datagrams (grows only; a resize to
    /// smaller datagrams needs more of them per batch).
    pub fn reserve(&mut self, max_batch: usize) {
        if max_batch > self.batch.capacity() {
            self.batch = SendBatch::new(max_batch);
            self.starts = vec![0; max_batch + 1];
        }
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
            let chunk = (n - base).min(self.batch.capacity());
            report.add(self.send_chunk(base, chunk, &dgram, &mut on_drop));
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
        let mut batch = self.batch.load(n, |i| dgram(base + i));
        let nmsg = group(self.gso, &mut self.starts, n, |i| batch.len(i));
        let starts = &self.starts;
        batch.group(&starts[..=nmsg], |m| {
            // A run of two or more goes out as GSO segments of its first
            // datagram's size (runs differ: see `group`).
            let (s, e) = (starts[m], starts[m + 1]);
            if e - s > 1 {
                // Datagrams never exceed 65000 bytes.
                u16::try_from(dgram(base + s).len()).unwrap_or(u16::MAX)
            } else {
                0
            }
        });
        let mut report = SendReport::default();
        let mut m = 0;
        let mut retried_refused = usize::MAX;
        let mut waited_since: Option<Instant> = None;
        while m < nmsg {
            let err = match batch.send(&self.sock, m..nmsg, libc::MSG_DONTWAIT) {
                Ok(done) => {
                    let (first, end) = (self.starts[m], self.starts[m + done]);
                    report.sent += end - first;
                    report.bytes += (first..end).map(|i| dgram(base + i).len()).sum::<usize>();
                    m += done;
                    waited_since = None;
                    continue;
                }
                Err(err) => err,
            };
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
                        sys::poll::wait(&self.sock, libc::POLLOUT, Duration::from_millis(10));
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
                libc::EMSGSIZE if self.fragments == Fragments::Never => {
                    // Over the path MTU (the socket never fragments): the
                    // rest of the batch is as large, so drop it with this
                    // one rather than fail once per datagram; the caller
                    // resizes from the MTU read here.
                    report.path_payload = path_payload(&self.sock, self.ipv6, self.l4_header).ok();
                    drop_range(s, self.starts[nmsg], base, on_drop, &mut report);
                    m = nmsg;
                }
                libc::EINVAL | libc::EIO if self.gso.is_some() => {
                    let path =
                        path_payload(&self.sock, self.ipv6, self.l4_header).unwrap_or(usize::MAX);
                    if self.gso.is_some_and(|seg| seg > path) {
                        // The kernel refuses a GSO segment over the path MTU
                        // with EINVAL, not EMSGSIZE: the same resize.
                        report.path_payload = Some(path);
                        drop_range(s, self.starts[nmsg], base, on_drop, &mut report);
                        m = nmsg;
                        continue;
                    }
                    if e - s == 1 {
                        log::debug!("UDP send: {err}");
                        drop_range(s, e, base, on_drop, &mut report);
                        m += 1;
                        continue;
                    }
                    // The path cannot take GSO (no checksum offload, xfrm):
                    // fall back for good and resend.
                    log::info!("UDP GSO refused ({err}); using sendmmsg only");
                    // (`batch` is not used past this point, which frees `self`.)
                    self.disable_gso();
                    report.add(self.send_chunk_plain(base + s, n - s, dgram, on_drop));
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

    fn disable_gso(&mut self) {
        self.gso = None;
        let _ = sys::sockopt::set_int(&self.sock, libc::SOL_UDP, libc::UDP_SEGMENT, 0);
    }
}

/// Fills `starts` with message boundaries over datagrams 0..n (lengths from
/// `len`): with GSO (`gso` = the largest datagram, the socket's segment
/// size), runs of datagrams of one size, each run's size that of its first
/// datagram (an aligning udpstr framer cuts some runs below the largest
/// size), the last of a run possibly shorter, at most what one GSO send
/// takes; without, one datagram per message. Returns the message count.
fn group(
    gso: Option<usize>,
    starts: &mut [usize],
    n: usize,
    len: impl Fn(usize) -> usize,
) -> usize {
    let Some(largest) = gso else {
        for (i, s) in starts[..=n].iter_mut().enumerate() {
            *s = i;
        }
        return n;
    };
    let mut m = 0;
    let mut i = 0;
    while i < n {
        starts[m] = i;
        m += 1;
        let seg = len(i);
        i += 1;
        if seg > largest || seg == 0 {
            continue; // alone (never framed; kept safe)
        }
        let max = (GSO_MAX_BYTES / seg).min(GSO_MAX_SEGMENTS);
        let mut k = 1;
        while i < n && k < max {
            let l = len(i);
            if l > seg {
                break; // starts the next run
            }
            i += 1;
            k += 1;
            if l < seg {
                break; // a shorter datagram ends the run
            }
        }
    }
    starts[m] = n;
    m
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

/// See [`UdpSender::path_payload`] (a function of the fields, so the send
/// loop can call it while the batch borrows the sender).
fn path_payload(sock: &Socket, ipv6: bool, l4_header: usize) -> io::Result<usize> {
    let ip = if ipv6 { IPV6_HEADER } else { IPV4_HEADER };
    let mtu = sys::sockopt::path_mtu(sock, ipv6)?;
    Ok(mtu.saturating_sub(ip + l4_header))
}

/// Sets UDP_SEGMENT on the socket; false if the kernel does not have it.
fn enable_gso(sock: &Socket, seg: usize) -> bool {
    sys::sockopt::set_int(sock, libc::SOL_UDP, libc::UDP_SEGMENT, seg as libc::c_int).is_ok()
}

/// SO_SNDBUFFORCE (root may exceed wmem_max), else SO_SNDBUF.
fn set_sndbuf(sock: &impl AsRawFd, bytes: usize) {
    if let Err(e) = sys::sockopt::force_sndbuf(sock, bytes) {
        log::warn!("SO_SNDBUF {bytes}: {e}");
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

    /// Appends one message of at most `max` bytes that `fill` writes into
    /// the slice it is given, returning its length (a tunnel header and
    /// frame).
    pub fn push_with(
        &mut self,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), ArenaFull> {
        if self.ends.len() == self.max_msgs || self.buf.len() - self.len < max {
            return Err(ArenaFull);
        }
        let n = fill(&mut self.buf[self.len..self.len + max]).min(max);
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
    /// Bytes written to the stream so far.
    written: u64,
}

impl TcpSender {
    pub fn new(stream: DataStream, sndbuf: usize, backpressure: Backpressure) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        if let DataStream::Tcp(s) = &stream {
            let _ = s.set_nodelay(true);
        }
        if sndbuf > 0 {
            set_sndbuf(&stream, sndbuf);
        }
        Ok(TcpSender {
            stream,
            backpressure,
            written: 0,
        })
    }

    /// Writes as much of the arena as the socket takes (one `send` normally),
    /// keeping any unwritten tail (whole messages are never cut: the stream
    /// stays in sync). Returns how many messages were completely written.
    pub fn write(&mut self, arena: &mut MsgArena) -> Result<usize, TcpClosed> {
        let mut done = 0;
        let t0 = Instant::now();
        while !arena.bytes().is_empty() {
            // MSG_NOSIGNAL: a closed peer is an error here, not a SIGPIPE.
            let err = match sys::socket::send(
                &self.stream,
                arena.bytes(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            ) {
                Ok(n) if n > 0 => {
                    self.written += n as u64;
                    done += arena.consume_bytes(n);
                    continue;
                }
                Ok(_) => io::Error::from(io::ErrorKind::WriteZero),
                Err(err) => err,
            };
            match err.raw_os_error().unwrap_or(0) {
                libc::EINTR => continue,
                libc::EAGAIN | libc::ENOBUFS => {
                    if self.backpressure == Backpressure::Wait && t0.elapsed() < WAIT_FOR_ROOM {
                        sys::poll::wait(&self.stream, libc::POLLOUT, Duration::from_millis(10));
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
            sys::poll::wait(&self.stream, libc::POLLOUT, Duration::from_millis(10));
            done += self.write(arena)?;
        }
        Ok(done)
    }

    /// Bytes written to the stream so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether the peer closed the connection (checked without blocking;
    /// the sensor never sends on the data connection).
    pub fn peer_closed(&self) -> Option<io::Error> {
        let mut b = [0u8; 1];
        match sys::socket::recv(&self.stream, &mut b, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Ok(0) => Some(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed")),
            Ok(_) => None,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => None,
            Err(e) => Some(e),
        }
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

    /// The report counts the datagrams and the UDP payload bytes sent
    /// (the metrics' bytes sent), in one sendmmsg and in several.
    #[test]
    fn udp_report_counts_datagrams_and_bytes() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = rx.local_addr().unwrap();
        for batch in [4, 1] {
            let mut tx =
                UdpSender::connect(dest, 0, batch, Backpressure::Wait, Fragments::Never).unwrap();
            let data: Vec<Vec<u8>> = [10, 20, 30, 40].iter().map(|&n| vec![7; n]).collect();
            let r = tx.send(4, |i| &data[i], |_| panic!("nothing dropped"));
            assert_eq!((r.sent, r.bytes, r.dropped), (4, 100, 0), "batch {batch}");
            let mut buf = [0u8; 64];
            let got: usize = (0..4).map(|_| rx.recv(&mut buf).unwrap()).sum();
            assert_eq!(got, 100);
        }
    }

    #[test]
    fn gso_runs_take_their_first_datagrams_size() {
        let lens = [800, 800, 800, 500, 1000, 1000, 1000, 1000, 300, 1000, 20];
        let mut starts = [0; 12];
        let nmsg = group(Some(1000), &mut starts, lens.len(), |i| lens[i]);
        // 800×3 + a shorter 500; 1000×4 + 300; 1000 + 20.
        assert_eq!(&starts[..=nmsg], &[0, 4, 9, 11]);
        // A longer datagram starts a new run instead of ending one.
        let lens = [500, 500, 1000, 1000];
        let nmsg = group(Some(1000), &mut starts, 4, |i| lens[i]);
        assert_eq!(&starts[..=nmsg], &[0, 2, 4]);
        // At most 64 segments per send, and what 65507 bytes hold.
        let nmsg = group(Some(1000), &mut starts, 11, |_| 100);
        assert_eq!(&starts[..=nmsg], &[0, 11]);
        let mut starts = [0; 131];
        let nmsg = group(Some(1000), &mut starts, 130, |_| 100);
        assert_eq!(&starts[..=nmsg], &[0, 64, 128, 130]);
        let nmsg = group(Some(1472), &mut starts, 130, |_| 1472);
        assert_eq!(&starts[..=3], &[0, 44, 88, 130]);
        assert_eq!(nmsg, 3);
        // Without GSO, one datagram per message.
        let nmsg = group(None, &mut starts, 3, |_| 100);
        assert_eq!(&starts[..=nmsg], &[0, 1, 2, 3]);
    }

    /// Runs of different sizes in one sendmmsg (each with its own
    /// UDP_SEGMENT control message) arrive as the datagrams they were.
    #[test]
    fn gso_runs_of_different_sizes_arrive_as_their_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tx = UdpSender::connect(
            rx.local_addr().unwrap(),
            1 << 20,
            16,
            Backpressure::Wait,
            Fragments::Never,
        )
        .unwrap();
        assert!(tx.set_gso(Some(1000)), "loopback takes UDP GSO");
        let lens = [800, 800, 800, 500, 1000, 1000, 1000, 1000, 300, 960, 960];
        let data: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let r = tx.send(lens.len(), |i| &data[i], |_| panic!("nothing dropped"));
        assert_eq!(r.sent, lens.len());
        let mut buf = [0u8; 2048];
        for (i, want) in data.iter().enumerate() {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &want[..], "datagram {i}");
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
