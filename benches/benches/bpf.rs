//! cBPF interpreter: ns per packet for libpcap-compiled filters on a
//! realistic TCP/IPv4 Ethernet frame, next to libpcap's own interpreter
//! (pcap_offline_filter) on the same program.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rpcap::bpf::Program;

/// A 1514-byte Ethernet/IPv4/TCP frame (ACK with payload) to `dport`.
fn tcp_frame(dport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(1514);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let total: u16 = 1500;
    f.extend_from_slice(&[0x45, 0x00]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0x1c, 0x46, 0x40, 0x00, 64, 6, 0, 0]);
    f.extend_from_slice(&[192, 168, 1, 20, 93, 184, 216, 34]);
    f.extend_from_slice(&51_234u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    f.resize(1514, 0xab);
    f
}

fn compile(expr: &str) -> (Program, pcap::BpfProgram) {
    let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).expect("dead handle");
    let theirs = cap.compile(expr, true).expect("compile");
    let insns = rpcap::bpf::libpcap::from_libpcap(&theirs).expect("readable program");
    (Program::new(insns).expect("valid"), theirs)
}

const LONG: &str =
    "(tcp port 80 or tcp port 443 or udp port 53) and not net 10.0.0.0/8 and ip[8] > 1";

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("bpf");
    for (name, expr, dport, accept) in [
        ("tcp_port_80/accept", "tcp port 80", 80, true),
        ("tcp_port_80/reject", "tcp port 80", 443, false),
        ("long_32insn/accept", LONG, 443, true),
    ] {
        let (ours, theirs) = compile(expr);
        let pkt = tcp_frame(dport);
        assert_eq!(ours.run(&pkt, 1514) != 0, accept, "{name}");
        assert_eq!(theirs.filter(&pkt), accept, "{name}");
        eprintln!("{name}: {} instructions", ours.insns().len());
        g.bench_function(format!("{name}/rpcap"), |b| {
            b.iter(|| black_box(&ours).run(black_box(&pkt), black_box(1514)))
        });
        g.bench_function(format!("{name}/libpcap"), |b| {
            b.iter(|| black_box(&theirs).filter(black_box(&pkt)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
