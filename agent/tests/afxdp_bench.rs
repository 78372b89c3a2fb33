//! Not a test but a measurement (run with `cargo test --release -p xrpcapd
//! --test afxdp_bench -- --ignored --nocapture`): trafgen floods 64-byte UDP
//! frames into the captured veth; a worker captures them with AF_PACKET,
//! AF_XDP (generic) and AF_XDP (native), each AF_XDP mode also with
//! `XdpBusyPoll = on` (`-bp`), and sends udpstr to a loopback sink.
//! Reports frames seen, loss and the worker thread's CPU time per frame.
//! `AFXDP_BENCH_SIZE=N` sends N-byte frames instead (MTU 9000 and trafgen's
//! jumbo mode above 1500: multi-buffer chains), `AFXDP_BENCH_FRAMES=N`
//! changes the count.

mod datapath_support;

use std::process::Command;
use std::time::{Duration, Instant};

use datapath_support::*;
use xrpcapd::datapath::{Transport, Worker};
use xrpcapd::settings::{BusyPoll, XdpMode, XdpSettings};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run time (schedstat, ns resolution) and context switches of the
/// thread named `name` in this process.
fn thread_cpu(name: &str) -> Option<(Duration, u64)> {
    for t in std::fs::read_dir("/proc/self/task").ok()? {
        let p = t.ok()?.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let sched = std::fs::read_to_string(p.join("schedstat")).ok()?;
            let ns: u64 = sched.split_whitespace().next()?.parse().ok()?;
            let status = std::fs::read_to_string(p.join("status")).ok()?;
            let ctxsw = status
                .lines()
                .filter(|l| l.contains("voluntary_ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            return Some((Duration::from_nanos(ns), ctxsw));
        }
    }
    None
}

#[test]
#[ignore]
fn bench_afxdp_against_afpacket() {
    let frames = env_num("AFXDP_BENCH_FRAMES", 1_000_000);
    // Frame size with the FCS, as trafgen's 64-byte frames are counted.
    let size = env_num("AFXDP_BENCH_SIZE", 64).clamp(64, 9018) as usize;
    let mtu = if size > 1518 { "9000" } else { "1500" };
    let ns = NetnsPair::new();
    for (n, d) in [(ns.gen.name(), "g0"), (ns.cap.name(), "c0")] {
        Command::new("ip")
            .args(["-n", n, "link", "set", d, "mtu", mtu])
            .status()
            .unwrap();
    }
    let _tx = ns.gen_sender();
    let dst = ns.cap.mac("c0").expect("MAC of c0");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("udp.cfg");
    std::fs::write(
        &cfg,
        format!(
            "{{ eth(da={dst}), ipv4(saddr={GEN_IP}, daddr={CAP_IP}, ttl=64), \
             udp(sport=4000, dport=7001), fill(0x41, {}) }}\n",
            size - 46
        ),
    )
    .unwrap();
    let backends = [
        ("afpacket", None),
        (
            "afxdp-generic",
            Some(XdpSettings {
                mode: XdpMode::Generic,
                ..XdpSettings::default()
            }),
        ),
        (
            "afxdp-native",
            Some(XdpSettings {
                mode: XdpMode::Native,
                ..XdpSettings::default()
            }),
        ),
        // XdpBusyPoll = on (budget 64): the same two with busy polling.
        (
            "afxdp-generic-bp",
            Some(XdpSettings {
                mode: XdpMode::Generic,
                busy_poll: BusyPoll::On { budget: 64 },
                ..XdpSettings::default()
            }),
        ),
        (
            "afxdp-native-bp",
            Some(XdpSettings {
                mode: XdpMode::Native,
                busy_poll: BusyPoll::On { budget: 64 },
                ..XdpSettings::default()
            }),
        ),
    ];
    // AFXDP_BENCH_ONLY=NAME[,NAME]: run only these backends (for profiling);
    // AFXDP_BENCH_ROUNDS=N (default 3); AFXDP_BENCH_RATE=PPS: trafgen paced
    // (e.g. 100000) instead of its top rate.
    let only = std::env::var("AFXDP_BENCH_ONLY").unwrap_or_default();
    let rounds: usize = std::env::var("AFXDP_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let rate: Option<u64> = std::env::var("AFXDP_BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok());
    for round in 0..rounds {
        for (name, b) in &backends {
            if !only.is_empty() && !only.split(',').any(|o| o == *name) {
                continue;
            }
            let sink = udp_sink();
            let mut s = spec(
                "c0",
                compile("udp dst port 7001"),
                Transport::UdpStr {
                    dest: addr(&sink),
                    size: 1472,
                },
            );
            set_source(&mut s, b.clone());
            s.capture.settings_mut().ring_size = 32 << 20;
            s.capture.settings_mut().dry_run = true;
            // The worker on CPU 1, trafgen on CPU 0 (forward.sh's layout).
            s.cpu = Some(1);
            let w = Worker::start(s).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let cpu0 = thread_cpu("dp-c0").unwrap_or_default();
            let t0 = Instant::now();
            let mut gen = Command::new("ip");
            gen.args([
                "netns",
                "exec",
                ns.gen.name(),
                "taskset",
                "-c",
                "0",
                "trafgen",
                "-q",
                "--cpus",
                "1",
            ]);
            if size > 2000 {
                gen.arg("--jumbo-support");
            }
            let st = gen
                .arg("-n")
                .arg(frames.to_string())
                .arg("-i")
                .arg(&cfg)
                .args(["-o", "g0"])
                .args(rate.map(|r| format!("-b{r}pps")))
                .output()
                .expect("trafgen");
            assert!(
                st.status.success(),
                "{}",
                String::from_utf8_lossy(&st.stderr)
            );
            let gen_secs = t0.elapsed().as_secs_f64();
            wait_for(Duration::from_secs(5), || {
                w.counters().received + w.counters().kernel_drops >= frames
            });
            std::thread::sleep(Duration::from_millis(300));
            let (cpu1, sw1) = thread_cpu("dp-c0").unwrap_or_default();
            let (cpu, ctxsw) = (cpu1 - cpu0.0, sw1 - cpu0.1);
            let c = w.counters();
            w.stop();
            eprintln!(
                "round {round} {name:>14}: {size} B, gen {:.2} Mpps, captured {} of {frames} \
                 (kernel drops {}), worker CPU {:.0} ns/frame, {ctxsw} context switches",
                frames as f64 / gen_secs / 1e6,
                c.received,
                c.kernel_drops,
                cpu.as_nanos() as f64 / c.received.max(1) as f64
            );
        }
    }
}
