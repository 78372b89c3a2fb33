//! The sensor's event loop: one mio poll for every agent's control
//! connection and data channel, the listener and the dials. The loop only
//! routes: each event goes to the owner of its token ([`Owner`]), timers
//! tick, signals and limits stop it, and the shutdown closes every capture.
//! The work is the owners': [`Agent`] (control, data channel, capture),
//! [`Dialer`], [`Listener`], [`Linger`].
//!
//! With `--receive-threads N` there are N such loops, one per thread, each
//! with its own agents ([`crate::shard`] says how they are dealt and what
//! the first loop does for all).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};
use rpcap::addr::canonical;
use sys::signal::{SignalPipe, SIGHUP, SIGINT, SIGTERM};

use crate::agent::{Agent, Shared};
use crate::allow::Allow;
use crate::config::Config;
use crate::data::UdpPort;
use crate::data_channel::{Buffers, UdpPorts};
use crate::dial::Dialer;
use crate::filter;
use crate::linger::Linger;
use crate::listener::Listener;
use crate::metrics;
use crate::notify::{self, Notifier};
use crate::output::Stream;
use crate::shard::{Role, ShardEnd};
use crate::token::Owner;
use crate::writer::{self, Writer};

/// How often timers (stats, liveness, rotation, summaries) run.
const TICK: Duration = Duration::from_millis(100);
/// How long a stopping sensor waits, all agents together, for ENDCAP's
/// replies and for the agents to close after CLOSE: a dead agent cannot
/// hold the shutdown.
const GOODBYE: Duration = Duration::from_secs(2);

pub struct Sensor {
    poll: Poll,
    listener: Option<Listener>,
    /// `--allow`: who may connect to the listener.
    allow: Allow,
    dialer: Dialer,
    agents: Vec<Option<Agent>>,
    free: Vec<usize>,
    linger: Linger,
    shared: Shared,
    /// The writer thread: the leading loop's (the others hold handles).
    writer: Option<Writer>,
    /// `--receive-threads`: this loop's part (the only one by default).
    role: Role,
    /// SIGINT/SIGTERM (stop cleanly) and SIGHUP (re-read the filter file).
    signals: Option<SignalPipe>,
    /// A stop signal arrived.
    stop_signal: bool,
    stopping: bool,
    /// READY/STATUS/WATCHDOG/RELOADING/STOPPING for systemd.
    notify: Notifier,
    /// `--metrics-listen`: the endpoint, what it exports, and the builder
    /// of each tick's snapshot.
    metrics: Option<Metrics>,
}

struct Metrics {
    builder: metrics::Builder,
    published: std::sync::Arc<metrics::Published>,
    /// This loop's snapshot slot (its shard number).
    slot: usize,
    /// The HTTP endpoint: the leading loop's.
    endpoint: Option<metrics::Endpoint>,
}

/// What one loop is made of beyond the configuration: the sockets that
/// were bound for it and the handles of what the loops share.
struct Parts {
    listener: Option<std::net::TcpListener>,
    shared_udp: Option<UdpPort>,
    /// Its `--connect` targets.
    connect: Vec<String>,
    writer: writer::Handle,
    tap: Option<std::sync::Arc<sys::tap::Tap>>,
    filter: Option<String>,
    stream: Option<Stream>,
    metrics: Option<Metrics>,
}

impl Sensor {
    /// Binds the listener and prepares the dials; fails with a clear message
    /// when the address is taken. With `--receive-threads N`, builds the N
    /// loops: this one leads, the others start with [`Sensor::run`].
    pub fn new(cfg: Config) -> Result<Sensor> {
        let n = cfg.receive_threads.max(1);
        // The TAP before the listener: no agent is taken by a sensor that
        // cannot do what it was asked.
        let tap = cfg.tap.as_deref().map(crate::tap::open).transpose()?;
        let mut listeners: Vec<Option<std::net::TcpListener>> = match cfg.listen {
            Some(addr) => {
                let group = Listener::bind_group(addr, n)
                    .map_err(|e| anyhow::anyhow!("cannot listen for agents on {addr}: {e}"))?;
                log::info!("listening for active agents on {}", group[0].local_addr()?);
                if cfg.allow.is_empty() && !addr.ip().is_loopback() {
                    log::warn!(
                        "accepting agents from any address on {addr}: restrict them with --allow CIDR"
                    );
                }
                group.into_iter().map(Some).collect()
            }
            None => (0..n).map(|_| None).collect(),
        };
        let mut filter = cfg.filter.clone();
        if let Some(f) = &cfg.filter_file {
            filter = Some(filter::read_file(f)?);
        }
        let writer = Writer::start().context("cannot start the writer thread")?;
        // A named pipe waits here for its reader, before any agent is taken.
        let stream = match &cfg.output.stream {
            Some(to) => Some(Stream::open(to)?),
            None => None,
        };
        let mut endpoint = None;
        let published = match cfg.metrics_listen {
            Some(addr) => {
                let published =
                    std::sync::Arc::new(metrics::Published::with_shards(writer.written(), n));
                let e = metrics::Endpoint::start(addr, published.clone())?;
                log::info!("serving metrics on http://{}/metrics", e.local_addr());
                endpoint = Some(e);
                Some(published)
            }
            None => None,
        };
        let mut shared_udp: Vec<Option<UdpPort>> = match cfg.udp_shared_port {
            Some(port) => {
                // The wildcard of the listener's family: agents send to whichever
                // address of ours they reached.
                let ip: std::net::IpAddr = match cfg.listen {
                    Some(a) if a.is_ipv6() => std::net::Ipv6Addr::UNSPECIFIED.into(),
                    _ => std::net::Ipv4Addr::UNSPECIFIED.into(),
                };
                let addr = SocketAddr::new(ip, port);
                let group = crate::data::bind_shared_group(addr, n)
                    .with_context(|| format!("cannot bind --udp-shared-port on {addr}"))?;
                log::info!("UDP data of every capture on the shared port {addr}");
                group.into_iter().map(Some).collect()
            }
            None => (0..n).map(|_| None).collect(),
        };
        if n > 1 {
            log::info!("{n} receive threads: agents dealt by address (--receive-threads)");
            // The writer thread needs a core too.
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            if n >= cores {
                log::warn!(
                    "{n} receive threads on {cores} core(s): they and the writer thread compete for the cores; at most {} is better",
                    cores.saturating_sub(1).max(1)
                );
            }
        }
        let ctl = (n > 1).then(|| crate::shard::Control::new(n));
        let mut lead = None;
        let mut others = Vec::with_capacity(n - 1);
        for i in 0..n {
            let parts = Parts {
                listener: listeners[i].take(),
                shared_udp: shared_udp[i].take(),
                connect: crate::shard::deal(&cfg.connect, i, n),
                writer: writer.handle(),
                tap: tap.clone(),
                filter: filter.clone(),
                // Only one loop with -w (the command line refuses more).
                stream: None,
                metrics: published.as_ref().map(|p| Metrics {
                    builder: metrics::Builder::default(),
                    published: p.clone(),
                    slot: i,
                    endpoint: None,
                }),
            };
            let role = match &ctl {
                None => Role::Only,
                Some(c) if i == 0 => Role::Leader {
                    ctl: c.clone(),
                    waiting: Vec::new(),
                    running: Vec::new(),
                },
                Some(c) => Role::Follower {
                    ctl: c.clone(),
                    index: i,
                    filter_seen: 0,
                },
            };
            if i == 0 {
                lead = Some(Sensor::shard(cfg.clone(), parts, role)?);
            } else {
                let cfg = cfg.clone();
                let body: crate::shard::Body =
                    Box::new(move || Sensor::shard(cfg, parts, role)?.run_follower());
                others.push((i, body));
            }
        }
        let mut lead = lead.expect("shard 0");
        lead.shared.stream = stream;
        lead.writer = Some(writer);
        if let Some(m) = lead.metrics.as_mut() {
            m.endpoint = endpoint;
        }
        if let Role::Leader { waiting, .. } = &mut lead.role {
            *waiting = others;
        }
        Ok(lead)
    }

    /// One loop on the sockets bound for it.
    fn shard(cfg: Config, p: Parts, role: Role) -> Result<Sensor> {
        let poll = Poll::new().context("cannot create the event loop")?;
        let listener = p
            .listener
            .map(|l| Listener::register(l, poll.registry()))
            .transpose()
            .context("event loop")?;
        let mut ports = UdpPorts::new(cfg.udp_ports);
        if let Some(mut udp) = p.shared_udp {
            poll.registry()
                .register(&mut udp.sock, Owner::SharedUdp.token(), Interest::READABLE)
                .context("event loop")?;
            let mut sp = crate::shared_port::SharedPort::new(udp);
            sp.set_member(role.index(), cfg.receive_threads);
            ports.shared = Some(sp);
        }
        Ok(Sensor {
            metrics: p.metrics,
            listener,
            allow: Allow::new(cfg.allow.clone()),
            dialer: Dialer::new(&p.connect, Instant::now()),
            agents: Vec::new(),
            free: Vec::new(),
            linger: Linger::default(),
            shared: Shared {
                registry: poll.registry().try_clone().context("event loop")?,
                bufs: Buffers::new(),
                ports,
                writer: Some(p.writer),
                budget: cfg.count.unwrap_or(u64::MAX),
                filter: p.filter,
                stream: p.stream,
                tap: p.tap,
                cfg,
            },
            poll,
            writer: None,
            role,
            signals: None,
            stop_signal: false,
            stopping: false,
            notify: Notifier::from_env(),
        })
    }

    /// This loop's shard number (0: the leading or only one).
    pub fn shard_index(&self) -> usize {
        self.role.index()
    }

    /// Routes SIGINT, SIGTERM and SIGHUP into the loop (the binary does;
    /// tests leave the process's signals alone).
    pub fn handle_signals(&mut self) -> Result<()> {
        let pipe = SignalPipe::install(&[SIGINT, SIGTERM, SIGHUP])
            .context("cannot install signal handlers")?;
        self.poll
            .registry()
            .register(
                &mut SourceFd(&pipe.as_raw_fd()),
                Owner::Signals.token(),
                Interest::READABLE,
            )
            .context("cannot install signal handlers")?;
        self.signals = Some(pipe);
        Ok(())
    }

    /// Runs until a signal, `--count` or `--duration`; then closes every
    /// capture cleanly and prints the final summary (the other receive
    /// threads' too).
    pub fn run(&mut self) -> Result<()> {
        self.role.start()?;
        if let Err(e) = self.serve() {
            // As with one loop: the error at once (the others are stopped).
            self.role.join();
            return Err(e);
        }
        let end = self.close_all();
        self.finish(end)
    }

    /// A receive thread's life: its loop, then its captures' ends for the
    /// leading loop's summary.
    fn run_follower(&mut self) -> Result<ShardEnd> {
        let served = self.serve();
        let end = self.close_all();
        served.map(|()| end)
    }

    /// The event loop.
    fn serve(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut events = Events::with_capacity(1024);
        let mut next_tick = start;
        let mut next_summary = start + self.shared.cfg.summary_interval;
        if self.role.leads() {
            self.notify.ready(start, self.status_line());
        }
        loop {
            if self.stop_signal {
                log::info!("stopping on signal");
                break;
            }
            if let Some(why) = self.role.must_stop() {
                log::debug!("receive thread {}: stopping: {why}", self.shard_index());
                break;
            }
            if self.shared.budget == 0 {
                log::info!(
                    "stopping: {} packets written",
                    self.shared.cfg.count.unwrap_or(0)
                );
                break;
            }
            if self
                .shared
                .cfg
                .duration
                .is_some_and(|d| start.elapsed() >= d)
            {
                log::info!("stopping: duration reached");
                break;
            }
            match self.poll.poll(&mut events, Some(TICK)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("event loop"),
            }
            for ev in events.iter() {
                self.route(Owner::of(ev.token()));
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                self.tick(now);
                self.publish_metrics();
                let status = self.status_line();
                if self.role.leads() {
                    self.notify.status(status);
                }
            }
            if self.role.leads() {
                self.notify.tick(now);
            }
            if let Role::Follower {
                ctl, filter_seen, ..
            } = &mut self.role
            {
                if let Some(f) = ctl.new_filter(filter_seen) {
                    self.apply_filter(f);
                }
            }
            if now >= next_summary {
                next_summary = now + self.shared.cfg.summary_interval;
                for a in self.agents.iter_mut().flatten() {
                    if let Some(line) = a.summary_line(now) {
                        log::info!("{line}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands a socket's event to its owner.
    fn route(&mut self, owner: Owner) {
        let sh = &mut self.shared;
        match owner {
            Owner::Listener => self.accept(),
            Owner::Dial(i) => {
                if let Some((stream, addr)) = self.dialer.on_ready(i, &sh.registry) {
                    if !matches!(self.role, Role::Only) {
                        log::info!(
                            "passive agent {addr} on receive thread {}",
                            self.shard_index()
                        );
                    }
                    self.add_agent(stream, addr, Some(i));
                }
            }
            Owner::Control(i) => {
                let Some(a) = self.agents.get_mut(i).and_then(Option::as_mut) else {
                    return;
                };
                if let Some(reason) = a.on_control(sh, Instant::now()) {
                    self.close_agent(i, &reason);
                }
            }
            Owner::Data(i) => {
                if let Some(a) = self.agents.get_mut(i).and_then(Option::as_mut) {
                    a.on_data(sh);
                }
            }
            Owner::Linger(i) => self.linger.on_readable(i, &mut sh.bufs.batch),
            Owner::Signals => self.on_signals(),
            Owner::SharedUdp => self.read_shared(),
        }
    }

    /// Reads the shared UDP port (recvmmsg batches) and hands each datagram
    /// to the capture its source is routed to: one hash lookup each.
    fn read_shared(&mut self) {
        let sh = &mut self.shared;
        let Some(sp) = sh.ports.shared.as_mut() else {
            return;
        };
        loop {
            let n = match sh.bufs.batch.recv(&sp.port.sock) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("shared UDP port: receive: {e}");
                    break;
                }
            };
            for i in 0..n {
                let (buf, m) = sh.bufs.batch.get(i);
                sp.socket_drops += sp.port.drops(m.overflow);
                // One buffer may hold several datagrams of one sender (UDP GRO).
                let count = m.count() as u64;
                let (token, admitted) = match sp.route(m.from) {
                    crate::shared_port::Route::Agent(t) => (t, true),
                    crate::shared_port::Route::ForeignOf(t) => (t, false),
                    crate::shared_port::Route::Unknown => {
                        sp.foreign += count;
                        continue;
                    }
                };
                let Owner::Data(idx) = Owner::of(mio::Token(token)) else {
                    sp.foreign += count;
                    continue;
                };
                match self.agents.get_mut(idx).and_then(Option::as_mut) {
                    Some(a) => a.on_shared_datagrams(buf, &m, admitted, &mut sh.budget),
                    None => sp.foreign += count,
                }
            }
        }
    }

    fn on_signals(&mut self) {
        let Some(caught) = self.signals.as_mut().map(SignalPipe::drain) else {
            return;
        };
        if caught.contains(SIGINT) || caught.contains(SIGTERM) {
            self.stop_signal = true;
        }
        if caught.contains(SIGHUP) {
            self.notify.reloading();
            self.reload_filter();
            self.notify.reloaded(self.status_line());
        }
    }

    fn accept(&mut self) {
        while let Some((stream, peer)) = self.listener.as_ref().and_then(Listener::accept) {
            if !self.allow.admits(peer.ip(), Instant::now()) {
                // Closed unread: no RPCAP byte, no session, no slot.
                drop(stream);
                continue;
            }
            match self.role {
                Role::Only => log::info!("agent {peer} connected (active mode)"),
                _ => log::info!(
                    "agent {peer} connected (active mode, receive thread {})",
                    self.shard_index()
                ),
            }
            self.add_agent(stream, peer, None);
        }
    }

    fn add_agent(&mut self, stream: TcpStream, peer: SocketAddr, dial: Option<usize>) {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.agents.push(None);
            self.agents.len() - 1
        });
        let ip = canonical(peer.ip());
        let same_ip = self
            .agents
            .iter()
            .flatten()
            .any(|a| canonical(a.peer().ip()) == ip);
        let name = if same_ip {
            format!("{ip}_{}", peer.port())
        } else {
            ip.to_string()
        };
        let host = dial
            .and_then(|d| self.dialer.host(d))
            .map_or_else(|| peer.ip().to_string(), str::to_string);
        match Agent::connect(
            stream,
            peer,
            &host,
            dial,
            name,
            idx,
            &self.shared,
            Instant::now(),
        ) {
            Ok(a) => self.agents[idx] = Some(a),
            Err(e) => {
                log::error!("agent {peer}: cannot register: {e}");
                self.free.push(idx);
                if let Some(d) = dial {
                    self.dialer.redial(d);
                }
            }
        }
    }

    fn close_agent(&mut self, idx: usize, reason: &str) {
        let Some(a) = self.agents.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let sh = &mut self.shared;
        // While stopping no port lingers: the sensor is about to exit.
        let ended = a.close(sh, reason, !self.stopping);
        if let Some(d) = ended.dial {
            self.dialer.redial(d);
        }
        let now = Instant::now();
        if let Some(c) = ended.capture {
            self.linger.add(c, &mut sh.ports, &sh.registry, now);
        }
        self.free.push(idx);
        self.linger
            .finish(now, self.stopping, &mut sh.ports, &sh.registry);
    }

    fn tick(&mut self, now: Instant) {
        self.accept();
        let sh = &mut self.shared;
        self.linger
            .finish(now, self.stopping, &mut sh.ports, &sh.registry);
        self.dialer.tick(now, &sh.registry);
        for idx in 0..self.agents.len() {
            let Some(a) = self.agents[idx].as_mut() else {
                continue;
            };
            if let Some(reason) = a.tick(&mut self.shared, now) {
                self.close_agent(idx, &reason);
            }
        }
    }

    /// Copies every capture's counters and the sessions' states into the
    /// snapshot the metrics endpoint exports (the tick's rhythm, never per
    /// packet).
    fn publish_metrics(&mut self) {
        let settled = self.linger.take_settled();
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        for (key, v) in &settled {
            m.builder.retire(key.clone(), v);
        }
        m.builder.begin();
        m.builder.agents_refused(self.allow.refused());
        m.builder.shared_port(self.shared.ports.shared.as_ref());
        m.builder
            .tls_refused(self.shared.cfg.tls.as_ref().map_or(0, |t| t.refused()));
        for (key, v) in self.linger.metrics() {
            m.builder.capture(key, &v);
        }
        for a in self.agents.iter().flatten() {
            m.builder.session(a.state_name());
            if let Some((key, v)) = a.metrics() {
                m.builder.capture(key, &v);
            }
        }
        m.published.publish_shard(m.slot, m.builder.snapshot());
    }

    /// Active agents refused by `--allow` so far.
    pub fn agents_refused(&self) -> u64 {
        self.allow.refused()
    }

    /// Where the metrics endpoint listens (None without `--metrics-listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|m| m.endpoint.as_ref())
            .map(metrics::Endpoint::local_addr)
    }

    fn reload_filter(&mut self) {
        let sh = &mut self.shared;
        let Some(expr) = filter::reload(sh.cfg.filter_file.as_deref(), sh.cfg.session.snaplen)
        else {
            return;
        };
        // The other receive threads take it at their next wake-up.
        if let Some(ctl) = self.role.control() {
            ctl.set_filter(Some(expr.clone()));
        }
        self.apply_filter(Some(expr));
    }

    /// New captures start with `expr`; running ones get it now.
    fn apply_filter(&mut self, expr: Option<String>) {
        let sh = &mut self.shared;
        sh.filter = expr;
        let now = Instant::now();
        for a in self.agents.iter_mut().flatten() {
            a.update_filter(sh.filter.as_deref(), now);
        }
    }

    /// The `STATUS=` text: agents connected, captures running (in every
    /// receive thread; a follower reports its own counts to the leader).
    fn status_line(&self) -> String {
        let agents = self.agents.iter().flatten();
        let mut captures = agents.clone().filter(|a| a.capturing()).count();
        let mut agents = agents.count();
        if let Some(ctl) = self.role.control() {
            let i = self.shard_index();
            ctl.set_counts(i, agents, captures);
            let (a, c) = ctl.others(i);
            agents += a;
            captures += c;
        }
        notify::status_line(agents, captures)
    }

    /// ENDCAP and CLOSE to every agent, as a client closing its captures
    /// would: waits (at most [`GOODBYE`]) for each to answer ENDCAP and to
    /// close its side after CLOSE, taking the data still in flight. Agents
    /// that have not closed by then get CLOSE now and are closed by the caller.
    fn say_goodbye(&mut self) {
        let start = Instant::now();
        let deadline = start + GOODBYE;
        for a in self.agents.iter_mut().flatten() {
            a.stop(start);
        }
        let mut events = Events::with_capacity(256);
        while self.agents.iter().any(Option::is_some) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.poll.poll(&mut events, Some(deadline - now)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            for ev in events.iter() {
                match Owner::of(ev.token()) {
                    // No new agents while stopping; a second signal changes nothing.
                    Owner::Listener | Owner::Dial(_) | Owner::Signals => {}
                    owner => self.route(owner),
                }
            }
        }
        let now = Instant::now();
        let late: Vec<_> = self.agents.iter_mut().flatten().collect();
        if !late.is_empty() {
            log::info!(
                "{} agent(s) did not close within {GOODBYE:?} of ENDCAP/CLOSE",
                late.len()
            );
        }
        for a in late {
            a.stop(now);
        }
    }

    /// Closes this loop's captures cleanly (ENDCAP/CLOSE, lingering
    /// ports, the writer handed everything); what is left for the summary.
    fn close_all(&mut self) -> ShardEnd {
        self.stopping = true;
        if let Some(ctl) = self.role.control() {
            // The other loops say goodbye to their agents at the same time.
            ctl.stop();
        }
        if self.role.leads() {
            self.notify.stopping();
        }
        self.say_goodbye();
        for idx in 0..self.agents.len() {
            self.close_agent(idx, "sensor stopping");
        }
        // Wait (bounded) for the writer to write what the captures handed it.
        self.linger.hurry(Instant::now() + Duration::from_secs(5));
        let sh = &mut self.shared;
        loop {
            self.linger
                .finish(Instant::now(), true, &mut sh.ports, &sh.registry);
            if self.linger.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The writer ends once every handle is gone: the captures' went
        // with their outputs, this is the loop's own.
        sh.writer = None;
        sh.stream = None;
        ShardEnd {
            lines: self.linger.lines().to_vec(),
            refused: self.allow.refused(),
            shared: sh
                .ports
                .shared
                .as_ref()
                .map(|sp| [sp.foreign, sp.socket_drops, sp.fallbacks]),
        }
    }

    /// The leading loop's end: the other loops' ends, the writer stopped,
    /// the summary and `--stats-file`.
    fn finish(&mut self, mut end: ShardEnd) -> Result<()> {
        let (others, failed) = self.role.join();
        end.merge(others);
        if let Some(w) = self.writer.as_mut() {
            w.stop(Duration::from_secs(2));
        }
        let sh = &mut self.shared;
        let cfg = &sh.cfg;
        // Rotation (-W, -z): what happened to finished files.
        let files = &cfg.output.files;
        if files.post_rotate.is_some() {
            files.wait_post_rotate(Duration::from_secs(2));
        }
        if files.post_rotate.is_some() || files.keep.is_some() {
            log::info!(
                "rotation: files_deleted={} post_rotate_failures={}",
                files.deleted.load(std::sync::atomic::Ordering::Relaxed),
                files
                    .post_rotate_failures
                    .load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        // Next to the captures' final lines (stderr, whatever the log level).
        if let (Some(sp), Some([foreign, socket_drops, fallbacks])) = (&sh.ports.shared, end.shared)
        {
            eprintln!(
                "shared UDP port {}: foreign={foreign} socket_drops={socket_drops} fallbacks={fallbacks}",
                sp.port.port
            );
        }
        let total: u64 = cfg.count.map_or(0, |c| c - sh.budget);
        log::info!(
            "sensor stopped: {} capture(s){}{}",
            end.lines.len(),
            if cfg.count.is_some() {
                format!(", {total} packets")
            } else {
                String::new()
            },
            if self.allow.is_open() {
                String::new()
            } else {
                format!(", agents_refused={}", end.refused)
            }
        );
        if let Some(path) = &cfg.stats_file {
            let mut text = end.lines.join("\n");
            text.push('\n');
            std::fs::write(path, text)
                .with_context(|| format!("cannot write stats file {}", path.display()))?;
        }
        io::stdout().flush().ok();
        failed.map_or(Ok(()), Err)
    }
}
