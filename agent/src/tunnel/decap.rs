//! Decapsulation at capture: the inner frame of a VXLAN, GENEVE, GRE
//! (transparent Ethernet bridging, or IP) or ERSPAN I/II/III packet.
//!
//! A traffic-mirroring target (AWS VPC Traffic Mirroring, Azure vTAP, AWS
//! Gateway Load Balancer, a switch's ERSPAN session, a packet broker)
//! receives the mirrored frames inside a tunnel. With `decap=` the kernel
//! filter selects the outer tunnel packets ([`outer_expression`]), and
//! [`Decap`] takes each one apart in user space: outer Ethernet (up to two
//! VLAN tags), IPv4 or IPv6 (hop-by-hop, routing and destination options
//! skipped), UDP or GRE, the tunnel header. What it returns borrows the
//! captured bytes (no copy, no allocation): the sensor's filter, the
//! sampler and the sender see the inner frame.
//!
//! An inner IP packet without an Ethernet header (GENEVE from AWS GWLB,
//! plain GRE) gets a synthesized 14-byte Ethernet header: both MAC
//! addresses zero, the EtherType of the packet ([`Inner::synth`]).
//!
//! Rejections are of two kinds: [`Reject::Foreign`] (another tunnel, VNI,
//! GRE key, ERSPAN session or outer source than configured; an ERSPAN
//! type III frame that is not Ethernet) and [`Reject::Malformed`] (cut or
//! inconsistent headers, an outer IP fragment, which cannot be taken apart
//! alone). Nothing here panics on any input: see the property tests.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

use super::*;

/// The tunnel a capture takes frames out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// VXLAN on UDP 4789; the id is the VNI.
    Vxlan,
    /// GENEVE on UDP 6081; the id is the VNI.
    Geneve,
    /// GRE carrying Ethernet (0x6558, L2GRE/NVGRE) or IP; the id is the GRE key.
    Gre,
    /// ERSPAN type I, II (GRE 0x88BE) and III (GRE 0x22EB); the id is the session.
    Erspan,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Vxlan => "vxlan",
            Kind::Geneve => "geneve",
            Kind::Gre => "gre",
            Kind::Erspan => "erspan",
        }
    }

    /// The largest id the tunnel carries.
    fn max_id(self) -> u32 {
        match self {
            Kind::Vxlan | Kind::Geneve => (1 << 24) - 1,
            Kind::Gre => u32::MAX,
            Kind::Erspan => (1 << 10) - 1,
        }
    }
}

/// `decap=KIND[:ID][@ADDR[/PREFIX]][+tag]`: which tunnel, optionally which
/// VNI, GRE key or ERSPAN session, which outer source addresses, and
/// whether the tunnel's id goes to the sensor as VLAN tags ([`id_tags`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecapSpec {
    pub kind: Kind,
    /// VNI (VXLAN, GENEVE), key (GRE), session ID (ERSPAN); None: any.
    pub id: Option<u32>,
    /// Outer source address or prefix; None: any.
    pub src: Option<IpNet>,
    /// `+tag`: insert the VNI / key / session as VLAN tags ([`id_tags`]).
    pub tag: bool,
}

/// What `decap=` expects.
pub const SPEC_EXPECTED: &str = "vxlan[:VNI], geneve[:VNI], gre[:KEY] or erspan[:SESSION], \
     optionally followed by @ADDR[/PREFIX] (the outer source) and +tag (the id as VLAN tags)";

/// A `decap=` value that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decap={text}: {why}; expected {SPEC_EXPECTED}")]
pub struct SpecError {
    text: String,
    why: String,
}

impl FromStr for DecapSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<DecapSpec, SpecError> {
        let err = |why: String| SpecError {
            text: text.to_string(),
            why,
        };
        let (rest, tag) = match text.len().checked_sub(4) {
            Some(at) if text.is_char_boundary(at) && text[at..].eq_ignore_ascii_case("+tag") => {
                (&text[..at], true)
            }
            _ => (text, false),
        };
        let (tunnel, src) = match rest.split_once('@') {
            Some((t, s)) => {
                let net = s
                    .parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| err(format!("`{s}` is no address or prefix")))?;
                (t, Some(net))
            }
            None => (rest, None),
        };
        let (kind, id) = match tunnel.split_once(':') {
            Some((k, i)) => (k, Some(i)),
            None => (tunnel, None),
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "vxlan" => Kind::Vxlan,
            "geneve" => Kind::Geneve,
            "gre" => Kind::Gre,
            "erspan" => Kind::Erspan,
            other => return Err(err(format!("unknown tunnel `{other}`"))),
        };
        let id = match id {
            None => None,
            Some(i) => {
                let n = i
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= kind.max_id())
                    .ok_or_else(|| {
                        err(format!(
                            "`{i}` is no {} id (0 to {})",
                            kind.name(),
                            kind.max_id()
                        ))
                    })?;
                Some(n)
            }
        };
        Ok(DecapSpec { kind, id, src, tag })
    }
}

impl fmt::Display for DecapSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        if let Some(id) = self.id {
            write!(f, ":{id}")?;
        }
        if let Some(src) = self.src {
            write!(f, "@{src}")?;
        }
        if self.tag {
            f.write_str("+tag")?;
        }
        Ok(())
    }
}

/// Bytes of outer headers a capture takes on top of the sensor's snap
/// length, so that the inner frame keeps as many: Ethernet and two tags
/// (22), IPv6 with extension headers (40 + 64), UDP and GENEVE with the
/// largest options (8 + 260), rounded up.
pub const MAX_OVERHEAD: u32 = 512;

/// The tcpdump expression of every tunnel packet [`Decap`] can take apart,
/// whatever the configured kind: a tunnel of another kind (or VNI) reaches
/// user space and is counted as foreign instead of vanishing unseen.
/// `vlan`: also with one 802.1Q tag (only Ethernet link types know `vlan`).
pub fn outer_expression(vlan: bool) -> String {
    let t = format!(
        "(udp dst port {VXLAN_PORT} or udp dst port {GENEVE_PORT} or ip proto {IPPROTO_GRE} \
         or ip6 proto {IPPROTO_GRE})"
    );
    if vlan {
        // `vlan` moves every later offset: the untagged test comes first.
        format!("({t} or (vlan and {t}))")
    } else {
        t
    }
}

/// The VLAN tags that carry a tunnel's id to the sensor (`+tag`), and how
/// many bytes of `buf` they take: ERSPAN's session (10 bits) in one
/// 802.1Q tag (VID = session); a VNI or GRE key in an 802.1ad service tag
/// (VID = bits 23..12) followed by an 802.1Q tag (VID = bits 11..0), so a
/// 24-bit VNI reads back as S-VID × 4096 + C-VID (a GRE key keeps its low
/// 24 bits). Priority and DEI are 0.
pub fn id_tags(kind: Kind, id: u32, buf: &mut [u8; 8]) -> usize {
    let vid = |v: u32| ((v & 0xfff) as u16).to_be_bytes();
    match kind {
        Kind::Erspan => {
            buf[..2].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
            buf[2..4].copy_from_slice(&vid(id));
            4
        }
        Kind::Vxlan | Kind::Geneve | Kind::Gre => {
            buf[..2].copy_from_slice(&ETH_P_8021AD.to_be_bytes());
            buf[2..4].copy_from_slice(&vid(id >> 12));
            buf[4..6].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
            buf[6..8].copy_from_slice(&vid(id));
            8
        }
    }
}

/// Why a frame was not decapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not the configured tunnel (kind, id or outer source).
    Foreign,
    /// Headers cut short or inconsistent, or an outer IP fragment.
    Malformed,
}

/// An inner frame, borrowed from the outer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner<'a> {
    /// Set when the tunnel carried an IP packet: the Ethernet header that
    /// goes before `frame` (zero MACs, the packet's EtherType).
    pub synth: Option<[u8; ETH_HLEN]>,
    /// The captured inner bytes (after `synth`, if set).
    pub frame: &'a [u8],
    /// The inner frame's length on the wire (with `synth`).
    pub wire_len: u32,
    /// The VNI, GRE key or ERSPAN session (0 when the tunnel has none).
    pub id: u32,
}

impl Inner<'_> {
    /// Captured length of the inner frame (with `synth`).
    pub fn caplen(&self) -> usize {
        self.frame.len() + self.synth.map_or(0, |_| ETH_HLEN)
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

#[inline]
fn be24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(u32::from(s[0]) << 16 | u32::from(s[1]) << 8 | u32::from(s[2]))
}

#[inline]
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Where the tunnel's payload lies in the outer packet.
struct Outer<'a> {
    /// The outer packet from its network header, cut at its IP length.
    pkt: &'a [u8],
    /// Where the transport header starts in `pkt`.
    l4: usize,
    /// The IP packet's length on the wire.
    end: usize,
    proto: u8,
}

/// Takes frames out of the tunnel a [`DecapSpec`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decap {
    spec: DecapSpec,
}

impl Decap {
    pub fn new(spec: DecapSpec) -> Decap {
        Decap { spec }
    }

    pub fn spec(&self) -> &DecapSpec {
        &self.spec
    }

    /// The inner frame of an outer Ethernet frame: `frame` the captured
    /// bytes, `wire_len` its length on the wire.
    pub fn ethernet<'a>(&self, frame: &'a [u8], wire_len: u32) -> Result<Inner<'a>, Reject> {
        let mut off = 12;
        let mut et = be16(frame, off).ok_or(Reject::Malformed)?;
        let mut tags = 0;
        while matches!(et, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_9100) {
            if tags == 2 {
                return Err(Reject::Foreign);
            }
            off += 4;
            tags += 1;
            et = be16(frame, off).ok_or(Reject::Malformed)?;
        }
        let l3 = off + 2;
        let rest = frame.get(l3..).ok_or(Reject::Malformed)?;
        self.network(et, rest, wire_len.saturating_sub(l3 as u32))
    }

    /// The inner frame of a network-layer packet of EtherType `ethertype`
    /// (DLT_RAW, or the `any` device's payload after its cooked header).
    pub fn network<'a>(
        &self,
        ethertype: u16,
        pkt: &'a [u8],
        wire_len: u32,
    ) -> Result<Inner<'a>, Reject> {
        let (outer, src) = match ethertype {
            ETH_P_IPV4 => ipv4(pkt, wire_len)?,
            ETH_P_IPV6 => ipv6(pkt, wire_len)?,
            _ => return Err(Reject::Foreign),
        };
        if self.spec.src.is_some_and(|net| !net.contains(&src)) {
            return Err(Reject::Foreign);
        }
        match outer.proto {
            IPPROTO_UDP => self.udp(&outer),
            IPPROTO_GRE => self.gre(&outer),
            _ => Err(Reject::Foreign),
        }
    }

    fn matches(&self, kind: Kind, id: Option<u32>) -> Result<u32, Reject> {
        if self.spec.kind != kind {
            return Err(Reject::Foreign);
        }
        match (self.spec.id, id) {
            (Some(want), Some(got)) if want == got => Ok(got),
            (Some(_), _) => Err(Reject::Foreign),
            (None, got) => Ok(got.unwrap_or(0)),
        }
    }

    fn udp<'a>(&self, o: &Outer<'a>) -> Result<Inner<'a>, Reject> {
        let p = o.l4;
        let dport = be16(o.pkt, p + 2).ok_or(Reject::Malformed)?;
        let ulen = usize::from(be16(o.pkt, p + 4).ok_or(Reject::Malformed)?);
        // 0: a jumbogram's UDP length (RFC 2675); otherwise it must fit.
        if ulen != 0 && (ulen < 8 || p + ulen > o.end) {
            return Err(Reject::Malformed);
        }
        let h = p + 8;
        match dport {
            VXLAN_PORT => {
                let flags = *o.pkt.get(h).ok_or(Reject::Malformed)?;
                let vni = be24(o.pkt, h + 4).ok_or(Reject::Malformed)?;
                // The I flag says the VNI is valid (RFC 7348).
                if flags & 0x08 == 0 {
                    return Err(Reject::Malformed);
                }
                let id = self.matches(Kind::Vxlan, Some(vni))?;
                inner(o, h + VXLAN_HLEN, ETH_P_TEB, id)
            }
            GENEVE_PORT => {
                let b0 = *o.pkt.get(h).ok_or(Reject::Malformed)?;
                let proto = be16(o.pkt, h + 2).ok_or(Reject::Malformed)?;
                let vni = be24(o.pkt, h + 4).ok_or(Reject::Malformed)?;
                if b0 >> 6 != 0 {
                    return Err(Reject::Malformed);
                }
                let hlen = GENEVE_HLEN + usize::from(b0 & 0x3f) * 4;
                let id = self.matches(Kind::Geneve, Some(vni))?;
                inner(o, h + hlen, proto, id)
            }
            _ => Err(Reject::Foreign),
        }
    }

    fn gre<'a>(&self, o: &Outer<'a>) -> Result<Inner<'a>, Reject> {
        let p = o.l4;
        let flags = be16(o.pkt, p).ok_or(Reject::Malformed)?;
        let proto = be16(o.pkt, p + 2).ok_or(Reject::Malformed)?;
        // Version 0 only (1 is PPTP's enhanced GRE); no source routing.
        if flags & 0x0007 != 0 || flags & 0x4000 != 0 {
            return Err(Reject::Foreign);
        }
        let (csum, keyed, seq) = (
            flags & 0x8000 != 0,
            flags & 0x2000 != 0,
            flags & 0x1000 != 0,
        );
        let mut off = p + 4 + if csum { 4 } else { 0 };
        let key = if keyed {
            let k = be32(o.pkt, off).ok_or(Reject::Malformed)?;
            off += 4;
            Some(k)
        } else {
            None
        };
        if seq {
            off += 4;
        }
        match proto {
            ETH_P_TEB | ETH_P_IPV4 | ETH_P_IPV6 => {
                let id = self.matches(Kind::Gre, key)?;
                inner(o, off, proto, id)
            }
            // Type I has no sequence number and no ERSPAN header.
            ETH_P_ERSPAN2 if !seq => {
                let id = self.matches(Kind::Erspan, None)?;
                inner(o, off, ETH_P_TEB, id)
            }
            ETH_P_ERSPAN2 => {
                let ver = *o.pkt.get(off).ok_or(Reject::Malformed)? >> 4;
                let session = be16(o.pkt, off + 2).ok_or(Reject::Malformed)? & 0x3ff;
                if ver != 1 {
                    return Err(Reject::Malformed);
                }
                let id = self.matches(Kind::Erspan, Some(u32::from(session)))?;
                inner(o, off + ERSPAN2_HLEN, ETH_P_TEB, id)
            }
            ETH_P_ERSPAN3 => {
                let ver = *o.pkt.get(off).ok_or(Reject::Malformed)? >> 4;
                let session = be16(o.pkt, off + 2).ok_or(Reject::Malformed)? & 0x3ff;
                let w = be16(o.pkt, off + 10).ok_or(Reject::Malformed)?;
                if ver != 2 {
                    return Err(Reject::Malformed);
                }
                let id = self.matches(Kind::Erspan, Some(u32::from(session)))?;
                // FT (frame type) 0 is Ethernet; the others carry no frame we forward.
                if (w >> 10) & 0x1f != 0 {
                    return Err(Reject::Foreign);
                }
                let platform = if w & 1 != 0 { ERSPAN3_PLATFORM_HLEN } else { 0 };
                inner(o, off + ERSPAN3_HLEN + platform, ETH_P_TEB, id)
            }
            _ => Err(Reject::Foreign),
        }
    }
}

/// The inner frame starting at `start` of `o.pkt`: Ethernet (`TEB`) or an
/// IP packet given a synthesized Ethernet header.
fn inner<'a>(o: &Outer<'a>, start: usize, proto: u16, id: u32) -> Result<Inner<'a>, Reject> {
    let (synth, min) = match proto {
        ETH_P_TEB => (None, ETH_HLEN),
        ETH_P_IPV4 | ETH_P_IPV6 => {
            let mut h = [0u8; ETH_HLEN];
            h[12..].copy_from_slice(&proto.to_be_bytes());
            (Some(h), 1)
        }
        _ => return Err(Reject::Foreign),
    };
    let frame = o.pkt.get(start..).ok_or(Reject::Malformed)?;
    let wire = o.end.checked_sub(start).ok_or(Reject::Malformed)?;
    if wire < min || frame.len() < min {
        return Err(Reject::Malformed);
    }
    let extra = synth.map_or(0, |_| ETH_HLEN);
    Ok(Inner {
        synth,
        frame,
        wire_len: u32::try_from(wire + extra).map_err(|_| Reject::Malformed)?,
        id,
    })
}

/// The outer IPv4 header: where its payload lies and its source.
fn ipv4(pkt: &[u8], wire_len: u32) -> Result<(Outer<'_>, IpAddr), Reject> {
    let b0 = *pkt.first().ok_or(Reject::Malformed)?;
    let ihl = usize::from(b0 & 0x0f) * 4;
    if b0 >> 4 != 4 || ihl < 20 || pkt.len() < ihl {
        return Err(Reject::Malformed);
    }
    let total = usize::from(be16(pkt, 2).ok_or(Reject::Malformed)?);
    // More fragments, or not the first: the tunnel header is not whole here.
    if be16(pkt, 6).ok_or(Reject::Malformed)? & 0x3fff != 0 {
        return Err(Reject::Malformed);
    }
    // A total length of 0 is a segmentation-offloaded packet seen on its
    // way out: the wire length is the authority.
    let end = if total == 0 { wire_len as usize } else { total };
    if end < ihl || end > wire_len as usize {
        return Err(Reject::Malformed);
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    Ok((
        Outer {
            pkt: &pkt[..pkt.len().min(end)],
            l4: ihl,
            end,
            proto: pkt[9],
        },
        IpAddr::V4(src),
    ))
}

/// The outer IPv6 header (extension headers skipped): its payload and source.
fn ipv6(pkt: &[u8], wire_len: u32) -> Result<(Outer<'_>, IpAddr), Reject> {
    if pkt.len() < 40 || pkt[0] >> 4 != 6 {
        return Err(Reject::Malformed);
    }
    let plen = usize::from(be16(pkt, 4).ok_or(Reject::Malformed)?);
    let end = if plen == 0 {
        wire_len as usize
    } else {
        40 + plen
    };
    if end > wire_len as usize {
        return Err(Reject::Malformed);
    }
    let mut next = pkt[6];
    let mut off = 40;
    // Hop-by-hop, routing, destination options: a few at most.
    for _ in 0..4 {
        match next {
            0 | 43 | 60 => {
                next = *pkt.get(off).ok_or(Reject::Malformed)?;
                let len = *pkt.get(off + 1).ok_or(Reject::Malformed)?;
                off += (usize::from(len) + 1) * 8;
            }
            // A fragment header: the tunnel header is not whole here.
            44 => return Err(Reject::Malformed),
            _ => break,
        }
    }
    if off > end {
        return Err(Reject::Malformed);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&pkt[8..24]);
    Ok((
        Outer {
            pkt: &pkt[..pkt.len().min(end)],
            l4: off,
            end,
            proto: next,
        },
        IpAddr::V6(Ipv6Addr::from(src)),
    ))
}

/// The EtherType of a DLT_RAW packet, from its version nibble.
pub fn raw_ethertype(pkt: &[u8]) -> u16 {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => ETH_P_IPV4,
        Some(6) => ETH_P_IPV6,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
