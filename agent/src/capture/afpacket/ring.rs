//! The TPACKET_V3 ring itself: the mapping shared with the kernel, its block
//! status words and the frames inside a block. The socket around it is set
//! up through `sys` in the parent module.

// A ring module: the one place besides the syscall layer with `unsafe`
// (memory the kernel writes), each block argued.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use super::RingGeometry;

/// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where the frame's
/// `sockaddr_ll` starts.
const SLL_OFF: usize = (mem::size_of::<libc::tpacket3_hdr>() + 15) & !15;

/// The mapped ring of a socket that has PACKET_RX_RING set.
#[derive(Debug)]
pub(super) struct Ring {
    map: NonNull<u8>,
    geometry: RingGeometry,
}

// SAFETY: the mapping is owned by this value alone (no other handle points
// into it) and frames borrowed from it do not outlive `walk_block`, so moving
// the value to another thread is sound.
unsafe impl Send for Ring {}

impl Ring {
    /// Maps the ring the kernel allocated for `fd` with `geometry`.
    pub(super) fn map(fd: &OwnedFd, geometry: RingGeometry) -> io::Result<Ring> {
        let len = geometry.block_size * geometry.block_nr;
        // SAFETY: maps the ring the kernel just allocated for this socket;
        // length and offset are the ones the kernel expects; result checked.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(map as *mut u8).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Ring { map, geometry })
    }

    /// The status word of block `i`, shared with the kernel.
    pub(super) fn block_status(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.geometry.block_nr);
        // SAFETY: block `i` lies inside the mapping (i < block_nr); the block
        // descriptor starts the block, page-aligned, and `block_status` is a
        // naturally aligned u32 inside it. The kernel and we hand the block
        // back and forth through this word, so it is accessed atomically.
        unsafe {
            let block = self.map.as_ptr().add(i * self.geometry.block_size);
            let desc = block as *const libc::tpacket_block_desc;
            let status = ptr::addr_of!((*desc).hdr.bh1.block_status);
            &*(status as *const AtomicU32)
        }
    }

    /// Calls `frame(header, address, bytes)` for every frame of block `i`
    /// if user space owns it (its status says TP_STATUS_USER); returns the
    /// count (0 for a block the kernel still owns). `address` is the
    /// `sockaddr_ll` the kernel writes behind the header (interface, packet
    /// type, link-layer address and protocol).
    pub(super) fn walk_block(
        &self,
        i: usize,
        mut frame: impl FnMut(&libc::tpacket3_hdr, &libc::sockaddr_ll, &[u8]),
    ) -> usize {
        let bs = self.geometry.block_size;
        if self.block_status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return 0;
        }
        // SAFETY: block `i` is inside the mapping (checked by block_status)
        // and its status says user space owns it, so the kernel does not
        // write it until the caller releases it.
        // Every offset read from the block is checked against the block size
        // before it is dereferenced, so a corrupt header cannot take us out
        // of the block.
        unsafe {
            let block = self.map.as_ptr().add(i * bs);
            let desc = &*(block as *const libc::tpacket_block_desc);
            let num = desc.hdr.bh1.num_pkts as usize;
            let mut off = desc.hdr.bh1.offset_to_first_pkt as usize;
            let mut n = 0;
            while n < num && off + SLL_OFF + mem::size_of::<libc::sockaddr_ll>() <= bs {
                let h = &*(block.add(off) as *const libc::tpacket3_hdr);
                // The kernel writes it at TPACKET_ALIGN(sizeof(tpacket3_hdr)),
                // 16-byte aligned as every frame starts.
                let sll = &*(block.add(off + SLL_OFF) as *const libc::sockaddr_ll);
                let mac = off + h.tp_mac as usize;
                let caplen = (h.tp_snaplen as usize).min(bs.saturating_sub(mac));
                let data = std::slice::from_raw_parts(block.add(mac), caplen);
                frame(h, sll, data);
                n += 1;
                if h.tp_next_offset == 0 {
                    break;
                }
                off += h.tp_next_offset as usize;
            }
            n
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let len = self.geometry.block_size * self.geometry.block_nr;
        // SAFETY: unmaps exactly the mapping made in `map`; nothing borrows
        // it any more (frames only live during `walk_block`).
        unsafe {
            libc::munmap(self.map.as_ptr() as *mut libc::c_void, len);
        }
    }
}
