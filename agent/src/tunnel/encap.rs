//! Tunnel headers for export, sans-IO: pure functions writing the header of
//! one captured Ethernet frame into a byte slice, followed by the frame.
//! The kernel adds the outer IP (and, for VXLAN, UDP) header: VXLAN goes
//! out of a connected UDP socket, GRE and ERSPAN out of a connected raw
//! IP socket of protocol 47 (see `datapath::sink::tunnel`).
//!
//! Layouts (network byte order):
//! - VXLAN (RFC 7348 §5): flags `0x08` (I: VNI valid), 3 reserved bytes,
//!   the 24-bit VNI, 1 reserved byte; 8 bytes.
//! - GRE (RFC 2784) with transparent Ethernet bridging: no flags, version
//!   0, protocol `0x6558`; 4 bytes (what a Linux `gretap` takes).
//! - ERSPAN type II (draft-foschiano-erspan §4.1, Linux `erspan.h`): GRE
//!   with the S bit and a sequence number (protocol `0x88BE`, 8 bytes),
//!   then `Ver=1 | VLAN`, `COS | En | T | Session ID`, `Reserved | Index`;
//!   16 bytes in all.
//! - ERSPAN type III (§4.2): GRE with S (protocol `0x22EB`), then
//!   `Ver=2 | VLAN`, `COS | BSO | T | Session ID`, a 32-bit timestamp,
//!   `SGT | P | FT | HW ID | D | Gra | O`; 20 bytes in all. The timestamp
//!   is the capture's in units of 100 µs (Gra = 0), as the Linux kernel's
//!   `erspan` device writes it: it wraps after about 5 days.
//!
//! One [`Encap`] per exported stream keeps its GRE sequence number, which
//! counts every frame encoded (ERSPAN only: VXLAN and TEB have none).

use super::{ETH_P_ERSPAN2, ETH_P_ERSPAN3, ETH_P_TEB};

/// VXLAN header bytes.
pub const VXLAN_HEADER: usize = 8;
/// GRE header bytes without options.
pub const GRE_HEADER: usize = 4;
/// GRE header bytes with a sequence number.
pub const GRE_SEQ_HEADER: usize = 8;
/// ERSPAN type II header bytes (after GRE).
pub const ERSPAN2_HEADER: usize = 8;
/// ERSPAN type III header bytes (after GRE, no platform subheader).
pub const ERSPAN3_HEADER: usize = 12;
/// Largest ERSPAN session ID (10 bits).
pub const MAX_SESSION: u16 = 0x3ff;
/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = 0xff_ffff;
/// Largest ERSPAN III hardware ID (6 bits).
pub const MAX_HWID: u8 = 0x3f;

/// GRE flag: a sequence number follows.
const GRE_S: u8 = 0x10;
/// VXLAN flag: the VNI is valid.
const VXLAN_I: u8 = 0x08;

/// Which tunnel, with its identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// VXLAN over UDP with this VNI (0..=[`MAX_VNI`]).
    Vxlan { vni: u32 },
    /// GRE with transparent Ethernet bridging.
    Gre,
    /// ERSPAN type II with this session ID (0..=[`MAX_SESSION`]).
    Erspan2 { session: u16 },
    /// ERSPAN type III with this session ID and hardware ID.
    Erspan3 { session: u16, hwid: u8 },
}

impl Kind {
    /// Whether it travels in UDP (VXLAN) rather than directly in IP (GRE).
    pub fn is_udp(&self) -> bool {
        matches!(self, Kind::Vxlan { .. })
    }

    /// Whether a frame larger than the path takes may be cut (ERSPAN's T
    /// bit says so); the others drop it.
    pub fn cuts(&self) -> bool {
        matches!(self, Kind::Erspan2 { .. } | Kind::Erspan3 { .. })
    }

    /// Bytes before the inner frame (after the kernel's IP/UDP header).
    pub fn header_len(&self) -> usize {
        match self {
            Kind::Vxlan { .. } => VXLAN_HEADER,
            Kind::Gre => GRE_HEADER,
            Kind::Erspan2 { .. } => GRE_SEQ_HEADER + ERSPAN2_HEADER,
            Kind::Erspan3 { .. } => GRE_SEQ_HEADER + ERSPAN3_HEADER,
        }
    }

    /// The name as in a `TunnelClient` line.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Vxlan { .. } => "vxlan",
            Kind::Gre => "gre",
            Kind::Erspan2 { .. } => "erspan2",
            Kind::Erspan3 { .. } => "erspan3",
        }
    }
}

/// What the header says about the frame besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    pub ts_sec: u32,
    pub ts_usec: u32,
    /// The frame's length on the wire (its captured length may be less).
    pub wire_len: u32,
}

/// How much of a frame goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// All of its captured bytes.
    Whole,
    /// Its first `n` bytes (ERSPAN, T bit set).
    Cut(usize),
    /// Nothing: larger than the path takes, and the tunnel cannot say it
    /// was cut (VXLAN, GRE).
    TooBig,
}

/// One exported stream's encapsulation: its kind and sequence number.
#[derive(Debug, Clone)]
pub struct Encap {
    kind: Kind,
    seq: u32,
}

impl Encap {
    pub fn new(kind: Kind) -> Encap {
        Encap { kind, seq: 0 }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The next GRE sequence number (ERSPAN).
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// How a frame of `caplen` captured bytes fits a tunnel payload of at
    /// most `room` bytes (the UDP payload for VXLAN, the IP payload for
    /// GRE/ERSPAN, as the path MTU allows).
    pub fn fit(&self, caplen: usize, room: usize) -> Fit {
        let room = room.saturating_sub(self.kind.header_len());
        if caplen <= room {
            Fit::Whole
        } else if self.kind.cuts() && room > 0 {
            Fit::Cut(room)
        } else {
            Fit::TooBig
        }
    }

    /// Writes the header and the first `take` bytes of the frame gathered
    /// from `parts` into `out` (at least `header_len + take` bytes); returns
    /// the bytes written. ERSPAN's T bit is set when `take` is less than the
    /// frame's wire length. Advances the sequence number.
    pub fn encode(
        &mut self,
        out: &mut [u8],
        parts: &[&[u8]],
        take: usize,
        info: &FrameInfo,
    ) -> usize {
        let h = self.write_header(out, parts, take, info);
        let mut at = h;
        let mut left = take;
        for p in parts {
            if left == 0 {
                break;
            }
            let n = p.len().min(left);
            out[at..at + n].copy_from_slice(&p[..n]);
            at += n;
            left -= n;
        }
        at
    }

    /// The header alone (see [`Encap::encode`]); returns its length.
    fn write_header(
        &mut self,
        out: &mut [u8],
        parts: &[&[u8]],
        take: usize,
        info: &FrameInfo,
    ) -> usize {
        let truncated = (take as u64) < u64::from(info.wire_len);
        match self.kind {
            Kind::Vxlan { vni } => {
                out[0] = VXLAN_I;
                out[1..4].fill(0);
                out[4..7].copy_from_slice(&vni.to_be_bytes()[1..4]);
                out[7] = 0;
                VXLAN_HEADER
            }
            Kind::Gre => {
                out[0..2].fill(0);
                out[2..4].copy_from_slice(&ETH_P_TEB.to_be_bytes());
                GRE_HEADER
            }
            Kind::Erspan2 { session } => {
                self.gre_seq(out, ETH_P_ERSPAN2);
                let e = &mut out[GRE_SEQ_HEADER..GRE_SEQ_HEADER + ERSPAN2_HEADER];
                // Ver 1, VLAN 0 (the frame keeps its own tag).
                e[0..2].copy_from_slice(&0x1000u16.to_be_bytes());
                // En: 3 when the frame carries its 802.1Q tag, else 0.
                let en: u16 = if vlan_tagged(parts) { 3 } else { 0 };
                let w = (en << 11) | (u16::from(truncated) << 10) | (session & MAX_SESSION);
                e[2..4].copy_from_slice(&w.to_be_bytes());
                // Reserved, index 0.
                e[4..8].fill(0);
                GRE_SEQ_HEADER + ERSPAN2_HEADER
            }
            Kind::Erspan3 { session, hwid } => {
                self.gre_seq(out, ETH_P_ERSPAN3);
                let e = &mut out[GRE_SEQ_HEADER..GRE_SEQ_HEADER + ERSPAN3_HEADER];
                e[0..2].copy_from_slice(&0x2000u16.to_be_bytes());
                // COS 0, BSO 0 (good frame or unknown).
                let w = (u16::from(truncated) << 10) | (session & MAX_SESSION);
                e[2..4].copy_from_slice(&w.to_be_bytes());
                e[4..8].copy_from_slice(&timestamp_100us(info).to_be_bytes());
                // SGT 0; P 0, FT 0 (Ethernet), HW ID, D 0 (ingress), Gra 0
                // (100 µs), O 0 (no platform subheader).
                e[8..10].fill(0);
                let w = u16::from(hwid & MAX_HWID) << 4;
                e[10..12].copy_from_slice(&w.to_be_bytes());
                GRE_SEQ_HEADER + ERSPAN3_HEADER
            }
        }
    }

    /// GRE with the S bit, `proto`, and the next sequence number.
    fn gre_seq(&mut self, out: &mut [u8], proto: u16) {
        out[0] = GRE_S;
        out[1] = 0;
        out[2..4].copy_from_slice(&proto.to_be_bytes());
        out[4..8].copy_from_slice(&self.seq.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
    }
}

/// The capture time in units of 100 µs, modulo 2^32 (ERSPAN III, Gra 0).
fn timestamp_100us(info: &FrameInfo) -> u32 {
    let units = u64::from(info.ts_sec) * 10_000 + u64::from(info.ts_usec) / 100;
    units as u32
}

/// Whether the frame's EtherType (bytes 12..14) is an 802.1Q or 802.1ad tag.
fn vlan_tagged(parts: &[&[u8]]) -> bool {
    let mut b = [0u8; 2];
    let mut got = 0;
    let mut skip = 12;
    for p in parts {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        for &x in &p[skip..] {
            if got == 2 {
                break;
            }
            b[got] = x;
            got += 1;
        }
        skip = 0;
        if got == 2 {
            break;
        }
    }
    got == 2 && matches!(u16::from_be_bytes(b), 0x8100 | 0x88a8)
}

/// A test-only parser: the reverse of [`Encap::encode`], written from the
/// specifications rather than from the encoder.
#[cfg(test)]
pub(crate) mod parse {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Parsed<'a> {
        pub kind: Kind,
        pub seq: Option<u32>,
        pub truncated: bool,
        pub timestamp: Option<u32>,
        pub inner: &'a [u8],
    }

    /// A VXLAN UDP payload.
    pub fn vxlan(b: &[u8]) -> Option<Parsed<'_>> {
        if b.len() < 8 || b[0] != 0x08 || b[1..4] != [0, 0, 0] || b[7] != 0 {
            return None;
        }
        let vni = u32::from_be_bytes([0, b[4], b[5], b[6]]);
        Some(Parsed {
            kind: Kind::Vxlan { vni },
            seq: None,
            truncated: false,
            timestamp: None,
            inner: &b[8..],
        })
    }

    /// A GRE packet (IP payload): TEB, ERSPAN II or III.
    pub fn gre(b: &[u8]) -> Option<Parsed<'_>> {
        let flags = u16::from_be_bytes([b[0], b[1]]);
        // C, R, K, s, Recur, flags must be 0 but S; version 0.
        if flags & !0x1000 != 0 {
            return None;
        }
        let proto = u16::from_be_bytes([b[2], b[3]]);
        let (seq, rest) = if flags & 0x1000 != 0 {
            (Some(u32::from_be_bytes(b[4..8].try_into().ok()?)), &b[8..])
        } else {
            (None, &b[4..])
        };
        match proto {
            0x6558 => Some(Parsed {
                kind: Kind::Gre,
                seq,
                truncated: false,
                timestamp: None,
                inner: rest,
            }),
            0x88be => {
                let ver = rest[0] >> 4;
                if ver != 1 {
                    return None;
                }
                let w = u16::from_be_bytes([rest[2], rest[3]]);
                Some(Parsed {
                    kind: Kind::Erspan2 { session: w & 0x3ff },
                    seq,
                    truncated: w & 0x400 != 0,
                    timestamp: None,
                    inner: &rest[8..],
                })
            }
            0x22eb => {
                if rest[0] >> 4 != 2 {
                    return None;
                }
                let w = u16::from_be_bytes([rest[2], rest[3]]);
                let ts = u32::from_be_bytes(rest[4..8].try_into().ok()?);
                let hw = u16::from_be_bytes([rest[10], rest[11]]);
                // O bit clear: no platform subheader.
                if hw & 1 != 0 {
                    return None;
                }
                Some(Parsed {
                    kind: Kind::Erspan3 {
                        session: w & 0x3ff,
                        hwid: ((hw >> 4) & 0x3f) as u8,
                    },
                    seq,
                    truncated: w & 0x400 != 0,
                    timestamp: Some(ts),
                    inner: &rest[12..],
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame() -> Vec<u8> {
        // dst, src, EtherType IPv4, 4 payload bytes.
        let mut f = vec![0xff; 6];
        f.extend([0x02, 0, 0, 0, 0, 1, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef]);
        f
    }

    fn info(len: usize) -> FrameInfo {
        FrameInfo {
            ts_sec: 1_700_000_000,
            ts_usec: 123_456,
            wire_len: len as u32,
        }
    }

    fn enc(kind: Kind, f: &[u8], take: usize, wire: usize) -> Vec<u8> {
        let mut e = Encap::new(kind);
        let mut out = vec![0u8; 64 + f.len()];
        let n = e.encode(&mut out, &[f], take, &info(wire));
        out.truncate(n);
        out
    }

    /// Fixed vectors, byte by byte from the layouts of RFC 7348, RFC 2784
    /// and the ERSPAN draft (as Wireshark's dissectors read them).
    #[test]
    fn headers_match_the_specifications() {
        let f = frame();
        let v = enc(Kind::Vxlan { vni: 0x123456 }, &f, f.len(), f.len());
        assert_eq!(&v[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(&v[8..], &f[..]);

        let g = enc(Kind::Gre, &f, f.len(), f.len());
        assert_eq!(&g[..4], &[0, 0, 0x65, 0x58]);
        assert_eq!(&g[4..], &f[..]);

        // ERSPAN II, session 0x2a5, cut: T set.
        let e2 = enc(Kind::Erspan2 { session: 0x2a5 }, &f, 10, f.len());
        assert_eq!(
            &e2[..16],
            &[
                0x10, 0, 0x88, 0xbe, 0, 0, 0, 0, // GRE S, seq 0
                0x10, 0x00, 0x06, 0xa5, 0, 0, 0, 0 // ver 1; T | session 0x2a5
            ]
        );
        assert_eq!(&e2[16..], &f[..10]);

        let e3 = enc(
            Kind::Erspan3 {
                session: 5,
                hwid: 0x21,
            },
            &f,
            f.len(),
            f.len(),
        );
        let ts: u32 = (1_700_000_000u64 * 10_000 + 1234) as u32;
        let mut want = vec![0x10, 0, 0x22, 0xeb, 0, 0, 0, 0, 0x20, 0x00, 0x00, 0x05];
        want.extend(ts.to_be_bytes());
        want.extend([0, 0, 0x02, 0x10]); // HW ID 0x21 << 4
        assert_eq!(&e3[..20], &want[..]);
        assert_eq!(&e3[20..], &f[..]);
    }

    #[test]
    fn erspan2_says_when_the_frame_carries_its_vlan_tag() {
        let mut f = frame();
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        // Split across parts at an awkward place.
        let mut e = Encap::new(Kind::Erspan2 { session: 1 });
        let mut out = vec![0u8; 64];
        e.encode(&mut out, &[&f[..13], &f[13..]], f.len(), &info(f.len()));
        assert_eq!(out[10] >> 3 & 3, 3, "En = 3");
        let g = enc(Kind::Erspan2 { session: 1 }, &frame(), 18, 18);
        assert_eq!(g[10] >> 3 & 3, 0);
    }

    #[test]
    fn sequence_numbers_count_every_frame_of_the_stream() {
        let f = frame();
        let mut e = Encap::new(Kind::Erspan3 {
            session: 1,
            hwid: 0,
        });
        let mut out = vec![0u8; 64];
        for want in 0..3u32 {
            e.encode(&mut out, &[&f], f.len(), &info(f.len()));
            assert_eq!(parse::gre(&out).unwrap().seq, Some(want));
        }
        assert_eq!(e.seq(), 3);
    }

    #[test]
    fn fit_cuts_erspan_and_refuses_the_others() {
        let room = 1500 - 20; // IPv4 payload of a 1500 MTU
        let e2 = Encap::new(Kind::Erspan2 { session: 1 });
        assert_eq!(e2.fit(1464, room), Fit::Whole);
        assert_eq!(e2.fit(1465, room), Fit::Cut(1464));
        let e3 = Encap::new(Kind::Erspan3 {
            session: 1,
            hwid: 0,
        });
        assert_eq!(e3.fit(9000, room), Fit::Cut(1460));
        let g = Encap::new(Kind::Gre);
        assert_eq!(g.fit(1476, room), Fit::Whole);
        assert_eq!(g.fit(1477, room), Fit::TooBig);
        let v = Encap::new(Kind::Vxlan { vni: 1 });
        assert_eq!(v.fit(1464, 1472), Fit::Whole);
        assert_eq!(v.fit(1465, 1472), Fit::TooBig);
        assert_eq!(e2.fit(10, 16), Fit::TooBig, "no room at all");
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            (0..=MAX_VNI).prop_map(|vni| Kind::Vxlan { vni }),
            Just(Kind::Gre),
            (0..=MAX_SESSION).prop_map(|session| Kind::Erspan2 { session }),
            (0..=MAX_SESSION, 0..=MAX_HWID)
                .prop_map(|(session, hwid)| Kind::Erspan3 { session, hwid }),
        ]
    }

    proptest! {
        /// Encode then parse gives back the kind, the frame bytes taken (from
        /// any split into parts), the T bit and the timestamp.
        #[test]
        fn round_trip(
            kind in kind(),
            f in proptest::collection::vec(any::<u8>(), 14..300),
            split in 0usize..300,
            cut in 0usize..300,
            extra in 0u32..100,
            sec in any::<u32>(),
            usec in 0u32..1_000_000,
        ) {
            let take = if kind.cuts() { cut.min(f.len()) } else { f.len() };
            let split = split.min(f.len());
            let info = FrameInfo { ts_sec: sec, ts_usec: usec, wire_len: f.len() as u32 + extra };
            let mut e = Encap::new(kind);
            let mut out = vec![0u8; kind.header_len() + f.len()];
            let n = e.encode(&mut out, &[&f[..split], &f[split..]], take, &info);
            prop_assert_eq!(n, kind.header_len() + take);
            let p = if kind.is_udp() { parse::vxlan(&out[..n]) } else { parse::gre(&out[..n]) };
            let p = p.expect("parses");
            prop_assert_eq!(p.kind, kind);
            prop_assert_eq!(p.inner, &f[..take]);
            if kind.cuts() {
                prop_assert_eq!(p.seq, Some(0));
                prop_assert_eq!(p.truncated, (take as u32) < info.wire_len);
            }
            if let Kind::Erspan3 { .. } = kind {
                let want = (u64::from(sec) * 10_000 + u64::from(usec / 100)) as u32;
                prop_assert_eq!(p.timestamp, Some(want));
            }
        }
    }
}
