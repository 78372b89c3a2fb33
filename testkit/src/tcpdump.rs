//! tcpdump: a reference capture on an interface of a namespace, and reading
//! a capture file back with tcpdump itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::netns::Netns;
use crate::pcap::{read_pcap, Packet};
use crate::process::Child;

/// tcpdump's packet-buffer timeout (1 s, which libpcap also uses as the
/// ring's block retire timeout), plus a margin.
const BLOCK_TIMEOUT_SETTLE: Duration = Duration::from_millis(1300);

/// A reference capture: `tcpdump -w` on an interface inside a namespace,
/// packet-buffered (`-U`) so the file grows as packets arrive.
///
/// Not `--immediate-mode`: libpcap then uses a TPACKET_V2 ring whose slots are
/// snaplen-sized, only ~8 of them, and a burst of 50 small frames already
/// loses packets. The default TPACKET_V3 ring holds thousands of frames but
/// hands a partly filled block over only after tcpdump's 1 s timeout, so
/// [`Tcpdump::stop`] waits that long before it stops tcpdump.
#[derive(Debug)]
pub struct Tcpdump {
    child: Child,
    path: PathBuf,
}

impl Tcpdump {
    /// Starts tcpdump on `ifname` in `ns` writing to `path`, with a capture
    /// `filter` (tcpdump expression, may be empty). Returns once tcpdump
    /// reports it is listening, so nothing sent afterwards is missed.
    pub fn start(ns: &Netns, ifname: &str, path: &Path, filter: &str) -> Result<Tcpdump> {
        Tcpdump::start_with(ns, ifname, &[], path, filter)
    }

    /// [`Tcpdump::start`] with more tcpdump options (`-y LINUX_SLL`).
    pub fn start_with(
        ns: &Netns,
        ifname: &str,
        opts: &[&str],
        path: &Path,
        filter: &str,
    ) -> Result<Tcpdump> {
        let mut cmd = ns.command("tcpdump");
        // -Z root: Debian's tcpdump would otherwise switch to user tcpdump
        // and could not write into the test's temporary folder.
        cmd.args(["-i", ifname, "-n", "-U", "-s", "0", "-Z", "root"]);
        cmd.args(opts);
        cmd.arg("-w").arg(path);
        cmd.args(filter.split_whitespace());
        let mut child = Child::spawn("tcpdump", cmd)?;
        child.wait_for_output("listening on", Duration::from_secs(10))?;
        Ok(Tcpdump {
            child,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the kernel to hand over the last partly filled ring block,
    /// stops tcpdump (SIGTERM) and reads what it captured.
    pub fn stop(mut self) -> Result<Vec<Packet>> {
        std::thread::sleep(BLOCK_TIMEOUT_SETTLE);
        self.child.stop(Duration::from_secs(5))?;
        read_pcap(&self.path)
    }
}

/// Packets tcpdump reads from a file (fails the test if tcpdump cannot).
pub fn tcpdump_count(f: &Path) -> usize {
    let out = Command::new("tcpdump")
        .arg("-ttnr")
        .arg(f)
        .output()
        .expect("tcpdump runs");
    assert!(
        out.status.success(),
        "tcpdump cannot read {}: {}",
        f.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("1700000"))
        .count()
}
