//! What the tests of every crate share: network namespaces and veth pairs,
//! spawned processes and the project's two programs, reference captures,
//! test traffic and what receives it, the BPF expression corpus, and
//! capability dropping. Guards clean up on drop, also when a test fails.
//!
//! - [`netns`]: [`Netns`] guard, [`veth_pair`], the TESTING.md [`Topology`],
//!   the datapath tests' [`NetnsPair`], commands and sockets in a namespace.
//! - [`process`]: [`Child`] guard for spawned programs, locating the project's
//!   binaries ([`bin_path`]).
//! - [`daemon`]: [`Sensor`] and [`Agent`], the project's programs started in
//!   a namespace (log waits, capture files, final counters).
//! - [`pcap`]: reading pcap/pcapng files ([`read_pcap`]).
//! - [`tcpdump`]: a `tcpdump -w` reference capture ([`Tcpdump`]), reading a
//!   file back with tcpdump.
//! - [`traffic`]: numbered UDP datagrams ([`send_udp`]), a UDP echo and
//!   ping-pong sender, raw frames out of a namespace's interface, frame views
//!   (IPv4/UDP, fragments), a namespace's IP counters.
//! - [`record`]: captured records (header and bytes), framed as udpstr or
//!   written as the pcap file a sensor must produce.
//! - [`sink`]: a loopback socket receiving what a sender forwards, decoded
//!   (udpstr, plain UDP, TCP).
//! - [`scripted_agent`]: the agent side of RPCAP, scripted, for sensor tests.
//! - [`bpf_corpus`]: tcpdump expressions, libpcap as the reference, a frame
//!   generator and a deterministic RNG.
//! - [`caps`]: dropping a capability; [`require_root`].
//! - [`wait`]: bounded waits (a condition, a TCP port listening in a
//!   namespace, a capture file holding N packets).
//!
//! Tests that need root are marked `#[ignore = "needs root"]`, so a plain
//! `cargo test` passes without it and reports them ignored; scripts/test.sh
//! runs them as root with `--include-ignored`.
//!
//! Declare guards in the order they were created: Rust drops locals in reverse
//! order, so processes ([`Child`]) die before their namespaces are deleted.

pub mod bpf_corpus;
pub mod caps;
pub mod daemon;
pub mod interop;
pub mod netns;
pub mod pcap;
pub mod process;
pub mod prometheus;
pub mod record;
pub mod scripted_agent;
pub mod sink;
pub mod tcpdump;
pub mod tls;
pub mod traffic;
pub mod wait;

pub use caps::require_root;
pub use daemon::{Agent, Counters, Sensor};
pub use netns::{veth_pair, Netns, NetnsPair, Topology, VethEnd};
pub use pcap::{read_pcap, Packet};
pub use process::{bin_path, Child};
pub use tcpdump::Tcpdump;
pub use traffic::{numbered_payloads, send_udp};
pub use wait::{wait_for_packets, wait_tcp_listen, wait_until};
