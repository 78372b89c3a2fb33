//! CPU pinning.

use std::io;

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let mut set: libc::cpu_set_t = crate::sockopt::zeroed();
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "out of range"));
    }
    // SAFETY: `cpu` is within the set's bit range (checked above); the set
    // is valid for sched_setaffinity, of the size passed; pid 0 is the
    // calling thread.
    let rc = unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    crate::check(rc).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_to_cpu_0_and_refuses_out_of_range() {
        std::thread::spawn(|| pin_current_thread(0).unwrap())
            .join()
            .unwrap();
        assert!(pin_current_thread(1 << 20).is_err());
    }
}
