//! How long records took from the agent's capture to the sensor: the
//! receive time (the kernel's, SO_TIMESTAMPNS, for UDP data; the read time
//! for TCP) minus the record's pcap timestamp. It measures the agent's
//! latency bound (`MaxLatencyMs`) and the network, and it includes any
//! difference between the two hosts' clocks, so it means something only
//! where their clocks are synchronised (NTP, or one host as in the
//! benchmarks). A record stamped in the sensor's future counts as 0.

use std::time::{SystemTime, UNIX_EPOCH};

use rpcap::PktHdr;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// The longest delay seen, in µs.
    pub max_us: u64,
    sum_us: u64,
    records: u64,
}

/// Now, in µs since the epoch: read once per datagram or message, not per
/// record.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Delay {
    /// One record received at `now_us`.
    pub fn observe(&mut self, now_us: u64, h: &PktHdr) {
        let stamped = u64::from(h.ts_sec) * 1_000_000 + u64::from(h.ts_usec);
        let d = now_us.saturating_sub(stamped);
        self.max_us = self.max_us.max(d);
        self.sum_us = self.sum_us.saturating_add(d);
        self.records += 1;
    }

    /// The mean delay in µs (0 before any record).
    pub fn mean_us(&self) -> u64 {
        self.sum_us.checked_div(self.records).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sec: u32, usec: u32) -> PktHdr {
        PktHdr {
            ts_sec: sec,
            ts_usec: usec,
            caplen: 0,
            len: 0,
            npkt: 0,
        }
    }

    #[test]
    fn max_and_mean_of_the_records_and_none_below_zero() {
        let mut d = Delay::default();
        assert_eq!((d.max_us, d.mean_us()), (0, 0));
        d.observe(10_000_000, &at(9, 990_000)); // 10 ms
        d.observe(10_000_000, &at(9, 970_000)); // 30 ms
        d.observe(10_000_000, &at(10, 500)); // stamped in the future: 0
        assert_eq!(d.max_us, 30_000);
        assert_eq!(d.mean_us(), 40_000 / 3);
    }
}
