//! One ActiveClient line's slot as a sans-IO state machine: when to look
//! the sensor's name up, when to dial which address, how long to wait after
//! a failure, and what a session's end means. The driver ([`super::dialer`])
//! does the IO the [`Action`]s ask for and reports what happened; the slot
//! never touches a socket, a clock or the resolver, so every transition is
//! unit-tested here.
//!
//! | state | left by | to |
//! |---|---|---|
//! | `backing-off` | its instant | `resolving` ([`Action::Resolve`]) |
//! | `resolving` | the lookup's answer | `dialing` ([`Action::Connect`]); no address: `backing-off` |
//! | `resolving` | its deadline | `backing-off` (the late answer is ignored) |
//! | `dialing` | established | `authenticating` |
//! | `dialing` | refused, unreachable, its deadline | `backing-off` |
//! | `authenticating` | the sensor authenticated | `authenticated` |
//! | `authenticated` | a capture runs | `capturing` (and back when it ends) |
//! | `authenticating` | CLOSE | `backing-off`, backoff unchanged |
//! | `authenticating` | any other end | `backing-off`, one more failure |
//! | `authenticated`, `capturing` | CLOSE | `backing-off`, one more failure (the first if the session was stable) |
//! | `authenticated`, `capturing` | any other end, the session stable | `backing-off` for no time (redial at once), backoff reset |
//! | `authenticated`, `capturing` | any other end, too soon | `backing-off`, one more failure |
//!
//! A session is stable once authenticated for `Timing::stable_session`: only
//! then is the outage over. A sensor that logs in and drops or closes at
//! once, again and again, is backed off like one that refuses.
//! | any session state | CLOSE with `ActiveCloseStops = yes` | `stopped` |
//! | any | its failover group runs on another line | `standby` (no attempt) |
//! | `standby` | the group moves to this line | `backing-off` (the first attempt: at once) |
//! | `standby` | a failback probe | `backing-off`, `resolving`, `dialing`; connected or failed: `standby` |
//! | any | line removed, daemon stopping | `stopped` |

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::Timing;

/// Where a slot stands. The names ([`State::name`]) are those of logs,
/// docs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// A line of a failover group that another line of the group holds:
    /// no attempt (but failback probes, [`Slot::probe`]).
    Standby,
    /// Waiting for the next attempt (the first one: at once).
    BackingOff { until: Instant },
    /// Lookup number `lookup` of the sensor's name runs off the loop.
    Resolving { lookup: u64, deadline: Instant },
    /// A TCP connect to `addr` is under way.
    Dialing { addr: SocketAddr, deadline: Instant },
    /// Connected; the sensor has not authenticated yet.
    Authenticating,
    /// The sensor authenticated; no capture runs.
    Authenticated,
    /// A capture runs for the sensor.
    Capturing,
    /// No more attempts (CLOSE with `ActiveCloseStops`, line removed, daemon stopping).
    Stopped,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Standby => "standby",
            State::BackingOff { .. } => "backing-off",
            State::Resolving { .. } => "resolving",
            State::Dialing { .. } => "dialing",
            State::Authenticating => "authenticating",
            State::Authenticated => "authenticated",
            State::Capturing => "capturing",
            State::Stopped => "stopped",
        }
    }

    /// A session runs (a connection to the sensor is up).
    pub fn in_session(&self) -> bool {
        matches!(
            self,
            State::Authenticating | State::Authenticated | State::Capturing
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// IO the driver must do for the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Look the name up; answer with [`Slot::resolved`] and this number.
    Resolve { lookup: u64 },
    /// Connect to `addr`; answer with [`Slot::connected`] or [`Slot::failed`].
    Connect { addr: SocketAddr, deadline: Instant },
}

/// How a session with the sensor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The sensor sent CLOSE.
    Closed,
    /// Anything else: connection lost, protocol error, a timer (why).
    Failed(String),
}

/// One ActiveClient line's dialling state.
#[derive(Debug)]
pub struct Slot {
    /// The line, for logs.
    name: String,
    state: State,
    timing: Timing,
    /// `ActiveCloseStops`: a CLOSE stops the slot, as in libpcap.
    close_stops: bool,
    /// Failed attempts since the sensor last authenticated.
    failures: u32,
    /// When the first of those failures happened.
    outage_since: Option<Instant>,
    /// When the attempt under way (lookup and connect) began; None once
    /// connected.
    attempt_began: Option<Instant>,
    /// When the session authenticated.
    authenticated_at: Option<Instant>,
    /// Number of the last lookup asked for.
    lookups: u64,
    /// xorshift64 state for the jitter.
    rng: u64,
    /// The last cause logged at WARN (a failure, a refused request): the
    /// same cause again is logged at debug level, until another comes or a
    /// capture runs. A sensor that retries a refused OPEN every few seconds
    /// gets one WARN, not one per attempt.
    reported: Option<String>,
    /// What the agent refused the sensor in the session under way, if
    /// anything: the cause of that session's end.
    refusal: Option<String>,
    /// Why the last attempt or session failed, or the last refusal (metrics).
    last_error: Option<String>,
    /// The attempt under way is a failback probe: connected or failed, the
    /// slot goes back to `standby`.
    probe: bool,
    /// The attempt or session failed since [`Slot::take_lost`] last asked
    /// (for the failover group): Some(whether a session had authenticated).
    lost: Option<bool>,
}

impl Slot {
    /// A slot for line `name` that makes its first attempt at `now`; `seed`
    /// makes its jitter differ from other slots' and agents'.
    pub fn new(name: String, timing: Timing, close_stops: bool, now: Instant, seed: u64) -> Slot {
        Slot {
            name,
            state: State::BackingOff { until: now },
            timing,
            close_stops,
            failures: 0,
            outage_since: None,
            attempt_began: None,
            authenticated_at: None,
            lookups: 0,
            rng: seed | 1,
            reported: None,
            refusal: None,
            last_error: None,
            probe: false,
            lost: None,
        }
    }

    /// The slot's failover group runs on another line: no attempts; a
    /// session under way is the caller's to close.
    pub fn standby(&mut self) {
        self.probe = false;
        self.authenticated_at = None;
        self.attempt_began = None;
        if self.state != State::Stopped {
            self.set(State::Standby);
        }
    }

    /// The group moves to this line: its first attempt at `at`.
    pub fn activate(&mut self, at: Instant) {
        if self.state == State::Standby {
            self.probe = false;
            self.set(State::BackingOff { until: at });
        }
    }

    /// A failback probe: one attempt (lookup, connect) at `now`, then back
    /// to standby whatever happens. Only from standby.
    pub fn probe(&mut self, now: Instant) -> bool {
        if self.state != State::Standby {
            return false;
        }
        self.probe = true;
        self.set(State::BackingOff { until: now });
        true
    }

    /// The attempt under way is a failback probe.
    pub fn probing(&self) -> bool {
        self.probe
    }

    /// Whether the attempt or session failed since the last call:
    /// Some(whether the sensor had authenticated).
    pub fn take_lost(&mut self) -> Option<bool> {
        self.lost.take()
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    /// Failed attempts since the sensor last authenticated.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Attempts begun (name lookup, then connect) since the slot was made.
    pub fn attempts(&self) -> u64 {
        self.lookups
    }

    /// Why the last attempt or session failed, if one did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn set_close_stops(&mut self, close_stops: bool) {
        self.close_stops = close_stops;
    }

    /// When [`Slot::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::BackingOff { until } => Some(*until),
            State::Resolving { deadline, .. } | State::Dialing { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Starts the next attempt when its time has come; gives up a lookup
    /// or a connect past its deadline.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        match self.state {
            State::BackingOff { until } if until <= now => {
                // The name is looked up again at every attempt: a sensor
                // may move, a name server may come back.
                self.lookups += 1;
                self.attempt_began = Some(now);
                let lookup = self.lookups;
                self.set(State::Resolving {
                    lookup,
                    deadline: now + self.timing.resolve_timeout,
                });
                Some(Action::Resolve { lookup })
            }
            State::Resolving { deadline, .. } if deadline <= now => {
                let secs = self.timing.resolve_timeout.as_secs_f64();
                self.failed(format!("name lookup not answered in {secs:.0} s"), now);
                None
            }
            State::Dialing { deadline, .. } if deadline <= now => {
                self.failed("connection timed out".into(), now);
                None
            }
            _ => None,
        }
    }

    /// The answer of lookup `lookup`: the addresses, or why none. A late
    /// answer (its attempt already failed) is ignored.
    pub fn resolved(
        &mut self,
        lookup: u64,
        answer: Result<Vec<SocketAddr>, String>,
        now: Instant,
    ) -> Option<Action> {
        if !matches!(self.state, State::Resolving { lookup: l, .. } if l == lookup) {
            debug!(
                "sensor {}: late answer of lookup {lookup} ignored",
                self.name
            );
            return None;
        }
        match answer {
            Ok(addrs) if !addrs.is_empty() => {
                // Each failure tries the next address.
                let addr = addrs[self.failures as usize % addrs.len()];
                let deadline = now + self.connect_timeout();
                self.set(State::Dialing { addr, deadline });
                Some(Action::Connect { addr, deadline })
            }
            Ok(_) => {
                self.failed("the name has no address".into(), now);
                None
            }
            Err(why) => {
                self.failed(why, now);
                None
            }
        }
    }

    /// The connect succeeded: the sensor speaks first.
    pub fn connected(&mut self) {
        if matches!(self.state, State::Dialing { .. }) {
            self.attempt_began = None;
            self.refusal = None;
            self.set(State::Authenticating);
        }
    }

    /// What the session has reached at `now`.
    pub fn progress(&mut self, authenticated: bool, capturing: bool, now: Instant) {
        if !self.state.in_session() {
            return;
        }
        let next = match (authenticated, capturing) {
            (_, true) => State::Capturing,
            (true, false) => State::Authenticated,
            (false, false) => State::Authenticating,
        };
        if authenticated && self.state == State::Authenticating {
            self.authenticated_at = Some(now);
        }
        if next == State::Capturing {
            // A capture runs: whatever went wrong before is over.
            self.reported = None;
            self.refusal = None;
        }
        if next != self.state {
            self.set(next);
        }
    }

    /// The current attempt failed (`why`): back off, one more failure.
    /// Returns the time until the next attempt.
    ///
    /// A lookup or connect that failed counts its step from when it began:
    /// one that used its whole step waiting (a silent path) is followed at
    /// once by the next, so a path that comes back is found by the next SYN
    /// rather than after a deadline plus a step. A refused connect still
    /// waits out its step.
    pub fn failed(&mut self, why: String, now: Instant) -> Duration {
        if self.probe {
            debug!("sensor {}: failback probe failed: {why}", self.name);
            self.standby();
            return Duration::ZERO;
        }
        if self.state == State::Standby || self.state == State::Stopped {
            return Duration::ZERO;
        }
        self.lost = Some(false);
        let line = format!("sensor {}: {why}", self.name);
        self.back_off(&why, line, now)
    }

    /// The agent refused a request of the sensor (`what`: which and why,
    /// as the session says it): WARN once per cause.
    pub fn refused(&mut self, what: String) {
        let line = format!("sensor {}: {what}", self.name);
        self.report(&what, &line);
        self.last_error = Some(what.clone());
        self.refusal = Some(what);
    }

    /// Logs `line` at WARN, or at debug level when `cause` is the one
    /// logged last.
    fn report(&mut self, cause: &str, line: &str) {
        if self.reported.as_deref() == Some(cause) {
            debug!("{line} (again)");
        } else {
            warn!("{line}");
            self.reported = Some(cause.to_string());
        }
    }

    /// [`Slot::failed`] for `cause`, logged as `what` with the retry.
    fn back_off(&mut self, cause: &str, what: String, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let since = *self.outage_since.get_or_insert(now);
        let step = self.delay(now - since);
        let began = self.attempt_began.take().unwrap_or(now);
        let delay = (began + step).saturating_duration_since(now);
        self.last_error = Some(cause.to_string());
        let line = format!(
            "{what}; retry {} in {:.1} s",
            self.failures,
            delay.as_secs_f64()
        );
        self.report(cause, &line);
        self.set(State::BackingOff { until: now + delay });
        delay
    }

    /// How long a connect may take: `connect_timeout` for the first attempt,
    /// at most one fast step during an outage. A connect's SYNs go out at 0,
    /// 1 and 3 s, so a longer wait only adds a silent stretch in which a
    /// path that came back goes unnoticed.
    fn connect_timeout(&self) -> Duration {
        if self.failures == 0 {
            self.timing.connect_timeout
        } else {
            self.timing.connect_timeout.min(self.timing.fast_step)
        }
    }

    /// The session ended (`end`); the slot redials unless `ActiveCloseStops`
    /// says a CLOSE stops it.
    pub fn session_over(&mut self, end: SessionEnd, now: Instant) {
        if !self.state.in_session() {
            return;
        }
        let authenticated = self.state != State::Authenticating;
        let since = self.authenticated_at.take();
        let stable =
            since.is_some_and(|t| now.saturating_duration_since(t) >= self.timing.stable_session);
        if stable {
            // The outage, if any, is over.
            self.failures = 0;
            self.outage_since = None;
        }
        let why = match &end {
            SessionEnd::Closed => "the sensor sent CLOSE".to_string(),
            SessionEnd::Failed(why) => why.clone(),
        };
        match end {
            SessionEnd::Closed if self.close_stops => {
                info!(
                    "sensor {} sent CLOSE: not reconnecting (ActiveCloseStops)",
                    self.name
                );
                self.set(State::Stopped);
            }
            SessionEnd::Closed if !authenticated => {
                // Whoever answers on the sensor's address can send CLOSE:
                // it neither resets nor advances the backoff.
                let outage = self.outage_since.map_or(Duration::ZERO, |t| now - t);
                let delay = self.delay_for(self.failures.max(1), outage);
                let line = format!(
                    "sensor {} sent CLOSE before authenticating; retry in {:.1} s",
                    self.name,
                    delay.as_secs_f64()
                );
                self.report("sent CLOSE before authenticating", &line);
                self.set(State::BackingOff { until: now + delay });
            }
            SessionEnd::Closed => {
                // After a refusal, that is why: the refusal's WARN said it.
                let cause = self.refusal.take().unwrap_or_else(|| "sent CLOSE".into());
                let line = format!("sensor {} sent CLOSE", self.name);
                self.back_off(&cause, line, now);
            }
            SessionEnd::Failed(why) if authenticated && stable => {
                // A session that was up redials at once.
                warn!(
                    "session with sensor {} ended: {why}; redialling at once",
                    self.name
                );
                self.reported = None;
                self.set(State::BackingOff { until: now });
            }
            SessionEnd::Failed(why) => {
                let when = if authenticated {
                    "soon after authentication"
                } else {
                    "before authentication"
                };
                let line = format!("session with sensor {} ended {when}: {why}", self.name);
                let cause = self
                    .refusal
                    .take()
                    .unwrap_or_else(|| format!("ended {when}: {why}"));
                self.back_off(&cause, line, now);
            }
        }
        // The session's own reason, rather than the backoff's summary.
        self.last_error = Some(why);
        // Stopped too (ActiveCloseStops): its group moves on.
        self.lost = Some(authenticated);
    }

    /// No more attempts.
    pub fn stop(&mut self) {
        self.set(State::Stopped);
    }

    fn delay(&mut self, outage: Duration) -> Duration {
        self.delay_for(self.failures, outage)
    }

    fn delay_for(&mut self, failures: u32, outage: Duration) -> Duration {
        let random = self.random();
        self.timing.backoff(failures, outage, random)
    }

    fn set(&mut self, state: State) {
        debug!("sensor {}: {} → {}", self.name, self.state, state);
        self.state = state;
    }

    fn random(&mut self) -> u64 {
        // xorshift64: the jitter needs spread, not secrecy.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Config;

    fn timing() -> Timing {
        Timing::from_config(&Config::default())
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn slot(close_stops: bool, now: Instant) -> Slot {
        Slot::new(
            "sensor.example, 2003".into(),
            timing(),
            close_stops,
            now,
            42,
        )
    }

    /// Runs one attempt from backing-off to authenticating; returns the
    /// address dialled.
    fn dial(s: &mut Slot, now: Instant) -> SocketAddr {
        let Some(Action::Resolve { lookup }) = s.handle_timeout(now) else {
            panic!("no lookup in {}", s.state())
        };
        let addrs = vec![addr("192.0.2.1:2003"), addr("192.0.2.2:2003")];
        let Some(Action::Connect { addr, .. }) = s.resolved(lookup, Ok(addrs), now) else {
            panic!("no connect in {}", s.state())
        };
        s.connected();
        assert_eq!(s.state_name(), "authenticating");
        addr
    }

    fn until(s: &Slot) -> Instant {
        match s.state() {
            State::BackingOff { until } => *until,
            other => panic!("not backing off: {other}"),
        }
    }

    /// The metrics' attempts and last error: a failed connect's reason,
    /// then a session's own reason rather than the backoff's summary.
    #[test]
    fn attempts_and_last_error_follow_the_failures() {
        let t0 = Instant::now();
        let mut s = slot(false, t0);
        assert_eq!((s.attempts(), s.last_error()), (0, None));
        let Some(Action::Resolve { lookup }) = s.handle_timeout(t0) else {
            panic!()
        };
        s.resolved(lookup, Ok(vec![addr("192.0.2.1:2003")]), t0);
        s.failed("Connection refused".into(), t0);
        assert_eq!(
            (s.attempts(), s.last_error()),
            (1, Some("Connection refused"))
        );
        let at = until(&s);
        dial(&mut s, at);
        assert_eq!(s.attempts(), 2);
        s.session_over(
            SessionEnd::Failed("the sensor closed the connection".into()),
            at,
        );
        assert_eq!(s.last_error(), Some("the sensor closed the connection"));
        let at = until(&s);
        dial(&mut s, at);
        s.session_over(SessionEnd::Closed, at);
        assert_eq!(s.last_error(), Some("the sensor sent CLOSE"));
        assert_eq!(s.attempts(), 3);
    }

    #[test]
    fn an_attempt_goes_resolving_dialing_authenticating_capturing() {
        let t0 = Instant::now();
        let mut s = slot(false, t0);
        assert_eq!(s.state_name(), "backing-off");
        assert_eq!(s.poll_timeout(), Some(t0));
        assert_eq!(s.handle_timeout(t0), Some(Action::Resolve { lookup: 1 }));
        assert_eq!(s.state_name(), "resolving");
        assert_eq!(s.poll_timeout(), Some(t0 + timing().resolve_timeout));
        let a = vec![addr("192.0.2.1:2003")];
        let Some(Action::Connect { addr: to, deadline }) = s.resolved(1, Ok(a), t0) else {
            panic!()
        };
        assert_eq!(
            (to, deadline),
            (addr("192.0.2.1:2003"), t0 + timing().connect_timeout)
        );
        assert_eq!(s.state_name(), "dialing");
        s.connected();
        assert_eq!(s.state_name(), "authenticating");
        assert_eq!(s.poll_timeout(), None);
        s.progress(true, false, t0);
        assert_eq!(s.state_name(), "authenticated");
        s.progress(true, true, t0);
        assert_eq!(s.state_name(), "capturing");
        s.progress(true, false, t0);
        assert_eq!(s.state_name(), "authenticated");
        assert_eq!(s.state().to_string(), "authenticated");
    }

    #[test]
    fn a_lookup_past_its_deadline_fails_and_its_late_answer_is_ignored() {
        let t0 = Instant::now();
        let mut s = slot(false, t0);
        let Some(Action::Resolve { lookup }) = s.handle_timeout(t0) else {
            panic!()
        };
        let late = t0 + timing().resolve_timeout;
        assert_eq!(s.handle_timeout(late - Duration::from_millis(1)), None);
        assert_eq!(s.handle_timeout(late), None);
        assert_eq!(s.state_name(), "backing-off");
        assert_eq!(s.failures(), 1);
        // It took longer than its step: the next attempt follows at once.
        assert_eq!(until(&s), late);
        // The answer comes after all: nothing is dialled.
        assert_eq!(
            s.resolved(lookup, Ok(vec![addr("192.0.2.1:1")]), late),
            None
        );
        assert_eq!(s.state_name(), "backing-off");
        // The next attempt looks the name up again.
        let next = until(&s);
        assert_eq!(s.handle_timeout(next), Some(Action::Resolve { lookup: 2 }));
        // An answer to the old lookup does not count for the new one.
        assert_eq!(
            s.resolved(lookup, Ok(vec![addr("192.0.2.1:1")]), next),
            None
        );
        assert_eq!(s.state_name(), "resolving");
    }

    #[test]
    fn during_an_outage_a_silent_connect_takes_its_step_and_the_next_follows() {
        let t = timing();
        let t0 = Instant::now();
        let mut s = slot(false, t0);
        let a = vec![addr("192.0.2.1:2003")];
        // The first attempt of an outage gets the whole connect timeout.
        s.handle_timeout(t0);
        let Some(Action::Connect { deadline, .. }) = s.resolved(1, Ok(a.clone()), t0) else {
            panic!()
        };
        assert_eq!(deadline, t0 + t.connect_timeout);
        s.handle_timeout(deadline);
        let t1 = until(&s);
        assert_eq!(t1, deadline, "the connect took longer than its step");
        // In the outage: at most one fast step per connect, and a connect
        // that used its step is followed at once, not a step later.
        s.handle_timeout(t1);
        let Some(Action::Connect { deadline, .. }) = s.resolved(2, Ok(a.clone()), t1) else {
            panic!()
        };
        assert_eq!(deadline, t1 + t.fast_step);
        s.handle_timeout(deadline);
        assert_eq!(until(&s), deadline);
        // A refused connect still waits its step from when it began.
        let t2 = deadline;
        s.handle_timeout(t2);
        s.resolved(3, Ok(a), t2);
        let refused = t2 + Duration::from_millis(10);
        s.failed("connection refused".into(), refused);
        let wait = until(&s) - t2;
        assert!(
            wait >= t.fast_step / 2 && wait <= t.fast_step,
            "waited {wait:?}"
        );
    }

    #[test]
    fn failed_lookups_and_connects_back_off_and_try_the_next_address() {
        let t0 = Instant::now();
        let mut s = slot(false, t0);
        s.handle_timeout(t0);
        s.resolved(1, Err("no such name".into()), t0);
        assert_eq!((s.state_name(), s.failures()), ("backing-off", 1));
        let t1 = until(&s);
        s.handle_timeout(t1);
        s.resolved(2, Ok(vec![]), t1);
        assert_eq!(s.failures(), 2);
        let t2 = until(&s);
        s.handle_timeout(t2);
        let a = vec![addr("192.0.2.1:2003"), addr("192.0.2.2:2003")];
        let Some(Action::Connect {
            addr: first,
            deadline,
        }) = s.resolved(3, Ok(a.clone()), t2)
        else {
            panic!()
        };
        assert_eq!(s.handle_timeout(deadline), None);
        assert_eq!((s.state_name(), s.failures()), ("backing-off", 3));
        let t3 = until(&s);
        s.handle_timeout(t3);
        let Some(Action::Connect { addr: second, .. }) = s.resolved(4, Ok(a), t3) else {
            panic!()
        };
        assert_ne!(first, second);
        s.failed("connection refused".into(), t3);
        assert_eq!(s.failures(), 4);
    }

    #[test]
    fn a_close_before_authentication_neither_resets_nor_advances_the_backoff() {
        let t0 = Instant::now();
        let mut s = slot(false, t0);
        // Three failed attempts: the fourth waits up to 4 s.
        let mut now = t0;
        for _ in 0..3 {
            s.handle_timeout(now);
            now += Duration::from_secs(1);
            let lookup = s.lookups;
            s.resolved(lookup, Err("refused".into()), now);
            now = until(&s);
        }
        assert_eq!(s.failures(), 3);
        // An impostor answers and sends CLOSE, again and again.
        for _ in 0..20 {
            dial(&mut s, now);
            s.session_over(SessionEnd::Closed, now);
            assert_eq!((s.state_name(), s.failures()), ("backing-off", 3));
            let wait = until(&s) - now;
            assert!(
                wait >= Duration::from_secs(2) && wait < Duration::from_secs(4),
                "{wait:?}"
            );
            now = until(&s);
        }
        // From a fresh slot, CLOSE keeps the first step, never zero.
        let mut s = slot(false, t0);
        dial(&mut s, t0);
        s.session_over(SessionEnd::Closed, t0);
        assert_eq!(s.failures(), 0);
        assert!(until(&s) - t0 >= Duration::from_millis(500));
    }

    #[test]
    fn any_close_redials_unless_active_close_stops() {
        let t0 = Instant::now();
        for authenticated in [false, true] {
            let mut s = slot(false, t0);
            dial(&mut s, t0);
            s.progress(authenticated, authenticated, t0);
            s.session_over(SessionEnd::Closed, t0);
            assert_eq!(s.state_name(), "backing-off");
            let next = until(&s);
            assert!(next - t0 <= Duration::from_secs(1));
            assert_eq!(s.handle_timeout(next), Some(Action::Resolve { lookup: 2 }));

            let mut s = slot(true, t0);
            dial(&mut s, t0);
            s.progress(authenticated, false, t0);
            s.session_over(SessionEnd::Closed, t0);
            assert_eq!(s.state_name(), "stopped");
            assert_eq!(s.poll_timeout(), None);
            assert_eq!(s.handle_timeout(t0 + Duration::from_secs(3600)), None);
        }
    }

    #[test]
    fn a_stable_session_ends_the_outage_and_a_flapping_one_backs_off() {
        let t0 = Instant::now();
        let stable = timing().stable_session;
        let mut s = slot(false, t0);
        let mut now = t0;
        for _ in 0..5 {
            s.handle_timeout(now);
            let lookup = s.lookups;
            s.resolved(lookup, Err("refused".into()), now);
            now = until(&s);
        }
        dial(&mut s, now);
        // Connected is not enough: a pre-auth failure is one more failure.
        s.session_over(SessionEnd::Failed("reset".into()), now);
        assert_eq!(s.failures(), 6);
        now = until(&s);
        dial(&mut s, now);
        s.progress(true, true, now);
        // Up long enough, then lost: the outage is over, redial at once.
        now += stable;
        s.session_over(SessionEnd::Failed("sensor silent".into()), now);
        assert_eq!((until(&s), s.failures()), (now, 0));
        // Logs in and drops at once, again and again: backed off like a
        // refusal, up to the 5 s step.
        let mut steps = Vec::new();
        for _ in 0..8 {
            dial(&mut s, now);
            s.progress(true, false, now);
            now += Duration::from_millis(100);
            s.session_over(SessionEnd::Failed("reset".into()), now);
            steps.push(until(&s) - now);
            now = until(&s);
        }
        assert_eq!(s.failures(), 8);
        assert!(steps[0] < Duration::from_secs(1), "{steps:?}");
        assert!(steps[7] >= Duration::from_millis(2500), "{steps:?}");
        assert!(
            steps.iter().all(|d| *d < Duration::from_secs(5)),
            "{steps:?}"
        );
        // A CLOSE after a stable session: the first step again.
        dial(&mut s, now);
        s.progress(true, true, now);
        s.session_over(SessionEnd::Closed, now + stable);
        assert_eq!(s.failures(), 1);
        assert!(until(&s) - (now + stable) < Duration::from_secs(1));
    }

    /// A failover group's member: standby makes no attempt; a probe makes
    /// one and goes back to standby, its failure neither counted nor
    /// reported as lost; the active member's failures and lost sessions are.
    #[test]
    fn standby_probe_and_lost_for_failover_groups() {
        let t0 = Instant::now();
        let mut s = slot(false, t0);
        s.standby();
        assert_eq!((s.state_name(), s.poll_timeout()), ("standby", None));
        assert_eq!(s.handle_timeout(t0 + Duration::from_secs(60)), None);
        // A probe: one attempt, refused, back to standby.
        assert!(s.probe(t0));
        assert!(!s.probe(t0), "one probe at a time");
        let Some(Action::Resolve { lookup }) = s.handle_timeout(t0) else {
            panic!()
        };
        s.resolved(lookup, Ok(vec![addr("192.0.2.1:2003")]), t0);
        assert_eq!(s.state_name(), "dialing");
        s.failed("connection refused".into(), t0);
        assert_eq!(
            (s.state_name(), s.failures(), s.take_lost()),
            ("standby", 0, None)
        );
        // Activated: dials at once; a refusal is lost (no session).
        s.activate(t0);
        assert_eq!(s.poll_timeout(), Some(t0));
        let Some(Action::Resolve { lookup }) = s.handle_timeout(t0) else {
            panic!()
        };
        s.resolved(lookup, Ok(vec![addr("192.0.2.1:2003")]), t0);
        s.failed("connection refused".into(), t0);
        assert_eq!(s.take_lost(), Some(false));
        assert_eq!(s.take_lost(), None);
        // A session lost after authenticating: lost with a session.
        let at = until(&s);
        dial(&mut s, at);
        s.progress(true, true, at);
        s.session_over(SessionEnd::Failed("reset".into()), at);
        assert_eq!(s.take_lost(), Some(true));
        // A stopped slot is neither activated nor probed.
        s.stop();
        s.activate(at);
        assert!(!s.probe(at));
        assert_eq!(s.state_name(), "stopped");
    }

    #[test]
    fn stop_ends_every_state() {
        let t0 = Instant::now();
        let mut s = slot(false, t0);
        s.handle_timeout(t0);
        s.stop();
        assert_eq!(s.state_name(), "stopped");
        assert_eq!(s.resolved(1, Ok(vec![addr("192.0.2.1:1")]), t0), None);
        s.session_over(SessionEnd::Closed, t0);
        assert_eq!(s.state_name(), "stopped");
    }
}
