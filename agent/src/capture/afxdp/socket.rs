//! One AF_XDP socket: its UMEM, its rings ([`ring`](super::ring)) and how
//! it is bound, written by hand over libc (the `xdp` crate hands frames out as its own
//! packet objects; we want borrowed slices straight out of the UMEM).
//!
//! The kernel writes each frame the XDP program redirects into a UMEM chunk
//! taken from the fill ring and posts a descriptor on the RX ring. We read
//! the frames in place and give their chunks back to the fill ring in one
//! batch per round. No TX: the completion ring exists only because the
//! kernel requires one per UMEM.
//!
//! Multi-buffer (`XDP_USE_SG`, kernel >= 6.6): a frame longer than one chunk
//! arrives as a chain of descriptors, every one but the last flagged
//! `XDP_PKT_CONTD`; [`Chain`] gathers them (see [`chain`](super::chain)).
//!
//! Timestamps: the XDP program puts the frame's arrival time (CLOCK_MONOTONIC
//! ns) into 8 bytes of XDP metadata in front of the frame; the kernel copies
//! metadata and frame together into the chunk (in front of the first chunk of
//! a chain), so the stamp is the word right before the descriptor's address.
//! [`Xsk::receive`] hands it out with the frame (0: none) and zeroes it, so a
//! later frame in that chunk that came without metadata cannot inherit it.

// A ring module: the one place besides the syscall layer with `unsafe`
// (memory shared with the kernel), every block argued.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;

use super::abi::META_LEN;
use super::chain::{Chain, Desc, MAX_CHAIN};
use super::ring::Ring;
use crate::capture::sys::{getsockopt, setsockopt};

/// UMEM chunk size: one chunk per frame (aligned mode), 2048 being the
/// smallest the kernel accepts. Small frames dominate the rate a capture
/// must keep up with, so the smallest chunk gives the most frames per byte
/// of (pinned) memory; a frame longer than [`CHUNK_FRAME`] spans several
/// chunks (multi-buffer).
pub const CHUNK_SIZE: usize = 2048;
/// The kernel keeps XDP_PACKET_HEADROOM (256) bytes in front of the frame
/// in every chunk (copy and zero-copy mode alike): the longest frame one
/// chunk holds. An MTU-1500 frame (1514, 1522 with two VLAN tags) fits.
pub const CHUNK_FRAME: usize = CHUNK_SIZE - 256;
/// Fewest / most chunks per socket (see [`frames_per_queue`]).
pub const MIN_QUEUE_FRAMES: usize = 2048;
pub const MAX_QUEUE_FRAMES: usize = 1 << 18;
/// Frames per capture that a RingSize below it is raised to, memory
/// permitting: 131072 x 2 KiB = 256 MiB of UMEM, which holds 131 ms of
/// frames at 1 Mpps (1.3 s at 100 kpps) while the worker is not scheduled.
pub const FLOOR_FRAMES: usize = 1 << 17;
/// The floor takes at most this share of the memory available at start.
pub const FLOOR_MEM_SHARE: usize = 8;
const COMP_RING: u32 = 64;
/// How many frames ahead of the one being read are prefetched.
const PREFETCH: u32 = 8;

/// Frames (UMEM chunks) per RX queue for a capture with `ring_bytes` of
/// RingSize over `queues` queues, `mem_available` bytes of free memory
/// (None: unknown) at start.
///
/// The rule: RingSize / [`CHUNK_SIZE`] frames per capture, raised to
/// [`FLOOR_FRAMES`] if that is more and `FLOOR_MEM_SHARE`-th of the
/// available memory holds it (else to what that share holds); then split
/// over the queues, each rounded down to a power of two (ring sizes must
/// be) within [`MIN_QUEUE_FRAMES`, `MAX_QUEUE_FRAMES`]. The fill and RX
/// rings have as many entries as the UMEM has chunks, so a stalled worker
/// loses frames only once the whole UMEM is full.
pub fn frames_per_queue(ring_bytes: usize, queues: u32, mem_available: Option<usize>) -> usize {
    let asked = ring_bytes / CHUNK_SIZE;
    let floor = match mem_available {
        Some(m) => FLOOR_FRAMES.min(m / FLOOR_MEM_SHARE / CHUNK_SIZE),
        None => FLOOR_FRAMES,
    };
    let per_queue = asked.max(floor) / queues.max(1) as usize;
    pow2_floor(per_queue.clamp(MIN_QUEUE_FRAMES, MAX_QUEUE_FRAMES))
}

fn pow2_floor(n: usize) -> usize {
    if n.is_power_of_two() {
        n
    } else {
        n.next_power_of_two() / 2
    }
}

/// How the socket ended up bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindInfo {
    pub zero_copy: bool,
    pub busy_poll: bool,
    /// Multi-buffer (XDP_USE_SG): frames longer than a chunk arrive as
    /// chains. Without it the kernel drops them (counted in `rx_dropped`).
    pub multi_buffer: bool,
}

impl BindInfo {
    /// The longest frame the socket can receive.
    pub fn max_frame(&self) -> usize {
        if self.multi_buffer {
            MAX_CHAIN
        } else {
            CHUNK_FRAME
        }
    }
}

/// Counters of one socket, cumulative: the kernel's (XDP_STATISTICS) and
/// the chains dropped in user space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Frames the kernel dropped: no free chunk, or (without multi-buffer)
    /// longer than a chunk.
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub rx_invalid: u64,
    /// Descriptor chains dropped whole: longer than [`MAX_CHAIN`], of more
    /// than [`MAX_PIECES`] descriptors, or with one outside the UMEM.
    pub chain_dropped: u64,
}

/// An AF_XDP socket bound to one RX queue.
#[derive(Debug)]
pub struct Xsk {
    // Field order is drop order: rings are unmapped before the socket closes
    // and the UMEM is freed last.
    rx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    _comp: Ring<u64>,
    fd: OwnedFd,
    /// Chunk addresses read from RX this round, to go back to the fill ring.
    recycle: Vec<u64>,
    /// Multi-buffer chains (taken only when the socket is bound with
    /// XDP_USE_SG).
    chain: Chain,
    pub queue: u32,
    pub info: BindInfo,
    /// Whole frames handed out by this socket so far.
    pub received: u64,
    umem: Umem,
}

// SAFETY: the mappings are owned by this value alone and only touched
// through `&mut self`; moving it to the worker thread is sound.
unsafe impl Send for Xsk {}

impl Xsk {
    /// Creates the socket, registers a UMEM of `frames` chunks (a power of
    /// two, see [`frames_per_queue`]), maps the rings and binds to `queue`
    /// of `ifindex`: zero-copy when the driver supports it (and
    /// `try_zero_copy`), copy mode otherwise; multi-buffer where the kernel
    /// and driver allow it (see [`Xsk::bind_best`]).
    pub fn open(
        ifindex: u32,
        queue: u32,
        frames: usize,
        try_zero_copy: bool,
        mtu_fits_chunk: bool,
    ) -> io::Result<Xsk> {
        let frames = pow2_floor(frames.clamp(MIN_QUEUE_FRAMES, MAX_QUEUE_FRAMES));
        // SAFETY: plain socket(2); result checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let umem_len = frames * CHUNK_SIZE;
        // SAFETY: anonymous private mapping, checked below.
        let area = unsafe {
            libc::mmap(
                ptr::null_mut(),
                umem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if area == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The fill ring hands the chunks out in FIFO order, so consecutive
        // frames land in chunks spread over the whole UMEM (two per 4 KiB
        // page): with small pages nearly every frame read is a TLB miss.
        // Ask for transparent huge pages before the pages are faulted in
        // (the UMEM registration below pins them). Best effort: without THP
        // (`enabled = never`) the small pages work the same, only slower.
        // SAFETY: advice on the mapping just made; it changes no contents.
        unsafe { libc::madvise(area, umem_len, libc::MADV_HUGEPAGE) };
        // Fault the pages in now, one write per page: the registration's
        // pinning then only takes references. It runs under the process's
        // mmap lock, and faulting (zeroing) 256 MiB there held it for up to
        // a second, stalling every mmap/munmap of the agent's other threads
        // (another capture's start or stop) meanwhile; page faults here take
        // per-VMA locks instead.
        for off in (0..umem_len).step_by(4096) {
            // SAFETY: inside the fresh private mapping nothing else uses yet.
            unsafe { (area as *mut u8).add(off).write_volatile(0) };
        }
        let umem = Umem {
            area: NonNull::new(area as *mut u8)
                .ok_or_else(|| io::Error::other("mmap gave NULL"))?,
            len: umem_len,
        };

        let reg = libc::xdp_umem_reg {
            addr: area as u64,
            len: umem_len as u64,
            chunk_size: CHUNK_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        // The RX and fill rings can each hold every chunk: a stalled worker
        // then loses frames only when the whole UMEM is full (a chain takes
        // one RX entry per chunk, so this covers chains too).
        let rx_size = frames as u32;
        let fill_size = frames as u32;
        #[allow(clippy::type_complexity)]
        let rings = (|| -> io::Result<(Ring<libc::xdp_desc>, Ring<u64>, Ring<u64>)> {
            setsockopt(&fd, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)?;
            setsockopt(&fd, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, &fill_size)?;
            setsockopt(
                &fd,
                libc::SOL_XDP,
                libc::XDP_UMEM_COMPLETION_RING,
                &COMP_RING,
            )?;
            setsockopt(&fd, libc::SOL_XDP, libc::XDP_RX_RING, &rx_size)?;
            let off = mmap_offsets(&fd)?;
            let rx = Ring::map(&fd, &off.rx, rx_size, libc::XDP_PGOFF_RX_RING)?;
            let fill = Ring::map(
                &fd,
                &off.fr,
                fill_size,
                libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            )?;
            let comp = Ring::map(
                &fd,
                &off.cr,
                COMP_RING,
                libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
            )?;
            Ok((rx, fill, comp))
        })();
        // On error `umem` is unmapped before `fd` closes (locals drop in
        // reverse order); harmless: the kernel pinned the registered pages
        // and holds them until the socket is gone.
        let (rx, fill, comp) = rings?;
        let mut xsk = Xsk {
            rx,
            fill,
            _comp: comp,
            fd,
            recycle: Vec::with_capacity(rx_size as usize),
            chain: Chain::new(0),
            queue,
            info: BindInfo {
                zero_copy: false,
                busy_poll: false,
                multi_buffer: false,
            },
            received: 0,
            umem,
        };
        // Every chunk starts in the fill ring.
        xsk.recycle
            .extend((0..frames as u64).map(|i| i * CHUNK_SIZE as u64));
        xsk.refill();

        xsk.bind_best(ifindex, try_zero_copy, mtu_fits_chunk)?;
        if xsk.info.multi_buffer {
            xsk.chain = Chain::new(MAX_CHAIN);
        }
        Ok(xsk)
    }

    /// Binds in the best mode the kernel and driver accept, in this order:
    /// zero-copy with multi-buffer; zero-copy without it, if the MTU fits a
    /// chunk (no frame then needs a chain); copy mode with multi-buffer;
    /// copy mode without it (kernels before 6.6: longer frames are dropped
    /// by the kernel and counted in `rx_dropped`).
    fn bind_best(&mut self, ifindex: u32, try_zero_copy: bool, mtu_fits: bool) -> io::Result<()> {
        const ZC: u16 = libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP;
        const COPY: u16 = libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP;
        const SG: u16 = libc::XDP_USE_SG;
        let tries = [
            (try_zero_copy, ZC | SG),
            (try_zero_copy && mtu_fits, ZC),
            (true, COPY | SG),
            (true, COPY),
        ];
        let mut last = None;
        for (_, flags) in tries.into_iter().filter(|t| t.0) {
            match self.bind(ifindex, self.queue, flags) {
                Ok(()) => {
                    self.info.zero_copy = flags & libc::XDP_ZEROCOPY != 0;
                    self.info.multi_buffer = flags & SG != 0;
                    return Ok(());
                }
                Err(e) => {
                    log::debug!("AF_XDP queue {}: bind flags {flags:#x}: {e}", self.queue);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no bind mode to try")))
    }

    fn bind(&self, ifindex: u32, queue: u32, flags: u16) -> io::Result<()> {
        let sxdp = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sxdp` is a valid sockaddr_xdp and the length is its size.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                &sxdp as *const libc::sockaddr_xdp as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Turns on busy polling with NAPI `budget` (see `busy_poll`): the
    /// socket options, and `kick` on every empty RX ring from then on.
    pub fn set_busy_poll(&mut self, budget: u16) -> io::Result<()> {
        super::busy_poll::enable(&self.fd, budget)?;
        self.info.busy_poll = true;
        Ok(())
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Hands up to `max` received frames to `f` as their pieces (one for a
    /// lone descriptor, one per chunk for a chain), borrowed from the UMEM,
    /// with the frame's timestamp from the XDP program (CLOCK_MONOTONIC ns;
    /// 0: none), then returns their chunks to the fill ring in one batch.
    /// The budget counts frames, not descriptors: a round of 9000-byte
    /// frames (six chunks each) moves as many frames as a round of small
    /// ones. Returns the descriptors consumed.
    pub fn receive<F: FnMut(&[&[u8]], u64)>(&mut self, max: u32, mut f: F) -> usize {
        let prod = self.rx.producer().load(Ordering::Acquire);
        let cons = self.rx.consumer().load(Ordering::Relaxed);
        let avail = prod.wrapping_sub(cons);
        // The kernel wrote these frames on another CPU: the first read of
        // each is a cache miss that used to cost more than everything else
        // the worker does per frame. Ask for frame i + PREFETCH while
        // handing out frame i, so the misses overlap.
        for i in 0..avail.min(PREFETCH) {
            self.prefetch(self.desc(cons.wrapping_add(i)));
        }
        let (area, umem_len) = (self.umem.area, self.umem.len);
        let mut frames = 0u64;
        let mut whole = |pieces: &[&[u8]], stamp: u64| {
            frames += 1;
            f(pieces, stamp)
        };
        // SAFETY: every range handed to the chain lies inside the UMEM
        // (checked below), and the kernel does not write its chunk until
        // the chunk is back in the fill ring: the chain frees a chunk only
        // after `f` has returned for its frame, and `refill` runs after
        // this loop.
        let bytes = |r: Range<usize>| unsafe {
            std::slice::from_raw_parts(area.as_ptr().add(r.start), r.len())
        };
        // Frame ends seen (frames delivered or dropped) and descriptors used.
        let (mut ends, mut n) = (0u32, 0u32);
        while n < avail && ends < max {
            if n + PREFETCH < avail {
                self.prefetch(self.desc(cons.wrapping_add(n + PREFETCH)));
            }
            let d = self.desc(cons.wrapping_add(n));
            n += 1;
            let (addr, len) = (d.addr as usize, d.len as usize);
            let part = addr
                .checked_add(len)
                .filter(|&e| e <= umem_len)
                .map(|e| addr..e);
            let more = d.options & libc::XDP_PKT_CONTD != 0;
            ends += u32::from(!more);
            let stamp = match part {
                Some(_) if self.chain.starts_frame() => {
                    // SAFETY: the frame's range is inside the UMEM (checked
                    // above); the chunk is ours until it is refilled.
                    unsafe { take_stamp(area, addr) }
                }
                _ => 0,
            };
            let d = Desc {
                chunk: d.addr & !(CHUNK_SIZE as u64 - 1),
                part,
                stamp,
                more,
            };
            let recycle = &mut self.recycle;
            self.chain
                .push(d, bytes, &mut whole, &mut |c| recycle.push(c));
        }
        self.received += frames;
        if n > 0 {
            self.rx
                .consumer()
                .store(cons.wrapping_add(n), Ordering::Release);
            self.refill();
        }
        n as usize
    }

    /// The RX descriptor at ring position `pos` (between consumer and producer).
    #[inline]
    fn desc(&self, pos: u32) -> libc::xdp_desc {
        self.rx.entry(pos)
    }

    /// Starts loading the first cache line of the frame `d` points at and
    /// the one holding its timestamp (the line before, unless the frame
    /// starts mid-line).
    #[inline]
    fn prefetch(&self, d: libc::xdp_desc) {
        #[cfg(target_arch = "x86_64")]
        if (d.addr as usize) < self.umem.len && (d.addr as usize) % CHUNK_SIZE >= META_LEN {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: both addresses lie inside the UMEM mapping (checked:
            // the frame and, before it in the same chunk, its stamp); a
            // prefetch is only a hint and never faults.
            unsafe {
                let p = self.umem.area.as_ptr().add(d.addr as usize);
                _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(p.sub(META_LEN) as *const i8);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = d;
    }

    /// Puts the recycled chunks into the fill ring (one producer update).
    fn refill(&mut self) {
        let prod = self.fill.producer().load(Ordering::Relaxed);
        let cons = self.fill.consumer().load(Ordering::Acquire);
        let room = (self.fill.mask + 1) - prod.wrapping_sub(cons);
        let n = (self.recycle.len() as u32).min(room);
        // Entries from producer up to consumer + size are ours to write.
        for (i, addr) in self.recycle.drain(..n as usize).enumerate() {
            self.fill.set_entry(prod.wrapping_add(i as u32), addr);
        }
        self.fill
            .producer()
            .store(prod.wrapping_add(n), Ordering::Release);
        // The fill ring holds every chunk, so nothing is ever left over;
        // `recycle` keeps any remainder for the next round regardless.
    }

    /// Whether frames are waiting on the RX ring.
    pub fn has_frames(&self) -> bool {
        self.rx.producer().load(Ordering::Acquire) != self.rx.consumer().load(Ordering::Relaxed)
    }

    /// Kicks the kernel when it asked for it (need_wakeup) or when busy
    /// polling drives the queue from this thread: one non-blocking recvfrom.
    pub fn kick(&self) {
        if self.info.busy_poll || self.fill.needs_wakeup() {
            // SAFETY: zero-length receive with a null buffer, non-blocking:
            // only drives the kernel's RX processing.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                    ptr::null_mut(),
                );
            }
        }
    }

    pub fn stats(&self) -> io::Result<XskStats> {
        // SAFETY: xdp_statistics is plain integers.
        let st: libc::xdp_statistics =
            unsafe { getsockopt(&self.fd, libc::SOL_XDP, libc::XDP_STATISTICS) }?;
        Ok(XskStats {
            rx_dropped: st.rx_dropped,
            rx_ring_full: st.rx_ring_full,
            rx_fill_ring_empty: st.rx_fill_ring_empty_descs,
            rx_invalid: st.rx_invalid_descs,
            chain_dropped: self.chain.dropped,
        })
    }
}

/// Reads and zeroes the timestamp word in front of the frame at byte
/// `addr` of the UMEM at `area` (0 when the frame starts too close to its
/// chunk's start to have one).
///
/// # Safety
/// `addr` must lie inside the UMEM at `area`, in a chunk user space owns
/// (read from RX, not yet refilled).
#[inline]
unsafe fn take_stamp(area: NonNull<u8>, addr: usize) -> u64 {
    // The frame starts XDP_PACKET_HEADROOM (256) into its chunk, so the
    // word is inside the same chunk; checked anyway.
    if addr % CHUNK_SIZE < META_LEN {
        return 0;
    }
    // SAFETY: addr - META_LEN .. addr lies in the same chunk as `addr`,
    // inside the UMEM (caller), owned by user space (caller); the word
    // need not be aligned.
    unsafe {
        let p = area.as_ptr().add(addr - META_LEN).cast::<u64>();
        let stamp = p.read_unaligned();
        p.write_unaligned(0);
        stamp
    }
}

/// The UMEM mapping; unmapped on drop, after the socket has closed (it is
/// the last field of [`Xsk`]).
#[derive(Debug)]
struct Umem {
    area: NonNull<u8>,
    len: usize,
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: the anonymous mapping made in `Xsk::open`; the socket that
        // registered it is closed (fields drop in order), and no slice into
        // it outlives `Xsk::receive`.
        unsafe {
            libc::munmap(self.area.as_ptr() as *mut libc::c_void, self.len);
        }
    }
}

fn mmap_offsets(fd: &OwnedFd) -> io::Result<libc::xdp_mmap_offsets> {
    // SAFETY: xdp_mmap_offsets is plain integers.
    unsafe { getsockopt(fd, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_stamp_in_front_of_a_frame_is_read_once() {
        // Two chunks; frames at the kernel's offset (256) into each.
        let mut umem = vec![0u8; 2 * CHUNK_SIZE];
        let at = |chunk: usize| chunk * CHUNK_SIZE + 256;
        umem[at(1) - 8..at(1)].copy_from_slice(&0x0102_0304_0506_0708u64.to_ne_bytes());
        let area = NonNull::new(umem.as_mut_ptr()).unwrap();
        // SAFETY: both addresses lie inside `umem`, which nothing else uses.
        unsafe {
            assert_eq!(take_stamp(area, at(1)), 0x0102_0304_0506_0708);
            assert_eq!(take_stamp(area, at(1)), 0, "zeroed once read");
            assert_eq!(take_stamp(area, at(0)), 0, "never stamped");
            // A frame at a chunk's very start has no room for one.
            assert_eq!(take_stamp(area, CHUNK_SIZE + 4), 0);
        }
        assert!(umem.iter().all(|&b| b == 0), "nothing else touched");
    }

    #[test]
    fn sizing_rule_floor_ringsize_queues_and_memory() {
        let plenty = Some(16 << 30);
        // The default RingSize (32 MiB = 16384 chunks) is raised to the floor.
        assert_eq!(frames_per_queue(32 * MIB, 1, plenty), FLOOR_FRAMES);
        assert_eq!(FLOOR_FRAMES, 131_072);
        // The floor holds >= 100 ms at 1 Mpps.
        const { assert!(FLOOR_FRAMES >= 100_000) };
        // Split over queues, every queue a power of two.
        assert_eq!(frames_per_queue(32 * MIB, 4, plenty), 32_768);
        assert_eq!(frames_per_queue(32 * MIB, 3, plenty), 32_768);
        // A larger RingSize wins: 1 GiB / 2 KiB = 512 Ki frames.
        assert_eq!(frames_per_queue(1 << 30, 2, plenty), 1 << 18);
        // ... capped per queue.
        assert_eq!(frames_per_queue(4 << 30, 1, plenty), MAX_QUEUE_FRAMES);
        // Not a power of two: rounded down, so RingSize stays a cap.
        assert_eq!(frames_per_queue(300 * MIB, 1, plenty), 1 << 17);
        assert_eq!(frames_per_queue(600 * MIB, 1, plenty), 1 << 18);
        // Little memory: the floor shrinks to an eighth of what is
        // available (1 GiB / 8 / 2 KiB = 65536), RingSize still counts.
        assert_eq!(frames_per_queue(4 * MIB, 1, Some(1 << 30)), 65_536);
        assert_eq!(frames_per_queue(256 * MIB, 1, Some(1 << 30)), 1 << 17);
        assert_eq!(frames_per_queue(4 * MIB, 1, Some(64 * MIB)), 4096);
        assert_eq!(
            frames_per_queue(2 * MIB, 1, Some(8 * MIB)),
            MIN_QUEUE_FRAMES
        );
        // Unknown memory: the floor.
        assert_eq!(frames_per_queue(0, 1, None), FLOOR_FRAMES);
        // Many queues: never below the per-queue minimum.
        assert_eq!(frames_per_queue(32 * MIB, 256, plenty), MIN_QUEUE_FRAMES);
        for q in 1..=64 {
            for mem in [None, Some(100 * MIB), plenty] {
                let f = frames_per_queue(32 * MIB, q, mem);
                assert!(f.is_power_of_two(), "{q} {mem:?}: {f}");
                assert!((MIN_QUEUE_FRAMES..=MAX_QUEUE_FRAMES).contains(&f));
            }
        }
    }
}
