//! End-to-end, `--udp-shared-port` (issue 18 item 6, ports): two real
//! xrpcapd agents in two namespaces (two source IPs) dial one xrpcap-sensor
//! whose UDP captures all use one port. Each agent's file is byte-exact
//! against tcpdump on its captured link; a datagram to the shared port
//! from an unknown address, and one from another port of an agent's
//! address, are counted as foreign and not written; the shared port's own
//! counters are on the sensor's `/metrics` while it runs.
//! Needs root (marked `needs root`: ignored without it).

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::Duration;

use xrpcap_testkit::daemon::{count_of, START_TIMEOUT};
use xrpcap_testkit::prometheus::http_get_in;
use xrpcap_testkit::{
    bin_path, numbered_payloads, read_pcap, require_root, send_udp, veth_pair, wait_for_packets,
    wait_until, Agent, Netns, Tcpdump, Topology, VethEnd,
};

const ARRIVAL: Duration = Duration::from_secs(20);
const SHARED_PORT: u16 = 2099;
/// The sensor's metrics endpoint, in ns sen.
const METRICS: &str = "127.0.0.1:9465";

const GEN2_IP: &str = "10.200.3.1";
const CAP2_IP: &str = "10.200.3.2";
const UPLINK2_IP: &str = "10.200.4.1";
const SEN2_IP: &str = "10.200.4.2";

use xrpcap_testkit::netns::sock_addr as addr;

use xrpcap_testkit::pcap::len_and_data as bytes;

fn read_log(log: &tempfile::NamedTempFile) -> String {
    std::fs::read_to_string(log.path()).unwrap_or_default()
}

#[test]
#[ignore = "needs root"]
fn two_agents_on_one_shared_udp_port_byte_exact_foreign_counted() {
    require_root();
    let topo = Topology::new().unwrap();
    let gen2 = Netns::new("gen2").unwrap();
    let cap2 = Netns::new("cap2").unwrap();
    veth_pair(
        VethEnd {
            ns: &gen2,
            ifname: Topology::GEN_IF,
            cidr: "10.200.3.1/24",
        },
        VethEnd {
            ns: &cap2,
            ifname: Topology::CAP_IF,
            cidr: "10.200.3.2/24",
        },
        1500,
    )
    .unwrap();
    veth_pair(
        VethEnd {
            ns: &cap2,
            ifname: Topology::UPLINK_IF,
            cidr: "10.200.4.1/24",
        },
        VethEnd {
            ns: &topo.sen,
            ifname: "s2",
            cidr: "10.200.4.2/24",
        },
        1500,
    )
    .unwrap();
    // Sockets taking port 5000 so no ICMP port unreachable joins the capture.
    let _sinks = (
        topo.cap.udp_socket(addr(Topology::CAP_IP, 5000)).unwrap(),
        cap2.udp_socket(addr(CAP2_IP, 5000)).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let td1 = Tcpdump::start(
        &topo.cap,
        Topology::CAP_IF,
        &dir.path().join("1.pcap"),
        "udp port 5000",
    )
    .unwrap();
    let td2 = Tcpdump::start(
        &cap2,
        Topology::CAP_IF,
        &dir.path().join("2.pcap"),
        "udp port 5000",
    )
    .unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut sensor = topo
        .sen
        .command(bin_path("xrpcap-sensor"))
        .args(["--listen", "0.0.0.0:2003"])
        .args(["--udp-shared-port", &SHARED_PORT.to_string()])
        .args(["--filter", "udp port 5000", "--stats-interval", "1"])
        .args(["--summary-interval", "3600", "--name", "{agent}.pcap"])
        .args(["--metrics-listen", METRICS])
        .arg("--out")
        .arg(out.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let wait_log = |needle: &str, n: usize| {
        wait_until(START_TIMEOUT, needle, || {
            Ok(count_of(&read_log(&log), needle) >= n)
        })
        .unwrap_or_else(|e| panic!("{e:#}\n--- sensor log ---\n{}", read_log(&log)));
    };
    wait_log("listening for active agents", 1);
    let mut a1 = Agent::start(&topo.cap, &Topology::active_ini(Topology::SEN_IP), &[]).unwrap();
    let mut a2 = Agent::start(&cap2, &Topology::active_ini(SEN2_IP), &[]).unwrap();
    a1.wait_capturing(Topology::CAP_IF, 1).unwrap();
    a2.wait_capturing(Topology::CAP_IF, 1).unwrap();
    // Both captures were told the one shared port.
    wait_log(&format!("via UDP port {SHARED_PORT} "), 2);

    let sizes = [60usize, 700, 1400];
    for (k, size) in sizes.iter().enumerate() {
        let payloads: Vec<Vec<u8>> =
            numbered_payloads(20 * (k as u32 + 1), *size).split_off(20 * k);
        send_udp(
            &topo.gen,
            addr(Topology::GEN_IP, 4000),
            addr(Topology::CAP_IP, 5000),
            &payloads,
        )
        .unwrap();
        send_udp(&gen2, addr(GEN2_IP, 4000), addr(CAP2_IP, 5000), &payloads).unwrap();
    }
    let f1 = out.path().join(format!("{}.pcap", Topology::UPLINK_IP));
    let f2 = out.path().join(format!("{UPLINK2_IP}.pcap"));
    wait_for_packets(&f1, 60, ARRIVAL).unwrap();
    wait_for_packets(&f2, 60, ARRIVAL).unwrap();

    // Foreign, now that both sources are pinned: an address with no
    // capture (the sensor's own loopback), and agent 1's address from
    // another port. Each looks like a valid udpstr datagram's start.
    let junk = [0u8, 0x11, 0, 0, 0, 0, 0, 0];
    let stranger = topo.sen.udp_socket(addr("127.0.0.1", 0)).unwrap();
    stranger
        .send_to(&junk, addr("127.0.0.1", SHARED_PORT))
        .unwrap();
    let other_port: UdpSocket = topo.cap.udp_socket(addr(Topology::UPLINK_IP, 0)).unwrap();
    other_port
        .send_to(&junk, addr(Topology::SEN_IP, SHARED_PORT))
        .unwrap();
    // The shared port's counters on /metrics (a snapshot every 100 ms).
    let scrape = || {
        let (code, page) =
            http_get_in(topo.sen.name(), METRICS.parse().unwrap(), "/metrics", None).unwrap();
        assert_eq!(code, 200, "{page}");
        page
    };
    let mut page = String::new();
    wait_until(
        Duration::from_secs(5),
        "shared_port_foreign_total 1",
        || {
            page = scrape();
            Ok(page.contains("\nxrpcap_sensor_shared_port_foreign_total 1\n"))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{page}"));
    for want in [
        "\nxrpcap_sensor_shared_port_socket_drops_total 0\n",
        "\nxrpcap_sensor_shared_port_fallbacks_total 0\n",
        // Agent 1's other port: its capture's foreign, not the port's.
        &format!(
            "\nxrpcap_sensor_foreign_total{{agent=\"{}\",interface=\"{}\"}} 1\n",
            Topology::UPLINK_IP,
            Topology::CAP_IF
        ),
    ] {
        assert!(page.contains(want), "{want:?} missing in\n{page}");
    }

    let pid = sensor.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let st = sensor.wait().unwrap();
    let text = read_log(&log);
    assert!(st.success(), "sensor: {st}\n{text}");
    a1.stop().unwrap();
    a2.stop().unwrap();
    let want1 = td1.stop().unwrap();
    let want2 = td2.stop().unwrap();
    assert_eq!((want1.len(), want2.len()), (60, 60));
    let got1 = read_pcap(&f1).unwrap();
    let got2 = read_pcap(&f2).unwrap();
    assert!(bytes(&got1) == bytes(&want1), "link 1 differs from tcpdump");
    assert!(bytes(&got2) == bytes(&want2), "link 2 differs from tcpdump");
    assert!(
        text.contains(&format!(
            "shared UDP port {SHARED_PORT}: foreign=1 socket_drops=0 fallbacks=0"
        )),
        "{text}"
    );
    // Agent 1's capture counted the datagram from its other port; agent 2's none.
    let finals: Vec<&str> = text.lines().filter(|l| l.contains(" foreign=")).collect();
    let of = |ip: &str| {
        finals
            .iter()
            .find(|l| l.contains(ip))
            .unwrap_or_else(|| panic!("no final line of {ip}:\n{text}"))
            .to_string()
    };
    assert!(of(Topology::UPLINK_IP).contains(" foreign=1 "), "{text}");
    assert!(of(UPLINK2_IP).contains(" foreign=0 "), "{text}");
    assert!(of(Topology::UPLINK_IP).contains(" packets=60 "), "{text}");
    drop(gen2);
}
