//! Live TAP output (`--tap NAME`, `--tap-per-agent PREFIX`): every received
//! Ethernet frame is written onto a TAP interface, where any capture tool
//! attaches (`tcpdump -i`, `zeek -i`, `suricata -i`). One write(2) per frame
//! (a tun descriptor has no batching write), non-blocking: a frame the
//! kernel does not take at once (EAGAIN, ENOBUFS…) is dropped and counted
//! (`tap_drops`). Frames of other link types (`any`'s LINUX_SLL, RAW) are
//! counted (`tap_skipped`) and not written.

use std::io;
use std::sync::Arc;

use anyhow::{Context, Result};
use sys::tap::Tap;

use crate::capture::Counters;

/// DLT_EN10MB: the only link type a TAP carries.
pub const LINKTYPE_ETHERNET: i32 = 1;

/// Longest `--tap-per-agent` prefix: the interface name (prefix + agent
/// slot number) must fit IFNAMSIZ - 1 = 15 bytes with up to 5 digits.
pub const MAX_PREFIX: usize = 10;

/// Creates TAP interface `name`, quiets it (no IPv6 of its own, so the
/// host sends nothing out of it that a reader would mistake for captured
/// traffic) and brings it up.
pub fn open(name: &str) -> Result<Arc<Tap>> {
    let tap = Tap::create(name).with_context(|| {
        format!("cannot create TAP interface {name} (needs CAP_NET_ADMIN and /dev/net/tun)")
    })?;
    // Before it is up, so that it never gets a link-local address. Without
    // this the host may act on IPv6 in the written frames (a captured
    // router advertisement configuring an address and a route on the TAP).
    let sysctl = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", tap.name());
    match std::fs::write(&sysctl, "1") {
        Ok(()) => {}
        // No IPv6 in this kernel: nothing to turn off.
        Err(e) if e.kind() == io::ErrorKind::NotFound && !ipv6_present() => {}
        Err(e) => log::warn!(
            "TAP {}: cannot turn IPv6 off ({sysctl}: {e}): the host may answer or act on \
             IPv6 in the frames written to it (systemd: ProcSubset=all, ProtectKernelTunables=no)",
            tap.name()
        ),
    }
    tap.set_up()
        .with_context(|| format!("cannot bring TAP interface {} up", tap.name()))?;
    log::info!("writing Ethernet frames onto TAP interface {}", tap.name());
    Ok(Arc::new(tap))
}

/// Whether the kernel has IPv6 (its sysctl tree).
fn ipv6_present() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6").exists()
}

/// One capture's way onto a TAP.
#[derive(Debug)]
pub struct TapSink {
    /// None: the capture's link type is not Ethernet (frames skipped).
    tap: Option<Arc<Tap>>,
    error_logged: bool,
}

impl TapSink {
    /// Frames of a capture of `linktype` onto `tap` (skipped unless Ethernet).
    pub fn new(tap: Option<Arc<Tap>>, linktype: i32) -> TapSink {
        TapSink {
            tap: tap.filter(|_| linktype == LINKTYPE_ETHERNET),
            error_logged: false,
        }
    }

    /// The TAP's name, when frames go to one.
    pub fn name(&self) -> Option<&str> {
        self.tap.as_deref().map(Tap::name)
    }

    /// Writes one frame, counting what happened to it.
    pub fn send(&mut self, frame: &[u8], c: &mut Counters) {
        let Some(tap) = self.tap.as_deref() else {
            c.tap_skipped += 1;
            return;
        };
        match tap.write_frame(frame) {
            Ok(()) => c.tap_frames += 1,
            Err(e) => {
                c.tap_drops += 1;
                let busy = e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::ENOBUFS);
                if !busy && !self.error_logged {
                    self.error_logged = true;
                    log::warn!(
                        "TAP {}: {e} (this capture's frames the TAP refuses are counted as tap_drops)",
                        tap.name()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_other_link_types_are_skipped_and_counted() {
        let mut c = Counters::default();
        let mut s = TapSink::new(None, LINKTYPE_ETHERNET);
        s.send(&[0; 60], &mut c);
        assert_eq!((c.tap_frames, c.tap_skipped, c.tap_drops), (0, 1, 0));
        assert!(s.name().is_none());
    }
}
