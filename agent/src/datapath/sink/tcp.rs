//! Plain PACKET messages streamed over the TCP data connection (or the
//! relay of a TLS one), written once per batch from a bounded buffer.

use std::time::Duration;

use rpcap::PktHdr;

use super::{push_message, Counts, Sink};
use crate::datapath::sender::{Backpressure, DataStream, MsgArena, TcpClosed, TcpSender};
use crate::datapath::StartError;

/// How long the end of a capture waits for a slow TCP peer to take the rest.
const TCP_DRAIN: Duration = Duration::from_secs(1);

pub(crate) struct TcpSink {
    arena: MsgArena,
    /// `None`: dry run.
    tcp: Option<TcpSender>,
}

impl TcpSink {
    /// Messages on `stream` for packets of up to `snaplen` bytes.
    pub fn open(
        stream: &DataStream,
        snaplen: usize,
        bp: Backpressure,
        dry_run: bool,
    ) -> Result<TcpSink, StartError> {
        let max_msg = rpcap::plain::PREFIX_LEN + snaplen;
        let bytes = (1 << 20).max(2 * max_msg);
        let arena = MsgArena::new(bytes, bytes / rpcap::plain::PREFIX_LEN);
        let tcp = if dry_run {
            None
        } else {
            let s = stream.try_clone().map_err(StartError::Socket)?;
            Some(TcpSender::new(s, 0, bp).map_err(StartError::Socket)?)
        };
        Ok(TcpSink { arena, tcp })
    }
}

impl Sink for TcpSink {
    #[inline]
    fn push(&mut self, hdr: &PktHdr, parts: &[&[u8]], c: &mut Counts) -> Result<(), TcpClosed> {
        push_message(self, |s| &mut s.arena, hdr, parts, c)
    }

    fn send(&mut self, c: &mut Counts) -> Result<(), TcpClosed> {
        if self.arena.is_empty() {
            return Ok(());
        }
        match &mut self.tcp {
            Some(tcp) => {
                let before = tcp.written();
                let written = tcp.write(&mut self.arena);
                c.bytes_sent += tcp.written() - before;
                if let Err(e) = written {
                    c.send_dropped += self.arena.count() as u64;
                    self.arena.clear();
                    return Err(e);
                }
            }
            None => self.arena.clear(),
        }
        Ok(())
    }

    fn finish(&mut self, c: &mut Counts) -> Result<(), TcpClosed> {
        let flushed = self.flush(c);
        let Some(tcp) = &mut self.tcp else {
            return flushed;
        };
        let before = tcp.written();
        let drained = tcp.drain(&mut self.arena, TCP_DRAIN);
        c.bytes_sent += tcp.written() - before;
        c.send_dropped += self.arena.count() as u64;
        self.arena.clear();
        flushed.and(drained.map(|_| ()))
    }

    fn peer_closed(&self) -> Option<String> {
        self.tcp
            .as_ref()?
            .peer_closed()
            .map(|e| format!("data connection closed: {e}"))
    }
}
