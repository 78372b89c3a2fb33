//! End-to-end, the sensor's pcapng (issue 18 items 1 and 2): two real
//! xrpcapd agents on two captured links dial one xrpcap-sensor, whose
//! `-w -` is piped into `tshark -r -`. Checked with the Wireshark tools:
//! one interface per capture named AGENT/IFNAME (capinfos, tshark), the
//! frames of each interface byte-exact against tcpdump on its link, the
//! agents' STATS in interface statistics blocks, and a comment on the first
//! frame after records were lost (datagrams dropped by nftables).
//! `-w unix:PATH`: a reader connected to the sensor's unix socket gets the
//! same stream, byte-exact; when it goes away the sensor goes on, counting
//! write errors, and removes the socket at exit.
//! Needs root (marked `needs root`: ignored without it), tshark, capinfos
//! and nft (scripts/setup.sh installs them).

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use xrpcap_testkit::daemon::{count_of, START_TIMEOUT};
use xrpcap_testkit::traffic::{seq_of, udp};
use xrpcap_testkit::{
    bin_path, numbered_payloads, read_pcap, require_root, send_udp, veth_pair, wait_for_packets,
    wait_until, Agent, Netns, Packet, Tcpdump, Topology, VethEnd,
};

/// How long forwarded packets may take to show up in the stream.
const ARRIVAL: Duration = Duration::from_secs(20);

/// The second chain: gen2 ── captured link ── cap2 (agent 2) ── sen.
const GEN2_IP: &str = "10.200.3.1";
const CAP2_IP: &str = "10.200.3.2";
const UPLINK2_IP: &str = "10.200.4.1";
const SEN2_IP: &str = "10.200.4.2";

use xrpcap_testkit::netns::sock_addr as addr;

/// A program the test needs; its absence fails the test (setup.sh installs it).
fn require_tool(name: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{name} is missing: run scripts/setup.sh");
}

/// Runs a Wireshark tool to completion; its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `xrpcap-sensor -w - | tshark -r - -w OUT` in ns sen, with the stream
/// also teed to a file (RAW) for capinfos and for waiting on arrivals; or
/// `-w unix:SOCK`, the test connecting to SOCK and piping what it reads
/// into tshark likewise.
struct PipedSensor {
    sensor: std::process::Child,
    tshark: std::process::Child,
    tee: Option<std::thread::JoinHandle<()>>,
    /// `-w unix:`: the test's end of the connection (to leave early).
    unix: Option<std::os::unix::net::UnixStream>,
    log: tempfile::NamedTempFile,
    dir: tempfile::TempDir,
}

impl PipedSensor {
    fn start(ns: &Netns) -> PipedSensor {
        Self::start_to(ns, None)
    }

    /// With `-w unix:SOCK` when `socket` names SOCK, else `-w -`.
    fn start_to(ns: &Netns, socket: Option<&Path>) -> PipedSensor {
        let dir = tempfile::tempdir().unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let w = socket.map_or("-".to_string(), |p| format!("unix:{}", p.display()));
        let mut sensor = ns
            .command(bin_path("xrpcap-sensor"))
            .args(["--listen", "0.0.0.0:2003", "-w", &w])
            .args(["--filter", "udp port 5000", "--stats-interval", "1"])
            .args(["--summary-interval", "3600"])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(if socket.is_some() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut unix = None;
        let mut from: Box<dyn Read + Send> = match socket {
            None => Box::new(sensor.stdout.take().unwrap()),
            Some(p) => {
                let waiting = "waiting for a reader on the unix socket";
                wait_until(START_TIMEOUT, waiting, || {
                    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                    Ok(text.contains(waiting))
                })
                .unwrap();
                let s = std::os::unix::net::UnixStream::connect(p).unwrap();
                unix = Some(s.try_clone().unwrap());
                Box::new(s)
            }
        };
        let mut tshark = Command::new("tshark")
            .args(["-r", "-", "-w"])
            .arg(dir.path().join("tshark.pcapng"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tshark runs (scripts/setup.sh installs it)");
        let mut to = tshark.stdin.take().unwrap();
        let mut raw = std::fs::File::create(dir.path().join("raw.pcapng")).unwrap();
        let tee = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        raw.write_all(&buf[..n]).unwrap();
                        raw.flush().unwrap();
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            // Dropping `to` ends tshark's input.
        });
        let s = PipedSensor {
            sensor,
            tshark,
            tee: Some(tee),
            unix,
            log,
            dir,
        };
        s.wait_log("listening for active agents", 1);
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str, n: usize) {
        wait_until(START_TIMEOUT, needle, || {
            Ok(count_of(&self.log(), needle) >= n)
        })
        .unwrap_or_else(|e| panic!("{e:#}\n--- sensor log ---\n{}", self.log()));
    }

    /// The stream as the sensor wrote it.
    fn raw(&self) -> PathBuf {
        self.dir.path().join("raw.pcapng")
    }

    /// What tshark read from the pipe, as it wrote it back.
    fn tshark_file(&self) -> PathBuf {
        self.dir.path().join("tshark.pcapng")
    }

    /// SIGTERM: the sensor closes every capture (statistics blocks), the
    /// pipe ends, tshark finishes.
    fn stop(&mut self) {
        let pid = self.sensor.id().to_string();
        run("kill", &["-TERM", &pid]);
        let st = self.sensor.wait().unwrap();
        assert!(st.success(), "sensor: {st}\n{}", self.log());
        self.end_reader();
    }

    /// The reader's end: the tee thread and tshark finish.
    fn end_reader(&mut self) {
        if let Some(t) = self.tee.take() {
            t.join().unwrap();
            let st = self.tshark.wait().unwrap();
            assert!(st.success(), "tshark -r - failed: {st}");
        }
    }

    /// `-w unix:`: the reader goes away (closes its connection) while the
    /// sensor runs.
    fn reader_leaves(&mut self) {
        let s = self.unix.take().expect("a unix socket reader");
        s.shutdown(std::net::Shutdown::Both).unwrap();
        drop(s);
        self.end_reader();
    }
}

impl Drop for PipedSensor {
    fn drop(&mut self) {
        let _ = self.sensor.kill();
        let _ = self.sensor.wait();
        let _ = self.tshark.kill();
        let _ = self.tshark.wait();
        if std::thread::panicking() {
            eprintln!("--- sensor log ---\n{}", self.log());
        }
    }
}

/// Sockets taking port 5000 so no ICMP port unreachable joins the capture.
fn sink(ns: &Netns, ip: &str) -> UdpSocket {
    ns.udp_socket(addr(ip, 5000)).unwrap()
}

/// The frames of one interface of a pcapng, as tshark filters them.
fn frames_of(file: &Path, if_name: &str, dir: &Path) -> Vec<Packet> {
    let part = dir.join(format!("{}.pcapng", if_name.replace('/', "_")));
    let filter = format!("frame.interface_name == \"{if_name}\"");
    run(
        "tshark",
        &[
            "-r",
            file.to_str().unwrap(),
            "-Y",
            &filter,
            "-w",
            part.to_str().unwrap(),
        ],
    );
    read_pcap(&part).unwrap()
}

use xrpcap_testkit::pcap::len_and_data as bytes;

#[test]
#[ignore = "needs root"]
fn two_agents_one_pcapng_stream_through_tshark_byte_exact() {
    require_root();
    for t in ["tshark", "capinfos"] {
        require_tool(t);
    }
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
    let _sinks = (sink(&topo.cap, Topology::CAP_IP), sink(&cap2, CAP2_IP));
    let dir = tempfile::tempdir().unwrap();
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
    let mut sensor = PipedSensor::start(&topo.sen);
    let mut a1 = Agent::start(&topo.cap, &Topology::active_ini(Topology::SEN_IP), &[]).unwrap();
    let mut a2 = Agent::start(&cap2, &Topology::active_ini(SEN2_IP), &[]).unwrap();
    a1.wait_capturing(Topology::CAP_IF, 1).unwrap();
    a2.wait_capturing(Topology::CAP_IF, 1).unwrap();

    // Three sizes, interleaved on the two links.
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
    wait_for_packets(&sensor.raw(), 120, ARRIVAL).unwrap();
    // Both agents' STATS have arrived (every second), for the ISBs.
    sensor.wait_log(": recv ", 4);
    sensor.stop();
    a1.stop().unwrap();
    a2.stop().unwrap();
    let want1 = td1.stop().unwrap();
    let want2 = td2.stop().unwrap();
    assert_eq!((want1.len(), want2.len()), (60, 60));

    // tshark -r - saw both captures, each byte-exact.
    let name1 = format!("{}/{}", Topology::UPLINK_IP, Topology::CAP_IF);
    let name2 = format!("{UPLINK2_IP}/{}", Topology::CAP_IF);
    let ts = sensor.tshark_file();
    let names = run(
        "tshark",
        &[
            "-r",
            ts.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
        ],
    );
    assert_eq!(count_of(&names, &format!("{name1}\n")), 60, "{names}");
    assert_eq!(count_of(&names, &format!("{name2}\n")), 60, "{names}");
    let got1 = frames_of(&ts, &name1, dir.path());
    let got2 = frames_of(&ts, &name2, dir.path());
    assert!(bytes(&got1) == bytes(&want1), "link 1 differs from tcpdump");
    assert!(bytes(&got2) == bytes(&want2), "link 2 differs from tcpdump");
    let seqs: Vec<u32> = got2
        .iter()
        .map(|p| seq_of(udp(p).unwrap().payload).unwrap())
        .collect();
    assert_eq!(seqs, (0..60).collect::<Vec<u32>>());

    // capinfos: one interface per capture, named, with its statistics.
    let raw = sensor.raw();
    let info = run("capinfos", &[raw.to_str().unwrap()]);
    assert!(info.contains("Number of interfaces in file: 2"), "{info}");
    assert!(info.contains(&format!("Name = {name1}\n")), "{info}");
    assert!(info.contains(&format!("Name = {name2}\n")), "{info}");
    assert_eq!(count_of(&info, "Number of stat entries = 1"), 2, "{info}");
    assert!(
        info.contains("Capture application: xrpcap-sensor "),
        "{info}"
    );
    assert!(info.contains("Time precision = microseconds (6)"), "{info}");

    // The statistics blocks, as Wireshark's pcapng dissector shows them.
    let blocks = run(
        "tshark",
        &[
            "-r",
            raw.to_str().unwrap(),
            "-X",
            "read_format:MIME Files Format",
            "-V",
        ],
    );
    assert_eq!(
        count_of(&blocks, "Block: Interface Statistics Block"),
        2,
        "{blocks}"
    );
    assert_eq!(
        count_of(
            &blocks,
            "Option: Number of Packets Delivered to the User = 60"
        ),
        2,
        "{blocks}"
    );
    assert_eq!(
        count_of(&blocks, "Option: Number of Received Packets = "),
        2
    );
    assert_eq!(
        count_of(&blocks, "Option: Number of Packets Dropped by OS = 0"),
        2
    );
    assert_eq!(
        count_of(
            &blocks,
            "Option: Comment = xrpcap-sensor: 60 records written, 0 missing"
        ),
        2
    );
    drop(gen2);
}

#[test]
#[ignore = "needs root"]
fn a_unix_socket_reader_gets_the_stream_byte_exact_and_may_leave() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    require_root();
    require_tool("tshark");
    let topo = Topology::new().unwrap();
    let _sink = sink(&topo.cap, Topology::CAP_IP);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stream.sock");
    let td = Tcpdump::start(
        &topo.cap,
        Topology::CAP_IF,
        &dir.path().join("c.pcap"),
        "udp port 5000",
    )
    .unwrap();
    let mut sensor = PipedSensor::start_to(&topo.sen, Some(&sock));
    let m = std::fs::metadata(&sock).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o777, 0o660, "the socket's mode");
    let mut agent = Agent::start(&topo.cap, &Topology::active_ini(Topology::SEN_IP), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let send = |from: u32, to: u32| {
        for (k, size) in [60usize, 700, 1400].iter().enumerate() {
            let n = (to - from) / 3;
            let first = from + n * k as u32;
            let payloads = numbered_payloads(first + n, *size).split_off(first as usize);
            send_udp(
                &topo.gen,
                addr(Topology::GEN_IP, 4000),
                addr(Topology::CAP_IP, 5000),
                &payloads,
            )
            .unwrap();
        }
    };
    send(0, 60);
    wait_for_packets(&sensor.raw(), 60, ARRIVAL).unwrap();
    let want = td.stop().unwrap();
    assert_eq!(want.len(), 60);

    // The reader leaves; what tshark read of the socket is byte-exact.
    sensor.reader_leaves();
    let name = format!("{}/{}", Topology::UPLINK_IP, Topology::CAP_IF);
    let got = frames_of(&sensor.tshark_file(), &name, dir.path());
    assert!(
        bytes(&got) == bytes(&want),
        "the socket's stream differs from tcpdump"
    );

    // The sensor goes on without it, as with a pipe whose reader left: the
    // write fails once (logged), later records are write errors.
    send(60, 90);
    sensor.wait_log("write failed", 1);
    sensor.wait_log(" sent 90", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sensor.sensor.try_wait().unwrap().is_none(),
        "the sensor runs on:\n{}",
        sensor.log()
    );
    sensor.stop();
    agent.stop().unwrap();
    let log = sensor.log();
    let errors: u64 = log
        .lines()
        .find_map(|l| l.split(" write_errors=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no final line:\n{log}"))
        .parse()
        .unwrap();
    // Every record after the reader left (30), none before.
    assert_eq!(errors, 30, "write_errors\n{log}");
    assert!(!sock.exists(), "the socket file is removed at exit");
}

#[test]
#[ignore = "needs root"]
fn records_lost_on_the_way_get_a_comment_on_the_next_frame() {
    require_root();
    for t in ["tshark", "nft"] {
        require_tool(t);
    }
    let topo = Topology::new().unwrap();
    let _sink = sink(&topo.cap, Topology::CAP_IP);
    let mut sensor = PipedSensor::start(&topo.sen);
    let mut agent = Agent::start(&topo.cap, &Topology::active_ini(Topology::SEN_IP), &[]).unwrap();
    agent.wait_capturing(Topology::CAP_IF, 1).unwrap();
    let payloads = numbered_payloads(80, 200);
    let send = |r: std::ops::Range<usize>| {
        send_udp(
            &topo.gen,
            addr(Topology::GEN_IP, 4000),
            addr(Topology::CAP_IP, 5000),
            &payloads[r],
        )
        .unwrap();
    };
    send(0..30);
    wait_for_packets(&sensor.raw(), 30, ARRIVAL).unwrap();
    // The data channel goes silent for a moment: UDP from the agent is
    // dropped in the sensor's namespace (control is TCP and goes on).
    let rule = format!(
        "table inet t {{ chain in {{ type filter hook input priority 0; ip saddr {} meta l4proto udp drop; }}; }}",
        Topology::UPLINK_IP
    );
    topo.sen.run("nft", [rule.as_str()]).unwrap();
    send(30..50);
    // The agent has taken all 50 (its STATS say so, every second) and sends
    // what it holds within its read timeout (100 ms).
    sensor.wait_log(" sent 50", 1);
    std::thread::sleep(Duration::from_millis(500));
    topo.sen.run("nft", ["delete table inet t"]).unwrap();
    send(50..80);
    wait_for_packets(&sensor.raw(), 60, ARRIVAL).unwrap();
    sensor.stop();
    agent.stop().unwrap();

    let got = read_pcap(&sensor.tshark_file()).unwrap();
    let seqs: Vec<u32> = got
        .iter()
        .map(|p| seq_of(udp(p).unwrap().payload).unwrap())
        .collect();
    let want: Vec<u32> = (0..30).chain(50..80).collect();
    assert_eq!(seqs, want);
    let rows = run(
        "tshark",
        &[
            "-r",
            sensor.tshark_file().to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "frame.comment",
        ],
    );
    let commented: Vec<&str> = rows
        .lines()
        .filter(|l| l.contains("xrpcap-sensor"))
        .collect();
    assert_eq!(commented.len(), 1, "{rows}");
    assert!(
        commented[0]
            .starts_with("31\txrpcap-sensor: 20 records lost before this one (sequence gap: npkt "),
        "{rows}"
    );
    let v = run(
        "tshark",
        &[
            "-r",
            sensor.raw().to_str().unwrap(),
            "-Y",
            "frame.number == 31",
            "-V",
        ],
    );
    assert!(v.contains("Drop Count: 20"), "{v}");
    let blocks = run(
        "tshark",
        &[
            "-r",
            sensor.raw().to_str().unwrap(),
            "-X",
            "read_format:MIME Files Format",
            "-V",
        ],
    );
    assert!(
        blocks.contains("xrpcap-sensor: 60 records written, 20 missing by npkt"),
        "{blocks}"
    );
    let fin = sensor
        .log()
        .lines()
        .find(|l| l.starts_with("final "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(fin.contains(" lost=20 "), "{fin}");
}
