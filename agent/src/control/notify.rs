//! The service manager's view of the agent (`sd_notify(3)`, through the
//! `sd-notify` crate): `READY=1` once the configuration is loaded and the
//! passive listeners (if any) are open, `STATUS=` lines saying how many
//! sensors capture and at what rate each capture runs (`; eth1: 41 kpps,
//! 0 drops`, refreshed every few seconds by [`super::report`]), `WATCHDOG=1` at half `WATCHDOG_USEC` from the event
//! loop, `RELOADING=1` around a SIGHUP reload and `STOPPING=1` on shutdown.
//!
//! The socket and the watchdog are [`sys::notify`]'s, shared with the
//! sensor; this module says what the agent's status is.

/// The status (and the WARN) of an agent that has a configuration file but
/// neither a sensor to dial nor passive mode: it waits for a reload.
/// [`Counts::status_line`] says it whenever the loop has nothing to serve,
/// so such an agent can simply run its [`Control`](super::Control) loop
/// (READY=1, this status, watchdog pings; a SIGHUP adds the sensors).
pub const NO_SENSOR: &str = crate::settings::NO_SENSOR_WARNING;

/// The longest `STATUS=` text sent (`systemctl status` shows one line).
pub const MAX_STATUS: usize = 200;

pub use sys::notify::{status, Notifier};

/// The counts a status line is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// ActiveClient lines (sensors dialled).
    pub sensors: usize,
    /// Of those, the ones connected and authenticated.
    pub sensors_connected: usize,
    /// Of those, the ones with a capture running.
    pub sensors_capturing: usize,
    /// Captures running, for sensors and passive clients.
    pub captures: usize,
    /// Whether the agent listens for passive clients.
    pub listening: bool,
    /// Passive clients connected.
    pub passive_clients: usize,
}

impl Counts {
    /// The `STATUS=` text: `2/3 sensors capturing, 2 captures`, with the
    /// passive clients when listening, or [`NO_SENSOR`] when there is
    /// nothing to serve.
    pub fn status_line(&self) -> String {
        if self.sensors == 0 && !self.listening {
            return NO_SENSOR.to_string();
        }
        let mut s = format!(
            "{}/{} sensors capturing, {} capture{}",
            self.sensors_capturing,
            self.sensors,
            self.captures,
            if self.captures == 1 { "" } else { "s" }
        );
        if self.listening {
            s.push_str(&format!(
                ", {} passive client{}",
                self.passive_clients,
                if self.passive_clients == 1 { "" } else { "s" }
            ));
        }
        s
    }

    /// [`Counts::status_line`], then the sensors connected when more are
    /// than capture, then `detail` (the captures' rates and drops:
    /// `1/2 sensors capturing, 1 capture; 2/2 connected; eth1: 41 kpps, 0 drops`).
    /// At most [`MAX_STATUS`] bytes.
    pub fn status_with(&self, detail: &str) -> String {
        let mut s = self.status_line();
        if self.sensors == 0 && !self.listening {
            return s;
        }
        if self.sensors_connected > self.sensors_capturing {
            s.push_str(&format!(
                "; {}/{} connected",
                self.sensors_connected, self.sensors
            ));
        }
        if !detail.is_empty() {
            s.push_str("; ");
            s.push_str(detail);
        }
        if s.len() > MAX_STATUS {
            let mut end = MAX_STATUS - 3;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push_str("...");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let mut c = Counts {
            sensors: 3,
            sensors_capturing: 2,
            captures: 2,
            ..Counts::default()
        };
        assert_eq!(c.status_line(), "2/3 sensors capturing, 2 captures");
        c.captures = 1;
        c.listening = true;
        c.passive_clients = 1;
        assert_eq!(
            c.status_line(),
            "2/3 sensors capturing, 1 capture, 1 passive client"
        );
        assert_eq!(Counts::default().status_line(), NO_SENSOR);
        let passive_only = Counts {
            listening: true,
            ..Counts::default()
        };
        assert_eq!(
            passive_only.status_line(),
            "0/0 sensors capturing, 0 captures, 0 passive clients"
        );
    }

    #[test]
    fn status_lines_carry_connections_and_captures_and_stay_short() {
        let c = Counts {
            sensors: 2,
            sensors_connected: 2,
            sensors_capturing: 1,
            captures: 1,
            ..Counts::default()
        };
        assert_eq!(
            c.status_with("eth1: 41 kpps, 0 drops"),
            "1/2 sensors capturing, 1 capture; 2/2 connected; eth1: 41 kpps, 0 drops"
        );
        let all = Counts {
            sensors_connected: 1,
            ..c
        };
        assert_eq!(all.status_with(""), "1/2 sensors capturing, 1 capture");
        let long = "eth1: 41 kpps, 0 drops; ".repeat(20);
        let s = c.status_with(&long);
        assert!(s.len() <= MAX_STATUS && s.ends_with("..."), "{s}");
        assert_eq!(Counts::default().status_with("x"), NO_SENSOR);
    }
}
