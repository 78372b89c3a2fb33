//! The plain data format: one PACKET message (type 7) per packet,
//! `rpcap_header{plen = 20 + caplen}` + `rpcap_pkthdr` + packet bytes.
//! Over UDP one datagram per packet; over TCP the same messages streamed.

use crate::pkthdr::PktHdr;

/// Bytes in front of the packet data: control header + record header.
pub const PREFIX_LEN: usize = crate::header::HEADER_LEN + PktHdr::LEN;

/// A PACKET message that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("datagram of {0} bytes is shorter than a PACKET header")]
    Short(usize),
    #[error("not a PACKET message (version {ver}, type {msg_type:#04x})")]
    NotPacket { ver: u8, msg_type: u8 },
    #[error("plen {plen} does not match caplen {caplen} + 20")]
    LengthMismatch { plen: u32, caplen: u32 },
    #[error("caplen {caplen} but only {have} packet bytes present")]
    Truncated { caplen: u32, have: usize },
}

/// The 28 bytes in front of a packet (for gather writes that point at the packet).
pub fn prefix(hdr: &PktHdr) -> [u8; PREFIX_LEN] {
    let _ = hdr;
    todo!()
}

/// Writes a whole PACKET message into `out` (which must hold
/// `PREFIX_LEN + data.len()` bytes) and returns its length. `hdr.caplen` must equal `data.len()`.
pub fn encode(hdr: &PktHdr, data: &[u8], out: &mut [u8]) -> usize {
    let _ = (hdr, data, out);
    todo!()
}

/// Reads one PACKET message (a UDP datagram, or a message from the stream
/// decoder re-joined with its header); trailing bytes are ignored.
pub fn decode(msg: &[u8]) -> Result<(PktHdr, &[u8]), PlainError> {
    let _ = msg;
    todo!()
}

/// Reads the payload of a PACKET message (the bytes after the control header,
/// as the stream decoder returns them); trailing bytes are ignored.
pub fn decode_payload(payload: &[u8]) -> Result<(PktHdr, &[u8]), PlainError> {
    let _ = payload;
    todo!()
}
