//! Plain UDP (`-t 0`): one PACKET message per datagram, sent in batches;
//! a datagram over the path MTU leaves as IP fragments, as the references'.

use std::net::SocketAddr;

use rpcap::PktHdr;

use super::{push_message, Counts, Sink};
use crate::datapath::sender::{Backpressure, Fragments, MsgArena, TcpClosed, UdpSender};
use crate::datapath::StartError;

/// Messages per batch.
const MSGS: usize = 256;

pub(crate) struct PlainUdpSink {
    arena: MsgArena,
    /// `None`: dry run.
    udp: Option<UdpSender>,
}

impl PlainUdpSink {
    /// Datagrams to `dest` for packets of up to `snaplen` bytes.
    pub fn open(
        dest: SocketAddr,
        snaplen: usize,
        sndbuf: usize,
        bp: Backpressure,
        dry_run: bool,
    ) -> Result<PlainUdpSink, StartError> {
        let max_msg = rpcap::plain::PREFIX_LEN + snaplen;
        let arena = MsgArena::new((256 * 1024).max(2 * max_msg), MSGS);
        let udp = if dry_run {
            None
        } else {
            // Fragments allowed: a packet is one datagram by definition, and
            // the references let IP fragment the large ones (IPv6 too: the
            // sending host fragments). Sensors reassemble.
            let udp = UdpSender::connect(dest, sndbuf, MSGS, bp, Fragments::Allow);
            Some(udp.map_err(StartError::Socket)?)
        };
        Ok(PlainUdpSink { arena, udp })
    }
}

impl Sink for PlainUdpSink {
    #[inline]
    fn push(&mut self, hdr: &PktHdr, parts: &[&[u8]], c: &mut Counts) -> Result<(), TcpClosed> {
        push_message(self, |s| &mut s.arena, hdr, parts, c)
    }

    fn send(&mut self, c: &mut Counts) -> Result<(), TcpClosed> {
        let n = self.arena.count();
        if n == 0 {
            return Ok(());
        }
        if let Some(udp) = &mut self.udp {
            let a = &self.arena;
            let r = udp.send(n, |i| a.msg(i), |_| {});
            c.send_dropped += r.dropped as u64;
            c.datagrams_sent += r.sent as u64;
            c.bytes_sent += r.bytes as u64;
            c.datagrams_dropped += r.dropped as u64;
            c.refused += r.refused as u64;
        }
        self.arena.clear();
        Ok(())
    }
}
