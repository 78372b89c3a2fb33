//! Harness for the end-to-end tests: network namespaces, veth pairs and the
//! project's binaries, cleaned up by drop guards even when a test fails.
//!
//! Every end-to-end test starts with [`require_root`]: these tests need root
//! (network namespaces, packet capture) and must FAIL, never skip, without it.
//!
//! - [`netns`]: [`Netns`] guard, [`veth_pair`], the TESTING.md [`Topology`],
//!   running commands in a namespace and opening sockets inside one.
//! - [`process`]: [`Child`] guard for spawned programs, locating the project's
//!   binaries ([`bin_path`]).
//! - [`capture`]: reading pcap/pcapng files ([`read_pcap`]), a `tcpdump -w`
//!   reference capture ([`Tcpdump`]), numbered UDP traffic ([`send_udp`]).
//! - [`daemons`]: [`Sensor`] and [`Agent`], the project's programs started in
//!   a namespace (log waits, capture files, final counters).
//! - [`traffic`]: a UDP echo and ping-pong sender (both directions), frame
//!   views (IPv4/UDP, fragments), a namespace's IP counters.
//! - [`wait`]: bounded waits (a TCP port listening in a namespace, a capture
//!   file holding N packets).
//!
//! Declare guards in the order they were created: Rust drops locals in reverse
//! order, so processes ([`Child`]) die before their namespaces are deleted.

pub mod capture;
pub mod daemons;
pub mod netns;
pub mod process;
pub mod traffic;
pub mod wait;

pub use capture::{numbered_payloads, read_pcap, send_udp, Packet, Tcpdump};
pub use daemons::{Agent, Counters, Sensor};
pub use netns::{veth_pair, Netns, Topology, VethEnd};
pub use process::{bin_path, Child};
pub use wait::{wait_for_packets, wait_tcp_listen, wait_until};

/// Panics unless the process runs as root (effective uid 0).
///
/// The end-to-end tests need root for network namespaces and packet capture.
/// They fail rather than skip, so a green run always means they really ran.
pub fn require_root() {
    let euid = effective_uid();
    assert!(
        euid == Some(0),
        "end-to-end tests need root (network namespaces, packet capture); \
         effective uid is {euid:?}. Run them as root, e.g. `sudo -E cargo test -p xrpcap-e2e` \
         or `scripts/test.sh` as root. They fail on purpose instead of skipping."
    );
}

/// The effective uid, read from /proc/self/status (no unsafe call needed).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // "Uid:\treal\teffective\tsaved\tfs"
    line.split_whitespace().nth(2)?.parse().ok()
}
