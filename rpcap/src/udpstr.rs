//! ExtraHop's udpstr data format (PROTOCOL.md §2): records (`rpcap_pkthdr` +
//! packet bytes) form one byte stream, cut into datagrams that each start with
//! `ver u8 (0) | type u8 (110) | firsthdridx u16 | seqno u32`.
//!
//! CONTRACT (skeleton):
//! - [`Framer`] appends records into a caller-owned [`Batch`] of datagram
//!   buffers, allocated once. It never splits a 20-byte record header, sets
//!   firsthdridx (8 when a datagram starts with a record, 0xFFFF when no
//!   record header begins in it) and seqno (0 after `reset`, +1 per datagram).
//!   No allocation and no per-byte loops per packet: a record is one or a few
//!   `copy_from_slice`.
//! - [`Deframer`] takes datagrams in arrival order and calls back with every
//!   whole record, byte-exact; after a gap it resynchronises at the next
//!   firsthdridx. It counts everything it could not deliver.

use crate::pkthdr::PktHdr;

/// Bytes of the udpstr datagram header.
pub const DGRAM_HEADER_LEN: usize = 8;
/// Datagram (UDP payload) size by default: 1500-byte MTU − IPv4 − UDP headers.
pub const DEFAULT_DGRAM_SIZE: usize = 1472;
/// Smallest datagram size: header + one record header + one data byte.
pub const MIN_DGRAM_SIZE: usize = DGRAM_HEADER_LEN + PktHdr::LEN + 1;
/// Largest datagram size the references allow.
pub const MAX_DGRAM_SIZE: usize = 65000;
/// firsthdridx of a datagram that holds only continuation bytes.
pub const NO_HEADER: u16 = 0xFFFF;

/// Datagram size outside [MIN_DGRAM_SIZE, MAX_DGRAM_SIZE].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("udpstr datagram size {0} is outside {MIN_DGRAM_SIZE}..={MAX_DGRAM_SIZE}")]
pub struct BadSize(pub usize);

/// The batch has no room for the whole record; send what is ready, `consume`, retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("batch full")]
pub struct BatchFull;

/// Caller-owned datagram buffers: `slots` buffers of `dgram_size` bytes in one
/// allocation, ready for one `sendmmsg`.
#[derive(Debug)]
pub struct Batch {
    _todo: (),
}

impl Batch {
    /// Room for `slots` datagrams (at least 2) of `dgram_size` bytes.
    pub fn new(dgram_size: usize, slots: usize) -> Batch {
        let _ = (dgram_size, slots);
        todo!()
    }

    /// Slots needed so that one record of `max_caplen` bytes always fits an empty batch.
    pub fn min_slots(dgram_size: usize, max_caplen: usize) -> usize {
        let _ = (dgram_size, max_caplen);
        todo!()
    }

    /// Number of complete datagrams ready to send.
    pub fn ready(&self) -> usize {
        todo!()
    }

    /// Complete datagram `i` (< `ready()`).
    pub fn datagram(&self, i: usize) -> &[u8] {
        let _ = i;
        todo!()
    }

    /// The complete datagrams, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.ready()).map(move |i| self.datagram(i))
    }

    /// Forgets the complete datagrams (after they were sent or dropped);
    /// a partly filled datagram stays and keeps filling.
    pub fn consume(&mut self) {
        todo!()
    }
}

/// Packs records into udpstr datagrams.
#[derive(Debug)]
pub struct Framer {
    _todo: (),
}

impl Framer {
    /// A framer for datagrams of `dgram_size` bytes (UDP payload), seqno 0.
    pub fn new(dgram_size: usize) -> Result<Framer, BadSize> {
        let _ = dgram_size;
        todo!()
    }

    pub fn dgram_size(&self) -> usize {
        todo!()
    }

    /// The seqno the next datagram will carry.
    pub fn next_seqno(&self) -> u32 {
        todo!()
    }

    /// Starts a new capture: seqno back to 0, any partial datagram in `batch` discarded.
    pub fn reset(&mut self, batch: &mut Batch) {
        let _ = batch;
        todo!()
    }

    /// Appends one record (`hdr.caplen` must equal `data.len()`). Writes nothing
    /// and returns `BatchFull` when the whole record does not fit in the batch.
    pub fn push(&mut self, batch: &mut Batch, hdr: &PktHdr, data: &[u8]) -> Result<(), BatchFull> {
        let _ = (batch, hdr, data);
        todo!()
    }

    /// Completes the partly filled datagram, if any, so it can be sent now
    /// (read-timeout flush). Returns whether there was one.
    pub fn flush(&mut self, batch: &mut Batch) -> bool {
        let _ = batch;
        todo!()
    }

    /// Whether a partly filled datagram is waiting.
    pub fn has_partial(&self, batch: &Batch) -> bool {
        let _ = batch;
        todo!()
    }
}

/// What a [`Deframer`] has seen and could not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeframerStats {
    /// Datagrams accepted (in sequence or after a forward gap).
    pub datagrams: u64,
    /// Whole records delivered.
    pub records: u64,
    /// Packet bytes delivered (sum of caplen).
    pub bytes: u64,
    /// Forward jumps in seqno (each gap counts once).
    pub seq_gaps: u64,
    /// Datagrams missing according to seqno (sum of gap sizes, minus late arrivals).
    pub lost_datagrams: u64,
    /// Records missing according to npkt gaps.
    pub lost_records: u64,
    /// Records whose start arrived but whose end was lost (discarded).
    pub truncated_records: u64,
    /// Datagrams whose seqno was already seen.
    pub duplicates: u64,
    /// Datagrams that arrived after a later one (late; dropped).
    pub reordered: u64,
    /// Datagrams with a bad header, or records with impossible lengths.
    pub malformed: u64,
}

/// A datagram that is not udpstr at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeframeError {
    #[error("datagram of {0} bytes is shorter than the udpstr header")]
    Short(usize),
    #[error("not a udpstr datagram (version {ver}, type {msg_type})")]
    NotUdpStr { ver: u8, msg_type: u8 },
    #[error("firsthdridx {idx} outside a datagram of {len} bytes")]
    BadIndex { idx: u16, len: usize },
}

/// Reassembles records from udpstr datagrams.
#[derive(Debug)]
pub struct Deframer {
    _todo: (),
}

impl Deframer {
    /// A deframer that accepts records of up to `max_caplen` packet bytes
    /// (larger caplens count as malformed and force a resync).
    pub fn new(max_caplen: usize) -> Deframer {
        let _ = max_caplen;
        todo!()
    }

    /// Takes one datagram; calls `on_record` for every record it completes.
    /// Errors are also counted in `stats().malformed`.
    pub fn push(
        &mut self,
        dgram: &[u8],
        on_record: impl FnMut(&PktHdr, &[u8]),
    ) -> Result<(), DeframeError> {
        let _ = (dgram, on_record);
        todo!()
    }

    pub fn stats(&self) -> &DeframerStats {
        todo!()
    }

    /// Starts over for a new capture (seqno and npkt expectations cleared; stats kept).
    pub fn reset(&mut self) {
        todo!()
    }
}
