//! Clock reads.

use std::time::Duration;

pub use libc::{CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID, CLOCK_REALTIME};

/// `clock` now (zero if it cannot be read).
pub fn now(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`; the clocks we
    // read exist on every Linux, so it cannot fail (zero is returned if it did).
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `clock` now, in ns (0 if it cannot be read).
pub fn ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as in `now`.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Clock ticks per second (the unit of /proc's utime and stime).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_advance() {
        let a = ns(CLOCK_MONOTONIC);
        let b = ns(CLOCK_MONOTONIC);
        assert!(a > 0 && b >= a);
        assert!(now(CLOCK_REALTIME).as_secs() > 1_600_000_000);
        assert!(ticks_per_second() > 0);
    }
}
