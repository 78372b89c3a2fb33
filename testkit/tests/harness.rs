//! Self-test of the test kit: namespaces, veth, UDP traffic, a tcpdump
//! reference capture read back with the kit's reader, child and namespace
//! cleanup. Most need root (marked `needs root`, run by scripts/test.sh).

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use xrpcap_testkit::{
    numbered_payloads, read_pcap, require_root, send_udp, veth_pair, wait_for_packets,
    wait_tcp_listen, Child, Netns, Tcpdump, Topology, VethEnd,
};

const COUNT: u32 = 50;
const PAYLOAD: usize = 100;
/// Ethernet (14) + IPv4 (20) + UDP (8) headers.
const HEADERS: usize = 42;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid socket address")
}

/// Receives up to `count` datagrams, each within `timeout`.
fn receive(socket: &UdpSocket, count: u32, timeout: Duration) -> Vec<Vec<u8>> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    for _ in 0..count {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => got.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    got
}

#[test]
#[ignore = "needs root"]
fn udp_over_veth_is_received_and_captured_then_namespaces_vanish() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("b0.pcap");
    let names;
    {
        let a = Netns::new("ha").unwrap();
        let b = Netns::new("hb").unwrap();
        names = [a.name().to_string(), b.name().to_string()];
        assert!(Netns::exists(&names[0]) && Netns::exists(&names[1]));
        veth_pair(
            VethEnd {
                ns: &a,
                ifname: "a0",
                cidr: "10.201.1.1/24",
            },
            VethEnd {
                ns: &b,
                ifname: "b0",
                cidr: "10.201.1.2/24",
            },
            1500,
        )
        .unwrap();

        let tcpdump = Tcpdump::start(&b, "b0", &pcap, "").unwrap();
        let receiver = b.udp_socket(addr("10.201.1.2:4000")).unwrap();
        let payloads = numbered_payloads(COUNT, PAYLOAD);
        let sent = send_udp(
            &a,
            addr("10.201.1.1:3999"),
            addr("10.201.1.2:4000"),
            &payloads,
        )
        .unwrap();
        assert_eq!(sent, COUNT as usize);

        let got = receive(&receiver, COUNT, Duration::from_secs(2));
        assert_eq!(got.len(), COUNT as usize, "datagrams received");
        assert_eq!(got, payloads, "same bytes, same order");

        // No filter and static neighbours: the capture holds exactly our traffic.
        let seen = wait_for_packets(&pcap, COUNT as usize, Duration::from_secs(5)).unwrap();
        assert!(seen.len() >= COUNT as usize);
        let packets = tcpdump.stop().unwrap();
        assert_eq!(
            packets.len(),
            COUNT as usize,
            "frames captured (no ARP, no IPv6 noise)"
        );
        for (i, (p, payload)) in packets.iter().zip(&payloads).enumerate() {
            assert_eq!(p.caplen as usize, HEADERS + PAYLOAD, "caplen of frame {i}");
            assert_eq!(p.len, p.caplen, "len of frame {i}");
            assert_eq!(p.data.len(), p.caplen as usize);
            assert_eq!(
                &p.data[12..14],
                &[0x08, 0x00],
                "IPv4 ethertype in frame {i}"
            );
            assert_eq!(
                &p.data[26..30],
                &[10, 201, 1, 1],
                "source address in frame {i}"
            );
            assert_eq!(
                &p.data[36..38],
                &4000u16.to_be_bytes(),
                "destination port in frame {i}"
            );
            assert_eq!(&p.data[HEADERS..], &payload[..], "payload of frame {i}");
        }
        assert!(
            packets.windows(2).all(|w| w[0].ts <= w[1].ts),
            "timestamps in order"
        );
        let age = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .saturating_sub(packets[0].ts);
        assert!(
            age < Duration::from_secs(60),
            "timestamps are recent: {age:?} old"
        );
        // Reading again gives the same packets (the reader is deterministic).
        assert_eq!(read_pcap(&pcap).unwrap(), packets);
    }
    for name in &names {
        assert!(!Netns::exists(name), "namespace {name} deleted on drop");
    }
    let list = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for name in &names {
        assert!(
            !list.contains(name.as_str()),
            "{name} still listed by ip netns list"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn namespace_is_deleted_when_the_test_panics() {
    require_root();
    let name = std::panic::catch_unwind(|| {
        let ns = Netns::new("hp").unwrap();
        let name = ns.name().to_string();
        std::panic::panic_any(name);
    })
    .expect_err("the closure panics");
    let name = name
        .downcast::<String>()
        .expect("panic payload is the name");
    assert!(
        !Netns::exists(&name),
        "namespace {name} deleted during unwinding"
    );
}

#[test]
#[ignore = "needs root"]
fn child_is_killed_and_reaped_on_drop() {
    require_root();
    let ns = Netns::new("hc").unwrap();
    let mut cmd = ns.command("sleep");
    cmd.arg("30");
    let child = Child::spawn("sleep", cmd).unwrap();
    let pid = child.id();
    let proc_path = format!("/proc/{pid}");
    // `ip netns exec` execs in place: the pid becomes sleep's own.
    xrpcap_testkit::wait_until(Duration::from_secs(5), "sleep to exec", || {
        Ok(std::fs::read_to_string(format!("{proc_path}/comm"))
            .unwrap_or_default()
            .trim()
            == "sleep")
    })
    .unwrap();
    drop(child);
    assert!(
        !std::path::Path::new(&proc_path).exists(),
        "pid {pid} still present after drop"
    );
}

#[test]
fn child_stop_terminates_gracefully_and_reports_output() {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
    ]);
    let mut child = Child::spawn("sh", cmd).unwrap();
    child
        .wait_for_output("ready", Duration::from_secs(5))
        .unwrap();
    let status = child.stop(Duration::from_secs(5)).unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(child.stdout().contains("got-term"));
}

#[test]
#[ignore = "needs root"]
fn topology_links_gen_to_cap_and_cap_to_sensor() {
    require_root();
    let topo = Topology::new().unwrap();
    topo.gen
        .run("ping", ["-c", "1", "-W", "2", Topology::CAP_IP])
        .unwrap();
    topo.cap
        .run("ping", ["-c", "1", "-W", "2", Topology::SEN_IP])
        .unwrap();
    // gen has no route to the sensor network: traffic stays on its link.
    assert!(topo
        .gen
        .run("ping", ["-c", "1", "-W", "1", Topology::SEN_IP])
        .is_err());
    let mtu = topo.cap.run("cat", ["/sys/class/net/c0/mtu"]).unwrap();
    assert_eq!(mtu.trim(), "1500");
}

#[test]
#[ignore = "needs root"]
fn tcp_listen_wait_sees_a_listener_and_times_out_without_one() {
    require_root();
    let ns = Netns::new("ht").unwrap();
    let listener = ns.tcp_listener(addr("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    wait_tcp_listen(&ns, port, Duration::from_secs(5)).unwrap();
    // The listener lives in the namespace: the same port is free in ours.
    let here = std::net::TcpListener::bind(("127.0.0.1", port));
    assert!(
        here.is_ok(),
        "port {port} taken in the root namespace: {here:?}"
    );
    drop(here);
    drop(listener);
    let err = wait_tcp_listen(&ns, port, Duration::from_millis(200)).unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
}
