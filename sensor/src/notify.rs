//! The service manager's view of the sensor (`sd_notify(3)`, through the
//! `sd-notify` crate): `READY=1` once it listens, `STATUS=N agents, M
//! captures` when the counts change, `WATCHDOG=1` at half `WATCHDOG_USEC`
//! from the event loop, `RELOADING=1` around a SIGHUP (the filter file is
//! read again) and `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` every
//! call does nothing; a failed send is logged at debug level and ignored.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify: {e}");
    }
}

/// The `STATUS=` text.
pub fn status_line(agents: usize, captures: usize) -> String {
    let s = |n: usize| if n == 1 { "" } else { "s" };
    format!(
        "{agents} agent{}, {captures} capture{}",
        s(agents),
        s(captures)
    )
}

/// Remembers the last status sent and when the watchdog is due.
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
        Notifier {
            interval: sd_notify::watchdog_enabled()
                .filter(|w| !w.is_zero())
                .map(|w| w / 2),
            next_ping: None,
            status: String::new(),
        }
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

    /// `READY=1` after a reload.
    pub fn reloaded(&self) {
        send(&[NotifyState::Ready]);
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

    /// `WATCHDOG=1` when due (the loop wakes every 100 ms).
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
    #[test]
    fn status_lines() {
        assert_eq!(super::status_line(2, 1), "2 agents, 1 capture");
        assert_eq!(super::status_line(1, 0), "1 agent, 0 captures");
    }
}
