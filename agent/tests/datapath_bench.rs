//! Not a test but a measurement (run with `--ignored --nocapture`, release):
//! replays a pcap of small frames to a loopback receiver with UDP GSO on and
//! off and reports packets/s and the worker's CPU time per packet.

mod datapath_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath_support::*;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use xrpcapd::datapath::{DatapathOptions, Transport, Worker};
use xrpcapd::settings::Backend;

fn thread_cpu() -> Duration {
    sys::clock::now(sys::clock::CLOCK_PROCESS_CPUTIME_ID)
}

#[test]
#[ignore]
fn bench_gso_against_sendmmsg() {
    const N: usize = 500_000;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.pcap");
    {
        let f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
        let mut w = PcapWriter::new(f).unwrap();
        let frame = vec![0x5a; 64];
        for i in 0..N {
            let ts = Duration::from_micros(i as u64);
            w.write_packet(&PcapPacket::new(ts, 64, &frame)).unwrap();
        }
    }
    for round in 0..2 {
        for gso in [true, false] {
            let sink = udp_sink();
            let dest = addr(&sink);
            let stop = Arc::new(AtomicBool::new(false));
            let got = Arc::new(AtomicU64::new(0));
            let rx = {
                let (stop, got) = (stop.clone(), got.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        if sink.recv(&mut buf).is_ok() {
                            got.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            };
            let mut s = spec("file", accept_all(), Transport::UdpStr { dest, size: 1472 });
            s.capture.backend = Backend::File(p.clone());
            let cpu0 = thread_cpu();
            let t0 = Instant::now();
            let w = Worker::start_with(
                s,
                DatapathOptions {
                    gso,
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(wait_for(Duration::from_secs(60), || w.is_finished()));
            let el = t0.elapsed();
            let c = w.counters();
            w.stop();
            let cpu = thread_cpu() - cpu0;
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::Relaxed);
            rx.join().unwrap();
            eprintln!(
                "round {round} gso={gso} (used {}): {:.2} Mpps, {} datagrams sent, {} received, \
                 process CPU {:.0} ns/packet (sender + receiver)",
                c.gso,
                N as f64 / el.as_secs_f64() / 1e6,
                c.datagrams_sent,
                got.load(Ordering::Relaxed),
                cpu.as_nanos() as f64 / N as f64
            );
        }
    }
}

/// Live capture at top speed: trafgen floods c0 with 64-byte UDP frames (one
/// core); the worker (pinned to the other core) forwards udpstr to a loopback
/// sink. Reports what the source saw, ring drops and the worker's CPU.
#[test]
#[ignore]
fn bench_afpacket_flood() {
    const N: u64 = 2_000_000;
    let ns = NetnsPair::new();
    ns.cap.switch_thread();
    let sink = udp_sink();
    let dest = addr(&sink);
    let stop = Arc::new(AtomicBool::new(false));
    let rx = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if sink.recv(&mut buf).is_ok() {
                    n += 1;
                }
            }
            n
        })
    };
    let mut s = spec(
        "c0",
        compile("udp dst port 7001"),
        Transport::UdpStr { dest, size: 1472 },
    );
    s.cpu = Some(1);
    let w = Worker::start(s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("f.cfg");
    // Broadcast Ethernet / IPv4 / UDP to port 7001, 64 bytes with padding.
    std::fs::write(
        &conf,
        "{ 0xff,0xff,0xff,0xff,0xff,0xff, 0x02,0,0,0,0,1, 0x08,0x00, \
         0x45,0,0,46, 0,1,0x40,0, 64,17,0,0, 10,201,1,1, 10,201,1,2, \
         0x15,0xb3, 0x1b,0x59, 0,26, 0,0, fill(0x5a, 18) }\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let out = std::process::Command::new("taskset")
        .args([
            "-c",
            "0",
            "ip",
            "netns",
            "exec",
            ns.gen.name(),
            "trafgen",
            "-o",
            "g0",
            "-i",
        ])
        .arg(&conf)
        .args(["-n", &N.to_string(), "-P", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gen_time = t0.elapsed();
    assert!(wait_for(Duration::from_secs(5), || {
        let c = w.counters();
        c.received + c.kernel_drops >= N
    }));
    std::thread::sleep(Duration::from_millis(200));
    let c = w.counters();
    let worker_cpu = thread_ticks("dp-c0");
    let st = w.stop();
    stop.store(true, Ordering::Relaxed);
    let got = rx.join().unwrap();
    eprintln!(
        "trafgen {N} frames in {:.2}s ({:.2} Mpps); worker: received {} kernel_drops {} \
         framed {} send_dropped {} datagrams {} (gso {}); sink got {got} datagrams; worker CPU {:.0} ns/frame; STATS {st:?}",
        gen_time.as_secs_f64(),
        N as f64 / gen_time.as_secs_f64() / 1e6,
        c.received,
        c.kernel_drops,
        c.framed,
        c.send_dropped,
        c.datagrams_sent,
        c.gso,
        worker_cpu.as_nanos() as f64 / N as f64
    );
    assert_eq!(
        c.received + c.kernel_drops,
        N,
        "every frame seen or counted as a ring drop"
    );
}

/// utime + stime of this process's thread named `comm`.
fn thread_ticks(comm: &str) -> Duration {
    let hz = sys::clock::ticks_per_second();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let c = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if c.trim() == comm {
            let st = std::fs::read_to_string(t.path().join("stat")).unwrap();
            let rest = &st[st.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
            return Duration::from_millis(ticks * 1000 / hz);
        }
    }
    Duration::ZERO
}
