//! The operator's view of a capture in the log, as `key=value` fields (the
//! sensor's summary format): a periodic line with rates and the drops since
//! the last line, and a final line with every counter. Both are made from
//! [`Counters`] snapshots the control thread reads from the worker's
//! atomics ([`Worker::counters`](super::Worker::counters)): nothing here
//! runs on the packet path.

use std::time::{Duration, Instant};

use super::Counters;

/// A capture's counters at its last periodic line, for the rates and drops
/// of the next one.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    last: Counters,
    at: Instant,
}

/// Rates and drops since the previous snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Frames delivered by the source per second (after the filter).
    pub pps: f64,
    /// Captured Mbit/s sent on to the sensor (framed bytes).
    pub mbps: f64,
    /// Frames the ring (kernel) had no room for, since the last snapshot.
    pub ring_drops: u64,
    /// Framed packets lost in sending (socket buffer full, slow TCP peer).
    pub send_drops: u64,
    /// Datagrams the data socket refused (ENOBUFS/EAGAIN).
    pub datagram_drops: u64,
}

impl Rates {
    /// Every drop since the last snapshot.
    pub fn drops(&self) -> u64 {
        self.ring_drops + self.send_drops
    }
}

impl Meter {
    /// A meter whose first interval starts at `now` with the counters `c`.
    pub fn new(c: Counters, now: Instant) -> Meter {
        Meter { last: c, at: now }
    }

    /// How long since the last snapshot.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.at)
    }

    /// The rates since the last snapshot; `c` becomes the last.
    pub fn advance(&mut self, c: Counters, now: Instant) -> Rates {
        let secs = self.age(now).as_secs_f64().max(1e-3);
        let d = |new: u64, old: u64| new.saturating_sub(old);
        // Counters that went back belong to a new capture: from zero.
        let zero = Counters::default();
        let l = if c.received < self.last.received {
            &zero
        } else {
            &self.last
        };
        let rates = Rates {
            pps: d(c.received, l.received) as f64 / secs,
            mbps: d(c.framed_bytes, l.framed_bytes) as f64 * 8.0 / secs / 1e6,
            ring_drops: d(c.kernel_drops, l.kernel_drops),
            send_drops: d(c.send_dropped, l.send_dropped),
            datagram_drops: d(c.datagrams_dropped, l.datagrams_dropped),
        };
        *self = Meter::new(c, now);
        rates
    }
}

/// `sensor=… iface=… pps=… mbps=… frames=… sent=… ring_drops=… send_drops=…
/// datagram_drops=…`: rates and drops since the last line, totals of frames.
pub fn periodic_line(owner: &str, iface: &str, c: &Counters, r: &Rates) -> String {
    format!(
        "summary {owner} iface={iface} pps={:.0} mbps={:.2} frames={} sent={} ring_drops={} \
         send_drops={} datagram_drops={}",
        r.pps,
        r.mbps,
        c.received,
        sent(c),
        r.ring_drops,
        r.send_drops,
        r.datagram_drops
    )
}

/// Every counter of a capture that ended (with `decap=`, the
/// decapsulation's counters at the end).
pub fn final_line(owner: &str, iface: &str, c: &Counters) -> String {
    let mut line = format!(
        "final {owner} iface={iface} frames={} seen={} ring_drops={} sampled_out={} framed={} \
         bytes={} sent={} send_drops={} datagrams_sent={} datagram_drops={} refused={} gso={} \
         dry_run={} too_big={}",
        c.received,
        c.received + c.kernel_drops,
        c.kernel_drops,
        c.sampled_out,
        c.framed,
        c.framed_bytes,
        sent(c),
        c.send_dropped,
        c.datagrams_sent,
        c.datagrams_dropped,
        c.refused,
        c.gso,
        c.dry_run,
        c.too_big
    );
    if let Some(d) = c.decap {
        line.push_str(&format!(
            " decapsulated={} decap_foreign={} decap_malformed={} decap_filtered={}",
            d.decapsulated, d.foreign, d.malformed, d.filtered
        ));
    }
    line
}

/// Packets handed on to the sensor (none in a dry run).
fn sent(c: &Counters) -> u64 {
    if c.dry_run {
        0
    } else {
        c.framed.saturating_sub(c.send_dropped)
    }
}

/// `41 kpps`, `1.2 Mpps`, `900 pps`: a rate for a short status line.
pub fn short_rate(pps: f64) -> String {
    match pps {
        p if p >= 1e6 => format!("{:.1} Mpps", p / 1e6),
        p if p >= 1e4 => format!("{:.0} kpps", p / 1e3),
        p if p >= 1e3 => format!("{:.1} kpps", p / 1e3),
        p => format!("{p:.0} pps"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(received: u64, bytes: u64, ring: u64, send: u64) -> Counters {
        Counters {
            received,
            framed: received,
            framed_bytes: bytes,
            kernel_drops: ring,
            send_dropped: send,
            ..Counters::default()
        }
    }

    #[test]
    fn rates_and_drops_are_since_the_last_line() {
        let t0 = Instant::now();
        let mut m = Meter::new(counters(100, 10_000, 5, 1), t0);
        let c = counters(4_100, 1_010_000, 12, 1);
        let r = m.advance(c, t0 + Duration::from_secs(2));
        assert_eq!(r.pps, 2000.0);
        assert_eq!(r.mbps, 4.0);
        assert_eq!((r.ring_drops, r.send_drops, r.drops()), (7, 0, 7));
        assert_eq!(
            periodic_line("sensor=192.0.2.1:2003", "eth1", &c, &r),
            "summary sensor=192.0.2.1:2003 iface=eth1 pps=2000 mbps=4.00 frames=4100 \
             sent=4099 ring_drops=7 send_drops=0 datagram_drops=0"
        );
        // The next line counts from this one.
        let r = m.advance(c, t0 + Duration::from_secs(3));
        assert_eq!((r.pps, r.drops()), (0.0, 0));
    }

    #[test]
    fn the_final_line_has_every_counter() {
        let mut c = counters(10, 1000, 2, 3);
        c.sampled_out = 4;
        c.datagrams_sent = 5;
        let l = final_line("client=192.0.2.9:41000", "any", &c);
        assert!(l.starts_with("final client=192.0.2.9:41000 iface=any frames=10 seen=12"));
        for f in [
            "ring_drops=2",
            "sampled_out=4",
            "bytes=1000",
            "sent=7",
            "send_drops=3",
            "datagrams_sent=5",
        ] {
            assert!(l.contains(f), "{f} in {l}");
        }
        assert!(!l.contains("decap"), "{l}");
        c.decap = Some(super::super::DecapCounters {
            decapsulated: 9,
            foreign: 8,
            malformed: 7,
            filtered: 6,
        });
        let l = final_line("client=192.0.2.9:41000", "any", &c);
        assert!(
            l.ends_with(" decapsulated=9 decap_foreign=8 decap_malformed=7 decap_filtered=6"),
            "{l}"
        );
    }

    #[test]
    fn short_rates() {
        assert_eq!(short_rate(41_234.0), "41 kpps");
        assert_eq!(short_rate(1_500.0), "1.5 kpps");
        assert_eq!(short_rate(12.0), "12 pps");
        assert_eq!(short_rate(2_500_000.0), "2.5 Mpps");
    }
}
