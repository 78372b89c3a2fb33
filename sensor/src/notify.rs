//! The service manager's view of the sensor (`sd_notify(3)`, through the
//! `sd-notify` crate): `READY=1` once it listens, `STATUS=N agents, M
//! captures` when the counts change, `WATCHDOG=1` at half `WATCHDOG_USEC`
//! from the event loop, `RELOADING=1` around a SIGHUP (the filter file is
//! read again) and `STOPPING=1` on shutdown. The socket and the
//! watchdog are [`sys::notify`]'s, shared with the agent.

pub use sys::notify::Notifier;

/// The `STATUS=` text.
pub fn status_line(agents: usize, captures: usize) -> String {
    let s = |n: usize| if n == 1 { "" } else { "s" };
    format!(
        "{agents} agent{}, {captures} capture{}",
        s(agents),
        s(captures)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines() {
        assert_eq!(super::status_line(2, 1), "2 agents, 1 capture");
        assert_eq!(super::status_line(1, 0), "1 agent, 0 captures");
    }
}
