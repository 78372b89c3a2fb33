//! Deframer on hand-made datagrams: reassembly, resync after gaps, duplicates,
//! late datagrams, seqno and npkt wrap, malformed input, reset.

use rpcap::udpstr::{
    Batch, DeframeError, Deframer, DeframerStats, Framer, MAX_AHEAD, NO_HEADER, RESYNC_RUN,
};
use rpcap::PktHdr;

fn hdr(caplen: usize, npkt: u32) -> PktHdr {
    PktHdr {
        ts_sec: 10,
        ts_usec: 20,
        caplen: caplen as u32,
        len: caplen as u32 + 100,
        npkt,
    }
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// A datagram from its header fields and body parts.
fn dg(idx: u16, seqno: u32, parts: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![0, 110];
    v.extend_from_slice(&idx.to_be_bytes());
    v.extend_from_slice(&seqno.to_be_bytes());
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

type Got = Vec<(PktHdr, Vec<u8>)>;

fn push(d: &mut Deframer, got: &mut Got, dgram: &[u8]) -> Result<(), DeframeError> {
    d.push(dgram, |h, b| got.push((*h, b.to_vec())))
}

/// Record 1 (caplen 60) spans three datagrams of 40 bytes; record 2 begins in the third.
fn spanning() -> (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) {
    let (d1, d2) = (data(60, 1), data(4, 2));
    let h1 = hdr(60, 1).to_bytes();
    let h2 = hdr(4, 2).to_bytes();
    let dgrams = vec![
        dg(8, 0, &[&h1, &d1[..12]]),       // 8 + 20 + 12 = 40
        dg(NO_HEADER, 1, &[&d1[12..44]]),  // 8 + 32
        dg(24, 2, &[&d1[44..], &h2, &d2]), // 8 + 16, record 2 at 24
    ];
    (dgrams, d1, d2)
}

#[test]
fn reassembles_a_record_across_datagrams() {
    let (dgrams, d1, d2) = spanning();
    let mut d = Deframer::new(1000);
    let mut got = Got::new();
    for g in &dgrams {
        push(&mut d, &mut got, g).unwrap();
    }
    assert_eq!(got, vec![(hdr(60, 1), d1), (hdr(4, 2), d2)]);
    let s = d.stats();
    assert_eq!((s.datagrams, s.records, s.bytes), (3, 2, 64));
    assert_eq!(
        *s,
        DeframerStats {
            datagrams: 3,
            records: 2,
            bytes: 64,
            ..Default::default()
        }
    );
}

#[test]
fn gap_truncates_the_partial_record_and_resyncs_at_firsthdridx() {
    let (dgrams, _, d2) = spanning();
    let mut d = Deframer::new(1000);
    let mut got = Got::new();
    push(&mut d, &mut got, &dgrams[0]).unwrap();
    push(&mut d, &mut got, &dgrams[2]).unwrap(); // seqno 1 lost
    assert_eq!(got, vec![(hdr(4, 2), d2)]);
    let s = d.stats();
    assert_eq!(
        (s.seq_gaps, s.lost_datagrams, s.truncated_records),
        (1, 1, 1)
    );
    assert_eq!((s.records, s.lost_records, s.malformed), (1, 0, 0));
}

#[test]
fn continuation_only_datagram_after_a_gap_is_skipped() {
    let (dgrams, _, d2) = spanning();
    let mut d = Deframer::new(1000);
    let mut got = Got::new();
    push(&mut d, &mut got, &dgrams[1]).unwrap(); // first seen: continuation only
    assert!(got.is_empty());
    push(&mut d, &mut got, &dgrams[2]).unwrap();
    assert_eq!(got, vec![(hdr(4, 2), d2)]);
    let s = d.stats();
    assert_eq!(
        (s.datagrams, s.seq_gaps, s.truncated_records, s.malformed),
        (2, 0, 0, 0)
    );
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let (dgrams, d1, d2) = spanning();
    let mut d = Deframer::new(1000);
    let mut got = Got::new();
    for i in [0, 0, 1, 0, 1, 2, 2] {
        push(&mut d, &mut got, &dgrams[i]).unwrap();
    }
    assert_eq!(got, vec![(hdr(60, 1), d1), (hdr(4, 2), d2)]);
    let s = d.stats();
    assert_eq!(
        (s.duplicates, s.datagrams, s.reordered, s.lost_datagrams),
        (4, 3, 0, 0)
    );
}

#[test]
fn late_datagram_is_dropped_and_fills_the_gap_count() {
    let (dgrams, _, d2) = spanning();
    let mut d = Deframer::new(1000);
    let mut got = Got::new();
    for i in [0, 2, 1] {
        push(&mut d, &mut got, &dgrams[i]).unwrap();
    }
    assert_eq!(got, vec![(hdr(4, 2), d2)]);
    let s = d.stats();
    assert_eq!((s.reordered, s.lost_datagrams, s.seq_gaps), (1, 0, 1));
    assert_eq!((s.truncated_records, s.duplicates), (1, 0));
    // Seen once late, a second copy is a duplicate.
    push(&mut d, &mut got, &dgrams[1]).unwrap();
    assert_eq!((d.stats().reordered, d.stats().duplicates), (1, 1));
}

#[test]
fn seqno_wraps_at_u32_max() {
    let (mut dgrams, d1, d2) = spanning();
    for (g, s) in dgrams.iter_mut().zip([u32::MAX - 1, u32::MAX, 0]) {
        g[4..8].copy_from_slice(&s.to_be_bytes());
    }
    let mut d = Deframer::new(1000);
    let mut got = Got::new();
    for g in &dgrams {
        push(&mut d, &mut got, g).unwrap();
    }
    assert_eq!(got, vec![(hdr(60, 1), d1), (hdr(4, 2), d2)]);
    let s = d.stats();
    assert_eq!(
        (s.seq_gaps, s.lost_datagrams, s.reordered, s.duplicates),
        (0, 0, 0, 0)
    );
    // The wrapped window still knows u32::MAX: a copy of it is a duplicate.
    push(&mut d, &mut got, &dgrams[1]).unwrap();
    assert_eq!(d.stats().duplicates, 1);
}

#[test]
fn gap_across_the_wrap_counts_the_missing_datagrams() {
    let a = dg(8, u32::MAX - 2, &[&hdr(1, 1).to_bytes(), &[1]]);
    let b = dg(8, 1, &[&hdr(1, 2).to_bytes(), &[2]]);
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    push(&mut d, &mut got, &a).unwrap();
    push(&mut d, &mut got, &b).unwrap();
    assert_eq!(got.len(), 2);
    // Missing: MAX-1, MAX, 0.
    assert_eq!((d.stats().seq_gaps, d.stats().lost_datagrams), (1, 3));
}

#[test]
fn a_replayed_datagram_far_behind_is_rejected_and_delivers_nothing() {
    // Issue 12: a replay of an old datagram re-wrote its packets. A sender
    // numbers from 0 once per capture, so far behind is never the stream.
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    let old = dg(8, 0, &[&hdr(1, 1).to_bytes(), &[1]]);
    push(&mut d, &mut got, &old).unwrap();
    for seqno in 1..=200u32 {
        push(&mut d, &mut got, &npkt_dgram(seqno, &[seqno + 1])).unwrap();
    }
    assert_eq!(got.len(), 201);
    // Replayed three times in a row: still not a run (the same seqno).
    for _ in 0..3 {
        push(&mut d, &mut got, &old).unwrap();
    }
    push(&mut d, &mut got, &dg(8, 1, &[&hdr(0, 2).to_bytes()])).unwrap();
    push(&mut d, &mut got, &dg(8, 2, &[&hdr(0, 3).to_bytes()])).unwrap();
    assert_eq!(got.len(), 201, "nothing delivered twice");
    let s = d.stats();
    assert_eq!((s.rejected, s.seq_gaps, s.lost_records), (5, 0, 0));
    // The stream goes on.
    push(&mut d, &mut got, &npkt_dgram(201, &[202])).unwrap();
    assert_eq!(got.len(), 202);
}

#[test]
fn injected_seqnos_far_ahead_are_rejected_and_cost_the_stream_nothing() {
    // Issue 12: 20 injected 8-byte datagrams destroyed most of a capture.
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    let mut next = 0u32;
    let mut npkt = 1u32;
    let mut lcg = 12345u32;
    for _ in 0..20 {
        for _ in 0..5 {
            push(&mut d, &mut got, &npkt_dgram(next, &[npkt])).unwrap();
            next += 1;
            npkt += 1;
        }
        lcg = lcg.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let far = next.wrapping_add(MAX_AHEAD + 1 + lcg % (1 << 30));
        push(&mut d, &mut got, &dg(NO_HEADER, far, &[])).unwrap();
    }
    assert_eq!(got.len(), 100, "every record of the stream delivered");
    let s = d.stats();
    assert_eq!(
        (s.rejected, s.seq_gaps, s.lost_datagrams, s.lost_records),
        (20, 0, 0, 0)
    );
}

#[test]
fn a_run_far_ahead_moves_the_stream_there() {
    // A long stall of the receiver: the stream really is far ahead.
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    push(&mut d, &mut got, &npkt_dgram(0, &[1])).unwrap();
    let far = 1 + MAX_AHEAD + 10;
    for i in 0..RESYNC_RUN + 1 {
        push(&mut d, &mut got, &npkt_dgram(far + i, &[far + i + 1])).unwrap();
    }
    // The first RESYNC_RUN − 1 of the run confirm it and are lost.
    assert_eq!(got.len(), 3);
    let s = d.stats();
    assert_eq!(
        (s.rejected, s.seq_gaps, s.lost_datagrams),
        (
            u64::from(RESYNC_RUN - 1),
            1,
            u64::from(far + RESYNC_RUN - 2)
        )
    );
}

#[test]
fn npkt_gaps_count_no_more_records_than_the_lost_datagrams_held() {
    // Issue 12: forged npkts inflated the loss counters to 10^12.
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    // 100-byte payloads: at most 5 records of 20 bytes each, +1 slack.
    push(&mut d, &mut got, &npkt_dgram(0, &[1, 2, 3, 4, 5])).unwrap();
    push(&mut d, &mut got, &npkt_dgram(1, &[1 << 30])).unwrap();
    assert_eq!(d.stats().lost_records, 6, "no datagram lost: one's worth");
    // Two datagrams lost: at most 3 datagrams' worth.
    push(&mut d, &mut got, &npkt_dgram(4, &[u32::MAX / 2])).unwrap();
    assert_eq!(d.stats().lost_records, 6 + 18);
    assert_eq!(d.stats().lost_datagrams, 2);
}

/// One datagram holding empty records with these npkts.
fn npkt_dgram(seqno: u32, npkts: &[u32]) -> Vec<u8> {
    let recs: Vec<[u8; 20]> = npkts.iter().map(|&n| hdr(0, n).to_bytes()).collect();
    let parts: Vec<&[u8]> = recs.iter().map(|r| &r[..]).collect();
    dg(8, seqno, &parts)
}

#[test]
fn npkt_gaps_count_lost_records() {
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    // 3 and 4 lost; then a step back (3) is a new baseline, not a loss.
    push(&mut d, &mut got, &npkt_dgram(0, &[1, 2, 5, 3, 4])).unwrap();
    assert_eq!(got.len(), 5);
    assert_eq!(d.stats().lost_records, 2);
}

#[test]
fn npkt_wraps_at_u32_max() {
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    push(
        &mut d,
        &mut got,
        &npkt_dgram(0, &[u32::MAX - 1, u32::MAX, 0, 1]),
    )
    .unwrap();
    assert_eq!(d.stats().lost_records, 0);
    push(&mut d, &mut got, &npkt_dgram(1, &[4, u32::MAX - 1, 2])).unwrap();
    assert_eq!(got.len(), 7);
    // 1 → 4: 2 lost; 4 → MAX-1 is a step back; MAX-1 → 2: 3 lost.
    assert_eq!(d.stats().lost_records, 5);
}

#[test]
fn first_record_sets_the_npkt_baseline() {
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    push(
        &mut d,
        &mut got,
        &dg(8, 7, &[&hdr(0, 1000).to_bytes(), &hdr(0, 1001).to_bytes()]),
    )
    .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((d.stats().lost_records, d.stats().lost_datagrams), (0, 0));
}

#[test]
fn caplen_below_len_is_normal() {
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    let mut h = hdr(3, 1);
    h.len = 65535;
    push(&mut d, &mut got, &dg(8, 0, &[&h.to_bytes(), &[1, 2, 3]])).unwrap();
    assert_eq!(got, vec![(h, vec![1, 2, 3])]);
    assert_eq!(d.stats().malformed, 0);
}

#[test]
fn malformed_headers_are_typed_errors_and_change_nothing() {
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    let rec = [&hdr(2, 1).to_bytes()[..], &[9, 9]].concat();
    let cases: Vec<(Vec<u8>, DeframeError)> = vec![
        (vec![0, 110, 0, 8, 0, 0, 0], DeframeError::Short(7)),
        (vec![], DeframeError::Short(0)),
        (
            {
                let mut g = dg(8, 0, &[&rec]);
                g[1] = 7;
                g
            },
            DeframeError::NotUdpStr {
                ver: 0,
                msg_type: 7,
            },
        ),
        (
            {
                let mut g = dg(8, 0, &[&rec]);
                g[0] = 1;
                g
            },
            DeframeError::NotUdpStr {
                ver: 1,
                msg_type: 110,
            },
        ),
        (
            dg(4, 0, &[&rec]),
            DeframeError::BadIndex { idx: 4, len: 30 },
        ),
        (
            dg(0, 0, &[&rec]),
            DeframeError::BadIndex { idx: 0, len: 30 },
        ),
        (
            dg(30, 0, &[&rec]),
            DeframeError::BadIndex { idx: 30, len: 30 },
        ),
        (
            dg(11, 0, &[&rec]),
            DeframeError::BadIndex { idx: 11, len: 30 },
        ), // header would end past 30
        (
            dg(1000, 0, &[&rec]),
            DeframeError::BadIndex { idx: 1000, len: 30 },
        ),
    ];
    let n = cases.len() as u64;
    for (g, want) in cases {
        assert_eq!(push(&mut d, &mut got, &g), Err(want));
    }
    assert!(got.is_empty());
    assert_eq!(
        *d.stats(),
        DeframerStats {
            malformed: n,
            ..Default::default()
        }
    );
    // Nothing was taken as a baseline: seqno 0 is now the first datagram.
    push(&mut d, &mut got, &dg(8, 0, &[&rec])).unwrap();
    assert_eq!(got, vec![(hdr(2, 1), vec![9, 9])]);
    assert_eq!((d.stats().datagrams, d.stats().seq_gaps), (1, 0));
}

#[test]
fn impossible_caplen_is_malformed_and_forces_a_resync() {
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    let huge = PktHdr {
        caplen: u32::MAX,
        ..hdr(0, 1)
    };
    push(&mut d, &mut got, &dg(8, 0, &[&huge.to_bytes(), &[0; 30]])).unwrap();
    let over_max = hdr(101, 2);
    push(
        &mut d,
        &mut got,
        &dg(8, 1, &[&over_max.to_bytes(), &[0; 30]]),
    )
    .unwrap();
    let over_len = PktHdr {
        len: 2,
        ..hdr(3, 3)
    };
    push(
        &mut d,
        &mut got,
        &dg(8, 2, &[&over_len.to_bytes(), &[0; 3]]),
    )
    .unwrap();
    // A valid record after one with a bad caplen in the same datagram is not
    // reachable; the next datagram resyncs at its firsthdridx, skipping the
    // continuation bytes in front.
    push(
        &mut d,
        &mut got,
        &dg(13, 3, &[&[7; 5], &hdr(1, 4).to_bytes(), &[4]]),
    )
    .unwrap();
    assert_eq!(got, vec![(hdr(1, 4), vec![4])]);
    let s = d.stats();
    assert_eq!(
        (s.malformed, s.records, s.truncated_records, s.datagrams),
        (3, 1, 0, 4)
    );
}

#[test]
fn trailing_bytes_too_short_for_a_header_are_malformed() {
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    push(
        &mut d,
        &mut got,
        &dg(8, 0, &[&hdr(1, 1).to_bytes(), &[1], &[0; 19]]),
    )
    .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(d.stats().malformed, 1);
    // The next datagram resyncs.
    push(&mut d, &mut got, &dg(8, 1, &[&hdr(1, 2).to_bytes(), &[2]])).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(d.stats().malformed, 1);
}

#[test]
fn firsthdridx_that_contradicts_the_stream_is_malformed() {
    let (dgrams, _, d2) = spanning();
    let mut d = Deframer::new(1000);
    let mut got = Got::new();
    push(&mut d, &mut got, &dgrams[0]).unwrap();
    // In sequence, but claims a record header at 8 while 48 bytes of record 1 are owed.
    let mut lie = dgrams[1].clone();
    lie[2..4].copy_from_slice(&8u16.to_be_bytes());
    lie.truncate(8);
    lie.extend_from_slice(&hdr(4, 2).to_bytes());
    lie.extend_from_slice(&d2);
    push(&mut d, &mut got, &lie).unwrap();
    assert_eq!(got, vec![(hdr(4, 2), d2)]);
    let s = d.stats();
    assert_eq!((s.malformed, s.truncated_records, s.records), (1, 1, 1));
}

#[test]
fn reset_counts_the_partial_record_and_clears_expectations() {
    let (dgrams, _, _) = spanning();
    let mut d = Deframer::new(1000);
    let mut got = Got::new();
    push(&mut d, &mut got, &dgrams[0]).unwrap();
    d.reset();
    assert_eq!(d.stats().truncated_records, 1);
    // A new capture: seqno 0 again, npkt 1 again, no gap, no duplicate.
    push(&mut d, &mut got, &dgrams[0]).unwrap();
    push(&mut d, &mut got, &dgrams[1]).unwrap();
    push(&mut d, &mut got, &dgrams[2]).unwrap();
    assert_eq!(got.len(), 2);
    let s = d.stats();
    assert_eq!(
        (
            s.duplicates,
            s.seq_gaps,
            s.lost_records,
            s.truncated_records
        ),
        (0, 0, 0, 1)
    );
}

#[test]
fn max_caplen_is_capped() {
    assert_eq!(
        Deframer::new(usize::MAX).max_caplen(),
        rpcap::udpstr::MAX_CAPLEN
    );
    assert_eq!(Deframer::new(1500).max_caplen(), 1500);
}

#[test]
fn framer_output_at_size_64_deframes_byte_exact() {
    let mut f = Framer::new(64).unwrap();
    let mut b = Batch::new(64, 16);
    let recs: Vec<(PktHdr, Vec<u8>)> = [100usize, 10, 0, 44, 45, 1]
        .iter()
        .enumerate()
        .map(|(i, &n)| (hdr(n, i as u32 + 1), data(n, i as u8)))
        .collect();
    for (h, p) in &recs {
        f.push(&mut b, h, p).unwrap();
    }
    f.flush(&mut b);
    let mut d = Deframer::new(100);
    let mut got = Got::new();
    for g in b.datagrams() {
        push(&mut d, &mut got, g).unwrap();
    }
    assert_eq!(got, recs);
    assert_eq!(d.stats().malformed, 0);
}
