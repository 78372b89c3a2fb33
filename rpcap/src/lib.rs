//! RPCAP, the Remote Packet Capture protocol of rpcapd, as a sans-IO library.
//!
//! No sockets, no threads, no `unsafe`: bytes in, typed values out, and back.
//!
//! - [`header`]: the 8-byte control header, message types and error codes.
//! - [`msg`]: every control message of protocol version 0, encode and decode.
//! - [`stream`]: cuts a TCP byte stream into whole messages.
//! - [`conn`]: one control connection's codec (messages in, encoded bytes
//!   out), shared by the client and server sessions.
//! - [`pkthdr`]: the 20-byte per-packet record header of the data channel.
//! - [`plain`]: the plain data format (one PACKET message per packet).
//! - [`udpstr`]: ExtraHop's udpstr data format: [`udpstr::Framer`] and [`udpstr::Deframer`].
//! - [`bpf`]: classic BPF instructions, validator and interpreter.
//! - [`addr`]: peer addresses as both ends compare them (IPv4-mapped folded).
//! - [`peer_text`]: text a peer sent, escaped and cut for a log line.
//! - [`log_limit`]: a token bucket for the log lines a peer can cause.
#![forbid(unsafe_code)]

pub mod addr;
pub mod bpf;
pub mod conn;
pub mod header;
pub mod log_limit;
pub mod msg;
pub mod peer_text;
pub mod pkthdr;
pub mod plain;
pub mod stream;
pub mod udpstr;

pub use header::{ErrorCode, Header, MsgType, HEADER_LEN};
pub use msg::{DecodeError, Message};
pub use pkthdr::PktHdr;
