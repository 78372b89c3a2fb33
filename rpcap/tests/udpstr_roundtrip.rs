//! Framer → lossy channel → deframer, as properties.
//!
//! The channel drops, duplicates and delays datagrams (always delivering the
//! first datagram first and a sentinel record last), and seqnos are shifted
//! by a random offset so that runs cross the u32 wrap. From the framer's own
//! output the test derives, for every record, the datagrams it spans; a
//! datagram is *accepted* when it arrives with a seqno above every earlier
//! arrival. Then, exactly:
//! - delivered = the records whose spanned datagrams were all accepted, each
//!   byte-exact (header and data), in npkt order, none twice;
//! - truncated = records whose first datagram was accepted but that were not delivered;
//! - lost_records = records whose first datagram was not accepted;
//!
//! so delivered + truncated + lost_records = every record sent.
//! Datagram counters (accepted, duplicates, reordered, lost, gaps) match a
//! set-based model of the arrivals.

use std::collections::HashSet;

use proptest::prelude::*;
use rpcap::udpstr::{Batch, BatchFull, Deframer, DeframerStats, Framer, NO_HEADER};
use rpcap::PktHdr;

const MAX_CAPLEN: usize = 65535;

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    hdr: PktHdr,
    data: Vec<u8>,
}

fn make_recs(lens: &[usize], extra_len: &[u16]) -> Vec<Rec> {
    lens.iter()
        .enumerate()
        .map(|(i, &n)| {
            let npkt = i as u32 + 1;
            let seed = npkt.wrapping_mul(2_654_435_761);
            Rec {
                hdr: PktHdr {
                    ts_sec: seed,
                    ts_usec: npkt * 3,
                    caplen: n as u32,
                    len: n as u32 + u32::from(extra_len[i % extra_len.len()]),
                    npkt,
                },
                data: (0..n)
                    .map(|j| (seed >> 8) as u8 ^ (j as u8).wrapping_mul(31) ^ (j >> 8) as u8)
                    .collect(),
            }
        })
        .collect()
}

/// Frames `recs`, flushing after record i when `flush_after[i]`, then the
/// sentinel alone in the last datagram. Returns every datagram in order.
fn frame(
    size: usize,
    align: bool,
    slots: usize,
    recs: &[Rec],
    flush_after: &[bool],
    sentinel: &Rec,
) -> Vec<Vec<u8>> {
    let mut f = Framer::new(size).unwrap().aligning(align);
    let mut b = Batch::new(size, slots);
    let mut out = Vec::new();
    fn push(f: &mut Framer, b: &mut Batch, r: &Rec, out: &mut Vec<Vec<u8>>) {
        if f.push(b, &r.hdr, &r.data) == Err(BatchFull) {
            out.extend(b.datagrams().map(<[u8]>::to_vec));
            b.consume();
            f.push(b, &r.hdr, &r.data)
                .expect("an emptied batch of min_slots takes any record");
        }
    }
    for (i, r) in recs.iter().enumerate() {
        push(&mut f, &mut b, r, &mut out);
        if flush_after[i % flush_after.len()] {
            f.flush(&mut b);
        }
    }
    f.flush(&mut b);
    push(&mut f, &mut b, sentinel, &mut out);
    f.flush(&mut b);
    out.extend(b.datagrams().map(<[u8]>::to_vec));
    assert_eq!(f.next_seqno() as usize, out.len());
    out
}

/// Walks the framer's output as one byte stream, checking the format
/// (seqno, firsthdridx, sizes, headers never split), and returns for every
/// record the first and last datagram it occupies.
fn spans(dgrams: &[Vec<u8>], size: usize) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut owed = 0usize;
    let mut start = 0;
    for (i, d) in dgrams.iter().enumerate() {
        assert!(
            d.len() > 8 && d.len() <= size,
            "datagram {i} of {} bytes",
            d.len()
        );
        assert_eq!(&d[..2], &[0, 110]);
        assert_eq!(u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize, i);
        let idx = u16::from_be_bytes([d[2], d[3]]);
        let mut pos = 8;
        if owed > 0 {
            let n = owed.min(d.len() - 8);
            owed -= n;
            pos += n;
            if owed == 0 {
                spans.push((start, i));
            }
        }
        if pos == d.len() {
            assert_eq!(idx, NO_HEADER, "datagram {i}");
        } else {
            assert_eq!(usize::from(idx), pos, "datagram {i}");
        }
        while pos < d.len() {
            assert!(pos + 20 <= d.len(), "record header split in datagram {i}");
            let h = PktHdr::parse(&d[pos..]).unwrap();
            let total = 20 + h.caplen as usize;
            start = i;
            if pos + total <= d.len() {
                spans.push((i, i));
                pos += total;
            } else {
                owed = total - (d.len() - pos);
                pos = d.len();
            }
        }
    }
    assert_eq!(owed, 0, "stream ends inside a record");
    spans
}

/// A small deterministic generator for the channel's decisions.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn percent(&mut self, p: u8) -> bool {
        self.next() % 100 < u64::from(p)
    }
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    seed: u64,
    drop: u8,
    dup: u8,
    delay: u8,
}

/// The order in which datagram indices arrive.
fn arrivals(n: usize, ch: Channel) -> Vec<usize> {
    let mut rng = XorShift(ch.seed | 1);
    let mut out = vec![0];
    let mut held: Vec<(usize, usize)> = Vec::new(); // (release step, index)
    for i in 1..n.saturating_sub(1) {
        let mut copies = if rng.percent(ch.drop) { 0 } else { 1 };
        if rng.percent(ch.dup) {
            copies += 1;
        }
        for _ in 0..copies {
            if rng.percent(ch.delay) {
                held.push((i + 1 + (rng.next() % 8) as usize, i));
            } else {
                out.push(i);
            }
        }
        held.retain(|&(at, idx)| {
            if at <= i {
                out.push(idx);
            }
            at > i
        });
    }
    out.extend(held.iter().map(|&(_, idx)| idx));
    if n > 1 {
        out.push(n - 1);
    }
    out
}

/// What the deframer's seqno counters must say for these arrivals.
fn model(arrived: &[usize]) -> (HashSet<usize>, DeframerStats) {
    let mut s = DeframerStats::default();
    let mut seen = HashSet::new();
    let mut accepted = HashSet::new();
    let mut max: Option<usize> = None;
    for &i in arrived {
        if seen.contains(&i) {
            s.duplicates += 1;
        } else if max.is_none_or(|m| i > m) {
            s.datagrams += 1;
            if let Some(m) = max {
                if i > m + 1 {
                    s.seq_gaps += 1;
                }
            }
            max = Some(i);
            accepted.insert(i);
        } else {
            s.reordered += 1;
        }
        seen.insert(i);
    }
    s.lost_datagrams = (max.unwrap() + 1 - seen.len()) as u64;
    (accepted, s)
}

fn record_len() -> impl Strategy<Value = usize> {
    prop_oneof![0..=64usize, 1..=1600usize, 1..=MAX_CAPLEN]
}

/// Record lengths in runs of one length (what an aligning framer cuts at
/// whole records), up to `max` runs.
fn runs_of(len: impl Strategy<Value = usize>, max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec((len, 1..12usize), 1..max).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(n, k)| std::iter::repeat_n(n, k))
            .collect()
    })
}

fn dgram_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(29usize),
        Just(64usize),
        29..=200usize,
        576..=1500usize,
        576..=65000usize
    ]
}

fn seq_offset() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(u32::MAX - 3), any::<u32>()]
}

#[allow(clippy::too_many_arguments)]
fn run(
    size: usize,
    align: bool,
    extra_slots: usize,
    lens: &[usize],
    extra_len: &[u16],
    flush_after: &[bool],
    ch: Channel,
    offset: u32,
) -> Result<(), TestCaseError> {
    let recs = make_recs(lens, extra_len);
    let sentinel = make_recs(&vec![1; recs.len() + 1], &[0]).pop().unwrap();
    let slots = Batch::min_slots(size, MAX_CAPLEN) + extra_slots;
    let mut dgrams = frame(size, align, slots, &recs, flush_after, &sentinel);
    let spans = spans(&dgrams, size);
    prop_assert_eq!(spans.len(), recs.len() + 1);
    for (i, d) in dgrams.iter_mut().enumerate() {
        let s = (i as u32).wrapping_add(offset);
        d[4..8].copy_from_slice(&s.to_be_bytes());
    }

    let arrived = arrivals(dgrams.len(), ch);
    let (accepted, want) = model(&arrived);
    let mut d = Deframer::new(MAX_CAPLEN);
    let mut got: Vec<Rec> = Vec::new();
    for &i in &arrived {
        d.push(&dgrams[i], |h, b| {
            got.push(Rec {
                hdr: *h,
                data: b.to_vec(),
            })
        })
        .unwrap();
    }
    d.reset();
    let s = *d.stats();

    let all: Vec<&Rec> = recs.iter().chain([&sentinel]).collect();
    let delivered: Vec<&Rec> = all
        .iter()
        .zip(&spans)
        .filter(|(_, &(a, b))| (a..=b).all(|j| accepted.contains(&j)))
        .map(|(r, _)| *r)
        .collect();
    let started = spans
        .iter()
        .filter(|&&(a, _)| accepted.contains(&a))
        .count();
    prop_assert_eq!(got.iter().collect::<Vec<_>>(), delivered.clone());
    prop_assert_eq!(s.records as usize, delivered.len());
    prop_assert_eq!(
        s.bytes,
        delivered.iter().map(|r| r.data.len() as u64).sum::<u64>()
    );
    prop_assert_eq!(s.truncated_records as usize, started - delivered.len());
    prop_assert_eq!(s.lost_records as usize, all.len() - started);
    prop_assert_eq!(
        s.records + s.truncated_records + s.lost_records,
        all.len() as u64
    );
    prop_assert_eq!(s.malformed, 0);
    prop_assert_eq!(
        (
            s.datagrams,
            s.duplicates,
            s.reordered,
            s.lost_datagrams,
            s.seq_gaps
        ),
        (
            want.datagrams,
            want.duplicates,
            want.reordered,
            want.lost_datagrams,
            want.seq_gaps
        )
    );
    Ok(())
}

fn channel() -> impl Strategy<Value = Channel> {
    (any::<u64>(), 0..=40u8, 0..=15u8, 0..=15u8).prop_map(|(seed, drop, dup, delay)| Channel {
        seed,
        drop,
        dup,
        delay,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn lossless_channel_delivers_everything(
        size in dgram_size(),
        align in any::<bool>(),
        extra_slots in 0..6usize,
        lens in runs_of(record_len(), 8),
        extra_len in prop::collection::vec(prop_oneof![Just(0u16), any::<u16>()], 1..4),
        flush_after in prop::collection::vec(prop::bool::weighted(0.2), 1..8),
        offset in seq_offset(),
    ) {
        let ch = Channel { seed: 1, drop: 0, dup: 0, delay: 0 };
        run(size, align, extra_slots, &lens, &extra_len, &flush_after, ch, offset)?;
    }

    #[test]
    fn lossy_channel_delivers_exactly_what_arrived_whole(
        size in dgram_size(),
        align in any::<bool>(),
        extra_slots in 0..6usize,
        lens in runs_of(record_len(), 8),
        extra_len in prop::collection::vec(prop_oneof![Just(0u16), any::<u16>()], 1..4),
        flush_after in prop::collection::vec(prop::bool::weighted(0.2), 1..8),
        ch in channel(),
        offset in seq_offset(),
    ) {
        run(size, align, extra_slots, &lens, &extra_len, &flush_after, ch, offset)?;
    }

    /// Many small records through small batches: exercises consume() with a
    /// partial datagram on nearly every call.
    #[test]
    fn small_records_small_batches(
        size in prop_oneof![Just(29usize), Just(64usize), 29..=600usize, 1000..=1472usize],
        align in any::<bool>(),
        lens in prop_oneof![
            prop::collection::vec(0..=120usize, 1..400),
            runs_of(0..=120usize, 40),
        ],
        flush_after in prop::collection::vec(prop::bool::weighted(0.05), 1..16),
        ch in channel(),
        offset in seq_offset(),
    ) {
        let recs = make_recs(&lens, &[0]);
        let sentinel = make_recs(&vec![1; recs.len() + 1], &[0]).pop().unwrap();
        // min_slots for the largest record here, not for 65535.
        let slots = Batch::min_slots(size, 120);
        let mut dgrams = frame(size, align, slots, &recs, &flush_after, &sentinel);
        let spans = spans(&dgrams, size);
        prop_assert_eq!(spans.len(), recs.len() + 1);
        for (i, d) in dgrams.iter_mut().enumerate() {
            d[4..8].copy_from_slice(&(i as u32).wrapping_add(offset).to_be_bytes());
        }
        let arrived = arrivals(dgrams.len(), ch);
        let (accepted, _) = model(&arrived);
        let mut d = Deframer::new(120);
        let mut got = Vec::new();
        for &i in &arrived {
            d.push(&dgrams[i], |h, b| got.push(Rec { hdr: *h, data: b.to_vec() })).unwrap();
        }
        d.reset();
        let s = d.stats();
        let all: Vec<&Rec> = recs.iter().chain([&sentinel]).collect();
        let delivered: Vec<&Rec> = all.iter().zip(&spans)
            .filter(|(_, &(a, b))| (a..=b).all(|j| accepted.contains(&j)))
            .map(|(r, _)| *r).collect();
        prop_assert_eq!(got.iter().collect::<Vec<_>>(), delivered);
        prop_assert_eq!(s.records + s.truncated_records + s.lost_records, all.len() as u64);
        prop_assert_eq!(s.malformed, 0);
    }
}
