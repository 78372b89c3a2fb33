//! Wall-clock timestamps for AF_XDP frames.
//!
//! An AF_XDP descriptor carries no time, so the XDP program stamps each
//! frame it redirects with `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) in 8
//! bytes of XDP metadata in front of the frame (`ebpf/xrpcapd_xdp.c`,
//! `stamp`), and `Xsk::receive` hands that word out with the frame. Here
//! it becomes wall-clock time: the worker samples CLOCK_REALTIME and
//! CLOCK_MONOTONIC once per round (two vDSO calls, no syscall) and moves
//! each stamp by their difference, so NTP steps and slews count from the
//! next round on. A frame without a usable stamp - 0 (the driver gave no
//! metadata room; user space zeroes the word after reading it), later
//! than the round's sample by more than [`SLACK_NS`] or earlier than the
//! capture's start (garbage) - gets the round's wall time, as every frame
//! did before.

use std::time::Duration;

use crate::capture::sys;

/// How far a stamp may lie after the round's monotonic sample: frames of
/// a socket read later in the same round were stamped after the sample
/// (microseconds); anything beyond a second is not a stamp of ours.
pub const SLACK_NS: u64 = 1_000_000_000;

/// CLOCK_MONOTONIC now, in ns.
pub fn monotonic_ns() -> u64 {
    sys::clock_ns(libc::CLOCK_MONOTONIC)
}

/// The two clocks as sampled at the start of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundClock {
    /// CLOCK_REALTIME, ns since the epoch.
    wall_ns: u64,
    /// CLOCK_MONOTONIC, ns.
    mono_ns: u64,
    /// Stamps before this (the capture's start) are not ours.
    floor_ns: u64,
}

impl RoundClock {
    /// Samples both clocks; `floor_ns` is the monotonic time the capture
    /// started at.
    pub fn now(floor_ns: u64) -> RoundClock {
        let mono_ns = monotonic_ns();
        let wall_ns = sys::clock_ns(libc::CLOCK_REALTIME);
        RoundClock::at(wall_ns, mono_ns, floor_ns)
    }

    pub fn at(wall_ns: u64, mono_ns: u64, floor_ns: u64) -> RoundClock {
        RoundClock {
            wall_ns,
            mono_ns,
            floor_ns,
        }
    }

    /// The wall-clock time, in ns since the epoch, of a frame the XDP
    /// program stamped `mono` (0: no stamp).
    #[inline]
    pub fn frame_ns(&self, mono: u64) -> u64 {
        if mono < self.floor_ns.max(1) || mono > self.mono_ns.saturating_add(SLACK_NS) {
            return self.wall_ns;
        }
        if mono >= self.mono_ns {
            self.wall_ns.saturating_add(mono - self.mono_ns)
        } else {
            self.wall_ns.saturating_sub(self.mono_ns - mono)
        }
    }

    /// [`frame_ns`](Self::frame_ns) as pcap's seconds and microseconds.
    #[inline]
    pub fn frame_time(&self, mono: u64) -> (u32, u32) {
        let t = Duration::from_nanos(self.frame_ns(mono));
        (t.as_secs() as u32, t.subsec_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_stamp_is_moved_by_the_clock_difference() {
        // Wall 1 700 000 000.5 s when monotonic was 1000 s; opened at 900 s.
        let c = RoundClock::at(1_700_000_000 * S + S / 2, 1000 * S, 900 * S);
        // 20 ms before the round's sample.
        assert_eq!(
            c.frame_time(1000 * S - 20_000_000),
            (1_700_000_000, 480_000)
        );
        // 123 456 789 ns before: microseconds truncated.
        assert_eq!(
            c.frame_ns(1000 * S - 123_456_789),
            1_700_000_000 * S + S / 2 - 123_456_789
        );
        assert_eq!(
            c.frame_time(1000 * S - 123_456_789),
            (1_700_000_000, 376_543)
        );
        // A little after the sample (a socket read later in the round).
        assert_eq!(
            c.frame_ns(1000 * S + 5_000),
            1_700_000_000 * S + S / 2 + 5_000
        );
        // At the floor: still a stamp.
        assert_eq!(c.frame_ns(900 * S), 1_700_000_000 * S + S / 2 - 100 * S);
    }

    #[test]
    fn frames_without_a_usable_stamp_get_the_round_time() {
        let c = RoundClock::at(1_700_000_000 * S, 1000 * S, 900 * S);
        let round = c.frame_time(0);
        assert_eq!(round, (1_700_000_000, 0), "no stamp");
        assert_eq!(c.frame_time(900 * S - 1), round, "before the capture");
        assert_eq!(c.frame_time(1001 * S + 1), round, "from the future");
        assert_eq!(c.frame_time(u64::MAX), round);
        // A floor of 0 still rejects 0.
        assert_eq!(RoundClock::at(7 * S, 3 * S, 0).frame_ns(0), 7 * S);
    }

    #[test]
    fn the_clocks_are_sampled_from_the_system() {
        let before = monotonic_ns();
        let c = RoundClock::now(before);
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(c.mono_ns >= before && c.mono_ns - before < S);
        assert!(wall >= c.wall_ns && wall - c.wall_ns < S);
        // A stamp taken now maps to (about) now.
        let t = c.frame_ns(monotonic_ns());
        assert!(t >= c.wall_ns && t - c.wall_ns < S, "{t} vs {}", c.wall_ns);
    }
}
