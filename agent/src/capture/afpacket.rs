//! AF_PACKET capture through a TPACKET_V3 memory-mapped receive ring.
//!
//! The kernel fills blocks of the ring with frames that passed the socket's
//! cBPF filter and hands a block to user space when it is full or when its
//! retire timeout expires. We walk the frames of every ready block in place
//! (no copy, no syscall per frame) and give the block back afterwards.
//!
//! Opening avoids the classic race where frames of every interface slip in
//! before the bind and the filter: the socket is created with protocol 0 (it
//! receives nothing), gets a drop-all filter, is bound to the interface with
//! ETH_P_ALL, the ring is drained, and only then the real filter is attached.
//!
//! VLAN tags: the kernel takes the outer 802.1Q/802.1ad tag out of every
//! received frame before AF_PACKET sees it (the tag travels beside the frame;
//! we put it back, see `emit`). The sensor's filter was compiled for frames
//! as they were on the wire, tag included, so the kernel cannot judge a
//! tagged frame: `vlan 10` would never match and `udp port 53` would match
//! tagged frames that the expression, applied to the frame we forward, does
//! not. (libpcap's rpcapd has exactly that quirk.) The kernel filter
//! therefore lets tagged frames through ([`kernel_filter`]) and the
//! worker-side `rpcap` interpreter judges them once the tag is back; untagged
//! frames are judged by the kernel alone.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rpcap::bpf::{Insn, Program};

use super::sys;
use super::{CaptureError, Frame, Polled, Source, SourceStats};

/// `enum tpacket_versions`: TPACKET_V3 (libc does not export the enum value).
const TPACKET_V3: libc::c_int = 2;
/// Frame size declared to the kernel. With TPACKET_V3 frames are packed
/// back to back inside a block, so this only has to pass the kernel's checks.
const FRAME_SIZE: usize = 2048;
/// Smallest block: large enough that a block holds many frames.
const MIN_BLOCK_SIZE: usize = 256 * 1024;
/// Fewest blocks: the kernel fills one while user space reads others.
const MIN_BLOCKS: usize = 4;
/// Ring size when the caller asks for 0.
pub const DEFAULT_RING_BYTES: usize = 4 * 1024 * 1024;
/// Bytes in front of the frame data in a block (block header, tpacket3_hdr,
/// sockaddr_ll, alignment), reserved when sizing blocks for the snap length.
const BLOCK_OVERHEAD: usize = 4096;
/// How often an interface that went down is checked for having been deleted.
const DOWN_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// What to open.
#[derive(Debug, Clone)]
pub struct AfPacketConfig<'a> {
    pub ifname: &'a str,
    pub snaplen: u32,
    pub promisc: bool,
    /// A block is handed to user space at the latest this long after its first frame.
    pub block_timeout: Duration,
    /// Total ring size in bytes (0: [`DEFAULT_RING_BYTES`]).
    pub ring_bytes: usize,
    /// The filter (validated cBPF), run by the kernel.
    pub filter: &'a [Insn],
}

/// Block geometry of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    pub block_size: usize,
    pub block_nr: usize,
}

impl RingGeometry {
    /// Blocks that hold a whole frame of `snaplen` bytes (jumbo frames and
    /// the 262144-byte maximum included), as many as fit in `ring_bytes`
    /// but at least [`MIN_BLOCKS`].
    pub fn for_ring(ring_bytes: usize, snaplen: u32) -> RingGeometry {
        let ring_bytes = if ring_bytes == 0 {
            DEFAULT_RING_BYTES
        } else {
            ring_bytes
        };
        let need = (snaplen as usize).saturating_add(BLOCK_OVERHEAD);
        let block_size = need.next_power_of_two().max(MIN_BLOCK_SIZE);
        let block_nr = (ring_bytes / block_size).max(MIN_BLOCKS);
        RingGeometry {
            block_size,
            block_nr,
        }
    }
}

/// An open AF_PACKET capture.
#[derive(Debug)]
pub struct AfPacket {
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    ring: NonNull<u8>,
    geometry: RingGeometry,
    /// Next block to look at.
    cur: usize,
    snaplen: u32,
    kernel_drops: u64,
    /// Frames with a VLAN tag the kernel moved out of the frame are rebuilt
    /// here (a whole block's worth, so the filter sees every byte).
    vlan_buf: Vec<u8>,
    /// The capture's filter, run on tagged frames once the tag is back.
    filter: Program,
    /// Tagged frames the filter rejected in user space.
    pub vlan_filtered: u64,
    /// Set when the kernel reported the interface down: from then on we check
    /// whether it was deleted.
    down_since: Option<Instant>,
    last_down_check: Instant,
    /// An eventfd that ends a wait early (the worker's commands), if set.
    wake: Option<OwnedFd>,
}

// SAFETY: the ring mapping is owned by this value alone (no other handle
// points into it) and is only touched through `&mut self`, so moving the value
// to another thread is sound.
unsafe impl Send for AfPacket {}

impl AfPacket {
    /// Opens the ring on `cfg.ifname` and attaches `cfg.filter`.
    pub fn open(cfg: &AfPacketConfig<'_>) -> Result<AfPacket, io::Error> {
        let ifindex = sys::ifindex(cfg.ifname)?;
        let geometry = RingGeometry::for_ring(cfg.ring_bytes, cfg.snaplen);

        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        attach_filter(&fd, &[Insn::new(0x06, 0, 0, 0)])?;
        sys::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V3)?;
        let tov_ms = cfg.block_timeout.as_millis().clamp(1, u32::MAX as u128) as libc::c_uint;
        let req = libc::tpacket_req3 {
            tp_block_size: geometry.block_size as libc::c_uint,
            tp_block_nr: geometry.block_nr as libc::c_uint,
            tp_frame_size: FRAME_SIZE as libc::c_uint,
            tp_frame_nr: (geometry.block_size / FRAME_SIZE * geometry.block_nr) as libc::c_uint,
            tp_retire_blk_tov: tov_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        sys::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;

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
        let ring =
            NonNull::new(map as *mut u8).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        let mut cap = AfPacket {
            fd,
            ifname: cfg.ifname.to_owned(),
            ifindex,
            ring,
            geometry,
            cur: 0,
            snaplen: cfg.snaplen,
            kernel_drops: 0,
            vlan_buf: vec![0; geometry.block_size + 4],
            filter: user_filter(cfg.filter)?,
            vlan_filtered: 0,
            down_since: None,
            last_down_check: Instant::now(),
            wake: None,
        };

        // SAFETY: all-zero is a valid sockaddr_ll; the fields we need are set below.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                cap.fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if cfg.promisc {
            // SAFETY: all-zero is a valid packet_mreq.
            let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
            mreq.mr_ifindex = ifindex as libc::c_int;
            mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
            // Dropped by the kernel when the socket closes.
            sys::setsockopt(
                &cap.fd,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq,
            )?;
        }
        cap.drain();
        attach_filter(&cap.fd, &kernel_filter(cfg.filter))?;
        // Whatever the drop-all filter let through (nothing) and the stats
        // counted so far belong to the set-up, not to the capture.
        let _ = cap.read_kernel_stats();
        cap.kernel_drops = 0;
        Ok(cap)
    }

    /// A waiting [`Source::poll`] also returns when `fd` (an eventfd) is
    /// written, so the caller can sleep long and still react at once.
    pub fn set_wake_fd(&mut self, fd: OwnedFd) {
        self.wake = Some(fd);
    }

    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    /// Gives every block user space holds back to the kernel, unread.
    fn drain(&mut self) {
        for i in 0..self.geometry.block_nr {
            let status = self.block_status(i);
            if status.load(Ordering::Acquire) & libc::TP_STATUS_USER != 0 {
                status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            }
        }
        self.cur = 0;
    }

    /// The status word of block `i`, shared with the kernel.
    fn block_status(&self, i: usize) -> &AtomicU32 {
        debug_assert!(i < self.geometry.block_nr);
        // SAFETY: block `i` lies inside the mapping (i < block_nr); the block
        // descriptor starts the block, page-aligned, and `block_status` is a
        // naturally aligned u32 inside it. The kernel and we hand the block
        // back and forth through this word, so it is accessed atomically.
        unsafe {
            let block = self.ring.as_ptr().add(i * self.geometry.block_size);
            let desc = block as *const libc::tpacket_block_desc;
            let status = ptr::addr_of!((*desc).hdr.bh1.block_status);
            &*(status as *const AtomicU32)
        }
    }

    /// Walks the frames of block `i` (owned by user space) into `sink`.
    fn walk_block<F: FnMut(&Frame<'_>)>(&mut self, i: usize, sink: &mut F) -> usize {
        let bs = self.geometry.block_size;
        // SAFETY: block `i` is inside the mapping and its status says user
        // space owns it, so the kernel does not write it until we release it.
        // Every offset read from the block is checked against the block size
        // before it is dereferenced, so a corrupt header cannot take us out
        // of the block.
        unsafe {
            let block = self.ring.as_ptr().add(i * bs);
            let desc = &*(block as *const libc::tpacket_block_desc);
            let num = desc.hdr.bh1.num_pkts as usize;
            let mut off = desc.hdr.bh1.offset_to_first_pkt as usize;
            let mut n = 0;
            while n < num && off + mem::size_of::<libc::tpacket3_hdr>() <= bs {
                let h = &*(block.add(off) as *const libc::tpacket3_hdr);
                let mac = off + h.tp_mac as usize;
                let caplen = (h.tp_snaplen as usize).min(bs.saturating_sub(mac));
                let data = std::slice::from_raw_parts(block.add(mac), caplen);
                self.emit(h, data, sink);
                n += 1;
                if h.tp_next_offset == 0 {
                    break;
                }
                off += h.tp_next_offset as usize;
            }
            n
        }
    }

    /// Hands one frame to the sink: snap length applied, VLAN tag put back
    /// (and the filter run on the tagged frame, see the module doc).
    fn emit<F: FnMut(&Frame<'_>)>(&mut self, h: &libc::tpacket3_hdr, data: &[u8], sink: &mut F) {
        let snap = self.snaplen as usize;
        let ts_sec = h.tp_sec;
        let ts_usec = h.tp_nsec / 1000;
        let vlan = h.tp_status & libc::TP_STATUS_VLAN_VALID != 0;
        if vlan && data.len() >= 12 {
            // The NIC (or veth) took the 802.1Q tag out of the frame; put it
            // back so the sensor sees the frame as it was on the wire.
            let tpid = if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                h.hv1.tp_vlan_tpid
            } else {
                0x8100
            };
            let tci = h.hv1.tp_vlan_tci as u16;
            // vlan_buf holds a block + 4 bytes and `data` lies inside a block.
            let len = data.len() + 4;
            let out = &mut self.vlan_buf[..len];
            out[..12].copy_from_slice(&data[..12]);
            out[12..14].copy_from_slice(&tpid.to_be_bytes());
            out[14..16].copy_from_slice(&tci.to_be_bytes());
            out[16..].copy_from_slice(&data[12..]);
            let wire_len = h.tp_len + 4;
            let keep = self.filter.run(out, wire_len) as usize;
            if keep == 0 {
                self.vlan_filtered += 1;
                return;
            }
            sink(&Frame {
                ts_sec,
                ts_usec,
                parts: &[&self.vlan_buf[..len.min(snap).min(keep)]],
                wire_len,
            });
        } else {
            sink(&Frame {
                ts_sec,
                ts_usec,
                parts: &[&data[..data.len().min(snap)]],
                wire_len: h.tp_len,
            });
        }
    }

    /// Waits for the socket to become readable; turns a socket error into
    /// the capture's fate.
    fn wait(&mut self, timeout: Duration) -> Result<(), CaptureError> {
        let wake_fd = self.wake.as_ref().map_or(-1, |w| w.as_raw_fd());
        let mut pfds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            // poll(2) skips a negative descriptor.
            libc::pollfd {
                fd: wake_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Rounded up to whole ms: a deadline less than 1 ms away is a short
        // sleep, not a spin.
        let ms = timeout.as_micros().div_ceil(1000).min(u64::MAX as u128) as u64;
        sys::poll(&mut pfds, Duration::from_millis(ms))
            .map_err(|e| CaptureError::io("poll on the capture socket", e))?;
        if pfds[1].revents & libc::POLLIN != 0 {
            sys::drain_eventfd(wake_fd);
        }
        if pfds[0].revents & libc::POLLERR != 0 {
            self.take_socket_error()?;
        }
        if self.down_since.is_some() && self.last_down_check.elapsed() >= DOWN_CHECK_INTERVAL {
            self.last_down_check = Instant::now();
            if !sys::ifindex_exists(self.ifindex) {
                return Err(CaptureError::Vanished(self.ifname.clone()));
            }
        }
        Ok(())
    }

    /// Reads and clears the socket's pending error. The kernel reports
    /// ENETDOWN both when the link goes down (it comes back by itself on UP)
    /// and just before the interface is unregistered; which one it was shows
    /// when the ifindex disappears, so we remember the time and check.
    fn take_socket_error(&mut self) -> Result<(), CaptureError> {
        // SAFETY: SO_ERROR is a plain c_int.
        let err: libc::c_int =
            unsafe { sys::getsockopt(&self.fd, libc::SOL_SOCKET, libc::SO_ERROR) }
                .map_err(|e| CaptureError::io("SO_ERROR", e))?;
        match err {
            0 => Ok(()),
            libc::ENODEV | libc::ENXIO => Err(CaptureError::Vanished(self.ifname.clone())),
            libc::ENETDOWN => {
                if !sys::ifindex_exists(self.ifindex) {
                    return Err(CaptureError::Vanished(self.ifname.clone()));
                }
                log::warn!("interface {} went down; waiting for it", self.ifname);
                self.down_since = Some(Instant::now());
                self.last_down_check = Instant::now();
                Ok(())
            }
            e => Err(CaptureError::io(
                "capture socket",
                io::Error::from_raw_os_error(e),
            )),
        }
    }

    /// PACKET_STATISTICS (the kernel resets its counters on every read).
    fn read_kernel_stats(&mut self) -> io::Result<libc::tpacket_stats_v3> {
        // SAFETY: tpacket_stats_v3 is plain integers.
        unsafe { sys::getsockopt(&self.fd, libc::SOL_PACKET, libc::PACKET_STATISTICS) }
    }
}

impl Source for AfPacket {
    fn poll<F: FnMut(&Frame<'_>)>(
        &mut self,
        timeout: Duration,
        sink: &mut F,
    ) -> Result<Polled, CaptureError> {
        let mut frames = 0;
        let mut waited = false;
        // At most one lap of the ring per call, so the caller regains control.
        let mut blocks = 0;
        while blocks < self.geometry.block_nr {
            let i = self.cur;
            if self.block_status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                if frames > 0 || waited {
                    break;
                }
                self.wait(timeout)?;
                waited = true;
                continue;
            }
            frames += self.walk_block(i, sink);
            self.block_status(i)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.cur = (i + 1) % self.geometry.block_nr;
            blocks += 1;
            if self.down_since.take().is_some() {
                log::info!("interface {} is back", self.ifname);
            }
        }
        Ok(Polled::Frames(frames))
    }

    fn set_filter(&mut self, insns: &[Insn]) -> Result<(), CaptureError> {
        let user = user_filter(insns).map_err(|e| CaptureError::io("filter", e))?;
        // SO_ATTACH_FILTER swaps the program atomically in the kernel; tagged
        // frames already in the ring are judged by the new program too.
        attach_filter(&self.fd, &kernel_filter(insns))
            .map_err(|e| CaptureError::io("SO_ATTACH_FILTER", e))?;
        self.filter = user;
        Ok(())
    }

    fn stats(&mut self) -> SourceStats {
        match self.read_kernel_stats() {
            Ok(st) => self.kernel_drops += u64::from(st.tp_drops),
            Err(e) => log::debug!("PACKET_STATISTICS on {}: {e}", self.ifname),
        }
        SourceStats {
            kernel_drops: self.kernel_drops,
        }
    }
}

impl Drop for AfPacket {
    fn drop(&mut self) {
        let len = self.geometry.block_size * self.geometry.block_nr;
        // SAFETY: unmaps exactly the mapping made in `open`; nothing borrows
        // it any more (frames only live during `poll`). The descriptor is
        // closed afterwards by OwnedFd.
        unsafe {
            libc::munmap(self.ring.as_ptr() as *mut libc::c_void, len);
        }
    }
}

/// The user-space copy of the filter, for tagged frames.
fn user_filter(insns: &[Insn]) -> io::Result<Program> {
    if insns.is_empty() {
        return Ok(Program::accept_all());
    }
    Program::new(insns.to_vec()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// `SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT`: the kernel's "this frame had a
/// VLAN tag (now beside it)" ancillary load.
const LD_VLAN_TAG_PRESENT: u32 = 0xffff_f000 + 44;

/// The program the kernel runs: tagged frames pass whole (user space judges
/// them with the tag back), the others meet `insns`. cBPF jumps are
/// relative, so `insns` needs no change behind the three-instruction prefix.
fn kernel_filter(insns: &[Insn]) -> Vec<Insn> {
    if insns.is_empty() {
        return Vec::new();
    }
    let mut k = Vec::with_capacity(insns.len() + 3);
    k.push(Insn::new(0x20, 0, 0, LD_VLAN_TAG_PRESENT)); // ld vlan_avail
    k.push(Insn::new(0x15, 1, 0, 0)); // jeq #0: untagged -> insns
    k.push(Insn::new(0x06, 0, 0, u32::MAX)); // ret #-1: tagged -> user space
    k.extend_from_slice(insns);
    k
}

/// Attaches (or atomically replaces) the socket's classic BPF filter.
/// An empty program means "no filter": every frame, whole.
pub(crate) fn attach_filter(fd: &OwnedFd, insns: &[Insn]) -> io::Result<()> {
    let accept_all = [Insn::new(0x06, 0, 0, u32::MAX)];
    let insns = if insns.is_empty() {
        &accept_all[..]
    } else {
        insns
    };
    if insns.len() > u16::MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "filter length out of range",
        ));
    }
    let mut prog: Vec<libc::sock_filter> = insns
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // The kernel copies the program during the call.
    sys::setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_geometry_fits_the_snaplen_and_the_budget() {
        let g = RingGeometry::for_ring(0, 65535);
        assert_eq!(g.block_size, 256 * 1024);
        assert_eq!(g.block_size * g.block_nr, DEFAULT_RING_BYTES);
        // Jumbo and maximum snap lengths still fit one frame per block.
        let g = RingGeometry::for_ring(4 << 20, 262_144);
        assert!(g.block_size >= 262_144 + BLOCK_OVERHEAD);
        assert!(g.block_size.is_power_of_two());
        // A tiny budget still gets enough blocks to keep the kernel busy.
        let g = RingGeometry::for_ring(1000, 9000);
        assert_eq!(g.block_nr, MIN_BLOCKS);
        assert_eq!(g.block_size % FRAME_SIZE, 0);
    }

    #[test]
    fn unknown_interface_is_an_error_not_a_panic() {
        let cfg = AfPacketConfig {
            ifname: "no-such-if0",
            snaplen: 100,
            promisc: false,
            block_timeout: Duration::from_millis(10),
            ring_bytes: 0,
            filter: &[],
        };
        assert!(AfPacket::open(&cfg).is_err());
        let cfg = AfPacketConfig {
            ifname: "bad\0name",
            ..cfg
        };
        assert!(AfPacket::open(&cfg).is_err());
    }
}
