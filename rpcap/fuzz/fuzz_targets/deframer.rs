//! Random datagram sequences into a Deframer: it must never panic, every
//! record it delivers must have caplen ≤ max_caplen and exactly caplen bytes,
//! and its counters must agree with what it delivered.
//!
//! Input: 2 bytes of max_caplen, then datagrams as `len u16 LE | bytes`.
//! One byte in front of a datagram with the top bit set asks for a `reset`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcap::udpstr::Deframer;

fuzz_target!(|input: &[u8]| {
    let Some((max, mut rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let max_caplen = usize::from(u16::from_le_bytes(*max)) % 3000;
    let mut d = Deframer::new(max_caplen);
    let (mut records, mut bytes) = (0u64, 0u64);
    while let Some((&ctl, tail)) = rest.split_first() {
        if ctl & 0x80 != 0 {
            d.reset();
        }
        let Some((len, tail)) = tail.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (dgram, tail) = tail.split_at(len);
        rest = tail;
        let _ = d.push(dgram, |h, data| {
            assert!(h.caplen as usize <= max_caplen);
            assert!(h.caplen <= h.len);
            assert_eq!(data.len(), h.caplen as usize);
            records += 1;
            bytes += data.len() as u64;
        });
    }
    let s = d.stats();
    assert_eq!((s.records, s.bytes), (records, bytes));
    assert!(s.datagrams + s.duplicates + s.reordered + s.malformed > 0 || records == 0);
});
