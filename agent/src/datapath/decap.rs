//! The decapsulation stage of a worker: between the source and the
//! sampler, it replaces each outer tunnel packet by its inner frame
//! ([`crate::tunnel::decap`]) and runs the capture's inner program (local
//! filter AND the sensor's) on it, in user space: the kernel ran the outer
//! program (own-traffic exclusion AND the tunnel packets) already.
//!
//! Per frame: no allocation, no syscall, no copy of an inner Ethernet
//! frame (it is a subslice of the ring's record); an inner IP packet (AWS
//! GWLB's GENEVE, plain GRE) is copied once behind its synthesized
//! Ethernet header into a buffer sized at start; with `+tag` every inner
//! frame is copied there once, its tunnel id inserted as VLAN tags
//! ([`id_tags`]) after the MAC addresses, and the filter judges the frame
//! as the sensor will receive it, tags included.

use rpcap::bpf::Program;

use crate::capture::Frame;
use crate::iface::{DLT_EN10MB, DLT_LINUX_SLL, DLT_RAW};
use crate::tunnel::decap::{id_tags, raw_ethertype, Decap, DecapSpec, Kind, Reject};
use crate::tunnel::ETH_HLEN;

/// What a worker needs to decapsulate (the host builds it from the
/// session's [`DecapStart`](crate::session::DecapStart)).
#[derive(Debug, Clone)]
pub struct DecapSetup {
    pub spec: DecapSpec,
    /// The link type of the captured interface (the outer frames):
    /// DLT_EN10MB, DLT_LINUX_SLL (`any`) or DLT_RAW.
    pub linktype: i32,
    /// The program for the inner frames: local filter AND the sensor's.
    pub inner: Program,
    /// The sensor's snap length, applied to the inner frames (the source
    /// captures more: [`crate::tunnel::decap::MAX_OVERHEAD`] on top).
    pub snaplen: u32,
}

/// Counters of the decapsulation stage (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecapCounters {
    /// Inner frames handed on (they passed the inner program).
    pub decapsulated: u64,
    /// Tunnel packets of another kind, VNI, key, session or outer source.
    pub foreign: u64,
    /// Packets whose outer or tunnel headers were cut or inconsistent,
    /// or outer IP fragments.
    pub malformed: u64,
    /// Inner frames the inner program (local filter, sensor's filter) rejected.
    pub filtered: u64,
}

/// The outer link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Ethernet,
    /// DLT_LINUX_SLL: the `any` device hands the header as a piece of its own.
    Cooked,
    Raw,
}

/// The stage itself, owned by the worker thread.
#[derive(Debug)]
pub(crate) struct DecapStage {
    decap: Decap,
    link: Link,
    inner: Program,
    snaplen: usize,
    /// Synthesized Ethernet header + inner IP packet, for the inner program
    /// (which reads one contiguous buffer), or a frame with its id tags.
    scratch: Vec<u8>,
    /// `+tag`: the tunnel kind whose id goes in as VLAN tags.
    tag: Option<Kind>,
    pub c: DecapCounters,
}

/// The link types decapsulation takes.
pub const LINKTYPES: &str = "Ethernet, Linux cooked (the `any` device) or raw IP";

impl DecapStage {
    /// The stage for `setup` behind a source capturing `source_snaplen`
    /// bytes; None for a link type it cannot read.
    pub fn new(setup: DecapSetup, source_snaplen: u32) -> Option<DecapStage> {
        let link = match setup.linktype {
            DLT_EN10MB => Link::Ethernet,
            DLT_LINUX_SLL => Link::Cooked,
            DLT_RAW => Link::Raw,
            _ => return None,
        };
        let tag = setup.spec.tag.then_some(setup.spec.kind);
        Some(DecapStage {
            decap: Decap::new(setup.spec),
            tag,
            link,
            inner: setup.inner,
            snaplen: setup.snaplen as usize,
            scratch: vec![0; source_snaplen as usize + ETH_HLEN + 8],
            c: DecapCounters::default(),
        })
    }

    /// The sensor changed its filter (UPDATEFILTER): it judges inner frames.
    pub fn set_filter(&mut self, inner: Program) {
        self.inner = inner;
    }

    /// Hands the inner frame of `f` to `next`, or counts why not.
    #[inline]
    pub fn process<F: FnMut(&Frame<'_>)>(&mut self, f: &Frame<'_>, next: &mut F) {
        let found = match (self.link, f.parts) {
            (Link::Ethernet, [data]) => self.decap.ethernet(data, f.wire_len),
            (Link::Raw, [data]) => self.decap.network(raw_ethertype(data), data, f.wire_len),
            // The `any` device: its header (with a VLAN tag, 20 bytes) ends
            // in the protocol.
            (Link::Cooked, [hdr, data]) if hdr.len() >= 16 => {
                let et = u16::from_be_bytes([hdr[hdr.len() - 2], hdr[hdr.len() - 1]]);
                let wire = f.wire_len.saturating_sub(hdr.len() as u32);
                self.decap.network(et, data, wire)
            }
            // A cooked capture read back from a file: one piece.
            (Link::Cooked, [data]) if data.len() >= 16 => {
                let et = u16::from_be_bytes([data[14], data[15]]);
                self.decap
                    .network(et, &data[16..], f.wire_len.saturating_sub(16))
            }
            _ => Err(Reject::Malformed),
        };
        let inner = match found {
            Ok(i) => i,
            Err(Reject::Foreign) => {
                self.c.foreign += 1;
                return;
            }
            Err(Reject::Malformed) => {
                self.c.malformed += 1;
                return;
            }
        };
        let mut wire_len = inner.wire_len;
        let bytes: &[u8] = match (inner.synth, self.tag) {
            (None, None) => inner.frame,
            (synth, tag) => {
                // Head (the MACs) | id tags | EtherType and on.
                let mut tags = [0u8; 8];
                let tl = tag.map_or(0, |k| id_tags(k, inner.id, &mut tags));
                let (head, rest): (&[u8], &[u8]) = match &synth {
                    Some(h) => (&h[..12], &h[12..]),
                    None => (&inner.frame[..12], &inner.frame[12..]),
                };
                let body = if synth.is_some() {
                    inner.frame
                } else {
                    &[][..]
                };
                let n = 12 + tl + rest.len() + body.len();
                // The source never hands more than its snap length; a
                // frame that would not fit is not taken apart.
                if n > self.scratch.len() {
                    self.c.malformed += 1;
                    return;
                }
                let s = &mut self.scratch[..n];
                s[..12].copy_from_slice(head);
                s[12..12 + tl].copy_from_slice(&tags[..tl]);
                s[12 + tl..12 + tl + rest.len()].copy_from_slice(rest);
                s[12 + tl + rest.len()..].copy_from_slice(body);
                wire_len += tl as u32;
                &self.scratch[..n]
            }
        };
        let keep = self.inner.run(bytes, wire_len) as usize;
        if keep == 0 {
            self.c.filtered += 1;
            return;
        }
        self.c.decapsulated += 1;
        let n = bytes.len().min(self.snaplen).min(keep);
        next(&Frame {
            ts_sec: f.ts_sec,
            ts_usec: f.ts_usec,
            parts: &[&bytes[..n]],
            wire_len,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vxlan_frame(vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let udp_len = 8 + 8 + inner.len();
        let total = (20 + udp_len) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x30, 0x39, 0x12, 0xb5]);
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x08, 0, 0, 0]);
        f.extend_from_slice(&(vni << 8).to_be_bytes());
        f.extend_from_slice(inner);
        f
    }

    fn stage(spec: &str, inner: Program, snaplen: u32) -> DecapStage {
        let setup = DecapSetup {
            spec: spec.parse().unwrap(),
            linktype: DLT_EN10MB,
            inner,
            snaplen,
        };
        DecapStage::new(setup, 1024).unwrap()
    }

    fn feed(s: &mut DecapStage, outer: &[u8]) -> Vec<(Vec<u8>, u32)> {
        let mut out = Vec::new();
        let parts = [outer];
        let f = Frame {
            ts_sec: 1,
            ts_usec: 2,
            parts: &parts,
            wire_len: outer.len() as u32,
        };
        s.process(&f, &mut |i| out.push((i.to_vec(), i.wire_len)));
        out
    }

    #[test]
    fn forwards_the_inner_frame_cut_to_the_sensors_snaplen_and_filter() {
        let inner: Vec<u8> = (0..100u8).collect();
        let mut s = stage("vxlan:5", Program::accept_all(), 60);
        assert_eq!(
            feed(&mut s, &vxlan_frame(5, &inner)),
            [(inner[..60].to_vec(), 100)]
        );
        // The filter's verdict cuts too.
        s.set_filter(Program::accept(20));
        assert_eq!(
            feed(&mut s, &vxlan_frame(5, &inner)),
            [(inner[..20].to_vec(), 100)]
        );
        s.set_filter(Program::accept(0));
        assert!(feed(&mut s, &vxlan_frame(5, &inner)).is_empty());
        assert!(feed(&mut s, &vxlan_frame(6, &inner)).is_empty());
        assert!(feed(&mut s, &vxlan_frame(5, &inner)[..40]).is_empty());
        assert_eq!(
            s.c,
            DecapCounters {
                decapsulated: 2,
                foreign: 1,
                malformed: 1,
                filtered: 1
            }
        );
    }

    #[test]
    fn tag_inserts_the_vni_after_the_macs_and_the_filter_sees_it() {
        let inner: Vec<u8> = (0..60u8).collect();
        let mut s = stage("vxlan:5+tag", Program::accept_all(), 1000);
        let got = feed(&mut s, &vxlan_frame(5, &inner));
        let mut want = inner[..12].to_vec();
        want.extend_from_slice(&[0x88, 0xa8, 0, 0, 0x81, 0, 0, 5]);
        want.extend_from_slice(&inner[12..]);
        assert_eq!(got, [(want, 68)]);
        // The filter judges the tagged frame: 0x88a8 at offset 12.
        let svlan = crate::filter::compile(DLT_EN10MB, "ether[12:2] = 0x88a8").unwrap();
        s.set_filter(svlan);
        assert_eq!(feed(&mut s, &vxlan_frame(5, &inner)).len(), 1);
        s.set_filter(crate::filter::compile(DLT_EN10MB, "ether[12:2] = 0x0c0d").unwrap());
        assert!(feed(&mut s, &vxlan_frame(5, &inner)).is_empty());
    }

    #[test]
    fn unknown_link_types_are_refused() {
        let setup = DecapSetup {
            spec: "gre".parse().unwrap(),
            linktype: crate::iface::DLT_IEEE802_11,
            inner: Program::accept_all(),
            snaplen: 100,
        };
        assert!(DecapStage::new(setup, 100).is_none());
    }
}
