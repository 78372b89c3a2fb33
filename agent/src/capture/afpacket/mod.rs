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
//! Direction (STARTCAP's INBOUND/OUTBOUND, libpcap's `pcap_setdirection`):
//! the kernel filter starts with a test of the frame's packet type
//! ([`with_direction`]), so frames of the other direction never take ring
//! space nor worker time. libpcap's rpcapd drops them in user space by the
//! ring header's `sll_pkttype`; the frames kept are the same.

mod ring;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rpcap::bpf::{Insn, Program};

use self::ring::Ring;
use super::{CaptureError, Direction, Frame, Polled, Request, Source, SourceStats};

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

/// The ring hands a block over at the latest after this: short enough that
/// a quiet link's frames reach the framer well within the read timeout (the
/// framer's own flush then adds at most the read timeout).
fn block_timeout(read_timeout: Duration) -> Duration {
    read_timeout
        .min(Duration::from_millis(20))
        .max(Duration::from_millis(1))
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
    /// here (a whole block's worth, so the filter sees every byte).
    vlan_buf: Vec<u8>,
    /// The capture's filter, run on tagged frames once the tag is back.
    filter: Program,
    /// Applied in the kernel filter (see [`with_direction`]).
    direction: Direction,
    /// Tagged frames the filter rejected in user space.
    pub vlan_filtered: u64,
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
    pub fn open(req: &Request) -> Result<AfPacket, io::Error> {
        let ifindex = sys::ifreq::ifindex(&req.ifname)?;
        let geometry = RingGeometry::for_ring(req.settings.ring_size, req.snaplen);

        let fd = sys::socket::socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;

        attach_filter(&fd, &[Insn::new(0x06, 0, 0, 0)])?;
        sys::sockopt::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V3)?;
        let tov_ms = block_timeout(req.read_timeout)
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
            snaplen: req.snaplen,
            kernel_drops: 0,
            vlan_buf: vec![0; geometry.block_size + 4],
            filter: req.filter.clone(),
            direction: req.direction,
            vlan_filtered: 0,
            down_since: None,
            last_down_check: Instant::now(),
            wake: None,
        };

        sys::socket::bind(
            &cap.fd,
            &sys::socket::sockaddr_ll(ifindex, libc::ETH_P_ALL as u16),
        )?;
        if req.promisc {
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
        attach_filter(
            &cap.fd,
            &with_direction(cap.direction, kernel_filter(req.filter.insns())),
        )?;
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

    /// Walks the frames of block `i` (owned by user space) into `sink`.
    fn walk_block<F: FnMut(&Frame<'_>)>(&mut self, i: usize, sink: &mut F) -> usize {
        let mut tagged = Tagged {
            snaplen: self.snaplen,
            vlan_buf: &mut self.vlan_buf,
            filter: &self.filter,
            vlan_filtered: &mut self.vlan_filtered,
        };
        self.ring
            .walk_block(i, |h, data| tagged.emit(h, data, sink))
    }
}

/// What [`Tagged::emit`] needs of the capture while the ring is borrowed.
struct Tagged<'a> {
    snaplen: u32,
    vlan_buf: &'a mut Vec<u8>,
    filter: &'a Program,
    vlan_filtered: &'a mut u64,
}

impl Tagged<'_> {
    /// Hands one frame to the sink: snap length applied, VLAN tag put back
    /// (and the filter run on the tagged frame, see the module doc).
    #[inline]
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

    fn set_filter(&mut self, filter: &Program) -> Result<(), CaptureError> {
        // SO_ATTACH_FILTER swaps the program atomically in the kernel; tagged
        // frames already in the ring are judged by the new program too.
        attach_filter(
            &self.fd,
            &with_direction(self.direction, kernel_filter(filter.insns())),
        )
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
            read_timeout: Duration::from_millis(10),
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
            read_timeout: Duration::from_millis(10),
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
