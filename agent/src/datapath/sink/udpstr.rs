//! udpstr: records packed into datagrams sized to the path MTU, each with a
//! sequence number, sent in batches (UDP GSO where the kernel takes it).
//!
//! Sizing: the datagram size is the configured one (`-t`/`UdpStrSize`,
//! default 1472) capped by what the path to the sensor takes unfragmented —
//! its MTU minus the IP header of the address family and the UDP header
//! (1472 over IPv4 and 1452 over IPv6 on a 1500-byte link, 1232 over IPv6
//! at the minimum 1280). A jumbo path never grows the default: bigger
//! datagrams only when the operator asks for them. The socket never
//! fragments (IP_PMTUDISC_DO): when the path MTU falls mid-capture (ICMP
//! "too big", a route through a tunnel) the send fails with EMSGSIZE, the
//! oversized datagrams are dropped and counted (`ifdrop`), and the framer
//! goes on at the new size with the same seqno: one WARN per change, never
//! one per datagram.
//!
//! With GSO the framer cuts a stream of same-length records at whole
//! records ([`Framer::aligning`]), so that small packets go out in long
//! runs of one size rather than a GSO send every ~5 datagrams.

use std::net::SocketAddr;

use rpcap::udpstr::{Batch, Framer, DEFAULT_DGRAM_SIZE, MIN_DGRAM_SIZE};
use rpcap::PktHdr;

use super::{Counts, Sink};
use crate::datapath::loss::LossTracker;
use crate::datapath::sender::{Backpressure, Fragments, TcpClosed, UdpSender};
use crate::datapath::StartError;

pub(crate) struct UdpStrSink {
    framer: Framer,
    batch: Batch,
    /// `None`: dry run (frame, count, send nothing).
    udp: Option<UdpSender>,
    loss: LossTracker,
    dest: SocketAddr,
    /// What sizes a batch after a resize.
    snaplen: usize,
    extra_slots: usize,
    /// Whether to group datagrams with UDP GSO.
    gso: bool,
    /// An EMSGSIZE with no smaller MTU to go to was logged.
    warned_stuck: bool,
}

/// The datagram size for a configured `size` on a path taking UDP payloads
/// of up to `path` bytes.
fn fit(size: usize, path: usize) -> usize {
    size.min(path).max(MIN_DGRAM_SIZE)
}

/// Datagram slots of a batch of `size`-byte datagrams.
fn slots(size: usize, snaplen: usize, extra_slots: usize) -> usize {
    Batch::min_slots(size, snaplen) + extra_slots.max(1)
}

impl UdpStrSink {
    /// Datagrams of `size` bytes (or less: see the module's sizing) to
    /// `dest` for packets of up to `snaplen` bytes; `extra_slots` datagram
    /// slots per batch beyond one record's.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dest: SocketAddr,
        size: usize,
        snaplen: usize,
        extra_slots: usize,
        sndbuf: usize,
        bp: Backpressure,
        gso: bool,
        dry_run: bool,
    ) -> Result<UdpStrSink, StartError> {
        // Checks the configured size (the framer's range) before the socket.
        Framer::new(size)?;
        let (size, udp) = if dry_run {
            (size, None)
        } else {
            let mut udp = UdpSender::connect(dest, sndbuf, 1, bp, Fragments::Never)
                .map_err(StartError::Socket)?;
            let size = initial_size(&udp, dest, size);
            udp.reserve(slots(size, snaplen, extra_slots));
            udp.set_gso(gso.then_some(size));
            (size, Some(udp))
        };
        Ok(UdpStrSink {
            // Aligned cuts only pay off when runs go out as GSO sends.
            framer: Framer::new(size)?.aligning(gso),
            batch: Batch::new(size, slots(size, snaplen, extra_slots)),
            udp,
            loss: LossTracker::default(),
            dest,
            snaplen,
            extra_slots,
            gso,
            warned_stuck: false,
        })
    }

    /// Sends the complete datagrams; returns the UDP payload the path takes
    /// when some were too large for it.
    fn send_ready(&mut self, c: &mut Counts) -> Option<usize> {
        let n = self.batch.ready();
        if n == 0 {
            return None;
        }
        let mut path = None;
        if let Some(udp) = &mut self.udp {
            let (b, loss) = (&self.batch, &mut self.loss);
            let mut lost = 0;
            let r = udp.send(
                n,
                |i| b.datagram(i),
                |i| lost += loss.lost(|j| b.datagram(j), i),
            );
            loss.end_batch(n, |i| b.datagram(i));
            c.send_dropped += lost;
            c.datagrams_sent += r.sent as u64;
            c.bytes_sent += r.bytes as u64;
            c.datagrams_dropped += r.dropped as u64;
            c.refused += r.refused as u64;
            path = r.path_payload;
        }
        self.batch.consume();
        path
    }

    /// The path takes at most `path` bytes of UDP payload now: frame
    /// smaller datagrams from here on (same seqno sequence).
    fn resize(&mut self, path: usize, lost_before: u64, c: &mut Counts) {
        let old = self.framer.dgram_size();
        let new = fit(old, path);
        if new >= old {
            // EMSGSIZE, yet the MTU reads as large as the datagrams (a
            // route changing under us): the drops are counted; say it once.
            if !self.warned_stuck {
                self.warned_stuck = true;
                log::warn!(
                    "udpstr to {}: datagrams of {old} bytes refused as too large \
                     although the path takes {path}; dropped and counted",
                    self.dest
                );
            }
            return;
        }
        // The partial datagram was framed at the old size: it goes out as it
        // is (it may fit); if not, it is dropped and counted like the rest.
        self.framer.flush(&mut self.batch);
        self.send_ready(c);
        let Ok(framer) = self.framer.resized(new) else {
            return; // `fit` keeps it in range
        };
        let slots = slots(new, self.snaplen, self.extra_slots);
        self.framer = framer;
        self.batch = Batch::new(new, slots);
        if let Some(udp) = &mut self.udp {
            udp.reserve(slots);
            udp.set_gso(self.gso.then_some(new));
        }
        log::warn!(
            "udpstr to {}: the path MTU fell; datagrams are now {new} bytes (were {old}); \
             packets lost in the oversized datagrams: {}",
            self.dest,
            c.send_dropped - lost_before
        );
    }
}

/// The datagram size for configured `size` on the path `udp` is connected
/// to, logged when it differs: a WARN for a size the operator chose, INFO
/// for the default (1472 is IPv4's; an IPv6 path takes 1452).
fn initial_size(udp: &UdpSender, dest: SocketAddr, size: usize) -> usize {
    let path = match udp.path_payload() {
        Ok(p) => p,
        Err(e) => {
            log::warn!(
                "udpstr to {dest}: cannot read the path MTU ({e}); datagrams of {size} bytes"
            );
            return size;
        }
    };
    let fitted = fit(size, path);
    if fitted < size && size == DEFAULT_DGRAM_SIZE {
        log::info!(
            "udpstr to {dest}: datagrams of {fitted} bytes (the path takes {path}-byte UDP payloads)"
        );
    } else if fitted < size {
        log::warn!(
            "udpstr to {dest}: UdpStrSize {size} is over the path MTU; datagrams clamped to \
             {fitted} bytes (the path takes {path}-byte UDP payloads), never fragmented"
        );
    }
    fitted
}

impl Sink for UdpStrSink {
    #[inline]
    fn push(&mut self, hdr: &PktHdr, parts: &[&[u8]], c: &mut Counts) -> Result<(), TcpClosed> {
        if self.framer.push_parts(&mut self.batch, hdr, parts).is_ok() {
            return Ok(());
        }
        self.send(c)?;
        if self.framer.push_parts(&mut self.batch, hdr, parts).is_ok() {
            return Ok(());
        }
        // The partial datagram left after the send takes the room the
        // record needs: close it and try on an empty batch.
        self.framer.flush(&mut self.batch);
        self.send(c)?;
        if self.framer.push_parts(&mut self.batch, hdr, parts).is_err() {
            // Cannot happen with a batch of `Batch::min_slots`; count it anyway.
            c.send_dropped += 1;
        }
        Ok(())
    }

    fn send(&mut self, c: &mut Counts) -> Result<(), TcpClosed> {
        let lost_before = c.send_dropped;
        if let Some(path) = self.send_ready(c) {
            self.resize(path, lost_before, c);
        }
        Ok(())
    }

    fn has_partial(&self) -> bool {
        self.framer.has_partial(&self.batch)
    }

    fn flush(&mut self, c: &mut Counts) -> Result<(), TcpClosed> {
        self.framer.flush(&mut self.batch);
        self.send(c)
    }

    fn gso(&self) -> Option<bool> {
        // GSO can be turned off on the way (a path that refuses it).
        self.udp.as_ref().map(|u| u.gso().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_fit_the_path_and_never_grow_past_the_configured_size() {
        // IPv4 and IPv6 on a 1500-byte link, IPv6's minimum MTU.
        assert_eq!(fit(DEFAULT_DGRAM_SIZE, 1500 - 28), 1472);
        assert_eq!(fit(DEFAULT_DGRAM_SIZE, 1500 - 48), 1452);
        assert_eq!(fit(DEFAULT_DGRAM_SIZE, 1280 - 48), 1232);
        // Jumbo: the default stays; an explicit size is clamped.
        assert_eq!(fit(DEFAULT_DGRAM_SIZE, 9000 - 48), 1472);
        assert_eq!(fit(9000, 9000 - 48), 8952);
        assert_eq!(fit(9000, 1500 - 28), 1472);
        // Never below the framer's minimum.
        assert_eq!(fit(1472, 0), MIN_DGRAM_SIZE);
    }
}
