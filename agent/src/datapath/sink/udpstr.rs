//! udpstr: records packed into MTU-sized datagrams with a sequence number,
//! sent in batches (UDP GSO where the kernel takes it).

use std::net::SocketAddr;

use rpcap::udpstr::{Batch, Framer};
use rpcap::PktHdr;

use super::{Counts, Sink};
use crate::datapath::loss::LossTracker;
use crate::datapath::sender::{Backpressure, TcpClosed, UdpSender};
use crate::datapath::StartError;

pub(crate) struct UdpStrSink {
    framer: Framer,
    batch: Batch,
    /// `None`: dry run (frame, count, send nothing).
    udp: Option<UdpSender>,
    loss: LossTracker,
}

impl UdpStrSink {
    /// Datagrams of `size` bytes to `dest` for packets of up to `snaplen`
    /// bytes; `extra_slots` datagram slots per batch beyond one record's.
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
        let framer = Framer::new(size)?;
        let slots = Batch::min_slots(size, snaplen) + extra_slots.max(1);
        let batch = Batch::new(size, slots);
        let udp = if dry_run {
            None
        } else {
            let gso = gso.then_some(size);
            Some(UdpSender::connect(dest, sndbuf, slots, bp, gso).map_err(StartError::Socket)?)
        };
        Ok(UdpStrSink {
            framer,
            batch,
            udp,
            loss: LossTracker::default(),
        })
    }
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
        let n = self.batch.ready();
        if n == 0 {
            return Ok(());
        }
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
            c.datagrams_dropped += r.dropped as u64;
            c.refused += r.refused as u64;
        }
        self.batch.consume();
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
