//! Throughput figures, not a pass/fail test (ignored by default):
//! `cargo test --release -p xrpcap-sensor --test throughput -- --ignored --nocapture`.
//! AGENTS scripted agents each blast pre-framed udpstr datagrams of 64-byte
//! records at the sensor for SECS seconds; the sensor's final lines give what it
//! wrote, lost and dropped at the socket.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rpcap::msg::Stats;
use rpcap::PktHdr;

#[test]
#[ignore]
fn throughput_report() {
    let agents: usize = std::env::var("AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let secs: f64 = std::env::var("SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let mut sensor = Sensor::start(&[
        "--listen",
        "127.0.0.1:24951",
        "--udp-ports",
        "24960-25999",
        "--duration",
        &(secs + 2.0).to_string(),
        "--stats-interval",
        "1",
    ]);
    let per_dgram = 1472 / (20 + 64);
    let handles: Vec<_> = (0..agents)
        .map(|k| {
            std::thread::spawn(move || {
                let mut agent = ScriptedAgent::connect(24951);
                let (_, req) = agent.handshake(1);
                let (server, _) = agent.serve(Stats::default());
                // Framed up front so that sending is all the agent does.
                let recs: Vec<Record> = (1..=n)
                    .map(|i| Record {
                        hdr: PktHdr {
                            ts_sec: 1_700_000_000,
                            ts_usec: i % 1_000_000,
                            caplen: 64,
                            len: 64,
                            npkt: i,
                        },
                        data: vec![k as u8; 64],
                    })
                    .collect();
                let (dgrams, _) = frame(&recs, 1472);
                let tx = data_socket(req.portdata);
                let start = Instant::now();
                let mut sent = 0usize;
                for d in &dgrams {
                    if start.elapsed().as_secs_f64() > secs {
                        break;
                    }
                    let _ = tx.send(d);
                    sent += 1;
                }
                let offered = if sent == dgrams.len() {
                    recs.len()
                } else {
                    sent * per_dgram
                };
                (offered, start.elapsed(), server)
            })
        })
        .collect();
    let mut sent_records = 0;
    let mut servers = Vec::new();
    let mut elapsed = Duration::ZERO;
    for h in handles {
        let (n, e, s) = h.join().unwrap();
        sent_records += n;
        elapsed = elapsed.max(e);
        servers.push(s);
    }
    let fin = sensor.wait(Duration::from_secs(60));
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    let lines = sensor.final_lines();
    let written: u64 = lines.iter().map(|l| num(l, "packets")).sum();
    let lost: u64 = lines.iter().map(|l| num(l, "lost")).sum();
    let drops: u64 = lines.iter().map(|l| num(l, "socket_drops")).sum();
    println!(
        "agents={agents} sent≈{sent_records} records in {:.2}s ({:.0} rec/s offered); written={written} ({:.0} rec/s) lost={lost} socket_drops={drops} datagrams",
        elapsed.as_secs_f64(),
        sent_records as f64 / elapsed.as_secs_f64(),
        written as f64 / elapsed.as_secs_f64(),
    );
    for s in servers {
        let _ = s.join();
    }
}

/// A control connection to the sensor from `ip` (a loopback address).
fn connect_from(ip: std::net::Ipv4Addr, port: u16) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&std::net::SocketAddr::from((ip, 0)).into()).unwrap();
        match s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()) {
            Ok(()) => return s.into(),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot connect from {ip} to the sensor on {port}: {e}"),
        }
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime+stime (s) and peak RSS (KiB) of a process.
fn cpu_and_hwm(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let tick = 100.0; // sysconf(_SC_CLK_TCK) on Linux
    let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / tick;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

/// The issue 3 goal: AGENTS (1000) concurrent scripted agents, SENDERS (2)
/// threads framing 64-byte records with `rpcap::udpstr::Framer` for all of
/// their captures, round robin, for SECS seconds at full speed (or RATE
/// records/s in total). Reports records written per second, loss, the
/// sensor's CPU time and peak RSS. Run with `benches/sensor.sh`.
#[test]
#[ignore]
fn thousand_agents_report() {
    use rpcap::udpstr::{Batch, Framer};
    let agents: usize = env_or("AGENTS", 1000);
    let senders: usize = env_or("SENDERS", 2);
    let secs: f64 = env_or("SECS", 5.0);
    let rate: f64 = env_or("RATE", 0.0);
    // SHARED=1: every capture on one UDP port (--udp-shared-port), each
    // agent on its own loopback address (127.1.x.y), control and data.
    let shared = env_or("SHARED", 0u8) == 1;
    let agent_ip = move |i: usize| {
        if shared {
            std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8)
        } else {
            std::net::Ipv4Addr::LOCALHOST
        }
    };
    let mut args = vec![
        "--listen",
        "127.0.0.1:26001",
        "--udp-ports",
        "26010-27999",
        "--stats-interval",
        "5",
        "--summary-interval",
        "3600",
    ];
    if shared {
        args.extend(["--udp-shared-port", "26005"]);
    }
    // Warnings only: nobody reads the sensor's stderr pipe until the end.
    let mut sensor = Sensor::start_env(&args, std::process::Stdio::null(), &[("RUST_LOG", "warn")]);
    // Control connections: one thread each for the handshake, then one
    // serving STATS per agent.
    let t_setup = Instant::now();
    let (ports, servers) = capturing_agents(agents, move |i| {
        if shared {
            ScriptedAgent::from_stream(connect_from(agent_ip(i), 26001))
        } else {
            ScriptedAgent::connect(26001)
        }
    });
    println!(
        "{agents} agents set up in {:.2}s",
        t_setup.elapsed().as_secs_f64()
    );
    let (cpu0, _) = cpu_and_hwm(sensor.pid());
    let start = Instant::now();
    let chunks: Vec<Vec<(u16, std::net::Ipv4Addr)>> = (0..senders)
        .map(|s| {
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| (*p, agent_ip(i)))
                .skip(s)
                .step_by(senders)
                .collect()
        })
        .collect();
    let per_sender_rate = rate / senders as f64;
    let send_threads: Vec<_> = chunks
        .into_iter()
        .map(|my_ports| {
            std::thread::spawn(move || {
                // One socket per agent address (shared port), else one in all.
                let socks: Vec<std::net::UdpSocket> = if shared {
                    my_ports
                        .iter()
                        .map(|(_, ip)| std::net::UdpSocket::bind((*ip, 0)).unwrap())
                        .collect()
                } else {
                    vec![std::net::UdpSocket::bind("127.0.0.1:0").unwrap()]
                };
                let sock_of = |k: usize| &socks[if shared { k } else { 0 }];
                let mut framers: Vec<(Framer, Batch, u32)> = my_ports
                    .iter()
                    .map(|_| (Framer::new(1472).unwrap(), Batch::new(1472, 4), 0))
                    .collect();
                let data = [0x5Au8; 64];
                let mut records = 0u64;
                let t0 = Instant::now();
                'outer: loop {
                    for (k, (framer, batch, npkt)) in framers.iter_mut().enumerate() {
                        // One datagram's worth of records per capture per round.
                        for _ in 0..17 {
                            *npkt += 1;
                            let h = PktHdr {
                                ts_sec: 1_700_000_000,
                                ts_usec: *npkt % 1_000_000,
                                caplen: 64,
                                len: 64,
                                npkt: *npkt,
                            };
                            framer.push(batch, &h, &data).unwrap();
                        }
                        for d in batch.datagrams() {
                            let _ = sock_of(k).send_to(d, ("127.0.0.1", my_ports[k].0));
                        }
                        batch.consume();
                        records += 17;
                    }
                    let el = t0.elapsed().as_secs_f64();
                    if el >= secs {
                        break 'outer;
                    }
                    if per_sender_rate > 0.0 {
                        let ahead = records as f64 / per_sender_rate - el;
                        if ahead > 0.0 {
                            std::thread::sleep(Duration::from_secs_f64(ahead));
                        }
                    }
                }
                // The partial datagrams, so every record offered can arrive.
                for (k, (framer, batch, _)) in framers.iter_mut().enumerate() {
                    if framer.flush(batch) {
                        for d in batch.datagrams() {
                            let _ = sock_of(k).send_to(d, ("127.0.0.1", my_ports[k].0));
                        }
                        batch.consume();
                    }
                }
                records
            })
        })
        .collect();
    let offered: u64 = send_threads.into_iter().map(|h| h.join().unwrap()).sum();
    let send_time = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let (cpu1, hwm) = cpu_and_hwm(sensor.pid());
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &sensor.pid().to_string()])
        .status();
    let fin = sensor.wait(Duration::from_secs(120));
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    for s in servers {
        let _ = s.join();
    }
    let lines = sensor.final_lines();
    let sum = |k: &str| lines.iter().map(|l| num(l, k)).sum::<u64>();
    let written = sum("packets");
    // The shared port's own line: its socket drops are no capture's.
    let shared_drops: u64 = fin
        .stderr
        .lines()
        .find(|l| l.starts_with("shared UDP port "))
        .and_then(|l| l.split("socket_drops=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpu = cpu1 - cpu0;
    println!(
        "shared_port={shared} agents={agents} captures={} senders={senders} offered={offered} records in {send_time:.2}s ({:.0} rec/s) \
         written={written} ({:.0} rec/s) not_written={} ({:.3} %) lost={} socket_drops={} datagrams (shared port: {shared_drops}) write_drops={} \
         sensor_cpu={cpu:.2}s ({:.0} ns/record, {:.0} % of one core) peak_rss={:.1} MiB ({:.1} KiB/agent)",
        lines.len(),
        offered as f64 / send_time,
        written as f64 / send_time,
        offered - written.min(offered),
        (offered - written.min(offered)) as f64 * 100.0 / offered.max(1) as f64,
        sum("lost"),
        sum("socket_drops"),
        sum("write_drops"),
        cpu * 1e9 / written.max(1) as f64,
        cpu * 100.0 / (send_time + 1.0),
        hwm as f64 / 1024.0,
        hwm as f64 / agents.max(1) as f64,
    );
}
