//! End-to-end, tunnel export (`TunnelClient`): xrpcapd in ns cap captures
//! the captured link c0 and exports every frame in a standard tunnel to ns
//! sen (TESTING.md topology), no sensor involved. The peers are independent
//! of our code: the Linux kernel's `vxlan` device decapsulates VXLAN; for
//! GRE and ERSPAN (this kernel has no gretap/erspan devices) a tcpdump
//! capture of the tunnel datagrams is decoded by tshark (dissectors `gre`,
//! `erspan`) and by Scapy (PyPI, installed by scripts/setup.sh). Every
//! decoding must give back the frames a reference tcpdump saw on c0, byte
//! for byte and in order. Needs root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xrpcap_testkit::daemon::{parse_line, START_TIMEOUT};
use xrpcap_testkit::{
    numbered_payloads, require_root, send_udp, wait_for_packets, Agent, Packet, Sensor, Tcpdump,
    Topology,
};

/// How long exported frames may take to show up in the receiver's capture.
const ARRIVAL: Duration = Duration::from_secs(20);
/// Frames of the test: numbered UDP datagrams from gen to cap port 5000.
const FILTER: &str = "udp port 5000";
/// Ethernet + IPv4 + UDP headers.
const HEADERS: usize = 42;
/// Scapy's version, as scripts/setup.sh installs it (SCAPY_VERSION).
const SCAPY_VERSION: &str = "2.6.1";

use xrpcap_testkit::netns::sock_addr as addr;

/// Sends `payloads` from gen port 4000 to cap port 5000 (across c0).
fn send(topo: &Topology, payloads: &[Vec<u8>]) {
    send_udp(
        &topo.gen,
        addr(Topology::GEN_IP, 4000),
        addr(Topology::CAP_IP, 5000),
        payloads,
    )
    .expect("sending the test datagrams");
}

/// Starts the agent with `line` and waits until its export captures.
fn start_agent(topo: &Topology, line: &str) -> Result<Agent> {
    let mut agent = Agent::start(&topo.cap, &format!("TunnelClient = {line}\n"), &[])?;
    agent.wait_log(&format!("exporting {}", Topology::CAP_IF), 1, START_TIMEOUT)?;
    Ok(agent)
}

/// The fields of the export's final counter line (`final tunnel=LABEL …`).
fn final_counters(log: &str, label: &str) -> Vec<(String, String)> {
    let needle = format!("final tunnel={label} ");
    let line = log
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no `{needle}` line in the agent's log:\n{log}"));
    parse_line(&line[line.find("final ").unwrap()..])
}

fn counter(fields: &[(String, String)], key: &str) -> u64 {
    xrpcap_testkit::daemon::num(fields, key)
}

fn frames(p: &[Packet]) -> Vec<Vec<u8>> {
    p.iter().map(|p| p.data.clone()).collect()
}

/// (a) VXLAN to a Linux `vxlan` device: tcpdump on the device sees the
/// captured frames byte for byte, in order; (c) a frame over what the path
/// MTU leaves (1500 − 20 − 8 − 8 = 1464 bytes) is not sent but counted.
#[test]
#[ignore = "needs root"]
fn vxlan_export_reaches_a_linux_vxlan_device_byte_exact() -> Result<()> {
    require_root();
    let topo = Topology::new()?;
    topo.sen.run(
        "ip",
        [
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "42",
            "dstport",
            "4789",
            "local",
            Topology::SEN_IP,
            "dev",
            Topology::SEN_IF,
            "nolearning",
        ],
    )?;
    topo.sen.run("ip", ["link", "set", "vx0", "up"])?;
    let dir = tempfile::tempdir()?;
    let reference = Tcpdump::start(
        &topo.cap,
        Topology::CAP_IF,
        &dir.path().join("ref.pcap"),
        FILTER,
    )?;
    let decap = Tcpdump::start(&topo.sen, "vx0", &dir.path().join("vx0.pcap"), FILTER)?;
    let mut agent = start_agent(
        &topo,
        &format!(
            "vxlan, {}, 4789, vni=42, ifname={}, filter={FILTER}",
            Topology::SEN_IP,
            Topology::CAP_IF
        ),
    )?;

    let mut payloads = numbered_payloads(200, 300);
    // Frames of 1464 bytes (the most that fits) and 1465 (one too many).
    payloads.push(numbered_payloads(201, 1464 - HEADERS).pop().unwrap());
    payloads.push(numbered_payloads(202, 1465 - HEADERS).pop().unwrap());
    payloads.extend(numbered_payloads(210, 300).split_off(203));
    send(&topo, &payloads);

    let want = payloads.len() - 1;
    wait_for_packets(decap.path(), want, ARRIVAL)?;
    let seen = reference.stop()?;
    let got = decap.stop()?;
    assert_eq!(seen.len(), payloads.len(), "the reference saw every frame");
    let mut expected = frames(&seen);
    let big = expected.remove(201);
    assert_eq!(big.len(), 1465);
    assert_eq!(got.len(), want, "every frame but the oversized one");
    for (i, (g, e)) in frames(&got).iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "frame {i} differs after decapsulation");
    }
    let log = agent.stop()?;
    let c = final_counters(&log, &format!("vxlan:{}:4789", Topology::SEN_IP));
    assert_eq!(counter(&c, "framed"), payloads.len() as u64, "{log}");
    assert_eq!(counter(&c, "too_big"), 1, "{log}");
    assert_eq!(
        counter(&c, "send_drops"),
        1,
        "the oversized frame is a drop"
    );
    assert_eq!(counter(&c, "datagrams_sent"), want as u64);
    Ok(())
}

/// The tunnel datagrams sent to ns sen over IP protocol 47, captured on s1
/// while `payloads` cross c0; returns (reference frames, capture file).
fn gre_run(
    topo: &Topology,
    dir: &Path,
    line: &str,
    payloads: &[Vec<u8>],
) -> Result<(Vec<Packet>, PathBuf, String)> {
    let reference = Tcpdump::start(&topo.cap, Topology::CAP_IF, &dir.join("ref.pcap"), FILTER)?;
    let out = dir.join("gre.pcap");
    let tunnel = Tcpdump::start(&topo.sen, Topology::SEN_IF, &out, "ip proto 47")?;
    let mut agent = start_agent(topo, line)?;
    send(topo, payloads);
    wait_for_packets(tunnel.path(), payloads.len(), ARRIVAL)?;
    let seen = reference.stop()?;
    tunnel.stop()?;
    let log = agent.stop()?;
    assert_eq!(seen.len(), payloads.len(), "the reference saw every frame");
    Ok((seen, out, log))
}

/// tshark on `file`: no malformed packet, no expert info at Warning or
/// Error severity; returns per packet the fields asked for (`|`-separated).
fn tshark_fields(file: &Path, fields: &[&str]) -> Result<Vec<Vec<String>>> {
    let run = |args: &[&str]| -> Result<String> {
        let out = Command::new("tshark")
            .arg("-n")
            .arg("-r")
            .arg(file)
            .args(args)
            .output()
            .context("running tshark (scripts/setup.sh installs it)")?;
        if !out.status.success() {
            bail!("tshark {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // A frame cut to fit (ERSPAN's T bit) is short of what its IP header
    // says: Wireshark rightly flags its inner IP/UDP; it is checked apart.
    let whole = "!(erspan.truncated == 1)";
    let verbose = run(&["-V", "-Y", whole])?;
    assert!(
        !verbose.contains("Malformed"),
        "tshark finds malformed packets:\n{verbose}"
    );
    // The expert summary at Warning and above: no entries at all.
    let expert = run(&["-q", "-z", &format!("expert,warn,{whole}")])?;
    assert!(
        !expert
            .lines()
            .any(|l| l.starts_with("Warns") || l.starts_with("Errors")),
        "tshark expert info at Warning/Error:\n{expert}"
    );
    let mut args = vec![
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=;",
    ];
    for f in fields {
        args.push("-e");
        args.push(f);
    }
    Ok(run(&args)?
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect())
}

/// Scapy's decoding of `file`: per packet the GRE sequence number (or
/// -1), the ERSPAN session and T bit (or -1), and the inner frame in hex.
/// (GRE sequence number, ERSPAN session, T bit, inner frame); -1: absent.
type Decoded = (i64, i64, i64, Vec<u8>);

fn scapy_decode(file: &Path) -> Result<Vec<Decoded>> {
    let cache = std::env::var("XRPCAP_CI_CACHE").unwrap_or_else(|_| "/var/cache/xrpcapd-ci".into());
    let dir = PathBuf::from(cache).join(format!("scapy/scapy-{SCAPY_VERSION}"));
    if !dir.join("scapy/__init__.py").exists() {
        bail!(
            "Scapy {SCAPY_VERSION} is not in {}: run scripts/setup.sh",
            dir.display()
        );
    }
    let script = r#"
import sys
from scapy.all import rdpcap, GRE, Ether
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
for p in rdpcap(sys.argv[1]):
    g = p[GRE]
    seq = g.sequence_number if g.seqnum_present else -1
    if ERSPAN_II in p:
        e = p[ERSPAN_II]; inner = e.payload; sess, t = e.session_id, e.t
    elif ERSPAN_III in p:
        e = p[ERSPAN_III]; inner = e.payload; sess, t = e.session_id, e.t
    else:
        inner = g.payload; sess, t = -1, -1
    assert isinstance(inner, Ether), repr(p)
    print(seq, sess, t, bytes(inner).hex())
"#;
    let out = Command::new("python3")
        .env("PYTHONPATH", &dir)
        .arg("-c")
        .arg(script)
        .arg(file)
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!("scapy: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let hex = w[3];
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (
                w[0].parse().unwrap(),
                w[1].parse().unwrap(),
                w[2].parse().unwrap(),
                bytes,
            )
        })
        .collect())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// (b) GRE/TEB, ERSPAN II and III: tshark and Scapy decode the exported
/// datagrams to the captured frames; ERSPAN carries its session ID and
/// sequence numbers 0, 1, 2…; (c) on a 1400-byte uplink a frame over what
/// ERSPAN leaves is cut to fit with the T bit set.
fn gre_family(line_kind: &str, session: Option<u16>, erspan: Option<u8>) -> Result<()> {
    require_root();
    // The uplink (c1 ─ s1) is narrower than the captured link.
    let topo = Topology::with_mtu(1500)?;
    topo.cap
        .run("ip", ["link", "set", Topology::UPLINK_IF, "mtu", "1400"])?;
    topo.sen
        .run("ip", ["link", "set", Topology::SEN_IF, "mtu", "1400"])?;
    let dir = tempfile::tempdir()?;
    let opt = session.map_or(String::new(), |s| format!(", session={s}"));
    let line = format!(
        "{line_kind}, {}{opt}, ifname={}, filter={FILTER}",
        Topology::SEN_IP,
        Topology::CAP_IF
    );
    let mut payloads = numbered_payloads(50, 200);
    // ERSPAN: a 1450-byte frame, over the 1380 bytes the uplink leaves.
    if erspan.is_some() {
        payloads.push(numbered_payloads(51, 1450 - HEADERS).pop().unwrap());
    }
    let (seen, file, log) = gre_run(&topo, dir.path(), &line, &payloads)?;
    let header = match erspan {
        None => 4,
        Some(2) => 16,
        Some(_) => 20,
    };
    let room = 1400 - 20 - header;

    // Scapy: byte-exact inner frames, sequence numbers, session, T bit.
    let decoded = scapy_decode(&file)?;
    assert_eq!(decoded.len(), seen.len(), "{log}");
    for (i, ((seq, sess, t, inner), want)) in decoded.iter().zip(&seen).enumerate() {
        let cut = want.data.len() > room;
        let want_bytes = if cut {
            &want.data[..room]
        } else {
            &want.data[..]
        };
        assert_eq!(hex(inner), hex(want_bytes), "frame {i} (Scapy)");
        if erspan.is_some() {
            assert_eq!(*seq, i as i64, "GRE sequence number of frame {i}");
            assert_eq!(*sess, i64::from(session.unwrap()));
            assert_eq!(*t, i64::from(cut), "T bit of frame {i}");
        } else {
            assert_eq!((*seq, *sess), (-1, -1));
        }
    }
    if erspan.is_some() {
        assert!(
            decoded.last().unwrap().3.len() == room,
            "the big frame was cut"
        );
    }

    // tshark: the dissectors find GRE, ERSPAN and the inner frame's
    // addresses and UDP payload (the last occurrence of each field).
    let fields = tshark_fields(
        &file,
        &[
            "gre.proto",
            "erspan.version",
            "erspan.spanid",
            "erspan.truncated",
            "eth.src",
            "ip.id",
            "udp.srcport",
            "udp.payload",
        ],
    )?;
    assert_eq!(fields.len(), seen.len());
    for (i, (f, want)) in fields.iter().zip(&seen).enumerate() {
        let last = |s: &str| s.rsplit(';').next().unwrap_or("").to_string();
        let proto = match erspan {
            None => "0x6558",
            Some(2) => "0x88be",
            Some(_) => "0x22eb",
        };
        assert_eq!(f[0], proto, "frame {i}: {f:?}");
        if let Some(v) = erspan {
            assert_eq!(
                f[1],
                if v == 2 { "1" } else { "2" },
                "ERSPAN version, frame {i}"
            );
            assert_eq!(f[2], session.unwrap().to_string());
            let cut = want.data.len() > room;
            assert_eq!(
                f[3],
                if cut { "1" } else { "0" },
                "T bit via tshark, frame {i}: {f:?}"
            );
        }
        let d = &want.data;
        let mac = (6..12)
            .map(|k| format!("{:02x}", d[k]))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(last(&f[4]), mac, "inner source MAC, frame {i}");
        let ip_id = u16::from_be_bytes([d[18], d[19]]);
        assert_eq!(
            last(&f[5]),
            format!("0x{ip_id:04x}"),
            "inner IP ID, frame {i}"
        );
        assert_eq!(f[6], "4000");
        if want.data.len() <= room {
            assert_eq!(
                f[7].replace(':', ""),
                hex(&d[HEADERS..]),
                "inner UDP payload, frame {i}"
            );
        }
    }
    let label = format!("{line_kind}:{}", Topology::SEN_IP);
    let c = final_counters(&log, &label);
    assert_eq!(
        counter(&c, "datagrams_sent"),
        payloads.len() as u64,
        "{log}"
    );
    assert_eq!(counter(&c, "too_big"), u64::from(erspan.is_some()), "{log}");
    assert_eq!(counter(&c, "send_drops"), 0, "{log}");
    Ok(())
}

#[test]
#[ignore = "needs root"]
fn gre_export_decodes_in_tshark_and_scapy() -> Result<()> {
    gre_family("gre", None, None)
}

#[test]
#[ignore = "needs root"]
fn erspan2_export_decodes_in_tshark_and_scapy_and_cuts_with_t() -> Result<()> {
    gre_family("erspan2", Some(301), Some(2))
}

#[test]
#[ignore = "needs root"]
fn erspan3_export_decodes_in_tshark_and_scapy_and_cuts_with_t() -> Result<()> {
    gre_family("erspan3", Some(77), Some(3))
}

/// Own traffic: an export of the very interface its tunnel leaves by (c1)
/// never captures its own datagrams — it exports exactly the other frames
/// a reference tcpdump saw there, each once (no loop).
#[test]
#[ignore = "needs root"]
fn an_export_never_captures_its_own_datagrams() -> Result<()> {
    require_root();
    let topo = Topology::new()?;
    let dir = tempfile::tempdir()?;
    let others = Tcpdump::start(
        &topo.cap,
        Topology::UPLINK_IF,
        &dir.path().join("others.pcap"),
        "not (udp port 4789)",
    )?;
    let exported = Tcpdump::start(
        &topo.sen,
        Topology::SEN_IF,
        &dir.path().join("vxlan.pcap"),
        "udp port 4789",
    )?;
    let mut agent = Agent::start(
        &topo.cap,
        &format!(
            "TunnelClient = vxlan, {}, ifname={}\nSummaryInterval = 1\n",
            Topology::SEN_IP,
            Topology::UPLINK_IF
        ),
        &[],
    )?;
    agent.wait_log(
        &format!("exporting {}", Topology::UPLINK_IF),
        1,
        START_TIMEOUT,
    )?;
    send_udp(
        &topo.cap,
        addr(Topology::UPLINK_IP, 4000),
        addr(Topology::SEN_IP, 5000),
        &numbered_payloads(30, 100),
    )?;
    // Each datagram, ARP and the (rate-limited) ICMP errors back are
    // exported once.
    wait_for_packets(exported.path(), 30, ARRIVAL)?;
    std::thread::sleep(Duration::from_secs(1));
    // Its summary line, as a sensor's capture has (SummaryInterval).
    let label = format!("vxlan:{}:4789", Topology::SEN_IP);
    agent.wait_log(
        &format!("summary tunnel={label} iface={}", Topology::UPLINK_IF),
        1,
        ARRIVAL,
    )?;
    let log = agent.stop()?;
    let seen = others.stop()?;
    let sent = exported.stop()?;
    let c = final_counters(&log, &format!("vxlan:{}:4789", Topology::SEN_IP));
    assert_eq!(counter(&c, "framed"), seen.len() as u64, "{log}");
    assert_eq!(
        sent.len(),
        seen.len(),
        "one datagram per frame, none of its own"
    );
    Ok(())
}

/// Own traffic, the sensors' side: a sensor capturing the interface an
/// export's tunnel leaves by (c1) never sees the export's datagrams.
#[test]
#[ignore = "needs root"]
fn a_sensor_capture_never_sees_the_exports_datagrams() -> Result<()> {
    require_root();
    let topo = Topology::new()?;
    let dir = tempfile::tempdir()?;
    let listen = addr(Topology::SEN_IP, Topology::SEN_PORT);
    let mut sensor = Sensor::start(&topo.sen, listen, &["--filter", "udp port 4789"])?;
    let exported = Tcpdump::start(
        &topo.sen,
        Topology::SEN_IF,
        &dir.path().join("vxlan.pcap"),
        "udp port 4789",
    )?;
    let ini = format!(
        "ActiveClient = {ip}, {port}, ifname={up}\nNullAuthPermit = YES\n\
         TunnelClient = vxlan, {ip}, ifname={cap}, filter={FILTER}\n",
        ip = Topology::SEN_IP,
        port = Topology::SEN_PORT,
        up = Topology::UPLINK_IF,
        cap = Topology::CAP_IF,
    );
    let mut agent = Agent::start(&topo.cap, &ini, &[])?;
    agent.wait_log(&format!("exporting {}", Topology::CAP_IF), 1, START_TIMEOUT)?;
    agent.wait_capturing(Topology::UPLINK_IF, 1)?;
    send(&topo, &numbered_payloads(40, 100));
    wait_for_packets(exported.path(), 40, ARRIVAL)?;
    // The sensor's capture had every chance to see them: two STATS rounds.
    sensor.wait_log("recv", 2, ARRIVAL)?;
    let sent = exported.stop()?;
    agent.stop()?;
    sensor.stop()?;
    assert_eq!(sent.len(), 40, "the export crossed c1");
    let seen = sensor.packets()?;
    assert!(
        seen.is_empty(),
        "the sensor saw {} export datagrams",
        seen.len()
    );
    Ok(())
}

/// The path MTU falling mid-export (the uplink goes from 1500 to 1280): the
/// datagram that meets it is lost and counted (EMSGSIZE, never a fragment),
/// the export rereads the path and cuts the next frames to fit, T bit set.
#[test]
#[ignore = "needs root"]
fn erspan_export_follows_a_falling_path_mtu() -> Result<()> {
    require_root();
    let topo = Topology::new()?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("gre.pcap");
    let tunnel = Tcpdump::start(&topo.sen, Topology::SEN_IF, &out, "ip proto 47")?;
    let mut agent = start_agent(
        &topo,
        &format!(
            "erspan2, {}, session=5, ifname={}, filter={FILTER}",
            Topology::SEN_IP,
            Topology::CAP_IF
        ),
    )?;
    let all = numbered_payloads(21, 1400 - HEADERS);
    send(&topo, &all[..10]);
    wait_for_packets(tunnel.path(), 10, ARRIVAL)?;
    for (ns, dev) in [
        (&topo.cap, Topology::UPLINK_IF),
        (&topo.sen, Topology::SEN_IF),
    ] {
        ns.run("ip", ["link", "set", dev, "mtu", "1280"])?;
    }
    send(&topo, &all[10..11]);
    agent.wait_log("the path MTU changed", 1, ARRIVAL)?;
    send(&topo, &all[11..]);
    wait_for_packets(tunnel.path(), 20, ARRIVAL)?;
    tunnel.stop()?;
    let log = agent.stop()?;

    let decoded = scapy_decode(&out)?;
    assert_eq!(decoded.len(), 20, "{log}");
    let room = 1280 - 20 - 16;
    for (i, (seq, _, t, inner)) in decoded.iter().enumerate() {
        // Frame 10 met the new MTU and was lost: its sequence number too.
        let frame = if i < 10 { i } else { i + 1 };
        assert_eq!(*seq, frame as i64, "GRE sequence number of datagram {i}");
        let cut = i >= 10;
        assert_eq!(*t, i64::from(cut), "T bit of datagram {i}");
        assert_eq!(inner.len(), if cut { room } else { 1400 }, "datagram {i}");
        assert_eq!(&inner[HEADERS..HEADERS + 4], &(frame as u32).to_be_bytes());
    }
    let c = final_counters(&log, &format!("erspan2:{}", Topology::SEN_IP));
    assert_eq!(counter(&c, "send_drops"), 1, "{log}");
    assert_eq!(counter(&c, "too_big"), 10, "{log}");
    assert_eq!(
        xrpcap_testkit::traffic::ip_counter(&topo.cap, "FragCreates")?,
        0
    );
    Ok(())
}

/// Over IPv6: VXLAN into a Linux `vxlan` device with an IPv6 local address,
/// and ERSPAN III out of a raw IPv6 socket, decoded by Scapy.
#[test]
#[ignore = "needs root"]
fn exports_over_ipv6() -> Result<()> {
    require_root();
    let topo = Topology::ipv6(1500, 1500)?;
    topo.sen.run(
        "ip",
        [
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "9",
            "dstport",
            "4789",
            "local",
            Topology::SEN_IP6,
            "dev",
            Topology::SEN_IF,
            "nolearning",
            "udp6zerocsumrx",
        ],
    )?;
    topo.sen.run("ip", ["link", "set", "vx0", "up"])?;
    let dir = tempfile::tempdir()?;
    let reference = Tcpdump::start(
        &topo.cap,
        Topology::CAP_IF,
        &dir.path().join("ref.pcap"),
        FILTER,
    )?;
    let decap = Tcpdump::start(&topo.sen, "vx0", &dir.path().join("vx0.pcap"), FILTER)?;
    let erspan = dir.path().join("erspan.pcap");
    let raw = Tcpdump::start(&topo.sen, Topology::SEN_IF, &erspan, "ip6 proto 47")?;
    let ini = format!(
        "TunnelClient = vxlan, [{ip}], vni=9, ifname={cap}, filter={FILTER}\n\
         TunnelClient = erspan3, {ip}, session=3, ifname={cap}, filter={FILTER}\n",
        ip = Topology::SEN_IP6,
        cap = Topology::CAP_IF,
    );
    let mut agent = Agent::start(&topo.cap, &ini, &[])?;
    agent.wait_log(&format!("exporting {}", Topology::CAP_IF), 2, START_TIMEOUT)?;
    send(&topo, &numbered_payloads(30, 500));
    wait_for_packets(decap.path(), 30, ARRIVAL)?;
    wait_for_packets(raw.path(), 30, ARRIVAL)?;
    let seen = frames(&reference.stop()?);
    let got = frames(&decap.stop()?);
    raw.stop()?;
    agent.stop()?;
    assert_eq!(seen.len(), 30);
    assert_eq!(got, seen, "VXLAN over IPv6, decapsulated by the kernel");
    let decoded = scapy_decode(&erspan)?;
    let inner: Vec<Vec<u8>> = decoded.iter().map(|d| d.3.clone()).collect();
    assert_eq!(inner, seen, "ERSPAN III over IPv6, decoded by Scapy");
    assert!(decoded.iter().all(|d| d.1 == 3 && d.2 == 0));
    Ok(())
}
