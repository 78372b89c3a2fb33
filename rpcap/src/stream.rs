//! Cuts a TCP byte stream into whole RPCAP messages (control connection, and
//! the TCP data channel where PACKET messages are streamed).
//!
//! Feed it arbitrary chunks (one byte at a time included);
//! `next` yields each whole message as its header and a payload slice borrowed
//! from the decoder, without allocating per message once the buffer has grown.
//! A `plen` above the limit is a fatal error: the connection must be closed,
//! since its framing can no longer be trusted.

use crate::header::{Header, HEADER_LEN};

/// The stream carried a message longer than allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message of {plen} bytes (type {msg_type:#04x}) exceeds the limit of {max}")]
pub struct TooLong {
    pub msg_type: u8,
    pub plen: u32,
    pub max: u32,
}

/// Incremental message framer.
///
/// Bytes live in one buffer: `buf[start..]` is what has not been returned yet.
/// `feed` moves that tail to the front before appending, so in steady state
/// the buffer keeps its allocation and never grows beyond the largest message
/// plus one read.
#[derive(Debug)]
pub struct StreamDecoder {
    max_plen: u32,
    buf: Vec<u8>,
    start: usize,
    /// Set once a message was too long: the stream stays failed.
    failed: Option<TooLong>,
}

impl StreamDecoder {
    /// A decoder that refuses payloads over `max_plen` bytes
    /// ([`crate::header::MAX_CONTROL_PLEN`] for control connections).
    pub fn new(max_plen: u32) -> StreamDecoder {
        StreamDecoder {
            max_plen,
            buf: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.start > 0 {
            // Drop what `next` has already returned (borrows of it have ended).
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, if one has fully arrived. After a `TooLong`
    /// every call returns the same error.
    // Not an Iterator: the payload borrows the decoder (a lending iterator).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(Header, &[u8])>, TooLong> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let pending = &self.buf[self.start..];
        let Some(header) = Header::parse(pending) else {
            return Ok(None);
        };
        if header.plen > self.max_plen {
            let e = TooLong {
                msg_type: header.msg_type,
                plen: header.plen,
                max: self.max_plen,
            };
            self.failed = Some(e.clone());
            return Err(e);
        }
        // plen ≤ max_plen ≤ u32::MAX, so this fits a usize on 32- and 64-bit targets.
        let total = HEADER_LEN + header.plen as usize;
        if pending.len() < total {
            // Make room for the rest of this message once, not read by read.
            self.buf.reserve(total - pending.len());
            return Ok(None);
        }
        let payload = self.start + HEADER_LEN..self.start + total;
        self.start += total;
        Ok(Some((header, &self.buf[payload])))
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes the internal buffer holds without reallocating.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}
