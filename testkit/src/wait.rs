//! Waits bounded by time: a test never hangs on a condition that never comes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::netns::Netns;
use crate::pcap::{read_packets_so_far, Packet};

const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it returns true; fails after `timeout` with `what`.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `cond` or `limit`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Waits until a TCP socket listens on `port` inside `ns` (checked with `ss`).
pub fn wait_tcp_listen(ns: &Netns, port: u16, timeout: Duration) -> Result<()> {
    let filter = format!("sport = :{port}");
    wait_until(
        timeout,
        &format!("TCP port {port} to listen in netns {}", ns.name()),
        || {
            Ok(!ns
                .run("ss", ["-H", "-l", "-t", "-n", &filter])?
                .trim()
                .is_empty())
        },
    )
}

/// Waits until the capture file at `path` holds at least `count` complete
/// packets (it may not exist yet, or still be being written), then returns
/// the packets read so far.
pub fn wait_for_packets(path: &Path, count: usize, timeout: Duration) -> Result<Vec<Packet>> {
    let mut packets = Vec::new();
    let found = wait_until(timeout, "packets", || {
        // The sensor's NAME.part until it is renamed NAME (see pcap::live).
        let p = crate::pcap::live(path);
        if p.exists() {
            match read_packets_so_far(&p) {
                Ok(v) => packets = v,
                // Renamed between the two looks: the next round reads NAME.
                Err(_) if !p.exists() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(packets.len() >= count)
    });
    if found.is_err() {
        bail!(
            "{} holds {} packets after {timeout:?}, expected at least {count}",
            path.display(),
            packets.len()
        );
    }
    Ok(packets)
}
