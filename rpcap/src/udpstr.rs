//! ExtraHop's udpstr data format (PROTOCOL.md §2): records (`rpcap_pkthdr` +
//! packet bytes) form one byte stream, cut into datagrams that each start with
//! `ver u8 (0) | type u8 (110) | firsthdridx u16 | seqno u32`.
//!
//! What the two halves guarantee:
//! - [`Framer`] appends records into a caller-owned [`Batch`] of datagram
//!   buffers, allocated once. It never splits a 20-byte record header, sets
//!   firsthdridx (8 when a datagram starts with a record, 0xFFFF when no
//!   record header begins in it) and seqno (0 after `reset`, +1 per datagram).
//!   No allocation and no per-byte loops per packet: a record is one or a few
//!   `copy_from_slice`. With [`Framer::aligning`] a stream of same-length
//!   records is cut at whole records (see there).
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
/// Records of one length in a row before [`Framer::aligning`] cuts at
/// whole records.
const ALIGN_AFTER: u32 = 4;
/// An aligned cut gives up at most 1/32 of the payload (46 of 1464 bytes).
const ALIGN_WASTE: usize = 32;

/// Largest caplen a [`Deframer`] accepts, whatever it is asked for: clients
/// send snaplen ≤ 262144, so no honest record is larger, and the reassembly
/// buffer stays bounded.
pub const MAX_CAPLEN: usize = 262_144;
/// Seqnos remembered behind the newest one, to tell duplicates from late datagrams.
const SEEN_WINDOW: u32 = u128::BITS;
/// Largest forward seqno jump a [`Deframer`] takes on one datagram's word:
/// 65536 datagrams (~96 MB at 1472 bytes), more than a receive buffer holds.
/// A datagram further ahead is rejected, unless [`RESYNC_RUN`] of them in
/// a row confirm that the stream really is there (a long stall).
pub const MAX_AHEAD: u32 = 1 << 16;
/// Consecutive seqnos beyond [`MAX_AHEAD`] that move a [`Deframer`] there.
pub const RESYNC_RUN: u32 = 3;
/// udpstr datagram version byte.
const VERSION: u8 = 0;
/// udpstr datagram type byte.
const UDPSTR_TYPE: u8 = crate::header::MsgType::UdpStrPacket as u8;

/// Datagram size outside [MIN_DGRAM_SIZE, MAX_DGRAM_SIZE].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("udpstr datagram size {0} is outside {MIN_DGRAM_SIZE}..={MAX_DGRAM_SIZE}")]
pub struct BadSize(pub usize);

/// The batch has no room for the whole record; send what is ready, `consume`, retry.
/// From a batch with `ready() == 0` it means the record can never fit (the batch
/// has fewer than [`Batch::min_slots`] slots for it): drop and count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("batch full")]
pub struct BatchFull;

/// The 8-byte header of a udpstr datagram: `ver | type | firsthdridx | seqno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DgramHeader {
    /// Offset (from the start of the datagram) of the first record header that
    /// begins in it, or [`NO_HEADER`].
    pub firsthdridx: u16,
    pub seqno: u32,
}

impl DgramHeader {
    /// Reads and checks the header of `dgram`: version 0, type 110, and a
    /// firsthdridx that is [`NO_HEADER`] or leaves room for a whole record
    /// header after the datagram header.
    pub fn parse(dgram: &[u8]) -> Result<DgramHeader, DeframeError> {
        let b: &[u8; DGRAM_HEADER_LEN] = dgram
            .get(..DGRAM_HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(DeframeError::Short(dgram.len()))?;
        if b[0] != VERSION || b[1] != UDPSTR_TYPE {
            return Err(DeframeError::NotUdpStr {
                ver: b[0],
                msg_type: b[1],
            });
        }
        let idx = u16::from_be_bytes([b[2], b[3]]);
        let at = usize::from(idx);
        if idx != NO_HEADER && (at < DGRAM_HEADER_LEN || at + PktHdr::LEN > dgram.len()) {
            return Err(DeframeError::BadIndex {
                idx,
                len: dgram.len(),
            });
        }
        Ok(DgramHeader {
            firsthdridx: idx,
            seqno: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; DGRAM_HEADER_LEN] {
        let i = self.firsthdridx.to_be_bytes();
        let s = self.seqno.to_be_bytes();
        [VERSION, UDPSTR_TYPE, i[0], i[1], s[0], s[1], s[2], s[3]]
    }
}

/// Caller-owned datagram buffers: `slots` buffers of `dgram_size` bytes in one
/// allocation, ready for one `sendmmsg`.
///
/// Slots `0..ready()` hold complete datagrams; slot `ready()` may hold the
/// partly filled datagram. [`Batch::consume`] moves that partial datagram to
/// slot 0 (one copy of less than one datagram per batch, not per packet), so
/// the complete datagrams are always the contiguous front of the buffer.
#[derive(Debug)]
pub struct Batch {
    buf: Box<[u8]>,
    lens: Box<[usize]>,
    size: usize,
    ready: usize,
    /// Bytes written into the partial datagram in slot `ready`; 0 when there is none.
    fill: usize,
    /// Size of that partial datagram when complete (≤ `size`: see
    /// [`Framer::aligning`]).
    cut: usize,
}

impl Batch {
    /// Room for `slots` datagrams (at least 2) of `dgram_size` bytes
    /// (clamped to `MIN_DGRAM_SIZE..=MAX_DGRAM_SIZE`; use the framer's
    /// [`Framer::dgram_size`]).
    pub fn new(dgram_size: usize, slots: usize) -> Batch {
        let size = dgram_size.clamp(MIN_DGRAM_SIZE, MAX_DGRAM_SIZE);
        let slots = slots.max(2);
        let total = size
            .checked_mul(slots)
            .expect("udpstr batch size overflows usize");
        Batch {
            buf: vec![0; total].into_boxed_slice(),
            lens: vec![0; slots].into_boxed_slice(),
            size,
            ready: 0,
            fill: 0,
            cut: size,
        }
    }

    /// Slots needed so that one record of `max_caplen` bytes always fits an empty batch.
    ///
    /// An empty batch may still hold a partial datagram, which always has room
    /// for at least a record header (the framer closes a datagram as soon as
    /// fewer than 20 bytes are left), so the worst case is that slot plus
    /// enough whole datagram payloads for the packet bytes.
    pub fn min_slots(dgram_size: usize, max_caplen: usize) -> usize {
        let payload = dgram_size.clamp(MIN_DGRAM_SIZE, MAX_DGRAM_SIZE) - DGRAM_HEADER_LEN;
        (1 + max_caplen.div_ceil(payload)).max(2)
    }

    /// Number of complete datagrams ready to send.
    pub fn ready(&self) -> usize {
        self.ready
    }

    /// Number of datagram slots.
    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    /// Size of each slot (the largest datagram).
    pub fn dgram_size(&self) -> usize {
        self.size
    }

    /// Complete datagram `i` (< `ready()`).
    pub fn datagram(&self, i: usize) -> &[u8] {
        assert!(i < self.ready, "datagram {i} of {} ready", self.ready);
        let start = i * self.size;
        &self.buf[start..start + self.lens[i]]
    }

    /// The complete datagrams, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.ready()).map(move |i| self.datagram(i))
    }

    /// Forgets the complete datagrams (after they were sent or dropped);
    /// a partly filled datagram stays and keeps filling.
    pub fn consume(&mut self) {
        if self.fill > 0 && self.ready > 0 {
            let start = self.ready * self.size;
            self.buf.copy_within(start..start + self.fill, 0);
        }
        self.ready = 0;
    }

    /// Bytes a new record may take: what is left in the partial datagram (or
    /// in a new one of `cut` bytes) plus the payload of every other free slot
    /// (continuation datagrams are cut at the full size).
    fn room(&self, cut: usize) -> usize {
        if self.ready == self.slots() {
            return 0;
        }
        let payload = self.size - DGRAM_HEADER_LEN;
        let first = if self.fill > 0 {
            self.cut - self.fill
        } else {
            cut - DGRAM_HEADER_LEN
        };
        first + (self.slots() - self.ready - 1) * payload
    }

    /// The partial datagram's slot, all of it.
    fn slot_mut(&mut self) -> &mut [u8] {
        let start = self.ready * self.size;
        &mut self.buf[start..start + self.size]
    }

    /// Completes the partial datagram.
    fn close(&mut self) {
        self.lens[self.ready] = self.fill;
        self.ready += 1;
        self.fill = 0;
    }
}

/// Packs records into udpstr datagrams.
#[derive(Debug)]
pub struct Framer {
    size: usize,
    seqno: u32,
    /// Cut same-length records at whole records ([`Framer::aligning`]).
    align: bool,
    /// Length (header included) of the last record, and how many in a row had it.
    last_len: usize,
    same: u32,
}

impl Framer {
    /// A framer for datagrams of `dgram_size` bytes (UDP payload), seqno 0.
    pub fn new(dgram_size: usize) -> Result<Framer, BadSize> {
        if !(MIN_DGRAM_SIZE..=MAX_DGRAM_SIZE).contains(&dgram_size) {
            return Err(BadSize(dgram_size));
        }
        Ok(Framer {
            size: dgram_size,
            seqno: 0,
            align: false,
            last_len: 0,
            same: 0,
        })
    }

    /// Cuts a stream of same-length records at whole records, so that every
    /// datagram is the same size and a run of them goes out as one UDP GSO
    /// send.
    ///
    /// Why: GSO takes only datagrams of one size (the last may be shorter),
    /// and the framer closes a datagram short whenever fewer than 20 bytes
    /// are left after a record, which at 64-byte packets (84-byte records)
    /// happens every ~5 datagrams and ends the send there. Once
    /// [`ALIGN_AFTER`] records in a row have one length, a datagram that
    /// starts with a record is cut at the largest whole number of them, if
    /// that gives up at most 1/[`ALIGN_WASTE`] of the payload (1436 instead
    /// of 1472 bytes at 84-byte records); the datagrams still never exceed
    /// the configured size, and a record of another length simply goes on
    /// in full-size continuation datagrams. A deframer reads any datagram
    /// size (only the header rule and firsthdridx matter); the references
    /// cut at the full size only, so this is off unless asked for.
    pub fn aligning(mut self, on: bool) -> Framer {
        self.align = on;
        self
    }

    pub fn dgram_size(&self) -> usize {
        self.size
    }

    /// A framer for datagrams of `dgram_size` bytes that goes on with this
    /// one's seqno, so the receiver sees no gap (the sender learnt a smaller
    /// path MTU mid-capture). Flush the old batch's partial datagram first
    /// and frame into a new [`Batch`] of the new size.
    pub fn resized(&self, dgram_size: usize) -> Result<Framer, BadSize> {
        Ok(Framer {
            seqno: self.seqno,
            align: self.align,
            ..Framer::new(dgram_size)?
        })
    }

    /// The seqno the next datagram will carry.
    pub fn next_seqno(&self) -> u32 {
        self.seqno
    }

    /// Starts a new capture: seqno back to 0, any partial datagram in `batch`
    /// discarded (complete datagrams stay: send or `consume` them).
    pub fn reset(&mut self, batch: &mut Batch) {
        self.seqno = 0;
        batch.fill = 0;
    }

    /// Appends one record (`hdr.caplen` must equal `data.len()`: debug builds
    /// assert it, release builds write `data.len()` as caplen so the stream
    /// stays consistent). Writes nothing and returns `BatchFull` when the whole
    /// record does not fit in the batch.
    ///
    /// Panics if `batch` was made for another datagram size.
    pub fn push(&mut self, batch: &mut Batch, hdr: &PktHdr, data: &[u8]) -> Result<(), BatchFull> {
        self.push_parts(batch, hdr, &[data])
    }

    /// [`push`](Self::push) for a frame held in pieces (a capture ring's
    /// chunks), gathered straight into the datagrams: the record's data is
    /// `parts` one after another, and `hdr.caplen` must equal their total.
    pub fn push_parts(
        &mut self,
        batch: &mut Batch,
        hdr: &PktHdr,
        parts: &[&[u8]],
    ) -> Result<(), BatchFull> {
        assert_eq!(
            batch.size, self.size,
            "batch made for another datagram size"
        );
        let len: usize = parts.iter().map(|p| p.len()).sum();
        debug_assert_eq!(hdr.caplen as usize, len, "caplen differs from data");
        let caplen = u32::try_from(len).map_err(|_| BatchFull)?;
        let rec_len = PktHdr::LEN + len;
        let same = if rec_len == self.last_len {
            self.same.saturating_add(1)
        } else {
            1
        };
        let cut = if batch.fill == 0 {
            self.cut_for(rec_len, same)
        } else {
            batch.cut
        };
        if rec_len > batch.room(cut) {
            return Err(BatchFull);
        }
        (self.last_len, self.same) = (rec_len, same);
        if batch.fill == 0 {
            self.open(batch, DGRAM_HEADER_LEN as u16, cut);
        } else {
            // A continuation-only datagram gets its first header here.
            let fill = batch.fill as u16;
            let idx = &mut batch.slot_mut()[2..4];
            if idx == NO_HEADER.to_be_bytes() {
                idx.copy_from_slice(&fill.to_be_bytes());
            }
        }
        // The partial datagram always has room for a whole record header.
        let rec = PktHdr { caplen, ..*hdr }.to_bytes();
        let at = batch.fill;
        batch.slot_mut()[at..at + PktHdr::LEN].copy_from_slice(&rec);
        batch.fill += PktHdr::LEN;

        let mut left = len;
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                if batch.fill == batch.cut {
                    batch.close();
                    self.open(batch, NO_HEADER, self.size);
                }
                let at = batch.fill;
                let n = rest.len().min(batch.cut - at);
                batch.slot_mut()[at..at + n].copy_from_slice(&rest[..n]);
                batch.fill += n;
                rest = &rest[n..];
                left -= n;
            }
        }
        debug_assert_eq!(left, 0);
        // No record header fits in the tail: the next record starts a new
        // datagram.
        if batch.cut - batch.fill < PktHdr::LEN {
            batch.close();
        }
        Ok(())
    }

    /// The size of a datagram that starts with a record of `rec_len` bytes,
    /// the `same`-th of that length in a row ([`Framer::aligning`]).
    fn cut_for(&self, rec_len: usize, same: u32) -> usize {
        let payload = self.size - DGRAM_HEADER_LEN;
        if self.align && same >= ALIGN_AFTER && rec_len <= payload {
            let waste = payload % rec_len;
            if waste <= payload / ALIGN_WASTE {
                return self.size - waste;
            }
        }
        self.size
    }

    /// Completes the partly filled datagram, if any, so it can be sent now
    /// (read-timeout flush). Returns whether there was one.
    pub fn flush(&mut self, batch: &mut Batch) -> bool {
        let had = batch.fill > 0;
        if had {
            batch.close();
        }
        had
    }

    /// Whether a partly filled datagram is waiting.
    pub fn has_partial(&self, batch: &Batch) -> bool {
        batch.fill > 0
    }

    /// Starts the next datagram, of `cut` bytes when complete, in the
    /// batch's free slot, taking a seqno.
    fn open(&mut self, batch: &mut Batch, firsthdridx: u16, cut: usize) {
        let hdr = DgramHeader {
            firsthdridx,
            seqno: self.seqno,
        };
        batch.slot_mut()[..DGRAM_HEADER_LEN].copy_from_slice(&hdr.to_bytes());
        batch.fill = DGRAM_HEADER_LEN;
        batch.cut = cut;
        self.seqno = self.seqno.wrapping_add(1);
    }
}

/// What a [`Deframer`] has seen and could not deliver.
///
/// Accounting: every record whose header the deframer parsed, and every record
/// between two parsed headers (by npkt), ends up in exactly one of `records`,
/// `truncated_records` or `lost_records`, once the record in reassembly is
/// settled (completed, or dropped by a gap or [`Deframer::reset`]).
/// Records before the first parsed header and after the last one are unknown.
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
    /// Datagrams outside the seqno window (behind the remembered ones, or
    /// beyond [`MAX_AHEAD`] and not confirmed by a run): not of this stream,
    /// or replayed; dropped.
    pub rejected: u64,
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

/// Where a datagram's seqno puts it.
enum Arrival {
    /// The next one expected.
    Next,
    /// A discontinuity: first datagram, forward gap, or a restart far behind.
    Jump,
    /// Already seen or late: dropped.
    Stale,
}

/// Reassembles records from udpstr datagrams.
///
/// Records that lie whole in one datagram are delivered straight from it;
/// only records spanning datagrams are copied, into a buffer of
/// `20 + max_caplen` bytes allocated once.
///
/// Seqnos: the first datagram after `new`/`reset` sets the baseline. A seqno
/// up to [`MAX_AHEAD`] ahead is a forward gap; up to 128 behind the newest, a
/// duplicate or a late datagram (dropped). Anything else is rejected: a
/// sender numbers from 0 once per capture (`reset` marks a new one), so a
/// seqno far behind is a replay or someone else's, and one far ahead is
/// believed only when [`RESYNC_RUN`] consecutive ones follow it. So no
/// datagram is ever delivered twice, and one bad datagram costs at most a
/// window's worth. Malformed datagrams change no state.
///
/// Loss counts are bounded by what the datagrams could have held: an npkt
/// gap counts at most the records that fit in the datagrams lost since the
/// last record header (plus one datagram's worth), so a forged npkt cannot
/// inflate them.
#[derive(Debug)]
pub struct Deframer {
    max_caplen: usize,
    /// Reassembly buffer for a record spanning datagrams: `asm_len` of `asm_need` bytes held.
    asm: Box<[u8]>,
    asm_len: usize,
    asm_need: usize,
    asm_hdr: PktHdr,
    /// The byte stream is continuous: the next datagram's payload goes on
    /// where the last one ended.
    synced: bool,
    /// Seqno expected next; `None` until the first datagram.
    expected: Option<u32>,
    /// Bit i: seqno `expected - 1 - i` was accepted.
    seen: u128,
    last_npkt: Option<u32>,
    /// Seqnos beyond [`MAX_AHEAD`] in a row: the next one expected and how many so far.
    resync: Option<(u32, u32)>,
    /// Datagrams lost (by seqno) since the last record header was parsed.
    lost_since_header: u64,
    /// Largest payload seen: bounds the records a lost datagram held.
    max_payload: usize,
    stats: DeframerStats,
}

impl Deframer {
    /// A deframer that accepts records of up to `max_caplen` packet bytes
    /// (larger caplens count as malformed and force a resync). `max_caplen`
    /// is capped at [`MAX_CAPLEN`].
    pub fn new(max_caplen: usize) -> Deframer {
        let max_caplen = max_caplen.min(MAX_CAPLEN);
        Deframer {
            max_caplen,
            asm: vec![0; PktHdr::LEN + max_caplen].into_boxed_slice(),
            asm_len: 0,
            asm_need: 0,
            asm_hdr: PktHdr::default(),
            synced: false,
            expected: None,
            seen: 0,
            last_npkt: None,
            resync: None,
            lost_since_header: 0,
            max_payload: 0,
            stats: DeframerStats::default(),
        }
    }

    /// The largest caplen accepted.
    pub fn max_caplen(&self) -> usize {
        self.max_caplen
    }

    /// Takes one datagram; calls `on_record` for every record it completes.
    /// Errors are also counted in `stats().malformed`.
    pub fn push(
        &mut self,
        dgram: &[u8],
        mut on_record: impl FnMut(&PktHdr, &[u8]),
    ) -> Result<(), DeframeError> {
        let hdr = DgramHeader::parse(dgram).inspect_err(|_| self.stats.malformed += 1)?;
        match self.arrival(hdr.seqno) {
            Arrival::Next => {}
            Arrival::Jump => self.lose_sync(),
            Arrival::Stale => return Ok(()),
        }
        self.stats.datagrams += 1;
        self.max_payload = self.max_payload.max(dgram.len() - DGRAM_HEADER_LEN);

        if self.synced && u32::from(hdr.firsthdridx) != self.expected_index(dgram.len()) {
            // The sender's bookkeeping and ours disagree: trust neither the
            // record in reassembly nor the bytes in front of firsthdridx.
            self.stats.malformed += 1;
            self.lose_sync();
        }
        let mut pos = DGRAM_HEADER_LEN;
        if !self.synced {
            if hdr.firsthdridx == NO_HEADER {
                return Ok(()); // continuation of a record we do not have
            }
            pos = usize::from(hdr.firsthdridx);
            self.synced = true;
        } else if self.asm_len > 0 {
            pos = self.continue_record(dgram, &mut on_record);
        }
        self.records_from(&dgram[pos..], &mut on_record);
        Ok(())
    }

    pub fn stats(&self) -> &DeframerStats {
        &self.stats
    }

    /// Starts over for a new capture (seqno and npkt expectations cleared; stats kept).
    /// A record still in reassembly counts as truncated.
    pub fn reset(&mut self) {
        self.lose_sync();
        self.expected = None;
        self.seen = 0;
        self.last_npkt = None;
        self.resync = None;
        self.lost_since_header = 0;
    }

    /// Classifies a seqno and updates the seqno bookkeeping.
    fn arrival(&mut self, seqno: u32) -> Arrival {
        let Some(expected) = self.expected else {
            self.expected = Some(seqno.wrapping_add(1));
            self.seen = 1;
            return Arrival::Jump;
        };
        let ahead = seqno.wrapping_sub(expected);
        if ahead == 0 {
            self.resync = None;
            self.expected = Some(seqno.wrapping_add(1));
            self.seen = (self.seen << 1) | 1;
            return Arrival::Next;
        }
        if ahead <= MAX_AHEAD {
            self.resync = None;
            self.jump(seqno, ahead);
            return Arrival::Jump;
        }
        let age = expected.wrapping_sub(seqno) - 1; // 0: the newest one seen
        if age < SEEN_WINDOW {
            let bit = 1u128 << age;
            if self.seen & bit != 0 {
                self.stats.duplicates += 1;
            } else {
                self.seen |= bit;
                self.stats.reordered += 1;
                self.stats.lost_datagrams = self.stats.lost_datagrams.saturating_sub(1);
            }
            return Arrival::Stale;
        }
        // Outside the window. Far ahead, a run of consecutive seqnos says the
        // stream moved on while we were not reading (its first datagrams are
        // lost to the confirmation); anything else is not ours.
        let run = match self.resync {
            Some((next, n)) if next == seqno => n + 1,
            _ => 1,
        };
        if ahead < 1 << 31 && run >= RESYNC_RUN {
            self.resync = None;
            self.jump(seqno, ahead);
            return Arrival::Jump;
        }
        self.resync = (ahead < 1 << 31).then(|| (seqno.wrapping_add(1), run));
        self.stats.rejected += 1;
        Arrival::Stale
    }

    /// Moves the stream `ahead` datagrams past the expected one, to `seqno`.
    fn jump(&mut self, seqno: u32, ahead: u32) {
        self.stats.seq_gaps += 1;
        self.stats.lost_datagrams += u64::from(ahead);
        self.lost_since_header += u64::from(ahead);
        self.expected = Some(seqno.wrapping_add(1));
        let shift = ahead + 1;
        self.seen = if shift < SEEN_WINDOW {
            (self.seen << shift) | 1
        } else {
            1
        };
    }

    /// The firsthdridx a continuous stream implies for a datagram of `len` bytes.
    /// (Wider than u16 so that an offset a u16 cannot hold matches nothing.)
    fn expected_index(&self, len: usize) -> u32 {
        let payload = len - DGRAM_HEADER_LEN;
        let owed = self.asm_need - self.asm_len; // 0 when no record is in reassembly
        if owed >= payload {
            u32::from(NO_HEADER)
        } else {
            // owed < payload ≤ a slice length; saturate rather than wrap.
            u32::try_from(DGRAM_HEADER_LEN + owed).unwrap_or(u32::MAX)
        }
    }

    /// Drops the record in reassembly (if any); the next datagram resyncs at its firsthdridx.
    fn lose_sync(&mut self) {
        if self.asm_len > 0 {
            self.stats.truncated_records += 1;
            self.asm_len = 0;
            self.asm_need = 0;
        }
        self.synced = false;
    }

    /// Feeds the record in reassembly from the start of `dgram`'s payload;
    /// returns where the rest of the payload begins.
    fn continue_record(
        &mut self,
        dgram: &[u8],
        on_record: &mut impl FnMut(&PktHdr, &[u8]),
    ) -> usize {
        let src = &dgram[DGRAM_HEADER_LEN..];
        let n = (self.asm_need - self.asm_len).min(src.len());
        self.asm[self.asm_len..self.asm_len + n].copy_from_slice(&src[..n]);
        self.asm_len += n;
        if self.asm_len == self.asm_need {
            let need = self.asm_need;
            self.asm_len = 0;
            self.asm_need = 0;
            self.stats.records += 1;
            self.stats.bytes += u64::from(self.asm_hdr.caplen);
            on_record(&self.asm_hdr, &self.asm[PktHdr::LEN..need]);
        }
        DGRAM_HEADER_LEN + n
    }

    /// Parses the records that begin in `rest` (which starts at a record
    /// header): delivers the whole ones, keeps a trailing partial one.
    fn records_from(&mut self, mut rest: &[u8], on_record: &mut impl FnMut(&PktHdr, &[u8])) {
        while !rest.is_empty() {
            // Fewer than 20 bytes left would be a split header, which no
            // sender may produce; a caplen beyond reason means we lost the
            // framing. Either way resync at the next datagram.
            let hdr = match PktHdr::parse(rest) {
                Some(h) if h.caplen as usize <= self.max_caplen && h.caplen <= h.len => h,
                _ => {
                    self.stats.malformed += 1;
                    self.synced = false;
                    return;
                }
            };
            self.note_npkt(hdr.npkt);
            let total = PktHdr::LEN + hdr.caplen as usize;
            if total > rest.len() {
                self.asm[..rest.len()].copy_from_slice(rest);
                self.asm_len = rest.len();
                self.asm_need = total;
                self.asm_hdr = hdr;
                return;
            }
            self.stats.records += 1;
            self.stats.bytes += u64::from(hdr.caplen);
            on_record(&hdr, &rest[PktHdr::LEN..total]);
            rest = &rest[total..];
        }
    }

    /// Counts the records an npkt gap says were lost, at most what the
    /// datagrams lost since the last header could hold (a record takes 20
    /// bytes at least) plus one datagram's worth (records the sender dropped
    /// before framing); a step back starts a new baseline.
    fn note_npkt(&mut self, npkt: u32) {
        if let Some(last) = self.last_npkt {
            let gap = npkt.wrapping_sub(last.wrapping_add(1));
            if gap < 1 << 31 {
                let per_dgram = (self.max_payload / PktHdr::LEN) as u64 + 1;
                let could = (self.lost_since_header + 1).saturating_mul(per_dgram);
                self.stats.lost_records += u64::from(gap).min(could);
            }
        }
        self.last_npkt = Some(npkt);
        self.lost_since_header = 0;
    }
}
