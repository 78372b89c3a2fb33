//! Receive-path scaling (`--receive-threads`, issue 18 item 6): not a
//! pass/fail test (ignored by default), run by `benches/sensor-drain.sh`.
//!
//! AGENTS scripted agents on their own loopback addresses (127.1.x.y, so
//! the kernel deals them over the receive threads by address) start one
//! capture each; the sensor is then stopped (SIGSTOP) and DGRAMS udpstr
//! datagrams of RECORDS 64-byte records per agent are queued in its
//! sockets' backlogs. Nothing else runs when it is continued (SIGCONT):
//! it drains the backlogs alone. Reported per run: datagrams/s over the
//! drain (SIGCONT to every backlog empty, polled in /proc/net/udp every
//! 5 ms), each receive thread's CPU time (schedstat) and CPU-seconds per
//! million datagrams, the writer thread's, socket and write drops. The
//! runs alternate 1 and THREADS receive threads, RUNS pairs, side by side.
//! GSO=1 queues each agent's datagrams as UDP GSO sends (as the agent
//! sends them), which the sensor's UDP_GRO sockets take whole.

mod common;
mod loopback;

use std::collections::HashSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use loopback::{connect_from, thread_of};
use rpcap::PktHdr;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds on CPU and waiting for one (runnable, another task on
/// the core) of each thread of `pid`, by name (schedstat).
fn thread_cpu(pid: u32) -> Vec<(u32, String, (u64, u64))> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let tid: u32 = e.file_name().to_string_lossy().parse().unwrap();
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
        let mut f = stat.split_whitespace().map(|x| x.parse().unwrap_or(0));
        let ns = (f.next().unwrap_or(0), f.next().unwrap_or(0));
        v.push((tid, comm.trim().to_string(), ns));
    }
    v.sort();
    v
}

/// Bytes queued in the receive queues of UDP sockets on `ports`.
fn queued(ports: &HashSet<u16>) -> u64 {
    let text = std::fs::read_to_string("/proc/net/udp").unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            if !ports.contains(&port) {
                return None;
            }
            u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()
        })
        .sum()
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

struct Run {
    threads: usize,
    dgrams: u64,
    drain_s: f64,
    /// CPU seconds of each receive thread, and its share of the datagrams.
    rx: Vec<(f64, u64)>,
    /// Seconds the receive threads waited for a core (all together).
    rx_wait: f64,
    writer_s: f64,
    socket_drops: u64,
    write_drops: u64,
    records_written: u64,
}

fn one_run(
    threads: usize,
    agents: usize,
    per_agent: usize,
    records: usize,
    shared: bool,
    gso: bool,
) -> Run {
    let agent_ip = |i: usize| Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
    let threads_arg = threads.to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:26101",
        "--udp-ports",
        "26110-27999",
        "--stats-interval",
        "3600",
        "--stats-timeout",
        "3600",
        "--summary-interval",
        "3600",
        "--receive-threads",
        &threads_arg,
    ];
    if shared {
        args.extend(["--udp-shared-port", "26105"]);
    }
    let mut sensor = Sensor::start_env(&args, std::process::Stdio::null(), &[("RUST_LOG", "warn")]);
    let (ports, servers) = capturing_agents(agents, move |i| {
        ScriptedAgent::from_stream(connect_from(agent_ip(i), 26101))
    });
    let pid = sensor.pid();
    signal(pid, "-STOP");
    // Frame and queue every datagram while the sensor sleeps.
    let data = [0x5Au8; 64];
    let mut dgrams = 0u64;
    for (i, port) in ports.iter().enumerate() {
        let sock = UdpSocket::bind((agent_ip(i), 0)).unwrap();
        let framed = agent_datagrams(per_agent, records, &data);
        dgrams += framed.len() as u64;
        if gso {
            sock.connect(("127.0.0.1", *port)).unwrap();
            queue_gso(&sock, &framed);
        } else {
            for d in &framed {
                sock.send_to(d, ("127.0.0.1", *port)).unwrap();
            }
        }
    }
    let port_set: HashSet<u16> = ports.iter().copied().collect();
    let backlog = queued(&port_set);
    // PERF=PREFIX: `perf record -a -g` over the drain, into PREFIX-Nt.data
    // (every CPU: what else ran while the receive threads waited).
    let perf = std::env::var("PERF").ok().map(|prefix| {
        let child = std::process::Command::new("perf")
            .args(["record", "-a", "-g", "-q", "-o"])
            .arg(format!("{prefix}-{threads}t.data"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("perf (apt install linux-perf)");
        std::thread::sleep(Duration::from_millis(500));
        child
    });
    // PIN=1: receive thread i on CPU i (taskset), the writer left free.
    if env_or("PIN", 0u8) == 1 {
        for (tid, comm, _) in thread_cpu(pid) {
            let cpu = if tid == pid {
                Some(0)
            } else {
                comm.strip_prefix("shard-")
                    .and_then(|i| i.parse::<usize>().ok())
            };
            if let Some(cpu) = cpu {
                let st = std::process::Command::new("taskset")
                    .args(["-pc", &cpu.to_string(), &tid.to_string()])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success(), "taskset");
            }
        }
    }
    let before = thread_cpu(pid);
    let t0 = Instant::now();
    signal(pid, "-CONT");
    // Every 5 ms (one read of /proc/net/udp costs ~75 µs here).
    while queued(&port_set) > 0 && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let drain_s = t0.elapsed().as_secs_f64();
    let after = thread_cpu(pid);
    if let Some(mut p) = perf {
        signal(p.id(), "-INT");
        let _ = p.wait();
    }
    signal(pid, "-TERM");
    let fin = sensor.wait(Duration::from_secs(120));
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    for s in servers {
        let _ = s.join();
    }
    let delta = |name: &dyn Fn(u32, &str) -> bool, wait: bool| -> f64 {
        after
            .iter()
            .filter(|(tid, comm, _)| name(*tid, comm))
            .map(|(tid, _, ns)| {
                let b = before
                    .iter()
                    .find(|(t, _, _)| t == tid)
                    .map_or((0, 0), |x| x.2);
                let (now, then) = if wait { (ns.1, b.1) } else { (ns.0, b.0) };
                (now - then) as f64 / 1e9
            })
            .sum()
    };
    let cpu_of = |name: &dyn Fn(u32, &str) -> bool| delta(name, false);
    let is_rx = |tid: u32, comm: &str| tid == pid || comm.starts_with("shard-");
    // Receive thread i: the main thread (0) and shard-i; its datagrams are
    // those of the agents whose address is i mod N.
    let per_agent_dgrams = dgrams / agents as u64;
    let rx = (0..threads)
        .map(|i| {
            let cpu = if i == 0 {
                cpu_of(&|tid, _| tid == pid)
            } else {
                let n = format!("shard-{i}");
                cpu_of(&|_, comm| comm == n)
            };
            let mine = (0..agents)
                .filter(|&a| thread_of(agent_ip(a), threads) == i)
                .count() as u64;
            (cpu, mine * per_agent_dgrams)
        })
        .collect();
    let lines = sensor.final_lines();
    let sum = |k: &str| lines.iter().map(|l| num(l, k)).sum::<u64>();
    println!(
        "  (backlog before SIGCONT: {:.1} MiB)",
        backlog as f64 / (1 << 20) as f64
    );
    Run {
        threads,
        dgrams,
        drain_s,
        rx,
        rx_wait: delta(&is_rx, true),
        writer_s: cpu_of(&|_, comm| comm == "writer"),
        socket_drops: sum("socket_drops"),
        write_drops: sum("write_drops"),
        records_written: sum("packets"),
    }
}

fn report(r: &Run) -> f64 {
    let rate = r.dgrams as f64 / r.drain_s;
    let per_thread: Vec<String> =
        r.rx.iter()
            .enumerate()
            .map(|(i, (cpu, n))| {
                format!(
                    "rx{i} {cpu:.3} s = {:.2} CPU-s/M dgrams",
                    cpu * 1e6 / (*n).max(1) as f64
                )
            })
            .collect();
    let rx_total: f64 = r.rx.iter().map(|x| x.0).sum();
    println!(
        "threads={} datagrams={} drained in {:.3} s = {:.0} dgrams/s; receive CPU {:.3} s ({:.2} CPU-s/M dgrams; {}), waiting for a core {:.3} s; writer {:.3} s; socket_drops={} write_drops={} records_written={}",
        r.threads,
        r.dgrams,
        r.drain_s,
        rate,
        rx_total,
        rx_total * 1e6 / r.dgrams as f64,
        per_thread.join(", "),
        r.rx_wait,
        r.writer_s,
        r.socket_drops,
        r.write_drops,
        r.records_written,
    );
    rate
}

/// An agent's `per_agent` udpstr datagrams of `records` records of `data`
/// each (every datagram flushed after its records: all one size).
fn agent_datagrams(per_agent: usize, records: usize, data: &[u8]) -> Vec<Vec<u8>> {
    use rpcap::udpstr::{Batch, Framer};
    let mut framer = Framer::new(1472).unwrap();
    let mut batch = Batch::new(1472, 4);
    let mut dgrams = Vec::with_capacity(per_agent);
    let mut npkt = 0u32;
    for _ in 0..per_agent {
        for _ in 0..records {
            npkt += 1;
            let h = PktHdr {
                ts_sec: 1_700_000_000,
                ts_usec: npkt % 1_000_000,
                caplen: data.len() as u32,
                len: data.len() as u32,
                npkt,
            };
            framer.push(&mut batch, &h, data).unwrap();
        }
        framer.flush(&mut batch);
        dgrams.extend(batch.datagrams().map(<[u8]>::to_vec));
        batch.consume();
    }
    dgrams
}

/// GSO=1: queues `dgrams` (one size) as UDP GSO sends of up to 44
/// datagrams, as the agent sends them; the sensor's UDP_GRO socket then
/// takes each send as one buffer, as it takes a NIC's GRO-merged datagrams.
fn queue_gso(sock: &UdpSocket, dgrams: &[Vec<u8>]) {
    let seg = dgrams[0].len();
    assert!(dgrams.iter().all(|d| d.len() == seg), "one size per agent");
    let run = (65507 / seg).min(64);
    let mut out = sys::mmsg::SendBatch::new(run);
    for chunk in dgrams.chunks(run) {
        let mut l = out.load(chunk.len(), |i| &chunk[i]);
        l.group(&[0, chunk.len()], |_| seg as u16);
        assert_eq!(l.send(sock, 0..1, 0).unwrap(), 1, "GSO send");
    }
}

#[test]
#[ignore]
fn drain_report() {
    let threads: usize = env_or("THREADS", 2);
    let agents: usize = env_or("AGENTS", 64);
    let per_agent: usize = env_or("DGRAMS", 4000);
    let records: usize = env_or("RECORDS", 17);
    let runs: usize = env_or("RUNS", 2);
    let shared = env_or("SHARED", 0u8) == 1;
    let gso = env_or("GSO", 0u8) == 1;
    println!(
        "agents={agents} datagrams/agent={per_agent} records/datagram={records} shared_port={shared} gso={gso}"
    );
    let mut speedups = Vec::new();
    for _ in 0..runs {
        let one = report(&one_run(1, agents, per_agent, records, shared, gso));
        let many = report(&one_run(threads, agents, per_agent, records, shared, gso));
        println!("speedup {threads} vs 1 thread: {:.2}x", many / one);
        speedups.push(many / one);
    }
    println!("speedups: {speedups:.2?}");
}
