//! The operator's view: a periodic line per agent and a final line per
//! capture, as `key=value` fields separated by spaces (also the format of
//! `--stats-file`, one final line per capture).

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use rpcap::msg::Stats;
use rpcap::peer_text::PeerText;

use crate::capture::Capture;

/// `agent=… iface=… pps=… mbps=… packets=… lost=… write_drops=… agent_drops=…`.
pub fn periodic_line(
    peer: &SocketAddr,
    iface: &str,
    pps: f64,
    mbps: f64,
    cap: &Capture,
    stats: Option<&Stats>,
) -> String {
    format!(
        "agent={peer} iface={} pps={pps:.0} mbps={mbps:.2} packets={} lost={} write_drops={} agent_drops={}",
        PeerText::new(iface),
        cap.counters.packets,
        cap.lost(),
        cap.counters.write_drops,
        stats.map_or(0, |s| u64::from(s.ifdrop) + u64::from(s.krnldrop))
    )
}

/// A capture's packets and bytes at its last periodic line, for the rates
/// of the next one.
pub struct Rate {
    packets: u64,
    bytes: u64,
    at: Instant,
}

impl Rate {
    pub fn new(now: Instant) -> Rate {
        Rate {
            packets: 0,
            bytes: 0,
            at: now,
        }
    }

    /// The periodic line of `cap`, with rates since the last call.
    pub fn line(
        &mut self,
        now: Instant,
        peer: &SocketAddr,
        cap: &Capture,
        stats: Option<&Stats>,
    ) -> String {
        let secs = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let c = &cap.counters;
        let line = periodic_line(
            peer,
            &cap.iface,
            (c.packets - self.packets) as f64 / secs,
            (c.bytes - self.bytes) as f64 * 8.0 / secs / 1e6,
            cap,
            stats,
        );
        *self = Rate {
            packets: c.packets,
            bytes: c.bytes,
            at: now,
        };
        line
    }
}

/// Every counter of a finished capture.
pub fn final_line(
    peer: &SocketAddr,
    cap: &Capture,
    stats: Option<&Stats>,
    files: &[PathBuf],
) -> String {
    let c = &cap.counters;
    let u = cap.udpstr();
    let s = stats.copied().unwrap_or_default();
    let mut line = format!(
        "final agent={peer} iface={} packets={} bytes={} lost={} \
         udpstr_datagrams={} seq_gaps={} lost_datagrams={} truncated_records={} duplicates={} reordered={} \
         udpstr_malformed={} rejected={} plain_lost={} plain_dups={} malformed={} foreign={} late={} socket_drops={} \
         write_errors={} write_drops={} disk_floor_drops={} agent_ifrecv={} agent_ifdrop={} agent_krnldrop={} agent_sent={}",
        PeerText::new(&cap.iface),
        c.packets,
        c.bytes,
        cap.lost(),
        u.datagrams,
        u.seq_gaps,
        u.lost_datagrams,
        u.truncated_records,
        u.duplicates,
        u.reordered,
        u.malformed,
        u.rejected + c.plain_rejected,
        c.plain_lost,
        c.plain_dups,
        c.malformed,
        c.foreign,
        c.late,
        c.socket_drops,
        c.write_errors,
        c.write_drops,
        c.disk_floor_drops,
        s.ifrecv,
        s.ifdrop,
        s.krnldrop,
        s.svrcapt,
    );
    if cap.tapped {
        let _ = write!(
            line,
            " tap_frames={} tap_drops={} tap_skipped={}",
            c.tap_frames, c.tap_drops, c.tap_skipped
        );
    }
    let _ = write!(
        line,
        " delay_max_us={} delay_mean_us={}",
        cap.delay.max_us,
        cap.delay.mean_us()
    );
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let _ = write!(
        line,
        " files={}",
        if names.is_empty() {
            "stdout".to_string()
        } else {
            names.join(",")
        }
    );
    line
}
