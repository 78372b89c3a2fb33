//! The Prometheus endpoint (`--metrics-listen ADDR:PORT`): `GET /metrics`
//! answers the sensor's counters in the Prometheus text format 0.0.4 (what
//! `promtool check metrics` and every Prometheus server read), as the
//! agent's endpoint does; anything else is 404.
//!
//! Nothing here touches the receive path. The event loop copies the
//! counters its captures already keep ([`crate::capture::Counters`], the
//! deframer's, the agent's last STATS) into a [`Snapshot`] once per tick
//! ([`Published::publish`], every 100 ms, a `try_lock` that skips the tick
//! rather than wait); the HTTP thread clones the last snapshot, builds a
//! fresh `prometheus` registry from it and encodes it ([`render`]). Bytes on disk
//! come from the writer thread's atomic ([`crate::writer::Writer::written`]),
//! RSS from `/proc/self/status` at scrape time.
//!
//! A capture's counters outlive its session: when its final line is
//! printed its values move to the retired totals of its `(agent,
//! interface)`, and a later capture of the same agent and interface counts
//! on from there, so every `_total` only grows (except by the records a
//! failed write takes back, see [`crate::capture::Capture::settle`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use rpcap::addr::canonical;
use rpcap::msg::Stats;

use crate::capture::Capture;

/// The session states, as `xrpcap_sensor_sessions{state}` names them
/// ([`crate::session::Session::state_name`]); every one is exported, 0 when
/// no session is in it.
pub const SESSION_STATES: [&str; 9] = [
    "auth",
    "findallif",
    "open",
    "ready",
    "startcap",
    "capturing",
    "waiting",
    "ending",
    "closed",
];

/// One capture's counters, as exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureValues {
    pub packets: u64,
    pub bytes: u64,
    pub lost: u64,
    pub seq_gaps: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub malformed: u64,
    pub rejected: u64,
    pub foreign: u64,
    pub late: u64,
    pub socket_drops: u64,
    pub gro_datagrams: u64,
    pub write_drops: u64,
    pub disk_floor_drops: u64,
    pub write_errors: u64,
    pub tap_frames: u64,
    pub tap_drops: u64,
    pub tap_skipped: u64,
    /// The agent's last STATS reply.
    pub stats: Option<Stats>,
}

impl CaptureValues {
    /// Reads `cap`'s counters (plain fields of the loop's own thread).
    pub fn of(cap: &Capture, stats: Option<&Stats>) -> CaptureValues {
        let c = &cap.counters;
        let u = cap.udpstr();
        CaptureValues {
            packets: c.packets,
            bytes: c.bytes,
            lost: cap.lost(),
            seq_gaps: u.seq_gaps,
            duplicates: u.duplicates + c.plain_dups,
            reordered: u.reordered,
            malformed: u.malformed + c.malformed,
            rejected: u.rejected + c.plain_rejected,
            foreign: c.foreign,
            late: c.late,
            socket_drops: c.socket_drops,
            gro_datagrams: c.gro_datagrams,
            write_drops: c.write_drops,
            disk_floor_drops: c.disk_floor_drops,
            write_errors: c.write_errors,
            tap_frames: c.tap_frames,
            tap_drops: c.tap_drops,
            tap_skipped: c.tap_skipped,
            stats: stats.copied(),
        }
    }

    /// Adds `o`'s counters; the STATS are `o`'s when it has some.
    fn add(&mut self, o: &CaptureValues) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.lost += o.lost;
        self.seq_gaps += o.seq_gaps;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.malformed += o.malformed;
        self.rejected += o.rejected;
        self.foreign += o.foreign;
        self.late += o.late;
        self.socket_drops += o.socket_drops;
        self.gro_datagrams += o.gro_datagrams;
        self.write_drops += o.write_drops;
        self.disk_floor_drops += o.disk_floor_drops;
        self.write_errors += o.write_errors;
        self.tap_frames += o.tap_frames;
        self.tap_drops += o.tap_drops;
        self.tap_skipped += o.tap_skipped;
        if o.stats.is_some() {
            self.stats = o.stats;
        }
    }
}

/// `(agent, interface)`: the agent's IP address (its port changes with every
/// connection of an active agent) and the captured interface.
pub type Key = (String, String);

/// The `agent` label of `peer`.
pub fn agent_label(peer: &SocketAddr) -> String {
    canonical(peer.ip()).to_string()
}

/// What the HTTP thread exports, as of the event loop's last tick.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub captures: BTreeMap<Key, CaptureValues>,
    /// Sessions per state name.
    pub sessions: BTreeMap<&'static str, u64>,
    /// Active agents refused by `--allow`.
    pub agents_refused: u64,
    /// `--udp-shared-port`'s own counters (0 without it).
    pub shared_port: SharedPortValues,
    /// Agent connections whose certificate TLS verification refused.
    pub tls_refused: u64,
}

/// The counters of `--udp-shared-port` that belong to no capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedPortValues {
    pub foreign: u64,
    pub socket_drops: u64,
    pub fallbacks: u64,
}

impl Snapshot {
    /// Adds another receive thread's snapshot (`--receive-threads`): its
    /// captures (one agent's IP is in one thread, so keys rarely meet; when
    /// they do the counters add), sessions and refusals.
    pub fn merge(&mut self, o: &Snapshot) {
        for (k, v) in &o.captures {
            self.captures.entry(k.clone()).or_default().add(v);
        }
        for (state, n) in &o.sessions {
            *self.sessions.entry(state).or_default() += n;
        }
        self.agents_refused += o.agents_refused;
        // Each thread's own shared-port socket: they add.
        self.shared_port.foreign += o.shared_port.foreign;
        self.shared_port.socket_drops += o.shared_port.socket_drops;
        self.shared_port.fallbacks += o.shared_port.fallbacks;
        // One counter for the process (the threads share the `Tls`):
        // every snapshot has it, it does not add.
        self.tls_refused = self.tls_refused.max(o.tls_refused);
    }
}

/// Builds each tick's [`Snapshot`]: live and lingering captures on top of
/// the retired totals.
#[derive(Default)]
pub struct Builder {
    retired: BTreeMap<Key, CaptureValues>,
    next: Snapshot,
}

impl Builder {
    /// A capture whose final line was printed: its counters stay exported.
    pub fn retire(&mut self, key: Key, v: &CaptureValues) {
        self.retired.entry(key).or_default().add(v);
    }

    /// Starts a snapshot from the retired totals.
    pub fn begin(&mut self) {
        self.next.captures.clone_from(&self.retired);
        self.next.sessions.clear();
        for s in SESSION_STATES {
            self.next.sessions.insert(s, 0);
        }
    }

    pub fn capture(&mut self, key: Key, v: &CaptureValues) {
        self.next.captures.entry(key).or_default().add(v);
    }

    /// Active agents refused by `--allow` so far.
    pub fn agents_refused(&mut self, n: u64) {
        self.next.agents_refused = n;
    }

    /// Agent connections refused by TLS verification so far.
    pub fn tls_refused(&mut self, n: u64) {
        self.next.tls_refused = n;
    }

    /// The shared UDP port's counters (None without `--udp-shared-port`: 0).
    pub fn shared_port(&mut self, sp: Option<&crate::shared_port::SharedPort>) {
        self.next.shared_port = sp.map_or_else(SharedPortValues::default, |sp| SharedPortValues {
            foreign: sp.foreign,
            socket_drops: sp.socket_drops,
            fallbacks: sp.fallbacks,
        });
    }

    pub fn session(&mut self, state: &'static str) {
        *self.next.sessions.entry(state).or_default() += 1;
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.next
    }
}

/// The snapshot the HTTP thread reads, and what it needs besides.
pub struct Published {
    snapshot: Mutex<Snapshot>,
    /// Receive threads 1.. (`--receive-threads`): theirs, merged at render.
    others: Vec<Mutex<Snapshot>>,
    /// Bytes the writer wrote to files (and stdout).
    written: Arc<AtomicU64>,
    started: Instant,
}

impl Published {
    pub fn new(written: Arc<AtomicU64>) -> Published {
        Published::with_shards(written, 1)
    }

    /// One snapshot slot per receive thread.
    pub fn with_shards(written: Arc<AtomicU64>, shards: usize) -> Published {
        Published {
            snapshot: Mutex::new(Snapshot::default()),
            others: (1..shards).map(|_| Mutex::default()).collect(),
            written,
            started: Instant::now(),
        }
    }

    /// Replaces the exported snapshot, unless a scrape is copying it right
    /// now (then the next tick does): the event loop never waits.
    pub fn publish(&self, s: &Snapshot) {
        self.publish_shard(0, s);
    }

    /// [`Published::publish`] for receive thread `shard`'s snapshot.
    pub fn publish_shard(&self, shard: usize, s: &Snapshot) {
        let slot = match shard.checked_sub(1) {
            None => &self.snapshot,
            Some(i) => &self.others[i],
        };
        if let Ok(mut g) = slot.try_lock() {
            g.clone_from(s);
        }
    }

    /// The metrics text.
    pub fn render(&self) -> String {
        let mut snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for o in &self.others {
            snap.merge(&o.lock().unwrap_or_else(|p| p.into_inner()));
        }
        render(
            &snap,
            self.written.load(Ordering::Relaxed),
            self.started.elapsed().as_secs_f64(),
            rss_bytes(),
        )
    }
}

/// Helper: `m` registered in `r`.
fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

/// The text format 0.0.4 page of `s` and the process values.
pub fn render(s: &Snapshot, written: u64, uptime: f64, rss: Option<u64>) -> String {
    let r = Registry::new();
    let labels = &["agent", "interface"];
    type Field = fn(&CaptureValues) -> u64;
    let counters: [(&str, &str, Field); 18] = [
        (
            "packets_total",
            "Packets written to the capture's output.",
            |v| v.packets,
        ),
        (
            "bytes_total",
            "Packet bytes written (sum of caplen).",
            |v| v.bytes,
        ),
        (
            "lost_total",
            "Records that did not arrive whole (npkt gaps, cut records).",
            |v| v.lost,
        ),
        (
            "seq_gaps_total",
            "Forward jumps in the udpstr datagram sequence.",
            |v| v.seq_gaps,
        ),
        (
            "duplicates_total",
            "Datagrams or records seen twice (dropped).",
            |v| v.duplicates,
        ),
        (
            "reordered_total",
            "Datagrams that arrived after a later one (dropped).",
            |v| v.reordered,
        ),
        (
            "malformed_total",
            "Datagrams or records that could not be read.",
            |v| v.malformed,
        ),
        (
            "rejected_total",
            "Datagrams or records outside the sequence window (dropped).",
            |v| v.rejected,
        ),
        (
            "foreign_total",
            "Datagrams from an address other than the agent's.",
            |v| v.foreign,
        ),
        (
            "late_total",
            "Datagrams that reached a capture's port after it closed.",
            |v| v.late,
        ),
        (
            "socket_drops_total",
            "Datagrams the data socket dropped for lack of buffer (SO_RXQ_OVFL).",
            |v| v.socket_drops,
        ),
        (
            "gro_datagrams_total",
            "Datagrams that arrived several to a receive buffer (UDP GRO).",
            |v| v.gro_datagrams,
        ),
        (
            "write_drops_total",
            "Records dropped because the writer was behind.",
            |v| v.write_drops,
        ),
        (
            "disk_floor_drops_total",
            "Records dropped because the output's disk had less room than --min-free.",
            |v| v.disk_floor_drops,
        ),
        (
            "write_errors_total",
            "Records the output failed to write.",
            |v| v.write_errors,
        ),
        (
            "tap_frames_total",
            "Frames written onto the --tap interface.",
            |v| v.tap_frames,
        ),
        (
            "tap_drops_total",
            "Frames the --tap interface did not take (busy, down).",
            |v| v.tap_drops,
        ),
        (
            "tap_skipped_total",
            "Frames not written to the --tap interface: not Ethernet.",
            |v| v.tap_skipped,
        ),
    ];
    type StatsField = fn(&Stats) -> u32;
    let gauges: [(&str, &str, StatsField); 4] = [
        (
            "agent_ifrecv",
            "The agent's last STATS: packets the interface received.",
            |s| s.ifrecv,
        ),
        (
            "agent_ifdrop",
            "The agent's last STATS: packets the interface dropped.",
            |s| s.ifdrop,
        ),
        (
            "agent_krnldrop",
            "The agent's last STATS: packets the kernel (capture buffer) dropped.",
            |s| s.krnldrop,
        ),
        (
            "agent_svrcapt",
            "The agent's last STATS: packets the agent captured and sent.",
            |s| s.svrcapt,
        ),
    ];
    let opts = |name: &str, help: &str| Opts::new(name, help).namespace("xrpcap_sensor");
    let counters: Vec<(IntCounterVec, Field)> = counters
        .iter()
        .map(|(name, help, f)| {
            let c = IntCounterVec::new(opts(name, help), labels).expect("valid metric");
            (register(&r, c), *f)
        })
        .collect();
    let gauges: Vec<(IntGaugeVec, StatsField)> = gauges
        .iter()
        .map(|(name, help, f)| {
            let g = IntGaugeVec::new(opts(name, help), labels).expect("valid metric");
            (register(&r, g), *f)
        })
        .collect();
    for ((agent, iface), v) in &s.captures {
        let l = [agent.as_str(), iface.as_str()];
        for (c, f) in &counters {
            c.with_label_values(&l).inc_by(f(v));
        }
        if let Some(st) = &v.stats {
            for (g, f) in &gauges {
                g.with_label_values(&l).set(i64::from(f(st)));
            }
        }
    }
    let sessions = IntGaugeVec::new(opts("sessions", "Agent sessions per state."), &["state"])
        .expect("valid metric");
    let sessions = register(&r, sessions);
    for (state, n) in &s.sessions {
        sessions.with_label_values(&[*state]).set(*n as i64);
    }
    let w = IntCounter::with_opts(opts(
        "output_written_bytes_total",
        "Bytes the writer wrote to capture files (or stdout).",
    ))
    .expect("valid metric");
    register(&r, w).inc_by(written);
    let refused = IntCounter::with_opts(opts(
        "agents_refused_total",
        "Active agents refused by --allow (closed before any RPCAP message).",
    ))
    .expect("valid metric");
    register(&r, refused).inc_by(s.agents_refused);
    let tls_refused = IntCounter::with_opts(opts(
        "tls_refused_total",
        "Agent connections (control or data) whose certificate failed --tls-ca or --tls-pin.",
    ))
    .expect("valid metric");
    register(&r, tls_refused).inc_by(s.tls_refused);
    // --udp-shared-port: exported (0) without it too, so that dashboards
    // and alerts read one set of names on every sensor.
    let shared: [(&str, &str, u64); 3] = [
        (
            "shared_port_foreign_total",
            "Datagrams to --udp-shared-port from an address with no capture on it.",
            s.shared_port.foreign,
        ),
        (
            "shared_port_socket_drops_total",
            "Datagrams --udp-shared-port's socket dropped for lack of buffer (SO_RXQ_OVFL).",
            s.shared_port.socket_drops,
        ),
        (
            "shared_port_fallbacks_total",
            "Captures given a --udp-ports port: their agent's IP already had the shared port.",
            s.shared_port.fallbacks,
        ),
    ];
    for (name, help, v) in shared {
        let c = IntCounter::with_opts(opts(name, help)).expect("valid metric");
        register(&r, c).inc_by(v);
    }
    let build = IntGaugeVec::new(
        opts("build_info", "The sensor's version (always 1)."),
        &["version"],
    )
    .expect("valid metric");
    register(&r, build)
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    let up = Gauge::with_opts(opts("uptime_seconds", "Seconds since the sensor started."))
        .expect("valid metric");
    register(&r, up).set(uptime);
    if let Some(rss) = rss {
        let g = IntGauge::with_opts(opts(
            "process_resident_memory_bytes",
            "Resident set size of the sensor process.",
        ))
        .expect("valid metric");
        register(&r, g).set(rss as i64);
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&r.gather(), &mut out)
        .expect("text encoding");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// VmRSS of `/proc/self/status`, in bytes.
fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// The HTTP server's thread.
pub struct Endpoint {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

/// Why the endpoint did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason}")]
pub struct ServeError {
    addr: SocketAddr,
    reason: String,
}

impl Endpoint {
    /// Listens on `addr` and answers `GET /metrics` from `published` on a
    /// thread of its own; every other request gets 404.
    pub fn start(addr: SocketAddr, published: Arc<Published>) -> Result<Endpoint, ServeError> {
        let err = |reason: String| ServeError { addr, reason };
        let server = Arc::new(tiny_http::Server::http(addr).map_err(|e| err(e.to_string()))?);
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| err("not an IP listener".into()))?;
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    let path = req.url().split('?').next().unwrap_or("");
                    let ok = path == "/metrics"
                        && matches!(
                            req.method(),
                            tiny_http::Method::Get | tiny_http::Method::Head
                        );
                    let res = if ok {
                        let header = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            TextEncoder::new().format_type().as_bytes(),
                        )
                        .expect("a valid header");
                        let text = published.render();
                        req.respond(tiny_http::Response::from_string(text).with_header(header))
                    } else {
                        req.respond(
                            tiny_http::Response::from_string("not found\n").with_status_code(404),
                        )
                    };
                    if let Err(e) = res {
                        log::debug!("metrics: answering a scrape: {e}");
                    }
                }
            })
            .map_err(|e| err(e.to_string()))?;
        Ok(Endpoint {
            server,
            thread: Some(thread),
            addr,
        })
    }

    /// The address it listens on (the port chosen when given 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(packets: u64, drops: u64) -> CaptureValues {
        CaptureValues {
            packets,
            socket_drops: drops,
            ..Default::default()
        }
    }

    #[test]
    fn every_metric_has_its_labels_and_retired_captures_count_on() {
        let key = ("10.0.0.1".to_string(), "eth0".to_string());
        let mut b = Builder::default();
        b.retire(key.clone(), &values(100, 3));
        b.begin();
        b.capture(key.clone(), &values(5, 1));
        b.session("capturing");
        let text = render(b.snapshot(), 4096, 1.5, Some(1 << 20));
        for want in [
            "xrpcap_sensor_packets_total{agent=\"10.0.0.1\",interface=\"eth0\"} 105\n",
            "xrpcap_sensor_socket_drops_total{agent=\"10.0.0.1\",interface=\"eth0\"} 4\n",
            "xrpcap_sensor_sessions{state=\"capturing\"} 1\n",
            "xrpcap_sensor_sessions{state=\"auth\"} 0\n",
            "xrpcap_sensor_output_written_bytes_total 4096\n",
            "xrpcap_sensor_process_resident_memory_bytes 1048576\n",
            "xrpcap_sensor_uptime_seconds 1.5\n",
            // The text format 0.0.4: a counter's HELP and TYPE name its
            // samples, `_total` included.
            "# TYPE xrpcap_sensor_packets_total counter\n",
            "# HELP xrpcap_sensor_packets_total Packets written",
            "# TYPE xrpcap_sensor_sessions gauge\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        assert!(
            text.contains(&format!(
                "xrpcap_sensor_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        // No STATS yet: no agent gauge; and no OpenMetrics `# EOF`.
        assert!(!text.contains("xrpcap_sensor_agent_ifrecv{"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn receive_threads_snapshots_are_merged_when_rendered() {
        let p = Published::with_shards(Arc::new(AtomicU64::new(0)), 2);
        let snap = |ip: &str, packets: u64, refused: u64| {
            let mut b = Builder::default();
            b.begin();
            b.agents_refused(refused);
            b.tls_refused(4);
            b.session("capturing");
            b.capture((ip.to_string(), "eth0".to_string()), &values(packets, 0));
            b.snapshot().clone()
        };
        p.publish_shard(0, &snap("10.0.0.1", 5, 1));
        p.publish_shard(1, &snap("10.0.0.2", 7, 2));
        let text = p.render();
        for want in [
            "xrpcap_sensor_packets_total{agent=\"10.0.0.1\",interface=\"eth0\"} 5\n",
            "xrpcap_sensor_packets_total{agent=\"10.0.0.2\",interface=\"eth0\"} 7\n",
            "xrpcap_sensor_sessions{state=\"capturing\"} 2\n",
            "xrpcap_sensor_sessions{state=\"auth\"} 0\n",
            "xrpcap_sensor_agents_refused_total 3\n",
            "xrpcap_sensor_tls_refused_total 4\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        let mut a = Snapshot::default();
        a.shared_port.foreign = 1;
        let mut b = Snapshot::default();
        b.shared_port.foreign = 2;
        b.shared_port.socket_drops = 5;
        a.merge(&b);
        assert_eq!((a.shared_port.foreign, a.shared_port.socket_drops), (3, 5));
    }

    #[test]
    fn refusals_and_tap_counters_are_exported() {
        let key = ("10.0.0.3".to_string(), "eth0".to_string());
        let mut b = Builder::default();
        b.begin();
        b.agents_refused(3);
        b.tls_refused(4);
        let v = CaptureValues {
            tap_frames: 7,
            tap_drops: 2,
            tap_skipped: 1,
            ..CaptureValues::default()
        };
        b.capture(key, &v);
        let text = render(b.snapshot(), 0, 1.0, None);
        for want in [
            "xrpcap_sensor_agents_refused_total 3\n",
            "xrpcap_sensor_tls_refused_total 4\n",
            // No --udp-shared-port: its counters are there, at 0.
            "xrpcap_sensor_shared_port_foreign_total 0\n",
            "xrpcap_sensor_shared_port_fallbacks_total 0\n",
            "xrpcap_sensor_tap_frames_total{agent=\"10.0.0.3\",interface=\"eth0\"} 7\n",
            "xrpcap_sensor_tap_drops_total{agent=\"10.0.0.3\",interface=\"eth0\"} 2\n",
            "xrpcap_sensor_tap_skipped_total{agent=\"10.0.0.3\",interface=\"eth0\"} 1\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
    }

    #[test]
    fn the_shared_port_counters_are_exported() {
        let p = crate::data::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut sp = crate::shared_port::SharedPort::new(p);
        sp.foreign = 5;
        sp.socket_drops = 2;
        sp.fallbacks = 1;
        let mut b = Builder::default();
        b.begin();
        b.shared_port(Some(&sp));
        let text = render(b.snapshot(), 0, 1.0, None);
        for want in [
            "# HELP xrpcap_sensor_shared_port_foreign_total Datagrams to --udp-shared-port",
            "# TYPE xrpcap_sensor_shared_port_foreign_total counter\n",
            "xrpcap_sensor_shared_port_foreign_total 5\n",
            "xrpcap_sensor_shared_port_socket_drops_total 2\n",
            "xrpcap_sensor_shared_port_fallbacks_total 1\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
    }

    #[test]
    fn the_agent_stats_are_gauges_of_the_last_reply() {
        let key = ("10.0.0.2".to_string(), "eth1".to_string());
        let stats = Stats {
            ifrecv: 10,
            ifdrop: 1,
            krnldrop: 2,
            svrcapt: 7,
        };
        let mut b = Builder::default();
        b.begin();
        b.capture(
            key,
            &CaptureValues {
                stats: Some(stats),
                ..Default::default()
            },
        );
        let text = render(b.snapshot(), 0, 0.0, None);
        for want in [
            "# TYPE xrpcap_sensor_agent_ifrecv gauge\n",
            "xrpcap_sensor_agent_ifrecv{agent=\"10.0.0.2\",interface=\"eth1\"} 10\n",
            "xrpcap_sensor_agent_ifdrop{agent=\"10.0.0.2\",interface=\"eth1\"} 1\n",
            "xrpcap_sensor_agent_krnldrop{agent=\"10.0.0.2\",interface=\"eth1\"} 2\n",
            "xrpcap_sensor_agent_svrcapt{agent=\"10.0.0.2\",interface=\"eth1\"} 7\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        // No RSS read: no RSS series.
        assert!(!text.contains("resident_memory"), "{text}");
    }

    #[test]
    fn the_endpoint_answers_metrics_and_nothing_else() {
        use std::io::{Read, Write};
        let p = Arc::new(Published::new(Arc::new(AtomicU64::new(7))));
        let e = Endpoint::start("127.0.0.1:0".parse().unwrap(), p).unwrap();
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(e.local_addr()).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            r
        };
        let r = get("/metrics");
        assert!(r.starts_with("HTTP/1.0 200"), "{r}");
        assert!(
            r.contains("xrpcap_sensor_output_written_bytes_total 7\n"),
            "{r}"
        );
        assert!(
            r.contains("# TYPE xrpcap_sensor_output_written_bytes_total counter\n"),
            "{r}"
        );
        assert!(
            r.contains("Content-Type: text/plain; version=0.0.4\r\n"),
            "{r}"
        );
        assert!(!r.contains("# EOF"), "{r}");
        assert!(get("/").starts_with("HTTP/1.0 404"));
    }
}
