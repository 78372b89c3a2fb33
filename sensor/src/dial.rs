//! Dialing passive agents: one entry per `--connect` target, fresh DNS on
//! every attempt, a non-blocking connect with a deadline (it runs in the
//! loop, so a dead agent delays nobody), and a new attempt [`REDIAL`] after a
//! failure or the end of the agent's session.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};
use sys::tcp::{ConnectOptions, Connecting, Progress};

use crate::token::Owner;

/// Delay before dialing a passive agent again.
const REDIAL: Duration = Duration::from_secs(5);
/// How long a connect to a passive agent may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

struct Dial {
    target: String,
    next_at: Option<Instant>,
    /// A connect in progress.
    pending: Option<Connecting<TcpStream>>,
}

/// Every passive agent to dial; dial `i` is registered as [`Owner::Dial`]`(i)`.
pub struct Dialer {
    dials: Vec<Dial>,
}

impl Dialer {
    /// Targets as `host:port`, each dialed at the first tick.
    pub fn new(targets: &[String], now: Instant) -> Dialer {
        Dialer {
            dials: targets
                .iter()
                .map(|t| Dial {
                    target: t.clone(),
                    next_at: Some(now),
                    pending: None,
                })
                .collect(),
        }
    }

    /// Gives up connects past their deadline and starts the dials that are due.
    pub fn tick(&mut self, now: Instant, registry: &Registry) {
        for i in 0..self.dials.len() {
            let d = &mut self.dials[i];
            if d.pending.as_ref().is_some_and(|c| c.expired(now)) {
                if let Some(mut c) = d.pending.take() {
                    let _ = registry.deregister(&mut c.stream);
                    log::warn!(
                        "cannot connect to passive agent {}: timed out after {DIAL_TIMEOUT:?}; retrying in {REDIAL:?}",
                        c.addr
                    );
                    d.next_at = Some(now + REDIAL);
                }
            }
            if self.dials[i].next_at.is_some_and(|t| now >= t) {
                self.dials[i].next_at = None;
                self.start(i, registry);
            }
        }
    }

    /// The host part of dial `i`'s target (the name TLS checks by default).
    pub fn host(&self, i: usize) -> Option<&str> {
        let t = &self.dials.get(i)?.target;
        Some(t.rsplit_once(':').map_or(t.as_str(), |(h, _)| h))
    }

    /// Dial `i`'s agent is gone (its session ended): dial again later.
    pub fn redial(&mut self, i: usize) {
        if let Some(d) = self.dials.get_mut(i) {
            d.next_at = Some(Instant::now() + REDIAL);
        }
    }

    fn start(&mut self, i: usize, registry: &Registry) {
        let d = &mut self.dials[i];
        let addr = match d.target.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                log::warn!(
                    "cannot resolve passive agent {}; retrying in {REDIAL:?}",
                    d.target
                );
                d.next_at = Some(Instant::now() + REDIAL);
                return;
            }
        };
        let deadline = Instant::now() + DIAL_TIMEOUT;
        let connecting = Connecting::start(addr, &ConnectOptions::default(), deadline)
            .map(|c| c.map(TcpStream::from_std))
            .and_then(|mut c| {
                registry.register(&mut c.stream, Owner::Dial(i).token(), Interest::WRITABLE)?;
                Ok(c)
            });
        match connecting {
            Ok(c) => d.pending = Some(c),
            Err(e) => {
                log::warn!("cannot connect to passive agent {addr}: {e}; retrying in {REDIAL:?}");
                d.next_at = Some(Instant::now() + REDIAL);
            }
        }
    }

    /// Dial `i`'s socket became writable: the connected stream (deregistered,
    /// for the agent to register), or None (still connecting, or failed and
    /// to be retried).
    pub fn on_ready(&mut self, i: usize, registry: &Registry) -> Option<(TcpStream, SocketAddr)> {
        let d = self.dials.get_mut(i)?;
        let mut c = d.pending.take()?;
        let failed = match c.progress() {
            Progress::Connected { .. } => None,
            // Not connected yet: a spurious wake-up; keep waiting.
            Progress::Pending => {
                d.pending = Some(c);
                return None;
            }
            Progress::Failed(e) => Some(e),
        };
        let _ = registry.deregister(&mut c.stream);
        let (s, addr) = (c.stream, c.addr);
        match failed {
            Some(e) => {
                log::warn!("cannot connect to passive agent {addr}: {e}; retrying in {REDIAL:?}");
                d.next_at = Some(Instant::now() + REDIAL);
                None
            }
            None => {
                log::info!("connected to passive agent {addr}");
                Some((s, addr))
            }
        }
    }
}
