//! End-to-end tests of the real xrpcap-sensor binary on loopback, with
//! scripted agents written here. Each test has its own TCP port and UDP range.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use common::*;
use rpcap::msg::{startcap_flags, Message, Stats};
use rpcap::udpstr::NO_HEADER;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn udpstr_capture_with_loss_dup_reorder_malformed_is_exact() {
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:24101",
        "--udp-ports",
        "24110-24119",
        "--ifaddr",
        "10.3.0.0/16",
        "--stats-interval",
        "0.2",
    ]);
    let mut agent = ScriptedAgent::connect(24101);
    let (iface, req) = agent.handshake(1);
    assert_eq!(
        iface, "eth2",
        "--ifaddr picks the interface holding an address in the prefix"
    );
    assert_eq!(req.snaplen, 262_144);
    assert_ne!(req.flags & startcap_flags::DGRAM, 0);
    assert_ne!(req.flags & startcap_flags::PROMISC, 0);
    assert!((24110..=24119).contains(&req.portdata));
    assert_eq!(req.filter.len(), 1, "no filter → ret #snaplen");
    assert_eq!((req.filter[0].code, req.filter[0].k), (0x06, 262_144));
    let agent_stats = Stats {
        ifrecv: 100,
        ifdrop: 7,
        krnldrop: 3,
        svrcapt: 60,
    };
    let (server, _) = agent.serve(agent_stats);
    // Let a STATS exchange happen before the data.
    thread::sleep(Duration::from_millis(600));

    let recs = records(60, 0x11);
    let (dgrams, spans) = frame(&recs, 300);
    assert!(dgrams.len() > 30, "{} datagrams", dgrams.len());
    // Some records must span datagrams for the test to mean anything.
    assert!(spans.iter().filter(|(a, b)| a != b).count() > 10);
    let (lost_d, dup_d, late_d) = (5usize, 9usize, 14usize);
    let mut order: Vec<usize> = Vec::new();
    for i in 0..dgrams.len() {
        match i {
            _ if i == lost_d => {}
            _ if i == dup_d => order.extend([i, i]),
            // late_d + 1 overtakes late_d, which then arrives late.
            _ if i == late_d => order.extend([late_d + 1, late_d]),
            _ if i == late_d + 1 => {}
            _ => order.push(i),
        }
    }
    let tx = data_socket(req.portdata);
    let foreign = UdpSocket::bind("127.0.0.2:0").unwrap();
    for (n, &i) in order.iter().enumerate() {
        if n == 3 {
            // Malformed: too short, neither udpstr nor plain, and a udpstr
            // header whose firsthdridx points outside the datagram.
            tx.send(&[0, 110, 0]).unwrap();
            tx.send(&[0, 99, 0, 8, 0, 0, 0, 0, 1, 2, 3]).unwrap();
            let mut bad = dgrams[i].clone();
            bad[2..4].copy_from_slice(&5000u16.to_be_bytes());
            bad[4..8].copy_from_slice(&0u32.to_be_bytes());
            tx.send(&bad).unwrap();
            // A datagram from an address that is not the agent's.
            foreign
                .send_to(&dgrams[0], ("127.0.0.1", req.portdata))
                .unwrap();
            assert_ne!(u16::from_be_bytes([bad[2], bad[3]]), NO_HEADER);
        }
        tx.send(&dgrams[i]).unwrap();
        thread::sleep(Duration::from_micros(200));
    }
    // Records touching the lost or the late datagram are lost; all others arrive.
    let dropped = |d: usize| d == lost_d || d == late_d;
    let expect: Vec<&Record> = recs
        .iter()
        .zip(&spans)
        .filter(|(_, (a, b))| !(*a..=*b).any(dropped))
        .map(|(r, _)| r)
        .collect();
    let lost = recs.len() - expect.len();
    assert!(lost >= 2, "the test must lose records ({lost})");

    // Stop after exactly the expected records.
    thread::sleep(Duration::from_millis(300));
    kill(&sensor, "TERM");
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    server.join().unwrap();
    let files = sensor.files();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("127.0.0.1-eth2-") && name.ends_with(".pcap"),
        "{name}"
    );
    let bytes = std::fs::read(&files[0]).unwrap();
    assert!(
        bytes == pcap_bytes(&expect, 262_144, 1),
        "pcap differs from the records that arrived"
    );
    assert_eq!(tcpdump_count(&files[0]), expect.len());

    let lines = sensor.final_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(field(l, "iface"), "eth2");
    assert_eq!(num(l, "packets"), expect.len() as u64);
    assert_eq!(num(l, "write_drops"), 0, "{l:?}");
    assert_eq!(num(l, "lost"), lost as u64, "{l:?}");
    assert_eq!(num(l, "duplicates"), 1, "{l:?}");
    assert_eq!(num(l, "reordered"), 1, "{l:?}");
    assert_eq!(num(l, "seq_gaps"), 2, "{l:?}");
    assert_eq!(num(l, "lost_datagrams"), 1, "{l:?}");
    // Short and bad-index datagrams are udpstr errors; type 99 is neither format.
    assert_eq!(num(l, "udpstr_malformed"), 2, "{l:?}");
    assert_eq!(num(l, "malformed"), 1, "{l:?}");
    assert_eq!(num(l, "foreign"), 1, "{l:?}");
    assert_eq!(num(l, "agent_ifdrop"), 7, "{l:?}");
    assert_eq!(num(l, "agent_krnldrop"), 3, "{l:?}");
    assert!(
        fin.stderr.contains("final agent=127.0.0.1:"),
        "{}",
        fin.stderr
    );
}

#[test]
fn plain_udp_capture_counts_npkt_gaps_and_stops_at_count() {
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:24201",
        "--udp-ports",
        "24210-24219",
        "--snaplen",
        "1000",
        "--count",
        "17",
        "--no-promisc",
    ]);
    let mut agent = ScriptedAgent::connect(24201);
    let (iface, req) = agent.handshake(1);
    assert_eq!(iface, "eth1", "default: the preselected interface");
    assert_eq!(req.snaplen, 1000);
    assert_eq!(req.flags & startcap_flags::PROMISC, 0);
    let (server, _) = agent.serve(Stats::default());
    let recs = records(20, 0x22);
    let tx = data_socket(req.portdata);
    let mut buf = vec![0u8; 2000];
    let send = |r: &Record, buf: &mut [u8]| {
        let n = rpcap::plain::encode(&r.hdr, &r.data, buf);
        tx.send(&buf[..n]).unwrap();
    };
    // npkt 5 lost, 8 duplicated, 12 overtakes 11 (11 arrives late → dropped).
    let mut written = Vec::new();
    for i in 1..=20usize {
        let r = &recs[i - 1];
        match i {
            5 => continue,
            8 => {
                send(r, &mut buf);
                send(r, &mut buf);
            }
            11 => {
                send(&recs[11], &mut buf);
                send(r, &mut buf);
                written.push(&recs[11]);
                continue;
            }
            12 => continue,
            3 => {
                // A PACKET whose plen does not match its caplen.
                let n = rpcap::plain::encode(&r.hdr, &r.data, &mut buf);
                tx.send(&buf[..n - 5]).unwrap();
                send(r, &mut buf);
            }
            _ => send(r, &mut buf),
        }
        written.push(r);
        thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(written.len(), 18);
    // --count 17 stops after 17 records: the 18th is never written.
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    server.join().unwrap();
    let files = sensor.files();
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).unwrap();
    assert!(bytes == pcap_bytes(&written[..17], 1000, 1), "pcap differs");
    assert_eq!(tcpdump_count(&files[0]), 17);
    let l = &sensor.final_lines()[0];
    assert_eq!(num(l, "packets"), 17);
    assert_eq!(num(l, "plain_lost"), 2, "{l:?}"); // 5, and 11 when 12 overtook it
    assert_eq!(num(l, "plain_dups"), 2, "{l:?}"); // second 8, late 11
    assert_eq!(num(l, "malformed"), 1, "{l:?}");
}

#[test]
fn fifty_agents_at_once_all_files_exact() {
    const AGENTS: usize = 50;
    const PER: u32 = 30;
    let total = (AGENTS as u32 * PER).to_string();
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:24301",
        "--udp-ports",
        "24310-24369",
        "--count",
        &total,
    ]);
    let handles: Vec<_> = (0..AGENTS)
        .map(|k| {
            thread::spawn(move || {
                let mut agent = ScriptedAgent::connect(24301);
                let (_, req) = agent.handshake(1);
                let port = agent.ctl.local_addr().unwrap().port();
                let (server, _) = agent.serve(Stats::default());
                let recs = records(PER, k as u8);
                let (dgrams, _) = frame(&recs, 1472);
                let tx = data_socket(req.portdata);
                for d in &dgrams {
                    tx.send(d).unwrap();
                    thread::sleep(Duration::from_micros(300));
                }
                let expect = pcap_bytes(&recs.iter().collect::<Vec<_>>(), 262_144, 1);
                (port, expect, server)
            })
        })
        .collect();
    let mut expected = Vec::new();
    let mut servers = Vec::new();
    for h in handles {
        let (port, bytes, s) = h.join().unwrap();
        expected.push((port, bytes));
        servers.push(s);
    }
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    for s in servers {
        s.join().unwrap();
    }
    let files = sensor.files();
    assert_eq!(files.len(), AGENTS, "{files:?}");
    let mut names = HashSet::new();
    for f in &files {
        let content = std::fs::read(f).unwrap();
        let matching: Vec<u16> = expected
            .iter()
            .filter(|(_, b)| *b == content)
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{} matches no agent's records",
            f.display()
        );
        names.insert(matching[0]);
        assert_eq!(tcpdump_count(f), PER as usize);
    }
    assert_eq!(names.len(), AGENTS, "every agent has its own file");
    let lines = sensor.final_lines();
    assert_eq!(lines.len(), AGENTS);
    for l in &lines {
        assert_eq!(num(l, "packets"), u64::from(PER), "{l:?}");
        assert_eq!(num(l, "lost"), 0, "{l:?}");
        assert_eq!(num(l, "write_drops"), 0, "{l:?}");
    }
}

#[test]
fn garbage_on_one_control_connection_leaves_others_alone() {
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:24401",
        "--udp-ports",
        "24410-24419",
        "--count",
        "10",
    ]);
    let mut good = ScriptedAgent::connect(24401);
    let (_, req) = good.handshake(1);
    let (server, _) = good.serve(Stats::default());

    let mut bad = ScriptedAgent::connect(24401);
    assert!(matches!(bad.recv(), Some(Message::AuthReq(_))));
    // Version 9, then noise.
    bad.ctl
        .write_all(&[9, 0x88, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef])
        .unwrap();
    match bad.recv() {
        Some(Message::Error { code, .. }) => assert_eq!(code, 17, "WRONGVER"),
        m => panic!("expected ERROR, got {m:?}"),
    }
    assert_eq!(bad.recv(), Some(Message::Close));
    assert_eq!(bad.recv(), None, "the sensor closes the bad session");

    let recs = records(10, 0x44);
    let (dgrams, _) = frame(&recs, 1472);
    let tx = data_socket(req.portdata);
    for d in &dgrams {
        tx.send(d).unwrap();
    }
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    server.join().unwrap();
    let files = sensor.files();
    assert_eq!(files.len(), 1);
    assert!(
        std::fs::read(&files[0]).unwrap()
            == pcap_bytes(&recs.iter().collect::<Vec<_>>(), 262_144, 1)
    );
}

#[test]
fn silent_agent_is_closed_by_stats_timeout() {
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:24501",
        "--udp-ports",
        "24510-24519",
        "--stats-interval",
        "0.3",
        "--stats-timeout",
        "1",
        "--duration",
        "6",
    ]);
    let mut agent = ScriptedAgent::connect(24501);
    agent.handshake(1);
    let start = std::time::Instant::now();
    // Never answer: read until the sensor gives up on us.
    let mut saw_stats = false;
    loop {
        match agent.recv() {
            Some(Message::StatsReq) => saw_stats = true,
            Some(_) => {}
            None => break,
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not closed in time"
        );
    }
    assert!(saw_stats);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "closed too early: {waited:?}"
    );
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    assert!(fin.stderr.contains("no reply to STATS"), "{}", fin.stderr);
    let lines = sensor.final_lines();
    assert_eq!(lines.len(), 1, "the closed capture is still summarised");
}

#[test]
fn sighup_pushes_filter_file_to_running_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let ff = dir.path().join("filter");
    std::fs::write(&ff, "# only DNS\nudp port 53\n").unwrap();
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:24601",
        "--udp-ports",
        "24610-24619",
        "--filter-file",
        ff.to_str().unwrap(),
        "--snaplen",
        "2000",
    ]);
    let mut agent = ScriptedAgent::connect(24601);
    let (_, req) = agent.handshake(1);
    let ks: Vec<u32> = req.filter.iter().map(|i| i.k).collect();
    assert!(ks.contains(&53) && ks.contains(&2000), "{:?}", req.filter);
    let (server, filters) = agent.serve(Stats::default());
    std::fs::write(&ff, "tcp port 8080\n").unwrap();
    kill(&sensor, "HUP");
    let f = filters
        .recv_timeout(Duration::from_secs(5))
        .expect("UPDATEFILTER after SIGHUP");
    let ks: Vec<u32> = f.iter().map(|i| i.k).collect();
    assert!(ks.contains(&8080) && !ks.contains(&53), "{f:?}");
    kill(&sensor, "INT");
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    assert!(fin.stderr.contains("filter updated"), "{}", fin.stderr);
    server.join().unwrap();
    // The file is valid even with no packets.
    let files = sensor.files();
    assert_eq!(tcpdump_count(&files[0]), 0);
}

#[test]
fn full_udp_range_makes_the_extra_agent_wait_for_a_port() {
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:24701",
        "--udp-ports",
        "24710-24710",
        "--count",
        "3",
    ]);
    let mut first = ScriptedAgent::connect(24701);
    let (_, req) = first.handshake(1);
    let (server, _) = first.serve(Stats::default());
    let mut second = ScriptedAgent::connect(24701);
    assert!(matches!(second.recv(), Some(Message::AuthReq(_))));
    second.send(&Message::AuthReply(None));
    assert_eq!(second.recv(), Some(Message::FindAllIfReq));
    second.send(&Message::FindAllIfReply(interfaces()));
    assert!(matches!(second.recv(), Some(Message::OpenReq { .. })));
    second.send(&Message::OpenReply {
        linktype: 1,
        tzoff: 0,
    });
    // No port now: no ERROR and CLOSE (issue 12: the agent might never
    // come back) but OPEN again after a while, for STARTCAP then.
    assert!(
        matches!(second.recv(), Some(Message::OpenReq { .. })),
        "the second agent is asked again"
    );
    let recs = records(3, 0x55);
    let (dgrams, _) = frame(&recs, 1472);
    let tx = data_socket(req.portdata);
    for d in &dgrams {
        tx.send(d).unwrap();
    }
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    server.join().unwrap();
    assert!(fin.stderr.contains("no free UDP port"), "{}", fin.stderr);
}

#[test]
fn tcp_data_channel_active_mode_to_pcapng() {
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:24801",
        "--tcp-data",
        "--format",
        "pcapng",
        "--count",
        "12",
    ]);
    let mut agent = ScriptedAgent::connect(24801);
    let (_, req) = agent.handshake(1);
    assert_eq!(req.flags & startcap_flags::DGRAM, 0);
    assert_ne!(req.flags & startcap_flags::SERVEROPEN, 0);
    assert_ne!(req.portdata, 0);
    let (server, _) = agent.serve(Stats::default());
    let mut data = std::net::TcpStream::connect(("127.0.0.1", req.portdata)).unwrap();
    let recs = records(12, 0x66);
    let mut buf = vec![0u8; 2000];
    for r in &recs {
        let n = rpcap::plain::encode(&r.hdr, &r.data, &mut buf);
        // Cut the stream at awkward places.
        data.write_all(&buf[..n / 2]).unwrap();
        data.write_all(&buf[n / 2..n]).unwrap();
    }
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    server.join().unwrap();
    let files = sensor.files();
    assert_eq!(files.len(), 1);
    assert!(files[0].to_string_lossy().ends_with(".pcapng"));
    assert_eq!(tcpdump_count(&files[0]), 12);
    let l = &sensor.final_lines()[0];
    assert_eq!(num(l, "packets"), 12);
    assert_eq!(
        num(l, "bytes"),
        recs.iter().map(|r| r.data.len() as u64).sum::<u64>()
    );
}

#[test]
fn stdout_stream_is_pcap() {
    let mut sensor = Sensor::start_with(
        &[
            "--listen",
            "127.0.0.1:24901",
            "--udp-ports",
            "24910-24919",
            "-w",
            "-",
            "--format",
            "pcap",
            "--count",
            "8",
        ],
        Stdio::piped(),
    );
    let mut agent = ScriptedAgent::connect(24901);
    let (_, req) = agent.handshake(1);
    let (server, _) = agent.serve(Stats::default());
    let recs = records(8, 0x77);
    let (dgrams, _) = frame(&recs, 1472);
    let tx = data_socket(req.portdata);
    for d in &dgrams {
        tx.send(d).unwrap();
    }
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    server.join().unwrap();
    assert!(fin.stdout == pcap_bytes(&recs.iter().collect::<Vec<_>>(), 262_144, 1));
}

#[test]
fn clear_errors_for_bad_filter_port_in_use_and_bad_cidr() {
    let run = |args: &[&str]| {
        let mut s = Sensor::start(args);
        s.wait(WAIT)
    };
    // Configuration errors exit 78 (EX_CONFIG), other failures 1.
    let f = run(&["--listen", "127.0.0.1:0", "--filter", "tcp port eighty"]);
    assert_eq!(f.code, Some(78));
    assert!(
        f.stderr.contains("bad filter 'tcp port eighty'"),
        "{}",
        f.stderr
    );

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let f = run(&["--listen", &addr]);
    assert_eq!(f.code, Some(1));
    assert!(
        f.stderr
            .contains(&format!("cannot listen for agents on {addr}"))
            && f.stderr.contains("in use"),
        "{}",
        f.stderr
    );

    let f = run(&["--listen", "127.0.0.1:0", "--ifaddr", "10.0.0.0/99"]);
    assert_eq!(f.code, Some(78));
    assert!(f.stderr.contains("--ifaddr: '10.0.0.0/99'"), "{}", f.stderr);

    let f = run(&["--listen", "127.0.0.1:0", "--metrics-listen", "localhost"]);
    assert_eq!(f.code, Some(78));
    assert!(f.stderr.contains("--metrics-listen"), "{}", f.stderr);
}

fn kill(s: &Sensor, sig: &str) {
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(s.pid().to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn passive_agent_with_password_and_tcp_data_agent_listens() {
    let ctl = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = ctl.local_addr().unwrap().to_string();
    let mut sensor = Sensor::start_env(
        &[
            "--listen",
            "none",
            "--connect",
            &target,
            "--user",
            "alice",
            "--tcp-data",
            "--ifname",
            "eth0",
            "--count",
            "6",
        ],
        Stdio::null(),
        &[("XRPCAP_PASSWORD", "s3cret")],
    );
    let mut agent = ScriptedAgent::accept(&ctl);
    let data_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let data_port = data_l.local_addr().unwrap().port();
    let (auth, (iface, req)) = agent.handshake_full(1, data_port);
    assert_eq!(
        auth,
        rpcap::msg::Auth::Password {
            user: b"alice".to_vec(),
            password: b"s3cret".to_vec()
        }
    );
    assert_eq!(iface, "eth0");
    assert_eq!(
        req.flags & (startcap_flags::DGRAM | startcap_flags::SERVEROPEN),
        0
    );
    let (server, _) = agent.serve(Stats::default());
    let (mut data, _) = data_l.accept().unwrap();
    let recs = records(6, 0x88);
    let mut buf = vec![0u8; 2000];
    for r in &recs {
        let n = rpcap::plain::encode(&r.hdr, &r.data, &mut buf);
        data.write_all(&buf[..n]).unwrap();
    }
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    server.join().unwrap();
    let files = sensor.files();
    assert_eq!(files.len(), 1);
    assert!(
        std::fs::read(&files[0]).unwrap()
            == pcap_bytes(&recs.iter().collect::<Vec<_>>(), 262_144, 1)
    );
}

/// Records of `caplen` bytes, npkt 1..=n (n < 1 M), identifiable by ts_usec.
fn big_records(n: u32, caplen: u32) -> Vec<Record> {
    (1..=n)
        .map(|i| Record {
            hdr: rpcap::PktHdr {
                ts_sec: 1_700_000_000,
                ts_usec: i,
                caplen,
                len: caplen,
                npkt: i,
            },
            data: (0..caplen).map(|b| (b as u8) ^ (i as u8)).collect(),
        })
        .collect()
}

/// Parses a pcap stream; checks every record against `recs` (found by its
/// ts_usec, in increasing order) and returns how many there are.
fn check_pcap_subsequence(bytes: &[u8], recs: &[Record]) -> usize {
    assert!(bytes.len() >= 24, "no pcap header");
    let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!(u32_at(0), 0xA1B2_C3D4);
    let (mut off, mut last, mut n) = (24usize, 0u32, 0usize);
    while off < bytes.len() {
        assert!(off + 16 <= bytes.len(), "cut record header at {off}");
        let i = u32_at(off + 4);
        let caplen = u32_at(off + 8) as usize;
        assert!(i > last, "records out of order: {i} after {last}");
        let r = &recs[i as usize - 1];
        assert_eq!(caplen, r.data.len());
        assert!(
            bytes[off + 16..off + 16 + caplen] == r.data[..],
            "record {i} differs"
        );
        off += 16 + caplen;
        last = i;
        n += 1;
    }
    n
}

#[test]
fn stalled_stdout_reader_drops_whole_records_and_the_loop_keeps_going() {
    const N: u32 = 20_000;
    let mut sensor = Sensor::start_with(
        &[
            "--listen",
            "127.0.0.1:25101",
            "--udp-ports",
            "25110-25119",
            "-w",
            "-",
            "--format",
            "pcap",
            "--stats-interval",
            "0.3",
            "--stats-timeout",
            "1.2",
        ],
        Stdio::piped(),
    );
    // Nobody reads the sensor's stdout until the end: the pipe (64 KiB) and
    // then the writer's buffers (16 MiB) fill up.
    let mut agent = ScriptedAgent::connect(25101);
    let (_, req) = agent.handshake(1);
    let (server, _) = agent.serve(Stats {
        ifrecv: 5,
        ..Stats::default()
    });
    let recs = big_records(N, 1400);
    let (dgrams, _) = frame(&recs, 65_000);
    let tx = data_socket(req.portdata);
    for (k, d) in dgrams.iter().enumerate() {
        tx.send(d).unwrap();
        if k % 8 == 7 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    // The loop still serves control connections while the writer is stuck:
    // a second agent gets its answer (a pcap stream takes one capture) at once.
    let t0 = std::time::Instant::now();
    let mut second = ScriptedAgent::connect(25101);
    assert!(matches!(second.recv(), Some(Message::AuthReq(_))));
    second.send(&Message::AuthReply(None));
    assert_eq!(second.recv(), Some(Message::FindAllIfReq));
    second.send(&Message::FindAllIfReply(interfaces()));
    assert!(matches!(second.recv(), Some(Message::OpenReq { .. })));
    second.send(&Message::OpenReply {
        linktype: 1,
        tzoff: 0,
    });
    match second.recv() {
        Some(Message::Error { text, .. }) => assert!(text.contains("stdout"), "{text}"),
        m => panic!("expected ERROR, got {m:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "the loop stalled: {:?}",
        t0.elapsed()
    );
    // Longer than --stats-timeout: STATS must keep flowing meanwhile.
    thread::sleep(Duration::from_millis(2000));
    kill(&sensor, "TERM");
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    server.join().unwrap();
    assert!(!fin.stderr.contains("no reply to STATS"), "{}", fin.stderr);
    let stats_replies = fin.stderr.matches(": recv 5 ifdrop").count();
    assert!(
        stats_replies >= 6,
        "{stats_replies} STATS replies\n{}",
        fin.stderr
    );

    let l = &sensor.final_lines()[0];
    let (packets, drops) = (num(l, "packets"), num(l, "write_drops"));
    assert!(drops > 0, "the stall must drop records: {l:?}");
    assert_eq!(num(l, "write_errors"), 0, "{l:?}");
    assert_eq!(
        packets + drops + num(l, "lost"),
        u64::from(N),
        "every record written, dropped or lost: {l:?}"
    );
    // What was written is a valid pcap of whole, correct records.
    assert_eq!(check_pcap_subsequence(&fin.stdout, &recs) as u64, packets);
    let f = sensor.dir.path().join("stdout.pcap");
    std::fs::write(&f, &fin.stdout).unwrap();
    assert_eq!(tcpdump_count(&f) as u64, packets);
}

#[test]
fn closed_capture_port_lingers_counts_late_datagrams_then_is_released() {
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:25201",
        "--udp-ports",
        "25210-25219",
        "--duration",
        "6",
    ]);
    let mut agent = ScriptedAgent::connect(25201);
    let (_, req) = agent.handshake(1);
    let recs = records(3, 0x99);
    let (dgrams, _) = frame(&recs, 1472);
    let tx = data_socket(req.portdata);
    for d in &dgrams {
        tx.send(d).unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    // The agent goes away; its datagrams still in flight arrive after the close.
    drop(agent);
    thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        tx.send(&dgrams[0]).unwrap();
    }
    let foreign = UdpSocket::bind("127.0.0.2:0").unwrap();
    foreign
        .send_to(&dgrams[0], ("127.0.0.1", req.portdata))
        .unwrap();
    // Still held during the linger, released after it.
    assert!(UdpSocket::bind(("127.0.0.1", req.portdata)).is_err());
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let rebound = loop {
        thread::sleep(Duration::from_millis(100));
        if let Ok(s) = UdpSocket::bind(("127.0.0.1", req.portdata)) {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "port {} not released",
            req.portdata
        );
    };
    drop(rebound);
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    let lines = sensor.final_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(num(l, "packets"), 3, "{l:?}");
    assert_eq!(num(l, "late"), 5, "{l:?}");
    assert_eq!(num(l, "foreign"), 1, "{l:?}");
    assert_eq!(tcpdump_count(&sensor.files()[0]), 3);
}

#[test]
fn dead_passive_agent_does_not_delay_an_active_one() {
    // A "dead" agent on loopback: a listener whose accept queue is full, so
    // the kernel ignores further SYNs and a connect hangs.
    let dead = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    dead.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    dead.listen(0).unwrap();
    let dead_addr = dead.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        if let Ok(c) = std::net::TcpStream::connect_timeout(&dead_addr, Duration::from_millis(200))
        {
            fillers.push(c);
        }
    }
    assert!(
        std::net::TcpStream::connect_timeout(&dead_addr, Duration::from_millis(300)).is_err(),
        "the dead agent must not accept connections"
    );
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:25301",
        "--udp-ports",
        "25310-25319",
        "--connect",
        &dead_addr.to_string(),
        "--duration",
        "5",
    ]);
    let mut agent = ScriptedAgent::connect(25301);
    let t0 = std::time::Instant::now();
    let (_, req) = agent.handshake(1);
    let took = t0.elapsed();
    assert!(req.portdata != 0);
    assert!(
        took < Duration::from_millis(700),
        "handshake took {took:?} while dialing the dead agent"
    );
    let (server, _) = agent.serve(Stats::default());
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    server.join().unwrap();
    assert!(
        fin.stderr.contains(&format!(
            "cannot connect to passive agent {dead_addr}: timed out"
        )),
        "{}",
        fin.stderr
    );
    drop(fillers);
}

/// Issue 12: datagrams injected from other ports of the agent's address, and
/// a replay of one of the agent's own datagrams, must not change the pcap
/// nor inflate the loss counters. Before the fix 20 injected 8-byte
/// datagrams destroyed most of a capture and a replay re-wrote old packets.
#[test]
fn injected_and_replayed_datagrams_do_not_change_the_pcap() {
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:25101",
        "--udp-ports",
        "25110-25119",
        "--stats-interval",
        "0.2",
    ]);
    let mut agent = ScriptedAgent::connect(25101);
    let (_, req) = agent.handshake(1);
    let stats = Stats {
        ifrecv: 400,
        ifdrop: 0,
        krnldrop: 0,
        svrcapt: 400,
    };
    let (server, _) = agent.serve(stats);
    let recs = records(400, 0x5a);
    let (dgrams, _) = frame(&recs, 300);
    assert!(dgrams.len() > 300, "{} datagrams", dgrams.len());
    let tx = data_socket(req.portdata);
    // Senders on other ports of the agent's address (127.0.0.1).
    let spoofers: Vec<UdpSocket> = (0..4)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(("127.0.0.1", req.portdata)).unwrap();
            s
        })
        .collect();
    let mut lcg = 0x1234_5678u32;
    let mut injected = 0;
    for (i, d) in dgrams.iter().enumerate() {
        tx.send(d).unwrap();
        if i % 10 == 5 && injected < 20 {
            // The header alone, firsthdridx "none", a random seqno; and a
            // copy of a real datagram with a seqno just ahead.
            lcg = lcg.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let mut h = vec![0, 110, 0xff, 0xff];
            h.extend_from_slice(&lcg.to_be_bytes());
            let s = &spoofers[injected % spoofers.len()];
            s.send(&h).unwrap();
            let mut near = dgrams[i].clone();
            near[4..8].copy_from_slice(&(i as u32 + 3).to_be_bytes());
            s.send(&near).unwrap();
            injected += 1;
        }
        if i == 250 {
            // The agent's own datagram 5 again, from its own port: far
            // behind the window.
            tx.send(&dgrams[5]).unwrap();
        }
        thread::sleep(Duration::from_micros(200));
    }
    thread::sleep(Duration::from_millis(300));
    kill(&sensor, "TERM");
    let fin = sensor.wait(WAIT);
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    server.join().unwrap();
    let files = sensor.files();
    assert_eq!(files.len(), 1, "{files:?}");
    let all: Vec<&Record> = recs.iter().collect();
    let bytes = std::fs::read(&files[0]).unwrap();
    assert!(
        bytes == pcap_bytes(&all, 262_144, 1),
        "the pcap differs from the records sent ({} bytes, {} packets)",
        bytes.len(),
        tcpdump_count(&files[0])
    );
    let l = &sensor.final_lines()[0];
    assert_eq!(num(l, "packets"), 400, "{l:?}");
    assert_eq!(num(l, "lost"), 0, "{l:?}");
    assert_eq!(num(l, "lost_datagrams"), 0, "{l:?}");
    assert_eq!(num(l, "seq_gaps"), 0, "{l:?}");
    assert_eq!(num(l, "foreign"), 40, "{l:?}");
    assert_eq!(num(l, "rejected"), 1, "the replay: {l:?}");
}

#[test]
fn agent_error_floods_leave_the_log_bounded() {
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:28101",
        "--udp-ports",
        "28110-28119",
        "--stats-interval",
        "10",
        "--duration",
        "4",
    ]);
    let mut agent = ScriptedAgent::connect(28101);
    agent.handshake(1);
    // 1 MiB texts (the largest a message holds) that would forge lines,
    // while capturing (non-fatal errors, one line each).
    let mut text = "forged\nERROR fake line \x1b[31m".repeat(1 << 15);
    text.truncate(1 << 20);
    let err = Message::Error { code: 5, text };
    let start = std::time::Instant::now();
    let mut sent = 0usize;
    while start.elapsed() < Duration::from_secs(2) {
        agent.send(&err);
        sent += 1;
    }
    let fin = sensor.wait(WAIT);
    assert_eq!(
        fin.code,
        Some(0),
        "{}",
        &fin.stderr[..fin.stderr.len().min(4096)]
    );
    let shown = fin.stderr.matches(": error 5: ").count();
    eprintln!(
        "{sent} MiB of ERROR texts: {} B of sensor log, {shown} lines shown",
        fin.stderr.len()
    );
    assert!(sent >= 8, "the flood was too small: {sent} MiB");
    // A burst of 10 lines, then one a second, each ≤ 256 characters of text.
    assert!((1..=20).contains(&shown), "{shown} lines for {sent} MiB");
    assert!(fin.stderr.len() < 32 << 10, "{} B of log", fin.stderr.len());
    // What was held back is said, with a later line or at the session's end.
    assert!(
        fin.stderr.contains("similar lines suppressed") || fin.stderr.contains("were suppressed"),
        "{}",
        fin.stderr
    );
    assert!(!fin.stderr.lines().any(|l| l.starts_with("ERROR fake")));
    assert!(
        !fin.stderr.contains('\x1b'),
        "a terminal escape reached the log"
    );
}

/// The messages an agent gets after its handshake, with when, until EOF;
/// `answer`: reply to ENDCAP and close after CLOSE, as agents do (a live
/// agent), or neither (a hung one).
fn goodbye_messages(
    mut agent: ScriptedAgent,
    answer: bool,
) -> thread::JoinHandle<Vec<(Message, std::time::Instant)>> {
    thread::spawn(move || {
        let mut got = Vec::new();
        while let Some(m) = agent.recv() {
            if answer && m == Message::EndCapReq {
                agent.send(&Message::EndCapReply);
            }
            let close = answer && m == Message::Close;
            got.push((m, std::time::Instant::now()));
            if close {
                break;
            }
        }
        got
    })
}

#[test]
fn sigterm_ends_each_capture_with_endcap_and_close_and_counts_the_cut_record() {
    // Issue 14 items 9 and 10.
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:28201",
        "--udp-ports",
        "28210-28219",
        "--stats-interval",
        "60",
    ]);
    let mut live = ScriptedAgent::connect(28201);
    let (_, req) = live.handshake(1);
    let mut hung = ScriptedAgent::connect(28201);
    hung.handshake(1);

    // The live agent's last datagram carries only the start of record k.
    let recs = records(20, 0x33);
    let (dgrams, spans) = frame(&recs, 300);
    let k = (3..recs.len())
        .find(|&k| spans[k].0 != spans[k].1)
        .expect("a record spanning datagrams");
    let tx = data_socket(req.portdata);
    for d in &dgrams[..=spans[k].0] {
        tx.send(d).unwrap();
    }
    thread::sleep(Duration::from_millis(500));

    let (live, hung) = (goodbye_messages(live, true), goodbye_messages(hung, false));
    let sent = std::time::Instant::now();
    kill(&sensor, "TERM");
    let fin = sensor.wait(WAIT);
    let took = sent.elapsed();

    assert_eq!(fin.code, Some(0), "{}", fin.stderr);

    let live: Vec<Message> = live.join().unwrap().into_iter().map(|(m, _)| m).collect();
    assert_eq!(
        live,
        vec![Message::EndCapReq, Message::Close],
        "{}",
        fin.stderr
    );
    let hung = hung.join().unwrap();
    let msgs: Vec<&Message> = hung.iter().map(|(m, _)| m).collect();
    assert_eq!(
        msgs,
        [&Message::EndCapReq, &Message::Close],
        "{}",
        fin.stderr
    );
    // The hung agent's CLOSE waited for the bound, no longer.
    let close_after = hung[1].1 - sent;
    assert!(
        close_after >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "CLOSE after {close_after:?}, exit after {took:?}\n{}",
        fin.stderr
    );
    assert!(
        fin.stderr.contains("1 agent(s) did not close"),
        "{}",
        fin.stderr
    );

    let lines = sensor.final_lines();
    let line = lines
        .iter()
        .find(|l| num(l, "udpstr_datagrams") > 0)
        .expect("the live agent's final line");
    assert_eq!(num(line, "packets"), k as u64, "{line:?}");
    assert_eq!(num(line, "truncated_records"), 1, "{line:?}");
    assert_eq!(num(line, "lost"), 1, "{line:?}");
}
