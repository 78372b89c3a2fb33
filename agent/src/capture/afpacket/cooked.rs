//! libpcap 1.10's "cooked" framing for the `any` device: DLT_LINUX_SLL.
//!
//! A SOCK_DGRAM packet socket bound to ifindex 0 receives every interface's
//! frames without their link-layer header; what the header said travels in
//! the `sockaddr_ll` the kernel writes beside each frame in the ring. libpcap
//! (`pcap_handle_packet_mmap`) turns that into a 16-byte header in front of
//! the network-layer bytes:
//!
//! | bytes | field                                        |
//! |-------|----------------------------------------------|
//! | 0..2  | packet type (`sll_pkttype`), big-endian      |
//! | 2..4  | ARPHRD type (`sll_hatype`), big-endian       |
//! | 4..6  | link-layer address length, big-endian        |
//! | 6..14 | link-layer address, zero-padded to 8 bytes   |
//! | 14..16| protocol (`sll_protocol`, already big-endian)|
//!
//! A VLAN tag the kernel took out of the frame goes back between the address
//! and the protocol (libpcap's `vlan_offset` for DLT_LINUX_SLL is 14): TPID,
//! TCI, then the protocol field.
//!
//! The sensor's filter is compiled for that framing, but the kernel runs it
//! on the network-layer bytes: [`kernel_program`] rewrites it as libpcap's
//! `fix_offset` does.

use rpcap::bpf::Insn;

/// Length of the DLT_LINUX_SLL header.
pub const SLL_HDR_LEN: usize = 16;
/// Where the protocol field starts, and a VLAN tag is put back.
pub const SLL_PROTOCOL_OFF: usize = 14;
/// The header with a VLAN tag put back.
pub const SLL_VLAN_HDR_LEN: usize = SLL_HDR_LEN + 4;
/// libpcap raises a cooked capture's snap length to at least a
/// DLT_LINUX_SLL2 header (20 bytes) plus one.
pub const MIN_SNAPLEN: u32 = 21;

/// `SKF_AD_OFF`: loads from here on are the kernel's ancillary data.
const SKF_AD_OFF: u32 = 0xffff_f000;
const SKF_AD_PROTOCOL: u32 = 0;
const SKF_AD_PKTTYPE: u32 = 4;

/// The DLT_LINUX_SLL header libpcap builds from the ring's `sockaddr_ll`.
/// Address bytes past `sll_halen` are zero (the kernel writes only
/// `sll_halen` bytes there; what else a reused ring slot holds is not sent).
#[inline]
pub fn sll_header(sll: &libc::sockaddr_ll) -> [u8; SLL_HDR_LEN] {
    let mut h = [0u8; SLL_HDR_LEN];
    h[0..2].copy_from_slice(&u16::from(sll.sll_pkttype).to_be_bytes());
    h[2..4].copy_from_slice(&sll.sll_hatype.to_be_bytes());
    h[4..6].copy_from_slice(&u16::from(sll.sll_halen).to_be_bytes());
    let n = (sll.sll_halen as usize).min(8);
    h[6..6 + n].copy_from_slice(&sll.sll_addr[..n]);
    // sll_protocol is in network order already.
    h[14..16].copy_from_slice(&sll.sll_protocol.to_ne_bytes());
    h
}

/// The header with the VLAN tag (`tpid`, `tci`) put back before the protocol.
#[inline]
pub fn with_vlan(hdr: &[u8; SLL_HDR_LEN], tpid: u16, tci: u16) -> [u8; SLL_VLAN_HDR_LEN] {
    let mut h = [0u8; SLL_VLAN_HDR_LEN];
    h[..SLL_PROTOCOL_OFF].copy_from_slice(&hdr[..SLL_PROTOCOL_OFF]);
    h[14..16].copy_from_slice(&tpid.to_be_bytes());
    h[16..18].copy_from_slice(&tci.to_be_bytes());
    h[18..20].copy_from_slice(&hdr[SLL_PROTOCOL_OFF..]);
    h
}

/// The program the kernel can run on a SOCK_DGRAM socket for `insns`
/// (compiled for DLT_LINUX_SLL), rewritten as libpcap's `fix_program` does:
/// payload offsets move back by the header's 16 bytes, the packet type
/// (offset 0) and protocol (offset 14) become the kernel's ancillary loads.
/// None when the program reads other header bytes (the address): then, as
/// libpcap does, user space judges every frame.
pub fn kernel_program(insns: &[Insn]) -> Option<Vec<Insn>> {
    const BPF_LD: u16 = 0x00;
    const BPF_LDX: u16 = 0x01;
    const BPF_ABS: u16 = 0x20;
    const BPF_IND: u16 = 0x40;
    const BPF_MSH: u16 = 0xa0;
    insns
        .iter()
        .map(|i| {
            let class = i.code & 0x07;
            let mode = i.code & 0xe0;
            if !(class == BPF_LD || class == BPF_LDX)
                || !(mode == BPF_ABS || mode == BPF_IND || mode == BPF_MSH)
            {
                return Some(*i);
            }
            let k = if i.k >= SKF_AD_OFF {
                i.k
            } else if i.k >= SLL_HDR_LEN as u32 {
                i.k - SLL_HDR_LEN as u32
            } else if i.k == 0 {
                SKF_AD_OFF + SKF_AD_PKTTYPE
            } else if i.k == SLL_PROTOCOL_OFF as u32 {
                SKF_AD_OFF + SKF_AD_PROTOCOL
            } else if (i.k as i32) > 0 {
                return None;
            } else {
                i.k
            };
            Some(Insn::new(i.code, i.jt, i.jf, k))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sll(pkttype: u8, hatype: u16, addr: &[u8], protocol: u16) -> libc::sockaddr_ll {
        let mut s: libc::sockaddr_ll = sys::sockopt::zeroed();
        s.sll_family = libc::AF_PACKET as u16;
        s.sll_pkttype = pkttype;
        s.sll_hatype = hatype;
        s.sll_halen = addr.len() as u8;
        s.sll_addr[..addr.len()].copy_from_slice(addr);
        s.sll_protocol = protocol.to_be();
        s
    }

    #[test]
    fn header_fields_in_libpcaps_order_and_byte_order() {
        // An IPv4 frame received from 02:00:00:00:00:01 on an Ethernet link.
        let mut s = sll(0, 1, &[2, 0, 0, 0, 0, 1], 0x0800);
        // Bytes past sll_halen (stale ring memory) are not sent.
        s.sll_addr[6] = 0xee;
        s.sll_addr[7] = 0xff;
        assert_eq!(
            sll_header(&s),
            [0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00]
        );
        // Outgoing (4) on loopback (772), IPv6, all-zero address.
        let s = sll(4, 772, &[0; 6], 0x86dd);
        assert_eq!(
            sll_header(&s),
            [0, 4, 3, 4, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x86, 0xdd]
        );
        // A tunnel without link-layer address (ARPHRD_NONE).
        let s = sll(0, 65534, &[], 0x0800);
        assert_eq!(
            sll_header(&s),
            [0, 0, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00]
        );
    }

    #[test]
    fn vlan_tag_goes_between_address_and_protocol() {
        let h = sll_header(&sll(3, 1, &[2, 0, 0, 0, 0, 9], 0x0800));
        let v = with_vlan(&h, 0x8100, 0x2005);
        assert_eq!(&v[..14], &h[..14]);
        assert_eq!(&v[14..], &[0x81, 0x00, 0x20, 0x05, 0x08, 0x00]);
    }

    #[test]
    fn kernel_program_moves_offsets_as_libpcap_does() {
        let prog = vec![
            Insn::new(0x28, 0, 0, 14),          // ldh [14] (protocol)
            Insn::new(0x28, 0, 0, 0),           // ldh [0] (packet type)
            Insn::new(0x30, 0, 0, 16 + 9),      // ldb [25] (IPv4 protocol)
            Insn::new(0xb1, 0, 0, 16),          // ldx 4*([16]&0xf)
            Insn::new(0x48, 0, 0, 18),          // ldh [x+18]
            Insn::new(0x20, 0, 0, 0xffff_f02c), // ld vlan_avail: unchanged
            Insn::new(0x80, 0, 0, 0),           // ld len: unchanged
            Insn::new(0x15, 0, 1, 14),          // jeq #14: not a load
            Insn::new(0x06, 0, 0, 262_144),
        ];
        let k = kernel_program(&prog).unwrap();
        let ks: Vec<u32> = k.iter().map(|i| i.k).collect();
        assert_eq!(
            ks,
            [
                0xffff_f000,
                0xffff_f004,
                9,
                0,
                2,
                0xffff_f02c,
                0,
                14,
                262_144
            ]
        );
        assert!(k.iter().zip(&prog).all(|(a, b)| a.code == b.code));
        // The address (ether host on SLL) has no ancillary load: user space.
        assert!(kernel_program(&[Insn::new(0x20, 0, 0, 10)]).is_none());
        assert!(kernel_program(&[Insn::new(0x28, 0, 0, 2)]).is_none());
    }

    #[test]
    fn own_traffic_exclusion_compiled_for_sll_runs_in_the_kernel() {
        let own = crate::filter::OwnTraffic {
            control_local: "10.0.0.5:2002".parse().unwrap(),
            control_peer: "10.0.0.9:40000".parse().unwrap(),
            data: crate::filter::DataDest::Udp("10.0.0.9:5000".parse().unwrap()),
        };
        let p = crate::filter::prefix(crate::iface::DLT_LINUX_SLL, &own, None).unwrap();
        assert!(kernel_program(p.insns()).is_some());
    }
}
