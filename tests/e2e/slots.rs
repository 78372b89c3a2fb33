//! End-to-end, the agent's ActiveClient slots under bad networks and bad
//! peers: a name server that never answers, a path that goes dark and comes
//! back, whoever answers on the sensor's address with CLOSE. xrpcapd in ns
//! cap dials xrpcap-sensor (or a fake) in ns sen (TESTING.md topology).
//! Needs root.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use xrpcap_testkit::traffic::{seq_of, udp};
use xrpcap_testkit::wait::wait_for;
use xrpcap_testkit::{
    numbered_payloads, read_pcap, require_root, send_udp, wait_for_packets, Agent, Netns, Packet,
    Sensor, Topology,
};

/// How long forwarded packets may take to show up in the sensor's file.
const ARRIVAL: Duration = Duration::from_secs(20);

use xrpcap_testkit::netns::sock_addr as addr;

fn sensor_addr() -> SocketAddr {
    addr(Topology::SEN_IP, Topology::SEN_PORT)
}

/// The numbers of the numbered UDP payloads in `packets`.
fn seqs(packets: &[Packet]) -> Vec<u32> {
    packets
        .iter()
        .filter_map(|p| udp(p).and_then(|u| seq_of(u.payload)))
        .collect()
}

/// The numbered payloads in every capture file of `sensor` (each session
/// writes its own).
fn all_seqs(sensor: &Sensor) -> Vec<u32> {
    let files = sensor.files().unwrap_or_default();
    files
        .iter()
        .flat_map(|f| seqs(&read_pcap(f).unwrap_or_default()))
        .collect()
}

/// `/etc/netns/NS/resolv.conf`: `ip netns exec` bind-mounts it over
/// /etc/resolv.conf for the programs it starts. Removed on drop.
struct ResolvConf(PathBuf);

impl ResolvConf {
    fn new(ns: &Netns, text: &str) -> ResolvConf {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
        ResolvConf(dir)
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `payloads` from gen to cap:5000, `every` apart.
fn send_paced(topo: &Topology, payloads: &[Vec<u8>], every: Duration) {
    for p in payloads {
        send_udp(
            &topo.gen,
            addr(Topology::GEN_IP, 4000),
            addr(Topology::CAP_IP, 5000),
            std::slice::from_ref(p),
        )
        .unwrap();
        std::thread::sleep(every);
    }
}

/// A datagram sink on cap:5000 (no ICMP unreachable in the capture).
fn sink(topo: &Topology) -> UdpSocket {
    topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap()
}

/// Two ActiveClient lines: the first names a host whose name server reads
/// the query and never answers (each lookup takes glibc 5 s × 2 tries), the
/// second a healthy sensor that polls STATS every second and gives a
/// session up after 3 s without a reply. Lookups used to run on the control
/// thread and stall it 10 s per attempt, so the healthy session was lost
/// again and again; now every frame sent over several dead lookups arrives.
#[test]
#[ignore = "needs root"]
fn a_name_server_that_never_answers_costs_another_sensor_no_frame() {
    require_root();
    let topo = Topology::new().unwrap();
    // The name server: a socket in ns cap that reads and never answers.
    let _dns = topo.cap.udp_socket(addr(Topology::UPLINK_IP, 53)).unwrap();
    let _resolv = ResolvConf::new(
        &topo.cap,
        &format!(
            "nameserver {}\noptions timeout:5 attempts:2\n",
            Topology::UPLINK_IP
        ),
    );
    let _sink = sink(&topo);
    let mut sensor = Sensor::start(&topo.sen, sensor_addr(), &[]).unwrap();
    let ini = format!(
        "ActiveClient = sensor.dead.test, 2003, ifname={cap}\n\
         ActiveClient = {sen}, {port}, ifname={cap}\n\
         NullAuthPermit = YES\n",
        cap = Topology::CAP_IF,
        sen = Topology::SEN_IP,
        port = Topology::SEN_PORT,
    );
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();

    // 25 s of traffic: two or more lookups time out meanwhile.
    const N: u32 = 250;
    send_paced(
        &topo,
        &numbered_payloads(N, 100),
        Duration::from_millis(100),
    );
    wait_for(ARRIVAL, || all_seqs(&sensor).len() >= N as usize);
    sensor.stop().unwrap();
    let log = agent.log();
    let mut got = all_seqs(&sensor);
    got.sort_unstable();
    got.dedup();
    assert_eq!(
        got.len(),
        N as usize,
        "{} of {N} frames arrived\n{log}",
        got.len()
    );
    assert_eq!(got, (0..N).collect::<Vec<u32>>());
    assert_eq!(
        sensor.files().unwrap().len(),
        1,
        "the healthy session was never lost\n{log}"
    );
    let lookups =
        log.matches("name lookup not answered").count() + log.matches("still running").count();
    assert!(lookups >= 2, "the dead name was tried: {lookups}\n{log}");
    agent.stop().unwrap();
}

/// The path between agent and sensor goes dark for 60 s (an nftables drop
/// on the sensor's host: nothing passes, nothing is refused, no link event
/// tells the agent). The agent notices the
/// capturing sensor's silence from its STATS rhythm (it polls every second)
/// well within 30 s, not from keepalive, and redials with steps of at most
/// 5 s, so once the path is back the capture resumes within about one step
/// (a connect under way then may wait for its next SYN retransmission).
#[test]
#[ignore = "needs root"]
fn a_blackhole_is_resumed_within_the_first_backoff_step_after_restore() {
    require_root();
    let topo = Topology::new().unwrap();
    let _sink = sink(&topo);
    let mut sensor = Sensor::start(&topo.sen, sensor_addr(), &[]).unwrap();
    // The default MaxBackoffSecs (30) and LivenessSecs (30).
    let ini = format!(
        "ActiveClient = {}, {}, ifname={}\nNullAuthPermit = YES\n",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let payloads = numbered_payloads(40, 100);
    send_paced(&topo, &payloads[..20], Duration::from_millis(10));
    wait_for_packets(&sensor.the_file().unwrap(), 20, ARRIVAL).unwrap();
    // Let the agent see the rhythm (3 gaps of 1 s).
    std::thread::sleep(Duration::from_secs(4));

    // A silent blackhole, as a partition looks to the agent: the sensor's
    // host drops everything from and to the agent (its SYNs, its data, the
    // sensor's requests and replies), and nothing answers — no RST, no
    // ICMP, no link event on the agent's side. Dropping on the sensor's side
    // keeps the agent's own sends from failing with EPERM, which a drop in
    // its own OUTPUT hook would give it.
    let nft = |args: &[&str]| {
        topo.sen.run("nft", args).unwrap();
    };
    let dark = Instant::now();
    nft(&["add", "table", "inet", "blackhole"]);
    for (chain, hook, dir) in [("in", "input", "saddr"), ("out", "output", "daddr")] {
        let spec = format!("{{ type filter hook {hook} priority 0; policy accept; }}");
        nft(&["add", "chain", "inet", "blackhole", chain, &spec]);
        nft(&[
            "add",
            "rule",
            "inet",
            "blackhole",
            chain,
            "ip",
            dir,
            Topology::UPLINK_IP,
            "drop",
        ]);
    }
    let noticed = wait_for(Duration::from_secs(30), || {
        agent.log().contains("stopped its STATS requests")
    });
    let noticed_after = dark.elapsed();
    std::thread::sleep(Duration::from_secs(60).saturating_sub(dark.elapsed()));
    let log = agent.log();
    assert!(noticed, "the agent did not notice the silent sensor\n{log}");
    nft(&["delete", "table", "inet", "blackhole"]);
    let restored = Instant::now();
    agent.wait_capturing(Topology::CAP_IF, 2).unwrap();
    let resumed_after = restored.elapsed();
    // The step ceiling of the first minutes of an outage is 5 s; add the
    // connect, the login and STARTCAP.
    assert!(
        resumed_after < Duration::from_secs(5) + Duration::from_secs(3),
        "resumed {resumed_after:?} after the link came back\n{}",
        agent.log()
    );
    eprintln!("noticed after {noticed_after:?}; resumed {resumed_after:?} after restore");
    send_paced(&topo, &payloads[20..], Duration::from_millis(10));
    // The new session writes a file of its own: all files together.
    wait_for(ARRIVAL, || all_seqs(&sensor).len() >= 40);
    agent.stop().unwrap();
    sensor.stop().unwrap();
    let mut got = all_seqs(&sensor);
    got.sort_unstable();
    assert_eq!(got, (0..40).collect::<Vec<u32>>());
}

/// Accepts the agent's connections on the sensor's address and answers each
/// with CLOSE before any login, as an impostor or a sensor giving up would;
/// returns when each accepted connection came, until `within` passes or
/// `max` came.
fn close_at_once(topo: &Topology, max: usize, within: Duration) -> Vec<Instant> {
    let l = topo.sen.tcp_listener(sensor_addr()).unwrap();
    l.set_nonblocking(true).unwrap();
    let close = rpcap::msg::Message::Close.to_bytes();
    let end = Instant::now() + within;
    let mut came = Vec::new();
    while Instant::now() < end && came.len() < max {
        match l.accept() {
            Ok((mut s, _)) => {
                came.push(Instant::now());
                std::io::Write::write_all(&mut s, &close).unwrap();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    came
}

/// The built agent redials after a CLOSE before authentication, again and
/// again, each time after a backoff step (here the first, [0.5, 1) s: the
/// CLOSEs neither reset it to nothing nor make it grow); with
/// `ActiveCloseStops = YES` the first CLOSE stops it, as in libpcap.
#[test]
#[ignore = "needs root"]
fn a_close_before_authentication_does_not_stop_redialling() {
    require_root();
    let topo = Topology::new().unwrap();
    let ini = format!(
        "ActiveClient = {}, {}\nNullAuthPermit = YES\n",
        Topology::SEN_IP,
        Topology::SEN_PORT
    );
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    let came = close_at_once(&topo, 6, Duration::from_secs(20));
    let gaps: Vec<Duration> = came.windows(2).map(|w| w[1] - w[0]).collect();
    let log = agent.stop().unwrap();
    assert_eq!(came.len(), 6, "connections after CLOSEs: {gaps:?}\n{log}");
    for g in &gaps {
        assert!(
            *g >= Duration::from_millis(450) && *g < Duration::from_millis(2500),
            "{gaps:?}\n{log}"
        );
    }
    eprintln!("redials after pre-auth CLOSEs: {gaps:?}");

    let mut agent =
        Agent::start(&topo.cap, &format!("{ini}ActiveCloseStops = YES\n"), &[]).unwrap();
    let came = close_at_once(&topo, 2, Duration::from_secs(5));
    let log = agent.stop().unwrap();
    assert_eq!(came.len(), 1, "ActiveCloseStops = YES stops\n{log}");
}
