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
use rpcap::udpstr::{Batch, Framer};
use rpcap::PktHdr;

use super::loss::LossTracker;
use super::sampler::Sampler;
use super::sender::{MsgArena, TcpSender, UdpSender};
use crate::capture::{CaptureError, Frame, Polled, Source};

/// How often kernel drop counters are read and an idle TCP peer is checked;
/// also the longest the worker sleeps in its source (the default of
/// `DatapathOptions::housekeeping`). Commands do not wait for it: an
/// eventfd written after every command wakes the worker at once. Every
/// wake-up costs CPU (a context switch, in a VM an exit), so an idle or
/// slow link should cause few.
pub(crate) const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// How long the end of a capture waits for a slow TCP peer to take the rest.
const TCP_DRAIN: Duration = Duration::from_secs(1);

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
    pub send_dropped: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    pub refused: AtomicU64,
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
    send_dropped: u64,
    datagrams_sent: u64,
    datagrams_dropped: u64,
    refused: u64,
}

/// Where framed packets go.
pub(crate) enum Output {
    UdpStr {
        framer: Framer,
        batch: Batch,
        /// `None`: dry run (frame, count, send nothing).
        udp: Option<UdpSender>,
        loss: LossTracker,
    },
    PlainUdp {
        arena: MsgArena,
        udp: Option<UdpSender>,
    },
    Tcp {
        arena: MsgArena,
        tcp: Option<TcpSender>,
    },
}

/// Sampling, framing and sending: everything after the source.
pub(crate) struct Pipeline {
    sampler: Sampler,
    out: Output,
    c: Local,
    npkt: u32,
    /// Set when the data connection died inside a frame callback.
    failure: Option<String>,
}

impl Pipeline {
    pub fn new(sampling: Sampling, out: Output) -> Pipeline {
        Pipeline {
            sampler: Sampler::new(sampling),
            out,
            c: Local::default(),
            npkt: 0,
            failure: None,
        }
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
        let hdr = PktHdr {
            ts_sec: f.ts_sec,
            ts_usec: f.ts_usec,
            caplen: f.caplen() as u32,
            len: f.wire_len,
            npkt: self.npkt,
        };
        self.push(&hdr, f.parts);
    }

    fn push(&mut self, hdr: &PktHdr, parts: &[&[u8]]) {
        match &mut self.out {
            Output::UdpStr { framer, batch, .. } => {
                if framer.push_parts(batch, hdr, parts).is_ok() {
                    return;
                }
                self.send();
                let Output::UdpStr { framer, batch, .. } = &mut self.out else {
                    unreachable!()
                };
                if framer.push_parts(batch, hdr, parts).is_ok() {
                    return;
                }
                // The partial datagram left after the send takes the room
                // the record needs: close it and try on an empty batch.
                framer.flush(batch);
                self.send();
                let Output::UdpStr { framer, batch, .. } = &mut self.out else {
                    unreachable!()
                };
                if framer.push_parts(batch, hdr, parts).is_err() {
                    // Cannot happen with a batch of `Batch::min_slots`; count it anyway.
                    self.c.send_dropped += 1;
                }
            }
            Output::PlainUdp { arena, .. } | Output::Tcp { arena, .. } => {
                if arena.push(hdr, parts).is_ok() {
                    return;
                }
                self.send();
                let (Output::PlainUdp { arena, .. } | Output::Tcp { arena, .. }) = &mut self.out
                else {
                    unreachable!()
                };
                if arena.push(hdr, parts).is_err() {
                    // TCP peer not keeping up: the unsent tail fills the
                    // buffer. Drop the whole message, never part of one.
                    self.c.send_dropped += 1;
                }
            }
        }
    }

    /// Sends what is complete (udpstr: full datagrams; plain: every message).
    fn send(&mut self) {
        let c = &mut self.c;
        match &mut self.out {
            Output::UdpStr {
                batch, udp, loss, ..
            } => {
                let n = batch.ready();
                if n == 0 {
                    return;
                }
                if let Some(udp) = udp {
                    let b: &Batch = batch;
                    let mut lost = 0;
                    let r = udp.send(
                        n,
                        |i| b.datagram(i),
                        |i| lost += loss.lost(|j| b.datagram(j), i),
                    );
                    loss.end_batch(n, |i| b.datagram(i));
                    c.send_dropped += lost;
                    c.datagrams_sent += r.sent as u64;
                    c.datagrams_dropped += r.dropped as u64;
                    c.refused += r.refused as u64;
                }
                batch.consume();
            }
            Output::PlainUdp { arena, udp } => {
                let n = arena.count();
                if n == 0 {
                    return;
                }
                if let Some(udp) = udp {
                    let a: &MsgArena = arena;
                    let r = udp.send(n, |i| a.msg(i), |_| {});
                    c.send_dropped += r.dropped as u64;
                    c.datagrams_sent += r.sent as u64;
                    c.datagrams_dropped += r.dropped as u64;
                    c.refused += r.refused as u64;
                }
                arena.clear();
            }
            Output::Tcp { arena, tcp } => {
                if arena.is_empty() {
                    return;
                }
                match tcp {
                    Some(tcp) => {
                        if let Err(e) = tcp.write(arena) {
                            c.send_dropped += arena.count() as u64;
                            arena.clear();
                            self.failure = Some(e.to_string());
                        }
                    }
                    None => arena.clear(),
                }
            }
        }
    }

    fn has_partial(&self) -> bool {
        match &self.out {
            Output::UdpStr { framer, batch, .. } => framer.has_partial(batch),
            _ => false,
        }
    }

    /// Closes the partly filled datagram and sends it (read-timeout flush).
    fn flush(&mut self) {
        if let Output::UdpStr { framer, batch, .. } = &mut self.out {
            framer.flush(batch);
        }
        self.send();
    }

    /// End of capture: everything framed goes out (TCP: bounded wait).
    fn finish(&mut self) {
        self.flush();
        if let Output::Tcp {
            arena,
            tcp: Some(tcp),
        } = &mut self.out
        {
            let left = match tcp.drain(arena, TCP_DRAIN) {
                Ok(_) => arena.count(),
                Err(e) => {
                    self.failure.get_or_insert(e.to_string());
                    arena.count()
                }
            };
            self.c.send_dropped += left as u64;
            arena.clear();
        }
    }

    fn tcp_peer_closed(&self) -> Option<String> {
        match &self.out {
            Output::Tcp { tcp: Some(t), .. } => t
                .peer_closed()
                .map(|e| format!("data connection closed: {e}")),
            _ => None,
        }
    }

    fn publish(&self, s: &Shared) {
        let c = &self.c;
        s.received.store(c.received, Ordering::Relaxed);
        s.sampled_out.store(c.sampled_out, Ordering::Relaxed);
        s.framed.store(c.framed, Ordering::Relaxed);
        s.send_dropped.store(c.send_dropped, Ordering::Relaxed);
        s.datagrams_sent.store(c.datagrams_sent, Ordering::Relaxed);
        s.datagrams_dropped
            .store(c.datagrams_dropped, Ordering::Relaxed);
        s.refused.store(c.refused, Ordering::Relaxed);
        if let Output::UdpStr { udp: Some(u), .. } = &self.out {
            // GSO can be turned off on the way (a path that refuses it).
            s.gso.store(u.gso().is_some(), Ordering::Relaxed);
        }
    }
}

/// Pins the calling thread to `cpu` (a warning if it cannot).
fn pin(cpu: usize) {
    if let Err(e) = sys::cpu::pin_current_thread(cpu) {
        log::warn!("cannot pin to CPU {cpu}: {e}");
    }
}

/// Runs one capture until stopped, the source ends, or it fails.
pub(crate) fn run<S: Source>(
    mut source: S,
    mut pipe: Pipeline,
    rx: Receiver<Command>,
    shared: Arc<Shared>,
    read_timeout: Duration,
    housekeeping: Duration,
    cpu: Option<usize>,
) {
    if let Some(cpu) = cpu {
        pin(cpu);
    }
    let mut partial_since: Option<Instant> = None;
    let mut last_housekeeping = Instant::now();
    let mut failure: Option<String> = None;
    // How long the next poll may sleep: until the next housekeeping or the
    // flush deadline of a partly filled datagram, whichever comes first.
    let mut wait = housekeeping;
    'capture: loop {
        loop {
            match rx.try_recv() {
                Ok(Command::Stop) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    break 'capture
                }
                Ok(Command::Filter(filter, reply)) => {
                    let r = source.set_filter(&filter);
                    let _ = reply.send(r);
                }
                Ok(Command::Sampling(s)) => pipe.sampler = Sampler::new(s),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
            }
        }
        match source.poll(wait, &mut |f| pipe.on_frame(f)) {
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
        pipe.send();
        let now = Instant::now();
        if pipe.has_partial() {
            let since = *partial_since.get_or_insert(now);
            if now.duration_since(since) >= read_timeout {
                pipe.flush();
                partial_since = None;
            }
        } else {
            partial_since = None;
        }
        if now.duration_since(last_housekeeping) >= housekeeping {
            last_housekeeping = now;
            let st = source.stats();
            shared
                .kernel_drops
                .store(st.kernel_drops, Ordering::Relaxed);
            if pipe.failure.is_none() {
                pipe.failure = pipe.tcp_peer_closed();
            }
        }
        if let Some(f) = pipe.failure.take() {
            failure = Some(f);
            break 'capture;
        }
        pipe.publish(&shared);
        wait = housekeeping.saturating_sub(now.duration_since(last_housekeeping));
        if let Some(since) = partial_since {
            wait = wait.min(read_timeout.saturating_sub(now.duration_since(since)));
        }
    }
    pipe.finish();
    if failure.is_none() {
        failure = pipe.failure.take();
    }
    let st = source.stats();
    shared
        .kernel_drops
        .store(st.kernel_drops, Ordering::Relaxed);
    pipe.publish(&shared);
    if let Some(f) = failure {
        log::warn!("capture ended: {f}");
        *shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }
    shared.ended.store(true, Ordering::Release);
}
