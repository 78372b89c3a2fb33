//! A token bucket for log lines a peer can cause at will (one per message it
//! sends, one per connection it opens): a burst of lines, then one per
//! interval; what is held back is counted and reported with the next line
//! let through ("N similar lines suppressed").
//!
//! Sans-IO: the caller passes the time. A hand-written bucket rather than a
//! rate-limiting crate: those bring their own clock (untestable without
//! sleeping) and do not count what they refuse, which the summary needs.

use std::fmt;
use std::time::{Duration, Instant};

/// The log lines of one source (a session, a call site).
#[derive(Debug, Clone)]
pub struct LogLimit {
    burst: u32,
    every: Duration,
    tokens: u32,
    /// When the bucket last gained a token (None: not used yet, full).
    refilled: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// `burst` lines at once, then one per `every`.
    pub const fn new(burst: u32, every: Duration) -> LogLimit {
        LogLimit {
            burst,
            every,
            tokens: burst,
            refilled: None,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`: `Some` with the number of
    /// lines held back since the last one let through (show it with the
    /// line), `None` when this one is held back (and counted).
    pub fn admit(&mut self, now: Instant) -> Option<Suppressed> {
        self.refill(now);
        if self.tokens == 0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1;
        Some(Suppressed(std::mem::take(&mut self.suppressed)))
    }

    /// Lines held back and not reported yet (to say so when the source goes
    /// away); they are then forgotten.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    fn refill(&mut self, now: Instant) {
        let Some(last) = self.refilled else {
            self.refilled = Some(now);
            return;
        };
        // A full bucket gains nothing while it waits.
        if self.tokens == self.burst || self.every.is_zero() {
            self.tokens = self.burst;
            self.refilled = Some(now);
            return;
        }
        let elapsed = now.saturating_duration_since(last);
        let gained = elapsed.as_nanos() / self.every.as_nanos();
        if gained == 0 {
            return;
        }
        let room = self.burst - self.tokens;
        if gained >= u128::from(room) {
            self.tokens = self.burst;
            self.refilled = Some(now);
        } else {
            // `gained < room ≤ u32::MAX`; the remainder keeps accruing.
            let gained = gained as u32;
            self.tokens += gained;
            self.refilled = Some(last + self.every * gained);
        }
    }
}

/// Lines held back before this one: shows as nothing, or as
/// ` (N similar lines suppressed)` to append to the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            1 => f.write_str(" (1 similar line suppressed)"),
            n => write!(f, " ({n} similar lines suppressed)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_then_one_line_per_interval() {
        let t0 = Instant::now();
        let mut l = LogLimit::new(3, SEC);
        for _ in 0..3 {
            assert_eq!(l.admit(t0), Some(Suppressed(0)));
        }
        for _ in 0..1000 {
            assert_eq!(l.admit(t0 + SEC / 2), None);
        }
        // One token per interval, and the first line after says how many
        // were held back.
        assert_eq!(l.admit(t0 + SEC), Some(Suppressed(1000)));
        assert_eq!(l.admit(t0 + SEC), None);
        assert_eq!(l.admit(t0 + 2 * SEC), Some(Suppressed(1)));
        // A quiet source gets its whole burst back, no more.
        let later = t0 + 100 * SEC;
        for _ in 0..3 {
            assert!(l.admit(later).is_some());
        }
        assert_eq!(l.admit(later), None);
        assert_eq!(l.take_suppressed(), 1);
        assert_eq!(l.take_suppressed(), 0);
    }

    #[test]
    fn lines_let_through_are_bounded_by_time() {
        let t0 = Instant::now();
        let mut l = LogLimit::new(10, SEC);
        let admitted = (0..1_000_000u64)
            .filter(|i| l.admit(t0 + Duration::from_micros(*i * 10)).is_some())
            .count();
        // 10 s of a flood: the burst and one a second.
        assert_eq!(admitted, 10 + 9);
    }

    #[test]
    fn fractions_of_an_interval_accrue_and_time_never_runs_back() {
        let t0 = Instant::now();
        let mut l = LogLimit::new(1, SEC);
        assert!(l.admit(t0).is_some());
        assert!(l.admit(t0 + SEC * 3 / 4).is_none());
        assert!(l.admit(t0 + SEC * 5 / 4).is_some());
        // An earlier instant (another thread's clock read) refills nothing.
        assert!(l.admit(t0).is_none());
    }

    #[test]
    fn suppressed_shows_only_when_there_were_some() {
        assert_eq!(Suppressed(0).to_string(), "");
        assert_eq!(Suppressed(1).to_string(), " (1 similar line suppressed)");
        assert_eq!(Suppressed(7).to_string(), " (7 similar lines suppressed)");
    }
}
