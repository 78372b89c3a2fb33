//! Log lines for events a peer can repeat at will (refused connections,
//! failing accepts): at most one line per interval, saying how many events
//! it stands for, so that a flood cannot flood the log too.

use std::time::{Duration, Instant};

/// At most one log line per `every`.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    every: Duration,
    last: Option<Instant>,
    /// Events since the last line, not logged.
    suppressed: u64,
}

impl LogThrottle {
    pub const fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// An event at `now`: Some(number of events not logged since the last
    /// line) when this one is to be logged, None when it is not.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// ", and N more since the last report" when N > 0.
pub fn more(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more not logged since the last report)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let mut t = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(t.allow(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(t.allow(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(t.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(30)), Some(1));
        assert_eq!(more(0), "");
        assert!(more(3).contains("3 more"));
    }
}
