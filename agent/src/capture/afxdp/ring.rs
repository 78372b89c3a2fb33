//! The rings an AF_XDP socket shares with the kernel: RX (descriptors of
//! received frames, the kernel produces), fill (free UMEM chunks, user space
//! produces), completion (sent chunks; required per UMEM though we never
//! send) and TX (not used: a capture only receives). Each is a memory
//! mapping of the socket with a producer and a consumer index and an array
//! of entries; this module maps one and reads or writes its entries, the
//! socket decides which entries are whose.

// A ring module: the one place besides the syscall layer with `unsafe`
// (memory shared with the kernel), every block argued.
#![allow(unsafe_code)]

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

/// A memory-mapped ring of `T` entries (`libc::xdp_desc` for RX, a `u64`
/// chunk address for fill and completion) shared with the kernel.
#[derive(Debug)]
pub(super) struct Ring<T> {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    desc: NonNull<T>,
    /// Entries - 1 (a power of two - 1).
    pub(super) mask: u32,
    _entries: PhantomData<T>,
}

impl<T: Copy> Ring<T> {
    /// Maps ring `pgoff` of `fd` with `size` entries (a power of two).
    pub(super) fn map(
        fd: &OwnedFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: libc::off_t,
    ) -> io::Result<Ring<T>> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: maps the ring the kernel created for this socket (setsockopt
        // before) at its documented page offset; the result is checked.
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
        // lie inside it; producer/consumer/flags are aligned u32 words and the
        // entries start aligned for T.
        unsafe {
            let at = |o: u64| NonNull::new_unchecked(base.add(o as usize));
            Ok(Ring {
                map: at(0),
                map_len,
                producer: at(off.producer).cast(),
                consumer: at(off.consumer).cast(),
                flags: at(off.flags).cast(),
                desc: at(off.desc).cast(),
                mask: size - 1,
                _entries: PhantomData,
            })
        }
    }

    pub(super) fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping (see `map`); the kernel
        // updates it concurrently, hence the atomic view.
        unsafe { self.producer.as_ref() }
    }

    pub(super) fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    pub(super) fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let f = unsafe { self.flags.as_ref() };
        f.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// The entry at ring position `pos`; the caller reads only entries the
    /// kernel produced and user space has not consumed yet.
    #[inline]
    pub(super) fn entry(&self, pos: u32) -> T {
        let idx = (pos & self.mask) as usize;
        // SAFETY: idx <= mask, so the entry lies inside the ring's mapping;
        // entries between consumer and producer belong to user space (the
        // caller's protocol), so the kernel does not write this one now.
        unsafe { ptr::read(self.desc.as_ptr().add(idx)) }
    }

    /// Writes the entry at ring position `pos`; the caller writes only
    /// entries from producer up to consumer + size (user space's to fill).
    #[inline]
    pub(super) fn set_entry(&self, pos: u32, v: T) {
        let idx = (pos & self.mask) as usize;
        // SAFETY: idx <= mask, inside the ring's mapping; the kernel does not
        // read entries beyond the producer index until it is published.
        unsafe { ptr::write(self.desc.as_ptr().add(idx), v) };
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference
        // into it outlives the ring.
        unsafe {
            libc::munmap(self.map.as_ptr() as *mut libc::c_void, self.map_len);
        }
    }
}
