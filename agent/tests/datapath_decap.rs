//! Decapsulation through the whole datapath, without root: a pcap of
//! tunnel packets replayed by the file source, the worker's decap stage,
//! a loopback sink. (The kernel's filter and real tunnels: tests/e2e/decap.rs.)

mod datapath_support;

use std::path::Path;
use std::time::Duration;

use datapath_support::*;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use xrpcapd::datapath::{DecapCounters, DecapSetup, StartError, Transport, Worker};
use xrpcapd::iface::DLT_EN10MB;
use xrpcapd::settings::Backend;
use xrpcapd::tunnel::decap::outer_expression;

const LIMIT: Duration = Duration::from_secs(5);

/// Ethernet / IPv4 from 10.0.0.1 / `l4` (protocol `proto`).
fn outer(proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(l4);
    f
}

fn udp(dport: u16, body: &[u8]) -> Vec<u8> {
    let mut u = vec![0x9c, 0x40];
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(body);
    u
}

fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0];
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v.extend_from_slice(inner);
    outer(17, &udp(4789, &v))
}

fn geneve_ip(inner_ip: &[u8]) -> Vec<u8> {
    let mut g = vec![0, 0, 0x08, 0x00, 0, 0, 0, 0];
    g.extend_from_slice(inner_ip);
    outer(17, &udp(6081, &g))
}

/// The inner Ethernet frame number `i`: IPv4/UDP to port 7001 or 7002.
fn inner(i: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0xaa, 2, 2, 0, 0, 0, 0xaa, 1, 0x08, 0x00];
    f.extend_from_slice(&inner_ip(i));
    f
}

fn inner_ip(i: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..30 + i * 50).map(|k| (k + i) as u8).collect();
    let dport = if i % 3 == 2 { 7002 } else { 7001 };
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + 8 + body.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0, 192, 168, 1, 1, 192, 168, 1, 2]);
    ip.extend_from_slice(&udp(dport, &body));
    ip
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(f).unwrap();
    for (i, d) in frames.iter().enumerate() {
        let ts = Duration::new(1_700_000_000 + i as u64, 0);
        w.write_packet(&PcapPacket::new(ts, d.len() as u32, d))
            .unwrap();
    }
}

fn decap_spec(
    path: &Path,
    spec: &str,
    snaplen: u32,
) -> (xrpcapd::datapath::CaptureSpec, std::net::UdpSocket) {
    let sink = udp_sink();
    let mut s = spec_for(path, Transport::PlainUdp { dest: addr(&sink) });
    s.decap = Some(DecapSetup {
        spec: spec.parse().unwrap(),
        linktype: DLT_EN10MB,
        inner: compile("udp dst port 7001"),
        snaplen,
    });
    (s, sink)
}

fn spec_for(path: &Path, t: Transport) -> xrpcapd::datapath::CaptureSpec {
    let mut s = spec("file", compile(&outer_expression(true)), t);
    s.capture.backend = Backend::File(path.to_owned());
    s.capture.snaplen = 65535;
    s
}

#[test]
fn a_replay_of_tunnel_packets_forwards_the_inner_frames() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.pcap");
    let mut pkts = Vec::new();
    let mut want = Vec::new();
    for i in 0..12 {
        if i % 4 == 3 {
            // AWS GWLB's shape: an IP packet, given an Ethernet header.
            pkts.push(geneve_ip(&inner_ip(i)));
            let mut e = vec![0u8; 12];
            e.extend_from_slice(&[0x08, 0x00]);
            e.extend_from_slice(&inner_ip(i));
            if i % 3 != 2 {
                want.push(e);
            }
        } else {
            pkts.push(vxlan(100, &inner(i)));
            if i % 3 != 2 {
                want.push(inner(i));
            }
        }
    }
    pkts.push(vxlan(101, &inner(0))); // another VNI
    pkts.push(outer(17, &udp(4789, &[0x08, 0, 0]))); // cut VXLAN header
    pkts.push(outer(17, &udp(53, &[0; 20]))); // no tunnel: the outer filter drops it
    write_pcap(&p, &pkts);

    let (s, sink) = decap_spec(&p, "geneve", 65535);
    // The configured tunnel is GENEVE: every VXLAN packet is foreign.
    let mut w = Worker::start(s).expect("start");
    assert!(wait_for(LIMIT, || w.is_finished()));
    let c = w.stop_counters();
    assert_eq!(c.decap.unwrap().foreign, 10, "{c:?}");
    drop(sink);

    let (s, sink) = decap_spec(&p, "vxlan:100", 65535);
    let mut w = Worker::start(s).expect("start");
    let got = collect_plain(&sink, 6, LIMIT);
    assert!(wait_for(LIMIT, || w.is_finished()));
    let c = w.stop_counters();
    let vx: Vec<_> = want.iter().filter(|f| f[0] == 2).collect();
    assert_eq!(got.len(), vx.len());
    for (r, f) in got.iter().zip(&vx) {
        assert_eq!(&&r.data, f);
        assert_eq!(r.hdr.len as usize, f.len());
    }
    assert_eq!(
        c.decap.unwrap(),
        DecapCounters {
            decapsulated: vx.len() as u64,
            // 3 GENEVE packets, VNI 101.
            foreign: 4,
            malformed: 1,
            // Inner port 7002.
            filtered: 3,
        }
    );
    assert_eq!(c.received, vx.len() as u64);
}

#[test]
fn geneve_ip_is_forwarded_behind_a_synthesized_header_and_cut_to_the_snaplen() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.pcap");
    let pkts: Vec<_> = (0..4).map(|i| geneve_ip(&inner_ip(i * 3))).collect();
    write_pcap(&p, &pkts);
    let (s, sink) = decap_spec(&p, "geneve:0", 40);
    let mut w = Worker::start(s).expect("start");
    let got = collect_plain(&sink, 4, LIMIT);
    assert!(wait_for(LIMIT, || w.is_finished()));
    w.stop_counters();
    assert_eq!(got.len(), 4);
    for (k, r) in got.iter().enumerate() {
        let mut e = vec![0u8; 12];
        e.extend_from_slice(&[0x08, 0x00]);
        e.extend_from_slice(&inner_ip(k * 3));
        assert_eq!(r.data, e[..40]);
        assert_eq!(r.hdr.len as usize, e.len());
    }
}

#[test]
fn af_xdp_refuses_decap_and_says_what_to_do() {
    let (mut s, _sink) = decap_spec(Path::new("/nonexistent"), "vxlan", 100);
    s.capture.backend = Backend::AfXdp;
    let e = Worker::start(s).unwrap_err();
    assert!(matches!(e, StartError::DecapOnXdp));
    assert!(e.to_string().contains("capture=afpacket"), "{e}");
}
