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
