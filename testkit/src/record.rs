//! Records (a capture header and the bytes) as a sender forwards them:
//! generated test records, framed into udpstr datagrams, and the pcap file a
//! sensor must write for them.

use rpcap::udpstr::{Batch, Framer};
use rpcap::PktHdr;

/// A record of the test traffic: header and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub hdr: PktHdr,
    pub data: Vec<u8>,
}

/// `n` records of varied sizes, npkt 1..=n, bytes tagged with `tag`.
pub fn records(n: u32, tag: u8) -> Vec<Record> {
    (1..=n)
        .map(|i| {
            let caplen = 20 + (i * 37) % 400;
            let data: Vec<u8> = (0..caplen).map(|b| (b as u8) ^ tag ^ (i as u8)).collect();
            Record {
                hdr: PktHdr {
                    ts_sec: 1_700_000_000 + i,
                    ts_usec: i * 1000,
                    caplen,
                    len: caplen + 10,
                    npkt: i,
                },
                data,
            }
        })
        .collect()
}

/// Frames records into udpstr datagrams of `size` bytes; also returns, per
/// record, the datagram indices it spans.
pub fn frame(recs: &[Record], size: usize) -> (Vec<Vec<u8>>, Vec<(usize, usize)>) {
    let mut framer = Framer::new(size).unwrap();
    let mut batch = Batch::new(size, Batch::min_slots(size, 1000).max(8));
    let mut dgrams: Vec<Vec<u8>> = Vec::new();
    let mut spans = Vec::new();
    for r in recs {
        let first = dgrams.len() + batch.ready();
        framer.push(&mut batch, &r.hdr, &r.data).unwrap();
        // The record ends in the partial datagram, or in the last complete one
        // if it exactly filled it.
        let has_partial = framer.has_partial(&batch);
        let last = dgrams.len() + batch.ready() - usize::from(!has_partial);
        spans.push((first, last));
        dgrams.extend(batch.datagrams().map(<[u8]>::to_vec));
        batch.consume();
    }
    if framer.flush(&mut batch) {
        dgrams.extend(batch.datagrams().map(<[u8]>::to_vec));
        batch.consume();
    }
    (dgrams, spans)
}

/// The pcap file the sensor must write for these records.
pub fn pcap_bytes(recs: &[&Record], snaplen: u32, linktype: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0xA1B2_C3D4u32.to_ne_bytes());
    v.extend_from_slice(&2u16.to_ne_bytes());
    v.extend_from_slice(&4u16.to_ne_bytes());
    for x in [0u32, 0, snaplen, linktype] {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    for r in recs {
        for x in [r.hdr.ts_sec, r.hdr.ts_usec, r.hdr.caplen, r.hdr.len] {
            v.extend_from_slice(&x.to_ne_bytes());
        }
        v.extend_from_slice(&r.data);
    }
    v
}
