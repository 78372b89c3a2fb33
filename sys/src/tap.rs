//! TAP interfaces: `/dev/net/tun` with TUNSETIFF (IFF_TAP | IFF_NO_PI), so
//! that each write(2) of an Ethernet frame is received by the interface as
//! if it came off a wire, where any capture tool (tcpdump, Zeek, Suricata)
//! sees it. Non-persistent: the interface goes away with the descriptor.
//!
//! Written here rather than with a crate: `tun-tap` compiles a C helper
//! and blocks, `tun` brings an async stack; what is needed is one ioctl on
//! top of [`crate::ifreq`]'s helpers.
//!
//! There is no batching write for a tun descriptor (writev writes one
//! frame): one syscall per frame is inherent.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// A TAP interface, open for writing frames; non-blocking.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates TAP interface `name` (at most 15 bytes; a `%d` in it lets
    /// the kernel pick the number) in the caller's network namespace,
    /// down. Needs CAP_NET_ADMIN and `/dev/net/tun`.
    pub fn create(name: &str) -> io::Result<Tap> {
        let mut ifr = crate::ifreq::ifreq(name)?;
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        // SAFETY: TUNSETIFF reads the name and flags of `ifr`, a valid
        // ifreq that lives through the call, and writes the name back.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let name: Vec<u8> = ifr
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        Ok(Tap {
            file,
            name: String::from_utf8_lossy(&name).into_owned(),
        })
    }

    /// The interface's name, as the kernel gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Brings the interface up (IFF_UP: a TAP that is down refuses frames,
    /// EIO) without ARP (IFF_NOARP: the host answers no ARP request that
    /// arrives in the written frames).
    pub fn set_up(&self) -> io::Result<()> {
        crate::ifreq::set_flags(&self.name, libc::IFF_UP | libc::IFF_NOARP)
    }

    /// Writes one Ethernet frame (one write(2)); WouldBlock, ENOBUFS and
    /// others come back as the kernel gives them.
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<()> {
        let n = (&self.file).write(frame)?;
        if n != frame.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short TAP write"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_the_kernel() {
        assert!(Tap::create("a-name-longer-than-ifnamsiz").is_err());
        assert!(Tap::create("bad\0name").is_err());
    }
}

/// A rough cost of one TAP write (run as root in a scratch namespace:
/// `ip netns add b; ip netns exec b cargo test -p xrpcap-sys tap_write_cost
/// -- --ignored --nocapture`; `XRPCAP_TAP_BENCH_READER=1` with tcpdump
/// reading the TAP), next to a write(2) to /dev/null as the bare syscall of
/// the same run. Figures in docs/DESIGN.md.
#[cfg(test)]
mod cost {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore = "needs root; a timing, not a check"]
    fn tap_write_cost() {
        let tap = Tap::create("xbench0").unwrap();
        tap.set_up().unwrap();
        // XRPCAP_TAP_BENCH_READER=1: with tcpdump capturing from the TAP.
        let reader = std::env::var_os("XRPCAP_TAP_BENCH_READER").map(|_| {
            let child = std::process::Command::new("tcpdump")
                .args(["-i", "xbench0", "-w", "/dev/null", "-s", "0"])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_secs(2));
            child
        });
        let null = OpenOptions::new().write(true).open("/dev/null").unwrap();
        const N: u32 = 200_000;
        for size in [64usize, 1400] {
            let mut frame = vec![0u8; size];
            // Unicast to another host's MAC: the stack drops it early (not ours).
            frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
            frame[12..14].copy_from_slice(&[0x08, 0x00]);
            let t = Instant::now();
            let mut drops = 0;
            for _ in 0..N {
                if tap.write_frame(&frame).is_err() {
                    drops += 1;
                }
            }
            let tap_ns = t.elapsed().as_nanos() / u128::from(N);
            let t = Instant::now();
            for _ in 0..N {
                (&null).write_all(&frame).unwrap();
            }
            let null_ns = t.elapsed().as_nanos() / u128::from(N);
            println!(
                "{size} B: TAP {tap_ns} ns/frame ({drops} dropped), /dev/null {null_ns} ns/write"
            );
        }
        if let Some(mut r) = reader {
            let _ = r.kill();
            let _ = r.wait();
        }
    }
}
