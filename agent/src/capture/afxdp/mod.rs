//! AF_XDP capture: the XDP program of `ebpf/` redirects matching frames of
//! a (mirror/SPAN/tap) interface into one AF_XDP socket per RX queue; the
//! worker reads them out of the UMEM.
//!
//! AF_XDP *takes* the frames it gets away from the host's stack and sees
//! ingress only: it belongs on dedicated capture interfaces, never on a
//! host's own uplink. The kernel pre-filter is conservative (see
//! `xdpc::rules`); the exact filter runs either in XDP too - the cBPF program
//! translated into eBPF (`xdpc::translate`) and tail-called where the pre-filter
//! would redirect, so rejected frames are never copied and the worker skips
//! the interpreter - or, for a program that does not translate exactly
//! (ancillary loads, truncating returns), in user space on every redirected
//! frame. Either way the sensor gets exactly what the filter accepts.
//!
//! Timestamps: AF_XDP descriptors carry none, so the XDP program stamps
//! every frame it redirects (CLOCK_MONOTONIC, in XDP metadata in front of
//! the frame); `Xsk::receive` hands the stamp out with the frame and
//! `AfXdp::drain` converts it to wall-clock time (`stamp`). A frame
//! without one (a driver with no metadata room) gets the time of the round
//! that read it.
//!
//! One worker thread serves every queue of a capture (DESIGN.md says "per
//! queue"; this is the deliberate exception). The queues are parallel where
//! it matters: each RX queue has its own socket, UMEM and rings, and the
//! kernel's side (NAPI poll, XDP program, copy into the UMEM) runs per queue
//! on that queue's CPU; the worker drains the sockets round-robin, at most
//! [`BATCH`] frames each per round. What a worker per queue would cost: a
//! udpstr capture is ONE npkt/seqno stream to the sensor (PROTOCOL.md), so
//! per-queue threads would have to hand their frames to one framer - a lock
//! per batch, or SPSC rings into a merge thread that numbers and sends,
//! with UMEM chunks returned to each queue's fill ring across threads (or a
//! second copy). The worker's own share is ~0.1-0.3 us per frame (benches/
//! README.md "AF_XDP"), i.e. one thread keeps up with several Mpps, more
//! than a 2-core host can feed it; a second thread on such a host only
//! competes with the first and with the kernel's receive work for the same
//! cores. Worth it on a many-core host with a multi-queue NIC beyond
//! ~3 Mpps per capture; then: per-queue capture threads (filter + copy into
//! pre-built records) feeding one numbering sender through SPSC rings.
//!
//! The folder, by what each file is:
//! - [`abi`]: the contract with `ebpf/xrpcapd_xdp.c` (names, shapes, slots,
//!   flags, structs), checked against the compiled object;
//! - [`program`]: loading, attaching and configuring the XDP program;
//! - [`socket`]: one AF_XDP socket (UMEM, bind, receive), over [`ring`]
//!   (the rings shared with the kernel) and [`chain`] (multi-buffer frames);
//! - [`busy_poll`], [`stamp`]: the busy-poll options and frame timestamps.
//!
//! `unsafe` lives in `socket` and `ring` only (each block documented: the
//! workspace lints deny undocumented ones); syscalls go through
//! `capture::sys`, and `abi` writes the shared structs field by field.
#![deny(unsafe_code)]

pub mod abi;
pub mod busy_poll;
mod chain;
pub mod program;
mod ring;
pub mod socket;
pub mod stamp;

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rpcap::bpf::Program;

use xdpc::XdpRules;

use self::abi::{Flow, RULE_LIMITS};
use self::chain::MAX_PIECES;
use self::program::{FilterPlace, XdpCounters, XdpProgram};
use self::socket::{Xsk, XskStats};
use self::stamp::RoundClock;
use super::{CaptureError, Frame, Polled, Request, Source, SourceStats, XdpStats};
use crate::settings::{BusyPoll, XdpMode, DEFAULT_RING_SIZE};

/// Frames read from one socket per round, so every queue gets its turn.
const BATCH: u32 = 256;
/// After a round that found only a few frames, the worker sends them and
/// then lets more gather (a command wakes it early) before the next round:
/// AF_XDP has no block timeout like TPACKET_V3, and every wake-up costs a
/// context switch (in a VM, exits: ~20 us of the worker's CPU here).
/// The pause is sized from the rate measured since the last one so that
/// [`GATHER`] frames, or a quarter of a smaller RX ring, gather at twice
/// that rate, from this much up to the capture's latency bound (as the
/// AF_PACKET block timeout): a frame that arrives during a pause is read
/// and sent right after it.
const COALESCE_MIN: Duration = Duration::from_micros(200);
/// The most frames a pause lets gather at the measured rate: the worker
/// sends them in one burst, which the sensor's socket must take (6 MB at
/// 1500 B). Gathering a quarter of the 131072-entry ring instead lost
/// 1-3 % at the sensor's socket at 1500 B and 200 kpps in benches/forward.sh.
const GATHER: u128 = 4096;
/// A slow link's pause is long (the rate it measured is low), and unlike
/// a TPACKET_V3 block a pause does not end when the ring fills: it must
/// survive a burst at this rate starting right after it begins. With the
/// ring's floor (131072 entries) that allows 65 ms, above the default
/// latency bound.
const BURST_PPS: u64 = 1_000_000;
/// After the XDP filter changes, frames the old one redirected may still be
/// on their way into the rings (XDP flushes redirects at the end of a NAPI
/// poll): the worker keeps judging in user space until this long after the
/// swap and then until the rings held nothing older (see [`Judge`]).
const SETTLE: Duration = Duration::from_millis(10);

/// Who judges the frames the worker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judge {
    /// The user-space cBPF interpreter (the filter is not in XDP).
    User,
    /// The XDP filter, exactly: keep `keep` bytes, run nothing.
    Kernel { keep: u32 },
    /// The XDP filter was just swapped in; user space still runs the (new)
    /// cBPF program until SETTLE has passed and then a round found every
    /// ring empty or `left` more frames were read (the rings' capacity).
    Settling {
        keep: u32,
        swapped: Instant,
        left: Option<u64>,
    },
}

/// How often [`Source::stats`] re-reads the XDP program's per-CPU
/// counters (one `bpf` syscall and allocation per counter) for the one it
/// needs, `redirect_errors` (no socket bound: rare). The worker asks for
/// stats every 100 ms; the socket's own drop counters are read each time.
const XDP_COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// The coalescing pause for RX rings of `ring` entries after `frames`
/// frames arrived in `elapsed`, at most `bound` (the latency bound) and
/// at most what half the ring holds at [`BURST_PPS`].
fn coalesce_for(ring: usize, frames: u64, elapsed: Duration, bound: Duration) -> Duration {
    // frames / elapsed = rate; pause = min(2 * GATHER, ring / 4) / (2 * rate).
    let gather = GATHER.min(ring as u128 / 8);
    let ns = gather * elapsed.as_nanos() / u128::from(frames.max(1));
    let burst = Duration::from_nanos((ring as u64 / 2).saturating_mul(1_000_000_000 / BURST_PPS));
    let max = bound.min(burst).max(COALESCE_MIN);
    Duration::from_nanos(ns.min(u64::MAX as u128) as u64).clamp(COALESCE_MIN, max)
}

/// The first `n` bytes of `parts` as pieces in `out`; returns how many.
fn truncate<'a>(parts: &[&'a [u8]], n: usize, out: &mut [&'a [u8]; MAX_PIECES]) -> usize {
    let mut left = n;
    let mut k = 0;
    for (o, p) in out.iter_mut().zip(parts) {
        if left == 0 {
            break;
        }
        *o = &p[..p.len().min(left)];
        left -= o.len();
        k += 1;
    }
    k
}

/// An open AF_XDP capture.
pub struct AfXdp {
    // Sockets before the program: on drop the program detaches after the
    // sockets are gone (no frame redirected into a closed socket's slot).
    sockets: Vec<Xsk>,
    prog: XdpProgram,
    ifname: String,
    filter: Program,
    judge: Judge,
    /// Where the last open/update put the filter (and why not in XDP).
    place: FilterPlace,
    snaplen: u32,
    drop_rejected: bool,
    own: bool,
    /// Frames the cBPF program rejected in user space.
    pub filtered_out: u64,
    /// A chained frame joined into one buffer for the user-space cBPF
    /// program, which reads one (grown once, then reused).
    joined: Vec<u8>,
    next: usize,
    /// One pollfd per socket, then the wake fd (if any): built once.
    pfds: Vec<libc::pollfd>,
    wake: Option<OwnedFd>,
    /// RX ring entries per socket (sizes the coalescing pause).
    ring: usize,
    /// Frames delivered since `since`, the start of the last pause.
    gathered: u64,
    since: Instant,
    /// The latency bound: the longest coalescing pause.
    latency: Duration,
    /// The pause to take before the next round (a trickle was just read).
    pause: Option<Duration>,
    /// The last pause: the next is at most twice as long.
    last_pause: Duration,
    /// The last round found the sockets nearly empty: what was read can go.
    dry: bool,
    /// The program's counters as last read, and when.
    redirect_errors: u64,
    prog_counters: XdpCounters,
    counters_at: Option<Instant>,
    /// CLOCK_MONOTONIC when the program was loaded: no frame stamp of
    /// ours is older (see `stamp`).
    started_ns: u64,
}

impl std::fmt::Debug for AfXdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdp")
            .field("ifname", &self.ifname)
            .field("queues", &self.sockets.len())
            .finish()
    }
}

/// Number of RX queues of `ifname`: ethtool channels (answers in the
/// caller's network namespace), else sysfs, at least 1.
pub fn rx_queues(ifname: &str) -> u32 {
    if let Some(n) = sys::ifreq::ethtool_rx_channels(ifname) {
        return n.max(1);
    }
    let dir = format!("/sys/class/net/{ifname}/queues");
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// Applies `XdpBusyPoll` to every socket; says how it went ("off",
/// "on (budget N)" or "unavailable"). A kernel without the options (or
/// without our privilege) leaves the capture running without: logged once.
fn busy_poll_all(ifname: &str, sockets: &mut [Xsk], setting: BusyPoll) -> String {
    let BusyPoll::On { budget } = setting else {
        return "off".into();
    };
    for s in sockets.iter_mut() {
        if let Err(e) = s.set_busy_poll(budget) {
            log::warn!(
                "{ifname}: XdpBusyPoll = {setting}: busy polling unavailable on RX queue {} \
                 ({e}); capturing without it",
                s.queue
            );
            return "unavailable".into();
        }
    }
    format!("on (budget {budget}, {} us)", busy_poll::USECS)
}

/// The one line per open/update that says where the filter runs.
fn log_place(ifname: &str, place: &FilterPlace) {
    match place {
        FilterPlace::Kernel { .. } => log::info!("{ifname}: filter runs exactly in XDP"),
        FilterPlace::UserSpace { reason } => {
            log::info!("{ifname}: filter runs in user space: {reason}")
        }
    }
}

/// MemAvailable of /proc/meminfo, in bytes.
fn mem_available() -> Option<usize> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: usize = m
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

impl AfXdp {
    /// Loads the program, binds a socket per RX queue, then attaches.
    /// Reads the request's interface, snaplen, filter, `own` (left to the
    /// stack by the XDP program) and from its settings `xdp` (`XdpMode`,
    /// `XdpReplace`, `XdpDropRejected`, `XdpBusyPoll`: the interfaces are the
    /// host's business, it chose this source) and `ring_size` (UMEM bytes for all
    /// queues together, raised to a floor; 0: the default RingSize; see
    /// `socket::frames_per_queue`). Serves every RX queue.
    pub fn open(req: &Request) -> Result<AfXdp, CaptureError> {
        AfXdp::open_queues(req, 0)
    }

    /// [`AfXdp::open`] serving the first `queues` RX queues (0: every queue).
    pub fn open_queues(req: &Request, queues: u32) -> Result<AfXdp, CaptureError> {
        let err = |e: program::XdpError| CaptureError::Format(e.to_string());
        let filter = req.filter.clone();
        let ifindex =
            sys::ifreq::ifindex(&req.ifname).map_err(|e| CaptureError::io("interface", e))?;
        let started_ns = stamp::monotonic_ns();
        let mut prog = XdpProgram::load(&req.ifname).map_err(err)?;
        let flows = req.own.as_ref().map(Flow::own_traffic).unwrap_or_default();
        prog.set_own(&flows).map_err(err)?;
        prog.set_rules(
            &XdpRules::derive(filter.insns(), &RULE_LIMITS),
            req.settings.xdp.drop_rejected,
            !flows.is_empty(),
        )
        .map_err(err)?;
        // Before attaching: the first frame already meets the exact filter.
        let place = prog.set_filter(&filter, req.settings.xdp.drop_rejected);
        let judge = match place {
            FilterPlace::Kernel { keep } => Judge::Kernel { keep },
            FilterPlace::UserSpace { .. } => Judge::User,
        };

        let queues = if queues == 0 {
            rx_queues(&req.ifname)
        } else {
            queues
        };
        let ring_bytes = if req.settings.ring_size == 0 {
            DEFAULT_RING_SIZE
        } else {
            req.settings.ring_size
        };
        let mut frames = socket::frames_per_queue(ring_bytes, queues, mem_available());
        // Frames up to the MTU (with Ethernet and two VLAN tags) in one chunk:
        // then no frame needs a chain, and zero-copy without multi-buffer
        // loses nothing.
        let mtu = sys::ifreq::mtu(&req.ifname).ok();
        let mtu_fits = mtu.is_some_and(|m| m as usize + 22 <= socket::CHUNK_FRAME);
        let try_zc = req.settings.xdp.mode != XdpMode::Generic;
        let mut sockets = loop {
            let opened: std::io::Result<Vec<Xsk>> = (0..queues)
                .map(|q| Xsk::open(ifindex, q, frames, try_zc, mtu_fits))
                .collect();
            match opened {
                Ok(v) => break v,
                // The UMEM is pinned memory (RLIMIT_MEMLOCK without
                // CAP_IPC_LOCK): all queues again with half as many frames.
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM))
                        && frames > socket::MIN_QUEUE_FRAMES =>
                {
                    log::info!(
                        "{}: AF_XDP UMEM of {frames} frames per queue refused ({e}); trying {}",
                        &req.ifname,
                        frames / 2
                    );
                    frames /= 2;
                }
                Err(e) => return Err(CaptureError::io("AF_XDP socket", e)),
            }
        };
        for (q, s) in (0..).zip(&sockets) {
            prog.set_socket(q, s.fd()).map_err(err)?;
        }
        let busy = busy_poll_all(&req.ifname, &mut sockets, req.settings.xdp.busy_poll);
        let mode = prog
            .attach(req.settings.xdp.mode, req.settings.xdp.replace)
            .map_err(err)?;
        let zc = sockets.iter().all(|s| s.info.zero_copy);
        let mb = sockets.iter().all(|s| s.info.multi_buffer);
        let umem_mib = (frames * socket::CHUNK_SIZE * queues as usize) >> 20;
        log::warn!(
            "{}: AF_XDP capture ({mode} XDP, {} bind, multi-buffer {}, busy polling {busy}, \
             {queues} queue(s) of {frames} frames = {umem_mib} MiB UMEM, {} ms at 1 Mpps): \
             frames redirected to the capture are taken away from the host's stack, and \
             only ingress is seen: use it on mirror/SPAN/tap interfaces only",
            &req.ifname,
            if zc { "zero-copy" } else { "copy-mode" },
            if mb { "on" } else { "off" },
            frames * queues as usize / 1000,
        );
        if !mb && !mtu_fits {
            let largest = sockets
                .iter()
                .map(|s| s.info.max_frame())
                .min()
                .unwrap_or(0);
            log::warn!(
                "{}: the kernel or driver refused AF_XDP multi-buffer (XDP_USE_SG, Linux >= 6.6): \
                 frames longer than {largest} bytes (MTU {}) are dropped and counted as kernel drops",
                &req.ifname,
                mtu.map_or_else(|| "unknown".to_owned(), |m| m.to_string()),
            );
        }
        log_place(&req.ifname, &place);
        let pfds = sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Ok(AfXdp {
            sockets,
            prog,
            ifname: req.ifname.clone(),
            filter,
            judge,
            place,
            snaplen: req.snaplen,
            drop_rejected: req.settings.xdp.drop_rejected,
            own: !flows.is_empty(),
            filtered_out: 0,
            joined: Vec::new(),
            next: 0,
            pfds,
            wake: None,
            ring: frames,
            gathered: 0,
            since: Instant::now(),
            latency: req.latency,
            pause: None,
            last_pause: COALESCE_MIN,
            dry: false,
            redirect_errors: 0,
            prog_counters: Default::default(),
            counters_at: None,
            started_ns,
        })
    }

    /// The busy-poll options each socket carries (getsockopt).
    pub fn busy_poll_settings(&self) -> Vec<std::io::Result<busy_poll::Settings>> {
        self.sockets
            .iter()
            .map(|s| busy_poll::read(&s.fd()))
            .collect()
    }

    /// Whether the sockets busy-poll (the option was on and the kernel took it).
    pub fn busy_polling(&self) -> bool {
        !self.sockets.is_empty() && self.sockets.iter().all(|s| s.info.busy_poll)
    }

    pub fn xdp_mode(&self) -> XdpMode {
        self.prog.mode()
    }

    pub fn xdp_counters(&self) -> XdpCounters {
        self.prog.counters()
    }

    /// Whether the filter now runs exactly in XDP (user space runs no cBPF).
    pub fn filter_in_xdp(&self) -> bool {
        matches!(self.judge, Judge::Kernel { .. })
    }

    /// Where the last open/update put the filter, with the reason when it
    /// is not in XDP.
    pub fn filter_place(&self) -> &FilterPlace {
        &self.place
    }

    /// UMEM frames (= RX and fill ring entries) per RX queue.
    pub fn queue_depth(&self) -> usize {
        self.ring
    }

    /// Frames read per RX queue (socket) so far.
    pub fn queue_frames(&self) -> Vec<u64> {
        self.sockets.iter().map(|s| s.received).collect()
    }

    /// Kernel counters of every socket, summed.
    pub fn socket_stats(&self) -> XskStats {
        let mut t = XskStats::default();
        for s in &self.sockets {
            if let Ok(st) = s.stats() {
                t.rx_dropped += st.rx_dropped;
                t.rx_ring_full += st.rx_ring_full;
                t.rx_fill_ring_empty += st.rx_fill_ring_empty;
                t.rx_invalid += st.rx_invalid;
                t.chain_dropped += st.chain_dropped;
            }
        }
        t
    }

    /// One round over every socket: returns the frames handed to `sink`.
    fn drain<F: FnMut(&Frame<'_>)>(&mut self, sink: &mut F) -> usize {
        // Each frame carries its arrival time from the XDP program
        // (monotonic); the clocks that turn it into wall time are sampled
        // once per round, at its first frame (an empty round reads none).
        let mut clock: Option<RoundClock> = None;
        let started = self.started_ns;
        let n = self.sockets.len();
        let mut delivered = 0;
        let (filter, snaplen) = (&self.filter, self.snaplen as usize);
        let in_xdp = match self.judge {
            Judge::Kernel { keep } => Some(keep),
            _ => None,
        };
        let mut rejected = 0u64;
        let joined = &mut self.joined;
        for i in 0..n {
            let s = &mut self.sockets[(self.next + i) % n];
            s.receive(BATCH, |parts, mono| {
                let wire_len = parts.iter().map(|p| p.len()).sum::<usize>();
                let keep = match (in_xdp, parts) {
                    (Some(keep), _) => keep,
                    (None, [data]) => filter.run(data, wire_len as u32),
                    (None, _) => {
                        joined.clear();
                        for p in parts {
                            joined.extend_from_slice(p);
                        }
                        filter.run(joined, wire_len as u32)
                    }
                } as usize;
                if keep == 0 {
                    rejected += 1;
                    return;
                }
                delivered += 1;
                let c = clock.get_or_insert_with(|| RoundClock::now(started));
                let (ts_sec, ts_usec) = c.frame_time(mono);
                let want = keep.min(snaplen);
                let mut emit = |parts: &[&[u8]]| {
                    sink(&Frame {
                        ts_sec,
                        ts_usec,
                        parts,
                        wire_len: wire_len as u32,
                    })
                };
                if let [one] = parts {
                    // The common case: no array of pieces to set up.
                    emit(&[&one[..one.len().min(want)]]);
                } else {
                    let mut cut: [&[u8]; MAX_PIECES] = [&[]; MAX_PIECES];
                    let k = truncate(parts, want, &mut cut);
                    emit(&cut[..k]);
                }
            });
        }
        self.next = (self.next + 1) % n.max(1);
        self.filtered_out += rejected;
        self.settle(delivered as u64 + rejected, n);
        delivered
    }

    /// Moves a just-swapped XDP filter towards [`Judge::Kernel`] after a
    /// round that read `read` frames from `n` sockets.
    fn settle(&mut self, read: u64, n: usize) {
        let Judge::Settling {
            keep,
            swapped,
            left,
        } = &mut self.judge
        else {
            return;
        };
        match left {
            None if swapped.elapsed() >= SETTLE => {
                // Whatever the old filter redirected is in the rings now:
                // at most a ring's worth per socket.
                *left = Some(self.ring as u64 * n as u64)
            }
            None => {}
            Some(l) if read == 0 || read >= *l => self.judge = Judge::Kernel { keep: *keep },
            Some(l) => *l -= read,
        }
    }

    /// Rounds of [`drain`](Self::drain) until the sockets are (nearly)
    /// dry or one RX ring's worth of frames is out: the worker sends once
    /// per call, so a call that took only one round (`BATCH` frames) would
    /// cost a `sendmmsg` per `BATCH` frames, and with a sensor whose receive
    /// runs on another CPU, often an IPI to wake it (~10 us of this CPU in a
    /// VM). Returns the frames delivered and whether the last round found
    /// the sockets nearly empty (`false`: the lap ended with more waiting).
    fn lap<F: FnMut(&Frame<'_>)>(&mut self, sink: &mut F) -> (usize, bool) {
        let mut total = 0;
        loop {
            let n = self.drain(sink);
            total += n;
            if n < BATCH as usize / 2 {
                return (total, true);
            }
            if total >= self.ring {
                return (total, false);
            }
        }
    }

    /// Waits until a socket is readable, a command arrives (wake fd) or
    /// `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> Result<(), CaptureError> {
        if self.sockets.iter().any(|s| s.has_frames()) {
            return Ok(());
        }
        // Nothing ready: let busy polling / need_wakeup drive the queues once.
        for s in &self.sockets {
            s.kick();
        }
        if self.sockets.iter().any(|s| s.has_frames()) {
            return Ok(());
        }
        for p in &mut self.pfds {
            p.revents = 0;
        }
        sys::poll::poll(&mut self.pfds, timeout)
            .map_err(|e| CaptureError::io("poll on the AF_XDP sockets", e))?;
        self.take_wake();
        let n = self.sockets.len();
        if self.pfds[..n]
            .iter()
            .any(|p| p.revents & (libc::POLLERR | libc::POLLNVAL) != 0)
            && sys::ifreq::ifindex(&self.ifname).is_err()
        {
            return Err(CaptureError::Vanished(self.ifname.clone()));
        }
        Ok(())
    }

    /// Lets frames gather for `d`, waking early only for a command.
    fn coalesce(&mut self, d: Duration) -> Result<(), CaptureError> {
        let n = self.sockets.len();
        let wake = &mut self.pfds[n..];
        for p in wake.iter_mut() {
            p.revents = 0;
        }
        sys::poll::poll(wake, d).map_err(|e| CaptureError::io("poll on the wake fd", e))?;
        self.take_wake();
        Ok(())
    }

    /// Resets the wake eventfd if it fired (the worker reads its commands next).
    fn take_wake(&mut self) {
        let n = self.sockets.len();
        if let Some(p) = self.pfds.get(n) {
            if p.revents & libc::POLLIN != 0 {
                sys::eventfd::drain(&p.fd);
            }
        }
    }

    /// The eventfd the control side writes after each command: a worker
    /// waiting for frames takes the command at once.
    pub fn set_wake_fd(&mut self, fd: OwnedFd) {
        self.pfds.truncate(self.sockets.len());
        self.pfds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.wake = Some(fd);
    }
}

impl Source for AfXdp {
    fn poll<F: FnMut(&Frame<'_>)>(
        &mut self,
        timeout: Duration,
        sink: &mut F,
    ) -> Result<Polled, CaptureError> {
        // The pause goes before the round, not after it: what a round read
        // is sent at once (caught_up), and a frame that arrived during the
        // pause waits at most the pause.
        if let Some(pause) = self.pause.take() {
            self.coalesce(pause.min(timeout))?;
        }
        let (mut n, mut dry) = self.lap(sink);
        if n == 0 {
            let idle = Instant::now();
            self.wait(timeout)?;
            if idle.elapsed() >= self.latency {
                // An idle link: its next frames may be a burst.
                self.last_pause = COALESCE_MIN;
            }
            (n, dry) = self.lap(sink);
        }
        self.dry = dry;
        self.gathered += n as u64;
        if n > 0 && dry {
            // A trickle: it goes out now, and the next frames gather for a
            // pause sized from the rate since the last one. A pause does
            // not end when traffic surges (the sensor then gets what
            // gathered in one burst), so after an idle spell the pauses
            // start short and at most double each time: a slow link
            // reaches the whole bound in a few rounds, a burst never
            // gathers for long.
            let now = Instant::now();
            let pause = coalesce_for(self.ring, self.gathered, now - self.since, self.latency)
                .min(self.last_pause * 2);
            (self.pause, self.last_pause) = (Some(pause), pause);
            (self.gathered, self.since) = (0, now);
        }
        Ok(Polled::Frames(n))
    }

    fn caught_up(&self) -> bool {
        self.dry
    }

    fn set_filter(&mut self, filter: &Program) -> Result<(), CaptureError> {
        // Frames already in the rings are judged by the new program too:
        // user space runs it until the new XDP filter has settled.
        let old = (
            std::mem::replace(&mut self.filter, filter.clone()),
            self.judge,
        );
        self.judge = Judge::User;
        let rules = self.prog.set_rules(
            &XdpRules::derive(filter.insns(), &RULE_LIMITS),
            self.drop_rejected,
            self.own,
        );
        if let Err(e) = rules {
            // The rules only ever widen on the way (see set_rules) and the
            // old XDP filter is still in its slot: the old filter holds.
            (self.filter, self.judge) = old;
            return Err(CaptureError::Format(e.to_string()));
        }
        let place = self.prog.set_filter(&self.filter, self.drop_rejected);
        if let FilterPlace::Kernel { keep } = place {
            self.judge = Judge::Settling {
                keep,
                swapped: Instant::now(),
                left: None,
            };
        }
        log_place(&self.ifname, &place);
        self.place = place;
        Ok(())
    }

    fn stats(&mut self) -> SourceStats {
        let s = self.socket_stats();
        let now = Instant::now();
        let due = match self.counters_at {
            Some(t) => now.duration_since(t) >= XDP_COUNTERS_EVERY,
            None => true,
        };
        if due {
            self.prog_counters = self.prog.counters();
            self.redirect_errors = self.prog_counters.redirect_errors;
            self.counters_at = Some(now);
        }
        SourceStats {
            // Frames the capture should have had but lost: socket RX ring
            // full, no room in the UMEM or (without multi-buffer) longer
            // than a chunk, chains too long to take, and matches with
            // no socket bound.
            kernel_drops: s.rx_dropped + s.rx_ring_full + s.chain_dropped + self.redirect_errors,
            filtered_out: self.filtered_out,
            xdp: Some(XdpStats {
                redirected: self.prog_counters.redirected,
                filtered: self.prog_counters.filtered,
                ring_full: s.rx_ring_full,
            }),
        }
    }
}

impl Drop for AfXdp {
    fn drop(&mut self) {
        let c = self.prog.counters();
        let s = self.socket_stats();
        log::info!(
            "{}: AF_XDP capture ends: xdp seen {} redirected {} passed {} (own traffic {}) \
             dropped {} redirect errors {} filtered in XDP {} unstamped {}; sockets rx_dropped {} \
             ring_full {} fill_empty {} chains dropped {}; filtered out in user space {}",
            self.ifname,
            c.seen,
            c.redirected,
            c.passed,
            c.own,
            c.dropped,
            c.redirect_errors,
            c.filtered,
            c.unstamped,
            s.rx_dropped,
            s.rx_ring_full,
            s.rx_fill_ring_empty,
            s.chain_dropped,
            self.filtered_out
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `XdpBusyPoll = on` where the kernel refuses the options: reported as
    /// unavailable, the sockets stay usable and do not kick; with the
    /// privilege: on. Each case in its own thread and network namespace
    /// (sockets bound to that namespace's lo; no program, no traffic).
    #[test]
    #[ignore = "needs root"]
    fn busy_polling_is_on_or_reported_unavailable() {
        let run = |privileged: bool| {
            std::thread::spawn(move || {
                xrpcap_testkit::caps::unshare_net();
                let lo = sys::ifreq::ifindex("lo").unwrap();
                let mut socks =
                    vec![Xsk::open(lo, 0, 512, false, true).expect("AF_XDP socket on lo")];
                if !privileged {
                    xrpcap_testkit::caps::drop_effective(xrpcap_testkit::caps::CAP_NET_ADMIN);
                }
                let on = BusyPoll::On { budget: 8 };
                let said = busy_poll_all("lo", &mut socks, on);
                let off = busy_poll_all("lo", &mut socks, BusyPoll::Off);
                (said, off, socks[0].info.busy_poll)
            })
            .join()
            .unwrap()
        };
        let (said, off, busy) = run(true);
        assert_eq!((said.as_str(), busy), ("on (budget 8, 20 us)", true));
        assert_eq!(off, "off");
        let (said, _, busy) = run(false);
        assert_eq!((said.as_str(), busy), ("unavailable", false));
    }

    #[test]
    fn coalescing_pause_gathers_a_bounded_burst_at_twice_the_measured_rate() {
        let ms = Duration::from_millis;
        let bound = ms(50);
        // 100 kpps into 131072 entries: 4096 / 100 k = 40.96 ms.
        assert_eq!(
            coalesce_for(131_072, 100, ms(1), bound),
            Duration::from_micros(40_960)
        );
        // 1 Mpps: 4.096 ms; 1000 Mpps: the lower bound.
        assert_eq!(
            coalesce_for(131_072, 1000, ms(1), bound),
            Duration::from_micros(4096)
        );
        assert_eq!(coalesce_for(131_072, 1_000_000, ms(1), bound), COALESCE_MIN);
        // A trickle: the latency bound; a bound below the floor: the floor.
        assert_eq!(coalesce_for(131_072, 1, ms(100), bound), bound);
        assert_eq!(coalesce_for(8192, 1, ms(100), ms(0)), COALESCE_MIN);
        // A long bound: what half the ring holds at 1 Mpps.
        assert_eq!(
            coalesce_for(131_072, 1, ms(100), ms(1000)),
            Duration::from_micros(65_536)
        );
        assert_eq!(
            coalesce_for(8192, 1, ms(100), bound),
            Duration::from_micros(4096)
        );
        for (frames, elapsed) in [(10u64, ms(1)), (500, ms(2)), (7, ms(40))] {
            let p = coalesce_for(4096, frames, elapsed, bound);
            let at_twice = p.as_secs_f64() * 2.0 * frames as f64 / elapsed.as_secs_f64();
            assert!(at_twice <= 1024.0 + 1.0 || p == COALESCE_MIN, "{p:?}");
        }
    }
}
