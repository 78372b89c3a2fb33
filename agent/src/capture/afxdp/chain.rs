//! Multi-buffer descriptor chains (`XDP_USE_SG`, kernel >= 6.6): a frame
//! longer than one UMEM chunk arrives as a chain of RX descriptors, every
//! one but the last flagged `XDP_PKT_CONTD`. [`Chain`] hands such a frame
//! out as the pieces in its chunks, in place, and keeps those chunks out of
//! the fill ring until the frame is complete; the framer gathers the pieces
//! straight into the datagram, so a jumbo frame is copied once, like a
//! small one. Pure logic over ranges (no memory of its own, no `unsafe`):
//! the socket hands it descriptors and the bytes behind them, so it is
//! tested without a kernel.

use std::ops::Range;

/// The longest frame a chain may carry: the largest IP packet (65535) with
/// an Ethernet header and VLAN tags, rounded up. Longer chains (or chains
/// of more than [`MAX_PIECES`] descriptors) are dropped whole and counted
/// ([`XskStats::chain_dropped`](super::socket::XskStats::chain_dropped)).
pub const MAX_CHAIN: usize = 65536 + 256;

/// Most pieces a chain may have: [`MAX_CHAIN`] in full chunks, with room
/// to spare for a driver that fills chunks partly (zero-copy).
pub const MAX_PIECES: usize = 48;

/// One RX descriptor as [`Chain::push`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Desc {
    /// The chunk it is in.
    pub chunk: u64,
    /// Its bytes' range in the UMEM (`None`: outside the UMEM).
    pub part: Option<Range<usize>>,
    /// Its timestamp: read only where [`Chain::starts_frame`], ignored
    /// otherwise.
    pub stamp: u64,
    /// More of its frame follows (`XDP_PKT_CONTD`).
    pub more: bool,
}

/// Gathers multi-buffer descriptor chains: a frame is handed out as the
/// pieces of its descriptors, borrowed in place, and the chunks of a chain
/// in progress are held back from the fill ring until it ends (so a chain
/// cut between rounds stays intact). Kept apart from the rings so the logic
/// is testable without a kernel.
#[derive(Debug)]
pub(super) struct Chain {
    /// The chain in progress: each descriptor's chunk and UMEM range.
    pieces: Vec<(u64, Range<usize>)>,
    /// Longest chain in bytes (0: the socket takes no chains).
    max: usize,
    /// Bytes of the chain in progress so far.
    len: usize,
    /// A chain is in progress (its earlier descriptors were seen, possibly
    /// in an earlier round).
    open: bool,
    /// The timestamp of the chain in progress (its first descriptor's).
    stamp: u64,
    /// The chain in progress is too long (or had a bad descriptor): its
    /// remaining descriptors are skipped and the chain counted at its end.
    dropping: bool,
    pub dropped: u64,
}

impl Chain {
    /// Chains of at most `max` bytes (0: none; every chain is dropped).
    pub(super) fn new(max: usize) -> Chain {
        Chain {
            pieces: Vec::with_capacity(if max > 0 { MAX_PIECES } else { 0 }),
            max,
            len: 0,
            open: false,
            stamp: 0,
            dropping: false,
            dropped: 0,
        }
    }

    /// Whether the next descriptor starts a frame (rather than continuing
    /// a chain): only such a descriptor has a timestamp in front of it.
    #[inline]
    pub(super) fn starts_frame(&self) -> bool {
        !self.open
    }

    /// One RX descriptor (see [`Desc`]). When it completes a frame, calls
    /// `f` with the frame's pieces (`bytes` of each range) and its first
    /// descriptor's stamp. Calls `free` for every chunk once nothing refers
    /// to it any more: a lone descriptor's at once, a chain's at its end.
    #[inline]
    pub(super) fn push<'u>(
        &mut self,
        d: Desc,
        bytes: impl Fn(Range<usize>) -> &'u [u8],
        f: &mut impl FnMut(&[&[u8]], u64),
        free: &mut impl FnMut(u64),
    ) {
        let Desc {
            chunk,
            part,
            stamp,
            more,
        } = d;
        if !self.open && !more {
            match part {
                Some(r) => f(&[bytes(r)], stamp),
                None => self.dropped += 1,
            }
            free(chunk);
            return;
        }
        if !self.open {
            (self.open, self.len, self.dropping, self.stamp) = (true, 0, false, stamp);
        }
        let fits =
            |r: &Range<usize>| self.pieces.len() < MAX_PIECES && self.len + r.len() <= self.max;
        match part.filter(fits) {
            Some(r) if !self.dropping => {
                self.len += r.len();
                self.pieces.push((chunk, r));
            }
            _ => {
                self.dropping = true;
                for (c, _) in self.pieces.drain(..) {
                    free(c);
                }
                free(chunk);
            }
        }
        if !more {
            self.open = false;
            if self.dropping {
                self.dropped += 1;
                return;
            }
            let mut out: [&[u8]; MAX_PIECES] = [&[]; MAX_PIECES];
            for (o, (_, r)) in out.iter_mut().zip(&self.pieces) {
                *o = bytes(r.clone());
            }
            f(&out[..self.pieces.len()], self.stamp);
            for (c, _) in self.pieces.drain(..) {
                free(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::afxdp::socket::{BindInfo, CHUNK_SIZE};

    /// A UMEM of 64 chunks under a chain: each descriptor fed is written
    /// at the start of the next chunk; the chunks the chain frees are kept.
    struct Fake {
        umem: Vec<u8>,
        next: usize,
        freed: Vec<u64>,
    }

    /// A frame as the chain handed it out: its bytes, its number of pieces
    /// and its stamp.
    type Out = (Vec<u8>, usize, u64);

    impl Fake {
        fn new() -> Fake {
            Fake {
                umem: vec![0; 64 * CHUNK_SIZE],
                next: 0,
                freed: Vec::new(),
            }
        }

        /// Feeds `parts` (bytes or None for a descriptor outside the UMEM,
        /// XDP_PKT_CONTD) through `c`, each stamped with its index + 1
        /// where it may carry a stamp.
        fn run(&mut self, c: &mut Chain, parts: &[(Option<Vec<u8>>, bool)]) -> Vec<Out> {
            let mut out = Vec::new();
            for (i, (p, more)) in parts.iter().enumerate() {
                let at = self.next % 64 * CHUNK_SIZE;
                self.next += 1;
                let range = p.as_ref().map(|b| {
                    self.umem[at..at + b.len()].copy_from_slice(b);
                    at..at + b.len()
                });
                let stamp = if c.starts_frame() { i as u64 + 1 } else { 0 };
                let (umem, freed) = (&self.umem, &mut self.freed);
                let d = Desc {
                    chunk: at as u64,
                    part: range,
                    stamp,
                    more: *more,
                };
                c.push(
                    d,
                    |r| &umem[r],
                    &mut |pieces: &[&[u8]], s| out.push((pieces.concat(), pieces.len(), s)),
                    &mut |chunk| freed.push(chunk),
                );
            }
            out
        }

        /// Every chunk fed so far, each freed exactly once.
        fn all_freed(&self) -> bool {
            let mut f = self.freed.clone();
            f.sort_unstable();
            f == (0..self.next as u64)
                .map(|i| i * CHUNK_SIZE as u64)
                .collect::<Vec<_>>()
        }
    }

    #[test]
    fn a_frame_carries_its_first_descriptors_stamp() {
        let mut c = Chain::new(10_000);
        let out = Fake::new().run(
            &mut c,
            &[
                (Some(bytes(60, 1)), false),
                (Some(bytes(1792, 2)), true),
                (Some(bytes(1792, 3)), true),
                (Some(bytes(10, 4)), false),
                (Some(bytes(64, 5)), false),
            ],
        );
        let stamps: Vec<u64> = out.iter().map(|o| o.2).collect();
        assert_eq!(stamps, [1, 2, 5], "a chain keeps its first descriptor's");
        // A chain cut between rounds too.
        let (mut c, mut u) = (Chain::new(8192), Fake::new());
        assert!(u.run(&mut c, &[(Some(bytes(1792, 1)), true)]).is_empty());
        assert!(!c.starts_frame());
        let out = u.run(&mut c, &[(Some(bytes(9, 1)), false)]);
        assert_eq!((out[0].0.len(), out[0].2), (1801, 1));
        assert!(c.starts_frame());
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn frames_come_out_as_their_pieces_in_order() {
        let (mut c, mut u) = (Chain::new(10_000), Fake::new());
        let (a, b1, b2, b3, d) = (
            bytes(60, 1),
            bytes(1792, 2),
            bytes(1792, 3),
            bytes(500, 4),
            bytes(1514, 5),
        );
        let out = u.run(
            &mut c,
            &[
                (Some(a.clone()), false),
                (Some(b1.clone()), true),
                (Some(b2.clone()), true),
                (Some(b3.clone()), false),
                (Some(d.clone()), false),
            ],
        );
        let joined: Vec<u8> = [b1, b2, b3].concat();
        assert_eq!(out.len(), 3);
        assert_eq!(
            (&out[0].0, out[0].1),
            (&a, 1),
            "a lone descriptor: one piece"
        );
        assert_eq!(
            (&out[1].0, out[1].1),
            (&joined, 3),
            "a chain: its pieces, in order"
        );
        assert_eq!((&out[2].0, out[2].1), (&d, 1));
        assert_eq!(c.dropped, 0);
        assert!(u.all_freed());
    }

    #[test]
    fn a_chain_cut_between_rounds_holds_its_chunks_until_it_ends() {
        let (mut c, mut u) = (Chain::new(8192), Fake::new());
        let (p1, p2) = (bytes(1792, 9), bytes(100, 10));
        assert!(u.run(&mut c, &[(Some(p1.clone()), true)]).is_empty());
        assert!(
            u.freed.is_empty(),
            "the first piece's chunk is still in use"
        );
        let out = u.run(&mut c, &[(Some(p2.clone()), false)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, [p1, p2].concat());
        assert!(u.all_freed());
    }

    #[test]
    fn a_chain_over_the_limit_is_dropped_whole_and_counted() {
        let (mut c, mut u) = (Chain::new(4000), Fake::new());
        let big = [
            (Some(bytes(1792, 1)), true),
            (Some(bytes(1792, 2)), true),
            (Some(bytes(1792, 3)), true), // 5376 > 4000
            (Some(bytes(10, 4)), false),
        ];
        let ok = bytes(3000, 6);
        let mut parts = big.to_vec();
        parts.push((Some(ok[..1792].to_vec()), true));
        parts.push((Some(ok[1792..].to_vec()), false));
        let out = u.run(&mut c, &parts);
        assert_eq!(out.len(), 1, "only the chain that fits");
        assert_eq!(out[0].0, ok, "the next chain starts clean");
        assert_eq!(c.dropped, 1);
        // Exactly the limit fits.
        let exact = bytes(4000, 8);
        let out = u.run(
            &mut c,
            &[
                (Some(exact[..2000].to_vec()), true),
                (Some(exact[2000..].to_vec()), false),
            ],
        );
        assert_eq!(out[0].0, exact);
        assert_eq!(c.dropped, 1);
        // More pieces than MAX_PIECES, however short.
        let many: Vec<_> = (0..=MAX_PIECES)
            .map(|i| (Some(bytes(10, i as u8)), i < MAX_PIECES))
            .collect();
        assert!(u.run(&mut c, &many).is_empty());
        assert_eq!(c.dropped, 2);
        assert!(u.all_freed(), "a dropped chain's chunks go back too");
    }

    #[test]
    fn a_bad_descriptor_drops_its_frame_or_chain() {
        let (mut c, mut u) = (Chain::new(8192), Fake::new());
        let out = u.run(
            &mut c,
            &[
                (None, false),
                (Some(bytes(100, 1)), true),
                (None, true),
                (Some(bytes(100, 2)), false),
                (Some(bytes(64, 3)), false),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, bytes(64, 3));
        assert_eq!(c.dropped, 2);
        assert!(u.all_freed());
    }

    #[test]
    fn a_socket_without_multi_buffer_holds_one_chunk_per_frame() {
        let mut c = Chain::new(0);
        let out = Fake::new().run(
            &mut c,
            &[
                (Some(bytes(1500, 1)), false),
                (Some(bytes(1792, 1)), true),
                (Some(bytes(10, 1)), false),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(c.dropped, 1);
        let info = BindInfo {
            zero_copy: false,
            busy_poll: false,
            multi_buffer: false,
        };
        assert_eq!(info.max_frame(), 1792);
        assert!(info.max_frame() >= 1500 + 14 + 8, "MTU 1500 with QinQ fits");
        assert_eq!(
            BindInfo {
                multi_buffer: true,
                ..info
            }
            .max_frame(),
            MAX_CHAIN
        );
    }
}
