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

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::{SockRef, TcpKeepalive};
use sys::tcp::{ConnectOptions, Connecting, Progress};

use super::failover::{Group, Move};
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
    /// Times its failover group moved on after losing its session.
    failovers: u64,
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
    /// The failover groups: name → the group and its members' tokens in
    /// file order.
    groups: BTreeMap<String, (Group, Vec<Token>)>,
    /// `FailbackSecs`.
    failback: Duration,
    /// Sessions a failback gave up: the loop closes them (CLOSE) before
    /// the next turn's dial.
    closing: Vec<Token>,
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
            groups: BTreeMap::new(),
            failback: Duration::from_secs(crate::settings::DEFAULT_FAILBACK_SECS.into()),
            closing: Vec::new(),
        }
    }

    /// The sessions to close now (a failback replaced them); their slots
    /// are already in standby.
    pub fn take_closing(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.closing)
    }

    /// Times slot `token`'s failover group moved on after losing its session.
    pub fn failovers(&self, token: Token) -> u64 {
        self.lines.get(&token).map_or(0, |l| l.failovers)
    }

    /// The failover group of slot `token`: its name and the member's index.
    fn member(&self, token: Token) -> Option<(String, usize)> {
        let name = self.lines.get(&token)?.client.failover.clone()?;
        let (_, members) = self.groups.get(&name)?;
        let idx = members.iter().position(|t| *t == token)?;
        Some((name, idx))
    }

    /// After anything that can fail slot `token`: when it was its group's
    /// active member, the group moves on.
    fn regroup(&mut self, token: Token, now: Instant, registry: &Registry) {
        let Some(line) = self.lines.get_mut(&token) else {
            return;
        };
        let Some(had_session) = line.slot.take_lost() else {
            return;
        };
        let retry_at = line.slot.poll_timeout().unwrap_or(now);
        let why = line.slot.last_error().unwrap_or("lost").to_string();
        let Some((name, idx)) = self.member(token) else {
            return;
        };
        let Some((group, members)) = self.groups.get_mut(&name) else {
            return;
        };
        let Some(mv) = group.lost(idx, had_session, retry_at, now) else {
            return;
        };
        let members = members.clone();
        let (from, to) = (members[mv.from], members[mv.to]);
        let (from_name, to_name) = (
            self.slot_name(from).unwrap_or_default(),
            self.slot_name(to).unwrap_or_default(),
        );
        if had_session {
            if let Some(line) = self.lines.get_mut(&token) {
                line.failovers += 1;
            }
            warn!(
                "failover group {name}: sensor {from_name} lost ({why}); failing over to sensor {to_name}"
            );
        } else {
            info!(
                "failover group {name}: sensor {from_name} not reached ({why}); trying sensor {to_name}"
            );
        }
        self.apply_move(&mv, &members, registry);
    }

    /// Puts the member given up in standby and lets the new one dial.
    fn apply_move(&mut self, mv: &Move, members: &[Token], registry: &Registry) {
        let from = members[mv.from];
        if let Some(line) = self.lines.get_mut(&from) {
            if line.slot.state().in_session() {
                self.closing.push(from);
            }
            line.slot.standby();
            forget_connect(line, registry);
        }
        if let Some(line) = self.lines.get_mut(&members[mv.to]) {
            if line.slot.probing() || !matches!(line.slot.state(), State::Standby) {
                // A probe under way becomes the member's attempt's end.
                line.slot.standby();
                forget_connect(line, registry);
            }
            line.slot.activate(mv.at);
        }
    }

    /// Starts the failback probes whose time has come.
    fn probes(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (group, members) in self.groups.values_mut() {
            for idx in group.probes_due(now) {
                due.push(members[idx]);
            }
        }
        for token in due {
            if let Some(line) = self.lines.get_mut(&token) {
                if line.slot.probe(now) {
                    debug!("failback probe of sensor {}", line.client.slot_name());
                }
            }
        }
    }

    /// Rebuilds the failover groups from `config`'s lines; a group whose
    /// members are unchanged keeps its state. Members other than the
    /// active one go to standby (their sessions, if any, closed).
    fn apply_groups(&mut self, config: &Config, registry: &Registry, now: Instant) {
        self.failback = Duration::from_secs(config.failback_secs.into());
        let mut wanted: BTreeMap<String, Vec<Token>> = BTreeMap::new();
        let mut taken = std::collections::BTreeSet::new();
        for client in &config.active_clients {
            let Some(name) = &client.failover else {
                continue;
            };
            let token = self
                .lines
                .iter()
                .find(|(t, l)| l.client == *client && !taken.contains(*t))
                .map(|(t, _)| *t);
            if let Some(token) = token {
                taken.insert(token);
                wanted.entry(name.clone()).or_default().push(token);
            }
        }
        let mut old = std::mem::take(&mut self.groups);
        for (name, members) in wanted {
            let group = match old.remove(&name) {
                Some((mut g, m)) if m == members => {
                    g.set_failback(self.failback);
                    g
                }
                _ => {
                    // Keep the member that holds a session, if one does.
                    let mut g = Group::new(members.len(), self.failback);
                    let holding = members.iter().position(|t| {
                        self.lines
                            .get(t)
                            .is_some_and(|l| l.slot.state().in_session())
                    });
                    if let Some(idx) = holding.filter(|i| *i > 0) {
                        g.lost(0, false, now, now);
                        while g.active() != idx {
                            let a = g.active();
                            g.lost(a, false, now, now);
                        }
                        g.authenticated(idx);
                    }
                    g
                }
            };
            for (idx, token) in members.iter().enumerate() {
                let Some(line) = self.lines.get_mut(token) else {
                    continue;
                };
                if idx == group.active() {
                    line.slot.activate(now);
                } else if !matches!(line.slot.state(), State::Standby) && !line.slot.probing() {
                    if line.slot.state().in_session() {
                        self.closing.push(*token);
                    }
                    line.slot.standby();
                    forget_connect(line, registry);
                }
            }
            info!(
                "failover group {name}: {} sensors, active {}",
                members.len(),
                self.slot_name(members[group.active()]).unwrap_or_default()
            );
            self.groups.insert(name, (group, members));
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
                    failovers: 0,
                },
            );
        }
        self.apply_groups(config, registry, now);
        ended
    }

    /// The next slot deadline (an attempt, a lookup's or a connect's end).
    pub fn next_deadline(&self) -> Option<Instant> {
        let probes = self.groups.values().filter_map(|(g, _)| g.poll_timeout());
        self.lines
            .values()
            .filter_map(|l| l.slot.poll_timeout())
            .chain(probes)
            .min()
    }

    /// Starts the attempts whose time has come; gives up those that took too long.
    pub fn timers(&mut self, now: Instant, registry: &Registry) {
        self.probes(now);
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
            self.regroup(token, now, registry);
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
            self.regroup(answer.key, now, registry);
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
                self.regroup(token, now, registry);
                return None;
            }
        };
        if line.slot.probing() {
            // A failback probe: the sensor answers; close, and move back.
            debug!("failback probe: sensor {} answers", line.client.slot_name());
            line.slot.standby();
            forget_connect(line, registry);
            let (name, idx) = self.member(token)?;
            let (group, members) = self.groups.get_mut(&name)?;
            let mv = group.reachable(idx, now)?;
            let members = members.clone();
            warn!(
                "failover group {name}: sensor {} reachable again; failing back from sensor {}",
                self.slot_name(members[mv.to]).unwrap_or_default(),
                self.slot_name(members[mv.from]).unwrap_or_default(),
            );
            self.apply_move(&mv, &members, registry);
            return None;
        }
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
        if !authenticated {
            return;
        }
        let Some((name, idx)) = self.member(token) else {
            return;
        };
        let Some((group, _)) = self.groups.get_mut(&name) else {
            return;
        };
        group.authenticated(idx);
        if capturing {
            if let Some(gap) = group.capturing(idx, now) {
                warn!(
                    "failover group {name}: capturing on sensor {} {:.2} s after the loss \
                     (frames of that gap are lost)",
                    self.slot_name(token).unwrap_or_default(),
                    gap.as_secs_f64()
                );
            }
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
    pub fn session_over(
        &mut self,
        token: Token,
        status: &Status,
        now: Instant,
        registry: &Registry,
    ) {
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
        self.regroup(token, now, registry);
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
