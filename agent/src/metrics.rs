//! The Prometheus endpoint (`--metrics-listen ADDR:PORT`, `MetricsListen`):
//! `GET /metrics` in the Prometheus text format 0.0.4 (what `promtool check
//! metrics` and every Prometheus server read); anything else is 404.
//!
//! Nothing here touches the datapath. The control loop publishes a
//! [`Snapshot`] at its own rhythm (each capture check, every 500 ms): the
//! slots' states, and each running capture's counters, which the worker
//! already keeps in atomics it stores once per poll round. The HTTP thread
//! ([`serve`]) takes the snapshot's lock for a clone at each scrape and
//! renders it ([`render`]) with the `prometheus` crate; the process figures
//! (RSS from `/proc/self/statm`, uptime) are read at the scrape. Every metric
//! is listed in docs/metrics.md.
//!
//! Counters are per (sensor, interface) and survive the captures: when a
//! capture ends or restarts, its last published counters are kept in a base
//! the next capture's add to ([`Totals`]), so they only go up (a capture's
//! last half second before its end is not counted).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::datapath::Counters;

/// Every state a slot can be in ([`crate::control::slot::State::name`]).
pub const SLOT_STATES: [&str; 8] = [
    "standby",
    "backing-off",
    "resolving",
    "dialing",
    "authenticating",
    "authenticated",
    "capturing",
    "stopped",
];

/// One ActiveClient line's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSnapshot {
    /// `HOST:PORT` of the line.
    pub sensor: String,
    /// One of [`SLOT_STATES`].
    pub state: &'static str,
    /// Attempts begun (lookup then connect), the first one included.
    pub attempts: u64,
    /// Why the last attempt or session failed.
    pub last_error: Option<String>,
    /// Times its failover group moved on after losing this sensor's session.
    pub failovers: u64,
}

/// One capture's counters, cumulative over the captures of its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSnapshot {
    /// The slot's `HOST:PORT`, or `passive:ADDR` for a passive client.
    pub sensor: String,
    pub interface: String,
    /// Whether a capture runs now.
    pub running: bool,
    pub counters: Counters,
}

/// What the control loop publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub slots: Vec<SlotSnapshot>,
    pub captures: Vec<CaptureSnapshot>,
}

/// The latest [`Snapshot`]: written by the control loop, read by the HTTP
/// thread (each takes the lock for a copy, never for long).
#[derive(Debug, Clone, Default)]
pub struct Published(Arc<Mutex<Snapshot>>);

impl Published {
    pub fn publish(&self, snapshot: Snapshot) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }

    pub fn get(&self) -> Snapshot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `a + b`, counter by counter (the flags are `b`'s).
fn add(a: &Counters, b: &Counters) -> Counters {
    let xdp = match (a.xdp, b.xdp) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(crate::capture::XdpStats {
            redirected: a.redirected + b.redirected,
            filtered: a.filtered + b.filtered,
            ring_full: a.ring_full + b.ring_full,
        }),
    };
    let decap = match (a.decap, b.decap) {
        (None, d) | (d, None) => d,
        (Some(a), Some(b)) => Some(crate::datapath::DecapCounters {
            decapsulated: a.decapsulated + b.decapsulated,
            foreign: a.foreign + b.foreign,
            malformed: a.malformed + b.malformed,
            filtered: a.filtered + b.filtered,
        }),
    };
    Counters {
        received: a.received + b.received,
        kernel_drops: a.kernel_drops + b.kernel_drops,
        sampled_out: a.sampled_out + b.sampled_out,
        framed: a.framed + b.framed,
        send_dropped: a.send_dropped + b.send_dropped,
        datagrams_sent: a.datagrams_sent + b.datagrams_sent,
        datagrams_dropped: a.datagrams_dropped + b.datagrams_dropped,
        refused: a.refused + b.refused,
        framed_bytes: a.framed_bytes + b.framed_bytes,
        bytes_sent: a.bytes_sent + b.bytes_sent,
        truncated: a.truncated + b.truncated,
        wakeups: a.wakeups + b.wakeups,
        too_big: a.too_big + b.too_big,
        filtered_out: a.filtered_out + b.filtered_out,
        xdp,
        decap,
        gso: b.gso,
        dry_run: b.dry_run,
    }
}

#[derive(Debug, Default)]
struct Entry {
    /// The sum of the captures that ended.
    base: Counters,
    /// The running capture: its id and its counters as last seen.
    live: Option<(u64, Counters)>,
}

/// Counters per (sensor, interface), kept across captures by the control loop.
#[derive(Debug, Default)]
pub struct Totals {
    entries: BTreeMap<(String, String), Entry>,
}

/// A running capture as the control loop sees it at a publish.
#[derive(Debug, Clone)]
pub struct LiveCapture {
    pub sensor: String,
    pub interface: String,
    /// Tells captures of the same labels apart (the connection's token).
    pub id: u64,
    pub counters: Counters,
}

impl Totals {
    /// Takes the captures running now; those gone since the last call are
    /// added to their labels' base. Returns every (sensor, interface) seen.
    pub fn update(&mut self, live: Vec<LiveCapture>) -> Vec<CaptureSnapshot> {
        let mut running = std::collections::BTreeSet::new();
        for c in live {
            let key = (c.sensor, c.interface);
            let e = self.entries.entry(key.clone()).or_default();
            if let Some((id, last)) = e.live.take() {
                // Another capture, or the same connection's next one (its
                // counters start again from 0).
                let restarted = id != c.id
                    || c.counters.received < last.received
                    || c.counters.framed < last.framed;
                e.live = Some(if restarted {
                    e.base = add(&e.base, &last);
                    (c.id, c.counters)
                } else {
                    (id, c.counters)
                });
            } else {
                e.live = Some((c.id, c.counters));
            }
            running.insert(key);
        }
        for (key, e) in self.entries.iter_mut() {
            if !running.contains(key) {
                if let Some((_, last)) = e.live.take() {
                    e.base = add(&e.base, &last);
                }
            }
        }
        self.entries
            .iter()
            .map(|((sensor, interface), e)| CaptureSnapshot {
                sensor: sensor.clone(),
                interface: interface.clone(),
                running: e.live.is_some(),
                counters: match &e.live {
                    Some((_, c)) => add(&e.base, c),
                    None => e.base,
                },
            })
            .collect()
    }

    /// Forgets the labels of a sensor no longer configured.
    pub fn retain_sensors(&mut self, keep: impl Fn(&str) -> bool) {
        self.entries.retain(|(sensor, _), _| keep(sensor));
    }
}

/// Figures of the process, read at the scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Process {
    pub resident_bytes: u64,
    pub uptime_seconds: f64,
}

impl Process {
    /// RSS from `/proc/self/statm` (resident pages × the page size), uptime
    /// since `started`.
    pub fn read(started: Instant) -> Process {
        let pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        Process {
            resident_bytes: pages * page_size(),
            uptime_seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// The page size, from the auxiliary vector's AT_PAGESZ as the kernel gave
/// it (`/proc/self/auxv`); 4096 when it cannot be read.
fn page_size() -> u64 {
    static SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        const AT_PAGESZ: u64 = 6;
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        auxv.chunks_exact(16)
            .map(|p| {
                let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
                (word(&p[..8]), word(&p[8..]))
            })
            .find(|(k, _)| *k == AT_PAGESZ)
            .map_or(4096, |(_, v)| v)
    })
}

/// Helper: a counter family registered in `r`.
fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// The text format 0.0.4 page of `snap` and `process`.
pub fn render(snap: &Snapshot, process: &Process) -> String {
    let r = Registry::new();
    let build = gauge_vec(
        &r,
        "xrpcapd_build_info",
        "The agent's version (value 1).",
        &["version"],
    );
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let rss = IntGauge::new(
        "xrpcapd_process_resident_memory_bytes",
        "Resident set size of the agent, from /proc/self/statm.",
    )
    .expect("valid metric");
    r.register(Box::new(rss.clone())).expect("unique metric");
    rss.set(process.resident_bytes as i64);
    let uptime =
        prometheus::Gauge::new("xrpcapd_uptime_seconds", "Seconds since the agent started.")
            .expect("valid metric");
    r.register(Box::new(uptime.clone())).expect("unique metric");
    uptime.set(process.uptime_seconds);

    let state = gauge_vec(
        &r,
        "xrpcapd_sensor_state",
        "1 for the state the sensor slot is in, 0 for the others.",
        &["sensor", "state"],
    );
    let attempts = counter(
        &r,
        "xrpcapd_sensor_attempts_total",
        "Connection attempts of the sensor slot (name lookup, then connect), the first included.",
        &["sensor"],
    );
    let reconnects = counter(
        &r,
        "xrpcapd_sensor_reconnects_total",
        "Connection attempts of the sensor slot after its first.",
        &["sensor"],
    );
    let last_error = gauge_vec(
        &r,
        "xrpcapd_sensor_last_error_info",
        "Why the slot's last attempt or session failed, in the error label (value 1); absent before any failure.",
        &["sensor", "error"],
    );
    let failovers = counter(
        &r,
        "xrpcapd_sensor_failovers_total",
        "Times the sensor's failover group moved to another line after losing this sensor's session (0 outside a group).",
        &["sensor"],
    );
    for s in &snap.slots {
        failovers
            .with_label_values(&[s.sensor.as_str()])
            .inc_by(s.failovers);
        for name in SLOT_STATES {
            state
                .with_label_values(&[s.sensor.as_str(), name])
                .set(i64::from(name == s.state));
        }
        attempts
            .with_label_values(&[s.sensor.as_str()])
            .inc_by(s.attempts);
        reconnects
            .with_label_values(&[s.sensor.as_str()])
            .inc_by(s.attempts.saturating_sub(1));
        if let Some(e) = &s.last_error {
            last_error
                .with_label_values(&[s.sensor.as_str(), &error_label(e)])
                .set(1);
        }
    }

    let labels = &["sensor", "interface"];
    let running = gauge_vec(
        &r,
        "xrpcapd_capture_running",
        "1 while a capture of these labels runs.",
        labels,
    );
    type Field = fn(&Counters) -> Option<u64>;
    let families: [(&str, &str, Field); 20] = [
        ("xrpcapd_capture_frames_seen_total", "Frames the capture saw: delivered by the source plus lost in its ring (STATS ifrecv).", |c| Some(c.received + c.kernel_drops)),
        ("xrpcapd_capture_frames_received_total", "Frames the source delivered to the worker (after the filter).", |c| Some(c.received)),
        ("xrpcapd_capture_frames_filtered_out_total", "Frames the filter rejected in user space (AF_XDP's cBPF judge; AF_PACKET's kernel filter does not count them).", |c| Some(c.filtered_out)),
        ("xrpcapd_capture_frames_sampled_out_total", "Frames the sampling method left out (not drops).", |c| Some(c.sampled_out)),
        ("xrpcapd_capture_frames_sent_total", "Packets sent to the sensor: framed minus send drops (STATS svrcapt; 0 in a dry run).", |c| Some(if c.dry_run { 0 } else { c.framed.saturating_sub(c.send_dropped) })),
        ("xrpcapd_capture_framed_bytes_total", "Captured bytes (caplen) of the packets framed for the sensor, send drops included.", |c| Some(c.framed_bytes)),
        ("xrpcapd_capture_bytes_sent_total", "Bytes handed to the kernel for the sensor: UDP payloads (udpstr, plain UDP) or the TCP data stream.", |c| Some(c.bytes_sent)),
        ("xrpcapd_capture_datagrams_sent_total", "UDP datagrams handed to the kernel (udpstr and plain UDP transports).", |c| Some(c.datagrams_sent)),
        ("xrpcapd_capture_ring_drops_total", "Frames that passed the filter but were lost before the worker read them (AF_PACKET ring full; AF_XDP socket ring full, no UMEM room, chains too long, no socket bound): STATS krnldrop.", |c| Some(c.kernel_drops)),
        ("xrpcapd_capture_send_drops_total", "Framed packets lost in sending (ENOBUFS/EAGAIN, send errors, a TCP peer too slow or gone): STATS ifdrop.", |c| Some(c.send_dropped)),
        ("xrpcapd_capture_truncated_total", "Packets framed cut to the snapshot length (caplen < wire length).", |c| Some(c.truncated)),
        ("xrpcapd_capture_wakeups_total", "Rounds of the capture's worker thread, each after a wake-up or a full lap of its ring: at low rates about one per MaxLatencyMs.", |c| Some(c.wakeups)),
        ("xrpcapd_capture_decap_decapsulated_total", "Inner frames the decapsulation handed on (decap= only; then frames received counts these).", |c| c.decap.map(|d| d.decapsulated)),
        ("xrpcapd_capture_decap_foreign_total", "Tunnel packets of another tunnel, VNI, GRE key, ERSPAN session or outer source than decap= names: counted, not forwarded.", |c| c.decap.map(|d| d.foreign)),
        ("xrpcapd_capture_decap_malformed_total", "Tunnel packets with cut or inconsistent headers, or outer IP fragments (decap= only): counted, not forwarded.", |c| c.decap.map(|d| d.malformed)),
        ("xrpcapd_capture_decap_filtered_total", "Inner frames the local filter or the sensor's filter rejected after decapsulation (decap= only).", |c| c.decap.map(|d| d.filtered)),
        ("xrpcapd_capture_tunnel_too_big_total", "Tunnel export: frames over what the path MTU leaves a datagram, cut with the T bit (ERSPAN) or dropped and counted in send drops (VXLAN, GRE).", |c| Some(c.too_big)),
        ("xrpcapd_capture_xdp_redirected_total", "Frames the XDP program redirected to the capture's sockets (AF_XDP only).", |c| c.xdp.map(|x| x.redirected)),
        ("xrpcapd_capture_xdp_filtered_total", "Frames the XDP program's translated filter rejected (AF_XDP only).", |c| c.xdp.map(|x| x.filtered)),
        ("xrpcapd_capture_xdp_ring_full_total", "Frames lost to a full AF_XDP socket RX ring (AF_XDP only; also in ring drops).", |c| c.xdp.map(|x| x.ring_full)),
    ];
    let datagram_drops = counter(
        &r,
        "xrpcapd_capture_datagrams_dropped_total",
        "UDP datagrams the kernel did not take (ENOBUFS/EAGAIN).",
        labels,
    );
    let vecs: Vec<(IntCounterVec, Field)> = families
        .iter()
        .map(|(name, help, f)| (counter(&r, name, help, labels), *f))
        .collect();
    for c in &snap.captures {
        let l = [c.sensor.as_str(), c.interface.as_str()];
        running.with_label_values(&l).set(i64::from(c.running));
        datagram_drops
            .with_label_values(&l)
            .inc_by(c.counters.datagrams_dropped);
        for (vec, f) in &vecs {
            if let Some(v) = f(&c.counters) {
                vec.with_label_values(&l).inc_by(v);
            }
        }
    }

    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&r.gather(), &mut out)
        .expect("text encoding");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// An error text fit for a label value: one line, at most 200 characters.
fn error_label(e: &str) -> String {
    let line = e.lines().next().unwrap_or("");
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// A running endpoint.
pub struct Endpoint {
    pub addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listens on `addr` and answers `GET /metrics` from `published` on its own
/// thread until the [`Endpoint`] is dropped.
pub fn serve(addr: SocketAddr, published: Published) -> std::io::Result<Endpoint> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
    let server = Arc::new(server);
    let started = Instant::now();
    let srv = server.clone();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in srv.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("");
                let ok = path == "/metrics"
                    && matches!(
                        req.method(),
                        tiny_http::Method::Get | tiny_http::Method::Head
                    );
                let result = if ok {
                    let body = render(&published.get(), &Process::read(started));
                    let ctype = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        TextEncoder::new().format_type().as_bytes(),
                    )
                    .expect("a valid header");
                    req.respond(tiny_http::Response::from_string(body).with_header(ctype))
                } else {
                    req.respond(
                        tiny_http::Response::from_string("not found\n").with_status_code(404),
                    )
                };
                if let Err(e) = result {
                    log::debug!("metrics: answering a scrape: {e}");
                }
            }
        })?;
    Ok(Endpoint {
        addr,
        server,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests;
