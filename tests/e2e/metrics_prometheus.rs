//! End-to-end, issue 15's Done-when: a real Prometheus server (Debian's
//! `prometheus`) scrapes xrpcap-sensor's `--metrics-listen` endpoint (and
//! xrpcapd's, when the agent has one) in the TESTING.md topology, and the
//! test asks Prometheus' query API what it saw: the packets written equal a
//! known burst (and the agent's frames sent), and drops forced on the
//! sensor show up in its drop counters. `promtool check metrics` passes on
//! the endpoints' answers. Needs root (marked `needs root`).

use std::net::SocketAddr;
use std::time::Duration;

use xrpcap_testkit::prometheus::{grafana_check, http_get_in, promtool_check_metrics, Prometheus};
use xrpcap_testkit::traffic::payload;
use xrpcap_testkit::{
    bin_path, require_root, send_udp, wait_until, Agent, Netns, Sensor, Topology,
};

/// Frames of the known burst.
const BURST: usize = 1000;
/// How long Prometheus may take to see a value (scrapes each second).
const SEEN: Duration = Duration::from_secs(30);
/// The sensor's endpoint, inside ns sen (where Prometheus runs).
const SENSOR_METRICS: &str = "127.0.0.1:9464";
/// The agent's endpoint, on its uplink (ns cap), scraped from ns sen.
const AGENT_METRICS_PORT: u16 = 9917;
/// Prometheus' own address, in ns sen.
const PROMETHEUS: &str = "127.0.0.1:9090";

use xrpcap_testkit::netns::sock_addr as addr;

/// Whether this xrpcapd has `--metrics-listen` (issue 15, agent side): the
/// agent half of the test runs once it has.
fn agent_has_metrics() -> bool {
    std::process::Command::new(bin_path("xrpcapd"))
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--metrics-listen"))
}

/// Sends `n` UDP frames of `frame_len` bytes gen → cap:5000, in chunks of
/// `chunk` with `pause` between (the agent's ring must keep up).
fn send_frames(topo: &Topology, n: usize, frame_len: usize, chunk: usize, pause: Duration) {
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| payload(frame_len, i)).collect();
    for (i, c) in payloads.chunks(chunk).enumerate() {
        send_udp(
            &topo.gen,
            addr(Topology::GEN_IP, 4000 + (i % 2) as u16),
            addr(Topology::CAP_IP, 5000),
            c,
        )
        .unwrap();
        std::thread::sleep(pause);
    }
}

struct Setup {
    topo: Topology,
    sensor: Sensor,
    agent: Agent,
    prom: Prometheus,
    agent_metrics: Option<SocketAddr>,
    _sink: std::net::UdpSocket,
}

fn setup() -> Setup {
    let topo = Topology::new().unwrap();
    let sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    let sensor = Sensor::start(
        &topo.sen,
        addr(Topology::SEN_IP, Topology::SEN_PORT),
        &[
            "--filter",
            "udp port 5000",
            "--metrics-listen",
            SENSOR_METRICS,
        ],
    )
    .unwrap();
    let agent_metrics = agent_has_metrics().then(|| addr(Topology::UPLINK_IP, AGENT_METRICS_PORT));
    let ini = format!(
        "ActiveClient = {}, {}, ifname={}\nNullAuthPermit = YES\nMaxBackoffSecs = 1\n",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    let listen = agent_metrics.map(|a| a.to_string());
    let extra: Vec<&str> = match &listen {
        Some(a) => vec!["--metrics-listen", a],
        None => {
            eprintln!("xrpcapd has no --metrics-listen yet: the agent half is skipped");
            vec![]
        }
    };
    let mut agent = Agent::start(&topo.cap, &ini, &extra).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let mut targets = vec![("sensor", SENSOR_METRICS.parse().unwrap())];
    if let Some(a) = agent_metrics {
        targets.push(("agent", a));
    }
    let prom = Prometheus::start(&topo.sen, PROMETHEUS.parse().unwrap(), &targets).unwrap();
    prom.wait_up(targets.len(), SEEN).unwrap();
    Setup {
        topo,
        sensor,
        agent,
        prom,
        agent_metrics,
        _sink: sink,
    }
}

/// The sensor's counter `name` for the capture of c0.
fn sensor_q(name: &str) -> String {
    format!("xrpcap_sensor_{name}{{interface=\"{}\"}}", Topology::CAP_IF)
}

fn agent_sent_q() -> String {
    format!(
        "sum(xrpcapd_capture_frames_sent_total{{interface=\"{}\"}})",
        Topology::CAP_IF
    )
}

/// `GET /metrics` of `addr` from inside `ns` (the text format), checked by promtool.
fn promtool_ok(ns: &Netns, addr: SocketAddr) -> String {
    let (status, text) = http_get_in(ns.name(), addr, "/metrics", None).unwrap();
    assert_eq!(status, 200, "{text}");
    promtool_check_metrics(&text).unwrap();
    text
}

#[test]
#[ignore = "needs root"]
fn prometheus_counts_the_burst_the_sensor_wrote() {
    require_root();
    let mut s = setup();
    send_frames(&s.topo, BURST, 200, 100, Duration::from_millis(5));
    let q = sensor_q("packets_total");
    let written = s.prom.wait_value(&q, SEEN, |v| v >= BURST as f64).unwrap();
    assert_eq!(written, BURST as f64, "{q}");
    let frame_bytes = (BURST * 200) as f64;
    assert_eq!(
        s.prom.value(&sensor_q("bytes_total")).unwrap(),
        Some(frame_bytes)
    );
    for none in [
        "lost_total",
        "socket_drops_total",
        "write_drops_total",
        "seq_gaps_total",
    ] {
        assert_eq!(s.prom.value(&sensor_q(none)).unwrap(), Some(0.0), "{none}");
    }
    assert_eq!(
        s.prom
            .value("xrpcap_sensor_sessions{state=\"capturing\"}")
            .unwrap(),
        Some(1.0)
    );
    // The agent's GSO runs reach the sensor whole (UDP GRO over the veth):
    // some datagrams came several to a buffer, never more than were sent
    // (220-byte records: fewer datagrams than packets).
    let gro = s.prom.value(&sensor_q("gro_datagrams_total")).unwrap();
    assert!(
        gro.is_some_and(|g| g > 0.0 && g < BURST as f64),
        "gro_datagrams_total {gro:?}"
    );
    // The agent's STATS arrive each second: it captured at least the burst.
    s.prom
        .wait_value(&sensor_q("agent_svrcapt"), SEEN, |v| v >= BURST as f64)
        .unwrap();
    // Every record reaches the file within a second (FILE_FLUSH_AGE): header
    // (24) and per record 16 + 200 bytes.
    let on_disk = (24 + BURST * 216) as f64;
    s.prom
        .wait_value("xrpcap_sensor_output_written_bytes_total", SEEN, |v| {
            v >= on_disk
        })
        .unwrap();
    assert_eq!(s.prom.value("xrpcap_sensor_build_info").unwrap(), Some(1.0));
    let text = promtool_ok(&s.topo.sen, SENSOR_METRICS.parse().unwrap());
    assert!(
        text.contains("# TYPE xrpcap_sensor_packets_total counter"),
        "{text}"
    );
    // The sensor's dashboard reads only names this page has.
    grafana_check(&[&text], "xrpcap-sensor.json").unwrap();
    if let Some(a) = s.agent_metrics {
        let sent = s
            .prom
            .wait_value(&agent_sent_q(), SEEN, |v| v >= BURST as f64)
            .unwrap();
        assert_eq!(
            sent, written,
            "agent's frames sent vs sensor's packets written"
        );
        promtool_ok(&s.topo.sen, a);
    }
    s.agent.stop().unwrap();
    s.sensor.stop().unwrap();
}

/// xrpcap-sensor in ns sen streaming its capture to a pipe nobody reads
/// (`-w -`): its writer stalls once the pipe is full.
struct StalledSensor {
    child: std::process::Child,
    _stdout: std::process::ChildStdout,
    log: tempfile::NamedTempFile,
}

impl StalledSensor {
    fn start(ns: &Netns) -> StalledSensor {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = ns
            .command(bin_path("xrpcap-sensor"))
            .args([
                "--listen",
                &addr(Topology::SEN_IP, Topology::SEN_PORT).to_string(),
            ])
            .args(["-w", "-", "--filter", "udp port 5000"])
            .args(["--stats-interval", "1", "--metrics-listen", SENSOR_METRICS])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        wait_until(Duration::from_secs(10), "the sensor listening", || {
            Ok(std::fs::read_to_string(log.path())?.contains("listening for active agents"))
        })
        .unwrap();
        StalledSensor {
            child,
            _stdout: stdout,
            log,
        }
    }
}

impl Drop for StalledSensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- stalled sensor's log ---\n{}",
                std::fs::read_to_string(self.log.path()).unwrap_or_default()
            );
        }
    }
}

#[test]
#[ignore = "needs root"]
fn drops_forced_by_a_stalled_writer_show_in_the_drop_counters() {
    require_root();
    let topo = Topology::new().unwrap();
    let _sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    let _sensor = StalledSensor::start(&topo.sen);
    let ini = format!(
        "ActiveClient = {}, {}, ifname={}\nNullAuthPermit = YES\nMaxBackoffSecs = 1\n",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let prom = Prometheus::start(
        &topo.sen,
        PROMETHEUS.parse().unwrap(),
        &[("sensor", SENSOR_METRICS.parse().unwrap())],
    )
    .unwrap();
    prom.wait_up(1, SEEN).unwrap();
    // The writer holds 16 MiB of buffers (writer::IN_FLIGHT) and the pipe
    // 64 KiB; 20 000 frames of 1400 bytes are 28 MB: what the agent forwards
    // beyond that is dropped by the sensor, and counted.
    const FRAMES: usize = 20_000;
    send_frames(&topo, FRAMES, 1400, 500, Duration::from_millis(20));
    let drops = prom
        .wait_value(&sensor_q("write_drops_total"), SEEN, |v| v > 0.0)
        .unwrap();
    // Settled: what was received is either written or dropped.
    std::thread::sleep(Duration::from_secs(2));
    let written = prom.value(&sensor_q("packets_total")).unwrap().unwrap();
    let drops_now = prom.value(&sensor_q("write_drops_total")).unwrap().unwrap();
    assert!(drops_now >= drops);
    // About 16 MiB / 1416 bytes per record reached the buffers.
    assert!(
        (11_000.0..13_000.0).contains(&written),
        "{written} records taken by the writer's buffers"
    );
    assert_eq!(
        prom.value(&sensor_q("socket_drops_total")).unwrap(),
        Some(0.0)
    );
    promtool_ok(&topo.sen, SENSOR_METRICS.parse().unwrap());
    agent.stop().unwrap();
}
