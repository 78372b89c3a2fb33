//! Cuts a TCP byte stream into whole RPCAP messages (control connection, and
//! the TCP data channel where PACKET messages are streamed).
//!
//! CONTRACT (skeleton): feed arbitrary chunks (one byte at a time included);
//! `next` yields each whole message as its header and a payload slice borrowed
//! from the decoder, without allocating per message once the buffer has grown.
//! A `plen` above the limit is a fatal error: the connection must be closed,
//! since its framing can no longer be trusted.

use crate::header::Header;

/// The stream carried a message longer than allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message of {plen} bytes (type {msg_type:#04x}) exceeds the limit of {max}")]
pub struct TooLong {
    pub msg_type: u8,
    pub plen: u32,
    pub max: u32,
}

/// Incremental message framer.
#[derive(Debug)]
pub struct StreamDecoder {
    max_plen: u32,
}

impl StreamDecoder {
    /// A decoder that refuses payloads over `max_plen` bytes
    /// ([`crate::header::MAX_CONTROL_PLEN`] for control connections).
    pub fn new(max_plen: u32) -> StreamDecoder {
        StreamDecoder { max_plen }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        let _ = data;
        todo!()
    }

    /// The next whole message, if one has fully arrived.
    pub fn next(&mut self) -> Result<Option<(Header, &[u8])>, TooLong> {
        let _ = self.max_plen;
        todo!()
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        todo!()
    }
}
