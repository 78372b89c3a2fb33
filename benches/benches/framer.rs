//! udpstr framer and deframer throughput: records of 64 and 1500 packet bytes
//! into 1472-byte datagrams (the default size), one core.
//!
//! Framer: records pushed into a 64-slot batch; a full batch is "sent" by
//! `consume` (no syscall), as the datapath does after sendmmsg.
//! Deframer: the same records, framed once, pushed datagram by datagram into a
//! deframer (reset per iteration so seqnos start over); the callback sums caplen.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rpcap::udpstr::{Batch, BatchFull, Deframer, Framer, DEFAULT_DGRAM_SIZE};
use rpcap::PktHdr;

const RECORDS: usize = 4096;
const SIZES: [usize; 2] = [64, 1500];
const SLOTS: usize = 64;

fn hdr(caplen: usize, npkt: u32) -> PktHdr {
    PktHdr {
        ts_sec: 1_700_000_000,
        ts_usec: npkt % 1_000_000,
        caplen: caplen as u32,
        len: caplen as u32,
        npkt,
    }
}

fn packet(size: usize) -> Vec<u8> {
    (0..size).map(|i| i as u8).collect()
}

fn bench_framer(c: &mut Criterion) {
    let mut g = c.benchmark_group("udpstr_framer");
    for size in SIZES {
        let data = packet(size);
        g.throughput(Throughput::Elements(RECORDS as u64));
        g.bench_with_input(BenchmarkId::new("push", size), &size, |b, &size| {
            let mut f = Framer::new(DEFAULT_DGRAM_SIZE).unwrap();
            let mut batch = Batch::new(DEFAULT_DGRAM_SIZE, SLOTS);
            let mut npkt = 0u32;
            b.iter(|| {
                for _ in 0..RECORDS {
                    npkt = npkt.wrapping_add(1);
                    let h = hdr(size, npkt);
                    if f.push(&mut batch, &h, &data) == Err(BatchFull) {
                        black_box(batch.datagram(0));
                        batch.consume();
                        f.push(&mut batch, &h, &data).unwrap();
                    }
                }
            });
        });
    }
    g.finish();
}

/// `RECORDS` records of `size` bytes framed into datagrams.
fn framed(size: usize) -> Vec<Vec<u8>> {
    let data = packet(size);
    let mut f = Framer::new(DEFAULT_DGRAM_SIZE).unwrap();
    let mut batch = Batch::new(DEFAULT_DGRAM_SIZE, RECORDS * (size + 20) / 1464 + 4);
    for n in 0..RECORDS {
        f.push(&mut batch, &hdr(size, n as u32 + 1), &data).unwrap();
    }
    f.flush(&mut batch);
    batch.datagrams().map(<[u8]>::to_vec).collect()
}

fn bench_deframer(c: &mut Criterion) {
    let mut g = c.benchmark_group("udpstr_deframer");
    for size in SIZES {
        let dgrams = framed(size);
        g.throughput(Throughput::Elements(RECORDS as u64));
        g.bench_with_input(BenchmarkId::new("push", size), &dgrams, |b, dgrams| {
            let mut d = Deframer::new(65535);
            b.iter(|| {
                d.reset();
                let mut sum = 0u64;
                for dg in dgrams {
                    d.push(dg, |h, p| sum += u64::from(h.caplen) + p.len() as u64)
                        .unwrap();
                }
                assert_eq!(sum, (RECORDS * size * 2) as u64);
                black_box(sum)
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench_framer, bench_deframer);
criterion_main!(benches);
