//! One AF_XDP socket: its UMEM and its fill, completion and RX rings,
//! written by hand over libc (the `xdp` crate hands frames out as its own
//! packet objects; we want borrowed slices straight out of the UMEM).
//!
//! The kernel writes each frame the XDP program redirects into a UMEM chunk
//! taken from the fill ring and posts a descriptor on the RX ring. We read
//! the frames in place and give their chunks back to the fill ring in one
//! batch per round. No TX: the completion ring exists only because the
//! kernel requires one per UMEM.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use super::sys::{getsockopt, setsockopt};

/// UMEM chunk size: one frame per chunk (aligned mode). 4096 leaves
/// 4096 - 256 (XDP headroom) bytes for a frame: MTUs up to ~3800.
pub const FRAME_SIZE: usize = 4096;
/// Fewest / most chunks per socket.
const MIN_FRAMES: usize = 512;
const MAX_FRAMES: usize = 32768;
const COMP_RING: u32 = 64;
/// How many frames ahead of the one being read are prefetched.
const PREFETCH: u32 = 8;

/// How the socket ended up bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindInfo {
    pub zero_copy: bool,
    pub busy_poll: bool,
}

/// Kernel counters of one socket (XDP_STATISTICS, cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub rx_invalid: u64,
}

/// A memory-mapped ring shared with the kernel.
#[derive(Debug)]
struct Ring {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    desc: NonNull<u8>,
    mask: u32,
}

impl Ring {
    /// Maps ring `pgoff` of `fd` with `size` entries of `entry` bytes.
    fn map(
        fd: &OwnedFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        entry: usize,
        pgoff: libc::off_t,
    ) -> io::Result<Ring> {
        let map_len = off.desc as usize + size as usize * entry;
        // SAFETY: maps the ring the kernel created for this socket (setsockopt
        // above) at its documented page offset; the result is checked.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as *mut u8;
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS for this mapping and
        // lie inside it; producer/consumer/flags are aligned u32 words.
        unsafe {
            let at = |o: u64| NonNull::new_unchecked(base.add(o as usize));
            Ok(Ring {
                map: at(0),
                map_len,
                producer: at(off.producer).cast(),
                consumer: at(off.consumer).cast(),
                flags: at(off.flags).cast(),
                desc: at(off.desc),
                mask: size - 1,
            })
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping (see `map`); the kernel
        // updates it concurrently, hence the atomic view.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let f = unsafe { self.flags.as_ref() };
        f.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference
        // into it outlives the ring.
        unsafe {
            libc::munmap(self.map.as_ptr() as *mut libc::c_void, self.map_len);
        }
    }
}

/// An AF_XDP socket bound to one RX queue.
#[derive(Debug)]
pub struct Xsk {
    // Field order is drop order: rings are unmapped before the socket closes
    // and the UMEM is freed last.
    rx: Ring,
    fill: Ring,
    _comp: Ring,
    fd: OwnedFd,
    /// Chunk addresses read from RX this round, to go back to the fill ring.
    recycle: Vec<u64>,
    pub queue: u32,
    pub info: BindInfo,
    /// Frames read from this socket so far.
    pub received: u64,
    umem: Umem,
}

// SAFETY: the mappings are owned by this value alone and only touched
// through `&mut self`; moving it to the worker thread is sound.
unsafe impl Send for Xsk {}

/// The number of UMEM chunks for a socket that may use `bytes` of memory.
pub fn frames_for(bytes: usize) -> usize {
    let n = (bytes / FRAME_SIZE).clamp(MIN_FRAMES, MAX_FRAMES);
    // Ring sizes must be powers of two; round down so `bytes` is a cap.
    if n.is_power_of_two() {
        n
    } else {
        n.next_power_of_two() / 2
    }
}

impl Xsk {
    /// Creates the socket, registers a UMEM of `frames` chunks, maps the
    /// rings and binds to `queue` of `ifindex`: zero-copy when the driver
    /// supports it (and `try_zero_copy`), copy mode otherwise.
    pub fn open(ifindex: u32, queue: u32, frames: usize, try_zero_copy: bool) -> io::Result<Xsk> {
        let frames = frames.clamp(MIN_FRAMES, MAX_FRAMES).next_power_of_two();
        // SAFETY: plain socket(2); result checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let umem_len = frames * FRAME_SIZE;
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
        // Every frame sits in its own 4 KiB chunk, so with small pages each
        // frame read is a TLB miss (the UMEM spans 4096+ pages): ask for
        // transparent huge pages before the pages are faulted in (the UMEM
        // registration below pins them). Best effort: without THP
        // (`enabled = never`) the small pages work the same, only slower.
        // SAFETY: advice on the mapping just made; it changes no contents.
        unsafe { libc::madvise(area, umem_len, libc::MADV_HUGEPAGE) };
        let umem = Umem {
            area: NonNull::new(area as *mut u8)
                .ok_or_else(|| io::Error::other("mmap gave NULL"))?,
            len: umem_len,
        };

        let reg = libc::xdp_umem_reg {
            addr: area as u64,
            len: umem_len as u64,
            chunk_size: FRAME_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        // The RX ring can hold every chunk: a stalled worker then loses
        // frames only when the whole UMEM is full.
        let rx_size = frames as u32;
        let fill_size = frames as u32;
        let rings = (|| -> io::Result<(Ring, Ring, Ring)> {
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
            let rx = Ring::map(
                &fd,
                &off.rx,
                rx_size,
                mem::size_of::<libc::xdp_desc>(),
                libc::XDP_PGOFF_RX_RING,
            )?;
            let fill = Ring::map(
                &fd,
                &off.fr,
                fill_size,
                8,
                libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            )?;
            let comp = Ring::map(
                &fd,
                &off.cr,
                COMP_RING,
                8,
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
            queue,
            info: BindInfo {
                zero_copy: false,
                busy_poll: false,
            },
            received: 0,
            umem,
        };
        // Every chunk starts in the fill ring.
        xsk.recycle
            .extend((0..frames as u64).map(|i| i * FRAME_SIZE as u64));
        xsk.refill();

        let zc = libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP;
        let copy = libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP;
        xsk.info.zero_copy = try_zero_copy && xsk.bind(ifindex, queue, zc).is_ok();
        if !xsk.info.zero_copy {
            xsk.bind(ifindex, queue, copy)?;
        }
        Ok(xsk)
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

    /// Hands up to `max` received frames to `f` (bytes borrowed from the
    /// UMEM), then returns their chunks to the fill ring in one batch.
    pub fn receive<F: FnMut(&[u8])>(&mut self, max: u32, mut f: F) -> usize {
        let prod = self.rx.producer().load(Ordering::Acquire);
        let cons = self.rx.consumer().load(Ordering::Relaxed);
        let n = prod.wrapping_sub(cons).min(max);
        // The kernel wrote these frames on another CPU: the first read of
        // each is a cache miss that used to cost more than everything else
        // the worker does per frame. Ask for frame i + PREFETCH while
        // handing out frame i, so the misses overlap.
        for i in 0..n.min(PREFETCH) {
            self.prefetch(self.desc(cons.wrapping_add(i)));
        }
        for i in 0..n {
            if i + PREFETCH < n {
                self.prefetch(self.desc(cons.wrapping_add(i + PREFETCH)));
            }
            let d = self.desc(cons.wrapping_add(i));
            let (addr, len) = (d.addr as usize, d.len as usize);
            if addr.checked_add(len).is_some_and(|e| e <= self.umem.len) {
                // SAFETY: the range lies inside the UMEM (checked) and the
                // kernel does not write this chunk until it is back in the
                // fill ring, which happens after `f` returns.
                let data =
                    unsafe { std::slice::from_raw_parts(self.umem.area.as_ptr().add(addr), len) };
                f(data);
            }
            self.recycle.push(d.addr & !(FRAME_SIZE as u64 - 1));
        }
        self.received += u64::from(n);
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
        let idx = (pos & self.rx.mask) as usize;
        // SAFETY: idx <= mask, so the descriptor lies inside the RX ring;
        // entries between consumer and producer belong to user space.
        unsafe { ptr::read(self.rx.desc.as_ptr().cast::<libc::xdp_desc>().add(idx)) }
    }

    /// Starts loading the first cache line of the frame `d` points at.
    #[inline]
    fn prefetch(&self, d: libc::xdp_desc) {
        #[cfg(target_arch = "x86_64")]
        if (d.addr as usize) < self.umem.len {
            // SAFETY: the address lies inside the UMEM mapping (checked);
            // a prefetch is only a hint and never faults.
            unsafe {
                let p = self.umem.area.as_ptr().add(d.addr as usize);
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    p as *const i8,
                );
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
        for (i, addr) in self.recycle.drain(..n as usize).enumerate() {
            let idx = (prod.wrapping_add(i as u32) & self.fill.mask) as usize;
            // SAFETY: idx <= mask, inside the fill ring; entries from
            // producer up to consumer + size are ours to write.
            unsafe { ptr::write(self.fill.desc.as_ptr().cast::<u64>().add(idx), addr) };
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
        })
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
