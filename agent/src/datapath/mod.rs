//! The datapath: one worker thread per capture that pulls batches of frames
//! from a capture source, filters, samples, frames them (udpstr or plain) and
//! sends them to the sensor in batches.
//!
//! The host builds a [`CaptureSpec`] on STARTCAP and calls [`Worker::start`],
//! which opens the source ([`capture::open`](crate::capture::open)) and runs
//! it; the host retunes the running worker with
//! [`Worker::update_filter`] / [`Worker::set_sampling`], reads counters with
//! [`Worker::stats`] and ends it with [`Worker::stop`]. None of these block on
//! the datapath for more than a few milliseconds.

pub mod decap;
pub mod loss;
pub mod sampler;
pub mod sender;
mod sink;
pub mod summary;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use rpcap::bpf::Program;
use rpcap::msg::{Sampling, Stats};

use crate::capture::{self, AnySource, CaptureError, OpenError};
use crate::settings::Backend;
use decap::DecapStage;
pub use decap::{DecapCounters, DecapSetup};
use sender::Backpressure;
pub use sender::DataStream;
use sink::{PlainUdpSink, Sink, TcpSink, TunnelSink, UdpStrSink};
use sys::eventfd::EventFd;
use worker::{Command, Pipeline, Shared};

/// How captured packets travel to the sensor.
#[derive(Debug)]
pub enum Transport {
    /// udpstr datagrams of `size` bytes (UDP payload) to `dest`.
    UdpStr { dest: SocketAddr, size: usize },
    /// One plain PACKET datagram per packet to `dest` (`-t 0`).
    PlainUdp { dest: SocketAddr },
    /// Plain PACKET messages streamed over an established TCP data
    /// connection (or the relay of a TLS one).
    Tcp(DataStream),
    /// One tunnel datagram per frame to `dest` (`TunnelClient`: VXLAN to
    /// its UDP port, GRE/ERSPAN in IP protocol 47).
    Tunnel {
        kind: crate::tunnel::encap::Kind,
        dest: SocketAddr,
    },
}

/// Everything a worker needs to run one capture: the source's request and
/// what happens after the source. The worker reads `SendBuffer` and the dry
/// run from the request's settings, as the sources read theirs.
#[derive(Debug)]
pub struct CaptureSpec {
    /// Read by the source (see [`capture::Request`]).
    pub capture: capture::Request,
    pub sampling: Sampling,
    pub transport: Transport,
    /// CPU to pin the worker to (the host hands out `WorkerCpu` in turn).
    pub cpu: Option<usize>,
    /// Decapsulation (`decap=`): the source's filter selects the tunnel
    /// packets and the worker hands their inner frames on.
    pub decap: Option<DecapSetup>,
}

/// A capture that could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("eventfd: {0}")]
    Wake(std::io::Error),
    #[error("data socket: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    DatagramSize(#[from] rpcap::udpstr::BadSize),
    #[error(
        "decap= on AF_XDP: decapsulation runs on AF_PACKET captures (and files); \
         capture this interface with capture=afpacket (or Capture = afpacket)"
    )]
    DecapOnXdp,
    #[error("decap= on link type {0}: decapsulation reads {links} frames", links = decap::LINKTYPES)]
    DecapLinkType(i32),
    #[error("spawning the datapath thread: {0}")]
    Spawn(std::io::Error),
}

/// A filter the running capture did not take (it goes on with the old one).
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("capture has ended")]
    Ended,
    #[error(transparent)]
    Source(#[from] CaptureError),
}

/// Knobs of the datapath that the control side does not need to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatapathOptions {
    /// Group udpstr datagrams into UDP GSO sends where the kernel takes them.
    pub gso: bool,
    /// Extra datagram slots per udpstr batch (beyond what one record needs).
    pub batch_slots: usize,
    /// How often the worker reads kernel drop counters and checks an idle
    /// TCP peer when awake; it sleeps at most this or `worker::IDLE_WAKE`,
    /// whichever is longer, when nothing else is due.
    pub housekeeping: Duration,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        DatapathOptions {
            gso: true,
            batch_slots: 64,
            housekeeping: worker::HOUSEKEEPING,
        }
    }
}

/// Every counter of a capture (STATS reports a subset, see [`Worker::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames the source delivered (after the filter).
    pub received: u64,
    /// Frames that passed the filter but the ring had no room for.
    pub kernel_drops: u64,
    /// Frames the sampling method left out (not drops).
    pub sampled_out: u64,
    /// Packets framed for the sensor (the last npkt).
    pub framed: u64,
    /// Captured bytes of those packets (caplen, without the framing).
    pub framed_bytes: u64,
    /// Framed packets lost in sending (socket buffer full, send error,
    /// TCP peer too slow or gone). Their npkt (and seqno) were used.
    pub send_dropped: u64,
    /// Datagrams handed to the kernel / dropped (UDP transports).
    pub datagrams_sent: u64,
    pub datagrams_dropped: u64,
    /// ECONNREFUSED reports (the sensor's UDP port was closed).
    pub refused: u64,
    /// Bytes handed to the kernel for the sensor: UDP payloads (udpstr
    /// and plain), or the TCP data stream's bytes.
    pub bytes_sent: u64,
    /// Frames cut to the snapshot length.
    pub truncated: u64,
    /// Rounds of the worker's loop (each follows a wake-up or a full lap
    /// of the ring): what the latency bound saves at low rates.
    pub wakeups: u64,
    /// Tunnel export: frames over what the path MTU leaves a datagram,
    /// cut with the T bit (ERSPAN) or dropped (VXLAN, GRE).
    pub too_big: u64,
    /// Frames the source's filter rejected, where it counts them (AF_XDP).
    pub filtered_out: u64,
    /// The XDP program's counters (AF_XDP only).
    pub xdp: Option<crate::capture::XdpStats>,
    /// The decapsulation stage's counters (`decap=` only). Then `received`
    /// counts the inner frames handed on, not the tunnel packets.
    pub decap: Option<DecapCounters>,
    /// Whether UDP GSO is in use.
    pub gso: bool,
    /// Dry run: packets framed but not sent.
    pub dry_run: bool,
}

impl Counters {
    /// STATS: ifrecv = frames seen (delivered + ring drops, as libpcap's
    /// ps_recv), ifdrop = framed packets lost in sending, krnldrop = ring
    /// drops, svrcapt = packets sent to the sensor (0 in a dry run). Packets
    /// the sampling left out are in none of them but ifrecv. Values wrap at 2^32.
    pub fn stats(&self) -> Stats {
        let sent = if self.dry_run {
            0
        } else {
            self.framed.saturating_sub(self.send_dropped)
        };
        Stats {
            ifrecv: self.received.wrapping_add(self.kernel_drops) as u32,
            ifdrop: self.send_dropped as u32,
            krnldrop: self.kernel_drops as u32,
            svrcapt: sent as u32,
        }
    }
}

/// A running capture.
#[derive(Debug)]
pub struct Worker {
    tx: Sender<Command>,
    /// Written after every command so a sleeping worker takes it at once.
    wake: EventFd,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    dry_run: bool,
}

/// How long a control call waits for the worker to take a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

impl Worker {
    /// Opens the source and the data socket and starts the worker thread.
    pub fn start(spec: CaptureSpec) -> Result<Worker, StartError> {
        Worker::start_with(spec, DatapathOptions::default())
    }

    /// [`Worker::start`] with datapath options.
    pub fn start_with(spec: CaptureSpec, opts: DatapathOptions) -> Result<Worker, StartError> {
        let decap = match spec.decap {
            None => None,
            Some(_) if spec.capture.backend == Backend::AfXdp => {
                return Err(StartError::DecapOnXdp)
            }
            Some(setup) => {
                let lt = setup.linktype;
                Some(
                    DecapStage::new(setup, spec.capture.snaplen)
                        .ok_or(StartError::DecapLinkType(lt))?,
                )
            }
        };
        let wake = EventFd::new().map_err(StartError::Wake)?;
        let source = capture::open(&spec.capture, &wake)?;
        let backpressure = if source.is_live() {
            Backpressure::Drop
        } else {
            Backpressure::Wait
        };
        let snaplen = spec.capture.snaplen as usize;
        let settings = &spec.capture.settings;
        let (bp, sndbuf, dry) = (backpressure, settings.send_buffer, settings.dry_run);
        let run = Run {
            source,
            sampling: spec.sampling,
            shared: Arc::new(Shared::default()),
            latency: spec.capture.latency,
            housekeeping: opts.housekeeping,
            cpu: spec.cpu,
            decap,
            name: format!("dp-{}", spec.capture.ifname),
        };
        // One monomorphised worker per source and sink.
        let (tx, shared, thread) = match &spec.transport {
            Transport::UdpStr { dest, size } => run.spawn(UdpStrSink::open(
                *dest,
                *size,
                snaplen,
                opts.batch_slots,
                sndbuf,
                bp,
                opts.gso,
                dry,
            )?),
            Transport::PlainUdp { dest } => {
                run.spawn(PlainUdpSink::open(*dest, snaplen, sndbuf, bp, dry)?)
            }
            Transport::Tcp(stream) => run.spawn(TcpSink::open(stream, snaplen, bp, dry)?),
            Transport::Tunnel { kind, dest } => {
                run.spawn(TunnelSink::open(*kind, *dest, sndbuf, bp, dry)?)
            }
        }?;
        Ok(Worker {
            tx,
            wake,
            shared,
            thread: Some(thread),
            dry_run: dry,
        })
    }

    /// Replaces the filter (already combined as in [`CaptureSpec::filter`]).
    pub fn update_filter(&self, filter: Program) -> Result<(), UpdateError> {
        let (rtx, rrx) = crossbeam_channel::bounded(1);
        self.tx
            .send_timeout(Command::Filter(filter, rtx), COMMAND_TIMEOUT)
            .map_err(|_| UpdateError::Ended)?;
        self.wake.wake();
        match rrx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(r) => Ok(r?),
            Err(_) => Err(UpdateError::Ended),
        }
    }

    pub fn set_sampling(&self, sampling: Sampling) {
        // A worker that has ended has no use for it.
        let _ = self
            .tx
            .send_timeout(Command::Sampling(sampling), COMMAND_TIMEOUT);
        self.wake.wake();
    }

    /// Counters as STATS reports them: see [`Counters::stats`].
    pub fn stats(&self) -> Stats {
        self.counters().stats()
    }

    /// Every counter.
    pub fn counters(&self) -> Counters {
        let s = &self.shared;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            received: r(&s.received),
            kernel_drops: r(&s.kernel_drops),
            sampled_out: r(&s.sampled_out),
            framed: r(&s.framed),
            framed_bytes: r(&s.framed_bytes),
            send_dropped: r(&s.send_dropped),
            datagrams_sent: r(&s.datagrams_sent),
            datagrams_dropped: r(&s.datagrams_dropped),
            refused: r(&s.refused),
            bytes_sent: r(&s.bytes_sent),
            truncated: r(&s.truncated),
            wakeups: r(&s.wakeups),
            too_big: r(&s.too_big),
            filtered_out: r(&s.filtered_out),
            xdp: s
                .xdp
                .load(Ordering::Relaxed)
                .then(|| crate::capture::XdpStats {
                    redirected: r(&s.xdp_redirected),
                    filtered: r(&s.xdp_filtered),
                    ring_full: r(&s.xdp_ring_full),
                }),
            decap: s.decap.load(Ordering::Relaxed).then(|| DecapCounters {
                decapsulated: r(&s.decap_decapsulated),
                foreign: r(&s.decap_foreign),
                malformed: r(&s.decap_malformed),
                filtered: r(&s.decap_filtered),
            }),
            gso: s.gso.load(Ordering::Relaxed),
            dry_run: self.dry_run,
        }
    }

    /// Why the worker stopped by itself (interface gone, data connection
    /// closed), if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the worker thread has ended (file replay done, failure, stop).
    pub fn is_finished(&self) -> bool {
        self.shared.ended.load(Ordering::Acquire)
    }

    /// Flushes what is framed, stops the thread and returns the final counters.
    pub fn stop(mut self) -> Stats {
        self.stop_counters().stats()
    }

    /// [`Worker::stop`] returning every counter.
    pub fn stop_counters(&mut self) -> Counters {
        let _ = self.tx.try_send(Command::Stop);
        self.wake.wake();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("datapath thread panicked");
            }
        }
        self.counters()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_counters();
        }
    }
}

/// A worker about to start: its source and everything but the sink.
struct Run {
    source: AnySource,
    sampling: Sampling,
    shared: Arc<Shared>,
    latency: Duration,
    housekeeping: Duration,
    cpu: Option<usize>,
    decap: Option<DecapStage>,
    name: String,
}

type Spawned = (Sender<Command>, Arc<Shared>, JoinHandle<()>);

impl Run {
    /// Starts the worker thread with `sink`.
    fn spawn<K: Sink>(self, sink: K) -> Result<Spawned, StartError> {
        let Run {
            source,
            sampling,
            shared,
            latency: rt,
            housekeeping: hk,
            cpu,
            decap,
            name,
        } = self;
        if let Some(gso) = sink.gso() {
            shared.gso.store(gso, Ordering::Relaxed);
        }
        shared.decap.store(decap.is_some(), Ordering::Relaxed);
        let pipe = Pipeline::new(sampling, sink).with_decap(decap);
        let (tx, rx) = crossbeam_channel::bounded(16);
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || match source {
                AnySource::AfPacket(s) => worker::run(s, pipe, rx, sh, rt, hk, cpu),
                AnySource::File(s) => worker::run(s, pipe, rx, sh, rt, hk, cpu),
                AnySource::AfXdp(s) => worker::run(*s, pipe, rx, sh, rt, hk, cpu),
            })
            .map_err(StartError::Spawn)?;
        Ok((tx, shared, thread))
    }
}
