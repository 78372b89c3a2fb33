//! Captures whose agent session ended, on their way to their final line:
//! the UDP port stays open for [`LINGER`] to count late datagrams (instead
//! of the kernel refusing them unseen), and the final line waits (up to
//! [`WRITE_WAIT`]) for the writer to finish the capture's file.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Interest, Registry};
use rpcap::addr::canonical;
use rpcap::msg::Stats;

use crate::capture::Capture;
use crate::data::UdpPort;
use crate::data_channel::UdpPorts;
use crate::metrics;
use crate::summary;
use crate::token::Owner;
use sys::mmsg::RecvBatch;

/// How long a closed capture's final line waits for the writer.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// How long a closed capture's UDP port stays open.
const LINGER: Duration = Duration::from_secs(2);

/// What an agent leaves behind when its session ends during a capture.
pub struct Closed {
    pub peer: SocketAddr,
    pub cap: Capture,
    /// The agent's last STATS reply.
    pub stats: Option<Stats>,
    /// The capture's UDP port, to linger (None for TCP, or when the sensor stops).
    pub port: Option<UdpPort>,
}

struct Closing {
    peer: SocketAddr,
    /// The data port, open until the instant.
    linger: Option<(UdpPort, Instant)>,
    cap: Capture,
    stats: Option<Stats>,
    files: Vec<PathBuf>,
    /// Final line now even if the writer is not done.
    deadline: Instant,
}

/// The closed captures; capture `i`'s port is registered as [`Owner::Linger`]`(i)`.
#[derive(Default)]
pub struct Linger {
    slots: Vec<Option<Closing>>,
    /// Final lines printed so far, for `--stats-file`.
    lines: Vec<String>,
    /// Captures whose final line was printed since the last
    /// [`Linger::take_settled`]: their final counters, for the metrics.
    settled: Vec<(metrics::Key, metrics::CaptureValues)>,
}

impl Linger {
    /// Hands the capture's last records to the writer and keeps its port.
    pub fn add(&mut self, c: Closed, ports: &mut UdpPorts, registry: &Registry, now: Instant) {
        let Closed {
            peer,
            mut cap,
            stats,
            port,
        } = c;
        let files = cap.finish();
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .unwrap_or_else(|| {
                self.slots.push(None);
                self.slots.len() - 1
            });
        let linger = port.and_then(|mut p| {
            match registry.reregister(&mut p.sock, Owner::Linger(slot).token(), Interest::READABLE)
            {
                Ok(()) => Some((p, now + LINGER)),
                Err(e) => {
                    log::warn!("agent {peer}: cannot keep port {}: {e}", p.port);
                    ports.release(p, registry);
                    None
                }
            }
        });
        self.slots[slot] = Some(Closing {
            peer,
            linger,
            cap,
            stats,
            files,
            deadline: now + LINGER + WRITE_WAIT,
        });
    }

    /// Datagrams for closed capture `slot`: counted (late, or foreign when
    /// not from the agent) and dropped.
    pub fn on_readable(&mut self, slot: usize, batch: &mut RecvBatch) {
        let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some((p, _)) = c.linger.as_mut() else {
            return;
        };
        let agent_ip = canonical(c.peer.ip());
        loop {
            let n = match batch.recv(&p.sock) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            for i in 0..n {
                let (_, m) = batch.get(i);
                c.cap.counters.socket_drops += p.drops(m.overflow);
                if m.from.map(|f| canonical(f.ip())) == Some(agent_ip) {
                    c.cap.counters.late += m.count() as u64;
                } else {
                    c.cap.counters.foreign += m.count() as u64;
                }
            }
        }
    }

    /// Prints the final line of every closed capture whose records are all
    /// written (or whose wait for the writer is over). When `stopping`, ports
    /// linger no longer.
    pub fn finish(
        &mut self,
        now: Instant,
        stopping: bool,
        ports: &mut UdpPorts,
        registry: &Registry,
    ) {
        for slot in 0..self.slots.len() {
            let Some(c) = self.slots[slot].as_mut() else {
                continue;
            };
            if let Some((_, until)) = &c.linger {
                if now < *until && !stopping {
                    continue;
                }
                if let Some((p, _)) = c.linger.take() {
                    ports.release(p, registry);
                }
            }
            if !c.cap.is_written() && now < c.deadline {
                continue;
            }
            let Some(mut c) = self.slots[slot].take() else {
                continue;
            };
            if !c.cap.is_written() {
                log::warn!(
                    "agent {}: the writer has not finished this capture's file within {WRITE_WAIT:?}",
                    c.peer
                );
            }
            c.cap.settle();
            let line = summary::final_line(&c.peer, &c.cap, c.stats.as_ref(), &c.files);
            eprintln!("{line}");
            self.lines.push(line);
            self.settled.push((
                (metrics::agent_label(&c.peer), c.cap.iface.clone()),
                metrics::CaptureValues::of(&c.cap, c.stats.as_ref()),
            ));
        }
    }

    /// Waits for the writer no later than `limit` (the sensor stops).
    pub fn hurry(&mut self, limit: Instant) {
        for c in self.slots.iter_mut().flatten() {
            c.deadline = c.deadline.min(limit);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// The counters of the captures closing, for the metrics.
    pub fn metrics(&self) -> impl Iterator<Item = (metrics::Key, metrics::CaptureValues)> + '_ {
        self.slots.iter().flatten().map(|c| {
            (
                (metrics::agent_label(&c.peer), c.cap.iface.clone()),
                metrics::CaptureValues::of(&c.cap, c.stats.as_ref()),
            )
        })
    }

    /// The final counters of the captures settled since the last call.
    pub fn take_settled(&mut self) -> Vec<(metrics::Key, metrics::CaptureValues)> {
        std::mem::take(&mut self.settled)
    }

    /// The final lines printed so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}
