//! Tunnel export: one datagram per captured Ethernet frame, in VXLAN (a
//! connected UDP socket) or GRE/TEB, ERSPAN II/III (a connected raw IP
//! socket of protocol 47); the kernel adds the outer IP (and UDP) header.
//! Headers come from [`crate::tunnel::encap`]; sends are batched with
//! `sendmmsg` through the same [`UdpSender`] as udpstr and plain UDP.
//!
//! Never fragmented (IP_PMTUDISC_DO, as udpstr): a frame over what the
//! path MTU leaves for it is cut with the T bit set (ERSPAN), or dropped and
//! counted in `too_big` (VXLAN, GRE: their receivers could not tell a cut
//! frame). The room is read from the socket at start and again when a send
//! fails with EMSGSIZE (ICMP "too big" lowered the path MTU): those
//! datagrams are lost and counted (`send_dropped`), the next frames fit.

use std::net::SocketAddr;

use rpcap::PktHdr;

use super::{Counts, Sink};
use crate::datapath::sender::{Backpressure, Fragments, MsgArena, TcpClosed, UdpSender};
use crate::datapath::StartError;
use crate::tunnel::encap::{Encap, Fit, FrameInfo, Kind};
use crate::tunnel::IPPROTO_GRE;

/// Datagrams per batch (one `sendmmsg`).
const MSGS: usize = 256;
/// Arena bytes: a batch of full-size datagrams on a 1500-byte path.
const ARENA: usize = 512 * 1024;
/// The room assumed when the path MTU cannot be read (dry run, no route
/// yet): IPv6's minimum MTU minus its header and UDP's.
const FALLBACK_ROOM: usize = 1280 - 48;

pub(crate) struct TunnelSink {
    encap: Encap,
    arena: MsgArena,
    /// `None`: dry run (encode, count, send nothing).
    sock: Option<UdpSender>,
    /// Largest datagram the path takes (UDP payload or IP payload).
    room: usize,
    dest: SocketAddr,
}

impl TunnelSink {
    /// Exports to `dest` (its port is VXLAN's; GRE ignores it).
    pub fn open(
        kind: Kind,
        dest: SocketAddr,
        sndbuf: usize,
        bp: Backpressure,
        dry_run: bool,
    ) -> Result<TunnelSink, StartError> {
        let sock = if dry_run {
            None
        } else if kind.is_udp() {
            let s = UdpSender::connect(dest, sndbuf, MSGS, bp, Fragments::Never);
            Some(s.map_err(StartError::Socket)?)
        } else {
            let s = UdpSender::connect_raw(dest, i32::from(IPPROTO_GRE), sndbuf, MSGS, bp);
            Some(s.map_err(StartError::Socket)?)
        };
        let room = match sock.as_ref().map(UdpSender::path_payload) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                log::warn!(
                    "{} export to {dest}: cannot read the path MTU ({e})",
                    kind.name()
                );
                FALLBACK_ROOM
            }
            None => FALLBACK_ROOM,
        };
        log::info!(
            "{} export to {dest}: datagrams of up to {room} bytes, frames of up to {} bytes{}",
            kind.name(),
            room.saturating_sub(kind.header_len()),
            if kind.cuts() {
                " (longer ones cut, T bit set)"
            } else {
                " (longer ones dropped and counted)"
            }
        );
        Ok(TunnelSink {
            encap: Encap::new(kind),
            arena: MsgArena::new(ARENA, MSGS),
            sock,
            room,
            dest,
        })
    }

    /// Encodes one frame into the arena; false when the arena is full.
    #[inline]
    fn encode(&mut self, hdr: &PktHdr, parts: &[&[u8]], take: usize) -> bool {
        let info = FrameInfo {
            ts_sec: hdr.ts_sec,
            ts_usec: hdr.ts_usec,
            wire_len: hdr.len,
        };
        let max = self.encap.kind().header_len() + take;
        let encap = &mut self.encap;
        self.arena
            .push_with(max, |out| encap.encode(out, parts, take, &info))
            .is_ok()
    }
}

impl Sink for TunnelSink {
    #[inline]
    fn push(&mut self, hdr: &PktHdr, parts: &[&[u8]], c: &mut Counts) -> Result<(), TcpClosed> {
        let caplen = hdr.caplen as usize;
        let take = match self.encap.fit(caplen, self.room) {
            Fit::Whole => caplen,
            Fit::Cut(n) => {
                c.too_big += 1;
                n
            }
            Fit::TooBig => {
                c.too_big += 1;
                c.send_dropped += 1;
                return Ok(());
            }
        };
        if self.encode(hdr, parts, take) {
            return Ok(());
        }
        self.send(c)?;
        if !self.encode(hdr, parts, take) {
            c.send_dropped += 1;
        }
        Ok(())
    }

    fn send(&mut self, c: &mut Counts) -> Result<(), TcpClosed> {
        let n = self.arena.count();
        if n == 0 {
            return Ok(());
        }
        if let Some(sock) = &mut self.sock {
            let a = &self.arena;
            let r = sock.send(n, |i| a.msg(i), |_| {});
            c.send_dropped += r.dropped as u64;
            c.datagrams_sent += r.sent as u64;
            c.bytes_sent += r.bytes as u64;
            c.datagrams_dropped += r.dropped as u64;
            c.refused += r.refused as u64;
            if let Some(room) = r.path_payload {
                if room != self.room {
                    log::warn!(
                        "{} export to {}: the path MTU changed; datagrams of up to {room} bytes \
                         (were {})",
                        self.encap.kind().name(),
                        self.dest,
                        self.room
                    );
                    self.room = room;
                }
            }
        }
        self.arena.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::encap::parse;

    fn hdr(caplen: usize, len: usize) -> PktHdr {
        PktHdr {
            ts_sec: 1,
            ts_usec: 2,
            caplen: caplen as u32,
            len: len as u32,
            npkt: 1,
        }
    }

    /// VXLAN over a real UDP socket on loopback: one datagram per frame, in
    /// order, header then frame; a frame over the room is counted, not sent.
    #[test]
    fn vxlan_frames_arrive_whole_in_order_and_oversized_ones_are_counted() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let dest = rx.local_addr().unwrap();
        let kind = Kind::Vxlan { vni: 7 };
        let mut s = TunnelSink::open(kind, dest, 0, Backpressure::Wait, false).unwrap();
        s.room = 200; // as if the path MTU were 228
        let mut c = Counts::default();
        let frames: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 60 + usize::from(i)]).collect();
        for f in &frames {
            s.push(&hdr(f.len(), f.len()), &[&f[..30], &f[30..]], &mut c)
                .unwrap();
        }
        let big = vec![9u8; 193];
        s.push(&hdr(big.len(), big.len()), &[&big], &mut c).unwrap();
        s.send(&mut c).unwrap();
        assert_eq!((c.datagrams_sent, c.too_big, c.send_dropped), (5, 1, 1));
        let mut buf = [0u8; 2048];
        for f in &frames {
            let n = rx.recv(&mut buf).unwrap();
            let p = parse::vxlan(&buf[..n]).unwrap();
            assert_eq!(p.kind, kind);
            assert_eq!(p.inner, &f[..]);
        }
    }

    /// ERSPAN cuts instead: the frame goes out with the T bit.
    #[test]
    fn erspan_cuts_to_the_room_with_the_t_bit() {
        let dest: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let kind = Kind::Erspan2 { session: 3 };
        let mut s = TunnelSink::open(kind, dest, 0, Backpressure::Wait, true).unwrap();
        s.room = 100;
        let mut c = Counts::default();
        let f = vec![1u8; 300];
        s.push(&hdr(300, 300), &[&f], &mut c).unwrap();
        assert_eq!((c.too_big, c.send_dropped), (1, 0));
        let p = parse::gre(s.arena.msg(0)).unwrap();
        assert!(p.truncated);
        assert_eq!(p.inner.len(), 100 - 16);
    }
}
