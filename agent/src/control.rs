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
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

use crate::config::{ActiveClient, Config};
use crate::session::{CaptureHost, Ended, Mode, Session, SessionConfig};

const SIGNAL_HUP: Token = Token(0);
const SIGNAL_TERM: Token = Token(1);
const WAKER: Token = Token(2);
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
}

impl Timing {
    pub fn from_config(cfg: &Config) -> Timing {
        Timing {
            backoff_base: Duration::from_secs(1),
            max_backoff: Duration::from_secs(cfg.max_backoff_secs.into()),
            connect_timeout: Duration::from_secs(10),
            capture_check: Duration::from_millis(500),
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
        stream: TcpStream,
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
}

impl<H: CaptureHost> Control<H> {
    pub fn new(config: Config, timing: Timing, host: H) -> anyhow::Result<Control<H>> {
        let poll = Poll::new().context("creating the event loop")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("creating the waker")?);
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
        };
        c.apply_config(config);
        Ok(c)
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
                    self.disconnect(&mut slot);
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
        self.host.reconfigure(&config);
        self.config = config;
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
                    WAKER => {}
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
        self.slots
            .values()
            .filter_map(|s| match &s.state {
                State::Waiting(at) => Some(*at),
                State::Connecting { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .min()
            .unwrap_or(far)
            .min(far)
    }

    fn timers(&mut self, now: Instant) {
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
                let slot = self.slots.get_mut(&token).expect("slot exists");
                let State::Connecting { stream, .. } =
                    std::mem::replace(&mut slot.state, State::Done)
                else {
                    unreachable!()
                };
                slot.state = State::Connected {
                    stream,
                    session: Box::new(Session::new(cfg, local, peer)),
                };
                // The sensor speaks first; its bytes may already be here.
                self.service(token);
            }
            State::Connected { .. } => self.service(token),
            State::Waiting(_) | State::Done => {}
        }
    }

    /// Reads what the sensor sent, runs the session, writes the replies.
    fn service(&mut self, token: usize) {
        let mut buf = [0u8; 16 * 1024];
        let slot = self.slots.get_mut(&token).expect("slot exists");
        let State::Connected { stream, session } = &mut slot.state else {
            return;
        };
        let mut gone: Option<String> = None;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    gone = Some("the sensor closed the connection".into());
                    break;
                }
                Ok(n) => {
                    session.receive(&buf[..n], &mut self.host);
                    if session.ended().is_some() {
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
        if let Err(e) = flush(stream, session) {
            gone.get_or_insert(e.to_string());
        }
        if session.output().len() > MAX_PENDING_OUTPUT {
            gone.get_or_insert("the sensor does not read its replies".into());
        }
        match (session.ended().cloned(), gone) {
            (Some(Ended::Closed), _) => {
                info!("sensor {} sent CLOSE: not reconnecting", slot.client);
                let mut slot = self.slots.remove(&token).expect("slot exists");
                self.disconnect(&mut slot);
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
        self.disconnect(&mut slot);
        let earliest = slot
            .last_attempt
            .map(|t| t + self.timing.backoff_base)
            .unwrap_or_else(Instant::now);
        slot.state = State::Waiting(earliest.max(Instant::now()));
        self.slots.insert(token, slot);
    }

    /// Stops the slot's capture and closes its connection.
    fn disconnect(&mut self, slot: &mut Slot<H::Capture>) {
        match std::mem::replace(&mut slot.state, State::Waiting(Instant::now())) {
            State::Connected {
                mut stream,
                mut session,
            } => {
                session.shutdown(&mut self.host);
                let _ = flush(&mut stream, &mut session);
                let _ = self.poll.registry().deregister(&mut stream);
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
    }

    fn shutdown(&mut self) {
        let tokens: Vec<usize> = self.slots.keys().copied().collect();
        for token in tokens {
            if let Some(mut slot) = self.slots.remove(&token) {
                self.disconnect(&mut slot);
            }
        }
    }
}

/// Writes pending replies until done or the socket is full.
fn flush<C>(stream: &mut TcpStream, session: &mut Session<C>) -> io::Result<()> {
    while !session.output().is_empty() {
        match stream.write(session.output()) {
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
