//! The byte-stream side of an RPCAP control connection, shared by the client
//! (sensor) and server (agent) sessions. Sans-IO: the driver feeds what it
//! read ([`Codec::feed`]) and takes whole decoded messages out
//! ([`Codec::next`]); messages to send are encoded into one output buffer
//! ([`Codec::send`]) that the driver writes as the socket allows
//! ([`Codec::output`], then [`Codec::consume`] what was written; or
//! [`Codec::write_to`] any `io::Write`, as rustls's `write_tls`).
//!
//! Pipelining: a peer may send several requests before reading a reply. The
//! codec keeps what it has not been asked for, so a session that must wait
//! (e.g. a server holding a failed login's reply) simply stops calling
//! [`Codec::next`] and resumes later, even without new bytes.
//!
//! The output limit is reported, not enforced by dropping: a dropped reply
//! would desynchronise the peer. A driver asks [`Codec::over_limit`] after
//! writing and ends a connection whose peer does not read.

use std::io;

use crate::header::{Header, MAX_CONTROL_PLEN};
use crate::msg::{DecodeError, Message};
use crate::stream::{StreamDecoder, TooLong};

/// Output a control connection may hold for a peer that does not read:
/// far above any burst of replies, small enough to bound a stuck peer.
pub const DEFAULT_OUTPUT_LIMIT: usize = 4 << 20;

/// One whole message as received: its header (a server checks the version
/// and type even when the body is bad) and the decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub header: Header,
    pub message: Result<Message, DecodeError>,
}

/// Decoder of received bytes and buffer of bytes to send, for one connection.
#[derive(Debug)]
pub struct Codec {
    decoder: StreamDecoder,
    /// `out[sent..]` waits to be written.
    out: Vec<u8>,
    sent: usize,
    limit: usize,
}

impl Codec {
    /// A codec refusing payloads over `max_plen` and reporting output over
    /// `output_limit` bytes.
    pub fn new(max_plen: u32, output_limit: usize) -> Codec {
        Codec {
            decoder: StreamDecoder::new(max_plen),
            out: Vec::with_capacity(1024),
            sent: 0,
            limit: output_limit,
        }
    }

    /// The limits of a control connection: [`MAX_CONTROL_PLEN`] and
    /// [`DEFAULT_OUTPUT_LIMIT`].
    pub fn control() -> Codec {
        Codec::new(MAX_CONTROL_PLEN, DEFAULT_OUTPUT_LIMIT)
    }

    /// Appends bytes read from the connection (any chunking).
    pub fn feed(&mut self, data: &[u8]) {
        self.decoder.feed(data);
    }

    /// The next whole message, if one has fully arrived. A message too long
    /// for the limit is fatal and sticky: the framing can no longer be
    /// trusted, so the connection must end.
    // Not an Iterator: the error is not an item, and the stream stays failed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Received>, TooLong> {
        Ok(self.decoder.next()?.map(|(header, payload)| Received {
            header,
            message: Message::decode(&header, payload),
        }))
    }

    /// Bytes received and not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Queues `msg` for sending.
    pub fn send(&mut self, msg: &Message) {
        // Drop what was written once it is at least half the buffer, so the
        // copy is amortised over the writes that made it.
        if self.sent > 0 && self.sent >= self.out.len() / 2 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        msg.encode(&mut self.out);
    }

    /// Bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// Marks the first `n` bytes of [`Codec::output`] as written.
    pub fn consume(&mut self, n: usize) {
        self.sent += n.min(self.out.len() - self.sent);
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
    }

    /// Writes waiting output to `w` until all is written or `w` would
    /// block (Ok either way: [`Codec::output`] tells what is left).
    /// `Ok(0)` from `w` is a `WriteZero` error.
    pub fn write_to<W: io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        while !self.output().is_empty() {
            match w.write(self.output()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// All waiting output, taken (e.g. to hand it to another writer).
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.drain(..self.sent);
        self.sent = 0;
        out
    }

    /// Whether more output waits than the limit allows: the peer does not read.
    pub fn over_limit(&self) -> bool {
        self.output().len() > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{ErrorCode, MsgType};
    use crate::msg::{Auth, Stats};

    fn all(c: &mut Codec) -> Vec<Received> {
        let mut v = Vec::new();
        while let Some(r) = c.next().unwrap() {
            v.push(r);
        }
        v
    }

    #[test]
    fn decodes_whatever_the_chunking() {
        let msgs = [
            Message::AuthReq(Auth::Null),
            Message::FindAllIfReq,
            Message::StatsReq,
        ];
        let bytes: Vec<u8> = msgs.iter().flat_map(Message::to_bytes).collect();
        for chunk in [1, 3, 7, bytes.len()] {
            let mut c = Codec::control();
            let mut got = Vec::new();
            for part in bytes.chunks(chunk) {
                c.feed(part);
                got.extend(all(&mut c).into_iter().map(|r| r.message.unwrap()));
            }
            assert_eq!(got, msgs, "chunk {chunk}");
            assert_eq!(c.buffered(), 0);
        }
    }

    #[test]
    fn pipelined_requests_wait_until_asked_for() {
        let mut c = Codec::control();
        let mut bytes = Message::AuthReq(Auth::Null).to_bytes();
        bytes.extend(Message::FindAllIfReq.to_bytes());
        c.feed(&bytes);
        assert_eq!(
            c.next().unwrap().unwrap().message,
            Ok(Message::AuthReq(Auth::Null))
        );
        // The session pauses here; the second request stays in the codec
        // and comes out later without any new bytes.
        assert_eq!(c.buffered(), Message::FindAllIfReq.to_bytes().len());
        c.feed(&[]);
        assert_eq!(
            c.next().unwrap().unwrap().message,
            Ok(Message::FindAllIfReq)
        );
        assert_eq!(c.next().unwrap(), None);
    }

    #[test]
    fn a_bad_body_keeps_its_header_and_the_stream_goes_on() {
        let mut c = Codec::control();
        // A STATS reply of 3 bytes instead of 16.
        let mut bytes = Header::new(MsgType::StatsReply, 0, 3).to_bytes().to_vec();
        bytes.extend([1, 2, 3]);
        bytes.extend(Message::StatsReply(Stats::default()).to_bytes());
        c.feed(&bytes);
        let bad = c.next().unwrap().unwrap();
        assert_eq!(bad.header.msg_type, MsgType::StatsReply as u8);
        assert_eq!(bad.header.plen, 3);
        assert!(bad.message.is_err());
        assert_eq!(
            c.next().unwrap().unwrap().message,
            Ok(Message::StatsReply(Stats::default()))
        );
    }

    #[test]
    fn too_long_is_sticky() {
        let mut c = Codec::new(16, DEFAULT_OUTPUT_LIMIT);
        c.feed(&Header::new(MsgType::AuthReply, 0, 17).to_bytes());
        let e = c.next().unwrap_err();
        assert_eq!((e.plen, e.max), (17, 16));
        c.feed(&Message::StatsReq.to_bytes());
        assert_eq!(c.next().unwrap_err(), e);
    }

    #[test]
    fn output_is_written_in_pieces_and_stays_in_order() {
        let mut c = Codec::control();
        let a = Message::StatsReq.to_bytes();
        let b = Message::error(ErrorCode::WrongMsg, "no").to_bytes();
        c.send(&Message::StatsReq);
        c.send(&Message::error(ErrorCode::WrongMsg, "no"));
        let mut want = a.clone();
        want.extend(&b);
        assert_eq!(c.output(), &want[..]);
        // A short write, then more output queued behind what is left.
        c.consume(a.len() + 1);
        c.send(&Message::Close);
        want.drain(..a.len() + 1);
        want.extend(Message::Close.to_bytes());
        assert_eq!(c.output(), &want[..]);
        c.consume(2);
        assert_eq!(c.take_output(), want[2..].to_vec());
        assert!(c.output().is_empty());
        // Consuming more than there is only empties it.
        c.send(&Message::Close);
        c.consume(usize::MAX);
        assert!(c.output().is_empty());
    }

    /// Takes at most `room` bytes per call, then would block; interrupted once.
    struct Pipe {
        got: Vec<u8>,
        room: usize,
        calls: usize,
    }

    impl io::Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls == 1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(3).min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_to_writes_what_the_writer_takes() {
        let mut c = Codec::control();
        c.send(&Message::StatsReq);
        c.send(&Message::Close);
        let all = c.output().to_vec();
        let mut p = Pipe {
            got: Vec::new(),
            room: 10,
            calls: 0,
        };
        c.write_to(&mut p).unwrap();
        assert_eq!(p.got, all[..10]);
        assert_eq!(c.output(), &all[10..]);
        p.room = usize::MAX;
        c.write_to(&mut p).unwrap();
        assert_eq!(p.got, all);
        assert!(c.output().is_empty());
        // A writer that takes nothing.
        c.send(&Message::Close);
        let e = c
            .write_to(&mut io::Cursor::new(&mut [0u8; 0][..]))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn output_over_the_limit_is_reported_not_dropped() {
        let one = Message::StatsReq.to_bytes().len();
        let mut c = Codec::new(MAX_CONTROL_PLEN, 2 * one);
        c.send(&Message::StatsReq);
        c.send(&Message::StatsReq);
        assert!(!c.over_limit(), "at the limit is fine");
        c.send(&Message::StatsReq);
        assert!(c.over_limit());
        assert_eq!(c.output().len(), 3 * one);
        c.consume(one);
        assert!(!c.over_limit());
    }
}
