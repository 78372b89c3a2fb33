//! End-to-end, issue 14's sensor and STARTCAP edges: xrpcapd in ns cap dials
//! xrpcap-sensor in ns sen (TESTING.md topology). Real binaries, real
//! packets. Needs root (marked `needs root`: ignored without it).
//!
//! - STARTCAP's direction flags (the sensor's `--direction`): the sensor's
//!   file holds exactly what `tcpdump -Q in` / `-Q out` saw on the captured
//!   link, byte for byte.
//! - SIGTERM to the sensor: the agent sees ENDCAP and CLOSE (its log), not
//!   a dropped connection.

use std::time::{Duration, Instant};

use xrpcap_testkit::traffic::{ping_pong, udp, UdpEcho};
use xrpcap_testkit::{
    numbered_payloads, require_root, wait_for_packets, Agent, Sensor, Tcpdump, Topology,
};

const ARRIVAL: Duration = Duration::from_secs(20);
const ROUND_TRIPS: u32 = 50;

use xrpcap_testkit::netns::sock_addr as addr;

fn active_ini() -> String {
    format!(
        "ActiveClient = {}, {}, ifname={}\nNullAuthPermit = YES\nMaxBackoffSecs = 1\n",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    )
}

/// `ROUND_TRIPS` requests gen:7001 → cap:7000, each echoed back; the sensor
/// asks for `direction` only. Its file must equal `tcpdump -Q direction` on
/// the captured link, and hold only the requests (in) or the echoes (out).
fn captures_one_direction(direction: &str) {
    require_root();
    let topo = Topology::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tcpdump = Tcpdump::start(
        &topo.cap,
        Topology::CAP_IF,
        &tmp.path().join("c0.pcap"),
        &format!("-Q {direction}"),
    )
    .unwrap();
    let listen = addr(Topology::SEN_IP, Topology::SEN_PORT);
    let mut sensor = Sensor::start(&topo.sen, listen, &["--direction", direction]).unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini(), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();

    let echo = UdpEcho::start(&topo.cap, addr(Topology::CAP_IP, 7000)).unwrap();
    let payloads = numbered_payloads(ROUND_TRIPS, 100);
    ping_pong(
        &topo.gen,
        addr(Topology::GEN_IP, 7001),
        addr(Topology::CAP_IP, 7000),
        &payloads,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(echo.stop(), u64::from(ROUND_TRIPS));

    let frames = ROUND_TRIPS as usize;
    let file = sensor.the_file().unwrap();
    wait_for_packets(&file, frames, ARRIVAL).unwrap();
    let reference = tcpdump.stop().unwrap();
    agent.stop().unwrap();
    sensor.stop().unwrap();
    let got = sensor.packets().unwrap();

    assert_eq!(reference.len(), frames, "tcpdump -Q {direction} on c0");
    assert_eq!(got.len(), frames, "frames in the sensor's file");
    let ports = if direction == "in" {
        (7001, 7000)
    } else {
        (7000, 7001)
    };
    for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
        assert_eq!((g.len, g.caplen), (r.len, r.caplen), "lengths of frame {i}");
        assert!(g.data == r.data, "bytes of frame {i} differ from tcpdump's");
        let u = udp(g).unwrap();
        assert_eq!((u.sport, u.dport), ports, "frame {i} ({direction})");
        assert_eq!(u.payload, &payloads[i][..], "payload of frame {i}");
    }
    let c = sensor.final_counters(0).unwrap();
    assert_eq!(c.get("packets"), frames as u64, "{c:?}");
    assert_eq!(c.get("agent_sent"), frames as u64, "{c:?}");
}

#[test]
#[ignore = "needs root"]
fn inbound_only_capture_equals_tcpdump_q_in() {
    captures_one_direction("in");
}

#[test]
#[ignore = "needs root"]
fn outbound_only_capture_equals_tcpdump_q_out() {
    captures_one_direction("out");
}

#[test]
#[ignore = "needs root"]
fn sigterm_to_the_sensor_ends_the_agents_capture_with_endcap_and_close() {
    require_root();
    let topo = Topology::new().unwrap();
    let listen = addr(Topology::SEN_IP, Topology::SEN_PORT);
    let mut sensor = Sensor::start(&topo.sen, listen, &[]).unwrap();
    let mut agent = Agent::start(&topo.cap, &active_ini(), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let t = Instant::now();
    let sensor_log = sensor.stop().unwrap();
    let took = t.elapsed();
    // The agent answered ENDCAP, then saw the sensor's CLOSE and closed.
    agent
        .wait_log(": capture ended", 1, Duration::from_secs(5))
        .unwrap();
    agent
        .wait_log("closed the session", 1, Duration::from_secs(5))
        .unwrap();
    agent
        .wait_log("sent CLOSE", 1, Duration::from_secs(5))
        .unwrap();
    let log = agent.stop().unwrap();
    assert!(
        !sensor_log.contains("did not close within"),
        "a live agent closes at once:\n{sensor_log}"
    );
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    assert!(!log.contains("connection reset"), "{log}");
}

/// The agent capturing c0 with AF_XDP; the sensor asks for `direction`.
fn afxdp_pair(direction: &str) -> (Topology, Sensor, Agent) {
    let topo = Topology::new().unwrap();
    let listen = addr(Topology::SEN_IP, Topology::SEN_PORT);
    let sensor = Sensor::start(&topo.sen, listen, &["--direction", direction]).unwrap();
    let ini = format!("{}Capture = afxdp:{}\n", active_ini(), Topology::CAP_IF);
    let agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    (topo, sensor, agent)
}

#[test]
#[ignore = "needs root"]
fn afxdp_refuses_outbound_only_saying_it_sees_ingress_only() {
    require_root();
    let (_topo, mut sensor, mut agent) = afxdp_pair("out");
    // The sensor retries STARTCAP and logs the agent's reason each time.
    sensor
        .wait_log("AF_XDP sees received frames only", 1, ARRIVAL)
        .unwrap();
    assert!(
        !agent.log().contains("capture on c0 started"),
        "{}",
        agent.log()
    );
    agent.stop().unwrap();
    sensor.stop().unwrap();
}

#[test]
#[ignore = "needs root"]
fn afxdp_captures_inbound_only() {
    require_root();
    let (topo, mut sensor, mut agent) = afxdp_pair("in");
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    agent.wait_log("AF_XDP capture", 1, ARRIVAL).unwrap();
    let payloads = numbered_payloads(20, 100);
    xrpcap_testkit::send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 7002),
        addr(Topology::CAP_IP, 7001),
        &payloads,
    )
    .unwrap();
    let got = wait_for_packets(&sensor.the_file().unwrap(), 20, ARRIVAL).unwrap();
    assert!(got.iter().all(|p| udp(p).is_some_and(|u| u.dport == 7001)));
    agent.stop().unwrap();
    sensor.stop().unwrap();
}
