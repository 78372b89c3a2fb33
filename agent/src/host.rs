//! Executes the sessions' [`HostCommand`]s: [`CaptureHost`] is what a
//! session needs from the machine (interfaces, captures), and
//! [`CaptureHost::execute`] runs one command on a connection's capture.
//! [`WorkerHost`] is the daemon's: real interfaces and datapath [`Worker`]s.
//!
//! Starting a capture takes seconds at times (an AF_XDP open under load, a
//! TCP data connect to a sensor that does not answer, a TLS handshake), so
//! it never runs on the control thread: [`CaptureHost::start`] returns the
//! capture at once and a short-lived setup thread connects (or accepts) the
//! data channel, each step with its deadline, then opens the source and
//! starts the worker; [`CaptureHost::started`] says when it is up, and the
//! host calls its notifier so the driver asks. Until then the capture keeps
//! the latest filter and sampling. A capture stopped meanwhile is not waited
//! for: its setup thread finds it stopped and stops what it made.
//!
//! A passive client's TCP data channel ([`DataChannel::TcpListen`]) is
//! answered at once with the port we listen on (the client connects only
//! after the reply); its setup thread accepts the connection (bounded by the
//! accept timeout, checked against the client's address). TLS data channels
//! run through a relay thread: the worker streams plaintext into a socket
//! pair, the relay encrypts it onto the TCP connection.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use rpcap::bpf::Program;
use rpcap::msg::{Interface, Sampling, Stats};

use crate::capture;
use crate::datapath::summary::final_line;
use crate::datapath::UpdateError;
use crate::datapath::{CaptureSpec, Counters, DataStream, DecapSetup, Transport, Worker};
use crate::iface;
use crate::session::{Answer, DataChannel, HostCommand, HostError, StartRequest};
use crate::settings::{Backend, CaptureChoice, CaptureSettings, Config};

/// Called by a host, from any thread, when a capture's start made progress.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// What a session needs from the machine: interfaces and captures.
pub trait CaptureHost {
    type Capture;
    fn interfaces(&mut self) -> io::Result<Vec<Interface>>;
    fn linktype(&mut self, ifname: &str) -> io::Result<i32>;
    /// Starts a capture, which may still be on its way when this returns:
    /// see [`CaptureHost::started`].
    fn start(&mut self, req: StartRequest) -> Result<Self::Capture, HostError>;
    /// Whether the capture is up: None while it is on its way, then Ok or
    /// why it could not start. Hosts that start at once need not say.
    fn started(&mut self, _cap: &Self::Capture) -> Option<Result<(), HostError>> {
        Some(Ok(()))
    }
    /// `notify` is called when a start made progress: the driver then asks
    /// [`CaptureHost::poll_started`].
    fn set_notify(&mut self, _notify: Notify) {}
    fn update_filter(&mut self, cap: &mut Self::Capture, filter: Program) -> Result<(), HostError>;
    fn set_sampling(&mut self, cap: &mut Self::Capture, sampling: Sampling);
    fn stats(&mut self, cap: &Self::Capture) -> Stats;
    /// Every counter of a running capture (atomics the worker publishes:
    /// no lock or syscall on the packet path); None while it is not running.
    fn counters(&mut self, _cap: &Self::Capture) -> Option<Counters> {
        None
    }
    /// Why the capture stopped by itself, if it did.
    fn failure(&mut self, cap: &Self::Capture) -> Option<String>;
    /// Stops the capture and returns its final counters.
    fn stop(&mut self, cap: Self::Capture) -> Stats;
    /// The port of a [`DataChannel::TcpListen`] data channel (0 for others),
    /// sent to the client in the STARTCAP reply.
    fn data_port(&self, _cap: &Self::Capture) -> u16 {
        0
    }
    /// A reloaded configuration applies to the captures started from now on.
    fn reconfigure(&mut self, _cfg: &Config) {}

    /// Runs a session's command on `capture`, the capture of its connection;
    /// returns the answer the session waits for, if the command has one.
    fn execute(&mut self, capture: &mut Option<Self::Capture>, cmd: HostCommand) -> Option<Answer> {
        let err = |e: io::Error| e.to_string();
        Some(match cmd {
            HostCommand::ListInterfaces => Answer::Interfaces(self.interfaces().map_err(err)),
            HostCommand::ReadLinktype(ifname) => {
                Answer::Linktype(self.linktype(&ifname).map_err(err))
            }
            HostCommand::StartCapture(req) => {
                // The session stops a capture before it starts the next; a
                // capture is never leaked all the same.
                if let Some(old) = capture.take() {
                    self.stop(old);
                }
                match self.start(*req) {
                    Ok(cap) => {
                        *capture = Some(cap);
                        // Answered once it is up: see `poll_started`.
                        return self.poll_started(capture);
                    }
                    Err(e) => Answer::Started(Err(e)),
                }
            }
            HostCommand::UpdateFilter(filter) => Answer::FilterUpdated(match capture {
                Some(cap) => self.update_filter(cap, filter),
                None => Err(HostError::NoCapture),
            }),
            HostCommand::SetSampling(sampling) => {
                if let Some(cap) = capture {
                    self.set_sampling(cap, sampling);
                }
                return None;
            }
            HostCommand::ReadStats => {
                Answer::Stats(capture.as_ref().map(|c| self.stats(c)).unwrap_or_default())
            }
            HostCommand::Stop => {
                Answer::Stopped(capture.take().map(|c| self.stop(c)).unwrap_or_default())
            }
        })
    }

    /// The answer to a StartCapture that [`CaptureHost::execute`] left
    /// unanswered, once the capture is up or could not start (it is then
    /// stopped); None while it is on its way.
    fn poll_started(&mut self, capture: &mut Option<Self::Capture>) -> Option<Answer> {
        let result = self.started(capture.as_ref()?)?;
        Some(Answer::Started(match result {
            Ok(()) => Ok(capture.as_ref().map_or(0, |c| self.data_port(c))),
            Err(e) => {
                if let Some(cap) = capture.take() {
                    self.stop(cap);
                }
                Err(e)
            }
        }))
    }
}

/// How long connecting a TCP data channel to the sensor may take.
const DATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The TLS handshake of a data channel, and each relay write.
const DATA_TLS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a pending accept checks whether it was cancelled.
const ACCEPT_SLICE: Duration = Duration::from_millis(50);

/// Starts captures with the datapath, as configured.
pub struct WorkerHost {
    /// The configuration's capture settings, handed to every capture as they
    /// are: the host only resolves what is per capture (backend, CPU, own
    /// traffic, filter), the sources read the rest.
    settings: Arc<CaptureSettings>,
    /// Index of the next `WorkerCpu` to hand out.
    next_cpu: usize,
    tls: Option<Arc<ServerConfig>>,
    notify: Option<Notify>,
    /// Setup threads of captures stopped while on their way: they stop what
    /// they made by themselves; the host waits for them only when it goes
    /// (an AF_XDP program must not stay attached after the daemon).
    orphans: Vec<JoinHandle<()>>,
}

impl Drop for WorkerHost {
    fn drop(&mut self) {
        for t in self.orphans.drain(..) {
            let _ = t.join();
        }
    }
}

impl WorkerHost {
    pub fn new(cfg: &Config) -> WorkerHost {
        WorkerHost {
            settings: Arc::new(cfg.capture.clone()),
            next_cpu: 0,
            tls: None,
            notify: None,
            orphans: Vec::new(),
        }
    }

    /// TLS for data channels of TLS sessions.
    pub fn with_tls(mut self, tls: Option<Arc<ServerConfig>>) -> WorkerHost {
        self.tls = tls;
        self
    }

    fn spec(&mut self, req: StartRequest, transport: Transport) -> CaptureSpec {
        let backend = match (req.capture, &self.settings.backend) {
            // The sensor's ActiveClient line chose (`capture=`).
            (Some(CaptureChoice::AfPacket), _) => Backend::AfPacket,
            (Some(CaptureChoice::AfXdp), _) => Backend::AfXdp,
            // AF_XDP only where the operator named it (or as the default).
            (None, Backend::AfXdp) if self.settings.xdp.covers(&req.ifname) => Backend::AfXdp,
            (None, Backend::AfXdp) => Backend::AfPacket,
            (None, b) => b.clone(),
        };
        // Decapsulating, the source runs the outer program and captures the
        // outer headers on top of the sensor's snap length, and only
        // received tunnel packets: a mirroring target receives them, and
        // tunnels this host sends (a TunnelClient export among them) are
        // never taken apart and forwarded.
        let direction = match req.decap {
            Some(_) => capture::Direction::In,
            None => req.direction,
        };
        let (filter, snaplen, decap) = match req.decap {
            Some(d) => (
                d.outer,
                req.snaplen
                    .saturating_add(crate::tunnel::decap::MAX_OVERHEAD)
                    .min(crate::session::MAX_SNAPLEN),
                Some(DecapSetup {
                    spec: d.spec,
                    linktype: req.linktype,
                    inner: req.filter,
                    snaplen: req.snaplen,
                }),
            ),
            None => (req.filter, req.snaplen, None),
        };
        CaptureSpec {
            capture: capture::Request {
                ifname: req.ifname,
                backend,
                settings: self.settings.clone(),
                own: Some(req.own),
                snaplen,
                promisc: req.promisc,
                direction,
                latency: req.read_timeout.min(self.settings.max_latency),
                filter,
            },
            sampling: req.sampling,
            transport,
            cpu: self.pick_cpu(),
            decap,
        }
    }

    fn tls_config(&self, req: &StartRequest) -> Result<Option<Arc<ServerConfig>>, HostError> {
        match (&self.tls, req.tls) {
            (_, false) => Ok(None),
            (Some(c), true) => Ok(Some(c.clone())),
            (None, true) => Err(HostError::TlsNotConfigured),
        }
    }

    /// The CPUs of `WorkerCpu`, handed out in turn.
    fn pick_cpu(&mut self) -> Option<usize> {
        let cpus = &self.settings.worker_cpus;
        let cpu = cpus.get(self.next_cpu % cpus.len().max(1)).copied();
        self.next_cpu = self.next_cpu.wrapping_add(1);
        cpu
    }
}

/// A capture of the daemon: being set up, running, or failed.
#[derive(Debug)]
pub struct HostCapture {
    state: Arc<Mutex<Stage>>,
    /// The thread that sets the capture up: joined at stop once it is done.
    setup: Option<JoinHandle<()>>,
    /// The TLS relay, joined at stop (the setup thread puts it there).
    relay: Arc<Mutex<Option<JoinHandle<()>>>>,
    cancel: Arc<AtomicBool>,
    data_port: u16,
    /// The STARTCAP may be answered before the capture is up: the peer
    /// does its part of the data channel only after the reply (connects to
    /// our port for passive TCP data; the TLS handshake once we connected).
    /// A failure after that is the capture's failure.
    answerable: Arc<AtomicBool>,
    /// Whose capture (`sensor=HOST:PORT`, `client=ADDR`) and its interface,
    /// for its final counter line.
    owner: String,
    /// The interface captured (metrics labels).
    ifname: String,
}

#[derive(Debug)]
enum Stage {
    /// Being set up; the request keeps the latest filter and sampling.
    Starting(Box<StartRequest>),
    Running(Worker),
    /// Could not be set up.
    Failed(HostError),
    /// Stopped; a setup still under way stops what it made.
    Stopped,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets up a capture's data channel, unless cancelled (the flag), and calls
/// the function when the STARTCAP may be answered: the transport, and the TLS
/// relay that serves it.
type Establish = Box<
    dyn FnOnce(&AtomicBool, &dyn Fn()) -> Result<(Transport, Option<JoinHandle<()>>), HostError>
        + Send,
>;

/// Accepts one connection from `peer` on `listener` within `timeout`
/// (others are closed at once), unless cancelled.
fn accept_from(
    listener: &TcpListener,
    peer: IpAddr,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<TcpStream, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("data listener: {e}"))?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cancel.load(Ordering::Acquire) {
            return Err("cancelled".into());
        }
        match listener.accept() {
            Ok((stream, from)) if crate::filter::canonical(from.ip()) == peer => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| format!("data connection: {e}"))?;
                return Ok(stream);
            }
            Ok((_, from)) => log::warn!("data connection from {from} refused: expected {peer}"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_SLICE),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("accepting the data connection: {e}")),
        }
    }
    Err(format!(
        "the client did not open the data connection within {} s",
        timeout.as_secs_f32()
    ))
}

/// The worker's end of a TLS data channel: a plaintext stream socket whose
/// bytes a relay thread encrypts onto `stream`.
fn tls_relay(
    config: Arc<ServerConfig>,
    stream: TcpStream,
) -> Result<(DataStream, JoinHandle<()>), String> {
    stream
        .set_read_timeout(Some(DATA_TLS_TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(DATA_TLS_TIMEOUT)))
        .map_err(|e| format!("data connection: {e}"))?;
    let mut tls = accept_tls(config, stream)
        .map_err(|e| format!("TLS handshake on the data connection: {e}"))?;
    let (worker_end, mut relay_end) = UnixStream::pair().map_err(|e| format!("data relay: {e}"))?;
    let thread = std::thread::Builder::new()
        .name("tls-data".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match relay_end.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = tls.write_all(&buf[..n]) {
                            log::warn!("TLS data channel: {e}");
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            tls.conn.send_close_notify();
            let _ = tls.flush();
            let _ = tls.sock.shutdown(std::net::Shutdown::Both);
        })
        .map_err(|e| format!("spawning the TLS relay: {e}"))?;
    Ok((DataStream::Relay(worker_end), thread))
}

/// A TLS server session over a blocking TCP data connection: completes the
/// handshake within [`DATA_TLS_TIMEOUT`] in all (a peer that sends a byte
/// now and then does not hold it longer).
fn accept_tls(
    config: Arc<ServerConfig>,
    stream: TcpStream,
) -> io::Result<rustls::StreamOwned<rustls::ServerConnection, TcpStream>> {
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, stream);
    let deadline = Instant::now() + DATA_TLS_TIMEOUT;
    while s.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake did not complete in time",
            ));
        }
        s.sock.set_read_timeout(Some(left))?;
        s.conn.complete_io(&mut s.sock)?;
    }
    s.sock.set_read_timeout(Some(DATA_TLS_TIMEOUT))?;
    Ok(s)
}

/// The data transport over an established TCP connection (TLS when asked).
fn tcp_transport(
    tls: Option<Arc<ServerConfig>>,
    stream: TcpStream,
) -> Result<(Transport, Option<JoinHandle<()>>), String> {
    match tls {
        None => Ok((Transport::Tcp(stream.into()), None)),
        Some(config) => {
            let (s, relay) = tls_relay(config, stream)?;
            Ok((Transport::Tcp(s), Some(relay)))
        }
    }
}

impl WorkerHost {
    /// The data channel of `req`, set up by the setup thread.
    fn establish(&self, req: &StartRequest) -> Result<(Establish, u16), HostError> {
        let tls = self.tls_config(req)?;
        Ok(match req.data.clone() {
            DataChannel::UdpStr { dest, size } => (
                Box::new(move |_, _| Ok((Transport::UdpStr { dest, size }, None))),
                0,
            ),
            DataChannel::PlainUdp { dest } => (
                Box::new(move |_, _| Ok((Transport::PlainUdp { dest }, None))),
                0,
            ),
            DataChannel::TcpConnect { dest } => (
                Box::new(move |_, answerable: &dyn Fn()| {
                    let stream = TcpStream::connect_timeout(&dest, DATA_CONNECT_TIMEOUT)
                        .map_err(|source| HostError::Connect { dest, source })?;
                    if tls.is_some() {
                        // The sensor's handshake follows our reply.
                        answerable();
                    }
                    tcp_transport(tls, stream).map_err(HostError::DataChannel)
                }),
                0,
            ),
            DataChannel::TcpListen { peer, timeout } => {
                // Bound here: the port is in the STARTCAP reply.
                let bind = if peer.is_ipv4() {
                    SocketAddr::from(([0, 0, 0, 0], 0))
                } else {
                    SocketAddr::from(([0u16; 8], 0))
                };
                let listener = TcpListener::bind(bind).map_err(HostError::Listener)?;
                let port = listener.local_addr().map_err(HostError::Listener)?.port();
                (
                    Box::new(move |cancel: &AtomicBool, _: &dyn Fn()| {
                        accept_from(&listener, peer, timeout, cancel)
                            .and_then(|stream| tcp_transport(tls, stream))
                            .map_err(HostError::DataChannel)
                    }),
                    port,
                )
            }
        })
    }
}

/// What a setup thread needs to finish a capture and say so.
struct Setup {
    state: Arc<Mutex<Stage>>,
    relay: Arc<Mutex<Option<JoinHandle<()>>>>,
    cancel: Arc<AtomicBool>,
    answerable: Arc<AtomicBool>,
    /// The host's settings and the CPU handed out for this capture.
    host: WorkerHost,
    cpu: Option<usize>,
    notify: Option<Notify>,
}

impl Setup {
    /// Sets the data channel up, opens the source, starts the worker; leaves
    /// the capture running or failed, or stops what it made if the capture
    /// was stopped meanwhile.
    fn run(mut self, establish: Establish) {
        let answerable = || {
            self.answerable.store(true, Ordering::Release);
            self.notify();
        };
        let made = establish(&self.cancel, &answerable).and_then(|(transport, relay)| {
            // A copy: the lock is not held while the source opens (seconds
            // for AF_XDP), the control thread reads the stage meanwhile.
            let req = {
                let stage = lock(&self.state);
                match &*stage {
                    Stage::Starting(req) => (**req).clone(),
                    _ => return Ok(None),
                }
            };
            let mut spec = self.host.spec(req.clone(), transport);
            spec.cpu = self.cpu;
            let worker = Worker::start(spec)?;
            Ok(Some((worker, relay, req)))
        });
        let mut stage = lock(&self.state);
        match (&*stage, made) {
            (Stage::Starting(latest), Ok(Some((worker, relay, opened)))) => {
                // Retuned while it opened: the latest filter and sampling.
                if latest.filter != opened.filter {
                    if let Err(e) = worker.update_filter(latest.filter.clone()) {
                        log::warn!("capture on {}: filter update: {e}", opened.ifname);
                    }
                }
                if latest.sampling != opened.sampling {
                    worker.set_sampling(latest.sampling);
                }
                *lock(&self.relay) = relay;
                *stage = Stage::Running(worker);
            }
            (Stage::Starting(_), Err(e)) => *stage = Stage::Failed(e),
            (_, Ok(Some((worker, relay, opened)))) => {
                drop(stage);
                log::info!("capture on {} stopped before it was up", opened.ifname);
                worker.stop();
                if let Some(r) = relay {
                    let _ = r.join();
                }
                return;
            }
            // Stopped meanwhile: nothing was made, or what was is dropped.
            _ => return,
        }
        drop(stage);
        self.notify();
    }

    fn notify(&self) {
        if let Some(notify) = &self.notify {
            notify();
        }
    }
}

impl CaptureHost for WorkerHost {
    type Capture = HostCapture;

    fn interfaces(&mut self) -> io::Result<Vec<Interface>> {
        iface::list()
    }

    /// With `Capture = file:PATH` every name opens the file: its link type.
    fn linktype(&mut self, ifname: &str) -> io::Result<i32> {
        match &self.settings.backend {
            Backend::AfXdp if ifname == iface::ANY && self.settings.xdp.covers(ifname) => {
                Err(iface::any_with_afxdp())
            }
            Backend::AfPacket | Backend::AfXdp => iface::linktype(ifname),
            Backend::File(path) => pcap::Capture::from_file(path)
                .map(|c| c.get_datalink().0)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display()))),
        }
    }

    fn start(&mut self, req: StartRequest) -> Result<HostCapture, HostError> {
        let (establish, data_port) = self.establish(&req)?;
        let (owner, ifname) = (req.owner.clone(), req.ifname.clone());
        let answerable = Arc::new(AtomicBool::new(matches!(
            req.data,
            DataChannel::TcpListen { .. }
        )));
        let state = Arc::new(Mutex::new(Stage::Starting(Box::new(req))));
        let relay = Arc::new(Mutex::new(None));
        let cancel = Arc::new(AtomicBool::new(false));
        let setup = Setup {
            state: state.clone(),
            relay: relay.clone(),
            cancel: cancel.clone(),
            answerable: answerable.clone(),
            host: WorkerHost {
                settings: self.settings.clone(),
                next_cpu: 0,
                tls: None,
                notify: None,
                orphans: Vec::new(),
            },
            cpu: self.pick_cpu(),
            notify: self.notify.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("capture-setup".into())
            .spawn(move || setup.run(establish))
            .map_err(HostError::Spawn)?;
        Ok(HostCapture {
            state,
            setup: Some(thread),
            relay,
            cancel,
            data_port,
            answerable,
            owner,
            ifname,
        })
    }

    fn started(&mut self, cap: &HostCapture) -> Option<Result<(), HostError>> {
        let mut stage = lock(&cap.state);
        match std::mem::replace(&mut *stage, Stage::Stopped) {
            Stage::Failed(e) => Some(Err(e)),
            other => {
                let result = match &other {
                    Stage::Starting(_) if cap.answerable.load(Ordering::Acquire) => Some(Ok(())),
                    Stage::Starting(_) => None,
                    Stage::Running(_) => Some(Ok(())),
                    _ => Some(Err(HostError::NoCapture)),
                };
                *stage = other;
                result
            }
        }
    }

    fn set_notify(&mut self, notify: Notify) {
        self.notify = Some(notify);
    }

    fn update_filter(&mut self, cap: &mut HostCapture, filter: Program) -> Result<(), HostError> {
        match &mut *lock(&cap.state) {
            Stage::Starting(req) => {
                req.filter = filter;
                Ok(())
            }
            Stage::Running(w) => Ok(w.update_filter(filter)?),
            Stage::Failed(e) => Err(HostError::DataChannel(e.to_string())),
            Stage::Stopped => Err(UpdateError::Ended.into()),
        }
    }

    fn set_sampling(&mut self, cap: &mut HostCapture, sampling: Sampling) {
        match &mut *lock(&cap.state) {
            Stage::Starting(req) => req.sampling = sampling,
            Stage::Running(w) => w.set_sampling(sampling),
            _ => {}
        }
    }

    fn stats(&mut self, cap: &HostCapture) -> Stats {
        match &*lock(&cap.state) {
            Stage::Running(w) => w.stats(),
            _ => Stats::default(),
        }
    }

    fn counters(&mut self, cap: &HostCapture) -> Option<Counters> {
        match &*lock(&cap.state) {
            Stage::Running(w) => Some(w.counters()),
            _ => None,
        }
    }

    fn failure(&mut self, cap: &HostCapture) -> Option<String> {
        match &*lock(&cap.state) {
            Stage::Running(w) => w.failure(),
            Stage::Failed(e) => Some(e.to_string()),
            _ => None,
        }
    }

    fn stop(&mut self, mut cap: HostCapture) -> Stats {
        cap.cancel.store(true, Ordering::Release);
        let stage = std::mem::replace(&mut *lock(&cap.state), Stage::Stopped);
        // A setup still under way (a connect, an AF_XDP open) is not waited
        // for: it finds the capture stopped and stops what it made.
        self.orphans.retain(|t| !t.is_finished());
        if let Some(t) = cap.setup.take() {
            if t.is_finished() {
                let _ = t.join();
            } else {
                self.orphans.push(t);
            }
        }
        let stats = match stage {
            Stage::Running(mut w) => {
                // Every counter at capture end, whatever the backend.
                let c = w.stop_counters();
                log::info!("{}", final_line(&cap.owner, &cap.ifname, &c));
                c.stats()
            }
            _ => Stats::default(),
        };
        // The worker's end is closed: the relay flushes and ends.
        let relay = lock(&cap.relay).take();
        if let Some(r) = relay {
            let _ = r.join();
        }
        stats
    }

    fn data_port(&self, cap: &HostCapture) -> u16 {
        cap.data_port
    }

    fn reconfigure(&mut self, cfg: &Config) {
        self.settings = Arc::new(cfg.capture.clone());
        self.next_cpu = 0;
    }
}

#[cfg(test)]
mod any_tests {
    use super::*;

    #[test]
    fn any_is_dlt_linux_sll_on_af_packet_and_refused_where_af_xdp_captures_it() {
        let mut cfg = Config::default();
        let mut host = WorkerHost::new(&cfg);
        assert_eq!(host.linktype("any").unwrap(), iface::DLT_LINUX_SLL);
        cfg.capture.backend = Backend::AfXdp;
        let mut host = WorkerHost::new(&cfg);
        let e = host.linktype("any").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("AF_XDP"), "{e}");
        // AF_XDP named for other interfaces: `any` is AF_PACKET's.
        cfg.capture.xdp.interfaces = vec!["eth0".into()];
        let mut host = WorkerHost::new(&cfg);
        assert_eq!(host.linktype("any").unwrap(), iface::DLT_LINUX_SLL);
    }
}
