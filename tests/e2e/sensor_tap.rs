//! End-to-end, the sensor's access control and live TAP output (issue 18
//! items 4 and 5): a real xrpcapd agent in a namespace dials xrpcap-sensor.
//! `--allow` refuses it from outside the range (logged once, counted, no
//! capture) and takes it from inside; `--tap` writes its frames onto a TAP
//! interface where tcpdump sees them byte-exact against tcpdump on the
//! captured link. Needs root (marked `needs root`: ignored without it).

use std::net::SocketAddr;
use std::time::Duration;

use xrpcap_testkit::daemon::{count_of, START_TIMEOUT};
use xrpcap_testkit::{
    numbered_payloads, require_root, send_udp, wait_for_packets, Agent, Packet, Sensor, Tcpdump,
    Topology,
};

/// How long forwarded packets may take to show up.
const ARRIVAL: Duration = Duration::from_secs(20);

use xrpcap_testkit::netns::sock_addr as addr;

fn active_ini() -> String {
    format!(
        "ActiveClient = {}, {}, ifname={}\nNullAuthPermit = YES\nMaxBackoffSecs = 1\n",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    )
}

fn listen() -> SocketAddr {
    addr(Topology::SEN_IP, Topology::SEN_PORT)
}

#[test]
#[ignore = "needs root"]
fn allow_refuses_an_agent_outside_the_range_and_takes_one_inside() {
    require_root();
    let topo = Topology::new().unwrap();
    // The agent connects from UPLINK_IP (10.200.2.1): not in these ranges.
    let mut sensor = Sensor::start(
        &topo.sen,
        listen(),
        &["--allow", "10.9.0.0/16", "--allow", "fd00::/8"],
    )
    .unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini(), &[]).unwrap();
    // The agent dials again (backoff ≤ 1 s): refused each time, logged once.
    agent
        .wait_log("connected to sensor", 3, START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", sensor.log()));
    let log = sensor.stop().unwrap();
    let refused = format!("agent {} refused: not in --allow", Topology::UPLINK_IP);
    assert_eq!(count_of(&log, &refused), 1, "{log}");
    assert!(!log.contains("connected (active mode)"), "{log}");
    assert!(!log.contains("capturing"), "{log}");
    assert!(sensor.files().unwrap().is_empty(), "no capture file");
    let n: u64 = log
        .split("agents_refused=")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no agents_refused= in\n{log}"));
    assert!(n >= 2, "each connection counted: {n}\n{log}");

    // Inside a range: taken as before.
    let mut sensor = Sensor::start(
        &topo.sen,
        listen(),
        &["--allow", "10.9.0.0/16", "--allow", "10.200.2.0/24"],
    )
    .unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let _sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 4000),
        addr(Topology::CAP_IP, 5000),
        &numbered_payloads(10, 100),
    )
    .unwrap();
    wait_for_packets(&sensor.the_file().unwrap(), 10, ARRIVAL).unwrap();
    let log = sensor.stop().unwrap();
    assert!(log.contains("agents_refused=0"), "{log}");
    agent.stop().unwrap();
}

/// Three sizes of numbered UDP packets from gen to cap's port 5000.
fn send_burst(topo: &Topology) {
    for (k, size) in [60usize, 700, 1400].iter().enumerate() {
        let payloads = numbered_payloads(20 * (k as u32 + 1), *size).split_off(20 * k);
        send_udp(
            &topo.gen,
            addr(Topology::GEN_IP, 4000),
            addr(Topology::CAP_IP, 5000),
            &payloads,
        )
        .unwrap();
    }
}

fn frames(p: &[Packet]) -> Vec<(u32, Vec<u8>)> {
    p.iter().map(|p| (p.len, p.data.clone())).collect()
}

/// `key=N` of the sensor's final line.
fn counter(log: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.starts_with("final "))
        .unwrap_or_else(|| panic!("no final line in\n{log}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

#[test]
#[ignore = "needs root"]
fn tap_carries_the_agents_frames_byte_exact() {
    require_root();
    let topo = Topology::new().unwrap();
    let _sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // New interfaces get IPv6 here (the test namespaces turn it off), as
    // on a usual host: the sensor must turn it off on its TAP.
    topo.sen
        .sysctl("net.ipv6.conf.default.disable_ipv6", "0")
        .unwrap();
    topo.sen
        .sysctl("net.ipv6.conf.all.disable_ipv6", "0")
        .unwrap();
    let mut sensor = Sensor::start(
        &topo.sen,
        listen(),
        &["--tap", "xtap0", "--filter", "udp port 5000"],
    )
    .unwrap();
    let v6 = topo
        .sen
        .run("sysctl", ["-n", "net.ipv6.conf.xtap0.disable_ipv6"])
        .unwrap();
    assert_eq!(v6.trim(), "1", "IPv6 off on the TAP");
    let link = topo.sen.run("ip", ["link", "show", "xtap0"]).unwrap();
    assert!(link.contains("NOARP") && link.contains(",UP"), "{link}");
    let on_tap = Tcpdump::start(&topo.sen, "xtap0", &dir.path().join("tap.pcap"), "").unwrap();
    let on_link = Tcpdump::start(
        &topo.cap,
        Topology::CAP_IF,
        &dir.path().join("link.pcap"),
        "udp port 5000",
    )
    .unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini(), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    send_burst(&topo);
    wait_for_packets(&sensor.the_file().unwrap(), 60, ARRIVAL).unwrap();
    let want = on_link.stop().unwrap();
    let got = on_tap.stop().unwrap();
    let log = sensor.stop().unwrap();
    agent.stop().unwrap();
    assert_eq!(want.len(), 60);
    // Nothing else on the TAP (no filter on that tcpdump): the host sends
    // nothing out of it, and every frame arrived once, in order.
    assert_eq!(got.len(), 60, "{log}");
    assert!(
        frames(&got) == frames(&want),
        "TAP frames differ from the link's"
    );
    assert_eq!(counter(&log, "tap_frames"), 60, "{log}");
    assert_eq!(counter(&log, "tap_drops"), 0, "{log}");
    assert_eq!(counter(&log, "tap_skipped"), 0, "{log}");
    // The TAP goes with the sensor.
    assert!(topo.sen.run("ip", ["link", "show", "xtap0"]).is_err());
}

#[test]
#[ignore = "needs root"]
fn tap_per_agent_lives_as_long_as_the_agents_session() {
    require_root();
    let topo = Topology::new().unwrap();
    let _sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sensor = Sensor::start(
        &topo.sen,
        listen(),
        &["--tap-per-agent", "xt", "--filter", "udp port 5000"],
    )
    .unwrap();
    assert!(topo.sen.run("ip", ["link", "show", "xt0"]).is_err());
    let mut agent = Agent::start(&topo.cap, &active_ini(), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    sensor
        .wait_log("frames go onto TAP xt0", 1, START_TIMEOUT)
        .unwrap();
    let on_tap = Tcpdump::start(&topo.sen, "xt0", &dir.path().join("tap.pcap"), "").unwrap();
    let on_link = Tcpdump::start(
        &topo.cap,
        Topology::CAP_IF,
        &dir.path().join("link.pcap"),
        "udp port 5000",
    )
    .unwrap();
    send_burst(&topo);
    wait_for_packets(&sensor.the_file().unwrap(), 60, ARRIVAL).unwrap();
    let want = on_link.stop().unwrap();
    let got = on_tap.stop().unwrap();
    assert_eq!((want.len(), got.len()), (60, 60));
    assert!(
        frames(&got) == frames(&want),
        "TAP frames differ from the link's"
    );
    // The agent goes: so does its TAP, while the sensor runs on.
    agent.stop().unwrap();
    sensor.wait_log("session closed", 1, START_TIMEOUT).unwrap();
    // At once (the session's end closes it), not after the capture's
    // linger: the slot, and so the name, may be taken by the next agent.
    assert!(topo.sen.run("ip", ["link", "show", "xt0"]).is_err());
    let log = sensor.stop().unwrap();
    assert_eq!(counter(&log, "tap_frames"), 60, "{log}");
}

#[test]
#[ignore = "needs root"]
fn frames_that_are_not_ethernet_are_counted_not_written() {
    require_root();
    let topo = Topology::new().unwrap();
    let _sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sensor = Sensor::start(
        &topo.sen,
        listen(),
        &["--tap", "xtap0", "--filter", "udp port 5000"],
    )
    .unwrap();
    let on_tap = Tcpdump::start(&topo.sen, "xtap0", &dir.path().join("tap.pcap"), "").unwrap();
    // `any` captures as LINUX_SLL (linktype 113).
    let ini = active_ini().replace(&format!("ifname={}", Topology::CAP_IF), "ifname=any");
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    agent.wait_capturing("any", 1).unwrap();
    send_burst(&topo);
    wait_for_packets(&sensor.the_file().unwrap(), 60, ARRIVAL).unwrap();
    let got = on_tap.stop().unwrap();
    let log = sensor.stop().unwrap();
    agent.stop().unwrap();
    assert!(got.is_empty(), "nothing on the TAP: {} frames", got.len());
    assert!(log.contains("is not Ethernet"), "{log}");
    assert_eq!(counter(&log, "tap_frames"), 0, "{log}");
    assert_eq!(counter(&log, "tap_skipped"), 60, "{log}");
}
