//! Capture sources: where the datapath worker pulls frames from.
//!
//! A source hands out frames in batches through a callback; each [`Frame`]
//! borrows its bytes straight from the source's memory (the AF_PACKET ring, the
//! file reader's buffer), so nothing is copied or allocated per packet before
//! the framer copies it once into a datagram.
//!
//! Filtering belongs to the source: the AF_PACKET ring runs the cBPF program
//! in the kernel, the file source interprets it in user space, and AF_XDP
//! pre-filters in its XDP program and runs the exact program there too,
//! translated to eBPF (`xdpc`), or in user space when it does not
//! translate exactly. Either way the worker only ever sees frames that
//! passed the filter.

pub mod afpacket;
pub mod afxdp;
pub mod file;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rpcap::bpf::Program;
use sys::eventfd::EventFd;

use crate::filter::OwnTraffic;
use crate::settings::{Backend, CaptureSettings};
use afpacket::AfPacket;
use afxdp::AfXdp;
use file::FileSource;

/// What one capture reads, as the host resolved it at STARTCAP: built once,
/// then read by reference by [`open`] and the sources. The operator's
/// settings ride along as one shared value: a new capture option is a
/// field of [`CaptureSettings`] and the source that reads it, nothing here.
#[derive(Debug, Clone)]
pub struct Request {
    pub ifname: String,
    /// The source of this capture, resolved by the host (`Capture`, the
    /// ActiveClient line's `capture=`, `XdpSettings::covers`); the
    /// sources go by this, not by `settings.backend`.
    pub backend: Backend,
    /// The operator's capture settings (`RingSize`, the `Xdp*` keys,
    /// `SendBuffer`, dry run...), shared by every capture started under
    /// the same configuration.
    pub settings: Arc<CaptureSettings>,
    /// Our own connections. Every source's filter already excludes them;
    /// the XDP program derives its flows from this to leave them to the
    /// stack (None: nothing of ours to leave out).
    pub own: Option<OwnTraffic>,
    pub snaplen: u32,
    pub promisc: bool,
    /// Which frames: STARTCAP's INBOUND/OUTBOUND flags (libpcap's
    /// `pcap_setdirection`).
    pub direction: Direction,
    /// The latency bound: the least of `MaxLatencyMs` and the read timeout
    /// the sensor asked for. No frame waits longer in the agent: it is the
    /// AF_PACKET ring's block timeout, and the worker flushes a partly
    /// filled datagram at the latest this long after its first record.
    pub latency: Duration,
    /// The capture's one program: own-traffic exclusion AND local filter AND
    /// the sensor's filter, validated once by the session.
    pub filter: Program,
}

/// The direction of the frames a capture takes, as libpcap's
/// `pcap_setdirection`: STARTCAP's INBOUND flag alone is `PCAP_D_IN`,
/// OUTBOUND alone `PCAP_D_OUT`, both or neither `PCAP_D_INOUT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    Both,
    /// Frames this host received (everything but `PACKET_OUTGOING`).
    In,
    /// Frames this host sent (`PACKET_OUTGOING`).
    Out,
}

impl Direction {
    /// The direction STARTCAP's `flags` ask for.
    pub fn from_startcap_flags(flags: u16) -> Direction {
        use rpcap::msg::startcap_flags::{INBOUND, OUTBOUND};
        match (flags & INBOUND != 0, flags & OUTBOUND != 0) {
            (true, false) => Direction::In,
            (false, true) => Direction::Out,
            _ => Direction::Both,
        }
    }
}

/// The refusal of an outbound-only capture on AF_XDP.
pub const XDP_INGRESS_ONLY: &str = "AF_XDP sees received frames only: an outbound-only capture \
     (STARTCAP OUTBOUND flag) is not possible on it; capture with AF_PACKET (Capture = afpacket)";

impl Request {
    /// The settings of this request alone, copied first if shared (for
    /// tests and tools that vary one setting; the host never needs it).
    pub fn settings_mut(&mut self) -> &mut CaptureSettings {
        Arc::make_mut(&mut self.settings)
    }
}

/// The source [`open`] gave: one monomorphised worker loop per kind.
pub enum AnySource {
    AfPacket(AfPacket),
    File(FileSource),
    AfXdp(Box<AfXdp>),
}

impl AnySource {
    /// A live source drops what the sender cannot take (the ring must keep
    /// moving); a file replay waits for room instead.
    pub fn is_live(&self) -> bool {
        !matches!(self, AnySource::File(_))
    }
}

/// Why a source could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("interface {ifname}: {source}")]
    Interface { ifname: String, source: io::Error },
    #[error("interface {ifname}: {source}")]
    AfXdp {
        ifname: String,
        source: CaptureError,
    },
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: CaptureError },
    #[error("eventfd: {0}")]
    Wake(io::Error),
}

/// Opens the source `req` names; a live source is woken through `wake`
/// (commands for the worker do not wait for its poll timeout).
pub fn open(req: &Request, wake: &EventFd) -> Result<AnySource, OpenError> {
    let interface = |source| OpenError::Interface {
        ifname: req.ifname.clone(),
        source,
    };
    Ok(match &req.backend {
        Backend::AfPacket => {
            let mut src = AfPacket::open(req).map_err(interface)?;
            src.set_wake_fd(wake.try_clone_fd().map_err(OpenError::Wake)?);
            AnySource::AfPacket(src)
        }
        Backend::File(path) => {
            let src = FileSource::open(path, req.snaplen, &req.filter).map_err(|source| {
                OpenError::File {
                    path: path.clone(),
                    source,
                }
            })?;
            AnySource::File(src.with_direction(req.direction))
        }
        Backend::AfXdp if req.direction == Direction::Out => {
            return Err(OpenError::AfXdp {
                ifname: req.ifname.clone(),
                source: CaptureError::Format(XDP_INGRESS_ONLY.into()),
            });
        }
        // Inbound-only or both: AF_XDP sees ingress, which is all either gets.
        Backend::AfXdp => {
            let mut src = AfXdp::open(req).map_err(|e| match e {
                CaptureError::Io { source, .. } => interface(source),
                source => OpenError::AfXdp {
                    ifname: req.ifname.clone(),
                    source,
                },
            })?;
            src.set_wake_fd(wake.try_clone_fd().map_err(OpenError::Wake)?);
            AnySource::AfXdp(Box::new(src))
        }
    })
}

/// One captured frame, borrowed from the source until the callback returns.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub ts_sec: u32,
    pub ts_usec: u32,
    /// Captured bytes (already cut to the snap length): one piece, or for a
    /// multi-buffer AF_XDP frame the pieces in its UMEM chunks, in order
    /// (the framer gathers them into the datagram without joining them).
    pub parts: &'a [&'a [u8]],
    /// Length of the frame on the wire.
    pub wire_len: u32,
}

impl Frame<'_> {
    /// Captured length: the bytes of every part.
    #[inline]
    pub fn caplen(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// The captured bytes in one buffer (allocates: for tests and tools,
    /// not the datapath).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

/// What one [`Source::poll`] call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// This many frames were handed to the sink (0 after a quiet timeout).
    Frames(usize),
    /// The source has no more frames (end of a file).
    End,
}

/// Why a source could not go on.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The interface was deleted (or its driver unbound) under the capture.
    #[error("interface {0} vanished")]
    Vanished(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: io::Error,
    },
    #[error("{0}")]
    Format(String),
}

impl CaptureError {
    pub(crate) fn io(context: &'static str, source: io::Error) -> CaptureError {
        CaptureError::Io { context, source }
    }
}

/// Counters kept by the source itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Frames that passed the filter but were lost before user space read
    /// them (AF_PACKET ring full), cumulative since the source opened.
    pub kernel_drops: u64,
    /// Frames the filter rejected where the source counts them (AF_XDP's
    /// user-space cBPF judge; AF_PACKET's kernel filter does not say).
    pub filtered_out: u64,
    /// The XDP program's and sockets' counters (AF_XDP only).
    pub xdp: Option<XdpStats>,
}

/// AF_XDP counters for the metrics endpoint (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames the XDP program handed to the capture's sockets.
    pub redirected: u64,
    /// Frames the XDP program's translated filter rejected.
    pub filtered: u64,
    /// Frames lost because a socket's RX ring was full.
    pub ring_full: u64,
}

/// A source of captured frames.
pub trait Source {
    /// Hands every frame that is ready to `sink`, waiting at most `timeout`
    /// when none is. Never blocks longer than `timeout` (plus one block's work).
    fn poll<F: FnMut(&Frame<'_>)>(
        &mut self,
        timeout: Duration,
        sink: &mut F,
    ) -> Result<Polled, CaptureError>;

    /// Whether every frame the source holds was handed over: the worker
    /// then sends what it has rather than wait for more (the latency bound
    /// is spent in the source). Sources that cannot tell say no, and the
    /// worker flushes by its deadline instead.
    fn caught_up(&self) -> bool {
        false
    }

    /// Replaces the filter. Frames returned after this call passed the new
    /// program.
    fn set_filter(&mut self, filter: &Program) -> Result<(), CaptureError>;

    /// Cumulative source counters (may make a syscall: call it per batch at most).
    fn stats(&mut self) -> SourceStats;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn af_xdp_refuses_outbound_only_and_says_why() {
        let req = |direction| Request {
            ifname: "no-such-if0".into(),
            backend: Backend::AfXdp,
            settings: Default::default(),
            own: None,
            snaplen: 100,
            promisc: false,
            direction,
            latency: Duration::from_millis(10),
            filter: Program::accept_all(),
        };
        let wake = EventFd::new().unwrap();
        let e = open(&req(Direction::Out), &wake).err().expect("refused");
        assert!(
            e.to_string().contains("AF_XDP sees received frames only"),
            "{e}"
        );
        // Inbound-only goes on to open (and fails here only for the name).
        let e = open(&req(Direction::In), &wake)
            .err()
            .expect("no such interface");
        assert!(!e.to_string().contains("received frames only"), "{e}");
    }
}
