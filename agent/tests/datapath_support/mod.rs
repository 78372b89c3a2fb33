//! Shared by the datapath tests: a namespace pair joined by a veth, traffic
//! from the generator side, filters compiled by libpcap, and a sensor that
//! collects what the worker sends (udpstr, plain UDP, TCP).
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rpcap::bpf::Insn;
use rpcap::msg::Sampling;
use rpcap::PktHdr;
use xrpcapd::datapath::{CaptureSpec, DatapathOptions, Transport, Worker};
use xrpcapd::settings::{Backend, XdpSettings};

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub const GEN_IP: &str = "10.201.1.1";
pub const CAP_IP: &str = "10.201.1.2";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces `gen` and `cap` joined by veth g0 ↔ c0 (MTU 9000), IPv6
/// off (no stray router solicitations), lo up. Deleted on drop.
pub struct NetnsPair {
    pub gen: String,
    pub cap: String,
}

impl NetnsPair {
    pub fn new() -> NetnsPair {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let pair = NetnsPair {
            gen: format!("dpg-{pid}-{n}"),
            cap: format!("dpc-{pid}-{n}"),
        };
        ip(&["netns", "add", &pair.gen]);
        ip(&["netns", "add", &pair.cap]);
        for ns in [&pair.gen, &pair.cap] {
            for key in ["all", "default"] {
                let _ = Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw"])
                    .arg(format!("net.ipv6.conf.{key}.disable_ipv6=1"))
                    .status();
            }
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "link", "add", "g0", "netns", &pair.gen, "mtu", "9000", "type", "veth", "peer", "name",
            "c0", "netns", &pair.cap, "mtu", "9000",
        ]);
        ip(&[
            "-n",
            &pair.gen,
            "addr",
            "add",
            &format!("{GEN_IP}/24"),
            "dev",
            "g0",
        ]);
        ip(&[
            "-n",
            &pair.cap,
            "addr",
            "add",
            &format!("{CAP_IP}/24"),
            "dev",
            "c0",
        ]);
        ip(&["-n", &pair.gen, "link", "set", "g0", "up"]);
        ip(&["-n", &pair.cap, "link", "set", "c0", "up"]);
        pair
    }

    /// Moves the calling thread into `ns` (sockets it creates live there;
    /// threads it spawns start there).
    pub fn enter(ns: &str) {
        let f = File::open(format!("/var/run/netns/{ns}")).expect("netns file");
        // SAFETY: setns on a valid namespace descriptor, for this thread only.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
    }

    /// A UDP socket in `gen` that sends to the capture side, with ARP resolved.
    pub fn gen_sender(&self) -> UdpSocket {
        NetnsPair::enter(&self.gen);
        let s = UdpSocket::bind((GEN_IP, 0)).expect("bind gen");
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.gen, "ping", "-c", "1", "-W", "2", CAP_IP,
            ])
            .output()
            .expect("ping");
        assert!(out.status.success(), "ping over the veth failed");
        NetnsPair::enter(&self.cap);
        s
    }

    pub fn delete_capture_link(&self) {
        ip(&["-n", &self.cap, "link", "del", "c0"]);
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.gen, &self.cap] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// UDP payload that makes an Ethernet frame of `frame_len` bytes, unique per `i`.
pub fn payload(frame_len: usize, i: usize) -> Vec<u8> {
    let n = frame_len - 14 - 20 - 8;
    (0..n)
        .map(|k| (k as u32).wrapping_mul(31).wrapping_add(i as u32 * 7) as u8)
        .collect()
}

/// Sends `count` datagrams of frame size `frame_len` to the capture side, port `port`.
pub fn send(sock: &UdpSocket, port: u16, frame_len: usize, count: usize, first: usize) {
    for i in first..first + count {
        sock.send_to(&payload(frame_len, i), (CAP_IP, port))
            .expect("send");
    }
}

/// Compiles a tcpdump expression for Ethernet with libpcap.
pub fn compile(expr: &str) -> Vec<Insn> {
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).expect("dead handle");
    let prog = dead.compile(expr, true).expect("compile");
    prog.get_instructions()
        .iter()
        .map(|i| {
            let f: Vec<u64> = i
                .to_string()
                .split_whitespace()
                .map(|x| x.parse().expect("insn field"))
                .collect();
            Insn::new(f[0] as u16, f[1] as u8, f[2] as u8, f[3] as u32)
        })
        .collect()
}

pub fn accept_all() -> Vec<Insn> {
    vec![Insn::new(0x06, 0, 0, 262_144)]
}

/// A capture spec with test defaults.
pub fn spec(ifname: &str, filter: Vec<Insn>, transport: Transport) -> CaptureSpec {
    CaptureSpec {
        ifname: ifname.into(),
        backend: Backend::AfPacket,
        xdp: XdpSettings::default(),
        own: None,
        snaplen: 65535,
        promisc: false,
        read_timeout: Duration::from_millis(30),
        filter,
        sampling: Sampling {
            method: 0,
            value: 0,
        },
        transport,
        sndbuf: 8 << 20,
        ring_bytes: 4 << 20,
        cpu: None,
        dry_run: false,
    }
}

/// A UDP socket on loopback with a large receive buffer.
pub fn udp_sink() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let v: libc::c_int = 32 << 20;
    // SAFETY: setsockopt with a valid int on an open socket.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// One record as the sensor got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub hdr: PktHdr,
    pub data: Vec<u8>,
}

/// Receives udpstr datagrams until `want` records arrived or `limit` passed.
pub fn collect_udpstr(
    sock: &UdpSocket,
    want: usize,
    limit: Duration,
) -> (Vec<Rec>, rpcap::udpstr::DeframerStats, usize) {
    let mut d = rpcap::udpstr::Deframer::new(262_144);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut dgrams = 0;
    let t0 = Instant::now();
    while out.len() < want && t0.elapsed() < limit {
        if let Ok(n) = sock.recv(&mut buf) {
            dgrams += 1;
            d.push(&buf[..n], |h, b| {
                out.push(Rec {
                    hdr: *h,
                    data: b.to_vec(),
                })
            })
            .expect("udpstr datagram");
        }
    }
    (out, *d.stats(), dgrams)
}

/// Drains a socket for `quiet` and returns how many datagrams came.
pub fn count_more(sock: &UdpSocket, quiet: Duration) -> usize {
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < quiet {
        if sock.recv(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

/// Receives plain PACKET datagrams.
pub fn collect_plain(sock: &UdpSocket, want: usize, limit: Duration) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    while out.len() < want && t0.elapsed() < limit {
        if let Ok(n) = sock.recv(&mut buf) {
            let (h, b) = rpcap::plain::decode(&buf[..n]).expect("plain datagram");
            out.push(Rec {
                hdr: h,
                data: b.to_vec(),
            });
        }
    }
    out
}

/// Reads plain PACKET messages from a TCP stream.
pub fn collect_tcp(s: &mut TcpStream, want: usize, limit: Duration) -> Vec<Rec> {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut out = Vec::new();
    let mut acc: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    while out.len() < want && t0.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => acc.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
        while let Some(h) = rpcap::Header::parse(&acc) {
            let total = 8 + h.plen as usize;
            if acc.len() < total {
                break;
            }
            let (ph, b) = rpcap::plain::decode(&acc[..total]).expect("plain message");
            out.push(Rec {
                hdr: ph,
                data: b.to_vec(),
            });
            acc.drain(..total);
        }
    }
    out
}

/// Frames as an independent libpcap capture on `ifname` sees them.
pub struct Reference(pcap::Capture<pcap::Active>);

impl Reference {
    pub fn open(ifname: &str, expr: &str) -> Reference {
        let mut c = pcap::Capture::from_device(ifname)
            .expect("device")
            .snaplen(65535)
            .buffer_size(32 << 20)
            .immediate_mode(true)
            .timeout(50)
            .open()
            .expect("libpcap open")
            .setnonblock()
            .expect("libpcap nonblocking");
        c.filter(expr, true).expect("libpcap filter");
        Reference(c)
    }

    pub fn collect(&mut self, want: usize, limit: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let t0 = Instant::now();
        while out.len() < want && t0.elapsed() < limit {
            match self.0.next_packet() {
                Ok(p) => out.push(p.data.to_vec()),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        if out.len() < want {
            eprintln!(
                "libpcap reference: {} of {want}, stats {:?}",
                out.len(),
                self.0.stats()
            );
        }
        out
    }
}

/// Sensor address of a loopback socket.
pub fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap()
}

/// Waits until `cond` or `limit`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Starts an idle worker from `spec` and checks that filter updates and
/// the stop wake it at once (its eventfd) rather than waiting for its next
/// timed wake-up. Housekeeping and the read timeout are set so long that a
/// command which did not wake the worker would take seconds: the bounds
/// hold on a loaded machine and still fail without the wake.
pub fn assert_commands_wake_an_idle_worker(mut spec: CaptureSpec, filters: [Vec<Insn>; 2]) {
    const SLEEP: Duration = Duration::from_secs(30);
    const BOUND: Duration = Duration::from_millis(1500);
    spec.read_timeout = SLEEP;
    let opts = DatapathOptions {
        housekeeping: SLEEP,
        ..Default::default()
    };
    let worker = Worker::start_with(spec, opts).expect("start");
    for i in 0..4 {
        // Let the worker go back to sleep, then time a command round trip.
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        worker
            .update_filter(filters[i % 2].clone())
            .expect("UPDATEFILTER");
        let took = t0.elapsed();
        assert!(took < BOUND, "UPDATEFILTER {i} took {took:?}");
    }
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    worker.stop();
    let took = t0.elapsed();
    assert!(took < BOUND, "stop took {took:?}");
}

/// An Ethernet frame (broadcast destination) with an IPv4/UDP datagram to
/// CAP_IP:`dport` carrying `body`, 802.1Q-tagged with `vlan` if given.
/// (IPv4 header checksum set; the UDP checksum left 0, which IPv4 allows.)
pub fn udp4_frame(vlan: Option<u16>, dport: u16, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    if let Some(id) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&(id & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_len = (20 + 8 + body.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    for a in [GEN_IP, CAP_IP] {
        let a: std::net::Ipv4Addr = a.parse().unwrap();
        ip.extend_from_slice(&a.octets());
    }
    let sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(8 + body.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(body);
    f
}

/// Sends `frames` as they are out of `ifname` of namespace `ns` (AF_PACKET).
pub fn send_raw(ns: &str, ifname: &str, frames: Vec<Vec<u8>>) {
    let (ns, ifname) = (ns.to_owned(), std::ffi::CString::new(ifname).unwrap());
    std::thread::spawn(move || {
        NetnsPair::enter(&ns);
        // SAFETY: plain socket(2); checked; closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET socket");
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        assert!(ifindex > 0);
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        for f in &frames {
            // SAFETY: `f` is a live buffer of its length; `sll` a valid sockaddr_ll.
            let n = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(n as usize, f.len(), "{}", std::io::Error::last_os_error());
        }
        // SAFETY: our descriptor.
        unsafe { libc::close(fd) };
    })
    .join()
    .expect("raw sender");
}

/// Puts a test capture on AF_PACKET (`None`) or on AF_XDP with `xdp`.
pub fn set_source(s: &mut CaptureSpec, xdp: Option<XdpSettings>) {
    match xdp {
        None => s.backend = Backend::AfPacket,
        Some(x) => {
            s.backend = Backend::AfXdp;
            s.xdp = x;
        }
    }
}

/// What a worker on AF_PACKET (`xdp` None) or AF_XDP capturing c0 with
/// `expr` forwards (udpstr) of `frames` sent raw out of g0, in order.
pub fn capture_raw(
    ns: &NetnsPair,
    xdp: Option<XdpSettings>,
    expr: &str,
    frames: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    NetnsPair::enter(&ns.cap);
    let sink = udp_sink();
    let mut s = spec(
        "c0",
        compile(expr),
        Transport::UdpStr {
            dest: addr(&sink),
            size: 1472,
        },
    );
    set_source(&mut s, xdp);
    let w = xrpcapd::datapath::Worker::start(s).expect("start");
    send_raw(&ns.gen, "g0", frames.to_vec());
    let (recs, _, _) = collect_udpstr(&sink, usize::MAX, Duration::from_millis(700));
    w.stop();
    recs.into_iter().map(|r| r.data).collect()
}

/// The frames of `frames` that `expr` accepts, judged by the `rpcap`
/// interpreter on the bytes as sent (the filter's meaning on the wire).
pub fn accepted(expr: &str, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let prog = rpcap::bpf::Program::new(compile(expr)).expect("valid program");
    frames
        .iter()
        .filter(|f| prog.run(f, f.len() as u32) != 0)
        .cloned()
        .collect()
}
