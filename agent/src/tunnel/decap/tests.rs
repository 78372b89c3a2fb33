use proptest::prelude::*;

use super::*;

// Builders of outer packets, independent of the code under test (the
// e2e tests compare with Scapy and the kernel's vxlan device).

fn eth(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(src: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&[10, 0, 0, 2]);
    p.extend_from_slice(payload);
    p
}

fn ipv6(src: u8, proto: u8, ext: bool, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let first = if ext {
        // A destination-options header of 8 bytes (PadN).
        body.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
        60
    } else {
        proto
    };
    body.extend_from_slice(payload);
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(&[first, 64]);
    let mut s = [0u8; 16];
    s[0] = 0xfd;
    s[15] = src;
    p.extend_from_slice(&s);
    s[15] = 0xee;
    p.extend_from_slice(&s);
    p.extend_from_slice(&body);
    p
}

fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0xc0, 0x00];
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0];
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v.extend_from_slice(inner);
    udp(VXLAN_PORT, &v)
}

fn geneve(vni: u32, proto: u16, opt_words: u8, inner: &[u8]) -> Vec<u8> {
    let mut g = vec![opt_words & 0x3f, 0];
    g.extend_from_slice(&proto.to_be_bytes());
    g.extend_from_slice(&(vni << 8).to_be_bytes());
    g.extend(std::iter::repeat_n(0xab, usize::from(opt_words) * 4));
    g.extend_from_slice(inner);
    udp(GENEVE_PORT, &g)
}

fn gre(key: Option<u32>, seq: Option<u32>, csum: bool, proto: u16, payload: &[u8]) -> Vec<u8> {
    let mut flags = 0u16;
    if csum {
        flags |= 0x8000;
    }
    if key.is_some() {
        flags |= 0x2000;
    }
    if seq.is_some() {
        flags |= 0x1000;
    }
    let mut g = flags.to_be_bytes().to_vec();
    g.extend_from_slice(&proto.to_be_bytes());
    if csum {
        g.extend_from_slice(&[0, 0, 0, 0]);
    }
    if let Some(k) = key {
        g.extend_from_slice(&k.to_be_bytes());
    }
    if let Some(s) = seq {
        g.extend_from_slice(&s.to_be_bytes());
    }
    g.extend_from_slice(payload);
    g
}

fn erspan2(session: u16, inner: &[u8]) -> Vec<u8> {
    let mut e = vec![0x10, 0x64];
    e.extend_from_slice(&(session & 0x3ff).to_be_bytes());
    e.extend_from_slice(&[0, 0, 0, 7]);
    e.extend_from_slice(inner);
    gre(None, Some(1), false, ETH_P_ERSPAN2, &e)
}

fn erspan3(session: u16, platform: bool, inner: &[u8]) -> Vec<u8> {
    let mut e = vec![0x20, 0x64];
    e.extend_from_slice(&(session & 0x3ff).to_be_bytes());
    e.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    e.extend_from_slice(&[0, 0]);
    e.extend_from_slice(&(0x8000u16 | u16::from(platform)).to_be_bytes());
    if platform {
        e.extend_from_slice(&[0x0c, 0, 0, 0, 0, 0, 0, 9]);
    }
    e.extend_from_slice(inner);
    gre(None, Some(2), false, ETH_P_ERSPAN3, &e)
}

fn inner_frame(n: usize) -> Vec<u8> {
    let mut f = eth(&[], 0x0800, &[]);
    f.extend((0..n).map(|i| i as u8));
    f
}

fn spec(s: &str) -> Decap {
    Decap::new(s.parse().unwrap())
}

fn outer4(proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(&[], ETH_P_IPV4, &ipv4([10, 0, 0, 1], proto, l4))
}

fn run<'a>(d: &Decap, frame: &'a [u8]) -> Result<Inner<'a>, Reject> {
    d.ethernet(frame, frame.len() as u32)
}

#[test]
fn vxlan_gives_the_inner_frame_as_a_subslice() {
    let inner = inner_frame(50);
    let f = outer4(IPPROTO_UDP, &vxlan(100, &inner));
    let got = run(&spec("vxlan"), &f).unwrap();
    assert_eq!(got.frame, &inner[..]);
    assert_eq!(got.wire_len as usize, inner.len());
    assert_eq!(got.synth, None);
    assert_eq!(got.id, 100);
    // Zero-copy: the inner frame lies inside the outer one.
    assert_eq!(got.frame.as_ptr(), f[f.len() - inner.len()..].as_ptr());
    assert!(run(&spec("vxlan:100"), &f).is_ok());
    assert_eq!(run(&spec("vxlan:101"), &f), Err(Reject::Foreign));
    assert_eq!(run(&spec("geneve"), &f), Err(Reject::Foreign));
    assert_eq!(run(&spec("gre"), &f), Err(Reject::Foreign));
}

#[test]
fn vxlan_without_the_i_flag_is_malformed() {
    let inner = inner_frame(20);
    let mut f = outer4(IPPROTO_UDP, &vxlan(5, &inner));
    let flags = 14 + 20 + 8;
    assert_eq!(f[flags], 0x08);
    f[flags] = 0;
    assert_eq!(run(&spec("vxlan"), &f), Err(Reject::Malformed));
}

#[test]
fn geneve_skips_options_and_synthesizes_ethernet_for_ip() {
    let inner = inner_frame(30);
    let f = outer4(IPPROTO_UDP, &geneve(7, ETH_P_TEB, 3, &inner));
    let got = run(&spec("geneve:7"), &f).unwrap();
    assert_eq!(got.frame, &inner[..]);
    assert_eq!(run(&spec("geneve:8"), &f), Err(Reject::Foreign));

    // AWS GWLB: an IPv4 packet, 8 option words (its three TLVs).
    let ip = ipv4([192, 168, 0, 1], 6, &[1, 2, 3, 4]);
    let f = outer4(IPPROTO_UDP, &geneve(0, ETH_P_IPV4, 8, &ip));
    let got = run(&spec("geneve"), &f).unwrap();
    let mut want = [0u8; 14];
    want[12..].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(got.synth, Some(want));
    assert_eq!(got.frame, &ip[..]);
    assert_eq!(got.wire_len as usize, 14 + ip.len());
    assert_eq!(got.caplen(), 14 + ip.len());
    // A version other than 0 is not GENEVE as we know it.
    let mut bad = outer4(IPPROTO_UDP, &geneve(0, ETH_P_TEB, 0, &inner));
    bad[14 + 20 + 8] |= 0x40;
    assert_eq!(run(&spec("geneve"), &bad), Err(Reject::Malformed));
}

#[test]
fn gre_teb_with_optional_fields_and_key_match() {
    let inner = inner_frame(40);
    for (key, seq, csum) in [
        (None, None, false),
        (Some(9), None, false),
        (Some(9), Some(3), true),
        (None, Some(3), true),
    ] {
        let f = outer4(IPPROTO_GRE, &gre(key, seq, csum, ETH_P_TEB, &inner));
        let got = run(&spec("gre"), &f).unwrap();
        assert_eq!(got.frame, &inner[..], "{key:?} {seq:?} {csum}");
        assert_eq!(run(&spec("gre:9"), &f).is_ok(), key == Some(9));
        assert_eq!(run(&spec("erspan"), &f), Err(Reject::Foreign));
    }
    // GRE carrying IPv6 gets a synthesized header.
    let ip = ipv6(1, 59, false, &[]);
    let f = outer4(IPPROTO_GRE, &gre(None, None, false, ETH_P_IPV6, &ip));
    let got = run(&spec("gre"), &f).unwrap();
    assert_eq!(got.synth.unwrap()[12..], [0x86, 0xdd]);
    // Version 1 (PPTP) is another protocol.
    let mut v1 = outer4(IPPROTO_GRE, &gre(None, None, false, ETH_P_TEB, &inner));
    v1[14 + 20 + 1] |= 1;
    assert_eq!(run(&spec("gre"), &v1), Err(Reject::Foreign));
}

#[test]
fn erspan_types_one_two_three() {
    let inner = inner_frame(60);
    let t1 = outer4(IPPROTO_GRE, &gre(None, None, false, ETH_P_ERSPAN2, &inner));
    assert_eq!(run(&spec("erspan"), &t1).unwrap().frame, &inner[..]);
    // Type I has no session to match.
    assert_eq!(run(&spec("erspan:1"), &t1), Err(Reject::Foreign));

    let t2 = outer4(IPPROTO_GRE, &erspan2(513, &inner));
    let got = run(&spec("erspan:513"), &t2).unwrap();
    assert_eq!((got.frame, got.id), (&inner[..], 513));
    assert_eq!(run(&spec("erspan:512"), &t2), Err(Reject::Foreign));
    assert_eq!(run(&spec("gre"), &t2), Err(Reject::Foreign));

    for platform in [false, true] {
        let t3 = outer4(IPPROTO_GRE, &erspan3(1023, platform, &inner));
        let got = run(&spec("erspan:1023"), &t3).unwrap();
        assert_eq!(got.frame, &inner[..], "platform {platform}");
        assert_eq!(got.wire_len as usize, inner.len());
    }
    // Frame type IP (2) is not forwarded.
    let mut ft = outer4(IPPROTO_GRE, &erspan3(1, false, &inner));
    let w = 14 + 20 + 8 + 10;
    ft[w] = 0x80 | (2 << 2);
    assert_eq!(run(&spec("erspan"), &ft), Err(Reject::Foreign));
    // A version that does not fit the protocol type is malformed.
    let mut v = outer4(IPPROTO_GRE, &erspan2(1, &inner));
    v[14 + 20 + 8] = 0x20;
    assert_eq!(run(&spec("erspan"), &v), Err(Reject::Malformed));
}

#[test]
fn vlan_tags_and_ipv6_outer_with_extension_headers() {
    let inner = inner_frame(33);
    for tags in [&[][..], &[ETH_P_8021Q], &[ETH_P_8021AD, ETH_P_8021Q]] {
        for ext in [false, true] {
            let f = eth(
                tags,
                ETH_P_IPV6,
                &ipv6(5, IPPROTO_UDP, ext, &vxlan(1, &inner)),
            );
            let got = run(&spec("vxlan:1"), &f).unwrap();
            assert_eq!(got.frame, &inner[..], "{tags:?} {ext}");
            let f = eth(
                tags,
                ETH_P_IPV4,
                &ipv4([1, 2, 3, 4], IPPROTO_GRE, &erspan2(4, &inner)),
            );
            assert_eq!(run(&spec("erspan:4"), &f).unwrap().frame, &inner[..]);
        }
    }
    // Three tags: not what a mirror sends.
    let f = eth(
        &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
        ETH_P_IPV4,
        &ipv4([1, 2, 3, 4], IPPROTO_UDP, &vxlan(1, &inner)),
    );
    assert_eq!(run(&spec("vxlan"), &f), Err(Reject::Foreign));
}

#[test]
fn outer_source_match_v4_and_v6() {
    let inner = inner_frame(20);
    let f = outer4(IPPROTO_UDP, &vxlan(3, &inner));
    assert!(run(&spec("vxlan@10.0.0.0/8"), &f).is_ok());
    assert!(run(&spec("vxlan:3@10.0.0.1"), &f).is_ok());
    assert_eq!(run(&spec("vxlan@10.0.0.2"), &f), Err(Reject::Foreign));
    assert_eq!(run(&spec("vxlan@fd00::/8"), &f), Err(Reject::Foreign));
    let f6 = eth(
        &[],
        ETH_P_IPV6,
        &ipv6(5, IPPROTO_UDP, false, &vxlan(3, &inner)),
    );
    assert!(run(&spec("vxlan@fd00::5"), &f6).is_ok());
    assert_eq!(run(&spec("vxlan@fd00::6"), &f6), Err(Reject::Foreign));
}

#[test]
fn padding_after_the_ip_packet_is_not_part_of_the_inner_frame() {
    let inner = inner_frame(14);
    let mut f = outer4(
        IPPROTO_GRE,
        &gre(None, None, false, ETH_P_IPV4, &[0x45; 20]),
    );
    f.extend_from_slice(&[0xee; 6]);
    let got = run(&spec("gre"), &f).unwrap();
    assert_eq!(got.frame, &[0x45; 20][..]);
    assert_eq!(got.wire_len, 34);
    let _ = inner;
}

#[test]
fn cut_by_the_snap_length_keeps_the_wire_length() {
    let inner = inner_frame(200);
    let f = outer4(IPPROTO_UDP, &vxlan(1, &inner));
    let cut = &f[..f.len() - 100];
    let got = spec("vxlan").ethernet(cut, f.len() as u32).unwrap();
    assert_eq!(got.frame, &inner[..inner.len() - 100]);
    assert_eq!(got.wire_len as usize, inner.len());
}

#[test]
fn fragments_and_non_tunnels() {
    let inner = inner_frame(20);
    let mut f = outer4(IPPROTO_UDP, &vxlan(1, &inner));
    f[14 + 6] = 0x20; // MF
    assert_eq!(run(&spec("vxlan"), &f), Err(Reject::Malformed));
    let tcp = outer4(6, &[0; 20]);
    assert_eq!(run(&spec("vxlan"), &tcp), Err(Reject::Foreign));
    let other_port = outer4(IPPROTO_UDP, &udp(53, &[0; 20]));
    assert_eq!(run(&spec("vxlan"), &other_port), Err(Reject::Foreign));
    let arp = eth(&[], 0x0806, &[0; 28]);
    assert_eq!(run(&spec("vxlan"), &arp), Err(Reject::Foreign));
    let f6 = eth(&[], ETH_P_IPV6, &ipv6(1, 44, false, &[0; 16]));
    assert_eq!(run(&spec("vxlan"), &f6), Err(Reject::Malformed));
}

#[test]
fn raw_and_cooked_entry_points() {
    let inner = inner_frame(20);
    let ip = ipv4([10, 0, 0, 1], IPPROTO_UDP, &vxlan(2, &inner));
    let d = spec("vxlan:2");
    let et = raw_ethertype(&ip);
    assert_eq!(et, ETH_P_IPV4);
    assert_eq!(
        d.network(et, &ip, ip.len() as u32).unwrap().frame,
        &inner[..]
    );
    assert_eq!(raw_ethertype(&[]), 0);
}

#[test]
fn spec_parse_and_display() {
    for (text, shown) in [
        ("vxlan", "vxlan"),
        ("VXLAN:16777215", "vxlan:16777215"),
        ("geneve:0@10.0.0.0/8", "geneve:0@10.0.0.0/8"),
        ("gre:4294967295", "gre:4294967295"),
        ("erspan:1023@fd00::1", "erspan:1023@fd00::1/128"),
        ("vxlan+TAG", "vxlan+tag"),
        ("gre:7@10.0.0.1/32+tag", "gre:7@10.0.0.1/32+tag"),
    ] {
        let s: DecapSpec = text.parse().unwrap();
        assert_eq!(s.to_string(), shown);
        assert_eq!(shown.parse::<DecapSpec>().unwrap(), s);
    }
    for (bad, why) in [
        ("vxlan:16777216", "no vxlan id"),
        ("erspan:1024", "no erspan id"),
        ("gretap", "unknown tunnel"),
        ("vxlan:x", "no vxlan id"),
        ("vxlan@10.0.0.300", "no address"),
        ("", "unknown tunnel"),
        ("+tag", "unknown tunnel"),
        ("vxlan+tagx", "unknown tunnel"),
    ] {
        let e = bad.parse::<DecapSpec>().unwrap_err().to_string();
        assert!(
            e.contains(why) && e.contains("expected vxlan[:VNI]"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn outer_expression_compiles_for_every_link_type() {
    for (lt, vlan) in [
        (crate::iface::DLT_EN10MB, true),
        (crate::iface::DLT_RAW, false),
        (crate::iface::DLT_LINUX_SLL, false),
    ] {
        let e = format!("not (tcp port 2003) and {}", outer_expression(vlan));
        crate::filter::compile(lt, &e).unwrap();
    }
}

#[test]
fn outer_expression_selects_tunnels_tagged_or_not() {
    let p = crate::filter::compile(crate::iface::DLT_EN10MB, &outer_expression(true)).unwrap();
    let inner = inner_frame(20);
    let l4s = [
        (IPPROTO_UDP, vxlan(1, &inner)),
        (IPPROTO_UDP, geneve(1, ETH_P_TEB, 0, &inner)),
        (IPPROTO_GRE, erspan3(1, false, &inner)),
    ];
    for (proto, l4) in &l4s {
        for tags in [&[][..], &[ETH_P_8021Q]] {
            let f = eth(tags, ETH_P_IPV4, &ipv4([1, 1, 1, 1], *proto, l4));
            assert!(p.run(&f, f.len() as u32) > 0, "{tags:?}");
            let f = eth(tags, ETH_P_IPV6, &ipv6(1, *proto, false, l4));
            assert!(p.run(&f, f.len() as u32) > 0, "{tags:?} v6");
        }
    }
    let dns = outer4(IPPROTO_UDP, &udp(53, &[0; 12]));
    assert_eq!(p.run(&dns, dns.len() as u32), 0);
}

/// One tunnel packet of every kind around `inner`, with its spec.
fn encapsulate(kind: u8, id: u32, inner: &[u8], v6: bool, tags: &[u16]) -> (Vec<u8>, String) {
    let (proto, l4, s) = match kind % 6 {
        0 => (
            IPPROTO_UDP,
            vxlan(id & 0xff_ffff, inner),
            format!("vxlan:{}", id & 0xff_ffff),
        ),
        1 => (
            IPPROTO_UDP,
            geneve(id & 0xff_ffff, ETH_P_TEB, (id % 7) as u8, inner),
            format!("geneve:{}", id & 0xff_ffff),
        ),
        2 => (
            IPPROTO_GRE,
            gre(Some(id), None, id.is_multiple_of(2), ETH_P_TEB, inner),
            format!("gre:{id}"),
        ),
        3 => (
            IPPROTO_GRE,
            erspan2((id & 0x3ff) as u16, inner),
            format!("erspan:{}", id & 0x3ff),
        ),
        4 => (
            IPPROTO_GRE,
            erspan3((id & 0x3ff) as u16, id % 2 == 1, inner),
            format!("erspan:{}", id & 0x3ff),
        ),
        _ => (
            IPPROTO_GRE,
            gre(None, None, false, ETH_P_ERSPAN2, inner),
            "erspan".into(),
        ),
    };
    let ip = if v6 {
        eth(tags, ETH_P_IPV6, &ipv6(1, proto, id.is_multiple_of(3), &l4))
    } else {
        eth(tags, ETH_P_IPV4, &ipv4([10, 1, 2, 3], proto, &l4))
    };
    (ip, s)
}

fn tags() -> impl Strategy<Value = Vec<u16>> {
    prop::collection::vec(prop::sample::select(vec![ETH_P_8021Q, ETH_P_8021AD]), 0..=2)
}

proptest! {
    #[test]
    fn any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), wire in any::<u32>(), k in 0u8..4) {
        let d = spec(["vxlan", "geneve", "gre", "erspan"][usize::from(k)]);
        if let Ok(i) = d.ethernet(&bytes, wire) {
            // A slice of the input, no longer on the wire than captured.
            let start = i.frame.as_ptr() as usize - bytes.as_ptr() as usize;
            prop_assert!(start + i.frame.len() <= bytes.len());
            prop_assert!(i.wire_len as usize >= i.caplen() && i.wire_len <= wire);
        }
        let _ = d.network(ETH_P_IPV4, &bytes, wire);
        let _ = d.network(ETH_P_IPV6, &bytes, wire);
    }

    #[test]
    fn every_format_round_trips(
        kind in 0u8..6, id in any::<u32>(), body in prop::collection::vec(any::<u8>(), 0..300),
        v6 in any::<bool>(), tags in tags(),
    ) {
        let mut inner = inner_frame(0);
        inner.extend_from_slice(&body);
        let (f, s) = encapsulate(kind, id, &inner, v6, &tags);
        let got = spec(&s).ethernet(&f, f.len() as u32).unwrap();
        prop_assert_eq!(got.frame, &inner[..]);
        prop_assert_eq!(got.wire_len as usize, inner.len());
        prop_assert_eq!(got.synth, None);
    }

    #[test]
    fn every_cut_is_a_prefix_or_malformed(
        kind in 0u8..6, id in any::<u32>(), body in prop::collection::vec(any::<u8>(), 0..100),
        v6 in any::<bool>(), tags in tags(), cut in any::<prop::sample::Index>(),
    ) {
        let mut inner = inner_frame(0);
        inner.extend_from_slice(&body);
        let (f, s) = encapsulate(kind, id, &inner, v6, &tags);
        let n = cut.index(f.len());
        match spec(&s).ethernet(&f[..n], f.len() as u32) {
            Ok(got) => {
                prop_assert!(inner.starts_with(got.frame));
                prop_assert_eq!(got.wire_len as usize, inner.len());
            }
            Err(r) => prop_assert_eq!(r, Reject::Malformed),
        }
        // A wire length shorter than the IP packet claims is inconsistent.
        prop_assert_eq!(spec(&s).ethernet(&f, (f.len() - 1) as u32), Err(Reject::Malformed));
    }
}

#[test]
fn id_tags_carry_the_vni_in_two_tags_and_the_session_in_one() {
    let mut b = [0u8; 8];
    assert_eq!(id_tags(Kind::Vxlan, 0x12_3456, &mut b), 8);
    assert_eq!(b, [0x88, 0xa8, 0x01, 0x23, 0x81, 0x00, 0x04, 0x56]);
    assert_eq!(id_tags(Kind::Gre, 0xff12_3456, &mut b), 8);
    assert_eq!(b, [0x88, 0xa8, 0x01, 0x23, 0x81, 0x00, 0x04, 0x56]);
    let mut b = [0u8; 8];
    assert_eq!(id_tags(Kind::Erspan, 1023, &mut b), 4);
    assert_eq!(b[..4], [0x81, 0x00, 0x03, 0xff]);
}
