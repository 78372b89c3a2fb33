//! End-to-end, what the agent's log tells an operator (issue 15): a refused
//! request is one WARN naming the slot and the reason, however often the
//! sensor retries; a capture logs a summary line per `SummaryInterval` and
//! all its counters when it ends. xrpcapd in ns cap dials xrpcap-sensor in
//! ns sen (TESTING.md topology). Needs root.

use std::net::SocketAddr;
use std::time::Duration;

use xrpcap_testkit::daemon::{num, parse_line, START_TIMEOUT};
use xrpcap_testkit::{
    numbered_payloads, require_root, send_udp, wait_for_packets, Agent, Sensor, Topology,
};

use xrpcap_testkit::netns::sock_addr as addr;

fn sensor_addr() -> SocketAddr {
    addr(Topology::SEN_IP, Topology::SEN_PORT)
}

/// The slot's name in the agent's log lines.
fn slot() -> String {
    format!("sensor {}:{}", Topology::SEN_IP, Topology::SEN_PORT)
}

fn ini(ifname: &str) -> String {
    format!(
        "ActiveClient = {}, {}, ifname={ifname}\nNullAuthPermit = YES\n",
        Topology::SEN_IP,
        Topology::SEN_PORT
    )
}

/// The agent's WARN lines (env_logger: `[TIME WARN  …] text`).
fn warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" WARN ")).collect()
}

/// `ifname=` names no interface: the agent refuses every OPEN of the
/// sensor, which retries on its backoff. Before, the agent's log said
/// nothing of why (only the sensor's did); now one WARN names the slot and
/// the reason, and the retries are logged at debug level only.
#[test]
#[ignore = "needs root"]
fn a_wrong_ifname_is_one_warn_naming_the_slot_and_the_reason() {
    require_root();
    let topo = Topology::new().unwrap();
    let mut sensor = Sensor::start(&topo.sen, sensor_addr(), &[]).unwrap();
    let mut agent = Agent::start(&topo.cap, &ini("eth9"), &[]).unwrap();
    // Three refusals at least (the sensor's steps: 1, 2, 5 s…).
    sensor
        .wait_log("the agent refused OPEN", 3, Duration::from_secs(30))
        .unwrap();
    agent.wait_log("refused OPEN", 3, START_TIMEOUT).unwrap();
    let log = agent.stop().unwrap();
    let reason = "no interface matches the preselection (ifname=eth9)";
    let about_slot: Vec<&str> = warnings(&log)
        .into_iter()
        .filter(|l| l.contains(&slot()))
        .collect();
    assert_eq!(about_slot.len(), 1, "one WARN about the slot:\n{log}");
    assert!(
        about_slot[0].contains(reason) && about_slot[0].contains("refused OPEN"),
        "{}",
        about_slot[0]
    );
    // The repeats are there at debug level, as repeats.
    assert!(
        log.matches(reason).count() >= 3,
        "every refusal is logged at debug level:\n{log}"
    );
    // Values, not Debug dumps.
    assert!(!log.contains("Some("), "{log}");
}

/// A capture with `--summary-interval 1` logs summary lines while it runs
/// and every counter when it ends (AF_PACKET used to log none); the final
/// line's `sent` is what the sensor wrote.
#[test]
#[ignore = "needs root"]
fn a_capture_logs_summaries_and_its_counters_at_the_end() {
    require_root();
    let topo = Topology::new().unwrap();
    let _sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    let mut sensor = Sensor::start(&topo.sen, sensor_addr(), &[]).unwrap();
    let mut agent = Agent::start(
        &topo.cap,
        &ini(Topology::CAP_IF),
        &["--summary-interval", "1"],
    )
    .unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    const N: u32 = 50;
    send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 4000),
        addr(Topology::CAP_IP, 5000),
        &numbered_payloads(N, 100),
    )
    .unwrap();
    let file = sensor.the_file().unwrap();
    wait_for_packets(&file, N as usize, Duration::from_secs(20)).unwrap();
    let summary = format!(
        "summary sensor={}:{} iface={}",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    agent.wait_log(&summary, 2, START_TIMEOUT).unwrap();
    // The sensor ends the capture (ENDCAP, CLOSE): the agent's final line.
    sensor.stop().unwrap();
    let written = sensor.final_counters(0).unwrap().get("packets");
    let fin = format!(
        "final sensor={}:{} iface={}",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    agent.wait_log(&fin, 1, START_TIMEOUT).unwrap();
    let log = agent.stop().unwrap();
    let line = log
        .lines()
        .find_map(|l| l.find(&fin).map(|at| &l[at..]))
        .unwrap();
    let f = parse_line(line);
    assert!(num(&f, "frames") >= u64::from(N), "{line}");
    assert_eq!(num(&f, "sent"), written, "{line}");
    assert_eq!(num(&f, "ring_drops") + num(&f, "send_drops"), 0, "{line}");
    // A summary line saw the burst (its frames total).
    let seen = log
        .lines()
        .filter_map(|l| l.find(&summary).map(|at| parse_line(&l[at..])))
        .map(|f| num(&f, "frames"))
        .max()
        .unwrap();
    assert!(seen >= u64::from(N), "{log}");
    // Summary lines carry values only.
    assert!(!log.contains("UdpStr {"), "{log}");
}
