//! Executes the sessions' [`HostCommand`]s: [`CaptureHost`] is what a
//! session needs from the machine (interfaces, captures), and
//! [`CaptureHost::execute`] runs one command on a connection's capture.
//! [`WorkerHost`] is the daemon's: real interfaces and datapath [`Worker`]s.
//!
//! A passive client's TCP data channel ([`DataChannel::TcpListen`]) is
//! accepted by a short-lived thread (bounded by the accept timeout, checked
//! against the client's address), which then starts the worker; until then the
//! capture is pending and keeps the latest filter and sampling. TLS data
//! channels run through a relay thread: the worker streams plaintext into a
//! socket pair, the relay encrypts it onto the TCP connection.

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
use crate::datapath::UpdateError;
use crate::datapath::{CaptureSpec, DataStream, Transport, Worker};
use crate::iface;
use crate::session::{Answer, DataChannel, HostCommand, HostError, StartRequest};
use crate::settings::{Backend, CaptureChoice, CaptureSettings, Config};

/// What a session needs from the machine: interfaces and captures.
pub trait CaptureHost {
    type Capture;
    fn interfaces(&mut self) -> io::Result<Vec<Interface>>;
    fn linktype(&mut self, ifname: &str) -> io::Result<i32>;
    fn start(&mut self, req: StartRequest) -> Result<Self::Capture, HostError>;
    fn update_filter(&mut self, cap: &mut Self::Capture, filter: Program) -> Result<(), HostError>;
    fn set_sampling(&mut self, cap: &mut Self::Capture, sampling: Sampling);
    fn stats(&mut self, cap: &Self::Capture) -> Stats;
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
                Answer::Started(self.start(*req).map(|cap| {
                    let port = self.data_port(&cap);
                    *capture = Some(cap);
                    port
                }))
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
}

/// How long connecting a TCP data channel to the sensor may take.
const DATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TLS handshake and relay writes on a data channel.
const DATA_TLS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a pending accept checks whether it was cancelled.
const ACCEPT_SLICE: Duration = Duration::from_millis(50);

/// Starts captures with the datapath, as configured.
#[derive(Debug)]
pub struct WorkerHost {
    /// The configuration's capture settings, handed to every capture as they
    /// are: the host only resolves what is per capture (backend, CPU, own
    /// traffic, filter), the sources read the rest.
    settings: Arc<CaptureSettings>,
    /// Index of the next `WorkerCpu` to hand out.
    next_cpu: usize,
    tls: Option<Arc<ServerConfig>>,
}

impl WorkerHost {
    pub fn new(cfg: &Config) -> WorkerHost {
        WorkerHost {
            settings: Arc::new(cfg.capture.clone()),
            next_cpu: 0,
            tls: None,
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
        CaptureSpec {
            capture: capture::Request {
                ifname: req.ifname,
                backend,
                settings: self.settings.clone(),
                own: Some(req.own),
                snaplen: req.snaplen,
                promisc: req.promisc,
                read_timeout: req.read_timeout,
                filter: req.filter,
            },
            sampling: req.sampling,
            transport,
            cpu: self.pick_cpu(),
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

/// A capture of the daemon: running, or waiting for its data connection.
#[derive(Debug)]
pub struct HostCapture {
    state: Arc<Mutex<Stage>>,
    /// The pending accept, then (TLS) the relay: joined at stop.
    threads: Vec<JoinHandle<()>>,
    relay: Arc<Mutex<Option<JoinHandle<()>>>>,
    cancel: Arc<AtomicBool>,
    data_port: u16,
}

#[derive(Debug)]
enum Stage {
    /// Waiting for the data connection; the request keeps the latest filter
    /// and sampling.
    Accepting(Box<StartRequest>),
    Running(Worker),
    Failed(String),
    Stopped,
}

fn lock(m: &Mutex<Stage>) -> std::sync::MutexGuard<'_, Stage> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HostCapture {
    fn running(worker: Worker, relay: Option<JoinHandle<()>>) -> HostCapture {
        HostCapture {
            state: Arc::new(Mutex::new(Stage::Running(worker))),
            threads: Vec::new(),
            relay: Arc::new(Mutex::new(relay)),
            cancel: Arc::new(AtomicBool::new(false)),
            data_port: 0,
        }
    }
}

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
/// handshake within the stream's timeouts.
fn accept_tls(
    config: Arc<ServerConfig>,
    stream: TcpStream,
) -> io::Result<rustls::StreamOwned<rustls::ServerConnection, TcpStream>> {
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, stream);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
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
    /// Listens for the passive client's data connection; the worker starts
    /// when it arrives.
    fn start_listening(
        &mut self,
        req: StartRequest,
        peer: IpAddr,
        timeout: Duration,
    ) -> Result<HostCapture, HostError> {
        let bind = if peer.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let listener = TcpListener::bind(bind).map_err(HostError::Listener)?;
        let port = listener.local_addr().map_err(HostError::Listener)?.port();
        let mut cap = self.start_pending(req, move |cancel| {
            accept_from(&listener, peer, timeout, cancel)
        })?;
        cap.data_port = port;
        Ok(cap)
    }

    /// Starts the worker in a thread once `establish` has the data
    /// connection (and TLS, when asked, has completed its handshake: the
    /// client does its part only after the STARTCAP reply).
    fn start_pending(
        &mut self,
        req: StartRequest,
        establish: impl FnOnce(&AtomicBool) -> Result<TcpStream, String> + Send + 'static,
    ) -> Result<HostCapture, HostError> {
        let tls = self.tls_config(&req)?;
        let state = Arc::new(Mutex::new(Stage::Accepting(Box::new(req))));
        let cancel = Arc::new(AtomicBool::new(false));
        let relay = Arc::new(Mutex::new(None));
        // The worker is started by the accept thread with this host's settings.
        let mut host = WorkerHost {
            settings: self.settings.clone(),
            next_cpu: 0,
            tls: None,
        };
        let cpu = self.pick_cpu();
        let (st, c, r) = (state.clone(), cancel.clone(), relay.clone());
        let thread = std::thread::Builder::new()
            .name("data-accept".into())
            .spawn(move || {
                let result = establish(&c).and_then(|stream| tcp_transport(tls, stream));
                let mut stage = lock(&st);
                let req = match std::mem::replace(&mut *stage, Stage::Stopped) {
                    Stage::Accepting(req) => req,
                    other => {
                        *stage = other;
                        return;
                    }
                };
                *stage = match result {
                    Err(e) => Stage::Failed(e),
                    Ok((transport, relay)) => {
                        let mut spec = host.spec(*req, transport);
                        spec.cpu = cpu;
                        match Worker::start(spec) {
                            Ok(w) => {
                                *r.lock().unwrap_or_else(|p| p.into_inner()) = relay;
                                Stage::Running(w)
                            }
                            Err(e) => Stage::Failed(e.to_string()),
                        }
                    }
                };
            })
            .map_err(HostError::Spawn)?;
        Ok(HostCapture {
            state,
            threads: vec![thread],
            relay,
            cancel,
            data_port: 0,
        })
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
            Backend::AfPacket | Backend::AfXdp => iface::linktype(ifname),
            Backend::File(path) => pcap::Capture::from_file(path)
                .map(|c| c.get_datalink().0)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display()))),
        }
    }

    fn start(&mut self, req: StartRequest) -> Result<HostCapture, HostError> {
        let (transport, relay) = match req.data.clone() {
            DataChannel::UdpStr { dest, size } => (Transport::UdpStr { dest, size }, None),
            DataChannel::PlainUdp { dest } => (Transport::PlainUdp { dest }, None),
            DataChannel::TcpConnect { dest } => {
                let stream = TcpStream::connect_timeout(&dest, DATA_CONNECT_TIMEOUT)
                    .map_err(|source| HostError::Connect { dest, source })?;
                if req.tls {
                    return self.start_pending(req, move |_| Ok(stream));
                }
                (Transport::Tcp(stream.into()), None)
            }
            DataChannel::TcpListen { peer, timeout } => {
                return self.start_listening(req, peer, timeout)
            }
        };
        let spec = self.spec(req, transport);
        let worker = Worker::start(spec)?;
        Ok(HostCapture::running(worker, relay))
    }

    fn update_filter(&mut self, cap: &mut HostCapture, filter: Program) -> Result<(), HostError> {
        match &mut *lock(&cap.state) {
            Stage::Accepting(req) => {
                req.filter = filter;
                Ok(())
            }
            Stage::Running(w) => Ok(w.update_filter(filter)?),
            Stage::Failed(e) => Err(HostError::DataChannel(e.clone())),
            Stage::Stopped => Err(UpdateError::Ended.into()),
        }
    }

    fn set_sampling(&mut self, cap: &mut HostCapture, sampling: Sampling) {
        match &mut *lock(&cap.state) {
            Stage::Accepting(req) => req.sampling = sampling,
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

    fn failure(&mut self, cap: &HostCapture) -> Option<String> {
        match &*lock(&cap.state) {
            Stage::Running(w) => w.failure(),
            Stage::Failed(e) => Some(e.clone()),
            _ => None,
        }
    }

    fn stop(&mut self, mut cap: HostCapture) -> Stats {
        cap.cancel.store(true, Ordering::Release);
        for t in cap.threads.drain(..) {
            let _ = t.join();
        }
        let stage = std::mem::replace(&mut *lock(&cap.state), Stage::Stopped);
        let stats = match stage {
            Stage::Running(w) => w.stop(),
            _ => Stats::default(),
        };
        // The worker's end is closed: the relay flushes and ends.
        let relay = cap.relay.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(r) = relay {
            let _ = r.join();
        }
        stats
    }

    fn data_port(&self, cap: &HostCapture) -> u16 {
        cap.data_port
    }

    fn reconfigure(&mut self, cfg: &Config) {
        let tls = self.tls.take();
        *self = WorkerHost::new(cfg).with_tls(tls);
    }
}
