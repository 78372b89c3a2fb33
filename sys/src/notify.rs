//! The service manager's notification socket (`sd_notify(3)`, through the
//! `sd-notify` crate), shared by the agent and the sensor: `READY=1`,
//! `STATUS=`, `WATCHDOG=1` at half `WATCHDOG_USEC`, `RELOADING=1` and
//! `STOPPING=1`. What the status says is each binary's own.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd, tests) every call does
//! nothing; a failed send is logged at debug level and otherwise ignored:
//! the service manager's view is never worth stopping a capture.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Sends `STATUS=text` on its own (outside an event loop: e.g. while the
/// agent waits for a configuration).
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Sends `states` if a service manager listens; never fails.
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify: {e}");
    }
}

/// The event loop's notifier: remembers the last status sent (a line is
/// sent when it changes) and when the watchdog is due.
#[derive(Debug)]
pub struct Notifier {
    /// Half of `WATCHDOG_USEC`, if the watchdog is on.
    interval: Option<Duration>,
    next_ping: Option<Instant>,
    status: String,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC`/`WATCHDOG_PID` (for this process only).
    pub fn from_env() -> Notifier {
        Notifier::with_watchdog(sd_notify::watchdog_enabled())
    }

    /// A notifier pinging every half of `watchdog` (None: no pings).
    pub fn with_watchdog(watchdog: Option<Duration>) -> Notifier {
        Notifier {
            interval: watchdog.filter(|w| !w.is_zero()).map(|w| w / 2),
            next_ping: None,
            status: String::new(),
        }
    }

    /// The ping interval (half of `WATCHDOG_USEC`), if any.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// `READY=1` with the first status; the watchdog starts.
    pub fn ready(&mut self, now: Instant, status: String) {
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.status = status;
        self.ping(now);
    }

    /// `RELOADING=1` (with the monotonic time systemd ≥ 253 asks for).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(t) => send(&[NotifyState::Reloading, t]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    /// `READY=1` after a reload, with the status.
    pub fn reloaded(&mut self, status: String) {
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.status = status;
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Sends `status` if it differs from the last one sent.
    pub fn status(&mut self, status: String) {
        if status != self.status {
            send(&[NotifyState::Status(&status)]);
            self.status = status;
        }
    }

    /// When the loop must wake up next for the watchdog.
    pub fn deadline(&self) -> Option<Instant> {
        self.next_ping
    }

    /// `WATCHDOG=1` when due.
    pub fn tick(&mut self, now: Instant) {
        if self.next_ping.is_some_and(|at| at <= now) {
            self.ping(now);
        }
    }

    fn ping(&mut self, now: Instant) {
        if let Some(every) = self.interval {
            send(&[NotifyState::Watchdog]);
            self.next_ping = Some(now + every);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_its_period() {
        let t0 = Instant::now();
        let mut n = Notifier::with_watchdog(Some(Duration::from_secs(30)));
        assert_eq!(n.interval(), Some(Duration::from_secs(15)));
        assert_eq!(n.deadline(), None);
        n.ready(t0, "x".into());
        assert_eq!(n.deadline(), Some(t0 + Duration::from_secs(15)));
        n.tick(t0 + Duration::from_secs(14));
        assert_eq!(n.deadline(), Some(t0 + Duration::from_secs(15)));
        n.tick(t0 + Duration::from_secs(16));
        assert_eq!(n.deadline(), Some(t0 + Duration::from_secs(31)));
        let mut off = Notifier::with_watchdog(None);
        off.ready(t0, "x".into());
        assert_eq!(off.deadline(), None);
        assert_eq!(
            Notifier::with_watchdog(Some(Duration::ZERO)).interval(),
            None
        );
    }
}
