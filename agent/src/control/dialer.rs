//! Dialling the sensors of the ActiveClient lines: the IO of the slots.
//! Each line is a [`Slot`] (sans-IO: states, backoff, what a session's end
//! means); this module does what the slots ask — name lookups on the
//! [`Resolver`]'s threads, non-blocking connects ([`sys::tcp::Connecting`],
//! shared with the sensor's dialer) — and reports back what happened.
//! Nothing here blocks the control thread.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::{SockRef, TcpKeepalive};
use sys::tcp::{ConnectOptions, Connecting, Progress};

use super::peer::Status;
use super::resolver::Resolver;
use super::slot::{Action, SessionEnd, Slot, State};
use super::Timing;
use crate::session::Ended;
use crate::settings::{ActiveClient, Config};

/// Most name lookups running at once (one per slot at most).
const MAX_LOOKUPS: usize = 16;

/// One ActiveClient line: its slot and the connect under way.
struct Line {
    client: ActiveClient,
    slot: Slot,
    connecting: Option<Connecting<TcpStream>>,
}

/// A connection to a sensor, just established.
pub struct Connected {
    pub client: ActiveClient,
    pub stream: TcpStream,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// The slots of the ActiveClient lines.
pub struct Dialer {
    lines: BTreeMap<Token, Line>,
    timing: Timing,
    resolver: Resolver,
    /// `KeepAliveSecs`; 0: off.
    keepalive_secs: u32,
    /// `TCP_USER_TIMEOUT` of control connections; None: the system's.
    user_timeout: Option<Duration>,
    close_stops: bool,
    random: RandomState,
}

impl Dialer {
    /// `wake` wakes the loop when a lookup answers ([`Dialer::resolved`]).
    pub fn new(timing: Timing, wake: impl Fn() + Send + Sync + 'static) -> Dialer {
        Dialer {
            lines: BTreeMap::new(),
            timing,
            resolver: Resolver::new(MAX_LOOKUPS, wake),
            keepalive_secs: 0,
            user_timeout: None,
            close_stops: false,
            random: RandomState::new(),
        }
    }

    /// The sensors dialled, for logs and tests.
    pub fn clients(&self) -> Vec<ActiveClient> {
        self.lines.values().map(|l| l.client.clone()).collect()
    }

    /// The slots' tokens and lines, in token order.
    #[cfg(test)]
    pub fn slots(&self) -> Vec<(Token, String)> {
        self.lines
            .iter()
            .map(|(t, l)| (*t, l.client.to_string()))
            .collect()
    }

    /// Each line and the state of its slot, in token order.
    pub fn states(&self) -> Vec<(ActiveClient, &State)> {
        self.lines
            .values()
            .map(|l| (l.client.clone(), l.slot.state()))
            .collect()
    }

    /// Each slot's token, line and state machine (metrics).
    pub fn lines(&self) -> impl Iterator<Item = (Token, &ActiveClient, &Slot)> {
        self.lines.iter().map(|(t, l)| (*t, &l.client, &l.slot))
    }

    /// Keeps the slots whose line is unchanged, ends the others, adds new
    /// ones (tokens from `next_token`). Returns the tokens of the ended
    /// slots whose session must close.
    pub fn apply(
        &mut self,
        config: &Config,
        registry: &Registry,
        next_token: &mut usize,
        now: Instant,
    ) -> Vec<Token> {
        self.keepalive_secs = config.keepalive_secs;
        self.user_timeout =
            (config.liveness_secs > 0).then(|| Duration::from_secs(config.liveness_secs.into()));
        self.close_stops = config.active_close_stops;
        let mut wanted = config.active_clients.clone();
        let mut ended = Vec::new();
        self.lines.retain(|token, line| {
            if let Some(pos) = wanted.iter().position(|w| *w == line.client) {
                wanted.remove(pos);
                line.slot.set_close_stops(config.active_close_stops);
                return true;
            }
            info!(
                "sensor {} removed from the configuration (ActiveClient = {})",
                line.client.slot_name(),
                line.client
            );
            if line.slot.state().in_session() {
                ended.push(*token);
            }
            line.slot.stop();
            forget_connect(line, registry);
            false
        });
        for client in wanted {
            info!(
                "sensor {} added (ActiveClient = {client})",
                client.slot_name()
            );
            let token = Token(*next_token);
            *next_token += 1;
            let seed = self.random.hash_one((token.0, now));
            let slot = Slot::new(
                client.slot_name(),
                self.timing.clone(),
                self.close_stops,
                now,
                seed,
            );
            self.lines.insert(
                token,
                Line {
                    client,
                    slot,
                    connecting: None,
                },
            );
        }
        ended
    }

    /// The next slot deadline (an attempt, a lookup's or a connect's end).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.lines
            .values()
            .filter_map(|l| l.slot.poll_timeout())
            .min()
    }

    /// Starts the attempts whose time has come; gives up those that took too long.
    pub fn timers(&mut self, now: Instant, registry: &Registry) {
        let due: Vec<Token> = self
            .lines
            .iter()
            .filter(|(_, l)| l.slot.poll_timeout().is_some_and(|at| at <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            let action = self
                .lines
                .get_mut(&token)
                .and_then(|l| l.slot.handle_timeout(now));
            self.act(token, action, now, registry);
        }
    }

    /// Hands the lookups' answers to their slots (the loop was woken).
    pub fn resolved(&mut self, now: Instant, registry: &Registry) {
        while let Some(answer) = self.resolver.try_recv() {
            let action = self
                .lines
                .get_mut(&answer.key)
                .and_then(|l| l.slot.resolved(answer.lookup, answer.result, now));
            self.act(answer.key, action, now, registry);
        }
    }

    /// An event on a connection attempt: the connection, once established.
    pub fn ready(&mut self, token: Token, now: Instant, registry: &Registry) -> Option<Connected> {
        let line = self.lines.get_mut(&token)?;
        let (local, peer) = match line.connecting.as_ref()?.progress() {
            Progress::Connected { local, peer } => (local, peer),
            // Not connected yet: a spurious wake-up.
            Progress::Pending => return None,
            Progress::Failed(e) => {
                line.slot.failed(e.to_string(), now);
                forget_connect(line, registry);
                return None;
            }
        };
        info!("connected to sensor {} ({peer})", line.client.slot_name());
        line.slot.connected();
        let c = line.connecting.take()?;
        Some(Connected {
            client: line.client.clone(),
            stream: c.stream,
            local,
            peer,
        })
    }

    /// What the session of slot `token` has reached.
    pub fn progress(&mut self, token: Token, authenticated: bool, capturing: bool, now: Instant) {
        if let Some(line) = self.lines.get_mut(&token) {
            line.slot.progress(authenticated, capturing, now);
        }
    }

    /// The session of slot `token` refused a request of the sensor (`what`:
    /// which and why): the slot logs it once per cause.
    pub fn refused(&mut self, token: Token, what: String) {
        if let Some(line) = self.lines.get_mut(&token) {
            line.slot.refused(what);
        }
    }

    /// The name of slot `token` (`HOST:PORT`).
    pub fn slot_name(&self, token: Token) -> Option<String> {
        self.lines.get(&token).map(|l| l.client.slot_name())
    }

    /// The session of slot `token` is over ([`Slot::session_over`]).
    pub fn session_over(&mut self, token: Token, status: &Status, now: Instant) {
        let Some(line) = self.lines.get_mut(&token) else {
            return;
        };
        let end = match status {
            Status::Open => return,
            Status::Ended(Ended::Closed) => SessionEnd::Closed,
            Status::Ended(Ended::Protocol(why)) => SessionEnd::Failed(why.clone()),
            Status::Ended(Ended::Timeout(why)) => SessionEnd::Failed(why.to_string()),
            Status::Gone(why) => SessionEnd::Failed(why.clone()),
        };
        line.slot.session_over(end, now);
    }

    /// Stops every slot (the daemon stops).
    pub fn shutdown(&mut self, registry: &Registry) {
        for line in self.lines.values_mut() {
            line.slot.stop();
            forget_connect(line, registry);
        }
    }

    /// Does what slot `token` asked for (and what that leads to); a
    /// failure to start is the attempt's.
    fn act(&mut self, token: Token, mut action: Option<Action>, now: Instant, registry: &Registry) {
        while let Some(next) = action.take() {
            let Some(line) = self.lines.get_mut(&token) else {
                return;
            };
            match next {
                Action::Resolve { lookup } => {
                    let (host, port) = (line.client.host.as_str(), line.client.port);
                    // An address needs no lookup (nor a thread).
                    if let Ok(ip) = host.parse::<IpAddr>() {
                        let addrs = Ok(vec![SocketAddr::new(ip, port)]);
                        action = line.slot.resolved(lookup, addrs, now);
                    } else if let Err(refused) = self.resolver.submit(token, lookup, host, port) {
                        line.slot
                            .failed(format!("cannot look {host} up: {refused}"), now);
                    }
                }
                Action::Connect { addr, deadline } => {
                    let opts = connect_options(self.keepalive_secs);
                    match connect(addr, &opts, self.user_timeout, deadline, token, registry) {
                        Ok(c) => {
                            debug!("dialling {} at {addr}", line.client.slot_name());
                            line.connecting = Some(c);
                        }
                        Err(why) => {
                            line.slot.failed(why, now);
                        }
                    }
                }
            }
        }
        // A connect the slot no longer waits for (it timed out) is dropped.
        if let Some(line) = self.lines.get_mut(&token) {
            if !matches!(line.slot.state(), State::Dialing { .. }) {
                forget_connect(line, registry);
            }
        }
    }
}

/// Deregisters and closes the line's connect under way, if any.
fn forget_connect(line: &mut Line, registry: &Registry) {
    if let Some(mut c) = line.connecting.take() {
        let _ = registry.deregister(&mut c.stream);
    }
}

/// Starts a connection to `addr` registered under `token`, to be given up
/// at `deadline`. `user_timeout`: unacknowledged data fails the
/// connection after this long (a sensor gone silent while we send).
fn connect(
    addr: SocketAddr,
    opts: &ConnectOptions,
    user_timeout: Option<Duration>,
    deadline: Instant,
    token: Token,
    registry: &Registry,
) -> Result<Connecting<TcpStream>, String> {
    let c =
        Connecting::start(addr, opts, deadline).map_err(|e| format!("connect to {addr}: {e}"))?;
    if let Some(t) = user_timeout {
        SockRef::from(&c.stream)
            .set_tcp_user_timeout(Some(t))
            .map_err(|e| format!("TCP_USER_TIMEOUT: {e}"))?;
    }
    let mut c = c.map(TcpStream::from_std);
    let interest = Interest::READABLE | Interest::WRITABLE;
    registry
        .register(&mut c.stream, token, interest)
        .map_err(|e| format!("register: {e}"))?;
    Ok(c)
}

/// No Nagle delay on the control connection, and keepalive on (unless
/// `keepalive_secs` is 0) so a vanished sensor is noticed.
fn connect_options(keepalive_secs: u32) -> ConnectOptions {
    let keepalive = (keepalive_secs > 0).then(|| {
        let idle = Duration::from_secs(keepalive_secs.into());
        TcpKeepalive::new()
            .with_time(idle)
            .with_interval((idle / 4).max(Duration::from_secs(1)))
            .with_retries(4)
    });
    ConnectOptions {
        nodelay: true,
        keepalive,
    }
}
