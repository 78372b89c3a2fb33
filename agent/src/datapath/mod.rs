//! The datapath: one worker thread per capture that pulls batches of frames
//! from a capture source, filters, samples, frames them (udpstr or plain) and
//! sends them to the sensor in batches.
//!
//! CONTRACT between the control thread (session) and the datapath (skeleton):
//! the control thread builds a [`CaptureSpec`] on STARTCAP and calls
//! [`Worker::start`]; it retunes the running worker with
//! [`Worker::update_filter`] / [`Worker::set_sampling`], reads counters with
//! [`Worker::stats`] and ends it with [`Worker::stop`]. None of these block on
//! the datapath for more than a few milliseconds.

use std::net::SocketAddr;
use std::time::Duration;

use rpcap::bpf::Insn;
use rpcap::msg::{Sampling, Stats};

/// Which capture source serves a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// TPACKET_V3 ring: both directions, the host's own traffic (default).
    AfPacket,
    /// Replays a pcap/pcapng file instead of a live interface.
    File(std::path::PathBuf),
}

/// How captured packets travel to the sensor.
#[derive(Debug)]
pub enum Transport {
    /// udpstr datagrams of `size` bytes (UDP payload) to `dest`.
    UdpStr { dest: SocketAddr, size: usize },
    /// One plain PACKET datagram per packet to `dest` (`-t 0`).
    PlainUdp { dest: SocketAddr },
    /// Plain PACKET messages streamed over an established TCP data connection.
    Tcp(std::net::TcpStream),
}

/// Everything a worker needs to run one capture.
#[derive(Debug)]
pub struct CaptureSpec {
    pub ifname: String,
    pub backend: Backend,
    pub snaplen: u32,
    pub promisc: bool,
    /// Partial datagrams are flushed after this long; also the ring's block timeout.
    pub read_timeout: Duration,
    /// The sensor's filter (validated), already combined with the local filter
    /// and the own-traffic exclusion by the control thread.
    pub filter: Vec<Insn>,
    pub sampling: Sampling,
    pub transport: Transport,
    /// UDP socket send buffer in bytes (`-u`).
    pub sndbuf: usize,
    /// AF_PACKET ring size in bytes.
    pub ring_bytes: usize,
    /// CPU to pin the worker to.
    pub cpu: Option<usize>,
    /// Dry run (`-y`): capture and count, send nothing.
    pub dry_run: bool,
}

/// A capture that could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("interface {0}: {1}")]
    Interface(String, std::io::Error),
    #[error("data socket: {0}")]
    Socket(std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// A running capture.
#[derive(Debug)]
pub struct Worker {
    _todo: (),
}

impl Worker {
    /// Opens the source and the data socket and starts the worker thread.
    pub fn start(spec: CaptureSpec) -> Result<Worker, StartError> {
        let _ = spec;
        todo!()
    }

    /// Replaces the filter (already combined as in [`CaptureSpec::filter`]).
    pub fn update_filter(&self, filter: Vec<Insn>) -> Result<(), StartError> {
        let _ = filter;
        todo!()
    }

    pub fn set_sampling(&self, sampling: Sampling) {
        let _ = sampling;
        todo!()
    }

    /// Counters as STATS reports them: ifrecv (frames the source saw),
    /// ifdrop (dropped by the worker: send buffer full, sampling excluded),
    /// krnldrop (ring drops), svrcapt (packets sent to the sensor).
    pub fn stats(&self) -> Stats {
        todo!()
    }

    /// Why the worker stopped by itself (interface gone, data connection
    /// closed), if it did.
    pub fn failure(&self) -> Option<String> {
        todo!()
    }

    /// Flushes what is framed, stops the thread and returns the final counters.
    pub fn stop(self) -> Stats {
        todo!()
    }
}
