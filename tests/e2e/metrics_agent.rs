//! End-to-end: the agent's Prometheus endpoint (`--metrics-listen`,
//! `MetricsListen`). xrpcapd in ns cap forwards a known burst to
//! xrpcap-sensor in ns sen; the endpoint listens on the agent's uplink
//! address and is scraped from the sensor's namespace (where a Prometheus
//! server would run) with a plain HTTP GET. The counters must match what the
//! sensor wrote, and `promtool check metrics` (Debian's `prometheus`
//! package) must pass on the page. Needs root (marked `needs root`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use xrpcap_testkit::daemon::START_TIMEOUT;
use xrpcap_testkit::prometheus::grafana_check;
use xrpcap_testkit::{
    bin_path, numbered_payloads, require_root, send_udp, wait_for_packets, wait_until, Agent,
    Child, Netns, Sensor, Topology,
};

/// Ethernet (14) + IPv4 (20) + UDP (8).
const HEADERS: usize = 42;
const ARRIVAL: Duration = Duration::from_secs(20);
const METRICS_PORT: u16 = 9917;

use xrpcap_testkit::netns::sock_addr as addr;

/// `GET path` on `to` from namespace `ns`: the status line and the body.
fn get(ns: &Netns, to: SocketAddr, path: &str) -> anyhow::Result<(String, String)> {
    ns.enter(|| -> anyhow::Result<(String, String)> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let (head, body) = out
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no end of headers: {out:?}"))?;
        Ok((
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        ))
    })?
}

/// The value of the sample `name{labels}` (labels as the page orders them:
/// by name).
fn sample(page: &str, name_labels: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name_labels)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

/// `promtool check metrics` on `page`: its exit status and output.
fn promtool(page: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A burst of known size and frame length: the agent's frames-sent and
/// framed-bytes counters equal what the sensor wrote; nothing is dropped;
/// the slot is capturing; the page passes promtool.
#[test]
#[ignore = "needs root"]
fn frames_sent_equal_the_packets_the_sensor_wrote() {
    let (page, _) = burst_and_scrape("", |_| true);
    assert!(!page.contains("xrpcapd_capture_xdp_"), "{page}");
}

/// The same on AF_XDP, whose program's counters appear too.
#[test]
#[ignore = "needs root"]
fn af_xdp_captures_show_the_program_counters() {
    let labels = format!(
        "{{interface=\"{}\",sensor=\"{}:{}\"}}",
        Topology::CAP_IF,
        Topology::SEN_IP,
        Topology::SEN_PORT
    );
    let redirected = format!("xrpcapd_capture_xdp_redirected_total{labels}");
    // The program's map is read at most once a second.
    let (page, failed) = burst_and_scrape("Capture = afxdp:c0\n", |page| {
        sample(page, &redirected).is_some_and(|n| n >= f64::from(BURST))
    });
    let c = |name: &str| sample(&page, &format!("xrpcapd_capture_xdp_{name}{labels}"));
    assert!(c("redirected_total").unwrap() >= f64::from(BURST), "{page}");
    assert_eq!(c("ring_full_total"), Some(0.0), "{page}");
    assert!(c("filtered_total").is_some(), "{page}");
    // Every series the agent has (captures, XDP, a last error) is on these
    // two pages: the dashboard reads only names they have.
    grafana_check(&[&page, &failed], "xrpcapd-agent.json").unwrap();
}

const BURST: u32 = 200;
const PAYLOAD: usize = 300;

/// Sends [`BURST`] frames through an agent configured with `ini_extra`,
/// checks the counters against the sensor's file and promtool; returns the
/// last page, once `settled` says it is complete too, and a page scraped
/// once the sensor stopped (the slot's last error on it).
fn burst_and_scrape(ini_extra: &str, settled: impl Fn(&str) -> bool) -> (String, String) {
    require_root();
    let topo = Topology::new().unwrap();
    let listen = addr(Topology::SEN_IP, Topology::SEN_PORT);
    let mut sensor = Sensor::start(&topo.sen, listen, &["--filter", "udp port 5000"]).unwrap();
    let endpoint = addr(Topology::UPLINK_IP, METRICS_PORT);
    let ini = format!(
        "ActiveClient = {}, {}, ifname={}\nNullAuthPermit = YES\nMetricsListen = {endpoint}\n{ini_extra}",
        Topology::SEN_IP,
        Topology::SEN_PORT,
        Topology::CAP_IF
    );
    let mut agent = Agent::start(&topo.cap, &ini, &[]).unwrap();
    agent
        .wait_log(
            &format!("metrics on http://{endpoint}/metrics"),
            1,
            START_TIMEOUT,
        )
        .unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let _sink = topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap();
    send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 4000),
        addr(Topology::CAP_IP, 5000),
        &numbered_payloads(BURST, PAYLOAD),
    )
    .unwrap();
    let file = sensor.the_file().unwrap();
    wait_for_packets(&file, BURST as usize, ARRIVAL).unwrap();

    let sensor_label = format!("sensor=\"{}:{}\"", Topology::SEN_IP, Topology::SEN_PORT);
    let labels = format!("{{interface=\"{}\",{sensor_label}}}", Topology::CAP_IF);
    let sent = format!("xrpcapd_capture_frames_sent_total{labels}");
    // The control loop publishes every 500 ms.
    let mut page = String::new();
    wait_until(ARRIVAL, "the endpoint to count the burst", || {
        let (status, body) = get(&topo.sen, endpoint, "/metrics")?;
        anyhow::ensure!(status.contains(" 200 "), "{status}");
        page = body;
        Ok(sample(&page, &sent) == Some(f64::from(BURST)) && settled(&page))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{page}"));
    sensor.stop().unwrap();
    let mut failed = String::new();
    wait_until(ARRIVAL, "the slot's last error on the page", || {
        failed = get(&topo.sen, endpoint, "/metrics")?.1;
        Ok(failed.contains("xrpcapd_sensor_last_error_info{"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{failed}"));
    agent.stop().unwrap();
    let written = sensor.packets().unwrap().len();

    assert_eq!(sample(&page, &sent), Some(written as f64), "{page}");
    let c = |name: &str| sample(&page, &format!("xrpcapd_capture_{name}{labels}"));
    let frame = (HEADERS + PAYLOAD) as f64;
    assert_eq!(
        c("framed_bytes_total"),
        Some(f64::from(BURST) * frame),
        "{page}"
    );
    let written_bytes = sensor.final_counters(0).unwrap().get("bytes");
    assert_eq!(
        c("framed_bytes_total"),
        Some(written_bytes as f64),
        "{page}"
    );
    // udpstr: the frames and their record and datagram headers.
    let bytes_sent = c("bytes_sent_total").unwrap();
    let framed = f64::from(BURST) * frame;
    assert!(bytes_sent > framed && bytes_sent < 2.0 * framed, "{page}");
    assert_eq!(c("frames_seen_total"), Some(f64::from(BURST)), "{page}");
    assert_eq!(c("ring_drops_total"), Some(0.0), "{page}");
    assert_eq!(c("send_drops_total"), Some(0.0), "{page}");
    assert_eq!(c("truncated_total"), Some(0.0), "{page}");
    assert_eq!(c("running"), Some(1.0), "{page}");
    assert!(c("datagrams_sent_total").unwrap() >= 1.0, "{page}");
    let state = |s: &str| {
        sample(
            &page,
            &format!("xrpcapd_sensor_state{{{sensor_label},state=\"{s}\"}}"),
        )
    };
    assert_eq!(state("capturing"), Some(1.0), "{page}");
    assert_eq!(state("backing-off"), Some(0.0), "{page}");
    assert_eq!(
        sample(
            &page,
            &format!("xrpcapd_sensor_attempts_total{{{sensor_label}}}")
        ),
        Some(1.0),
        "{page}"
    );
    assert!(sample(&page, "xrpcapd_process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&page, "xrpcapd_uptime_seconds").unwrap() > 0.0);
    let (ok, lint) = promtool(&page);
    assert!(ok, "promtool check metrics: {lint}\n{page}");
    (page, failed)
}

/// Only GET /metrics is served; a sensor that refuses leaves its reason in
/// the last-error info metric and the slot backing off.
#[test]
#[ignore = "needs root"]
fn other_paths_are_404_and_a_refusing_sensor_shows_its_error() {
    require_root();
    let ns = Netns::new("met").unwrap();
    let endpoint = addr("127.0.0.1", METRICS_PORT);
    // Nobody listens on port 1: every attempt is refused.
    let ini = "ActiveClient = 127.0.0.1, 1\nMaxBackoffSecs = 1\n";
    let mut agent = Agent::start(&ns, ini, &["--metrics-listen", "127.0.0.1:9917"]).unwrap();
    agent
        .wait_log("metrics on http://127.0.0.1:9917/metrics", 1, START_TIMEOUT)
        .unwrap();
    let (status, _) = get(&ns, endpoint, "/").unwrap();
    assert!(status.contains(" 404 "), "{status}");
    let s = "sensor=\"127.0.0.1:1\"";
    let reconnects = format!("xrpcapd_sensor_reconnects_total{{{s}}}");
    let mut page = String::new();
    wait_until(START_TIMEOUT, "a retry and its reason on the page", || {
        page = get(&ns, endpoint, "/metrics")?.1;
        Ok(page.contains("xrpcapd_sensor_last_error_info{")
            && sample(&page, &reconnects).is_some_and(|n| n >= 1.0))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{page}"));
    agent.stop().unwrap();
    assert!(
        page.lines()
            .any(|l| l.starts_with("xrpcapd_sensor_last_error_info{error=\"")
                && l.contains("refused")
                && l.ends_with(&format!(",{s}}} 1"))),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            &format!("xrpcapd_sensor_state{{{s},state=\"capturing\"}}")
        ),
        Some(0.0)
    );
    let (ok, lint) = promtool(&page);
    assert!(ok, "promtool check metrics: {lint}\n{page}");
}

/// A bad `--metrics-listen` or `MetricsListen` value is a configuration
/// error (exit 78), said before anything listens.
#[test]
fn bad_metrics_listen_values_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("rpcapd.ini");
    std::fs::write(&ini, "MetricsListen = localhost:9917\nPassive = no\n").unwrap();
    let ini = ini.to_str().unwrap();
    for args in [
        vec!["-v", "-a", "127.0.0.1,1", "--metrics-listen", "9917"],
        vec!["-v", "-a", "127.0.0.1,1", "--metrics-listen", "127.0.0.1:0"],
        vec!["-f", ini, "-a", "127.0.0.1,1"],
    ] {
        let mut child = Child::spawn("xrpcapd", {
            let mut c = Command::new(bin_path("xrpcapd"));
            c.args(&args);
            c
        })
        .unwrap();
        let status = child
            .wait_timeout(Duration::from_secs(20))
            .unwrap()
            .unwrap_or_else(|| panic!("xrpcapd {args:?} did not exit"));
        let err = child.stderr();
        assert_eq!(status.code(), Some(78), "{args:?}: {err}");
        assert!(err.contains("ADDR:PORT"), "{args:?}: {err}");
    }
}
