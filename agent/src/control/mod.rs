//! The control thread: one mio loop owns every RPCAP session.
//!
//! Each ActiveClient line is a slot that dials its sensor: exponential
//! backoff with jitter on failures (capped by MaxBackoffSecs), the name
//! resolved again at every attempt, TCP keepalive on, an immediate reconnect
//! after a dropped session (at most once per backoff base), and no reconnect
//! at all after the sensor's CLOSE. Captures that fail by themselves are
//! noticed on a timer and reported to their sensor. SIGHUP reloads the
//! configuration (only slots whose line changed restart); SIGTERM/SIGINT stop
//! every capture and return.
//!
//! Passive mode (unless `-v`): the listeners and the clients they accept live
//! in the same loop (see [`listener`]). Every connection may be TLS
//! ([`tls::Conn`]).

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

use self::linger::Lingering;
use self::listener::{self as passive, Client};
use self::tls::{Conn, Sniffed};
use crate::auth::{Backoff, Verifier};
use crate::config::{ActiveClient, Config, TlsMode};
use crate::session::{CaptureHost, Ended, Mode, Session, SessionConfig};
use rpcap::msg::Message;
use rpcap::ErrorCode;

pub mod linger;
pub mod listener;
pub mod tls;

const SIGNAL_HUP: Token = Token(0);
const SIGNAL_TERM: Token = Token(1);
const WAKER: Token = Token(2);
/// Listener tokens: FIRST_LISTENER.. below FIRST_SLOT.
const FIRST_LISTENER: usize = 3;
const FIRST_SLOT: usize = 16;

/// Timing of the loop; tests shorten it.
#[derive(Debug, Clone)]
pub struct Timing {
    /// First retry delay after a failed attempt; also the minimum spacing of
    /// immediate reconnects after dropped sessions.
    pub backoff_base: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// How often running captures are checked for failures.
    pub capture_check: Duration,
    /// Delay of the reply to a failed authentication (doubling per failure
    /// of the same peer, up to `auth_fail_max`).
    pub auth_fail_delay: Duration,
    pub auth_fail_max: Duration,
}

impl Timing {
    pub fn from_config(cfg: &Config) -> Timing {
        Timing {
            backoff_base: Duration::from_secs(1),
            max_backoff: Duration::from_secs(cfg.max_backoff_secs.into()),
            connect_timeout: Duration::from_secs(10),
            capture_check: Duration::from_millis(500),
            auth_fail_delay: Duration::from_secs(1),
            auth_fail_max: Duration::from_secs(30),
        }
    }

    /// The delay before attempt number `failures + 1`: base × 2^(failures−1),
    /// capped, then scaled by a random factor in [0.5, 1) so that many agents
    /// do not hammer a restarted sensor in step.
    pub fn backoff(&self, failures: u32, random: u64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let full = self
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let frac = 0.5 + (random % 1000) as f64 / 2000.0;
        full.mul_f64(frac)
    }
}

/// A source of new configurations for SIGHUP.
pub type Reload = Box<dyn FnMut() -> anyhow::Result<Config> + Send>;

/// Stops a running [`Control`] from another thread.
#[derive(Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Stopper {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

enum State<C> {
    /// Next dial at this instant.
    Waiting(Instant),
    Connecting {
        stream: TcpStream,
        deadline: Instant,
    },
    Connected {
        conn: Conn<TcpStream>,
        session: Box<Session<C>>,
    },
    /// The sensor sent CLOSE: never again.
    Done,
}

struct Slot<C> {
    client: ActiveClient,
    state: State<C>,
    /// Failed attempts since the last successful connection.
    failures: u32,
    last_attempt: Option<Instant>,
}

/// Most bytes of replies waiting for a sensor that does not read.
const MAX_PENDING_OUTPUT: usize = 4 << 20;

pub struct Control<H: CaptureHost> {
    poll: Poll,
    host: H,
    config: Config,
    timing: Timing,
    slots: BTreeMap<usize, Slot<H::Capture>>,
    next_token: usize,
    signals: Option<(UnixStream, UnixStream)>,
    reload: Option<Reload>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    random: RandomState,
    random_counter: u64,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Passive listeners (token → listener) and the settings they were made from.
    listeners: BTreeMap<usize, TcpListener>,
    listening: Option<passive::ListenSpec>,
    allowed: passive::Allowed,
    clients: BTreeMap<usize, Client<H::Capture>>,
    backoff: Backoff,
    /// Password checks run there, not on this thread.
    verifier: Verifier,
    /// Checks under way: check id → token of the client or slot.
    checks: BTreeMap<u64, usize>,
    next_check: u64,
    /// Ended connections waiting for their peer's close.
    lingering: Lingering,
}

impl<H: CaptureHost> Control<H> {
    pub fn new(config: Config, timing: Timing, host: H) -> anyhow::Result<Control<H>> {
        let poll = Poll::new().context("creating the event loop")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("creating the waker")?);
        let backoff = Backoff::new(
            timing.auth_fail_delay,
            timing.auth_fail_max,
            Duration::from_secs(900),
        );
        let wake = waker.clone();
        let verifier = Verifier::spawn(move || {
            let _ = wake.wake();
        })
        .context("starting the password checker")?;
        let mut c = Control {
            poll,
            host,
            config: Config::default(),
            timing,
            slots: BTreeMap::new(),
            next_token: FIRST_SLOT,
            signals: None,
            reload: None,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            random: RandomState::new(),
            random_counter: 0,
            tls: None,
            listeners: BTreeMap::new(),
            listening: None,
            allowed: passive::Allowed::default(),
            clients: BTreeMap::new(),
            backoff,
            verifier,
            checks: BTreeMap::new(),
            next_check: 0,
            lingering: Lingering::default(),
        };
        c.apply_config(config);
        Ok(c)
    }

    /// TLS for every connection (as `TlsMode` says).
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ServerConfig>>) -> Control<H> {
        self.tls = tls;
        self
    }

    /// Starts listening for passive clients as the configuration says
    /// (nothing with `-v`). Errors when no listener can be opened.
    pub fn listen(&mut self) -> anyhow::Result<Vec<SocketAddr>> {
        let spec = passive::ListenSpec::from_config(&self.config);
        self.open_listeners(spec)
    }

    /// The addresses passive clients can connect to.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .values()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    fn open_listeners(
        &mut self,
        spec: Option<passive::ListenSpec>,
    ) -> anyhow::Result<Vec<SocketAddr>> {
        for (_, mut l) in std::mem::take(&mut self.listeners) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.listening = spec.clone();
        let Some(spec) = spec else {
            return Ok(Vec::new());
        };
        let bound = passive::bind(&spec)?;
        let mut addrs = Vec::new();
        for (i, mut l) in bound.into_iter().enumerate() {
            let token = FIRST_LISTENER + i;
            if token >= FIRST_SLOT {
                warn!("more listening addresses than supported; the rest are ignored");
                break;
            }
            self.poll
                .registry()
                .register(&mut l, Token(token), Interest::READABLE)
                .context("registering a listener")?;
            if let Ok(a) = l.local_addr() {
                info!("listening for passive clients on {a}");
                addrs.push(a);
            }
            self.listeners.insert(token, l);
        }
        Ok(addrs)
    }

    /// Handles SIGHUP (reload through `reload`) and SIGTERM/SIGINT (stop).
    pub fn with_signals(mut self, reload: Reload) -> anyhow::Result<Control<H>> {
        let (hup_r, hup_w) = std::os::unix::net::UnixStream::pair().context("signal pipe")?;
        let (term_r, term_w) = std::os::unix::net::UnixStream::pair().context("signal pipe")?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, hup_w)
            .context("registering SIGHUP")?;
        let term_w2 = term_w.try_clone().context("signal pipe")?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, term_w)
            .context("registering SIGTERM")?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, term_w2)
            .context("registering SIGINT")?;
        for s in [&hup_r, &term_r] {
            s.set_nonblocking(true).context("signal pipe")?;
        }
        let mut hup = UnixStream::from_std(hup_r);
        let mut term = UnixStream::from_std(term_r);
        let reg = self.poll.registry();
        reg.register(&mut hup, SIGNAL_HUP, Interest::READABLE)?;
        reg.register(&mut term, SIGNAL_TERM, Interest::READABLE)?;
        self.signals = Some((hup, term));
        self.reload = Some(reload);
        Ok(self)
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// The clients currently served, for logs and tests.
    pub fn clients(&self) -> Vec<ActiveClient> {
        self.slots.values().map(|s| s.client.clone()).collect()
    }

    fn session_config(&self, client: &ActiveClient) -> SessionConfig {
        SessionConfig {
            mode: Mode::Active,
            null_auth: self.config.null_auth,
            preselect: client.preselect.clone(),
            udpstr_size: self.config.udpstr_size,
            ring_size: self.config.ring_size,
            local_filter: self.config.local_filter.clone(),
            log_stats: self.config.log_stats,
            auth: Arc::new(self.config.auth.clone()),
            tls: false,
            data_accept_timeout: Duration::from_secs(
                self.config.passive.data_accept_timeout_secs.into(),
            ),
            capture: client.capture,
        }
    }

    /// A passive client's settings: no preselection (`-i` is for active
    /// sensors), plain UDP unless PassiveUdpStr.
    fn passive_session_config(&self) -> SessionConfig {
        let mut c = self.session_config(&ActiveClient {
            host: String::new(),
            port: 0,
            preselect: Default::default(),
            capture: None,
        });
        c.mode = Mode::Passive;
        if !self.config.passive.udpstr {
            c.udpstr_size = 0;
        }
        c
    }

    fn tls_mode(&self) -> TlsMode {
        if self.tls.is_some() {
            self.config.tls.effective_mode()
        } else {
            TlsMode::Off
        }
    }

    /// Keeps the slots whose line is unchanged, ends the others, adds new ones.
    fn apply_config(&mut self, config: Config) {
        let mut wanted = config.active_clients.clone();
        let tokens: Vec<usize> = self.slots.keys().copied().collect();
        for token in tokens {
            let client = &self.slots[&token].client;
            if let Some(pos) = wanted.iter().position(|w| w == client) {
                wanted.remove(pos);
            } else {
                info!("sensor {client} removed from the configuration");
                if let Some(mut slot) = self.slots.remove(&token) {
                    self.disconnect(token, &mut slot);
                }
            }
        }
        let now = Instant::now();
        for client in wanted {
            info!("sensor {client} added");
            let token = self.next_token;
            self.next_token += 1;
            self.slots.insert(
                token,
                Slot {
                    client,
                    state: State::Waiting(now),
                    failures: 0,
                    last_attempt: None,
                },
            );
        }
        self.allowed = passive::Allowed::resolve(&config.passive.clients);
        let spec = passive::ListenSpec::from_config(&config);
        self.host.reconfigure(&config);
        self.config = config;
        // Listeners change only when their settings do (and only once listening).
        if self.listening.is_some() && spec != self.listening {
            if let Err(e) = self.open_listeners(spec) {
                error!("passive listeners: {e:#}");
            }
        }
    }

    /// Runs until stopped (signal or [`Stopper`]); every capture is stopped on return.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut next_check = Instant::now() + self.timing.capture_check;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let timeout = self
                .next_deadline()
                .min(next_check)
                .saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("waiting for events");
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNAL_HUP => {
                        if self.drain_signal(0) {
                            self.reload();
                        }
                    }
                    SIGNAL_TERM => {
                        if self.drain_signal(1) {
                            info!("stopping on signal");
                            self.stop.store(true, Ordering::SeqCst);
                        }
                    }
                    WAKER => self.verdicts(),
                    Token(t) if self.listeners.contains_key(&t) => self.accept(t),
                    Token(t) if self.clients.contains_key(&t) => self.client_event(t),
                    Token(t) => self.slot_event(t),
                }
            }
            let now = Instant::now();
            self.timers(now);
            if now >= next_check {
                self.check_captures();
                next_check = now + self.timing.capture_check;
            }
        }
        self.shutdown();
        Ok(())
    }

    fn drain_signal(&mut self, which: usize) -> bool {
        let Some(pair) = self.signals.as_mut() else {
            return false;
        };
        let pipe = if which == 0 { &mut pair.0 } else { &mut pair.1 };
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        got
    }

    fn reload(&mut self) {
        let Some(reload) = self.reload.as_mut() else {
            return;
        };
        match reload() {
            Ok(config) => {
                info!("configuration reloaded");
                self.apply_config(config);
            }
            Err(e) => error!("configuration not reloaded, keeping the running one: {e:#}"),
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let slots = self.slots.values().filter_map(|s| match &s.state {
            State::Waiting(at) => Some(*at),
            State::Connecting { deadline, .. } => Some(*deadline),
            _ => None,
        });
        let clients = self
            .clients
            .values()
            .map(|c| c.deadline(&self.config.passive));
        let linger = self.lingering.next_drain(Instant::now());
        slots
            .chain(clients)
            .chain(linger)
            .min()
            .unwrap_or(far)
            .min(far)
    }

    fn timers(&mut self, now: Instant) {
        self.lingering.drain(now);
        self.client_timers(now);
        let tokens: Vec<usize> = self.slots.keys().copied().collect();
        for token in tokens {
            let due = match &self.slots[&token].state {
                State::Waiting(at) => *at <= now,
                State::Connecting { deadline, .. } => *deadline <= now,
                _ => false,
            };
            if !due {
                continue;
            }
            if matches!(self.slots[&token].state, State::Waiting(_)) {
                self.dial(token, now);
            } else {
                self.attempt_failed(token, "connection timed out".into());
            }
        }
    }

    fn random(&mut self) -> u64 {
        self.random_counter += 1;
        let mut h = self.random.build_hasher();
        h.write_u64(self.random_counter);
        h.finish()
    }

    fn dial(&mut self, token: usize, now: Instant) {
        let slot = self.slots.get_mut(&token).expect("slot exists");
        slot.last_attempt = Some(now);
        let client = slot.client.clone();
        let failures = slot.failures;
        // Resolved at every attempt: a sensor may move, DNS may come back.
        let addrs: Vec<SocketAddr> = match (client.host.as_str(), client.port).to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                return self.attempt_failed(token, format!("cannot resolve {}: {e}", client.host))
            }
        };
        if addrs.is_empty() {
            return self.attempt_failed(token, format!("{} has no address", client.host));
        }
        let addr = addrs[failures as usize % addrs.len()];
        debug!("dialling {client} at {addr}");
        match self.connect(addr) {
            Ok(mut stream) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                if let Err(e) = self
                    .poll
                    .registry()
                    .register(&mut stream, Token(token), interest)
                {
                    return self.attempt_failed(token, format!("register: {e}"));
                }
                let slot = self.slots.get_mut(&token).expect("slot exists");
                slot.state = State::Connecting {
                    stream,
                    deadline: now + self.timing.connect_timeout,
                };
            }
            Err(e) => self.attempt_failed(token, format!("connect to {addr}: {e}")),
        }
    }

    /// A non-blocking connect with keepalive on.
    fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        sock.set_cloexec(true)?;
        sock.set_tcp_nodelay(true)?;
        if self.config.keepalive_secs > 0 {
            let idle = Duration::from_secs(self.config.keepalive_secs.into());
            let ka = TcpKeepalive::new()
                .with_time(idle)
                .with_interval((idle / 4).max(Duration::from_secs(1)))
                .with_retries(4);
            sock.set_tcp_keepalive(&ka)?;
        }
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(sock.into()))
    }

    fn attempt_failed(&mut self, token: usize, why: String) {
        let slot = self.slots.get_mut(&token).expect("slot exists");
        if let State::Connecting { stream, .. } = &mut slot.state {
            let _ = self.poll.registry().deregister(stream);
        }
        slot.failures = slot.failures.saturating_add(1);
        let failures = slot.failures;
        let r = self.random();
        let delay = self.timing.backoff(failures, r);
        let slot = self.slots.get_mut(&token).expect("slot exists");
        warn!(
            "sensor {}: {why}; retry {} in {:.1} s",
            slot.client,
            failures,
            delay.as_secs_f64()
        );
        slot.state = State::Waiting(Instant::now() + delay);
    }

    fn slot_event(&mut self, token: usize) {
        let Some(slot) = self.slots.get_mut(&token) else {
            return;
        };
        match &mut slot.state {
            State::Connecting { stream, .. } => {
                if let Ok(Some(e)) | Err(e) = stream.take_error() {
                    return self.attempt_failed(token, e.to_string());
                }
                let (local, peer) = match (stream.local_addr(), stream.peer_addr()) {
                    (Ok(l), Ok(p)) => (l, p),
                    // Not connected yet: a spurious wake-up.
                    (_, Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                    (Err(e), _) | (_, Err(e)) => return self.attempt_failed(token, e.to_string()),
                };
                info!("connected to sensor {} ({peer})", slot.client);
                slot.failures = 0;
                let cfg = self.session_config(&self.slots[&token].client);
                let (mode, tls) = (self.tls_mode(), self.tls.clone());
                let slot = self.slots.get_mut(&token).expect("slot exists");
                let State::Connecting { stream, .. } =
                    std::mem::replace(&mut slot.state, State::Done)
                else {
                    unreachable!()
                };
                let conn = Conn::new(stream, mode, tls);
                let mut session = Box::new(Session::new(cfg, local, peer));
                session.defer_auth();
                slot.state = State::Connected { conn, session };
                // The sensor speaks first; its bytes may already be here.
                self.service(token);
            }
            State::Connected { .. } => self.service(token),
            State::Waiting(_) | State::Done => {}
        }
    }

    /// Reads what the sensor sent, runs the session, writes the replies.
    fn service(&mut self, token: usize) {
        let slot = self.slots.get_mut(&token).expect("slot exists");
        let State::Connected { conn, session } = &mut slot.state else {
            return;
        };
        let (mut gone, _) = pump(conn, session, &mut self.host, true);
        self.next_check += 1;
        let id = self.next_check;
        if submit_check(&self.verifier, id, session, &mut self.host) {
            self.checks.insert(id, token);
        }
        if gone.is_none() && session.verifying() {
            return;
        }
        // Active sensors are the ones we dial: a failed login is answered at once.
        while gone.is_none() && session.paused() && session.ended().is_none() {
            session.resume(&mut self.host);
            gone = pump(conn, session, &mut self.host, true).0;
        }
        match (session.ended().cloned(), gone) {
            (Some(Ended::Closed), _) => {
                info!("sensor {} sent CLOSE: not reconnecting", slot.client);
                let mut slot = self.slots.remove(&token).expect("slot exists");
                self.disconnect(token, &mut slot);
                slot.state = State::Done;
                self.slots.insert(token, slot);
            }
            (Some(Ended::Protocol(why)), _) => {
                self.drop_session(token, &why);
                self.attempt_failed(token, why);
            }
            (None, Some(why)) => self.drop_session(token, &why),
            (None, None) => {}
        }
    }

    /// A session that was up went down: reconnect at once, but no more often
    /// than once per backoff base.
    fn drop_session(&mut self, token: usize, why: &str) {
        let mut slot = self.slots.remove(&token).expect("slot exists");
        warn!("session with sensor {} ended: {why}", slot.client);
        self.disconnect(token, &mut slot);
        let earliest = slot
            .last_attempt
            .map(|t| t + self.timing.backoff_base)
            .unwrap_or_else(Instant::now);
        slot.state = State::Waiting(earliest.max(Instant::now()));
        self.slots.insert(token, slot);
    }

    /// Stops the slot's capture and closes its connection (`token` is the
    /// slot's: a password check of the old connection no longer counts).
    fn disconnect(&mut self, token: usize, slot: &mut Slot<H::Capture>) {
        self.checks.retain(|_, t| *t != token);
        match std::mem::replace(&mut slot.state, State::Waiting(Instant::now())) {
            State::Connected {
                mut conn,
                mut session,
            } => {
                session.shutdown(&mut self.host);
                let _ = flush(&mut conn, &mut session);
                let _ = self.poll.registry().deregister(&mut conn.stream);
                self.lingering.add(conn.stream, Instant::now());
            }
            State::Connecting { mut stream, .. } => {
                let _ = self.poll.registry().deregister(&mut stream);
            }
            other => slot.state = other,
        }
    }

    fn check_captures(&mut self) {
        let tokens: Vec<usize> = self.slots.keys().copied().collect();
        for token in tokens {
            let slot = self.slots.get_mut(&token).expect("slot exists");
            if let State::Connected { session, .. } = &mut slot.state {
                if session.poll_capture(&mut self.host) {
                    self.service(token);
                }
            }
        }
        let tokens: Vec<usize> = self.clients.keys().copied().collect();
        for token in tokens {
            let client = self.clients.get_mut(&token).expect("client exists");
            if client.session.poll_capture(&mut self.host) {
                self.client_event(token);
            }
        }
    }

    /// Accepts every waiting passive client.
    fn accept(&mut self, token: usize) {
        loop {
            let Some(listener) = self.listeners.get(&token) else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the listener stays; try again later.
                    warn!("accepting a passive client: {e}");
                    return;
                }
            };
            let ip = crate::filter::canonical(peer.ip());
            if !self.allowed.permits(ip) {
                warn!("passive client {peer} refused: not in PassiveClient/-l");
                refuse(&mut stream, ErrorCode::HostNoAuth, "Host not allowed");
                continue;
            }
            if self.clients.len() >= self.config.passive.max_clients {
                warn!(
                    "passive client {peer} refused: {} clients already (MaxClients)",
                    self.clients.len()
                );
                refuse(&mut stream, ErrorCode::Netw, "Too many clients");
                continue;
            }
            let local = match stream.local_addr() {
                Ok(l) => l,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            let ctoken = self.next_token;
            self.next_token += 1;
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut stream, Token(ctoken), interest)
            {
                warn!("passive client {peer}: {e}");
                continue;
            }
            info!("passive client {peer} connected");
            let mut session = Session::new(self.passive_session_config(), local, peer);
            session.defer_auth();
            let conn = Conn::new(stream, self.tls_mode(), self.tls.clone());
            self.clients
                .insert(ctoken, Client::new(conn, session, Instant::now()));
            self.client_event(ctoken);
        }
    }

    /// Runs a passive client's connection: reads, the session, replies; a
    /// failed authentication holds the connection (no reads, no replies) for
    /// the peer's backoff delay.
    fn client_event(&mut self, token: usize) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let now = Instant::now();
        if client.held(now) {
            return;
        }
        let was_authenticated = client.session.authenticated();
        let (gone, received) = pump(&mut client.conn, &mut client.session, &mut self.host, false);
        if received {
            client.last_rx = now;
        }
        self.next_check += 1;
        let id = self.next_check;
        if submit_check(&self.verifier, id, &mut client.session, &mut self.host) {
            self.checks.insert(id, token);
        }
        if client.session.verifying() {
            if let Some(why) = gone {
                self.drop_client(token, &why);
            }
            return;
        }
        let peer = client.session.peer().ip();
        if client.session.paused() {
            let delay = self.backoff.failed(crate::filter::canonical(peer), now);
            client.hold_until = Some(now + delay);
            debug!("{peer}: authentication failed; reply held {delay:?}");
            return;
        }
        if !was_authenticated && client.session.authenticated() {
            self.backoff.succeeded(crate::filter::canonical(peer));
        }
        let ended = client.session.ended().cloned();
        match (ended, gone) {
            (Some(Ended::Closed), _) => self.drop_client(token, "closed the session"),
            (Some(Ended::Protocol(why)), _) => self.drop_client(token, &why),
            (None, Some(why)) => self.drop_client(token, &why),
            (None, None) => {}
        }
    }

    /// Holds that expire, authentication and idle timeouts.
    fn client_timers(&mut self, now: Instant) {
        let tokens: Vec<usize> = self.clients.keys().copied().collect();
        for token in tokens {
            let client = self.clients.get_mut(&token).expect("client exists");
            if let Some(at) = client.hold_until {
                if at <= now {
                    client.hold_until = None;
                    // The held reply goes out, then the requests that came meanwhile.
                    let _ = flush(&mut client.conn, &mut client.session);
                    if client.session.ended().is_some() {
                        self.drop_client(token, "too many failed authentications");
                        continue;
                    }
                    client.session.resume(&mut self.host);
                    self.client_event(token);
                }
                continue;
            }
            let p = &self.config.passive;
            let auth_timeout = Duration::from_secs(p.auth_timeout_secs.into());
            let idle_timeout = Duration::from_secs(p.idle_timeout_secs.into());
            if !client.session.authenticated() && now >= client.accepted + auth_timeout {
                let msg = Message::error(ErrorCode::InitTimeout, "Authentication timeout");
                let _ = client.conn.write(&msg.to_bytes());
                self.drop_client(token, "did not authenticate in time (AuthTimeoutSecs)");
            } else if client.session.authenticated()
                && !client.session.capturing()
                && now >= client.last_rx + idle_timeout
            {
                let msg = Message::error(ErrorCode::RuntimeTimeout, "Idle timeout");
                let _ = client.conn.write(&msg.to_bytes());
                self.drop_client(token, "idle without a capture (IdleTimeoutSecs)");
            }
        }
    }

    fn drop_client(&mut self, token: usize, why: &str) {
        let Some(mut client) = self.clients.remove(&token) else {
            return;
        };
        self.checks.retain(|_, t| *t != token);
        info!("passive client {}: {why}", client.session.peer());
        client.session.shutdown(&mut self.host);
        let _ = flush(&mut client.conn, &mut client.session);
        let _ = self.poll.registry().deregister(&mut client.conn.stream);
        self.lingering.add(client.conn.stream, Instant::now());
    }

    /// Applies the answers of the password checker to their sessions.
    fn verdicts(&mut self) {
        while let Some(v) = self.verifier.try_recv() {
            // Gone meanwhile: nothing to answer.
            let Some(token) = self.checks.remove(&v.id) else {
                continue;
            };
            if let Some(client) = self.clients.get_mut(&token) {
                // The check's time does not count as the client's idle time.
                client.last_rx = Instant::now();
                client.session.auth_verified(v.ok, &mut self.host);
                self.client_event(token);
            } else if let Some(Slot {
                state: State::Connected { session, .. },
                ..
            }) = self.slots.get_mut(&token)
            {
                session.auth_verified(v.ok, &mut self.host);
                self.service(token);
            }
        }
    }

    /// Number of passive clients connected (tests, logs).
    pub fn passive_clients(&self) -> usize {
        self.clients.len()
    }

    fn shutdown(&mut self) {
        let tokens: Vec<usize> = self.clients.keys().copied().collect();
        for token in tokens {
            self.drop_client(token, "daemon stopping");
        }
        let tokens: Vec<usize> = self.slots.keys().copied().collect();
        for token in tokens {
            if let Some(mut slot) = self.slots.remove(&token) {
                self.disconnect(token, &mut slot);
            }
        }
    }
}

/// Hands the session's password check, if it has one, to the checker as
/// check `id`; a full queue fails the login at once. Returns whether the
/// check was queued.
fn submit_check<H: CaptureHost>(
    verifier: &Verifier,
    id: u64,
    session: &mut Session<H::Capture>,
    host: &mut H,
) -> bool {
    let Some((auth, user, password)) = session.take_auth_request() else {
        return false;
    };
    if verifier.submit(id, auth, user, password) {
        return true;
    }
    session.auth_verified(false, host);
    false
}

/// Sends an error to a connection refused at accept and closes it.
fn refuse(stream: &mut TcpStream, code: ErrorCode, text: &str) {
    let _ = stream.write(&Message::error(code, text).to_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Runs a connection once: finds out TLS or plaintext, feeds what arrived
/// to the session (until it pauses or ends), sends its replies. Returns why
/// the connection is gone, if it is, and whether any bytes arrived.
fn pump<H: CaptureHost>(
    conn: &mut Conn<TcpStream>,
    session: &mut Session<H::Capture>,
    host: &mut H,
    active: bool,
) -> (Option<String>, bool) {
    let who = if active { "the sensor" } else { "the client" };
    let mut first = [0u8; 1];
    let peeked = match conn.sniffing().then(|| conn.stream.peek(&mut first)) {
        Some(Ok(n)) if n > 0 => Some(first[0]),
        _ => None,
    };
    let mut received = false;
    match conn.sniff(peeked) {
        Err(e) => return (Some(format!("TLS: {e}")), false),
        Ok(Sniffed::Pending) => {
            // Nothing to read yet, or the end: the read below tells.
        }
        Ok(Sniffed::PlainRefused) => {
            refuse(
                &mut conn.stream,
                ErrorCode::TlsRequired,
                "TLS is required (use rpcaps://)",
            );
            return (
                Some("plaintext client refused: TLS is required".into()),
                true,
            );
        }
        Ok(Sniffed::Tls) => session.set_tls(true),
        Ok(_) => {}
    }
    let mut buf = [0u8; 16 * 1024];
    let mut gone: Option<String> = None;
    if !session.paused() {
        loop {
            match conn.read(&mut buf) {
                Ok(0) => {
                    gone = Some(format!("{who} closed the connection"));
                    break;
                }
                Ok(n) => {
                    received = true;
                    session.receive(&buf[..n], host);
                    if session.ended().is_some() || session.paused() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    gone = Some(e.to_string());
                    break;
                }
            }
        }
    }
    // A passive client's failed login keeps its reply until the hold ends.
    if active || !session.paused() {
        if let Err(e) = flush(conn, session) {
            gone.get_or_insert(e.to_string());
        }
    }
    if session.output().len() > MAX_PENDING_OUTPUT {
        gone.get_or_insert(format!("{who} does not read its replies"));
    }
    (gone, received)
}

/// Writes pending replies until done or the socket is full.
fn flush<C>(conn: &mut Conn<TcpStream>, session: &mut Session<C>) -> io::Result<()> {
    conn.flush_tls()?;
    while !session.output().is_empty() {
        match conn.write(session.output()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => session.consume_output(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoHost;
    impl CaptureHost for NoHost {
        type Capture = ();
        fn interfaces(&mut self) -> io::Result<Vec<rpcap::msg::Interface>> {
            Ok(Vec::new())
        }
        fn linktype(&mut self, _: &str) -> io::Result<i32> {
            Ok(1)
        }
        fn start(&mut self, _: crate::session::StartRequest) -> Result<(), String> {
            Err("no".into())
        }
        fn update_filter(&mut self, _: &mut (), _: Vec<rpcap::bpf::Insn>) -> Result<(), String> {
            Ok(())
        }
        fn set_sampling(&mut self, _: &mut (), _: rpcap::msg::Sampling) {}
        fn stats(&mut self, _: &()) -> rpcap::msg::Stats {
            Default::default()
        }
        fn failure(&mut self, _: &()) -> Option<String> {
            None
        }
        fn stop(&mut self, _: ()) -> rpcap::msg::Stats {
            Default::default()
        }
    }

    fn cfg(lines: &[&str]) -> Config {
        let text: String = lines
            .iter()
            .map(|l| format!("ActiveClient = {l}\n"))
            .collect();
        Config::parse(&text, "t.ini").unwrap().config
    }

    #[test]
    fn reload_keeps_unchanged_lines_and_replaces_changed_ones() {
        let timing = Timing::from_config(&Config::default());
        let a = "192.0.2.1, 2003";
        let b = "192.0.2.2, 2003";
        let b2 = "192.0.2.2, 2003, ifname=eth1";
        let mut c = Control::new(cfg(&[a, b, a]), timing, NoHost).unwrap();
        let before: Vec<(usize, String)> = c
            .slots
            .iter()
            .map(|(t, s)| (*t, s.client.to_string()))
            .collect();
        c.apply_config(cfg(&[a, b2]));
        let after: Vec<(usize, String)> = c
            .slots
            .iter()
            .map(|(t, s)| (*t, s.client.to_string()))
            .collect();
        // The first `a` keeps its slot, the duplicate and `b` go, `b2` is new.
        assert_eq!(after[0], before[0]);
        assert_eq!(after.len(), 2);
        assert_eq!(after[1].1, b2);
        assert!(after[1].0 > before[2].0);
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let t = Timing {
            backoff_base: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            capture_check: Duration::from_secs(1),
            auth_fail_delay: Duration::from_secs(1),
            auth_fail_max: Duration::from_secs(30),
        };
        // random 999 → factor ~1; random 0 → factor 0.5.
        assert_eq!(t.backoff(1, 0), Duration::from_millis(500));
        assert!(t.backoff(1, 999) > Duration::from_millis(990));
        assert!(t.backoff(3, 999) > Duration::from_millis(3960));
        assert!(t.backoff(3, 999) <= Duration::from_secs(4));
        assert!(t.backoff(10, 999) <= Duration::from_secs(30));
        assert!(t.backoff(10, 999) > Duration::from_secs(29));
        assert!(t.backoff(u32::MAX, 0) == Duration::from_secs(15));
    }
}
