//! Failover groups: the ActiveClient lines sharing `failover=NAME`, of
//! which one at most is allowed to dial and hold a session — the first
//! reachable in file order. Sans-IO like the [`super::slot`]s: the group
//! only says which member is active and when to probe the better ones; the
//! [`super::dialer`] puts the others in `standby`, closes the session a
//! failback replaces (before the new member dials: never two sessions of
//! one group at once) and runs the probes.
//!
//! - The active member's attempt fails or its session ends (sensor killed:
//!   FIN/RST at once; silent: `LivenessSecs`): the next member in file order
//!   (wrapping) becomes active and dials at once — no backoff — unless every
//!   member failed in a row, in which case it waits the backoff the failed
//!   member was given (a group whose sensors are all down does not spin).
//! - While a later member is active, the earlier ones are probed every
//!   `FailbackSecs` (a lookup and a TCP connect, closed at once); the first
//!   that answers becomes active again.

use std::time::{Duration, Instant};

/// A change of the group's active member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The member given up (its slot goes to `standby`).
    pub from: usize,
    /// The member that dials now…
    pub to: usize,
    /// …at this instant.
    pub at: Instant,
}

/// One failover group: member indices are positions in file order.
#[derive(Debug)]
pub struct Group {
    len: usize,
    active: usize,
    failback: Duration,
    /// When the earlier members are probed next (only while `active > 0`).
    next_probe: Option<Instant>,
    /// Members that failed in a row without a session authenticating.
    misses: usize,
    /// Moves after the loss of a session (not after failed attempts).
    failovers: u64,
    /// When the active member was lost, until the next one captures.
    lost_at: Option<Instant>,
}

impl Group {
    /// A group of `len` members, member 0 active.
    pub fn new(len: usize, failback: Duration) -> Group {
        Group {
            len,
            active: 0,
            failback,
            next_probe: None,
            misses: 0,
            failovers: 0,
            lost_at: None,
        }
    }

    pub fn active(&self) -> usize {
        self.active
    }

    /// Moves after the loss of a session since the group was made.
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    pub fn set_failback(&mut self, failback: Duration) {
        self.failback = failback;
    }

    /// Member `idx` failed its attempt or lost its session (`had_session`:
    /// it had authenticated); its slot would retry at `retry_at`. When it
    /// is the active member and there is another, the group moves on.
    pub fn lost(
        &mut self,
        idx: usize,
        had_session: bool,
        retry_at: Instant,
        now: Instant,
    ) -> Option<Move> {
        if idx != self.active || self.len < 2 {
            return None;
        }
        if had_session {
            self.misses = 0;
            self.lost_at = Some(now);
        }
        self.misses += 1;
        let to = (idx + 1) % self.len;
        // A whole round failed: the next waits as the failed one would.
        let at = if self.misses >= self.len {
            retry_at.max(now)
        } else {
            now
        };
        if had_session {
            self.failovers += 1;
        }
        self.go(to, now);
        Some(Move { from: idx, to, at })
    }

    /// A session of the active member authenticated: the round is over.
    pub fn authenticated(&mut self, idx: usize) {
        if idx == self.active {
            self.misses = 0;
        }
    }

    /// The active member `idx` captures: how long after the loss, if it
    /// follows one.
    pub fn capturing(&mut self, idx: usize, now: Instant) -> Option<Duration> {
        if idx != self.active {
            return None;
        }
        self.lost_at
            .take()
            .map(|t| now.saturating_duration_since(t))
    }

    /// When [`Group::probes_due`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_probe
    }

    /// The members to probe now (those before the active one), if the
    /// time has come.
    pub fn probes_due(&mut self, now: Instant) -> std::ops::Range<usize> {
        match self.next_probe {
            Some(at) if at <= now && self.active > 0 => {
                self.next_probe = Some(now + self.failback);
                0..self.active
            }
            _ => 0..0,
        }
    }

    /// A probe reached member `idx`: when it comes before the active one,
    /// the group moves back to it (the caller closes the active member's
    /// session first).
    pub fn reachable(&mut self, idx: usize, now: Instant) -> Option<Move> {
        if idx >= self.active {
            return None;
        }
        let from = self.active;
        self.misses = 0;
        self.lost_at = None;
        self.go(idx, now);
        Some(Move {
            from,
            to: idx,
            at: now,
        })
    }

    fn go(&mut self, to: usize, now: Instant) {
        self.active = to;
        self.next_probe = (to > 0).then(|| now + self.failback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FB: Duration = Duration::from_secs(30);

    #[test]
    fn a_lost_session_moves_to_the_next_member_at_once() {
        let t0 = Instant::now();
        let mut g = Group::new(3, FB);
        assert_eq!(g.active(), 0);
        // A standby member's failure (a probe's) changes nothing.
        assert_eq!(g.lost(1, false, t0, t0), None);
        let retry = t0 + Duration::from_secs(1);
        let m = g.lost(0, true, retry, t0).unwrap();
        assert_eq!(
            m,
            Move {
                from: 0,
                to: 1,
                at: t0
            }
        );
        assert_eq!((g.active(), g.failovers()), (1, 1));
        // The next captures 2 s later: the gap is reported once.
        assert_eq!(
            g.capturing(1, t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(g.capturing(1, t0 + Duration::from_secs(3)), None);
    }

    #[test]
    fn a_round_of_failures_waits_the_backoff_and_wraps() {
        let t0 = Instant::now();
        let mut g = Group::new(3, FB);
        let retry = t0 + Duration::from_secs(4);
        // The first reachable: 0 refuses, 1 refuses, 2 at once each.
        assert_eq!(g.lost(0, false, retry, t0).unwrap().at, t0);
        assert_eq!(g.lost(1, false, retry, t0).unwrap().at, t0);
        // Every member failed in a row: back to 0 after the backoff.
        let m = g.lost(2, false, retry, t0).unwrap();
        assert_eq!(
            m,
            Move {
                from: 2,
                to: 0,
                at: retry
            }
        );
        // And so on while all are down.
        assert_eq!(g.lost(0, false, retry, t0).unwrap().at, retry);
        // A session authenticated: the next loss moves on at once again.
        g.authenticated(1);
        assert_eq!(g.lost(1, true, retry, t0).unwrap().at, t0);
    }

    #[test]
    fn a_single_member_group_never_moves() {
        let t0 = Instant::now();
        let mut g = Group::new(1, FB);
        assert_eq!(g.lost(0, true, t0, t0), None);
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn earlier_members_are_probed_every_failback_interval_and_win_back() {
        let t0 = Instant::now();
        let mut g = Group::new(3, FB);
        assert_eq!(
            g.probes_due(t0 + FB * 10),
            0..0,
            "member 0 active: no probes"
        );
        g.lost(0, true, t0, t0);
        g.lost(1, false, t0, t0);
        assert_eq!(g.active(), 2);
        assert_eq!(g.poll_timeout(), Some(t0 + FB));
        assert_eq!(g.probes_due(t0 + FB / 2), 0..0);
        assert_eq!(g.probes_due(t0 + FB), 0..2);
        assert_eq!(g.poll_timeout(), Some(t0 + FB * 2));
        // Member 1 answers first: back to it; member 0 is still probed.
        let t1 = t0 + FB + Duration::from_millis(5);
        assert_eq!(
            g.reachable(1, t1),
            Some(Move {
                from: 2,
                to: 1,
                at: t1
            })
        );
        // A late answer of a member after the active one changes nothing.
        assert_eq!(g.reachable(2, t1), None);
        assert_eq!(g.probes_due(t1 + FB), 0..1);
        let t2 = t1 + FB;
        assert_eq!(
            g.reachable(0, t2),
            Some(Move {
                from: 1,
                to: 0,
                at: t2
            })
        );
        assert_eq!((g.active(), g.poll_timeout()), (0, None));
        // A failback is no failover, nor a failed attempt; and it leaves
        // no gap to report.
        assert_eq!(g.failovers(), 1);
        assert_eq!(g.capturing(0, t2), None);
    }
}
