//! End-to-end, `--receive-threads 2` (issue 18 item 6, multi-core receive
//! path): four real xrpcapd agents in four namespaces, on source IPs of
//! both parities, dial one xrpcap-sensor with two receive threads. The
//! kernel deals them by address (low 32 bits mod 2): the log shows agents
//! on both threads, two each, and every capture is byte-exact against
//! tcpdump on its link — with the shared UDP port (an agent's datagrams
//! must reach the thread holding its control connection) and with
//! per-capture ports from a range exactly as large as the captures (the
//! threads bind from one range; a port the other holds is skipped).
//! Needs root (marked `needs root`: ignored without it).

use std::time::Duration;

use xrpcap_testkit::daemon::{Sensor, START_TIMEOUT};
use xrpcap_testkit::wait_until;
use xrpcap_testkit::{
    numbered_payloads, read_pcap, require_root, send_udp, veth_pair, wait_for_packets, Agent,
    Netns, Tcpdump, Topology, VethEnd,
};

const ARRIVAL: Duration = Duration::from_secs(20);

use xrpcap_testkit::netns::sock_addr as addr;

use xrpcap_testkit::pcap::len_and_data as bytes;

/// One agent's link: the generator and the captured link (gen ── cap),
/// the uplink to the sensor's namespace, the agent's address on it.
struct Link {
    gen: Option<Netns>,
    cap: Option<Netns>,
    gen_ip: String,
    cap_ip: String,
    agent_ip: String,
    sensor_ip: String,
}

/// Agent `k` (2..) in namespaces of its own: captured link 10.210.k.0/24,
/// uplink 10.211.k.0/24 with the agent on `.{agent_last}` (its parity
/// picks the receive thread) and the sensor on the other address.
fn extra_link(topo: &Topology, k: u8, agent_last: u8) -> Link {
    let gen = Netns::new(&format!("gen{k}")).unwrap();
    let cap = Netns::new(&format!("cap{k}")).unwrap();
    let (gen_ip, cap_ip) = (format!("10.210.{k}.1"), format!("10.210.{k}.2"));
    let sensor_last = if agent_last == 1 { 2 } else { 1 };
    let agent_ip = format!("10.211.{k}.{agent_last}");
    let sensor_ip = format!("10.211.{k}.{sensor_last}");
    veth_pair(
        VethEnd {
            ns: &gen,
            ifname: Topology::GEN_IF,
            cidr: &format!("{gen_ip}/24"),
        },
        VethEnd {
            ns: &cap,
            ifname: Topology::CAP_IF,
            cidr: &format!("{cap_ip}/24"),
        },
        1500,
    )
    .unwrap();
    veth_pair(
        VethEnd {
            ns: &cap,
            ifname: Topology::UPLINK_IF,
            cidr: &format!("{agent_ip}/24"),
        },
        VethEnd {
            ns: &topo.sen,
            ifname: &format!("s{k}"),
            cidr: &format!("{sensor_ip}/24"),
        },
        1500,
    )
    .unwrap();
    Link {
        gen: Some(gen),
        cap: Some(cap),
        gen_ip,
        cap_ip,
        agent_ip,
        sensor_ip,
    }
}

fn four_agents_on_two_receive_threads(data_args: &[&str]) {
    require_root();
    let topo = Topology::new().unwrap();
    // Agent 1 is the topology's own (10.200.2.1: odd, thread 1); agents
    // 2..4 alternate even (thread 0) and odd.
    let mut links = vec![Link {
        gen: None,
        cap: None,
        gen_ip: Topology::GEN_IP.into(),
        cap_ip: Topology::CAP_IP.into(),
        agent_ip: Topology::UPLINK_IP.into(),
        sensor_ip: Topology::SEN_IP.into(),
    }];
    for (k, last) in [(2u8, 2u8), (3, 1), (4, 2)] {
        links.push(extra_link(&topo, k, last));
    }
    fn gen_of<'a>(l: &'a Link, topo: &'a Topology) -> &'a Netns {
        l.gen.as_ref().unwrap_or(&topo.gen)
    }
    fn cap_of<'a>(l: &'a Link, topo: &'a Topology) -> &'a Netns {
        l.cap.as_ref().unwrap_or(&topo.cap)
    }
    // Sockets taking port 5000 so no ICMP port unreachable joins the capture.
    let _sinks: Vec<_> = links
        .iter()
        .map(|l| cap_of(l, &topo).udp_socket(addr(&l.cap_ip, 5000)).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let dumps: Vec<Tcpdump> = links
        .iter()
        .enumerate()
        .map(|(i, l)| {
            Tcpdump::start(
                cap_of(l, &topo),
                Topology::CAP_IF,
                &dir.path().join(format!("{i}.pcap")),
                "udp port 5000",
            )
            .unwrap()
        })
        .collect();
    // Killed on drop if the test fails before stopping it.
    let mut extra = vec!["--receive-threads", "2", "--filter", "udp port 5000"];
    extra.extend(["--name", "{agent}.pcap"]);
    extra.extend(data_args);
    let mut sensor = Sensor::start(&topo.sen, addr("0.0.0.0", Topology::SEN_PORT), &extra).unwrap();
    let mut agents: Vec<Agent> = links
        .iter()
        .map(|l| Agent::start(cap_of(l, &topo), &Topology::active_ini(&l.sensor_ip), &[]).unwrap())
        .collect();
    for a in &mut agents {
        a.wait_capturing(Topology::CAP_IF, 1).unwrap();
    }
    sensor.wait_log("via UDP port ", 4, START_TIMEOUT).unwrap();
    let sizes = [60usize, 700, 1400];
    for (k, size) in sizes.iter().enumerate() {
        let payloads: Vec<Vec<u8>> =
            numbered_payloads(20 * (k as u32 + 1), *size).split_off(20 * k);
        for l in &links {
            send_udp(
                gen_of(l, &topo),
                addr(&l.gen_ip, 4000),
                addr(&l.cap_ip, 5000),
                &payloads,
            )
            .unwrap();
        }
    }
    // One file per capture, named by its agent.
    let mut files = Vec::new();
    wait_until(START_TIMEOUT, "four capture files", || {
        files = sensor.files()?;
        Ok(files.len() == 4)
    })
    .unwrap();
    let files: Vec<_> = links
        .iter()
        .map(|l| {
            let name = format!("{}.pcap", l.agent_ip);
            files
                .iter()
                .find(|f| f.file_name().is_some_and(|n| n.to_string_lossy() == name))
                .unwrap_or_else(|| panic!("no {name} in {files:?}"))
                .clone()
        })
        .collect();
    for f in &files {
        wait_for_packets(f, 60, ARRIVAL).unwrap();
    }
    let text = sensor.stop().unwrap();
    for mut a in agents {
        a.stop().unwrap();
    }
    for (i, (td, f)) in dumps.into_iter().zip(&files).enumerate() {
        let want = td.stop().unwrap();
        assert_eq!(want.len(), 60, "tcpdump on link {i}");
        let got = read_pcap(f).unwrap();
        assert!(bytes(&got) == bytes(&want), "link {i} differs from tcpdump");
    }
    // Dealt by address: each thread took the two agents of its parity.
    for (thread, ips) in [(0, [1, 3]), (1, [0, 2])] {
        for i in ips {
            let line = format!(
                "agent {}:",
                links[i].agent_ip // followed by the agent's port
            );
            let on = text
                .lines()
                .find(|l| l.contains(&line) && l.contains("connected (active mode"))
                .unwrap_or_else(|| panic!("no connect line of {line}\n{text}"));
            assert!(
                on.contains(&format!("receive thread {thread})")),
                "{on}\n{text}"
            );
        }
    }
    // Every capture's final line, nothing foreign or lost.
    let finals: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" foreign=") && !l.starts_with("shared UDP port "))
        .collect();
    assert_eq!(finals.len(), 4, "{text}");
    for l in finals {
        assert!(
            l.contains(" packets=60 ") && l.contains(" foreign=0 "),
            "{l}"
        );
    }
    // The shared port's line (both threads' sockets summed): nothing foreign.
    if data_args[0] == "--udp-shared-port" {
        assert!(
            text.contains("shared UDP port 2099: foreign=0 socket_drops=0 fallbacks=0"),
            "{text}"
        );
    }
    drop(links);
}

#[test]
#[ignore = "needs root"]
fn shared_udp_port_on_two_receive_threads_byte_exact() {
    four_agents_on_two_receive_threads(&["--udp-shared-port", "2099"]);
}

#[test]
#[ignore = "needs root"]
fn per_capture_ports_on_two_receive_threads_byte_exact() {
    // Four ports for four captures: the threads bind from one range.
    four_agents_on_two_receive_threads(&["--udp-ports", "2100-2103"]);
}
