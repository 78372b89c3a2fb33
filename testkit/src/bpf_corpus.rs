//! The BPF corpus of the filter tests (rpcap's interpreter and validator,
//! the agent's cBPF→eBPF translation): tcpdump expressions, libpcap as the
//! reference (compile an expression; filter packets through a pcap file it
//! reads), a packet generator, and a small deterministic RNG.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use rpcap::bpf::Insn;

/// tcpdump expressions of the differential tests.
pub const EXPRS: &[&str] = &[
    "tcp port 80",
    "udp and dst port 53",
    "ip",
    "ip6",
    "arp",
    "tcp",
    "udp",
    "icmp",
    "vlan",
    "vlan and tcp",
    "vlan 100",
    "vlan and vlan and udp",
    "icmp[icmptype] = icmp-echo",
    "icmp[icmptype] != icmp-echo and icmp[icmpcode] = 0",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn",
    "net 10.0.0.0/8",
    "src net 192.168.0.0/16 or dst host 172.16.0.1",
    "host 10.1.2.3",
    "len > 100",
    "len <= 64",
    "ether[0] & 1 = 1",
    "ether broadcast",
    "ether host 00:11:22:33:44:55",
    "ether src 00:11:22:33:44:55 or ether dst 66:77:88:99:aa:bb",
    "ip[2:2] > 576",
    "greater 1000",
    "less 200",
    "ip and not port 22",
    "portrange 1000-2000",
    "tcp src portrange 1000-2000 or udp dst port 53",
    "ip[0] & 0xf * 4 = 4",
    "(ip[0] & 0xf) * 4 = 20",
    "(ip[0] & 0xf) * 4 > 20",
    "tcp[12] / 4 > 5",
    "tcp[12] / 16 * 4 > 20",
    "ip[8] % 3 = 1",
    "ip[1] << 2 = 4",
    "ip[1] >> 2 = 4",
    "ip[6] ^ 0x40 = 0",
    "ip[9] - 6 = 0",
    "ip[9] + ip[8] > 100",
    "ip[8] * 2 > 100",
    "ip[4:4] & 0xff = ip[8]",
    "tcp[0:4] = 0x00500050",
    "tcp[2:2] = len - 40",
    "udp[4:2] - 8 = ip[2:2] - 28",
    "ip6 and tcp",
    "ip6 and udp port 53",
    "ip6 net fe80::/10",
    "ip6 host 2001:db8::1",
    "ip6[6] = 58",
    "ip[6:2] & 0x1fff != 0",
    "(tcp port 80 or tcp port 443 or udp port 53) and not net 10.0.0.0/8 and ip[8] > 1",
    "tcp dst port 443 and (ip[2:2] - ((ip[0]&0xf)<<2) - ((tcp[12]&0xf0)>>2)) != 0",
    "ip broadcast",
    "ip multicast or ip6 multicast",
    "not ip and not ip6",
    "port 53 or port 123 or port 67",
    "ip proto 47",
    "udp[8] = 0x45",
];

/// libpcap's program for `expr` on Ethernet, as our instructions.
pub fn compile(expr: &str, optimize: bool) -> Vec<Insn> {
    rpcap::bpf::libpcap::compile(expr, 1, optimize)
        .map(rpcap::bpf::Program::into_insns)
        .unwrap_or_else(|e| panic!("libpcap cannot compile {expr:?}: {e}"))
}

/// A packet: the captured bytes and the length on the wire (≥ captured).
#[derive(Debug, Clone)]
pub struct Pkt {
    pub data: Vec<u8>,
    pub wirelen: u32,
}

/// A pcap file removed on drop.
pub struct PcapFile(pub PathBuf);

impl PcapFile {
    /// Writes `pkts` (the timestamp's seconds = the index).
    pub fn write(pkts: &[Pkt]) -> PcapFile {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "rpcap-bpf-{}-{}.pcap",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&262_144u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // DLT_EN10MB
        for (i, p) in pkts.iter().enumerate() {
            out.extend_from_slice(&(i as u32).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&p.wirelen.to_le_bytes());
            out.extend_from_slice(&p.data);
        }
        std::fs::write(&path, out).expect("write pcap file");
        PcapFile(path)
    }

    /// Which packets libpcap's filter for `expr` passes (pcap_offline_read
    /// runs it with caplen and the wire length of each record).
    pub fn libpcap_accepts(&self, expr: &str, optimize: bool, n: usize) -> Vec<bool> {
        let mut cap = pcap::Capture::from_file(&self.0).expect("open pcap file");
        let mut pass = vec![false; n];
        match cap.filter(expr, optimize) {
            Ok(()) => {}
            // libpcap's optimizer refuses a filter it proves always false.
            Err(e) if optimize && e.to_string().contains("rejects all packets") => return pass,
            Err(e) => panic!("libpcap filter {expr:?}: {e}"),
        }
        loop {
            match cap.next_packet() {
                Ok(p) => pass[p.header.ts.tv_sec as usize] = true,
                Err(pcap::Error::NoMorePackets) => break,
                Err(e) => panic!("reading back the pcap file: {e}"),
            }
        }
        pass
    }
}

impl Drop for PcapFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// splitmix64: small, deterministic, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn u8(&mut self) -> u8 {
        self.next_u64() as u8
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

const MACS: [[u8; 6]; 4] = [
    [0x00, 0x11, 0x22, 0x33, 0x44, 0x55],
    [0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb],
    [0xff; 6],
    [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
];
const V4: [[u8; 4]; 7] = [
    [10, 1, 2, 3],
    [10, 200, 0, 9],
    [192, 168, 1, 20],
    [172, 16, 0, 1],
    [8, 8, 8, 8],
    [255, 255, 255, 255],
    [224, 0, 0, 251],
];
const PORTS: [u16; 12] = [22, 53, 67, 80, 123, 443, 999, 1000, 1500, 2000, 2001, 40000];

fn port(rng: &mut Rng) -> u16 {
    if rng.chance(80) {
        rng.pick(&PORTS)
    } else {
        rng.next_u64() as u16
    }
}

fn v6_addr(rng: &mut Rng) -> [u8; 16] {
    let mut a = [0u8; 16];
    match rng.below(4) {
        0 => {
            a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            a[15] = 1;
        }
        1 => {
            a[0] = 0xfe;
            a[1] = 0x80;
            a[8..].copy_from_slice(&rng.bytes(8));
        }
        2 => {
            a[0] = 0xff;
            a[1] = 0x02;
            a[15] = 0xfb;
        }
        _ => a.copy_from_slice(&rng.bytes(16)),
    }
    a
}

/// A transport header (and a little payload) for IP protocol `proto`.
fn l4(rng: &mut Rng, proto: u8) -> Vec<u8> {
    let mut h = Vec::new();
    match proto {
        6 => {
            h.extend_from_slice(&port(rng).to_be_bytes());
            h.extend_from_slice(&port(rng).to_be_bytes());
            h.extend_from_slice(&rng.bytes(8)); // seq, ack
            let doff = if rng.chance(80) {
                5
            } else {
                rng.below(16) as u8
            };
            h.push(doff << 4);
            let any = rng.u8();
            h.push(rng.pick(&[0x02, 0x12, 0x10, 0x18, 0x11, 0x04, any]));
            h.extend_from_slice(&rng.bytes(6)); // window, checksum, urgent
            h.extend(rng.bytes(usize::from(doff.saturating_sub(5)) * 4));
        }
        17 => {
            h.extend_from_slice(&port(rng).to_be_bytes());
            h.extend_from_slice(&port(rng).to_be_bytes());
            let payload = rng.below(64) as usize;
            let ulen = if rng.chance(80) {
                8 + payload as u16
            } else {
                rng.next_u64() as u16
            };
            h.extend_from_slice(&ulen.to_be_bytes());
            h.extend_from_slice(&rng.bytes(2));
            if rng.chance(30) {
                h.push(0x45);
            }
            h.extend(rng.bytes(payload));
            return h;
        }
        1 | 58 => {
            let any = rng.u8();
            h.push(rng.pick(&[0, 3, 8, 11, 128, 129, any]));
            h.push(if rng.chance(70) { 0 } else { rng.u8() });
            h.extend_from_slice(&rng.bytes(6));
        }
        _ => {}
    }
    let payload = rng.below(80) as usize;
    h.extend(rng.bytes(payload));
    h
}

fn ipv4(rng: &mut Rng) -> Vec<u8> {
    let any = rng.u8();
    let proto = rng.pick(&[6, 6, 17, 17, 1, 47, any]);
    let ihl = if rng.chance(85) {
        5
    } else {
        rng.below(16) as u8
    };
    let any = rng.u8();
    let mut h = vec![0x40 | ihl, rng.pick(&[0, 1, 4, any])];
    let l4 = l4(rng, proto);
    let opts = usize::from(ihl.saturating_sub(5)) * 4;
    let total = (20 + opts + l4.len()) as u16;
    let total = if rng.chance(85) {
        total
    } else {
        rng.next_u64() as u16
    };
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&rng.bytes(2)); // id
    let frag: u16 = if rng.chance(80) {
        0x4000
    } else {
        rng.next_u64() as u16
    };
    h.extend_from_slice(&frag.to_be_bytes());
    let any = rng.u8();
    h.push(rng.pick(&[1, 2, 64, 128, 255, any])); // ttl
    h.push(proto);
    h.extend_from_slice(&rng.bytes(2)); // checksum
    let src = if rng.chance(80) {
        rng.pick(&V4)
    } else {
        [rng.u8(), rng.u8(), rng.u8(), rng.u8()]
    };
    h.extend_from_slice(&src);
    h.extend_from_slice(&rng.pick(&V4));
    h.extend(rng.bytes(opts));
    h.extend(l4);
    h
}

fn ipv6(rng: &mut Rng) -> Vec<u8> {
    let any = rng.u8();
    let nh = rng.pick(&[6, 17, 58, 0, 44, any]);
    let l4 = l4(rng, nh);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    h.push(nh);
    h.push(64);
    h.extend_from_slice(&v6_addr(rng));
    h.extend_from_slice(&v6_addr(rng));
    h.extend(l4);
    h
}

/// A random Ethernet frame: mostly well-formed (optional VLAN tags,
/// IPv4/IPv6/ARP/other, TCP/UDP/ICMP with random fields), sometimes pure
/// noise; sometimes truncated (caplen < wirelen) or with a wire length
/// beyond the captured bytes.
pub fn frame(rng: &mut Rng) -> Pkt {
    if rng.chance(10) {
        let n = rng.below(120) as usize;
        let data = rng.bytes(n);
        let wirelen = data.len() as u32 + rng.below(2000) as u32;
        return Pkt { data, wirelen };
    }
    let mut f = Vec::new();
    f.extend_from_slice(&rng.pick(&MACS));
    f.extend_from_slice(&rng.pick(&MACS));
    for _ in 0..rng.pick(&[0, 0, 0, 1, 2]) {
        f.extend_from_slice(&[0x81, 0x00]);
        let any = rng.next_u64() as u16 & 0xfff;
        let vid = rng.pick(&[1u16, 100, 200, any]);
        f.extend_from_slice(&vid.to_be_bytes());
    }
    match rng.below(10) {
        0..=4 => {
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend(ipv4(rng));
        }
        5..=7 => {
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend(ipv6(rng));
        }
        8 => {
            f.extend_from_slice(&[0x08, 0x06]);
            f.extend(rng.bytes(28));
        }
        _ => {
            f.extend_from_slice(&(rng.next_u64() as u16).to_be_bytes());
            let n = rng.below(100) as usize;
            f.extend(rng.bytes(n));
        }
    }
    if rng.chance(10) {
        let n = 1000 + rng.below(500) as usize;
        f.extend(rng.bytes(n)); // for greater/less/len
    }
    let mut wirelen = f.len() as u32;
    if rng.chance(20) {
        f.truncate(rng.below(f.len() as u64 + 1) as usize);
    }
    if rng.chance(10) {
        wirelen += rng.below(3000) as u32;
    }
    Pkt { data: f, wirelen }
}
