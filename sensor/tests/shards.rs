//! `--receive-threads 2` on loopback with scripted agents on their own
//! addresses: what the leading thread does for all — SIGHUP's filter
//! reaches every agent, the metrics endpoint shows every thread's
//! captures, the stats file has every capture's final line.

mod common;
mod loopback;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use loopback::{connect_from, thread_of};
use rpcap::msg::Stats;
use rpcap::PktHdr;

const AGENTS: u8 = 4;
const RECORDS: u32 = 30;

fn kill(s: &Sensor, sig: &str) {
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(s.pid().to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The value of the sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// RECORDS 64-byte records in udpstr datagrams from `ip` to `port`.
fn send_records(ip: Ipv4Addr, port: u16) {
    use rpcap::udpstr::{Batch, Framer};
    let sock = UdpSocket::bind((ip, 0)).unwrap();
    let mut framer = Framer::new(1472).unwrap();
    let mut batch = Batch::new(1472, 4);
    for npkt in 1..=RECORDS {
        let h = PktHdr {
            ts_sec: 1_700_000_000,
            ts_usec: npkt,
            caplen: 64,
            len: 64,
            npkt,
        };
        framer.push(&mut batch, &h, &[npkt as u8; 64]).unwrap();
    }
    framer.flush(&mut batch);
    for d in batch.datagrams() {
        sock.send_to(d, ("127.0.0.1", port)).unwrap();
    }
}

#[test]
fn two_receive_threads_share_reload_metrics_and_final_lines() {
    let dir = tempfile::tempdir().unwrap();
    let ff = dir.path().join("filter");
    std::fs::write(&ff, "udp port 53\n").unwrap();
    let sensor = Sensor::start_env(
        &[
            "--listen",
            "127.0.0.1:25101",
            "--udp-ports",
            "25110-25119",
            "--filter-file",
            ff.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:25102",
            "--receive-threads",
            "2",
        ],
        std::process::Stdio::null(),
        &[("RUST_LOG", "info")],
    );
    let mut sensor = sensor;
    // 127.0.0.2..5: two agents on each thread.
    let ips: Vec<Ipv4Addr> = (2..2 + AGENTS)
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .collect();
    let mut servers = Vec::new();
    let mut filters = Vec::new();
    for ip in &ips {
        let mut agent = ScriptedAgent::from_stream(connect_from(*ip, 25101));
        let (_, req) = agent.handshake(1);
        let (server, f) = agent.serve(Stats::default());
        send_records(*ip, req.portdata);
        servers.push(server);
        filters.push(f);
    }
    // The metrics endpoint: every thread's sessions and captures.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics(25102);
        let all_in = ips.iter().all(|ip| {
            sample(
                &text,
                &format!("xrpcap_sensor_packets_total{{agent=\"{ip}\","),
            ) == Some(u64::from(RECORDS))
        });
        if all_in || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for ip in &ips {
        assert_eq!(
            sample(
                &text,
                &format!("xrpcap_sensor_packets_total{{agent=\"{ip}\",")
            ),
            Some(u64::from(RECORDS)),
            "{ip}:\n{text}"
        );
    }
    assert_eq!(
        sample(&text, "xrpcap_sensor_sessions{state=\"capturing\"}"),
        Some(u64::from(AGENTS)),
        "{text}"
    );
    // SIGHUP: the leading thread reads the file, every thread pushes it.
    std::fs::write(&ff, "tcp port 8080\n").unwrap();
    kill(&sensor, "HUP");
    for (ip, f) in ips.iter().zip(&filters) {
        let f = f
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no UPDATEFILTER to {ip} after SIGHUP"));
        let ks: Vec<u32> = f.iter().map(|i| i.k).collect();
        assert!(ks.contains(&8080) && !ks.contains(&53), "{ip}: {f:?}");
    }
    kill(&sensor, "INT");
    let fin = sensor.wait(Duration::from_secs(20));
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    for s in servers {
        s.join().unwrap();
    }
    // Dealt by address, and every capture's final line in the one file.
    for ip in &ips {
        let want = format!("agent {ip}:",);
        let line = fin
            .stderr
            .lines()
            .find(|l| l.contains(&want) && l.contains("connected (active mode"))
            .unwrap_or_else(|| panic!("{want}\n{}", fin.stderr));
        let t = thread_of(*ip, 2);
        assert!(line.contains(&format!("receive thread {t})")), "{line}");
    }
    let lines = sensor.final_lines();
    assert_eq!(lines.len(), usize::from(AGENTS), "{}", fin.stderr);
    for l in &lines {
        assert_eq!(num(l, "packets"), u64::from(RECORDS), "{l:?}");
    }
    assert!(
        fin.stderr.contains("sensor stopped: 4 capture(s)"),
        "{}",
        fin.stderr
    );
}

#[test]
fn dialed_agents_are_dealt_round_robin() {
    dialed_agents(false);
}

/// Dials are dealt round-robin, but the shared port's datagrams go by
/// address (127.0.0.1: thread 1): thread 0's two captures take ports of
/// the range instead, and every record still arrives.
#[test]
fn dialed_agents_on_another_thread_than_their_address_skip_the_shared_port() {
    dialed_agents(true);
}

fn dialed_agents(shared: bool) {
    let ctls: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let targets: Vec<String> = ctls
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let mut args = vec!["--listen", "none", "--udp-ports", "25210-25219"];
    for t in &targets {
        args.extend(["--connect", t.as_str()]);
    }
    args.extend(["--receive-threads", "2"]);
    if shared {
        args.extend(["--udp-shared-port", "25205"]);
    }
    let mut sensor = Sensor::start_env(&args, std::process::Stdio::null(), &[("RUST_LOG", "info")]);
    let mut servers = Vec::new();
    for ctl in &ctls {
        let mut agent = ScriptedAgent::accept(ctl);
        let (_, req) = agent.handshake(1);
        send_records(Ipv4Addr::LOCALHOST, req.portdata);
        servers.push(agent.serve(Stats::default()).0);
    }
    std::thread::sleep(Duration::from_millis(500));
    kill(&sensor, "INT");
    let fin = sensor.wait(Duration::from_secs(20));
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    for s in servers {
        s.join().unwrap();
    }
    // --connect targets 0 and 2 on thread 0, 1 on thread 1.
    for (i, t) in targets.iter().enumerate() {
        let want = format!("passive agent {t} on receive thread {}", i % 2);
        assert!(fin.stderr.contains(&want), "{want}\n{}", fin.stderr);
    }
    if shared {
        let n = fin
            .stderr
            .matches("reach another receive thread; this capture gets a port of --udp-ports")
            .count();
        assert_eq!(n, 2, "{}", fin.stderr);
        assert!(
            fin.stderr
                .contains("shared UDP port 25205: foreign=0 socket_drops=0 fallbacks=2"),
            "{}",
            fin.stderr
        );
    }
    let lines = sensor.final_lines();
    assert_eq!(lines.len(), 3, "{}", fin.stderr);
    // Three agents of one address on two threads: three names, three files.
    let files = sensor.files();
    assert_eq!(files.len(), 3, "{files:?}\n{}", fin.stderr);
    for f in &files {
        assert_eq!(tcpdump_count(f), RECORDS as usize, "{f:?}");
    }
    for l in &lines {
        assert_eq!(num(l, "packets"), u64::from(RECORDS), "{l:?}");
    }
}

#[test]
fn what_needs_one_thread_is_refused_with_exit_78() {
    for extra in [
        &["--count", "5"][..],
        &["-w", "-"],
        &["--tap-per-agent", "xt"],
    ] {
        let mut args = vec!["--listen", "127.0.0.1:0", "--receive-threads", "2"];
        args.extend_from_slice(extra);
        let mut s = Sensor::start(&args);
        let fin = s.wait(Duration::from_secs(10));
        assert_eq!(fin.code, Some(78), "{extra:?}: {}", fin.stderr);
        assert!(
            fin.stderr
                .contains(&format!("{} needs --receive-threads 1", extra[0])),
            "{}",
            fin.stderr
        );
    }
}
