//! Not a test but a measurement (run with `--ignored --nocapture`, release):
//! replays a pcap of small frames to a loopback receiver with UDP GSO on and
//! off and reports packets/s and the worker's CPU time per packet.

mod datapath_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath_support::*;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use xrpcapd::datapath::{Backend, DatapathOptions, Transport, Worker};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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
            s.backend = Backend::File(p.clone());
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
