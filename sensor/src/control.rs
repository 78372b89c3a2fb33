//! The sensor's event loop: one mio poll for every agent's control connection
//! and data channel. Control bytes go through each agent's [`Session`]; data
//! datagrams are read in recvmmsg batches, reassembled on this thread and
//! handed in buffers to the writer thread (bounded; see `writer`).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rpcap::header::ErrorCode;
use rpcap::msg::Stats;
use rpcap::stream::StreamDecoder;
use rpcap::MsgType;

use crate::capture::Capture;
use crate::data::{self, RecvBatch, UdpPort};
use crate::filter;
use crate::output::{Output, OutputConfig};
use crate::session::{DataTransport, Event, Session, SessionConfig};
use crate::signals;
use crate::summary;
use crate::writer::Writer;

const LISTENER: Token = Token(usize::MAX - 1);
/// How often timers (stats, liveness, rotation, summaries) run.
const TICK: Duration = Duration::from_millis(100);
/// How long the sensor waits for an agent to connect its TCP data channel.
const DATA_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay before dialing a passive agent again.
const REDIAL: Duration = Duration::from_secs(5);
/// How long a connect to a passive agent may take (it runs in the loop,
/// non-blocking, so a dead agent delays nobody).
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Datagrams per recvmmsg.
const BATCH: usize = 64;
/// How long a closed capture's final line waits for the writer.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// How long a closed capture's UDP port stays open to count late datagrams
/// (instead of the kernel refusing them unseen).
const LINGER: Duration = Duration::from_secs(2);

/// Everything the loop needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Option<SocketAddr>,
    /// Passive agents to dial, as `host:port`.
    pub connect: Vec<String>,
    pub session: SessionConfig,
    pub filter: Option<String>,
    pub filter_file: Option<PathBuf>,
    pub udp_ports: (u16, u16),
    pub tcp_data: bool,
    pub stats_interval: Duration,
    pub stats_timeout: Duration,
    pub summary_interval: Duration,
    pub output: OutputConfig,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub stats_file: Option<PathBuf>,
}

enum Data {
    None,
    Udp(UdpPort),
    /// The sensor listens for the agent's TCP data connection until the deadline.
    TcpListening(TcpListener, Instant),
    Tcp(TcpStream, StreamDecoder),
}

struct Agent {
    peer: SocketAddr,
    local_ip: IpAddr,
    /// `{agent}` of the file name template.
    name: String,
    /// Index into `Sensor::dials` when we dialed this agent (passive mode).
    dial: Option<usize>,
    stream: TcpStream,
    session: Session,
    capture: Option<Capture>,
    data: Data,
    stats: Option<Stats>,
    next_stats: Instant,
    /// Packets and bytes at the last periodic summary.
    prev: (u64, u64, Instant),
}

/// A closed capture whose final line waits for the writer to finish and
/// for its UDP port's linger to end.
struct Closing {
    peer: SocketAddr,
    /// The data port, still open until the instant, counting late datagrams.
    linger: Option<(UdpPort, Instant)>,
    cap: Capture,
    stats: Option<Stats>,
    files: Vec<PathBuf>,
    /// Final line now even if the writer is not done.
    deadline: Instant,
}

struct Dial {
    target: String,
    next_at: Option<Instant>,
    /// A connect in progress: socket, address, deadline.
    pending: Option<(TcpStream, SocketAddr, Instant)>,
}

/// Dial `i`'s token, counted down from just below the listener's.
fn dial_token(i: usize) -> Token {
    Token(LISTENER.0 - 1 - i)
}

pub struct Sensor {
    cfg: Config,
    poll: Poll,
    listener: Option<TcpListener>,
    agents: Vec<Option<Agent>>,
    free: Vec<usize>,
    dials: Vec<Dial>,
    batch: RecvBatch,
    used_ports: HashSet<u16>,
    /// Records still allowed by `--count`.
    budget: u64,
    stdout_taken: bool,
    filter: Option<String>,
    final_lines: Vec<String>,
    rbuf: Vec<u8>,
    writer: Writer,
    /// Slots of closed captures (token kind LINGER refers to a slot).
    closing: Vec<Option<Closing>>,
    stopping: bool,
}

fn token(idx: usize, kind: usize) -> Token {
    Token(idx * KINDS + kind)
}
const CONTROL: usize = 0;
const DATA: usize = 1;
/// A closed capture's lingering UDP port (index into `Sensor::closing`).
const LINGER_PORT: usize = 2;
const KINDS: usize = 3;

impl Sensor {
    /// Binds the listener and prepares the dials; fails with a clear message
    /// when the address is taken.
    pub fn new(cfg: Config) -> Result<Sensor> {
        let poll = Poll::new().context("cannot create the event loop")?;
        let listener = match cfg.listen {
            Some(addr) => {
                let mut l = listen(addr)
                    .map_err(|e| anyhow::anyhow!("cannot listen for agents on {addr}: {e}"))?;
                poll.registry()
                    .register(&mut l, LISTENER, Interest::READABLE)?;
                log::info!("listening for active agents on {}", l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        let dials = cfg
            .connect
            .iter()
            .map(|t| Dial {
                target: t.clone(),
                next_at: Some(Instant::now()),
                pending: None,
            })
            .collect();
        let mut filter = cfg.filter.clone();
        if let Some(f) = &cfg.filter_file {
            filter = Some(filter::read_file(f)?);
        }
        Ok(Sensor {
            budget: cfg.count.unwrap_or(u64::MAX),
            cfg,
            poll,
            listener,
            agents: Vec::new(),
            free: Vec::new(),
            dials,
            batch: RecvBatch::new(BATCH),
            used_ports: HashSet::new(),
            stdout_taken: false,
            filter,
            final_lines: Vec::new(),
            rbuf: vec![0u8; 256 * 1024],
            writer: Writer::start().context("cannot start the writer thread")?,
            closing: Vec::new(),
            stopping: false,
        })
    }

    /// Runs until a signal, `--count` or `--duration`; then closes every
    /// capture cleanly and prints the final summary.
    pub fn run(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut events = Events::with_capacity(1024);
        let mut next_tick = start;
        let mut next_summary = start + self.cfg.summary_interval;
        loop {
            if signals::stop_requested() {
                log::info!("stopping on signal");
                break;
            }
            if signals::take_hup() {
                self.reload_filter();
            }
            if self.budget == 0 {
                log::info!("stopping: {} packets written", self.cfg.count.unwrap_or(0));
                break;
            }
            if self.cfg.duration.is_some_and(|d| start.elapsed() >= d) {
                log::info!("stopping: duration reached");
                break;
            }
            match self.poll.poll(&mut events, Some(TICK)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("event loop"),
            }
            for ev in events.iter() {
                let t = ev.token();
                if t == LISTENER {
                    self.accept();
                } else if t.0 < LISTENER.0 && LISTENER.0 - 1 - t.0 < self.dials.len() {
                    self.on_dial(LISTENER.0 - 1 - t.0);
                } else {
                    match t.0 % KINDS {
                        CONTROL => self.on_control(t.0 / KINDS),
                        DATA => self.on_data(t.0 / KINDS),
                        _ => self.on_linger(t.0 / KINDS),
                    }
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                self.tick(now);
            }
            if now >= next_summary {
                next_summary = now + self.cfg.summary_interval;
                self.periodic_summary(now);
            }
        }
        self.shutdown()
    }

    fn accept(&mut self) {
        loop {
            let Some(l) = &self.listener else { return };
            match l.accept() {
                Ok((stream, peer)) => {
                    log::info!("agent {peer} connected (active mode)");
                    self.add_agent(stream, peer, None);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // One client gave up while queued: the next one may be fine.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) => {}
                // E.g. out of descriptors: the tick retries, since an
                // edge-triggered listener would not report the queue again.
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn add_agent(&mut self, mut stream: TcpStream, peer: SocketAddr, dial: Option<usize>) {
        let _ = stream.set_nodelay(true);
        let idx = self.free.pop().unwrap_or_else(|| {
            self.agents.push(None);
            self.agents.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token(idx, CONTROL),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("agent {peer}: cannot register: {e}");
            self.free.push(idx);
            return;
        }
        let local_ip = stream
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let same_ip = self
            .agents
            .iter()
            .flatten()
            .any(|a| data::canonical(a.peer.ip()) == data::canonical(peer.ip()));
        let name = if same_ip {
            format!("{}_{}", data::canonical(peer.ip()), peer.port())
        } else {
            data::canonical(peer.ip()).to_string()
        };
        let now = Instant::now();
        self.agents[idx] = Some(Agent {
            peer,
            local_ip,
            name,
            dial,
            stream,
            session: Session::new(self.cfg.session.clone(), now),
            capture: None,
            data: Data::None,
            stats: None,
            next_stats: now + self.cfg.stats_interval,
            prev: (0, 0, now),
        });
        self.flush_control(idx);
    }

    fn on_control(&mut self, idx: usize) {
        let Some(a) = self.agents.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let now = Instant::now();
        let mut end: Option<String> = None;
        loop {
            match a.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    end = Some("the agent closed the connection".into());
                    break;
                }
                Ok(n) => {
                    if let Err(e) = a.session.receive(&self.rbuf[..n], now) {
                        end = Some(e.to_string());
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    end = Some(format!("connection error: {e}"));
                    break;
                }
            }
        }
        self.handle_events(idx, now);
        self.flush_control(idx);
        if let Some(reason) = end {
            self.close_agent(idx, &reason);
        }
    }

    /// Acts on the session's events (open data port, start capture, stats…).
    fn handle_events(&mut self, idx: usize, now: Instant) {
        loop {
            let Some(a) = self.agents.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            let Some(ev) = a.session.poll_event() else {
                return;
            };
            match ev {
                Event::Opened { iface, linktype } => {
                    if let Err((code, text)) = self.start_capture(idx, &iface.name, linktype, now) {
                        log::error!("agent {}: {text}", self.agent(idx).peer);
                        self.agent(idx).session.abort(Some(code), &text);
                    }
                }
                Event::Started { reply_port, .. } => self.on_started(idx, reply_port),
                Event::Stats(s) => {
                    log::debug!(
                        "agent {}: recv {} ifdrop {} krnldrop {} sent {}",
                        a.peer,
                        s.ifrecv,
                        s.ifdrop,
                        s.krnldrop,
                        s.svrcapt
                    );
                    a.stats = Some(s);
                }
                Event::FilterUpdated => log::info!("agent {}: filter updated", a.peer),
                Event::AgentError { code, text } => {
                    log::warn!("agent {}: error {code}: {text}", a.peer)
                }
            }
        }
    }

    fn agent(&mut self, idx: usize) -> &mut Agent {
        self.agents[idx].as_mut().expect("live agent")
    }

    /// After OPEN: compile the filter, open the data channel and the output,
    /// send STARTCAP. Errors carry the code and text for the agent.
    fn start_capture(
        &mut self,
        idx: usize,
        iface: &str,
        linktype: i32,
        now: Instant,
    ) -> std::result::Result<(), (ErrorCode, String)> {
        let snaplen = self.cfg.session.snaplen;
        let prog = filter::compile(self.filter.as_deref(), linktype, snaplen)
            .map_err(|e| (ErrorCode::StartCapture, format!("{e:#}")))?;
        if self.cfg.output.stdout && self.stdout_taken {
            return Err((
                ErrorCode::StartCapture,
                "the sensor streams only one capture to stdout".into(),
            ));
        }
        let (udp_first, udp_last) = self.cfg.udp_ports;
        let tcp = self.cfg.tcp_data;
        let a = self.agents[idx].as_mut().expect("live agent");
        let (data, transport) = if !tcp {
            let mut p = data::bind_udp(a.local_ip, udp_first, udp_last, &self.used_ports)
                .map_err(|e| (ErrorCode::StartCapture, format!("sensor: {e}")))?;
            self.poll
                .registry()
                .register(&mut p.sock, token(idx, DATA), Interest::READABLE)
                .map_err(|e| (ErrorCode::StartCapture, format!("sensor: {e}")))?;
            self.used_ports.insert(p.port);
            p.overflow = 0;
            let port = p.port;
            (Data::Udp(p), DataTransport::Udp { port })
        } else if a.dial.is_none() {
            let mut l = TcpListener::bind(SocketAddr::new(a.local_ip, 0)).map_err(|e| {
                (
                    ErrorCode::StartCapture,
                    format!("sensor: TCP data listener: {e}"),
                )
            })?;
            let port = l.local_addr().map(|s| s.port()).unwrap_or(0);
            self.poll
                .registry()
                .register(&mut l, token(idx, DATA), Interest::READABLE)
                .map_err(|e| (ErrorCode::StartCapture, format!("sensor: {e}")))?;
            (
                Data::TcpListening(l, now + DATA_ACCEPT_TIMEOUT),
                DataTransport::TcpSensorListens { port },
            )
        } else {
            (Data::None, DataTransport::TcpAgentListens)
        };
        let output = Output::create(
            &self.writer.handle(),
            &self.cfg.output,
            &a.name,
            iface,
            linktype,
            snaplen,
        )
        .map_err(|e| (ErrorCode::StartCapture, format!("sensor cannot write: {e}")))?;
        if self.cfg.output.stdout {
            self.stdout_taken = true;
        }
        let what = match transport {
            DataTransport::Udp { port } => format!("UDP port {port}"),
            DataTransport::TcpSensorListens { port } => format!("TCP port {port} (agent connects)"),
            DataTransport::TcpAgentListens => "TCP (sensor connects)".into(),
        };
        log::info!(
            "agent {}: capturing {iface} (linktype {linktype}, snaplen {snaplen}) via {what} into {}",
            a.peer,
            output
                .path()
                .map_or("stdout".into(), |p| p.display().to_string())
        );
        a.capture = Some(Capture::new(iface, linktype, snaplen, output));
        a.data = data;
        a.session.start_capture(transport, prog, now);
        Ok(())
    }

    fn on_started(&mut self, idx: usize, reply_port: u16) {
        let registry = self.poll.registry();
        let a = self.agents[idx].as_mut().expect("live agent");
        if a.dial.is_some() && self.cfg.tcp_data {
            let addr = SocketAddr::new(a.peer.ip(), reply_port);
            match TcpStream::connect(addr) {
                Ok(mut s) => {
                    if let Err(e) = registry.register(&mut s, token(idx, DATA), Interest::READABLE)
                    {
                        log::error!("agent {}: data channel: {e}", a.peer);
                        return;
                    }
                    a.data = Data::Tcp(
                        s,
                        StreamDecoder::new(data_max_plen(self.cfg.session.snaplen)),
                    );
                }
                Err(e) => log::error!(
                    "agent {}: cannot connect data channel to {addr}: {e}",
                    a.peer
                ),
            }
        }
    }

    fn on_data(&mut self, idx: usize) {
        let Some(a) = self.agents.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let Some(cap) = a.capture.as_mut() else {
            return;
        };
        let peer_ip = data::canonical(a.peer.ip());
        let mut close_data: Option<String> = None;
        match &mut a.data {
            Data::None => {}
            Data::Udp(p) => loop {
                let n = match self.batch.recv(p.sock.as_raw_fd()) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("agent {}: UDP receive: {e}", a.peer);
                        break;
                    }
                };
                for i in 0..n {
                    let (d, m) = self.batch.get(i);
                    if let Some(o) = m.overflow {
                        cap.counters.socket_drops += u64::from(o.wrapping_sub(p.overflow));
                        p.overflow = o;
                    }
                    if m.from.map(|f| data::canonical(f.ip())) != Some(peer_ip) {
                        cap.counters.foreign += 1;
                    } else if m.truncated {
                        cap.counters.malformed += 1;
                    } else {
                        cap.on_datagram(d, &mut self.budget);
                    }
                }
            },
            Data::TcpListening(l, _) => match l.accept() {
                Ok((mut s, from)) => {
                    if data::canonical(from.ip()) != peer_ip {
                        log::warn!(
                            "agent {}: data connection from {from} refused (not the agent)",
                            a.peer
                        );
                        cap.counters.foreign += 1;
                    } else {
                        let _ = self.poll.registry().deregister(l);
                        match self.poll.registry().register(
                            &mut s,
                            token(idx, DATA),
                            Interest::READABLE,
                        ) {
                            Ok(()) => {
                                log::info!("agent {}: TCP data channel from {from}", a.peer);
                                a.data =
                                    Data::Tcp(s, StreamDecoder::new(data_max_plen(cap.snaplen)));
                                // Data may already be waiting: read it now (edge-triggered).
                                return self.on_data(idx);
                            }
                            Err(e) => close_data = Some(format!("register: {e}")),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => close_data = Some(format!("accept: {e}")),
            },
            Data::Tcp(s, dec) => loop {
                match s.read(&mut self.rbuf) {
                    Ok(0) => {
                        close_data = Some("the agent closed the TCP data channel".into());
                        break;
                    }
                    Ok(n) => {
                        dec.feed(&self.rbuf[..n]);
                        loop {
                            match dec.next() {
                                Ok(Some((h, payload))) => {
                                    if h.ver == 0 && h.msg_type == MsgType::Packet as u8 {
                                        cap.on_packet_payload(payload, &mut self.budget);
                                    } else {
                                        cap.counters.malformed += 1;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    close_data = Some(format!("data channel: {e}"));
                                    break;
                                }
                            }
                        }
                        if close_data.is_some() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        close_data = Some(format!("data channel: {e}"));
                        break;
                    }
                }
            },
        }
        if let Some(reason) = close_data {
            log::warn!("agent {}: {reason}", a.peer);
            self.drop_data(idx);
        }
    }

    fn drop_data(&mut self, idx: usize) {
        let registry = self.poll.registry();
        let Some(a) = self.agents.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        match std::mem::replace(&mut a.data, Data::None) {
            Data::None => {}
            Data::Udp(mut p) => {
                let _ = registry.deregister(&mut p.sock);
                self.used_ports.remove(&p.port);
            }
            Data::TcpListening(mut l, _) => {
                let _ = registry.deregister(&mut l);
            }
            Data::Tcp(mut s, _) => {
                let _ = registry.deregister(&mut s);
            }
        }
    }

    /// Writes pending session output; errors surface on the next read.
    fn flush_control(&mut self, idx: usize) {
        let Some(a) = self.agents.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        while !a.session.output().is_empty() {
            match a.stream.write(a.session.output()) {
                Ok(0) => break,
                Ok(n) => a.session.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    fn close_agent(&mut self, idx: usize, reason: &str) {
        self.flush_control(idx);
        // A UDP port lingers (unless the sensor is stopping): what the agent
        // still sends is counted as late instead of refused by the kernel.
        let port = match self.agents.get_mut(idx).and_then(Option::as_mut) {
            Some(a) if !self.stopping && a.capture.is_some() => match &mut a.data {
                Data::Udp(_) => match std::mem::replace(&mut a.data, Data::None) {
                    Data::Udp(p) => Some(p),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        };
        self.drop_data(idx);
        let Some(mut a) = self.agents.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut a.stream);
        log::info!("agent {}: session closed: {reason}", a.peer);
        if let Some(d) = a.dial {
            self.dials[d].next_at = Some(Instant::now() + REDIAL);
        }
        if let Some(mut cap) = a.capture.take() {
            let files = cap.finish();
            let now = Instant::now();
            let slot = self
                .closing
                .iter()
                .position(Option::is_none)
                .unwrap_or_else(|| {
                    self.closing.push(None);
                    self.closing.len() - 1
                });
            let linger = port.and_then(|mut p| {
                match self.poll.registry().reregister(
                    &mut p.sock,
                    token(slot, LINGER_PORT),
                    Interest::READABLE,
                ) {
                    Ok(()) => Some((p, now + LINGER)),
                    Err(e) => {
                        log::warn!("agent {}: cannot keep port {}: {e}", a.peer, p.port);
                        let _ = self.poll.registry().deregister(&mut p.sock);
                        self.used_ports.remove(&p.port);
                        None
                    }
                }
            });
            self.closing[slot] = Some(Closing {
                peer: a.peer,
                linger,
                cap,
                stats: a.stats,
                files,
                deadline: now + LINGER + WRITE_WAIT,
            });
        } else if let Some(mut p) = port {
            let _ = self.poll.registry().deregister(&mut p.sock);
            self.used_ports.remove(&p.port);
        }
        self.free.push(idx);
        self.finish_closed(Instant::now());
    }

    /// Datagrams for a closed capture: counted (late, or foreign when not
    /// from the agent) and dropped.
    fn on_linger(&mut self, slot: usize) {
        let Some(c) = self.closing.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some((p, _)) = c.linger.as_mut() else {
            return;
        };
        let agent_ip = data::canonical(c.peer.ip());
        loop {
            let n = match self.batch.recv(p.sock.as_raw_fd()) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            for i in 0..n {
                let (_, m) = self.batch.get(i);
                if let Some(o) = m.overflow {
                    c.cap.counters.socket_drops += u64::from(o.wrapping_sub(p.overflow));
                    p.overflow = o;
                }
                if m.from.map(|f| data::canonical(f.ip())) == Some(agent_ip) {
                    c.cap.counters.late += 1;
                } else {
                    c.cap.counters.foreign += 1;
                }
            }
        }
    }

    /// Prints the final line of every closed capture whose records are all
    /// written (or whose wait for the writer is over).
    fn finish_closed(&mut self, now: Instant) {
        for slot in 0..self.closing.len() {
            let Some(c) = self.closing[slot].as_mut() else {
                continue;
            };
            if let Some((p, until)) = c.linger.as_mut() {
                if now < *until && !self.stopping {
                    continue;
                }
                let _ = self.poll.registry().deregister(&mut p.sock);
                self.used_ports.remove(&p.port);
                c.linger = None;
            }
            if !c.cap.is_written() && now < c.deadline {
                continue;
            }
            let Some(mut c) = self.closing[slot].take() else {
                continue;
            };
            if !c.cap.is_written() {
                log::warn!(
                    "agent {}: the writer has not finished this capture's file within {WRITE_WAIT:?}",
                    c.peer
                );
            }
            c.cap.settle();
            let line = summary::final_line(&c.peer, &c.cap, c.stats.as_ref(), &c.files);
            eprintln!("{line}");
            self.final_lines.push(line);
        }
    }

    fn tick(&mut self, now: Instant) {
        self.accept();
        self.finish_closed(now);
        for i in 0..self.dials.len() {
            let d = &mut self.dials[i];
            if d.pending.as_ref().is_some_and(|(_, _, dl)| now >= *dl) {
                if let Some((mut s, addr, _)) = d.pending.take() {
                    let _ = self.poll.registry().deregister(&mut s);
                    log::warn!(
                        "cannot connect to passive agent {addr}: timed out after {DIAL_TIMEOUT:?}; retrying in {REDIAL:?}"
                    );
                    d.next_at = Some(now + REDIAL);
                }
            }
            if self.dials[i].next_at.is_some_and(|t| now >= t) {
                self.dials[i].next_at = None;
                self.dial(i);
            }
        }
        for idx in 0..self.agents.len() {
            let Some(a) = self.agents[idx].as_mut() else {
                continue;
            };
            if let Some(cap) = a.capture.as_mut() {
                if let Some(o) = cap.output() {
                    if let Err(e) = o.tick(now) {
                        log::error!("agent {}: rotation failed: {e}", a.peer);
                    }
                }
            }
            let timed_out = match a.session.check_timeout(now, self.cfg.stats_timeout) {
                Err(e) => Some(e.to_string()),
                Ok(()) => None,
            };
            if let Some(reason) = timed_out {
                log::warn!("agent {}: {reason}; closing the session", a.peer);
                self.close_agent(idx, &reason);
                continue;
            }
            if let Data::TcpListening(_, deadline) = a.data {
                if now >= deadline {
                    let text = "the agent did not connect the TCP data channel";
                    a.session.abort(Some(ErrorCode::StartCapture), text);
                    self.close_agent(idx, text);
                    continue;
                }
            }
            if a.session.is_capturing() && now >= a.next_stats {
                a.next_stats = now + self.cfg.stats_interval;
                a.session.request_stats(now);
                self.flush_control(idx);
            }
            if self.agents[idx]
                .as_ref()
                .is_some_and(|a| a.session.is_closed())
            {
                self.close_agent(idx, "session ended");
            }
        }
    }

    fn dial(&mut self, i: usize) {
        let target = self.dials[i].target.clone();
        let addr = match target.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                log::warn!("cannot resolve passive agent {target}; retrying in {REDIAL:?}");
                self.dials[i].next_at = Some(Instant::now() + REDIAL);
                return;
            }
        };
        let fail = |d: &mut Dial, e: &dyn std::fmt::Display| {
            log::warn!("cannot connect to passive agent {addr}: {e}; retrying in {REDIAL:?}");
            d.next_at = Some(Instant::now() + REDIAL);
        };
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                match self
                    .poll
                    .registry()
                    .register(&mut s, dial_token(i), Interest::WRITABLE)
                {
                    Ok(()) => {
                        self.dials[i].pending = Some((s, addr, Instant::now() + DIAL_TIMEOUT));
                    }
                    Err(e) => fail(&mut self.dials[i], &e),
                }
            }
            Err(e) => fail(&mut self.dials[i], &e),
        }
    }

    /// The connect to passive agent `i` finished (or failed).
    fn on_dial(&mut self, i: usize) {
        let Some((mut s, addr, deadline)) = self.dials[i].pending.take() else {
            return;
        };
        let failed = match s.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match s.peer_addr() {
                Ok(_) => None,
                // Not connected yet: a spurious wake-up; keep waiting.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    self.dials[i].pending = Some((s, addr, deadline));
                    return;
                }
                Err(e) => Some(e),
            },
        };
        let _ = self.poll.registry().deregister(&mut s);
        match failed {
            Some(e) => {
                log::warn!("cannot connect to passive agent {addr}: {e}; retrying in {REDIAL:?}");
                self.dials[i].next_at = Some(Instant::now() + REDIAL);
            }
            None => {
                log::info!("connected to passive agent {addr}");
                self.add_agent(s, addr, Some(i));
            }
        }
    }

    fn reload_filter(&mut self) {
        let Some(path) = self.cfg.filter_file.clone() else {
            log::info!("SIGHUP: no --filter-file to re-read");
            return;
        };
        let expr = match filter::read_file(&path) {
            Ok(e) => e,
            Err(e) => {
                log::error!("SIGHUP: {e:#}; keeping the current filter");
                return;
            }
        };
        // Check it once before pushing it anywhere.
        if let Err(e) = filter::compile(Some(&expr), 1, self.cfg.session.snaplen) {
            log::error!("SIGHUP: {e:#}; keeping the current filter");
            return;
        }
        log::info!("SIGHUP: new filter '{expr}'");
        self.filter = Some(expr);
        let now = Instant::now();
        for idx in 0..self.agents.len() {
            let Some(a) = self.agents[idx].as_mut() else {
                continue;
            };
            let Some(cap) = a.capture.as_ref() else {
                continue;
            };
            match filter::compile(self.filter.as_deref(), cap.linktype, cap.snaplen) {
                Ok(prog) => a.session.update_filter(prog, now),
                Err(e) => log::error!("agent {}: {e:#}", a.peer),
            }
            self.flush_control(idx);
        }
    }

    fn periodic_summary(&mut self, now: Instant) {
        for a in self.agents.iter_mut().flatten() {
            let Some(cap) = a.capture.as_ref() else {
                continue;
            };
            let (p0, b0, t0) = a.prev;
            let secs = now.duration_since(t0).as_secs_f64().max(1e-3);
            let c = &cap.counters;
            log::info!(
                "{}",
                summary::periodic_line(
                    &a.peer,
                    &cap.iface,
                    (c.packets - p0) as f64 / secs,
                    (c.bytes - b0) as f64 * 8.0 / secs / 1e6,
                    cap,
                    a.stats.as_ref()
                )
            );
            a.prev = (c.packets, c.bytes, now);
        }
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stopping = true;
        for idx in 0..self.agents.len() {
            if self.agents[idx].is_some() {
                self.close_agent(idx, "sensor stopping");
            }
        }
        // Wait (bounded) for the writer to write what the captures handed it.
        let limit = Instant::now() + Duration::from_secs(5);
        for c in self.closing.iter_mut().flatten() {
            c.deadline = c.deadline.min(limit);
        }
        loop {
            self.finish_closed(Instant::now());
            if self.closing.iter().all(Option::is_none) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.writer.stop(Duration::from_secs(2));
        let total: u64 = self.cfg.count.map_or(0, |c| c - self.budget);
        log::info!(
            "sensor stopped: {} capture(s){}",
            self.final_lines.len(),
            if self.cfg.count.is_some() {
                format!(", {total} packets")
            } else {
                String::new()
            }
        );
        if let Some(path) = &self.cfg.stats_file {
            let mut text = self.final_lines.join("\n");
            text.push('\n');
            std::fs::write(path, text)
                .with_context(|| format!("cannot write stats file {}", path.display()))?;
        }
        io::stdout().flush().ok();
        Ok(())
    }
}

/// Largest PACKET message on a TCP data channel: record header + snaplen.
fn data_max_plen(snaplen: u32) -> u32 {
    snaplen.saturating_add(rpcap::PktHdr::LEN as u32)
}

/// Agents connecting at once (a fleet reconnecting after a sensor restart)
/// must not overflow the accept queue: mio's default backlog is 1024, and an
/// overflowed handshake is retried by the agent only after seconds.
const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listener on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}
