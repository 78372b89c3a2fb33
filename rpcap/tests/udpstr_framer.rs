//! Framer: hand-checked datagram bytes, seqno and firsthdridx, never-split
//! headers, batch accounting (BatchFull writes nothing, partial survives consume),
//! flush and reset; records pushed in pieces frame as if whole.

use rpcap::udpstr::{Batch, BatchFull, Framer, MAX_DGRAM_SIZE, MIN_DGRAM_SIZE, NO_HEADER};
use rpcap::PktHdr;

fn hdr(caplen: usize, npkt: u32) -> PktHdr {
    PktHdr {
        ts_sec: 1,
        ts_usec: 2,
        caplen: caplen as u32,
        len: caplen as u32 + 4,
        npkt,
    }
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn dgram_hdr(idx: u16, seqno: u32) -> Vec<u8> {
    let mut v = vec![0, 110];
    v.extend_from_slice(&idx.to_be_bytes());
    v.extend_from_slice(&seqno.to_be_bytes());
    v
}

fn collect(batch: &Batch) -> Vec<Vec<u8>> {
    batch.datagrams().map(<[u8]>::to_vec).collect()
}

#[test]
fn sizes_outside_the_range_are_refused() {
    assert!(Framer::new(MIN_DGRAM_SIZE - 1).is_err());
    assert!(Framer::new(MAX_DGRAM_SIZE + 1).is_err());
    assert_eq!(Framer::new(MIN_DGRAM_SIZE).unwrap().dgram_size(), 29);
    assert_eq!(Framer::new(MAX_DGRAM_SIZE).unwrap().dgram_size(), 65000);
    assert_eq!(Framer::new(0).unwrap_err().0, 0);
}

/// Size 64, a 100-byte packet then a 10-byte one, worked out by hand:
/// dgram 0 = header(idx 8, seq 0) + pkthdr + data[0..36]          (64 bytes)
/// dgram 1 = header(idx FFFF, seq 1) + data[36..92]                (64 bytes)
/// dgram 2 = header(idx 16, seq 2) + data[92..100] + pkthdr2 + 10  (46 bytes;
///           18 bytes left < 20, so it is closed at once)
#[test]
fn hand_checked_bytes_at_size_64() {
    let mut f = Framer::new(64).unwrap();
    let mut b = Batch::new(64, 8);
    let (h1, d1) = (hdr(100, 1), data(100, 3));
    f.push(&mut b, &h1, &d1).unwrap();
    assert_eq!(b.ready(), 2);
    assert!(f.has_partial(&b));
    assert_eq!(f.next_seqno(), 3);

    let mut want0 = dgram_hdr(8, 0);
    want0.extend_from_slice(&h1.to_bytes());
    want0.extend_from_slice(&d1[..36]);
    let mut want1 = dgram_hdr(NO_HEADER, 1);
    want1.extend_from_slice(&d1[36..92]);
    assert_eq!(collect(&b), vec![want0.clone(), want1.clone()]);

    let (h2, d2) = (hdr(10, 2), data(10, 9));
    f.push(&mut b, &h2, &d2).unwrap();
    assert!(
        !f.has_partial(&b),
        "18 bytes left cannot hold a record header"
    );
    let mut want2 = dgram_hdr(16, 2);
    want2.extend_from_slice(&d1[92..]);
    want2.extend_from_slice(&h2.to_bytes());
    want2.extend_from_slice(&d2);
    assert_eq!(want2.len(), 46);
    assert_eq!(collect(&b), vec![want0, want1, want2]);

    // The next record starts a fresh datagram with seqno 3.
    f.push(&mut b, &hdr(0, 3), &[]).unwrap();
    assert!(f.flush(&mut b));
    let mut want3 = dgram_hdr(8, 3);
    want3.extend_from_slice(&hdr(0, 3).to_bytes());
    assert_eq!(b.datagram(3), &want3[..]);
    assert_eq!(f.next_seqno(), 4);
}

#[test]
fn continuation_only_datagram_flushed_keeps_no_header() {
    let mut f = Framer::new(64).unwrap();
    let mut b = Batch::new(64, 8);
    let d = data(100, 1);
    f.push(&mut b, &hdr(100, 1), &d).unwrap();
    assert!(f.flush(&mut b));
    assert!(!f.flush(&mut b), "nothing left to flush");
    let last = b.datagram(2);
    let mut want = dgram_hdr(NO_HEADER, 2);
    want.extend_from_slice(&d[92..]);
    assert_eq!(last, &want[..]);
}

#[test]
fn record_header_is_never_split() {
    // Records of 30 bytes (20 + 10) into 64-byte datagrams: 8 + 30 = 38,
    // 26 left ≥ 20 so the second record starts here and its data continues
    // (header at 38..58, 6 data bytes), 0 left: full. Every record header lies
    // whole inside one datagram and firsthdridx points at it.
    let size = 64;
    let mut f = Framer::new(size).unwrap();
    let mut b = Batch::new(size, 64);
    for n in 1..=40u32 {
        f.push(&mut b, &hdr(10, n), &data(10, n as u8)).unwrap();
    }
    f.flush(&mut b);
    let mut owed = 0usize;
    for (i, d) in b.datagrams().enumerate() {
        assert_eq!(u32::from_be_bytes(d[4..8].try_into().unwrap()), i as u32);
        let idx = u16::from_be_bytes([d[2], d[3]]);
        let mut pos = 8 + owed;
        if pos >= d.len() {
            assert_eq!(idx, NO_HEADER);
            owed = pos - d.len();
            continue;
        }
        assert_eq!(usize::from(idx), pos, "datagram {i}");
        while pos < d.len() {
            assert!(pos + 20 <= d.len(), "header split in datagram {i}");
            let h = PktHdr::parse(&d[pos..]).unwrap();
            pos += 20 + h.caplen as usize;
        }
        owed = pos - d.len();
    }
    assert_eq!(owed, 0);
}

#[test]
fn batch_full_writes_nothing_and_partial_survives_consume() {
    let size = 100;
    let mut f = Framer::new(size).unwrap();
    let mut b = Batch::new(size, 3);
    let (da, db) = (data(40, 1), data(50, 2));
    // A: 60 bytes → slot 0 holds 68. B: header at 68..88, 12 data bytes fill
    // slot 0, the other 38 go to slot 1 (fill 46, continuation only).
    f.push(&mut b, &hdr(40, 1), &da).unwrap();
    f.push(&mut b, &hdr(50, 2), &db).unwrap();
    assert_eq!(b.ready(), 1);
    assert!(f.has_partial(&b));
    let before = collect(&b);
    let seq = f.next_seqno();
    // Room left: 54 in the partial + 92 in slot 2 = 146 bytes = a record of caplen 126.
    assert_eq!(f.push(&mut b, &hdr(127, 3), &data(127, 3)), Err(BatchFull));
    assert_eq!(collect(&b), before, "a refused push changes nothing");
    assert_eq!(f.next_seqno(), seq);

    // The partial survives consume and keeps filling: the next record's header
    // begins at 46 and firsthdridx says so.
    b.consume();
    assert_eq!(b.ready(), 0);
    assert!(f.has_partial(&b));
    let dc = data(5, 4);
    f.push(&mut b, &hdr(5, 3), &dc).unwrap();
    assert!(f.flush(&mut b));
    let mut want = dgram_hdr(46, 1);
    want.extend_from_slice(&db[12..]);
    want.extend_from_slice(&hdr(5, 3).to_bytes());
    want.extend_from_slice(&dc);
    assert_eq!(collect(&b), vec![want]);

    // And the largest record that fits does fit.
    let mut f = Framer::new(size).unwrap();
    let mut b = Batch::new(size, 3);
    f.push(&mut b, &hdr(40, 1), &da).unwrap();
    f.push(&mut b, &hdr(50, 2), &db).unwrap();
    f.push(&mut b, &hdr(126, 3), &data(126, 3)).unwrap();
    assert_eq!(b.ready(), 3);
}

#[test]
fn partial_datagram_is_moved_by_consume_and_keeps_filling() {
    let size = 64;
    let mut f = Framer::new(size).unwrap();
    let mut b = Batch::new(size, 4);
    let d1 = data(60, 1);
    f.push(&mut b, &hdr(60, 1), &d1).unwrap(); // 8+20+36 | 8+24 → partial of 32
    assert_eq!(b.ready(), 1);
    b.consume();
    let d2 = data(5, 2);
    f.push(&mut b, &hdr(5, 2), &d2).unwrap(); // 32 + 25 = 57, 7 left → closed
    assert_eq!(b.ready(), 1);
    let mut want = dgram_hdr(32, 1);
    want.extend_from_slice(&d1[36..]);
    want.extend_from_slice(&hdr(5, 2).to_bytes());
    want.extend_from_slice(&d2);
    assert_eq!(b.datagram(0), &want[..]);
}

#[test]
fn min_slots_always_fit_a_max_record_and_is_tight() {
    for &(size, max) in &[
        (29usize, 65535usize),
        (64, 1000),
        (1472, 65535),
        (1472, 1452),
        (65000, 262_144),
        (576, 0),
    ] {
        let slots = Batch::min_slots(size, max);
        assert!(slots >= 2);
        let mut f = Framer::new(size).unwrap();
        let mut b = Batch::new(size, slots);
        // Worst case: a partial datagram with exactly 20 bytes left, made of
        // one full datagram plus size − 28 continuation bytes.
        let first = 2 * size - 56;
        f.push(&mut b, &hdr(first, 1), &data(first, 1)).unwrap();
        assert!(f.has_partial(&b));
        b.consume();
        f.push(&mut b, &hdr(max, 2), &data(max, 2))
            .unwrap_or_else(|_| panic!("size {size} max {max} slots {slots}"));
        // One slot fewer does not always do.
        if slots > 2 {
            let mut f = Framer::new(size).unwrap();
            let mut b = Batch::new(size, slots - 1);
            f.push(&mut b, &hdr(first, 1), &data(first, 1)).unwrap();
            b.consume();
            assert_eq!(f.push(&mut b, &hdr(max, 2), &data(max, 2)), Err(BatchFull));
        }
    }
}

#[test]
fn reset_discards_the_partial_and_restarts_seqno() {
    let mut f = Framer::new(1472).unwrap();
    let mut b = Batch::new(1472, 4);
    for n in 1..=30 {
        f.push(&mut b, &hdr(100, n), &data(100, 0)).unwrap();
    }
    assert!(f.next_seqno() > 1);
    assert!(f.has_partial(&b));
    let ready = b.ready();
    f.reset(&mut b);
    assert!(!f.has_partial(&b));
    assert_eq!(f.next_seqno(), 0);
    assert_eq!(b.ready(), ready, "complete datagrams stay until consumed");
    b.consume();
    f.push(&mut b, &hdr(3, 1), &[1, 2, 3]).unwrap();
    f.flush(&mut b);
    assert_eq!(&b.datagram(0)[..8], &dgram_hdr(8, 0)[..]);
}

#[test]
fn seqno_counts_every_datagram() {
    // Continuation datagrams take a seqno too. (The wrap at u32::MAX is
    // exercised on the deframer side, with seqnos rewritten near the wrap.)
    let mut f = Framer::new(29).unwrap();
    let mut b = Batch::new(29, Batch::min_slots(29, 100));
    f.push(&mut b, &hdr(100, 1), &data(100, 0)).unwrap();
    f.flush(&mut b);
    // 8+20+1 then 99 bytes at 21 per datagram = 5 datagrams (4×21 + 15).
    assert_eq!(b.ready(), 6);
    assert_eq!(f.next_seqno(), 6);
    for (i, d) in b.datagrams().enumerate() {
        assert_eq!(&d[4..8], &(i as u32).to_be_bytes());
    }
}

#[test]
#[should_panic(expected = "another datagram size")]
fn a_batch_of_another_size_is_a_bug() {
    let mut f = Framer::new(1472).unwrap();
    let mut b = Batch::new(64, 4);
    let _ = f.push(&mut b, &hdr(1, 1), &[0]);
}

/// `data` cut at the (sorted) positions `at`, empty pieces included.
fn pieces<'a>(data: &'a [u8], at: &[usize]) -> Vec<&'a [u8]> {
    let mut at = at.to_vec();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for &to in at.iter().chain([data.len()].iter()) {
        out.push(&data[from..to]);
        from = to;
    }
    out
}

proptest::proptest! {
    /// push_parts gives the datagrams (and the batch state) push gives for
    /// the joined data, wherever the pieces end: at datagram boundaries, in
    /// the tail that no record header fits, empty.
    #[test]
    fn records_pushed_in_pieces_frame_as_if_whole(
        size in MIN_DGRAM_SIZE..200usize,
        records in proptest::collection::vec(
            (0..700usize, proptest::collection::vec(0..700usize, 0..5)), 1..12),
    ) {
        let slots = Batch::min_slots(size, 700) + 16;
        let (mut fw, mut bw) = (Framer::new(size).unwrap(), Batch::new(size, slots));
        let (mut fp, mut bp) = (Framer::new(size).unwrap(), Batch::new(size, slots));
        for (i, (len, cuts)) in records.iter().enumerate() {
            let d = data(*len, i as u8);
            let at: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
            let h = hdr(*len, i as u32);
            let whole = fw.push(&mut bw, &h, &d);
            let parts = fp.push_parts(&mut bp, &h, &pieces(&d, &at));
            proptest::prop_assert_eq!(whole, parts);
            proptest::prop_assert_eq!(collect(&bw), collect(&bp));
            proptest::prop_assert_eq!(fw.has_partial(&bw), fp.has_partial(&bp));
            if whole.is_err() {
                bw.consume();
                bp.consume();
            }
        }
        fw.flush(&mut bw);
        fp.flush(&mut bp);
        proptest::prop_assert_eq!(collect(&bw), collect(&bp));
    }
}

#[test]
fn a_resized_framer_goes_on_with_the_seqno() {
    let mut f = Framer::new(100).unwrap();
    let mut b = Batch::new(100, 4);
    f.push(&mut b, &hdr(150, 1), &data(150, 1)).unwrap();
    f.flush(&mut b);
    assert_eq!(b.ready(), 2);
    b.consume();
    let mut small = f.resized(60).unwrap();
    assert_eq!(small.dgram_size(), 60);
    assert_eq!(small.next_seqno(), 2);
    let mut b = Batch::new(60, 4);
    small.push(&mut b, &hdr(10, 2), &data(10, 2)).unwrap();
    small.flush(&mut b);
    let got = collect(&b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][..8], dgram_hdr(8, 2)[..]);
    assert!(f.resized(MIN_DGRAM_SIZE - 1).is_err());
}

/// Frames `lens` (record data lengths) at 1472 bytes and returns the
/// datagrams, flushed at the end.
fn frame_lens(align: bool, lens: &[usize]) -> Vec<Vec<u8>> {
    let mut f = Framer::new(1472).unwrap().aligning(align);
    let mut b = Batch::new(1472, Batch::min_slots(1472, 1600) + 200);
    for (i, &n) in lens.iter().enumerate() {
        f.push(&mut b, &hdr(n, i as u32 + 1), &data(n, i as u8))
            .unwrap();
    }
    f.flush(&mut b);
    collect(&b)
}

fn firsthdridx(d: &[u8]) -> u16 {
    u16::from_be_bytes([d[2], d[3]])
}

#[test]
fn aligning_cuts_same_length_records_at_whole_records() {
    // 64-byte packets: 84-byte records, 17 in 1464 bytes of payload with 36
    // left over, so at full size a datagram is closed short (16 bytes left
    // after a split record) every few datagrams: a GSO send ends there.
    let lens = vec![64; 17 * 40];
    let plain = frame_lens(false, &lens);
    let full = &plain[..plain.len() - 1];
    assert!(
        full.iter().any(|d| d.len() < 1472),
        "short datagrams mid-stream"
    );
    assert!(full.iter().any(|d| d.len() == 1472));

    let aligned = frame_lens(true, &lens);
    // Up to the first datagram that starts with a record after the 4th
    // record, the cut is the full size; from there on every datagram is
    // 1436 bytes (8 + 17 × 84), starts with a record and holds 17 (the
    // last, flushed, holds what is left).
    let from = aligned
        .iter()
        .position(|d| d.len() == 1436)
        .expect("an aligned datagram");
    assert!(from <= 6, "aligned from datagram {from}");
    for (i, d) in aligned[from..aligned.len() - 1].iter().enumerate() {
        assert_eq!(d.len(), 1436, "datagram {}", from + i);
        assert_eq!(firsthdridx(d), 8);
    }
    assert!(aligned.len() <= plain.len() + 2);
    // Same stream of records, byte for byte.
    assert_eq!(records_of(&plain), records_of(&aligned));
}

#[test]
fn a_record_of_another_length_goes_on_in_full_size_datagrams() {
    let mut lens = vec![64; 17 * 4];
    lens.push(3000);
    lens.extend([64; 17 * 4]);
    let aligned = frame_lens(true, &lens);
    assert!(aligned.iter().all(|d| d.len() <= 1472));
    // The 3000-byte record's continuation datagrams are cut at the full size.
    let cont: Vec<usize> = aligned
        .iter()
        .filter(|d| firsthdridx(d) == NO_HEADER)
        .map(|d| d.len())
        .collect();
    assert_eq!(cont, vec![1472], "one whole continuation datagram");
    // And the stream aligns again afterwards.
    assert_eq!(aligned[aligned.len() - 2].len(), 1436);
    assert_eq!(records_of(&frame_lens(false, &lens)), records_of(&aligned));
}

#[test]
fn records_of_uneven_length_are_not_aligned() {
    // 200-byte records: 1464 % 220 = 144 bytes lost per datagram, over 1/32.
    let aligned = frame_lens(true, &[200; 100]);
    assert_eq!(aligned, frame_lens(false, &[200; 100]));
}

/// The records (header + data) the datagrams carry, in order.
fn records_of(dgrams: &[Vec<u8>]) -> Vec<u8> {
    let mut d = rpcap::udpstr::Deframer::new(65535);
    let mut out = Vec::new();
    for g in dgrams {
        d.push(g, |h, b| {
            out.extend_from_slice(&h.to_bytes());
            out.extend_from_slice(b);
        })
        .unwrap();
    }
    out
}
