//! SETSAMPLING, applied (the reference daemons store it and ignore it).
//!
//! - method 0: every packet.
//! - method 1, one-of-N: keeps the Nth, 2Nth, 3Nth… packet (N ≤ 1 keeps all).
//! - method 2, first-after-N-ms: keeps a packet when at least N ms of capture
//!   time (the frames' own timestamps) passed since the last kept one; the
//!   first packet is always kept.
//!
//! Unknown methods keep every packet (the control side refuses them first).

use rpcap::msg::Sampling;

/// Decides per packet whether it goes to the sensor.
#[derive(Debug, Clone)]
pub struct Sampler {
    mode: Mode,
}

#[derive(Debug, Clone)]
enum Mode {
    All,
    OneOfN {
        n: u32,
        seen: u32,
    },
    FirstAfter {
        interval_us: u64,
        last_us: Option<u64>,
    },
}

impl Sampler {
    pub fn new(s: Sampling) -> Sampler {
        let mode = match s.method {
            1 if s.value > 1 => Mode::OneOfN {
                n: s.value,
                seen: 0,
            },
            2 if s.value > 0 => Mode::FirstAfter {
                interval_us: u64::from(s.value) * 1000,
                last_us: None,
            },
            _ => Mode::All,
        };
        Sampler { mode }
    }

    /// Whether the packet captured at `ts_sec.ts_usec` is kept.
    #[inline]
    pub fn keep(&mut self, ts_sec: u32, ts_usec: u32) -> bool {
        match &mut self.mode {
            Mode::All => true,
            Mode::OneOfN { n, seen } => {
                *seen += 1;
                if *seen >= *n {
                    *seen = 0;
                    true
                } else {
                    false
                }
            }
            Mode::FirstAfter {
                interval_us,
                last_us,
            } => {
                let now = u64::from(ts_sec) * 1_000_000 + u64::from(ts_usec);
                match *last_us {
                    // A clock that steps back restarts the interval.
                    Some(last) if now >= last && now - last < *interval_us => false,
                    _ => {
                        *last_us = Some(now);
                        true
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(method: u8, value: u32) -> Sampler {
        Sampler::new(Sampling { method, value })
    }

    #[test]
    fn none_keeps_all() {
        let mut x = s(0, 7);
        assert!((0..100).all(|i| x.keep(i, 0)));
    }

    #[test]
    fn one_of_n_keeps_every_nth() {
        let mut x = s(1, 4);
        let kept: Vec<u32> = (1..=20).filter(|_| x.keep(0, 0)).collect();
        assert_eq!(kept.len(), 5);
        let mut x = s(1, 4);
        let idx: Vec<usize> = (1..=12).filter(|_| x.keep(0, 0)).collect::<Vec<_>>();
        assert_eq!(idx.len(), 3);
        let mut x = s(1, 3);
        let pattern: Vec<bool> = (0..6).map(|_| x.keep(0, 0)).collect();
        assert_eq!(pattern, [false, false, true, false, false, true]);
        let mut one = s(1, 1);
        assert!((0..10).all(|_| one.keep(0, 0)));
        let mut zero = s(1, 0);
        assert!((0..10).all(|_| zero.keep(0, 0)));
    }

    #[test]
    fn first_after_n_ms_uses_frame_time() {
        let mut x = s(2, 10);
        // t in microseconds: 0, 5ms, 9.999ms, 10ms, 15ms, 25ms
        let ts = [0u64, 5_000, 9_999, 10_000, 15_000, 25_000];
        let kept: Vec<bool> = ts
            .iter()
            .map(|t| x.keep(100 + (t / 1_000_000) as u32, (t % 1_000_000) as u32))
            .collect();
        assert_eq!(kept, [true, false, false, true, false, true]);
        // A clock step backwards restarts.
        assert!(x.keep(50, 0));
        assert!(!x.keep(50, 1));
    }

    #[test]
    fn unknown_method_keeps_all() {
        let mut x = s(9, 3);
        assert!((0..10).all(|_| x.keep(0, 0)));
    }
}
