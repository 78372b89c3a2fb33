//! The running exports of `TunnelClient` lines: one capture per line, on
//! its interface, with the agent's `LocalFilter` AND the line's `filter=`,
//! sending every frame in the line's tunnel (a datapath worker with the
//! tunnel sink, `Transport::Tunnel`). No sensor, no session: the control
//! loop starts them with the configuration ([`Exports::apply`], at start
//! and at each reload: unchanged lines keep running), publishes their
//! counters with the sensors' and stops them at the end.
//!
//! Own traffic: every export's tunnel datagrams are left out of every
//! capture of the agent — the exports' ([`Exports::exclusion`] is part of
//! their filter) and the sensors' (the control loop ANDs it with the
//! `LocalFilter` its sessions get) — so no capture sees an export, not
//! even one on the interface the tunnel leaves by.
//!
//! An export that cannot start (no such interface, an unresolvable host)
//! or that stops by itself (the interface went away) is tried again every
//! [`RETRY`], with one WARN per change of its error.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpcap::msg::Sampling;

use crate::capture::{self, Direction};
use crate::datapath::summary::{final_line, periodic_line, Meter};
use crate::datapath::{CaptureSpec, Counters, Transport, Worker};
use crate::filter::{canonical, compile};
use crate::iface;
use crate::metrics::LiveCapture;
use crate::settings::tunnel::TunnelClient;
use crate::settings::{Backend, CaptureSettings, Config};

/// How long a failed export waits before it is tried again.
pub const RETRY: Duration = Duration::from_secs(5);
/// Snapshot length of an export: whole frames (a frame longer than the path
/// takes is cut or counted by the tunnel sink anyway).
pub const SNAPLEN: u32 = 65535;
/// Flush deadline of the capture (the sink sends every poll round anyway).
const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// First metrics id of the exports (the connections' tokens are small).
const FIRST_ID: u64 = 1 << 62;

/// One line's export.
#[derive(Debug)]
struct Export {
    line: TunnelClient,
    label: String,
    ifname: String,
    /// Resolved at the first start; kept for the exclusion.
    dest: Option<SocketAddr>,
    worker: Option<Worker>,
    /// Metrics id of the running worker.
    id: u64,
    last_error: Option<String>,
    /// When to (re)start it; None: never (no interface, replay done).
    next_try: Option<Instant>,
    /// The counters at the last summary line (`SummaryInterval`).
    meter: Option<Meter>,
}

/// Every export of the configuration.
#[derive(Debug, Default)]
pub struct Exports {
    exports: Vec<Export>,
    settings: Option<Arc<CaptureSettings>>,
    local_filter: Option<String>,
    next_id: u64,
    /// `SummaryInterval` (None: no periodic lines).
    summary_every: Option<Duration>,
}

/// The tcpdump expression matching the datagrams of exports to `dests`.
pub fn exclusion_of(dests: &[(bool, SocketAddr)]) -> Option<String> {
    let parts: Vec<String> = dests
        .iter()
        .map(|(udp, d)| {
            let ip = canonical(d.ip());
            let family = if ip.is_ipv4() { "ip" } else { "ip6" };
            if *udp {
                format!("(udp and dst host {ip} and dst port {})", d.port())
            } else {
                format!("({family} proto 47 and dst host {ip})")
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" or "))
}

/// `local` with the exports' datagrams left out.
pub fn with_exclusion(local: Option<&str>, exclusion: Option<&str>) -> Option<String> {
    match (local, exclusion) {
        (l, None) => l.map(str::to_string),
        (None, Some(x)) => Some(format!("not ({x})")),
        (Some(l), Some(x)) => Some(format!("not ({x}) and ({l})")),
    }
}

fn resolve(line: &TunnelClient) -> Result<SocketAddr, String> {
    (line.host.as_str(), line.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", line.host))?
        .next()
        .ok_or_else(|| format!("{}: no address", line.host))
}

impl Exports {
    /// Starts the lines of `cfg` that are not running, stops the others.
    /// Blocks while each new export resolves its host and opens its capture.
    pub fn apply(&mut self, cfg: &Config) {
        let settings = Arc::new(cfg.capture.clone());
        // New settings or filter: every export restarts with them.
        let changed =
            self.settings.as_deref() != Some(&*settings) || self.local_filter != cfg.local_filter;
        let (keep, gone): (Vec<Export>, Vec<Export>) = std::mem::take(&mut self.exports)
            .into_iter()
            .partition(|e| !changed && cfg.tunnel_clients.contains(&e.line));
        for e in gone {
            stop(e);
        }
        self.exports = keep;
        self.settings = Some(settings);
        self.local_filter = cfg.local_filter.clone();
        self.summary_every = (cfg.summary_interval_secs > 0)
            .then(|| Duration::from_secs(cfg.summary_interval_secs.into()));
        let now = Instant::now();
        for line in &cfg.tunnel_clients {
            if self.exports.iter().any(|e| &e.line == line) {
                continue;
            }
            let mut e = Export {
                label: line.label(),
                ifname: line.ifname.clone().unwrap_or_default(),
                line: line.clone(),
                dest: resolve(line).ok(),
                worker: None,
                id: 0,
                last_error: None,
                next_try: Some(now),
                meter: None,
            };
            if e.ifname.is_empty() {
                e.last_error = Some("no interface: add ifname=IF or -i IFNAME".into());
                log::error!(
                    "TunnelClient {}: no interface (ifname=IF or -i IFNAME)",
                    e.label
                );
                e.next_try = None;
            }
            self.exports.push(e);
        }
        // Every destination known first: each export's filter leaves all out.
        self.check(now);
    }

    /// The exports' own datagrams as a tcpdump expression (None: no export
    /// resolved yet).
    pub fn exclusion(&self) -> Option<String> {
        let dests: Vec<(bool, SocketAddr)> = self
            .exports
            .iter()
            .filter_map(|e| Some((e.line.kind.is_udp(), e.dest?)))
            .collect();
        exclusion_of(&dests)
    }

    /// Starts what is due: new exports, failed ones after [`RETRY`].
    pub fn check(&mut self, now: Instant) {
        for i in 0..self.exports.len() {
            let e = &mut self.exports[i];
            if let Some(w) = &e.worker {
                if !w.is_finished() {
                    // A summary line every `SummaryInterval`, as a sensor's capture.
                    if let Some(every) = self.summary_every {
                        let c = w.counters();
                        let m = e.meter.get_or_insert_with(|| Meter::new(c, now));
                        if m.age(now) >= every {
                            let rates = m.advance(c, now);
                            let owner = format!("tunnel={}", e.label);
                            log::info!("{}", periodic_line(&owner, &e.ifname, &c, &rates));
                        }
                    }
                    continue;
                }
                let why = w.failure();
                let w = e.worker.take().expect("checked");
                stop_worker(&e.label, &e.ifname, w);
                match why {
                    Some(why) => self.failed(i, why, now),
                    None => {
                        // A file replayed to its end (`Capture = file:`):
                        // done, not restarted.
                        log::info!("TunnelClient {}: capture ended", e.label);
                        e.next_try = None;
                    }
                }
                continue;
            }
            if e.next_try.is_none_or(|t| now < t) {
                continue;
            }
            if e.dest.is_none() {
                match resolve(&e.line) {
                    Ok(d) => e.dest = Some(d),
                    Err(why) => {
                        self.failed(i, why, now);
                        continue;
                    }
                }
            }
            let exclusion = self.exclusion();
            match self.start(i, exclusion.as_deref()) {
                Ok(w) => {
                    let id = FIRST_ID + self.next_id;
                    self.next_id += 1;
                    let e = &mut self.exports[i];
                    log::info!(
                        "TunnelClient {}: exporting {} in {}",
                        e.label,
                        e.ifname,
                        e.line.kind.name()
                    );
                    e.worker = Some(w);
                    e.meter = None;
                    e.id = id;
                    e.last_error = None;
                }
                Err(why) => self.failed(i, why, now),
            }
        }
    }

    fn failed(&mut self, i: usize, why: String, now: Instant) {
        let e = &mut self.exports[i];
        if e.last_error.as_deref() != Some(&why) {
            log::warn!(
                "TunnelClient {}: {why}; trying again every {}s",
                e.label,
                RETRY.as_secs()
            );
        }
        e.last_error = Some(why);
        e.next_try = Some(now + RETRY);
    }

    /// Opens export `i`'s capture and starts its worker.
    fn start(&self, i: usize, exclusion: Option<&str>) -> Result<Worker, String> {
        let e = &self.exports[i];
        let settings = self.settings.clone().unwrap_or_default();
        let dest = e.dest.ok_or("no address")?;
        let backend = match &settings.backend {
            Backend::AfXdp if settings.xdp.covers(&e.ifname) => Backend::AfXdp,
            Backend::AfXdp => Backend::AfPacket,
            b => b.clone(),
        };
        let linktype = match &backend {
            Backend::File(path) => pcap::Capture::from_file(path)
                .map(|c| c.get_datalink().0)
                .map_err(|err| format!("{}: {err}", path.display()))?,
            _ => iface::linktype(&e.ifname).map_err(|err| format!("{}: {err}", e.ifname))?,
        };
        if linktype != iface::DLT_EN10MB {
            return Err(format!(
                "{}: link type {linktype} is not Ethernet: tunnels carry Ethernet frames",
                e.ifname
            ));
        }
        let local = with_exclusion(self.local_filter.as_deref(), exclusion);
        let expr = match (local, &e.line.filter) {
            (None, None) => String::new(),
            (Some(l), None) => l,
            (None, Some(f)) => f.clone(),
            (Some(l), Some(f)) => format!("{l} and ({f})"),
        };
        let filter = compile(linktype, &expr).map_err(|err| err.to_string())?;
        let cpus = settings.worker_cpus.clone();
        let latency = READ_TIMEOUT.min(settings.max_latency);
        let spec = CaptureSpec {
            capture: capture::Request {
                ifname: e.ifname.clone(),
                backend,
                settings,
                own: None,
                snaplen: e.line.snaplen.unwrap_or(SNAPLEN),
                promisc: true,
                direction: Direction::Both,
                latency,
                filter,
            },
            sampling: Sampling {
                method: u8::from(e.line.sample.is_some()),
                value: e.line.sample.unwrap_or(0),
            },
            transport: Transport::Tunnel {
                kind: e.line.kind,
                dest,
            },
            // `WorkerCpu`, handed out in turn over the exports.
            cpu: (!cpus.is_empty()).then(|| cpus[i % cpus.len()]),
            decap: None,
        };
        Worker::start(spec).map_err(|err| err.to_string())
    }

    /// The running exports, for the metrics and the status.
    pub fn live(&self) -> Vec<LiveCapture> {
        self.exports
            .iter()
            .filter_map(|e| {
                Some(LiveCapture {
                    sensor: e.label.clone(),
                    interface: e.ifname.clone(),
                    id: e.id,
                    counters: e.worker.as_ref()?.counters(),
                })
            })
            .collect()
    }

    /// Whether `label` is an export's (its metrics stay).
    pub fn has_label(&self, label: &str) -> bool {
        self.exports.iter().any(|e| e.label == label)
    }

    /// Counters of every running export (tests, status).
    pub fn counters(&self) -> Vec<(String, Counters)> {
        self.exports
            .iter()
            .filter_map(|e| Some((e.label.clone(), e.worker.as_ref()?.counters())))
            .collect()
    }

    /// Stops every export (with its final counter line).
    pub fn stop_all(&mut self) {
        for e in self.exports.drain(..) {
            stop(e);
        }
    }
}

fn stop(mut e: Export) {
    if let Some(w) = e.worker.take() {
        stop_worker(&e.label, &e.ifname, w);
    }
}

fn stop_worker(label: &str, ifname: &str, mut w: Worker) {
    let c = w.stop_counters();
    log::info!("{}", final_line(&format!("tunnel={label}"), ifname, &c));
}

impl Drop for Exports {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusion_covers_every_destination_by_protocol() {
        let d = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(exclusion_of(&[]), None);
        let x = exclusion_of(&[(true, d("10.0.0.1:4789")), (false, d("[fd00::2]:0"))]).unwrap();
        assert_eq!(
            x,
            "(udp and dst host 10.0.0.1 and dst port 4789) or (ip6 proto 47 and dst host fd00::2)"
        );
        // It compiles, alone and with a local filter.
        let all = with_exclusion(Some("tcp"), Some(&x)).unwrap();
        assert_eq!(all, format!("not ({x}) and (tcp)"));
        compile(iface::DLT_EN10MB, &all).unwrap();
        assert_eq!(with_exclusion(Some("tcp"), None).as_deref(), Some("tcp"));
        assert_eq!(
            with_exclusion(None, Some("udp")).as_deref(),
            Some("not (udp)")
        );
    }
}
