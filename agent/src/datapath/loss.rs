//! Which packets a failed udpstr datagram took with it.
//!
//! A packet is lost when any datagram carrying a part of its record is lost:
//! the records whose header lies in the failed datagram, and the record whose
//! tail continues into it from an earlier datagram. Headers carry npkt, so
//! the records are identified by npkt and each is counted once.

use rpcap::udpstr::{DGRAM_HEADER_LEN, NO_HEADER};
use rpcap::PktHdr;

fn first_hdr_idx(d: &[u8]) -> Option<usize> {
    let idx = u16::from_be_bytes([*d.get(2)?, *d.get(3)?]);
    (idx != NO_HEADER && (idx as usize) >= DGRAM_HEADER_LEN).then_some(idx as usize)
}

/// The npkt of every record header in a datagram, in order.
fn headers(d: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let mut off = first_hdr_idx(d).unwrap_or(d.len());
    std::iter::from_fn(move || {
        let h = PktHdr::parse(d.get(off..)?)?;
        off = off.saturating_add(PktHdr::LEN + h.caplen as usize);
        Some(h.npkt)
    })
}

/// npkt of the last record header in `d`, if it has one.
pub fn last_npkt(d: &[u8]) -> Option<u32> {
    headers(d).last()
}

/// Counts packets lost across a batch, records once each.
#[derive(Debug, Default)]
pub struct LossTracker {
    /// Highest npkt already counted as lost.
    counted: u32,
    /// npkt of the last record header sent before the current batch.
    carry: u32,
}

impl LossTracker {
    pub fn reset(&mut self) {
        *self = LossTracker::default();
    }

    /// Packets lost with datagram `i` of a batch whose datagrams are `all(0..)`.
    pub fn lost<'a>(&mut self, all: impl Fn(usize) -> &'a [u8], i: usize) -> u64 {
        let d = all(i);
        let mut lost = 0;
        let mut count = |npkt: u32, counted: &mut u32| {
            if npkt > *counted {
                *counted = npkt;
                lost += 1;
            }
        };
        let starts_with_record = first_hdr_idx(d) == Some(DGRAM_HEADER_LEN);
        if !starts_with_record && d.len() > DGRAM_HEADER_LEN {
            // Continuation bytes: the record is the last one whose header came before.
            let cont = match headers(d).next() {
                Some(first) => Some(first.wrapping_sub(1)),
                None => (0..i)
                    .rev()
                    .find_map(|p| last_npkt(all(p)))
                    .or(Some(self.carry)),
            };
            if let Some(c) = cont.filter(|&c| c > 0) {
                count(c, &mut self.counted);
            }
        }
        for npkt in headers(d) {
            count(npkt, &mut self.counted);
        }
        lost
    }

    /// After a batch: remembers the last record header it held.
    pub fn end_batch<'a>(&mut self, n: usize, all: impl Fn(usize) -> &'a [u8]) {
        if let Some(n) = (0..n).rev().find_map(|i| last_npkt(all(i))) {
            self.carry = n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dgram(idx: u16, body: &[u8]) -> Vec<u8> {
        let mut d = vec![0, 110];
        d.extend_from_slice(&idx.to_be_bytes());
        d.extend_from_slice(&0u32.to_be_bytes());
        d.extend_from_slice(body);
        d
    }

    fn rec(npkt: u32, caplen: u32) -> Vec<u8> {
        PktHdr {
            ts_sec: 0,
            ts_usec: 0,
            caplen,
            len: caplen,
            npkt,
        }
        .to_bytes()
        .to_vec()
    }

    #[test]
    fn counts_headers_and_continuations_once() {
        // d0: record 1 (10 bytes) + record 2 header and 5 of its 30 bytes.
        let mut b0 = rec(1, 10);
        b0.extend([0; 10]);
        b0.extend(rec(2, 30));
        b0.extend([0; 5]);
        let d0 = dgram(8, &b0);
        // d1: 20 continuation bytes of record 2 only.
        let d1 = dgram(NO_HEADER, &[0; 20]);
        // d2: last 5 bytes of record 2, then record 3 (4 bytes).
        let mut b2 = vec![0; 5];
        b2.extend(rec(3, 4));
        b2.extend([0; 4]);
        let d2 = dgram(8 + 5, &b2);
        let v: Vec<&[u8]> = vec![&d0, &d1, &d2];
        let all = |i: usize| v[i];

        let mut t = LossTracker::default();
        assert_eq!(t.lost(all, 1), 1); // record 2
        assert_eq!(t.lost(all, 2), 1); // record 3 (2 already counted)
        let mut t = LossTracker::default();
        assert_eq!(t.lost(all, 0), 2);
        assert_eq!(t.lost(all, 1), 0);
        let mut t = LossTracker::default();
        assert_eq!(t.lost(all, 2), 2); // continuation of 2, and 3
        t.end_batch(3, all);
        // Next batch starts with continuation bytes of record 3.
        let d3 = dgram(NO_HEADER, &[0; 3]);
        let next = |_: usize| &d3[..];
        assert_eq!(t.lost(next, 0), 0); // 3 already counted
        let mut t = LossTracker::default();
        t.end_batch(3, all);
        assert_eq!(t.lost(next, 0), 1);
    }
}
