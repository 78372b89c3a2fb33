//! The datapath thread: source → sampler → framer → sender, one capture.
//!
//! Per packet the worker does one sampling decision and one copy (ring →
//! datagram); everything else (commands, flushes, counters, kernel stats,
//! sends) happens once per poll round or per full batch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rpcap::bpf::Program;
use rpcap::msg::Sampling;
use rpcap::PktHdr;

use super::decap::DecapStage;
use super::sampler::Sampler;
use super::sink::{Counts, Sink};
use crate::capture::{CaptureError, Frame, Polled, Source};

/// How often kernel drop counters are read and an idle TCP peer is checked
/// while the worker is awake anyway (the default of
/// `DatapathOptions::housekeeping`): housekeeping never wakes it by itself
/// before [`IDLE_WAKE`]. Commands do not wait for either: an eventfd
/// written after every command wakes the worker at once. Every wake-up
/// costs CPU (a context switch, in a VM an exit, cold caches: 100-200 us
/// of the worker's time each on the project's VM at 10 kpps), so a slow or
/// idle link should cause as few as the latency bound allows.
pub(crate) const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// The longest the worker sleeps when no frame and no flush is due: how
/// late an idle capture notices a closed TCP peer or new kernel drops.
pub(crate) const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Messages from the control thread, read once per poll round.
#[derive(Debug)]
pub(crate) enum Command {
    Filter(Program, Sender<Result<(), CaptureError>>),
    Sampling(Sampling),
    Stop,
}

/// Counters shared with the control thread (written by the worker once per round).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub received: AtomicU64,
    pub kernel_drops: AtomicU64,
    pub sampled_out: AtomicU64,
    pub framed: AtomicU64,
    pub framed_bytes: AtomicU64,
    pub send_dropped: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    pub refused: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub truncated: AtomicU64,
    pub wakeups: AtomicU64,
    pub too_big: AtomicU64,
    pub filtered_out: AtomicU64,
    /// The XDP program's counters (AF_XDP only), as the source last read them.
    pub xdp_redirected: AtomicU64,
    pub xdp_filtered: AtomicU64,
    pub xdp_ring_full: AtomicU64,
    pub xdp: AtomicBool,
    /// The decapsulation stage's counters (`decap=` only).
    pub decap_decapsulated: AtomicU64,
    pub decap_foreign: AtomicU64,
    pub decap_malformed: AtomicU64,
    pub decap_filtered: AtomicU64,
    pub decap: AtomicBool,
    pub gso: AtomicBool,
    pub ended: AtomicBool,
    pub failure: Mutex<Option<String>>,
}

/// The worker's own counters, published to [`Shared`] once per round.
#[derive(Debug, Default, Clone, Copy)]
struct Local {
    received: u64,
    sampled_out: u64,
    framed: u64,
    /// Captured bytes (caplen) of the packets framed.
    framed_bytes: u64,
    /// Frames cut to the snapshot length (caplen < wire length).
    truncated: u64,
    /// Rounds of the worker's loop: its wake-ups, near enough.
    wakeups: u64,
    /// What the sink counts.
    sent: Counts,
}

/// Sampling, framing and sending: everything after the source.
pub(crate) struct Pipeline<K> {
    sampler: Sampler,
    out: K,
    c: Local,
    npkt: u32,
    /// Set when the data connection died inside a frame callback.
    failure: Option<String>,
    /// The decapsulation stage in front (`decap=`); [`run`] takes it out
    /// to call it beside the pipeline.
    decap: Option<DecapStage>,
}

impl<K: Sink> Pipeline<K> {
    pub fn new(sampling: Sampling, out: K) -> Pipeline<K> {
        Pipeline {
            sampler: Sampler::new(sampling),
            out,
            c: Local::default(),
            npkt: 0,
            failure: None,
            decap: None,
        }
    }

    /// The pipeline behind a decapsulation stage.
    pub fn with_decap(mut self, decap: Option<DecapStage>) -> Pipeline<K> {
        self.decap = decap;
        self
    }

    /// One frame from the source.
    #[inline]
    fn on_frame(&mut self, f: &Frame<'_>) {
        self.c.received += 1;
        if self.failure.is_some() {
            return;
        }
        if !self.sampler.keep(f.ts_sec, f.ts_usec) {
            self.c.sampled_out += 1;
            return;
        }
        self.npkt = self.npkt.wrapping_add(1);
        self.c.framed += 1;
        let caplen = f.caplen() as u32;
        self.c.framed_bytes += u64::from(caplen);
        self.c.truncated += u64::from(caplen < f.wire_len);
        let hdr = PktHdr {
            ts_sec: f.ts_sec,
            ts_usec: f.ts_usec,
            caplen,
            len: f.wire_len,
            npkt: self.npkt,
        };
        if let Err(e) = self.out.push(&hdr, f.parts, &mut self.c.sent) {
            self.failure = Some(e.to_string());
        }
    }

    /// Sends what is complete (udpstr: full datagrams; plain: every message).
    fn send(&mut self) {
        if let Err(e) = self.out.send(&mut self.c.sent) {
            self.failure = Some(e.to_string());
        }
    }

    fn has_partial(&self) -> bool {
        self.out.has_partial()
    }

    /// Closes the partly filled datagram and sends it (read-timeout flush).
    fn flush(&mut self) {
        if let Err(e) = self.out.flush(&mut self.c.sent) {
            self.failure = Some(e.to_string());
        }
    }

    /// End of capture: everything framed goes out (TCP: bounded wait).
    fn finish(&mut self) {
        if let Err(e) = self.out.finish(&mut self.c.sent) {
            self.failure.get_or_insert(e.to_string());
        }
    }

    fn publish(&self, s: &Shared) {
        let c = &self.c;
        s.received.store(c.received, Ordering::Relaxed);
        s.sampled_out.store(c.sampled_out, Ordering::Relaxed);
        s.framed.store(c.framed, Ordering::Relaxed);
        s.framed_bytes.store(c.framed_bytes, Ordering::Relaxed);
        s.bytes_sent.store(c.sent.bytes_sent, Ordering::Relaxed);
        s.truncated.store(c.truncated, Ordering::Relaxed);
        s.wakeups.store(c.wakeups, Ordering::Relaxed);
        s.send_dropped.store(c.sent.send_dropped, Ordering::Relaxed);
        s.datagrams_sent
            .store(c.sent.datagrams_sent, Ordering::Relaxed);
        s.datagrams_dropped
            .store(c.sent.datagrams_dropped, Ordering::Relaxed);
        s.refused.store(c.sent.refused, Ordering::Relaxed);
        s.too_big.store(c.sent.too_big, Ordering::Relaxed);
        if let Some(gso) = self.out.gso() {
            s.gso.store(gso, Ordering::Relaxed);
        }
    }
}

/// The source's counters, read at housekeeping (they may cost a syscall).
fn publish_source(s: &Shared, st: crate::capture::SourceStats) {
    s.kernel_drops.store(st.kernel_drops, Ordering::Relaxed);
    s.filtered_out.store(st.filtered_out, Ordering::Relaxed);
    if let Some(x) = st.xdp {
        s.xdp_redirected.store(x.redirected, Ordering::Relaxed);
        s.xdp_filtered.store(x.filtered, Ordering::Relaxed);
        s.xdp_ring_full.store(x.ring_full, Ordering::Relaxed);
        s.xdp.store(true, Ordering::Relaxed);
    }
}

/// The decapsulation stage's counters, once per round.
fn publish_decap(s: &Shared, d: Option<&DecapStage>) {
    if let Some(d) = d {
        s.decap_decapsulated
            .store(d.c.decapsulated, Ordering::Relaxed);
        s.decap_foreign.store(d.c.foreign, Ordering::Relaxed);
        s.decap_malformed.store(d.c.malformed, Ordering::Relaxed);
        s.decap_filtered.store(d.c.filtered, Ordering::Relaxed);
    }
}

/// Pins the calling thread to `cpu` (a warning if it cannot).
fn pin(cpu: usize) {
    if let Err(e) = sys::cpu::pin_current_thread(cpu) {
        log::warn!("cannot pin to CPU {cpu}: {e}");
    }
}

/// Runs one capture until stopped, the source ends, or it fails.
pub(crate) fn run<S: Source, K: Sink>(
    mut source: S,
    mut pipe: Pipeline<K>,
    rx: Receiver<Command>,
    shared: Arc<Shared>,
    latency: Duration,
    housekeeping: Duration,
    cpu: Option<usize>,
) {
    if let Some(cpu) = cpu {
        pin(cpu);
    }
    let mut decap = pipe.decap.take();
    let mut partial_since: Option<Instant> = None;
    let mut last_housekeeping = Instant::now();
    let mut failure: Option<String> = None;
    // How long the next poll may sleep: until the flush deadline of a
    // partly filled datagram, or IDLE_WAKE (housekeeping rides on the
    // wake-ups the frames cause).
    let mut wait = housekeeping.max(IDLE_WAKE);
    'capture: loop {
        pipe.c.wakeups += 1;
        loop {
            match rx.try_recv() {
                Ok(Command::Stop) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    break 'capture
                }
                Ok(Command::Filter(filter, reply)) => {
                    // Decapsulating, the sensor's filter judges inner frames.
                    let r = match &mut decap {
                        Some(d) => {
                            d.set_filter(filter);
                            Ok(())
                        }
                        None => source.set_filter(&filter),
                    };
                    let _ = reply.send(r);
                }
                Ok(Command::Sampling(s)) => pipe.sampler = Sampler::new(s),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
            }
        }
        let polled = match &mut decap {
            None => source.poll(wait, &mut |f| pipe.on_frame(f)),
            Some(d) => source.poll(wait, &mut |f| d.process(f, &mut |i| pipe.on_frame(i))),
        };
        match polled {
            Ok(Polled::Frames(_)) => {}
            Ok(Polled::End) => break 'capture,
            Err(e) => {
                failure = Some(e.to_string());
                break 'capture;
            }
        }
        // Counters first: once the datagrams are out, the sensor may ask for
        // STATS before this thread runs again, and must see these packets.
        pipe.publish(&shared);
        publish_decap(&shared, decap.as_ref());
        pipe.send();
        let now = Instant::now();
        if pipe.has_partial() {
            // Caught up with the source: its frames already waited up to
            // the bound there (AF_PACKET's block timeout), and holding them
            // for more would only save a short datagram per wake-up.
            let since = *partial_since.get_or_insert(now);
            if source.caught_up() || now.duration_since(since) >= latency {
                pipe.flush();
                partial_since = None;
            }
        } else {
            partial_since = None;
        }
        if now.duration_since(last_housekeeping) >= housekeeping {
            last_housekeeping = now;
            publish_source(&shared, source.stats());
            if pipe.failure.is_none() {
                pipe.failure = pipe.out.peer_closed();
            }
        }
        if let Some(f) = pipe.failure.take() {
            failure = Some(f);
            break 'capture;
        }
        pipe.publish(&shared);
        publish_decap(&shared, decap.as_ref());
        wait = housekeeping.max(IDLE_WAKE);
        if let Some(since) = partial_since {
            wait = wait.min(latency.saturating_sub(now.duration_since(since)));
        }
    }
    pipe.finish();
    if failure.is_none() {
        failure = pipe.failure.take();
    }
    publish_source(&shared, source.stats());
    pipe.publish(&shared);
    publish_decap(&shared, decap.as_ref());
    if let Some(f) = failure {
        log::warn!("capture ended: {f}");
        *shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }
    shared.ended.store(true, Ordering::Release);
}
