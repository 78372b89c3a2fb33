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
//!
//! The `any` device (libpcap's pseudo-device) is a SOCK_DGRAM socket bound
//! to ifindex 0: every interface's frames, without their link-layer header.
//! Its link type is DLT_LINUX_SLL as libpcap 1.10 gives it; the 16-byte
//! header is built from the frame's `sockaddr_ll` on the stack and handed
//! to the framer as the first gather piece (no copy of the frame, no
//! allocation). Unlike named interfaces, tagged frames are judged as
//! libpcap judges them on `any`, without their tag (libpcap cannot compile
//! `vlan` for DLT_LINUX_SLL; `udp` must match tagged UDP as tcpdump's
//! does); the tag then goes back into the header. See [`cooked`] for the
//! header and the filter's rewrite for the kernel.
//!
//! Direction (STARTCAP's INBOUND/OUTBOUND, libpcap's `pcap_setdirection`):
//! the kernel filter starts with a test of the frame's packet type
//! ([`with_direction`]), so frames of the other direction never take ring
//! space nor worker time. libpcap's rpcapd drops them in user space by the
//! ring header's `sll_pkttype`; the frames kept are the same.

pub mod cooked;
mod ring;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rpcap::bpf::{Insn, Program};

use self::cooked::{SLL_HDR_LEN, SLL_PROTOCOL_OFF, SLL_VLAN_HDR_LEN};
use self::ring::Ring;
use super::{CaptureError, Direction, Frame, Polled, Request, Source, SourceStats};
use crate::iface::ANY;

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

/// The most the block timeout is set short of the latency bound.
const TIMER_MARGIN: Duration = Duration::from_millis(10);

/// The ring hands a block over at the latest this long after it opened
/// (so after its first frame): a little short of the latency bound, since
/// the worker flushes what it read as soon as it has caught up with the
/// ring (`Source::caught_up`). At low rates this is the worker's only
/// wake-up per bound; at high rates blocks fill before it and the worker
/// wakes per full block. The margin (a fifth of the bound, at most
/// [`TIMER_MARGIN`]) is for what comes after the timer: it may fire up to
/// a tick late (4 ms at HZ=250, 10 ms at HZ=100), then the worker wakes,
/// sends, and the datagrams cross the network. With the timeout at the
/// bound itself the sensor saw frames 3-7 ms over a 100 ms bound.
fn block_timeout(latency: Duration) -> Duration {
    let margin = (latency / 5).min(TIMER_MARGIN);
    latency.saturating_sub(margin).max(Duration::from_millis(1))
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
    /// Declared before `fd`: unmapped before the socket closes.
    ring: Ring,
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    geometry: RingGeometry,
    /// Next block to look at.
    cur: usize,
    snaplen: u32,
    kernel_drops: u64,
    /// Frames with a VLAN tag the kernel moved out of the frame are rebuilt
    /// here (a whole block's worth, so the filter sees every byte), and so
    /// are `any`'s frames when its filter cannot run in the kernel.
    vlan_buf: Vec<u8>,
    /// The capture's filter, run on tagged frames once the tag is back.
    filter: Program,
    /// Applied in the kernel filter (see [`with_direction`]).
    direction: Direction,
    /// Frames the filter rejected in user space (tagged ones; on `any`,
    /// those of a filter that cannot run in the kernel).
    pub vlan_filtered: u64,
    /// Set for the `any` device: frames are framed as DLT_LINUX_SLL.
    cooked: Option<Cooked>,
    /// Set when the kernel reported the interface down: from then on we check
    /// whether it was deleted.
    down_since: Option<Instant>,
    last_down_check: Instant,
    /// An eventfd that ends a wait early (the worker's commands), if set.
    wake: Option<OwnedFd>,
}

impl AfPacket {
    /// Opens the ring on `req.ifname` and attaches `req.filter`; reads the
    /// request's snaplen, promisc, read timeout and its settings' ring size
    /// (`RingSize`, 0: [`DEFAULT_RING_BYTES`]).
    ///
    /// `any` opens every interface as libpcap 1.10 does: a SOCK_DGRAM socket
    /// bound to ifindex 0, DLT_LINUX_SLL framing, no promiscuous mode, snap
    /// length at least [`cooked::MIN_SNAPLEN`].
    pub fn open(req: &Request) -> Result<AfPacket, io::Error> {
        let any = req.ifname == ANY;
        let (ifindex, snaplen, cooked) = if any {
            let lo_ifindex = sys::ifreq::ifindex("lo").map_or(-1, |i| i as libc::c_int);
            let cooked = Cooked {
                lo_ifindex,
                user_filter: false,
            };
            (0, req.snaplen.max(cooked::MIN_SNAPLEN), Some(cooked))
        } else {
            (sys::ifreq::ifindex(&req.ifname)?, req.snaplen, None)
        };
        let geometry = RingGeometry::for_ring(req.settings.ring_size, snaplen);

        let ty = if any {
            libc::SOCK_DGRAM
        } else {
            libc::SOCK_RAW
        };
        let fd = sys::socket::socket(libc::AF_PACKET, ty, 0)?;

        attach_filter(&fd, &[Insn::new(0x06, 0, 0, 0)])?;
        sys::sockopt::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V3)?;
        let tov_ms = block_timeout(req.latency)
            .as_millis()
            .clamp(1, u32::MAX as u128) as libc::c_uint;
        let ring_req = libc::tpacket_req3 {
            tp_block_size: geometry.block_size as libc::c_uint,
            tp_block_nr: geometry.block_nr as libc::c_uint,
            tp_frame_size: FRAME_SIZE as libc::c_uint,
            tp_frame_nr: (geometry.block_size / FRAME_SIZE * geometry.block_nr) as libc::c_uint,
            tp_retire_blk_tov: tov_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        sys::sockopt::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &ring_req)?;

        let ring = Ring::map(&fd, geometry)?;
        let mut cap = AfPacket {
            ring,
            fd,
            ifname: req.ifname.to_owned(),
            ifindex,
            geometry,
            cur: 0,
            snaplen,
            kernel_drops: 0,
            vlan_buf: vec![0; geometry.block_size + SLL_VLAN_HDR_LEN],
            filter: req.filter.clone(),
            direction: req.direction,
            vlan_filtered: 0,
            cooked,
            down_since: None,
            last_down_check: Instant::now(),
            wake: None,
        };

        sys::socket::bind(
            &cap.fd,
            &sys::socket::sockaddr_ll(ifindex, libc::ETH_P_ALL as u16),
        )?;
        if req.promisc && any {
            log::info!(
                "promiscuous mode is not supported on the \"any\" device: capturing without it"
            );
        } else if req.promisc {
            let mut mreq: libc::packet_mreq = sys::sockopt::zeroed();
            mreq.mr_ifindex = ifindex as libc::c_int;
            mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
            // Dropped by the kernel when the socket closes.
            sys::sockopt::setsockopt(
                &cap.fd,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq,
            )?;
        }
        cap.drain();
        let program = cap.kernel_program(req.filter.insns());
        attach_filter(&cap.fd, &with_direction(cap.direction, program))?;
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
    fn block_status(&self, i: usize) -> &std::sync::atomic::AtomicU32 {
        self.ring.block_status(i)
    }

    /// The program to attach for `insns`; on `any`, notes whether the
    /// kernel can run it ([`cooked::kernel_program`]) or user space judges
    /// every frame (the kernel then passes them all).
    fn kernel_program(&mut self, insns: &[Insn]) -> Vec<Insn> {
        match &mut self.cooked {
            None => kernel_filter(insns),
            // Tagged frames are judged as the kernel sees them (see
            // `emit_cooked`): no prefix that passes them up.
            Some(c) => match cooked::kernel_program(insns) {
                Some(k) => {
                    c.user_filter = false;
                    k
                }
                None => {
                    c.user_filter = true;
                    Vec::new()
                }
            },
        }
    }

    /// Walks the frames of block `i` (owned by user space) into `sink`.
    fn walk_block<F: FnMut(&Frame<'_>)>(&mut self, i: usize, sink: &mut F) -> usize {
        let mut tagged = Tagged {
            snaplen: self.snaplen,
            vlan_buf: &mut self.vlan_buf,
            filter: &self.filter,
            vlan_filtered: &mut self.vlan_filtered,
        };
        match &self.cooked {
            None => self
                .ring
                .walk_block(i, |h, _, data| tagged.emit(h, data, sink)),
            Some(c) => self
                .ring
                .walk_block(i, |h, sll, data| tagged.emit_cooked(c, h, sll, data, sink)),
        }
    }
}

/// What the `any` device needs besides a raw capture.
#[derive(Debug, Clone, Copy)]
struct Cooked {
    /// Loopback's ifindex (-1: none): its outgoing copies are dropped, as
    /// libpcap does, since every one comes back as an incoming frame.
    lo_ifindex: libc::c_int,
    /// The filter reads header bytes the kernel cannot see: user space
    /// judges every frame.
    user_filter: bool,
}

/// What [`Tagged::emit`] needs of the capture while the ring is borrowed.
struct Tagged<'a> {
    snaplen: u32,
    vlan_buf: &'a mut Vec<u8>,
    filter: &'a Program,
    vlan_filtered: &'a mut u64,
}

/// The VLAN tag the kernel moved beside the frame: (TPID, TCI).
#[inline]
fn vlan_tag(h: &libc::tpacket3_hdr) -> Option<(u16, u16)> {
    if h.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
        h.hv1.tp_vlan_tpid
    } else {
        0x8100
    };
    Some((tpid, h.hv1.tp_vlan_tci as u16))
}

impl Tagged<'_> {
    /// Hands one frame of the `any` device to the sink with its
    /// DLT_LINUX_SLL header as a gather piece of its own (no copy of the
    /// frame). As libpcap: the filter judges the frame as the kernel sees
    /// it (a VLAN tag beside it, not in it: libpcap cannot compile `vlan`
    /// for DLT_LINUX_SLL, and a protocol filter must still match tagged
    /// frames), then the tag goes back into the header before the protocol;
    /// the header counts in both lengths, the snap length cuts header and
    /// data together, the filter's verdict cuts the data alone (as it does
    /// in the kernel). Only a filter the kernel cannot run makes a copy: the
    /// frame is assembled in `vlan_buf` for it.
    #[inline]
    fn emit_cooked<F: FnMut(&Frame<'_>)>(
        &mut self,
        c: &Cooked,
        h: &libc::tpacket3_hdr,
        sll: &libc::sockaddr_ll,
        data: &[u8],
        sink: &mut F,
    ) {
        if sll.sll_pkttype == libc::PACKET_OUTGOING && sll.sll_ifindex == c.lo_ifindex {
            return;
        }
        let snap = self.snaplen as usize;
        let hdr = cooked::sll_header(sll);
        let mut kept = data;
        if c.user_filter {
            // vlan_buf holds a block + a header; `data` lies in a block.
            let len = SLL_HDR_LEN + data.len();
            self.vlan_buf[..SLL_HDR_LEN].copy_from_slice(&hdr);
            self.vlan_buf[SLL_HDR_LEN..len].copy_from_slice(data);
            // The kernel's length for the filter: the network-layer bytes.
            let keep = self.filter.run(&self.vlan_buf[..len], h.tp_len) as usize;
            if keep == 0 {
                *self.vlan_filtered += 1;
                return;
            }
            kept = &data[..data.len().min(keep)];
        }
        let frame = |hdr: &[u8], sink: &mut F| {
            let n = kept.len().min(snap - hdr.len());
            sink(&Frame {
                ts_sec: h.tp_sec,
                ts_usec: h.tp_nsec / 1000,
                parts: &[hdr, &kept[..n]],
                wire_len: h.tp_len + hdr.len() as u32,
            });
        };
        // libpcap puts the tag back when the captured bytes reach its
        // offset (a quirk: it compares the data, not the header, with 14).
        match vlan_tag(h).filter(|_| data.len() >= SLL_PROTOCOL_OFF) {
            Some((tpid, tci)) => frame(&cooked::with_vlan(&hdr, tpid, tci), sink),
            None => frame(&hdr, sink),
        }
    }

    /// Hands one frame to the sink: snap length applied, VLAN tag put back
    /// (and the filter run on the tagged frame, see the module doc).
    #[inline]
    fn emit<F: FnMut(&Frame<'_>)>(&mut self, h: &libc::tpacket3_hdr, data: &[u8], sink: &mut F) {
        let snap = self.snaplen as usize;
        let ts_sec = h.tp_sec;
        let ts_usec = h.tp_nsec / 1000;
        let tag = vlan_tag(h).filter(|_| data.len() >= 12);
        if let Some((tpid, tci)) = tag {
            // The NIC (or veth) took the 802.1Q tag out of the frame; put it
            // back so the sensor sees the frame as it was on the wire.
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
                *self.vlan_filtered += 1;
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
}

impl AfPacket {
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
        // A link that went down is checked for having been deleted.
        let timeout = match self.down_since {
            Some(_) => timeout.min(DOWN_CHECK_INTERVAL),
            None => timeout,
        };
        // Rounded up to whole ms: a deadline less than 1 ms away is a short
        // sleep, not a spin.
        let ms = timeout.as_micros().div_ceil(1000).min(u64::MAX as u128) as u64;
        sys::poll::poll(&mut pfds, Duration::from_millis(ms))
            .map_err(|e| CaptureError::io("poll on the capture socket", e))?;
        if pfds[1].revents & libc::POLLIN != 0 {
            sys::eventfd::drain(&wake_fd);
        }
        if pfds[0].revents & libc::POLLERR != 0 {
            self.take_socket_error()?;
        }
        if self.down_since.is_some() && self.last_down_check.elapsed() >= DOWN_CHECK_INTERVAL {
            self.last_down_check = Instant::now();
            if !sys::ifreq::ifindex_exists(self.ifindex) {
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
        let err = sys::sockopt::get_int(&self.fd, libc::SOL_SOCKET, libc::SO_ERROR)
            .map_err(|e| CaptureError::io("SO_ERROR", e))?;
        match err {
            0 => Ok(()),
            // `any` is bound to no interface: one going down or away is not
            // its end (the kernel does not report it there anyway).
            libc::ENODEV | libc::ENXIO | libc::ENETDOWN if self.cooked.is_some() => {
                log::debug!("capture on any: {}", io::Error::from_raw_os_error(err));
                Ok(())
            }
            libc::ENODEV | libc::ENXIO => Err(CaptureError::Vanished(self.ifname.clone())),
            libc::ENETDOWN => {
                if !sys::ifreq::ifindex_exists(self.ifindex) {
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
        sys::sockopt::getsockopt(&self.fd, libc::SOL_PACKET, libc::PACKET_STATISTICS)
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

    fn caught_up(&self) -> bool {
        // The next block is still the kernel's: every retired one was read.
        self.block_status(self.cur).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0
    }

    fn set_filter(&mut self, filter: &Program) -> Result<(), CaptureError> {
        // SO_ATTACH_FILTER swaps the program atomically in the kernel; tagged
        // frames already in the ring are judged by the new program too.
        let program = self.kernel_program(filter.insns());
        attach_filter(&self.fd, &with_direction(self.direction, program))
            .map_err(|e| CaptureError::io("SO_ATTACH_FILTER", e))?;
        self.filter = filter.clone();
        Ok(())
    }

    fn stats(&mut self) -> SourceStats {
        match self.read_kernel_stats() {
            Ok(st) => self.kernel_drops += u64::from(st.tp_drops),
            Err(e) => log::debug!("PACKET_STATISTICS on {}: {e}", self.ifname),
        }
        SourceStats {
            kernel_drops: self.kernel_drops,
            ..SourceStats::default()
        }
    }
}

/// The user-space copy of the filter, for tagged frames.
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

/// `SKF_AD_OFF + SKF_AD_PKTTYPE`: the frame's packet type (`skb->pkt_type`,
/// what the ring header's `sll_pkttype` says).
const LD_PKTTYPE: u32 = 0xffff_f000 + 4;
/// `PACKET_OUTGOING`: a frame this host sent; every other type was received.
const PACKET_OUTGOING: u32 = 4;

/// The kernel program `k` (empty: every frame) behind a direction test:
/// inbound-only rejects `PACKET_OUTGOING`, outbound-only everything else,
/// as libpcap's `linux_check_direction`. Both directions: `k` unchanged.
fn with_direction(direction: Direction, k: Vec<Insn>) -> Vec<Insn> {
    let (jt, jf) = match direction {
        Direction::Both => return k,
        // Outgoing: to `ret #0`; else past it.
        Direction::In => (0, 1),
        Direction::Out => (1, 0),
    };
    let mut p = Vec::with_capacity(k.len().max(1) + 3);
    p.push(Insn::new(0x20, 0, 0, LD_PKTTYPE)); // ld pkttype
    p.push(Insn::new(0x15, jt, jf, PACKET_OUTGOING)); // jeq #PACKET_OUTGOING
    p.push(Insn::new(0x06, 0, 0, 0)); // ret #0: the other direction
    if k.is_empty() {
        p.push(Insn::new(0x06, 0, 0, u32::MAX)); // ret #-1
    } else {
        p.extend(k);
    }
    p
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
    sys::sockopt::setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_timeout_leaves_room_for_the_timer_and_the_send() {
        let ms = Duration::from_millis;
        // The default bound: 10 ms of margin.
        assert_eq!(block_timeout(ms(100)), ms(90));
        assert_eq!(block_timeout(ms(1000)), ms(990));
        // Short bounds keep four fifths of themselves.
        assert_eq!(block_timeout(ms(50)), ms(40));
        assert_eq!(block_timeout(ms(10)), ms(8));
        // Never below the kernel's 1 ms unit, never 0 (0 means "pick one").
        assert_eq!(block_timeout(ms(1)), ms(1));
        assert_eq!(block_timeout(Duration::ZERO), ms(1));
    }

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

    /// One frame through `emit_cooked`: (bytes, wire length) per frame given.
    fn cooked_frames(
        filter: &Program,
        user_filter: bool,
        snaplen: u32,
        h: &libc::tpacket3_hdr,
        sll: &libc::sockaddr_ll,
        data: &[u8],
    ) -> Vec<(Vec<u8>, u32, usize)> {
        let mut buf = vec![0u8; 4096];
        let mut filtered = 0;
        let mut t = Tagged {
            snaplen,
            vlan_buf: &mut buf,
            filter,
            vlan_filtered: &mut filtered,
        };
        let c = Cooked {
            lo_ifindex: 1,
            user_filter,
        };
        let mut out = Vec::new();
        t.emit_cooked(&c, h, sll, data, &mut |f: &Frame<'_>| {
            out.push((f.to_vec(), f.wire_len, f.parts.len()))
        });
        out
    }

    fn hdr() -> libc::tpacket3_hdr {
        libc::tpacket3_hdr {
            tp_next_offset: 0,
            tp_sec: 0,
            tp_nsec: 0,
            tp_snaplen: 0,
            tp_len: 0,
            tp_status: 0,
            tp_mac: 0,
            tp_net: 0,
            hv1: libc::tpacket_hdr_variant1 {
                tp_rxhash: 0,
                tp_vlan_tci: 0,
                tp_vlan_tpid: 0,
                tp_padding: 0,
            },
            tp_padding: [0; 8],
        }
    }

    fn ipv4_udp(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p
    }

    #[test]
    fn cooked_frames_get_the_sll_header_as_a_piece_and_libpcaps_lengths() {
        let mut h = hdr();
        let mut sll: libc::sockaddr_ll = sys::sockopt::zeroed();
        sll.sll_ifindex = 2;
        sll.sll_hatype = 1;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        sll.sll_protocol = 0x0800u16.to_be();
        let data = ipv4_udp(100);
        h.tp_len = 100;
        h.tp_snaplen = 100;
        let all = Program::accept_all();
        let got = cooked_frames(&all, false, 65535, &h, &sll, &data);
        assert_eq!(got.len(), 1);
        let (bytes, wire, pieces) = &got[0];
        assert_eq!(*pieces, 2, "header as its own gather piece");
        assert_eq!(&bytes[..16], &cooked::sll_header(&sll));
        assert_eq!(&bytes[16..], &data[..]);
        assert_eq!(*wire, 116);
        // The snap length cuts header and data together.
        let got = cooked_frames(&all, false, 50, &h, &sll, &data);
        assert_eq!(got[0].0.len(), 50);
        assert_eq!(got[0].1, 116);
        // Loopback's outgoing copy is dropped; other interfaces' kept.
        sll.sll_pkttype = libc::PACKET_OUTGOING;
        sll.sll_ifindex = 1;
        assert!(cooked_frames(&all, false, 65535, &h, &sll, &data).is_empty());
        sll.sll_ifindex = 2;
        assert_eq!(cooked_frames(&all, false, 65535, &h, &sll, &data).len(), 1);
    }

    #[test]
    fn cooked_frames_are_judged_as_libpcap_judges_them_and_get_their_tag_back() {
        let mut h = hdr();
        let mut sll: libc::sockaddr_ll = sys::sockopt::zeroed();
        sll.sll_ifindex = 2;
        sll.sll_hatype = 1;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        sll.sll_protocol = 0x0800u16.to_be();
        let data = ipv4_udp(100);
        h.tp_len = 100;
        // The SLL header's address (bytes 6..12) is only seen in user space.
        let from_7 = crate::filter::compile(113, "ether[11] == 7").unwrap();
        assert!(cooked::kernel_program(from_7.insns()).is_none());
        let got = cooked_frames(&from_7, true, 65535, &h, &sll, &data);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.len(), 116);
        sll.sll_addr[5] = 8;
        assert!(cooked_frames(&from_7, true, 65535, &h, &sll, &data).is_empty());
        // A VLAN tag goes back before the protocol, after the filter judged
        // the frame as the kernel sees it (protocol IPv4, no tag), as libpcap.
        sll.sll_addr[5] = 7;
        h.tp_status = libc::TP_STATUS_VLAN_VALID;
        h.hv1.tp_vlan_tci = 10;
        let udp = crate::filter::compile(113, "udp").unwrap();
        for (prog, user) in [(&udp, false), (&udp, true), (&from_7, true)] {
            let got = cooked_frames(prog, user, 65535, &h, &sll, &data);
            assert_eq!(got.len(), 1);
            let (bytes, wire, pieces) = &got[0];
            assert_eq!(*pieces, 2, "tagged header as its own piece too");
            assert_eq!(&bytes[14..20], &[0x81, 0x00, 0x00, 0x0a, 0x08, 0x00]);
            assert_eq!(&bytes[20..], &data[..]);
            assert_eq!(*wire, 120);
        }
        // The snap length counts the tag.
        let got = cooked_frames(&udp, false, 60, &h, &sll, &data);
        assert_eq!(got[0].0.len(), 60);
        assert_eq!(&got[0].0[20..], &data[..40]);
        // The filter's verdict cuts the data (it does in the kernel).
        let short = crate::filter::compile(113, "udp").unwrap();
        let short = rpcap::bpf::and_then(short.insns(), &[Insn::new(0x06, 0, 0, 30)]).unwrap();
        let got = cooked_frames(&short, true, 65535, &h, &sll, &data);
        assert_eq!(got[0].0.len(), 20 + 30);
    }

    /// Frames of UDP datagrams to `port` on lo seen by a capture of `direction`.
    fn lo_frames(direction: Direction, port: u16) -> Option<usize> {
        let filter =
            rpcap::bpf::libpcap::compile_capture(Some(&format!("udp port {port}")), 1, 200)
                .unwrap();
        let req = Request {
            ifname: "lo".into(),
            backend: crate::settings::Backend::AfPacket,
            settings: Default::default(),
            own: None,
            snaplen: 200,
            promisc: false,
            direction,
            latency: Duration::from_millis(10),
            filter,
        };
        let mut cap = match AfPacket::open(&req) {
            Ok(c) => c,
            // Not root: nothing to learn here (the e2e tests cover it).
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return None,
            Err(e) => panic!("{e}"),
        };
        let rx = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..3 {
            tx.send_to(b"direction", rx.local_addr().unwrap()).unwrap();
        }
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            cap.poll(Duration::from_millis(20), &mut |_: &Frame<'_>| n += 1)
                .unwrap();
        }
        Some(n)
    }

    #[test]
    fn direction_keeps_the_frames_libpcap_keeps() {
        // On lo every frame is seen twice: sent (PACKET_OUTGOING) and
        // received (PACKET_HOST). Ports of their own: tests run in parallel.
        let Some(both) = lo_frames(Direction::Both, 39_571) else {
            return;
        };
        assert_eq!(both, 6);
        assert_eq!(lo_frames(Direction::In, 39_572), Some(3));
        assert_eq!(lo_frames(Direction::Out, 39_573), Some(3));
    }

    #[test]
    fn unknown_interface_is_an_error_not_a_panic() {
        let req = Request {
            ifname: "no-such-if0".into(),
            backend: crate::settings::Backend::AfPacket,
            settings: std::sync::Arc::new(crate::settings::CaptureSettings {
                ring_size: 0,
                ..Default::default()
            }),
            own: None,
            snaplen: 100,
            promisc: false,
            direction: Direction::Both,
            latency: Duration::from_millis(10),
            filter: Program::accept_all(),
        };
        assert!(AfPacket::open(&req).is_err());
        let req = Request {
            ifname: "bad\0name".into(),
            ..req
        };
        assert!(AfPacket::open(&req).is_err());
    }
}
