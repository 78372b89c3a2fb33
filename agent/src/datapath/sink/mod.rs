//! Where a worker's framed packets go: one [`Sink`] per output format, one
//! file each (udpstr datagrams, plain UDP datagrams, plain messages on a TCP
//! stream, tunnel datagrams). A new output is one more file implementing [`Sink`].
//!
//! The worker is generic over its sink as over its source, so the per-packet
//! [`Sink::push`] is a static, inlinable call: no dynamic dispatch, no
//! allocation per packet. Sends happen per batch ([`Sink::send`]).

mod plain_udp;
mod tcp;
mod tunnel;
mod udpstr;

pub(crate) use plain_udp::PlainUdpSink;
pub(crate) use tcp::TcpSink;
pub(crate) use tunnel::TunnelSink;
pub(crate) use udpstr::UdpStrSink;

use rpcap::PktHdr;

use super::sender::{MsgArena, TcpClosed};

/// The worker's sending counters, published once per round.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    /// Framed packets lost in sending (see `Counters::send_dropped`).
    pub send_dropped: u64,
    pub datagrams_sent: u64,
    /// Bytes handed to the kernel: UDP payloads, or the TCP stream's.
    pub bytes_sent: u64,
    pub datagrams_dropped: u64,
    pub refused: u64,
    /// Frames over what the path MTU leaves a tunnel datagram: cut
    /// (ERSPAN, T bit) or dropped (VXLAN, GRE; then also in `send_dropped`).
    pub too_big: u64,
}

/// An output of framed packets.
pub(crate) trait Sink: Send + 'static {
    /// Frames one packet, sending what is complete when out of room; a
    /// packet that still finds no room is counted in `c.send_dropped`.
    fn push(&mut self, hdr: &PktHdr, parts: &[&[u8]], c: &mut Counts) -> Result<(), TcpClosed>;

    /// Sends what is complete.
    fn send(&mut self, c: &mut Counts) -> Result<(), TcpClosed>;

    /// Whether a partly filled datagram waits for the read-timeout flush.
    fn has_partial(&self) -> bool {
        false
    }

    /// Closes a partly filled datagram and sends it (read-timeout flush).
    fn flush(&mut self, c: &mut Counts) -> Result<(), TcpClosed> {
        self.send(c)
    }

    /// End of capture: everything framed goes out (bounded in time).
    fn finish(&mut self, c: &mut Counts) -> Result<(), TcpClosed> {
        self.flush(c)
    }

    /// Why the peer of a stream output is gone, checked at housekeeping.
    fn peer_closed(&self) -> Option<String> {
        None
    }

    /// Whether UDP GSO is in use (`None`: not a GSO-capable output, or dry run).
    fn gso(&self) -> Option<bool> {
        None
    }
}

/// [`Sink::push`] of a sink of whole messages in a [`MsgArena`] (`arena`
/// picks it out of the sink): when the arena is full, what is in it is sent
/// and the push tried once more; a message that still does not fit (a TCP
/// peer not keeping up leaves its unsent tail) is dropped whole, never in
/// part, and counted.
#[inline]
fn push_message<K: Sink>(
    sink: &mut K,
    arena: fn(&mut K) -> &mut MsgArena,
    hdr: &PktHdr,
    parts: &[&[u8]],
    c: &mut Counts,
) -> Result<(), TcpClosed> {
    if arena(sink).push(hdr, parts).is_ok() {
        return Ok(());
    }
    sink.send(c)?;
    if arena(sink).push(hdr, parts).is_err() {
        c.send_dropped += 1;
    }
    Ok(())
}
