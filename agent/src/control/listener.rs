//! Passive mode: where xrpcapd listens and who may connect. The mio loop in
//! [`super`] accepts the clients and serves each as a [`super::peer::Peer`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::IpNet;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::settings::Config;
use rpcap::log_limit::LogLimit;

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 64;

/// Where to listen (`-b`, `-p`, `-4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub bind: Option<String>,
    pub port: u16,
    pub ipv4_only: bool,
}

impl ListenSpec {
    /// None with `-v` (active only).
    pub fn from_config(cfg: &Config) -> Option<ListenSpec> {
        (!cfg.active_only).then(|| ListenSpec {
            bind: cfg.passive.bind.clone(),
            port: cfg.passive.port,
            ipv4_only: cfg.passive.ipv4_only,
        })
    }

    /// The addresses to bind: `-b` resolved, or the wildcard (IPv6 dual-stack
    /// unless `-4`, IPv4 when the host has no IPv6).
    fn addrs(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let v4_any = SocketAddr::from(([0, 0, 0, 0], self.port));
        let v6_any = SocketAddr::from(([0u16; 8], self.port));
        let mut addrs: Vec<SocketAddr> = match &self.bind {
            None if self.ipv4_only => vec![v4_any],
            None => vec![v6_any],
            Some(host) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (host, self.port)
                    .to_socket_addrs()
                    .with_context(|| format!("resolving the bind address {host}"))?
                    .collect()
            }
        };
        if self.ipv4_only {
            addrs.retain(|a| a.is_ipv4());
        }
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            anyhow::bail!("no address to listen on (-b/-4)");
        }
        Ok(addrs)
    }
}

/// A listener on `addr`: a specific IPv6 address is IPv6-only, the IPv6
/// wildcard serves IPv4 clients too (as ::ffff:a.b.c.d).
fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let only_v6 = !addr.ip().is_unspecified();
    sys::tcp::listener(addr, BACKLOG, Some(only_v6)).map(TcpListener::from_std)
}

/// Opens the listeners of `spec`; the IPv6 wildcard falls back to IPv4 on a
/// host without IPv6.
pub fn bind(spec: &ListenSpec) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for addr in spec.addrs()? {
        match listener(addr) {
            Ok(l) => out.push(l),
            Err(e) if spec.bind.is_none() && addr.is_ipv6() => {
                let v4 = SocketAddr::from(([0, 0, 0, 0], spec.port));
                log::info!("cannot listen on {addr} ({e}); listening on {v4}");
                out.push(listener(v4).with_context(|| format!("listening on {v4}"))?);
            }
            Err(e) => return Err(e).with_context(|| format!("listening on {addr}")),
        }
    }
    Ok(out)
}

/// Hosts allowed to connect (`PassiveClient`, `-l`): addresses and prefixes;
/// names are resolved when the configuration is applied. Empty: anyone.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    nets: Vec<IpNet>,
    any: bool,
}

impl Allowed {
    pub fn resolve(hosts: &[String]) -> Allowed {
        let mut nets = Vec::new();
        for h in hosts {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            if let Ok(net) = h.parse::<IpNet>() {
                nets.push(net);
            } else if let Ok(ip) = h.parse::<IpAddr>() {
                nets.push(IpNet::from(ip));
            } else {
                match (h, 0).to_socket_addrs() {
                    Ok(addrs) => nets.extend(addrs.map(|a| IpNet::from(a.ip()))),
                    Err(e) => log::warn!("PassiveClient {h}: cannot resolve ({e}); not allowed"),
                }
            }
        }
        Allowed {
            any: hosts.is_empty(),
            nets,
        }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.any || self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// The open listeners, by token, and the settings they were made from.
#[derive(Default)]
pub struct Listeners {
    open: BTreeMap<Token, TcpListener>,
    /// None: not listening (before [`Listeners::open`], or `-v`).
    spec: Option<ListenSpec>,
    /// Set by the first [`Listeners::open`] (even with no spec): from then on a
    /// reload may start, change or stop listening. A control that never
    /// opened (the tests' embedded agents) never starts listening on reload.
    managed: bool,
}

impl Listeners {
    /// Listens as `spec` says (closing the previous listeners), under the
    /// tokens `first..last`. Returns the addresses listened on.
    pub fn open(
        &mut self,
        spec: Option<ListenSpec>,
        registry: &Registry,
        tokens: std::ops::Range<usize>,
    ) -> anyhow::Result<Vec<SocketAddr>> {
        for (_, mut l) in std::mem::take(&mut self.open) {
            let _ = registry.deregister(&mut l);
        }
        self.spec = spec.clone();
        self.managed = true;
        let Some(spec) = spec else {
            return Ok(Vec::new());
        };
        let mut addrs = Vec::new();
        let mut tokens = tokens;
        for mut l in bind(&spec)? {
            let Some(token) = tokens.next() else {
                log::warn!("more listening addresses than supported; the rest are ignored");
                break;
            };
            registry
                .register(&mut l, Token(token), Interest::READABLE)
                .context("registering a listener")?;
            if let Ok(a) = l.local_addr() {
                log::info!("listening for passive clients on {a}");
                addrs.push(a);
            }
            self.open.insert(Token(token), l);
        }
        Ok(addrs)
    }

    /// Whether the listeners must be opened anew for `spec`: passive mode
    /// turned on, off or moved by a reload.
    pub fn changes(&self, spec: &Option<ListenSpec>) -> bool {
        self.managed && *spec != self.spec
    }

    pub fn contains(&self, token: Token) -> bool {
        self.open.contains_key(&token)
    }

    /// The addresses passive clients can connect to.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.open
            .values()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The next waiting connection on listener `token`. Errors of one
    /// connection (reset before it was accepted, and the like) are skipped:
    /// with edge-triggered events, stopping there would leave the clients
    /// queued behind it waiting for the next connection to arrive. Out of
    /// descriptors or memory, [`Accepted::Exhausted`]: the caller retries on
    /// a timer (the kernel keeps the clients queued meanwhile).
    pub fn accept(&self, token: Token) -> Accepted {
        let Some(listener) = self.open.get(&token) else {
            return Accepted::Drained;
        };
        loop {
            match listener.accept() {
                Ok((stream, addr)) => return Accepted::Client(stream, addr),
                Err(e) => match AcceptError::of(&e) {
                    AcceptError::Empty => return Accepted::Drained,
                    AcceptError::Retry => continue,
                    AcceptError::Skip => {
                        log::debug!("accepting a passive client: {e} (skipped)");
                        continue;
                    }
                    AcceptError::Exhausted => return Accepted::Exhausted(e),
                },
            }
        }
    }

    /// Every listener, for retrying them all after a pause.
    pub fn tokens(&self) -> Vec<Token> {
        self.open.keys().copied().collect()
    }
}

/// What [`Listeners::accept`] got.
#[derive(Debug)]
pub enum Accepted {
    Client(TcpStream, SocketAddr),
    /// Nobody waits now.
    Drained,
    /// Out of descriptors or kernel memory (or the listener is broken):
    /// waiting clients stay queued; retry after a pause.
    Exhausted(std::io::Error),
}

/// How an error of accept(2) is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptError {
    /// Nothing waits (EAGAIN).
    Empty,
    /// Interrupted: try again at once.
    Retry,
    /// That one connection failed (it was reset or aborted before we took
    /// it; Linux also reports the new socket's pending network errors here,
    /// to be treated as EAGAIN, accept(2) says): take the next.
    Skip,
    /// Not now: out of descriptors or memory, or the listener itself is
    /// broken. Retrying at once would spin.
    Exhausted,
}

impl AcceptError {
    fn of(e: &std::io::Error) -> AcceptError {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::WouldBlock => return AcceptError::Empty,
            ErrorKind::Interrupted => return AcceptError::Retry,
            _ => {}
        }
        match e.raw_os_error() {
            Some(
                libc::ECONNABORTED
                | libc::ECONNRESET
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ETIMEDOUT,
            ) => AcceptError::Skip,
            // EMFILE, ENFILE, ENOBUFS, ENOMEM, and whatever else (EBADF,
            // EINVAL: the listener is broken; a pause keeps it from spinning).
            _ => AcceptError::Exhausted,
        }
    }
}

/// When to try accepting again after [`Accepted::Exhausted`]: the pause
/// doubles from [`AcceptPause::FIRST`] up to [`AcceptPause::MAX`] while
/// accepting keeps failing; one log line per [`AcceptPause::LOG_EVERY`]
/// says how often it failed meanwhile.
#[derive(Debug)]
pub struct AcceptPause {
    /// When accepting is tried again (None: not paused).
    until: Option<Instant>,
    /// The last pause; zero after a success.
    delay: Duration,
    log: LogLimit,
}

impl Default for AcceptPause {
    fn default() -> Self {
        AcceptPause {
            until: None,
            delay: Duration::ZERO,
            log: LogLimit::new(1, Self::LOG_EVERY),
        }
    }
}

impl AcceptPause {
    pub const FIRST: Duration = Duration::from_millis(50);
    pub const MAX: Duration = Duration::from_secs(1);
    pub const LOG_EVERY: Duration = Duration::from_secs(60);

    /// Accepting failed at `now` with `e`: pauses.
    pub fn failed(&mut self, now: Instant, e: &std::io::Error) {
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
        self.until = Some(now + self.delay);
        if let Some(held_back) = self.log.admit(now) {
            log::warn!(
                "cannot accept passive clients: {e}{held_back}; they wait in the kernel's queue, \
                 retried every {:.1} s at most",
                Self::MAX.as_secs_f64()
            );
        }
    }

    /// Accepting worked again: the next failure starts with a short pause.
    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// Whether accepting waits for the timer (listener events are ignored
    /// meanwhile: the timer retries every listener).
    pub fn paused(&self, now: Instant) -> bool {
        self.until.is_some_and(|at| now < at)
    }

    /// When the pause ends, if paused.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.until
    }

    /// Whether the pause is over at `now`: the caller then accepts on every
    /// listener. Clears the timer, not the doubling.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.until.is_some_and(|at| at <= now) {
            self.until = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_addresses_prefixes_names() {
        let a = Allowed::resolve(&[
            "192.0.2.1".into(),
            "10.1.0.0/16".into(),
            "[2001:db8::1]".into(),
            "localhost".into(),
        ]);
        for ok in ["192.0.2.1", "10.1.200.3", "2001:db8::1", "127.0.0.1"] {
            assert!(a.permits(ok.parse().unwrap()), "{ok}");
        }
        for no in ["192.0.2.2", "10.2.0.1", "2001:db8::2"] {
            assert!(!a.permits(no.parse().unwrap()), "{no}");
        }
        assert!(Allowed::resolve(&[]).permits("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn listen_spec_binds_wildcard_or_given_address() {
        let spec = ListenSpec {
            bind: Some("127.0.0.1".into()),
            port: 0,
            ipv4_only: true,
        };
        let l = bind(&spec).unwrap();
        assert_eq!(l.len(), 1);
        assert!(l[0].local_addr().unwrap().ip().is_loopback());
        let spec = ListenSpec {
            bind: Some("::1".into()),
            port: 0,
            ipv4_only: true,
        };
        assert!(bind(&spec).is_err());
    }

    #[test]
    fn accept_errors_skip_one_connection_or_pause() {
        let os = std::io::Error::from_raw_os_error;
        assert_eq!(AcceptError::of(&os(libc::EAGAIN)), AcceptError::Empty);
        assert_eq!(AcceptError::of(&os(libc::EINTR)), AcceptError::Retry);
        for e in [
            libc::ECONNABORTED,
            libc::EPROTO,
            libc::ENETUNREACH,
            libc::EPERM,
        ] {
            assert_eq!(AcceptError::of(&os(e)), AcceptError::Skip, "{e}");
        }
        for e in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EBADF,
        ] {
            assert_eq!(AcceptError::of(&os(e)), AcceptError::Exhausted, "{e}");
        }
    }

    #[test]
    fn accept_pause_doubles_to_its_cap_and_restarts_after_a_success() {
        let mut p = AcceptPause::default();
        let t0 = Instant::now();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(!p.paused(t0) && p.poll_timeout().is_none());
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..8 {
            p.failed(now, &e);
            let until = p.poll_timeout().unwrap();
            pauses.push(until - now);
            assert!(p.paused(now));
            assert!(!p.due(now));
            now = until;
            assert!(!p.paused(now));
            assert!(p.due(now));
            assert!(!p.due(now), "due once");
        }
        assert_eq!(pauses[0], AcceptPause::FIRST);
        assert_eq!(pauses[1], AcceptPause::FIRST * 2);
        assert_eq!(*pauses.last().unwrap(), AcceptPause::MAX);
        p.succeeded();
        p.failed(now, &e);
        assert_eq!(p.poll_timeout().unwrap() - now, AcceptPause::FIRST);
    }
}
