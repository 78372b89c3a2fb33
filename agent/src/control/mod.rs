//! The control thread: a thin mio driver around the sessions. One loop owns
//! every RPCAP connection — the sensors of the ActiveClient lines it dials
//! ([`dialer`]: one sans-IO [`slot`] per line, names looked up off the loop
//! by the [`resolver`]) and the passive clients it accepts ([`listener`]) —
//! each a [`Peer`]: its stream (TLS or not, [`tls`]), its sans-IO
//! [`Session`](crate::session::Session) and its capture. The loop routes
//! events by token, runs the sessions' timers from their `poll_timeout`,
//! hands password checks to the checker thread and takes back its verdicts
//! and the lookups' answers (one waker), checks running captures for
//! failures on a timer, and closes ended connections gracefully
//! ([`linger`]). SIGHUP reloads the configuration (only slots whose line
//! changed restart); SIGTERM/SIGINT stop every capture and return
//! ([`signals`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{error, info, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use rpcap::log_limit::LogLimit;
use rpcap::ErrorCode;

use self::dialer::{Connected, Dialer};
use self::linger::Lingering;
use self::listener::{AcceptPause, Accepted, Allowed, ListenSpec, Listeners};
use self::notify::{Counts, Notifier};
use self::peer::{refuse, Checks, Peer, Role, Services, Status};
use self::report::Reports;
use self::signals::Signals;
use self::tls::Conn;
use crate::auth::{Backoff, Verifier};
use crate::host::CaptureHost;
use crate::metrics::{LiveCapture, Published, SlotSnapshot, Snapshot, Totals};
use crate::session::{Ended, Mode, Session, SessionConfig};
use crate::settings::{ActiveClient, Config, TlsMode};
use rpcap::addr::canonical;

pub mod dialer;
pub mod linger;
pub mod listener;
pub mod notify;
pub mod peer;
pub mod report;
pub mod resolver;
pub mod signals;
pub mod slot;
pub mod tls;

const SIGNALS: Token = Token(0);
const WAKER: Token = Token(1);
/// Listener tokens: FIRST_LISTENER.. below FIRST_PEER.
const FIRST_LISTENER: usize = 2;
const FIRST_PEER: usize = 16;
/// Log lines about refused passive clients: one per 10 s, counting the rest.
const REFUSAL_LINES: LogLimit = LogLimit::new(1, Duration::from_secs(10));

/// Timing of the loop; tests shorten it.
#[derive(Debug, Clone)]
pub struct Timing {
    /// First retry delay after a failed attempt (doubling per failure).
    pub backoff_base: Duration,
    /// `MaxBackoffSecs`: no retry delay is longer.
    pub max_backoff: Duration,
    /// The longest retry delay during the first `fast_window` of an outage,
    /// so that a sensor is reached again within about this long after its
    /// path returns.
    pub fast_step: Duration,
    /// How long an outage keeps retry delays at most `fast_step`; after
    /// that the ceiling doubles every further `fast_window`, up to
    /// `max_backoff`.
    pub fast_window: Duration,
    /// A name lookup not answered by then is a failed attempt.
    pub resolve_timeout: Duration,
    /// A session authenticated this long ends an outage (resets the
    /// backoff); one that ends sooner counts as a failed attempt.
    pub stable_session: Duration,
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
            fast_step: Duration::from_secs(5),
            fast_window: Duration::from_secs(180),
            // glibc gives a silent name server 5 s per try, two tries.
            resolve_timeout: Duration::from_secs(10),
            stable_session: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            capture_check: Duration::from_millis(500),
            auth_fail_delay: Duration::from_secs(1),
            auth_fail_max: Duration::from_secs(30),
        }
    }

    /// The delay before attempt number `failures + 1` of an outage that
    /// began `outage` ago: base × 2^(failures−1), under a ceiling of
    /// `fast_step` for the first `fast_window` of the outage (a short
    /// outage costs at most about one step more than its length), doubling
    /// every further `fast_window` (a long one does not hammer the sensor),
    /// never above `max_backoff`; then scaled by a random factor in
    /// [0.5, 1) so that many agents do not redial a restarted sensor in step.
    pub fn backoff(&self, failures: u32, outage: Duration, random: u64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let doubling = self.backoff_base.saturating_mul(1u32 << exp);
        let window = self.fast_window.as_secs_f64().max(0.001);
        let periods = (outage.as_secs_f64() / window).min(30.0) as u32;
        let ceiling = self.fast_step.saturating_mul(1u32 << periods);
        let full = doubling.min(ceiling).min(self.max_backoff);
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

pub struct Control<H: CaptureHost> {
    poll: Poll,
    /// The capture host, the password checker and the failed-login delays:
    /// what serving a peer needs besides the peer.
    services: Services<H>,
    config: Config,
    timing: Timing,
    /// Every connection: dialled sensors (under their slot's token) and
    /// accepted clients.
    peers: BTreeMap<Token, Peer<H::Capture>>,
    dialer: Dialer,
    listeners: Listeners,
    /// Hosts allowed to connect as passive clients.
    allowed: Allowed,
    /// Accepting waits after running out of descriptors.
    accept_pause: AcceptPause,
    /// Log lines of refused passive clients, which a stranger causes at
    /// will: one bucket for all of them.
    refusals: LogLimit,
    next_token: usize,
    signals: Option<Signals>,
    reload: Option<Reload>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Ended connections waiting for their peer's close.
    lingering: Lingering,
    /// READY/STATUS/WATCHDOG/RELOADING/STOPPING for systemd.
    notify: Notifier,
    /// Summary lines and the captures' part of the status.
    reports: Reports,
    /// Inetd mode ([`Control::serve_one`]): stop when the passive client is gone.
    one_client: bool,
    /// `--metrics-listen`: the snapshot the endpoint renders, published at
    /// each capture check, and the counters of the captures that ended.
    metrics: Option<(Published, Totals)>,
    /// The status socket's view (with the metrics snapshot, when on) and
    /// the counters its rates are computed from.
    status: Option<(crate::status::Board, crate::status::Rates)>,
    /// `TunnelClient` exports (they need no connection).
    exports: crate::tunnel::export::Exports,
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
        let mut host = host;
        let wake = waker.clone();
        host.set_notify(Arc::new(move || {
            let _ = wake.wake();
        }));
        let wake = waker.clone();
        let verifier = Verifier::spawn(move || {
            let _ = wake.wake();
        })
        .context("starting the password checker")?;
        let wake = waker.clone();
        let dialer = Dialer::new(timing.clone(), move || {
            let _ = wake.wake();
        });
        let mut c = Control {
            poll,
            services: Services {
                host,
                verifier,
                checks: Checks::default(),
                backoff,
                dropped: Default::default(),
            },
            config: Config::default(),
            dialer,
            timing,
            peers: BTreeMap::new(),
            listeners: Listeners::default(),
            allowed: Allowed::default(),
            accept_pause: AcceptPause::default(),
            refusals: REFUSAL_LINES,
            next_token: FIRST_PEER,
            signals: None,
            reload: None,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            tls: None,
            lingering: Lingering::default(),
            notify: Notifier::from_env(),
            reports: Reports::new(None),
            one_client: false,
            metrics: None,
            status: None,
            exports: Default::default(),
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
        let spec = ListenSpec::from_config(&self.config);
        self.listeners
            .open(spec, self.poll.registry(), FIRST_LISTENER..FIRST_PEER)
    }

    /// Inetd mode (bare `-i`): serves `stream`, the connection inetd (or
    /// systemd's Accept=yes) accepted, as the one passive client — with
    /// PassiveClient/-l, authentication and TLS as for any — and stops
    /// [`Control::run`] when it is gone. Call it instead of [`Control::listen`],
    /// with no ActiveClient lines.
    pub fn serve_one(&mut self, stream: std::net::TcpStream) -> anyhow::Result<()> {
        stream
            .set_nonblocking(true)
            .context("inetd socket: non-blocking")?;
        let addr = stream.peer_addr().context("inetd socket: peer address")?;
        self.one_client = true;
        self.admit(TcpStream::from_std(stream), addr, Instant::now());
        if self.passive_clients() == 0 {
            // Refused (PassiveClient/-l) or already over.
            self.stop.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The addresses passive clients can connect to.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.addrs()
    }

    /// Publishes the slots and captures to `published` (the metrics
    /// endpoint) at each capture check.
    pub fn with_metrics(mut self, published: Published) -> Control<H> {
        self.metrics = Some((published, Totals::default()));
        self
    }

    /// Publishes the slots, captures, rates and listeners to `board` (the
    /// status socket) at each capture check.
    pub fn with_status(mut self, board: crate::status::Board) -> Control<H> {
        self.status = Some((board, crate::status::Rates::default()));
        if self.metrics.is_none() {
            self.metrics = Some((Published::default(), Totals::default()));
        }
        self
    }

    /// The metrics snapshot now: slots from the dialer, counters from the
    /// running captures (atomics the workers store once per round).
    fn publish_metrics(&mut self) {
        let Some((published, totals)) = self.metrics.as_mut() else {
            return;
        };
        let mut names = BTreeMap::new();
        let slots = self
            .dialer
            .lines()
            .map(|(token, client, slot)| {
                let sensor = client.slot_name();
                names.insert(token, sensor.clone());
                SlotSnapshot {
                    sensor,
                    state: slot.state_name(),
                    attempts: slot.attempts(),
                    last_error: slot.last_error().map(str::to_string),
                }
            })
            .collect::<Vec<_>>();
        let mut live = Vec::new();
        for (token, peer) in &self.peers {
            let Some(counters) = peer.counters(&mut self.services.host) else {
                continue;
            };
            let interface = peer.interface().unwrap_or("?").to_string();
            let sensor = match names.get(token) {
                Some(name) => name.clone(),
                None => format!("passive:{}", canonical(peer.addr().ip())),
            };
            live.push(LiveCapture {
                sensor,
                interface,
                id: token.0 as u64,
                counters,
            });
        }
        live.extend(self.exports.live());
        // Sensors removed from the configuration take their counters along.
        let exports = &self.exports;
        totals.retain_sensors(|s| {
            s.starts_with("passive:")
                || slots.iter().any(|slot| slot.sensor == s)
                || exports.has_label(s)
        });
        let captures = totals.update(live);
        let snapshot = Snapshot { slots, captures };
        if let Some((board, rates)) = self.status.as_mut() {
            let pps = rates.update(&snapshot, Instant::now());
            board.publish(snapshot.clone(), pps, self.listeners.addrs());
        }
        published.publish(snapshot);
    }

    /// Handles SIGHUP (reload through `reload`) and SIGTERM/SIGINT (stop).
    pub fn with_signals(mut self, reload: Reload) -> anyhow::Result<Control<H>> {
        self.signals = Some(Signals::install(self.poll.registry(), SIGNALS)?);
        self.reload = Some(reload);
        Ok(self)
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// The sensors dialled, for logs and tests.
    pub fn clients(&self) -> Vec<ActiveClient> {
        self.dialer.clients()
    }

    /// Number of passive clients connected (tests, logs).
    pub fn passive_clients(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.role() == Role::Client)
            .count()
    }

    /// The `STATUS=` line: the counts, then the captures' rates.
    pub fn status_line(&self) -> String {
        self.counts().status_with(self.reports.detail())
    }

    /// What the `STATUS=` line says.
    pub fn counts(&self) -> Counts {
        let sensors = self.peers.values().filter(|p| p.role() == Role::Sensor);
        Counts {
            sensors: self.dialer.clients().len(),
            sensors_connected: sensors.clone().filter(|p| p.authenticated()).count(),
            sensors_capturing: sensors.filter(|p| p.capturing()).count(),
            captures: self.peers.values().filter(|p| p.capturing()).count(),
            listening: !self.listeners.addrs().is_empty(),
            passive_clients: self.passive_clients(),
        }
    }

    fn tls_mode(&self) -> TlsMode {
        if self.tls.is_some() {
            self.config.tls.effective_mode()
        } else {
            TlsMode::Off
        }
    }

    /// Keeps the slots whose line is unchanged, ends the others, adds new ones.
    fn apply_config(&mut self, mut config: Config) {
        let now = Instant::now();
        // Exports first: the sessions' filters leave their datagrams out.
        self.exports.apply(&config);
        config.local_filter = crate::tunnel::export::with_exclusion(
            config.local_filter.as_deref(),
            self.exports.exclusion().as_deref(),
        );
        let removed = self
            .dialer
            .apply(&config, self.poll.registry(), &mut self.next_token, now);
        for token in removed {
            if let Some(peer) = self.peers.remove(&token) {
                peer.close(
                    now,
                    &mut self.services,
                    self.poll.registry(),
                    &mut self.lingering,
                );
            }
        }
        self.allowed = Allowed::resolve(&config.passive.clients);
        let spec = ListenSpec::from_config(&config);
        self.services.host.reconfigure(&config);
        self.reports.set_summary_interval(
            (config.summary_interval_secs > 0)
                .then(|| Duration::from_secs(config.summary_interval_secs.into())),
        );
        self.config = config;
        // Passive clients connected meanwhile run on the new timeouts.
        let passive = session_config(&self.config, Mode::Passive, None);
        for peer in self.peers.values_mut() {
            if peer.role() == Role::Client {
                peer.set_timeouts(passive.auth_timeout, passive.idle_timeout);
            }
        }
        // Listeners change only when their settings do (and only once listening).
        if self.listeners.changes(&spec) {
            let registry = self.poll.registry();
            if let Err(e) = self
                .listeners
                .open(spec, registry, FIRST_LISTENER..FIRST_PEER)
            {
                error!("passive listeners: {e:#}");
            }
        }
    }

    /// Runs until stopped (signal or [`Stopper`]); every capture is stopped on return.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut next_check = Instant::now() + self.timing.capture_check;
        self.notify.ready(Instant::now(), self.status_line());
        self.publish_metrics();
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let timeout = self
                .next_deadline(now)
                .min(next_check)
                .min(self.notify.deadline().unwrap_or(next_check))
                .saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("waiting for events");
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => {
                        let asked = self
                            .signals
                            .as_mut()
                            .map(Signals::drain)
                            .unwrap_or_default();
                        if asked.reload {
                            self.reload();
                        }
                        if asked.stop {
                            info!("stopping on signal");
                            self.stop.store(true, Ordering::SeqCst);
                        }
                    }
                    WAKER => {
                        self.verdicts(now);
                        self.dialer.resolved(now, self.poll.registry());
                        self.starts(now);
                    }
                    // While paused, the pause's timer accepts on every listener.
                    t if self.listeners.contains(t) => {
                        if !self.accept_pause.paused(now) {
                            self.accept(t, now)
                        }
                    }
                    t if self.peers.contains_key(&t) => {
                        self.serve(t, now, |p, s| p.service(now, s))
                    }
                    t => {
                        if let Some(c) = self.dialer.ready(t, now, self.poll.registry()) {
                            self.connected(t, c, now);
                        }
                    }
                }
            }
            let now = Instant::now();
            self.timers(now);
            if now >= next_check {
                self.check_captures(now);
                next_check = now + self.timing.capture_check;
                self.reports.tick(now, &self.peers, &mut self.services.host);
                let status = self.status_line();
                self.notify.status(status);
                self.publish_metrics();
            }
            self.notify.tick(now);
        }
        self.notify.stopping();
        self.shutdown();
        Ok(())
    }

    fn reload(&mut self) {
        let Some(reload) = self.reload.as_mut() else {
            return;
        };
        self.notify.reloading();
        match reload() {
            Ok(config) => {
                info!("configuration reloaded");
                self.apply_config(config);
            }
            Err(e) => error!("configuration not reloaded, keeping the running one: {e:#}"),
        }
        let status = self.status_line();
        self.notify.reloaded(status);
    }

    /// The earliest timer: a dial, a session's, lingering connections; at
    /// most an hour away.
    fn next_deadline(&self, now: Instant) -> Instant {
        let far = now + Duration::from_secs(3600);
        let sessions = self.peers.values().filter_map(|p| p.poll_timeout());
        self.dialer
            .next_deadline()
            .into_iter()
            .chain(sessions)
            .chain(self.lingering.next_drain(now))
            .chain(self.accept_pause.poll_timeout())
            .min()
            .unwrap_or(far)
            .min(far)
    }

    fn timers(&mut self, now: Instant) {
        self.lingering.drain(now);
        if self.accept_pause.due(now) {
            for listener in self.listeners.tokens() {
                self.accept(listener, now);
            }
        }
        let due: Vec<Token> = self
            .peers
            .iter()
            .filter(|(_, p)| p.poll_timeout().is_some_and(|at| at <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            self.serve(token, now, |p, s| p.timeout(now, s));
        }
        self.dialer.timers(now, self.poll.registry());
    }

    /// Runs `f` on the peer of `token`, then closes it if it is done.
    fn serve(
        &mut self,
        token: Token,
        now: Instant,
        f: impl FnOnce(&mut Peer<H::Capture>, &mut Services<H>) -> Status,
    ) {
        let Some(peer) = self.peers.get_mut(&token) else {
            return;
        };
        let status = f(peer, &mut self.services);
        if peer.role() == Role::Sensor {
            for what in peer.take_refusals() {
                self.dialer.refused(token, what);
            }
            self.dialer
                .progress(token, peer.authenticated(), peer.capturing(), now);
        }
        if status != Status::Open {
            self.close(token, status, now);
        }
    }

    /// Closes the connection of `token` whose session is over for `status`.
    fn close(&mut self, token: Token, status: Status, now: Instant) {
        let Some(peer) = self.peers.remove(&token) else {
            return;
        };
        match peer.role() {
            Role::Client => {
                let why = match &status {
                    Status::Ended(Ended::Closed) => "closed the session",
                    Status::Ended(Ended::Protocol(why)) | Status::Gone(why) => why,
                    Status::Ended(Ended::Timeout(why)) => why,
                    Status::Open => "still open",
                };
                info!("passive client {}: {why}", peer.addr());
                if self.one_client {
                    self.stop.store(true, Ordering::SeqCst);
                }
            }
            Role::Sensor => self.dialer.session_over(token, &status, now),
        }
        peer.close(
            now,
            &mut self.services,
            self.poll.registry(),
            &mut self.lingering,
        );
    }

    /// A sensor answered our dial: its session begins.
    fn connected(&mut self, token: Token, c: Connected, now: Instant) {
        let cfg = session_config(&self.config, Mode::Active, Some(&c.client));
        let conn = Conn::new(c.stream, self.tls_mode(), self.tls.clone());
        let session = Session::new(cfg, c.local, c.peer, now);
        self.peers
            .insert(token, Peer::new(token, Role::Sensor, conn, session));
        // The sensor speaks first; its bytes may already be here.
        self.serve(token, now, |p, s| p.service(now, s));
    }

    /// Accepts every waiting passive client, within MaxClients and
    /// MaxClientsPerHost.
    fn accept(&mut self, listener: Token, now: Instant) {
        loop {
            let (stream, addr) = match self.listeners.accept(listener) {
                Accepted::Client(stream, addr) => (stream, addr),
                Accepted::Drained => return,
                Accepted::Exhausted(e) => return self.accept_pause.failed(now, &e),
            };
            self.accept_pause.succeeded();
            self.admit(stream, addr, now);
        }
    }

    /// Serves an accepted passive client, within PassiveClient/-l,
    /// MaxClients and MaxClientsPerHost (refused otherwise).
    fn admit(&mut self, mut stream: TcpStream, addr: SocketAddr, now: Instant) {
        let ip = canonical(addr.ip());
        if !self.allowed.permits(ip) {
            self.refused(now, addr, "not in PassiveClient/-l");
            refuse(&mut stream, ErrorCode::HostNoAuth, "Host not allowed");
            return;
        }
        let clients = self.passive_clients();
        if clients >= self.config.passive.max_clients {
            self.refused(
                now,
                addr,
                &format!("{clients} clients already (MaxClients)"),
            );
            refuse(&mut stream, ErrorCode::Netw, "Too many clients");
            return;
        }
        // One address cannot take every slot (idle connections, slow
        // senders, password guessers would lock the others out).
        let from_host = self
            .peers
            .values()
            .filter(|p| p.role() == Role::Client && canonical(p.addr().ip()) == ip)
            .count();
        if from_host >= self.config.passive.max_clients_per_host {
            self.refused(
                now,
                addr,
                &format!("{from_host} clients from its address already (MaxClientsPerHost)"),
            );
            refuse(
                &mut stream,
                ErrorCode::Netw,
                "Too many clients from this address",
            );
            return;
        }
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let token = Token(self.next_token);
        self.next_token += 1;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
            warn!("passive client {addr}: {e}");
            return;
        }
        info!("passive client {addr} connected");
        let cfg = session_config(&self.config, Mode::Passive, None);
        let session = Session::new(cfg, local, addr, now);
        let conn = Conn::new(stream, self.tls_mode(), self.tls.clone());
        self.peers
            .insert(token, Peer::new(token, Role::Client, conn, session));
        self.serve(token, now, |p, s| p.service(now, s));
    }

    /// Logs a refused passive client, within [`REFUSAL_LINES`].
    fn refused(&mut self, now: Instant, addr: SocketAddr, why: &str) {
        if let Some(held_back) = self.refusals.admit(now) {
            warn!("passive client {addr} refused: {why}{held_back}");
        }
    }

    /// Applies the answers of the password checker to their sessions.
    fn verdicts(&mut self, now: Instant) {
        while let Some(v) = self.services.verifier.try_recv() {
            // Gone meanwhile: nothing to answer.
            let Some(token) = self.services.checks.take(v.id) else {
                continue;
            };
            self.serve(token, now, |p, s| p.checked(now, v.ok, s));
        }
    }

    /// Answers the sessions whose capture is up (or could not start).
    fn starts(&mut self, now: Instant) {
        let tokens: Vec<Token> = self
            .peers
            .iter()
            .filter(|(_, p)| p.starting())
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            self.serve(token, now, |p, s| {
                p.check_start(now, s).unwrap_or(Status::Open)
            });
        }
    }

    /// Tells the sessions whose capture stopped by itself.
    fn check_captures(&mut self, now: Instant) {
        self.exports.check(now);
        let tokens: Vec<Token> = self.peers.keys().copied().collect();
        for token in tokens {
            self.serve(token, now, |p, s| {
                p.check_capture(now, s).unwrap_or(Status::Open)
            });
        }
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        self.exports.stop_all();
        for (_, peer) in std::mem::take(&mut self.peers) {
            if peer.role() == Role::Client {
                info!("passive client {}: daemon stopping", peer.addr());
            }
            peer.close(
                now,
                &mut self.services,
                self.poll.registry(),
                &mut self.lingering,
            );
        }
        self.dialer.shutdown(self.poll.registry());
    }
}

/// The settings of a session: a sensor of ActiveClient line `client`, or a
/// passive client (no preselection: `-i` is for active sensors; plain UDP
/// unless PassiveUdpStr; authentication and idle timeouts).
fn session_config(cfg: &Config, mode: Mode, client: Option<&ActiveClient>) -> SessionConfig {
    let passive = mode == Mode::Passive;
    let secs = |s: u32| Some(Duration::from_secs(s.into()));
    SessionConfig {
        mode,
        null_auth: cfg.null_auth,
        preselect: client.map(|c| c.preselect.clone()).unwrap_or_default(),
        udpstr_size: if passive && !cfg.passive.udpstr {
            0
        } else {
            cfg.udpstr_size
        },
        ring_size: cfg.capture.ring_size,
        local_filter: cfg.local_filter.clone(),
        log_stats: cfg.log_stats,
        auth: Arc::new(cfg.auth.clone()),
        tls: false,
        data_accept_timeout: Duration::from_secs(cfg.passive.data_accept_timeout_secs.into()),
        capture: client.and_then(|c| c.capture),
        auth_timeout: passive
            .then(|| secs(cfg.passive.auth_timeout_secs))
            .flatten(),
        idle_timeout: passive
            .then(|| secs(cfg.passive.idle_timeout_secs))
            .flatten(),
        // Judged on sensors only: a passive client's requests are its own business.
        liveness: (!passive && cfg.liveness_secs > 0)
            .then(|| secs(cfg.liveness_secs))
            .flatten(),
        slot: client.map(ActiveClient::slot_name),
        decap: client.and_then(|c| c.decap.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    struct NoHost;
    impl CaptureHost for NoHost {
        type Capture = ();
        fn interfaces(&mut self) -> io::Result<Vec<rpcap::msg::Interface>> {
            Ok(Vec::new())
        }
        fn linktype(&mut self, _: &str) -> io::Result<i32> {
            Ok(1)
        }
        fn start(
            &mut self,
            _: crate::session::StartRequest,
        ) -> Result<(), crate::session::HostError> {
            Err(crate::session::HostError::NoCapture)
        }
        fn update_filter(
            &mut self,
            _: &mut (),
            _: rpcap::bpf::Program,
        ) -> Result<(), crate::session::HostError> {
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
        let before = c.dialer.slots();
        c.apply_config(cfg(&[a, b2]));
        let after = c.dialer.slots();
        // The first `a` keeps its slot, the duplicate and `b` go, `b2` is new.
        assert_eq!(after[0], before[0]);
        assert_eq!(after.len(), 2);
        assert_eq!(after[1].1, b2);
        assert!(after[1].0 > before[2].0);
    }

    /// The STATUS= line: the sensors configured, and NO_SENSOR when an
    /// agent has nothing to serve (it waits in the loop for a reload).
    #[test]
    fn status_counts_the_sensors_configured() {
        let timing = Timing::from_config(&Config::default());
        let mut c =
            Control::new(cfg(&["192.0.2.1, 2003", "192.0.2.2, 2003"]), timing, NoHost).unwrap();
        assert_eq!(
            c.counts().status_line(),
            "0/2 sensors capturing, 0 captures"
        );
        c.apply_config(cfg(&[]));
        assert_eq!(c.counts().status_line(), notify::NO_SENSOR);
    }

    fn timing(max_backoff: u64) -> Timing {
        Timing {
            max_backoff: Duration::from_secs(max_backoff),
            ..Timing::from_config(&Config::default())
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let t = timing(30);
        let early = Duration::ZERO;
        // random 999 → factor ~1; random 0 → factor 0.5.
        assert_eq!(t.backoff(1, early, 0), Duration::from_millis(500));
        assert!(t.backoff(1, early, 999) > Duration::from_millis(990));
        assert!(t.backoff(3, early, 999) > Duration::from_millis(3960));
        assert!(t.backoff(3, early, 999) <= Duration::from_secs(4));
        let late = Duration::from_secs(3600);
        assert!(t.backoff(10, late, 999) <= Duration::from_secs(30));
        assert!(t.backoff(10, late, 999) > Duration::from_secs(29));
        assert_eq!(
            t.backoff(u32::MAX, Duration::MAX, 0),
            Duration::from_secs(15)
        );
    }

    /// Every failure of the first 3 minutes of an outage waits at most 5 s;
    /// then the ceiling doubles every 3 minutes up to MaxBackoffSecs; the
    /// jitter spreads agents over half a step.
    #[test]
    fn backoff_steps_stay_short_for_the_first_minutes_of_an_outage() {
        let t = timing(300);
        let (mut outage, mut failures) = (Duration::ZERO, 0u32);
        let mut steps = Vec::new();
        while outage < Duration::from_secs(3600) {
            failures += 1;
            let step = t.backoff(failures, outage, 999);
            steps.push((outage, step));
            outage += step + Duration::from_millis(1);
        }
        for (at, step) in &steps {
            let at = at.as_secs();
            let ceiling = match at {
                0..180 => 5,
                180..360 => 10,
                360..540 => 20,
                540..720 => 40,
                720..900 => 80,
                900..1080 => 160,
                _ => 300,
            };
            assert!(step.as_secs_f64() <= ceiling as f64, "{at} s: {step:?}");
            assert!(
                step.as_secs_f64() > ceiling.min(300) as f64 * 0.99 || at < 180,
                "{at} s: {step:?}"
            );
        }
        // The first 3 minutes: 1, 2, 4, then 5 s steps.
        let first: Vec<u64> = steps[..5]
            .iter()
            .map(|(_, s)| s.as_millis() as u64)
            .collect();
        assert_eq!(first, [999, 1999, 3998, 4997, 4997]);
        // The cap is reached, never passed.
        assert!(steps.iter().any(|(_, s)| s.as_secs() == 299));
        // Jitter: 1000 agents at the same failure spread over [2.5, 5) s.
        let spread: std::collections::BTreeSet<u128> = (0..1000u64)
            .map(|r| t.backoff(5, Duration::ZERO, r).as_millis())
            .collect();
        assert!(spread.len() > 900);
        assert!(*spread.first().unwrap() == 2500 && *spread.last().unwrap() < 5000);
        // A MaxBackoffSecs below the fast step caps it too.
        assert!(timing(1).backoff(5, Duration::ZERO, 999) <= Duration::from_secs(1));
    }
}
