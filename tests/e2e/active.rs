//! End-to-end, active mode: xrpcapd in ns cap dials xrpcap-sensor in ns sen
//! and forwards what crosses the captured link (TESTING.md topology). Real
//! binaries, real packets. Needs root (marked `needs root`: ignored without it).
//!
//! Every test builds its own namespaces, so they run in parallel. Waits are
//! bounded and wait for real conditions (a log line, N packets in a file).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xrpcap_testkit::daemon::{count_of, write_file, START_TIMEOUT};
use xrpcap_testkit::traffic::{
    ip6_counter, ip_counter, ip_proto, is_fragment, ping_pong, seq_of, udp, UdpEcho,
};
use xrpcap_testkit::{
    numbered_payloads, require_root, send_udp, veth_pair, wait_for_packets, Agent, Netns, Packet,
    Sensor, Tcpdump, Topology, VethEnd,
};

/// Ethernet (14) + IPv4 (20) + UDP (8).
const HEADERS: usize = 42;
/// How long forwarded packets may take to show up in the sensor's file.
const ARRIVAL: Duration = Duration::from_secs(20);

use xrpcap_testkit::netns::sock_addr as addr;

fn sensor_addr() -> SocketAddr {
    addr(Topology::SEN_IP, Topology::SEN_PORT)
}

/// An rpcapd.ini dialling the sensor at `port` for interface `ifname`.
fn active_ini(ifname: &str) -> String {
    active_ini_to(Topology::SEN_IP, ifname)
}

/// [`active_ini`] for the sensor at `ip` (an IPv6 one on [`Topology::ipv6`]).
fn active_ini_to(ip: &str, ifname: &str) -> String {
    format!(
        "ActiveClient = {ip}, {}, ifname={ifname}\nNullAuthPermit = YES\nMaxBackoffSecs = 1\n",
        Topology::SEN_PORT
    )
}

/// The UDP sequence numbers (see `numbered_payloads`) of the packets, with
/// their destination ports.
fn udp_seqs(packets: &[Packet]) -> Vec<(u16, u32)> {
    packets
        .iter()
        .map(|p| {
            let u = udp(p).unwrap_or_else(|| panic!("not a whole UDP frame: {p:?}"));
            (u.dport, seq_of(u.payload).expect("numbered payload"))
        })
        .collect()
}

/// Sends `payloads` from gen (port 4000) to the captured side's port 5000.
fn send_to_5000(topo: &Topology, payloads: &[Vec<u8>]) -> usize {
    send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 4000),
        addr(Topology::CAP_IP, 5000),
        payloads,
    )
    .unwrap()
}

/// Holds UDP sockets open in a namespace so datagrams to those ports are
/// taken (no ICMP port unreachable adds frames to a capture).
fn sinks(ns: &Netns, ip: &str, ports: &[u16]) -> Vec<std::net::UdpSocket> {
    ports
        .iter()
        .map(|p| ns.udp_socket(addr(ip, *p)).unwrap())
        .collect()
}

/// Stops both and checks that the sensor's file holds exactly the numbered
/// packets `want`, in order.
fn stop_expecting(agent: &mut Agent, sensor: &mut Sensor, want: std::ops::Range<u32>) {
    agent.stop().unwrap();
    sensor.stop().unwrap();
    let seqs: Vec<u32> = udp_seqs(&sensor.packets().unwrap())
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(seqs, want.collect::<Vec<u32>>());
}

// ---------------------------------------------------------------------------
// 1. Byte-exact forwarding, both directions, three sizes, both data formats.
// ---------------------------------------------------------------------------

/// Round trips per test: as many frames each way.
const ROUND_TRIPS: u32 = 100;

/// `ROUND_TRIPS` UDP datagrams gen → cap, each echoed back cap → gen, with IP
/// packets of `ip_size` bytes on links of MTU `mtu`. The sensor's file must
/// hold exactly the frames tcpdump saw on c0 (same bytes, same order), which
/// are the frames sent. In udpstr mode nothing may be fragmented on the
/// sensor link; in plain mode a datagram larger than the link MTU is.
fn forwards_byte_exact(mtu: u32, ip_size: usize, plain: bool) {
    forwards_byte_exact_with(mtu, ip_size, plain, &[]);
}

/// [`forwards_byte_exact`] with extra sensor flags (TCP data, pcapng output).
fn forwards_byte_exact_with(mtu: u32, ip_size: usize, plain: bool, sensor_flags: &[&str]) {
    let agent_flags: &[&str] = if plain { &["-t", "0"] } else { &[] };
    forwards_over(Links::v4(mtu), ip_size, agent_flags, sensor_flags);
}

/// The links of a forwarding test: MTUs and the sensor link's IP version.
#[derive(Debug, Clone, Copy)]
struct Links {
    captured_mtu: u32,
    uplink_mtu: u32,
    ipv6: bool,
}

impl Links {
    fn v4(mtu: u32) -> Links {
        Links {
            captured_mtu: mtu,
            uplink_mtu: mtu,
            ipv6: false,
        }
    }

    /// The sensor link on IPv6 with MTU `uplink_mtu`.
    fn v6(captured_mtu: u32, uplink_mtu: u32) -> Links {
        Links {
            captured_mtu,
            uplink_mtu,
            ipv6: true,
        }
    }

    fn sensor_ip(&self) -> &'static str {
        if self.ipv6 {
            Topology::SEN_IP6
        } else {
            Topology::SEN_IP
        }
    }

    /// IP fragments the sensor's namespace received for reassembly.
    fn fragments(&self, topo: &Topology) -> u64 {
        if self.ipv6 {
            ip6_counter(&topo.sen, "Ip6ReasmReqds").unwrap()
        } else {
            ip_counter(&topo.sen, "ReasmReqds").unwrap()
        }
    }

    /// IP + UDP header bytes on the sensor link.
    fn ip_udp_headers(&self) -> usize {
        if self.ipv6 {
            48
        } else {
            28
        }
    }
}

/// [`forwards_byte_exact`] over `links` with agent and sensor flags.
/// Returns the agent's log.
fn forwards_over(
    links: Links,
    ip_size: usize,
    agent_flags: &[&str],
    sensor_flags: &[&str],
) -> String {
    require_root();
    let tcp = sensor_flags.contains(&"--tcp-data");
    let plain = agent_flags.windows(2).any(|w| w == ["-t", "0"]);
    let mtu = links.uplink_mtu;
    let topo = if links.ipv6 {
        Topology::ipv6(links.captured_mtu, links.uplink_mtu).unwrap()
    } else {
        Topology::with_mtu(links.captured_mtu).unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let tcpdump =
        Tcpdump::start(&topo.cap, Topology::CAP_IF, &tmp.path().join("c0.pcap"), "").unwrap();
    let listen = addr(links.sensor_ip(), Topology::SEN_PORT);
    let mut sensor = Sensor::start(&topo.sen, listen, sensor_flags).unwrap();
    let ini = active_ini_to(links.sensor_ip(), Topology::CAP_IF);
    let mut agent = Agent::start(&topo.cap, &ini, agent_flags).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let reasm_before = links.fragments(&topo);

    let echo = UdpEcho::start(&topo.cap, addr(Topology::CAP_IP, 7000)).unwrap();
    let payloads = numbered_payloads(ROUND_TRIPS, ip_size - 28);
    ping_pong(
        &topo.gen,
        addr(Topology::GEN_IP, 7001),
        addr(Topology::CAP_IP, 7000),
        &payloads,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(echo.stop(), u64::from(ROUND_TRIPS));

    let frames = 2 * ROUND_TRIPS as usize;
    let file = sensor.the_file().unwrap();
    if sensor_flags.contains(&"pcapng") {
        assert!(file.to_string_lossy().ends_with(".pcapng"), "{file:?}");
    }
    wait_for_packets(&file, frames, ARRIVAL).unwrap();
    // The agent's STATS reply (one per second) catches up with the traffic.
    let stats = format!("recv {frames} ifdrop 0 krnldrop 0 sent {frames}");
    sensor.wait_log(&stats, 1, ARRIVAL).unwrap();
    let reference = tcpdump.stop().unwrap();
    let agent_log = agent.stop().unwrap();
    sensor.stop().unwrap();
    let got = sensor.packets().unwrap();

    assert_eq!(reference.len(), frames, "tcpdump's frames on c0");
    assert_eq!(got.len(), frames, "frames in the sensor's file");
    for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
        assert_eq!(g.len, r.len, "wire length of frame {i}");
        assert_eq!(g.caplen, r.caplen, "caplen of frame {i}");
        assert!(g.data == r.data, "bytes of frame {i} differ from tcpdump's");
        let skew = g.ts.abs_diff(r.ts);
        assert!(
            skew < Duration::from_secs(1),
            "timestamp of frame {i}: {skew:?} off"
        );
    }
    // Independently of tcpdump: request i then its echo, our exact payloads.
    for (i, p) in got.iter().enumerate() {
        let u = udp(p).unwrap();
        let (from, to) = if i % 2 == 0 {
            (7001, 7000)
        } else {
            (7000, 7001)
        };
        assert_eq!((u.sport, u.dport), (from, to), "ports of frame {i}");
        assert_eq!(u.payload, &payloads[i / 2][..], "payload of frame {i}");
        assert_eq!(p.data.len(), HEADERS + ip_size - 28);
    }
    let c = sensor.final_counters(0).unwrap();
    assert_eq!(c.get("packets"), frames as u64, "{c:?}");
    assert_eq!(c.get("lost"), 0, "{c:?}");
    assert_eq!(c.get("agent_sent"), frames as u64, "{c:?}");

    let fragments = links.fragments(&topo) - reasm_before;
    // A plain datagram is 8 (rpcap header) + 20 (record header) + frame bytes.
    let plain_datagram = 28 + HEADERS + ip_size - 28;
    if tcp {
        assert!(
            sensor.log().contains("TCP data channel from"),
            "{}",
            sensor.log()
        );
        assert_eq!(fragments, 0, "TCP data is never fragmented");
        assert_eq!(c.get("udpstr_datagrams"), 0, "{c:?}");
    } else if plain && plain_datagram + links.ip_udp_headers() > mtu as usize {
        assert!(
            fragments >= frames as u64,
            "plain mode must fragment {plain_datagram}-byte datagrams on MTU {mtu}: {fragments} fragments"
        );
    } else {
        assert_eq!(fragments, 0, "IP fragments received by the sensor");
        if !plain {
            assert!(c.get("udpstr_datagrams") > 0, "{c:?}");
        }
    }
    agent_log
}

#[test]
#[ignore = "needs root"]
fn udpstr_forwards_64_byte_frames_byte_exact() {
    forwards_byte_exact(1500, 64 - 14, false);
}

#[test]
#[ignore = "needs root"]
fn udpstr_forwards_1500_byte_packets_byte_exact_without_fragments() {
    forwards_byte_exact(1500, 1500, false);
}

#[test]
#[ignore = "needs root"]
fn udpstr_forwards_9000_byte_jumbo_packets_byte_exact_without_fragments() {
    forwards_byte_exact(9000, 9000, false);
}

#[test]
#[ignore = "needs root"]
fn plain_forwards_64_byte_frames_byte_exact() {
    forwards_byte_exact(1500, 64 - 14, true);
}

#[test]
#[ignore = "needs root"]
fn plain_forwards_1500_byte_packets_byte_exact_and_fragments() {
    forwards_byte_exact(1500, 1500, true);
}

#[test]
#[ignore = "needs root"]
fn plain_forwards_9000_byte_jumbo_packets_byte_exact_and_fragments() {
    forwards_byte_exact(9000, 9000, true);
}

#[test]
#[ignore = "needs root"]
fn tcp_data_channel_forwards_1500_byte_packets_byte_exact() {
    forwards_byte_exact_with(1500, 1500, false, &["--tcp-data"]);
}

#[test]
#[ignore = "needs root"]
fn pcapng_output_holds_the_same_frames() {
    forwards_byte_exact_with(1500, 700, false, &["--format", "pcapng"]);
}

// ---------------------------------------------------------------------------
// 1b. The sensor over IPv6, datagrams sized to the path MTU (issue 12).
// ---------------------------------------------------------------------------

/// The agent logged one WARN that it clamped udpstr datagrams to `size`.
fn assert_clamped_once(agent_log: &str, size: usize) {
    let line = format!("datagrams clamped to {size} bytes");
    assert_eq!(count_of(agent_log, &line), 1, "{agent_log}");
    assert!(
        agent_log
            .lines()
            .any(|l| l.contains(&line) && l.contains("WARN")),
        "{agent_log}"
    );
}

/// Used to lose most frames: 1472-byte datagrams do not fit IPv6's 1452.
#[test]
#[ignore = "needs root"]
fn ipv6_udpstr_forwards_1500_byte_packets_byte_exact_without_fragments() {
    let log = forwards_over(Links::v6(1500, 1500), 1500, &[], &[]);
    assert!(log.contains("datagrams of 1452 bytes"), "{log}");
    assert!(
        !log.contains("clamped"),
        "the default is not clamped: {log}"
    );
}

#[test]
#[ignore = "needs root"]
fn ipv6_udpstr_forwards_64_byte_frames_byte_exact() {
    forwards_over(Links::v6(1500, 1500), 64 - 14, &[], &[]);
}

#[test]
#[ignore = "needs root"]
fn ipv6_plain_forwards_1500_byte_packets_byte_exact_and_fragments() {
    forwards_over(Links::v6(1500, 1500), 1500, &["-t", "0"], &[]);
}

#[test]
#[ignore = "needs root"]
fn ipv6_tcp_data_channel_forwards_1500_byte_packets_byte_exact() {
    forwards_over(Links::v6(1500, 1500), 1500, &[], &["--tcp-data"]);
}

/// IPv6's minimum MTU: 1232-byte datagrams, the default size shrunk.
#[test]
#[ignore = "needs root"]
fn ipv6_udpstr_on_a_1280_byte_link_forwards_byte_exact_without_fragments() {
    let log = forwards_over(Links::v6(1500, 1280), 1500, &[], &[]);
    assert!(log.contains("datagrams of 1232 bytes"), "{log}");
}

/// A jumbo path takes an explicit jumbo size, clamped to what fits.
#[test]
#[ignore = "needs root"]
fn ipv6_udpstr_size_9000_on_a_9000_byte_link_is_clamped_to_8952() {
    let log = forwards_over(Links::v6(9000, 9000), 9000, &["-t", "9000"], &[]);
    assert_clamped_once(&log, 8952);
}

/// Used to fragment every datagram.
#[test]
#[ignore = "needs root"]
fn udpstr_size_9000_on_a_1500_byte_link_is_clamped_with_a_warning() {
    let log = forwards_over(Links::v4(1500), 1500, &["-t", "9000"], &[]);
    assert_clamped_once(&log, 1472);
}

/// The path MTU falls mid-capture (the sensor link goes from 1500 to 1280):
/// the first oversized send fails with EMSGSIZE, its packet is lost and
/// counted, one WARN says so, and forwarding goes on with 1232-byte
/// datagrams, without fragments, the seqno going on.
#[test]
#[ignore = "needs root"]
fn ipv6_path_mtu_falling_mid_capture_shrinks_the_datagrams_once() {
    require_root();
    const PHASE: u32 = 20;
    let topo = Topology::ipv6(1500, 1500).unwrap();
    let listen = addr(Topology::SEN_IP6, Topology::SEN_PORT);
    let mut sensor = Sensor::start(&topo.sen, listen, &["--filter", "udp port 5000"]).unwrap();
    let ini = active_ini_to(Topology::SEN_IP6, Topology::CAP_IF);
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let _sinks = sinks(&topo.cap, Topology::CAP_IP, &[5000]);
    // Frames of 1514 bytes: every record fills a whole datagram.
    let all = numbered_payloads(2 * PHASE + 1, 1472);
    let send = |range: std::ops::Range<usize>| send_to_5000(&topo, &all[range]);
    let p = PHASE as usize;
    send(0..p);
    let file = sensor.the_file().unwrap();
    wait_for_packets(&file, p, ARRIVAL).unwrap();

    topo.cap
        .run("ip", ["link", "set", Topology::UPLINK_IF, "mtu", "1280"])
        .unwrap();
    let reasm_before = ip6_counter(&topo.sen, "Ip6ReasmReqds").unwrap();
    // The first frame after the change meets the smaller MTU and is lost.
    send(p..p + 1);
    agent
        .wait_log("datagrams are now 1232 bytes (were 1452)", 1, ARRIVAL)
        .unwrap();
    send(p + 1..2 * p + 1);
    wait_for_packets(&file, 2 * p, ARRIVAL).unwrap();
    let stats = format!("recv {} ifdrop 1", 2 * p + 1);
    sensor.wait_log(&stats, 1, ARRIVAL).unwrap();
    let log = agent.stop().unwrap();
    sensor.stop().unwrap();

    assert_eq!(count_of(&log, "the path MTU fell"), 1, "{log}");
    let mut want: Vec<(u16, u32)> = (0..PHASE).map(|i| (5000, i)).collect();
    want.extend((PHASE + 1..2 * PHASE + 1).map(|i| (5000, i)));
    assert_eq!(udp_seqs(&sensor.packets().unwrap()), want);
    let c = sensor.final_counters(0).unwrap();
    assert_eq!(c.get("lost"), 1, "{c:?}");
    // One datagram (its seqno taken) lost; the resize itself adds no gap.
    assert_eq!(c.get("lost_datagrams"), 1, "{c:?}");
    assert_eq!(c.get("seq_gaps"), 1, "{c:?}");
    let fragments = ip6_counter(&topo.sen, "Ip6ReasmReqds").unwrap() - reasm_before;
    assert_eq!(fragments, 0, "IPv6 fragments received by the sensor");
}

// ---------------------------------------------------------------------------
// 2. The sensor's filter, then a new one by UPDATEFILTER.
// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs root"]
fn sensor_filter_is_honoured_and_replaced_by_updatefilter() {
    require_root();
    let topo = Topology::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let filter_file = tmp.path().join("filter");
    write_file(&filter_file, "udp port 5000\n").unwrap();
    let filter_arg = filter_file.to_str().unwrap();
    let mut sensor =
        Sensor::start(&topo.sen, sensor_addr(), &["--filter-file", filter_arg]).unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini(Topology::CAP_IF), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let _sinks = sinks(&topo.cap, Topology::CAP_IP, &[5000, 5001]);
    let socket = topo.gen.udp_socket(addr(Topology::GEN_IP, 4000)).unwrap();
    let (to5000, to5001) = (addr(Topology::CAP_IP, 5000), addr(Topology::CAP_IP, 5001));
    let all = numbered_payloads(400, 32);
    let send = |to, seqs: std::ops::Range<usize>| {
        for p in &all[seqs] {
            socket.send_to(p, to).unwrap();
        }
    };

    // Phase 1: only port 5000 passes.
    for i in 0..20 {
        send(to5000, i..i + 1);
        send(to5001, 100 + i..101 + i);
    }
    let file = sensor.the_file().unwrap();
    wait_for_packets(&file, 20, ARRIVAL).unwrap();

    // Phase 2: SIGHUP re-reads the file; UPDATEFILTER makes it port 5001.
    write_file(&filter_file, "udp port 5001\n").unwrap();
    sensor.child().signal("HUP").unwrap();
    sensor.wait_log("filter updated", 1, START_TIMEOUT).unwrap();
    for i in 0..20 {
        send(to5000, 200 + i..201 + i);
        send(to5001, 300 + i..301 + i);
    }
    // A last one on 5001: once it is in the file, everything sent before is too.
    send(to5001, 399..400);
    let so_far = wait_for_packets(&file, 41, ARRIVAL).unwrap();
    assert_eq!(udp_seqs(&so_far).last(), Some(&(5001, 399)));
    agent.stop().unwrap();
    sensor.stop().unwrap();

    let mut want: Vec<(u16, u32)> = (0..20).map(|i| (5000, i)).collect();
    want.extend((300..320).map(|i| (5001, i)));
    want.push((5001, 399));
    assert_eq!(udp_seqs(&sensor.packets().unwrap()), want);
}

// ---------------------------------------------------------------------------
// 3. Sampling.
// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs root"]
fn sampling_one_of_n_forwards_exactly_every_nth_packet() {
    require_root();
    const N: u32 = 5;
    const SENT: u32 = 11 * N;
    let topo = Topology::new().unwrap();
    let sampling = format!("one-of:{N}");
    let mut sensor = Sensor::start(
        &topo.sen,
        sensor_addr(),
        &["--filter", "udp port 5000", "--sampling", &sampling],
    )
    .unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini(Topology::CAP_IF), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let _sinks = sinks(&topo.cap, Topology::CAP_IP, &[5000]);
    send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 4000),
        addr(Topology::CAP_IP, 5000),
        &numbered_payloads(SENT, 64),
    )
    .unwrap();
    // The last datagram sent is an Nth: once it is there, all kept ones are.
    let file = sensor.the_file().unwrap();
    let so_far = wait_for_packets(&file, (SENT / N) as usize, ARRIVAL).unwrap();
    assert_eq!(
        udp_seqs(&so_far).last(),
        Some(&(5000, SENT - 1)),
        "{:?}",
        udp_seqs(&so_far)
    );
    agent.stop().unwrap();
    sensor.stop().unwrap();
    let want: Vec<(u16, u32)> = (1..=SENT / N).map(|k| (5000, k * N - 1)).collect();
    assert_eq!(udp_seqs(&sensor.packets().unwrap()), want);
    let c = sensor.final_counters(0).unwrap();
    assert_eq!(
        c.get("lost"),
        0,
        "sampled-out packets are not losses: {c:?}"
    );
}

// ---------------------------------------------------------------------------
// 4 + 7. Two ActiveClient lines, two interfaces, two sensors.
// ---------------------------------------------------------------------------

/// The topology plus a second captured link gen2 g2 ── c2 (10.200.3.0/24)
/// and two sensors in ns sen: A on 2003 (ifname=c0), B on 2004 (ifname=c2),
/// with disjoint UDP data port ranges.
struct TwoLinks {
    // Drop order: processes first, then namespaces.
    agent: Agent,
    a: Sensor,
    b: Sensor,
    _gen2: Netns,
    topo: Topology,
}

const GEN2_IP: &str = "10.200.3.1";
const CAP2_IP: &str = "10.200.3.2";

impl TwoLinks {
    fn start() -> TwoLinks {
        let topo = Topology::new().unwrap();
        let gen2 = Netns::new("gen2").unwrap();
        veth_pair(
            VethEnd {
                ns: &gen2,
                ifname: "g2",
                cidr: "10.200.3.1/24",
            },
            VethEnd {
                ns: &topo.cap,
                ifname: "c2",
                cidr: "10.200.3.2/24",
            },
            1500,
        )
        .unwrap();
        let a = Sensor::start(
            &topo.sen,
            addr(Topology::SEN_IP, 2003),
            &["--udp-ports", "2003-2010"],
        )
        .unwrap();
        let b = Sensor::start(
            &topo.sen,
            addr(Topology::SEN_IP, 2004),
            &["--udp-ports", "2103-2110"],
        )
        .unwrap();
        let ini = format!(
            "NullAuthPermit = YES\nMaxBackoffSecs = 1\n\
             ActiveClient = {ip}, 2003, ifname=c0\n\
             ActiveClient = {ip}; 2004; ifname=c2\n",
            ip = Topology::SEN_IP
        );
        let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
        agent.wait_capturing("c0", 1).unwrap();
        agent.wait_capturing("c2", 1).unwrap();
        TwoLinks {
            agent,
            a,
            b,
            _gen2: gen2,
            topo,
        }
    }

    fn gen2(&self) -> &Netns {
        &self._gen2
    }

    /// Sends payloads `seqs` from gen to cap:5000 over c0 and from gen2 to
    /// cap:5000 over c2.
    fn send_both(&self, payloads: &[Vec<u8>]) {
        send_udp(
            &self.topo.gen,
            addr(Topology::GEN_IP, 4000),
            addr(Topology::CAP_IP, 5000),
            payloads,
        )
        .unwrap();
        send_udp(
            self.gen2(),
            addr(GEN2_IP, 4000),
            addr(CAP2_IP, 5000),
            payloads,
        )
        .unwrap();
    }
}

/// The (source address, seq) of each UDP packet.
fn sources(packets: &[Packet]) -> Vec<(String, u32)> {
    packets
        .iter()
        .map(|p| {
            let u = udp(p).expect("UDP frame");
            (u.src.to_string(), seq_of(u.payload).unwrap())
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn two_active_clients_forward_two_interfaces_to_two_sensors() {
    require_root();
    let mut t = TwoLinks::start();
    let _s1 = sinks(&t.topo.cap, Topology::CAP_IP, &[5000]);
    let _s2 = sinks(&t.topo.cap, CAP2_IP, &[5000]);
    let payloads = numbered_payloads(30, 100);
    t.send_both(&payloads);
    let fa = t.a.the_file().unwrap();
    let fb = t.b.the_file().unwrap();
    assert!(fa.to_string_lossy().contains("-c0-"), "{fa:?}");
    assert!(fb.to_string_lossy().contains("-c2-"), "{fb:?}");
    wait_for_packets(&fa, 30, ARRIVAL).unwrap();
    wait_for_packets(&fb, 30, ARRIVAL).unwrap();
    t.agent.stop().unwrap();
    t.a.stop().unwrap();
    t.b.stop().unwrap();
    let want = |ip: &str| -> Vec<(String, u32)> { (0..30).map(|i| (ip.to_string(), i)).collect() };
    assert_eq!(sources(&t.a.packets().unwrap()), want(Topology::GEN_IP));
    assert_eq!(sources(&t.b.packets().unwrap()), want(GEN2_IP));
}

#[test]
#[ignore = "needs root"]
fn deleted_interface_ends_its_capture_with_an_error_and_the_other_goes_on() {
    require_root();
    let mut t = TwoLinks::start();
    let _s1 = sinks(&t.topo.cap, Topology::CAP_IP, &[5000]);
    let _s2 = sinks(&t.topo.cap, CAP2_IP, &[5000]);
    let payloads = numbered_payloads(40, 100);
    t.send_both(&payloads[..20]);
    let fa = t.a.the_file().unwrap();
    let fb = t.b.the_file().unwrap();
    wait_for_packets(&fa, 20, ARRIVAL).unwrap();
    wait_for_packets(&fb, 20, ARRIVAL).unwrap();

    t.topo.cap.run("ip", ["link", "del", "c2"]).unwrap();
    // The agent reports the failure to sensor B as an RPCAP ERROR.
    t.b.wait_log("capture stopped", 1, START_TIMEOUT).unwrap();
    send_udp(
        &t.topo.gen,
        addr(Topology::GEN_IP, 4000),
        addr(Topology::CAP_IP, 5000),
        &payloads[20..],
    )
    .unwrap();
    wait_for_packets(&fa, 40, ARRIVAL).unwrap();
    assert!(t.agent.child().try_wait().unwrap().is_none(), "agent alive");
    t.agent.stop().unwrap();
    t.a.stop().unwrap();
    t.b.stop().unwrap();
    let want: Vec<(String, u32)> = (0..40).map(|i| (Topology::GEN_IP.to_string(), i)).collect();
    assert_eq!(sources(&t.a.packets().unwrap()), want);
    assert_eq!(t.b.packets().unwrap().len(), 20);
}

// ---------------------------------------------------------------------------
// 5 + 6. Sensor restarts; sensor down at start.
// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs root"]
fn sensor_killed_and_restarted_gets_the_traffic_after_the_restart() {
    require_root();
    let topo = Topology::new().unwrap();
    let _sinks = sinks(&topo.cap, Topology::CAP_IP, &[5000]);
    let payloads = numbered_payloads(40, 100);
    let send = |range: std::ops::Range<usize>| {
        send_to_5000(&topo, &payloads[range]);
    };
    let mut first = Sensor::start(&topo.sen, sensor_addr(), &[]).unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini(Topology::CAP_IF), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    send(0..20);
    wait_for_packets(&first.the_file().unwrap(), 20, ARRIVAL).unwrap();

    first.kill().unwrap();
    agent
        .wait_log("session with sensor", 1, START_TIMEOUT)
        .unwrap();
    let mut second = Sensor::start(&topo.sen, sensor_addr(), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 2).unwrap();
    send(20..40);
    wait_for_packets(&second.the_file().unwrap(), 20, ARRIVAL).unwrap();
    stop_expecting(&mut agent, &mut second, 20..40);
}

#[test]
#[ignore = "needs root"]
fn agent_retries_until_the_sensor_is_up() {
    require_root();
    let topo = Topology::new().unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini(Topology::CAP_IF), &[]).unwrap();
    // Connection refused, at least twice (MaxBackoffSecs = 1 keeps retries quick).
    agent.wait_log("retry", 2, START_TIMEOUT).unwrap();
    let mut sensor = Sensor::start(&topo.sen, sensor_addr(), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let _sinks = sinks(&topo.cap, Topology::CAP_IP, &[5000]);
    send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 4000),
        addr(Topology::CAP_IP, 5000),
        &numbered_payloads(10, 100),
    )
    .unwrap();
    wait_for_packets(&sensor.the_file().unwrap(), 10, ARRIVAL).unwrap();
    stop_expecting(&mut agent, &mut sensor, 0..10);
}

// ---------------------------------------------------------------------------
// 8. The sensor reached through the captured interface: no feedback.
// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs root"]
fn sensor_on_the_captured_link_sees_no_agent_traffic_and_no_loop() {
    no_feedback(false, 200);
}

/// Plain mode with full-MTU frames: every forwarded frame leaves as IP
/// fragments, and those must be excluded too.
#[test]
#[ignore = "needs root"]
fn plain_fragments_to_a_sensor_on_the_captured_link_are_not_captured() {
    no_feedback(true, 1472);
}

/// The agent captures c1, its own link to the sensor; the sensor and the
/// agent exchange `ROUNDS` UDP round trips of `payload` bytes over it.
fn no_feedback(plain: bool, payload: usize) {
    require_root();
    const ROUNDS: u32 = 20;
    let topo = Topology::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // What really crossed c1: control and data of the agent, and our traffic.
    let wire =
        Tcpdump::start(&topo.sen, Topology::SEN_IF, &tmp.path().join("s1.pcap"), "").unwrap();
    let mut sensor = Sensor::start(&topo.sen, sensor_addr(), &[]).unwrap();
    let flags: &[&str] = if plain { &["-t", "0"] } else { &[] };
    let mut agent = Agent::start(&topo.cap, &active_ini(Topology::UPLINK_IF), flags).unwrap();
    agent.wait_capturing(Topology::UPLINK_IF, 1).unwrap();

    let echo = UdpEcho::start(&topo.cap, addr(Topology::UPLINK_IP, 7000)).unwrap();
    ping_pong(
        &topo.sen,
        addr(Topology::SEN_IP, 7001),
        addr(Topology::UPLINK_IP, 7000),
        &numbered_payloads(ROUNDS, payload),
        Duration::from_secs(5),
    )
    .unwrap();
    echo.stop();
    let expected = 2 * ROUNDS as usize;
    let file = sensor.the_file().unwrap();
    wait_for_packets(&file, expected, ARRIVAL).unwrap();
    // Two more STATS round trips (one per second) over c1 and data flushes:
    // a feedback loop would grow the file meanwhile.
    let stats_seen = count_of(&sensor.log(), " ifdrop ");
    sensor
        .wait_log(" ifdrop ", stats_seen + 2, START_TIMEOUT)
        .unwrap();
    agent.stop().unwrap();
    sensor.stop().unwrap();
    let on_wire = wire.stop().unwrap();
    let got = sensor.packets().unwrap();

    // The agent's own traffic did cross c1 …
    let agent_tcp = on_wire.iter().filter(|p| ip_proto(p) == Some(6)).count();
    assert!(agent_tcp > 0, "no control traffic on s1?");
    if plain {
        let fragments = on_wire.iter().filter(|p| is_fragment(p)).count();
        assert!(
            fragments >= 2 * expected,
            "plain data not fragmented on s1: {fragments}"
        );
    }
    // … but none of it was forwarded: only our UDP round trips.
    for (i, p) in got.iter().enumerate() {
        let u = udp(p).unwrap_or_else(|| panic!("frame {i} is not our UDP: {p:?}"));
        assert!(
            [(7001, 7000), (7000, 7001)].contains(&(u.sport, u.dport)),
            "frame {i}: UDP {}:{} -> {}:{}",
            u.src,
            u.sport,
            u.dst,
            u.dport
        );
    }
    assert_eq!(got.len(), expected, "bounded: exactly the round trips");
}

// ---------------------------------------------------------------------------
// 9. The sensor recovers from transient faults by itself (issue 12): the
//    captured interface deleted and re-created resumes into the same file;
//    an interface missing at connect and a full UDP port range are retried.
//    Before, the sensor idled forever or sent CLOSE, and xrpcapd never
//    dials again after a CLOSE.
// ---------------------------------------------------------------------------

/// The captured link gen g0 ↔ cap c0, as Topology makes it.
fn make_capture_link(topo: &Topology) {
    veth_pair(
        VethEnd {
            ns: &topo.gen,
            ifname: Topology::GEN_IF,
            cidr: "10.200.1.1/24",
        },
        VethEnd {
            ns: &topo.cap,
            ifname: Topology::CAP_IF,
            cidr: "10.200.1.2/24",
        },
        1500,
    )
    .unwrap();
}

#[test]
#[ignore = "needs root"]
fn recreated_interface_resumes_capture_into_the_same_file() {
    require_root();
    let topo = Topology::new().unwrap();
    let mut sensor = Sensor::start(&topo.sen, sensor_addr(), &[]).unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini(Topology::CAP_IF), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let _sinks = sinks(&topo.cap, Topology::CAP_IP, &[5000]);
    let payloads = numbered_payloads(40, 100);
    send_to_5000(&topo, &payloads[0..20]);
    let file = sensor.the_file().unwrap();
    wait_for_packets(&file, 20, ARRIVAL).unwrap();

    topo.cap
        .run("ip", ["link", "del", Topology::CAP_IF])
        .unwrap();
    sensor
        .wait_log("capture stopped", 1, START_TIMEOUT)
        .unwrap();
    // Gone for a while: the sensor's first retries find no interface.
    std::thread::sleep(Duration::from_secs(2));
    let back = Instant::now();
    make_capture_link(&topo);
    agent.wait_capturing(Topology::CAP_IF, 2).unwrap();
    let resumed = back.elapsed();
    eprintln!("capture resumed {resumed:?} after the interface came back");
    // Within one retry step (the longest is 5 s) and the agent's answer.
    assert!(resumed < Duration::from_secs(8), "{resumed:?}");
    send_to_5000(&topo, &payloads[20..40]);
    wait_for_packets(&file, 40, ARRIVAL).unwrap();
    stop_expecting(&mut agent, &mut sensor, 0..40);
    assert_eq!(sensor.files().unwrap().len(), 1, "one file, resumed");
    let c = sensor.final_counters(0).unwrap();
    assert_eq!(c.get("lost"), 0, "{c:?}");
}

/// A second captured link gen5 g5 ↔ cap c5.
fn make_link5(topo: &Topology, gen5: &Netns) {
    veth_pair(
        VethEnd {
            ns: gen5,
            ifname: "g5",
            cidr: "10.200.5.1/24",
        },
        VethEnd {
            ns: &topo.cap,
            ifname: "c5",
            cidr: "10.200.5.2/24",
        },
        1500,
    )
    .unwrap();
}

#[test]
#[ignore = "needs root"]
fn interface_missing_at_connect_is_asked_for_again_until_it_appears() {
    require_root();
    let topo = Topology::new().unwrap();
    let gen5 = Netns::new("gen5").unwrap();
    let mut sensor = Sensor::start(&topo.sen, sensor_addr(), &["--ifname", "c5"]).unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini("c5"), &[]).unwrap();
    // Before issue 12 the sensor sent CLOSE here and forwarding never began.
    sensor
        .wait_log(
            "no interface of the agent matches name c5",
            2,
            START_TIMEOUT,
        )
        .unwrap();
    make_link5(&topo, &gen5);
    agent.wait_capturing("c5", 1).unwrap();
    let _sink = sinks(&topo.cap, "10.200.5.2", &[5000]);
    let payloads = numbered_payloads(10, 100);
    send_udp(
        &gen5,
        addr("10.200.5.1", 4000),
        addr("10.200.5.2", 5000),
        &payloads,
    )
    .unwrap();
    let file = sensor.the_file().unwrap();
    wait_for_packets(&file, 10, ARRIVAL).unwrap();
    stop_expecting(&mut agent, &mut sensor, 0..10);
    assert_eq!(
        count_of(&agent.log(), "connected to sensor"),
        1,
        "one session throughout"
    );
}

#[test]
#[ignore = "needs root"]
fn all_udp_ports_taken_is_retried_until_one_is_free() {
    require_root();
    let topo = Topology::new().unwrap();
    // Another program holds the sensor's only data port.
    let squatter = topo.sen.udp_socket(addr(Topology::SEN_IP, 2090)).unwrap();
    let mut sensor =
        Sensor::start(&topo.sen, sensor_addr(), &["--udp-ports", "2090-2090"]).unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini(Topology::CAP_IF), &[]).unwrap();
    sensor
        .wait_log("no free UDP port in 2090-2090", 2, START_TIMEOUT)
        .unwrap();
    drop(squatter);
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let _sinks = sinks(&topo.cap, Topology::CAP_IP, &[5000]);
    let payloads = numbered_payloads(10, 100);
    send_to_5000(&topo, &payloads[0..10]);
    let file = sensor.the_file().unwrap();
    wait_for_packets(&file, 10, ARRIVAL).unwrap();
    stop_expecting(&mut agent, &mut sensor, 0..10);
}
