//! Not a test but a measurement (run with `cargo test --release -p xrpcapd
//! --test afxdp_bench -- --ignored --nocapture`): trafgen floods 64-byte UDP
//! frames into the captured veth; a worker captures them with AF_PACKET,
//! AF_XDP (generic) and AF_XDP (native) and sends udpstr to a loopback sink.
//! Reports frames seen, loss and the worker thread's CPU time per frame.

mod datapath_support;

use std::process::Command;
use std::time::{Duration, Instant};

use datapath_support::*;
use xrpcapd::datapath::{Backend, Transport, Worker, XdpMode, XdpSpec};

const FRAMES: u64 = 1_000_000;

/// utime + stime of the thread named `name` in this process.
fn thread_cpu(name: &str) -> Option<Duration> {
    let tick = 1e9 / 100.0; // USER_HZ
    for t in std::fs::read_dir("/proc/self/task").ok()? {
        let p = t.ok()?.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(p.join("stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?;
            return Some(Duration::from_nanos((ticks * tick) as u64));
        }
    }
    None
}

fn mac(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-br", "link", "show", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string()
}

#[test]
#[ignore]
fn bench_afxdp_against_afpacket() {
    let ns = NetnsPair::new();
    for (n, d) in [(&ns.gen, "g0"), (&ns.cap, "c0")] {
        Command::new("ip")
            .args(["-n", n, "link", "set", d, "mtu", "1500"])
            .status()
            .unwrap();
    }
    let _tx = ns.gen_sender();
    let dst = mac(&ns.cap, "c0");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("udp.cfg");
    std::fs::write(
        &cfg,
        format!(
            "{{ eth(da={dst}), ipv4(saddr={GEN_IP}, daddr={CAP_IP}, ttl=64), \
             udp(sport=4000, dport=7001), fill(0x41, 18) }}\n"
        ),
    )
    .unwrap();
    let backends = [
        ("afpacket", Backend::AfPacket),
        (
            "afxdp-generic",
            Backend::AfXdp(XdpSpec {
                mode: XdpMode::Generic,
                ..XdpSpec::default()
            }),
        ),
        (
            "afxdp-native",
            Backend::AfXdp(XdpSpec {
                mode: XdpMode::Native,
                ..XdpSpec::default()
            }),
        ),
    ];
    for round in 0..3 {
        for (name, b) in &backends {
            let sink = udp_sink();
            let mut s = spec(
                "c0",
                compile("udp dst port 7001"),
                Transport::UdpStr {
                    dest: addr(&sink),
                    size: 1472,
                },
            );
            s.backend = b.clone();
            s.ring_bytes = 32 << 20;
            s.dry_run = true;
            let w = Worker::start(s).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let cpu0 = thread_cpu("dp-c0").unwrap_or_default();
            let t0 = Instant::now();
            let st = Command::new("ip")
                .args([
                    "netns", "exec", &ns.gen, "trafgen", "-q", "--cpus", "1", "-n",
                ])
                .arg(FRAMES.to_string())
                .arg("-i")
                .arg(&cfg)
                .args(["-o", "g0"])
                .output()
                .expect("trafgen");
            assert!(
                st.status.success(),
                "{}",
                String::from_utf8_lossy(&st.stderr)
            );
            let gen_secs = t0.elapsed().as_secs_f64();
            wait_for(Duration::from_secs(5), || {
                w.counters().received + w.counters().kernel_drops >= FRAMES
            });
            std::thread::sleep(Duration::from_millis(300));
            let cpu = thread_cpu("dp-c0").unwrap_or_default() - cpu0;
            let c = w.counters();
            w.stop();
            eprintln!(
                "round {round} {name:>14}: gen {:.2} Mpps, captured {} of {FRAMES} (kernel drops {}), \
                 worker CPU {:.0} ns/frame",
                FRAMES as f64 / gen_secs / 1e6,
                c.received,
                c.kernel_drops,
                cpu.as_nanos() as f64 / c.received.max(1) as f64
            );
        }
    }
}
