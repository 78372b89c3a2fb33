//! The plain data format: one PACKET message (type 7) per packet,
//! `rpcap_header{plen = 20 + caplen}` + `rpcap_pkthdr` + packet bytes.
//! Over UDP one datagram per packet; over TCP the same messages streamed.
//!
//! `plen` is a full u32: a caplen above 65515 must not be cut to 16 bits
//! (a known bug of the references, PROTOCOL.md §6).

use crate::header::{Header, MsgType, HEADER_LEN, VERSION};
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
/// A caplen so large that `20 + caplen` overflows u32 gets plen u32::MAX,
/// which no decoder accepts.
pub fn prefix(hdr: &PktHdr) -> [u8; PREFIX_LEN] {
    let plen = hdr.caplen.saturating_add(PktHdr::LEN as u32);
    let mut out = [0u8; PREFIX_LEN];
    out[..HEADER_LEN].copy_from_slice(&Header::new(MsgType::Packet, 0, plen).to_bytes());
    out[HEADER_LEN..].copy_from_slice(&hdr.to_bytes());
    out
}

/// Writes a whole PACKET message into `out` (which must hold
/// `PREFIX_LEN + data.len()` bytes) and returns its length. `hdr.caplen` must equal `data.len()`.
///
/// Panics if `out` is too short (a caller's sizing bug, not bad input).
pub fn encode(hdr: &PktHdr, data: &[u8], out: &mut [u8]) -> usize {
    encode_parts(hdr, &[data], out)
}

/// [`encode`] for packet bytes held in pieces (`parts` one after another;
/// `hdr.caplen` must equal their total), gathered straight into `out`.
pub fn encode_parts(hdr: &PktHdr, parts: &[&[u8]], out: &mut [u8]) -> usize {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert_eq!(hdr.caplen as usize, len, "caplen differs from data");
    let total = PREFIX_LEN + len;
    assert!(
        out.len() >= total,
        "PACKET of {total} bytes into {} bytes",
        out.len()
    );
    out[..PREFIX_LEN].copy_from_slice(&prefix(hdr));
    let mut at = PREFIX_LEN;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    total
}

/// Reads one PACKET message (a UDP datagram, or a message from the stream
/// decoder re-joined with its header); trailing bytes are ignored.
pub fn decode(msg: &[u8]) -> Result<(PktHdr, &[u8]), PlainError> {
    if msg.len() < PREFIX_LEN {
        return Err(PlainError::Short(msg.len()));
    }
    let h = Header::parse(msg).ok_or(PlainError::Short(msg.len()))?;
    if h.ver != VERSION || h.msg_type != MsgType::Packet as u8 {
        return Err(PlainError::NotPacket {
            ver: h.ver,
            msg_type: h.msg_type,
        });
    }
    let payload = &msg[HEADER_LEN..];
    let caplen = PktHdr::parse(payload)
        .ok_or(PlainError::Short(msg.len()))?
        .caplen;
    if u64::from(h.plen) != PktHdr::LEN as u64 + u64::from(caplen) {
        return Err(PlainError::LengthMismatch {
            plen: h.plen,
            caplen,
        });
    }
    decode_payload(payload)
}

/// Reads the payload of a PACKET message (the bytes after the control header,
/// as the stream decoder returns them); trailing bytes are ignored.
pub fn decode_payload(payload: &[u8]) -> Result<(PktHdr, &[u8]), PlainError> {
    let hdr = PktHdr::parse(payload).ok_or(PlainError::Short(payload.len()))?;
    let data = &payload[PktHdr::LEN..];
    let caplen = hdr.caplen as usize;
    if data.len() < caplen {
        return Err(PlainError::Truncated {
            caplen: hdr.caplen,
            have: data.len(),
        });
    }
    Ok((hdr, &data[..caplen]))
}
