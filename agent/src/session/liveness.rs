//! Whether a capturing sensor is still there, from what it sends rather
//! than from TCP keepalive alone (a sensor host's leftover socket answers
//! keepalive probes while nothing reads it). RPCAP has no heartbeat, but
//! many sensors poll STATS_REQ at a fixed interval (xrpcap-sensor every
//! 5 s): once a steady rhythm is seen, silence for [`MISSED`] intervals —
//! never longer than `LivenessSecs` — means the sensor is gone.
//!
//! Only a rhythm is judged: a client that never polls (libpcap's, unless
//! its application calls `pcap_stats`), polls now and then, or polls slower
//! than half the limit is never given up for silence; it is left to
//! TCP_USER_TIMEOUT and keepalive.

use std::time::{Duration, Instant};

/// Intervals of silence after which a polling sensor is given up.
pub const MISSED: u32 = 3;
/// Equal gaps in a row that make a rhythm.
const RHYTHM: u32 = 3;
/// Polls closer than this are bursts, not a rhythm.
const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// The STATS_REQ rhythm of one session.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// `LivenessSecs`; None: off.
    limit: Option<Duration>,
    last: Option<Instant>,
    /// Shortest and longest gap of the current run of similar gaps.
    shortest: Duration,
    longest: Duration,
    gaps: u32,
}

impl Liveness {
    pub fn new(limit: Option<Duration>) -> Liveness {
        Liveness {
            limit,
            last: None,
            shortest: Duration::ZERO,
            longest: Duration::ZERO,
            gaps: 0,
        }
    }

    /// A STATS_REQ arrived at `at`.
    pub fn stats_request(&mut self, at: Instant) {
        if let Some(last) = self.last.replace(at) {
            let gap = at.saturating_duration_since(last);
            let shortest = self.shortest.min(gap);
            let longest = self.longest.max(gap);
            // Gaps within a factor of 2 of each other are one rhythm; any
            // other gap starts learning again.
            if self.gaps > 0 && longest <= shortest * 2 {
                (self.shortest, self.longest) = (shortest, longest);
                self.gaps += 1;
            } else {
                (self.shortest, self.longest, self.gaps) = (gap, gap, 1);
            }
        }
    }

    /// The interval the sensor keeps, if it keeps one this check can judge.
    pub fn interval(&self) -> Option<Duration> {
        let limit = self.limit?;
        (self.gaps >= RHYTHM && self.shortest >= MIN_INTERVAL && self.longest * 2 <= limit)
            .then_some(self.longest)
    }

    /// When a sensor silent since `last_rx` is given up, if it is judged.
    pub fn deadline(&self, last_rx: Instant) -> Option<Instant> {
        let interval = self.interval()?;
        let silence = (interval * MISSED).min(self.limit?);
        Some(last_rx + silence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Option<Duration> = Some(Duration::from_secs(30));

    fn polled(every: &[u64]) -> (Liveness, Instant) {
        let mut l = Liveness::new(LIMIT);
        let mut t = Instant::now();
        l.stats_request(t);
        for ms in every {
            t += Duration::from_millis(*ms);
            l.stats_request(t);
        }
        (l, t)
    }

    #[test]
    fn a_steady_poller_is_given_up_after_three_missed_intervals() {
        let (l, t) = polled(&[5000, 5000, 5100]);
        assert_eq!(l.interval(), Some(Duration::from_millis(5100)));
        assert_eq!(l.deadline(t), Some(t + Duration::from_millis(15300)));
        // Jitter within a factor of 2 keeps the rhythm.
        let (l, _) = polled(&[5000, 3000, 6000, 4000]);
        assert_eq!(l.interval(), Some(Duration::from_secs(6)));
    }

    #[test]
    fn the_silence_allowed_never_exceeds_the_limit() {
        let (l, t) = polled(&[12_000, 12_000, 12_000]);
        assert_eq!(l.deadline(t), Some(t + Duration::from_secs(30)));
    }

    #[test]
    fn clients_without_a_rhythm_are_never_given_up() {
        // Never polls, or not often enough to tell.
        assert_eq!(polled(&[]).0.deadline(Instant::now()), None);
        assert_eq!(polled(&[1000, 1000]).0.interval(), None);
        // Polls slower than half the limit.
        assert_eq!(polled(&[16_000, 16_000, 16_000]).0.interval(), None);
        // Now and then (an application calling pcap_stats).
        assert_eq!(polled(&[1000, 9000, 200, 40_000]).0.interval(), None);
        // A burst.
        assert_eq!(polled(&[1, 1, 1, 1]).0.interval(), None);
        // Off.
        let mut l = Liveness::new(None);
        let t = Instant::now();
        for i in 0..10 {
            l.stats_request(t + Duration::from_secs(i));
        }
        assert_eq!(l.deadline(t), None);
    }

    #[test]
    fn a_changed_rhythm_is_learned_again() {
        let (l, _) = polled(&[1000, 1000, 1000, 10_000]);
        assert_eq!(l.interval(), None);
        let (l, _) = polled(&[1000, 1000, 1000, 10_000, 10_000, 10_000]);
        assert_eq!(l.interval(), Some(Duration::from_secs(10)));
    }
}
