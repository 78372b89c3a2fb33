//! Batches of datagrams in one syscall: `sendmmsg` for the agent's sender,
//! `recvmmsg` for the sensor's data channel. The header arrays are made
//! once and reused, so a batch costs one syscall and no allocation.

use std::io;
use std::marker::PhantomData;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::os::fd::AsRawFd;

use crate::sockopt::zeroed;

/// Room for one `UDP_SEGMENT` control message (a u16), cmsghdr-aligned.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
struct SegCmsg([u8; 24]);

/// iovec and mmsghdr arrays for batches of up to `capacity` datagrams,
/// grouped into messages (one datagram each, or a run of UDP GSO segments).
#[derive(Debug)]
pub struct SendBatch {
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Per message: its GSO segment size, when it carries one.
    ctrl: Vec<SegCmsg>,
}

// SAFETY: the arrays hold raw pointers into the caller's datagrams only
// while a `Loaded` borrow (which carries the datagrams' lifetime) is alive;
// afterwards they are stale values never dereferenced, as they are refilled
// before the next send. So the batch can move between threads.
unsafe impl Send for SendBatch {}

impl SendBatch {
    /// Room for `capacity` (at least 1) datagrams per send.
    pub fn new(capacity: usize) -> SendBatch {
        let capacity = capacity.max(1);
        SendBatch {
            iovs: vec![zeroed(); capacity],
            msgs: vec![zeroed(); capacity],
            ctrl: vec![SegCmsg([0; 24]); capacity],
        }
    }

    /// Most datagrams per [`SendBatch::load`].
    pub fn capacity(&self) -> usize {
        self.iovs.len()
    }

    /// Points iovec `i` at `dgram(i)` for `i` in `0..n` (n ≤ capacity).
    /// The datagrams stay borrowed while the returned batch is alive.
    pub fn load<'b, 'd>(
        &'b mut self,
        n: usize,
        dgram: impl Fn(usize) -> &'d [u8],
    ) -> Loaded<'b, 'd> {
        assert!(n <= self.iovs.len(), "batch over capacity");
        for (i, iov) in self.iovs[..n].iter_mut().enumerate() {
            let d = dgram(i);
            *iov = libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            };
        }
        Loaded {
            batch: self,
            n,
            nmsg: 0,
            _dgrams: PhantomData,
        }
    }
}

/// A [`SendBatch`] whose iovecs point into datagrams borrowed for `'d`.
#[derive(Debug)]
pub struct Loaded<'b, 'd> {
    batch: &'b mut SendBatch,
    n: usize,
    nmsg: usize,
    _dgrams: PhantomData<&'d [u8]>,
}

impl Loaded<'_, '_> {
    /// Length of datagram `i`.
    pub fn len(&self, i: usize) -> usize {
        self.batch.iovs[..self.n][i].iov_len
    }

    /// Groups the datagrams into messages: message `m` holds datagrams
    /// `starts[m]..starts[m + 1]` (`starts` ascending from 0 to n), cut by
    /// the kernel into UDP GSO segments of `seg(m)` bytes when that is not
    /// 0 (a `UDP_SEGMENT` control message: the runs of one batch may differ
    /// in size; the socket's own `UDP_SEGMENT` applies otherwise).
    pub fn group(&mut self, starts: &[usize], seg: impl Fn(usize) -> u16) {
        let nmsg = starts.len() - 1;
        assert!(starts[nmsg] <= self.n, "message past the datagrams");
        let space = cmsg_space(mem::size_of::<u16>());
        assert!(space <= mem::size_of::<SegCmsg>());
        for m in 0..nmsg {
            let (s, e) = (starts[m], starts[m + 1]);
            let mut hdr: libc::msghdr = zeroed();
            // The iovec array is never resized while `self` borrows it, so
            // the pointer stays valid until the next `load`.
            hdr.msg_iov = self.batch.iovs[s..e].as_mut_ptr();
            hdr.msg_iovlen = e - s;
            let size = seg(m);
            if size > 0 {
                let ctrl = &mut self.batch.ctrl[m];
                hdr.msg_control = ctrl.0.as_mut_ptr().cast();
                hdr.msg_controllen = space as _;
                // SAFETY: `ctrl` is a cmsghdr-aligned buffer of `space`
                // bytes (asserted above) that `hdr` now describes, so
                // CMSG_FIRSTHDR returns a pointer into it with room for a
                // header and a u16; the kernel only reads it, and, like the
                // iovecs, it is not moved while `self` borrows the batch.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
                    libc::CMSG_DATA(c).cast::<u16>().write_unaligned(size);
                }
            }
            self.batch.msgs[m] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
        }
        self.nmsg = nmsg;
    }

    /// `sendmmsg` of messages `msgs` (of the last [`Loaded::group`]);
    /// returns how many the kernel took (at least one on success).
    pub fn send(
        &mut self,
        fd: &impl AsRawFd,
        msgs: Range<usize>,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let msgs = &mut self.batch.msgs[..self.nmsg][msgs];
        // SAFETY: every message in `msgs` was built by `group` over iovecs
        // that point into datagrams borrowed for 'd, alive while `self` is;
        // the kernel only reads them.
        let rc = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                flags,
            )
        };
        crate::check(rc).map(|n| n as usize)
    }
}

/// CMSG_SPACE of a control message with `len` bytes of data.
fn cmsg_space(len: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument only.
    unsafe { libc::CMSG_SPACE(len as u32) as usize }
}

/// Room for the largest UDP payload.
const SLOT: usize = 65536;
/// Control-message room per datagram: a u32 SO_RXQ_OVFL message and an
/// int UDP_GRO one (24 bytes each) and an SO_TIMESTAMPNS timespec (32).
const CTRL: usize = 96;

/// What one received datagram carried besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub len: usize,
    pub from: Option<SocketAddr>,
    /// The socket's cumulative drop counter, if the kernel attached it
    /// (SO_RXQ_OVFL set on the socket).
    pub overflow: Option<u32>,
    /// The datagram was longer than the buffer (cut).
    pub truncated: bool,
    /// UDP GRO (`UDP_GRO` on the socket): the buffer holds several
    /// datagrams of one sender, each of this size but the last.
    pub segment: Option<usize>,
    /// When the kernel received it, in µs since the epoch
    /// (`SO_TIMESTAMPNS` on the socket): unlike the time it is read, not
    /// delayed by the reader's scheduling.
    pub arrived_us: Option<u64>,
}

impl Meta {
    /// The datagrams in `buf`, the buffer this describes: itself, or with
    /// UDP GRO its segments (an empty datagram is one empty datagram).
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        let seg = match self.segment {
            Some(s) if s > 0 => s,
            _ => buf.len().max(1),
        };
        buf.chunks(seg).chain(buf.is_empty().then_some(buf))
    }

    /// How many datagrams [`Meta::datagrams`] yields.
    pub fn count(&self) -> usize {
        match self.segment {
            Some(s) if s > 0 && self.len > 0 => self.len.div_ceil(s),
            _ => 1,
        }
    }
}

/// Buffers and headers for one recvmmsg call, allocated once and reused for
/// every socket (the receive path runs on one thread).
pub struct RecvBatch {
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u8; CTRL]>,
    hdrs: Vec<libc::mmsghdr>,
    meta: Vec<Meta>,
}

impl RecvBatch {
    /// Room for `n` datagrams of any size per call.
    pub fn new(n: usize) -> RecvBatch {
        let mut b = RecvBatch {
            bufs: vec![0u8; n * SLOT],
            iovs: vec![zeroed(); n],
            addrs: vec![zeroed(); n],
            ctrl: vec![[0u8; CTRL]; n],
            hdrs: vec![zeroed(); n],
            meta: Vec::with_capacity(n),
        };
        for i in 0..n {
            b.iovs[i].iov_base = b.bufs[i * SLOT..].as_mut_ptr().cast();
            b.iovs[i].iov_len = SLOT;
        }
        b
    }

    /// Receives up to a batch of datagrams from `fd` without blocking; returns
    /// how many arrived (0 when none were waiting).
    pub fn recv(&mut self, fd: &impl AsRawFd) -> io::Result<usize> {
        let n = self.hdrs.len();
        for i in 0..n {
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_controllen = CTRL as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` (data slot,
        // address, control area) with their true sizes; the vectors are never
        // resized, so the pointers stay valid for the call.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = match crate::check(r) {
            Ok(r) => r as usize,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        self.meta.clear();
        for i in 0..got {
            let h = &self.hdrs[i].msg_hdr;
            let c = controls_of(h);
            self.meta.push(Meta {
                len: (self.hdrs[i].msg_len as usize).min(SLOT),
                from: sockaddr_to_std(&self.addrs[i], h.msg_namelen),
                overflow: c.overflow,
                truncated: h.msg_flags & libc::MSG_TRUNC != 0,
                segment: c.segment,
                arrived_us: c.arrived_us,
            });
        }
        Ok(got)
    }

    /// Datagram `i` of the last `recv`.
    pub fn get(&self, i: usize) -> (&[u8], Meta) {
        let m = self.meta[i];
        (&self.bufs[i * SLOT..i * SLOT + m.len], m)
    }
}

/// The control messages recvmmsg filled in for one datagram.
#[derive(Default)]
struct Controls {
    /// SO_RXQ_OVFL: the socket's drop counter.
    overflow: Option<u32>,
    /// UDP_GRO: the segment size, if the buffer holds several datagrams.
    segment: Option<usize>,
    /// SCM_TIMESTAMPNS: the kernel's receive time, µs since the epoch.
    arrived_us: Option<u64>,
}

/// Reads `h`'s control messages in one walk (the last of each kind wins).
fn controls_of(h: &libc::msghdr) -> Controls {
    let mut out = Controls::default();
    // SAFETY: `h` was filled by recvmmsg; CMSG_FIRSTHDR/NXTHDR stay within
    // msg_control..msg_controllen, so every `c` is a whole cmsghdr there.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => out.overflow = cmsg_data::<u32>(c),
                // An int, never negative.
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    out.segment = cmsg_data::<u32>(c).map(|s| s as usize)
                }
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    out.arrived_us = cmsg_data::<libc::timespec>(c)
                        .map(|t| t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000)
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    out
}

/// The data of control message `c` as the `T` the kernel writes for its
/// level and kind, if its length holds a whole one.
///
/// # Safety
/// `c` points at a whole cmsghdr inside a buffer recvmmsg filled in.
unsafe fn cmsg_data<T: Copy>(c: *const libc::cmsghdr) -> Option<T> {
    // SAFETY: per the contract `c` is readable; the data is read only if
    // cmsg_len covers a whole `T` after the header, and read unaligned.
    unsafe {
        ((*c).cmsg_len >= libc::CMSG_LEN(mem::size_of::<T>() as u32) as _)
            .then(|| std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<T>()))
    }
}

fn sockaddr_to_std(a: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(a.ss_family) {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let s = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(s.sin_port)))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let s = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(s.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(s.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn a_send_batch_arrives_as_a_recv_batch_with_overflow_counter() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        crate::sockopt::set_int(&rx, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let dgrams: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + i as usize]).collect();
        let mut out = SendBatch::new(4);
        assert_eq!(out.capacity(), 4);
        let mut sent = 0;
        for chunk in dgrams.chunks(out.capacity()) {
            let mut l = out.load(chunk.len(), |i| &chunk[i]);
            assert_eq!(l.len(0), chunk[0].len());
            let starts: Vec<usize> = (0..=chunk.len()).collect();
            l.group(&starts, |_| 0);
            sent += l.send(&tx, 0..chunk.len(), 0).unwrap();
        }
        assert_eq!(sent, 5);
        let mut b = RecvBatch::new(8);
        let mut seen = Vec::new();
        for _ in 0..100 {
            for i in 0..b.recv(&rx).unwrap() {
                let (d, m) = b.get(i);
                assert_eq!(m.from, Some(tx.local_addr().unwrap()));
                // The kernel attaches the counter only once it is non-zero.
                assert_eq!(m.overflow.unwrap_or(0), 0);
                assert!(!m.truncated);
                seen.push(d.to_vec());
            }
            if seen.len() == 5 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(seen, dgrams);
        assert_eq!(b.recv(&rx).unwrap(), 0);
    }

    #[test]
    fn the_kernel_receive_time_comes_with_each_datagram_when_asked_for() {
        use std::time::{SystemTime, UNIX_EPOCH};
        let now_us = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64
        };
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut b = RecvBatch::new(4);
        let recv_one = |b: &mut RecvBatch| loop {
            if b.recv(&rx).unwrap() == 1 {
                return b.get(0).1;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        tx.send(b"x").unwrap();
        assert_eq!(recv_one(&mut b).arrived_us, None, "not asked for");

        crate::sockopt::set_int(&rx, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).unwrap();
        // The first socket to ask makes the kernel turn receive stamping on
        // in a deferred work item; a datagram received before it ran is
        // stamped when read (the kernel's "false timestamp"). So a few
        // tries: each datagram is read 200 ms late, and once stamping is
        // on its time must be the arrival's, not the read's.
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = now_us();
            tx.send(b"y").unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let m = recv_one(&mut b);
            let read = now_us();
            let arrived = m.arrived_us.expect("SCM_TIMESTAMPNS");
            assert!(arrived >= before, "{arrived} before the send at {before}");
            seen.push(read - arrived);
            if read - arrived >= 150_000 {
                return;
            }
        }
        panic!("read minus arrival {seen:?} us: the read time, not the arrival");
    }

    /// Sends `dgrams` (100 × 5 then 40 bytes) as one GSO run to a socket
    /// with UDP_GRO `gro` and returns what each recvmmsg entry held.
    fn gso_run_to(gro: bool) -> Vec<(Vec<u8>, Meta)> {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        if gro {
            crate::sockopt::set_int(&rx, libc::SOL_UDP, libc::UDP_GRO, 1).unwrap();
        }
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let dgrams: Vec<Vec<u8>> = (0..6u8)
            .map(|i| vec![i; if i < 5 { 100 } else { 40 }])
            .collect();
        let mut out = SendBatch::new(6);
        let mut l = out.load(6, |i| &dgrams[i]);
        l.group(&[0, 6], |_| 100);
        assert_eq!(l.send(&tx, 0..1, 0).unwrap(), 1);
        let mut b = RecvBatch::new(8);
        let mut got = Vec::new();
        for _ in 0..100 {
            for i in 0..b.recv(&rx).unwrap() {
                let (d, m) = b.get(i);
                got.push((d.to_vec(), m));
            }
            if got.iter().map(|(_, m)| m.count()).sum::<usize>() == 6 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let split: Vec<Vec<u8>> = got
            .iter()
            .flat_map(|(d, m)| m.datagrams(d).map(<[u8]>::to_vec).collect::<Vec<_>>())
            .collect();
        assert_eq!(split, dgrams, "gro {gro}: the datagrams, in order");
        got
    }

    #[test]
    fn a_gso_run_arrives_whole_on_a_gro_socket_and_splits_back() {
        let got = gso_run_to(true);
        assert_eq!(got.len(), 1, "one buffer");
        let m = got[0].1;
        assert_eq!((m.len, m.segment, m.count()), (540, Some(100), 6));
        let got = gso_run_to(false);
        assert_eq!(got.len(), 6, "one datagram per entry");
        assert!(got
            .iter()
            .all(|(_, m)| m.segment.is_none() && m.count() == 1));
    }

    #[test]
    fn meta_datagrams_of_empty_and_whole_buffers() {
        let meta = |len, segment| Meta {
            len,
            from: None,
            overflow: None,
            truncated: false,
            segment,
            arrived_us: None,
        };
        let m = meta(0, None);
        assert_eq!(m.datagrams(&[]).collect::<Vec<_>>(), vec![&[] as &[u8]]);
        assert_eq!(m.count(), 1);
        let m = meta(0, Some(10));
        assert_eq!(m.datagrams(&[]).count(), 1);
        assert_eq!(m.count(), 1);
        let buf = [1u8; 25];
        assert_eq!(meta(25, None).datagrams(&buf).count(), 1);
        let m = meta(25, Some(10));
        let lens: Vec<usize> = m.datagrams(&buf).map(<[u8]>::len).collect();
        assert_eq!((lens, m.count()), (vec![10, 10, 5], 3));
        assert_eq!(meta(20, Some(10)).count(), 2);
    }
}
