//! Dialling the sensors of the ActiveClient lines: one slot per line, with
//! exponential backoff and jitter on failures (capped by MaxBackoffSecs), the
//! name resolved again at every attempt, TCP keepalive on, an immediate
//! reconnect after a dropped session (at most once per backoff base), and no
//! reconnect at all after the sensor's CLOSE.
//!
//! Name resolution is blocking and the connect is non-blocking; both happen
//! in [`Dialer::dial`] only. The connect and its completion are
//! [`sys::tcp::Connecting`], shared with the sensor's dialer; it takes an
//! address, so resolution can move off the loop without touching it.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::TcpKeepalive;
use sys::tcp::{ConnectOptions, Connecting, Progress};

use super::peer::Status;
use super::Timing;
use crate::session::Ended;
use crate::settings::ActiveClient;

/// Where a slot stands.
enum State {
    /// Next dial at this instant.
    Waiting(Instant),
    Connecting(Connecting<TcpStream>),
    /// A [`Peer`](super::peer::Peer) under the slot's token serves the sensor.
    Connected,
    /// The sensor sent CLOSE: never again.
    Done,
}

struct Slot {
    client: ActiveClient,
    state: State,
    /// Failed attempts since the last successful connection.
    failures: u32,
    last_attempt: Option<Instant>,
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
    slots: BTreeMap<Token, Slot>,
    timing: Timing,
    /// `KeepAliveSecs`; 0: off.
    keepalive_secs: u32,
    random: RandomState,
    random_counter: u64,
}

impl Dialer {
    pub fn new(timing: Timing) -> Dialer {
        Dialer {
            slots: BTreeMap::new(),
            timing,
            keepalive_secs: 0,
            random: RandomState::new(),
            random_counter: 0,
        }
    }

    /// The sensors dialled, for logs and tests.
    pub fn clients(&self) -> Vec<ActiveClient> {
        self.slots.values().map(|s| s.client.clone()).collect()
    }

    /// The slots' tokens and lines, in token order.
    #[cfg(test)]
    pub fn slots(&self) -> Vec<(Token, String)> {
        self.slots
            .iter()
            .map(|(t, s)| (*t, s.client.to_string()))
            .collect()
    }

    /// Whether `token` is a slot's connection attempt.
    pub fn connecting(&self, token: Token) -> bool {
        matches!(
            self.slots.get(&token),
            Some(Slot {
                state: State::Connecting(_),
                ..
            })
        )
    }

    /// Keeps the slots whose line is unchanged, ends the others, adds new
    /// ones (tokens from `next_token`). Returns the tokens of the ended
    /// slots whose session must close.
    pub fn apply(
        &mut self,
        wanted: &[ActiveClient],
        keepalive_secs: u32,
        registry: &Registry,
        next_token: &mut usize,
        now: Instant,
    ) -> Vec<Token> {
        self.keepalive_secs = keepalive_secs;
        let mut wanted = wanted.to_vec();
        let mut ended = Vec::new();
        self.slots.retain(|token, slot| {
            if let Some(pos) = wanted.iter().position(|w| *w == slot.client) {
                wanted.remove(pos);
                return true;
            }
            info!("sensor {} removed from the configuration", slot.client);
            match &mut slot.state {
                State::Connecting(c) => {
                    let _ = registry.deregister(&mut c.stream);
                }
                State::Connected => ended.push(*token),
                State::Waiting(_) | State::Done => {}
            }
            false
        });
        for client in wanted {
            info!("sensor {client} added");
            let token = Token(*next_token);
            *next_token += 1;
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
        ended
    }

    /// The next dial or connect deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter_map(|s| match &s.state {
                State::Waiting(at) => Some(*at),
                State::Connecting(c) => Some(c.deadline),
                _ => None,
            })
            .min()
    }

    /// Dials the slots whose time has come; gives up attempts that took too long.
    pub fn timers(&mut self, now: Instant, registry: &Registry) {
        let tokens: Vec<Token> = self.slots.keys().copied().collect();
        for token in tokens {
            let Some(slot) = self.slots.get(&token) else {
                continue;
            };
            match &slot.state {
                State::Waiting(at) if *at <= now => self.dial(token, now, registry),
                State::Connecting(c) if c.expired(now) => {
                    self.attempt_failed(token, "connection timed out".into(), registry)
                }
                _ => {}
            }
        }
    }

    /// An event on a connection attempt: the connection, once established.
    pub fn ready(&mut self, token: Token, registry: &Registry) -> Option<Connected> {
        let slot = self.slots.get_mut(&token)?;
        let State::Connecting(c) = &slot.state else {
            return None;
        };
        let (local, peer) = match c.progress() {
            Progress::Connected { local, peer } => (local, peer),
            // Not connected yet: a spurious wake-up.
            Progress::Pending => return None,
            Progress::Failed(e) => {
                self.attempt_failed(token, e.to_string(), registry);
                return None;
            }
        };
        info!("connected to sensor {} ({peer})", slot.client);
        slot.failures = 0;
        let State::Connecting(c) = std::mem::replace(&mut slot.state, State::Connected) else {
            unreachable!("matched above")
        };
        Some(Connected {
            client: slot.client.clone(),
            stream: c.stream,
            local,
            peer,
        })
    }

    /// The session of slot `token` is over (its peer closed): CLOSE means
    /// never again; a session that was up and went down reconnects at once,
    /// but no more often than once per backoff base; a protocol failure
    /// counts as a failed attempt.
    pub fn session_over(&mut self, token: Token, status: &Status, registry: &Registry) {
        let Some(slot) = self.slots.get_mut(&token) else {
            return;
        };
        let why = match status {
            Status::Open => return,
            Status::Ended(Ended::Closed) => {
                info!("sensor {} sent CLOSE: not reconnecting", slot.client);
                slot.state = State::Done;
                return;
            }
            Status::Ended(Ended::Protocol(why)) => why.clone(),
            Status::Ended(Ended::Timeout(why)) => why.to_string(),
            Status::Gone(why) => why.clone(),
        };
        warn!("session with sensor {} ended: {why}", slot.client);
        let earliest = slot
            .last_attempt
            .map(|t| t + self.timing.backoff_base)
            .unwrap_or_else(Instant::now);
        slot.state = State::Waiting(earliest.max(Instant::now()));
        if matches!(status, Status::Ended(_)) {
            self.attempt_failed(token, why, registry);
        }
    }

    /// Stops every connection attempt (the daemon stops).
    pub fn shutdown(&mut self, registry: &Registry) {
        for slot in self.slots.values_mut() {
            if let State::Connecting(c) = &mut slot.state {
                let _ = registry.deregister(&mut c.stream);
            }
            slot.state = State::Done;
        }
    }

    fn random(&mut self) -> u64 {
        self.random_counter += 1;
        let mut h = self.random.build_hasher();
        h.write_u64(self.random_counter);
        h.finish()
    }

    fn dial(&mut self, token: Token, now: Instant, registry: &Registry) {
        let (keepalive, timeout) = (self.keepalive_secs, self.timing.connect_timeout);
        let Some(slot) = self.slots.get_mut(&token) else {
            return;
        };
        slot.last_attempt = Some(now);
        match attempt(
            &slot.client,
            slot.failures,
            keepalive,
            now + timeout,
            token,
            registry,
        ) {
            Ok(c) => slot.state = State::Connecting(c),
            Err(why) => self.attempt_failed(token, why, registry),
        }
    }

    fn attempt_failed(&mut self, token: Token, why: String, registry: &Registry) {
        let r = self.random();
        let Some(slot) = self.slots.get_mut(&token) else {
            return;
        };
        if let State::Connecting(c) = &mut slot.state {
            let _ = registry.deregister(&mut c.stream);
        }
        slot.failures = slot.failures.saturating_add(1);
        let delay = self.timing.backoff(slot.failures, r);
        warn!(
            "sensor {}: {why}; retry {} in {:.1} s",
            slot.client,
            slot.failures,
            delay.as_secs_f64()
        );
        slot.state = State::Waiting(Instant::now() + delay);
    }
}

/// Resolves `client` (again at every attempt: a sensor may move, DNS may
/// come back), picks an address by the failures so far, and starts a
/// connection registered under `token`, to be given up at `deadline`.
fn attempt(
    client: &ActiveClient,
    failures: u32,
    keepalive_secs: u32,
    deadline: Instant,
    token: Token,
    registry: &Registry,
) -> Result<Connecting<TcpStream>, String> {
    let addrs: Vec<SocketAddr> = (client.host.as_str(), client.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", client.host))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{} has no address", client.host));
    }
    let addr = addrs[failures as usize % addrs.len()];
    debug!("dialling {client} at {addr}");
    let mut c = Connecting::start(addr, &connect_options(keepalive_secs), deadline)
        .map_err(|e| format!("connect to {addr}: {e}"))?
        .map(TcpStream::from_std);
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
